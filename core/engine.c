#include "quarkfs/engine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "quarkfs/io.h"
#include "quarkfs/quant.h"

#define QFS_QUANTIZER_VERSION "1"   /* bump when any kernel's output changes: disk keys change */
#define WARM_LOG_SECONDS 10.0
#define SCRATCH_IDLE_SECONDS 2    /* the source buffer is given back after this long idle */
#define HUGE_ALLOC (4u << 20)     /* buffers this large ask for transparent huge pages */

typedef struct job_queue { qfs_job_slot *head, *tail; } job_queue;

struct qfs_engine {
    pthread_mutex_t lock;
    pthread_cond_t work;           /* the worker waits here for jobs */
    pthread_cond_t done;           /* readers wait here for results */
    job_queue queues[4];           /* indexed by qfs_queue_id; NONE unused */
    int stopping;
    int threads;
    pthread_t worker;
    uint8_t *scratch;              /* the worker's source buffer */
    size_t scratch_cap;
    qfs_cache cache;
    qfs_diskcache *disk;           /* NULL when off or after it failed */
    qfs_engine_log_fn log;
    void *log_ctx;
    double warm_started, warm_logged;
    qfs_engine_stats stats;
};

static void logf_(qfs_engine *e, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(qfs_engine *e, int level, const char *fmt, ...)
{
    if (!e->log) return;
    char buf[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    e->log(e->log_ctx, level, buf);
}

static void queue_push(qfs_engine *e, qfs_queue_id q, qfs_job_slot *s)
{
    job_queue *jq = &e->queues[q];
    s->queue_next = NULL;
    s->queue = q;
    if (jq->tail) jq->tail->queue_next = s;
    else jq->head = s;
    jq->tail = s;
}

static qfs_job_slot *queue_pop(qfs_engine *e, qfs_queue_id q)
{
    job_queue *jq = &e->queues[q];
    qfs_job_slot *s = jq->head;
    if (s) {
        jq->head = s->queue_next;
        if (!jq->head) jq->tail = NULL;
        s->queue_next = NULL;
        s->queue = QFS_Q_NONE;
    }
    return s;
}

static void queue_remove(qfs_engine *e, qfs_job_slot *s)
{
    job_queue *jq = &e->queues[s->queue];
    qfs_job_slot *prev = NULL;
    for (qfs_job_slot *p = jq->head; p; prev = p, p = p->queue_next) {
        if (p != s) continue;
        if (prev) prev->queue_next = p->queue_next;
        else jq->head = p->queue_next;
        if (jq->tail == p) jq->tail = prev;
        p->queue_next = NULL;
        break;
    }
    s->queue = QFS_Q_NONE;
}

/* Cache eviction: the weight is dropped (a later reader recomputes it); its scales stay. */
static void evict_slot(void *ctx, qfs_cache_entry *entry)
{
    (void)ctx;
    free(entry->data);
    entry->data = NULL;
    entry->size = 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Tensor-sized buffers: 2 MiB-aligned and backed by huge pages where the kernel offers them
 * (madvise mode), which cuts the page faults of a fresh 100 MB buffer 512-fold. free() frees. */
static void *alloc_big(size_t bytes)
{
    if (bytes < HUGE_ALLOC) return malloc(bytes ? bytes : 1);
    void *p;
    if (posix_memalign(&p, 2u << 20, bytes) != 0) return NULL;
    madvise(p, bytes, MADV_HUGEPAGE);   /* a hint: failure only costs speed */
    return p;
}

/* The worker's buffer for source bytes: kept between jobs (no page faults on every tensor),
 * released after SCRATCH_IDLE_SECONDS without work. Only the worker touches it. */
static uint8_t *scratch_get(qfs_engine *e, size_t bytes)
{
    if (bytes > e->scratch_cap) {
        free(e->scratch);
        e->scratch = alloc_big(bytes);
        e->scratch_cap = e->scratch ? bytes : 0;
    }
    return e->scratch;
}

/* The source must be the one planned at mount: a file changed in place would mix old and new
 * bytes in one view, so its tensors fail instead (a file replaced by rename keeps serving the
 * old version through the descriptor opened at mount). */
static int check_unchanged(const qfs_tensor_source *src, qfs_error *err)
{
    return qfs_fd_unchanged(src->fd, src->snap_size, &src->snap_mtime, src->path, err);
}

typedef enum job_mode {
    MODE_SCALES,   /* scale + zero point only */
    MODE_FULL,     /* the weight too, into the memory cache */
    MODE_DISK,     /* the weight into the disk cache only (warm-up) */
} job_mode;

static void recipe_of(const qfs_tensor_source *src, const qfs_plan_job *j, const qfs_st_tensor *t,
                      char *buf, size_t len)
{
    snprintf(buf, len, "quarkfs-quantizer-%s|%s|%s|%s|%llux%llu", QFS_QUANTIZER_VERSION,
             src->spec->name, qfs_format_name(src->format), qfs_dtype_name(t->dtype),
             (unsigned long long)j->rows, (unsigned long long)j->cols);
}

/* A disk cache that cannot take writes (full, read-only) keeps serving what it has, and new
 * tensors stay in memory: one warning, and readers never see an error for it. Lock held. */
static void disk_failed(qfs_engine *e, int rc)
{
    if (!e->disk || qfs_diskcache_readonly(e->disk)) return;
    logf_(e, QFS_LOG_WARNING, "disk cache %s: %s; its entries are still read, new tensors stay "
          "in memory only", qfs_diskcache_dir(e->disk), strerror(-rc));
    qfs_diskcache_set_readonly(e->disk);
    e->stats.disk_cache = 0;
}

/* Reads the source tensor and produces what `mode` asks for, from the disk cache if it has the
 * entry, else by quantizing (then storing it). Runs unlocked; `disk` is the cache at the start
 * of the job (closing it waits for the lock, which this job does not hold). */
static int compute_job(qfs_engine *e, qfs_diskcache *disk, qfs_tensor_source *src, size_t job,
                       job_mode mode, uint8_t **weight, uint8_t **scales, bool *disk_hit,
                       int *disk_error, qfs_error *err)
{
    const qfs_plan_job *j = &src->plan->jobs[job];
    const qfs_st_tensor *t = &src->st->tensors[j->src];
    size_t in_bytes = (size_t)(t->end - t->begin);
    size_t sc_bytes = (size_t)j->layout.scales_bytes, w_bytes = (size_t)j->layout.weight_bytes;
    *disk_hit = false;
    *disk_error = 0;
    int rc = check_unchanged(src, err);
    if (rc) return rc;
    uint8_t *in = scratch_get(e, in_bytes ? in_bytes : 1);
    uint8_t *sc = malloc(sc_bytes ? sc_bytes : 1);
    uint8_t *w = mode != MODE_SCALES ? alloc_big(w_bytes) : NULL;
    if (!in || !sc || (mode != MODE_SCALES && !w)) {
        free(sc);
        free(w);
        qfs_error_set(err, "%s: tensor '%s': out of memory (%zu bytes); lower cache_mem or give "
                      "quarkfs more memory", src->path, t->name, in_bytes + w_bytes + sc_bytes);
        return -ENOMEM;
    }
    rc = qfs_pread_full(src->fd, in, in_bytes, src->st->data_start + t->begin);
    if (rc) {
        qfs_error_set(err, "%s: tensor '%s': cannot read the source bytes: %s%s", src->path,
                      t->name, strerror(-rc), rc == -EIO ? " (the file is shorter than its "
                      "header says: was it changed under the mount?)" : "");
        rc = -EIO;
    }
    if (!rc) rc = check_unchanged(src, err);   /* not modified while we read it either */
    qfs_cache_key key;
    int lock = -1;
    if (!rc && disk) {
        char recipe[256];
        recipe_of(src, j, t, recipe, sizeof recipe);
        qfs_cache_key_compute(recipe, in, in_bytes, &key);
        uint8_t *want_w = mode == MODE_FULL ? w : NULL;
        if (qfs_diskcache_get(disk, &key, sc, sc_bytes, want_w, w_bytes) == 0) {
            *disk_hit = true;
        } else if (mode != MODE_SCALES && qfs_diskcache_lock(disk, &key, &lock) == 0) {
            /* Another process may have written it while we waited for the lock. */
            *disk_hit = qfs_diskcache_get(disk, &key, sc, sc_bytes, want_w, w_bytes) == 0;
        }
    }
    if (!rc && !*disk_hit) {
        char what[1024];
        snprintf(what, sizeof what, "%s: tensor '%s'", src->path, t->name);
        rc = qfs_quantize_layout(src->spec, src->format, t->dtype, in, j->rows, j->cols,
                                 &j->layout, w, sc, e->threads, what, err);
        if (rc) rc = -EIO;
        if (!rc && disk && w) *disk_error = qfs_diskcache_put(disk, &key, sc, sc_bytes, w, w_bytes);
    }
    qfs_diskcache_unlock(lock);
    if (rc) {
        free(sc);
        free(w);
        return rc;
    }
    if (mode == MODE_DISK) {   /* on disk now; memory keeps only what readers need */
        free(w);
        w = NULL;
    }
    *scales = sc;
    *weight = w;
    return 0;
}

static void push_demand(qfs_engine *e, qfs_job_slot *slot)
{
    queue_push(e, QFS_Q_DEMAND, slot);
    pthread_cond_signal(&e->work);
}

static void run_one(qfs_engine *e, qfs_job_slot *slot, qfs_queue_id from)
{
    qfs_tensor_source *src = slot->source;
    const qfs_plan_job *j = &src->plan->jobs[slot->job];
    if (from == QFS_Q_PREFETCH && slot->waiters == 0 &&
        e->cache.used + j->layout.weight_bytes > e->cache.budget) {
        slot->want_weight = 0;  /* the cache filled up since it was queued: drop the prefetch */
        return;
    }
    bool full = slot->want_weight && !slot->entry.cached;
    if (!full && slot->scales) return;   /* both products already there */
    /* Only the scales were asked for (they open every file): compute the weight in the same
     * pass when the memory cache has room for it, as a reader will want it next; reading and
     * reducing the source twice is the alternative. */
    if (!full && !slot->entry.cached &&
        e->cache.used + j->layout.weight_bytes <= e->cache.budget)
        full = true;
    job_mode mode = !full ? MODE_SCALES
                  : slot->warm_only && slot->waiters == 0 && e->disk ? MODE_DISK : MODE_FULL;
    slot->want_weight = 0;
    slot->warm_only = 0;
    slot->running = 1;
    if (mode == MODE_FULL) qfs_cache_make_room(&e->cache, (size_t)j->layout.weight_bytes);
    qfs_diskcache *disk = e->disk;
    pthread_mutex_unlock(&e->lock);

    qfs_error err = {{0}};
    uint8_t *weight = NULL, *scales = NULL;
    bool disk_hit;
    int disk_error;
    double t0 = now_seconds();
    int rc = compute_job(e, disk, src, slot->job, mode, &weight, &scales, &disk_hit, &disk_error,
                         &err);
    double dt = now_seconds() - t0;

    pthread_mutex_lock(&e->lock);
    slot->running = 0;
    if (disk_error) disk_failed(e, disk_error);
    if (rc) {
        slot->failed = 1;
        slot->error = rc;
        free(slot->error_msg);
        slot->error_msg = strdup(err.msg);
        slot->waiters = 0;
        logf_(e, QFS_LOG_ERR, "%s", err.msg);
        return;
    }
    if (slot->scales) free(scales);
    else slot->scales = scales;
    if (disk_hit) {
        e->stats.disk_hits++;
    } else if (mode != MODE_SCALES) {
        e->stats.seconds_quantizing += dt;
        e->stats.tensors_quantized++;
        e->stats.bytes_quantized += src->st->tensors[j->src].end - src->st->tensors[j->src].begin;
        if (disk && !disk_error && !qfs_diskcache_readonly(disk)) e->stats.disk_writes++;
    } else {
        e->stats.seconds_quantizing += dt;
        e->stats.scales_computed++;
    }
    logf_(e, QFS_LOG_DEBUG, "%s: tensor '%s': %s in %.2f ms", src->path,
          src->st->tensors[j->src].name, disk_hit ? "read from the disk cache"
          : mode == MODE_SCALES ? "scales computed" : mode == MODE_DISK ? "quantized into the "
          "disk cache" : "quantized", dt * 1e3);
    if (weight) {
        slot->entry.data = weight;
        slot->entry.size = (size_t)j->layout.weight_bytes;
        slot->entry.pins += slot->waiters;   /* each waiting reader receives its pin */
        slot->waiters = 0;
        qfs_cache_insert(&e->cache, &slot->entry);
    }
    /* A weight reader arrived while only the scales were computed: go again. */
    if (slot->want_weight && !slot->entry.cached && slot->queue == QFS_Q_NONE)
        push_demand(e, slot);
}

static void warm_progress(qfs_engine *e, bool force)
{
    double t = now_seconds();
    if (!force && t - e->warm_logged < WARM_LOG_SECONDS) return;
    e->warm_logged = t;
    const qfs_engine_stats *s = &e->stats;
    double el = t - e->warm_started, rate = el > 0 ? (double)s->warm_bytes_done / el : 0;
    logf_(e, QFS_LOG_INFO, "warm: %llu/%llu tensors, %.1f/%.1f GiB of source, %.0f MiB/s, %s%.0f s",
          (unsigned long long)s->warm_done, (unsigned long long)s->warm_jobs,
          (double)s->warm_bytes_done / (1 << 30), (double)s->warm_bytes / (1 << 30),
          rate / (1 << 20), s->warm_done == s->warm_jobs ? "done in " : "about ",
          s->warm_done == s->warm_jobs ? el
          : rate > 0 ? (double)(s->warm_bytes - s->warm_bytes_done) / rate : 0.0);
}

static void *worker_main(void *arg)
{
    qfs_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        qfs_queue_id from = QFS_Q_DEMAND;
        qfs_job_slot *slot = NULL;
        for (; from <= QFS_Q_WARM && !(slot = queue_pop(e, from)); from++) {}
        if (!slot) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += SCRATCH_IDLE_SECONDS;
            if (pthread_cond_timedwait(&e->work, &e->lock, &until) == ETIMEDOUT) {
                free(e->scratch);    /* idle for a while: give the source buffer back */
                e->scratch = NULL;
                e->scratch_cap = 0;
                pthread_cond_wait(&e->work, &e->lock);
            }
            continue;
        }
        bool warm = slot->warm;
        slot->warm = 0;
        run_one(e, slot, from);
        if (warm) {
            const qfs_tensor_source *src = slot->source;
            const qfs_st_tensor *t = &src->st->tensors[src->plan->jobs[slot->job].src];
            e->stats.warm_done++;
            e->stats.warm_bytes_done += t->end - t->begin;
            warm_progress(e, e->stats.warm_done == e->stats.warm_jobs);
        }
        pthread_cond_broadcast(&e->done);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

int qfs_engine_create(const qfs_engine_options *o, qfs_engine **out, qfs_error *err)
{
    qfs_engine *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->done, NULL);
    e->threads = o->threads;
    e->disk = o->disk;
    e->stats.disk_cache = o->disk != NULL && !qfs_diskcache_readonly(o->disk);
    e->log = o->log;
    e->log_ctx = o->log_ctx;
    qfs_cache_init(&e->cache, o->cache_mem, evict_slot, e);
    int rc = pthread_create(&e->worker, NULL, worker_main, e);
    if (rc) {
        qfs_error_set(err, "cannot start the quantization thread: %s", strerror(rc));
        free(e);
        return -rc;
    }
    *out = e;
    return 0;
}

void qfs_engine_destroy(qfs_engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->worker, NULL);
    qfs_cache_clear(&e->cache);
    qfs_diskcache_close(e->disk);
    free(e->scratch);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->done);
    free(e);
}

