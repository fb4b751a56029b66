// ssm.cu — the Gated DeltaNet ops of the CUDA backend (backend.h "linear
// attention"): the causal conv1d with its rolling window, the gated delta
// rule, the per-head gated RMS norm, the sigmoid gate and the state reset.
//
// The recurrent state (conv window, delta-rule matrices) lives in device
// memory and is read and written only by these kernels, so a decode step
// replays from the captured graph.
//
// The delta rule runs the recurrence token by token for any n (decode and
// prefill alike: hx_delta_params.chunk is a permission, not a requirement):
// one block per (value head, 32 value columns) keeps its d_k x 32 slice of
// the state in registers for all n tokens — 8 warps, each owning d_k / 8 key
// rows, lanes owning columns — and reads and writes the state in device
// memory once per call. Per token: S *= exp(g); kv = S^T kn (a cross-warp
// sum through shared memory); delta = beta (v - kv); S += kn delta^T;
// out = S^T qn (a second cross-warp sum). Every block of a key head
// recomputes that head's normalized q and k, which is cheap next to the state.
#include "common.cuh"
#include "kernels.h"

#include <math.h>

__device__ __forceinline__ float ssm_silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float ssm_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// torch.nn.functional.softplus (beta 1, threshold 20), as the CPU backend
__device__ __forceinline__ float ssm_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// ---- conv1d ----------------------------------------------------------------------

// One thread per channel, the K-1 previous inputs in registers across the
// n tokens; out may alias x (each element is read before it is written, by
// the same thread).
template <int K>
__global__ static void ssm_conv_kernel(float *out, size_t o_stride, const float *x, size_t x_stride,
                                       const float *w, size_t w_stride, float *state,
                                       size_t s_stride, int64_t C, int64_t n) {
  pdl_trigger();
  pdl_wait();
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C)
    return;
  float wk[K], win[K - 1];
#pragma unroll
  for (int j = 0; j < K; j++)
    wk[j] = w[(size_t)c * w_stride + j];
#pragma unroll
  for (int j = 0; j < K - 1; j++)
    win[j] = state[(size_t)j * s_stride + (size_t)c];
  for (int64_t t = 0; t < n; t++) {
    const float xt = x[(size_t)t * x_stride + (size_t)c];
    float acc = wk[K - 1] * xt;
#pragma unroll
    for (int j = 0; j < K - 1; j++)
      acc += wk[j] * win[j];
#pragma unroll
    for (int j = 0; j + 1 < K - 1; j++)
      win[j] = win[j + 1];
    win[K - 2] = xt;
    out[(size_t)t * o_stride + (size_t)c] = ssm_silu(acc);
  }
#pragma unroll
  for (int j = 0; j < K - 1; j++)
    state[(size_t)j * s_stride + (size_t)c] = win[j];
}

void launch_ssm_conv(float *out, size_t o_stride, const float *x, size_t x_stride, const float *w,
                     size_t w_stride, float *state, size_t s_stride, int64_t n_channels,
                     int64_t n_tokens, int K, hx_stream st) {
  CU_ASSERT(K >= 2 && K <= 8 && n_channels >= 1 && n_tokens >= 1);
  const unsigned grid = cdiv(n_channels, 128);
#define CONV_CASE(KK)                                                                              \
  case KK:                                                                                         \
    cu_launch(ssm_conv_kernel<KK>, grid, 128, 0, st, out, o_stride, x, x_stride, w, w_stride,      \
              state, s_stride, n_channels, n_tokens);                                              \
    break
  switch (K) {
    CONV_CASE(2);
    CONV_CASE(3);
    CONV_CASE(4);
    CONV_CASE(5);
    CONV_CASE(6);
    CONV_CASE(7);
    CONV_CASE(8);
  }
#undef CONV_CASE
  CUDA_LAUNCH_CHECK();
}

// ---- gated delta rule -----------------------------------------------------------

enum { DR_WARPS = 8, DR_THREADS = DR_WARPS * 32, DR_DIM_MAX = 256 };

// What one thread reads of one token: its q and k element (threads < d_k),
// its v column and the head's two gates. Loaded a token ahead, so the global
// loads overlap the previous token's arithmetic and barriers.
struct dr_tok {
  float q, k, v, a, b;
};

__device__ __forceinline__ dr_tok dr_load(const cu_delta_args &p, int64_t t, int kh, int h, int j,
                                          bool jok) {
  dr_tok x = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  if (t >= p.n)
    return x;
  if ((int)threadIdx.x < p.d_k) {
    x.q = p.q[(size_t)t * p.q_stride + (size_t)kh * p.d_k + threadIdx.x];
    x.k = p.k[(size_t)t * p.k_stride + (size_t)kh * p.d_k + threadIdx.x];
  }
  if (jok)
    x.v = p.v[(size_t)t * p.v_stride + (size_t)h * p.d_v + j];
  x.a = p.a[(size_t)t * p.a_stride + h];
  x.b = p.b[(size_t)t * p.b_stride + h];
  return x;
}

