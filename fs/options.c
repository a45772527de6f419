/* quarkfs — the command line's option table and its parser; see options.h. */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <jansson.h>

#include "defaults.h"
#include "log.h"
#include "quarkfs/spec.h"

#ifndef QUARKFS_VERSION
#define QUARKFS_VERSION "unknown"
#endif


enum {
    O_SPEC = 256, O_SPECS, O_FORMAT, O_EXCLUDE, O_INCLUDE, O_LAYER, O_PRESET, O_THREADS, O_SYMLINKS, O_FOLLOW,
    O_CHECK_FINITE, O_CACHE_MEM, O_CACHE_DIR, O_CACHE_SIZE, O_CACHE, O_NO_CACHE, O_LOG,
    O_LOG_FILE, O_READAHEAD, O_MAX_BACKGROUND, O_ALLOW_EMPTY, O_JSON, O_ERROR, O_NO_WAIT,
    O_LIST_SPECS, O_HELP, O_VERSION, O_VIEW_FILES, O_PASSTHROUGH,
    /* -o only */
    K_FSTAB, K_FIXED, K_REMOUNT,
};

#define VIEW (QFS_CMD_MOUNT | QFS_CMD_EXPORT | QFS_CMD_INSPECT)
#define WRITE (QFS_CMD_MOUNT | QFS_CMD_EXPORT)
#define ALL (VIEW | QFS_CMD_WARM | QFS_CMD_STATUS)

/* Every option: its --long name, its -o name (with '=' when it takes a value), and the
 * commands that take it. */
typedef struct optdef {
    int id;
    const char *lname, *oname;
    unsigned cmds;
} optdef;

static const optdef table[] = {
    {O_SPEC, "spec", "spec=", VIEW},
    {O_SPECS, "specs", "specs=", QFS_CMD_MOUNT},
    {O_FORMAT, "format", "format=", VIEW},
    {O_EXCLUDE, "exclude", "exclude=", VIEW},
    {O_INCLUDE, "include", "include=", VIEW},
    {O_LAYER, "layer", "layer=", VIEW},
    {O_PRESET, "preset", "preset=", VIEW},
    {O_THREADS, "threads", "threads=", VIEW},
    {O_SYMLINKS, "symlinks", "symlinks=", VIEW},
    {O_FOLLOW, "follow-symlinks", NULL, VIEW},
    {O_CHECK_FINITE, "check-finite", "check_finite", VIEW},
    {O_CACHE_MEM, "cache-mem", "cache_mem=", WRITE},
    {O_CACHE_DIR, "cache-dir", "cache_dir=", WRITE},
    {O_CACHE_SIZE, "cache-size", "cache_size=", WRITE},
    {O_CACHE, "cache", "cache=", WRITE},
    {O_NO_CACHE, "no-cache", NULL, WRITE},
    {O_LOG, "log", "log=", VIEW},
    {O_LOG_FILE, "log-file", "log_file=", VIEW},
    {O_READAHEAD, "readahead-kb", "readahead_kb=", QFS_CMD_MOUNT},
    {O_MAX_BACKGROUND, "max-background", "max_background=", QFS_CMD_MOUNT},
    {O_VIEW_FILES, "view-files", "view_files=", QFS_CMD_MOUNT},
    {O_PASSTHROUGH, "passthrough", "passthrough=", QFS_CMD_MOUNT},
    {O_ALLOW_EMPTY, "allow-empty", "allow_empty", WRITE},
    {O_JSON, "json", NULL, QFS_CMD_INSPECT | QFS_CMD_STATUS},
    {O_ERROR, "error", NULL, QFS_CMD_INSPECT},
    {O_NO_WAIT, "no-wait", NULL, QFS_CMD_WARM},
    {O_LIST_SPECS, "list-specs", NULL, ALL},
    {O_HELP, "help", NULL, ALL},
    {O_VERSION, "version", NULL, ALL},
};
#define N_TABLE (sizeof table / sizeof table[0])

/* Every option that takes a value has an -o spelling ending in '='. */
static bool takes_value(const optdef *d)
{
    return d->oname && strchr(d->oname, '=') != NULL;
}

static const char *cmd_name(unsigned cmd)
{
    return cmd == QFS_CMD_MOUNT ? "a mount" : cmd == QFS_CMD_EXPORT ? "export"
           : cmd == QFS_CMD_INSPECT ? "inspect" : cmd == QFS_CMD_WARM ? "warm" : "status";
}

