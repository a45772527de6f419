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
#include "quarkfs/jsonstream.h"
#include "quarkfs/nametable.h"

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
    qfs_name_table names;     /* of the tensors' names, for qfs_st_find; empty in a hand-built
                                 file */
    json_t *metadata;         /* the __metadata__ object (string values only), or NULL */
    uint64_t header_len;      /* N, the JSON length including padding */
    uint64_t data_start;      /* 8 + N */
    uint64_t file_size;       /* 8 + N + data bytes */
} qfs_st_file;

/* Parses and validates a header. `prefix` holds the first `prefix_len` bytes of the file (at
 * least 8 + N of them if N fits, else as many as the file has); file_size is the file's size;
 * `path` is only used in messages. 0 on success (free with qfs_st_file_free), else -EINVAL
 * (malformed) or -ENOMEM with err filled. The streaming parser reads the header first; what
 * it leaves to the tree parser, that one decides (below). */
int qfs_st_parse(const uint8_t *prefix, size_t prefix_len, uint64_t file_size, const char *path,
                 qfs_st_file *out, qfs_error *err);

/* qfs_st_parse with one of its two JSON parsers (or both: QFS_JSON_AUTO). The tree parser
 * (jansson) reads any header and says what is wrong with it. The streaming parser (yajl's
 * events, no tree: ~20x faster on a header of a million tensors) reads only the common case —
 * printable ASCII, no backslash escape, no duplicate or unknown key, plain integers of at most
 * 2^63 - 1, the value types the format asks for — and returns -EAGAIN with nothing set for
 * anything else, JSON it cannot read included, so every message about the JSON comes from the
 * tree parser; the layout checks after either are the same code. Where the streaming parser
 * succeeds, the tree parser gives the same result (the unit tests and the fuzz target check). */
int qfs_st_parse_with(qfs_json_parser parser, const uint8_t *prefix, size_t prefix_len,
                      uint64_t file_size, const char *path, qfs_st_file *out, qfs_error *err);

/* Reads the header of the open file fd (pread) and parses it as qfs_st_parse does. */
int qfs_st_read_fd(int fd, const char *path, qfs_st_file *out, qfs_error *err);

/* Releases everything qfs_st_parse allocated; safe on a zeroed struct. */
void qfs_st_file_free(qfs_st_file *f);

/* Number of elements of a tensor (product of its shape; 1 for a scalar). */
uint64_t qfs_st_numel(const qfs_st_tensor *t);

/* Finds a tensor by name: a lookup in the name table (built by qfs_st_parse), O(1) expected, so
 * a mount of n tensors stays O(n); a linear scan when there is none (a hand-built file). */
const qfs_st_tensor *qfs_st_find(const qfs_st_file *f, const char *name);

#endif
