/* buf.h — bounded growable byte buffers and (ptr, len) byte slices.
 *
 * An hx_buf always has a maximum size; appending past it fails with
 * HX_ETOOLARGE and leaves the buffer unchanged (never a crash, never a silent
 * truncation). data is always NUL-terminated (the NUL is not counted in len)
 * so text can be handed to C string functions. */
#ifndef HX_BUF_H
#define HX_BUF_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

typedef struct hx_slice {
  const char *ptr; /* not owned; may be NULL when len == 0 */
  size_t len;
} hx_slice;

static inline hx_slice hx_slice_make(const char *p, size_t n) { return (hx_slice){p, n}; }
hx_slice hx_slice_cstr(const char *s);
bool hx_slice_eq(hx_slice a, hx_slice b);
bool hx_slice_eq_cstr(hx_slice a, const char *s);
bool hx_slice_starts_with(hx_slice a, const char *prefix);
hx_slice hx_slice_trim(hx_slice a); /* ASCII whitespace both ends */

typedef struct hx_buf {
  char *data;     /* owned; NULL until the first append */
  size_t len;     /* bytes in use */
  size_t cap;     /* bytes allocated (excluding the NUL slot) */
  size_t max_len; /* hard limit on len; appends past it fail */
} hx_buf;

/* Initializes an empty buffer that may grow up to max_len bytes. */
void hx_buf_init(hx_buf *b, size_t max_len);
/* Frees the storage; b may be NULL. The buffer can be re-inited afterwards. */
void hx_buf_free(hx_buf *b);
/* Empties the buffer, keeping its storage. */
void hx_buf_reset(hx_buf *b);
/* Ensures room for `extra` more bytes. HX_ETOOLARGE past max_len, HX_ENOMEM. */
hx_code hx_buf_reserve(hx_buf *b, size_t extra);
hx_code hx_buf_append(hx_buf *b, const void *p, size_t n);
hx_code hx_buf_append_str(hx_buf *b, const char *s);
hx_code hx_buf_append_char(hx_buf *b, char c);
hx_code hx_buf_printf(hx_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes the first n bytes (n <= len). */
void hx_buf_consume(hx_buf *b, size_t n);
/* Transfers ownership of data to the caller (NUL-terminated, never NULL on
 * success); the buffer becomes empty. Returns NULL on OOM. */
char *hx_buf_detach(hx_buf *b);
static inline hx_slice hx_buf_slice(const hx_buf *b) { return (hx_slice){b->data, b->len}; }

#endif
