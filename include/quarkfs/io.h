/* quarkfs — small I/O helpers shared by the core modules. */
#ifndef QUARKFS_IO_H
#define QUARKFS_IO_H

#include <stddef.h>
#include <stdint.h>

/* Reads exactly len bytes at off (retrying short reads and EINTR). 0, -EIO if the file ends
 * first (it shrank under us), or another negative errno. */
int qfs_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* Writes exactly len bytes (retrying short writes and EINTR). 0 or negative errno. */
int qfs_write_full(int fd, const void *buf, size_t len);

#endif
