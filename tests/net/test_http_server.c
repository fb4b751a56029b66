/* test_http_server.c — the libmicrohttpd wrapper over real loopback sockets:
 * routing, body/header limits, slow clients, deferred and streamed responses,
 * client disconnect detection, graceful shutdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/time.h"
#include "net/http_server.h"

/* ---- a tiny blocking client ---- */

static int client_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

static void send_all(int fd, const char *s, size_t n) {
  while (n) {
    ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
    if (k <= 0)
      return;
    s += k;
    n -= (size_t)k;
  }
}

/* Reads until the peer closes, timeout_ms passes, or `until` appears. */
static size_t recv_until(int fd, char *out, size_t cap, const char *until, int timeout_ms) {
  size_t n = 0;
  uint64_t end = hx_time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
  out[0] = '\0';
  while (n + 1 < cap) {
    uint64_t now = hx_time_mono_ns();
    if (now >= end)
      break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)((end - now) / 1000000ull) + 1) <= 0)
      break;
    ssize_t k = recv(fd, out + n, cap - 1 - n, 0);
    if (k <= 0)
      break;
    n += (size_t)k;
    out[n] = '\0';
    if (until && strstr(out, until))
      break;
  }
  return n;
}

static int status_of(const char *resp) {
  int st = 0;
  if (sscanf(resp, "HTTP/1.%*d %d", &st) != 1)
    return -1;
  return st;
}

/* ---- handlers ---- */

static void h_echo(hx_http_req *req, void *ctx) {
  (void)ctx;
  hx_slice b = hx_http_req_body(req);
  const char *q = hx_http_req_query(req, "x");
  const char *h = hx_http_req_header(req, "x-test");
  char pre[128];
  snprintf(pre, sizeof pre, "q=%s h=%s n=%zu:", q ? q : "-", h ? h : "-", b.len);
  char *out = malloc(strlen(pre) + b.len + 1);
  memcpy(out, pre, strlen(pre));
  memcpy(out + strlen(pre), b.ptr, b.len);
  hx_http_respond(req, 200, "text/plain", out, strlen(pre) + b.len, NULL, 0);
  free(out);
}

static void *deferred_main(void *arg) {
  hx_http_req *req = arg;
  hx_time_sleep_ms(100);
  hx_http_respond_json(req, 201, json_pack("{s:s}", "late", "yes"));
  return NULL;
}

static void h_deferred(hx_http_req *req, void *ctx) {
  (void)ctx;
  pthread_t t;
  pthread_create(&t, NULL, deferred_main, req);
  pthread_detach(t);
}

static void h_error(hx_http_req *req, void *ctx) {
  (void)ctx;
  hx_http_respond_error(req, 429, "rate_limit_error", "queue_full", NULL, 3, "queue is full (%d)",
                        7);
}

typedef struct stream_ctx {
  int n_events;
  int delay_ms;
  atomic_int cancel_calls;
  atomic_int write_failed_at; /* event index of the first failed write, -1 none */
  atomic_bool done;
  atomic_uint_fast64_t cancel_seen_ns;
} stream_ctx;

static void on_cancel(void *ctx) {
  stream_ctx *s = ctx;
  atomic_fetch_add(&s->cancel_calls, 1);
  if (!atomic_load(&s->cancel_seen_ns))
    atomic_store(&s->cancel_seen_ns, hx_time_mono_ns());
}

static void *stream_main(void *arg) {
  hx_http_req *req = arg;
  stream_ctx *s = NULL;
  sscanf(hx_http_req_query(req, "ctx"), "%p", (void **)&s);
  hx_http_req_on_cancel(req, on_cancel, s);
  hx_http_stream_begin(req, 200, "text/event-stream", NULL, 0);
  for (int i = 0; i < s->n_events; i++) {
    json_t *j = json_pack("{s:i}", "i", i);
    hx_code rc = hx_http_stream_write_sse_json(req, j, 2000);
    json_decref(j);
    if (rc != HX_OK) {
      atomic_store(&s->write_failed_at, i);
      break;
    }
    if (s->delay_ms)
      hx_time_sleep_ms((uint64_t)s->delay_ms);
  }
  if (atomic_load(&s->write_failed_at) < 0)
    hx_http_stream_write(req, "data: [DONE]\n\n", 14, 2000);
  hx_http_req_on_cancel(req, NULL, NULL);
  hx_http_stream_end(req);
  atomic_store(&s->done, true);
  return NULL;
}

