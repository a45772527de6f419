/* libFuzzer target: the generated JSON files (core/rewrite.c).
 * Input: [spec byte][format byte][plan mask byte] config text \0 index text \0 exclude names
 * (one a line). The spec is the byte's pick among all specs, the format its pick among the
 * formats that spec can be written in; the mask says which of three fake view files are
 * quantized (have a plan).
 *   qfs_quant_config_build: an object whose exclusion list is exactly the given names.
 *   qfs_config_rewrite: accepts every JSON object without a quantization_config; the result
 *     parses, has the source's members and the new one, keeps the source text up to the last
 *     member and from the closing brace on, and is refused if rewritten again.
 *   qfs_index_rewrite: accepts every object with a string-valued weight_map object; the result
 *     parses, maps every tensor of each referenced quantized file to it, keeps the other entries
 *     and members, has the right total_size, and is a fixed point (rewriting it again gives the
 *     same bytes). */
#include "fuzz_check.h"

#include <errno.h>
#include <string.h>

#include "quarkfs/rewrite.h"
#include "quarkfs/spec.h"

#define CFG_PATH "/src/config.json"
#define IDX_PATH "/src/model.safetensors.index.json"

/* ---- fake plans: just what the index needs (names, header and file sizes) ---- */

#define N_FAKE 3
static const char *const fake_files[N_FAKE] = {
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors",
};
static const char *const fake_names0[] = {"a.weight", "a.weight_scale", "shared.weight",
                                          "a.weight_zero_point"};
/* Disjoint from fake_names0: a tensor in two quantized files has no single right entry. */
static const char *const fake_names1[] = {"b.qweight", "b.scales", "caf\xc3\xa9.weight"};
static const uint64_t fake_sizes0[] = {64, 4, 128, 1};
static const uint64_t fake_sizes1[] = {32, 6, 2};

typedef struct fake_ctx {
    qfs_plan plans[N_FAKE];
    qfs_plan_tensor storage0[4], storage1[3];
    unsigned mask;
} fake_ctx;

static void fake_plan(qfs_plan *p, qfs_plan_tensor *st, const char *const *names,
                      const uint64_t *sizes, size_t n, uint64_t header_size)
{
    memset(p, 0, sizeof *p);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memset(&st[i], 0, sizeof st[i]);
        st[i].name = (char *)names[i];
        st[i].offset = off;
        st[i].size = sizes[i];
        off += sizes[i];
    }
    p->tensors = st;
    p->n_tensors = n;
    p->header_size = header_size;
    p->file_size = header_size + off;
}

static void fake_init(fake_ctx *c, unsigned mask)
{
    fake_plan(&c->plans[0], c->storage0, fake_names0, fake_sizes0, 4, 200);
    fake_plan(&c->plans[1], c->storage1, fake_names1, fake_sizes1, 3, 136);
    fake_plan(&c->plans[2], NULL, NULL, NULL, 0, 16);   /* a file with no tensors */
    c->mask = mask;
}

static int fake_index(const fake_ctx *c, const char *file)
{
    for (int i = 0; i < N_FAKE; i++)
        if ((c->mask >> i & 1) && strcmp(file, fake_files[i]) == 0) return i;
    return -1;
}

static const qfs_plan *fake_plan_for(void *ctx, const char *file)
{
    const fake_ctx *c = ctx;
    int i = fake_index(c, file);
    return i < 0 ? NULL : &c->plans[i];
}

static bool plan_has(const qfs_plan *p, const char *name)
{
    for (size_t i = 0; i < p->n_tensors; i++)
        if (strcmp(p->tensors[i].name, name) == 0) return true;
    return false;
}

/* ---- helpers ---- */

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* An exact-size heap copy (no NUL), so an over-read is an ASan error. */
static char *copy_exact(const uint8_t *p, size_t n)
{
    char *s = malloc(n ? n : 1);
    FUZZ_CHECK(s, "out of memory");
    if (n) memcpy(s, p, n);
    return s;
}

static const char *excl_key(const json_t *qc)
{
    static const char *const keys[] = {"exclude", "modules_to_not_convert", "ignored_layers",
                                       "ignore"};
    const char *found = NULL;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (json_object_get(qc, keys[i])) {
            FUZZ_CHECK(!found, "quantization_config has both '%s' and '%s'", found, keys[i]);
            found = keys[i];
        }
    }
    return found;
}

/* ---- the three functions ---- */

