/* quarkfs — command line: mount (default), export, inspect. The only file with global state. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
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
#include "quarkfs/io.h"
#include "quarkfs/layout.h"
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

static qfs_map_guard map_guard;   /* the engine reads sources through guarded mappings */
static bool map_guard_on;         /* its SIGBUS handler is installed */
static bool log_syslog;   /* after daemonizing, logs go to syslog */
static bool log_journal;  /* stderr is systemd's journal: prefix lines with <priority> */
static int log_level = LOG_INFO;   /* -o log=LEVEL / --log LEVEL: messages above it are dropped */

/* True if this error or warning text was logged before: the engine reports a failed tensor
 * and so does the read that needed it; each distinct message is logged once. */
static bool logged_before(const char *msg)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static uint64_t seen[1024];   /* FNV-1a hashes, the oldest overwritten first */
    static size_t n_seen;
    uint64_t h = 14695981039346656037ull;
    for (const char *p = msg; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    bool found = false;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_seen && i < 1024 && !found; i++) found = seen[i] == h;
    if (!found) seen[n_seen++ % 1024] = h;
    pthread_mutex_unlock(&lock);
    return found;
}

static void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_msg(int priority, const char *fmt, ...)
{
    if (priority > log_level) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (priority <= LOG_WARNING && logged_before(msg)) return;
    /* Messages carry tensor and file names: their control characters must not reach a
     * terminal or split a log line (qfs_escape_ctl). */
    char safe[4 * sizeof msg];
    qfs_escape_ctl(msg, safe, sizeof safe);
    if (log_syslog) {
        syslog(priority, "%s", safe);
        return;
    }
    char prefix[8] = "";
    if (log_journal) snprintf(prefix, sizeof prefix, "<%d>", priority);
    fprintf(stderr, "%squarkfs: %s%s\n", prefix, priority <= LOG_ERR ? "error: " :
            priority == LOG_WARNING ? "warning: " : priority == LOG_DEBUG ? "debug: " : "", safe);
}

/* "error", "warning", "info", "debug" (and the syslog spellings err, warn): a syslog priority,
 * or -1. */
static int parse_log_level(const char *s)
{
    static const struct { const char *name; int level; } names[] = {
        {"error", LOG_ERR}, {"err", LOG_ERR}, {"warning", LOG_WARNING}, {"warn", LOG_WARNING},
        {"info", LOG_INFO}, {"debug", LOG_DEBUG}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) return names[i].level;
    return -1;
}

/* Under systemd, stderr is a stream to the journal ($JOURNAL_STREAM names its device:inode):
 * a "<N>" prefix gives each line its priority there. */
static void detect_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat sb;
    if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &sb) == 0)
        log_journal = (unsigned long long)sb.st_dev == dev && (unsigned long long)sb.st_ino == ino;
}

