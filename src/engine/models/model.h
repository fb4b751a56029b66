/* model.h — the interface between the engine and one architecture's forward
 * pass (internal to the engine).
 *
 * A model is loaded from a validated model_file onto a backend: weights become
 * backend tensors (wrapped without copying where the backend can), and the
 * activations of a max_batch-token step are allocated once. A cache holds one
 * sequence's state (KV for attention layers; recurrent state for hybrid arches
 * later). forward() appends n tokens at positions pos0.. to the cache and
 * returns logits; it allocates nothing. */
#ifndef HX_ENGINE_MODELS_MODEL_H
#define HX_ENGINE_MODELS_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/backend.h"
#include "engine/model_file.h"

typedef struct hx_model hx_model;
typedef struct hx_model_cache hx_model_cache;

typedef struct hx_model_ops {
  /* Frees the model (weights, activations). */
  void (*free)(hx_model *m);
  /* A cache of n_ctx positions with K/V stored as kv_type (F32/F16/Q8_0). */
  hx_code (*cache_init)(hx_model *m, quant_type kv_type, hx_model_cache **out, hx_err *err);
  void (*cache_free)(hx_model *m, hx_model_cache *c);
  /* Bytes a cache of kv_type needs (for estimates). */
  uint64_t (*cache_bytes)(const hx_model *m, quant_type kv_type);
  /* Keeps only the first n_keep positions (attention-only: nothing to do but
   * remember; recurrent arches would restore a snapshot). */
  hx_code (*cache_truncate)(hx_model *m, hx_model_cache *c, int n_keep, hx_err *err);
  /* Optional (NULL: any n ≤ the cached length can be kept): the longest
   * prefix ≤ n_common of the cached tokens that cache_truncate can keep.
   * Recurrent arches can keep everything, their snapshot's prefix, or nothing. */
  int (*cache_reusable)(const hx_model *m, const hx_model_cache *c, int n_common);
  /* Optional (recurrent arches): saves the state as it is now, covering the
   * cache's current tokens, so that cache_truncate can return to exactly
   * that many tokens later; one snapshot, replacing the previous one. */
  hx_code (*cache_snapshot)(hx_model *m, hx_model_cache *c, hx_err *err);
  /* Runs tokens[0..n) (n ≤ max_batch) at positions pos0..pos0+n-1. Writes
   * the last token's logits to logits_last (n_vocab floats) if non-NULL, and
   * every token's to logits_all (n * n_vocab) if non-NULL. With argmax_last
   * non-NULL (and logits_last NULL) the last token's arg-max is taken on the
   * backend and only {id, logit} crosses to the host: argmax_last[0] = id,
   * *argmax_logit = its logit (not finite when the logits are not). */
  hx_code (*forward)(hx_model *m, hx_model_cache *c, const int32_t *tokens, int n, int pos0,
                     float *logits_last, float *logits_all, int32_t *argmax_last,
                     float *argmax_logit, hx_err *err);
} hx_model_ops;

/* Common head of every model struct. */
struct hx_model {
  const hx_model_ops *ops;
  hx_backend backend; /* not owned */
  model_hparams hp;
  int n_ctx;
  int max_batch;
};

/* The start of every forward(): checks that n tokens fit the context at pos0
 * and that every id is in the vocabulary, then uploads the ids to row 0 and
 * the positions pos0.. to row 1 of io, an i32 [2][max_batch] tensor
 * (models/forward_io.c). */
hx_code model_inputs_upload(const hx_model *mb, hx_tensor io, const int32_t *tokens, int n,
                            int pos0, hx_err *err);

/* The output head of a model, for model_head_results. */
typedef struct model_head {
  hx_tensor output;          /* [V][E] head weights */
  hx_tensor logits;          /* [1][V] f32 scratch */
  hx_tensor top_val, top_id; /* [1][1] the device arg-max (f32, i32) */
} model_head;

/* The tail of every forward(), after its step ended: downloads the device
 * arg-max (argmax_last without logits), or the last row's logits already in
 * h->logits, or — for logits_all — runs the head once per row of the final
 * normed activations xb [n][E] and downloads each (models/forward_io.c). */
hx_code model_head_results(const hx_backend *b, const model_head *h, hx_tensor xb, int n,
                           int n_vocab, float *logits_last, float *logits_all, int32_t *argmax_last,
                           float *argmax_logit, hx_err *err);

/* qwen3 and qwen2 (dense). */
hx_code qwen3_model_load(const model_file *mf, hx_backend backend, int n_ctx, int max_batch,
                         hx_model **out, hx_err *err);

/* qwen3moe: qwen3 attention with a mixture-of-experts FFN (models/qwen3.c). */
hx_code qwen3moe_model_load(const model_file *mf, hx_backend backend, int n_ctx, int max_batch,
                            hx_model **out, hx_err *err);

/* The hybrid generation: qwen3next, qwen35, qwen35moe — Gated DeltaNet layers
 * beside gated full attention (models/qwen35.c). */
hx_code qwen35_model_load(const model_file *mf, hx_backend backend, int n_ctx, int max_batch,
                          hx_model **out, hx_err *err);

#endif
