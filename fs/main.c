/* quarkfs — the commands: mount (default), export, inspect, warm, status. Options are parsed
 * in options.c, messages go through log.c, progress lines through progress.c. */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "client.h"
#include "defaults.h"
#include "inspect.h"
#include "log.h"
#include "mountinfo.h"
#include "ops.h"
#include "options.h"
#include "progress.h"
#include "quarkfs/diskcache.h"
#include "quarkfs/export.h"
#include "quarkfs/io.h"
#include "quarkfs/layout.h"
#include "quarkfs/log.h"
#include "quarkfs/model.h"
#include "quarkfs/spec.h"

#ifndef QUARKFS_VERSION
#define QUARKFS_VERSION "unknown"
#endif

#define ATTR_TIMEOUT 86400.0
#define log_msg qfs_log_msg

typedef qfs_cli cli;

static qfs_map_guard map_guard;   /* the engine reads sources through guarded mappings */
static bool map_guard_on;         /* its SIGBUS handler is installed */

/* Weights the spec cannot take, grouped by dtype and reason for one summary line each. */
typedef struct skip_group {
    char dtype[16], why[256];
    const char *spec;        /* the spec that cannot take them (a layer rule's, or the view's) */
    size_t n;
    char patterns[3][160];   /* module names with layer numbers as '*' */
    size_t n_patterns;
    bool more;
} skip_group;

/* "model.layers.17.mlp.down_proj.weight" -> "model.layers.*.mlp.down_proj". */
static void module_pattern(const char *name, char *out, size_t len)
{
    size_t n = strlen(name), o = 0;
    if (n > 7 && strcmp(name + n - 7, ".weight") == 0) n -= 7;
    for (size_t i = 0; i < n && o + 1 < len; ) {
        if (name[i] >= '0' && name[i] <= '9') {
            out[o++] = '*';
            while (i < n && name[i] >= '0' && name[i] <= '9') i++;
        } else {
            out[o++] = name[i++];
        }
    }
    out[o] = '\0';
}

static void add_skip(skip_group *g, size_t *n_groups, size_t cap, const char *spec,
                     const char *dtype, const char *why, const char *name)
{
    size_t k = 0;
    while (k < *n_groups && (strcmp(g[k].dtype, dtype) != 0 || strcmp(g[k].why, why) != 0 ||
                             g[k].spec != spec))
        k++;
    if (k == *n_groups) {
        if (*n_groups == cap) k = cap - 1;   /* beyond the cap: counted with the last group */
        else {
            memset(&g[k], 0, sizeof g[k]);
            snprintf(g[k].dtype, sizeof g[k].dtype, "%s", dtype);
            g[k].spec = spec;
            snprintf(g[k].why, sizeof g[k].why, "%.*s", (int)sizeof g[k].why - 1, why);
            (*n_groups)++;
        }
    }
    g[k].n++;
    char pat[160];
    module_pattern(name, pat, sizeof pat);
    for (size_t i = 0; i < g[k].n_patterns; i++)
        if (strcmp(g[k].patterns[i], pat) == 0) return;
    if (g[k].n_patterns < 3) snprintf(g[k].patterns[g[k].n_patterns++], 160, "%s", pat);
    else g[k].more = true;
}

/* The plan's fallbacks: the weights the spec cannot take (their shape) stay in their source
 * dtype -- one info line per reason with a count and the modules (a big model has hundreds;
 * each one is a debug line); a weight whose output names are taken is a warning. Tensors left
 * alone by design (norms, embeddings, lm_head, --exclude, ...) are debug lines. */
static void log_plan(const qfs_model *m)
{
    skip_group groups[16];
    size_t n_groups = 0;
    for (size_t i = 0; i < m->n_entries; i++) {
        const qfs_entry *e = &m->entries[i];
        if (e->kind != QFS_ENTRY_QUANTIZED || e->error) continue;
        size_t quantized = 0;
        for (size_t t = 0; t < e->st_file.n_tensors; t++) {
            const qfs_st_tensor *s = &e->st_file.tensors[t];
            qfs_select_result d = e->plan.decisions[t];
            const char *dt = qfs_dtype_name(s->dtype);
            if (d == QFS_SELECT_QUANTIZE) {
                quantized++;
            } else if (d == QFS_SKIP_SHAPE) {
                qfs_error lerr = {{0}};
                qfs_layout l;
                size_t rule;
                const qfs_spec *ls = qfs_model_spec_for(m, s->name, &rule);
                qfs_layout_for(ls, m->opts.format, s->dtype, s->shape[0], s->shape[1], &l, &lerr);
                const char *why = lerr.msg;
                log_msg(LOG_DEBUG, "%s: tensor '%s' [%llu, %llu] stays %s: spec %s cannot take "
                        "it: %s", e->src_path, s->name, (unsigned long long)s->shape[0],
                        (unsigned long long)s->shape[1], dt, ls->name, why);
                add_skip(groups, &n_groups, sizeof groups / sizeof groups[0], ls->name, dt, why,
                         s->name);
            } else if (d == QFS_SKIP_NAME_CLASH) {
                log_msg(LOG_WARNING, "%s: tensor '%s' stays %s: the names of its quantized "
                        "tensors are already taken in that file", e->src_path, s->name, dt);
            } else if (d != QFS_SKIP_NONFINITE) {
                log_msg(LOG_DEBUG, "%s: tensor '%s' stays %s: %s", e->src_path, s->name, dt,
                        qfs_select_reason(d));
            }
        }
        log_msg(LOG_DEBUG, "%s: %zu of %zu tensors quantized, %llu -> %llu bytes", e->src_path,
                quantized, e->st_file.n_tensors, (unsigned long long)e->st_file.file_size,
                (unsigned long long)e->plan.file_size);
    }
    for (size_t k = 0; k < n_groups; k++) {
        const skip_group *g = &groups[k];
        char mods[520] = "";
        size_t n = 0;
        for (size_t i = 0; i < g->n_patterns; i++)
            n += (size_t)snprintf(mods + n, sizeof mods - n, "%s%s", i ? ", " : "",
                                  g->patterns[i]);
        if (g->more) snprintf(mods + n, sizeof mods - n, ", ...");
        log_msg(LOG_INFO, "%zu weight%s stay%s %s, spec %s cannot take %s: %s (%s); "
                "`quarkfs inspect` lists them, `inspect --spec all` compares the specs",
                g->n, g->n == 1 ? "" : "s", g->n == 1 ? "s" : "", g->dtype, g->spec,
                g->n == 1 ? "it" : "them", g->why, mods);
    }
}

