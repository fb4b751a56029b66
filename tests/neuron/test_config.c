/* test_config.c — neuron.toml: defaults, a full valid file, the example in
 * docs/examples, and every class of error with its exact FILE:LINE message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "neuron/config.h"

static char g_dir[64];

static const char *write_file(const char *name, const char *text) {
  static char path[160];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/hx-neuron-cfg-XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void test_defaults(void **state) {
  (void)state;
  neuron_config *c;
  assert_int_equal(neuron_config_defaults(&c, NULL), HX_OK);
  assert_string_equal(c->listen, "0.0.0.0:13131");
  assert_string_equal(c->listen_host, "0.0.0.0");
  assert_int_equal(c->listen_port, 13131);
  assert_true(c->name && c->name[0]);
  assert_int_equal(c->n_model_dirs, 1);
  assert_string_equal(c->model_dirs[0], "models");
  assert_int_equal(c->devices_mode, NEURON_DEVICES_ALL);
  assert_int_equal(c->limits.max_concurrent_per_model, 8);
  assert_int_equal(c->limits.max_request_bytes, 8u << 20);
  assert_string_equal(c->engine.kv_type, "f16");
  assert_true(c->engine.load_on_demand);
  assert_int_equal(c->n_preload, 0);
  neuron_config_free(c);
  neuron_config_free(NULL);
}

static void test_example_loads(void **state) {
  (void)state;
  neuron_config *c;
  hx_err err;
  hx_err_clear(&err);
  hx_code rc = neuron_config_load("docs/examples/neuron.toml", &c, &err);
  if (rc != HX_OK)
    fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, HX_OK);
  assert_string_equal(c->name, "gpu-box-1");
  assert_int_equal(c->n_model_dirs, 2);
  assert_string_equal(c->model_dirs[0], "docs/examples/models"); /* relative to the file */
  assert_string_equal(c->model_dirs[1], "/srv/models");
  assert_int_equal(c->memory.n_device_budgets, 1);
  assert_int_equal(c->memory.device_budgets[0].device, 0);
  assert_int_equal(c->memory.device_budgets[0].budget_mb, 20000);
  assert_int_equal(c->n_preload, 1);
  assert_string_equal(c->preload[0].model, "qwen3-0.6b");
  assert_int_equal(c->preload[0].line, 28);
  neuron_config_free(c);
}

static void test_valid_values(void **state) {
  (void)state;
  const char *p = write_file("ok.toml", "listen = \"[::1]:8080\"\n"
                                        "devices = [2, 0]\n"
                                        "[engine]\nkv_type = \"q8_0\"\nload_on_demand = false\n"
                                        "[limits]\nqueue_length = 0\n");
  neuron_config *c;
  assert_int_equal(neuron_config_load(p, &c, NULL), HX_OK);
  assert_string_equal(c->listen_host, "::1");
  assert_int_equal(c->listen_port, 8080);
  assert_int_equal(c->devices_mode, NEURON_DEVICES_LIST);
  assert_int_equal(c->n_devices, 2);
  assert_int_equal(c->devices[0], 2);
  assert_string_equal(c->engine.kv_type, "q8_0");
  assert_false(c->engine.load_on_demand);
  assert_int_equal(c->limits.queue_length, 0);
  assert_int_equal(c->limits.header_timeout_ms, 10000); /* default kept */
  neuron_config_free(c);
  p = write_file("cpu.toml", "devices = \"cpu\"\n");
  assert_int_equal(neuron_config_load(p, &c, NULL), HX_OK);
  assert_int_equal(c->devices_mode, NEURON_DEVICES_CPU);
  neuron_config_free(c);
}

/* "FILE" in want → path. */
static void expand(const char *want, const char *path, char *exp, size_t n) {
  exp[0] = '\0';
  for (const char *w = want; *w;) {
    const char *f = strstr(w, "FILE");
    if (!f) {
      strncat(exp, w, n - strlen(exp) - 1);
      break;
    }
    strncat(exp, w, (size_t)(f - w));
    strncat(exp, path, n - strlen(exp) - 1);
    w = f + 4;
  }
}

