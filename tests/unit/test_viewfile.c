/* Unit tests of the complete view files (core/viewfile.c) without a mount: a real safetensors
 * file in a temp directory, a disk cache there, the writer thread, and the file it writes
 * compared byte for byte with what the read path assembles (qfs_view_read); then the key and
 * trust rules: another spec, a source whose ctime changed, a view file changed after it was
 * written, a budget too small. */
#include "unit_util.c"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "quarkfs/diskcache.h"
#include "quarkfs/engine.h"
#include "quarkfs/model.h"
#include "quarkfs/view.h"
#include "quarkfs/viewfile.h"

static char root[512], src_dir[600], cache_dir[600];

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/qfs-viewfile-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(root)) return -1;
    snprintf(src_dir, sizeof src_dir, "%s/src", root);
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", root);
    if (mkdir(src_dir, 0755) != 0) return -1;
    /* Two 64x256 bf16 projections of assorted finite values. */
    const char *json = "{\"model.layers.0.self_attn.q_proj.weight\":{\"dtype\":\"BF16\","
                       "\"shape\":[64,256],\"data_offsets\":[0,32768]},"
                       "\"model.layers.0.mlp.down_proj.weight\":{\"dtype\":\"BF16\","
                       "\"shape\":[64,256],\"data_offsets\":[32768,65536]}}";
    size_t len;
    uint8_t *st = st_build(json, 8, 65536, &len);
    if (!st) return -1;
    uint8_t *data = st + len - 65536;
    for (size_t i = 0; i < 32768; i++) {
        uint16_t v = bf16_exact((float)((int)(i * 37 % 251) - 125) / 64.0f);
        memcpy(data + 2 * i, &v, 2);
    }
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/model.safetensors", src_dir);
    FILE *f = fopen(p, "wb");
    int ok = f && fwrite(st, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = 0;
    free(st);
    snprintf(p, sizeof p, "%s/config.json", src_dir);
    f = fopen(p, "wb");
    ok = ok && f && fputs("{\"model_type\": \"llama\"}\n", f) >= 0;
    if (f && fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

/* A model, an engine on a disk cache in cache_dir, and the view files of both. */
typedef struct fixture {
    qfs_model *m;
    qfs_engine *e;
    qfs_diskcache *disk;
    qfs_viewfiles *v;
    size_t entry;            /* the quantized file */
} fixture;

static fixture open_fixture(const char *spec, uint64_t budget)
{
    fixture fx = {0};
    qfs_model_options o = {.spec = unit_spec(spec), .format = QFS_FMT_QUARK};
    qfs_error err = {{0}};
    if (qfs_model_open(src_dir, &o, &fx.m, &err)) fail_msg("qfs_model_open: %s", err.msg);
    if (qfs_diskcache_open(cache_dir, budget, &fx.disk, &err))
        fail_msg("qfs_diskcache_open: %s", err.msg);
    qfs_engine_options eo = {.cache_mem = 64 << 20, .threads = 1, .disk = fx.disk};
    if (qfs_engine_create(&eo, &fx.e, &err)) fail_msg("qfs_engine_create: %s", err.msg);
    if (qfs_viewfiles_open(fx.disk, budget, fx.m, &fx.v, &err))
        fail_msg("qfs_viewfiles_open: %s", err.msg);
    assert_int_equal(qfs_viewfiles_start(fx.v, fx.m, fx.e, NULL, NULL), 0);
    for (size_t i = 0; i < fx.m->n_entries; i++)
        if (fx.m->entries[i].kind == QFS_ENTRY_QUANTIZED) fx.entry = i;
    assert_true(fx.entry > 0);
    return fx;
}

static void close_fixture(fixture *fx)
{
    qfs_viewfiles_close(fx->v);
    qfs_engine_destroy(fx->e);   /* closes the disk cache */
    qfs_model_close(fx->m);
}

static qfs_viewfiles_stats stats(const fixture *fx)
{
    qfs_viewfiles_stats s;
    qfs_viewfiles_get_stats(fx->v, &s);
    return s;
}

/* Requests the file's view file and waits (at most 20 s) until the writer is done with it. */
static qfs_viewfiles_stats write_and_wait(fixture *fx)
{
    qfs_viewfiles_request(fx->v, fx->entry);
    for (int i = 0; i < 2000; i++) {
        qfs_viewfiles_stats s = stats(fx);
        if (!s.queued) return s;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    fail_msg("the view file was not written within 20 s");
    return stats(fx);
}

/* The assembled bytes of the file (the read path, as a mount with no view file serves). */
static uint8_t *assembled(fixture *fx, size_t *len)
{
    *len = (size_t)fx->m->entries[fx->entry].st.st_size;
    uint8_t *buf = malloc(*len);
    assert_non_null(buf);
    size_t got = 0;
    qfs_error err = {{0}};
    assert_int_equal(qfs_view_read(fx->m, fx->e, fx->entry, -1, buf, *len, 0, &got, &err), 0);
    assert_int_equal(got, *len);
    return buf;
}

/* Paths of the view files now in files/ (at most 8). */
static size_t view_paths(char out[][1400])
{
    char d[1024];
    snprintf(d, sizeof d, "%s/files", cache_dir);
    DIR *dir = opendir(d);
    assert_non_null(dir);
    size_t n = 0;
    for (struct dirent *de; (de = readdir(dir)) && n < 8; ) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] != '.' && l > 5 && strcmp(de->d_name + l - 5, ".view") == 0)
            snprintf(out[n++], sizeof out[0], "%s/%s", d, de->d_name);
    }
    closedir(dir);
    return n;
}

