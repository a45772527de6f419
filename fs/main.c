/* quarkfs — command line: mount (default), export, inspect. The only file with global state. */
#include <errno.h>
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

#include "inspect.h"
#include "ops.h"
#include "quarkfs/export.h"
#include "quarkfs/model.h"
#include "quarkfs/spec.h"

#ifndef QUARKFS_VERSION
#define QUARKFS_VERSION "unknown"
#endif

#define EXIT_USAGE 2
#define DEFAULT_CACHE_MEM ((size_t)1 << 30)
#define DEFAULT_READAHEAD_KB 16384
#define DEFAULT_MAX_BACKGROUND 64
#define DEFAULT_MAX_THREADS 16
#define ATTR_TIMEOUT 86400.0

static bool log_syslog;   /* after daemonizing, logs go to syslog */

static void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_msg(int priority, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (log_syslog) {
        vsyslog(priority, fmt, ap);
    } else {
        fprintf(stderr, "quarkfs: %s", priority <= LOG_ERR ? "error: " :
                                       priority == LOG_WARNING ? "warning: " : "");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
}

static void usage(FILE *out)
{
    fprintf(out,
"Usage: quarkfs [OPTIONS] SRC MNT          mount a quantized, read-only view of SRC on MNT\n"
"       quarkfs export [OPTIONS] SRC OUT    write the same view into the new directory OUT\n"
"       quarkfs inspect [OPTIONS] SRC       list the view tensor by tensor (--json for JSON)\n"
"       quarkfs --list-specs | --help | --version\n"
"\n"
"SRC is a Hugging Face model directory (config.json, model*.safetensors, ...). In the view,\n"
"every model*.safetensors is quantized in AMD Quark's export layout, config.json gains a\n"
"quantization_config, model.safetensors.index.json maps the new tensor names, and every other\n"
"file passes through unchanged. Tensors are quantized when first read, then cached.\n"
"\n"
"View options (mount, export, inspect):\n"
"  --spec NAME          quantization spec (default int8; --list-specs)   or -o spec=NAME\n"
"  --format NAME        output format (default quark)                     or -o format=NAME\n"
"  --exclude GLOB       keep modules matching GLOB unquantized (repeatable; module = tensor\n"
"                       name without .weight, e.g. 'model.layers.0.*')\n"
"  --include GLOB       quantize only modules matching GLOB (repeatable)\n"
"  --threads N          OpenMP threads per tensor (default: all cores)     or -o threads=N\n"
"  --check-finite       read every candidate tensor first and leave those holding NaN/Inf\n"
"                       unquantized (else such a tensor makes its file fail with EIO when\n"
"                       read, since sizes are fixed from the headers)  or -o check_finite\n"
"\n"
"Mount options:\n"
"  -f                   stay in the foreground, log to stderr (else: daemon, log to syslog)\n"
"  -d                   debug: foreground and a trace of every FUSE request\n"
"  -s                   single-threaded FUSE loop\n"
"  -o cache_mem=SIZE    memory for quantized tensors, least recently used evicted\n"
"                       (default 1G; suffixes K, M, G, T)\n"
"  -o readahead_kb=N    kernel readahead of the mount (default %d; needs root; 0 = keep)\n"
"  -o max_background=N  FUSE background requests (default %d)\n"
"  -o allow_other       let other users read the view (non-root: user_allow_other in\n"
"                       /etc/fuse.conf); permissions of the source files still apply\n"
"  -o OPT[,OPT...]      other FUSE mount options (fuse(8)); the view is always read-only\n"
"  Unmount with `fusermount3 -u MNT` (or `umount MNT` as root).\n"
"\n"
"Export options:\n"
"  --cache-mem SIZE     as -o cache_mem (default 1G)\n"
"\n"
"Inspect options:\n"
"  --error              quantize every tensor and show its relative RMS error, SNR (dB) and\n"
"                       max abs error against the source, and the totals\n"
"  --spec all           one summary row per spec (with --error: choose a spec by its error)\n"
"  --json               print JSON instead of a table\n"
"\n"
"Exit status: 0 success (also after SIGTERM/SIGINT, which unmount cleanly); 1 the view\n"
"could not be built, mounted or written (the message names the file and the problem);\n"
"2 bad command line (including a mountpoint that does not exist).\n",
            DEFAULT_READAHEAD_KB, DEFAULT_MAX_BACKGROUND);
}

static void version(void)
{
    printf("quarkfs %s (libfuse %s, jansson %s)\n", QUARKFS_VERSION, fuse_pkgversion(),
           JANSSON_VERSION);
}

/* "512M", "1G", "1GiB", "4096": bytes. */
static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -EINVAL;
    unsigned long long mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1ull << 10; end++; break;
    case 'm': case 'M': mult = 1ull << 20; end++; break;
    case 'g': case 'G': mult = 1ull << 30; end++; break;
    case 't': case 'T': mult = 1ull << 40; end++; break;
    default: break;
    }
    if (mult > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)) end += strlen(end);
    if (*end || v > ULLONG_MAX / mult) return -EINVAL;
    *out = (size_t)(v * mult);
    return 0;
}

