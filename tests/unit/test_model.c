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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_names_find_nothing),
        cmocka_unit_test(test_symlinks_out_of_src_left_out),
        cmocka_unit_test(test_follow_all_shows_them),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