/* "mount, export and inspect": the commands of a mask. */
static void cmds_text(unsigned cmds, char *buf, size_t len)
{
    static const char *names[] = {"mount", "export", "inspect", "warm", "status"};
    size_t n = 0, k = 0, total = (size_t)__builtin_popcount(cmds);
    buf[0] = '\0';
    for (int i = 0; i < 5; i++) {
        if (!(cmds & (1u << i))) continue;
        k++;
        n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s",
                              k == 1 ? "" : k == total ? " and " : ", ", names[i]);
    }
}

/* Option fuse_opt templates: the -o names, plus those of mount(8), fstab and systemd that
 * the view accepts and ignores, and remount (refused). */
#define KEY(t, k) FUSE_OPT_KEY(t, k)
static const struct fuse_opt fixed_opts[] = {
    KEY("defaults", K_FSTAB), KEY("auto", K_FSTAB), KEY("noauto", K_FSTAB),
    KEY("user", K_FSTAB), KEY("users", K_FSTAB), KEY("nouser", K_FSTAB),
    KEY("owner", K_FSTAB), KEY("group", K_FSTAB), KEY("_netdev", K_FSTAB),
    KEY("nofail", K_FSTAB), KEY("comment=", K_FSTAB),
    KEY("rw", K_FIXED), KEY("dev", K_FIXED), KEY("suid", K_FIXED), KEY("relatime", K_FIXED),
    KEY("norelatime", K_FIXED), KEY("strictatime", K_FIXED), KEY("nostrictatime", K_FIXED),
    KEY("lazytime", K_FIXED), KEY("nolazytime", K_FIXED), KEY("diratime", K_FIXED),
    KEY("nodiratime", K_FIXED), KEY("mand", K_FIXED), KEY("nomand", K_FIXED),
    KEY("silent", K_FIXED), KEY("loud", K_FIXED), KEY("iversion", K_FIXED),
    KEY("noiversion", K_FIXED), KEY("symfollow", K_FIXED), KEY("nosymfollow", K_FIXED),
    KEY("nonempty", K_FIXED),   /* libfuse 2's; libfuse 3 always allows it */
    KEY("remount", K_REMOUNT),
};
#define N_FIXED (sizeof fixed_opts / sizeof fixed_opts[0])

int qfs_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) return 9;
    int d[41][41];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            int best = sub < del ? sub : del;
            best = best < ins ? best : ins;
            /* a swap of two neighbours counts as one edit ("sepc") */
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb] > 9 ? 9 : d[la][lb];
}

static const char *const commands[] = {"export", "inspect", "warm", "status"};

const char *qfs_cli_near_command(const char *word)
{
    const char *best = NULL;
    int bd = 3;
    for (size_t i = 0; i < 4; i++) {
        int d = qfs_edit_distance(word, commands[i]);
        if (d < bd) {
            bd = d;
            best = commands[i];
        }
    }
    return best;
}

/* The known option (long names, or -o names when dash_o) nearest to name, within 2 edits
 * (1 for names of 5 letters or fewer, where 2 would match unrelated words); NULL if none. */
static const char *near_option(const char *name, bool dash_o)
{
    const char *best = NULL;
    int bd = 99;
    for (size_t i = 0; i < N_TABLE; i++) {
        const char *n = dash_o ? table[i].oname : table[i].lname;
        if (!n) continue;
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)strcspn(n, "="), n);
        int d = qfs_edit_distance(name, key), limit = strlen(key) <= 5 ? 1 : 2;
        if (d <= limit && d < bd) {
            bd = d;
            best = n;
        }
    }
    return best;
}

int qfs_parse_size(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return -EINVAL;   /* no sign, no space, not empty */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return -EINVAL;
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
    *out = v * mult;
    return 0;
}

int qfs_parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    if (!s || *s < '0' || *s > '9') return -EINVAL;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -EINVAL;
    *out = v;
    return 0;
}

static int keep(qfs_cli *c, const char *s, const char **out)
{
    char *d = strdup(s), **o = realloc(c->owned, (c->n_owned + 1) * sizeof *o);
    if (o) c->owned = o;
    if (!d || !o) {
        free(d);
        return -ENOMEM;
    }
    c->owned[c->n_owned++] = d;
    *out = d;
    return 0;
}

static int push(const char ***v, size_t *n, const char *s)
{
    const char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) return -ENOMEM;
    nv[(*n)++] = s;
    *v = nv;
    return 0;
}

static void note_ignored(qfs_cli *c, const char *opt)
{
    size_t n = strlen(c->ignored);
    snprintf(c->ignored + n, sizeof c->ignored - n, "%s%s", n ? "," : "", opt);
}

