/* Unit tests of the dtype conversions (include/quarkfs/dtype.h, core/dtype.c) and the
 * quantization kernels (core/quant.c). Every expected value is worked out by hand in the
 * comments from the formats' definitions and the contract, doc/FORMAT.md §4.2/§4.3:
 *   int8:  s = max(rD(amax / 127.5), 2^-23); q = clamp(rne(fl32(x * fl32(1/s))), -128, 127)
 *   fp8:   s = rD(amax / 448) (rD(2^-23) if 0); q = e4m3(clamp(rD(fl32(x / s)), +-448))
 * bf16 = 1+8+7 bits (ulp at 1: 2^-7), f16 = 1+5+10 (ulp at 1: 2^-10, min normal 2^-14, min
 * subnormal 2^-24), e4m3fn = 1+4+3, bias 7 (ulp at 1: 2^-3, min normal 2^-6, min subnormal
 * 2^-9, max 448 = 0x7E, 0x7F NaN). */
#include "unit_util.c"

#include <float.h>
#include <math.h>

#include "quarkfs/quant.h"

#define PATH_WHAT "model-00001.safetensors: tensor 'w.test'"

/* ---- helpers ---- */

/* Runs qfs_quant_int8_row on F32 inputs and compares with expected codes. */
static void check_int8_f32(const float *x, const int8_t *expected, size_t n, float scale)
{
    int8_t q[64];
    assert_true(n <= 64);
    memset(q, 0x55, sizeof q);
    qfs_quant_int8_row(x, QFS_DT_F32, n, scale, q);
    for (size_t i = 0; i < n; i++)
        if (q[i] != expected[i])
            fail_msg("x[%zu] = %a, scale %a: q = %d, expected %d", i, (double)x[i],
                     (double)scale, q[i], expected[i]);
    assert_int_equal((uint8_t)q[n], 0x55);   /* nothing written past n */
}

/* Runs a row kernel on 16-bit inputs (BF16 or F16 bits). */
static void check_int8_u16(const uint16_t *x, qfs_dtype dt, const int8_t *expected, size_t n,
                           float scale)
{
    int8_t q[64];
    assert_true(n <= 64);
    qfs_quant_int8_row(x, dt, n, scale, q);
    for (size_t i = 0; i < n; i++)
        if (q[i] != expected[i])
            fail_msg("x[%zu] = 0x%04x, scale %a: q = %d, expected %d", i, x[i], (double)scale,
                     q[i], expected[i]);
}

static void check_fp8(const void *x, qfs_dtype dt, const uint8_t *expected, size_t n, float scale)
{
    uint8_t q[64];
    assert_true(n <= 64);
    memset(q, 0x55, sizeof q);
    qfs_quant_fp8_row(x, dt, n, scale, q);
    for (size_t i = 0; i < n; i++)
        if (q[i] != expected[i])
            fail_msg("element %zu (dtype %s), scale %a: q = 0x%02x, expected 0x%02x", i,
                     qfs_dtype_name(dt), (double)scale, q[i], expected[i]);
    assert_int_equal(q[n], 0x55);
}

/* Output buffers of one qfs_quantize call, pre-filled with a pattern so unwritten bytes show. */
typedef struct outbufs {
    uint8_t w[256], s[64], z[64];
} outbufs;

static int run_quantize(const char *spec, qfs_dtype dt, const void *src, uint64_t rows,
                        uint64_t cols, outbufs *o, qfs_error *err)
{
    memset(o, 0xA5, sizeof *o);
    const qfs_spec *s = unit_spec(spec);
    qfs_layout l;
    assert_int_equal(qfs_layout_for(s, QFS_FMT_QUARK, dt, rows, cols, &l, NULL), 0);
    bool zp = l.n_out > 2 && l.out[2].kind == QFS_OUT_ZERO_POINT;
    assert_true(l.out[0].bytes <= sizeof o->w && l.out[1].bytes <= sizeof o->s);
    return qfs_quantize(s, dt, src, rows, cols, o->w, o->s, zp ? o->z : NULL, 1,
                        PATH_WHAT, err);
}

static float load_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

static uint16_t load_u16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* ---- float32 -> bfloat16 ---- */

