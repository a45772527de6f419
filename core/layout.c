#include "quarkfs/layout.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void add(qfs_layout *l, const char *suffix, qfs_out_kind kind, qfs_dtype dt,
                unsigned ndim, uint64_t d0, uint64_t d1)
{
    qfs_out_tensor *t = &l->out[l->n_out++];
    uint64_t n = ndim == 0 ? 1 : ndim == 1 ? d0 : d0 * d1;
    t->suffix = suffix;
    t->kind = kind;
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->bytes = n * qfs_dtype_bits(dt) / 8;
    t->part = kind == QFS_OUT_WEIGHT ? QFS_PART_WEIGHT : QFS_PART_SCALES;
    if (t->part == QFS_PART_WEIGHT) {
        t->offset = l->weight_bytes;
        l->weight_bytes += t->bytes;
    } else {
        t->offset = l->scales_bytes;
        l->scales_bytes += t->bytes;
    }
}

static int refuse(qfs_error *err, const char *fmt, unsigned long long a, unsigned long long b)
{
    if (err) snprintf(err->msg, sizeof err->msg, fmt, a, b);
    return -EDOM;
}

/* Quark and AWQ store 4-bit weights transposed and packed along the output dim (AWQ "GEMM"). */
static int layout_awq_like(const qfs_spec *s, qfs_format f, qfs_dtype dt, uint64_t o, uint64_t i,
                           qfs_layout *l)
{
    uint64_t g = i / s->group;
    bool awq = f == QFS_FMT_AWQ;
    add(l, awq ? ".qweight" : ".weight", QFS_OUT_WEIGHT, QFS_DT_I32, 2, i, o / 8);
    add(l, awq ? ".scales" : ".weight_scale", QFS_OUT_SCALE, dt, 2, g, o);
    add(l, awq ? ".qzeros" : ".weight_zero_point", QFS_OUT_ZERO_POINT, QFS_DT_I32, 2, g, o / 8);
    return 0;
}

int qfs_layout_for(const qfs_spec *s, qfs_format f, qfs_dtype dt, uint64_t o, uint64_t i,
                   qfs_layout *l, qfs_error *err)
{
    memset(l, 0, sizeof *l);
    bool ct = f == QFS_FMT_COMPRESSED_TENSORS;
    switch (s->wtype) {
    case QFS_W_INT8:
        if (ct && s->act == QFS_ACT_NONE) {          /* pack-quantized W8A16 */
            if (i % 4) return refuse(err, "in=%llu is not a multiple of 4 (int32 "
                                     "packing)%.0llu", i, 0);
            add(l, ".weight_packed", QFS_OUT_WEIGHT, QFS_DT_I32, 2, o, i / 4);
            add(l, ".weight_scale", QFS_OUT_SCALE, dt, 2, o, 1);
            add(l, ".weight_shape", QFS_OUT_SHAPE, QFS_DT_I64, 1, 2, 0);
            return 0;
        }
        add(l, ".weight", QFS_OUT_WEIGHT, QFS_DT_I8, 2, o, i);
        if (ct) {                                    /* int-quantized W8A8 */
            add(l, ".weight_scale", QFS_OUT_SCALE, dt, 2, o, 1);
        } else if (s->gran == QFS_PER_TENSOR) {
            add(l, ".weight_scale", QFS_OUT_SCALE, QFS_DT_F32, 0, 0, 0); /* Quark's eps promotion */
            add(l, ".weight_zero_point", QFS_OUT_ZERO_POINT, QFS_DT_I8, 0, 0, 0);
        } else {
            add(l, ".weight_scale", QFS_OUT_SCALE, dt, 1, o, 0);
            add(l, ".weight_zero_point", QFS_OUT_ZERO_POINT, QFS_DT_I8, 1, o, 0);
        }
        return 0;
    case QFS_W_FP8_E4M3:
        if (s->gran == QFS_PER_BLOCK) {
            if (o % s->group || i % s->group)
                return refuse(err, "[%llu, %llu] is not made of whole 128x128 blocks",
                              o, i);
            add(l, ".weight", QFS_OUT_WEIGHT, QFS_DT_F8_E4M3, 2, o, i);
            add(l, ct ? ".weight_scale" : ".weight_scale_inv", QFS_OUT_SCALE, QFS_DT_F32, 2,
                o / s->group, i / s->group);
            return 0;
        }
        add(l, ".weight", QFS_OUT_WEIGHT, QFS_DT_F8_E4M3, 2, o, i);
        if (s->gran == QFS_PER_TENSOR)
            add(l, ".weight_scale", QFS_OUT_SCALE, dt, ct ? 1 : 0, 1, 0);
        else if (ct)
            add(l, ".weight_scale", QFS_OUT_SCALE, dt, 2, o, 1);
        else
            add(l, ".weight_scale", QFS_OUT_SCALE, dt, 1, o, 0);
        return 0;
    case QFS_W_UINT4:
    case QFS_W_INT4:
        if (i % s->group)
            return refuse(err, "in=%llu is not a multiple of the group size %llu", i,
                          s->group);
        if (ct) {                                    /* pack-quantized W4A16, plain order */
            add(l, ".weight_packed", QFS_OUT_WEIGHT, QFS_DT_I32, 2, o, i / 8);
            add(l, ".weight_scale", QFS_OUT_SCALE, dt, 2, o, i / s->group);
            add(l, ".weight_shape", QFS_OUT_SHAPE, QFS_DT_I64, 1, 2, 0);
            return 0;
        }
        if (o % 8) return refuse(err, "out=%llu is not a multiple of 8 (int32 packing "
                                 "along the output dim)%.0llu", o, 0);
        return layout_awq_like(s, f, dt, o, i, l);
    case QFS_W_MXFP4:
        if (i % s->group)
            return refuse(err, "in=%llu is not a multiple of the MX block %llu", i,
                          s->group);
        add(l, ".weight", QFS_OUT_WEIGHT, QFS_DT_U8, 2, o, i / 2);
        add(l, ".weight_scale", QFS_OUT_SCALE, QFS_DT_U8, 2, o, i / s->group);
        return 0;
    }
    return refuse(err, "unsupported spec%.0llu%.0llu", 0, 0);
}