static void check_config(const char *text, size_t len, const json_t *qc)
{
    char *out = NULL;
    size_t out_len = 0;
    qfs_error err = {{0}};
    int rc = qfs_config_rewrite(text, len, qc, CFG_PATH, &out, &out_len, &err);
    json_error_t jerr;
    json_t *src = json_loadb(text, len, 0, &jerr);
    bool acceptable = src && json_is_object(src) && !json_object_get(src, "quantization_config");
    if (rc) {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "qfs_config_rewrite returned %d", rc);
        FUZZ_CHECK(rc == -ENOMEM || strstr(err.msg, CFG_PATH), "message without the path: %s",
                   err.msg);
        FUZZ_CHECK(!acceptable, "a JSON object without quantization_config was refused: %s",
                   err.msg);
        json_decref(src);
        return;
    }
    FUZZ_CHECK(acceptable, "qfs_config_rewrite accepted %s", src ? "an object that already has "
               "a quantization_config or a non-object" : "text that is not JSON");
    json_t *res = json_loadb(out, out_len, 0, &jerr);
    FUZZ_CHECK(res, "the rewritten config is not JSON: %s at %d", jerr.text, jerr.position);
    FUZZ_CHECK(json_is_object(res), "the rewritten config is not an object");
    FUZZ_CHECK(json_object_size(res) == json_object_size(src) + 1, "%zu members, source has %zu",
               json_object_size(res), json_object_size(src));
    FUZZ_CHECK(json_equal(json_object_get(res, "quantization_config"), qc),
               "quantization_config differs from the built one");
    const char *k;
    json_t *v;
    json_object_foreach(src, k, v)
        FUZZ_CHECK(json_equal(v, json_object_get(res, k)), "member '%s' changed", k);

    /* Source text kept: up to the last non-blank character before the closing brace, and from
     * the closing brace to the end. */
    size_t close = len;
    while (close > 0 && is_ws(text[close - 1])) close--;
    FUZZ_CHECK(close > 0 && text[close - 1] == '}', "valid object not ending in '}'");
    close--;
    size_t keep = close;
    while (keep > 0 && is_ws(text[keep - 1])) keep--;
    size_t tail = len - close;
    FUZZ_CHECK(out_len >= keep + tail, "result shorter than the kept source");
    FUZZ_CHECK(memcmp(out, text, keep) == 0, "source text before the new member not kept");
    FUZZ_CHECK(memcmp(out + out_len - tail, text + close, tail) == 0,
               "source text from the closing brace not kept");
    FUZZ_CHECK(out[keep] == (json_object_size(src) ? ',' : '\n'),
               "inserted member starts with '%c'", out[keep]);

    /* Rewriting the result is refused (it now has a quantization_config). */
    char *out2 = NULL;
    size_t out2_len = 0;
    rc = qfs_config_rewrite(out, out_len, qc, CFG_PATH, &out2, &out2_len, &err);
    FUZZ_CHECK(rc == -EINVAL, "a rewritten config was rewritten again (rc %d)", rc);
    free(out2);
    json_decref(res);
    json_decref(src);
    free(out);
}

/* The streaming parser of the index leaves it to the tree parser (-EAGAIN, nothing set) or
 * gives exactly what the tree parser gives: the same bytes and source map, or the same error. */
static void check_index_stream_is_tree(const char *text, size_t len, fake_ctx *c)
{
    char *out_s = NULL, *out_t = NULL;
    size_t len_s = 0, len_t = 0;
    qfs_index_map ms = {0}, mt = {0};
    qfs_error es = {{0}}, et = {{0}};
    int rs = qfs_index_rewrite_with(QFS_JSON_STREAM, text, len, fake_plan_for, c, IDX_PATH,
                                    &out_s, &len_s, &ms, &es);
    if (rs == -EAGAIN) {
        FUZZ_CHECK(!out_s && ms.n == 0 && !ms.names, "-EAGAIN left state");
        return;
    }
    int rt = qfs_index_rewrite_with(QFS_JSON_TREE, text, len, fake_plan_for, c, IDX_PATH, &out_t,
                                    &len_t, &mt, &et);
    FUZZ_CHECK(rs == rt, "index: streaming rc %d (%s), tree rc %d (%s)", rs, es.msg, rt, et.msg);
    if (rs == 0) {
        FUZZ_CHECK(len_s == len_t && memcmp(out_s, out_t, len_s) == 0,
                   "the two parsers rewrite the index differently");
        FUZZ_CHECK(ms.n == mt.n, "source maps of %zu and %zu members", ms.n, mt.n);
        for (size_t i = 0; i < ms.n; i++)
            FUZZ_CHECK(strcmp(ms.names[i], mt.names[i]) == 0 &&
                       strcmp(ms.files[i], mt.files[i]) == 0, "source map member %zu differs", i);
    }
    free(out_s);
    free(out_t);
    qfs_index_map_free(&ms);
    qfs_index_map_free(&mt);
}

