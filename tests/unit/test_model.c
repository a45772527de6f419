/* Unit tests of the tree of the view (core/model.c) as FUSE lookups see it: no name can leave
 * the source directory. The kernel resolves "." and ".." itself, but a lookup request for any
 * name reaches qfs_model_lookup(); ".", "..", "", names with a slash and names of symlinks that
 * point out of SRC must find nothing, and every entry's source path must lie inside SRC. */
#include "unit_util.c"

#include <limits.h>
#include <sys/stat.h>

#include "quarkfs/model.h"

static char root[512];         /* short enough that every path below fits PATH_MAX */

static void write_file(const char *rel, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void link_to(const char *target, const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    assert_int_equal(symlink(target, p), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "%s/qfs-model-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(root)) return -1;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/outside", root);   /* a sibling tree: root/outside, root/src */
    if (mkdir(p, 0755)) return -1;
    snprintf(p, sizeof p, "%s/src", root);
    if (mkdir(p, 0755)) return -1;
    snprintf(p, sizeof p, "%s/src/sub", root);
    if (mkdir(p, 0755)) return -1;
    write_file("outside/secret.txt", "outside\n");
    write_file("src/config.json", "{\"model_type\": \"llama\"}\n");
    write_file("src/sub/notes.txt", "inside\n");
    link_to("/etc/passwd", "src/passwd");
    link_to("../outside/secret.txt", "src/secret");
    link_to("..", "src/up");
    link_to("sub/notes.txt", "src/inside");
    link_to("../config.json", "src/sub/back");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    const char *rels[] = {"src/passwd", "src/secret", "src/up", "src/inside", "src/sub/back",
                          "src/sub/notes.txt", "src/config.json", "outside/secret.txt"};
    const char *dirs[] = {"src/sub", "src", "outside", ""};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof rels / sizeof *rels; i++) {
        snprintf(p, sizeof p, "%s/%s", root, rels[i]);
        unlink(p);
    }
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(p, sizeof p, "%s/%s", root, dirs[i]);
        rmdir(p);
    }
    return 0;
}

static qfs_model *open_src(bool follow_all)
{
    const qfs_spec *spec;
    qfs_error err = {{0}};
    assert_int_equal(qfs_spec_lookup("int8", &spec, &err), 0);
    qfs_model_options o = {.spec = spec, .format = QFS_FMT_QUARK, .follow_all_symlinks = follow_all};
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/src", root);
    qfs_model *m = NULL;
    int rc = qfs_model_open(src, &o, &m, &err);
    if (rc) fail_msg("qfs_model_open: %d %s", rc, err.msg);
    return m;
}

static bool has_warning(const qfs_model *m, const char *a, const char *b)
{
    for (size_t i = 0; i < m->n_warnings; i++)
        if (strstr(m->warnings[i], a) && strstr(m->warnings[i], b)) return true;
    return false;
}

