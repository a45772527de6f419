/* Unit tests of the persistent cache (core/diskcache.c) on a real directory: round trip, a
 * corrupt or truncated entry detected and removed (never served), trimming to the budget in
 * least-recently-used order, the bounded lock wait, and directories another user could write
 * refused; and of source memos (core/srcid.c): identities of real files and Hugging Face blobs,
 * the chunked content hash, a memo stored, read back, and damaged. */
#include "unit_util.c"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <sys/stat.h>
#include <time.h>

#include "quarkfs/diskcache.h"
#include "quarkfs/srcid.h"

#include <xxhash.h>

static char root[512];

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/qfs-dc-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(root) ? 0 : -1;
}

/* Removes root and everything below it (rm -r: the cache makes a few levels). */
static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 31u + seed * 7u + 3u);
}

static void key_of(unsigned i, qfs_cache_key *k)
{
    char recipe[32];
    snprintf(recipe, sizeof recipe, "unit-test-%u", i);
    qfs_cache_key_compute(recipe, &i, sizeof i, k);
}

/* Where an entry lives: v1/<first two hex digits>/<32 hex digits>.qfs. */
static void entry_path(const char *dir, const qfs_cache_key *k, char *out, size_t len)
{
    char hex[33];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", k->bytes[i]);
    snprintf(out, len, "%s/v1/%.2s/%s.qfs", dir, hex, hex);
}

static qfs_diskcache *open_cache(const char *sub, uint64_t budget, char *dir, size_t dir_len)
{
    snprintf(dir, dir_len, "%s/%s", root, sub);
    qfs_diskcache *c = NULL;
    qfs_error err = {{0}};
    int rc = qfs_diskcache_open(dir, budget, &c, &err);
    if (rc) fail_msg("open %s: %d %s", dir, rc, err.msg);
    assert_false(qfs_diskcache_readonly(c));
    return c;
}

/* An entry of small parts (under 1 MiB: the write mode does not apply). */
static int put(qfs_diskcache *c, const qfs_cache_key *k, const void *sc, size_t sl, const void *w,
               size_t wl)
{
    return qfs_diskcache_put(c, k, sc, sl, w, wl, QFS_DISKCACHE_BUFFERED);
}

static void test_key(void **state)
{
    (void)state;
    /* Recipe and bytes both count; the NUL between them keeps "ab"+"c" apart from "a"+"bc". */
    qfs_cache_key a, b, c, d;
    qfs_cache_key_compute("int8/quark", "xyz", 3, &a);
    qfs_cache_key_compute("int8/quark", "xyz", 3, &b);
    qfs_cache_key_compute("int8/quark", "xyw", 3, &c);
    qfs_cache_key_compute("int8/quarkx", "yz", 2, &d);
    assert_memory_equal(a.bytes, b.bytes, 16);
    assert_memory_not_equal(a.bytes, c.bytes, 16);
    assert_memory_not_equal(a.bytes, d.bytes, 16);
}

