/* test_cuda_ops.c — every CUDA backend op against the CPU backend on random
 * inputs (several shapes, odd sizes, long contexts), with a normalized-MSE
 * bound per dtype. Output buffers are poisoned (NaN) before each run so
 * unwritten elements fail the comparison. Skipped (77) without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/backend.h"
#include "engine/quant.h"
#ifdef HELEXA_HAVE_CUDA
#include "engine/backend/cuda/backend_cuda.h"
#endif

#ifdef HELEXA_HAVE_CUDA
static hx_backend g_cpu, g_gpu;
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static float frand(void) { /* uniform in [-1, 1) */
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *rand_vec(size_t n, float scale) {
  float *v = malloc(n * sizeof *v);
  for (size_t i = 0; i < n; i++)
    v[i] = frand() * scale;
  return v;
}

/* A tensor with identical contents on both backends. */
typedef struct {
  hx_tensor c, g;
  size_t bytes;
} pair;

static pair make_pair(uint32_t type, int64_t n_cols, int64_t n_rows, const void *data) {
  pair p;
  size_t rb = hx_backend_row_bytes(type, n_cols);
  if (type == 26) /* i32 */
    rb = (size_t)n_cols * 4;
  assert_true(rb > 0);
  p.bytes = rb * (size_t)n_rows;
  hx_err err;
  hx_bbuf *bc = g_cpu.ops->buf_alloc(g_cpu.be, p.bytes, &err);
  hx_bbuf *bg = g_gpu.ops->buf_alloc(g_gpu.be, p.bytes, &err);
  assert_non_null(bc);
  assert_non_null(bg);
  p.c = (hx_tensor){bc, 0, type, n_cols, n_rows, rb};
  p.g = (hx_tensor){bg, 0, type, n_cols, n_rows, rb};
  if (data) {
    assert_int_equal(g_cpu.ops->buf_upload(g_cpu.be, bc, 0, data, p.bytes, &err), HX_OK);
    assert_int_equal(g_gpu.ops->buf_upload(g_gpu.be, bg, 0, data, p.bytes, &err), HX_OK);
  } else { /* poison */
    void *nan = malloc(p.bytes);
    memset(nan, 0xff, p.bytes);
    g_cpu.ops->buf_upload(g_cpu.be, bc, 0, nan, p.bytes, &err);
    g_gpu.ops->buf_upload(g_gpu.be, bg, 0, nan, p.bytes, &err);
    free(nan);
  }
  return p;
}

static void free_pair(pair *p) {
  g_cpu.ops->buf_free(g_cpu.be, p->c.buf);
  g_gpu.ops->buf_free(g_gpu.be, p->g.buf);
}

static pair quant_weights(uint32_t type, int64_t n_out, int64_t n_in, float scale) {
  float *w = rand_vec((size_t)(n_out * n_in), scale);
  size_t rb = hx_backend_row_bytes(type, n_in);
  uint8_t *q = malloc(rb * (size_t)n_out);
  for (int64_t r = 0; r < n_out; r++)
    quant_row_quantize((quant_type)type, w + r * n_in, q + (size_t)r * rb, n_in);
  pair p = make_pair(type, n_in, n_out, q);
  free(w);
  free(q);
  return p;
}

/* Downloads an f32 pair and returns NMSE of gpu vs cpu (NaN anywhere → inf). */
static double nmse_pair(pair *p) {
  float *a = malloc(p->bytes), *b = malloc(p->bytes);
  hx_err err;
  assert_int_equal(g_cpu.ops->buf_download(g_cpu.be, p->c.buf, 0, a, p->bytes, &err), HX_OK);
  assert_int_equal(g_gpu.ops->buf_download(g_gpu.be, p->g.buf, 0, b, p->bytes, &err), HX_OK);
  double num = 0, den = 0;
  size_t n = p->bytes / 4;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(a[i]) || !isfinite(b[i])) {
      free(a);
      free(b);
      return INFINITY;
    }
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)a[i] * a[i];
  }
  free(a);
  free(b);
  return den > 0 ? num / den : num;
}

#define BOTHN(n_tokens, call_c, call_g)                                                            \
  do {                                                                                             \
    hx_err e_;                                                                                     \
    g_cpu.ops->step_begin(g_cpu.be, n_tokens);                                                     \
    call_c;                                                                                        \
    assert_int_equal(g_cpu.ops->step_end(g_cpu.be, &e_), HX_OK);                                   \
    g_gpu.ops->step_begin(g_gpu.be, n_tokens);                                                     \
    call_g;                                                                                        \
    if (g_gpu.ops->step_end(g_gpu.be, &e_) != HX_OK)                                               \
      fail_msg("cuda step failed: %s", e_.msg);                                                    \
  } while (0)

#define BOTH(call_c, call_g) BOTHN(n_tok, call_c, call_g)

static const hx_tensor none = {0};

static void check(const char *what, double nmse, double bound) {
  printf("  %-44s nmse %.3g (bound %.1g)\n", what, nmse, bound);
  if (!(nmse <= bound))
    fail_msg("%s: nmse %g above %g", what, nmse, bound);
}