/* Options common to every subcommand. */
typedef struct cli {
    const char *spec, *format;
    const char **excludes, **includes;
    size_t n_excludes, n_includes;
    int threads;
    char *cache_mem_str;
    size_t cache_mem;
    bool json, error;
    int check_finite;
    /* mount */
    char *src, *mountpoint;
    unsigned readahead_kb, max_background;
    char *fuse_spec, *fuse_format;   /* -o spec= / -o format= */
    int fuse_threads;
} cli;

static int push(const char ***v, size_t *n, const char *s)
{
    const char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) return -ENOMEM;
    nv[(*n)++] = s;
    *v = nv;
    return 0;
}

/* Takes the view options out of argv (compacting it); returns 0, or EXIT_USAGE after a message,
 * or -1 for --help/--version/--list-specs handled. */
static int take_view_options(int *argc, char **argv, cli *c, bool allow_cache_mem, bool allow_json)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        const char *names[] = {"--spec", "--format", "--exclude", "--include", "--threads",
                               "--cache-mem"};
        int which = -1;
        const char *val = NULL;
        for (int k = 0; k < 6; k++) {
            size_t l = strlen(names[k]);
            if (strncmp(a, names[k], l) == 0 && (a[l] == '\0' || a[l] == '=')) {
                which = k;
                if (a[l] == '=') val = a + l + 1;
                else if (i + 1 < *argc) val = argv[++i];
                else {
                    fprintf(stderr, "quarkfs: %s needs a value (see --help)\n", names[k]);
                    return EXIT_USAGE;
                }
            }
        }
        if (which == 5 && !allow_cache_mem) which = -2;
        switch (which) {
        case 0: c->spec = val; continue;
        case 1: c->format = val; continue;
        case 2: if (push(&c->excludes, &c->n_excludes, val)) return 1; continue;
        case 3: if (push(&c->includes, &c->n_includes, val)) return 1; continue;
        case 4:
            c->threads = atoi(val);
            if (c->threads <= 0) {
                fprintf(stderr, "quarkfs: --threads needs a positive number, not '%s'\n", val);
                return EXIT_USAGE;
            }
            continue;
        case 5:
            if (parse_size(val, &c->cache_mem)) {
                fprintf(stderr, "quarkfs: --cache-mem: '%s' is not a size (e.g. 512M, 2G)\n", val);
                return EXIT_USAGE;
            }
            continue;
        case -2:
            fprintf(stderr, "quarkfs: use -o cache_mem=SIZE with a mount\n");
            return EXIT_USAGE;
        default: break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            version();
            return -1;
        }
        if (strcmp(a, "--list-specs") == 0) {
            qfs_spec_print_table(stdout);
            return -1;
        }
        if (strcmp(a, "--check-finite") == 0) {
            c->check_finite = 1;
            continue;
        }
        if (allow_json && strcmp(a, "--json") == 0) {
            c->json = true;
            continue;
        }
        if (allow_json && strcmp(a, "--error") == 0) {   /* inspect only, like --json */
            c->error = true;
            continue;
        }
        argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

