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

/* Names (tensor names, file names) are data: printed raw, an ESC sequence in one would drive
 * the terminal and a newline would forge a log line. Copies `in` into out (out_len > 0, always
 * NUL-terminated, cut at a character boundary if too small) with every byte below 0x20, DEL,
 * every byte that is not part of valid UTF-8, and the UTF-8 encodings of the C1 controls
 * (U+0080..U+009F) written as \xNN (\u00NN for C1); valid UTF-8 otherwise unchanged. Returns
 * out. */
char *qfs_escape_ctl(const char *in, char *out, size_t out_len);

#endif
