#include "quarkfs/quant.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QFS_FP8_FORMULA 1   /* fp8 from bf16 by the table's formula, with AVX2 (see below) */
#endif

/* The kernels are compiled twice on x86-64 GCC (AVX2 and baseline) and picked at load time, so
 * one portable binary runs at AVX2 speed where it can. Numerics are identical: no FMA
 * contraction (-ffp-contract=off), no fast-math. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)   /* TSan instruments the ifunc resolver, run before its init */
#define QFS_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define QFS_KERNEL
#endif
#define QFS_INLINE static inline __attribute__((always_inline))

#define EPS_F32 0x1p-23f               /* torch.finfo(float32).eps, Quark's scale floor */
#define ROUND_MAGIC 12582912.0f        /* 1.5 * 2^23: v + M - M rounds |v| < 2^22 half-even */
#define FP8_MAX 448.0f
#define CHUNK ((size_t)1 << 16)        /* elements per parallel work item */

static int team_size(int threads)
{
    return threads > 0 ? threads : omp_get_max_threads();
}

/* ---- reductions: the largest magnitude as raw bits. For finite values the bit pattern of |x|
 * orders like its value, so an integer max reduction finds amax and, in the same pass, any
 * Inf/NaN (whose bits exceed every finite value's). ---- */

QFS_INLINE uint32_t amax_bits_impl(const void *src, qfs_dtype dt, size_t n)
{
    if (dt == QFS_DT_F32) {
        const uint32_t *u = src;
        uint32_t m = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t a = u[i] & 0x7FFFFFFFu;
            m = a > m ? a : m;
        }
        return m;
    }
    const uint16_t *h = src;
    uint16_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t a = h[i] & 0x7FFFu;
        m = a > m ? a : m;
    }
    return m;
}

QFS_KERNEL static uint32_t amax_bits(const void *src, qfs_dtype dt, size_t n)
{
    switch (dt) {
    case QFS_DT_F32: return amax_bits_impl(src, QFS_DT_F32, n);
    case QFS_DT_BF16: return amax_bits_impl(src, QFS_DT_BF16, n);
    default: return amax_bits_impl(src, QFS_DT_F16, n);
    }
}

static bool amax_bits_finite(uint32_t bits, qfs_dtype dt)
{
    if (dt == QFS_DT_F32) return bits < 0x7F800000u;
    if (dt == QFS_DT_BF16) return bits < 0x7F80u;
    return bits < 0x7C00u;
}

static float amax_bits_value(uint32_t bits, qfs_dtype dt)
{
    if (dt == QFS_DT_F32) return qfs_f32_from_bits(bits);
    if (dt == QFS_DT_BF16) return qfs_bf16_to_f32((uint16_t)bits);
    return qfs_f16_to_f32((uint16_t)bits);
}

static size_t elem_size(qfs_dtype dt) { return qfs_dtype_bits(dt) / 8; }

float qfs_quant_amax(const void *src, qfs_dtype dt, size_t n, bool *all_finite, int threads)
{
    uint32_t m = 0;
    size_t chunks = (n + CHUNK - 1) / CHUNK, es = elem_size(dt);
    #pragma omp parallel for schedule(static) reduction(max : m) num_threads(team_size(threads))
    for (size_t c = 0; c < chunks; c++) {
        size_t lo = c * CHUNK, len = n - lo < CHUNK ? n - lo : CHUNK;
        uint32_t b = amax_bits((const uint8_t *)src + lo * es, dt, len);
        m = b > m ? b : m;
    }
    if (all_finite) *all_finite = amax_bits_finite(m, dt);
    return amax_bits_value(m, dt);
}

float qfs_quant_int8_scale(float amax, qfs_dtype dt)
{
    float s = qfs_round_to(amax / 127.5f, dt);
    return s > EPS_F32 ? s : EPS_F32;
}

float qfs_quant_fp8_scale(float amax, qfs_dtype dt)
{
    float s = qfs_round_to(amax / FP8_MAX, dt);
    return s == 0.0f ? qfs_round_to(EPS_F32, dt) : s;
}

/* ---- element kernels ---- */

/* The int8 clamp bounds, read through a volatile so the compiler cannot see their values. With
 * constants, GCC pushes the narrowing into the arms of both clamps (each arm a constant byte) and
 * emits compare + mask + blend for every element; with opaque bounds it emits vmaxps/vminps. */
static volatile const float int8_bounds[2] = {-128.0f, 127.0f};

/* q = clamp(rne(x * inv), -128, 127). After the clamp, v + 1.5 * 2^23 rounds v half-even to an
 * integer held in the low mantissa bits, two's complement: its low byte is the int8 code. (NaN
 * never reaches here: callers prove the values finite; inv is finite.) */
QFS_INLINE void int8_impl(const void *restrict src, qfs_dtype dt, size_t n, float inv,
                          float lo, float hi, int8_t *restrict q)
{
    for (size_t i = 0; i < n; i++) {
        float v = qfs_load_f32(src, dt, i) * inv;
        v = v > lo ? v : lo;
        v = v < hi ? v : hi;
        q[i] = (int8_t)(uint8_t)qfs_f32_bits(v + ROUND_MAGIC);
    }
}

QFS_KERNEL void qfs_quant_int8_row(const void *src, qfs_dtype dt, size_t n, float scale, int8_t *q)
{
    const float inv = 1.0f / scale;   /* Quark multiplies by the float32 reciprocal */
    const float lo = int8_bounds[0], hi = int8_bounds[1];
    switch (dt) {
    case QFS_DT_F32: int8_impl(src, QFS_DT_F32, n, inv, lo, hi, q); break;
    case QFS_DT_BF16: int8_impl(src, QFS_DT_BF16, n, inv, lo, hi, q); break;
    default: int8_impl(src, QFS_DT_F16, n, inv, lo, hi, q); break;
    }
}

/* The fp8 clamp bound, opaque for the reason given at int8_bounds. */
static volatile const float fp8_bound = FP8_MAX;

