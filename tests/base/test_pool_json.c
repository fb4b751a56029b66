/* test_pool_json.c — thread pool and JSON helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/pool.h"

typedef struct {
  _Atomic int hits[1000];
  _Atomic long sum;
} pool_ctx;

static void task(void *ctx, size_t t, int worker) {
  pool_ctx *c = ctx;
  (void)worker;
  atomic_fetch_add(&c->hits[t], 1);
  atomic_fetch_add(&c->sum, (long)t);
}

static void test_pool_parallel_for(void **state) {
  (void)state;
  for (int threads = 1; threads <= 4; threads++) {
    hx_pool *p = hx_pool_create(threads);
    assert_non_null(p);
    assert_int_equal(hx_pool_size(p), threads);
    for (int round = 0; round < 50; round++) {
      pool_ctx *c = calloc(1, sizeof *c);
      size_t n = (size_t)(round * 17 % 1000) + 1;
      hx_pool_parallel_for(p, n, task, c);
      for (size_t i = 0; i < n; i++)
        assert_int_equal(atomic_load(&c->hits[i]), 1);
      assert_int_equal(atomic_load(&c->sum), (long)(n * (n - 1) / 2));
      free(c);
    }
    hx_pool_free(p);
  }
  assert_null(hx_pool_create(0));
  assert_true(hx_cpu_count() >= 1);
}

static void test_json_parse_errors(void **state) {
  (void)state;
  hx_json_limits lim = {.max_bytes = 1 << 20, .max_depth = 8};
  hx_err e;
  const char *bad = "{\n  \"a\": 1,\n  \"b\": tru\n}";
  assert_null(hx_json_parse(bad, strlen(bad), lim, &e));
  assert_int_equal(e.code, HX_EINVAL);
  assert_non_null(strstr(e.msg, "line 3"));

  const char *dup = "{\"a\":1,\"a\":2}";
  assert_null(hx_json_parse(dup, strlen(dup), lim, &e));

  const char *deep = "[[[[[[[[[[1]]]]]]]]]]";
  assert_null(hx_json_parse(deep, strlen(deep), lim, &e));
  assert_int_equal(e.code, HX_ETOOLARGE);

  const char *deep_in_string = "[\"[[[[[[[[[[[[[\"]";
  json_t *v = hx_json_parse(deep_in_string, strlen(deep_in_string), lim, &e);
  assert_non_null(v);
  json_decref(v);

  lim.max_bytes = 4;
  assert_null(hx_json_parse("[1,2,3]", 7, lim, &e));
  assert_int_equal(e.code, HX_ETOOLARGE);
}

static void test_json_getters(void **state) {
  (void)state;
  hx_json_limits lim = {.max_bytes = 4096, .max_depth = 8};
  hx_err e;
  const char *doc = "{\"s\":\"x\",\"i\":5,\"f\":0.5,\"b\":true,\"n\":null,\"r\":3.0}";
  json_t *o = hx_json_parse(doc, strlen(doc), lim, &e);
  assert_non_null(o);
  const char *s = NULL;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  assert_int_equal(hx_json_get_string(o, "s", true, &s, &e), HX_OK);
  assert_string_equal(s, "x");
  assert_int_equal(hx_json_get_int(o, "i", true, 0, 10, &i, &e), HX_OK);
  assert_int_equal(i, 5);
  assert_int_equal(hx_json_get_int(o, "r", true, 0, 10, &i, &e), HX_OK);
  assert_int_equal(i, 3);
  assert_int_equal(hx_json_get_int(o, "i", true, 6, 10, &i, &e), HX_EINVAL);
  assert_non_null(strstr(e.msg, "between 6 and 10"));
  assert_int_equal(hx_json_get_int(o, "f", true, 0, 10, &i, &e), HX_EINVAL);
  assert_int_equal(hx_json_get_number(o, "f", true, 0, 1, &f, &e), HX_OK);
  assert_true(f == 0.5);
  assert_int_equal(hx_json_get_bool(o, "b", true, &b, &e), HX_OK);
  assert_true(b);
  assert_int_equal(hx_json_get_string(o, "i", true, &s, &e), HX_EINVAL);
  assert_non_null(strstr(e.msg, "must be a string, not integer"));
  assert_int_equal(hx_json_get_string(o, "n", false, &s, &e), HX_OK);
  assert_int_equal(hx_json_get_string(o, "missing", true, &s, &e), HX_EINVAL);
  hx_buf out;
  hx_buf_init(&out, 1024);
  assert_int_equal(hx_json_dump(o, &out), HX_OK);
  assert_string_equal(out.data, doc);
  hx_buf_free(&out);
  json_decref(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_parallel_for),
      cmocka_unit_test(test_json_parse_errors),
      cmocka_unit_test(test_json_getters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
