/* cuda_moe_bench.c — `cuda-moe-bench`: the CUDA backend's MoE and DeltaNet
 * ops one layer at a time at real model shapes, random data made on the
 * device (random weights cost exactly the bytes and work of real ones):
 *
 *   moe decode    routing, the gate+up and the down expert mat-vecs of one
 *                 token: the k chosen experts' weight bytes per op / time,
 *                 next to the device-to-device copy bandwidth of the run;
 *   moe prefill   the same expert matmuls for n tokens (grouped form): TFLOP/s;
 *   ssm decode    conv1d + delta rule of one token: state bytes read and
 *                 written / time;
 *   ssm prefill   conv1d + delta rule of n tokens: tokens/s for one layer.
 *
 * Each figure is the median of 7 steps (after 2 warm-ups) that each record
 * the op R times; consecutive repetitions use other experts' ids and other
 * layers' states, so weights and states stream from HBM rather than L2. A
 * one-token step replays from the CUDA graph, as in decode.
 *
 *   cuda-moe-bench [--device 0] [--quant q4_k|q5_k|q6_k|q8_0|bf16|f16]
 *                  [--prefill 512] [--reps 32] */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/time.h"
#include "engine/backend.h"
#include "engine/quant.h"
#ifdef HELEXA_HAVE_CUDA
#include "engine/backend/cuda/backend_cuda.h"
#endif

#ifdef HELEXA_HAVE_CUDA

enum { T_F32 = 0, T_I32 = 26, REPS_MAX = 64, RUNS = 9, WARM = 2 };

/* MoE FFN shapes (hidden E, experts X, used k, expert width F) of released models. */
typedef struct moe_shape {
  const char *name;
  int E, X, k, F;
} moe_shape;
static const moe_shape moe_shapes[] = {
    {"Qwen3-30B-A3B", 2048, 128, 8, 768},
    {"Qwen3-Next-80B-A3B", 2048, 512, 10, 512},
    {"Qwen3.5-35B-A3B", 2048, 256, 8, 512},
};

/* Gated DeltaNet layer shapes: key heads, value heads, head dims, conv taps. */
typedef struct ssm_shape {
  const char *name;
  int nk, nv, dk, dv, K;
} ssm_shape;
static const ssm_shape ssm_shapes[] = {
    {"nk16 nv32 d128 (Qwen3-Next-80B-A3B)", 16, 32, 128, 128, 4},
    {"nk16 nv48 d128", 16, 48, 128, 128, 4},
};

static hx_backend g_b;

static hx_tensor tensor(uint32_t type, int64_t cols, int64_t rows, float scale) {
  size_t rb = type == T_I32 ? (size_t)cols * 4 : hx_backend_row_bytes(type, cols);
  HX_ASSERT(rb > 0);
  hx_err err;
  hx_bbuf *buf = g_b.ops->buf_alloc(g_b.be, rb * (size_t)rows, &err);
  static uint64_t seed = 1;
  if (!buf || (type != T_I32 &&
               hx_backend_cuda_fill_random(&g_b, buf, 0, (int)type, (size_t)(cols * rows),
                                           rb * (size_t)rows, seed++ * 0x9E3779B97F4A7C15ull, scale,
                                           &err) != HX_OK)) {
    fprintf(stderr, "cuda-moe-bench: %s\n", err.msg);
    exit(1);
  }
  return (hx_tensor){buf, 0, type, cols, rows, rb};
}

static void tensor_free(hx_tensor t) { g_b.ops->buf_free(g_b.be, t.buf); }

static hx_tensor rows_of(hx_tensor t, int64_t r0, int64_t n) {
  t.offset += (size_t)r0 * t.row_bytes;
  t.n_rows = n;
  return t;
}

static hx_tensor cols_of(hx_tensor t, int64_t c0, int64_t n) {
  t.offset += (size_t)c0 * 4;
  t.n_cols = n;
  return t;
}

