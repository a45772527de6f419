#include "quarkfs/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int qfs_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) return -EIO;
        done += (size_t)r;
    }
    return 0;
}

int qfs_write_full(int fd, const void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = write(fd, (const uint8_t *)buf + done, len - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        done += (size_t)r;
    }
    return 0;
}

int qfs_fd_unchanged(int fd, off_t size, const struct timespec *mtime, const char *path,
                     qfs_error *err)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        qfs_error_set(err, "%s: %s", path, strerror(e));
        return -e;
    }
    if (sb.st_size == size && sb.st_mtim.tv_sec == mtime->tv_sec &&
        sb.st_mtim.tv_nsec == mtime->tv_nsec)
        return 0;
    qfs_error_set(err, "%s: changed under the mount (size or modification time differs from "
                  "when it was mounted); refused rather than mixed with the old version: "
                  "remount to serve the new one", path);
    return -EIO;
}

static int check_identity(const struct stat *sb, dev_t want_dev, ino_t want_ino,
                          const char *path, qfs_error *err)
{
    if (!S_ISREG(sb->st_mode)) {
        qfs_error_set(err, "%s: not a regular file (a FIFO, device, socket or directory is "
                      "there now); refused, never opened", path);
        return -EIO;
    }
    if (want_ino && (sb->st_dev != want_dev || sb->st_ino != want_ino)) {
        qfs_error_set(err, "%s: replaced under the mount (another file is there now); refused: "
                      "remount to serve the new one", path);
        return -EIO;
    }
    return 0;
}

int qfs_open_regular(const char *path, bool nofollow, dev_t want_dev, ino_t want_ino, int *fd,
                     qfs_error *err)
{
    *fd = -1;
    int nf = nofollow ? O_NOFOLLOW : 0;
    int pfd = open(path, O_PATH | O_CLOEXEC | nf);
    if (pfd < 0) {
        int en = errno;
        qfs_error_set(err, "%s: %s", path, strerror(en));
        return -en;
    }
    struct stat sb;
    int rc = fstat(pfd, &sb) != 0 ? -errno : 0;
    if (rc) qfs_error_set(err, "%s: %s", path, strerror(-rc));
    /* O_PATH | O_NOFOLLOW on a symlink gives the link itself: not regular, refused here. */
    if (!rc) rc = check_identity(&sb, want_dev, want_ino, path, err);
    if (rc) {
        close(pfd);
        return rc;
    }
    /* Reopening the checked inode itself leaves no window for the path to change. Without
     * /proc the path is opened again, non-blocking, and checked once more. */
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", pfd);
    int f = open(proc, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f < 0 && (errno == ENOENT || errno == ENOTDIR))
        f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | nf);
    int en = errno;
    close(pfd);
    if (f < 0) {
        qfs_error_set(err, "%s: %s", path, strerror(en));
        return -en;
    }
    rc = fstat(f, &sb) != 0 ? -errno : 0;
    if (rc) qfs_error_set(err, "%s: %s", path, strerror(-rc));
    if (!rc) rc = check_identity(&sb, want_dev, want_ino, path, err);
    if (!rc) {
        int fl = fcntl(f, F_GETFL);   /* plain blocking reads from here on */
        if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    }
    if (rc) {
        close(f);
        return rc;
    }
    *fd = f;
    return 0;
}

void qfs_map_guard_init(qfs_map_guard *g)
{
    atomic_store(&g->lo, UINTPTR_MAX);
    atomic_store(&g->hi, 0);
    atomic_store(&g->faulted, 0);
    long ps = sysconf(_SC_PAGESIZE);
    g->page = ps > 0 ? (size_t)ps : 4096;
}

void qfs_map_guard_arm(qfs_map_guard *g, const void *addr, size_t len)
{
    atomic_store(&g->faulted, 0);
    atomic_store(&g->lo, (uintptr_t)addr);
    atomic_store(&g->hi, (uintptr_t)addr + len);
}

void qfs_map_guard_disarm(qfs_map_guard *g)
{
    atomic_store(&g->hi, 0);
    atomic_store(&g->lo, UINTPTR_MAX);
}

bool qfs_map_guard_fault(qfs_map_guard *g, void *addr)
{
    uintptr_t a = (uintptr_t)addr, hi = atomic_load(&g->hi), lo = atomic_load(&g->lo);
    if (a < lo || a >= hi) return false;
    /* mmap is a plain system call on Linux, safe in a handler in practice. One call for the
     * rest of the mapping: a page-by-page repair would take a signal per page. */
    uintptr_t page = a & ~(uintptr_t)(g->page - 1);
    uintptr_t end = (hi + g->page - 1) & ~(uintptr_t)(g->page - 1);
    int saved = errno;
    void *p = mmap((void *)page, end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                   -1, 0);
    errno = saved;
    if (p == MAP_FAILED) return false;
    atomic_store(&g->faulted, 1);
    return true;
}

bool qfs_stat_same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}
