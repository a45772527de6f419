#include "quarkfs/rewrite.h"
#include "quarkfs/nametable.h"
#include "quarkfs/sort.h"
#include "quarkfs/textbuf.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One Quark QTensorConfig.to_dict() (doc/FORMAT.md §6.1), key for key as amd-quark 0.13
 * writes it (tests/loaders/test_quark_export.py compares with its export). */
typedef struct quark_tensor_spec {
    const char *dtype, *qscheme, *observer;
    int ch_axis;              /* used for per_channel / per_group */
    unsigned group;           /* 0: null */
    int symmetric;            /* 1, 0, or -1 for null (MX) */
    bool dynamic, mx;
} quark_tensor_spec;

static json_t *quark_tensor(const quark_tensor_spec *t)
{
    bool axis = strcmp(t->qscheme, "per_tensor") != 0;
    json_t *o = json_object();
    json_object_set_new(o, "block_size", json_null());
    json_object_set_new(o, "ch_axis", axis ? json_integer(t->ch_axis) : json_null());
    json_object_set_new(o, "dtype", json_string(t->dtype));
    json_object_set_new(o, "enable_buffer_reuse", json_false());
    json_object_set_new(o, "group_size", t->group ? json_integer(t->group) : json_null());
    json_object_set_new(o, "is_dynamic", json_boolean(t->dynamic));
    json_object_set_new(o, "is_scale_quant", json_false());
    json_object_set_new(o, "max_input_numel", json_integer(4194304));
    json_object_set_new(o, "mx_element_dtype", json_null());
    json_object_set_new(o, "observer_cls", json_string(t->observer));
    json_object_set_new(o, "qscheme", json_string(t->qscheme));
    json_object_set_new(o, "round_method", json_string("half_even"));
    json_object_set_new(o, "scale_calculation_mode", t->mx ? json_string("even") : json_null());
    json_object_set_new(o, "scale_format", t->mx ? json_string("e8m0") : json_null());
    json_object_set_new(o, "scale_type", json_string("float"));
    json_object_set_new(o, "symmetric", t->symmetric < 0 ? json_null() : json_boolean(t->symmetric));
    json_object_set_new(o, "zero_point_type", json_string("int32"));   /* Quark's default */
    return o;
}

static quark_tensor_spec quark_weight_spec(const qfs_spec *s)
{
    quark_tensor_spec t = {0};
    t.symmetric = 1;
    switch (s->wtype) {
    case QFS_W_INT8:
    case QFS_W_FP8_E4M3:
        t.dtype = s->wtype == QFS_W_INT8 ? "int8" : "fp8_e4m3";
        t.qscheme = s->gran == QFS_PER_TENSOR ? "per_tensor" : "per_channel";
        t.observer = s->gran == QFS_PER_TENSOR ? "PerTensorMinMaxObserver" : "PerChannelMinMaxObserver";
        break;
    case QFS_W_UINT4:
    case QFS_W_INT4:
        t.dtype = s->wtype == QFS_W_UINT4 ? "uint4" : "int4";
        t.qscheme = "per_group";
        t.observer = "PerGroupMinMaxObserver";
        t.ch_axis = -1;
        t.group = s->group;
        t.symmetric = s->wtype == QFS_W_INT4;
        break;
    case QFS_W_MXFP4:
        t.dtype = "fp4";
        t.qscheme = "per_group";
        t.observer = "PerBlockMXObserver";
        t.ch_axis = -1;
        t.group = s->group;
        t.symmetric = -1;
        t.mx = true;
        break;
    }
    return t;
}

/* Quark's JsonExporterConfig: transformers accepts exactly these five keys. */
static json_t *quark_export_config(void)
{
    json_t *export = json_object();
    json_object_set_new(export, "kv_cache_group", json_array());
    json_object_set_new(export, "min_kv_scale", json_real(0.0));
    json_object_set_new(export, "pack_method", json_string("reorder"));
    json_object_set_new(export, "weight_format", json_string("real_quantized"));
    json_object_set_new(export, "weight_merge_groups", json_null());
    return export;
}

static json_t *string_list(const char *const *items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(items[i]));
    return a;
}

