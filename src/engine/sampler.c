/* sampler.c — see sampler.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"

enum { HISTORY_DEFAULT = 4096 };

/* Candidates whose temperature-scaled logit is this far below the maximum have
 * probability < e^-30 relative to the best token: dropping them before the
 * sort changes the distribution by less than 1e-13 * n_vocab. */
#define CANDIDATE_MARGIN 30.0f

void hx_sampling_params_default(hx_sampling_params *p) {
  memset(p, 0, sizeof *p);
  p->temperature = 1.0f;
  p->top_p = 1.0f;
  p->repetition_penalty = 1.0f;
  p->penalty_last_n = 64;
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
  const uint64_t r = rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return r;
}

/* uniform in [0, 1) with 53 bits */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

hx_code hx_sampler_init(hx_sampler *s, int n_vocab, const hx_sampling_params *p, hx_err *err) {
  memset(s, 0, sizeof *s);
  if (n_vocab < 1)
    return hx_err_set(err, HX_EINVAL, "sampler: n_vocab %d", n_vocab);
  if (!(p->temperature >= 0.0f) || p->temperature > 100.0f)
    return hx_err_set(err, HX_EINVAL, "temperature must be in [0, 100], got %g",
                      (double)p->temperature);
  if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
    return hx_err_set(err, HX_EINVAL, "top_p must be in (0, 1], got %g", (double)p->top_p);
  if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
    return hx_err_set(err, HX_EINVAL, "min_p must be in [0, 1], got %g", (double)p->min_p);
  if (p->top_k < 0)
    return hx_err_set(err, HX_EINVAL, "top_k must be >= 0, got %d", p->top_k);
  if (!(p->repetition_penalty > 0.0f) || p->repetition_penalty > 10.0f)
    return hx_err_set(err, HX_EINVAL, "repetition_penalty must be in (0, 10], got %g",
                      (double)p->repetition_penalty);
  if (!(fabsf(p->presence_penalty) <= 2.0f) || !(fabsf(p->frequency_penalty) <= 2.0f))
    return hx_err_set(err, HX_EINVAL, "presence/frequency penalties must be in [-2, 2]");
  if (p->n_logprobs < 0 || p->n_logprobs > HX_SAMPLER_TOPK_MAX)
    return hx_err_set(err, HX_EINVAL, "logprobs must be in [0, %d], got %d", HX_SAMPLER_TOPK_MAX,
                      p->n_logprobs);
  if (p->n_bias < 0 || p->n_bias > HX_SAMPLER_BIAS_MAX)
    return hx_err_set(err, HX_EINVAL, "logit_bias: at most %d entries", HX_SAMPLER_BIAS_MAX);
  for (int i = 0; i < p->n_bias; i++)
    if (p->bias[i].id < 0 || p->bias[i].id >= n_vocab || isnan(p->bias[i].bias))
      return hx_err_set(err, HX_EINVAL, "logit_bias: token id %d out of range or bias NaN",
                        p->bias[i].id);
  if (p->n_stop_ids < 0 || p->n_stop_ids > HX_SAMPLER_STOP_IDS_MAX)
    return hx_err_set(err, HX_EINVAL, "stop ids: at most %d", HX_SAMPLER_STOP_IDS_MAX);
  if (p->max_tokens < 0 || p->penalty_last_n < 0)
    return hx_err_set(err, HX_EINVAL, "max_tokens and penalty_last_n must be >= 0");
  s->n_vocab = n_vocab;
  s->params = *p;
  s->history_cap = p->penalty_last_n > 0 ? p->penalty_last_n : HISTORY_DEFAULT;
  s->probs = malloc((size_t)n_vocab * sizeof *s->probs);
  s->raw = malloc((size_t)n_vocab * sizeof *s->raw);
  s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
  s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
  s->history = malloc((size_t)s->history_cap * sizeof *s->history);
  if (!s->probs || !s->raw || !s->idx || !s->counts || !s->history) {
    hx_sampler_free(s);
    return hx_err_set(err, HX_ENOMEM, "sampler: out of memory (vocab %d)", n_vocab);
  }
  uint64_t seed = p->seed;
  for (int i = 0; i < 4; i++)
    s->rng[i] = splitmix64(&seed);
  return HX_OK;
}

