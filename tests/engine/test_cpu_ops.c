/* test_cpu_ops.c — CPU backend kernels: every SIMD dot path against the
 * scalar reference (quant.c) on random rows, and the row ops (rms norm, rope,
 * attention, swiglu, top-k) against straightforward double-precision code. */
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
#include "engine/backend/cpu/cpu_impl.h"
#include "engine/quant.h"

static uint64_t rng_state = 0x1234567;
static float frand(void) { /* uniform [-1, 1) */
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((rng_state >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

static void test_dot_paths(void **state) {
  (void)state;
  const quant_type types[] = {QUANT_F32,  QUANT_F16,  QUANT_BF16, QUANT_Q8_0,
                              QUANT_Q4_K, QUANT_Q5_K, QUANT_Q6_K};
  const int64_t sizes[] = {256, 512, 1024, 2816};
  int checked = 0;
  for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
    const quant_type t = types[ti];
    const quant_type dt = quant_type_dot_type(t);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
      const int64_t n = sizes[si];
      float *w = malloc((size_t)n * sizeof *w), *x = malloc((size_t)n * sizeof *x);
      for (int64_t i = 0; i < n; i++) {
        w[i] = frand() * (1 + (i % 7));
        x[i] = frand() * 3;
      }
      size_t wb, xb;
      assert_true(quant_row_bytes(t, n, &wb));
      assert_true(quant_row_bytes(dt, n, &xb));
      void *wq = malloc(wb), *xq = malloc(xb);
      quant_row_quantize(t, w, wq, n);
      quant_row_quantize(dt, x, xq, n);
      cpu_dot_fn ref = cpu_dot_get(t, CPU_ISA_SCALAR);
      assert_non_null(ref);
      const float r = ref(wq, xq, n);
      double mag = 0; /* scale of the terms: sum |w||x| */
      for (int64_t i = 0; i < n; i++)
        mag += fabs((double)w[i] * x[i]);
      for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++) {
        cpu_dot_fn f = cpu_dot_get(t, (cpu_isa)isa);
        if (!f)
          continue;
        const float v = f(wq, xq, n);
        /* same integer sums; only float summation order differs */
        if (fabs(v - r) > 1e-5 * mag) {
          fprintf(stderr, "%s n=%lld %s: %.8g vs scalar %.8g\n", quant_type_name(t), (long long)n,
                  cpu_isa_name((cpu_isa)isa), (double)v, (double)r);
          fail();
        }
        checked++;
      }
      /* four-row kernels: rows x, x/2, -x, 3x against the same weights */
      cpu_dot4_fn f4 = cpu_dot4_get(t, cpu_isa_best());
      if (f4) {
        char *x4 = malloc(4 * xb);
        const float mulv[4] = {1, 0.5f, -1, 3};
        float *xs = malloc((size_t)n * sizeof *xs), got[4];
        for (int k = 0; k < 4; k++) {
          for (int64_t i = 0; i < n; i++)
            xs[i] = x[i] * mulv[k];
          quant_row_quantize(dt, xs, x4 + (size_t)k * xb, n);
        }
        f4(wq, x4, xb, n, got);
        for (int k = 0; k < 4; k++) {
          const float want = ref(wq, x4 + (size_t)k * xb, n);
          assert_true(fabs(got[k] - want) <= 1e-5 * mag * fabs(mulv[k]) + 1e-6);
        }
        free(x4), free(xs);
        checked++;
      }
      free(w), free(x), free(wq), free(xq);
    }
  }
  printf("dot paths checked against scalar: %d (best isa %s)\n", checked,
         cpu_isa_name(cpu_isa_best()));
}

/* Helpers to run backend ops on host arrays. */
typedef struct env {
  hx_backend b;
} env;