static void test_matmul(void **state) {
  (void)state;
  const uint32_t types[] = {0, 1, 30, 8, 12, 13, 14};
  /* matvec (one row): float weights exact up to summation order (F16/BF16
   * allow for a CPU path that rounds activations); quantized weights: both
   * sides quantize activations to 8 bits, in different block sizes. The GEMM
   * path (several rows) rounds activations to f16 (bf16 for BF16 weights). */
  const double bound_mv[] = {1e-10, 1e-6, 5e-5, 2e-4, 2e-4, 2e-4, 2e-4};
  const double bound_mm[] = {1e-10, 1e-6, 5e-5, 2e-4, 2e-4, 2e-4, 2e-4};
  const int64_t shapes[][3] = {
      {37, 256, 1}, {300, 1024, 1}, {64, 2048, 1}, {96, 512, 7}, {33, 768, 64}};
  for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
      int64_t n_out = shapes[si][0], n_in = shapes[si][1];
      int n_tok = (int)shapes[si][2];
      pair w = quant_weights(types[ti], n_out, n_in, 0.05f);
      float *xv = rand_vec((size_t)(n_tok * n_in), 1.0f);
      float *bv = rand_vec((size_t)n_out, 0.1f);
      pair x = make_pair(0, n_in, n_tok, xv), y = make_pair(0, n_out, n_tok, NULL);
      pair b = make_pair(0, n_out, 1, bv);
      int with_bias = si % 2;
      BOTH(g_cpu.ops->matmul(g_cpu.be, y.c, w.c, x.c, with_bias ? b.c : none),
           g_gpu.ops->matmul(g_gpu.be, y.g, w.g, x.g, with_bias ? b.g : none));
      char what[96];
      snprintf(what, sizeof what, "matmul %s %lldx%lld n=%d%s", quant_type_name(types[ti]),
               (long long)n_out, (long long)n_in, n_tok, with_bias ? " +bias" : "");
      double bound = n_tok == 1 ? bound_mv[ti] : bound_mm[ti];
      check(what, nmse_pair(&y), bound);
      free_pair(&w), free_pair(&x), free_pair(&y), free_pair(&b);
      free(xv), free(bv);
    }
  }
}

static void test_get_rows_norms(void **state) {
  (void)state;
  const uint32_t types[] = {0, 1, 30, 8, 12, 13, 14};
  int n_tok = 5;
  for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
    pair tab = quant_weights(types[ti], 100, 512, 1.0f);
    int32_t idv[5] = {0, 99, 42, 42, 7};
    pair ids = make_pair(26, 5, 1, idv), out = make_pair(0, 512, 5, NULL);
    BOTH(g_cpu.ops->get_rows(g_cpu.be, out.c, tab.c, ids.c, 5),
         g_gpu.ops->get_rows(g_gpu.be, out.g, tab.g, ids.g, 5));
    char what[64];
    snprintf(what, sizeof what, "get_rows %s", quant_type_name(types[ti]));
    check(what, nmse_pair(&out), 1e-10);
    free_pair(&tab), free_pair(&ids), free_pair(&out);
  }
  int64_t d = 1000;
  n_tok = 3;
  float *xv = rand_vec((size_t)(d * 3), 2.0f), *rv = rand_vec((size_t)(d * 3), 1.0f);
  float *wv = rand_vec((size_t)d, 1.0f);
  for (int mode = 0; mode < 3; mode++) {
    pair x = make_pair(0, d, 3, xv), r = make_pair(0, d, 3, rv), w = make_pair(0, d, 1, wv);
    pair o = make_pair(0, d, 3, NULL);
    hx_tensor rc = mode >= 1 ? r.c : none, rg = mode >= 1 ? r.g : none;
    BOTH(g_cpu.ops->rms_norm(g_cpu.be, o.c, x.c, rc, w.c, 1e-6f, mode == 2),
         g_gpu.ops->rms_norm(g_gpu.be, o.g, x.g, rg, w.g, 1e-6f, mode == 2));
    check(mode == 0   ? "rms_norm"
          : mode == 1 ? "rms_norm +residual"
                      : "rms_norm zero-centred",
          nmse_pair(&o), 1e-10);
    if (mode >= 1)
      check("rms_norm residual sum", nmse_pair(&r), 1e-12);
    free_pair(&x), free_pair(&r), free_pair(&w), free_pair(&o);
  }
  free(xv), free(rv), free(wv);
  /* per-head norm, head_dim 128 and 64 */
  for (int hd = 64; hd <= 128; hd *= 2) {
    float *qv = rand_vec((size_t)(8 * hd * 3), 3.0f), *nw = rand_vec((size_t)hd, 1.0f);
    pair q = make_pair(0, 8 * hd, 3, qv), w = make_pair(0, hd, 1, nw);
    BOTH(g_cpu.ops->rms_norm_heads(g_cpu.be, q.c, w.c, hd, 1e-6f),
         g_gpu.ops->rms_norm_heads(g_gpu.be, q.g, w.g, hd, 1e-6f));
    check("rms_norm_heads", nmse_pair(&q), 1e-10);
    free_pair(&q), free_pair(&w), free(qv), free(nw);
  }
}

static void test_rope(void **state) {
  (void)state;
  int n_tok = 4;
  int32_t posv[4] = {0, 1, 777, 40000};
  hx_rope_params ps[4] = {
      {.n_rot = 128, .freq_base = 1e6f, .freq_scale = 1.0f},
      {.n_rot = 64, .freq_base = 1e7f, .freq_scale = 1.0f}, /* partial rotary of 256 */
      {.n_rot = 128,
       .freq_base = 1e6f,
       .freq_scale = 1.0f,
       .yarn_factor = 4.0f,
       .yarn_orig_ctx = 32768,
       .yarn_beta_fast = 32.0f,
       .yarn_beta_slow = 1.0f},
      /* as a GGUF-loaded YaRN model arrives: betas unset (defaults 32/1) and
       * llama.cpp's freq_scale = 1/factor, which YaRN itself replaces */
      {.n_rot = 32,
       .freq_base = 1e4f,
       .freq_scale = 0.25f,
       .yarn_factor = 4.0f,
       .yarn_orig_ctx = 64},
  };
  int hds[4] = {128, 256, 128, 32};
  const char *names[4] = {"rope full", "rope partial", "rope yarn", "rope yarn (defaults)"};
  for (int i = 0; i < 4; i++) {
    float *xv = rand_vec((size_t)(4 * 4 * hds[i]), 1.0f);
    pair x = make_pair(0, 4 * hds[i], 4, xv), pos = make_pair(26, 4, 1, posv);
    BOTH(g_cpu.ops->rope(g_cpu.be, x.c, pos.c, hds[i], &ps[i]),
         g_gpu.ops->rope(g_gpu.be, x.g, pos.g, hds[i], &ps[i]));
    /* f32 angles up to 40000 rad: rounding of pos * inv_freq differs by ulps */
    check(names[i], nmse_pair(&x), 1e-6);
    free_pair(&x), free_pair(&pos), free(xv);
  }
}

/* Fills a KV cache through cache_store on both backends, then runs attention
 * for queries at the given positions. */
