/* test_model_qwen3.c — the qwen3 / qwen2 forward passes against transformers.
 *
 * Fixtures (tools/reference/make_fixtures.py): random-weight models saved as
 * HF directories (+ GGUF from the gguf package for the f32 ones) with the
 * transformers f32 logits of a 12-token prompt (every position) and of 8
 * decode steps, and a 32-token greedy continuation.
 *
 * Bounds, as max |ours - ref| / std(ref logits) over all positions:
 *   f32 weights, f32 KV: 1e-4 (only float summation order differs);
 *   bf16 weights, f32 KV: 1e-4 (the reference runs in f32 on the same bf16
 *     weights, which our kernels also widen exactly);
 *   f16 KV: 2e-3 (K/V rounded to 11 significant bits: ~2.4e-4 relative per
 *     element, amplified by the softmax and two layers);
 *   Q8_0 in-situ: 0.15 max / 0.03 rms (weights and activations both rounded
 *     to 8-bit blocks: ~0.3% relative noise per operand and matmul, summed
 *     over ~7 matmuls per layer);
 *   Q4_K_M: top-1 agreement reported (must be ≥ 50%: random-weight logits have many near-ties,
 * measured 13/20). */
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
#include <unistd.h>

#include "engine/engine.h"
#include "model_ref.h"
#include "engine/gguf.h"

#define DIR "tests/data/models/"