static void test_round_trip(void **state)
{
    (void)state;
    char dir[1024];
    qfs_diskcache *c = open_cache("rt", 1 << 20, dir, sizeof dir);
    assert_string_equal(qfs_diskcache_dir(c), dir);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);

    uint8_t sc[100], w[3000], sc2[100], w2[3000];
    fill(sc, sizeof sc, 1);
    fill(w, sizeof w, 2);
    qfs_cache_key k, other;
    key_of(1, &k);
    key_of(2, &other);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);
    assert_int_equal(put(c, &k, sc, sizeof sc, w, sizeof w), 0);

    memset(sc2, 0, sizeof sc2);
    memset(w2, 0, sizeof w2);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2, w2, sizeof w2), 0);
    assert_memory_equal(sc2, sc, sizeof sc);
    assert_memory_equal(w2, w, sizeof w);
    /* Scales only (weight NULL): the mount's cheaper path. */
    memset(sc2, 0, sizeof sc2);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2, NULL, sizeof w), 0);
    assert_memory_equal(sc2, sc, sizeof sc);
    assert_int_equal(qfs_diskcache_get(c, &other, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);

    /* The entry file: private, scales then weight at its end, and it survives a reopen. */
    char p[PATH_MAX];
    entry_path(dir, &k, p, sizeof p);
    assert_int_equal(stat(p, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 077, 0);
    assert_true((size_t)sb.st_size > sizeof sc + sizeof w);
    qfs_diskcache_close(c);
    c = open_cache("rt", 1 << 20, dir, sizeof dir);
    memset(w2, 0, sizeof w2);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2, w2, sizeof w2), 0);
    assert_memory_equal(w2, w, sizeof w);
    /* Asking with other part sizes (another layout) is a miss, and the entry is not served. */
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2 - 1, w2, sizeof w2), -ENOENT);
    qfs_diskcache_close(c);
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void test_corrupt_truncated(void **state)
{
    (void)state;
    char dir[1024], p[PATH_MAX];
    qfs_diskcache *c = open_cache("bad", 1 << 20, dir, sizeof dir);
    uint8_t sc[64], w[4096], sc2[64], w2[4096];
    fill(sc, sizeof sc, 3);
    fill(w, sizeof w, 4);
    struct stat sb;

    /* A flipped byte in the weight, in the scales, or in the header: a miss, file removed. */
    off_t offs[3];
    qfs_cache_key k;
    key_of(10, &k);
    entry_path(dir, &k, p, sizeof p);
    assert_int_equal(put(c, &k, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(stat(p, &sb), 0);
    offs[0] = sb.st_size - 1;                                  /* last weight byte */
    offs[1] = sb.st_size - (off_t)sizeof w - 1;                /* last scales byte */
    offs[2] = 0;                                               /* the header's magic */
    for (int i = 0; i < 3; i++) {
        if (i) assert_int_equal(put(c, &k, sc, sizeof sc, w, sizeof w), 0);
        flip_byte(p, offs[i]);
        assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);
        assert_int_equal(stat(p, &sb), -1);
        assert_int_equal(errno, ENOENT);
    }

    /* Truncated (a writer that died without the atomic rename cannot produce this, a full
     * disk or a copy can). */
    assert_int_equal(put(c, &k, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(truncate(p, (off_t)(sizeof w / 2)), 0);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);
    assert_int_equal(stat(p, &sb), -1);

    /* An entry renamed to another key's name (foreign): the key in the header differs. */
    qfs_cache_key k2;
    key_of(11, &k2);
    char p2[PATH_MAX];
    entry_path(dir, &k2, p2, sizeof p2);
    assert_int_equal(put(c, &k, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(put(c, &k2, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(rename(p, p2), 0);
    assert_int_equal(qfs_diskcache_get(c, &k2, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);
    assert_int_equal(stat(p2, &sb), -1);

    /* A directory and a symlink in an entry's place: never read, removed, writable again. */
    assert_int_equal(mkdir(p2, 0700), 0);
    assert_int_equal(qfs_diskcache_get(c, &k2, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);
    assert_int_equal(lstat(p2, &sb), -1);
    assert_int_equal(symlink("/etc/passwd", p2), 0);
    assert_int_equal(qfs_diskcache_get(c, &k2, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);
    assert_int_equal(lstat(p2, &sb), -1);
    assert_int_equal(put(c, &k2, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(qfs_diskcache_get(c, &k2, sc2, sizeof sc2, w2, sizeof w2), 0);
    assert_memory_equal(w2, w, sizeof w);
    qfs_diskcache_close(c);
}

/* Pages of bytes [off, off + len) of a file that are in the page cache. */
static size_t resident_pages(const char *path, uint64_t off, uint64_t len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    uint8_t *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    size_t page = (size_t)sysconf(_SC_PAGESIZE), first = off / page, n = (len + page - 1) / page;
    unsigned char *vec = malloc((size_t)sb.st_size / page + 1);
    assert_non_null(vec);
    assert_int_equal(mincore(map, (size_t)sb.st_size, vec), 0);
    size_t in = 0;
    for (size_t i = first; i < first + n; i++) in += vec[i] & 1;
    free(vec);
    munmap(map, (size_t)sb.st_size);
    close(fd);
    return in;
}

static void test_big_weight_layout(void **state)
{
    (void)state;
    /* A weight of 1 MiB or more starts at a multiple of 4 KiB (format version 2) and is written
     * with O_DIRECT when asked and its buffer is aligned: the disk reads it from the buffer and
     * the page cache does not receive it; an unaligned buffer, or QFS_DISKCACHE_BUFFERED, goes
     * through the page cache. Same layout, same bytes. */
    char dir[1024], p[PATH_MAX], p2[PATH_MAX], p3[PATH_MAX];
    qfs_diskcache *c = open_cache("big", 64 << 20, dir, sizeof dir);
    size_t wl = ((size_t)2 << 20) + 12345, sl = 100;
    uint8_t *buf, sc[100], sc2[100];
    assert_int_equal(posix_memalign((void **)&buf, 4096, wl + 4096), 0);
    uint8_t *w2 = malloc(wl);
    assert_non_null(w2);
    fill(buf, wl + 4096, 5);
    fill(sc, sl, 6);
    qfs_cache_key k, k2, k3;
    key_of(30, &k);
    key_of(31, &k2);
    key_of(32, &k3);
    entry_path(dir, &k, p, sizeof p);
    entry_path(dir, &k2, p2, sizeof p2);
    entry_path(dir, &k3, p3, sizeof p3);
    /* Aligned and direct; not aligned (direct asked); aligned, buffered asked. */
    assert_int_equal(qfs_diskcache_put(c, &k, sc, sl, buf, wl, QFS_DISKCACHE_DIRECT), 0);
    assert_int_equal(qfs_diskcache_put(c, &k2, sc, sl, buf + 1, wl, QFS_DISKCACHE_DIRECT), 0);
    assert_int_equal(qfs_diskcache_put(c, &k3, sc, sl, buf, wl, QFS_DISKCACHE_BUFFERED), 0);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_size, 4096 + wl);          /* 64 + 100 bytes padded to 4096 */
    assert_int_equal(stat(p2, &sb), 0);
    assert_int_equal(sb.st_size, 4096 + wl);
    assert_int_equal(stat(p3, &sb), 0);
    assert_int_equal(sb.st_size, 4096 + wl);
    uint8_t head[4096];
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, head, sizeof head, 0), (ssize_t)sizeof head);
    close(fd);
    assert_int_equal(head[8], 2);                     /* version, little-endian */
    assert_memory_equal(head + 64, sc, sl);
    for (size_t i = 64 + sl; i < sizeof head; i++) assert_int_equal(head[i], 0);
    struct statfs fs;
    assert_int_equal(statfs(p, &fs), 0);
    if (fs.f_type != 0x01021994 /* TMPFS_MAGIC: its page cache is the file */) {
        size_t body_pages = wl / 4096;
        assert_true(resident_pages(p, 4096, body_pages * 4096) < body_pages / 10);
        assert_true(resident_pages(p2, 4096, body_pages * 4096) > body_pages / 2);
        assert_true(resident_pages(p3, 4096, body_pages * 4096) > body_pages / 2);
    }
    assert_int_equal(qfs_diskcache_get(c, &k3, sc2, sl, w2, wl), 0);
    assert_memory_equal(w2, buf, wl);
    flip_byte(p3, (off_t)(4096 + wl / 2));
    assert_int_equal(qfs_diskcache_get(c, &k3, sc2, sl, w2, wl), -ENOENT);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sl, w2, wl), 0);
    assert_memory_equal(sc2, sc, sl);
    assert_memory_equal(w2, buf, wl);
    assert_int_equal(qfs_diskcache_get(c, &k2, sc2, sl, w2, wl), 0);
    assert_memory_equal(w2, buf + 1, wl);
    /* The last scales byte and the last weight byte still count. */
    flip_byte(p, 64 + (off_t)sl - 1);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sl, w2, wl), -ENOENT);
    flip_byte(p2, (off_t)(4096 + wl - 1));
    assert_int_equal(qfs_diskcache_get(c, &k2, sc2, sl, w2, wl), -ENOENT);
    free(w2);
    free(buf);
    qfs_diskcache_close(c);
}

static char ramfs_dir[PATH_MAX];

static int unmount_ramfs(void **state)
{
    (void)state;
    if (ramfs_dir[0]) umount2(ramfs_dir, MNT_DETACH);
    ramfs_dir[0] = 0;
    return 0;
}

/* A filesystem that refuses O_DIRECT (ramfs: fcntl(F_SETFL, O_DIRECT) is EINVAL there): a
 * weight asked to be written directly is written through the page cache instead, the first
 * one after its refused attempt is undone (ftruncate), the next at once; both read back
 * intact and nothing is left in tmp/. Needs root for the mount; skips without it. */
static void test_direct_refused(void **state)
{
    (void)state;
    char mnt[PATH_MAX], dir[1024], p[PATH_MAX], p2[PATH_MAX];
    snprintf(mnt, sizeof mnt, "%s/ramfs", root);
    assert_int_equal(mkdir(mnt, 0700), 0);
    if (mount("ramfs", mnt, "ramfs", 0, "mode=0700") != 0) skip();
    snprintf(ramfs_dir, sizeof ramfs_dir, "%s", mnt);
    struct statfs fs;
    assert_int_equal(statfs(mnt, &fs), 0);
    assert_true(fs.f_type == 0x858458f6);   /* RAMFS_MAGIC */
    qfs_diskcache *c = open_cache("ramfs/cache", 64 << 20, dir, sizeof dir);
    size_t wl = ((size_t)2 << 20) + 12345, sl = 100;
    uint8_t *buf, *w2 = malloc(wl), sc[100], sc2[100];
    assert_non_null(w2);
    assert_int_equal(posix_memalign((void **)&buf, 4096, wl), 0);
    fill(buf, wl, 8);
    fill(sc, sl, 9);
    qfs_cache_key k, k2;
    key_of(40, &k);
    key_of(41, &k2);
    assert_int_equal(qfs_diskcache_put(c, &k, sc, sl, buf, wl, QFS_DISKCACHE_DIRECT), 0);
    assert_int_equal(qfs_diskcache_put(c, &k2, sc, sl, buf, wl, QFS_DISKCACHE_DIRECT), 0);
    entry_path(dir, &k, p, sizeof p);
    entry_path(dir, &k2, p2, sizeof p2);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_size, 4096 + wl);
    assert_int_equal(stat(p2, &sb), 0);
    assert_int_equal(sb.st_size, 4096 + wl);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sl, w2, wl), 0);
    assert_memory_equal(sc2, sc, sl);
    assert_memory_equal(w2, buf, wl);
    memset(w2, 0, wl);
    assert_int_equal(qfs_diskcache_get(c, &k2, sc2, sl, w2, wl), 0);
    assert_memory_equal(w2, buf, wl);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    DIR *d = opendir(tmp);
    assert_non_null(d);
    int left = 0;
    for (struct dirent *de; (de = readdir(d));) left += de->d_name[0] != '.';
    closedir(d);
    assert_int_equal(left, 0);
    free(w2);
    free(buf);
    qfs_diskcache_close(c);
}

static void set_mtime(const char *path, time_t t)
{
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void test_trim(void **state)
{
    (void)state;
    /* Entries of 1000 payload bytes plus a header (under 80 bytes): three fit in 3600 bytes,
     * a fourth does not; trimming goes to 90% of the budget (3240), which removes exactly
     * one of four. */
    enum { N = 1000 };
    const uint64_t budget = 3600;
    char dir[1024], p[4][PATH_MAX];
    qfs_diskcache *c = open_cache("trim", budget, dir, sizeof dir);
    uint8_t sc[10], w[N - 10], sc2[10], w2[N - 10];
    qfs_cache_key k[4];
    time_t now = time(NULL);
    for (unsigned i = 0; i < 3; i++) {
        key_of(100 + i, &k[i]);
        entry_path(dir, &k[i], p[i], sizeof p[i]);
        fill(sc, sizeof sc, i);
        fill(w, sizeof w, i + 50);
        assert_int_equal(put(c, &k[i], sc, sizeof sc, w, sizeof w), 0);
        set_mtime(p[i], now - 1000 + (time_t)i * 100);   /* 0 oldest, then 1, then 2 */
    }
    struct stat sb;
    assert_int_equal(stat(p[0], &sb), 0);
    assert_true(sb.st_size < 1080);
    /* A hit refreshes entry 0: now entry 1 is the least recently used. */
    assert_int_equal(qfs_diskcache_get(c, &k[0], sc2, sizeof sc2, w2, sizeof w2), 0);
    key_of(103, &k[3]);
    entry_path(dir, &k[3], p[3], sizeof p[3]);
    assert_int_equal(put(c, &k[3], sc, sizeof sc, w, sizeof w), 0);
    assert_true(exists(p[0]));
    assert_false(exists(p[1]));
    assert_true(exists(p[2]));
    assert_true(exists(p[3]));
    qfs_diskcache_close(c);

    /* A budget lowered since the last run applies at open: 1200 bytes (trimmed to 1080) keep
     * only the most recently used entry. */
    set_mtime(p[2], now - 500);
    set_mtime(p[0], now - 400);
    set_mtime(p[3], now - 300);
    c = open_cache("trim", 1200, dir, sizeof dir);
    assert_false(exists(p[0]));
    assert_false(exists(p[2]));
    assert_true(exists(p[3]));
    qfs_diskcache_close(c);
}

/* Writes a file of n bytes (byte i = i * 7 + seed) with mtime `age` seconds back. */
static void write_aged(const char *path, size_t n, unsigned seed, time_t age)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)(i * 7u + seed);
        assert_int_equal(write(fd, &b, 1), 1);
    }
    close(fd);
    set_mtime(path, time(NULL) - age);
}

