/* qwen35.c — the hybrid generation: Qwen3-Next (qwen3next), Qwen3.5 dense
 * (qwen35) and Qwen3.5-MoE (qwen35moe). Layers are Gated DeltaNet (linear
 * attention with a recurrent state) or gated full attention, as
 * hp.layer_recurrent says; the FFN is a SwiGLU MLP (qwen35, dense layers) or
 * the MoE block of moe_ffn.c with its shared expert (qwen3next, qwen35moe).
 * Tensors come in GGUF layout and contents (model_file.h): norms already
 * 1 + w except ssm_norm, ssm_a = -exp(A_log), conv1d [C][K].
 *
 * DeltaNet layer (transformers' Qwen3NextGatedDeltaNet / Qwen3_5GatedDeltaNet):
 *   qkv = x·attn_qkvᵀ  [q all k-heads | k all | v all v-heads], z = x·attn_gateᵀ,
 *   b, a = x·ssm_betaᵀ, x·ssm_alphaᵀ (qwen3next: ssm_ba, rows grouped per key
 *   head [b r | a r], regrouped at load into [all b | all a] and split);
 *   qkv = silu(causal_conv1d(qkv)) with the rolling window;
 *   o = gated delta rule(q, k, v, a, b) with the recurrent state;
 *   o = rms_norm_per_head(o) * ssm_norm * silu(z);  out = o·ssm_outᵀ.
 * The value-head order is the file's: qwen3next keeps transformers' order
 * (value head h reads key head h / (n_v/n_k)); qwen35* GGUFs are retiled by
 * the converter (key head h % n_k) — hx_delta_params.kv_tiled.
 * Full-attention layer: attn_q gives per head [query hd | gate hd] (split at
 * load into two weights); q/k RMS norm per head; partial NeoX RoPE on the
 * first n_rot dims (qwen35's text-only M-RoPE has equal position streams and
 * reduces to this); attention; out *= sigmoid(gate); ·attn_outputᵀ.
 *
 * The cache of a sequence: K/V for the full-attention layers only
 * ([n_attn][n_ctx][n_kv_heads*hd]) and the recurrent state of every DeltaNet
 * layer (conv window [K-1][C] + delta-rule matrices [n_v][d_k*d_v], f32) in
 * one buffer of two rows: the live state and a snapshot. The recurrent state
 * cannot be rolled back: cache_snapshot (which the engine calls at the end of
 * the prompt's last message) copies the live row to the snapshot row with the
 * token count it covers; cache_truncate can keep everything, go back to the
 * snapshot, or drop everything (cache_reusable says which prefix it can
 * keep). A forward at position 0 resets the state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models/model.h"
#include "engine/models/moe_ffn.h"

/* Chunk length of the chunked delta rule in prefill (transformers' 64). The
 * CPU backend runs the recurrent form instead: there the chunked form does
 * about as many flops and measured 3x slower (48 heads of 128x128, 256
 * tokens, 2 threads: 314 vs 957 us/token), while on a GPU it turns the
 * per-token state passes into matrix products. */
enum { Q35_DELTA_CHUNK = 64 };

typedef struct q35_layer {
  bool recurrent; /* DeltaNet (else full attention) */
  bool is_moe;    /* MoE FFN (else dense SwiGLU) */
  int index;      /* among the layers of its kind: KV slot or recurrent-state slot */
  hx_tensor attn_norm, post_norm;
  /* full attention */
  hx_tensor wq, wqg, wk, wv, wo, q_norm, k_norm; /* wq/wqg: query / gate rows of attn_q */
  /* DeltaNet */
  hx_tensor w_qkv, w_z, w_b, w_a, conv_w, ssm_a, dt_bias, ssm_norm, w_out;
  /* FFN */
  hx_tensor w_gate, w_up, w_down;
  moe_ffn_layer moe;
} q35_layer;

typedef struct q35_model {
  hx_model base;
  hx_tensor tok_embd, output_norm, output;
  q35_layer *layers;
  int n_attn, n_rec;      /* full-attention / DeltaNet layer counts */
  int64_t conv_ch;        /* C = 2 * n_k * d_k + n_v * d_v */
  int64_t rec_conv_elems; /* per DeltaNet layer: (K-1) * C */
  int64_t rec_layer_elems;
  hx_bbuf **bufs; /* every buffer made at load, freed with the model */
  int n_bufs, cap_bufs;
  /* activations, max_batch rows each */
  hx_bbuf *act;
  hx_tensor x, xb;      /* [B][E] residual stream; normed input / sublayer output */
  hx_tensor q, qg, att; /* [B][H*hd] query, its gate, attention output */
  hx_tensor k, v;       /* [B][KV*hd] */
  hx_tensor qkv;        /* [B][C] DeltaNet projection, conv output in place */
  hx_tensor z, core;    /* [B][n_v*d_v] output gate; delta-rule output */
  hx_tensor a, b;       /* [B][n_v] raw alpha / beta projections */
  hx_tensor hb, hb2;    /* [B][F] */
  hx_tensor logits;     /* [1][V] */
  hx_tensor io;         /* i32 [2][B]: token ids, positions */
  hx_tensor top_val;    /* [1][1] */
  hx_tensor top_id;     /* i32 [1][1] */
  hx_rope_params rope;
  hx_attn_params attn;
  hx_delta_params delta;
  moe_ffn moe;
} q35_model;

