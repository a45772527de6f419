/* quarkfs unit tests — helpers shared by the test programs.
 *
 * This file is #included by each test_*.c (it is not compiled on its own), so every helper is
 * static and marked unused: a test program uses only some of them. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include "quarkfs/dtype.h"
#include "quarkfs/error.h"
#include "quarkfs/safetensors.h"
#include "quarkfs/spec.h"

#define UU __attribute__((unused))

/* Compares two float32 values bit for bit (so -0.0 != 0.0 and NaN payloads count), printing both
 * values on failure. */
#define assert_f32_bits(actual, expected)                                                     \
    do {                                                                                      \
        float a_ = (actual), e_ = (expected);                                                 \
        if (qfs_f32_bits(a_) != qfs_f32_bits(e_))                                            \
            fail_msg("%s = %a (0x%08x), expected %a (0x%08x)", #actual, (double)a_,          \
                     (unsigned)qfs_f32_bits(a_), (double)e_, (unsigned)qfs_f32_bits(e_));    \
    } while (0)

/* Fails unless `haystack` contains `needle`, ignoring case. */
#define assert_contains(haystack, needle)                                                     \
    do {                                                                                      \
        const char *h_ = (haystack), *n_ = (needle);                                          \
        if (!unit_strcasestr(h_, n_)) fail_msg("\"%s\" does not contain \"%s\"", h_, n_);    \
    } while (0)

static UU const char *unit_strcasestr(const char *h, const char *n)
{
    size_t nl = strlen(n);
    for (; *h; h++)
        if (strncasecmp(h, n, nl) == 0) return h;
    return nl == 0 ? h : NULL;
}

/* Writes a uint64 little-endian. */
static UU void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static UU uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* A copy of s with every ' turned into ", so JSON can be written readably in C literals. */
static UU char *unit_json(const char *s)
{
    char *r = strdup(s);
    assert_non_null(r);
    for (char *p = r; *p; p++)
        if (*p == '\'') *p = '"';
    return r;
}

/* Bytes of a safetensors file: 8-byte LE `declared_n`, then `hdr_len` header bytes, then
 * `data_len` data bytes (pattern i*7+1). *out_len receives the total. */
static UU uint8_t *st_raw(const void *hdr, size_t hdr_len, uint64_t declared_n, size_t data_len,
                          size_t *out_len)
{
    size_t n = 8 + hdr_len + data_len;
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    put_le64(b, declared_n);
    memcpy(b + 8, hdr, hdr_len);
    for (size_t i = 0; i < data_len; i++) b[8 + hdr_len + i] = (uint8_t)(i * 7 + 1);
    *out_len = n;
    return b;
}

/* Bytes of a well-formed-looking file: header = json (with ' as ") padded with spaces to a
 * multiple of `align` (1: no padding), N = the padded length, then data_len data bytes. */
static UU uint8_t *st_build(const char *json, size_t align, size_t data_len, size_t *out_len)
{
    char *j = unit_json(json);
    size_t len = strlen(j), padded = (len + align - 1) / align * align;
    char *h = malloc(padded + 1);
    assert_non_null(h);
    memcpy(h, j, len);
    memset(h + len, ' ', padded - len);
    uint8_t *b = st_raw(h, padded, padded, data_len, out_len);
    free(h);
    free(j);
    return b;
}

/* Parses json (with ' as ") + data_len bytes of data through qfs_st_parse. */
static UU int st_parse_json(const char *json, size_t data_len, const char *path, qfs_st_file *out,
                            qfs_error *err)
{
    size_t len;
    uint8_t *b = st_build(json, 1, data_len, &len);
    int rc = qfs_st_parse(b, len, len, path, out, err);
    free(b);
    return rc;
}

/* Writes bytes to a new temporary file; returns its path (malloc'd; unlink + free it). */
static UU char *unit_tmpfile(const void *buf, size_t len)
{
    const char *dir = getenv("TMPDIR");
    char *path = NULL;
    assert_true(asprintf(&path, "%s/quarkfs-unit-XXXXXX", dir && *dir ? dir : "/tmp") > 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        assert_true(w > 0);
        p += w;
        len -= (size_t)w;
    }
    assert_int_equal(close(fd), 0);
    return path;
}

/* Looks up a spec that must exist. */
static UU const qfs_spec *unit_spec(const char *name)
{
    const qfs_spec *s = NULL;
    qfs_error err = {{0}};
    assert_int_equal(qfs_spec_lookup(name, &s, &err), 0);
    assert_non_null(s);
    assert_string_equal(s->name, name);
    return s;
}

/* BF16 bits of a float32 that is exactly representable in BF16 (low 16 bits zero): an encoder
 * independent of the code under test, for building inputs. */
static UU uint16_t bf16_exact(float f)
{
    uint32_t u = qfs_f32_bits(f);
    assert_int_equal(u & 0xFFFFu, 0);
    return (uint16_t)(u >> 16);
}
