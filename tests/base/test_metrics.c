/* test_metrics.c — Prometheus registry: text format, histograms, escaping,
 * bounded cardinality, concurrent updates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "base/metrics.h"

static void test_render(void **state) {
  (void)state;
  hx_metrics *m = hx_metrics_create(0);
  const char *lab[] = {"model", "outcome"};
  hx_metric *c = hx_metrics_counter(m, "req_total", "Requests.", lab, 2);
  hx_metric *g = hx_metrics_gauge(m, "mem_bytes", "Memory\nin use.", NULL, 0);
  const double b[] = {0.1, 1};
  hx_metric *h = hx_metrics_histogram(m, "lat_seconds", "Latency.", lab, 1, b, 2);
  assert_ptr_equal(hx_metrics_counter(m, "req_total", "x", lab, 2), c);
  hx_metric_inc(c, (const char *[]){"a\"b\\c\nd", "ok"});
  hx_metric_add(c, (const char *[]){"a\"b\\c\nd", "ok"}, 2);
  hx_metric_add(c, (const char *[]){"m", "ok"}, -5); /* counters never go down */
  hx_metric_set(g, NULL, 1234);
  hx_metric_observe(h, (const char *[]){"m"}, 0.05);
  hx_metric_observe(h, (const char *[]){"m"}, 0.5);
  hx_metric_observe(h, (const char *[]){"m"}, 5);
  assert_true(hx_metric_value(c, (const char *[]){"a\"b\\c\nd", "ok"}) == 3);
  assert_true(hx_metric_value(h, (const char *[]){"m"}) == 3);
  hx_buf out;
  hx_buf_init(&out, 1 << 20);
  assert_int_equal(hx_metrics_render(m, &out), HX_OK);
  const char *want[] = {
      "# HELP req_total Requests.\n# TYPE req_total counter\n",
      "req_total{model=\"a\\\"b\\\\c\\nd\",outcome=\"ok\"} 3\n",
      "# HELP mem_bytes Memory\\nin use.\n# TYPE mem_bytes gauge\nmem_bytes 1234\n",
      "# TYPE lat_seconds histogram\n",
      "lat_seconds_bucket{model=\"m\",le=\"0.1\"} 1\n",
      "lat_seconds_bucket{model=\"m\",le=\"1\"} 2\n",
      "lat_seconds_bucket{model=\"m\",le=\"+Inf\"} 3\n",
      "lat_seconds_sum{model=\"m\"} 5.55\n",
      "lat_seconds_count{model=\"m\"} 3\n",
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    if (!strstr(out.data, want[i]))
      fprintf(stderr, "missing: %s\nin:\n%s\n", want[i], out.data);
    assert_non_null(strstr(out.data, want[i]));
  }
  assert_null(strstr(out.data, "req_total{model=\"m\""));
  hx_metric_clear(g);
  hx_buf_reset(&out);
  hx_metrics_render(m, &out);
  assert_null(strstr(out.data, "mem_bytes 1234"));
  hx_buf_free(&out);
  hx_metrics_free(m);
}

static void test_cardinality(void **state) {
  (void)state;
  hx_metrics *m = hx_metrics_create(8);
  const char *lab[] = {"model"};
  hx_metric *c = hx_metrics_counter(m, "x_total", "X.", lab, 1);
  for (int i = 0; i < 1000; i++) {
    char name[32];
    snprintf(name, sizeof name, "model-%d", i);
    hx_metric_inc(c, (const char *[]){name});
  }
  hx_buf out;
  hx_buf_init(&out, 1 << 20);
  hx_metrics_render(m, &out);
  size_t lines = 0;
  for (const char *p = out.data; (p = strstr(p, "x_total{")); p++)
    lines++;
  assert_int_equal(lines, 8);
  assert_true(hx_metric_value(c, (const char *[]){"other"}) == 1000 - 7);
  hx_buf_free(&out);
  hx_metrics_free(m);
}

static hx_metric *shared;
static void *hammer(void *arg) {
  (void)arg;
  for (int i = 0; i < 10000; i++)
    hx_metric_observe(shared, NULL, 0.01);
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  hx_metrics *m = hx_metrics_create(0);
  shared = hx_metrics_histogram(m, "t_seconds", "T.", NULL, 0, hx_metrics_buckets_latency_s,
                                hx_metrics_buckets_latency_n);
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&t[i], NULL, hammer, NULL);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  assert_true(hx_metric_value(shared, NULL) == 40000);
  hx_metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_render),
      cmocka_unit_test(test_cardinality),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
