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

typedef struct cmp {
  double max_rel, rms_rel;
  int top1_agree, n_rows;
} cmp;

static void cmp_rows(const ref *r, const float *ours, int row0, int n_rows, cmp *c) {
  for (int t = 0; t < n_rows; t++) {
    const float *a = ours + (size_t)t * r->vocab, *b = r->logits + (size_t)(row0 + t) * r->vocab;
    int ia = 0, ib = 0;
    for (int i = 0; i < r->vocab; i++) {
      double d = fabs((double)a[i] - b[i]) / r->std;
      c->max_rel = d > c->max_rel ? d : c->max_rel;
      c->rms_rel += d * d;
      ia = a[i] > a[ia] ? i : ia;
      ib = b[i] > b[ib] ? i : ib;
    }
    c->top1_agree += ia == ib;
    c->n_rows++;
  }
}

/* Runs prompt (all logits) + decode steps on a fresh engine; compares. */
static cmp run_logits(const char *path, const ref *r, hx_kv_type kv, const char *quant) {
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.n_threads = 2;
  o.n_ctx = 128;
  o.kv_type = kv;
  o.quant = quant;
  hx_engine *e = NULL;
  hx_err err = {0};
  hx_code rc = hx_engine_open(path, &o, &e, &err);
  if (rc != HX_OK)
    fprintf(stderr, "open %s: %s\n", path, err.msg);
  assert_int_equal(rc, HX_OK);
  assert_int_equal(hx_engine_get_info(e)->n_vocab, r->vocab);
  hx_engine_slot *s = NULL;
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  float *all = malloc((size_t)r->n_prompt * (size_t)r->vocab * sizeof(float));
  float *last = malloc((size_t)r->vocab * sizeof(float));
  cmp c = {0};
  assert_int_equal(hx_engine_eval(e, s, r->prompt, r->n_prompt, last, all, NULL, &err), HX_OK);
  cmp_rows(r, all, 0, r->n_prompt, &c);
  for (int d = 0; d < r->n_decode; d++) {
    assert_int_equal(hx_engine_eval(e, s, &r->decode[d], 1, last, NULL, NULL, &err), HX_OK);
    cmp_rows(r, last, r->n_prompt + d, 1, &c);
  }
  c.rms_rel = sqrt(c.rms_rel / ((double)c.n_rows * r->vocab));
  printf("  %-40s kv=%d quant=%-7s max_rel %.2e rms_rel %.2e top1 %d/%d\n", path, (int)kv,
         quant ? quant : "-", c.max_rel, c.rms_rel, c.top1_agree, c.n_rows);
  free(all);
  free(last);
  hx_engine_slot_free(s);
  hx_engine_close(e);
  return c;
}

static void check_greedy(const char *path, const ref *r) {
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.n_threads = 2;
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
  assert_int_equal(res.finish, HX_FINISH_LENGTH);
  assert_int_equal(c.n, r->n_greedy);
  assert_memory_equal(c.ids, r->greedy, (size_t)r->n_greedy * sizeof(int32_t));
  /* same request again on the same slot: the prompt prefix is reused, same tokens */
  collect c2 = {0};
  ref_generate_greedy(e, s, r, &c2, &res);
  assert_int_equal(res.n_reused, r->n_prompt - 1);
  assert_memory_equal(c2.ids, r->greedy, (size_t)r->n_greedy * sizeof(int32_t));
  /* prefill-then-decode equals token-by-token prefill */
  const int n = r->n_prompt;
  float *batch = malloc((size_t)n * (size_t)r->vocab * sizeof(float));
  float *one = malloc((size_t)r->vocab * sizeof(float));
  hx_engine_slot_reset(s);
  assert_int_equal(hx_engine_eval(e, s, r->prompt, n, NULL, batch, NULL, &err), HX_OK);
  hx_engine_slot_reset(s);
  double worst = 0;
  for (int t = 0; t < n; t++) {
    assert_int_equal(hx_engine_eval(e, s, &r->prompt[t], 1, one, NULL, NULL, &err), HX_OK);
    for (int i = 0; i < r->vocab; i++) {
      double d = fabs((double)one[i] - batch[(size_t)t * r->vocab + i]) / r->std;
      worst = d > worst ? d : worst;
    }
  }
  assert_true(worst < 1e-5);
  free(batch);
  free(one);
  hx_engine_slot_free(s);
  hx_engine_close(e);
}

static void test_qwen3moe_f32(void **state) {
  (void)state;
  ref r;
  ref_load("qwen3moe-tiny-f32", &r);
  cmp c = run_logits(DIR "qwen3moe-tiny-f32", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = run_logits(DIR "qwen3moe-tiny-f32.gguf", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = run_logits(DIR "qwen3moe-tiny-f32.gguf", &r, HX_KV_F16, NULL);
  assert_true(c.max_rel < 2e-3);
  check_greedy(DIR "qwen3moe-tiny-f32.gguf", &r);
  check_greedy(DIR "qwen3moe-tiny-f32", &r);
  c = run_logits(DIR "qwen3moe-tiny-f32", &r, HX_KV_F32, "q8_0");
  assert_true(c.top1_agree * 2 >= c.n_rows);
  free(r.logits);
}

/* decoder_sparse_step / mlp_only_layers (dense layers beside a sparse one)
 * and top-k weights without renormalization; HF config and GGUF tensors. */
static void test_qwen3moe_dense_layers(void **state) {
  (void)state;
  ref r;
  ref_load("qwen3moe-dense-f32", &r);
  cmp c = run_logits(DIR "qwen3moe-dense-f32", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  c = run_logits(DIR "qwen3moe-dense-f32.gguf", &r, HX_KV_F32, NULL);
  assert_true(c.max_rel < 1e-4);
  check_greedy(DIR "qwen3moe-dense-f32", &r);
  check_greedy(DIR "qwen3moe-dense-f32.gguf", &r);
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
