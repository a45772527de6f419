/* slowfs — a test filesystem: a writable mirror of a directory whose writes take longer than
 * they should. The tests put a disk cache on it to make quarkfs's background writer fall
 * behind on purpose (a slow or busy disk), which no ordinary filesystem does on demand.
 *
 *   slowfs [-f] [-o write_delay_ms=N] [-o fail_match=S,fail_flag=PATH] DIR MNT
 *
 * Every operation is done on DIR (paths relative to an fd of DIR opened at start); each write
 * request first sleeps N milliseconds (default 200). Reads, metadata and directory operations
 * are not delayed. With fail_match and fail_flag, a write request to a file whose path contains
 * S fails with EIO while the file PATH exists (outside the mirror: the test creates and removes
 * it to start and end a failure of those files only). Unmount with `fusermount3 -u MNT`.
 * Written in the idiom of libfuse's example/passthrough.c, with only what a quarkfs cache
 * directory uses. */
#define FUSE_USE_VERSION 312
#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

typedef struct slowfs_options {
    unsigned write_delay_ms;
    char *fail_match, *fail_flag;   /* both or neither */
} slowfs_options;

typedef struct slowfs {
    int root;                 /* DIR */
    slowfs_options opts;
} slowfs;

static const struct fuse_opt slowfs_opts[] = {
    {"write_delay_ms=%u", offsetof(slowfs_options, write_delay_ms), 0},
    {"fail_match=%s", offsetof(slowfs_options, fail_match), 0},
    {"fail_flag=%s", offsetof(slowfs_options, fail_flag), 0},
    FUSE_OPT_END,
};

static slowfs *fs_of_context(void)
{
    return fuse_get_context()->private_data;
}

/* FUSE paths start with '/': the same name relative to DIR's fd ("." for the root). */
static const char *rel(const char *path)
{
    return path[1] ? path + 1 : ".";
}

static int sfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    int rc = fi ? fstat((int)fi->fh, st)
                : fstatat(fs_of_context()->root, rel(path), st, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

static int sfs_readlink(const char *path, char *buf, size_t size)
{
    ssize_t n = readlinkat(fs_of_context()->root, rel(path), buf, size - 1);
    if (n < 0) return -errno;
    buf[n] = '\0';
    return 0;
}

static int sfs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)off; (void)fi; (void)flags;
    int fd = openat(fs_of_context()->root, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st = {.st_ino = de->d_ino, .st_mode = (mode_t)DTTOIF(de->d_type)};
        if (fill(buf, de->d_name, &st, 0, 0)) break;
    }
    closedir(d);
    return 0;
}

static int sfs_mkdir(const char *path, mode_t mode)
{
    return mkdirat(fs_of_context()->root, rel(path), mode) == 0 ? 0 : -errno;
}

static int sfs_unlink(const char *path)
{
    return unlinkat(fs_of_context()->root, rel(path), 0) == 0 ? 0 : -errno;
}

static int sfs_rmdir(const char *path)
{
    return unlinkat(fs_of_context()->root, rel(path), AT_REMOVEDIR) == 0 ? 0 : -errno;
}

static int sfs_symlink(const char *target, const char *path)
{
    return symlinkat(target, fs_of_context()->root, rel(path)) == 0 ? 0 : -errno;
}

static int sfs_rename(const char *from, const char *to, unsigned int flags)
{
    int root = fs_of_context()->root;
    return renameat2(root, rel(from), root, rel(to), flags) == 0 ? 0 : -errno;
}

static int sfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int rc = fi ? fchmod((int)fi->fh, mode) : fchmodat(fs_of_context()->root, rel(path), mode, 0);
    return rc == 0 ? 0 : -errno;
}

