/* sampler.h — turning logits into the next token, and stop strings.
 *
 * hx_sampler holds the per-request state: the RNG (seeded; same seed + same
 * logits → same tokens), scratch sized for the vocabulary at init (nothing
 * allocated per token), and the penalty history. The pipeline, in order:
 * logit bias → repetition / presence / frequency penalties over the tokens
 * seen so far (prompt + generated, repetition over the last penalty_last_n) →
 * greedy argmax, or temperature → top-k → softmax → top-p → min-p → draw.
 *
 * hx_stop_matcher finds stop strings in streamed text across token
 * boundaries: it holds back any suffix that could still become a stop string
 * and never releases the stop string itself. */
#ifndef HX_ENGINE_SAMPLER_H
#define HX_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

enum {
  HX_SAMPLER_TOPK_MAX = 20,  /* logprob alternatives per token */
  HX_SAMPLER_BIAS_MAX = 256, /* logit_bias entries */
  HX_SAMPLER_STOP_IDS_MAX = 16,
  HX_STOP_STRINGS_MAX = 16,
  HX_STOP_STRING_BYTES_MAX = 256,
};

typedef struct hx_logit_bias {
  int32_t id;
  float bias; /* added to the logit; -INFINITY bans the token */
} hx_logit_bias;

typedef struct hx_sampling_params {
  bool greedy;              /* argmax (also when temperature <= 0) */
  float temperature;        /* default 1 */
  int top_k;                /* 0 = off */
  float top_p;              /* 1 = off */
  float min_p;              /* 0 = off */
  float repetition_penalty; /* 1 = off (HF/llama.cpp: divide positive, multiply negative) */
  int penalty_last_n;       /* window of repetition penalty; 0 = all tokens seen */
  float presence_penalty;   /* 0 = off (OpenAI) */
  float frequency_penalty;  /* 0 = off (OpenAI), over generated tokens */
  uint64_t seed;            /* RNG seed */
  int max_tokens;           /* 0 = until the context is full */
  int n_logprobs;           /* alternatives reported per token, ≤ HX_SAMPLER_TOPK_MAX */
  int n_bias;
  hx_logit_bias bias[HX_SAMPLER_BIAS_MAX];
  int n_stop_ids; /* stop token ids in addition to the model's eos ids */
  int32_t stop_ids[HX_SAMPLER_STOP_IDS_MAX];
  bool ignore_eos; /* do not stop on the model's eos ids */
} hx_sampling_params;

/* Defaults: temperature 1, top_p 1, everything else off, seed 0. */
void hx_sampling_params_default(hx_sampling_params *p);

typedef struct hx_sampler {
  int n_vocab;
  hx_sampling_params params;
  uint64_t rng[4];  /* xoshiro256** state */
  float *probs;     /* [n_vocab] scratch */
  float *raw;       /* [n_vocab] the logits as given, for logprobs */
  int32_t *idx;     /* [n_vocab] scratch */
  uint32_t *counts; /* [n_vocab] occurrences among generated tokens */
  int32_t *history; /* ring of the last tokens seen, for repetition penalty */
  int history_cap, history_len, history_head;
} hx_sampler;

/* Allocates scratch for n_vocab; validates params (HX_EINVAL naming the field). */
hx_code hx_sampler_init(hx_sampler *s, int n_vocab, const hx_sampling_params *params, hx_err *err);
void hx_sampler_free(hx_sampler *s);
/* Records a token seen (prompt tokens: generated == false). */
void hx_sampler_accept(hx_sampler *s, int32_t id, bool generated);
/* Picks the next token from logits[n_vocab] (modified in place: bias and
 * penalties applied). Fills top (n_logprobs alternatives, log-softmax of the
 * raw logits) and *logprob of the chosen token when non-NULL. */
int32_t hx_sampler_sample(hx_sampler *s, float *logits, float *logprob, int32_t *top_ids,
                          float *top_logprobs);
/* True when any logit is NaN or ±inf (index of the first in *bad). */
bool hx_logits_nonfinite(const float *logits, int n, int *bad);

/* ---- stop strings on decoded text ---- */
typedef struct hx_stop_matcher {
  int n_stops;
  char stops[HX_STOP_STRINGS_MAX][HX_STOP_STRING_BYTES_MAX + 1];
  size_t stop_lens[HX_STOP_STRINGS_MAX];
  char held[HX_STOP_STRING_BYTES_MAX]; /* text withheld: a prefix of some stop */
  size_t n_held;
  bool matched;
} hx_stop_matcher;

/* stops: n strings (NUL-terminated, non-empty, ≤ HX_STOP_STRING_BYTES_MAX bytes). */
hx_code hx_stop_matcher_init(hx_stop_matcher *m, const char *const *stops, int n, hx_err *err);
/* Feeds decoded text; appends to out (capacity out_cap, at least len +
 * HX_STOP_STRING_BYTES_MAX) the text that is safe to emit and sets *out_len.
 * Returns true once a stop string has matched: out then holds the text before
 * it, and the rest (the stop string and anything after) is dropped. */
bool hx_stop_matcher_feed(hx_stop_matcher *m, const char *text, size_t len, char *out,
                          size_t out_cap, size_t *out_len);
/* At the end of generation without a match: releases the held-back text. */
size_t hx_stop_matcher_flush(hx_stop_matcher *m, char *out, size_t out_cap);

#endif
