/* tensor_names.c — the one mapping between HF tensor names and canonical
 * GGUF names (llama.cpp gguf-py tensor_mapping.py for the Qwen arches), and
 * the list of tensors (with GGUF shapes) every arch needs. */
#include <stdio.h>
#include <string.h>

#include "engine/model_file.h"

/* HF per-layer suffix -> GGUF per-layer suffix (simple renames only). */
static const struct {
  const char *hf, *gguf;
} layer_map[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight"},
    {"mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"},
    {"linear_attn.in_proj_ba.weight", "ssm_ba.weight"},
    {"linear_attn.in_proj_qkv.weight", "attn_qkv.weight"},
    {"linear_attn.in_proj_z.weight", "attn_gate.weight"},
    {"linear_attn.in_proj_a.weight", "ssm_alpha.weight"},
    {"linear_attn.in_proj_b.weight", "ssm_beta.weight"},
    {"linear_attn.conv1d.weight", "ssm_conv1d.weight"},
    {"linear_attn.A_log", "ssm_a"},
    {"linear_attn.dt_bias", "ssm_dt.bias"},
    {"linear_attn.norm.weight", "ssm_norm.weight"},
    {"linear_attn.out_proj.weight", "ssm_out.weight"},
};

/* Strips the HF container prefixes; returns NULL for tensors we do not load
 * (vision tower, MTP head). */
const char *model_hf_strip_prefix(const char *n) {
  static const char *const skip[] = {"mtp.", "visual.", "model.visual.", "vision_tower."};
  for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
    if (strncmp(n, skip[i], strlen(skip[i])) == 0)
      return NULL;
  static const char *const pre[] = {"model.language_model.", "language_model.model.",
                                    "language_model.", "model."};
  for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
    if (strncmp(n, pre[i], strlen(pre[i])) == 0)
      return n + strlen(pre[i]);
  return n;
}

bool model_tensor_name_from_hf(model_arch arch, const char *hf_name, char *out, size_t out_size) {
  const char *n = model_hf_strip_prefix(hf_name);
  if (!n)
    return false;
  const char *g = NULL;
  if (strcmp(n, "embed_tokens.weight") == 0)
    g = "token_embd.weight";
  else if (strcmp(n, "norm.weight") == 0)
    g = "output_norm.weight";
  else if (strcmp(n, "lm_head.weight") == 0 || strcmp(hf_name, "lm_head.weight") == 0)
    g = "output.weight";
  if (g)
    return (size_t)snprintf(out, out_size, "%s", g) < out_size;
  int layer, pos = 0;
  if (sscanf(n, "layers.%d.%n", &layer, &pos) != 1 || pos == 0 || layer < 0 ||
      layer >= MODEL_MAX_LAYERS)
    return false;
  const char *rest = n + pos;
  if (strcmp(rest, "post_attention_layernorm.weight") == 0)
    g = model_arch_is_hybrid(arch) ? "post_attention_norm.weight" : "ffn_norm.weight";
  for (size_t i = 0; !g && i < sizeof layer_map / sizeof layer_map[0]; i++)
    if (strcmp(rest, layer_map[i].hf) == 0)
      g = layer_map[i].gguf;
  if (!g)
    return false;
  return (size_t)snprintf(out, out_size, "blk.%d.%s", layer, g) < out_size;
}

static size_t add(model_tensor_spec *out, size_t max, size_t n, int layer, const char *name,
                  int n_dims, int64_t ne0, int64_t ne1, int64_t ne2) {
  if (out && n < max) {
    model_tensor_spec *s = &out[n];
    if (layer >= 0)
      snprintf(s->name, sizeof s->name, "blk.%d.%s", layer, name);
    else
      snprintf(s->name, sizeof s->name, "%s", name);
    s->n_dims = n_dims;
    s->ne[0] = ne0;
    s->ne[1] = n_dims > 1 ? ne1 : 1;
    s->ne[2] = n_dims > 2 ? ne2 : 1;
    s->ne[3] = 1;
  }
  return n + 1;
}

