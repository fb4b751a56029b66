/* test_chat_template_conformance.c — every case of tests/data/templates/
 * cases.json rendered by our chat-template renderer must equal, byte for
 * byte, what transformers' render_jinja_template produced
 * (expected.json, from tools/templates/gen_expected.py); cases where the
 * reference raised must fail here too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "engine/chat_template.h"
#include "engine/output_parser.h"

#define DATA_DIR "tests/data/templates/"
#define FIXED_NOW 1721995200 /* gen_expected.py's FIXED_NOW */

static json_t *load(const char *path) {
  char *src = NULL;
  size_t len = 0;
  hx_err err = {0};
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  src = malloc((size_t)n + 1);
  len = fread(src, 1, (size_t)n, f);
  fclose(f);
  json_t *v = hx_json_parse(src, len, (hx_json_limits){(size_t)64 << 20, 64}, &err);
  if (!v)
    fprintf(stderr, "%s: %s\n", path, err.msg);
  free(src);
  return v;
}

static void first_diff(const char *a, size_t an, const char *b, size_t bn) {
  size_t i = 0;
  while (i < an && i < bn && a[i] == b[i])
    i++;
  size_t from = i > 60 ? i - 60 : 0;
  fprintf(stderr, "  first difference at byte %zu\n  got:      [%.*s]\n  expected: [%.*s]\n", i,
          (int)((an - from) < 120 ? an - from : 120), a + from,
          (int)((bn - from) < 120 ? bn - from : 120), b + from);
}

static void test_conformance(void **state) {
  (void)state;
  json_t *cases = load(DATA_DIR "cases.json");
  json_t *expected = load(DATA_DIR "expected.json");
  assert_non_null(cases);
  assert_non_null(expected);
  json_t *compiled = json_object(); /* template name -> pointer as integer */
  size_t i, n_ok = 0, n_err_ok = 0, n_fail = 0;
  json_t *c;
  json_array_foreach(cases, i, c) {
    const char *id = json_string_value(json_object_get(c, "id"));
    const char *tname = json_string_value(json_object_get(c, "template"));
    json_t *exp = json_object_get(expected, id);
    assert_non_null(exp);
    hx_chat_template *t = NULL;
    json_t *ptr = json_object_get(compiled, tname);
    hx_err err = {0};
    if (ptr) {
      t = (hx_chat_template *)(uintptr_t)json_integer_value(ptr);
    } else {
      char path[512], *src;
      size_t len;
      snprintf(path, sizeof path, DATA_DIR "%s", tname);
      assert_int_equal(hx_chat_template_source_load(path, &src, &len, &err), HX_OK);
      hx_code rc = hx_chat_template_init(&t, src, len, tname, &err);
      free(src);
      if (rc)
        fprintf(stderr, "%s: %s\n", tname, err.msg);
      assert_int_equal(rc, HX_OK);
      json_object_set_new(compiled, tname, json_integer((json_int_t)(uintptr_t)t));
    }
    hx_chat_render_args args = {
        .messages = json_object_get(c, "messages"),
        .tools = json_is_null(json_object_get(c, "tools")) ? NULL : json_object_get(c, "tools"),
        .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
        .kwargs = json_object_get(c, "kwargs"),
        .bos_token = json_string_value(json_object_get(c, "bos_token")),
        .eos_token = json_string_value(json_object_get(c, "eos_token")),
        .tool_arguments_parse = json_is_true(json_object_get(c, "parse_args")),
        .now_unix_s = FIXED_NOW,
    };
    char *out = NULL;
    size_t out_len = 0;
    hx_code rc = hx_chat_template_render(t, &args, &out, &out_len, &err);
    json_t *want = json_object_get(exp, "output");
    if (want) {
      const char *w = json_string_value(want);
      size_t wn = json_string_length(want);
      if (rc != HX_OK) {
        fprintf(stderr, "FAIL %s: error %s\n", id, err.msg);
        n_fail++;
      } else if (out_len != wn || memcmp(out, w, wn) != 0) {
        fprintf(stderr, "FAIL %s: output differs\n", id);
        first_diff(out, out_len, w, wn);
        n_fail++;
      } else {
        n_ok++;
      }
    } else {
      if (rc == HX_OK) {
        fprintf(stderr, "FAIL %s: rendered, but the reference raised %s\n", id,
                json_string_value(json_object_get(exp, "error")));
        n_fail++;
      } else {
        n_err_ok++;
      }
    }
    free(out);
  }
  printf("chat template conformance: %zu cases, %zu byte-identical, %zu matching errors, %zu "
         "failed\n",
         json_array_size(cases), n_ok, n_err_ok, n_fail);
  const char *k;
  json_t *v;
  json_object_foreach(compiled, k, v)
      hx_chat_template_free((hx_chat_template *)(uintptr_t)json_integer_value(v));
  json_decref(compiled);
  size_t n_cases = json_array_size(cases);
  json_decref(cases);
  json_decref(expected);
  assert_true(n_cases >= 576);
  assert_int_equal(n_fail, 0);
  assert_true(n_ok >= 560);
}