static void h_stream(hx_http_req *req, void *ctx) {
  (void)ctx;
  pthread_t t;
  pthread_create(&t, NULL, stream_main, req);
  pthread_detach(t);
}

static hx_http_server *start(hx_http_server_config cfg) {
  cfg.host = "127.0.0.1";
  hx_http_server *srv = hx_http_server_create(&cfg);
  assert_non_null(srv);
  hx_err err = {0};
  assert_int_equal(hx_http_server_route(srv, "POST", "/echo", h_echo, NULL, &err), HX_OK);
  assert_int_equal(hx_http_server_route(srv, "GET", "/echo", h_echo, NULL, &err), HX_OK);
  assert_int_equal(hx_http_server_route(srv, "GET", "/deferred", h_deferred, NULL, &err), HX_OK);
  assert_int_equal(hx_http_server_route(srv, "GET", "/error", h_error, NULL, &err), HX_OK);
  assert_int_equal(hx_http_server_route(srv, "GET", "/stream", h_stream, NULL, &err), HX_OK);
  assert_int_equal(hx_http_server_start(srv, &err), HX_OK);
  assert_true(hx_http_server_port(srv) > 0);
  return srv;
}

static char buf[1 << 20];

static void test_listen_parse(void **state) {
  (void)state;
  char host[64];
  uint16_t port;
  assert_int_equal(hx_http_listen_parse("0.0.0.0:13131", host, sizeof host, &port, NULL), HX_OK);
  assert_string_equal(host, "0.0.0.0");
  assert_int_equal(port, 13131);
  assert_int_equal(hx_http_listen_parse("[::1]:80", host, sizeof host, &port, NULL), HX_OK);
  assert_string_equal(host, "::1");
  assert_int_equal(hx_http_listen_parse(":9", host, sizeof host, &port, NULL), HX_OK);
  assert_string_equal(host, "0.0.0.0");
  hx_err err = {0};
  assert_int_equal(hx_http_listen_parse("localhost", host, sizeof host, &port, &err), HX_EINVAL);
  assert_int_equal(hx_http_listen_parse("h:70000", host, sizeof host, &port, &err), HX_EINVAL);
  assert_non_null(strstr(err.msg, "h:70000"));
}

static void test_routes_and_echo(void **state) {
  (void)state;
  hx_http_server *srv = start((hx_http_server_config){0});
  uint16_t port = hx_http_server_port(srv);
  int fd = client_connect(port);
  const char *r = "POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nX-Test: yes\r\nX-Request-Id: abc-1\r\n"
                  "Content-Length: 5\r\n\r\nhello";
  send_all(fd, r, strlen(r));
  recv_until(fd, buf, sizeof buf, "hello", 2000);
  assert_int_equal(status_of(buf), 200);
  assert_non_null(strstr(buf, "q=1 h=yes n=5:hello"));
  assert_non_null(strstr(buf, "X-Request-Id: abc-1"));
  /* keep-alive: a second request on the same connection */
  r = "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";
  send_all(fd, r, strlen(r));
  recv_until(fd, buf, sizeof buf, "}}", 2000);
  assert_int_equal(status_of(buf), 404);
  assert_non_null(strstr(buf, "\"type\":\"invalid_request_error\""));
  assert_non_null(strstr(buf, "X-Request-Id: req-"));
  r = "DELETE /echo HTTP/1.1\r\nHost: a\r\n\r\n";
  send_all(fd, r, strlen(r));
  recv_until(fd, buf, sizeof buf, "}}", 2000);
  assert_int_equal(status_of(buf), 405);
  close(fd);

  fd = client_connect(port);
  r = "GET /deferred HTTP/1.1\r\nHost: a\r\n\r\n";
  send_all(fd, r, strlen(r));
  recv_until(fd, buf, sizeof buf, "}", 3000);
  assert_int_equal(status_of(buf), 201);
  assert_non_null(strstr(buf, "{\"late\":\"yes\"}"));
  close(fd);

  fd = client_connect(port);
  r = "GET /error HTTP/1.1\r\nHost: a\r\n\r\n";
  send_all(fd, r, strlen(r));
  recv_until(fd, buf, sizeof buf, "}}", 2000);
  assert_int_equal(status_of(buf), 429);
  assert_non_null(strstr(buf, "Retry-After: 3"));
  assert_non_null(strstr(buf, "\"message\":\"queue is full (7)\""));
  assert_non_null(strstr(buf, "\"code\":\"queue_full\""));
  close(fd);
  assert_int_equal(hx_http_server_inflight(srv), 0);
  hx_http_server_free(srv);
}