/* The spec/format pair and its known reader problems: AutoAWQ's kernels (vLLM awq and
 * awq_marlin, gptqmodel) take every awq checkpoint as unsigned 4-bit with zero points, so a
 * symmetric int4 one loads but computes with wrong weights. */
static void warn_pair(const qfs_spec *spec, qfs_format fmt)
{
    if (spec->wtype == QFS_W_INT4 && fmt == QFS_FMT_AWQ)
        log_msg(LOG_WARNING, "spec %s in format awq: AutoAWQ kernels (vLLM awq/awq_marlin, "
                "transformers+gptqmodel) misread symmetric int4 and compute wrong outputs; only "
                "Quark reads it right. For those loaders use uint4-g* in awq, or %s in "
                "compressed-tensors", spec->name, spec->name);
}

/* The spec and format of c, checked as a pair. 0, or EXIT_USAGE after a message. */
static int lookup_pair(const cli *c, const qfs_spec **spec, qfs_format *fmt)
{
    qfs_error err = {{0}};
    if (qfs_spec_lookup(c->spec ? c->spec : "int8", spec, &err) ||
        qfs_format_lookup(c->format ? c->format : "quark", fmt, &err) ||
        qfs_spec_check_format(*spec, *fmt, &err) ||
        qfs_layer_rules_check_format(*fmt, c->layer_rules, c->n_layer_rules, &err)) {
        fprintf(stderr, "quarkfs: %s\n", err.msg);
        return EXIT_USAGE;
    }
    return 0;
}

/* The view of c over src; with base (another view of the same src), its scan and headers are
 * reused (qfs_model_open_like). */
static int build_model_like(const cli *c, const char *src, bool verbose, const qfs_model *base,
                            qfs_model **m)
{
    qfs_error err = {{0}};
    const qfs_spec *spec;
    qfs_format fmt;
    if (lookup_pair(c, &spec, &fmt)) return EXIT_USAGE;
    if (verbose) warn_pair(spec, fmt);
    qfs_model_options o = {
        .spec = spec, .format = fmt,
        .rules = {c->excludes, c->n_excludes, c->includes, c->n_includes, c->layer_rules,
                  c->n_layer_rules},
        .check_finite = c->check_finite,
        .follow_all_symlinks = c->follow_symlinks,
    };
    if (base ? qfs_model_open_like(base, &o, m, &err) : qfs_model_open(src, &o, m, &err)) {
        log_msg(LOG_ERR, "%s", err.msg);
        return 1;
    }
    for (size_t i = 0; i < (*m)->n_warnings; i++) log_msg(LOG_WARNING, "%s", (*m)->warnings[i]);
    if (verbose) log_plan(*m);
    return 0;
}

static int build_model(const cli *c, const char *src, bool verbose, qfs_model **m)
{
    return build_model_like(c, src, verbose, NULL, m);
}

/* True if dir holds Mistral's native layout (params.json and consolidated*.safetensors), which
 * the view passes through: only Hugging Face's model*.safetensors are quantized. */
static bool mistral_layout(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/params.json", dir);
    if (access(p, F_OK) != 0) return false;
    DIR *d = opendir(dir);
    bool found = false;
    for (struct dirent *de; d && !found && (de = readdir(d)); ) {
        size_t n = strlen(de->d_name);
        found = strncmp(de->d_name, "consolidated", 12) == 0 && n >= 12 + 12 &&
                strcmp(de->d_name + n - 12, ".safetensors") == 0;
    }
    if (d) closedir(d);
    return found;
}

/* Before serving or writing a view: a SRC with nothing to quantize (an empty directory, a git
 * checkout without weights, a model whose only shard cannot be read) is refused, since a
 * server reading it would load the unquantized or no weights; -o allow_empty takes it. 0 or 1
 * (logged). */
static int check_source(const cli *c, const qfs_model *m)
{
    size_t usable = 0, broken = 0;
    const qfs_entry *first_broken = NULL;
    for (size_t i = 0; i < m->n_entries; i++) {
        const qfs_entry *e = &m->entries[i];
        if (e->kind != QFS_ENTRY_QUANTIZED) continue;
        if (e->error) {
            broken++;
            if (!first_broken) first_broken = e;
        } else {
            usable++;
        }
    }
    bool mistral = mistral_layout(m->src_root);
    if (mistral && usable)
        log_msg(LOG_INFO, "%s also holds Mistral's native files (params.json, "
                "consolidated*.safetensors): they pass through unquantized; loaders that read "
                "them (vLLM --load-format mistral) get the source weights", m->src_root);
    if (usable || c->allow_empty) {
        if (!usable)
            log_msg(LOG_WARNING, "%s: nothing to quantize (allow_empty): every file passes "
                    "through", m->src_root);
        return 0;
    }
    if (broken == 1)
        log_msg(LOG_ERR, "%s: nothing to quantize: its only model shard cannot be read (%s); "
                "-o allow_empty serves the other files anyway", m->src_root,
                first_broken->error_msg);
    else if (broken)
        log_msg(LOG_ERR, "%s: nothing to quantize: none of its %zu model shards can be read "
                "(first: %s); -o allow_empty serves the other files anyway", m->src_root, broken,
                first_broken->error_msg);
    else if (mistral)
        log_msg(LOG_ERR, "%s: nothing to quantize: it is in Mistral's native format "
                "(params.json, consolidated*.safetensors) and quarkfs quantizes the Hugging "
                "Face layout (config.json, model*.safetensors); use the repository's Hugging "
                "Face files, or -o allow_empty to pass it through", m->src_root);
    else
        log_msg(LOG_ERR, "%s: nothing to quantize: no model*.safetensors file (is it a "
                "Hugging Face model directory?); -o allow_empty mounts it anyway",
                m->src_root);
    return 1;
}

