/* cmd_model.c — `neuron inspect`, `neuron convert`, `neuron synth`: the
 * model-file tools. inspect describes a GGUF file or HF directory (text or a
 * stable JSON document, see docs/model-files.md); convert writes GGUF v3 with
 * the metadata llama.cpp reads; synth writes a random-weight model of a real
 * shape, quickly, for benchmarks and demos. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/pool.h"
#include "base/time.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/model_file.h"
#include "engine/quant.h"
#include "neuron/commands.h"

/* --- presets (HF config.json of the real models) ---------------------------- */

typedef struct {
  const char *name;
  const char *config;
} preset;

#define QWEN3_DENSE(hidden, layers, heads, kv, inter, tied)                                        \
  "{\"model_type\":\"qwen3\",\"hidden_size\":" #hidden ",\"num_hidden_layers\":" #layers           \
  ",\"num_attention_heads\":" #heads ",\"num_key_value_heads\":" #kv ",\"head_dim\":128,"          \
  "\"intermediate_size\":" #inter ",\"vocab_size\":151936,\"max_position_embeddings\":40960,"      \
  "\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,\"tie_word_embeddings\":" #tied                    \
  ",\"bos_token_id\":151643,\"eos_token_id\":151645}"

static const preset presets[] = {
    {"qwen3-0.6b", QWEN3_DENSE(1024, 28, 16, 8, 3072, true)},
    {"qwen3-1.7b", QWEN3_DENSE(2048, 28, 16, 8, 6144, true)},
    {"qwen3-4b", QWEN3_DENSE(2560, 36, 32, 8, 9728, true)},
    {"qwen3-8b", QWEN3_DENSE(4096, 36, 32, 8, 12288, false)},
    {"qwen3-14b", QWEN3_DENSE(5120, 40, 40, 8, 17408, false)},
    {"qwen3-32b", QWEN3_DENSE(5120, 64, 64, 8, 25600, false)},
    {"qwen3-30b-a3b",
     "{\"model_type\":\"qwen3_moe\",\"hidden_size\":2048,\"num_hidden_layers\":48,"
     "\"num_attention_heads\":32,\"num_key_value_heads\":4,\"head_dim\":128,"
     "\"intermediate_size\":6144,\"moe_intermediate_size\":768,\"num_experts\":128,"
     "\"num_experts_per_tok\":8,\"norm_topk_prob\":true,\"vocab_size\":151936,"
     "\"max_position_embeddings\":40960,\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,"
     "\"tie_word_embeddings\":false,\"bos_token_id\":151643,\"eos_token_id\":151645}"},
    {"qwen3.5-27b",
     "{\"model_type\":\"qwen3_5\",\"text_config\":{\"model_type\":\"qwen3_5_text\","
     "\"hidden_size\":5120,\"num_hidden_layers\":64,\"num_attention_heads\":24,"
     "\"num_key_value_heads\":4,\"head_dim\":256,\"intermediate_size\":17408,"
     "\"vocab_size\":248320,\"max_position_embeddings\":262144,\"rms_norm_eps\":1e-6,"
     "\"full_attention_interval\":4,\"linear_conv_kernel_dim\":4,\"linear_key_head_dim\":128,"
     "\"linear_num_key_heads\":16,\"linear_num_value_heads\":48,\"linear_value_head_dim\":128,"
     "\"partial_rotary_factor\":0.25,\"rope_parameters\":{\"rope_type\":\"default\","
     "\"rope_theta\":10000000,\"partial_rotary_factor\":0.25,\"mrope_section\":[11,11,10]},"
     "\"tie_word_embeddings\":false,\"eos_token_id\":248044}}"},
    {"qwen3.5-35b-a3b",
     "{\"model_type\":\"qwen3_5_moe\",\"text_config\":{\"model_type\":\"qwen3_5_moe_text\","
     "\"hidden_size\":2048,\"num_hidden_layers\":40,\"num_attention_heads\":16,"
     "\"num_key_value_heads\":2,\"head_dim\":256,\"moe_intermediate_size\":512,"
     "\"shared_expert_intermediate_size\":512,\"num_experts\":256,\"num_experts_per_tok\":8,"
     "\"vocab_size\":248320,\"max_position_embeddings\":262144,\"rms_norm_eps\":1e-6,"
     "\"full_attention_interval\":4,\"linear_conv_kernel_dim\":4,\"linear_key_head_dim\":128,"
     "\"linear_num_key_heads\":16,\"linear_num_value_heads\":32,\"linear_value_head_dim\":128,"
     "\"partial_rotary_factor\":0.25,\"rope_parameters\":{\"rope_type\":\"default\","
     "\"rope_theta\":10000000,\"partial_rotary_factor\":0.25,\"mrope_section\":[11,11,10]},"
     "\"tie_word_embeddings\":false,\"eos_token_id\":248044}}"},
    /* tiny shapes of every arch, for tests and quick demos */
    {"tiny-qwen2", "{\"model_type\":\"qwen2\",\"hidden_size\":256,\"num_hidden_layers\":2,"
                   "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"intermediate_size\":512,"
                   "\"vocab_size\":512,\"max_position_embeddings\":4096,\"rope_theta\":1000000,"
                   "\"tie_word_embeddings\":true}"},
    {"tiny-qwen3", QWEN3_DENSE(256, 2, 4, 2, 512, true)},
    {"tiny-qwen3moe", "{\"model_type\":\"qwen3_moe\",\"hidden_size\":256,\"num_hidden_layers\":2,"
                      "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":64,"
                      "\"moe_intermediate_size\":256,\"num_experts\":8,\"num_experts_per_tok\":2,"
                      "\"vocab_size\":512,\"rope_theta\":1000000}"},
    {"tiny-qwen3next",
     "{\"model_type\":\"qwen3_next\",\"hidden_size\":256,\"num_hidden_layers\":4,"
     "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":64,"
     "\"moe_intermediate_size\":256,\"shared_expert_intermediate_size\":256,\"num_experts\":8,"
     "\"num_experts_per_tok\":2,\"vocab_size\":512,\"rope_theta\":10000000,"
     "\"full_attention_interval\":4,\"linear_conv_kernel_dim\":4,\"linear_key_head_dim\":32,"
     "\"linear_num_key_heads\":2,\"linear_num_value_heads\":4,\"linear_value_head_dim\":32}"},
    {"tiny-qwen35",
     "{\"model_type\":\"qwen3_5\",\"text_config\":{\"hidden_size\":256,\"num_hidden_layers\":4,"
     "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":64,"
     "\"intermediate_size\":512,\"vocab_size\":512,\"full_attention_interval\":4,"
     "\"linear_conv_kernel_dim\":4,\"linear_key_head_dim\":32,\"linear_num_key_heads\":2,"
     "\"linear_num_value_heads\":4,\"linear_value_head_dim\":32,"
     "\"rope_parameters\":{\"rope_theta\":10000000,\"mrope_section\":[11,11,10]}}}"},
    {"tiny-qwen35moe",
     "{\"model_type\":\"qwen3_5_moe\",\"text_config\":{\"hidden_size\":256,"
     "\"num_hidden_layers\":4,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
     "\"head_dim\":64,\"moe_intermediate_size\":256,\"shared_expert_intermediate_size\":256,"
     "\"num_experts\":8,\"num_experts_per_tok\":2,\"vocab_size\":512,"
     "\"full_attention_interval\":4,\"linear_conv_kernel_dim\":4,\"linear_key_head_dim\":32,"
     "\"linear_num_key_heads\":2,\"linear_num_value_heads\":4,\"linear_value_head_dim\":32,"
     "\"rope_parameters\":{\"rope_theta\":10000000,\"mrope_section\":[11,11,10]}}}"},
};

