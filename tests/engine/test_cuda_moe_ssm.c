/* test_cuda_moe_ssm.c — the CUDA backend's MoE and DeltaNet ops against the
 * CPU backend on random inputs: routing (ids exact, weights), the expert
 * matmul selected by ids in its decode (slot, dp4a and f32 activations) and
 * prefill (grouped, several id windows and list passes) forms for every weight type, the
 * combine with and without the shared expert, conv1d with its window carried
 * across calls, the delta rule (recurrent against recurrent and against the
 * CPU's chunked form, both value-head orders, column views, a non-zero start
 * state), gated norm, sigmoid gate, zero; and a MoE FFN decode step replayed
 * from the captured graph. Output buffers are poisoned (NaN) so unwritten
 * elements fail. Bounds are normalized MSE (see check()). Skipped (77)
 * without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/quant.h"
#ifdef HELEXA_HAVE_CUDA
#include "engine/backend/cuda/backend_cuda.h"
#endif

#ifdef HELEXA_HAVE_CUDA
static hx_backend g_cpu, g_gpu;
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static float frand(void) { /* uniform in [-1, 1) */
  return (float)((rnd() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
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
  size_t rb = type == QUANT_I32 ? (size_t)n_cols * 4 : hx_backend_row_bytes(type, n_cols);
  assert_true(rb > 0);
  p.bytes = rb * (size_t)n_rows;
  hx_err err;
  hx_bbuf *bc = g_cpu.ops->buf_alloc(g_cpu.be, p.bytes, &err);
  hx_bbuf *bg = g_gpu.ops->buf_alloc(g_gpu.be, p.bytes, &err);
  assert_non_null(bc);
  assert_non_null(bg);
  p.c = (hx_tensor){bc, 0, type, n_cols, n_rows, rb};
  p.g = (hx_tensor){bg, 0, type, n_cols, n_rows, rb};
  void *fill = NULL;
  if (!data) { /* poison */
    fill = malloc(p.bytes);
    memset(fill, 0xff, p.bytes);
  }
  assert_int_equal(g_cpu.ops->buf_upload(g_cpu.be, bc, 0, data ? data : fill, p.bytes, &err),
                   HX_OK);
  assert_int_equal(g_gpu.ops->buf_upload(g_gpu.be, bg, 0, data ? data : fill, p.bytes, &err),
                   HX_OK);
  free(fill);
  return p;
}

static void upload(pair *p, const void *data) {
  hx_err err;
  assert_int_equal(g_cpu.ops->buf_upload(g_cpu.be, p->c.buf, 0, data, p->bytes, &err), HX_OK);
  assert_int_equal(g_gpu.ops->buf_upload(g_gpu.be, p->g.buf, 0, data, p->bytes, &err), HX_OK);
}

static void free_pair(pair *p) {
  g_cpu.ops->buf_free(g_cpu.be, p->c.buf);
  g_gpu.ops->buf_free(g_gpu.be, p->g.buf);
}

/* rows [r0, r0+n) and columns [c0, c0+nc) of an f32 tensor: a view. */
static hx_tensor sub(hx_tensor t, int64_t r0, int64_t n, int64_t c0, int64_t nc) {
  hx_tensor v = t;
  v.offset += (size_t)r0 * t.row_bytes + (size_t)c0 * 4;
  v.n_rows = n;
  v.n_cols = nc;
  return v;
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

static void download_both(const pair *p, void *c, void *g) {
  hx_err err;
  assert_int_equal(g_cpu.ops->buf_download(g_cpu.be, p->c.buf, 0, c, p->bytes, &err), HX_OK);
  assert_int_equal(g_gpu.ops->buf_download(g_gpu.be, p->g.buf, 0, g, p->bytes, &err), HX_OK);
}

/* NMSE of b against a over n floats (a non-finite value anywhere → inf). */
static double nmse_f32(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(a[i]) || !isfinite(b[i]))
      return INFINITY;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)a[i] * a[i];
  }
  return den > 0 ? num / den : num;
}

/* NMSE of gpu vs cpu over an f32 pair. */
static double nmse_pair(const pair *p) {
  float *a = malloc(p->bytes), *b = malloc(p->bytes);
  download_both(p, a, b);
  const double e = nmse_f32(a, b, p->bytes / 4);
  free(a);
  free(b);
  return e;
}

/* The experts the CPU and CUDA routings chose (an i32 pair) must be the same. */
static void same_experts(const pair *ids, const char *what, int step) {
  int32_t ic[64], ig[64];
  assert_true(ids->bytes <= sizeof ic);
  download_both(ids, ic, ig);
  for (size_t j = 0; j < ids->bytes / sizeof ic[0]; j++)
    if (ic[j] != ig[j])
      fail_msg("%s step %d: slot %zu cpu expert %d, cuda %d", what, step, j, ic[j], ig[j]);
}

static void step_end_ok(hx_backend *b) {
  hx_err e;
  if (b->ops->step_end(b->be, &e) != HX_OK)
    fail_msg("%s step failed: %s", b->ops->name, e.msg);
}

