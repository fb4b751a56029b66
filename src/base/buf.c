/* buf.c — see buf.h. Growth is geometric, capped at max_len. */
#include "base/buf.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

hx_slice hx_slice_cstr(const char *s) { return (hx_slice){s, s ? strlen(s) : 0}; }

bool hx_slice_eq(hx_slice a, hx_slice b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool hx_slice_eq_cstr(hx_slice a, const char *s) { return hx_slice_eq(a, hx_slice_cstr(s)); }

bool hx_slice_starts_with(hx_slice a, const char *prefix) {
  size_t n = strlen(prefix);
  return a.len >= n && memcmp(a.ptr, prefix, n) == 0;
}

hx_slice hx_slice_trim(hx_slice a) {
  while (a.len && isspace((unsigned char)a.ptr[0])) {
    a.ptr++;
    a.len--;
  }
  while (a.len && isspace((unsigned char)a.ptr[a.len - 1]))
    a.len--;
  return a;
}

void hx_buf_init(hx_buf *b, size_t max_len) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max_len = max_len;
}

void hx_buf_free(hx_buf *b) {
  if (!b)
    return;
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

void hx_buf_reset(hx_buf *b) {
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

hx_code hx_buf_reserve(hx_buf *b, size_t extra) {
  size_t need;
  if (hx_size_add(b->len, extra, &need) || need > b->max_len)
    return HX_ETOOLARGE;
  if (need <= b->cap && b->data)
    return HX_OK;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap = cap > SIZE_MAX / 4 ? need : cap * 2;
  if (cap > b->max_len)
    cap = b->max_len;
  char *p = realloc(b->data, cap + 1);
  if (!p)
    return HX_ENOMEM;
  b->data = p;
  b->cap = cap;
  b->data[b->len] = '\0';
  return HX_OK;
}

hx_code hx_buf_append(hx_buf *b, const void *p, size_t n) {
  hx_code rc = hx_buf_reserve(b, n);
  if (rc)
    return rc;
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return HX_OK;
}

hx_code hx_buf_append_str(hx_buf *b, const char *s) { return hx_buf_append(b, s, strlen(s)); }

hx_code hx_buf_append_char(hx_buf *b, char c) { return hx_buf_append(b, &c, 1); }

hx_code hx_buf_printf(hx_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return HX_EINVAL;
  hx_code rc = hx_buf_reserve(b, (size_t)n);
  if (rc)
    return rc;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return HX_OK;
}

void hx_buf_consume(hx_buf *b, size_t n) {
  HX_ASSERT(n <= b->len);
  if (n == 0)
    return;
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
  b->data[b->len] = '\0';
}

char *hx_buf_detach(hx_buf *b) {
  if (!b->data && hx_buf_reserve(b, 0) != HX_OK)
    return NULL;
  char *p = b->data;
  b->data = NULL;
  b->len = b->cap = 0;
  return p;
}
