/* Unit tests of the generated JSON files (core/rewrite.c): config.json with a
 * quantization_config (doc/FORMAT.md §7: the source text kept, plus the
 * member), the quantization_config itself (doc/FORMAT.md §6), and the
 * safetensors index (printed like transformers: json.dumps(indent=2, sort_keys=True) + "\n"). */
#include "unit_util.c"
#include "unit_specs.h"

#include <ctype.h>

#include "quarkfs/plan.h"
#include "quarkfs/rewrite.h"

#define CFG_PATH "/src/config.json"
#define IDX_PATH "/src/model.safetensors.index.json"

/* ---- helpers ---- */

static char *rewrite_ok(const char *text, const json_t *qc, size_t *out_len)
{
    char *out = NULL;
    size_t len = 0;
    qfs_error err = {{0}};
    int rc = qfs_config_rewrite(text, strlen(text), qc, CFG_PATH, &out, &len, &err);
    if (rc) fail_msg("rc %d: %s", rc, err.msg);
    assert_non_null(out);
    if (out_len) *out_len = len;
    /* the result is len bytes; make it a C string for the checks */
    char *s = malloc(len + 1);
    assert_non_null(s);
    memcpy(s, out, len);
    s[len] = '\0';
    free(out);
    return s;
}

static void rewrite_fails(const char *text, size_t len, const char *word)
{
    json_t *qc = json_pack("{s:s}", "quant_method", "quark");
    char *out = NULL;
    size_t out_len = 0;
    qfs_error err = {{0}};
    assert_int_equal(qfs_config_rewrite(text, len, qc, CFG_PATH, &out, &out_len, &err), -EINVAL);
    assert_contains(err.msg, CFG_PATH);
    if (word) assert_contains(err.msg, word);
    json_decref(qc);
}

static json_t *parse(const char *s)
{
    json_error_t jerr;
    json_t *j = json_loads(s, 0, &jerr);
    if (!j) fail_msg("not JSON (%s): %s", jerr.text, s);
    return j;
}

/* A small stand-in quantization_config, to check the exact printed form. */
static json_t *small_qc(void)
{
    return json_pack("{s:s,s:[i,i],s:{}}", "quant_method", "quark", "x", 1, 2, "y");
}

/* ---- qfs_config_rewrite ---- */

static void test_config_keeps_source_text(void **state)
{
    (void)state;
    const char *src = "{\n"
                      "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                      "  \"rms_norm_eps\": 1e-05,\n"
                      "  \"rope_theta\": 500000.0,\n"
                      "  \"torch_dtype\": \"bfloat16\"\n"
                      "}\n";
    json_t *qc = small_qc();
    size_t len;
    char *out = rewrite_ok(src, qc, &len);
    /* the new member goes after the last one, nested one level (indent 2 + 2), sorted keys */
    const char *expected = "{\n"
                           "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                           "  \"rms_norm_eps\": 1e-05,\n"
                           "  \"rope_theta\": 500000.0,\n"
                           "  \"torch_dtype\": \"bfloat16\",\n"
                           "  \"quantization_config\": {\n"
                           "    \"quant_method\": \"quark\",\n"
                           "    \"x\": [\n"
                           "      1,\n"
                           "      2\n"
                           "    ],\n"
                           "    \"y\": {}\n"
                           "  }\n"
                           "}\n";
    assert_string_equal(out, expected);
    assert_int_equal(len, strlen(expected));
    free(out);
    json_decref(qc);
}

static void test_config_result_parses_to_source_plus_member(void **state)
{
    (void)state;
    const char *src = "{\"b\": {\"eps\": 1e-06, \"list\": [1, 2.5, null]}, \"a\": true, "
                      "\"name\": \"caf\\u00e9 \xc3\xa9\"}   \n\n";
    size_t n_src = strlen(src);
    json_t *qc = qfs_quant_config_build(unit_spec("fp8"), QFS_FMT_QUARK, NULL, 0);
    assert_non_null(qc);
    char *out = rewrite_ok(src, qc, NULL);
    /* every source byte up to the end of the last member is kept */
    const char *last = strstr(src, "\"}");
    size_t keep = (size_t)(last - src) + 1;
    assert_memory_equal(out, src, keep);
    assert_non_null(strstr(out, "1e-06"));
    assert_non_null(strstr(out, "caf\\u00e9 \xc3\xa9"));
    /* ... and so is what followed the closing brace */
    size_t olen = strlen(out);
    assert_memory_equal(out + olen - 6, "}   \n\n", 6);
    assert_true(olen > n_src);
    json_t *got = parse(out), *want = parse(src);
    json_object_set(want, "quantization_config", qc);
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    json_decref(qc);
    free(out);
}

static void test_config_empty_object(void **state)
{
    (void)state;
    json_t *qc = small_qc();
    const char *expected = "{\n"
                           "  \"quantization_config\": {\n"
                           "    \"quant_method\": \"quark\",\n"
                           "    \"x\": [\n"
                           "      1,\n"
                           "      2\n"
                           "    ],\n"
                           "    \"y\": {}\n"
                           "  }\n"
                           "}";
    char *out = rewrite_ok("{}", qc, NULL);
    assert_string_equal(out, expected);
    free(out);
    /* blanks inside the empty object are dropped, those after it kept */
    out = rewrite_ok("{ \n }\n", qc, NULL);
    json_t *j = parse(out);
    assert_int_equal(json_object_size(j), 1);
    assert_true(json_equal(json_object_get(j, "quantization_config"), qc));
    assert_int_equal(out[0], '{');
    assert_int_equal(out[strlen(out) - 1], '\n');
    assert_int_equal(out[strlen(out) - 2], '}');
    json_decref(j);
    free(out);
    json_decref(qc);
}

static void test_config_compact_source(void **state)
{
    (void)state;
    json_t *qc = json_pack("{s:i}", "bits", 8);
    char *out = rewrite_ok("{\"a\":1}", qc, NULL);
    assert_string_equal(out, "{\"a\":1,\n  \"quantization_config\": {\n    \"bits\": 8\n  }\n}");
    free(out);
    json_decref(qc);
}

static void test_config_already_quantized(void **state)
{
    (void)state;
    const char *src = "{\"a\": 1, \"quantization_config\": {\"quant_method\": \"fp8\"}}";
    rewrite_fails(src, strlen(src), "already quantized");
    /* even a null one counts as present */
    const char *src2 = "{\"quantization_config\": null}";
    rewrite_fails(src2, strlen(src2), "quantization_config");
}

