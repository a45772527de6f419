#include "quarkfs/srcid.h"

#include "bulkhash.h"

#include "quarkfs/io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <omp.h>

#define MEMO_VERSION 1u
#define SETTLED_NS 1000000000LL   /* a file changed this recently may change again unseen */

/* Stored memo, little-endian: this header, then n entries of {off, len, hash[16]}. The local
 * identity is where the hashes were taken; for a blob it tells an edit in place from a copy. */
typedef struct memo_header {
    uint32_t version, n;
    uint64_t size, machine, dev, ino;
    int64_t mtime_s, mtime_ns, ctime_s, ctime_ns;
} memo_header;

typedef struct memo_record {
    uint64_t off, len;
    uint8_t hash[16];
} memo_record;

static int read_id_file(const char *path, uint64_t *out)
{
    char buf[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -ENOENT;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) n--;
    if (n < 8) return -ENOENT;   /* empty or a placeholder: not an identity */
    *out = XXH3_64bits(buf, (size_t)n);
    if (*out == 0) *out = 1;
    return 0;
}

int qfs_srcid_machine(uint64_t *out)
{
    *out = 0;
    if (read_id_file("/etc/machine-id", out) == 0) return 0;
    if (read_id_file("/proc/sys/kernel/random/boot_id", out) == 0) return 0;
    return -ENOENT;
}

/* Whether path resolves to .../blobs/<sha256 in lowercase hex> and that file is fd's inode;
 * the name goes to hex. */
static bool hf_blob(const char *path, const struct stat *sb, char hex[65])
{
    char real[PATH_MAX];
    if (!realpath(path, real)) return false;
    char *slash = strrchr(real, '/');
    if (!slash || strlen(slash + 1) != 64) return false;
    for (const char *p = slash + 1; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    *slash = '\0';
    const char *dir = strrchr(real, '/');
    if (!dir || strcmp(dir + 1, "blobs") != 0) return false;
    *slash = '/';
    struct stat rs;
    if (stat(real, &rs) != 0 || rs.st_dev != sb->st_dev || rs.st_ino != sb->st_ino) return false;
    memcpy(hex, slash + 1, 65);
    return true;
}

int qfs_srcid_of(int fd, const char *path, bool allow_blob, uint64_t machine, qfs_srcid *out,
                 qfs_error *err)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        qfs_error_set(err, "%s: %s", path, strerror(e));
        return -e;
    }
    memset(out, 0, sizeof *out);
    out->size = (uint64_t)sb.st_size;
    out->machine = machine;
    out->dev = (uint64_t)sb.st_dev;
    out->ino = (uint64_t)sb.st_ino;
    out->mtime = sb.st_mtim;
    out->ctime = sb.st_ctim;
    char text[256], hex[65];
    if (allow_blob && hf_blob(path, &sb, hex)) {
        out->blob = true;
        snprintf(text, sizeof text, "quarkfs-memo|hf-blob|sha256=%s|size=%llu", hex,
                 (unsigned long long)out->size);
    } else if (machine) {
        snprintf(text, sizeof text, "quarkfs-memo|file|machine=%016llx|dev=%llu|ino=%llu|"
                 "size=%llu|mtime=%lld.%09ld|ctime=%lld.%09ld", (unsigned long long)machine,
                 (unsigned long long)out->dev, (unsigned long long)out->ino,
                 (unsigned long long)out->size, (long long)sb.st_mtim.tv_sec,
                 sb.st_mtim.tv_nsec, (long long)sb.st_ctim.tv_sec, sb.st_ctim.tv_nsec);
    } else {
        return -ENOENT;
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(text, strlen(text)));
    memcpy(out->name.bytes, c.digest, sizeof out->name.bytes);
    return 0;
}

static int64_t ns_of(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

bool qfs_srcid_settled(const qfs_srcid *id, const struct timespec *now)
{
    int64_t n = ns_of(now);
    return ns_of(&id->ctime) <= n - SETTLED_NS && ns_of(&id->mtime) <= n - SETTLED_NS;
}

void qfs_srcmemo_hash(const void *src, size_t len, int threads, uint8_t out[16])
{
    size_t n = len / QFS_SRCMEMO_CHUNK + (len % QFS_SRCMEMO_CHUNK != 0);
    XXH128_canonical_t small[8];
    XXH128_canonical_t *d = n <= 8 ? small : malloc(n * sizeof *d);
    const uint8_t *p = src;
    if (!d) {   /* out of memory: the same digests, one at a time */
        XXH3_state_t *st = XXH3_createState();
        XXH3_128bits_reset(st);
        for (size_t i = 0; i < n; i++) {
            XXH128_canonical_t c;
            size_t off = i * QFS_SRCMEMO_CHUNK;
            size_t l = len - off < QFS_SRCMEMO_CHUNK ? len - off : QFS_SRCMEMO_CHUNK;
            XXH128_canonicalFromHash(&c, XXH3_128bits(p + off, l));
            XXH3_128bits_update(st, &c, sizeof c);
        }
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
        XXH3_freeState(st);
        memcpy(out, c.digest, 16);
        return;
    }
    /* One XXH3-128 per chunk, in parallel: a single stream runs at one core's speed, which on
     * a many-core host is slower than the quantization it precedes. */
    int team = threads > 0 ? threads : 0;
#pragma omp parallel for schedule(static) num_threads(team > 0 ? team : omp_get_max_threads()) \
    if (n > 1)
    for (size_t i = 0; i < n; i++) {
        size_t off = i * QFS_SRCMEMO_CHUNK;
        size_t l = len - off < QFS_SRCMEMO_CHUNK ? len - off : QFS_SRCMEMO_CHUNK;
        XXH128_canonicalFromHash(&d[i], XXH3_128bits(p + off, l));
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(d, n * sizeof *d));
    if (d != small) free(d);
    memcpy(out, c.digest, 16);
}

void qfs_srcmemo_key(const char *recipe, const uint8_t hash[16], qfs_cache_key *out)
{
    /* The recipe, a NUL, then the content hash: qfs_cache_key_compute over the hash. */
    qfs_cache_key_compute(recipe, hash, 16, out);
}

void qfs_srcmemo_init(qfs_srcmemo *m, const qfs_srcid *id)
{
    memset(m, 0, sizeof *m);
    m->id = *id;
}

void qfs_srcmemo_free(qfs_srcmemo *m)
{
    free(m->entries);
    m->entries = NULL;
    m->n = m->cap = 0;
}

/* Index of the first entry with offset >= off. */
static size_t lower_bound(const qfs_srcmemo *m, uint64_t off)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->entries[mid].off < off) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

