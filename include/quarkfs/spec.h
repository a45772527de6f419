/* quarkfs — quantization specs (`--spec`) and output formats (`--format`).
 * A spec names one of Quark's calibration-free schemes; it is data, not code: the kernels and
 * the layout read its fields. */
#ifndef QUARKFS_SPEC_H
#define QUARKFS_SPEC_H

#include <stdbool.h>
#include <stdio.h>

#include "quarkfs/error.h"

typedef enum qfs_wtype {
    QFS_W_INT8, QFS_W_FP8_E4M3,
    QFS_W_UINT4,        /* asymmetric, 0..15 with a zero point */
    QFS_W_INT4,         /* symmetric, -8..7 */
    QFS_W_MXFP4,        /* OCP MX: e2m1 elements, e8m0 scale per 32 */
} qfs_wtype;
typedef enum qfs_granularity {
    QFS_PER_TENSOR, QFS_PER_CHANNEL,
    QFS_PER_GROUP,      /* `group` consecutive input elements of a row */
    QFS_PER_BLOCK,      /* `group` x `group` blocks (fp8-block: 128 x 128) */
} qfs_granularity;
/* Dynamic activation quantization written into the config only (no tensors). */
typedef enum qfs_act {
    QFS_ACT_NONE, QFS_ACT_DYNAMIC_PER_TENSOR, QFS_ACT_DYNAMIC_PER_TOKEN,
    QFS_ACT_DYNAMIC_MX,        /* MXFP4 inputs (group 32) */
    QFS_ACT_DYNAMIC_PER_GROUP, /* fp8-block inputs: groups of 128 */
} qfs_act;

typedef enum qfs_format {
    QFS_FMT_QUARK, QFS_FMT_AWQ, QFS_FMT_FP8, QFS_FMT_COMPRESSED_TENSORS,
    QFS_FMT_COUNT
} qfs_format;

typedef struct qfs_spec {
    const char *name;            /* "int8", "uint4-g32", ... */
    const char *description;     /* one line for --list-specs */
    qfs_wtype wtype;
    qfs_granularity gran;
    unsigned group;              /* group size (per-group, MX) or block edge (per-block) */
    qfs_act act;
} qfs_spec;

/* Looks up a spec by name; 0 or -EINVAL with a message that lists the valid names. */
int qfs_spec_lookup(const char *name, const qfs_spec **out, qfs_error *err);
/* Looks up a format by name; 0 or -EINVAL with a message that lists the valid names. */
int qfs_format_lookup(const char *name, qfs_format *out, qfs_error *err);
/* The name of a format ("quark", "compressed-tensors"). */
const char *qfs_format_name(qfs_format f);
/* True if the spec can be written in the format. */
bool qfs_spec_format_ok(const qfs_spec *s, qfs_format f);
/* 0 if the spec can be written in the format, else -EINVAL naming the pairs that can. */
int qfs_spec_check_format(const qfs_spec *s, qfs_format f, qfs_error *err);
/* All specs, in the order --list-specs prints them; *n receives the count. */
const qfs_spec *qfs_spec_all(size_t *n);
/* Prints the spec x format matrix with what the real loaders did with each pair when run on it. */
void qfs_spec_print_table(FILE *out);

/* One per-layer rule (`--layer GLOB=SPEC`): modules whose name matches glob (fnmatch, no
 * flags, as --exclude) are quantized with spec instead of the view's spec. Quark's
 * layer_quant_config entry "glob": layer config of spec. */
typedef struct qfs_layer_rule {
    const char *glob;
    const qfs_spec *spec;
    bool from_preset;       /* a preset's rule may match nothing; a user's rule must match */
} qfs_layer_rule;

/* Parses "GLOB=SPEC" (split at the last '='). *glob receives a malloc'd copy of GLOB. 0, or
 * -EINVAL naming the argument (no '=', an empty glob, an unknown spec), or -ENOMEM. */
int qfs_layer_rule_parse(const char *arg, char **glob, const qfs_spec **spec, qfs_error *err);

/* 0 if every rule can be written in format f: per-layer specs are
 * Quark's layer_quant_config, so only the quark format takes them, and each rule's spec must
 * be a quark spec; else -EINVAL naming the rule, the format and why. */
int qfs_layer_rules_check_format(qfs_format f, const qfs_layer_rule *r, size_t n,
                                 qfs_error *err);

#define QFS_PRESET_MAX_RULES 8
/* Layer rules a view takes at most (qfs_select_layer_ambiguous checks this many). */
#define QFS_MAX_LAYER_RULES 64

/* A named set of layer rules (`--preset NAME`), written into out[0..*n) (at most
 * QFS_PRESET_MAX_RULES, globs in static storage, from_preset set); the caller appends them
 * after the user's rules, so a user's --layer overrides them. 0, or -EINVAL listing the
 * presets. */
int qfs_preset_lookup(const char *name, qfs_layer_rule *out, size_t *n, qfs_error *err);
/* The presets, for --help and --list-specs: name, and one line saying what it keeps. */
void qfs_preset_print(FILE *out);

#endif