static char *read_all(const char *path, size_t max, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return NULL;
  hx_buf b;
  hx_buf_init(&b, max);
  char tmp[65536];
  size_t k;
  hx_code rc = HX_OK;
  while (!rc && (k = fread(tmp, 1, sizeof tmp, fp)) > 0)
    rc = hx_buf_append(&b, tmp, k);
  fclose(fp);
  if (rc) {
    hx_buf_free(&b);
    return NULL;
  }
  *len = b.len;
  return b.data ? hx_buf_detach(&b) : strdup("");
}

/* --- tokenizer.json -> tokenizer.ggml.* -------------------------------------- */

static json_t *load_json(const char *path, size_t max, hx_err *err) {
  size_t len;
  char *text = read_all(path, max, &len);
  if (!text) {
    hx_err_set(err, HX_EIO, "%s: cannot read (missing or larger than %zu bytes)", path, max);
    return NULL;
  }
  hx_json_limits lim = {.max_bytes = max, .max_depth = 32};
  json_t *j = hx_json_parse(text, len, lim, err);
  free(text);
  if (!j)
    hx_err_wrap(err, "%s", path);
  return j;
}

static int vocab_id(json_t *vocab, json_t *added, const char *tok) {
  json_t *v = json_object_get(vocab, tok);
  if (json_is_integer(v))
    return (int)json_integer_value(v);
  size_t i;
  json_t *a;
  json_array_foreach(added, i, a) {
    const char *c = json_string_value(json_object_get(a, "content"));
    if (c && strcmp(c, tok) == 0)
      return (int)json_integer_value(json_object_get(a, "id"));
  }
  return -1;
}

static const char *token_str(json_t *v) {
  if (json_is_object(v))
    v = json_object_get(v, "content");
  return json_string_value(v);
}

/* Writes the byte-level BPE vocabulary of tokenizer.json (and, from a
 * tokenizer_config.json next to it, special ids and the chat template). */
