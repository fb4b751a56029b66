/* test_quant.c — quant formats against the `gguf` Python package's numpy
 * dequantizers (fixtures in tests/data/quant, from tools/make_quant_fixtures.py),
 * quantizer quality (reference search vs plain min/max on Gaussian and
 * heavy-tailed data), and the q8 dot products against f32 math. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"

static void *read_file(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    fprintf(stderr, "missing fixture %s\n", path);
    fail();
  }
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  void *p = malloc((size_t)n);
  assert_non_null(p);
  assert_int_equal(fread(p, 1, (size_t)n, fp), (size_t)n);
  fclose(fp);
  *len = (size_t)n;
  return p;
}

static void check_fixture(const char *stem, quant_type t) {
  char p1[256], p2[256];
  snprintf(p1, sizeof p1, "tests/data/quant/%s.bin", stem);
  snprintf(p2, sizeof p2, "tests/data/quant/%s.f32", stem);
  size_t nb, nf;
  uint8_t *raw = read_file(p1, &nb);
  float *ref = read_file(p2, &nf);
  int64_t n = (int64_t)(nf / 4);
  size_t bytes;
  assert_true(quant_row_bytes(t, n, &bytes));
  assert_int_equal(bytes, nb);
  float *out = malloc(nf);
  quant_row_dequantize(t, raw, out, n);
  for (int64_t i = 0; i < n; i++) {
    float tol = 1e-6f * fabsf(ref[i]) + 1e-12f;
    if (fabsf(out[i] - ref[i]) > tol) {
      fprintf(stderr, "%s[%lld]: got %.9g want %.9g\n", stem, (long long)i, out[i], ref[i]);
      fail();
    }
  }
  free(raw);
  free(ref);
  free(out);
}

static void test_dequantize_matches_gguf_py(void **state) {
  (void)state;
  check_fixture("q8_0", QUANT_Q8_0);
  check_fixture("q4_k", QUANT_Q4_K);
  check_fixture("q5_k", QUANT_Q5_K);
  check_fixture("q6_k", QUANT_Q6_K);
  check_fixture("f16", QUANT_F16);
  check_fixture("bf16", QUANT_BF16);
}

static void test_bf16_rounding_matches_gguf_py(void **state) {
  (void)state;
  size_t ns, nb;
  float *src = read_file("tests/data/quant/bf16_src.f32", &ns);
  uint16_t *want = read_file("tests/data/quant/bf16.bin", &nb);
  assert_int_equal(ns / 4, nb / 2);
  for (size_t i = 0; i < nb / 2; i++)
    assert_int_equal(quant_f32_to_bf16(src[i]), want[i]);
  free(src);
  free(want);
}

static void test_q8_0_quantize_matches_gguf_py(void **state) {
  (void)state;
  size_t ns, nq;
  float *src = read_file("tests/data/quant/q8_0_src.f32", &ns);
  uint8_t *want = read_file("tests/data/quant/q8_0_quant.bin", &nq);
  uint8_t *got = malloc(nq);
  quant_row_quantize(QUANT_Q8_0, src, got, (int64_t)(ns / 4));
  assert_memory_equal(got, want, nq);
  free(src);
  free(want);
  free(got);
}

static void test_f16_conversion(void **state) {
  (void)state;
  /* every finite f16 round-trips exactly through f32 */
  for (uint32_t h = 0; h < 65536; h++) {
    if (((h >> 10) & 0x1f) == 0x1f)
      continue;
    float f = quant_f16_to_f32((uint16_t)h);
    assert_int_equal(quant_f32_to_f16(f), h);
  }
  assert_int_equal(quant_f32_to_f16(65520.f), 0x7c00);            /* rounds to inf */
  assert_int_equal(quant_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
  assert_true(isnan(quant_f16_to_f32(quant_f32_to_f16(NAN))));
}

static uint64_t rng_state = 88172645463325252ull;
static double urand(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return ((rng_state >> 11) + 0.5) * 0x1p-53;
}
static double nrand(void) { return sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand()); }

static double rmse(quant_type t, const float *x, int64_t n, bool fast) {
  size_t bytes;
  assert_true(quant_row_bytes(t, n, &bytes));
  void *q = malloc(bytes);
  float *y = malloc((size_t)n * 4);
  if (fast)
    quant_row_quantize_fast(t, x, q, n);
  else
    quant_row_quantize(t, x, q, n);
  quant_row_dequantize(t, q, y, n);
  double e = 0, s = 0;
  for (int64_t i = 0; i < n; i++) {
    e += (double)(x[i] - y[i]) * (x[i] - y[i]);
    s += (double)x[i] * x[i];
  }
  free(q);
  free(y);
  return sqrt(e / s); /* relative RMSE */
}

