/* model_file.h — one validated description of a model checkpoint.
 *
 * Opens either a GGUF file (llama.cpp conventions) or an HF directory
 * (config.json + safetensors), and presents both the same way:
 *   - one hyper-parameter struct (model_hparams) for the arches qwen2, qwen3,
 *     qwen3moe, qwen3next, qwen35, qwen35moe;
 *   - tensors under their canonical GGUF names ("token_embd.weight",
 *     "blk.7.attn_q.weight", "output_norm.weight", ...) in GGUF layout
 *     (ne[0] = row length = input features, ne[1] = output rows, ne[2] =
 *     experts for *_exps).
 *
 * Canonical *contents* are those of a llama.cpp GGUF, so the engine has one
 * code path. For HF input the converter transforms are applied here, in one
 * place (model_file.c, hf_transform_*):
 *   - zero-centred RMSNorm weights (qwen3next, qwen35*: every *norm.weight
 *     except the DeltaNet gated norm `ssm_norm`) are stored as 1 + w, so the
 *     engine always computes x * w;
 *   - ssm_a = -exp(A_log);  ssm_dt.bias = dt_bias;  ssm_conv1d squeezed to
 *     ne = {d_conv, channels};
 *   - qwen3next: in_proj_qkvz regrouped into attn_qkv ([q all heads | k all |
 *     v all]) and attn_gate (z); in_proj_ba kept as ssm_ba;
 *   - qwen35*: V heads reordered from grouped-by-K-head to tiled order in
 *     attn_qkv (V rows), attn_gate, ssm_alpha, ssm_beta, ssm_a, ssm_dt,
 *     ssm_conv1d (V channels) and ssm_out (columns), when n_k_heads != n_v_heads;
 *   - MoE experts stacked into 3-D *_exps tensors (per-expert HF tensors or
 *     fused gate_up_proj); a GGUF's optional fused ffn_gate_up_exps is split
 *     into ffn_gate_exps / ffn_up_exps (owned copies).
 * Mapped data is at least 8-byte aligned (misaligned tensors are copied).
 * Tensors that needed no transform point into the mapping (bf16/f16/f32 from
 * safetensors keep their dtype); transformed ones are owned f32 buffers unless
 * in-situ quantization turned them into quantized owned buffers.
 *
 * In-situ quantization (opts.quant): a bf16/f16/f32 checkpoint is quantized
 * at open, multi-threaded on opts.pool. Policy for MODEL_QUANT_Q4_K_M mirrors
 * llama.cpp's: Q6_K for output.weight (or token_embd when tied) and for the
 * use_more_bits layers of attn_v and ffn_down; Q4_K elsewhere; 1-D tensors
 * (norms, biases, ssm_a, ssm_dt, conv1d) stay f32; a 2-D tensor whose row
 * length is not a multiple of 256 falls back to Q8_0 (or f16 when not a
 * multiple of 32). Already-quantized GGUF tensors are kept as they are.
 *
 * Thread-safety: after open, a model_file is immutable; concurrent readers ok. */
#ifndef HX_ENGINE_MODEL_FILE_H
#define HX_ENGINE_MODEL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/pool.h"
#include "base/status.h"
#include "engine/gguf.h"
#include "engine/quant.h"

enum {
  MODEL_MAX_LAYERS = 256,
  MODEL_NAME_MAX = 96, /* longest canonical tensor name + NUL */
};

typedef enum model_arch {
  MODEL_ARCH_QWEN2,
  MODEL_ARCH_QWEN3,
  MODEL_ARCH_QWEN3MOE,
  MODEL_ARCH_QWEN3NEXT,
  MODEL_ARCH_QWEN35,
  MODEL_ARCH_QWEN35MOE,
  MODEL_ARCH_COUNT
} model_arch;

/* GGUF arch string ("qwen3moe"); never NULL. */
const char *model_arch_name(model_arch a);
/* From a GGUF arch string. */
bool model_arch_parse(const char *name, model_arch *out);
/* From an HF config "model_type" ("qwen3", "qwen3_moe", "qwen3_next",
 * "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "qwen2"). */
bool model_arch_from_hf(const char *model_type, model_arch *out);
bool model_arch_is_moe(model_arch a);    /* qwen3moe, qwen3next, qwen35moe */
bool model_arch_is_hybrid(model_arch a); /* qwen3next, qwen35, qwen35moe (DeltaNet layers) */

typedef enum model_rope_scaling {
  MODEL_ROPE_SCALING_NONE,
  MODEL_ROPE_SCALING_LINEAR,
  MODEL_ROPE_SCALING_YARN,
} model_rope_scaling;

/* Hyper-parameters. Counts are > 0 unless stated; fields that an arch does
 * not use are 0. */
