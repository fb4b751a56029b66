/* test_config.c — cortex.toml + models.toml: defaults, the examples in
 * docs/examples, models_file resolution, and every class of error with its
 * exact FILE:LINE message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cortex/config.h"

static char g_dir[64];

static void write_file(const char *name, const char *text) {
  char path[160];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void remove_file(const char *name) {
  char path[160];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  unlink(path);
}

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/hx-cortex-cfg-XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Replaces "DIR" in want with the temp dir. */
static void expand(const char *want, char *out, size_t n) {
  out[0] = '\0';
  for (const char *w = want; *w;) {
    const char *f = strstr(w, "DIR");
    if (!f) {
      strncat(out, w, n - strlen(out) - 1);
      break;
    }
    strncat(out, w, (size_t)(f - w));
    strncat(out, g_dir, n - strlen(out) - 1);
    w = f + 3;
  }
}

static void expect_errors(const char *want) {
  char path[160], exp[4096];
  snprintf(path, sizeof path, "%s/cortex.toml", g_dir);
  cortex_config *c = (cortex_config *)1;
  hx_err err;
  hx_err_clear(&err);
  char *report = NULL;
  assert_int_not_equal(cortex_config_load_report(path, &c, &report, &err), HX_OK);
  assert_null(c);
  expand(want, exp, sizeof exp);
  if (!report) { /* syntax or I/O error: err alone */
    assert_string_equal(err.msg, exp);
    return;
  }
  if (strlen(exp) < sizeof err.msg - 1)
    assert_string_equal(err.msg, exp);
  strncat(exp, "\n", sizeof exp - strlen(exp) - 1);
  if (strcmp(report, exp) != 0)
    fprintf(stderr, "got:\n%s\nwant:\n%s\n", report, exp);
  assert_string_equal(report, exp);
  free(report);
}

static cortex_config *load_ok(void) {
  char path[160];
  snprintf(path, sizeof path, "%s/cortex.toml", g_dir);
  cortex_config *c;
  hx_err err;
  hx_err_clear(&err);
  hx_code rc = cortex_config_load(path, &c, &err);
  if (rc != HX_OK)
    fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, HX_OK);
  return c;
}

static void test_defaults(void **state) {
  (void)state;
  cortex_config *c;
  assert_int_equal(cortex_config_defaults(&c, NULL), HX_OK);
  assert_string_equal(c->gateway.listen, "0.0.0.0:31313");
  assert_int_equal(c->gateway.metrics_port, 31314);
  assert_int_equal(c->eviction.strategy, CORTEX_EVICT_LRU);
  assert_int_equal(c->eviction.defrag_after_cycles, 50);
  assert_int_equal(c->n_neurons, 0);
  assert_non_null(c->models);
  assert_int_equal(c->models->n_models, 0);
  cortex_config_free(c);
  cortex_config_free(NULL);
}

static void test_examples_load(void **state) {
  (void)state;
  setenv("HELEXA_API_KEY", "sk-from-the-environment", 1);
  cortex_config *c;
  hx_err err;
  hx_err_clear(&err);
  hx_code rc = cortex_config_load("docs/examples/cortex.toml", &c, &err);
  if (rc != HX_OK)
    fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, HX_OK);
  assert_int_equal(c->n_neurons, 2);
  assert_string_equal(c->neurons[0].name, "gpu-box-1");
  assert_string_equal(c->neurons[0].host, "10.0.0.5");
  assert_int_equal(c->neurons[0].port, 13131);
  assert_int_equal(c->neurons[0].line, 18);
  assert_int_equal(c->n_keys, 2);
  assert_string_equal(c->keys[1].key, "sk-from-the-environment");
  assert_string_equal(c->keys[0].models[0], "qwen3-0.6b");
  assert_string_equal(c->gateway.models_file, "docs/examples/models.toml");
  assert_int_equal(c->models->n_models, 2);
  const models_profile *m = models_config_find(c->models, "qwen3-small");
  assert_non_null(m);
  assert_string_equal(m->id, "qwen3-0.6b");
  assert_true(m->pinned);
  assert_true(m->sampling.has_top_k);
  assert_int_equal(m->sampling.top_k, 20);
  assert_true(m->has_thinking);
  assert_false(m->thinking);
  m = models_config_find(c->models, "qwen3-8b");
  assert_string_equal(m->quant, "Q8_0");
  assert_int_equal(m->min_compute_major, 8);
  assert_int_equal(m->min_compute_minor, 6);
  assert_false(m->sampling.has_temperature);
  cortex_config_free(c);
  /* standalone models.toml */
  models_config *mc;
  assert_int_equal(models_config_load("docs/examples/models.toml", &mc, NULL), HX_OK);
  assert_int_equal(mc->n_models, 2);
  models_config_free(mc);
  /* the env var is required when named */
  unsetenv("HELEXA_API_KEY");
  assert_int_equal(cortex_config_load("docs/examples/cortex.toml", &c, &err), HX_EINVAL);
  assert_non_null(strstr(err.msg, "docs/examples/cortex.toml:34: key \"auth.keys[1].key_env\": "
                                  "environment variable HELEXA_API_KEY is not set or empty"));
}