static void test_bf16_exact_values(void **state)
{
    (void)state;
    assert_int_equal(qfs_f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(qfs_f32_to_bf16(-2.0f), 0xC000);
    assert_int_equal(qfs_f32_to_bf16(0.0f), 0x0000);
    assert_int_equal(qfs_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(qfs_f32_to_bf16(0x1.02p0f), 0x3F81);       /* 1 + 2^-7, exact */
    assert_int_equal(qfs_f32_to_bf16(0x1.FEp127f), 0x7F7F);     /* largest finite bf16 */
    assert_int_equal(qfs_f32_to_bf16(INFINITY), 0x7F80);
    assert_int_equal(qfs_f32_to_bf16(-INFINITY), 0xFF80);
    assert_f32_bits(qfs_bf16_to_f32(0x3F81), 0x1.02p0f);
    assert_f32_bits(qfs_bf16_to_f32(0xC2FF), -127.5f);
    assert_f32_bits(qfs_bf16_to_f32(0x0001), 0x1p-133f);         /* bf16 min subnormal */
}

static void test_bf16_ties_to_even(void **state)
{
    (void)state;
    /* 1 + 2^-8 is halfway between 1.0 (mantissa 0, even) and 1 + 2^-7 (odd): -> 1.0 */
    assert_int_equal(qfs_f32_to_bf16(0x1.01p0f), 0x3F80);
    /* 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): -> 1 + 2^-6 */
    assert_int_equal(qfs_f32_to_bf16(0x1.03p0f), 0x3F82);
    assert_int_equal(qfs_f32_to_bf16(-0x1.03p0f), 0xBF82);
    assert_int_equal(qfs_f32_to_bf16(-0x1.01p0f), 0xBF80);
    /* just above / below the tie */
    assert_int_equal(qfs_f32_to_bf16(0x1.010002p0f), 0x3F81);
    assert_int_equal(qfs_f32_to_bf16(0x1.00FFFEp0f), 0x3F80);
    /* 255.5: bf16 ulp at 128 is 1, 255.5 ties between 255 (odd) and 256 (even) */
    assert_int_equal(qfs_f32_to_bf16(255.5f), 0x4380);          /* 256 */
    assert_int_equal(qfs_f32_to_bf16(254.5f), 0x437E);          /* 254 */
}

static void test_bf16_overflow_and_subnormals(void **state)
{
    (void)state;
    /* FLT_MAX = (2 - 2^-23) 2^127 is above the tie (2 - 2^-8) 2^127 with the (overflowing)
     * next value 2^128: -> inf */
    assert_int_equal(qfs_f32_to_bf16(FLT_MAX), 0x7F80);
    assert_int_equal(qfs_f32_to_bf16(-FLT_MAX), 0xFF80);
    /* (2 - 2^-8) 2^127 ties between 0x7F7F (odd) and inf (0x7F80, even mantissa) -> inf */
    assert_int_equal(qfs_f32_to_bf16(0x1.FFp127f), 0x7F80);
    /* subnormals: bf16 quantum 2^-133; 2^-134 ties 0 / 2^-133 -> 0; 3*2^-134 ties 1 / 2 -> 2 */
    assert_int_equal(qfs_f32_to_bf16(0x1p-134f), 0x0000);
    assert_int_equal(qfs_f32_to_bf16(0x3p-134f), 0x0002);
    assert_int_equal(qfs_f32_to_bf16(0x1p-149f), 0x0000);
    assert_int_equal(qfs_f32_to_bf16(0x1p-126f), 0x0080);       /* min normal */
}

/* ---- float32 <-> IEEE half ---- */

static void test_f16_normal_values(void **state)
{
    (void)state;
    assert_int_equal(qfs_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(qfs_f32_to_f16(-2.0f), 0xC000);
    assert_int_equal(qfs_f32_to_f16(0.5f), 0x3800);
    assert_int_equal(qfs_f32_to_f16(127.5f), 0x57F8);          /* 1.9921875 * 2^6 */
    assert_int_equal(qfs_f32_to_f16(65504.0f), 0x7BFF);        /* largest finite half */
    assert_int_equal(qfs_f32_to_f16(0x1p-14f), 0x0400);        /* min normal */
    /* fl32(1/3) = 1.3333334 * 2^-2: exponent 13, mantissa 341.33 -> 341 = 0x155 */
    assert_int_equal(qfs_f32_to_f16(1.0f / 3.0f), 0x3555);
    assert_int_equal(qfs_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(qfs_f32_to_f16(-0.0f), 0x8000);
}

static void test_f16_ties_to_even(void **state)
{
    (void)state;
    assert_int_equal(qfs_f32_to_f16(0x1.002p0f), 0x3C00);       /* 1 + 2^-11 -> 1 */
    assert_int_equal(qfs_f32_to_f16(0x1.006p0f), 0x3C02);       /* 1 + 3*2^-11 -> 1 + 2^-9 */
    assert_int_equal(qfs_f32_to_f16(0x1.002002p0f), 0x3C01);    /* just above the tie */
    assert_int_equal(qfs_f32_to_f16(2049.0f), 0x6800);          /* ulp 2: 2049 -> 2048 */
    assert_int_equal(qfs_f32_to_f16(2051.0f), 0x6802);          /* 2051 -> 2052 */
    assert_int_equal(qfs_f32_to_f16(-2051.0f), 0xE802);
}

static void test_f16_overflow(void **state)
{
    (void)state;
    /* 65520 ties between 65504 (mantissa 0x3FF, odd) and 65536 (inf): -> inf */
    assert_int_equal(qfs_f32_to_f16(65520.0f), 0x7C00);
    assert_int_equal(qfs_f32_to_f16(65519.996f), 0x7BFF);
    assert_int_equal(qfs_f32_to_f16(-65520.0f), 0xFC00);
    assert_int_equal(qfs_f32_to_f16(65536.0f), 0x7C00);
    assert_int_equal(qfs_f32_to_f16(1e5f), 0x7C00);
    assert_int_equal(qfs_f32_to_f16(-1e5f), 0xFC00);
    assert_int_equal(qfs_f32_to_f16(FLT_MAX), 0x7C00);
}

static void test_f16_subnormals(void **state)
{
    (void)state;
    assert_int_equal(qfs_f32_to_f16(0x1p-24f), 0x0001);         /* min subnormal */
    assert_int_equal(qfs_f32_to_f16(-0x1p-24f), 0x8001);
    assert_int_equal(qfs_f32_to_f16(0x1p-15f), 0x0200);
    assert_int_equal(qfs_f32_to_f16(0x3FFp-24f), 0x03FF);       /* max subnormal */
    assert_int_equal(qfs_f32_to_f16(0x1p-25f), 0x0000);         /* tie 0 / 1 -> 0 */
    assert_int_equal(qfs_f32_to_f16(0x3p-25f), 0x0002);         /* tie 1 / 2 -> 2 */
    assert_int_equal(qfs_f32_to_f16(0x5p-25f), 0x0002);         /* tie 2 / 3 -> 2 */
    assert_int_equal(qfs_f32_to_f16(0x1.000002p-25f), 0x0001);  /* above the tie */
    assert_int_equal(qfs_f32_to_f16(0x1p-26f), 0x0000);
    assert_int_equal(qfs_f32_to_f16(0x7FFp-25f), 0x0400);       /* 1023.5 quanta -> min normal */
    assert_int_equal(qfs_f32_to_f16(0x1p-149f), 0x0000);
}

static void test_f16_to_f32(void **state)
{
    (void)state;
    assert_f32_bits(qfs_f16_to_f32(0x3C00), 1.0f);
    assert_f32_bits(qfs_f16_to_f32(0x0001), 0x1p-24f);
    assert_f32_bits(qfs_f16_to_f32(0x03FF), 0x3FFp-24f);
    assert_f32_bits(qfs_f16_to_f32(0x8001), -0x1p-24f);
    assert_f32_bits(qfs_f16_to_f32(0x7BFF), 65504.0f);
    assert_f32_bits(qfs_f16_to_f32(0x57F8), 127.5f);
    assert_f32_bits(qfs_f16_to_f32(0x7C00), INFINITY);
    assert_f32_bits(qfs_f16_to_f32(0xFC00), -INFINITY);
    assert_f32_bits(qfs_f16_to_f32(0x8000), -0.0f);
    assert_true(isnan(qfs_f16_to_f32(0x7E00)));
}

/* ---- float32 -> e4m3fn ---- */

static void test_e4m3_exact_values(void **state)
{
    (void)state;
    assert_int_equal(qfs_f32_to_e4m3(0.0f), 0x00);
    assert_int_equal(qfs_f32_to_e4m3(-0.0f), 0x80);              /* sign kept on zero */
    assert_int_equal(qfs_f32_to_e4m3(1.0f), 0x38);               /* exp 7, man 0 */
    assert_int_equal(qfs_f32_to_e4m3(-1.0f), 0xB8);
    assert_int_equal(qfs_f32_to_e4m3(0.5f), 0x30);
    assert_int_equal(qfs_f32_to_e4m3(448.0f), 0x7E);             /* 1.75 * 2^8 */
    assert_int_equal(qfs_f32_to_e4m3(-448.0f), 0xFE);
    assert_int_equal(qfs_f32_to_e4m3(240.0f), 0x77);             /* 1.875 * 2^7 */
    assert_int_equal(qfs_f32_to_e4m3(-224.0f), 0xF6);            /* 1.75 * 2^7 */
    assert_int_equal(qfs_f32_to_e4m3(16.0f), 0x58);              /* exp 4+7 = 11 */
    assert_int_equal(qfs_f32_to_e4m3(0x1p-6f), 0x08);            /* min normal */
    assert_int_equal(qfs_f32_to_e4m3(0x7p-9f), 0x07);            /* max subnormal */
    assert_int_equal(qfs_f32_to_e4m3(0x1p-9f), 0x01);            /* min subnormal */
}

static void test_e4m3_normal_ties(void **state)
{
    (void)state;
    /* ulp at 16 is 2: 17 ties 16 (man 0) / 18 (man 1) -> 16 = 0x58 (note: 0x50 would be 8) */
    assert_int_equal(qfs_f32_to_e4m3(17.0f), 0x58);
    /* 19 ties 18 (man 1) / 20 (man 2) -> 20 = 1.25 * 16 = 0x5A */
    assert_int_equal(qfs_f32_to_e4m3(19.0f), 0x5A);
    assert_int_equal(qfs_f32_to_e4m3(-19.0f), 0xDA);
    assert_int_equal(qfs_f32_to_e4m3(0x1.1p0f), 0x38);           /* 1.0625 -> 1.0 */
    assert_int_equal(qfs_f32_to_e4m3(0x1.3p0f), 0x3A);           /* 1.1875 -> 1.25 */
    assert_int_equal(qfs_f32_to_e4m3(0x1.100002p0f), 0x39);      /* above the tie -> 1.125 */
    /* 464 ties 448 (man 6) / 480 (man 7, NaN in fn): even -> 448 */
    assert_int_equal(qfs_f32_to_e4m3(464.0f), 0x7E);
    /* 7.5 * 2^-9 ties max subnormal 7 * 2^-9 (odd) / min normal 2^-6: -> 0x08 */
    assert_int_equal(qfs_f32_to_e4m3(0xFp-10f), 0x08);
}

static void test_e4m3_subnormal_ties(void **state)
{
    (void)state;
    assert_int_equal(qfs_f32_to_e4m3(0x1p-10f), 0x00);           /* 0.5 q: tie -> 0 */
    assert_int_equal(qfs_f32_to_e4m3(0x3p-10f), 0x02);           /* 1.5 q: tie -> 2 */
    assert_int_equal(qfs_f32_to_e4m3(0x5p-10f), 0x02);           /* 2.5 q: tie -> 2 */
    assert_int_equal(qfs_f32_to_e4m3(0x7p-10f), 0x04);           /* 3.5 q: tie -> 4 */
    assert_int_equal(qfs_f32_to_e4m3(0x1.000002p-10f), 0x01);    /* above the tie */
    assert_int_equal(qfs_f32_to_e4m3(0x1p-11f), 0x00);
    assert_int_equal(qfs_f32_to_e4m3(-0x3p-10f), 0x82);
    assert_int_equal(qfs_f32_to_e4m3(-0x1p-10f), 0x80);          /* rounds to -0 */
    assert_int_equal(qfs_f32_to_e4m3(-0x1p-9f), 0x81);
}

static void test_e4m3_to_f32_and_round_trip(void **state)
{
    (void)state;
    assert_f32_bits(qfs_e4m3_to_f32(0x7E), 448.0f);
    assert_f32_bits(qfs_e4m3_to_f32(0xFE), -448.0f);
    assert_f32_bits(qfs_e4m3_to_f32(0x01), 0x1p-9f);
    assert_f32_bits(qfs_e4m3_to_f32(0x08), 0x1p-6f);
    assert_f32_bits(qfs_e4m3_to_f32(0x38), 1.0f);
    assert_f32_bits(qfs_e4m3_to_f32(0x5A), 20.0f);
    assert_f32_bits(qfs_e4m3_to_f32(0x80), -0.0f);
    assert_true(isnan(qfs_e4m3_to_f32(0x7F)));
    assert_true(isnan(qfs_e4m3_to_f32(0xFF)));
    /* every non-NaN code is a value that converts back to itself */
    for (unsigned b = 0; b < 256; b++) {
        if ((b & 0x7F) == 0x7F) continue;
        uint8_t back = qfs_f32_to_e4m3(qfs_e4m3_to_f32((uint8_t)b));
        if (back != b) fail_msg("code 0x%02x -> %a -> 0x%02x", b,
                                (double)qfs_e4m3_to_f32((uint8_t)b), back);
    }
}

/* ---- scales ---- */

static void test_int8_scale_all_zero(void **state)
{
    (void)state;
    assert_f32_bits(qfs_quant_int8_scale(0.0f, QFS_DT_BF16), 0x1p-23f);
    assert_f32_bits(qfs_quant_int8_scale(0.0f, QFS_DT_F16), 0x1p-23f);
    assert_f32_bits(qfs_quant_int8_scale(0.0f, QFS_DT_F32), 0x1p-23f);
    /* tiny amax: amax / 127.5 < 2^-23 -> the floor */
    assert_f32_bits(qfs_quant_int8_scale(0x1p-20f, QFS_DT_F32), 0x1p-23f);
    assert_f32_bits(qfs_quant_int8_scale(0x1p-20f, QFS_DT_BF16), 0x1p-23f);
}

static void test_int8_scale_values(void **state)
{
    (void)state;
    assert_f32_bits(qfs_quant_int8_scale(127.5f, QFS_DT_BF16), 1.0f);
    assert_f32_bits(qfs_quant_int8_scale(127.5f, QFS_DT_F32), 1.0f);
    assert_f32_bits(qfs_quant_int8_scale(255.0f, QFS_DT_F16), 2.0f);
    /* 1/127.5 = 2^-7 * 256/255 = 2^-7 * 1.0039216:
     *  bf16: 0.0039216 * 128 = 0.502 ulp -> up: 2^-7 (1 + 2^-7)
     *  f16:  0.0039216 * 1024 = 4.016 ulp -> 4: 2^-7 (1 + 4/1024) */
    assert_f32_bits(qfs_quant_int8_scale(1.0f, QFS_DT_BF16), 0x1.02p-7f);
    assert_f32_bits(qfs_quant_int8_scale(1.0f, QFS_DT_F16), 0x1.01p-7f);
}

static void test_int8_scale_bf16_rounding_ties(void **state)
{
    (void)state;
    /* amax = 65535/512 = 127.5 * (1 + 2^-8): amax / 127.5 = 1 + 2^-8 exactly, a bf16 tie
     * between 1 (even) and 1 + 2^-7 -> 1.0; f16 and f32 hold it exactly */
    assert_f32_bits(qfs_quant_int8_scale(65535.0f / 512.0f, QFS_DT_BF16), 1.0f);
    assert_f32_bits(qfs_quant_int8_scale(65535.0f / 512.0f, QFS_DT_F16), 0x1.01p0f);
    assert_f32_bits(qfs_quant_int8_scale(65535.0f / 512.0f, QFS_DT_F32), 0x1.01p0f);
    /* amax = 66045/512 = 127.5 * (1 + 3*2^-8): tie between 1 + 2^-7 (odd) and 1 + 2^-6 */
    assert_f32_bits(qfs_quant_int8_scale(66045.0f / 512.0f, QFS_DT_BF16), 0x1.04p0f);
    assert_f32_bits(qfs_quant_int8_scale(66045.0f / 512.0f, QFS_DT_F16), 0x1.03p0f);
}

static void test_fp8_scale_all_zero(void **state)
{
    (void)state;
    /* rD(2^-23): 2^-23 is exact in bf16 and in f16 (subnormal 2 * 2^-24) */
    assert_f32_bits(qfs_quant_fp8_scale(0.0f, QFS_DT_BF16), 0x1p-23f);
    assert_f32_bits(qfs_quant_fp8_scale(0.0f, QFS_DT_F16), 0x1p-23f);
    assert_f32_bits(qfs_quant_fp8_scale(0.0f, QFS_DT_F32), 0x1p-23f);
    /* nonzero amax whose amax/448 underflows to 0 in D also gets the floor:
     * f16: 2^-24 / 448 < 2^-25 -> 0;  bf16: 2^-130 / 448 = 2^-138.8 < 2^-134 -> 0 */
    assert_f32_bits(qfs_quant_fp8_scale(0x1p-24f, QFS_DT_F16), 0x1p-23f);
    assert_f32_bits(qfs_quant_fp8_scale(0x1p-130f, QFS_DT_BF16), 0x1p-23f);
    /* ...but not in f32, where 2^-130/448 is a (subnormal) nonzero value below 2^-138 */
    float s = qfs_quant_fp8_scale(0x1p-130f, QFS_DT_F32);
    assert_true(s > 0.0f && s < 0x1p-138f);
}

static void test_fp8_scale_values(void **state)
{
    (void)state;
    assert_f32_bits(qfs_quant_fp8_scale(448.0f, QFS_DT_BF16), 1.0f);
    assert_f32_bits(qfs_quant_fp8_scale(896.0f, QFS_DT_F16), 2.0f);
    assert_f32_bits(qfs_quant_fp8_scale(224.0f, QFS_DT_F32), 0.5f);
    /* 1/448 = 2^-9 * 1.142857: bf16 0.142857*128 = 18.29 -> 18 = 0x12 -> 0x1.24p-9;
     * f16 0.142857*1024 = 146.29 -> 146 = 0x92 -> 0x1.248p-9 */
    assert_f32_bits(qfs_quant_fp8_scale(1.0f, QFS_DT_BF16), 0x1.24p-9f);
    assert_f32_bits(qfs_quant_fp8_scale(1.0f, QFS_DT_F16), 0x1.248p-9f);
}

/* ---- int8 row kernel ---- */

static void test_int8_row_ties(void **state)
{
    (void)state;
    /* scale 1: inv = 1, x * inv exact, so only rne acts */
    const float x[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 3.5f, -3.5f, 0x1.FFFFFEp-2f, 126.5f};
    const int8_t e[] = {0, 2, 2, 0, -2, -2, 4, -4, 0, 126};
    check_int8_f32(x, e, sizeof x / sizeof x[0], 1.0f);
    /* scale 0.25: inv 4: 0.375 -> 1.5 -> 2, 0.625 -> 2.5 -> 2, -0.125 -> -0.5 -> 0 */
    const float y[] = {0.375f, 0.625f, -0.125f, -0.375f};
    const int8_t f[] = {2, 2, 0, -2};
    check_int8_f32(y, f, 4, 0.25f);
}

static void test_int8_row_amax_clamp(void **state)
{
    (void)state;
    /* amax 127.5 -> scale 1: +amax -> 127.5 -> 128 -> clamped 127; -amax -> -128 */
    const float x[] = {127.5f, -127.5f};
    const int8_t e[] = {127, -128};
    check_int8_f32(x, e, 2, 1.0f);
    /* amax 255 -> scale 2, inv 0.5 */
    const float y[] = {255.0f, -255.0f, 1.0f, 3.0f};
    const int8_t f[] = {127, -128, 0, 2};
    check_int8_f32(y, f, 4, 2.0f);
}

static void test_int8_row_beyond_range(void **state)
{
    (void)state;
    const float x[] = {1000.0f, -1000.0f, 128.0f, -129.0f, 127.49f, -128.49f, 3e38f, -3e38f};
    const int8_t e[] = {127, -128, 127, -128, 127, -128, 127, -128};
    check_int8_f32(x, e, 8, 1.0f);
}

static void test_int8_row_all_zero(void **state)
{
    (void)state;
    const float x[] = {0.0f, -0.0f, 0.0f, 0.0f, -0.0f};
    const int8_t e[] = {0, 0, 0, 0, 0};
    check_int8_f32(x, e, 5, 0x1p-23f);   /* inv = 2^23 */
}

static void test_int8_row_multiplies_by_reciprocal(void **state)
{
    (void)state;
    /* s = 7/256; fl32(1/s) = fl32(36.5714286) = 9586981 * 2^-18 = 36.5714302 (rounded up).
     * x = 175/512: x/s = 12.5 exactly (rne -> 12), but x * inv = 12.5 + 75*2^-27, more than
     * half an ulp (2^-21) above 12.5, so fl32 gives 12.5 + 2^-20 -> 13.
     * x = 91/512: x/s = 6.5 (-> 6), x * inv = 6.5 + 39*2^-27 > 6.5 + 2^-22 -> 7. */
    const float x[] = {175.0f / 512.0f, 91.0f / 512.0f, -175.0f / 512.0f};
    const int8_t e[] = {13, 7, -13};
    check_int8_f32(x, e, 3, 7.0f / 256.0f);
}

static void test_int8_row_bf16_f16_sources(void **state)
{
    (void)state;
    /* bf16: 0.5, 1.5, 2.5, -1.5, 127.5, -127.5, -0.0 */
    const uint16_t b[] = {0x3F00, 0x3FC0, 0x4020, 0xBFC0, 0x42FF, 0xC2FF, 0x8000};
    const int8_t e[] = {0, 2, 2, -2, 127, -128, 0};
    check_int8_u16(b, QFS_DT_BF16, e, 7, 1.0f);
    /* f16: same values */
    const uint16_t h[] = {0x3800, 0x3E00, 0x4100, 0xBE00, 0x57F8, 0xD7F8, 0x8000};
    check_int8_u16(h, QFS_DT_F16, e, 7, 1.0f);
}

static void test_int8_row_bf16_scale_of_one(void **state)
{
    (void)state;
    /* bf16 weights with amax 1: s = 0x1.02p-7 (see test_int8_scale_values);
     * inv = fl32(2^14 / 129) = 127.0077519...: +1 -> 127, -1 -> -127 (not -128: the bf16
     * rounding of the scale moved it up); 0.5 -> 63.50388 -> 64 */
    const uint16_t b[] = {0x3F80, 0xBF80, 0x3F00};
    const int8_t e[] = {127, -127, 64};
    check_int8_u16(b, QFS_DT_BF16, e, 3, 0x1.02p-7f);
}

static void test_int8_row_long(void **state)
{
    (void)state;
    /* a long row (vector body + tail): integers -127..127 at scale 1 map to themselves */
    enum { N = 1021 };
    float x[N];
    int8_t q[N];
    for (int i = 0; i < N; i++) x[i] = (float)(i % 255 - 127);
    qfs_quant_int8_row(x, QFS_DT_F32, N, 1.0f, q);
    for (int i = 0; i < N; i++) assert_int_equal(q[i], i % 255 - 127);
}

/* ---- fp8 row kernel ---- */

static void test_fp8_row_f32(void **state)
{
    (void)state;
    const float x[] = {0.0f, -0.0f, 1.0f, -1.0f, 17.0f, 19.0f, 448.0f, 500.0f, -1000.0f,
                       0x3p-10f, 0x1p-10f, 464.0f, 1e30f};
    const uint8_t e[] = {0x00, 0x80, 0x38, 0xB8, 0x58, 0x5A, 0x7E, 0x7E, 0xFE, 0x02, 0x00, 0x7E,
                         0x7E};
    check_fp8(x, QFS_DT_F32, e, sizeof x / sizeof x[0], 1.0f);
    /* scale 2: 896 -> 448, 0.25 -> 0.125 = 2^-3 (exp 4) = 0x20, -34 -> -17 -> -16 = 0xD8 */
    const float y[] = {896.0f, 0.25f, -34.0f};
    const uint8_t f[] = {0x7E, 0x20, 0xD8};
    check_fp8(y, QFS_DT_F32, f, 3, 2.0f);
}

static void test_fp8_row_saturation(void **state)
{
    (void)state;
    /* f16 65504 / 1 -> clamp 448; bf16 -3.3895e38 -> -448 */
    const uint16_t h[] = {0x7BFF, 0xFBFF, 0x5F00 /* 448 */};
    const uint8_t e[] = {0x7E, 0xFE, 0x7E};
    check_fp8(h, QFS_DT_F16, e, 3, 1.0f);
    const uint16_t b[] = {0x7F7F, 0xFF7F};
    const uint8_t f[] = {0x7E, 0xFE};
    check_fp8(b, QFS_DT_BF16, f, 2, 1.0f);
}

static void test_fp8_row_bf16_double_rounding(void **state)
{
    (void)state;
    /* s = 1.0625 = 17/16 (bf16 0x3F88).
     * x = 1.1328125 = 145/128 (0x3F91): x/s = 145/136 = 1.066176 -> bf16 (ulp 2^-7):
     *   8.47 ulps -> 1.0625, an e4m3 tie between 1.0 (even) and 1.125 -> 0x38.
     *   Without rD the single rounding gives 1.125 = 0x39.
     * x = 1.2578125 = 161/128 (0x3FA1): x/s = 161/136 = 1.183824 -> bf16: 23.53 ulps -> 24 ->
     *   1.1875, a tie between 1.125 (odd) and 1.25 -> 0x3A. Single rounding: 1.125 = 0x39. */
    const uint16_t b[] = {0x3F91, 0x3FA1, 0xBF91};
    const uint8_t e[] = {0x38, 0x3A, 0xB8};
    check_fp8(b, QFS_DT_BF16, e, 3, 1.0625f);
    /* the same values from F32 (rD = identity) round once */
    const float x[] = {1.1328125f, 1.2578125f};
    const uint8_t f[] = {0x39, 0x39};
    check_fp8(x, QFS_DT_F32, f, 2, 1.0625f);
}

/* ---- qfs_quantize, spec by spec ---- */

static void test_quantize_int8_per_tensor_bf16(void **state)
{
    (void)state;
    /* [[127.5, -127.5, 2.5], [0, 0, 0]]: amax 127.5 -> scale 1 (stored F32, 4 bytes) */
    const uint16_t src[] = {0x42FF, 0xC2FF, 0x4020, 0, 0, 0};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("int8", QFS_DT_BF16, src, 2, 3, &o, &err), 0);
    const int8_t e[] = {127, -128, 2, 0, 0, 0};
    assert_memory_equal(o.w, e, 6);
    assert_int_equal(o.w[6], 0xA5);
    assert_f32_bits(load_f32(o.s), 1.0f);
    assert_int_equal(o.s[4], 0xA5);
    assert_int_equal(o.z[0], 0);
    assert_int_equal(o.z[1], 0xA5);
}

static void test_quantize_int8_per_tensor_scale_rounded(void **state)
{
    (void)state;
    /* bf16 [[1, -2, 0.5], [0, 0, 0]]: amax 2, 2/127.5 = 2^-6 * 256/255 -> bf16 0x1.02p-6 =
     * 0.0157470703125, stored as F32 bits 0x3C810000. inv = fl32(2^13/129) = 63.50388:
     * 1 -> 63.5039 -> 64; -2 -> -127.0078 -> -127; 0.5 -> 31.7519 -> 32 */
    const uint16_t src[] = {0x3F80, 0xC000, 0x3F00, 0, 0, 0};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("int8", QFS_DT_BF16, src, 2, 3, &o, &err), 0);
    const int8_t e[] = {64, -127, 32, 0, 0, 0};
    assert_memory_equal(o.w, e, 6);
    assert_int_equal(qfs_f32_bits(load_f32(o.s)), 0x3C810000u);
    assert_int_equal(o.z[0], 0);
}

static void test_quantize_int8_per_tensor_all_zero(void **state)
{
    (void)state;
    const float src[4] = {0};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("int8", QFS_DT_F32, src, 2, 2, &o, &err), 0);
    const int8_t e[4] = {0};
    assert_memory_equal(o.w, e, 4);
    assert_f32_bits(load_f32(o.s), 0x1p-23f);
}

/* [[127.5, -1.5, 2.5], [0, 0, 0], [-255, 127.5, 1]]: row scales 1, 2^-23 (all zero), 2 */
static const int8_t channel_expected[] = {127, -2, 2, 0, 0, 0, -128, 64, 0};

static void test_quantize_int8_channel_bf16(void **state)
{
    (void)state;
    const uint16_t src[] = {0x42FF, 0xBFC0, 0x4020, 0, 0x8000, 0, 0xC37F, 0x42FF, 0x3F80};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("int8-channel", QFS_DT_BF16, src, 3, 3, &o, &err), 0);
    /* row 2: inv 0.5: -255 -> -127.5 -> -128; 127.5 -> 63.75 -> 64; 1 -> 0.5 -> 0 */
    assert_memory_equal(o.w, channel_expected, 9);
    /* scales in D = BF16: 1.0 = 0x3F80, 2^-23 = 0x3400, 2.0 = 0x4000 */
    assert_int_equal(load_u16(o.s), 0x3F80);
    assert_int_equal(load_u16(o.s + 2), 0x3400);
    assert_int_equal(load_u16(o.s + 4), 0x4000);
    assert_int_equal(o.s[6], 0xA5);
    const uint8_t z[3] = {0, 0, 0};
    assert_memory_equal(o.z, z, 3);
    assert_int_equal(o.z[3], 0xA5);
}