/* ---- engine and persistent cache ---- */

_Static_assert(QFS_LOG_ERR == LOG_ERR && QFS_LOG_WARNING == LOG_WARNING &&
               QFS_LOG_INFO == LOG_INFO && QFS_LOG_DEBUG == LOG_DEBUG,
               "core log levels are passed to syslog unchanged");

static void engine_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    log_msg(level, "%s", msg);
}

/* The default persistent cache: /var/cache/quarkfs for root, else $XDG_CACHE_HOME/quarkfs
 * (~/.cache/quarkfs). */
static void default_cache_dir(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (geteuid() == 0) snprintf(buf, len, "/var/cache/quarkfs");
    else if (xdg && *xdg) snprintf(buf, len, "%s/quarkfs", xdg);
    else snprintf(buf, len, "%s/.cache/quarkfs", home ? home : "/tmp");
}

/* Opens the disk cache (unless off) and starts the engine. A cache directory that cannot be
 * used costs one warning, never the mount. */
static int open_engine(const cli *c, qfs_engine **out, qfs_diskcache **disk_out)
{
    qfs_error err = {{0}};
    qfs_diskcache *disk = NULL;
    if (!c->no_disk_cache) {
        char dir[PATH_MAX];
        if (c->cache_dir) snprintf(dir, sizeof dir, "%s", c->cache_dir);
        else default_cache_dir(dir, sizeof dir);
        if (qfs_diskcache_open(dir, c->cache_size ? c->cache_size : DEFAULT_CACHE_SIZE, &disk,
                               &err)) {
            log_msg(LOG_WARNING, "%s; continuing with the memory cache only", err.msg);
            disk = NULL;
        } else if (qfs_diskcache_readonly(disk)) {
            log_msg(LOG_WARNING, "%s", err.msg);
        }
    }
    qfs_engine_options o = {.cache_mem = c->cache_mem, .threads = c->threads, .disk = disk,
                            .map_guard = map_guard_on ? &map_guard : NULL,
                            .log = engine_log};
    if (qfs_engine_create(&o, out, &err)) {
        qfs_diskcache_close(disk);
        log_msg(LOG_ERR, "%s", err.msg);
        return 1;
    }
    if (disk_out) *disk_out = disk;   /* owned by the engine */
    return 0;
}

/* Applies the log options of a command that runs in the foreground. 0 or 1 (printed). */
static int setup_log(const cli *c)
{
    if (c->log_level >= 0) qfs_log_level = c->log_level;
    qfs_error err = {{0}};
    if (c->log_file && qfs_log_open_file(c->log_file, &err)) {
        fprintf(stderr, "quarkfs: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* ---- inspect ---- */

/* Why a spec leaves weights unquantized, for its `--spec all` row; false if it leaves none. */
static bool skip_note(const qfs_inspect_totals *t, char *buf, size_t len)
{
    if (t->shape_skipped)
        snprintf(buf, len, "%zu weight%s the spec cannot take, e.g. %s", t->shape_skipped,
                 t->shape_skipped == 1 ? "" : "s", t->first_skip);
    else if (!t->quantized)
        snprintf(buf, len, "no weight to quantize");
    return t->shape_skipped || !t->quantized;
}

/* `inspect --spec all`: one summary row per spec (in --format if it takes the spec, else in the
 * first format that does); a row with nothing quantized says why (the first weight's reason). */
static int inspect_all_specs(cli *c, const char *src, const qfs_inspect_options *o)
{
    size_t n;
    const qfs_spec *all = qfs_spec_all(&n);
    qfs_format want = QFS_FMT_QUARK;
    qfs_error err = {{0}};
    if (c->format && qfs_format_lookup(c->format, &want, &err)) {
        fprintf(stderr, "quarkfs: %s\n", err.msg);
        return EXIT_USAGE;
    }
    if (!o->json)
        printf("%-12s %-19s %9s %8s %10s %8s %10s  %s\n", "SPEC", "FORMAT", "QUANTIZED", "SIZE",
               o->error ? "REL RMS" : "", o->error ? "SNR dB" : "", o->error ? "MAX ABS" : "",
               "NOT QUANTIZED");
    json_t *rows = json_array();
    qfs_progress pr;
    if (o->error) qfs_progress_start(&pr, "inspect", 0, n, "specs");
    qfs_inspect_options oo = *o;
    oo.progress = NULL;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        qfs_format f = want;
        for (int k = 0; !qfs_spec_format_ok(&all[i], f) && k < QFS_FMT_COUNT; k++) f = (qfs_format)k;
        c->spec = all[i].name;
        c->format = qfs_format_name(f);
        qfs_error lerr = {{0}};
        if (qfs_layer_rules_check_format(f, c->layer_rules, c->n_layer_rules, &lerr)) {
            /* a spec only another format takes: its row cannot carry the per-layer rules */
            const char *why = "per-layer rules (--layer, --preset) need --format quark";
            if (o->json)
                json_array_append_new(rows, json_pack("{s:s,s:s,s:s}", "spec", all[i].name,
                                                      "format", c->format, "skipped", why));
            else
                printf("%-12s %-19s %9s %8s %10s %8s %10s  %s\n", all[i].name, c->format, "-",
                       "-", "", "", "", why);
            if (o->error) qfs_progress_update(&pr, 0, i + 1, all[i].name);
            continue;
        }
        qfs_model *m;
        if ((rc = build_model(c, src, false, &m))) {
            if (o->error) qfs_progress_abort(&pr);
            json_decref(rows);
            return rc;
        }
        qfs_inspect_totals t;
        char note[400];
        qfs_inspect_totals_of(m, &oo, &t);
        if (t.failed) rc = 1;
        qfs_model_close(m);
        if (o->error) qfs_progress_update(&pr, 0, i + 1, all[i].name);
        if (o->json) {
            json_t *row = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I}", "spec", all[i].name, "format",
                                    qfs_format_name(f), "tensors", (json_int_t)t.tensors,
                                    "quantized", (json_int_t)t.quantized,
                                    "src_bytes", (json_int_t)t.src_bytes,
                                    "view_bytes", (json_int_t)t.view_bytes);
            if (o->error && t.quantized)
                json_object_set_new(row, "error", json_pack("{s:f,s:f,s:f}",
                    "rel_rms", qfs_inspect_rel_rms(&t.error), "snr_db",
                    qfs_inspect_snr_db(&t.error), "max_abs", t.error.max_abs));
            if (skip_note(&t, note, sizeof note))
                json_object_set_new(row, "not_quantized", json_string(note));
            json_array_append_new(rows, row);
            continue;
        }
        printf("%-12s %-19s %5zu/%-3zu %7.1f%%", all[i].name, qfs_format_name(f), t.quantized,
               t.tensors, t.src_bytes ? 100.0 * (double)t.view_bytes / (double)t.src_bytes : 0.0);
        if (o->error && t.quantized)
            printf(" %10.3e %8.2f %10.3e", qfs_inspect_rel_rms(&t.error),
                   qfs_inspect_snr_db(&t.error), t.error.max_abs);
        else
            printf(" %10s %8s %10s", o->error ? "-" : "", o->error ? "-" : "", o->error ? "-" : "");
        printf("  %s\n", skip_note(&t, note, sizeof note) ? note : "");
    }
    if (o->error) qfs_progress_finish(&pr, 0, "quantized and compared %zu specs", n);
    if (o->json) {
        json_dumpf(rows, stdout, JSON_INDENT(2));
        putchar('\n');
    }
    json_decref(rows);
    return rc;
}

