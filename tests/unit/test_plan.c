/* Unit tests of the output planner (core/plan.c) and tensor selection (core/select.c).
 * Expected layout: doc/FORMAT.md §2 and §5 — tensors sorted by dtype
 * descending in safetensors' enum order (... I64 > F64 > F32 > I32 > BF16 > F16 > ... >
 * F8_E4M3 > ... > I8 > U8 ...), then by name bytewise, back to back from offset 0; header =
 * 8-byte LE length + compact JSON with __metadata__ first ({"format":"pt"} + source keys),
 * per-tensor keys dtype, shape, data_offsets, padded with spaces to a multiple of 8. */
#include "unit_util.c"
#include "unit_specs.h"

#include "quarkfs/plan.h"
#include "quarkfs/select.h"

#define PATH "/src/model.safetensors"

/* ---- helpers ---- */

typedef struct expect_tensor {
    const char *name;
    qfs_dtype dtype;
    unsigned ndim;
    uint64_t shape[2];
    uint64_t offset, size;
    qfs_role role;
} expect_tensor;

static void parse_source(const char *json, size_t data_len, qfs_st_file *f)
{
    qfs_error err = {{0}};
    int rc = st_parse_json(json, data_len, PATH, f, &err);
    if (rc) fail_msg("source does not parse: %s", err.msg);
}

static void build_plan(const qfs_st_file *f, const char *spec, const qfs_select_rules *rules,
                       qfs_plan *p)
{
    qfs_error err = {{0}};
    qfs_plan_options o = {.spec = unit_spec(spec), .format = QFS_FMT_QUARK, .rules = rules};
    int rc = qfs_plan_build(f, &o, PATH, p, &err);
    if (rc) fail_msg("plan fails: %d %s", rc, err.msg);
}

static void check_tensors(const qfs_plan *p, const expect_tensor *e, size_t n)
{
    for (size_t i = 0; i < n && i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        if (strcmp(t->name, e[i].name) != 0)
            fail_msg("tensor %zu is '%s', expected '%s'", i, t->name, e[i].name);
        if (t->dtype != e[i].dtype)
            fail_msg("'%s': dtype %s, expected %s", t->name, qfs_dtype_name(t->dtype),
                     qfs_dtype_name(e[i].dtype));
        assert_int_equal(t->ndim, e[i].ndim);
        for (unsigned d = 0; d < e[i].ndim; d++) assert_int_equal(t->shape[d], e[i].shape[d]);
        if (t->offset != e[i].offset || t->size != e[i].size)
            fail_msg("'%s': offset %llu size %llu, expected %llu %llu", t->name,
                     (unsigned long long)t->offset, (unsigned long long)t->size,
                     (unsigned long long)e[i].offset, (unsigned long long)e[i].size);
        assert_int_equal(t->role, e[i].role);
    }
    assert_int_equal(p->n_tensors, n);
}

/* Parses the plan's header JSON (the N bytes after the length) and checks it against the
 * expected tensors: same keys in the same order after __metadata__, dtype/shape/offsets. */
static json_t *check_header(const qfs_plan *p, const expect_tensor *e, size_t n)
{
    assert_true(p->header_size >= 16);
    assert_int_equal(p->header_size % 8, 0);
    uint64_t N = get_le64(p->header);
    assert_int_equal(N, p->header_size - 8);
    const char *js = (const char *)p->header + 8;
    const char *prefix = "{\"__metadata__\":{\"format\":\"pt\"";
    assert_memory_equal(js, prefix, strlen(prefix));
    /* the JSON ends with '}' followed only by spaces (fewer than 8) */
    size_t end = N;
    while (end > 0 && js[end - 1] == ' ') end--;
    assert_true(N - end < 8);
    assert_int_equal(js[end - 1], '}');
    json_error_t jerr;
    json_t *root = json_loadb(js, N, 0, &jerr);
    if (!root) fail_msg("header is not JSON: %s", jerr.text);
    assert_int_equal(json_object_size(root), n + 1);
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (i == 0) {
            assert_string_equal(key, "__metadata__");
            i++;
            continue;
        }
        const expect_tensor *x = &e[i - 1];
        assert_string_equal(key, x->name);
        assert_int_equal(json_object_size(val), 3);
        assert_string_equal(json_string_value(json_object_get(val, "dtype")),
                            qfs_dtype_name(x->dtype));
        json_t *shape = json_object_get(val, "shape");
        assert_int_equal(json_array_size(shape), x->ndim);
        for (unsigned d = 0; d < x->ndim; d++)
            assert_int_equal(json_integer_value(json_array_get(shape, d)), x->shape[d]);
        json_t *offs = json_object_get(val, "data_offsets");
        assert_int_equal(json_array_size(offs), 2);
        assert_int_equal(json_integer_value(json_array_get(offs, 0)), x->offset);
        assert_int_equal(json_integer_value(json_array_get(offs, 1)), x->offset + x->size);
        i++;
    }
    return root;   /* caller checks __metadata__ and frees */
}

/* The planned file (header + zero data) must itself be a valid safetensors file. */
static void check_plan_parses(const qfs_plan *p)
{
    uint8_t *buf = calloc(1, p->file_size);
    assert_non_null(buf);
    memcpy(buf, p->header, p->header_size);
    qfs_st_file f;
    qfs_error err = {{0}};
    int rc = qfs_st_parse(buf, p->file_size, p->file_size, "planned", &f, &err);
    if (rc) fail_msg("planned file does not parse: %s", err.msg);
    assert_int_equal(f.n_tensors, p->n_tensors);
    for (size_t i = 0; i < p->n_tensors; i++) {
        const qfs_st_tensor *t = qfs_st_find(&f, p->tensors[i].name);
        assert_non_null(t);
        assert_int_equal(t->begin, p->tensors[i].offset);
        assert_int_equal(t->end - t->begin, p->tensors[i].size);
    }
    qfs_st_file_free(&f);
    free(buf);
}

static uint64_t sum_sizes(const expect_tensor *e, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) s += e[i].size;
    return s;
}

/* ---- a source file with one tensor of each kind ----
 * JSON order, dtype, shape, bytes, offsets, decision under int8:
 *  0 q_proj.weight        F32  [2,2] 16 [0,16)   quantize
 *  1 lm_head.weight       BF16 [4,2] 16 [16,32)  lm_head
 *  2 embed_tokens.weight  BF16 [4,2] 16 [32,48)  embedding
 *  3 up_proj.weight       BF16 [3,2] 12 [48,60)  quantize
 *  4 up_proj.bias         BF16 [3]    6 [60,66)  not a weight
 *  5 input_layernorm.weight F32 [2]   8 [66,74)  not 2-D
 *  6 model.step           I64  []     8 [74,82)  not a weight
 *  7 down_proj.weight     F16  [2,3] 12 [82,94)  quantize
 *  8 model.mask           U8   [3]    3 [94,97)  not a weight
 *  9 gate_proj.weight     BF16 [0,4]  0 [97,97)  empty */
#define L0 "model.layers.0."
static const char *const SOURCE =
    "{'__metadata__':{'format':'tf','producer':'unit'},"
    "'" L0 "self_attn.q_proj.weight':{'dtype':'F32','shape':[2,2],'data_offsets':[0,16]},"
    "'lm_head.weight':{'dtype':'BF16','shape':[4,2],'data_offsets':[16,32]},"
    "'model.embed_tokens.weight':{'dtype':'BF16','shape':[4,2],'data_offsets':[32,48]},"
    "'" L0 "mlp.up_proj.weight':{'dtype':'BF16','shape':[3,2],'data_offsets':[48,60]},"
    "'" L0 "mlp.up_proj.bias':{'dtype':'BF16','shape':[3],'data_offsets':[60,66]},"
    "'" L0 "input_layernorm.weight':{'dtype':'F32','shape':[2],'data_offsets':[66,74]},"
    "'model.step':{'dtype':'I64','shape':[],'data_offsets':[74,82]},"
    "'" L0 "mlp.down_proj.weight':{'dtype':'F16','shape':[2,3],'data_offsets':[82,94]},"
    "'model.mask':{'dtype':'U8','shape':[3],'data_offsets':[94,97]},"
    "'" L0 "mlp.gate_proj.weight':{'dtype':'BF16','shape':[0,4],'data_offsets':[97,97]}}";
