#include "quarkfs/viewfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "quarkfs/io.h"
#include "quarkfs/quant.h"
#include "quarkfs/srcid.h"
#include "quarkfs/view.h"

#define META_MAGIC "quarkfs-view-meta 1"
#define STALE_TMP_SECONDS 600      /* a temporary or meta-less file this old: a dead writer's */
#define WRITE_CHUNK (4u << 20)     /* bytes read from the view and written per step */
#define POLL_MS 200                /* the writer checks the warm-up's progress this often */
#define QUIET_NS 500000000LL       /* the writer works only after this long without reads */

enum { VF_NONE, VF_QUEUED, VF_WRITING, VF_DONE, VF_SKIPPED };

typedef struct vf_entry {
    bool has_key;
    char key[33];                  /* hex of the key */
    struct stat src;               /* the source's identity the key was made from */
    uint64_t size;                 /* the view file's size */
    int state;
    atomic_uint_fast64_t served;   /* bytes read from the mount */
} vf_entry;

struct qfs_viewfiles {
    int fdir;                      /* files/ */
    qfs_diskcache *disk;
    uint64_t max_bytes;
    const qfs_model *cm;
    qfs_model *m;                  /* set by _start */
    qfs_engine *e;
    qfs_log_callback log;
    void *log_ctx;
    vf_entry *ents;                /* one per model entry */
    size_t n;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started, stopping;
    bool after_warm;               /* `quarkfs warm` asked: request all once it has finished */
    atomic_llong last_read_ns;     /* CLOCK_MONOTONIC of the last assembled read */
    qfs_viewfiles_stats st;
};

