#include "quarkfs/safetensors.h"

#include "quarkfs/io.h"
#include "quarkfs/jsonstream.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t qfs_st_numel(const qfs_st_tensor *t)
{
    uint64_t n = 1;
    for (unsigned i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

const qfs_st_tensor *qfs_st_find(const qfs_st_file *f, const char *name)
{
    if (f->names.slots) {
        size_t i = qfs_name_table_find(&f->names, name);
        return i == SIZE_MAX ? NULL : &f->tensors[i];
    }
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

void qfs_st_file_free(qfs_st_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    qfs_name_table_free(&f->names);
    json_decref(f->metadata);
    memset(f, 0, sizeof *f);
}

/* A JSON value that serde would accept as a usize: a non-negative integer. */
static int get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_tensor(const char *name, const json_t *info, const char *path, qfs_st_tensor *t,
                        qfs_error *err)
{
    if (!json_is_object(info)) {
        qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' is not an object", path, name);
        return -EINVAL;
    }
    const json_t *dtype = json_object_get(info, "dtype");
    const json_t *shape = json_object_get(info, "shape");
    const json_t *offs = json_object_get(info, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offs)) {
        qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' needs string \"dtype\", "
                      "array \"shape\" and array \"data_offsets\"", path, name);
        return -EINVAL;
    }
    if (qfs_dtype_from_name(json_string_value(dtype), &t->dtype) != 0) {
        qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' has unknown dtype '%s'",
                      path, name, json_string_value(dtype));
        return -EINVAL;
    }
    size_t nd = json_array_size(shape);
    if (nd > QFS_ST_MAX_DIMS) {
        qfs_error_set(err, "%s: tensor '%s' has %zu dimensions (at most %d supported)", path,
                      name, nd, QFS_ST_MAX_DIMS);
        return -EINVAL;
    }
    t->ndim = (unsigned)nd;
    for (size_t i = 0; i < nd; i++) {
        if (get_u64(json_array_get(shape, i), &t->shape[i]) != 0) {
            qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' shape[%zu] is not a "
                          "non-negative integer", path, name, i);
            return -EINVAL;
        }
    }
    if (json_array_size(offs) != 2 || get_u64(json_array_get(offs, 0), &t->begin) != 0 ||
        get_u64(json_array_get(offs, 1), &t->end) != 0) {
        qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' data_offsets must be two "
                      "non-negative integers", path, name);
        return -EINVAL;
    }
    t->name = strdup(name);
    if (!t->name) return -ENOMEM;
    return 0;
}

