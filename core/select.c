#include "quarkfs/select.h"

#include <strings.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

char *qfs_select_module_dup(const char *tensor_name)
{
    size_t n = strlen(tensor_name);
    if (n >= 7 && strcmp(tensor_name + n - 7, ".weight") == 0) n -= 7;
    return strndup(tensor_name, n);
}

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
    if (is_lm_head(module)) return QFS_SKIP_LM_HEAD;
    if (rules && matches_any(module, rules->excludes, rules->n_excludes))
        return QFS_SKIP_USER_EXCLUDE;
    if (rules && rules->n_includes && !matches_any(module, rules->includes, rules->n_includes))
        return QFS_SKIP_NOT_INCLUDED;
    if (t->shape[0] == 0 || t->shape[1] == 0) return QFS_SKIP_EMPTY;
    return QFS_SELECT_QUANTIZE;
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