static hx_tensor mk(env *e, uint32_t type, int64_t cols, int64_t rows, const void *data) {
  size_t rb = hx_backend_row_bytes(type, cols);
  hx_err err;
  hx_bbuf *buf = e->b.ops->buf_alloc(e->b.be, rb * (size_t)rows, &err);
  assert_non_null(buf);
  if (data)
    assert_int_equal(e->b.ops->buf_upload(e->b.be, buf, 0, data, rb * (size_t)rows, &err), HX_OK);
  hx_tensor t = {.buf = buf, .type = type, .n_cols = cols, .n_rows = rows, .row_bytes = rb};
  return t;
}
static void get(env *e, hx_tensor t, void *dst) {
  hx_err err;
  assert_int_equal(
      e->b.ops->buf_download(e->b.be, t.buf, t.offset, dst, t.row_bytes * (size_t)t.n_rows, &err),
      HX_OK);
}

static void test_ops(void **state) {
  (void)state;
  env e;
  hx_err err;
  assert_int_equal(hx_backend_cpu_init(&e.b, 2, &err), HX_OK);
  const hx_backend_ops *op = e.b.ops;
  enum { T = 5, H = 4, KV = 2, HD = 32, CTX = 16, D = H * HD };
  assert_int_equal(op->reserve(e.b.be, T, 256, CTX, &err), HX_OK);
  float q[T][D], k[CTX][KV * HD], v[CTX][KV * HD], out[T][D], w[HD];
  for (int i = 0; i < T; i++)
    for (int j = 0; j < D; j++)
      q[i][j] = frand();
  for (int i = 0; i < CTX; i++)
    for (int j = 0; j < KV * HD; j++)
      k[i][j] = frand(), v[i][j] = frand();
  for (int j = 0; j < HD; j++)
    w[j] = 1 + 0.5f * frand();
  int32_t pos[T] = {3, 4, 5, 6, 7};
  /* attention with an f32 cache filled at positions 0..7 */
  hx_tensor tq = mk(&e, QUANT_F32, D, T, q), tout = mk(&e, QUANT_F32, D, T, NULL);
  hx_tensor tk = mk(&e, QUANT_F32, KV * HD, CTX, k), tv = mk(&e, QUANT_F32, KV * HD, CTX, v);
  hx_tensor tpos = mk(&e, QUANT_I32, T, 1, pos);
  hx_attn_params ap = {.n_heads = H, .n_kv_heads = KV, .head_dim = HD, .scale = 0.3f};
  op->attention(e.b.be, tout, tq, tk, tv, tpos, &ap);
  get(&e, tout, out);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      const int g = h / (H / KV);
      double s[CTX], mx = -1e30, sum = 0;
      for (int j = 0; j <= pos[t]; j++) {
        s[j] = 0;
        for (int d = 0; d < HD; d++)
          s[j] += (double)q[t][h * HD + d] * k[j][g * HD + d];
        s[j] *= 0.3;
        mx = s[j] > mx ? s[j] : mx;
      }
      for (int j = 0; j <= pos[t]; j++)
        sum += (s[j] = exp(s[j] - mx));
      for (int d = 0; d < HD; d++) {
        double o = 0;
        for (int j = 0; j <= pos[t]; j++)
          o += s[j] / sum * v[j][g * HD + d];
        assert_true(fabs(o - out[t][h * HD + d]) < 1e-5);
      }
    }
  /* rms_norm_heads then rope (NeoX, full rotary) on q */
  hx_tensor tw = mk(&e, QUANT_F32, HD, 1, w);
  op->rms_norm_heads(e.b.be, tq, tw, HD, 1e-6f);
  hx_rope_params rp = {.n_rot = HD, .freq_base = 10000.0f, .freq_scale = 1.0f};
  op->rope(e.b.be, tq, tpos, HD, &rp);
  get(&e, tq, out);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      double n[HD], ss = 0;
      for (int d = 0; d < HD; d++)
        ss += (double)q[t][h * HD + d] * q[t][h * HD + d];
      for (int d = 0; d < HD; d++)
        n[d] = q[t][h * HD + d] / sqrt(ss / HD + 1e-6) * w[d];
      for (int i = 0; i < HD / 2; i++) {
        double th = pos[t] * pow(10000.0, -2.0 * i / HD);
        double a = n[i] * cos(th) - n[i + HD / 2] * sin(th);
        double b = n[i + HD / 2] * cos(th) + n[i] * sin(th);
        assert_true(fabs(a - out[t][h * HD + i]) < 1e-4);
        assert_true(fabs(b - out[t][h * HD + i + HD / 2]) < 1e-4);
      }
    }
  /* top-k */
  float row[300], vals[8];
  int32_t ids[8];
  for (int i = 0; i < 300; i++)
    row[i] = frand();
  row[17] = 5, row[250] = 4, row[3] = 3;
  hx_tensor tx = mk(&e, QUANT_F32, 300, 1, row), tvals = mk(&e, QUANT_F32, 8, 1, NULL);
  hx_tensor tids = mk(&e, QUANT_I32, 8, 1, NULL);
  op->top_k(e.b.be, tvals, tids, tx, 8);
  get(&e, tvals, vals);
  get(&e, tids, ids);
  assert_int_equal(ids[0], 17);
  assert_int_equal(ids[1], 250);
  assert_int_equal(ids[2], 3);
  for (int i = 1; i < 8; i++)
    assert_true(vals[i] <= vals[i - 1]);
  /* q8_0 cache store/attention round trip stays close to f32 */
  hx_tensor tk8 = mk(&e, QUANT_Q8_0, KV * HD, CTX, NULL),
            tv8 = mk(&e, QUANT_Q8_0, KV * HD, CTX, NULL);
  int32_t all[CTX];
  for (int i = 0; i < CTX; i++)
    all[i] = i;
  hx_tensor tall = mk(&e, QUANT_I32, CTX, 1, all);
  hx_tensor tkf = mk(&e, QUANT_F32, KV * HD, CTX, k), tvf = mk(&e, QUANT_F32, KV * HD, CTX, v);
  tkf.n_rows = tvf.n_rows = CTX;
  op->cache_store(e.b.be, tk8, tkf, tall);
  op->cache_store(e.b.be, tv8, tvf, tall);
  hx_tensor tq2 = mk(&e, QUANT_F32, D, T, q), to2 = mk(&e, QUANT_F32, D, T, NULL);
  float out8[T][D];
  op->attention(e.b.be, tout, tq2, tk, tv, tpos, &ap);
  op->attention(e.b.be, to2, tq2, tk8, tv8, tpos, &ap);
  get(&e, tout, out);
  get(&e, to2, out8);
  for (int t = 0; t < T; t++)
    for (int j = 0; j < D; j++)
      assert_true(fabs(out[t][j] - out8[t][j]) < 0.02);
  hx_tensor all_t[] = {tq,   tout, tk,  tv,   tpos, tw,  tx,  tvals,
                       tids, tk8,  tv8, tall, tkf,  tvf, tq2, to2};
  for (size_t i = 0; i < sizeof all_t / sizeof all_t[0]; i++)
    op->buf_free(e.b.be, all_t[i].buf);
  hx_backend_cpu_free(&e.b);
}

