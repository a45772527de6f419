#include "quarkfs/io.h"

#include <errno.h>
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
