/* test_toml.c — the TOML tree API: typed values and their lines, lookup,
 * error messages with line/column, limits, and the schema helpers. The
 * full grammar is covered by test_toml_suite.c (toml-test 1.0.0). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/toml.h"

static toml_value *parse_ok(const char *s) {
  toml_value *root = NULL;
  hx_err err;
  hx_err_clear(&err);
  hx_code rc = toml_parse(s, strlen(s), NULL, &root, &err);
  if (rc != HX_OK)
    fprintf(stderr, "unexpected: %s\n", err.msg);
  assert_int_equal(rc, HX_OK);
  return root;
}

static void expect_error(const char *s, hx_code code, const char *msg) {
  toml_value *root = (toml_value *)1;
  hx_err err;
  hx_err_clear(&err);
  assert_int_equal(toml_parse(s, strlen(s), NULL, &root, &err), code);
  assert_null(root);
  if (strcmp(err.msg, msg) != 0)
    fprintf(stderr, "got: %s\nwant: %s\n", err.msg, msg);
  assert_string_equal(err.msg, msg);
}

static void test_types_and_lines(void **state) {
  (void)state;
  toml_value *r = parse_ok("# c\n"
                           "s = \"a\\tb\\u00e9\"\n"
                           "i = -0\n"
                           "h = 0xDEAD_beef\n"
                           "f = 6.626e-34\n"
                           "b = true\n"
                           "d = 1979-05-27T07:32:00.999999-07:00\n"
                           "[t.u]\n"
                           "a = [1, [2.5, \"x\"], {k = 1}]\n"
                           "[[aot]]\n"
                           "[[aot]]\n"
                           "x = 1\n");
  const toml_value *v = toml_table_get(r, "s");
  assert_int_equal(v->type, TOML_STRING);
  assert_string_equal(v->u.str.ptr, "a\tb\xc3\xa9");
  assert_int_equal(v->line, 2);
  assert_int_equal(v->column, 5);
  assert_int_equal(toml_table_get(r, "h")->u.integer, 0xDEADBEEF);
  assert_true(fabs(toml_table_get(r, "f")->u.flt - 6.626e-34) < 1e-40);
  assert_true(toml_table_get(r, "b")->u.boolean);
  v = toml_table_get(r, "d");
  assert_int_equal(v->type, TOML_DATETIME);
  assert_int_equal(v->u.dt.offset_minutes, -420);
  assert_int_equal(v->u.dt.nanosecond, 999999000);
  char buf[64];
  toml_datetime_format(v, buf, sizeof buf);
  assert_string_equal(buf, "1979-05-27T07:32:00.999999-07:00");
  const toml_value *t = toml_table_get(toml_table_get(r, "t"), "u");
  assert_int_equal(t->type, TOML_TABLE);
  assert_int_equal(t->line, 8);
  const toml_value *a = toml_table_get(t, "a");
  assert_int_equal(toml_array_len(a), 3);
  assert_int_equal(toml_array_at(a, 1)->type, TOML_ARRAY);
  assert_null(toml_array_at(a, 3));
  const toml_value *aot = toml_table_get(r, "aot");
  assert_int_equal(toml_array_len(aot), 2);
  assert_int_equal(toml_array_at(aot, 1)->line, 11);
  assert_int_equal(toml_table_get(toml_array_at(aot, 1), "x")->line, 12);
  /* keys keep definition order */
  assert_string_equal(r->u.tab.items[0].key, "s");
  assert_string_equal(r->u.tab.items[6].key, "t");
  toml_free(r);
}

static void test_many_keys_lookup(void **state) {
  (void)state;
  char *doc = malloc(200000);
  size_t n = 0;
  for (int i = 0; i < 5000; i++)
    n += (size_t)sprintf(doc + n, "k%d = %d\n", i, i);
  toml_value *r = parse_ok(doc);
  assert_int_equal(toml_table_len(r), 5000);
  for (int i = 0; i < 5000; i += 7) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    assert_int_equal(toml_table_get(r, k)->u.integer, i);
  }
  assert_null(toml_table_get(r, "k5000"));
  toml_free(r);
  /* a duplicate among many is still found */
  n += (size_t)sprintf(doc + n, "k4321 = 1\n");
  expect_error(doc, HX_EINVAL, "line 5001, column 1: key \"k4321\" is already defined (line 4322)");
  free(doc);
}

