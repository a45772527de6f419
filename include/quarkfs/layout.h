/* quarkfs — the output tensors of one quantized weight for a spec and format: names, dtypes,
 * shapes and where their bytes live. A job computes two parts (see engine.h): the weight part
 * holds the main quantized tensor, the scales part everything else (scales, zero points,
 * compressed-tensors' weight_shape), back to back in the order listed. */
#ifndef QUARKFS_LAYOUT_H
#define QUARKFS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "quarkfs/dtype.h"
#include "quarkfs/error.h"
#include "quarkfs/spec.h"

typedef enum qfs_part { QFS_PART_WEIGHT, QFS_PART_SCALES } qfs_part;

typedef enum qfs_out_kind {
    QFS_OUT_WEIGHT, QFS_OUT_SCALE, QFS_OUT_ZERO_POINT, QFS_OUT_SHAPE,
} qfs_out_kind;

typedef struct qfs_out_tensor {
    const char *suffix;       /* appended to the module name: ".weight", ".qzeros", ... */
    qfs_out_kind kind;
    qfs_dtype dtype;
    unsigned ndim;            /* 0 (a scalar), 1 or 2 */
    uint64_t shape[2];
    uint64_t bytes;
    qfs_part part;
    uint64_t offset;          /* within its part */
} qfs_out_tensor;

#define QFS_LAYOUT_MAX_OUT 4

typedef struct qfs_layout {
    qfs_out_tensor out[QFS_LAYOUT_MAX_OUT];
    unsigned n_out;
    uint64_t weight_bytes, scales_bytes;   /* the sizes of the two parts */
} qfs_layout;

/* The layout of a [rows, cols] weight of dtype dt under spec s in format f (a pair accepted by
 * qfs_spec_format_ok). 0, or -EDOM when the spec cannot take this shape, with the reason in
 * err if non-NULL (e.g. "in=172 is not a multiple of the group size 128": the shape only, the
 * caller names the file and tensor). */
int qfs_layout_for(const qfs_spec *s, qfs_format f, qfs_dtype dt, uint64_t rows, uint64_t cols,
                   qfs_layout *out, qfs_error *err);

#endif