/* The e4m3 code of a magnitude a (float32 bits) in [0, 448], without the NaN case of
 * qfs_f32_to_e4m3 and without a select: at or above 2^-6 the subnormal rounding rne(a * 2^9) is
 * never below the normal code (equal in [2^-6, 2^-5), where both have the step 2^-9; finer
 * above); below 2^-6 the normal code is forced to 2^31 - 1. So the smaller of the two is the
 * code. (With a select GCC narrows one arm to bytes and widens it back.) */
QFS_INLINE uint32_t e4m3_magnitude(uint32_t a)
{
    /* subnormal: rounded by a float add (the ulp of 2^14 is 2^-9) */
    int32_t sub = (int32_t)(qfs_f32_bits(qfs_f32_from_bits(a) + 0x1p14f) - (141u << 23));
    /* normal: rebias the exponent, round the mantissa to 3 bits half-even */
    int32_t nrm = (int32_t)((a + ((uint32_t)(7 - 127) << 23) + 0x7FFFFu + ((a >> 20) & 1u)) >> 20);
    nrm |= (int32_t)((uint32_t)((int32_t)(a - (121u << 23)) >> 31) >> 1);
    return (uint32_t)(sub < nrm ? sub : nrm);
}

/* rF16 of a magnitude without branches (qfs_round_to's F16 case has three, which kept the F16
 * fp8 loops scalar and mispredicting): the normal-range rounding on the float32 bits, the
 * subnormal one by a float add, overflow to infinity. */
QFS_INLINE float round_f16_magnitude(float f)
{
    uint32_t a = qfs_f32_bits(f);
    /* normal f16 (>= 2^-14): keep 10 mantissa bits, half-even; 65520 and up round to 2^16 */
    uint32_t nrm = (a + 0xFFFu + ((a >> 13) & 1u)) & ~0x1FFFu;
    nrm = nrm >= 0x47800000u ? 0x7F800000u : nrm;
    /* subnormal f16: a multiple of 2^-24, the ulp of 0.5 (the add rounds, the subtraction is
     * exact) */
    uint32_t sub = qfs_f32_bits((f + 0.5f) - 0.5f);
    return qfs_f32_from_bits(a >= 0x38800000u ? nrm : sub);
}

QFS_INLINE float round_magnitude(float f, qfs_dtype dt)
{
    return dt == QFS_DT_F16 ? round_f16_magnitude(f) : qfs_round_to(f, dt);
}

/* q = e4m3(clamp(rD(fl32(x / scale)), +-448)), computed on |x| with the sign put back last: the
 * division by a positive scale, both roundings and the clamp are symmetric, and the sign of
 * x / scale, zero included, is that of x. round_dt: the dtype x / scale is rounded to (the
 * source dtype for Quark's schemes; F32, i.e. none, for fp8-block). */
QFS_INLINE void fp8_impl(const void *restrict src, qfs_dtype dt, qfs_dtype round_dt, size_t n,
                         float scale, float hi, uint8_t *restrict q)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = qfs_f32_bits(qfs_load_f32(src, dt, i));
        float a = round_magnitude(qfs_f32_from_bits(u & 0x7FFFFFFFu) / scale, round_dt);
        a = a < hi ? a : hi;
        q[i] = (uint8_t)(e4m3_magnitude(qfs_f32_bits(a)) | (u >> 24 & 0x80u));
    }
}

QFS_KERNEL void qfs_quant_fp8_row(const void *src, qfs_dtype dt, size_t n, float scale, uint8_t *q)
{
    const float hi = fp8_bound;
    switch (dt) {
    case QFS_DT_F32: fp8_impl(src, QFS_DT_F32, QFS_DT_F32, n, scale, hi, q); break;
    case QFS_DT_BF16: fp8_impl(src, QFS_DT_BF16, QFS_DT_BF16, n, scale, hi, q); break;
    default: fp8_impl(src, QFS_DT_F16, QFS_DT_F16, n, scale, hi, q); break;
    }
}

/* fp8-block elements: x/scale is not rounded to the source dtype. */
QFS_KERNEL static void fp8_block_row(const void *src, qfs_dtype dt, size_t n, float scale,
                                     uint8_t *q)
{
    const float hi = fp8_bound;
    switch (dt) {
    case QFS_DT_F32: fp8_impl(src, QFS_DT_F32, QFS_DT_F32, n, scale, hi, q); break;
    case QFS_DT_BF16: fp8_impl(src, QFS_DT_BF16, QFS_DT_F32, n, scale, hi, q); break;
    default: fp8_impl(src, QFS_DT_F16, QFS_DT_F32, n, scale, hi, q); break;
    }
}

static float scale_for(const qfs_spec *s, float amax, qfs_dtype dt)
{
    return s->wtype == QFS_W_INT8 ? qfs_quant_int8_scale(amax, dt) : qfs_quant_fp8_scale(amax, dt);
}

static void quantize_span(const qfs_spec *s, const void *src, qfs_dtype dt, size_t n, float scale,
                          void *q)
{
    if (s->wtype == QFS_W_INT8) qfs_quant_int8_row(src, dt, n, scale, q);
    else qfs_quant_fp8_row(src, dt, n, scale, q);
}

/* Names the first non-finite element for the error message (slow path, failure only). */
static int report_nonfinite(const void *src, qfs_dtype dt, uint64_t rows, uint64_t cols,
                            const char *what, qfs_error *err)
{
    for (uint64_t i = 0; i < rows * cols; i++) {
        float v = qfs_load_f32(src, dt, i);
        if (!isfinite(v)) {
            qfs_error_set(err, "%s: value %s at [%llu, %llu]: a tensor with NaN or Inf is not "
                          "quantized (--exclude its module, or --check-finite / -o check_finite "
                          "to leave such tensors unquantized, or fix the checkpoint)", what,
                          isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"),
                          (unsigned long long)(i / cols), (unsigned long long)(i % cols));
            return -EDOM;
        }
    }
    return -EDOM;
}

/* ---- 16-bit sources at one scale: a code is a function of the element's 16 bits alone, so a
 * table of all 65536 codes, made by the element kernel itself, gives the same bytes. ---- */