/* How a value follows the option's name as the user wrote it: "-o threads=4", "--threads 4". */
static const char *J(const char *shown)
{
    return shown[1] == 'o' ? "=" : " ";
}

/* Applies one option (either spelling) to c. `shown` is how the user wrote its name, for
 * messages ("--threads", "-o threads"); val is owned by the caller for the run. 0, or
 * EXIT_USAGE after a message. */
static int apply(qfs_cli *c, const optdef *d, const char *val, const char *shown)
{
    char cmds[64];
    if (!(d->cmds & c->cmd)) {
        cmds_text(d->cmds, cmds, sizeof cmds);
        fprintf(stderr, "quarkfs: %s is an option of %s; %s does not take it (see --help)\n",
                shown, cmds, cmd_name(c->cmd));
        return EXIT_USAGE;
    }
    unsigned long n;
    uint64_t size;
    int lvl;
    switch (d->id) {
    case O_SPEC: c->spec = val; return 0;
    case O_FORMAT: c->format = val; return 0;
    case O_PRESET: c->preset = val; return 0;
    case O_SPECS: c->specs = val; return 0;
    case O_EXCLUDE:
    case O_INCLUDE:
    case O_LAYER: {
        bool ex = d->id == O_EXCLUDE;
        const char ***list = ex ? &c->excludes : d->id == O_LAYER ? &c->layers : &c->includes;
        size_t *n_list = ex ? &c->n_excludes : d->id == O_LAYER ? &c->n_layers : &c->n_includes;
        if (shown[1] != 'o') {   /* --exclude GLOB: one glob */
            if (!*val) goto empty_glob;
            return push(list, n_list, val) ? 1 : 0;
        }
        /* -o exclude=GLOB[:GLOB...]: module names never contain ':' */
        for (const char *p = val;; ) {
            size_t len = strcspn(p, ":");
            if (len == 0) goto empty_glob;
            char *g = strndup(p, len);
            const char *kept;
            int rc = g ? keep(c, g, &kept) : -ENOMEM;
            free(g);
            if (rc || push(list, n_list, kept)) return 1;
            if (!p[len]) return 0;
            p += len + 1;
        }
    empty_glob:
        fprintf(stderr, "quarkfs: %s%s%s: an empty glob%s\n", shown, J(shown), val,
                shown[1] == 'o' ? " (globs are separated by ':')" : "");
        return EXIT_USAGE;
    }
    case O_THREADS:
        if (qfs_parse_uint(val, 1, 4096, &n)) {
            fprintf(stderr, "quarkfs: %s%s%s: not a number of threads (1 to 4096)\n", shown,
                    J(shown), val);
            return EXIT_USAGE;
        }
        c->threads = (int)n;
        return 0;
    case O_SYMLINKS:
        if (strcmp(val, "all") != 0 && strcmp(val, "inside") != 0) {
            fprintf(stderr, "quarkfs: %s%s%s: use symlinks=inside or symlinks=all\n", shown,
                    J(shown), val);
            return EXIT_USAGE;
        }
        c->follow_symlinks = strcmp(val, "all") == 0;
        return 0;
    case O_FOLLOW: c->follow_symlinks = true; return 0;
    case O_CHECK_FINITE: c->check_finite = true; return 0;
    case O_CACHE_MEM:
    case O_CACHE_SIZE:
        if (qfs_parse_size(val, &size) || size > SIZE_MAX) {
            fprintf(stderr, "quarkfs: %s%s%s: not a size (a whole number with an optional K, M, "
                    "G or T suffix, e.g. 512M, 2G)\n", shown, J(shown), val);
            return EXIT_USAGE;
        }
        if (d->id == O_CACHE_MEM) c->cache_mem = (size_t)size;
        else c->cache_size = size;
        return 0;
    case O_CACHE_DIR: c->cache_dir = val; return 0;
    case O_CACHE:
    case O_VIEW_FILES:
    case O_PASSTHROUGH: {
        if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0) {
            int n = (int)strlen(d->oname) - 1;   /* "cache=" without its '=' */
            fprintf(stderr, "quarkfs: %s%s%s: use %.*s=on or %.*s=off\n", shown, J(shown), val,
                    n, d->oname, n, d->oname);
            return EXIT_USAGE;
        }
        bool *off = d->id == O_CACHE ? &c->no_disk_cache
                    : d->id == O_VIEW_FILES ? &c->no_view_files : &c->no_passthrough;
        *off = strcmp(val, "off") == 0;
        if (d->id == O_VIEW_FILES) c->view_files_on = !*off;
        return 0;
    }
    case O_NO_CACHE: c->no_disk_cache = true; return 0;
    case O_LOG:
        if ((lvl = qfs_log_parse_level(val)) < 0) {
            fprintf(stderr, "quarkfs: %s%s%s: use error, warning, info or debug\n", shown,
                    J(shown), val);
            return EXIT_USAGE;
        }
        c->log_level = lvl;
        return 0;
    case O_LOG_FILE:
        if (!*val) {
            fprintf(stderr, "quarkfs: %s needs a file name\n", shown);
            return EXIT_USAGE;
        }
        c->log_file = val;
        return 0;
    case O_READAHEAD:
    case O_MAX_BACKGROUND:
        /* readahead: up to 1 GiB; background requests: the kernel keeps them in 16 bits */
        if (qfs_parse_uint(val, d->id == O_READAHEAD ? 0 : 1,
                           d->id == O_READAHEAD ? 1u << 20 : 65535, &n)) {
            fprintf(stderr, "quarkfs: %s%s%s: not a number %s\n", shown, J(shown), val,
                    d->id == O_READAHEAD ? "of KiB from 0 to 1048576" : "from 1 to 65535");
            return EXIT_USAGE;
        }
        if (d->id == O_READAHEAD) c->readahead_kb = (unsigned)n;
        else c->max_background = (unsigned)n;
        return 0;
    case O_ALLOW_EMPTY: c->allow_empty = true; return 0;
    case O_JSON: c->json = true; return 0;
    case O_ERROR: c->error = true; return 0;
    case O_NO_WAIT: c->no_wait = true; return 0;
    case O_LIST_SPECS: qfs_spec_print_table(stdout); c->help_done = true; return 0;
    case O_HELP: qfs_cli_usage(stdout); c->help_done = true; return 0;
    case O_VERSION: qfs_cli_version(); c->help_done = true; return 0;
    default: return EXIT_USAGE;
    }
}

