/* test_jsonrpc.c — JSON-RPC framing: the line reader (limits, CRLF, split
 * reads, over-long lines, EOF without newline), message classification and
 * the error each malformed message earns, and the encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acp/conn.h"
#include "acp/jsonrpc.h"

/* Writes `text` into a pipe (from a thread, in pieces of `piece` bytes, so
 * reads are split at awkward places) and returns the read end. */
typedef struct feeder {
  int fd;
  const char *text;
  size_t len, piece;
} feeder;

static void *feed_main(void *arg) {
  feeder *f = arg;
  for (size_t off = 0; off < f->len;) {
    size_t n = f->len - off < f->piece ? f->len - off : f->piece;
    ssize_t w = write(f->fd, f->text + off, n);
    if (w <= 0)
      break;
    off += (size_t)w;
  }
  close(f->fd);
  return NULL;
}

static int start_feed(pthread_t *t, feeder *f, const char *text, size_t len, size_t piece) {
  int p[2];
  assert_int_equal(pipe(p), 0);
  f->fd = p[1];
  f->text = text;
  f->len = len;
  f->piece = piece;
  assert_int_equal(pthread_create(t, NULL, feed_main, f), 0);
  return p[0];
}

static void test_line_reader_lines(void **state) {
  (void)state;
  const char text[] = "one\r\ntwo\n\nthree-no-newline";
  for (size_t piece = 1; piece <= sizeof text; piece += 3) {
    pthread_t t;
    feeder f;
    int fd = start_feed(&t, &f, text, strlen(text), piece);
    acp_line_reader r;
    acp_line_reader_init(&r, fd, 64);
    const char *line;
    size_t len;
    hx_err e;
    assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(line, "one", 3);
    assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(line, "two", 3);
    assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_OK);
    assert_int_equal(len, 0);
    assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_OK);
    assert_int_equal(len, strlen("three-no-newline"));
    assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_EIO);
    assert_string_equal(e.msg, "");
    acp_line_reader_free(&r);
    pthread_join(t, NULL);
    close(fd);
  }
}

static void test_line_reader_too_long(void **state) {
  (void)state;
  /* A line of 200 KiB (longer than the limit and than one read chunk),
   * between two good lines; then an over-long line cut off by EOF. */
  size_t big = 200 * 1024;
  size_t n = big + 64;
  char *text = malloc(n + big);
  size_t off = 0;
  off += (size_t)sprintf(text + off, "ok1\n");
  memset(text + off, 'x', big);
  off += big;
  off += (size_t)sprintf(text + off, "\nok2\n");
  memset(text + off, 'y', 5000);
  off += 5000;
  pthread_t t;
  feeder f;
  int fd = start_feed(&t, &f, text, off, 4096);
  acp_line_reader r;
  acp_line_reader_init(&r, fd, 1000);
  const char *line;
  size_t len;
  hx_err e;
  assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_OK);
  assert_memory_equal(line, "ok1", 3);
  assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_ETOOLARGE);
  assert_non_null(strstr(e.msg, "204800 bytes"));
  assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_OK);
  assert_int_equal(len, 3);
  assert_memory_equal(line, "ok2", 3);
  assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_ETOOLARGE);
  assert_non_null(strstr(e.msg, "5000 bytes"));
  assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_EIO);
  acp_line_reader_free(&r);
  pthread_join(t, NULL);
  close(fd);
  free(text);
}

static int parse(const char *s, acp_msg *m, json_t **id, hx_err *e) {
  return acp_jsonrpc_parse(s, strlen(s), 1 << 20, m, id, e);
}

static void test_parse_kinds(void **state) {
  (void)state;
  acp_msg m;
  json_t *id = NULL;
  hx_err e;
  assert_int_equal(
      parse("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"initialize\",\"params\":{}}", &m, &id, &e),
      0);
  assert_int_equal(m.kind, ACP_MSG_REQUEST);
  assert_string_equal(m.method, "initialize");
  assert_int_equal(json_integer_value(m.id), 7);
  assert_true(json_is_object(m.params));
  acp_msg_free(&m);

  assert_int_equal(
      parse("{\"jsonrpc\":\"2.0\",\"method\":\"session/cancel\",\"params\":{\"sessionId\":"
            "\"a\"}}",
            &m, &id, &e),
      0);
  assert_int_equal(m.kind, ACP_MSG_NOTIFICATION);
  assert_null(m.id);
  acp_msg_free(&m);

  assert_int_equal(parse("{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"result\":null}", &m, &id, &e), 0);
  assert_int_equal(m.kind, ACP_MSG_RESPONSE);
  acp_msg_free(&m);

  assert_int_equal(
      parse("{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32601,\"message\":\"x\"}}", &m, &id,
            &e),
      0);
  assert_int_equal(m.kind, ACP_MSG_RESPONSE);
  assert_non_null(m.error);
  acp_msg_free(&m);
}