/* Random Q4_K / Q8_K data for the repacked-kernel tests: rows of weights with
 * per-row and per-column magnitudes, activations with outliers. */
static void *rand_rows(quant_type t, int64_t rows, int64_t n, float amp, size_t *row_bytes) {
  assert_true(quant_row_bytes(t, n, row_bytes));
  char *q = malloc(*row_bytes * (size_t)rows);
  float *f = malloc((size_t)n * sizeof *f);
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t i = 0; i < n; i++)
      f[i] = frand() * amp * (1 + (float)((r + i / 32) % 5)) + (i % 97 == 0 ? 8 * amp : 0);
    quant_row_quantize(t, f, q + (size_t)r * *row_bytes, n);
  }
  free(f);
  return q;
}

/* Row-interleaved Q4_K / Q5_K / Q6_K / Q8_0 kernels (cpu_repack.c) against the
 * scalar reference. */
static void test_repack_kernels(void **state) {
  (void)state;
  cpu_gemv8_fn gemv;
  cpu_gemm4x8_fn gemm;
  if (!cpu_repack_get(QUANT_Q4_K, &gemv, &gemm)) {
    printf("repacked kernels: none on this CPU (needs AVX-512 VNNI + VBMI)\n");
    return;
  }
  assert_false(cpu_repack_get(QUANT_BF16, &gemv, &gemm));
  assert_null(gemv);
  const quant_type types[] = {QUANT_Q4_K, QUANT_Q5_K, QUANT_Q6_K, QUANT_Q8_0};
  for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
    const quant_type qt = types[ti];
    assert_int_equal(cpu_repack_bytes(qt, 7, 256), 0);
    assert_int_equal(cpu_repack_bytes(qt, 8, 300), 0);
    assert_true(cpu_repack_get(qt, &gemv, &gemm));
    cpu_dot_fn ref = cpu_dot_get(qt, CPU_ISA_SCALAR);
    const int64_t sizes[] = {256, 1024, 2816};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
      const int64_t n = sizes[si], rows = 16;
      size_t wb, xb;
      char *w = rand_rows(qt, rows, n, 1.0f, &wb);
      char *x = rand_rows(quant_type_dot_type(qt), 4, n, 3.0f, &xb);
      const size_t gb = cpu_repack_bytes(qt, 8, n);
      assert_int_equal(cpu_repack_bytes(qt, 19, n), 2 * gb);
      char *rp = aligned_alloc(64, 2 * gb);
      cpu_repack_rows(qt, w, wb, n, 0, 2, rp);
      for (int g = 0; g < 2; g++) {
        float got4[4][8];
        gemm(rp + g * gb, x, xb, n, got4);
        for (int t = 0; t < 4; t++) {
          float got[8];
          gemv(rp + g * gb, x + t * xb, n, got);
          for (int r = 0; r < 8; r++) {
            const float want = ref(w + (size_t)(8 * g + r) * wb, x + t * xb, n);
            const double tol = 1e-5 * (fabs(want) + 1) * sqrt((double)n);
            if (fabs(got[r] - want) > tol || fabs(got4[t][r] - want) > tol) {
              fprintf(stderr, "%s x8 n=%lld row %d tok %d: gemv %.8g gemm %.8g scalar %.8g\n",
                      quant_type_name(qt), (long long)n, 8 * g + r, t, (double)got[r],
                      (double)got4[t][r], (double)want);
              fail();
            }
          }
        }
      }
      free(w), free(x), free(rp);
    }
  }
}

