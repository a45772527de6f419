/* quarkfs — the single read path: read(entry, offset, length) -> bytes, used by the FUSE front
 * end and by export alike, so a mount and an export can never disagree. */
#ifndef QUARKFS_VIEW_H
#define QUARKFS_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "quarkfs/engine.h"
#include "quarkfs/error.h"
#include "quarkfs/model.h"

/* Opens what a read of entry needs: an fd of the source for passthrough files (-1 for others).
 * Fails with the entry's error for broken files. */
int qfs_view_open(const qfs_model *m, size_t entry, int *fd, qfs_error *err);
/* Closes what qfs_view_open opened. */
void qfs_view_close(int fd);

/* Reads up to len bytes at off into buf; *got receives the count (short only at end of file).
 * 0, or negative errno with err set (-EIO for an unreadable source, a tensor with NaN/Inf). */
int qfs_view_read(qfs_model *m, qfs_engine *e, size_t entry, int fd, uint8_t *buf, size_t len,
                  uint64_t off, size_t *got, qfs_error *err);

#endif
