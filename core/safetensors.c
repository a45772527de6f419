#include "quarkfs/safetensors.h"

#include "quarkfs/io.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

uint64_t qfs_st_numel(const qfs_st_tensor *t)
{
    uint64_t n = 1;
    for (unsigned i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static uint64_t name_hash(const qfs_st_file *f, const char *name)
{
    return XXH3_64bits_withSeed(name, strlen(name), f->name_seed);
}

const qfs_st_tensor *qfs_st_find(const qfs_st_file *f, const char *name)
{
    if (f->name_slots) {
        uint64_t hash = name_hash(f, name), tag = hash >> 32 << 32;
        for (size_t h = (size_t)hash & f->name_mask;; h = (h + 1) & f->name_mask) {
            uint64_t slot = f->name_slots[h];
            if (slot == 0) return NULL;
            const qfs_st_tensor *t = &f->tensors[(uint32_t)slot - 1];
            if ((slot >> 32 << 32) == tag && strcmp(t->name, name) == 0) return t;
        }
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
    free(f->name_slots);
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

/* An open-addressing hash table of the names (at most half full), seeded at random so that a
 * header cannot be made of names that all collide: lookups stay O(1) for a million tensors,
 * where a binary search costs ~20 cache-missing strcmp each. A slot holds the hash's upper 32
 * bits and the tensor index + 1 (a header of 100 MB holds far fewer than 2^32 tensors), so a
 * probe of another name rarely reads a name. Names are unique (the parser rejects duplicate
 * keys). */
static int index_names(qfs_st_file *f)
{
    size_t cap = 16;
    if (f->n_tensors >= UINT32_MAX) return -ENOMEM;
    while (cap < 2 * f->n_tensors) cap *= 2;
    f->name_slots = calloc(cap, sizeof *f->name_slots);
    if (!f->name_slots) return -ENOMEM;
    f->name_mask = cap - 1;
    if (getrandom(&f->name_seed, sizeof f->name_seed, GRND_NONBLOCK) != sizeof f->name_seed)
        f->name_seed = (uint64_t)(uintptr_t)f->name_slots ^ (uint64_t)time(NULL);
    for (size_t i = 0; i < f->n_tensors; i++) {
        uint64_t hash = name_hash(f, f->tensors[i].name);
        size_t h = (size_t)hash & f->name_mask;
        while (f->name_slots[h]) h = (h + 1) & f->name_mask;
        f->name_slots[h] = (hash >> 32 << 32) | (i + 1);
    }
    return 0;
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

int qfs_st_parse(const uint8_t *prefix, size_t prefix_len, uint64_t file_size, const char *path,
                 qfs_st_file *out, qfs_error *err)
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
    json_error_t jerr;
    json_t *root = json_loadb((const char *)prefix + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
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
    out->header_len = n;
    out->data_start = 8 + n;
    out->file_size = file_size;
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
    rc = validate_layout(out, path, err);
    if (rc == 0) rc = index_names(out);
out:
    json_decref(root);
    if (rc == -ENOMEM) qfs_error_set(err, "%s: out of memory while reading the header", path);
    if (rc) qfs_st_file_free(out);
    return rc;
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
