/* Unit tests of the 4-bit, MXFP4 and block FP8 specs and of the formats (core/spec.c,
 * core/layout.c, the per-group / MX / block kernels of core/quant.c, the dequantizer, the
 * configs of core/rewrite.c and the planner with a format). Every expected value is worked out
 * by hand in the comments from the contract, not taken from the code's output:
 *   doc/FORMAT.md §5.1 (int4/uint4 and MXFP4 tensors), §4.5 (integer arithmetic), §4.6
 *   (MXFP4 arithmetic), §4.9 (packing), §5.2/§6.2 (awq), §5.3/§6.3 (fp8, with the
 *   FineGrainedFP8 block layout), §5.4/§6.4 (compressed-tensors), §5.5 (the matrix).
 * Notation: weight [O, I]; D = source dtype; rD = round to D; G = group size.
 *   uint4: mn = min(min x, 0), mx = max(max x, 0); s = max(rD(rD(mx - mn) / 15), 2^-23);
 *          zp = clamp(-rne(rD(mn / s)), 0, 15); q = clamp(rne(fl32(x * fl32(1/s))) + zp, 0, 15)
 *   int4:  s = max(rD(amax / 7.5), 2^-23); q = clamp(rne(x * (1/s)), -8, 7)
 *   AWQ / quark packing: q transposed to [I, O]; word c of row i holds channels 8c..8c+7,
 *          channel 8c+j at bit offset [0,16,4,20,8,24,12,28][j] (nibble slot k holds channel
 *          8c + [0,2,4,6,1,3,5,7][k]), value & 0xF.
 *   compressed-tensors: int4 element e of a row at bits 4(e%8) of word e/8, stored q+8;
 *          int8 element e at bits 8(e%4), stored q+128.
 *   MXFP4: v = bits(amax) + (1<<21) with the mantissa cleared (amax 0 -> 2^-126);
 *          e = clamp(floor(log2 v) - 2, -127, 127); codes: E2M1 nearest-even on
 *          {0,.5,1,1.5,2,3,4,6} (0->0, .5->1, 1->2, 1.5->3, 2->4, 3->5, 4->6, 6->7, +8 if
 *          negative, zero always 0), saturating at 6; scale byte = max(e, -126) + 127.
 *   fp8-block: per 128x128 block s = fl32(amax / 448) in F32 (0 -> 2^-23);
 *          q = e4m3(clamp(fl32(x / s), +-448)), x/s not rounded to D. */
#include "unit_util.c"

#include <float.h>
#include <math.h>

#include "quarkfs/layout.h"
#include "quarkfs/plan.h"
#include "quarkfs/quant.h"
#include "quarkfs/rewrite.h"
#include "quarkfs/select.h"

#define FQ QFS_FMT_QUARK
#define FA QFS_FMT_AWQ
#define F8 QFS_FMT_FP8
#define FC QFS_FMT_COMPRESSED_TENSORS

#define OW QFS_OUT_WEIGHT
#define OS QFS_OUT_SCALE
#define OZ QFS_OUT_ZERO_POINT
#define OH QFS_OUT_SHAPE

/* ---- helpers ---- */