static void vlog(qfs_viewfiles *v, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void vlog(qfs_viewfiles *v, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qfs_log_vprintf(v->log, v->log_ctx, level, fmt, ap);
    va_end(ap);
}

static bool trusted_file(const struct stat *sb)
{
    return S_ISREG(sb->st_mode) && (sb->st_uid == geteuid() || sb->st_uid == 0) &&
           !(sb->st_mode & (S_IWGRP | S_IWOTH));
}

/* The key of e's view file: everything its bytes follow from. The source is known by its local
 * identity, so the machine's id is in it too (keys never match across machines). Each job's
 * spec is folded in: with --layer rules, two views can share a header (uint4 and int4 layouts
 * have the same tensor names, dtypes and shapes) and differ only in the specs of some layers. */
static void make_key(const qfs_model *m, const qfs_entry *e, uint64_t machine,
                     const struct stat *sb, char out[33])
{
    uint64_t specs = 0;
    for (size_t j = 0; j < e->plan.n_jobs; j++) {
        const char *name = e->plan.jobs[j].spec->name;
        specs = XXH3_64bits_withSeed(name, strlen(name) + 1, specs);
    }
    char recipe[512];
    snprintf(recipe, sizeof recipe,
             "quarkfs-view|%016" PRIx64 "|%ju:%ju|%jd|%jd.%09ld|%jd.%09ld|%s|%s|%s|%016" PRIx64
             "|%" PRIu64, machine,
             (uintmax_t)sb->st_dev, (uintmax_t)sb->st_ino, (intmax_t)sb->st_size,
             (intmax_t)sb->st_mtim.tv_sec, sb->st_mtim.tv_nsec, (intmax_t)sb->st_ctim.tv_sec,
             sb->st_ctim.tv_nsec, m->opts.spec->name, qfs_format_name(m->opts.format),
             QFS_QUANTIZER_VERSION, specs, e->plan.file_size);
    qfs_cache_key k;
    qfs_cache_key_compute(recipe, e->plan.header, (size_t)e->plan.header_size, &k);
    qfs_cache_key_hex(&k, out);
}

/* Removes a view file and its meta (unlink only: readers of a handed-out file keep it). */
static void remove_pair(qfs_viewfiles *v, const char *key)
{
    char name[48];
    snprintf(name, sizeof name, "%s.meta", key);
    unlinkat(v->fdir, name, 0);
    snprintf(name, sizeof name, "%s.view", key);
    unlinkat(v->fdir, name, 0);
}

/* Opens name in files/ read-only without following a symlink or blocking on a FIFO. */
static int open_in(int dirfd, const char *name, struct stat *sb)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -errno;
    if (fstat(fd, sb) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    fcntl(fd, F_SETFL, 0);   /* regular files only get past the caller's check */
    return fd;
}

/* 0 and the fd of entry i's view file if it checks out; -ENOENT; -EBADMSG if it is bad. */
static int check_view(qfs_viewfiles *v, size_t i, int *out)
{
    vf_entry *ve = &v->ents[i];
    char name[48], meta[256];
    struct stat sb, mb;
    snprintf(name, sizeof name, "%s.view", ve->key);
    int fd = open_in(v->fdir, name, &sb);
    if (fd == -ELOOP || fd == -ENXIO) return -EBADMSG;   /* a symlink, a socket */
    if (fd < 0) return -ENOENT;
    if (!trusted_file(&sb) || (uint64_t)sb.st_size != ve->size) {
        close(fd);
        return -EBADMSG;
    }
    snprintf(name, sizeof name, "%s.meta", ve->key);
    int mfd = open_in(v->fdir, name, &mb);
    if (mfd < 0) {
        close(fd);
        return -ENOENT;   /* being written (the meta comes last), or a dead writer's */
    }
    ssize_t n = trusted_file(&mb) ? pread(mfd, meta, sizeof meta - 1, 0) : -1;
    uintmax_t ino = 0, size = 0;
    intmax_t cs = 0;
    long cns = 0;
    bool ok = n > 0;
    if (ok) {
        meta[n] = '\0';
        ok = sscanf(meta, META_MAGIC " %ju %ju %jd %ld", &ino, &size, &cs, &cns) == 4 &&
             ino == (uintmax_t)sb.st_ino && size == (uintmax_t)sb.st_size &&
             cs == (intmax_t)sb.st_ctim.tv_sec && cns == sb.st_ctim.tv_nsec;
    }
    if (ok) futimens(mfd, NULL);   /* least recently used first when trimming */
    close(mfd);
    if (!ok) {
        close(fd);
        return -EBADMSG;
    }
    *out = fd;
    return 0;
}

int qfs_viewfiles_get(qfs_viewfiles *v, size_t entry, int *fd)
{
    if (!v || entry >= v->n || !v->ents[entry].has_key) return -ENOENT;
    int rc = check_view(v, entry, fd);
    pthread_mutex_lock(&v->lock);
    vf_entry *ve = &v->ents[entry];
    if (rc == -EBADMSG) {
        remove_pair(v, ve->key);
        v->st.rejected++;
        vlog(v, QFS_LOG_WARNING, "%s: its materialized view file %s/files/%s.view was changed "
             "or damaged since it was written: removed; the file is assembled from the source",
             v->cm->entries[entry].src_path, qfs_diskcache_dir(v->disk), ve->key);
    }
    if (rc == 0) ve->state = VF_DONE;
    else if (ve->state == VF_DONE) ve->state = VF_NONE;   /* trimmed or bad: may be rewritten */
    pthread_mutex_unlock(&v->lock);
    return rc == 0 ? 0 : -ENOENT;
}

/* Removes dead writers' leftovers: temporaries and view files without a meta older than
 * STALE_TMP_SECONDS. */
static void remove_stale(qfs_viewfiles *v)
{
    int dfd = openat(v->fdir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0) close(dfd);
        return;
    }
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat sb, mb;
        const char *nm = de->d_name;
        if (fstatat(v->fdir, nm, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode) ||
            now - sb.st_mtime <= STALE_TMP_SECONDS)
            continue;
        char meta[48];
        snprintf(meta, sizeof meta, "%.32s.meta", nm);
        bool view = strlen(nm) == 37 && strcmp(nm + 32, ".view") == 0;
        if (strncmp(nm, ".tmp.", 5) == 0 ||
            (view && fstatat(v->fdir, meta, &mb, AT_SYMLINK_NOFOLLOW) != 0))
            unlinkat(v->fdir, nm, 0);
    }
    closedir(d);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Waits until no file was read for QUIET_NS: the writer's reads, disk writes and CPU must not
 * slow a load in progress (a shard's view file is asked for while the next shard is read).
 * false if the store is stopping. */
static bool wait_quiet(qfs_viewfiles *v)
{
    for (;;) {
        long long idle = now_ns() - atomic_load(&v->last_read_ns);
        pthread_mutex_lock(&v->lock);
        bool stop = v->stopping;
        if (!stop && idle < QUIET_NS) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&v->cond, &v->lock, &ts);
        }
        pthread_mutex_unlock(&v->lock);
        if (stop) return false;
        if (idle >= QUIET_NS) return true;
    }
}