#define LUT_SIZE 65536u
#define LUT_PART 4096u                /* table entries made per work item */
/* Making the table costs about as much as computing 65536 elements (35 us for fp8 from bf16,
 * plus 15 us to derive and check its formula; 70 us from f16; one core of the bench machine);
 * a look-up costs about 0.27 ns an element, the bf16 formula 0.13 ns. From 2^18 elements on,
 * the table path is the faster one for every case it is used for. */
#define LUT_MIN_N ((size_t)1 << 18)

/* Whether per_tensor_elements looks codes up rather than computing them: for fp8 (0.45 ns an
 * element from bf16, 1 ns from f16, computed) and int8 from f16 (0.4 ns); not for int8 from
 * bf16, which computes faster (0.14 ns) than it looks up. */
static bool lut_pays(const qfs_spec *s, qfs_dtype dt, size_t n)
{
    if (dt == QFS_DT_F32 || n < LUT_MIN_N) return false;
    return s->wtype == QFS_W_FP8_E4M3 || dt == QFS_DT_F16;
}

/* Entries [lo, lo + LUT_PART) of the table: the element kernel run over those bit patterns
 * (NaN/Inf patterns too: their entries are never looked up, the values being proven finite). */
static void lut_part(const qfs_spec *s, qfs_dtype dt, float sc, unsigned lo, uint8_t *t)
{
    uint16_t pat[LUT_PART];
    for (unsigned k = 0; k < LUT_PART; k++) pat[k] = (uint16_t)(lo + k);
    quantize_span(s, pat, dt, LUT_PART, sc, t + lo);
}

/* q[i] = t[x[i]]. Four at a time: GCC merges the four byte stores into one, and does not turn
 * the loop into AVX2 gathers, which are slower here. */
static void lut_lookup(const uint16_t *restrict x, size_t n, const uint8_t *restrict t,
                       uint8_t *restrict q)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint8_t a = t[x[i]], b = t[x[i + 1]], c = t[x[i + 2]], d = t[x[i + 3]];
        q[i] = a;
        q[i + 1] = b;
        q[i + 2] = c;
        q[i + 3] = d;
    }
    for (; i < n; i++) q[i] = t[x[i]];
}

#ifdef QFS_FP8_FORMULA
/* ---- fp8 from bf16 at one scale: the table as a formula, evaluated 32 elements at a time ----
 *
 * The scalar look-ups cost about one cycle an element (two loads and a share of a store each).
 * The table of fp8 codes for a bf16 source has a structure that byte shuffles (vpshufb, which C
 * cannot express) evaluate in a few instructions per 32 elements. With u = bits & 0x7FFF =
 * 128 E + m (E the exponent field, m the 7 mantissa bits), every step x -> code (divide by the
 * scale, round to bf16, clamp, round to e4m3) is monotone and odd, and where x / s is a normal
 * e4m3 value, doubling x adds 8 to the code. So, read from the table:
 *   - binades E < zlim hold only code 0 (zeros and values that round to 0);
 *   - binades E >= en follow code = min(c0 + 8 (E - en) + B[m], 126), B monotone in 0..8, with
 *     B[16 a + b] = base[a] + [b >= t1[a]] + [b >= t2[a]] + [b >= t3[a]] (a = m >> 4);
 *   - the few binades in between (codes below 8, e4m3 subnormals) are looked up in the table.
 * The formula is only used when it reproduces the whole table exactly: it is derived from the
 * table, then evaluated over all 65536 inputs and compared (fp8_formula_make). Otherwise the
 * look-ups are used. */
typedef struct fp8_formula {
    uint8_t base[16], t1[16], t2[16], t3[16];   /* per segment a: B at b = 0, thresholds - 1 */
    uint8_t en, c0, zlim, nspecial;             /* nspecial = en - zlim where en > zlim, else 0 */
} fp8_formula;

/* q[i] for n bf16 elements by the formula; lanes in the in-between binades, and the last n % 32
 * elements, from the table t. */
__attribute__((target("avx2"))) static void fp8_formula_run(const uint16_t *x, size_t n,
                                                            const fp8_formula *f,
                                                            const uint8_t *t, uint8_t *q)
{
    const __m256i base = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)f->base));
    const __m256i t1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)f->t1));
    const __m256i t2 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)f->t2));
    const __m256i t3 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)f->t3));
    const __m256i low = _mm256_set1_epi16(0xFF), k7f = _mm256_set1_epi8(0x7F);
    const __m256i k0f = _mm256_set1_epi8(0x0F), k80 = _mm256_set1_epi8((char)0x80);
    const __m256i k1 = _mm256_set1_epi8(1), k16 = _mm256_set1_epi8(16);
    const __m256i k126 = _mm256_set1_epi8(126), zero = _mm256_setzero_si256();
    const __m256i en = _mm256_set1_epi8((char)f->en), c0 = _mm256_set1_epi8((char)f->c0);
    const __m256i zlim = _mm256_set1_epi8((char)f->zlim);
    const __m256i nspecial = _mm256_set1_epi8((char)f->nspecial);
    size_t i = 0, nv = n & ~(size_t)31;
    for (; i < nv; i += 32) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(x + i));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(x + i + 16));
        /* bytes in the order 0-7, 16-23 | 8-15, 24-31 (undone by the vpermq at the end) */
        __m256i lo = _mm256_packus_epi16(_mm256_and_si256(v0, low), _mm256_and_si256(v1, low));
        __m256i hi = _mm256_packus_epi16(_mm256_srli_epi16(v0, 8), _mm256_srli_epi16(v1, 8));
        __m256i m = _mm256_and_si256(lo, k7f);
        __m256i a = _mm256_and_si256(_mm256_srli_epi16(m, 4), k0f);
        __m256i b = _mm256_and_si256(m, k0f);
        __m256i bm = _mm256_shuffle_epi8(base, a);   /* B[m]: compare results are -1 */
        bm = _mm256_sub_epi8(bm, _mm256_cmpgt_epi8(b, _mm256_shuffle_epi8(t1, a)));
        bm = _mm256_sub_epi8(bm, _mm256_cmpgt_epi8(b, _mm256_shuffle_epi8(t2, a)));
        bm = _mm256_sub_epi8(bm, _mm256_cmpgt_epi8(b, _mm256_shuffle_epi8(t3, a)));
        __m256i h7 = _mm256_and_si256(hi, k7f);
        __m256i e = _mm256_or_si256(_mm256_add_epi8(h7, h7),
                                    _mm256_and_si256(_mm256_srli_epi16(lo, 7), k1));
        __m256i d = _mm256_min_epu8(_mm256_subs_epu8(e, en), k16);   /* 8 d <= 128: no carry */
        __m256i code = _mm256_adds_epu8(_mm256_adds_epu8(_mm256_slli_epi16(d, 3), c0), bm);
        code = _mm256_min_epu8(code, k126);
        __m256i ez = _mm256_subs_epu8(e, zlim);
        __m256i in = _mm256_cmpeq_epi8(_mm256_max_epu8(e, zlim), e);    /* E >= zlim */
        code = _mm256_and_si256(code, in);
        __m256i between = _mm256_andnot_si256(
            _mm256_cmpeq_epi8(_mm256_subs_epu8(nspecial, ez), zero), in);  /* E - zlim < nsp */
        code = _mm256_or_si256(code, _mm256_and_si256(hi, k80));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permute4x64_epi64(code, 0xD8));
        if (!_mm256_testz_si256(between, between))
            for (size_t k = i; k < i + 32; k++) q[k] = t[x[k]];
    }
    for (; i < n; i++) q[i] = t[x[i]];
}