/* One QLayerConfig.to_dict(): the global config, or a layer_quant_config entry. */
static json_t *quark_layer_config(const qfs_spec *spec)
{
    quark_tensor_spec w = quark_weight_spec(spec);
    json_t *input;
    if (spec->act == QFS_ACT_NONE) {
        input = json_null();
    } else {
        quark_tensor_spec in = w;
        in.dynamic = true;
        if (spec->act == QFS_ACT_DYNAMIC_PER_TOKEN) {   /* Quark's PTPC template: ch_axis 1 */
            in.qscheme = "per_channel";
            in.observer = "PerChannelMinMaxObserver";
            in.ch_axis = 1;
        } else if (spec->act == QFS_ACT_DYNAMIC_PER_TENSOR) {
            in.qscheme = "per_tensor";
            in.observer = "PerTensorMinMaxObserver";
        }
        input = quark_tensor(&in);
    }
    json_t *layer = json_object();
    json_object_set_new(layer, "bias", json_null());
    json_object_set_new(layer, "input_tensors", input);
    json_object_set_new(layer, "output_tensors", json_null());
    json_object_set_new(layer, "target_device", json_null());
    json_object_set_new(layer, "weight", quark_tensor(&w));
    return layer;
}

/* Quark's QConfig.to_dict() (doc/FORMAT.md §6.1); the layer rules become layer_quant_config
 * entries keyed by their globs, as Quark writes the QConfig it was given (a glob given twice
 * keeps its last spec). */
static json_t *quark_config(const qfs_spec *spec, const qfs_layer_rule *layers, size_t n_layers,
                            json_t *excl)
{
    json_t *per_layer = json_object();
    for (size_t i = 0; i < n_layers; i++)
        json_object_set_new(per_layer, layers[i].glob, quark_layer_config(layers[i].spec));
    json_t *qc = json_object();
    json_object_set_new(qc, "algo_config", json_null());
    json_object_set_new(qc, "exclude", excl);
    json_object_set_new(qc, "export", quark_export_config());
    json_object_set_new(qc, "global_quant_config", quark_layer_config(spec));
    json_object_set_new(qc, "kv_cache_post_rope", json_false());
    json_object_set_new(qc, "kv_cache_quant_config", json_object());
    json_object_set_new(qc, "layer_quant_config", per_layer);
    json_object_set_new(qc, "layer_type_quant_config", json_object());
    json_object_set_new(qc, "quant_method", json_string("quark"));
    json_object_set_new(qc, "quant_mode", json_string("eager_mode"));
    json_object_set_new(qc, "softmax_quant_spec", json_null());
    json_object_set_new(qc, "version", json_string("0.13"));    /* the amd-quark the tests run */
    return qc;
}

/* Quark custom_mode="awq" (doc/FORMAT.md §6.2). */
static json_t *awq_config(const qfs_spec *spec, json_t *excl)
{
    return json_pack("{s:i,s:o,s:i,s:o,s:s,s:s,s:s,s:b}", "bits", 4,
                     "export", quark_export_config(), "group_size", (int)spec->group,
                     "modules_to_not_convert", excl, "pack_method", "reorder",
                     "quant_method", "awq", "version", "gemm",
                     "zero_point", spec->wtype == QFS_W_UINT4);
}

/* Quark custom_mode="fp8" for per-tensor; the FineGrainedFP8 / DeepSeek-V3 block config that
 * vLLM and transformers both read for fp8-block (doc/FORMAT.md §6.3, §9). */
static json_t *fp8_config(const qfs_spec *spec, json_t *excl)
{
    if (spec->gran == QFS_PER_BLOCK)
        return json_pack("{s:s,s:o,s:s,s:[i,i]}", "activation_scheme", "dynamic",
                         "modules_to_not_convert", excl, "quant_method", "fp8",
                         "weight_block_size", (int)spec->group, (int)spec->group);
    return json_pack("{s:s,s:o,s:o,s:n,s:s}", "activation_scheme", "dynamic",
                     "export", quark_export_config(), "ignored_layers", excl,
                     "kv_cache_scheme", "quant_method", "fp8");
}