struct hx_model_cache {
  hx_bbuf *kbuf, *vbuf; /* [n_attn][n_ctx][KV*hd] each (absent when n_attn == 0) */
  hx_bbuf *rbuf;        /* recurrent state, f32 [2][n_rec * rec_layer_elems]: live, snapshot */
  hx_tensor rec;        /* that buffer as a 2-row tensor */
  quant_type type;
  size_t layer_bytes; /* one attention layer's K (or V) block */
  size_t row_bytes;
  int n_past;   /* tokens the live recurrent state covers; -1 = unknown (failed step) */
  int snap_pos; /* tokens the snapshot covers; -1 = none */
};

static hx_code keep_buf(q35_model *m, hx_bbuf *b, hx_err *err) {
  if (m->n_bufs == m->cap_bufs) {
    int cap = m->cap_bufs ? 2 * m->cap_bufs : 64;
    hx_bbuf **nb = realloc(m->bufs, (size_t)cap * sizeof *nb);
    if (!nb)
      return hx_err_set(err, HX_ENOMEM, "qwen35: out of memory");
    m->bufs = nb;
    m->cap_bufs = cap;
  }
  m->bufs[m->n_bufs++] = b;
  return HX_OK;
}

static int64_t tensor_rows(const model_tensor *t) {
  int64_t n_rows = t->n_dims > 1 ? t->ne[1] : 1;
  for (int d = 2; d < t->n_dims; d++)
    n_rows *= t->ne[d];
  return n_rows;
}

/* A backend buffer holding bytes (uploaded copy) or wrapping them (CPU) when
 * wrap; the buffer is kept by the model. */
static hx_code make_buf(q35_model *m, const void *data, size_t n, bool wrap, hx_bbuf **out,
                        const char *name, hx_err *err) {
  const hx_backend *b = &m->base.backend;
  hx_bbuf *buf = wrap ? b->ops->buf_wrap_host(b->be, data, n) : NULL;
  if (!buf) {
    buf = b->ops->buf_alloc(b->be, n, err);
    if (!buf || b->ops->buf_upload(b->be, buf, 0, data, n, err) != HX_OK) {
      b->ops->buf_free(b->be, buf);
      return hx_err_wrap(err, "%s", name);
    }
  }
  if (keep_buf(m, buf, err) != HX_OK) {
    b->ops->buf_free(b->be, buf);
    return err ? err->code : HX_ENOMEM;
  }
  *out = buf;
  return HX_OK;
}

/* Row permutation applied at load: dst row i = src row map(i, p). */
typedef int64_t (*row_map)(int64_t i, const int64_t *p);

/* The backend tensor of model tensor t, shape-checked against [rows][cols].
 * as_f32 converts (1-D / small tensors) to f32; perm (may be NULL) gathers
 * rows into an owned copy. */
static hx_code load(q35_model *m, const model_file *mf, const model_tensor *t, bool as_f32,
                    row_map perm, const int64_t *pp, int64_t cols, int64_t rows, hx_tensor *out,
                    hx_err *err) {
  memset(out, 0, sizeof *out);
  const int64_t n_cols = t->ne[0], n_rows = tensor_rows(t);
  if (n_cols != cols || n_rows != rows)
    return hx_err_set(err, HX_EFORMAT,
                      "%s: tensor %s has shape [%lld, %lld], expected [%lld, %lld]",
                      model_file_path(mf), t->name, (long long)n_cols, (long long)n_rows,
                      (long long)cols, (long long)rows);
  quant_type type = t->type;
  const void *data = t->data;
  size_t nbytes = t->nbytes;
  void *tmp = NULL;
  if (as_f32 && type != QUANT_F32) {
    if (!quant_type_can_dequantize(type))
      return hx_err_set(err, HX_EUNSUPPORTED, "%s: type %s cannot be converted to f32", t->name,
                        quant_type_name(type));
    nbytes = (size_t)n_cols * (size_t)n_rows * sizeof(float);
    float *f = malloc(nbytes);
    if (!f)
      return hx_err_set(err, HX_ENOMEM, "%s: out of memory", t->name);
    for (int64_t r = 0; r < n_rows; r++)
      quant_row_dequantize(type, (const char *)t->data + (size_t)r * (t->nbytes / (size_t)n_rows),
                           f + (size_t)r * (size_t)n_cols, n_cols);
    data = tmp = f;
    type = QUANT_F32;
  }
  const size_t rb = hx_backend_row_bytes(type, n_cols);
  if (rb == 0 || rb * (size_t)n_rows != nbytes) {
    free(tmp);
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: type %s with row length %lld unsupported", t->name,
                      quant_type_name(type), (long long)n_cols);
  }
  if (perm) {
    char *g = malloc(nbytes);
    if (!g) {
      free(tmp);
      return hx_err_set(err, HX_ENOMEM, "%s: out of memory", t->name);
    }
    for (int64_t i = 0; i < n_rows; i++) {
      const int64_t s = perm(i, pp);
      HX_ASSERT(s >= 0 && s < n_rows);
      memcpy(g + (size_t)i * rb, (const char *)data + (size_t)s * rb, rb);
    }
    free(tmp);
    data = tmp = g;
  }
  hx_bbuf *buf = NULL;
  hx_code rc = make_buf(m, data, nbytes, tmp == NULL, &buf, t->name, err);
  free(tmp);
  if (rc != HX_OK)
    return rc;
  *out = (hx_tensor){.buf = buf, .type = type, .n_cols = n_cols, .n_rows = n_rows, .row_bytes = rb};
  return HX_OK;
}

