/* Unit tests of the spec and format tables (core/spec.c): lookups of every spec and format,
 * which pairs can be written (the matrix of doc/FORMAT.md §5.5, written out by hand in
 * unit_specs.h), the loaders --list-specs names for each pair, and the messages that refuse a
 * pair, which name the alternatives. */
#include "unit_util.c"
#include "unit_specs.h"

/* True if `name` occurs in `msg` as a whole word: not preceded or followed by a letter, digit
 * or '-' (so "int4" is not found inside "uint4" or "int4-g32"). */
static bool has_token(const char *msg, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(msg, name); p; p = strstr(p + 1, name)) {
        char before = p == msg ? ' ' : p[-1], after = p[n];
        bool nb = (before >= 'a' && before <= 'z') || (before >= '0' && before <= '9') ||
                  before == '-' || (before >= 'A' && before <= 'Z');
        bool na = (after >= 'a' && after <= 'z') || (after >= '0' && after <= '9') ||
                  after == '-' || (after >= 'A' && after <= 'Z');
        if (!nb && !na) return true;
    }
    return false;
}

static void test_spec_lookup_new_specs(void **state)
{
    (void)state;
    const qfs_spec *s = unit_spec("fp8-block");
    assert_int_equal(s->wtype, QFS_W_FP8_E4M3);
    assert_int_equal(s->gran, QFS_PER_BLOCK);
    assert_int_equal(s->group, 128);
    assert_int_equal(s->act, QFS_ACT_DYNAMIC_PER_GROUP);
    /* uint4 = uint4-g128, int4 = int4-g128: asymmetric / symmetric per group, weight-only */
    static const struct { const char *name; qfs_wtype w; unsigned g; } g4[] = {
        {"uint4", QFS_W_UINT4, 128}, {"uint4-g32", QFS_W_UINT4, 32},
        {"uint4-g64", QFS_W_UINT4, 64}, {"uint4-g128", QFS_W_UINT4, 128},
        {"int4", QFS_W_INT4, 128}, {"int4-g32", QFS_W_INT4, 32},
        {"int4-g64", QFS_W_INT4, 64}, {"int4-g128", QFS_W_INT4, 128},
    };
    for (size_t i = 0; i < sizeof g4 / sizeof g4[0]; i++) {
        s = unit_spec(g4[i].name);
        assert_int_equal(s->wtype, g4[i].w);
        assert_int_equal(s->gran, QFS_PER_GROUP);
        assert_int_equal(s->group, g4[i].g);
        assert_int_equal(s->act, QFS_ACT_NONE);
    }
    s = unit_spec("mxfp4");
    assert_int_equal(s->wtype, QFS_W_MXFP4);
    assert_int_equal(s->group, 32);
    assert_int_equal(s->act, QFS_ACT_DYNAMIC_MX);
    /* every spec is listed once by qfs_spec_all */
    size_t n = 0;
    const qfs_spec *all = qfs_spec_all(&n);
    assert_int_equal(n, N_SPECS);
    for (size_t i = 0; i < N_SPECS; i++) {
        int found = 0;
        for (size_t k = 0; k < n; k++) found += strcmp(all[k].name, ALL_SPECS[i]) == 0;
        if (found != 1) fail_msg("spec '%s' listed %d times", ALL_SPECS[i], found);
    }
    /* an unknown name lists the valid ones */
    qfs_error err = {{0}};
    const qfs_spec *out = NULL;
    assert_int_equal(qfs_spec_lookup("uint4-g16", &out, &err), -EINVAL);
    assert_contains(err.msg, "uint4-g16");
    for (size_t i = 0; i < N_SPECS; i++)
        if (!has_token(err.msg, ALL_SPECS[i]))
            fail_msg("'%s' not listed in: %s", ALL_SPECS[i], err.msg);
}

static void test_format_lookup(void **state)
{
    (void)state;
    static const qfs_format expect[] = {FQ, FA, F8, FC};
    for (size_t i = 0; i < 4; i++) {
        qfs_format f = QFS_FMT_COUNT;
        qfs_error err = {{0}};
        assert_int_equal(qfs_format_lookup(ALL_FORMATS[i], &f, &err), 0);
        assert_int_equal(f, expect[i]);
        assert_string_equal(qfs_format_name(f), ALL_FORMATS[i]);
    }
    qfs_format f;
    qfs_error err = {{0}};
    assert_int_equal(qfs_format_lookup("gptq", &f, &err), -EINVAL);
    assert_contains(err.msg, "gptq");
    for (size_t i = 0; i < 4; i++)
        if (!has_token(err.msg, ALL_FORMATS[i]))
            fail_msg("'%s' not listed in: %s", ALL_FORMATS[i], err.msg);
    assert_int_equal(qfs_format_lookup("AWQ", &f, &err), -EINVAL);   /* names are exact */
}

