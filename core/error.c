#include "quarkfs/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

void qfs_error_set(qfs_error *err, const char *fmt, ...)
{
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    if (c >= 0xf5 || n == 0) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (n == 3 && ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))) return 0;
    if (n == 4 && ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))) return 0;
    return n;
}

char *qfs_escape_ctl(const char *in, char *out, size_t out_len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;
    while (*s) {
        char esc[8];
        const char *piece = (const char *)s;
        size_t n, step;
        if (*s < 0x20 || *s == 0x7f) {
            n = (size_t)snprintf(esc, sizeof esc, "\\x%02x", *s);
            piece = esc;
            step = 1;
        } else if (*s < 0x80) {
            n = step = 1;
        } else if ((step = utf8_len(s)) == 0) {
            n = (size_t)snprintf(esc, sizeof esc, "\\x%02x", *s);
            piece = esc;
            step = 1;
        } else if (step == 2 && s[0] == 0xc2 && s[1] < 0xa0) {
            n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", (unsigned)(s[1] & 0x3f) | 0x80);
            piece = esc;
        } else {
            n = step;
        }
        if (o + n >= out_len) break;
        memcpy(out + o, piece, n);
        o += n;
        s += step;
    }
    out[o] = '\0';
    return out;
}
