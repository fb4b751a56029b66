/* test_stream.c — the OpenAI stream accumulator (content, reasoning, tool
 * call deltas split across chunks, finish reason, usage, bounds), session
 * persistence and ids, config flags, and tool path resolution. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acp/config.h"
#include "acp/session.h"
#include "acp/tools.h"
#include "acp/upstream.h"

typedef struct seen {
  char content[256];
  char reasoning[256];
  int content_calls;
} seen;

static void on_c(void *ud, const char *t, size_t n) {
  seen *s = ud;
  strncat(s->content, t, n);
  s->content_calls++;
}
static void on_r(void *ud, const char *t, size_t n) { strncat(((seen *)ud)->reasoning, t, n); }

static hx_code feed(acp_stream *s, const char *data) {
  hx_err e;
  return acp_stream_accept(s, data, strlen(data), &e);
}

static void test_stream_text_and_usage(void **state) {
  (void)state;
  seen sn = {0};
  acp_stream s;
  acp_stream_init(&s, on_c, on_r, &sn);
  assert_int_equal(
      feed(&s, "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":"
               "\"hmm \"}}]}"),
      HX_OK);
  assert_int_equal(feed(&s, "{\"choices\":[{\"delta\":{\"reasoning_content\":\"ok\"}}]}"), HX_OK);
  assert_int_equal(feed(&s, "{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}"), HX_OK);
  assert_int_equal(
      feed(&s, "{\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}"), HX_OK);
  assert_int_equal(feed(&s, "{\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}"), HX_OK);
  assert_int_equal(feed(&s,
                        "{\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,"
                        "\"completion_tokens_details\":{\"reasoning_tokens\":2}}}"),
                   HX_OK);
  assert_int_equal(feed(&s, " [DONE] "), HX_OK);
  assert_string_equal(sn.content, "Hello");
  assert_string_equal(sn.reasoning, "hmm ok");
  assert_int_equal(sn.content_calls, 2);
  assert_string_equal(s.finish_reason, "length");
  assert_true(s.done && s.has_usage);
  assert_int_equal(s.prompt_tokens, 9);
  assert_int_equal(s.completion_tokens, 4);
  assert_int_equal(s.reasoning_tokens, 2);
  json_t *m = acp_stream_message(&s);
  assert_string_equal(json_string_value(json_object_get(m, "content")), "Hello");
  assert_string_equal(json_string_value(json_object_get(m, "reasoning_content")), "hmm ok");
  assert_null(json_object_get(m, "tool_calls"));
  json_decref(m);
  acp_stream_free(&s);
}

static void test_stream_tool_calls(void **state) {
  (void)state;
  acp_stream s;
  acp_stream_init(&s, NULL, NULL, NULL);
  assert_int_equal(feed(&s, "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\","
                            "\"type\":\"function\",\"function\":{\"name\":\"read_file\","
                            "\"arguments\":\"\"}}]}}]}"),
                   HX_OK);
  assert_int_equal(feed(&s, "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
                            "\"arguments\":\"{\\\"pa\"}}]}}]}"),
                   HX_OK);
  assert_int_equal(feed(&s,
                        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\","
                        "\"function\":{\"name\":\"run_command\",\"arguments\":\"{}\"}},"
                        "{\"index\":0,\"function\":{\"arguments\":\"th\\\":\\\"x\\\"}\"}}]}}]}"),
                   HX_OK);
  assert_int_equal(feed(&s, "{\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}"),
                   HX_OK);
  assert_int_equal(s.tool_call_count, 2);
  assert_string_equal(s.tool_calls[0].name, "read_file");
  assert_string_equal(s.tool_calls[0].arguments.data, "{\"path\":\"x\"}");
  assert_string_equal(s.tool_calls[1].id, "b");
  json_t *m = acp_stream_message(&s);
  json_t *tcs = json_object_get(m, "tool_calls");
  assert_int_equal(json_array_size(tcs), 2);
  assert_string_equal(json_string_value(json_object_get(
                          json_object_get(json_array_get(tcs, 1), "function"), "name")),
                      "run_command");
  json_decref(m);

  /* Bounds and malformed chunks fail with a message instead of crashing. */
  hx_err e;
  const char *bad_idx = "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":99}]}}]}";
  assert_int_equal(acp_stream_accept(&s, bad_idx, strlen(bad_idx), &e), HX_ETOOLARGE);
  const char *neg = "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":-1}]}}]}";
  assert_int_equal(acp_stream_accept(&s, neg, strlen(neg), &e), HX_ETOOLARGE);
  assert_int_equal(feed(&s, "{\"choices\":[{\"delta\":{\"content\":5}}]}"), HX_EINVAL);
  assert_int_equal(feed(&s, "{\"choices\":{}}"), HX_EINVAL);
  assert_int_equal(feed(&s, "{not json"), HX_EINVAL);
  const char *err = "{\"error\":{\"message\":\"model exploded\"}}";
  assert_int_equal(acp_stream_accept(&s, err, strlen(err), &e), HX_EIO);
  assert_non_null(strstr(e.msg, "model exploded"));
  char name[400] =
      "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":2,\"function\":{\"name\":\"";
  memset(name + strlen(name), 'n', 200);
  strcat(name, "\"}}]}}]}");
  assert_int_equal(acp_stream_accept(&s, name, strlen(name), &e), HX_ETOOLARGE);
  acp_stream_free(&s);
}

