#include "quarkfs/diskcache.h"

#include "bulkhash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "quarkfs/io.h"

#define ENTRY_MAGIC "QFSCACHE"
#define MEMO_MAGIC "QFSMEMO1"
#define ENTRY_VERSION 2u          /* 2: a weight of DIRECT_MIN or more starts at a multiple
                                     of DIRECT_ALIGN */
#define MEMO_VERSION 1u
#define DIRECT_ALIGN 4096u        /* O_DIRECT's alignment of offsets, lengths and buffers */
#define DIRECT_MIN ((size_t)1 << 20)   /* smaller weights: no padding, page cache writes */
#define MEMO_MAX_BYTES (64u << 20)   /* a memo holds 40 bytes per tensor: far below this */
#define MEMO_UNUSED_SECONDS (30 * 86400)   /* a memo not read for this long is removed */
#define STALE_TMP_SECONDS 600     /* a temporary file this old belongs to a dead writer */
#define TRIM_TO 0.9               /* trimming goes 10% below the budget, not to the edge */
#define LOCK_WAIT_SECONDS 5.0     /* longest wait for another process computing the same tensor */
#define LOCK_TRY_ONLY_SECONDS 60.0   /* after a wait ran out: try locks, do not wait */
#define WRITE_RETRY_SECONDS 10.0     /* after a failed write: hits only, then writes again */
#define LOCK_STALE_SECONDS 60        /* lock files untouched this long are candidates for removal */

/* On-disk header, little-endian, followed by the scales part, zeros up to the next multiple of
 * 4 KiB when the weight part has 1 MiB or more (part_b_offset), then the weight part. */
typedef struct entry_header {
    char magic[8];
    uint32_t version, reserved;
    uint8_t key[16];
    uint64_t scales_len, weight_len;
    uint64_t scales_sum, weight_sum;   /* XXH3-64 of each part */
} entry_header;

struct qfs_diskcache {
    char *dir;
    int dfd, tfd, lfd, vfd, mfd, rfd;  /* the directory, tmp/, locks/, v1/, memo/, recipes/ */
    struct timespec lock_gave_up;      /* the last lock wait that ran out (0: none) */
    uint64_t max_bytes;
    pthread_mutex_t lock;
    pthread_mutex_t trim_lock;         /* one trim at a time: two would remove twice as much */
    uint64_t used;                     /* this process's estimate; trimming rescans */
    bool readonly;                     /* hits only: the directory takes no writes */
    bool paused;                       /* a write failed: hits only until a write succeeds */
    bool direct_refused;               /* the filesystem refused O_DIRECT: not tried again */
    struct timespec paused_at;         /* when writes were last paused */
};

/* Where the second part of a cache file starts: right after the first, or, for a weight of
 * DIRECT_MIN bytes or more, at the next multiple of DIRECT_ALIGN, so that it can be written
 * with O_DIRECT. */
static uint64_t part_b_offset(uint64_t a_len, uint64_t b_len)
{
    uint64_t end = sizeof(entry_header) + a_len;
    return b_len >= DIRECT_MIN ? (end + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN : end;
}

void qfs_cache_key_compute(const char *recipe, const void *src, size_t len, qfs_cache_key *out)
{
    XXH3_state_t *st = XXH3_createState();
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, recipe, strlen(recipe) + 1);   /* the NUL separates recipe and data */
    XXH3_128bits_update(st, src, len);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    XXH3_freeState(st);
    memcpy(out->bytes, c.digest, sizeof out->bytes);
}

void qfs_cache_key_hex(const qfs_cache_key *k, char out[33])
{
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", k->bytes[i]);
}

static void entry_name(const qfs_cache_key *k, char sub[3], char name[40])
{
    char hex[33];
    qfs_cache_key_hex(k, hex);
    memcpy(sub, hex, 2);
    sub[2] = '\0';
    snprintf(name, 40, "%s.qfs", hex);
}

/* Who may have written a file or directory of the cache: this process's user, or root (a
 * cache baked into an image). Anyone else could forge an entry and recompute its checksums. */
static bool trusted_owner(const struct stat *sb)
{
    return sb->st_uid == geteuid() || sb->st_uid == 0;
}

/* A directory of the cache (the top one, tmp, locks, v1, v1/XX): a real directory, trusted
 * owner, and no one else may create, rename or delete in it. */
static bool trusted_dir(const struct stat *sb)
{
    return S_ISDIR(sb->st_mode) && trusted_owner(sb) && !(sb->st_mode & (S_IWGRP | S_IWOTH));
}

/* Removes name under dirfd whatever it is (a directory with its contents), never following a
 * symlink, so nothing outside dirfd is touched. */
