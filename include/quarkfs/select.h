/* quarkfs — which tensors are quantized (doc/FORMAT.md §3). */
#ifndef QUARKFS_SELECT_H
#define QUARKFS_SELECT_H

#include <stdbool.h>
#include <stddef.h>

#include "quarkfs/safetensors.h"
#include "quarkfs/spec.h"

/* User globs (fnmatch on the module name, i.e. the tensor name without ".weight"). */
typedef struct qfs_select_rules {
    const char *const *excludes;
    size_t n_excludes;
    const char *const *includes;   /* if n_includes > 0, only matching modules are candidates */
    size_t n_includes;
    const qfs_layer_rule *layers;  /* --layer / --preset, in order: which spec a module gets */
    size_t n_layers;
} qfs_select_rules;

typedef enum qfs_select_result {
    QFS_SELECT_QUANTIZE = 0,
    QFS_SKIP_NOT_WEIGHT,       /* name does not end in ".weight" (biases, buffers) */
    QFS_SKIP_NOT_2D,
    QFS_SKIP_NOT_FLOAT,        /* dtype other than BF16/F16/F32 */
    QFS_SKIP_EMBEDDING,
    QFS_SKIP_NORM,
    QFS_SKIP_LM_HEAD,          /* excluded by default, as in Quark's templates, unless a
                                * user's --layer rule names the module exactly */
    QFS_SKIP_USER_EXCLUDE,     /* --exclude */
    QFS_SKIP_NOT_INCLUDED,     /* --include given and not matched */
    QFS_SKIP_EMPTY,            /* a dimension is 0 */
    QFS_SKIP_NAME_CLASH,       /* an output name already exists in the source file */
    QFS_SKIP_NONFINITE,        /* NaN or Inf in the data (found by --check-finite) */
    QFS_SKIP_SHAPE,            /* the spec cannot take this shape (qfs_layout_for says why) */
} qfs_select_result;

/* Decides for one source tensor by name, shape and dtype (the name-clash rule needs the whole
 * file and is applied by the planner). */
qfs_select_result qfs_select_tensor(const qfs_st_tensor *t, const qfs_spec *spec,
                                    const qfs_select_rules *rules);

/* A short human reason ("norm", "excluded by --exclude", ...); "quantized" for QUANTIZE. */
const char *qfs_select_reason(qfs_select_result r);

/* True if an unquantized tensor with this result is a Linear-like weight (a 2-D float
 * ".weight" that is neither embedding nor norm): such modules are named in the config's
 * exclusion list so loaders leave them unquantized. */
bool qfs_select_is_linear_like(qfs_select_result r);

/* The spec of a candidate module: the spec of the first layer rule that matches it, a rule whose
 * glob equals the name exactly coming first (Quark's quantizer looks exact names up before
 * trying globs), else `spec`. *rule receives the rule's index, or SIZE_MAX. rules may be NULL. */
const qfs_spec *qfs_select_layer_spec(const char *module, const qfs_spec *spec,
                                      const qfs_select_rules *rules, size_t *rule);

/* True if loaders could give module another spec than qfs_select_layer_spec: the config's
 * layer_quant_config is written with sorted keys, and Quark's exporter and importer and vLLM
 * take the first matching key in that order (some without looking exact names up first).
 * *a and *b receive the two rules that disagree. */
bool qfs_select_layer_ambiguous(const char *module, const qfs_select_rules *rules, size_t *a,
                                size_t *b);

/* The length of a tensor name's module name: the name without a ".weight" suffix. */
size_t qfs_select_module_len(const char *tensor_name);
/* The module name of a tensor name (without a ".weight" suffix), malloc'd; NULL if out of
 * memory. Names have no length limit. */
char *qfs_select_module_dup(const char *tensor_name);


#endif