#define SOURCE_DATA 97

#define PT QFS_ROLE_PASSTHROUGH
#define W QFS_ROLE_WEIGHT
#define S QFS_ROLE_SCALE
#define Z QFS_ROLE_ZERO_POINT

/* int8 (per tensor): weight I8 [O,I], scale F32 [], zero point I8 []. Worked out by hand:
 * I64 first, then F32 by name, BF16 by name, I8 by name, U8. */
static const expect_tensor INT8_LAYOUT[] = {
    {"model.step", QFS_DT_I64, 0, {0}, 0, 8, PT},
    {L0 "input_layernorm.weight", QFS_DT_F32, 1, {2}, 8, 8, PT},
    {L0 "mlp.down_proj.weight_scale", QFS_DT_F32, 0, {0}, 16, 4, S},
    {L0 "mlp.up_proj.weight_scale", QFS_DT_F32, 0, {0}, 20, 4, S},
    {L0 "self_attn.q_proj.weight_scale", QFS_DT_F32, 0, {0}, 24, 4, S},
    {"lm_head.weight", QFS_DT_BF16, 2, {4, 2}, 28, 16, PT},
    {"model.embed_tokens.weight", QFS_DT_BF16, 2, {4, 2}, 44, 16, PT},
    {L0 "mlp.gate_proj.weight", QFS_DT_BF16, 2, {0, 4}, 60, 0, PT},
    {L0 "mlp.up_proj.bias", QFS_DT_BF16, 1, {3}, 60, 6, PT},
    {L0 "mlp.down_proj.weight", QFS_DT_I8, 2, {2, 3}, 66, 6, W},
    {L0 "mlp.down_proj.weight_zero_point", QFS_DT_I8, 0, {0}, 72, 1, Z},
    {L0 "mlp.up_proj.weight", QFS_DT_I8, 2, {3, 2}, 73, 6, W},
    {L0 "mlp.up_proj.weight_zero_point", QFS_DT_I8, 0, {0}, 79, 1, Z},
    {L0 "self_attn.q_proj.weight", QFS_DT_I8, 2, {2, 2}, 80, 4, W},
    {L0 "self_attn.q_proj.weight_zero_point", QFS_DT_I8, 0, {0}, 84, 1, Z},
    {"model.mask", QFS_DT_U8, 1, {3}, 85, 3, PT},
};
#define N_INT8 (sizeof INT8_LAYOUT / sizeof INT8_LAYOUT[0])

/* fp8-channel: weight F8_E4M3 [O,I], scale D [O], no zero point. */
static const expect_tensor FP8CH_LAYOUT[] = {
    {"model.step", QFS_DT_I64, 0, {0}, 0, 8, PT},
    {L0 "input_layernorm.weight", QFS_DT_F32, 1, {2}, 8, 8, PT},
    {L0 "self_attn.q_proj.weight_scale", QFS_DT_F32, 1, {2}, 16, 8, S},
    {"lm_head.weight", QFS_DT_BF16, 2, {4, 2}, 24, 16, PT},
    {"model.embed_tokens.weight", QFS_DT_BF16, 2, {4, 2}, 40, 16, PT},
    {L0 "mlp.gate_proj.weight", QFS_DT_BF16, 2, {0, 4}, 56, 0, PT},
    {L0 "mlp.up_proj.bias", QFS_DT_BF16, 1, {3}, 56, 6, PT},
    {L0 "mlp.up_proj.weight_scale", QFS_DT_BF16, 1, {3}, 62, 6, S},
    {L0 "mlp.down_proj.weight_scale", QFS_DT_F16, 1, {2}, 68, 4, S},
    {L0 "mlp.down_proj.weight", QFS_DT_F8_E4M3, 2, {2, 3}, 72, 6, W},
    {L0 "mlp.up_proj.weight", QFS_DT_F8_E4M3, 2, {3, 2}, 78, 6, W},
    {L0 "self_attn.q_proj.weight", QFS_DT_F8_E4M3, 2, {2, 2}, 84, 4, W},
    {"model.mask", QFS_DT_U8, 1, {3}, 88, 3, PT},
};
#define N_FP8CH (sizeof FP8CH_LAYOUT / sizeof FP8CH_LAYOUT[0])

/* ---- plan tests ---- */

/* The header is written by hand (not through jansson, for speed): its JSON must be byte for
 * byte what jansson's compact dump of the same document gives, with names and metadata that
 * need escaping (quote, backslash, control characters, DEL, UTF-8) and with the source's
 * order of metadata keys. */
static void test_plan_header_matches_jansson(void **state)
{
    (void)state;
    static const char src[] =
        "{\"__metadata__\":{\"z\\\"q\":\"a\\\\b\\u0001\\n\\t\\u007f\",\"format\":\"x\","
        "\"\\u00e9t\\u00e9\":\"\\u2603 /\"},"
        "\"a\\\"b\\\\c\\u001b[31m.weight\":{\"dtype\":\"BF16\",\"shape\":[2,8],"
        "\"data_offsets\":[0,32]},"
        "\"l\\u00e9\\nx.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[32,44]}}";
    qfs_st_file f;
    qfs_plan p;
    parse_source(src, 44, &f);
    build_plan(&f, "int8", NULL, &p);
    size_t n = (size_t)p.header_size - 8;
    while (n && p.header[8 + n - 1] == ' ') n--;
    json_error_t je;
    json_t *doc = json_loadb((const char *)p.header + 8, n, JSON_REJECT_DUPLICATES, &je);
    if (!doc) fail_msg("header does not parse: %s", je.text);
    char *again = json_dumps(doc, JSON_COMPACT);
    assert_non_null(again);
    assert_int_equal(strlen(again), n);
    assert_memory_equal(again, p.header + 8, n);
    assert_non_null(json_object_get(doc, "a\"b\\c\x1b[31m.weight"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "__metadata__"),
                                                          "format")), "pt");
    free(again);
    json_decref(doc);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}