static void remove_tree_at(int dirfd, const char *name, int depth)
{
    if (unlinkat(dirfd, name, 0) == 0 || (errno != EISDIR && errno != EPERM) || depth > 16)
        return;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            remove_tree_at(fd, de->d_name, depth + 1);
    closedir(d);
    unlinkat(dirfd, name, AT_REMOVEDIR);
}

/* Opens the subdirectory name of dirfd (creating it with mode 0700 if create), without
 * following a symlink. Something else in its place (a symlink, a file, a FIFO) is removed and
 * the directory made; a directory that is not trusted_dir is refused (-EPERM). fd or -errno. */
static int open_subdir(int dirfd, const char *name, bool create)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (create && mkdirat(dirfd, name, 0700) != 0 && errno != EEXIST) return -errno;
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if ((e == ELOOP || e == ENOTDIR) && create && attempt == 0) {
                remove_tree_at(dirfd, name, 0);   /* not a directory: never followed */
                continue;
            }
            return -e;
        }
        struct stat sb;
        if (fstat(fd, &sb) != 0 || !trusted_dir(&sb)) {
            close(fd);
            return -EPERM;
        }
        return fd;
    }
    return -ELOOP;
}

/* Opens name in dirfd without blocking and without following a symlink: O_PATH first, and the
 * file itself (flags: O_RDONLY or O_RDWR) only if it is a regular file with a trusted owner
 * that no one else may write. *sb receives what was found. fd; -EPERM for anything else (the
 * caller removes it), -errno otherwise. */
static int open_entry_file(int dirfd, const char *name, int flags, struct stat *sb)
{
    int pfd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (pfd < 0) return -errno;
    if (fstat(pfd, sb) != 0 || !S_ISREG(sb->st_mode) || !trusted_owner(sb) ||
        (sb->st_mode & (S_IWGRP | S_IWOTH))) {
        close(pfd);
        return -EPERM;
    }
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", pfd);
    int fd = open(proc, flags | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && (errno == ENOENT || errno == ENOTDIR))
        fd = openat(dirfd, name, flags | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    int e = errno;
    close(pfd);
    if (fd < 0) return -e;
    struct stat now;
    if (fstat(fd, &now) != 0 || now.st_dev != sb->st_dev || now.st_ino != sb->st_ino) {
        close(fd);
        return -EPERM;
    }
    return fd;
}

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return -ENAMETOOLONG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -errno;
    return 0;
}

/* The cache directory is trusted as ssh and ccache trust a home directory: every directory
 * from / down to it is owned by root or this user and, unless sticky, writable by no one
 * else; the directory itself is a trusted_dir. 0, or -EPERM with err saying which level. */
static int check_path_trusted(const char *real, qfs_error *err)
{
    char prefix[PATH_MAX];
    size_t n = strlen(real);
    for (size_t len = 1; len <= n; len++) {   /* "/", "/a", "/a/b", ..., real */
        if (len != 1 && len != n && real[len] != '/') continue;
        memcpy(prefix, real, len);
        prefix[len] = '\0';
        struct stat sb;
        if (lstat(prefix, &sb) != 0) {
            int e = errno;
            qfs_error_set(err, "cache directory %s: %s: %s", real, prefix, strerror(e));
            return -e;
        }
        bool last = len == n;
        bool others_write = sb.st_mode & (S_IWGRP | S_IWOTH);
        if (!S_ISDIR(sb.st_mode) || !trusted_owner(&sb) ||
            (others_write && (last || !(sb.st_mode & S_ISVTX)))) {
            qfs_error_set(err, "cache directory %s: %s is %s (owner uid %u, mode %04o): another "
                          "user could forge its entries; not used (make every level owned by "
                          "uid %u or root and writable by no one else, e.g. chmod 0700)",
                          real, prefix, !S_ISDIR(sb.st_mode) ? "not a directory"
                          : !trusted_owner(&sb) ? "owned by another user" : "writable by others",
                          (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 07777),
                          (unsigned)geteuid());
            return -EPERM;
        }
    }
    return 0;
}

/* What a trim may remove: an entry (v1/sub/name), a memo (memo/name) or a view file
 * (files/KEY.view, its size including KEY.meta; mtime: the meta's, refreshed when served). */
enum { CF_ENTRY, CF_MEMO, CF_VIEW };
typedef struct cached_file {
    int kind;
    char sub[3];
    char name[48];
    time_t mtime;
    uint64_t size;
} cached_file;

