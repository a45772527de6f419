/* quarkfs — error reporting: every fallible function returns 0 or a negative errno and, on
 * failure, fills a qfs_error with a message that names the file (and tensor) and the problem. */
#ifndef QUARKFS_ERROR_H
#define QUARKFS_ERROR_H

#include <stddef.h>

typedef struct qfs_error {
    char msg[1024];
} qfs_error;

/* Formats a message into err (if err is non-NULL); returns nothing so it can precede `return -E`. */
void qfs_error_set(qfs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
