/* test_output_parser.c — reasoning / content / tool-call splitting: expected
 * results on known outputs, independence from chunk boundaries (byte by byte
 * and every 2-way split), and no text lost under truncation at any byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "engine/output_parser.h"

typedef struct result {
  hx_buf content, reasoning, calls, log; /* calls: "name(args)|" per call */
  int last_kind;
  int starts, ends, last_index;
  const char *full; /* the whole text, for the reconstruction log */
  size_t full_pos;
  bool index_ok;
} result;

static void result_init(result *r, const char *full) {
  memset(r, 0, sizeof *r);
  hx_buf_init(&r->content, 1 << 24);
  hx_buf_init(&r->reasoning, 1 << 24);
  hx_buf_init(&r->calls, 1 << 24);
  hx_buf_init(&r->log, 1 << 24);
  r->last_index = -1;
  r->index_ok = true;
  r->full = full;
}

static void result_free(result *r) {
  hx_buf_free(&r->content);
  hx_buf_free(&r->reasoning);
  hx_buf_free(&r->calls);
  hx_buf_free(&r->log);
}

static int on_event(void *user, const hx_output_event *ev) {
  result *r = user;
  switch (ev->kind) {
  case HX_OUTPUT_CONTENT:
    hx_buf_append(&r->content, ev->text, ev->len);
    hx_buf_append(&r->log, ev->text, ev->len);
    break;
  case HX_OUTPUT_REASONING:
    hx_buf_append(&r->reasoning, ev->text, ev->len);
    hx_buf_append(&r->log, ev->text, ev->len);
    break;
  case HX_OUTPUT_TOOL_START: {
    r->starts++;
    r->index_ok &= ev->index == r->last_index + 1;
    r->last_index = ev->index;
    char id[64];
    snprintf(id, sizeof id, "call_%d", ev->index);
    r->index_ok &= strcmp(ev->id, id) == 0;
    hx_buf_printf(&r->calls, "%s(", ev->name);
    /* the log gets the source block of this call back */
    const char *b = strstr(r->full + r->full_pos, "<tool_call>");
    const char *e = b ? strstr(b, "</tool_call>") : NULL;
    if (b && e) {
      size_t n = (size_t)(e + 12 - b);
      hx_buf_append(&r->log, b, n);
      r->full_pos = (size_t)(e + 12 - r->full);
    }
    break;
  }
  case HX_OUTPUT_TOOL_ARGS:
    hx_buf_append(&r->calls, ev->text, ev->len);
    break;
  case HX_OUTPUT_TOOL_END:
    r->ends++;
    hx_buf_append_str(&r->calls, ")|");
    break;
  }
  return 0;
}

/* Parses text in chunks split at the given offsets (ascending, < len). */
static void run(const hx_output_parser_config *cfg, const char *text, size_t len,
                const size_t *cuts, size_t ncuts, result *r) {
  hx_output_parser *p;
  hx_err err;
  assert_int_equal(hx_output_parser_init(&p, cfg, &err), HX_OK);
  size_t at = 0;
  for (size_t i = 0; i <= ncuts; i++) {
    size_t to = i < ncuts ? cuts[i] : len;
    assert_int_equal(hx_output_parser_feed(p, text + at, to - at, on_event, r, &err), HX_OK);
    at = to;
  }
  assert_int_equal(hx_output_parser_finish(p, on_event, r, &err), HX_OK);
  hx_output_parser_free(p);
}

static bool same(const result *a, const result *b) {
  return hx_slice_eq(hx_buf_slice(&a->content), hx_buf_slice(&b->content)) &&
         hx_slice_eq(hx_buf_slice(&a->reasoning), hx_buf_slice(&b->reasoning)) &&
         hx_slice_eq(hx_buf_slice(&a->calls), hx_buf_slice(&b->calls));
}

/* s without the think tags (they are consumed by the parser, not lost). */
static void strip_think_tags(const char *s, size_t n, hx_buf *out) {
  for (size_t i = 0; i < n;) {
    if (n - i >= 7 && !memcmp(s + i, "<think>", 7))
      i += 7;
    else if (n - i >= 8 && !memcmp(s + i, "</think>", 8))
      i += 8;
    else
      hx_buf_append_char(out, s[i++]);
  }
}