static int slot_error(const qfs_job_slot *slot, qfs_error *err)
{
    qfs_error_set(err, "%s", slot->error_msg ? slot->error_msg : "quantization failed");
    return slot->error ? slot->error : -EIO;
}

/* Makes sure the slot will run soon: queue it, or move it from a background queue. */
static void demand(qfs_engine *e, qfs_tensor_source *src, size_t job, qfs_job_slot *slot)
{
    slot->warm_only = 0;
    if (slot->running || slot->queue == QFS_Q_DEMAND) return;
    if (slot->queue != QFS_Q_NONE) queue_remove(e, slot);
    slot->source = src;
    slot->job = job;
    push_demand(e, slot);
}

int qfs_engine_acquire(qfs_engine *e, qfs_tensor_source *src, size_t job, qfs_part part,
                       const uint8_t **data, qfs_error *err)
{
    qfs_job_slot *slot = &src->slots[job];
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    if (part == QFS_PART_SCALES) {
        if (!slot->scales && !slot->failed) {
            demand(e, src, job, slot);
            e->stats.waits++;
            while (!slot->scales && !slot->failed) pthread_cond_wait(&e->done, &e->lock);
        }
        if (slot->scales) *data = slot->scales;   /* valid for the engine's life */
        else rc = slot_error(slot, err);
        pthread_mutex_unlock(&e->lock);
        return rc;
    }
    if (slot->entry.cached) {
        slot->entry.pins++;
        qfs_cache_touch(&e->cache, &slot->entry);
        e->stats.memory_hits++;
    } else if (!slot->failed) {
        slot->want_weight = 1;
        demand(e, src, job, slot);
        slot->waiters++;
        e->stats.waits++;
        while (!slot->entry.cached && !slot->failed) pthread_cond_wait(&e->done, &e->lock);
        /* If it is cached now, the worker pinned it for us. */
    }
    if (slot->entry.cached) *data = slot->entry.data;
    else rc = slot_error(slot, err);
    pthread_mutex_unlock(&e->lock);
    return rc;
}

