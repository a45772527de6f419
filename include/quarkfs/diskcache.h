/* quarkfs — the persistent cache: quantized tensors on disk, keyed by content.
 *
 * Key = XXH3-128 of the recipe (quantizer version, spec, format, source dtype and shape) and of
 * the XXH3-128 of the source tensor's bytes (its content hash, which srcid.h remembers), so a changed source or a new quantizer never reuses an entry and
 * two machines with identical sources can share one directory (NFS included). An entry is one
 * file written to tmp/ and renamed into place (never torn); its header repeats the key and holds
 * checksums of both parts, so a corrupt, truncated or foreign entry is detected, removed and
 * recomputed, never served. The budget covers the whole directory: entries, memos and view
 * files (viewfile.h) are trimmed by one policy, least recently used first (by mtime, refreshed
 * on every hit), when the directory grows past it; lock files no one holds are removed.
 * Thread-safe. */
#ifndef QUARKFS_DISKCACHE_H
#define QUARKFS_DISKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quarkfs/error.h"

typedef struct qfs_cache_key {
    uint8_t bytes[16];
} qfs_cache_key;

typedef struct qfs_diskcache qfs_diskcache;

/* XXH3-128 of the recipe text, a NUL, then the bytes; a tensor's key hashes its content hash
 * this way (qfs_srcmemo_key). */
void qfs_cache_key_compute(const char *recipe, const void *src, size_t len, qfs_cache_key *out);
/* Writes the key as 32 lowercase hex digits and a NUL (the file names of the cache). */
void qfs_cache_key_hex(const qfs_cache_key *k, char out[33]);

/* Opens (creating, mode 0700) the cache under dir with a byte budget; removes leftovers of
 * writers that died (temporary files older than a few minutes) and, when it holds more than
 * max_bytes, trims it as a write would. The directory must be one no
 * other user can write: every level from / owned by root or this user and writable by no one
 * else (sticky directories such as /tmp allowed above it), and the same for tmp/, locks/ and
 * v1/ (a symlink or file in their place is removed, never followed): else -EPERM with err
 * saying which level, and the caller goes on without a disk cache. A directory with entries
 * that takes no writes opens read-only (hits only; 0 with a note in err). Else 0, or -errno
 * with err set. Every later access goes through the directories opened here, component by
 * component without following symlinks: nothing outside dir is read, written or removed. */
int qfs_diskcache_open(const char *dir, uint64_t max_bytes, qfs_diskcache **out, qfs_error *err);
/* Closes the cache (the files stay). */
void qfs_diskcache_close(qfs_diskcache *c);

/* Looks up key. On a hit fills scales (exactly scales_len bytes) and, if weight is non-NULL,
 * weight (weight_len); only the parts read are checksummed. Only a regular file owned by this
 * user (or root) and writable by no one else is read; anything else in its place (a directory,
 * FIFO, symlink, another user's file) is never opened for reading, and is removed. 0 on a hit,
 * -ENOENT on a miss or a bad entry (removed), another -errno on an I/O error. */
int qfs_diskcache_get(qfs_diskcache *c, const qfs_cache_key *key, void *scales,
                      size_t scales_len, void *weight, size_t weight_len);

/* How qfs_diskcache_put writes a weight of 1 MiB or more: DIRECT bypasses the page cache
 * (O_DIRECT: no CPU copy, but the call lasts as long as the disk takes) where the filesystem
 * and the weight's address allow it (4 KiB-aligned); BUFFERED copies it into the page cache
 * (the call returns at memory speed, the kernel writes it back later). Same bytes on disk. */
typedef enum qfs_diskcache_write {
    QFS_DISKCACHE_DIRECT,
    QFS_DISKCACHE_BUFFERED,
} qfs_diskcache_write;

/* Stores an entry atomically, then trims the directory to its budget. 0, or -errno (ENOSPC,
 * EROFS, EACCES, ...): the caller decides whether to stop using the cache. */