static void attn_case(uint32_t cache_type, int n_heads, int n_kv, int hd, int n_ctx, int n_fill,
                      int n_tok, const int32_t *qpos, double bound) {
  int kvd = n_kv * hd;
  pair kc = make_pair(cache_type, kvd, n_ctx, NULL), vc = make_pair(cache_type, kvd, n_ctx, NULL);
  /* fill positions [0, n_fill) in chunks of 64 rows */
  for (int p0 = 0; p0 < n_fill; p0 += 64) {
    int n = n_fill - p0 < 64 ? n_fill - p0 : 64;
    float *kv = rand_vec((size_t)(n * kvd), 1.0f), *vv = rand_vec((size_t)(n * kvd), 1.0f);
    int32_t *pv = malloc((size_t)n * 4);
    for (int i = 0; i < n; i++)
      pv[i] = p0 + i;
    pair k = make_pair(0, kvd, n, kv), v = make_pair(0, kvd, n, vv), pos = make_pair(26, n, 1, pv);
    BOTHN(n,
          (g_cpu.ops->cache_store(g_cpu.be, kc.c, k.c, pos.c),
           g_cpu.ops->cache_store(g_cpu.be, vc.c, v.c, pos.c)),
          (g_gpu.ops->cache_store(g_gpu.be, kc.g, k.g, pos.g),
           g_gpu.ops->cache_store(g_gpu.be, vc.g, v.g, pos.g)));
    free_pair(&k), free_pair(&v), free_pair(&pos), free(kv), free(vv), free(pv);
  }
  float *qv = rand_vec((size_t)(n_tok * n_heads * hd), 2.0f);
  pair q = make_pair(0, n_heads * hd, n_tok, qv), o = make_pair(0, n_heads * hd, n_tok, NULL);
  pair pos = make_pair(26, n_tok, 1, qpos);
  hx_attn_params ap = {n_heads, n_kv, hd, 1.0f / sqrtf((float)hd)};
  BOTH(g_cpu.ops->attention(g_cpu.be, o.c, q.c, kc.c, vc.c, pos.c, &ap),
       g_gpu.ops->attention(g_gpu.be, o.g, q.g, kc.g, vc.g, pos.g, &ap));
  char what[96];
  snprintf(what, sizeof what, "attention %s h%d/%d d%d ctx%d n=%d pos0=%d",
           quant_type_name(cache_type), n_heads, n_kv, hd, n_ctx, n_tok, qpos[0]);
  check(what, nmse_pair(&o), bound);
  free_pair(&kc), free_pair(&vc), free_pair(&q), free_pair(&o), free_pair(&pos), free(qv);
}

static void test_attention(void **state) {
  (void)state;
  int32_t p1[1] = {299};
  int32_t plong[1] = {4999};
  int32_t pre[17];
  for (int i = 0; i < 17; i++)
    pre[i] = i;
  attn_case(1, 32, 8, 128, 1024, 300, 1, p1, 1e-6);
  /* decode at one position, within the first split's batch and just past it */
  int32_t p0[1] = {0}, p7[1] = {7}, p8[1] = {8};
  attn_case(1, 32, 8, 128, 1024, 300, 1, p0, 1e-6);
  attn_case(1, 32, 8, 128, 1024, 300, 1, p7, 1e-6);
  attn_case(1, 32, 8, 128, 1024, 300, 1, p8, 1e-6);
  /* 8 query heads per KV head (Qwen3-30B-A3B 32/4, Qwen3-32B 64/8): the
     reduce-scatter softmax of the F16 decode kernel, partial batches, a long
     context, head_dim 64 and 128 */
  attn_case(1, 32, 4, 128, 1024, 300, 1, p1, 1e-6);
  attn_case(1, 32, 4, 128, 1024, 300, 1, p7, 1e-6);
  attn_case(1, 16, 2, 64, 1024, 300, 1, p8, 1e-6);
  attn_case(1, 32, 4, 128, 8192, 5000, 1, plong, 1e-6);
  attn_case(0, 16, 16, 64, 512, 300, 1, p1, 1e-8);
  attn_case(8, 16, 2, 128, 512, 300, 1, p1, 1e-6);
  attn_case(1, 16, 2, 256, 8192, 5000, 1, plong, 1e-6);
  attn_case(1, 8, 4, 32, 64, 17, 17, pre, 1e-6);
  attn_case(1, 32, 4, 128, 256, 17, 17, pre, 1e-6);
  /* prefill on tensor cores (f16 Q and P): several key tiles, a query block
     straddling the end of the tokens, every group size, head_dim 64 and 128 */
  int32_t later[100];
  for (int i = 0; i < 100; i++)
    later[i] = 200 + i;
  attn_case(1, 16, 16, 64, 512, 300, 100, later, 1e-5);
  attn_case(1, 16, 8, 128, 512, 300, 100, later, 1e-5);
  attn_case(1, 32, 8, 128, 512, 300, 99, later, 1e-5);
  attn_case(1, 32, 4, 128, 512, 300, 37, later + 63, 1e-5);
  /* 5 query heads per KV head (Qwen3-14B): decode split path, and prefill
     on tensor cores (3 tokens x 5 heads per block) */
  attn_case(1, 40, 8, 128, 1024, 300, 1, p1, 1e-6);
  attn_case(1, 40, 8, 128, 512, 300, 37, later + 63, 1e-5);
  attn_case(1, 40, 8, 128, 512, 300, 100, later, 1e-5);
  /* 6 query heads per KV head (Qwen3.5-27B: 24/4, head_dim 256) and 3: the
     decode split path and prefill on tensor cores (head_dim 128 and 256; the
     256 tiles take dynamic shared memory past 48 KB) */
  attn_case(1, 24, 4, 256, 1024, 300, 1, p1, 1e-6);
  attn_case(1, 24, 4, 256, 512, 300, 37, later + 63, 1e-5);
  attn_case(1, 24, 4, 256, 512, 300, 100, later, 1e-5);
  /* 8 per KV head at head_dim 256 (Qwen3.5-35B-A3B: 16/2), a long context */
  attn_case(1, 16, 2, 256, 512, 300, 99, later, 1e-5);
  int32_t deep[64];
  for (int i = 0; i < 64; i++)
    deep[i] = 4936 + i;
  attn_case(1, 16, 2, 256, 8192, 5000, 64, deep, 1e-5);
  attn_case(1, 24, 4, 128, 512, 300, 100, later, 1e-5);
  attn_case(1, 12, 4, 128, 1024, 300, 1, p1, 1e-6);
  attn_case(1, 12, 4, 128, 512, 300, 37, later + 63, 1e-5);
}