static hx_code write_tokenizer(gguf_writer *w, const char *tok_path, int n_vocab, model_arch arch,
                               hx_err *err) {
  json_t *tj = load_json(tok_path, 64 << 20, err);
  if (!tj)
    return err ? err->code : HX_EIO;
  hx_code rc = HX_OK;
  json_t *model = json_object_get(tj, "model");
  json_t *vocab = json_object_get(model, "vocab");
  json_t *merges = json_object_get(model, "merges");
  json_t *added = json_object_get(tj, "added_tokens");
  const char *mtype = json_string_value(json_object_get(model, "type"));
  if (!json_is_object(vocab) || !json_is_array(merges) || !mtype || strcmp(mtype, "BPE") != 0) {
    json_decref(tj);
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: not a BPE tokenizer.json", tok_path);
  }
  const char **toks = calloc((size_t)n_vocab, sizeof *toks);
  int32_t *types = calloc((size_t)n_vocab, sizeof *types);
  char **pads = calloc((size_t)n_vocab, sizeof *pads);
  if (!toks || !types || !pads)
    rc = hx_err_set(err, HX_ENOMEM, "out of memory");
  const char *key;
  json_t *v;
  json_object_foreach(vocab, key, v) {
    json_int_t id = json_integer_value(v);
    if (rc)
      break;
    if (!json_is_integer(v) || id < 0 || id >= n_vocab)
      rc = hx_err_set(err, HX_EFORMAT, "%s: token id %lld out of the model's vocab of %d", tok_path,
                      (long long)id, n_vocab);
    else {
      toks[id] = key;
      types[id] = 1; /* NORMAL */
    }
  }
  size_t i;
  json_array_foreach(added, i, v) {
    json_int_t id = json_integer_value(json_object_get(v, "id"));
    const char *c = json_string_value(json_object_get(v, "content"));
    if (rc)
      break;
    if (!c || id < 0 || id >= n_vocab) {
      rc = hx_err_set(err, HX_EFORMAT, "%s: added token %zu out of range", tok_path, i);
      break;
    }
    toks[id] = c;
    types[id] = json_is_true(json_object_get(v, "special")) ? 3 /* CONTROL */ : 4 /* USER */;
  }
  for (int id = 0; !rc && id < n_vocab; id++)
    if (!toks[id]) {
      pads[id] = malloc(24);
      if (!pads[id]) {
        rc = hx_err_set(err, HX_ENOMEM, "out of memory");
        break;
      }
      snprintf(pads[id], 24, "[PAD%d]", id);
      toks[id] = pads[id];
      types[id] = 5; /* UNUSED */
    }
  size_t n_merges = json_array_size(merges);
  char **mstr = calloc(n_merges ? n_merges : 1, sizeof *mstr);
  if (!rc && !mstr)
    rc = hx_err_set(err, HX_ENOMEM, "out of memory");
  for (i = 0; !rc && i < n_merges; i++) {
    json_t *m = json_array_get(merges, i);
    if (json_is_string(m)) {
      mstr[i] = strdup(json_string_value(m));
    } else if (json_is_array(m) && json_array_size(m) == 2 &&
               json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
      const char *a = json_string_value(json_array_get(m, 0));
      const char *b = json_string_value(json_array_get(m, 1));
      size_t n = strlen(a) + strlen(b) + 2;
      mstr[i] = malloc(n);
      if (mstr[i])
        snprintf(mstr[i], n, "%s %s", a, b);
    } else {
      rc = hx_err_set(err, HX_EFORMAT, "%s: merges[%zu] is malformed", tok_path, i);
      break;
    }
    if (!mstr[i])
      rc = hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  const char *pre = arch == MODEL_ARCH_QWEN35 || arch == MODEL_ARCH_QWEN35MOE ? "qwen35" : "qwen2";
  if (!rc)
    rc = gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4);
  if (!rc)
    rc = gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, strlen(pre));
  if (!rc)
    rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, (uint64_t)n_vocab);
  if (!rc)
    rc = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
                             (uint64_t)n_vocab);
  if (!rc)
    rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)mstr, NULL,
                                 n_merges);
  /* tokenizer_config.json beside tokenizer.json: special ids, chat template */
  char cfg_path[4096];
  const char *slash = strrchr(tok_path, '/');
  snprintf(cfg_path, sizeof cfg_path, "%.*stokenizer_config.json",
           slash ? (int)(slash - tok_path + 1) : 0, tok_path);
  json_t *tc = rc ? NULL : load_json(cfg_path, 16 << 20, NULL);
  if (tc) {
    static const struct {
      const char *cfg, *key;
    } ids[] = {{"eos_token", "tokenizer.ggml.eos_token_id"},
               {"pad_token", "tokenizer.ggml.padding_token_id"},
               {"bos_token", "tokenizer.ggml.bos_token_id"}};
    for (size_t k = 0; !rc && k < sizeof ids / sizeof ids[0]; k++) {
      const char *s = token_str(json_object_get(tc, ids[k].cfg));
      int id = s ? vocab_id(vocab, added, s) : -1;
      if (id >= 0)
        rc = gguf_writer_set_u32(w, ids[k].key, (uint32_t)id);
    }
    if (!rc)
      rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    const char *tmpl = json_string_value(json_object_get(tc, "chat_template"));
    if (!rc && tmpl)
      rc = gguf_writer_set_str(w, "tokenizer.chat_template", tmpl, strlen(tmpl));
    json_decref(tc);
  }
  if (!rc) { /* a chat_template.jinja file (newer HF layout) wins if present */
    snprintf(cfg_path, sizeof cfg_path, "%.*schat_template.jinja",
             slash ? (int)(slash - tok_path + 1) : 0, tok_path);
    size_t len;
    char *tmpl = read_all(cfg_path, 1 << 20, &len);
    if (tmpl) {
      rc = gguf_writer_set_str(w, "tokenizer.chat_template", tmpl, len);
      free(tmpl);
    }
  }
  for (i = 0; mstr && i < n_merges; i++)
    free(mstr[i]);
  free(mstr);
  for (int id = 0; pads && id < n_vocab; id++)
    free(pads[id]);
  free(pads);
  free(toks);
  free(types);
  json_decref(tj);
  if (rc && err && err->code == HX_OK)
    hx_err_set(err, rc, "%s: cannot write tokenizer metadata", tok_path);
  return rc;
}

/* --- synth ---------------------------------------------------------------------- */

typedef struct {
  uint64_t s;
} xorshift;

static uint64_t xs_next(xorshift *x) {
  x->s ^= x->s << 13;
  x->s ^= x->s >> 7;
  x->s ^= x->s << 17;
  return x->s;
}

/* Approximately normal (Irwin-Hall of 4 uniforms), unit variance. */
static float xs_normal(xorshift *x) {
  uint64_t r = xs_next(x);
  float s = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
            (float)(r >> 48);
  return (s / 65536.0f - 2.0f) * 1.7320508f;
}

enum { SYNTH_POOL_BLOCKS = 8192, SYNTH_CHUNK_BYTES = 8 << 20 };
#define SYNTH_STD 0.02f

