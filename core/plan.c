#include "quarkfs/plan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qfs_plan_free(qfs_plan *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_tensors; i++) free(p->tensors[i].name);
    free(p->tensors);
    free(p->jobs);
    free(p->decisions);
    free(p->header);
    memset(p, 0, sizeof *p);
}

/* safetensors' order: dtype descending in its enum order, then name ascending (bytewise). */
static int cmp_file_order(const void *a, const void *b)
{
    const qfs_plan_tensor *x = a, *y = b;
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static char *name_with_suffix(const char *module, const char *suffix)
{
    size_t n = strlen(module) + strlen(suffix) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s", module, suffix);
    return s;
}

/* Adds one output tensor; takes ownership of name. */
static int add_output(qfs_plan *p, char *name, qfs_dtype dt, unsigned ndim, const uint64_t *shape,
                      uint64_t size, qfs_role role, size_t src)
{
    if (!name) return -ENOMEM;
    qfs_plan_tensor *t = &p->tensors[p->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, ndim * sizeof *shape);
    t->size = size;
    t->role = role;
    t->src = src;
    return 0;
}

static json_t *tensor_info(const qfs_plan_tensor *t)
{
    json_t *shape = json_array();
    for (unsigned d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
    json_t *offs = json_array();
    json_array_append_new(offs, json_integer((json_int_t)t->offset));
    json_array_append_new(offs, json_integer((json_int_t)(t->offset + t->size)));
    json_t *o = json_object();
    json_object_set_new(o, "dtype", json_string(qfs_dtype_name(t->dtype)));
    json_object_set_new(o, "shape", shape);
    json_object_set_new(o, "data_offsets", offs);
    return o;
}

/* Header bytes: 8-byte LE length, compact JSON with __metadata__ first ("format":"pt", then the
 * source's other keys in their order), tensors in file order, spaces up to a multiple of 8. */
static int build_header(qfs_plan *p, const qfs_st_file *src, const char *path, qfs_error *err)
{
    json_t *root = json_object(), *meta = json_object();
    if (!root || !meta) {
        json_decref(root);
        json_decref(meta);
        return -ENOMEM;
    }
    json_object_set_new(meta, "format", json_string("pt"));
    if (src->metadata) {
        const char *k;
        json_t *v;
        json_object_foreach(src->metadata, k, v)
            if (strcmp(k, "format") != 0) json_object_set(meta, k, v);
    }
    json_object_set_new(root, "__metadata__", meta);
    for (size_t i = 0; i < p->n_tensors; i++)
        json_object_set_new(root, p->tensors[i].name, tensor_info(&p->tensors[i]));
    char *js = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!js) {
        qfs_error_set(err, "%s: cannot serialize the output header", path);
        return -ENOMEM;
    }
    size_t len = strlen(js), padded = (len + 7) & ~(size_t)7;
    p->header = malloc(8 + padded);
    if (!p->header) {
        free(js);
        return -ENOMEM;
    }
    uint64_t n = padded;
    for (int i = 0; i < 8; i++) p->header[i] = (uint8_t)(n >> (8 * i));
    memcpy(p->header + 8, js, len);
    memset(p->header + 8 + len, ' ', padded - len);
    p->header_size = 8 + padded;
    free(js);
    return 0;
}

int qfs_plan_build(const qfs_st_file *src, const qfs_plan_options *opts, const char *path,
                   qfs_plan *out, qfs_error *err)
{
    const qfs_spec *spec = opts->spec;
    memset(out, 0, sizeof *out);
    qfs_plan *p = out;
    size_t n = src->n_tensors;
    int rc = -ENOMEM;
    size_t *job_of_src = NULL;
    char *module = NULL;        /* the module of the tensor at hand (names have no length limit) */
    p->decisions = calloc(n ? n : 1, sizeof *p->decisions);
    p->tensors = calloc(n * QFS_LAYOUT_MAX_OUT + 1, sizeof *p->tensors);
    if (!p->decisions || !p->tensors) goto fail;

    size_t n_jobs = 0;
    for (size_t i = 0; i < n; i++) {
        const qfs_st_tensor *t = &src->tensors[i];
        qfs_select_result d = qfs_select_tensor(t, spec, opts->rules);
        if (d == QFS_SELECT_QUANTIZE && opts->nonfinite && opts->nonfinite[i])
            d = QFS_SKIP_NONFINITE;
        qfs_layout l;
        if (d == QFS_SELECT_QUANTIZE &&
            qfs_layout_for(spec, opts->format, t->dtype, t->shape[0], t->shape[1], &l, NULL, 0))
            d = QFS_SKIP_SHAPE;
        if (d == QFS_SELECT_QUANTIZE) {
            /* Every new name must be free: the source would otherwise hold it twice. */
            free(module);
            if (!(module = qfs_select_module_dup(t->name))) goto fail;
            for (unsigned k = 0; k < l.n_out && d == QFS_SELECT_QUANTIZE; k++) {
                char *name = name_with_suffix(module, l.out[k].suffix);
                if (!name) goto fail;
                if (strcmp(name, t->name) != 0 && qfs_st_find(src, name)) d = QFS_SKIP_NAME_CLASH;
                free(name);
            }
        }
        p->decisions[i] = d;
        if (d == QFS_SELECT_QUANTIZE) n_jobs++;
    }

    static const qfs_role role_of[] = {
        [QFS_OUT_WEIGHT] = QFS_ROLE_WEIGHT, [QFS_OUT_SCALE] = QFS_ROLE_SCALE,
        [QFS_OUT_ZERO_POINT] = QFS_ROLE_ZERO_POINT, [QFS_OUT_SHAPE] = QFS_ROLE_SHAPE,
    };
    for (size_t i = 0; i < n; i++) {
        const qfs_st_tensor *t = &src->tensors[i];
        if (p->decisions[i] != QFS_SELECT_QUANTIZE) {
            rc = add_output(p, strdup(t->name), t->dtype, t->ndim, t->shape, t->end - t->begin,
                            QFS_ROLE_PASSTHROUGH, i);
            if (rc) goto fail;
            continue;
        }
        qfs_layout l;
        qfs_layout_for(spec, opts->format, t->dtype, t->shape[0], t->shape[1], &l, NULL, 0);
        free(module);
        if (!(module = qfs_select_module_dup(t->name))) goto fail;
        for (unsigned k = 0; k < l.n_out; k++) {
            const qfs_out_tensor *o = &l.out[k];
            rc = add_output(p, name_with_suffix(module, o->suffix), o->dtype, o->ndim, o->shape,
                            o->bytes, role_of[o->kind], i);
            if (rc) goto fail;
            p->tensors[p->n_tensors - 1].job_offset = o->offset;
        }
    }

    free(module);
    module = NULL;
    qsort(p->tensors, p->n_tensors, sizeof *p->tensors, cmp_file_order);
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
    job_of_src = malloc((n ? n : 1) * sizeof *job_of_src);
    p->jobs = calloc(n_jobs ? n_jobs : 1, sizeof *p->jobs);
    if (!job_of_src || !p->jobs) goto fail;
    for (size_t i = 0; i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        if (t->role != QFS_ROLE_WEIGHT) continue;
        const qfs_st_tensor *s = &src->tensors[t->src];
        qfs_plan_job *j = &p->jobs[p->n_jobs];
        j->src = t->src;
        j->rows = s->shape[0];
        j->cols = s->shape[1];
        qfs_layout_for(spec, opts->format, s->dtype, j->rows, j->cols, &j->layout, NULL, 0);
        job_of_src[t->src] = p->n_jobs++;
    }
    for (size_t i = 0; i < p->n_tensors; i++)
        if (p->tensors[i].role != QFS_ROLE_PASSTHROUGH) p->tensors[i].job = job_of_src[p->tensors[i].src];
    free(job_of_src);
    job_of_src = NULL;

    rc = build_header(p, src, path, err);
    if (rc) goto fail;
    p->file_size = p->header_size + off;
    return 0;
fail:
    if (rc == -ENOMEM) qfs_error_set(err, "%s: out of memory while planning", path);
    free(module);
    free(job_of_src);
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
