/* quarkfs — sorting mostly sorted arrays (sort.h). */
#include "quarkfs/sort.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RUNS 64   /* more runs than this: the input is not "mostly sorted", qsort it */

/* Merges the sorted ranges [a, a + na) and [b, b + nb) into out (no overlap with either). */
static void merge(const char *a, size_t na, const char *b, size_t nb, char *out, size_t size,
                  int (*cmp)(const void *, const void *))
{
    const char *ae = a + na * size, *be = b + nb * size;
    while (a < ae && b < be) {
        if (cmp(b, a) < 0) {   /* a first on ties: stable */
            memcpy(out, b, size);
            b += size;
        } else {
            memcpy(out, a, size);
            a += size;
        }
        out += size;
    }
    memcpy(out, a, (size_t)(ae - a));
    memcpy(out + (ae - a), b, (size_t)(be - b));
}

int qfs_sort_runs(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
    char *a = base;
    size_t start[MAX_RUNS + 1], runs = 1;   /* where each ascending run starts, then n */
    start[0] = 0;
    for (size_t i = 1; i < n; i++) {
        if (cmp(a + (i - 1) * size, a + i * size) <= 0) continue;
        if (runs == MAX_RUNS) {
            qsort(base, n, size, cmp);
            return 0;
        }
        start[runs++] = i;
    }
    if (runs == 1) return 0;
    start[runs] = n;
    char *tmp = malloc(n * size), *from = a, *to = tmp;
    if (!tmp) return -ENOMEM;
    /* Merge neighbouring runs pairwise, from one buffer into the other, until one is left. */
    while (runs > 1) {
        size_t k = 0;
        for (size_t r = 0; r < runs; r += 2, k++) {
            size_t s = start[r], m = start[r + 1], e = r + 2 <= runs ? start[r + 2] : m;
            if (r + 1 == runs) memcpy(to + s * size, from + s * size, (m - s) * size);
            else merge(from + s * size, m - s, from + m * size, e - m, to + s * size, size, cmp);
            start[k] = s;
        }
        start[k] = n;
        runs = k;
        char *t = from;
        from = to;
        to = t;
    }
    if (from != a) memcpy(a, from, n * size);
    free(tmp);
    return 0;
}
