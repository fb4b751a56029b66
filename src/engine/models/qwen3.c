/* qwen3.c — the Qwen3 dense, Qwen3-MoE and Qwen2 forward passes.
 *
 * qwen3: pre-norm decoder, GQA attention with per-head RMS norm on q and k
 * (before RoPE), NeoX RoPE, SwiGLU MLP, head_dim from the config, tied or
 * untied embeddings. qwen2: the same without q/k norm and with q/k/v biases.
 * qwen3moe: qwen3 attention; the FFN of a layer is the mixture-of-experts
 * block of moe_ffn.c (router softmax → top-k → optional renorm, only the
 * chosen experts computed), or a dense SwiGLU MLP of width n_ff on the layers
 * hparams mark dense (mlp_only_layers / decoder_sparse_step).
 *
 * One forward() runs n tokens (a prefill chunk or one decode token) through
 * every layer. Residual adds are fused into the next RMS norm. Activations are
 * allocated at load for max_batch rows; the KV cache of a sequence is one
 * buffer per K and V: [n_layer][n_ctx][n_kv_heads * head_dim]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models/model.h"
#include "engine/models/moe_ffn.h"

typedef struct q3_layer {
  hx_tensor attn_norm, wq, wk, wv, wo, bq, bk, bv, q_norm, k_norm;
  hx_tensor ffn_norm, w_gate, w_up, w_down; /* dense FFN (absent on MoE layers) */
  moe_ffn_layer moe;                        /* MoE FFN (qwen3moe layers not marked dense) */
  bool is_moe;
} q3_layer;

typedef struct q3_model {
  hx_model base;
  hx_tensor tok_embd, output_norm, output;
  q3_layer *layers;
  hx_bbuf **bufs; /* every buffer made at load, freed with the model */
  int n_bufs, cap_bufs;
  /* activations, max_batch rows each */
  hx_bbuf *act;
  hx_tensor x;       /* [B][E] residual stream */
  hx_tensor xb;      /* [B][E] normed input / sublayer output */
  hx_tensor q;       /* [B][H*hd] */
  hx_tensor k, v;    /* [B][KV*hd] */
  hx_tensor att;     /* [B][H*hd] */
  hx_tensor hb, hb2; /* [B][F] */
  hx_tensor logits;  /* [1][V] */
  hx_tensor io;      /* i32 [2][B]: token ids, positions */
  hx_tensor top_val; /* [1][1] the last token's largest logit (device arg-max) */
  hx_tensor top_id;  /* i32 [1][1] its id */
  hx_rope_params rope;
  hx_attn_params attn;
  moe_ffn moe; /* qwen3moe: the block's configuration and scratch */
} q3_model;

struct hx_model_cache {
  hx_bbuf *kbuf, *vbuf;
  quant_type type;
  size_t layer_bytes; /* one layer's K (or V) block */
  size_t row_bytes;
};

static hx_code keep_buf(q3_model *m, hx_bbuf *b, hx_err *err) {
  if (m->n_bufs == m->cap_bufs) {
    int cap = m->cap_bufs ? 2 * m->cap_bufs : 64;
    hx_bbuf **nb = realloc(m->bufs, (size_t)cap * sizeof *nb);
    if (!nb)
      return hx_err_set(err, HX_ENOMEM, "qwen3: out of memory");
    m->bufs = nb;
    m->cap_bufs = cap;
  }
  m->bufs[m->n_bufs++] = b;
  return HX_OK;
}

/* A backend tensor for a model tensor: wrapped when the backend can, else
 * uploaded. as_f32 converts (small 1-D tensors: norms, biases) to f32. */
