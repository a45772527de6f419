/* quarkfs — one progress printer for export, warm and inspect --error: done/total, rate and
 * time left on stderr; redrawn in place on a terminal, else one line every 10 s (CI logs,
 * init containers); a one-line summary at the end. */
#ifndef QUARKFS_FS_PROGRESS_H
#define QUARKFS_FS_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qfs_progress {
    const char *what;        /* "export", "warm", "inspect": the line's first word */
    bool tty;                /* stderr is a terminal */
    bool quiet;              /* log level below info: print nothing */
    bool drawn;              /* a terminal line is showing (to be ended by a newline) */
    double t0, last, interval;
    uint64_t total;          /* bytes (of source) to do */
    uint64_t items_total;    /* files, tensors or specs (0: not shown) */
    const char *items_name;
} qfs_progress;

/* Seconds since an arbitrary start (monotonic). */
double qfs_now_s(void);

/* Starts a progress of `total` bytes and `items_total` items named items_name ("tensors").
 * The interval off a terminal is 10 s, or $QUARKFS_PROGRESS_INTERVAL seconds. */
void qfs_progress_start(qfs_progress *p, const char *what, uint64_t total, uint64_t items_total,
                        const char *items_name);

/* Reports done bytes and items; prints when due (current: what is in progress, may be NULL). */
void qfs_progress_update(qfs_progress *p, uint64_t done, uint64_t items_done,
                         const char *current);

/* Ends the progress with one summary line "WHAT: SUMMARY in T s (R MB/s)" for `bytes` bytes
 * (rate left out when bytes is 0). */
void qfs_progress_finish(qfs_progress *p, uint64_t bytes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Ends a terminal line without a summary (before an error message). */
void qfs_progress_abort(qfs_progress *p);

/* "730 MB", "1.2 GB", "512 kB": decimal units, as file managers and `du --si` show. */
void qfs_format_bytes(uint64_t bytes, char *buf, size_t len);

#endif