static void test_quantize_w8a8_int8_f16(void **state)
{
    (void)state;
    /* same matrix in F16: 127.5 = 0x57F8, -1.5 = 0xBE00, 2.5 = 0x4100, -255 = 0xDBF8,
     * 1 = 0x3C00 */
    const uint16_t src[] = {0x57F8, 0xBE00, 0x4100, 0, 0, 0, 0xDBF8, 0x57F8, 0x3C00};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("w8a8-int8", QFS_DT_F16, src, 3, 3, &o, &err), 0);
    assert_memory_equal(o.w, channel_expected, 9);
    /* scales in F16: 1.0 = 0x3C00, 2^-23 = subnormal 2 * 2^-24 = 0x0002, 2.0 = 0x4000 */
    assert_int_equal(load_u16(o.s), 0x3C00);
    assert_int_equal(load_u16(o.s + 2), 0x0002);
    assert_int_equal(load_u16(o.s + 4), 0x4000);
    const uint8_t z[3] = {0, 0, 0};
    assert_memory_equal(o.z, z, 3);
}

static void test_quantize_fp8_per_tensor_bf16(void **state)
{
    (void)state;
    /* [[896, -448, 2], [0, 0, 0]]: amax 896 -> scale 2 (stored BF16 0x4000, no zero point);
     * y = 448, -224, 1 -> 0x7E, 0xF6, 0x38 */
    const uint16_t src[] = {0x4460, 0xC3E0, 0x4000, 0, 0, 0};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("fp8", QFS_DT_BF16, src, 2, 3, &o, &err), 0);
    const uint8_t e[] = {0x7E, 0xF6, 0x38, 0, 0, 0};
    assert_memory_equal(o.w, e, 6);
    assert_int_equal(load_u16(o.s), 0x4000);
    assert_int_equal(o.s[2], 0xA5);
    assert_int_equal(o.z[0], 0xA5);   /* no zero point written */
}

