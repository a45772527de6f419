/* Unit tests of the output tensors of a weight (core/layout.c, qfs_layout_for): for every valid
 * spec x format pair their names, kinds, dtypes, shapes, sizes and parts (doc/FORMAT.md §5,
 * expected values written out by hand), the source dtypes each pair takes, and the shapes it
 * accepts or refuses with a reason. */
#include "unit_util.c"
#include "unit_specs.h"

#include "quarkfs/layout.h"

#define OW QFS_OUT_WEIGHT
#define OS QFS_OUT_SCALE
#define OZ QFS_OUT_ZERO_POINT
#define OH QFS_OUT_SHAPE

/* ---- layout expectations ---- */

typedef struct exp_out {
    const char *suffix;
    qfs_out_kind kind;
    qfs_dtype dtype;
    unsigned ndim;
    uint64_t d0, d1, bytes;
} exp_out;

typedef struct exp_layout {
    const char *spec;
    qfs_format f;
    unsigned n;
    exp_out out[4];
} exp_layout;

/* Checks a layout: names, kinds, dtypes, shapes, sizes; the weight alone in the weight part,
 * everything else back to back in the scales part in the order listed. */
static void check_layout(const qfs_layout *l, const exp_out *e, unsigned n, const char *ctx)
{
    if (l->n_out != n) fail_msg("%s: %u outputs, expected %u", ctx, l->n_out, n);
    uint64_t woff = 0, soff = 0;
    for (unsigned k = 0; k < n; k++) {
        const qfs_out_tensor *t = &l->out[k];
        if (strcmp(t->suffix, e[k].suffix) != 0)
            fail_msg("%s: output %u is '%s', expected '%s'", ctx, k, t->suffix, e[k].suffix);
        if (t->kind != e[k].kind) fail_msg("%s %s: kind %d, expected %d", ctx, t->suffix, t->kind,
                                           e[k].kind);
        if (t->dtype != e[k].dtype)
            fail_msg("%s %s: dtype %s, expected %s", ctx, t->suffix, qfs_dtype_name(t->dtype),
                     qfs_dtype_name(e[k].dtype));
        if (t->ndim != e[k].ndim)
            fail_msg("%s %s: ndim %u, expected %u", ctx, t->suffix, t->ndim, e[k].ndim);
        uint64_t d[2] = {e[k].d0, e[k].d1};
        for (unsigned i = 0; i < e[k].ndim; i++)
            if (t->shape[i] != d[i])
                fail_msg("%s %s: shape[%u] = %llu, expected %llu", ctx, t->suffix, i,
                         (unsigned long long)t->shape[i], (unsigned long long)d[i]);
        if (t->bytes != e[k].bytes)
            fail_msg("%s %s: %llu bytes, expected %llu", ctx, t->suffix,
                     (unsigned long long)t->bytes, (unsigned long long)e[k].bytes);
        qfs_part part = e[k].kind == OW ? QFS_PART_WEIGHT : QFS_PART_SCALES;
        uint64_t *off = part == QFS_PART_WEIGHT ? &woff : &soff;
        if (t->part != part) fail_msg("%s %s: part %d, expected %d", ctx, t->suffix, t->part, part);
        if (t->offset != *off)
            fail_msg("%s %s: offset %llu, expected %llu", ctx, t->suffix,
                     (unsigned long long)t->offset, (unsigned long long)*off);
        *off += e[k].bytes;
    }
    if (l->weight_bytes != woff || l->scales_bytes != soff)
        fail_msg("%s: parts %llu + %llu bytes, expected %llu + %llu", ctx,
                 (unsigned long long)l->weight_bytes, (unsigned long long)l->scales_bytes,
                 (unsigned long long)woff, (unsigned long long)soff);
}

static void expect_layout(const char *spec, qfs_format f, qfs_dtype dt, uint64_t o, uint64_t i,
                          const exp_out *e, unsigned n)
{
    qfs_layout l;
    qfs_error why = {{0}};
    char ctx[128];
    snprintf(ctx, sizeof ctx, "%s/%s %s [%llu, %llu]", spec, qfs_format_name(f),
             qfs_dtype_name(dt), (unsigned long long)o, (unsigned long long)i);
    int rc = qfs_layout_for(unit_spec(spec), f, dt, o, i, &l, &why);
    if (rc) fail_msg("%s: refused (%d): %s", ctx, rc, why.msg);
    check_layout(&l, e, n, ctx);
}

/* Every valid pair for a BF16 [256, 512] weight (O = 256, I = 512; D = BF16, 2 bytes). */
#define W_I8 {".weight", OW, QFS_DT_I8, 2, 256, 512, 131072}
#define W_F8 {".weight", OW, QFS_DT_F8_E4M3, 2, 256, 512, 131072}
/* quark/awq 4-bit: weight I32 [I, O/8] = [512, 32] = 65536 bytes; scale BF16 [I/G, 256];
 * zero point I32 [I/G, 32] */