// RPT: key rows per warp (d_k ≤ DR_WARPS * RPT). grid (cdiv(d_v, 32), n_v_heads).
template <int RPT>
__global__ static void __launch_bounds__(DR_THREADS) delta_rule_kernel(cu_delta_args p) {
  pdl_trigger();
  pdl_wait();
  __shared__ float qs[DR_DIM_MAX], ks[DR_DIM_MAX];
  __shared__ float ss_q[DR_WARPS], ss_k[DR_WARPS];
  __shared__ float red_kv[DR_WARPS][32], red_o[DR_WARPS][32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int h = blockIdx.y, j = blockIdx.x * 32 + lane;
  const bool jok = j < p.d_v;
  const int kh = p.kv_tiled ? h % p.n_k_heads : h / (p.n_v_heads / p.n_k_heads);
  float *S = p.state + (size_t)h * p.state_stride;
  float s[RPT];
#pragma unroll
  for (int r = 0; r < RPT; r++) {
    const int i = warp * RPT + r;
    s[r] = i < p.d_k && jok ? S[(size_t)i * p.d_v + j] : 0.0f;
  }
  const float qscale = 1.0f / sqrtf((float)p.d_k);
  const float A = p.ssm_a[h], dtb = p.dt_bias[h];
  dr_tok cur = dr_load(p, 0, kh, h, j, jok);
  for (int64_t t = 0; t < p.n; t++) {
    const dr_tok nxt = dr_load(p, t + 1, kh, h, j, jok);
    const float qv = cur.q, kv = cur.k;
    const float sq = warp_sum(qv * qv), sk = warp_sum(kv * kv);
    __syncthreads(); // the previous token's shared values are no longer read
    if (tid < p.d_k)
      qs[tid] = qv, ks[tid] = kv;
    if (lane == 0)
      ss_q[warp] = sq, ss_k[warp] = sk;
    __syncthreads();
    float sum_q = 0.0f, sum_k = 0.0f;
#pragma unroll
    for (int w = 0; w < DR_WARPS; w++)
      sum_q += ss_q[w], sum_k += ss_k[w];
    const float qinv = 1.0f / sqrtf(sum_q + p.eps), kinv = 1.0f / sqrtf(sum_k + p.eps);
    const float g = A * ssm_softplus(cur.a + dtb);
    const float beta = ssm_sigmoid(cur.b);
    const float eg = expf(g);
    // decay, then read the state with k
    float part = 0.0f;
#pragma unroll
    for (int r = 0; r < RPT; r++) {
      const int i = warp * RPT + r;
      const float kn = i < p.d_k ? ks[i] * kinv : 0.0f;
      s[r] *= eg;
      part += s[r] * kn;
    }
    red_kv[warp][lane] = part;
    __syncthreads();
    float kvj = 0.0f;
#pragma unroll
    for (int w = 0; w < DR_WARPS; w++)
      kvj += red_kv[w][lane];
    const float delta = (cur.v - kvj) * beta;
    // write k delta^T, then read the new state with q
    part = 0.0f;
#pragma unroll
    for (int r = 0; r < RPT; r++) {
      const int i = warp * RPT + r;
      const bool iok = i < p.d_k;
      const float kn = iok ? ks[i] * kinv : 0.0f, qn = iok ? qs[i] * qinv * qscale : 0.0f;
      s[r] += kn * delta;
      part += s[r] * qn;
    }
    red_o[warp][lane] = part;
    __syncthreads();
    if (warp == 0 && jok) {
      float o = 0.0f;
#pragma unroll
      for (int w = 0; w < DR_WARPS; w++)
        o += red_o[w][lane];
      p.out[(size_t)t * p.out_stride + (size_t)h * p.d_v + j] = o;
    }
    cur = nxt;
  }
#pragma unroll
  for (int r = 0; r < RPT; r++) {
    const int i = warp * RPT + r;
    if (i < p.d_k && jok)
      S[(size_t)i * p.d_v + j] = s[r];
  }
}

void launch_delta_rule(const cu_delta_args *a, hx_stream st) {
  CU_ASSERT(a->n >= 1 && a->n_k_heads >= 1 && a->n_v_heads % a->n_k_heads == 0);
  CU_ASSERT(a->d_k >= 1 && a->d_k <= DR_DIM_MAX && a->d_v >= 1 && a->d_v <= DR_DIM_MAX);
  CU_ASSERT(a->n_v_heads < 65536 && a->state_stride >= (size_t)a->d_k * (size_t)a->d_v);
  dim3 grid(cdiv(a->d_v, 32), (unsigned)a->n_v_heads);
  if (a->d_k <= DR_WARPS * 4)
    cu_launch(delta_rule_kernel<4>, grid, DR_THREADS, 0, st, *a);
  else if (a->d_k <= DR_WARPS * 8)
    cu_launch(delta_rule_kernel<8>, grid, DR_THREADS, 0, st, *a);
  else if (a->d_k <= DR_WARPS * 16)
    cu_launch(delta_rule_kernel<16>, grid, DR_THREADS, 0, st, *a);
  else
    cu_launch(delta_rule_kernel<32>, grid, DR_THREADS, 0, st, *a);
  CUDA_LAUNCH_CHECK();
}

// ---- gated norm, sigmoid gate, zero -------------------------------------------------

// One warp per head of one row; out may alias x (a lane writes only what it read).
__global__ static void gated_norm_kernel(float *out, size_t o_stride, const float *x,
                                         size_t x_stride, const float *z, size_t z_stride,
                                         const float *w, int64_t n_heads, int head_dim, float eps) {
  pdl_trigger();
  pdl_wait();
  const int64_t hd = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int64_t t = blockIdx.y;
  const int lane = threadIdx.x & 31;
  if (hd >= n_heads)
    return;
  const float *xr = x + (size_t)t * x_stride + (size_t)hd * head_dim;
  const float *zr = z + (size_t)t * z_stride + (size_t)hd * head_dim;
  float *orow = out + (size_t)t * o_stride + (size_t)hd * head_dim;
  float ss = 0.0f;
  for (int i = lane; i < head_dim; i += 32)
    ss += xr[i] * xr[i];
  ss = warp_sum(ss);
  const float r = 1.0f / sqrtf(ss / (float)head_dim + eps);
  for (int i = lane; i < head_dim; i += 32)
    orow[i] = w[i] * (xr[i] * r) * ssm_silu(zr[i]);
}

void launch_gated_norm(float *out, size_t o_stride, const float *x, size_t x_stride, const float *z,
                       size_t z_stride, const float *w, int64_t n_cols, int64_t n_rows,
                       int head_dim, float eps, hx_stream st) {
  CU_ASSERT(head_dim >= 1 && n_cols % head_dim == 0 && n_rows >= 1 && n_rows < 65536);
  const int64_t n_heads = n_cols / head_dim;
  dim3 grid(cdiv(n_heads, 4), (unsigned)n_rows);
  cu_launch(gated_norm_kernel, grid, 128, 0, st, out, o_stride, x, x_stride, z, z_stride, w,
            n_heads, head_dim, eps);
  CUDA_LAUNCH_CHECK();
}

// out = x * sigmoid(g); g_step 0 broadcasts g's one column over the row.
__global__ static void sigmoid_mul_kernel(float *out, size_t o_stride, const float *x,
                                          size_t x_stride, const float *g, size_t g_stride,
                                          int g_step, int64_t n_cols) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
  if (i >= n_cols)
    return;
  out[(size_t)t * o_stride + (size_t)i] =
      x[(size_t)t * x_stride + (size_t)i] *
      ssm_sigmoid(g[(size_t)t * g_stride + (size_t)(i * g_step)]);
}

