#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <limits.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <syslog.h>
#include <unistd.h>

#include <jansson.h>

#include "quarkfs/io.h"
#include "quarkfs/view.h"

#define QFS_STR_(x) #x
#define QFS_STR(x) QFS_STR_(x)

static qfs_fs *fs_of(fuse_req_t req) { return fuse_req_userdata(req); }

/* What an inode is: the listing root of several views (top), or entry idx of view m. */
typedef struct node {
    bool top;
    size_t view, idx;
    qfs_model *m;
} node;

/* One view: inode = entry index + 1 (the root, entry 0, is FUSE_ROOT_ID = 1). Several: inode 1
 * lists them and view v's entries follow from view_base[v] (qfs_fs_set_views). */
static int node_of(const qfs_fs *fs, fuse_ino_t ino, node *n)
{
    if (ino < 1 || ino > fs->n_inodes) return -ENOENT;
    memset(n, 0, sizeof *n);
    if (fs->n_views > 1 && ino == FUSE_ROOT_ID) {
        n->top = true;
        return 0;
    }
    size_t v = fs->n_views - 1;
    while (fs->view_base[v] > ino) v--;
    n->view = v;
    n->m = fs->views[v];
    n->idx = (size_t)(ino - fs->view_base[v]);
    return 0;
}

#if QFS_HAVE_PASSTHROUGH
/* Whether this process holds CAP_SYS_ADMIN in the initial user namespace: the kernel grants
 * backing files for passthrough only then (they are invisible to lsof). */
static bool admin_in_initial_ns(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    unsigned long long eff = 0;
    bool found = false;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "CapEff: %llx", &eff) == 1) found = true;
    if (f) fclose(f);
    if (!found || !(eff & (1ull << 21))) return false;   /* CAP_SYS_ADMIN is bit 21 */
    unsigned long long inside = 1, outside = 1, count = 0;
    f = fopen("/proc/self/uid_map", "re");
    bool initial = f && fscanf(f, "%llu %llu %llu", &inside, &outside, &count) == 3 &&
                   inside == 0 && outside == 0 && count == 4294967295ull;
    if (f) fclose(f);
    return initial;
}
#endif

/* An entry's inode, and its attributes with that number. */
static fuse_ino_t ino_of(const qfs_fs *fs, size_t view, size_t idx)
{
    return fs->view_base[view] + idx;
}

static struct stat attr_of(const qfs_fs *fs, const node *n)
{
    if (n->top) return fs->top_st;
    struct stat st = n->m->entries[n->idx].st;
    st.st_ino = (ino_t)ino_of(fs, n->view, n->idx);
    return st;
}

int qfs_fs_set_views(qfs_fs *fs)
{
    fs->view_base = calloc(fs->n_views, sizeof *fs->view_base);
    fs->view_bytes_served = calloc(fs->n_views, sizeof *fs->view_bytes_served);
    if (!fs->view_base || !fs->view_bytes_served) return -ENOMEM;
    fuse_ino_t next = fs->n_views > 1 ? 2 : 1;
    for (size_t v = 0; v < fs->n_views; v++) {
        fs->view_base[v] = next;
        next += fs->views[v]->n_entries;
        atomic_init(&fs->view_bytes_served[v], 0);
    }
    fs->n_inodes = next - 1;
    fs->model = fs->views[0];
    if (fs->n_views > 1) {
        fs->top_st = fs->views[0]->entries[0].st;
        fs->top_st.st_ino = FUSE_ROOT_ID;
        fs->top_st.st_nlink = (nlink_t)(2 + fs->n_views);
    }
    fs->read_error_logged = calloc(fs->n_inodes + 1, sizeof *fs->read_error_logged);
    fs->refusal_logged = calloc(fs->n_inodes + 1, sizeof *fs->refusal_logged);
    fs->modes = calloc(fs->n_inodes + 1, sizeof *fs->modes);
    if (!fs->read_error_logged || !fs->refusal_logged || !fs->modes) return -ENOMEM;
    for (fuse_ino_t i = 0; i <= fs->n_inodes; i++) {
        pthread_mutex_init(&fs->modes[i].lock, NULL);
        atomic_flag_clear(&fs->read_error_logged[i]);
        atomic_flag_clear(&fs->refusal_logged[i]);
    }
    return 0;
}

static int check_requester(qfs_fs *fs, fuse_req_t req, const node *n, int mode);

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    qfs_fs *fs = userdata;
    if (fs->max_background) {
        conn->max_background = fs->max_background;
        conn->congestion_threshold = fs->max_background * 3 / 4;
    }
    const char *why;