#define BOTH(n_tokens, call_c, call_g)                                                             \
  do {                                                                                             \
    g_cpu.ops->step_begin(g_cpu.be, n_tokens);                                                     \
    call_c;                                                                                        \
    step_end_ok(&g_cpu);                                                                           \
    g_gpu.ops->step_begin(g_gpu.be, n_tokens);                                                     \
    call_g;                                                                                        \
    step_end_ok(&g_gpu);                                                                           \
  } while (0)

static const hx_tensor none = {0};

static void check(const char *what, double nmse, double bound) {
  printf("  %-58s nmse %.3g (bound %.1g)\n", what, nmse, bound);
  if (!(nmse <= bound))
    fail_msg("%s: nmse %g above %g", what, nmse, bound);
}

/* ---- MoE -------------------------------------------------------------------- */

static void route_case(int n, int n_exp, int k, int renorm, bool ties) {
  float *lv = rand_vec((size_t)n * n_exp, 4.0f);
  if (ties) /* equal logits: the lower expert id comes first */
    for (int t = 0; t < n; t++)
      for (int e = 0; e < n_exp; e += 3)
        lv[(size_t)t * n_exp + e] = 5.0f;
  pair l = make_pair(QUANT_F32, n_exp, n, lv), w = make_pair(QUANT_F32, k, n, NULL);
  pair ids = make_pair(QUANT_I32, k, n, NULL);
  BOTH(n, g_cpu.ops->moe_route(g_cpu.be, w.c, ids.c, l.c, k, renorm),
       g_gpu.ops->moe_route(g_gpu.be, w.g, ids.g, l.g, k, renorm));
  int32_t *ic = malloc(ids.bytes), *ig = malloc(ids.bytes);
  download_both(&ids, ic, ig);
  for (int i = 0; i < n * k; i++)
    if (ic[i] != ig[i])
      fail_msg("moe_route n%d X%d k%d: slot %d cpu expert %d, cuda %d", n, n_exp, k, i, ic[i],
               ig[i]);
  char what[96];
  snprintf(what, sizeof what, "moe_route n=%d X=%d k=%d renorm=%d%s (ids equal)", n, n_exp, k,
           renorm, ties ? " ties" : "");
  check(what, nmse_pair(&w), 1e-10);
  free_pair(&l), free_pair(&w), free_pair(&ids);
  free(lv), free(ic), free(ig);
}

static void test_moe_route(void **state) {
  (void)state;
  route_case(1, 128, 8, 1, false);  /* Qwen3-30B-A3B decode */
  route_case(3, 512, 10, 1, false); /* Qwen3-Next */
  route_case(37, 60, 4, 0, false);
  route_case(5, 7, 7, 1, false); /* k == n_expert */
  route_case(4, 64, 6, 1, true);
}

/* k distinct experts per token, as routing makes them. */
static int32_t *random_ids(int n, int k, int n_exp) {
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)n * k);
  for (int t = 0; t < n; t++)
    for (int j = 0; j < k; j++) {
      int32_t e;
      bool dup;
      do {
        e = (int32_t)(rnd() % (uint64_t)n_exp);
        dup = false;
        for (int i = 0; i < j; i++)
          dup = dup || ids[t * k + i] == e;
      } while (dup);
      ids[t * k + j] = e;
    }
  return ids;
}

/* One expert matmul: n_w weights of type `type`, n tokens, k slots, inputs
 * per token (gate/up) or per slot (down). */
static void mm_id_case(uint32_t type, int n_exp, int64_t n_out, int64_t n_in, int n, int k,
                       bool per_slot, int n_w, double bound, const char *form) {
  pair w[2], y[2];
  for (int i = 0; i < n_w; i++) {
    w[i] = quant_weights(type, (int64_t)n_exp * n_out, n_in, 0.1f);
    y[i] = make_pair(QUANT_F32, n_out, (int64_t)n * k, NULL);
  }
  const int64_t x_rows = per_slot ? (int64_t)n * k : n;
  float *xv = rand_vec((size_t)(x_rows * n_in), 1.0f);
  int32_t *iv = random_ids(n, k, n_exp);
  pair x = make_pair(QUANT_F32, n_in, x_rows, xv), ids = make_pair(QUANT_I32, k, n, iv);
  hx_tensor wc[2] = {w[0].c, w[n_w - 1].c}, wg[2] = {w[0].g, w[n_w - 1].g};
  hx_tensor yc[2] = {y[0].c, y[n_w - 1].c}, yg[2] = {y[0].g, y[n_w - 1].g};
  BOTH(n, g_cpu.ops->moe_matmul_id(g_cpu.be, n_w, yc, wc, x.c, ids.c),
       g_gpu.ops->moe_matmul_id(g_gpu.be, n_w, yg, wg, x.g, ids.g));
  for (int i = 0; i < n_w; i++) {
    char what[128];
    snprintf(what, sizeof what, "moe_matmul_id %s X%d %lldx%lld n=%d k=%d%s w%d/%d (%s)",
             quant_type_name((quant_type)type), n_exp, (long long)n_out, (long long)n_in, n, k,
             per_slot ? " per-slot" : "", i + 1, n_w, form);
    check(what, nmse_pair(&y[i]), bound);
    free_pair(&w[i]), free_pair(&y[i]);
  }
  free_pair(&x), free_pair(&ids);
  free(xv), free(iv);
}

