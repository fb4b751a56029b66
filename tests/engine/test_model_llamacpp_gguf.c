/* test_model_llamacpp_gguf.c — GGUF files made by llama.cpp's own converter
 * load in our engine and give the transformers logits.
 *
 * Fixtures: tests/data/models/<name>.llamacpp.gguf, written from the HF
 * directory tests/data/models/<name> by llama.cpp's convert_hf_to_gguf.py
 * (outtype f32; tools/reference/convert_llamacpp.py). The reference is the
 * same transformers run as for the HF directory (ref.json / ref.bin), so a
 * pass pins the converter's transforms as our loader reads them: zero-centred
 * norms stored + 1, ssm_a = -exp(A_log), dt_bias renamed, conv1d squeezed,
 * qkvz regrouped (qwen3next), V heads reordered grouped → tiled (qwen35*),
 * experts stacked.
 *
 * Bound, as in test_model_qwen3.c: max |ours - ref| / std(ref logits) over
 * every prompt position and decode step < 1e-4 (f32 weights, f32 KV; only
 * the float summation order differs), and the greedy continuation equal.
 *
 * Before any forward pass, both files are opened by model_file and compared
 * tensor by tensor (names, shapes, types, values) and in their
 * hyper-parameters: our HF-directory transforms against llama.cpp's. This
 * part runs as soon as the fixture exists, forward pass or not.
 *
 * An arch whose forward pass is not in the engine yet (loading the HF
 * directory reports HX_EUNSUPPORTED), or whose fixture directory does not
 * exist yet, is skipped with a message. Once the HF directory loads, the
 * llama.cpp GGUF must exist and pass. */
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
#include <sys/stat.h>

#include "engine/engine.h"
#include "engine/model_file.h"
#include "model_ref.h"

static bool path_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* Opens path with f32 KV; HX_OK or the open's code (err filled). */
static hx_code open_f32(const char *path, hx_engine **e, hx_err *err) {
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.n_threads = 2;
  o.n_ctx = 128;
  o.kv_type = HX_KV_F32;
  return hx_engine_open(path, &o, e, err);
}

/* Prompt (every position) then the decode steps one at a time on a fresh
 * slot of e; returns max |ours - ref| / std(ref). */
static double max_rel_logits(hx_engine *e, const ref *r) {
  hx_err err = {0};
  hx_engine_slot *s = NULL;
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  float *all = malloc((size_t)r->n_prompt * (size_t)r->vocab * sizeof(float));
  float *last = malloc((size_t)r->vocab * sizeof(float));
  assert_non_null(all);
  assert_non_null(last);
  if (hx_engine_eval(e, s, r->prompt, r->n_prompt, last, all, NULL, &err) != HX_OK)
    fail_msg("prefill: %s", err.msg);
  double worst = 0;
  for (int t = 0; t < r->n_prompt + r->n_decode; t++) {
    if (t >= r->n_prompt &&
        hx_engine_eval(e, s, &r->decode[t - r->n_prompt], 1, last, NULL, NULL, &err) != HX_OK)
      fail_msg("decode %d: %s", t - r->n_prompt, err.msg);
    const float *ours = t < r->n_prompt ? all + (size_t)t * r->vocab : last;
    const float *want = r->logits + (size_t)t * r->vocab;
    for (int i = 0; i < r->vocab; i++) {
      double d = fabs((double)ours[i] - want[i]) / r->std;
      worst = d > worst ? d : worst;
    }
  }
  free(all);
  free(last);
  hx_engine_slot_free(s);
  return worst;
}

#define SAME_HP(field)                                                                             \
  do {                                                                                             \
    if (a->field != b->field)                                                                      \
      fail_msg("%s: hparam " #field " HF %g, llama.cpp GGUF %g", name, (double)a->field,           \
               (double)b->field);                                                                  \
  } while (0)

/* The HF directory and llama.cpp's GGUF of it, as model_file reads them,
 * hold the same hyper-parameters and the same tensors (canonical names,
 * shapes, f32 values). */