static int cmp_mtime(const void *a, const void *b)
{
    const cached_file *x = a, *y = b;
    return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

static int add_file(cached_file **files, size_t *n, size_t *cap, int kind, const char *sub,
                    const char *name, time_t mtime, uint64_t size)
{
    if (*n == *cap) {
        cached_file *nf = realloc(*files, (*cap = *cap ? *cap * 2 : 256) * sizeof *nf);
        if (!nf) return -ENOMEM;
        *files = nf;
    }
    cached_file *f = &(*files)[(*n)++];
    f->kind = kind;
    snprintf(f->sub, sizeof f->sub, "%s", sub);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->mtime = mtime;
    f->size = size;
    return 0;
}

static bool has_suffix(const char *name, size_t len, const char *suffix)
{
    size_t l = strlen(name), s = strlen(suffix);
    return l == len && strcmp(name + l - s, suffix) == 0;
}

/* Opens dirfd's directory for listing with its own offset. NULL on failure. */
static DIR *list_dir(int dirfd)
{
    int fd = dirfd >= 0 ? openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d && fd >= 0) close(fd);
    return d;
}

/* Lists what counts against the budget, found without following a symlink, and their total
 * size (st_size): entries (v1/XX/KEY.qfs), memos (memo/KEY.qfm), view files with their metas
 * (files/), and files being written (tmp/, files/.tmp.*: counted, never listed, their writers
 * remove them). Lock files and recipe markers are empty: nothing to count. out may be NULL. */