static void test_session_roundtrip(void **state) {
  (void)state;
  char dir[] = "/tmp/acp-test-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char sub[256];
  snprintf(sub, sizeof sub, "%s/a/b", dir);
  hx_err e;
  acp_session *s = acp_session_new("/work", &e);
  acp_session *s2 = acp_session_new("/work", &e);
  assert_true(acp_session_id_valid(s->id));
  assert_string_not_equal(s->id, s2->id);
  json_array_append_new(s->messages, json_pack("{s:s, s:s}", "role", "user", "content", "hi"));
  snprintf(s->mode, sizeof s->mode, "read_only");
  assert_int_equal(acp_session_save(s, sub, &e), HX_OK);
  acp_session *l = acp_session_load(sub, s->id, &e);
  assert_non_null(l);
  assert_string_equal(l->cwd, "/work");
  assert_string_equal(l->mode, "read_only");
  assert_true(json_equal(l->messages, s->messages));
  acp_session_free(l);
  assert_null(acp_session_load(sub, s2->id, &e));
  assert_int_equal(e.code, HX_ENOTFOUND);
  assert_null(acp_session_load(sub, "../../etc/passwd", &e));
  assert_false(acp_session_id_valid("ABCDEF0123456789abcdef0123456789"));
  assert_false(acp_session_id_valid("0123"));
  /* A corrupt file is a format error naming the file. */
  char path[512];
  snprintf(path, sizeof path, "%s/%s.json", sub, s2->id);
  FILE *f = fopen(path, "w");
  fputs("{\"cwd\": 3}", f);
  fclose(f);
  assert_null(acp_session_load(sub, s2->id, &e));
  assert_int_equal(e.code, HX_EFORMAT);
  assert_non_null(strstr(e.msg, s2->id));
  unlink(path);
  snprintf(path, sizeof path, "%s/%s.json", sub, s->id);
  unlink(path);
  snprintf(path, sizeof path, "%s/a/b", dir);
  rmdir(path);
  snprintf(path, sizeof path, "%s/a", dir);
  rmdir(path);
  rmdir(dir);
  acp_session_free(s);
  acp_session_free(s2);
}

static void test_config_flags(void **state) {
  (void)state;
  setenv("HOME", "/nonexistent-home", 1);
  unsetenv("XDG_CONFIG_HOME");
  acp_config c;
  acp_config_action act;
  hx_err e;
  acp_config_init(&c);
  char *argv1[] = {"helexa-acp",    "--endpoint", "http://h:1/v1",       "--model=m1",
                   "--api-key-env", "K",          "--max-turn-requests", "5"};
  assert_int_equal(acp_config_load(&c, 8, argv1, &act, &e), HX_OK);
  assert_int_equal(act, ACP_CONFIG_RUN);
  assert_string_equal(c.endpoint, "http://h:1/v1");
  assert_string_equal(c.model, "m1");
  assert_string_equal(c.api_key_env, "K");
  assert_int_equal(c.max_turn_requests, 5);
  acp_config_free(&c);

  acp_config_init(&c);
  assert_string_equal(c.endpoint, ACP_DEFAULT_ENDPOINT);
  char *argv2[] = {"helexa-acp", "--endpoint", "ftp://x"};
  assert_int_equal(acp_config_load(&c, 3, argv2, &act, &e), HX_EINVAL);
  assert_non_null(strstr(e.msg, "--endpoint"));
  char *argv3[] = {"helexa-acp", "--bogus"};
  assert_int_equal(acp_config_load(&c, 2, argv3, &act, &e), HX_EINVAL);
  assert_non_null(strstr(e.msg, "--bogus"));
  char *argv4[] = {"helexa-acp", "--model"};
  assert_int_equal(acp_config_load(&c, 2, argv4, &act, &e), HX_EINVAL);
  char *argv5[] = {"helexa-acp", "--max-turn-requests", "0"};
  assert_int_equal(acp_config_load(&c, 3, argv5, &act, &e), HX_EINVAL);
  char *argv6[] = {"helexa-acp", "--config", "/nonexistent/acp.toml"};
  assert_int_equal(acp_config_load(&c, 3, argv6, &act, &e), HX_EIO);
  assert_non_null(strstr(e.msg, "/nonexistent/acp.toml"));
  acp_config_free(&c);
}