static hx_code get(q35_model *m, const model_file *mf, int layer, const char *name, bool as_f32,
                   int64_t cols, int64_t rows, hx_tensor *out, hx_err *err) {
  const model_tensor *t =
      layer < 0 ? model_file_tensor(mf, name) : model_file_layer_tensor(mf, layer, name);
  if (!t)
    return layer < 0
               ? hx_err_set(err, HX_EFORMAT, "%s: tensor %s missing", model_file_path(mf), name)
               : hx_err_set(err, HX_EFORMAT, "%s: tensor blk.%d.%s missing", model_file_path(mf),
                            layer, name);
  hx_code rc = load(m, mf, t, as_f32, NULL, NULL, cols, rows, out, err);
  /* every 2-D weight but the embedding table is a matmul weight (a tied
   * table is prepared where it becomes the output head) */
  const hx_backend *b = &m->base.backend;
  if (rc == HX_OK && !as_f32 && rows > 1 && strcmp(name, "token_embd.weight") != 0 &&
      b->ops->weight_prepare)
    b->ops->weight_prepare(b->be, *out);
  return rc;
}

static hx_tensor view(hx_bbuf *buf, size_t *off, uint32_t type, int64_t cols, int64_t rows) {
  hx_tensor t = {.buf = buf, .offset = *off, .type = type, .n_cols = cols, .n_rows = rows};
  t.row_bytes = hx_backend_row_bytes(type, cols);
  *off += (t.row_bytes * (size_t)rows + 63) & ~(size_t)63;
  return t;
}

/* Rows r..r+n of a tensor. */
static hx_tensor rows_of(hx_tensor t, int64_t r, int64_t n) {
  HX_ASSERT(r >= 0 && n >= 0 && r + n <= t.n_rows);
  t.offset += (size_t)r * t.row_bytes;
  t.n_rows = n;
  return t;
}

/* Columns c..c+n of an f32 tensor (a strided view). */
static hx_tensor cols_of(hx_tensor t, int64_t c, int64_t n) {
  HX_ASSERT(t.type == QUANT_F32 && c >= 0 && n >= 1 && c + n <= t.n_cols);
  t.offset += (size_t)c * sizeof(float);
  t.n_cols = n;
  return t;
}

/* attn_q rows per head [query hd | gate hd] -> [all queries | all gates]. p = {hd}. */
static int64_t q_gate_split(int64_t i, const int64_t *p) {
  const int64_t hd = p[0], n_heads = p[1];
  return i < n_heads * hd ? (i / hd) * 2 * hd + i % hd
                          : ((i - n_heads * hd) / hd) * 2 * hd + hd + (i - n_heads * hd) % hd;
}

/* qwen3next ssm_ba rows per key head [b r | a r] -> [all b | all a] (value
 * heads in the file's order h = key_head * r + i). p = {r, n_v}. */
static int64_t ba_split(int64_t i, const int64_t *p) {
  const int64_t r = p[0], nv = p[1];
  const bool is_a = i >= nv;
  const int64_t h = is_a ? i - nv : i;
  return (h / r) * 2 * r + (is_a ? r : 0) + h % r;
}

static void q35_free(hx_model *mb) {
  q35_model *m = (q35_model *)mb;
  if (!m)
    return;
  const hx_backend *b = &m->base.backend;
  for (int i = 0; i < m->n_bufs; i++)
    b->ops->buf_free(b->be, m->bufs[i]);
  free(m->bufs);
  if (m->layers)
    for (int l = 0; l < mb->hp.n_layer; l++)
      moe_ffn_layer_free(&m->moe, &m->layers[l].moe);
  moe_ffn_free(&m->moe);
  free(m->layers);
  free(m);
}

/* ---- cache ------------------------------------------------------------------- */

static size_t kv_row_bytes(const hx_model *mb, quant_type t) {
  return hx_backend_row_bytes(t, (int64_t)mb->hp.n_head_kv * mb->hp.head_dim_k);
}

static uint64_t q35_cache_bytes(const hx_model *mb, quant_type kv_type) {
  const q35_model *m = (const q35_model *)mb;
  return 2ull * (uint64_t)m->n_attn * (uint64_t)mb->n_ctx * kv_row_bytes(mb, kv_type) +
         2ull * (uint64_t)m->n_rec * (uint64_t)m->rec_layer_elems * sizeof(float);
}

static void q35_cache_free(hx_model *mb, hx_model_cache *c) {
  if (!c)
    return;
  const hx_backend *b = &mb->backend;
  b->ops->buf_free(b->be, c->kbuf);
  b->ops->buf_free(b->be, c->vbuf);
  b->ops->buf_free(b->be, c->rbuf);
  free(c);
}

