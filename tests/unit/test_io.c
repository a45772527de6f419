/* Unit tests of core/io.c's mapping guard: a file truncated under a mapping must not kill the
 * process that reads it. A real file is mapped, truncated and read past its new end, with the
 * SIGBUS handler that fs/main.c installs (calling qfs_map_guard_fault). */
#include "unit_util.c"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

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

/* qfs_open_regular: a FIFO (nobody writing) is refused at once, never waited on; a symlink is
 * refused where the policy says O_NOFOLLOW and followed otherwise; a file other than the one
 * expected (device/inode) is refused; the expected one is opened for reading. alarm() turns
 * a blocking open into a failure instead of a hung test. */
static void test_open_regular(void **state)
{
    (void)state;
    char dir[] = "/tmp/quarkfs-test-open-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[256], other[256], fifo[256], link[256];
    snprintf(file, sizeof file, "%s/file", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(link, sizeof link, "%s/link", dir);
    int w = open(file, O_WRONLY | O_CREAT, 0600);
    assert_true(w >= 0);
    assert_int_equal(write(w, "abc", 3), 3);
    close(w);
    close(open(other, O_WRONLY | O_CREAT, 0600));
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(symlink("file", link), 0);
    struct stat sb, fsb;
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(stat(fifo, &fsb), 0);

    alarm(10);
    qfs_error err = {{0}};
    int fd = -2;
    assert_int_equal(qfs_open_regular(fifo, true, 0, 0, &fd, &err), -EIO);
    assert_int_equal(fd, -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    /* even when the FIFO is the very inode the caller expects */
    assert_int_equal(qfs_open_regular(fifo, true, fsb.st_dev, fsb.st_ino, &fd, &err), -EIO);
    assert_int_equal(qfs_open_regular(link, true, sb.st_dev, sb.st_ino, &fd, &err), -EIO);
    assert_int_equal(qfs_open_regular(other, true, sb.st_dev, sb.st_ino, &fd, &err), -EIO);
    assert_non_null(strstr(err.msg, "replaced"));
    assert_int_equal(qfs_open_regular(dir, true, 0, 0, &fd, &err), -EIO);
    assert_int_equal(qfs_open_regular("/dev/null", true, 0, 0, &fd, &err), -EIO);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/missing", dir);
    assert_int_equal(qfs_open_regular(missing, true, 0, 0, &fd, &err), -ENOENT);
    alarm(0);

    char buf[4] = {0};
    assert_int_equal(qfs_open_regular(link, false, sb.st_dev, sb.st_ino, &fd, &err), 0);
    assert_int_equal(read(fd, buf, 3), 3);
    assert_int_equal(fcntl(fd, F_GETFL) & (O_ACCMODE | O_NONBLOCK), O_RDONLY);
    close(fd);
    assert_int_equal(qfs_open_regular(file, true, sb.st_dev, sb.st_ino, &fd, &err), 0);
    close(fd);
    assert_string_equal(buf, "abc");
    unlink(file);
    unlink(other);
    unlink(fifo);
    unlink(link);
    rmdir(dir);
}

/* qfs_escape_ctl: control bytes, DEL, C1 controls in UTF-8 and invalid bytes escaped; valid
 * UTF-8 kept; never writes past out_len nor cuts an escape in half. */
static void test_escape_ctl(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal(qfs_escape_ctl("a\nb\rc", out, sizeof out), "a\\x0ab\\x0dc");
    assert_string_equal(qfs_escape_ctl("\x1b[31mred\x7f", out, sizeof out), "\\x1b[31mred\\x7f");
    assert_string_equal(qfs_escape_ctl("\xc3\xa9t\xc3\xa9 \xe2\x98\x83", out, sizeof out),
                        "\xc3\xa9t\xc3\xa9 \xe2\x98\x83");
    assert_string_equal(qfs_escape_ctl("x\xc2\x9by\xc2\xa0", out, sizeof out), "x\\u009by\xc2\xa0");
    assert_string_equal(qfs_escape_ctl("\xff\xc3(\xed\xa0\x80", out, sizeof out),
                        "\\xff\\xc3(\\xed\\xa0\\x80");
    assert_string_equal(qfs_escape_ctl("abcdef", out, 4), "abc");
    assert_string_equal(qfs_escape_ctl("ab\n", out, 5), "ab");
    assert_string_equal(qfs_escape_ctl("", out, 1), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guard_truncated_file),
        cmocka_unit_test(test_guard_ignores_other_addresses),
        cmocka_unit_test(test_open_regular),
        cmocka_unit_test(test_escape_ctl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