/* Fills f from the fp8 table t of a bf16 source; true if it reproduces t for every finite
 * input. (The inner loops have no early exit, so they vectorize: this costs a few tens of
 * microseconds, like making the table.) */
static bool fp8_formula_make(const uint8_t *t, fp8_formula *f)
{
    unsigned zlim = 0, en = 254;
    for (; zlim < 255; zlim++) {   /* leading binades of code 0 */
        unsigned any = 0;
        for (unsigned m = 0; m < 128; m++) any |= t[128 * zlim + m];
        if (any) break;
    }
    for (; en > 0; en--) {         /* trailing binades where doubling x adds 8 to the code */
        unsigned bad = 0;
        for (unsigned m = 0; m < 128; m++) {
            unsigned next = t[128 * (en - 1) + m] + 8u;
            bad |= t[128 * en + m] != (next < 126 ? next : 126);
        }
        if (bad) break;
    }
    memset(f, 0, sizeof *f);
    f->en = (uint8_t)en;
    f->c0 = t[128 * en];
    f->zlim = (uint8_t)zlim;
    f->nspecial = (uint8_t)(en > zlim ? en - zlim : 0);
    for (unsigned a = 0; a < 8; a++) {   /* B on the 8 segments of 16 mantissas of binade en */
        unsigned prev = t[128 * en + 16 * a], steps = 0;
        uint8_t *th[3] = {f->t1, f->t2, f->t3};
        if (prev < f->c0 || prev - f->c0 > 8) return false;
        f->base[a] = (uint8_t)(prev - f->c0);
        for (unsigned k = 0; k < 3; k++) th[k][a] = 15;   /* b > 15: never */
        for (unsigned b = 1; b < 16; b++) {
            unsigned c = t[128 * en + 16 * a + b];
            if (c == prev + 1 && steps < 3) th[steps++][a] = (uint8_t)(b - 1);
            else if (c != prev) return false;
            prev = c;
        }
    }
    /* the check: the formula over every input equals the table (but for NaN/Inf inputs, which
     * never reach it: the values were proven finite), signs and all */
    uint16_t pat[LUT_PART];
    uint8_t got[LUT_PART];
    for (unsigned lo = 0; lo < LUT_SIZE; lo += LUT_PART) {
        for (unsigned k = 0; k < LUT_PART; k++) pat[k] = (uint16_t)(lo + k);
        fp8_formula_run(pat, LUT_PART, f, t, got);
        if (memcmp(got, t + lo, LUT_PART) == 0) continue;
        for (unsigned k = 0; k < LUT_PART; k++)
            if ((pat[k] & 0x7F80u) != 0x7F80u && got[k] != t[lo + k]) return false;
    }
    return true;
}
#endif

/* n elements of a per-tensor spec at scale sc, with the whole team. */
static void per_tensor_elements(const qfs_spec *s, qfs_dtype dt, const void *src, size_t n,
                                float sc, void *q, int threads)
{
    size_t chunks = (n + CHUNK - 1) / CHUNK, es = elem_size(dt);
    uint8_t *t = lut_pays(s, dt, n) ? aligned_alloc(64, LUT_SIZE) : NULL;
#ifdef QFS_FP8_FORMULA
    bool formula = false;
    fp8_formula f;
    bool try_formula = t && s->wtype == QFS_W_FP8_E4M3 && dt == QFS_DT_BF16 &&
                       __builtin_cpu_supports("avx2");
#endif
    #pragma omp parallel num_threads(team_size(threads))
    {
        if (t) {
            #pragma omp for schedule(static)
            for (unsigned p = 0; p < LUT_SIZE / LUT_PART; p++) lut_part(s, dt, sc, p * LUT_PART, t);
        }   /* the implied barrier: the table is whole before any look-up */
#ifdef QFS_FP8_FORMULA
        if (try_formula) {
            #pragma omp single
            formula = fp8_formula_make(t, &f);
        }   /* and again */
#endif
        #pragma omp for schedule(static)
        for (size_t c = 0; c < chunks; c++) {
            size_t lo = c * CHUNK, len = n - lo < CHUNK ? n - lo : CHUNK;
            const uint16_t *x = (const uint16_t *)src + lo;
            uint8_t *out = (uint8_t *)q + lo;
#ifdef QFS_FP8_FORMULA
            if (formula) fp8_formula_run(x, len, &f, t, out);
            else
#endif
            if (t) lut_lookup(x, len, t, out);
            else quantize_span(s, (const uint8_t *)src + lo * es, dt, len, sc, out);
        }
    }
    free(t);
}

