#include "inspect.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quarkfs/io.h"
#include "quarkfs/layout.h"

static json_t *shape_json(const qfs_st_tensor *t)
{
    json_t *a = json_array();
    for (unsigned d = 0; a && d < t->ndim; d++)
        json_array_append_new(a, json_integer((json_int_t)t->shape[d]));
    return a;
}

static void shape_str(const qfs_st_tensor *t, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (unsigned d = 0; d < t->ndim && n < len; d++)
        n += (size_t)snprintf(buf + n, len - n, "%s%llu", d ? "," : "",
                              (unsigned long long)t->shape[d]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

/* The plan's outputs grouped by source tensor: outputs of src are order[start[src] ..
 * start[src + 1]) (a counting sort, so that listing n tensors stays linear). */
typedef struct outputs_index {
    size_t *start, *order;
} outputs_index;

static int outputs_index_build(const qfs_plan *p, size_t n_src, outputs_index *ix)
{
    ix->start = calloc(n_src + 2, sizeof *ix->start);
    ix->order = malloc((p->n_tensors ? p->n_tensors : 1) * sizeof *ix->order);
    if (!ix->start || !ix->order) return -ENOMEM;
    for (size_t k = 0; k < p->n_tensors; k++) ix->start[p->tensors[k].src + 2]++;
    for (size_t i = 2; i < n_src + 2; i++) ix->start[i] += ix->start[i - 1];
    for (size_t k = 0; k < p->n_tensors; k++) ix->order[ix->start[p->tensors[k].src + 1]++] = k;
    return 0;
}

static void outputs_index_free(outputs_index *ix)
{
    free(ix->start);
    free(ix->order);
}

/* Output dtypes and bytes of source tensor src: "I32+BF16+I32" for a quantized weight. */
static void outputs_of(const qfs_plan *p, const outputs_index *ix, size_t src, char *dtypes,
                       size_t len, uint64_t *bytes)
{
    const qfs_plan_tensor *parts[4] = {NULL, NULL, NULL, NULL};
    *bytes = 0;
    for (size_t k = ix->start[src]; k < ix->start[src + 1]; k++) {
        const qfs_plan_tensor *t = &p->tensors[ix->order[k]];
        parts[t->role == QFS_ROLE_SCALE ? 1 : t->role == QFS_ROLE_ZERO_POINT ? 2
              : t->role == QFS_ROLE_SHAPE ? 3 : 0] = t;
        *bytes += t->size;
    }
    size_t n = 0;
    dtypes[0] = '\0';
    for (int r = 0; r < 4; r++)
        if (parts[r] && n < len)
            n += (size_t)snprintf(dtypes + n, len - n, "%s%s", n ? "+" : "",
                                  qfs_dtype_name(parts[r]->dtype));
}

double qfs_inspect_rel_rms(const qfs_quant_error_stats *s)
{
    return s->ref2 > 0 ? sqrt(s->err2 / s->ref2) : 0.0;
}

double qfs_inspect_snr_db(const qfs_quant_error_stats *s)
{
    double r = qfs_inspect_rel_rms(s);
    return r > 0 ? -20.0 * log10(r) : INFINITY;
}

/* Quantizes source tensor `src` of file e exactly as the view does, dequantizes it and
 * measures the error against the source values. */
static int tensor_error(const qfs_model *m, const qfs_entry *e, size_t src, size_t job,
                        int threads, qfs_quant_error_stats *st, qfs_error *err)
{
    if (job >= e->plan.n_jobs || e->plan.jobs[job].src != src) return -ENOENT;
    const qfs_plan_job *j = &e->plan.jobs[job];
    const qfs_st_tensor *t = &e->st_file.tensors[src];
    size_t in_bytes = (size_t)(t->end - t->begin), n = (size_t)(j->rows * j->cols);
    uint8_t *in = malloc(in_bytes ? in_bytes : 1);
    uint8_t *w = malloc(j->layout->weight_bytes ? j->layout->weight_bytes : 1);
    uint8_t *sc = malloc(j->layout->scales_bytes ? j->layout->scales_bytes : 1);
    float *deq = malloc((n ? n : 1) * sizeof *deq);
    int rc = in && w && sc && deq ? 0 : -ENOMEM;
    if (rc == 0) rc = qfs_pread_full(e->src_fd, in, in_bytes, e->st_file.data_start + t->begin);
    if (rc && rc != -ENOMEM) qfs_error_set(err, "%s: tensor '%s': cannot read: %s", e->src_path,
                                           t->name, strerror(-rc));
    if (rc == 0) {
        char what[1024];
        snprintf(what, sizeof what, "%s: tensor '%s'", e->src_path, t->name);
        rc = qfs_quantize_layout(j->spec, m->opts.format, t->dtype, in, j->rows, j->cols,
                                 j->layout, w, sc, threads, what, err);
    }
    if (rc == 0)
        rc = qfs_dequantize_layout(j->spec, m->opts.format, j->rows, j->cols, j->layout, w,
                                   sc, deq, threads);
    if (rc == 0) rc = qfs_quant_error(in, t->dtype, deq, n, st, threads);
    free(in);
    free(w);
    free(sc);
    free(deq);
    return rc;
}

static void add_stats(qfs_quant_error_stats *sum, const qfs_quant_error_stats *s)
{
    sum->err2 += s->err2;
    sum->ref2 += s->ref2;
    if (s->max_abs > sum->max_abs) sum->max_abs = s->max_abs;
}

/* Walks every tensor; prints rows when `out` is non-NULL. */
static int walk(const qfs_model *m, const qfs_inspect_options *o, FILE *out, json_t *rows,
                json_t *broken, qfs_inspect_totals *tot)
{
    memset(tot, 0, sizeof *tot);
    tot->src_bytes = m->src_bytes;
    tot->view_bytes = m->view_bytes;
    bool table = out && !o->json;
    uint64_t err_total = 0, err_done = 0;
    if (o->error && o->progress) {
        for (size_t i = 0; i < m->n_entries; i++) {
            const qfs_entry *e = &m->entries[i];
            if (e->kind != QFS_ENTRY_QUANTIZED || e->error) continue;
            for (size_t t = 0; t < e->st_file.n_tensors; t++)
                if (e->plan.decisions[t] == QFS_SELECT_QUANTIZE)
                    err_total += e->st_file.tensors[t].end - e->st_file.tensors[t].begin;
        }
        qfs_progress_start(o->progress, "inspect", err_total, 0, NULL);
    }
    if (table)
        fprintf(out, "%-56s %-14s %-24s %11s %11s  %s%s\n", "TENSOR", "SHAPE", "DTYPE",
                "SRC BYTES", "VIEW BYTES", o->error ? " REL RMS   SNR dB   MAX ABS  " : "",
                "STATUS");
    for (size_t i = 0; i < m->n_entries; i++) {
        const qfs_entry *e = &m->entries[i];
        if (e->kind != QFS_ENTRY_QUANTIZED) continue;
        tot->files++;
        if (e->error) {
            if (rows) json_array_append_new(broken, json_pack("{s:s,s:s}", "file", e->path,
                                                              "error", e->error_msg));
            else if (table) {
                char p1[1024], p2[4096];
                fprintf(out, "%s: ERROR %s\n", qfs_escape_ctl(e->path, p1, sizeof p1),
                        qfs_escape_ctl(e->error_msg ? e->error_msg : "", p2, sizeof p2));
            }
            continue;
        }
        char safe_path[1024];
        if (table) fprintf(out, "# %s\n", qfs_escape_ctl(e->path, safe_path, sizeof safe_path));
        outputs_index ix;
        if (outputs_index_build(&e->plan, e->st_file.n_tensors, &ix)) {
            outputs_index_free(&ix);
            return -ENOMEM;
        }
        const size_t *job_of = e->plan.job_of;
        for (size_t t = 0; t < e->st_file.n_tensors; t++) {
            const qfs_st_tensor *s = &e->st_file.tensors[t];
            qfs_select_result d = e->plan.decisions[t];
            char shape[128], dtypes[64], dt[96], why[1100], errcol[64] = "";
            uint64_t vb;
            shape_str(s, shape, sizeof shape);
            outputs_of(&e->plan, &ix, t, dtypes, sizeof dtypes, &vb);
            snprintf(why, sizeof why, "%s", qfs_select_reason(d));
            size_t rule = SIZE_MAX;
            const qfs_spec *ls = d == QFS_SELECT_QUANTIZE || d == QFS_SKIP_SHAPE
                               ? qfs_model_spec_for(m, s->name, &rule) : NULL;
            if (rule != SIZE_MAX) {   /* the per-layer plan: which rule gave the spec */
                const qfs_layer_rule *r = &m->opts.rules.layers[rule];
                snprintf(why, sizeof why, "%s %s (%s '%s')", qfs_select_reason(d), ls->name,
                         r->from_preset ? "preset" : "--layer", r->glob);
            }
            qfs_layout l;
            if (d == QFS_SKIP_SHAPE) {   /* say which dimension the spec cannot take */
                qfs_error lerr = {{0}};
                if (qfs_layout_for(ls, m->opts.format, s->dtype, s->shape[0],
                                   s->shape[1], &l, &lerr))
                    snprintf(why, sizeof why, "%s%s%s", rule != SIZE_MAX ? ls->name : "",
                             rule != SIZE_MAX ? ": " : "", lerr.msg);
                if (!tot->shape_skipped++)
                    snprintf(tot->first_skip, sizeof tot->first_skip, "%.120s: %.120s", s->name,
                             why);
            }
            tot->tensors++;
            qfs_quant_error_stats st = {0};
            bool have_err = false;
            if (d == QFS_SELECT_QUANTIZE) {
                tot->quantized++;
                if (o->error) {
                    qfs_error err = {{0}};
                    if (tensor_error(m, e, t, job_of[t], o->threads, &st, &err) == 0) {
                        have_err = true;
                        add_stats(&tot->error, &st);
                        snprintf(errcol, sizeof errcol, " %8.2e %7.2f %9.3e  ",
                                 qfs_inspect_rel_rms(&st), qfs_inspect_snr_db(&st), st.max_abs);
                    } else {
                        tot->failed++;
                        snprintf(why, sizeof why, "error: %s", err.msg);
                    }
                    err_done += s->end - s->begin;
                    if (o->progress) qfs_progress_update(o->progress, err_done, 0, s->name);
                }
            }
            if (o->error && !have_err && !errcol[0]) snprintf(errcol, sizeof errcol, "%30s", "");
            if (rows) {
                json_t *row = json_pack("{s:s,s:s,s:o,s:s,s:s,s:I,s:I,s:b,s:s}", "file", e->path,
                    "name", s->name, "shape", shape_json(s), "dtype", qfs_dtype_name(s->dtype),
                    "out_dtypes", dtypes, "src_bytes", (json_int_t)(s->end - s->begin),
                    "view_bytes", (json_int_t)vb, "quantized", d == QFS_SELECT_QUANTIZE,
                    "reason", why);
                if (ls) json_object_set_new(row, "spec", json_string(ls->name));
                if (have_err)
                    json_object_set_new(row, "error", json_pack("{s:f,s:f,s:f}",
                        "rel_rms", qfs_inspect_rel_rms(&st), "snr_db", qfs_inspect_snr_db(&st),
                        "max_abs", st.max_abs));
                json_array_append_new(rows, row);
            } else if (table) {
                snprintf(dt, sizeof dt, "%s -> %s", qfs_dtype_name(s->dtype), dtypes);
                /* Names and reasons (which quote names) are data: no raw control bytes. */
                char safe_name[4096], safe_why[4400];
                fprintf(out, "%-56s %-14s %-24s %11llu %11llu  %s%s\n",
                        qfs_escape_ctl(s->name, safe_name, sizeof safe_name), shape, dt,
                        (unsigned long long)(s->end - s->begin), (unsigned long long)vb, errcol,
                        qfs_escape_ctl(why, safe_why, sizeof safe_why));
            }
        }
        outputs_index_free(&ix);
    }
    if (o->error && o->progress) {
        char b[32];
        qfs_format_bytes(err_done, b, sizeof b);
        qfs_progress_finish(o->progress, err_done, "quantized and compared %zu tensors, %s of "
                            "source", tot->quantized, b);
    }
    return 0;
}

int qfs_inspect_totals_of(const qfs_model *m, const qfs_inspect_options *o,
                          qfs_inspect_totals *out)
{
    return walk(m, o, NULL, NULL, NULL, out);
}

int qfs_inspect_print(const qfs_model *m, const qfs_inspect_options *o, FILE *out)
{
    qfs_inspect_totals tot;
    json_t *rows = o->json ? json_array() : NULL, *broken = o->json ? json_array() : NULL;
    walk(m, o, out, rows, broken, &tot);
    if (o->json) {
        json_t *totals = json_pack("{s:I,s:I,s:I,s:I,s:I}", "files", (json_int_t)tot.files,
            "tensors", (json_int_t)tot.tensors, "quantized", (json_int_t)tot.quantized,
            "src_bytes", (json_int_t)tot.src_bytes, "view_bytes", (json_int_t)tot.view_bytes);
        if (o->error)
            json_object_set_new(totals, "error", json_pack("{s:f,s:f,s:f}",
                "rel_rms", qfs_inspect_rel_rms(&tot.error), "snr_db",
                qfs_inspect_snr_db(&tot.error), "max_abs", tot.error.max_abs));
        json_t *doc = json_pack("{s:s,s:s,s:o,s:o,s:o}", "spec", m->opts.spec->name,
                                "format", qfs_format_name(m->opts.format), "tensors", rows,
                                "broken_files", broken, "totals", totals);
        if (!doc) return -ENOMEM;
        json_dumpf(doc, out, JSON_INDENT(2));
        fputc('\n', out);
        json_decref(doc);
        return tot.failed ? -EIO : 0;
    }
    fprintf(out, "\nspec %s, format %s: %zu file%s, %zu tensor%s, %zu quantized; %llu bytes -> "
            "%llu bytes (%.1f%%)\n", m->opts.spec->name, qfs_format_name(m->opts.format),
            tot.files, tot.files == 1 ? "" : "s", tot.tensors, tot.tensors == 1 ? "" : "s",
            tot.quantized, (unsigned long long)tot.src_bytes,
            (unsigned long long)tot.view_bytes,
            tot.src_bytes ? 100.0 * (double)tot.view_bytes / (double)tot.src_bytes : 0.0);
    if (o->error)
        fprintf(out, "error over the quantized tensors: relative RMS %.3e, SNR %.2f dB, max abs "
                "%.3e%s\n", qfs_inspect_rel_rms(&tot.error), qfs_inspect_snr_db(&tot.error),
                tot.error.max_abs, tot.failed ? " (some tensors failed, see above)" : "");
    return tot.failed ? -EIO : 0;
}
