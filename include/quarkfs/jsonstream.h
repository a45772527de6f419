/* quarkfs — the streaming JSON parse of big documents (a safetensors header, an index): yajl's
 * events, no tree, for the common case only. Callers keep a tree parser (jansson) for
 * everything this leaves, and for every message about a malformed document. */
#ifndef QUARKFS_JSONSTREAM_H
#define QUARKFS_JSONSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_parse.h>

/* Which parser reads a document: the streaming one, then the tree one for what it leaves (the
 * default), or one alone (tests compare the two; the streaming one alone may give -EAGAIN). */
typedef enum qfs_json_parser {
    QFS_JSON_AUTO,
    QFS_JSON_STREAM,
    QFS_JSON_TREE,
} qfs_json_parser;

/* Whether text is the common case: printable ASCII and JSON's whitespace only, no backslash.
 * Then every string is its bytes as written (no escape to decode, no UTF-8 to check), so a
 * streaming and a tree parser cannot read a string differently. */
bool qfs_json_plain(const uint8_t *text, size_t n);

/* Parses plain text with callbacks `cb` (their context `ctx`). *handle is set to the parser
 * before the first event (callbacks ask it for yajl_get_bytes_consumed); *end is where the
 * callbacks say the top-level value ended, read after the parse: only JSON whitespace may follow
 * (yajl 2.1 lets an unfinished token through there). 0: parsed; 1: a callback stopped the
 * parse (its context says why); -EAGAIN: not plain, not JSON, or more after the value;
 * -ENOMEM. */
int qfs_json_stream(const uint8_t *text, size_t n, const yajl_callbacks *cb, void *ctx,
                    yajl_handle *handle, const size_t *end);

#endif
