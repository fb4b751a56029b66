/* test_cpu_ssm.c — the CPU backend's Gated DeltaNet ops (cpu_ssm.c) against
 * straightforward double-precision references written from transformers'
 * torch_recurrent_gated_delta_rule / causal_conv1d_fn / RMSNormGated:
 *   - conv1d + SiLU with the rolling window carried across calls of 7, 1, 5
 *     tokens (and 70, 1, 19 over 1000 channels: the pool path) equals one
 *     causal conv over the whole sequence from zeros;
 *   - the delta rule, recurrent form (chunk 0) and chunked form (chunk 64
 *     and 4, partial last chunk), in both value-head orders, on q/k/v that
 *     are column views of one conv-output row, prefilled in pieces with the
 *     state carried and then decoded token by token;
 *   - gated norm, sigmoid gate (full and per-row broadcast), zero; gated norm
 *     and sigmoid gate over 300 rows (the pool path). */
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

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform [-1, 1) */
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((rng_state >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

typedef struct fixture {
  hx_backend b;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  hx_err err = {0};
  if (hx_backend_cpu_init(&f->b, 3, &err) != HX_OK)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  hx_backend_cpu_free(&f->b);
  free(f);
  return 0;
}

/* An f32 tensor [rows][cols] in a fresh buffer, filled from host (or zeros). */
static hx_tensor tensor_new(hx_backend *b, int64_t rows, int64_t cols, const float *host) {
  hx_err err = {0};
  const size_t n = (size_t)(rows * cols) * sizeof(float);
  hx_tensor t = {.type = QUANT_F32, .n_cols = cols, .n_rows = rows, .row_bytes = (size_t)cols * 4};
  t.buf = b->ops->buf_alloc(b->be, n, &err);
  assert_non_null(t.buf);
  float *z = NULL;
  if (!host)
    host = z = calloc((size_t)(rows * cols), sizeof(float));
  assert_int_equal(b->ops->buf_upload(b->be, t.buf, 0, host, n, &err), HX_OK);
  free(z);
  return t;
}

static void tensor_get(hx_backend *b, hx_tensor t, float *host) {
  hx_err err = {0};
  for (int64_t r = 0; r < t.n_rows; r++)
    assert_int_equal(b->ops->buf_download(b->be, t.buf, t.offset + (size_t)r * t.row_bytes,
                                          host + r * t.n_cols, (size_t)t.n_cols * 4, &err),
                     HX_OK);
}

/* Columns [c0, c0 + n) and rows [r0, r0 + nr) of t as a view. */
static hx_tensor sub(hx_tensor t, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
  t.offset += (size_t)r0 * t.row_bytes + (size_t)c0 * 4;
  t.n_rows = nr;
  t.n_cols = nc;
  return t;
}

static void run(hx_backend *b) {
  hx_err err = {0};
  assert_int_equal(b->ops->step_end(b->be, &err), HX_OK);
}

static double silu_d(double x) { return x / (1.0 + exp(-x)); }

static void expect_close(const float *got, const double *want, size_t n, double tol,
                         const char *what) {
  for (size_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i])))) {
      fprintf(stderr, "%s[%zu]: got %.8g want %.8g\n", what, i, (double)got[i], want[i]);
      fail();
    }
}

/* Pieces of p1, 1 and the rest (N ≥ p1 + 2) tokens over C channels: the first
 * in place (out aliases x), against one causal conv from zeros. */
