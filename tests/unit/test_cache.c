/* Unit tests of the LRU memory cache (core/cache.c): budget, least-recently-used order, pins,
 * the entry being inserted, make_room, touch, the eviction callback and the counters. */
#include "unit_util.c"

#include "quarkfs/cache.h"

/* ---- helpers ---- */

#define MAX_LOG 32

/* Records evictions: which entry, in which order, and the entry's state when called. */
typedef struct evict_log {
    qfs_cache_entry *order[MAX_LOG];
    size_t n;
    qfs_cache *cache;
    size_t used_seen[MAX_LOG];
} evict_log;

static void on_evict(void *ctx, qfs_cache_entry *e)
{
    evict_log *log = ctx;
    assert_true(log->n < MAX_LOG);
    /* called after the entry left the list */
    assert_int_equal(e->cached, 0);
    assert_null(e->prev);
    assert_null(e->next);
    assert_int_equal(e->pins, 0);
    for (qfs_cache_entry *p = log->cache->head; p; p = p->next) assert_ptr_not_equal(p, e);
    log->used_seen[log->n] = log->cache->used;
    log->order[log->n++] = e;
}

typedef struct fixture {
    qfs_cache c;
    evict_log log;
    qfs_cache_entry e[8];
} fixture;

static void setup_cache(fixture *f, size_t budget)
{
    memset(f, 0, sizeof *f);
    qfs_cache_init(&f->c, budget, on_evict, &f->log);
    f->log.cache = &f->c;
    for (int i = 0; i < 8; i++) f->e[i].size = 10;
}

/* Checks the list from most to least recent, both directions, and the counters. */
static void check_list(const qfs_cache *c, qfs_cache_entry *const *expected, size_t n)
{
    size_t i = 0, used = 0;
    const qfs_cache_entry *prev = NULL;
    for (const qfs_cache_entry *p = c->head; p; p = p->next, i++) {
        assert_true(i < n);
        if (p != expected[i]) fail_msg("list position %zu holds the wrong entry", i);
        assert_ptr_equal(p->prev, prev);
        assert_int_equal(p->cached, 1);
        used += p->size;
        prev = p;
    }
    assert_int_equal(i, n);
    assert_ptr_equal(c->tail, n ? expected[n - 1] : NULL);
    assert_int_equal(c->n_entries, n);
    assert_int_equal(c->used, used);
}

static void check_evicted(const evict_log *log, qfs_cache_entry *const *expected, size_t n)
{
    assert_int_equal(log->n, n);
    for (size_t i = 0; i < n; i++)
        if (log->order[i] != expected[i]) fail_msg("eviction %zu evicted the wrong entry", i);
}

#define LIST(...) (qfs_cache_entry *const[]){__VA_ARGS__}
#define NARGS(...) (sizeof((qfs_cache_entry *const[]){__VA_ARGS__}) / sizeof(qfs_cache_entry *))
#define CHECK_LIST(c, ...) check_list((c), LIST(__VA_ARGS__), NARGS(__VA_ARGS__))
#define CHECK_EVICTED(log, ...) check_evicted((log), LIST(__VA_ARGS__), NARGS(__VA_ARGS__))

/* ---- tests ---- */

static void test_init_empty(void **state)
{
    (void)state;
    fixture f;
    memset(&f.c, 0x5A, sizeof f.c);
    qfs_cache_init(&f.c, 123, on_evict, &f.log);
    assert_null(f.c.head);
    assert_null(f.c.tail);
    assert_int_equal(f.c.used, 0);
    assert_int_equal(f.c.budget, 123);
    assert_int_equal(f.c.n_entries, 0);
    assert_int_equal(f.c.evictions, 0);
    assert_ptr_equal(f.c.evict_ctx, &f.log);
}

static void test_insert_most_recent_first(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 100);
    qfs_cache_insert(&f.c, &f.e[0]);
    CHECK_LIST(&f.c, &f.e[0]);
    qfs_cache_insert(&f.c, &f.e[1]);
    qfs_cache_insert(&f.c, &f.e[2]);
    CHECK_LIST(&f.c, &f.e[2], &f.e[1], &f.e[0]);
    assert_int_equal(f.c.used, 30);
    assert_int_equal(f.log.n, 0);
    assert_int_equal(f.c.evictions, 0);
}

static void test_budget_evicts_lru(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 30);
    for (int i = 0; i < 3; i++) qfs_cache_insert(&f.c, &f.e[i]);   /* exactly the budget */
    assert_int_equal(f.log.n, 0);
    qfs_cache_insert(&f.c, &f.e[3]);                                  /* 40 > 30: e0 goes */
    CHECK_LIST(&f.c, &f.e[3], &f.e[2], &f.e[1]);
    CHECK_EVICTED(&f.log, &f.e[0]);
    assert_int_equal(f.log.used_seen[0], 30);   /* used already lowered in the callback */
    assert_int_equal(f.c.evictions, 1);
    /* a 15-byte entry: 45 -> e1 goes (35), still over -> e2 goes (25); e3 stays */
    f.e[4].size = 15;
    qfs_cache_insert(&f.c, &f.e[4]);
    CHECK_LIST(&f.c, &f.e[4], &f.e[3]);
    CHECK_EVICTED(&f.log, &f.e[0], &f.e[1], &f.e[2]);
    assert_int_equal(f.log.used_seen[2], 25);
    assert_int_equal(f.c.used, 25);
    assert_int_equal(f.c.evictions, 3);
}

