/* moe_ffn.c — the mixture-of-experts FFN block (moe_ffn.h): loading one
 * layer's router, stacked experts and shared expert onto a backend, and the
 * block as a sequence of backend ops:
 *
 *   matmul_n   router logits, shared gate/up and shared gate logit (one pass over x)
 *   moe_route  softmax → top-k → renorm: weights [n][k], ids [n][k] (backend memory)
 *   moe_matmul_id  expert gate + up for the n*k (token, slot) pairs
 *   swiglu     over [n*k][F]
 *   swiglu + matmul  the shared expert
 *   moe_matmul_id  expert down, one input row per slot
 *   moe_combine    Σ_j w·y (+ sigmoid(gate)·shared) into out
 * (the CUDA backend fuses route → gate/up → swiglu and down → combine in a
 * one-token step, so those stay adjacent). */
#include <string.h>

#include "engine/models/moe_ffn.h"
#include "engine/quant.h"

static hx_tensor moe_view(hx_bbuf *buf, size_t *off, uint32_t type, int64_t cols, int64_t rows) {
  hx_tensor t = {.buf = buf, .offset = *off, .type = type, .n_cols = cols, .n_rows = rows};
  t.row_bytes = hx_backend_row_bytes(type, cols);
  *off += (t.row_bytes * (size_t)rows + 63) & ~(size_t)63;
  return t;
}

static hx_tensor moe_rows(hx_tensor t, int64_t n) {
  HX_ASSERT(n >= 0 && n <= t.n_rows);
  t.n_rows = n;
  return t;
}

hx_code moe_ffn_init(moe_ffn *f, hx_backend backend, const model_hparams *hp, int max_rows,
                     hx_err *err) {
  memset(f, 0, sizeof *f);
  if (!model_arch_is_moe(hp->arch))
    return hx_err_set(err, HX_EINVAL, "moe_ffn: arch %s has no experts", model_arch_name(hp->arch));
  if (hp->n_expert < 1 || hp->n_expert > 4096 || hp->n_expert_used < 1 ||
      hp->n_expert_used > hp->n_expert || hp->n_expert_used > HX_BACKEND_TOPK_MAX)
    return hx_err_set(err, HX_EUNSUPPORTED, "moe_ffn: %d experts, %d used per token unsupported",
                      hp->n_expert, hp->n_expert_used);
  if (hp->n_embd > HX_BACKEND_MOE_N_IN_MAX || hp->n_ff_exp > HX_BACKEND_MOE_N_IN_MAX ||
      hp->n_ff_exp < 1 || hp->n_ff_shexp < 0)
    return hx_err_set(err, HX_EUNSUPPORTED,
                      "moe_ffn: hidden %d / expert width %d over the expert matmul limit %d",
                      hp->n_embd, hp->n_ff_exp, HX_BACKEND_MOE_N_IN_MAX);
  if (max_rows < 1 || max_rows > 4096)
    return hx_err_set(err, HX_EINVAL, "moe_ffn: max_rows %d not in 1..4096", max_rows);
  const int64_t B = max_rows, K = hp->n_expert_used, E = hp->n_embd, X = hp->n_expert;
  const int64_t F = hp->n_ff_exp, Fs = hp->n_ff_shexp;
  size_t off = 0;
  hx_tensor v[10];
  v[0] = moe_view(NULL, &off, QUANT_F32, X, B);
  v[1] = moe_view(NULL, &off, QUANT_F32, K, B);
  v[2] = moe_view(NULL, &off, QUANT_I32, K, B);
  v[3] = moe_view(NULL, &off, QUANT_F32, F, B * K);
  v[4] = moe_view(NULL, &off, QUANT_F32, F, B * K);
  v[5] = moe_view(NULL, &off, QUANT_F32, E, B * K);
  const int n_views = Fs ? 10 : 6;
  if (Fs) {
    v[6] = moe_view(NULL, &off, QUANT_F32, Fs, B);
    v[7] = moe_view(NULL, &off, QUANT_F32, Fs, B);
    v[8] = moe_view(NULL, &off, QUANT_F32, E, B);
    v[9] = moe_view(NULL, &off, QUANT_F32, 1, B);
  }
  hx_bbuf *act = backend.ops->buf_alloc(backend.be, off, err);
  if (!act)
    return hx_err_wrap(err, "moe_ffn scratch (%zu bytes)", off);
  for (int i = 0; i < n_views; i++)
    v[i].buf = act;
  *f = (moe_ffn){.backend = backend,
                 .n_embd = hp->n_embd,
                 .n_expert = hp->n_expert,
                 .k = hp->n_expert_used,
                 .n_ff_exp = hp->n_ff_exp,
                 .n_ff_shexp = hp->n_ff_shexp,
                 .renorm = hp->expert_weights_norm || hp->arch == MODEL_ARCH_QWEN35MOE,
                 .max_rows = max_rows,
                 .act = act,
                 .logits = v[0],
                 .weights = v[1],
                 .ids = v[2],
                 .eg = v[3],
                 .eu = v[4],
                 .ed = v[5]};
  if (Fs)
    f->sg = v[6], f->su = v[7], f->sh_out = v[8], f->sh_gate = v[9];
  return HX_OK;
}