static void conv_case(hx_backend *b, int C, int N, int p1) {
  enum { K = 4 };
  float *x = malloc(sizeof(float) * N * C), *w = malloc(sizeof(float) * C * K);
  float *out = malloc(sizeof(float) * N * C), *win = malloc(sizeof(float) * (K - 1) * C);
  double *want = malloc(sizeof(double) * N * C);
  for (int i = 0; i < N * C; i++)
    x[i] = 2 * frand();
  for (int i = 0; i < C * K; i++)
    w[i] = frand();
  for (int t = 0; t < N; t++)
    for (int c = 0; c < C; c++) {
      double acc = 0;
      for (int j = 0; j < K; j++) {
        const int s = t - (K - 1) + j;
        acc += s >= 0 ? (double)w[c * K + j] * x[s * C + c] : 0.0;
      }
      want[t * C + c] = silu_d(acc);
    }
  hx_tensor tx = tensor_new(b, N, C, x), tw = tensor_new(b, C, K, w);
  hx_tensor ts = tensor_new(b, K - 1, C, NULL), to = tensor_new(b, N, C, NULL);
  const int p3 = N - p1 - 1;
  b->ops->step_begin(b->be, p1);
  b->ops->ssm_conv(b->be, sub(tx, 0, p1, 0, C), sub(tx, 0, p1, 0, C), tw, ts);
  b->ops->ssm_conv(b->be, sub(to, p1, 1, 0, C), sub(tx, p1, 1, 0, C), tw, ts);
  b->ops->ssm_conv(b->be, sub(to, p1 + 1, p3, 0, C), sub(tx, p1 + 1, p3, 0, C), tw, ts);
  run(b);
  tensor_get(b, to, out);
  tensor_get(b, sub(tx, 0, p1, 0, C), out); /* the in-place piece */
  expect_close(out, want, (size_t)N * C, 1e-5, "conv");
  /* the window holds the last K-1 inputs */
  tensor_get(b, ts, win);
  for (int j = 0; j < K - 1; j++)
    for (int c = 0; c < C; c++)
      assert_true(win[j * C + c] == x[(N - (K - 1) + j) * C + c]);
  b->ops->buf_free(b->be, tx.buf), b->ops->buf_free(b->be, tw.buf);
  b->ops->buf_free(b->be, ts.buf), b->ops->buf_free(b->be, to.buf);
  free(x), free(w), free(out), free(win), free(want);
}

static void test_conv(void **state) {
  fixture *f = *state;
  conv_case(&f->b, 300, 13, 7);   /* decode-sized: the caller's thread */
  conv_case(&f->b, 1000, 90, 70); /* prefill-sized: the pool, partial last task */
}

/* The reference: transformers' torch_recurrent_gated_delta_rule in double,
 * over n tokens of the packed conv output qkv [n][2*nk*dk + nv*dv]. */
static void delta_ref(const hx_delta_params *p, int n, const float *qkv, const float *a,
                      const float *bb, const float *ssm_a, const float *dt_bias, double *S,
                      double *out) {
  const int nk = p->n_k_heads, nv = p->n_v_heads, dk = p->d_k, dv = p->d_v;
  const int W = 2 * nk * dk + nv * dv;
  for (int t = 0; t < n; t++)
    for (int h = 0; h < nv; h++) {
      const int kh = p->kv_tiled ? h % nk : h / (nv / nk);
      const float *q = qkv + (size_t)t * W + kh * dk, *k = q + nk * dk;
      const float *v = qkv + (size_t)t * W + 2 * nk * dk + h * dv;
      double qq = 0, kk = 0, qn[64], kn[64];
      for (int i = 0; i < dk; i++)
        qq += (double)q[i] * q[i], kk += (double)k[i] * k[i];
      for (int i = 0; i < dk; i++) {
        qn[i] = q[i] / sqrt(qq + p->eps_l2) / sqrt((double)dk);
        kn[i] = k[i] / sqrt(kk + p->eps_l2);
      }
      const double x = (double)a[t * nv + h] + dt_bias[h];
      const double g = ssm_a[h] * (x > 20 ? x : log1p(exp(x)));
      const double beta = 1.0 / (1.0 + exp(-(double)bb[t * nv + h]));
      double *Sh = S + (size_t)h * dk * dv;
      for (int i = 0; i < dk * dv; i++)
        Sh[i] *= exp(g);
      for (int j = 0; j < dv; j++) {
        double kv = 0;
        for (int i = 0; i < dk; i++)
          kv += Sh[i * dv + j] * kn[i];
        const double delta = (v[j] - kv) * beta;
        for (int i = 0; i < dk; i++)
          Sh[i * dv + j] += kn[i] * delta;
      }
      for (int j = 0; j < dv; j++) {
        double o = 0;
        for (int i = 0; i < dk; i++)
          o += Sh[i * dv + j] * qn[i];
        out[(size_t)t * nv * dv + h * dv + j] = o;
      }
    }
}