static void test_moe_matmul_id(void **state) {
  (void)state;
  const uint32_t types[] = {QUANT_F32,  QUANT_F16,  QUANT_BF16, QUANT_Q8_0,
                            QUANT_Q4_K, QUANT_Q5_K, QUANT_Q6_K};
  /* as test_cuda_ops' matmul: F32 weights differ by summation order only;
   * the grouped (prefill) form runs on tensor cores with activations rounded
   * to f16 (bf16 for BF16 weights: ~5e-6 NMSE) where the CPU keeps f32;
   * quantized weights: each side rounds activations in its own way (8-bit
   * blocks of 32 or 256 on the CPU; q8_1 blocks in decode, f16 in prefill). */
  const double bound[] = {1e-10, 1e-6, 5e-5, 2e-4, 2e-4, 2e-4, 2e-4};
  for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
    const uint32_t t = types[ti];
    /* decode: gate + up on one token, then down with one input per slot */
    mm_id_case(t, 8, 96, 512, 1, 4, false, 2, bound[ti], "slot");
    mm_id_case(t, 8, 75, 256, 1, 4, true, 1, bound[ti], "slot");
    /* a few tokens: still the slot form */
    mm_id_case(t, 16, 64, 512, 3, 2, false, 2, bound[ti], "slot");
    /* rows of 3 super-blocks (several rows per warp), and of 32 (two
     * batches of loads per row) in the Q4_K streaming form */
    mm_id_case(t, 8, 50, 768, 1, 4, true, 1, bound[ti], "slot, 768 wide");
    mm_id_case(t, 4, 12, 8192, 1, 2, false, 2, bound[ti], "slot, 8192 wide");
    /* slot form with activations too wide for the q8 scratch: f32 activations */
    mm_id_case(t, 12, 40, 1024, 4, 8, true, 1, bound[ti], "slot, f32 activations");
    /* prefill: grouped by expert; 300 x 4 slots span two id windows */
    mm_id_case(t, 16, 96, 512, 37, 4, false, 2, bound[ti], "grouped");
    mm_id_case(t, 16, 70, 256, 37, 4, true, 1, bound[ti], "grouped");
    mm_id_case(t, 6, 33, 256, 300, 4, true, 1, bound[ti], "grouped, 2 windows");
    /* every token on every expert: 900 slots each, more than one gathered
     * list (1024 entries, refilled from 768) holds */
    mm_id_case(t, 4, 40, 256, 900, 4, false, 1, bound[ti], "grouped, 2 list passes");
    /* a width that ends inside a 64-column step (blocks of 32 only) */
    if (t == QUANT_F16 || t == QUANT_BF16 || t == QUANT_Q8_0)
      mm_id_case(t, 8, 40, 96, 20, 2, true, 2, bound[ti], "grouped, partial step");
  }
}

static void test_moe_combine(void **state) {
  (void)state;
  const int n = 5, k = 3, d = 300;
  float *yv = rand_vec((size_t)n * k * d, 1.0f), *wv = rand_vec((size_t)n * k, 1.0f);
  float *sv = rand_vec((size_t)n * d, 1.0f), *gv = rand_vec((size_t)n, 3.0f);
  pair y = make_pair(QUANT_F32, d, n * k, yv), w = make_pair(QUANT_F32, k, n, wv);
  pair sh = make_pair(QUANT_F32, d, n, sv), sg = make_pair(QUANT_F32, 1, n, gv);
  pair out = make_pair(QUANT_F32, d, n, NULL);
  BOTH(n, g_cpu.ops->moe_combine(g_cpu.be, out.c, y.c, w.c, none, none),
       g_gpu.ops->moe_combine(g_gpu.be, out.g, y.g, w.g, none, none));
  check("moe_combine", nmse_pair(&out), 1e-12);
  BOTH(n, g_cpu.ops->moe_combine(g_cpu.be, out.c, y.c, w.c, sh.c, sg.c),
       g_gpu.ops->moe_combine(g_gpu.be, out.g, y.g, w.g, sh.g, sg.g));
  check("moe_combine + shared expert", nmse_pair(&out), 1e-12);
  BOTH(n, g_cpu.ops->moe_combine(g_cpu.be, sh.c, y.c, w.c, sh.c, sg.c),
       g_gpu.ops->moe_combine(g_gpu.be, sh.g, y.g, w.g, sh.g, sg.g));
  check("moe_combine + shared expert, out aliases shared", nmse_pair(&sh), 1e-12);
  free_pair(&y), free_pair(&w), free_pair(&sh), free_pair(&sg), free_pair(&out);
  free(yv), free(wv), free(sv), free(gv);
}

/* A MoE FFN decode step (route, gate/up, swiglu, down, combine with a shared
 * expert) run 12 times with new inputs: the CUDA steps after the first replay
 * the captured graph (the chosen experts change, the record does not). */