static void test_one_budget(void **state)
{
    (void)state;
    /* The budget covers entries and view files (files/KEY.view with KEY.meta, whose mtime is
     * the view file's last use) with one least-recently-used order: a view file older than
     * every entry goes first, and goes by unlink only (a reader holding it keeps its bytes). */
    enum { N = 1000 };
    const uint64_t budget = 6000;
    char dir[1024], p[3][PATH_MAX], view[PATH_MAX], meta[PATH_MAX], view2[PATH_MAX],
        meta2[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/one", root);
    char files[1100];
    snprintf(files, sizeof files, "%s/files", dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(files, 0700), 0);
    const char *k1 = "0123456789abcdef0123456789abcdef", *k2 = "fedcba9876543210fedcba9876543210";
    snprintf(view, sizeof view, "%s/%s.view", files, k1);
    snprintf(meta, sizeof meta, "%s/%s.meta", files, k1);
    snprintf(view2, sizeof view2, "%s/%s.view", files, k2);
    snprintf(meta2, sizeof meta2, "%s/%s.meta", files, k2);
    write_aged(view, 2000, 1, 0);
    write_aged(meta, 40, 2, 2000);   /* last used 2000 s ago: the oldest of all */
    write_aged(view2, 1500, 3, 0);
    write_aged(meta2, 40, 4, 100);   /* used 100 s ago: newer than every entry below */
    int held = open(view, O_RDONLY);
    assert_true(held >= 0);
    /* Opened after the view files were written (by another process): counted from the start. */
    qfs_diskcache *c = open_cache("one", budget, dir, sizeof dir);
    assert_int_equal(qfs_diskcache_bytes(c), 2000 + 40 + 1500 + 40);
    uint8_t sc[10], w[N - 10];
    qfs_cache_key k[3];
    time_t now = time(NULL);
    for (unsigned i = 0; i < 2; i++) {
        key_of(300 + i, &k[i]);
        entry_path(dir, &k[i], p[i], sizeof p[i]);
        fill(sc, sizeof sc, i);
        fill(w, sizeof w, i + 9);
        assert_int_equal(put(c, &k[i], sc, sizeof sc, w, sizeof w), 0);
        set_mtime(p[i], now - 1000 + (time_t)i * 100);
    }
    /* 2 entries (~2150) + 2 view files with metas (3580) fit in 6000; a third entry does not:
     * the trim (to 90%: 5400) removes the oldest, the first view file, and nothing else. */
    key_of(302, &k[2]);
    entry_path(dir, &k[2], p[2], sizeof p[2]);
    assert_int_equal(put(c, &k[2], sc, sizeof sc, w, sizeof w), 0);
    assert_false(exists(view));
    assert_false(exists(meta));
    assert_true(exists(view2) && exists(meta2));
    for (int i = 0; i < 3; i++) assert_true(exists(p[i]));
    uint8_t got[2000];
    assert_int_equal(pread(held, got, sizeof got, 0), (ssize_t)sizeof got);
    for (size_t i = 0; i < sizeof got; i++) assert_int_equal(got[i], (uint8_t)(i * 7u + 1));
    close(held);
    /* A reservation for another store's file trims the same way: 2500 bytes need the two
     * oldest entries gone (to 5400 - 2500), the newer view file stays; one larger than the
     * budget removes nothing and is refused. */
    uint64_t before = qfs_diskcache_bytes(c);
    assert_int_equal(qfs_diskcache_reserve(c, budget + 1), -ENOSPC);
    assert_int_equal(qfs_diskcache_bytes(c), before);
    for (int i = 0; i < 3; i++) assert_true(exists(p[i]));
    assert_int_equal(qfs_diskcache_reserve(c, 2500), 0);
    assert_false(exists(p[0]));
    assert_false(exists(p[1]));
    assert_true(exists(p[2]));
    assert_true(exists(view2));
    assert_true(qfs_diskcache_bytes(c) <= (uint64_t)(budget * 0.9));
    qfs_diskcache_close(c);
}

static void test_stale_locks(void **state)
{
    (void)state;
    /* Lock files no one holds and untouched for over a minute are removed at open; one held
     * (flock) by another open file, or one just made, stays. */
    char dir[1024], old_free[PATH_MAX], old_held[PATH_MAX], fresh[PATH_MAX];
    qfs_diskcache *c = open_cache("locks", 1 << 20, dir, sizeof dir);
    qfs_diskcache_close(c);
    qfs_cache_key k;
    key_of(5, &k);
    char hex[33];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", k.bytes[i]);
    snprintf(old_free, sizeof old_free, "%s/locks/%s", dir, hex);
    snprintf(old_held, sizeof old_held, "%s/locks/00000000000000000000000000000002", dir);
    snprintf(fresh, sizeof fresh, "%s/locks/00000000000000000000000000000003", dir);
    write_aged(old_free, 0, 0, 3600);
    write_aged(old_held, 0, 0, 3600);
    write_aged(fresh, 0, 0, 0);
    int h = open(old_held, O_RDONLY);
    assert_true(h >= 0);
    assert_int_equal(flock(h, LOCK_EX | LOCK_NB), 0);
    c = open_cache("locks", 1 << 20, dir, sizeof dir);
    assert_false(exists(old_free));
    assert_true(exists(old_held));
    assert_true(exists(fresh));
    close(h);
    /* A lock removed as stale is made again by the next taker. */
    int fd = -1;
    assert_int_equal(qfs_diskcache_lock(c, &k, &fd), 0);
    assert_true(exists(old_free));
    qfs_diskcache_unlock(fd);
    qfs_diskcache_close(c);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_lock(void **state)
{
    (void)state;
    char dir[1024];
    qfs_diskcache *c = open_cache("lock", 1 << 20, dir, sizeof dir);
    qfs_cache_key k, k2;
    key_of(200, &k);
    key_of(201, &k2);
    int fd = -1, fd2 = -1, fd3 = -1;
    assert_int_equal(qfs_diskcache_lock(c, &k, &fd), 0);
    assert_true(fd >= 0);
    /* Another key is independent. */
    assert_int_equal(qfs_diskcache_lock(c, &k2, &fd3), 0);
    qfs_diskcache_unlock(fd3);

    /* flock locks belong to the open file, so a second lock of the same key from this same
     * process contends as another process would: a bounded wait, then -ETIMEDOUT. */
    double t0 = now_s();
    assert_int_equal(qfs_diskcache_lock(c, &k, &fd2), -ETIMEDOUT);
    double waited = now_s() - t0;
    assert_int_equal(fd2, -1);
    assert_true(waited >= 1.0);
    assert_true(waited < 20.0);
    /* Right after a wait ran out, locks are only tried: no second long wait. */
    t0 = now_s();
    assert_int_equal(qfs_diskcache_lock(c, &k, &fd2), -ETIMEDOUT);
    assert_true(now_s() - t0 < 0.5);
    /* A free lock is still taken at once, and a released one can be taken again. */
    assert_int_equal(qfs_diskcache_lock(c, &k2, &fd3), 0);
    qfs_diskcache_unlock(fd3);
    qfs_diskcache_unlock(fd);
    assert_int_equal(qfs_diskcache_lock(c, &k, &fd2), 0);
    qfs_diskcache_unlock(fd2);

    /* Lock files are private. */
    char hex[33], p[PATH_MAX];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", k.bytes[i]);
    snprintf(p, sizeof p, "%s/locks/%s", dir, hex);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);

    /* Paused after a failed write: nothing will be written, so no lock is taken. The first
     * pause of an outage says so (the caller warns once), a repeated one does not. */
    assert_true(qfs_diskcache_set_readonly(c));
    assert_false(qfs_diskcache_set_readonly(c));
    assert_int_equal(qfs_diskcache_lock(c, &k, &fd2), -EROFS);
    uint8_t b[4] = {0};
    assert_int_equal(put(c, &k, b, 2, b + 2, 2), -EROFS);
    qfs_diskcache_close(c);
}

static void test_untrusted(void **state)
{
    (void)state;
    char open_dir[1024], dir[PATH_MAX];
    qfs_diskcache *c = NULL;
    qfs_error err = {{0}};

    /* A level writable by others without the sticky bit: anyone could swap the cache. */
    snprintf(open_dir, sizeof open_dir, "%s/open", root);
    assert_int_equal(mkdir(open_dir, 0700), 0);
    assert_int_equal(chmod(open_dir, 0777), 0);
    snprintf(dir, sizeof dir, "%s/cache", open_dir);
    assert_int_equal(qfs_diskcache_open(dir, 1 << 20, &c, &err), -EPERM);
    assert_null(c);
    assert_contains(err.msg, open_dir);
    assert_contains(err.msg, "writable by others");

    /* The cache directory itself group-writable. */
    snprintf(dir, sizeof dir, "%s/gw", root);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, 0770), 0);
    err.msg[0] = '\0';
    assert_int_equal(qfs_diskcache_open(dir, 1 << 20, &c, &err), -EPERM);
    assert_contains(err.msg, "writable by others");

    /* The same with the sticky bit above it (as /tmp): accepted. */
    assert_int_equal(chmod(open_dir, 01777), 0);
    snprintf(dir, sizeof dir, "%s/cache", open_dir);
    err.msg[0] = '\0';
    int rc = qfs_diskcache_open(dir, 1 << 20, &c, &err);
    if (rc) fail_msg("sticky parent: %d %s", rc, err.msg);
    qfs_diskcache_close(c);
    c = NULL;

    /* v1/ a symlink to a directory elsewhere: refused or replaced, never followed. */
    char elsewhere[1024], v1[PATH_MAX + 8];
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", root);
    assert_int_equal(mkdir(elsewhere, 0700), 0);
    snprintf(dir, sizeof dir, "%s/sym", root);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(v1, sizeof v1, "%s/v1", dir);
    assert_int_equal(symlink(elsewhere, v1), 0);
    rc = qfs_diskcache_open(dir, 1 << 20, &c, &err);
    if (rc == 0) {
        qfs_cache_key k;
        key_of(300, &k);
        uint8_t b[4] = {1, 2, 3, 4};
        assert_int_equal(put(c, &k, b, 2, b + 2, 2), 0);
        qfs_diskcache_close(c);
    } else {
        assert_int_equal(rc, -EPERM);
    }
    char probe[PATH_MAX + 8];
    snprintf(probe, sizeof probe, "rmdir '%s' 2>/dev/null", elsewhere);
    assert_int_equal(system(probe), 0);   /* still empty: nothing was written through it */
}