static int quantize_per_tensor(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows,
                               uint64_t cols, void *weight, void *scale, void *zp, int threads,
                               const char *what, qfs_error *err)
{
    size_t n = rows * cols;
    bool finite;
    float amax = qfs_quant_amax(src, dt, n, &finite, threads);
    if (!finite) return report_nonfinite(src, dt, rows, cols, what, err);
    float sc = scale_for(s, amax, dt);
    if (weight) per_tensor_elements(s, dt, src, n, sc, weight, threads);
    if (s->wtype == QFS_W_INT8) {
        memcpy(scale, &sc, 4);                 /* F32: Quark's eps promotion (layout.c) */
        *(int8_t *)zp = 0;
    } else {
        qfs_store_as(scale, dt, 0, sc);
    }
    return 0;
}

static int quantize_per_channel(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows,
                                uint64_t cols, void *weight, void *scale, void *zp, int threads,
                                const char *what, qfs_error *err)
{
    size_t es = elem_size(dt);
    int bad = 0;
    #pragma omp parallel for schedule(dynamic, 16) num_threads(team_size(threads))
    for (uint64_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)src + r * cols * es;
        uint32_t bits = amax_bits(row, dt, cols);
        if (!amax_bits_finite(bits, dt)) {
            #pragma omp atomic write
            bad = 1;
            continue;
        }
        float sc = scale_for(s, amax_bits_value(bits, dt), dt);
        qfs_store_as(scale, dt, r, sc);
        if (weight) quantize_span(s, row, dt, cols, sc, (uint8_t *)weight + r * cols);
    }
    if (bad) return report_nonfinite(src, dt, rows, cols, what, err);
    if (zp) memset(zp, 0, rows);               /* symmetric: zero points are 0 */
    return 0;
}

int qfs_quantize(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows, uint64_t cols,
                 void *weight, void *scale, void *zero_point, int threads, const char *what,
                 qfs_error *err)
{
    if (!qfs_dtype_is_quantizable(dt)) {
        qfs_error_set(err, "%s: dtype %s cannot be quantized", what, qfs_dtype_name(dt));
        return -EINVAL;
    }
    if (s->gran == QFS_PER_TENSOR)
        return quantize_per_tensor(s, dt, src, rows, cols, weight, scale, zero_point, threads,
                                   what, err);
    return quantize_per_channel(s, dt, src, rows, cols, weight, scale, zero_point, threads, what,
                                err);
}

/* ==== Per-group 4-bit integers (Quark Uint4/Int4PerGroupSpec, FORMAT.md §4.5) ==== */

/* q[i] = clamp(rne(fl32(x * inv)) + zp, qmin, qmax) for one group. The zero point is added
 * after rounding, as in Quark's export: freeze() stores the fake-quantized weight, made with
 * PyTorch's rule round(x * inv) + zp, and the export re-quantizes that exactly. Adding zp before
 * rounding differs on ties when zp is odd (x * inv = 2.5, zp 7: 9 here, 10 the other way). */
QFS_INLINE void int4_impl(const void *restrict src, qfs_dtype dt, size_t n, float inv, float zp,
                          int qmin, int qmax, int8_t *restrict q)
{
    int32_t z = (int32_t)zp;
    for (size_t i = 0; i < n; i++) {
        float v = qfs_load_f32(src, dt, i) * inv;
        int32_t r = (int32_t)((v + ROUND_MAGIC) - ROUND_MAGIC) + z;
        r = r < qmin ? qmin : r;
        r = r > qmax ? qmax : r;
        q[i] = (int8_t)r;
    }
}

QFS_KERNEL static void int4_group(const void *src, qfs_dtype dt, size_t n, float inv, float zp,
                                  int qmin, int qmax, int8_t *q)
{
    switch (dt) {
    case QFS_DT_F32: int4_impl(src, QFS_DT_F32, n, inv, zp, qmin, qmax, q); break;
    case QFS_DT_BF16: int4_impl(src, QFS_DT_BF16, n, inv, zp, qmin, qmax, q); break;
    default: int4_impl(src, QFS_DT_F16, n, inv, zp, qmin, qmax, q); break;
    }
}

/* min(min(x), 0) and max(max(x), 0) of finite values. */
static void group_min_max(const void *src, qfs_dtype dt, size_t n, float *mn, float *mx)
{
    float lo = 0.0f, hi = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float v = qfs_load_f32(src, dt, i);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *mn = lo;
    *mx = hi;
}

/* Scale and zero point of one group; false if it holds NaN/Inf. */
static bool int4_group_params(const qfs_spec *s, qfs_dtype dt, const void *x, size_t n, float *sc,
                              int *zp)
{
    uint32_t bits = amax_bits(x, dt, n);
    if (!amax_bits_finite(bits, dt)) return false;
    if (s->wtype == QFS_W_INT4) {
        float s0 = qfs_round_to(amax_bits_value(bits, dt) / 7.5f, dt);
        *sc = s0 > EPS_F32 ? s0 : EPS_F32;
        *zp = 0;
        return true;
    }
    float mn, mx;
    group_min_max(x, dt, n, &mn, &mx);
    float s0 = qfs_round_to(qfs_round_to(mx - mn, dt) / 15.0f, dt);
    float scale = s0 > EPS_F32 ? s0 : EPS_F32;
    float t = qfs_round_to(mn / scale, dt);            /* divided in the scale's dtype */
    int r = -(int)((t + ROUND_MAGIC) - ROUND_MAGIC);  /* qmin - rne(t), qmin = 0 */
    *sc = scale;
    *zp = r < 0 ? 0 : r > 15 ? 15 : r;
    return true;
}

/* AutoAWQ's order: element j of 8 consecutive output channels sits at these bit offsets. */
static const unsigned awq_shift[8] = {0, 16, 4, 20, 8, 24, 12, 28};

static void store_i64(void *dst, size_t i, int64_t v) { memcpy((uint8_t *)dst + 8 * i, &v, 8); }
static void store_u32(void *dst, size_t i, uint32_t v) { memcpy((uint8_t *)dst + 4 * i, &v, 4); }