static int build_model(const cli *c, const char *src, qfs_model **m)
{
    qfs_error err = {{0}};
    const qfs_spec *spec;
    qfs_format fmt;
    if (qfs_spec_lookup(c->spec ? c->spec : "int8", &spec, &err) ||
        qfs_format_lookup(c->format ? c->format : "quark", &fmt, &err) ||
        qfs_spec_check_format(spec, fmt, &err)) {
        fprintf(stderr, "quarkfs: %s\n", err.msg);
        return EXIT_USAGE;
    }
    qfs_model_options o = {
        .spec = spec, .format = fmt,
        .rules = {c->excludes, c->n_excludes, c->includes, c->n_includes},
        .check_finite = c->check_finite != 0,
    };
    if (qfs_model_open(src, &o, m, &err)) {
        log_msg(LOG_ERR, "%s", err.msg);
        return 1;
    }
    for (size_t i = 0; i < (*m)->n_warnings; i++) log_msg(LOG_WARNING, "%s", (*m)->warnings[i]);
    return 0;
}

/* ---- inspect ---- */

/* `inspect --spec all`: one summary row per spec (in --format if it takes the spec, else in the
 * first format that does). */
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
        printf("%-12s %-19s %9s %8s %10s %8s %10s\n", "SPEC", "FORMAT", "QUANTIZED", "SIZE",
               o->error ? "REL RMS" : "", o->error ? "SNR dB" : "", o->error ? "MAX ABS" : "");
    json_t *rows = json_array();
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        qfs_format f = want;
        for (int k = 0; !qfs_spec_format_ok(&all[i], f) && k < QFS_FMT_COUNT; k++) f = (qfs_format)k;
        c->spec = all[i].name;
        c->format = qfs_format_name(f);
        qfs_model *m;
        if ((rc = build_model(c, src, &m))) return rc;
        qfs_inspect_totals t;
        qfs_inspect_totals_of(m, o, &t);
        if (t.failed) rc = 1;
        qfs_model_close(m);
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
            json_array_append_new(rows, row);
            continue;
        }
        printf("%-12s %-19s %5zu/%-3zu %7.1f%%", all[i].name, qfs_format_name(f), t.quantized,
               t.tensors, t.src_bytes ? 100.0 * (double)t.view_bytes / (double)t.src_bytes : 0.0);
        if (o->error && t.quantized)
            printf(" %10.3e %8.2f %10.3g", qfs_inspect_rel_rms(&t.error),
                   qfs_inspect_snr_db(&t.error), t.error.max_abs);
        else if (o->error)
            printf(" %10s %8s %10s", "-", "-", "-");
        printf("\n");
    }
    if (o->json) {
        json_dumpf(rows, stdout, JSON_INDENT(2));
        putchar('\n');
    }
    json_decref(rows);
    return rc;
}

static int cmd_inspect(int argc, char **argv)
{
    cli c = {0};
    int rc = take_view_options(&argc, argv, &c, false, true);
    if (rc) return rc < 0 ? 0 : rc;
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "Usage: quarkfs inspect [--spec S|all] [--format F] [--exclude G] "
                "[--include G] [--error] [--json] SRC\n");
        return EXIT_USAGE;
    }
    qfs_inspect_options o = {.json = c.json, .error = c.error, .threads = c.threads};
    if (c.spec && strcmp(c.spec, "all") == 0) {
        rc = inspect_all_specs(&c, argv[1], &o);
    } else {
        qfs_model *m;
        rc = build_model(&c, argv[1], &m);
        if (rc == 0) {
            if (qfs_inspect_print(m, &o, stdout)) rc = 1;
            qfs_model_close(m);
        }
    }
    free(c.excludes);
    free(c.includes);
    return rc;
}

/* ---- export ---- */