static void test_errors(void **state) {
  (void)state;
  expect_error("a = 1\na = 2\n", HX_EINVAL,
               "line 2, column 1: key \"a\" is already defined (line 1)");
  expect_error("a = 9223372036854775808\n", HX_EINVAL,
               "line 1, column 5: integer does not fit in 64 bits (range "
               "-9223372036854775808..9223372036854775807)");
  expect_error("a = 0x8000000000000000\n", HX_EINVAL,
               "line 1, column 5: integer does not fit in 64 bits (max 9223372036854775807)");
  expect_error("x = \"abc\n", HX_EINVAL,
               "line 1, column 9: newline in a single-line string (expected closing \")");
  expect_error("[t]\nb = 1\n[t]\n", HX_EINVAL,
               "line 3, column 2: table [t] is already defined (line 1)");
  expect_error("a = {b = 1}\n[a]\n", HX_EINVAL,
               "line 2, column 2: table [a] is already defined (line 1)");
  expect_error("a = 1 b = 2\n", HX_EINVAL, "line 1, column 7: expected end of line, found 'b'");
  expect_error("a = \"\xff\"\n", HX_EINVAL, "line 1, column 6: invalid UTF-8 (byte 0xFF)");
  expect_error("d = 2021-02-29\n", HX_EINVAL,
               "line 1, column 5: expected a valid calendar date, found '2'");
  expect_error(
      "s = \"\\q\"\n", HX_EINVAL,
      "line 1, column 6: invalid escape sequence (expected one of \\b \\t \\n \\f \\r \\\" "
      "\\\\ \\uXXXX \\UXXXXXXXX)");
  expect_error(
      "v = bare\n", HX_EINVAL,
      "line 1, column 5: expected a value (strings must be quoted: found 'bare'), found 'b'");
}

static void test_limits(void **state) {
  (void)state;
  toml_limits lim = {.max_bytes = 16, .max_depth = 3};
  toml_value *r;
  hx_err err;
  const char *big = "aaaaaaaaaa = 1234567\n";
  assert_int_equal(toml_parse(big, strlen(big), &lim, &r, &err), HX_ETOOLARGE);
  lim.max_bytes = 0;
  assert_int_equal(toml_parse("a = [[[[1]]]]", 13, &lim, &r, &err), HX_ETOOLARGE);
  assert_int_equal(toml_parse("a = [[[1]]]", 11, &lim, &r, &err), HX_OK);
  toml_free(r);
  assert_int_equal(toml_parse("a.b.c.d = 1", 11, &lim, &r, &err), HX_ETOOLARGE);
  assert_int_equal(toml_parse("[a.b.c.d]", 9, &lim, &r, &err), HX_ETOOLARGE);
  /* deep nesting in the default limits does not recurse without bound */
  char deep[4096];
  memset(deep, '[', sizeof deep);
  memcpy(deep, "a = ", 4);
  assert_int_equal(toml_parse(deep, sizeof deep, NULL, &r, &err), HX_ETOOLARGE);
  assert_null(r);
}