static hx_code q35_cache_init(hx_model *mb, quant_type kv_type, hx_model_cache **out, hx_err *err) {
  const q35_model *m = (const q35_model *)mb;
  const model_hparams *hp = &mb->hp;
  const hx_backend *b = &mb->backend;
  *out = NULL;
  if (kv_type != QUANT_F32 && kv_type != QUANT_F16 && kv_type != QUANT_Q8_0)
    return hx_err_set(err, HX_EINVAL, "kv cache type %s unsupported (f32, f16, q8_0)",
                      quant_type_name(kv_type));
  if (kv_type == QUANT_Q8_0 && hp->head_dim_k % QK8_0 != 0)
    return hx_err_set(err, HX_EINVAL, "kv cache q8_0 needs head_dim %% 32 == 0 (head_dim %d)",
                      hp->head_dim_k);
  hx_model_cache *c = calloc(1, sizeof *c);
  if (!c)
    return hx_err_set(err, HX_ENOMEM, "kv cache: out of memory");
  c->type = kv_type;
  c->row_bytes = kv_row_bytes(mb, kv_type);
  c->n_past = 0;
  c->snap_pos = -1;
  size_t lb, total = 0, rec_row = 0;
  if (hx_size_mul(c->row_bytes, (size_t)mb->n_ctx, &lb) ||
      hx_size_mul(lb, (size_t)m->n_attn, &total) ||
      hx_size_mul((size_t)m->rec_layer_elems * sizeof(float), (size_t)m->n_rec, &rec_row)) {
    free(c);
    return hx_err_set(err, HX_ETOOLARGE, "kv cache size overflows");
  }
  c->layer_bytes = lb;
  hx_code rc = HX_OK;
  if (total) {
    c->kbuf = b->ops->buf_alloc(b->be, total, err);
    c->vbuf = c->kbuf ? b->ops->buf_alloc(b->be, total, err) : NULL;
    if (!c->vbuf)
      rc = hx_err_wrap(err, "kv cache (%zu bytes x 2)", total);
  }
  if (rc == HX_OK && rec_row) {
    c->rbuf = b->ops->buf_alloc(b->be, 2 * rec_row, err);
    if (!c->rbuf)
      rc = hx_err_wrap(err, "recurrent state (%zu bytes x 2)", rec_row);
    else
      c->rec = (hx_tensor){.buf = c->rbuf,
                           .type = QUANT_F32,
                           .n_cols = (int64_t)(rec_row / sizeof(float)),
                           .n_rows = 2,
                           .row_bytes = rec_row};
  }
  if (rc != HX_OK) {
    q35_cache_free(mb, c);
    return rc;
  }
  *out = c;
  return HX_OK;
}

static int q35_cache_reusable(const hx_model *mb, const hx_model_cache *c, int n_common) {
  (void)mb;
  if (c->n_past >= 0 && n_common >= c->n_past)
    return c->n_past;
  if (c->snap_pos >= 0 && c->snap_pos <= n_common) /* valid even after a failed step */
    return c->snap_pos;
  return 0;
}

static hx_code q35_cache_truncate(hx_model *mb, hx_model_cache *c, int n_keep, hx_err *err) {
  const hx_backend *b = &mb->backend;
  HX_ASSERT(n_keep >= 0);
  if (n_keep == 0) {
    c->n_past = 0; /* the state is zeroed by the next forward at position 0 */
    c->snap_pos = -1;
    return HX_OK;
  }
  if (n_keep == c->n_past)
    return HX_OK;
  if (n_keep != c->snap_pos)
    return hx_err_set(err, HX_EINVAL,
                      "hybrid cache: the recurrent state cannot go back to %d tokens (it covers "
                      "%d, its snapshot %d)",
                      n_keep, c->n_past, c->snap_pos);
  if (c->rbuf) {
    b->ops->step_begin(b->be, 1);
    b->ops->cache_copy(b->be, c->rec, 0, 1, 1);
    hx_code rc = b->ops->step_end(b->be, err);
    if (rc != HX_OK) {
      c->n_past = -1;
      return rc;
    }
  }
  c->n_past = n_keep;
  return HX_OK;
}

static hx_code q35_cache_snapshot(hx_model *mb, hx_model_cache *c, hx_err *err) {
  const hx_backend *b = &mb->backend;
  if (c->n_past < 0)
    return hx_err_set(err, HX_EINVAL, "hybrid cache: no valid state to snapshot");
  if (c->rbuf) {
    b->ops->step_begin(b->be, 1);
    b->ops->cache_copy(b->be, c->rec, 1, 0, 1);
    hx_code rc = b->ops->step_end(b->be, err);
    if (rc != HX_OK) {
      c->snap_pos = -1;
      return rc;
    }
  }
  c->snap_pos = c->n_past;
  return HX_OK;
}

static hx_tensor kv_layer(const hx_model *mb, const hx_model_cache *c, hx_bbuf *buf, int index) {
  hx_tensor t = {.buf = buf,
                 .offset = (size_t)index * c->layer_bytes,
                 .type = c->type,
                 .n_cols = (int64_t)mb->hp.n_head_kv * mb->hp.head_dim_k,
                 .n_rows = mb->n_ctx,
                 .row_bytes = c->row_bytes};
  return t;
}

/* The live conv window [K-1][C] and delta-rule state [n_v][d_k*d_v] of
 * DeltaNet layer slot `index`. */
static void rec_layer(const q35_model *m, const hx_model_cache *c, int index, hx_tensor *conv,
                      hx_tensor *state) {
  const model_hparams *hp = &m->base.hp;
  const size_t base = (size_t)index * (size_t)m->rec_layer_elems * sizeof(float);
  *conv = (hx_tensor){.buf = c->rbuf,
                      .offset = base,
                      .type = QUANT_F32,
                      .n_cols = m->conv_ch,
                      .n_rows = hp->ssm_d_conv - 1,
                      .row_bytes = (size_t)m->conv_ch * sizeof(float)};
  *state = (hx_tensor){.buf = c->rbuf,
                       .offset = base + (size_t)m->rec_conv_elems * sizeof(float),
                       .type = QUANT_F32,
                       .n_cols = (int64_t)hp->ssm_d_state * hp->ssm_head_v_dim,
                       .n_rows = hp->ssm_dt_rank,
                       .row_bytes = (size_t)hp->ssm_d_state * hp->ssm_head_v_dim * sizeof(float)};
}

