/* Unit tests of the safetensors header parser (core/safetensors.c).
 * Expected behaviour: doc/FORMAT.md §2.1 — what the Rust safetensors 0.8 reader accepts and
 * rejects, and quarkfs's two stricter rules. JSON below is written with ' for ". */
#include "unit_util.c"

#include <fcntl.h>

#define PATH "/models/unit-test.safetensors"

/* ---- helpers ---- */

/* Parses raw bytes and checks the rejection: -EINVAL, a message naming the file and containing
 * each of the (case-insensitive) words, and a zeroed result. */
static void expect_reject_bytes(const uint8_t *b, size_t len, uint64_t file_size,
                                const char *word1, const char *word2)
{
    qfs_st_file f;
    qfs_error err = {{0}};
    memset(&f, 0xAB, sizeof f);
    int rc = qfs_st_parse(b, len, file_size, PATH, &f, &err);
    if (rc != -EINVAL) fail_msg("rc = %d, expected -EINVAL (message: %s)", rc, err.msg);
    assert_contains(err.msg, PATH);
    if (word1) assert_contains(err.msg, word1);
    if (word2) assert_contains(err.msg, word2);
    assert_null(f.tensors);
    assert_int_equal(f.n_tensors, 0);
    assert_null(f.metadata);
    qfs_st_file_free(&f);   /* safe on the zeroed result */
}

/* Rejection of json (' as ") followed by data_len data bytes, file size = the bytes' length. */
static void expect_reject(const char *json, size_t data_len, const char *word1, const char *word2)
{
    size_t len;
    uint8_t *b = st_build(json, 1, data_len, &len);
    expect_reject_bytes(b, len, len, word1, word2);
    free(b);
}

/* Accepts json + data_len bytes; the caller frees *f. */
static void expect_accept(const char *json, size_t data_len, qfs_st_file *f)
{
    qfs_error err = {{0}};
    int rc = st_parse_json(json, data_len, PATH, f, &err);
    if (rc != 0) fail_msg("rc = %d (%s)", rc, err.msg);
}

static void assert_tensor(const qfs_st_tensor *t, const char *name, qfs_dtype dt, unsigned ndim,
                          const uint64_t *shape, uint64_t begin, uint64_t end)
{
    assert_string_equal(t->name, name);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    for (unsigned i = 0; i < ndim; i++) assert_int_equal(t->shape[i], shape[i]);
    assert_int_equal(t->begin, begin);
    assert_int_equal(t->end, end);
}

/* ---- the two parsers: the streaming one reads the common case exactly as the tree one ---- */

/* The same parse result: tensors in the same order with the same fields, the same metadata
 * (compared as jansson dumps it: keys in their order), the same layout numbers. */
static void assert_same_file(const qfs_st_file *a, const qfs_st_file *b)
{
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const qfs_st_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        assert_tensor(y, x->name, x->dtype, x->ndim, x->shape, x->begin, x->end);
        assert_ptr_equal(qfs_st_find(b, x->name), y);
    }
    assert_int_equal(a->header_len, b->header_len);
    assert_int_equal(a->data_start, b->data_start);
    assert_int_equal(a->file_size, b->file_size);
    assert_int_equal(!a->metadata, !b->metadata);
    if (a->metadata) {
        char *da = json_dumps(a->metadata, JSON_COMPACT), *db = json_dumps(b->metadata, JSON_COMPACT);
        assert_string_equal(da, db);
        free(da);
        free(db);
    }
}

/* Parses json (' as ") + data_len bytes with each parser. `streamed`: whether the streaming
 * parser must read it (0, or -EINVAL with the tree's message) or leave it (-EAGAIN). Either
 * way qfs_st_parse gives exactly what the tree parser gives. Returns the tree's rc. */
static int compare_parsers_bytes(const uint8_t *b, size_t len, bool streamed)
{
    qfs_st_file tree, stream, any;
    qfs_error et = {{0}}, es = {{0}}, ea = {{0}};
    int rt = qfs_st_parse_with(QFS_JSON_TREE, b, len, len, PATH, &tree, &et);
    int rs = qfs_st_parse_with(QFS_JSON_STREAM, b, len, len, PATH, &stream, &es);
    int ra = qfs_st_parse(b, len, len, PATH, &any, &ea);
    if (!streamed && rs != -EAGAIN) fail_msg("the streaming parser took it: rc %d (%s)", rs, es.msg);
    if (streamed && rs == -EAGAIN) fail_msg("the streaming parser left it to the tree (tree: %d %s)",
                                            rt, et.msg);
    if (streamed) assert_int_equal(rs, rt);
    assert_int_equal(ra, rt);
    if (rt == 0) {
        assert_same_file(&tree, &any);
        if (streamed) assert_same_file(&tree, &stream);
    } else {
        assert_string_equal(ea.msg, et.msg);
        if (streamed) assert_string_equal(es.msg, et.msg);
        assert_null(any.tensors);
    }
    if (rs == -EAGAIN) assert_null(stream.tensors), assert_null(stream.metadata);
    qfs_st_file_free(&tree);
    qfs_st_file_free(&stream);
    qfs_st_file_free(&any);
    return rt;
}

