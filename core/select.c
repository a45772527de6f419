#include "quarkfs/select.h"

#include <strings.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

size_t qfs_select_module_len(const char *tensor_name)
{
    size_t n = strlen(tensor_name);
    return n >= 7 && strcmp(tensor_name + n - 7, ".weight") == 0 ? n - 7 : n;
}

char *qfs_select_module_dup(const char *tensor_name)
{
    return strndup(tensor_name, qfs_select_module_len(tensor_name));
}

static bool has_glob_magic(const char *s) { return strpbrk(s, "*?[") != NULL; }

static bool contains_ci(const char *s, const char *needle)
{
    size_t nl = strlen(needle);
    for (; *s; s++)
        if (strncasecmp(s, needle, nl) == 0) return true;
    return false;
}

/* True if any dot-separated component of module satisfies pred(component, len). */
static bool any_component(const char *module, bool (*pred)(const char *, size_t))
{
    const char *p = module;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (pred(p, len)) return true;
        if (!dot) return false;
        p = dot + 1;
    }
}

static bool comp_eq(const char *c, size_t len, const char *word)
{
    return strlen(word) == len && strncmp(c, word, len) == 0;
}

static bool is_embedding_component(const char *c, size_t len)
{
    static const char *const words[] = {"wte", "wpe", "word_embeddings", "position_embeddings",
                                        "shared"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (comp_eq(c, len, words[i])) return true;
    return false;
}

static bool is_ln_component(const char *c, size_t len)
{
    return comp_eq(c, len, "ln") || (len >= 3 && strncmp(c, "ln_", 3) == 0);
}

static bool is_lm_head(const char *module)
{
    size_t n = strlen(module);
    return strcmp(module, "lm_head") == 0 ||
           (n > 8 && strcmp(module + n - 8, ".lm_head") == 0);
}

static bool matches_any(const char *module, const char *const *globs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(globs[i], module, 0) == 0) return true;
    return false;
}

static qfs_select_result select_module(const char *module, const qfs_st_tensor *t,
                                       const qfs_select_rules *rules);

/* True if a user's --layer rule names module exactly (no wildcard): the one way to quantize an
 * lm_head, which globs (even "*") never reach. */
static bool names_exactly(const qfs_select_rules *rules, const char *module)
{
    for (size_t k = 0; rules && k < rules->n_layers; k++)
        if (!rules->layers[k].from_preset && strcmp(rules->layers[k].glob, module) == 0 &&
            !has_glob_magic(module))
            return true;
    return false;
}

qfs_select_result qfs_select_tensor(const qfs_st_tensor *t, const qfs_spec *spec,
                                    const qfs_select_rules *rules)
{
    (void)spec; /* every spec of this release takes any 2-D shape */
    size_t n = strlen(t->name);
    if (n < 7 || strcmp(t->name + n - 7, ".weight") != 0) return QFS_SKIP_NOT_WEIGHT;
    if (t->ndim != 2) return QFS_SKIP_NOT_2D;
    if (!qfs_dtype_is_quantizable(t->dtype)) return QFS_SKIP_NOT_FLOAT;
    char *module = qfs_select_module_dup(t->name);   /* names have no length limit */
    if (!module) return QFS_SKIP_NOT_WEIGHT;          /* out of memory: leave it alone */
    qfs_select_result r = select_module(module, t, rules);
    free(module);
    return r;
}

static qfs_select_result select_module(const char *module, const qfs_st_tensor *t,
                                       const qfs_select_rules *rules)
{
    if (strstr(module, "embed") || any_component(module, is_embedding_component))
        return QFS_SKIP_EMBEDDING;
    if (contains_ci(module, "norm") || any_component(module, is_ln_component))
        return QFS_SKIP_NORM;
    if (is_lm_head(module) && !names_exactly(rules, module)) return QFS_SKIP_LM_HEAD;
    if (rules && matches_any(module, rules->excludes, rules->n_excludes))
        return QFS_SKIP_USER_EXCLUDE;
    if (rules && rules->n_includes && !matches_any(module, rules->includes, rules->n_includes))
        return QFS_SKIP_NOT_INCLUDED;
    if (t->shape[0] == 0 || t->shape[1] == 0) return QFS_SKIP_EMPTY;
    return QFS_SELECT_QUANTIZE;
}