static void test_config_not_json(void **state)
{
    (void)state;
    rewrite_fails("{\"a\": 1,}", 9, "JSON");
    rewrite_fails("not json", 8, "JSON");
    rewrite_fails("", 0, NULL);
    rewrite_fails("{\"a\": 1} {}", 11, NULL);
    /* the length is honoured: the text is cut inside the object */
    rewrite_fails("{\"a\": 1}", 6, NULL);
}

static void test_config_top_level_not_object(void **state)
{
    (void)state;
    rewrite_fails("[]", 2, "object");
    rewrite_fails("[{\"a\": 1}]", 10, "object");
}

/* ---- qfs_quant_config_build ---- */

static const char *const SPEC_KEYS[] = {
    "block_size", "ch_axis", "dtype", "enable_buffer_reuse", "group_size", "is_dynamic",
    "is_scale_quant", "max_input_numel", "mx_element_dtype", "observer_cls", "qscheme",
    "round_method", "scale_calculation_mode", "scale_format", "scale_type", "symmetric",
    "zero_point_type",
};

/* Checks one QTensorConfig.to_dict(); ch_axis < 0 means null. */
static void check_tensor_spec(const json_t *t, const char *dtype, const char *qscheme,
                              int ch_axis, bool dynamic)
{
    assert_true(json_is_object(t));
    assert_int_equal(json_object_size(t), sizeof SPEC_KEYS / sizeof SPEC_KEYS[0]);
    for (size_t i = 0; i < sizeof SPEC_KEYS / sizeof SPEC_KEYS[0]; i++)
        if (!json_object_get(t, SPEC_KEYS[i])) fail_msg("tensor spec lacks '%s'", SPEC_KEYS[i]);
    assert_string_equal(json_string_value(json_object_get(t, "dtype")), dtype);
    assert_string_equal(json_string_value(json_object_get(t, "qscheme")), qscheme);
    if (ch_axis < 0) {
        assert_true(json_is_null(json_object_get(t, "ch_axis")));
    } else {
        assert_true(json_is_integer(json_object_get(t, "ch_axis")));
        assert_int_equal(json_integer_value(json_object_get(t, "ch_axis")), ch_axis);
    }
    assert_true(json_is_boolean(json_object_get(t, "is_dynamic")));
    assert_int_equal(json_is_true(json_object_get(t, "is_dynamic")), dynamic);
    assert_true(json_is_true(json_object_get(t, "symmetric")));
    assert_true(json_is_null(json_object_get(t, "group_size")));
    assert_true(json_is_null(json_object_get(t, "block_size")));
    assert_string_equal(json_string_value(json_object_get(t, "round_method")), "half_even");
    assert_string_equal(json_string_value(json_object_get(t, "scale_type")), "float");
    assert_string_equal(json_string_value(json_object_get(t, "observer_cls")),
                        strcmp(qscheme, "per_tensor") == 0 ? "PerTensorMinMaxObserver"
                                                           : "PerChannelMinMaxObserver");
    assert_int_equal(json_integer_value(json_object_get(t, "max_input_numel")), 4194304);
    assert_string_equal(json_string_value(json_object_get(t, "zero_point_type")), "int32");
}

/* The parts every spec shares; returns global_quant_config. */
static const json_t *check_common(const json_t *qc, const char *const *exclude, size_t n_ex)
{
    assert_true(json_is_object(qc));
    assert_string_equal(json_string_value(json_object_get(qc, "quant_method")), "quark");
    assert_string_equal(json_string_value(json_object_get(qc, "quant_mode")), "eager_mode");
    assert_true(json_is_null(json_object_get(qc, "algo_config")));
    assert_true(json_is_null(json_object_get(qc, "softmax_quant_spec")));
    assert_true(json_is_false(json_object_get(qc, "kv_cache_post_rope")));
    assert_true(json_is_string(json_object_get(qc, "version")));
    static const char *const empty_objs[] = {"layer_quant_config", "layer_type_quant_config",
                                             "kv_cache_quant_config"};
    for (size_t i = 0; i < 3; i++) {
        const json_t *o = json_object_get(qc, empty_objs[i]);
        assert_true(json_is_object(o));
        assert_int_equal(json_object_size(o), 0);
    }
    const json_t *ex = json_object_get(qc, "exclude");
    assert_true(json_is_array(ex));
    assert_int_equal(json_array_size(ex), n_ex);
    for (size_t i = 0; i < n_ex; i++)
        assert_string_equal(json_string_value(json_array_get(ex, i)), exclude[i]);
    /* export: exactly JsonExporterConfig's five fields (transformers does
     * JsonExporterConfig(**export)) */
    const json_t *exp = json_object_get(qc, "export");
    assert_true(json_is_object(exp));
    assert_int_equal(json_object_size(exp), 5);
    const json_t *kv = json_object_get(exp, "kv_cache_group");
    assert_true(json_is_array(kv));
    assert_int_equal(json_array_size(kv), 0);
    const json_t *mks = json_object_get(exp, "min_kv_scale");
    assert_true(json_is_real(mks));
    assert_true(json_real_value(mks) == 0.0);
    assert_string_equal(json_string_value(json_object_get(exp, "pack_method")), "reorder");
    assert_string_equal(json_string_value(json_object_get(exp, "weight_format")),
                        "real_quantized");
    assert_true(json_is_null(json_object_get(exp, "weight_merge_groups")));
    /* layer config: exactly bias, input_tensors, output_tensors, target_device, weight */
    const json_t *g = json_object_get(qc, "global_quant_config");
    assert_true(json_is_object(g));
    assert_int_equal(json_object_size(g), 5);
    assert_true(json_is_null(json_object_get(g, "bias")));
    assert_true(json_is_null(json_object_get(g, "output_tensors")));
    assert_true(json_is_null(json_object_get(g, "target_device")));
    assert_non_null(json_object_get(g, "input_tensors"));
    return g;
}

/* Per-layer rules: Quark's layer_quant_config maps each glob to a whole layer config (bias,
 * input_tensors, output_tensors, target_device, weight) of its spec; the global config stays
 * the view's spec; layer_type_quant_config stays empty. */