void moe_ffn_free(moe_ffn *f) {
  if (!f || !f->act)
    return;
  f->backend.ops->buf_free(f->backend.be, f->act);
  memset(f, 0, sizeof *f);
}

int64_t moe_ffn_reserve_cols(const moe_ffn *f) {
  int64_t c = f->n_embd;
  c = f->n_ff_shexp > c ? f->n_ff_shexp : c;
  const int64_t kf = (int64_t)f->k * f->n_ff_exp;
  return kf > c ? kf : c;
}

/* One tensor onto the backend (wrapped when possible, else uploaded), shape
 * checked against [rows][cols]; the buffer is recorded in L. */
static hx_code moe_load(const moe_ffn *f, const model_file *mf, int layer, const char *name,
                        int64_t cols, int64_t rows, moe_ffn_layer *L, hx_tensor *out, hx_err *err) {
  const hx_backend *b = &f->backend;
  const model_tensor *t = model_file_layer_tensor(mf, layer, name);
  if (!t)
    return hx_err_set(err, HX_EFORMAT, "%s: tensor blk.%d.%s missing", model_file_path(mf), layer,
                      name);
  int64_t n_rows = 1;
  for (int d = 1; d < t->n_dims; d++)
    n_rows *= t->ne[d];
  if (t->ne[0] != cols || n_rows != rows)
    return hx_err_set(err, HX_EFORMAT,
                      "%s: tensor %s has %lld x %lld elements, expected %lld x %lld",
                      model_file_path(mf), t->name, (long long)n_rows, (long long)t->ne[0],
                      (long long)rows, (long long)cols);
  const size_t rb = hx_backend_row_bytes(t->type, cols);
  if (rb == 0)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: type %s with row length %lld unsupported", t->name,
                      quant_type_name(t->type), (long long)cols);
  HX_ASSERT(L->n_bufs < (int)(sizeof L->bufs / sizeof L->bufs[0]));
  hx_bbuf *buf = b->ops->buf_wrap_host(b->be, t->data, t->nbytes);
  if (!buf) {
    buf = b->ops->buf_alloc(b->be, t->nbytes, err);
    if (!buf || b->ops->buf_upload(b->be, buf, 0, t->data, t->nbytes, err) != HX_OK) {
      b->ops->buf_free(b->be, buf);
      return hx_err_wrap(err, "%s", t->name);
    }
  }
  L->bufs[L->n_bufs++] = buf;
  *out = (hx_tensor){.buf = buf, .type = t->type, .n_cols = cols, .n_rows = rows, .row_bytes = rb};
  return HX_OK;
}

