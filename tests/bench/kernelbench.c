/* kernelbench — throughput of the quantization kernels (libquarkfs's qfs_quantize_layout, what
 * the engine runs) against a memcpy of the same bytes, measured side by side (scripts/bench).
 *
 *   kernelbench [--rows R] [--cols C] [--reps N] [--threads T] [--specs a,b/FORMAT,...]
 *   kernelbench --spin SECONDS [--threads T] [--specs a] ...
 *
 * One bf16 [R, C] matrix (default 8192 x 8192 = 128 MiB, far larger than the caches) of
 * normal(0, 0.02)-like values. Each repetition times, back to back: memcpy of the R*C*2 source
 * bytes on 1 thread and on T threads (OpenMP, default: all cores), then the quantization of
 * every spec with threads = 1 and threads = T. Specs default to every spec of --list-specs, each
 * in format quark where it can be written, else its first format; SPEC/FORMAT picks one. Every
 * buffer is written once before the clock starts (no first-touch page faults in the numbers).
 * Prints one JSON object per line:
 *   {"what": "memcpy"|SPEC, "format": F, "threads": N, "bytes": SOURCE_BYTES,
 *    "seconds": [per repetition]}
 * Throughput is always source bytes per second (what a reader of the source sees).
 * --spin runs only qfs_quantize of each spec with T threads, over and over for SECONDS each
 * (for `perf record`: the profile is then the kernels, not the set-up).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quarkfs/layout.h"
#include "quarkfs/quant.h"
#include "quarkfs/spec.h"

static const char *const format_names[] = {"quark", "fp8", "compressed-tensors", "awq"};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *alloc_touched(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, n ? n : 1)) {
        fprintf(stderr, "kernelbench: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    memset(p, 1, n);
    return p;
}

/* bf16 bits of roughly normal(0, 0.02) values (sum of 4 uniforms), deterministic. */
static void fill(uint16_t *x, size_t n)
{
    uint64_t s = 0x243F6A8885A308D3ull;
    for (size_t i = 0; i < n; i++) {
        float acc = 0.0f;
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            acc += (float)(s >> 40) * (1.0f / 16777216.0f) - 0.5f;
        }
        float v = acc * 0.0346f;   /* var of the sum of 4 U(-.5,.5) is 1/3 */
        x[i] = qfs_f32_to_bf16(v);
    }
}

static int quantize(const qfs_spec *s, qfs_format f, const void *src, size_t rows, size_t cols,
                    const qfs_layout *l, uint8_t *weight, uint8_t *scales, int threads,
                    qfs_error *err)
{
    return qfs_quantize_layout(s, f, QFS_DT_BF16, src, rows, cols, l, weight, scales, threads,
                               "bench", err);
}

static void memcpy_threads(uint8_t *dst, const uint8_t *src, size_t n, int threads)
{
    if (threads <= 1) {
        memcpy(dst, src, n);
        return;
    }
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t per = (n / (size_t)nt + 4095) & ~(size_t)4095;
        size_t lo = (size_t)t * per < n ? (size_t)t * per : n;
        size_t hi = lo + per < n ? lo + per : n;
        memcpy(dst + lo, src + lo, hi - lo);
    }
}

static void print_row(const char *what, const char *fmt, int threads, size_t bytes,
                      const double *sec, int reps)
{
    printf("{\"what\": \"%s\", \"format\": \"%s\", \"threads\": %d, \"bytes\": %zu, "
           "\"seconds\": [", what, fmt, threads, bytes);
    for (int r = 0; r < reps; r++) printf("%s%.6f", r ? ", " : "", sec[r]);
    printf("]}\n");
}

