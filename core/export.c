#include "quarkfs/export.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quarkfs/io.h"
#include "quarkfs/view.h"

#define EXPORT_CHUNK ((size_t)8 << 20)
#define PART_SUFFIX ".quarkfs-part"

/* Creates dir, or accepts it if it exists and is empty; *created tells which. */
static int ensure_empty_dir(const char *dir, bool *created, qfs_error *err)
{
    *created = mkdir(dir, 0755) == 0;
    if (*created) return 0;
    if (errno != EEXIST) {
        int e = errno;
        qfs_error_set(err, "%s: cannot create: %s", dir, strerror(e));
        return -e;
    }
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        qfs_error_set(err, "%s: %s", dir, strerror(e));
        return -e;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) rc = -ENOTEMPTY;
    closedir(d);
    if (rc) qfs_error_set(err, "%s: not empty (export writes into a new or empty directory)", dir);
    return rc;
}

static int export_file(qfs_model *m, qfs_engine *eng, size_t idx, const char *dst,
                       uint8_t *buf, uint64_t *done, uint64_t total,
                       qfs_export_progress_fn progress, void *ctx, qfs_error *err)
{
    const qfs_entry *e = &m->entries[idx];
    char part[PATH_MAX];
    if (snprintf(part, sizeof part, "%s" PART_SUFFIX, dst) >= (int)sizeof part) {
        qfs_error_set(err, "%s: path too long", dst);
        return -ENAMETOOLONG;
    }
    int in = -1, rc = qfs_view_open(m, idx, &in, err);
    if (rc) return rc;
    int out = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = -errno;
        qfs_error_set(err, "%s: %s", part, strerror(errno));
        qfs_view_close(in);
        return rc;
    }
    uint64_t size = (uint64_t)e->st.st_size;
    for (uint64_t off = 0; off < size && rc == 0;) {
        size_t got;
        rc = qfs_view_read(m, eng, idx, in, buf, EXPORT_CHUNK, off, &got, err);
        if (rc == 0 && got == 0) {
            qfs_error_set(err, "%s: unexpected end of the view at %llu", e->path,
                          (unsigned long long)off);
            rc = -EIO;
        }
        if (rc == 0 && (rc = qfs_write_full(out, buf, got)))
            qfs_error_set(err, "%s: write: %s", part, strerror(-rc));
        off += got;
        *done += got;
        if (progress) progress(ctx, *done, total, e->path);
    }
    qfs_view_close(in);
    if (close(out) != 0 && rc == 0) {
        rc = -errno;
        qfs_error_set(err, "%s: close: %s", part, strerror(errno));
    }
    if (rc == 0 && rename(part, dst) != 0) {
        rc = -errno;
        qfs_error_set(err, "%s: rename: %s", dst, strerror(errno));
    }
    if (rc) unlink(part);
    return rc;
}

/* A failed export removes what it wrote, so OUT never looks like a complete checkpoint. */
static void undo_export(const qfs_model *m, const char *out_dir, const bool *made, bool created)
{
    for (size_t i = m->n_entries; i-- > 1;) {
        if (!made[i]) continue;
        char dst[PATH_MAX];
        if (snprintf(dst, sizeof dst, "%s/%s", out_dir, m->entries[i].path) >= (int)sizeof dst)
            continue;
        if (m->entries[i].kind == QFS_ENTRY_DIR) rmdir(dst);
        else unlink(dst);
    }
    if (created) rmdir(out_dir);
}

int qfs_export(qfs_model *m, qfs_engine *eng, const char *out_dir, qfs_export_progress_fn progress,
               void *ctx, qfs_error *err)
{
    bool created;
    int rc = ensure_empty_dir(out_dir, &created, err);
    if (rc) return rc;
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < m->n_entries; i++)
        if (m->entries[i].kind != QFS_ENTRY_DIR) total += (uint64_t)m->entries[i].st.st_size;
    uint8_t *buf = malloc(EXPORT_CHUNK);
    bool *made = calloc(m->n_entries, sizeof *made);
    if (!buf || !made) {
        free(buf);
        free(made);
        qfs_error_set(err, "%s: out of memory", out_dir);
        return -ENOMEM;
    }
    /* Entries are in scan order: a directory always precedes what it holds. */
    for (size_t i = 1; i < m->n_entries && rc == 0; i++) {
        const qfs_entry *e = &m->entries[i];
        char dst[PATH_MAX];
        if (snprintf(dst, sizeof dst, "%s/%s", out_dir, e->path) >= (int)sizeof dst) {
            qfs_error_set(err, "%s/%s: path too long", out_dir, e->path);
            rc = -ENAMETOOLONG;
        } else if (e->kind == QFS_ENTRY_DIR) {
            if (mkdir(dst, 0755) != 0) {
                rc = -errno;
                qfs_error_set(err, "%s: %s", dst, strerror(errno));
            }
        } else {
            rc = export_file(m, eng, i, dst, buf, &done, total, progress, ctx, err);
        }
        made[i] = rc == 0;
    }
    if (rc) undo_export(m, out_dir, made, created);
    free(made);
    free(buf);
    return rc;
}
