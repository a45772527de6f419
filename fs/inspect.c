#include "inspect.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "quarkfs/layout.h"

static void shape_str(const qfs_st_tensor *t, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (unsigned d = 0; d < t->ndim && n < len; d++)
        n += (size_t)snprintf(buf + n, len - n, "%s%llu", d ? "," : "",
                              (unsigned long long)t->shape[d]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

/* Output dtypes and bytes of source tensor i: "I8+F32+I8" for a quantized weight. */
static void outputs_of(const qfs_plan *p, size_t src, char *dtypes, size_t len, uint64_t *bytes)
{
    const qfs_plan_tensor *parts[4] = {NULL, NULL, NULL, NULL};
    *bytes = 0;
    for (size_t k = 0; k < p->n_tensors; k++) {
        const qfs_plan_tensor *t = &p->tensors[k];
        if (t->src != src) continue;
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

int qfs_inspect_print(const qfs_model *m, bool json, FILE *out)
{
    size_t n_tensors = 0, n_quantized = 0, n_files = 0;
    json_t *rows = json ? json_array() : NULL, *broken = json ? json_array() : NULL;
    if (!json)
        fprintf(out, "%-56s %-14s %-22s %12s %12s  %s\n", "TENSOR", "SHAPE", "DTYPE", "SRC BYTES",
                "VIEW BYTES", "STATUS");
    for (size_t i = 0; i < m->n_entries; i++) {
        const qfs_entry *e = &m->entries[i];
        if (e->kind != QFS_ENTRY_QUANTIZED) continue;
        n_files++;
        if (e->error) {
            if (json) json_array_append_new(broken, json_pack("{s:s,s:s}", "file", e->path,
                                                              "error", e->error_msg));
            else fprintf(out, "%s: ERROR %s\n", e->path, e->error_msg);
            continue;
        }
        if (!json) fprintf(out, "# %s\n", e->path);
        for (size_t t = 0; t < e->st_file.n_tensors; t++) {
            const qfs_st_tensor *s = &e->st_file.tensors[t];
            char shape[128], dtypes[64], dt[96];
            uint64_t vb;
            shape_str(s, shape, sizeof shape);
            outputs_of(&e->plan, t, dtypes, sizeof dtypes, &vb);
            qfs_select_result d = e->plan.decisions[t];
            char why[160];
            snprintf(why, sizeof why, "%s", qfs_select_reason(d));
            qfs_layout l;
            if (d == QFS_SKIP_SHAPE)   /* say which dimension the spec cannot take */
                qfs_layout_for(m->opts.spec, m->opts.format, s->dtype, s->shape[0], s->shape[1],
                               &l, why, sizeof why);
            n_tensors++;
            n_quantized += d == QFS_SELECT_QUANTIZE;
            if (json) {
                json_array_append_new(rows, json_pack(
                    "{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:b,s:s}", "file", e->path, "name", s->name,
                    "shape", shape, "dtype", qfs_dtype_name(s->dtype), "out_dtypes", dtypes,
                    "src_bytes", (json_int_t)(s->end - s->begin), "view_bytes", (json_int_t)vb,
                    "quantized", d == QFS_SELECT_QUANTIZE, "reason", why));
            } else {
                snprintf(dt, sizeof dt, "%s -> %s", qfs_dtype_name(s->dtype), dtypes);
                fprintf(out, "%-56s %-14s %-22s %12llu %12llu  %s\n", s->name, shape, dt,
                        (unsigned long long)(s->end - s->begin), (unsigned long long)vb, why);
            }
        }
    }
    uint64_t src_total = m->src_bytes, view_total = m->view_bytes;
    if (json) {
        json_t *doc = json_pack("{s:s,s:s,s:o,s:o,s:{s:I,s:I,s:I,s:I,s:I}}",
            "spec", m->opts.spec->name, "format", qfs_format_name(m->opts.format),
            "tensors", rows, "broken_files", broken, "totals", "files", (json_int_t)n_files,
            "tensors", (json_int_t)n_tensors, "quantized", (json_int_t)n_quantized,
            "src_bytes", (json_int_t)src_total, "view_bytes", (json_int_t)view_total);
        if (!doc) return -ENOMEM;
        json_dumpf(doc, out, JSON_INDENT(2));
        fputc('\n', out);
        json_decref(doc);
        return 0;
    }
    fprintf(out, "\nspec %s, format %s: %zu files, %zu tensors, %zu quantized; %llu bytes -> %llu "
            "bytes (%.1f%%)\n", m->opts.spec->name, qfs_format_name(m->opts.format), n_files,
            n_tensors, n_quantized, (unsigned long long)src_total, (unsigned long long)view_total,
            src_total ? 100.0 * (double)view_total / (double)src_total : 0.0);
    return 0;
}
