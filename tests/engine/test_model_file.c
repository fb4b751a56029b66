/* test_model_file.c — model_file over GGUF and HF directories: hparams,
 * the converter transforms (checked against the layouts documented in
 * llama.cpp's convert_hf_to_gguf.py, written out literally here), expert
 * stacking, validation errors, and in-situ quantization policy and accuracy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/pool.h"
#include "engine/gguf_writer.h"
#include "engine/model_file.h"

/* --- a tiny safetensors writer (F32 only) ------------------------------------ */

enum { MAX_T = 128 };
typedef struct {
  char name[128];
  int n_dims;
  int64_t shape[3];
  float *data;
  size_t n;
} hf_tensor;

typedef struct {
  hf_tensor t[MAX_T];
  int n;
} hf_set;

static float *hf_add(hf_set *s, const char *name, int n_dims, int64_t a, int64_t b, int64_t c) {
  assert_true(s->n < MAX_T);
  hf_tensor *t = &s->t[s->n++];
  snprintf(t->name, sizeof t->name, "%s", name);
  t->n_dims = n_dims;
  t->shape[0] = a;
  t->shape[1] = b;
  t->shape[2] = c;
  t->n = (size_t)a * (size_t)(n_dims > 1 ? b : 1) * (size_t)(n_dims > 2 ? c : 1);
  t->data = malloc(t->n * sizeof(float));
  for (size_t i = 0; i < t->n; i++) /* distinct values per tensor and element */
    t->data[i] = (float)s->n * 0.01f + (float)(i % 997) * 1e-4f - 0.05f;
  return t->data;
}

/* pad: align the data section to 8 like the safetensors library; without it
 * tensors are misaligned and model_file must copy them. */
static void hf_write(hf_set *s, const char *dir, const char *config, bool pad) {
  char path[512];
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  fputs(config, fp);
  fclose(fp);
  hx_buf h;
  hx_buf_init(&h, 1 << 20);
  hx_buf_append_char(&h, '{');
  size_t off = 0;
  for (int i = 0; i < s->n; i++) {
    hf_tensor *t = &s->t[i];
    hx_buf_printf(&h, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "", t->name);
    for (int d = 0; d < t->n_dims; d++)
      hx_buf_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    hx_buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + t->n * 4);
    off += t->n * 4;
  }
  hx_buf_append_char(&h, '}');
  while (pad && h.len % 8)
    hx_buf_append_char(&h, ' ');
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  fp = fopen(path, "wb");
  assert_non_null(fp);
  uint64_t hl = h.len;
  fwrite(&hl, 8, 1, fp);
  fwrite(h.data, 1, h.len, fp);
  for (int i = 0; i < s->n; i++)
    fwrite(s->t[i].data, 4, s->t[i].n, fp);
  fclose(fp);
  hx_buf_free(&h);
}