typedef struct oparse { qfs_cli *c; int rc; } oparse;

/* fuse_opt callback of one -o list: our options are applied; a mount passes the others to
 * libfuse (kept in outargs) unless one looks like a misspelling of ours. */
static int o_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    oparse *op = data;
    qfs_cli *c = op->c;
    if (op->rc || !arg) return -1;
    char name[64], shown[80];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(arg, "="), arg);
    snprintf(shown, sizeof shown, "-o %s", name);
    if (key >= O_SPEC && key < K_FSTAB) {
        const optdef *d = NULL;
        for (size_t i = 0; i < N_TABLE && !d; i++) if (table[i].id == key) d = &table[i];
        const char *eq = strchr(arg, '='), *val = NULL;
        if (eq && keep(c, eq + 1, &val)) return op->rc = 1, -1;
        op->rc = apply(c, d, val, shown);
        return op->rc ? -1 : 0;
    }
    /* not one of ours: a misspelling of one of ours is named as such */
    const char *near = key == FUSE_OPT_KEY_OPT ? near_option(name, true) : NULL;
    if (near) {
        fprintf(stderr, "quarkfs: -o %s: unknown option; did you mean -o %s?\n", arg, near);
        op->rc = EXIT_USAGE;
        return -1;
    }
    if (c->cmd != QFS_CMD_MOUNT) {
        if (key == FUSE_OPT_KEY_OPT)
            fprintf(stderr, "quarkfs: -o %s: unknown option (see --help)\n", arg);
        else
            fprintf(stderr, "quarkfs: -o %s: a mount option; %s does not take it\n", arg,
                    cmd_name(c->cmd));
        op->rc = EXIT_USAGE;
        return -1;
    }
    switch (key) {
    case K_FSTAB:
    case K_FIXED:
        note_ignored(c, arg);
        return 0;
    case K_REMOUNT:
        fprintf(stderr, "quarkfs: -o remount is not supported: the view's options are fixed "
                "when it is mounted; unmount it and mount it again\n");
        op->rc = EXIT_USAGE;
        return -1;
    case FUSE_OPT_KEY_OPT:
        if (strncmp(arg, "x-", 2) == 0) {   /* x-systemd.*, x-gvfs-*, ...: for userspace */
            note_ignored(c, arg);
            return 0;
        }
        if (strncmp(arg, "fsname=", 7) == 0) c->has_fsname = true;
        if (strcmp(arg, "ro") == 0) c->has_ro = true;
        return 1;   /* for libfuse, which refuses what it does not know either */
    default:
        return 1;
    }
}