static void test_plan_int8_layout(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    build_plan(&f, "int8", NULL, &p);
    check_tensors(&p, INT8_LAYOUT, N_INT8);
    assert_int_equal(sum_sizes(INT8_LAYOUT, N_INT8), 88);
    assert_int_equal(p.file_size, p.header_size + 88);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_fp8_channel_layout(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    build_plan(&f, "fp8-channel", NULL, &p);
    check_tensors(&p, FP8CH_LAYOUT, N_FP8CH);
    assert_int_equal(p.file_size, p.header_size + 91);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_decisions(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    build_plan(&f, "int8", NULL, &p);
    static const qfs_select_result expected[] = {
        QFS_SELECT_QUANTIZE, QFS_SKIP_LM_HEAD, QFS_SKIP_EMBEDDING, QFS_SELECT_QUANTIZE,
        QFS_SKIP_NOT_WEIGHT, QFS_SKIP_NOT_2D, QFS_SKIP_NOT_WEIGHT, QFS_SELECT_QUANTIZE,
        QFS_SKIP_NOT_WEIGHT, QFS_SKIP_EMPTY,
    };
    assert_int_equal(f.n_tensors, 10);
    for (size_t i = 0; i < 10; i++)
        if (p.decisions[i] != expected[i])
            fail_msg("'%s': decision %d (%s), expected %d (%s)", f.tensors[i].name,
                     p.decisions[i], qfs_select_reason(p.decisions[i]), expected[i],
                     qfs_select_reason(expected[i]));
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_jobs(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    build_plan(&f, "int8", NULL, &p);
    /* jobs in the file order of their weights: down_proj (src 7), up_proj (3), q_proj (0) */
    assert_int_equal(p.n_jobs, 3);
    assert_int_equal(p.jobs[0].src, 7);
    assert_int_equal(p.jobs[0].rows, 2);
    assert_int_equal(p.jobs[0].cols, 3);
    assert_int_equal(p.jobs[0].layout->weight_bytes + p.jobs[0].layout->scales_bytes, 6 + 4 + 1);
    assert_int_equal(p.jobs[1].src, 3);
    assert_int_equal(p.jobs[1].layout->weight_bytes + p.jobs[1].layout->scales_bytes, 6 + 4 + 1);
    assert_int_equal(p.jobs[2].src, 0);
    assert_int_equal(p.jobs[2].layout->weight_bytes + p.jobs[2].layout->scales_bytes, 4 + 4 + 1);
    assert_int_equal(p.jobs[2].layout->out[1].dtype, QFS_DT_F32);
    /* each quantized output points into one of its job's two parts: the weight at 0 of the
     * weight buffer; the scale at 0 and the zero point after the scale (4 bytes of F32 for
     * int8 per tensor) in the scales buffer */
    size_t n_quantized = 0;
    for (size_t i = 0; i < p.n_tensors; i++) {
        const qfs_plan_tensor *t = &p.tensors[i];
        if (t->role == QFS_ROLE_PASSTHROUGH) continue;
        n_quantized++;
        size_t expect_job = strstr(t->name, "down_proj") ? 0 : strstr(t->name, "up_proj") ? 1 : 2;
        assert_int_equal(t->job, expect_job);
        uint64_t expect_off = t->role == QFS_ROLE_ZERO_POINT ? 4 : 0;
        if (t->job_offset != expect_off)
            fail_msg("'%s': job_offset %llu, expected %llu", t->name,
                     (unsigned long long)t->job_offset, (unsigned long long)expect_off);
        assert_int_equal(t->src, p.jobs[expect_job].src);
    }
    assert_int_equal(n_quantized, 9);
    /* passthrough outputs point at their source tensors */
    assert_int_equal(p.tensors[0].src, 6);    /* model.step */
    assert_int_equal(p.tensors[15].src, 8);   /* model.mask */
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_header_int8(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    build_plan(&f, "int8", NULL, &p);
    json_t *root = check_header(&p, INT8_LAYOUT, N_INT8);
    /* source metadata kept, "format" forced to "pt" and first */
    json_t *meta = json_object_get(root, "__metadata__");
    assert_int_equal(json_object_size(meta), 2);
    assert_string_equal(json_string_value(json_object_get(meta, "format")), "pt");
    assert_string_equal(json_string_value(json_object_get(meta, "producer")), "unit");
    json_decref(root);
    check_plan_parses(&p);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_header_fp8_channel(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    build_plan(&f, "fp8-channel", NULL, &p);
    json_decref(check_header(&p, FP8CH_LAYOUT, N_FP8CH));
    check_plan_parses(&p);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_header_exact_bytes(void **state)
{
    (void)state;
    /* one F32 [2,2] weight, no source metadata, int8: the whole header written out by hand */
    qfs_st_file f;
    qfs_plan p;
    parse_source("{'a.weight':{'dtype':'F32','shape':[2,2],'data_offsets':[0,16]}}", 16, &f);
    build_plan(&f, "int8", NULL, &p);
    const char *js =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a.weight_scale\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
        "\"a.weight\":{\"dtype\":\"I8\",\"shape\":[2,2],\"data_offsets\":[4,8]},"
        "\"a.weight_zero_point\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[8,9]}}";
    size_t len = strlen(js), padded = (len + 7) / 8 * 8;
    assert_int_equal(p.header_size, 8 + padded);
    assert_int_equal(get_le64(p.header), padded);
    assert_memory_equal(p.header + 8, js, len);
    for (size_t i = len; i < padded; i++) assert_int_equal(p.header[8 + i], ' ');
    assert_int_equal(p.file_size, 8 + padded + 9);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_metadata_format_forced(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    /* "format" given last in the source still comes first, as "pt" */
    parse_source("{'__metadata__':{'a':'1','format':'mlx'},"
                 "'x.bias':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 4, &f);
    build_plan(&f, "fp8", NULL, &p);
    const char *js = "{\"__metadata__\":{\"format\":\"pt\",\"a\":\"1\"},"
                     "\"x.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    assert_memory_equal(p.header + 8, js, strlen(js));
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_nothing_quantized(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source("{'b':{'dtype':'F16','shape':[2],'data_offsets':[0,4]},"
                 "'a':{'dtype':'F16','shape':[1],'data_offsets':[4,6]}}", 6, &f);
    build_plan(&f, "int8", NULL, &p);
    assert_int_equal(p.n_jobs, 0);
    static const expect_tensor e[] = {
        {"a", QFS_DT_F16, 1, {1}, 0, 2, PT},
        {"b", QFS_DT_F16, 1, {2}, 2, 4, PT},
    };
    check_tensors(&p, e, 2);
    assert_int_equal(p.file_size, p.header_size + 6);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_empty_file(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source("{}", 0, &f);
    build_plan(&f, "int8", NULL, &p);
    assert_int_equal(p.n_tensors, 0);
    assert_int_equal(p.n_jobs, 0);
    const char *js = "{\"__metadata__\":{\"format\":\"pt\"}}";   /* 32 bytes: no padding */
    assert_int_equal(p.header_size, 8 + 32);
    assert_memory_equal(p.header + 8, js, 32);
    assert_int_equal(p.file_size, 40);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_exclude_include(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    const char *const ex[] = {"*.q_proj"};
    qfs_select_rules rules = {ex, 1, NULL, 0, NULL, 0};
    build_plan(&f, "int8", &rules, &p);
    assert_int_equal(p.decisions[0], QFS_SKIP_USER_EXCLUDE);
    assert_int_equal(p.decisions[3], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.n_jobs, 2);
    /* q_proj.weight now passes through as F32 [2,2], right after input_layernorm */
    assert_string_equal(p.tensors[2].name, L0 "mlp.down_proj.weight_scale");
    int found = 0;
    for (size_t i = 0; i < p.n_tensors; i++) {
        assert_null(strstr(p.tensors[i].name, "q_proj.weight_"));
        if (strcmp(p.tensors[i].name, L0 "self_attn.q_proj.weight") == 0) {
            found = 1;
            assert_int_equal(p.tensors[i].dtype, QFS_DT_F32);
            assert_int_equal(p.tensors[i].size, 16);
            assert_int_equal(p.tensors[i].role, PT);
            assert_int_equal(i, 4);   /* step, layernorm, down scale, up scale, q_proj */
        }
    }
    assert_true(found);
    qfs_plan_free(&p);

    const char *const in[] = {"*mlp*"};
    rules = (qfs_select_rules){NULL, 0, in, 1, NULL, 0};
    build_plan(&f, "int8", &rules, &p);
    assert_int_equal(p.decisions[0], QFS_SKIP_NOT_INCLUDED);
    assert_int_equal(p.decisions[3], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.decisions[7], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.n_jobs, 2);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_name_clash(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    /* x.weight_scale already exists: x.weight stays as it is */
    parse_source("{'x.weight':{'dtype':'F32','shape':[2,2],'data_offsets':[0,16]},"
                 "'x.weight_scale':{'dtype':'F32','shape':[],'data_offsets':[16,20]}}", 20, &f);
    build_plan(&f, "fp8", NULL, &p);
    assert_int_equal(p.decisions[0], QFS_SKIP_NAME_CLASH);
    assert_int_equal(p.decisions[1], QFS_SKIP_NOT_WEIGHT);
    assert_int_equal(p.n_jobs, 0);
    static const expect_tensor e[] = {
        {"x.weight", QFS_DT_F32, 2, {2, 2}, 0, 16, PT},
        {"x.weight_scale", QFS_DT_F32, 0, {0}, 16, 4, PT},
    };
    check_tensors(&p, e, 2);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_zero_point_clash_depends_on_spec(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source("{'x.weight':{'dtype':'BF16','shape':[2,2],'data_offsets':[0,8]},"
                 "'x.weight_zero_point':{'dtype':'I8','shape':[],'data_offsets':[8,9]}}", 9, &f);
    /* int8 writes x.weight_zero_point: clash */
    build_plan(&f, "int8-channel", NULL, &p);
    assert_int_equal(p.decisions[0], QFS_SKIP_NAME_CLASH);
    qfs_plan_free(&p);
    /* fp8 writes no zero point: no clash */
    build_plan(&f, "fp8", NULL, &p);
    assert_int_equal(p.decisions[0], QFS_SELECT_QUANTIZE);
    static const expect_tensor e[] = {
        {"x.weight_scale", QFS_DT_BF16, 0, {0}, 0, 2, S},
        {"x.weight", QFS_DT_F8_E4M3, 2, {2, 2}, 2, 4, W},
        {"x.weight_zero_point", QFS_DT_I8, 0, {0}, 6, 1, PT},
    };
    check_tensors(&p, e, 3);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

/* Jobs of one spec, dtype and shape share one layout; a name taken by a later tensor is still
 * a clash (the suffix ".weight_scale" is taken, so a.weight_scale is looked up and free). Names
 * out of order in the source (l.10 before l.9) come out in byte order. */
static void test_plan_shared_layouts_and_order(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source("{'l.10.weight':{'dtype':'BF16','shape':[2,2],'data_offsets':[0,8]},"
                 "'l.9.weight':{'dtype':'BF16','shape':[2,2],'data_offsets':[8,16]},"
                 "'a.weight':{'dtype':'BF16','shape':[4,2],'data_offsets':[16,32]},"
                 "'l.2.weight':{'dtype':'BF16','shape':[2,2],'data_offsets':[32,40]},"
                 "'b.weight':{'dtype':'BF16','shape':[2,2],'data_offsets':[40,48]},"
                 "'b.weight_scale':{'dtype':'BF16','shape':[2],'data_offsets':[48,52]}}", 52, &f);
    build_plan(&f, "fp8-channel", NULL, &p);
    assert_int_equal(p.decisions[4], QFS_SKIP_NAME_CLASH);
    assert_int_equal(p.n_jobs, 4);
    assert_int_equal(p.n_layouts, 2);
    const qfs_layout *l22 = NULL;
    for (size_t j = 0; j < p.n_jobs; j++) {
        const qfs_st_tensor *s = &f.tensors[p.jobs[j].src];
        if (s->shape[0] == 4) continue;
        if (!l22) l22 = p.jobs[j].layout;
        assert_ptr_equal(p.jobs[j].layout, l22);
    }
    static const expect_tensor e[] = {
        {"a.weight_scale", QFS_DT_BF16, 1, {4}, 0, 8, S},
        {"b.weight", QFS_DT_BF16, 2, {2, 2}, 8, 8, PT},
        {"b.weight_scale", QFS_DT_BF16, 1, {2}, 16, 4, PT},
        {"l.10.weight_scale", QFS_DT_BF16, 1, {2}, 20, 4, S},
        {"l.2.weight_scale", QFS_DT_BF16, 1, {2}, 24, 4, S},
        {"l.9.weight_scale", QFS_DT_BF16, 1, {2}, 28, 4, S},
        {"a.weight", QFS_DT_F8_E4M3, 2, {4, 2}, 32, 8, W},
        {"l.10.weight", QFS_DT_F8_E4M3, 2, {2, 2}, 40, 4, W},
        {"l.2.weight", QFS_DT_F8_E4M3, 2, {2, 2}, 44, 4, W},
        {"l.9.weight", QFS_DT_F8_E4M3, 2, {2, 2}, 48, 4, W},
    };
    assert_int_equal(p.n_tensors, 10);
    check_tensors(&p, e, 10);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_each_spec_sizes(void **state)
{
    (void)state;
    /* one BF16 [4,6] weight under each spec: file data = weight + scale + zero point */
    static const struct { const char *spec; uint64_t data; size_t n; uint64_t zp_off; } cases[] = {
        {"int8", 24 + 4 + 1, 3, 4}, {"int8-channel", 24 + 8 + 4, 3, 8},
        {"w8a8-int8", 24 + 8 + 4, 3, 8}, {"fp8", 24 + 2, 2, 0}, {"fp8-channel", 24 + 8, 2, 0},
    };
    qfs_st_file f;
    parse_source("{'m.weight':{'dtype':'BF16','shape':[4,6],'data_offsets':[0,48]}}", 48, &f);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qfs_plan p;
        build_plan(&f, cases[i].spec, NULL, &p);
        assert_int_equal(p.n_tensors, cases[i].n);
        assert_int_equal(p.file_size - p.header_size, cases[i].data);
        assert_int_equal(p.n_jobs, 1);
        assert_int_equal(p.jobs[0].layout->weight_bytes + p.jobs[0].layout->scales_bytes, cases[i].data);
        /* the zero point follows the scale in the job's scales buffer */
        for (size_t k = 0; k < p.n_tensors; k++)
            if (p.tensors[k].role == QFS_ROLE_ZERO_POINT)
                assert_int_equal(p.tensors[k].job_offset, cases[i].zp_off);
            else
                assert_int_equal(p.tensors[k].job_offset, 0);
        check_plan_parses(&p);
        qfs_plan_free(&p);
    }
    qfs_st_file_free(&f);
}

static void test_plan_tensor_at(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    build_plan(&f, "int8", NULL, &p);
    /* INT8_LAYOUT: [0,8) step, [8,16) ln, [16,20) [20,24) [24,28) scales, [28,44) lm_head,
     * [44,60) embed, gate [60,60) empty, [60,66) bias, [66,72) down w, [72] down zp,
     * [73,79) up w, [79] up zp, [80,84) q w, [84] q zp, [85,88) mask */
    static const struct { uint64_t off; size_t idx; } cases[] = {
        {0, 0}, {7, 0}, {8, 1}, {15, 1}, {16, 2}, {19, 2}, {20, 3}, {27, 4}, {28, 5}, {43, 5},
        {44, 6}, {59, 6}, {60, 8}, {65, 8}, {66, 9}, {71, 9}, {72, 10}, {73, 11}, {79, 12},
        {80, 13}, {84, 14}, {85, 15}, {87, 15},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t got = qfs_plan_tensor_at(&p, cases[i].off);
        if (got != cases[i].idx)
            fail_msg("offset %llu: tensor %zu, expected %zu", (unsigned long long)cases[i].off,
                     got, cases[i].idx);
    }
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_tensor_at_zero_size_runs(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    /* zero-size tensors at the start, between and at the end (all F32, sorted by name):
     * a0 [0,0) a1 [0,0) b [0,4) c0 [4,4) d [4,12) z [12,12) */
    parse_source("{'z':{'dtype':'F32','shape':[0],'data_offsets':[0,0]},"
                 "'d':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
                 "'c0':{'dtype':'F32','shape':[0,3],'data_offsets':[8,8]},"
                 "'b':{'dtype':'F32','shape':[],'data_offsets':[8,12]},"
                 "'a1':{'dtype':'F32','shape':[0],'data_offsets':[12,12]},"
                 "'a0':{'dtype':'F32','shape':[0],'data_offsets':[12,12]}}", 12, &f);
    build_plan(&f, "int8", NULL, &p);
    static const expect_tensor e[] = {
        {"a0", QFS_DT_F32, 1, {0}, 0, 0, PT}, {"a1", QFS_DT_F32, 1, {0}, 0, 0, PT},
        {"b", QFS_DT_F32, 0, {0}, 0, 4, PT},  {"c0", QFS_DT_F32, 2, {0, 3}, 4, 0, PT},
        {"d", QFS_DT_F32, 1, {2}, 4, 8, PT},  {"z", QFS_DT_F32, 1, {0}, 12, 0, PT},
    };
    check_tensors(&p, e, 6);
    assert_int_equal(qfs_plan_tensor_at(&p, 0), 2);
    assert_int_equal(qfs_plan_tensor_at(&p, 3), 2);
    assert_int_equal(qfs_plan_tensor_at(&p, 4), 4);
    assert_int_equal(qfs_plan_tensor_at(&p, 11), 4);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

static void test_plan_free_zeroed(void **state)
{
    (void)state;
    qfs_plan p;
    memset(&p, 0, sizeof p);
    qfs_plan_free(&p);
    qfs_plan_free(NULL);
    assert_int_equal(p.n_tensors, 0);
}

/* ---- qfs_select_tensor ---- */

static qfs_select_result sel(const char *name, qfs_dtype dt, unsigned ndim, uint64_t d0,
                             uint64_t d1, const qfs_select_rules *rules)
{
    qfs_st_tensor t;
    memset(&t, 0, sizeof t);
    t.name = (char *)name;
    t.dtype = dt;
    t.ndim = ndim;
    t.shape[0] = d0;
    t.shape[1] = d1;
    return qfs_select_tensor(&t, unit_spec("int8"), rules);
}

#define SEL2(name) sel(name, QFS_DT_BF16, 2, 8, 8, NULL)

static void test_select_candidates(void **state)
{
    (void)state;
    assert_int_equal(SEL2(L0 "self_attn.q_proj.weight"), QFS_SELECT_QUANTIZE);
    assert_int_equal(sel("fc.weight", QFS_DT_F32, 2, 3, 5, NULL), QFS_SELECT_QUANTIZE);
    assert_int_equal(sel("fc.weight", QFS_DT_F16, 2, 3, 5, NULL), QFS_SELECT_QUANTIZE);
    assert_int_equal(SEL2("weight"), QFS_SKIP_NOT_WEIGHT);           /* no module, no dot */
    assert_int_equal(SEL2(L0 "self_attn.q_proj.bias"), QFS_SKIP_NOT_WEIGHT);
    assert_int_equal(SEL2(L0 "self_attn.q_proj.weight_scale"), QFS_SKIP_NOT_WEIGHT);
    assert_int_equal(SEL2("rotary.inv_freq"), QFS_SKIP_NOT_WEIGHT);
    assert_int_equal(sel("fc.weight", QFS_DT_BF16, 1, 8, 0, NULL), QFS_SKIP_NOT_2D);
    assert_int_equal(sel("fc.weight", QFS_DT_BF16, 3, 8, 8, NULL), QFS_SKIP_NOT_2D);
    assert_int_equal(sel("fc.weight", QFS_DT_BF16, 0, 0, 0, NULL), QFS_SKIP_NOT_2D);
    assert_int_equal(sel("fc.weight", QFS_DT_I32, 2, 8, 8, NULL), QFS_SKIP_NOT_FLOAT);
    assert_int_equal(sel("fc.weight", QFS_DT_F8_E4M3, 2, 8, 8, NULL), QFS_SKIP_NOT_FLOAT);
    assert_int_equal(sel("fc.weight", QFS_DT_F64, 2, 8, 8, NULL), QFS_SKIP_NOT_FLOAT);
    assert_int_equal(sel("fc.weight", QFS_DT_BF16, 2, 0, 8, NULL), QFS_SKIP_EMPTY);
    assert_int_equal(sel("fc.weight", QFS_DT_BF16, 2, 8, 0, NULL), QFS_SKIP_EMPTY);
}

static void test_select_embeddings_and_norms(void **state)
{
    (void)state;
    assert_int_equal(SEL2("model.embed_tokens.weight"), QFS_SKIP_EMBEDDING);
    assert_int_equal(SEL2("transformer.wte.weight"), QFS_SKIP_EMBEDDING);
    assert_int_equal(SEL2("transformer.wpe.weight"), QFS_SKIP_EMBEDDING);
    assert_int_equal(SEL2("bert.embeddings.word_embeddings.weight"), QFS_SKIP_EMBEDDING);
    assert_int_equal(SEL2("bert.position_embeddings.weight"), QFS_SKIP_EMBEDDING);
    assert_int_equal(SEL2("shared.weight"), QFS_SKIP_EMBEDDING);
    assert_int_equal(SEL2(L0 "input_layernorm.weight"), QFS_SKIP_NORM);
    assert_int_equal(SEL2("model.norm.weight"), QFS_SKIP_NORM);
    assert_int_equal(SEL2(L0 "self_attn.q_norm.weight"), QFS_SKIP_NORM);
    assert_int_equal(SEL2("h.0.RMSNorm.weight"), QFS_SKIP_NORM);     /* any case */
    assert_int_equal(SEL2("transformer.h.0.ln_1.weight"), QFS_SKIP_NORM);
    assert_int_equal(SEL2("transformer.ln_f.weight"), QFS_SKIP_NORM);
    assert_int_equal(SEL2("encoder.ln.weight"), QFS_SKIP_NORM);
    /* "ln" only as a whole component or an "ln_" prefix */
    assert_int_equal(SEL2("h.0.kiln.weight"), QFS_SELECT_QUANTIZE);
}

static void test_select_lm_head(void **state)
{
    (void)state;
    assert_int_equal(SEL2("lm_head.weight"), QFS_SKIP_LM_HEAD);
    assert_int_equal(SEL2("model.lm_head.weight"), QFS_SKIP_LM_HEAD);
    assert_int_equal(SEL2("xlm_head.weight"), QFS_SELECT_QUANTIZE);
    /* an empty lm_head is still reported as lm_head (checked first) */
    assert_int_equal(sel("lm_head.weight", QFS_DT_BF16, 2, 0, 4, NULL), QFS_SKIP_LM_HEAD);
    /* only a user's rule naming it exactly brings it in: not a glob, not a preset's rule */
    const qfs_layer_rule exact[] = {{"lm_head", unit_spec("fp8"), false}};
    const qfs_layer_rule star[] = {{"*", unit_spec("fp8"), false}};
    const qfs_layer_rule preset[] = {{"lm_head", unit_spec("fp8"), true}};
    qfs_select_rules r_exact = {NULL, 0, NULL, 0, exact, 1};
    qfs_select_rules r_star = {NULL, 0, NULL, 0, star, 1};
    qfs_select_rules r_preset = {NULL, 0, NULL, 0, preset, 1};
    assert_int_equal(sel("lm_head.weight", QFS_DT_BF16, 2, 4, 4, &r_exact), QFS_SELECT_QUANTIZE);
    assert_int_equal(sel("lm_head.weight", QFS_DT_BF16, 2, 4, 4, &r_star), QFS_SKIP_LM_HEAD);
    assert_int_equal(sel("lm_head.weight", QFS_DT_BF16, 2, 4, 4, &r_preset), QFS_SKIP_LM_HEAD);
    assert_int_equal(sel("model.lm_head.weight", QFS_DT_BF16, 2, 4, 4, &r_exact),
                     QFS_SKIP_LM_HEAD);
}

static void test_select_user_rules(void **state)
{
    (void)state;
    const char *const ex[] = {"*.q_proj", "model.layers.1.*"};
    const char *const in[] = {"*_proj"};
    qfs_select_rules r_ex = {ex, 2, NULL, 0, NULL, 0};
    qfs_select_rules r_in = {NULL, 0, in, 1, NULL, 0};
    qfs_select_rules r_both = {ex, 2, in, 1, NULL, 0};
    const char *q0 = L0 "self_attn.q_proj.weight", *k0 = L0 "self_attn.k_proj.weight";
    const char *o0 = L0 "self_attn.o.weight", *k1 = "model.layers.1.self_attn.k_proj.weight";
    assert_int_equal(sel(q0, QFS_DT_BF16, 2, 4, 4, &r_ex), QFS_SKIP_USER_EXCLUDE);
    assert_int_equal(sel(k0, QFS_DT_BF16, 2, 4, 4, &r_ex), QFS_SELECT_QUANTIZE);
    assert_int_equal(sel(k1, QFS_DT_BF16, 2, 4, 4, &r_ex), QFS_SKIP_USER_EXCLUDE);
    assert_int_equal(sel(o0, QFS_DT_BF16, 2, 4, 4, &r_in), QFS_SKIP_NOT_INCLUDED);
    assert_int_equal(sel(k0, QFS_DT_BF16, 2, 4, 4, &r_in), QFS_SELECT_QUANTIZE);
    /* exclude wins over include */
    assert_int_equal(sel(q0, QFS_DT_BF16, 2, 4, 4, &r_both), QFS_SKIP_USER_EXCLUDE);
    assert_int_equal(sel(o0, QFS_DT_BF16, 2, 4, 4, &r_both), QFS_SKIP_NOT_INCLUDED);
    /* the glob sees the module name, without ".weight" */
    const char *const exw[] = {"*.weight"};
    qfs_select_rules r_w = {exw, 1, NULL, 0, NULL, 0};
    assert_int_equal(sel(q0, QFS_DT_BF16, 2, 4, 4, &r_w), QFS_SELECT_QUANTIZE);
    /* built-in rules come first: an included norm is still a norm */
    const char *const all[] = {"*"};
    qfs_select_rules r_all = {NULL, 0, all, 1, NULL, 0};
    assert_int_equal(sel("model.norm.weight", QFS_DT_BF16, 2, 4, 4, &r_all), QFS_SKIP_NORM);
}

static void test_select_reasons_and_linear_like(void **state)
{
    (void)state;
    assert_string_equal(qfs_select_reason(QFS_SELECT_QUANTIZE), "quantized");
    assert_contains(qfs_select_reason(QFS_SKIP_NORM), "norm");
    assert_contains(qfs_select_reason(QFS_SKIP_EMBEDDING), "embedding");
    assert_contains(qfs_select_reason(QFS_SKIP_LM_HEAD), "lm_head");
    assert_contains(qfs_select_reason(QFS_SKIP_USER_EXCLUDE), "--exclude");
    assert_contains(qfs_select_reason(QFS_SKIP_NOT_INCLUDED), "--include");
    assert_contains(qfs_select_reason(QFS_SKIP_NOT_2D), "2-D");
    assert_contains(qfs_select_reason(QFS_SKIP_EMPTY), "empty");
    /* Linear-like = 2-D float .weight, neither embedding nor norm, left unquantized */
    assert_true(qfs_select_is_linear_like(QFS_SKIP_LM_HEAD));
    assert_true(qfs_select_is_linear_like(QFS_SKIP_USER_EXCLUDE));
    assert_true(qfs_select_is_linear_like(QFS_SKIP_NOT_INCLUDED));
    assert_true(qfs_select_is_linear_like(QFS_SKIP_EMPTY));
    assert_true(qfs_select_is_linear_like(QFS_SKIP_NAME_CLASH));
    assert_false(qfs_select_is_linear_like(QFS_SELECT_QUANTIZE));
    assert_false(qfs_select_is_linear_like(QFS_SKIP_EMBEDDING));
    assert_false(qfs_select_is_linear_like(QFS_SKIP_NORM));
    assert_false(qfs_select_is_linear_like(QFS_SKIP_NOT_2D));
    assert_false(qfs_select_is_linear_like(QFS_SKIP_NOT_FLOAT));
    assert_false(qfs_select_is_linear_like(QFS_SKIP_NOT_WEIGHT));
}

static void test_select_module_name(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj"},
        {"a.bias", "a.bias"},
        {"a.weight_scale", "a.weight_scale"},
    };
    for (size_t i = 0; i < 3; i++) {
        char *m = qfs_select_module_dup(cases[i][0]);
        assert_string_equal(m, cases[i][1]);
        free(m);
    }
    /* no length limit: a 2000-byte name survives (a fixed 1024-byte buffer would cut it) */
    char longname[3000];
    memset(longname, 'x', 2000);
    strcpy(longname + 2000, ".weight");
    char *m = qfs_select_module_dup(longname);
    assert_int_equal(strlen(m), 2000);
    free(m);
}

/* ---- qfs_plan_build with each format ---- */

typedef struct pexp {
    const char *name;
    qfs_dtype dtype;
    unsigned ndim;
    uint64_t d0, d1, offset, size;
    qfs_role role;
    uint64_t job_offset;
} pexp;

static void plan_with(const char *json, size_t data_len, const char *spec, qfs_format f,
                      qfs_st_file *sf, qfs_plan *p)
{
    qfs_error err = {{0}};
    int rc = st_parse_json(json, data_len, "/src/model.safetensors", sf, &err);
    if (rc) fail_msg("source does not parse: %s", err.msg);
    qfs_plan_options o = {.spec = unit_spec(spec), .format = f};
    rc = qfs_plan_build(sf, &o, "/src/model.safetensors", p, &err);
    if (rc) fail_msg("plan fails: %d %s", rc, err.msg);
}

static void check_plan(const qfs_plan *p, const pexp *e, size_t n, uint64_t data)
{
    for (size_t i = 0; i < n && i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        if (strcmp(t->name, e[i].name) != 0)
            fail_msg("tensor %zu is '%s', expected '%s'", i, t->name, e[i].name);
        if (t->dtype != e[i].dtype)
            fail_msg("'%s': dtype %s, expected %s", t->name, qfs_dtype_name(t->dtype),
                     qfs_dtype_name(e[i].dtype));
        assert_int_equal(t->ndim, e[i].ndim);
        uint64_t d[2] = {e[i].d0, e[i].d1};
        for (unsigned k = 0; k < e[i].ndim; k++) assert_int_equal(t->shape[k], d[k]);
        if (t->offset != e[i].offset || t->size != e[i].size)
            fail_msg("'%s': offset %llu size %llu, expected %llu %llu", t->name,
                     (unsigned long long)t->offset, (unsigned long long)t->size,
                     (unsigned long long)e[i].offset, (unsigned long long)e[i].size);
        if (t->role != e[i].role) fail_msg("'%s': role %d, expected %d", t->name, t->role,
                                           e[i].role);
        if (t->role != QFS_ROLE_PASSTHROUGH && t->job_offset != e[i].job_offset)
            fail_msg("'%s': job_offset %llu, expected %llu", t->name,
                     (unsigned long long)t->job_offset, (unsigned long long)e[i].job_offset);
    }
    assert_int_equal(p->n_tensors, n);
    assert_int_equal(p->file_size - p->header_size, data);
    /* the planned file (header + zero data) parses and names the same tensors */
    uint8_t *buf = calloc(1, p->file_size);
    assert_non_null(buf);
    memcpy(buf, p->header, p->header_size);
    qfs_st_file f;
    qfs_error err = {{0}};
    if (qfs_st_parse(buf, p->file_size, p->file_size, "planned", &f, &err))
        fail_msg("planned file does not parse: %s", err.msg);
    assert_int_equal(f.n_tensors, n);
    for (size_t i = 0; i < n; i++) {
        const qfs_st_tensor *t = qfs_st_find(&f, e[i].name);
        if (!t) fail_msg("'%s' not in the planned header", e[i].name);
        assert_int_equal(t->dtype, e[i].dtype);
        assert_int_equal(t->begin, e[i].offset);
        assert_int_equal(t->end - t->begin, e[i].size);
    }
    qfs_st_file_free(&f);
    free(buf);
}

#define PT QFS_ROLE_PASSTHROUGH
#define RW QFS_ROLE_WEIGHT
#define RS QFS_ROLE_SCALE
#define RZ QFS_ROLE_ZERO_POINT
#define RH QFS_ROLE_SHAPE

static void test_plan_awq_names_and_shape_skip(void **state)
{
    (void)state;
    /* uint4-g32 awq, BF16:
     *  0 m.l.0.up_proj.weight   [16, 64] 2048 bytes: quantized -> qweight I32 [64, 2] 512,
     *    scales BF16 [2, 16] 64, qzeros I32 [2, 2] 16
     *  1 m.l.0.down_proj.weight [12, 64] 1536: out = 12 not a multiple of 8 -> SKIP_SHAPE
     *  2 lm_head.weight         [16, 64] 2048: excluded by default
     * File order: I32 (qweight, qzeros by name), then BF16 by name (lm_head, down_proj, scales).
     * Job parts: weight = qweight (offset 0); scales part = scales (0) then qzeros (64). */
    const char *json =
        "{'m.l.0.up_proj.weight':{'dtype':'BF16','shape':[16,64],'data_offsets':[0,2048]},"
        "'m.l.0.down_proj.weight':{'dtype':'BF16','shape':[12,64],'data_offsets':[2048,3584]},"
        "'lm_head.weight':{'dtype':'BF16','shape':[16,64],'data_offsets':[3584,5632]}}";
    qfs_st_file sf;
    qfs_plan p;
    plan_with(json, 5632, "uint4-g32", FA, &sf, &p);
    assert_int_equal(p.decisions[0], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.decisions[1], QFS_SKIP_SHAPE);
    assert_int_equal(p.decisions[2], QFS_SKIP_LM_HEAD);
    assert_contains(qfs_select_reason(QFS_SKIP_SHAPE), "shape");
    assert_true(qfs_select_is_linear_like(QFS_SKIP_SHAPE));
    static const pexp e[] = {
        {"m.l.0.up_proj.qweight", QFS_DT_I32, 2, 64, 2, 0, 512, RW, 0},
        {"m.l.0.up_proj.qzeros", QFS_DT_I32, 2, 2, 2, 512, 16, RZ, 64},
        {"lm_head.weight", QFS_DT_BF16, 2, 16, 64, 528, 2048, PT, 0},
        {"m.l.0.down_proj.weight", QFS_DT_BF16, 2, 12, 64, 2576, 1536, PT, 0},
        {"m.l.0.up_proj.scales", QFS_DT_BF16, 2, 2, 16, 4112, 64, RS, 0},
    };
    check_plan(&p, e, 5, 4176);
    assert_int_equal(p.n_jobs, 1);
    assert_int_equal(p.jobs[0].src, 0);
    assert_int_equal(p.jobs[0].rows, 16);
    assert_int_equal(p.jobs[0].cols, 64);
    assert_int_equal(p.jobs[0].layout->weight_bytes, 512);
    assert_int_equal(p.jobs[0].layout->scales_bytes, 80);
    qfs_plan_free(&p);
    qfs_st_file_free(&sf);
}

static void test_plan_compressed_tensors_int4(void **state)
{
    (void)state;
    /* int4-g32 compressed-tensors, BF16:
     *  a.weight [12, 64] 1536: quantized (no out % 8 rule) -> weight_packed I32 [12, 8] 384,
     *    weight_scale BF16 [12, 2] 48, weight_shape I64 [2] 16
     *  b.weight [8, 48] 768: in = 48 not a multiple of 32 -> SKIP_SHAPE
     * File order: I64, I32, then BF16 by name. Scales part: scale (0), shape (48). */
    const char *json =
        "{'b.weight':{'dtype':'BF16','shape':[8,48],'data_offsets':[0,768]},"
        "'a.weight':{'dtype':'BF16','shape':[12,64],'data_offsets':[768,2304]}}";
    qfs_st_file sf;
    qfs_plan p;
    plan_with(json, 2304, "int4-g32", FC, &sf, &p);
    assert_int_equal(p.decisions[0], QFS_SKIP_SHAPE);
    assert_int_equal(p.decisions[1], QFS_SELECT_QUANTIZE);
    static const pexp e[] = {
        {"a.weight_shape", QFS_DT_I64, 1, 2, 0, 0, 16, RH, 48},
        {"a.weight_packed", QFS_DT_I32, 2, 12, 8, 16, 384, RW, 0},
        {"a.weight_scale", QFS_DT_BF16, 2, 12, 2, 400, 48, RS, 0},
        {"b.weight", QFS_DT_BF16, 2, 8, 48, 448, 768, PT, 0},
    };
    check_plan(&p, e, 4, 1216);
    assert_int_equal(p.n_jobs, 1);
    assert_int_equal(p.jobs[0].src, 1);
    qfs_plan_free(&p);
    qfs_st_file_free(&sf);
}

static void test_plan_fp8_block(void **state)
{
    (void)state;
    /* fp8-block in the fp8 format, BF16:
     *  c.weight [128, 256] 65536: -> weight F8_E4M3 [128, 256] 32768, weight_scale_inv F32 [1, 2]
     *  d.weight [128, 200] 51200: 200 is not a multiple of 128 -> SKIP_SHAPE
     * File order: F32, BF16, F8_E4M3. */
    const char *json =
        "{'c.weight':{'dtype':'BF16','shape':[128,256],'data_offsets':[0,65536]},"
        "'d.weight':{'dtype':'BF16','shape':[128,200],'data_offsets':[65536,116736]}}";
    qfs_st_file sf;
    qfs_plan p;
    plan_with(json, 116736, "fp8-block", F8, &sf, &p);
    assert_int_equal(p.decisions[0], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.decisions[1], QFS_SKIP_SHAPE);
    static const pexp e[] = {
        {"c.weight_scale_inv", QFS_DT_F32, 2, 1, 2, 0, 8, RS, 0},
        {"d.weight", QFS_DT_BF16, 2, 128, 200, 8, 51200, PT, 0},
        {"c.weight", QFS_DT_F8_E4M3, 2, 128, 256, 51208, 32768, RW, 0},
    };
    check_plan(&p, e, 3, 83976);
    qfs_plan_free(&p);
    qfs_st_file_free(&sf);
}

static void test_plan_awq_name_clash(void **state)
{
    (void)state;
    /* x.qzeros already in the source: x.weight stays as it is (awq would write x.qzeros) */
    const char *json =
        "{'x.weight':{'dtype':'BF16','shape':[8,32],'data_offsets':[0,512]},"
        "'x.qzeros':{'dtype':'I32','shape':[1,1],'data_offsets':[512,516]}}";
    qfs_st_file sf;
    qfs_plan p;
    plan_with(json, 516, "uint4-g32", FA, &sf, &p);
    assert_int_equal(p.decisions[0], QFS_SKIP_NAME_CLASH);
    assert_int_equal(p.n_jobs, 0);
    qfs_plan_free(&p);
    /* in the quark format the names differ, so it is quantized */
    qfs_plan_options o = {.spec = unit_spec("uint4-g32"), .format = FQ};
    qfs_error err = {{0}};
    assert_int_equal(qfs_plan_build(&sf, &o, "/src/model.safetensors", &p, &err), 0);
    assert_int_equal(p.decisions[0], QFS_SELECT_QUANTIZE);
    qfs_plan_free(&p);
    qfs_st_file_free(&sf);
}

/* Layer rules: up_proj (BF16 [3,2]) gets fp8-channel: F8_E4M3 [3,2] + a BF16 scale per row
 * [3], no zero point; down_proj (F16 [2,3]) gets uint4-g32, whose group does not divide in=3:
 * it stays F16 (QFS_SKIP_SHAPE) and is no job; q_proj keeps the view's int8. */
static void test_plan_layer_rules(void **state)
{
    (void)state;
    qfs_st_file f;
    qfs_plan p;
    parse_source(SOURCE, SOURCE_DATA, &f);
    const qfs_layer_rule layers[] = {{"*.up_proj", unit_spec("fp8-channel"), false},
                                     {"*.down_proj", unit_spec("uint4-g32"), false}};
    qfs_select_rules rules = {NULL, 0, NULL, 0, layers, 2};
    build_plan(&f, "int8", &rules, &p);
    assert_int_equal(p.decisions[0], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.decisions[3], QFS_SELECT_QUANTIZE);
    assert_int_equal(p.decisions[7], QFS_SKIP_SHAPE);
    assert_int_equal(p.n_jobs, 2);
    for (size_t j = 0; j < p.n_jobs; j++) {
        const char *want = p.jobs[j].src == 0 ? "int8" : "fp8-channel";
        assert_string_equal(p.jobs[j].spec->name, want);
    }
    bool up_w = false, up_s = false;
    for (size_t i = 0; i < p.n_tensors; i++) {
        const qfs_plan_tensor *t = &p.tensors[i];
        assert_null(strstr(t->name, "up_proj.weight_zero_point"));
        if (strcmp(t->name, L0 "mlp.up_proj.weight") == 0) {
            up_w = true;
            assert_int_equal(t->dtype, QFS_DT_F8_E4M3);
            assert_int_equal(t->size, 6);
        }
        if (strcmp(t->name, L0 "mlp.up_proj.weight_scale") == 0) {
            up_s = true;
            assert_int_equal(t->dtype, QFS_DT_BF16);
            assert_int_equal(t->ndim, 1);
            assert_int_equal(t->shape[0], 3);
        }
        if (strcmp(t->name, L0 "mlp.down_proj.weight") == 0) {
            assert_int_equal(t->dtype, QFS_DT_F16);
            assert_int_equal(t->role, PT);
        }
        if (strcmp(t->name, L0 "self_attn.q_proj.weight_scale") == 0)
            assert_int_equal(t->ndim, 0);   /* int8 per tensor */
    }
    assert_true(up_w && up_s);
    qfs_plan_free(&p);
    qfs_st_file_free(&f);
}

/* Which spec a module gets, and when loaders reading the sorted layer_quant_config would
 * disagree: worked out by hand from the rules in FORMAT.md §3.4. */
static void test_select_layer_spec(void **state)
{
    (void)state;
    const qfs_spec *i8 = unit_spec("int8"), *f8 = unit_spec("fp8"), *u4 = unit_spec("uint4-g32");
    size_t k, a, b;
    const qfs_layer_rule r1[] = {{"model.layers.*", f8, false}, {"model.layers.0.mlp", u4, false}};
    qfs_select_rules rs = {NULL, 0, NULL, 0, r1, 2};
    /* an exact name comes before an earlier glob */
    assert_ptr_equal(qfs_select_layer_spec("model.layers.0.mlp", i8, &rs, &k), u4);
    assert_int_equal(k, 1);
    assert_ptr_equal(qfs_select_layer_spec("model.layers.1.mlp", i8, &rs, &k), f8);
    assert_int_equal(k, 0);
    assert_ptr_equal(qfs_select_layer_spec("lm_head", i8, &rs, &k), i8);
    assert_true(k == SIZE_MAX);
    assert_ptr_equal(qfs_select_layer_spec("x", i8, NULL, &k), i8);
    /* sorted, "model.layers.*" < "model.layers.0.mlp" ('*' < '0'): a loader without the exact
     * lookup takes the glob first and gives the exact module fp8 */
    assert_true(qfs_select_layer_ambiguous("model.layers.0.mlp", &rs, &a, &b));
    assert_int_equal(a, 1);
    assert_int_equal(b, 0);
    assert_false(qfs_select_layer_ambiguous("model.layers.1.mlp", &rs, &a, &b));
    /* user order b.* then *.x: "*.x" sorts first, so b.x is read as fp8, not int8 */
    const qfs_layer_rule r2[] = {{"b.*", i8, false}, {"*.x", f8, false}};
    qfs_select_rules rs2 = {NULL, 0, NULL, 0, r2, 2};
    assert_ptr_equal(qfs_select_layer_spec("b.x", u4, &rs2, &k), i8);
    assert_true(qfs_select_layer_ambiguous("b.x", &rs2, &a, &b));
    assert_false(qfs_select_layer_ambiguous("b.y", &rs2, &a, &b));
    /* the same two globs in sorted order, or one spec for both, are not ambiguous */
    const qfs_layer_rule r3[] = {{"*.x", f8, false}, {"b.*", i8, false}};
    qfs_select_rules rs3 = {NULL, 0, NULL, 0, r3, 2};
    assert_false(qfs_select_layer_ambiguous("b.x", &rs3, &a, &b));
    const qfs_layer_rule r4[] = {{"b.*", f8, false}, {"*.x", f8, false}};
    qfs_select_rules rs4 = {NULL, 0, NULL, 0, r4, 2};
    assert_false(qfs_select_layer_ambiguous("b.x", &rs4, &a, &b));
}

/* --layer GLOB=SPEC parsing, the formats that take rules, and the presets. */
static void test_layer_rule_parse(void **state)
{
    (void)state;
    qfs_error err = {{0}};
    char *glob;
    const qfs_spec *s;
    assert_int_equal(qfs_layer_rule_parse("a=b=int8-channel", &glob, &s, &err), 0);
    assert_string_equal(glob, "a=b");   /* split at the last '=' */
    assert_string_equal(s->name, "int8-channel");
    free(glob);
    assert_int_equal(qfs_layer_rule_parse("noequals", &glob, &s, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "GLOB=SPEC"));
    assert_int_equal(qfs_layer_rule_parse("=int8", &glob, &s, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "empty glob"));
    assert_int_equal(qfs_layer_rule_parse("x=int9", &glob, &s, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "unknown spec 'int9'"));

    const qfs_layer_rule ok[] = {{"*.down_proj", unit_spec("int8-channel"), false}};
    const qfs_layer_rule block[] = {{"*.o_proj", unit_spec("fp8-block"), false}};
    assert_int_equal(qfs_layer_rules_check_format(QFS_FMT_QUARK, ok, 1, &err), 0);
    assert_int_equal(qfs_layer_rules_check_format(QFS_FMT_QUARK, block, 1, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "'*.o_proj=fp8-block'"));
    static const qfs_format others[] = {QFS_FMT_AWQ, QFS_FMT_FP8, QFS_FMT_COMPRESSED_TENSORS};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(qfs_layer_rules_check_format(others[i], ok, 1, &err), -EINVAL);
        assert_non_null(strstr(err.msg, qfs_format_name(others[i])));
        assert_non_null(strstr(err.msg, "--format quark"));
    }
    assert_int_equal(qfs_layer_rules_check_format(QFS_FMT_AWQ, NULL, 0, &err), 0);

    qfs_layer_rule pr[QFS_PRESET_MAX_RULES];
    size_t n;
    assert_int_equal(qfs_preset_lookup("keep-sensitive", pr, &n, &err), 0);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) assert_true(pr[i].from_preset);
    assert_int_equal(qfs_preset_lookup("nope", pr, &n, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "keep-sensitive"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_int8_layout),
        cmocka_unit_test(test_plan_header_matches_jansson),
        cmocka_unit_test(test_plan_fp8_channel_layout),
        cmocka_unit_test(test_plan_decisions),
        cmocka_unit_test(test_plan_jobs),
        cmocka_unit_test(test_plan_header_int8),
        cmocka_unit_test(test_plan_header_fp8_channel),
        cmocka_unit_test(test_plan_header_exact_bytes),
        cmocka_unit_test(test_plan_metadata_format_forced),
        cmocka_unit_test(test_plan_nothing_quantized),
        cmocka_unit_test(test_plan_empty_file),
        cmocka_unit_test(test_plan_exclude_include),
        cmocka_unit_test(test_plan_name_clash),
        cmocka_unit_test(test_plan_zero_point_clash_depends_on_spec),
        cmocka_unit_test(test_plan_shared_layouts_and_order),
        cmocka_unit_test(test_plan_each_spec_sizes),
        cmocka_unit_test(test_plan_tensor_at),
        cmocka_unit_test(test_plan_tensor_at_zero_size_runs),
        cmocka_unit_test(test_plan_free_zeroed),
        cmocka_unit_test(test_select_candidates),
        cmocka_unit_test(test_select_embeddings_and_norms),
        cmocka_unit_test(test_select_lm_head),
        cmocka_unit_test(test_select_user_rules),
        cmocka_unit_test(test_select_reasons_and_linear_like),
        cmocka_unit_test(test_select_module_name),
        cmocka_unit_test(test_plan_awq_names_and_shape_skip),
        cmocka_unit_test(test_plan_compressed_tensors_int4),
        cmocka_unit_test(test_plan_fp8_block),
        cmocka_unit_test(test_plan_awq_name_clash),
        cmocka_unit_test(test_plan_layer_rules),
        cmocka_unit_test(test_select_layer_spec),
        cmocka_unit_test(test_layer_rule_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