static void test_quant_config_layers(void **state)
{
    (void)state;
    const qfs_layer_rule rules[] = {{"model.layers.*.mlp.down_proj", unit_spec("int8-channel"), false},
                                    {"model.layers.0.*", unit_spec("fp8"), false}};
    json_t *qc = qfs_quant_config_build_layers(unit_spec("int4-g128"), QFS_FMT_QUARK, rules, 2,
                                               NULL, 0);
    const json_t *gw = json_object_get(json_object_get(qc, "global_quant_config"), "weight");
    assert_string_equal(json_string_value(json_object_get(gw, "dtype")), "int4");
    assert_int_equal(json_integer_value(json_object_get(gw, "group_size")), 128);
    const json_t *lq = json_object_get(qc, "layer_quant_config");
    assert_int_equal(json_object_size(lq), 2);
    assert_int_equal(json_object_size(json_object_get(qc, "layer_type_quant_config")), 0);
    const json_t *down = json_object_get(lq, "model.layers.*.mlp.down_proj");
    assert_int_equal(json_object_size(down), 5);
    check_tensor_spec(json_object_get(down, "weight"), "int8", "per_channel", 0, false);
    assert_true(json_is_null(json_object_get(down, "input_tensors")));
    assert_true(json_is_null(json_object_get(down, "bias")));
    const json_t *l0 = json_object_get(lq, "model.layers.0.*");
    check_tensor_spec(json_object_get(l0, "weight"), "fp8_e4m3", "per_tensor", -1, false);
    check_tensor_spec(json_object_get(l0, "input_tensors"), "fp8_e4m3", "per_tensor", -1, true);
    json_decref(qc);
    /* the other formats take no rules (refused before) and write their usual config */
    qc = qfs_quant_config_build_layers(unit_spec("int4-g128"), QFS_FMT_AWQ, rules, 2, NULL, 0);
    assert_null(json_object_get(qc, "layer_quant_config"));
    json_decref(qc);
}

static void test_quant_config_int8(void **state)
{
    (void)state;
    const char *const ex[] = {"lm_head", "model.layers.0.mlp.down_proj"};
    json_t *qc = qfs_quant_config_build(unit_spec("int8"), QFS_FMT_QUARK, ex, 2);
    const json_t *g = check_common(qc, ex, 2);
    check_tensor_spec(json_object_get(g, "weight"), "int8", "per_tensor", -1, false);
    assert_true(json_is_null(json_object_get(g, "input_tensors")));
    json_decref(qc);
}

static void test_quant_config_int8_channel(void **state)
{
    (void)state;
    json_t *qc = qfs_quant_config_build(unit_spec("int8-channel"), QFS_FMT_QUARK, NULL, 0);
    const json_t *g = check_common(qc, NULL, 0);
    check_tensor_spec(json_object_get(g, "weight"), "int8", "per_channel", 0, false);
    assert_true(json_is_null(json_object_get(g, "input_tensors")));
    json_decref(qc);
}

static void test_quant_config_w8a8_int8(void **state)
{
    (void)state;
    const char *const ex[] = {"lm_head"};
    json_t *qc = qfs_quant_config_build(unit_spec("w8a8-int8"), QFS_FMT_QUARK, ex, 1);
    const json_t *g = check_common(qc, ex, 1);
    check_tensor_spec(json_object_get(g, "weight"), "int8", "per_channel", 0, false);
    /* dynamic per-token: per_channel on axis 1 */
    check_tensor_spec(json_object_get(g, "input_tensors"), "int8", "per_channel", 1, true);
    json_decref(qc);
}

static void test_quant_config_fp8(void **state)
{
    (void)state;
    json_t *qc = qfs_quant_config_build(unit_spec("fp8"), QFS_FMT_QUARK, NULL, 0);
    const json_t *g = check_common(qc, NULL, 0);
    check_tensor_spec(json_object_get(g, "weight"), "fp8_e4m3", "per_tensor", -1, false);
    check_tensor_spec(json_object_get(g, "input_tensors"), "fp8_e4m3", "per_tensor", -1, true);
    json_decref(qc);
}

static void test_quant_config_fp8_channel(void **state)
{
    (void)state;
    json_t *qc = qfs_quant_config_build(unit_spec("fp8-channel"), QFS_FMT_QUARK, NULL, 0);
    const json_t *g = check_common(qc, NULL, 0);
    check_tensor_spec(json_object_get(g, "weight"), "fp8_e4m3", "per_channel", 0, false);
    check_tensor_spec(json_object_get(g, "input_tensors"), "fp8_e4m3", "per_channel", 1, true);
    json_decref(qc);
}

static void test_quant_config_in_config_json(void **state)
{
    (void)state;
    /* the real object through qfs_config_rewrite: 0.0 stays a float, null/true/false kept */
    json_t *qc = qfs_quant_config_build(unit_spec("int8"), QFS_FMT_QUARK, NULL, 0);
    char *out = rewrite_ok("{\"model_type\": \"llama\"}", qc, NULL);
    assert_non_null(strstr(out, "\n      \"min_kv_scale\": 0.0,\n"));
    assert_non_null(strstr(out, "\n      \"kv_cache_group\": [],\n"));
    assert_non_null(strstr(out, "\n    \"exclude\": [],\n"));
    assert_non_null(strstr(out, "\n      \"input_tensors\": null,\n"));
    json_t *j = parse(out);
    assert_true(json_equal(json_object_get(j, "quantization_config"), qc));
    json_decref(j);
    free(out);
    json_decref(qc);
}

/* ---- qfs_index_rewrite ---- */

#define F1 "model-00001-of-00002.safetensors"
#define F2 "model-00002-of-00002.safetensors"

typedef struct fake_plans {
    const char *names[2];
    const qfs_plan *plans[2];
    unsigned calls;
} fake_plans;

static const qfs_plan *fake_plan_for(void *ctx, const char *file)
{
    fake_plans *f = ctx;
    f->calls++;
    for (int i = 0; i < 2; i++)
        if (f->names[i] && strcmp(f->names[i], file) == 0) return f->plans[i];
    return NULL;
}

/* A plan with just what the index needs: tensor names, header and file sizes. */
static void fake_plan(qfs_plan *p, qfs_plan_tensor *storage, const char *const *names,
                      const uint64_t *sizes, size_t n, uint64_t header_size)
{
    memset(p, 0, sizeof *p);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memset(&storage[i], 0, sizeof storage[i]);
        storage[i].name = (char *)names[i];
        storage[i].offset = off;
        storage[i].size = sizes[i];
        off += sizes[i];
    }
    p->tensors = storage;
    p->n_tensors = n;
    p->header_size = header_size;
    p->file_size = header_size + off;
}