/* Writes n bytes of pattern seed to path (created or truncated). */
static void write_file(const char *path, size_t n, unsigned seed)
{
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    fill(b, n, seed);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    free(b);
}

static void id_of(const char *path, bool allow_blob, uint64_t machine, qfs_srcid *id)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    qfs_error err = {{0}};
    int rc = qfs_srcid_of(fd, path, allow_blob, machine, id, &err);
    close(fd);
    if (rc) fail_msg("srcid of %s: %d %s", path, rc, err.msg);
}

static void pause_tick(void)
{
    struct timespec ts = {0, 20 * 1000000L};   /* past any timestamp granularity */
    nanosleep(&ts, NULL);
}

static void test_content_hash(void **state)
{
    (void)state;
    /* The definition in srcid.h, computed here with libxxhash directly: XXH3-128 over the
     * canonical XXH3-128 of each 4 MiB chunk (the last one shorter). */
    size_t n = QFS_SRCMEMO_CHUNK * 2 + 12345;
    uint8_t *b = malloc(n);
    assert_non_null(b);
    fill(b, n, 9);
    XXH128_canonical_t d[3], want;
    for (int i = 0; i < 3; i++) {
        size_t off = (size_t)i * QFS_SRCMEMO_CHUNK, l = i < 2 ? QFS_SRCMEMO_CHUNK : 12345;
        XXH128_canonicalFromHash(&d[i], XXH3_128bits(b + off, l));
    }
    XXH128_canonicalFromHash(&want, XXH3_128bits(d, sizeof d));
    uint8_t got1[16], got2[16];
    qfs_srcmemo_hash(b, n, 1, got1);
    qfs_srcmemo_hash(b, n, 0, got2);   /* every thread: the same digest */
    assert_memory_equal(got1, want.digest, 16);
    assert_memory_equal(got2, want.digest, 16);
    b[n - 1] ^= 1;                     /* the last byte counts */
    qfs_srcmemo_hash(b, n, 0, got2);
    assert_memory_not_equal(got2, want.digest, 16);
    /* Keys: the recipe and the content hash both count. */
    qfs_cache_key k1, k2, k3;
    qfs_srcmemo_key("int8|quark", got1, &k1);
    qfs_srcmemo_key("int8|quark", got2, &k2);
    qfs_srcmemo_key("fp8|quark", got1, &k3);
    assert_memory_not_equal(k1.bytes, k2.bytes, 16);
    assert_memory_not_equal(k1.bytes, k3.bytes, 16);
    free(b);
}