/* Loads text; the report must hold exactly the lines of want (FILE = the
 * path) and err the same text when it fits. syntax: a parse error, which
 * comes in err alone (FILE:LINE:COL). */
static void expect_errors_kind(const char *text, const char *want, bool syntax) {
  char path[160], exp[4096];
  snprintf(path, sizeof path, "%s", write_file("bad.toml", text));
  neuron_config *c = (neuron_config *)1;
  hx_err err;
  hx_err_clear(&err);
  char *report = NULL;
  assert_int_not_equal(neuron_config_load_report(path, &c, &report, &err), HX_OK);
  assert_null(c);
  expand(want, path, exp, sizeof exp);
  if (syntax) {
    assert_null(report);
    assert_string_equal(err.msg, exp);
    return;
  }
  assert_non_null(report);
  if (strlen(exp) < sizeof err.msg - 1)
    assert_string_equal(err.msg, exp);
  strncat(exp, "\n", sizeof exp - strlen(exp) - 1);
  if (strcmp(report, exp) != 0)
    fprintf(stderr, "got:\n%s\nwant:\n%s\n", report, exp);
  assert_string_equal(report, exp);
  free(report);
}

static void expect_errors(const char *text, const char *want) {
  expect_errors_kind(text, want, false);
}

static void test_errors(void **state) {
  (void)state;
  expect_errors("colour = 1\n", "FILE:1: key \"colour\" is not a known key (expected one of: "
                                "listen, name, model_dirs, devices, memory, limits, engine, "
                                "preload)");
  expect_errors("\nlisten = \"localhost\"\n",
                "FILE:2: key \"listen\" must be a listen address host:port (e.g. "
                "\"0.0.0.0:13131\"), not \"localhost\"");
  expect_errors("listen = \"h:0\"\n", "FILE:1: key \"listen\" must be a listen address host:port "
                                      "(e.g. \"0.0.0.0:13131\"), not \"h:0\"");
  expect_errors("name = 5\n", "FILE:1: key \"name\" must be a string, not an integer");
  expect_errors("devices = \"gpu\"\n", "FILE:1: key \"devices\" must be \"all\", \"cpu\" or an "
                                       "array of CUDA device indices, not \"gpu\"");
  expect_errors("devices = [0,\n 0]\n", "FILE:2: key \"devices\" lists device 0 twice");
  expect_errors("[limits]\nmax_concurrent_per_model = 0\n",
                "FILE:2: key \"limits.max_concurrent_per_model\" must be an integer in 1..1024, "
                "not 0");
  expect_errors("[engine]\nkv_type = \"f8\"\n",
                "FILE:2: key \"engine.kv_type\" must be one of: f16, f32, q8_0 (not \"f8\")");
  expect_errors("[[preload]]\nname = \"x\"\n",
                "FILE:2: key \"preload[0].name\" is not a known key (expected one of: model)\n"
                "FILE:1: key \"preload[0].model\" is required (a string)");
  expect_errors("[memory]\ndevice_budget_mb = { \"gpu0\" = 1 }\n",
                "FILE:2: key \"memory.device_budget_mb.gpu0\" must be a CUDA index 0..63");
  /* all errors, not just the first */
  expect_errors("listen = 1\n[engine]\nthreads = -1\n[limits]\nqueue_length = \"x\"\n",
                "FILE:1: key \"listen\" must be a string, not an integer\n"
                "FILE:5: key \"limits.queue_length\" must be an integer, not a string\n"
                "FILE:3: key \"engine.threads\" must be an integer in 0..1024, not -1");
  /* syntax errors carry line and column */
  expect_errors_kind("a = 1\nb = \n",
                     "FILE:2:5: expected a value (string, number, boolean, "
                     "date-time, array or inline table), found end of line",
                     true);
}

static void test_missing_file(void **state) {
  (void)state;
  neuron_config *c;
  hx_err err;
  assert_int_equal(neuron_config_load("/nonexistent/neuron.toml", &c, &err), HX_EIO);
  assert_non_null(strstr(err.msg, "/nonexistent/neuron.toml: cannot open"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),     cmocka_unit_test(test_example_loads),
      cmocka_unit_test(test_valid_values), cmocka_unit_test(test_errors),
      cmocka_unit_test(test_missing_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
