/* test_anthropic.c — Anthropic ⇄ OpenAI translation on handwritten
 * payloads: request mapping (system folding, blocks, tools, tool_choice,
 * thinking, stop sequences, unknown fields), the streamed event sequence,
 * stop-sequence holdback across chunks, tool argument streaming, usage and
 * errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "api/anthropic.h"
#include "base/json.h"

static json_t *J(const char *s) {
  json_error_t e;
  json_t *j = json_loads(s, 0, &e);
  if (!j)
    fail_msg("bad test JSON: %s", e.text);
  return j;
}

static void assert_json_eq(const json_t *got, const char *want) {
  json_t *w = J(want);
  if (!json_equal(got, w)) {
    char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char *ws = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS);
    fail_msg("got  %s\nwant %s", g, ws);
  }
  json_decref(w);
}

static void test_request_translate(void **state) {
  (void)state;
  json_t *req = J(
      "{\"model\":\"m\",\"max_tokens\":100,\"stream\":true,"
      "\"system\":[{\"type\":\"text\",\"text\":\"S1\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
      "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
      "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\","
      "\"data\":\"QUJD\"}}]},"
      "{\"role\":\"system\",\"content\":\"S2\"},"
      "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"t\","
      "\"signature\":\"sig\"},{\"type\":\"text\",\"text\":\"ok\"},{\"type\":\"tool_use\","
      "\"id\":\"tu1\",\"name\":\"f\",\"input\":{\"x\":1}}]},"
      "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"tu1\","
      "\"content\":\"res\",\"is_error\":true},{\"type\":\"text\",\"text\":\"go\"}]}],"
      "\"tools\":[{\"name\":\"f\",\"description\":\"d\",\"input_schema\":{\"type\":\"object\"},"
      "\"defer_loading\":true},{\"type\":\"web_search_20250305\",\"name\":\"web\"}],"
      "\"tool_choice\":{\"type\":\"tool\",\"name\":\"f\",\"disable_parallel_tool_use\":true},"
      "\"stop_sequences\":[\"END\"],\"thinking\":{\"type\":\"adaptive\"},\"top_k\":5,"
      "\"metadata\":{\"user_id\":\"u\"},\"output_config\":{\"effort\":\"high\"}}");
  json_t *out = NULL;
  api_anth_info info;
  hx_err err = {0};
  assert_int_equal(api_anth_request_translate(req, &out, &info, &err), HX_OK);
  assert_string_equal(info.model, "m");
  assert_true(info.stream);
  assert_int_equal(info.n_stop, 1);
  assert_string_equal(info.stop[0], "END");
  assert_true(info.thinking_set && info.thinking);
  assert_json_eq(
      out,
      "{\"model\":\"m\",\"max_tokens\":100,\"stream\":true,\"stream_options\":{\"include_usage\":"
      "true},\"messages\":[{\"role\":\"system\",\"content\":\"S1\\n\\nS2\"},"
      "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image_url\","
      "\"image_url\":{\"url\":\"data:image/png;base64,QUJD\"}}]},"
      "{\"role\":\"assistant\",\"content\":\"ok\",\"reasoning_content\":\"t\",\"tool_calls\":[{"
      "\"id\":\"tu1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
      "\"{\\\"x\\\":1}\"}}]},"
      "{\"role\":\"tool\",\"tool_call_id\":\"tu1\",\"content\":\"Error: res\"},"
      "{\"role\":\"user\",\"content\":\"go\"}],"
      "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
      "\"object\"},\"description\":\"d\"}}],"
      "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
      "\"parallel_tool_calls\":false,\"top_k\":5,\"chat_template_kwargs\":{\"enable_thinking\":"
      "true},\"user\":\"u\"}");
  json_decref(out);
  json_decref(req);
}

static void test_request_errors(void **state) {
  (void)state;
  const char *bad[] = {
      "[]",
      "{\"model\":\"m\",\"messages\":[]}",                  /* no max_tokens */
      "{\"model\":\"m\",\"max_tokens\":0,\"messages\":[]}", /* max_tokens 0 */
      "{\"model\":\"m\",\"max_tokens\":5,\"messages\":{}}", /* messages not array */
      "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
      "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":5}]}",
      "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[],\"tool_choice\":{\"type\":\"x\"}}",
      "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[],\"thinking\":{\"type\":\"x\"}}",
      "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[],\"stop_sequences\":[\"\"]}",
      "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[],\"temperature\":3}",
      ("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
       "\"image\",\"source\":{\"type\":\"file\"}}]}]}"),
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    json_t *req = J(bad[i]), *out = NULL;
    api_anth_info info;
    hx_err err = {0};
    assert_int_equal(api_anth_request_translate(req, &out, &info, &err), HX_EINVAL);
    assert_null(out);
    assert_true(strlen(err.msg) > 0);
    json_decref(req);
  }
  assert_string_equal(api_anth_error_type(404), "not_found_error");
  assert_string_equal(api_anth_error_type(529), "overloaded_error");
  assert_string_equal(api_anth_error_type(500), "api_error");
  json_t *e = api_anth_error_json("invalid_request_error", "bad");
  assert_json_eq(e, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                    "\"message\":\"bad\"}}");
  json_decref(e);
}