static void test_quantize_fp8_channel_f32(void **state)
{
    (void)state;
    /* [[0, 0, 0], [896, -448, 0x3p-9], [8, -4, 1]] in F32 (D = F32, scales stored F32):
     * row 0 all zero -> 2^-23, q 0; row 1 amax 896 -> 2: 448, -224, 0x3p-10 -> 0x7E 0xF6 0x02;
     * row 2 amax 8 -> s = fl32(1/56) = 0x1.24924ap-6 (rounded up), so 8/s < 448 but
     * within half an e4m3 ulp (16) -> 0x7E; -4/s -> 224 - tiny -> 0xF6; 1/s = 56 - tiny ->
     * 1.75 * 2^5 = 0x66 */
    const float src[] = {0, 0, 0, 896.0f, -448.0f, 0x3p-9f, 8.0f, -4.0f, 1.0f};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("fp8-channel", QFS_DT_F32, src, 3, 3, &o, &err), 0);
    const uint8_t e[] = {0, 0, 0, 0x7E, 0xF6, 0x02, 0x7E, 0xF6, 0x66};
    assert_memory_equal(o.w, e, 9);
    assert_f32_bits(load_f32(o.s), 0x1p-23f);
    assert_f32_bits(load_f32(o.s + 4), 2.0f);
    assert_f32_bits(load_f32(o.s + 8), 0x1.24924ap-6f);
    assert_int_equal(o.s[12], 0xA5);
}

