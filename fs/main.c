/* quarkfs — command line: mount (default), export, inspect. The only file with global state. */
#include <errno.h>
#include <malloc.h>
#include <sys/xattr.h>
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
#include "quarkfs/diskcache.h"
#include "quarkfs/export.h"
#include "quarkfs/model.h"
#include "quarkfs/spec.h"

#ifndef QUARKFS_VERSION
#define QUARKFS_VERSION "unknown"
#endif

#define EXIT_USAGE 2
#define DEFAULT_CACHE_MEM ((size_t)1 << 30)
#define DEFAULT_CACHE_SIZE ((uint64_t)64 << 30)
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
"       quarkfs warm [--no-wait] MNT        quantize the whole view now, in the background\n"
"       quarkfs status MNT [--json]         a mount's counters\n"
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
"  --follow-symlinks    show what every symlink in SRC points to (default: only targets\n"
"                       inside SRC, or inside its Hugging Face cache repository, i.e. the\n"
"                       blobs/ of .../models--X/snapshots/REV)         or -o symlinks=all\n"
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
"  -o cache_dir=DIR     persistent cache, keyed by content, shareable between machines\n"
"                       (default /var/cache/quarkfs for root, else $XDG_CACHE_HOME/quarkfs)\n"
"  -o cache_size=SIZE   its budget, least recently used removed (default 64G)\n"
"  -o cache=off         no persistent cache\n"
"  -o readahead_kb=N    kernel readahead of the mount (default %d; needs root; 0 = keep)\n"
"  -o max_background=N  FUSE background requests (default %d)\n"
"  -o allow_other       let other users read the view (non-root: user_allow_other in\n"
"                       /etc/fuse.conf); permissions of the source files still apply\n"
"  -o OPT[,OPT...]      other FUSE mount options (fuse(8)); the view is always read-only\n"
"  Unmount with `fusermount3 -u MNT` (or `umount MNT` as root).\n"
"\n"
"Export options:\n"
"  --cache-mem SIZE, --cache-dir DIR, --cache-size SIZE, --no-cache\n"
"                       as -o cache_mem, cache_dir, cache_size, cache=off\n"
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
    char *cache_dir;          /* persistent cache (NULL: the default directory) */
    char *cache_size_str;
    size_t cache_size;
    char *cache_mode;         /* -o cache=on|off */
    bool no_disk_cache;
    bool json, error;
    int check_finite;
    bool follow_symlinks;
    char *symlinks_mode;      /* -o symlinks=inside|all */
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
                               "--cache-mem", "--cache-dir", "--cache-size"};
        int which = -1;
        const char *val = NULL;
        for (int k = 0; k < 8; k++) {
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
        if (which >= 5 && !allow_cache_mem) which = -2;
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
        case 6: c->cache_dir = strdup(val); continue;
        case 7:
            if (parse_size(val, &c->cache_size)) {
                fprintf(stderr, "quarkfs: --cache-size: '%s' is not a size (e.g. 50G)\n", val);
                return EXIT_USAGE;
            }
            continue;
        case -2:
            fprintf(stderr, "quarkfs: --cache-mem, --cache-dir, --cache-size and --no-cache are "
                    "export options; a mount takes -o cache_mem=, -o cache_dir=, -o cache_size=, "
                    "-o cache=off\n");
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
        if (allow_cache_mem && strcmp(a, "--no-cache") == 0) {
            c->no_disk_cache = true;
            continue;
        }
        if (strcmp(a, "--follow-symlinks") == 0) {
            c->follow_symlinks = true;
            continue;
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
        .follow_all_symlinks = c->follow_symlinks ||
                               (c->symlinks_mode && strcmp(c->symlinks_mode, "all") == 0),
    };
    if (qfs_model_open(src, &o, m, &err)) {
        log_msg(LOG_ERR, "%s", err.msg);
        return 1;
    }
    for (size_t i = 0; i < (*m)->n_warnings; i++) log_msg(LOG_WARNING, "%s", (*m)->warnings[i]);
    return 0;
}

