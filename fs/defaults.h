/* The mount's defaults, in one place: the option parser prints them in --help, the mount uses
 * them, and the FUSE operations size their per-thread state by them. */
#ifndef QUARKFS_FS_DEFAULTS_H
#define QUARKFS_FS_DEFAULTS_H

#include <stddef.h>
#include <stdint.h>

#define DEFAULT_CACHE_MEM ((size_t)1 << 30)
#define DEFAULT_CACHE_SIZE ((uint64_t)64 << 30)
#define DEFAULT_READAHEAD_KB 16384
#define DEFAULT_MAX_BACKGROUND 64
#define DEFAULT_MAX_THREADS 16
/* Reply buffers the operations keep: one per FUSE worker thread at the default max_threads
 * (more threads allocate per read). */
#define QFS_READ_BUFS DEFAULT_MAX_THREADS

#endif