static int scan(qfs_diskcache *c, cached_file **out, size_t *n_out, uint64_t *total)
{
    size_t n = 0, cap = 0;
    cached_file *files = NULL;
    *total = 0;
    DIR *d = list_dir(c->vfd);
    if (!d) return -errno;
    struct dirent *sub;
    while ((sub = readdir(d))) {
        if (sub->d_name[0] == '.' || strlen(sub->d_name) != 2) continue;
        int sfd = open_subdir(c->vfd, sub->d_name, false);
        if (sfd < 0) continue;
        DIR *s = fdopendir(sfd);
        if (!s) {
            close(sfd);
            continue;
        }
        struct dirent *de;
        while ((de = readdir(s))) {
            struct stat sb;
            if (!has_suffix(de->d_name, 36, ".qfs") ||
                fstatat(sfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
                continue;
            *total += (uint64_t)sb.st_size;
            if (out)
                add_file(&files, &n, &cap, CF_ENTRY, sub->d_name, de->d_name, sb.st_mtime,
                         (uint64_t)sb.st_size);
        }
        closedir(s);
    }
    closedir(d);
    struct dirent *de;
    struct stat sb, mb;
    if ((d = list_dir(c->mfd))) {
        while ((de = readdir(d))) {
            if (!has_suffix(de->d_name, 36, ".qfm") ||
                fstatat(c->mfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
                continue;
            *total += (uint64_t)sb.st_size;
            if (out)
                add_file(&files, &n, &cap, CF_MEMO, "", de->d_name, sb.st_mtime,
                         (uint64_t)sb.st_size);
        }
        closedir(d);
    }
    if ((d = list_dir(c->tfd))) {
        while ((de = readdir(d)))
            if (fstatat(c->tfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode))
                *total += (uint64_t)sb.st_size;
        closedir(d);
    }
    int ffd = open_subdir(c->dfd, "files", false);   /* made by viewfile.c when used */
    if (ffd >= 0 && (d = fdopendir(ffd))) {
        while ((de = readdir(d))) {
            const char *nm = de->d_name;
            if (fstatat(ffd, nm, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
                continue;
            /* A view file's temporary has its final size from the start (viewfile.c). */
            *total += (uint64_t)sb.st_size;
            if (!has_suffix(nm, 37, ".view") || nm[0] == '.' || !out) continue;
            char meta[48];
            snprintf(meta, sizeof meta, "%.32s.meta", nm);
            bool has_meta = fstatat(ffd, meta, &mb, AT_SYMLINK_NOFOLLOW) == 0 &&
                            S_ISREG(mb.st_mode);
            add_file(&files, &n, &cap, CF_VIEW, "", nm, has_meta ? mb.st_mtime : sb.st_mtime,
                     (uint64_t)sb.st_size + (has_meta ? (uint64_t)mb.st_size : 0));
        }
        closedir(d);
    } else if (ffd >= 0) {
        close(ffd);
    }
    if (out) {
        *out = files;
        *n_out = n;
    } else {
        free(files);
    }
    return 0;
}

/* Removes from dirfd what is not a regular file and every file older than max_age seconds. */
static void remove_old_at(int dirfd, time_t max_age)
{
    int fd = dirfd >= 0 ? openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return;
    }
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat sb;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            (!S_ISREG(sb.st_mode) || now - sb.st_mtime > max_age))
            remove_tree_at(dirfd, de->d_name, 0);
    }
    closedir(d);
}

static bool trim(qfs_diskcache *c, uint64_t need);
static void remove_stale_locks(qfs_diskcache *c);

int qfs_diskcache_open(const char *dir, uint64_t max_bytes, qfs_diskcache **out, qfs_error *err)
{
    qfs_diskcache *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        qfs_error_set(err, "cache directory %s: out of memory", dir);
        return -ENOMEM;
    }
    c->max_bytes = max_bytes;
    c->dfd = c->tfd = c->lfd = c->vfd = c->mfd = c->rfd = -1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->trim_lock, NULL);
    int rc = mkdir_p(dir);
    char real[PATH_MAX];
    if (!realpath(dir, real)) {
        int e = errno;
        qfs_error_set(err, "cache directory %s: %s", dir, strerror(rc ? -rc : e));
        qfs_diskcache_close(c);
        return rc ? rc : -e;
    }
    int trc = check_path_trusted(real, err);
    if (trc == 0) {
        c->dfd = open(real, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat sb;
        if (c->dfd < 0) trc = -errno;
        else if (fstat(c->dfd, &sb) != 0 || !trusted_dir(&sb)) trc = -EPERM;
        if (trc) qfs_error_set(err, "cache directory %s: %s", dir, strerror(-trc));
    }
    if (trc) {
        qfs_diskcache_close(c);
        return trc;
    }
    rc = 0;
    const char *subs[] = {"tmp", "locks", "v1", "memo", "recipes"};
    int *fds[] = {&c->tfd, &c->lfd, &c->vfd, &c->mfd, &c->rfd};
    for (size_t i = 0; i < 5; i++) {
        int fd = open_subdir(c->dfd, subs[i], true);
        if (fd < 0) fd = open_subdir(c->dfd, subs[i], false);   /* a read-only directory */
        if (fd == -EPERM) {
            qfs_error_set(err, "cache directory %s: %s/ is not a directory owned by uid %u and "
                          "writable by no one else: another user could forge its entries; "
                          "not used", dir, subs[i], (unsigned)geteuid());
            qfs_diskcache_close(c);
            return -EPERM;
        }
        *fds[i] = fd;
        if (fd < 0 && !rc) rc = fd;
    }
    if (c->lfd >= 0) fchmod(c->lfd, 0700);   /* lock files private, also in an older cache */
    if (rc == 0 && faccessat(c->dfd, "tmp", W_OK, 0) != 0) rc = -errno;
    if (rc) {
        /* A cache that takes no writes (read-only NFS, baked into an image) still serves hits. */
        if (c->vfd < 0) {
            qfs_error_set(err, "cache directory %s: %s", dir, strerror(-rc));
            qfs_diskcache_close(c);
            return rc;
        }
        c->readonly = true;
        qfs_error_set(err, "cache directory %s: %s: using its entries read-only", dir,
                      strerror(-rc));
    }
    if (!c->readonly) {
        remove_old_at(c->tfd, STALE_TMP_SECONDS);
        /* Memos of files not mounted for a month (a hit refreshes the mtime) belong to sources
         * that changed or went away: removed, so the directory does not collect them. */
        remove_old_at(c->mfd, MEMO_UNUSED_SECONDS);
        remove_stale_locks(c);
    }
    scan(c, NULL, NULL, &c->used);
    /* A budget lowered since the last run applies now, not after the next write. */
    if (!c->readonly && c->used > c->max_bytes) trim(c, 0);
    *out = c;
    return 0;
}

void qfs_diskcache_close(qfs_diskcache *c)
{
    if (!c) return;
    int *fds[] = {&c->dfd, &c->tfd, &c->lfd, &c->vfd, &c->mfd, &c->rfd};
    for (size_t i = 0; i < 6; i++)
        if (*fds[i] >= 0) close(*fds[i]);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->trim_lock);
    free(c->dir);
    free(c);
}

const char *qfs_diskcache_dir(const qfs_diskcache *c) { return c->dir; }
int qfs_diskcache_dirfd(const qfs_diskcache *c) { return c->dfd; }

uint64_t qfs_diskcache_bytes(qfs_diskcache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t used = c->used;
    pthread_mutex_unlock(&c->lock);
    return used;
}

int qfs_diskcache_get(qfs_diskcache *c, const qfs_cache_key *key, void *scales,
                      size_t scales_len, void *weight, size_t weight_len)
{
    char sub[3], name[40];
    entry_name(key, sub, name);
    int sfd = open_subdir(c->vfd, sub, false);
    if (sfd < 0)
        return sfd == -ENOENT || sfd == -EPERM || sfd == -ELOOP || sfd == -ENOTDIR ? -ENOENT
                                                                                   : sfd;
    struct stat sb;
    int fd = open_entry_file(sfd, name, O_RDONLY, &sb);
    if (fd == -EPERM) {
        /* Not a regular file of ours (a directory, FIFO, symlink, another user's file): never
         * read or waited on, removed so that the entry can be written again. */
        if (!c->readonly) remove_tree_at(sfd, name, 0);
        close(sfd);
        return -ENOENT;
    }
    if (fd < 0) {
        close(sfd);
        return fd;
    }
    entry_header h;
    bool bad = qfs_pread_full(fd, &h, sizeof h, 0) != 0 ||
               memcmp(h.magic, ENTRY_MAGIC, 8) != 0 || h.version != ENTRY_VERSION ||
               memcmp(h.key, key->bytes, 16) != 0 || h.scales_len != scales_len ||
               h.weight_len != weight_len;
    if (!bad)
        bad = qfs_pread_full(fd, scales, scales_len, sizeof h) != 0 ||
              XXH3_64bits(scales, scales_len) != h.scales_sum;
    if (!bad && weight)
        bad = qfs_pread_full(fd, weight, weight_len, part_b_offset(scales_len, weight_len)) !=
                  0 ||
              XXH3_64bits(weight, weight_len) != h.weight_sum;
    if (!bad && !c->readonly) futimens(fd, NULL);   /* LRU order = mtime order */
    close(fd);
    if (bad) {
        /* Truncated, corrupt or foreign (another key, layout or version): never served. */
        if (!c->readonly) unlinkat(sfd, name, 0);
        close(sfd);
        return -ENOENT;
    }
    close(sfd);
    return 0;
}

/* The one trimming policy of the directory: entries, memos and view files, least recently
 * used first (mtime: refreshed by every hit, memo read and view file served), are removed until
 * what is counted (scan) plus need bytes about to be written is under TRIM_TO of the budget
 * (under the budget itself when need alone passes TRIM_TO). Files are unlinked, never
 * truncated: a view file or entry open elsewhere stays intact for its reader. Stale lock files
 * go too. true when need fits in the budget afterwards; the estimate counts need. */
static bool trim(qfs_diskcache *c, uint64_t need)
{
    if (need > c->max_bytes) return false;   /* removing everything would not help */
    pthread_mutex_lock(&c->trim_lock);
    remove_stale_locks(c);
    cached_file *files = NULL;
    size_t n = 0;
    uint64_t total;
    if (scan(c, &files, &n, &total) != 0) {
        pthread_mutex_unlock(&c->trim_lock);
        return false;
    }
    if (n) qsort(files, n, sizeof *files, cmp_mtime);
    uint64_t goal = (uint64_t)((double)c->max_bytes * TRIM_TO);
    if (need > goal) goal = c->max_bytes;
    int ffd = -1;
    for (size_t i = 0; i < n && total + need > goal; i++) {
        cached_file *f = &files[i];
        if (f->kind == CF_ENTRY) {
            int sfd = open_subdir(c->vfd, f->sub, false);   /* never leaves the directory */
            if (sfd < 0) continue;
            if (unlinkat(sfd, f->name, 0) == 0) total -= f->size;
            close(sfd);
        } else if (f->kind == CF_MEMO) {
            if (unlinkat(c->mfd, f->name, 0) == 0) total -= f->size;
        } else {
            if (ffd < 0 && (ffd = open_subdir(c->dfd, "files", false)) < 0) continue;
            char meta[48];
            snprintf(meta, sizeof meta, "%.32s.meta", f->name);
            unlinkat(ffd, meta, 0);   /* the meta first: a view file without one is not served */
            if (unlinkat(ffd, f->name, 0) == 0) total -= f->size;
        }
    }
    if (ffd >= 0) close(ffd);
    free(files);
    bool fits = total + need <= c->max_bytes;
    pthread_mutex_lock(&c->lock);
    c->used = total + (fits ? need : 0);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->trim_lock);
    return fits;
}