/* ---- forward ------------------------------------------------------------------ */

static void deltanet_block(q35_model *m, hx_model_cache *c, const q35_layer *L, int n) {
  const hx_backend_ops *op = m->base.backend.ops;
  void *be = m->base.backend.be;
  const model_hparams *hp = &m->base.hp;
  const int64_t nk = hp->ssm_n_group, dk = hp->ssm_d_state;
  const int64_t VD = hp->ssm_d_inner;
  const hx_tensor xb = rows_of(m->xb, 0, n), qkv = rows_of(m->qkv, 0, n);
  const hx_tensor z = rows_of(m->z, 0, n), a = rows_of(m->a, 0, n), b = rows_of(m->b, 0, n);
  const hx_tensor core = rows_of(m->core, 0, n);
  const hx_tensor none = {0};
  const hx_tensor y[4] = {qkv, z, b, a}, w[4] = {L->w_qkv, L->w_z, L->w_b, L->w_a};
  op->matmul_n(be, 4, y, w, xb, NULL);
  hx_tensor conv, state;
  rec_layer(m, c, L->index, &conv, &state);
  op->ssm_conv(be, qkv, qkv, L->conv_w, conv);
  hx_delta_params dp = m->delta;
  dp.chunk = n > 1 && strcmp(op->name, "cpu") != 0 ? Q35_DELTA_CHUNK : 0;
  op->delta_rule(be, core, cols_of(qkv, 0, nk * dk), cols_of(qkv, nk * dk, nk * dk),
                 cols_of(qkv, 2 * nk * dk, VD), a, b, L->ssm_a, L->dt_bias, state, &dp);
  op->gated_norm(be, core, core, z, L->ssm_norm, hp->ssm_head_v_dim, hp->rms_eps);
  op->matmul(be, xb, L->w_out, core, none);
}

static void attention_block(q35_model *m, hx_model_cache *c, const q35_layer *L, int n,
                            hx_tensor positions) {
  const hx_backend_ops *op = m->base.backend.ops;
  void *be = m->base.backend.be;
  const model_hparams *hp = &m->base.hp;
  const hx_tensor xb = rows_of(m->xb, 0, n), q = rows_of(m->q, 0, n), qg = rows_of(m->qg, 0, n);
  const hx_tensor k = rows_of(m->k, 0, n), v = rows_of(m->v, 0, n);
  const hx_tensor att = rows_of(m->att, 0, n);
  const hx_tensor none = {0};
  const hx_tensor y[4] = {q, qg, k, v}, w[4] = {L->wq, L->wqg, L->wk, L->wv};
  op->matmul_n(be, 4, y, w, xb, NULL);
  op->rms_norm_heads(be, q, L->q_norm, hp->head_dim_k, hp->rms_eps);
  op->rms_norm_heads(be, k, L->k_norm, hp->head_dim_k, hp->rms_eps);
  op->rope(be, q, positions, hp->head_dim_k, &m->rope);
  op->rope(be, k, positions, hp->head_dim_k, &m->rope);
  const hx_tensor kc = kv_layer(&m->base, c, c->kbuf, L->index);
  const hx_tensor vc = kv_layer(&m->base, c, c->vbuf, L->index);
  op->cache_store(be, kc, k, positions);
  op->cache_store(be, vc, v, positions);
  op->attention(be, att, q, kc, vc, positions, &m->attn);
  op->sigmoid_mul(be, att, att, qg);
  op->matmul(be, xb, L->wo, att, none);
}

static hx_code q35_forward(hx_model *mb, hx_model_cache *c, const int32_t *tokens, int n, int pos0,
                           float *logits_last, float *logits_all, int32_t *argmax_last,
                           float *argmax_logit, hx_err *err) {
  q35_model *m = (q35_model *)mb;
  const model_hparams *hp = &mb->hp;
  const hx_backend_ops *op = mb->backend.ops;
  void *be = mb->backend.be;
  HX_ASSERT(n >= 1 && n <= mb->max_batch && pos0 >= 0);
  if (pos0 != 0 && pos0 != c->n_past)
    return hx_err_set(err, HX_EINVAL,
                      "hybrid cache: forward at position %d but the recurrent state covers %d "
                      "tokens",
                      pos0, c->n_past);
  hx_code rc = model_inputs_upload(mb, m->io, tokens, n, pos0, err);
  if (rc != HX_OK)
    return rc;
  const hx_tensor ids = rows_of(m->io, 0, 1), positions = rows_of(m->io, 1, 1);
  const hx_tensor x = rows_of(m->x, 0, n), xb = rows_of(m->xb, 0, n);
  const hx_tensor hb = rows_of(m->hb, 0, n), hb2 = rows_of(m->hb2, 0, n);
  const hx_tensor none = {0};
  c->n_past = -1; /* until this step has succeeded */
  if (pos0 == 0)
    c->snap_pos = -1;
  op->step_begin(be, n);
  if (pos0 == 0 && c->rbuf)
    op->zero(be, rows_of(c->rec, 0, 1));
  op->get_rows(be, x, m->tok_embd, ids, n);
  for (int l = 0; l < hp->n_layer; l++) {
    const q35_layer *L = &m->layers[l];
    /* the previous layer's FFN output (in xb) joins the residual here */
    op->rms_norm(be, xb, l == 0 ? x : xb, l == 0 ? none : x, L->attn_norm, hp->rms_eps, 0);
    if (L->recurrent)
      deltanet_block(m, c, L, n);
    else
      attention_block(m, c, L, n, positions);
    op->rms_norm(be, xb, xb, x, L->post_norm, hp->rms_eps, 0);
    if (L->is_moe) {
      moe_ffn_forward(&m->moe, &L->moe, xb, xb);
    } else {
      const hx_tensor gu_y[2] = {hb, hb2}, gu_w[2] = {L->w_gate, L->w_up};
      op->matmul_n(be, 2, gu_y, gu_w, xb, NULL);
      op->swiglu(be, hb, hb, hb2);
      op->matmul(be, xb, L->w_down, hb, none);
    }
  }
  op->rms_norm(be, xb, xb, x, m->output_norm, hp->rms_eps, 0);
  if (!logits_all && (logits_last || argmax_last)) /* a prefill piece wants no logits */
    op->matmul(be, m->logits, m->output, rows_of(xb, n - 1, 1), none);
  const bool device_argmax = argmax_last && !logits_last && !logits_all;
  if (device_argmax)
    op->top_k(be, m->top_val, m->top_id, m->logits, 1);
  rc = op->step_end(be, err);
  if (rc != HX_OK)
    return rc;
  c->n_past = pos0 + n;
  const model_head head = {m->output, m->logits, m->top_val, m->top_id};
  return model_head_results(&mb->backend, &head, xb, n, hp->n_vocab, logits_last, logits_all,
                            argmax_last, argmax_logit, err);
}

