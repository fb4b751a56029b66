/* hparams.c — model_hparams from GGUF metadata or an HF config.json, for the
 * arches qwen2, qwen3, qwen3moe, qwen3next, qwen35, qwen35moe, and its
 * validation. GGUF keys follow llama.cpp (gguf-py constants.py: Keys.LLM,
 * Keys.Attention, Keys.Rope, Keys.SSM); HF keys follow transformers'
 * Qwen*Config, with Qwen3.5's nested text_config and rope_parameters. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "engine/model_file.h"

static const char *const arch_names[MODEL_ARCH_COUNT] = {"qwen2",     "qwen3",  "qwen3moe",
                                                         "qwen3next", "qwen35", "qwen35moe"};

const char *model_arch_name(model_arch a) {
  return (unsigned)a < MODEL_ARCH_COUNT ? arch_names[a] : "?";
}

bool model_arch_parse(const char *name, model_arch *out) {
  for (int i = 0; i < MODEL_ARCH_COUNT; i++)
    if (name && strcmp(name, arch_names[i]) == 0) {
      *out = (model_arch)i;
      return true;
    }
  return false;
}

bool model_arch_from_hf(const char *t, model_arch *out) {
  static const struct {
    const char *hf;
    model_arch a;
  } map[] = {{"qwen2", MODEL_ARCH_QWEN2},           {"qwen3", MODEL_ARCH_QWEN3},
             {"qwen3_moe", MODEL_ARCH_QWEN3MOE},    {"qwen3_next", MODEL_ARCH_QWEN3NEXT},
             {"qwen3_5", MODEL_ARCH_QWEN35},        {"qwen3_5_text", MODEL_ARCH_QWEN35},
             {"qwen3_5_moe", MODEL_ARCH_QWEN35MOE}, {"qwen3_5_moe_text", MODEL_ARCH_QWEN35MOE}};
  for (size_t i = 0; t && i < sizeof map / sizeof map[0]; i++)
    if (strcmp(t, map[i].hf) == 0) {
      *out = map[i].a;
      return true;
    }
  return false;
}

bool model_arch_is_moe(model_arch a) {
  return a == MODEL_ARCH_QWEN3MOE || a == MODEL_ARCH_QWEN3NEXT || a == MODEL_ARCH_QWEN35MOE;
}

bool model_arch_is_hybrid(model_arch a) {
  return a == MODEL_ARCH_QWEN3NEXT || a == MODEL_ARCH_QWEN35 || a == MODEL_ARCH_QWEN35MOE;
}

static void set_layer_kinds(model_hparams *hp) {
  for (int i = 0; i < MODEL_MAX_LAYERS; i++)
    hp->layer_recurrent[i] = model_arch_is_hybrid(hp->arch) && i < hp->n_layer &&
                             hp->full_attention_interval > 0 &&
                             (i + 1) % hp->full_attention_interval != 0;
}

hx_code model_hparams_validate(const model_hparams *hp, const char *src, hx_err *err) {
#define REQ(cond, ...)                                                                             \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      return hx_err_set(err, HX_EFORMAT, __VA_ARGS__);                                             \
  } while (0)
  REQ(hp->n_layer >= 1 && hp->n_layer <= MODEL_MAX_LAYERS, "%s: block count %d not in 1..%d", src,
      hp->n_layer, MODEL_MAX_LAYERS);
  REQ(hp->n_embd >= 1 && hp->n_embd <= (1 << 20), "%s: embedding length %d out of range", src,
      hp->n_embd);
  REQ(hp->n_vocab >= 1 && hp->n_vocab <= (1 << 24), "%s: vocab size %d out of range", src,
      hp->n_vocab);
  REQ(hp->n_head >= 1 && hp->n_head <= 4096, "%s: head count %d out of range", src, hp->n_head);
  REQ(hp->n_head_kv >= 1 && hp->n_head % hp->n_head_kv == 0,
      "%s: head_count_kv %d must divide head_count %d", src, hp->n_head_kv, hp->n_head);
  REQ(hp->head_dim_k >= 1 && hp->head_dim_k <= 1024 && hp->head_dim_v >= 1 &&
          hp->head_dim_v <= 1024,
      "%s: head dims %d/%d out of range", src, hp->head_dim_k, hp->head_dim_v);
  REQ(hp->n_rot >= 0 && hp->n_rot <= hp->head_dim_k && hp->n_rot % 2 == 0,
      "%s: rope dimension count %d must be even and <= key_length %d", src, hp->n_rot,
      hp->head_dim_k);
  REQ(hp->rms_eps > 0 && hp->rms_eps < 1, "%s: rms epsilon %g out of range", src, hp->rms_eps);
  REQ(hp->rope_freq_base > 0 && isfinite(hp->rope_freq_base), "%s: rope freq_base %g invalid", src,
      hp->rope_freq_base);
  bool any_dense = !model_arch_is_moe(hp->arch) || hp->arch == MODEL_ARCH_QWEN35;
  for (int l = 0; l < hp->n_layer && l < MODEL_MAX_LAYERS; l++)
    any_dense = any_dense || hp->layer_dense_ffn[l];
  if (any_dense)
    REQ(hp->n_ff >= 1 && hp->n_ff <= (1 << 20), "%s: feed_forward_length %d out of range", src,
        hp->n_ff);
  if (model_arch_is_moe(hp->arch)) {
    REQ(hp->n_expert >= 1 && hp->n_expert <= 4096, "%s: expert_count %d out of range", src,
        hp->n_expert);
    REQ(hp->n_expert_used >= 1 && hp->n_expert_used <= hp->n_expert,
        "%s: expert_used_count %d not in 1..%d", src, hp->n_expert_used, hp->n_expert);
    REQ(hp->n_ff_exp >= 1 && hp->n_ff_exp <= (1 << 20),
        "%s: expert_feed_forward_length %d out of range", src, hp->n_ff_exp);
  }
  if (model_arch_is_hybrid(hp->arch)) {
    REQ(hp->full_attention_interval >= 1 && hp->full_attention_interval <= hp->n_layer,
        "%s: full_attention_interval %d out of range", src, hp->full_attention_interval);
    REQ(hp->ssm_d_conv >= 2 && hp->ssm_d_conv <= 16, "%s: ssm.conv_kernel %d out of range", src,
        hp->ssm_d_conv);
    REQ(hp->ssm_d_state >= 1 && hp->ssm_d_state <= 1024, "%s: ssm.state_size %d out of range", src,
        hp->ssm_d_state);
    REQ(hp->ssm_n_group >= 1 && hp->ssm_dt_rank >= hp->ssm_n_group &&
            hp->ssm_dt_rank % hp->ssm_n_group == 0,
        "%s: ssm.group_count %d must divide ssm.time_step_rank %d", src, hp->ssm_n_group,
        hp->ssm_dt_rank);
    REQ(hp->ssm_d_inner >= 1 && hp->ssm_d_inner % hp->ssm_dt_rank == 0,
        "%s: ssm.inner_size %d must be a multiple of ssm.time_step_rank %d", src, hp->ssm_d_inner,
        hp->ssm_dt_rank);
  }
  return HX_OK;
#undef REQ
}

/* --- GGUF ------------------------------------------------------------------ */