typedef struct {
  json_t *events; /* [[name, data], ...] */
} rec;

static int rec_emit(void *ud, const char *ev, const json_t *data) {
  rec *r = ud;
  json_array_append_new(r->events, json_pack("[s,O]", ev, data));
  return 0;
}

static void feed(api_anth_stream *s, const char *chunk, bool *done) {
  json_t *c = J(chunk);
  assert_int_equal(api_anth_stream_feed(s, c, done, NULL), HX_OK);
  json_decref(c);
}

static char *names(const rec *r) {
  static char buf[2048];
  buf[0] = '\0';
  size_t i;
  json_t *e;
  json_array_foreach(r->events, i, e) {
    strcat(buf, json_string_value(json_array_get(e, 0)));
    strcat(buf, " ");
  }
  return buf;
}

static void test_stream_thinking_text_tool(void **state) {
  (void)state;
  api_anth_info info = {.stream = true};
  strcpy(info.model, "m");
  rec r = {json_array()};
  api_anth_stream *s = api_anth_stream_new(&info, "msg_1", rec_emit, &r);
  bool done = false;
  feed(s, "{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"hm\"}}]}",
       &done);
  feed(s, "{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}", &done);
  feed(s,
       "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{"
       "\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}",
       &done);
  feed(s,
       "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}"
       "\"}}]}}]}",
       &done);
  feed(s, "{\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}", &done);
  feed(s,
       "{\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":5,"
       "\"prompt_tokens_details\":{\"cached_tokens\":4}}}",
       &done);
  assert_false(done);
  assert_int_equal(api_anth_stream_finish(s, NULL), HX_OK);
  assert_string_equal(names(&r),
                      "message_start content_block_start content_block_delta content_block_delta "
                      "content_block_stop content_block_start content_block_delta "
                      "content_block_stop content_block_start content_block_delta "
                      "content_block_delta content_block_stop message_delta message_stop ");
  /* signature_delta closes the thinking block; tool args are the real ones */
  assert_json_eq(json_array_get(json_array_get(r.events, 3), 1),
                 "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                 "\"signature_delta\",\"signature\":\"helexa-msg_1-0\"}}");
  assert_json_eq(json_array_get(json_array_get(r.events, 8), 1),
                 "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":"
                 "\"tool_use\",\"id\":\"c1\",\"name\":\"f\",\"input\":{}}}");
  assert_json_eq(json_array_get(json_array_get(r.events, 10), 1),
                 "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":"
                 "\"input_json_delta\",\"partial_json\":\":1}\"}}");
  assert_json_eq(json_array_get(json_array_get(r.events, 12), 1),
                 "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
                 "\"stop_sequence\":null},\"usage\":{\"input_tokens\":7,\"output_tokens\":5,"
                 "\"cache_read_input_tokens\":4,\"cache_creation_input_tokens\":0}}");
  json_t *msg = api_anth_stream_message(s);
  assert_json_eq(json_object_get(msg, "content"),
                 "[{\"type\":\"thinking\",\"thinking\":\"hm\",\"signature\":\"helexa-msg_1-0\"},"
                 "{\"type\":\"text\",\"text\":\"Hi\"},{\"type\":\"tool_use\",\"id\":\"c1\","
                 "\"name\":\"f\",\"input\":{\"a\":1}}]");
  json_decref(msg);
  api_anth_stream_free(s);
  json_decref(r.events);
}