/* The backend's matmul on Q4_K / Q5_K / Q6_K / Q8_0 weights with a row count that is not
 * a multiple of 8 (repacked groups + row-kernel tail), 1..9 tokens, with
 * bias, wrapped and uploaded weights, twice (the repacked copy is reused). */
static void matmul_check(quant_type qt) {
  env e;
  hx_err err;
  assert_int_equal(hx_backend_cpu_init(&e.b, 2, &err), HX_OK);
  const hx_backend_ops *op = e.b.ops;
  enum { ROWS = 43, N = 512, TOK = 9 };
  assert_int_equal(op->reserve(e.b.be, TOK, N, 16, &err), HX_OK);
  size_t wb, xb;
  char *w = rand_rows(qt, ROWS, N, 0.5f, &wb);
  float x[TOK][N], bias[ROWS], y[TOK][ROWS];
  for (int t = 0; t < TOK; t++)
    for (int i = 0; i < N; i++)
      x[t][i] = frand() * (1 + t % 3);
  for (int r = 0; r < ROWS; r++)
    bias[r] = frand();
  const quant_type dt = quant_type_dot_type(qt);
  char *xq = malloc(quant_row_bytes(dt, N, &xb) ? xb : 0);
  cpu_dot_fn ref = cpu_dot_get(qt, CPU_ISA_SCALAR);
  hx_tensor tw_up = mk(&e, qt, N, ROWS, w);
  hx_tensor tw_wrap = tw_up;
  tw_wrap.buf = op->buf_wrap_host(e.b.be, w, wb * ROWS);
  assert_non_null(tw_wrap.buf);
  hx_tensor tb = mk(&e, QUANT_F32, ROWS, 1, bias);
  const int n_toks[] = {1, 3, 4, 5, 9};
  for (int pass = 0; pass < 4; pass++) {
    const hx_tensor tw = pass % 2 ? tw_wrap : tw_up;
    for (size_t k = 0; k < sizeof n_toks / sizeof n_toks[0]; k++) {
      const int nt = n_toks[k];
      hx_tensor tx = mk(&e, QUANT_F32, N, nt, x), ty = mk(&e, QUANT_F32, ROWS, nt, NULL);
      op->matmul(e.b.be, ty, tw, tx, pass < 2 ? tb : (hx_tensor){0});
      get(&e, ty, y);
      for (int t = 0; t < nt; t++) {
        quant_row_quantize(dt, x[t], xq, N);
        for (int r = 0; r < ROWS; r++) {
          const float want = ref(w + (size_t)r * wb, xq, N) + (pass < 2 ? bias[r] : 0);
          if (fabs(y[t][r] - want) > 1e-4 * (fabs(want) + 1)) {
            fprintf(stderr, "matmul %s pass %d tokens %d: y[%d][%d] = %.8g, scalar %.8g\n",
                    quant_type_name(qt), pass, nt, t, r, (double)y[t][r], (double)want);
            fail();
          }
        }
      }
      op->buf_free(e.b.be, tx.buf);
      op->buf_free(e.b.be, ty.buf);
    }
  }
  op->buf_free(e.b.be, tw_up.buf);
  op->buf_free(e.b.be, tw_wrap.buf);
  op->buf_free(e.b.be, tb.buf);
  hx_backend_cpu_free(&e.b);
  free(w), free(xq);
}