/* k distinct random experts per row, uploaded as i32 [n][k]. */
static hx_tensor random_ids(int n, int k, int X) {
  hx_tensor t = tensor(T_I32, k, n, 0);
  int32_t *v = malloc(sizeof(int32_t) * (size_t)n * (size_t)k);
  uint64_t s = 0x2545F4914F6CDD1Dull;
  for (int r = 0; r < n; r++)
    for (int j = 0; j < k; j++) {
      bool dup;
      do {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        v[r * k + j] = (int32_t)(s % (uint64_t)X);
        dup = false;
        for (int i = 0; i < j; i++)
          dup = dup || v[r * k + i] == v[r * k + j];
      } while (dup);
    }
  hx_err err;
  if (g_b.ops->buf_upload(g_b.be, t.buf, 0, v, t.row_bytes * (size_t)n, &err) != HX_OK) {
    fprintf(stderr, "cuda-moe-bench: %s\n", err.msg);
    exit(1);
  }
  free(v);
  return t;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef void (*rec_fn)(void *ctx, int rep);

/* Median microseconds of one recorded repetition. */
static double time_us(int n_tokens, int reps, rec_fn rec, void *ctx) {
  double us[RUNS];
  for (int r = 0; r < RUNS + WARM; r++) {
    uint64_t t0 = hx_time_mono_ns();
    g_b.ops->step_begin(g_b.be, n_tokens);
    for (int i = 0; i < reps; i++)
      rec(ctx, i);
    hx_err err;
    if (g_b.ops->step_end(g_b.be, &err) != HX_OK) {
      fprintf(stderr, "cuda-moe-bench: step failed: %s\n", err.msg);
      exit(1);
    }
    if (r >= WARM)
      us[r - WARM] = (double)(hx_time_mono_ns() - t0) / 1e3 / reps;
  }
  qsort(us, RUNS, sizeof us[0], cmp_double);
  return us[RUNS / 2];
}

/* ---- MoE -------------------------------------------------------------------- */

typedef struct moe_ctx {
  int n, k;
  hx_tensor logits, weights, ids, x, gate, up, down, g, u, d;
} moe_ctx;

static void rec_route(void *cv, int rep) {
  moe_ctx *c = cv;
  (void)rep;
  g_b.ops->moe_route(g_b.be, c->weights, rows_of(c->ids, 0, c->n), c->logits, c->k, 1);
}

static void rec_gate_up(void *cv, int rep) {
  moe_ctx *c = cv;
  const hx_tensor y[2] = {c->g, c->u}, w[2] = {c->gate, c->up};
  g_b.ops->moe_matmul_id(g_b.be, 2, y, w, c->x, rows_of(c->ids, (int64_t)rep * c->n, c->n));
}

static void rec_down(void *cv, int rep) {
  moe_ctx *c = cv;
  g_b.ops->moe_matmul_id(g_b.be, 1, &c->d, &c->down, c->g,
                         rows_of(c->ids, (int64_t)rep * c->n, c->n));
}

static void bench_moe(const moe_shape *s, uint32_t wt, int n, int reps, double bw) {
  moe_ctx c = {.n = n, .k = s->k};
  c.gate = tensor(wt, s->E, (int64_t)s->X * s->F, 0.05f);
  c.up = tensor(wt, s->E, (int64_t)s->X * s->F, 0.05f);
  c.down = tensor(wt, s->F, (int64_t)s->X * s->E, 0.05f);
  c.logits = tensor(T_F32, s->X, n, 3.0f);
  c.weights = tensor(T_F32, s->k, n, 0);
  c.ids = random_ids(n * reps, s->k, s->X);
  c.x = tensor(T_F32, s->E, n, 1.0f);
  c.g = tensor(T_F32, s->F, (int64_t)n * s->k, 1.0f);
  c.u = tensor(T_F32, s->F, (int64_t)n * s->k, 1.0f);
  c.d = tensor(T_F32, s->E, (int64_t)n * s->k, 0);
  const double gu_bytes = 2.0 * s->k * s->F * (double)c.gate.row_bytes;
  const double dn_bytes = (double)s->k * s->E * (double)c.down.row_bytes;
  const double t_gu = time_us(n, reps, rec_gate_up, &c), t_dn = time_us(n, reps, rec_down, &c);
  if (n == 1) {
    const double t_rt = time_us(1, reps, rec_route, &c);
    printf("  moe decode  %-20s %-5s route %6.1f us | gate+up %7.1f us %6.0f GB/s | down %7.1f "
           "us %6.0f GB/s | copy %4.0f GB/s\n",
           s->name, quant_type_name((quant_type)wt), t_rt, t_gu, gu_bytes / (t_gu * 1e3), t_dn,
           dn_bytes / (t_dn * 1e3), bw);
  } else {
    const double fl = 2.0 * n * s->k * (double)s->F * s->E;
    printf("  moe prefill %-20s %-5s n=%d gate+up %8.1f us %5.1f TFLOP/s | down %8.1f us %5.1f "
           "TFLOP/s\n",
           s->name, quant_type_name((quant_type)wt), n, t_gu, 2 * fl / (t_gu * 1e6), t_dn,
           fl / (t_dn * 1e6));
  }
  hx_tensor all[] = {c.gate, c.up, c.down, c.logits, c.weights, c.ids, c.x, c.g, c.u, c.d};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    tensor_free(all[i]);
}

/* ---- DeltaNet --------------------------------------------------------------- */

enum { SSM_LAYERS = 48 }; /* states cycled through (more than L2 holds) */

typedef struct ssm_ctx {
  const ssm_shape *s;
  int n;
  hx_delta_params p;
  hx_tensor qkv, conv_w, conv, a, b, ssm_a, dt_bias, state, out;
} ssm_ctx;

static void rec_ssm(void *cv, int rep) {
  ssm_ctx *c = cv;
  const ssm_shape *s = c->s;
  const int64_t qk = (int64_t)s->nk * s->dk, vd = (int64_t)s->nv * s->dv;
  const int l = rep % SSM_LAYERS;
  g_b.ops->ssm_conv(g_b.be, c->qkv, c->qkv, c->conv_w,
                    rows_of(c->conv, (int64_t)l * (s->K - 1), s->K - 1));
  g_b.ops->delta_rule(g_b.be, c->out, cols_of(c->qkv, 0, qk), cols_of(c->qkv, qk, qk),
                      cols_of(c->qkv, 2 * qk, vd), c->a, c->b, c->ssm_a, c->dt_bias,
                      rows_of(c->state, (int64_t)l * s->nv, s->nv), &c->p);
}

static void bench_ssm(const ssm_shape *s, int n, int reps) {
  ssm_ctx c = {.s = s, .n = n};
  c.p = (hx_delta_params){.n_k_heads = s->nk,
                          .n_v_heads = s->nv,
                          .d_k = s->dk,
                          .d_v = s->dv,
                          .chunk = n > 1 ? 64 : 0,
                          .eps_l2 = 1e-6f};
  const int64_t C = 2 * (int64_t)s->nk * s->dk + (int64_t)s->nv * s->dv;
  c.qkv = tensor(T_F32, C, n, 1.0f);
  c.conv_w = tensor(T_F32, s->K, C, 0.5f);
  c.conv = tensor(T_F32, C, (int64_t)SSM_LAYERS * (s->K - 1), 0.5f);
  c.a = tensor(T_F32, s->nv, n, 1.0f);
  c.b = tensor(T_F32, s->nv, n, 1.0f);
  c.ssm_a = tensor(T_F32, s->nv, 1, 0);
  float neg[256]; /* ssm_a = -exp(A_log) < 0: the state decays */
  HX_ASSERT(s->nv <= 256);
  for (int h = 0; h < s->nv; h++)
    neg[h] = -0.5f - 0.01f * (float)h;
  hx_err err;
  if (g_b.ops->buf_upload(g_b.be, c.ssm_a.buf, 0, neg, sizeof(float) * (size_t)s->nv, &err)) {
    fprintf(stderr, "cuda-moe-bench: %s\n", err.msg);
    exit(1);
  }
  c.dt_bias = tensor(T_F32, s->nv, 1, 1.0f);
  c.state = tensor(T_F32, (int64_t)s->dk * s->dv, (int64_t)SSM_LAYERS * s->nv, 0.1f);
  c.out = tensor(T_F32, (int64_t)s->nv * s->dv, n, 0);
  const double t = time_us(n, reps, rec_ssm, &c);
  const double state_bytes = 2.0 * s->nv * s->dk * s->dv * 4.0;
  if (n == 1)
    printf("  ssm decode  %-36s conv+delta %6.1f us  state %5.0f GB/s\n", s->name, t,
           state_bytes / (t * 1e3));
  else
    printf("  ssm prefill %-36s n=%d conv+delta %8.1f us  %7.0f tokens/s per layer\n", s->name, n,
           t, n / (t * 1e-6));
  hx_tensor all[] = {c.qkv, c.conv_w, c.conv, c.a, c.b, c.ssm_a, c.dt_bias, c.state, c.out};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    tensor_free(all[i]);
}

static int run(int argc, char **argv) {
  int device = 0, prefill = 512, reps = 32;
  const char *quant = "q4_k";
  for (int i = 1; i < argc; i++) {
    if (i + 1 < argc && strcmp(argv[i], "--device") == 0)
      device = atoi(argv[++i]);
    else if (i + 1 < argc && strcmp(argv[i], "--prefill") == 0)
      prefill = atoi(argv[++i]);
    else if (i + 1 < argc && strcmp(argv[i], "--reps") == 0)
      reps = atoi(argv[++i]);
    else if (i + 1 < argc && strcmp(argv[i], "--quant") == 0)
      quant = argv[++i];
    else {
      fprintf(stderr, "usage: cuda-moe-bench [--device N] [--quant q4_k|q5_k|q6_k|q8_0|bf16|f16] "
                      "[--prefill N] [--reps N]\n");
      return 2;
    }
  }
  const struct {
    const char *name;
    uint32_t t;
  } types[] = {{"q4_k", QUANT_Q4_K}, {"q5_k", QUANT_Q5_K}, {"q6_k", QUANT_Q6_K},
               {"q8_0", QUANT_Q8_0}, {"bf16", QUANT_BF16}, {"f16", QUANT_F16}};
  uint32_t wt = UINT32_MAX;
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (strcmp(quant, types[i].name) == 0)
      wt = types[i].t;
  if (wt == UINT32_MAX || reps < 1 || reps > REPS_MAX || prefill < 2 || prefill > 4096) {
    fprintf(stderr, "cuda-moe-bench: bad --quant, --reps (1..%d) or --prefill (2..4096)\n",
            REPS_MAX);
    return 2;
  }
  hx_err err;
  if (hx_backend_cuda_init(&g_b, device, &err) != HX_OK) {
    fprintf(stderr, "cuda-moe-bench: %s\n", err.msg);
    return 1;
  }
  if (g_b.ops->reserve(g_b.be, prefill, 16384, 4096, &err) != HX_OK) {
    fprintf(stderr, "cuda-moe-bench: %s\n", err.msg);
    return 1;
  }
  const double bw = hx_backend_cuda_copy_bandwidth(&g_b, (size_t)1 << 30);
  printf("cuda-moe-bench: device %d, experts %s, copy bandwidth %.0f GB/s, %d reps per step\n",
         device, quant, bw, reps);
  for (size_t i = 0; i < sizeof moe_shapes / sizeof moe_shapes[0]; i++) {
    bench_moe(&moe_shapes[i], wt, 1, reps, bw);
    bench_moe(&moe_shapes[i], wt, prefill, reps < 4 ? reps : 4, bw);
  }
  for (size_t i = 0; i < sizeof ssm_shapes / sizeof ssm_shapes[0]; i++) {
    bench_ssm(&ssm_shapes[i], 1, reps);
    bench_ssm(&ssm_shapes[i], prefill, 1);
  }
  hx_backend_cuda_free(&g_b);
  return 0;
}

#endif

int main(int argc, char **argv) {
#ifdef HELEXA_HAVE_CUDA
  if (hx_backend_cuda_device_count() == 0) {
    fprintf(stderr, "cuda-moe-bench: no CUDA device\n");
    return 1;
  }
  return run(argc, argv);
#else
  (void)argc;
  (void)argv;
  fprintf(stderr, "cuda-moe-bench: built without CUDA\n");
  return 1;
#endif
}