static int quantize_int4(const qfs_spec *s, qfs_format f, qfs_dtype dt, const void *src,
                         uint64_t rows, uint64_t cols, const qfs_layout *l, void *weight,
                         void *scales, int threads, const char *what, qfs_error *err)
{
    size_t es = elem_size(dt), G = s->group, ng = cols / G;
    int qmin = s->wtype == QFS_W_INT4 ? -8 : 0, qmax = s->wtype == QFS_W_INT4 ? 7 : 15;
    float *sc = malloc(rows * ng * sizeof *sc);
    int8_t *zp = malloc(rows * ng);
    int8_t *q = weight ? malloc(rows * cols) : NULL;
    if (!sc || !zp || (weight && !q)) {
        free(sc); free(zp); free(q);
        qfs_error_set(err, "%s: out of memory", what);
        return -ENOMEM;
    }
    int bad = 0;
    #pragma omp parallel for schedule(dynamic, 16) num_threads(team_size(threads))
    for (uint64_t r = 0; r < rows; r++) {
        for (size_t g = 0; g < ng; g++) {
            const uint8_t *x = (const uint8_t *)src + (r * cols + g * G) * es;
            int z;
            if (!int4_group_params(s, dt, x, G, &sc[r * ng + g], &z)) {
                #pragma omp atomic write
                bad = 1;
                break;
            }
            zp[r * ng + g] = (int8_t)z;
            if (q) int4_group(x, dt, G, 1.0f / sc[r * ng + g], (float)z, qmin, qmax,
                              q + r * cols + g * G);
        }
    }
    int rc = bad ? report_nonfinite(src, dt, rows, cols, what, err) : 0;
    if (rc == 0 && f == QFS_FMT_COMPRESSED_TENSORS) {
        /* pack-quantized: [out, in/8] words, element e at bits 4e, offset binary (+8). */
        uint8_t *sp = (uint8_t *)scales + l->out[1].offset;
        for (size_t i = 0; i < rows * ng; i++) qfs_store_as(sp, dt, i, sc[i]);
        uint8_t *shape = (uint8_t *)scales + l->out[2].offset;
        store_i64(shape, 0, (int64_t)rows);
        store_i64(shape, 1, (int64_t)cols);
        uint64_t words = q ? rows * cols / 8 : 0;
        #pragma omp parallel for schedule(static) num_threads(team_size(threads))
        for (uint64_t w = 0; w < words; w++) {
            uint32_t word = 0;
            for (unsigned e = 0; e < 8; e++) word |= (uint32_t)((q[8 * w + e] + 8) & 0xF) << (4 * e);
            store_u32(weight, w, word);
        }
    } else if (rc == 0) {
        /* Quark / AWQ: transposed, packed along the output dim in AWQ order. */
        uint64_t ow = rows / 8;
        uint8_t *sp = (uint8_t *)scales + l->out[1].offset;
        uint8_t *zpp = (uint8_t *)scales + l->out[2].offset;
        for (size_t g = 0; g < ng; g++) {
            for (uint64_t r = 0; r < rows; r++) qfs_store_as(sp, dt, g * rows + r, sc[r * ng + g]);
            for (uint64_t c = 0; c < ow; c++) {
                uint32_t word = 0;
                for (unsigned j = 0; j < 8; j++)
                    word |= (uint32_t)(zp[(8 * c + j) * ng + g] & 0xF) << awq_shift[j];
                store_u32(zpp, g * ow + c, word);
            }
        }
        uint64_t groups8 = q ? ow : 0;
        #pragma omp parallel for schedule(static) num_threads(team_size(threads))
        for (uint64_t c = 0; c < groups8; c++) {
            const int8_t *rowq[8];
            for (unsigned j = 0; j < 8; j++) rowq[j] = q + (8 * c + j) * cols;
            for (uint64_t i = 0; i < cols; i++) {
                uint32_t word = 0;
                for (unsigned j = 0; j < 8; j++) word |= (uint32_t)(rowq[j][i] & 0xF) << awq_shift[j];
                store_u32(weight, i * ow + c, word);
            }
        }
    }
    free(sc);
    free(zp);
    free(q);
    return rc;
}

/* ==== OCP MXFP4 (FORMAT.md §4.6): e2m1 codes, one e8m0 scale per 32 input elements ==== */

/* Quark's "even" shared exponent of a block: round amax up to a power of two when its mantissa
 * is >= 0.75, then subtract E2M1's emax (2); clamped to [-127, 127]. */
static int mx_exponent(float amax)
{
    uint32_t v = (qfs_f32_bits(amax) + (1u << 21)) & 0xFF800000u;
    if (amax == 0.0f) v = 0x00800000u;                 /* 2^-126 */
    int e = (int)(v >> 23) - 127 - 2;                  /* exponent field 0 reads as <= -127 */
    if ((v >> 23) == 255) e = 127;                     /* rounded up to +inf: log2 is +inf */
    return e < -127 ? -127 : e > 127 ? 127 : e;
}

/* |y| on the E2M1 grid {0, .5, 1, 1.5, 2, 3, 4, 6}, nearest, ties to the even code. */
static inline unsigned e2m1_magnitude(float a)
{
    return (unsigned)(a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
           (a >= 3.5f) + (a > 5.0f);
}

static int quantize_mxfp4(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows,
                          uint64_t cols, const qfs_layout *l, void *weight, void *scales,
                          int threads, const char *what, qfs_error *err)
{
    size_t es = elem_size(dt), B = s->group, nb = cols / B;
    uint8_t *sbytes = (uint8_t *)scales + l->out[1].offset;
    int bad = 0;
    #pragma omp parallel for schedule(dynamic, 16) num_threads(team_size(threads))
    for (uint64_t r = 0; r < rows; r++) {
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *x = (const uint8_t *)src + (r * cols + b * B) * es;
            uint32_t bits = amax_bits(x, dt, B);
            if (!amax_bits_finite(bits, dt)) {
                #pragma omp atomic write
                bad = 1;
                break;
            }
            int e = mx_exponent(amax_bits_value(bits, dt));
            sbytes[r * nb + b] = (uint8_t)((e < -126 ? -126 : e) + 127);
            if (!weight) continue;
            float scale = ldexpf(1.0f, e);
            uint8_t *out = (uint8_t *)weight + (r * cols + b * B) / 2;
            for (size_t i = 0; i < B; i += 2) {
                unsigned code[2];
                for (unsigned k = 0; k < 2; k++) {
                    float y = qfs_load_f32(x, dt, i + k) / scale;   /* exact: a power of two */
                    unsigned m = e2m1_magnitude(fabsf(y));
                    code[k] = m ? m | (y < 0 ? 8u : 0u) : 0;   /* zero is always +0 */
                }
                out[i / 2] = (uint8_t)(code[0] | code[1] << 4);
            }
        }
    }
    return bad ? report_nonfinite(src, dt, rows, cols, what, err) : 0;
}