static void expect_error(const char *s, int code, json_t *want_id) {
  acp_msg m;
  json_t *id = NULL;
  hx_err e;
  assert_int_equal(parse(s, &m, &id, &e), code);
  assert_non_null(id);
  assert_true(json_equal(id, want_id));
  assert_true(strlen(e.msg) > 0);
  json_decref(id);
  json_decref(want_id);
}

static void test_parse_errors(void **state) {
  (void)state;
  expect_error("not json", ACP_RPC_PARSE_ERROR, json_null());
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":1", ACP_RPC_PARSE_ERROR, json_null());
  expect_error("{\"a\":1,\"a\":2}", ACP_RPC_PARSE_ERROR, json_null());
  expect_error("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}]", ACP_RPC_INVALID_REQUEST,
               json_null());
  expect_error("42", ACP_RPC_INVALID_REQUEST, json_null());
  expect_error("{\"id\":5,\"method\":\"x\"}", ACP_RPC_INVALID_REQUEST, json_integer(5));
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"x\"}", ACP_RPC_INVALID_REQUEST,
               json_null());
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":\"k\",\"method\":5}", ACP_RPC_INVALID_REQUEST,
               json_string("k"));
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", ACP_RPC_INVALID_REQUEST,
               json_integer(1));
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":3}",
               ACP_RPC_INVALID_REQUEST, json_integer(1));
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":1}", ACP_RPC_INVALID_REQUEST, json_integer(1));
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"error\":{\"code\":1}}",
               ACP_RPC_INVALID_REQUEST, json_integer(1));
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"bad\"}", ACP_RPC_INVALID_REQUEST,
               json_integer(1));
  expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\\u0000b\"}", ACP_RPC_INVALID_REQUEST,
               json_integer(1));
  /* Size limit: a document over max_bytes is a parse error, not a crash. */
  acp_msg m;
  json_t *id = NULL;
  hx_err e;
  const char *doc = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"abcdefgh\"}";
  assert_int_equal(acp_jsonrpc_parse(doc, strlen(doc), 10, &m, &id, &e), ACP_RPC_PARSE_ERROR);
  assert_non_null(strstr(e.msg, "limit"));
  json_decref(id);
}

static void test_encode_one_line(void **state) {
  (void)state;
  json_t *params = json_pack("{s:s}", "text", "two\nlines and \"quotes\" and \xc3\xa9");
  json_t *n = acp_jsonrpc_notification("session/update", params);
  hx_buf b;
  hx_buf_init(&b, 1 << 16);
  assert_int_equal(acp_jsonrpc_encode(n, &b), HX_OK);
  assert_int_equal(b.data[b.len - 1], '\n');
  assert_null(memchr(b.data, '\n', b.len - 1)); /* exactly one line */
  acp_msg m;
  json_t *id = NULL;
  hx_err e;
  assert_int_equal(acp_jsonrpc_parse(b.data, b.len - 1, 1 << 20, &m, &id, &e), 0);
  assert_true(json_equal(m.params, params));
  acp_msg_free(&m);
  /* An encode that does not fit leaves the buffer as it was. */
  hx_buf small;
  hx_buf_init(&small, 8);
  hx_buf_append_str(&small, "abc");
  assert_int_not_equal(acp_jsonrpc_encode(n, &small), HX_OK);
  assert_int_equal(small.len, 3);
  assert_string_equal(small.data, "abc");
  hx_buf_free(&small);
  hx_buf_free(&b);
  json_decref(n);
  json_decref(params);

  json_t *idv = json_string("req-1");
  json_t *r = acp_jsonrpc_error(idv, ACP_RPC_METHOD_NOT_FOUND, "nope");
  assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "error"), "code")),
                   -32601);
  assert_true(json_equal(json_object_get(r, "id"), idv));
  json_decref(r);
  json_decref(idv);
}

