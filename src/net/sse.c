/* sse.c — incremental SSE parser and writer (see sse.h). */
#include "net/sse.h"

#include <stdlib.h>
#include <string.h>

void hx_sse_parser_init(hx_sse_parser *p, size_t max_event_bytes, hx_sse_on_event on_event,
                        void *ud) {
  HX_ASSERT(p != NULL && max_event_bytes > 0);
  memset(p, 0, sizeof *p);
  hx_buf_init(&p->line, max_event_bytes);
  hx_buf_init(&p->data, max_event_bytes);
  hx_buf_init(&p->event, 256);
  hx_buf_init(&p->id, 256);
  p->retry_ms = -1;
  p->on_event = on_event;
  p->ud = ud;
}

void hx_sse_parser_free(hx_sse_parser *p) {
  if (!p)
    return;
  hx_buf_free(&p->line);
  hx_buf_free(&p->data);
  hx_buf_free(&p->event);
  hx_buf_free(&p->id);
}

static hx_code sse_dispatch(hx_sse_parser *p, hx_err *err) {
  hx_code rc = HX_OK;
  if (p->has_data) {
    hx_sse_event ev = {
        .event = p->event.data ? p->event.data : "",
        .data = p->data.data ? p->data.data : "",
        .data_len = p->data.len,
        .id = p->id.data ? p->id.data : "",
        .retry_ms = p->retry_ms,
    };
    if (p->on_event && p->on_event(p->ud, &ev) != 0)
      rc = hx_err_set(err, HX_ECANCELLED, "SSE consumer stopped the stream");
  }
  hx_buf_reset(&p->data);
  hx_buf_reset(&p->event);
  p->has_data = false;
  p->retry_ms = -1;
  return rc;
}

static hx_code sse_field(hx_sse_parser *p, const char *name, size_t name_len, const char *val,
                         size_t val_len, hx_err *err) {
  if (name_len == 4 && memcmp(name, "data", 4) == 0) {
    if (p->has_data && hx_buf_append_char(&p->data, '\n') != HX_OK)
      return hx_err_set(err, HX_ETOOLARGE, "SSE event data exceeds %zu bytes", p->data.max_len);
    if (hx_buf_append(&p->data, val, val_len) != HX_OK)
      return hx_err_set(err, HX_ETOOLARGE, "SSE event data exceeds %zu bytes", p->data.max_len);
    p->has_data = true;
  } else if (name_len == 5 && memcmp(name, "event", 5) == 0) {
    hx_buf_reset(&p->event);
    if (hx_buf_append(&p->event, val, val_len) != HX_OK)
      return hx_err_set(err, HX_ETOOLARGE, "SSE event name exceeds %zu bytes", p->event.max_len);
  } else if (name_len == 2 && memcmp(name, "id", 2) == 0) {
    if (memchr(val, '\0', val_len) == NULL) {
      hx_buf_reset(&p->id);
      if (hx_buf_append(&p->id, val, val_len) != HX_OK)
        return hx_err_set(err, HX_ETOOLARGE, "SSE id exceeds %zu bytes", p->id.max_len);
    }
  } else if (name_len == 5 && memcmp(name, "retry", 5) == 0) {
    long v = 0;
    bool ok = val_len > 0 && val_len <= 9;
    for (size_t i = 0; ok && i < val_len; i++) {
      if (val[i] < '0' || val[i] > '9')
        ok = false;
      else
        v = v * 10 + (val[i] - '0');
    }
    if (ok)
      p->retry_ms = v;
  }
  return HX_OK;
}

static hx_code sse_line(hx_sse_parser *p, hx_err *err) {
  const char *s = p->line.data ? p->line.data : "";
  size_t n = p->line.len;
  hx_code rc = HX_OK;
  if (n == 0) {
    rc = sse_dispatch(p, err);
  } else if (s[0] == ':') {
    size_t off = (n > 1 && s[1] == ' ') ? 2 : 1;
    if (p->on_comment)
      p->on_comment(p->ud, s + off, n - off);
  } else {
    const char *colon = memchr(s, ':', n);
    size_t name_len = colon ? (size_t)(colon - s) : n;
    const char *val = colon ? colon + 1 : s + n;
    size_t val_len = colon ? n - name_len - 1 : 0;
    if (val_len > 0 && val[0] == ' ') {
      val++;
      val_len--;
    }
    rc = sse_field(p, s, name_len, val, val_len, err);
  }
  hx_buf_reset(&p->line);
  return rc;
}

hx_code hx_sse_parser_feed(hx_sse_parser *p, const char *bytes, size_t len, hx_err *err) {
  static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
  if (p->failed)
    return hx_err_set(err, HX_EINVAL, "SSE parser already failed");
  size_t i = 0;
  while (!p->bom_checked && i < len) {
    if ((unsigned char)bytes[i] == bom[p->bom_seen]) {
      p->bom_seen++;
      i++;
      if (p->bom_seen == 3)
        p->bom_checked = true;
    } else {
      /* Not a BOM: the bytes matched so far were real content. */
      p->bom_checked = true;
      if (p->bom_seen > 0 && hx_buf_append(&p->line, bom, p->bom_seen) != HX_OK) {
        p->failed = true;
        return hx_err_set(err, HX_ETOOLARGE, "SSE line too long");
      }
    }
  }
  while (i < len) {
    char c = bytes[i];
    if (p->last_was_cr && c == '\n') { /* second half of CRLF */
      p->last_was_cr = false;
      i++;
      continue;
    }
    p->last_was_cr = false;
    if (c == '\r' || c == '\n') {
      p->last_was_cr = (c == '\r');
      i++;
      hx_code rc = sse_line(p, err);
      if (rc != HX_OK) {
        p->failed = true;
        return rc;
      }
      continue;
    }
    /* Copy the run of ordinary bytes at once. */
    size_t j = i;
    while (j < len && bytes[j] != '\r' && bytes[j] != '\n')
      j++;
    if (hx_buf_append(&p->line, bytes + i, j - i) != HX_OK) {
      p->failed = true;
      return hx_err_set(err, HX_ETOOLARGE, "SSE line exceeds %zu bytes", p->line.max_len);
    }
    i = j;
  }
  return HX_OK;
}

hx_code hx_sse_write_event(hx_buf *out, const char *name, const char *data, size_t data_len) {
  hx_code rc = HX_OK;
  if (name)
    rc = hx_buf_printf(out, "event: %s\n", name);
  size_t i = 0;
  for (;;) {
    size_t j = i;
    while (j < data_len && data[j] != '\r' && data[j] != '\n')
      j++;
    if (rc == HX_OK)
      rc = hx_buf_append(out, "data: ", 6);
    if (rc == HX_OK)
      rc = hx_buf_append(out, data + i, j - i);
    if (rc == HX_OK)
      rc = hx_buf_append_char(out, '\n');
    if (rc != HX_OK || j == data_len)
      break;
    if (data[j] == '\r' && j + 1 < data_len && data[j + 1] == '\n')
      j++;
    i = j + 1;
  }
  if (rc == HX_OK)
    rc = hx_buf_append_char(out, '\n');
  return rc;
}

hx_code hx_sse_write_comment(hx_buf *out, const char *text) {
  hx_code rc = hx_buf_append(out, ": ", 2);
  for (const char *s = text; rc == HX_OK && *s; s++)
    rc = hx_buf_append_char(out, (*s == '\n' || *s == '\r') ? ' ' : *s);
  if (rc == HX_OK)
    rc = hx_buf_append(out, "\n\n", 2);
  return rc;
}
