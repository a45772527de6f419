/* readers — the benchmark's read patterns (scripts/bench), each timed from the first open to the
 * last byte; prints one JSON line {"bytes": N, "seconds": S}.
 *
 *   readers pread THREADS CHUNK SEED FILE...
 *       every CHUNK-aligned piece of every FILE read once with pread(2), in a shuffled order
 *       (seeded), by THREADS threads taking the next piece from a shared counter: how Run:ai's
 *       streamer (16 x 2 MiB) and fastsafetensors (16 x 16 MiB) read a checkpoint.
 *   readers mmap RANGES FILE...
 *       each FILE mapped whole (MAP_PRIVATE, read-only, as safetensors >= 0.5 maps), then every
 *       range of the RANGES file ("FILE_INDEX BEGIN END" per line, in the order given: the
 *       harness shuffles the tensors) copied out of the mapping into one buffer, by one thread:
 *       the page faults of a safetensors loader that copies tensors in random order. The
 *       8-byte length and the JSON header are read with pread first, as safetensors does.
 *   readers seq BUF FILE...
 *       each FILE read front to back with read(2) of BUF bytes (cat uses 128 KiB).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(const char *what, const char *arg)
{
    fprintf(stderr, "readers: %s %s: %s\n", what, arg, strerror(errno));
    exit(1);
}

static uint64_t rng_state;
static uint64_t rng_next(void)    /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct piece { int file; uint64_t off; size_t len; } piece;

static struct {
    int *fds;
    piece *pieces;
    size_t n_pieces;
    atomic_size_t next;
    size_t chunk;
    atomic_uint_fast64_t bytes;
} P;

static void *pread_worker(void *arg)
{
    (void)arg;
    uint8_t *buf = malloc(P.chunk);
    if (!buf) fail("out of memory", "");
    memset(buf, 0, P.chunk);
    uint64_t got = 0;
    for (;;) {
        size_t i = atomic_fetch_add(&P.next, 1);
        if (i >= P.n_pieces) break;
        const piece *p = &P.pieces[i];
        size_t done = 0;
        while (done < p->len) {
            ssize_t r = pread(P.fds[p->file], buf + done, p->len - done, (off_t)(p->off + done));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) fail("pread failed on file index", "");
            done += (size_t)r;
        }
        got += done;
    }
    atomic_fetch_add(&P.bytes, got);
    free(buf);
    return NULL;
}

static int cmd_pread(int argc, char **argv)
{
    if (argc < 5) return 2;
    int threads = atoi(argv[1]);
    P.chunk = (size_t)strtoull(argv[2], NULL, 10);
    rng_state = strtoull(argv[3], NULL, 10);
    int nf = argc - 4;
    char **files = argv + 4;
    if (threads < 1 || P.chunk == 0) return 2;
    /* The list of pieces comes from sizes alone (stat), before the clock starts. */
    for (int f = 0; f < nf; f++) {
        struct stat st;
        if (stat(files[f], &st) != 0) fail("cannot stat", files[f]);
        for (uint64_t off = 0; off < (uint64_t)st.st_size; off += P.chunk) {
            P.pieces = realloc(P.pieces, (P.n_pieces + 1) * sizeof *P.pieces);
            uint64_t left = (uint64_t)st.st_size - off;
            P.pieces[P.n_pieces++] = (piece){f, off, left < P.chunk ? (size_t)left : P.chunk};
        }
    }
    for (size_t i = P.n_pieces; i > 1; i--) {   /* Fisher-Yates */
        size_t j = (size_t)(rng_next() % i);
        piece t = P.pieces[i - 1];
        P.pieces[i - 1] = P.pieces[j];
        P.pieces[j] = t;
    }
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    P.fds = calloc((size_t)nf, sizeof *P.fds);
    double t0 = now();
    for (int f = 0; f < nf; f++) {
        P.fds[f] = open(files[f], O_RDONLY | O_CLOEXEC);
        if (P.fds[f] < 0) fail("cannot open", files[f]);
    }
    for (int t = 0; t < threads; t++) pthread_create(&tid[t], NULL, pread_worker, NULL);
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    for (int f = 0; f < nf; f++) close(P.fds[f]);
    double dt = now() - t0;
    printf("{\"bytes\": %llu, \"seconds\": %.6f}\n", (unsigned long long)P.bytes, dt);
    free(tid);
    free(P.fds);
    free(P.pieces);
    return 0;
}

