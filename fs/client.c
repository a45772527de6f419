#include "client.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>

#include "ops.h"
#include "progress.h"
#include "quarkfs/error.h"

int qfs_client_read(const char *mnt, const char *attr, json_t **out)
{
    char buf[65536];
    ssize_t n = getxattr(mnt, attr, buf, sizeof buf - 1);
    if (n < 0) {
        int e = errno;
        char safe[PATH_MAX * 4];
        qfs_escape_ctl(mnt, safe, sizeof safe);
        if (e == ENOTCONN)
            fprintf(stderr, "quarkfs: %s: the daemon of this mount is gone (killed or crashed): "
                    "fusermount3 -uz %s removes it, then mount again\n", safe, safe);
        else if (e == EPERM)
            fprintf(stderr, "quarkfs: %s: %s: only the mount's owner or root may do this\n", safe,
                    strerror(e));
        else
            fprintf(stderr, "quarkfs: %s: %s (is it a quarkfs mountpoint?)\n", safe,
                    e == ENODATA || e == ENOTSUP ? "no quarkfs counters" : strerror(e));
        return 1;
    }
    buf[n] = '\0';
    json_error_t jerr;
    *out = json_loads(buf, 0, &jerr);
    if (!*out) {
        fprintf(stderr, "quarkfs: %s: unreadable counters: %s\n", mnt, jerr.text);
        return 1;
    }
    return 0;
}

json_int_t qfs_json_int(const json_t *o, const char *k1, const char *k2)
{
    const json_t *v = json_object_get(o, k1);
    if (k2) v = json_object_get(v, k2);
    return json_integer_value(v);
}

