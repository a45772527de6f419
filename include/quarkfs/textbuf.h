/* quarkfs — a growing text buffer for the JSON that core modules write by hand (the view
 * header, the index), where building a jansson tree per tensor would cost more than the text. */
#ifndef QUARKFS_TEXTBUF_H
#define QUARKFS_TEXTBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Zero-initialized = empty. s is malloc'd (the caller frees it) and kept NUL-terminated. */
typedef struct qfs_textbuf {
    char *s;
    size_t len, cap;
    bool failed;            /* an append ran out of memory: later appends do nothing */
} qfs_textbuf;

/* Appends the n bytes at s. Out of memory sets failed instead of returning an error, so a
 * writer checks once at the end rather than after every piece. */
void qfs_textbuf_put(qfs_textbuf *b, const char *s, size_t n);

#endif