#define Q4(spec, f, w, s, z, G)                                                              \
    {spec, f, 3, {{w, OW, QFS_DT_I32, 2, 512, 32, 65536},                                     \
                  {s, OS, QFS_DT_BF16, 2, 512 / G, 256, 512 / G * 256 * 2},                   \
                  {z, OZ, QFS_DT_I32, 2, 512 / G, 32, 512 / G * 32 * 4}}}
#define QUARK4(spec, G) Q4(spec, FQ, ".weight", ".weight_scale", ".weight_zero_point", G)
#define AWQ4(spec, G) Q4(spec, FA, ".qweight", ".scales", ".qzeros", G)
/* compressed-tensors int4: weight_packed I32 [O, I/8] = [256, 64]; scale BF16 [O, I/G];
 * weight_shape I64 [2] */
#define CT4(spec, G)                                                                         \
    {spec, FC, 3, {{".weight_packed", OW, QFS_DT_I32, 2, 256, 64, 65536},                     \
                   {".weight_scale", OS, QFS_DT_BF16, 2, 256, 512 / G, 256 * (512 / G) * 2},  \
                   {".weight_shape", OH, QFS_DT_I64, 1, 2, 0, 16}}}

static const exp_layout ALL_LAYOUTS[] = {
    /* quark (FORMAT.md §5.1) */
    {"int8", FQ, 3, {W_I8, {".weight_scale", OS, QFS_DT_F32, 0, 0, 0, 4},
                     {".weight_zero_point", OZ, QFS_DT_I8, 0, 0, 0, 1}}},
    {"int8-channel", FQ, 3, {W_I8, {".weight_scale", OS, QFS_DT_BF16, 1, 256, 0, 512},
                             {".weight_zero_point", OZ, QFS_DT_I8, 1, 256, 0, 256}}},
    {"w8a8-int8", FQ, 3, {W_I8, {".weight_scale", OS, QFS_DT_BF16, 1, 256, 0, 512},
                          {".weight_zero_point", OZ, QFS_DT_I8, 1, 256, 0, 256}}},
    {"fp8", FQ, 2, {W_F8, {".weight_scale", OS, QFS_DT_BF16, 0, 0, 0, 2}}},
    {"fp8-channel", FQ, 2, {W_F8, {".weight_scale", OS, QFS_DT_BF16, 1, 256, 0, 512}}},
    QUARK4("uint4", 128), QUARK4("uint4-g32", 32), QUARK4("uint4-g64", 64),
    QUARK4("uint4-g128", 128), QUARK4("int4", 128), QUARK4("int4-g32", 32),
    QUARK4("int4-g64", 64), QUARK4("int4-g128", 128),
    /* FORMAT.md §5.1, mxfp4: weight U8 [O, I/2], scale U8 [O, I/32] */
    {"mxfp4", FQ, 2, {{".weight", OW, QFS_DT_U8, 2, 256, 256, 65536},
                      {".weight_scale", OS, QFS_DT_U8, 2, 256, 16, 4096}}},
    /* awq (FORMAT.md §5.2): the same bytes renamed */
    AWQ4("uint4", 128), AWQ4("uint4-g32", 32), AWQ4("uint4-g64", 64), AWQ4("uint4-g128", 128),
    AWQ4("int4", 128), AWQ4("int4-g32", 32), AWQ4("int4-g64", 64), AWQ4("int4-g128", 128),
    /* fp8 (FORMAT.md §5.3): weight_scale D [] per tensor, weight_scale_inv F32 [O/128, I/128] */
    {"fp8", F8, 2, {W_F8, {".weight_scale", OS, QFS_DT_BF16, 0, 0, 0, 2}}},
    {"fp8-block", F8, 2, {W_F8, {".weight_scale_inv", OS, QFS_DT_F32, 2, 2, 4, 32}}},
    /* compressed-tensors (FORMAT.md §5.4: tensor [1], channel [O,1], block [O/128, I/128]) */
    {"int8-channel", FC, 3, {{".weight_packed", OW, QFS_DT_I32, 2, 256, 128, 131072},
                             {".weight_scale", OS, QFS_DT_BF16, 2, 256, 1, 512},
                             {".weight_shape", OH, QFS_DT_I64, 1, 2, 0, 16}}},
    {"w8a8-int8", FC, 2, {W_I8, {".weight_scale", OS, QFS_DT_BF16, 2, 256, 1, 512}}},
    {"fp8", FC, 2, {W_F8, {".weight_scale", OS, QFS_DT_BF16, 1, 1, 0, 2}}},
    {"fp8-channel", FC, 2, {W_F8, {".weight_scale", OS, QFS_DT_BF16, 2, 256, 1, 512}}},
    {"fp8-block", FC, 2, {W_F8, {".weight_scale", OS, QFS_DT_F32, 2, 2, 4, 32}}},
    CT4("int4", 128), CT4("int4-g32", 32), CT4("int4-g64", 64), CT4("int4-g128", 128),
};
#define N_LAYOUTS (sizeof ALL_LAYOUTS / sizeof ALL_LAYOUTS[0])