typedef struct index_fixture {
    qfs_plan p1, p2;
    qfs_plan_tensor t1[4], t2[1];
    fake_plans fp;
} index_fixture;

/* F1: a.weight_scale 4, a.bias 8, a.weight 6, a.weight_zero_point 1 (19 bytes of data);
 * F2: b.weight 16 */
static void make_fixture(index_fixture *x)
{
    static const char *const n1[] = {"a.weight_scale", "a.bias", "a.weight",
                                     "a.weight_zero_point"};
    static const uint64_t s1[] = {4, 8, 6, 1};
    static const char *const n2[] = {"b.weight"};
    static const uint64_t s2[] = {16};
    fake_plan(&x->p1, x->t1, n1, s1, 4, 80);
    fake_plan(&x->p2, x->t2, n2, s2, 1, 64);
    x->fp = (fake_plans){{F1, F2}, {&x->p1, &x->p2}, 0};
}

static char *index_ok(const char *text, fake_plans *fp, size_t *out_len)
{
    char *out = NULL;
    size_t len = 0;
    qfs_error err = {{0}};
    int rc = qfs_index_rewrite(text, strlen(text), fake_plan_for, fp, IDX_PATH, &out, &len, NULL,
                               &err);
    if (rc) fail_msg("rc %d: %s", rc, err.msg);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));   /* NUL-terminated, length without the NUL */
    if (out_len) *out_len = len;
    return out;
}

static void test_index_rewrite_exact(void **state)
{
    (void)state;
    index_fixture x;
    make_fixture(&x);
    const char *src = "{\"metadata\": {\"total_size\": 999, \"total_parameters\": 42, "
                      "\"note\": \"x/y\"},\n \"weight_map\": {\n"
                      "  \"b.weight\": \"" F2 "\",\n"
                      "  \"a.weight\": \"" F1 "\",\n"
                      "  \"a.bias\": \"" F1 "\"}}";
    size_t len = 0;
    char *out = index_ok(src, &x.fp, &len);
    /* total_size = 19 + 16: each file counted once although F1 has two entries */
    const char *expected = "{\n"
                           "  \"metadata\": {\n"
                           "    \"note\": \"x/y\",\n"
                           "    \"total_parameters\": 42,\n"
                           "    \"total_size\": 35\n"
                           "  },\n"
                           "  \"weight_map\": {\n"
                           "    \"a.bias\": \"" F1 "\",\n"
                           "    \"a.weight\": \"" F1 "\",\n"
                           "    \"a.weight_scale\": \"" F1 "\",\n"
                           "    \"a.weight_zero_point\": \"" F1 "\",\n"
                           "    \"b.weight\": \"" F2 "\"\n"
                           "  }\n"
                           "}\n";
    assert_string_equal(out, expected);
    assert_int_equal(len, strlen(expected));
    assert_true(x.fp.calls > 0);
    free(out);
}

static void test_index_other_files_kept(void **state)
{
    (void)state;
    index_fixture x;
    make_fixture(&x);
    x.fp.names[1] = NULL;   /* F2 is not a quantized file of the view */
    const char *src = "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {"
                      "\"a.weight\": \"" F1 "\", \"b.weight\": \"" F2 "\", "
                      "\"c.weight\": \"extra.safetensors\"}}";
    char *out = index_ok(src, &x.fp, NULL);
    json_t *j = parse(out);
    json_t *wm = json_object_get(j, "weight_map");
    assert_int_equal(json_object_size(wm), 6);
    assert_string_equal(json_string_value(json_object_get(wm, "b.weight")), F2);
    assert_string_equal(json_string_value(json_object_get(wm, "c.weight")), "extra.safetensors");
    assert_string_equal(json_string_value(json_object_get(wm, "a.weight_zero_point")), F1);
    /* only the planned file's data is counted */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "metadata"),
                                                        "total_size")), 19);
    json_decref(j);
    free(out);
}

static void test_index_without_metadata(void **state)
{
    (void)state;
    index_fixture x;
    make_fixture(&x);
    const char *src = "{\"weight_map\": {\"b.weight\": \"" F2 "\"}, \"zz_extra\": [1, 2]}";
    char *out = index_ok(src, &x.fp, NULL);
    json_t *j = parse(out);
    json_t *meta = json_object_get(j, "metadata");
    assert_true(json_is_object(meta));
    assert_int_equal(json_object_size(meta), 1);
    assert_int_equal(json_integer_value(json_object_get(meta, "total_size")), 16);
    /* other top-level members kept */
    json_t *extra = json_object_get(j, "zz_extra");
    assert_int_equal(json_array_size(extra), 2);
    assert_int_equal(json_object_size(json_object_get(j, "weight_map")), 1);
    /* sorted keys, trailing newline */
    assert_true(strstr(out, "\"metadata\"") < strstr(out, "\"weight_map\""));
    assert_true(strstr(out, "\"weight_map\"") < strstr(out, "\"zz_extra\""));
    assert_int_equal(out[strlen(out) - 1], '\n');
    assert_int_equal(out[strlen(out) - 2], '}');
    json_decref(j);
    free(out);
}

static void test_index_weight_map_covers_plan(void **state)
{
    (void)state;
    /* an index listing one name of F1 gets every output tensor of F1 */
    index_fixture x;
    make_fixture(&x);
    char *out = index_ok("{\"weight_map\": {\"a.weight\": \"" F1 "\"}}", &x.fp, NULL);
    json_t *j = parse(out);
    json_t *wm = json_object_get(j, "weight_map");
    assert_int_equal(json_object_size(wm), x.p1.n_tensors);
    for (size_t i = 0; i < x.p1.n_tensors; i++)
        assert_string_equal(json_string_value(json_object_get(wm, x.p1.tensors[i].name)), F1);
    json_decref(j);
    free(out);
}

