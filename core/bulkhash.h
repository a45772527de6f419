/* quarkfs — XXH3 for bulk data (source tensors, cache entries): through libxxhash's x86
 * dispatcher where the library has one (QFS_XXH_DISPATCH, found by meson), which picks AVX2 or
 * AVX-512 at run time. The plain entry points of Debian's library ran at 5 GB/s on the test VM
 * against 21 GB/s through the dispatcher from memory and 29-96 GB/s in cache
 * (tests/bench/hashbench). The digests are the same either way (test_diskcache.c and the
 * integration tests check them against the plain functions).
 * Short keys (names) keep the plain calls: nothing to gain there but an indirect call. */
#ifndef QUARKFS_CORE_BULKHASH_H
#define QUARKFS_CORE_BULKHASH_H

#include <xxhash.h>
#ifdef QFS_XXH_DISPATCH
#include <xxh_x86dispatch.h>   /* maps XXH3_64bits, XXH3_128bits and their updates to it */
#endif

#endif
