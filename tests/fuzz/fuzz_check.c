/* quarkfs fuzzing — invariants of a parsed safetensors header and of a plan (see fuzz_check.h). */
#include "fuzz_check.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "quarkfs/layout.h"
#include "quarkfs/select.h"

/* Bytes of a tensor of this shape and dtype, or false if it overflows 64 bits or is not a whole
 * number of bytes. */
static bool tensor_bytes(qfs_dtype dt, unsigned ndim, const uint64_t *shape, uint64_t *out)
{
    uint64_t n = 1;
    for (unsigned d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(n, shape[d], &n)) return false;
    uint64_t bits;
    if (__builtin_mul_overflow(n, (uint64_t)qfs_dtype_bits(dt), &bits)) return false;
    if (bits % 8) return false;
    *out = bits / 8;
    return true;
}

static int cmp_begin(const void *a, const void *b)
{
    const qfs_st_tensor *x = *(const qfs_st_tensor *const *)a;
    const qfs_st_tensor *y = *(const qfs_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

void fuzz_check_st_file(const qfs_st_file *f, uint64_t file_size)
{
    FUZZ_CHECK(f->file_size == file_size, "file_size %" PRIu64 " != %" PRIu64, f->file_size,
               file_size);
    FUZZ_CHECK(f->header_len <= QFS_ST_MAX_HEADER, "header_len %" PRIu64, f->header_len);
    FUZZ_CHECK(f->data_start == 8 + f->header_len, "data_start %" PRIu64 " header_len %" PRIu64,
               f->data_start, f->header_len);
    FUZZ_CHECK(f->data_start <= file_size, "data_start %" PRIu64 " > file_size %" PRIu64,
               f->data_start, file_size);
    FUZZ_CHECK(f->n_tensors == 0 || f->tensors, "tensors NULL");
    if (f->metadata) {
        FUZZ_CHECK(json_is_object(f->metadata), "metadata is not an object");
        const char *k;
        json_t *v;
        json_object_foreach(f->metadata, k, v)
            FUZZ_CHECK(json_is_string(v), "metadata value of '%s' is not a string", k);
    }
    const qfs_st_tensor **order = malloc((f->n_tensors + 1) * sizeof *order);
    FUZZ_CHECK(order, "out of memory");
    for (size_t i = 0; i < f->n_tensors; i++) {
        const qfs_st_tensor *t = &f->tensors[i];
        FUZZ_CHECK(t->name, "tensor %zu has no name", i);
        FUZZ_CHECK(strcmp(t->name, "__metadata__") != 0, "__metadata__ parsed as a tensor");
        FUZZ_CHECK(qfs_st_find(f, t->name) == t, "name '%s' not unique", t->name);
        FUZZ_CHECK((unsigned)t->dtype < QFS_DT_COUNT, "dtype %d", (int)t->dtype);
        FUZZ_CHECK(t->ndim <= QFS_ST_MAX_DIMS, "ndim %u", t->ndim);
        uint64_t bytes;
        FUZZ_CHECK(tensor_bytes(t->dtype, t->ndim, t->shape, &bytes),
                   "tensor '%s': size overflows or is not whole bytes", t->name);
        FUZZ_CHECK(t->end >= t->begin && t->end - t->begin == bytes,
                   "tensor '%s': [%" PRIu64 ", %" PRIu64 ") for %" PRIu64 " bytes", t->name,
                   t->begin, t->end, bytes);
        uint64_t numel = 1;
        for (unsigned d = 0; d < t->ndim; d++) numel *= t->shape[d];
        FUZZ_CHECK(qfs_st_numel(t) == numel, "qfs_st_numel of '%s'", t->name);
        order[i] = t;
    }
    qsort(order, f->n_tensors, sizeof *order, cmp_begin);
    uint64_t pos = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        FUZZ_CHECK(order[i]->begin == pos, "tensor '%s' begins at %" PRIu64 ", expected %" PRIu64,
                   order[i]->name, order[i]->begin, pos);
        pos = order[i]->end;
    }
    free(order);
    FUZZ_CHECK(f->data_start + pos == file_size,
               "tensors end at %" PRIu64 " + %" PRIu64 ", file has %" PRIu64, f->data_start, pos,
               file_size);
}

static const qfs_role role_of_kind[] = {
    [QFS_OUT_WEIGHT] = QFS_ROLE_WEIGHT, [QFS_OUT_SCALE] = QFS_ROLE_SCALE,
    [QFS_OUT_ZERO_POINT] = QFS_ROLE_ZERO_POINT, [QFS_OUT_SHAPE] = QFS_ROLE_SHAPE,
};

/* A layout on its own: per-part offsets contiguous, bytes = shape x dtype. */
static void check_layout(const qfs_layout *l, const char *what)
{
    FUZZ_CHECK(l->n_out >= 1 && l->n_out <= QFS_LAYOUT_MAX_OUT, "%s: n_out %u", what, l->n_out);
    uint64_t part[2] = {0, 0};
    unsigned n_weight = 0;
    for (unsigned k = 0; k < l->n_out; k++) {
        const qfs_out_tensor *o = &l->out[k];
        FUZZ_CHECK(o->ndim <= 2, "%s: out %u ndim %u", what, k, o->ndim);
        FUZZ_CHECK(o->suffix && o->suffix[0] == '.', "%s: out %u suffix", what, k);
        uint64_t bytes;
        FUZZ_CHECK(tensor_bytes(o->dtype, o->ndim, o->shape, &bytes) && bytes == o->bytes,
                   "%s: out %s has %" PRIu64 " bytes for its shape and dtype", what, o->suffix,
                   o->bytes);
        FUZZ_CHECK(o->part == (o->kind == QFS_OUT_WEIGHT ? QFS_PART_WEIGHT : QFS_PART_SCALES),
                   "%s: out %s in the wrong part", what, o->suffix);
        FUZZ_CHECK(o->offset == part[o->part], "%s: out %s at %" PRIu64 " in its part, expected %"
                   PRIu64, what, o->suffix, o->offset, part[o->part]);
        FUZZ_CHECK(!__builtin_add_overflow(part[o->part], o->bytes, &part[o->part]),
                   "%s: part size overflows", what);
        n_weight += o->kind == QFS_OUT_WEIGHT;
        for (unsigned j = 0; j < k; j++)
            FUZZ_CHECK(strcmp(l->out[j].suffix, o->suffix) != 0, "%s: suffix %s twice", what,
                       o->suffix);
    }
    FUZZ_CHECK(n_weight == 1, "%s: %u weight outputs", what, n_weight);
    FUZZ_CHECK(part[0] == l->weight_bytes && part[1] == l->scales_bytes,
               "%s: parts %" PRIu64 "/%" PRIu64 " but the layout says %" PRIu64 "/%" PRIu64, what,
               part[0], part[1], l->weight_bytes, l->scales_bytes);
}

static bool layouts_equal(const qfs_layout *a, const qfs_layout *b)
{
    if (a->n_out != b->n_out || a->weight_bytes != b->weight_bytes ||
        a->scales_bytes != b->scales_bytes)
        return false;
    for (unsigned k = 0; k < a->n_out; k++) {
        const qfs_out_tensor *x = &a->out[k], *y = &b->out[k];
        if (strcmp(x->suffix, y->suffix) || x->kind != y->kind || x->dtype != y->dtype ||
            x->ndim != y->ndim || x->shape[0] != y->shape[0] || x->shape[1] != y->shape[1] ||
            x->bytes != y->bytes || x->part != y->part || x->offset != y->offset)
            return false;
    }
    return true;
}

void fuzz_check_plan(const qfs_st_file *src, const qfs_plan_options *opts, const qfs_plan *p)
{
    const qfs_spec *spec = opts->spec;
    const size_t ns = src->n_tensors;
    qfs_error lerr;
    const char *sn = spec->name, *fn = qfs_format_name(opts->format);

    /* Decisions: what qfs_select_tensor and qfs_layout_for say, plus the planner's own rules. */
    FUZZ_CHECK(p->decisions || ns == 0, "%s/%s: no decisions", sn, fn);
    size_t n_quant = 0;
    for (size_t i = 0; i < ns; i++) {
        const qfs_st_tensor *t = &src->tensors[i];
        qfs_select_result d = p->decisions[i], sel = qfs_select_tensor(t, spec, opts->rules);
        qfs_layout l;
        lerr.msg[0] = '\0';
        int lrc = sel == QFS_SELECT_QUANTIZE
                  ? qfs_layout_for(spec, opts->format, t->dtype, t->shape[0], t->shape[1], &l,
                                   &lerr)
                  : 0;
        switch (d) {
        case QFS_SELECT_QUANTIZE:
            FUZZ_CHECK(sel == QFS_SELECT_QUANTIZE && lrc == 0, "%s/%s: '%s' quantized but select "
                       "says %d, layout %d", sn, fn, t->name, (int)sel, lrc);
            FUZZ_CHECK(!opts->nonfinite || !opts->nonfinite[i], "%s/%s: non-finite '%s' "
                       "quantized", sn, fn, t->name);
            FUZZ_CHECK(t->ndim == 2 && t->shape[0] && t->shape[1] &&
                       qfs_dtype_is_quantizable(t->dtype), "%s/%s: '%s' quantized", sn, fn,
                       t->name);
            check_layout(&l, t->name);
            n_quant++;
            break;
        case QFS_SKIP_NONFINITE:
            FUZZ_CHECK(sel == QFS_SELECT_QUANTIZE && opts->nonfinite && opts->nonfinite[i],
                       "%s/%s: '%s' skipped as non-finite", sn, fn, t->name);
            break;
        case QFS_SKIP_SHAPE:
            FUZZ_CHECK(sel == QFS_SELECT_QUANTIZE && lrc == -EDOM && lerr.msg[0],
                       "%s/%s: '%s' skipped for its shape but layout says %d", sn, fn, t->name,
                       lrc);
            break;
        case QFS_SKIP_NAME_CLASH:
            FUZZ_CHECK(sel == QFS_SELECT_QUANTIZE && lrc == 0, "%s/%s: '%s' name clash", sn, fn,
                       t->name);
            break;
        default:
            FUZZ_CHECK(d == sel, "%s/%s: '%s' decision %d, select says %d", sn, fn, t->name,
                       (int)d, (int)sel);
        }
    }
    FUZZ_CHECK(p->n_jobs == n_quant, "%s/%s: %zu jobs for %zu quantized tensors", sn, fn,
               p->n_jobs, n_quant);

    /* Header bytes. */
    FUZZ_CHECK(p->header && p->header_size >= 16 && p->header_size % 8 == 0,
               "%s/%s: header_size %" PRIu64, sn, fn, p->header_size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p->header[i];
    FUZZ_CHECK(hlen + 8 == p->header_size, "%s/%s: length prefix %" PRIu64 ", header_size %"
               PRIu64, sn, fn, hlen, p->header_size);

    /* Tensors: file order, contiguous offsets from 0, no overflow, sizes from shape x dtype. */
    uint64_t off = 0, pass_bytes = 0;
    size_t n_pass = 0, n_quant_out = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        FUZZ_CHECK(t->name, "%s/%s: tensor %zu has no name", sn, fn, i);
        if (i) {
            const qfs_plan_tensor *u = &p->tensors[i - 1];
            FUZZ_CHECK(u->dtype > t->dtype || (u->dtype == t->dtype && strcmp(u->name, t->name) < 0),
                       "%s/%s: '%s' then '%s' is not safetensors file order (or a name twice)",
                       sn, fn, u->name, t->name);
        }
        FUZZ_CHECK(t->offset == off, "%s/%s: '%s' at %" PRIu64 ", expected %" PRIu64, sn, fn,
                   t->name, t->offset, off);
        FUZZ_CHECK(!__builtin_add_overflow(off, t->size, &off) && off <= (uint64_t)INT64_MAX,
                   "%s/%s: data offsets overflow at '%s' (offset %" PRIu64 " + size %" PRIu64
                   " > 2^63-1: not representable in the header's JSON integers)", sn, fn,
                   t->name, t->offset, t->size);
        uint64_t bytes;
        FUZZ_CHECK(t->ndim <= QFS_ST_MAX_DIMS && tensor_bytes(t->dtype, t->ndim, t->shape, &bytes) &&
                   bytes == t->size, "%s/%s: '%s' size %" PRIu64 " does not match its shape",
                   sn, fn, t->name, t->size);
        FUZZ_CHECK(t->src < ns, "%s/%s: '%s' src %zu", sn, fn, t->name, (size_t)t->src);
        const qfs_st_tensor *s = &src->tensors[t->src];
        if (t->role == QFS_ROLE_PASSTHROUGH) {
            FUZZ_CHECK(p->decisions[t->src] != QFS_SELECT_QUANTIZE, "%s/%s: '%s' passed through "
                       "but quantized", sn, fn, t->name);
            FUZZ_CHECK(strcmp(t->name, s->name) == 0 && t->dtype == s->dtype &&
                       t->ndim == s->ndim && memcmp(t->shape, s->shape, s->ndim * sizeof *s->shape) == 0 &&
                       t->size == s->end - s->begin, "%s/%s: passthrough '%s' differs from its "
                       "source '%s'", sn, fn, t->name, s->name);
            pass_bytes += t->size;
            n_pass++;
        } else {
            FUZZ_CHECK(p->decisions[t->src] == QFS_SELECT_QUANTIZE, "%s/%s: '%s' has role %d "
                       "but its source is not quantized", sn, fn, t->name, (int)t->role);
            FUZZ_CHECK(t->job < p->n_jobs && p->jobs[t->job].src == t->src, "%s/%s: '%s' job %zu",
                       sn, fn, t->name, (size_t)t->job);
            n_quant_out++;
        }
        if (t->size) {
            FUZZ_CHECK(qfs_plan_tensor_at(p, t->offset) == i, "%s/%s: tensor_at(%" PRIu64
                       ") = %zu, expected %zu ('%s')", sn, fn, t->offset,
                       qfs_plan_tensor_at(p, t->offset), i, t->name);
            FUZZ_CHECK(qfs_plan_tensor_at(p, t->offset + t->size - 1) == i,
                       "%s/%s: tensor_at(%" PRIu64 ") = %zu, expected %zu ('%s')", sn, fn,
                       t->offset + t->size - 1, qfs_plan_tensor_at(p, t->offset + t->size - 1), i,
                       t->name);
        }
    }
    FUZZ_CHECK(n_pass == ns - n_quant, "%s/%s: %zu passthrough tensors for %zu unquantized", sn,
               fn, n_pass, ns - n_quant);
    uint64_t fsize;
    FUZZ_CHECK(!__builtin_add_overflow(p->header_size, off, &fsize) && fsize == p->file_size,
               "%s/%s: file_size %" PRIu64 " but header %" PRIu64 " + data %" PRIu64, sn, fn,
               p->file_size, p->header_size, off);

    /* Jobs: in the order of their weights, each with its layout's outputs and nothing else. */
    uint64_t job_bytes = 0;
    size_t n_layout_out = 0;
    unsigned *seen = calloc(p->n_jobs + 1, sizeof *seen);
    FUZZ_CHECK(seen, "out of memory");
    for (size_t j = 0; j < p->n_jobs; j++) {
        const qfs_plan_job *job = &p->jobs[j];
        FUZZ_CHECK(job->src < ns && p->decisions[job->src] == QFS_SELECT_QUANTIZE,
                   "%s/%s: job %zu src %zu", sn, fn, j, job->src);
        const qfs_st_tensor *s = &src->tensors[job->src];
        for (size_t k = 0; k < j; k++)
            FUZZ_CHECK(p->jobs[k].src != job->src, "%s/%s: '%s' has two jobs", sn, fn, s->name);
        FUZZ_CHECK(job->rows == s->shape[0] && job->cols == s->shape[1], "%s/%s: job of '%s' is "
                   "[%" PRIu64 ", %" PRIu64 "]", sn, fn, s->name, job->rows, job->cols);
        qfs_layout l;
        FUZZ_CHECK(qfs_layout_for(spec, opts->format, s->dtype, job->rows, job->cols, &l, NULL)
                   == 0 && layouts_equal(&l, job->layout), "%s/%s: layout of job '%s' differs "
                   "from qfs_layout_for", sn, fn, s->name);
        check_layout(job->layout, s->name);
        n_layout_out += job->layout->n_out;
        FUZZ_CHECK(!__builtin_add_overflow(job_bytes, job->layout->weight_bytes, &job_bytes) &&
                   !__builtin_add_overflow(job_bytes, job->layout->scales_bytes, &job_bytes),
                   "%s/%s: layout sizes overflow", sn, fn);
    }
    FUZZ_CHECK(n_quant_out == n_layout_out, "%s/%s: %zu quantized outputs in the plan, the "
               "layouts have %zu", sn, fn, n_quant_out, n_layout_out);
    size_t last_job = 0;
    bool any_weight = false;
    for (size_t i = 0; i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        if (t->role == QFS_ROLE_PASSTHROUGH) continue;
        const qfs_plan_job *job = &p->jobs[t->job];
        if (t->role == QFS_ROLE_WEIGHT) {
            FUZZ_CHECK(!any_weight || t->job == last_job + 1, "%s/%s: weight '%s' is job %zu "
                       "after job %zu: jobs not in the order of their weights", sn, fn, t->name,
                       (size_t)t->job, last_job);
            FUZZ_CHECK(any_weight || t->job == 0, "%s/%s: first weight is job %zu", sn, fn,
                       (size_t)t->job);
            last_job = t->job;
            any_weight = true;
        }
        /* The output names are the whole module name (however long) and the layout's suffix. */
        const char *sname = src->tensors[t->src].name;
        size_t ml = strlen(sname);
        if (ml >= 7 && strcmp(sname + ml - 7, ".weight") == 0) ml -= 7;
        const char *module = sname;
        unsigned k;
        for (k = 0; k < job->layout->n_out; k++)
            if (strncmp(t->name, module, ml) == 0 && strcmp(t->name + ml, job->layout->out[k].suffix) == 0)
                break;
        FUZZ_CHECK(k < job->layout->n_out, "%s/%s: output '%s' (%zu bytes) is not the module "
                   "name of its source '%s' (%zu bytes) plus a suffix of its layout", sn, fn,
                   t->name, strlen(t->name), sname, ml);
        const qfs_out_tensor *o = &job->layout->out[k];
        FUZZ_CHECK(!(seen[t->job] & (1u << k)), "%s/%s: output '%s' twice", sn, fn, t->name);
        seen[t->job] |= 1u << k;
        FUZZ_CHECK(t->role == role_of_kind[o->kind] && t->dtype == o->dtype &&
                   t->ndim == o->ndim && (o->ndim < 1 || t->shape[0] == o->shape[0]) &&
                   (o->ndim < 2 || t->shape[1] == o->shape[1]) && t->size == o->bytes &&
                   t->job_offset == o->offset, "%s/%s: '%s' differs from its layout entry", sn,
                   fn, t->name);
    }
    free(seen);
    uint64_t data = p->file_size - p->header_size, sum;
    FUZZ_CHECK(!__builtin_add_overflow(pass_bytes, job_bytes, &sum) && sum == data,
               "%s/%s: passthrough %" PRIu64 " + layout parts %" PRIu64 " != data size %" PRIu64,
               sn, fn, pass_bytes, job_bytes, data);

    /* The header re-parses (as the file quarkfs serves) to exactly these tensors. */
    qfs_st_file back;
    qfs_error err = {{0}};
    int rc = qfs_st_parse(p->header, p->header_size, p->file_size, "plan header", &back, &err);
    FUZZ_CHECK(rc == 0, "%s/%s: the plan's header does not parse: %s", sn, fn, err.msg);
    FUZZ_CHECK(back.n_tensors == p->n_tensors, "%s/%s: header has %zu tensors, plan %zu", sn, fn,
               back.n_tensors, p->n_tensors);
    for (size_t i = 0; i < p->n_tensors; i++) {
        const qfs_plan_tensor *t = &p->tensors[i];
        const qfs_st_tensor *b = &back.tensors[i];
        FUZZ_CHECK(strcmp(b->name, t->name) == 0 && b->dtype == t->dtype && b->ndim == t->ndim &&
                   memcmp(b->shape, t->shape, t->ndim * sizeof *t->shape) == 0 &&
                   b->begin == t->offset && b->end == t->offset + t->size,
                   "%s/%s: header entry %zu ('%s') differs from plan tensor '%s'", sn, fn, i,
                   b->name, t->name);
    }
    FUZZ_CHECK(back.metadata && json_is_string(json_object_get(back.metadata, "format")) &&
               strcmp(json_string_value(json_object_get(back.metadata, "format")), "pt") == 0,
               "%s/%s: header metadata has no \"format\": \"pt\"", sn, fn);
    if (src->metadata) {
        const char *k;
        json_t *v;
        json_object_foreach(src->metadata, k, v)
            if (strcmp(k, "format") != 0)
                FUZZ_CHECK(json_equal(v, json_object_get(back.metadata, k)),
                           "%s/%s: metadata '%s' lost", sn, fn, k);
    }
    qfs_st_file_free(&back);
}
