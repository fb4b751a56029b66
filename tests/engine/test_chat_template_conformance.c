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
  assert_true(n_cases >= 300);
  assert_int_equal(n_fail, 0);
  assert_true(n_ok >= 300);
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

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_conformance),
                                     cmocka_unit_test(test_family)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
