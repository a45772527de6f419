/* quarkfs — how core modules report what they do: a callback the front end supplies, called
 * with a syslog priority and one finished line. Core modules never write to stderr or syslog
 * themselves; without a callback they stay silent. */
#ifndef QUARKFS_LOG_H
#define QUARKFS_LOG_H

#include <stdarg.h>

/* Log levels: syslog's numbers, so a front end can pass them to syslog(3) unchanged. */
enum { QFS_LOG_ERR = 3, QFS_LOG_WARNING = 4, QFS_LOG_INFO = 6, QFS_LOG_DEBUG = 7 };

/* Receives one message (no trailing newline) at a QFS_LOG_* level; ctx is the caller's. May be
 * called from any thread, also while a core module holds its own locks: it must not call back
 * into that module. */
typedef void (*qfs_log_callback)(void *ctx, int level, const char *msg);

/* Formats one message (vprintf rules, cut at 2 KiB) and passes it to cb; does nothing when cb
 * is NULL. For the modules' own printf-like wrappers. */
void qfs_log_vprintf(qfs_log_callback cb, void *ctx, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#endif