static hx_code gi(const gguf_file *f, const char *arch, const char *suffix, bool req, int *out,
                  hx_err *err) {
  char key[160];
  snprintf(key, sizeof key, "%s.%s", arch, suffix);
  int64_t v = *out;
  hx_code rc = gguf_get_int(f, key, req, 0, INT32_MAX, &v, err);
  if (!rc)
    *out = (int)v;
  return rc;
}

static hx_code gf(const gguf_file *f, const char *arch, const char *suffix, float *out,
                  hx_err *err) {
  char key[160];
  snprintf(key, sizeof key, "%s.%s", arch, suffix);
  double v = *out;
  hx_code rc = gguf_get_float(f, key, false, &v, err);
  if (!rc)
    *out = (float)v;
  return rc;
}

hx_code model_hparams_from_gguf(const gguf_file *f, model_hparams *hp, hx_err *err) {
  memset(hp, 0, sizeof *hp);
  hx_slice s;
  hx_code rc = gguf_get_str(f, "general.architecture", true, &s, err);
  if (rc)
    return rc;
  char arch[32];
  if (s.len >= sizeof arch)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: unsupported architecture (name too long)",
                      gguf_name(f));
  memcpy(arch, s.ptr, s.len);
  arch[s.len] = 0;
  if (!model_arch_parse(arch, &hp->arch))
    return hx_err_set(err, HX_EUNSUPPORTED,
                      "%s: unsupported architecture \"%s\" (supported: qwen2, qwen3, qwen3moe, "
                      "qwen3next, qwen35, qwen35moe)",
                      gguf_name(f), arch);
  hp->rms_eps = 1e-6f;
  hp->rope_freq_base = 10000.f;
  hp->expert_weights_norm = true;
  hp->bos_token_id = hp->eos_token_id = -1;
  if ((rc = gi(f, arch, "block_count", true, &hp->n_layer, err)) ||
      (rc = gi(f, arch, "embedding_length", true, &hp->n_embd, err)) ||
      (rc = gi(f, arch, "attention.head_count", true, &hp->n_head, err)) ||
      (rc = gi(f, arch, "context_length", false, &hp->n_ctx_train, err)) ||
      (rc = gi(f, arch, "feed_forward_length", false, &hp->n_ff, err)))
    return rc;
  hp->n_head_kv = hp->n_head;
  hp->head_dim_k = hp->n_head ? hp->n_embd / hp->n_head : 0;
  if ((rc = gi(f, arch, "attention.head_count_kv", false, &hp->n_head_kv, err)) ||
      (rc = gi(f, arch, "attention.key_length", false, &hp->head_dim_k, err)))
    return rc;
  hp->head_dim_v = hp->head_dim_k;
  hp->n_rot = hp->head_dim_k;
  if ((rc = gi(f, arch, "attention.value_length", false, &hp->head_dim_v, err)) ||
      (rc = gi(f, arch, "rope.dimension_count", false, &hp->n_rot, err)) ||
      (rc = gf(f, arch, "attention.layer_norm_rms_epsilon", &hp->rms_eps, err)) ||
      (rc = gf(f, arch, "rope.freq_base", &hp->rope_freq_base, err)) ||
      (rc = gi(f, arch, "expert_count", false, &hp->n_expert, err)) ||
      (rc = gi(f, arch, "expert_used_count", false, &hp->n_expert_used, err)) ||
      (rc = gi(f, arch, "expert_feed_forward_length", false, &hp->n_ff_exp, err)) ||
      (rc = gi(f, arch, "expert_shared_feed_forward_length", false, &hp->n_ff_shexp, err)) ||
      (rc = gi(f, arch, "full_attention_interval", false, &hp->full_attention_interval, err)) ||
      (rc = gi(f, arch, "ssm.conv_kernel", false, &hp->ssm_d_conv, err)) ||
      (rc = gi(f, arch, "ssm.state_size", false, &hp->ssm_d_state, err)) ||
      (rc = gi(f, arch, "ssm.group_count", false, &hp->ssm_n_group, err)) ||
      (rc = gi(f, arch, "ssm.time_step_rank", false, &hp->ssm_dt_rank, err)) ||
      (rc = gi(f, arch, "ssm.inner_size", false, &hp->ssm_d_inner, err)))
    return rc;
  /* Qwen3.5 GGUFs count the MTP block(s) in block_count; the trunk is shorter */
  int n_nextn = 0;
  if ((rc = gi(f, arch, "nextn_predict_layers", false, &n_nextn, err)))
    return rc;
  if (n_nextn > 0 && n_nextn < hp->n_layer)
    hp->n_layer -= n_nextn;
  char key[160];
  snprintf(key, sizeof key, "%s.expert_weights_norm", arch);
  if ((rc = gguf_get_bool(f, key, false, &hp->expert_weights_norm, err)))
    return rc;
  snprintf(key, sizeof key, "%s.rope.dimension_sections", arch);
  const gguf_value *sec = NULL;
  if ((rc = gguf_get_arr(f, key, false, GGUF_TYPE_COUNT, &sec, err)))
    return rc;
  if (sec) {
    gguf_type et = sec->v.arr.elem_type;
    if (et != GGUF_TYPE_INT32 && et != GGUF_TYPE_UINT32)
      return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\" must be an int32 array", gguf_name(f),
                        key);
    for (uint64_t i = 0; i < sec->v.arr.n && i < 4; i++) {
      int64_t v = gguf_arr_int(sec, i);
      if (v < 0 || v > 1024)
        return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\"[%llu] out of range", gguf_name(f), key,
                          (unsigned long long)i);
      hp->rope_sections[i] = (int)v;
    }
  }
  snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
  if ((rc = gguf_get_str(f, key, false, &s, err)))
    return rc;
  if (gguf_get(f, key)) {
    if (hx_slice_eq_cstr(s, "yarn"))
      hp->rope_scaling = MODEL_ROPE_SCALING_YARN;
    else if (hx_slice_eq_cstr(s, "linear"))
      hp->rope_scaling = MODEL_ROPE_SCALING_LINEAR;
    else if (!hx_slice_eq_cstr(s, "none"))
      return hx_err_set(err, HX_EUNSUPPORTED, "%s: rope scaling type \"%.*s\" is not supported",
                        gguf_name(f), (int)s.len, s.ptr);
  }
  if ((rc = gf(f, arch, "rope.scaling.factor", &hp->rope_scaling_factor, err)) ||
      (rc = gi(f, arch, "rope.scaling.original_context_length", false, &hp->rope_scaling_orig_ctx,
               err)))
    return rc;
  int64_t id;
  if (!gguf_get_int(f, "tokenizer.ggml.bos_token_id", false, 0, INT32_MAX, &id, NULL) &&
      gguf_get(f, "tokenizer.ggml.bos_token_id"))
    hp->bos_token_id = (int)id;
  if (!gguf_get_int(f, "tokenizer.ggml.eos_token_id", false, 0, INT32_MAX, &id, NULL) &&
      gguf_get(f, "tokenizer.ggml.eos_token_id"))
    hp->eos_token_id = (int)id;
  if (model_arch_is_hybrid(hp->arch)) {
    hp->attn_output_gate = true;
    if (hp->full_attention_interval == 0)
      hp->full_attention_interval = 4;
    if (hp->ssm_dt_rank > 0)
      hp->ssm_head_v_dim = hp->ssm_d_inner / hp->ssm_dt_rank;
  }
  const gguf_tensor *emb = gguf_tensor_find(f, "token_embd.weight");
  if (!emb)
    return hx_err_set(err, HX_EFORMAT, "%s: tensor \"token_embd.weight\" is missing", gguf_name(f));
  hp->n_vocab = emb->ne[1] > INT32_MAX ? 0 : (int)emb->ne[1];
  hp->tied_embeddings = gguf_tensor_find(f, "output.weight") == NULL;
  hp->attn_qkv_bias = gguf_tensor_find(f, "blk.0.attn_q.bias") != NULL;
  set_layer_kinds(hp);
  for (int l = 0; model_arch_is_moe(hp->arch) && l < hp->n_layer && l < MODEL_MAX_LAYERS; l++) {
    char g[MODEL_NAME_MAX], r[MODEL_NAME_MAX];
    snprintf(g, sizeof g, "blk.%d.ffn_gate.weight", l);
    snprintf(r, sizeof r, "blk.%d.ffn_gate_inp.weight", l);
    hp->layer_dense_ffn[l] = gguf_tensor_find(f, g) && !gguf_tensor_find(f, r);
  }
  return model_hparams_validate(hp, gguf_name(f), err);
}

