/* model_ref.h — the transformers reference of a fixture model
 * (tools/reference/make_fixtures.py): prompt, decode and greedy token ids
 * (ref.json) and the f32 logits of every prompt position and decode step
 * (ref.bin), and greedy generation against it. Shared by the model tests;
 * needs cmocka, jansson and engine/engine.h included first. Test-only header: static functions, one
 * copy per test program (static inline where some includers do not use them). */
#ifndef HX_TEST_MODEL_REF_H
#define HX_TEST_MODEL_REF_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define MODEL_REF_DIR "tests/data/models/"

typedef struct ref {
  int vocab, n_prompt, n_decode, n_greedy;
  int32_t prompt[64], decode[64], greedy[64];
  float *logits; /* [(n_prompt + n_decode)][vocab] */
  double std;    /* of all reference logits: the scale errors are measured in */
} ref;

static void ref_ids(json_t *a, int32_t *out, int *n) {
  *n = (int)json_array_size(a);
  assert_true(*n <= 64);
  for (int i = 0; i < *n; i++)
    out[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
}

/* Loads fixture `name` (a directory under tests/data/models); r->logits is
 * malloc'd and owned by the caller. */
static void ref_load(const char *name, ref *r) {
  char path[256];
  snprintf(path, sizeof path, MODEL_REF_DIR "%s/ref.json", name);
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  assert_non_null(j);
  r->vocab = (int)json_integer_value(json_object_get(j, "vocab"));
  ref_ids(json_object_get(j, "prompt"), r->prompt, &r->n_prompt);
  ref_ids(json_object_get(j, "decode"), r->decode, &r->n_decode);
  ref_ids(json_object_get(j, "greedy"), r->greedy, &r->n_greedy);
  json_decref(j);
  snprintf(path, sizeof path, MODEL_REF_DIR "%s/ref.bin", name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  size_t n = (size_t)(r->n_prompt + r->n_decode) * (size_t)r->vocab;
  r->logits = malloc(n * sizeof(float));
  assert_int_equal(fread(r->logits, sizeof(float), n, f), n);
  fclose(f);
  double s = 0, s2 = 0;
  for (size_t i = 0; i < n; i++)
    s += r->logits[i], s2 += (double)r->logits[i] * r->logits[i];
  r->std = sqrt(s2 / (double)n - (s / (double)n) * (s / (double)n));
}

/* Token ids a generation streamed (the first 64). */
typedef struct collect {
  int32_t ids[64];
  int n;
} collect;

static bool on_tok(void *user, const hx_gen_token *t) {
  collect *c = user;
  if (c->n < 64)
    c->ids[c->n++] = t->id;
  return true;
}

/* Generates r->n_greedy greedy tokens (eos ignored) from r's prompt on slot s
 * into *c; asserts the call succeeded. */
static void ref_generate_greedy(hx_engine *e, hx_engine_slot *s, const ref *r, collect *c,
                                hx_gen_result *res) {
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  p.greedy = true;
  p.max_tokens = r->n_greedy;
  p.ignore_eos = true;
  hx_err err = {0};
  if (hx_engine_generate(e, s, r->prompt, r->n_prompt, &p, on_tok, c, NULL, res, &err) != HX_OK)
    fail_msg("generate: %s", err.msg);
}

/* ---- logits against the reference (model tests of attention-only arches) ---- */

typedef struct ref_cmp {
  double max_rel, rms_rel;
  int top1_agree, n_rows;
} ref_cmp;

static inline void ref_cmp_rows(const ref *r, const float *ours, int row0, int n_rows, ref_cmp *c) {
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

/* Runs prompt (all logits) + decode steps on a fresh engine (2 threads,
 * n_ctx 128) and compares them with the reference. */
static inline ref_cmp ref_run_logits(const char *path, const ref *r, hx_kv_type kv,
                                     const char *quant) {
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
  ref_cmp c = {0};
  assert_int_equal(hx_engine_eval(e, s, r->prompt, r->n_prompt, last, all, NULL, &err), HX_OK);
  ref_cmp_rows(r, all, 0, r->n_prompt, &c);
  for (int d = 0; d < r->n_decode; d++) {
    assert_int_equal(hx_engine_eval(e, s, &r->decode[d], 1, last, NULL, NULL, &err), HX_OK);
    ref_cmp_rows(r, last, r->n_prompt + d, 1, &c);
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

/* Greedy continuation identical to the reference, the same request again
 * reusing the prompt prefix, and prefill-then-decode equal to token-by-token
 * prefill (attention-only models: every prefix can be kept). */
static inline void ref_check_greedy(const char *path, const ref *r) {
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

#endif
