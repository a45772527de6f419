/* quarkfs fuzzing — what the three libFuzzer targets share: the entry point, an invariant check
 * that aborts (so libFuzzer reports the input), and the checks of a parsed header and of a plan.
 * Compiled into the libFuzzer binaries (clang, -Dfuzz=true) and into the replay tests (any
 * compiler), so a regression input fails `meson test` the same way it failed the fuzzer. */
#ifndef QUARKFS_FUZZ_CHECK_H
#define QUARKFS_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "quarkfs/plan.h"
#include "quarkfs/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated invariant: say which and abort, which libFuzzer reports as a crash. */
#define FUZZ_CHECK(cond, ...)                                                                   \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "fuzz invariant violated at %s:%d: %s\n  ", __FILE__, __LINE__,     \
                    #cond);                                                                     \
            fprintf(stderr, __VA_ARGS__);                                                       \
            fputc('\n', stderr);                                                                \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

/* A successfully parsed header: tensors tile the data section [0, file_size - data_start)
 * exactly, each of shape x dtype bytes, names unique, metadata string-valued. */
void fuzz_check_st_file(const qfs_st_file *f, uint64_t file_size);

/* A plan built from src with opts: decisions agree with qfs_select_tensor/qfs_layout_for,
 * tensors in safetensors file order with contiguous offsets and no overflow, header_size a
 * multiple of 8 with the right length prefix, file_size = header + data, qfs_plan_tensor_at on
 * every tensor boundary, every job's outputs exactly its qfs_layout_for (the sum of passthrough
 * sizes and layout part sizes is the data size), and the header re-parses to the same tensors. */
void fuzz_check_plan(const qfs_st_file *src, const qfs_plan_options *opts, const qfs_plan *p);

#endif
