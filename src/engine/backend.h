/* backend.h — the table of operations that forward passes are written against.
 *
 * A backend owns memory ("backend buffers", opaque) and runs the handful of
 * operations a transformer step needs on tensors that live in those buffers.
 * Models never touch backend memory directly: they upload inputs, run ops
 * between hx_backend_ops.step_begin and .step_end, and download results.
 *
 * Shape conventions (row-major, element 0 of a row is contiguous):
 *   activations are f32 matrices [n_rows][n_cols] — one row per token;
 *   weights are [n_out][n_in] in their stored ggml type (quant.h ids), a row
 *   of n_in elements being whole quantization blocks; matmul computes
 *   y[t][o] = sum_i x[t][i] * W[o][i]  (x · Wᵀ, as nn.Linear and ggml do).
 *   The KV cache of one layer is [n_ctx][n_kv_heads * head_dim] in the cache
 *   type (F16 default, F32, Q8_0).
 *
 * Positions live in backend memory (an i32 tensor, one per token row) so that
 * a captured decode graph (CUDA) can replay without host arguments changing:
 * inside a step no host pointer is passed to an op, and every op argument
 * other than tensor handles is a shape or a constant of the model. Ops queued
 * between step_begin and step_end may run asynchronously; step_end waits for
 * them and reports a device failure. download is only valid outside a step.
 *
 * Threading: one backend instance is driven by one thread at a time (the CPU
 * backend parallelises inside each op over its own pool; the CUDA backend
 * forwards to its per-device worker). */
#ifndef HX_ENGINE_BACKEND_H
#define HX_ENGINE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct hx_bbuf hx_bbuf; /* a backend buffer: opaque, owned by the backend */

/* A view of a tensor inside a backend buffer. Plain value; does not own. */
typedef struct hx_tensor {
  hx_bbuf *buf;     /* the buffer; NULL = absent (e.g. no bias) */
  size_t offset;    /* byte offset of element [0][0] in buf */
  uint32_t type;    /* ggml type id (quant.h): 0 = F32, 1 = F16, 8 = Q8_0, ... */
  int64_t n_cols;   /* elements per row (ne0) */
  int64_t n_rows;   /* rows (ne1) */
  size_t row_bytes; /* byte stride between rows */
} hx_tensor;

/* RoPE parameters of a model (constant per model). NeoX style: dimension i of
 * the rotated part pairs with i + n_rot/2. */
typedef struct hx_rope_params {
  int n_rot;        /* rotated dims per head (== head_dim for full rotary; even) */
  float freq_base;  /* theta, e.g. 1e6 */
  float freq_scale; /* 1 / linear factor; 1 = none */
  /* YaRN (rope_scaling.type == "yarn"), as transformers'
   * _compute_yarn_parameters: factor > 1 enables it. */
  float yarn_factor;      /* scaling factor s; 0 or 1 = off */
  int yarn_orig_ctx;      /* original_max_position_embeddings */
  float yarn_beta_fast;   /* default 32 */
  float yarn_beta_slow;   /* default 1 */
  float yarn_attn_factor; /* multiplier of cos/sin (mscale); 0 = 0.1*ln(s)+1 */
} hx_rope_params;

/* Arguments of one attention call, constant per model and layer. */
typedef struct hx_attn_params {
  int n_heads;    /* query heads */
  int n_kv_heads; /* key/value heads; n_heads % n_kv_heads == 0 (GQA) */
  int head_dim;   /* dims per head; ≤ HX_BACKEND_HEAD_DIM_MAX */
  float scale;    /* usually 1/sqrt(head_dim) */
} hx_attn_params;

/* Gated DeltaNet shapes, constant per model (delta_rule). */
typedef struct hx_delta_params {
  int n_k_heads; /* query/key heads (linear_num_key_heads) */
  int n_v_heads; /* value heads (linear_num_value_heads); a multiple of n_k_heads */
  int d_k;       /* per-head key dim (linear_key_head_dim) ≤ HX_BACKEND_SSM_HEAD_DIM_MAX */
  int d_v;       /* per-head value dim (linear_value_head_dim) ≤ HX_BACKEND_SSM_HEAD_DIM_MAX */
  /* Which key head a value head reads. 0: value head h reads key head
   * h / (n_v / n_k) — transformers' repeat_interleave: the HF order and the
   * qwen3next GGUF order. 1: key head h % n_k — the qwen35 / qwen35moe GGUF
   * order (their converter retiles the value heads). */
  int kv_tiled;
  int chunk; /* n > 1: chunked form in chunks of this many tokens (≤ _SSM_CHUNK_MAX); 0 = off */
  float eps_l2; /* epsilon of the q/k L2 norm (1e-6) */
} hx_delta_params;