bool qfs_srcmemo_find(const qfs_srcmemo *m, uint64_t off, uint64_t len, uint8_t out[16])
{
    size_t i = lower_bound(m, off);
    if (i == m->n || m->entries[i].off != off || m->entries[i].len != len) return false;
    memcpy(out, m->entries[i].hash, 16);
    return true;
}

int qfs_srcmemo_add(qfs_srcmemo *m, uint64_t off, uint64_t len, const uint8_t hash[16])
{
    size_t i = lower_bound(m, off);
    if (i < m->n && m->entries[i].off == off) {
        if (m->entries[i].len == len && memcmp(m->entries[i].hash, hash, 16) == 0) return 0;
    } else {
        if (m->n == m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 64;
            qfs_srcmemo_entry *ne = realloc(m->entries, cap * sizeof *ne);
            if (!ne) return -ENOMEM;
            m->entries = ne;
            m->cap = cap;
        }
        memmove(&m->entries[i + 1], &m->entries[i], (m->n - i) * sizeof *m->entries);
        m->n++;
    }
    m->entries[i].off = off;
    m->entries[i].len = len;
    memcpy(m->entries[i].hash, hash, 16);
    m->dirty = true;
    return 0;
}

int qfs_srcmemo_encode(const qfs_srcmemo *m, uint8_t **out, size_t *len)
{
    size_t bytes = sizeof(memo_header) + m->n * sizeof(memo_record);
    uint8_t *buf = malloc(bytes);
    if (!buf) return -ENOMEM;
    memo_header h = {
        .version = MEMO_VERSION, .n = (uint32_t)m->n, .size = m->id.size,
        .machine = m->id.machine, .dev = m->id.dev, .ino = m->id.ino,
        .mtime_s = m->id.mtime.tv_sec, .mtime_ns = m->id.mtime.tv_nsec,
        .ctime_s = m->id.ctime.tv_sec, .ctime_ns = m->id.ctime.tv_nsec,
    };
    memcpy(buf, &h, sizeof h);
    for (size_t i = 0; i < m->n; i++) {
        memo_record r = {m->entries[i].off, m->entries[i].len, {0}};
        memcpy(r.hash, m->entries[i].hash, 16);
        memcpy(buf + sizeof h + i * sizeof r, &r, sizeof r);
    }
    *out = buf;
    *len = bytes;
    return 0;
}

int qfs_srcmemo_merge(qfs_srcmemo *m, const void *data, size_t len)
{
    memo_header h;
    if (len < sizeof h) return -EINVAL;
    memcpy(&h, data, sizeof h);
    if (h.version != MEMO_VERSION || len != sizeof h + (size_t)h.n * sizeof(memo_record) ||
        h.size != m->id.size)
        return -EINVAL;
    if (m->id.blob && h.machine == m->id.machine && m->id.machine && h.dev == m->id.dev &&
        h.ino == m->id.ino &&
        (h.mtime_s != m->id.mtime.tv_sec || h.mtime_ns != m->id.mtime.tv_nsec ||
         h.ctime_s != m->id.ctime.tv_sec || h.ctime_ns != m->id.ctime.tv_nsec))
        return -ESTALE;
    const uint8_t *p = (const uint8_t *)data + sizeof h;
    for (uint32_t i = 0; i < h.n; i++) {   /* every range must lie inside the file */
        memo_record r;
        memcpy(&r, p + (size_t)i * sizeof r, sizeof r);
        if (r.off > m->id.size || r.len > m->id.size - r.off) return -EINVAL;
    }
    bool was_dirty = m->dirty;
    for (uint32_t i = 0; i < h.n; i++) {
        memo_record r;
        memcpy(&r, p + (size_t)i * sizeof r, sizeof r);
        uint8_t known[16];
        if (qfs_srcmemo_find(m, r.off, r.len, known)) continue;   /* ours is as fresh */
        if (qfs_srcmemo_add(m, r.off, r.len, r.hash) != 0) return -ENOMEM;
    }
    m->dirty = was_dirty;
    return 0;
}