static void test_matmul_k_quants(void **state) {
  (void)state;
  matmul_check(QUANT_Q4_K);
  matmul_check(QUANT_Q5_K);
  matmul_check(QUANT_Q6_K);
  matmul_check(QUANT_Q8_0);
}

/* Fused attention over an F16 cache (cpu_dot.c) against double-precision
 * attention over the same f16 values: head sizes with and without a
 * 16/32-column remainder, one to many positions, rows holding 3 heads. */
static void test_attn_f16(void **state) {
  (void)state;
  cpu_attn_f16_fn f = cpu_attn_f16_get(cpu_isa_best());
  if (!f) {
    printf("fused f16 attention: none on this CPU (needs AVX2)\n");
    return;
  }
  const int hds[] = {8, 72, 128};
  const int64_t nkvs[] = {1, 5, 37};
  for (size_t a = 0; a < 3; a++)
    for (size_t b = 0; b < 3; b++) {
      const int hd = hds[a];
      const int64_t n_kv = nkvs[b];
      const size_t stride = 3 * (size_t)hd;
      uint16_t *k = malloc(stride * (size_t)n_kv * 2), *v = malloc(stride * (size_t)n_kv * 2);
      float *q = malloc((size_t)hd * 4), *out = malloc((size_t)hd * 4);
      float *scores = malloc((size_t)n_kv * 4);
      double *sd = malloc((size_t)n_kv * sizeof *sd);
      for (size_t i = 0; i < stride * (size_t)n_kv; i++)
        k[i] = quant_f32_to_f16(2 * frand()), v[i] = quant_f32_to_f16(frand());
      for (int i = 0; i < hd; i++)
        q[i] = frand();
      const uint16_t *kh = k + hd, *vh = v + hd; /* the middle head of each row */
      f(q, kh, vh, stride, n_kv, hd, 0.2f, scores, out);
      double mx = -1e30, sum = 0;
      for (int64_t j = 0; j < n_kv; j++) {
        sd[j] = 0;
        for (int i = 0; i < hd; i++)
          sd[j] += (double)q[i] * quant_f16_to_f32(kh[(size_t)j * stride + i]);
        sd[j] *= 0.2;
        mx = sd[j] > mx ? sd[j] : mx;
      }
      for (int64_t j = 0; j < n_kv; j++)
        sum += (sd[j] = exp(sd[j] - mx));
      for (int i = 0; i < hd; i++) {
        double o = 0;
        for (int64_t j = 0; j < n_kv; j++)
          o += sd[j] / sum * quant_f16_to_f32(vh[(size_t)j * stride + i]);
        if (fabs(o - out[i]) > 1e-5) {
          fprintf(stderr, "attn f16 hd=%d n_kv=%lld: out[%d] = %.8g, want %.8g\n", hd,
                  (long long)n_kv, i, (double)out[i], o);
          fail();
        }
      }
      free(k), free(v), free(q), free(out), free(scores), free(sd);
    }
}