/* One configuration: n tokens prefilled as pieces[] (0-terminated) with
 * p->chunk, then n_dec single-token decode steps; every output and the final
 * state against the reference. */
static void delta_case(hx_backend *b, hx_delta_params p, const int *pieces, int n_dec) {
  const int nk = p.n_k_heads, nv = p.n_v_heads, dk = p.d_k, dv = p.d_v;
  const int W = 2 * nk * dk + nv * dv;
  int n = n_dec;
  for (const int *pc = pieces; *pc; pc++)
    n += *pc;
  float *qkv = malloc(sizeof(float) * (size_t)n * W), *a = malloc(sizeof(float) * n * nv);
  float *bb = malloc(sizeof(float) * n * nv), ssm_a[64], dt_bias[64];
  for (int i = 0; i < n * W; i++)
    qkv[i] = frand();
  for (int i = 0; i < n * nv; i++)
    a[i] = 3 * frand(), bb[i] = 3 * frand();
  for (int h = 0; h < nv; h++)
    ssm_a[h] = -expf(1.5f * frand()), dt_bias[h] = frand();
  double *S = calloc((size_t)nv * dk * dv, sizeof(double));
  double *want = malloc(sizeof(double) * (size_t)n * nv * dv);
  delta_ref(&p, n, qkv, a, bb, ssm_a, dt_bias, S, want);

  hx_tensor tqkv = tensor_new(b, n, W, qkv), ta = tensor_new(b, n, nv, a);
  hx_tensor tb = tensor_new(b, n, nv, bb), tsa = tensor_new(b, 1, nv, ssm_a);
  hx_tensor tdt = tensor_new(b, 1, nv, dt_bias), tst = tensor_new(b, nv, (int64_t)dk * dv, NULL);
  hx_tensor to = tensor_new(b, n, (int64_t)nv * dv, NULL);
  int t0 = 0;
  for (const int *pc = pieces; t0 < n; pc += *pc != 0) {
    const int m = *pc ? *pc : 1; /* after the pieces: decode steps, the recurrent form */
    hx_delta_params pp = p;
    pp.chunk = *pc ? p.chunk : 0;
    b->ops->step_begin(b->be, m);
    b->ops->delta_rule(b->be, sub(to, t0, m, 0, (int64_t)nv * dv), sub(tqkv, t0, m, 0, nk * dk),
                       sub(tqkv, t0, m, nk * dk, nk * dk),
                       sub(tqkv, t0, m, 2 * nk * dk, (int64_t)nv * dv), sub(ta, t0, m, 0, nv),
                       sub(tb, t0, m, 0, nv), tsa, tdt, tst, &pp);
    run(b);
    t0 += m;
  }
  assert_int_equal(t0, n);
  float *got = malloc(sizeof(float) * (size_t)n * nv * dv);
  tensor_get(b, to, got);
  char what[96];
  snprintf(what, sizeof what, "delta nk%d nv%d dk%d dv%d tiled%d chunk%d", nk, nv, dk, dv,
           p.kv_tiled, p.chunk);
  expect_close(got, want, (size_t)n * nv * dv, 2e-4, what);
  float *gs = malloc(sizeof(float) * (size_t)nv * dk * dv);
  tensor_get(b, tst, gs);
  expect_close(gs, S, (size_t)nv * dk * dv, 2e-4, "delta state");
  b->ops->buf_free(b->be, tqkv.buf), b->ops->buf_free(b->be, ta.buf);
  b->ops->buf_free(b->be, tb.buf), b->ops->buf_free(b->be, tsa.buf);
  b->ops->buf_free(b->be, tdt.buf), b->ops->buf_free(b->be, tst.buf);
  b->ops->buf_free(b->be, to.buf);
  free(qkv), free(a), free(bb), free(S), free(want), free(got), free(gs);
}

