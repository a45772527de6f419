/* quarkfs — knowing a source file's tensors without reading them.
 *
 * Disk cache keys are content keys (diskcache.h): they hash the source tensor's bytes, so an
 * entry is valid for every copy of a model, on every machine. Computing one costs a full read
 * of the tensor. A memo remembers the content hash of each tensor (its byte range) of one source
 * file under the file's identity, and is kept in the cache directory next to the entries: a
 * later mount of an unchanged file takes the hashes from the memo and reads nothing.
 *
 * The identity of a file is either
 *  - a Hugging Face cache blob (blobs/<sha256>, the target of a snapshot's symlink): its name is
 *    the sha256 of its content, so the memo named after it is valid on every machine that holds
 *    the blob (its size is part of the identity too); or
 *  - the file itself: machine id (/etc/machine-id: a cache directory shared by machines never
 *    confuses two files with equal inode numbers), device, inode, size, and modification and
 *    status-change times in nanoseconds. Any write, truncation, chmod or utime changes the
 *    change time, so an edited file never matches its old memo.
 * Identity alone is never a cache key: it only tells which content hashes can be reused.
 * A blob changed in place on this machine (same device and inode, new times) is not trusted
 * either: its memo records where it was hashed. */
#ifndef QUARKFS_SRCID_H
#define QUARKFS_SRCID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "quarkfs/diskcache.h"
#include "quarkfs/error.h"

typedef struct qfs_srcid {
    qfs_cache_key name;           /* XXH3-128 of the identity text: the memo's file name */
    bool blob;                    /* a Hugging Face blob, named by its sha256 */
    uint64_t size;
    uint64_t machine;             /* XXH3-64 of the machine id (0: unknown) */
    uint64_t dev, ino;
    struct timespec mtime, ctime;
} qfs_srcid;

/* Reads this machine's id (/etc/machine-id, else the boot id, which changes at every boot: a
 * memo then lives until the next boot) into *out as a hash. 0, or -ENOENT when there is none
 * (then only blob memos are used). */
int qfs_srcid_machine(uint64_t *out);

/* The identity of the open source file fd, found at path (for the blob test: its real path
 * must be .../blobs/<64 lowercase hex> and the same inode as fd; allow_blob false skips it).
 * machine: qfs_srcid_machine's value or 0. 0; -ENOENT when the file has no usable identity
 * (not a blob, machine unknown); another -errno with err set when fstat fails. */
int qfs_srcid_of(int fd, const char *path, bool allow_blob, uint64_t machine, qfs_srcid *out,
                 qfs_error *err);

/* Whether bytes just read from a file with this identity may be remembered: a file changed in
 * the last second could change again within one tick of its timestamps without its identity
 * moving, so such a file is hashed but not remembered. now: CLOCK_REALTIME. */
bool qfs_srcid_settled(const qfs_srcid *id, const struct timespec *now);

/* The content hash of one tensor: XXH3-128 of its bytes. */
typedef struct qfs_srcmemo_entry {
    uint64_t off, len;            /* the tensor's byte range in the file */
    uint8_t hash[16];
} qfs_srcmemo_entry;

/* The memo of one file: its identity and the hashes known, sorted by offset. */
typedef struct qfs_srcmemo {
    qfs_srcid id;
    qfs_srcmemo_entry *entries;
    size_t n, cap;
    bool dirty;                   /* hashes added since it was last written */
} qfs_srcmemo;

/* The content hash of bytes [src, src + len): XXH3-128 of the concatenated XXH3-128 digests
 * (canonical, big-endian) of its QFS_SRCMEMO_CHUNK-byte chunks, the last one shorter; the
 * chunks are hashed in parallel by `threads` OpenMP threads (0: all). Call it only from a
 * thread that may start OpenMP (the engine's worker, not a FUSE thread). */
#define QFS_SRCMEMO_CHUNK ((size_t)4 << 20)
void qfs_srcmemo_hash(const void *src, size_t len, int threads, uint8_t out[16]);
/* The disk cache key of a tensor from its recipe text and content hash. */
void qfs_srcmemo_key(const char *recipe, const uint8_t hash[16], qfs_cache_key *out);

/* An empty memo for id. */
void qfs_srcmemo_init(qfs_srcmemo *m, const qfs_srcid *id);
void qfs_srcmemo_free(qfs_srcmemo *m);
/* Copies the hash of range [off, off + len) into out: true if known. */
bool qfs_srcmemo_find(const qfs_srcmemo *m, uint64_t off, uint64_t len, uint8_t out[16]);
/* Records (or replaces) the hash of a range and marks the memo dirty. 0 or -ENOMEM. */
int qfs_srcmemo_add(qfs_srcmemo *m, uint64_t off, uint64_t len, const uint8_t hash[16]);

/* The memo's bytes as stored (the disk cache adds the header and checksum). *out is
 * malloc'd. 0 or -ENOMEM. */
int qfs_srcmemo_encode(const qfs_srcmemo *m, uint8_t **out, size_t *len);
/* Adds the hashes of stored bytes to m (whose id is the file's identity now): 0; -EINVAL
 * when the bytes are damaged or describe another file (another size); -ESTALE for a blob
 * hashed on this machine as this same inode with other times (changed in place: the caller
 * falls back to the file's own identity). Nothing is added on failure. */
int qfs_srcmemo_merge(qfs_srcmemo *m, const void *data, size_t len);

#endif