static void test_quantize_fp8_channel_bf16_zero_row(void **state)
{
    (void)state;
    /* bf16 [[0, 0], [448, -1]]: scales 2^-23 (0x3400) and 1 (0x3F80) */
    const uint16_t src[] = {0, 0x8000, 0x43E0, 0xBF80};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("fp8-channel", QFS_DT_BF16, src, 2, 2, &o, &err), 0);
    /* -0.0 / 2^-23 = -0.0 -> 0x80 (PyTorch keeps the sign of zero) */
    const uint8_t e[] = {0x00, 0x80, 0x7E, 0xB8};
    assert_memory_equal(o.w, e, 4);
    assert_int_equal(load_u16(o.s), 0x3400);
    assert_int_equal(load_u16(o.s + 2), 0x3F80);
}

static void test_quantize_f16_subnormal_scales(void **state)
{
    (void)state;
    /* f16 x = 0x1419 = (1 + 25/1024) 2^-10 = 1049 * 2^-20 and -x/2 = 0x9019, one row.
     * fp8: x/448 = 37.46 * 2^-24 -> f16 subnormal 37 * 2^-24 (0x0025); x/s = 16784/37 =
     *   453.62 -> rD (ulp 0.25) 453.5 -> clamp 448 = 0x7E; -x/2/s = -8392/37 = -226.81 ->
     *   rD (ulp 0.125) -226.75 -> e4m3 (ulp 16) -224 = 0xF6.
     * int8: x/127.5 = 131.64 * 2^-24 -> 132 * 2^-24 (0x0084); inv = fl32(2^24/132);
     *   x * inv = 16784/132 = 127.15 -> 127; -x/2 * inv = -63.58 -> -64. */
    const uint16_t src[] = {0x1419, 0x9019};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("fp8", QFS_DT_F16, src, 1, 2, &o, &err), 0);
    assert_int_equal(load_u16(o.s), 0x0025);
    assert_int_equal(o.w[0], 0x7E);
    assert_int_equal(o.w[1], 0xF6);
    assert_int_equal(run_quantize("fp8-channel", QFS_DT_F16, src, 1, 2, &o, &err), 0);
    assert_int_equal(load_u16(o.s), 0x0025);
    assert_int_equal(o.w[0], 0x7E);
    assert_int_equal(o.w[1], 0xF6);
    assert_int_equal(run_quantize("int8-channel", QFS_DT_F16, src, 1, 2, &o, &err), 0);
    assert_int_equal(load_u16(o.s), 0x0084);
    assert_int_equal((int8_t)o.w[0], 127);
    assert_int_equal((int8_t)o.w[1], -64);
    assert_int_equal(o.z[0], 0);
    /* int8 per tensor: the same f16-rounded value, stored as F32 */
    assert_int_equal(run_quantize("int8", QFS_DT_F16, src, 1, 2, &o, &err), 0);
    assert_f32_bits(load_f32(o.s), 132.0f * 0x1p-24f);
    assert_int_equal((int8_t)o.w[0], 127);
    assert_int_equal((int8_t)o.w[1], -64);
}