/* compressed-tensors QuantizationArgs. */
static json_t *ct_args(unsigned bits, const char *type, const char *strategy, unsigned group,
                       bool dynamic, unsigned block)
{
    json_t *o = json_object();
    json_object_set_new(o, "actorder", json_null());
    json_object_set_new(o, "block_structure", block ? json_pack("[i,i]", (int)block, (int)block)
                                                    : json_null());
    json_object_set_new(o, "dynamic", json_boolean(dynamic));
    json_object_set_new(o, "group_size", group ? json_integer(group) : json_null());
    json_object_set_new(o, "num_bits", json_integer(bits));
    json_object_set_new(o, "observer", dynamic ? json_null() : json_string("minmax"));
    json_object_set_new(o, "strategy", json_string(strategy));
    json_object_set_new(o, "symmetric", json_true());
    json_object_set_new(o, "type", json_string(type));
    return o;
}

/* compressed-tensors (doc/FORMAT.md §6.4): pack-quantized int weight-only, int-quantized W8A8,
 * float-quantized fp8. */
static json_t *ct_config(const qfs_spec *spec, json_t *excl)
{
    const char *fmt;
    json_t *weights, *input = json_null();
    bool fp8 = spec->wtype == QFS_W_FP8_E4M3;
    const char *type = fp8 ? "float" : "int";
    if (spec->wtype == QFS_W_INT4) {
        fmt = "pack-quantized";
        weights = ct_args(4, "int", "group", spec->group, false, 0);
    } else {
        const char *strategy = spec->gran == QFS_PER_TENSOR ? "tensor"
                             : spec->gran == QFS_PER_BLOCK ? "block" : "channel";
        weights = ct_args(8, type, strategy, 0, false, spec->gran == QFS_PER_BLOCK ? spec->group : 0);
        fmt = fp8 ? "float-quantized" : spec->act == QFS_ACT_NONE ? "pack-quantized" : "int-quantized";
        if (spec->act == QFS_ACT_DYNAMIC_PER_TOKEN) input = ct_args(8, type, "token", 0, true, 0);
        else if (spec->act == QFS_ACT_DYNAMIC_PER_TENSOR) input = ct_args(8, type, "tensor", 0, true, 0);
        else if (spec->act == QFS_ACT_DYNAMIC_PER_GROUP)
            input = ct_args(8, type, "group", spec->group, true, 0);
    }
    json_t *group = json_pack("{s:s,s:o,s:n,s:[s],s:o}", "format", fmt, "input_activations", input,
                              "output_activations", "targets", "Linear", "weights", weights);
    return json_pack("{s:{s:o},s:s,s:n,s:o,s:n,s:s,s:s,s:{},s:{},s:s}",
                     "config_groups", "group_0", group, "format", fmt,
                     "global_compression_ratio", "ignore", excl, "kv_cache_scheme",
                     "quant_method", "compressed-tensors", "quantization_status", "compressed",
                     "sparsity_config", "transform_config", "version", "0.12.0");
}

json_t *qfs_quant_config_build_layers(const qfs_spec *spec, qfs_format format,
                                      const qfs_layer_rule *layers, size_t n_layers,
                                      const char *const *exclude, size_t n_exclude)
{
    json_t *excl = string_list(exclude, n_exclude);
    switch (format) {
    case QFS_FMT_AWQ: return awq_config(spec, excl);
    case QFS_FMT_FP8: return fp8_config(spec, excl);
    case QFS_FMT_COMPRESSED_TENSORS: return ct_config(spec, excl);
    default: return quark_config(spec, layers, n_layers, excl);
    }
}

json_t *qfs_quant_config_build(const qfs_spec *spec, qfs_format format,
                               const char *const *exclude, size_t n_exclude)
{
    return qfs_quant_config_build_layers(spec, format, NULL, 0, exclude, n_exclude);
}