int qfs_diskcache_reserve(qfs_diskcache *c, uint64_t need)
{
    if (qfs_diskcache_readonly(c)) return -EROFS;
    return trim(c, need) ? 0 : -ENOSPC;
}

/* Removes lock files no one holds: each one untouched for LOCK_STALE_SECONDS is locked without
 * waiting and, if that succeeds and the name still leads to that file, unlinked while held.
 * A process that opened it just before loses nothing: qfs_diskcache_lock checks, once it holds
 * a lock, that the name still leads to its file, and starts over if not. */
static void remove_stale_locks(qfs_diskcache *c)
{
    if (c->readonly || c->lfd < 0) return;
    DIR *d = list_dir(c->lfd);
    if (!d) return;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat sb, fb;
        if (de->d_name[0] == '.' || fstatat(c->lfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(sb.st_mode) || now - sb.st_mtime < LOCK_STALE_SECONDS)
            continue;
        int f = openat(c->lfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (f < 0) continue;
        if (fstat(f, &fb) == 0 && fb.st_ino == sb.st_ino && fb.st_dev == sb.st_dev &&
            flock(f, LOCK_EX | LOCK_NB) == 0 &&
            fstatat(c->lfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            sb.st_ino == fb.st_ino && sb.st_dev == fb.st_dev)
            unlinkat(c->lfd, de->d_name, 0);
        close(f);   /* releases the lock */
    }
    closedir(d);
}

static double since(const struct timespec *t);

bool qfs_diskcache_readonly(qfs_diskcache *c)
{
    pthread_mutex_lock(&c->lock);
    bool ro = c->readonly || (c->paused && since(&c->paused_at) < WRITE_RETRY_SECONDS);
    pthread_mutex_unlock(&c->lock);
    return ro;
}

bool qfs_diskcache_on_fuse(const qfs_diskcache *c)
{
    struct statfs sf;
    return c && fstatfs(c->dfd, &sf) == 0 && sf.f_type == 0x65735546;   /* FUSE_SUPER_MAGIC */
}

bool qfs_diskcache_set_readonly(qfs_diskcache *c)
{
    pthread_mutex_lock(&c->lock);
    bool first = !c->readonly && !c->paused;
    if (!c->readonly) {
        c->paused = true;
        clock_gettime(CLOCK_MONOTONIC, &c->paused_at);
    }
    pthread_mutex_unlock(&c->lock);
    return first;
}

static bool direct_refused(qfs_diskcache *c)
{
    pthread_mutex_lock(&c->lock);
    bool refused = c->direct_refused;
    pthread_mutex_unlock(&c->lock);
    return refused;
}

/* Writes b at the file's position (a multiple of DIRECT_ALIGN): its whole 4 KiB blocks with
 * O_DIRECT when b's address allows it, so that the disk takes the bytes from b and the CPU
 * copies nothing into the page cache (that copy was 41 % of the daemon's CPU in a first load
 * on the test VM: BENCHMARKS.md), then the rest through the page cache. A filesystem that
 * refuses O_DIRECT (EINVAL) gets ordinary writes from then on. */
static int write_weight_part(qfs_diskcache *c, int fd, uint64_t at, const void *b, size_t len)
{
    size_t body = len / DIRECT_ALIGN * DIRECT_ALIGN;
    if (body >= DIRECT_MIN && (uintptr_t)b % DIRECT_ALIGN == 0 && !direct_refused(c)) {
        int fl = fcntl(fd, F_GETFL);
        int rc = fl < 0 ? -errno : fcntl(fd, F_SETFL, fl | O_DIRECT) != 0 ? -errno : 0;
        if (rc == 0) rc = qfs_write_full(fd, b, body);
        if (fl >= 0 && fcntl(fd, F_SETFL, fl) != 0 && rc == 0) rc = -errno;
        if (rc == 0) return qfs_write_full(fd, (const uint8_t *)b + body, len - body);
        if (rc != -EINVAL && rc != -EOPNOTSUPP) return rc;   /* ENOSPC, EIO: the write failed */
        pthread_mutex_lock(&c->lock);
        c->direct_refused = true;
        pthread_mutex_unlock(&c->lock);
        if (ftruncate(fd, (off_t)at) != 0 || lseek(fd, (off_t)at, SEEK_SET) < 0) return -errno;
    }
    return qfs_write_full(fd, b, len);
}

/* Writes a file of the cache atomically: header (magic, version, key, both parts' lengths and
 * checksums) then the two parts (the second at part_b_offset, with O_DIRECT if direct), into
 * tmp/ under tmp_name, renamed to name in dirfd. 0 or -errno (nothing left behind). */
static int write_atomic(qfs_diskcache *c, const char *magic, uint32_t version,
                        const qfs_cache_key *key, const void *a, size_t a_len, const void *b,
                        size_t b_len, bool direct, const char *tmp_name, int dirfd,
                        const char *name)
{
    static const uint8_t zeros[DIRECT_ALIGN];
    entry_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, magic, 8);
    h.version = version;
    memcpy(h.key, key->bytes, 16);
    h.scales_len = a_len;
    h.weight_len = b_len;
    h.scales_sum = XXH3_64bits(a, a_len);
    h.weight_sum = XXH3_64bits(b, b_len);
    unlinkat(c->tfd, tmp_name, 0);   /* a leftover of this pid and thread, or a planted name */
    int fd = openat(c->tfd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    if (fd < 0) return -errno;
    uint64_t at = part_b_offset(a_len, b_len);
    int rc = qfs_write_full(fd, &h, sizeof h);
    if (!rc) rc = qfs_write_full(fd, a, a_len);
    if (!rc) rc = qfs_write_full(fd, zeros, (size_t)(at - sizeof h - a_len));
    if (!rc && b_len)
        rc = direct ? write_weight_part(c, fd, at, b, b_len) : qfs_write_full(fd, b, b_len);
    if (close(fd) != 0 && !rc) rc = -errno;
    if (!rc) {
        /* A directory in the file's place would make every rename fail: remove it first. */
        struct stat sb;
        if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode))
            remove_tree_at(dirfd, name, 0);
        /* atomic: readers see all or nothing; a symlink there is replaced, never followed */
        if (renameat(c->tfd, tmp_name, dirfd, name) != 0) rc = -errno;
    }
    if (rc) unlinkat(c->tfd, tmp_name, 0);
    return rc;
}