static void test_quantizer_quality(void **state) {
  (void)state;
  enum { N = 256 * 64 };
  float *gauss = malloc(N * 4), *heavy = malloc(N * 4);
  for (int i = 0; i < N; i++) {
    gauss[i] = (float)(0.02 * nrand());
    double g = nrand();
    heavy[i] = (float)(0.02 * g / sqrt(urand() + 1e-3)); /* Student-t-like tails */
  }
  struct {
    quant_type t;
    double max_gauss; /* relative RMSE bounds for the reference quantizer */
  } cases[] = {{QUANT_Q4_K, 0.095}, {QUANT_Q5_K, 0.047}, {QUANT_Q6_K, 0.024}, {QUANT_Q8_0, 0.006}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    quant_type t = cases[c].t;
    double rg = rmse(t, gauss, N, false), rgf = rmse(t, gauss, N, true);
    double rh = rmse(t, heavy, N, false), rhf = rmse(t, heavy, N, true);
    printf("%-5s gauss ref %.4f fast %.4f | heavy ref %.4f fast %.4f\n", quant_type_name(t), rg,
           rgf, rh, rhf);
    assert_true(rg < cases[c].max_gauss);
    assert_true(rg <= rgf * 1.0001);
    assert_true(rh <= rhf * 1.0001);
    if (t != QUANT_Q8_0) { /* the search must actually gain something */
      assert_true(rg < rgf * 0.97);
      assert_true(rh < rhf * 0.99);
    }
  }
  free(gauss);
  free(heavy);
}

static void test_dot_products(void **state) {
  (void)state;
  enum { N = 256 * 8 };
  float *w = malloc(N * 4), *x = malloc(N * 4), *wd = malloc(N * 4), *xd = malloc(N * 4);
  for (int i = 0; i < N; i++) {
    w[i] = (float)nrand();
    x[i] = (float)nrand();
  }
  quant_type types[] = {QUANT_Q8_0, QUANT_Q4_K, QUANT_Q5_K, QUANT_Q6_K, QUANT_F16, QUANT_BF16};
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    quant_type t = types[k], at = quant_type_dot_type(t);
    size_t wb, xb;
    assert_true(quant_row_bytes(t, N, &wb));
    assert_true(at == QUANT_F32 || quant_row_bytes(at, N, &xb));
    void *wq = malloc(wb), *xq = at == QUANT_F32 ? NULL : malloc(xb);
    quant_row_quantize(t, w, wq, N);
    quant_row_dequantize(t, wq, wd, N);
    double ref = 0, ref_q = 0;
    if (xq) {
      quant_row_quantize(at, x, xq, N);
      quant_row_dequantize(at, xq, xd, N);
    } else {
      memcpy(xd, x, N * 4);
    }
    for (int i = 0; i < N; i++) {
      ref += (double)wd[i] * x[i];
      ref_q += (double)wd[i] * xd[i];
    }
    float d32 = quant_row_dot_f32(t, wq, x, N);
    float d8 = quant_row_dot_q8(t, wq, xq ? xq : (void *)x, N);
    assert_true(fabs(d32 - ref) < 1e-3 * sqrt(N));
    /* integer path: exactly the dequantized math up to float rounding */
    assert_true(fabs(d8 - ref_q) < 2e-3 * sqrt(N));
    free(wq);
    free(xq);
  }
  free(w);
  free(x);
  free(wd);
  free(xd);
}

static void test_type_table(void **state) {
  (void)state;
  assert_int_equal(quant_type_block_bytes(QUANT_Q4_K), 144);
  assert_int_equal(quant_type_block_bytes(QUANT_Q6_K), 210);
  assert_int_equal(quant_type_block_size(QUANT_Q8_0), 32);
  assert_false(quant_type_is_valid(4));
  assert_false(quant_type_is_valid(31));
  assert_false(quant_type_is_valid(1000));
  assert_true(quant_type_is_valid(QUANT_BF16));
  size_t b;
  assert_false(quant_row_bytes(QUANT_Q4_K, 100, &b));
  assert_false(quant_row_bytes(QUANT_F64, INT64_MAX, &b));
  assert_true(quant_row_bytes(QUANT_Q4_K, 512, &b));
  assert_int_equal(b, 288);
  quant_type t;
  assert_true(quant_type_parse("Q4_K", &t));
  assert_int_equal(t, QUANT_Q4_K);
  assert_string_equal(quant_type_name(QUANT_BF16), "bf16");
  assert_false(quant_type_parse("q4_k_m", &t));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_type_table),
      cmocka_unit_test(test_f16_conversion),
      cmocka_unit_test(test_dequantize_matches_gguf_py),
      cmocka_unit_test(test_bf16_rounding_matches_gguf_py),
      cmocka_unit_test(test_q8_0_quantize_matches_gguf_py),
      cmocka_unit_test(test_quantizer_quality),
      cmocka_unit_test(test_dot_products),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