static void check_index(const char *text, size_t len, fake_ctx *c)
{
    check_index_stream_is_tree(text, len, c);
    char *out = NULL;
    size_t out_len = 0;
    qfs_error err = {{0}};
    int rc = qfs_index_rewrite(text, len, fake_plan_for, c, IDX_PATH, &out, &out_len, NULL,
                               &err);
    json_error_t jerr;
    json_t *src = json_loadb(text, len, 0, &jerr);
    json_t *swm = json_object_get(src, "weight_map");
    bool acceptable = src && json_is_object(src) && json_is_object(swm);
    if (acceptable) {
        const char *k;
        json_t *v;
        json_object_foreach(swm, k, v) acceptable = acceptable && json_is_string(v);
    }
    if (rc) {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "qfs_index_rewrite returned %d", rc);
        FUZZ_CHECK(rc == -ENOMEM || strstr(err.msg, IDX_PATH), "message without the path: %s",
                   err.msg);
        FUZZ_CHECK(!acceptable, "a valid index was refused: %s", err.msg);
        json_decref(src);
        return;
    }
    FUZZ_CHECK(acceptable, "qfs_index_rewrite accepted an invalid index");
    FUZZ_CHECK(out_len > 0 && out[out_len - 1] == '\n' && out[out_len] == '\0' &&
               strlen(out) == out_len, "the index is not NUL-terminated text ending in a newline");
    json_t *res = json_loadb(out, out_len, 0, &jerr);
    FUZZ_CHECK(res && json_is_object(res), "the rewritten index is not a JSON object: %s",
               jerr.text);
    json_t *wm = json_object_get(res, "weight_map");
    FUZZ_CHECK(json_is_object(wm), "no weight_map object in the result");

    /* Which fake files the source references. */
    bool ref[N_FAKE] = {false};
    const char *k;
    json_t *v;
    json_object_foreach(swm, k, v) {
        int i = fake_index(c, json_string_value(v));
        if (i >= 0) ref[i] = true;
    }
    /* A name that some referenced quantized file now holds. */
#define REF_HOLDS(name) ((ref[0] && plan_has(&c->plans[0], name)) ||                            \
                         (ref[1] && plan_has(&c->plans[1], name)) ||                            \
                         (ref[2] && plan_has(&c->plans[2], name)))
    json_object_foreach(wm, k, v) {
        FUZZ_CHECK(json_is_string(v), "weight_map '%s' is not a string", k);
        int i = fake_index(c, json_string_value(v));
        if (i >= 0)
            FUZZ_CHECK(ref[i] && plan_has(&c->plans[i], k), "'%s' mapped to quantized file %s "
                       "that does not hold it", k, fake_files[i]);
        else
            FUZZ_CHECK(json_equal(v, json_object_get(swm, k)), "unquantized entry '%s' changed",
                       k);
    }
    json_object_foreach(swm, k, v) {
        if (fake_index(c, json_string_value(v)) >= 0) continue;
        FUZZ_CHECK(json_object_get(wm, k), "unquantized entry '%s' lost", k);
        FUZZ_CHECK(json_equal(v, json_object_get(wm, k)) || REF_HOLDS(k),
                   "unquantized entry '%s' changed", k);
    }
    uint64_t total = 0;
    for (int i = 0; i < N_FAKE; i++) {
        if (!ref[i]) continue;
        total += c->plans[i].file_size - c->plans[i].header_size;
        for (size_t t = 0; t < c->plans[i].n_tensors; t++)
            FUZZ_CHECK(json_object_get(wm, c->plans[i].tensors[t].name), "tensor '%s' of %s "
                       "missing from the weight_map", c->plans[i].tensors[t].name, fake_files[i]);
    }
    json_t *meta = json_object_get(res, "metadata");
    FUZZ_CHECK(json_is_integer(json_object_get(meta, "total_size")) &&
               (uint64_t)json_integer_value(json_object_get(meta, "total_size")) == total,
               "total_size is not %llu", (unsigned long long)total);
    json_t *smeta = json_object_get(src, "metadata");
    json_object_foreach(src, k, v)
        if (strcmp(k, "weight_map") && strcmp(k, "metadata"))
            FUZZ_CHECK(json_equal(v, json_object_get(res, k)), "member '%s' changed", k);
    if (json_is_object(smeta)) {
        json_object_foreach(smeta, k, v)
            if (strcmp(k, "total_size"))
                FUZZ_CHECK(json_equal(v, json_object_get(meta, k)), "metadata '%s' changed", k);
    }

    /* A fixed point: the result rewritten again is the same text. */
    char *out2 = NULL;
    size_t out2_len = 0;
    rc = qfs_index_rewrite(out, out_len, fake_plan_for, c, IDX_PATH, &out2, &out2_len, NULL,
                           &err);
    FUZZ_CHECK(rc == 0, "the rewritten index is refused: %s", err.msg);
    FUZZ_CHECK(out2_len == out_len && memcmp(out, out2, out_len) == 0,
               "rewriting the rewritten index changed it:\n%s\n---\n%s", out, out2);
    free(out2);
    json_decref(res);
    json_decref(src);
    free(out);
}