int qfs_diskcache_put(qfs_diskcache *c, const qfs_cache_key *key, const void *scales,
                      size_t scales_len, const void *weight, size_t weight_len,
                      qfs_diskcache_write how);

/* Read-only: hits are served, nothing is written (put answers -EROFS), no lock is taken. A
 * directory opened read-only stays so. */
bool qfs_diskcache_readonly(qfs_diskcache *c);

/* Whether the directory is on a FUSE filesystem (GlusterFS, CephFS's or s3's FUSE clients and
 * the like: usually a store that several machines share). */
bool qfs_diskcache_on_fuse(const qfs_diskcache *c);
/* Stops writes after one failed (full, read-only or unreachable store): the cache is
 * read-only for some seconds, then a write is tried again, and the first that succeeds ends
 * the pause; a shared store that comes back is used again without a remount. true when
 * writes were on until now (a new outage: worth one warning), false while one lasts. */
bool qfs_diskcache_set_readonly(qfs_diskcache *c);

/* Takes an exclusive lock on key shared by every process using this directory (flock), so
 * usually only one of them computes a given tensor; *fd receives the lock (release with
 * _unlock). Waits at most a few seconds, and not at all for a while after a wait ran out:
 * -ETIMEDOUT then, and the caller computes the tensor anyway. Lock files are 0600 in a 0700
 * directory; one untouched for a minute is removed (at open and at each trim) when a
 * non-blocking lock on it succeeds, i.e. no one holds it. */
int qfs_diskcache_lock(qfs_diskcache *c, const qfs_cache_key *key, int *fd);
void qfs_diskcache_unlock(int fd);

/* Recipe markers: recipes/HASH, an empty file made before the first entry of a recipe (spec,
 * format, dtype, shape) is written. Where none exists no entry of that recipe can, so a tensor
 * can be quantized before its content hash is known (the hash is taken off the read path).
 * may_hold: false only when the marker is certainly absent. mark: 0 or -errno. */
bool qfs_diskcache_may_hold(qfs_diskcache *c, const char *recipe);
int qfs_diskcache_mark(qfs_diskcache *c, const char *recipe);

/* Memos of source files (srcid.h): memo/KEY.qfm, written atomically with a checksum like an
 * entry (and under the same ownership rules), counted in the budget and trimmed with the
 * entries (a memo removed only costs hashing the source again); one not read for a month is
 * removed at open. get: 0 with *data (malloc'd, the caller frees it) and *len, or
 * -ENOENT when absent or damaged (a damaged one is removed), another -errno on I/O errors.
 * put: 0 or -errno (-EROFS on a read-only cache). */
int qfs_diskcache_memo_get(qfs_diskcache *c, const qfs_cache_key *name, void **data,
                           size_t *len);
int qfs_diskcache_memo_put(qfs_diskcache *c, const qfs_cache_key *name, const void *data,
                           size_t len);

/* Makes room for need bytes about to be written into the directory by another store
 * (viewfile.h): the one trim runs (least recently used entries, memos and view files go first)
 * and need is counted as written. 0; -ENOSPC when need does not fit in the budget even so
 * (what was removed stays removed); -EROFS on a read-only cache. */
int qfs_diskcache_reserve(qfs_diskcache *c, uint64_t need);

/* Bytes counted against the budget (what the trim counts: entries, memos, view files and
 * their metas, files being written; lock files and recipe markers are empty): counted at
 * open and after each trim, plus this process's writes and reservations since. */
uint64_t qfs_diskcache_bytes(qfs_diskcache *c);
/* The directory in use. */
const char *qfs_diskcache_dir(const qfs_diskcache *c);
/* Its descriptor, opened and checked by qfs_diskcache_open (valid while c lives): other stores
 * under the same directory (viewfile.h) reach it through this, never by path. */
int qfs_diskcache_dirfd(const qfs_diskcache *c);

#endif