/* One tensor's values for the float path. */
static float synth_value(const char *name, xorshift *x, int64_t i) {
  if (strstr(name, "norm.weight") && !strstr(name, "ssm_norm"))
    return 1.0f;
  if (strstr(name, "ssm_norm.weight"))
    return 1.0f;
  if (strstr(name, ".ssm_a"))
    return -(1.0f + (float)(i % 16)); /* -exp(A_log), A in [1, 16] */
  if (strstr(name, "ssm_dt.bias"))
    return -4.6f; /* softplus^-1 of ~0.01 */
  if (strstr(name, ".bias"))
    return 0.0f;
  if (strstr(name, "ssm_conv1d"))
    return 0.25f * xs_normal(x);
  return SYNTH_STD * xs_normal(x);
}

typedef struct {
  quant_type type;
  uint8_t *blocks; /* SYNTH_POOL_BLOCKS quantized blocks of N(0, 0.02) */
} block_pool;

static hx_code pool_build(block_pool *p, quant_type t, xorshift *x, hx_err *err) {
  size_t bs = quant_type_block_size(t), bb = quant_type_block_bytes(t);
  if (bs == 1) { /* float types: pool entries are runs of 256 values */
    bs = 256;
    bb *= 256;
  }
  size_t n = SYNTH_POOL_BLOCKS * bs;
  float *f = malloc(n * sizeof *f);
  p->blocks = malloc(SYNTH_POOL_BLOCKS * bb);
  if (!f || !p->blocks) {
    free(f);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++)
    f[i] = SYNTH_STD * xs_normal(x);
  quant_row_quantize(t, f, p->blocks, (int64_t)n);
  free(f);
  p->type = t;
  return HX_OK;
}

static hx_code synth_tensor(gguf_writer *w, const model_tensor_spec *s, quant_type t,
                            block_pool *pools, xorshift *x, uint8_t *chunk, hx_err *err) {
  int64_t n = s->ne[0] * s->ne[1] * s->ne[2] * s->ne[3];
  size_t bs = quant_type_block_size(t), bb = quant_type_block_bytes(t);
  size_t nblocks = (size_t)n / bs, per_chunk = SYNTH_CHUNK_BYTES / bb;
  bool floaty = t == QUANT_F32 || t == QUANT_F16 || t == QUANT_BF16;
  /* plain 2-D float weights: copy random runs of 256 values from a pool of
   * N(0, 0.02) values (the per-element path is for norms, ssm_*, biases) */
  bool pooled = !floaty || (s->n_dims >= 2 && !strstr(s->name, "ssm_conv1d"));
  if (floaty && pooled) {
    bs = 256;
    bb *= 256;
    nblocks = (size_t)n / 256;
    per_chunk = SYNTH_CHUNK_BYTES / bb;
    HX_ASSERT(n % 256 == 0);
  }
  block_pool *pool = NULL;
  if (pooled) {
    pool = &pools[t];
    if (!pool->blocks) {
      hx_code rc = pool_build(pool, t, x, err);
      if (rc)
        return rc;
    }
  }
  int64_t idx = 0;
  for (size_t b0 = 0; b0 < nblocks; b0 += per_chunk) {
    size_t nb = nblocks - b0 < per_chunk ? nblocks - b0 : per_chunk;
    for (size_t b = 0; b < nb; b++, idx++) {
      uint8_t *dst = chunk + b * bb;
      if (pooled) {
        memcpy(dst, pool->blocks + (xs_next(x) % SYNTH_POOL_BLOCKS) * bb, bb);
      } else if (t == QUANT_F32) {
        float v = synth_value(s->name, x, idx);
        memcpy(dst, &v, 4);
      } else if (t == QUANT_F16 || t == QUANT_BF16) {
        float v = synth_value(s->name, x, idx);
        uint16_t h = t == QUANT_F16 ? quant_f32_to_f16(v) : quant_f32_to_bf16(v);
        memcpy(dst, &h, 2);
      }
    }
    hx_code rc = gguf_writer_write_tensor(w, chunk, nb * bb, err);
    if (rc)
      return rc;
  }
  return HX_OK;
}

static const char *find_preset(const char *name) {
  for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
    if (strcasecmp(presets[i].name, name) == 0)
      return presets[i].config;
  return NULL;
}

static void synth_usage(FILE *f) {
  fprintf(f, "usage: neuron synth --shape PRESET|config.json --out FILE.gguf [--arch ARCH]\n"
             "                    [--quant Q4_K_M|Q4_K|Q5_K|Q6_K|Q8_0|BF16|F16|F32]\n"
             "                    [--tokenizer tokenizer.json] [--seed N] [--layers N]\n"
             "Writes a random-weight model (weights ~N(0, 0.02), norms 1) of a real shape.\n"
             "--layers N keeps the first N blocks of the shape (tensor shapes and layer\n"
             "kinds as in the full model; Q4_K_M's Q6_K layers follow the new depth, as\n"
             "llama.cpp's quantizer would): real layer shapes that fit a small machine.\n"
             "presets:");
  for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
    fprintf(f, " %s", presets[i].name);
  fprintf(f, "\n");
}