static void test_index_non_ascii_like_python(void **state)
{
    (void)state;
    index_fixture x;
    make_fixture(&x);
    char *out = index_ok("{\"metadata\": {\"note\": \"caf\xc3\xa9\"}, \"weight_map\": {}}", &x.fp,
                         NULL);
    json_t *j = parse(out);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "metadata"),
                                                          "note")), "caf\xc3\xa9");
    json_decref(j);
    assert_non_null(strstr(out, "\"caf\\u00e9\""));   /* escaped like Python's json.dumps */
    free(out);
}

/* Lowercases the hex digits of \uXXXX escapes (Python's json.dumps writes them so). */
static void lower_escapes(char *s)
{
    for (; *s; s++) {
        if (*s != '\\') continue;
        if (s[1] == 'u')
            for (int i = 2; i < 6; i++) s[i] = (char)tolower((unsigned char)s[i]);
        s++;
    }
}

/* The weight_map is written by hand, not dumped by jansson: it must be byte for byte what
 * jansson's dump of the same document gives (sorted keys, indent 2, ASCII with lowercase
 * escapes), for names with quotes, backslashes, control bytes, DEL, '/', 2-, 3- and 4-byte
 * UTF-8, and a name that both a kept entry and two quantized files claim (the last file
 * mentioned first in the index wins, as json_object_set would have it). */
static void test_index_weight_map_like_jansson(void **state)
{
    (void)state;
    static const char *const n1[] = {"q\"uote.weight", "back\\slash", "ctl\x01\x1f\n\t.w",
                                     "del\x7f/slash", "caf\xc3\xa9", "dup"};
    static const char *const n2[] = {"\xe4\xb8\xad.weight", "smile\xf0\x9f\x98\x80", "dup",
                                     "kept"};
    static const uint64_t s1[] = {1, 2, 3, 4, 5, 6}, s2[] = {7, 8, 9, 10};
    qfs_plan p1, p2;
    qfs_plan_tensor t1[6], t2[4];
    fake_plan(&p1, t1, n1, s1, 6, 8);
    fake_plan(&p2, t2, n2, s2, 4, 16);
    fake_plans fp = {{"f\xc3\xa9.safetensors", F2}, {&p1, &p2}, 0};
    const char *src = "{\"z\": {\"b\": [1, \"x\"], \"a\": null}, \"weight_map\": {"
                      "\"other\\u0001\": \"plain.bin\", \"" "kept" "\": \"plain.bin\", "
                      "\"x\": \"" F2 "\", \"y\": \"f\\u00e9.safetensors\"}, \"a\": 1}";
    char *out = index_ok(src, &fp, NULL);

    json_t *want = parse(src), *wm = json_object_get(want, "weight_map"), *nw = json_object();
    json_object_set_new(nw, "other\x01", json_string("plain.bin"));
    json_object_set_new(nw, "kept", json_string("plain.bin"));
    for (size_t i = 0; i < p2.n_tensors; i++)   /* F2 is mentioned first */
        json_object_set_new(nw, t2[i].name, json_string(F2));
    for (size_t i = 0; i < p1.n_tensors; i++)
        json_object_set_new(nw, t1[i].name, json_string("f\xc3\xa9.safetensors"));
    (void)wm;
    json_object_set_new(want, "weight_map", nw);
    json_t *meta = json_object();
    json_object_set_new(meta, "total_size", json_integer(21 + 34));
    json_object_set_new(want, "metadata", meta);
    char *text = json_dumps(want, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    lower_escapes(text);
    size_t n = strlen(text);
    char *expect = malloc(n + 2);
    memcpy(expect, text, n);
    memcpy(expect + n, "\n", 2);
    assert_string_equal(out, expect);
    assert_non_null(strstr(out, "\"dup\": \"f\\u00e9.safetensors\""));
    assert_non_null(strstr(out, "\"smile\\ud83d\\ude00\": \"" F2 "\""));
    free(expect);
    free(text);
    json_decref(want);
    free(out);
}

static void index_fails(const char *text, const char *word)
{
    index_fixture x;
    make_fixture(&x);
    char *out = NULL;
    size_t len = 0;
    qfs_error err = {{0}};
    assert_int_equal(qfs_index_rewrite(text, strlen(text), fake_plan_for, &x.fp, IDX_PATH, &out,
                                       &len, NULL, &err), -EINVAL);
    assert_contains(err.msg, IDX_PATH);
    if (word) assert_contains(err.msg, word);
}

/* Rewrites text with each parser: the streaming parser must read it (`streamed`) or leave it
 * (-EAGAIN, nothing set); either way qfs_index_rewrite gives exactly the tree parser's result:
 * the same bytes and source map, or the same error. Returns the tree's rc. */
static int compare_index_parsers(const char *text, fake_plans *fp, bool streamed)
{
    char *out[3] = {NULL, NULL, NULL};
    size_t len[3] = {0, 0, 0};
    qfs_index_map map[3];
    qfs_error err[3] = {{{0}}, {{0}}, {{0}}};
    static const qfs_json_parser which[3] = {QFS_JSON_TREE, QFS_JSON_STREAM, QFS_JSON_AUTO};
    int rc[3];
    for (int i = 0; i < 3; i++) {
        memset(&map[i], 0, sizeof map[i]);
        rc[i] = qfs_index_rewrite_with(which[i], text, strlen(text), fake_plan_for, fp, IDX_PATH,
                                       &out[i], &len[i], &map[i], &err[i]);
    }
    if (!streamed && rc[1] != -EAGAIN) fail_msg("the streaming parser took it: rc %d", rc[1]);
    if (streamed && rc[1] == -EAGAIN) fail_msg("the streaming parser left it (tree: %d %s)",
                                               rc[0], err[0].msg);
    if (!streamed) assert_null(out[1]), assert_int_equal(map[1].n, 0), assert_null(map[1].names);
    for (int i = 2; i >= 1; i--) {
        if (i == 1 && !streamed) continue;
        assert_int_equal(rc[i], rc[0]);
        if (rc[0]) {
            assert_string_equal(err[i].msg, err[0].msg);
            continue;
        }
        assert_int_equal(len[i], len[0]);
        assert_memory_equal(out[i], out[0], len[0]);
        assert_int_equal(map[i].n, map[0].n);
        for (size_t k = 0; k < map[0].n; k++) {
            assert_string_equal(map[i].names[k], map[0].names[k]);
            assert_string_equal(map[i].files[k], map[0].files[k]);
        }
    }
    for (int i = 0; i < 3; i++) {
        free(out[i]);
        qfs_index_map_free(&map[i]);
    }
    return rc[0];
}

static void test_index_stream_reads_common_indexes(void **state)
{
    (void)state;
    index_fixture x;
    make_fixture(&x);
    static const char *const ok[] = {
        "{\"metadata\": {\"total_size\": 999, \"total_parameters\": 42, \"note\": \"x/y\"},\n"
        " \"weight_map\": {\"b.weight\": \"" F2 "\", \"a.weight\": \"" F1 "\",\n"
        "  \"a.bias\": \"" F1 "\", \"c\": \"other.bin\", \"d\": \"" F1 "\"}}",
        /* weight_map first, odd values elsewhere (skipped, then read by jansson) */
        "{\"weight_map\": {\"a.weight\": \"" F1 "\"}, \"x\": [1, {\"weight_map\": 3}, null, true],"
        " \"metadata\": {\"total_size\": 1.5e3}}",
        "{\"weight_map\": {}}\n",
        /* a later top-level key replaces an earlier one in jansson; both parsers keep that */
        "{\"metadata\": {\"a\": 1}, \"weight_map\": {\"b.weight\": \"" F2 "\"},"
        " \"metadata\": {\"b\": 2}}",
        "{\"weight_map\": {\"b.weight\": \"" F2 "\", \"c\": \"" F2 "\", \"e\": \"" F1 "\"}}  \t\r\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(compare_index_parsers(ok[i], &x.fp, true), 0);
}

static void test_index_stream_leaves_the_rest_to_the_tree(void **state)
{
    (void)state;
    index_fixture x;
    make_fixture(&x);
    static const struct { const char *text; int rc; } rest[] = {
        /* a name twice: jansson keeps its first place and its last file */
        {"{\"weight_map\": {\"a\": \"" F1 "\", \"b\": \"" F2 "\", \"a\": \"" F2 "\"}}", 0},
        {"{\"weight_map\": {\"a\": \"" F1 "\"}, \"weight_map\": {\"b\": \"" F2 "\"}}", 0},
        {"{\"weight_map\": {\"caf\xc3\xa9\": \"" F1 "\"}}", 0},
        {"{\"weight_map\": {\"a\\u0041\": \"" F1 "\"}}", 0},
        {"{\"weight_map\": {\"a\": 1}}", -EINVAL},
        {"{\"weight_map\": {\"a\": [\"" F1 "\"]}}", -EINVAL},
        {"{\"weight_map\": {\"a\": null}}", -EINVAL},
        {"{\"weight_map\": [\"a\"]}", -EINVAL},
        {"{\"metadata\": {}}", -EINVAL},
        {"[{\"weight_map\": {}}]", -EINVAL},
        {"{\"weight_map\": {}} \"ab", -EINVAL},
        {"{\"weight_map\": {\"a\": \"" F1 "\"}", -EINVAL},
        {"{\"weight_map\": {\"a\": \"" F1 "\"}}}", -EINVAL},
        {"{\"weight_map\": {\"a\": \"" F1 "\"\v}}", -EINVAL},
        {"", -EINVAL},
        /* JSON to yajl, beyond jansson's numbers */
        {"{\"metadata\": {\"total_size\": 99999999999999999999}, \"weight_map\": {}}", -EINVAL},
        {"{\"x\": 1e999, \"weight_map\": {}}", -EINVAL},
    };
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) {
        int rc = compare_index_parsers(rest[i].text, &x.fp, false);
        if (rc != rest[i].rc) fail_msg("case %zu: tree rc %d, expected %d", i, rc, rest[i].rc);
    }
}

static void test_index_errors(void **state)
{
    (void)state;
    index_fails("{\"weight_map\": ", "JSON");
    index_fails("{\"metadata\": {}}", "weight_map");
    index_fails("{\"weight_map\": []}", "weight_map");
    index_fails("[1]", "weight_map");
    index_fails("{\"weight_map\": {\"a.weight\": 3}}", "a.weight");
}

/* ---- qfs_quant_config_build per format ---- */

static const json_t *obj_get(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!v) fail_msg("no key '%s'", key);
    return v;
}

