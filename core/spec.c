#include "quarkfs/spec.h"

#include <errno.h>
#include <stdlib.h>
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

/* The pairs with a defined layout (doc/FORMAT.md §5.5). */
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

/* What the real loaders did with each pair, from runs (tests/loaders on a CPU in CI, and
 * doc/loaders-gpu.md on an H200): first the loaders that read it right, then those that refuse or
 * misread it. uint4 and int4 are uint4-g128 and int4-g128 under another name (the same bytes). */
static const struct {
    const char *spec, *loaders;
    qfs_format format;
} pair_loaders[] = {
    {"int8", "Quark, tf+amd-quark | vLLM 0.26: no quark scheme for weight-only int8", QFS_FMT_QUARK},
    {"int8-channel", "Quark, tf+amd-quark | vLLM: not run (no quark W8A16 scheme)", QFS_FMT_QUARK},
    {"int8-channel", "tf+compressed-tensors, vLLM 0.26 (W8A16)", QFS_FMT_COMPRESSED_TENSORS},
    {"w8a8-int8", "Quark, tf+amd-quark, vLLM 0.26", QFS_FMT_QUARK},
    {"w8a8-int8", "tf+compressed-tensors, vLLM 0.26", QFS_FMT_COMPRESSED_TENSORS},
    {"fp8", "Quark, tf+amd-quark | vLLM 0.26 fails (its dynamic per-tensor input)", QFS_FMT_QUARK},
    {"fp8", "vLLM 0.26, Quark | tf FineGrainedFP8 misreads it (wants weight_scale_inv)",
     QFS_FMT_FP8},
    {"fp8", "tf+compressed-tensors, vLLM 0.26", QFS_FMT_COMPRESSED_TENSORS},
    {"fp8-channel", "Quark, tf+amd-quark, vLLM 0.26", QFS_FMT_QUARK},
    {"fp8-channel", "tf+compressed-tensors, vLLM 0.26", QFS_FMT_COMPRESSED_TENSORS},
    {"fp8-block", "vLLM 0.26, tf FineGrainedFP8 (dequantize=True)", QFS_FMT_FP8},
    {"fp8-block", "tf+compressed-tensors, vLLM 0.26", QFS_FMT_COMPRESSED_TENSORS},
    {"uint4", "Quark, tf+amd-quark | vLLM 0.26: no quark W4A16 scheme", QFS_FMT_QUARK},
    {"uint4-g32", "Quark, tf+amd-quark | vLLM 0.26: no quark W4A16 scheme", QFS_FMT_QUARK},
    {"uint4-g64", "Quark, tf+amd-quark | vLLM 0.26: no quark W4A16 scheme", QFS_FMT_QUARK},
    {"uint4-g128", "Quark, tf+amd-quark | vLLM 0.26: no quark W4A16 scheme", QFS_FMT_QUARK},
    {"uint4", "Quark, tf+gptqmodel, vLLM 0.26 (awq_marlin)", QFS_FMT_AWQ},
    {"uint4-g32", "Quark, tf+gptqmodel, vLLM 0.26 (awq_marlin)", QFS_FMT_AWQ},
    {"uint4-g64", "Quark, tf+gptqmodel | vLLM: not run (g32, g128 run)", QFS_FMT_AWQ},
    {"uint4-g128", "Quark, tf+gptqmodel, vLLM 0.26 (awq_marlin)", QFS_FMT_AWQ},
    {"int4", "Quark, tf+amd-quark | vLLM 0.26: no quark W4A16 scheme", QFS_FMT_QUARK},
    {"int4-g32", "Quark, tf+amd-quark | vLLM 0.26: no quark W4A16 scheme", QFS_FMT_QUARK},
    {"int4-g64", "Quark, tf+amd-quark | vLLM 0.26: no quark W4A16 scheme", QFS_FMT_QUARK},
    {"int4-g128", "Quark, tf+amd-quark | vLLM 0.26: no quark W4A16 scheme", QFS_FMT_QUARK},
    {"int4", "Quark | tf+gptqmodel misreads it (unsigned nibbles); vLLM: not run", QFS_FMT_AWQ},
    {"int4-g32", "Quark | tf+gptqmodel misreads it (unsigned nibbles); vLLM: not run", QFS_FMT_AWQ},
    {"int4-g64", "Quark | tf+gptqmodel misreads it (unsigned nibbles); vLLM: not run", QFS_FMT_AWQ},
    {"int4-g128", "Quark | tf+gptqmodel misreads it (unsigned nibbles); vLLM: not run", QFS_FMT_AWQ},
    {"int4", "tf+compressed-tensors, vLLM 0.26 (WNA16)", QFS_FMT_COMPRESSED_TENSORS},
    {"int4-g32", "tf+compressed-tensors, vLLM 0.26 (WNA16)", QFS_FMT_COMPRESSED_TENSORS},
    {"int4-g64", "tf+compressed-tensors | vLLM: not run (g32, g128 run)", QFS_FMT_COMPRESSED_TENSORS},
    {"int4-g128", "tf+compressed-tensors, vLLM 0.26 (WNA16)", QFS_FMT_COMPRESSED_TENSORS},
    {"mxfp4", "Quark, tf+amd-quark, vLLM 0.26 (with amd-quark installed)", QFS_FMT_QUARK},
};

static const char *loaders_for(const qfs_spec *s, qfs_format f)
{
    for (size_t i = 0; i < sizeof pair_loaders / sizeof pair_loaders[0]; i++)
        if (pair_loaders[i].format == f && strcmp(pair_loaders[i].spec, s->name) == 0)
            return pair_loaders[i].loaders;
    return "no loader run yet";
}

