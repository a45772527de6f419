#include "quarkfs/nametable.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <xxhash.h>

static const char *name_at(const qfs_name_table *t, size_t i)
{
    return *(const char *const *)((const char *)t->first + i * t->stride);
}

/* Open addressing, at most half full. A slot keeps the hash's upper 32 bits beside the index,
 * so a probe of another name rarely reads a name: with a million names each lookup is about
 * one cache miss, where a binary search costs ~20 strcmp. */
static size_t probe(const qfs_name_table *t, const char *name, uint64_t hash, bool *found)
{
    uint64_t tag = hash >> 32 << 32;
    size_t h = (size_t)hash & t->mask;
    for (; t->slots[h]; h = (h + 1) & t->mask) {
        uint64_t slot = t->slots[h];
        if ((slot >> 32 << 32) == tag && strcmp(name_at(t, (uint32_t)slot - 1), name) == 0) {
            *found = true;
            return h;
        }
    }
    *found = false;
    return h;
}

int qfs_name_table_build(qfs_name_table *t, const char *const *first, size_t stride, size_t n)
{
    memset(t, 0, sizeof *t);
    if (n >= UINT32_MAX) return -ENOMEM;
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    t->slots = calloc(cap, sizeof *t->slots);
    if (!t->slots) return -ENOMEM;
    t->mask = cap - 1;
    t->first = first;
    t->stride = stride;
    if (getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) != sizeof t->seed)
        t->seed = (uint64_t)(uintptr_t)t->slots ^ (uint64_t)time(NULL);
    for (size_t i = 0; i < n; i++) {
        const char *name = name_at(t, i);
        uint64_t hash = XXH3_64bits_withSeed(name, strlen(name), t->seed);
        bool found;
        size_t h = probe(t, name, hash, &found);
        if (found) {
            qfs_name_table_free(t);
            return -EEXIST;
        }
        t->slots[h] = (hash >> 32 << 32) | (i + 1);
    }
    return 0;
}

size_t qfs_name_table_find(const qfs_name_table *t, const char *name)
{
    if (!t->slots) return SIZE_MAX;
    bool found;
    size_t h = probe(t, name, XXH3_64bits_withSeed(name, strlen(name), t->seed), &found);
    return found ? (uint32_t)t->slots[h] - 1 : SIZE_MAX;
}

void qfs_name_table_free(qfs_name_table *t)
{
    free(t->slots);
    memset(t, 0, sizeof *t);
}
