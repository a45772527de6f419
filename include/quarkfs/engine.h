/* quarkfs — who computes what and when. One worker thread runs quantization jobs one at a time,
 * each with the whole OpenMP team; readers of a tensor that is being computed wait for that one
 * job (condition variable); results live in the memory cache. FUSE threads never start OpenMP. */
#ifndef QUARKFS_ENGINE_H
#define QUARKFS_ENGINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "quarkfs/cache.h"
#include "quarkfs/error.h"
#include "quarkfs/layout.h"
#include "quarkfs/plan.h"
#include "quarkfs/safetensors.h"
#include "quarkfs/spec.h"

/* A job has two products (qfs_part, layout.h): the quantized weight (large, in the LRU cache)
 * and its scales and zero points (small, computed by a cheaper scales-only pass when a reader
 * needs only them, and kept for the mount's life: they sit at the start of every file, before
 * all weights). */

/* Runtime state of one job (one quantized tensor of one file). Zero-initialized = nothing yet. */
typedef struct qfs_job_slot {
    qfs_cache_entry entry;       /* the weight bytes while cached; must stay first */
    uint8_t *scales;             /* scale then zero point bytes, once computed */
    unsigned queued : 1, running : 1, want_weight : 1, prefetch : 1, failed : 1;
    unsigned waiters;            /* readers waiting for the weight; each receives a pin */
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
    qfs_job_slot *slots;         /* plan->n_jobs slots */
} qfs_tensor_source;

typedef struct qfs_engine_stats {
    uint64_t tensors_quantized, bytes_quantized, scales_computed, memory_hits, waits, evictions;
    double seconds_quantizing;
} qfs_engine_stats;

typedef struct qfs_engine qfs_engine;

/* Starts the worker thread. cache_budget in bytes; threads = OpenMP team size (0 = all). Call
 * after any fork (daemonize): threads do not survive it. */
int qfs_engine_create(size_t cache_budget, int threads, qfs_engine **out, qfs_error *err);
/* Stops the worker (finishing the job in progress) and frees every cached result. */
void qfs_engine_destroy(qfs_engine *e);

/* Returns one part of job `job` of src (the weight, or scale + zero point bytes), computing it or
 * waiting for the computation in progress. A weight stays pinned until qfs_engine_release;
 * scales stay valid for the engine's life. 0, or negative errno with err set (the tensor could
 * not be read or holds NaN/Inf: the same error for every later reader). */
int qfs_engine_acquire(qfs_engine *e, qfs_tensor_source *src, size_t job, qfs_part part,
                       const uint8_t **data, qfs_error *err);
/* Unpins a weight obtained from qfs_engine_acquire. */
void qfs_engine_release(qfs_engine *e, qfs_tensor_source *src, size_t job);
/* Queues the weight of job for background computation if it is not cached or queued and the
 * cache has room for it without evicting anything; never blocks on the computation. */
void qfs_engine_prefetch(qfs_engine *e, qfs_tensor_source *src, size_t job);
/* Copies the counters. */
void qfs_engine_get_stats(qfs_engine *e, qfs_engine_stats *out);

#endif