/* The tool-call dialect follows the syntax each template teaches. */
static void test_family(void **state) {
  (void)state;
  static const struct {
    const char *file;
    hx_chat_family family;
  } want[] = {{"qwen3.jinja", HX_CHAT_FAMILY_QWEN3_JSON},
              {"qwen3.5.jinja", HX_CHAT_FAMILY_QWEN_XML},
              {"qwen3-coder-derived.jinja", HX_CHAT_FAMILY_QWEN_XML},
              {"qwen3-coder.jinja", HX_CHAT_FAMILY_QWEN_XML},
              {"qwen3-2507-instruct.jinja", HX_CHAT_FAMILY_QWEN3_JSON},
              {"qwen3-2507-thinking.jinja", HX_CHAT_FAMILY_QWEN3_JSON},
              {"llama3.x-tools.jinja", HX_CHAT_FAMILY_GENERIC},
              {"deepseek-r1-distill-qwen.jinja", HX_CHAT_FAMILY_GENERIC}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    char path[512], *src;
    size_t len;
    hx_err err;
    hx_chat_template *t;
    snprintf(path, sizeof path, DATA_DIR "%s", want[i].file);
    assert_int_equal(hx_chat_template_source_load(path, &src, &len, &err), HX_OK);
    assert_int_equal(hx_chat_template_init(&t, src, len, want[i].file, &err), HX_OK);
    assert_int_equal(hx_chat_template_family(t), want[i].family);
    hx_chat_template_free(t);
    free(src);
  }
}

/* Whether the rendered generation prompt leaves a <think> block open (so the
 * output parser must start in reasoning mode): always for the 2507 thinking
 * template, never for the 2507 instruct and Qwen3-Coder templates, and for
 * Qwen3 only when enable_thinking is not false. */
static void test_prompt_think_open(void **state) {
  (void)state;
  static const struct {
    const char *file;
    const char *kwargs;
    bool open;
  } want[] = {{"qwen3-2507-thinking.jinja", "{}", true},
              {"qwen3-2507-thinking.jinja", "{\"enable_thinking\": false}", true},
              {"qwen3-2507-instruct.jinja", "{}", false},
              {"qwen3-2507-instruct.jinja", "{\"enable_thinking\": true}", false},
              {"qwen3-coder.jinja", "{}", false},
              {"qwen3.jinja", "{}", false},
              {"qwen3.jinja", "{\"enable_thinking\": false}", false}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    char path[512], *src, *out = NULL;
    size_t len, out_len = 0;
    hx_err err = {0};
    hx_chat_template *t;
    snprintf(path, sizeof path, DATA_DIR "%s", want[i].file);
    assert_int_equal(hx_chat_template_source_load(path, &src, &len, &err), HX_OK);
    assert_int_equal(hx_chat_template_init(&t, src, len, want[i].file, &err), HX_OK);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "Hi");
    json_t *kwargs = json_loads(want[i].kwargs, 0, NULL);
    assert_non_null(msgs);
    assert_non_null(kwargs);
    hx_chat_render_args args = {.messages = msgs,
                                .add_generation_prompt = true,
                                .kwargs = kwargs,
                                .bos_token = "",
                                .eos_token = "<|im_end|>",
                                .now_unix_s = FIXED_NOW};
    assert_int_equal(hx_chat_template_render(t, &args, &out, &out_len, &err), HX_OK);
    if (hx_chat_prompt_think_open(out, out_len) != want[i].open)
      fprintf(stderr, "%s %s: prompt [%.*s]\n", want[i].file, want[i].kwargs, (int)out_len, out);
    assert_int_equal(hx_chat_prompt_think_open(out, out_len), want[i].open);
    free(out);
    json_decref(msgs);
    json_decref(kwargs);
    hx_chat_template_free(t);
    free(src);
  }
}

/* End to end for Qwen3-2507 thinking: the family and think_open that the
 * template and its rendered prompt give make the parser read a generation that
 * starts inside the prompt's open <think> as reasoning, then a JSON tool call. */
static void test_thinking_2507_parse(void **state) {
  (void)state;
  char *src, *prompt = NULL;
  size_t len, prompt_len = 0;
  hx_err err = {0};
  hx_chat_template *t;
  assert_int_equal(
      hx_chat_template_source_load(DATA_DIR "qwen3-2507-thinking.jinja", &src, &len, &err), HX_OK);
  assert_int_equal(hx_chat_template_init(&t, src, len, "qwen3-2507-thinking.jinja", &err), HX_OK);
  json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "Weather in Paris?");
  assert_non_null(msgs);
  hx_chat_render_args args = {.messages = msgs, .add_generation_prompt = true, .eos_token = ""};
  assert_int_equal(hx_chat_template_render(t, &args, &prompt, &prompt_len, &err), HX_OK);
  hx_output_parser_config cfg = {.family = hx_chat_template_family(t),
                                 .think_open = hx_chat_prompt_think_open(prompt, prompt_len),
                                 .parse_think = true,
                                 .parse_tools = true};
  static const char gen[] = "The user asks about Paris.\n</think>\n\n<tool_call>\n{\"name\": "
                            "\"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
  json_t *m = hx_output_parse_message(&cfg, gen, sizeof gen - 1, &err);
  assert_non_null(m);
  const char *reasoning = json_string_value(json_object_get(m, "reasoning_content"));
  assert_non_null(reasoning);
  assert_non_null(strstr(reasoning, "The user asks about Paris."));
  assert_null(strstr(reasoning, "think>"));
  const char *content = json_string_value(json_object_get(m, "content"));
  assert_true(content == NULL || strstr(content, "think>") == NULL);
  json_t *calls = json_object_get(m, "tool_calls");
  assert_int_equal(json_array_size(calls), 1);
  json_t *fn = json_object_get(json_array_get(calls, 0), "function");
  assert_string_equal(json_string_value(json_object_get(fn, "name")), "get_weather");
  assert_string_equal(json_string_value(json_object_get(fn, "arguments")), "{\"city\":\"Paris\"}");
  json_decref(m);
  json_decref(msgs);
  free(prompt);
  hx_chat_template_free(t);
  free(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conformance), cmocka_unit_test(test_family),
      cmocka_unit_test(test_prompt_think_open), cmocka_unit_test(test_thinking_2507_parse)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
