/* test_cuda_model.c — whole models on the CUDA backend against the
 * transformers fixtures (tools/reference/make_fixtures.py) and against the
 * CPU backend: logits of a prompt prefill plus decode steps, and the greedy
 * continuation. Skipped (77) without a GPU.
 *
 * Bounds are the CPU engine's (test_model_qwen3.c): f32 weights and an f32
 * KV cache compute the same function in f32 (cuBLAS in strict f32 for the
 * prefill, f32 matvecs for decode): max |Δ| / std(logits) < 1e-4 against
 * transformers, greedy tokens identical. In-situ Q8_0 (f16 KV): 0.15 max /
 * 0.03 rms against transformers — weights and activations rounded to 8-bit
 * blocks (the GPU quantizes activations in blocks of 32, the CPU in 32 or
 * 256, so CUDA and CPU differ from each other by about as much as each
 * differs from the reference). Q4_K_M: top-1 agreement on at least half the
 * rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#ifdef HELEXA_HAVE_CUDA
#include "model_ref.h"
#include "engine/backend/cuda/backend_cuda.h"
#endif

#define DIR "tests/data/models/"

#ifdef HELEXA_HAVE_CUDA

/* Logits of prompt (every row) + decode steps on one backend. */
static float *run(const char *path, const char *backend, const ref *r, hx_kv_type kv,
                  const char *quant) {
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.backend = backend;
  o.n_threads = 2;
  o.n_ctx = 128;
  o.kv_type = kv;
  o.quant = quant;
  hx_engine *e = NULL;
  hx_err err = {0};
  if (hx_engine_open(path, &o, &e, &err) != HX_OK)
    fail_msg("open %s on %s: %s", path, backend, err.msg);
  hx_engine_slot *s = NULL;
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  size_t rows = (size_t)(r->n_prompt + r->n_decode);
  float *out = malloc(rows * (size_t)r->vocab * sizeof(float));
  float *last = malloc((size_t)r->vocab * sizeof(float));
  assert_int_equal(hx_engine_eval(e, s, r->prompt, r->n_prompt, last, out, NULL, &err), HX_OK);
  for (int d = 0; d < r->n_decode; d++) {
    if (hx_engine_eval(e, s, &r->decode[d], 1, last, NULL, NULL, &err) != HX_OK)
      fail_msg("decode step %d on %s: %s", d, backend, err.msg);
    memcpy(out + (size_t)(r->n_prompt + d) * r->vocab, last, (size_t)r->vocab * sizeof(float));
  }
  free(last);
  hx_engine_slot_free(s);
  hx_engine_close(e);
  return out;
}

/* Fails unless max and rms |a - b| / std are within bounds and at least
 * top1_min rows agree on the arg-max. */
static void compare(const char *what, const ref *r, const float *a, const float *b,
                    double max_bound, double rms_bound, int top1_min) {
  size_t rows = (size_t)(r->n_prompt + r->n_decode);
  double mx = 0, rms = 0;
  int top1 = 0;
  for (size_t t = 0; t < rows; t++) {
    const float *x = a + t * r->vocab, *y = b + t * r->vocab;
    int ix = 0, iy = 0;
    for (int i = 0; i < r->vocab; i++) {
      double d = fabs((double)x[i] - y[i]) / r->std;
      mx = d > mx ? d : mx;
      rms += d * d;
      ix = x[i] > x[ix] ? i : ix;
      iy = y[i] > y[iy] ? i : iy;
    }
    top1 += ix == iy;
  }
  rms = sqrt(rms / ((double)rows * r->vocab));
  printf("  %-46s max_rel %.2e rms_rel %.2e top1 %d/%zu\n", what, mx, rms, top1, rows);
  if (!(mx <= max_bound && rms <= rms_bound && top1 >= top1_min))
    fail_msg("%s: max_rel %g (bound %g), rms_rel %g (bound %g), top1 %d (min %d)", what, mx,
             max_bound, rms, rms_bound, top1, top1_min);
}

static void greedy_cuda(const char *path, const ref *r) {
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.backend = "cuda";
  o.n_ctx = 128;
  o.kv_type = HX_KV_F32;
  hx_engine *e = NULL;
  hx_err err = {0};
  assert_int_equal(hx_engine_open(path, &o, &e, &err), HX_OK);
  hx_engine_slot *s = NULL;
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  collect c = {0};
  hx_gen_result res;
  ref_generate_greedy(e, s, r, &c, &res);
  assert_int_equal(c.n, r->n_greedy);
  assert_memory_equal(c.ids, r->greedy, (size_t)r->n_greedy * sizeof(int32_t));
  printf("  %-46s greedy %d tokens identical to transformers\n", path, c.n);
  hx_engine_slot_free(s);
  hx_engine_close(e);
}