static void usage(FILE *out)
{
    fprintf(out,
"Usage: quarkfs [OPTIONS] SRC MNT          mount a quantized, read-only view of SRC on MNT\n"
"       mount -t fuse.quarkfs SRC MNT [-o OPT,...]   the same, through mount(8) or /etc/fstab\n"
"       quarkfs export [OPTIONS] SRC OUT    write the same view into the new directory OUT\n"
"       quarkfs inspect [OPTIONS] SRC       list the view tensor by tensor (--json for JSON)\n"
"       quarkfs warm [--no-wait] MNT        quantize the whole view now, in the background\n"
"       quarkfs status MNT [--json]         a mount's counters\n"
"       quarkfs --list-specs | --help | --version\n"
"       umount MNT  (or fusermount3 -u MNT) unmount\n"
"\n"
"SRC is a Hugging Face model directory (config.json, model*.safetensors, ...; a hub cache\n"
"snapshot whose files are symlinks into blobs/ works). In the view, every model*.safetensors\n"
"is quantized in AMD Quark's export layout, config.json gains a quantization_config,\n"
"model.safetensors.index.json maps the new tensor names, and every other file passes through\n"
"unchanged. Tensors are quantized when first read, then cached.\n"
"\n"
"View options (mount, export, inspect); on a mount each is also an -o option:\n"
"  --spec NAME          quantization spec (default int8; see --list-specs)  -o spec=NAME\n"
"  --format NAME        quark (default), awq, fp8, compressed-tensors       -o format=NAME\n"
"  --exclude GLOB       keep modules matching GLOB unquantized; repeatable; the module is the\n"
"                       tensor name without .weight, e.g. 'model.layers.0.*'\n"
"                                                               -o exclude=GLOB[:GLOB...]\n"
"  --include GLOB       quantize only modules matching GLOB (repeatable)\n"
"                                                               -o include=GLOB[:GLOB...]\n"
"                       (-o exclude/include are repeatable too; ':' separates several globs)\n"
"  --threads N          OpenMP threads per tensor (default: all cores)     -o threads=N\n"
"                       (idle ones sleep: OMP_WAIT_POLICY=passive unless set)\n"
"  --follow-symlinks    show what every symlink in SRC points to (default: only targets\n"
"                       inside SRC, or inside its Hugging Face cache repository, i.e. the\n"
"                       blobs/ of .../models--X/snapshots/REV)         -o symlinks=all\n"
"  --check-finite       read every candidate tensor first and leave those holding NaN/Inf\n"
"                       unquantized (else such a tensor makes its file fail with EIO when\n"
"                       read, since sizes are fixed from the headers)      -o check_finite\n"
"\n"
"Cache options (mount: -o only; export: --cache-mem, --cache-dir, --cache-size, --no-cache):\n"
"  -o cache_mem=SIZE    memory for quantized tensors, least recently used evicted\n"
"                       (default 1G; suffixes K, M, G, T); evicted buffers are reused\n"
"  -o cache_dir=DIR     persistent cache, keyed by content, shareable between machines\n"
"                       (default /var/cache/quarkfs for root, else $XDG_CACHE_HOME/quarkfs)\n"
"  -o cache_size=SIZE   its budget, least recently used removed (default 64G)\n"
"  -o cache=on|off      off: no persistent cache (default on)\n"
"\n"
"Logging (mount, export, inspect):\n"
"  -o log=LEVEL, --log LEVEL\n"
"                       error, warning, info (default) or debug. In the foreground (-f, and\n"
"                       export/inspect) messages go to stderr (with <N> priority prefixes\n"
"                       when stderr is systemd's journal); a daemon -- also every mount made\n"
"                       by mount(8) -- logs to syslog (facility daemon, tag quarkfs).\n"
"                       Each refusal and each fallback is logged once, naming the file.\n"
"\n"
"Mount options:\n"
"  -f                   stay in the foreground, log to stderr (else: daemon, log to syslog)\n"
"  -d                   debug: foreground, a trace of every FUSE request, log=debug\n"
"  -s                   single-threaded FUSE loop\n"
"  -o readahead_kb=N    kernel readahead of the mount (default %d; needs root; 0 = keep)\n"
"  -o max_background=N  FUSE background requests (default %d)\n"
"  -o max_threads=N     FUSE worker threads (default %d)\n"
"  -o allow_other       let other users read the view (non-root: user_allow_other in\n"
"                       /etc/fuse.conf); the source's permissions (ACLs included) are\n"
"                       checked at each open by another user\n"
"  -o OPT[,OPT...]      other FUSE and mount options (fuse(8)): allow_root, noexec,\n"
"                       noatime, fsname=NAME, ...; a comma inside a value is written \\,\n"
"  Always set: ro,nodev,nosuid,default_permissions; type fuse.quarkfs; source (fsname) SRC.\n"
"  Accepted and ignored: rw, dev, suid (the view stays read-only, nodev, nosuid); relatime,\n"
"  strictatime, lazytime, [no]diratime, [no]mand, silent, loud, [no]iversion, [no]symfollow\n"
"  (the view's attributes are fixed); nonempty (libfuse 3 always allows it); defaults,\n"
"  auto, noauto, user, users, nouser, owner, group, _netdev, nofail, comment=*, x-* (for\n"
"  mount(8), fstab and systemd). Refused: remount (unmount and mount again), a MNT that is\n"
"  already a quarkfs mount, any unknown option (exit 2).\n"
"\n"
"mount(8) and /etc/fstab: mount.fuse3 runs `quarkfs SRC MNT -o OPTS` with mount(8)'s\n"
"cleared PATH, so quarkfs must be in /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin,\n"
"/sbin or /bin (meson install puts it in PREFIX/bin, default /usr/local/bin):\n"
"  mount -t fuse.quarkfs /srv/hf/llama /models/llama-int8 -o spec=int8,allow_other\n"
"  /srv/hf/llama /models/llama-int8 fuse.quarkfs spec=int8,allow_other,nofail 0 0\n"
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
"Exit status (mount(8) passes it through):\n"
"  0  success; for a mount: mounted (a daemon returns once MNT is mounted), or the foreground\n"
"     process stopped cleanly after an unmount, SIGTERM or SIGINT\n"
"  1  the view could not be built, mounted or written: the message names the file (and the\n"
"     tensor) and the problem; a broken shard is not this: it is logged and answers EIO\n"
"  2  bad command line: unknown command or option, bad value, invalid spec/format pair,\n"
"     missing or nonexistent MNT\n"
"\n"
"Documentation: man quarkfs; examples (systemd units, container recipe) in\n"
"PREFIX/share/doc/quarkfs/examples.\n",
            DEFAULT_READAHEAD_KB, DEFAULT_MAX_BACKGROUND, DEFAULT_MAX_THREADS);
}