static int cmp_offsets(const void *a, const void *b)
{
    const qfs_st_tensor *x = *(qfs_st_tensor *const *)a, *y = *(qfs_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The names' table: lookups stay O(1) for a million tensors. -EEXIST when a name is there
 * twice (the tree parser rejects duplicate keys itself; the streaming parser leaves such a
 * header to it). */
static int index_names(qfs_st_file *f)
{
    if (f->n_tensors == 0) return 0;
    return qfs_name_table_build(&f->names, (const char *const *)&f->tensors[0].name,
                                sizeof f->tensors[0], f->n_tensors);
}

/* The checks of safetensors' Metadata::validate: sorted by offsets, the tensors tile the data
 * section from 0 with no hole or overlap, and each size is shape x dtype. */
static int validate_layout(qfs_st_file *f, const char *path, qfs_error *err)
{
    qfs_st_tensor **order = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *order);
    if (!order) return -ENOMEM;
    bool sorted = true;
    for (size_t i = 0; i < f->n_tensors; i++) {
        order[i] = &f->tensors[i];
        if (i && cmp_offsets(&order[i - 1], &order[i]) > 0) sorted = false;
    }
    if (!sorted) qsort(order, f->n_tensors, sizeof *order, cmp_offsets);   /* writers keep it */
    uint64_t pos = 0;
    int rc = 0;
    for (size_t i = 0; i < f->n_tensors && rc == 0; i++) {
        const qfs_st_tensor *t = order[i];
        if (t->begin != pos || t->end < t->begin) {
            qfs_error_set(err, "%s: invalid safetensors header: invalid offset for tensor '%s' "
                          "([%llu, %llu] where %llu was expected: %s)", path, t->name,
                          (unsigned long long)t->begin, (unsigned long long)t->end,
                          (unsigned long long)pos,
                          t->end < t->begin ? "end before begin"
                          : t->begin > pos ? "hole before it" : "overlaps the previous tensor");
            rc = -EINVAL;
            break;
        }
        uint64_t n = 1;
        for (unsigned d = 0; d < t->ndim; d++) {
            if (t->shape[d] != 0 && n > UINT64_MAX / t->shape[d]) {
                qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' shape product "
                              "overflows", path, t->name);
                rc = -EINVAL;
                break;
            }
            n *= t->shape[d];
        }
        if (rc) break;
        unsigned bits = qfs_dtype_bits(t->dtype);
        if (n > UINT64_MAX / bits) {
            qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' size overflows", path,
                          t->name);
            rc = -EINVAL;
            break;
        }
        if ((n * bits) % 8 != 0) {
            qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' is not a whole number "
                          "of bytes (%llu elements of %u bits)", path, t->name,
                          (unsigned long long)n, bits);
            rc = -EINVAL;
            break;
        }
        if (t->end - t->begin != n * bits / 8) {
            qfs_error_set(err, "%s: invalid safetensors header: tensor '%s' has %llu bytes but its "
                          "shape and dtype (%s) need %llu", path, t->name,
                          (unsigned long long)(t->end - t->begin), qfs_dtype_name(t->dtype),
                          (unsigned long long)(n * bits / 8));
            rc = -EINVAL;
            break;
        }
        pos = t->end;
    }
    free(order);
    if (rc == 0 && pos + f->data_start != f->file_size) {
        qfs_error_set(err, "%s: invalid safetensors header: file not fully covered: header and "
                      "tensors need %llu bytes, the file has %llu", path,
                      (unsigned long long)(pos + f->data_start), (unsigned long long)f->file_size);
        rc = -EINVAL;
    }
    return rc;
}

/* The tree parser: jansson reads the whole header, then each tensor is taken from the tree.
 * Fills out->tensors and out->metadata; -EINVAL with err set, or -ENOMEM. */
static int parse_tree(const char *json, size_t n, const char *path, qfs_st_file *out,
                      qfs_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        qfs_error_set(err, "%s: invalid safetensors header: %s at byte %d: %s", path,
                      json_error_code(&jerr) == json_error_invalid_utf8 ? "invalid UTF-8"
                                                                        : "invalid JSON",
                      jerr.position, jerr.text);
        return -EINVAL;
    }
    int rc = 0;
    if (!json_is_object(root)) {
        qfs_error_set(err, "%s: invalid safetensors header: the header is not a JSON object", path);
        rc = -EINVAL;
        goto out;
    }
    size_t cap = json_object_size(root);
    out->tensors = calloc(cap ? cap : 1, sizeof *out->tensors);
    if (!out->tensors) { rc = -ENOMEM; goto out; }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (json_is_null(val)) continue;
            if (!json_is_object(val)) {
                qfs_error_set(err, "%s: invalid safetensors header: __metadata__ is not an object",
                              path);
                rc = -EINVAL;
                goto out;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    qfs_error_set(err, "%s: invalid safetensors header: __metadata__ value of '%s' "
                                  "is not a string", path, mk);
                    rc = -EINVAL;
                    goto out;
                }
            }
            out->metadata = json_incref(val);
            continue;
        }
        rc = parse_tensor(key, val, path, &out->tensors[out->n_tensors], err);
        if (rc) goto out;
        out->n_tensors++;
    }
out:
    json_decref(root);
    return rc;
}

/* ---- The streaming parser: yajl's events drive a small state machine, no tree is built. ---- */