/* One -o list, taken when it appears on the command line (so that order decides). */
static int take_o(qfs_cli *c, const char *list)
{
    struct fuse_opt fo[N_TABLE + N_FIXED + 1];
    size_t n = 0;
    for (size_t i = 0; i < N_TABLE; i++)
        if (table[i].oname)
            fo[n++] = (struct fuse_opt)FUSE_OPT_KEY(table[i].oname, table[i].id);
    for (size_t i = 0; i < N_FIXED; i++) fo[n++] = fixed_opts[i];
    fo[n] = (struct fuse_opt)FUSE_OPT_END;
    char *argv[] = {"quarkfs", "-o", (char *)list, NULL};
    struct fuse_args a = FUSE_ARGS_INIT(3, argv);
    oparse op = {c, 0};
    int rc = fuse_opt_parse(&a, &op, fo, o_proc);
    if (rc == 0 && !op.rc)
        for (int i = 1; i < a.argc && rc == 0; i++) rc = fuse_opt_add_arg(&c->fuse, a.argv[i]);
    fuse_opt_free_args(&a);
    if (op.rc) return op.rc;
    if (rc) {
        fprintf(stderr, "quarkfs: -o %s: cannot parse this option list\n", list);
        return EXIT_USAGE;
    }
    return 0;
}

static int resolve_layers(qfs_cli *c);

/* An unknown --option: its name, the nearest known one, and whether another command takes it. */
static void unknown_long(const qfs_cli *c, const char *arg)
{
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(arg + 2, "="), arg + 2);
    size_t hits = 0;   /* getopt_long takes a prefix of one name only */
    for (size_t i = 0; i < N_TABLE; i++) hits += strncmp(table[i].lname, name, strlen(name)) == 0;
    if (hits > 1) {
        fprintf(stderr, "quarkfs: '--%s' is ambiguous (write the whole name)\n", name);
        return;
    }
    const char *near = near_option(name, false);
    if (near)
        fprintf(stderr, "quarkfs: unknown option '--%s'; did you mean --%s?\n", name, near);
    else
        fprintf(stderr, "quarkfs: unknown option '--%s' for %s (see --help)\n", name,
                cmd_name(c->cmd));
}

int qfs_cli_parse(unsigned cmd, int argc, char **argv, qfs_cli *c)
{
    c->cmd = cmd;
    struct option lo[N_TABLE + 1];
    size_t n = 0;
    for (size_t i = 0; i < N_TABLE; i++)
        lo[n++] = (struct option){table[i].lname, takes_value(&table[i]) ? required_argument
                                  : no_argument, NULL, table[i].id};
    lo[n] = (struct option){NULL, 0, NULL, 0};
    const char *shorts = cmd == QFS_CMD_MOUNT ? ":fdso:hV"
                       : cmd & (QFS_CMD_EXPORT | QFS_CMD_INSPECT) ? ":o:hV" : ":hV";
    if (fuse_opt_add_arg(&c->fuse, argv[0])) return 1;
    opterr = 0;
    optind = 0;   /* glibc: start over */
    int ch, idx;
    while ((ch = getopt_long(argc, argv, shorts, lo, &idx)) != -1) {
        int rc = 0;
        switch (ch) {
        case 'f': rc = fuse_opt_add_arg(&c->fuse, "-f"); break;
        case 'd': rc = fuse_opt_add_arg(&c->fuse, "-d"); break;
        case 's': rc = fuse_opt_add_arg(&c->fuse, "-s"); break;
        case 'o': rc = take_o(c, optarg); break;
        case 'h': rc = apply(c, &table[N_TABLE - 2], NULL, "-h"); break;
        case 'V': rc = apply(c, &table[N_TABLE - 1], NULL, "-V"); break;
        case ':':
            if (optopt >= O_SPEC)
                for (size_t i = 0; i < N_TABLE; i++)
                    if (table[i].id == optopt)
                        fprintf(stderr, "quarkfs: --%s needs a value (see --help)\n",
                                table[i].lname);
            if (optopt < O_SPEC) fprintf(stderr, "quarkfs: -%c needs a value (see --help)\n",
                                         optopt);
            return EXIT_USAGE;
        case '?':
            if (optopt && optopt < O_SPEC)
                fprintf(stderr, "quarkfs: unknown option '-%c' for %s (see --help)\n", optopt,
                        cmd_name(cmd));
            else if (optopt)   /* a flag given a value: --json=x */
                fprintf(stderr, "quarkfs: %s takes no value\n", argv[optind - 1]);
            else if (strncmp(argv[optind - 1], "--", 2) == 0 &&
                     strlen(argv[optind - 1]) > 2)
                unknown_long(c, argv[optind - 1]);
            else
                fprintf(stderr, "quarkfs: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        default: {
            const optdef *d = NULL;
            for (size_t i = 0; i < N_TABLE && !d; i++) if (table[i].id == ch) d = &table[i];
            char shown[64];
            snprintf(shown, sizeof shown, "--%s", d->lname);
            rc = apply(c, d, optarg, shown);
        }
        }
        if (rc) return rc == 1 ? 1 : EXIT_USAGE;
        if (c->help_done) return 0;
    }
    for (int i = optind; i < argc; i++) {
        char **p = realloc(c->pos, (c->n_pos + 1) * sizeof *p);
        if (!p) return 1;
        c->pos = p;
        c->pos[c->n_pos++] = argv[i];
    }
    return resolve_layers(c);
}

