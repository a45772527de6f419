/* quarkfs — `quarkfs inspect`: what the view holds, tensor by tensor, and optionally the error
 * each quantized tensor carries. */
#ifndef QUARKFS_FS_INSPECT_H
#define QUARKFS_FS_INSPECT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "progress.h"
#include "quarkfs/model.h"
#include "quarkfs/quant.h"

typedef struct qfs_inspect_options {
    bool json;
    bool error;      /* quantize every tensor and compare its dequantized values with the source */
    int threads;     /* OpenMP threads for that (0 = all) */
    qfs_progress *progress;   /* with .error: started and finished here, updated per tensor */
} qfs_inspect_options;

typedef struct qfs_inspect_totals {
    size_t files, tensors, quantized, failed;
    size_t shape_skipped;          /* weights selected that the spec cannot take (their shape) */
    char first_skip[256];          /* the first of them: "NAME: why" */
    uint64_t src_bytes, view_bytes;
    qfs_quant_error_stats error;   /* summed over the quantized tensors (with .error) */
} qfs_inspect_totals;

/* Prints one row per tensor of every quantized file (name, shape, source dtype -> output
 * dtypes, bytes, quantized or why not, and with .error: relative RMS error, SNR in dB and max
 * abs error) and the totals, as a table or as JSON. 0 or -errno. */
int qfs_inspect_print(const qfs_model *m, const qfs_inspect_options *o, FILE *out);

/* Computes the totals only (for the one-row-per-spec summary of `--spec all`). */
int qfs_inspect_totals_of(const qfs_model *m, const qfs_inspect_options *o,
                          qfs_inspect_totals *out);

/* Relative RMS error and SNR (dB) of error sums. */
double qfs_inspect_rel_rms(const qfs_quant_error_stats *s);
double qfs_inspect_snr_db(const qfs_quant_error_stats *s);

#endif