static const hx_model_ops q35_ops = {
    .free = q35_free,
    .cache_init = q35_cache_init,
    .cache_free = q35_cache_free,
    .cache_bytes = q35_cache_bytes,
    .cache_truncate = q35_cache_truncate,
    .cache_reusable = q35_cache_reusable,
    .cache_snapshot = q35_cache_snapshot,
    .forward = q35_forward,
};

/* ---- load ---------------------------------------------------------------------- */

static hx_code load_deltanet(q35_model *m, const model_file *mf, int l, q35_layer *L, hx_err *err) {
  const model_hparams *hp = &m->base.hp;
  const int64_t E = hp->n_embd, C = m->conv_ch, VD = hp->ssm_d_inner, nv = hp->ssm_dt_rank;
  hx_code rc;
  if ((rc = get(m, mf, l, "attn_qkv.weight", false, E, C, &L->w_qkv, err)) ||
      (rc = get(m, mf, l, "attn_gate.weight", false, E, VD, &L->w_z, err)) ||
      (rc = get(m, mf, l, "ssm_conv1d.weight", true, hp->ssm_d_conv, C, &L->conv_w, err)) ||
      (rc = get(m, mf, l, "ssm_a", true, nv, 1, &L->ssm_a, err)) ||
      (rc = get(m, mf, l, "ssm_dt.bias", true, nv, 1, &L->dt_bias, err)) ||
      (rc = get(m, mf, l, "ssm_norm.weight", true, hp->ssm_head_v_dim, 1, &L->ssm_norm, err)) ||
      (rc = get(m, mf, l, "ssm_out.weight", false, VD, E, &L->w_out, err)))
    return rc;
  if (hp->arch == MODEL_ARCH_QWEN3NEXT) {
    const model_tensor *t = model_file_layer_tensor(mf, l, "ssm_ba.weight");
    if (!t)
      return hx_err_set(err, HX_EFORMAT, "%s: tensor blk.%d.ssm_ba.weight missing",
                        model_file_path(mf), l);
    const int64_t p[2] = {nv / hp->ssm_n_group, nv};
    if ((rc = load(m, mf, t, false, ba_split, p, E, 2 * nv, &L->w_b, err)))
      return rc;
    L->w_a = L->w_b; /* [all b | all a] in one buffer */
    L->w_b.n_rows = L->w_a.n_rows = nv;
    L->w_a.offset = (size_t)nv * L->w_b.row_bytes;
    return HX_OK;
  }
  if ((rc = get(m, mf, l, "ssm_beta.weight", false, E, nv, &L->w_b, err)) ||
      (rc = get(m, mf, l, "ssm_alpha.weight", false, E, nv, &L->w_a, err)))
    return rc;
  return HX_OK;
}

static hx_code load_attention(q35_model *m, const model_file *mf, int l, q35_layer *L,
                              hx_err *err) {
  const model_hparams *hp = &m->base.hp;
  const int64_t E = hp->n_embd, hd = hp->head_dim_k, QD = (int64_t)hp->n_head * hd;
  const int64_t KD = (int64_t)hp->n_head_kv * hd;
  hx_code rc;
  const model_tensor *tq = model_file_layer_tensor(mf, l, "attn_q.weight");
  if (!tq)
    return hx_err_set(err, HX_EFORMAT, "%s: tensor blk.%d.attn_q.weight missing",
                      model_file_path(mf), l);
  const int64_t p[2] = {hd, hp->n_head};
  if ((rc = load(m, mf, tq, false, q_gate_split, p, E, 2 * QD, &L->wq, err)))
    return rc;
  L->wqg = L->wq; /* [all queries | all gates] in one buffer */
  L->wq.n_rows = QD;
  L->wqg.n_rows = QD;
  L->wqg.offset = (size_t)QD * L->wq.row_bytes;
  if ((rc = get(m, mf, l, "attn_k.weight", false, E, KD, &L->wk, err)) ||
      (rc = get(m, mf, l, "attn_v.weight", false, E, KD, &L->wv, err)) ||
      (rc = get(m, mf, l, "attn_output.weight", false, QD, E, &L->wo, err)) ||
      (rc = get(m, mf, l, "attn_q_norm.weight", true, hd, 1, &L->q_norm, err)) ||
      (rc = get(m, mf, l, "attn_k_norm.weight", true, hd, 1, &L->k_norm, err)))
    return rc;
  return HX_OK;
}