static void test_moe_decode_graph(void **state) {
  (void)state;
  const int E = 512, X = 32, F = 256, k = 4, Fs = 256;
  pair router = quant_weights(QUANT_F32, X, E, 0.3f);
  pair wg = quant_weights(QUANT_Q4_K, (int64_t)X * F, E, 0.1f);
  pair wu = quant_weights(QUANT_Q4_K, (int64_t)X * F, E, 0.1f);
  pair wd = quant_weights(QUANT_Q6_K, (int64_t)X * E, F, 0.1f);
  pair sgw = quant_weights(QUANT_Q8_0, Fs, E, 0.1f), suw = quant_weights(QUANT_Q8_0, Fs, E, 0.1f);
  pair sdw = quant_weights(QUANT_Q8_0, E, Fs, 0.1f), sgate = quant_weights(QUANT_F32, 1, E, 0.3f);
  pair x = make_pair(QUANT_F32, E, 1, NULL), logits = make_pair(QUANT_F32, X, 1, NULL);
  pair wts = make_pair(QUANT_F32, k, 1, NULL), ids = make_pair(QUANT_I32, k, 1, NULL);
  pair eg = make_pair(QUANT_F32, F, k, NULL), eu = make_pair(QUANT_F32, F, k, NULL);
  pair ed = make_pair(QUANT_F32, E, k, NULL), sg = make_pair(QUANT_F32, Fs, 1, NULL);
  pair su = make_pair(QUANT_F32, Fs, 1, NULL), sh = make_pair(QUANT_F32, E, 1, NULL);
  pair shg = make_pair(QUANT_F32, 1, 1, NULL), out = make_pair(QUANT_F32, E, 1, NULL);
  long replayed0 = 0, captured0 = 0, replayed = 0, captured = 0;
  hx_backend_cuda_graph_stats(&g_gpu, &replayed0, &captured0);
  for (int step = 0; step < 12; step++) {
    float *xv = rand_vec(E, 1.0f);
    upload(&x, xv);
    free(xv);
#define FFN(B, S)                                                                                  \
  do {                                                                                             \
    const hx_tensor ys[4] = {logits.S, sg.S, su.S, shg.S};                                         \
    const hx_tensor ws[4] = {router.S, sgw.S, suw.S, sgate.S};                                     \
    const hx_tensor gu_y[2] = {eg.S, eu.S}, gu_w[2] = {wg.S, wu.S};                                \
    B.ops->matmul_n(B.be, 4, ys, ws, x.S, NULL);                                                   \
    B.ops->moe_route(B.be, wts.S, ids.S, logits.S, k, 1);                                          \
    B.ops->moe_matmul_id(B.be, 2, gu_y, gu_w, x.S, ids.S);                                         \
    B.ops->swiglu(B.be, eg.S, eg.S, eu.S);                                                         \
    B.ops->moe_matmul_id(B.be, 1, &ed.S, &wd.S, eg.S, ids.S);                                      \
    B.ops->swiglu(B.be, sg.S, sg.S, su.S);                                                         \
    B.ops->matmul(B.be, sh.S, sdw.S, sg.S, none);                                                  \
    B.ops->moe_combine(B.be, out.S, ed.S, wts.S, sh.S, shg.S);                                     \
  } while (0)
    BOTH(1, FFN(g_cpu, c), FFN(g_gpu, g));
#undef FFN
    same_experts(&ids, "decode", step);
    const double e = nmse_pair(&out);
    if (!(e < 1e-3)) /* three quantized matmuls in a row, activations rounded differently */
      fail_msg("moe decode step %d: nmse %g", step, e);
  }
  hx_backend_cuda_graph_stats(&g_gpu, &replayed, &captured);
  printf("  moe decode: %ld replayed, %ld captured over 12 steps\n", replayed - replayed0,
         captured - captured0);
  /* HX_CUDA_GRAPHS=0 runs every step eagerly: nothing is replayed */
  const char *graphs = getenv("HX_CUDA_GRAPHS");
  if (!graphs || strcmp(graphs, "0") != 0)
    assert_true(replayed - replayed0 >= 10);
  pair all[] = {router, wg,  wu, wd, sgw, suw, sdw, sgate, x,   logits,
                wts,    ids, eg, eu, ed,  sg,  su,  sh,    shg, out};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    free_pair(&all[i]);
}

/* nmse between the CUDA sides of two pairs of one shape; *same: bitwise equal. */
static double nmse_gpu(const pair *a, const pair *b, bool *same) {
  hx_err err;
  float *va = malloc(a->bytes), *vb = malloc(b->bytes);
  assert_int_equal(a->bytes, b->bytes);
  assert_int_equal(g_gpu.ops->buf_download(g_gpu.be, a->g.buf, 0, va, a->bytes, &err), HX_OK);
  assert_int_equal(g_gpu.ops->buf_download(g_gpu.be, b->g.buf, 0, vb, b->bytes, &err), HX_OK);
  *same = memcmp(va, vb, a->bytes) == 0;
  const double e = nmse_f32(va, vb, a->bytes / 4);
  free(va);
  free(vb);
  return e;
}

