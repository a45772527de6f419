#include "quarkfs/diskcache.h"

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
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "quarkfs/io.h"

#define ENTRY_MAGIC "QFSCACHE"
#define ENTRY_VERSION 1u
#define STALE_TMP_SECONDS 600     /* a temporary file this old belongs to a dead writer */
#define TRIM_TO 0.9               /* trimming goes 10% below the budget, not to the edge */

/* On-disk header, little-endian, followed by the scales part then the weight part. */
typedef struct entry_header {
    char magic[8];
    uint32_t version, reserved;
    uint8_t key[16];
    uint64_t scales_len, weight_len;
    uint64_t scales_sum, weight_sum;   /* XXH3-64 of each part */
} entry_header;

struct qfs_diskcache {
    char *dir;
    uint64_t max_bytes;
    pthread_mutex_t lock;
    uint64_t used;                     /* this process's estimate; trimming rescans */
    bool readonly;                     /* hits only: the directory takes no writes */
    qfs_diskcache_stats stats;
};

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

static void key_hex(const qfs_cache_key *k, char out[33])
{
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", k->bytes[i]);
}

static int entry_path(const qfs_diskcache *c, const qfs_cache_key *k, const char *ext, char *buf,
                      size_t len)
{
    char hex[33];
    key_hex(k, hex);
    int n = snprintf(buf, len, "%s/v%u/%.2s/%s%s", c->dir, ENTRY_VERSION, hex, hex, ext);
    return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return -ENAMETOOLONG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -errno;
    return 0;
}

typedef struct cached_file { char *path; time_t mtime; off_t size; } cached_file;

static int cmp_mtime(const void *a, const void *b)
{
    const cached_file *x = a, *y = b;
    return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

/* Lists every entry file (v1/XX/KEY.qfs) with its mtime and size, and their total size. */
static int scan(qfs_diskcache *c, cached_file **out, size_t *n_out, uint64_t *total)
{
    char vdir[PATH_MAX];
    snprintf(vdir, sizeof vdir, "%s/v%u", c->dir, ENTRY_VERSION);
    size_t n = 0, cap = 0;
    cached_file *files = NULL;
    *total = 0;
    DIR *d = opendir(vdir);
    if (!d) return -errno;
    struct dirent *sub;
    while ((sub = readdir(d))) {
        if (sub->d_name[0] == '.' || strlen(sub->d_name) != 2) continue;
        char sdir[PATH_MAX];
        if (snprintf(sdir, sizeof sdir, "%s/%s", vdir, sub->d_name) >= (int)sizeof sdir) continue;
        DIR *s = opendir(sdir);
        if (!s) continue;
        struct dirent *de;
        while ((de = readdir(s))) {
            size_t l = strlen(de->d_name);
            if (l < 5 || strcmp(de->d_name + l - 4, ".qfs") != 0) continue;
            char path[PATH_MAX];
            struct stat sb;
            if (snprintf(path, sizeof path, "%s/%s", sdir, de->d_name) >= (int)sizeof path ||
                stat(path, &sb) != 0)
                continue;
            *total += (uint64_t)sb.st_size;
            if (!out) continue;
            if (n == cap) {
                cached_file *nf = realloc(files, (cap = cap ? cap * 2 : 256) * sizeof *nf);
                if (!nf) break;
                files = nf;
            }
            files[n].path = strdup(path);
            files[n].mtime = sb.st_mtime;
            files[n].size = sb.st_size;
            if (files[n].path) n++;
        }
        closedir(s);
    }
    closedir(d);
    if (out) {
        *out = files;
        *n_out = n;
    }
    return 0;
}

static void remove_stale_tmp(const qfs_diskcache *c)
{
    char tdir[PATH_MAX];
    snprintf(tdir, sizeof tdir, "%s/tmp", c->dir);
    DIR *d = opendir(tdir);
    if (!d) return;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        char path[PATH_MAX];
        struct stat sb;
        if (de->d_name[0] == '.' ||
            snprintf(path, sizeof path, "%s/%s", tdir, de->d_name) >= (int)sizeof path)
            continue;
        if (stat(path, &sb) == 0 && now - sb.st_mtime > STALE_TMP_SECONDS) unlink(path);
    }
    closedir(d);
}

static void trim(qfs_diskcache *c);

int qfs_diskcache_open(const char *dir, uint64_t max_bytes, qfs_diskcache **out, qfs_error *err)
{
    qfs_diskcache *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        return -ENOMEM;
    }
    c->max_bytes = max_bytes;
    pthread_mutex_init(&c->lock, NULL);
    char sub[PATH_MAX];
    int rc = 0;
    const char *subs[] = {"tmp", "locks", "v1"};
    for (size_t i = 0; i < 3 && rc == 0; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, subs[i]);
        rc = mkdir_p(sub);
    }
    snprintf(sub, sizeof sub, "%s/tmp", dir);
    if (rc == 0 && access(sub, W_OK) != 0) rc = -errno;
    if (rc) {
        /* A cache that takes no writes (read-only NFS, baked into an image) still serves hits. */
        snprintf(sub, sizeof sub, "%s/v%u", dir, ENTRY_VERSION);
        if (access(sub, R_OK | X_OK) != 0) {
            qfs_error_set(err, "cache directory %s: %s", dir, strerror(-rc));
            qfs_diskcache_close(c);
            return rc;
        }
        c->readonly = true;
        qfs_error_set(err, "cache directory %s: %s: using its entries read-only", dir,
                      strerror(-rc));
    }
    if (!c->readonly) remove_stale_tmp(c);
    scan(c, NULL, NULL, &c->used);
    /* A budget lowered since the last run applies now, not after the next write. */
    if (!c->readonly && c->used > c->max_bytes) trim(c);
    *out = c;
    return 0;
}

