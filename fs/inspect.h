/* quarkfs — `quarkfs inspect`: what the view holds, tensor by tensor. */
#ifndef QUARKFS_FS_INSPECT_H
#define QUARKFS_FS_INSPECT_H

#include <stdbool.h>
#include <stdio.h>

#include "quarkfs/model.h"

/* Prints one row per tensor of every quantized file (name, shape, source dtype -> output
 * dtypes, bytes, quantized or why not) and the totals, as a table or as JSON. 0 or -errno. */
int qfs_inspect_print(const qfs_model *m, bool json, FILE *out);

#endif
