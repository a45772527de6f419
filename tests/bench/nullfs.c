/* nullfs — the benchmark's do-nothing FUSE filesystem: the channel limit quarkfs is measured
 * against (scripts/bench).
 *
 *   nullfs [-f] [-d] [-s] [-o readahead_kb=N,max_background=N,max_threads=N,...] DIR MNT
 *
 * At start it loads every regular file under DIR (symlinks followed; in the benchmark DIR is a
 * `quarkfs export` of the model, so both filesystems serve the same bytes) into memory, then
 * mounts a read-only copy of the tree on MNT and answers each read with one fuse_reply_buf()
 * straight from that memory: no computation, no copy in the daemon.
 *
 * Everything that shapes the FUSE traffic is quarkfs's (fs/main.c, fs/ops.c): the same mount
 * options (ro, default_permissions), the same INIT answer (max_background 64, congestion
 * threshold 3/4 of it, no auto_inval_data), keep_cache + no direct_io + noflush on open,
 * day-long entry and attribute timeouts, the bdi read_ahead_kb (16384) raised at the first open
 * (INIT resets it), and the multithreaded loop with at most 16 threads. It daemonizes once
 * mounted, as quarkfs does; unmount with `fusermount3 -u MNT`. */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define DEFAULT_READAHEAD_KB 16384   /* as quarkfs: fs/main.c */
#define DEFAULT_MAX_BACKGROUND 64
#define DEFAULT_MAX_THREADS 16
#define ATTR_TIMEOUT 86400.0

typedef struct node {
    char *name;
    size_t parent;
    size_t *children;
    size_t n_children;
    struct stat st;
    uint8_t *data;               /* regular files: st.st_size bytes */
} node;

static struct {
    node *nodes;
    size_t n;
    unsigned max_background, readahead_kb;
    char readahead_path[128];
    atomic_flag readahead_done;
} g = {.readahead_done = ATOMIC_FLAG_INIT};

