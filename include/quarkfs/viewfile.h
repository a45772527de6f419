/* quarkfs — materialized view files: a quantized view file written whole into the disk cache
 * directory (files/), so that a later open can be served from that one local file (by the
 * kernel itself through FUSE passthrough, or by pread through the FUSE channel) instead of
 * being assembled tensor by tensor.
 *
 * Key = XXH3-128 of: this machine's id, the source file's identity (device, inode, size, mtime
 * and ctime in ns) as opened at mount, the spec, the format, the quantizer version and the
 * view file's header bytes and size. Whatever could change a byte of the view changes the key;
 * the machine id keeps a key made from local identities from matching on another machine that
 * shares the directory.
 *
 * Trust: files/ is a directory of the checked cache directory (owner-only, never followed
 * through a symlink). A view file is KEY.view (mode 0400), written to a temporary name,
 * fdatasync'd, renamed into place; then KEY.meta records the view file's inode, size and ctime
 * (any write, truncation, chmod or rename of the view file changes its ctime). A view file is
 * served only when it is a regular file of this user (or root), writable by no one else, of
 * the exact size, and its inode and ctime match KEY.meta; anything else is removed (unlinked,
 * never truncated: a file handed out stays intact for its readers) and the file is assembled
 * as before. View files count against the cache's size budget with everything else in the
 * directory: before one is written, the disk cache's one trim (qfs_diskcache_reserve) removes
 * the least recently used entries, memos and view files until it fits, and it is skipped when
 * it cannot fit. Thread-safe. */
#ifndef QUARKFS_VIEWFILE_H
#define QUARKFS_VIEWFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quarkfs/diskcache.h"
#include "quarkfs/engine.h"
#include "quarkfs/error.h"
#include "quarkfs/log.h"
#include "quarkfs/model.h"

typedef struct qfs_viewfiles qfs_viewfiles;

typedef struct qfs_viewfiles_stats {
    uint64_t present;        /* quantized files of the view with a usable view file now */
    uint64_t written;        /* view files this process wrote */
    uint64_t bytes_written;
    uint64_t queued;         /* files waiting to be written, or being written */
    uint64_t skipped;        /* not written: no room in the budget, a changed source, an error */
    uint64_t rejected;       /* view files found bad (size, owner, mode, inode, ctime): removed */
} qfs_viewfiles_stats;

/* Opens (creating, mode 0700) files/ in the directory of disk, and computes the key of every
 * quantized entry of m (an entry whose source changed since m was built gets none: never
 * materialized). max_bytes: the cache's budget. Leftover temporary files of dead writers are
 * removed. 0, or -errno with err set (the caller goes on without view files). disk and m
 * must outlive the result. */
int qfs_viewfiles_open(qfs_diskcache *disk, uint64_t max_bytes, const qfs_model *m,
                       qfs_viewfiles **out, qfs_error *err);
/* Starts the writer thread, which makes the view files of requested entries by reading the
 * view through e (qfs_view_read), only while no file was read for half a second (it pauses
 * while a load goes on). Call after any fork. 0 or -errno. */
int qfs_viewfiles_start(qfs_viewfiles *v, qfs_model *m, qfs_engine *e, qfs_log_callback log,
                        void *log_ctx);
/* Stops the writer (a file in progress is abandoned and removed) and frees v; NULL is fine. */
void qfs_viewfiles_close(qfs_viewfiles *v);

/* The view file of entry, checked as described above: 0 with *fd open read-only (the caller
 * closes it), -ENOENT when there is none (or it was bad and removed). Marks it used (LRU). */
int qfs_viewfiles_get(qfs_viewfiles *v, size_t entry, int *fd);
/* Asks for entry's view file to be written in the background (nothing if it exists, is queued,
 * or was skipped). Never blocks on the writing. */
void qfs_viewfiles_request(qfs_viewfiles *v, size_t entry);
/* Counts bytes served from entry (and notes the time: the writer waits for quiet); once as
 * many as its size were served (a whole-file read: its tensors were all produced), requests
 * its view file. */
void qfs_viewfiles_note_read(qfs_viewfiles *v, size_t entry, uint64_t bytes);
/* Requests every file's view file once the warm-up just queued (qfs_engine_warm) has finished
 * (the engine's warm counters); files skipped before are tried again. */
void qfs_viewfiles_after_warm(qfs_viewfiles *v);
/* Whether files/ sits on a FUSE filesystem (a network volume's client, another quarkfs) or on
 * overlayfs: stacking filesystems, whose files the kernel refuses as passthrough backing files
 * of a mount that others may stack on. */
bool qfs_viewfiles_stacked(const qfs_viewfiles *v);
/* The counters; `queued` includes the files of a finished warm-up not yet picked up. */
void qfs_viewfiles_get_stats(qfs_viewfiles *v, qfs_viewfiles_stats *out);

#endif
