/* sse.h — Server-Sent Events: an incremental, bounded parser and a writer.
 *
 * The parser follows the WHATWG event-stream rules: lines end in CRLF, LF or
 * CR (also split across feeds); "field: value" with one optional space after
 * the colon; lines starting with ':' are comments; `data` lines accumulate
 * joined by '\n'; a blank line dispatches the event (nothing is dispatched
 * when no data line was seen); `event`, `id` (ignored when it contains NUL)
 * and `retry` (ASCII digits only) fields; unknown fields ignored; a leading
 * UTF-8 BOM is skipped; an unterminated event at end of stream is dropped.
 *
 * Bounds: a single line and a single event's data are limited by
 * max_event_bytes; exceeding it is HX_ETOOLARGE (the parser then stays
 * failed). The parser never allocates more than about 2 × max_event_bytes.
 *
 * Usage:
 *   hx_sse_parser p; hx_sse_parser_init(&p, 1 << 20, on_event, ud);
 *   while (chunk) hx_sse_parser_feed(&p, chunk, n, &err);
 *   hx_sse_parser_free(&p);
 */
#ifndef HX_NET_SSE_H
#define HX_NET_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/status.h"

typedef struct hx_sse_event {
  const char *event; /* NUL-terminated; "" when no event field (means "message") */
  const char *data;  /* NUL-terminated data (lines joined by '\n') */
  size_t data_len;
  const char *id; /* last event id so far; "" when none */
  long retry_ms;  /* -1 unless this event block set retry */
} hx_sse_event;

/* Called for each dispatched event; pointers valid only during the call.
 * Return 0 to continue, non-zero to stop: feed then returns HX_ECANCELLED. */
typedef int (*hx_sse_on_event)(void *ud, const hx_sse_event *ev);
/* Called for each comment line (text after ':' without the one optional
 * space); may be NULL. */
typedef void (*hx_sse_on_comment)(void *ud, const char *text, size_t len);

typedef struct hx_sse_parser {
  hx_buf line;  /* the current, unterminated line */
  hx_buf data;  /* accumulated data of the current event */
  hx_buf event; /* event type of the current event */
  hx_buf id;    /* last event id */
  long retry_ms;
  bool has_data;    /* a data field was seen in this event */
  bool last_was_cr; /* previous byte was CR: a following LF is part of it */
  bool bom_checked; /* first bytes inspected for a BOM */
  bool failed;      /* a limit was exceeded; further feeds fail */
  size_t bom_seen;  /* BOM bytes matched so far (0..3) */
  hx_sse_on_event on_event;
  hx_sse_on_comment on_comment;
  void *ud;
} hx_sse_parser;

void hx_sse_parser_init(hx_sse_parser *p, size_t max_event_bytes, hx_sse_on_event on_event,
                        void *ud);
void hx_sse_parser_free(hx_sse_parser *p);
/* Feeds bytes; dispatches complete events. HX_ETOOLARGE past the limit,
 * HX_ECANCELLED when the callback asked to stop. */
hx_code hx_sse_parser_feed(hx_sse_parser *p, const char *bytes, size_t len, hx_err *err);

/* Writer: appends "event: NAME\n" (when name is non-NULL) and one
 * "data: ...\n" line per line of data (CR, LF and CRLF in data all start a
 * new data line), then a blank line. */
hx_code hx_sse_write_event(hx_buf *out, const char *name, const char *data, size_t data_len);
/* Appends ": text\n\n" (a keep-alive comment; text must not contain line
 * breaks — they are replaced by spaces). */
hx_code hx_sse_write_comment(hx_buf *out, const char *text);

#endif