/* The one-token MoE fusions of the CUDA backend (route + quantize, gate/up +
 * SwiGLU, down + combine), chosen when the ops are recorded in the model's
 * order (A): against the CPU backend, and against the same ops recorded with
 * a zero op between them (B: nothing fused), which must give the same values
 * (the fused kernels compute the same sums in the same order). Shapes: k
 * below, at and above the down kernel's 8 warps; expert widths of one and of
 * two q8_1 blocks per lane; with and without the shared expert; every
 * quantized type on either side. */
static void moe_fused_case(uint32_t t_gu, uint32_t t_d, int E, int X, int F, int k, int Fs) {
  pair router = quant_weights(QUANT_F32, X, E, 0.3f);
  pair wg = quant_weights(t_gu, (int64_t)X * F, E, 0.1f);
  pair wu = quant_weights(t_gu, (int64_t)X * F, E, 0.1f);
  pair wd = quant_weights(t_d, (int64_t)X * E, F, 0.1f);
  pair x = make_pair(QUANT_F32, E, 1, NULL), logits = make_pair(QUANT_F32, X, 1, NULL);
  pair wts = make_pair(QUANT_F32, k, 1, NULL), ids = make_pair(QUANT_I32, k, 1, NULL);
  pair dummy = make_pair(QUANT_F32, 32, 1, NULL);
  pair eg[2], eu[2], ed[2], out[2], sg[2], su[2], sh[2];
  for (int v = 0; v < 2; v++) {
    eg[v] = make_pair(QUANT_F32, F, k, NULL), eu[v] = make_pair(QUANT_F32, F, k, NULL);
    ed[v] = make_pair(QUANT_F32, E, k, NULL), out[v] = make_pair(QUANT_F32, E, 1, NULL);
    sg[v] = make_pair(QUANT_F32, Fs ? Fs : 32, 1, NULL);
    su[v] = make_pair(QUANT_F32, Fs ? Fs : 32, 1, NULL);
    sh[v] = make_pair(QUANT_F32, E, 1, NULL);
  }
  pair sgw = quant_weights(QUANT_Q8_0, Fs ? Fs : 32, E, 0.1f);
  pair suw = quant_weights(QUANT_Q8_0, Fs ? Fs : 32, E, 0.1f);
  pair sdw = quant_weights(QUANT_Q8_0, E, Fs ? Fs : 32, 0.1f);
  pair sgate = quant_weights(QUANT_F32, 1, E, 0.3f), shg = make_pair(QUANT_F32, 1, 1, NULL);
  for (int step = 0; step < 3; step++) {
    float *xv = rand_vec((size_t)E, 1.0f);
    upload(&x, xv);
    free(xv);
#define FFN(B, S, V, GAP)                                                                          \
  do {                                                                                             \
    const hx_tensor gu_y[2] = {eg[V].S, eu[V].S}, gu_w[2] = {wg.S, wu.S};                          \
    if (Fs) {                                                                                      \
      const hx_tensor ys[4] = {logits.S, sg[V].S, su[V].S, shg.S};                                 \
      const hx_tensor ws[4] = {router.S, sgw.S, suw.S, sgate.S};                                   \
      B.ops->matmul_n(B.be, 4, ys, ws, x.S, NULL);                                                 \
    } else {                                                                                       \
      B.ops->matmul(B.be, logits.S, router.S, x.S, none);                                          \
    }                                                                                              \
    B.ops->moe_route(B.be, wts.S, ids.S, logits.S, k, 1);                                          \
    if (GAP)                                                                                       \
      B.ops->zero(B.be, dummy.S);                                                                  \
    B.ops->moe_matmul_id(B.be, 2, gu_y, gu_w, x.S, ids.S);                                         \
    if (GAP)                                                                                       \
      B.ops->zero(B.be, dummy.S);                                                                  \
    B.ops->swiglu(B.be, eg[V].S, eg[V].S, eu[V].S);                                                \
    if (Fs) {                                                                                      \
      B.ops->swiglu(B.be, sg[V].S, sg[V].S, su[V].S);                                              \
      B.ops->matmul(B.be, sh[V].S, sdw.S, sg[V].S, none);                                          \
    }                                                                                              \
    B.ops->moe_matmul_id(B.be, 1, &ed[V].S, &wd.S, eg[V].S, ids.S);                                \
    if (GAP)                                                                                       \
      B.ops->zero(B.be, dummy.S);                                                                  \
    B.ops->moe_combine(B.be, out[V].S, ed[V].S, wts.S, Fs ? sh[V].S : none, Fs ? shg.S : none);    \
  } while (0)
    BOTH(1, FFN(g_cpu, c, 0, 0), FFN(g_gpu, g, 0, 0));
    g_gpu.ops->step_begin(g_gpu.be, 1);
    FFN(g_gpu, g, 1, 1);
    step_end_ok(&g_gpu);
#undef FFN
    same_experts(&ids, "fused moe", step);
    char what[128];
    snprintf(what, sizeof what, "fused moe %s/%s E=%d X=%d F=%d k=%d Fs=%d step %d vs cpu",
             quant_type_name(t_gu), quant_type_name(t_d), E, X, F, k, Fs, step);
    check(what, nmse_pair(&out[0]), 1e-3);
    const pair *fa[] = {&out[0], &eg[0], &eu[0], &ed[0]}, *fb[] = {&out[1], &eg[1], &eu[1], &ed[1]};
    const char *nm[] = {"out", "silu(gate)*up", "up", "down per slot"};
    for (int i = 0; i < 4; i++) {
      bool same = false;
      const double e = nmse_gpu(fa[i], fb[i], &same);
      snprintf(what, sizeof what, "  fused vs unfused: %s%s", nm[i], same ? " (bitwise)" : "");
      check(what, e, 1e-12);
    }
  }
  pair all[] = {router, wg, wu, wd, x, logits, wts, ids, dummy, sgw, suw, sdw, sgate, shg};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    free_pair(&all[i]);
  for (int v = 0; v < 2; v++) {
    pair more[] = {eg[v], eu[v], ed[v], out[v], sg[v], su[v], sh[v]};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
      free_pair(&more[i]);
  }
}