#if QFS_HAVE_PASSTHROUGH
    /* The view never changes: no need for the kernel to re-check size/mtime on open. */
    fuse_unset_feature_flag(conn, FUSE_CAP_AUTO_INVAL_DATA);
    /* Asked for only when offered: libfuse fails INIT for a wanted flag the kernel lacks. No
     * writeback cache (the kernel would drop passthrough); backing files must not sit on
     * overlayfs or another passthrough mount (depth 0). */
    if (!fs->files) why = fs->no_files_why ? fs->no_files_why : "no view files";
    else if (fs->passthrough_off) why = "-o passthrough=off";
    else if (qfs_viewfiles_stacked(fs->files))
        why = "the cache directory is on a FUSE filesystem or overlayfs, whose files the "
              "kernel refuses as backing files";
    else if (!admin_in_initial_ns())
        why = "the daemon lacks CAP_SYS_ADMIN in the initial user namespace";
    else if (!fuse_set_feature_flag(conn, FUSE_CAP_PASSTHROUGH))
        why = "the kernel offers no FUSE passthrough (Linux >= 6.9 with "
              "CONFIG_FUSE_PASSTHROUGH)";
    else {
        conn->max_backing_stack_depth = 0;
        fs->passthrough = true;
        why = NULL;
    }
#else
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    why = fs->files ? "quarkfs was built with libfuse " QFS_STR(FUSE_MAJOR_VERSION) "."
                      QFS_STR(FUSE_MINOR_VERSION) " (passthrough needs >= 3.17)"
                    : fs->no_files_why ? fs->no_files_why : "no view files";
#endif
    if (why)
        snprintf(fs->passthrough_why, sizeof fs->passthrough_why, "channel: %s", why);
    else
        snprintf(fs->passthrough_why, sizeof fs->passthrough_why, "passthrough");
    if (!fs->files)
        fs->log(LOG_INFO, "complete view files: none (%s); every file is assembled", why);
    else
        fs->log(LOG_INFO, "complete view files (files/ of the disk cache) are served %s%s",
                why ? "through the FUSE channel by pread: " : "by the kernel (FUSE passthrough)",
                why ? why : "");
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    qfs_fs *fs = fs_of(req);
    node dir = {0}, n = {0};
    int rc = node_of(fs, parent, &dir);
    if (!rc && dir.top) {
        rc = -ENOENT;
        for (size_t v = 0; v < fs->n_views && rc; v++)
            if (strcmp(fs->view_names[v], name) == 0) {
                rc = node_of(fs, ino_of(fs, v, 0), &n);
            }
    } else if (!rc) {
        n = dir;
        rc = qfs_model_lookup(dir.m, dir.idx, name, &n.idx);
    }
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    struct fuse_entry_param ep;
    memset(&ep, 0, sizeof ep);
    ep.ino = ino_of(fs, n.view, n.idx);
    ep.generation = 1;
    ep.attr = attr_of(fs, &n);
    ep.attr_timeout = fs->timeout;
    ep.entry_timeout = fs->timeout;
    fuse_reply_entry(req, &ep);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    qfs_fs *fs = fs_of(req);
    node n = {0};
    if (node_of(fs, ino, &n)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st = attr_of(fs, &n);
    fuse_reply_attr(req, &st, fs->timeout);
}

/* A write-like request on entry ino (for name in it, if name): EROFS, logged once per entry. */
static void refuse(fuse_req_t req, fuse_ino_t ino, const char *name, const char *what)
{
    qfs_fs *fs = fs_of(req);
    node n = {0};
    if (node_of(fs, ino, &n) == 0 && !atomic_flag_test_and_set(&fs->refusal_logged[ino]))
        fs->log(LOG_WARNING, "%s%s%s: %s refused (EROFS): the view is read-only; change the "
                "source and remount, or `quarkfs export` a writable copy",
                n.top ? fs->model->src_root : n.m->entries[n.idx].src_path, name ? "/" : "",
                name ? name : "", what);
    fuse_reply_err(req, EROFS);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    (void)attr; (void)to_set; (void)fi;
    refuse(req, ino, NULL, "setattr (chmod, chown, truncate, utimes)");
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)mode; (void)rdev;
    refuse(req, parent, name, "mknod");
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    (void)mode;
    refuse(req, parent, name, "mkdir");
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    refuse(req, parent, name, "unlink");
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    refuse(req, parent, name, "rmdir");
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    (void)link;
    refuse(req, parent, name, "symlink");
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    (void)newparent; (void)newname; (void)flags;
    refuse(req, parent, name, "rename");
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    (void)ino;
    refuse(req, newparent, newname, "link");
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    (void)mode; (void)fi;
    refuse(req, parent, name, "create");
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    (void)name; (void)value; (void)size; (void)flags;
    refuse(req, ino, NULL, "setxattr");
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    (void)name;
    refuse(req, ino, NULL, "removexattr");
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    qfs_fs *fs = fs_of(req);
    node n = {0};
    if (node_of(fs, ino, &n)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (!n.top && n.m->entries[n.idx].kind != QFS_ENTRY_DIR) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    int arc = check_requester(fs, req, &n, R_OK);
    if (arc) {
        fuse_reply_err(req, -arc);
        return;
    }
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
    fuse_reply_open(req, fi);
}