typedef struct progress { bool tty; double last; } progress;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void export_progress(void *ctx, uint64_t done, uint64_t total, const char *file)
{
    progress *p = ctx;
    double t = now_s();
    if (!p->tty || (t - p->last < 0.2 && done < total)) return;
    p->last = t;
    fprintf(stderr, "\r\033[Kexport: %6.1f%%  %llu / %llu MiB  %s", total ? 100.0 * (double)done / (double)total : 100.0,
            (unsigned long long)(done >> 20), (unsigned long long)(total >> 20), file);
    if (done >= total) fputc('\n', stderr);
}

static int cmd_export(int argc, char **argv)
{
    cli c = {.cache_mem = DEFAULT_CACHE_MEM};
    int rc = take_view_options(&argc, argv, &c, true, false);
    if (rc) return rc < 0 ? 0 : rc;
    if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-') {
        fprintf(stderr, "Usage: quarkfs export [--spec S] [--format F] [--exclude G] [--include G] "
                "[--threads N] [--cache-mem SIZE] SRC OUT\n");
        return EXIT_USAGE;
    }
    qfs_model *m;
    rc = build_model(&c, argv[1], &m);
    if (rc == 0) {
        qfs_error err = {{0}};
        qfs_engine *e;
        progress p = {.tty = isatty(STDERR_FILENO) == 1};
        if (qfs_engine_create(c.cache_mem, c.threads, &e, &err) == 0) {
            if (qfs_export(m, e, argv[2], export_progress, &p, &err)) {
                if (p.tty) fputc('\n', stderr);
                log_msg(LOG_ERR, "export to %s failed: %s", argv[2], err.msg);
                rc = 1;
            }
            qfs_engine_destroy(e);
        } else {
            log_msg(LOG_ERR, "%s", err.msg);
            rc = 1;
        }
        qfs_model_close(m);
    }
    free(c.excludes);
    free(c.includes);
    return rc;
}

/* ---- mount ---- */

#define MOUNT_OPT(t, p) {t, offsetof(cli, p), 1}
static const struct fuse_opt mount_opts[] = {
    MOUNT_OPT("spec=%s", fuse_spec),
    MOUNT_OPT("format=%s", fuse_format),
    MOUNT_OPT("cache_mem=%s", cache_mem_str),
    MOUNT_OPT("threads=%d", fuse_threads),
    MOUNT_OPT("readahead_kb=%u", readahead_kb),
    MOUNT_OPT("max_background=%u", max_background),
    {"check_finite", offsetof(cli, check_finite), 1},
    FUSE_OPT_END
};

/* The first non-option argument is SRC (taken out), the second the mountpoint (kept). */
static int mount_arg(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    cli *c = data;
    if (key != FUSE_OPT_KEY_NONOPT) return 1;
    if (!c->src) {
        c->src = strdup(arg);
        return 0;
    }
    if (!c->mountpoint) {
        c->mountpoint = strdup(arg);
        return 1;
    }
    fprintf(stderr, "quarkfs: unexpected argument '%s' (see --help)\n", arg);
    return -1;
}

/* Finds the bdi readahead file of the mount at mountpoint (in mountinfo, so no request to
 * ourselves is needed); "" if not found. */
static void find_readahead_path(const char *mountpoint, char *out, size_t len)
{
    char real[PATH_MAX];
    out[0] = '\0';
    if (!realpath(mountpoint, real)) return;
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char mp[PATH_MAX], majmin[64];
        if (sscanf(line, "%*s %*s %63s %*s %4095s", majmin, mp) != 2) continue;
        if (strcmp(mp, real) == 0 && strstr(line, " - fuse"))
            snprintf(out, len, "/sys/class/bdi/%s/read_ahead_kb", majmin);
    }
    fclose(f);
}