static hx_code load_tensor(q3_model *m, const model_tensor *t, bool as_f32, hx_tensor *out,
                           hx_err *err) {
  const hx_backend *b = &m->base.backend;
  int64_t n_cols = t->ne[0], n_rows = t->n_dims > 1 ? t->ne[1] : 1;
  for (int d = 2; d < t->n_dims; d++)
    n_rows *= t->ne[d];
  memset(out, 0, sizeof *out);
  hx_bbuf *buf = NULL;
  quant_type type = t->type;
  if (as_f32 && type != QUANT_F32) {
    if (!quant_type_can_dequantize(type))
      return hx_err_set(err, HX_EUNSUPPORTED, "%s: type %s cannot be converted to f32", t->name,
                        quant_type_name(type));
    size_t n = (size_t)n_cols * (size_t)n_rows;
    float *tmp = malloc(n * sizeof *tmp);
    if (!tmp)
      return hx_err_set(err, HX_ENOMEM, "%s: out of memory", t->name);
    for (int64_t r = 0; r < n_rows; r++)
      quant_row_dequantize(type, (const char *)t->data + (size_t)r * (t->nbytes / (size_t)n_rows),
                           tmp + (size_t)r * (size_t)n_cols, n_cols);
    buf = b->ops->buf_alloc(b->be, n * sizeof(float), err);
    hx_code rc = buf ? b->ops->buf_upload(b->be, buf, 0, tmp, n * sizeof(float), err) : HX_ENOMEM;
    free(tmp);
    if (rc != HX_OK) {
      b->ops->buf_free(b->be, buf);
      return hx_err_wrap(err, "%s", t->name);
    }
    type = QUANT_F32;
  } else {
    buf = b->ops->buf_wrap_host(b->be, t->data, t->nbytes);
    if (!buf) {
      buf = b->ops->buf_alloc(b->be, t->nbytes, err);
      if (!buf || b->ops->buf_upload(b->be, buf, 0, t->data, t->nbytes, err) != HX_OK) {
        b->ops->buf_free(b->be, buf);
        return hx_err_wrap(err, "%s", t->name);
      }
    }
  }
  if (keep_buf(m, buf, err) != HX_OK) {
    b->ops->buf_free(b->be, buf);
    return err ? err->code : HX_ENOMEM;
  }
  out->buf = buf;
  out->type = type;
  out->n_cols = n_cols;
  out->n_rows = n_rows;
  out->row_bytes = hx_backend_row_bytes(type, n_cols);
  if (out->row_bytes == 0)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: type %s with row length %lld unsupported", t->name,
                      quant_type_name(type), (long long)n_cols);
  return HX_OK;
}

static hx_code get(q3_model *m, const model_file *mf, int layer, const char *name, bool required,
                   bool as_f32, int64_t cols, int64_t rows, hx_tensor *out, hx_err *err) {
  const model_tensor *t =
      layer < 0 ? model_file_tensor(mf, name) : model_file_layer_tensor(mf, layer, name);
  memset(out, 0, sizeof *out);
  if (!t) {
    if (!required)
      return HX_OK;
    return layer < 0
               ? hx_err_set(err, HX_EFORMAT, "%s: tensor %s missing", model_file_path(mf), name)
               : hx_err_set(err, HX_EFORMAT, "%s: tensor blk.%d.%s missing", model_file_path(mf),
                            layer, name);
  }
  hx_code rc = load_tensor(m, t, as_f32, out, err);
  if (rc != HX_OK)
    return rc;
  if (out->n_cols != cols || out->n_rows != rows)
    return hx_err_set(err, HX_EFORMAT,
                      "%s: tensor %s has shape [%lld, %lld], expected [%lld, %lld]",
                      model_file_path(mf), t->name, (long long)out->n_cols, (long long)out->n_rows,
                      (long long)cols, (long long)rows);
  /* every 2-D weight but the embedding table is a matmul weight (a tied
   * table is prepared where it becomes the output head) */
  const hx_backend *b = &m->base.backend;
  if (!as_f32 && rows > 1 && strcmp(name, "token_embd.weight") != 0 && b->ops->weight_prepare)
    b->ops->weight_prepare(b->be, *out);
  return HX_OK;
}

static hx_tensor view(hx_bbuf *buf, size_t *off, uint32_t type, int64_t cols, int64_t rows) {
  hx_tensor t = {.buf = buf, .offset = *off, .type = type, .n_cols = cols, .n_rows = rows};
  t.row_bytes = hx_backend_row_bytes(type, cols);
  *off += (t.row_bytes * (size_t)rows + 63) & ~(size_t)63;
  return t;
}