hx_code moe_ffn_layer_load(const moe_ffn *f, const model_file *mf, int layer, moe_ffn_layer *out,
                           hx_err *err) {
  memset(out, 0, sizeof *out);
  const int64_t E = f->n_embd, X = f->n_expert, F = f->n_ff_exp, Fs = f->n_ff_shexp;
  hx_code rc;
  if ((rc = moe_load(f, mf, layer, "ffn_gate_inp.weight", E, X, out, &out->router, err)) ||
      (rc = moe_load(f, mf, layer, "ffn_gate_exps.weight", E, X * F, out, &out->gate_exps, err)) ||
      (rc = moe_load(f, mf, layer, "ffn_up_exps.weight", E, X * F, out, &out->up_exps, err)) ||
      (rc = moe_load(f, mf, layer, "ffn_down_exps.weight", F, X * E, out, &out->down_exps, err)))
    goto fail;
  if (Fs &&
      ((rc = moe_load(f, mf, layer, "ffn_gate_inp_shexp.weight", E, 1, out, &out->shexp_gate,
                      err)) ||
       (rc = moe_load(f, mf, layer, "ffn_gate_shexp.weight", E, Fs, out, &out->gate_shexp, err)) ||
       (rc = moe_load(f, mf, layer, "ffn_up_shexp.weight", E, Fs, out, &out->up_shexp, err)) ||
       (rc = moe_load(f, mf, layer, "ffn_down_shexp.weight", Fs, E, out, &out->down_shexp, err))))
    goto fail;
  /* layout copies at load rather than at the first request */
  const hx_backend_ops *op = f->backend.ops;
  if (op->expert_weight_prepare) {
    op->expert_weight_prepare(f->backend.be, out->gate_exps, F);
    op->expert_weight_prepare(f->backend.be, out->up_exps, F);
    op->expert_weight_prepare(f->backend.be, out->down_exps, E);
  }
  return HX_OK;
fail:
  moe_ffn_layer_free(f, out);
  return rc;
}

void moe_ffn_layer_free(const moe_ffn *f, moe_ffn_layer *L) {
  if (!L)
    return;
  for (int i = 0; i < L->n_bufs; i++)
    f->backend.ops->buf_free(f->backend.be, L->bufs[i]);
  memset(L, 0, sizeof *L);
}

void moe_ffn_forward(const moe_ffn *f, const moe_ffn_layer *L, hx_tensor out, hx_tensor x) {
  const hx_backend_ops *op = f->backend.ops;
  void *be = f->backend.be;
  const int64_t n = x.n_rows, k = f->k;
  HX_ASSERT(n >= 1 && n <= f->max_rows && x.n_cols == f->n_embd && out.n_cols == f->n_embd);
  HX_ASSERT(out.n_rows == n && L->router.buf != NULL);
  const hx_tensor logits = moe_rows(f->logits, n), weights = moe_rows(f->weights, n);
  const hx_tensor ids = moe_rows(f->ids, n);
  const hx_tensor eg = moe_rows(f->eg, n * k), eu = moe_rows(f->eu, n * k);
  const hx_tensor ed = moe_rows(f->ed, n * k);
  const bool shared = f->n_ff_shexp > 0;
  hx_tensor sg = {0}, su = {0}, sh_out = {0}, sh_gate = {0};
  /* every projection of x in one pass: router (+ shared gate, up, gate logit) */
  if (shared) {
    sg = moe_rows(f->sg, n), su = moe_rows(f->su, n);
    sh_out = moe_rows(f->sh_out, n), sh_gate = moe_rows(f->sh_gate, n);
    const hx_tensor ys[4] = {logits, sg, su, sh_gate};
    const hx_tensor ws[4] = {L->router, L->gate_shexp, L->up_shexp, L->shexp_gate};
    op->matmul_n(be, 4, ys, ws, x, NULL);
  } else {
    const hx_tensor none = {0};
    op->matmul(be, logits, L->router, x, none);
  }
  op->moe_route(be, weights, ids, logits, f->k, f->renorm);
  const hx_tensor gu_y[2] = {eg, eu}, gu_w[2] = {L->gate_exps, L->up_exps};
  if (quant_type_dot_type(L->gate_exps.type) == quant_type_dot_type(L->up_exps.type)) {
    op->moe_matmul_id(be, 2, gu_y, gu_w, x, ids); /* one input pass for both */
  } else { /* e.g. Q8_0 beside a K-quant: different activation formats */
    op->moe_matmul_id(be, 1, &gu_y[0], &gu_w[0], x, ids);
    op->moe_matmul_id(be, 1, &gu_y[1], &gu_w[1], x, ids);
  }
  op->swiglu(be, eg, eg, eu);
  if (shared) { /* before the expert down, so that the combine follows it (one fused launch) */
    const hx_tensor none = {0};
    op->swiglu(be, sg, sg, su);
    op->matmul(be, sh_out, L->down_shexp, sg, none);
  }
  op->moe_matmul_id(be, 1, &ed, &L->down_exps, eg, ids);
  op->moe_combine(be, out, ed, weights, sh_out, sh_gate);
}
