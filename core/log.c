/* quarkfs — formatted messages to the front end's log callback (log.h). */
#include "quarkfs/log.h"

#include <stdio.h>

void qfs_log_vprintf(qfs_log_callback cb, void *ctx, int level, const char *fmt, va_list ap)
{
    if (!cb) return;
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    cb(ctx, level, buf);
}