/* --- HF config.json ------------------------------------------------------ */

static hx_code ji(const json_t *o, const char *key, bool req, int *out, hx_err *err) {
  int64_t v = *out;
  hx_code rc = hx_json_get_int(o, key, req, 0, INT32_MAX, &v, err);
  if (!rc)
    *out = (int)v;
  return rc;
}

static hx_code jf(const json_t *o, const char *key, float *out, hx_err *err) {
  double v = *out;
  hx_code rc = hx_json_get_number(o, key, false, -1e30, 1e30, &v, err);
  if (!rc)
    *out = (float)v;
  return rc;
}

/* Token id that may be an int or a list of ints (first wins). */
static int token_id(const json_t *v) {
  if (json_is_array(v))
    v = json_array_get(v, 0);
  if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= INT32_MAX)
    return (int)json_integer_value(v);
  return -1;
}

static hx_code parse_rope(const json_t *rp, model_hparams *hp, hx_err *err) {
  if (!json_is_object(rp))
    return HX_OK;
  hx_code rc = jf(rp, "rope_theta", &hp->rope_freq_base, err);
  if (rc)
    return rc;
  const char *type = NULL;
  json_t *t = json_object_get(rp, "rope_type");
  if (!t)
    t = json_object_get(rp, "type");
  type = json_string_value(t);
  if (type && strcmp(type, "yarn") == 0)
    hp->rope_scaling = MODEL_ROPE_SCALING_YARN;
  else if (type && strcmp(type, "linear") == 0)
    hp->rope_scaling = MODEL_ROPE_SCALING_LINEAR;
  else if (type && strcmp(type, "default") != 0 && strcmp(type, "mrope") != 0)
    return hx_err_set(err, HX_EUNSUPPORTED, "rope scaling type \"%s\" is not supported", type);
  if (hp->rope_scaling != MODEL_ROPE_SCALING_NONE &&
      ((rc = jf(rp, "factor", &hp->rope_scaling_factor, err)) ||
       (rc = ji(rp, "original_max_position_embeddings", false, &hp->rope_scaling_orig_ctx, err))))
    return rc;
  json_t *sec = json_object_get(rp, "mrope_section");
  for (size_t i = 0; json_is_array(sec) && i < json_array_size(sec) && i < 4; i++) {
    json_t *e = json_array_get(sec, i);
    if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 1024)
      return hx_err_set(err, HX_EFORMAT, "mrope_section[%zu] must be a small integer", i);
    hp->rope_sections[i] = (int)json_integer_value(e);
  }
  return HX_OK;
}

