/* forward_io.c — what every forward() does before and after its step: check
 * and upload the inputs, and hand the results of the output head to the host
 * in the form forward() promises (model.h). */
#include <string.h>

#include "engine/models/model.h"

hx_code model_inputs_upload(const hx_model *mb, hx_tensor io, const int32_t *tokens, int n,
                            int pos0, hx_err *err) {
  const hx_backend *b = &mb->backend;
  HX_ASSERT(n >= 1 && n <= mb->max_batch && pos0 >= 0 && io.n_cols >= mb->max_batch);
  if (pos0 + n > mb->n_ctx)
    return hx_err_set(err, HX_ETOOLARGE, "context full: %d + %d tokens > n_ctx %d", pos0, n,
                      mb->n_ctx);
  for (int t = 0; t < n; t++)
    if (tokens[t] < 0 || tokens[t] >= mb->hp.n_vocab)
      return hx_err_set(err, HX_EINVAL, "token id %d out of range (vocab %d)", tokens[t],
                        mb->hp.n_vocab);
  enum { CHUNK = 256 };
  int32_t pos[CHUNK];
  hx_code rc =
      b->ops->buf_upload(b->be, io.buf, io.offset, tokens, (size_t)n * sizeof(int32_t), err);
  for (int t0 = 0; rc == HX_OK && t0 < n; t0 += CHUNK) {
    const int m = n - t0 < CHUNK ? n - t0 : CHUNK;
    for (int t = 0; t < m; t++)
      pos[t] = pos0 + t0 + t;
    rc = b->ops->buf_upload(b->be, io.buf, io.offset + io.row_bytes + (size_t)t0 * sizeof(int32_t),
                            pos, (size_t)m * sizeof(int32_t), err);
  }
  return rc;
}

hx_code model_head_results(const hx_backend *b, const model_head *h, hx_tensor xb, int n,
                           int n_vocab, float *logits_last, float *logits_all, int32_t *argmax_last,
                           float *argmax_logit, hx_err *err) {
  const hx_backend_ops *op = b->ops;
  void *be = b->be;
  hx_code rc;
  if (argmax_last && !logits_last && !logits_all) { /* the device's arg-max only */
    rc = op->buf_download(be, h->top_id.buf, h->top_id.offset, argmax_last, sizeof(int32_t), err);
    if (rc == HX_OK)
      rc =
          op->buf_download(be, h->top_val.buf, h->top_val.offset, argmax_logit, sizeof(float), err);
    return rc;
  }
  const size_t vbytes = (size_t)n_vocab * sizeof(float);
  if (!logits_all)
    return logits_last
               ? op->buf_download(be, h->logits.buf, h->logits.offset, logits_last, vbytes, err)
               : HX_OK;
  const hx_tensor none = {0};
  for (int t = 0; t < n; t++) { /* one head matmul per row: logits scratch stays [1][V] */
    hx_tensor row = xb;
    HX_ASSERT(t < xb.n_rows);
    row.offset += (size_t)t * xb.row_bytes;
    row.n_rows = 1;
    op->step_begin(be, 1);
    op->matmul(be, h->logits, h->output, row, none);
    rc = op->step_end(be, err);
    if (rc == HX_OK)
      rc = op->buf_download(be, h->logits.buf, h->logits.offset, logits_all + (size_t)t * n_vocab,
                            vbytes, err);
    if (rc != HX_OK)
      return rc;
  }
  if (logits_last)
    memcpy(logits_last, logits_all + (size_t)(n - 1) * n_vocab, vbytes);
  return HX_OK;
}