static void model_case(const char *name, const char *file) {
  ref r;
  ref_load(name, &r);
  char path[256];
  snprintf(path, sizeof path, DIR "%s", file);
  float *g = run(path, "cuda", &r, HX_KV_F32, NULL);
  char what[128];
  snprintf(what, sizeof what, "%s cuda f32 vs transformers", file);
  compare(what, &r, g, r.logits, 1e-4, 1e-5, r.n_prompt + r.n_decode);
  greedy_cuda(path, &r);
  /* in-situ Q8_0: the CPU engine's bound against transformers (quantization
   * noise of weights and activations), and CUDA vs CPU reported */
  float *gq = run(path, "cuda", &r, HX_KV_F16, "q8_0");
  float *cq = run(path, "cpu", &r, HX_KV_F16, "q8_0");
  snprintf(what, sizeof what, "%s q8_0 cuda vs transformers", file);
  compare(what, &r, gq, r.logits, 0.15, 0.03, 0);
  snprintf(what, sizeof what, "%s q8_0 cuda vs cpu", file);
  compare(what, &r, gq, cq, 0.15, 0.03, 0);
  free(gq);
  free(cq);
  /* Q4_K_M: top-1 agreement with transformers on at least half the rows
   * (random-weight logits have many near-ties; the CPU engine measures 13/20) */
  gq = run(path, "cuda", &r, HX_KV_F16, "q4_k_m");
  snprintf(what, sizeof what, "%s q4_k_m cuda vs transformers", file);
  compare(what, &r, gq, r.logits, INFINITY, INFINITY, (r.n_prompt + r.n_decode) / 2);
  free(gq);
  free(g);
  free(r.logits);
}

static void test_qwen3(void **state) {
  (void)state;
  model_case("qwen3-tiny-f32", "qwen3-tiny-f32.gguf");
}

static void test_qwen2(void **state) {
  (void)state;
  model_case("qwen2-tiny-f32", "qwen2-tiny-f32.gguf");
}

/* bf16 weights at K-quant-compatible widths (rows multiples of 256), so the
 * in-situ Q4_K_M really is Q4_K + Q6_K (the f32 fixtures above are too narrow
 * and fall back to Q8_0); and the YaRN-scaled RoPE fixture. */
static void test_qwen3_bf16_k_and_yarn(void **state) {
  (void)state;
  ref r;
  ref_load("qwen3-k-bf16", &r);
  /* bf16 weights: the prefill GEMMs run on tensor cores with activations
   * rounded to bf16 (8-bit mantissa, ~2e-3 relative per element), decode
   * matvecs keep f32 activations; the reference widens everything to f32.
   * Measured 1.3e-2 max / 2.4e-3 rms: bound 3e-2 / 5e-3, all top-1 equal. */
  float *g = run(DIR "qwen3-k-bf16", "cuda", &r, HX_KV_F32, NULL);
  compare("qwen3-k-bf16 cuda bf16 vs transformers", &r, g, r.logits, 3e-2, 5e-3,
          r.n_prompt + r.n_decode);
  free(g);
  g = run(DIR "qwen3-k-bf16", "cuda", &r, HX_KV_F16, "q4_k_m");
  float *c = run(DIR "qwen3-k-bf16", "cpu", &r, HX_KV_F16, "q4_k_m");
  compare("qwen3-k-bf16 q4_k_m cuda vs transformers", &r, g, r.logits, INFINITY, INFINITY,
          (r.n_prompt + r.n_decode) / 2);
  compare("qwen3-k-bf16 q4_k_m cuda vs cpu", &r, g, c, INFINITY, INFINITY, 0);
  free(g);
  free(c);
  free(r.logits);
  ref_load("qwen3-yarn-f32", &r);
  g = run(DIR "qwen3-yarn-f32", "cuda", &r, HX_KV_F32, NULL);
  compare("qwen3-yarn-f32 cuda f32 vs transformers", &r, g, r.logits, 1e-4, 1e-5,
          r.n_prompt + r.n_decode);
  free(g);
  free(r.logits);
}

#endif

int main(void) {
#ifndef HELEXA_HAVE_CUDA
  printf("built without CUDA: skipped\n");
  return 77;
#else
  if (hx_backend_cuda_device_count() == 0) {
    printf("no CUDA device: skipped\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_qwen3), cmocka_unit_test(test_qwen2),
                                     cmocka_unit_test(test_qwen3_bf16_k_and_yarn)};
  return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
