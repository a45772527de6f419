/* first_touch — what fresh memory costs on this machine, beside memory already touched.
 *
 *   first_touch [MiB] [rounds] [pause_ms]
 *
 * Each round maps MiB of anonymous memory (4 KiB pages, no transparent huge pages), writes one
 * byte per page (the first touch: a page fault and a zeroed page each), then memsets all of it
 * (the same pages, now present), unmaps it and pauses. A table row per round: both speeds and
 * their ratio. On a bare machine the first touch runs at a fraction of memset's speed (fault
 * and zeroing); on a virtual machine whose host takes back the memory a guest frees (virtio
 * balloon free page reporting), the host must find and clear a page at each first touch too,
 * and that cost is the host's to set. The quarkfs daemon's fresh buffers, and the page cache of
 * what it reads and writes, pay it: BENCHMARKS.md ("Harness notes and limits"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 2048;
    int rounds = argc > 2 ? atoi(argv[2]) : 4;
    long pause_ms = argc > 3 ? atol(argv[3]) : 3000;
    size_t n = mib << 20;
    long page = sysconf(_SC_PAGESIZE);
    printf("%zu MiB per round, %ld ms between rounds\n", mib, pause_ms);
    printf("| round | first touch GB/s | memset of the same pages GB/s | ratio |\n");
    printf("|---:|---:|---:|---:|\n");
    for (int r = 0; r < rounds; r++) {
        volatile char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        madvise((void *)p, n, MADV_NOHUGEPAGE);
        double t0 = now_seconds();
        for (size_t i = 0; i < n; i += (size_t)page) p[i] = 1;
        double touch = now_seconds() - t0;
        t0 = now_seconds();
        memset((void *)p, 2, n);
        double set = now_seconds() - t0;
        munmap((void *)p, n);
        printf("| %d | %.2f | %.1f | %.0fx |\n", r + 1, (double)n / touch / 1e9,
               (double)n / set / 1e9, touch / set);
        fflush(stdout);
        struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}