static int compare_parsers(const char *json, size_t data_len, bool streamed)
{
    size_t len;
    uint8_t *b = st_build(json, 1, data_len, &len);
    int rc = compare_parsers_bytes(b, len, streamed);
    free(b);
    return rc;
}

static void test_stream_reads_common_headers(void **state)
{
    (void)state;
    static const struct { const char *json; size_t data; } ok[] = {
        {"{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
         "'b':{'dtype':'BF16','shape':[2,2],'data_offsets':[8,16]}}", 16},
        {"{'__metadata__':{'format':'pt','note':'a b'},"
         "'t':{'dtype':'I8','shape':[3],'data_offsets':[0,3]}}", 3},
        {"{'t':{'dtype':'I8','shape':[1],'data_offsets':[0,1]},'__metadata__':null}", 1},
        {"{'t':{'dtype':'I8','shape':[1],'data_offsets':[0,1]},'__metadata__':{}}", 1},
        /* keys in another order inside a tensor; tensors not in offset order */
        {"{'z':{'shape':[4],'data_offsets':[4,8],'dtype':'U8'},"
         "'y':{'data_offsets':[0,4],'dtype':'U8','shape':[4]}}", 8},
        {"{'s':{'dtype':'F64','shape':[],'data_offsets':[0,8]}}", 8},
        {"{'e':{'dtype':'F16','shape':[0,5],'data_offsets':[0,0]}}", 0},
        {"{'d':{'dtype':'U8','shape':[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],'data_offsets':[0,1]}}", 1},
        {"\t\r\n {'w' : { 'dtype' : 'I8' , 'shape' : [ 2 ] , 'data_offsets' : [ 0 , 2 ] } }\n", 2},
        {"{}", 0},
        {"{'__metadata__':{'b':'1','a':'2','c':''}}", 0},
        {"{'':{'dtype':'BOOL','shape':[1],'data_offsets':[0,1]}}", 1},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(compare_parsers(ok[i].json, ok[i].data, true), 0);
}

static void test_stream_layout_errors_are_the_tree_s(void **state)
{
    (void)state;
    /* Valid JSON of the common case whose layout is wrong: the streaming parser reads it and
     * the shared checks say what the tree path says. */
    static const struct { const char *json; size_t data; } bad[] = {
        {"{'a':{'dtype':'I8','shape':[2],'data_offsets':[0,2]},"
         "'b':{'dtype':'I8','shape':[2],'data_offsets':[3,5]}}", 5},
        {"{'a':{'dtype':'I8','shape':[3],'data_offsets':[0,2]}}", 2},
        {"{'a':{'dtype':'I8','shape':[2],'data_offsets':[2,0]}}", 2},
        {"{'a':{'dtype':'I8','shape':[2],'data_offsets':[0,2]}}", 3},
        {"{'a':{'dtype':'F4','shape':[3],'data_offsets':[0,2]}}", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(compare_parsers(bad[i].json, bad[i].data, true), -EINVAL);
}

static void test_stream_leaves_the_rest_to_the_tree(void **state)
{
    (void)state;
    static const struct { const char *json; size_t data; int rc; } rest[] = {
        /* escapes and bytes beyond ASCII: strings the parsers could decode differently */
        {"{'\\u0041':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}", 1, 0},
        {"{'caf\xc3\xa9':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}", 1, 0},
        {"{'a\\ud800':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a\xed\xa0\x80':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a\xc0\x80':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a\\u0000b':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        /* whitespace JSON does not have (yajl takes \v and \f) */
        {"{\v'a':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{\f'a':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        /* duplicates, at every level */
        {"{'a':{'dtype':'I8','shape':[1],'data_offsets':[0,1]},"
         "'a':{'dtype':'I8','shape':[1],'data_offsets':[1,2]}}", 2, -EINVAL},
        {"{'a':{'dtype':'I8','dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'__metadata__':{'k':'1','k':'2'}}", 0, -EINVAL},
        {"{'__metadata__':{},'__metadata__':{}}", 0, -EINVAL},
        /* keys the format does not name are ignored by the tree parser */
        {"{'a':{'dtype':'I8','shape':[1],'data_offsets':[0,1],'extra':[{}]}}", 1, 0},
        /* numbers: negative zero is an integer 0 to jansson; the rest are not integers >= 0 */
        {"{'a':{'dtype':'I8','shape':[-0],'data_offsets':[0,0]}}", 0, 0},
        {"{'a':{'dtype':'I8','shape':[1.0],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a':{'dtype':'I8','shape':[1e0],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a':{'dtype':'I8','shape':[-1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a':{'dtype':'I8','shape':[9223372036854775808],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a':{'dtype':'I8','shape':[1],'data_offsets':[0,1,2]}}", 1, -EINVAL},
        {"{'a':{'dtype':'I8','shape':[1],'data_offsets':[0]}}", 1, -EINVAL},
        {"{'a':{'dtype':'I8','shape':[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],'data_offsets':[0,1]}}",
         1, -EINVAL},
        /* types and structure */
        {"{'a':{'dtype':'Q8','shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a':{'dtype':8,'shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a':{'shape':[1],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{'a':[1]}", 0, -EINVAL},
        {"{'a':true}", 0, -EINVAL},
        {"{'__metadata__':{'k':1}}", 0, -EINVAL},
        {"{'__metadata__':[]}", 0, -EINVAL},
        {"[]", 0, -EINVAL},
        {"{'a':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}", 1, -EINVAL},
        {"{} {}", 0, -EINVAL},
        {"{} 'ab", 0, -EINVAL},   /* an unfinished token after the object (yajl passes it) */
        {"{'a':{'dtype':'I8','shape':[01],'data_offsets':[0,1]}}", 1, -EINVAL},
        {"{/*c*/}", 0, -EINVAL},
        {"", 0, -EINVAL},
    };
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) {
        int rc = compare_parsers(rest[i].json, rest[i].data, false);
        if (rc != rest[i].rc) fail_msg("case %zu: tree rc %d, expected %d", i, rc, rest[i].rc);
    }
}

/* ---- good headers ---- */

static void test_two_tensors(void **state)
{
    (void)state;
    const char *js = "{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
                     "'b':{'dtype':'BF16','shape':[2,3],'data_offsets':[8,20]}}";
    qfs_st_file f;
    expect_accept(js, 20, &f);
    assert_int_equal(f.n_tensors, 2);
    assert_tensor(&f.tensors[0], "a", QFS_DT_F32, 1, (uint64_t[]){2}, 0, 8);
    assert_tensor(&f.tensors[1], "b", QFS_DT_BF16, 2, (uint64_t[]){2, 3}, 8, 20);
    size_t n = strlen(js);
    assert_int_equal(f.header_len, n);
    assert_int_equal(f.data_start, 8 + n);
    assert_int_equal(f.file_size, 8 + n + 20);
    assert_null(f.metadata);
    assert_int_equal(qfs_st_numel(&f.tensors[0]), 2);
    assert_int_equal(qfs_st_numel(&f.tensors[1]), 6);
    assert_ptr_equal(qfs_st_find(&f, "b"), &f.tensors[1]);
    assert_ptr_equal(qfs_st_find(&f, "a"), &f.tensors[0]);
    assert_null(qfs_st_find(&f, "c"));
    assert_null(qfs_st_find(&f, "__metadata__"));
    qfs_st_file_free(&f);
    assert_null(f.tensors);
    assert_int_equal(f.n_tensors, 0);
}

/* qfs_st_find over a hash table: each of 3000 names is found as its own tensor, in a header
 * whose tensors are out of offset order; near misses (a prefix, an extra byte, another
 * case) are not; and the offsets are still validated in offset order. */
static void test_find_many(void **state)
{
    (void)state;
    enum { N = 3000 };
    size_t cap = N * 96 + 16, n = 0;
    char *js = malloc(cap);
    n += (size_t)snprintf(js + n, cap - n, "{");
    for (int i = 0; i < N; i++) {
        int k = (i * 7) % N;   /* names in a permuted order of their offsets */
        n += (size_t)snprintf(js + n, cap - n, "%s'layer.%d.w':{'dtype':'U8','shape':[1],"
                              "'data_offsets':[%d,%d]}", i ? "," : "", k, k, k + 1);
    }
    snprintf(js + n, cap - n, "}");
    qfs_st_file f;
    expect_accept(js, N, &f);
    assert_int_equal(f.n_tensors, N);
    char name[64];
    for (int k = 0; k < N; k++) {
        snprintf(name, sizeof name, "layer.%d.w", k);
        const qfs_st_tensor *t = qfs_st_find(&f, name);
        if (!t || strcmp(t->name, name) != 0 || t->begin != (uint64_t)k)
            fail_msg("'%s' not found as itself", name);
        snprintf(name, sizeof name, "layer.%d.w.", k);
        assert_null(qfs_st_find(&f, name));
        snprintf(name, sizeof name, "layer.%d.W", k);
        assert_null(qfs_st_find(&f, name));
        snprintf(name, sizeof name, "layer.%d.", k);
        assert_null(qfs_st_find(&f, name));
    }
    assert_null(qfs_st_find(&f, ""));
    qfs_st_file_free(&f);
    free(js);
}

static void test_scalar_shape(void **state)
{
    (void)state;
    qfs_st_file f;
    expect_accept("{'s':{'dtype':'F32','shape':[],'data_offsets':[0,4]}}", 4, &f);
    assert_int_equal(f.n_tensors, 1);
    assert_tensor(&f.tensors[0], "s", QFS_DT_F32, 0, NULL, 0, 4);
    assert_int_equal(qfs_st_numel(&f.tensors[0]), 1);   /* empty product */
    qfs_st_file_free(&f);
}

static void test_zero_size_tensors(void **state)
{
    (void)state;
    /* zero-size tensors first, in the middle and last; all at shared offsets */
    qfs_st_file f;
    expect_accept("{'z0':{'dtype':'F32','shape':[0],'data_offsets':[0,0]},"
                  "'a':{'dtype':'I32','shape':[1],'data_offsets':[0,4]},"
                  "'z1':{'dtype':'BF16','shape':[3,0],'data_offsets':[4,4]},"
                  "'b':{'dtype':'U8','shape':[2],'data_offsets':[4,6]},"
                  "'z2':{'dtype':'F16','shape':[0,5,2],'data_offsets':[6,6]}}",
                  6, &f);
    assert_int_equal(f.n_tensors, 5);
    assert_tensor(&f.tensors[0], "z0", QFS_DT_F32, 1, (uint64_t[]){0}, 0, 0);
    assert_tensor(&f.tensors[2], "z1", QFS_DT_BF16, 2, (uint64_t[]){3, 0}, 4, 4);
    assert_tensor(&f.tensors[4], "z2", QFS_DT_F16, 3, (uint64_t[]){0, 5, 2}, 6, 6);
    assert_int_equal(qfs_st_numel(&f.tensors[2]), 0);
    assert_int_equal(qfs_st_numel(&f.tensors[4]), 0);
    qfs_st_file_free(&f);
}

static void test_only_zero_size_tensor(void **state)
{
    (void)state;
    qfs_st_file f;
    expect_accept("{'z':{'dtype':'F32','shape':[0,4],'data_offsets':[0,0]}}", 0, &f);
    assert_int_equal(f.n_tensors, 1);
    qfs_st_file_free(&f);
}

static void test_metadata_strings(void **state)
{
    (void)state;
    qfs_st_file f;
    expect_accept("{'__metadata__':{'format':'pt','note':'a b'},"
                  "'t':{'dtype':'I8','shape':[3],'data_offsets':[0,3]}}", 3, &f);
    assert_int_equal(f.n_tensors, 1);          /* __metadata__ is not a tensor */
    assert_string_equal(f.tensors[0].name, "t");
    assert_non_null(f.metadata);
    assert_true(json_is_object(f.metadata));
    assert_int_equal(json_object_size(f.metadata), 2);
    assert_string_equal(json_string_value(json_object_get(f.metadata, "format")), "pt");
    assert_string_equal(json_string_value(json_object_get(f.metadata, "note")), "a b");
    qfs_st_file_free(&f);
    assert_null(f.metadata);
}

static void test_metadata_after_tensors_and_null(void **state)
{
    (void)state;
    qfs_st_file f;
    /* __metadata__ may come anywhere; null means none (serde Option) */
    expect_accept("{'t':{'dtype':'I8','shape':[1],'data_offsets':[0,1]},'__metadata__':null}", 1,
                  &f);
    assert_int_equal(f.n_tensors, 1);
    assert_null(f.metadata);
    qfs_st_file_free(&f);
    expect_accept("{'t':{'dtype':'I8','shape':[1],'data_offsets':[0,1]},'__metadata__':{}}", 1,
                  &f);
    assert_int_equal(f.n_tensors, 1);
    assert_non_null(f.metadata);
    assert_int_equal(json_object_size(f.metadata), 0);
    qfs_st_file_free(&f);
}

static void test_key_order_differs_from_offsets(void **state)
{
    (void)state;
    qfs_st_file f;
    expect_accept("{'late':{'dtype':'F32','shape':[],'data_offsets':[12,16]},"
                  "'first':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
                  "'mid':{'dtype':'F16','shape':[2],'data_offsets':[8,12]}}", 16, &f);
    assert_int_equal(f.n_tensors, 3);
    /* kept in header (JSON) order, not offset order */
    assert_tensor(&f.tensors[0], "late", QFS_DT_F32, 0, NULL, 12, 16);
    assert_tensor(&f.tensors[1], "first", QFS_DT_F32, 1, (uint64_t[]){2}, 0, 8);
    assert_tensor(&f.tensors[2], "mid", QFS_DT_F16, 1, (uint64_t[]){2}, 8, 12);
    qfs_st_file_free(&f);
}

static void test_leading_whitespace(void **state)
{
    (void)state;
    qfs_st_file f;
    const char *js = " \n\t {'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}";
    expect_accept(js, 1, &f);
    assert_int_equal(f.n_tensors, 1);
    assert_int_equal(f.header_len, strlen(js));
    qfs_st_file_free(&f);
}

static void test_trailing_space_padding(void **state)
{
    (void)state;
    const char *js = "{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}";
    size_t n = strlen(js), len;
    assert_true(n % 8 != 0);   /* so padding is really added */
    uint8_t *b = st_build(js, 8, 1, &len);
    size_t padded = (n + 7) / 8 * 8;
    assert_int_equal(len, 8 + padded + 1);
    assert_int_equal(b[8 + padded - 1], ' ');
    qfs_st_file f;
    qfs_error err = {{0}};
    assert_int_equal(qfs_st_parse(b, len, len, PATH, &f, &err), 0);
    assert_int_equal(f.header_len, padded);
    assert_int_equal(f.data_start, 8 + padded);
    assert_int_equal(f.n_tensors, 1);
    qfs_st_file_free(&f);
    free(b);
}

static void test_empty_header(void **state)
{
    (void)state;
    qfs_st_file f;
    expect_accept("{}", 0, &f);
    assert_int_equal(f.n_tensors, 0);
    assert_int_equal(f.file_size, 10);
    qfs_st_file_free(&f);
}

static void test_every_dtype_size(void **state)
{
    (void)state;
    /* one tensor of 2 elements per dtype: bytes = 2 * bits / 8 */
    static const struct { const char *name; qfs_dtype dt; unsigned bytes; } cases[] = {
        {"BOOL", QFS_DT_BOOL, 2}, {"F4", QFS_DT_F4, 1}, {"U8", QFS_DT_U8, 2},
        {"I8", QFS_DT_I8, 2}, {"F8_E5M2", QFS_DT_F8_E5M2, 2}, {"F8_E4M3", QFS_DT_F8_E4M3, 2},
        {"F8_E8M0", QFS_DT_F8_E8M0, 2}, {"I16", QFS_DT_I16, 4}, {"U16", QFS_DT_U16, 4},
        {"F16", QFS_DT_F16, 4}, {"BF16", QFS_DT_BF16, 4}, {"I32", QFS_DT_I32, 8},
        {"U32", QFS_DT_U32, 8}, {"F32", QFS_DT_F32, 8}, {"C64", QFS_DT_C64, 16},
        {"F64", QFS_DT_F64, 16}, {"I64", QFS_DT_I64, 16}, {"U64", QFS_DT_U64, 16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char js[160];
        snprintf(js, sizeof js, "{'x':{'dtype':'%s','shape':[2],'data_offsets':[0,%u]}}",
                 cases[i].name, cases[i].bytes);
        qfs_st_file f;
        expect_accept(js, cases[i].bytes, &f);
        assert_int_equal(f.tensors[0].dtype, cases[i].dt);
        qfs_st_file_free(&f);
    }
}

static void test_sixteen_dims(void **state)
{
    (void)state;
    qfs_st_file f;
    expect_accept("{'x':{'dtype':'F32','shape':[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,2],"
                  "'data_offsets':[0,8]}}", 8, &f);
    assert_int_equal(f.tensors[0].ndim, 16);
    assert_int_equal(f.tensors[0].shape[15], 2);
    assert_int_equal(qfs_st_numel(&f.tensors[0]), 2);
    qfs_st_file_free(&f);
}

/* ---- hostile headers ---- */

static void test_file_too_small(void **state)
{
    (void)state;
    uint8_t b[7] = {2, 0, 0, 0, 0, 0, 0};
    expect_reject_bytes(b, sizeof b, sizeof b, "too small", NULL);
    expect_reject_bytes(b, 0, 0, "too small", NULL);
}

static void test_zero_length_header(void **state)
{
    (void)state;
    /* N = 0: an empty header is not JSON */
    uint8_t b[8] = {0};
    expect_reject_bytes(b, 8, 8, "JSON", NULL);
}

static void test_truncated_header_json(void **state)
{
    (void)state;
    /* N covers only part of the JSON text: the header itself is cut short */
    char *j = unit_json("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}");
    size_t len;
    uint8_t *b = st_raw(j, strlen(j), 20, 0, &len);
    expect_reject_bytes(b, 8 + 20, 8 + 20, "JSON", NULL);
    free(b);
    free(j);
}

static void test_truncated_file_inside_header(void **state)
{
    (void)state;
    /* N is right, but the file ends inside the header */
    char *j = unit_json("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}");
    size_t n = strlen(j), len;
    uint8_t *b = st_raw(j, n, n, 1, &len);
    expect_reject_bytes(b, 8 + 10, 8 + 10, "header length", NULL);
    free(b);
    free(j);
}

static void test_header_length_past_eof(void **state)
{
    (void)state;
    char *j = unit_json("{}");
    size_t len;
    uint8_t *b = st_raw(j, 2, 4096, 0, &len);
    expect_reject_bytes(b, len, len, "header length", NULL);
    free(b);
    free(j);
}

static void test_header_too_large(void **state)
{
    (void)state;
    uint8_t b[16] = {0};
    put_le64(b, 100000001ull);           /* one over MAX_HEADER_SIZE */
    expect_reject_bytes(b, sizeof b, 200000000ull, "too large", NULL);
    put_le64(b, UINT64_MAX);             /* 8 + N would overflow */
    expect_reject_bytes(b, sizeof b, 200000000ull, "too large", NULL);
    /* exactly the limit is not "too large": here it only runs past the end of the file */
    put_le64(b, 100000000ull);
    qfs_st_file f;
    qfs_error err = {{0}};
    assert_int_equal(qfs_st_parse(b, sizeof b, sizeof b, PATH, &f, &err), -EINVAL);
    assert_null(unit_strcasestr(err.msg, "too large"));
    assert_contains(err.msg, "header length");
}

static void test_invalid_json(void **state)
{
    (void)state;
    expect_reject("{'a': }", 0, "JSON", NULL);
    expect_reject("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}} x", 1, "JSON", NULL);
    expect_reject("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},}", 1, "JSON", NULL);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    /* a tensor name holding the byte 0xFF, otherwise valid */
    char *j = unit_json("{'a?':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}");
    char *q = strchr(j, '?');
    *q = (char)0xFF;
    size_t len;
    uint8_t *b = st_raw(j, strlen(j), strlen(j), 1, &len);
    /* Rejected, and the message names the problem as the Rust reader does. */
    expect_reject_bytes(b, len, len, "UTF-8", NULL);
    /* a truncated two-byte sequence in a metadata value */
    free(b);
    free(j);
    j = unit_json("{'__metadata__':{'k':'?'}}");
    *strchr(j, '?') = (char)0xC3;
    b = st_raw(j, strlen(j), strlen(j), 0, &len);
    expect_reject_bytes(b, len, len, NULL, NULL);
    free(b);
    free(j);
}

static void test_top_level_not_object(void **state)
{
    (void)state;
    expect_reject("[]", 0, "object", NULL);
    expect_reject("[{'dtype':'U8','shape':[1],'data_offsets':[0,1]}]", 1, "object", NULL);
    /* jansson stops these at the first byte: reported as invalid JSON */
    expect_reject("'abc'", 0, "JSON", NULL);
    expect_reject("42", 0, "JSON", NULL);
}

static void test_hole_between_tensors(void **state)
{
    (void)state;
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[0,4]},"
                  "'b':{'dtype':'F32','shape':[],'data_offsets':[8,12]}}", 12, "offset", "'b'");
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[0,4]},"
                  "'b':{'dtype':'F32','shape':[],'data_offsets':[8,12]}}", 12, "hole", NULL);
    /* a hole before the first tensor */
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[4,8]}}", 8, "hole", "'a'");
}

