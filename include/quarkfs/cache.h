/* quarkfs — memory cache of materialized tensors: a byte budget and least-recently-used
 * eviction over entries that readers can pin. Not thread-safe: the engine's lock guards it. */
#ifndef QUARKFS_CACHE_H
#define QUARKFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct qfs_cache_entry {
    struct qfs_cache_entry *prev, *next;   /* LRU list, most recent at the head */
    uint8_t *data;
    size_t size;
    unsigned pins;                         /* > 0: in use, never evicted */
    int cached;                            /* 1 while in the list */
} qfs_cache_entry;

/* Called when an entry is evicted (after it left the list); frees or resets the owner. */
typedef void (*qfs_cache_evict_fn)(void *ctx, qfs_cache_entry *e);

typedef struct qfs_cache {
    qfs_cache_entry *head, *tail;
    size_t used, budget;
    size_t n_entries;
    uint64_t evictions;
    qfs_cache_evict_fn evict;
    void *evict_ctx;
} qfs_cache;

/* Initializes an empty cache with a byte budget. */
void qfs_cache_init(qfs_cache *c, size_t budget, qfs_cache_evict_fn evict, void *ctx);
/* Adds a filled entry as most recent, then evicts unpinned least-recent entries (never `e`
 * itself) until used <= budget or nothing else can go. */
void qfs_cache_insert(qfs_cache *c, qfs_cache_entry *e);
/* Marks an entry most recently used. */
void qfs_cache_touch(qfs_cache *c, qfs_cache_entry *e);
/* Evicts unpinned least-recent entries until used + extra <= budget (room for a new entry). */
void qfs_cache_make_room(qfs_cache *c, size_t extra);
/* Evicts this one entry now (it must be cached and unpinned), as make_room would. */
void qfs_cache_evict(qfs_cache *c, qfs_cache_entry *e);
/* Removes every unpinned entry (teardown). */
void qfs_cache_clear(qfs_cache *c);

#endif
