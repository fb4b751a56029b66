/* cpu_ssm.c — the Gated DeltaNet ops of the CPU backend (backend.h "linear
 * attention"): the causal conv1d with its rolling window, the gated delta
 * rule in its recurrent and chunked forms, the per-head gated RMS norm, the
 * sigmoid gate and the state reset.
 *
 * The delta rule runs one value head per pool task: a head's state matrix
 * (d_k x d_v f32, 64 KiB at 128 x 128) stays in that core's cache for all n
 * tokens. The recurrent form sweeps the state once per token (S = exp(g) S +
 * k delta^T fused with the reads of S^T q and of the next token's S^T k),
 * with AVX2 + FMA inner loops where the CPU has them. The chunked form follows
 * transformers' torch_chunk_gated_delta_rule: per chunk of L tokens it solves
 * the unit lower-triangular UT system by forward substitution and touches the
 * state three times per chunk; on a CPU it does about as many flops as the
 * recurrent form and runs slower (models/qwen35.c asks for it only on other
 * backends), but it is the reference the GPU kernels are checked against.
 * Its scratch is a fixed-size array on the worker's stack (≤ 336 KiB at the
 * limits: 5 x 64 x 256 + 64 x 64 floats). Nothing is allocated. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "base/pool.h"
#include "engine/backend.h"
#include "engine/backend/cpu/cpu_impl.h"
#include "engine/quant.h"

static inline char *ssm_row(hx_tensor t, int64_t r) {
  HX_ASSERT(t.buf != NULL);
  return (char *)t.buf->data + t.offset + (size_t)r * t.row_bytes;
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }
static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
/* torch.nn.functional.softplus (beta 1, threshold 20) */
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

static void assert_f32(hx_tensor t) {
  HX_ASSERT(t.buf != NULL && t.type == QUANT_F32 && t.row_bytes >= (size_t)t.n_cols * 4);
}

/* ---- conv1d ---------------------------------------------------------------- */

typedef struct conv_ctx {
  hx_tensor out, x, w, state;
  int64_t c_per_task;
} conv_ctx;

static void conv_task(void *cv, size_t task, int worker) {
  (void)worker;
  const conv_ctx *c = cv;
  const int K = (int)c->w.n_cols;
  const int64_t C = c->x.n_cols, n = c->x.n_rows;
  const int64_t c0 = (int64_t)task * c->c_per_task;
  const int64_t c1 = c0 + c->c_per_task < C ? c0 + c->c_per_task : C;
  for (int64_t ch = c0; ch < c1; ch++) {
    const float *w = (const float *)ssm_row(c->w, ch);
    float win[HX_BACKEND_SSM_CONV_MAX];
    for (int j = 0; j < K - 1; j++)
      win[j] = ((const float *)ssm_row(c->state, j))[ch];
    for (int64_t t = 0; t < n; t++) {
      const float xt = ((const float *)ssm_row(c->x, t))[ch];
      float acc = w[K - 1] * xt;
      for (int j = 0; j < K - 1; j++)
        acc += w[j] * win[j];
      for (int j = 0; j + 1 < K - 1; j++)
        win[j] = win[j + 1];
      win[K - 2] = xt;
      ((float *)ssm_row(c->out, t))[ch] = silu(acc);
    }
    for (int j = 0; j < K - 1; j++)
      ((float *)ssm_row(c->state, j))[ch] = win[j];
  }
}

void cpu_ssm_conv(void *be, hx_tensor out, hx_tensor x, hx_tensor w, hx_tensor state) {
  assert_f32(out), assert_f32(x), assert_f32(w), assert_f32(state);
  const int64_t K = w.n_cols, C = x.n_cols;
  HX_ASSERT(K >= 2 && K <= HX_BACKEND_SSM_CONV_MAX && w.n_rows == C);
  HX_ASSERT(state.n_rows == K - 1 && state.n_cols == C);
  HX_ASSERT(out.n_cols == C && out.n_rows == x.n_rows && x.n_rows >= 1);
  conv_ctx c = {.out = out, .x = x, .w = w, .state = state, .c_per_task = 256};
  const size_t n_tasks = (size_t)((C + c.c_per_task - 1) / c.c_per_task);
  if (x.n_rows * C < 65536) { /* decode: one pass is cheaper than waking the pool */
    for (size_t i = 0; i < n_tasks; i++)
      conv_task(&c, i, 0);
    return;
  }
  hx_pool_parallel_for(cpu_be_pool(be), n_tasks, conv_task, &c);
}