static void version(void)
{
#if JANSSON_VERSION_HEX >= 0x020d00
    const char *jansson = jansson_version_str();   /* the library in use, not the header */
#else
    const char *jansson = JANSSON_VERSION;
#endif
    printf("quarkfs %s (libfuse %s, jansson %s)\n", QUARKFS_VERSION, fuse_pkgversion(), jansson);
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
    char *log_str;            /* -o log= */
    char **owned;             /* globs of -o exclude=/include= (the others point into argv) */
    size_t n_owned;
    bool has_fsname, refused; /* -o fsname= given; an option was refused (message printed) */
    bool has_ro;              /* -o ro given (matters when mount.fuse3 mounted for us) */
    char ignored[512];        /* accepted-and-ignored mount options, logged at debug level */
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
                               "--cache-mem", "--cache-dir", "--cache-size", "--log"};
        int which = -1;
        const char *val = NULL;
        for (int k = 0; k < 9; k++) {
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
        if (which >= 5 && which <= 7 && !allow_cache_mem) which = -2;
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
        case 8:
            if ((log_level = parse_log_level(val)) < 0) {
                fprintf(stderr, "quarkfs: --log %s: use error, warning, info or debug\n", val);
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

/* Every fallback of the plan, once, with its file and reason: a weight the selection picked
 * that the spec cannot take (its shape) or whose output names are taken stays in its source
 * dtype -- a warning, with the remedy. Tensors left alone by design (norms, embeddings,
 * lm_head, --exclude, ...) are listed at debug level. NaN/Inf ones are model warnings. */
static void log_plan(const qfs_model *m)
{
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
                char why[256];
                qfs_layout l;
                qfs_layout_for(m->opts.spec, m->opts.format, s->dtype, s->shape[0], s->shape[1],
                               &l, why, sizeof why);
                size_t n = strlen(s->name);
                int module = (int)(n > 7 && strcmp(s->name + n - 7, ".weight") == 0 ? n - 7 : n);
                log_msg(LOG_WARNING, "%s: tensor '%s' [%llu, %llu] stays %s: spec %s cannot take "
                        "it: %s. `quarkfs inspect --spec all SRC` compares the specs; --exclude "
                        "'%.*s' keeps it unquantized without this warning", e->src_path, s->name,
                        (unsigned long long)s->shape[0], (unsigned long long)s->shape[1], dt,
                        m->opts.spec->name, why, module, s->name);
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
}

static int build_model(const cli *c, const char *src, bool verbose, qfs_model **m)
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
    if (verbose) log_plan(*m);
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
        if ((rc = build_model(c, src, false, &m))) return rc;
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
        rc = build_model(&c, argv[1], false, &m);
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
    char safe[1024];
    fprintf(stderr, "\r\033[Kexport: %6.1f%%  %llu / %llu MiB  %s", total ? 100.0 * (double)done / (double)total : 100.0,
            (unsigned long long)(done >> 20), (unsigned long long)(total >> 20),
            qfs_escape_ctl(file, safe, sizeof safe));
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
    rc = build_model(&c, argv[1], true, &m);
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

enum {
    KEY_EXCLUDE = 1,
    KEY_INCLUDE,
    KEY_FSTAB,     /* for mount(8), fstab or systemd: nothing for the filesystem to do */
    KEY_FIXED,     /* cannot apply to a read-only view whose attributes are fixed */
    KEY_REMOUNT,
};

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
    MOUNT_OPT("log=%s", log_str),
    {"check_finite", offsetof(cli, check_finite), 1},
    FUSE_OPT_KEY("exclude=", KEY_EXCLUDE),
    FUSE_OPT_KEY("include=", KEY_INCLUDE),
    FUSE_OPT_KEY("defaults", KEY_FSTAB),
    FUSE_OPT_KEY("auto", KEY_FSTAB),
    FUSE_OPT_KEY("noauto", KEY_FSTAB),
    FUSE_OPT_KEY("user", KEY_FSTAB),
    FUSE_OPT_KEY("users", KEY_FSTAB),
    FUSE_OPT_KEY("nouser", KEY_FSTAB),
    FUSE_OPT_KEY("owner", KEY_FSTAB),
    FUSE_OPT_KEY("group", KEY_FSTAB),
    FUSE_OPT_KEY("_netdev", KEY_FSTAB),
    FUSE_OPT_KEY("nofail", KEY_FSTAB),
    FUSE_OPT_KEY("comment=", KEY_FSTAB),
    FUSE_OPT_KEY("rw", KEY_FIXED),
    FUSE_OPT_KEY("dev", KEY_FIXED),
    FUSE_OPT_KEY("suid", KEY_FIXED),
    FUSE_OPT_KEY("relatime", KEY_FIXED),
    FUSE_OPT_KEY("norelatime", KEY_FIXED),
    FUSE_OPT_KEY("strictatime", KEY_FIXED),
    FUSE_OPT_KEY("nostrictatime", KEY_FIXED),
    FUSE_OPT_KEY("lazytime", KEY_FIXED),
    FUSE_OPT_KEY("nolazytime", KEY_FIXED),
    FUSE_OPT_KEY("diratime", KEY_FIXED),
    FUSE_OPT_KEY("nodiratime", KEY_FIXED),
    FUSE_OPT_KEY("mand", KEY_FIXED),
    FUSE_OPT_KEY("nomand", KEY_FIXED),
    FUSE_OPT_KEY("silent", KEY_FIXED),
    FUSE_OPT_KEY("loud", KEY_FIXED),
    FUSE_OPT_KEY("iversion", KEY_FIXED),
    FUSE_OPT_KEY("noiversion", KEY_FIXED),
    FUSE_OPT_KEY("symfollow", KEY_FIXED),
    FUSE_OPT_KEY("nosymfollow", KEY_FIXED),
    FUSE_OPT_KEY("nonempty", KEY_FIXED),   /* libfuse 2's; libfuse 3 always allows it */
    FUSE_OPT_KEY("remount", KEY_REMOUNT),
    FUSE_OPT_END
};

static void note_ignored(cli *c, const char *opt)
{
    size_t n = strlen(c->ignored);
    snprintf(c->ignored + n, sizeof c->ignored - n, "%s%s", n ? "," : "", opt);
}

/* -o exclude=GLOB[:GLOB...] / -o include=...: each glob is added to the selection rules. */
static int add_globs(cli *c, const char *list, bool exclude)
{
    const char *what = exclude ? "exclude" : "include";
    for (const char *p = list;; ) {
        size_t len = strcspn(p, ":");
        if (len == 0) {
            fprintf(stderr, "quarkfs: -o %s=%s: an empty glob (globs are separated by ':')\n",
                    what, list);
            c->refused = true;
            return -1;
        }
        char *g = strndup(p, len), **owned = realloc(c->owned, (c->n_owned + 1) * sizeof *owned);
        if (owned) c->owned = owned;
        if (!g || !owned || push(exclude ? &c->excludes : &c->includes,
                                 exclude ? &c->n_excludes : &c->n_includes, g)) {
            free(g);
            return -1;
        }
        c->owned[c->n_owned++] = g;
        if (!p[len]) return 0;
        p += len + 1;
    }
}

/* The first non-option argument is SRC (taken out), the second the mountpoint (kept); the
 * options quarkfs handles itself (see mount_opts) are taken out. */
static int mount_arg(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    cli *c = data;
    switch (key) {
    case KEY_EXCLUDE: return add_globs(c, arg + strlen("exclude="), true);
    case KEY_INCLUDE: return add_globs(c, arg + strlen("include="), false);
    case KEY_FSTAB:
    case KEY_FIXED:
        note_ignored(c, arg);
        return 0;
    case KEY_REMOUNT:
        fprintf(stderr, "quarkfs: -o remount is not supported: the view's options are fixed "
                "when it is mounted; unmount it and mount it again\n");
        c->refused = true;
        return -1;
    case FUSE_OPT_KEY_OPT:
        if (strncmp(arg, "x-", 2) == 0) {   /* x-systemd.*, x-gvfs-*, ...: for userspace */
            note_ignored(c, arg);
            return 0;
        }
        if (strncmp(arg, "fsname=", 7) == 0) c->has_fsname = true;
        if (strcmp(arg, "ro") == 0) c->has_ro = true;
        return 1;
    case FUSE_OPT_KEY_NONOPT:
        break;
    default:
        return 1;
    }
    if (!c->src) {
        c->src = strdup(arg);
        return 0;
    }
    if (!c->mountpoint) {
        c->mountpoint = strdup(arg);
        return 1;
    }
    fprintf(stderr, "quarkfs: unexpected argument '%s' (see --help)\n", arg);
    c->refused = true;
    return -1;
}

/* The topmost mount on mountpoint (an absolute path without symlinks), from mountinfo (so no
 * request reaches a FUSE daemon, ours or a hung one): its device and type; false if none. */
static bool topmost_mount(const char *mountpoint, char *majmin, size_t mm_len, char *type,
                          size_t type_len)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f) return false;
    bool found = false;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char mp[PATH_MAX], mm[64], ty[64];
        const char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*s %*s %63s %*s %4095s", mm, mp) != 2 ||
            sscanf(sep + 3, "%63s", ty) != 1)
            continue;
        /* mountinfo writes space, tab, newline and backslash as \ooo */
        char *w = mp;
        for (const char *r = mp; *r; w++) {
            if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
                r[3] >= '0' && r[3] <= '7') {
                *w = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                r += 4;
            } else {
                *w = *r++;
            }
        }
        *w = '\0';
        if (strcmp(mp, mountpoint) != 0) continue;
        found = true;
        snprintf(majmin, mm_len, "%s", mm);
        snprintf(type, type_len, "%s", ty);
    }
    fclose(f);
    return found;
}