static void die(const char *what, const char *path)
{
    fprintf(stderr, "nullfs: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static size_t add_node(const char *name, size_t parent, const struct stat *st)
{
    node *nn = realloc(g.nodes, (g.n + 1) * sizeof *nn);
    if (!nn) die("out of memory at", name);
    g.nodes = nn;
    node *x = &g.nodes[g.n];
    memset(x, 0, sizeof *x);
    x->name = strdup(name);
    x->parent = parent;
    x->st = *st;
    x->st.st_ino = g.n + 1;
    x->st.st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
    return g.n++;
}

static void add_child(size_t dir, size_t child)
{
    node *d = &g.nodes[dir];
    size_t *c = realloc(d->children, (d->n_children + 1) * sizeof *c);
    if (!c) die("out of memory at", d->name);
    d->children = c;
    c[d->n_children++] = child;
}

static void load_file(size_t idx, const char *path)
{
    size_t size = (size_t)g.nodes[idx].st.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) die("out of memory for", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open", path);
    size_t done = 0;
    while (done < size) {
        ssize_t r = read(fd, buf + done, size - done > (1u << 26) ? (1u << 26) : size - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die("cannot read", path);
        done += (size_t)r;
    }
    close(fd);
    g.nodes[idx].data = buf;
}

/* Loads the tree under path as the children of node dir (symlinks followed). */
static void load_dir(size_t dir, const char *path)
{
    DIR *d = opendir(path);
    if (!d) die("cannot open directory", path);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char sub[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        struct stat st;
        if (stat(sub, &st) != 0) die("cannot stat", sub);
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) continue;
        size_t idx = add_node(de->d_name, dir, &st);
        add_child(dir, idx);
        if (S_ISDIR(st.st_mode)) load_dir(idx, sub);
        else load_file(idx, sub);
    }
    closedir(d);
}

static int node_of(fuse_ino_t ino, size_t *idx)
{
    if (ino < 1 || ino > g.n) return -ENOENT;
    *idx = (size_t)(ino - 1);
    return 0;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    if (g.max_background) {
        conn->max_background = g.max_background;
        conn->congestion_threshold = g.max_background * 3 / 4;
    }
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    size_t dir;
    if (node_of(parent, &dir) || !S_ISDIR(g.nodes[dir].st.st_mode)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    const node *d = &g.nodes[dir];
    for (size_t i = 0; i < d->n_children; i++) {
        const node *c = &g.nodes[d->children[i]];
        if (strcmp(c->name, name) != 0) continue;
        struct fuse_entry_param ep;
        memset(&ep, 0, sizeof ep);
        ep.ino = c->st.st_ino;
        ep.generation = 1;
        ep.attr = c->st;
        ep.attr_timeout = ATTR_TIMEOUT;
        ep.entry_timeout = ATTR_TIMEOUT;
        fuse_reply_entry(req, &ep);
        return;
    }
    fuse_reply_err(req, ENOENT);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    size_t idx;
    if (node_of(ino, &idx)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fuse_reply_attr(req, &g.nodes[idx].st, ATTR_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    (void)ino; (void)attr; (void)to_set; (void)fi;
    fuse_reply_err(req, EROFS);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    size_t idx;
    if (node_of(ino, &idx)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (!S_ISDIR(g.nodes[idx].st.st_mode)) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
    fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    size_t idx;
    if (node_of(ino, &idx)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    const node *d = &g.nodes[idx];
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    for (off_t i = off; (size_t)i < d->n_children + 2; i++) {
        const node *e = i == 0 ? d : i == 1 ? &g.nodes[d->parent] : &g.nodes[d->children[i - 2]];
        const char *name = i == 0 ? "." : i == 1 ? ".." : e->name;
        struct stat st = {.st_ino = e->st.st_ino, .st_mode = e->st.st_mode};
        size_t n = fuse_add_direntry(req, buf + used, size - used, name, &st, i + 1);
        if (n > size - used) break;
        used += n;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

/* As quarkfs: INIT caps the bdi readahead at the kernel's 128 KiB offer, so it is raised at the
 * first open, before any read. */
static void apply_readahead(void)
{
    if (!g.readahead_path[0] || atomic_flag_test_and_set(&g.readahead_done)) return;
    FILE *f = fopen(g.readahead_path, "w");
    bool ok = f && fprintf(f, "%u\n", g.readahead_kb) >= 0;
    if (f && fclose(f) != 0) ok = false;   /* the write happens here; f is closed either way */
    if (!ok)
        fprintf(stderr, "nullfs: readahead left at the kernel default (%s: %s)\n",
                g.readahead_path, strerror(errno));
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    apply_readahead();
    size_t idx;
    if (node_of(ino, &idx)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (S_ISDIR(g.nodes[idx].st.st_mode)) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    fi->keep_cache = 1;
    fi->direct_io = 0;
    fi->noflush = 1;
    fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    size_t idx;
    if (node_of(ino, &idx)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    const node *x = &g.nodes[idx];
    size_t fsize = (size_t)x->st.st_size;
    if (off < 0 || (size_t)off >= fsize) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > fsize - (size_t)off) size = fsize - (size_t)off;
    fuse_reply_buf(req, (const char *)x->data + off, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino; (void)fi;
    fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct statvfs sv;
    memset(&sv, 0, sizeof sv);
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    uint64_t bytes = 0;
    for (size_t i = 0; i < g.n; i++) bytes += (uint64_t)g.nodes[i].st.st_size;
    sv.f_blocks = (bytes + 4095) / 4096;
    sv.f_files = g.n;
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &sv);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    (void)ino;
    fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .statfs = op_statfs,
    .access = op_access,
};

typedef struct cli {
    char *src;
    unsigned readahead_kb, max_background;
} cli;

static const struct fuse_opt opts_spec[] = {
    {"readahead_kb=%u", offsetof(cli, readahead_kb), 1},
    {"max_background=%u", offsetof(cli, max_background), 1},
    FUSE_OPT_END
};

static int take_arg(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    cli *c = data;
    if (key != FUSE_OPT_KEY_NONOPT) return 1;
    if (!c->src) {
        c->src = strdup(arg);
        return 0;
    }
    return 1;
}

/* As quarkfs: the bdi of the mount, found in mountinfo. */
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

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts o = {0};
    cli c = {.readahead_kb = DEFAULT_READAHEAD_KB, .max_background = DEFAULT_MAX_BACKGROUND};
    int rc = 2;
    if (fuse_opt_parse(&args, &c, opts_spec, take_arg) != 0) return 2;
    if (fuse_opt_add_arg(&args, "-oro,default_permissions,fsname=nullfs,subtype=nullfs")) return 2;
    if (fuse_parse_cmdline(&args, &o) != 0) return 2;
    if (!c.src || !o.mountpoint) {
        fprintf(stderr, "usage: nullfs [-f] [-d] [-s] [-o readahead_kb=N,max_background=N,"
                "max_threads=N] DIR MNT\n");
        return 2;
    }
    struct stat st;
    if (stat(c.src, &st) != 0 || !S_ISDIR(st.st_mode)) die("not a directory:", c.src);
    add_node("", 0, &st);
    load_dir(0, c.src);
    g.max_background = c.max_background;

    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (!se) return 1;
    if (fuse_set_signal_handlers(se) != 0) return 1;
    if (fuse_session_mount(se, o.mountpoint) != 0) return 1;
    if (c.readahead_kb) {
        g.readahead_kb = c.readahead_kb;
        find_readahead_path(o.mountpoint, g.readahead_path, sizeof g.readahead_path);
    }
    fuse_daemonize(o.foreground);
    if (o.singlethread) {
        rc = fuse_session_loop(se);
    } else {
        struct fuse_loop_config *cfg = fuse_loop_cfg_create();
        fuse_loop_cfg_set_clone_fd(cfg, o.clone_fd);
        fuse_loop_cfg_set_idle_threads(cfg, o.max_idle_threads);
        bool unset = o.max_threads == 0 || o.max_threads > 100000;
        fuse_loop_cfg_set_max_threads(cfg, unset ? DEFAULT_MAX_THREADS : o.max_threads);
        rc = fuse_session_loop_mt(se, cfg);
        fuse_loop_cfg_destroy(cfg);
    }
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    free(o.mountpoint);
    fuse_opt_free_args(&args);
    return rc ? 1 : 0;
}
