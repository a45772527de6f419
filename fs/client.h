/* The client side of `status` and `warm`: they ask a running mount through extended
 * attributes of its root (QFS_XATTR_STATUS, QFS_XATTR_WARM in ops.h), so no request goes
 * anywhere but to that mount's own daemon. */
#ifndef QUARKFS_FS_CLIENT_H
#define QUARKFS_FS_CLIENT_H

#include <stdbool.h>

#include <jansson.h>

/* Reads the JSON the mount at mnt answers for attr into *out (json_decref it). 0, or 1 after
 * a message on stderr that names the mount and the remedy (dead daemon, not the owner, not a
 * quarkfs mount, unreadable answer). */
int qfs_client_read(const char *mnt, const char *attr, json_t **out);

/* The integer at o[k1] or o[k1][k2] (k2 NULL: one level); 0 when absent. */
json_int_t qfs_json_int(const json_t *o, const char *k1, const char *k2);

/* Prints the status answer st of the mount at mnt as `quarkfs status` shows it (stdout). */
void qfs_client_print_status(const char *mnt, const json_t *st);

/* Starts a warm-up of the mount at mnt and, unless no_wait, shows its progress until every
 * tensor and view file is done. 0 when started (and done), 1 after a message. */
int qfs_client_warm(const char *mnt, bool no_wait);

#endif