/* Offsets: 0 = ".", 1 = "..", 2 + i = child i. */
static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    qfs_fs *fs = fs_of(req);
    node dn = {0};
    if (node_of(fs, ino, &dn)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    const qfs_entry *d = dn.top ? NULL : &dn.m->entries[dn.idx];
    size_t n_children = dn.top ? fs->n_views : d->n_children;
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    for (off_t i = off; (size_t)i < n_children + 2; i++) {
        const char *name = i == 0 ? "." : i == 1 ? ".." : NULL;
        struct stat st = {0};
        if (dn.top) {   /* the listing root: itself, then one directory per view */
            st = fs->top_st;
            if (i >= 2) {
                st.st_ino = (ino_t)ino_of(fs, (size_t)i - 2, 0);
                name = fs->view_names[i - 2];
            }
        } else {
            size_t e = i == 0 ? dn.idx : i == 1 ? d->parent : d->children[i - 2];
            st = dn.m->entries[e].st;
            st.st_ino = (ino_t)ino_of(fs, dn.view, e);
            if (i == 1 && dn.idx == 0 && fs->n_views > 1) st = fs->top_st;   /* a view's ".." */
            if (!name) name = dn.m->entries[e].name;
        }
        struct stat de = {.st_ino = st.st_ino, .st_mode = st.st_mode};
        size_t n = fuse_add_direntry(req, buf + used, size - used, name, &de, i + 1);
        if (n > size - used) break;
        used += n;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

/* The FUSE INIT reply caps the bdi readahead at the kernel's 128 KiB offer, so the mount's own
 * setting is raised once INIT is done: at the first open, before any read. */
static void apply_readahead(qfs_fs *fs)
{
    if (!fs->readahead_path[0] || atomic_flag_test_and_set(&fs->readahead_done)) return;
    FILE *f = fopen(fs->readahead_path, "w");
    bool ok = f && fprintf(f, "%u\n", fs->readahead_kb) >= 0;
    if (f && fclose(f) != 0) ok = false;   /* the write happens here; f is closed either way */
    if (!ok)
        fs->log(LOG_INFO, "readahead left at the kernel default (%s: %s)", fs->readahead_path,
                strerror(errno));
}

/* Whether the class of sb's mode bits that applies to the requester (owner, else group, else
 * other, as the kernel picks it) grants every bit of mode. */
static bool mode_bits_allow(const struct stat *sb, int mode, uid_t uid, gid_t gid,
                            const gid_t *groups, int n_groups)
{
    bool in_group = sb->st_gid == gid;
    for (int i = 0; i < n_groups && !in_group; i++) in_group = groups[i] == sb->st_gid;
    int shift = sb->st_uid == uid ? 6 : in_group ? 3 : 0;
    return ((sb->st_mode >> shift) & (mode_t)mode) == (mode_t)mode;
}

/* One path by its current mode bits; any access ACL refuses it (evaluating ACLs is the
 * kernel's job, and only a root daemon can ask the kernel as another user). */
static int bits_allow_path(const char *path, int mode, uid_t uid, gid_t gid,
                           const gid_t *groups, int n_groups)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return -errno;
    if (getxattr(path, "system.posix_acl_access", NULL, 0) > 0) return -EACCES;
    return mode_bits_allow(&sb, mode, uid, gid, groups, n_groups) ? 0 : -EACCES;
}

/* Search permission on every directory above path, "/" included. */
static int dirs_allow(const char *path, uid_t uid, gid_t gid, const gid_t *groups,
                      int n_groups)
{
    char dir[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof dir) return -ENAMETOOLONG;
    memcpy(dir, path, n + 1);
    int rc = path[0] == '/' ? bits_allow_path("/", X_OK, uid, gid, groups, n_groups) : 0;
    for (size_t i = 1; i < n && rc == 0; i++) {
        if (dir[i] != '/') continue;
        dir[i] = '\0';
        rc = bits_allow_path(dir, X_OK, uid, gid, groups, n_groups);
        dir[i] = '/';
    }
    return rc;
}

/* By the current mode bits of every directory on the way (as written and, through symlinks,
 * as resolved) and of the file; any of them with an ACL is refused. */
static int bits_allow_all(const char *path, int mode, uid_t uid, gid_t gid, const gid_t *groups,
                          int n_groups)
{
    int rc = dirs_allow(path, uid, gid, groups, n_groups);
    char real[PATH_MAX];
    if (rc == 0 && realpath(path, real) && strcmp(real, path) != 0)
        rc = dirs_allow(real, uid, gid, groups, n_groups);
    return rc ? rc : bits_allow_path(path, mode, uid, gid, groups, n_groups);
}

/* Another user of an allow_other view gets a file only if the source would give it to them
 * now: the permission bits the kernel checks (default_permissions) are a snapshot of mount
 * time and know nothing of ACLs. A root daemon asks the kernel itself, as that user: this
 * thread's filesystem ids and supplementary groups are switched (setfsuid/setfsgid and the raw
 * setgroups system call are per thread; glibc's setgroups would change every thread), the
 * path is checked with faccessat(AT_EACCESS) (mode bits, ACLs, every directory on the way, as
 * of now), and the ids are put back. A daemon that cannot switch ids (not root, or root
 * without CAP_SETUID/CAP_SETGID, where setfsuid fails without saying so and faccessat would
 * answer for root) checks the current mode bits itself (bits_allow_all). 0 or -errno. */
static int source_access_as(const char *path, int mode, uid_t uid, gid_t gid,
                            const gid_t *groups, int n_groups)
{
    if (geteuid() == 0) {
        gid_t saved[256];
        int n_saved = getgroups(256, saved);
        if (n_saved >= 0 && syscall(SYS_setgroups, (size_t)n_groups, groups) == 0) {
            uid_t old_uid = (uid_t)setfsuid((uid_t)-1);
            gid_t old_gid = (gid_t)setfsgid((gid_t)-1);
            setfsgid(gid);
            setfsuid(uid);
            int rc = 1;   /* read the ids back: set*fsid report no failure */
            if ((uid_t)setfsuid((uid_t)-1) == uid && (gid_t)setfsgid((gid_t)-1) == gid)
                rc = faccessat(AT_FDCWD, path, mode, AT_EACCESS) == 0 ? 0 : -errno;
            setfsuid(old_uid);
            setfsgid(old_gid);
            syscall(SYS_setgroups, (size_t)n_saved, saved);
            if (rc <= 0) return rc;
        }
    }
    return bits_allow_all(path, mode, uid, gid, groups, n_groups);
}

/* 0 if the requester may have entry idx's bytes now (see source_access_as), else -errno. The
 * mount's owner and root are not checked: the daemon reads as them. */
static int check_requester(qfs_fs *fs, fuse_req_t req, const node *nd, int mode)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    if (ctx->uid == 0 || ctx->uid == getuid()) return 0;
    gid_t groups[256];
    int n = fuse_req_getgroups(req, 256, groups);
    if (n < 0) n = 0;                   /* unknown: the primary group only (stricter) */
    if (n > 256) n = 256;
    return source_access_as(nd->top ? fs->model->src_root : nd->m->entries[nd->idx].src_path,
                            mode, ctx->uid, ctx->gid, groups, n);
}