void qfs_client_print_status(const char *mnt, const json_t *st)
{
    const char *dir = json_string_value(json_object_get(st, "cache_dir"));
    const char *source = json_string_value(json_object_get(st, "source"));
    char used[32], mem[32], budget[32];
    char safe_mnt[PATH_MAX * 4], safe_src[PATH_MAX * 4];
    qfs_format_bytes((uint64_t)qfs_json_int(st, "cache_dir_bytes", NULL), used, sizeof used);
    qfs_format_bytes((uint64_t)qfs_json_int(st, "memory_bytes", NULL), mem, sizeof mem);
    qfs_format_bytes((uint64_t)qfs_json_int(st, "cache_mem", NULL), budget, sizeof budget);
    double up = json_real_value(json_object_get(st, "uptime_seconds"));
    printf("%s: %s (spec %s, format %s), quarkfs %s, up %.0f s\n",
           qfs_escape_ctl(mnt, safe_mnt, sizeof safe_mnt),
           source ? qfs_escape_ctl(source, safe_src, sizeof safe_src)
                  : "(source shown to the mount's owner only)",
           json_string_value(json_object_get(st, "spec")),
           json_string_value(json_object_get(st, "format")),
           json_string_value(json_object_get(st, "version")), up);
    printf("  %-20s %s of %s (cache_mem)\n", "memory", mem, budget);
    if (dir)
        printf("  %-20s %s, %s used%s\n", "disk cache", dir, used,
               json_is_true(json_object_get(st, "disk_cache")) ? "" : " (read-only now)");
    else
        printf("  %-20s off\n", "disk cache");
    const char *keys[] = {"tensors_quantized", "memory_hits", "disk_hits", "disk_writes",
                          "scales_computed", "evictions", "bytes_quantized", "bytes_served",
                          "weights_in_bands", "early_reads", "memo_hits",
                          "memo_rehashes", "source_reads"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        printf("  %-20s %lld\n", keys[i], (long long)qfs_json_int(st, keys[i], NULL));
    printf("  %-20s %.3f\n", "seconds_quantizing",
           json_real_value(json_object_get(st, "seconds_quantizing")));
    if (dir)
        printf("  %-20s %lld queued (%lld bytes), %lld written, %lld dropped\n",
               "disk writes", (long long)qfs_json_int(st, "cache_queue", "queued"),
               (long long)qfs_json_int(st, "cache_queue", "bytes"),
               (long long)qfs_json_int(st, "cache_queue", "written"),
               (long long)qfs_json_int(st, "cache_queue", "dropped"));
    printf("  %-20s %lld/%lld tensors\n", "warm",
           (long long)qfs_json_int(st, "warm", "tensors_done"),
           (long long)qfs_json_int(st, "warm", "tensors"));
    printf("  %-20s %lld present, %lld being written; opens: %lld passthrough, %lld "
           "channel (%s)\n", "view files", (long long)qfs_json_int(st, "view_files", "present"),
           (long long)qfs_json_int(st, "view_files", "queued"),
           (long long)qfs_json_int(st, "view_files", "opens_passthrough"),
           (long long)qfs_json_int(st, "view_files", "opens_channel"),
           json_string_value(json_object_get(json_object_get(st, "view_files"),
                                             "served_by")));
    json_t *views = json_object_get(st, "views");
    for (size_t i = 0; json_array_size(views) > 1 && i < json_array_size(views); i++) {
        const json_t *v = json_array_get(views, i);
        printf("  view %-15s spec %s, format %s: %lld files, %lld broken, %lld bytes "
               "served\n", json_string_value(json_object_get(v, "name")),
               json_string_value(json_object_get(v, "spec")),
               json_string_value(json_object_get(v, "format")),
               (long long)qfs_json_int(v, "quantized_files", NULL),
               (long long)qfs_json_int(v, "broken_files", NULL),
               (long long)qfs_json_int(v, "bytes_served", NULL));
    }
    json_t *broken = json_object_get(st, "broken_files");
    printf("  %-20s %zu\n", "broken_files", json_array_size(broken));
    for (size_t i = 0; i < json_array_size(broken); i++)
        printf("    %s: %s\n",
               json_string_value(json_object_get(json_array_get(broken, i), "file")),
               json_string_value(json_object_get(json_array_get(broken, i), "error")));
}

int qfs_client_warm(const char *mnt, bool no_wait)
{
    int rc = 1;
    json_t *st;
    if (qfs_client_read(mnt, QFS_XATTR_WARM, &st)) return 1;
    qfs_progress p;
    qfs_progress_start(&p, "warm", (uint64_t)qfs_json_int(st, "warm", "bytes"),
                       (uint64_t)qfs_json_int(st, "warm", "tensors"), "tensors");
    p.last = -1e9;   /* the first line at once */
    for (;;) {
        json_int_t n = qfs_json_int(st, "warm", "tensors");
        json_int_t done = qfs_json_int(st, "warm", "tensors_done");
        json_int_t bdone = qfs_json_int(st, "warm", "bytes_done");
        json_int_t writing = qfs_json_int(st, "view_files", "queued");
        /* another warm may add to the round */
        p.total = (uint64_t)qfs_json_int(st, "warm", "bytes");
        p.items_total = (uint64_t)n;
        json_decref(st);
        /* Done when the complete view files are written too: the next load reads them. */
        if (done >= n && writing == 0) {
            char b[32];
            qfs_format_bytes((uint64_t)bdone, b, sizeof b);
            qfs_progress_finish(&p, (uint64_t)bdone, "%lld/%lld tensors, %s of source, done",
                                (long long)done, (long long)n, b);
            rc = 0;
            break;
        }
        qfs_progress_update(&p, (uint64_t)bdone, (uint64_t)done,
                            done >= n ? "writing view files" : NULL);
        if (no_wait) {
            qfs_progress_abort(&p);
            rc = 0;
            break;
        }
        struct timespec ts = {0, 250000000};
        nanosleep(&ts, NULL);
        if (qfs_client_read(mnt, QFS_XATTR_STATUS, &st)) break;
    }
    return rc;
}
