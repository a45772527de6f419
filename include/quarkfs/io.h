/* quarkfs — small I/O helpers shared by the core modules. */
#ifndef QUARKFS_IO_H
#define QUARKFS_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "quarkfs/error.h"

/* Reads exactly len bytes at off (retrying short reads and EINTR). 0, -EIO if the file ends
 * first (it shrank under us), or another negative errno. */
int qfs_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* Writes exactly len bytes (retrying short writes and EINTR). 0 or negative errno. */
int qfs_write_full(int fd, const void *buf, size_t len);

/* The view is a snapshot of the source at mount: 0 if fd still has this size and mtime, else
 * -EIO with a message saying the file changed under the mount (serving it would mix versions). */
int qfs_fd_unchanged(int fd, off_t size, const struct timespec *mtime, const char *path,
                     qfs_error *err);

#endif
