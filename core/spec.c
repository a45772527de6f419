#include "quarkfs/spec.h"

#include <errno.h>
#include <string.h>

static const qfs_spec specs[] = {
    {"int8", "int8 per-tensor symmetric weights (Quark Int8PerTensorSpec, the seed example)",
     QFS_W_INT8, QFS_PER_TENSOR, QFS_ACT_NONE},
    {"int8-channel", "int8 per-channel symmetric weights (Int8PerChannelSpec, ch_axis 0)",
     QFS_W_INT8, QFS_PER_CHANNEL, QFS_ACT_NONE},
    {"w8a8-int8", "int8 per-channel weights + dynamic per-token int8 activations",
     QFS_W_INT8, QFS_PER_CHANNEL, QFS_ACT_DYNAMIC_PER_TOKEN},
    {"fp8", "fp8 e4m3 per-tensor weights + dynamic per-tensor fp8 activations",
     QFS_W_FP8_E4M3, QFS_PER_TENSOR, QFS_ACT_DYNAMIC_PER_TENSOR},
    {"fp8-channel", "fp8 e4m3 per-channel weights + dynamic per-token fp8 activations (PTPC)",
     QFS_W_FP8_E4M3, QFS_PER_CHANNEL, QFS_ACT_DYNAMIC_PER_TOKEN},
};
#define N_SPECS (sizeof specs / sizeof specs[0])

/* Loaders known (from their source, see shared/reference) to accept each spec in the quark
 * format; what was actually run is in the README's compatibility table. */
static const char *const quark_loaders[N_SPECS] = {
    "Quark importer, transformers+amd-quark",
    "Quark importer, transformers+amd-quark",
    "Quark importer, transformers+amd-quark, vLLM quark (W8A8 int8)",
    "Quark importer, transformers+amd-quark, vLLM quark (W8A8 fp8)",
    "Quark importer, transformers+amd-quark, vLLM quark (W8A8 fp8)",
};

static const char *const format_names[] = {"quark"};

const qfs_spec *qfs_spec_all(size_t *n)
{
    *n = N_SPECS;
    return specs;
}

int qfs_spec_lookup(const char *name, const qfs_spec **out, qfs_error *err)
{
    for (size_t i = 0; i < N_SPECS; i++) {
        if (strcmp(name, specs[i].name) == 0) {
            *out = &specs[i];
            return 0;
        }
    }
    char list[256] = "";
    for (size_t i = 0; i < N_SPECS; i++) {
        if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, specs[i].name, sizeof list - strlen(list) - 1);
    }
    qfs_error_set(err, "unknown spec '%s' (valid specs: %s; see --list-specs)", name, list);
    return -EINVAL;
}

int qfs_format_lookup(const char *name, qfs_format *out, qfs_error *err)
{
    for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++) {
        if (strcmp(name, format_names[i]) == 0) {
            *out = (qfs_format)i;
            return 0;
        }
    }
    qfs_error_set(err, "unknown format '%s' (valid formats: quark; see --list-specs)", name);
    return -EINVAL;
}

const char *qfs_format_name(qfs_format f)
{
    return (size_t)f < sizeof format_names / sizeof format_names[0] ? format_names[f] : "?";
}

int qfs_spec_check_format(const qfs_spec *s, qfs_format f, qfs_error *err)
{
    if (f == QFS_FMT_QUARK) return 0;
    qfs_error_set(err, "spec '%s' cannot be written in format '%s' (it can: %s/quark)", s->name,
                  qfs_format_name(f), s->name);
    return -EINVAL;
}

void qfs_spec_print_table(FILE *out)
{
    fprintf(out, "%-14s %-8s %-66s %s\n", "SPEC", "FORMAT", "WHAT", "LOADERS KNOWN TO ACCEPT IT");
    for (size_t i = 0; i < N_SPECS; i++)
        fprintf(out, "%-14s %-8s %-66s %s\n", specs[i].name, "quark", specs[i].description,
                quark_loaders[i]);
}
