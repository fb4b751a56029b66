/* test_sampler.c — sampling pipeline and stop strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "engine/sampler.h"

enum { V = 50 };

static void fill(float *l) {
  for (int i = 0; i < V; i++)
    l[i] = (float)((i * 37) % V) / 10.0f; /* max 4.9 at i with i*37%50 == 49: i = 27 */
}

static int32_t draw(hx_sampler *s) {
  float l[V];
  fill(l);
  return hx_sampler_sample(s, l, NULL, NULL, NULL);
}

static void test_greedy_and_bias(void **state) {
  (void)state;
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  p.greedy = true;
  hx_sampler s;
  hx_err err;
  assert_int_equal(hx_sampler_init(&s, V, &p, &err), HX_OK);
  assert_int_equal(draw(&s), 27);
  hx_sampler_free(&s);
  p.n_bias = 1;
  p.bias[0] = (hx_logit_bias){.id = 27, .bias = -INFINITY};
  assert_int_equal(hx_sampler_init(&s, V, &p, &err), HX_OK);
  int32_t second = draw(&s);
  assert_true(second != 27);
  hx_sampler_free(&s);
  /* invalid parameters are refused with a message naming the field */
  p.top_p = 0.0f;
  assert_int_equal(hx_sampler_init(&s, V, &p, &err), HX_EINVAL);
  assert_non_null(strstr(err.msg, "top_p"));
}

static void test_seed_and_topk(void **state) {
  (void)state;
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  p.temperature = 2.0f;
  p.seed = 1234;
  hx_sampler a, b;
  hx_err err;
  int32_t sa[64], sb[64];
  assert_int_equal(hx_sampler_init(&a, V, &p, &err), HX_OK);
  assert_int_equal(hx_sampler_init(&b, V, &p, &err), HX_OK);
  int distinct = 0;
  for (int i = 0; i < 64; i++) {
    sa[i] = draw(&a);
    sb[i] = draw(&b);
    distinct += i > 0 && sa[i] != sa[i - 1];
  }
  assert_memory_equal(sa, sb, sizeof sa); /* same seed, same tokens */
  assert_true(distinct > 10);             /* and it does sample */
  hx_sampler_free(&a);
  hx_sampler_free(&b);
  p.top_k = 1; /* top-k 1 is greedy whatever the temperature */
  assert_int_equal(hx_sampler_init(&a, V, &p, &err), HX_OK);
  for (int i = 0; i < 20; i++)
    assert_int_equal(draw(&a), 27);
  hx_sampler_free(&a);
  p.top_k = 0;
  p.min_p = 0.99f; /* only tokens within 1% of the best survive: the best */
  assert_int_equal(hx_sampler_init(&a, V, &p, &err), HX_OK);
  for (int i = 0; i < 20; i++)
    assert_int_equal(draw(&a), 27);
  hx_sampler_free(&a);
}

static void test_penalties_logprobs(void **state) {
  (void)state;
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  p.greedy = true;
  p.presence_penalty = 2.0f;
  p.n_logprobs = 3;
  hx_sampler s;
  hx_err err;
  assert_int_equal(hx_sampler_init(&s, V, &p, &err), HX_OK);
  hx_sampler_accept(&s, 27, true); /* 4.9 - 2 = 2.9 < 4.8 */
  float l[V], lp;
  int32_t ids[3];
  float lps[3];
  fill(l);
  int32_t t = hx_sampler_sample(&s, l, &lp, ids, lps);
  assert_true(t != 27);
  /* logprobs are of the raw logits: the best raw token is 27 */
  assert_int_equal(ids[0], 27);
  assert_true(lps[0] >= lps[1] && lps[1] >= lps[2] && lps[0] < 0);
  double z = 0;
  fill(l);
  for (int i = 0; i < V; i++)
    z += exp(l[i]);
  assert_true(fabs(lps[0] - (4.9 - log(z))) < 1e-4);
  hx_sampler_free(&s);
}

static void feed_all(hx_stop_matcher *m, const char *const *pieces, int n, char *out,
                     bool *matched) {
  char buf[512];
  size_t len = 0;
  *matched = false;
  out[0] = 0;
  for (int i = 0; i < n && !*matched; i++) {
    *matched = hx_stop_matcher_feed(m, pieces[i], strlen(pieces[i]), buf, sizeof buf, &len);
    strncat(out, buf, len);
  }
  if (!*matched) {
    len = hx_stop_matcher_flush(m, buf, sizeof buf);
    strncat(out, buf, len);
  }
}

static void test_stop_strings(void **state) {
  (void)state;
  const char *stops[] = {"</end>", "STOP"};
  hx_stop_matcher m;
  hx_err err;
  char out[512];
  bool matched;
  assert_int_equal(hx_stop_matcher_init(&m, stops, 2, &err), HX_OK);
  const char *p1[] = {"hello </", "en", "d> never"};
  feed_all(&m, p1, 3, out, &matched);
  assert_true(matched);
  assert_string_equal(out, "hello ");
  assert_int_equal(hx_stop_matcher_init(&m, stops, 2, &err), HX_OK);
  const char *p2[] = {"a </e", "x> S", "TO", "P!"};
  feed_all(&m, p2, 4, out, &matched);
  assert_true(matched);
  assert_string_equal(out, "a </ex> ");
  assert_int_equal(hx_stop_matcher_init(&m, stops, 2, &err), HX_OK);
  const char *p3[] = {"no stop here </en"};
  feed_all(&m, p3, 1, out, &matched);
  assert_false(matched);
  assert_string_equal(out, "no stop here </en"); /* held-back tail released at the end */
  const char *bad[] = {""};
  assert_int_equal(hx_stop_matcher_init(&m, bad, 1, &err), HX_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_greedy_and_bias),
      cmocka_unit_test(test_seed_and_topk),
      cmocka_unit_test(test_penalties_logprobs),
      cmocka_unit_test(test_stop_strings),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