static void test_models_file_resolution(void **state) {
  (void)state;
  remove_file("models.toml");
  write_file("cortex.toml", "[[neurons]]\nname = \"n1\"\nendpoint = \"http://127.0.0.1:1\"\n");
  cortex_config *c = load_ok();
  assert_null(c->gateway.models_file); /* no models.toml beside it: no profiles */
  assert_int_equal(c->models->n_models, 0);
  cortex_config_free(c);
  write_file("models.toml", "[[models]]\nid = \"a\"\nneurons = [\"n1\"]\n");
  c = load_ok();
  assert_non_null(c->gateway.models_file);
  assert_int_equal(c->models->n_models, 1);
  assert_int_equal(c->models->models[0].min_devices, 1);
  cortex_config_free(c);
  write_file("cortex.toml", "[gateway]\nmodels_file = \"other.toml\"\n");
  expect_errors("DIR/cortex.toml:2: key \"gateway.models_file\": cannot read "
                "\"DIR/other.toml\"");
  remove_file("models.toml");
}

static void test_cortex_errors(void **state) {
  (void)state;
  remove_file("models.toml");
  write_file("cortex.toml", "[gateway]\nlisten = \"0.0.0.0\"\nmetrics_listen = 5\ncolour = 1\n");
  expect_errors("DIR/cortex.toml:4: key \"gateway.colour\" is not a known key (expected one of: "
                "listen, metrics_listen, models_file, max_body_bytes, max_header_bytes, "
                "header_timeout_ms, max_streams, request_timeout_ms)\n"
                "DIR/cortex.toml:2: key \"gateway.listen\" must be a listen address host:port "
                "(e.g. \"0.0.0.0:31313\"), not \"0.0.0.0\"\n"
                "DIR/cortex.toml:3: key \"gateway.metrics_listen\" must be a string, not an "
                "integer");
  write_file("cortex.toml", "[eviction]\nstrategy = \"fifo\"\ndefrag_after_cycles = -1\n");
  expect_errors("DIR/cortex.toml:2: key \"eviction.strategy\" must be one of: lru, priority "
                "(not \"fifo\")\n"
                "DIR/cortex.toml:3: key \"eviction.defrag_after_cycles\" must be an integer in "
                "0..1000000, not -1");
  write_file("cortex.toml", "[[neurons]]\nname = \"a\"\nendpoint = \"https://x:1\"\n"
                            "[[neurons]]\nname = \"a\"\nendpoint = \"http://x:70000\"\n"
                            "[[neurons]]\nendpoint = \"http://x:1\"\n");
  expect_errors("DIR/cortex.toml:3: key \"neurons[0].endpoint\" must be http://host:port (e.g. "
                "\"http://10.0.0.5:13131\"), not \"https://x:1\"\n"
                "DIR/cortex.toml:5: key \"neurons[1].name\" \"a\" is already used by neurons[0] "
                "(line 1)\n"
                "DIR/cortex.toml:6: key \"neurons[1].endpoint\" must be http://host:port (e.g. "
                "\"http://10.0.0.5:13131\"), not \"http://x:70000\"\n"
                "DIR/cortex.toml:7: key \"neurons[2].name\" is required (a string)");
  write_file("cortex.toml", "[[auth.keys]]\nkey = \"abcdefghij\"\nkey_env = \"X\"\n"
                            "[[auth.keys]]\nkey = \"short\"\n"
                            "[auth]\n");
  /* [auth] after [[auth.keys]] re-defines an implicit table: allowed by TOML */
  expect_errors("DIR/cortex.toml:1: key \"auth.keys[0].key\" or \"auth.keys[0].key_env\": "
                "exactly one of them is required\n"
                "DIR/cortex.toml:5: key \"auth.keys[1].key\" must be at least 8 characters");
  write_file("cortex.toml", "[gateway]\nlisten = \"127.0.0.1:9000\"\n"
                            "metrics_listen = \"127.0.0.1:9000\"\n");
  expect_errors("DIR/cortex.toml:3: key \"gateway.metrics_listen\" must differ from "
                "gateway.listen (127.0.0.1:9000)");
  write_file("cortex.toml", "[gateway\n");
  expect_errors("DIR/cortex.toml:1:9: expected ']' closing the table header, found end of line");
}

