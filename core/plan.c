#include "quarkfs/plan.h"
#include "quarkfs/sort.h"
#include "quarkfs/textbuf.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qfs_plan_free(qfs_plan *p)
{
    if (!p) return;
    free(p->names);
    free(p->tensors);
    free(p->jobs);
    free(p->layouts);
    free(p->dims);
    free(p->job_of);
    free(p->decisions);
    free(p->header);
    memset(p, 0, sizeof *p);
}

_Static_assert(QFS_ST_MAX_DIMS <= UINT8_MAX, "qfs_plan_tensor keeps ndim in 8 bits");

/* What the file order sorts on (within one dtype), kept small so that sorting a million
 * tensors moves 16 bytes per step and reads a name, not a whole qfs_plan_tensor. */
typedef struct order_key {
    char *name;     /* in the plan's name block */
    uint32_t pos;   /* source tensor x QFS_LAYOUT_MAX_OUT + its output */
} order_key;

/* Within one dtype, safetensors' order is the names' (bytewise). */
static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const order_key *)a)->name, ((const order_key *)b)->name);
}

/* The names of the outputs, written one after another into one block (p->names). */
typedef struct name_block {
    char *s;
    size_t len, cap;
} name_block;

/* Appends the first m bytes of module and then suffix as one name; NULL when it does not fit
 * (the block is sized in advance, so only a bug can make it so). */
static char *block_name(name_block *b, const char *module, size_t m, const char *suffix)
{
    size_t n = strlen(suffix);
    if (b->len + m + n + 1 > b->cap) return NULL;
    char *s = b->s + b->len;
    memcpy(s, module, m);
    memcpy(s + m, suffix, n + 1);
    b->len += m + n + 1;
    return s;
}

/* Appends one output tensor; its name lives in the plan's name block, its shape in the plan's
 * dims or layouts. */
static void add_output(qfs_plan *p, char *name, qfs_dtype dt, unsigned ndim,
                       const uint64_t *shape, uint64_t size, qfs_role role, size_t src)
{
    p->tensors[p->n_tensors++] = (qfs_plan_tensor){
        .name = name, .shape = shape, .size = size, .src = (uint32_t)src, .dtype = dt,
        .role = (uint8_t)role, .ndim = (uint8_t)ndim,
    };
}

/* The layouts of a plan, each computed once: the weights of a model come in a few shapes, so
 * a job points at a shared layout rather than holding one (280 bytes) of its own. Only the
 * last few distinct layouts are searched, which finds the repeats of a model's layers in
 * O(1); a file of ever new shapes just gets one layout per job, as if nothing were shared. */
#define LAYOUT_WINDOW 16

typedef struct layout_key {
    const qfs_spec *spec;
    qfs_dtype dtype;
    uint64_t rows, cols;
} layout_key;

typedef struct layout_set {
    qfs_layout *layouts;
    layout_key *keys;
    size_t n, cap;
} layout_set;

static size_t find_layout(const layout_set *ls, const layout_key *k)
{
    for (size_t i = ls->n; i-- > 0 && ls->n - i <= LAYOUT_WINDOW;) {
        const layout_key *c = &ls->keys[i];
        if (c->spec == k->spec && c->dtype == k->dtype && c->rows == k->rows && c->cols == k->cols)
            return i;
    }
    return SIZE_MAX;
}

static int add_layout(layout_set *ls, const layout_key *k, const qfs_layout *l, size_t *idx)
{
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? 2 * ls->cap : 16;
        qfs_layout *nl = realloc(ls->layouts, cap * sizeof *nl);
        if (!nl) return -ENOMEM;
        ls->layouts = nl;
        layout_key *nk = realloc(ls->keys, cap * sizeof *nk);
        if (!nk) return -ENOMEM;
        ls->keys = nk;
        ls->cap = cap;
    }
    ls->layouts[ls->n] = *l;
    ls->keys[ls->n] = *k;
    *idx = ls->n++;
    return 0;
}

static void put_str(qfs_textbuf *b, const char *s) { qfs_textbuf_put(b, s, strlen(s)); }