static void test_layout_every_valid_pair(void **state)
{
    (void)state;
    assert_int_equal(N_LAYOUTS, 33);
    bool seen[N_SPECS][4] = {{false}};
    for (size_t k = 0; k < N_LAYOUTS; k++) {
        const exp_layout *e = &ALL_LAYOUTS[k];
        size_t i = 0;
        while (i < N_SPECS && strcmp(ALL_SPECS[i], e->spec) != 0) i++;
        assert_true(i < N_SPECS);
        assert_true(VALID[i][e->f]);
        assert_false(seen[i][e->f]);
        seen[i][e->f] = true;
        expect_layout(e->spec, e->f, QFS_DT_BF16, 256, 512, e->out, e->n);
    }
}

static void test_layout_source_dtypes(void **state)
{
    (void)state;
    /* the scale dtype follows D, except int8 per-tensor (F32, Quark's eps promotion), fp8-block
     * (F32 always) and mxfp4 (U8 exponents) */
    const exp_out awq_f32[] = {{".qweight", OW, QFS_DT_I32, 2, 32, 1, 128},
                               {".scales", OS, QFS_DT_F32, 2, 1, 8, 32},
                               {".qzeros", OZ, QFS_DT_I32, 2, 1, 1, 4}};
    expect_layout("uint4-g32", FA, QFS_DT_F32, 8, 32, awq_f32, 3);
    const exp_out q_f16[] = {{".weight", OW, QFS_DT_I32, 2, 64, 2, 512},
                             {".weight_scale", OS, QFS_DT_F16, 2, 1, 16, 32},
                             {".weight_zero_point", OZ, QFS_DT_I32, 2, 1, 2, 8}};
    expect_layout("int4-g64", FQ, QFS_DT_F16, 16, 64, q_f16, 3);
    const exp_out int8_f16[] = {{".weight", OW, QFS_DT_I8, 2, 3, 5, 15},
                                {".weight_scale", OS, QFS_DT_F32, 0, 0, 0, 4},
                                {".weight_zero_point", OZ, QFS_DT_I8, 0, 0, 0, 1}};
    expect_layout("int8", FQ, QFS_DT_F16, 3, 5, int8_f16, 3);
    const exp_out blk_f16[] = {{".weight", OW, QFS_DT_F8_E4M3, 2, 384, 128, 49152},
                               {".weight_scale_inv", OS, QFS_DT_F32, 2, 3, 1, 12}};
    expect_layout("fp8-block", F8, QFS_DT_F16, 384, 128, blk_f16, 2);
    const exp_out ct_fp8_f32[] = {{".weight", OW, QFS_DT_F8_E4M3, 2, 2, 3, 6},
                                  {".weight_scale", OS, QFS_DT_F32, 1, 1, 0, 4}};
    expect_layout("fp8", FC, QFS_DT_F32, 2, 3, ct_fp8_f32, 2);
    const exp_out ct4_f16[] = {{".weight_packed", OW, QFS_DT_I32, 2, 3, 4, 48},
                               {".weight_scale", OS, QFS_DT_F16, 2, 3, 1, 6},
                               {".weight_shape", OH, QFS_DT_I64, 1, 2, 0, 16}};
    expect_layout("int4-g32", FC, QFS_DT_F16, 3, 32, ct4_f16, 3);
    const exp_out mx_f32[] = {{".weight", OW, QFS_DT_U8, 2, 3, 32, 96},
                              {".weight_scale", OS, QFS_DT_U8, 2, 3, 2, 6}};
    expect_layout("mxfp4", FQ, QFS_DT_F32, 3, 64, mx_f32, 2);
}

