/* quarkfs — quantization kernels, bit-exact with AMD Quark's real_quantize arithmetic
 * (doc/FORMAT.md §4). Loops are written to vectorize; parallel
 * loops use OpenMP with the team size given by `threads` (0 = OpenMP's default). */
#ifndef QUARKFS_QUANT_H
#define QUARKFS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quarkfs/dtype.h"
#include "quarkfs/error.h"
#include "quarkfs/layout.h"
#include "quarkfs/spec.h"

/* Bump when any kernel's output changes: the disk cache's entry keys and the keys of
 * materialized view files (viewfile.h) change with it. */
#define QFS_QUANTIZER_VERSION "2"

/* Largest |x| of n elements as float32 (exact), and whether all are finite. Per-tensor. */
float qfs_quant_amax(const void *src, qfs_dtype dt, size_t n, bool *all_finite, int threads);

/* Integer symmetric scale from amax (divisor 127.5 for int8): max(rD(amax/127.5), 2^-23).
 * The value is representable in dt. */
float qfs_quant_int8_scale(float amax, qfs_dtype dt);
/* FP8 e4m3 scale from amax: rD(amax/448), or rD(2^-23) if that is 0. */
float qfs_quant_fp8_scale(float amax, qfs_dtype dt);

/* q[i] = clamp(rne(fl32(x[i] * fl32(1/scale))), -128, 127) for n elements. */
void qfs_quant_int8_row(const void *src, qfs_dtype dt, size_t n, float scale, int8_t *q);
/* q[i] = e4m3(clamp(rD(fl32(x[i] / scale)), +-448)) for n elements. */
void qfs_quant_fp8_row(const void *src, qfs_dtype dt, size_t n, float scale, uint8_t *q);

/* Quantizes a [rows, cols] tensor of dtype dt under spec s into the three output buffers
 * (sizes from qfs_layout_for in format quark; zero_point may be NULL when the spec has none; weight may
 * be NULL to compute only the scales and zero points, which needs one pass less).
 * -EDOM if a value is NaN or Inf (err names the first such element); `what` names the tensor
 * in messages. */
int qfs_quantize(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows, uint64_t cols,
                 void *weight, void *scale, void *zero_point, int threads, const char *what,
                 qfs_error *err);

/* Quantizes a [rows, cols] weight into the parts of layout l (qfs_layout_for of the same spec,
 * format, dtype and shape): `weight` (weight_bytes; NULL to compute only the scales part) and
 * `scales` (scales_bytes). Covers every spec and format; -EDOM for NaN/Inf as qfs_quantize. */
int qfs_quantize_layout(const qfs_spec *s, qfs_format f, qfs_dtype dt, const void *src,
                        uint64_t rows, uint64_t cols, const qfs_layout *l, void *weight,
                        void *scales, int threads, const char *what, qfs_error *err);

/* Whether layout l's weight can be produced in row bands by qfs_quantize_layout_rows (int8 and
 * fp8 with an unpacked weight: per tensor, per channel, per 128x128 block); *align receives
 * the number of rows a band boundary must be a multiple of. */
bool qfs_quantize_rows_ok(const qfs_spec *s, const qfs_layout *l, uint64_t *align);
/* Quantizes rows [r0, r1) of the weight (bytes [r0 * cols, r1 * cols) of `weight`, the whole
 * part) from the whole source tensor, with the scales part that qfs_quantize_layout computed
 * before (weight NULL, same spec, format, dtype, shape). The result equals those bytes of
 * qfs_quantize_layout's weight. -EINVAL if not qfs_quantize_rows_ok or a bound is misaligned
 * (r1 may be `rows`). */
int qfs_quantize_layout_rows(const qfs_spec *s, qfs_dtype dt, const void *src, uint64_t rows,
                             uint64_t cols, const qfs_layout *l, const void *scales,
                             uint64_t r0, uint64_t r1, void *weight, int threads);

/* The inverse of qfs_quantize_layout: the float32 value each quantized element stands for,
 * into out[rows * cols] (row-major [rows, cols], like the source). */
int qfs_dequantize_layout(const qfs_spec *s, qfs_format f, uint64_t rows,
                          uint64_t cols, const qfs_layout *l, const void *weight,
                          const void *scales, float *out, int threads);

/* Error sums of a dequantized tensor against its source: sum of squared errors, sum of squared
 * source values, largest absolute error. Relative RMS = sqrt(err2 / ref2); SNR = -20 log10 of
 * it. Sums of several tensors add up to the summary of a whole model. */
typedef struct qfs_quant_error_stats { double err2, ref2, max_abs; } qfs_quant_error_stats;
int qfs_quant_error(const void *src, qfs_dtype dt, const float *deq, size_t n,
                    qfs_quant_error_stats *out, int threads);

#endif