/* jansson writes \u00E9; Python's json.dumps (which transformers and Quark use) writes \u00e9. */
static void lowercase_unicode_escapes(char *s)
{
    for (; *s; s++) {
        if (*s != '\\') continue;
        if (s[1] == 'u') {
            for (int i = 2; i < 6 && s[i]; i++)
                if (s[i] >= 'A' && s[i] <= 'F') s[i] = (char)(s[i] - 'A' + 'a');
        }
        if (s[1]) s++;   /* skip the escaped character (so "\\u" is not an escape) */
    }
}

/* Pretty-prints like Python's json.dumps(obj, indent=2, sort_keys=True) (ASCII only). */
static char *dump_like_python(const json_t *obj)
{
    char *s = json_dumps(obj, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (s) lowercase_unicode_escapes(s);
    return s;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Appends src to the growing buffer, indenting every line after the first by `indent`. */
static size_t append_indented(char *dst, const char *src, const char *indent)
{
    size_t n = 0, il = strlen(indent);
    for (const char *p = src; *p; p++) {
        dst[n++] = *p;
        if (*p == '\n') {
            memcpy(dst + n, indent, il);
            n += il;
        }
    }
    return n;
}

/* Parses a whole JSON file; NULL with err naming the file, line and column. */
static json_t *parse_json(const char *text, size_t len, const char *path, qfs_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        qfs_error_set(err, "%s: not valid JSON (line %d, column %d: %s)", path, jerr.line,
                      jerr.column, jerr.text);
    return root;
}

int qfs_config_rewrite(const char *text, size_t len, const json_t *quant_config,
                       const char *path, char **out, size_t *out_len, qfs_error *err)
{
    json_t *root = parse_json(text, len, path, err);
    if (!root) return -EINVAL;
    if (!json_is_object(root)) {
        json_decref(root);
        qfs_error_set(err, "%s: not a JSON object", path);
        return -EINVAL;
    }
    if (json_object_get(root, "quantization_config")) {
        json_decref(root);
        qfs_error_set(err, "%s: the model is already quantized (it has a quantization_config); "
                      "quarkfs needs an unquantized BF16/F16/F32 source", path);
        return -EINVAL;
    }
    bool empty = json_object_size(root) == 0;
    json_decref(root);

    /* The closing brace of the top-level object is the last non-blank character. */
    size_t close = len;
    while (close > 0 && is_ws(text[close - 1])) close--;
    if (close == 0 || text[close - 1] != '}') {
        qfs_error_set(err, "%s: cannot find the closing brace of the top-level object", path);
        return -EINVAL;
    }
    close--;
    size_t keep = close;                       /* source text kept before the new member */
    while (keep > 0 && is_ws(text[keep - 1])) keep--;

    char *qc = dump_like_python(quant_config);
    if (!qc) return -ENOMEM;
    size_t qlen = strlen(qc), nl = 0;
    for (size_t i = 0; i < qlen; i++) nl += qc[i] == '\n';
    size_t cap = keep + 64 + qlen + nl * 2 + (len - close);
    char *buf = malloc(cap);
    if (!buf) {
        free(qc);
        return -ENOMEM;
    }
    size_t n = 0;
    memcpy(buf, text, keep);
    n = keep;
    const char *member = empty ? "\n  \"quantization_config\": " : ",\n  \"quantization_config\": ";
    memcpy(buf + n, member, strlen(member));
    n += strlen(member);
    n += append_indented(buf + n, qc, "  ");
    buf[n++] = '\n';
    memcpy(buf + n, text + close, len - close);   /* the brace and whatever followed it */
    n += len - close;
    free(qc);
    *out = buf;
    *out_len = n;
    return 0;
}

/* A JSON string as dump_like_python writes it: jansson's JSON_ENSURE_ASCII escapes with
 * lowercase hex. The input is valid UTF-8 without NUL (jansson's parser checked it). */
static void out_json_string(qfs_textbuf *b, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str, *run = s;
    qfs_textbuf_put(b, "\"", 1);
    while (*s) {
        unsigned c = *s;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            s++;
            continue;
        }
        qfs_textbuf_put(b, (const char *)run, (size_t)(s - run));
        char esc[16];
        size_t n = 2;
        esc[0] = '\\';
        if (c == '"' || c == '\\') esc[1] = (char)c;
        else if (c == '\b') esc[1] = 'b';
        else if (c == '\f') esc[1] = 'f';
        else if (c == '\n') esc[1] = 'n';
        else if (c == '\r') esc[1] = 'r';
        else if (c == '\t') esc[1] = 't';
        else n = 0;
        size_t len = 1;
        if (n == 0) {
            uint32_t cp = c;
            if (c >= 0xF0) cp = c & 0x07, len = 4;
            else if (c >= 0xE0) cp = c & 0x0F, len = 3;
            else if (c >= 0xC0) cp = c & 0x1F, len = 2;
            for (size_t i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3F);
            uint32_t units[2] = {cp, 0};
            size_t nu = 1;
            if (cp >= 0x10000) {
                units[0] = 0xD800 | ((cp - 0x10000) >> 10);
                units[1] = 0xDC00 | ((cp - 0x10000) & 0x3FF);
                nu = 2;
            }
            for (size_t u = 0; u < nu; u++) {
                esc[n++] = '\\';
                esc[n++] = 'u';
                for (int sh = 12; sh >= 0; sh -= 4) esc[n++] = hex[(units[u] >> sh) & 0xF];
            }
        }
        qfs_textbuf_put(b, esc, n);
        s += len;
        run = s;
    }
    qfs_textbuf_put(b, (const char *)run, (size_t)(s - run));
    qfs_textbuf_put(b, "\"", 1);
}

/* One weight_map member of the view: later members (higher seq) replace earlier ones of the
 * same name, as json_object_set would. */
typedef struct wm_member {
    const char *name, *file;
    size_t seq;
} wm_member;

static int cmp_member(const void *a, const void *b)
{
    const wm_member *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A quantized view file the index refers to, at its first mention. */
typedef struct wm_file {
    const qfs_plan *plan;
    const char *name;
    size_t first;
} wm_file;

static int cmp_file_plan(const void *a, const void *b)
{
    const wm_file *x = a, *y = b;
    if (x->plan != y->plan) return (uintptr_t)x->plan < (uintptr_t)y->plan ? -1 : 1;
    return x->first < y->first ? -1 : x->first > y->first;
}

static int cmp_file_first(const void *a, const void *b)
{
    const wm_file *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* plan_for with the answer for the last file name kept: the members of one file come one after
 * another, so a million of them cost a million strcmp, not a million lookups. */
typedef struct plan_memo {
    qfs_index_plan_fn plan_for;
    void *ctx;
    const char *file;
    const qfs_plan *plan;
} plan_memo;

static const qfs_plan *memo_plan(plan_memo *m, const char *file)
{
    if (!m->file || (file != m->file && strcmp(file, m->file) != 0)) {
        m->plan = m->plan_for(m->ctx, file);
        m->file = file;
    }
    return m->plan;
}

void qfs_index_map_free(qfs_index_map *m)
{
    if (!m) return;
    free(m->names);
    free(m->files);
    free(m->strings);
    json_decref(m->tree);
    memset(m, 0, sizeof *m);
}

/* Appends one member to a map being built (the arrays grow by doubling). */
static int map_add(qfs_index_map *m, size_t *cap, const char *name, const char *file)
{
    if (m->n == *cap) {
        size_t c = *cap ? 2 * *cap : 256;
        const char **nn = realloc(m->names, c * sizeof *nn);
        if (!nn) return -ENOMEM;
        m->names = nn;
        const char **nf = realloc(m->files, c * sizeof *nf);
        if (!nf) return -ENOMEM;
        m->files = nf;
        *cap = c;
    }
    m->names[m->n] = name;
    m->files[m->n++] = file;
    return 0;
}

/* The tree parser's weight_map (root is the whole document): its members in order, pointing
 * into the object, which the map keeps. -EINVAL with err set for a value that is not a string. */
static int map_from_tree(json_t *wm, const char *path, qfs_index_map *m, qfs_error *err)
{
    size_t cap = 0;
    const char *k;
    json_t *v;
    m->tree = json_incref(wm);
    json_object_foreach(wm, k, v) {
        if (!json_is_string(v)) {
            qfs_error_set(err, "%s: weight_map entry '%s' is not a file name", path, k);
            return -EINVAL;
        }
        if (map_add(m, &cap, k, json_string_value(v))) return -ENOMEM;
    }
    return 0;
}

/* The streaming parser of an index: only the top level's "weight_map" is read (its members into
 * the map, its braces' offsets kept); every other value is skipped, left to jansson. */
typedef struct index_ctx {
    qfs_index_map *map;
    size_t cap;
    yajl_handle y;
    unsigned depth;          /* of the value being read: 1 inside the document's object */
    bool at_weight_map;      /* the last top-level key was "weight_map" */
    bool in_weight_map;
    bool seen_weight_map;
    size_t wm_open, wm_close;   /* offsets of its '{' and just past its '}' */
    char *next;              /* where the next copied string goes in map->strings */
    const char *name;        /* the member whose file comes next */
    size_t end;              /* just past the document's closing brace */
    int rc;
} index_ctx;

static int index_stop(index_ctx *c, int rc)
{
    c->rc = rc;
    return 0;
}

static const char *index_copy(index_ctx *c, const unsigned char *s, size_t len)
{
    char *d = c->next;   /* strings is as long as the text: each copy is shorter than its token */
    memcpy(d, s, len);
    d[len] = '\0';
    c->next += len + 1;
    return d;
}

static int ix_map_key(void *ctx, const unsigned char *s, size_t len)
{
    index_ctx *c = ctx;
    if (c->in_weight_map && c->depth == 2) {
        c->name = index_copy(c, s, len);
        return 1;
    }
    if (c->depth == 1) {
        c->at_weight_map = len == 10 && memcmp(s, "weight_map", 10) == 0;
        if (c->at_weight_map && c->seen_weight_map) return index_stop(c, -EAGAIN);
        c->seen_weight_map |= c->at_weight_map;
    }
    return 1;
}

static int ix_string(void *ctx, const unsigned char *s, size_t len)
{
    index_ctx *c = ctx;
    if (!c->in_weight_map || c->depth != 2) return 1;
    /* Shard names repeat: one copy for a run of the same file. */
    const char *last = c->map->n ? c->map->files[c->map->n - 1] : NULL;
    const char *file = last && strlen(last) == len && memcmp(last, s, len) == 0
                           ? last : index_copy(c, s, len);
    if (map_add(c->map, &c->cap, c->name, file)) return index_stop(c, -ENOMEM);
    return 1;
}

/* A scalar that is not a string: inside weight_map the tree parser says it is no file name. */
static int ix_scalar(index_ctx *c)
{
    return c->in_weight_map && c->depth == 2 ? index_stop(c, -EAGAIN) : 1;
}
static int ix_null(void *ctx) { return ix_scalar(ctx); }
static int ix_boolean(void *ctx, int b) { (void)b; return ix_scalar(ctx); }
static int ix_number(void *ctx, const char *s, size_t l) { (void)s; (void)l; return ix_scalar(ctx); }

static int ix_open(void *ctx, bool map)
{
    index_ctx *c = ctx;
    if (c->depth == 0 && !map) return index_stop(c, -EAGAIN);
    if (c->in_weight_map) return index_stop(c, -EAGAIN);   /* a member that is no string */
    if (c->depth == 1 && c->at_weight_map) {
        if (!map) return index_stop(c, -EAGAIN);
        c->in_weight_map = true;
        c->wm_open = yajl_get_bytes_consumed(c->y) - 1;
    }
    c->at_weight_map = false;
    c->depth++;
    return 1;
}

static int ix_close(void *ctx)
{
    index_ctx *c = ctx;
    c->depth--;
    if (c->in_weight_map && c->depth == 1) {
        c->in_weight_map = false;
        c->wm_close = yajl_get_bytes_consumed(c->y);
    }
    if (c->depth == 0) c->end = yajl_get_bytes_consumed(c->y);
    return 1;
}
static int ix_start_map(void *ctx) { return ix_open(ctx, true); }
static int ix_start_array(void *ctx) { return ix_open(ctx, false); }

/* The streaming path: weight_map into *m, the rest of the document (weight_map replaced by {})
 * parsed by jansson into *root. 0, -EAGAIN (nothing set: the tree parser decides), -ENOMEM. */
static int index_stream(const char *text, size_t len, qfs_index_map *m, json_t **root)
{
    static const yajl_callbacks callbacks = {
        .yajl_null = ix_null, .yajl_boolean = ix_boolean, .yajl_number = ix_number,
        .yajl_string = ix_string, .yajl_start_map = ix_start_map, .yajl_map_key = ix_map_key,
        .yajl_end_map = ix_close, .yajl_start_array = ix_start_array,
        .yajl_end_array = ix_close,
    };
    memset(m, 0, sizeof *m);
    *root = NULL;
    if (!(m->strings = malloc(len + 1))) return -ENOMEM;
    index_ctx c = {.map = m, .next = m->strings, .rc = -EAGAIN};
    int rc = qfs_json_stream((const uint8_t *)text, len, &callbacks, &c, &c.y, &c.end);
    if (rc == 1) rc = c.rc;
    else if (rc == 0 && !c.wm_close) rc = -EAGAIN;   /* no weight_map object */
    qfs_name_table names = {0};
    if (rc == 0) rc = qfs_name_table_build(&names, m->names, sizeof *m->names, m->n);
    qfs_name_table_free(&names);
    if (rc == -EEXIST) rc = -EAGAIN;   /* a name twice: jansson's rule decides which file */
    char *rest = NULL;
    if (rc == 0) {
        size_t head = c.wm_open, tail = len - c.wm_close;
        if (!(rest = malloc(head + 2 + tail))) rc = -ENOMEM;
    }
    if (rc == 0) {
        memcpy(rest, text, c.wm_open);
        memcpy(rest + c.wm_open, "{}", 2);
        memcpy(rest + c.wm_open + 2, text + c.wm_close, len - c.wm_close);
        json_error_t jerr;
        /* yajl passed it, but jansson has limits of its own (an integer beyond 64 bits, a
         * real that overflows): then the tree parser says what is wrong. */
        *root = json_loadb(rest, c.wm_open + 2 + len - c.wm_close, 0, &jerr);
        if (!*root) rc = -EAGAIN;
    }
    free(rest);
    if (rc) qfs_index_map_free(m);
    return rc;
}

/* The new weight_map is written directly, not built as a jansson object and dumped with sorted
 * keys: with a million tensors that costs seconds and gigabytes (one string, key and hash entry
 * per tensor). The rest of the document goes through jansson; tests/unit/test_rewrite.c checks
 * the result against jansson's own dump of the same object. */
int qfs_index_rewrite(const char *text, size_t len, qfs_index_plan_fn plan_for, void *ctx,
                      const char *path, char **out, size_t *out_len, qfs_index_map *source_map,
                      qfs_error *err)
{
    return qfs_index_rewrite_with(QFS_JSON_AUTO, text, len, plan_for, ctx, path, out, out_len,
                                  source_map, err);
}

int qfs_index_rewrite_with(qfs_json_parser parser, const char *text, size_t len,
                           qfs_index_plan_fn plan_for, void *ctx, const char *path, char **out,
                           size_t *out_len, qfs_index_map *source_map, qfs_error *err)
{
    qfs_index_map map = {0};
    json_t *root = NULL;
    int rc = parser == QFS_JSON_TREE ? -EAGAIN : index_stream(text, len, &map, &root);
    if (rc == -ENOMEM) return rc;
    if (rc == -EAGAIN && parser == QFS_JSON_STREAM) return rc;
    if (rc == -EAGAIN) {
        root = parse_json(text, len, path, err);
        if (!root) return -EINVAL;
        json_t *wm = json_object_get(root, "weight_map");
        if (!json_is_object(root) || !json_is_object(wm)) {
            json_decref(root);
            qfs_error_set(err, "%s: not a safetensors index (no \"weight_map\" object)", path);
            return -EINVAL;
        }
        rc = map_from_tree(wm, path, &map, err);
        if (rc) {
            qfs_index_map_free(&map);
            json_decref(root);
            return rc;
        }
    }
    size_t n_wm = map.n, n_files = 0, n_members = 0;
    wm_file *files = malloc((n_wm ? n_wm : 1) * sizeof *files);
    wm_member *members = NULL;
    char *text_out = NULL;
    qfs_textbuf b = {0};
    rc = files ? 0 : -ENOMEM;
    const qfs_plan *last = NULL;
    plan_memo memo = {plan_for, ctx, NULL, NULL};
    for (size_t pos = 0; pos < n_wm && rc == 0; pos++) {
        const qfs_plan *p = memo_plan(&memo, map.files[pos]);
        if (p) {
            if (p != last) files[n_files++] = (wm_file){p, map.files[pos], pos};
            last = p;
        } else {
            n_members++;
        }
    }
    if (rc) goto out;
    /* One entry per quantized file, in the order of first mention. */
    qsort(files, n_files, sizeof *files, cmp_file_plan);
    size_t u = 0;
    for (size_t i = 0; i < n_files; i++)
        if (u == 0 || files[u - 1].plan != files[i].plan) files[u++] = files[i];
    n_files = u;
    qsort(files, n_files, sizeof *files, cmp_file_first);

    uint64_t total = 0;
    for (size_t i = 0; i < n_files; i++) {
        n_members += files[i].plan->n_tensors;
        total += files[i].plan->file_size - files[i].plan->header_size;
    }
    rc = -ENOMEM;
    members = malloc((n_members ? n_members : 1) * sizeof *members);
    if (!members) goto out;
    size_t seq = 0;
    for (size_t pos = 0; pos < n_wm; pos++)
        if (!memo_plan(&memo, map.files[pos]))
            members[seq] = (wm_member){map.names[pos], map.files[pos], seq}, seq++;
    for (size_t i = 0; i < n_files; i++)
        for (size_t t = 0; t < files[i].plan->n_tensors; t++)
            members[seq] = (wm_member){files[i].plan->tensors[t].name, files[i].name, seq}, seq++;
    /* A few sorted runs, usually: the index's own members, and each file's tensors by dtype. */
    if (qfs_sort_runs(members, n_members, sizeof *members, cmp_member)) goto out;

    json_t *meta = json_object_get(root, "metadata");
    if (!json_is_object(meta)) {
        meta = json_object();
        if (json_object_set_new(root, "metadata", meta)) goto out;
    }
    /* An empty weight_map stands in for the new one, which is spliced in after the dump. */
    if (json_object_set_new(meta, "total_size", json_integer((json_int_t)total)) ||
        json_object_set_new(root, "weight_map", json_object()) ||
        !(text_out = dump_like_python(root)))
        goto out;
    /* Keys at the top level are the only ones indented by exactly two spaces. */
    const char *slot = strstr(text_out, "\n  \"weight_map\": {}");
    if (!slot) {   /* cannot happen: the key was just set */
        qfs_error_set(err, "%s: cannot place weight_map in the rewritten index", path);
        rc = -EINVAL;
        goto out;
    }
    size_t head = (size_t)(slot - text_out) + strlen("\n  \"weight_map\": {");
    qfs_textbuf_put(&b, text_out, head);
    bool first = true;
    for (size_t i = 0; i < n_members; i++) {
        if (i + 1 < n_members && strcmp(members[i].name, members[i + 1].name) == 0) continue;
        qfs_textbuf_put(&b, first ? "\n    " : ",\n    ", first ? 5 : 6);
        first = false;
        out_json_string(&b, members[i].name);
        qfs_textbuf_put(&b, ": ", 2);
        out_json_string(&b, members[i].file);
    }
    if (!first) qfs_textbuf_put(&b, "\n  ", 3);
    qfs_textbuf_put(&b, text_out + head, strlen(text_out + head));
    qfs_textbuf_put(&b, "\n", 1);
    if (b.failed) goto out;
    *out = b.s;
    *out_len = b.len;
    b.s = NULL;
    if (source_map) {
        *source_map = map;
        memset(&map, 0, sizeof map);
    }
    rc = 0;
out:
    free(b.s);
    free(text_out);
    free(members);
    free(files);
    qfs_index_map_free(&map);
    json_decref(root);
    return rc;
}