static void test_delta_rule(void **state) {
  fixture *f = *state;
  hx_backend *b = &f->b;
  const int one_piece[] = {21, 0}, pieces[] = {9, 1, 13, 0};
  for (int tiled = 0; tiled < 2; tiled++) {
    hx_delta_params p = {
        .n_k_heads = 2, .n_v_heads = 6, .d_k = 16, .d_v = 8, .kv_tiled = tiled, .eps_l2 = 1e-6f};
    const int chunks[] = {0, 64, 4};
    for (int ci = 0; ci < 3; ci++) {
      p.chunk = chunks[ci];
      delta_case(b, p, one_piece, 3);
      delta_case(b, p, pieces, 2);
    }
  }
  /* equal head counts, wide heads (one task per head, d_v > d_k) */
  hx_delta_params p = {
      .n_k_heads = 3, .n_v_heads = 3, .d_k = 32, .d_v = 48, .chunk = 8, .eps_l2 = 1e-6f};
  delta_case(b, p, pieces, 2);
}

/* The two head orders really differ: with tiled = 1 the reference of order 0
 * is not met (guards against an op that ignores kv_tiled). */
static void test_delta_head_order_matters(void **state) {
  (void)state;
  hx_delta_params p0 = {.n_k_heads = 2, .n_v_heads = 4, .d_k = 8, .d_v = 8, .eps_l2 = 1e-6f};
  hx_delta_params p1 = p0;
  p1.kv_tiled = 1;
  enum { W = 2 * 2 * 8 + 4 * 8 };
  float qkv[W], a[4] = {0}, bb[4] = {0}, sa[4] = {-1, -1, -1, -1}, dt[4] = {0};
  for (int i = 0; i < W; i++)
    qkv[i] = frand();
  /* key head 0 = query head 0, key head 1 = -query head 1: q.k is +1 on one
   * key head and -1 on the other (normalized), so value heads 1 and 2, which
   * swap key heads between the orders, flip sign */
  for (int i = 0; i < 8; i++)
    qkv[16 + i] = qkv[i], qkv[24 + i] = -qkv[8 + i];
  double S0[4 * 64] = {0}, S1[4 * 64] = {0}, o0[32], o1[32];
  delta_ref(&p0, 1, qkv, a, bb, sa, dt, S0, o0);
  delta_ref(&p1, 1, qkv, a, bb, sa, dt, S1, o1);
  double diff = 0;
  for (int i = 0; i < 32; i++)
    diff += fabs(o0[i] - o1[i]);
  assert_true(diff > 0.1);
}