static void test_written_file_equals_view(void **state)
{
    (void)state;
    fixture fx = open_fixture("int8", 1 << 30);
    assert_int_equal(stats(&fx).present, 0);
    int fd;
    assert_int_equal(qfs_viewfiles_get(fx.v, fx.entry, &fd), -ENOENT);
    qfs_viewfiles_stats s = write_and_wait(&fx);
    assert_int_equal(s.written, 1);
    assert_int_equal(s.present, 1);
    size_t len;
    uint8_t *want = assembled(&fx, &len);
    assert_int_equal(qfs_viewfiles_get(fx.v, fx.entry, &fd), 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal((size_t)sb.st_size, len);
    assert_int_equal(sb.st_mode & 0777, 0400);
    uint8_t *got = malloc(len);
    assert_non_null(got);
    assert_int_equal(pread(fd, got, len, 0), (ssize_t)len);
    assert_memory_equal(got, want, len);
    close(fd);
    free(got);
    free(want);
    close_fixture(&fx);
    /* A second open of the store finds it without writing. */
    fx = open_fixture("int8", 1 << 30);
    assert_int_equal(stats(&fx).present, 1);
    s = write_and_wait(&fx);
    assert_int_equal(s.written, 0);
    close_fixture(&fx);
}

static void test_other_spec_other_key(void **state)
{
    (void)state;
    fixture fx = open_fixture("fp8", 1 << 30);
    assert_int_equal(stats(&fx).present, 0);   /* the int8 file of the test above is not it */
    close_fixture(&fx);
}

static void test_changed_source_other_key(void **state)
{
    (void)state;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/model.safetensors", src_dir);
    fixture fx = open_fixture("int8", 1 << 30);
    assert_int_equal(stats(&fx).present, 1);
    close_fixture(&fx);
    assert_int_equal(chmod(p, 0640), 0);       /* the bytes stay; the ctime moves */
    fx = open_fixture("int8", 1 << 30);
    assert_int_equal(stats(&fx).present, 0);
    assert_int_equal(write_and_wait(&fx).written, 1);
    close_fixture(&fx);
}

static void test_changed_view_file_not_served(void **state)
{
    (void)state;
    char paths[8][1400];
    size_t n = view_paths(paths);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) {
        int wfd = open(paths[i], O_WRONLY);        /* root may write a 0400 file */
        if (wfd < 0) {
            assert_int_equal(chmod(paths[i], 0600), 0);   /* else the chmod alone moves it */
        } else {
            assert_int_equal(pwrite(wfd, "\xff\xff", 2, 100), 2);
            close(wfd);
        }
    }
    fixture fx = open_fixture("int8", 1 << 30);
    int fd;
    assert_int_equal(qfs_viewfiles_get(fx.v, fx.entry, &fd), -ENOENT);
    qfs_viewfiles_stats s = stats(&fx);
    assert_true(s.rejected >= 1);
    char left[8][1400];
    assert_int_equal(view_paths(left), n - 1);   /* the current key's file was removed */
    close_fixture(&fx);
}

static void test_budget_too_small(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
    assert_int_equal(system(cmd), 0);
    fixture fx = open_fixture("int8", 4096);
    qfs_viewfiles_stats s = write_and_wait(&fx);
    assert_int_equal(s.written, 0);
    assert_int_equal(s.skipped, 1);
    close_fixture(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_written_file_equals_view),
        cmocka_unit_test(test_other_spec_other_key),
        cmocka_unit_test(test_changed_source_other_key),
        cmocka_unit_test(test_changed_view_file_not_served),
        cmocka_unit_test(test_budget_too_small),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
