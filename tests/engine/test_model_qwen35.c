/* test_model_qwen35.c — the hybrid forward passes (qwen3next, qwen35,
 * qwen35moe; models/qwen35.c) against transformers.
 *
 * Fixtures (tools/reference/make_fixtures_hybrid.py): random-weight f32 HF
 * directories with 2 key heads and 4 value heads in the DeltaNet layers
 * (d_k 16, d_v 24), three DeltaNet layers then one gated full-attention layer,
 * partial rotary; the transformers f32 logits of a 40-token prompt (every
 * position, transformers' chunked delta rule) and of 8 decode steps (its
 * recurrent form), and a 32-token greedy continuation.
 *
 * Bounds, as max |ours - ref| / std(ref logits):
 *   f32 KV: 1e-4 (float summation order; the chunked and recurrent forms are
 *     the same arithmetic up to rounding);
 *   f16 KV: 2e-3 (one attention layer's K/V rounded to 11 bits).
 * And, within our engine: a prompt prefilled in pieces (the conv window and
 * the delta-rule state carried across, one piece a single token) and token by
 * token (recurrent form only) equal one prefill to 1e-4; a second turn whose
 * prompt extends the first reuses the snapshot of the first prompt and gives
 * the logits of a cold prefill (top log-probs to 1e-4); in chat-shaped turns
 * (the generation prompt not repeated by the next turn) the snapshot sits at
 * the end of the last message and is reused the same way. */
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

static hx_engine *open_engine(const char *path, hx_kv_type kv, int max_batch) {
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.n_threads = 2;
  o.n_ctx = 128;
  o.kv_type = kv;
  o.max_batch = max_batch;
  hx_engine *e = NULL;
  hx_err err = {0};
  if (hx_engine_open(path, &o, &e, &err) != HX_OK)
    fail_msg("open %s: %s", path, err.msg);
  return e;
}

static double max_rel(const float *a, const float *b, size_t n, double scale) {
  double w = 0;
  for (size_t i = 0; i < n; i++) {
    const double d = fabs((double)a[i] - b[i]) / scale;
    w = d > w || isnan(d) ? d : w;
  }
  return w;
}

/* Prompt (all logits) + decode steps against the reference. */
static double run_logits(const char *path, const ref *r, hx_kv_type kv) {
  hx_engine *e = open_engine(path, kv, 0);
  assert_int_equal(hx_engine_get_info(e)->n_vocab, r->vocab);
  hx_engine_slot *s = NULL;
  hx_err err = {0};
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  float *all = malloc((size_t)r->n_prompt * (size_t)r->vocab * sizeof(float));
  float *last = malloc((size_t)r->vocab * sizeof(float));
  assert_int_equal(hx_engine_eval(e, s, r->prompt, r->n_prompt, last, all, NULL, &err), HX_OK);
  double w = max_rel(all, r->logits, (size_t)r->n_prompt * r->vocab, r->std);
  for (int d = 0; d < r->n_decode; d++) {
    assert_int_equal(hx_engine_eval(e, s, &r->decode[d], 1, last, NULL, NULL, &err), HX_OK);
    const double wd =
        max_rel(last, r->logits + (size_t)(r->n_prompt + d) * r->vocab, (size_t)r->vocab, r->std);
    w = wd > w ? wd : w;
  }
  printf("  %-44s kv=%d max_rel %.2e\n", path, (int)kv, w);
  free(all);
  free(last);
  hx_engine_slot_free(s);
  hx_engine_close(e);
  return w;
}

/* Greedy continuation; prompt in pieces and token by token equal one prefill. */
static void check_greedy_and_pieces(const char *path, const ref *r) {
  hx_engine *e = open_engine(path, HX_KV_F32, 0);
  hx_engine_slot *s = NULL;
  hx_err err = {0};
  assert_int_equal(hx_engine_slot_create(e, &s, &err), HX_OK);
  collect c = {0};
  hx_gen_result res;
  ref_generate_greedy(e, s, r, &c, &res);
  assert_int_equal(res.finish, HX_FINISH_LENGTH);
  assert_int_equal(c.n, r->n_greedy);
  assert_memory_equal(c.ids, r->greedy, (size_t)r->n_greedy * sizeof(int32_t));
  /* the same prompt again: its last token must be recomputed and the state
   * cannot be rolled back below the prompt's snapshot, so nothing is reused */
  collect c2 = {0};
  ref_generate_greedy(e, s, r, &c2, &res);
  assert_int_equal(res.n_reused, 0);
  assert_memory_equal(c2.ids, r->greedy, (size_t)r->n_greedy * sizeof(int32_t));

  const int n = r->n_prompt, V = r->vocab;
  float *one = malloc((size_t)n * V * sizeof(float)), *got = malloc((size_t)n * V * sizeof(float));
  hx_engine_slot_reset(s);
  assert_int_equal(hx_engine_eval(e, s, r->prompt, n, NULL, one, NULL, &err), HX_OK);
  /* pieces of 17, 1 and the rest */
  const int cut[3] = {17, 1, n - 18};
  hx_engine_slot_reset(s);
  for (int i = 0, t0 = 0; i < 3; t0 += cut[i++])
    assert_int_equal(
        hx_engine_eval(e, s, r->prompt + t0, cut[i], NULL, got + (size_t)t0 * V, NULL, &err),
        HX_OK);
  const double w_pieces = max_rel(got, one, (size_t)n * V, r->std);
  hx_engine_slot_reset(s);
  for (int t = 0; t < n; t++)
    assert_int_equal(hx_engine_eval(e, s, r->prompt + t, 1, got + (size_t)t * V, NULL, NULL, &err),
                     HX_OK);
  const double w_tokens = max_rel(got, one, (size_t)n * V, r->std);
  printf("  %-44s pieces vs one prefill %.2e, token by token %.2e\n", path, w_pieces, w_tokens);
  assert_true(w_pieces < 1e-4);
  assert_true(w_tokens < 1e-4);
  free(one);
  free(got);
  hx_engine_slot_free(s);
  hx_engine_close(e);
}

