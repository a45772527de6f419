/* hashbench — XXH3 through libxxhash's plain entry points against its x86 dispatcher (what
 * core/bulkhash.h uses when meson finds it), side by side: XXH3-128 (source tensors' content
 * hashes, in 4 MiB chunks) and XXH3-64 (cache entries' checksums).
 *
 *   hashbench [reps]
 *
 * Two sizes: 4 MiB (a memo chunk, in the processor's cache after the first pass) and 256 MiB
 * (from memory). Each repetition hashes the buffer both ways; the table gives the medians in
 * GB/s and their ratio, and the digests are compared (they must be equal). Without the
 * dispatcher in the library it says so and exits 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>
#ifdef QFS_XXH_DISPATCH
#define XXH_DISPATCH_DISABLE_REPLACE   /* both by their own names: XXH3_128bits stays plain */
#include <xxh_x86dispatch.h>
#endif

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
#ifndef QFS_XXH_DISPATCH
    (void)argc;
    (void)argv;
    printf("libxxhash has no x86 dispatcher here: nothing to compare\n");
    return 0;
#else
    int reps = argc > 1 ? atoi(argv[1]) : 9;
    if (reps < 1 || reps > 1000) reps = 9;
    const size_t sizes[] = {(size_t)4 << 20, (size_t)256 << 20};
    printf("| hash | bytes | plain GB/s | dispatched GB/s | ratio |\n|---|---:|---:|---:|---:|\n");
    for (int s = 0; s < 2; s++) {
        size_t n = sizes[s];
        uint8_t *buf = malloc(n);
        double *t_plain = malloc(sizeof *t_plain * 2 * (size_t)reps);
        double *t_disp = malloc(sizeof *t_disp * 2 * (size_t)reps);
        if (!buf || !t_plain || !t_disp) return 1;
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(i * 2654435761u >> 13);
        for (int r = 0; r < reps; r++) {
            double t0 = now_seconds();
            XXH128_hash_t a = XXH3_128bits_dispatch(buf, n);
            double t1 = now_seconds();
            XXH128_hash_t b = XXH3_128bits(buf, n);
            double t2 = now_seconds();
            XXH64_hash_t c = XXH3_64bits_dispatch(buf, n);
            double t3 = now_seconds();
            XXH64_hash_t d = XXH3_64bits(buf, n);
            double t4 = now_seconds();
            if (!XXH128_isEqual(a, b) || c != d) {
                fprintf(stderr, "hashbench: the digests differ\n");
                return 1;
            }
            t_disp[r] = t1 - t0;
            t_plain[r] = t2 - t1;
            t_disp[reps + r] = t3 - t2;
            t_plain[reps + r] = t4 - t3;
        }
        for (int h = 0; h < 2; h++) {
            qsort(t_plain + h * reps, (size_t)reps, sizeof *t_plain, cmp_double);
            qsort(t_disp + h * reps, (size_t)reps, sizeof *t_disp, cmp_double);
            double p = (double)n / t_plain[h * reps + reps / 2] / 1e9;
            double d = (double)n / t_disp[h * reps + reps / 2] / 1e9;
            printf("| XXH3-%s | %zu MiB | %.1f | %.1f | %.2fx |\n", h ? "64" : "128", n >> 20,
                   p, d, d / p);
        }
        free(buf);
        free(t_plain);
        free(t_disp);
    }
    return 0;
#endif
}