static void test_layout_shapes_accepted(void **state)
{
    (void)state;
    /* compressed-tensors packs int4 along the input dim: O need not be a multiple of 8 */
    const exp_out ct12[] = {{".weight_packed", OW, QFS_DT_I32, 2, 12, 32, 1536},
                            {".weight_scale", OS, QFS_DT_BF16, 2, 12, 2, 48},
                            {".weight_shape", OH, QFS_DT_I64, 1, 2, 0, 16}};
    expect_layout("int4-g128", FC, QFS_DT_BF16, 12, 256, ct12, 3);
    /* w8a8-int8 in compressed-tensors is not packed: any I */
    const exp_out w8[] = {{".weight", OW, QFS_DT_I8, 2, 5, 6, 30},
                          {".weight_scale", OS, QFS_DT_BF16, 2, 5, 1, 10}};
    expect_layout("w8a8-int8", FC, QFS_DT_BF16, 5, 6, w8, 2);
    /* int8-channel packed: I = 4 is enough */
    const exp_out p8[] = {{".weight_packed", OW, QFS_DT_I32, 2, 3, 1, 12},
                          {".weight_scale", OS, QFS_DT_BF16, 2, 3, 1, 6},
                          {".weight_shape", OH, QFS_DT_I64, 1, 2, 0, 16}};
    expect_layout("int8-channel", FC, QFS_DT_BF16, 3, 4, p8, 3);
    /* mxfp4: any O */
    const exp_out mx[] = {{".weight", OW, QFS_DT_U8, 2, 3, 16, 48},
                          {".weight_scale", OS, QFS_DT_U8, 2, 3, 1, 3}};
    expect_layout("mxfp4", FQ, QFS_DT_BF16, 3, 32, mx, 2);
    /* fp8-block: one block */
    const exp_out b1[] = {{".weight", OW, QFS_DT_F8_E4M3, 2, 128, 128, 16384},
                          {".weight_scale", OS, QFS_DT_F32, 2, 1, 1, 4}};
    expect_layout("fp8-block", FC, QFS_DT_BF16, 128, 128, b1, 2);
    /* the smallest 4-bit awq shape: [8, G] */
    const exp_out a8[] = {{".qweight", OW, QFS_DT_I32, 2, 64, 1, 256},
                          {".scales", OS, QFS_DT_BF16, 2, 1, 8, 16},
                          {".qzeros", OZ, QFS_DT_I32, 2, 1, 1, 4}};
    expect_layout("int4-g64", FA, QFS_DT_BF16, 8, 64, a8, 3);
}

static void test_layout_shape_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        qfs_format f;
        uint64_t o, i;
        const char *words[3];
    } cases[] = {
        /* group: I % G */
        {"uint4", FQ, 256, 200, {"in=200", "128", NULL}},
        {"uint4-g32", FA, 16, 48, {"in=48", "32", NULL}},
        {"int4-g64", FC, 16, 96, {"in=96", "64", NULL}},
        {"int4-g128", FA, 8, 192, {"in=192", "128", NULL}},
        /* quark/awq: O % 8 */
        {"uint4-g32", FQ, 12, 64, {"out=12", "8", NULL}},
        {"int4-g64", FA, 20, 128, {"out=20", "8", NULL}},
        {"int4", FQ, 4, 128, {"out=4", "8", NULL}},
        /* mxfp4: I % 32 */
        {"mxfp4", FQ, 4, 48, {"in=48", "32", NULL}},
        {"mxfp4", FQ, 8, 16, {"in=16", "32", NULL}},
        /* fp8-block: O or I % 128 */
        {"fp8-block", F8, 256, 200, {"200", "128", NULL}},
        {"fp8-block", F8, 200, 256, {"200", "128", NULL}},
        {"fp8-block", FC, 64, 128, {"64", "128", NULL}},
        /* compressed-tensors int8-channel: I % 4 */
        {"int8-channel", FC, 4, 6, {"in=6", "4", NULL}},
        {"int8-channel", FC, 16, 130, {"in=130", "4", NULL}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        qfs_layout l;
        qfs_error err = {{0}};
        const char *why = err.msg;
        int rc = qfs_layout_for(unit_spec(cases[k].spec), cases[k].f, QFS_DT_BF16, cases[k].o,
                                cases[k].i, &l, &err);
        if (rc != -EDOM)
            fail_msg("%s/%s [%llu, %llu]: rc %d, expected -EDOM", cases[k].spec,
                     qfs_format_name(cases[k].f), (unsigned long long)cases[k].o,
                     (unsigned long long)cases[k].i, rc);
        for (size_t w = 0; w < 3 && cases[k].words[w]; w++)
            if (!unit_strcasestr(why, cases[k].words[w]))
                fail_msg("%s/%s: reason \"%s\" lacks \"%s\"", cases[k].spec,
                         qfs_format_name(cases[k].f), why, cases[k].words[w]);
    }
    /* the error may be absent (the planner passes NULL) */
    qfs_layout l;
    assert_int_equal(qfs_layout_for(unit_spec("mxfp4"), FQ, QFS_DT_BF16, 4, 48, &l, NULL),
                     -EDOM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_every_valid_pair),
        cmocka_unit_test(test_layout_source_dtypes),
        cmocka_unit_test(test_layout_shapes_accepted),
        cmocka_unit_test(test_layout_shape_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