static void test_qwen3_f32(void **state) {
  (void)state;
  ref r;
  ref_load("qwen3-tiny-f32", &r);
  ref_cmp c = ref_run_logits(DIR "qwen3-tiny-f32", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = ref_run_logits(DIR "qwen3-tiny-f32.gguf", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = ref_run_logits(DIR "qwen3-tiny-f32.gguf", &r, HX_KV_F16, NULL);
  assert_true(c.max_rel < 2e-3);
  ref_check_greedy(DIR "qwen3-tiny-f32.gguf", &r);
  ref_check_greedy(DIR "qwen3-tiny-f32", &r);
  free(r.logits);
}

/* memory estimate, cancellation, errors the caller can cause */
static void test_engine_api(void **state) {
  (void)state;
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.n_threads = 1;
  o.n_ctx = 128;
  hx_engine_mem mem;
  hx_err err = {0};
  assert_int_equal(hx_engine_estimate(DIR "qwen3-tiny-f32.gguf", &o, &mem, &err), HX_OK);
  /* K and V, 2 layers, 128 positions, 2 kv heads x 32 dims, f16 */
  assert_int_equal(mem.kv_bytes_slot, 2 * 2 * 128 * 64 * 2);
  assert_true(mem.weight_bytes > 500000 && mem.weight_bytes < 700000);
  hx_engine *e = NULL;
  assert_int_equal(hx_engine_open(DIR "qwen3-tiny-f32.gguf", &o, &e, &err), HX_OK);
  const hx_engine_info *in = hx_engine_get_info(e);
  assert_string_equal(in->arch, "qwen3");
  assert_int_equal(in->n_ctx, 128);
  assert_int_equal(in->n_layers, 2);
  hx_engine_slot *s = NULL;
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  p.max_tokens = 4;
  atomic_bool cancel = true;
  int32_t prompt[3] = {1, 2, 3};
  hx_gen_result res;
  assert_int_equal(hx_engine_generate(e, s, prompt, 3, &p, NULL, NULL, &cancel, &res, &err), HX_OK);
  assert_int_equal(res.finish, HX_FINISH_CANCELLED);
  assert_int_equal(res.n_generated, 0);
  int32_t bad[1] = {100000};
  assert_int_equal(hx_engine_generate(e, s, bad, 1, &p, NULL, NULL, NULL, &res, &err), HX_EINVAL);
  assert_non_null(strstr(err.msg, "out of range"));
  int32_t *longp = calloc(200, sizeof *longp);
  assert_int_equal(hx_engine_generate(e, s, longp, 200, &p, NULL, NULL, NULL, &res, &err),
                   HX_ETOOLARGE);
  free(longp);
  hx_engine_slot_free(s);
  hx_engine_close(e);
  o.quant = "q9_z";
  assert_int_equal(hx_engine_open(DIR "qwen3-tiny-f32.gguf", &o, &e, &err), HX_EINVAL);
  assert_null(e);
}

/* A NaN in the final norm weight makes every logit NaN: the request must end
 * with HX_ENUMERIC and a message, not a token. */
static void test_nan_logits(void **state) {
  (void)state;
  hx_err err = {0};
  gguf_file *g = NULL;
  assert_int_equal(gguf_open(DIR "qwen3-tiny-f32.gguf", &g, &err), HX_OK);
  const gguf_tensor *t = gguf_tensor_find(g, "output_norm.weight");
  assert_non_null(t);
  const size_t off = gguf_data_offset(g) + t->offset, size = gguf_file_size(g);
  char *bytes = malloc(size);
  memcpy(bytes, gguf_file_base(g), size);
  gguf_close(g);
  const float nan = NAN;
  memcpy(bytes + off, &nan, sizeof nan);
  char path[] = "/tmp/helexa-nan-XXXXXX.gguf";
  int fd = mkstemps(path, 5);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "wb");
  assert_int_equal(fwrite(bytes, 1, size, f), size);
  fclose(f);
  free(bytes);
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.n_threads = 1;
  o.n_ctx = 64;
  hx_engine *e = NULL;
  hx_engine_slot *s = NULL;
  assert_int_equal(hx_engine_open(path, &o, &e, &err), HX_OK);
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  int32_t prompt[2] = {5, 6};
  collect c = {0};
  hx_gen_result res;
  assert_int_equal(hx_engine_generate(e, s, prompt, 2, &p, on_tok, &c, NULL, &res, &err),
                   HX_ENUMERIC);
  assert_int_equal(res.finish, HX_FINISH_ERROR);
  assert_int_equal(c.n, 0);
  assert_non_null(strstr(err.msg, "non-finite"));
  hx_engine_slot_free(s);
  hx_engine_close(e);
  unlink(path);
}

static void test_qwen3_yarn(void **state) {
  (void)state;
  ref r;
  ref_load("qwen3-yarn-f32", &r);
  ref_cmp c = ref_run_logits(DIR "qwen3-yarn-f32", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  ref_check_greedy(DIR "qwen3-yarn-f32", &r);
  free(r.logits);
}

static void test_qwen2_f32(void **state) {
  (void)state;
  ref r;
  ref_load("qwen2-tiny-f32", &r);
  ref_cmp c = ref_run_logits(DIR "qwen2-tiny-f32", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = ref_run_logits(DIR "qwen2-tiny-f32.gguf", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  ref_check_greedy(DIR "qwen2-tiny-f32.gguf", &r);
  free(r.logits);
}

static void test_qwen3_bf16_quant(void **state) {
  (void)state;
  ref r;
  ref_load("qwen3-k-bf16", &r);
  ref_cmp c = ref_run_logits(DIR "qwen3-k-bf16", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  ref_check_greedy(DIR "qwen3-k-bf16", &r);
  c = ref_run_logits(DIR "qwen3-k-bf16", &r, HX_KV_F16, "q8_0");
  assert_true(c.max_rel < 0.15 && c.rms_rel < 0.03);
  c = ref_run_logits(DIR "qwen3-k-bf16", &r, HX_KV_Q8_0, "q8_0");
  assert_true(c.max_rel < 0.15 && c.rms_rel < 0.04);
  c = ref_run_logits(DIR "qwen3-k-bf16", &r, HX_KV_F16, "q4_k_m");
  printf("  Q4_K_M top-1 agreement with transformers: %d/%d\n", c.top1_agree, c.n_rows);
  assert_true(c.top1_agree * 2 >= c.n_rows);
  free(r.logits);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_qwen3_f32),  cmocka_unit_test(test_engine_api),
      cmocka_unit_test(test_nan_logits), cmocka_unit_test(test_qwen3_yarn),
      cmocka_unit_test(test_qwen2_f32),  cmocka_unit_test(test_qwen3_bf16_quant),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