void qfs_engine_release(qfs_engine *e, qfs_tensor_source *src, size_t job)
{
    qfs_job_slot *slot = &src->slots[job];
    pthread_mutex_lock(&e->lock);
    if (slot->entry.pins > 0) slot->entry.pins--;
    /* A result larger than the budget stays only while pinned. */
    if (slot->entry.pins == 0 && e->cache.used > e->cache.budget)
        qfs_cache_make_room(&e->cache, 0);
    pthread_mutex_unlock(&e->lock);
}

void qfs_engine_prefetch(qfs_engine *e, qfs_tensor_source *src, size_t job)
{
    qfs_job_slot *slot = &src->slots[job];
    pthread_mutex_lock(&e->lock);
    uint64_t bytes = src->plan->jobs[job].layout.weight_bytes;
    if (!slot->entry.cached && slot->queue == QFS_Q_NONE && !slot->running && !slot->failed &&
        e->cache.used + bytes <= e->cache.budget) {
        slot->source = src;
        slot->job = job;
        slot->want_weight = 1;
        queue_push(e, QFS_Q_PREFETCH, slot);
        pthread_cond_signal(&e->work);
    }
    pthread_mutex_unlock(&e->lock);
}

void qfs_engine_warm(qfs_engine *e, qfs_tensor_source *const *srcs, size_t n)
{
    pthread_mutex_lock(&e->lock);
    if (e->stats.warm_done == e->stats.warm_jobs) {   /* a new round */
        e->stats.warm_jobs = e->stats.warm_done = 0;
        e->stats.warm_bytes = e->stats.warm_bytes_done = 0;
        e->warm_started = now_seconds();
    }
    for (size_t i = 0; i < n; i++) {
        qfs_tensor_source *src = srcs[i];
        for (size_t k = 0; k < src->plan->n_jobs; k++) {
            qfs_job_slot *slot = &src->slots[k];
            if (slot->entry.cached || slot->queue != QFS_Q_NONE || slot->running ||
                slot->failed)
                continue;
            slot->source = src;
            slot->job = k;
            slot->want_weight = 1;
            slot->warm = 1;
            slot->warm_only = 1;
            queue_push(e, QFS_Q_WARM, slot);
            const qfs_st_tensor *t = &src->st->tensors[src->plan->jobs[k].src];
            e->stats.warm_jobs++;
            e->stats.warm_bytes += t->end - t->begin;
        }
    }
    logf_(e, QFS_LOG_INFO, "warm: %llu tensors (%.2f GiB of source) queued%s",
          (unsigned long long)(e->stats.warm_jobs - e->stats.warm_done),
          (double)(e->stats.warm_bytes - e->stats.warm_bytes_done) / (1 << 30),
          e->disk ? " for the disk cache" : " (no disk cache: the memory cache keeps the last)");
    pthread_cond_signal(&e->work);
    pthread_mutex_unlock(&e->lock);
}

void qfs_engine_get_stats(qfs_engine *e, qfs_engine_stats *out)
{
    pthread_mutex_lock(&e->lock);
    *out = e->stats;
    out->evictions = e->cache.evictions;
    pthread_mutex_unlock(&e->lock);
}
