/* engine.c — see engine.h. Ties a model file, a backend and a model's forward
 * pass together; owns slots (KV caches + their token ids) and the generation
 * loop (prefix reuse, prefill, sample, decode, stop). */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "base/pool.h"
#include "base/time.h"
#include "engine/engine.h"
#include "engine/model_file.h"
#include "engine/models/model.h"
#ifdef HELEXA_HAVE_CUDA
#include "engine/backend/cuda/backend_cuda.h"
#endif

struct hx_engine {
  model_file *mf;
  hx_backend backend;
  hx_model *model;
  hx_engine_info info;
  quant_type kv_type;
  float *logits; /* [n_vocab] host copy of the last step's logits */
  bool on_cuda;  /* backend is hx_backend_cuda (else cpu) */
  int n_threads; /* CPU threads the backend computes with */
};

struct hx_engine_slot {
  hx_engine *e;
  hx_model_cache *cache;
  int32_t *tokens; /* [n_ctx] the ids whose K/V the cache holds */
  int n_tokens;
};

void hx_engine_opts_default(hx_engine_opts *o) {
  memset(o, 0, sizeof *o);
  o->backend = "cpu";
  o->kv_type = HX_KV_F16;
}

static quant_type kv_quant_type(hx_kv_type t) {
  return t == HX_KV_F32 ? QUANT_F32 : t == HX_KV_Q8_0 ? QUANT_Q8_0 : QUANT_F16;
}

/* "cuda" → 0, "cuda:N" → N; -1 for anything else or without CUDA. */
static int cuda_device(const char *backend) {
#ifdef HELEXA_HAVE_CUDA
  if (strcmp(backend, "cuda") == 0)
    return 0;
  if (strncmp(backend, "cuda:", 5) == 0 && backend[5] >= '0' && backend[5] <= '9') {
    char *end;
    long d = strtol(backend + 5, &end, 10);
    return *end == 0 && d < 64 ? (int)d : -1;
  }
#else
  (void)backend;
#endif
  return -1;
}

static hx_code parse_opts(const hx_engine_opts *opts, model_quant *q, int *threads, hx_err *err) {
  if (opts->backend && strcmp(opts->backend, "cpu") != 0 && cuda_device(opts->backend) < 0)
    return hx_err_set(err, HX_EUNSUPPORTED, "backend \"%s\" unavailable (cpu%s)", opts->backend,
#ifdef HELEXA_HAVE_CUDA
                      ", cuda, cuda:N"
#else
                      "; this build has no CUDA"
#endif
    );
  *q = MODEL_QUANT_NONE;
  if (opts->quant && !model_quant_parse(opts->quant, q))
    return hx_err_set(err, HX_EINVAL, "quant \"%s\" unknown (q8_0, q4_k_m, q6_k, ...)",
                      opts->quant);
  if (opts->kv_type != HX_KV_F16 && opts->kv_type != HX_KV_F32 && opts->kv_type != HX_KV_Q8_0)
    return hx_err_set(err, HX_EINVAL, "kv_type %d unknown", (int)opts->kv_type);
  if (opts->n_threads < 0 || opts->n_threads > 256 || opts->n_ctx < 0 || opts->max_batch < 0 ||
      opts->max_batch > 4096)
    return hx_err_set(err, HX_EINVAL,
                      "threads (0..256), n_ctx (>= 0), max_batch (0..4096) invalid");
  *threads = opts->n_threads ? opts->n_threads : hx_cpu_count();
  return HX_OK;
}

static int pick_ctx(const hx_engine_opts *opts, const model_hparams *hp) {
  if (opts->n_ctx > 0)
    return opts->n_ctx;
  return hp->n_ctx_train > 0 && hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
}