/* ==== fp8 e4m3 with one float32 scale per 128x128 block (DeepSeek-V3 / FineGrainedFP8) ==== */

static int quantize_fp8_block(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows,
                              uint64_t cols, const qfs_layout *l, void *weight, void *scales,
                              int threads, const char *what, qfs_error *err)
{
    size_t es = elem_size(dt), B = s->group;
    uint64_t nbr = rows / B, nbc = cols / B;
    float *sc = (float *)((uint8_t *)scales + l->out[1].offset);  /* F32, 4-aligned in the part */
    int bad = 0;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(team_size(threads))
    for (uint64_t blk = 0; blk < nbr * nbc; blk++) {
        uint64_t br = blk / nbc, bc = blk % nbc;
        uint32_t bits = 0;
        for (uint64_t r = br * B; r < (br + 1) * B; r++) {
            uint32_t b = amax_bits((const uint8_t *)src + (r * cols + bc * B) * es, dt, B);
            bits = b > bits ? b : bits;
        }
        if (!amax_bits_finite(bits, dt)) {
            #pragma omp atomic write
            bad = 1;
            continue;
        }
        float scale = amax_bits_value(bits, dt) / FP8_MAX;
        if (scale == 0.0f) scale = EPS_F32;
        sc[blk] = scale;
        for (uint64_t r = br * B; weight && r < (br + 1) * B; r++)
            fp8_block_row((const uint8_t *)src + (r * cols + bc * B) * es, dt, B, scale,
                          (uint8_t *)weight + r * cols + bc * B);
    }
    return bad ? report_nonfinite(src, dt, rows, cols, what, err) : 0;
}

/* ==== 8-bit in compressed-tensors' pack-quantized layout ==== */

static int quantize_int8_packed(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows,
                                uint64_t cols, const qfs_layout *l, void *weight, void *scales,
                                int threads, const char *what, qfs_error *err)
{
    int8_t *q = weight ? malloc(rows * cols) : NULL;
    if (weight && !q) {
        qfs_error_set(err, "%s: out of memory", what);
        return -ENOMEM;
    }
    uint8_t *sp = (uint8_t *)scales + l->out[1].offset;
    int rc = qfs_quantize(s, dt, src, rows, cols, q, sp, NULL, threads, what, err);
    uint8_t *shape = (uint8_t *)scales + l->out[2].offset;
    store_i64(shape, 0, (int64_t)rows);
    store_i64(shape, 1, (int64_t)cols);
    uint64_t words = rc == 0 && q ? rows * cols / 4 : 0;
    #pragma omp parallel for schedule(static) num_threads(team_size(threads))
    for (uint64_t w = 0; w < words; w++) {
        uint32_t word = 0;   /* element e at bits 8e, offset binary (+128) */
        for (unsigned e = 0; e < 4; e++) word |= (uint32_t)(uint8_t)(q[4 * w + e] + 128) << (8 * e);
        store_u32(weight, w, word);
    }
    free(q);
    return rc;
}

int qfs_quantize_layout(const qfs_spec *s, qfs_format f, qfs_dtype dt, const void *src,
                        uint64_t rows, uint64_t cols, const qfs_layout *l, void *weight,
                        void *scales, int threads, const char *what, qfs_error *err)
{
    if (!qfs_dtype_is_quantizable(dt)) {
        qfs_error_set(err, "%s: dtype %s cannot be quantized", what, qfs_dtype_name(dt));
        return -EINVAL;
    }
    switch (s->wtype) {
    case QFS_W_UINT4:
    case QFS_W_INT4:
        return quantize_int4(s, f, dt, src, rows, cols, l, weight, scales, threads, what, err);
    case QFS_W_MXFP4:
        return quantize_mxfp4(s, dt, src, rows, cols, l, weight, scales, threads, what, err);
    case QFS_W_FP8_E4M3:
        if (s->gran == QFS_PER_BLOCK)
            return quantize_fp8_block(s, dt, src, rows, cols, l, weight, scales, threads, what,
                                      err);
        break;
    case QFS_W_INT8:
        if (l->out[0].dtype == QFS_DT_I32)
            return quantize_int8_packed(s, dt, src, rows, cols, l, weight, scales, threads,
                                        what, err);
        break;
    }
    /* int8 / fp8 per tensor or channel: the weight is the quantized tensor itself. */
    uint8_t *sc = (uint8_t *)scales + l->out[1].offset;
    uint8_t *zp = l->n_out > 2 && l->out[2].kind == QFS_OUT_ZERO_POINT
                      ? (uint8_t *)scales + l->out[2].offset : NULL;
    return qfs_quantize(s, dt, src, rows, cols, weight, sc, zp, threads, what, err);
}

/* ==== The weight in row bands, once the scales are known (the engine serves big tensors as
 * they are produced) ==== */

bool qfs_quantize_rows_ok(const qfs_spec *s, const qfs_layout *l, uint64_t *align)
{
    bool unpacked = l->out[0].dtype == QFS_DT_I8 || l->out[0].dtype == QFS_DT_F8_E4M3;
    if (s->wtype == QFS_W_FP8_E4M3 && s->gran == QFS_PER_BLOCK) {
        *align = s->group;
        return true;
    }
    *align = 1;
    return unpacked && (s->wtype == QFS_W_INT8 || s->wtype == QFS_W_FP8_E4M3) &&
           (s->gran == QFS_PER_TENSOR || s->gran == QFS_PER_CHANNEL);
}