static void test_elementwise_topk(void **state) {
  (void)state;
  int n_tok = 3;
  int64_t d = 3000;
  float *av = rand_vec((size_t)(d * 3), 3.0f), *bv = rand_vec((size_t)(d * 3), 3.0f);
  pair a = make_pair(0, d, 3, av), b = make_pair(0, d, 3, bv), b1 = make_pair(0, d, 1, bv);
  pair o = make_pair(0, d, 3, NULL);
  BOTH(g_cpu.ops->swiglu(g_cpu.be, o.c, a.c, b.c), g_gpu.ops->swiglu(g_gpu.be, o.g, a.g, b.g));
  check("swiglu", nmse_pair(&o), 1e-10);
  BOTH(g_cpu.ops->add(g_cpu.be, o.c, a.c, b1.c), g_gpu.ops->add(g_gpu.be, o.g, a.g, b1.g));
  check("add (broadcast row)", nmse_pair(&o), 1e-14);
  BOTH(g_cpu.ops->mul(g_cpu.be, o.c, a.c, b.c), g_gpu.ops->mul(g_gpu.be, o.g, a.g, b.g));
  check("mul", nmse_pair(&o), 1e-14);
  BOTH(g_cpu.ops->softmax(g_cpu.be, a.c), g_gpu.ops->softmax(g_gpu.be, a.g));
  check("softmax", nmse_pair(&a), 1e-10);
  free_pair(&a), free_pair(&b), free_pair(&b1), free_pair(&o), free(av), free(bv);

  int64_t vocab = 151936;
  float *lv = rand_vec((size_t)(vocab * 2), 10.0f);
  lv[12345] = 50.0f;
  lv[vocab + 7] = 50.0f;
  lv[vocab + 9] = 50.0f; /* tie: the lower index first */
  for (int k = 1; k <= 20; k += 19) {
    n_tok = 2;
    pair l = make_pair(0, vocab, 2, lv), vals = make_pair(0, k, 2, NULL);
    pair ids = make_pair(26, k, 2, NULL);
    BOTH(g_cpu.ops->top_k(g_cpu.be, vals.c, ids.c, l.c, k),
         g_gpu.ops->top_k(g_gpu.be, vals.g, ids.g, l.g, k));
    int32_t ic[40], ig[40];
    hx_err err;
    g_cpu.ops->buf_download(g_cpu.be, ids.c.buf, 0, ic, ids.bytes, &err);
    g_gpu.ops->buf_download(g_gpu.be, ids.g.buf, 0, ig, ids.bytes, &err);
    for (int i = 0; i < 2 * k; i++)
      assert_int_equal(ic[i], ig[i]);
    assert_int_equal(ig[0], 12345);
    assert_int_equal(ig[k], 7);
    check(k == 1 ? "top_k k=1 values" : "top_k k=20 values", nmse_pair(&vals), 1e-14);
    free_pair(&l), free_pair(&vals), free_pair(&ids);
  }
  free(lv);

  /* One row with k = 1 takes the many-block arg-max: a tie goes to the lower
     index across blocks, a NaN sorts last, a row starting 4 bytes past an
     aligned address takes the scalar loads, and repeated calls must find the
     last-block ticket reset. */
  for (int rep = 0; rep < 4; rep++) {
    n_tok = 1;
    const int64_t off = rep & 1; /* columns [off, off + vocab) of a wider row */
    float *rv = rand_vec((size_t)vocab + 1, 10.0f);
    rv[off + 140000] = 60.0f;
    rv[off + 321 + rep] = 60.0f; /* the tie: the lower index wins */
    rv[off + 5] = NAN;
    pair l = make_pair(0, vocab + 1, 1, rv), vals = make_pair(0, 1, 1, NULL);
    pair ids = make_pair(26, 1, 1, NULL);
    hx_tensor lc = l.c, lg = l.g;
    lc.offset = lg.offset = (size_t)off * sizeof(float);
    lc.n_cols = lg.n_cols = vocab;
    BOTH(g_cpu.ops->top_k(g_cpu.be, vals.c, ids.c, lc, 1),
         g_gpu.ops->top_k(g_gpu.be, vals.g, ids.g, lg, 1));
    int32_t ic = -2, ig = -2;
    hx_err err;
    g_cpu.ops->buf_download(g_cpu.be, ids.c.buf, 0, &ic, 4, &err);
    g_gpu.ops->buf_download(g_gpu.be, ids.g.buf, 0, &ig, 4, &err);
    assert_int_equal(ic, 321 + rep);
    assert_int_equal(ig, 321 + rep);
    check("top_k k=1 one row (many-block arg-max)", nmse_pair(&vals), 1e-14);
    free_pair(&l), free_pair(&vals), free_pair(&ids);
    free(rv);
  }
}

/* A decode-like step replayed from the captured graph at changing positions
 * must keep matching the CPU (positions are read from device memory). */