static void expect_str(const json_t *o, const char *key, const char *value)
{
    const json_t *v = obj_get(o, key);
    if (!json_is_string(v) || strcmp(json_string_value(v), value) != 0)
        fail_msg("'%s' is not \"%s\"", key, value);
}

static void expect_int(const json_t *o, const char *key, long long value)
{
    const json_t *v = obj_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) != value)
        fail_msg("'%s' is not %lld", key, value);
}

static void expect_null(const json_t *o, const char *key)
{
    if (!json_is_null(obj_get(o, key))) fail_msg("'%s' is not null", key);
}

static void expect_bool(const json_t *o, const char *key, bool value)
{
    const json_t *v = obj_get(o, key);
    if (!json_is_boolean(v) || json_is_true(v) != value)
        fail_msg("'%s' is not %s", key, value ? "true" : "false");
}

static void expect_str_list(const json_t *o, const char *key, const char *const *items, size_t n)
{
    const json_t *a = obj_get(o, key);
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(json_string_value(json_array_get(a, i)), items[i]);
}

/* Only keys from `allowed` (the reader forbids others). */
static void expect_keys_within(const json_t *o, const char *const *allowed, size_t n)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        (void)v;
        size_t i = 0;
        while (i < n && strcmp(allowed[i], key) != 0) i++;
        if (i == n) fail_msg("unexpected key '%s'", key);
    }
}

/* Quark's JsonExporterConfig: exactly its five fields (FORMAT.md §6.1). */
static void expect_export(const json_t *o)
{
    const json_t *e = obj_get(o, "export");
    assert_int_equal(json_object_size(e), 5);
    assert_int_equal(json_array_size(obj_get(e, "kv_cache_group")), 0);
    assert_true(json_is_real(obj_get(e, "min_kv_scale")));
    expect_str(e, "pack_method", "reorder");
    expect_str(e, "weight_format", "real_quantized");
    expect_null(e, "weight_merge_groups");
}

static const char *const EXCL[] = {"lm_head", "model.layers.0.mlp.down_proj"};

