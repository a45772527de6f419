/* quarkfs — the whole view of a source directory: a tree of entries, each a directory, a
 * passthrough file, a generated JSON file or a quantized safetensors file, with the exact
 * attributes (size, mode without write bits, times) it shows for the life of the mount. */
#ifndef QUARKFS_MODEL_H
#define QUARKFS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "quarkfs/error.h"
#include "quarkfs/plan.h"
#include "quarkfs/safetensors.h"
#include "quarkfs/select.h"
#include "quarkfs/spec.h"

typedef enum qfs_entry_kind {
    QFS_ENTRY_DIR,
    QFS_ENTRY_PASSTHROUGH,   /* bytes of src_path, unchanged */
    QFS_ENTRY_GENERATED,     /* bytes held in memory (config.json, the index) */
    QFS_ENTRY_QUANTIZED,     /* a model*.safetensors file, planned */
} qfs_entry_kind;

typedef struct qfs_entry {
    char *path;              /* relative to the root, "" for the root itself */
    const char *name;        /* last component of path */
    size_t parent;           /* index of the parent directory (0 for the root) */
    qfs_entry_kind kind;
    struct stat st;          /* what getattr answers */
    char *src_path;          /* absolute path of the source (symlinks resolved by the kernel) */
    dev_t src_dev;           /* the source file found at mount (through symlinks): a different */
    ino_t src_ino;           /* file at src_path later is refused, never served */
    bool src_link;           /* src_path was a symlink (allowed by the policy) at mount; else
                              * a symlink found there later is refused (O_NOFOLLOW) */
    size_t *children;        /* DIR: child indices, sorted by name */
    size_t n_children;
    uint8_t *data;           /* GENERATED */
    size_t data_len;
    qfs_st_file st_file;     /* QUANTIZED */
    bool st_borrowed;        /* st_file belongs to the view it was copied from (open_like) */
    qfs_plan plan;
    int src_fd;              /* QUANTIZED: the source, open from the build on (-1 otherwise) */
    off_t src_size;          /* QUANTIZED: its size and mtime at the build: a change is */
    struct timespec src_mtime;   /* refused, never served */
    struct qfs_tensor_source *source;   /* QUANTIZED: its jobs' state, for the engine */
    int error;               /* != 0: this entry cannot be read (negative errno) ... */
    char *error_msg;         /* ... and why, naming the file */
} qfs_entry;

typedef struct qfs_model_options {
    const qfs_spec *spec;
    qfs_format format;
    qfs_select_rules rules;  /* its layer rules must pass qfs_layer_rules_check_format */
    bool check_finite;       /* read every candidate at build time; NaN/Inf ones stay unquantized */
    bool follow_all_symlinks;/* else only symlinks into SRC (or its HF cache repository) */
} qfs_model_options;

typedef struct qfs_model {
    char *src_root;          /* absolute */
    char link_root[4096];    /* a HF cache snapshot's repository (symlinks may point there), or "" */
    qfs_model_options opts;
    qfs_entry *entries;      /* entries[0] is the root */
    size_t n_entries;
    char **warnings;         /* problems found at build time (broken shards, ...), for the log */
    size_t n_warnings;
    uint64_t src_bytes, view_bytes;   /* totals over the quantized files */
} qfs_model;

/* Scans src and plans the view. Broken files do not fail the build: they become entries with
 * `error` set and a warning. Fails (-EINVAL, -ENOENT, ...) only when src is unusable as a whole
 * (not a directory, an already quantized config.json), or when the layer rules cannot be
 * written unambiguously (-EINVAL): a user's rule that matches no candidate module, or a module
 * that loaders reading the config's sorted layer_quant_config would give another spec. */
int qfs_model_open(const char *src, const qfs_model_options *opts, qfs_model **out,
                   qfs_error *err);
/* Another view of the same source for other options (spec, format, rules): the directory
 * tree and the parsed safetensors headers of base are reused, not scanned again, so only the
 * plans and the generated files are made. base must outlive the new model (its headers are
 * shared). Fails as qfs_model_open does for the layer rules. */
int qfs_model_open_like(const qfs_model *base, const qfs_model_options *opts, qfs_model **out,
                        qfs_error *err);
/* Closes source files and frees the model, its tensor sources with it: destroy the engine that
 * used them first. */
void qfs_model_close(qfs_model *m);
/* The spec of a weight's module under the view's layer rules (the view's spec when no rule
 * matches); *rule receives the rule's index in opts.rules.layers, or SIZE_MAX. */
const qfs_spec *qfs_model_spec_for(const qfs_model *m, const char *tensor_name, size_t *rule);
/* Finds the child `name` of directory entry `dir`; 0 or -ENOENT / -ENOTDIR. */
int qfs_model_lookup(const qfs_model *m, size_t dir, const char *name, size_t *out);

#endif