static void test_overlapping_tensors(void **state)
{
    (void)state;
    expect_reject("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
                  "'b':{'dtype':'F32','shape':[],'data_offsets':[4,8]}}", 8, "offset", "overlap");
    /* the same range twice */
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[0,4]},"
                  "'b':{'dtype':'F32','shape':[],'data_offsets':[0,4]}}", 4, "offset", "overlap");
}

static void test_end_before_begin(void **state)
{
    (void)state;
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[0,4]},"
                  "'b':{'dtype':'F32','shape':[0],'data_offsets':[4,0]}}", 4, "offset", "'b'");
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[0,4]},"
                  "'b':{'dtype':'F32','shape':[0],'data_offsets':[4,0]}}", 4, "end before begin",
                  NULL);
}

static void test_shape_dtype_size_mismatch(void **state)
{
    (void)state;
    /* F32 [2] needs 8 bytes, the offsets give 4 */
    expect_reject("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,4]}}", 4, "'a'", "shape");
    /* BF16 [3] needs 6, the offsets give 8 */
    expect_reject("{'a':{'dtype':'BF16','shape':[3],'data_offsets':[0,8]}}", 8, "'a'", "shape");
    /* a zero-size shape with bytes */
    expect_reject("{'a':{'dtype':'F32','shape':[0],'data_offsets':[0,4]}}", 4, "'a'", "shape");
}