/* ---- engine and persistent cache ---- */

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
static int open_engine(const cli *c, qfs_engine **out)
{
    qfs_error err = {{0}};
    qfs_diskcache *disk = NULL;
    bool off = c->no_disk_cache || (c->cache_mode && strcmp(c->cache_mode, "off") == 0);
    if (!off) {
        char dir[PATH_MAX];
        if (c->cache_dir) snprintf(dir, sizeof dir, "%s", c->cache_dir);
        else default_cache_dir(dir, sizeof dir);
        if (qfs_diskcache_open(dir, c->cache_size ? c->cache_size : DEFAULT_CACHE_SIZE, &disk,
                               &err)) {
            log_msg(LOG_WARNING, "%s; continuing with the memory cache only", err.msg);
            disk = NULL;
        }
    }
    qfs_engine_options o = {.cache_mem = c->cache_mem, .threads = c->threads, .disk = disk,
                            .log = engine_log};
    if (qfs_engine_create(&o, out, &err)) {
        qfs_diskcache_close(disk);
        log_msg(LOG_ERR, "%s", err.msg);
        return 1;
    }
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
        if (open_engine(&c, &e) == 0) {
            if (qfs_export(m, e, argv[2], export_progress, &p, &err)) {
                if (p.tty) fputc('\n', stderr);
                log_msg(LOG_ERR, "export to %s failed: %s", argv[2], err.msg);
                rc = 1;
            }
            qfs_engine_destroy(e);
        } else {
            rc = 1;
        }
        qfs_model_close(m);
    }
    free(c.excludes);
    free(c.includes);
    free(c.cache_dir);
    return rc;
}

/* ---- mount ---- */

#define MOUNT_OPT(t, p) {t, offsetof(cli, p), 1}
static const struct fuse_opt mount_opts[] = {
    MOUNT_OPT("spec=%s", fuse_spec),
    MOUNT_OPT("format=%s", fuse_format),
    MOUNT_OPT("cache_mem=%s", cache_mem_str),
    MOUNT_OPT("cache_dir=%s", cache_dir),
    MOUNT_OPT("cache_size=%s", cache_size_str),
    MOUNT_OPT("cache=%s", cache_mode),
    MOUNT_OPT("symlinks=%s", symlinks_mode),
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
    if (c.symlinks_mode && strcmp(c.symlinks_mode, "all") != 0 &&
        strcmp(c.symlinks_mode, "inside") != 0) {
        fprintf(stderr, "quarkfs: symlinks=%s: use symlinks=inside or symlinks=all\n",
                c.symlinks_mode);
        goto out;
    }
    if (c.cache_mode && strcmp(c.cache_mode, "on") != 0 && strcmp(c.cache_mode, "off") != 0) {
        fprintf(stderr, "quarkfs: cache=%s: use cache=on or cache=off\n", c.cache_mode);
        goto out;
    }
    if (c.cache_size_str && parse_size(c.cache_size_str, &c.cache_size)) {
        fprintf(stderr, "quarkfs: cache_size: '%s' is not a size (e.g. 50G)\n", c.cache_size_str);
        goto out;
    }
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
    if (open_engine(&c, &engine)) goto out_unmount;
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
    free(c.cache_dir);
    free(c.cache_size_str);
    free(c.cache_mode);
    free(c.symlinks_mode);
    free(c.excludes);
    free(c.includes);
    if (log_syslog) closelog();
    return rc;
}

/* ---- status, warm: ask a running mount through its root's extended attributes ---- */

static int read_mount_json(const char *mnt, const char *attr, json_t **out)
{
    char buf[65536];
    ssize_t n = getxattr(mnt, attr, buf, sizeof buf - 1);
    if (n < 0) {
        fprintf(stderr, "quarkfs: %s: %s (is it a quarkfs mountpoint?)\n", mnt,
                errno == ENODATA || errno == ENOTSUP ? "no quarkfs counters" : strerror(errno));
        return 1;
    }
    buf[n] = '\0';
    json_error_t jerr;
    *out = json_loads(buf, 0, &jerr);
    if (!*out) {
        fprintf(stderr, "quarkfs: %s: unreadable counters: %s\n", mnt, jerr.text);
        return 1;
    }
    return 0;
}

static json_int_t jint(const json_t *o, const char *path1, const char *path2)
{
    const json_t *v = json_object_get(o, path1);
    if (path2) v = json_object_get(v, path2);
    return json_integer_value(v);
}