int neuron_cmd_synth(int argc, char **argv) {
  const char *shape = NULL, *out = NULL, *arch_s = NULL, *tok = NULL, *quant_s = "Q4_K_M";
  uint64_t seed = 42;
  long layers = 0; /* 0 = the shape's depth */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      synth_usage(stdout);
      return 0;
    } else if (v && !strcmp(a, "--shape"))
      shape = argv[++i];
    else if (v && !strcmp(a, "--out"))
      out = argv[++i];
    else if (v && !strcmp(a, "--arch"))
      arch_s = argv[++i];
    else if (v && !strcmp(a, "--quant"))
      quant_s = argv[++i];
    else if (v && !strcmp(a, "--tokenizer"))
      tok = argv[++i];
    else if (v && !strcmp(a, "--seed"))
      seed = strtoull(argv[++i], NULL, 10);
    else if (v && !strcmp(a, "--layers")) {
      char *end = NULL;
      errno = 0;
      layers = strtol(argv[++i], &end, 10);
      if (errno || end == argv[i] || *end || layers < 1 || layers > MODEL_MAX_LAYERS) {
        fprintf(stderr, "neuron synth: --layers \"%s\" is not a layer count (1..%d)\n", argv[i],
                MODEL_MAX_LAYERS);
        return 2;
      }
    } else {
      fprintf(stderr, "neuron synth: unknown or incomplete option \"%s\"\n", a);
      synth_usage(stderr);
      return 2;
    }
  }
  if (!shape || !out) {
    synth_usage(stderr);
    return 2;
  }
  model_quant q;
  if (!model_quant_parse(quant_s, &q) || q == MODEL_QUANT_NONE) {
    fprintf(stderr, "neuron synth: unknown --quant \"%s\"\n", quant_s);
    return 2;
  }
  hx_err e = {0};
  char *cfg_text = NULL;
  size_t cfg_len = 0;
  const char *cfg = find_preset(shape);
  if (cfg) {
    cfg_len = strlen(cfg);
  } else if (!(cfg_text = read_all(shape, 4 << 20, &cfg_len))) {
    fprintf(stderr, "neuron synth: \"%s\" is neither a preset nor a readable config.json\n", shape);
    synth_usage(stderr);
    return 2;
  }
  model_hparams hp;
  hx_code rc = model_hparams_from_hf_config(cfg ? cfg : cfg_text, cfg_len, shape, &hp, &e);
  free(cfg_text);
  if (rc) {
    fprintf(stderr, "neuron synth: %s\n", e.msg);
    return 1;
  }
  if (layers > hp.n_layer) {
    fprintf(stderr, "neuron synth: --layers %ld exceeds the shape's %d layers\n", layers,
            hp.n_layer);
    return 2;
  }
  if (layers > 0) {
    /* per-layer kinds (layer_recurrent, layer_dense_ffn) are indexed from 0,
     * so the first `layers` entries stay those of the full model */
    hp.n_layer = (int)layers;
    if ((rc = model_hparams_validate(&hp, shape, &e))) {
      fprintf(stderr, "neuron synth: --layers %ld: %s\n", layers, e.msg);
      return 2;
    }
  }
  model_arch want;
  if (arch_s && (!model_arch_parse(arch_s, &want) || want != hp.arch)) {
    fprintf(stderr, "neuron synth: --arch %s does not match the shape's arch %s\n", arch_s,
            model_arch_name(hp.arch));
    return 2;
  }
  int64_t t0 = hx_time_mono_ns();
  size_t n_specs = model_tensor_specs(&hp, NULL, 0);
  model_tensor_spec *specs = malloc(n_specs * sizeof *specs);
  quant_type *types = malloc(n_specs * sizeof *types);
  gguf_writer *w = gguf_writer_create(GGUF_DEFAULT_ALIGNMENT);
  uint8_t *chunk = malloc(SYNTH_CHUNK_BYTES + 4096);
  block_pool pools[QUANT_TYPE_COUNT] = {0};
  xorshift x = {seed * 0x9E3779B97F4A7C15ull + 1};
  if (!specs || !types || !w || !chunk) {
    rc = hx_err_set(&e, HX_ENOMEM, "out of memory");
    goto done;
  }
  model_tensor_specs(&hp, specs, n_specs);
  char name[128];
  snprintf(name, sizeof name, "helexa synth %s %s", shape, model_quant_name(q));
  if ((rc = model_hparams_write_gguf(&hp, w)) ||
      (rc = gguf_writer_set_str(w, "general.name", name, strlen(name))) ||
      (rc = gguf_writer_set_str(w, "general.type", "model", 5))) {
    hx_err_set(&e, rc, "cannot build metadata");
    goto done;
  }
  if (tok && (rc = write_tokenizer(w, tok, hp.n_vocab, hp.arch, &e)))
    goto done;
  size_t total = 0;
  for (size_t i = 0; i < n_specs; i++) {
    types[i] = model_quant_pick(q, specs[i].name, specs[i].n_dims, specs[i].ne, QUANT_F32,
                                hp.n_layer, hp.tied_embeddings);
    if ((rc = gguf_writer_add_tensor(w, specs[i].name, types[i], specs[i].n_dims, specs[i].ne, &e)))
      goto done;
    size_t rb;
    quant_row_bytes(types[i], specs[i].ne[0], &rb);
    total += rb * (size_t)(specs[i].ne[1] * specs[i].ne[2] * specs[i].ne[3]);
  }
  if ((rc = gguf_writer_open(w, out, &e)))
    goto done;
  for (size_t i = 0; i < n_specs && !rc; i++)
    rc = synth_tensor(w, &specs[i], types[i], pools, &x, chunk, &e);
  if (!rc)
    rc = gguf_writer_finish(w, &e);
  if (!rc)
    printf("wrote %s: %s %s, %zu tensors, %.2f GB in %.1f s\n", out, model_arch_name(hp.arch),
           model_quant_name(q), n_specs, (double)total / 1e9,
           (double)(hx_time_mono_ns() - t0) / 1e9);
done:
  for (int t = 0; t < QUANT_TYPE_COUNT; t++)
    free(pools[t].blocks);
  gguf_writer_free(w);
  free(chunk);
  free(specs);
  free(types);
  if (rc) {
    fprintf(stderr, "neuron synth: %s\n", e.msg[0] ? e.msg : hx_strerror(rc));
    return 1;
  }
  return 0;
}

