/* libFuzzer target: the safetensors header parser. The input is a whole file (file_size = its
 * length); a header that parses is checked (fuzz_check_st_file) and then planned for a few
 * spec/format pairs and selection rules, each plan checked (fuzz_check_plan). The streaming
 * parser is checked against the tree parser: whatever it reads, it reads as the tree does. */
#include "fuzz_check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "quarkfs/plan.h"
#include "quarkfs/safetensors.h"
#include "quarkfs/spec.h"

static const struct {
    const char *spec;
    qfs_format format;
    int rules;   /* index into the rules below, -1 for none */
} pairs[] = {
    {"int8", QFS_FMT_QUARK, -1},
    {"uint4-g32", QFS_FMT_AWQ, 0},
    {"fp8-block", QFS_FMT_FP8, -1},
    {"int4-g32", QFS_FMT_COMPRESSED_TENSORS, 1},
    {"mxfp4", QFS_FMT_QUARK, -1},
    {"int8-channel", QFS_FMT_COMPRESSED_TENSORS, -1},
};

static const char *const excl0[] = {"*.mlp.*"};
static const char *const incl1[] = {"model.layers.[02].*", "*proj"};
static const qfs_select_rules rules[] = {
    {excl0, 1, NULL, 0, NULL, 0},
    {NULL, 0, incl1, 2, NULL, 0},
};

/* The streaming parser either leaves the header to the tree parser (-EAGAIN) or gives what the
 * tree parser gives: the same rc and message, or the same tensors and metadata. */
static void check_stream_is_tree(const uint8_t *data, size_t size)
{
    qfs_st_file s, t;
    qfs_error es = {{0}}, et = {{0}};
    int rs = qfs_st_parse_with(QFS_JSON_STREAM, data, size, size, "fuzz.safetensors", &s, &es);
    if (rs == -EAGAIN) {
        FUZZ_CHECK(!s.tensors && !s.metadata && s.n_tensors == 0, "-EAGAIN left state");
        return;
    }
    int rt = qfs_st_parse_with(QFS_JSON_TREE, data, size, size, "fuzz.safetensors", &t, &et);
    FUZZ_CHECK(rs == rt, "streaming parser rc %d (%s), tree rc %d (%s)", rs, es.msg, rt, et.msg);
    if (rs) {
        FUZZ_CHECK(strcmp(es.msg, et.msg) == 0, "messages differ: '%s' / '%s'", es.msg, et.msg);
        return;
    }
    FUZZ_CHECK(s.n_tensors == t.n_tensors, "%zu tensors streamed, %zu in the tree", s.n_tensors,
               t.n_tensors);
    for (size_t i = 0; i < s.n_tensors; i++) {
        const qfs_st_tensor *a = &s.tensors[i], *b = &t.tensors[i];
        bool same = strcmp(a->name, b->name) == 0 && a->dtype == b->dtype && a->ndim == b->ndim &&
                    a->begin == b->begin && a->end == b->end &&
                    memcmp(a->shape, b->shape, a->ndim * sizeof a->shape[0]) == 0;
        FUZZ_CHECK(same, "tensor %zu differs between the parsers", i);
    }
    FUZZ_CHECK(!s.metadata == !t.metadata, "metadata in one parse only");
    if (s.metadata) {
        char *ds = json_dumps(s.metadata, JSON_COMPACT), *dt = json_dumps(t.metadata, JSON_COMPACT);
        FUZZ_CHECK(ds && dt && strcmp(ds, dt) == 0, "metadata differ: %s / %s", ds, dt);
        free(ds);
        free(dt);
    }
    qfs_st_file_free(&s);
    qfs_st_file_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_stream_is_tree(data, size);
    qfs_st_file f;
    qfs_error err = {{0}};
    int rc = qfs_st_parse(data, size, size, "fuzz.safetensors", &f, &err);
    if (rc) {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "qfs_st_parse returned %d", rc);
        FUZZ_CHECK(rc == -ENOMEM || strstr(err.msg, "fuzz.safetensors"),
                   "error message does not name the file: '%s'", err.msg);
        FUZZ_CHECK(f.n_tensors == 0 && !f.tensors && !f.metadata, "failed parse left state");
        return 0;
    }
    fuzz_check_st_file(&f, size);
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const qfs_spec *spec;
        FUZZ_CHECK(qfs_spec_lookup(pairs[i].spec, &spec, &err) == 0, "%s", err.msg);
        qfs_plan_options o = {spec, pairs[i].format,
                              pairs[i].rules < 0 ? NULL : &rules[pairs[i].rules], NULL};
        qfs_plan p;
        rc = qfs_plan_build(&f, &o, "fuzz.safetensors", &p, &err);
        FUZZ_CHECK(rc == 0, "qfs_plan_build(%s, %s) failed on a valid header: %d %s",
                   pairs[i].spec, qfs_format_name(pairs[i].format), rc, err.msg);
        fuzz_check_plan(&f, &o, &p);
        qfs_plan_free(&p);
    }
    qfs_st_file_free(&f);
    return 0;
}