/* The grouped kernel (a KV head's G query heads at once) against the per-head
 * kernel on the same f16 rows: G = 1..8, head sizes 16, 80 (a 16-column
 * remainder of the 32-column V pass), 128 and 256, rows holding 2 KV heads. */
static void test_attn_group_f16(void **state) {
  (void)state;
  cpu_attn_group_f16_fn fg = cpu_attn_group_f16_get(cpu_isa_best());
  cpu_attn_f16_fn f1 = cpu_attn_f16_get(cpu_isa_best());
  if (!fg || !f1) {
    printf("grouped f16 attention: none on this CPU (needs AVX-512)\n");
    return;
  }
  const int hds[] = {16, 80, 128, 256}, gs[] = {1, 3, 5, 8};
  const int64_t nkvs[] = {1, 7, 300};
  for (size_t a = 0; a < 4; a++)
    for (size_t gi = 0; gi < 4; gi++)
      for (size_t b = 0; b < 3; b++) {
        const int hd = hds[a], G = gs[gi];
        const int64_t n_kv = nkvs[b];
        const size_t stride = 2 * (size_t)hd;
        uint16_t *k = malloc(stride * (size_t)n_kv * 2), *v = malloc(stride * (size_t)n_kv * 2);
        float *q = malloc((size_t)G * hd * 4), *out = malloc((size_t)G * hd * 4);
        float *want = malloc((size_t)hd * 4), *scores = malloc((size_t)G * n_kv * 4);
        for (size_t i = 0; i < stride * (size_t)n_kv; i++)
          k[i] = quant_f32_to_f16(2 * frand()), v[i] = quant_f32_to_f16(frand());
        for (int i = 0; i < G * hd; i++)
          q[i] = frand();
        const uint16_t *kh = k + hd, *vh = v + hd; /* the second KV head of each row */
        fg(q, G, kh, vh, stride, n_kv, hd, 0.125f, scores, out);
        for (int g = 0; g < G; g++) {
          f1(q + (size_t)g * hd, kh, vh, stride, n_kv, hd, 0.125f, scores, want);
          for (int i = 0; i < hd; i++)
            if (fabs(want[i] - out[(size_t)g * hd + i]) > 1e-5) {
              fprintf(stderr,
                      "attn group hd=%d G=%d n_kv=%lld head %d: out[%d] = %.8g, want %.8g\n", hd, G,
                      (long long)n_kv, g, i, (double)out[(size_t)g * hd + i], (double)want[i]);
              fail();
            }
        }
        free(k), free(v), free(q), free(out), free(want), free(scores);
      }
}

/* SIMD activation quantizers: the same bytes as quant_row_quantize, on rows
 * with rounding ties (x·id = k + 0.5), zero blocks, and ± ties of the
 * largest magnitude (Q8_K takes the first one's sign). */