static hx_code q35_load_weights(q35_model *m, const model_file *mf, hx_err *err) {
  const model_hparams *hp = &m->base.hp;
  const int64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
  hx_code rc;
  if ((rc = get(m, mf, -1, "token_embd.weight", false, E, V, &m->tok_embd, err)) ||
      (rc = get(m, mf, -1, "output_norm.weight", true, E, 1, &m->output_norm, err)))
    return rc;
  if (model_file_tensor(mf, "output.weight")) {
    if ((rc = get(m, mf, -1, "output.weight", false, E, V, &m->output, err)))
      return rc;
  } else {
    m->output = m->tok_embd; /* tied embeddings */
  }
  if (m->base.backend.ops->weight_prepare)
    m->base.backend.ops->weight_prepare(m->base.backend.be, m->output);
  for (int l = 0; l < hp->n_layer; l++) {
    q35_layer *L = &m->layers[l];
    L->recurrent = hp->layer_recurrent[l];
    L->index = L->recurrent ? m->n_rec++ : m->n_attn++;
    if ((rc = get(m, mf, l, "attn_norm.weight", true, E, 1, &L->attn_norm, err)) ||
        (rc = get(m, mf, l, "post_attention_norm.weight", true, E, 1, &L->post_norm, err)) ||
        (rc = L->recurrent ? load_deltanet(m, mf, l, L, err) : load_attention(m, mf, l, L, err)))
      return rc;
    L->is_moe = model_arch_is_moe(hp->arch) && !hp->layer_dense_ffn[l];
    if (L->is_moe)
      rc = moe_ffn_layer_load(&m->moe, mf, l, &L->moe, err);
    else if ((rc = get(m, mf, l, "ffn_gate.weight", false, E, F, &L->w_gate, err)) ||
             (rc = get(m, mf, l, "ffn_up.weight", false, E, F, &L->w_up, err)) ||
             (rc = get(m, mf, l, "ffn_down.weight", false, F, E, &L->w_down, err)))
      return rc;
    if (rc != HX_OK)
      return rc;
  }
  return HX_OK;
}

static hx_code q35_check(const model_file *mf, const model_hparams *hp, int n_ctx, int max_batch,
                         hx_err *err) {
  const char *path = model_file_path(mf);
  if (!model_arch_is_hybrid(hp->arch))
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: arch %s is not a hybrid arch", path,
                      model_arch_name(hp->arch));
  if (hp->head_dim_k != hp->head_dim_v || hp->head_dim_k > HX_BACKEND_HEAD_DIM_MAX ||
      hp->n_rot > hp->head_dim_k || hp->n_rot <= 0 || hp->n_rot % 2 || !hp->attn_output_gate)
    return hx_err_set(err, HX_EUNSUPPORTED,
                      "%s: attention head dims k %d v %d rot %d (output gate %d) unsupported", path,
                      hp->head_dim_k, hp->head_dim_v, hp->n_rot, hp->attn_output_gate);
  if (hp->ssm_n_group < 1 || hp->ssm_dt_rank % hp->ssm_n_group != 0 || hp->ssm_d_state < 1 ||
      hp->ssm_d_state > HX_BACKEND_SSM_HEAD_DIM_MAX || hp->ssm_head_v_dim < 1 ||
      hp->ssm_head_v_dim > HX_BACKEND_SSM_HEAD_DIM_MAX ||
      hp->ssm_d_inner != hp->ssm_dt_rank * hp->ssm_head_v_dim || hp->ssm_d_conv < 2 ||
      hp->ssm_d_conv > HX_BACKEND_SSM_CONV_MAX)
    return hx_err_set(err, HX_EUNSUPPORTED,
                      "%s: DeltaNet shape unsupported (key heads %d, value heads %d, d_k %d, d_v "
                      "%d, conv %d)",
                      path, hp->ssm_n_group, hp->ssm_dt_rank, hp->ssm_d_state, hp->ssm_head_v_dim,
                      hp->ssm_d_conv);
  if (max_batch < 1 || max_batch > 4096 || n_ctx < 1)
    return hx_err_set(err, HX_EINVAL, "max_batch %d (1..4096) / n_ctx %d invalid", max_batch,
                      n_ctx);
  return HX_OK;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