/* The first rule matching module among rules visited in order[0..n) (NULL: as given; exact
 * names first when exact_first), or SIZE_MAX. */
static size_t first_match(const char *module, const qfs_layer_rule *r, const size_t *order,
                          size_t n, bool exact_first)
{
    if (exact_first)
        for (size_t k = 0; k < n; k++) {
            size_t i = order ? order[k] : k;
            if (!has_glob_magic(r[i].glob) && strcmp(r[i].glob, module) == 0) return i;
        }
    for (size_t k = 0; k < n; k++) {
        size_t i = order ? order[k] : k;
        if (fnmatch(r[i].glob, module, 0) == 0) return i;
    }
    return SIZE_MAX;
}

const qfs_spec *qfs_select_layer_spec(const char *module, const qfs_spec *spec,
                                      const qfs_select_rules *rules, size_t *rule)
{
    *rule = SIZE_MAX;
    if (!rules || !rules->n_layers) return spec;
    *rule = first_match(module, rules->layers, NULL, rules->n_layers, !has_glob_magic(module));
    return *rule == SIZE_MAX ? spec : rules->layers[*rule].spec;
}

bool qfs_select_layer_ambiguous(const char *module, const qfs_select_rules *rules, size_t *a,
                                size_t *b)
{
    size_t n = rules ? rules->n_layers : 0;
    if (n < 2) return false;
    const qfs_layer_rule *r = rules->layers;
    size_t sorted[QFS_MAX_LAYER_RULES];
    if (n > QFS_MAX_LAYER_RULES) n = QFS_MAX_LAYER_RULES;   /* the CLI takes no more */
    for (size_t k = 0; k < n; k++) sorted[k] = k;
    for (size_t i = 1; i < n; i++)   /* insertion sort by glob, bytewise (json sort_keys) */
        for (size_t j = i; j > 0 && strcmp(r[sorted[j - 1]].glob, r[sorted[j]].glob) > 0; j--) {
            size_t t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    size_t w[3] = {first_match(module, r, NULL, n, true), first_match(module, r, sorted, n, true),
                   first_match(module, r, sorted, n, false)};
    for (int i = 1; i < 3; i++) {
        const qfs_spec *s0 = w[0] == SIZE_MAX ? NULL : r[w[0]].spec;
        const qfs_spec *si = w[i] == SIZE_MAX ? NULL : r[w[i]].spec;
        if (s0 != si) {
            *a = w[0];
            *b = w[i];
            return true;
        }
    }
    return false;
}

const char *qfs_select_reason(qfs_select_result r)
{
    switch (r) {
    case QFS_SELECT_QUANTIZE: return "quantized";
    case QFS_SKIP_NOT_WEIGHT: return "not a .weight";
    case QFS_SKIP_NOT_2D: return "not 2-D";
    case QFS_SKIP_NOT_FLOAT: return "not BF16/F16/F32";
    case QFS_SKIP_EMBEDDING: return "embedding";
    case QFS_SKIP_NORM: return "norm";
    case QFS_SKIP_LM_HEAD: return "lm_head (excluded by default)";
    case QFS_SKIP_USER_EXCLUDE: return "excluded by --exclude";
    case QFS_SKIP_NOT_INCLUDED: return "not matched by --include";
    case QFS_SKIP_EMPTY: return "empty tensor";
    case QFS_SKIP_NAME_CLASH: return "output name already in the file";
    case QFS_SKIP_NONFINITE: return "NaN or Inf in the weights";
    case QFS_SKIP_SHAPE: return "shape not supported by the spec";
    }
    return "?";
}

bool qfs_select_is_linear_like(qfs_select_result r)
{
    return r == QFS_SKIP_LM_HEAD || r == QFS_SKIP_USER_EXCLUDE || r == QFS_SKIP_NOT_INCLUDED ||
           r == QFS_SKIP_EMPTY || r == QFS_SKIP_NAME_CLASH || r == QFS_SKIP_NONFINITE ||
           r == QFS_SKIP_SHAPE;
}