static void test_utf8_scrub(void **state) {
  (void)state;
  char ok[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
  char copy[sizeof ok];
  memcpy(copy, ok, sizeof ok);
  acp_utf8_scrub(copy);
  assert_string_equal(copy, ok);
  char bad[] = "a\xff"
               "b\xc3"
               "c\xe0\x80\x80"
               "d\xed\xa0\x80"
               "e\xf4\x90\x80\x80"
               "f\xc3";
  acp_utf8_scrub(bad);
  assert_string_equal(bad, "a?b?c???d???e????f?");
  /* An error message quoting invalid bytes still makes a valid reply. */
  json_t *r = acp_jsonrpc_error(NULL, ACP_RPC_PARSE_ERROR, "near '\xff\xfe'");
  assert_non_null(r);
  assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                      "near '?"
                      "?'");
  json_decref(r);
}

/* conn: a call blocks until the reader delivers its response; a cancel flag
 * ends the wait; closing fails pending calls. */
typedef struct call_arg {
  acp_conn *c;
  atomic_bool *cancel;
  hx_code rc;
  json_t *result;
} call_arg;

static void *call_main(void *p) {
  call_arg *a = p;
  hx_err e;
  a->rc = acp_conn_call(a->c, "fs/read_text_file", json_object(), a->cancel, &a->result, &e);
  return NULL;
}

static json_int_t read_request_id(int fd) {
  acp_line_reader r;
  acp_line_reader_init(&r, fd, 1 << 16);
  const char *line;
  size_t len;
  hx_err e;
  assert_int_equal(acp_line_reader_next(&r, &line, &len, &e), HX_OK);
  acp_msg m;
  json_t *id = NULL;
  assert_int_equal(acp_jsonrpc_parse(line, len, 1 << 20, &m, &id, &e), 0);
  assert_int_equal(m.kind, ACP_MSG_REQUEST);
  assert_string_equal(m.method, "fs/read_text_file");
  json_int_t v = json_integer_value(m.id);
  acp_msg_free(&m);
  acp_line_reader_free(&r);
  return v;
}

static void test_conn_call(void **state) {
  (void)state;
  int p[2];
  assert_int_equal(pipe(p), 0);
  acp_conn *c = acp_conn_new(p[1]);
  atomic_bool cancel;
  atomic_init(&cancel, false);

  call_arg a = {.c = c, .cancel = &cancel};
  pthread_t t;
  pthread_create(&t, NULL, call_main, &a);
  json_int_t id = read_request_id(p[0]);
  char resp[128];
  snprintf(resp, sizeof resp, "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":{\"content\":\"hi\"}}",
           (long long)id);
  acp_msg m;
  json_t *eid = NULL;
  hx_err e;
  assert_int_equal(acp_jsonrpc_parse(resp, strlen(resp), 1 << 20, &m, &eid, &e), 0);
  assert_true(acp_conn_deliver(c, &m));
  pthread_join(t, NULL);
  assert_int_equal(a.rc, HX_OK);
  assert_string_equal(json_string_value(json_object_get(a.result, "content")), "hi");
  json_decref(a.result);
  assert_false(acp_conn_deliver(c, &m)); /* nobody waits any more */
  acp_msg_free(&m);

  call_arg b = {.c = c, .cancel = &cancel};
  pthread_create(&t, NULL, call_main, &b);
  (void)read_request_id(p[0]);
  atomic_store(&cancel, true);
  acp_conn_wake(c);
  pthread_join(t, NULL);
  assert_int_equal(b.rc, HX_ECANCELLED);

  atomic_store(&cancel, false);
  call_arg d = {.c = c, .cancel = &cancel};
  pthread_create(&t, NULL, call_main, &d);
  (void)read_request_id(p[0]);
  acp_conn_close(c);
  pthread_join(t, NULL);
  assert_int_equal(d.rc, HX_EIO);

  acp_conn_free(c);
  close(p[0]);
  close(p[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_line_reader_lines), cmocka_unit_test(test_line_reader_too_long),
      cmocka_unit_test(test_parse_kinds),       cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_encode_one_line),   cmocka_unit_test(test_conn_call),
      cmocka_unit_test(test_utf8_scrub),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