/* What an open of a file holds (fi->fh). */
typedef struct open_file {
    int src_fd;              /* qfs_view_open's descriptor (-1 for quantized files) */
    int view_fd;             /* a complete view file read by pread, or -1 */
    bool pt;                 /* served by the kernel from the backing file */
    bool chan;               /* counted as a channel open of its entry */
    struct open_file *prev, *next;   /* in fs->opens while open */
} open_file;

static void release_file(qfs_fs *fs, fuse_req_t req, fuse_ino_t ino, open_file *of);
static void close_file(qfs_fs *fs, open_file *of);

/* How an open of quantized entry nd (inode ino) is served (see qfs_file_mode): the kernel from
 * its view file, pread of that file, or the engine. */
static void choose_mode(qfs_fs *fs, fuse_req_t req, const node *nd, fuse_ino_t ino,
                        open_file *of, struct fuse_file_info *fi)
{
    (void)req;
    (void)fi;
    qfs_file_mode *fm = &fs->modes[ino];
    int vfd = -1;
    pthread_mutex_lock(&fm->lock);
#if QFS_HAVE_PASSTHROUGH
    if (fm->n_pt > 0 || (fm->backing_id && fm->n_chan == 0 && fs->passthrough)) {
        /* an open in passthrough, or an id kept by an interrupted one (see op_open) */
        fi->backing_id = fm->backing_id;
        fi->keep_cache = 0;
        fm->n_pt++;
        of->pt = true;
        pthread_mutex_unlock(&fm->lock);
        atomic_fetch_add(&fs->opens_passthrough, 1);
        return;
    }
#endif
    if (qfs_viewfiles_get(fs->files, nd->idx, &vfd) != 0) vfd = -1;
#if QFS_HAVE_PASSTHROUGH
    /* O_DIRECT on a backing file would take the backing filesystem's alignment rules, which
     * the channel does not impose: such an open of an idle inode stays on the channel. */
    if (vfd >= 0 && fm->n_chan == 0 && !(fi->flags & O_DIRECT) && fs->passthrough &&
        atomic_load(&fs->passthrough_failed) == 0) {
        int id = fuse_passthrough_open(req, vfd);   /* the kernel keeps its own reference */
        if (id > 0) {
            close(vfd);
            fm->backing_id = id;
            fi->backing_id = id;
            fi->keep_cache = 0;
            fm->n_pt = 1;
            of->pt = true;
            pthread_mutex_unlock(&fm->lock);
            atomic_fetch_add(&fs->opens_passthrough, 1);
            return;
        }
        int e = errno ? errno : EIO;
        int none = 0;
        if (atomic_compare_exchange_strong(&fs->passthrough_failed, &none, e)) {
            fs->log(LOG_WARNING, "%s: FUSE passthrough refused (%s%s): complete view files are "
                    "served through the channel from now on", nd->m->entries[nd->idx].path,
                    strerror(e), e == ELOOP ? ": the cache directory is on overlayfs or a "
                    "FUSE mount" : "");
        }
    }
#endif
    fm->n_chan++;
    of->chan = true;
    pthread_mutex_unlock(&fm->lock);
    if (vfd >= 0) {
        of->view_fd = vfd;
        atomic_fetch_add(&fs->opens_viewfile, 1);
    }
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    qfs_fs *fs = fs_of(req);
    apply_readahead(fs);
    node nd = {0};
    if (node_of(fs, ino, &nd) || nd.top) {
        fuse_reply_err(req, nd.top ? EISDIR : ENOENT);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        refuse(req, ino, NULL, "open for writing");
        return;
    }
    int arc = check_requester(fs, req, &nd, R_OK);
    if (arc) {
        fuse_reply_err(req, -arc);
        return;
    }
    qfs_error err = {{0}};
    int fd, rc = qfs_view_open(nd.m, nd.idx, &fd, &err);
    if (rc) {
        if (!atomic_flag_test_and_set(&fs->read_error_logged[ino]))
            fs->log(LOG_ERR, "%s", err.msg);
        fuse_reply_err(req, -rc);
        return;
    }
    open_file *of = malloc(sizeof *of);
    if (!of) {
        qfs_view_close(fd);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    *of = (open_file){.src_fd = fd, .view_fd = -1};
    pthread_mutex_lock(&fs->opens_lock);
    of->next = fs->opens;
    if (of->next) of->next->prev = of;
    fs->opens = of;
    pthread_mutex_unlock(&fs->opens_lock);
    fi->keep_cache = 1;      /* the bytes never change: page-cache hits never reach us */
    fi->direct_io = 0;       /* mmap (every safetensors loader) needs the page cache */
    fi->noflush = 1;
    if (nd.m->entries[nd.idx].kind == QFS_ENTRY_QUANTIZED) choose_mode(fs, req, &nd, ino, of, fi);
    fi->fh = (uint64_t)(uintptr_t)of;
    if (fuse_reply_open(req, fi) == -ENOENT)   /* the opener was interrupted: no release */
        release_file(fs, NULL, ino, of);       /* and the reply has freed req */
}

/* Gives back what an open took: its descriptors and its count in the entry's mode. */
static void release_file(qfs_fs *fs, fuse_req_t req, fuse_ino_t ino, open_file *of)
{
    (void)req;
    if (of->pt || of->chan) {
        qfs_file_mode *fm = &fs->modes[ino];
        pthread_mutex_lock(&fm->lock);
        if (of->chan) fm->n_chan--;
#if QFS_HAVE_PASSTHROUGH
        /* Without a request (an open whose reply found the opener gone: libfuse has freed it)
         * the id stays registered for the next open instead of being closed. */
        if (of->pt && --fm->n_pt == 0 && req) {
            fuse_passthrough_close(req, fm->backing_id);
            fm->backing_id = 0;
        }
#endif
        pthread_mutex_unlock(&fm->lock);
    }
    close_file(fs, of);
}

/* Unlinks an open from fs->opens, closes its descriptors and frees it. */
static void close_file(qfs_fs *fs, open_file *of)
{
    pthread_mutex_lock(&fs->opens_lock);
    if (of->prev) of->prev->next = of->next;
    else fs->opens = of->next;
    if (of->next) of->next->prev = of->prev;
    pthread_mutex_unlock(&fs->opens_lock);
    if (of->view_fd >= 0) close(of->view_fd);
    qfs_view_close(of->src_fd);
    free(of);
}

void qfs_fs_free_open_files(qfs_fs *fs)
{
    while (fs->opens) close_file(fs, fs->opens);
}

static uint8_t *read_buf_get(qfs_fs *fs, size_t size)
{
    void *b = NULL;
    if (size <= QFS_READ_BUF_SIZE) {
        pthread_mutex_lock(&fs->read_bufs_lock);
        if (fs->n_read_bufs) b = fs->read_bufs[--fs->n_read_bufs];
        pthread_mutex_unlock(&fs->read_bufs_lock);
        if (!b) b = malloc(QFS_READ_BUF_SIZE);
    } else {
        b = malloc(size);
    }
    return b;
}

static void read_buf_put(qfs_fs *fs, uint8_t *b, size_t size)
{
    if (size <= QFS_READ_BUF_SIZE) {
        pthread_mutex_lock(&fs->read_bufs_lock);
        if (fs->n_read_bufs < QFS_READ_BUFS) {
            fs->read_bufs[fs->n_read_bufs++] = b;
            b = NULL;
        }
        pthread_mutex_unlock(&fs->read_bufs_lock);
    }
    free(b);
}

void qfs_fs_free_read_buffers(qfs_fs *fs)
{
    while (fs->n_read_bufs) free(fs->read_bufs[--fs->n_read_bufs]);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    qfs_fs *fs = fs_of(req);
    node nd = {0};
    if (node_of(fs, ino, &nd) || nd.top) {
        fuse_reply_err(req, nd.top ? EISDIR : ENOENT);
        return;
    }
    uint8_t *buf = read_buf_get(fs, size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    qfs_error err = {{0}};
    size_t got = 0;
    open_file *of = (open_file *)(uintptr_t)fi->fh;
    int rc;
    if (of->view_fd >= 0) {
        uint64_t fsize = (uint64_t)nd.m->entries[nd.idx].st.st_size;
        size_t want = (uint64_t)off >= fsize ? 0
                      : fsize - (uint64_t)off < size ? (size_t)(fsize - (uint64_t)off) : size;
        rc = qfs_pread_full(of->view_fd, buf, want, (uint64_t)off);
        if (rc) qfs_error_set(&err, "%s: its view file cannot be read: %s",
                              nd.m->entries[nd.idx].path, strerror(-rc));
        got = rc ? 0 : want;
    } else {
        rc = qfs_view_read(nd.m, fs->engine, nd.idx, of->src_fd, buf, size, (uint64_t)off,
                           &got, &err);
        if (rc == 0) qfs_viewfiles_note_read(fs->files, nd.idx, got);
    }
    if (rc) {
        if (!atomic_flag_test_and_set(&fs->read_error_logged[ino]))
            fs->log(LOG_ERR, "%s", err.msg);
        fuse_reply_err(req, -rc);   /* the engine turned kernel failures into EIO */
    } else {
        atomic_fetch_add(&fs->bytes_served, got);
        atomic_fetch_add(&fs->view_bytes_served[nd.view], got);
        fuse_reply_buf(req, (const char *)buf, got);
    }
    read_buf_put(fs, buf, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    qfs_fs *fs = fs_of(req);
    node nd = {0};
    if (node_of(fs, ino, &nd) == 0 && !nd.top)
        release_file(fs, req, ino, (open_file *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    qfs_fs *fs = fs_of(req);
    struct statvfs sv;
    memset(&sv, 0, sizeof sv);
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    uint64_t bytes = 0;
    for (size_t v = 0; v < fs->n_views; v++)
        for (size_t i = 0; i < fs->views[v]->n_entries; i++)
            bytes += (uint64_t)fs->views[v]->entries[i].st.st_size;
    sv.f_blocks = (bytes + 4095) / 4096;
    sv.f_files = fs->n_inodes;
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &sv);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    (void)ino;
    fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* The counters of `quarkfs status` (their key names are an interface: scripts read them). */
static char *status_json(qfs_fs *fs, bool with_source)
{
    qfs_engine_stats st;
    qfs_engine_get_stats(fs->engine, &st);
    json_t *doc = json_pack(
        "{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:{s:I,s:I,s:I,s:I}}",
        "source", fs->model->src_root, "spec", fs->model->opts.spec->name,
        "format", qfs_format_name(fs->model->opts.format),
        "tensors_quantized", (json_int_t)st.tensors_quantized,
        "memory_hits", (json_int_t)st.memory_hits, "disk_hits", (json_int_t)st.disk_hits,
        "bytes_quantized", (json_int_t)st.bytes_quantized,
        "bytes_served", (json_int_t)atomic_load(&fs->bytes_served),
        "seconds_quantizing", st.seconds_quantizing,
        "scales_computed", (json_int_t)st.scales_computed,
        "disk_writes", (json_int_t)st.disk_writes, "evictions", (json_int_t)st.evictions,
        "weights_in_bands", (json_int_t)st.weights_in_bands,
        "early_reads", (json_int_t)st.early_reads,
        "scales_bytes", (json_int_t)st.scales_bytes,
        "scales_evictions", (json_int_t)st.scales_evictions,
        "disk_cache", st.disk_cache,
        "warm", "tensors", (json_int_t)st.warm_jobs, "tensors_done", (json_int_t)st.warm_done,
        "bytes", (json_int_t)st.warm_bytes, "bytes_done", (json_int_t)st.warm_bytes_done);
    /* What a health check needs beyond the counters: the build, the uptime, memory against
     * its budget, the disk cache, and the files that answer EIO. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    json_t *broken = json_array(), *views = json_array();
    for (size_t v = 0; doc && broken && views && v < fs->n_views; v++) {
        const qfs_model *m = fs->views[v];
        size_t files = 0, n_broken = 0;
        for (size_t i = 0; i < m->n_entries; i++) {
            const qfs_entry *e = &m->entries[i];
            files += e->kind == QFS_ENTRY_QUANTIZED;
            if (!e->error) continue;
            n_broken++;
            /* several views: a file's path starts with its view's directory */
            char path[4096];
            snprintf(path, sizeof path, "%s%s%s", fs->n_views > 1 ? fs->view_names[v] : "",
                     fs->n_views > 1 ? "/" : "", e->path);
            json_array_append_new(broken, json_pack("{s:s,s:s}", "file", path, "error",
                                                    e->error_msg ? e->error_msg : ""));
        }
        /* what each view is and what it served; the engine's counters are for all of them */
        json_array_append_new(views, json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I}",
            "name", fs->n_views > 1 ? fs->view_names[v] : "", "spec", m->opts.spec->name,
            "format", qfs_format_name(m->opts.format), "quantized_files", (json_int_t)files,
            "broken_files", (json_int_t)n_broken, "view_bytes", (json_int_t)m->view_bytes,
            "bytes_served", (json_int_t)atomic_load(&fs->view_bytes_served[v])));
    }
    if (doc && views) json_object_set(doc, "views", views);
    if (doc && fs->n_views > 1) {   /* several views: the spec and format of each, in order */
        char specs[1024] = "", formats[1024] = "";
        for (size_t v = 0; v < fs->n_views; v++) {
            const qfs_model *m = fs->views[v];
            size_t a = strlen(specs), b = strlen(formats);
            snprintf(specs + a, sizeof specs - a, "%s%s", v ? "," : "", m->opts.spec->name);
            snprintf(formats + b, sizeof formats - b, "%s%s", v ? "," : "",
                     qfs_format_name(m->opts.format));
        }
        json_object_set_new(doc, "spec", json_string(specs));
        json_object_set_new(doc, "format", json_string(formats));
    }
    json_decref(views);
    if (doc && broken)
        json_object_update_new(doc, json_pack("{s:s,s:f,s:I,s:I,s:s?,s:I,s:o}",
            "version", fs->version ? fs->version : "unknown",
            "uptime_seconds", (double)(now.tv_sec - fs->started.tv_sec) +
                              (double)(now.tv_nsec - fs->started.tv_nsec) * 1e-9,
            "memory_bytes", (json_int_t)st.memory_used,
            "cache_mem", (json_int_t)st.memory_budget,
            "cache_dir", st.disk_dir, "cache_dir_bytes", (json_int_t)st.disk_bytes,
            "broken_files", broken));
    else
        json_decref(broken);
    if (doc)
        json_object_update_new(doc, json_pack("{s:{s:I,s:I,s:I,s:I},s:I,s:I,s:I}",
            "cache_queue", "queued", (json_int_t)st.disk_queued,
            "bytes", (json_int_t)st.disk_queued_bytes, "written", (json_int_t)st.disk_writes,
            "dropped", (json_int_t)st.disk_dropped,
            "memo_hits", (json_int_t)st.memo_hits, "memo_rehashes", (json_int_t)st.memo_rehashes,
            "source_reads", (json_int_t)st.source_reads));
    qfs_viewfiles_stats vs;
    qfs_viewfiles_get_stats(fs->files, &vs);
    char why[sizeof fs->passthrough_why + 64];
    int refused = atomic_load(&fs->passthrough_failed);
    if (refused)
        snprintf(why, sizeof why, "channel: the kernel refused a backing file (%s)",
                 strerror(refused));
    else   /* set by INIT, which the kernel completes before any other request */
        snprintf(why, sizeof why, "%s", fs->passthrough_why);
    if (doc)
        json_object_set_new(doc, "view_files", json_pack(
            "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
            "served_by", why,
            "present", (json_int_t)vs.present, "queued", (json_int_t)vs.queued,
            "written", (json_int_t)vs.written, "bytes_written", (json_int_t)vs.bytes_written,
            "skipped", (json_int_t)vs.skipped, "rejected", (json_int_t)vs.rejected,
            "opens_passthrough", (json_int_t)atomic_load(&fs->opens_passthrough),
            "opens_channel", (json_int_t)atomic_load(&fs->opens_viewfile)));
    if (doc && !with_source) json_object_del(doc, "source");
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return s;
}

static void start_warm(qfs_fs *fs)
{
    qfs_tensor_source **srcs = calloc(fs->n_inodes + 1, sizeof *srcs);
    size_t n = 0;
    if (!srcs) return;
    for (size_t v = 0; v < fs->n_views; v++) {   /* every view, in the order of --specs */
        qfs_model *m = fs->views[v];
        for (size_t i = 0; i < m->n_entries; i++)
            if (m->entries[i].kind == QFS_ENTRY_QUANTIZED && !m->entries[i].error)
                srcs[n++] = m->entries[i].source;
    }
    qfs_engine_warm(fs->engine, srcs, n);
    qfs_viewfiles_after_warm(fs->files);
    free(srcs);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    qfs_fs *fs = fs_of(req);
    bool status = strcmp(name, QFS_XATTR_STATUS) == 0, warm = strcmp(name, QFS_XATTR_WARM) == 0;
    if (ino != FUSE_ROOT_ID || (!status && !warm)) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    /* With allow_other, any user reaches these: a warm-up spends the owner's CPU and cache,
     * and the source path is the owner's business. Only the mount's owner (the daemon's
     * user) and root start one or see SRC; others get the counters. */
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    bool owner = ctx->uid == 0 || ctx->uid == getuid();
    if (warm && !owner) {
        fuse_reply_err(req, EPERM);
        return;
    }
    if (warm && size) start_warm(fs);   /* not on the size probe: once per real request */
    char *s = status_json(fs, owner);
    if (!s) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t len = strlen(s);
    if (size == 0) fuse_reply_xattr(req, len);
    else if (size < len) fuse_reply_err(req, ERANGE);
    else fuse_reply_buf(req, s, len);
    free(s);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    (void)ino;
    if (size == 0) fuse_reply_xattr(req, 0);
    else fuse_reply_buf(req, NULL, 0);
}

const struct fuse_lowlevel_ops qfs_fs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .create = op_create,
    .setxattr = op_setxattr,
    .removexattr = op_removexattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .statfs = op_statfs,
    .access = op_access,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
};