/* Counts size bytes just written and trims when the budget is passed. */
static void note_written(qfs_diskcache *c, uint64_t size)
{
    pthread_mutex_lock(&c->lock);
    c->paused = false;   /* the store takes writes again */
    c->used += size;
    bool over = c->used > c->max_bytes;
    pthread_mutex_unlock(&c->lock);
    if (over) trim(c, 0);
}

int qfs_diskcache_put(qfs_diskcache *c, const qfs_cache_key *key, const void *scales,
                      size_t scales_len, const void *weight, size_t weight_len,
                      qfs_diskcache_write how)
{
    if (qfs_diskcache_readonly(c)) return -EROFS;
    char sub[3], name[40], tmp[96], hex[33];
    entry_name(key, sub, name);
    qfs_cache_key_hex(key, hex);
    snprintf(tmp, sizeof tmp, "%s.%d.%lx", hex, (int)getpid(), (unsigned long)pthread_self());
    int sfd = open_subdir(c->vfd, sub, true);   /* the two-hex-digit fan-out directory */
    if (sfd < 0) return sfd;
    int rc = write_atomic(c, ENTRY_MAGIC, ENTRY_VERSION, key, scales, scales_len, weight,
                          weight_len, how == QFS_DISKCACHE_DIRECT, tmp, sfd, name);
    close(sfd);
    if (rc) return rc;
    note_written(c, part_b_offset(scales_len, weight_len) + weight_len);
    return 0;
}