size_t model_tensor_specs(const model_hparams *hp, model_tensor_spec *out, size_t max) {
  size_t n = 0;
  int64_t E = hp->n_embd, V = hp->n_vocab;
  n = add(out, max, n, -1, "token_embd.weight", 2, E, V, 1);
  n = add(out, max, n, -1, "output_norm.weight", 1, E, 1, 1);
  if (!hp->tied_embeddings)
    n = add(out, max, n, -1, "output.weight", 2, E, V, 1);
  bool hybrid = model_arch_is_hybrid(hp->arch);
  int64_t q_rows = (int64_t)hp->n_head * hp->head_dim_k * (hp->attn_output_gate ? 2 : 1);
  int64_t k_rows = (int64_t)hp->n_head_kv * hp->head_dim_k;
  int64_t v_rows = (int64_t)hp->n_head_kv * hp->head_dim_v;
  int64_t conv_ch = 2 * (int64_t)hp->ssm_n_group * hp->ssm_d_state + hp->ssm_d_inner;
  for (int l = 0; l < hp->n_layer; l++) {
    n = add(out, max, n, l, "attn_norm.weight", 1, E, 1, 1);
    if (hybrid && hp->layer_recurrent[l]) {
      n = add(out, max, n, l, "attn_qkv.weight", 2, E, conv_ch, 1);
      n = add(out, max, n, l, "attn_gate.weight", 2, E, hp->ssm_d_inner, 1);
      if (hp->arch == MODEL_ARCH_QWEN3NEXT) {
        n = add(out, max, n, l, "ssm_ba.weight", 2, E, 2 * (int64_t)hp->ssm_dt_rank, 1);
      } else {
        n = add(out, max, n, l, "ssm_alpha.weight", 2, E, hp->ssm_dt_rank, 1);
        n = add(out, max, n, l, "ssm_beta.weight", 2, E, hp->ssm_dt_rank, 1);
      }
      n = add(out, max, n, l, "ssm_conv1d.weight", 2, hp->ssm_d_conv, conv_ch, 1);
      n = add(out, max, n, l, "ssm_a", 1, hp->ssm_dt_rank, 1, 1);
      n = add(out, max, n, l, "ssm_dt.bias", 1, hp->ssm_dt_rank, 1, 1);
      n = add(out, max, n, l, "ssm_norm.weight", 1, hp->ssm_head_v_dim, 1, 1);
      n = add(out, max, n, l, "ssm_out.weight", 2, hp->ssm_d_inner, E, 1);
    } else {
      n = add(out, max, n, l, "attn_q.weight", 2, E, q_rows, 1);
      n = add(out, max, n, l, "attn_k.weight", 2, E, k_rows, 1);
      n = add(out, max, n, l, "attn_v.weight", 2, E, v_rows, 1);
      n = add(out, max, n, l, "attn_output.weight", 2, (int64_t)hp->n_head * hp->head_dim_v, E, 1);
      if (hp->attn_qkv_bias) {
        n = add(out, max, n, l, "attn_q.bias", 1, (int64_t)hp->n_head * hp->head_dim_k, 1, 1);
        n = add(out, max, n, l, "attn_k.bias", 1, k_rows, 1, 1);
        n = add(out, max, n, l, "attn_v.bias", 1, v_rows, 1, 1);
      }
      if (hp->arch != MODEL_ARCH_QWEN2) {
        n = add(out, max, n, l, "attn_q_norm.weight", 1, hp->head_dim_k, 1, 1);
        n = add(out, max, n, l, "attn_k_norm.weight", 1, hp->head_dim_k, 1, 1);
      }
    }
    n = add(out, max, n, l, hybrid ? "post_attention_norm.weight" : "ffn_norm.weight", 1, E, 1, 1);
    if (model_arch_is_moe(hp->arch) && !hp->layer_dense_ffn[l]) {
      int64_t X = hp->n_expert, F = hp->n_ff_exp;
      n = add(out, max, n, l, "ffn_gate_inp.weight", 2, E, X, 1);
      n = add(out, max, n, l, "ffn_gate_exps.weight", 3, E, F, X);
      n = add(out, max, n, l, "ffn_up_exps.weight", 3, E, F, X);
      n = add(out, max, n, l, "ffn_down_exps.weight", 3, F, E, X);
      if (hp->n_ff_shexp) {
        n = add(out, max, n, l, "ffn_gate_inp_shexp.weight", 1, E, 1, 1);
        n = add(out, max, n, l, "ffn_gate_shexp.weight", 2, E, hp->n_ff_shexp, 1);
        n = add(out, max, n, l, "ffn_up_shexp.weight", 2, E, hp->n_ff_shexp, 1);
        n = add(out, max, n, l, "ffn_down_shexp.weight", 2, hp->n_ff_shexp, E, 1);
      }
    } else {
      n = add(out, max, n, l, "ffn_gate.weight", 2, E, hp->n_ff, 1);
      n = add(out, max, n, l, "ffn_up.weight", 2, E, hp->n_ff, 1);
      n = add(out, max, n, l, "ffn_down.weight", 2, hp->n_ff, E, 1);
    }
  }
  return n;
}