#define MAX_EXCL 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    size_t n_specs;
    const qfs_spec *specs = qfs_spec_all(&n_specs);
    const qfs_spec *spec = &specs[data[0] % n_specs];
    qfs_format fmts[QFS_FMT_COUNT];
    unsigned nf = 0;
    for (int f = 0; f < QFS_FMT_COUNT; f++)
        if (qfs_spec_format_ok(spec, (qfs_format)f)) fmts[nf++] = (qfs_format)f;
    FUZZ_CHECK(nf > 0, "spec %s has no format", spec->name);
    qfs_format fmt = fmts[data[1] % nf];
    unsigned mask = data[2];
    data += 3;
    size = size - 3;

    /* Split: config \0 index \0 excludes. */
    const uint8_t *z1 = memchr(data, 0, size);
    size_t cfg_len = z1 ? (size_t)(z1 - data) : size;
    const uint8_t *idx = z1 ? z1 + 1 : data + size;
    size_t rest = size - (size_t)(idx - data);
    const uint8_t *z2 = memchr(idx, 0, rest);
    size_t idx_len = z2 ? (size_t)(z2 - idx) : rest;
    const uint8_t *ex = z2 ? z2 + 1 : idx + idx_len;
    size_t ex_len = rest - (size_t)(ex - idx);

    /* Exclude names: valid UTF-8 lines (module names come from JSON keys), sorted, unique. */
    char *excl[MAX_EXCL];
    size_t n_excl = 0;
    while (ex_len && n_excl < MAX_EXCL) {
        const uint8_t *nl = memchr(ex, '\n', ex_len);
        size_t l = nl ? (size_t)(nl - ex) : ex_len;
        json_t *probe = json_stringn((const char *)ex, l);
        if (probe) {
            excl[n_excl] = malloc(l + 1);
            FUZZ_CHECK(excl[n_excl], "out of memory");
            memcpy(excl[n_excl], ex, l);
            excl[n_excl++][l] = '\0';
            json_decref(probe);
        }
        ex += l + (nl != NULL);
        ex_len -= l + (nl != NULL);
    }
    qsort(excl, n_excl, sizeof *excl, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n_excl; i++) {
        if (u && strcmp(excl[u - 1], excl[i]) == 0) free(excl[i]);
        else excl[u++] = excl[i];
    }
    n_excl = u;

    json_t *qc = qfs_quant_config_build(spec, fmt, (const char *const *)excl, n_excl);
    FUZZ_CHECK(qc && json_is_object(qc), "qfs_quant_config_build(%s, %s) gave no object",
               spec->name, qfs_format_name(fmt));
    const char *ek = excl_key(qc);
    FUZZ_CHECK(ek, "%s/%s: quantization_config has no exclusion list", spec->name,
               qfs_format_name(fmt));
    json_t *ea = json_object_get(qc, ek);
    FUZZ_CHECK(json_is_array(ea) && json_array_size(ea) == n_excl, "%s/%s: '%s' has %zu entries "
               "for %zu names", spec->name, qfs_format_name(fmt), ek, json_array_size(ea), n_excl);
    for (size_t i = 0; i < n_excl; i++)
        FUZZ_CHECK(json_is_string(json_array_get(ea, i)) &&
                   strcmp(json_string_value(json_array_get(ea, i)), excl[i]) == 0,
                   "exclusion %zu is not '%s'", i, excl[i]);

    char *cfg = copy_exact(data, cfg_len);
    check_config(cfg, cfg_len, qc);
    free(cfg);

    fake_ctx c;
    fake_init(&c, mask);
    char *index = copy_exact(idx, idx_len);
    check_index(index, idx_len, &c);
    free(index);

    json_decref(qc);
    for (size_t i = 0; i < n_excl; i++) free(excl[i]);
    return 0;
}