static int cmd_inspect(int argc, char **argv)
{
    cli c = {.log_level = -1};
    int rc = qfs_cli_parse(QFS_CMD_INSPECT, argc, argv, &c);
    if (rc || c.help_done) goto out;
    rc = EXIT_USAGE;
    if (c.n_pos != 1) {
        fprintf(stderr, "Usage: quarkfs inspect [--spec S|all] [--format F] [--exclude G] "
                "[--include G] [--error] [--json] SRC%s\n", c.n_pos ? " (one SRC)" : "");
        goto out;
    }
    if ((rc = setup_log(&c))) goto out;
    qfs_progress pr;
    qfs_inspect_options o = {.json = c.json, .error = c.error, .threads = c.threads,
                             .progress = c.error ? &pr : NULL};
    if (c.spec && strcmp(c.spec, "all") == 0) {
        rc = inspect_all_specs(&c, c.pos[0], &o);
    } else {
        qfs_model *m;
        rc = build_model(&c, c.pos[0], false, &m);
        if (rc == 0) {
            warn_pair(m->opts.spec, m->opts.format);
            if (qfs_inspect_print(m, &o, stdout)) rc = 1;
            qfs_model_close(m);
        }
    }
out:
    qfs_cli_free(&c);
    return rc;
}

/* ---- export ---- */

typedef struct export_progress_ctx { qfs_progress p; } export_progress_ctx;

static void export_progress(void *ctx, uint64_t done, uint64_t total, const char *file)
{
    (void)total;
    qfs_progress_update(&((export_progress_ctx *)ctx)->p, done, 0, file);
}

static int cmd_export(int argc, char **argv)
{
    cli c = {.cache_mem = DEFAULT_CACHE_MEM, .log_level = -1};
    qfs_model *m = NULL;
    int rc = qfs_cli_parse(QFS_CMD_EXPORT, argc, argv, &c);
    if (rc || c.help_done) goto out;
    rc = EXIT_USAGE;
    if (c.n_pos != 2) {
        fprintf(stderr, "Usage: quarkfs export [--spec S] [--format F] [--exclude G] "
                "[--include G] [--threads N] [--cache-mem SIZE] SRC OUT%s\n",
                c.n_pos > 2 ? " (too many arguments)" : "");
        goto out;
    }
    if ((rc = setup_log(&c))) goto out;
    if ((rc = build_model(&c, c.pos[0], true, &m))) goto out;
    if ((rc = check_source(&c, m))) goto out;
    qfs_error err = {{0}};
    qfs_engine *e;
    rc = 1;
    if (open_engine(&c, &e, NULL) == 0) {
        uint64_t total = 0;
        size_t files = 0;
        for (size_t i = 0; i < m->n_entries; i++)
            if (m->entries[i].kind != QFS_ENTRY_DIR) {
                total += (uint64_t)m->entries[i].st.st_size;
                files++;
            }
        export_progress_ctx p;
        qfs_progress_start(&p.p, "export", total, 0, NULL);
        if (qfs_export(m, e, c.pos[1], export_progress, &p, &err)) {
            qfs_progress_abort(&p.p);
            log_msg(LOG_ERR, "export to %s failed: %s", c.pos[1], err.msg);
        } else {
            char b[32];
            qfs_format_bytes(total, b, sizeof b);
            qfs_progress_finish(&p.p, total, "wrote %zu file%s, %s, to %s", files,
                                files == 1 ? "" : "s", b, c.pos[1]);
            rc = 0;
        }
        qfs_engine_destroy(e);
    }
out:
    qfs_model_close(m);
    qfs_cli_free(&c);
    return rc;
}

/* ---- mount ---- */