static void test_gated_norm_sigmoid_zero(void **state) {
  fixture *f = *state;
  hx_backend *b = &f->b;
  enum { N = 5, H = 3, D = 16 };
  float x[N * H * D], z[N * H * D], w[D], got[N * H * D], g1[N];
  double want[N * H * D];
  for (int i = 0; i < N * H * D; i++)
    x[i] = 2 * frand(), z[i] = 2 * frand();
  for (int i = 0; i < D; i++)
    w[i] = 1 + 0.3f * frand();
  for (int i = 0; i < N; i++)
    g1[i] = 3 * frand();
  for (int t = 0; t < N; t++)
    for (int h = 0; h < H; h++) {
      const float *xr = x + (t * H + h) * D;
      double ss = 0;
      for (int i = 0; i < D; i++)
        ss += (double)xr[i] * xr[i];
      const double r = 1 / sqrt(ss / D + 1e-6);
      for (int i = 0; i < D; i++)
        want[(t * H + h) * D + i] = w[i] * xr[i] * r * silu_d(z[(t * H + h) * D + i]);
    }
  hx_tensor tx = tensor_new(b, N, H * D, x), tz = tensor_new(b, N, H * D, z);
  hx_tensor tw = tensor_new(b, 1, D, w), tg = tensor_new(b, N, 1, g1);
  b->ops->step_begin(b->be, N);
  b->ops->gated_norm(b->be, tx, tx, tz, tw, D, 1e-6f); /* in place */
  run(b);
  tensor_get(b, tx, got);
  expect_close(got, want, N * H * D, 1e-5, "gated_norm");
  /* sigmoid gate: full shape on z, then one gate per row */
  for (int i = 0; i < N * H * D; i++)
    want[i] = (double)got[i] / (1 + exp(-(double)z[i]));
  b->ops->step_begin(b->be, N);
  b->ops->sigmoid_mul(b->be, tx, tx, tz);
  run(b);
  tensor_get(b, tx, got);
  expect_close(got, want, N * H * D, 1e-5, "sigmoid_mul");
  for (int i = 0; i < N * H * D; i++)
    want[i] = (double)got[i] / (1 + exp(-(double)g1[i / (H * D)]));
  b->ops->step_begin(b->be, N);
  b->ops->sigmoid_mul(b->be, tx, tx, tg);
  run(b);
  tensor_get(b, tx, got);
  expect_close(got, want, N * H * D, 1e-5, "sigmoid_mul row");
  /* zero: a column view zeroes only its columns */
  b->ops->step_begin(b->be, N);
  b->ops->zero(b->be, sub(tz, 0, N, D, D));
  run(b);
  float zz[N * H * D];
  tensor_get(b, tz, zz);
  for (int i = 0; i < N * H * D; i++) {
    const int col = i % (H * D);
    assert_true(col >= D && col < 2 * D ? zz[i] == 0.0f : zz[i] == z[i]);
  }
  b->ops->buf_free(b->be, tx.buf), b->ops->buf_free(b->be, tz.buf);
  b->ops->buf_free(b->be, tw.buf), b->ops->buf_free(b->be, tg.buf);
}

/* Prefill-sized rows (300 x 256: the pool path) of gated_norm and sigmoid_mul. */
static void test_rows_parallel(void **state) {
  fixture *f = *state;
  hx_backend *b = &f->b;
  enum { N = 300, H = 2, D = 128, W = H * D };
  float *x = malloc(sizeof(float) * N * W), *z = malloc(sizeof(float) * N * W);
  float *got = malloc(sizeof(float) * N * W), w[D];
  double *want = malloc(sizeof(double) * N * W);
  for (int i = 0; i < N * W; i++)
    x[i] = 2 * frand(), z[i] = 2 * frand();
  for (int i = 0; i < D; i++)
    w[i] = 1 + 0.3f * frand();
  for (int r = 0; r < N * H; r++) {
    double ss = 0;
    for (int i = 0; i < D; i++)
      ss += (double)x[r * D + i] * x[r * D + i];
    const double inv = 1 / sqrt(ss / D + 1e-6);
    for (int i = 0; i < D; i++)
      want[r * D + i] =
          w[i] * x[r * D + i] * inv * silu_d(z[r * D + i]) / (1 + exp(-(double)z[r * D + i]));
  }
  hx_tensor tx = tensor_new(b, N, W, x), tz = tensor_new(b, N, W, z), tw = tensor_new(b, 1, D, w);
  hx_tensor to = tensor_new(b, N, W, NULL);
  b->ops->step_begin(b->be, N);
  b->ops->gated_norm(b->be, to, tx, tz, tw, D, 1e-6f);
  b->ops->sigmoid_mul(b->be, to, to, tz);
  run(b);
  tensor_get(b, to, got);
  expect_close(got, want, (size_t)N * W, 1e-5, "gated_norm + sigmoid_mul, 300 rows");
  b->ops->buf_free(b->be, tx.buf), b->ops->buf_free(b->be, tz.buf);
  b->ops->buf_free(b->be, tw.buf), b->ops->buf_free(b->be, to.buf);
  free(x), free(z), free(got), free(want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv),
      cmocka_unit_test(test_delta_rule),
      cmocka_unit_test(test_delta_head_order_matters),
      cmocka_unit_test(test_gated_norm_sigmoid_zero),
      cmocka_unit_test(test_rows_parallel),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
