#include "quarkfs/cache.h"

#include <string.h>

void qfs_cache_init(qfs_cache *c, size_t budget, qfs_cache_evict_fn evict, void *ctx)
{
    memset(c, 0, sizeof *c);
    c->budget = budget;
    c->evict = evict;
    c->evict_ctx = ctx;
}

static void unlink_entry(qfs_cache *c, qfs_cache_entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else c->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(qfs_cache *c, qfs_cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static void evict_one(qfs_cache *c, qfs_cache_entry *e)
{
    unlink_entry(c, e);
    e->cached = 0;
    c->used -= e->size;
    c->n_entries--;
    c->evictions++;
    if (c->evict) c->evict(c->evict_ctx, e);
}

static void evict_until(qfs_cache *c, size_t limit, const qfs_cache_entry *keep)
{
    qfs_cache_entry *e = c->tail;
    while (c->used > limit && e) {
        qfs_cache_entry *prev = e->prev;
        if (e != keep && e->pins == 0) evict_one(c, e);
        e = prev;
    }
}

void qfs_cache_evict(qfs_cache *c, qfs_cache_entry *e)
{
    if (e->cached && e->pins == 0) evict_one(c, e);
}

void qfs_cache_insert(qfs_cache *c, qfs_cache_entry *e)
{
    push_front(c, e);
    e->cached = 1;
    c->used += e->size;
    c->n_entries++;
    evict_until(c, c->budget, e);
}

void qfs_cache_touch(qfs_cache *c, qfs_cache_entry *e)
{
    if (!e->cached || c->head == e) return;
    unlink_entry(c, e);
    push_front(c, e);
}

void qfs_cache_make_room(qfs_cache *c, size_t extra)
{
    size_t limit = extra >= c->budget ? 0 : c->budget - extra;
    evict_until(c, limit, NULL);
}

void qfs_cache_clear(qfs_cache *c)
{
    evict_until(c, 0, NULL);
}