/* --layer and --preset into rules: a glob given again takes the later spec in its first place
 * (as a dict key would), a preset's rule for a glob the user gave is left out. EXIT_USAGE
 * after a message for a bad rule or preset. */
static int resolve_layers(qfs_cli *c)
{
    if (!c->n_layers && !c->preset) return 0;
    qfs_layer_rule preset[QFS_PRESET_MAX_RULES];
    size_t n_preset = 0;
    qfs_error err = {{0}};
    if (c->preset && qfs_preset_lookup(c->preset, preset, &n_preset, &err)) {
        fprintf(stderr, "quarkfs: --preset: %s\n", err.msg);
        return EXIT_USAGE;
    }
    if (c->n_layers + n_preset > QFS_MAX_LAYER_RULES) {
        fprintf(stderr, "quarkfs: more than %d --layer rules\n", QFS_MAX_LAYER_RULES);
        return EXIT_USAGE;
    }
    c->layer_rules = calloc(c->n_layers + n_preset, sizeof *c->layer_rules);
    if (!c->layer_rules) return 1;
    for (size_t i = 0; i < c->n_layers + n_preset; i++) {
        qfs_layer_rule r;
        if (i < c->n_layers) {
            char *glob;
            if (qfs_layer_rule_parse(c->layers[i], &glob, &r.spec, &err)) {
                fprintf(stderr, "quarkfs: %s\n", err.msg);
                return EXIT_USAGE;
            }
            const char *kept;
            int rc = keep(c, glob, &kept);
            free(glob);
            if (rc) return 1;
            r.glob = kept;
            r.from_preset = false;
        } else {
            r = preset[i - c->n_layers];
        }
        size_t k = 0;
        while (k < c->n_layer_rules && strcmp(c->layer_rules[k].glob, r.glob) != 0) k++;
        if (k < c->n_layer_rules) {
            if (!r.from_preset) c->layer_rules[k].spec = r.spec;
        } else {
            c->layer_rules[c->n_layer_rules++] = r;
        }
    }
    return 0;
}

void qfs_cli_free(qfs_cli *c)
{
    free(c->layer_rules);
    free(c->excludes);
    free(c->includes);
    free(c->layers);
    free(c->pos);
    for (size_t i = 0; i < c->n_owned; i++) free(c->owned[i]);
    free(c->owned);
    fuse_opt_free_args(&c->fuse);
}

