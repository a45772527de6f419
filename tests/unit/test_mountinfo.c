/* Unit tests of fs/mountinfo.c: mountinfo's octal escapes, and which mount is topmost on a path,
 * on hand-written mountinfo lines (the format of proc(5)), read through fmemopen. */
#include "unit_util.c"

#include "mountinfo.h"

static void test_unescape(void **state)
{
    (void)state;
    char a[] = "/mnt/with\\040space\\011tab\\012nl\\134backslash";
    qfs_mountinfo_unescape(a);
    assert_string_equal(a, "/mnt/with space\ttab\nnl\\backslash");
    /* Not an escape: kept as written (a digit out of range, too short, at the end). */
    char b[] = "/x\\400/y\\04/z\\";
    qfs_mountinfo_unescape(b);
    assert_string_equal(b, "/x\\400/y\\04/z\\");
    char c[] = "";
    qfs_mountinfo_unescape(c);
    assert_string_equal(c, "");
}

static const char table[] =
    "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "40 22 0:35 / /mnt/a\\040b rw,nosuid - fuse.quarkfs /src rw,user_id=0\n"
    "41 22 0:36 / /mnt/stacked rw - tmpfs tmpfs rw\n"
    "42 41 0:37 / /mnt/stacked rw,nosuid shared:7 master:2 - fuse.glusterfs n1:/v rw\n"
    "43 22 0:38 / /mnt/broken rw no-separator fuse x\n";

static bool topmost(const char *mp, char *majmin, char *type)
{
    FILE *f = fmemopen((void *)table, sizeof table - 1, "r");
    assert_non_null(f);
    bool found = qfs_mountinfo_topmost(f, mp, majmin, 64, type, 64);
    fclose(f);
    return found;
}

static void test_topmost(void **state)
{
    (void)state;
    char mm[64], ty[64];
    assert_true(topmost("/mnt/a b", mm, ty));   /* the escaped space */
    assert_string_equal(mm, "0:35");
    assert_string_equal(ty, "fuse.quarkfs");
    assert_true(topmost("/mnt/stacked", mm, ty));   /* the later line is on top */
    assert_string_equal(mm, "0:37");
    assert_string_equal(ty, "fuse.glusterfs");      /* optional fields before " - " skipped */
    assert_true(topmost("/", mm, ty));
    assert_string_equal(ty, "ext4");
    assert_false(topmost("/mnt/a\\040b", mm, ty));  /* compared unescaped */
    assert_false(topmost("/mnt/broken", mm, ty));   /* a line without " - " is skipped */
    assert_false(topmost("/mnt", mm, ty));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unescape),
        cmocka_unit_test(test_topmost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