static uint32_t rd_u32(const uint8_t *p, size_t i)
{
    uint32_t v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

static uint16_t rd_u16(const uint8_t *p, size_t i)
{
    uint16_t v;
    memcpy(&v, p + 2 * i, 2);
    return v;
}

static float rd_f32(const uint8_t *p, size_t i)
{
    float v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

static int64_t rd_i64(const uint8_t *p, size_t i)
{
    int64_t v;
    memcpy(&v, p + 8 * i, 8);
    return v;
}

/* A BF16 buffer of n values, each exactly representable (checked). */
static uint16_t *bf16_buf(const float *x, size_t n)
{
    uint16_t *b = malloc(2 * (n ? n : 1));
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) b[i] = bf16_exact(x[i]);
    return b;
}

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

/* ---- the contract's spec x format matrix (doc/FORMAT.md §5.5, written out by hand) ---- */

static const char *const ALL_SPECS[] = {
    "int8", "int8-channel", "w8a8-int8", "fp8", "fp8-channel", "fp8-block",
    "uint4", "uint4-g32", "uint4-g64", "uint4-g128",
    "int4", "int4-g32", "int4-g64", "int4-g128", "mxfp4",
};
#define N_SPECS (sizeof ALL_SPECS / sizeof ALL_SPECS[0])
static const char *const ALL_FORMATS[] = {"quark", "awq", "fp8", "compressed-tensors"};

/* [spec][format]: quark: all but fp8-block; awq: uint4*, int4*; fp8: fp8, fp8-block;
 * compressed-tensors: int8-channel, w8a8-int8, fp8, fp8-channel, fp8-block, int4*. */
static const bool VALID[N_SPECS][4] = {
    /*                 quark  awq    fp8    ct    */
    /* int8        */ {true,  false, false, false},
    /* int8-channel*/ {true,  false, false, true},
    /* w8a8-int8   */ {true,  false, false, true},
    /* fp8         */ {true,  false, true,  true},
    /* fp8-channel */ {true,  false, false, true},
    /* fp8-block   */ {false, false, true,  true},
    /* uint4       */ {true,  true,  false, false},
    /* uint4-g32   */ {true,  true,  false, false},
    /* uint4-g64   */ {true,  true,  false, false},
    /* uint4-g128  */ {true,  true,  false, false},
    /* int4        */ {true,  true,  false, true},
    /* int4-g32    */ {true,  true,  false, true},
    /* int4-g64    */ {true,  true,  false, true},
    /* int4-g128   */ {true,  true,  false, true},
    /* mxfp4       */ {true,  false, false, false},
};

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

/* ---- quantize / dequantize runners ---- */

typedef struct qres {
    qfs_layout l;
    uint8_t *w, *s;
} qres;

#define GUARD 8

/* Quantizes src into a layout's two parts (threads 2), checks nothing is written past either
 * part, then quantizes again with weight == NULL (threads 1) and checks the scales part comes
 * out byte for byte the same, into a buffer pre-filled with another pattern. */
static void quant_run(qres *r, const char *spec, qfs_format f, qfs_dtype dt, const void *src,
                      uint64_t o, uint64_t i)
{
    const qfs_spec *s = unit_spec(spec);
    qfs_error why = {{0}};
    int rc = qfs_layout_for(s, f, dt, o, i, &r->l, &why);
    if (rc) fail_msg("%s/%s: layout refused: %s", spec, qfs_format_name(f), why.msg);
    size_t wb = r->l.weight_bytes, sb = r->l.scales_bytes;
    r->w = malloc(wb + GUARD);
    r->s = malloc(sb + GUARD);
    uint8_t *s2 = malloc(sb + GUARD);
    assert_true(r->w && r->s && s2);
    memset(r->w, 0xA5, wb + GUARD);
    memset(r->s, 0xA5, sb + GUARD);
    memset(s2, 0x5A, sb + GUARD);
    qfs_error err = {{0}};
    rc = qfs_quantize_layout(s, f, dt, src, o, i, &r->l, r->w, r->s, 2, "t", &err);
    if (rc) fail_msg("%s/%s: quantize failed (%d): %s", spec, qfs_format_name(f), rc, err.msg);
    for (size_t k = 0; k < GUARD; k++) {
        assert_int_equal(r->w[wb + k], 0xA5);
        assert_int_equal(r->s[sb + k], 0xA5);
    }
    rc = qfs_quantize_layout(s, f, dt, src, o, i, &r->l, NULL, s2, 1, "t", &err);
    if (rc) fail_msg("%s/%s: scales-only failed (%d): %s", spec, qfs_format_name(f), rc, err.msg);
    for (size_t k = 0; k < sb; k++)
        if (s2[k] != r->s[k])
            fail_msg("%s/%s: scales-only byte %zu = 0x%02x, full run 0x%02x", spec,
                     qfs_format_name(f), k, s2[k], r->s[k]);
    for (size_t k = 0; k < GUARD; k++) assert_int_equal(s2[sb + k], 0x5A);
    free(s2);
}

static void qres_free(qres *r)
{
    free(r->w);
    free(r->s);
}

static float *dequant(const qres *r, const char *spec, qfs_format f, uint64_t o, uint64_t i)
{
    float *out = malloc(sizeof(float) * o * i);
    assert_non_null(out);
    for (size_t k = 0; k < o * i; k++) out[k] = NAN;
    assert_int_equal(qfs_dequantize_layout(unit_spec(spec), f, o, i, &r->l, r->w, r->s, out, 2),
                     0);
    for (size_t k = 0; k < o * i; k++)
        if (isnan(out[k])) fail_msg("%s: dequantized element %zu not written", spec, k);
    return out;
}

#define assert_word(buf, idx, expected)                                                      \
    do {                                                                                     \
        uint32_t w_ = rd_u32((buf), (idx)), e_ = (expected);                                 \
        if (w_ != e_) fail_msg("word %zu = 0x%08x, expected 0x%08x", (size_t)(idx), w_, e_); \
    } while (0)

/* ======================================================================================== */
/* Specs and formats                                                                        */
/* ======================================================================================== */

/* Row bands (the engine's chunked serving): for every valid pair that qfs_quantize_rows_ok
 * accepts, producing the weight in uneven bands from the scales part gives the same bytes as
 * qfs_quantize_layout in one call; refused pairs and misaligned bands return -EINVAL. */
static void test_quantize_rows_equal_whole(void **state)
{
    (void)state;
    const uint64_t o = 256, i = 256;   /* 2 x 2 blocks of 128 */
    const qfs_dtype dts[3] = {QFS_DT_BF16, QFS_DT_F16, QFS_DT_F32};
    unsigned banded = 0;
    for (unsigned d = 0; d < 3; d++) {
        size_t es = qfs_dtype_bits(dts[d]) / 8;
        uint8_t *src = malloc(o * i * es);
        assert_non_null(src);
        for (uint64_t k = 0; k < o * i; k++) {   /* rows of different magnitudes */
            float v = (float)((int)((k * 2654435761u) % 2001) - 1000) / 300.0f *
                      (float)(1 + (k / i) % 7);
            qfs_store_as(src, dts[d], k, v);
        }
        for (unsigned sp = 0; sp < N_SPECS; sp++) {
            for (unsigned f = 0; f < 4; f++) {
                if (!VALID[sp][f]) continue;
                const qfs_spec *s = unit_spec(ALL_SPECS[sp]);
                qres r;
                quant_run(&r, ALL_SPECS[sp], (qfs_format)f, dts[d], src, o, i);
                uint64_t align;
                bool ok = qfs_quantize_rows_ok(s, &r.l, &align);
                uint8_t *w = malloc(r.l.weight_bytes);
                assert_non_null(w);
                memset(w, 0x3C, r.l.weight_bytes);
                if (!ok) {
                    assert_int_equal(qfs_quantize_layout_rows(s, dts[d], src, o, i, &r.l, r.s, 0,
                                                              o, w, 2), -EINVAL);
                } else {
                    const uint64_t cuts[] = {0, 128, 130, 256};
                    uint64_t prev = 0;
                    for (unsigned c = 1; c < 4; c++) {
                        if (cuts[c] % align && cuts[c] != o) {
                            assert_int_equal(qfs_quantize_layout_rows(s, dts[d], src, o, i, &r.l,
                                                                      r.s, prev, cuts[c], w, 2),
                                             -EINVAL);
                            continue;
                        }
                        assert_int_equal(qfs_quantize_layout_rows(s, dts[d], src, o, i, &r.l,
                                                                  r.s, prev, cuts[c], w, 1 + c % 2),
                                         0);
                        prev = cuts[c];
                    }
                    if (memcmp(w, r.w, r.l.weight_bytes) != 0)
                        fail_msg("%s/%s/%s: banded weight differs from the whole-tensor one",
                                 ALL_SPECS[sp], ALL_FORMATS[f], qfs_dtype_name(dts[d]));
                    banded++;
                }
                free(w);
                qres_free(&r);
            }
        }
        free(src);
    }
    /* int8, int8-channel (quark; its ct form packs into int32), w8a8-int8 (quark, ct), fp8 (3
     * formats), fp8-channel (2), fp8-block (2): 11 pairs per dtype. */
    assert_int_equal(banded, 3 * 11);
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

/* ======================================================================================== */
/* Layouts                                                                                  */
/* ======================================================================================== */

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

/* ======================================================================================== */
/* 4-bit integer kernels and packing                                                         */
/* ======================================================================================== */

/* An independent packer written from FORMAT.md §4.9's "nibble slot k holds 8c + ORDER[k]"
 * (not from the bit-offset table the code uses). */
static uint32_t awq_word(const int *vals8)
{
    static const int ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    uint32_t w = 0;
    for (int k = 0; k < 8; k++) w |= (uint32_t)(vals8[ORDER[k]] & 0xF) << (4 * k);
    return w;
}

/* uint4-g32, BF16 [16, 64]. Row r, group g has zero point z(r, g) = (r + 3g) % 16 and values
 * x[r][i] = ((r + i) % 16) - z(r, i/32): each group holds every integer from -z to 15 - z, so
 * mn = -z, mx = 15 - z, s = rD(15 / 15) = 1, zp = -rne(-z) = z and q[r][i] = (r + i) % 16. */
#define AWQ_O 16
#define AWQ_I 64
static int awq_zp(int r, int g) { return (r + 3 * g) % 16; }
static int awq_q(int r, int i) { return (r + i) % 16; }

static uint16_t *awq_source(void)
{
    float x[AWQ_O * AWQ_I];
    for (int r = 0; r < AWQ_O; r++)
        for (int i = 0; i < AWQ_I; i++) x[r * AWQ_I + i] = (float)(awq_q(r, i) - awq_zp(r, i / 32));
    return bf16_buf(x, AWQ_O * AWQ_I);
}

static void check_awq_bytes(const qres *r)
{
    const uint8_t *w = r->w, *z = r->s + r->l.out[2].offset, *s = r->s + r->l.out[1].offset;
    /* qweight [64, 2]: word (i, c) at index 2i + c.
     * (0, 0): channels 0..7 hold q = 0..7 -> slots 0..7 = 0,2,4,6,1,3,5,7 -> 0x75316420 */
    assert_word(w, 0, 0x75316420u);
    /* (0, 1): q = 8..15 -> slots 8,10,12,14,9,11,13,15 -> 0xFDB9ECA8 */
    assert_word(w, 1, 0xFDB9ECA8u);
    /* (9, 0): q = 9..15, 0 -> slots 9,11,13,15,10,12,14,0 -> 0x0ECAFDB9 */
    assert_word(w, 18, 0x0ECAFDB9u);
    /* (63, 1): channels 8..15, q = (r + 63) % 16 = 7..14 -> slots 7,9,11,13,8,10,12,14 */
    assert_word(w, 127, 0xECA8DB97u);
    /* bit by bit: channel 8c+j at bit offset [0,16,4,20,8,24,12,28][j] */
    static const unsigned SHIFT[8] = {0, 16, 4, 20, 8, 24, 12, 28};
    for (int i = 0; i < AWQ_I; i++)
        for (int c = 0; c < AWQ_O / 8; c++) {
            uint32_t word = rd_u32(w, (size_t)(2 * i + c));
            int vals[8];
            for (int j = 0; j < 8; j++) {
                vals[j] = awq_q(8 * c + j, i);
                unsigned got = (word >> SHIFT[j]) & 0xF;
                if (got != (unsigned)vals[j])
                    fail_msg("qweight[%d][%d] channel %d: nibble %u, expected %d", i, c,
                             8 * c + j, got, vals[j]);
            }
            if (word != awq_word(vals)) fail_msg("qweight[%d][%d] = 0x%08x, expected 0x%08x",
                                                 i, c, word, awq_word(vals));
        }
    /* qzeros [2, 2]: (g=0, c=0): zp = 0..7 -> 0x75316420; (0, 1): 8..15 -> 0xFDB9ECA8;
     * (1, 0): zp = 3..10 -> slots 3,5,7,9,4,6,8,10 -> 0xA8649753;
     * (1, 1): zp = 11,12,13,14,15,0,1,2 -> slots 11,13,15,1,12,14,0,2 -> 0x20EC1FDB */
    assert_word(z, 0, 0x75316420u);
    assert_word(z, 1, 0xFDB9ECA8u);
    assert_word(z, 2, 0xA8649753u);
    assert_word(z, 3, 0x20EC1FDBu);
    for (int g = 0; g < 2; g++)
        for (int c = 0; c < 2; c++) {
            int vals[8];
            for (int j = 0; j < 8; j++) vals[j] = awq_zp(8 * c + j, g);
            assert_word(z, (size_t)(2 * g + c), awq_word(vals));
        }
    /* scales [2, 16] BF16: all 1.0 */
    for (size_t k = 0; k < 32; k++) assert_int_equal(rd_u16(s, k), 0x3F80);
}

static void test_awq_nibble_order(void **state)
{
    (void)state;
    uint16_t *src = awq_source();
    qres r;
    quant_run(&r, "uint4-g32", FA, QFS_DT_BF16, src, AWQ_O, AWQ_I);
    assert_string_equal(r.l.out[0].suffix, ".qweight");
    check_awq_bytes(&r);
    /* dequantized: (q - zp) * 1 = x exactly, so the error is 0 */
    float *d = dequant(&r, "uint4-g32", FA, AWQ_O, AWQ_I);
    for (int k = 0; k < AWQ_O * AWQ_I; k++) {
        float x = (float)(awq_q(k / AWQ_I, k % AWQ_I) - awq_zp(k / AWQ_I, (k % AWQ_I) / 32));
        if (d[k] != x) fail_msg("element %d: %a, expected %a", k, (double)d[k], (double)x);
    }
    qfs_quant_error_stats st;
    assert_int_equal(qfs_quant_error(src, QFS_DT_BF16, d, AWQ_O * AWQ_I, &st, 2), 0);
    assert_true(st.err2 == 0.0 && st.max_abs == 0.0);
    assert_true(st.ref2 > 0.0);
    free(d);
    /* the quark format writes the very same bytes */
    qres q;
    quant_run(&q, "uint4-g32", FQ, QFS_DT_BF16, src, AWQ_O, AWQ_I);
    assert_string_equal(q.l.out[0].suffix, ".weight");
    assert_int_equal(q.l.weight_bytes, r.l.weight_bytes);
    assert_int_equal(q.l.scales_bytes, r.l.scales_bytes);
    assert_memory_equal(q.w, r.w, r.l.weight_bytes);
    assert_memory_equal(q.s, r.s, r.l.scales_bytes);
    qres_free(&q);
    qres_free(&r);
    free(src);
}

/* uint4-g32 quark, [8, 32]:
 *  row 0: the 7 values {-1, -0.5, 0, 0.5, 1, 1.5, 2}, x[0][i] = V[i % 7];
 *  row 1: all -3; row 2: all +3; rows 3..7: all zero.
 * BF16, row 0: mn = -1, mx = 2: rD(3) / 15 = 0.2 -> bf16 1.6 * 2^-3, mantissa 0.6 * 128 = 76.8
 *   -> 77: s = 1.6015625 / 8 = 0.2001953125 (0x3E4D). mn / s = -4.99512 -> bf16 (ulp 2^-5 at
 *   4): -5.0 -> zp = 5. inv = fl32(1/s) = 4.9951220; q = rne(x * inv) + 5 (no ties; shown:
 *   x * inv + 5): -1 -> 0.0049 -> 0; -0.5 -> 2.5024 -> 3; 0 -> 5; 0.5 -> 7.4976 -> 7;
 *   1 -> 9.9951 -> 10; 1.5 -> 12.4927 -> 12; 2 -> 14.9902 -> 15.
 * row 1: mn = -3, mx = 0: s = rD(3/15) = 0x3E4D again; -3 / s = -14.985 -> bf16 (ulp 2^-4 at
 *   8): -15.0 -> zp = 15; q = rne(-14.985 + 15) = 0.
 * row 2: mn = 0, mx = 3: same s, zp = -rne(0) = 0, q = rne(14.985) = 15.
 * rows 3..7 (all zero): s = max(0, 2^-23) = 2^-23 (bf16 0x3400), zp = 0, q = 0. */
static const float U4V[7] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f, 2.0f};
static const int U4Q_BF16[7] = {0, 3, 5, 7, 10, 12, 15};

static void *u4_source(qfs_dtype dt)
{
    float x[8 * 32] = {0};
    for (int i = 0; i < 32; i++) {
        x[i] = U4V[i % 7];
        x[32 + i] = -3.0f;
        x[64 + i] = 3.0f;
    }
    if (dt == QFS_DT_BF16) return bf16_buf(x, 8 * 32);
    uint16_t *h = malloc(2 * 8 * 32);
    assert_non_null(h);
    for (int i = 0; i < 8 * 32; i++) h[i] = qfs_f32_to_f16(x[i]);   /* all exact in f16 */
    return h;
}

/* uint4-g32 quark, F32 [8, 32], row 0 = {-0.4375, 0.5, 0.15625, -0.21875, 0.09375, 0...}, the
 * other rows zero. mn = -0.4375, mx = 0.5: s = 0.9375 / 15 = 1/16 exactly, mn / s = -7 -> zp 7.
 * x * 16 = -7, 8, 2.5, -3.5, 1.5, 0: the zero point is added after rounding (Quark's export),
 * so the ties give rne(2.5) + 7 = 9, rne(-3.5) + 7 = 3, rne(1.5) + 7 = 9 -- not rne(9.5) = 10,
 * rne(3.5) = 4, rne(8.5) = 8; -7 -> 0, 8 -> 15, 0 -> 7. */
static void test_uint4_odd_zero_point_ties(void **state)
{
    (void)state;
    float x[8 * 32] = {0};
    static const float v[5] = {-0.4375f, 0.5f, 0.15625f, -0.21875f, 0.09375f};
    static const uint32_t q[5] = {0, 15, 9, 3, 9};
    memcpy(x, v, sizeof v);
    qres r;
    quant_run(&r, "uint4-g32", FQ, QFS_DT_F32, x, 8, 32);
    const uint8_t *s = r.s + r.l.out[1].offset, *z = r.s + r.l.out[2].offset;
    assert_f32_bits(rd_f32(s, 0), 0.0625f);
    assert_word(z, 0, 7u);                           /* channel 0 at bits 0..3 */
    for (size_t i = 0; i < 32; i++) assert_word(r.w, i, i < 5 ? q[i] : 7u);
    qres_free(&r);
}

static void test_uint4_scale_and_zero_point(void **state)
{
    (void)state;
    void *src = u4_source(QFS_DT_BF16);
    qres r;
    quant_run(&r, "uint4-g32", FQ, QFS_DT_BF16, src, 8, 32);
    const uint8_t *s = r.s + r.l.out[1].offset, *z = r.s + r.l.out[2].offset;
    /* scales [1, 8] */
    static const uint16_t es[8] = {0x3E4D, 0x3E4D, 0x3E4D, 0x3400, 0x3400, 0x3400, 0x3400, 0x3400};
    for (size_t k = 0; k < 8; k++)
        if (rd_u16(s, k) != es[k]) fail_msg("scale[%zu] = 0x%04x, expected 0x%04x", k,
                                            rd_u16(s, k), es[k]);
    /* zero points [1, 1]: channel 0 zp 5 at bit 0, channel 1 zp 15 at bit 16, others 0 */
    assert_word(z, 0, 0x000F0005u);
    /* weight [32, 1]: channel 0 (bits 0..3) q0[i], channel 1 (bits 16..19) 0, channel 2
     * (bits 4..7) 15 */
    for (size_t i = 0; i < 32; i++) assert_word(r.w, i, (uint32_t)U4Q_BF16[i % 7] | 0xF0u);
    assert_word(r.w, 0, 0x000000F0u);
    assert_word(r.w, 1, 0x000000F3u);
    assert_word(r.w, 6, 0x000000FFu);

    /* dequantized (q - zp) * s, s = 0.2001953125 = 205/1024:
     * row 0: q - 5 = -5, -2, 0, 2, 5, 7, 10 -> -1.0009765625, -0.400390625, 0, 0.400390625,
     * 1.0009765625, 1.4013671875, 2.001953125; row 1: -15 s = -3.0029296875; row 2: +15 s */
    static const float e0[7] = {-1.0009765625f, -0.400390625f, 0.0f, 0.400390625f,
                                1.0009765625f, 1.4013671875f, 2.001953125f};
    float *d = dequant(&r, "uint4-g32", FQ, 8, 32);
    for (int i = 0; i < 32; i++) {
        assert_f32_bits(d[i], e0[i % 7]);
        assert_f32_bits(d[32 + i], -3.0029296875f);
        assert_f32_bits(d[64 + i], 3.0029296875f);
        for (int rr = 3; rr < 8; rr++) assert_f32_bits(d[rr * 32 + i], 0.0f);
    }
    /* error sums. Row 0 errors: -1: -2^-10, -0.5: +51/512, 0: 0, 0.5: -51/512, 1: +2^-10,
     * 1.5: -101/1024, 2: +2^-9; values 0..3 of V occur 5 times (i % 7 = 0..3 for 32 i), 4..6
     * four times. Rows 1, 2: 64 errors of 3/1024. All dyadic, so the sums are exact. */
    double a = 1.0 / 1024, b = 51.0 / 512, c = 101.0 / 1024, e = 1.0 / 512, f = 3.0 / 1024;
    double err2 = 5 * a * a + 5 * b * b + 5 * b * b + 4 * a * a + 4 * c * c + 4 * e * e +
                  64 * f * f;
    double ref2 = 5 * 1.0 + 5 * 0.25 + 5 * 0.25 + 4 * 1.0 + 4 * 2.25 + 4 * 4.0 + 64 * 9.0;
    qfs_quant_error_stats st;
    assert_int_equal(qfs_quant_error(src, QFS_DT_BF16, d, 8 * 32, &st, 1), 0);
    assert_true(st.err2 == err2);
    assert_true(st.ref2 == ref2);
    assert_true(st.max_abs == b);
    free(d);
    qres_free(&r);
    free(src);

    /* F16: rD(3/15): 0.6 * 1024 = 614.4 -> 614: s = 1.599609375 / 8 = 0.199951171875 (0x3266);
     * -1 / s = -5.0012 -> f16 (ulp 2^-8 at 4) -5.0 -> zp 5; inv = 5.0012212:
     * -1 -> -0.0012 -> 0; -0.5 -> 2.4994 -> 2; 0.5 -> 7.5006 -> 8; 1 -> 10.0012 -> 10;
     * 1.5 -> 12.5018 -> 13; 2 -> 15.0024 -> 15 (not the BF16 codes: the scale moved down) */
    src = u4_source(QFS_DT_F16);
    quant_run(&r, "uint4-g32", FQ, QFS_DT_F16, src, 8, 32);
    static const int q16[7] = {0, 2, 5, 8, 10, 13, 15};
    assert_int_equal(rd_u16(r.s + r.l.out[1].offset, 0), 0x3266);
    assert_int_equal(rd_u16(r.s + r.l.out[1].offset, 3), 0x0002);  /* 2^-23 = 2 * 2^-24 in f16 */
    assert_word(r.s + r.l.out[2].offset, 0, 0x000F0005u);
    for (size_t i = 0; i < 32; i++) assert_word(r.w, i, (uint32_t)q16[i % 7] | 0xF0u);
    qres_free(&r);
    free(src);
}

static void test_uint4_all_zero_group(void **state)
{
    (void)state;
    /* uint4-g64 awq [8, 128] F32, all zero except group 1 of row 3 (a single 1.0):
     * all-zero groups: s = 2^-23, zp = 0, q = 0. Group (row 3, g 1): mn = 0, mx = 1:
     * s = fl32(1/15) = 0x3D888889 = 0x1.111112p-4, zp = 0; fl32(1/s) = 14.999999 (1/s =
     * 14.99999925, nearer to 15 - 2^-20 than to 15), q(1) = rne(14.999999) = 15, q(0) = 0;
     * dequantized 15 * s = 1.0000000522 -> fl32 1.0 (less than half an ulp, 2^-24, above 1) */
    float x[8 * 128] = {0};
    x[3 * 128 + 64 + 5] = 1.0f;
    x[6 * 128 + 7] = -0.0f;
    x[6 * 128 + 8] = -0.0f;
    qres r;
    quant_run(&r, "uint4-g64", FA, QFS_DT_F32, x, 8, 128);
    const uint8_t *s = r.s + r.l.out[1].offset, *z = r.s + r.l.out[2].offset;
    for (size_t k = 0; k < 16; k++) {
        float want = k == 8 + 3 ? 0x1.111112p-4f : 0x1p-23f;   /* [g, o] = [1, 3] is index 11 */
        assert_f32_bits(rd_f32(s, k), want);
    }
    assert_word(z, 0, 0);
    assert_word(z, 1, 0);
    /* qweight [128, 1]: only word 69 (i = 69) has channel 3 (bit offset 20) = 15 */
    for (size_t i = 0; i < 128; i++) assert_word(r.w, i, i == 69 ? 0x00F00000u : 0u);
    float *d = dequant(&r, "uint4-g64", FA, 8, 128);
    for (size_t k = 0; k < 8 * 128; k++)
        if (k != 3 * 128 + 69) assert_f32_bits(d[k], 0.0f);
    assert_f32_bits(d[3 * 128 + 69], 1.0f);
    free(d);
    qres_free(&r);
}

static void test_uint4_double_rounding(void **state)
{
    (void)state;
    /* uint4-g32 quark, BF16 [8, 32], rows 2..7 zero (s = 2^-23, zp 0, q 0):
     * row 0: -0.0625, 0.5625, 0.25, then 0: rD(0.625) / 15 = 0.0416667 = 1.3333 * 2^-5 ->
     *   bf16 mantissa 42.67 -> 43: s = 1.3359375 * 2^-5 = 0.041748046875 (0x3D2B).
     *   mn / s = -1.4970760 -> rD (bf16 ulp 2^-7 at 1): 191.625 ulps -> 192 = -1.5 -> rne -2
     *   -> zp = 2. (Without the rounding to D: rne(-1.497) = -1, zp = 1.)
     *   inv = fl32(4096/171) = 23.953217: q = rne(x * inv) + 2 (shown: x * inv + 2):
     *   -0.0625 -> 0.5029 -> 1; 0.5625 -> 15.4737 -> 15; 0.25 -> 7.9883 -> 8; 0 -> 2.
     * row 1: -0.015625, 4.25, 2, then 0: mx - mn = 4.265625 -> rD (bf16 ulp 2^-5 at 4):
     *   136.5 ulps, a tie -> 136 = 4.25; 4.25 / 15 = 0.28333 = 1.1333 * 2^-2 -> mantissa 17.07
     *   -> 17: s = 1.1328125 / 4 = 0.283203125 (0x3E91). (Without rD(mx - mn): 4.265625 / 15
     *   -> 18 -> 0.28515625.) mn / s = -0.0552 -> zp 0; inv = 3.5310345: 4.25 -> 15.0069 ->
     *   15; 2 -> 7.0621 -> 7; -0.015625 -> -0.0552 -> 0. */
    float x[8 * 32] = {0};
    x[0] = -0.0625f;
    x[1] = 0.5625f;
    x[2] = 0.25f;
    x[32] = -0.015625f;
    x[33] = 4.25f;
    x[34] = 2.0f;
    uint16_t *src = bf16_buf(x, 8 * 32);
    qres r;
    quant_run(&r, "uint4-g32", FQ, QFS_DT_BF16, src, 8, 32);
    const uint8_t *s = r.s + r.l.out[1].offset, *z = r.s + r.l.out[2].offset;
    assert_int_equal(rd_u16(s, 0), 0x3D2B);
    assert_int_equal(rd_u16(s, 1), 0x3E91);
    for (size_t k = 2; k < 8; k++) assert_int_equal(rd_u16(s, k), 0x3400);
    assert_word(z, 0, 0x00000002u);           /* channel 0: 2; channel 1 (bit 16): 0 */
    assert_word(r.w, 0, 0x00000001u);         /* q 1 (channel 0), 0 (channel 1) */
    assert_word(r.w, 1, 0x000F000Fu);         /* 15, 15 */
    assert_word(r.w, 2, 0x00070008u);         /* 8, 7 */
    for (size_t i = 3; i < 32; i++) assert_word(r.w, i, 0x00000002u);
    float *d = dequant(&r, "uint4-g32", FQ, 8, 32);
    assert_f32_bits(d[0], -0.041748046875f);  /* (1 - 2) s */
    assert_f32_bits(d[1], 0.542724609375f);   /* 13 s */
    assert_f32_bits(d[2], 0.25048828125f);    /* 6 s */
    assert_f32_bits(d[3], 0.0f);
    assert_f32_bits(d[32], 0.0f);
    assert_f32_bits(d[33], 4.248046875f);     /* 15 s */
    assert_f32_bits(d[34], 1.982421875f);     /* 7 s */
    free(d);
    qres_free(&r);
    free(src);
}

/* int4-g32 [8, 32] BF16:
 *  row 0: 7.5, -7.5, 6.5, 5.5, -0.5, 0.5, -6.5, 1.5, then 0: amax 7.5 -> s = 1 (0x3F80),
 *    q = clamp(rne(x)): 7.5 -> 8 -> 7; -7.5 -> -8; 6.5 -> 6; 5.5 -> 6; -0.5 -> 0; 0.5 -> 0;
 *    -6.5 -> -6; 1.5 -> 2.
 *  row 1: 1, -1, then 0: amax 1 -> 1/7.5 = 0.1333 -> bf16: 1.0667 * 2^-3, 0.0667 * 128 = 8.53
 *    -> 9: s = 1.0703125 / 8 = 0.1337890625 (0x3E09); inv = 7.4745: +1 -> 7, -1 -> -7 (not -8).
 *  rows 2..7: zero, s = 2^-23 (0x3400), q = 0. */
static void *int4_source(uint64_t rows)
{
    float x[8 * 32] = {0};
    static const float r0[8] = {7.5f, -7.5f, 6.5f, 5.5f, -0.5f, 0.5f, -6.5f, 1.5f};
    memcpy(x, r0, sizeof r0);
    x[32] = 1.0f;
    x[33] = -1.0f;
    return bf16_buf(x, rows * 32);
}
static const int INT4_Q0[8] = {7, -8, 6, 6, 0, 0, -6, 2};

static void check_int4_dequant(const float *d)
{
    for (int i = 0; i < 8; i++) assert_f32_bits(d[i], (float)INT4_Q0[i]);
    assert_f32_bits(d[32], 0.9365234375f);    /* 7 * 0.1337890625 */
    assert_f32_bits(d[33], -0.9365234375f);
    for (int i = 34; i < 64; i++) assert_f32_bits(d[i], 0.0f);
}

static void test_int4_amax_clamp(void **state)
{
    (void)state;
    void *src = int4_source(8);
    qres r;
    quant_run(&r, "int4-g32", FQ, QFS_DT_BF16, src, 8, 32);
    const uint8_t *s = r.s + r.l.out[1].offset, *z = r.s + r.l.out[2].offset;
    assert_int_equal(rd_u16(s, 0), 0x3F80);
    assert_int_equal(rd_u16(s, 1), 0x3E09);
    for (size_t k = 2; k < 8; k++) assert_int_equal(rd_u16(s, k), 0x3400);
    assert_word(z, 0, 0);   /* symmetric: all-zero nibbles */
    /* weight words: channel 0 at bits 0..3, channel 1 at bits 16..19, two's complement */
    assert_word(r.w, 0, 0x00070007u);   /* 7, 7 */
    assert_word(r.w, 1, 0x00090008u);   /* -8 = 0x8, -7 = 0x9 */
    assert_word(r.w, 2, 0x00000006u);
    assert_word(r.w, 3, 0x00000006u);
    assert_word(r.w, 4, 0);             /* -0.5 -> 0, not 0xF */
    assert_word(r.w, 5, 0);
    assert_word(r.w, 6, 0x0000000Au);   /* -6 */
    assert_word(r.w, 7, 0x00000002u);
    for (size_t i = 8; i < 32; i++) assert_word(r.w, i, 0);
    float *d = dequant(&r, "int4-g32", FQ, 8, 32);
    check_int4_dequant(d);
    free(d);
    /* awq: same bytes */
    qres a;
    quant_run(&a, "int4-g32", FA, QFS_DT_BF16, src, 8, 32);
    assert_memory_equal(a.w, r.w, r.l.weight_bytes);
    assert_memory_equal(a.s, r.s, r.l.scales_bytes);
    d = dequant(&a, "int4-g32", FA, 8, 32);
    check_int4_dequant(d);
    free(d);
    qres_free(&a);
    qres_free(&r);
    free(src);
}

static void test_ct_int4_packing(void **state)
{
    (void)state;
    /* the int4 rows 0 and 1 above, [2, 32] in compressed-tensors: weight_packed [2, 4], element
     * e at bits 4(e % 8) of word e / 8, stored q + 8.
     * row 0: 15, 0, 14, 14, 8, 8, 2, 10 -> nibbles from the top A,2,8,8,E,E,0,F = 0xA288EE0F,
     *   then three words of 8s; row 1: 15, 1, then 8s -> 0x8888881F. */
    void *src = int4_source(2);
    qres r;
    quant_run(&r, "int4-g32", FC, QFS_DT_BF16, src, 2, 32);
    assert_word(r.w, 0, 0xA288EE0Fu);
    for (size_t k = 1; k < 4; k++) assert_word(r.w, k, 0x88888888u);
    assert_word(r.w, 4, 0x8888881Fu);
    for (size_t k = 5; k < 8; k++) assert_word(r.w, k, 0x88888888u);
    const uint8_t *s = r.s + r.l.out[1].offset, *sh = r.s + r.l.out[2].offset;
    assert_int_equal(rd_u16(s, 0), 0x3F80);   /* [O, I/G] = [2, 1] */
    assert_int_equal(rd_u16(s, 1), 0x3E09);
    assert_int_equal(rd_i64(sh, 0), 2);       /* weight_shape = [O, I] */
    assert_int_equal(rd_i64(sh, 1), 32);
    float *d = dequant(&r, "int4-g32", FC, 2, 32);
    check_int4_dequant(d);
    free(d);
    qres_free(&r);
    free(src);

    /* two groups in a row (int4-g32, [1, 64] F32): group 0 amax 15 -> s = 2 (inv 0.5):
     * q(15) = rne(7.5) = 8 -> 7, q(-15) = -8, q(3) = rne(1.5) = 2.
     * group 1 amax 0.75 -> s = fl32(0.1) = 0x1.99999ap-4 (0x3DCCCCCD, 1.5e-9 above 0.1);
     * fl32(1/s): 1/s = 9.99999985, within half an ulp (2^-21) of 10 -> 10.0;
     * q(0.75) = rne(7.5) = 8 -> 7, q(-0.75) = rne(-7.5) = -8 */
    float x[64] = {0};
    x[0] = 15.0f;
    x[1] = -15.0f;
    x[2] = 3.0f;       /* 1.5 -> 2 */
    x[32] = 0.75f;
    x[33] = -0.75f;
    quant_run(&r, "int4-g32", FC, QFS_DT_F32, x, 1, 64);
    assert_f32_bits(rd_f32(r.s, 0), 2.0f);
    assert_f32_bits(rd_f32(r.s, 1), 0x1.99999ap-4f);
    /* word 0: 7+8 = F, -8+8 = 0, 2+8 = A, rest 8 -> 0x88888A0F;
     * word 4 (elements 32..39): F, 0, rest 8 -> 0x8888880F */
    assert_word(r.w, 0, 0x88888A0Fu);
    assert_word(r.w, 4, 0x8888880Fu);
    assert_int_equal(rd_i64(r.s + r.l.out[2].offset, 0), 1);
    assert_int_equal(rd_i64(r.s + r.l.out[2].offset, 1), 64);
    qres_free(&r);
}

/* ======================================================================================== */
/* compressed-tensors 8-bit and fp8                                                          */
/* ======================================================================================== */

/* [2, 8] BF16: row 0 = 127.5, -127.5, 1, -1, 2.5, 0, -0.5, 3 (amax 127.5 -> s = 1:
 * q = 127 (127.5 -> 128 clamped), -128, 1, -1, 2, 0, 0, 3); row 1 all zero (s = 2^-23). */
static void *int8_source(void)
{
    float x[16] = {127.5f, -127.5f, 1.0f, -1.0f, 2.5f, 0.0f, -0.5f, 3.0f};
    return bf16_buf(x, 16);
}
static const int8_t INT8_Q0[8] = {127, -128, 1, -1, 2, 0, 0, 3};

static void test_ct_int8_packing(void **state)
{
    (void)state;
    void *src = int8_source();
    qres r;
    quant_run(&r, "int8-channel", FC, QFS_DT_BF16, src, 2, 8);
    /* weight_packed [2, 2]: element e at bits 8(e % 4), stored q + 128:
     * row 0: 255, 0, 129, 127 -> 0x7F8100FF; 130, 128, 128, 131 -> 0x83808082;
     * row 1: 128 x 4 -> 0x80808080 */
    assert_word(r.w, 0, 0x7F8100FFu);
    assert_word(r.w, 1, 0x83808082u);
    assert_word(r.w, 2, 0x80808080u);
    assert_word(r.w, 3, 0x80808080u);
    const uint8_t *s = r.s + r.l.out[1].offset, *sh = r.s + r.l.out[2].offset;
    assert_int_equal(rd_u16(s, 0), 0x3F80);
    assert_int_equal(rd_u16(s, 1), 0x3400);
    assert_int_equal(rd_i64(sh, 0), 2);
    assert_int_equal(rd_i64(sh, 1), 8);
    float *d = dequant(&r, "int8-channel", FC, 2, 8);
    for (int i = 0; i < 8; i++) assert_f32_bits(d[i], (float)INT8_Q0[i]);
    for (int i = 8; i < 16; i++) assert_f32_bits(d[i], 0.0f);
    free(d);
    qres_free(&r);

    /* w8a8-int8 (int-quantized): plain I8 [2, 8] + scale [2, 1] */
    quant_run(&r, "w8a8-int8", FC, QFS_DT_BF16, src, 2, 8);
    assert_memory_equal(r.w, INT8_Q0, 8);
    for (int i = 8; i < 16; i++) assert_int_equal(r.w[i], 0);
    assert_int_equal(rd_u16(r.s, 0), 0x3F80);
    assert_int_equal(rd_u16(r.s, 1), 0x3400);
    d = dequant(&r, "w8a8-int8", FC, 2, 8);
    for (int i = 0; i < 8; i++) assert_f32_bits(d[i], (float)INT8_Q0[i]);
    free(d);
    qres_free(&r);
    free(src);
}

static void test_ct_fp8_tensor_and_channel(void **state)
{
    (void)state;
    /* BF16 [[896, -448, 2], [0, -0, 0]]:
     * per tensor: amax 896 -> s = rD(896/448) = 2 (0x4000), stored [1];
     *   q: 448 -> 0x7E, -224 = -1.75 * 2^7 -> 0xF6, 1 -> 0x38, zeros 0x00, -0 -> 0x80.
     * per channel: row 0 s = 2, row 1 s = rD(2^-23) = 0x3400; same codes. */
    float x[6] = {896.0f, -448.0f, 2.0f, 0.0f, -0.0f, 0.0f};
    uint16_t *src = bf16_buf(x, 6);
    static const uint8_t q[6] = {0x7E, 0xF6, 0x38, 0x00, 0x80, 0x00};
    qres r;
    quant_run(&r, "fp8", FC, QFS_DT_BF16, src, 2, 3);
    assert_memory_equal(r.w, q, 6);
    assert_int_equal(r.l.scales_bytes, 2);
    assert_int_equal(rd_u16(r.s, 0), 0x4000);
    float *d = dequant(&r, "fp8", FC, 2, 3);
    assert_f32_bits(d[0], 896.0f);
    assert_f32_bits(d[1], -448.0f);
    assert_f32_bits(d[2], 2.0f);
    free(d);
    qres_free(&r);
    /* the fp8 format (custom_mode fp8) per tensor: the same bytes, scale of shape [] */
    quant_run(&r, "fp8", F8, QFS_DT_BF16, src, 2, 3);
    assert_memory_equal(r.w, q, 6);
    assert_int_equal(rd_u16(r.s, 0), 0x4000);
    assert_int_equal(r.l.out[1].ndim, 0);
    qres_free(&r);
    quant_run(&r, "fp8-channel", FC, QFS_DT_BF16, src, 2, 3);
    assert_memory_equal(r.w, q, 6);
    assert_int_equal(rd_u16(r.s, 0), 0x4000);
    assert_int_equal(rd_u16(r.s, 1), 0x3400);
    d = dequant(&r, "fp8-channel", FC, 2, 3);
    assert_f32_bits(d[1], -448.0f);
    assert_f32_bits(d[4], -0.0f);
    free(d);
    qres_free(&r);
    free(src);
}

/* ======================================================================================== */
/* MXFP4                                                                                    */
/* ======================================================================================== */

/* quark mxfp4, F32 [2, 64] (two blocks of 32 per row).
 * Block (0, 0): amax 6.9 = 1.725 * 2^2, mantissa fraction 0.725 < 0.75 -> v = 4, e = 0, byte
 *   127, y = x. Ties to the even code: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2,
 *   3.5 -> 4, 5 -> 4; saturation 6.9 -> 6, -6.5 -> -6; zero always code 0 (-0.25, -0).
 * Block (0, 1): amax 14 = 1.75 * 2^3 -> v = 16, e = 2, byte 129; y = x / 4:
 *   14 -> 3.5 -> 4 (code 6), -14 -> code 14, 1 -> 0.25 -> 0, 3 -> 0.75 -> 1 (code 2).
 * Block (1, 0): amax 13.92 = 1.74 * 2^3 -> v = 8, e = 1, byte 128; y = x / 2:
 *   13.92 -> 6.96 -> 6 (code 7), -13.92 -> code 15, 1 -> 0.5 (code 1), 3 -> 1.5 (code 3).
 * Block (1, 1): all zero (some -0) -> v = 2^-126, e = -127 (clamped), byte 1, codes 0. */
static const float MXA[32] = {
    0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.9f,
    -0.25f, -0.0f, -5.0f, -1.75f, 0.5f, 3.0f, 0.3f, 0.24f,
    2.6f, 5.1f, 4.9f, -6.5f, 1.0f, 1.5f, 2.0f, 4.0f,
    6.0f, -0.5f, 0.7499f, 0.7501f, 0.0f, -3.5f, -2.5f, 1.2501f,
};
/* codes: 0,2,2,4,4,6,6,7, 0,0,14,12,1,5,1,0, 5,7,6,15,2,3,4,6, 7,9,1,2,0,14,12,3
 * bytes = code[2k] | code[2k+1] << 4 */
static const uint8_t MXA_BYTES[16] = {0x20, 0x42, 0x64, 0x76, 0x00, 0xCE, 0x51, 0x01,
                                      0x75, 0xF6, 0x32, 0x64, 0x97, 0x21, 0xE0, 0x3C};

static void test_mxfp4_rounding_and_scales(void **state)
{
    (void)state;
    float x[2 * 64] = {0};
    memcpy(x, MXA, sizeof MXA);
    x[32] = 14.0f;
    x[33] = -14.0f;
    x[34] = 1.0f;
    x[35] = 3.0f;
    x[64] = 13.92f;
    x[65] = -13.92f;
    x[66] = 1.0f;
    x[67] = 3.0f;
    x[64 + 40] = -0.0f;
    x[64 + 63] = -0.0f;
    qres r;
    quant_run(&r, "mxfp4", FQ, QFS_DT_F32, x, 2, 64);
    /* weight [2, 32] bytes */
    for (size_t k = 0; k < 16; k++)
        if (r.w[k] != MXA_BYTES[k])
            fail_msg("byte %zu = 0x%02x, expected 0x%02x", k, r.w[k], MXA_BYTES[k]);
    assert_int_equal(r.w[16], 0xE6);   /* 6 | 14 << 4 */
    assert_int_equal(r.w[17], 0x20);   /* 0 | 2 << 4 */
    for (size_t k = 18; k < 32; k++) assert_int_equal(r.w[k], 0);
    assert_int_equal(r.w[32], 0xF7);   /* 7 | 15 << 4 */
    assert_int_equal(r.w[33], 0x31);   /* 1 | 3 << 4 */
    for (size_t k = 34; k < 64; k++) assert_int_equal(r.w[k], 0);
    /* scales [2, 2] */
    static const uint8_t sb[4] = {127, 129, 128, 1};
    assert_memory_equal(r.s + r.l.out[1].offset, sb, 4);

    /* dequantized: fp4(code) * 2^(byte - 127) */
    float *d = dequant(&r, "mxfp4", FQ, 2, 64);
    static const float ea[32] = {0, 1, 1, 2, 2, 4, 4, 6, 0, 0, -4, -2, 0.5f, 3, 0.5f, 0,
                                 3, 6, 4, -6, 1, 1.5f, 2, 4, 6, -0.5f, 0.5f, 1, 0, -4, -2, 1.5f};
    for (int i = 0; i < 32; i++) assert_f32_bits(d[i], ea[i]);   /* -0.25, -0 -> +0 */
    assert_f32_bits(d[32], 16.0f);
    assert_f32_bits(d[33], -16.0f);
    assert_f32_bits(d[34], 0.0f);
    assert_f32_bits(d[35], 4.0f);
    assert_f32_bits(d[64], 12.0f);
    assert_f32_bits(d[65], -12.0f);
    assert_f32_bits(d[66], 1.0f);
    assert_f32_bits(d[67], 3.0f);
    for (int i = 96; i < 128; i++) assert_f32_bits(d[i], 0.0f);
    free(d);
    qres_free(&r);
}

static void test_mxfp4_even_exponent_bf16(void **state)
{
    (void)state;
    /* BF16 [4, 32], one block per row, n varying:
     * row 0: amax 1.75 (0x3FE0): rounds up, v = 2, e = -1, byte 126; 1.75 / 0.5 = 3.5 -> 4
     *   (code 6); 0.125 / 0.5 = 0.25 -> 0.
     * row 1: amax 1.734375 (0x3FDE, fraction 0.734 < 0.75): v = 1, e = -2, byte 125;
     *   1.734375 / 0.25 = 6.9375 -> 6 (code 7); -0.1875 / 0.25 = -0.75 -> -1 (code 10).
     * row 2: amax 1.75 * 2^-100: v = 2^-99, e = -101, byte 26; element y = 3.5 -> code 6.
     * row 3: amax 2^-130 (bf16 subnormal 8 * 2^-133 = 0x0008; F32 bits 0x00080000): bits +
     *   2^21 = 0x00280000, mantissa cleared -> 0: v = 0, log2 -> -inf, e = -127, byte 1;
     *   y = 2^-130 / 2^-127 = 0.125 -> 0. */
    uint16_t b[4 * 32] = {0};
    b[0] = 0x3FE0;                       /* 1.75 */
    b[1] = 0x3E00;                       /* 0.125 */
    b[32] = 0x3FDE;                      /* 1.734375 */
    b[33] = 0xBE40;                      /* -0.1875 */
    b[64] = bf16_exact(ldexpf(1.75f, -100));
    b[96] = 0x0008;                      /* 2^-130 */
    assert_f32_bits(qfs_bf16_to_f32(0x0008), 0x1p-130f);
    qres r;
    quant_run(&r, "mxfp4", FQ, QFS_DT_BF16, b, 4, 32);
    static const uint8_t sb[4] = {126, 125, 26, 1};
    assert_memory_equal(r.s + r.l.out[1].offset, sb, 4);
    assert_int_equal(r.w[0], 0x06);       /* codes 6, 0 */
    assert_int_equal(r.w[16], 0xA7);      /* codes 7, 10 */
    assert_int_equal(r.w[32], 0x06);
    assert_int_equal(r.w[48], 0x00);
    float *d = dequant(&r, "mxfp4", FQ, 4, 32);
    assert_f32_bits(d[0], 2.0f);
    assert_f32_bits(d[32], 1.5f);         /* 6 * 2^-2 */
    assert_f32_bits(d[33], -0.25f);
    assert_f32_bits(d[64], 0x1p-99f);     /* 4 * 2^-101 */
    free(d);
    qres_free(&r);
}

static void test_mxfp4_exponent_at_the_top(void **state)
{
    (void)state;
    /* BF16 [2, 32]:
     * row 0: amax 1.734375 * 2^127 (0x7F5E): fraction 0.734 -> v = 2^127, e = 125, byte 252;
     *   y = 1.734375 * 4 = 6.9375 -> 6 (code 7); 0x7E5E = 1.734375 * 2^125 -> y = 1.734375 ->
     *   1.5 (code 3): byte 0x37.
     * row 1: amax 1.75 * 2^127 (0x7F60): bits 0x7F600000 + 0x00200000 = 0x7F800000 with the
     *   mantissa cleared: v = +inf, floor(log2 v) - 2 = +inf, clamped to e = 127: byte 254;
     *   y = 1.75 -> 2 (code 4); 0x7EE0 = 1.75 * 2^126 -> y = 0.875 -> 1 (code 2): byte 0x24. */
    uint16_t b[2 * 32] = {0};
    b[0] = 0x7F5E;
    b[1] = 0x7E5E;
    b[32] = 0x7F60;
    b[33] = 0x7EE0;
    qres r;
    quant_run(&r, "mxfp4", FQ, QFS_DT_BF16, b, 2, 32);
    const uint8_t *s = r.s + r.l.out[1].offset;
    assert_int_equal(s[0], 252);
    assert_int_equal(r.w[0], 0x37);
    /* v rounds up to +inf: e = 127, byte 254, codes 4 and 2 */
    assert_int_equal(s[1], 254);
    assert_int_equal(r.w[16], 0x24);
    qres_free(&r);
    /* the same in F32 with FLT_MAX = (2 - 2^-23) * 2^127 (rounds up to v = inf too): e = 127,
     * y = FLT_MAX / 2^127 = 1.99999988 -> 2 (code 4) */
    float x[32] = {FLT_MAX};
    quant_run(&r, "mxfp4", FQ, QFS_DT_F32, x, 1, 32);
    assert_int_equal(r.s[r.l.out[1].offset], 254);
    assert_int_equal(r.w[0], 0x04);
    qres_free(&r);
}

/* ======================================================================================== */
/* fp8-block                                                                                */
/* ======================================================================================== */

/* BF16 [256, 256] = 2 x 2 blocks of 128 x 128:
 * block (0,0): amax 476 -> s = fl32(476/448) = 1.0625 (exact);
 *   [0][0] 476 -> 448 = 0x7E; [0][1] -476 -> 0xFE;
 *   [0][2] 1.1328125 (0x3F91): x/s = 1.066176 -> e4m3 (ulp 1/8 at 1; midpoint 1.0625) -> 1.125
 *     = 0x39. Rounding x/s to BF16 first would give 1.0625, a tie -> 1.0 = 0x38.
 *   [0][3] 1.2578125 (0x3FA1): x/s = 1.183824 -> 1.125 = 0x39 (below the midpoint 1.1875);
 *     through BF16: 1.1875, a tie -> 1.25 = 0x3A.
 *   [5][7] -1.1328125 -> 0xB9.
 * block (0,1): amax 1 -> s = fl32(1/448) = fl32(8/7 * 2^-9): 8/7 = 1.001001001...b, 23 bits
 *   0x124924 + round up -> 0x3B124925. [0][128] 1 -> 447.99997 -> 448 = 0x7E;
 *   [1][129] -1 -> 0xFE; [2][130] 0.5 -> 223.99998 -> 224 = 1.75 * 2^7 = 0x76; [3][131] -0 ->
 *   0x80.
 * block (1,0): amax 896 -> s = 2: [128][0] 896 -> 448 = 0x7E; [129][1] 3 -> 1.5 = 0x3C;
 *   [200][100] -0.75 -> -0.375 = -1.5 * 2^-2 -> 0xAC.
 * block (1,1): all zero -> s = 2^-23; [255][255] -0 -> 0x80. */
#define BK 256
static uint16_t *fp8_block_source(void)
{
    uint16_t *b = calloc(BK * BK, 2);
    assert_non_null(b);
    b[0] = bf16_exact(476.0f);
    b[1] = bf16_exact(-476.0f);
    b[2] = 0x3F91;
    b[3] = 0x3FA1;
    b[5 * BK + 7] = 0xBF91;
    b[128] = 0x3F80;
    b[1 * BK + 129] = 0xBF80;
    b[2 * BK + 130] = 0x3F00;
    b[3 * BK + 131] = 0x8000;
    b[128 * BK + 0] = bf16_exact(896.0f);
    b[129 * BK + 1] = bf16_exact(3.0f);
    b[200 * BK + 100] = bf16_exact(-0.75f);
    b[255 * BK + 255] = 0x8000;
    return b;
}

static void check_fp8_block(const qres *r)
{
    static const struct { size_t idx; uint8_t q; } e[] = {
        {0, 0x7E}, {1, 0xFE}, {2, 0x39}, {3, 0x39}, {5 * BK + 7, 0xB9},
        {128, 0x7E}, {1 * BK + 129, 0xFE}, {2 * BK + 130, 0x76}, {3 * BK + 131, 0x80},
        {128 * BK, 0x7E}, {129 * BK + 1, 0x3C}, {200 * BK + 100, 0xAC}, {255 * BK + 255, 0x80},
    };
    size_t ne = sizeof e / sizeof e[0];
    for (size_t i = 0; i < (size_t)BK * BK; i++) {
        uint8_t want = 0;
        for (size_t k = 0; k < ne; k++)
            if (e[k].idx == i) want = e[k].q;
        if (r->w[i] != want)
            fail_msg("q[%zu][%zu] = 0x%02x, expected 0x%02x", i / BK, i % BK, r->w[i], want);
    }
    /* not the double-rounded bytes */
    assert_int_not_equal(r->w[2], 0x38);
    assert_int_not_equal(r->w[3], 0x3A);
    const uint8_t *s = r->s + r->l.out[1].offset;
    assert_f32_bits(rd_f32(s, 0), 1.0625f);
    assert_int_equal(qfs_f32_bits(rd_f32(s, 1)), 0x3B124925u);
    assert_f32_bits(rd_f32(s, 2), 2.0f);
    assert_f32_bits(rd_f32(s, 3), 0x1p-23f);
}

static void test_fp8_block(void **state)
{
    (void)state;
    uint16_t *src = fp8_block_source();
    qres r;
    quant_run(&r, "fp8-block", F8, QFS_DT_BF16, src, BK, BK);
    assert_string_equal(r.l.out[1].suffix, ".weight_scale_inv");
    check_fp8_block(&r);
    /* dequantized e4m3(q) * s */
    float *d = dequant(&r, "fp8-block", F8, BK, BK);
    assert_f32_bits(d[0], 476.0f);
    assert_f32_bits(d[2], 1.1953125f);              /* 1.125 * 1.0625 */
    assert_f32_bits(d[5 * BK + 7], -1.1953125f);
    /* 448 * fl32(1/448) = 0.875 * 0x924925 * 2^-23 = 1 + 3 * 2^-26 -> fl32: 1.0 */
    assert_f32_bits(d[128], 1.0f);
    assert_f32_bits(d[2 * BK + 130], 0.5f);          /* 224 * s: the same, halved */
    assert_f32_bits(d[129 * BK + 1], 3.0f);
    assert_f32_bits(d[200 * BK + 100], -0.75f);
    assert_f32_bits(d[255 * BK + 255], -0.0f);
    assert_f32_bits(d[BK * BK - 2], 0.0f);
    free(d);
    qres_free(&r);
    /* compressed-tensors: the same bytes, the scale named weight_scale */
    quant_run(&r, "fp8-block", FC, QFS_DT_BF16, src, BK, BK);
    assert_string_equal(r.l.out[1].suffix, ".weight_scale");
    check_fp8_block(&r);
    qres_free(&r);
    free(src);
}

static void test_fp8_block_f16_source(void **state)
{
    (void)state;
    /* F16 [128, 128]: amax 65504 -> s = fl32(65504 / 448) = 146.21428... (F32, not rounded to
     * f16: f16 would give 146.25); 65504 / s -> 448 = 0x7E; x = 146.25 (f16 0x5892) / s =
     * 1.000244 -> 1.0 = 0x38 */
    uint16_t *b = calloc(128 * 128, 2);
    assert_non_null(b);
    b[0] = 0x7BFF;
    b[1] = 0x5892;
    assert_f32_bits(qfs_f16_to_f32(0x5892), 146.25f);
    qres r;
    quant_run(&r, "fp8-block", F8, QFS_DT_F16, b, 128, 128);
    assert_f32_bits(rd_f32(r.s, 0), 65504.0f / 448.0f);
    assert_int_equal(r.w[0], 0x7E);
    assert_int_equal(r.w[1], 0x38);
    qres_free(&r);
    free(b);
}

/* ======================================================================================== */
/* Dequantization of the earlier layouts, error sums, scales-only, NaN                       */
/* ======================================================================================== */

static void test_dequantize_quark_int8_fp8(void **state)
{
    (void)state;
    /* int8 per tensor, BF16 [[127.5, -127.5, 2.5], [0, 0, 0]]: s = 1 (F32), q = 127, -128, 2 */
    float x[6] = {127.5f, -127.5f, 2.5f, 0, 0, 0};
    uint16_t *src = bf16_buf(x, 6);
    qres r;
    quant_run(&r, "int8", FQ, QFS_DT_BF16, src, 2, 3);
    assert_f32_bits(rd_f32(r.s, 0), 1.0f);
    assert_int_equal(r.s[4], 0);   /* zero point after the F32 scale */
    float *d = dequant(&r, "int8", FQ, 2, 3);
    assert_f32_bits(d[0], 127.0f);
    assert_f32_bits(d[1], -128.0f);
    assert_f32_bits(d[2], 2.0f);
    free(d);
    qres_free(&r);
    /* int8-channel: row 1 all zero -> s 2^-23 (0x3400) */
    quant_run(&r, "int8-channel", FQ, QFS_DT_BF16, src, 2, 3);
    assert_int_equal(rd_u16(r.s, 0), 0x3F80);
    assert_int_equal(rd_u16(r.s, 1), 0x3400);
    d = dequant(&r, "int8-channel", FQ, 2, 3);
    assert_f32_bits(d[1], -128.0f);
    assert_f32_bits(d[4], 0.0f);
    free(d);
    qres_free(&r);
    /* fp8 per tensor: amax 127.5 -> s = rD(127.5/448) = rD(0.28459821): bf16 1.13839 * 2^-2,
     * 0.13839 * 128 = 17.71 -> 18: s = 1.140625 / 4 = 0.28515625 (0x3E92).
     * 127.5 / s = 447.1233 -> rD (bf16, ulp 2 at 256) 448 -> 0x7E; 2.5 / s = 8.767 -> rD
     * (ulp 1/16) 8.75 -> e4m3 (ulp 1 at 8) 9 = 1.125 * 8 -> 0x51. dequant 448 * s = 127.75,
     * 9 * s = 2.56640625 */
    quant_run(&r, "fp8", FQ, QFS_DT_BF16, src, 2, 3);
    assert_int_equal(rd_u16(r.s, 0), 0x3E92);
    assert_int_equal(r.w[0], 0x7E);
    assert_int_equal(r.w[1], 0xFE);
    assert_int_equal(r.w[2], 0x51);
    d = dequant(&r, "fp8", FQ, 2, 3);
    assert_f32_bits(d[0], 127.75f);
    assert_f32_bits(d[1], -127.75f);
    assert_f32_bits(d[2], 2.56640625f);
    free(d);
    qres_free(&r);
    /* fp8-channel, quark: scale [O] */
    quant_run(&r, "fp8-channel", FQ, QFS_DT_BF16, src, 2, 3);
    assert_int_equal(rd_u16(r.s, 0), 0x3E92);
    assert_int_equal(rd_u16(r.s, 1), 0x3400);
    d = dequant(&r, "fp8-channel", FQ, 2, 3);
    assert_f32_bits(d[2], 2.56640625f);
    assert_f32_bits(d[5], 0.0f);
    free(d);
    qres_free(&r);
    free(src);
}

static void test_quant_error_sums(void **state)
{
    (void)state;
    /* src [1, 2, -1, 0.5, -3], deq [1, 2.5, -1.25, 0.5, -2]: errors 0, .5, -.25, 0, 1:
     * err2 = 0.25 + 0.0625 + 1 = 1.3125; ref2 = 1 + 4 + 1 + 0.25 + 9 = 15.25; max 1 */
    const float x[5] = {1.0f, 2.0f, -1.0f, 0.5f, -3.0f};
    const float d[5] = {1.0f, 2.5f, -1.25f, 0.5f, -2.0f};
    qfs_quant_error_stats st;
    memset(&st, 0xFF, sizeof st);
    assert_int_equal(qfs_quant_error(x, QFS_DT_F32, d, 5, &st, 1), 0);
    assert_true(st.err2 == 1.3125);
    assert_true(st.ref2 == 15.25);
    assert_true(st.max_abs == 1.0);
    uint16_t *b = bf16_buf(x, 5);
    assert_int_equal(qfs_quant_error(b, QFS_DT_BF16, d, 5, &st, 2), 0);
    assert_true(st.err2 == 1.3125 && st.ref2 == 15.25 && st.max_abs == 1.0);
    uint16_t h[5];
    for (int i = 0; i < 5; i++) h[i] = qfs_f32_to_f16(x[i]);
    assert_int_equal(qfs_quant_error(h, QFS_DT_F16, d, 5, &st, 2), 0);
    assert_true(st.err2 == 1.3125 && st.ref2 == 15.25 && st.max_abs == 1.0);
    free(b);
    /* a long array split across threads: x = 1, deq = 1.5 -> err2 = n / 4, ref2 = n;
     * one element off by -3 gives the max */
    enum { N = 100003 };
    float *xs = malloc(sizeof(float) * N), *ds = malloc(sizeof(float) * N);
    assert_true(xs && ds);
    for (int i = 0; i < N; i++) {
        xs[i] = 1.0f;
        ds[i] = 1.5f;
    }
    ds[77777] = -2.0f;
    assert_int_equal(qfs_quant_error(xs, QFS_DT_F32, ds, N, &st, 4), 0);
    assert_true(st.err2 == (N - 1) * 0.25 + 9.0);
    assert_true(st.ref2 == (double)N);
    assert_true(st.max_abs == 3.0);
    free(xs);
    free(ds);
}

static void test_scales_only_every_kind(void **state)
{
    (void)state;
    /* quant_run compares the weight == NULL run with the full run byte for byte; here on
     * data with many different groups/blocks/rows, for each kernel kind. Values: integers
     * k % 37 - 18 scaled by a per-row power of two (all exact in BF16). */
    static const struct { const char *spec; qfs_format f; uint64_t o, i; } cases[] = {
        {"uint4-g32", FQ, 16, 128}, {"uint4", FA, 8, 256}, {"int4-g64", FA, 16, 128},
        {"int4-g32", FC, 5, 96}, {"int8-channel", FC, 5, 12}, {"w8a8-int8", FC, 3, 7},
        {"fp8", FC, 3, 7}, {"fp8-channel", FC, 3, 7}, {"mxfp4", FQ, 3, 96},
        {"fp8-block", F8, 256, 128}, {"fp8", F8, 4, 4}, {"int8", FQ, 3, 3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint64_t n = cases[c].o * cases[c].i;
        float *x = malloc(sizeof(float) * n);
        assert_non_null(x);
        for (uint64_t k = 0; k < n; k++)
            x[k] = ldexpf((float)((int)(k % 37) - 18), (int)(k / cases[c].i % 7) - 3);
        uint16_t *b = bf16_buf(x, n);
        qres r;
        quant_run(&r, cases[c].spec, cases[c].f, QFS_DT_BF16, b, cases[c].o, cases[c].i);
        qres_free(&r);
        free(b);
        free(x);
    }
    /* compressed-tensors' weight_shape is part of the scales part: written without a weight */
    float z[2 * 32] = {0};
    const qfs_spec *s = unit_spec("int4-g32");
    qfs_layout l;
    assert_int_equal(qfs_layout_for(s, FC, QFS_DT_F32, 2, 32, &l, NULL), 0);
    uint8_t sc[64];
    memset(sc, 0xEE, sizeof sc);
    assert_true(l.scales_bytes <= sizeof sc);
    assert_int_equal(qfs_quantize_layout(s, FC, QFS_DT_F32, z, 2, 32, &l, NULL, sc, 1, "t", NULL),
                     0);
    assert_int_equal(rd_i64(sc + l.out[2].offset, 0), 2);
    assert_int_equal(rd_i64(sc + l.out[2].offset, 1), 32);
    assert_f32_bits(rd_f32(sc, 0), 0x1p-23f);
    assert_f32_bits(rd_f32(sc, 1), 0x1p-23f);
}

static void test_new_kernels_refuse_nonfinite(void **state)
{
    (void)state;
    static const struct { const char *spec; qfs_format f; uint64_t o, i; } cases[] = {
        {"uint4-g32", FQ, 8, 64}, {"int4-g32", FC, 8, 64}, {"mxfp4", FQ, 8, 64},
        {"int8-channel", FC, 8, 64},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float x[8 * 64];
        for (int k = 0; k < 8 * 64; k++) x[k] = 1.0f;
        x[5 * 64 + 40] = NAN;
        const qfs_spec *s = unit_spec(cases[c].spec);
        qfs_layout l;
        assert_int_equal(qfs_layout_for(s, cases[c].f, QFS_DT_F32, 8, 64, &l, NULL), 0);
        uint8_t *w = malloc(l.weight_bytes), *sc = malloc(l.scales_bytes);
        assert_true(w && sc);
        qfs_error err = {{0}};
        assert_int_equal(qfs_quantize_layout(s, cases[c].f, QFS_DT_F32, x, 8, 64, &l, w, sc, 2,
                                             "m.weight", &err), -EDOM);
        assert_contains(err.msg, "m.weight");
        assert_contains(err.msg, "NaN");
        assert_contains(err.msg, "[5, 40]");
        free(w);
        free(sc);
    }
    /* fp8-block, BF16 -Inf at [130, 3] */
    uint16_t *b = calloc(256 * 128, 2);
    assert_non_null(b);
    b[130 * 128 + 3] = 0xFF80;
    const qfs_spec *s = unit_spec("fp8-block");
    qfs_layout l;
    assert_int_equal(qfs_layout_for(s, F8, QFS_DT_BF16, 256, 128, &l, NULL), 0);
    uint8_t *w = malloc(l.weight_bytes), sc[16];
    assert_non_null(w);
    qfs_error err = {{0}};
    assert_int_equal(qfs_quantize_layout(s, F8, QFS_DT_BF16, b, 256, 128, &l, w, sc, 2, "t",
                                         &err), -EDOM);
    assert_contains(err.msg, "-Inf");
    assert_contains(err.msg, "[130, 3]");
    free(w);
    free(b);
}

/* ======================================================================================== */
/* quantization_config per format                                                           */
/* ======================================================================================== */

static const json_t *obj_get(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!v) fail_msg("no key '%s'", key);
    return v;
}

static void expect_str(const json_t *o, const char *key, const char *value)
{
    const json_t *v = obj_get(o, key);
    if (!json_is_string(v) || strcmp(json_string_value(v), value) != 0)
        fail_msg("'%s' is not \"%s\"", key, value);
}

static void expect_int(const json_t *o, const char *key, long long value)
{
    const json_t *v = obj_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) != value)
        fail_msg("'%s' is not %lld", key, value);
}