int main(int argc, char **argv)
{
    size_t rows = 8192, cols = 8192;
    int reps = 7, tall = omp_get_num_procs();
    double spin = 0.0;
    const char *spec_list = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rows")) rows = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--cols")) cols = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) tall = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--specs")) spec_list = argv[i + 1];
        else if (!strcmp(argv[i], "--spin")) spin = atof(argv[i + 1]);
        else {
            fprintf(stderr, "usage: kernelbench [--rows R] [--cols C] [--reps N] [--threads T] "
                    "[--specs a,b]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 1000 || tall < 1 || !rows || !cols) return 2;

#define MAX_SPECS 64
    const qfs_spec *specs[MAX_SPECS];
    qfs_format fmts[MAX_SPECS];
    qfs_layout lays[MAX_SPECS];
    int n_specs = 0;
    char *list = NULL;
    if (spec_list) {
        list = strdup(spec_list);
    } else {   /* every spec */
        size_t na;
        const qfs_spec *all = qfs_spec_all(&na);
        size_t len = 1;
        for (size_t i = 0; i < na; i++) len += strlen(all[i].name) + 1;
        list = calloc(1, len);
        for (size_t i = 0; i < na; i++) {
            if (i) strcat(list, ",");
            strcat(list, all[i].name);
        }
    }
    size_t scales_max = 1;
    for (char *tok = strtok(list, ","); tok && n_specs < MAX_SPECS; tok = strtok(NULL, ",")) {
        qfs_error err = {{0}};
        char *slash = strchr(tok, '/');
        if (slash) *slash = '\0';
        if (qfs_spec_lookup(tok, &specs[n_specs], &err)) {
            fprintf(stderr, "kernelbench: %s\n", err.msg);
            return 2;
        }
        int found = 0;
        for (size_t k = 0; k < sizeof format_names / sizeof format_names[0] && !found; k++) {
            if (slash && strcmp(slash + 1, format_names[k]) != 0) continue;
            qfs_format f;
            if (qfs_format_lookup(format_names[k], &f, &err) == 0 &&
                qfs_spec_format_ok(specs[n_specs], f)) {
                fmts[n_specs] = f;
                found = 1;
            }
        }
        if (!found) {
            fprintf(stderr, "kernelbench: no known format for spec %s%s%s\n", tok,
                    slash ? "/" : "", slash ? slash + 1 : "");
            return 2;
        }
        qfs_error lerr = {{0}};
        const char *why = lerr.msg;
        if (qfs_layout_for(specs[n_specs], fmts[n_specs], QFS_DT_BF16, rows, cols,
                           &lays[n_specs], &lerr)) {
            fprintf(stderr, "kernelbench: %s cannot take [%zu, %zu]: %s\n", tok, rows, cols, why);
            return 2;
        }
        if (lays[n_specs].scales_bytes > scales_max) scales_max = lays[n_specs].scales_bytes;
        n_specs++;
    }

    size_t n = rows * cols, bytes = n * 2;
    uint16_t *src = alloc_touched(bytes);
    fill(src, n);
    uint8_t *dst = alloc_touched(bytes);
    uint8_t *weight = alloc_touched(n);
    uint8_t *scales = alloc_touched(scales_max);

    if (spin > 0) {
        for (int s = 0; s < n_specs; s++) {
            double t0 = now();
            long runs = 0;
            while (now() - t0 < spin) {
                qfs_error err = {{0}};
                quantize(specs[s], fmts[s], src, rows, cols, &lays[s], weight, scales, tall, &err);
                runs++;
            }
            double dt = now() - t0;
            double per = dt / (double)runs;
            print_row(specs[s]->name, qfs_format_name(fmts[s]), tall, bytes, &per, 1);
        }
        free(src); free(dst); free(weight); free(scales); free(list);
        return 0;
    }

    int nthr[2] = {1, tall};
    int n_thr = tall > 1 ? 2 : 1;
    /* [what][thread setting][rep]: what 0 = memcpy, 1 + s = spec s */
    double *sec = calloc((size_t)(1 + n_specs) * 2 * (size_t)reps, sizeof *sec);
#define SEC(w, t, r) sec[(((size_t)(w) * 2) + (size_t)(t)) * (size_t)reps + (size_t)(r)]

    /* Warm-up: OpenMP team start, page tables, CPU clocks. */
    memcpy_threads(dst, (const uint8_t *)src, bytes, tall);
    for (int s = 0; s < n_specs; s++) {
        qfs_error err = {{0}};
        if (quantize(specs[s], fmts[s], src, rows, cols, &lays[s], weight, scales, tall, &err)) {
            fprintf(stderr, "kernelbench: %s\n", err.msg);
            return 1;
        }
    }
    for (int r = 0; r < reps; r++) {
        for (int t = 0; t < n_thr; t++) {
            double t0 = now();
            memcpy_threads(dst, (const uint8_t *)src, bytes, nthr[t]);
            SEC(0, t, r) = now() - t0;
        }
        for (int s = 0; s < n_specs; s++) {
            for (int t = 0; t < n_thr; t++) {
                qfs_error err = {{0}};
                double t0 = now();
                int rc = quantize(specs[s], fmts[s], src, rows, cols, &lays[s], weight, scales,
                                  nthr[t], &err);
                SEC(1 + s, t, r) = now() - t0;
                if (rc) {
                    fprintf(stderr, "kernelbench: %s\n", err.msg);
                    return 1;
                }
            }
        }
    }
    for (int t = 0; t < n_thr; t++) print_row("memcpy", "", nthr[t], bytes, &SEC(0, t, 0), reps);
    for (int s = 0; s < n_specs; s++)
        for (int t = 0; t < n_thr; t++)
            print_row(specs[s]->name, qfs_format_name(fmts[s]), nthr[t], bytes, &SEC(1 + s, t, 0),
                      reps);
    volatile uint8_t sink = weight[n - 1] ^ dst[bytes - 1];
    (void)sink;
    free(src); free(dst); free(weight); free(scales); free(sec); free(list);
    return 0;
}