void qfs_diskcache_close(qfs_diskcache *c)
{
    if (!c) return;
    pthread_mutex_destroy(&c->lock);
    free(c->dir);
    free(c);
}

const char *qfs_diskcache_dir(const qfs_diskcache *c) { return c->dir; }

void qfs_diskcache_get_stats(qfs_diskcache *c, qfs_diskcache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    out->bytes = c->used;
    pthread_mutex_unlock(&c->lock);
}

static void count(qfs_diskcache *c, uint64_t *field)
{
    pthread_mutex_lock(&c->lock);
    (*field)++;
    pthread_mutex_unlock(&c->lock);
}

int qfs_diskcache_get(qfs_diskcache *c, const qfs_cache_key *key, void *scales,
                      size_t scales_len, void *weight, size_t weight_len)
{
    char path[PATH_MAX];
    int rc = entry_path(c, key, ".qfs", path, sizeof path);
    if (rc) return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        count(c, &c->stats.misses);
        return errno == ENOENT ? -ENOENT : -errno;
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
        bad = qfs_pread_full(fd, weight, weight_len, sizeof h + scales_len) != 0 ||
              XXH3_64bits(weight, weight_len) != h.weight_sum;
    if (!bad && !c->readonly) futimens(fd, NULL);   /* LRU order = mtime order */
    close(fd);
    if (bad) {
        /* Truncated, corrupt or foreign (another key, layout or version): never served. */
        if (!c->readonly) unlink(path);
        count(c, &c->stats.corrupt);
        count(c, &c->stats.misses);
        return -ENOENT;
    }
    count(c, &c->stats.hits);
    return 0;
}

/* Removes least recently used entries until the directory is under TRIM_TO of the budget. */
static void trim(qfs_diskcache *c)
{
    cached_file *files = NULL;
    size_t n = 0;
    uint64_t total;
    if (scan(c, &files, &n, &total) != 0) return;
    qsort(files, n, sizeof *files, cmp_mtime);
    uint64_t goal = (uint64_t)((double)c->max_bytes * TRIM_TO), removed = 0;
    for (size_t i = 0; i < n; i++) {
        if (total > goal && unlink(files[i].path) == 0) {
            total -= (uint64_t)files[i].size;
            removed++;
        }
        free(files[i].path);
    }
    free(files);
    pthread_mutex_lock(&c->lock);
    c->used = total;
    c->stats.evictions += removed;
    pthread_mutex_unlock(&c->lock);
}

bool qfs_diskcache_readonly(qfs_diskcache *c)
{
    pthread_mutex_lock(&c->lock);
    bool ro = c->readonly;
    pthread_mutex_unlock(&c->lock);
    return ro;
}

void qfs_diskcache_set_readonly(qfs_diskcache *c)
{
    pthread_mutex_lock(&c->lock);
    c->readonly = true;
    pthread_mutex_unlock(&c->lock);
}

int qfs_diskcache_put(qfs_diskcache *c, const qfs_cache_key *key, const void *scales,
                      size_t scales_len, const void *weight, size_t weight_len)
{
    if (qfs_diskcache_readonly(c)) return -EROFS;
    char final[PATH_MAX], tmp[PATH_MAX], hex[33];
    int rc = entry_path(c, key, ".qfs", final, sizeof final);
    if (rc) return rc;
    key_hex(key, hex);
    snprintf(tmp, sizeof tmp, "%s/tmp/%s.%d.%lx", c->dir, hex, (int)getpid(),
             (unsigned long)pthread_self());
    char *slash = strrchr(final, '/');
    *slash = '\0';
    rc = mkdir_p(final);                  /* the two-hex-digit fan-out directory */
    *slash = '/';
    if (rc) return rc;
    entry_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, ENTRY_MAGIC, 8);
    h.version = ENTRY_VERSION;
    memcpy(h.key, key->bytes, 16);
    h.scales_len = scales_len;
    h.weight_len = weight_len;
    h.scales_sum = XXH3_64bits(scales, scales_len);
    h.weight_sum = XXH3_64bits(weight, weight_len);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    rc = qfs_write_full(fd, &h, sizeof h);
    if (!rc) rc = qfs_write_full(fd, scales, scales_len);
    if (!rc) rc = qfs_write_full(fd, weight, weight_len);
    if (close(fd) != 0 && !rc) rc = -errno;
    if (!rc && rename(tmp, final) != 0) rc = -errno;   /* atomic: readers see all or nothing */
    if (rc) {
        unlink(tmp);
        return rc;
    }
    uint64_t size = sizeof h + scales_len + weight_len;
    pthread_mutex_lock(&c->lock);
    c->used += size;
    c->stats.writes++;
    bool over = c->used > c->max_bytes;
    pthread_mutex_unlock(&c->lock);
    if (over) trim(c);
    return 0;
}

int qfs_diskcache_lock(qfs_diskcache *c, const qfs_cache_key *key, int *fd)
{
    if (qfs_diskcache_readonly(c)) return -EROFS;   /* nothing will be written: no lock */
    char path[PATH_MAX], hex[33];
    key_hex(key, hex);
    if (snprintf(path, sizeof path, "%s/locks/%s", c->dir, hex) >= (int)sizeof path)
        return -ENAMETOOLONG;
    /* Lock files are never removed: unlinking one while another process waits on it would let
     * a third process lock a new file with the same name. They are empty. */
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) return -errno;
    while (flock(f, LOCK_EX) != 0) {
        if (errno != EINTR) {
            int e = errno;
            close(f);
            return -e;
        }
    }
    *fd = f;
    return 0;
}

void qfs_diskcache_unlock(int fd)
{
    if (fd >= 0) close(fd);   /* closing releases the flock */
}
