/* quarkfs — who computes what and when. One worker thread runs quantization jobs one at a time,
 * each with the whole OpenMP team; readers of a tensor that is being computed wait for that one
 * job (condition variable); results live in the memory cache. FUSE threads never start OpenMP. */
#ifndef QUARKFS_ENGINE_H
#define QUARKFS_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "quarkfs/diskcache.h"
#include "quarkfs/error.h"
#include "quarkfs/layout.h"
#include "quarkfs/log.h"
#include "quarkfs/plan.h"
#include "quarkfs/safetensors.h"
#include "quarkfs/spec.h"

/* A big int8/fp8 weight is produced in row bands (qfs_quantize_layout_rows): its scales first,
 * then the bands, those that readers wait for first, and a reader waits only for the bands that
 * hold the bytes it asks for, not the whole tensor (the first byte of a 1 GiB tensor in about
 * the time of one pass over it). */

/* A job has two products (qfs_part, layout.h): the quantized weight (large, in the LRU cache)
 * and its scales and zero points (small, computed by a cheaper scales-only pass when a reader
 * needs only them: they sit at the start of every file, before all weights). Both count in
 * cache_mem: the scales held shrink the weights' share, and past half of cache_mem the least
 * recently read scales are dropped (a later reader computes them again). */

/* The engine's view of one quantized file: what it needs to compute the file's jobs, and the
 * state of each job (its cached weight and scales, who waits for it). Opaque: only the engine
 * reads or writes it. Needs no engine to be made, so a model can be built before the process
 * daemonizes and the engine is started. */
typedef struct qfs_tensor_source qfs_tensor_source;

/* What a tensor source is made from. Borrowed: every pointer and the descriptor must stay valid
 * until qfs_tensor_source_free; the source never closes fd. */
typedef struct qfs_tensor_source_info {
    int fd;                      /* the source safetensors file, open for reading */
    const char *path;            /* for messages */
    const qfs_st_file *st;
    const qfs_plan *plan;        /* its jobs (each with its own spec): what the engine computes */
    qfs_format format;
    off_t snap_size;             /* the source as it was at mount: a change is refused */
    struct timespec snap_mtime;
} qfs_tensor_source_info;

/* Makes the source of one quantized file, every job not yet computed. 0, or -ENOMEM with err
 * naming the file. */
int qfs_tensor_source_new(const qfs_tensor_source_info *info, qfs_tensor_source **out,
                          qfs_error *err);
/* Frees the source and every result it still holds. No engine may use it any more: destroy the
 * engine first (or never give it this source). NULL is ignored. */
void qfs_tensor_source_free(qfs_tensor_source *src);

typedef struct qfs_engine_stats {
    uint64_t tensors_quantized;  /* weights computed (not found in any cache) */
    uint64_t bytes_quantized;    /* their source bytes */
    uint64_t scales_computed;    /* scales-only passes */
    uint64_t memory_hits, disk_hits, disk_writes, waits, evictions;
    uint64_t weights_in_bands;   /* weights produced band by band (big int8/fp8 ones) */
    uint64_t scales_bytes;       /* scale + zero point bytes held now (inside cache_mem) */
    uint64_t scales_evictions;   /* scales dropped to stay within cache_mem */
    uint64_t early_reads;        /* reads served from a weight still being produced */
    double seconds_quantizing;
    /* The disk writer: entries waiting now and their weight bytes (disk_writes counts those
     * written), and entries dropped unwritten (a full queue, a cache that stopped taking
     * writes, a source that changed before its bytes were hashed). */
    uint64_t disk_queued, disk_queued_bytes, disk_dropped;
    uint64_t memo_hits;          /* keys taken from a source memo (srcid.h), no source read */
    uint64_t memo_rehashes;      /* keys that needed the source read and hashed */
    uint64_t source_reads;       /* jobs that opened a source tensor's bytes */
    uint64_t warm_jobs, warm_done, warm_bytes, warm_bytes_done;   /* `quarkfs warm` progress */
    int disk_cache;              /* 1 while the disk cache is in use */
    uint64_t memory_used;        /* quantized weights, kept buffers, scales in memory, bytes */
    uint64_t memory_budget;      /* their budget (cache_mem) */
    uint64_t disk_bytes;         /* bytes in the disk cache directory (0 without one) */
    const char *disk_dir;        /* that directory, or NULL; valid while the engine lives */
} qfs_engine_stats;

typedef struct qfs_engine_options {
    size_t cache_mem;            /* memory budget for quantized weights, bytes */
    int threads;                 /* OpenMP team size (0 = all cores) */
    struct qfs_diskcache *disk;  /* persistent cache, or NULL; the engine closes it */
    struct qfs_map_guard *map_guard;  /* io.h: when set (the front end handles SIGBUS with it),
                                      * sources are read through mmap, else with pread */
    qfs_log_callback log;        /* may be NULL (log.h) */
    void *log_ctx;
} qfs_engine_options;

typedef struct qfs_engine qfs_engine;

/* Starts the worker thread. Call after any fork (daemonize): threads do not survive it. */
int qfs_engine_create(const qfs_engine_options *o, qfs_engine **out, qfs_error *err);
/* Stops the worker (finishing the job in progress) and frees every cached result. */
void qfs_engine_destroy(qfs_engine *e);

/* Returns the weight of job `job` of src (part must be QFS_PART_WEIGHT), computing it or
 * waiting for the computation in progress; only its bytes [need_begin, need_end) are
 * guaranteed final (the rest may still be in production). It stays pinned until
 * qfs_engine_release. 0, or negative errno with err set (the tensor could not be read or holds
 * NaN/Inf: the same error for every later reader). */
int qfs_engine_acquire(qfs_engine *e, qfs_tensor_source *src, size_t job, qfs_part part,
                       uint64_t need_begin, uint64_t need_end, const uint8_t **data,
                       qfs_error *err);
/* Copies len bytes at off of job `job`'s scale + zero point bytes into dst, computing them or
 * waiting for them (they may be evicted at any time, so they are copied under the engine's
 * lock). 0, or negative errno with err set as for qfs_engine_acquire. */
int qfs_engine_read_scales(qfs_engine *e, qfs_tensor_source *src, size_t job, uint64_t off,
                           size_t len, uint8_t *dst, qfs_error *err);
/* Unpins a weight obtained from qfs_engine_acquire. */
void qfs_engine_release(qfs_engine *e, qfs_tensor_source *src, size_t job);
/* Queues the weight of job for background computation if it is not cached or queued and the
 * cache has room for it without evicting anything; never blocks on the computation. */
void qfs_engine_prefetch(qfs_engine *e, qfs_tensor_source *src, size_t job);
/* Queues every job of the given sources not yet cached for background computation (after
 * demand and prefetch work), into the disk cache when there is one; progress in the stats. */
void qfs_engine_warm(qfs_engine *e, qfs_tensor_source *const *srcs, size_t n);
/* Copies the counters. */
void qfs_engine_get_stats(qfs_engine *e, qfs_engine_stats *out);

#endif
