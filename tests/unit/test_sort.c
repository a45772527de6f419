/* Unit tests of the sort of mostly sorted arrays (core/sort.c): already sorted, a few runs
 * (merged, stable), many runs (qsort), empty and one-element input, against qsort's order. */
#include "unit_util.c"

#include "quarkfs/sort.h"

typedef struct item {
    uint32_t key;
    uint32_t seq;   /* the input position: shows whether equal keys kept their order */
} item;

static int cmp_key(const void *a, const void *b)
{
    const item *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

static int cmp_key_seq(const void *a, const void *b)
{
    int c = cmp_key(a, b);
    if (c) return c;
    const item *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* n items in `runs` ascending runs of random lengths, keys in [0, range). */
static item *make_runs(size_t n, size_t runs, uint32_t range)
{
    item *a = malloc((n ? n : 1) * sizeof *a);
    assert_non_null(a);
    for (size_t i = 0; i < n; i++) a[i] = (item){rnd() % range, (uint32_t)i};
    /* Sort each of `runs` slices: the slices' boundaries are random. */
    size_t start = 0;
    for (size_t r = 0; r < runs && start < n; r++) {
        size_t len = r + 1 == runs ? n - start : 1 + rnd() % (2 * n / runs + 1);
        if (len > n - start) len = n - start;
        qsort(a + start, len, sizeof *a, cmp_key_seq);
        start += len;
    }
    return a;
}

/* Sorts a copy with qfs_sort_runs and one with qsort (by key, then input position: the order
 * a stable sort gives) and compares. */
static void check_sort(size_t n, size_t runs, uint32_t range, bool stable)
{
    item *a = make_runs(n, runs, range);
    item *want = malloc((n ? n : 1) * sizeof *want);
    assert_non_null(want);
    memcpy(want, a, n * sizeof *a);
    qsort(want, n, sizeof *want, cmp_key_seq);
    assert_int_equal(qfs_sort_runs(a, n, sizeof *a, cmp_key), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].key, want[i].key);
        if (stable) assert_int_equal(a[i].seq, want[i].seq);
    }
    free(a);
    free(want);
}

static void test_sort_trivial(void **state)
{
    (void)state;
    check_sort(0, 1, 10, true);
    check_sort(1, 1, 10, true);
    check_sort(2, 2, 10, true);
}

static void test_sort_sorted_input(void **state)
{
    (void)state;
    check_sort(1000, 1, 1u << 30, true);
    check_sort(1000, 1, 3, true);   /* many equal keys */
}

static void test_sort_few_runs_stable(void **state)
{
    (void)state;
    for (size_t runs = 2; runs <= 64; runs = runs * 2 + 1) {
        check_sort(5000, runs, 1u << 30, true);
        check_sort(5000, runs, 7, true);   /* equal keys across runs keep their order */
    }
    check_sort(5000, 64, 100, true);
}

static void test_sort_many_runs(void **state)
{
    (void)state;
    check_sort(5000, 65, 1u << 30, false);
    check_sort(5000, 5000, 1u << 30, false);   /* random order */
    check_sort(5000, 5000, 4, false);
}

/* Elements of an odd size (not a multiple of 8) are moved whole. */
static int cmp_bytes(const void *a, const void *b) { return memcmp(a, b, 3); }

static void test_sort_odd_size(void **state)
{
    (void)state;
    unsigned char a[3 * 9] = {5, 5, 5, 7, 0, 0, 9, 1, 1,  1, 2, 3, 4, 4, 4, 8, 8, 8,
                              0, 0, 1, 3, 3, 3, 6, 6, 6};
    unsigned char want[3 * 9];
    memcpy(want, a, sizeof a);
    qsort(want, 9, 3, cmp_bytes);
    assert_int_equal(qfs_sort_runs(a, 9, 3, cmp_bytes), 0);
    assert_memory_equal(a, want, sizeof a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sort_trivial),
        cmocka_unit_test(test_sort_sorted_input),
        cmocka_unit_test(test_sort_few_runs_stable),
        cmocka_unit_test(test_sort_many_runs),
        cmocka_unit_test(test_sort_odd_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
