/* test_model_qwen3moe.c — the qwen3moe forward pass against transformers.
 *
 * Fixtures (tools/reference/make_fixtures_moe.py): random-weight Qwen3-MoE
 * models saved as HF directories and as GGUF (gguf package, llama.cpp layout)
 * with the transformers f32 logits of a 12-token prompt (every position) and
 * of 8 decode steps, and a 32-token greedy continuation:
 *   qwen3moe-tiny-f32   8 experts, top-2, renormalized, every layer sparse;
 *   qwen3moe-dense-f32  8 experts, top-3, not renormalized, decoder_sparse_step
 *                       2 + mlp_only_layers [3] (three dense layers, one sparse).
 * The fixture script checks that no routed row has its k-th and (k+1)-th
 * router probabilities within 0.1% of each other, so f32 summation-order
 * differences cannot change an expert choice.
 *
 * Bounds, as max |ours - ref| / std(ref logits) over all positions, as in
 * test_model_qwen3.c: f32 weights and KV 1e-4; f16 KV 2e-3. Token-by-token
 * prefill equals one prefill within 1e-5. A Q8_0 in-situ run is held to
 * top-1 agreement ≥ 50% only: an 8-bit rounding of the router input can flip
 * a near choice, which moves a logit row by O(1). */
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

#define DIR "tests/data/models/"

static void test_qwen3moe_f32(void **state) {
  (void)state;
  ref r;
  ref_load("qwen3moe-tiny-f32", &r);
  ref_cmp c = ref_run_logits(DIR "qwen3moe-tiny-f32", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = ref_run_logits(DIR "qwen3moe-tiny-f32.gguf", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = ref_run_logits(DIR "qwen3moe-tiny-f32.gguf", &r, HX_KV_F16, NULL);
  assert_true(c.max_rel < 2e-3);
  ref_check_greedy(DIR "qwen3moe-tiny-f32.gguf", &r);
  ref_check_greedy(DIR "qwen3moe-tiny-f32", &r);
  c = ref_run_logits(DIR "qwen3moe-tiny-f32", &r, HX_KV_F32, "q8_0");
  assert_true(c.top1_agree * 2 >= c.n_rows);
  free(r.logits);
}

/* decoder_sparse_step / mlp_only_layers (dense layers beside a sparse one)
 * and top-k weights without renormalization; HF config and GGUF tensors. */
static void test_qwen3moe_dense_layers(void **state) {
  (void)state;
  ref r;
  ref_load("qwen3moe-dense-f32", &r);
  ref_cmp c = ref_run_logits(DIR "qwen3moe-dense-f32", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = ref_run_logits(DIR "qwen3moe-dense-f32.gguf", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  ref_check_greedy(DIR "qwen3moe-dense-f32", &r);
  ref_check_greedy(DIR "qwen3moe-dense-f32.gguf", &r);
  free(r.logits);
}

static void test_engine_info(void **state) {
  (void)state;
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.n_threads = 1;
  o.n_ctx = 64;
  hx_engine *e = NULL;
  hx_err err = {0};
  assert_int_equal(hx_engine_open(DIR "qwen3moe-tiny-f32.gguf", &o, &e, &err), HX_OK);
  assert_string_equal(hx_engine_get_info(e)->arch, "qwen3moe");
  assert_int_equal(hx_engine_get_info(e)->n_layers, 2);
  hx_engine_close(e);
}

/* A config whose mlp_only_layers names a layer that does not exist, or
 * whose decoder_sparse_step is 0, is refused with a message naming the key. */
static void test_bad_sparse_config(void **state) {
  (void)state;
  static const struct {
    const char *from, *to, *msg;
  } cases[] = {
      {"\"mlp_only_layers\": [\n    3\n  ]", "\"mlp_only_layers\": [9]", "mlp_only_layers[0]"},
      {"\"mlp_only_layers\": [\n    3\n  ]", "\"mlp_only_layers\": 3", "mlp_only_layers"},
      {"\"decoder_sparse_step\": 2", "\"decoder_sparse_step\": 0", "decoder_sparse_step"},
  };
  FILE *f = fopen(DIR "qwen3moe-dense-f32/config.json", "rb");
  assert_non_null(f);
  char cfg[4096];
  const size_t len = fread(cfg, 1, sizeof cfg - 1, f);
  fclose(f);
  cfg[len] = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char dir[] = "/tmp/helexa-moecfg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], target[512];
    const char *at = strstr(cfg, cases[i].from);
    assert_non_null(at);
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "wb");
    assert_non_null(f);
    fprintf(f, "%.*s%s%s", (int)(at - cfg), cfg, cases[i].to, at + strlen(cases[i].from));
    fclose(f);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(target, sizeof target, "%s/" DIR "qwen3moe-dense-f32/model.safetensors",
             HELEXA_SOURCE_DIR);
    assert_int_equal(symlink(target, path), 0);
    hx_engine_opts o;
    hx_engine_opts_default(&o);
    o.n_threads = 1;
    o.n_ctx = 32;
    hx_engine *e = NULL;
    hx_err err = {0};
    assert_int_not_equal(hx_engine_open(dir, &o, &e, &err), HX_OK);
    assert_null(e);
    printf("  refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, cases[i].msg));
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_qwen3moe_f32),
      cmocka_unit_test(test_qwen3moe_dense_layers),
      cmocka_unit_test(test_engine_info),
      cmocka_unit_test(test_bad_sparse_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
