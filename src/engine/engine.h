/* engine.h — what the daemon and the CLI use: open a model on a backend, make
 * per-request slots, evaluate tokens, generate with sampling and streaming.
 *
 * An hx_engine owns the weights (mapped or uploaded), the backend, and the
 * scratch of one forward pass. An hx_engine_slot owns one request's state: its
 * KV cache (sized at slot creation from the engine's n_ctx) and the token ids
 * whose keys and values the cache holds. A new request on a slot reuses the
 * longest common token prefix of its prompt with what the slot holds and
 * prefills only the rest (n_reused in the result says how many).
 *
 * Threading: an engine runs one forward pass at a time; calls on one engine
 * must be serialised by the caller (the daemon's model worker). The cancel
 * flag may be set from any thread. Nothing is allocated inside a decode step. */
#ifndef HX_ENGINE_ENGINE_H
#define HX_ENGINE_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/sampler.h"

typedef struct hx_engine hx_engine;
typedef struct hx_engine_slot hx_engine_slot;

typedef enum hx_kv_type {
  HX_KV_F16 = 0, /* default */
  HX_KV_F32,
  HX_KV_Q8_0,
} hx_kv_type;

typedef struct hx_engine_opts {
  const char *backend; /* "cpu" (default when NULL), "cuda" / "cuda:N" in CUDA builds */
  int n_threads;       /* CPU threads incl. the caller; 0 = all usable CPUs */
  int n_ctx;           /* context length (tokens per slot); 0 = min(model's, 4096) */
  hx_kv_type kv_type;
  const char *quant; /* in-situ quantization of a bf16/f16/f32 model at load
                        ("q8_0", "q4_k_m", ...); NULL = as stored */
  int max_batch;     /* max tokens per prefill chunk; 0 = 512 */
} hx_engine_opts;

/* Fills opts with the defaults above. */
void hx_engine_opts_default(hx_engine_opts *opts);

/* Memory the engine would need, computed from the file without loading it. */
typedef struct hx_engine_mem {
  uint64_t weight_bytes;  /* weights as they will be held (after in-situ quant) */
  uint64_t kv_bytes_slot; /* one slot's KV cache at n_ctx */
  uint64_t scratch_bytes; /* activations and backend scratch */
} hx_engine_mem;

hx_code hx_engine_estimate(const char *path, const hx_engine_opts *opts, hx_engine_mem *out,
                           hx_err *err);

typedef struct hx_engine_info {
  char arch[32];   /* "qwen3", "qwen2" */
  int n_ctx;       /* the context length slots get */
  int n_ctx_train; /* the model's own maximum */
  int n_vocab;     /* logits per step */
  int n_layers, n_embd, n_heads, n_kv_heads, head_dim, n_ff;
  int32_t eos_ids[8]; /* end-of-generation token ids (eos, eot, im_end ...) */
  int n_eos;
  uint64_t n_params;
  uint64_t weight_bytes;
  char weight_type[16]; /* dominant stored type, e.g. "Q4_K", "BF16" */
  /* What one decode token reads (the decode limit's numerator, with the
   * bandwidth from hx_engine_measure_roofs): weights (the routed experts'
   * top-k share, one embedding row), K and V per position of context, and
   * the recurrent state (read and written). */
  uint64_t decode_weight_bytes, kv_bytes_per_pos, state_bytes;
  /* What one prompt token computes (the prefill limit's numerator, with
   * gemm_tflops): the layers' matrices, 2 flops per multiply-add, and in the
   * attention layers QKᵀ and PV, per position it attends to. */
  uint64_t layer_flops, attn_flops_per_pos;
} hx_engine_info;

/* Opens a GGUF file or an HF directory. On failure *out is NULL and err says
 * which input and what went wrong. */
hx_code hx_engine_open(const char *path, const hx_engine_opts *opts, hx_engine **out, hx_err *err);
void hx_engine_close(hx_engine *e); /* e may be NULL; slots must be freed first */
const hx_engine_info *hx_engine_get_info(const hx_engine *e);
/* Roofs of the device the engine runs on, measured now: copy bandwidth of the
 * memory the weights live in (bytes read + written per second; CUDA:
 * device-to-device copies, CPU: memcpy on the engine's threads) and, on CUDA,
 * the f16 tensor-core GEMM rate (cuBLAS, f32 accumulation; 0 on the CPU).
 * Takes a second or so and briefly needs ~1 GiB of free memory. */
