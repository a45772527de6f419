/* quarkfs — the progress printer; see progress.h. */
#include "progress.h"

#include "quarkfs/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define TTY_REDRAW_S 0.2
#define LINE_EVERY_S 10.0

double qfs_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void qfs_format_bytes(uint64_t bytes, char *buf, size_t len)
{
    static const char *units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1000.0 && u < 5) {
        v /= 1000.0;
        u++;
    }
    if (u == 0) snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    else snprintf(buf, len, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void duration(double s, char *buf, size_t len)
{
    if (s < 60) snprintf(buf, len, "%.0f s", s);
    else if (s < 3600) snprintf(buf, len, "%d min %02d s", (int)s / 60, (int)s % 60);
    else snprintf(buf, len, "%d h %02d min", (int)s / 3600, (int)s % 3600 / 60);
}

void qfs_progress_start(qfs_progress *p, const char *what, uint64_t total, uint64_t items_total,
                        const char *items_name)
{
    const char *env = getenv("QUARKFS_PROGRESS_INTERVAL");
    char *end;
    double iv = env ? strtod(env, &end) : 0;
    *p = (qfs_progress){.what = what, .tty = isatty(STDERR_FILENO) == 1,
                        .quiet = qfs_log_level < LOG_INFO, .t0 = qfs_now_s(),
                        .interval = env && *env && !*end && iv > 0 ? iv : LINE_EVERY_S,
                        .total = total, .items_total = items_total, .items_name = items_name};
    p->last = p->t0;
}

void qfs_progress_update(qfs_progress *p, uint64_t done, uint64_t items_done,
                         const char *current)
{
    if (p->quiet) return;
    double t = qfs_now_s(), el = t - p->t0;
    if (t - p->last < (p->tty ? TTY_REDRAW_S : p->interval)) return;
    p->last = t;
    /* the fraction done: by bytes, or by items when no byte total is known */
    double f = p->total ? (double)done / (double)p->total
             : p->items_total ? (double)items_done / (double)p->items_total : 1.0;
    char line[512], d[32], tot[32];
    int n = snprintf(line, sizeof line, "%s: %5.1f%%", p->what, 100.0 * f);
    if (p->total) {
        qfs_format_bytes(done, d, sizeof d);
        qfs_format_bytes(p->total, tot, sizeof tot);
        n += snprintf(line + n, sizeof line - (size_t)n, ", %s of %s", d, tot);
    }
    if (p->items_total)
        n += snprintf(line + n, sizeof line - (size_t)n, ", %llu/%llu %s",
                      (unsigned long long)items_done, (unsigned long long)p->items_total,
                      p->items_name);
    if (p->total && done && el > 0) {
        qfs_format_bytes((uint64_t)((double)done / el), d, sizeof d);
        n += snprintf(line + n, sizeof line - (size_t)n, ", %s/s", d);
    }
    if (f > 0 && f < 1 && el > 0) {
        char dur[24];
        duration(el * (1 - f) / f, dur, sizeof dur);
        n += snprintf(line + n, sizeof line - (size_t)n, ", about %s left", dur);
    }
    char safe[256];   /* a file or tensor name: no control characters to the terminal */
    if (current && n > 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, " -- %s",
                 qfs_escape_ctl(current, safe, sizeof safe));
    fprintf(stderr, "%s%s%s", p->tty ? "\r\033[K" : "", line, p->tty ? "" : "\n");
    p->drawn = p->tty;
    fflush(stderr);
}

void qfs_progress_abort(qfs_progress *p)
{
    if (p->drawn) fputc('\n', stderr);
    p->drawn = false;
}

void qfs_progress_finish(qfs_progress *p, uint64_t bytes, const char *fmt, ...)
{
    if (p->quiet) return;
    if (p->tty) fputs("\r\033[K", stderr);
    p->drawn = false;
    char msg[512], rate[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    double el = qfs_now_s() - p->t0;
    fprintf(stderr, "%s: %s in %.1f s", p->what, msg, el);
    if (bytes && el > 0) {
        qfs_format_bytes((uint64_t)((double)bytes / el), rate, sizeof rate);
        fprintf(stderr, " (%s/s)", rate);
    }
    fputc('\n', stderr);
}