static void test_quantize_scales_only(void **state)
{
    (void)state;
    /* weight = NULL: only the scales and zero points are computed, with the same values */
    const qfs_spec *s = unit_spec("int8-channel");
    const uint16_t src[] = {0x42FF, 0xBFC0, 0x4020, 0, 0x8000, 0, 0xC37F, 0x42FF, 0x3F80};
    uint16_t sc[4] = {0xAAAA, 0xAAAA, 0xAAAA, 0xAAAA};
    uint8_t zp[4] = {9, 9, 9, 9};
    qfs_error err = {{0}};
    assert_int_equal(qfs_quantize(s, QFS_DT_BF16, src, 3, 3, NULL, sc, zp, 2, "t", &err), 0);
    assert_int_equal(sc[0], 0x3F80);
    assert_int_equal(sc[1], 0x3400);
    assert_int_equal(sc[2], 0x4000);
    assert_int_equal(sc[3], 0xAAAA);
    const uint8_t z[4] = {0, 0, 0, 9};
    assert_memory_equal(zp, z, 4);
    /* per tensor, fp8: amax 896 -> scale 2 in BF16 */
    const uint16_t t[] = {0x4460, 0xC3E0, 0x4000, 0};
    uint16_t st[2] = {0xAAAA, 0xAAAA};
    assert_int_equal(qfs_quantize(unit_spec("fp8"), QFS_DT_BF16, t, 2, 2, NULL, st, NULL, 1, "t",
                                  &err), 0);
    assert_int_equal(st[0], 0x4000);
    assert_int_equal(st[1], 0xAAAA);
    /* and NaN is still refused */
    const uint16_t bad[] = {0x3F80, 0x7FC0};
    assert_int_equal(qfs_quantize(s, QFS_DT_BF16, bad, 1, 2, NULL, sc, zp, 1, "t", &err), -EDOM);
    assert_contains(err.msg, "NaN");
}

static void test_quantize_large_per_tensor_threads(void **state)
{
    (void)state;
    /* 3 x 50000 F32 (> 2 parallel chunks of 65536), integers in [-127, 127] plus one 127.5:
     * scale 1, q = x; same result with 1 and 2 threads */
    enum { R = 3, C = 50000 };
    float *x = malloc(sizeof(float) * R * C);
    int8_t *q1 = malloc(R * C), *q2 = malloc(R * C);
    assert_true(x && q1 && q2);
    for (size_t i = 0; i < (size_t)R * C; i++) x[i] = (float)((int)(i % 255) - 127);
    x[123457] = 127.5f;
    const qfs_spec *s = unit_spec("int8");
    float sc1 = 0, sc2 = 0;
    int8_t z1 = 5, z2 = 5;
    assert_int_equal(qfs_quantize(s, QFS_DT_F32, x, R, C, q1, &sc1, &z1, 1, "t", NULL), 0);
    assert_int_equal(qfs_quantize(s, QFS_DT_F32, x, R, C, q2, &sc2, &z2, 2, "t", NULL), 0);
    assert_f32_bits(sc1, 1.0f);
    assert_f32_bits(sc2, 1.0f);
    assert_int_equal(z1, 0);
    assert_int_equal(z2, 0);
    for (size_t i = 0; i < (size_t)R * C; i++) {
        int e = i == 123457 ? 127 : (int)(i % 255) - 127;
        if (q1[i] != e || q2[i] != e) fail_msg("element %zu: %d / %d, expected %d", i, q1[i],
                                               q2[i], e);
    }
    free(x);
    free(q1);
    free(q2);
}

/* ---- every 16-bit input, computed without the library (the per-tensor look-up table) ---- */

/* v rounded to p significant bits, nearest-even, with the smallest normal exponent emin (below
 * it the quantum stays 2^(emin - p + 1): subnormals). Exact in double for the values used. */
static double round_prec(double v, int p, int emin)
{
    if (v == 0.0 || !isfinite(v)) return v;
    int e = ilogb(v);
    if (e < emin) e = emin;
    double quantum = ldexp(1.0, e - p + 1);
    return nearbyint(v / quantum) * quantum;
}

/* The value of 16-bit pattern h of dtype dt (bf16: 1+8+7, f16: 1+5+10), from the definitions. */
static double value_u16(uint16_t h, qfs_dtype dt)
{
    int sign = h >> 15, mbits = dt == QFS_DT_BF16 ? 7 : 10, ebits = 15 - mbits;
    int bias = (1 << (ebits - 1)) - 1;
    int e = (h >> mbits) & ((1 << ebits) - 1), m = h & ((1 << mbits) - 1);
    double v = e ? ldexp(1.0 + ldexp(m, -mbits), e - bias) : ldexp(m, 1 - bias - mbits);
    return sign ? -v : v;
}

static bool finite_u16(uint16_t h, qfs_dtype dt)
{
    return dt == QFS_DT_BF16 ? (h & 0x7F80) != 0x7F80 : (h & 0x7C00) != 0x7C00;
}

/* rD of a float32 value: nearest-even to 8 (bf16) or 11 (f16) bits, inf past the largest. */
static double round_dtype(double v, qfs_dtype dt)
{
    bool bf = dt == QFS_DT_BF16;
    double r = round_prec(v, bf ? 8 : 11, bf ? -126 : -14);
    double max = bf ? ldexp(255.0, 120) : 65504.0;
    return fabs(r) > max ? copysign(INFINITY, v) : r;
}

/* int8: clamp(rne(fl32(x * fl32(1/s))), -128, 127) */
static int8_t expect_int8(double x, float scale)
{
    float inv = 1.0f / scale;
    float v = (float)x * inv;
    double r = nearbyint((double)v);
    return (int8_t)(r < -128 ? -128 : r > 127 ? 127 : r);
}

/* fp8: e4m3(clamp(rD(fl32(x / s)), +-448)), e4m3 nearest-even (4 bits, emin -6), sign kept */
static uint8_t expect_fp8(double x, float scale, qfs_dtype dt)
{
    float y = (float)x / scale;
    double a = fabs(round_dtype(y, dt));
    if (a > 448.0) a = 448.0;
    a = round_prec(a, 4, -6);
    unsigned code;
    if (a < 0x1p-6) {
        code = (unsigned)(a * 512.0);                  /* subnormal: multiples of 2^-9 */
    } else {
        int e = ilogb(a);
        code = (unsigned)((e + 7) << 3) | (unsigned)((ldexp(a, -e) - 1.0) * 8.0);
    }
    return (uint8_t)(code | (signbit(y) ? 0x80u : 0u));
}