/* The bdi readahead file of the mount at mountpoint; "" if not found. */
static void find_readahead_path(const char *mountpoint, char *out, size_t len)
{
    char majmin[64], type[64];
    out[0] = '\0';
    if (topmost_mount(mountpoint, majmin, sizeof majmin, type, sizeof type) &&
        strncmp(type, "fuse", 4) == 0)
        snprintf(out, len, "/sys/class/bdi/%s/read_ahead_kb", majmin);
}

/* The options every mount gets: read-only, nodev, nosuid, the source permissions, the type
 * fuse.quarkfs and, unless -o fsname= was given, SRC as the source that mount(8), findmnt and
 * df show (and that `mount -a` compares with fstab). */
static int add_fixed_options(struct fuse_args *args, const cli *c)
{
    char *o = NULL, fsname[PATH_MAX + 8];
    int rc = fuse_opt_add_opt(&o, "ro,nodev,nosuid,default_permissions,subtype=quarkfs");
    if (rc == 0 && !c->has_fsname) {
        char real[PATH_MAX];
        const char *src = c->src[0] == '/' || !realpath(c->src, real) ? c->src : real;
        snprintf(fsname, sizeof fsname, "fsname=%s", src);
        rc = fuse_opt_add_opt_escaped(&o, fsname);
    }
    if (rc == 0) rc = fuse_opt_add_arg(args, "-o");
    if (rc == 0) rc = fuse_opt_add_arg(args, o);
    free(o);
    return rc;
}

