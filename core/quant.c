#include "quarkfs/quant.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* The kernels are compiled twice on x86-64 GCC (AVX2 and baseline) and picked at load time, so
 * one portable binary runs at AVX2 speed where it can. Numerics are identical: no FMA
 * contraction (-ffp-contract=off), no fast-math. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
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

void qfs_quant_output_sizes(const qfs_spec *s, qfs_dtype dt, uint64_t rows, uint64_t cols,
                            qfs_quant_sizes *out)
{
    uint64_t dsize = qfs_dtype_bits(dt) / 8;
    memset(out, 0, sizeof *out);
    out->weight = rows * cols;
    if (s->wtype == QFS_W_INT8) {
        out->weight_dtype = QFS_DT_I8;
        out->zero_point_dtype = QFS_DT_I8;
        if (s->gran == QFS_PER_TENSOR) {
            out->scale_dtype = QFS_DT_F32;   /* Quark's eps promotion: int per-tensor -> F32 */
            out->scale = 4;
            out->zero_point = 1;
        } else {
            out->scale_dtype = dt;
            out->scale = rows * dsize;
            out->zero_point = rows;
        }
    } else {
        out->weight_dtype = QFS_DT_F8_E4M3;
        out->scale_dtype = dt;
        out->scale = s->gran == QFS_PER_TENSOR ? dsize : rows * dsize;
        out->zero_point = 0;
    }
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

QFS_INLINE void int8_impl(const void *restrict src, qfs_dtype dt, size_t n, float inv,
                          int8_t *restrict q)
{
    for (size_t i = 0; i < n; i++) {
        float v = qfs_load_f32(src, dt, i) * inv;
        v = v < -128.0f ? -128.0f : v;
        v = v > 127.0f ? 127.0f : v;
        v = (v + ROUND_MAGIC) - ROUND_MAGIC;
        q[i] = (int8_t)(int32_t)v;
    }
}

QFS_KERNEL void qfs_quant_int8_row(const void *src, qfs_dtype dt, size_t n, float scale, int8_t *q)
{
    const float inv = 1.0f / scale;   /* Quark multiplies by the float32 reciprocal */
    switch (dt) {
    case QFS_DT_F32: int8_impl(src, QFS_DT_F32, n, inv, q); break;
    case QFS_DT_BF16: int8_impl(src, QFS_DT_BF16, n, inv, q); break;
    default: int8_impl(src, QFS_DT_F16, n, inv, q); break;
    }
}

QFS_INLINE void fp8_impl(const void *restrict src, qfs_dtype dt, size_t n, float scale,
                         uint8_t *restrict q)
{
    for (size_t i = 0; i < n; i++) {
        float y = qfs_round_to(qfs_load_f32(src, dt, i) / scale, dt);
        y = y < -FP8_MAX ? -FP8_MAX : y;
        y = y > FP8_MAX ? FP8_MAX : y;
        q[i] = qfs_f32_to_e4m3(y);
    }
}

QFS_KERNEL void qfs_quant_fp8_row(const void *src, qfs_dtype dt, size_t n, float scale, uint8_t *q)
{
    switch (dt) {
    case QFS_DT_F32: fp8_impl(src, QFS_DT_F32, n, scale, q); break;
    case QFS_DT_BF16: fp8_impl(src, QFS_DT_BF16, n, scale, q); break;
    default: fp8_impl(src, QFS_DT_F16, n, scale, q); break;
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
                          "quantized (exclude it with --exclude, or fix the checkpoint)", what,
                          isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"),
                          (unsigned long long)(i / cols), (unsigned long long)(i % cols));
            return -EDOM;
        }
    }
    return -EDOM;
}

static int quantize_per_tensor(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows,
                               uint64_t cols, void *weight, void *scale, void *zp, int threads,
                               const char *what, qfs_error *err)
{
    size_t n = rows * cols, es = elem_size(dt);
    bool finite;
    float amax = qfs_quant_amax(src, dt, n, &finite, threads);
    if (!finite) return report_nonfinite(src, dt, rows, cols, what, err);
    float sc = scale_for(s, amax, dt);
    size_t chunks = weight ? (n + CHUNK - 1) / CHUNK : 0;
    #pragma omp parallel for schedule(static) num_threads(team_size(threads))
    for (size_t c = 0; c < chunks; c++) {
        size_t lo = c * CHUNK, len = n - lo < CHUNK ? n - lo : CHUNK;
        quantize_span(s, (const uint8_t *)src + lo * es, dt, len, sc, (uint8_t *)weight + lo);
    }
    if (s->wtype == QFS_W_INT8) {
        memcpy(scale, &sc, 4);                 /* F32, see qfs_quant_output_sizes */
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
