/* libFuzzer target: the planner, structure-aware. The input bytes drive a generator that always
 * writes a valid safetensors header (names from a vocabulary of real module names and suffixes,
 * odd characters, any dtype, shapes from 0 to near 2^63 bytes, metadata, any JSON order and data
 * order), so nearly every input reaches the planner; file_size is the header's plus the data's,
 * which is never read. The header is parsed, then planned for every valid spec x format with
 * --exclude/--include globs and --check-finite flags from the input, and every plan checked
 * (fuzz_check_plan: offsets, header, tensor_at, layouts, re-parse). */
#include "fuzz_check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "quarkfs/dtype.h"
#include "quarkfs/plan.h"
#include "quarkfs/safetensors.h"
#include "quarkfs/select.h"
#include "quarkfs/spec.h"

/* ---- reading the input: past its end every read is 0 ---- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static unsigned u8(reader *r)
{
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

static uint64_t u64(reader *r, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++) v = v << 8 | u8(r);
    return v;
}

static unsigned pick(reader *r, unsigned n) { return n ? u8(r) % n : 0; }

/* ---- names ---- */

static const char *const components[] = {
    "model", "layers", "0", "1", "2", "10", "self_attn", "q_proj", "k_proj", "v_proj", "o_proj",
    "mlp", "gate_proj", "up_proj", "down_proj", "experts", "embed_tokens", "norm",
    "input_layernorm", "post_attention_layernorm", "lm_head", "wte", "wpe", "ln_f", "ln_1",
    "shared", "transformer", "h", "attn", "c_attn", "word_embeddings", "Norm", "weight", "bias",
    "fc1", "x", "",
};
static const char *const suffixes[] = {
    ".weight", ".weight", ".weight", ".weight", ".weight", ".bias", ".weight_scale",
    ".weight_zero_point", ".qweight", ".scales", ".qzeros", ".weight_packed", ".weight_shape",
    ".weight_scale_inv", "", ".weight.weight", "weight", ".input_scale",
};
/* Odd characters, each valid UTF-8 on its own. */
static const char *const odd[] = {
    "*", "?", "[", "]", "\\", "\"", " ", "/", "-", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
    "\x7f", "\t", "\n", "\x01", ".", "..", "%s", "%n",
};

/* Names up to 4 KiB: the planner and the selection keep module names in 1 KiB buffers. */
typedef struct buf {
    char s[4096];
    size_t n;
} buf;

static void put(buf *b, const char *s)
{
    size_t l = strlen(s);
    if (b->n + l >= sizeof b->s) return;
    memcpy(b->s + b->n, s, l + 1);
    b->n += l;
}

#define N_COMPONENTS (sizeof components / sizeof components[0])

/* QFS_FUZZ_SHORT_NAMES=1 keeps every name under 1000 bytes: to fuzz past the known long-name
 * problem (README.md, "Crashes found") while it is open. */
static bool short_names;

/* A module name: dot-separated components, some odd characters, some very long. */
static void gen_module(reader *r, buf *b)
{
    unsigned n = 1 + pick(r, 6);
    for (unsigned i = 0; i < n; i++) {
        if (i) put(b, ".");
        unsigned c = u8(r);
        if (c < 208) {
            put(b, components[c % N_COMPONENTS]);
        } else if (c >= 240 && !short_names) {
            /* A long run (1 KiB and more with a few of them). */
            const char *w = components[pick(r, N_COMPONENTS)];
            unsigned k = 16 + pick(r, 240);
            for (unsigned j = 0; j < k; j++) {
                put(b, w);
                put(b, "_");
            }
        } else {
            unsigned k = 1 + (c & 3);
            for (unsigned j = 0; j < k; j++) put(b, odd[pick(r, sizeof odd / sizeof odd[0])]);
        }
    }
}

/* ---- the generated header ---- */

#define MAX_TENSORS 24