static int sfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    int rc = fi ? fchown((int)fi->fh, uid, gid)
                : fchownat(fs_of_context()->root, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

static int sfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (fi) return ftruncate((int)fi->fh, size) == 0 ? 0 : -errno;
    int fd = openat(fs_of_context()->root, rel(path), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = ftruncate(fd, size) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static int sfs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    int rc = fi ? futimens((int)fi->fh, tv)
                : utimensat(fs_of_context()->root, rel(path), tv, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

/* O_DIRECT is the kernel's business (it sends the writes here either way); the daemon's own
 * fd stays buffered. */
static int open_flags(int flags)
{
    return (flags & ~O_DIRECT) | O_CLOEXEC | O_NOFOLLOW;
}

static int sfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int fd = openat(fs_of_context()->root, rel(path), open_flags(fi->flags) | O_CREAT, mode);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int sfs_open(const char *path, struct fuse_file_info *fi)
{
    int fd = openat(fs_of_context()->root, rel(path), open_flags(fi->flags));
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int sfs_read(const char *path, char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)path;
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int sfs_write(const char *path, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    const slowfs_options *o = &fs_of_context()->opts;
    if (o->fail_match && o->fail_flag && path && strstr(path, o->fail_match) &&
        access(o->fail_flag, F_OK) == 0)
        return -EIO;
    unsigned ms = o->write_delay_ms;
    struct timespec delay = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&delay, &delay) != 0 && errno == EINTR) {}
    ssize_t n = pwrite((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int sfs_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    return fstatvfs(fs_of_context()->root, st) == 0 ? 0 : -errno;
}

static int sfs_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    close((int)fi->fh);
    return 0;
}

static int sfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    int rc = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);
    return rc == 0 ? 0 : -errno;
}

static int sfs_flock(const char *path, struct fuse_file_info *fi, int op)
{
    (void)path;
    return flock((int)fi->fh, op) == 0 ? 0 : -errno;
}

static void *sfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->use_ino = 1;          /* DIR's inode numbers: quarkfs compares them */
    cfg->entry_timeout = cfg->attr_timeout = cfg->negative_timeout = 0;
    return fs_of_context();
}

static const struct fuse_operations slowfs_ops = {
    .init = sfs_init,
    .getattr = sfs_getattr,
    .readlink = sfs_readlink,
    .readdir = sfs_readdir,
    .mkdir = sfs_mkdir,
    .unlink = sfs_unlink,
    .rmdir = sfs_rmdir,
    .symlink = sfs_symlink,
    .rename = sfs_rename,
    .chmod = sfs_chmod,
    .chown = sfs_chown,
    .truncate = sfs_truncate,
    .utimens = sfs_utimens,
    .create = sfs_create,
    .open = sfs_open,
    .read = sfs_read,
    .write = sfs_write,
    .statfs = sfs_statfs,
    .release = sfs_release,
    .fsync = sfs_fsync,
    .flock = sfs_flock,
};

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    slowfs fs = {.root = -1, .opts = {.write_delay_ms = 200}};
    if (fuse_opt_parse(&args, &fs.opts, slowfs_opts, NULL) != 0) return 1;
    /* The first non-option argument is DIR; fuse_main takes the rest (MNT, -f, -o ...). */
    int dir_at = 0;
    for (int i = 1; i < args.argc && !dir_at; i++)
        if (args.argv[i][0] != '-' && strcmp(args.argv[i - 1], "-o") != 0) dir_at = i;
    if (!dir_at) {
        fprintf(stderr, "usage: slowfs [-f] [-o write_delay_ms=N] "
                "[-o fail_match=S,fail_flag=PATH] DIR MNT\n");
        return 1;
    }
    fs.root = open(args.argv[dir_at], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fs.root < 0) {
        fprintf(stderr, "slowfs: %s: %s\n", args.argv[dir_at], strerror(errno));
        return 1;
    }
    for (int i = dir_at; i + 1 < args.argc; i++) args.argv[i] = args.argv[i + 1];
    args.argc--;
    int rc = fuse_main(args.argc, args.argv, &slowfs_ops, &fs);
    fuse_opt_free_args(&args);
    close(fs.root);
    free(fs.opts.fail_match);
    free(fs.opts.fail_flag);
    return rc;
}