static void test_dot_names_find_nothing(void **state)
{
    (void)state;
    qfs_model *m = open_src(false);
    size_t idx, sub;
    const char *bad[] = {"..", ".", "", "../", "/", "..\\", "sub/notes.txt", "../outside",
                         "sub/..", "./config.json", "/etc/passwd"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (qfs_model_lookup(m, 0, bad[i], &idx) != -ENOENT)
            fail_msg("lookup of \"%s\" at the root found entry %zu", bad[i], idx);
    }
    assert_int_equal(qfs_model_lookup(m, 0, "sub", &sub), 0);
    assert_int_equal(m->entries[sub].kind, QFS_ENTRY_DIR);
    assert_int_equal(m->entries[sub].parent, 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(qfs_model_lookup(m, sub, bad[i], &idx), -ENOENT);
    assert_int_equal(qfs_model_lookup(m, sub, "notes.txt", &idx), 0);
    assert_int_equal(qfs_model_lookup(m, idx, "x", &idx), -ENOTDIR);   /* a file is no directory */
    qfs_model_close(m);
}

static void test_symlinks_out_of_src_left_out(void **state)
{
    (void)state;
    qfs_model *m = open_src(false);
    size_t idx;
    const char *out[] = {"passwd", "secret", "up"};
    for (size_t i = 0; i < sizeof out / sizeof *out; i++) {
        assert_int_equal(qfs_model_lookup(m, 0, out[i], &idx), -ENOENT);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/src/%s", root, out[i]);
        if (!has_warning(m, path, "outside the source directory"))
            fail_msg("no warning names %s", path);
    }
    assert_int_equal(qfs_model_lookup(m, 0, "inside", &idx), 0);
    assert_int_equal(m->entries[idx].kind, QFS_ENTRY_PASSTHROUGH);
    /* every entry's source resolves inside SRC */
    char src_real[PATH_MAX];
    snprintf(src_real, sizeof src_real, "%s/src", root);
    char buf[PATH_MAX];
    assert_non_null(realpath(src_real, buf));
    size_t n = strlen(buf);
    for (size_t i = 0; i < m->n_entries; i++) {
        char r[PATH_MAX];
        assert_non_null(realpath(m->entries[i].src_path, r));
        if (strncmp(r, buf, n) != 0 || (r[n] != '/' && r[n] != '\0'))
            fail_msg("entry %s has its source outside SRC: %s", m->entries[i].path, r);
    }
    qfs_model_close(m);
}

static void test_follow_all_shows_them(void **state)
{
    (void)state;
    qfs_model *m = open_src(true);
    size_t idx, up;
    assert_int_equal(qfs_model_lookup(m, 0, "passwd", &idx), 0);
    assert_int_equal(qfs_model_lookup(m, 0, "secret", &idx), 0);
    assert_int_equal(qfs_model_lookup(m, 0, "up", &up), 0);         /* root/ : outside, src(loop) */
    assert_int_equal(qfs_model_lookup(m, up, "outside", &idx), 0);
    assert_int_equal(qfs_model_lookup(m, up, "src", &idx), -ENOENT);  /* a loop back to SRC */
    assert_int_equal(qfs_model_lookup(m, 0, "..", &idx), -ENOENT);
    qfs_model_close(m);
}

/* A second view of the same source (qfs_model_open_like): the same tree, the first view's
 * parsed header shared (not read again), its own plan and config. */
static void test_open_like_shares_the_scan(void **state)
{
    (void)state;
    char dir[600], p[PATH_MAX];   /* root is at most 511 bytes */
    snprintf(dir, sizeof dir, "%s/like", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    /* one F32 [2,2] weight: header JSON padded with spaces to a multiple of 8 */
    const char *json = "{\"l.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    size_t n = strlen(json), padded = (n + 7) / 8 * 8;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    fwrite(len, 1, 8, f);
    fputs(json, f);
    for (size_t i = n; i < padded; i++) fputc(' ', f);
    const float w[4] = {1.0f, -2.0f, 0.5f, 0.25f};
    fwrite(w, sizeof w, 1, f);
    fclose(f);
    snprintf(p, sizeof p, "%s/config.json", dir);
    f = fopen(p, "w");
    assert_non_null(f);
    fputs("{}\n", f);
    fclose(f);

    const qfs_spec *i8, *f8;
    qfs_error err = {{0}};
    assert_int_equal(qfs_spec_lookup("int8", &i8, &err), 0);
    assert_int_equal(qfs_spec_lookup("fp8", &f8, &err), 0);
    qfs_model_options o = {.spec = i8, .format = QFS_FMT_QUARK};
    qfs_model *a = NULL, *b = NULL;
    assert_int_equal(qfs_model_open(dir, &o, &a, &err), 0);
    o.spec = f8;
    assert_int_equal(qfs_model_open_like(a, &o, &b, &err), 0);
    assert_int_equal(a->n_entries, b->n_entries);
    size_t ia, ib;
    assert_int_equal(qfs_model_lookup(a, 0, "model.safetensors", &ia), 0);
    assert_int_equal(qfs_model_lookup(b, 0, "model.safetensors", &ib), 0);
    const qfs_entry *ea = &a->entries[ia], *eb = &b->entries[ib];
    assert_ptr_equal(ea->st_file.tensors, eb->st_file.tensors);   /* one parse */
    assert_true(eb->st_borrowed && !ea->st_borrowed);
    assert_true(ea->src_fd >= 0 && eb->src_fd >= 0 && ea->src_fd != eb->src_fd);
    assert_int_equal(ea->plan.n_jobs, 1);
    assert_int_equal(eb->plan.n_jobs, 1);
    assert_ptr_equal(ea->plan.jobs[0].spec, i8);
    assert_ptr_equal(eb->plan.jobs[0].spec, f8);
    /* the same source bytes: int8 has a zero point tensor, fp8 none */
    assert_int_equal(a->src_bytes, b->src_bytes);
    assert_true(ea->plan.n_tensors == 3 && eb->plan.n_tensors == 2);
    assert_int_equal(qfs_model_lookup(b, 0, "config.json", &ib), 0);
    assert_int_equal(b->entries[ib].kind, QFS_ENTRY_GENERATED);
    assert_non_null(memmem(b->entries[ib].data, b->entries[ib].data_len, "fp8_e4m3", 8));
    qfs_model_close(b);
    qfs_model_close(a);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_names_find_nothing),
        cmocka_unit_test(test_symlinks_out_of_src_left_out),
        cmocka_unit_test(test_follow_all_shows_them),
        cmocka_unit_test(test_open_like_shares_the_scan),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
