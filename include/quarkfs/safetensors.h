/* quarkfs — safetensors header parser and validator.
 * Accepts what the Rust safetensors reader (0.8) accepts, but for duplicate tensor names and
 * more than 16 dimensions, and rejects the rest with a message naming the file and the
 * problem (doc/FORMAT.md §2.1). */
#ifndef QUARKFS_SAFETENSORS_H
#define QUARKFS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "quarkfs/dtype.h"
#include "quarkfs/error.h"

#define QFS_ST_MAX_HEADER 100000000ull   /* safetensors' MAX_HEADER_SIZE */
#define QFS_ST_MAX_DIMS 16

typedef struct qfs_st_tensor {
    char *name;
    qfs_dtype dtype;
    unsigned ndim;
    uint64_t shape[QFS_ST_MAX_DIMS];
    uint64_t begin, end;      /* data_offsets, relative to the start of the data section */
} qfs_st_tensor;

typedef struct qfs_st_file {
    qfs_st_tensor *tensors;   /* in header (JSON) order */
    size_t n_tensors;
    uint64_t *name_slots;     /* hash table of names for qfs_st_find: the hash's upper 32 bits
                                 and tensor index + 1, 0 for an empty slot; NULL in a
                                 hand-built file */
    size_t name_mask;         /* slots - 1 (a power of two) */
    uint64_t name_seed;       /* the hash's random seed */
    json_t *metadata;         /* the __metadata__ object (string values only), or NULL */
    uint64_t header_len;      /* N, the JSON length including padding */
    uint64_t data_start;      /* 8 + N */
    uint64_t file_size;       /* 8 + N + data bytes */
} qfs_st_file;

/* Parses and validates a header. `prefix` holds the first `prefix_len` bytes of the file (at
 * least 8 + N of them if N fits, else as many as the file has); file_size is the file's size;
 * `path` is only used in messages. 0 on success (free with qfs_st_file_free), else -EINVAL
 * (malformed) or -ENOMEM with err filled. */
int qfs_st_parse(const uint8_t *prefix, size_t prefix_len, uint64_t file_size, const char *path,
                 qfs_st_file *out, qfs_error *err);

/* Reads the header of the open file fd (pread) and parses it as qfs_st_parse does. */
int qfs_st_read_fd(int fd, const char *path, qfs_st_file *out, qfs_error *err);

/* Releases everything qfs_st_parse allocated; safe on a zeroed struct. */
void qfs_st_file_free(qfs_st_file *f);

/* Number of elements of a tensor (product of its shape; 1 for a scalar). */
uint64_t qfs_st_numel(const qfs_st_tensor *t);

/* Finds a tensor by name: a lookup in name_slots (built by qfs_st_parse), O(1) expected, so a
 * mount of n tensors stays O(n); a linear scan when name_slots is NULL (a hand-built file). */
const qfs_st_tensor *qfs_st_find(const qfs_st_file *f, const char *name);

#endif