typedef struct gen_tensor {
    char name[4096];
    qfs_dtype dtype;
    unsigned ndim;
    uint64_t shape[QFS_ST_MAX_DIMS];
    uint64_t bytes;
    uint64_t key;   /* data order */
} gen_tensor;

static const qfs_dtype float_dtypes[] = {QFS_DT_BF16, QFS_DT_F16, QFS_DT_F32};

static qfs_dtype gen_dtype(reader *r)
{
    unsigned c = u8(r);
    if (c < 176) return float_dtypes[c % 3];
    return (qfs_dtype)(c % QFS_DT_COUNT);
}

/* A dimension: mostly small or a multiple of a packing/group size, sometimes huge. */
static uint64_t gen_dim(reader *r)
{
    unsigned c = u8(r);
    switch (c % 10) {
    case 0: return 0;
    case 1: return 1;
    case 2: case 3: return 1 + pick(r, 64);
    case 4: return 8 * (1 + (uint64_t)pick(r, 32));
    case 5: return 32 * (1 + (uint64_t)pick(r, 16));
    case 6: return 128 * (1 + (uint64_t)pick(r, 8));
    case 7: return 1 + u64(r, 3);
    case 8: return u64(r, 8) >> (1 + c / 10 % 63);   /* JSON integers: at most 2^63 - 1 */
    default:
        /* Around a power of two from 2^12 to 2^51: products near the 64-bit limits. */
        return ((uint64_t)1 << (12 + pick(r, 40))) + (uint64_t)pick(r, 3) * 128 - 128 * (c & 1);
    }
}

/* Bytes of the tensor, or false if it overflows or is not a whole number of bytes. */
static bool gen_bytes(const gen_tensor *t, uint64_t *out)
{
    uint64_t n = 1, bits;
    for (unsigned d = 0; d < t->ndim; d++)
        if (__builtin_mul_overflow(n, t->shape[d], &n)) return false;
    if (__builtin_mul_overflow(n, (uint64_t)qfs_dtype_bits(t->dtype), &bits) || bits % 8)
        return false;
    *out = bits / 8;
    return true;
}

static int cmp_key(const void *a, const void *b)
{
    const gen_tensor *x = *(const gen_tensor *const *)a, *y = *(const gen_tensor *const *)b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return strcmp(x->name, y->name);
}

static json_t *shape_json(const gen_tensor *t)
{
    json_t *a = json_array();
    for (unsigned d = 0; d < t->ndim; d++) json_array_append_new(a, json_integer((json_int_t)t->shape[d]));
    return a;
}

