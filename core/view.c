#include "quarkfs/view.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "quarkfs/io.h"

#define PREFETCH_AHEAD 8   /* jobs queued behind the one a reader needs (while memory allows) */

int qfs_view_open(const qfs_model *m, size_t entry, int *fd, qfs_error *err)
{
    const qfs_entry *e = &m->entries[entry];
    *fd = -1;
    if (e->kind == QFS_ENTRY_DIR) return -EISDIR;
    if (e->error) {
        qfs_error_set(err, "%s", e->error_msg ? e->error_msg : "unreadable");
        return e->error;
    }
    if (e->kind != QFS_ENTRY_PASSTHROUGH) return 0;
    /* Never blocks (a FIFO put in its place) and never opens another file (a symlink put in
     * its place, an allowed symlink retargeted): see qfs_open_regular. */
    int rc = qfs_open_regular(e->src_path, !e->src_link, e->src_dev, e->src_ino, fd, err);
    if (rc) return rc;
    rc = qfs_fd_unchanged(*fd, e->st.st_size, &e->st.st_mtim, e->src_path, err);
    if (rc) {
        close(*fd);
        *fd = -1;
    }
    return rc;
}

void qfs_view_close(int fd)
{
    if (fd >= 0) close(fd);
}

static int read_source(int fd, const char *path, uint8_t *buf, size_t len, uint64_t off,
                       qfs_error *err)
{
    int rc = qfs_pread_full(fd, buf, len, off);
    if (rc) qfs_error_set(err, "%s: read at %llu: %s%s", path, (unsigned long long)off,
                          strerror(-rc), rc == -EIO ? " (the file is shorter than when it was "
                          "mounted: changed under the mount?)" : "");
    return rc == -EIO ? -EIO : rc;
}

/* Copies [dpos, dpos+len) of the output data section of a quantized file. */
static int read_tensors(qfs_entry *e, qfs_engine *eng, uint8_t *buf, size_t len, uint64_t dpos,
                        qfs_error *err)
{
    const qfs_plan *p = &e->plan;
    size_t i = qfs_plan_tensor_at(p, dpos);
    size_t last_job = (size_t)-1;
    while (len > 0 && i < p->n_tensors) {
        const qfs_plan_tensor *t = &p->tensors[i++];
        if (t->size == 0 || dpos >= t->offset + t->size) continue;
        uint64_t in = dpos - t->offset;
        size_t n = (size_t)(t->size - in < len ? t->size - in : len);
        int rc;
        if (t->role == QFS_ROLE_PASSTHROUGH) {
            const qfs_st_tensor *s = &e->st_file.tensors[t->src];
            rc = qfs_fd_unchanged(e->src_fd, e->src_size, &e->src_mtime, e->src_path, err);
            if (rc == 0)
                rc = read_source(e->src_fd, e->src_path, buf, n,
                                 e->st_file.data_start + s->begin + in, err);
        } else if (t->role != QFS_ROLE_WEIGHT) {
            rc = qfs_engine_read_scales(eng, e->source, t->job, t->job_offset + in, n, buf, err);
        } else {
            const uint8_t *data;
            rc = qfs_engine_acquire(eng, e->source, t->job, QFS_PART_WEIGHT, t->job_offset + in,
                                    t->job_offset + in + n, &data, err);
            if (rc == 0) {
                memcpy(buf, data + t->job_offset + in, n);
                qfs_engine_release(eng, e->source, t->job);
                last_job = t->job;
            }
        }
        if (rc) return rc;
        buf += n;
        len -= n;
        dpos += n;
    }
    /* Sequential readers come back for the next tensors: start them now. */
    for (size_t k = 1; last_job != (size_t)-1 && k <= PREFETCH_AHEAD; k++)
        if (last_job + k < p->n_jobs) qfs_engine_prefetch(eng, e->source, last_job + k);
    return 0;
}

int qfs_view_read(qfs_model *m, qfs_engine *eng, size_t entry, int fd, uint8_t *buf, size_t len,
                  uint64_t off, size_t *got, qfs_error *err)
{
    qfs_entry *e = &m->entries[entry];
    *got = 0;
    if (e->kind == QFS_ENTRY_DIR) return -EISDIR;
    if (e->error) {
        qfs_error_set(err, "%s", e->error_msg ? e->error_msg : "unreadable");
        return e->error;
    }
    uint64_t size = (uint64_t)e->st.st_size;
    if (off >= size) return 0;
    if (len > size - off) len = (size_t)(size - off);
    int rc = 0;
    switch (e->kind) {
    case QFS_ENTRY_PASSTHROUGH:
        rc = qfs_fd_unchanged(fd, e->st.st_size, &e->st.st_mtim, e->src_path, err);
        if (rc == 0) rc = read_source(fd, e->src_path, buf, len, off, err);
        break;
    case QFS_ENTRY_GENERATED:
        memcpy(buf, e->data + off, len);
        break;
    case QFS_ENTRY_QUANTIZED: {
        size_t done = 0;
        if (off < e->plan.header_size) {
            done = (size_t)(e->plan.header_size - off < len ? e->plan.header_size - off : len);
            memcpy(buf, e->plan.header + off, done);
        }
        if (done < len)
            rc = read_tensors(e, eng, buf + done, len - done, off + done - e->plan.header_size,
                              err);
        break;
    }
    case QFS_ENTRY_DIR:
        break;
    }
    if (rc == 0) *got = len;
    return rc;
}