hx_code hx_engine_estimate(const char *path, const hx_engine_opts *opts, hx_engine_mem *out,
                           hx_err *err) {
  hx_engine_opts def;
  if (!opts) {
    hx_engine_opts_default(&def);
    opts = &def;
  }
  memset(out, 0, sizeof *out);
  model_quant q;
  int threads;
  hx_code rc = parse_opts(opts, &q, &threads, err);
  if (rc != HX_OK)
    return rc;
  model_file_opts mo = {.quant = MODEL_QUANT_NONE};
  model_file *mf = NULL;
  if ((rc = model_file_open(path, &mo, &mf, err)) != HX_OK)
    return rc;
  const model_hparams *hp = model_file_hparams(mf);
  const int n_ctx = pick_ctx(opts, hp);
  for (size_t i = 0; i < model_file_tensor_count(mf); i++) {
    const model_tensor *t = model_file_tensor_at(mf, i);
    quant_type ty =
        model_quant_pick(q, t->name, t->n_dims, t->ne, t->type, hp->n_layer, hp->tied_embeddings);
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++)
      n *= t->ne[d];
    size_t b = 0;
    out->weight_bytes += quant_row_bytes(ty, n, &b) ? b : t->nbytes;
  }
  size_t kv_row =
      hx_backend_row_bytes(kv_quant_type(opts->kv_type), (int64_t)hp->n_head_kv * hp->head_dim_k);
  /* hybrid arches: K/V only for the full-attention layers, plus the recurrent
   * state of the DeltaNet layers twice (live + prefix snapshot, models/qwen35.c) */
  int n_attn = 0;
  for (int l = 0; l < hp->n_layer; l++)
    n_attn += !hp->layer_recurrent[l];
  out->kv_bytes_slot = 2ull * (uint64_t)n_attn * (uint64_t)n_ctx * kv_row +
                       2ull * model_file_memory_estimate(mf, n_ctx, 2).recurrent_bytes;
  const uint64_t B = opts->max_batch ? (uint64_t)opts->max_batch : 512;
  const uint64_t qd = (uint64_t)hp->n_head * (uint64_t)hp->head_dim_k;
  out->scratch_bytes = 4 * B * (2ull * (uint64_t)hp->n_embd + 2 * qd + 2ull * (uint64_t)hp->n_ff) +
                       8ull * (uint64_t)hp->n_vocab + (uint64_t)threads * 4 * (uint64_t)n_ctx;
  model_file_close(mf);
  return HX_OK;
}

hx_code hx_engine_open(const char *path, const hx_engine_opts *opts, hx_engine **out, hx_err *err) {
  hx_engine_opts def;
  if (!opts) {
    hx_engine_opts_default(&def);
    opts = &def;
  }
  *out = NULL;
  model_quant q;
  int threads;
  hx_code rc = parse_opts(opts, &q, &threads, err);
  if (rc != HX_OK)
    return rc;
  hx_engine *e = calloc(1, sizeof *e);
  if (!e)
    return hx_err_set(err, HX_ENOMEM, "engine: out of memory");
  e->kv_type = kv_quant_type(opts->kv_type);
  e->n_threads = threads;
  const int dev = opts->backend ? cuda_device(opts->backend) : -1;
#ifdef HELEXA_HAVE_CUDA
  if (dev >= 0)
    rc = hx_backend_cuda_init(&e->backend, dev, err);
  else
#endif
    rc = hx_backend_cpu_init(&e->backend, threads, err);
  e->on_cuda = dev >= 0 && rc == HX_OK;
  if (rc != HX_OK) {
    free(e);
    return rc;
  }
  hx_pool *qpool = q != MODEL_QUANT_NONE ? hx_pool_create(threads) : NULL;
  model_file_opts mo = {.quant = q, .pool = qpool};
  rc = model_file_open(path, &mo, &e->mf, err);
  hx_pool_free(qpool);
  if (rc != HX_OK) {
    hx_engine_close(e);
    return rc;
  }
  const model_hparams *hp = model_file_hparams(e->mf);
  const int n_ctx = pick_ctx(opts, hp);
  const int max_batch = opts->max_batch ? opts->max_batch : 512;
  switch (hp->arch) {
  case MODEL_ARCH_QWEN3:
  case MODEL_ARCH_QWEN2:
    rc = qwen3_model_load(e->mf, e->backend, n_ctx, max_batch, &e->model, err);
    break;
  case MODEL_ARCH_QWEN3MOE:
    rc = qwen3moe_model_load(e->mf, e->backend, n_ctx, max_batch, &e->model, err);
    break;
  case MODEL_ARCH_QWEN3NEXT:
  case MODEL_ARCH_QWEN35:
  case MODEL_ARCH_QWEN35MOE:
    rc = qwen35_model_load(e->mf, e->backend, n_ctx, max_batch, &e->model, err);
    break;
  default:
    rc = hx_err_set(err, HX_EUNSUPPORTED, "%s: arch %s not supported by this engine yet", path,
                    model_arch_name(hp->arch));
  }
  if (rc == HX_OK) {
    e->logits = malloc((size_t)hp->n_vocab * sizeof *e->logits);
    if (!e->logits)
      rc = hx_err_set(err, HX_ENOMEM, "engine: out of memory");
  }
  if (rc != HX_OK) {
    hx_engine_close(e);
    return rc;
  }
  hx_engine_info *in = &e->info;
  snprintf(in->arch, sizeof in->arch, "%s", model_arch_name(hp->arch));
  in->n_ctx = n_ctx;
  in->n_ctx_train = hp->n_ctx_train;
  in->n_vocab = hp->n_vocab;
  in->n_layers = hp->n_layer;
  in->n_embd = hp->n_embd;
  in->n_heads = hp->n_head;
  in->n_kv_heads = hp->n_head_kv;
  in->head_dim = hp->head_dim_k;
  in->n_ff = hp->n_ff;
  if (hp->eos_token_id >= 0 && hp->eos_token_id < hp->n_vocab)
    in->eos_ids[in->n_eos++] = hp->eos_token_id;
  in->weight_bytes = model_file_weight_bytes(e->mf);
  const model_token_cost tc = model_file_token_cost(e->mf);
  in->decode_weight_bytes = tc.weight_bytes;
  in->layer_flops = 2 * tc.layer_macs;
  for (int l = 0; l < hp->n_layer; l++) {
    if (hp->layer_recurrent[l])
      continue;
    in->kv_bytes_per_pos +=
        hx_backend_row_bytes(e->kv_type, (int64_t)hp->n_head_kv * hp->head_dim_k) +
        hx_backend_row_bytes(e->kv_type, (int64_t)hp->n_head_kv * hp->head_dim_v);
    in->attn_flops_per_pos +=
        2ull * (uint64_t)hp->n_head * (uint64_t)(hp->head_dim_k + hp->head_dim_v);
  }
  in->state_bytes = 2 * model_file_memory_estimate(e->mf, 0, 2).recurrent_bytes; /* read + write */
  uint64_t bytes_by_type[QUANT_TYPE_COUNT] = {0};
  for (size_t i = 0; i < model_file_tensor_count(e->mf); i++) {
    const model_tensor *t = model_file_tensor_at(e->mf, i);
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++)
      n *= t->ne[d];
    in->n_params += (uint64_t)n;
    if (t->type < QUANT_TYPE_COUNT && strncmp(t->name, "blk.", 4) == 0)
      bytes_by_type[t->type] += t->nbytes;
  }
  int dom = 0;
  for (int t = 1; t < QUANT_TYPE_COUNT; t++)
    dom = bytes_by_type[t] > bytes_by_type[dom] ? t : dom;
  snprintf(in->weight_type, sizeof in->weight_type, "%s", quant_type_name((quant_type)dom));
  *out = e;
  return HX_OK;
}