static void test_stream_stop_sequence_holdback(void **state) {
  (void)state;
  api_anth_info info = {.stream = true, .n_stop = 2};
  strcpy(info.model, "m");
  strcpy(info.stop[0], "</done>");
  strcpy(info.stop[1], "ZZ");
  rec r = {json_array()};
  api_anth_stream *s = api_anth_stream_new(&info, "msg_2", rec_emit, &r);
  bool done = false;
  const char *pieces[] = {"abc </d", "on", "e is not it <", "/do", "ne> tail", "more"};
  size_t i;
  for (i = 0; i < 6 && !done; i++) {
    char chunk[256];
    snprintf(chunk, sizeof chunk, "{\"choices\":[{\"delta\":{\"content\":\"%s\"}}]}", pieces[i]);
    feed(s, chunk, &done);
  }
  assert_true(done);
  assert_int_equal(i, 5); /* cut as soon as the sequence completed */
  assert_int_equal(api_anth_stream_finish(s, NULL), HX_OK);
  json_t *msg = api_anth_stream_message(s);
  assert_json_eq(json_object_get(msg, "content"),
                 "[{\"type\":\"text\",\"text\":\"abc </done is not it \"}]");
  assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "stop_sequence");
  assert_string_equal(json_string_value(json_object_get(msg, "stop_sequence")), "</done>");
  json_decref(msg);
  /* streamed text deltas add up to the same text, none contains the stop sequence */
  hx_buf t;
  hx_buf_init(&t, 4096);
  json_t *e;
  json_array_foreach(r.events, i, e) {
    const json_t *d = json_object_get(json_array_get(e, 1), "delta");
    const char *tx = json_string_value(json_object_get(d, "text"));
    if (tx) {
      assert_null(strstr(tx, "</done>"));
      hx_buf_append_str(&t, tx);
    }
  }
  assert_string_equal(t.data, "abc </done is not it ");
  hx_buf_free(&t);
  api_anth_stream_free(s);
  json_decref(r.events);
}

static void test_stream_max_tokens_and_empty(void **state) {
  (void)state;
  api_anth_info info = {0};
  strcpy(info.model, "m");
  api_anth_stream *s = api_anth_stream_new(&info, "msg_3", NULL, NULL);
  bool done;
  feed(s, "{\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":\"length\"}]}", &done);
  assert_true(api_anth_stream_has_finish(s));
  api_anth_stream_finish(s, NULL);
  json_t *msg = api_anth_stream_message(s);
  assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "max_tokens");
  assert_int_equal(
      json_integer_value(json_object_get(json_object_get(msg, "usage"), "output_tokens")), 1);
  json_decref(msg);
  api_anth_stream_free(s);

  s = api_anth_stream_new(&info, "msg_4", NULL, NULL);
  json_t *c = J("[1]");
  assert_int_equal(api_anth_stream_feed(s, c, &done, NULL), HX_EINVAL);
  json_decref(c);
  api_anth_stream_finish(s, NULL);
  msg = api_anth_stream_message(s);
  assert_int_equal(json_array_size(json_object_get(msg, "content")), 0);
  assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "end_turn");
  json_decref(msg);
  api_anth_stream_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_translate),
      cmocka_unit_test(test_request_errors),
      cmocka_unit_test(test_stream_thinking_text_tool),
      cmocka_unit_test(test_stream_stop_sequence_holdback),
      cmocka_unit_test(test_stream_max_tokens_and_empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
