#include "quarkfs/io.h"

#include <errno.h>
#include <string.h>
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