static void check_same_weights(const char *name, const char *dir, const char *gguf) {
  model_file *hf = NULL, *gg = NULL;
  hx_err err = {0};
  model_file_opts o = {0};
  if (model_file_open(dir, &o, &hf, &err) != HX_OK)
    fail_msg("model_file_open %s: %s", dir, err.msg);
  if (model_file_open(gguf, &o, &gg, &err) != HX_OK)
    fail_msg("model_file_open %s: %s", gguf, err.msg);
  const model_hparams *a = model_file_hparams(hf), *b = model_file_hparams(gg);
  SAME_HP(arch);
  SAME_HP(n_layer);
  SAME_HP(n_embd);
  SAME_HP(n_vocab);
  SAME_HP(n_head);
  SAME_HP(n_head_kv);
  SAME_HP(head_dim_k);
  SAME_HP(head_dim_v);
  SAME_HP(rms_eps);
  SAME_HP(rope_freq_base);
  SAME_HP(n_rot);
  SAME_HP(tied_embeddings);
  SAME_HP(attn_qkv_bias);
  SAME_HP(attn_output_gate);
  SAME_HP(n_expert);
  SAME_HP(n_expert_used);
  SAME_HP(n_ff_exp);
  SAME_HP(n_ff_shexp);
  SAME_HP(expert_weights_norm);
  SAME_HP(ssm_d_conv);
  SAME_HP(ssm_d_state);
  SAME_HP(ssm_n_group);
  SAME_HP(ssm_dt_rank);
  SAME_HP(ssm_d_inner);
  SAME_HP(ssm_head_v_dim);
  for (int l = 0; l < a->n_layer; l++)
    SAME_HP(layer_recurrent[l]);
  const size_t n = model_file_tensor_count(hf);
  assert_int_equal(model_file_tensor_count(gg), n);
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    const model_tensor *x = model_file_tensor_at(hf, i);
    const model_tensor *y = model_file_tensor(gg, x->name);
    if (!y)
      fail_msg("%s: tensor %s of the HF directory is not in llama.cpp's GGUF", name, x->name);
    for (int d = 0; d < 4; d++)
      if (x->ne[d] != y->ne[d])
        fail_msg("%s: %s ne[%d] HF %lld, llama.cpp GGUF %lld", name, x->name, d,
                 (long long)x->ne[d], (long long)y->ne[d]);
    assert_int_equal(x->type, QUANT_F32);
    assert_int_equal(y->type, QUANT_F32);
    assert_int_equal(x->nbytes, y->nbytes);
    const float *p = x->data, *q = y->data;
    for (size_t k = 0; k < x->nbytes / sizeof(float); k++) {
      double d = fabs((double)p[k] - q[k]) / (1.0 + fabs((double)p[k]));
      if (!(d <= 1e-6))
        fail_msg("%s: %s[%zu] HF %.9g, llama.cpp GGUF %.9g", name, x->name, k, (double)p[k],
                 (double)q[k]);
      worst = d > worst ? d : worst;
    }
  }
  printf("  %-20s %zu tensors equal to llama.cpp's conversion (max rel diff %.1e)\n", name, n,
         worst);
  model_file_close(hf);
  model_file_close(gg);
}

static void check_fixture(const char *name) {
  char dir[256], gguf[256];
  snprintf(dir, sizeof dir, MODEL_REF_DIR "%s", name);
  snprintf(gguf, sizeof gguf, MODEL_REF_DIR "%s.llamacpp.gguf", name);
  if (!path_exists(dir)) {
    printf("  SKIP %s: fixture directory %s not there yet\n", name, dir);
    skip();
  }
  if (!path_exists(gguf))
    fail_msg("%s missing: run tools/reference/convert_llamacpp.py %s", gguf, name);
  check_same_weights(name, dir, gguf);
  hx_err err = {0};
  hx_engine *e = NULL;
  hx_code rc = open_f32(dir, &e, &err);
  if (rc == HX_EUNSUPPORTED) {
    printf("  SKIP %s: %s\n", name, err.msg);
    skip();
  }
  if (rc != HX_OK)
    fail_msg("open %s: %s", dir, err.msg);
  ref r;
  ref_load(name, &r);
  const double rel_hf = max_rel_logits(e, &r);
  hx_engine_close(e);
  e = NULL;
  if (open_f32(gguf, &e, &err) != HX_OK)
    fail_msg("open %s: %s", gguf, err.msg);
  assert_int_equal(hx_engine_get_info(e)->n_vocab, r.vocab);
  const double rel_gguf = max_rel_logits(e, &r);
  printf("  %-20s max_rel vs transformers: HF dir %.2e, llama.cpp GGUF %.2e\n", name, rel_hf,
         rel_gguf);
  assert_true(rel_gguf < 1e-4);
  hx_engine_slot *s = NULL;
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  collect c = {0};
  hx_gen_result res;
  ref_generate_greedy(e, s, &r, &c, &res);
  assert_int_equal(c.n, r.n_greedy);
  assert_memory_equal(c.ids, r.greedy, (size_t)r.n_greedy * sizeof(int32_t));
  hx_engine_slot_free(s);
  hx_engine_close(e);
  free(r.logits);
}

static void test_qwen3(void **state) {
  (void)state;
  check_fixture("qwen3-tiny-f32");
}

static void test_qwen2(void **state) {
  (void)state;
  check_fixture("qwen2-tiny-f32");
}

static void test_qwen3moe(void **state) {
  (void)state;
  check_fixture("qwen3moe-tiny-f32");
}

static void test_qwen3next(void **state) {
  (void)state;
  check_fixture("qwen3next-tiny-f32");
}

static void test_qwen35(void **state) {
  (void)state;
  check_fixture("qwen35-tiny-f32");
}

static void test_qwen35moe(void **state) {
  (void)state;
  check_fixture("qwen35moe-tiny-f32");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_qwen3),    cmocka_unit_test(test_qwen2),
      cmocka_unit_test(test_qwen3moe), cmocka_unit_test(test_qwen3next),
      cmocka_unit_test(test_qwen35),   cmocka_unit_test(test_qwen35moe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
