/* qwen35.c — the hybrid generation (qwen3next, qwen35, qwen35moe): Gated
 * DeltaNet layers beside gated full attention. Being written; until then
 * loading one of these reports that the forward pass is missing. */
#include "engine/models/model.h"

hx_code qwen35_model_load(const model_file *mf, hx_backend backend, int n_ctx, int max_batch,
                          hx_model **out, hx_err *err) {
  (void)backend;
  (void)n_ctx;
  (void)max_batch;
  *out = NULL;
  return hx_err_set(err, HX_EUNSUPPORTED, "arch %s: forward pass not implemented yet",
                    model_arch_name(model_file_hparams(mf)->arch));
}