/* Where the parser is: what the next event must be. */
typedef enum stream_state {
    S_ROOT,          /* the header's opening brace */
    S_ROOT_KEY,      /* a tensor name, "__metadata__", or the closing brace */
    S_TENSOR,        /* a tensor's object opens */
    S_TENSOR_KEY,    /* "dtype", "shape", "data_offsets", or the tensor's closing brace */
    S_DTYPE,
    S_SHAPE,         /* the shape's array opens */
    S_SHAPE_DIM,     /* a dimension or the array's end */
    S_OFFSETS,
    S_OFFSET,
    S_META,          /* __metadata__'s object opens, or null */
    S_META_KEY,
    S_META_VALUE,
    S_DONE,
} stream_state;

enum { SEEN_DTYPE = 1, SEEN_SHAPE = 2, SEEN_OFFSETS = 4, SEEN_ALL = 7 };

typedef struct stream_ctx {
    qfs_st_file *f;
    size_t cap;             /* of f->tensors */
    stream_state state;
    unsigned seen;          /* SEEN_* of the current tensor */
    unsigned n_offsets;
    bool meta_seen;
    char *meta_key;         /* the metadata key whose value comes next */
    yajl_handle y;
    size_t end;             /* bytes up to the header's closing brace */
    int rc;                 /* why a callback stopped: -EAGAIN (not the common case) or -ENOMEM */
} stream_ctx;

/* Stops the parse: the header is not the common case (the tree parser decides) or memory ran
 * out. yajl then returns yajl_status_client_canceled. */
static int stream_stop(stream_ctx *c, int rc)
{
    c->rc = rc;
    return 0;
}

static qfs_st_tensor *stream_tensor(stream_ctx *c) { return &c->f->tensors[c->f->n_tensors - 1]; }

/* A plain non-negative integer of at most 2^63 - 1 (jansson's range), as written: digits only. */
static bool stream_u63(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 19 || (s[0] == '0' && len > 1)) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX) return false;
    *out = v;
    return true;
}

static int on_number(void *ctx, const char *s, size_t len)
{
    stream_ctx *c = ctx;
    uint64_t v;
    if ((c->state != S_SHAPE_DIM && c->state != S_OFFSET) || !stream_u63(s, len, &v))
        return stream_stop(c, -EAGAIN);
    qfs_st_tensor *t = stream_tensor(c);   /* a number is read inside a tensor only */
    if (c->state == S_SHAPE_DIM && t->ndim < QFS_ST_MAX_DIMS) {
        t->shape[t->ndim++] = v;
        return 1;
    }
    if (c->state == S_OFFSET && c->n_offsets < 2) {
        if (c->n_offsets++ == 0) t->begin = v;
        else t->end = v;
        return 1;
    }
    return stream_stop(c, -EAGAIN);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    stream_ctx *c = ctx;
    if (c->state == S_DTYPE) {
        char name[16];
        if (len >= sizeof name) return stream_stop(c, -EAGAIN);
        memcpy(name, s, len);
        name[len] = '\0';
        if (qfs_dtype_from_name(name, &stream_tensor(c)->dtype) != 0)
            return stream_stop(c, -EAGAIN);
        c->state = S_TENSOR_KEY;
        return 1;
    }
    if (c->state == S_META_VALUE) {
        json_t *v = json_stringn((const char *)s, len);
        if (!v || json_object_set_new(c->f->metadata, c->meta_key, v) != 0)
            return stream_stop(c, -ENOMEM);
        free(c->meta_key);
        c->meta_key = NULL;
        c->state = S_META_KEY;
        return 1;
    }
    return stream_stop(c, -EAGAIN);
}

static bool key_is(const unsigned char *s, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(s, word, len) == 0;
}