typedef struct model_hparams {
  model_arch arch;
  int n_layer;     /* transformer blocks (MTP layers excluded) */
  int n_embd;      /* hidden size */
  int n_vocab;     /* rows of token_embd */
  int n_ctx_train; /* max_position_embeddings / context_length */
  int n_head;      /* query heads */
  int n_head_kv;   /* key/value heads (GQA) */
  int head_dim_k;  /* key_length: per-head q/k dim (qwen3: 128 explicit) */
  int head_dim_v;  /* value_length */
  int n_ff;        /* dense FFN width (0 for pure-MoE layers' arches) */
  float rms_eps;   /* RMSNorm epsilon */
  float rope_freq_base;
  int n_rot;            /* rotary dims per head (partial rotary: qwen3next/35 = head_dim/4) */
  int rope_sections[4]; /* qwen35 interleaved M-RoPE sections; zeros otherwise */
  model_rope_scaling rope_scaling;
  float rope_scaling_factor; /* 0 when none */
  int rope_scaling_orig_ctx; /* yarn original_max_position_embeddings; 0 when none */
  bool tied_embeddings;      /* no output.weight: logits use token_embd */
  bool attn_qkv_bias;        /* qwen2: q/k/v projections have biases */
  bool attn_output_gate;     /* qwen3next/35: full-attention q proj also yields a sigmoid gate */
  /* MoE */
  int n_expert;             /* routed experts */
  int n_expert_used;        /* top-k */
  int n_ff_exp;             /* per-expert FFN width (moe_intermediate_size) */
  int n_ff_shexp;           /* shared expert width; 0 = no shared expert */
  bool expert_weights_norm; /* norm_topk_prob: renormalize top-k weights */
  /* hybrid DeltaNet (qwen3next, qwen35*) */
  int full_attention_interval; /* every k-th layer (k-1, 2k-1, ...) is full attention */
  int ssm_d_conv;              /* linear_conv_kernel_dim (4) */
  int ssm_d_state;             /* linear_key_head_dim: per-head k dim (128) */
  int ssm_n_group;             /* linear_num_key_heads */
  int ssm_dt_rank;             /* linear_num_value_heads */
  int ssm_d_inner;             /* linear_value_head_dim * linear_num_value_heads */
  int ssm_head_v_dim;          /* linear_value_head_dim */
  /* per layer: true = DeltaNet (linear attention), false = full attention */
  bool layer_recurrent[MODEL_MAX_LAYERS];
  /* MoE arches, per layer: true = a dense FFN of width n_ff (ffn_gate/up/down)
   * instead of experts. HF: the layer is in mlp_only_layers or (l + 1) %
   * decoder_sparse_step != 0. GGUF (no key for it): the layer has
   * ffn_gate.weight and no ffn_gate_inp.weight. All false for real releases. */
  bool layer_dense_ffn[MODEL_MAX_LAYERS];
  /* token ids from the checkpoint (-1 when unknown) */
  int bos_token_id, eos_token_id;
} model_hparams;

/* Checks internal consistency (head counts divide, dims > 0, layers within
 * MODEL_MAX_LAYERS, arch-specific fields present). Message names the field. */
hx_code model_hparams_validate(const model_hparams *hp, const char *source, hx_err *err);

typedef enum model_quant {
  MODEL_QUANT_NONE, /* keep the stored types */
  MODEL_QUANT_F32,
  MODEL_QUANT_F16,
  MODEL_QUANT_BF16,
  MODEL_QUANT_Q8_0,
  MODEL_QUANT_Q6_K,
  MODEL_QUANT_Q5_K,
  MODEL_QUANT_Q4_K,
  MODEL_QUANT_Q4_K_M,
} model_quant;

/* "Q4_K_M", "q8_0", ... (case-insensitive); "none". */
bool model_quant_parse(const char *s, model_quant *out);
const char *model_quant_name(model_quant q);
/* The type the policy picks for one tensor (canonical name, GGUF shape).
 * MODEL_QUANT_NONE, or a stored type that is already quantized, returns
 * `stored`. n_layer is needed for use_more_bits (layer index from the name). */
quant_type model_quant_pick(model_quant q, const char *name, int n_dims, const int64_t *ne,
                            quant_type stored, int n_layer, bool tied_embeddings);

typedef struct model_file_opts {
  model_quant quant; /* in-situ quantization; MODEL_QUANT_NONE = as stored */
  hx_pool *pool;     /* threads for conversion/quantization; NULL = caller only */
  bool fast_quant;   /* use quant_row_quantize_fast (synth/bench), not the reference search */
} model_file_opts;