void hx_engine_close(hx_engine *e) {
  if (!e)
    return;
  if (e->model)
    e->model->ops->free(e->model);
  model_file_close(e->mf);
#ifdef HELEXA_HAVE_CUDA
  if (e->on_cuda)
    hx_backend_cuda_free(&e->backend);
  else
#endif
    hx_backend_cpu_free(&e->backend);
  free(e->logits);
  free(e);
}

const hx_engine_info *hx_engine_get_info(const hx_engine *e) { return &e->info; }

/* CPU copy bandwidth: n_threads memcpy slices of one large buffer. */
typedef struct copy_job {
  char *dst;
  const char *src;
  size_t n, slice;
} copy_job;

static void copy_slice(void *ctx, size_t task, int worker) {
  (void)worker;
  const copy_job *j = ctx;
  const size_t o = task * j->slice, n = o + j->slice <= j->n ? j->slice : j->n - o;
  memcpy(j->dst + o, j->src + o, n);
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static hx_code cpu_copy_gbps(int n_threads, double *out, hx_err *err) {
  enum { REPS = 7 };
  const size_t n = (size_t)256 << 20;
  char *src = malloc(n), *dst = malloc(n);
  hx_pool *pool = hx_pool_create(n_threads);
  hx_code rc = HX_OK;
  if (!src || !dst || !pool) {
    rc = hx_err_set(err, HX_ENOMEM, "engine: cannot allocate the bandwidth probe (2 x 256 MiB)");
    goto out;
  }
  memset(src, 1, n);
  memset(dst, 0, n);
  copy_job j = {dst, src, n, (n / (size_t)n_threads + 4095) & ~(size_t)4095};
  double gbps[REPS];
  for (int r = 0; r < REPS; r++) {
    const uint64_t t0 = hx_time_mono_ns();
    hx_pool_parallel_for(pool, (n + j.slice - 1) / j.slice, copy_slice, &j);
    gbps[r] = 2.0 * (double)n / (double)(hx_time_mono_ns() - t0); /* bytes/ns = GB/s */
  }
  qsort(gbps, REPS, sizeof gbps[0], cmp_double);
  *out = gbps[REPS / 2];
out:
  hx_pool_free(pool);
  free(src);
  free(dst);
  return rc;
}

hx_code hx_engine_measure_roofs(hx_engine *e, hx_engine_roofs *out, hx_err *err) {
  memset(out, 0, sizeof *out);
#ifdef HELEXA_HAVE_CUDA
  if (e->on_cuda) {
    out->copy_gbps = hx_backend_cuda_copy_bandwidth(&e->backend, (size_t)512 << 20);
    out->gemm_tflops = hx_backend_cuda_gemm_tflops(&e->backend);
    if (out->copy_gbps <= 0 || out->gemm_tflops <= 0)
      return hx_err_set(err, HX_ENOMEM,
                        "engine: no room on the device for the %s probe (%s of free memory)",
                        out->copy_gbps <= 0 ? "copy bandwidth" : "GEMM",
                        out->copy_gbps <= 0 ? "2 x 512 MiB" : "~512 MiB");
    return HX_OK;
  }
#endif
  return cpu_copy_gbps(e->n_threads, &out->copy_gbps, err);
}

hx_code hx_engine_device_memory(const char *backend, size_t *free_bytes, size_t *total_bytes,
                                hx_err *err) {
  const int dev = backend ? cuda_device(backend) : -1;
#ifdef HELEXA_HAVE_CUDA
  if (dev >= 0)
    return hx_backend_cuda_mem_info(dev, free_bytes, total_bytes, err);
#endif
  (void)dev, (void)free_bytes, (void)total_bytes;
  return hx_err_set(err, HX_EUNSUPPORTED, "backend \"%s\" has no device memory",
                    backend ? backend : "cpu");
}

void hx_engine_add_eos_id(hx_engine *e, int32_t id) {
  hx_engine_info *in = &e->info;
  if (id < 0 || id >= in->n_vocab)
    return;
  for (int i = 0; i < in->n_eos; i++)
    if (in->eos_ids[i] == id)
      return;
  if (in->n_eos < (int)(sizeof in->eos_ids / sizeof in->eos_ids[0]))
    in->eos_ids[in->n_eos++] = id;
}

hx_code hx_engine_slot_create(hx_engine *e, hx_engine_slot **out, hx_err *err) {
  *out = NULL;
  hx_engine_slot *s = calloc(1, sizeof *s);
  if (!s)
    return hx_err_set(err, HX_ENOMEM, "slot: out of memory");
  s->e = e;
  s->tokens = malloc((size_t)e->info.n_ctx * sizeof *s->tokens);
  hx_code rc = s->tokens ? e->model->ops->cache_init(e->model, e->kv_type, &s->cache, err)
                         : hx_err_set(err, HX_ENOMEM, "slot: out of memory");
  if (rc != HX_OK) {
    free(s->tokens);
    free(s);
    return rc;
  }
  *out = s;
  return HX_OK;
}

void hx_engine_slot_free(hx_engine_slot *s) {
  if (!s)
    return;
  s->e->model->ops->cache_free(s->e->model, s->cache);
  free(s->tokens);
  free(s);
}

void hx_engine_slot_reset(hx_engine_slot *s) { s->n_tokens = 0; }

const int32_t *hx_engine_slot_tokens(const hx_engine_slot *s, int *n_out) {
  *n_out = s->n_tokens;
  return s->tokens;
}

/* hx_engine_eval, optionally taking the last token's arg-max on the backend
 * (argmax non-NULL, logits_out NULL) so that only {id, logit} crosses. */
static hx_code eval_impl(hx_engine *e, hx_engine_slot *s, const int32_t *tokens, int n,
                         float *logits_out, float *all_logits, int32_t *argmax, float *argmax_logit,
                         const atomic_bool *cancel, hx_err *err) {
  hx_model *m = e->model;
  if (n < 1)
    return hx_err_set(err, HX_EINVAL, "eval: no tokens");
  if (n > e->info.n_ctx - s->n_tokens)
    return hx_err_set(err, HX_ETOOLARGE, "eval: %d tokens after %d exceed the context of %d", n,
                      s->n_tokens, e->info.n_ctx);
  for (int done = 0; done < n;) {
    if (cancel && atomic_load(cancel))
      return hx_err_set(err, HX_ECANCELLED, "cancelled");
    int chunk = n - done < m->max_batch ? n - done : m->max_batch;
    const bool last = done + chunk == n;
    hx_code rc =
        m->ops->forward(m, s->cache, tokens + done, chunk, s->n_tokens, last ? logits_out : NULL,
                        all_logits ? all_logits + (size_t)done * e->info.n_vocab : NULL,
                        last ? argmax : NULL, argmax_logit, err);
    if (rc != HX_OK)
      return rc;
    memcpy(s->tokens + s->n_tokens, tokens + done, (size_t)chunk * sizeof *tokens);
    s->n_tokens += chunk;
    done += chunk;
  }
  return HX_OK;
}

hx_code hx_engine_eval(hx_engine *e, hx_engine_slot *s, const int32_t *tokens, int n,
                       float *logits_out, float *all_logits, const atomic_bool *cancel,
                       hx_err *err) {
  return eval_impl(e, s, tokens, n, logits_out, all_logits, NULL, NULL, cancel, err);
}

/* Plain greedy decoding (no penalties, bias or logprobs) needs only the
 * arg-max, which the backend computes: the logits never leave the device. */
static bool device_greedy(const hx_sampling_params *p) {
  return (p->greedy || p->temperature <= 0) && p->n_logprobs == 0 && p->n_bias == 0 &&
         (p->repetition_penalty == 1.0f || p->repetition_penalty == 0.0f) &&
         p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f;
}

static bool is_stop(const hx_engine *e, const hx_sampling_params *p, int32_t id) {
  if (!p->ignore_eos)
    for (int i = 0; i < e->info.n_eos; i++)
      if (e->info.eos_ids[i] == id)
        return true;
  for (int i = 0; i < p->n_stop_ids; i++)
    if (p->stop_ids[i] == id)
      return true;
  return false;
}

/* Where a hybrid model's recurrent state is snapshotted for the next request
 * (it cannot be rolled back): right after the prompt's last end-of-turn token
 * (an eos id or a stop id of the request, e.g. <|im_end|>) — the end of its
 * last message, which the next turn's prompt repeats even when the chat
 * template drops the reasoning or renders the generation prompt differently —
 * else at the end of the prompt. Only past the reused prefix. */
static int snapshot_pos(const hx_engine *e, const hx_sampling_params *p, const int32_t *prompt,
                        int n_prompt, int common) {
  for (int i = n_prompt - 1; i >= common; i--) {
    for (int k = 0; k < e->info.n_eos; k++)
      if (prompt[i] == e->info.eos_ids[k])
        return i + 1;
    for (int k = 0; k < p->n_stop_ids; k++)
      if (prompt[i] == p->stop_ids[k])
        return i + 1;
  }
  return n_prompt;
}

hx_code hx_engine_generate(hx_engine *e, hx_engine_slot *s, const int32_t *prompt, int n_prompt,
                           const hx_sampling_params *params, hx_gen_cb cb, void *user,
                           const atomic_bool *cancel, hx_gen_result *res, hx_err *err) {
  memset(res, 0, sizeof *res);
  res->stop_token = -1;
  res->n_prompt = n_prompt;
  res->finish = HX_FINISH_ERROR;
  if (n_prompt < 1)
    return hx_err_set(err, HX_EINVAL, "prompt is empty");
  if (n_prompt >= e->info.n_ctx)
    return hx_err_set(err, HX_ETOOLARGE, "prompt of %d tokens does not fit the context of %d",
                      n_prompt, e->info.n_ctx);
  for (int i = 0; i < n_prompt; i++)
    if (prompt[i] < 0 || prompt[i] >= e->info.n_vocab)
      return hx_err_set(err, HX_EINVAL, "prompt token %d: id %d out of range (vocab %d)", i,
                        prompt[i], e->info.n_vocab);
  hx_sampler smp;
  hx_code rc = hx_sampler_init(&smp, e->info.n_vocab, params, err);
  if (rc != HX_OK)
    return rc;
  const uint64_t t0 = hx_time_mono_ns();
  /* prefix reuse: keep the common prefix, but always recompute the last prompt
   * token so that its logits exist */
  int common = 0;
  while (common < s->n_tokens && common < n_prompt - 1 && s->tokens[common] == prompt[common])
    common++;
  if (e->model->ops->cache_reusable) /* recurrent state: only some prefixes can be kept */
    common = e->model->ops->cache_reusable(e->model, s->cache, common);
  rc = e->model->ops->cache_truncate(e->model, s->cache, common, err);
  if (rc != HX_OK)
    goto out;
  s->n_tokens = common;
  res->n_reused = common;
  for (int i = 0; i < n_prompt; i++)
    hx_sampler_accept(&smp, prompt[i], false);
  const bool dev = device_greedy(params);
  int32_t dev_id = -1;
  float dev_logit = 0.0f;
  /* recurrent state: snapshot at snap, splitting the prefill there (at the end
   * of the prompt: once the first sample is known to be healthy) */
  int snap = e->model->ops->cache_snapshot ? snapshot_pos(e, params, prompt, n_prompt, common) : -1;
  int first = common;
  if (snap > common && snap < n_prompt) {
    rc = eval_impl(e, s, prompt + common, snap - common, NULL, NULL, NULL, NULL, cancel, err);
    if (rc == HX_OK)
      rc = e->model->ops->cache_snapshot(e->model, s->cache, err);
    first = snap;
    snap = -1;
  }
  if (rc == HX_OK)
    rc = eval_impl(e, s, prompt + first, n_prompt - first, dev ? NULL : e->logits, NULL,
                   dev ? &dev_id : NULL, &dev_logit, cancel, err);
  if (rc == HX_ECANCELLED) {
    res->finish = HX_FINISH_CANCELLED;
    rc = HX_OK;
    goto out;
  }
  if (rc != HX_OK)
    goto out;
  uint64_t t_first = 0;
  const int max_new = params->max_tokens > 0 ? params->max_tokens : e->info.n_ctx;
  for (;;) {
    int bad;
    hx_gen_token tok = {0};
    if (dev) {
      /* the backend's arg-max maps NaN to -inf: a non-finite maximum means
       * the logits were not finite */
      if (!isfinite(dev_logit) || dev_id < 0 || dev_id >= e->info.n_vocab) {
        rc = hx_err_set(err, HX_ENUMERIC,
                        "non-finite logits (arg-max %g) at position %d after %d generated tokens",
                        (double)dev_logit, s->n_tokens, res->n_generated);
        goto out;
      }
      tok.id = dev_id;
    } else {
      if (hx_logits_nonfinite(e->logits, e->info.n_vocab, &bad)) {
        rc = hx_err_set(err, HX_ENUMERIC,
                        "non-finite logit (token %d) at position %d after %d generated tokens", bad,
                        s->n_tokens, res->n_generated);
        goto out;
      }
      const bool lp = params->n_logprobs > 0; /* log-sum-exp over the vocabulary costs ~1 ms */
      tok.id = hx_sampler_sample(&smp, e->logits, lp ? &tok.logprob : NULL, lp ? tok.top_ids : NULL,
                                 lp ? tok.top_logprobs : NULL);
      tok.n_top = params->n_logprobs;
    }
    if (!t_first)
      t_first = hx_time_mono_ns();
    if (snap == n_prompt) { /* the first sample is healthy: the state covers the prompt */
      snap = -1;
      if ((rc = e->model->ops->cache_snapshot(e->model, s->cache, err)) != HX_OK)
        goto out;
    }
    if (is_stop(e, params, tok.id)) {
      res->finish = HX_FINISH_STOP;
      res->stop_token = tok.id;
      break;
    }
    hx_sampler_accept(&smp, tok.id, true);
    res->n_generated++;
    if (cb && !cb(user, &tok)) {
      res->finish = HX_FINISH_CALLBACK;
      break;
    }
    if (res->n_generated >= max_new || s->n_tokens >= e->info.n_ctx) {
      res->finish = HX_FINISH_LENGTH;
      break;
    }
    if (cancel && atomic_load(cancel)) {
      res->finish = HX_FINISH_CANCELLED;
      break;
    }
    rc = eval_impl(e, s, &tok.id, 1, dev ? NULL : e->logits, NULL, dev ? &dev_id : NULL, &dev_logit,
                   cancel, err);
    if (rc == HX_ECANCELLED) {
      res->finish = HX_FINISH_CANCELLED;
      rc = HX_OK;
      break;
    }
    if (rc != HX_OK)
      goto out;
  }
  const uint64_t t_end = hx_time_mono_ns();
  res->prefill_ms = (double)(t_first - t0) / 1e6;
  res->decode_ms = (double)(t_end - t_first) / 1e6;
out:
  if (rc != HX_OK)
    res->finish = HX_FINISH_ERROR;
  hx_sampler_free(&smp);
  return rc;
}