static int on_map_key(void *ctx, const unsigned char *s, size_t len)
{
    stream_ctx *c = ctx;
    qfs_st_file *f = c->f;
    switch (c->state) {
    case S_ROOT_KEY:
        if (key_is(s, len, "__metadata__")) {
            if (c->meta_seen) return stream_stop(c, -EAGAIN);
            c->meta_seen = true;
            c->state = S_META;
            return 1;
        }
        if (f->n_tensors == c->cap) {
            size_t cap = c->cap ? 2 * c->cap : 64;
            qfs_st_tensor *t = realloc(f->tensors, cap * sizeof *t);
            if (!t) return stream_stop(c, -ENOMEM);
            f->tensors = t;
            c->cap = cap;
        }
        qfs_st_tensor *t = &f->tensors[f->n_tensors];
        memset(t, 0, sizeof *t);
        if (!(t->name = strndup((const char *)s, len))) return stream_stop(c, -ENOMEM);
        f->n_tensors++;   /* counted now, so that a stop frees its name */
        c->state = S_TENSOR;
        return 1;
    case S_TENSOR_KEY: {
        unsigned bit = key_is(s, len, "dtype")          ? SEEN_DTYPE
                       : key_is(s, len, "shape")        ? SEEN_SHAPE
                       : key_is(s, len, "data_offsets") ? SEEN_OFFSETS
                                                        : 0;
        if (!bit || (c->seen & bit)) return stream_stop(c, -EAGAIN);
        c->seen |= bit;
        c->state = bit == SEEN_DTYPE ? S_DTYPE : bit == SEEN_SHAPE ? S_SHAPE : S_OFFSETS;
        return 1;
    }
    case S_META_KEY:
        /* A key met twice is a duplicate: the tree parser rejects it. */
        if (!(c->meta_key = strndup((const char *)s, len))) return stream_stop(c, -ENOMEM);
        if (json_object_get(f->metadata, c->meta_key)) return stream_stop(c, -EAGAIN);
        c->state = S_META_VALUE;
        return 1;
    default:
        return stream_stop(c, -EAGAIN);
    }
}

static int on_start_map(void *ctx)
{
    stream_ctx *c = ctx;
    switch (c->state) {
    case S_ROOT: c->state = S_ROOT_KEY; return 1;
    case S_TENSOR: c->seen = 0; c->state = S_TENSOR_KEY; return 1;
    case S_META:
        if (!(c->f->metadata = json_object())) return stream_stop(c, -ENOMEM);
        c->state = S_META_KEY;
        return 1;
    default: return stream_stop(c, -EAGAIN);
    }
}

static int on_end_map(void *ctx)
{
    stream_ctx *c = ctx;
    switch (c->state) {
    case S_ROOT_KEY:
        c->state = S_DONE;
        c->end = yajl_get_bytes_consumed(c->y);
        return 1;
    case S_TENSOR_KEY:
        if (c->seen != SEEN_ALL) return stream_stop(c, -EAGAIN);
        c->state = S_ROOT_KEY;
        return 1;
    case S_META_KEY: c->state = S_ROOT_KEY; return 1;
    default: return stream_stop(c, -EAGAIN);
    }
}

static int on_start_array(void *ctx)
{
    stream_ctx *c = ctx;
    if (c->state == S_SHAPE) c->state = S_SHAPE_DIM;
    else if (c->state == S_OFFSETS) c->state = S_OFFSET, c->n_offsets = 0;
    else return stream_stop(c, -EAGAIN);
    return 1;
}

static int on_end_array(void *ctx)
{
    stream_ctx *c = ctx;
    if (c->state == S_SHAPE_DIM || (c->state == S_OFFSET && c->n_offsets == 2)) {
        c->state = S_TENSOR_KEY;
        return 1;
    }
    return stream_stop(c, -EAGAIN);
}

static int on_null(void *ctx)
{
    stream_ctx *c = ctx;
    if (c->state != S_META) return stream_stop(c, -EAGAIN);
    c->state = S_ROOT_KEY;   /* "__metadata__": null, as if absent */
    return 1;
}

static int on_boolean(void *ctx, int b) { (void)b; return stream_stop(ctx, -EAGAIN); }

/* The streaming parser: 0 with out->tensors and out->metadata filled, -EAGAIN when the header
 * is not the common case, -ENOMEM; on failure the caller frees what it left in out. */
static int parse_stream(const uint8_t *json, size_t n, qfs_st_file *out)
{
    static const yajl_callbacks callbacks = {
        .yajl_null = on_null, .yajl_boolean = on_boolean, .yajl_number = on_number,
        .yajl_string = on_string, .yajl_start_map = on_start_map, .yajl_map_key = on_map_key,
        .yajl_end_map = on_end_map, .yajl_start_array = on_start_array,
        .yajl_end_array = on_end_array,
    };
    stream_ctx c = {.f = out, .state = S_ROOT, .rc = -EAGAIN};
    int rc = qfs_json_stream(json, n, &callbacks, &c, &c.y, &c.end);
    free(c.meta_key);
    if (rc == 1) rc = c.rc;
    else if (rc == 0 && c.state != S_DONE) rc = -EAGAIN;
    return rc;
}