static void test_moe_decode_fused(void **state) {
  (void)state;
  moe_fused_case(QUANT_Q4_K, QUANT_Q6_K, 512, 32, 256, 8, 0); /* Qwen3-30B-A3B's kinds */
  moe_fused_case(QUANT_Q4_K, QUANT_Q4_K, 768, 24, 768, 8, 256);
  moe_fused_case(QUANT_Q5_K, QUANT_Q8_0, 256, 40, 512, 10, 128); /* k above the warps */
  moe_fused_case(QUANT_Q8_0, QUANT_Q5_K, 288, 16, 256, 3, 0);    /* k below them */
  moe_fused_case(QUANT_Q6_K, QUANT_Q6_K, 512, 20, 1536, 4, 0);   /* two sub-blocks per lane */
}

/* ---- DeltaNet ------------------------------------------------------------------ */

/* conv over pieces of tokens (the window carried between calls), x a column
 * view of a wider row, then in place. */
static void conv_case(int K, int64_t C, const int *pieces) {
  int n = 0;
  for (const int *p = pieces; *p; p++)
    n += *p;
  const int64_t W = C + 24; /* x lives at columns [8, 8+C) of W-wide rows */
  float *xv = rand_vec((size_t)(n * W), 2.0f), *wv = rand_vec((size_t)(C * K), 1.0f);
  float *sv = rand_vec((size_t)((K - 1) * C), 1.0f);
  pair xw = make_pair(QUANT_F32, W, n, xv), w = make_pair(QUANT_F32, K, C, wv);
  pair st = make_pair(QUANT_F32, C, K - 1, sv), out = make_pair(QUANT_F32, C, n, NULL);
  int t0 = 0;
  for (const int *p = pieces; *p; t0 += *p, p++) {
    hx_tensor xc = sub(xw.c, t0, *p, 8, C), xg = sub(xw.g, t0, *p, 8, C);
    hx_tensor oc = sub(out.c, t0, *p, 0, C), og = sub(out.g, t0, *p, 0, C);
    BOTH(*p, g_cpu.ops->ssm_conv(g_cpu.be, oc, xc, w.c, st.c),
         g_gpu.ops->ssm_conv(g_gpu.be, og, xg, w.g, st.g));
  }
  char what[96];
  snprintf(what, sizeof what, "ssm_conv K=%d C=%lld n=%d (pieces)", K, (long long)C, n);
  check(what, nmse_pair(&out), 1e-12);
  check("ssm_conv window state", nmse_pair(&st), 1e-14);
  /* in place on the view, one more piece of up to 3 tokens (x has n rows) */
  const int m = n < 3 ? n : 3;
  hx_tensor xc = sub(xw.c, 0, m, 8, C), xg = sub(xw.g, 0, m, 8, C);
  BOTH(m, g_cpu.ops->ssm_conv(g_cpu.be, xc, xc, w.c, st.c),
       g_gpu.ops->ssm_conv(g_gpu.be, xg, xg, w.g, st.g));
  check("ssm_conv in place", nmse_pair(&xw), 1e-12);
  free_pair(&xw), free_pair(&w), free_pair(&st), free_pair(&out);
  free(xv), free(wv), free(sv);
}

static void test_ssm_conv(void **state) {
  (void)state;
  const int pieces[] = {9, 1, 1, 5, 0}, one[] = {1, 0};
  conv_case(4, 300, pieces);
  conv_case(2, 64, pieces);
  conv_case(8, 1000, pieces);
  conv_case(4, 8192, one); /* Qwen3.5 width, decode */
}

/* The delta rule on both backends: q, k, v column views of one packed row
 * (as the conv output), prefilled as pieces with the given CPU chunk, then
 * n_dec single-token steps (the CUDA ones captured and replayed); outputs
 * and the final state compared. The start state is random, not zero. */