static void test_graph_replay(void **state) {
  (void)state;
  int n_tok = 1, hd = 128, nh = 8, nkv = 2, n_ctx = 256;
  pair w = quant_weights(12, nh * hd, 512, 0.05f);
  float *xv = rand_vec(512, 1.0f);
  pair x = make_pair(0, 512, 1, xv), q = make_pair(0, nh * hd, 1, NULL);
  pair kc = make_pair(1, nkv * hd, n_ctx, NULL), vc = make_pair(1, nkv * hd, n_ctx, NULL);
  pair kv = make_pair(0, nkv * hd, 1, NULL);
  pair o = make_pair(0, nh * hd, 1, NULL);
  int32_t zero = 0;
  pair pos = make_pair(26, 1, 1, &zero);
  hx_rope_params rp = {.n_rot = hd, .freq_base = 1e6f, .freq_scale = 1.0f};
  hx_attn_params ap = {nh, nkv, hd, 1.0f / sqrtf((float)hd)};
  for (int32_t p = 0; p < 40; p++) {
    hx_err err;
    g_cpu.ops->buf_upload(g_cpu.be, pos.c.buf, 0, &p, 4, &err);
    g_gpu.ops->buf_upload(g_gpu.be, pos.g.buf, 0, &p, 4, &err);
    float *nx = rand_vec(512, 1.0f);
    g_cpu.ops->buf_upload(g_cpu.be, x.c.buf, 0, nx, 2048, &err);
    g_gpu.ops->buf_upload(g_gpu.be, x.g.buf, 0, nx, 2048, &err);
    free(nx);
    hx_tensor kvc = {kv.c.buf, 0, 0, nkv * hd, 1, kv.c.row_bytes};
    hx_tensor kvg = {kv.g.buf, 0, 0, nkv * hd, 1, kv.g.row_bytes};
    hx_tensor qc_k = {q.c.buf, 0, 0, nkv * hd, 1, q.c.row_bytes};
    hx_tensor qg_k = {q.g.buf, 0, 0, nkv * hd, 1, q.g.row_bytes};
    BOTH((g_cpu.ops->matmul(g_cpu.be, q.c, w.c, x.c, none),
          g_cpu.ops->add(g_cpu.be, kvc, qc_k, qc_k),
          g_cpu.ops->cache_store(g_cpu.be, kc.c, kvc, pos.c),
          g_cpu.ops->cache_store(g_cpu.be, vc.c, kvc, pos.c),
          g_cpu.ops->rope(g_cpu.be, q.c, pos.c, hd, &rp),
          g_cpu.ops->attention(g_cpu.be, o.c, q.c, kc.c, vc.c, pos.c, &ap)),
         (g_gpu.ops->matmul(g_gpu.be, q.g, w.g, x.g, none),
          g_gpu.ops->add(g_gpu.be, kvg, qg_k, qg_k),
          g_gpu.ops->cache_store(g_gpu.be, kc.g, kvg, pos.g),
          g_gpu.ops->cache_store(g_gpu.be, vc.g, kvg, pos.g),
          g_gpu.ops->rope(g_gpu.be, q.g, pos.g, hd, &rp),
          g_gpu.ops->attention(g_gpu.be, o.g, q.g, kc.g, vc.g, pos.g, &ap)));
    double e = nmse_pair(&o);
    if (!(e < 2e-4)) /* the Q4_K matmul bound: activations quantized differently */
      fail_msg("graph step at pos %d: nmse %g", p, e);
  }
  long replayed = 0, captured = 0;
  hx_backend_cuda_graph_stats(&g_gpu, &replayed, &captured);
  printf("  graph replay: %ld replayed, %ld captured over 40 decode steps\n", replayed, captured);
  /* HX_CUDA_GRAPHS=0 runs every step eagerly: nothing is replayed */
  const char *graphs = getenv("HX_CUDA_GRAPHS");
  if (!graphs || strcmp(graphs, "0") != 0)
    assert_true(replayed >= 38);
  free_pair(&w), free_pair(&x), free_pair(&q), free_pair(&kc), free_pair(&vc), free_pair(&kv);
  free_pair(&o), free_pair(&pos), free(xv);
}

/* A whole decode layer in the order the qwen3 model records it, so the CUDA
 * backend's one-token fusions (norm+quantize, multi-matvec, q/k norm + RoPE
 * + cache store, SwiGLU+quantize) run; compared with the CPU after each of
 * several steps. Mixed weight types as in Q4_K_M. */
static void decode_layer_fused(int hd) {
  const int d = 512, nh = 8, nkv = 2, ff = 1024, n_ctx = 128;
  const int qd = nh * hd, kvd = nkv * hd;
  pair wq = quant_weights(12, qd, d, 0.05f), wk = quant_weights(12, kvd, d, 0.05f);
  pair wv = quant_weights(14, kvd, d, 0.05f), wo = quant_weights(12, d, qd, 0.05f);
  pair wg = quant_weights(12, ff, d, 0.05f), wu = quant_weights(8, ff, d, 0.05f);
  pair wd = quant_weights(14, d, ff, 0.05f);
  float *nv = rand_vec(d, 1.0f), *hv = rand_vec(hd, 1.0f);
  pair an = make_pair(0, d, 1, nv), fn = make_pair(0, d, 1, nv), qn = make_pair(0, hd, 1, hv);
  pair kn = make_pair(0, hd, 1, hv);
  float *xv = rand_vec(d, 1.0f);
  pair x = make_pair(0, d, 1, xv), xb = make_pair(0, d, 1, NULL), q = make_pair(0, qd, 1, NULL);
  pair k = make_pair(0, kvd, 1, NULL), v = make_pair(0, kvd, 1, NULL);
  pair att = make_pair(0, qd, 1, NULL), hb = make_pair(0, ff, 1, NULL);
  pair hb2 = make_pair(0, ff, 1, NULL);
  pair kc = make_pair(1, kvd, n_ctx, NULL), vc = make_pair(1, kvd, n_ctx, NULL);
  int32_t zero = 0;
  pair pos = make_pair(26, 1, 1, &zero);
  hx_rope_params rp = {.n_rot = hd, .freq_base = 1e6f, .freq_scale = 1.0f};
  hx_attn_params ap = {nh, nkv, hd, 1.0f / sqrtf((float)hd)};
  int n_tok = 1;
  for (int32_t p = 0; p < 6; p++) {
    hx_err err;
    g_cpu.ops->buf_upload(g_cpu.be, pos.c.buf, 0, &p, 4, &err);
    g_gpu.ops->buf_upload(g_gpu.be, pos.g.buf, 0, &p, 4, &err);
#define LAYER(B, S)                                                                                \
  (B.ops->rms_norm(B.be, xb.S, x.S, none, an.S, 1e-6f, 0),                                         \
   B.ops->matmul(B.be, q.S, wq.S, xb.S, none), B.ops->matmul(B.be, k.S, wk.S, xb.S, none),         \
   B.ops->matmul(B.be, v.S, wv.S, xb.S, none), B.ops->rms_norm_heads(B.be, q.S, qn.S, hd, 1e-6f),  \
   B.ops->rms_norm_heads(B.be, k.S, kn.S, hd, 1e-6f), B.ops->rope(B.be, q.S, pos.S, hd, &rp),      \
   B.ops->rope(B.be, k.S, pos.S, hd, &rp), B.ops->cache_store(B.be, kc.S, k.S, pos.S),             \
   B.ops->cache_store(B.be, vc.S, v.S, pos.S),                                                     \
   B.ops->attention(B.be, att.S, q.S, kc.S, vc.S, pos.S, &ap),                                     \
   B.ops->matmul(B.be, xb.S, wo.S, att.S, none),                                                   \
   B.ops->rms_norm(B.be, xb.S, xb.S, x.S, fn.S, 1e-6f, 0),                                         \
   B.ops->matmul(B.be, hb.S, wg.S, xb.S, none), B.ops->matmul(B.be, hb2.S, wu.S, xb.S, none),      \
   B.ops->swiglu(B.be, hb.S, hb.S, hb2.S), B.ops->matmul(B.be, xb.S, wd.S, hb.S, none))
    BOTH(LAYER(g_cpu, c), LAYER(g_gpu, g));
#undef LAYER
    double e1 = nmse_pair(&xb), e2 = nmse_pair(&x), e3 = nmse_pair(&q);
    printf("  decode layer hd %d step %d: nmse out %.3g, residual %.3g, q %.3g\n", hd, p, e1, e2,
           e3);
    if (!(e1 < 1e-3 && e2 < 1e-4 && e3 < 1e-3))
      fail_msg("fused decode layer at pos %d: nmse %g %g %g", p, e1, e2, e3);
  }
  pair all[] = {wq, wk, wv, wo, wg, wu,  wd, an,  fn, qn, kn,
                x,  xb, q,  k,  v,  att, hb, hb2, kc, vc, pos};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    free_pair(&all[i]);
  free(nv), free(hv), free(xv);
}

