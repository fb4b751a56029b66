/* test_http_client.c — the libcurl client against a local hx_http_server:
 * collected and streamed bodies, status callback before data, first-byte
 * and idle timeouts, prompt cross-thread cancellation, response size limit,
 * connection refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/time.h"
#include "net/http_client.h"
#include "net/http_server.h"

static hx_http_server *srv;
static char base[64];

static void h_fast(hx_http_req *req, void *ctx) {
  (void)ctx;
  hx_http_respond(req, 201, "application/json", "{\"ok\":true}", 11, NULL, 0);
}
static void h_slow_first(hx_http_req *req, void *ctx) {
  (void)ctx;
  hx_time_sleep_ms(600);
  hx_http_respond(req, 200, "text/plain", "late", 4, NULL, 0);
}
/* Streams from its own thread, as cortex and neuron do (the handler returns
 * at once and the connection is suspended). */
static void *stream_main(void *arg) {
  hx_http_req *req = arg;
  const char *gap = hx_http_req_query(req, "gap");
  unsigned gap_ms = gap ? (unsigned)atoi(gap) : 20;
  hx_http_stream_begin(req, 200, "text/event-stream", NULL, 0);
  for (int i = 0; i < 5; i++) {
    char b[32];
    int n = snprintf(b, sizeof b, "data: %d\n\n", i);
    if (hx_http_stream_write(req, b, (size_t)n, 1000) != HX_OK)
      break;
    hx_time_sleep_ms(gap_ms);
  }
  hx_http_stream_end(req);
  return NULL;
}
static void h_stream(hx_http_req *req, void *ctx) {
  (void)ctx;
  pthread_t t;
  pthread_create(&t, NULL, stream_main, req);
  pthread_detach(t);
}
static void h_big(hx_http_req *req, void *ctx) {
  (void)ctx;
  static char big[1 << 20];
  memset(big, 'b', sizeof big);
  hx_http_respond(req, 200, "text/plain", big, sizeof big, NULL, 0);
}

static int setup(void **state) {
  (void)state;
  hx_http_server_config c = {.host = "127.0.0.1", .threads = 4};
  srv = hx_http_server_create(&c);
  hx_http_server_route(srv, "GET", "/fast", h_fast, NULL, NULL);
  hx_http_server_route(srv, "POST", "/fast", h_fast, NULL, NULL);
  hx_http_server_route(srv, "GET", "/slow", h_slow_first, NULL, NULL);
  hx_http_server_route(srv, "GET", "/stream", h_stream, NULL, NULL);
  hx_http_server_route(srv, "GET", "/big", h_big, NULL, NULL);
  if (hx_http_server_start(srv, NULL) != HX_OK)
    return -1;
  snprintf(base, sizeof base, "http://127.0.0.1:%u", hx_http_server_port(srv));
  return 0;
}
static int teardown(void **state) {
  (void)state;
  hx_time_sleep_ms(1700); /* let the detached streamers finish */
  hx_http_server_free(srv);
  return 0;
}

static void test_fetch_collects(void **state) {
  (void)state;
  char url[128];
  snprintf(url, sizeof url, "%s/fast", base);
  hx_http_response rs;
  assert_int_equal(hx_http_fetch("POST", url, "{}", 2000, 0, &rs, NULL), HX_OK);
  assert_int_equal(rs.status, 201);
  assert_string_equal(rs.body.data, "{\"ok\":true}");
  assert_string_equal(rs.content_type, "application/json");
  hx_buf_free(&rs.body);
}

typedef struct {
  int status_calls, data_calls;
  bool data_before_status;
  hx_buf got;
  int stop_after;
} sink;

static int on_status(void *ud, int st, const char *ct) {
  sink *s = ud;
  (void)st;
  (void)ct;
  s->status_calls++;
  return 0;
}
static int on_data(void *ud, const char *p, size_t n) {
  sink *s = ud;
  if (s->status_calls == 0)
    s->data_before_status = true;
  s->data_calls++;
  hx_buf_append(&s->got, p, n);
  return s->stop_after && s->data_calls >= s->stop_after;
}