/* The options every mount gets: read-only, nodev, nosuid, the source permissions, the type
 * fuse.quarkfs and, unless -o fsname= was given, SRC as the source that mount(8), findmnt and
 * df show (and that `mount -a` compares with fstab). */
static int add_fixed_options(struct fuse_args *args, const cli *c)
{
    char *o = NULL, fsname[PATH_MAX + 8];
    int rc = fuse_opt_add_opt(&o, "ro,nodev,nosuid,default_permissions,subtype=quarkfs");
    if (rc == 0 && !c->has_fsname) {
        char real[PATH_MAX];
        const char *src = c->pos[0][0] == '/' || !realpath(c->pos[0], real) ? c->pos[0] : real;
        snprintf(fsname, sizeof fsname, "fsname=%s", src);
        rc = fuse_opt_add_opt_escaped(&o, fsname);
    }
    if (rc == 0) rc = fuse_opt_add_arg(args, "-o");
    if (rc == 0) rc = fuse_opt_add_arg(args, o);
    free(o);
    return rc;
}

/* systemd's readiness protocol without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or
 * an abstract name written with a leading '@'), so that a Type=notify unit becomes active when
 * the view is mounted, and "STOPPING=1" as it stops. */
static void notify_systemd(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof a.sun_path) {
        log_msg(LOG_WARNING, "NOTIFY_SOCKET=%s: not a socket path; systemd is not told that "
                "the view is ready", path);
        return;
    }
    memcpy(a.sun_path, path, n);
    if (a.sun_path[0] == '@') a.sun_path[0] = '\0';
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct iovec iov = {(void *)state, strlen(state)};
    struct msghdr mh = {.msg_name = &a,
                        .msg_namelen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n),
                        .msg_iov = &iov, .msg_iovlen = 1};
    if (s < 0 || sendmsg(s, &mh, MSG_NOSIGNAL) < 0)
        log_msg(LOG_WARNING, "NOTIFY_SOCKET=%s: %s; systemd is not told the view's state",
                path, strerror(errno));
    if (s >= 0) close(s);
}

/* Whether the FUSE mount at mnt answers: 1 yes, 0 its daemon is gone (ENOTCONN), -1 no answer
 * within 2 s (a hung daemon). Its attributes may be cached for a day, so statfs asks; from a
 * child process, which a hung daemon cannot block for good (FUSE waits are killable). */