/* Writes entry i's view file. 0, or -errno (after a log line saying why). */
static int write_view(qfs_viewfiles *v, size_t i)
{
    vf_entry *ve = &v->ents[i];
    qfs_entry *e = &v->m->entries[i];
    struct stat now;
    if (fstat(e->src_fd, &now) != 0 || !qfs_stat_same_file(&now, &ve->src)) {
        vlog(v, QFS_LOG_INFO, "%s changed since it was mounted: its view file is not written",
             e->src_path);
        return -ESTALE;
    }
    if (qfs_diskcache_readonly(v->disk)) return -EROFS;   /* its one warning said why */
    /* The disk cache's one trim makes room (least recently used entries, memos and view
     * files go first) and counts the file as written. */
    int room = qfs_diskcache_reserve(v->disk, ve->size);
    if (room == -ENOSPC)
        vlog(v, QFS_LOG_INFO, "%s: its view file (%" PRIu64 " bytes) does not fit in the "
             "cache's budget (%" PRIu64 " bytes): not written", e->src_path, ve->size,
             v->max_bytes);
    if (room) return room;
    char tmp[96], name[48];
    snprintf(tmp, sizeof tmp, ".tmp.%s.%d.%lx", ve->key, (int)getpid(),
             (unsigned long)pthread_self());
    unlinkat(v->fdir, tmp, 0);
    int fd = openat(v->fdir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (fd < 0) return -errno;
    /* Its final size from the start, so that a trim meanwhile counts all of it. */
    int rc = ftruncate(fd, (off_t)ve->size) != 0 ? -errno : 0;
    uint8_t *buf = rc ? NULL : malloc(WRITE_CHUNK);
    if (!rc && !buf) rc = -ENOMEM;
    qfs_error err = {{0}};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t off = 0; rc == 0 && off < ve->size; ) {
        if (!wait_quiet(v)) {
            rc = -ECANCELED;
            break;
        }
        size_t got = 0;
        rc = qfs_view_read(v->m, v->e, i, -1, buf, WRITE_CHUNK, off, &got, &err);
        if (rc == 0 && got == 0) rc = -EIO;
        if (rc == 0) rc = qfs_write_full(fd, buf, got);
        off += got;
    }
    free(buf);
    /* Durable before it is named: a crash must never leave a named file with lost blocks. */
    if (rc == 0 && fdatasync(fd) != 0) rc = -errno;
    if (rc == 0 && (fstat(e->src_fd, &now) != 0 || !qfs_stat_same_file(&now, &ve->src)))
        rc = -ESTALE;
    snprintf(name, sizeof name, "%s.meta", ve->key);
    if (rc == 0) unlinkat(v->fdir, name, 0);   /* an old meta must not vouch for the new file */
    snprintf(name, sizeof name, "%s.view", ve->key);
    if (rc == 0 && renameat(v->fdir, tmp, v->fdir, name) != 0) rc = -errno;
    struct stat sb;
    if (rc == 0 && fstat(fd, &sb) != 0) rc = -errno;   /* the ctime after the rename */
    close(fd);
    if (rc) {
        unlinkat(v->fdir, tmp, 0);
        /* An optimization failed, not a read: the file is still served, assembled. A full
         * or read-only disk is the disk cache's one warning to give. */
        if (rc != -ECANCELED)
            vlog(v, QFS_LOG_INFO, "%s: its view file was not written (%s); the file is "
                 "assembled as it is read", e->src_path, err.msg[0] ? err.msg : strerror(-rc));
        return rc;
    }
    char meta[160];
    int len = snprintf(meta, sizeof meta, META_MAGIC " %ju %ju %jd %ld\n",
                       (uintmax_t)sb.st_ino, (uintmax_t)sb.st_size, (intmax_t)sb.st_ctim.tv_sec,
                       sb.st_ctim.tv_nsec);
    snprintf(tmp, sizeof tmp, ".tmp.%s.%d.%lx.meta", ve->key, (int)getpid(),
             (unsigned long)pthread_self());
    unlinkat(v->fdir, tmp, 0);
    int mfd = openat(v->fdir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    rc = mfd < 0 ? -errno : qfs_write_full(mfd, meta, (size_t)len);
    if (mfd >= 0 && close(mfd) != 0 && !rc) rc = -errno;
    snprintf(name, sizeof name, "%s.meta", ve->key);
    if (!rc && renameat(v->fdir, tmp, v->fdir, name) != 0) rc = -errno;
    if (rc) {
        unlinkat(v->fdir, tmp, 0);
        remove_pair(v, ve->key);
        vlog(v, QFS_LOG_INFO, "%s: its view file was not recorded (%s); the file is "
             "assembled as it is read", e->src_path, strerror(-rc));
        return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    vlog(v, QFS_LOG_INFO, "%s: view file written (%" PRIu64 " bytes in %.2f s): later opens "
         "are served from it", e->path, ve->size, s);
    return 0;
}

/* Queues every keyed entry once the warm-up asked for has finished. Under v->lock. */
static void check_warm(qfs_viewfiles *v)
{
    if (!v->started || !v->e || !v->after_warm) return;   /* no writer: nothing would drain */
    qfs_engine_stats st;
    qfs_engine_get_stats(v->e, &st);
    if (st.warm_done < st.warm_jobs) return;
    v->after_warm = false;
    for (size_t i = 0; i < v->n; i++)
        if (v->ents[i].has_key && v->ents[i].state == VF_NONE) v->ents[i].state = VF_QUEUED;
    pthread_cond_signal(&v->cond);
}

void qfs_viewfiles_after_warm(qfs_viewfiles *v)
{
    if (!v) return;
    pthread_mutex_lock(&v->lock);
    v->after_warm = true;
    for (size_t i = 0; i < v->n; i++)   /* a skipped file gets another chance */
        if (v->ents[i].state == VF_SKIPPED) v->ents[i].state = VF_NONE;
    check_warm(v);
    pthread_cond_signal(&v->cond);      /* the writer polls the warm-up from now on */
    pthread_mutex_unlock(&v->lock);
}

static void *writer(void *arg)
{
    qfs_viewfiles *v = arg;
    pthread_mutex_lock(&v->lock);
    while (!v->stopping) {
        check_warm(v);
        size_t i = 0;
        while (i < v->n && v->ents[i].state != VF_QUEUED) i++;
        if (i == v->n && !v->after_warm) {   /* requests signal; only a warm-up is polled */
            pthread_cond_wait(&v->cond, &v->lock);
            continue;
        }
        if (i == v->n) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += POLL_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&v->cond, &v->lock, &ts);
            continue;
        }
        v->ents[i].state = VF_WRITING;
        pthread_mutex_unlock(&v->lock);
        int fd = -1, rc = check_view(v, i, &fd);   /* another mount may have written it */
        bool wrote = false;
        if (rc == 0) {
            close(fd);
        } else {
            rc = write_view(v, i);
            wrote = rc == 0;
        }
        pthread_mutex_lock(&v->lock);
        if (rc == 0) {
            v->ents[i].state = VF_DONE;
        } else {
            v->ents[i].state = rc == -ECANCELED ? VF_NONE : VF_SKIPPED;
            if (rc != -ECANCELED) v->st.skipped++;
        }
        if (wrote) {
            v->st.written++;
            v->st.bytes_written += v->ents[i].size;
        }
    }
    pthread_mutex_unlock(&v->lock);
    return NULL;
}