/* Memos: memo/KEY.qfm, the entry header with MEMO_MAGIC, the memo's bytes as the scales
 * part and an empty weight part; written and checked like entries. */
static void memo_name(const qfs_cache_key *k, char name[40])
{
    char hex[33];
    qfs_cache_key_hex(k, hex);
    snprintf(name, 40, "%s.qfm", hex);
}

int qfs_diskcache_memo_get(qfs_diskcache *c, const qfs_cache_key *name, void **data,
                           size_t *len)
{
    *data = NULL;
    *len = 0;
    if (c->mfd < 0) return -ENOENT;
    char fname[40];
    memo_name(name, fname);
    struct stat sb;
    int fd = open_entry_file(c->mfd, fname, O_RDONLY, &sb);
    if (fd == -EPERM) {
        if (!c->readonly) remove_tree_at(c->mfd, fname, 0);
        return -ENOENT;
    }
    if (fd < 0) return fd;
    entry_header h;
    uint8_t *buf = NULL;
    bool bad = qfs_pread_full(fd, &h, sizeof h, 0) != 0 ||
               memcmp(h.magic, MEMO_MAGIC, 8) != 0 || h.version != MEMO_VERSION ||
               memcmp(h.key, name->bytes, 16) != 0 || h.scales_len > MEMO_MAX_BYTES ||
               h.weight_len != 0 || (uint64_t)sb.st_size != sizeof h + h.scales_len;
    if (!bad) {
        buf = malloc(h.scales_len ? h.scales_len : 1);
        if (!buf) {
            close(fd);
            return -ENOMEM;
        }
        bad = qfs_pread_full(fd, buf, h.scales_len, sizeof h) != 0 ||
              XXH3_64bits(buf, h.scales_len) != h.scales_sum;
    }
    if (!bad && !c->readonly) futimens(fd, NULL);   /* in use: not removed as unused */
    close(fd);
    if (bad) {
        free(buf);
        if (!c->readonly) unlinkat(c->mfd, fname, 0);   /* damaged: rebuilt by the caller */
        return -ENOENT;
    }
    *data = buf;
    *len = h.scales_len;
    return 0;
}

int qfs_diskcache_memo_put(qfs_diskcache *c, const qfs_cache_key *name, const void *data,
                           size_t len)
{
    if (qfs_diskcache_readonly(c)) return -EROFS;
    if (c->mfd < 0) return -ENOENT;
    if (len > MEMO_MAX_BYTES) return -EFBIG;
    char fname[40], tmp[96], hex[33];
    memo_name(name, fname);
    qfs_cache_key_hex(name, hex);
    snprintf(tmp, sizeof tmp, "%s.m.%d.%lx", hex, (int)getpid(), (unsigned long)pthread_self());
    int rc = write_atomic(c, MEMO_MAGIC, MEMO_VERSION, name, data, len, NULL, 0, false, tmp,
                          c->mfd, fname);
    if (rc == 0) note_written(c, sizeof(entry_header) + len);   /* may replace one: trims rescan */
    return rc;
}