int qfs_quantize_layout_rows(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows,
                             uint64_t cols, const qfs_layout *l, const void *scales,
                             uint64_t r0, uint64_t r1, void *weight, int threads)
{
    uint64_t align;
    if (!qfs_quantize_rows_ok(s, l, &align) || r0 > r1 || r1 > rows || r0 % align ||
        (r1 % align && r1 != rows))
        return -EINVAL;
    size_t es = elem_size(dt);
    const uint8_t *x = (const uint8_t *)src + r0 * cols * es;
    uint8_t *q = (uint8_t *)weight + r0 * cols;
    const uint8_t *sp = (const uint8_t *)scales + l->out[1].offset;
    if (s->gran == QFS_PER_TENSOR) {
        /* The scale as quantize_per_tensor stored it (exact: it is representable there). */
        float sc;
        if (s->wtype == QFS_W_INT8) memcpy(&sc, sp, 4);
        else sc = qfs_load_f32(sp, dt, 0);
        per_tensor_elements(s, dt, x, (r1 - r0) * cols, sc, q, threads);
        return 0;
    }
    if (s->gran == QFS_PER_CHANNEL) {
        #pragma omp parallel for schedule(dynamic, 16) num_threads(team_size(threads))
        for (uint64_t r = r0; r < r1; r++)
            quantize_span(s, (const uint8_t *)src + r * cols * es, dt, cols,
                          qfs_load_f32(sp, dt, r), (uint8_t *)weight + r * cols);
        return 0;
    }
    size_t B = s->group;   /* fp8-block: F32 scales, [rows / B, cols / B] */
    uint64_t nbc = cols / B, nblk = (r1 - r0) / B * nbc;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(team_size(threads))
    for (uint64_t k = 0; k < nblk; k++) {
        uint64_t br = r0 / B + k / nbc, bc = k % nbc;
        float scale;
        memcpy(&scale, sp + 4 * (br * nbc + bc), 4);
        for (uint64_t r = br * B; r < (br + 1) * B; r++)
            fp8_block_row((const uint8_t *)src + (r * cols + bc * B) * es, dt, B, scale,
                          (uint8_t *)weight + r * cols + bc * B);
    }
    return 0;
}

/* ==== Dequantization (for `inspect --error`): the inverse of each layout, from its bytes ==== */

static float e2m1_value(unsigned code)
{
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    return code & 8 ? -mag[code & 7] : mag[code & 7];
}

static uint32_t load_u32(const void *p, size_t i)
{
    uint32_t v;
    memcpy(&v, (const uint8_t *)p + 4 * i, 4);
    return v;
}

/* Reads scale i of an output tensor stored in dtype dt. */
static float load_scale(const void *p, qfs_dtype dt, size_t i)
{
    return qfs_load_f32(p, dt, i);
}

int qfs_dequantize_layout(const qfs_spec *s, qfs_format f, uint64_t rows,
                          uint64_t cols, const qfs_layout *l, const void *weight,
                          const void *scales, float *out, int threads)
{
    const uint8_t *sc = (const uint8_t *)scales + l->out[1].offset;
    qfs_dtype sdt = l->out[1].dtype;
    const uint8_t *zp = l->n_out > 2 && l->out[2].kind == QFS_OUT_ZERO_POINT
                            ? (const uint8_t *)scales + l->out[2].offset : NULL;
    const uint8_t *w = weight;
    bool ct = f == QFS_FMT_COMPRESSED_TENSORS;
    #pragma omp parallel for schedule(dynamic, 16) num_threads(team_size(threads))
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t i = 0; i < cols; i++) {
            float v;
            switch (s->wtype) {
            case QFS_W_INT8: {
                int q = l->out[0].dtype == QFS_DT_I32
                            ? (int)((load_u32(w, (r * cols + i) / 4) >> (8 * (i % 4))) & 0xFF) - 128
                            : ((const int8_t *)w)[r * cols + i];
                v = (float)q * load_scale(sc, sdt, s->gran == QFS_PER_TENSOR ? 0 : r);
                break;
            }
            case QFS_W_FP8_E4M3: {
                size_t si = s->gran == QFS_PER_TENSOR ? 0
                          : s->gran == QFS_PER_CHANNEL ? r
                          : (r / s->group) * (cols / s->group) + i / s->group;
                v = qfs_e4m3_to_f32(w[r * cols + i]) * load_scale(sc, sdt, si);
                break;
            }
            case QFS_W_UINT4:
            case QFS_W_INT4: {
                uint64_t g = i / s->group, ng = cols / s->group;
                int q, z = 0;
                float scale;
                if (ct) {
                    q = (int)((load_u32(w, (r * cols + i) / 8) >> (4 * (i % 8))) & 0xF) - 8;
                    scale = load_scale(sc, sdt, r * ng + g);
                } else {
                    uint64_t ow = rows / 8;
                    unsigned sh = awq_shift[r % 8];
                    q = (int)((load_u32(w, i * ow + r / 8) >> sh) & 0xF);
                    z = (int)((load_u32(zp, g * ow + r / 8) >> sh) & 0xF);
                    if (s->wtype == QFS_W_INT4) q = q >= 8 ? q - 16 : q;
                    scale = load_scale(sc, sdt, g * rows + r);
                }
                v = (float)(q - z) * scale;
                break;
            }
            case QFS_W_MXFP4:
            default: {
                unsigned byte = w[(r * cols + i) / 2];
                unsigned code = i % 2 ? byte >> 4 : byte & 0xF;
                int e = (int)sc[r * (cols / s->group) + i / s->group] - 127;
                v = e2m1_value(code) * ldexpf(1.0f, e);
                break;
            }
            }
            out[r * cols + i] = v;
        }
    }
    return 0;
}

int qfs_quant_error(const void *src, qfs_dtype dt, const float *deq, size_t n,
                    qfs_quant_error_stats *out, int threads)
{
    double err2 = 0, ref2 = 0, maxabs = 0;
    #pragma omp parallel for schedule(static) reduction(+ : err2, ref2) reduction(max : maxabs) \
        num_threads(team_size(threads))
    for (size_t i = 0; i < n; i++) {
        double x = qfs_load_f32(src, dt, i), d = deq[i] - x;
        err2 += d * d;
        ref2 += x * x;
        double a = d < 0 ? -d : d;
        maxabs = a > maxabs ? a : maxabs;
    }
    out->err2 = err2;
    out->ref2 = ref2;
    out->max_abs = maxabs;
    return 0;
}