int qfs_viewfiles_open(qfs_diskcache *disk, uint64_t max_bytes, const qfs_model *m,
                       qfs_viewfiles **out, qfs_error *err)
{
    *out = NULL;
    const char *dir = qfs_diskcache_dir(disk);
    int top = qfs_diskcache_dirfd(disk);
    if (mkdirat(top, "files", 0700) != 0 && errno != EEXIST) {
        int e = errno;
        qfs_error_set(err, "%s/files: cannot create: %s", dir, strerror(e));
        return -e;
    }
    int fdir = openat(top, "files", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat sb;
    if (fdir < 0 || fstat(fdir, &sb) != 0 || !S_ISDIR(sb.st_mode) ||
        (sb.st_uid != geteuid() && sb.st_uid != 0) || (sb.st_mode & (S_IWGRP | S_IWOTH))) {
        int e = fdir < 0 ? errno : EPERM;
        if (fdir >= 0) close(fdir);
        qfs_error_set(err, "%s/files: %s: view files are not used", dir,
                      e == EPERM ? "not a directory owned by this user and writable by no one "
                                   "else" : strerror(e));
        return -e;
    }
    qfs_viewfiles *v = calloc(1, sizeof *v);
    vf_entry *ents = calloc(m->n_entries ? m->n_entries : 1, sizeof *ents);
    if (!v || !ents) {
        free(v);
        free(ents);
        close(fdir);
        qfs_error_set(err, "%s/files: out of memory", dir);
        return -ENOMEM;
    }
    v->fdir = fdir;
    v->disk = disk;
    v->max_bytes = max_bytes;
    v->cm = m;
    v->ents = ents;
    v->n = m->n_entries;
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->cond, NULL);
    atomic_init(&v->last_read_ns, 0);
    /* Without a machine id a local identity could name another machine's file in a shared
     * cache: then no view file is used (the entries still are). */
    uint64_t machine;
    bool have_machine = qfs_srcid_machine(&machine) == 0;
    for (size_t i = 0; i < m->n_entries; i++) {
        const qfs_entry *e = &m->entries[i];
        vf_entry *ve = &ents[i];
        atomic_init(&ve->served, 0);
        if (!have_machine || e->kind != QFS_ENTRY_QUANTIZED || e->error || e->src_fd < 0)
            continue;
        if (fstat(e->src_fd, &ve->src) != 0 || ve->src.st_size != e->src_size ||
            ve->src.st_mtim.tv_sec != e->src_mtime.tv_sec ||
            ve->src.st_mtim.tv_nsec != e->src_mtime.tv_nsec)
            continue;   /* changed since the model was built: the view refuses it anyway */
        make_key(m, e, machine, &ve->src, ve->key);
        ve->size = e->plan.file_size;
        ve->has_key = true;
        int fd;
        if (check_view(v, i, &fd) == 0) {
            close(fd);
            ve->state = VF_DONE;
        }
    }
    remove_stale(v);
    *out = v;
    return 0;
}