static void test_per_tensor_all_16bit_inputs(void **state)
{
    (void)state;
    /* Every finite bf16 and f16 pattern, cycled to 5 * 65536 elements (more than the 2^18 from
     * which per_tensor_elements switches to a table of the 65536 codes), quantized per tensor
     * at given scales through qfs_quantize_layout_rows, 1 and 2 threads, a whole tensor and a
     * band; and through the row kernels (always computed). Each result is compared with the
     * formula above, evaluated here in double from the formats' definitions. */
    enum { ROWS = 320, COLS = 1024, N = ROWS * COLS };
    static const qfs_dtype dts[] = {QFS_DT_BF16, QFS_DT_F16};
    static const char *const specs[] = {"int8", "fp8"};
    /* scales representable in both dtypes: 1, 1.0625 (ties, see the double-rounding test),
     * 2^-23 (the floor; f16 subnormal), 146 (f16 max / 448), 0.0123 rounded to 8 bits, 3/1024 */
    static const float scale_list[] = {1.0f, 1.0625f, 0x1p-23f, 146.0f, 0x1.92p-7f, 0x3p-10f};
    uint16_t *src = malloc(N * sizeof *src);
    uint8_t *q = malloc(N), *r = malloc(N), *expect = malloc(65536);
    assert_true(src && q && r && expect);
    for (size_t d = 0; d < 2; d++) {
        qfs_dtype dt = dts[d];
        size_t np = 0;
        for (unsigned h = 0; h < 65536; h++)
            if (finite_u16((uint16_t)h, dt)) src[np++] = (uint16_t)h;
        for (size_t i = np; i < N; i++) src[i] = src[(i - np) % np];
        for (size_t k = 0; k < 2; k++) {
            const qfs_spec *s = unit_spec(specs[k]);
            qfs_layout l;
            assert_int_equal(qfs_layout_for(s, QFS_FMT_QUARK, dt, ROWS, COLS, &l, NULL), 0);
            uint8_t *scales = calloc(1, l.scales_bytes);
            assert_true(scales != NULL);
            for (size_t j = 0; j < sizeof scale_list / sizeof scale_list[0]; j++) {
                float sc = scale_list[j];
                if (k == 0) memcpy(scales + l.out[1].offset, &sc, 4);   /* int8: F32 scale */
                else qfs_store_as(scales + l.out[1].offset, dt, 0, sc);
                assert_true(qfs_load_f32(scales + l.out[1].offset, k ? dt : QFS_DT_F32, 0) == sc);
                for (unsigned h = 0; h < 65536; h++) {
                    double x = value_u16((uint16_t)h, dt);
                    expect[h] = k == 0 ? (uint8_t)expect_int8(x, sc) : expect_fp8(x, sc, dt);
                }
                for (int threads = 1; threads <= 2; threads++) {
                    memset(q, 0xA5, N);
                    assert_int_equal(qfs_quantize_layout_rows(s, dt, src, ROWS, COLS, &l, scales,
                                                              0, ROWS, q, threads), 0);
                    memset(r, 0xA5, N);   /* a band of 256 rows: 2^18 elements */
                    assert_int_equal(qfs_quantize_layout_rows(s, dt, src, ROWS, COLS, &l, scales,
                                                              64, ROWS, r, threads), 0);
                    for (size_t i = 0; i < N; i++) {
                        if (q[i] != expect[src[i]] || (i >= 64 * COLS && r[i] != q[i]))
                            fail_msg("%s %s scale %a, %d thread(s): x = 0x%04x: 0x%02x (band "
                                     "0x%02x), expected 0x%02x", specs[k], qfs_dtype_name(dt),
                                     (double)sc, threads, src[i], q[i], r[i], expect[src[i]]);
                    }
                    for (size_t i = 0; i < 64 * COLS; i++) assert_int_equal(r[i], 0xA5);
                }
                /* the row kernels, which never use the table */
                if (k == 0) qfs_quant_int8_row(src, dt, np, sc, (int8_t *)r);
                else qfs_quant_fp8_row(src, dt, np, sc, r);
                for (size_t i = 0; i < np; i++)
                    if (r[i] != expect[src[i]])
                        fail_msg("%s row kernel %s scale %a: x = 0x%04x: 0x%02x, expected 0x%02x",
                                 specs[k], qfs_dtype_name(dt), (double)sc, src[i], r[i],
                                 expect[src[i]]);
            }
            free(scales);
        }
    }
    free(src);
    free(q);
    free(r);
    free(expect);
}

static void test_per_tensor_fp8_bf16_scales(void **state)
{
    (void)state;
    /* fp8 per tensor from bf16 at 2^18 elements takes the table, evaluated as a formula where
     * it reproduces the table (on AVX2). Across the scale range (every 97th positive finite bf16
     * scale, all exponents), every finite input must give the row kernel's code. */
    enum { ROWS = 256, COLS = 1024, N = ROWS * COLS };
    uint16_t *src = malloc(N * sizeof *src);
    uint8_t *q = malloc(N), *r = malloc(N);
    assert_true(src && q && r);
    size_t np = 0;
    for (unsigned h = 0; h < 65536; h++)
        if ((h & 0x7F80) != 0x7F80) src[np++] = (uint16_t)h;
    for (size_t i = np; i < N; i++) src[i] = src[(i * 7919) % np];
    const qfs_spec *s = unit_spec("fp8");
    qfs_layout l;
    assert_int_equal(qfs_layout_for(s, QFS_FMT_QUARK, QFS_DT_BF16, ROWS, COLS, &l, NULL), 0);
    uint8_t *scales = calloc(1, l.scales_bytes);
    assert_true(scales != NULL);
    for (unsigned h = 1; h < 0x7F80; h += 97) {
        float sc = qfs_bf16_to_f32((uint16_t)h);
        qfs_store_as(scales + l.out[1].offset, QFS_DT_BF16, 0, sc);
        assert_int_equal(qfs_quantize_layout_rows(s, QFS_DT_BF16, src, ROWS, COLS, &l, scales, 0,
                                                  ROWS, q, 2), 0);
        qfs_quant_fp8_row(src, QFS_DT_BF16, N, sc, r);
        for (size_t i = 0; i < N; i++)
            if (q[i] != r[i])
                fail_msg("scale %a: x = 0x%04x: 0x%02x, row kernel 0x%02x", (double)sc, src[i],
                         q[i], r[i]);
    }
    free(scales);
    free(src);
    free(q);
    free(r);
}

static void test_quantize_nan_edom(void **state)
{
    (void)state;
    /* bf16 NaN (0x7FC0) at [1, 1] */
    const uint16_t src[] = {0x3F80, 0x4000, 0x4040, 0x4080, 0x7FC0, 0x40C0};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("int8", QFS_DT_BF16, src, 2, 3, &o, &err), -EDOM);
    assert_contains(err.msg, "w.test");
    assert_contains(err.msg, "NaN");
    assert_contains(err.msg, "[1, 1]");
    memset(&err, 0, sizeof err);
    assert_int_equal(run_quantize("int8-channel", QFS_DT_BF16, src, 2, 3, &o, &err), -EDOM);
    assert_contains(err.msg, "NaN");
    assert_contains(err.msg, "[1, 1]");
    memset(&err, 0, sizeof err);
    const float f[] = {1.0f, NAN};
    assert_int_equal(run_quantize("fp8", QFS_DT_F32, f, 1, 2, &o, &err), -EDOM);
    assert_contains(err.msg, "NaN");
    assert_contains(err.msg, "[0, 1]");
}

static void test_quantize_inf_edom(void **state)
{
    (void)state;
    /* f16 +Inf (0x7C00) at [0, 2] */
    const uint16_t src[] = {0x3C00, 0x3C00, 0x7C00, 0x3C00};
    outbufs o;
    qfs_error err = {{0}};
    assert_int_equal(run_quantize("fp8-channel", QFS_DT_F16, src, 1, 4, &o, &err), -EDOM);
    assert_contains(err.msg, PATH_WHAT);
    assert_contains(err.msg, "+Inf");
    assert_contains(err.msg, "[0, 2]");
    memset(&err, 0, sizeof err);
    /* f32 -Inf at [2, 0] (3 x 2), per tensor and per channel */
    const float f[] = {1, 2, 3, 4, -INFINITY, 5};
    assert_int_equal(run_quantize("fp8", QFS_DT_F32, f, 3, 2, &o, &err), -EDOM);
    assert_contains(err.msg, "-Inf");
    assert_contains(err.msg, "[2, 0]");
    memset(&err, 0, sizeof err);
    assert_int_equal(run_quantize("w8a8-int8", QFS_DT_F32, f, 3, 2, &o, &err), -EDOM);
    assert_contains(err.msg, "-Inf");
    assert_contains(err.msg, "[2, 0]");
}

static void test_quantize_rejects_non_float(void **state)
{
    (void)state;
    const int8_t src[4] = {1, 2, 3, 4};
    outbufs o;
    memset(&o, 0, sizeof o);
    qfs_error err = {{0}};
    const qfs_spec *s = unit_spec("int8");
    assert_int_equal(qfs_quantize(s, QFS_DT_I8, src, 2, 2, o.w, o.s, o.z, 1, PATH_WHAT, &err),
                     -EINVAL);
    assert_contains(err.msg, "w.test");
    assert_contains(err.msg, "I8");
}

/* ---- amax ---- */

static void test_amax_threads(void **state)
{
    (void)state;
    enum { N = 3 * 65536 + 17 };
    float *x = malloc(sizeof(float) * N);
    assert_non_null(x);
    for (size_t i = 0; i < N; i++) x[i] = (float)((int)(i % 1999) - 999) / 1000.0f;  /* |x| < 1 */
    x[150001] = -1000.5f;
    bool fin1 = false, fin2 = false;
    assert_f32_bits(qfs_quant_amax(x, QFS_DT_F32, N, &fin1, 1), 1000.5f);
    assert_f32_bits(qfs_quant_amax(x, QFS_DT_F32, N, &fin2, 2), 1000.5f);
    assert_true(fin1 && fin2);
    /* the last element (in the partial last chunk) */
    x[N - 1] = 2000.25f;
    assert_f32_bits(qfs_quant_amax(x, QFS_DT_F32, N, &fin1, 2), 2000.25f);
    assert_f32_bits(qfs_quant_amax(x, QFS_DT_F32, N, &fin1, 1), 2000.25f);
    /* Inf and NaN make all_finite false */
    x[70000] = INFINITY;
    assert_false((qfs_quant_amax(x, QFS_DT_F32, N, &fin1, 1), fin1));
    assert_false((qfs_quant_amax(x, QFS_DT_F32, N, &fin2, 2), fin2));
    x[70000] = -NAN;
    fin1 = fin2 = true;
    qfs_quant_amax(x, QFS_DT_F32, N, &fin1, 1);
    qfs_quant_amax(x, QFS_DT_F32, N, &fin2, 2);
    assert_false(fin1);
    assert_false(fin2);
    free(x);
}