static void test_misaligned_sub_byte(void **state)
{
    (void)state;
    /* F4 [3] = 12 bits: not a whole number of bytes */
    expect_reject("{'a':{'dtype':'F4','shape':[3],'data_offsets':[0,2]}}", 2, "'a'", "bytes");
}

static void test_unknown_dtype(void **state)
{
    (void)state;
    expect_reject("{'a':{'dtype':'F8_E4M3FN','shape':[1],'data_offsets':[0,1]}}", 1, "dtype",
                  "F8_E4M3FN");
    expect_reject("{'a':{'dtype':'bf16','shape':[1],'data_offsets':[0,2]}}", 2, "dtype", "bf16");
    expect_reject("{'a':{'dtype':7,'shape':[1],'data_offsets':[0,1]}}", 1, "dtype", NULL);
}

static void test_non_string_metadata(void **state)
{
    (void)state;
    expect_reject("{'__metadata__':{'format':'pt','n':1}}", 0, "__metadata__", "string");
    expect_reject("{'__metadata__':{'k':null}}", 0, "__metadata__", "string");
    expect_reject("{'__metadata__':{'k':{'x':'y'}}}", 0, "__metadata__", "string");
    expect_reject("{'__metadata__':['pt']}", 0, "__metadata__", "object");
    expect_reject("{'__metadata__':'pt'}", 0, "__metadata__", "object");
}