static void delta_case(hx_delta_params p, int cpu_chunk, const int *pieces, int n_dec,
                       double bound) {
  const int nk = p.n_k_heads, nv = p.n_v_heads, dk = p.d_k, dv = p.d_v;
  const int64_t W = 2 * (int64_t)nk * dk + (int64_t)nv * dv;
  int n = n_dec;
  for (const int *pc = pieces; *pc; pc++)
    n += *pc;
  float *qkv = rand_vec((size_t)(n * W), 1.0f), *av = rand_vec((size_t)n * nv, 3.0f);
  float *bv = rand_vec((size_t)n * nv, 3.0f), *s0 = rand_vec((size_t)nv * dk * dv, 0.1f);
  float sa[64], dt[64];
  for (int h = 0; h < nv; h++)
    sa[h] = -expf(1.5f * frand()), dt[h] = frand();
  pair tqkv = make_pair(QUANT_F32, W, n, qkv), ta = make_pair(QUANT_F32, nv, n, av);
  pair tb = make_pair(QUANT_F32, nv, n, bv), tsa = make_pair(QUANT_F32, nv, 1, sa);
  pair tdt = make_pair(QUANT_F32, nv, 1, dt), tst = make_pair(QUANT_F32, (int64_t)dk * dv, nv, s0);
  pair to = make_pair(QUANT_F32, (int64_t)nv * dv, n, NULL);
  int t0 = 0;
  for (const int *pc = pieces; t0 < n; pc += *pc != 0) {
    const int m = *pc ? *pc : 1;
    hx_delta_params pcpu = p, pgpu = p;
    pcpu.chunk = *pc ? cpu_chunk : 0;
    pgpu.chunk = *pc ? 64 : 0;
#define DELTA(B, S, PP)                                                                            \
  B.ops->delta_rule(B.be, sub(to.S, t0, m, 0, (int64_t)nv *dv), sub(tqkv.S, t0, m, 0, nk *dk),     \
                    sub(tqkv.S, t0, m, nk *dk, nk *dk),                                            \
                    sub(tqkv.S, t0, m, 2 * nk * dk, (int64_t)nv * dv), sub(ta.S, t0, m, 0, nv),    \
                    sub(tb.S, t0, m, 0, nv), tsa.S, tdt.S, tst.S, &PP)
    BOTH(m, DELTA(g_cpu, c, pcpu), DELTA(g_gpu, g, pgpu));
#undef DELTA
    t0 += m;
  }
  char what[128];
  snprintf(what, sizeof what, "delta_rule nk%d nv%d dk%d dv%d tiled%d n=%d, cpu chunk %d", nk, nv,
           dk, dv, p.kv_tiled, n, cpu_chunk);
  check(what, nmse_pair(&to), bound);
  check("delta_rule state", nmse_pair(&tst), bound);
  free_pair(&tqkv), free_pair(&ta), free_pair(&tb), free_pair(&tsa), free_pair(&tdt);
  free_pair(&tst), free_pair(&to);
  free(qkv), free(av), free(bv), free(s0);
}

static void test_delta_rule(void **state) {
  (void)state;
  const int pieces[] = {9, 1, 13, 0}, prefill[] = {40, 0};
  for (int tiled = 0; tiled < 2; tiled++) {
    hx_delta_params p = {.n_k_heads = 2,
                         .n_v_heads = 4,
                         .d_k = 128,
                         .d_v = 128,
                         .kv_tiled = tiled,
                         .eps_l2 = 1e-6f}; /* Qwen3.5 head shapes */
    /* recurrent on both: same arithmetic up to summation order and fast-math
       exp/div; chunked on the CPU: the same function, other rounding */
    delta_case(p, 0, pieces, 3, 1e-9);
    delta_case(p, 16, prefill, 2, 1e-7);
  }
  hx_delta_params q = {.n_k_heads = 3, .n_v_heads = 3, .d_k = 32, .d_v = 48, .eps_l2 = 1e-6f};
  delta_case(q, 0, pieces, 2, 1e-9);
  hx_delta_params r = {.n_k_heads = 2, .n_v_heads = 6, .d_k = 16, .d_v = 8, .eps_l2 = 1e-6f};
  delta_case(r, 0, pieces, 2, 1e-9);
  hx_delta_params s = {.n_k_heads = 1, .n_v_heads = 2, .d_k = 256, .d_v = 256, .eps_l2 = 1e-6f};
  delta_case(s, 0, pieces, 1, 1e-9);
  hx_delta_params u = {.n_k_heads = 2, .n_v_heads = 2, .d_k = 40, .d_v = 72, .eps_l2 = 1e-6f};
  delta_case(u, 0, pieces, 1, 1e-9);
}

