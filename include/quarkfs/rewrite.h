/* quarkfs — the generated JSON files of the view: config.json with a quantization_config, and
 * model.safetensors.index.json mapping the new tensor names. */
#ifndef QUARKFS_REWRITE_H
#define QUARKFS_REWRITE_H

#include <stddef.h>
#include <jansson.h>

#include "quarkfs/error.h"
#include "quarkfs/jsonstream.h"
#include "quarkfs/plan.h"
#include "quarkfs/spec.h"

/* The quantization_config object for a spec/format; `exclude` lists unquantized Linear-like
 * module names (sorted, unique). New reference, or NULL on allocation failure. */
json_t *qfs_quant_config_build(const qfs_spec *spec, qfs_format format,
                               const char *const *exclude, size_t n_exclude);
/* The same with per-layer rules: in the quark format each becomes a layer_quant_config entry
 * (glob: that spec's layer config); the other formats take none (qfs_layer_rules_check_format
 * refuses them first) and ignore them. */
json_t *qfs_quant_config_build_layers(const qfs_spec *spec, qfs_format format,
                                      const qfs_layer_rule *layers, size_t n_layers,
                                      const char *const *exclude, size_t n_exclude);

/* Inserts "quantization_config" into the source config text, keeping every other byte of the
 * source. -EINVAL if the text is not a JSON object or already has a quantization_config. The
 * result is malloc'd into *out / *out_len. */
int qfs_config_rewrite(const char *text, size_t len, const json_t *quant_config,
                       const char *path, char **out, size_t *out_len, qfs_error *err);

/* Looks up the plan of a quantized view file by its name in the index (NULL if that file is
 * not a quantized file of the view). A name must always get the same answer: the rewrite asks
 * once per run of members naming one file. */
typedef const qfs_plan *(*qfs_index_plan_fn)(void *ctx, const char *file);

/* The source index's weight_map: tensor names[i] is in files[i], in the document's order (a
 * name given twice keeps its first place and its last file, as jansson reads it). */
typedef struct qfs_index_map {
    const char **names, **files;
    size_t n;
    char *strings;   /* what they point into: copies made by the streaming parser, ... */
    json_t *tree;    /* ... or the weight_map object of the tree parser */
} qfs_index_map;

/* Frees a map; safe on a zeroed one. */
void qfs_index_map_free(qfs_index_map *m);

/* Rewrites an index: weight_map covers every output tensor of the referenced quantized files,
 * total_size is the sum of their data bytes, other metadata kept; printed like transformers
 * (indent 2, sorted keys, trailing newline). Result malloc'd into *out / *out_len. When
 * source_map is not NULL it receives, on success, the source's weight_map (free it with
 * qfs_index_map_free), so a caller can check it without parsing again. The weight_map of a
 * big index is read by the streaming parser when it is the common case (jsonstream.h: string
 * values, no name twice), the rest of the document by jansson. */
int qfs_index_rewrite(const char *text, size_t len, qfs_index_plan_fn plan_for, void *ctx,
                      const char *path, char **out, size_t *out_len, qfs_index_map *source_map,
                      qfs_error *err);

/* qfs_index_rewrite with one parser or both (jsonstream.h); QFS_JSON_STREAM alone returns
 * -EAGAIN, nothing set, for what it leaves to the tree parser. */
int qfs_index_rewrite_with(qfs_json_parser parser, const char *text, size_t len,
                           qfs_index_plan_fn plan_for, void *ctx, const char *path, char **out,
                           size_t *out_len, qfs_index_map *source_map, qfs_error *err);

#endif