static hx_code hf_fill(const json_t *root, const json_t *c, model_hparams *hp, hx_err *err) {
  hx_code rc;
  if ((rc = ji(c, "num_hidden_layers", true, &hp->n_layer, err)) ||
      (rc = ji(c, "hidden_size", true, &hp->n_embd, err)) ||
      (rc = ji(c, "num_attention_heads", true, &hp->n_head, err)) ||
      (rc = ji(c, "vocab_size", true, &hp->n_vocab, err)) ||
      (rc = ji(c, "intermediate_size", false, &hp->n_ff, err)) ||
      (rc = ji(c, "max_position_embeddings", false, &hp->n_ctx_train, err)))
    return rc;
  hp->n_head_kv = hp->n_head;
  hp->head_dim_k = hp->n_head ? hp->n_embd / hp->n_head : 0;
  if ((rc = ji(c, "num_key_value_heads", false, &hp->n_head_kv, err)) ||
      (rc = ji(c, "head_dim", false, &hp->head_dim_k, err)) ||
      (rc = jf(c, "rms_norm_eps", &hp->rms_eps, err)) ||
      (rc = jf(c, "rope_theta", &hp->rope_freq_base, err)))
    return rc;
  hp->head_dim_v = hp->head_dim_k;
  float partial = model_arch_is_hybrid(hp->arch) ? 0.25f : 1.0f;
  if ((rc = jf(c, "partial_rotary_factor", &partial, err)))
    return rc;
  json_t *rp = json_object_get(c, "rope_parameters");
  if (json_is_object(rp) && (rc = jf(rp, "partial_rotary_factor", &partial, err)))
    return rc;
  if ((rc = parse_rope(rp, hp, err)) ||
      (rc = parse_rope(json_object_get(c, "rope_scaling"), hp, err)))
    return rc;
  if (hp->arch == MODEL_ARCH_QWEN35 || hp->arch == MODEL_ARCH_QWEN35MOE) {
    if (!hp->rope_sections[0] && !hp->rope_sections[1]) { /* converter default */
      hp->rope_sections[0] = 11;
      hp->rope_sections[1] = 11;
      hp->rope_sections[2] = 10;
    }
  }
  hp->n_rot = (int)(hp->head_dim_k * partial);
  bool tied = false;
  if ((rc = hx_json_get_bool(c, "tie_word_embeddings", false, &tied, err)) ||
      (rc = hx_json_get_bool(root, "tie_word_embeddings", false, &tied, err)))
    return rc;
  hp->tied_embeddings = tied;
  hp->attn_qkv_bias = hp->arch == MODEL_ARCH_QWEN2;
  if (model_arch_is_moe(hp->arch)) {
    /* Hub configs say num_experts; transformers >= 5 writes num_local_experts */
    if ((rc = ji(c, "num_local_experts", false, &hp->n_expert, err)) ||
        (rc = ji(c, "num_experts", !hp->n_expert, &hp->n_expert, err)) ||
        (rc = ji(c, "num_experts_per_tok", true, &hp->n_expert_used, err)) ||
        (rc = ji(c, "moe_intermediate_size", true, &hp->n_ff_exp, err)) ||
        (rc = ji(c, "shared_expert_intermediate_size", false, &hp->n_ff_shexp, err)) ||
        (rc = hx_json_get_bool(c, "norm_topk_prob", false, &hp->expert_weights_norm, err)))
      return rc;
    /* dense layers: decoder_sparse_step (default 1) and mlp_only_layers (default none) */
    int step = 1;
    if ((rc = ji(c, "decoder_sparse_step", false, &step, err)))
      return rc;
    if (step < 1)
      return hx_err_set(err, HX_EFORMAT, "decoder_sparse_step %d must be >= 1", step);
    for (int l = 0; l < hp->n_layer && l < MODEL_MAX_LAYERS; l++)
      hp->layer_dense_ffn[l] = (l + 1) % step != 0;
    const json_t *mo = json_object_get(c, "mlp_only_layers");
    if (mo && !json_is_null(mo) && !json_is_array(mo))
      return hx_err_set(err, HX_EFORMAT, "mlp_only_layers must be an array of layer indices");
    for (size_t i = 0; json_is_array(mo) && i < json_array_size(mo); i++) {
      const json_t *v = json_array_get(mo, i);
      if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= hp->n_layer)
        return hx_err_set(err, HX_EFORMAT, "mlp_only_layers[%zu] is not a layer index (0..%d)", i,
                          hp->n_layer - 1);
      hp->layer_dense_ffn[json_integer_value(v)] = true;
    }
  }
  if (model_arch_is_hybrid(hp->arch)) {
    hp->attn_output_gate = true;
    hp->full_attention_interval = 4;
    hp->ssm_d_conv = 4;
    if ((rc = ji(c, "full_attention_interval", false, &hp->full_attention_interval, err)) ||
        (rc = ji(c, "linear_conv_kernel_dim", false, &hp->ssm_d_conv, err)) ||
        (rc = ji(c, "linear_key_head_dim", true, &hp->ssm_d_state, err)) ||
        (rc = ji(c, "linear_num_key_heads", true, &hp->ssm_n_group, err)) ||
        (rc = ji(c, "linear_num_value_heads", true, &hp->ssm_dt_rank, err)) ||
        (rc = ji(c, "linear_value_head_dim", true, &hp->ssm_head_v_dim, err)))
      return rc;
    hp->ssm_d_inner = hp->ssm_head_v_dim * hp->ssm_dt_rank;
  }
  set_layer_kinds(hp);
  json_t *lt = json_object_get(c, "layer_types");
  if (json_is_array(lt)) {
    if ((int)json_array_size(lt) < hp->n_layer)
      return hx_err_set(err, HX_EFORMAT, "layer_types has %zu entries for %d layers",
                        json_array_size(lt), hp->n_layer);
    for (int i = 0; i < hp->n_layer && i < MODEL_MAX_LAYERS; i++) {
      const char *k = json_string_value(json_array_get(lt, (size_t)i));
      if (!k || (strcmp(k, "linear_attention") && strcmp(k, "full_attention")))
        return hx_err_set(err, HX_EFORMAT,
                          "layer_types[%d] must be \"linear_attention\" or "
                          "\"full_attention\"",
                          i);
      hp->layer_recurrent[i] = model_arch_is_hybrid(hp->arch) && !strcmp(k, "linear_attention");
    }
  }
  hp->bos_token_id = token_id(json_object_get(c, "bos_token_id"));
  hp->eos_token_id = token_id(json_object_get(c, "eos_token_id"));
  if (hp->eos_token_id < 0)
    hp->eos_token_id = token_id(json_object_get(root, "eos_token_id"));
  return HX_OK;
}