static void test_spec_format_matrix(void **state)
{
    (void)state;
    unsigned n_valid = 0;
    for (size_t i = 0; i < N_SPECS; i++) {
        const qfs_spec *s = unit_spec(ALL_SPECS[i]);
        for (int f = 0; f < 4; f++) {
            bool ok = qfs_spec_format_ok(s, (qfs_format)f);
            if (ok != VALID[i][f])
                fail_msg("%s in %s: ok = %d, expected %d", s->name, ALL_FORMATS[f], ok,
                         VALID[i][f]);
            if (VALID[i][f]) {
                qfs_error err = {{0}};
                assert_int_equal(qfs_spec_check_format(s, (qfs_format)f, &err), 0);
                n_valid++;
            }
        }
    }
    assert_int_equal(n_valid, 33);   /* 14 + 8 + 2 + 9 */
}

/* --list-specs names, for every valid pair, what the real loaders did with it: a pair added
 * without a loader row would print the fallback. */
static void test_list_specs_every_pair_has_loaders(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    qfs_spec_print_table(f);
    rewind(f);
    char line[512];
    unsigned rows = 0;
    while (fgets(line, sizeof line, f) && line[0] != '\n') {
        if (strncmp(line, "SPEC ", 5) == 0) continue;
        if (strstr(line, "no loader run yet")) fail_msg("no loader row: %s", line);
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, 33);
}

static void test_spec_check_format_messages(void **state)
{
    (void)state;
    unsigned n_refused = 0;
    for (size_t i = 0; i < N_SPECS; i++) {
        const qfs_spec *s = unit_spec(ALL_SPECS[i]);
        for (int f = 0; f < 4; f++) {
            if (VALID[i][f]) continue;
            n_refused++;
            qfs_error err = {{0}};
            assert_int_equal(qfs_spec_check_format(s, (qfs_format)f, &err), -EINVAL);
            const char *m = err.msg;
            if (!has_token(m, s->name) || !has_token(m, ALL_FORMATS[f]))
                fail_msg("%s/%s: message does not name the pair: %s", s->name, ALL_FORMATS[f], m);
            /* the formats this spec can be written in */
            for (int g = 0; g < 4; g++)
                if (VALID[i][g] && !has_token(m, ALL_FORMATS[g]))
                    fail_msg("%s/%s: format '%s' (which takes %s) not named: %s", s->name,
                             ALL_FORMATS[f], ALL_FORMATS[g], s->name, m);
            /* the specs this format takes */
            for (size_t k = 0; k < N_SPECS; k++)
                if (VALID[k][f] && !has_token(m, ALL_SPECS[k]))
                    fail_msg("%s/%s: spec '%s' (which %s takes) not named: %s", s->name,
                             ALL_FORMATS[f], ALL_SPECS[k], ALL_FORMATS[f], m);
            /* ... and no spec the format does not take ("fp8" is also a format name) */
            for (size_t k = 0; k < N_SPECS; k++)
                if (k != i && !VALID[k][f] && strcmp(ALL_SPECS[k], "fp8") != 0 &&
                    has_token(m, ALL_SPECS[k]))
                    fail_msg("%s/%s: names '%s', which %s does not take: %s", s->name,
                             ALL_FORMATS[f], ALL_SPECS[k], ALL_FORMATS[f], m);
        }
    }
    assert_int_equal(n_refused, 60 - 33);
    /* one message read in full: mxfp4 goes only to quark; awq takes the 8 4-bit specs */
    qfs_error err = {{0}};
    assert_int_equal(qfs_spec_check_format(unit_spec("mxfp4"), FA, &err), -EINVAL);
    assert_true(has_token(err.msg, "quark"));
    assert_false(has_token(err.msg, "compressed-tensors"));
    assert_false(has_token(err.msg, "int8"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_lookup_new_specs),
        cmocka_unit_test(test_format_lookup),
        cmocka_unit_test(test_spec_format_matrix),
        cmocka_unit_test(test_spec_check_format_messages),
        cmocka_unit_test(test_list_specs_every_pair_has_loaders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
