/* quarkfs — export: writes the whole view to a directory through qfs_view_read. */
#ifndef QUARKFS_EXPORT_H
#define QUARKFS_EXPORT_H

#include <stdint.h>

#include "quarkfs/engine.h"
#include "quarkfs/error.h"
#include "quarkfs/model.h"

/* Progress: bytes written so far of total, and the file in progress. */
typedef void (*qfs_export_progress_fn)(void *ctx, uint64_t done, uint64_t total,
                                       const char *file);

/* Writes every entry of m under out_dir (created if missing; must be empty). Each file is
 * written as "NAME.quarkfs-part" then renamed; a failed export removes everything it wrote (and
 * OUT itself if it created it). 0, or negative errno with err naming the file. */
int qfs_export(qfs_model *m, qfs_engine *e, const char *out_dir, qfs_export_progress_fn progress,
               void *ctx, qfs_error *err);

#endif