static int cmd_mount(int argc, char **argv)
{
    cli c = {.readahead_kb = DEFAULT_READAHEAD_KB, .max_background = DEFAULT_MAX_BACKGROUND,
             .cache_mem = DEFAULT_CACHE_MEM};
    int rc = take_view_options(&argc, argv, &c, false, false);
    if (rc) return rc < 0 ? 0 : rc;
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts opts = {0};
    qfs_model *m = NULL;
    qfs_engine *engine = NULL;
    struct fuse_session *se = NULL;
    qfs_fs fs = {.log = log_msg, .timeout = ATTR_TIMEOUT, .readahead_done = ATOMIC_FLAG_INIT};
    rc = EXIT_USAGE;
    if (fuse_opt_parse(&args, &c, mount_opts, mount_arg) != 0) goto out;
    if (fuse_opt_add_arg(&args, "-oro,default_permissions,fsname=quarkfs,subtype=quarkfs")) goto out;
    if (fuse_parse_cmdline(&args, &opts) != 0) goto out;
    if (opts.show_help) {
        usage(stdout);
        rc = 0;
        goto out;
    }
    if (opts.show_version) {
        version();
        rc = 0;
        goto out;
    }
    if (!c.src || !opts.mountpoint) {
        fprintf(stderr, "Usage: quarkfs [OPTIONS] SRC MNT (see --help)\n");
        goto out;
    }
    if (c.fuse_spec) c.spec = c.fuse_spec;
    if (c.fuse_format) c.format = c.fuse_format;
    if (c.fuse_threads > 0) c.threads = c.fuse_threads;
    if (c.cache_mem_str && parse_size(c.cache_mem_str, &c.cache_mem)) {
        fprintf(stderr, "quarkfs: cache_mem: '%s' is not a size (e.g. 512M, 2G)\n", c.cache_mem_str);
        goto out;
    }
    rc = build_model(&c, c.src, &m);
    if (rc) goto out;
    rc = 1;
    fs.model = m;
    fs.max_background = c.max_background;
    fs.read_error_logged = calloc(m->n_entries, sizeof *fs.read_error_logged);
    if (!fs.read_error_logged) goto out;
    for (size_t i = 0; i < m->n_entries; i++) atomic_flag_clear(&fs.read_error_logged[i]);

    se = fuse_session_new(&args, &qfs_fs_ops, sizeof qfs_fs_ops, &fs);
    if (!se) goto out;
    if (fuse_set_signal_handlers(se) != 0) goto out;
    if (fuse_session_mount(se, opts.mountpoint) != 0) {
        log_msg(LOG_ERR, "cannot mount on %s (see the message above)", opts.mountpoint);
        goto out_signals;
    }
    if (c.readahead_kb) {
        fs.readahead_kb = c.readahead_kb;
        find_readahead_path(opts.mountpoint, fs.readahead_path, sizeof fs.readahead_path);
    }
    if (!opts.foreground) {
        openlog("quarkfs", LOG_PID, LOG_DAEMON);
        log_syslog = true;
    }
    fuse_daemonize(opts.foreground);
    /* Threads and OpenMP start only now: neither survives the daemon's fork. */
    qfs_error err = {{0}};
    if (qfs_engine_create(c.cache_mem, c.threads, &engine, &err)) {
        log_msg(LOG_ERR, "%s", err.msg);
        goto out_unmount;
    }
    fs.engine = engine;
    log_msg(LOG_INFO, "serving %s on %s (spec %s, format %s, %llu -> %llu bytes of safetensors)",
            m->src_root, opts.mountpoint, m->opts.spec->name, qfs_format_name(m->opts.format),
            (unsigned long long)m->src_bytes, (unsigned long long)m->view_bytes);
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
    /* The loop returns the signal number after SIGTERM/SIGINT/SIGHUP: a clean unmount. */
    rc = rc < 0 ? 1 : 0;
out_unmount:
    fuse_session_unmount(se);
out_signals:
    fuse_remove_signal_handlers(se);
out:
    if (se) fuse_session_destroy(se);
    qfs_engine_destroy(engine);
    qfs_model_close(m);
    free(fs.read_error_logged);
    free(opts.mountpoint);
    fuse_opt_free_args(&args);
    free(c.src);
    free(c.mountpoint);
    free(c.fuse_spec);
    free(c.fuse_format);
    free(c.cache_mem_str);
    free(c.excludes);
    free(c.includes);
    if (log_syslog) closelog();
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "inspect") == 0) return cmd_inspect(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "export") == 0) return cmd_export(argc - 1, argv + 1);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    return cmd_mount(argc, argv);
}