static void test_schema_helpers(void **state) {
  (void)state;
  toml_value *r = parse_ok("[g]\nport = 70000\nname = \"x\"\nratio = 2\nmode = \"b\"\nodd = 1\n"
                           "list = [\"a\", 2]\n");
  const toml_value *g = toml_table_get(r, "g");
  toml_diag d;
  toml_diag_init(&d, "f.toml");
  static const char *const keys[] = {"port", "name", "ratio", "mode", "list", NULL};
  toml_check_keys(g, "g.", keys, &d);
  int64_t port = 5;
  assert_false(toml_get_int(g, "port", "g.", true, 1, 65535, &port, &d));
  assert_int_equal(port, 5); /* untouched on error */
  double ratio = 0;
  assert_true(toml_get_float(g, "ratio", "g.", false, 0, 10, &ratio, &d));
  assert_true(ratio == 2.0);
  static const char *const modes[] = {"a", "b", NULL};
  int mode = -1;
  assert_true(toml_get_enum(g, "mode", "g.", false, modes, &mode, &d));
  assert_int_equal(mode, 1);
  char *s = NULL;
  assert_false(toml_get_string(g, "missing", "g.", false, 10, &s, &d));
  assert_false(toml_get_string(g, "missing", "g.", true, 10, &s, &d));
  assert_false(toml_get_bool(g, "name", "g.", false, &(bool){false}, &d));
  char **list = NULL;
  size_t n_list = 0;
  assert_false(toml_get_string_array(g, "list", "g.", false, 8, 8, &list, &n_list, &d));
  assert_int_equal(d.n_errors, 5);
  assert_string_equal(d.text.data,
                      "f.toml:6: key \"g.odd\" is not a known key (expected one of: port, name, "
                      "ratio, mode, list)\n"
                      "f.toml:2: key \"g.port\" must be an integer in 1..65535, not 70000\n"
                      "f.toml:1: key \"g.missing\" is required (a string)\n"
                      "f.toml:3: key \"g.name\" must be a boolean, not a string\n"
                      "f.toml:7: key \"g.list\" must be an array of strings (item 1 is an "
                      "integer)\n");
  toml_diag_free(&d);
  toml_free(r);
}

static void test_hostport(void **state) {
  (void)state;
  char *h;
  uint16_t p;
  assert_true(toml_hostport_parse("0.0.0.0:31313", &h, &p));
  assert_string_equal(h, "0.0.0.0");
  assert_int_equal(p, 31313);
  free(h);
  assert_true(toml_hostport_parse("[::1]:80", &h, &p));
  assert_string_equal(h, "::1");
  free(h);
  assert_true(toml_hostport_parse("my-host.local:1", &h, &p));
  free(h);
  const char *bad[] = {"host", ":80",   "h:",      "h:0",  "h:65536",
                       "h:8o", "a b:1", "[::1]80", "[]:1", "h:123456"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_false(toml_hostport_parse(bad[i], &h, &p));
}

static void test_tagged_json(void **state) {
  (void)state;
  toml_value *r = parse_ok("a = 1\nb = [inf, -nan]\n\"k\\u0000\" = 1979-05-27\n");
  hx_buf out;
  hx_buf_init(&out, 1 << 20);
  assert_int_equal(toml_to_tagged_json(r, &out), HX_OK);
  assert_string_equal(out.data, "{\"a\":{\"type\":\"integer\",\"value\":\"1\"},\"b\":[{\"type\":"
                                "\"float\",\"value\":\"inf\"},{\"type\":\"float\",\"value\":"
                                "\"nan\"}],\"k\\u0000\":{\"type\":\"date-local\",\"value\":"
                                "\"1979-05-27\"}}");
  hx_buf_free(&out);
  toml_free(r);
}

static void test_parse_file(void **state) {
  (void)state;
  char path[] = "/tmp/hx-toml-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs("ok = 1\nbad = [1,,]\n", f);
  fclose(f);
  toml_value *r;
  hx_err err;
  assert_int_equal(toml_parse_file(path, NULL, &r, &err), HX_EINVAL);
  char want[256];
  snprintf(want, sizeof want,
           "%s:2:10: expected a value (string, number, boolean, date-time, "
           "array or inline table), found ','",
           path);
  assert_string_equal(err.msg, want);
  remove(path);
  assert_int_equal(toml_parse_file(path, NULL, &r, &err), HX_EIO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_types_and_lines), cmocka_unit_test(test_many_keys_lookup),
      cmocka_unit_test(test_errors),          cmocka_unit_test(test_limits),
      cmocka_unit_test(test_schema_helpers),  cmocka_unit_test(test_hostport),
      cmocka_unit_test(test_tagged_json),     cmocka_unit_test(test_parse_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
