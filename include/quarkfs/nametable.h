/* quarkfs — a hash table of names kept elsewhere: which of n names a string is, in O(1)
 * expected time whatever the names (the hash is seeded at random, so a crafted header or index
 * cannot make its names collide). The names stay where they are: name i is the `const char *`
 * at byte offset i * stride from `first` (an array of structs holding a name pointer, or an
 * array of pointers). */
#ifndef QUARKFS_NAMETABLE_H
#define QUARKFS_NAMETABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct qfs_name_table {
    uint64_t *slots;      /* the hash's upper 32 bits and the name's index + 1; 0 = empty */
    size_t mask;          /* slots - 1 (a power of two, at least twice the names) */
    uint64_t seed;
    const char *const *first;
    size_t stride;
} qfs_name_table;

/* Builds the table of n names (n < 2^32). 0; -EEXIST when a name is there twice (the table
 * is then freed); -ENOMEM. The names must outlive the table and not move. */
int qfs_name_table_build(qfs_name_table *t, const char *const *first, size_t stride, size_t n);

/* The index of `name`, or SIZE_MAX when it is none of them (or the table was never built). */
size_t qfs_name_table_find(const qfs_name_table *t, const char *name);

/* Frees the slots; safe on a zeroed table. */
void qfs_name_table_free(qfs_name_table *t);

#endif