static void test_config_toml(void **state) {
  (void)state;
  acp_config c;
  hx_err e;
  acp_config_init(&c);
  const char *good = "endpoint = \"http://gw:31313/v1\"\nmodel = \"qwen3-8b\"\n"
                     "api_key_env = \"HELEXA_KEY\"\nmax_turn_requests = 7\n"
                     "context_window = 40960\nlog_level = \"debug\"\n"
                     "system_prompt = \"Be brief.\"\n";
  assert_int_equal(acp_config_apply_toml(&c, good, strlen(good), "acp.toml", &e), HX_OK);
  assert_string_equal(c.endpoint, "http://gw:31313/v1");
  assert_string_equal(c.model, "qwen3-8b");
  assert_string_equal(c.api_key_env, "HELEXA_KEY");
  assert_int_equal(c.max_turn_requests, 7);
  assert_int_equal(c.context_window, 40960);
  assert_int_equal(c.log_level, HX_LOG_DEBUG);
  assert_string_equal(c.system_prompt, "Be brief.");
  /* Every problem is reported with file and line. */
  const char *bad = "model = 3\nbogus = 1\nmax_turn_requests = 0\nendpoint = \"gopher://x\"\n";
  assert_int_equal(acp_config_apply_toml(&c, bad, strlen(bad), "acp.toml", &e), HX_EINVAL);
  assert_non_null(strstr(e.msg, "acp.toml:1:"));
  assert_non_null(strstr(e.msg, "bogus"));
  assert_non_null(strstr(e.msg, "max_turn_requests"));
  assert_non_null(strstr(e.msg, "endpoint"));
  const char *syntax = "model = \n";
  assert_int_equal(acp_config_apply_toml(&c, syntax, strlen(syntax), "acp.toml", &e), HX_EINVAL);
  assert_non_null(strstr(e.msg, "acp.toml"));
  acp_config_free(&c);

  /* The file under $XDG_CONFIG_HOME is read; flags override it. */
  char dir[] = "/tmp/acp-cfg-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/helexa", dir);
  assert_int_equal(mkdir(path, 0700), 0);
  snprintf(path, sizeof path, "%s/helexa/acp.toml", dir);
  FILE *f = fopen(path, "w");
  fputs("model = \"from-file\"\nendpoint = \"http://file/v1\"\n", f);
  fclose(f);
  setenv("XDG_CONFIG_HOME", dir, 1);
  acp_config_init(&c);
  acp_config_action act;
  char *argv[] = {"helexa-acp", "--model", "from-flag"};
  assert_int_equal(acp_config_load(&c, 3, argv, &act, &e), HX_OK);
  assert_string_equal(c.model, "from-flag");
  assert_string_equal(c.endpoint, "http://file/v1");
  acp_config_free(&c);
  unsetenv("XDG_CONFIG_HOME");
  unlink(path);
  snprintf(path, sizeof path, "%s/helexa", dir);
  rmdir(path);
  rmdir(dir);
}

static void test_path_resolve(void **state) {
  (void)state;
  char *p = acp_tool_path_resolve("/w", "a/b.c");
  assert_string_equal(p, "/w/a/b.c");
  free(p);
  p = acp_tool_path_resolve("/w/", "./x");
  assert_string_equal(p, "/w/x");
  free(p);
  p = acp_tool_path_resolve("/w", "/abs");
  assert_string_equal(p, "/abs");
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stream_text_and_usage), cmocka_unit_test(test_stream_tool_calls),
      cmocka_unit_test(test_session_roundtrip),     cmocka_unit_test(test_config_flags),
      cmocka_unit_test(test_config_toml),           cmocka_unit_test(test_path_resolve),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