/* ---- gated delta rule --------------------------------------------------------- */

/* The two inner loops of the delta rule, over one state row (or one output
 * row) of n elements; baseline C and AVX2 + FMA builds (GCC's -O2 does not
 * vectorize loops of unknown trip count). Pointers distinct. */
typedef struct delta_kern {
  /* y += a * x */
  void (*axpy)(float *restrict y, const float *restrict x, float a, int n);
  /* row = row * eg + ki * delta;  o += row * qi;  kvn += row * kni (kvn may be
   * NULL): the state update, the read with q and the next token's read with k
   * in one pass */
  void (*update)(float *restrict row, const float *restrict delta, float *restrict o,
                 float *restrict kvn, float eg, float ki, float qi, float kni, int n);
} delta_kern;

typedef struct delta_ctx {
  hx_tensor out, q, k, v, a, b, state;
  const float *ssm_a, *dt_bias;
  hx_delta_params p;
  delta_kern kern;
} delta_ctx;

/* The key head a value head reads (hx_delta_params.kv_tiled). */
static int delta_k_head(const hx_delta_params *p, int h) {
  return p->kv_tiled ? h % p->n_k_heads : h / (p->n_v_heads / p->n_k_heads);
}

/* dst = src / sqrt(|src|^2 + eps) * scale, as transformers' l2norm (then the
 * query scaling as a second multiply). */
static void l2norm_scaled(float *dst, const float *src, int d, float eps, float scale) {
  float ss = 0.0f;
  for (int i = 0; i < d; i++)
    ss += src[i] * src[i];
  const float inv = 1.0f / sqrtf(ss + eps);
  for (int i = 0; i < d; i++)
    dst[i] = src[i] * inv * scale;
}

/* The gates of token t for head h: *decay = g (log space), *beta. */
static void delta_gates(const delta_ctx *c, int64_t t, int h, float *g, float *beta) {
  const float a = ((const float *)ssm_row(c->a, t))[h];
  const float b = ((const float *)ssm_row(c->b, t))[h];
  *g = c->ssm_a[h] * softplus(a + c->dt_bias[h]);
  *beta = sigmoid(b);
}

static void axpy_c(float *restrict y, const float *restrict x, float a, int n) {
  for (int j = 0; j < n; j++)
    y[j] += a * x[j];
}