static void test_gated_norm_sigmoid_zero(void **state) {
  (void)state;
  const int n = 3;
  const int hds[] = {128, 64, 48};
  for (int i = 0; i < 3; i++) {
    const int hd = hds[i], H = 5, D = H * hd;
    float *xv = rand_vec((size_t)n * D, 2.0f), *zv = rand_vec((size_t)n * D, 2.0f);
    float *wv = rand_vec((size_t)hd, 1.0f);
    pair x = make_pair(QUANT_F32, D, n, xv), z = make_pair(QUANT_F32, D, n, zv);
    pair w = make_pair(QUANT_F32, hd, 1, wv), o = make_pair(QUANT_F32, D, n, NULL);
    BOTH(n, g_cpu.ops->gated_norm(g_cpu.be, o.c, x.c, z.c, w.c, hd, 1e-6f),
         g_gpu.ops->gated_norm(g_gpu.be, o.g, x.g, z.g, w.g, hd, 1e-6f));
    char what[64];
    snprintf(what, sizeof what, "gated_norm head_dim %d", hd);
    check(what, nmse_pair(&o), 1e-10);
    BOTH(n, g_cpu.ops->gated_norm(g_cpu.be, x.c, x.c, z.c, w.c, hd, 1e-6f),
         g_gpu.ops->gated_norm(g_gpu.be, x.g, x.g, z.g, w.g, hd, 1e-6f));
    check("gated_norm in place", nmse_pair(&x), 1e-10);
    free_pair(&x), free_pair(&z), free_pair(&w), free_pair(&o);
    free(xv), free(zv), free(wv);
  }
  const int64_t d = 1000;
  float *xv = rand_vec((size_t)(n * d), 2.0f), *gv = rand_vec((size_t)(n * d), 4.0f);
  pair x = make_pair(QUANT_F32, d, n, xv), g = make_pair(QUANT_F32, d, n, gv);
  pair g1 = make_pair(QUANT_F32, 1, n, gv), o = make_pair(QUANT_F32, d, n, NULL);
  BOTH(n, g_cpu.ops->sigmoid_mul(g_cpu.be, o.c, x.c, g.c),
       g_gpu.ops->sigmoid_mul(g_gpu.be, o.g, x.g, g.g));
  check("sigmoid_mul", nmse_pair(&o), 1e-10);
  BOTH(n, g_cpu.ops->sigmoid_mul(g_cpu.be, x.c, x.c, g1.c),
       g_gpu.ops->sigmoid_mul(g_gpu.be, x.g, x.g, g1.g));
  check("sigmoid_mul row gate, in place", nmse_pair(&x), 1e-10);
  free_pair(&x), free_pair(&g), free_pair(&g1), free_pair(&o);
  free(xv), free(gv);
  /* zero: whole rows (16-byte words), then a column view (bytes); the rest
     of the buffer must stay as it was */
  const int64_t R = 7, Cz = 100;
  float *ones = malloc(sizeof(float) * (size_t)(R * Cz));
  for (int64_t i = 0; i < R * Cz; i++)
    ones[i] = 1.0f + (float)i;
  pair zt = make_pair(QUANT_F32, Cz, R, ones);
  BOTH(1, g_cpu.ops->zero(g_cpu.be, sub(zt.c, 1, 2, 0, Cz)),
       g_gpu.ops->zero(g_gpu.be, sub(zt.g, 1, 2, 0, Cz)));
  BOTH(1, g_cpu.ops->zero(g_cpu.be, sub(zt.c, 4, 3, 3, 33)),
       g_gpu.ops->zero(g_gpu.be, sub(zt.g, 4, 3, 3, 33)));
  float *zc = malloc(zt.bytes), *zg = malloc(zt.bytes);
  download_both(&zt, zc, zg);
  assert_memory_equal(zc, zg, zt.bytes);
  assert_true(zg[Cz] == 0.0f && zg[3 * Cz - 1] == 0.0f && zg[3 * Cz] == ones[3 * Cz]);
  assert_true(zg[4 * Cz + 2] == ones[4 * Cz + 2] && zg[4 * Cz + 3] == 0.0f &&
              zg[4 * Cz + 35] == 0.0f && zg[4 * Cz + 36] == ones[4 * Cz + 36]);
  printf("  zero (rows, column view): equal to the CPU byte for byte\n");
  free_pair(&zt);
  free(ones), free(zc), free(zg);
}

static int setup(void **state) {
  (void)state;
  hx_err err;
  if (hx_backend_cpu_init(&g_cpu, 4, &err) != HX_OK)
    return -1;
  if (hx_backend_cuda_init(&g_gpu, 0, &err) != HX_OK)
    return -1;
  if (g_cpu.ops->reserve(g_cpu.be, 512, 8192, 8192, &err) ||
      g_gpu.ops->reserve(g_gpu.be, 512, 8192, 8192, &err))
    return -1;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  hx_backend_cpu_free(&g_cpu);
  hx_backend_cuda_free(&g_gpu);
  return 0;
}
#endif

int main(void) {
  /* The MoE one-token fusions are opt-in (HX_MOE_FUSE=1) until measured on a
   * GPU; this test is where they are checked, so it turns them on. */
  setenv("HX_MOE_FUSE", "1", 1);
#ifndef HELEXA_HAVE_CUDA
  printf("built without CUDA: skipped\n");
  return 77;
#else
  if (hx_backend_cuda_device_count() == 0) {
    printf("no CUDA device: skipped\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_moe_route),        cmocka_unit_test(test_moe_matmul_id),
      cmocka_unit_test(test_moe_combine),      cmocka_unit_test(test_moe_decode_graph),
      cmocka_unit_test(test_moe_decode_fused), cmocka_unit_test(test_ssm_conv),
      cmocka_unit_test(test_delta_rule),       cmocka_unit_test(test_gated_norm_sigmoid_zero),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
#endif
}