/* Generates a header into *out (8-byte length + JSON + padding); returns its file size. */
static uint64_t gen_header(reader *r, uint8_t **out, size_t *out_len)
{
    static gen_tensor ts[MAX_TENSORS];
    size_t n = 0, want = pick(r, MAX_TENSORS + 1);
    uint64_t total = 0;
    for (size_t i = 0; i < want; i++) {
        gen_tensor *t = &ts[n];
        memset(t, 0, sizeof *t);
        buf b = {{0}, 0};
        unsigned how = u8(r);
        if (n && how % 4 == 0) {
            /* Another output-like name of an earlier module (name clashes, quantized twins), or
             * a submodule of it. */
            char *module = qfs_select_module_dup(ts[pick(r, (unsigned)n)].name);
            if (module) put(&b, module);
            free(module);
            if (how & 4) {
                put(&b, ".");
                gen_module(r, &b);
            }
        } else {
            gen_module(r, &b);
        }
        put(&b, suffixes[pick(r, sizeof suffixes / sizeof suffixes[0])]);
        if (short_names && b.n >= 1000) continue;
        memcpy(t->name, b.s, b.n + 1);
        if (strcmp(t->name, "__metadata__") == 0) continue;
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++) dup = strcmp(ts[j].name, t->name) == 0;
        if (dup) continue;
        t->dtype = gen_dtype(r);
        unsigned nd = u8(r) % 12;
        t->ndim = nd < 2 ? nd : nd < 9 ? 2 : nd < 11 ? 3 : 4 + pick(r, QFS_ST_MAX_DIMS - 3);
        for (unsigned d = 0; d < t->ndim; d++) t->shape[d] = gen_dim(r);
        /* Keep it valid: whole bytes, no overflow, data offsets within JSON integers. */
        if (!gen_bytes(t, &t->bytes)) {
            if (qfs_dtype_bits(t->dtype) < 8) t->dtype = QFS_DT_U8;
            for (unsigned d = 0; d < t->ndim && !gen_bytes(t, &t->bytes); d++)
                t->shape[d] = t->shape[d] % 4096;
            if (!gen_bytes(t, &t->bytes)) continue;
        }
        if (t->bytes > (uint64_t)INT64_MAX - total) {
            for (unsigned d = 0; d < t->ndim; d++) t->shape[d] %= 64;
            if (!gen_bytes(t, &t->bytes) || t->bytes > (uint64_t)INT64_MAX - total) continue;
        }
        total += t->bytes;
        t->key = u8(r);
        n++;
    }

    /* Data order: by key (then name); JSON order: generation order. */
    gen_tensor *order[MAX_TENSORS];
    for (size_t i = 0; i < n; i++) order[i] = &ts[i];
    qsort(order, n, sizeof *order, cmp_key);
    uint64_t off = 0;
    json_t *begins = json_object();
    for (size_t i = 0; i < n; i++) {
        json_object_set_new(begins, order[i]->name, json_integer((json_int_t)off));
        off += order[i]->bytes;
    }

    unsigned meta = u8(r);
    json_t *root = json_object();
    json_t *md = NULL;
    switch (meta % 5) {
    case 0: break;
    case 1: md = json_null(); break;
    case 2: md = json_pack("{s:s}", "format", "pt"); break;
    case 3: md = json_pack("{s:s,s:s}", "format", "np", "source", "caf\xc3\xa9"); break;
    default: md = json_pack("{s:s,s:s}", "total_parameters", "42", "format", "pt"); break;
    }
    if (md && (meta & 8)) json_object_set_new(root, "__metadata__", md);
    for (size_t i = 0; i < n; i++) {
        const gen_tensor *t = &ts[i];
        uint64_t b0 = (uint64_t)json_integer_value(json_object_get(begins, t->name));
        json_t *info = json_pack("{s:s,s:o,s:[I,I]}", "dtype", qfs_dtype_name(t->dtype), "shape",
                                 shape_json(t), "data_offsets", (json_int_t)b0,
                                 (json_int_t)(b0 + t->bytes));
        FUZZ_CHECK(info && json_object_set_new(root, t->name, info) == 0,
                   "generator: cannot add '%s'", t->name);
    }
    if (md && !(meta & 8)) json_object_set_new(root, "__metadata__", md);
    json_decref(begins);

    size_t flags = meta & 16 ? JSON_INDENT(1) : JSON_COMPACT;
    char *js = json_dumps(root, flags);
    json_decref(root);
    FUZZ_CHECK(js, "generator: json_dumps failed");
    size_t jl = strlen(js), pad = (meta >> 5) & 7;
    *out_len = 8 + jl + pad;
    *out = malloc(*out_len);
    FUZZ_CHECK(*out, "out of memory");
    uint64_t hn = jl + pad;
    for (int i = 0; i < 8; i++) (*out)[i] = (uint8_t)(hn >> (8 * i));
    memcpy(*out + 8, js, jl);
    memset(*out + 8 + jl, ' ', pad);
    free(js);
    return 8 + hn + total;
}

/* ---- selection rules ---- */

static const char *const glob_pieces[] = {
    "*", "?", "model", "layers", ".", "*.", ".*", "mlp", "self_attn", "*proj", "q_proj",
    "down_proj", "[0-9]", "[!m]", "[", "]", "\\", "lm_head", "0", "1", "*.0.*", "norm", "**",
    "\xc3\xa9", "[a-", "x",
};