void launch_sigmoid_mul(float *out, size_t o_stride, const float *x, size_t x_stride,
                        const float *g, size_t g_stride, int broadcast, int64_t n_cols,
                        int64_t n_rows, hx_stream st) {
  CU_ASSERT(n_cols >= 1 && n_rows >= 1 && n_rows < 65536);
  dim3 grid(cdiv(n_cols, 256), (unsigned)n_rows);
  cu_launch(sigmoid_mul_kernel, grid, 256, 0, st, out, o_stride, x, x_stride, g, g_stride,
            broadcast ? 0 : 1, n_cols);
  CUDA_LAUNCH_CHECK();
}

// Grid-stride over n_rows * words; 16-byte words when everything is aligned
// to 16, single bytes otherwise.
template <typename W>
__global__ static void zero_rows_kernel(uint8_t *p, size_t row_bytes, size_t words_per_row,
                                        int64_t n_rows) {
  pdl_trigger();
  pdl_wait();
  const size_t total = words_per_row * (size_t)n_rows;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / words_per_row, c = i % words_per_row;
    W zero = {};
    ((W *)(p + r * row_bytes))[c] = zero;
  }
}

void launch_zero_rows(void *p, size_t row_bytes, size_t width_bytes, int64_t n_rows, hx_stream st) {
  CU_ASSERT(width_bytes <= row_bytes && n_rows >= 0);
  if (n_rows == 0 || width_bytes == 0)
    return;
  const bool wide = (uintptr_t)p % 16 == 0 && row_bytes % 16 == 0 && width_bytes % 16 == 0;
  const size_t words = wide ? width_bytes / 16 : width_bytes;
  const size_t total = words * (size_t)n_rows;
  const unsigned grid = total / 256 + 1 < 4096 ? (unsigned)(total / 256 + 1) : 4096;
  if (wide)
    cu_launch(zero_rows_kernel<uint4>, grid, 256, 0, st, (uint8_t *)p, row_bytes, words, n_rows);
  else
    cu_launch(zero_rows_kernel<uint8_t>, grid, 256, 0, st, (uint8_t *)p, row_bytes, words, n_rows);
  CUDA_LAUNCH_CHECK();
}