static void test_quant_paths(void **state) {
  (void)state;
  const quant_type types[] = {QUANT_Q8_0, QUANT_Q8_K};
  int checked = 0;
  for (size_t ti = 0; ti < 2; ti++) {
    cpu_quant_fn f = cpu_quant_get(types[ti], cpu_isa_best());
    if (!f)
      continue;
    enum { N = 1024 };
    float x[N];
    size_t rb;
    assert_true(quant_row_bytes(types[ti], N, &rb));
    char *want = malloc(rb), *got = malloc(rb);
    for (int pass = 0; pass < 6; pass++) {
      for (int i = 0; i < N; i++) {
        x[i] = frand() * (float)(1 << (pass * 3));
        if (pass == 1) /* block max 127 → scale 1: halves are exact ties */
          x[i] = i % 32 == 0 ? 127.0f : (float)((int)(frand() * 120)) + 0.5f;
        if (pass == 2 && i % 32 == 0)
          x[i] = -127.0f;
        if (pass == 3 && i < 256)
          x[i] = 0.0f; /* an all-zero block */
        if (pass == 4)
          x[i] = (i % 2 ? -1.0f : 1.0f) * (float)(i % 7); /* ± ties of the max */
      }
      if (pass == 5)
        x[300] = -1e-30f, x[301] = 1e-30f;
      quant_row_quantize(types[ti], x, want, N);
      f(x, got, N);
      if (memcmp(want, got, rb) != 0) {
        fprintf(stderr, "%s quantizer pass %d differs from quant.c\n", quant_type_name(types[ti]),
                pass);
        fail();
      }
      checked++;
    }
    free(want), free(got);
  }
  printf("activation quantizers checked: %d\n", checked);
}

/* f32 → f16 rows (F16C) bit-identical to quant_f32_to_f16, subnormals,
 * overflow, infinities and NaNs included; SwiGLU within 2e-6 relative of
 * double-precision silu(g)·u. */
static void test_rows_f16_swiglu(void **state) {
  (void)state;
  enum { N = 4099 };
  static float x[N], g[N], u[N], o[N];
  static uint16_t got[N];
  for (int i = 0; i < N; i++) {
    const int e = (int)((frand() + 1) * 20) - 30; /* 2^-30 .. 2^10: f16 subnormals too */
    x[i] = frand() * ldexpf(1.0f, e);
    g[i] = frand() * 12, u[i] = frand() * 3;
  }
  x[0] = 65504.0f, x[1] = 65520.0f, x[2] = -1e9f, x[3] = INFINITY, x[4] = -NAN, x[5] = NAN;
  x[6] = 5.96e-8f, x[7] = -2.98e-8f, x[8] = 0.0f, x[9] = -0.0f;
  g[0] = 100.0f, g[1] = -100.0f, g[2] = 0.0f, g[3] = 88.0f, g[4] = -90.0f;
  cpu_f32_to_f16_row(x, got, N);
  for (int i = 0; i < N; i++)
    if (got[i] != quant_f32_to_f16(x[i])) {
      fprintf(stderr, "f16 of %a: %#x, quant.c %#x\n", (double)x[i], got[i],
              quant_f32_to_f16(x[i]));
      fail();
    }
  cpu_swiglu_row(g, u, o, N);
  for (int i = 0; i < N; i++) {
    const double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    if (fabs(o[i] - want) > 2e-6 * fabs(want) + 1e-30) {
      fprintf(stderr, "swiglu g=%g u=%g: %.9g, want %.9g\n", (double)g[i], (double)u[i],
              (double)o[i], want);
      fail();
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dot_paths),      cmocka_unit_test(test_ops),
      cmocka_unit_test(test_repack_kernels), cmocka_unit_test(test_matmul_k_quants),
      cmocka_unit_test(test_attn_f16),       cmocka_unit_test(test_attn_group_f16),
      cmocka_unit_test(test_quant_paths),    cmocka_unit_test(test_rows_f16_swiglu),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