/* One tensor in canonical form. */
typedef struct model_tensor {
  char name[MODEL_NAME_MAX]; /* canonical GGUF name */
  quant_type type;
  int n_dims;
  int64_t ne[4];    /* GGUF order; unused dims 1 */
  const void *data; /* mapping or owned buffer; valid until model_file_close */
  size_t nbytes;
  bool owned; /* converted/quantized at open (not mmapped) */
} model_tensor;

typedef struct model_file model_file;

/* path: a .gguf file or an HF directory (config.json + *.safetensors).
 * Validates everything: hparams, every expected tensor present with the
 * expected shape for the arch, no unknown tensors silently dropped (unknown
 * HF tensors such as mtp.* or vision tower are skipped with a count). */
hx_code model_file_open(const char *path, const model_file_opts *opts, model_file **out,
                        hx_err *err);
void model_file_close(model_file *mf); /* mf may be NULL */

const model_hparams *model_file_hparams(const model_file *mf);
const char *model_file_path(const model_file *mf);
/* The GGUF file when the model came from one (tokenizer.ggml.* metadata,
 * tokenizer.chat_template), else NULL. */
const gguf_file *model_file_gguf(const model_file *mf);
/* HF directory when the model came from one (tokenizer.json lives there), else NULL. */
const char *model_file_hf_dir(const model_file *mf);

size_t model_file_tensor_count(const model_file *mf);
const model_tensor *model_file_tensor_at(const model_file *mf, size_t i);
/* Tensor by canonical name; NULL when absent. */
const model_tensor *model_file_tensor(const model_file *mf, const char *name);
/* "blk.<layer>.<suffix>" e.g. model_file_layer_tensor(mf, 3, "attn_q.weight"). */
const model_tensor *model_file_layer_tensor(const model_file *mf, int layer, const char *suffix);

/* Sum of tensor bytes as loaded. */
size_t model_file_weight_bytes(const model_file *mf);
/* What one token costs in weights, as held: bytes a decode step reads — every
 * tensor of the trunk, except that the token embedding gives one row (all of
 * it when tied as the output head), routed-expert tensors (`*_exps`) give
 * their top-k share (n_expert_used / n_expert: any k experts read that much
 * on average) and layers past n_layer (MTP) nothing — and the multiply-adds
 * of the layers' matrices (blk.*, same shares; the output head aside, which
 * a prompt needs for its last token only). The numerators of the limits. */
typedef struct model_token_cost {
  uint64_t weight_bytes; /* read per decode token */
  uint64_t layer_macs;   /* multiply-adds per token in blk.* */
} model_token_cost;
model_token_cost model_file_token_cost(const model_file *mf);

typedef struct model_memory_estimate {
  size_t weights_bytes;
  size_t kv_cache_bytes;  /* full-attention layers: 2 * n_ctx * n_head_kv * head_dim * elt */
  size_t recurrent_bytes; /* DeltaNet conv + state per sequence */
  size_t scratch_bytes;   /* activations/logits rough bound for one sequence */
  size_t total_bytes;
} model_memory_estimate;

/* kv_elem_bytes: 2 for f16/bf16 caches. One sequence. */
model_memory_estimate model_file_memory_estimate(const model_file *mf, int n_ctx,
                                                 size_t kv_elem_bytes);

/* --- tensor names (tensor_names.c) ----------------------------------------- */

/* One tensor an arch needs, with its GGUF shape. */
typedef struct model_tensor_spec {
  char name[MODEL_NAME_MAX];
  int n_dims;
  int64_t ne[4];
} model_tensor_spec;

/* Writes up to max specs of every tensor hp's arch needs (file order of
 * llama.cpp's converter: token_embd, output_norm, output, then per layer);
 * returns the total count (call with out = NULL to size). */
size_t model_tensor_specs(const model_hparams *hp, model_tensor_spec *out, size_t max);

/* Strips HF container prefixes ("model.language_model.", "model.", ...);
 * NULL for tensors not loaded (mtp.*, vision tower). */
const char *model_hf_strip_prefix(const char *hf_name);

/* Maps an HF tensor name to its canonical GGUF name (simple renames only:
 * returns false for names that need a transform handled elsewhere, such as
 * in_proj_qkvz or per-expert tensors, and for unknown names). */
bool model_tensor_name_from_hf(model_arch arch, const char *hf_name, char *out, size_t out_size);

/* Parses HF config.json text into hp (handles text_config nesting). */
hx_code model_hparams_from_hf_config(const char *json_text, size_t len, const char *source,
                                     model_hparams *hp, hx_err *err);
/* Reads hp from GGUF metadata ("<arch>.block_count", ...). */
hx_code model_hparams_from_gguf(const gguf_file *f, model_hparams *hp, hx_err *err);
/* Writes general.architecture and the "<arch>.*" keys llama.cpp reads. */
struct gguf_writer;
hx_code model_hparams_write_gguf(const model_hparams *hp, struct gguf_writer *w);

#endif
