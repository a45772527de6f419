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

/* Cache eviction: the slot goes back to EMPTY and a later reader recomputes it. */
static void evict_slot(void *ctx, qfs_cache_entry *entry)
{
    (void)ctx;
    qfs_job_slot *slot = (qfs_job_slot *)entry;
    free(entry->data);
    entry->data = NULL;
    entry->size = 0;
    slot->state = QFS_SLOT_EMPTY;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads the source tensor and quantizes it; runs without the lock. */
static int compute_job(qfs_engine *e, qfs_tensor_source *src, size_t job, uint8_t **out,
                       qfs_error *err)
{
    const qfs_plan_job *j = &src->plan->jobs[job];
    const qfs_st_tensor *t = &src->st->tensors[j->src];
    size_t in_bytes = (size_t)(t->end - t->begin);
    uint8_t *in = malloc(in_bytes ? in_bytes : 1);
    uint8_t *res = malloc(j->out_bytes ? j->out_bytes : 1);
    if (!in || !res) {
        free(in);
        free(res);
        qfs_error_set(err, "%s: tensor '%s': out of memory (%zu bytes)", src->path, t->name,
                      in_bytes + (size_t)j->out_bytes);
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
        rc = qfs_quantize(src->spec, t->dtype, in, j->rows, j->cols, res, res + j->sizes.weight,
                          j->sizes.zero_point ? res + j->sizes.weight + j->sizes.scale : NULL,
                          e->threads, what, err);
        if (rc) rc = -EIO;
    }
    free(in);
    if (rc) {
        free(res);
        return rc;
    }
    *out = res;
    return 0;
}

static void *worker_main(void *arg)
{
    qfs_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        qfs_job_slot *slot = queue_pop(&e->demand_head, &e->demand_tail);
        if (!slot) slot = queue_pop(&e->prefetch_head, &e->prefetch_tail);
        if (!slot) {
            pthread_cond_wait(&e->work, &e->lock);
            continue;
        }
        qfs_tensor_source *src = slot->source;
        uint64_t bytes = src->plan->jobs[slot->job].out_bytes;
        if (slot->prefetch && slot->waiters == 0 && e->cache.used + bytes > e->cache.budget) {
            slot->state = QFS_SLOT_EMPTY;   /* the cache filled up since: drop the prefetch */
            slot->prefetch = 0;
            continue;
        }
        slot->state = QFS_SLOT_RUNNING;
        slot->prefetch = 0;
        qfs_cache_make_room(&e->cache, (size_t)bytes);
        pthread_mutex_unlock(&e->lock);

        qfs_error err = {{0}};
        uint8_t *data = NULL;
        double t0 = now_seconds();
        int rc = compute_job(e, src, slot->job, &data, &err);
        double dt = now_seconds() - t0;

        pthread_mutex_lock(&e->lock);
        if (rc == 0) {
            slot->entry.data = data;
            slot->entry.size = (size_t)bytes;
            slot->entry.pins += slot->waiters;   /* each waiting reader receives its pin */
            slot->state = QFS_SLOT_READY;
            qfs_cache_insert(&e->cache, &slot->entry);
            const qfs_st_tensor *t = &src->st->tensors[src->plan->jobs[slot->job].src];
            e->stats.tensors_quantized++;
            e->stats.bytes_quantized += t->end - t->begin;
        } else {
            slot->state = QFS_SLOT_FAILED;
            slot->error = rc;
            free(slot->error_msg);
            slot->error_msg = strdup(err.msg);
        }
        e->stats.seconds_quantizing += dt;
        slot->waiters = 0;
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
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->done);
    free(e);
}

int qfs_engine_acquire(qfs_engine *e, qfs_tensor_source *src, size_t job, const uint8_t **data,
                       qfs_error *err)
{
    qfs_job_slot *slot = &src->slots[job];
    pthread_mutex_lock(&e->lock);
    if (slot->state == QFS_SLOT_READY) {
        slot->entry.pins++;
        qfs_cache_touch(&e->cache, &slot->entry);
        e->stats.memory_hits++;
        *data = slot->entry.data;
        pthread_mutex_unlock(&e->lock);
        return 0;
    }
    if (slot->state == QFS_SLOT_EMPTY) {
        slot->source = src;
        slot->job = job;
        slot->prefetch = 0;
        slot->state = QFS_SLOT_QUEUED;
        queue_push(&e->demand_head, &e->demand_tail, slot);
        pthread_cond_signal(&e->work);
    } else if (slot->state == QFS_SLOT_QUEUED && slot->prefetch) {
        /* A reader now needs a prefetched job: move it to the demand queue. */
        queue_remove(&e->prefetch_head, &e->prefetch_tail, slot);
        slot->prefetch = 0;
        queue_push(&e->demand_head, &e->demand_tail, slot);
        pthread_cond_signal(&e->work);
    }
    if (slot->state == QFS_SLOT_QUEUED || slot->state == QFS_SLOT_RUNNING) {
        slot->waiters++;
        e->stats.waits++;
        while (slot->state == QFS_SLOT_QUEUED || slot->state == QFS_SLOT_RUNNING)
            pthread_cond_wait(&e->done, &e->lock);
    }
    int rc = 0;
    if (slot->state == QFS_SLOT_READY) {
        *data = slot->entry.data;      /* the worker already pinned it for us */
    } else {
        rc = slot->error ? slot->error : -EIO;
        qfs_error_set(err, "%s", slot->error_msg ? slot->error_msg : "quantization failed");
    }
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
    uint64_t bytes = src->plan->jobs[job].out_bytes;
    if (slot->state == QFS_SLOT_EMPTY && e->cache.used + bytes <= e->cache.budget) {
        slot->source = src;
        slot->job = job;
        slot->prefetch = 1;
        slot->state = QFS_SLOT_QUEUED;
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