hx_code model_hparams_from_hf_config(const char *text, size_t len, const char *src,
                                     model_hparams *hp, hx_err *err) {
  memset(hp, 0, sizeof *hp);
  hp->rms_eps = 1e-6f;
  hp->rope_freq_base = 10000.f;
  hp->expert_weights_norm = true;
  hx_json_limits lim = {.max_bytes = 4 << 20, .max_depth = 16};
  json_t *root = hx_json_parse(text, len, lim, err);
  if (!root)
    return hx_err_wrap(err, "%s", src);
  hx_code rc = HX_OK;
  const char *mt = json_string_value(json_object_get(root, "model_type"));
  const json_t *c = root;
  json_t *tc = json_object_get(root, "text_config");
  if (json_is_object(tc)) {
    c = tc;
    if (!mt)
      mt = json_string_value(json_object_get(tc, "model_type"));
  }
  if (!json_is_object(root))
    rc = hx_err_set(err, HX_EFORMAT, "%s: not a JSON object", src);
  else if (!mt || !model_arch_from_hf(mt, &hp->arch))
    rc = hx_err_set(err, HX_EUNSUPPORTED,
                    "%s: unsupported model_type \"%s\" (supported: qwen2, qwen3, qwen3_moe, "
                    "qwen3_next, qwen3_5, qwen3_5_moe)",
                    src, mt ? mt : "(missing)");
  else if ((rc = hf_fill(root, c, hp, err)))
    hx_err_wrap(err, "%s", src);
  else
    rc = model_hparams_validate(hp, src, err);
  json_decref(root);
  return rc;
}

