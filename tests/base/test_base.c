/* test_base.c — status, log, buf, slice, arena, time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/status.h"
#include "base/time.h"

static void test_err_set_and_wrap(void **state) {
  (void)state;
  hx_err e;
  hx_err_clear(&e);
  assert_int_equal(e.code, HX_OK);
  assert_int_equal(hx_err_set(&e, HX_EINVAL, "key \"%s\" must be an integer", "port"), HX_EINVAL);
  assert_string_equal(e.msg, "key \"port\" must be an integer");
  hx_err_wrap(&e, "cortex.toml:%d", 3);
  assert_string_equal(e.msg, "cortex.toml:3: key \"port\" must be an integer");
  assert_string_equal(hx_strerror(HX_ETOOLARGE), "too_large");
  assert_string_equal(hx_strerror((hx_code)999), "unknown");
  assert_int_equal(hx_err_set(NULL, HX_EIO, "ignored"), HX_EIO);
}

static void test_size_overflow(void **state) {
  (void)state;
  size_t out = 7;
  assert_int_equal(hx_size_mul(SIZE_MAX / 2 + 1, 2, &out), -1);
  assert_int_equal(out, 7);
  assert_int_equal(hx_size_mul(1000, 1000, &out), 0);
  assert_int_equal(out, 1000000);
  assert_int_equal(hx_size_add(SIZE_MAX, 1, &out), -1);
}

static void test_buf_bounded(void **state) {
  (void)state;
  hx_buf b;
  hx_buf_init(&b, 10);
  assert_int_equal(hx_buf_append_str(&b, "hello"), HX_OK);
  assert_int_equal(hx_buf_printf(&b, "%d", 1234), HX_OK);
  assert_string_equal(b.data, "hello1234");
  assert_int_equal(hx_buf_append_str(&b, "xy"), HX_ETOOLARGE);
  assert_string_equal(b.data, "hello1234"); /* unchanged on failure */
  assert_int_equal(hx_buf_append_char(&b, '!'), HX_OK);
  assert_int_equal(b.len, 10);
  hx_buf_consume(&b, 5);
  assert_string_equal(b.data, "1234!");
  char *s = hx_buf_detach(&b);
  assert_string_equal(s, "1234!");
  assert_null(b.data);
  free(s);
  hx_buf_free(&b);
  hx_buf_free(NULL);
}

static void test_slice(void **state) {
  (void)state;
  hx_slice s = hx_slice_trim(hx_slice_cstr("  abc \n"));
  assert_int_equal(s.len, 3);
  assert_true(hx_slice_eq_cstr(s, "abc"));
  assert_true(hx_slice_starts_with(s, "ab"));
  assert_false(hx_slice_starts_with(s, "abcd"));
  assert_true(hx_slice_eq(hx_slice_make(NULL, 0), hx_slice_cstr("")));
}

static void test_arena(void **state) {
  (void)state;
  hx_arena a;
  hx_arena_init(&a, 256, 4096);
  for (int i = 0; i < 10; i++) {
    char *p = hx_arena_alloc(&a, 100, 16);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
    memset(p, 0xab, 100);
  }
  assert_null(hx_arena_alloc(&a, 8192, 8)); /* past max_bytes */
  char *s = hx_arena_strndup(&a, "abcdef", 3);
  assert_string_equal(s, "abc");
  hx_arena_reset(&a);
  assert_true(a.used_bytes <= 4096);
  unsigned char *z = hx_arena_alloc(&a, 64, 64);
  for (int i = 0; i < 64; i++)
    assert_int_equal(z[i], 0);
  hx_arena_free(&a);
  hx_arena_free(NULL);
}

static void test_time(void **state) {
  (void)state;
  uint64_t t0 = hx_time_mono_ns();
  hx_time_sleep_ms(5);
  uint64_t t1 = hx_time_mono_ns();
  assert_true(t1 - t0 >= 5000000ull);
  assert_true(hx_time_wall_s() > 1700000000ull);
}

static void test_log_levels(void **state) {
  (void)state;
  hx_log_level l;
  assert_int_equal(hx_log_level_parse("warn", &l), 0);
  assert_int_equal(l, HX_LOG_WARN);
  assert_int_equal(hx_log_level_parse("loud", &l), -1);
  hx_log_set_level(HX_LOG_ERROR);
  assert_int_equal(hx_log_get_level(), HX_LOG_ERROR);
  hx_log_set_request_id("req-42");
  assert_string_equal(hx_log_request_id(), "req-42");
  HX_INFO("suppressed %d", 1);
  hx_log_set_request_id(NULL);
  assert_string_equal(hx_log_request_id(), "");
  hx_log_set_level(HX_LOG_INFO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_err_set_and_wrap),
      cmocka_unit_test(test_size_overflow),
      cmocka_unit_test(test_buf_bounded),
      cmocka_unit_test(test_slice),
      cmocka_unit_test(test_arena),
      cmocka_unit_test(test_time),
      cmocka_unit_test(test_log_levels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