static void test_models_errors(void **state) {
  (void)state;
  write_file("cortex.toml", "[[neurons]]\nname = \"n1\"\nendpoint = \"http://h:1\"\n"
                            "[[auth.keys]]\nkey = \"0123456789\"\nmodels = [\"nope\"]\n");
  write_file("models.toml", "[[models]]\nid = \"m1\"\naliases = [\"m2\"]\nneurons = [\"zz\"]\n"
                            "[[models]]\nid = \"m2\"\nmin_compute = \"x\"\nquant = \"Q3\"\n"
                            "[models.sampling]\ntemperature = 3\nseed = 1\n"
                            "[[models]]\npath = 3\n");
  expect_errors(
      "DIR/cortex.toml:4: key \"auth.keys[0].models\": \"nope\" is not a model id or alias of "
      "DIR/models.toml\n"
      "DIR/models.toml:8: key \"models[1].quant\" must be one of: stored, Q8_0, Q6_K, Q4_K, "
      "Q4_K_M (not \"Q3\")\n"
      "DIR/models.toml:7: key \"models[1].min_compute\" must be a compute capability "
      "\"MAJOR.MINOR\" (e.g. \"8.6\"), not \"x\"\n"
      "DIR/models.toml:11: key \"models[1].sampling.seed\" is not a known key (expected one of: "
      "temperature, top_p, top_k, min_p, repetition_penalty, presence_penalty, "
      "frequency_penalty, max_tokens)\n"
      "DIR/models.toml:10: key \"models[1].sampling.temperature\" must be a number in 0..2, not "
      "3\n"
      "DIR/models.toml:12: key \"models[2].id\" is required (a string)\n"
      "DIR/models.toml:13: key \"models[2].path\" must be a string, not an integer\n"
      "DIR/models.toml:5: key \"models[1].id\" \"m2\" is already used by models[0] (line 1)\n"
      "DIR/models.toml:1: key \"models[0].neurons\": \"zz\" is not a neuron of "
      "DIR/cortex.toml");
  write_file("cortex.toml", "");
  write_file("models.toml", "[[models]]\nid = \"a\"\ntensor_parallel = 2\n");
  cortex_config *c = load_ok();
  assert_int_equal(c->models->models[0].min_devices, 2); /* raised to the TP degree */
  cortex_config_free(c);
  remove_file("models.toml");
}

static void test_error_truncation(void **state) {
  (void)state;
  /* many errors: hx_err holds what fits and says how many there were */
  char big[8192] = "";
  for (int i = 0; i < 60; i++) {
    char line[64];
    snprintf(line, sizeof line, "[[neurons]]\nname = \"n%d\"\nendpoint = \"x\"\n", i);
    strcat(big, line);
  }
  write_file("cortex.toml", big);
  char path[160];
  snprintf(path, sizeof path, "%s/cortex.toml", g_dir);
  cortex_config *c;
  hx_err err;
  assert_int_equal(cortex_config_load(path, &c, &err), HX_EINVAL);
  assert_non_null(strstr(err.msg, "(60 errors in all;"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_examples_load),
      cmocka_unit_test(test_models_file_resolution),
      cmocka_unit_test(test_cortex_errors),
      cmocka_unit_test(test_models_errors),
      cmocka_unit_test(test_error_truncation),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
