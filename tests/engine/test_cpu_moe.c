/* test_cpu_moe.c — the CPU backend's MoE ops (cpu_moe.c) and the moe_ffn
 * block against straightforward scalar code: routing (softmax → top-k →
 * renorm) in double, the expert matmul selected by ids against quant.c's
 * scalar dot on the same quantized activations (every weight type, decode
 * and prefill shapes, an expert with many rows so the 4-row kernel runs),
 * the weighted combine with and without the shared expert, and the whole
 * block with a shared expert and its sigmoid gate (the qwen3next / qwen35moe
 * form, not covered by the qwen3moe model fixtures). */
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
#include "engine/models/moe_ffn.h"
#include "engine/quant.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform [-1, 1) */
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((rng_state >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

typedef struct fx {
  hx_backend b;
  hx_bbuf *bufs[64];
  int n_bufs;
} fx;

/* A backend tensor [rows][cols] of type t holding src (f32, quantized to t),
 * or zeros when src is NULL. */
static hx_tensor tens(fx *f, quant_type t, int64_t cols, int64_t rows, const void *src) {
  hx_err err = {0};
  const size_t rb = hx_backend_row_bytes(t, cols);
  assert_true(rb > 0 && f->n_bufs < 64);
  hx_bbuf *buf = f->b.ops->buf_alloc(f->b.be, rb * (size_t)rows, &err);
  assert_non_null(buf);
  f->bufs[f->n_bufs++] = buf;
  if (src) {
    char *tmp = malloc(rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) {
      if (t == QUANT_I32 || t == QUANT_F32)
        memcpy(tmp + (size_t)r * rb, (const char *)src + (size_t)r * rb, rb);
      else
        quant_row_quantize(t, (const float *)src + r * cols, tmp + (size_t)r * rb, cols);
    }
    assert_int_equal(f->b.ops->buf_upload(f->b.be, buf, 0, tmp, rb * (size_t)rows, &err), HX_OK);
    free(tmp);
  }
  return (hx_tensor){.buf = buf, .type = t, .n_cols = cols, .n_rows = rows, .row_bytes = rb};
}

static void down(fx *f, hx_tensor t, void *dst) {
  hx_err err = {0};
  assert_int_equal(
      f->b.ops->buf_download(f->b.be, t.buf, t.offset, dst, t.row_bytes * (size_t)t.n_rows, &err),
      HX_OK);
}

static void fx_init(fx *f) {
  memset(f, 0, sizeof *f);
  hx_err err = {0};
  assert_int_equal(hx_backend_cpu_init(&f->b, 3, &err), HX_OK);
}

static void fx_free(fx *f) {
  for (int i = 0; i < f->n_bufs; i++)
    f->b.ops->buf_free(f->b.be, f->bufs[i]);
  hx_backend_cpu_free(&f->b);
}

/* Reference router for one row: probabilities in double, top-k by value. */
static void route_ref(const float *logits, int n_exp, int k, bool renorm, double *w, int *id) {
  double p[256], mx = -INFINITY, s = 0;
  for (int e = 0; e < n_exp; e++)
    mx = logits[e] > mx ? logits[e] : mx;
  for (int e = 0; e < n_exp; e++)
    s += (p[e] = exp((double)logits[e] - mx));
  bool used[256] = {0};
  double sum = 0;
  for (int j = 0; j < k; j++) {
    int best = -1;
    for (int e = 0; e < n_exp; e++)
      if (!used[e] && (best < 0 || p[e] > p[best]))
        best = e;
    used[best] = true;
    id[j] = best;
    w[j] = p[best] / s;
    sum += w[j];
  }
  for (int j = 0; renorm && j < k; j++)
    w[j] /= sum;
}

static void test_route(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  const int n = 9, X = 16;
  float logits[9 * 16];
  for (int i = 0; i < n * X; i++)
    logits[i] = 3 * frand();
  for (int renorm = 0; renorm <= 1; renorm++)
    for (int k = 1; k <= 4; k += 3) {
      hx_tensor lg = tens(&f, QUANT_F32, X, n, logits);
      hx_tensor w = tens(&f, QUANT_F32, k, n, NULL), ids = tens(&f, QUANT_I32, k, n, NULL);
      f.b.ops->moe_route(f.b.be, w, ids, lg, k, renorm);
      float got_w[9 * 4];
      int32_t got_id[9 * 4];
      down(&f, w, got_w);
      down(&f, ids, got_id);
      for (int t = 0; t < n; t++) {
        double rw[4];
        int rid[4];
        route_ref(logits + t * X, X, k, renorm, rw, rid);
        for (int j = 0; j < k; j++) {
          assert_int_equal(got_id[t * k + j], rid[j]);
          assert_true(fabs(got_w[t * k + j] - rw[j]) < 1e-6);
        }
      }
      float back[9 * 16];
      down(&f, lg, back); /* logits are not modified */
      assert_memory_equal(back, logits, sizeof back);
    }
  fx_free(&f);
}

/* moe_matmul_id for one weight type: n tokens, k slots, X experts; gate+up
 * sharing x[n] and down reading x[n*k]. */
static void check_matmul_id(quant_type wt, int n, int k, int X, int64_t n_in, int64_t n_out,
                            bool skewed) {
  fx f;
  fx_init(&f);
  const quant_type dt = quant_type_dot_type(wt);
  float *w0 = malloc(sizeof(float) * (size_t)(X * n_out * n_in));
  float *w1 = malloc(sizeof(float) * (size_t)(X * n_out * n_in));
  float *x = malloc(sizeof(float) * (size_t)(n * k * n_in));
  int32_t *id = malloc(sizeof(int32_t) * (size_t)(n * k));
  for (int64_t i = 0; i < X * n_out * n_in; i++)
    w0[i] = frand(), w1[i] = frand();
  for (int64_t i = 0; i < n * k * n_in; i++)
    x[i] = 2 * frand();
  /* distinct experts per token; skewed: expert 1 in slot 0 of every token */
  for (int t = 0; t < n; t++)
    for (int j = 0; j < k; j++)
      id[t * k + j] = !skewed ? (t * 5 + j * 3) % X : j == 0 ? 1 : 2 + (j - 1 + 2 * t) % (X - 2);
  hx_tensor W[2] = {tens(&f, wt, n_in, X * n_out, w0), tens(&f, wt, n_in, X * n_out, w1)};
  hx_tensor ids = tens(&f, QUANT_I32, k, n, id);
  hx_tensor xt = tens(&f, QUANT_F32, n_in, n, x), xs = tens(&f, QUANT_F32, n_in, n * k, x);
  hx_tensor Y[2] = {tens(&f, QUANT_F32, n_out, n * k, NULL),
                    tens(&f, QUANT_F32, n_out, n * k, NULL)};
  float *got = malloc(sizeof(float) * (size_t)(n * k * n_out));
  size_t wrb = hx_backend_row_bytes(wt, n_in), xrb;
  assert_true(quant_row_bytes(dt, n_in, &xrb));
  char *wq = malloc(wrb), *xq = malloc(xrb);
  float *wd = malloc(sizeof(float) * (size_t)n_in);
  for (int per_slot = 0; per_slot <= 1; per_slot++) {
    f.b.ops->moe_matmul_id(f.b.be, per_slot ? 1 : 2, Y, W, per_slot ? xs : xt, ids);
    for (int i = 0; i < (per_slot ? 1 : 2); i++) {
      down(&f, Y[i], got);
      const float *wsrc = i ? w1 : w0;
      for (int t = 0; t < n; t++)
        for (int j = 0; j < k; j++) {
          const float *xr = x + (size_t)(per_slot ? t * k + j : t) * (size_t)n_in;
          if (dt != QUANT_F32)
            quant_row_quantize(dt, xr, xq, n_in);
          for (int64_t o = 0; o < n_out; o++) {
            const float *wr = wsrc + ((size_t)id[t * k + j] * (size_t)n_out + (size_t)o) * n_in;
            quant_row_quantize(wt, wr, wq, n_in);
            const float want = dt == QUANT_F32 ? quant_row_dot_f32(wt, wq, xr, n_in)
                                               : quant_row_dot_q8(wt, wq, xq, n_in);
            quant_row_dequantize(wt, wq, wd, n_in);
            double mag = 0;
            for (int64_t c = 0; c < n_in; c++)
              mag += fabs((double)wd[c] * xr[c]);
            const float g = got[(size_t)(t * k + j) * (size_t)n_out + (size_t)o];
            if (fabs(g - want) > 1e-5 * mag + 1e-6) {
              fprintf(stderr, "%s n=%d k=%d t=%d j=%d o=%lld: %.8g vs %.8g\n", quant_type_name(wt),
                      n, k, t, j, (long long)o, (double)g, (double)want);
              fail();
            }
          }
        }
    }
  }
  free(w0), free(w1), free(x), free(id), free(got), free(wq), free(xq), free(wd);
  fx_free(&f);
}

static void test_matmul_id(void **state) {
  (void)state;
  const quant_type types[] = {QUANT_F32, QUANT_F16, QUANT_BF16, QUANT_Q8_0, QUANT_Q4_K, QUANT_Q6_K};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    check_matmul_id(types[i], 1, 4, 8, 256, 24, false); /* decode */
    check_matmul_id(types[i], 13, 3, 8, 256, 40, true); /* prefill, expert 1 in all 13 rows */
    check_matmul_id(types[i], 6, 2, 16, 512, 8, false); /* wide input, few rows per expert */
  }
}

/* moe_combine for n rows of width d, k slots; with and without the shared
 * expert (the latter written in place over shared). */
static void check_combine(int n, int k, int d) {
  fx f;
  fx_init(&f);
  float *y = malloc(sizeof(float) * (size_t)(n * k * d)),
        *w = malloc(sizeof(float) * (size_t)(n * k));
  float *sh = malloc(sizeof(float) * (size_t)(n * d)), *g = malloc(sizeof(float) * (size_t)n);
  for (int i = 0; i < n * k * d; i++)
    y[i] = frand();
  for (int i = 0; i < n * k; i++)
    w[i] = frand();
  for (int i = 0; i < n * d; i++)
    sh[i] = frand();
  for (int i = 0; i < n; i++)
    g[i] = 4 * frand();
  hx_tensor yt = tens(&f, QUANT_F32, d, n * k, y), wt = tens(&f, QUANT_F32, k, n, w);
  hx_tensor st = tens(&f, QUANT_F32, d, n, sh), gt = tens(&f, QUANT_F32, 1, n, g);
  hx_tensor out = tens(&f, QUANT_F32, d, n, NULL), none = {0};
  float *got = malloc(sizeof(float) * (size_t)(n * d)),
        *got_sh = malloc(sizeof(float) * (size_t)(n * d));
  f.b.ops->moe_combine(f.b.be, out, yt, wt, none, none);
  down(&f, out, got);
  f.b.ops->moe_combine(f.b.be, st, yt, wt, st, gt); /* out aliasing shared */
  down(&f, st, got_sh);
  for (int t = 0; t < n; t++)
    for (int i = 0; i < d; i++) {
      double acc = 0;
      for (int j = 0; j < k; j++)
        acc += (double)w[t * k + j] * y[(size_t)(t * k + j) * (size_t)d + (size_t)i];
      assert_true(fabs(got[t * d + i] - acc) < 1e-5);
      const double with = acc + sh[t * d + i] / (1 + exp(-(double)g[t]));
      assert_true(fabs(got_sh[t * d + i] - with) < 1e-5);
    }
  free(y), free(w), free(sh), free(g), free(got), free(got_sh);
  fx_free(&f);
}

static void test_combine(void **state) {
  (void)state;
  check_combine(5, 3, 20);   /* one task on the caller */
  check_combine(40, 4, 512); /* split over the pool */
}

/* silu(a) * b */
static double swiglu_ref(double a, double b) { return a / (1 + exp(-a)) * b; }

/* Rounds host weights to what type t stores, so the reference uses exactly
 * the backend's weights. */
static void round_to(quant_type t, float *w, int64_t rows, int64_t cols) {
  if (t == QUANT_F32)
    return;
  char *q = malloc(hx_backend_row_bytes(t, cols));
  for (int64_t r = 0; r < rows; r++) {
    quant_row_quantize(t, w + r * cols, q, cols);
    quant_row_dequantize(t, q, w + r * cols, cols);
  }
  free(q);
}

/* The whole block with a shared expert against scalar code in double: hidden
 * width E, expert gate / up stored as gate_t / up_t (their activation
 * rounding allowed for by tol, relative to 1 + |out|). */
static void check_ffn_block(int64_t E, quant_type gate_t, quant_type up_t, double tol) {
  fx f;
  fx_init(&f);
  enum { X = 6, K = 2, F = 16, FS = 24, N = 7 };
  model_hparams hp = {.arch = MODEL_ARCH_QWEN3NEXT,
                      .n_embd = (int)E,
                      .n_expert = X,
                      .n_expert_used = K,
                      .n_ff_exp = F,
                      .n_ff_shexp = FS,
                      .expert_weights_norm = true};
  moe_ffn m;
  hx_err err = {0};
  assert_int_equal(moe_ffn_init(&m, f.b, &hp, 8, &err), HX_OK);
  assert_true(moe_ffn_reserve_cols(&m) == (E > K * F ? E : K * F));
  assert_int_equal(f.b.ops->reserve(f.b.be, 8, moe_ffn_reserve_cols(&m), 16, &err), HX_OK);
  const int64_t sizes[] = {X * E,  X * F * E, X * F * E, X * E * F, E,
                           FS * E, FS * E,    E * FS,    N * E};
  float *a[9];
  for (int i = 0; i < 9; i++) {
    a[i] = malloc(sizeof(float) * (size_t)sizes[i]);
    for (int64_t j = 0; j < sizes[i]; j++)
      a[i][j] = frand() * (i == 8 ? 1.0f : 2.0f / sqrtf((float)(i == 3 ? F : i == 7 ? FS : E)));
  }
  float *router = a[0], *gate = a[1], *up = a[2], *dn = a[3], *sgi = a[4], *sgate = a[5];
  float *sup = a[6], *sdown = a[7], *x = a[8];
  round_to(gate_t, gate, X * F, E);
  round_to(up_t, up, X * F, E);
  moe_ffn_layer L = {0};
  L.router = tens(&f, QUANT_F32, E, X, router);
  L.gate_exps = tens(&f, gate_t, E, X * F, gate);
  L.up_exps = tens(&f, up_t, E, X * F, up);
  L.down_exps = tens(&f, QUANT_F32, F, X * E, dn);
  L.shexp_gate = tens(&f, QUANT_F32, E, 1, sgi);
  L.gate_shexp = tens(&f, QUANT_F32, E, FS, sgate);
  L.up_shexp = tens(&f, QUANT_F32, E, FS, sup);
  L.down_shexp = tens(&f, QUANT_F32, FS, E, sdown);
  hx_tensor xt = tens(&f, QUANT_F32, E, N, x);
  f.b.ops->step_begin(f.b.be, N);
  moe_ffn_forward(&m, &L, xt, xt); /* in place, as the models call it */
  assert_int_equal(f.b.ops->step_end(f.b.be, &err), HX_OK);
  float *got = malloc(sizeof(float) * (size_t)(N * E));
  double *out = malloc(sizeof(double) * (size_t)E);
  down(&f, xt, got);
  double worst = 0;
  for (int t = 0; t < N; t++) {
    const float *xr = x + t * E;
    float lg[X];
    for (int e = 0; e < X; e++) {
      double s = 0;
      for (int64_t i = 0; i < E; i++)
        s += (double)router[e * E + i] * xr[i];
      lg[e] = (float)s;
    }
    double w[K];
    int id[K];
    route_ref(lg, X, K, true, w, id);
    for (int64_t o = 0; o < E; o++)
      out[o] = 0;
    for (int j = 0; j < K; j++) {
      double h[F];
      for (int o = 0; o < F; o++) {
        double g = 0, u = 0;
        for (int64_t i = 0; i < E; i++) {
          g += (double)gate[((size_t)id[j] * F + (size_t)o) * (size_t)E + (size_t)i] * xr[i];
          u += (double)up[((size_t)id[j] * F + (size_t)o) * (size_t)E + (size_t)i] * xr[i];
        }
        h[o] = swiglu_ref(g, u);
      }
      for (int64_t o = 0; o < E; o++) {
        double s = 0;
        for (int i = 0; i < F; i++)
          s += (double)dn[((size_t)id[j] * (size_t)E + (size_t)o) * F + (size_t)i] * h[i];
        out[o] += w[j] * s;
      }
    }
    double hs[FS], gl = 0;
    for (int64_t i = 0; i < E; i++)
      gl += (double)sgi[i] * xr[i];
    for (int o = 0; o < FS; o++) {
      double g = 0, u = 0;
      for (int64_t i = 0; i < E; i++)
        g += (double)sgate[o * E + i] * xr[i], u += (double)sup[o * E + i] * xr[i];
      hs[o] = swiglu_ref(g, u);
    }
    for (int64_t o = 0; o < E; o++) {
      double s = 0;
      for (int i = 0; i < FS; i++)
        s += (double)sdown[o * FS + i] * hs[i];
      out[o] += s / (1 + exp(-gl));
      const double d = fabs(got[t * E + o] - out[o]) / (1 + fabs(out[o]));
      worst = d > worst ? d : worst;
    }
  }
  printf("  block E=%lld gate %s up %s: max rel err %.2e (bound %.0e)\n", (long long)E,
         quant_type_name(gate_t), quant_type_name(up_t), worst, tol);
  assert_true(worst < tol);
  for (int i = 0; i < 9; i++)
    free(a[i]);
  free(got);
  free(out);
  moe_ffn_free(&m);
  fx_free(&f);
}

static void test_ffn_block_shared(void **state) {
  (void)state;
  check_ffn_block(32, QUANT_F32, QUANT_F32, 1e-5);
  /* activation formats differ (Q8_0 vs Q8_K): gate and up in separate calls;
   * the bound covers the 8-bit rounding of x (measured 2.8e-3) */
  check_ffn_block(256, QUANT_Q8_0, QUANT_Q4_K, 1e-2);
}

static void test_ffn_init_errors(void **state) {
  (void)state;
  fx f;
  fx_init(&f);
  moe_ffn m;
  hx_err err = {0};
  model_hparams hp = {.arch = MODEL_ARCH_QWEN3, .n_embd = 64};
  assert_int_equal(moe_ffn_init(&m, f.b, &hp, 4, &err), HX_EINVAL);
  hp = (model_hparams){.arch = MODEL_ARCH_QWEN3MOE,
                       .n_embd = 64,
                       .n_expert = 128,
                       .n_expert_used = 65,
                       .n_ff_exp = 8};
  assert_int_equal(moe_ffn_init(&m, f.b, &hp, 4, &err), HX_EUNSUPPORTED);
  hp.n_expert_used = 8;
  hp.n_embd = HX_BACKEND_MOE_N_IN_MAX + 256;
  assert_int_equal(moe_ffn_init(&m, f.b, &hp, 4, &err), HX_EUNSUPPORTED);
  moe_ffn_free(&m); /* zeroed by the failed init: a no-op */
  fx_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_route),           cmocka_unit_test(test_matmul_id),
      cmocka_unit_test(test_combine),         cmocka_unit_test(test_ffn_block_shared),
      cmocka_unit_test(test_ffn_init_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
