#include "quarkfs/jsonstream.h"

#include <errno.h>

bool qfs_json_plain(const uint8_t *s, size_t n)
{
    unsigned odd = 0;   /* one pass the compiler vectorizes; no early exit */
    for (size_t i = 0; i < n; i++) {
        uint8_t b = s[i];
        odd |= (b >= 0x7f) | (b == '\\') | ((b < 0x20) & (b != '\t') & (b != '\n') & (b != '\r'));
    }
    return !odd;
}

int qfs_json_stream(const uint8_t *text, size_t n, const yajl_callbacks *cb, void *ctx,
                    yajl_handle *handle, const size_t *end)
{
    if (!qfs_json_plain(text, n)) return -EAGAIN;
    yajl_handle y = *handle = yajl_alloc(cb, NULL, ctx);
    if (!y) return -ENOMEM;
    yajl_status st = yajl_parse(y, text, n);
    if (st == yajl_status_ok) st = yajl_complete_parse(y);
    yajl_free(y);
    *handle = NULL;
    if (st == yajl_status_client_canceled) return 1;
    if (st != yajl_status_ok || *end > n) return -EAGAIN;
    for (size_t i = *end; i < n; i++)
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\n' && text[i] != '\r') return -EAGAIN;
    return 0;
}