typedef struct hx_engine_roofs {
  double copy_gbps;
  double gemm_tflops;
} hx_engine_roofs;
hx_code hx_engine_measure_roofs(hx_engine *e, hx_engine_roofs *out, hx_err *err);
/* Free and total memory of the device a backend string ("cuda", "cuda:N")
 * names; HX_EUNSUPPORTED for the CPU. Needs no engine (a baseline before
 * hx_engine_open). */
hx_code hx_engine_device_memory(const char *backend, size_t *free_bytes, size_t *total_bytes,
                                hx_err *err);

/* Adds an end-of-generation id (e.g. the tokenizer's end-of-turn token, which
 * a base model's config does not name as eos) to info.eos_ids. Ids out of the
 * vocabulary, duplicates and ids past the list's capacity are ignored. */
void hx_engine_add_eos_id(hx_engine *e, int32_t id);

/* A slot with a KV cache of info.n_ctx tokens (allocated here, never resized). */
hx_code hx_engine_slot_create(hx_engine *e, hx_engine_slot **out, hx_err *err);
void hx_engine_slot_free(hx_engine_slot *s); /* s may be NULL */
/* Forgets the slot's tokens (the cache memory is kept). */
void hx_engine_slot_reset(hx_engine_slot *s);
/* Tokens the slot's cache currently holds (valid until the next call on it). */
const int32_t *hx_engine_slot_tokens(const hx_engine_slot *s, int *n_out);

/* Low level: appends tokens[0..n) to the slot (prefill in chunks of
 * max_batch) and, if logits_out is non-NULL, writes the logits of the last
 * token there (n_vocab floats); with all_logits non-NULL (n * n_vocab floats)
 * writes the logits of every token. Fails with HX_ETOOLARGE past n_ctx,
 * HX_ECANCELLED when *cancel becomes true. */
hx_code hx_engine_eval(hx_engine *e, hx_engine_slot *s, const int32_t *tokens, int n,
                       float *logits_out, float *all_logits, const atomic_bool *cancel,
                       hx_err *err);

/* One generated token as it is streamed. */
typedef struct hx_gen_token {
  int32_t id;
  float logprob; /* log-softmax of the sampled token (raw logits); 0 unless n_logprobs > 0 */
  int n_top;     /* alternatives below, ≤ sampling.n_logprobs */
  int32_t top_ids[HX_SAMPLER_TOPK_MAX];
  float top_logprobs[HX_SAMPLER_TOPK_MAX];
} hx_gen_token;

/* Called once per generated token, in order; return false to stop (finish
 * reason "stop_callback"). Not called for a stop token id. */
typedef bool (*hx_gen_cb)(void *user, const hx_gen_token *tok);

typedef enum hx_finish {
  HX_FINISH_LENGTH = 0, /* max_tokens reached or context full */
  HX_FINISH_STOP,       /* a stop token id (incl. eos) was sampled */
  HX_FINISH_CALLBACK,   /* the callback returned false (e.g. a stop string) */
  HX_FINISH_CANCELLED,
  HX_FINISH_ERROR,
} hx_finish;

typedef struct hx_gen_result {
  hx_finish finish;
  int n_prompt;       /* prompt tokens */
  int n_reused;       /* prompt tokens whose KV came from the slot (prefix reuse) */
  int n_generated;    /* tokens passed to the callback */
  int32_t stop_token; /* the stop id sampled, -1 otherwise */
  double prefill_ms;  /* prompt processing, including the first sample (TTFT) */
  double decode_ms;   /* the remaining tokens */
} hx_gen_result;

/* Generates on slot s: reuses the longest common prefix of prompt with the
 * slot's tokens, prefills the rest, then samples (params) until max_tokens, a
 * stop id, cancel, context full or the callback says stop. NaN/inf logits end
 * the request with HX_ENUMERIC and a message naming the step. Returns HX_OK
 * for every normal finish (cancellation included: finish says which). */
hx_code hx_engine_generate(hx_engine *e, hx_engine_slot *s, const int32_t *prompt, int n_prompt,
                           const hx_sampling_params *params, hx_gen_cb cb, void *user,
                           const atomic_bool *cancel, hx_gen_result *res, hx_err *err);

#endif
