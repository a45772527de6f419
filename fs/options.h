/* quarkfs — the command line: one table of options, each with its `--long` spelling (parsed by
 * getopt_long) and, where it is a mount option, its `-o` spelling (parsed by fuse_opt), taken in
 * command-line order so that the last one given wins, as with mount(8). */
#ifndef QUARKFS_FS_OPTIONS_H
#define QUARKFS_FS_OPTIONS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "quarkfs/spec.h"

#define EXIT_USAGE 2

/* The commands; an option lists those that take it. */
enum {
    QFS_CMD_MOUNT = 1,
    QFS_CMD_EXPORT = 2,
    QFS_CMD_INSPECT = 4,
    QFS_CMD_WARM = 8,
    QFS_CMD_STATUS = 16,
};

typedef struct qfs_cli {
    unsigned cmd;
    const char *spec, *format;         /* NULL: int8, quark */
    const char *specs;                 /* --specs S[:F],... (mount): several views, or NULL */
    const char **excludes, **includes;
    size_t n_excludes, n_includes;
    const char **layers;               /* --layer GLOB=SPEC, in order */
    size_t n_layers;
    const char *preset;                /* --preset NAME, NULL: none */
    qfs_layer_rule *layer_rules;       /* --layer then the preset's rules, parsed and checked */
    size_t n_layer_rules;
    int threads;                       /* 0: all cores */
    size_t cache_mem;
    const char *cache_dir;             /* NULL: the default directory */
    uint64_t cache_size;               /* 0: the default */
    bool no_disk_cache;
    bool no_view_files, no_passthrough;   /* -o view_files=off, -o passthrough=off */
    bool view_files_on;                   /* -o view_files=on, said (not the default) */
    bool check_finite, follow_symlinks, allow_empty;
    int log_level;                     /* -o log= / --log (syslog priority), -1: not given */
    const char *log_file;
    bool json, error, no_wait;
    unsigned readahead_kb, max_background;
    bool has_fsname, has_ro;           /* -o fsname= / -o ro given */
    char ignored[512];                 /* accepted-and-ignored mount options (for a debug line) */
    /* positional arguments, in order */
    char **pos;
    size_t n_pos;
    /* mount: what goes on to libfuse (argv[0], -f/-d/-s, unknown -o options, MNT) */
    struct fuse_args fuse;
    bool help_done;                    /* --help, --version or --list-specs was answered */
    char **owned;                      /* strings copied out of -o lists */
    size_t n_owned;
} qfs_cli;

/* Parses argv (argv[0] is the command's name: "quarkfs", "export", ...) for command cmd into c,
 * whose defaults the caller set. 0; or EXIT_USAGE after a message on stderr naming the option
 * and the problem (unknown, with the nearest known name; a bad value; an option of another
 * command); or 0 with c->help_done for --help, --version, --list-specs. Numbers are parsed
 * strictly (the whole text, within range). */
int qfs_cli_parse(unsigned cmd, int argc, char **argv, qfs_cli *c);

/* Frees what parsing allocated. */
void qfs_cli_free(qfs_cli *c);

/* The closest of the commands (export, inspect, warm, status) to word within an edit distance
 * of 2, or NULL. */
const char *qfs_cli_near_command(const char *word);

/* Edit distance (Levenshtein) of two short strings, capped at 9. */
int qfs_edit_distance(const char *a, const char *b);

/* "512M", "1G", "1GiB", "4096": bytes. 0, or -EINVAL for anything else (signs, spaces,
 * trailing text, overflow). */
int qfs_parse_size(const char *s, uint64_t *out);

/* A decimal integer in [lo, hi], the whole text. 0 or -EINVAL. */
int qfs_parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out);

/* Prints --help. */
void qfs_cli_usage(FILE *out);
/* Prints --version. */
void qfs_cli_version(void);

#endif