static int mount_answers(const char *mnt)
{
    pid_t pid = fork();
    if (pid == 0) {
        struct statvfs sv;
        _exit(statvfs(mnt, &sv) == 0 ? 0 : errno == ENOTCONN ? 1 : 2);
    }
    if (pid < 0) return 1;
    int status = 0;
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 1 ? 0 : 1;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Before mounting on mnt: a dead quarkfs mount there (its daemon killed) is named with its
 * remedy, an existing live one refused, a non-empty directory warned about (the view hides
 * it until unmounted). 0, or an exit status after a message. */
static int check_mountpoint(const char *src, const char *mnt)
{
    struct stat st;
    if (stat(mnt, &st) != 0) {
        if (errno == ENOTCONN) {
            log_msg(LOG_ERR, "%s: the daemon of the quarkfs mount there is gone (killed or "
                    "crashed): remove the dead mount with `fusermount3 -uz %s` (or umount -l), "
                    "then mount again", mnt, mnt);
            return 1;
        }
        fprintf(stderr, "quarkfs: mountpoint %s: %s\n", mnt, strerror(errno));
        return EXIT_USAGE;
    }
    char real[PATH_MAX], majmin[64], type[64];
    if (!realpath(mnt, real)) snprintf(real, sizeof real, "%s", mnt);
    FILE *mi = fopen("/proc/self/mountinfo", "r");   /* asks no FUSE daemon, ours or hung */
    bool on_top = mi && qfs_mountinfo_topmost(mi, real, majmin, sizeof majmin, type, sizeof type);
    if (mi) fclose(mi);
    if (on_top && strcmp(type, "fuse.quarkfs") == 0) {
        int alive = mount_answers(real);
        if (alive == 0)
            log_msg(LOG_ERR, "%s: the daemon of the quarkfs mount there is gone (killed or "
                    "crashed): remove the dead mount with `fusermount3 -uz %s` (or umount -l), "
                    "then mount again", mnt, mnt);
        else
            log_msg(LOG_ERR, "%s: already a quarkfs mount%s; unmount it first (umount %s)", mnt,
                    alive < 0 ? " (not answering)" : "", mnt);
        return 1;
    }
    /* The daemon opens SRC's files by path when they are first read: under the view those
     * paths would lead back into the view itself, and the read would wait for itself. */
    char rsrc[PATH_MAX];
    size_t lr = strlen(real);
    if (realpath(src, rsrc) && strncmp(rsrc, real, lr) == 0 &&
        (rsrc[lr] == '\0' || rsrc[lr] == '/' || lr == 1)) {
        fprintf(stderr, "quarkfs: %s: the mountpoint %s SRC %s: the view would hide the files "
                "it serves; mount it on another directory\n", mnt,
                rsrc[lr] ? "holds" : "is", src);
        return EXIT_USAGE;
    }
    DIR *d = S_ISDIR(st.st_mode) ? opendir(mnt) : NULL;
    size_t n = 0;
    for (struct dirent *de; d && (de = readdir(d)); )
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    if (d) closedir(d);
    if (n)
        log_msg(LOG_WARNING, "%s is not empty: the view hides its %zu entr%s until it is "
                "unmounted", mnt, n, n == 1 ? "y" : "ies");
    return 0;
}

/* One view of a --specs mount: its spec, format (empty: quark) and directory name. */
typedef struct view_def {
    char spec[64], format[64], name[160];
} view_def;

#define MAX_VIEWS 16

/* --specs S[:F],S[:F]... (',' or '+' between views: mount(8) splits -o lists at commas) into
 * defs; each pair checked. The directory is S, or S-F for a format other than quark. 0, or
 * EXIT_USAGE after a message. */
static int parse_specs(const char *list, view_def *defs, size_t *n)
{
    *n = 0;
    for (const char *p = list;;) {
        size_t len = strcspn(p, ",+");
        if (len == 0 || *n == MAX_VIEWS) {
            fprintf(stderr, "quarkfs: --specs %s: %s\n", list, len ? "more than 16 views"
                    : "an empty view (views are separated by ',' or '+')");
            return EXIT_USAGE;
        }
        view_def *d = &defs[(*n)++];
        memset(d, 0, sizeof *d);
        char item[64];
        snprintf(item, sizeof item, "%.*s", (int)(len < 63 ? len : 63), p);
        char *colon = strchr(item, ':');
        if (colon) *colon = '\0';
        snprintf(d->spec, sizeof d->spec, "%.63s", item);
        if (colon) snprintf(d->format, sizeof d->format, "%.63s", colon + 1);
        const qfs_spec *spec;
        qfs_format fmt = QFS_FMT_QUARK;
        qfs_error err = {{0}};
        if (qfs_spec_lookup(d->spec, &spec, &err) ||
            (d->format[0] && qfs_format_lookup(d->format, &fmt, &err)) ||
            qfs_spec_check_format(spec, fmt, &err)) {
            fprintf(stderr, "quarkfs: --specs: %s\n", err.msg);
            return EXIT_USAGE;
        }
        if (fmt == QFS_FMT_QUARK) snprintf(d->name, sizeof d->name, "%.63s", d->spec);
        else snprintf(d->name, sizeof d->name, "%.63s-%.63s", d->spec, qfs_format_name(fmt));
        for (size_t k = 0; k + 1 < *n; k++)
            if (strcmp(defs[k].name, d->name) == 0) {
                fprintf(stderr, "quarkfs: --specs %s: the view %s is given twice\n", list,
                        d->name);
                return EXIT_USAGE;
            }
        if (!p[len]) return 0;
        p += len + 1;
    }
}

static int cmd_mount(int argc, char **argv)
{
    cli c = {.readahead_kb = DEFAULT_READAHEAD_KB, .max_background = DEFAULT_MAX_BACKGROUND,
             .cache_mem = DEFAULT_CACHE_MEM, .log_level = -1};
    struct fuse_cmdline_opts opts = {0};
    qfs_model *m = NULL;
    qfs_model *views[MAX_VIEWS] = {NULL};
    view_def defs[MAX_VIEWS];
    const char *names[MAX_VIEWS];
    size_t n_views = 1;
    qfs_engine *engine = NULL;
    struct fuse_session *se = NULL;
    qfs_fs fs = {.log = log_msg, .timeout = ATTR_TIMEOUT, .readahead_done = ATOMIC_FLAG_INIT,
                 .read_bufs_lock = PTHREAD_MUTEX_INITIALIZER,
                 .opens_lock = PTHREAD_MUTEX_INITIALIZER, .version = QUARKFS_VERSION};
    int rc = qfs_cli_parse(QFS_CMD_MOUNT, argc, argv, &c);
    if (rc || c.help_done) goto out;
    rc = EXIT_USAGE;
    if (c.n_pos > 2) {
        const char *near = qfs_cli_near_command(c.pos[0]);
        if (near && access(c.pos[0], F_OK) != 0)
            fprintf(stderr, "quarkfs: unknown command '%s'; did you mean %s? (commands: "
                    "export, inspect, warm, status)\n", c.pos[0], near);
        else
            fprintf(stderr, "quarkfs: unexpected argument '%s': a mount takes SRC and MNT "
                    "(see --help)\n", c.pos[2]);
        goto out;
    }
    if (c.n_pos < 2) {
        fprintf(stderr, c.n_pos ? "quarkfs: missing MNT: quarkfs [OPTIONS] SRC MNT (see "
                "--help)\n" : "Usage: quarkfs [OPTIONS] SRC MNT (see --help)\n");
        goto out;
    }
    if (c.log_level >= 0) qfs_log_level = c.log_level;
    {
        qfs_error err = {{0}};
        if (c.log_file && qfs_log_open_file(c.log_file, &err)) {
            fprintf(stderr, "quarkfs: %s\n", err.msg);
            rc = 1;
            goto out;
        }
    }
    {
        const qfs_spec *spec;
        qfs_format fmt;
        if (lookup_pair(&c, &spec, &fmt)) goto out;
    }
    /* Before libfuse, whose check of MNT would only say "bad mount point". */
    if ((rc = check_mountpoint(c.pos[0], c.pos[1]))) goto out;
    rc = EXIT_USAGE;
    if (add_fixed_options(&c.fuse, &c) || fuse_opt_add_arg(&c.fuse, c.pos[1])) goto out;
    if (fuse_parse_cmdline(&c.fuse, &opts) != 0) goto out;
    if (opts.show_help || opts.show_version) {   /* -o help: libfuse's own */
        if (opts.show_help) qfs_cli_usage(stdout);
        else qfs_cli_version();
        rc = 0;
        goto out;
    }
    if (!opts.mountpoint) {
        fprintf(stderr, "Usage: quarkfs [OPTIONS] SRC MNT (see --help)\n");
        goto out;
    }
    if (opts.debug && c.log_level < 0) qfs_log_level = LOG_DEBUG;
    if (opts.foreground) qfs_log_set_timestamps(true);
    /* Before the model is built: an option neither quarkfs nor libfuse knows is a usage error. */
    se = fuse_session_new(&c.fuse, &qfs_fs_ops, sizeof qfs_fs_ops, &fs);
    if (!se) {
        fprintf(stderr, "quarkfs: unknown or invalid mount option (see the message above; "
                "quarkfs --help lists the options)\n");
        goto out;
    }
    /* mount.fuse3 -o drop_privileges mounts before starting us and passes the /dev/fuse
     * descriptor: our fixed options never reach the kernel. */
    if (strncmp(opts.mountpoint, "/dev/fd/", 8) == 0 && !c.has_ro)
        log_msg(LOG_WARNING, "mounted by the caller (%s) without -o ro: the kernel mount is "
                "read-write (quarkfs still refuses every write); add "
                "ro,nosuid,nodev,default_permissions to the mount options", opts.mountpoint);
    if (c.ignored[0])
        log_msg(LOG_DEBUG, "ignored mount options: %s (the view is always ro,nodev,nosuid with "
                "fixed attributes; the others are for mount(8), fstab or systemd)", c.ignored);
    if (c.specs && (rc = parse_specs(c.specs, defs, &n_views))) goto out;
    /* Several views: one scan of the source (the first view's; the others reuse its tree and
     * parsed headers), one model each, all served by one engine, so they share cache_mem and
     * the disk cache. */
    for (size_t v = 0; v < n_views; v++) {
        if (c.specs) {
            c.spec = defs[v].spec;
            c.format = defs[v].format[0] ? defs[v].format : NULL;
            names[v] = defs[v].name;
        } else {
            names[v] = "";
        }
        if ((rc = build_model_like(&c, c.pos[0], true, v ? views[0] : NULL, &views[v])))
            goto out;
        if ((rc = check_source(&c, views[v]))) goto out;
    }
    m = views[0];
    rc = 1;
    log_msg(LOG_DEBUG, "spec %s, format %s, %zu exclude and %zu include globs, %d threads "
            "(0: all cores), cache_mem %zu, disk cache %s, readahead_kb %u, max_background %u",
            m->opts.spec->name, qfs_format_name(m->opts.format), c.n_excludes, c.n_includes,
            c.threads, c.cache_mem, c.no_disk_cache ? "off"
            : c.cache_dir ? c.cache_dir : "default directory", c.readahead_kb, c.max_background);
    fs.views = views;
    fs.view_names = names;
    fs.n_views = n_views;
    fs.max_background = c.max_background;
    fs.passthrough_off = c.no_passthrough;
    if (qfs_fs_set_views(&fs)) goto out;

    if (fuse_set_signal_handlers(se) != 0) goto out;
    if (fuse_session_mount(se, opts.mountpoint) != 0) {
        log_msg(LOG_ERR, "cannot mount on %s (see the message above; mounting needs /dev/fuse "
                "and root, CAP_SYS_ADMIN or fusermount3)", opts.mountpoint);
        goto out_signals;
    }
    if (c.readahead_kb) {
        fs.readahead_kb = c.readahead_kb;
        qfs_mountinfo_readahead_path(opts.mountpoint, fs.readahead_path, sizeof fs.readahead_path);
    }
    if (!opts.foreground) {
        if (!qfs_log_has_file() && !qfs_log_syslog_available())
            log_msg(LOG_WARNING, "no syslog daemon listens on /dev/log (a container?): the "
                    "daemon's messages are lost from now on; use -o log_file=PATH, or -f to "
                    "stay in the foreground and log to stderr");
        qfs_log_detach();
    }
    fuse_daemonize(opts.foreground);
    /* Threads and OpenMP start only now: neither survives the daemon's fork. */
    qfs_diskcache *disk = NULL;
    if (open_engine(&c, &engine, &disk)) goto out_unmount;
    fs.engine = engine;
    /* The view-file writer and its files/ index serve one model: with several views every
     * file is assembled (the disk cache still holds each view's tensors); op_init logs why. */
    fs.no_files_why = !disk ? "no disk cache to hold view files"
                      : c.no_view_files ? "-o view_files=off"
                      : n_views > 1 ? "several views (--specs) are mounted"
                      /* View files are per machine: on a store that nodes share, each node would
                       * add a copy of the view, which the kernel cannot pass through from FUSE. */
                      : qfs_diskcache_on_fuse(disk) && !c.view_files_on
                      ? "the cache directory is on a FUSE filesystem (a store that machines "
                        "share, as GlusterFS): each machine would keep its own copy of the view "
                        "there, which the kernel cannot serve by passthrough; -o view_files=on "
                        "keeps them"
                      : NULL;
    if (disk && !fs.no_files_why) {
        qfs_error err = {{0}};
        uint64_t budget = c.cache_size ? c.cache_size : DEFAULT_CACHE_SIZE;
        int vrc = qfs_viewfiles_open(disk, budget, m, &fs.files, &err);
        if (vrc && (vrc == -EROFS || vrc == -EACCES || qfs_diskcache_readonly(disk))) {
            /* the disk cache's own warning or note already says the directory takes no
             * writes (read-only, unreachable): files/ failing with it is no news */
            log_msg(LOG_INFO, "%s", err.msg);
            fs.no_files_why = "the disk cache directory takes no writes";
        } else if (vrc) {
            log_msg(LOG_WARNING, "%s", err.msg);
            fs.no_files_why = "files/ of the disk cache cannot be used (see the warning)";
        } else if (qfs_viewfiles_start(fs.files, m, engine, engine_log, NULL) != 0) {
            log_msg(LOG_WARNING, "view files: no writer thread; existing ones are still used");
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &fs.started);
    for (size_t v = 0; v < n_views; v++)
        log_msg(LOG_INFO, "serving %s on %s%s%s (spec %s, format %s, %llu -> %llu bytes of "
                "safetensors)", m->src_root, opts.mountpoint, c.specs ? "/" : "", names[v],
                views[v]->opts.spec->name, qfs_format_name(views[v]->opts.format),
                (unsigned long long)views[v]->src_bytes, (unsigned long long)views[v]->view_bytes);
    {
        char state[256];
        snprintf(state, sizeof state, "READY=1\nMAINPID=%d\nSTATUS=serving %s on %s",
                 (int)getpid(), m->src_root, opts.mountpoint);
        notify_systemd(state);
    }
    if (opts.singlethread) {
        rc = fuse_session_loop(se);
    } else {
        struct fuse_loop_config *cfg = fuse_loop_cfg_create();
        fuse_loop_cfg_set_clone_fd(cfg, opts.clone_fd);
        if (opts.max_idle_threads != UINT_MAX)   /* libfuse's "unset" */
            fuse_loop_cfg_set_idle_threads(cfg, opts.max_idle_threads);
        /* libfuse leaves max_threads at -1 unless -o max_threads=N is given. */
        bool unset = opts.max_threads == 0 || opts.max_threads > 100000;
        fuse_loop_cfg_set_max_threads(cfg, unset ? DEFAULT_MAX_THREADS : opts.max_threads);
        rc = fuse_session_loop_mt(se, cfg);
        fuse_loop_cfg_destroy(cfg);
    }
    notify_systemd("STOPPING=1");
    /* The loop returns the signal number after SIGTERM/SIGINT/SIGHUP: a clean unmount. */
    rc = rc < 0 ? 1 : 0;
out_unmount:
    fuse_session_unmount(se);
out_signals:
    fuse_remove_signal_handlers(se);
out:
    if (se) fuse_session_destroy(se);
    qfs_fs_free_open_files(&fs);
    qfs_viewfiles_close(fs.files);   /* its writer reads through the engine */
    qfs_engine_destroy(engine);
    for (size_t v = n_views; v-- > 0; ) qfs_model_close(views[v]);   /* views[0] owns headers */
    qfs_fs_free_read_buffers(&fs);
    free(fs.modes);
    free(fs.read_error_logged);
    free(fs.refusal_logged);
    free(fs.view_base);
    free(fs.view_bytes_served);
    free(opts.mountpoint);
    qfs_cli_free(&c);
    qfs_log_close();
    return rc;
}

/* ---- status, warm: ask a running mount (fs/client.c) ---- */

static int cmd_status(int argc, char **argv)
{
    cli c = {.log_level = -1};
    int rc = qfs_cli_parse(QFS_CMD_STATUS, argc, argv, &c);
    if (rc || c.help_done) goto out;
    rc = EXIT_USAGE;
    if (c.n_pos != 1) {
        fprintf(stderr, "Usage: quarkfs status MNT [--json]\n");
        goto out;
    }
    const char *mnt = c.pos[0];
    json_t *st;
    rc = 1;
    if (qfs_client_read(mnt, QFS_XATTR_STATUS, &st)) goto out;
    rc = 0;
    if (c.json) {
        json_dumpf(st, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        qfs_client_print_status(mnt, st);
    }
    json_decref(st);
out:
    qfs_cli_free(&c);
    return rc;
}

static int cmd_warm(int argc, char **argv)
{
    cli c = {.log_level = -1};
    int rc = qfs_cli_parse(QFS_CMD_WARM, argc, argv, &c);
    if (rc || c.help_done) goto out;
    rc = EXIT_USAGE;
    if (c.n_pos != 1) {
        fprintf(stderr, "Usage: quarkfs warm [--no-wait] MNT\n");
        goto out;
    }
    const char *mnt = c.pos[0];
    rc = qfs_client_warm(mnt, c.no_wait);
out:
    qfs_cli_free(&c);
    return rc;
}

/* A source truncated under the engine's mapping: the guard swaps in a zero page and the job
 * fails with a message. Any other SIGBUS is a real crash: default action. */
static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    /* Only a fault the kernel raised (si_code > 0; kill(2) gives <= 0) can be the guard's. */
    if (si->si_code > 0 && qfs_map_guard_fault(&map_guard, si->si_addr)) return;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* True if the handler is in place: only then may the engine read sources through mmap. */
static bool install_map_guard(void)
{
    qfs_map_guard_init(&map_guard);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGBUS, &sa, NULL) == 0;
}

/* libgomp reads OMP_WAIT_POLICY (and GOMP_SPINCOUNT) in its constructor, before main and
 * before any preinit function of ours can set it (measured: the spin count stays at 300000).
 * Unless the user chose, run again with it set to passive: the team's idle threads then sleep
 * instead of spinning on the cores that the FUSE threads and the readers need (20 % of the
 * CPU of a cold read here). The real path is run, not /proc/self/exe, so the process keeps
 * its name; on any failure, go on as we are. */
static void passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || (size_t)n >= sizeof self - 1) return;
    self[n] = '\0';
    if (access(self, X_OK) != 0) return;   /* e.g. "... (deleted)" */
    if (setenv("OMP_WAIT_POLICY", "passive", 0) != 0) return;
    execv(self, argv);
    unsetenv("OMP_WAIT_POLICY");
}

