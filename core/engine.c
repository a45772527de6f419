#include "quarkfs/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quarkfs/io.h"
#include "quarkfs/quant.h"

struct qfs_engine {
    pthread_mutex_t lock;
    pthread_cond_t work;           /* the worker waits here for jobs */
    pthread_cond_t done;           /* readers wait here for results */
    qfs_job_slot *demand_head, *demand_tail;     /* a reader is waiting */
    qfs_job_slot *prefetch_head, *prefetch_tail; /* nobody waits yet: run when idle */
    int stopping;
    int threads;
    pthread_t worker;
    uint8_t *scratch;              /* the worker's source buffer */
    size_t scratch_cap;
    qfs_cache cache;
    qfs_engine_stats stats;
};

static void queue_push(qfs_job_slot **head, qfs_job_slot **tail, qfs_job_slot *s)
{
    s->queue_next = NULL;
    if (*tail) (*tail)->queue_next = s;
    else *head = s;
    *tail = s;
}

static qfs_job_slot *queue_pop(qfs_job_slot **head, qfs_job_slot **tail)
{
    qfs_job_slot *s = *head;
    if (s) {
        *head = s->queue_next;
        if (!*head) *tail = NULL;
        s->queue_next = NULL;
    }
    return s;
}

static void queue_remove(qfs_job_slot **head, qfs_job_slot **tail, qfs_job_slot *s)
{
    qfs_job_slot *prev = NULL;
    for (qfs_job_slot *p = *head; p; prev = p, p = p->queue_next) {
        if (p != s) continue;
        if (prev) prev->queue_next = p->queue_next;
        else *head = p->queue_next;
        if (*tail == p) *tail = prev;
        p->queue_next = NULL;
        return;
    }
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

/* The worker's buffer for source bytes: kept between jobs (no page faults on every tensor),
 * released when the queues run dry. Only the worker touches it. */
static uint8_t *scratch_get(qfs_engine *e, size_t bytes)
{
    if (bytes > e->scratch_cap) {
        free(e->scratch);
        e->scratch = malloc(bytes);
        e->scratch_cap = e->scratch ? bytes : 0;
    }
    return e->scratch;
}

/* Reads the source tensor and computes the scales and, if `full`, the weight. Runs unlocked. */
static int compute_job(qfs_engine *e, qfs_tensor_source *src, size_t job, bool full,
                       uint8_t **weight, uint8_t **scales, qfs_error *err)
{
    const qfs_plan_job *j = &src->plan->jobs[job];
    const qfs_st_tensor *t = &src->st->tensors[j->src];
    size_t in_bytes = (size_t)(t->end - t->begin);
    size_t sc_bytes = (size_t)j->layout.scales_bytes;
    uint8_t *in = scratch_get(e, in_bytes ? in_bytes : 1);
    uint8_t *sc = malloc(sc_bytes ? sc_bytes : 1);
    uint8_t *w = full ? malloc(j->layout.weight_bytes ? j->layout.weight_bytes : 1) : NULL;
    if (!in || !sc || (full && !w)) {
        free(sc);
        free(w);
        qfs_error_set(err, "%s: tensor '%s': out of memory (%zu bytes)", src->path, t->name,
                      in_bytes + (size_t)(j->layout.weight_bytes + sc_bytes));
        return -ENOMEM;
    }
    int rc = qfs_pread_full(src->fd, in, in_bytes, src->st->data_start + t->begin);
    if (rc) {
        qfs_error_set(err, "%s: tensor '%s': cannot read the source bytes: %s%s", src->path,
                      t->name, strerror(-rc), rc == -EIO ? " (the file is shorter than its "
                      "header says: was it changed under the mount?)" : "");
        rc = -EIO;
    } else {
        char what[1024];
        snprintf(what, sizeof what, "%s: tensor '%s'", src->path, t->name);
        rc = qfs_quantize_layout(src->spec, src->format, t->dtype, in, j->rows, j->cols,
                                 &j->layout, w, sc, e->threads, what, err);
        if (rc) rc = -EIO;
    }
    if (rc) {
        free(sc);
        free(w);
        return rc;
    }
    *scales = sc;
    *weight = w;
    return 0;
}

static void push_demand(qfs_engine *e, qfs_job_slot *slot)
{
    slot->queued = 1;
    queue_push(&e->demand_head, &e->demand_tail, slot);
    pthread_cond_signal(&e->work);
}

static void run_one(qfs_engine *e, qfs_job_slot *slot)
{
    qfs_tensor_source *src = slot->source;
    const qfs_plan_job *j = &src->plan->jobs[slot->job];
    slot->queued = 0;
    if (slot->prefetch && slot->waiters == 0 && e->cache.used + j->layout.weight_bytes > e->cache.budget) {
        slot->prefetch = 0;     /* the cache filled up since it was queued: drop the prefetch */
        slot->want_weight = 0;
        return;
    }
    bool full = slot->want_weight && !slot->entry.cached;
    if (!full && slot->scales) return;   /* both products already there */
    slot->want_weight = 0;
    slot->prefetch = 0;
    slot->running = 1;
    if (full) qfs_cache_make_room(&e->cache, (size_t)j->layout.weight_bytes);
    pthread_mutex_unlock(&e->lock);

    qfs_error err = {{0}};
    uint8_t *weight = NULL, *scales = NULL;
    double t0 = now_seconds();
    int rc = compute_job(e, src, slot->job, full, &weight, &scales, &err);
    double dt = now_seconds() - t0;

    pthread_mutex_lock(&e->lock);
    slot->running = 0;
    e->stats.seconds_quantizing += dt;
    if (rc) {
        slot->failed = 1;
        slot->error = rc;
        free(slot->error_msg);
        slot->error_msg = strdup(err.msg);
        slot->waiters = 0;
        return;
    }
    if (slot->scales) free(scales);
    else slot->scales = scales;
    if (full) {
        slot->entry.data = weight;
        slot->entry.size = (size_t)j->layout.weight_bytes;
        slot->entry.pins += slot->waiters;   /* each waiting reader receives its pin */
        slot->waiters = 0;
        qfs_cache_insert(&e->cache, &slot->entry);
        e->stats.tensors_quantized++;
        e->stats.bytes_quantized += src->st->tensors[j->src].end - src->st->tensors[j->src].begin;
    } else {
        e->stats.scales_computed++;
    }
    /* A weight reader arrived while only the scales were computed: go again. */
    if (slot->want_weight && !slot->entry.cached && !slot->queued) push_demand(e, slot);
}

static void *worker_main(void *arg)
{
    qfs_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        qfs_job_slot *slot = queue_pop(&e->demand_head, &e->demand_tail);
        if (!slot) slot = queue_pop(&e->prefetch_head, &e->prefetch_tail);
        if (!slot) {
            free(e->scratch);        /* idle: give the source buffer back */
            e->scratch = NULL;
            e->scratch_cap = 0;
            pthread_cond_wait(&e->work, &e->lock);
            continue;
        }
        run_one(e, slot);
        pthread_cond_broadcast(&e->done);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

int qfs_engine_create(size_t cache_budget, int threads, qfs_engine **out, qfs_error *err)
{
    qfs_engine *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->done, NULL);
    e->threads = threads;
    qfs_cache_init(&e->cache, cache_budget, evict_slot, e);
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

/* Makes sure the slot will run soon: queue it, or move it from the prefetch queue. */
static void demand(qfs_engine *e, qfs_tensor_source *src, size_t job, qfs_job_slot *slot)
{
    if (slot->running) return;
    if (slot->queued && slot->prefetch) {
        queue_remove(&e->prefetch_head, &e->prefetch_tail, slot);
        slot->prefetch = 0;
        slot->queued = 0;
    }
    if (!slot->queued) {
        slot->source = src;
        slot->job = job;
        push_demand(e, slot);
    }
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
    if (!slot->entry.cached && !slot->queued && !slot->running && !slot->failed &&
        e->cache.used + bytes <= e->cache.budget) {
        slot->source = src;
        slot->job = job;
        slot->want_weight = 1;
        slot->prefetch = 1;
        slot->queued = 1;
        queue_push(&e->prefetch_head, &e->prefetch_tail, slot);
        pthread_cond_signal(&e->work);
    }
    pthread_mutex_unlock(&e->lock);
}

void qfs_engine_get_stats(qfs_engine *e, qfs_engine_stats *out)
{
    pthread_mutex_lock(&e->lock);
    *out = e->stats;
    out->evictions = e->cache.evictions;
    pthread_mutex_unlock(&e->lock);
}