/* --- inspect -------------------------------------------------------------------- */

static json_t *hparams_json(const model_hparams *hp) {
  json_t *o = json_object();
  json_object_set_new(o, "n_layer", json_integer(hp->n_layer));
  json_object_set_new(o, "n_embd", json_integer(hp->n_embd));
  json_object_set_new(o, "n_vocab", json_integer(hp->n_vocab));
  json_object_set_new(o, "n_ctx_train", json_integer(hp->n_ctx_train));
  json_object_set_new(o, "n_head", json_integer(hp->n_head));
  json_object_set_new(o, "n_head_kv", json_integer(hp->n_head_kv));
  json_object_set_new(o, "head_dim_k", json_integer(hp->head_dim_k));
  json_object_set_new(o, "head_dim_v", json_integer(hp->head_dim_v));
  json_object_set_new(o, "n_ff", json_integer(hp->n_ff));
  json_object_set_new(o, "n_rot", json_integer(hp->n_rot));
  json_object_set_new(o, "rms_eps", json_real(hp->rms_eps));
  json_object_set_new(o, "rope_freq_base", json_real(hp->rope_freq_base));
  static const char *const rs[] = {"none", "linear", "yarn"};
  json_object_set_new(o, "rope_scaling", json_string(rs[hp->rope_scaling]));
  json_object_set_new(o, "rope_scaling_factor", json_real(hp->rope_scaling_factor));
  json_t *sec = json_array();
  for (int i = 0; i < 4; i++)
    json_array_append_new(sec, json_integer(hp->rope_sections[i]));
  json_object_set_new(o, "rope_sections", sec);
  json_object_set_new(o, "tied_embeddings", json_boolean(hp->tied_embeddings));
  json_object_set_new(o, "attn_qkv_bias", json_boolean(hp->attn_qkv_bias));
  json_object_set_new(o, "attn_output_gate", json_boolean(hp->attn_output_gate));
  json_object_set_new(o, "n_expert", json_integer(hp->n_expert));
  json_object_set_new(o, "n_expert_used", json_integer(hp->n_expert_used));
  json_object_set_new(o, "n_ff_exp", json_integer(hp->n_ff_exp));
  json_object_set_new(o, "n_ff_shexp", json_integer(hp->n_ff_shexp));
  json_object_set_new(o, "full_attention_interval", json_integer(hp->full_attention_interval));
  json_object_set_new(o, "ssm_d_conv", json_integer(hp->ssm_d_conv));
  json_object_set_new(o, "ssm_d_state", json_integer(hp->ssm_d_state));
  json_object_set_new(o, "ssm_n_group", json_integer(hp->ssm_n_group));
  json_object_set_new(o, "ssm_dt_rank", json_integer(hp->ssm_dt_rank));
  json_object_set_new(o, "ssm_d_inner", json_integer(hp->ssm_d_inner));
  int n_rec = 0;
  for (int i = 0; i < hp->n_layer; i++)
    n_rec += hp->layer_recurrent[i];
  json_object_set_new(o, "n_layer_recurrent", json_integer(n_rec));
  json_object_set_new(o, "bos_token_id", json_integer(hp->bos_token_id));
  json_object_set_new(o, "eos_token_id", json_integer(hp->eos_token_id));
  return o;
}

static json_t *tokenizer_json(const model_file *mf) {
  json_t *o = json_object();
  const gguf_file *g = model_file_gguf(mf);
  if (g) {
    hx_slice s;
    const gguf_value *arr;
    json_object_set_new(o, "source", json_string("gguf"));
    if (!gguf_get_str(g, "tokenizer.ggml.model", false, &s, NULL) &&
        gguf_get(g, "tokenizer.ggml.model"))
      json_object_set_new(o, "model", json_stringn(s.ptr, s.len));
    if (!gguf_get_str(g, "tokenizer.ggml.pre", false, &s, NULL) &&
        gguf_get(g, "tokenizer.ggml.pre"))
      json_object_set_new(o, "pre", json_stringn(s.ptr, s.len));
    arr = NULL;
    if (!gguf_get_arr(g, "tokenizer.ggml.tokens", false, GGUF_TYPE_STRING, &arr, NULL) && arr)
      json_object_set_new(o, "n_tokens", json_integer((json_int_t)arr->v.arr.n));
    arr = NULL;
    if (!gguf_get_arr(g, "tokenizer.ggml.merges", false, GGUF_TYPE_STRING, &arr, NULL) && arr)
      json_object_set_new(o, "n_merges", json_integer((json_int_t)arr->v.arr.n));
    json_object_set_new(o, "chat_template",
                        json_boolean(gguf_get(g, "tokenizer.chat_template") != NULL));
  } else {
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", model_file_hf_dir(mf));
    FILE *fp = fopen(p, "rb");
    json_object_set_new(o, "source", json_string(fp ? "tokenizer.json" : "none"));
    if (fp)
      fclose(fp);
  }
  return o;
}

static void human(double bytes, char *out, size_t n) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (bytes >= 1024 && i < 4) {
    bytes /= 1024;
    i++;
  }
  snprintf(out, n, "%.2f %s", bytes, u[i]);
}

static void inspect_usage(FILE *f) {
  fprintf(f, "usage: neuron inspect FILE.gguf|HF_DIR [--json] [--context N] [--tensors]\n"
             "Describes a model: arch, hyper-parameters, tokenizer, tensors, quant mix, size,\n"
             "and the memory needed for one sequence of N tokens (default: 4096).\n");
}