/* head_dim 64 and 128: the register-resident q/k norm + RoPE + store kernel
 * with 2 and 4 dims per lane */
static void test_decode_layer_fused(void **state) {
  (void)state;
  decode_layer_fused(64);
  decode_layer_fused(128);
}

/* ---- planar Q8_0 / Q6_K weights (weight_prepare, repack.cu) ---- */

/* Native Q8_0 / Q6_K bytes: random quants and sub-block scales, f16 block
 * scales of a few thousandths (valid, finite). */
static uint8_t *rand_native_quant(uint32_t type, int64_t n_rows, int64_t n_cols) {
  size_t rb = hx_backend_row_bytes(type, n_cols), n = rb * (size_t)n_rows;
  size_t block = type == 8 ? 34 : 210, d_at = type == 8 ? 0 : 208;
  uint8_t *q = malloc(n);
  assert_non_null(q);
  for (size_t i = 0; i < n; i++) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    q[i] = (uint8_t)(g_rng >> 56);
  }
  float d_scale = type == 8 ? 4e-3f : 2e-4f;
  for (size_t b = 0; b < n / block; b++) {
    uint16_t d = quant_f32_to_f16(d_scale * (0.25f + 0.75f * fabsf(frand())));
    memcpy(q + b * block + d_at, &d, 2);
  }
  return q;
}

/* The planar layout by its definition (common.cuh), from the native blocks:
 * Q8_0P qs [B][32] | d [B]; Q6_KP ql [B][128] | qh [B][64] | scales [B][16] |
 * d [B], B = all blocks of the matrix in row order. */
static void planar_reference(uint32_t type, const uint8_t *native, uint8_t *out, size_t n_blocks) {
  for (size_t b = 0; b < n_blocks; b++) {
    if (type == 8) {
      const uint8_t *src = native + b * 34;
      memcpy(out + b * 32, src + 2, 32);
      memcpy(out + n_blocks * 32 + b * 2, src, 2);
    } else {
      const uint8_t *src = native + b * 210;
      memcpy(out + b * 128, src, 128);
      memcpy(out + n_blocks * 128 + b * 64, src + 128, 64);
      memcpy(out + n_blocks * 192 + b * 16, src + 192, 16);
      memcpy(out + n_blocks * 208 + b * 2, src + 208, 2);
    }
  }
}

static hx_tensor rows_of(hx_tensor t, int64_t row0, int64_t n) {
  t.offset += (size_t)row0 * t.row_bytes;
  t.n_rows = n;
  return t;
}

/* Q4_K mat-vecs at sizes the other cases miss: 20,001 rows (more warps than
 * fit at once, an odd last row) of 11 super-blocks with a bias, and three jobs
 * in one launch with odd, unequal row counts (q/k/v). */
static void test_matvec_q4k_shapes(void **state) {
  (void)state;
  const int64_t n_in = 2816, n_big = 20001;
  pair w = quant_weights(12, n_big, n_in, 0.05f);
  float *xv = rand_vec((size_t)n_in, 1.0f), *bv = rand_vec((size_t)n_big, 0.1f);
  pair x = make_pair(0, n_in, 1, xv), y = make_pair(0, n_big, 1, NULL);
  pair b = make_pair(0, n_big, 1, bv);
  int n_tok = 1;
  BOTH(g_cpu.ops->matmul(g_cpu.be, y.c, w.c, x.c, b.c),
       g_gpu.ops->matmul(g_gpu.be, y.g, w.g, x.g, b.g));
  check("matvec q4_K 20001x2816 +bias ", nmse_pair(&y), 2e-4);
  free_pair(&w), free_pair(&y), free_pair(&b), free_pair(&x), free(xv), free(bv);

  const int64_t n4 = 4096, rows[3] = {4097, 1023, 777};
  float *x4 = rand_vec((size_t)n4, 1.0f);
  pair xx = make_pair(0, n4, 1, x4);
  pair ws[3], ys[3];
  hx_tensor wc[3], wg[3], yc[3], yg[3];
  for (int i = 0; i < 3; i++) {
    ws[i] = quant_weights(12, rows[i], n4, 0.05f);
    ys[i] = make_pair(0, rows[i], 1, NULL);
    wc[i] = ws[i].c, wg[i] = ws[i].g, yc[i] = ys[i].c, yg[i] = ys[i].g;
  }
  BOTH(g_cpu.ops->matmul_n(g_cpu.be, 3, yc, wc, xx.c, NULL),
       g_gpu.ops->matmul_n(g_gpu.be, 3, yg, wg, xx.g, NULL));
  for (int i = 0; i < 3; i++) {
    char what[80];
    snprintf(what, sizeof what, "matmul_n q4_K job %d: %lldx4096", i, (long long)rows[i]);
    check(what, nmse_pair(&ys[i]), 2e-4);
    free_pair(&ws[i]), free_pair(&ys[i]);
  }
  free_pair(&xx), free(x4);
}