void hx_sampler_free(hx_sampler *s) {
  if (!s)
    return;
  free(s->probs);
  free(s->raw);
  free(s->idx);
  free(s->counts);
  free(s->history);
  memset(s, 0, sizeof *s);
}

void hx_sampler_accept(hx_sampler *s, int32_t id, bool generated) {
  HX_ASSERT(id >= 0 && id < s->n_vocab);
  if (generated)
    s->counts[id]++;
  s->history[s->history_head] = id;
  s->history_head = (s->history_head + 1) % s->history_cap;
  if (s->history_len < s->history_cap)
    s->history_len++;
}

bool hx_logits_nonfinite(const float *logits, int n, int *bad) {
  for (int i = 0; i < n; i++)
    if (!isfinite(logits[i])) {
      if (bad)
        *bad = i;
      return true;
    }
  return false;
}

static void apply_penalties(hx_sampler *s, float *logits) {
  const hx_sampling_params *p = &s->params;
  for (int i = 0; i < p->n_bias; i++)
    logits[p->bias[i].id] += p->bias[i].bias;
  if (p->repetition_penalty != 1.0f) {
    /* each distinct token of the window once; probs marks the visited ones */
    for (int i = 0; i < s->history_len; i++)
      s->probs[s->history[i]] = 0.0f;
    for (int i = 0; i < s->history_len; i++) {
      int32_t id = s->history[i];
      if (s->probs[id] != 0.0f)
        continue;
      s->probs[id] = 1.0f;
      logits[id] =
          logits[id] > 0 ? logits[id] / p->repetition_penalty : logits[id] * p->repetition_penalty;
    }
  }
  if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f)
    for (int i = 0; i < s->n_vocab; i++)
      if (s->counts[i])
        logits[i] -= p->frequency_penalty * (float)s->counts[i] + p->presence_penalty;
}