static int cmd_mount(int argc, char **argv)
{
    cli c = {.readahead_kb = DEFAULT_READAHEAD_KB, .max_background = DEFAULT_MAX_BACKGROUND,
             .cache_mem = DEFAULT_CACHE_MEM, .fuse_threads = INT_MIN};
    int rc = take_view_options(&argc, argv, &c, false, false);
    if (rc) return rc < 0 ? 0 : rc;
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts opts = {0};
    qfs_model *m = NULL;
    qfs_engine *engine = NULL;
    struct fuse_session *se = NULL;
    qfs_fs fs = {.log = log_msg, .timeout = ATTR_TIMEOUT, .readahead_done = ATOMIC_FLAG_INIT,
                 .read_bufs_lock = PTHREAD_MUTEX_INITIALIZER};
    rc = EXIT_USAGE;
    if (fuse_opt_parse(&args, &c, mount_opts, mount_arg) != 0) {
        if (!c.refused) fprintf(stderr, "quarkfs: invalid option (see the message above and "
                                "quarkfs --help)\n");
        goto out;
    }
    if (!c.src) {
        fprintf(stderr, "Usage: quarkfs [OPTIONS] SRC MNT (see --help)\n");
        goto out;
    }
    if (add_fixed_options(&args, &c)) goto out;
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
    if (!opts.mountpoint) {
        fprintf(stderr, "Usage: quarkfs [OPTIONS] SRC MNT (see --help)\n");
        goto out;
    }
    if (opts.debug && !c.log_str) log_level = LOG_DEBUG;
    if (c.log_str && (log_level = parse_log_level(c.log_str)) < 0) {
        fprintf(stderr, "quarkfs: log=%s: use log=error, warning, info or debug\n", c.log_str);
        goto out;
    }
    if (c.fuse_spec) c.spec = c.fuse_spec;
    if (c.fuse_format) c.format = c.fuse_format;
    if (c.fuse_threads != INT_MIN) {
        if (c.fuse_threads <= 0) {
            fprintf(stderr, "quarkfs: threads=%d: needs a positive number\n", c.fuse_threads);
            goto out;
        }
        c.threads = c.fuse_threads;
    }
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
    /* Before the model is built: an option neither quarkfs nor libfuse knows is a usage error. */
    se = fuse_session_new(&args, &qfs_fs_ops, sizeof qfs_fs_ops, &fs);
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
    {
        char majmin[64], type[64];
        if (topmost_mount(opts.mountpoint, majmin, sizeof majmin, type, sizeof type) &&
            strcmp(type, "fuse.quarkfs") == 0) {
            log_msg(LOG_ERR, "%s: already a quarkfs mount; unmount it first (umount %s)",
                    opts.mountpoint, opts.mountpoint);
            rc = 1;
            goto out;
        }
    }
    rc = build_model(&c, c.src, true, &m);
    if (rc) goto out;
    rc = 1;
    log_msg(LOG_DEBUG, "spec %s, format %s, %zu exclude and %zu include globs, %d threads "
            "(0: all cores), cache_mem %zu, disk cache %s, readahead_kb %u, max_background %u",
            m->opts.spec->name, qfs_format_name(m->opts.format), c.n_excludes, c.n_includes,
            c.threads, c.cache_mem, c.cache_mode && strcmp(c.cache_mode, "off") == 0 ? "off"
            : c.cache_dir ? c.cache_dir : "default directory", c.readahead_kb, c.max_background);
    fs.model = m;
    fs.max_background = c.max_background;
    fs.read_error_logged = calloc(m->n_entries, sizeof *fs.read_error_logged);
    fs.refusal_logged = calloc(m->n_entries, sizeof *fs.refusal_logged);
    if (!fs.read_error_logged || !fs.refusal_logged) goto out;
    for (size_t i = 0; i < m->n_entries; i++) {
        atomic_flag_clear(&fs.read_error_logged[i]);
        atomic_flag_clear(&fs.refusal_logged[i]);
    }

    if (fuse_set_signal_handlers(se) != 0) goto out;
    if (fuse_session_mount(se, opts.mountpoint) != 0) {
        log_msg(LOG_ERR, "cannot mount on %s (see the message above; mounting needs /dev/fuse "
                "and root, CAP_SYS_ADMIN or fusermount3)", opts.mountpoint);
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
    qfs_fs_free_read_buffers(&fs);
    free(fs.read_error_logged);
    free(fs.refusal_logged);
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
    free(c.log_str);
    free(c.symlinks_mode);
    free(c.excludes);
    free(c.includes);
    for (size_t i = 0; i < c.n_owned; i++) free(c.owned[i]);
    free(c.owned);
    if (log_syslog) closelog();
    return rc;
}

/* ---- status, warm: ask a running mount through its root's extended attributes ---- */

static int read_mount_json(const char *mnt, const char *attr, json_t **out)
{
    char buf[65536];
    ssize_t n = getxattr(mnt, attr, buf, sizeof buf - 1);
    if (n < 0) {
        int e = errno;
        char safe[PATH_MAX * 4];
        qfs_escape_ctl(mnt, safe, sizeof safe);
        if (e == EPERM)
            fprintf(stderr, "quarkfs: %s: %s: only the mount's owner or root may do this\n", safe,
                    strerror(e));
        else
            fprintf(stderr, "quarkfs: %s: %s (is it a quarkfs mountpoint?)\n", safe,
                    e == ENODATA || e == ENOTSUP ? "no quarkfs counters" : strerror(e));
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
        const char *source = json_string_value(json_object_get(st, "source"));
        char safe_mnt[PATH_MAX * 4], safe_src[PATH_MAX * 4];
        printf("%s: %s (spec %s, format %s), disk cache %s\n",
               qfs_escape_ctl(mnt, safe_mnt, sizeof safe_mnt),
               source ? qfs_escape_ctl(source, safe_src, sizeof safe_src)
                      : "(source shown to the mount's owner only)",
               json_string_value(json_object_get(st, "spec")),
               json_string_value(json_object_get(st, "format")),
               json_is_true(json_object_get(st, "disk_cache")) ? "on" : "off");
        const char *keys[] = {"tensors_quantized", "memory_hits", "disk_hits", "disk_writes",
                              "scales_computed", "evictions", "bytes_quantized", "bytes_served",
                              "weights_in_bands", "early_reads"};
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
    detect_journal();
    map_guard_on = install_map_guard();
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