/* A JSON string exactly as jansson's compact dump writes it (the bytes of the header are
 * those of Quark/transformers' export, which goes through the same rules): '"' and '\\'
 * escaped, \b \f \n \r \t short, other bytes below 0x20 as \u00XX, the rest (UTF-8) as is. */
static void put_json_string(qfs_textbuf *b, const char *s)
{
    qfs_textbuf_put(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        qfs_textbuf_put(b, run, (size_t)(s - run));
        char esc[8];
        switch (c) {
        case '"': qfs_textbuf_put(b, "\\\"", 2); break;
        case '\\': qfs_textbuf_put(b, "\\\\", 2); break;
        case '\b': qfs_textbuf_put(b, "\\b", 2); break;
        case '\f': qfs_textbuf_put(b, "\\f", 2); break;
        case '\n': qfs_textbuf_put(b, "\\n", 2); break;
        case '\r': qfs_textbuf_put(b, "\\r", 2); break;
        case '\t': qfs_textbuf_put(b, "\\t", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04X", c);
            qfs_textbuf_put(b, esc, 6);
        }
        run = s + 1;
    }
    qfs_textbuf_put(b, run, (size_t)(s - run));
    qfs_textbuf_put(b, "\"", 1);
}

static void put_u64(qfs_textbuf *b, uint64_t v)
{
    char num[24];
    size_t i = sizeof num;
    do num[--i] = (char)('0' + v % 10); while ((v /= 10));
    qfs_textbuf_put(b, num + i, sizeof num - i);
}

/* Header bytes: 8-byte LE length, compact JSON with __metadata__ first ("format":"pt", then the
 * source's other keys in their order), tensors in file order, spaces up to a multiple of 8.
 * Written directly (a JSON object per tensor costs ~10 us each in jansson: seconds for a
 * header of a million tensors); tests/unit/test_plan.c checks it against jansson's dump. */
static int build_header(qfs_plan *p, const qfs_st_file *src, const char *path, qfs_error *err)
{
    qfs_textbuf b = {0};
    qfs_textbuf_put(&b, "\x00\x00\x00\x00\x00\x00\x00\x00", 8);   /* the length, filled in below */
    put_str(&b, "{\"__metadata__\":{\"format\":\"pt\"");
    if (src->metadata) {
        const char *k;
        json_t *v;
        json_object_foreach(src->metadata, k, v) {
            if (strcmp(k, "format") == 0 || !json_is_string(v)) continue;
            qfs_textbuf_put(&b, ",", 1);
            put_json_string(&b, k);
            qfs_textbuf_put(&b, ":", 1);
            put_json_string(&b, json_string_value(v));
        }
    }
    qfs_textbuf_put(&b, "}", 1);
    for (size_t i = 0; i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        qfs_textbuf_put(&b, ",", 1);
        put_json_string(&b, t->name);
        put_str(&b, ":{\"dtype\":");
        put_json_string(&b, qfs_dtype_name(t->dtype));
        put_str(&b, ",\"shape\":[");
        for (unsigned d = 0; d < t->ndim; d++) {
            if (d) qfs_textbuf_put(&b, ",", 1);
            put_u64(&b, t->shape[d]);
        }
        put_str(&b, "],\"data_offsets\":[");
        put_u64(&b, t->offset);
        qfs_textbuf_put(&b, ",", 1);
        put_u64(&b, t->offset + t->size);
        put_str(&b, "]}");
    }
    qfs_textbuf_put(&b, "}", 1);
    while (!b.failed && (b.len - 8) % 8) qfs_textbuf_put(&b, " ", 1);
    if (b.failed) {
        free(b.s);
        qfs_error_set(err, "%s: cannot serialize the output header", path);
        return -ENOMEM;
    }
    uint64_t n = b.len - 8;
    for (int i = 0; i < 8; i++) b.s[i] = (char)(uint8_t)(n >> (8 * i));
    p->header = (uint8_t *)b.s;
    p->header_size = b.len;
    return 0;
}

/* Which output suffixes some source name ends with: only those can make a name clash, so the
 * others need no lookup (two per quantized tensor otherwise, each a cache miss in a big
 * file's name table). Suffixes come from a small fixed set (layout.c); past MAX_SUFFIXES of
 * them every name is looked up, as if each were taken. */
#define MAX_SUFFIXES 16

typedef struct suffix_set {
    const char *suffix[MAX_SUFFIXES];
    bool taken[MAX_SUFFIXES];
    size_t n;
} suffix_set;

/* Whether some name of src ends with suffix: one pass over the names per new suffix, which
 * also settles the other suffixes of layout l not seen yet. */
static bool suffix_taken(suffix_set *ss, const qfs_st_file *src, const qfs_layout *l,
                         const char *suffix)
{
    for (size_t i = 0; i < ss->n; i++)   /* the suffixes are literals: pointers match first */
        if (ss->suffix[i] == suffix) return ss->taken[i];
    for (size_t i = 0; i < ss->n; i++)
        if (strcmp(ss->suffix[i], suffix) == 0) return ss->taken[i];
    size_t first = ss->n;
    for (unsigned k = 0; k < l->n_out && ss->n < MAX_SUFFIXES; k++) {
        bool known = false;
        for (size_t i = 0; i < ss->n && !known; i++)
            known = strcmp(ss->suffix[i], l->out[k].suffix) == 0;
        if (!known) {
            ss->suffix[ss->n] = l->out[k].suffix;
            ss->taken[ss->n++] = false;
        }
    }
    if (first == ss->n) return true;   /* no room left: look the name up */
    for (size_t t = 0; t < src->n_tensors; t++) {
        const char *name = src->tensors[t].name;
        size_t len = strlen(name);
        for (size_t i = first; i < ss->n; i++) {
            size_t sl = strlen(ss->suffix[i]);
            ss->taken[i] |= len >= sl && memcmp(name + len - sl, ss->suffix[i], sl) == 0;
        }
    }
    for (size_t i = first; i < ss->n; i++)
        if (strcmp(ss->suffix[i], suffix) == 0) return ss->taken[i];
    return true;
}

int qfs_plan_build(const qfs_st_file *src, const qfs_plan_options *opts, const char *path,
                   qfs_plan *out, qfs_error *err)
{
    const qfs_spec *spec = opts->spec;
    memset(out, 0, sizeof *out);
    qfs_plan *p = out;
    size_t n = src->n_tensors;
    if (n > UINT32_MAX / QFS_LAYOUT_MAX_OUT) {   /* qfs_plan_tensor's 32-bit indexes */
        qfs_error_set(err, "%s: %zu tensors is more than quarkfs can plan", path, n);
        return -EFBIG;
    }
    int rc = -ENOMEM;
    order_key *keys = NULL;
    name_block nb = {0};
    layout_set ls = {0};
    suffix_set ss = {0};
    char *scratch = NULL;       /* a candidate output name (names have no length limit) */
    size_t scratch_cap = 0;
    /* Per source tensor: its layout in ls (quantized ones only). */
    uint32_t *layout_of = malloc((n ? n : 1) * sizeof *layout_of);
    p->decisions = malloc((n ? n : 1) * sizeof *p->decisions);
    if (!layout_of || !p->decisions) goto fail;

    /* The decisions, and how many outputs, name bytes and dims they make. */
    size_t n_jobs = 0, n_out = 0, name_bytes = 0, n_dims = 0;
    size_t per_dtype[QFS_DT_COUNT] = {0};   /* outputs of each dtype */
    for (size_t i = 0; i < n; i++) {
        const qfs_st_tensor *t = &src->tensors[i];
        qfs_select_result d = qfs_select_tensor(t, spec, opts->rules);
        if (d == QFS_SELECT_QUANTIZE && opts->nonfinite && opts->nonfinite[i])
            d = QFS_SKIP_NONFINITE;
        layout_key key = {spec, t->dtype, 0, 0};
        if (d == QFS_SELECT_QUANTIZE && opts->rules && opts->rules->n_layers) {
            size_t ml = qfs_select_module_len(t->name), rule;   /* the module name, in scratch */
            if (ml + 1 > scratch_cap) {
                char *ns = realloc(scratch, ml + 1);
                if (!ns) goto fail;
                scratch = ns;
                scratch_cap = ml + 1;
            }
            memcpy(scratch, t->name, ml);
            scratch[ml] = '\0';
            key.spec = qfs_select_layer_spec(scratch, spec, opts->rules, &rule);
        }
        qfs_layout fresh;
        const qfs_layout *l = NULL;
        size_t li = SIZE_MAX;
        if (d == QFS_SELECT_QUANTIZE) {
            key.rows = t->shape[0];
            key.cols = t->shape[1];
            li = find_layout(&ls, &key);
            if (li != SIZE_MAX) l = &ls.layouts[li];
            else if (qfs_layout_for(key.spec, opts->format, t->dtype, key.rows, key.cols, &fresh,
                                    NULL))
                d = QFS_SKIP_SHAPE;
            else l = &fresh;
        }
        size_t m = qfs_select_module_len(t->name), bytes = 0;
        for (unsigned k = 0; d == QFS_SELECT_QUANTIZE && k < l->n_out; k++) {
            const char *suffix = l->out[k].suffix;
            size_t len = m + strlen(suffix) + 1;
            bytes += len;
            /* Every new name must be free: the source would otherwise hold it twice. The
             * tensor's own name (module + the same suffix) is not new. */
            if (strcmp(suffix, t->name + m) == 0 || !suffix_taken(&ss, src, l, suffix)) continue;
            if (len > scratch_cap) {
                char *ns = realloc(scratch, len);
                if (!ns) goto fail;
                scratch = ns;
                scratch_cap = len;
            }
            name_block one = {scratch, 0, scratch_cap};
            block_name(&one, t->name, m, suffix);
            if (qfs_st_find(src, scratch)) d = QFS_SKIP_NAME_CLASH;
        }
        p->decisions[i] = d;
        if (d == QFS_SELECT_QUANTIZE) {
            n_jobs++;
            n_out += l->n_out;
            name_bytes += bytes;
            for (unsigned k = 0; k < l->n_out; k++) per_dtype[l->out[k].dtype]++;
            if (li == SIZE_MAX && add_layout(&ls, &key, l, &li)) goto fail;
            layout_of[i] = (uint32_t)li;
        } else {
            n_out++;
            name_bytes += strlen(t->name) + 1;
            n_dims += t->ndim;
            per_dtype[t->dtype]++;
        }
    }

    /* From here on ls is complete: pointers into it stay valid. */
    p->layouts = ls.layouts;
    p->n_layouts = ls.n;
    ls.layouts = NULL;
    keys = malloc((n_out ? n_out : 1) * sizeof *keys);
    p->tensors = malloc((n_out ? n_out : 1) * sizeof *p->tensors);
    p->dims = malloc((n_dims ? n_dims : 1) * sizeof *p->dims);
    nb.s = p->names = malloc(name_bytes + 1);
    nb.cap = name_bytes + 1;
    if (!keys || !p->tensors || !p->dims || !p->names) goto fail;

    /* safetensors' order: dtype descending in its enum order, then name ascending (bytewise).
     * The names are written and their keys dealt out by dtype (in source order), then each
     * dtype's names are sorted: from a source header that is sorted already, or made of a few
     * sorted runs, they are too. The tensors are then written once, in that order. */
    size_t at[QFS_DT_COUNT], next = 0;
    for (size_t dt = QFS_DT_COUNT; dt-- > 0;) {
        at[dt] = next;
        next += per_dtype[dt];
    }
    for (size_t i = 0; i < n; i++) {
        const qfs_st_tensor *t = &src->tensors[i];
        if (p->decisions[i] != QFS_SELECT_QUANTIZE) {
            char *name = block_name(&nb, t->name, strlen(t->name), "");
            if (!name) goto fail;
            keys[at[t->dtype]++] = (order_key){name, (uint32_t)(i * QFS_LAYOUT_MAX_OUT)};
            continue;
        }
        const qfs_layout *l = &p->layouts[layout_of[i]];
        size_t m = qfs_select_module_len(t->name);
        for (unsigned k = 0; k < l->n_out; k++) {
            char *name = block_name(&nb, t->name, m, l->out[k].suffix);
            if (!name) goto fail;
            keys[at[l->out[k].dtype]++] = (order_key){name, (uint32_t)(i * QFS_LAYOUT_MAX_OUT + k)};
        }
    }
    next = 0;
    for (size_t dt = QFS_DT_COUNT; dt-- > 0;) {
        if (qfs_sort_runs(keys + next, per_dtype[dt], sizeof *keys, cmp_name)) goto fail;
        next += per_dtype[dt];
    }
    static const qfs_role role_of[] = {
        [QFS_OUT_WEIGHT] = QFS_ROLE_WEIGHT, [QFS_OUT_SCALE] = QFS_ROLE_SCALE,
        [QFS_OUT_ZERO_POINT] = QFS_ROLE_ZERO_POINT, [QFS_OUT_SHAPE] = QFS_ROLE_SHAPE,
    };
    uint64_t *dims = p->dims;
    for (size_t j = 0; j < n_out; j++) {
        size_t i = keys[j].pos / QFS_LAYOUT_MAX_OUT, k = keys[j].pos % QFS_LAYOUT_MAX_OUT;
        if (p->decisions[i] != QFS_SELECT_QUANTIZE) {
            const qfs_st_tensor *t = &src->tensors[i];
            if (t->ndim) memcpy(dims, t->shape, t->ndim * sizeof *dims);
            add_output(p, keys[j].name, t->dtype, t->ndim, dims, t->end - t->begin,
                       QFS_ROLE_PASSTHROUGH, i);
            dims += t->ndim;
            continue;
        }
        const qfs_out_tensor *o = &p->layouts[layout_of[i]].out[k];
        add_output(p, keys[j].name, o->dtype, o->ndim, o->shape, o->bytes, role_of[o->kind], i);
        p->tensors[j].job_offset = o->offset;
    }
    free(keys);
    keys = NULL;
    uint64_t off = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        p->tensors[i].offset = off;
        if (p->tensors[i].size > (uint64_t)INT64_MAX - off) {   /* offsets are JSON int64s */
            qfs_error_set(err, "%s: the quantized file would exceed 2^63 bytes", path);
            rc = -EFBIG;
            goto fail;
        }
        off += p->tensors[i].size;
    }

    /* Jobs in the order of their weights in the file, so "the next job" is the next tensor a
     * sequential reader needs. */
    rc = -ENOMEM;
    p->job_of = malloc((n ? n : 1) * sizeof *p->job_of);
    p->jobs = malloc((n_jobs ? n_jobs : 1) * sizeof *p->jobs);
    if (!p->job_of || !p->jobs) goto fail;
    for (size_t i = 0; i < n; i++) p->job_of[i] = SIZE_MAX;
    for (size_t i = 0; i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        if (t->role != QFS_ROLE_WEIGHT) continue;
        const layout_key *k = &ls.keys[layout_of[t->src]];
        p->jobs[p->n_jobs] = (qfs_plan_job){t->src, k->spec, k->rows, k->cols,
                                            &p->layouts[layout_of[t->src]]};
        p->job_of[t->src] = p->n_jobs++;
    }
    for (size_t i = 0; i < p->n_tensors; i++)
        if (p->tensors[i].role != QFS_ROLE_PASSTHROUGH)
            p->tensors[i].job = (uint32_t)p->job_of[p->tensors[i].src];

    free(layout_of);
    layout_of = NULL;
    free(ls.keys);
    ls.keys = NULL;
    rc = build_header(p, src, path, err);
    if (rc) goto fail;
    p->file_size = p->header_size + off;
    free(scratch);
    return 0;
fail:
    if (rc == -ENOMEM) qfs_error_set(err, "%s: out of memory while planning", path);
    free(scratch);
    free(keys);
    free(layout_of);
    free(ls.layouts);
    free(ls.keys);
    qfs_plan_free(p);
    return rc;
}

size_t qfs_plan_tensor_at(const qfs_plan *p, uint64_t off)
{
    size_t lo = 0, hi = p->n_tensors;   /* find the last tensor with offset <= off */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->tensors[mid].offset <= off) lo = mid;
        else hi = mid;
    }
    return lo;
}