/* Row r..r+n of a tensor as a tensor. */
static hx_tensor rows_of(hx_tensor t, int64_t r, int64_t n) {
  HX_ASSERT(r >= 0 && n >= 0 && r + n <= t.n_rows);
  t.offset += (size_t)r * t.row_bytes;
  t.n_rows = n;
  return t;
}

static void q3_free(hx_model *mb) {
  q3_model *m = (q3_model *)mb;
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

static uint64_t q3_cache_bytes(const hx_model *mb, quant_type kv_type) {
  const model_hparams *hp = &mb->hp;
  size_t row = hx_backend_row_bytes(kv_type, (int64_t)hp->n_head_kv * hp->head_dim_k);
  return 2ull * (uint64_t)hp->n_layer * (uint64_t)mb->n_ctx * row;
}

static hx_code q3_cache_init(hx_model *mb, quant_type kv_type, hx_model_cache **out, hx_err *err) {
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
  c->row_bytes = hx_backend_row_bytes(kv_type, (int64_t)hp->n_head_kv * hp->head_dim_k);
  size_t lb, total;
  if (hx_size_mul(c->row_bytes, (size_t)mb->n_ctx, &lb) ||
      hx_size_mul(lb, (size_t)hp->n_layer, &total)) {
    free(c);
    return hx_err_set(err, HX_ETOOLARGE, "kv cache size overflows");
  }
  c->layer_bytes = lb;
  c->kbuf = b->ops->buf_alloc(b->be, total, err);
  c->vbuf = c->kbuf ? b->ops->buf_alloc(b->be, total, err) : NULL;
  if (!c->vbuf) {
    b->ops->buf_free(b->be, c->kbuf);
    free(c);
    return hx_err_wrap(err, "kv cache (%zu bytes x 2)", total);
  }
  *out = c;
  return HX_OK;
}

static void q3_cache_free(hx_model *mb, hx_model_cache *c) {
  if (!c)
    return;
  const hx_backend *b = &mb->backend;
  b->ops->buf_free(b->be, c->kbuf);
  b->ops->buf_free(b->be, c->vbuf);
  free(c);
}

static hx_code q3_cache_truncate(hx_model *mb, hx_model_cache *c, int n_keep, hx_err *err) {
  (void)mb, (void)c, (void)err;
  HX_ASSERT(n_keep >= 0); /* positions ≥ n_keep are simply overwritten later */
  return HX_OK;
}

static hx_tensor cache_layer(const hx_model *mb, const hx_model_cache *c, hx_bbuf *buf, int l) {
  hx_tensor t = {.buf = buf,
                 .offset = (size_t)l * c->layer_bytes,
                 .type = c->type,
                 .n_cols = (int64_t)mb->hp.n_head_kv * mb->hp.head_dim_k,
                 .n_rows = mb->n_ctx,
                 .row_bytes = c->row_bytes};
  return t;
}

static hx_code q3_forward(hx_model *mb, hx_model_cache *c, const int32_t *tokens, int n, int pos0,
                          float *logits_last, float *logits_all, int32_t *argmax_last,
                          float *argmax_logit, hx_err *err) {
  q3_model *m = (q3_model *)mb;
  const model_hparams *hp = &mb->hp;
  const hx_backend_ops *op = mb->backend.ops;
  void *be = mb->backend.be;
  /* inputs: ids in row 0, positions in row 1 of the io tensor (uploaded before the step) */
  hx_code rc = model_inputs_upload(mb, m->io, tokens, n, pos0, err);
  if (rc != HX_OK)
    return rc;
  const hx_tensor ids = rows_of(m->io, 0, 1), positions = rows_of(m->io, 1, 1);
  const hx_tensor x = rows_of(m->x, 0, n), xb = rows_of(m->xb, 0, n);
  const hx_tensor q = rows_of(m->q, 0, n), k = rows_of(m->k, 0, n), v = rows_of(m->v, 0, n);
  const hx_tensor att = rows_of(m->att, 0, n);
  const hx_tensor hb = rows_of(m->hb, 0, n), hb2 = rows_of(m->hb2, 0, n);
  const hx_tensor none = {0};

  op->step_begin(be, n);
  op->get_rows(be, x, m->tok_embd, ids, n);
  for (int l = 0; l < hp->n_layer; l++) {
    const q3_layer *L = &m->layers[l];
    /* attention block; the previous layer's FFN output (in xb) joins the residual here */
    op->rms_norm(be, xb, l == 0 ? x : xb, l == 0 ? none : x, L->attn_norm, hp->rms_eps, 0);
    const hx_tensor qkv_y[3] = {q, k, v}, qkv_w[3] = {L->wq, L->wk, L->wv};
    const hx_tensor qkv_b[3] = {L->bq, L->bk, L->bv};
    op->matmul_n(be, 3, qkv_y, qkv_w, xb, qkv_b);
    if (L->q_norm.buf) {
      op->rms_norm_heads(be, q, L->q_norm, hp->head_dim_k, hp->rms_eps);
      op->rms_norm_heads(be, k, L->k_norm, hp->head_dim_k, hp->rms_eps);
    }
    op->rope(be, q, positions, hp->head_dim_k, &m->rope);
    op->rope(be, k, positions, hp->head_dim_k, &m->rope);
    const hx_tensor kc = cache_layer(mb, c, c->kbuf, l), vc = cache_layer(mb, c, c->vbuf, l);
    op->cache_store(be, kc, k, positions);
    op->cache_store(be, vc, v, positions);
    op->attention(be, att, q, kc, vc, positions, &m->attn);
    op->matmul(be, xb, L->wo, att, none);
    /* MLP block: x += attention output; xb = norm(x) */
    op->rms_norm(be, xb, xb, x, L->ffn_norm, hp->rms_eps, 0);
    if (L->is_moe) {
      moe_ffn_forward(&m->moe, &L->moe, xb, xb);
      continue;
    }
    const hx_tensor gu_y[2] = {hb, hb2}, gu_w[2] = {L->w_gate, L->w_up};
    op->matmul_n(be, 2, gu_y, gu_w, xb, NULL);
    op->swiglu(be, hb, hb, hb2);
    op->matmul(be, xb, L->w_down, hb, none);
  }
  op->rms_norm(be, xb, xb, x, m->output_norm, hp->rms_eps, 0);
  if (!logits_all)
    op->matmul(be, m->logits, m->output, rows_of(xb, n - 1, 1), none);
  const bool device_argmax = argmax_last && !logits_last && !logits_all;
  if (device_argmax)
    op->top_k(be, m->top_val, m->top_id, m->logits, 1);
  rc = op->step_end(be, err);
  if (rc != HX_OK)
    return rc;
  const model_head head = {m->output, m->logits, m->top_val, m->top_id};
  return model_head_results(&mb->backend, &head, xb, n, hp->n_vocab, logits_last, logits_all,
                            argmax_last, argmax_logit, err);
}

static const hx_model_ops q3_ops = {
    .free = q3_free,
    .cache_init = q3_cache_init,
    .cache_free = q3_cache_free,
    .cache_bytes = q3_cache_bytes,
    .cache_truncate = q3_cache_truncate,
    .forward = q3_forward,
};

static hx_code q3_load_weights(q3_model *m, const model_file *mf, hx_err *err) {
  const model_hparams *hp = &m->base.hp;
  const int64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
  const int64_t QD = (int64_t)hp->n_head * hp->head_dim_k;
  const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim_k;
  const bool q3 = hp->arch == MODEL_ARCH_QWEN3 || hp->arch == MODEL_ARCH_QWEN3MOE;
  hx_code rc;
  if ((rc = get(m, mf, -1, "token_embd.weight", true, false, E, V, &m->tok_embd, err)) ||
      (rc = get(m, mf, -1, "output_norm.weight", true, true, E, 1, &m->output_norm, err)) ||
      (rc = get(m, mf, -1, "output.weight", false, false, E, V, &m->output, err)))
    return rc;
  if (!m->output.buf)
    m->output = m->tok_embd; /* tied embeddings */
  if (m->base.backend.ops->weight_prepare)
    m->base.backend.ops->weight_prepare(m->base.backend.be, m->output);
  for (int l = 0; l < hp->n_layer; l++) {
    q3_layer *L = &m->layers[l];
    if ((rc = get(m, mf, l, "attn_norm.weight", true, true, E, 1, &L->attn_norm, err)) ||
        (rc = get(m, mf, l, "attn_q.weight", true, false, E, QD, &L->wq, err)) ||
        (rc = get(m, mf, l, "attn_k.weight", true, false, E, KD, &L->wk, err)) ||
        (rc = get(m, mf, l, "attn_v.weight", true, false, E, KD, &L->wv, err)) ||
        (rc = get(m, mf, l, "attn_output.weight", true, false, QD, E, &L->wo, err)) ||
        (rc = get(m, mf, l, "attn_q.bias", !q3 && hp->attn_qkv_bias, true, QD, 1, &L->bq, err)) ||
        (rc = get(m, mf, l, "attn_k.bias", !q3 && hp->attn_qkv_bias, true, KD, 1, &L->bk, err)) ||
        (rc = get(m, mf, l, "attn_v.bias", !q3 && hp->attn_qkv_bias, true, KD, 1, &L->bv, err)) ||
        (rc = get(m, mf, l, "attn_q_norm.weight", q3, true, hp->head_dim_k, 1, &L->q_norm, err)) ||
        (rc = get(m, mf, l, "attn_k_norm.weight", q3, true, hp->head_dim_k, 1, &L->k_norm, err)) ||
        (rc = get(m, mf, l, "ffn_norm.weight", true, true, E, 1, &L->ffn_norm, err)))
      return rc;
    L->is_moe = model_arch_is_moe(hp->arch) && !hp->layer_dense_ffn[l];
    if (L->is_moe)
      rc = moe_ffn_layer_load(&m->moe, mf, l, &L->moe, err);
    else if ((rc = get(m, mf, l, "ffn_gate.weight", true, false, E, F, &L->w_gate, err)) ||
             (rc = get(m, mf, l, "ffn_up.weight", true, false, E, F, &L->w_up, err)) ||
             (rc = get(m, mf, l, "ffn_down.weight", true, false, F, E, &L->w_down, err)))
      return rc;
    if (rc != HX_OK)
      return rc;
    if (!!L->q_norm.buf != !!L->k_norm.buf)
      return hx_err_set(err, HX_EFORMAT, "%s: layer %d has only one of q/k norm",
                        model_file_path(mf), l);
  }
  return HX_OK;
}

/* Loads a qwen3 / qwen2 / qwen3moe model (the arch is checked by the callers). */
static hx_code q3_load(const model_file *mf, hx_backend backend, int n_ctx, int max_batch,
                       hx_model **out, hx_err *err) {
  const model_hparams *hp = model_file_hparams(mf);
  *out = NULL;
  if (hp->head_dim_k != hp->head_dim_v || hp->head_dim_k > HX_BACKEND_HEAD_DIM_MAX ||
      hp->n_rot > hp->head_dim_k || hp->n_rot <= 0 || hp->n_rot % 2)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: head dims k %d v %d rot %d unsupported",
                      model_file_path(mf), hp->head_dim_k, hp->head_dim_v, hp->n_rot);
  if (max_batch < 1 || max_batch > 4096 || n_ctx < 1)
    return hx_err_set(err, HX_EINVAL, "max_batch %d (1..4096) / n_ctx %d invalid", max_batch,
                      n_ctx);
  q3_model *m = calloc(1, sizeof *m);
  if (!m)
    return hx_err_set(err, HX_ENOMEM, "qwen3: out of memory");
  m->base.ops = &q3_ops;
  m->base.backend = backend;
  m->base.hp = *hp;
  m->base.n_ctx = n_ctx;
  m->base.max_batch = max_batch;
  m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
  hx_code rc = HX_OK;
  if (!m->layers)
    rc = hx_err_set(err, HX_ENOMEM, "qwen3: out of memory");
  else if (model_arch_is_moe(hp->arch) && moe_ffn_init(&m->moe, backend, hp, max_batch, err))
    rc = hx_err_wrap(err, "%s", model_file_path(mf));
  if (rc == HX_OK)
    rc = q3_load_weights(m, mf, err);
  if (rc != HX_OK) {
    q3_free(&m->base);
    return rc;
  }
  /* activations: one buffer, views 64-byte aligned */
  /* F: dense FFN width; a qwen3moe model without dense layers may have none */
  const int64_t B = max_batch, E = hp->n_embd, F = hp->n_ff > 0 ? hp->n_ff : 1, V = hp->n_vocab;
  const int64_t QD = (int64_t)hp->n_head * hp->head_dim_k;
  const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim_k;
  size_t off = 0;
  hx_tensor dummy[12];
  dummy[0] = view(NULL, &off, QUANT_F32, E, B);
  dummy[1] = view(NULL, &off, QUANT_F32, E, B);
  dummy[2] = view(NULL, &off, QUANT_F32, QD, B);
  dummy[3] = view(NULL, &off, QUANT_F32, KD, B);
  dummy[4] = view(NULL, &off, QUANT_F32, KD, B);
  dummy[5] = view(NULL, &off, QUANT_F32, QD, B);
  dummy[6] = view(NULL, &off, QUANT_F32, F, B);
  dummy[7] = view(NULL, &off, QUANT_F32, F, B);
  dummy[8] = view(NULL, &off, QUANT_F32, V, 1);
  dummy[9] = view(NULL, &off, QUANT_I32, B, 2);
  dummy[10] = view(NULL, &off, QUANT_F32, 1, 1);
  dummy[11] = view(NULL, &off, QUANT_I32, 1, 1);
  m->act = backend.ops->buf_alloc(backend.be, off, err);
  if (!m->act || keep_buf(m, m->act, err) != HX_OK) {
    if (m->act)
      backend.ops->buf_free(backend.be, m->act);
    q3_free(&m->base);
    return err ? err->code : HX_ENOMEM;
  }
  for (int i = 0; i < 12; i++)
    dummy[i].buf = m->act;
  m->x = dummy[0], m->xb = dummy[1], m->q = dummy[2], m->k = dummy[3], m->v = dummy[4];
  m->att = dummy[5], m->hb = dummy[6], m->hb2 = dummy[7], m->logits = dummy[8], m->io = dummy[9];
  m->top_val = dummy[10], m->top_id = dummy[11];
  int64_t max_cols = E > F ? E : F;
  max_cols = max_cols > QD ? max_cols : QD;
  if (m->moe.act)
    max_cols = max_cols > moe_ffn_reserve_cols(&m->moe) ? max_cols : moe_ffn_reserve_cols(&m->moe);
  rc = backend.ops->reserve(backend.be, B, max_cols, n_ctx, err);
  if (rc != HX_OK) {
    q3_free(&m->base);
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
  *out = &m->base;
  return HX_OK;
}

hx_code qwen3_model_load(const model_file *mf, hx_backend backend, int n_ctx, int max_batch,
                         hx_model **out, hx_err *err) {
  const model_hparams *hp = model_file_hparams(mf);
  *out = NULL;
  if (hp->arch != MODEL_ARCH_QWEN3 && hp->arch != MODEL_ARCH_QWEN2)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: arch %s is not qwen3/qwen2", model_file_path(mf),
                      model_arch_name(hp->arch));
  return q3_load(mf, backend, n_ctx, max_batch, out, err);
}

hx_code qwen3moe_model_load(const model_file *mf, hx_backend backend, int n_ctx, int max_batch,
                            hx_model **out, hx_err *err) {
  const model_hparams *hp = model_file_hparams(mf);
  *out = NULL;
  if (hp->arch != MODEL_ARCH_QWEN3MOE)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: arch %s is not qwen3moe", model_file_path(mf),
                      model_arch_name(hp->arch));
  if (!backend.ops->moe_route || !backend.ops->moe_matmul_id || !backend.ops->moe_combine)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: the %s backend has no MoE ops yet",
                      model_file_path(mf), backend.ops->name);
  return q3_load(mf, backend, n_ctx, max_batch, out, err);
}