static void test_trailing_bytes(void **state)
{
    (void)state;
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[0,4]}}", 5, "covered", NULL);
    expect_reject("{}", 3, "covered", NULL);
}

static void test_missing_bytes(void **state)
{
    (void)state;
    expect_reject("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}", 7, "covered", NULL);
    expect_reject("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}", 0, "covered", NULL);
}

static void test_bad_shape_entries(void **state)
{
    (void)state;
    expect_reject("{'a':{'dtype':'F32','shape':[-1],'data_offsets':[0,4]}}", 4, "shape", NULL);
    expect_reject("{'a':{'dtype':'F32','shape':[2,-2],'data_offsets':[0,16]}}", 16, "shape", NULL);
    expect_reject("{'a':{'dtype':'F32','shape':[1.5],'data_offsets':[0,4]}}", 4, "shape", NULL);
    /* 2.0 is a JSON float: serde does not accept it as a usize */
    expect_reject("{'a':{'dtype':'F32','shape':[2.0],'data_offsets':[0,8]}}", 8, "shape", NULL);
    expect_reject("{'a':{'dtype':'F32','shape':['2'],'data_offsets':[0,8]}}", 8, "shape", NULL);
    expect_reject("{'a':{'dtype':'F32','shape':[null],'data_offsets':[0,4]}}", 4, "shape", NULL);
    expect_reject("{'a':{'dtype':'F32','shape':2,'data_offsets':[0,8]}}", 8, "shape", NULL);
}