static void expect_null(const json_t *o, const char *key)
{
    if (!json_is_null(obj_get(o, key))) fail_msg("'%s' is not null", key);
}

static void expect_bool(const json_t *o, const char *key, bool value)
{
    const json_t *v = obj_get(o, key);
    if (!json_is_boolean(v) || json_is_true(v) != value)
        fail_msg("'%s' is not %s", key, value ? "true" : "false");
}

static void expect_str_list(const json_t *o, const char *key, const char *const *items, size_t n)
{
    const json_t *a = obj_get(o, key);
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(json_string_value(json_array_get(a, i)), items[i]);
}

/* Only keys from `allowed` (the reader forbids others). */
static void expect_keys_within(const json_t *o, const char *const *allowed, size_t n)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        (void)v;
        size_t i = 0;
        while (i < n && strcmp(allowed[i], key) != 0) i++;
        if (i == n) fail_msg("unexpected key '%s'", key);
    }
}

/* Quark's JsonExporterConfig: exactly its five fields (FORMAT.md §6.1). */
static void expect_export(const json_t *o)
{
    const json_t *e = obj_get(o, "export");
    assert_int_equal(json_object_size(e), 5);
    assert_int_equal(json_array_size(obj_get(e, "kv_cache_group")), 0);
    assert_true(json_is_real(obj_get(e, "min_kv_scale")));
    expect_str(e, "pack_method", "reorder");
    expect_str(e, "weight_format", "real_quantized");
    expect_null(e, "weight_merge_groups");
}

