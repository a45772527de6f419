/* Unit tests of qfs_quantize_layout, its row-band form and qfs_dequantize_layout (core/quant.c):
 * the per-group 4-bit, MX and block FP8 kernels, the packings of the awq and compressed-tensors
 * formats, scales-only runs and the refusal of NaN/Inf (test_kernels.c has the int8/fp8
 * kernels of the quark format and the dtype conversions). Every expected value is worked out by hand in the comments from the
 * contract, not taken from the code's output:
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
#include "unit_specs.h"

#include <float.h>
#include <math.h>

#include "quarkfs/layout.h"
#include "quarkfs/quant.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
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
        cmocka_unit_test(test_quantize_rows_equal_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
