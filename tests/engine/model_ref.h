/* model_ref.h — the transformers reference of a fixture model
 * (tools/reference/make_fixtures.py): prompt, decode and greedy token ids
 * (ref.json) and the f32 logits of every prompt position and decode step
 * (ref.bin), and greedy generation against it. Shared by the model tests;
 * needs cmocka, jansson and engine/engine.h included first. Test-only header: static functions, one
 * copy per test program. */
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

#endif