static void test_recipe_markers(void **state)
{
    (void)state;
    char dir[1024];
    qfs_diskcache *c = open_cache("recipes", 1 << 20, dir, sizeof dir);
    assert_false(qfs_diskcache_may_hold(c, "int8|quark|BF16|64x64"));
    assert_int_equal(qfs_diskcache_mark(c, "int8|quark|BF16|64x64"), 0);
    assert_true(qfs_diskcache_may_hold(c, "int8|quark|BF16|64x64"));
    assert_false(qfs_diskcache_may_hold(c, "int8|quark|BF16|64x65"));
    qfs_diskcache_close(c);
    c = open_cache("recipes", 1 << 20, dir, sizeof dir);   /* they stay */
    assert_true(qfs_diskcache_may_hold(c, "int8|quark|BF16|64x64"));
    qfs_diskcache_close(c);
}

static void test_identity(void **state)
{
    (void)state;
    char a[PATH_MAX], b[PATH_MAX];
    snprintf(a, sizeof a, "%s/a.safetensors", root);
    snprintf(b, sizeof b, "%s/b.safetensors", root);
    write_file(a, 5000, 1);
    write_file(b, 5000, 1);   /* same bytes, another inode */
    qfs_srcid ia, ia2, ib, other_machine;
    id_of(a, true, 42, &ia);
    id_of(a, true, 42, &ia2);
    id_of(b, true, 42, &ib);
    id_of(a, true, 43, &other_machine);
    assert_false(ia.blob);
    assert_int_equal(ia.size, 5000);
    assert_memory_equal(ia.name.bytes, ia2.name.bytes, 16);          /* stable */
    assert_memory_not_equal(ia.name.bytes, ib.name.bytes, 16);       /* another file */
    assert_memory_not_equal(ia.name.bytes, other_machine.name.bytes, 16);
    /* Rewritten in place with the same bytes, then its mtime put back: the change time still
     * moves, and so does the identity. */
    struct stat sb;
    assert_int_equal(stat(a, &sb), 0);
    pause_tick();
    write_file(a, 5000, 1);
    struct timespec times[2] = {sb.st_atim, sb.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, a, times, 0), 0);
    id_of(a, true, 42, &ia2);
    assert_int_equal(ia2.mtime.tv_nsec, sb.st_mtim.tv_nsec);
    assert_memory_not_equal(ia.name.bytes, ia2.name.bytes, 16);
    /* Just written: hashed, not remembered; a second later it is. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    assert_false(qfs_srcid_settled(&ia2, &now));
    now.tv_sec += 2;
    assert_true(qfs_srcid_settled(&ia2, &now));
    /* No machine id and not a blob: no identity. */
    qfs_srcid none;
    int fd = open(a, O_RDONLY);
    assert_int_equal(qfs_srcid_of(fd, a, true, 0, &none, NULL), -ENOENT);
    close(fd);
}