static const char *const TEXTS_JSON[] = {
    "Hello, world!",
    "<think>\nI should call a tool.\n</think>\n\nSure.<tool_call>\n{\"name\": \"get_weather\", "
    "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    "<think>plan <tool_call>{\"name\": \"x\", \"arguments\": {}}</tool_call> no</think>answer",
    "a<tool_call>\n{\"name\": \"a\", \"arguments\": {\"k\": "
    "1}}\n</tool_call>\n<tool_call>\n{\"name\": "
    "\"b\", \"arguments\": \"{\\\"q\\\": [1, 2]}\"}\n</tool_call>",
    "broken <tool_call>{\"name\": }</tool_call> tail <think",
    "x < y and <tool <tool_call>{\"name\": \"t\"}",
    "日本語 <think>思考</think>答え 🤖",
};

static const char *const TEXTS_XML[] = {
    "I'll check.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
    "<tool_call>\n<function=search>\n<parameter=query>\nmulti\nline\n</"
    "parameter>\n<parameter=opts>\n"
    "{\"a\": "
    "true}\n</parameter>\n</function>\n</tool_call><tool_call>\n<function=noargs>\n</function>\n"
    "</tool_call>",
    "thinking...</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=days>\nthree\n</"
    "parameter>\n"
    "</function>\n</tool_call>",
    "<tool_call><function=bad></tool_call>rest",
};

static const char *TOOLS_JSON =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":"
    "\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\"}}}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"search\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"query\":{\"type\":\"string\"},\"opts\":{\"type\":\"object\"}}}}}]";

static void check_text(const hx_output_parser_config *cfg, const char *text) {
  size_t len = strlen(text);
  result ref;
  result_init(&ref, text);
  run(cfg, text, len, NULL, 0, &ref);
  assert_true(ref.index_ok);
  assert_int_equal(ref.starts, ref.ends);
  /* every 2-way split */
  for (size_t k = 1; k < len; k++) {
    result r;
    result_init(&r, text);
    run(cfg, text, len, &k, 1, &r);
    if (!same(&r, &ref))
      fail_msg("split at %zu of \"%s\" changes the result", k, text);
    result_free(&r);
  }
  /* byte by byte */
  size_t *cuts = malloc(len * sizeof *cuts);
  for (size_t k = 1; k < len; k++)
    cuts[k - 1] = k;
  result r;
  result_init(&r, text);
  run(cfg, text, len, cuts, len ? len - 1 : 0, &r);
  assert_true(same(&r, &ref));
  result_free(&r);
  free(cuts);
  /* truncation at every byte: nothing lost (think tags are consumed) */
  for (size_t k = 0; k <= len; k++) {
    char *prefix = strndup(text, k);
    result t;
    result_init(&t, prefix);
    run(cfg, prefix, k, NULL, 0, &t);
    hx_buf want, got;
    hx_buf_init(&want, 1 << 24);
    hx_buf_init(&got, 1 << 24);
    strip_think_tags(prefix, k, &want);
    strip_think_tags(t.log.data ? t.log.data : "", t.log.len, &got);
    if (!hx_slice_eq(hx_buf_slice(&want), hx_buf_slice(&got)))
      fail_msg("truncation at %zu of \"%s\" lost text: got \"%s\"", k, text,
               got.data ? got.data : "");
    hx_buf_free(&want);
    hx_buf_free(&got);
    result_free(&t);
    free(prefix);
  }
  result_free(&ref);
}

static void test_chunking_and_truncation(void **state) {
  (void)state;
  hx_output_parser_config cfg = {
      .family = HX_CHAT_FAMILY_QWEN3_JSON, .parse_think = true, .parse_tools = true};
  for (size_t i = 0; i < sizeof TEXTS_JSON / sizeof *TEXTS_JSON; i++)
    check_text(&cfg, TEXTS_JSON[i]);
  json_t *tools = json_loads(TOOLS_JSON, 0, NULL);
  assert_non_null(tools);
  hx_output_parser_config xml = {
      .family = HX_CHAT_FAMILY_QWEN_XML, .parse_think = true, .parse_tools = true, .tools = tools};
  for (size_t i = 0; i < sizeof TEXTS_XML / sizeof *TEXTS_XML; i++)
    check_text(&xml, TEXTS_XML[i]);
  xml.think_open = true;
  for (size_t i = 0; i < sizeof TEXTS_XML / sizeof *TEXTS_XML; i++)
    check_text(&xml, TEXTS_XML[i]);
  json_decref(tools);
}

static result parse(const hx_output_parser_config *cfg, const char *text) {
  result r;
  result_init(&r, text);
  run(cfg, text, strlen(text), NULL, 0, &r);
  return r;
}

#define BUF_EQ(b, s) assert_string_equal((b).data ? (b).data : "", s)

static void test_expected_results(void **state) {
  (void)state;
  hx_output_parser_config cfg = {
      .family = HX_CHAT_FAMILY_QWEN3_JSON, .parse_think = true, .parse_tools = true};
  result r = parse(&cfg, TEXTS_JSON[1]);
  BUF_EQ(r.reasoning, "\nI should call a tool.\n");
  BUF_EQ(r.content, "\n\nSure.");
  BUF_EQ(r.calls, "get_weather({\"city\":\"Paris\"})|");
  result_free(&r);
  /* a tool call inside the think block is reasoning, not a call */
  r = parse(&cfg, TEXTS_JSON[2]);
  assert_int_equal(r.starts, 0);
  BUF_EQ(r.content, "answer");
  result_free(&r);
  /* two calls, distinct indices; string arguments parsed */
  r = parse(&cfg, TEXTS_JSON[3]);
  assert_int_equal(r.starts, 2);
  assert_true(r.index_ok);
  BUF_EQ(r.calls, "a({\"k\":1})|b({\"q\":[1,2]})|");
  BUF_EQ(r.content, "a\n");
  result_free(&r);
  /* malformed and truncated blocks come back verbatim as content */
  r = parse(&cfg, TEXTS_JSON[4]);
  BUF_EQ(r.content, "broken <tool_call>{\"name\": }</tool_call> tail <think");
  result_free(&r);
  r = parse(&cfg, TEXTS_JSON[5]);
  BUF_EQ(r.content, TEXTS_JSON[5]);
  result_free(&r);
  /* generic family: tool-call markup is content */
  hx_output_parser_config gen = {
      .family = HX_CHAT_FAMILY_GENERIC, .parse_think = true, .parse_tools = true};
  r = parse(&gen, TEXTS_JSON[3]);
  BUF_EQ(r.content, TEXTS_JSON[3]);
  result_free(&r);

  json_t *tools = json_loads(TOOLS_JSON, 0, NULL);
  hx_output_parser_config xml = {
      .family = HX_CHAT_FAMILY_QWEN_XML, .parse_think = true, .parse_tools = true, .tools = tools};
  r = parse(&xml, TEXTS_XML[0]);
  BUF_EQ(r.content, "I'll check.\n\n");
  BUF_EQ(r.calls, "get_weather({\"city\":\"Paris\",\"days\":3})|");
  result_free(&r);
  r = parse(&xml, TEXTS_XML[1]);
  BUF_EQ(r.calls, "search({\"query\":\"multi\\nline\",\"opts\":{\"a\":true}})|noargs({})|");
  result_free(&r);
  /* prompt opened <think>; an integer that is not one stays a string */
  xml.think_open = true;
  r = parse(&xml, TEXTS_XML[2]);
  BUF_EQ(r.reasoning, "thinking...");
  BUF_EQ(r.calls, "get_weather({\"days\":\"three\"})|");
  result_free(&r);
  xml.think_open = false;
  r = parse(&xml, TEXTS_XML[3]);
  BUF_EQ(r.content, TEXTS_XML[3]);
  result_free(&r);
  json_decref(tools);

  /* whole-message form */
  hx_err err;
  json_t *m = hx_output_parse_message(&cfg, TEXTS_JSON[1], strlen(TEXTS_JSON[1]), &err);
  assert_non_null(m);
  assert_string_equal(json_string_value(json_object_get(m, "reasoning_content")),
                      "\nI should call a tool.\n");
  json_t *c0 = json_array_get(json_object_get(m, "tool_calls"), 0);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(c0, "function"), "arguments")),
      "{\"city\":\"Paris\"}");
  assert_string_equal(json_string_value(json_object_get(c0, "id")), "call_0");
  json_decref(m);
}

static void test_prompt_think_open(void **state) {
  (void)state;
  const char *a = "<|im_start|>assistant\n<think>\n";
  const char *b = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
  assert_true(hx_chat_prompt_think_open(a, strlen(a)));
  assert_false(hx_chat_prompt_think_open(b, strlen(b)));
  assert_false(hx_chat_prompt_think_open("x", 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_expected_results),
      cmocka_unit_test(test_chunking_and_truncation),
      cmocka_unit_test(test_prompt_think_open),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