static void test_stream_chunks(void **state) {
  (void)state;
  char url[128];
  snprintf(url, sizeof url, "%s/stream", base);
  sink s = {0};
  hx_buf_init(&s.got, 4096);
  hx_http_call *c = hx_http_call_new();
  hx_http_request rq = {.url = url, .on_status = on_status, .on_data = on_data, .ud = &s};
  hx_http_response rs;
  assert_int_equal(hx_http_call_run(c, &rq, &rs, NULL), HX_OK);
  assert_int_equal(rs.status, 200);
  assert_int_equal(s.status_calls, 1);
  assert_false(s.data_before_status);
  assert_true(s.data_calls >= 2); /* arrived in pieces, not buffered whole */
  assert_string_equal(s.got.data, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
  hx_buf_free(&rs.body);
  /* consumer abort */
  hx_buf_reset(&s.got);
  s.stop_after = 1;
  s.data_calls = s.status_calls = 0;
  hx_err e;
  assert_int_equal(hx_http_call_run(c, &rq, &rs, &e), HX_ECANCELLED);
  hx_buf_free(&rs.body);
  hx_http_call_free(c);
  hx_buf_free(&s.got);
}

static void test_timeouts(void **state) {
  (void)state;
  char url[128];
  snprintf(url, sizeof url, "%s/slow", base);
  hx_http_call *c = hx_http_call_new();
  hx_http_request rq = {.url = url, .first_byte_timeout_ms = 150};
  hx_http_response rs;
  hx_err e;
  uint64_t t0 = hx_time_mono_ns();
  assert_int_equal(hx_http_call_run(c, &rq, &rs, &e), HX_ETIMEOUT);
  assert_true(hx_time_mono_ns() - t0 < 500000000ull);
  assert_non_null(strstr(e.msg, "no response"));
  hx_buf_free(&rs.body);
  snprintf(url, sizeof url, "%s/stream?gap=400", base);
  hx_http_request rq2 = {.url = url, .idle_timeout_ms = 150};
  assert_int_equal(hx_http_call_run(c, &rq2, &rs, &e), HX_ETIMEOUT);
  assert_non_null(strstr(e.msg, "no data"));
  hx_buf_free(&rs.body);
  hx_http_call_free(c);
}

static void *cancel_later(void *arg) {
  hx_time_sleep_ms(100);
  hx_http_call_cancel(arg);
  return NULL;
}

static void test_cancel_and_limits(void **state) {
  (void)state;
  char url[128];
  snprintf(url, sizeof url, "%s/stream?gap=300", base);
  hx_http_call *c = hx_http_call_new();
  hx_http_request rq = {.url = url};
  hx_http_response rs;
  hx_err e;
  pthread_t t;
  pthread_create(&t, NULL, cancel_later, c);
  uint64_t t0 = hx_time_mono_ns();
  assert_int_equal(hx_http_call_run(c, &rq, &rs, &e), HX_ECANCELLED);
  uint64_t took_ms = (hx_time_mono_ns() - t0) / 1000000u;
  assert_true(took_ms >= 90 && took_ms < 250); /* promptly, not at the next chunk */
  pthread_join(t, NULL);
  hx_buf_free(&rs.body);
  hx_http_call_free(c);

  c = hx_http_call_new();
  snprintf(url, sizeof url, "%s/big", base);
  hx_http_request rq2 = {.url = url, .max_response_bytes = 1000};
  assert_int_equal(hx_http_call_run(c, &rq2, &rs, &e), HX_ETOOLARGE);
  hx_buf_free(&rs.body);
  hx_http_request rq3 = {.url = "http://127.0.0.1:1/x", .connect_timeout_ms = 500};
  assert_int_equal(hx_http_call_run(c, &rq3, &rs, &e), HX_EIO);
  assert_int_equal(rs.status, 0);
  hx_buf_free(&rs.body);
  hx_http_call_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fetch_collects),
      cmocka_unit_test(test_stream_chunks),
      cmocka_unit_test(test_timeouts),
      cmocka_unit_test(test_cancel_and_limits),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