static const char *const EXCL[] = {"lm_head", "model.layers.0.mlp.down_proj"};

static void test_quant_config_awq(void **state)
{
    (void)state;
    /* FORMAT.md §6.2: bits 4, group_size G, zero_point = not symmetric, version gemm,
     * pack_method reorder,
     * modules_to_not_convert = the exclusion list */
    static const struct { const char *spec; int group; bool zp; } cases[] = {
        {"uint4", 128, true}, {"uint4-g32", 32, true}, {"uint4-g64", 64, true},
        {"int4", 128, false}, {"int4-g32", 32, false}, {"int4-g128", 128, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *qc = qfs_quant_config_build(unit_spec(cases[i].spec), FA, EXCL, 2);
        assert_non_null(qc);
        assert_int_equal(json_object_size(qc), 8);
        expect_int(qc, "bits", 4);
        expect_export(qc);
        expect_int(qc, "group_size", cases[i].group);
        expect_str_list(qc, "modules_to_not_convert", EXCL, 2);
        expect_str(qc, "pack_method", "reorder");
        expect_str(qc, "quant_method", "awq");
        expect_str(qc, "version", "gemm");
        expect_bool(qc, "zero_point", cases[i].zp);
        json_decref(qc);
    }
}

static void test_quant_config_fp8_format(void **state)
{
    (void)state;
    /* per tensor, FORMAT.md §6.3 (dynamic activations, no KV cache): exactly
     * activation_scheme, export, ignored_layers, kv_cache_scheme (null), quant_method */
    json_t *qc = qfs_quant_config_build(unit_spec("fp8"), F8, EXCL, 2);
    assert_non_null(qc);
    assert_int_equal(json_object_size(qc), 5);
    expect_str(qc, "activation_scheme", "dynamic");
    expect_export(qc);
    expect_str_list(qc, "ignored_layers", EXCL, 2);
    expect_null(qc, "kv_cache_scheme");
    expect_str(qc, "quant_method", "fp8");
    json_decref(qc);
    /* block (FORMAT.md §6.3, §9): the config both transformers and vLLM accept */
    qc = qfs_quant_config_build(unit_spec("fp8-block"), F8, EXCL, 1);
    assert_non_null(qc);
    assert_int_equal(json_object_size(qc), 4);
    expect_str(qc, "quant_method", "fp8");
    expect_str(qc, "activation_scheme", "dynamic");
    expect_str_list(qc, "modules_to_not_convert", EXCL, 1);
    const json_t *wbs = obj_get(qc, "weight_block_size");
    assert_int_equal(json_array_size(wbs), 2);
    assert_int_equal(json_integer_value(json_array_get(wbs, 0)), 128);
    assert_int_equal(json_integer_value(json_array_get(wbs, 1)), 128);
    json_decref(qc);
}

static const char *const CT_ARG_KEYS[] = {
    "num_bits", "type", "symmetric", "group_size", "strategy", "block_structure", "dynamic",
    "actorder", "observer", "observer_kwargs", "scale_dtype", "zp_dtype",
};
static const char *const CT_SCHEME_KEYS[] = {
    "targets", "weights", "input_activations", "output_activations", "format",
};

/* One QuantizationArgs; group 0 = null, block 0 = null. */
static void expect_ct_args(const json_t *a, int bits, const char *type, const char *strategy,
                           int group, int block, bool dynamic)
{
    assert_true(json_is_object(a));
    expect_keys_within(a, CT_ARG_KEYS, sizeof CT_ARG_KEYS / sizeof CT_ARG_KEYS[0]);
    expect_int(a, "num_bits", bits);
    expect_str(a, "type", type);
    expect_str(a, "strategy", strategy);
    expect_bool(a, "symmetric", true);
    expect_bool(a, "dynamic", dynamic);
    if (group) expect_int(a, "group_size", group);
    else if (json_object_get(a, "group_size")) expect_null(a, "group_size");
    if (block) {
        const json_t *bs = obj_get(a, "block_structure");
        assert_int_equal(json_array_size(bs), 2);
        assert_int_equal(json_integer_value(json_array_get(bs, 0)), block);
        assert_int_equal(json_integer_value(json_array_get(bs, 1)), block);
    } else if (json_object_get(a, "block_structure")) {
        expect_null(a, "block_structure");
    }
}

/* The config of one spec in compressed-tensors (FORMAT.md §6.4); returns group_0. */
static const json_t *expect_ct_config(const json_t *qc, const char *format)
{
    assert_non_null(qc);
    expect_str(qc, "quant_method", "compressed-tensors");
    expect_str(qc, "format", format);
    expect_str(qc, "quantization_status", "compressed");
    expect_str_list(qc, "ignore", EXCL, 2);
    expect_null(qc, "kv_cache_scheme");
    const json_t *groups = obj_get(qc, "config_groups");
    assert_int_equal(json_object_size(groups), 1);
    const json_t *g = obj_get(groups, "group_0");
    expect_keys_within(g, CT_SCHEME_KEYS, sizeof CT_SCHEME_KEYS / sizeof CT_SCHEME_KEYS[0]);
    const char *const linear[] = {"Linear"};
    expect_str_list(g, "targets", linear, 1);
    if (json_object_get(g, "format")) expect_str(g, "format", format);
    if (json_object_get(g, "output_activations")) expect_null(g, "output_activations");
    return g;
}

static void test_quant_config_compressed_tensors(void **state)
{
    (void)state;
    json_t *qc;
    const json_t *g;
    /* int8-channel: W8A16, pack-quantized, channel, weight-only */
    qc = qfs_quant_config_build(unit_spec("int8-channel"), FC, EXCL, 2);
    g = expect_ct_config(qc, "pack-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "int", "channel", 0, 0, false);
    expect_null(g, "input_activations");
    json_decref(qc);
    /* w8a8-int8: int-quantized, dynamic per-token int8 inputs */
    qc = qfs_quant_config_build(unit_spec("w8a8-int8"), FC, EXCL, 2);
    g = expect_ct_config(qc, "int-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "int", "channel", 0, 0, false);
    expect_ct_args(obj_get(g, "input_activations"), 8, "int", "token", 0, 0, true);
    json_decref(qc);
    /* fp8: float-quantized, tensor weights, dynamic per-tensor inputs */
    qc = qfs_quant_config_build(unit_spec("fp8"), FC, EXCL, 2);
    g = expect_ct_config(qc, "float-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "float", "tensor", 0, 0, false);
    expect_ct_args(obj_get(g, "input_activations"), 8, "float", "tensor", 0, 0, true);
    json_decref(qc);
    /* fp8-channel: FP8_DYNAMIC, channel weights, dynamic per-token inputs */
    qc = qfs_quant_config_build(unit_spec("fp8-channel"), FC, EXCL, 2);
    g = expect_ct_config(qc, "float-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "float", "channel", 0, 0, false);
    expect_ct_args(obj_get(g, "input_activations"), 8, "float", "token", 0, 0, true);
    json_decref(qc);
    /* fp8-block: FP8_BLOCK, block [128, 128] weights, dynamic group-128 inputs */
    qc = qfs_quant_config_build(unit_spec("fp8-block"), FC, EXCL, 2);
    g = expect_ct_config(qc, "float-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "float", "block", 0, 128, false);
    expect_ct_args(obj_get(g, "input_activations"), 8, "float", "group", 128, 0, true);
    json_decref(qc);
    /* int4-gG: W4A16, pack-quantized, group G, symmetric, weight-only */
    static const struct { const char *spec; int group; } g4[] = {
        {"int4", 128}, {"int4-g32", 32}, {"int4-g64", 64}, {"int4-g128", 128},
    };
    for (size_t i = 0; i < 4; i++) {
        qc = qfs_quant_config_build(unit_spec(g4[i].spec), FC, EXCL, 2);
        g = expect_ct_config(qc, "pack-quantized");
        expect_ct_args(obj_get(g, "weights"), 4, "int", "group", g4[i].group, 0, false);
        expect_null(g, "input_activations");
        json_decref(qc);
    }
}

/* One Quark tensor spec, all 16 keys (FORMAT.md §6.1); symmetric -1 = null. */
static void expect_quark_spec(const json_t *t, const char *dtype, const char *qscheme,
                              int group, int symmetric, bool dynamic, const char *observer,
                              bool mx)
{
    assert_true(json_is_object(t));
    assert_int_equal(json_object_size(t), 17);
    expect_null(t, "block_size");
    expect_int(t, "ch_axis", -1);
    expect_str(t, "dtype", dtype);
    expect_bool(t, "enable_buffer_reuse", false);
    expect_int(t, "group_size", group);
    expect_bool(t, "is_dynamic", dynamic);
    expect_bool(t, "is_scale_quant", false);
    expect_int(t, "max_input_numel", 4194304);
    expect_null(t, "mx_element_dtype");
    expect_str(t, "observer_cls", observer);
    expect_str(t, "qscheme", qscheme);
    expect_str(t, "round_method", "half_even");
    if (mx) {
        expect_str(t, "scale_calculation_mode", "even");
        expect_str(t, "scale_format", "e8m0");
    } else {
        expect_null(t, "scale_calculation_mode");
        expect_null(t, "scale_format");
    }
    expect_str(t, "scale_type", "float");
    if (symmetric < 0) expect_null(t, "symmetric");
    else expect_bool(t, "symmetric", symmetric);
    expect_str(t, "zero_point_type", "int32");
}

static const json_t *expect_quark_config(const json_t *qc)
{
    assert_non_null(qc);
    expect_str(qc, "quant_method", "quark");
    expect_export(qc);
    expect_str_list(qc, "exclude", EXCL, 2);
    const json_t *g = obj_get(qc, "global_quant_config");
    assert_int_equal(json_object_size(g), 5);
    expect_null(g, "bias");
    expect_null(g, "output_tensors");
    return g;
}

static void test_quant_config_quark_4bit_and_mx(void **state)
{
    (void)state;
    static const struct { const char *spec, *dtype; int group, sym; } g4[] = {
        {"uint4", "uint4", 128, 0}, {"uint4-g32", "uint4", 32, 0}, {"uint4-g64", "uint4", 64, 0},
        {"int4", "int4", 128, 1}, {"int4-g64", "int4", 64, 1}, {"int4-g128", "int4", 128, 1},
    };
    for (size_t i = 0; i < sizeof g4 / sizeof g4[0]; i++) {
        json_t *qc = qfs_quant_config_build(unit_spec(g4[i].spec), FQ, EXCL, 2);
        const json_t *g = expect_quark_config(qc);
        expect_quark_spec(obj_get(g, "weight"), g4[i].dtype, "per_group", g4[i].group, g4[i].sym,
                          false, "PerGroupMinMaxObserver", false);
        expect_null(g, "input_tensors");   /* weight-only */
        json_decref(qc);
    }
    json_t *qc = qfs_quant_config_build(unit_spec("mxfp4"), FQ, EXCL, 2);
    const json_t *g = expect_quark_config(qc);
    expect_quark_spec(obj_get(g, "weight"), "fp4", "per_group", 32, -1, false,
                      "PerBlockMXObserver", true);
    expect_quark_spec(obj_get(g, "input_tensors"), "fp4", "per_group", 32, -1, true,
                      "PerBlockMXObserver", true);
    json_decref(qc);
}

/* ======================================================================================== */
/* The planner with a format                                                                */
/* ======================================================================================== */

typedef struct pexp {
    const char *name;
    qfs_dtype dtype;
    unsigned ndim;
    uint64_t d0, d1, offset, size;
    qfs_role role;
    uint64_t job_offset;
} pexp;

static void plan_with(const char *json, size_t data_len, const char *spec, qfs_format f,
                      qfs_st_file *sf, qfs_plan *p)
{
    qfs_error err = {{0}};
    int rc = st_parse_json(json, data_len, "/src/model.safetensors", sf, &err);
    if (rc) fail_msg("source does not parse: %s", err.msg);
    qfs_plan_options o = {.spec = unit_spec(spec), .format = f};
    rc = qfs_plan_build(sf, &o, "/src/model.safetensors", p, &err);
    if (rc) fail_msg("plan fails: %d %s", rc, err.msg);
}

static void check_plan(const qfs_plan *p, const pexp *e, size_t n, uint64_t data)
{
    for (size_t i = 0; i < n && i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        if (strcmp(t->name, e[i].name) != 0)
            fail_msg("tensor %zu is '%s', expected '%s'", i, t->name, e[i].name);
        if (t->dtype != e[i].dtype)
            fail_msg("'%s': dtype %s, expected %s", t->name, qfs_dtype_name(t->dtype),
                     qfs_dtype_name(e[i].dtype));
        assert_int_equal(t->ndim, e[i].ndim);
        uint64_t d[2] = {e[i].d0, e[i].d1};
        for (unsigned k = 0; k < e[i].ndim; k++) assert_int_equal(t->shape[k], d[k]);
        if (t->offset != e[i].offset || t->size != e[i].size)
            fail_msg("'%s': offset %llu size %llu, expected %llu %llu", t->name,
                     (unsigned long long)t->offset, (unsigned long long)t->size,
                     (unsigned long long)e[i].offset, (unsigned long long)e[i].size);
        if (t->role != e[i].role) fail_msg("'%s': role %d, expected %d", t->name, t->role,
                                           e[i].role);
        if (t->role != QFS_ROLE_PASSTHROUGH && t->job_offset != e[i].job_offset)
            fail_msg("'%s': job_offset %llu, expected %llu", t->name,
                     (unsigned long long)t->job_offset, (unsigned long long)e[i].job_offset);
    }
    assert_int_equal(p->n_tensors, n);
    assert_int_equal(p->file_size - p->header_size, data);
    /* the planned file (header + zero data) parses and names the same tensors */
    uint8_t *buf = calloc(1, p->file_size);
    assert_non_null(buf);
    memcpy(buf, p->header, p->header_size);
    qfs_st_file f;
    qfs_error err = {{0}};
    if (qfs_st_parse(buf, p->file_size, p->file_size, "planned", &f, &err))
        fail_msg("planned file does not parse: %s", err.msg);
    assert_int_equal(f.n_tensors, n);
    for (size_t i = 0; i < n; i++) {
        const qfs_st_tensor *t = qfs_st_find(&f, e[i].name);
        if (!t) fail_msg("'%s' not in the planned header", e[i].name);
        assert_int_equal(t->dtype, e[i].dtype);
        assert_int_equal(t->begin, e[i].offset);
        assert_int_equal(t->end - t->begin, e[i].size);
    }
    qfs_st_file_free(&f);
    free(buf);
}

#define PT QFS_ROLE_PASSTHROUGH
#define RW QFS_ROLE_WEIGHT
#define RS QFS_ROLE_SCALE
#define RZ QFS_ROLE_ZERO_POINT
#define RH QFS_ROLE_SHAPE

static void test_plan_awq_names_and_shape_skip(void **state)
{
    (void)state;
    /* uint4-g32 awq, BF16:
     *  0 m.l.0.up_proj.weight   [16, 64] 2048 bytes: quantized -> qweight I32 [64, 2] 512,
     *    scales BF16 [2, 16] 64, qzeros I32 [2, 2] 16
     *  1 m.l.0.down_proj.weight [12, 64] 1536: out = 12 not a multiple of 8 -> SKIP_SHAPE
     *  2 lm_head.weight         [16, 64] 2048: excluded by default
     * File order: I32 (qweight, qzeros by name), then BF16 by name (lm_head, down_proj, scales).
     * Job parts: weight = qweight (offset 0); scales part = scales (0) then qzeros (64). */
    const char *json =
        "{'m.l.0.up_proj.weight':{'dtype':'BF16','shape':[16,64],'data_offsets':[0,2048]},"
        "'m.l.0.down_proj.weight':{'dtype':'BF16','shape':[12,64],'data_offsets':[2048,3584]},"
        "'lm_head.weight':{'dtype':'BF16','shape':[16,64],'data_offsets':[3584,5632]}}";
    qfs_st_file sf;
    qfs_plan p;
    plan_with(json, 5632, "uint4-g32", FA, &sf, &p);
    assert_int_equal(p.decisions[0], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.decisions[1], QFS_SKIP_SHAPE);
    assert_int_equal(p.decisions[2], QFS_SKIP_LM_HEAD);
    assert_contains(qfs_select_reason(QFS_SKIP_SHAPE), "shape");
    assert_true(qfs_select_is_linear_like(QFS_SKIP_SHAPE));
    static const pexp e[] = {
        {"m.l.0.up_proj.qweight", QFS_DT_I32, 2, 64, 2, 0, 512, RW, 0},
        {"m.l.0.up_proj.qzeros", QFS_DT_I32, 2, 2, 2, 512, 16, RZ, 64},
        {"lm_head.weight", QFS_DT_BF16, 2, 16, 64, 528, 2048, PT, 0},
        {"m.l.0.down_proj.weight", QFS_DT_BF16, 2, 12, 64, 2576, 1536, PT, 0},
        {"m.l.0.up_proj.scales", QFS_DT_BF16, 2, 2, 16, 4112, 64, RS, 0},
    };
    check_plan(&p, e, 5, 4176);
    assert_int_equal(p.n_jobs, 1);
    assert_int_equal(p.jobs[0].src, 0);
    assert_int_equal(p.jobs[0].rows, 16);
    assert_int_equal(p.jobs[0].cols, 64);
    assert_int_equal(p.jobs[0].layout.weight_bytes, 512);
    assert_int_equal(p.jobs[0].layout.scales_bytes, 80);
    qfs_plan_free(&p);
    qfs_st_file_free(&sf);
}

static void test_plan_compressed_tensors_int4(void **state)
{
    (void)state;
    /* int4-g32 compressed-tensors, BF16:
     *  a.weight [12, 64] 1536: quantized (no out % 8 rule) -> weight_packed I32 [12, 8] 384,
     *    weight_scale BF16 [12, 2] 48, weight_shape I64 [2] 16
     *  b.weight [8, 48] 768: in = 48 not a multiple of 32 -> SKIP_SHAPE
     * File order: I64, I32, then BF16 by name. Scales part: scale (0), shape (48). */
    const char *json =
        "{'b.weight':{'dtype':'BF16','shape':[8,48],'data_offsets':[0,768]},"
        "'a.weight':{'dtype':'BF16','shape':[12,64],'data_offsets':[768,2304]}}";
    qfs_st_file sf;
    qfs_plan p;
    plan_with(json, 2304, "int4-g32", FC, &sf, &p);
    assert_int_equal(p.decisions[0], QFS_SKIP_SHAPE);
    assert_int_equal(p.decisions[1], QFS_SELECT_QUANTIZE);
    static const pexp e[] = {
        {"a.weight_shape", QFS_DT_I64, 1, 2, 0, 0, 16, RH, 48},
        {"a.weight_packed", QFS_DT_I32, 2, 12, 8, 16, 384, RW, 0},
        {"a.weight_scale", QFS_DT_BF16, 2, 12, 2, 400, 48, RS, 0},
        {"b.weight", QFS_DT_BF16, 2, 8, 48, 448, 768, PT, 0},
    };
    check_plan(&p, e, 4, 1216);
    assert_int_equal(p.n_jobs, 1);
    assert_int_equal(p.jobs[0].src, 1);
    qfs_plan_free(&p);
    qfs_st_file_free(&sf);
}

static void test_plan_fp8_block(void **state)
{
    (void)state;
    /* fp8-block in the fp8 format, BF16:
     *  c.weight [128, 256] 65536: -> weight F8_E4M3 [128, 256] 32768, weight_scale_inv F32 [1, 2]
     *  d.weight [128, 200] 51200: 200 is not a multiple of 128 -> SKIP_SHAPE
     * File order: F32, BF16, F8_E4M3. */
    const char *json =
        "{'c.weight':{'dtype':'BF16','shape':[128,256],'data_offsets':[0,65536]},"
        "'d.weight':{'dtype':'BF16','shape':[128,200],'data_offsets':[65536,116736]}}";
    qfs_st_file sf;
    qfs_plan p;
    plan_with(json, 116736, "fp8-block", F8, &sf, &p);
    assert_int_equal(p.decisions[0], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.decisions[1], QFS_SKIP_SHAPE);
    static const pexp e[] = {
        {"c.weight_scale_inv", QFS_DT_F32, 2, 1, 2, 0, 8, RS, 0},
        {"d.weight", QFS_DT_BF16, 2, 128, 200, 8, 51200, PT, 0},
        {"c.weight", QFS_DT_F8_E4M3, 2, 128, 256, 51208, 32768, RW, 0},
    };
    check_plan(&p, e, 3, 83976);
    qfs_plan_free(&p);
    qfs_st_file_free(&sf);
}

static void test_plan_awq_name_clash(void **state)
{
    (void)state;
    /* x.qzeros already in the source: x.weight stays as it is (awq would write x.qzeros) */
    const char *json =
        "{'x.weight':{'dtype':'BF16','shape':[8,32],'data_offsets':[0,512]},"
        "'x.qzeros':{'dtype':'I32','shape':[1,1],'data_offsets':[512,516]}}";
    qfs_st_file sf;
    qfs_plan p;
    plan_with(json, 516, "uint4-g32", FA, &sf, &p);
    assert_int_equal(p.decisions[0], QFS_SKIP_NAME_CLASH);
    assert_int_equal(p.n_jobs, 0);
    qfs_plan_free(&p);
    /* in the quark format the names differ, so it is quantized */
    qfs_plan_options o = {.spec = unit_spec("uint4-g32"), .format = FQ};
    qfs_error err = {{0}};
    assert_int_equal(qfs_plan_build(&sf, &o, "/src/model.safetensors", &p, &err), 0);
    assert_int_equal(p.decisions[0], QFS_SELECT_QUANTIZE);
    qfs_plan_free(&p);
    qfs_st_file_free(&sf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_lookup_new_specs),
        cmocka_unit_test(test_format_lookup),
        cmocka_unit_test(test_spec_format_matrix),
        cmocka_unit_test(test_spec_check_format_messages),
        cmocka_unit_test(test_list_specs_every_pair_has_loaders),
        cmocka_unit_test(test_layout_every_valid_pair),
        cmocka_unit_test(test_layout_source_dtypes),
        cmocka_unit_test(test_layout_shapes_accepted),
        cmocka_unit_test(test_layout_shape_refusals),
        cmocka_unit_test(test_awq_nibble_order),
        cmocka_unit_test(test_uint4_scale_and_zero_point),
        cmocka_unit_test(test_uint4_odd_zero_point_ties),
        cmocka_unit_test(test_uint4_all_zero_group),
        cmocka_unit_test(test_uint4_double_rounding),
        cmocka_unit_test(test_int4_amax_clamp),
        cmocka_unit_test(test_ct_int4_packing),
        cmocka_unit_test(test_ct_int8_packing),
        cmocka_unit_test(test_ct_fp8_tensor_and_channel),
        cmocka_unit_test(test_mxfp4_rounding_and_scales),
        cmocka_unit_test(test_mxfp4_even_exponent_bf16),
        cmocka_unit_test(test_mxfp4_exponent_at_the_top),
        cmocka_unit_test(test_fp8_block),
        cmocka_unit_test(test_fp8_block_f16_source),
        cmocka_unit_test(test_dequantize_quark_int8_fp8),
        cmocka_unit_test(test_quant_error_sums),
        cmocka_unit_test(test_scales_only_every_kind),
        cmocka_unit_test(test_new_kernels_refuse_nonfinite),
        cmocka_unit_test(test_quant_config_awq),
        cmocka_unit_test(test_quant_config_fp8_format),
        cmocka_unit_test(test_quant_config_compressed_tensors),
        cmocka_unit_test(test_quant_config_quark_4bit_and_mx),
        cmocka_unit_test(test_plan_awq_names_and_shape_skip),
        cmocka_unit_test(test_plan_compressed_tensors_int4),
        cmocka_unit_test(test_plan_fp8_block),
        cmocka_unit_test(test_plan_awq_name_clash),
        cmocka_unit_test(test_quantize_rows_equal_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
