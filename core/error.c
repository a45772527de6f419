#include "quarkfs/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void qfs_error_set(qfs_error *err, const char *fmt, ...)
{
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}