static void recipe_name(const char *recipe, char hex[33])
{
    qfs_cache_key k;
    qfs_cache_key_compute("quarkfs-recipe", recipe, strlen(recipe), &k);
    qfs_cache_key_hex(&k, hex);
}

bool qfs_diskcache_may_hold(qfs_diskcache *c, const char *recipe)
{
    if (c->rfd < 0) return true;
    char hex[33];
    recipe_name(recipe, hex);
    struct stat sb;
    return fstatat(c->rfd, hex, &sb, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT;
}

int qfs_diskcache_mark(qfs_diskcache *c, const char *recipe)
{
    if (qfs_diskcache_readonly(c)) return -EROFS;
    if (c->rfd < 0) return -ENOENT;
    char hex[33];
    recipe_name(recipe, hex);
    int fd = openat(c->rfd, hex, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    if (fd < 0) return errno == ELOOP ? 0 : -errno;   /* something is there: it may hold */
    close(fd);
    return 0;
}

static double since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Opens (creating) the lock file hex: a regular file of a trusted owner, 0600. fd or -errno. */
static int open_lock_file(qfs_diskcache *c, const char *hex, struct stat *sb)
{
    int f = -1;
    for (int attempt = 0; attempt < 2 && f < 0; attempt++) {
        f = openat(c->lfd, hex, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
        if (f < 0 && errno != ELOOP) return -errno;
        if (f >= 0 && fstat(f, sb) == 0 && S_ISREG(sb->st_mode) && trusted_owner(sb)) break;
        if (f >= 0) close(f);
        f = -1;
        remove_tree_at(c->lfd, hex, 0);   /* a symlink, FIFO or foreign file: not a lock */
    }
    if (f < 0) return -EPERM;
    if ((sb->st_mode & 07777) != 0600) fchmod(f, 0600);
    return f;
}

int qfs_diskcache_lock(qfs_diskcache *c, const qfs_cache_key *key, int *fd)
{
    *fd = -1;
    if (qfs_diskcache_readonly(c)) return -EROFS;   /* nothing will be written: no lock */
    char hex[33];
    qfs_cache_key_hex(key, hex);
    /* Lock files are removed only by remove_stale_locks, while it holds them; so a lock is ours
     * once flock succeeds and the name still leads to the file locked (else it was removed
     * after we opened it, and another process may lock a new file of that name: start over).
     * They are empty and private (0600 in a 0700 directory): no other user can hold one. */
    struct stat sb;
    int f = open_lock_file(c, hex, &sb);
    if (f < 0) return f;
    /* Never wait without a deadline: a holder may be stopped (Ctrl-Z) or hostile. Past it, the
     * tensor is computed anyway (entries are renamed into place atomically, so doing the work
     * twice is harmless); after a wait ran out, locks are only tried for a while, so that one
     * stuck holder costs one wait, not one per tensor. */
    pthread_mutex_lock(&c->lock);
    bool recent = c->lock_gave_up.tv_sec && since(&c->lock_gave_up) < LOCK_TRY_ONLY_SECONDS;
    pthread_mutex_unlock(&c->lock);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long nap_ms = 1;
    for (;;) {
        if (flock(f, LOCK_EX | LOCK_NB) == 0) {
            struct stat now;
            if (fstatat(c->lfd, hex, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == sb.st_ino &&
                now.st_dev == sb.st_dev)
                break;
            close(f);   /* removed as stale after we opened it: lock the file there now */
            if (since(&start) >= LOCK_WAIT_SECONDS) return -ETIMEDOUT;
            if ((f = open_lock_file(c, hex, &sb)) < 0) return f;
            continue;
        }
        int e = errno;
        if (e != EWOULDBLOCK && e != EINTR) {
            close(f);
            return -e;
        }
        if (recent || since(&start) >= LOCK_WAIT_SECONDS) {
            close(f);
            pthread_mutex_lock(&c->lock);
            clock_gettime(CLOCK_MONOTONIC, &c->lock_gave_up);
            pthread_mutex_unlock(&c->lock);
            return -ETIMEDOUT;
        }
        struct timespec nap = {0, nap_ms * 1000000L};
        nanosleep(&nap, NULL);
        if (nap_ms < 50) nap_ms *= 2;
    }
    *fd = f;
    return 0;
}

void qfs_diskcache_unlock(int fd)
{
    if (fd >= 0) close(fd);   /* closing releases the flock */
}