int neuron_cmd_inspect(int argc, char **argv) {
  const char *path = NULL;
  bool as_json = false, show_tensors = false;
  long ctx = 4096;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      as_json = true;
    else if (!strcmp(argv[i], "--tensors"))
      show_tensors = true;
    else if (!strcmp(argv[i], "--context") && i + 1 < argc) {
      char *end;
      ctx = strtol(argv[++i], &end, 10);
      if (*end || ctx < 1 || ctx > (1 << 24)) {
        fprintf(stderr, "neuron inspect: --context must be 1..16777216\n");
        return 2;
      }
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      inspect_usage(stdout);
      return 0;
    } else if (argv[i][0] != '-' && !path)
      path = argv[i];
    else {
      inspect_usage(stderr);
      return 2;
    }
  }
  if (!path) {
    inspect_usage(stderr);
    return 2;
  }
  hx_err e = {0};
  model_file *mf;
  int64_t t0 = hx_time_mono_ns();
  if (model_file_open(path, NULL, &mf, &e)) {
    fprintf(stderr, "neuron inspect: %s\n", e.msg);
    return 1;
  }
  double open_ms = (double)(hx_time_mono_ns() - t0) / 1e6;
  const model_hparams *hp = model_file_hparams(mf);
  json_t *doc = json_object();
  json_object_set_new(doc, "path", json_string(path));
  json_object_set_new(doc, "format", json_string(model_file_gguf(mf) ? "gguf" : "hf"));
  json_object_set_new(doc, "arch", json_string(model_arch_name(hp->arch)));
  json_object_set_new(doc, "hparams", hparams_json(hp));
  json_object_set_new(doc, "tokenizer", tokenizer_json(mf));
  json_t *tensors = json_array(), *mix = json_object();
  uint64_t params = 0;
  for (size_t i = 0; i < model_file_tensor_count(mf); i++) {
    const model_tensor *t = model_file_tensor_at(mf, i);
    json_t *to = json_object(), *shape = json_array();
    for (int d = 0; d < t->n_dims; d++)
      json_array_append_new(shape, json_integer(t->ne[d]));
    json_object_set_new(to, "name", json_string(t->name));
    json_object_set_new(to, "type", json_string(quant_type_name(t->type)));
    json_object_set_new(to, "shape", shape);
    json_object_set_new(to, "bytes", json_integer((json_int_t)t->nbytes));
    json_array_append_new(tensors, to);
    uint64_t n = (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    params += n;
    json_t *m = json_object_get(mix, quant_type_name(t->type));
    if (!m) {
      m = json_pack("{s:i,s:i,s:i}", "tensors", 0, "bytes", 0, "params", 0);
      json_object_set_new(mix, quant_type_name(t->type), m);
    }
    json_object_set_new(m, "tensors",
                        json_integer(json_integer_value(json_object_get(m, "tensors")) + 1));
    json_object_set_new(
        m, "bytes",
        json_integer(json_integer_value(json_object_get(m, "bytes")) + (json_int_t)t->nbytes));
    json_object_set_new(
        m, "params",
        json_integer(json_integer_value(json_object_get(m, "params")) + (json_int_t)n));
  }
  size_t wbytes = model_file_weight_bytes(mf);
  model_memory_estimate me = model_file_memory_estimate(mf, (int)ctx, 2);
  json_object_set_new(doc, "n_tensors", json_integer((json_int_t)model_file_tensor_count(mf)));
  json_object_set_new(doc, "n_params", json_integer((json_int_t)params));
  json_object_set_new(doc, "total_bytes", json_integer((json_int_t)wbytes));
  json_object_set_new(doc, "bits_per_weight",
                      json_real(params ? 8.0 * (double)wbytes / (double)params : 0));
  json_object_set_new(doc, "quant_mix", mix);
  json_object_set_new(doc, "memory",
                      json_pack("{s:i,s:s,s:I,s:I,s:I,s:I,s:I}", "context", (int)ctx, "kv_type",
                                "f16", "weights_bytes", (json_int_t)me.weights_bytes,
                                "kv_cache_bytes", (json_int_t)me.kv_cache_bytes, "recurrent_bytes",
                                (json_int_t)me.recurrent_bytes, "scratch_bytes",
                                (json_int_t)me.scratch_bytes, "total_bytes",
                                (json_int_t)me.total_bytes));
  json_object_set_new(doc, "open_ms", json_real(open_ms));
  json_object_set_new(doc, "tensors", tensors);
  if (as_json) {
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s)
      puts(s);
    free(s);
  } else {
    char a[32], b[32], c[32];
    printf("%s (%s), arch %s\n", path, model_file_gguf(mf) ? "GGUF" : "HF directory",
           model_arch_name(hp->arch));
    printf("  layers %d, embd %d, heads %d/%d kv, head dim %d, ff %d, vocab %d, ctx %d\n",
           hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim_k, hp->n_ff,
           hp->n_vocab, hp->n_ctx_train);
    printf("  rope base %g, rot dims %d, rms eps %g, tied embeddings %s\n", hp->rope_freq_base,
           hp->n_rot, hp->rms_eps, hp->tied_embeddings ? "yes" : "no");
    if (hp->n_expert)
      printf("  experts %d (top %d), expert ff %d, shared ff %d\n", hp->n_expert, hp->n_expert_used,
             hp->n_ff_exp, hp->n_ff_shexp);
    if (model_arch_is_hybrid(hp->arch))
      printf("  DeltaNet: every %d-th layer full attention; conv %d, k heads %d x %d, v heads "
             "%d x %d\n",
             hp->full_attention_interval, hp->ssm_d_conv, hp->ssm_n_group, hp->ssm_d_state,
             hp->ssm_dt_rank, hp->ssm_head_v_dim);
    char *tk = json_dumps(json_object_get(doc, "tokenizer"), JSON_COMPACT);
    printf("  tokenizer %s\n", tk ? tk : "?");
    free(tk);
    human((double)wbytes, a, sizeof a);
    printf("  %zu tensors, %.3f B params, %s (%.2f bits/weight)\n", model_file_tensor_count(mf),
           (double)params / 1e9, a, params ? 8.0 * (double)wbytes / (double)params : 0);
    const char *k;
    json_t *v;
    json_object_foreach(mix, k, v) {
      human((double)json_integer_value(json_object_get(v, "bytes")), a, sizeof a);
      printf("    %-6s %5lld tensors %s\n", k,
             (long long)json_integer_value(json_object_get(v, "tensors")), a);
    }
    human((double)me.kv_cache_bytes, a, sizeof a);
    human((double)me.recurrent_bytes, b, sizeof b);
    human((double)me.total_bytes, c, sizeof c);
    printf("  memory for %ld tokens: KV (f16) %s, recurrent %s, total ~%s\n", ctx, a, b, c);
    printf("  opened and validated in %.1f ms\n", open_ms);
    if (show_tensors)
      for (size_t i = 0; i < model_file_tensor_count(mf); i++) {
        const model_tensor *t = model_file_tensor_at(mf, i);
        printf("    %-40s %-6s [%lld, %lld, %lld]\n", t->name, quant_type_name(t->type),
               (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2]);
      }
  }
  json_decref(doc);
  model_file_close(mf);
  return 0;
}

