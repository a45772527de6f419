/* quarkfs — the FUSE low-level operations, mapped onto the core's model and view. */
#ifndef QUARKFS_FS_OPS_H
#define QUARKFS_FS_OPS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "defaults.h"
#include "quarkfs/engine.h"
#include "quarkfs/model.h"
#include "quarkfs/viewfile.h"

/* FUSE passthrough (the kernel reads a complete view file from the disk cache itself) needs
 * libfuse >= 3.17 at build time. */
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
#define QFS_HAVE_PASSTHROUGH 1
#else
#define QFS_HAVE_PASSTHROUGH 0
#endif

typedef void (*qfs_log_fn)(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Everything the operations need: the userdata of the FUSE session. */
#define QFS_READ_BUF_SIZE (1u << 20)  /* the kernel's largest read request (256 pages) */

/* Per quantized file: how its live opens are served. The kernel lets an inode's opens be all
 * passthrough or all channel at a time (the other kind gets EIO), so the first open of an idle
 * inode decides, and later ones follow while any lives (an mmap keeps its open alive). */
typedef struct qfs_file_mode {
    pthread_mutex_t lock;
    unsigned n_pt, n_chan;      /* live opens of each kind (released ones are subtracted) */
    int backing_id;             /* registered backing file while n_pt > 0 */
} qfs_file_mode;

typedef struct qfs_fs {
    qfs_model *model;           /* the first view (the only one unless --specs) */
    /* The views: one, at the root; or, with --specs, several, each a directory
     * MNT/<view_names[v]>/ below a root that lists them. Inode numbers: entry i of view v is
     * view_base[v] + i; with several views inode 1 is that listing root. One engine serves
     * them all (one memory budget, one disk cache). */
    qfs_model **views;
    const char **view_names;
    fuse_ino_t *view_base;
    size_t n_views;
    fuse_ino_t n_inodes;        /* the highest inode number */
    struct stat top_st;         /* the listing root's attributes (several views) */
    atomic_uint_fast64_t *view_bytes_served;   /* per view, for `quarkfs status` */
    qfs_engine *engine;         /* created after daemonizing, before the loop starts */
    qfs_log_fn log;
    double timeout;             /* entry/attr timeout: the view never changes while mounted */
    unsigned max_background;    /* FUSE background requests (kernel default 12) */
    atomic_flag *read_error_logged; /* one per inode: log a file's read error once */
    atomic_flag *refusal_logged;    /* one per inode: log a refused write to it once */
    char readahead_path[128];   /* /sys/class/bdi/MAJ:MIN/read_ahead_kb of the mount, or "" */
    unsigned readahead_kb;
    atomic_flag readahead_done; /* applied at the first open: FUSE INIT resets it before that */
    atomic_uint_fast64_t bytes_served;   /* bytes answered to read requests */
    const char *version;        /* for `quarkfs status` */
    struct timespec started;    /* CLOCK_MONOTONIC at mount, for the uptime */
    /* Reply buffers of read requests, kept for the next request: a fresh 1 MiB buffer is
     * mapped and zeroed by the kernel on first touch, on every request. */
    pthread_mutex_t read_bufs_lock;
    void *read_bufs[QFS_READ_BUFS];
    unsigned n_read_bufs;
    /* Materialized view files (NULL without a disk cache) and how they are served. */
    qfs_viewfiles *files;
    qfs_file_mode *modes;       /* one per inode (qfs_fs_set_views), across all views */
    const char *no_files_why;   /* why files is NULL (no disk cache, view_files=off, ...) */
    bool passthrough_off;       /* -o passthrough=off */
    bool passthrough;           /* negotiated at INIT: opens of complete files try it */
    atomic_int passthrough_failed;    /* errno of the kernel's refusal of a backing file (then
                                       * the channel from now on), 0 while none */
    char passthrough_why[256];  /* how view files are served, and why: set at INIT */
    atomic_uint_fast64_t opens_passthrough;   /* opens served by the kernel from a view file */
    atomic_uint_fast64_t opens_viewfile;      /* opens served by pread of a view file */
    /* Every open not yet released: a daemon stopped by a signal gets no release for them. */
    pthread_mutex_t opens_lock;
    struct open_file *opens;
} qfs_fs;

/* Lays out the inode numbers of fs->views (n_views >= 1) and allocates the per-inode flags.
 * 0 or -ENOMEM. */
int qfs_fs_set_views(qfs_fs *fs);

/* Frees the kept reply buffers (after the session loop). */
void qfs_fs_free_read_buffers(qfs_fs *fs);
/* Closes and frees the opens the kernel never released; after the session is destroyed. */
void qfs_fs_free_open_files(qfs_fs *fs);

/* Extended attributes of the mount's root that `quarkfs status` and `quarkfs warm` read: the
 * counters as JSON, and (with a side effect) the start of a warm-up. Nothing shows in the view. */
#define QFS_XATTR_STATUS "user.quarkfs.status"
#define QFS_XATTR_WARM "user.quarkfs.warm"

/* The operation table (read-only: every write-like request gets EROFS, logged once per file;
 * the mount being read-only, the kernel refuses most writes before they reach us). */
extern const struct fuse_lowlevel_ops qfs_fs_ops;

#endif