typedef struct range { int file; uint64_t begin, end; } range;

static int cmd_mmap(int argc, char **argv)
{
    if (argc < 3) return 2;
    FILE *rf = fopen(argv[1], "r");
    if (!rf) fail("cannot open", argv[1]);
    int nf = argc - 2;
    char **files = argv + 2;
    range *r = NULL;
    size_t n = 0, maxlen = 0;
    int fi;
    unsigned long long b, e;
    while (fscanf(rf, "%d %llu %llu", &fi, &b, &e) == 3) {
        if (fi < 0 || fi >= nf || e < b) {
            fprintf(stderr, "readers: bad range %d %llu %llu\n", fi, b, e);
            return 2;
        }
        r = realloc(r, (n + 1) * sizeof *r);
        r[n++] = (range){fi, b, e};
        if (e - b > maxlen) maxlen = (size_t)(e - b);
    }
    fclose(rf);
    uint8_t *dst = malloc(maxlen ? maxlen : 1);
    if (!dst) fail("out of memory", "");
    memset(dst, 0, maxlen);                      /* the destination is warm: only faults count */
    uint8_t **maps = calloc((size_t)nf, sizeof *maps);
    size_t *sizes = calloc((size_t)nf, sizeof *sizes);
    uint64_t bytes = 0;
    double t0 = now();
    for (int f = 0; f < nf; f++) {
        int fd = open(files[f], O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail("cannot open", files[f]);
        struct stat st;
        if (fstat(fd, &st) != 0) fail("cannot stat", files[f]);
        sizes[f] = (size_t)st.st_size;
        uint64_t hlen = 0;
        if (pread(fd, &hlen, 8, 0) != 8) fail("cannot read the header length of", files[f]);
        char *hdr = malloc(hlen ? hlen : 1);
        if (!hdr || pread(fd, hdr, hlen, 8) != (ssize_t)hlen) fail("cannot read the header", files[f]);
        free(hdr);
        bytes += 8 + hlen;
        maps[f] = mmap(NULL, sizes[f], PROT_READ, MAP_PRIVATE, fd, 0);
        if (maps[f] == MAP_FAILED) fail("cannot mmap", files[f]);
        close(fd);
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(dst, maps[r[i].file] + r[i].begin, r[i].end - r[i].begin);
        bytes += r[i].end - r[i].begin;
    }
    for (int f = 0; f < nf; f++) munmap(maps[f], sizes[f]);
    double dt = now() - t0;
    volatile uint8_t sink = dst[maxlen ? maxlen - 1 : 0];
    (void)sink;
    printf("{\"bytes\": %llu, \"seconds\": %.6f}\n", (unsigned long long)bytes, dt);
    free(dst);
    free(maps);
    free(sizes);
    free(r);
    return 0;
}

static int cmd_seq(int argc, char **argv)
{
    if (argc < 3) return 2;
    size_t bs = (size_t)strtoull(argv[1], NULL, 10);
    uint8_t *buf = malloc(bs);
    if (!buf || !bs) return 2;
    memset(buf, 0, bs);
    uint64_t bytes = 0;
    double t0 = now();
    for (int f = 2; f < argc; f++) {
        int fd = open(argv[f], O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail("cannot open", argv[f]);
        for (;;) {
            ssize_t got = read(fd, buf, bs);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) fail("cannot read", argv[f]);
            if (got == 0) break;
            bytes += (uint64_t)got;
        }
        close(fd);
    }
    double dt = now() - t0;
    printf("{\"bytes\": %llu, \"seconds\": %.6f}\n", (unsigned long long)bytes, dt);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 2;
    if (argc >= 2 && !strcmp(argv[1], "pread")) rc = cmd_pread(argc - 1, argv + 1);
    else if (argc >= 2 && !strcmp(argv[1], "mmap")) rc = cmd_mmap(argc - 1, argv + 1);
    else if (argc >= 2 && !strcmp(argv[1], "seq")) rc = cmd_seq(argc - 1, argv + 1);
    if (rc == 2)
        fprintf(stderr, "usage: readers pread THREADS CHUNK SEED FILE... | mmap RANGES FILE... | "
                "seq BUF FILE...\n");
    return rc;
}