/* --- GGUF writing ---------------------------------------------------------- */

#include "engine/gguf_writer.h"

hx_code model_hparams_write_gguf(const model_hparams *hp, gguf_writer *w) {
  const char *a = model_arch_name(hp->arch);
  char k[160];
  hx_code rc = gguf_writer_set_str(w, "general.architecture", a, strlen(a));
#define U32(suffix, v)                                                                             \
  do {                                                                                             \
    snprintf(k, sizeof k, "%s.%s", a, suffix);                                                     \
    if (!rc)                                                                                       \
      rc = gguf_writer_set_u32(w, k, (uint32_t)(v));                                               \
  } while (0)
#define F32(suffix, v)                                                                             \
  do {                                                                                             \
    snprintf(k, sizeof k, "%s.%s", a, suffix);                                                     \
    if (!rc)                                                                                       \
      rc = gguf_writer_set_f32(w, k, (float)(v));                                                  \
  } while (0)
  if (!rc)
    rc = gguf_writer_set_u32(w, "general.quantization_version", 2);
  U32("block_count", hp->n_layer);
  U32("context_length", hp->n_ctx_train ? hp->n_ctx_train : 4096);
  U32("embedding_length", hp->n_embd);
  if (hp->n_ff)
    U32("feed_forward_length", hp->n_ff);
  U32("attention.head_count", hp->n_head);
  U32("attention.head_count_kv", hp->n_head_kv);
  U32("attention.key_length", hp->head_dim_k);
  U32("attention.value_length", hp->head_dim_v);
  F32("attention.layer_norm_rms_epsilon", hp->rms_eps);
  F32("rope.freq_base", hp->rope_freq_base);
  if (hp->n_rot != hp->head_dim_k)
    U32("rope.dimension_count", hp->n_rot);
  if (hp->arch == MODEL_ARCH_QWEN35 || hp->arch == MODEL_ARCH_QWEN35MOE) {
    int32_t sec[4] = {hp->rope_sections[0], hp->rope_sections[1], hp->rope_sections[2],
                      hp->rope_sections[3]};
    snprintf(k, sizeof k, "%s.rope.dimension_sections", a);
    if (!rc)
      rc = gguf_writer_set_arr(w, k, GGUF_TYPE_INT32, sec, 4);
  }
  if (hp->rope_scaling != MODEL_ROPE_SCALING_NONE) {
    const char *t = hp->rope_scaling == MODEL_ROPE_SCALING_YARN ? "yarn" : "linear";
    snprintf(k, sizeof k, "%s.rope.scaling.type", a);
    if (!rc)
      rc = gguf_writer_set_str(w, k, t, strlen(t));
    F32("rope.scaling.factor", hp->rope_scaling_factor);
    if (hp->rope_scaling_orig_ctx)
      U32("rope.scaling.original_context_length", hp->rope_scaling_orig_ctx);
  }
  if (model_arch_is_moe(hp->arch)) {
    U32("expert_count", hp->n_expert);
    U32("expert_used_count", hp->n_expert_used);
    U32("expert_feed_forward_length", hp->n_ff_exp);
    if (hp->n_ff_shexp)
      U32("expert_shared_feed_forward_length", hp->n_ff_shexp);
    snprintf(k, sizeof k, "%s.expert_weights_norm", a);
    if (!rc)
      rc = gguf_writer_set_bool(w, k, hp->expert_weights_norm);
  }
  if (model_arch_is_hybrid(hp->arch)) {
    U32("ssm.conv_kernel", hp->ssm_d_conv);
    U32("ssm.state_size", hp->ssm_d_state);
    U32("ssm.group_count", hp->ssm_n_group);
    U32("ssm.time_step_rank", hp->ssm_dt_rank);
    U32("ssm.inner_size", hp->ssm_d_inner);
    U32("full_attention_interval", hp->full_attention_interval);
  }
#undef U32
#undef F32
  return rc;
}