void qfs_cli_usage(FILE *out)
{
    fprintf(out,
"Usage: quarkfs [OPTIONS] SRC MNT          mount a quantized, read-only view of SRC on MNT\n"
"       mount -t fuse.quarkfs SRC MNT [-o OPT,...]   the same, through mount(8) or /etc/fstab\n"
"       quarkfs export [OPTIONS] SRC OUT    write the same view into the new directory OUT\n"
"       quarkfs inspect [OPTIONS] SRC       list the view tensor by tensor (--json for JSON)\n"
"       quarkfs warm [--no-wait] MNT        quantize the whole view now, in the background\n"
"       quarkfs status MNT [--json]         a mount's state and counters\n"
"       quarkfs --list-specs | --help | --version\n"
"       umount MNT  (or fusermount3 -u MNT) unmount\n"
"\n"
"SRC is a Hugging Face model directory (config.json, model*.safetensors, ...; a hub cache\n"
"snapshot whose files are symlinks into blobs/ works). In the view, every model*.safetensors\n"
"is quantized in AMD Quark's export layout, config.json gains a quantization_config,\n"
"model.safetensors.index.json maps the new tensor names, and every other file passes through\n"
"unchanged. Tensors are quantized when first read, then cached.\n"
"\n"
"Every option has a --long and an -o spelling where it applies (--cache-mem 1G = -o\n"
"cache_mem=1G); given twice, in either spelling, the last one wins (as with mount(8));\n"
"--exclude/--include add up. Numbers must be whole numbers in range (\"4x\" is refused).\n"
"\n"
"View options (mount, export, inspect):\n"
"  --spec NAME          quantization spec (default int8; see --list-specs)  -o spec=NAME\n"
"  --specs S[:F],...    mount only: several views in one mount, MNT/<view>/ each a whole\n"
"                       model directory (view = S, or S-F for a format other than quark),\n"
"                       one source, engine, cache_mem and disk cache   -o specs=S[:F]+...\n"
"                       e.g. --specs int8,fp8,fp8-block:fp8 (-o form: '+' between views);\n"
"                       complete view files (--view-files) are off with several views\n"
"  --format NAME        quark (default), awq, fp8, compressed-tensors       -o format=NAME\n"
"  --exclude GLOB       keep modules matching GLOB unquantized; repeatable; the module is the\n"
"                       tensor name without .weight, e.g. 'model.layers.0.*'\n"
"                                                               -o exclude=GLOB[:GLOB...]\n"
"  --include GLOB       quantize only modules matching GLOB (repeatable)\n"
"                                                               -o include=GLOB[:GLOB...]\n"
"                       (-o exclude/include are repeatable too; ':' separates several globs)\n"
"  --layer GLOB=SPEC    quantize modules matching GLOB with SPEC instead (repeatable; the\n"
"                       first match wins, an exact name before globs; --format quark only:\n"
"                       written as Quark's layer_quant_config), e.g.\n"
"                       --spec int4-g128 --layer 'model.layers.*.mlp.down_proj=int8-channel'\n"
"                                                      -o layer=GLOB=SPEC[:GLOB=SPEC...]\n"
"  --preset NAME        add a named set of --layer rules after yours: keep-sensitive keeps\n"
"                       q_proj, k_proj, v_proj at int8-channel         -o preset=NAME\n"
"  --threads N          OpenMP threads per tensor (default: all cores)     -o threads=N\n"
"                       (idle ones sleep: OMP_WAIT_POLICY=passive unless set)\n"
"  --follow-symlinks    show what every symlink in SRC points to (default: only targets\n"
"                       inside SRC, or inside its Hugging Face cache repository, i.e. the\n"
"                       blobs/ of .../models--X/snapshots/REV)         -o symlinks=all\n"
"  --check-finite       read every candidate tensor first and leave those holding NaN/Inf\n"
"                       unquantized (else such a tensor makes its file fail with EIO when\n"
"                       read, since sizes are fixed from the headers)      -o check_finite\n"
"  --allow-empty        mount or export a SRC with nothing to quantize (no readable\n"
"                       model*.safetensors): refused otherwise (exit 1)    -o allow_empty\n"
"\n"
"Cache options (mount, export):\n"
"  --cache-mem SIZE     memory for quantized tensors, least recently used evicted\n"
"                       (default 1G; suffixes K, M, G, T); evicted buffers are reused\n"
"                                                               -o cache_mem=SIZE\n"
"  --cache-dir DIR      persistent cache, keyed by content, shareable between machines\n"
"                       (default /var/cache/quarkfs for root, else $XDG_CACHE_HOME/quarkfs)\n"
"                                                               -o cache_dir=DIR\n"
"  --cache-size SIZE    budget of the whole directory (entries, memos, view files; lock\n"
"                       files are empty), least recently used removed, also when a lower\n"
"                       budget is given at mount (default 64G)           -o cache_size=SIZE\n"
"  --no-cache           no persistent cache          -o cache=off (--cache on|off)\n"
"\n"
"Logging (mount, export, inspect):\n"
"  --log LEVEL          error, warning, info (default) or debug             -o log=LEVEL\n"
"                       In the foreground (-f, and export/inspect) messages go to stderr,\n"
"                       a mount's lines with their local time (<N> priority prefixes instead\n"
"                       when stderr is systemd's journal); a daemon -- also every mount made\n"
"                       by mount(8) -- logs to syslog (facility daemon, tag quarkfs), and\n"
"                       warns once when no syslog listens on /dev/log.\n"
"  --log-file PATH      append every message to PATH (time, pid) instead: no syslog needed;\n"
"                       errors still reach the starter's terminal       -o log_file=PATH\n"
"                       Each refusal and each fallback is logged once, naming the file;\n"
"                       weights a spec cannot take: one info line per reason (debug: each).\n"
"Progress (export, warm, inspect --error): on stderr, with rate and time left; redrawn on a\n"
"terminal, else one line every 10 s ($QUARKFS_PROGRESS_INTERVAL seconds); a summary line at\n"
"the end. --log warning silences it.\n"
"\n"
"Mount options:\n"
"  -f                   stay in the foreground, log to stderr (else: daemon, log to syslog)\n"
"  -d                   debug: foreground, a trace of every FUSE request, log=debug\n"
"  -s                   single-threaded FUSE loop\n"
"  --readahead-kb N     kernel readahead of the mount (default %d; needs root; 0 = keep)\n"
"                                                               -o readahead_kb=N\n"
"  --max-background N   FUSE background requests (default %d)   -o max_background=N\n"
"  --view-files on|off  complete view files: once every tensor of a file was produced\n"
"                       (after `quarkfs warm`, or a whole-file read), the file is written\n"
"                       whole into the disk cache (files/, within --cache-size) in the\n"
"                       background, and later opens are served from it (default on; needs\n"
"                       the disk cache; off on a FUSE cache directory unless `on` is given)\n"
"                                                                    -o view_files=on|off\n"
"  --passthrough on|off serve those files by the kernel itself (FUSE passthrough: local-file\n"
"                       speed, mmap included; needs libfuse >= 3.17 at build time, Linux >=\n"
"                       6.9 and CAP_SYS_ADMIN), else by pread through the FUSE channel\n"
"                       (default on; --version says if built in)    -o passthrough=on|off\n"
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
"  already a quarkfs mount (a dead one: the message says fusermount3 -uz MNT), a MNT that\n"
"  is SRC or holds it (the view would hide its own files), any unknown option (exit 2).\n"
"  A MNT that is not empty is hidden while mounted: one warning.\n"
"  Under systemd, READY=1 goes to $NOTIFY_SOCKET once mounted (Type=notify units).\n"
"\n"
"mount(8) and /etc/fstab: mount.fuse3 runs `quarkfs SRC MNT -o OPTS` with mount(8)'s\n"
"cleared PATH, so quarkfs must be in /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin,\n"
"/sbin or /bin (meson install puts it in PREFIX/bin, default /usr/local/bin):\n"
"  mount -t fuse.quarkfs /srv/hf/llama /models/llama-int8 -o spec=int8,allow_other\n"
"  /srv/hf/llama /models/llama-int8 fuse.quarkfs spec=int8,allow_other,nofail 0 0\n"
"\n"

"Inspect options:\n"
"  --error              quantize every tensor and show its relative RMS error, SNR (dB) and\n"
"                       max abs error against the source, and the totals\n"
"  --spec all           one summary row per spec (with --error: choose a spec by its error)\n"
"  --json               print JSON instead of a table (also: status)\n"
"\n"
"Warm options:\n"
"  --no-wait            queue the warm-up and return (progress: quarkfs status)\n"
"\n"
"Exit status (mount(8) passes it through):\n"
"  0  success; for a mount: mounted (a daemon returns once MNT is mounted), or the foreground\n"
"     process stopped cleanly after an unmount, SIGTERM or SIGINT\n"
"  1  the view could not be built, mounted or written: the message names the file (and the\n"
"     tensor) and the problem; SRC has nothing to quantize (without allow_empty); MNT is\n"
"     a quarkfs mount already (or a dead one); a broken shard is not this as long as\n"
"     another shard is readable: it is logged and answers EIO\n"
"  2  bad command line: unknown command or option (named, with the nearest one), bad\n"
"     value, an option of another command, invalid spec/format pair, missing or\n"
"     nonexistent MNT, MNT that is SRC or above it\n"
"\n"
"Documentation: man quarkfs; examples (systemd units, container recipe) in\n"
"PREFIX/share/doc/quarkfs/examples.\n",
            DEFAULT_READAHEAD_KB, DEFAULT_MAX_BACKGROUND, DEFAULT_MAX_THREADS);
}

void qfs_cli_version(void)
{
#if JANSSON_VERSION_HEX >= 0x020d00
    const char *jansson = jansson_version_str();   /* the library in use, not the header */
#else
    const char *jansson = JANSSON_VERSION;
#endif
    printf("quarkfs %s (libfuse %s, jansson %s)\n", QUARKFS_VERSION, fuse_pkgversion(), jansson);
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
    printf("FUSE passthrough: built in (used when the kernel offers it and the daemon has "
           "CAP_SYS_ADMIN)\n");
#else
    printf("FUSE passthrough: not built in (libfuse < 3.17; scripts/libfuse.sh builds 3.17)\n");
#endif
}