static void test_budget_stops_as_soon_as_under(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 35);
    for (int i = 0; i < 3; i++) qfs_cache_insert(&f.c, &f.e[i]);   /* 30 */
    f.e[3].size = 12;                                                 /* 42: one eviction */
    qfs_cache_insert(&f.c, &f.e[3]);
    CHECK_LIST(&f.c, &f.e[3], &f.e[2], &f.e[1]);
    CHECK_EVICTED(&f.log, &f.e[0]);
    assert_int_equal(f.c.used, 32);
}

static void test_touch_changes_order(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 30);
    for (int i = 0; i < 3; i++) qfs_cache_insert(&f.c, &f.e[i]);
    qfs_cache_touch(&f.c, &f.e[0]);                  /* tail to head */
    CHECK_LIST(&f.c, &f.e[0], &f.e[2], &f.e[1]);
    qfs_cache_touch(&f.c, &f.e[2]);                  /* middle to head */
    CHECK_LIST(&f.c, &f.e[2], &f.e[0], &f.e[1]);
    qfs_cache_touch(&f.c, &f.e[2]);                  /* head stays */
    CHECK_LIST(&f.c, &f.e[2], &f.e[0], &f.e[1]);
    qfs_cache_insert(&f.c, &f.e[3]);                 /* now e1 is the least recent */
    CHECK_EVICTED(&f.log, &f.e[1]);
    CHECK_LIST(&f.c, &f.e[3], &f.e[2], &f.e[0]);
    /* touching an entry that is not cached does nothing */
    qfs_cache_touch(&f.c, &f.e[1]);
    CHECK_LIST(&f.c, &f.e[3], &f.e[2], &f.e[0]);
    assert_int_equal(f.e[1].cached, 0);
}

static void test_pinned_never_evicted(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 30);
    for (int i = 0; i < 3; i++) qfs_cache_insert(&f.c, &f.e[i]);
    f.e[0].pins = 1;                                 /* the least recent is in use */
    qfs_cache_insert(&f.c, &f.e[3]);
    CHECK_EVICTED(&f.log, &f.e[1]);                  /* skipped e0, took the next */
    CHECK_LIST(&f.c, &f.e[3], &f.e[2], &f.e[0]);
    f.e[2].pins = 2;
    f.e[3].pins = 1;
    qfs_cache_insert(&f.c, &f.e[4]);                 /* nothing else can go: over budget */
    CHECK_EVICTED(&f.log, &f.e[1]);
    CHECK_LIST(&f.c, &f.e[4], &f.e[3], &f.e[2], &f.e[0]);
    assert_int_equal(f.c.used, 40);
    /* unpinned again, the next insert brings it back under budget, least recent first */
    f.e[0].pins = f.e[2].pins = f.e[3].pins = 0;
    qfs_cache_insert(&f.c, &f.e[5]);                 /* 50 -> evict e0, e2 */
    CHECK_EVICTED(&f.log, &f.e[1], &f.e[0], &f.e[2]);
    CHECK_LIST(&f.c, &f.e[5], &f.e[4], &f.e[3]);
}

static void test_inserted_entry_never_evicted_by_its_insert(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 30);
    qfs_cache_insert(&f.c, &f.e[0]);
    qfs_cache_insert(&f.c, &f.e[1]);
    f.e[2].size = 100;                               /* bigger than the whole budget */
    qfs_cache_insert(&f.c, &f.e[2]);
    CHECK_EVICTED(&f.log, &f.e[0], &f.e[1]);         /* everything else goes */
    CHECK_LIST(&f.c, &f.e[2]);                       /* the new entry stays, over budget */
    assert_int_equal(f.c.used, 100);
    /* the next insert evicts it (unpinned, least recent) */
    qfs_cache_insert(&f.c, &f.e[3]);
    CHECK_EVICTED(&f.log, &f.e[0], &f.e[1], &f.e[2]);
    CHECK_LIST(&f.c, &f.e[3]);
}

static void test_zero_budget(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 0);
    qfs_cache_insert(&f.c, &f.e[0]);
    CHECK_LIST(&f.c, &f.e[0]);
    qfs_cache_insert(&f.c, &f.e[1]);
    CHECK_LIST(&f.c, &f.e[1]);
    CHECK_EVICTED(&f.log, &f.e[0]);
}

