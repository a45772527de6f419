/* quarkfs — who computes what and when. One worker thread runs quantization jobs one at a time,
 * each with the whole OpenMP team; readers of a tensor that is being computed wait for that one
 * job (condition variable); results live in the memory cache. FUSE threads never start OpenMP. */
#ifndef QUARKFS_ENGINE_H
#define QUARKFS_ENGINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "quarkfs/cache.h"
#include "quarkfs/diskcache.h"
#include "quarkfs/error.h"
#include "quarkfs/layout.h"
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

/* Which queue a slot waits in: a reader waits (demand), a reader will probably want it next
 * (prefetch: only while the memory cache has room), or `quarkfs warm` asked for everything. */
typedef enum qfs_queue_id { QFS_Q_NONE, QFS_Q_DEMAND, QFS_Q_PREFETCH, QFS_Q_WARM } qfs_queue_id;

/* Runtime state of one job (one quantized tensor of one file). Zero-initialized = nothing yet. */
typedef struct qfs_job_slot {
    qfs_cache_entry entry;       /* the weight bytes while cached; must stay first */
    uint8_t *scales;             /* scale then zero point bytes, once computed (evictable) */
    qfs_cache_entry scales_entry;   /* the scales in the engine's scales cache */
    qfs_queue_id queue;
    unsigned running : 1, want_weight : 1, failed : 1;
    unsigned warm : 1;           /* counts toward the warm-up progress when it completes */
    unsigned warm_only : 1;      /* only warm wants it: with a disk cache, keep it on disk only */
    unsigned warm_round;         /* the warm-up round that counted it (a second `warm` during a
                                  * round must not count a tensor it already finished) */
    unsigned waiters;            /* readers waiting for the weight; on completion each gets a pin */
    unsigned gen;                /* counts completions and failures of the weight (waiters' token) */
    uint64_t served;             /* weight bytes handed to readers since it was made */
    /* While a weight is produced in bands (entry.data set, running): which bands are final, and
     * a band some reader waits for, made next (UINT32_MAX: none; else bands go in order). */
    uint8_t *band_done;
    uint64_t band_bytes;         /* weight bytes per band; the last may be shorter */
    uint32_t n_bands, want_band;
    int error;                   /* failed: negative errno, and why */
    char *error_msg;
    struct qfs_job_slot *queue_next;
    struct qfs_tensor_source *source;
    size_t job;
} qfs_job_slot;

/* What the engine needs to compute the jobs of one quantized file. */
typedef struct qfs_tensor_source {
    int fd;                      /* the source safetensors file, open for reading */
    const char *path;            /* for messages */
    const qfs_st_file *st;
    const qfs_plan *plan;
    const qfs_spec *spec;
    qfs_format format;
    off_t snap_size;             /* the source as it was at mount: a change is refused */
    struct timespec snap_mtime;
    qfs_job_slot *slots;         /* plan->n_jobs slots */
} qfs_tensor_source;

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
    uint64_t warm_jobs, warm_done, warm_bytes, warm_bytes_done;   /* `quarkfs warm` progress */
    int disk_cache;              /* 1 while the disk cache is in use */
    uint64_t memory_used;        /* quantized weights, kept buffers, scales in memory, bytes */
    uint64_t memory_budget;      /* their budget (cache_mem) */
    uint64_t disk_bytes;         /* bytes in the disk cache directory (0 without one) */
    const char *disk_dir;        /* that directory, or NULL; valid while the engine lives */
} qfs_engine_stats;

/* Log levels (syslog's numbers). */
enum { QFS_LOG_ERR = 3, QFS_LOG_WARNING = 4, QFS_LOG_INFO = 6, QFS_LOG_DEBUG = 7 };
typedef void (*qfs_engine_log_fn)(void *ctx, int level, const char *msg);

typedef struct qfs_engine_options {
    size_t cache_mem;            /* memory budget for quantized weights, bytes */
    int threads;                 /* OpenMP team size (0 = all cores) */
    struct qfs_diskcache *disk;  /* persistent cache, or NULL; the engine closes it */
    struct qfs_map_guard *map_guard;  /* io.h: when set (the front end handles SIGBUS with it),
                                      * sources are read through mmap, else with pread */
    qfs_engine_log_fn log;       /* may be NULL */
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