static void test_shape_product_overflow(void **state)
{
    (void)state;
    /* 2^32 * 2^32 = 2^64 elements */
    expect_reject("{'a':{'dtype':'U8','shape':[4294967296,4294967296],'data_offsets':[0,0]}}", 0,
                  "overflow", "'a'");
    /* 2^61 elements fit, 2^61 * 32 bits do not */
    expect_reject("{'a':{'dtype':'F32','shape':[2305843009213693952],'data_offsets':[0,0]}}", 0,
                  "overflow", NULL);
}

static void test_data_offsets_shape(void **state)
{
    (void)state;
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[4]}}", 4, "data_offsets", NULL);
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[0,4,8]}}", 4, "data_offsets",
                  NULL);
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[-4,0]}}", 4, "data_offsets",
                  NULL);
    expect_reject("{'a':{'dtype':'F32','shape':[],'data_offsets':[0,4.0]}}", 4, "data_offsets",
                  NULL);
}

static void test_tensor_info_malformed(void **state)
{
    (void)state;
    expect_reject("{'a':5}", 0, "'a'", "object");
    expect_reject("{'a':{'shape':[1],'data_offsets':[0,1]}}", 1, "'a'", "dtype");
    expect_reject("{'a':{'dtype':'U8','data_offsets':[0,1]}}", 1, "'a'", "shape");
    expect_reject("{'a':{'dtype':'U8','shape':[1]}}", 1, "'a'", "data_offsets");
}