static void hf_free(hf_set *s, const char *dir) {
  for (int i = 0; i < s->n; i++)
    free(s->t[i].data);
  char path[512];
  snprintf(path, sizeof path, "%s/config.json", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  unlink(path);
  rmdir(dir);
}

static const float *tensor_f32(const model_file *mf, const char *name, int64_t ne0, int64_t ne1) {
  const model_tensor *t = model_file_tensor(mf, name);
  if (!t) {
    fprintf(stderr, "missing %s\n", name);
    fail();
  }
  assert_int_equal(t->type, QUANT_F32);
  assert_int_equal(t->ne[0], ne0);
  assert_int_equal(t->ne[1], ne1);
  return t->data;
}

/* grouped-by-K-head -> tiled V slots for nk = 2, r = 2, as in the converter's
 * docstring: [G0_v0, G0_v1, G1_v0, G1_v1] -> [G0_v0, G1_v0, G0_v1, G1_v1] */
static const int vperm[4] = {0, 2, 1, 3};

#define L(i, s) "model.language_model.layers." #i "." s

static void test_hf_qwen35_transforms(void **state) {
  (void)state;
  char dir[] = "/tmp/hx_mf_XXXXXX";
  assert_non_null(mkdtemp(dir));
  const char *cfg =
      "{\"model_type\":\"qwen3_5\",\"text_config\":{\"hidden_size\":64,\"num_hidden_layers\":4,"
      "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":32,"
      "\"intermediate_size\":128,\"vocab_size\":32,\"full_attention_interval\":4,"
      "\"linear_conv_kernel_dim\":4,\"linear_key_head_dim\":16,\"linear_num_key_heads\":2,"
      "\"linear_num_value_heads\":4,\"linear_value_head_dim\":16,"
      "\"rope_parameters\":{\"rope_theta\":10000000,\"partial_rotary_factor\":0.25}}}";
  static hf_set s;
  memset(&s, 0, sizeof s);
  hf_add(&s, "model.language_model.embed_tokens.weight", 2, 32, 64, 0);
  hf_add(&s, "model.language_model.norm.weight", 1, 64, 0, 0);
  hf_add(&s, "lm_head.weight", 2, 32, 64, 0);
  hf_add(&s, "mtp.fc.weight", 2, 64, 128, 0); /* skipped */
  char n[160];
  float *norm0 = NULL, *alog0 = NULL, *z0 = NULL, *qkv0 = NULL, *out0 = NULL, *conv0 = NULL,
        *snorm0 = NULL, *qn3 = NULL;
  for (int l = 0; l < 4; l++) {
#define A(suffix, nd, a, b, c)                                                                     \
  (snprintf(n, sizeof n, "model.language_model.layers.%d.%s", l, suffix),                          \
   hf_add(&s, n, nd, a, b, c))
    float *p = A("input_layernorm.weight", 1, 64, 0, 0);
    if (l == 0)
      norm0 = p;
    A("post_attention_layernorm.weight", 1, 64, 0, 0);
    A("mlp.gate_proj.weight", 2, 128, 64, 0);
    A("mlp.up_proj.weight", 2, 128, 64, 0);
    A("mlp.down_proj.weight", 2, 64, 128, 0);
    if (l < 3) {
      p = A("linear_attn.in_proj_qkv.weight", 2, 128, 64, 0);
      if (l == 0)
        qkv0 = p;
      p = A("linear_attn.in_proj_z.weight", 2, 64, 64, 0);
      if (l == 0)
        z0 = p;
      A("linear_attn.in_proj_a.weight", 2, 4, 64, 0);
      A("linear_attn.in_proj_b.weight", 2, 4, 64, 0);
      p = A("linear_attn.conv1d.weight", 3, 128, 1, 4);
      if (l == 0)
        conv0 = p;
      p = A("linear_attn.A_log", 1, 4, 0, 0);
      if (l == 0)
        alog0 = p;
      A("linear_attn.dt_bias", 1, 4, 0, 0);
      p = A("linear_attn.norm.weight", 1, 16, 0, 0);
      if (l == 0)
        snorm0 = p;
      p = A("linear_attn.out_proj.weight", 2, 64, 64, 0);
      if (l == 0)
        out0 = p;
    } else {
      A("self_attn.q_proj.weight", 2, 128, 64, 0);
      A("self_attn.k_proj.weight", 2, 32, 64, 0);
      A("self_attn.v_proj.weight", 2, 32, 64, 0);
      A("self_attn.o_proj.weight", 2, 64, 64, 0);
      qn3 = A("self_attn.q_norm.weight", 1, 32, 0, 0);
      A("self_attn.k_norm.weight", 1, 32, 0, 0);
    }
#undef A
  }
  hf_write(&s, dir, cfg, true);
  model_file *mf;
  hx_err e;
  assert_int_equal(model_file_open(dir, NULL, &mf, &e), HX_OK);
  const model_hparams *hp = model_file_hparams(mf);
  assert_int_equal(hp->arch, MODEL_ARCH_QWEN35);
  assert_int_equal(hp->n_rot, 8);
  assert_true(hp->layer_recurrent[0] && hp->layer_recurrent[2] && !hp->layer_recurrent[3]);
  assert_int_equal(hp->rope_sections[0], 11); /* converter default */
  /* zero-centred norms: GGUF stores 1 + w (not the DeltaNet gated norm) */
  const float *an = tensor_f32(mf, "blk.0.attn_norm.weight", 64, 1);
  for (int i = 0; i < 64; i++)
    assert_float_equal(an[i], norm0[i] + 1.0f, 1e-6);
  const float *q3 = tensor_f32(mf, "blk.3.attn_q_norm.weight", 32, 1);
  assert_float_equal(q3[5], qn3[5] + 1.0f, 1e-6);
  const float *sn = tensor_f32(mf, "blk.0.ssm_norm.weight", 16, 1);
  assert_float_equal(sn[3], snorm0[3], 0);
  /* ssm_a = -exp(A_log), V heads tiled */
  const float *sa = tensor_f32(mf, "blk.0.ssm_a", 4, 1);
  for (int h = 0; h < 4; h++)
    assert_float_equal(sa[h], -expf(alog0[vperm[h]]), 1e-6);
  /* in_proj_z rows, 16 per V head */
  const float *z = tensor_f32(mf, "blk.0.attn_gate.weight", 64, 64);
  for (int h = 0; h < 4; h++)
    for (int r = 0; r < 16; r++)
      assert_memory_equal(z + (h * 16 + r) * 64, z0 + (vperm[h] * 16 + r) * 64, 64 * 4);
  /* in_proj_qkv: q, k rows unchanged; v rows tiled */
  const float *qkv = tensor_f32(mf, "blk.0.attn_qkv.weight", 64, 128);
  assert_memory_equal(qkv, qkv0, 64 * 64 * 4);
  for (int h = 0; h < 4; h++)
    assert_memory_equal(qkv + (64 + h * 16) * 64, qkv0 + (64 + vperm[h] * 16) * 64, 16 * 64 * 4);
  /* conv1d squeezed to {K, channels}, V channels tiled */
  const float *cv = tensor_f32(mf, "blk.0.ssm_conv1d.weight", 4, 128);
  assert_memory_equal(cv, conv0, 64 * 4 * 4);
  for (int h = 0; h < 4; h++)
    assert_memory_equal(cv + (64 + h * 16) * 4, conv0 + (64 + vperm[h] * 16) * 4, 16 * 4 * 4);
  /* out_proj: columns tiled */
  const float *op = tensor_f32(mf, "blk.0.ssm_out.weight", 64, 64);
  for (int r = 0; r < 64; r++)
    for (int h = 0; h < 4; h++)
      assert_memory_equal(op + r * 64 + h * 16, out0 + r * 64 + vperm[h] * 16, 16 * 4);
  /* untouched tensors are mapped, not copied */
  const model_tensor *t = model_file_tensor(mf, "blk.3.attn_q.weight");
  assert_non_null(t);
  assert_false(t->owned);
  assert_int_equal(t->ne[1], 128);
  assert_non_null(model_file_tensor(mf, "output.weight"));
  assert_non_null(model_file_layer_tensor(mf, 1, "ssm_alpha.weight"));
  assert_null(model_file_tensor(mf, "blk.4.attn_norm.weight"));
  model_memory_estimate me = model_file_memory_estimate(mf, 100, 2);
  assert_int_equal(me.kv_cache_bytes, 100 * 1 * (32 + 32) * 2); /* one full-attention layer */
  assert_true(me.recurrent_bytes > 0);
  model_file_close(mf);

  /* a missing tensor is named */
  snprintf(s.t[s.n - 1].name, sizeof s.t[0].name, "model.language_model.layers.3.self_attn.x");
  hf_write(&s, dir, cfg, true);
  assert_int_not_equal(model_file_open(dir, NULL, &mf, &e), HX_OK);
  assert_non_null(strstr(e.msg, "blk.3.attn_k_norm.weight"));
  hf_free(&s, dir);
}

static void test_hf_qwen3next_qkvz_and_experts(void **state) {
  (void)state;
  char dir[] = "/tmp/hx_mf_XXXXXX";
  assert_non_null(mkdtemp(dir));
  const char *cfg =
      "{\"model_type\":\"qwen3_next\",\"hidden_size\":64,\"num_hidden_layers\":1,"
      "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":32,"
      "\"moe_intermediate_size\":32,\"shared_expert_intermediate_size\":32,\"num_experts\":4,"
      "\"num_experts_per_tok\":2,\"vocab_size\":32,\"full_attention_interval\":1,"
      "\"linear_conv_kernel_dim\":4,\"linear_key_head_dim\":16,\"linear_num_key_heads\":2,"
      "\"linear_num_value_heads\":4,\"linear_value_head_dim\":16,"
      "\"layer_types\":[\"linear_attention\"]}";
  static hf_set s;
  memset(&s, 0, sizeof s);
  hf_add(&s, "model.embed_tokens.weight", 2, 32, 64, 0);
  hf_add(&s, "model.norm.weight", 1, 64, 0, 0);
  hf_add(&s, "lm_head.weight", 2, 32, 64, 0);
  hf_add(&s, "model.layers.0.input_layernorm.weight", 1, 64, 0, 0);
  hf_add(&s, "model.layers.0.post_attention_layernorm.weight", 1, 64, 0, 0);
  /* per K head: q 16 | k 16 | v 2*16 | z 2*16 = 96 rows */
  float *qkvz = hf_add(&s, "model.layers.0.linear_attn.in_proj_qkvz.weight", 2, 192, 64, 0);
  hf_add(&s, "model.layers.0.linear_attn.in_proj_ba.weight", 2, 8, 64, 0);
  hf_add(&s, "model.layers.0.linear_attn.conv1d.weight", 3, 128, 1, 4);
  hf_add(&s, "model.layers.0.linear_attn.A_log", 1, 4, 0, 0);
  hf_add(&s, "model.layers.0.linear_attn.dt_bias", 1, 4, 0, 0);
  hf_add(&s, "model.layers.0.linear_attn.norm.weight", 1, 16, 0, 0);
  hf_add(&s, "model.layers.0.linear_attn.out_proj.weight", 2, 64, 64, 0);
  hf_add(&s, "model.layers.0.mlp.gate.weight", 2, 4, 64, 0);
  float *ex[4][3];
  static const char *const pj[3] = {"gate", "up", "down"};
  char n[128];
  for (int x = 0; x < 4; x++)
    for (int p = 0; p < 3; p++) {
      snprintf(n, sizeof n, "model.layers.0.mlp.experts.%d.%s_proj.weight", x, pj[p]);
      ex[x][p] = p == 2 ? hf_add(&s, n, 2, 64, 32, 0) : hf_add(&s, n, 2, 32, 64, 0);
    }
  hf_add(&s, "model.layers.0.mlp.shared_expert.gate_proj.weight", 2, 32, 64, 0);
  hf_add(&s, "model.layers.0.mlp.shared_expert.up_proj.weight", 2, 32, 64, 0);
  hf_add(&s, "model.layers.0.mlp.shared_expert.down_proj.weight", 2, 64, 32, 0);
  hf_add(&s, "model.layers.0.mlp.shared_expert_gate.weight", 2, 1, 64, 0);
  hf_write(&s, dir, cfg, false); /* odd header length: copies */
  model_file *mf;
  hx_err e;
  if (model_file_open(dir, NULL, &mf, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    fail();
  }
  const model_tensor *qkv = model_file_tensor(mf, "blk.0.attn_qkv.weight");
  const model_tensor *gate = model_file_tensor(mf, "blk.0.attn_gate.weight");
  assert_non_null(qkv);
  assert_non_null(gate);
  assert_int_equal(qkv->ne[1], 128);
  assert_int_equal(gate->ne[1], 64);
  const float *q = qkv->data, *g = gate->data;
  size_t rb = 64 * 4;
  for (int h = 0; h < 2; h++) {
    const float *src = qkvz + h * 96 * 64;
    assert_memory_equal(q + (h * 16) * 64, src, 16 * rb);                /* q */
    assert_memory_equal(q + (32 + h * 16) * 64, src + 16 * 64, 16 * rb); /* k */
    assert_memory_equal(q + (64 + h * 32) * 64, src + 32 * 64, 32 * rb); /* v */
    assert_memory_equal(g + (h * 32) * 64, src + 64 * 64, 32 * rb);      /* z */
  }
  const model_tensor *ge = model_file_tensor(mf, "blk.0.ffn_gate_exps.weight");
  const model_tensor *de = model_file_tensor(mf, "blk.0.ffn_down_exps.weight");
  assert_non_null(ge);
  assert_int_equal(ge->n_dims, 3);
  assert_int_equal(ge->ne[0], 64);
  assert_int_equal(ge->ne[1], 32);
  assert_int_equal(ge->ne[2], 4);
  assert_int_equal(de->ne[0], 32);
  assert_int_equal(de->ne[1], 64);
  for (int x = 0; x < 4; x++) {
    assert_memory_equal((const float *)ge->data + x * 32 * 64, ex[x][0], 32 * 64 * 4);
    assert_memory_equal((const float *)de->data + x * 32 * 64, ex[x][2], 32 * 64 * 4);
  }
  const model_tensor *sg = model_file_tensor(mf, "blk.0.ffn_gate_inp_shexp.weight");
  assert_non_null(sg);
  assert_int_equal(sg->n_dims, 1);
  model_file_close(mf);
  hf_free(&s, dir);
}

/* GGUF written with the arch's specs; reopened plain and quantized in situ. */
static void test_gguf_in_situ_quant(void **state) {
  (void)state;
  const char *cfg = "{\"model_type\":\"qwen3\",\"hidden_size\":256,\"num_hidden_layers\":2,"
                    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":64,"
                    "\"intermediate_size\":512,\"vocab_size\":300,\"tie_word_embeddings\":true}";
  model_hparams hp;
  hx_err e;
  assert_int_equal(model_hparams_from_hf_config(cfg, strlen(cfg), "cfg", &hp, &e), HX_OK);
  size_t n = model_tensor_specs(&hp, NULL, 0);
  model_tensor_spec *sp = calloc(n, sizeof *sp);
  model_tensor_specs(&hp, sp, n);
  char path[] = "/tmp/hx_mf_gguf_XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  gguf_writer *w = gguf_writer_create(32);
  assert_int_equal(model_hparams_write_gguf(&hp, w), HX_OK);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(gguf_writer_add_tensor(w, sp[i].name, QUANT_BF16, sp[i].n_dims, sp[i].ne, &e),
                     HX_OK);
  assert_int_equal(gguf_writer_open(w, path, &e), HX_OK);
  uint64_t seed = 7;
  for (size_t i = 0; i < n; i++) {
    size_t cnt = (size_t)(sp[i].ne[0] * sp[i].ne[1]);
    uint16_t *d = malloc(cnt * 2);
    for (size_t k = 0; k < cnt; k++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      float v = ((float)(seed >> 40) / (float)(1 << 24) - 0.5f) * 0.1f;
      d[k] = quant_f32_to_bf16(strstr(sp[i].name, "norm") ? 1.0f : v);
    }
    assert_int_equal(gguf_writer_write_tensor(w, d, cnt * 2, &e), HX_OK);
    free(d);
  }
  assert_int_equal(gguf_writer_finish(w, &e), HX_OK);
  gguf_writer_free(w);
  free(sp);

  model_file *plain, *q;
  assert_int_equal(model_file_open(path, NULL, &plain, &e), HX_OK);
  const model_hparams *ph = model_file_hparams(plain);
  assert_int_equal(ph->n_layer, 2);
  assert_int_equal(ph->n_vocab, 300);
  assert_true(ph->tied_embeddings);
  assert_int_equal(ph->head_dim_k, 64);
  hx_pool *pool = hx_pool_create(2);
  model_file_opts o = {.quant = MODEL_QUANT_Q4_K_M, .pool = pool};
  assert_int_equal(model_file_open(path, &o, &q, &e), HX_OK);
  struct {
    const char *name;
    quant_type want;
  } cases[] = {{"token_embd.weight", QUANT_Q6_K},     /* tied embeddings */
               {"blk.0.attn_v.weight", QUANT_Q4_K},   /* use_more_bits(0, 2) false */
               {"blk.1.attn_v.weight", QUANT_Q6_K},   /* last eighth */
               {"blk.1.ffn_down.weight", QUANT_Q6_K}, /* use_more_bits(1, 2) */
               {"blk.0.attn_q.weight", QUANT_Q4_K},   {"blk.0.attn_norm.weight", QUANT_F32}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const model_tensor *t = model_file_tensor(q, cases[i].name);
    assert_non_null(t);
    if (t->type != cases[i].want) {
      fprintf(stderr, "%s: got %s want %s\n", cases[i].name, quant_type_name(t->type),
              quant_type_name(cases[i].want));
      fail();
    }
  }
  /* quantized values track the bf16 originals */
  const model_tensor *a = model_file_tensor(plain, "blk.0.attn_q.weight");
  const model_tensor *b = model_file_tensor(q, "blk.0.attn_q.weight");
  int64_t cnt = a->ne[0] * a->ne[1];
  float *fa = malloc((size_t)cnt * 4), *fb = malloc((size_t)cnt * 4);
  quant_row_dequantize(a->type, a->data, fa, cnt);
  quant_row_dequantize(b->type, b->data, fb, cnt);
  double err2 = 0, sig = 0;
  for (int64_t k = 0; k < cnt; k++) {
    err2 += (double)(fa[k] - fb[k]) * (fa[k] - fb[k]);
    sig += (double)fa[k] * fa[k];
  }
  assert_true(sqrt(err2 / sig) < 0.12);
  assert_true(model_file_weight_bytes(q) < model_file_weight_bytes(plain) / 2);
  free(fa);
  free(fb);
  model_file_close(q);
  model_file_close(plain);
  hx_pool_free(pool);
  unlink(path);
}

/* llama.cpp's own quantizer (llama_model_quantize via llama-cpp-python, see
 * tools/llama_cpp_crosscheck.py) on the same bf16 model: our in-situ
 * quantization must produce the same type and the same bytes per tensor. */
static void test_matches_llama_cpp_quantize(void **state) {
  (void)state;
  static const struct {
    model_quant q;
    const char *file;
  } cases[] = {{MODEL_QUANT_Q4_K_M, "tests/data/quant/llama_q4_k_m.gguf"},
               {MODEL_QUANT_Q8_0, "tests/data/quant/llama_q8_0.gguf"},
               {MODEL_QUANT_Q6_K, "tests/data/quant/llama_q6_k.gguf"}};
  hx_err e;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    model_file *ours, *ref;
    model_file_opts o = {.quant = cases[c].q};
    assert_int_equal(model_file_open("tests/data/quant/llama_src_bf16.gguf", &o, &ours, &e), HX_OK);
    assert_int_equal(model_file_open(cases[c].file, NULL, &ref, &e), HX_OK);
    assert_int_equal(model_file_tensor_count(ours), model_file_tensor_count(ref));
    for (size_t i = 0; i < model_file_tensor_count(ref); i++) {
      const model_tensor *r = model_file_tensor_at(ref, i);
      const model_tensor *t = model_file_tensor(ours, r->name);
      assert_non_null(t);
      if (t->type != r->type || t->nbytes != r->nbytes || memcmp(t->data, r->data, r->nbytes)) {
        fprintf(stderr, "%s %s: ours %s, llama.cpp %s\n", model_quant_name(cases[c].q), r->name,
                quant_type_name(t->type), quant_type_name(r->type));
        fail();
      }
    }
    model_file_close(ours);
    model_file_close(ref);
  }
}

/* A GGUF with llama.cpp's optional fused ffn_gate_up_exps loads as split
 * ffn_gate_exps / ffn_up_exps (gate rows first per expert). */
static void test_gguf_fused_gate_up_exps(void **state) {
  (void)state;
  const char *cfg = "{\"model_type\":\"qwen3_moe\",\"hidden_size\":64,\"num_hidden_layers\":1,"
                    "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":32,"
                    "\"moe_intermediate_size\":32,\"num_experts\":4,\"num_experts_per_tok\":2,"
                    "\"vocab_size\":16}";
  model_hparams hp;
  hx_err e;
  assert_int_equal(model_hparams_from_hf_config(cfg, strlen(cfg), "cfg", &hp, &e), HX_OK);
  size_t n = model_tensor_specs(&hp, NULL, 0);
  model_tensor_spec *sp = calloc(n, sizeof *sp);
  model_tensor_specs(&hp, sp, n);
  char path[] = "/tmp/hx_mf_fused_XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  gguf_writer *w = gguf_writer_create(32);
  assert_int_equal(model_hparams_write_gguf(&hp, w), HX_OK);
  for (size_t i = 0; i < n; i++) {
    if (strstr(sp[i].name, "ffn_up_exps"))
      continue;
    if (strstr(sp[i].name, "ffn_gate_exps")) {
      snprintf(sp[i].name, sizeof sp[i].name, "blk.0.ffn_gate_up_exps.weight");
      sp[i].ne[1] *= 2;
    }
    assert_int_equal(gguf_writer_add_tensor(w, sp[i].name, QUANT_F32, sp[i].n_dims, sp[i].ne, &e),
                     HX_OK);
  }
  assert_int_equal(gguf_writer_open(w, path, &e), HX_OK);
  for (size_t i = 0; i < n; i++) {
    if (strstr(sp[i].name, "ffn_up_exps"))
      continue;
    size_t cnt = (size_t)(sp[i].ne[0] * sp[i].ne[1] * sp[i].ne[2]);
    float *d = malloc(cnt * 4);
    for (size_t k = 0; k < cnt; k++)
      d[k] = (float)k;
    assert_int_equal(gguf_writer_write_tensor(w, d, cnt * 4, &e), HX_OK);
    free(d);
  }
  assert_int_equal(gguf_writer_finish(w, &e), HX_OK);
  gguf_writer_free(w);
  free(sp);
  model_file *mf;
  assert_int_equal(model_file_open(path, NULL, &mf, &e), HX_OK);
  const model_tensor *g = model_file_tensor(mf, "blk.0.ffn_gate_exps.weight");
  const model_tensor *u = model_file_tensor(mf, "blk.0.ffn_up_exps.weight");
  assert_non_null(g);
  assert_non_null(u);
  assert_int_equal(g->ne[1], 32);
  const float *gf = g->data, *uf = u->data;
  for (int x = 0; x < 4; x++) /* fused element (x, row r, col c) = ((x*64 + r)*64 + c) */
    for (int r = 0; r < 32; r++) {
      assert_float_equal(gf[(x * 32 + r) * 64 + 5], (float)((x * 64 + r) * 64 + 5), 0);
      assert_float_equal(uf[(x * 32 + r) * 64 + 5], (float)((x * 64 + 32 + r) * 64 + 5), 0);
    }
  model_file_close(mf);
  unlink(path);
}

static void test_policy_and_names(void **state) {
  (void)state;
  char out[MODEL_NAME_MAX];
  assert_true(model_tensor_name_from_hf(MODEL_ARCH_QWEN3, "model.layers.3.self_attn.k_norm.weight",
                                        out, sizeof out));
  assert_string_equal(out, "blk.3.attn_k_norm.weight");
  assert_true(model_tensor_name_from_hf(
      MODEL_ARCH_QWEN3, "model.layers.0.post_attention_layernorm.weight", out, sizeof out));
  assert_string_equal(out, "blk.0.ffn_norm.weight");
  assert_true(model_tensor_name_from_hf(MODEL_ARCH_QWEN35,
                                        "model.language_model.layers.0.post_attention_layernorm."
                                        "weight",
                                        out, sizeof out));
  assert_string_equal(out, "blk.0.post_attention_norm.weight");
  assert_false(model_tensor_name_from_hf(MODEL_ARCH_QWEN3, "mtp.fc.weight", out, sizeof out));
  assert_false(model_tensor_name_from_hf(MODEL_ARCH_QWEN3, "model.layers.0.foo", out, sizeof out));
  int64_t ne[2] = {100, 64};
  /* row length not a multiple of 256 or 32: fall back to f16 */
  assert_int_equal(
      model_quant_pick(MODEL_QUANT_Q4_K_M, "blk.0.attn_q.weight", 2, ne, QUANT_BF16, 8, false),
      QUANT_F16);
  ne[0] = 96;
  assert_int_equal(
      model_quant_pick(MODEL_QUANT_Q4_K, "blk.0.attn_q.weight", 2, ne, QUANT_BF16, 8, false),
      QUANT_Q8_0);
  assert_int_equal(
      model_quant_pick(MODEL_QUANT_Q4_K, "blk.0.attn_q.weight", 2, ne, QUANT_Q8_0, 8, false),
      QUANT_Q8_0); /* never re-quantize */
  model_quant q;
  assert_true(model_quant_parse("q4_k_m", &q));
  assert_int_equal(q, MODEL_QUANT_Q4_K_M);
  hx_err e;
  model_hparams hp;
  const char *bad = "{\"model_type\":\"llama\",\"hidden_size\":64}";
  assert_int_equal(model_hparams_from_hf_config(bad, strlen(bad), "c.json", &hp, &e),
                   HX_EUNSUPPORTED);
  assert_non_null(strstr(e.msg, "llama"));
  const char *badkv = "{\"model_type\":\"qwen3\",\"hidden_size\":64,\"num_hidden_layers\":1,"
                      "\"num_attention_heads\":3,\"num_key_value_heads\":2,\"vocab_size\":8,"
                      "\"intermediate_size\":8}";
  assert_int_equal(model_hparams_from_hf_config(badkv, strlen(badkv), "c.json", &hp, &e),
                   HX_EFORMAT);
  assert_non_null(strstr(e.msg, "head_count_kv"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_policy_and_names),
      cmocka_unit_test(test_hf_qwen35_transforms),
      cmocka_unit_test(test_hf_qwen3next_qkvz_and_experts),
      cmocka_unit_test(test_gguf_in_situ_quant),
      cmocka_unit_test(test_matches_llama_cpp_quantize),
      cmocka_unit_test(test_gguf_fused_gate_up_exps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
