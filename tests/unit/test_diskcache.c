/* Unit tests of the persistent cache (core/diskcache.c) on a real directory: round trip, a
 * corrupt or truncated entry detected and removed (never served), trimming to the budget in
 * least-recently-used order, the bounded lock wait, and directories another user could write
 * refused. */
#include "unit_util.c"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>

#include "quarkfs/diskcache.h"

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
    assert_int_equal(qfs_diskcache_put(c, &k, sc, sizeof sc, w, sizeof w), 0);

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
    assert_int_equal(qfs_diskcache_put(c, &k, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(stat(p, &sb), 0);
    offs[0] = sb.st_size - 1;                                  /* last weight byte */
    offs[1] = sb.st_size - (off_t)sizeof w - 1;                /* last scales byte */
    offs[2] = 0;                                               /* the header's magic */
    for (int i = 0; i < 3; i++) {
        if (i) assert_int_equal(qfs_diskcache_put(c, &k, sc, sizeof sc, w, sizeof w), 0);
        flip_byte(p, offs[i]);
        assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);
        assert_int_equal(stat(p, &sb), -1);
        assert_int_equal(errno, ENOENT);
    }

    /* Truncated (a writer that died without the atomic rename cannot produce this, a full
     * disk or a copy can). */
    assert_int_equal(qfs_diskcache_put(c, &k, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(truncate(p, (off_t)(sizeof w / 2)), 0);
    assert_int_equal(qfs_diskcache_get(c, &k, sc2, sizeof sc2, w2, sizeof w2), -ENOENT);
    assert_int_equal(stat(p, &sb), -1);

    /* An entry renamed to another key's name (foreign): the key in the header differs. */
    qfs_cache_key k2;
    key_of(11, &k2);
    char p2[PATH_MAX];
    entry_path(dir, &k2, p2, sizeof p2);
    assert_int_equal(qfs_diskcache_put(c, &k, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(qfs_diskcache_put(c, &k2, sc, sizeof sc, w, sizeof w), 0);
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
    assert_int_equal(qfs_diskcache_put(c, &k2, sc, sizeof sc, w, sizeof w), 0);
    assert_int_equal(qfs_diskcache_get(c, &k2, sc2, sizeof sc2, w2, sizeof w2), 0);
    assert_memory_equal(w2, w, sizeof w);
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
        assert_int_equal(qfs_diskcache_put(c, &k[i], sc, sizeof sc, w, sizeof w), 0);
        set_mtime(p[i], now - 1000 + (time_t)i * 100);   /* 0 oldest, then 1, then 2 */
    }
    struct stat sb;
    assert_int_equal(stat(p[0], &sb), 0);
    assert_true(sb.st_size < 1080);
    /* A hit refreshes entry 0: now entry 1 is the least recently used. */
    assert_int_equal(qfs_diskcache_get(c, &k[0], sc2, sizeof sc2, w2, sizeof w2), 0);
    key_of(103, &k[3]);
    entry_path(dir, &k[3], p[3], sizeof p[3]);
    assert_int_equal(qfs_diskcache_put(c, &k[3], sc, sizeof sc, w, sizeof w), 0);
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
    assert_int_equal(qfs_diskcache_put(c, &k, b, 2, b + 2, 2), -EROFS);
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
        assert_int_equal(qfs_diskcache_put(c, &k, b, 2, b + 2, 2), 0);
        qfs_diskcache_close(c);
    } else {
        assert_int_equal(rc, -EPERM);
    }
    char probe[PATH_MAX + 8];
    snprintf(probe, sizeof probe, "rmdir '%s' 2>/dev/null", elsewhere);
    assert_int_equal(system(probe), 0);   /* still empty: nothing was written through it */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_corrupt_truncated),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_lock),
        cmocka_unit_test(test_untrusted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