/* ---- through a file descriptor ---- */

static void test_read_fd_good(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = st_build("{'__metadata__':{'format':'pt'},"
                          "'w':{'dtype':'BF16','shape':[2,2],'data_offsets':[0,8]},"
                          "'s':{'dtype':'F32','shape':[],'data_offsets':[8,12]}}", 8, 12, &len);
    char *path = unit_tmpfile(b, len);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    qfs_st_file f;
    qfs_error err = {{0}};
    int rc = qfs_st_read_fd(fd, path, &f, &err);
    if (rc) fail_msg("rc %d: %s", rc, err.msg);
    assert_int_equal(f.n_tensors, 2);
    assert_tensor(&f.tensors[0], "w", QFS_DT_BF16, 2, (uint64_t[]){2, 2}, 0, 8);
    assert_tensor(&f.tensors[1], "s", QFS_DT_F32, 0, NULL, 8, 12);
    assert_int_equal(f.file_size, len);
    assert_int_equal(f.data_start, len - 12);
    assert_int_equal(f.header_len % 8, 0);
    assert_string_equal(json_string_value(json_object_get(f.metadata, "format")), "pt");
    qfs_st_file_free(&f);
    close(fd);
    unlink(path);
    free(path);
    free(b);
}

/* Writes bytes to a temp file, reads it through qfs_st_read_fd, expects -EINVAL + word. */
static void expect_read_fd_reject(const void *bytes, size_t len, const char *word)
{
    char *path = unit_tmpfile(bytes, len);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    qfs_st_file f;
    qfs_error err = {{0}};
    assert_int_equal(qfs_st_read_fd(fd, path, &f, &err), -EINVAL);
    assert_contains(err.msg, path);
    assert_contains(err.msg, word);
    assert_null(f.tensors);
    close(fd);
    unlink(path);
    free(path);
}