void qfs_spec_print_table(FILE *out)
{
    fprintf(out, "%-12s %-19s %s\n", "SPEC", "FORMAT", "LOADERS RUN ON IT: READ RIGHT | REFUSED OR MISREAD");
    for (size_t i = 0; i < N_SPECS; i++) {
        for (int f = 0; f < QFS_FMT_COUNT; f++) {
            if (!qfs_spec_format_ok(&specs[i], (qfs_format)f)) continue;
            fprintf(out, "%-12s %-19s %s\n", specs[i].name, format_names[f],
                    loaders_for(&specs[i], (qfs_format)f));
        }
    }
    fprintf(out, "\nLoaders (runs of 2026-12-04; README \"Compatibility\"): Quark = amd-quark 0.13's "
                 "importer;\ntf = transformers 5.17 (+ amd-quark 0.13, compressed-tensors, gptqmodel "
                 "7.6.0) on a CPU and an H200;\nvLLM 0.26.0 on an H200.\n\n");
    for (size_t i = 0; i < N_SPECS; i++)
        fprintf(out, "%-12s %s\n", specs[i].name, specs[i].description);
    fprintf(out, "\nPresets (--preset NAME: --layer rules, format quark):\n");
    qfs_preset_print(out);
}

int qfs_layer_rule_parse(const char *arg, char **glob, const qfs_spec **spec, qfs_error *err)
{
    const char *eq = strrchr(arg, '=');
    if (!eq) {
        qfs_error_set(err, "--layer '%s': expected GLOB=SPEC, e.g. "
                      "'model.layers.*.mlp.down_proj=int8-channel'", arg);
        return -EINVAL;
    }
    if (eq == arg) {
        qfs_error_set(err, "--layer '%s': an empty glob", arg);
        return -EINVAL;
    }
    qfs_error e2 = {{0}};
    if (qfs_spec_lookup(eq + 1, spec, &e2)) {
        qfs_error_set(err, "--layer '%s': %s", arg, e2.msg);
        return -EINVAL;
    }
    *glob = strndup(arg, (size_t)(eq - arg));
    return *glob ? 0 : -ENOMEM;
}

int qfs_layer_rules_check_format(qfs_format f, const qfs_layer_rule *r, size_t n,
                                 qfs_error *err)
{
    const char *why = NULL;
    switch (f) {
    case QFS_FMT_QUARK: break;
    case QFS_FMT_AWQ:
        why = "its config holds one bits/group_size/zero_point for the whole model"; break;
    case QFS_FMT_FP8:
        why = "its config holds one scheme for the whole model (activation_scheme, "
              "weight_block_size)"; break;
    default:
        why = "quarkfs writes a single config group in it (one scheme for every Linear)";
    }
    if (n && why) {
        qfs_error_set(err, "%s '%s=%s': format %s cannot express per-layer specs: %s; "
                      "per-layer specs are written in --format quark (Quark's "
                      "layer_quant_config)", r[0].from_preset ? "preset rule" : "--layer",
                      r[0].glob, r[0].spec->name, format_names[f], why);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (!qfs_spec_format_ok(r[i].spec, f)) {
            qfs_error_set(err, "%s '%s=%s': spec %s cannot be written in format quark (not a "
                          "Quark scheme)", r[i].from_preset ? "preset rule" : "--layer",
                          r[i].glob, r[i].spec->name, r[i].spec->name);
            return -EINVAL;
        }
    return 0;
}

/* Presets: the layers kept at 8 bits were chosen from measurements on stories260K (README,
 * "Per-layer precision"): q/k/v at int8-channel took int4-g32 from PPL 4.5023 to 4.3721 (BF16
 * 4.3940), o_proj or whole first/last layers changed it by less than 0.01. One rule covers the
 * modules vLLM fuses into one layer (q/k/v), which must share a scheme there. */
static const struct {
    const char *name, *what;
    struct { const char *glob, *spec; } rules[QFS_PRESET_MAX_RULES];
} presets[] = {
    {"keep-sensitive", "keeps the attention inputs (q_proj, k_proj, v_proj) at int8-channel",
     {{"*.self_attn.[qkv]_proj", "int8-channel"}}},
};

int qfs_preset_lookup(const char *name, qfs_layer_rule *out, size_t *n, qfs_error *err)
{
    for (size_t p = 0; p < sizeof presets / sizeof presets[0]; p++) {
        if (strcmp(presets[p].name, name) != 0) continue;
        size_t k = 0;
        for (; k < QFS_PRESET_MAX_RULES && presets[p].rules[k].glob; k++) {
            out[k].glob = presets[p].rules[k].glob;
            out[k].from_preset = true;
            if (qfs_spec_lookup(presets[p].rules[k].spec, &out[k].spec, err)) return -EINVAL;
        }
        *n = k;
        return 0;
    }
    char list[256] = "";
    for (size_t p = 0; p < sizeof presets / sizeof presets[0]; p++) {
        if (p) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, presets[p].name, sizeof list - strlen(list) - 1);
    }
    qfs_error_set(err, "unknown preset '%s' (valid presets: %s)", name, list);
    return -EINVAL;
}

void qfs_preset_print(FILE *out)
{
    for (size_t p = 0; p < sizeof presets / sizeof presets[0]; p++)
        fprintf(out, "%-16s %s\n", presets[p].name, presets[p].what);
}
