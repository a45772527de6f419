/* The mount table (/proc/self/mountinfo), read without a request to any FUSE daemon: which
 * mount is topmost on a path, and the readahead setting of a FUSE mount. */
#ifndef QUARKFS_FS_MOUNTINFO_H
#define QUARKFS_FS_MOUNTINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Decodes mountinfo's escapes in place: space, tab, newline and backslash are written as a
 * backslash and three octal digits (\040); anything else is kept as it is. */
void qfs_mountinfo_unescape(char *s);

/* The topmost mount on mountpoint (an absolute path without symlinks) in the mountinfo text
 * read from f: its "major:minor" and filesystem type. false if none is mounted there. */
bool qfs_mountinfo_topmost(FILE *f, const char *mountpoint, char *majmin, size_t mm_len,
                           char *type, size_t type_len);

/* The bdi read_ahead_kb file of the FUSE mount at mountpoint (from /proc/self/mountinfo); ""
 * when no FUSE filesystem is mounted there. */
void qfs_mountinfo_readahead_path(const char *mountpoint, char *out, size_t len);

#endif
