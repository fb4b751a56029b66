/* moe_ffn.h — the mixture-of-experts FFN block shared by the MoE forward
 * passes (qwen3moe in qwen3.c; qwen3next and qwen35moe in qwen35.c).
 *
 * One block, for n token rows x [n][n_embd] (the post-attention-normed
 * hidden state), as transformers' Qwen3MoeSparseMoeBlock /
 * Qwen3NextSparseMoeBlock compute it:
 *   router logits = x · ffn_gate_inpᵀ                     [n][n_expert]
 *   p = softmax(logits) (f32); top-k; renormalized when expert_weights_norm
 *   (norm_topk_prob; qwen35moe always)
 *   routed[t] = Σ_j w[t][j] · down_e(silu(gate_e(x[t])) * up_e(x[t])),  e = id[t][j]
 *   with a shared expert (n_ff_shexp > 0):
 *   out[t] = routed[t] + sigmoid(x[t] · ffn_gate_inp_shexp) · down_s(silu(gate_s(x)) * up_s(x))
 * The expert ids stay on the backend (backend.h MoE ops); only the chosen
 * experts' weights are read.
 *
 * Objects: one moe_ffn per model (configuration + activation scratch for
 * max_rows rows, shared by every layer since layers run one after another),
 * one moe_ffn_layer per MoE layer (its weight tensors; wrapped from the model
 * file where the backend can, else uploaded; buffers owned by the layer).
 *
 * Usage:
 *   moe_ffn f;  moe_ffn_init(&f, backend, hp, max_batch, &err);
 *   reserve(..., max_cols ≥ moe_ffn_reserve_cols(&f), ...)   (with the model's own)
 *   for each MoE layer l: moe_ffn_layer_load(&f, mf, l, &layer[l], &err);
 *   inside a step: moe_ffn_forward(&f, &layer[l], out, x);
 *   moe_ffn_layer_free(&f, &layer[l]) for each; moe_ffn_free(&f). */
#ifndef HX_ENGINE_MODELS_MOE_FFN_H
#define HX_ENGINE_MODELS_MOE_FFN_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/backend.h"
#include "engine/model_file.h"

typedef struct moe_ffn {
  hx_backend backend; /* not owned */
  int n_embd;         /* E */
  int n_expert;       /* X routed experts */
  int k;              /* experts per token (n_expert_used) */
  int n_ff_exp;       /* F per routed expert */
  int n_ff_shexp;     /* shared expert width; 0 = none */
  bool renorm;        /* renormalize the top-k weights */
  int max_rows;       /* rows per forward call, ≤ this */
  /* scratch, max_rows (or max_rows * k) rows each; one owned buffer */
  hx_bbuf *act;
  hx_tensor logits;  /* [B][X] router logits */
  hx_tensor weights; /* [B][k] routing weights */
  hx_tensor ids;     /* i32 [B][k] chosen experts */
  hx_tensor eg, eu;  /* [B*k][F] expert gate / up, then silu(g)*u in eg */
  hx_tensor ed;      /* [B*k][E] expert outputs before weighting */
  hx_tensor sg, su;  /* [B][Fs] shared expert gate / up (when n_ff_shexp) */
  hx_tensor sh_out;  /* [B][E] shared expert output */
  hx_tensor sh_gate; /* [B][1] shared expert gate logit */
} moe_ffn;

/* One MoE layer's weights (GGUF names under blk.<l>.). Absent tensors have
 * buf == NULL. */
typedef struct moe_ffn_layer {
  hx_tensor router;                           /* ffn_gate_inp [X][E] */
  hx_tensor gate_exps, up_exps;               /* ffn_{gate,up}_exps [X*F][E] */
  hx_tensor down_exps;                        /* ffn_down_exps [X*E][F] */
  hx_tensor shexp_gate;                       /* ffn_gate_inp_shexp [1][E] */
  hx_tensor gate_shexp, up_shexp, down_shexp; /* ffn_*_shexp [Fs][E], [Fs][E], [E][Fs] */
  hx_bbuf *bufs[8];                           /* owned (wrapped or uploaded) */
  int n_bufs;
} moe_ffn_layer;

/* Reads the MoE hyper-parameters from hp (n_expert, n_expert_used,
 * n_ff_exp, n_ff_shexp, expert_weights_norm; qwen35moe always renormalizes)
 * and allocates scratch for max_rows rows on the backend. Fails (f left
 * zeroed, nothing to free) on a non-MoE arch, sizes over the backend limits
 * (k > HX_BACKEND_TOPK_MAX, widths > HX_BACKEND_MOE_N_IN_MAX) or no memory. */
hx_code moe_ffn_init(moe_ffn *f, hx_backend backend, const model_hparams *hp, int max_rows,
                     hx_err *err);
/* Frees the scratch; f may be zeroed. Layers are freed separately. */
void moe_ffn_free(moe_ffn *f);

/* The widest activation row an op of this block quantizes or reads
 * (max of n_embd, n_ff_shexp and k * n_ff_exp, the down input of n rows
 * spanning n*k rows): pass at least this as reserve()'s max_cols. */
int64_t moe_ffn_reserve_cols(const moe_ffn *f);

/* Loads blk.<layer>.ffn_gate_inp / ffn_{gate,up,down}_exps (+ the shared
 * expert's four tensors when n_ff_shexp) from mf onto f's backend, checking
 * every shape. The tensors are used as stored (any weight type the backend's
 * matmul takes). On failure out is left empty (nothing to free) and err names
 * the tensor. mf must outlive the layer (weights may be wrapped, not copied). */
hx_code moe_ffn_layer_load(const moe_ffn *f, const model_file *mf, int layer, moe_ffn_layer *out,
                           hx_err *err);
/* Frees the layer's buffers; L may be zeroed. */
void moe_ffn_layer_free(const moe_ffn *f, moe_ffn_layer *L);

/* Queues the block on f's backend (between step_begin and step_end):
 * out[n][E] = MoE(x[n][E]) for n = x.n_rows ≤ max_rows. out may alias x
 * (x is fully consumed before out is written). Uses f's scratch: not
 * reentrant across concurrent steps of one moe_ffn. */
void moe_ffn_forward(const moe_ffn *f, const moe_ffn_layer *L, hx_tensor out, hx_tensor x);

#endif
