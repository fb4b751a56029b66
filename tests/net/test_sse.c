/* test_sse.c — SSE parser (line endings, split feeds, fields, limits) and
 * writer round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "net/sse.h"

typedef struct {
  hx_buf log; /* "event|data|id|retry\n" per event */
  int comments;
  int stop_after;
  int n;
} sink;

static int on_ev(void *ud, const hx_sse_event *ev) {
  sink *s = ud;
  hx_buf_printf(&s->log, "%s|%s|%s|%ld\n", ev->event, ev->data, ev->id, ev->retry_ms);
  s->n++;
  return s->stop_after && s->n >= s->stop_after;
}
static void on_comment(void *ud, const char *t, size_t n) {
  (void)t;
  (void)n;
  ((sink *)ud)->comments++;
}

static void feed_all(const char *in, size_t step, const char *expect, int comments) {
  sink s = {0};
  hx_buf_init(&s.log, 1 << 16);
  hx_sse_parser p;
  hx_sse_parser_init(&p, 4096, on_ev, &s);
  p.on_comment = on_comment;
  size_t n = strlen(in);
  for (size_t i = 0; i < n; i += step) {
    size_t k = n - i < step ? n - i : step;
    assert_int_equal(hx_sse_parser_feed(&p, in + i, k, NULL), HX_OK);
  }
  assert_string_equal(s.log.data ? s.log.data : "", expect);
  assert_int_equal(s.comments, comments);
  hx_sse_parser_free(&p);
  hx_buf_free(&s.log);
}

static void test_parse_basic(void **state) {
  (void)state;
  const char *in = "\xEF\xBB\xBF: hi\n"
                   "event: message_start\ndata: {\"a\":1}\n\n"
                   "data:x\r\ndata: y\r\n\r\n"
                   "id: 7\rretry: 1500\rdata\r\r"
                   "event: lonely\n\n" /* no data: not dispatched */
                   "retry: 12x\nfoo: bar\ndata:  two spaces\n\n"
                   "data: unterminated";
  const char *expect = "message_start|{\"a\":1}||-1\n"
                       "|x\ny||-1\n"
                       "||7|1500\n"
                       "| two spaces|7|-1\n";
  for (size_t step = 1; step <= strlen(in); step += 7)
    feed_all(in, step, expect, 1);
  feed_all(in, strlen(in), expect, 1);
}

static void test_limits_and_stop(void **state) {
  (void)state;
  sink s = {0};
  hx_buf_init(&s.log, 1 << 16);
  hx_sse_parser p;
  hx_sse_parser_init(&p, 16, on_ev, &s);
  hx_err e;
  char big[64];
  memset(big, 'a', sizeof big);
  assert_int_equal(hx_sse_parser_feed(&p, "data: ", 6, &e), HX_OK);
  assert_int_equal(hx_sse_parser_feed(&p, big, sizeof big, &e), HX_ETOOLARGE);
  assert_int_equal(hx_sse_parser_feed(&p, "\n\n", 2, &e), HX_EINVAL);
  hx_sse_parser_free(&p);

  /* many data lines each under the line limit still bound the event */
  hx_sse_parser_init(&p, 16, on_ev, &s);
  hx_code rc = HX_OK;
  for (int i = 0; i < 20 && rc == HX_OK; i++)
    rc = hx_sse_parser_feed(&p, "data: abc\n", 10, &e);
  assert_int_equal(rc, HX_ETOOLARGE);
  hx_sse_parser_free(&p);

  s.stop_after = 1;
  s.n = 0;
  hx_sse_parser_init(&p, 1024, on_ev, &s);
  assert_int_equal(hx_sse_parser_feed(&p, "data: 1\n\ndata: 2\n\n", 18, &e), HX_ECANCELLED);
  assert_int_equal(s.n, 1);
  hx_sse_parser_free(&p);
  hx_buf_free(&s.log);
}

static void test_writer_roundtrip(void **state) {
  (void)state;
  hx_buf out;
  hx_buf_init(&out, 1 << 16);
  const char *d = "line1\nline2\r\nline3\rend\n";
  assert_int_equal(hx_sse_write_event(&out, "content_block_delta", d, strlen(d)), HX_OK);
  assert_string_equal(out.data, "event: content_block_delta\ndata: line1\ndata: line2\ndata: "
                                "line3\ndata: end\ndata: \n\n");
  hx_buf_reset(&out);
  assert_int_equal(hx_sse_write_event(&out, NULL, "", 0), HX_OK);
  assert_string_equal(out.data, "data: \n\n");
  hx_buf_reset(&out);
  assert_int_equal(hx_sse_write_comment(&out, "keep\nalive"), HX_OK);
  assert_string_equal(out.data, ": keep alive\n\n");
  hx_buf_reset(&out);
  hx_sse_write_event(&out, "ping", d, strlen(d));
  feed_all(out.data, 3, "ping|line1\nline2\nline3\nend\n||-1\n", 0);
  hx_buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_basic),
      cmocka_unit_test(test_limits_and_stop),
      cmocka_unit_test(test_writer_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