static void test_quant_config_awq(void **state)
{
    (void)state;
    /* FORMAT.md §6.2: bits 4, group_size G, zero_point = not symmetric, version gemm,
     * pack_method reorder,
     * modules_to_not_convert = the exclusion list */
    static const struct { const char *spec; int group; bool zp; } cases[] = {
        {"uint4", 128, true}, {"uint4-g32", 32, true}, {"uint4-g64", 64, true},
        {"int4", 128, false}, {"int4-g32", 32, false}, {"int4-g128", 128, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *qc = qfs_quant_config_build(unit_spec(cases[i].spec), FA, EXCL, 2);
        assert_non_null(qc);
        assert_int_equal(json_object_size(qc), 8);
        expect_int(qc, "bits", 4);
        expect_export(qc);
        expect_int(qc, "group_size", cases[i].group);
        expect_str_list(qc, "modules_to_not_convert", EXCL, 2);
        expect_str(qc, "pack_method", "reorder");
        expect_str(qc, "quant_method", "awq");
        expect_str(qc, "version", "gemm");
        expect_bool(qc, "zero_point", cases[i].zp);
        json_decref(qc);
    }
}

static void test_quant_config_fp8_format(void **state)
{
    (void)state;
    /* per tensor, FORMAT.md §6.3 (dynamic activations, no KV cache): exactly
     * activation_scheme, export, ignored_layers, kv_cache_scheme (null), quant_method */
    json_t *qc = qfs_quant_config_build(unit_spec("fp8"), F8, EXCL, 2);
    assert_non_null(qc);
    assert_int_equal(json_object_size(qc), 5);
    expect_str(qc, "activation_scheme", "dynamic");
    expect_export(qc);
    expect_str_list(qc, "ignored_layers", EXCL, 2);
    expect_null(qc, "kv_cache_scheme");
    expect_str(qc, "quant_method", "fp8");
    json_decref(qc);
    /* block (FORMAT.md §6.3, §9): the config both transformers and vLLM accept */
    qc = qfs_quant_config_build(unit_spec("fp8-block"), F8, EXCL, 1);
    assert_non_null(qc);
    assert_int_equal(json_object_size(qc), 4);
    expect_str(qc, "quant_method", "fp8");
    expect_str(qc, "activation_scheme", "dynamic");
    expect_str_list(qc, "modules_to_not_convert", EXCL, 1);
    const json_t *wbs = obj_get(qc, "weight_block_size");
    assert_int_equal(json_array_size(wbs), 2);
    assert_int_equal(json_integer_value(json_array_get(wbs, 0)), 128);
    assert_int_equal(json_integer_value(json_array_get(wbs, 1)), 128);
    json_decref(qc);
}

static const char *const CT_ARG_KEYS[] = {
    "num_bits", "type", "symmetric", "group_size", "strategy", "block_structure", "dynamic",
    "actorder", "observer", "observer_kwargs", "scale_dtype", "zp_dtype",
};
static const char *const CT_SCHEME_KEYS[] = {
    "targets", "weights", "input_activations", "output_activations", "format",
};

/* One QuantizationArgs; group 0 = null, block 0 = null. */
static void expect_ct_args(const json_t *a, int bits, const char *type, const char *strategy,
                           int group, int block, bool dynamic)
{
    assert_true(json_is_object(a));
    expect_keys_within(a, CT_ARG_KEYS, sizeof CT_ARG_KEYS / sizeof CT_ARG_KEYS[0]);
    expect_int(a, "num_bits", bits);
    expect_str(a, "type", type);
    expect_str(a, "strategy", strategy);
    expect_bool(a, "symmetric", true);
    expect_bool(a, "dynamic", dynamic);
    if (group) expect_int(a, "group_size", group);
    else if (json_object_get(a, "group_size")) expect_null(a, "group_size");
    if (block) {
        const json_t *bs = obj_get(a, "block_structure");
        assert_int_equal(json_array_size(bs), 2);
        assert_int_equal(json_integer_value(json_array_get(bs, 0)), block);
        assert_int_equal(json_integer_value(json_array_get(bs, 1)), block);
    } else if (json_object_get(a, "block_structure")) {
        expect_null(a, "block_structure");
    }
}

/* The config of one spec in compressed-tensors (FORMAT.md §6.4); returns group_0. */
static const json_t *expect_ct_config(const json_t *qc, const char *format)
{
    assert_non_null(qc);
    expect_str(qc, "quant_method", "compressed-tensors");
    expect_str(qc, "format", format);
    expect_str(qc, "quantization_status", "compressed");
    expect_str_list(qc, "ignore", EXCL, 2);
    expect_null(qc, "kv_cache_scheme");
    const json_t *groups = obj_get(qc, "config_groups");
    assert_int_equal(json_object_size(groups), 1);
    const json_t *g = obj_get(groups, "group_0");
    expect_keys_within(g, CT_SCHEME_KEYS, sizeof CT_SCHEME_KEYS / sizeof CT_SCHEME_KEYS[0]);
    const char *const linear[] = {"Linear"};
    expect_str_list(g, "targets", linear, 1);
    if (json_object_get(g, "format")) expect_str(g, "format", format);
    if (json_object_get(g, "output_activations")) expect_null(g, "output_activations");
    return g;
}

static void test_quant_config_compressed_tensors(void **state)
{
    (void)state;
    json_t *qc;
    const json_t *g;
    /* int8-channel: W8A16, pack-quantized, channel, weight-only */
    qc = qfs_quant_config_build(unit_spec("int8-channel"), FC, EXCL, 2);
    g = expect_ct_config(qc, "pack-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "int", "channel", 0, 0, false);
    expect_null(g, "input_activations");
    json_decref(qc);
    /* w8a8-int8: int-quantized, dynamic per-token int8 inputs */
    qc = qfs_quant_config_build(unit_spec("w8a8-int8"), FC, EXCL, 2);
    g = expect_ct_config(qc, "int-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "int", "channel", 0, 0, false);
    expect_ct_args(obj_get(g, "input_activations"), 8, "int", "token", 0, 0, true);
    json_decref(qc);
    /* fp8: float-quantized, tensor weights, dynamic per-tensor inputs */
    qc = qfs_quant_config_build(unit_spec("fp8"), FC, EXCL, 2);
    g = expect_ct_config(qc, "float-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "float", "tensor", 0, 0, false);
    expect_ct_args(obj_get(g, "input_activations"), 8, "float", "tensor", 0, 0, true);
    json_decref(qc);
    /* fp8-channel: FP8_DYNAMIC, channel weights, dynamic per-token inputs */
    qc = qfs_quant_config_build(unit_spec("fp8-channel"), FC, EXCL, 2);
    g = expect_ct_config(qc, "float-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "float", "channel", 0, 0, false);
    expect_ct_args(obj_get(g, "input_activations"), 8, "float", "token", 0, 0, true);
    json_decref(qc);
    /* fp8-block: FP8_BLOCK, block [128, 128] weights, dynamic group-128 inputs */
    qc = qfs_quant_config_build(unit_spec("fp8-block"), FC, EXCL, 2);
    g = expect_ct_config(qc, "float-quantized");
    expect_ct_args(obj_get(g, "weights"), 8, "float", "block", 0, 128, false);
    expect_ct_args(obj_get(g, "input_activations"), 8, "float", "group", 128, 0, true);
    json_decref(qc);
    /* int4-gG: W4A16, pack-quantized, group G, symmetric, weight-only */
    static const struct { const char *spec; int group; } g4[] = {
        {"int4", 128}, {"int4-g32", 32}, {"int4-g64", 64}, {"int4-g128", 128},
    };
    for (size_t i = 0; i < 4; i++) {
        qc = qfs_quant_config_build(unit_spec(g4[i].spec), FC, EXCL, 2);
        g = expect_ct_config(qc, "pack-quantized");
        expect_ct_args(obj_get(g, "weights"), 4, "int", "group", g4[i].group, 0, false);
        expect_null(g, "input_activations");
        json_decref(qc);
    }
}

/* One Quark tensor spec, all 16 keys (FORMAT.md §6.1); symmetric -1 = null. */
static void expect_quark_spec(const json_t *t, const char *dtype, const char *qscheme,
                              int group, int symmetric, bool dynamic, const char *observer,
                              bool mx)
{
    assert_true(json_is_object(t));
    assert_int_equal(json_object_size(t), 17);
    expect_null(t, "block_size");
    expect_int(t, "ch_axis", -1);
    expect_str(t, "dtype", dtype);
    expect_bool(t, "enable_buffer_reuse", false);
    expect_int(t, "group_size", group);
    expect_bool(t, "is_dynamic", dynamic);
    expect_bool(t, "is_scale_quant", false);
    expect_int(t, "max_input_numel", 4194304);
    expect_null(t, "mx_element_dtype");
    expect_str(t, "observer_cls", observer);
    expect_str(t, "qscheme", qscheme);
    expect_str(t, "round_method", "half_even");
    if (mx) {
        expect_str(t, "scale_calculation_mode", "even");
        expect_str(t, "scale_format", "e8m0");
    } else {
        expect_null(t, "scale_calculation_mode");
        expect_null(t, "scale_format");
    }
    expect_str(t, "scale_type", "float");
    if (symmetric < 0) expect_null(t, "symmetric");
    else expect_bool(t, "symmetric", symmetric);
    expect_str(t, "zero_point_type", "int32");
}

static const json_t *expect_quark_config(const json_t *qc)
{
    assert_non_null(qc);
    expect_str(qc, "quant_method", "quark");
    expect_export(qc);
    expect_str_list(qc, "exclude", EXCL, 2);
    const json_t *g = obj_get(qc, "global_quant_config");
    assert_int_equal(json_object_size(g), 5);
    expect_null(g, "bias");
    expect_null(g, "output_tensors");
    return g;
}

static void test_quant_config_quark_4bit_and_mx(void **state)
{
    (void)state;
    static const struct { const char *spec, *dtype; int group, sym; } g4[] = {
        {"uint4", "uint4", 128, 0}, {"uint4-g32", "uint4", 32, 0}, {"uint4-g64", "uint4", 64, 0},
        {"int4", "int4", 128, 1}, {"int4-g64", "int4", 64, 1}, {"int4-g128", "int4", 128, 1},
    };
    for (size_t i = 0; i < sizeof g4 / sizeof g4[0]; i++) {
        json_t *qc = qfs_quant_config_build(unit_spec(g4[i].spec), FQ, EXCL, 2);
        const json_t *g = expect_quark_config(qc);
        expect_quark_spec(obj_get(g, "weight"), g4[i].dtype, "per_group", g4[i].group, g4[i].sym,
                          false, "PerGroupMinMaxObserver", false);
        expect_null(g, "input_tensors");   /* weight-only */
        json_decref(qc);
    }
    json_t *qc = qfs_quant_config_build(unit_spec("mxfp4"), FQ, EXCL, 2);
    const json_t *g = expect_quark_config(qc);
    expect_quark_spec(obj_get(g, "weight"), "fp4", "per_group", 32, -1, false,
                      "PerBlockMXObserver", true);
    expect_quark_spec(obj_get(g, "input_tensors"), "fp4", "per_group", 32, -1, true,
                      "PerBlockMXObserver", true);
    json_decref(qc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_keeps_source_text),
        cmocka_unit_test(test_config_result_parses_to_source_plus_member),
        cmocka_unit_test(test_config_empty_object),
        cmocka_unit_test(test_config_compact_source),
        cmocka_unit_test(test_config_already_quantized),
        cmocka_unit_test(test_config_not_json),
        cmocka_unit_test(test_config_top_level_not_object),
        cmocka_unit_test(test_quant_config_int8),
        cmocka_unit_test(test_quant_config_int8_channel),
        cmocka_unit_test(test_quant_config_w8a8_int8),
        cmocka_unit_test(test_quant_config_fp8),
        cmocka_unit_test(test_quant_config_fp8_channel),
        cmocka_unit_test(test_quant_config_in_config_json),
        cmocka_unit_test(test_index_rewrite_exact),
        cmocka_unit_test(test_index_other_files_kept),
        cmocka_unit_test(test_index_without_metadata),
        cmocka_unit_test(test_index_weight_map_covers_plan),
        cmocka_unit_test(test_index_non_ascii_like_python),
        cmocka_unit_test(test_index_weight_map_like_jansson),
        cmocka_unit_test(test_index_errors),
        cmocka_unit_test(test_index_stream_reads_common_indexes),
        cmocka_unit_test(test_index_stream_leaves_the_rest_to_the_tree),
        cmocka_unit_test(test_quant_config_awq),
        cmocka_unit_test(test_quant_config_fp8_format),
        cmocka_unit_test(test_quant_config_compressed_tensors),
        cmocka_unit_test(test_quant_config_quark_4bit_and_mx),
        cmocka_unit_test(test_quant_config_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