/* A Hugging Face cache: snapshots/REV/model.safetensors -> ../../blobs/SHA. */
static void make_blob(const char *repo, const char *sha, unsigned seed, char *link, size_t len)
{
    char p[PATH_MAX], target[PATH_MAX];
    snprintf(p, sizeof p, "mkdir -p '%s/blobs' '%s/snapshots/rev'", repo, repo);
    assert_int_equal(system(p), 0);
    snprintf(target, sizeof target, "%s/blobs/%s", repo, sha);
    write_file(target, 3000, seed);
    snprintf(link, len, "%s/snapshots/rev/model.safetensors", repo);
    snprintf(p, sizeof p, "../../blobs/%s", sha);
    unlink(link);
    assert_int_equal(symlink(p, link), 0);
}

static void test_blob_identity(void **state)
{
    (void)state;
    const char *sha = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
    char r1[1024], r2[1024], l1[PATH_MAX], l2[PATH_MAX];
    snprintf(r1, sizeof r1, "%s/hub1/models--o--m", root);
    snprintf(r2, sizeof r2, "%s/hub2/models--o--m", root);
    make_blob(r1, sha, 5, l1, sizeof l1);
    make_blob(r2, sha, 5, l2, sizeof l2);   /* another machine's copy of the same blob */
    qfs_srcid i1, i2, plain;
    id_of(l1, true, 42, &i1);
    id_of(l2, true, 77, &i2);
    assert_true(i1.blob && i2.blob);
    assert_memory_equal(i1.name.bytes, i2.name.bytes, 16);   /* the name, not the inode */
    id_of(l1, false, 42, &plain);
    assert_false(plain.blob);
    assert_memory_not_equal(plain.name.bytes, i1.name.bytes, 16);
    /* Not a sha256 name (upper case, or not under blobs/): the file's own identity. */
    char bad[1024], badl[PATH_MAX];
    snprintf(bad, sizeof bad, "%s/hub3/models--o--m", root);
    make_blob(bad, "5F70BF18A086007016E948B04AED3B82103A36BEA41755B6CDDFAF10ACE3C6EF", 5, badl,
              sizeof badl);
    id_of(badl, true, 42, &plain);
    assert_false(plain.blob);

    /* A memo of blob 1 read back by blob 2 (another inode): used. The same inode with other
     * times (edited in place on this machine): -ESTALE. */
    qfs_srcmemo m, back;
    uint8_t h[16] = {1, 2, 3};
    qfs_srcmemo_init(&m, &i1);
    assert_int_equal(qfs_srcmemo_add(&m, 8, 100, h), 0);
    uint8_t *buf;
    size_t len;
    assert_int_equal(qfs_srcmemo_encode(&m, &buf, &len), 0);
    qfs_srcmemo_init(&back, &i2);
    assert_int_equal(qfs_srcmemo_merge(&back, buf, len), 0);
    uint8_t got[16];
    assert_true(qfs_srcmemo_find(&back, 8, 100, got));
    assert_memory_equal(got, h, 16);
    qfs_srcmemo_free(&back);
    char target[PATH_MAX];
    snprintf(target, sizeof target, "%s/blobs/%s", r1, sha);
    pause_tick();
    write_file(target, 3000, 6);
    qfs_srcid edited;
    id_of(l1, true, 42, &edited);
    assert_memory_equal(edited.name.bytes, i1.name.bytes, 16);   /* the name cannot tell */
    qfs_srcmemo_init(&back, &edited);
    assert_int_equal(qfs_srcmemo_merge(&back, buf, len), -ESTALE);
    assert_int_equal(back.n, 0);
    qfs_srcmemo_free(&back);
    free(buf);
    qfs_srcmemo_free(&m);
}