int qfs_viewfiles_start(qfs_viewfiles *v, qfs_model *m, qfs_engine *e, qfs_log_callback log,
                        void *log_ctx)
{
    v->m = m;
    v->e = e;
    v->log = log;
    v->log_ctx = log_ctx;
    v->started = true;   /* before the thread exists: the writer reads it under the lock */
    int rc = pthread_create(&v->thread, NULL, writer, v);
    if (rc) {
        v->started = false;
        return -rc;
    }
    return 0;
}

void qfs_viewfiles_close(qfs_viewfiles *v)
{
    if (!v) return;
    if (v->started) {
        pthread_mutex_lock(&v->lock);
        v->stopping = true;
        pthread_cond_signal(&v->cond);
        pthread_mutex_unlock(&v->lock);
        pthread_join(v->thread, NULL);
    }
    close(v->fdir);
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->cond);
    free(v->ents);
    free(v);
}

void qfs_viewfiles_request(qfs_viewfiles *v, size_t entry)
{
    if (!v || entry >= v->n || !v->ents[entry].has_key) return;
    pthread_mutex_lock(&v->lock);
    if (v->started && v->ents[entry].state == VF_NONE) {
        v->ents[entry].state = VF_QUEUED;
        pthread_cond_signal(&v->cond);
    }
    pthread_mutex_unlock(&v->lock);
}

void qfs_viewfiles_note_read(qfs_viewfiles *v, size_t entry, uint64_t bytes)
{
    if (!v || entry >= v->n || !v->ents[entry].has_key) return;
    atomic_store(&v->last_read_ns, now_ns());
    uint64_t before = atomic_fetch_add(&v->ents[entry].served, bytes);
    if (before < v->ents[entry].size && before + bytes >= v->ents[entry].size)
        qfs_viewfiles_request(v, entry);
}

bool qfs_viewfiles_stacked(const qfs_viewfiles *v)
{
    struct statfs sf;
    if (!v || fstatfs(v->fdir, &sf) != 0) return false;
    /* FUSE_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC (linux/magic.h) */
    return sf.f_type == 0x65735546 || sf.f_type == 0x794c7630;
}

void qfs_viewfiles_get_stats(qfs_viewfiles *v, qfs_viewfiles_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!v) return;
    pthread_mutex_lock(&v->lock);
    check_warm(v);
    *out = v->st;
    out->present = out->queued = 0;
    for (size_t i = 0; i < v->n; i++) {
        out->present += v->ents[i].state == VF_DONE;
        out->queued += v->ents[i].state == VF_QUEUED || v->ents[i].state == VF_WRITING;
    }
    pthread_mutex_unlock(&v->lock);
}