hx_code qwen35_model_load(const model_file *mf, hx_backend backend, int n_ctx, int max_batch,
                          hx_model **out, hx_err *err) {
  const model_hparams *hp = model_file_hparams(mf);
  *out = NULL;
  hx_code rc = q35_check(mf, hp, n_ctx, max_batch, err);
  if (rc != HX_OK)
    return rc;
  const hx_backend_ops *bo = backend.ops;
  if (!bo->ssm_conv || !bo->delta_rule || !bo->gated_norm || !bo->sigmoid_mul || !bo->zero)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: the %s backend lacks the DeltaNet ops",
                      model_file_path(mf), bo->name);
  q35_model *m = calloc(1, sizeof *m);
  if (!m)
    return hx_err_set(err, HX_ENOMEM, "qwen35: out of memory");
  m->base.ops = &q35_ops;
  m->base.backend = backend;
  m->base.hp = *hp;
  m->base.n_ctx = n_ctx;
  m->base.max_batch = max_batch;
  m->conv_ch = 2 * (int64_t)hp->ssm_n_group * hp->ssm_d_state + hp->ssm_d_inner;
  m->rec_conv_elems = (int64_t)(hp->ssm_d_conv - 1) * m->conv_ch;
  m->rec_layer_elems =
      m->rec_conv_elems + (int64_t)hp->ssm_dt_rank * hp->ssm_d_state * hp->ssm_head_v_dim;
  m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
  if (!m->layers)
    rc = hx_err_set(err, HX_ENOMEM, "qwen35: out of memory");
  else if (model_arch_is_moe(hp->arch) && moe_ffn_init(&m->moe, backend, hp, max_batch, err))
    rc = hx_err_wrap(err, "%s", model_file_path(mf));
  if (rc == HX_OK)
    rc = q35_load_weights(m, mf, err);
  if (rc != HX_OK) {
    q35_free(&m->base);
    return rc;
  }
  /* activations: one buffer, views 64-byte aligned */
  const int64_t B = max_batch, E = hp->n_embd, F = hp->n_ff > 0 ? hp->n_ff : 1, V = hp->n_vocab;
  const int64_t QD = (int64_t)hp->n_head * hp->head_dim_k;
  const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim_k;
  const int64_t VD = hp->ssm_d_inner, NV = hp->ssm_dt_rank;
  size_t off = 0;
  enum { N_ACT = 18 };
  hx_tensor av[N_ACT];
  const struct {
    uint32_t type;
    int64_t cols, rows;
  } shape[N_ACT] = {
      {QUANT_F32, E, B},  {QUANT_F32, E, B},  {QUANT_F32, QD, B}, {QUANT_F32, QD, B},
      {QUANT_F32, QD, B}, {QUANT_F32, KD, B}, {QUANT_F32, KD, B}, {QUANT_F32, m->conv_ch, B},
      {QUANT_F32, VD, B}, {QUANT_F32, VD, B}, {QUANT_F32, NV, B}, {QUANT_F32, NV, B},
      {QUANT_F32, F, B},  {QUANT_F32, F, B},  {QUANT_F32, V, 1},  {QUANT_I32, B, 2},
      {QUANT_F32, 1, 1},  {QUANT_I32, 1, 1},
  };
  for (int i = 0; i < N_ACT; i++)
    av[i] = view(NULL, &off, shape[i].type, shape[i].cols, shape[i].rows);
  m->act = backend.ops->buf_alloc(backend.be, off, err);
  if (!m->act || keep_buf(m, m->act, err) != HX_OK) {
    if (m->act)
      backend.ops->buf_free(backend.be, m->act);
    q35_free(&m->base);
    return err ? err->code : HX_ENOMEM;
  }
  for (int i = 0; i < N_ACT; i++)
    av[i].buf = m->act;
  m->x = av[0], m->xb = av[1], m->q = av[2], m->qg = av[3], m->att = av[4], m->k = av[5],
  m->v = av[6];
  m->qkv = av[7], m->z = av[8], m->core = av[9], m->a = av[10], m->b = av[11];
  m->hb = av[12], m->hb2 = av[13], m->logits = av[14], m->io = av[15], m->top_val = av[16];
  m->top_id = av[17];
  /* matmul inputs: xb (E), att (QD), core (VD), hb (F), the MoE block's */
  int64_t max_cols = max64(max64(E, F), max64(QD, VD));
  if (m->moe.act)
    max_cols = max64(max_cols, moe_ffn_reserve_cols(&m->moe));
  rc = backend.ops->reserve(backend.be, B, max_cols, n_ctx, err);
  if (rc != HX_OK) {
    q35_free(&m->base);
    return rc;
  }
  m->rope = (hx_rope_params){.n_rot = hp->n_rot, .freq_base = hp->rope_freq_base, .freq_scale = 1};
  if (hp->rope_scaling == MODEL_ROPE_SCALING_LINEAR && hp->rope_scaling_factor > 0)
    m->rope.freq_scale = 1.0f / hp->rope_scaling_factor;
  if (hp->rope_scaling == MODEL_ROPE_SCALING_YARN) {
    m->rope.yarn_factor = hp->rope_scaling_factor;
    m->rope.yarn_orig_ctx = hp->rope_scaling_orig_ctx ? hp->rope_scaling_orig_ctx : hp->n_ctx_train;
  }
  m->attn = (hx_attn_params){.n_heads = hp->n_head,
                             .n_kv_heads = hp->n_head_kv,
                             .head_dim = hp->head_dim_k,
                             .scale = 1.0f / sqrtf((float)hp->head_dim_k)};
  m->delta = (hx_delta_params){.n_k_heads = hp->ssm_n_group,
                               .n_v_heads = hp->ssm_dt_rank,
                               .d_k = hp->ssm_d_state,
                               .d_v = hp->ssm_head_v_dim,
                               .kv_tiled = hp->arch != MODEL_ARCH_QWEN3NEXT,
                               .chunk = Q35_DELTA_CHUNK,
                               .eps_l2 = 1e-6f};
  *out = &m->base;
  return HX_OK;
}