static void test_read_fd_small_file(void **state)
{
    (void)state;
    expect_read_fd_reject("\x02\0\0\0\0", 5, "too small");
    expect_read_fd_reject("", 0, "too small");
}

static void test_read_fd_header_past_eof(void **state)
{
    (void)state;
    size_t len;
    char *j = unit_json("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}");
    uint8_t *b = st_raw(j, strlen(j), 1000, 1, &len);
    expect_read_fd_reject(b, len, "header length");
    put_le64(b, 100000001ull);
    expect_read_fd_reject(b, len, "too large");
    free(b);
    free(j);
}

static void test_read_fd_trailing_bytes(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = st_build("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 8, 2, &len);
    expect_read_fd_reject(b, len, "covered");
    free(b);
}

static void test_read_fd_directory(void **state)
{
    (void)state;
    int fd = open("/", O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    qfs_st_file f;
    qfs_error err = {{0}};
    assert_int_equal(qfs_st_read_fd(fd, "/", &f, &err), -EINVAL);
    assert_contains(err.msg, "regular file");
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_tensors),
        cmocka_unit_test(test_find_many),
        cmocka_unit_test(test_scalar_shape),
        cmocka_unit_test(test_zero_size_tensors),
        cmocka_unit_test(test_only_zero_size_tensor),
        cmocka_unit_test(test_metadata_strings),
        cmocka_unit_test(test_metadata_after_tensors_and_null),
        cmocka_unit_test(test_key_order_differs_from_offsets),
        cmocka_unit_test(test_leading_whitespace),
        cmocka_unit_test(test_trailing_space_padding),
        cmocka_unit_test(test_empty_header),
        cmocka_unit_test(test_every_dtype_size),
        cmocka_unit_test(test_sixteen_dims),
        cmocka_unit_test(test_file_too_small),
        cmocka_unit_test(test_zero_length_header),
        cmocka_unit_test(test_truncated_header_json),
        cmocka_unit_test(test_truncated_file_inside_header),
        cmocka_unit_test(test_header_length_past_eof),
        cmocka_unit_test(test_header_too_large),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_top_level_not_object),
        cmocka_unit_test(test_hole_between_tensors),
        cmocka_unit_test(test_overlapping_tensors),
        cmocka_unit_test(test_end_before_begin),
        cmocka_unit_test(test_shape_dtype_size_mismatch),
        cmocka_unit_test(test_misaligned_sub_byte),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_non_string_metadata),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_missing_bytes),
        cmocka_unit_test(test_bad_shape_entries),
        cmocka_unit_test(test_shape_product_overflow),
        cmocka_unit_test(test_data_offsets_shape),
        cmocka_unit_test(test_tensor_info_malformed),
        cmocka_unit_test(test_read_fd_good),
        cmocka_unit_test(test_read_fd_small_file),
        cmocka_unit_test(test_read_fd_header_past_eof),
        cmocka_unit_test(test_read_fd_trailing_bytes),
        cmocka_unit_test(test_read_fd_directory),
        cmocka_unit_test(test_stream_reads_common_headers),
        cmocka_unit_test(test_stream_layout_errors_are_the_tree_s),
        cmocka_unit_test(test_stream_leaves_the_rest_to_the_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
