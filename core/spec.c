#include "quarkfs/spec.h"

#include <errno.h>
#include <string.h>

#define GROUP(n, w, g, d) {n, d, w, QFS_PER_GROUP, g, QFS_ACT_NONE}
static const qfs_spec specs[] = {
    {"int8", "int8 per-tensor symmetric weights (Quark Int8PerTensorSpec)",
     QFS_W_INT8, QFS_PER_TENSOR, 0, QFS_ACT_NONE},
    {"int8-channel", "int8 per-channel symmetric weights (Int8PerChannelSpec, ch_axis 0)",
     QFS_W_INT8, QFS_PER_CHANNEL, 0, QFS_ACT_NONE},
    {"w8a8-int8", "int8 per-channel weights + dynamic per-token int8 activations",
     QFS_W_INT8, QFS_PER_CHANNEL, 0, QFS_ACT_DYNAMIC_PER_TOKEN},
    {"fp8", "fp8 e4m3 per-tensor weights + dynamic per-tensor fp8 activations",
     QFS_W_FP8_E4M3, QFS_PER_TENSOR, 0, QFS_ACT_DYNAMIC_PER_TENSOR},
    {"fp8-channel", "fp8 e4m3 per-channel weights + dynamic per-token activations (PTPC)",
     QFS_W_FP8_E4M3, QFS_PER_CHANNEL, 0, QFS_ACT_DYNAMIC_PER_TOKEN},
    {"fp8-block", "fp8 e4m3 weights, one float32 scale per 128x128 block (DeepSeek-V3 layout)",
     QFS_W_FP8_E4M3, QFS_PER_BLOCK, 128, QFS_ACT_DYNAMIC_PER_GROUP},
    GROUP("uint4", QFS_W_UINT4, 128, "uint4 asymmetric per-group weights, group 128 (= uint4-g128)"),
    GROUP("uint4-g32", QFS_W_UINT4, 32, "uint4 asymmetric per-group weights, group 32"),
    GROUP("uint4-g64", QFS_W_UINT4, 64, "uint4 asymmetric per-group weights, group 64"),
    GROUP("uint4-g128", QFS_W_UINT4, 128, "uint4 asymmetric per-group weights, group 128"),
    GROUP("int4", QFS_W_INT4, 128, "int4 symmetric per-group weights, group 128 (= int4-g128)"),
    GROUP("int4-g32", QFS_W_INT4, 32, "int4 symmetric per-group weights, group 32"),
    GROUP("int4-g64", QFS_W_INT4, 64, "int4 symmetric per-group weights, group 64"),
    GROUP("int4-g128", QFS_W_INT4, 128, "int4 symmetric per-group weights, group 128"),
    {"mxfp4", "OCP MXFP4 weights + dynamic MXFP4 activations (e2m1, e8m0 scale per 32)",
     QFS_W_MXFP4, QFS_PER_GROUP, 32, QFS_ACT_DYNAMIC_MX},
};
#define N_SPECS (sizeof specs / sizeof specs[0])

static const char *const format_names[QFS_FMT_COUNT] = {"quark", "awq", "fp8",
                                                        "compressed-tensors"};

const qfs_spec *qfs_spec_all(size_t *n)
{
    *n = N_SPECS;
    return specs;
}

static void join_names(char *buf, size_t len, bool (*keep)(const qfs_spec *, const void *),
                       const void *ctx)
{
    buf[0] = '\0';
    for (size_t i = 0; i < N_SPECS; i++) {
        if (!keep(&specs[i], ctx)) continue;
        if (buf[0]) strncat(buf, ", ", len - strlen(buf) - 1);
        strncat(buf, specs[i].name, len - strlen(buf) - 1);
    }
}

static bool any_spec(const qfs_spec *s, const void *ctx) { (void)s; (void)ctx; return true; }

int qfs_spec_lookup(const char *name, const qfs_spec **out, qfs_error *err)
{
    for (size_t i = 0; i < N_SPECS; i++) {
        if (strcmp(name, specs[i].name) == 0) {
            *out = &specs[i];
            return 0;
        }
    }
    char list[512];
    join_names(list, sizeof list, any_spec, NULL);
    qfs_error_set(err, "unknown spec '%s' (valid specs: %s; see --list-specs)", name, list);
    return -EINVAL;
}

int qfs_format_lookup(const char *name, qfs_format *out, qfs_error *err)
{
    for (int i = 0; i < QFS_FMT_COUNT; i++) {
        if (strcmp(name, format_names[i]) == 0) {
            *out = (qfs_format)i;
            return 0;
        }
    }
    qfs_error_set(err, "unknown format '%s' (valid formats: quark, awq, fp8, compressed-tensors; "
                  "see --list-specs)", name);
    return -EINVAL;
}

