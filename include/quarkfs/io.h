/* quarkfs — small I/O helpers shared by the core modules. */
#ifndef QUARKFS_IO_H
#define QUARKFS_IO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "quarkfs/error.h"

/* Reads exactly len bytes at off (retrying short reads and EINTR). 0, -EIO if the file ends
 * first (it shrank under us), or another negative errno. */
int qfs_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* Writes exactly len bytes (retrying short writes and EINTR). 0 or negative errno. */
int qfs_write_full(int fd, const void *buf, size_t len);
/* Whether a and b describe the same file with the same content as far as the kernel tells:
 * device, inode, size, and modification and change times to the nanosecond (an edit in place
 * moves ctime even when mtime is put back). */
bool qfs_stat_same_file(const struct stat *a, const struct stat *b);

/* The view is a snapshot of the source at mount: 0 if fd still has this size and mtime, else
 * -EIO with a message saying the file changed under the mount (serving it would mix versions). */
int qfs_fd_unchanged(int fd, off_t size, const struct timespec *mtime, const char *path,
                     qfs_error *err);

/* Opens path for reading only if it is the regular file expected, without ever blocking or
 * opening anything else: the path is first opened with O_PATH (which neither blocks on a FIFO
 * nor runs a device's open), its type checked (regular), and its device/inode compared with
 * want_dev/want_ino when want_ino != 0; only then is that same inode opened for reading
 * (through /proc/self/fd, else with O_NONBLOCK and a second check). nofollow: a symlink as the
 * last component is refused (O_NOFOLLOW). *fd receives an O_RDONLY | O_CLOEXEC descriptor.
 * 0, or -errno with err set naming path: -EIO for "not a regular file" and "replaced",
 * the open's own errno (ENOENT, EACCES, ELOOP, ...) otherwise. */
int qfs_open_regular(const char *path, bool nofollow, dev_t want_dev, ino_t want_ino, int *fd,
                     qfs_error *err);

/* Reading a source through mmap without trusting it to keep its size: a file truncated under a
 * mapping raises SIGBUS on the first access past its new end, which would kill the daemon. The
 * front end owns one guard and calls qfs_map_guard_fault from its SIGBUS handler; the engine
 * arms the guard around the one mapping it reads at a time. A fault inside that mapping gets a
 * zero page instead (the access completes), the guard records it, and the job fails with a
 * message after its own size check. */
typedef struct qfs_map_guard {
    /* The armed mapping is [lo, hi). Disarmed: lo = UINTPTR_MAX, hi = 0. Arming stores lo then
     * hi, disarming hi then lo, and the handler loads hi then lo: no mix of two states ever
     * covers an address outside the mapping. */
    _Atomic uintptr_t lo, hi;
    atomic_int faulted;           /* set by qfs_map_guard_fault */
    size_t page;                  /* page size, read before any handler can run */
} qfs_map_guard;

/* Disarmed, with the page size; call once before installing the handler. */
void qfs_map_guard_init(qfs_map_guard *g);
/* Arms the guard over [addr, addr + len) (a mapping made by mmap) and clears `faulted`. */
void qfs_map_guard_arm(qfs_map_guard *g, const void *addr, size_t len);
/* Disarms it; call before munmap. */
void qfs_map_guard_disarm(qfs_map_guard *g);
/* Async-signal-safe: if addr lies in the armed mapping, maps zero pages from its page to the
 * end of the mapping (everything past a truncation is gone), records the fault and returns
 * true (the faulting access may resume); false otherwise. */
bool qfs_map_guard_fault(qfs_map_guard *g, void *addr);

#endif