static int cmd_status(int argc, char **argv)
{
    bool as_json = argc == 3 && strcmp(argv[1], "--json") == 0;
    const char *mnt = as_json ? argv[2] : argc == 3 && strcmp(argv[2], "--json") == 0 ? argv[1]
                    : argc == 2 ? argv[1] : NULL;
    as_json = as_json || (argc == 3 && strcmp(argv[2], "--json") == 0);
    if (!mnt || mnt[0] == '-') {
        fprintf(stderr, "Usage: quarkfs status MNT [--json]\n");
        return EXIT_USAGE;
    }
    json_t *st;
    if (read_mount_json(mnt, QFS_XATTR_STATUS, &st)) return 1;
    if (as_json) {
        json_dumpf(st, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        printf("%s: %s (spec %s, format %s), disk cache %s\n", mnt,
               json_string_value(json_object_get(st, "source")),
               json_string_value(json_object_get(st, "spec")),
               json_string_value(json_object_get(st, "format")),
               json_is_true(json_object_get(st, "disk_cache")) ? "on" : "off");
        const char *keys[] = {"tensors_quantized", "memory_hits", "disk_hits", "disk_writes",
                              "scales_computed", "evictions", "bytes_quantized", "bytes_served"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            printf("  %-20s %lld\n", keys[i], (long long)jint(st, keys[i], NULL));
        printf("  %-20s %.3f\n", "seconds_quantizing",
               json_real_value(json_object_get(st, "seconds_quantizing")));
        printf("  %-20s %lld/%lld tensors\n", "warm", (long long)jint(st, "warm", "tensors_done"),
               (long long)jint(st, "warm", "tensors"));
    }
    json_decref(st);
    return 0;
}

static int cmd_warm(int argc, char **argv)
{
    bool no_wait = argc == 3 && strcmp(argv[1], "--no-wait") == 0;
    const char *mnt = argc == 2 ? argv[1] : no_wait ? argv[2] : NULL;
    if (!mnt || mnt[0] == '-') {
        fprintf(stderr, "Usage: quarkfs warm [--no-wait] MNT\n");
        return EXIT_USAGE;
    }
    json_t *st;
    if (read_mount_json(mnt, QFS_XATTR_WARM, &st)) return 1;
    bool tty = isatty(STDERR_FILENO) == 1;
    double t0 = now_s(), last_line = 0;
    for (;;) {
        json_int_t n = jint(st, "warm", "tensors"), done = jint(st, "warm", "tensors_done");
        json_int_t bytes = jint(st, "warm", "bytes"), bdone = jint(st, "warm", "bytes_done");
        double el = now_s() - t0, rate = el > 0 ? (double)bdone / el : 0;
        bool finished = done >= n;
        if (tty || finished || el - last_line >= 10.0 || no_wait) {
            last_line = el;
            fprintf(stderr, "%swarm: %lld/%lld tensors, %.2f/%.2f GiB of source, %.0f MiB/s, %s %.0f s%s",
                    tty ? "\r\033[K" : "", (long long)done, (long long)n,
                    (double)bdone / (1 << 30), (double)bytes / (1 << 30), rate / (1 << 20),
                    finished ? "done in" : "about", finished ? el
                    : rate > 0 ? (double)(bytes - bdone) / rate : 0.0,
                    tty && !finished && !no_wait ? "" : "\n");
        }
        json_decref(st);
        if (finished || no_wait) return 0;
        struct timespec ts = {0, 250000000};
        nanosleep(&ts, NULL);
        if (read_mount_json(mnt, QFS_XATTR_STATUS, &st)) return 1;
    }
}

int main(int argc, char **argv)
{
    /* Large buffers go back to the system when freed, so the daemon's memory follows its
     * budget (glibc would otherwise raise the mmap threshold and keep freed tensors). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    if (argc >= 2 && strcmp(argv[1], "status") == 0) return cmd_status(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "warm") == 0) return cmd_warm(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "inspect") == 0) return cmd_inspect(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "export") == 0) return cmd_export(argc - 1, argv + 1);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    return cmd_mount(argc, argv);
}