const char *qfs_format_name(qfs_format f)
{
    return (unsigned)f < QFS_FMT_COUNT ? format_names[f] : "?";
}

/* The pairs with a defined layout (shared/reference/quark-format.md §3-6, loaders.md §C-D). */
bool qfs_spec_format_ok(const qfs_spec *s, qfs_format f)
{
    bool int4 = s->wtype == QFS_W_UINT4 || s->wtype == QFS_W_INT4;
    switch (f) {
    case QFS_FMT_QUARK:
        return s->gran != QFS_PER_BLOCK;            /* fp8-block is not a Quark scheme */
    case QFS_FMT_AWQ:
        return int4;                                /* AWQ: 4-bit per-group only */
    case QFS_FMT_FP8:                               /* vLLM/transformers "fp8": tensor or block */
        return s->wtype == QFS_W_FP8_E4M3 && s->gran != QFS_PER_CHANNEL;
    case QFS_FMT_COMPRESSED_TENSORS:
        /* int weight-only must be pack-quantized (channel or group, symmetric); fp8 is
         * float-quantized; the asymmetric zero-point packing and MX variants are left out. */
        if (s->wtype == QFS_W_FP8_E4M3) return true;
        if (s->wtype == QFS_W_INT8) return s->gran == QFS_PER_CHANNEL;
        return s->wtype == QFS_W_INT4;
    case QFS_FMT_COUNT:
        break;
    }
    return false;
}

static bool ok_in_format(const qfs_spec *s, const void *ctx)
{
    return qfs_spec_format_ok(s, *(const qfs_format *)ctx);
}

int qfs_spec_check_format(const qfs_spec *s, qfs_format f, qfs_error *err)
{
    if (qfs_spec_format_ok(s, f)) return 0;
    char specs_ok[512], formats_ok[128] = "";
    join_names(specs_ok, sizeof specs_ok, ok_in_format, &f);
    for (int i = 0; i < QFS_FMT_COUNT; i++) {
        if (!qfs_spec_format_ok(s, (qfs_format)i)) continue;
        if (formats_ok[0]) strncat(formats_ok, ", ", sizeof formats_ok - strlen(formats_ok) - 1);
        strncat(formats_ok, format_names[i], sizeof formats_ok - strlen(formats_ok) - 1);
    }
    qfs_error_set(err, "spec '%s' cannot be written in format '%s'; '%s' can be written as: %s; "
                  "format '%s' takes: %s (see --list-specs)", s->name, qfs_format_name(f),
                  s->name, formats_ok, qfs_format_name(f), specs_ok);
    return -EINVAL;
}

/* Loaders known from their source (shared/reference) to accept a pair; the README's
 * compatibility table says which of these were actually run. */
static const char *loaders_for(const qfs_spec *s, qfs_format f)
{
    switch (f) {
    case QFS_FMT_QUARK:
        if (s->act == QFS_ACT_NONE && s->wtype == QFS_W_INT8) return "Quark, transformers+amd-quark";
        if (s->wtype == QFS_W_INT8 || s->wtype == QFS_W_FP8_E4M3 || s->wtype == QFS_W_MXFP4)
            return "Quark, transformers+amd-quark, vLLM (quark)";
        return "Quark, transformers+amd-quark, recent vLLM (quark W4A16)";
    case QFS_FMT_AWQ:
        return s->wtype == QFS_W_UINT4 ? "vLLM (awq, awq_marlin), transformers+gptqmodel"
                                       : "Quark; AutoAWQ kernels misread symmetric int4";
    case QFS_FMT_FP8:
        return s->gran == QFS_PER_BLOCK ? "vLLM (fp8), transformers (FineGrainedFP8)"
                                        : "vLLM (fp8)";
    case QFS_FMT_COMPRESSED_TENSORS:
        return "vLLM (compressed-tensors), transformers+compressed-tensors";
    case QFS_FMT_COUNT:
        break;
    }
    return "";
}

void qfs_spec_print_table(FILE *out)
{
    fprintf(out, "%-12s %-19s %s\n", "SPEC", "FORMAT", "LOADERS KNOWN TO ACCEPT IT");
    for (size_t i = 0; i < N_SPECS; i++) {
        for (int f = 0; f < QFS_FMT_COUNT; f++) {
            if (!qfs_spec_format_ok(&specs[i], (qfs_format)f)) continue;
            fprintf(out, "%-12s %-19s %s\n", specs[i].name, format_names[f],
                    loaders_for(&specs[i], (qfs_format)f));
        }
    }
    fprintf(out, "\n");
    for (size_t i = 0; i < N_SPECS; i++)
        fprintf(out, "%-12s %s\n", specs[i].name, specs[i].description);
}