typedef struct lp_collect {
  int n;
  int32_t ids[16];
  float top[16][4];
} lp_collect;

static bool on_lp(void *user, const hx_gen_token *t) {
  lp_collect *c = user;
  if (c->n < 16) {
    c->ids[c->n] = t->id;
    for (int i = 0; i < 4; i++)
      c->top[c->n][i] = t->top_logprobs[i];
    c->n++;
  }
  return true;
}

static void gen_lp(hx_engine *e, hx_engine_slot *s, const int32_t *prompt, int n, lp_collect *c,
                   hx_gen_result *res) {
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  p.greedy = true;
  p.max_tokens = 8;
  p.ignore_eos = true;
  p.n_logprobs = 4;
  hx_err err = {0};
  memset(c, 0, sizeof *c);
  if (hx_engine_generate(e, s, prompt, n, &p, on_lp, c, NULL, res, &err) != HX_OK)
    fail_msg("generate: %s", err.msg);
}

/* Two chat turns: the second prompt is the first + a different echo of the
 * answer (as when reasoning is dropped from history) + a new user message.
 * The second turn restores the first prompt's snapshot and must match a cold
 * run of the same prompt on a fresh slot. */
static void check_turns(const char *path, const ref *r) {
  hx_engine *e = open_engine(path, HX_KV_F32, 16); /* prefill in chunks of 16 */
  hx_engine_slot *warm = NULL, *cold = NULL;
  hx_err err = {0};
  assert_int_equal(hx_engine_slot_create(e, &warm, &err), HX_OK);
  assert_int_equal(hx_engine_slot_create(e, &cold, &err), HX_OK);
  lp_collect a, b;
  hx_gen_result res;
  gen_lp(e, warm, r->prompt, r->n_prompt, &a, &res);
  int32_t p2[64];
  const int n1 = r->n_prompt, n2 = n1 + 20;
  assert_true(n2 <= 64);
  memcpy(p2, r->prompt, (size_t)n1 * sizeof *p2);
  for (int i = n1; i < n2; i++)
    p2[i] = (int32_t)((i * 37 + 11) % r->vocab); /* not the generated tokens */
  p2[n1] = (a.ids[0] + 1) % r->vocab;            /* differs at the first answer token */
  gen_lp(e, warm, p2, n2, &a, &res);
  assert_int_equal(res.n_reused, n1);
  gen_lp(e, cold, p2, n2, &b, &res);
  assert_int_equal(res.n_reused, 0);
  assert_int_equal(a.n, 8);
  assert_memory_equal(a.ids, b.ids, sizeof a.ids);
  double w = 0;
  for (int t = 0; t < a.n; t++)
    for (int i = 0; i < 4; i++)
      w = fmax(w, fabs((double)a.top[t][i] - b.top[t][i]));
  printf("  %-44s second turn reused %d tokens, |dlogprob| %.2e\n", path, n1, w);
  assert_true(w < 1e-4);
  /* a third turn that does not extend the second: the state starts over */
  int32_t p3[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  gen_lp(e, warm, p3, 8, &a, &res);
  assert_int_equal(res.n_reused, 0);
  gen_lp(e, cold, p3, 8, &b, &res);
  assert_memory_equal(a.ids, b.ids, sizeof a.ids);
  hx_engine_slot_free(warm);
  hx_engine_slot_free(cold);
  hx_engine_close(e);
}

/* Chat-shaped turns, with EOT = the fixtures' end-of-turn id (383) standing
 * for <|im_end|>: turn 1 = [user message, EOT, "assistant", "<think>"];
 * turn 2 renders the same user message, then the answer echoed without the
 * think block, EOT, a new user message, EOT, "assistant", "<think>" — so the
 * prompts share the first message and "assistant" but not "<think>". The
 * engine snapshots after the last EOT of turn 1 and turn 2 reuses exactly
 * that; its log-probs match a cold slot. */
static void check_chat_turns(const char *path, const ref *r) {
  enum { EOT = 383, ASSISTANT = 50, THINK = 51 };
  hx_engine *e = open_engine(path, HX_KV_F32, 16);
  hx_engine_slot *warm = NULL, *cold = NULL;
  hx_err err = {0};
  assert_int_equal(hx_engine_get_info(e)->n_eos, 1);
  assert_int_equal(hx_engine_get_info(e)->eos_ids[0], EOT);
  assert_int_equal(hx_engine_slot_create(e, &warm, &err), HX_OK);
  assert_int_equal(hx_engine_slot_create(e, &cold, &err), HX_OK);
  int32_t p1[32], p2[64];
  int n1 = 0, n2 = 0;
  for (int i = 0; i < 20; i++)
    p1[n1++] = r->prompt[i];
  p1[n1++] = EOT;
  const int stable = n1; /* the end of the last message */
  p1[n1++] = ASSISTANT;
  p1[n1++] = THINK;
  lp_collect a, b;
  hx_gen_result res;
  gen_lp(e, warm, p1, n1, &a, &res);
  memcpy(p2, p1, (size_t)stable * sizeof *p2);
  n2 = stable;
  p2[n2++] = ASSISTANT;
  for (int i = 0; i < 5; i++) /* the answer, echoed without the reasoning */
    p2[n2++] = a.ids[3 + i] == EOT ? 1 : a.ids[3 + i];
  p2[n2++] = EOT;
  for (int i = 20; i < 32; i++)
    p2[n2++] = r->prompt[i];
  p2[n2++] = EOT;
  p2[n2++] = ASSISTANT;
  p2[n2++] = THINK;
  gen_lp(e, warm, p2, n2, &a, &res);
  assert_int_equal(res.n_reused, stable);
  gen_lp(e, cold, p2, n2, &b, &res);
  assert_int_equal(res.n_reused, 0);
  assert_memory_equal(a.ids, b.ids, sizeof a.ids);
  double w = 0;
  for (int t = 0; t < a.n; t++)
    for (int i = 0; i < 4; i++)
      w = fmax(w, fabs((double)a.top[t][i] - b.top[t][i]));
  printf("  %-44s chat turn 2 reused %d of %d tokens, |dlogprob| %.2e\n", path, stable, n2, w);
  assert_true(w < 1e-4);
  hx_engine_slot_free(warm);
  hx_engine_slot_free(cold);
  hx_engine_close(e);
}

static void check_model(const char *name) {
  char path[256];
  snprintf(path, sizeof path, DIR "%s", name);
  ref r;
  ref_load(name, &r);
  assert_true(run_logits(path, &r, HX_KV_F32) < 1e-4);
  assert_true(run_logits(path, &r, HX_KV_F16) < 2e-3);
  check_greedy_and_pieces(path, &r);
  check_turns(path, &r);
  check_chat_turns(path, &r);
  /* the llama.cpp converter's GGUF of the same fixture, when it has been made
   * (tools/reference/convert_llamacpp.py) */
  snprintf(path, sizeof path, DIR "%s.llamacpp.gguf", name);
  if (access(path, R_OK) == 0)
    assert_true(run_logits(path, &r, HX_KV_F32) < 1e-4);
  free(r.logits);
}

static void test_qwen35(void **state) {
  (void)state;
  check_model("qwen35-tiny-f32");
  /* a slot's cache: K/V of the one full-attention layer (f16, 128 positions,
   * 2 kv heads x 32) + the three DeltaNet layers' conv window (3 x 160
   * channels) and state (4 heads x 16 x 24), f32, live + snapshot */
  hx_engine_opts o;
  hx_engine_opts_default(&o);
  o.n_ctx = 128;
  hx_engine_mem mem;
  hx_err err = {0};
  assert_int_equal(hx_engine_estimate(DIR "qwen35-tiny-f32", &o, &mem, &err), HX_OK);
  assert_int_equal(mem.kv_bytes_slot, 2 * 1 * 128 * 64 * 2 + 2 * 3 * 4 * (3 * 160 + 4 * 16 * 24));
}

static void test_qwen3next(void **state) {
  (void)state;
  check_model("qwen3next-tiny-f32");
}

static void test_qwen35moe(void **state) {
  (void)state;
  check_model("qwen35moe-tiny-f32");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_qwen35),
      cmocka_unit_test(test_qwen3next),
      cmocka_unit_test(test_qwen35moe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
