/* quarkfs — a sort for arrays that are mostly in order already: a mount sorts millions of
 * tensor names (the file order of a view file, the weight_map of the index), and those come
 * from a header or an index that is sorted, or made of a few sorted runs. */
#ifndef QUARKFS_SORT_H
#define QUARKFS_SORT_H

#include <stddef.h>

/* Sorts n elements of `size` bytes at base in ascending order of cmp, like qsort (which cmp
 * must be fit for: a total order). Input made of a few ascending runs (up to 64) is merged in
 * O(n log runs) comparisons, one already in order costs n - 1 comparisons and nothing else;
 * anything else goes to qsort. Equal elements keep their order only on the merge path, so
 * give cmp a tie-break when that matters. 0, or -ENOMEM (base unchanged). */
int qfs_sort_runs(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));

#endif