/* --- convert -------------------------------------------------------------------- */

static void convert_usage(FILE *f) {
  fprintf(f, "usage: neuron convert IN(HF_DIR|FILE.gguf) --out OUT.gguf [--quant Q] [--threads N]\n"
             "  Q: none (keep), F32, F16, BF16, Q8_0, Q6_K, Q5_K, Q4_K, Q4_K_M\n");
}

int neuron_cmd_convert(int argc, char **argv) {
  const char *in = NULL, *out = NULL, *qs = "none";
  int threads = hx_cpu_count();
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--out") && i + 1 < argc)
      out = argv[++i];
    else if (!strcmp(argv[i], "--quant") && i + 1 < argc)
      qs = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      convert_usage(stdout);
      return 0;
    } else if (argv[i][0] != '-' && !in)
      in = argv[i];
    else {
      convert_usage(stderr);
      return 2;
    }
  }
  model_quant q;
  if (!in || !out || !model_quant_parse(qs, &q) || threads < 1 || threads > 256) {
    convert_usage(stderr);
    return 2;
  }
  hx_err e = {0};
  hx_pool *pool = hx_pool_create(threads);
  model_file_opts o = {.quant = q, .pool = pool};
  model_file *mf = NULL;
  int64_t t0 = hx_time_mono_ns();
  hx_code rc = model_file_open(in, &o, &mf, &e);
  gguf_writer *w = NULL;
  if (rc)
    goto done;
  double load_s = (double)(hx_time_mono_ns() - t0) / 1e9;
  const model_hparams *hp = model_file_hparams(mf);
  w = gguf_writer_create(GGUF_DEFAULT_ALIGNMENT);
  if (!w) {
    rc = hx_err_set(&e, HX_ENOMEM, "out of memory");
    goto done;
  }
  const gguf_file *g = model_file_gguf(mf);
  if (g) { /* keep general.* and tokenizer.* metadata, rewrite the arch keys */
    for (size_t i = 0; i < gguf_kv_count(g) && !rc; i++) {
      const char *k = gguf_kv_key(g, i);
      if (!strncmp(k, "tokenizer.", 10) ||
          (!strncmp(k, "general.", 8) && strcmp(k, "general.alignment") &&
           strcmp(k, "general.file_type")))
        rc = gguf_writer_set_value(w, k, gguf_kv_value(g, i));
    }
    if (!rc)
      rc = model_hparams_write_gguf(hp, w);
  } else {
    rc = model_hparams_write_gguf(hp, w);
    char tp[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", model_file_hf_dir(mf));
    FILE *fp = fopen(tp, "rb");
    if (fp) {
      fclose(fp);
      if (!rc)
        rc = write_tokenizer(w, tp, hp->n_vocab, hp->arch, &e);
    }
  }
  if (rc) {
    if (!e.msg[0])
      hx_err_set(&e, rc, "cannot build metadata");
    goto done;
  }
  for (size_t i = 0; i < model_file_tensor_count(mf) && !rc; i++) {
    const model_tensor *t = model_file_tensor_at(mf, i);
    rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, &e);
  }
  if (!rc)
    rc = gguf_writer_open(w, out, &e);
  for (size_t i = 0; i < model_file_tensor_count(mf) && !rc; i++) {
    const model_tensor *t = model_file_tensor_at(mf, i);
    rc = gguf_writer_write_tensor(w, t->data, t->nbytes, &e);
  }
  if (!rc)
    rc = gguf_writer_finish(w, &e);
  if (!rc) {
    char a[32];
    human((double)model_file_weight_bytes(mf), a, sizeof a);
    printf("wrote %s: %s, %zu tensors, %s (load+quantize %.1f s, total %.1f s)\n", out,
           model_arch_name(hp->arch), model_file_tensor_count(mf), a, load_s,
           (double)(hx_time_mono_ns() - t0) / 1e9);
  }
done:
  gguf_writer_free(w);
  model_file_close(mf);
  hx_pool_free(pool);
  if (rc) {
    fprintf(stderr, "neuron convert: %s\n", e.msg[0] ? e.msg : hx_strerror(rc));
    return 1;
  }
  return 0;
}