int main(int argc, char **argv)
{
    passive_openmp(argv);
    /* Large buffers go back to the system when freed, so the daemon's memory follows its
     * budget (glibc would otherwise raise the mmap threshold and keep freed tensors). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    qfs_log_detect_journal();
    map_guard_on = install_map_guard();
    if (argc < 2) {
        qfs_cli_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "status") == 0) return cmd_status(argc - 1, argv + 1);
    if (strcmp(argv[1], "warm") == 0) return cmd_warm(argc - 1, argv + 1);
    if (strcmp(argv[1], "inspect") == 0) return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(argv[1], "export") == 0) return cmd_export(argc - 1, argv + 1);
    /* A first word that is no option, no command and no path is a mistyped command, not a
     * SRC to mount ("quarkfs expor SRC OUT"). */
    if (argv[1][0] != '-' && !strchr(argv[1], '/') && access(argv[1], F_OK) != 0 &&
        errno == ENOENT) {
        const char *near = qfs_cli_near_command(argv[1]);
        fprintf(stderr, "quarkfs: unknown command '%s'%s%s%s (commands: export, inspect, warm, "
                "status; a mount is quarkfs [OPTIONS] SRC MNT)\n", argv[1],
                near ? "; did you mean " : "", near ? near : "", near ? "?" : "");
        return EXIT_USAGE;
    }
    return cmd_mount(argc, argv);
}
