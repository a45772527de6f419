/* Unit tests of core/io.c's mapping guard: a file truncated under a mapping must not kill the
 * process that reads it. A real file is mapped, truncated and read past its new end, with the
 * SIGBUS handler that fs/main.c installs (calling qfs_map_guard_fault). */
#include "unit_util.c"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>

#include "quarkfs/io.h"

static qfs_map_guard guard;

static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    if (qfs_map_guard_fault(&guard, si->si_addr)) return;
    signal(sig, SIG_DFL);
    raise(sig);
}

static int temp_file(size_t bytes, uint8_t fill)
{
    char path[] = "/tmp/quarkfs-test-io-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    uint8_t *buf = malloc(bytes);
    assert_non_null(buf);
    memset(buf, fill, bytes);
    assert_int_equal(write(fd, buf, bytes), (ssize_t)bytes);
    free(buf);
    return fd;
}

/* Pages of the mapping past the new end read as zeros instead of raising SIGBUS, the guard says
 * so, and the pages still inside the file keep their bytes. */
static void test_guard_truncated_file(void **state)
{
    (void)state;
    qfs_map_guard_init(&guard);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGBUS, &sa, &old), 0);

    size_t page = guard.page, len = 8 * page;
    int fd = temp_file(len, 0x5A);
    volatile uint8_t *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(p != MAP_FAILED);
    qfs_map_guard_arm(&guard, (const void *)p, len);
    assert_int_equal(p[len - 1], 0x5A);
    assert_int_equal(atomic_load(&guard.faulted), 0);

    assert_int_equal(ftruncate(fd, (off_t)(3 * page)), 0);
    assert_int_equal(p[3 * page - 1], 0x5A);          /* still inside the file */
    assert_int_equal(atomic_load(&guard.faulted), 0);
    unsigned sum = 0;
    for (size_t off = 3 * page; off < len; off += 512) sum += p[off];   /* past the end */
    assert_int_equal(sum, 0);
    assert_int_equal(atomic_load(&guard.faulted), 1);

    qfs_map_guard_disarm(&guard);
    munmap((void *)p, len);
    close(fd);
    sigaction(SIGBUS, &old, NULL);
}

/* Addresses outside the armed mapping (or with nothing armed) are not the guard's: it leaves
 * them alone and says so, so the handler can let the signal kill the process. */
static void test_guard_ignores_other_addresses(void **state)
{
    (void)state;
    qfs_map_guard g;
    qfs_map_guard_init(&g);
    uint8_t local[64];
    assert_false(qfs_map_guard_fault(&g, local));              /* nothing armed */
    qfs_map_guard_arm(&g, local + 16, 16);
    assert_false(qfs_map_guard_fault(&g, local + 15));
    assert_false(qfs_map_guard_fault(&g, local + 32));
    qfs_map_guard_disarm(&g);
    assert_false(qfs_map_guard_fault(&g, local + 16));        /* disarmed again */
    assert_int_equal(atomic_load(&g.faulted), 0);
    assert_true(g.page >= 4096 && (g.page & (g.page - 1)) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guard_truncated_file),
        cmocka_unit_test(test_guard_ignores_other_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