static void planar_case(uint32_t type, int64_t n_rows, int64_t n_cols) {
  hx_err err;
  const char *tn = quant_type_name(type);
  uint8_t *native = rand_native_quant(type, n_rows, n_cols);
  pair w = make_pair(type, n_cols, n_rows, native);
  g_gpu.ops->weight_prepare(g_gpu.be, w.g);
  g_gpu.ops->weight_prepare(g_gpu.be, w.g); /* a second call (a tied table) leaves it as it is */
  g_gpu.ops->weight_prepare(g_gpu.be, rows_of(w.g, 5, 3)); /* as does a view inside it */

  /* the repack alone against the layout's definition (the native bytes where
     HX_CUDA_PLANAR=0 or HX_MV_STREAM=0 keep the native layout) */
  const char *e_planar = getenv("HX_CUDA_PLANAR"), *e_stream = getenv("HX_MV_STREAM");
  bool planar = !(e_planar && strcmp(e_planar, "0") == 0) && !(e_stream && e_stream[0] == '0');
  uint8_t *got = malloc(w.bytes), *want = malloc(w.bytes);
  assert_int_equal(g_gpu.ops->buf_download(g_gpu.be, w.g.buf, 0, got, w.bytes, &err), HX_OK);
  size_t qk = type == 8 ? 32 : 256;
  if (planar)
    planar_reference(type, native, want, (size_t)n_rows * ((size_t)n_cols / qk));
  else
    memcpy(want, native, w.bytes);
  if (memcmp(got, want, w.bytes) != 0) {
    size_t i = 0;
    while (got[i] == want[i])
      i++;
    fail_msg("repack %s %lldx%lld: byte %zu is %u, want %u", tn, (long long)n_rows,
             (long long)n_cols, i, got[i], want[i]);
  }
  printf("  repack %s %lldx%lld: bytes match the %s layout\n", tn, (long long)n_rows,
         (long long)n_cols, planar ? "planar" : "native");
  free(got), free(want);

  char what[96];
  /* mat-vec (n = 1) and GEMM (n = 37) on the whole matrix and on a view from row 5 */
  const int64_t view0 = 5, view_rows = n_rows - 5 - 2;
  for (int view = 0; view < 2; view++) {
    hx_tensor wc = view ? rows_of(w.c, view0, view_rows) : w.c;
    hx_tensor wg = view ? rows_of(w.g, view0, view_rows) : w.g;
    int64_t n_out = wc.n_rows;
    for (int n_tok = 1; n_tok <= 37; n_tok += 36) {
      float *xv = rand_vec((size_t)(n_tok * n_cols), 1.0f), *bv = rand_vec((size_t)n_out, 0.1f);
      pair x = make_pair(0, n_cols, n_tok, xv), y = make_pair(0, n_out, n_tok, NULL);
      pair b = make_pair(0, n_out, 1, bv);
      BOTH(g_cpu.ops->matmul(g_cpu.be, y.c, wc, x.c, view ? b.c : none),
           g_gpu.ops->matmul(g_gpu.be, y.g, wg, x.g, view ? b.g : none));
      snprintf(what, sizeof what, "planar matmul %s %lldx%lld%s n=%d", tn, (long long)n_out,
               (long long)n_cols, view ? " (rows 5..)" : "", n_tok);
      check(what, nmse_pair(&y), 2e-4);
      free_pair(&x), free_pair(&y), free_pair(&b);
      free(xv), free(bv);
    }
  }
  /* one token, two matvecs on the same activation (the fused multi-matvec):
     the whole matrix and the view */
  {
    int n_tok = 1;
    float *xv = rand_vec((size_t)n_cols, 1.0f);
    pair x = make_pair(0, n_cols, 1, xv);
    pair y0 = make_pair(0, n_rows, 1, NULL), y1 = make_pair(0, view_rows, 1, NULL);
    hx_tensor yc[2] = {y0.c, y1.c}, yg[2] = {y0.g, y1.g};
    hx_tensor wcs[2] = {w.c, rows_of(w.c, view0, view_rows)};
    hx_tensor wgs[2] = {w.g, rows_of(w.g, view0, view_rows)};
    BOTH(g_cpu.ops->matmul_n(g_cpu.be, 2, yc, wcs, x.c, NULL),
         g_gpu.ops->matmul_n(g_gpu.be, 2, yg, wgs, x.g, NULL));
    snprintf(what, sizeof what, "planar matmul_n %s %lldx%lld (whole, rows 5..)", tn,
             (long long)n_rows, (long long)n_cols);
    check(what, nmse_pair(&y0), 2e-4);
    check(what, nmse_pair(&y1), 2e-4);
    free_pair(&x), free_pair(&y0), free_pair(&y1);
    free(xv);
  }
  /* get_rows (a tied embedding table), whole and through the view */
  for (int view = 0; view < 2; view++) {
    int n_tok = 4;
    int32_t idv[4] = {0, (int32_t)(view ? view_rows - 1 : n_rows - 1), 3, 3};
    pair ids = make_pair(26, 4, 1, idv), out = make_pair(0, n_cols, 4, NULL);
    hx_tensor tc = view ? rows_of(w.c, view0, view_rows) : w.c;
    hx_tensor tg = view ? rows_of(w.g, view0, view_rows) : w.g;
    BOTH(g_cpu.ops->get_rows(g_cpu.be, out.c, tc, ids.c, 4),
         g_gpu.ops->get_rows(g_gpu.be, out.g, tg, ids.g, 4));
    snprintf(what, sizeof what, "planar get_rows %s %lldx%lld%s", tn, (long long)n_rows,
             (long long)n_cols, view ? " (rows 5..)" : "");
    check(what, nmse_pair(&out), 1e-10);
    free_pair(&ids), free_pair(&out);
  }
  /* an upload over the whole matrix makes it native again */
  assert_int_equal(g_gpu.ops->buf_upload(g_gpu.be, w.g.buf, 0, native, w.bytes, &err), HX_OK);
  {
    int n_tok = 1;
    float *xv = rand_vec((size_t)n_cols, 1.0f);
    pair x = make_pair(0, n_cols, 1, xv), y = make_pair(0, n_rows, 1, NULL);
    BOTH(g_cpu.ops->matmul(g_cpu.be, y.c, w.c, x.c, none),
         g_gpu.ops->matmul(g_gpu.be, y.g, w.g, x.g, none));
    snprintf(what, sizeof what, "re-uploaded (native) matmul %s %lldx%lld", tn, (long long)n_rows,
             (long long)n_cols);
    check(what, nmse_pair(&y), 2e-4);
    free_pair(&x), free_pair(&y);
    free(xv);
  }
  free_pair(&w);
  free(native);
}