int qfs_st_parse_with(qfs_json_parser parser, const uint8_t *prefix, size_t prefix_len,
                      uint64_t file_size, const char *path, qfs_st_file *out, qfs_error *err)
{
    memset(out, 0, sizeof *out);
    if (file_size < 8 || prefix_len < 8) {
        qfs_error_set(err, "%s: not a safetensors file: header too small (%llu bytes)", path,
                      (unsigned long long)file_size);
        return -EINVAL;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | prefix[i];
    if (n > QFS_ST_MAX_HEADER) {
        qfs_error_set(err, "%s: invalid safetensors header: header too large (%llu bytes, the "
                      "limit is 100000000)", path, (unsigned long long)n);
        return -EINVAL;
    }
    if (8 + n > file_size || 8 + n > prefix_len) {
        qfs_error_set(err, "%s: invalid safetensors header: invalid header length %llu (the file "
                      "has %llu bytes)", path, (unsigned long long)n, (unsigned long long)file_size);
        return -EINVAL;
    }
    int rc = parser == QFS_JSON_TREE ? -EAGAIN : parse_stream(prefix + 8, (size_t)n, out);
    if (rc == 0) rc = index_names(out);
    if (rc == -EEXIST) rc = -EAGAIN;   /* a name twice: the tree parser says so */
    if (rc == -EAGAIN) {
        qfs_st_file_free(out);
        if (parser == QFS_JSON_STREAM) return rc;
        rc = parse_tree((const char *)prefix + 8, (size_t)n, path, out, err);
        if (rc == 0) rc = index_names(out);   /* unique here: the tree parser rejects a twin */
    }
    if (rc == 0) {
        out->header_len = n;
        out->data_start = 8 + n;
        out->file_size = file_size;
        rc = validate_layout(out, path, err);
    }
    if (rc == -ENOMEM) qfs_error_set(err, "%s: out of memory while reading the header", path);
    if (rc) qfs_st_file_free(out);
    return rc;
}

int qfs_st_parse(const uint8_t *prefix, size_t prefix_len, uint64_t file_size, const char *path,
                 qfs_st_file *out, qfs_error *err)
{
    return qfs_st_parse_with(QFS_JSON_AUTO, prefix, prefix_len, file_size, path, out, err);
}

int qfs_st_read_fd(int fd, const char *path, qfs_st_file *out, qfs_error *err)
{
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        qfs_error_set(err, "%s: %s", path, strerror(e));
        return -e;
    }
    if (!S_ISREG(sb.st_mode)) {
        qfs_error_set(err, "%s: not a regular file", path);
        return -EINVAL;
    }
    uint64_t size = (uint64_t)sb.st_size;
    uint8_t head[8];
    if (size < 8) return qfs_st_parse(head, 0, size, path, out, err);
    int rc = qfs_pread_full(fd, head, 8, 0);
    if (rc) {
        qfs_error_set(err, "%s: cannot read the header: %s", path, strerror(-rc));
        return rc;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | head[i];
    if (n > QFS_ST_MAX_HEADER || 8 + n > size) return qfs_st_parse(head, 8, size, path, out, err);
    uint8_t *buf = malloc(8 + n);
    if (!buf) {
        qfs_error_set(err, "%s: out of memory for its %llu-byte header", path,
                      (unsigned long long)n);
        return -ENOMEM;
    }
    memcpy(buf, head, 8);
    rc = qfs_pread_full(fd, buf + 8, n, 8);
    if (rc) {
        qfs_error_set(err, "%s: cannot read the header: %s", path, strerror(-rc));
    } else {
        rc = qfs_st_parse(buf, 8 + n, size, path, out, err);
    }
    free(buf);
    return rc;
}
