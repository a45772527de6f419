/* quarkfs — the plan of one quantized safetensors file: its exact output layout, header bytes
 * and size, computed from the source header alone (no tensor data is read). */
#ifndef QUARKFS_PLAN_H
#define QUARKFS_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "quarkfs/layout.h"
#include "quarkfs/quant.h"
#include "quarkfs/safetensors.h"
#include "quarkfs/select.h"
#include "quarkfs/spec.h"

typedef enum qfs_role {
    QFS_ROLE_PASSTHROUGH,   /* source bytes copied unchanged */
    QFS_ROLE_WEIGHT,        /* the quantized weight of a job */
    QFS_ROLE_SCALE,
    QFS_ROLE_ZERO_POINT,
    QFS_ROLE_SHAPE,         /* compressed-tensors' weight_shape */
} qfs_role;

/* One tensor of the output file. Kept small, since a mount may plan millions of them: the shape
 * lives out of line, and indexes are 32 bits (qfs_plan_build refuses a file whose counts do not
 * fit). */
typedef struct qfs_plan_tensor {
    char *name;                 /* in qfs_plan.names */
    const uint64_t *shape;      /* ndim dims: in qfs_plan.dims, or in the job's layout */
    uint64_t offset, size;      /* within the output data section */
    uint64_t job_offset;        /* quantized roles: offset in the job's part (the weight buffer,
                                   or the scales buffer: scale, then zero point) */
    uint32_t src;               /* index of the source tensor (in qfs_st_file order) */
    uint32_t job;               /* quantized roles: index into qfs_plan.jobs */
    qfs_dtype dtype;
    uint8_t role;               /* a qfs_role */
    uint8_t ndim;
} qfs_plan_tensor;

/* One quantized source tensor: computed as a unit (see engine.h for its two parts). */
typedef struct qfs_plan_job {
    size_t src;
    const qfs_spec *spec;       /* the view's spec, or the one a layer rule gives this module */
    uint64_t rows, cols;
    const qfs_layout *layout;   /* its output tensors and the sizes of its two parts, in
                                   qfs_plan.layouts (shared by the jobs of one spec, dtype and
                                   shape) */
} qfs_plan_job;

typedef struct qfs_plan {
    qfs_plan_tensor *tensors;   /* output tensors in file order (offset ascending) */
    char *names;                /* one block holding every tensors[i].name */
    size_t n_tensors;
    qfs_plan_job *jobs;         /* in the file order of their weights */
    size_t n_jobs;
    qfs_layout *layouts;        /* the jobs' layouts, each once */
    size_t n_layouts;
    uint64_t *dims;             /* the shapes of the unquantized tensors, one after another */
    qfs_select_result *decisions; /* one per source tensor */
    size_t *job_of;             /* one per source tensor: its job, SIZE_MAX when not quantized */
    uint8_t *header;            /* 8-byte length + JSON + padding: the first header_size bytes */
    uint64_t header_size;
    uint64_t file_size;
} qfs_plan;

/* What to plan: the spec and format, the user's selection rules (may be NULL; their layer rules
 * give modules other specs, each checked against its shapes as the view's spec is), and optionally
 * which source tensors hold NaN/Inf (one flag per source tensor, found by --check-finite; NULL
 * when the data was not scanned): those stay unquantized. */
typedef struct qfs_plan_options {
    const qfs_spec *spec;
    qfs_format format;
    const qfs_select_rules *rules;
    const bool *nonfinite;
} qfs_plan_options;

/* Builds the plan of a parsed source file. 0 or negative errno with err set. */
int qfs_plan_build(const qfs_st_file *src, const qfs_plan_options *opts, const char *path,
                   qfs_plan *out, qfs_error *err);

/* Frees a plan; safe on a zeroed struct. */
void qfs_plan_free(qfs_plan *p);

/* Index of the output tensor whose bytes contain data offset `off` (off < data size); tensors
 * of size 0 are never returned. */
size_t qfs_plan_tensor_at(const qfs_plan *p, uint64_t off);

#endif