static void test_amax_16bit(void **state)
{
    (void)state;
    enum { N = 140000 };
    uint16_t *b = malloc(2 * N);
    assert_non_null(b);
    for (size_t i = 0; i < N; i++) b[i] = (i & 1) ? 0xBF80 : 0x3F00;  /* -1, 0.5 */
    b[100000] = 0xC47A;                                                  /* -1000 */
    bool fin = false;
    assert_f32_bits(qfs_quant_amax(b, QFS_DT_BF16, N, &fin, 1), 1000.0f);
    assert_true(fin);
    assert_f32_bits(qfs_quant_amax(b, QFS_DT_BF16, N, &fin, 2), 1000.0f);
    assert_true(fin);
    /* as F16 bits the same buffer: 0xBF80 = -1.875, 0x3F00 = 1.75, 0xC47A = sign 1, exponent
     * 17 - 15 = 2, mantissa 0x07A = 122: -(1 + 122/1024) * 4 = -4.4765625 */
    assert_f32_bits(qfs_quant_amax(b, QFS_DT_F16, N, &fin, 2), 4.4765625f);
    assert_true(fin);
    b[5] = 0x7C00;   /* f16 +Inf; as bf16 it is a finite 2^121 */
    assert_false((qfs_quant_amax(b, QFS_DT_F16, N, &fin, 2), fin));
    assert_f32_bits(qfs_quant_amax(b, QFS_DT_BF16, N, &fin, 2), 0x1p121f);
    assert_true(fin);
    /* all zero (incl. -0) */
    for (size_t i = 0; i < N; i++) b[i] = (i & 1) ? 0x8000 : 0;
    assert_f32_bits(qfs_quant_amax(b, QFS_DT_BF16, N, &fin, 2), 0.0f);
    assert_true(fin);
    free(b);
}

/* ---- output sizes ---- */

static void check_sizes(const char *spec, qfs_dtype dt, uint64_t rows, uint64_t cols,
                        uint64_t w, qfs_dtype wdt, uint64_t s, qfs_dtype sdt, uint64_t z)
{
    qfs_layout l;
    memset(&l, 0xFF, sizeof l);
    assert_int_equal(qfs_layout_for(unit_spec(spec), QFS_FMT_QUARK, dt, rows, cols, &l, NULL),
                     0);
    bool has_zp = l.n_out > 2 && l.out[2].kind == QFS_OUT_ZERO_POINT;
    assert_int_equal(l.out[0].bytes, w);
    assert_int_equal(l.out[0].dtype, wdt);
    assert_int_equal(l.out[1].bytes, s);
    assert_int_equal(l.out[1].dtype, sdt);
    assert_int_equal(has_zp ? l.out[2].bytes : 0, z);
    if (z) assert_int_equal(l.out[2].dtype, QFS_DT_I8);
}

static void test_output_sizes(void **state)
{
    (void)state;
    /* [4, 6] BF16 */
    check_sizes("int8", QFS_DT_BF16, 4, 6, 24, QFS_DT_I8, 4, QFS_DT_F32, 1);
    check_sizes("int8-channel", QFS_DT_BF16, 4, 6, 24, QFS_DT_I8, 8, QFS_DT_BF16, 4);
    check_sizes("w8a8-int8", QFS_DT_BF16, 4, 6, 24, QFS_DT_I8, 8, QFS_DT_BF16, 4);
    check_sizes("fp8", QFS_DT_BF16, 4, 6, 24, QFS_DT_F8_E4M3, 2, QFS_DT_BF16, 0);
    check_sizes("fp8-channel", QFS_DT_BF16, 4, 6, 24, QFS_DT_F8_E4M3, 8, QFS_DT_BF16, 0);
    /* F32 / F16 sources */
    check_sizes("int8", QFS_DT_F16, 3, 5, 15, QFS_DT_I8, 4, QFS_DT_F32, 1);
    check_sizes("int8-channel", QFS_DT_F32, 3, 5, 15, QFS_DT_I8, 12, QFS_DT_F32, 3);
    check_sizes("fp8", QFS_DT_F32, 3, 5, 15, QFS_DT_F8_E4M3, 4, QFS_DT_F32, 0);
    check_sizes("fp8-channel", QFS_DT_F16, 3, 5, 15, QFS_DT_F8_E4M3, 6, QFS_DT_F16, 0);
    /* large: no 32-bit overflow */
    check_sizes("fp8-channel", QFS_DT_BF16, 100000, 100000, 10000000000ull, QFS_DT_F8_E4M3,
                200000, QFS_DT_BF16, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_exact_values),
        cmocka_unit_test(test_bf16_ties_to_even),
        cmocka_unit_test(test_bf16_overflow_and_subnormals),
        cmocka_unit_test(test_f16_normal_values),
        cmocka_unit_test(test_f16_ties_to_even),
        cmocka_unit_test(test_f16_overflow),
        cmocka_unit_test(test_f16_subnormals),
        cmocka_unit_test(test_f16_to_f32),
        cmocka_unit_test(test_e4m3_exact_values),
        cmocka_unit_test(test_e4m3_normal_ties),
        cmocka_unit_test(test_e4m3_subnormal_ties),
        cmocka_unit_test(test_e4m3_to_f32_and_round_trip),
        cmocka_unit_test(test_int8_scale_all_zero),
        cmocka_unit_test(test_int8_scale_values),
        cmocka_unit_test(test_int8_scale_bf16_rounding_ties),
        cmocka_unit_test(test_fp8_scale_all_zero),
        cmocka_unit_test(test_fp8_scale_values),
        cmocka_unit_test(test_int8_row_ties),
        cmocka_unit_test(test_int8_row_amax_clamp),
        cmocka_unit_test(test_int8_row_beyond_range),
        cmocka_unit_test(test_int8_row_all_zero),
        cmocka_unit_test(test_int8_row_multiplies_by_reciprocal),
        cmocka_unit_test(test_int8_row_bf16_f16_sources),
        cmocka_unit_test(test_int8_row_bf16_scale_of_one),
        cmocka_unit_test(test_int8_row_long),
        cmocka_unit_test(test_fp8_row_f32),
        cmocka_unit_test(test_fp8_row_saturation),
        cmocka_unit_test(test_fp8_row_bf16_double_rounding),
        cmocka_unit_test(test_quantize_int8_per_tensor_bf16),
        cmocka_unit_test(test_quantize_int8_per_tensor_scale_rounded),
        cmocka_unit_test(test_quantize_int8_per_tensor_all_zero),
        cmocka_unit_test(test_quantize_int8_channel_bf16),
        cmocka_unit_test(test_quantize_w8a8_int8_f16),
        cmocka_unit_test(test_quantize_fp8_per_tensor_bf16),
        cmocka_unit_test(test_quantize_fp8_channel_f32),
        cmocka_unit_test(test_quantize_fp8_channel_bf16_zero_row),
        cmocka_unit_test(test_quantize_f16_subnormal_scales),
        cmocka_unit_test(test_quantize_scales_only),
        cmocka_unit_test(test_quantize_large_per_tensor_threads),
        cmocka_unit_test(test_per_tensor_all_16bit_inputs),
        cmocka_unit_test(test_per_tensor_fp8_bf16_scales),
        cmocka_unit_test(test_quantize_nan_edom),
        cmocka_unit_test(test_quantize_inf_edom),
        cmocka_unit_test(test_quantize_rejects_non_float),
        cmocka_unit_test(test_amax_threads),
        cmocka_unit_test(test_amax_16bit),
        cmocka_unit_test(test_output_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