static void test_planar(void **state) {
  (void)state;
  hx_err err;
  /* rows of 12288 need more activation scratch than setup's 4096 */
  assert_int_equal(g_cpu.ops->reserve(g_cpu.be, 64, 12288, 8192, &err), HX_OK);
  assert_int_equal(g_gpu.ops->reserve(g_gpu.be, 64, 12288, 8192, &err), HX_OK);
  const uint32_t types[] = {8, 14};
  const int64_t shapes[][2] = {{37, 256}, {1000, 256}, {37, 4096}, {1000, 4096}, {37, 12288}};
  for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
      planar_case(types[ti], shapes[si][0], shapes[si][1]);
}

/* A large matrix prepared right after its upload from a mapped file (a
 * Qwen3-0.6B tied embedding table: 151936 x 1024 Q6_K, 127 MB), three times:
 * the repack must see every uploaded byte. Uploads once used a plain cudaMemcpy,
 * which runs on the legacy stream (not ordered with the backend's non-blocking
 * stream) and can return before its DMA lands; this check passed with that
 * code too on an H100, so it guards the upload-then-prepare path rather than
 * reproducing the race (docs/benchmarks.md, CUDA). */
static void test_planar_after_large_upload(void **state) {
  (void)state;
  const char *e_planar = getenv("HX_CUDA_PLANAR"), *e_stream = getenv("HX_MV_STREAM");
  if ((e_planar && strcmp(e_planar, "0") == 0) || (e_stream && e_stream[0] == '0'))
    skip();
  hx_err err;
  const int64_t n_rows = 151936, n_cols = 1024;
  const size_t rb = hx_backend_row_bytes(14, n_cols), n = rb * (size_t)n_rows;
  uint8_t *bytes = rand_native_quant(14, n_rows, n_cols), *got = malloc(n), *want = malloc(n);
  assert_non_null(got);
  assert_non_null(want);
  planar_reference(14, bytes, want, (size_t)n_rows * (size_t)(n_cols / 256));
  /* uploaded from a mapped file, as the model loader does */
  char path[] = "/tmp/helexa-test-planar-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  for (size_t done = 0; done < n;) {
    ssize_t k = write(fd, bytes + done, n - done);
    assert_true(k > 0);
    done += (size_t)k;
  }
  free(bytes);
  const uint8_t *native = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
  assert_true(native != MAP_FAILED);
  for (int rep = 0; rep < 3; rep++) {
    hx_bbuf *bg = g_gpu.ops->buf_alloc(g_gpu.be, n, &err);
    assert_non_null(bg);
    assert_int_equal(g_gpu.ops->buf_upload(g_gpu.be, bg, 0, native, n, &err), HX_OK);
    hx_tensor t = {bg, 0, 14, n_cols, n_rows, rb};
    g_gpu.ops->weight_prepare(g_gpu.be, t);
    assert_int_equal(g_gpu.ops->buf_download(g_gpu.be, bg, 0, got, n, &err), HX_OK);
    if (memcmp(got, want, n) != 0) {
      size_t i = 0;
      while (got[i] == want[i])
        i++;
      fail_msg("repack right after a %zu MB upload: byte %zu of %zu differs", n >> 20, i, n);
    }
    g_gpu.ops->buf_free(g_gpu.be, bg);
  }
  printf("  repack right after a %zu MB upload from a mapped file (3 times): bytes match the "
         "planar layout\n",
         n >> 20);
  munmap((void *)native, n);
  close(fd);
  free(got), free(want);
}

static int setup(void **state) {
  (void)state;
#ifdef HELEXA_HAVE_CUDA
  hx_err err;
  if (hx_backend_cpu_init(&g_cpu, 4, &err) != HX_OK)
    return -1;
  if (hx_backend_cuda_init(&g_gpu, 0, &err) != HX_OK)
    return -1;
  if (g_cpu.ops->reserve(g_cpu.be, 64, 4096, 8192, &err) ||
      g_gpu.ops->reserve(g_gpu.be, 64, 4096, 8192, &err))
    return -1;
  return 0;
#else
  return -1;
#endif
}

static int teardown(void **state) {
  (void)state;
  hx_backend_cpu_free(&g_cpu);
#ifdef HELEXA_HAVE_CUDA
  hx_backend_cuda_free(&g_gpu);
#endif
  return 0;
}

#endif

int main(void) {
#ifndef HELEXA_HAVE_CUDA
  printf("built without CUDA: skipped\n");
  return 77;
#else
  if (hx_backend_cuda_device_count() == 0) {
    printf("no CUDA device: skipped\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_matvec_q4k_shapes),
      cmocka_unit_test(test_get_rows_norms),
      cmocka_unit_test(test_rope),
      cmocka_unit_test(test_attention),
      cmocka_unit_test(test_elementwise_topk),
      cmocka_unit_test(test_graph_replay),
      cmocka_unit_test(test_decode_layer_fused),
      cmocka_unit_test(test_planar_after_large_upload),
      cmocka_unit_test(test_planar),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
#endif
}