#define MAX_GLOBS 3

typedef struct globs {
    char s[2 * MAX_GLOBS][96];
    const char *ex[MAX_GLOBS], *in[MAX_GLOBS];
} globs;

static void gen_glob(reader *r, char *s, size_t len)
{
    s[0] = '\0';
    unsigned k = 1 + pick(r, 5);
    for (unsigned i = 0; i < k; i++) {
        const char *p = glob_pieces[pick(r, sizeof glob_pieces / sizeof glob_pieces[0])];
        if (strlen(s) + strlen(p) < len) strcat(s, p);
    }
}

static void gen_rules(reader *r, globs *g, qfs_select_rules *rules)
{
    unsigned c = u8(r);
    rules->n_excludes = c % 4 == 3 ? 0 : c % 4;
    rules->n_includes = (c >> 2) % 8 < 6 ? 0 : 1 + (c >> 5) % 2;
    for (size_t i = 0; i < rules->n_excludes; i++) {
        gen_glob(r, g->s[i], sizeof g->s[i]);
        g->ex[i] = g->s[i];
    }
    for (size_t i = 0; i < rules->n_includes; i++) {
        gen_glob(r, g->s[MAX_GLOBS + i], sizeof g->s[MAX_GLOBS + i]);
        g->in[i] = g->s[MAX_GLOBS + i];
    }
    rules->excludes = g->ex;
    rules->includes = g->in;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        const char *e = getenv("QFS_FUZZ_SHORT_NAMES");
        short_names = e && strcmp(e, "1") == 0;
        init = 1;
    }
    reader r = {data, size};
    uint8_t *hdr;
    size_t hdr_len;
    uint64_t file_size = gen_header(&r, &hdr, &hdr_len);

    qfs_st_file f;
    qfs_error err = {{0}};
    int rc = qfs_st_parse(hdr, hdr_len, file_size, "gen.safetensors", &f, &err);
    FUZZ_CHECK(rc == 0, "a generated valid header was refused: %s\n%.*s", err.msg,
               (int)(hdr_len > 8 ? hdr_len - 8 : 0), (const char *)hdr + 8);
    free(hdr);
    fuzz_check_st_file(&f, file_size);

    globs g;
    qfs_select_rules rules = {0};
    gen_rules(&r, &g, &rules);
    bool use_rules = rules.n_excludes || rules.n_includes;
    bool *nonfinite = NULL;
    if (u8(&r) & 1) {
        nonfinite = calloc(f.n_tensors + 1, sizeof *nonfinite);
        FUZZ_CHECK(nonfinite, "out of memory");
        for (size_t i = 0; i < f.n_tensors; i++) nonfinite[i] = u8(&r) % 5 == 0;
    }

    size_t n_specs;
    const qfs_spec *specs = qfs_spec_all(&n_specs);
    for (size_t s = 0; s < n_specs; s++) {
        for (int fm = 0; fm < QFS_FMT_COUNT; fm++) {
            if (!qfs_spec_format_ok(&specs[s], (qfs_format)fm)) continue;
            qfs_plan_options o = {&specs[s], (qfs_format)fm, use_rules ? &rules : NULL,
                                  nonfinite};
            qfs_plan p;
            rc = qfs_plan_build(&f, &o, "gen.safetensors", &p, &err);
            /* A view over 2^63 bytes is refused (EFBIG, named); anything else must plan. */
            if (rc == -EFBIG && strstr(err.msg, "2^63")) continue;
            FUZZ_CHECK(rc == 0, "qfs_plan_build(%s, %s) failed: %d %s", specs[s].name,
                       qfs_format_name((qfs_format)fm), rc, err.msg);
            fuzz_check_plan(&f, &o, &p);
            qfs_plan_free(&p);
        }
    }
    free(nonfinite);
    qfs_st_file_free(&f);
    return 0;
}