static void test_memo_store(void **state)
{
    (void)state;
    char dir[1024], src[PATH_MAX];
    snprintf(src, sizeof src, "%s/s.safetensors", root);
    write_file(src, 1 << 20, 3);
    qfs_srcid id;
    id_of(src, true, 42, &id);
    qfs_srcmemo m;
    qfs_srcmemo_init(&m, &id);
    uint8_t h[3][16];
    for (int i = 0; i < 3; i++) {
        memset(h[i], 0x10 * (i + 1), 16);
        /* added out of order: kept sorted by offset */
        assert_int_equal(qfs_srcmemo_add(&m, (uint64_t)(2 - i) * 4096, 4096, h[i]), 0);
    }
    assert_true(m.dirty);
    uint8_t got[16];
    assert_true(qfs_srcmemo_find(&m, 0, 4096, got));
    assert_memory_equal(got, h[2], 16);
    assert_false(qfs_srcmemo_find(&m, 0, 4095, got));   /* another range is another tensor */
    assert_false(qfs_srcmemo_find(&m, 100, 4096, got));

    qfs_diskcache *c = open_cache("memo", 1 << 20, dir, sizeof dir);
    void *data;
    size_t len;
    assert_int_equal(qfs_diskcache_memo_get(c, &id.name, &data, &len), -ENOENT);
    uint8_t *buf;
    size_t blen;
    assert_int_equal(qfs_srcmemo_encode(&m, &buf, &blen), 0);
    assert_int_equal(qfs_diskcache_memo_put(c, &id.name, buf, blen), 0);
    assert_int_equal(qfs_diskcache_memo_get(c, &id.name, &data, &len), 0);
    assert_int_equal(len, blen);
    assert_memory_equal(data, buf, blen);
    qfs_srcmemo back;
    qfs_srcmemo_init(&back, &id);
    assert_int_equal(qfs_srcmemo_merge(&back, data, len), 0);
    assert_int_equal(back.n, 3);
    assert_false(back.dirty);
    for (int i = 0; i < 3; i++) {
        assert_true(qfs_srcmemo_find(&back, (uint64_t)(2 - i) * 4096, 4096, got));
        assert_memory_equal(got, h[i], 16);
    }
    qfs_srcmemo_free(&back);
    free(data);

    /* The file: memo/KEY.qfm, private; a flipped byte, a cut or another memo's bytes under this
     * name are misses, and the file goes. */
    char p[PATH_MAX], hex[33];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", id.name.bytes[i]);
    snprintf(p, sizeof p, "%s/memo/%s.qfm", dir, hex);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* Memos count in the budget, as stored (header and bytes). */
    assert_int_equal(qfs_diskcache_bytes(c), (uint64_t)sb.st_size);
    assert_true((uint64_t)sb.st_size > blen);
    flip_byte(p, sb.st_size - 3);
    assert_int_equal(qfs_diskcache_memo_get(c, &id.name, &data, &len), -ENOENT);
    assert_int_not_equal(access(p, F_OK), 0);
    assert_int_equal(qfs_diskcache_memo_put(c, &id.name, buf, blen), 0);
    assert_int_equal(truncate(p, sb.st_size - 1), 0);
    assert_int_equal(qfs_diskcache_memo_get(c, &id.name, &data, &len), -ENOENT);
    assert_int_not_equal(access(p, F_OK), 0);
    qfs_cache_key other;
    key_of(77, &other);
    assert_int_equal(qfs_diskcache_memo_put(c, &other, buf, blen), 0);
    char q[PATH_MAX];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", other.bytes[i]);
    snprintf(q, sizeof q, "%s/memo/%s.qfm", dir, hex);
    assert_int_equal(rename(q, p), 0);
    assert_int_equal(qfs_diskcache_memo_get(c, &id.name, &data, &len), -ENOENT);

    /* A memo whose bytes are intact but describe another size or a range out of the file is
     * refused by the merge. */
    qfs_srcid smaller = id;
    smaller.size = 4096 * 2;
    qfs_srcmemo_init(&back, &smaller);
    assert_int_equal(qfs_srcmemo_merge(&back, buf, blen), -EINVAL);
    assert_int_equal(back.n, 0);
    assert_int_equal(qfs_srcmemo_merge(&back, buf, blen - 1), -EINVAL);
    qfs_srcmemo_free(&back);
    free(buf);
    qfs_srcmemo_free(&m);
    qfs_diskcache_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_corrupt_truncated),
        cmocka_unit_test(test_big_weight_layout),
        cmocka_unit_test_teardown(test_direct_refused, unmount_ramfs),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_one_budget),
        cmocka_unit_test(test_stale_locks),
        cmocka_unit_test(test_lock),
        cmocka_unit_test(test_untrusted),
        cmocka_unit_test(test_content_hash),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_blob_identity),
        cmocka_unit_test(test_memo_store),
        cmocka_unit_test(test_recipe_markers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