static void update_c(float *restrict row, const float *restrict delta, float *restrict o,
                     float *restrict kvn, float eg, float ki, float qi, float kni, int n) {
  for (int j = 0; j < n; j++) {
    const float sv = row[j] * eg + ki * delta[j];
    row[j] = sv;
    o[j] += sv * qi;
    if (kvn)
      kvn[j] += sv * kni;
  }
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static void axpy_avx2(float *restrict y,
                                                          const float *restrict x, float a, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
  for (; j < n; j++)
    y[j] += a * x[j];
}

__attribute__((target("avx2,fma"))) static void
update_avx2(float *restrict row, const float *restrict delta, float *restrict o,
            float *restrict kvn, float eg, float ki, float qi, float kni, int n) {
  const __m256 veg = _mm256_set1_ps(eg), vk = _mm256_set1_ps(ki), vq = _mm256_set1_ps(qi);
  const __m256 vkn = _mm256_set1_ps(kni);
  int j = 0;
  if (kvn)
    for (; j + 8 <= n; j += 8) {
      const __m256 sv = _mm256_fmadd_ps(vk, _mm256_loadu_ps(delta + j),
                                        _mm256_mul_ps(_mm256_loadu_ps(row + j), veg));
      _mm256_storeu_ps(row + j, sv);
      _mm256_storeu_ps(o + j, _mm256_fmadd_ps(sv, vq, _mm256_loadu_ps(o + j)));
      _mm256_storeu_ps(kvn + j, _mm256_fmadd_ps(sv, vkn, _mm256_loadu_ps(kvn + j)));
    }
  else
    for (; j + 8 <= n; j += 8) {
      const __m256 sv = _mm256_fmadd_ps(vk, _mm256_loadu_ps(delta + j),
                                        _mm256_mul_ps(_mm256_loadu_ps(row + j), veg));
      _mm256_storeu_ps(row + j, sv);
      _mm256_storeu_ps(o + j, _mm256_fmadd_ps(sv, vq, _mm256_loadu_ps(o + j)));
    }
  for (; j < n; j++) {
    const float sv = row[j] * eg + ki * delta[j];
    row[j] = sv;
    o[j] += sv * qi;
    if (kvn)
      kvn[j] += sv * kni;
  }
}
#endif

enum { CH = HX_BACKEND_SSM_CHUNK_MAX, DM = HX_BACKEND_SSM_HEAD_DIM_MAX };

/* The recurrent form for one head. S [dk][dv] is decayed lazily: kv = S^T k
 * is read before the decay and scaled by exp(g) (the same product); one pass
 * per token then writes S = exp(g) S + k delta^T, reads S^T q, and already
 * reads S^T k of the next token — a single sweep of the state per token. */
static void delta_recurrent_head(const delta_ctx *c, int h) {
  const hx_delta_params *p = &c->p;
  const delta_kern *kr = &c->kern;
  const int dk = p->d_k, dv = p->d_v, kh = delta_k_head(p, h);
  const float qscale = 1.0f / sqrtf((float)dk);
  const int64_t n = c->q.n_rows;
  float *S = (float *)ssm_row(c->state, h);
  float qn[DM], kn[2][DM], kv[2][DM], delta[DM];
  l2norm_scaled(kn[0], (const float *)ssm_row(c->k, 0) + (size_t)kh * dk, dk, p->eps_l2, 1.0f);
  for (int j = 0; j < dv; j++)
    kv[0][j] = 0.0f;
  for (int i = 0; i < dk; i++)
    kr->axpy(kv[0], S + (size_t)i * dv, kn[0][i], dv);
  for (int64_t t = 0; t < n; t++) {
    const int cur = (int)(t & 1), nxt = cur ^ 1;
    const bool more = t + 1 < n;
    l2norm_scaled(qn, (const float *)ssm_row(c->q, t) + (size_t)kh * dk, dk, p->eps_l2, 1.0f);
    for (int i = 0; i < dk; i++)
      qn[i] *= qscale;
    if (more) {
      l2norm_scaled(kn[nxt], (const float *)ssm_row(c->k, t + 1) + (size_t)kh * dk, dk, p->eps_l2,
                    1.0f);
      for (int j = 0; j < dv; j++)
        kv[nxt][j] = 0.0f;
    }
    float g, beta;
    delta_gates(c, t, h, &g, &beta);
    const float eg = expf(g);
    const float *v = (const float *)ssm_row(c->v, t) + (size_t)h * dv;
    float *o = (float *)ssm_row(c->out, t) + (size_t)h * dv;
    for (int j = 0; j < dv; j++) {
      delta[j] = (v[j] - eg * kv[cur][j]) * beta;
      o[j] = 0.0f;
    }
    for (int i = 0; i < dk; i++)
      kr->update(S + (size_t)i * dv, delta, o, more ? kv[nxt] : NULL, eg, kn[cur][i], qn[i],
                 more ? kn[nxt][i] : 0.0f, dv);
  }
}

/* Chunk scratch of one worker (on its stack). */
typedef struct delta_chunk {
  float q[CH][DM];  /* normalized, scaled queries */
  float k[CH][DM];  /* normalized keys */
  float kt[DM][CH]; /* the keys transposed: row products as axpys */
  float kc[CH][DM]; /* k_cumdecay: L^-1 (beta * exp(G) * k) */
  float u[CH][DM];  /* v * beta, then L^-1 of it, then v_new */
  float a[CH][CH];  /* k_i . k_j (j < i), then q_i . k_j (j ≤ i) */
  float gc[CH];     /* cumulative log decay within the chunk */
  float beta[CH];
} delta_chunk;

/* out[0..n_j) = x . k_j for the first n_j keys, as axpys over the transposed keys. */
static void rows_dot_keys(const delta_kern *kr, float *out, const float *x, const delta_chunk *w,
                          int dk, int n_j) {
  for (int j = 0; j < n_j; j++)
    out[j] = 0.0f;
  for (int d = 0; d < dk; d++)
    kr->axpy(out, w->kt[d], x[d], n_j);
}

static void delta_chunk_run(const delta_ctx *c, int h, int64_t t0, int L, float *S,
                            delta_chunk *w) {
  const hx_delta_params *p = &c->p;
  const delta_kern *kr = &c->kern;
  const int dk = p->d_k, dv = p->d_v, kh = delta_k_head(p, h);
  const float qscale = 1.0f / sqrtf((float)dk);
  float gsum = 0.0f;
  for (int i = 0; i < L; i++) {
    const int64_t t = t0 + i;
    l2norm_scaled(w->q[i], (const float *)ssm_row(c->q, t) + (size_t)kh * dk, dk, p->eps_l2, 1.0f);
    for (int d = 0; d < dk; d++)
      w->q[i][d] *= qscale;
    l2norm_scaled(w->k[i], (const float *)ssm_row(c->k, t) + (size_t)kh * dk, dk, p->eps_l2, 1.0f);
    for (int d = 0; d < dk; d++)
      w->kt[d][i] = w->k[i][d];
    float g;
    delta_gates(c, t, h, &g, &w->beta[i]);
    gsum += g;
    w->gc[i] = gsum;
    const float *vr = (const float *)ssm_row(c->v, t) + (size_t)h * dv;
    const float eb = w->beta[i] * expf(gsum);
    for (int j = 0; j < dv; j++)
      w->u[i][j] = vr[j] * w->beta[i];
    for (int d = 0; d < dk; d++)
      w->kc[i][d] = w->k[i][d] * eb;
  }
  /* forward substitution through (I + strict_lower(A)), A[i][j] = beta_i k_i.k_j exp(G_i - G_j) */
  for (int i = 1; i < L; i++) {
    rows_dot_keys(kr, w->a[i], w->k[i], w, dk, i);
    for (int j = 0; j < i; j++) {
      const float aij = w->beta[i] * w->a[i][j] * expf(w->gc[i] - w->gc[j]);
      kr->axpy(w->u[i], w->u[j], -aij, dv);
      kr->axpy(w->kc[i], w->kc[j], -aij, dk);
    }
  }
  /* v_new = u - kc S */
  for (int i = 0; i < L; i++)
    for (int d = 0; d < dk; d++)
      kr->axpy(w->u[i], S + (size_t)d * dv, -w->kc[i][d], dv);
  /* out_i = exp(G_i) q_i S + sum_{j<=i} (q_i.k_j) exp(G_i - G_j) v_new_j */
  for (int i = 0; i < L; i++) {
    float *o = (float *)ssm_row(c->out, t0 + i) + (size_t)h * dv;
    const float eg = expf(w->gc[i]);
    for (int j = 0; j < dv; j++)
      o[j] = 0.0f;
    for (int d = 0; d < dk; d++)
      kr->axpy(o, S + (size_t)d * dv, w->q[i][d] * eg, dv);
    rows_dot_keys(kr, w->a[i], w->q[i], w, dk, i + 1);
    for (int j = 0; j <= i; j++)
      kr->axpy(o, w->u[j], w->a[i][j] * expf(w->gc[i] - w->gc[j]), dv);
  }
  /* S = S exp(G_last) + sum_i exp(G_last - G_i) k_i v_new_i^T */
  const float glast = w->gc[L - 1], elast = expf(glast);
  float f[CH];
  for (int i = 0; i < L; i++)
    f[i] = expf(glast - w->gc[i]);
  for (int d = 0; d < dk; d++) {
    float *srow = S + (size_t)d * dv;
    for (int j = 0; j < dv; j++)
      srow[j] *= elast;
    for (int i = 0; i < L; i++)
      kr->axpy(srow, w->u[i], w->k[i][d] * f[i], dv);
  }
}

static void delta_chunked_head(const delta_ctx *c, int h) {
  delta_chunk w; /* ~336 KiB at the limits: see the file header */
  float *S = (float *)ssm_row(c->state, h);
  const int64_t n = c->q.n_rows;
  for (int64_t t0 = 0; t0 < n; t0 += c->p.chunk) {
    const int L = (int)(n - t0 < c->p.chunk ? n - t0 : c->p.chunk);
    delta_chunk_run(c, h, t0, L, S, &w);
  }
}

static void delta_task(void *cv, size_t task, int worker) {
  (void)worker;
  const delta_ctx *c = cv;
  if (c->q.n_rows > 1 && c->p.chunk > 0)
    delta_chunked_head(c, (int)task);
  else
    delta_recurrent_head(c, (int)task);
}

void cpu_delta_rule(void *be, hx_tensor out, hx_tensor q, hx_tensor k, hx_tensor v, hx_tensor a,
                    hx_tensor b, hx_tensor ssm_a, hx_tensor dt_bias, hx_tensor state,
                    const hx_delta_params *p) {
  assert_f32(out), assert_f32(q), assert_f32(k), assert_f32(v), assert_f32(a), assert_f32(b);
  assert_f32(ssm_a), assert_f32(dt_bias), assert_f32(state);
  HX_ASSERT(p->n_k_heads > 0 && p->n_v_heads % p->n_k_heads == 0);
  HX_ASSERT(p->d_k > 0 && p->d_k <= DM && p->d_v > 0 && p->d_v <= DM);
  HX_ASSERT(p->chunk >= 0 && p->chunk <= CH);
  const int64_t n = q.n_rows;
  HX_ASSERT(n >= 1 && k.n_rows == n && v.n_rows == n && a.n_rows == n && b.n_rows == n);
  HX_ASSERT(out.n_rows == n && out.n_cols == (int64_t)p->n_v_heads * p->d_v);
  HX_ASSERT(q.n_cols == (int64_t)p->n_k_heads * p->d_k && k.n_cols == q.n_cols);
  HX_ASSERT(v.n_cols == out.n_cols && a.n_cols == p->n_v_heads && b.n_cols == p->n_v_heads);
  HX_ASSERT(ssm_a.n_cols * ssm_a.n_rows == p->n_v_heads &&
            dt_bias.n_cols * dt_bias.n_rows == p->n_v_heads);
  HX_ASSERT(state.n_rows == p->n_v_heads && state.n_cols == (int64_t)p->d_k * p->d_v);
  delta_ctx c = {.out = out, .q = q, .k = k, .v = v, .a = a, .b = b, .state = state, .p = *p};
  c.ssm_a = (const float *)ssm_row(ssm_a, 0);
  c.dt_bias = (const float *)ssm_row(dt_bias, 0);
  c.kern = (delta_kern){axpy_c, update_c};
#if defined(__x86_64__)
  if (cpu_isa_best() >= CPU_ISA_AVX2)
    c.kern = (delta_kern){axpy_avx2, update_avx2};
#endif
  hx_pool_parallel_for(cpu_be_pool(be), (size_t)p->n_v_heads, delta_task, &c);
}

/* ---- gated norm, sigmoid gate, reset ----------------------------------------- */

/* Row-parallel elementwise ops: rows split over the pool when there is enough
 * work to pay for waking it (prefill), else run on the caller (decode). */
typedef struct rows_ctx {
  hx_tensor out, x, z, w; /* z: gate (gated_norm) or g (sigmoid_mul) */
  int head_dim;
  float eps;
  int64_t rows_per_task;
} rows_ctx;

static void rows_run(void *be, rows_ctx *c, hx_pool_fn fn) {
  const int64_t n = c->x.n_rows;
  if (n * c->x.n_cols < 65536 || n < 2) {
    c->rows_per_task = n;
    fn(c, 0, 0);
    return;
  }
  const int64_t n_tasks = n < 4 * (int64_t)cpu_be_threads(be) ? n : 4 * cpu_be_threads(be);
  c->rows_per_task = (n + n_tasks - 1) / n_tasks;
  hx_pool_parallel_for(cpu_be_pool(be), (size_t)((n + c->rows_per_task - 1) / c->rows_per_task), fn,
                       c);
}

static void gated_norm_task(void *cv, size_t task, int worker) {
  (void)worker;
  const rows_ctx *c = cv;
  const int hd = c->head_dim;
  const float *wp = (const float *)ssm_row(c->w, 0);
  const int64_t t0 = (int64_t)task * c->rows_per_task;
  const int64_t t1 = t0 + c->rows_per_task < c->x.n_rows ? t0 + c->rows_per_task : c->x.n_rows;
  for (int64_t t = t0; t < t1; t++) {
    const float *xr = (const float *)ssm_row(c->x, t), *zr = (const float *)ssm_row(c->z, t);
    float *orow = (float *)ssm_row(c->out, t);
    for (int64_t h0 = 0; h0 < c->x.n_cols; h0 += hd) {
      float ss = 0.0f;
      for (int i = 0; i < hd; i++)
        ss += xr[h0 + i] * xr[h0 + i];
      const float r = 1.0f / sqrtf(ss / (float)hd + c->eps);
      for (int i = 0; i < hd; i++)
        orow[h0 + i] = wp[i] * (xr[h0 + i] * r) * silu(zr[h0 + i]);
    }
  }
}

void cpu_gated_norm(void *be, hx_tensor out, hx_tensor x, hx_tensor z, hx_tensor w, int head_dim,
                    float eps) {
  assert_f32(out), assert_f32(x), assert_f32(z), assert_f32(w);
  HX_ASSERT(head_dim > 0 && x.n_cols % head_dim == 0 && w.n_cols * w.n_rows == head_dim);
  HX_ASSERT(z.n_cols == x.n_cols && out.n_cols == x.n_cols);
  HX_ASSERT(z.n_rows == x.n_rows && out.n_rows == x.n_rows);
  rows_ctx c = {.out = out, .x = x, .z = z, .w = w, .head_dim = head_dim, .eps = eps};
  rows_run(be, &c, gated_norm_task);
}

static void sigmoid_mul_task(void *cv, size_t task, int worker) {
  (void)worker;
  const rows_ctx *c = cv;
  const int64_t step = c->z.n_cols == 1 ? 0 : 1;
  const int64_t t0 = (int64_t)task * c->rows_per_task;
  const int64_t t1 = t0 + c->rows_per_task < c->x.n_rows ? t0 + c->rows_per_task : c->x.n_rows;
  for (int64_t t = t0; t < t1; t++) {
    const float *xr = (const float *)ssm_row(c->x, t), *gr = (const float *)ssm_row(c->z, t);
    float *orow = (float *)ssm_row(c->out, t);
    for (int64_t i = 0; i < c->x.n_cols; i++)
      orow[i] = xr[i] * sigmoid(gr[i * step]);
  }
}

void cpu_sigmoid_mul(void *be, hx_tensor out, hx_tensor x, hx_tensor g) {
  assert_f32(out), assert_f32(x), assert_f32(g);
  HX_ASSERT(out.n_cols == x.n_cols && out.n_rows == x.n_rows && g.n_rows == x.n_rows);
  HX_ASSERT(g.n_cols == x.n_cols || g.n_cols == 1);
  rows_ctx c = {.out = out, .x = x, .z = g};
  rows_run(be, &c, sigmoid_mul_task);
}

void cpu_zero(void *be, hx_tensor t) {
  (void)be;
  size_t rb = hx_backend_row_bytes(t.type, t.n_cols);
  HX_ASSERT(rb > 0 && rb <= t.row_bytes);
  if (rb == t.row_bytes) {
    memset(ssm_row(t, 0), 0, t.row_bytes * (size_t)t.n_rows);
    return;
  }
  for (int64_t r = 0; r < t.n_rows; r++)
    memset(ssm_row(t, r), 0, rb);
}
