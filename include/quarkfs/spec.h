/* quarkfs — quantization specs (`--spec`) and output formats (`--format`).
 * A spec names one of Quark's calibration-free schemes; it is data, not code: the kernels and
 * the planner read its fields. */
#ifndef QUARKFS_SPEC_H
#define QUARKFS_SPEC_H

#include <stdbool.h>
#include <stdio.h>

#include "quarkfs/error.h"

typedef enum qfs_wtype { QFS_W_INT8, QFS_W_FP8_E4M3 } qfs_wtype;
typedef enum qfs_granularity { QFS_PER_TENSOR, QFS_PER_CHANNEL } qfs_granularity;
/* Dynamic activation quantization written into the config only (no tensors). */
typedef enum qfs_act { QFS_ACT_NONE, QFS_ACT_DYNAMIC_PER_TENSOR, QFS_ACT_DYNAMIC_PER_TOKEN } qfs_act;

typedef enum qfs_format { QFS_FMT_QUARK } qfs_format;

typedef struct qfs_spec {
    const char *name;            /* "int8", "fp8-channel", ... */
    const char *description;     /* one line for --list-specs and --help */
    qfs_wtype wtype;
    qfs_granularity gran;
    qfs_act act;
} qfs_spec;

/* Looks up a spec by name; 0 or -EINVAL with a message that lists the valid names. */
int qfs_spec_lookup(const char *name, const qfs_spec **out, qfs_error *err);
/* Looks up a format by name; 0 or -EINVAL with a message that lists the valid names. */
int qfs_format_lookup(const char *name, qfs_format *out, qfs_error *err);
/* The name of a format ("quark"). */
const char *qfs_format_name(qfs_format f);
/* 0 if the spec can be written in the format, else -EINVAL naming the pairs that can. */
int qfs_spec_check_format(const qfs_spec *s, qfs_format f, qfs_error *err);
/* All specs, in the order --list-specs prints them; *n receives the count. */
const qfs_spec *qfs_spec_all(size_t *n);
/* Prints the spec × format table with the loaders known to accept each pair. */
void qfs_spec_print_table(FILE *out);

#endif