static void test_body_limit(void **state) {
  (void)state;
  hx_http_server *srv = start((hx_http_server_config){.body_max_bytes = 1000});
  uint16_t port = hx_http_server_port(srv);
  /* Content-Length over the limit: 413 at once, the body is never sent. */
  int fd = client_connect(port);
  const char *r = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n";
  send_all(fd, r, strlen(r));
  uint64_t t0 = hx_time_mono_ns();
  recv_until(fd, buf, sizeof buf, "}}", 2000);
  assert_int_equal(status_of(buf), 413);
  assert_true(hx_time_mono_ns() - t0 < 1000000000ull);
  assert_non_null(strstr(buf, "body_too_large"));
  close(fd);
  /* At the limit: fine. */
  fd = client_connect(port);
  char *body = malloc(2001);
  memset(body, 'a', 2000);
  body[2000] = 0;
  snprintf(buf, sizeof buf, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
  send_all(fd, buf, strlen(buf));
  send_all(fd, body, 1000);
  recv_until(fd, buf, sizeof buf, "aaaa", 2000);
  assert_int_equal(status_of(buf), 200);
  close(fd);
  /* Chunked upload past the limit: counted while receiving, refused. */
  fd = client_connect(port);
  r = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n";
  send_all(fd, r, strlen(r));
  send_all(fd, body, 2000);
  send_all(fd, "\r\n0\r\n\r\n", 7);
  size_t n = recv_until(fd, buf, sizeof buf, "}}", 2000);
  assert_true(n == 0 || status_of(buf) == 413); /* 413, or the connection dropped */
  close(fd);
  free(body);
  hx_http_server_free(srv);
}

static void test_header_limit_and_slow_client(void **state) {
  (void)state;
  hx_http_server *srv =
      start((hx_http_server_config){.header_max_bytes = 4096, .request_read_ms = 300});
  uint16_t port = hx_http_server_port(srv);
  int fd = client_connect(port);
  char *big = malloc(20000);
  memset(big, 'b', 19999);
  big[19999] = 0;
  snprintf(buf, sizeof buf, "GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: %s\r\n\r\n", big);
  send_all(fd, buf, strlen(buf));
  recv_until(fd, buf, sizeof buf, NULL, 2000);
  assert_int_equal(status_of(buf), 431);
  close(fd);
  free(big);
  /* Slowloris: headers trickle in; closed after the read deadline. */
  fd = client_connect(port);
  send_all(fd, "GET /echo HTTP/1.1\r\n", 20);
  uint64_t t0 = hx_time_mono_ns();
  for (int i = 0; i < 20; i++) {
    send_all(fd, "X-A: b\r\n", 8);
    hx_time_sleep_ms(50);
  }
  size_t n = recv_until(fd, buf, sizeof buf, NULL, 3000);
  (void)n;
  double ms = hx_time_ns_to_ms(hx_time_mono_ns() - t0);
  assert_true(ms < 2500); /* closed, not served */
  assert_null(strstr(buf, "200 OK"));
  close(fd);
  hx_http_server_free(srv);
}

static void test_stream(void **state) {
  (void)state;
  hx_http_server *srv = start((hx_http_server_config){.stream_queue_max_bytes = 256});
  uint16_t port = hx_http_server_port(srv);
  stream_ctx s = {.n_events = 200};
  atomic_init(&s.write_failed_at, -1);
  int fd = client_connect(port);
  snprintf(buf, sizeof buf, "GET /stream?ctx=%p HTTP/1.1\r\nHost: a\r\n\r\n", (void *)&s);
  send_all(fd, buf, strlen(buf));
  recv_until(fd, buf, sizeof buf, "0\r\n\r\n", 5000);
  assert_int_equal(status_of(buf), 200);
  assert_non_null(strstr(buf, "Content-Type: text/event-stream"));
  assert_non_null(strstr(buf, "chunked"));
  assert_non_null(strstr(buf, "data: {\"i\":0}\n\n"));
  assert_non_null(strstr(buf, "data: {\"i\":199}\n\n"));
  assert_non_null(strstr(buf, "data: [DONE]"));
  for (int i = 0; i < 100 && !atomic_load(&s.done); i++)
    hx_time_sleep_ms(10);
  assert_true(atomic_load(&s.done));
  assert_int_equal(atomic_load(&s.cancel_calls), 0);
  assert_int_equal(atomic_load(&s.write_failed_at), -1);
  close(fd);
  hx_http_server_free(srv);
}

static void test_stream_disconnect(void **state) {
  (void)state;
  hx_http_server *srv = start((hx_http_server_config){0});
  uint16_t port = hx_http_server_port(srv);
  stream_ctx s = {.n_events = 100000, .delay_ms = 5};
  atomic_init(&s.write_failed_at, -1);
  int fd = client_connect(port);
  snprintf(buf, sizeof buf, "GET /stream?ctx=%p HTTP/1.1\r\nHost: a\r\n\r\n", (void *)&s);
  send_all(fd, buf, strlen(buf));
  recv_until(fd, buf, sizeof buf, "\"i\":3}", 3000);
  assert_non_null(strstr(buf, "\"i\":3}"));
  uint64_t t_close = hx_time_mono_ns();
  close(fd);
  for (int i = 0; i < 200 && !atomic_load(&s.done); i++)
    hx_time_sleep_ms(5);
  assert_true(atomic_load(&s.done));
  assert_int_equal(atomic_load(&s.cancel_calls), 1);
  assert_true(atomic_load(&s.write_failed_at) >= 3);
  double ms = hx_time_ns_to_ms(atomic_load(&s.cancel_seen_ns) - t_close);
  assert_true(ms < 200); /* the monitor polls every 20 ms */
  assert_int_equal(hx_http_server_inflight(srv), 0);
  hx_http_server_free(srv);
}

static void test_shutdown_cancels_inflight(void **state) {
  (void)state;
  hx_http_server *srv = start((hx_http_server_config){0});
  uint16_t port = hx_http_server_port(srv);
  stream_ctx s = {.n_events = 100000, .delay_ms = 5};
  atomic_init(&s.write_failed_at, -1);
  int fd = client_connect(port);
  snprintf(buf, sizeof buf, "GET /stream?ctx=%p HTTP/1.1\r\nHost: a\r\n\r\n", (void *)&s);
  send_all(fd, buf, strlen(buf));
  recv_until(fd, buf, sizeof buf, "\"i\":2}", 3000);
  assert_int_equal(hx_http_server_inflight(srv), 1);
  uint64_t t0 = hx_time_mono_ns();
  unsigned n = hx_http_server_shutdown(srv, 100, 2000);
  assert_int_equal(n, 1);
  assert_true(hx_time_ns_to_ms(hx_time_mono_ns() - t0) < 2000);
  for (int i = 0; i < 200 && !atomic_load(&s.done); i++)
    hx_time_sleep_ms(5);
  assert_true(atomic_load(&s.done));
  assert_int_equal(atomic_load(&s.cancel_calls), 1);
  /* no longer accepting */
  int c = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_true(connect(c, (struct sockaddr *)&a, sizeof a) != 0);
  close(c);
  close(fd);
  hx_http_server_free(srv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_listen_parse),
      cmocka_unit_test(test_routes_and_echo),
      cmocka_unit_test(test_body_limit),
      cmocka_unit_test(test_header_limit_and_slow_client),
      cmocka_unit_test(test_stream),
      cmocka_unit_test(test_stream_disconnect),
      cmocka_unit_test(test_shutdown_cancels_inflight),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