enum {
  HX_BACKEND_SSM_HEAD_DIM_MAX = 256,
  HX_BACKEND_SSM_CHUNK_MAX = 64,
  HX_BACKEND_SSM_CONV_MAX = 8
};

enum {
  HX_BACKEND_HEAD_DIM_MAX = 512,
  HX_BACKEND_TOPK_MAX = 64,
  HX_BACKEND_MATMUL_N_MAX = 4,
  HX_BACKEND_MOE_N_IN_MAX = 16384, /* input width of an expert matmul (hidden, expert FFN) */
};

typedef struct hx_backend_ops {
  const char *name; /* "cpu", "cuda" */

  /* ---- memory (outside a step) ---- */
  /* Allocates n_bytes of backend memory (64-byte aligned); NULL + err on failure. */
  hx_bbuf *(*buf_alloc)(void *be, size_t n_bytes, hx_err *err);
  /* Wraps host memory the caller keeps alive (e.g. an mmapped weight file) as a
   * read-only buffer without copying, where the backend can (CPU); returns NULL
   * when it cannot — the caller then allocates and uploads. */
  hx_bbuf *(*buf_wrap_host)(void *be, const void *host, size_t n_bytes);
  void (*buf_free)(void *be, hx_bbuf *buf); /* buf may be NULL */
  hx_code (*buf_upload)(void *be, hx_bbuf *buf, size_t offset, const void *src, size_t n_bytes,
                        hx_err *err);
  hx_code (*buf_download)(void *be, const hx_bbuf *buf, size_t offset, void *dst, size_t n_bytes,
                          hx_err *err);
  /* Sizes internal scratch for the largest step the model will run: up to
   * max_rows token rows of at most max_cols columns, and attention over up to
   * max_ctx positions. Called once at load; ops never allocate after it. */
  hx_code (*reserve)(void *be, int64_t max_rows, int64_t max_cols, int64_t max_ctx, hx_err *err);
  /* Optional (may be NULL): tells the backend at load that w will be a matmul
   * weight, so that it can make its layout copies then (the CPU backend's
   * row-interleaved repacking) instead of during the first request. Best
   * effort: failing to prepare only leaves the work to the first matmul. */
  void (*weight_prepare)(void *be, hx_tensor w);

  /* ---- a step: every op below is queued between these two ---- */
  void (*step_begin)(void *be, int n_tokens);
  hx_code (*step_end)(void *be, hx_err *err); /* waits; HX_EDEVICE on device failure */

  /* y[n][n_out] = x[n][n_in] · Wᵀ (+ bias[n_out] when bias.buf). W any weight type. */
  void (*matmul)(void *be, hx_tensor y, hx_tensor w, hx_tensor x, hx_tensor bias);
  /* y[i] = x · w[i]ᵀ (+ bias[i]) for i < n ≤ HX_BACKEND_MATMUL_N_MAX, all with
   * the same input (q/k/v, gate/up): one launch/barrier instead of n. y, w and
   * bias (may be NULL) are arrays of tensor handles, read during the call. */
  void (*matmul_n)(void *be, int n, const hx_tensor *y, const hx_tensor *w, hx_tensor x,
                   const hx_tensor *bias);
  /* out[t][:] = table[ids[t]][:] as f32, for t < n; ids is an i32 tensor. */
  void (*get_rows)(void *be, hx_tensor out, hx_tensor table, hx_tensor ids, int64_t n);
  /* For each row: if residual.buf, residual += x and the norm is taken of the
   * sum; out = sum / rms(sum) * (zero_centred ? 1 + w : w). out may alias x. */
  void (*rms_norm)(void *be, hx_tensor out, hx_tensor x, hx_tensor residual, hx_tensor w, float eps,
                   int zero_centred);
  /* Per-head RMS norm (q/k norm): x is [n][n_heads*head_dim], w is [head_dim]. In place. */
  void (*rms_norm_heads)(void *be, hx_tensor x, hx_tensor w, int head_dim, float eps);
  /* NeoX RoPE in place on x [n][n_heads*head_dim] at positions pos[n] (i32). */
  void (*rope)(void *be, hx_tensor x, hx_tensor pos, int head_dim, const hx_rope_params *p);
  /* cache[pos[t]][:] = src[t][:] converted to the cache type, for every row t. */
  void (*cache_store)(void *be, hx_tensor cache, hx_tensor src, hx_tensor pos);
  /* cache rows [pos_src, pos_src+n) → [pos_dst, ...): move part of a cache. */
  void (*cache_copy)(void *be, hx_tensor cache, int64_t pos_dst, int64_t pos_src, int64_t n);
  /* out[t] = softmax(q[t]·Kᵀ·scale, causal: positions 0..pos[t]) · V for each
   * query head; query head h uses kv head h / (n_heads / n_kv_heads). q and out
   * are [n][n_heads*head_dim], k/v caches [n_ctx][n_kv_heads*head_dim]. */
  void (*attention)(void *be, hx_tensor out, hx_tensor q, hx_tensor k_cache, hx_tensor v_cache,
                    hx_tensor pos, const hx_attn_params *p);
  /* out = silu(gate) * up, elementwise over [n][d]. out may alias gate. */
  void (*swiglu)(void *be, hx_tensor out, hx_tensor gate, hx_tensor up);
  /* out = a + b / a * b elementwise (same shape; b may be one row, broadcast). */
  void (*add)(void *be, hx_tensor out, hx_tensor a, hx_tensor b);
  void (*mul)(void *be, hx_tensor out, hx_tensor a, hx_tensor b);
  /* Row-wise softmax in place. */
  void (*softmax)(void *be, hx_tensor x);
  /* Per row of x: the k largest values (descending) and their column indices
   * into vals [n][k] (f32) and ids [n][k] (i32); k ≤ HX_BACKEND_TOPK_MAX.
   * k == 1 is argmax (ties: lowest index). */
  void (*top_k)(void *be, hx_tensor vals, hx_tensor ids, hx_tensor x, int k);

  /* ---- mixture of experts (qwen3moe, qwen3next, qwen35moe) ---- */
  /* The routed experts of one layer are stacked weights [n_expert * n_out][n_in]
   * (GGUF *_exps: expert e's matrix is rows e*n_out .. e*n_out + n_out - 1).
   * The experts a token uses are chosen on the backend (moe_route) and stay
   * there as an i32 tensor ids [n][k] that moe_matmul_id reads: no host round
   * trip inside a step, so a captured decode graph replays unchanged. */

  /* Router, per row t < logits.n_rows of logits [n][n_expert] (f32, not
   * modified): p = softmax(logits[t]) in f32; the k largest p (descending;
   * ties: lowest expert id) go to weights[t][0..k) (f32) and their expert ids
   * to ids[t][0..k) (i32); with renorm != 0 the k weights are divided by their
   * sum (norm_topk_prob). 1 ≤ k ≤ min(n_expert, HX_BACKEND_TOPK_MAX);
   * weights and ids are [n][k]. */
  void (*moe_route)(void *be, hx_tensor weights, hx_tensor ids, hx_tensor logits, int k,
                    int renorm);
  /* Expert matmul selected by ids [n][k] (i32, in backend memory, each id in
   * 0..n_expert-1): for i < n_w ≤ 2, t < n, j < k,
   *   y[i][t*k + j] = x_row · W_i[ids[t][j]]ᵀ,
   *   x_row = x[t] when x has n rows (gate/up: a token's experts share its
   *   input) or x[t*k + j] when x has n*k rows (down: one input per slot).
   * w[i] are stacked expert weights [n_expert * n_out][n_in] of any weight
   * type, n_expert = w[i].n_rows / y[i].n_cols; y[i] are f32 [n*k][n_out];
   * n_in ≤ HX_BACKEND_MOE_N_IN_MAX. Only the selected experts' weights are
   * read; with n > 1 a backend may group the rows by expert (each output is
   * still one dot product of one weight row and one input row). Several
   * weights (gate + up) share one input pass; they must then have the same
   * activation format (quant_type_dot_type). y, w are arrays of handles read
   * during the call; y must not alias x. */
  void (*moe_matmul_id)(void *be, int n_w, const hx_tensor *y, const hx_tensor *w, hx_tensor x,
                        hx_tensor ids);
  /* Optional (may be NULL): as weight_prepare, for w the stacked experts of
   * moe_matmul_id (n_out rows per expert): the CPU backend makes their
   * row-interleaved copy at load rather than at the first request. */
  void (*expert_weight_prepare)(void *be, hx_tensor w, int64_t n_out);
  /* out[t] = Σ_j weights[t][j] · y[t*k + j]  for t < out.n_rows, k =
   * weights.n_cols, y [n*k][d]; then, when shared.buf, out[t] +=
   * sigmoid(shared_gate[t][0]) · shared[t] (the shared expert and its gate:
   * shared [n][d], shared_gate [n][1]). All f32. out may alias shared, not y. */
  void (*moe_combine)(void *be, hx_tensor out, hx_tensor y, hx_tensor weights, hx_tensor shared,
                      hx_tensor shared_gate);

  /* ---- linear attention: Gated DeltaNet (qwen3next, qwen35, qwen35moe) ---- */
  /* The recurrent state of a sequence lives in backend memory (the model's
   * cache) and is read and written only by these ops: nothing crosses to the
   * host inside a step. Every f32 activation argument below may be a column
   * view of a wider row (row_bytes > n_cols * 4, e.g. q, k and v inside the
   * conv output); out and state must not overlap an input unless stated. */

  /* Causal depthwise conv1d over time with SiLU, for n = x.n_rows tokens of
   * one sequence, carrying a rolling window across calls.
   *   x     [n][C] f32: the projection output (C channels);
   *   w     [C][K] f32: the kernel per channel, tap K-1 multiplying the
   *         current token (ssm_conv1d.weight, GGUF ne = {K, C});
   *   state [K-1][C] f32: the K-1 inputs before x[0], oldest first (zeros at
   *         the start of a sequence);
   *   out   [n][C] f32; may alias x.
   * With xx = state rows ++ x rows: out[t][c] = silu(sum_{j<K} w[c][j] *
   * xx[t+j][c]); afterwards state = the last K-1 rows of xx. 2 ≤ K ≤ 8. */
  void (*ssm_conv)(void *be, hx_tensor out, hx_tensor x, hx_tensor w, hx_tensor state);

  /* The gated delta rule (Gated DeltaNet's token mixer) for n = q.n_rows
   * tokens of one sequence, in order, updating the state in place. Exactly
   * transformers' torch_recurrent_gated_delta_rule with
   * use_qk_l2norm_in_kernel=True, the gates computed inside:
   *   q, k  [n][n_k_heads * d_k] f32 (after the conv), v [n][n_v_heads * d_v];
   *   a, b  [n][n_v_heads] f32: the raw alpha / beta projections;
   *   ssm_a, dt_bias [1][n_v_heads] f32: -exp(A_log) and dt_bias;
   *   state [n_v_heads][d_k * d_v] f32: per value head the matrix S[i][j]
   *         (i < d_k key dims, j < d_v value dims) at i * d_v + j, as
   *         transformers' [n_v_heads, d_k, d_v]; zeros at sequence start;
   *   out   [n][n_v_heads * d_v] f32.
   * For token t and value head h reading key head kh = p->kv_tiled ? h % n_k
   * : h / (n_v / n_k):
   *   qn = q / sqrt(|q|^2 + eps) / sqrt(d_k),  kn = k / sqrt(|k|^2 + eps)
   *   g = ssm_a[h] * softplus(a[t][h] + dt_bias[h]),  beta = sigmoid(b[t][h])
   *   S *= exp(g);  delta = beta * (v - S^T kn);  S += kn delta^T;
   *   out[t][h] = S^T qn.
   * (softplus as torch: x for x > 20.) With n > 1 and p->chunk > 0 the
   * backend may use the equivalent chunked form (torch_chunk_gated_delta_rule,
   * chunks of p->chunk tokens), which agrees to f32 rounding. */
  void (*delta_rule)(void *be, hx_tensor out, hx_tensor q, hx_tensor k, hx_tensor v, hx_tensor a,
                     hx_tensor b, hx_tensor ssm_a, hx_tensor dt_bias, hx_tensor state,
                     const hx_delta_params *p);

  /* Gated RMS norm per head (Qwen3NextRMSNormGated): for each head of
   * head_dim columns, out = x / sqrt(mean(x^2) + eps) * w * silu(z).
   * x, z, out [n][n_heads * head_dim] f32, w [head_dim] f32 (plain weight,
   * not zero-centred). out may alias x. */
  void (*gated_norm)(void *be, hx_tensor out, hx_tensor x, hx_tensor z, hx_tensor w, int head_dim,
                     float eps);

  /* out = x * sigmoid(g) elementwise over [n][d] f32; g is [n][d], or [n][1]
   * (one gate per row, broadcast). out may alias x. The full-attention
   * output gate of qwen3next / qwen35. */
  void (*sigmoid_mul)(void *be, hx_tensor out, hx_tensor x, hx_tensor g);

  /* Sets t (n_rows rows of n_cols elements, any type) to zero bytes: resets
   * a sequence's recurrent state. */
  void (*zero)(void *be, hx_tensor t);
} hx_backend_ops;

/* A backend instance: its ops and their first argument. */
typedef struct hx_backend {
  const hx_backend_ops *ops;
  void *be;
} hx_backend;

/* The CPU backend (backend/cpu): n_threads ≥ 1 workers including the caller. */
hx_code hx_backend_cpu_init(hx_backend *out, int n_threads, hx_err *err);
void hx_backend_cpu_free(hx_backend *b); /* b may be NULL or zeroed */

/* Bytes per row of n_cols elements of a ggml type, 0 if the type is unknown
 * or n_cols is not a whole number of blocks. */
size_t hx_backend_row_bytes(uint32_t type, int64_t n_cols);

#endif