static int cmp_desc(const void *a, const void *b, void *ctx) {
  const float *v = ctx;
  float x = v[*(const int32_t *)a], y = v[*(const int32_t *)b];
  if (x != y)
    return x > y ? -1 : 1;
  return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

/* logprobs of the raw logits: log-sum-exp and the n best */
static void fill_logprobs(const hx_sampler *s, int32_t chosen, float *logprob, int32_t *top_ids,
                          float *top_lp) {
  const float *raw = s->raw;
  const int n = s->n_vocab;
  float mx = -INFINITY;
  for (int i = 0; i < n; i++)
    mx = raw[i] > mx ? raw[i] : mx;
  double sum = 0;
  for (int i = 0; i < n; i++)
    sum += exp((double)raw[i] - mx);
  const float lse = mx + (float)log(sum);
  if (logprob)
    *logprob = raw[chosen] - lse;
  const int k = s->params.n_logprobs;
  if (!top_ids || k == 0)
    return;
  int have = 0;
  for (int i = 0; i < n; i++) {
    if (have == k && !(raw[i] > top_lp[k - 1]))
      continue;
    int j = have < k ? have++ : k - 1;
    while (j > 0 && raw[i] > top_lp[j - 1]) {
      top_lp[j] = top_lp[j - 1];
      top_ids[j] = top_ids[j - 1];
      j--;
    }
    top_lp[j] = raw[i];
    top_ids[j] = i;
  }
  for (int j = 0; j < have; j++)
    top_lp[j] -= lse;
}

int32_t hx_sampler_sample(hx_sampler *s, float *logits, float *logprob, int32_t *top_ids,
                          float *top_logprobs) {
  const hx_sampling_params *p = &s->params;
  const int n = s->n_vocab;
  const bool want_lp = logprob || (top_ids && p->n_logprobs > 0);
  if (want_lp) /* only logprobs need the logits as given */
    memcpy(s->raw, logits, (size_t)n * sizeof *logits);
  apply_penalties(s, logits);
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (logits[i] > logits[best])
      best = i;
  int32_t chosen = best;
  if (!p->greedy && p->temperature > 0.0f && isfinite(logits[best])) {
    const float inv_t = 1.0f / p->temperature;
    const float cut = logits[best] * inv_t - CANDIDATE_MARGIN;
    int nc = 0;
    for (int i = 0; i < n; i++) {
      const float v = logits[i] * inv_t;
      if (v >= cut) {
        s->probs[i] = v;
        s->idx[nc++] = i;
      }
    }
    qsort_r(s->idx, (size_t)nc, sizeof *s->idx, cmp_desc, s->probs);
    if (p->top_k > 0 && nc > p->top_k)
      nc = p->top_k;
    const float mx = s->probs[s->idx[0]];
    double sum = 0;
    for (int j = 0; j < nc; j++) {
      s->probs[s->idx[j]] = expf(s->probs[s->idx[j]] - mx);
      sum += s->probs[s->idx[j]];
    }
    if (p->top_p < 1.0f) {
      double cum = 0;
      for (int j = 0; j < nc; j++) {
        cum += s->probs[s->idx[j]] / sum;
        if (cum >= p->top_p) {
          nc = j + 1;
          break;
        }
      }
    }
    if (p->min_p > 0.0f) { /* probs[idx[0]] == 1: the best, unnormalised */
      int j = 1;
      while (j < nc && s->probs[s->idx[j]] >= p->min_p)
        j++;
      nc = j;
    }
    sum = 0;
    for (int j = 0; j < nc; j++)
      sum += s->probs[s->idx[j]];
    double u = rng_uniform(s->rng) * sum, acc = 0;
    chosen = s->idx[nc - 1];
    for (int j = 0; j < nc; j++) {
      acc += s->probs[s->idx[j]];
      if (u < acc) {
        chosen = s->idx[j];
        break;
      }
    }
  }
  if (want_lp)
    fill_logprobs(s, chosen, logprob, top_ids, top_logprobs);
  return chosen;
}

/* ---- stop strings ------------------------------------------------------- */

hx_code hx_stop_matcher_init(hx_stop_matcher *m, const char *const *stops, int n, hx_err *err) {
  memset(m, 0, sizeof *m);
  if (n < 0 || n > HX_STOP_STRINGS_MAX)
    return hx_err_set(err, HX_EINVAL, "stop: at most %d strings, got %d", HX_STOP_STRINGS_MAX, n);
  for (int i = 0; i < n; i++) {
    size_t len = strlen(stops[i]);
    if (len == 0 || len > HX_STOP_STRING_BYTES_MAX)
      return hx_err_set(err, HX_EINVAL, "stop[%d]: length %zu not in 1..%d", i, len,
                        HX_STOP_STRING_BYTES_MAX);
    memcpy(m->stops[i], stops[i], len + 1);
    m->stop_lens[i] = len;
  }
  m->n_stops = n;
  return HX_OK;
}

bool hx_stop_matcher_feed(hx_stop_matcher *m, const char *text, size_t len, char *out,
                          size_t out_cap, size_t *out_len) {
  *out_len = 0;
  if (m->matched)
    return true;
  HX_ASSERT(out_cap >= len + m->n_held);
  /* out = held + text; search it whole */
  memcpy(out, m->held, m->n_held);
  memcpy(out + m->n_held, text, len);
  const size_t total = m->n_held + len;
  m->n_held = 0;
  size_t first = total;
  for (int i = 0; i < m->n_stops; i++) {
    const char *hit = memmem(out, total, m->stops[i], m->stop_lens[i]);
    if (hit && (size_t)(hit - out) < first)
      first = (size_t)(hit - out);
  }
  if (first < total) {
    m->matched = true;
    *out_len = first;
    return true;
  }
  /* hold back the longest suffix that is a proper prefix of some stop */
  size_t hold = 0;
  for (int i = 0; i < m->n_stops; i++) {
    size_t maxk = m->stop_lens[i] - 1 < total ? m->stop_lens[i] - 1 : total;
    for (size_t k = maxk; k > hold; k--)
      if (memcmp(out + total - k, m->stops[i], k) == 0) {
        hold = k;
        break;
      }
  }
  memcpy(m->held, out + total - hold, hold);
  m->n_held = hold;
  *out_len = total - hold;
  return false;
}

size_t hx_stop_matcher_flush(hx_stop_matcher *m, char *out, size_t out_cap) {
  if (m->matched)
    return 0;
  HX_ASSERT(out_cap >= m->n_held);
  size_t n = m->n_held;
  memcpy(out, m->held, n);
  m->n_held = 0;
  return n;
}