static void test_make_room(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 50);
    for (int i = 0; i < 4; i++) qfs_cache_insert(&f.c, &f.e[i]);   /* 40 */
    qfs_cache_make_room(&f.c, 10);                                    /* 40 + 10 <= 50 */
    assert_int_equal(f.log.n, 0);
    qfs_cache_make_room(&f.c, 25);                                    /* needs used <= 25 */
    CHECK_EVICTED(&f.log, &f.e[0], &f.e[1]);
    CHECK_LIST(&f.c, &f.e[3], &f.e[2]);
    f.e[2].pins = 1;
    qfs_cache_make_room(&f.c, 45);                                    /* needs used <= 5 */
    CHECK_EVICTED(&f.log, &f.e[0], &f.e[1], &f.e[3]);
    CHECK_LIST(&f.c, &f.e[2]);                                        /* pinned stays */
    assert_int_equal(f.c.evictions, 3);
    /* more than the budget: evict everything that can go */
    f.e[2].pins = 0;
    qfs_cache_make_room(&f.c, 1000);
    CHECK_LIST(&f.c);
    CHECK_EVICTED(&f.log, &f.e[0], &f.e[1], &f.e[3], &f.e[2]);
}

/* qfs_cache_evict takes exactly the entry named, from anywhere in the list (the engine picks a
 * fully read weight of the right size), counts it and calls back; a pinned or uncached entry is
 * left alone. */
static void test_evict_one(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 100);
    for (int i = 0; i < 4; i++) qfs_cache_insert(&f.c, &f.e[i]);   /* 40: e3 e2 e1 e0 */
    qfs_cache_evict(&f.c, &f.e[2]);                                   /* from the middle */
    CHECK_EVICTED(&f.log, &f.e[2]);
    CHECK_LIST(&f.c, &f.e[3], &f.e[1], &f.e[0]);
    assert_int_equal(f.log.used_seen[0], 30);
    assert_int_equal(f.c.evictions, 1);
    f.e[0].pins = 1;
    qfs_cache_evict(&f.c, &f.e[0]);                                   /* pinned: stays */
    qfs_cache_evict(&f.c, &f.e[2]);                                   /* not cached: no-op */
    CHECK_EVICTED(&f.log, &f.e[2]);
    CHECK_LIST(&f.c, &f.e[3], &f.e[1], &f.e[0]);
    qfs_cache_evict(&f.c, &f.e[3]);                                   /* the head */
    CHECK_LIST(&f.c, &f.e[1], &f.e[0]);
    assert_int_equal(f.c.evictions, 2);
}

static void test_clear(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 100);
    for (int i = 0; i < 4; i++) qfs_cache_insert(&f.c, &f.e[i]);
    f.e[1].pins = 1;
    qfs_cache_clear(&f.c);
    CHECK_LIST(&f.c, &f.e[1]);
    CHECK_EVICTED(&f.log, &f.e[0], &f.e[2], &f.e[3]);
    f.e[1].pins = 0;
    qfs_cache_clear(&f.c);
    CHECK_LIST(&f.c);
    assert_int_equal(f.c.evictions, 4);
    assert_int_equal(f.c.used, 0);
}

static void test_reinsert_after_eviction(void **state)
{
    (void)state;
    fixture f;
    setup_cache(&f, 20);
    qfs_cache_insert(&f.c, &f.e[0]);
    qfs_cache_insert(&f.c, &f.e[1]);
    qfs_cache_insert(&f.c, &f.e[2]);                 /* evicts e0 */
    CHECK_EVICTED(&f.log, &f.e[0]);
    qfs_cache_insert(&f.c, &f.e[0]);                 /* back as most recent, evicts e1 */
    CHECK_LIST(&f.c, &f.e[0], &f.e[2]);
    CHECK_EVICTED(&f.log, &f.e[0], &f.e[1]);
    assert_int_equal(f.c.evictions, 2);
}

static void test_no_callback(void **state)
{
    (void)state;
    qfs_cache c;
    qfs_cache_entry e[3];
    memset(e, 0, sizeof e);
    for (int i = 0; i < 3; i++) e[i].size = 8;
    qfs_cache_init(&c, 16, NULL, NULL);
    for (int i = 0; i < 3; i++) qfs_cache_insert(&c, &e[i]);
    assert_int_equal(c.evictions, 1);
    assert_int_equal(e[0].cached, 0);
    assert_int_equal(c.used, 16);
    assert_int_equal(c.n_entries, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_empty),
        cmocka_unit_test(test_insert_most_recent_first),
        cmocka_unit_test(test_budget_evicts_lru),
        cmocka_unit_test(test_budget_stops_as_soon_as_under),
        cmocka_unit_test(test_touch_changes_order),
        cmocka_unit_test(test_pinned_never_evicted),
        cmocka_unit_test(test_inserted_entry_never_evicted_by_its_insert),
        cmocka_unit_test(test_zero_budget),
        cmocka_unit_test(test_evict_one),
        cmocka_unit_test(test_make_room),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_reinsert_after_eviction),
        cmocka_unit_test(test_no_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
