// moe.cu — the mixture-of-experts ops of the CUDA backend (backend.h "MoE
// ops"): routing, the expert matmul selected by ids, and the weighted
// combine with the shared expert.
//
// Every op reads the expert ids from device memory (written by moe_route),
// so a decode step records the same launches whatever experts it picks and
// replays from the captured graph. The expert matmul has two forms:
//   slot form (few tokens: decode): one block row per (token, slot) pair;
//     each reads the id, then only that expert's weight rows — decode reads
//     exactly the k chosen experts' bytes. Quantized weights use the q8_1
//     dp4a dot of mmvq.cu (re-stated here: those device functions are private
//     to that file) on activations quantized once per call into the
//     backend's q8 scratch; float weights, or activations too wide for the
//     scratch, use a dequantize-and-FMA dot on f32 activations.
//   grouped form (prefill): one block per (expert, 64 output rows) gathers
//     the (token, slot) pairs routed to its expert from ids and runs a small
//     tiled GEMM over them, so an expert's rows are read once per 32 routed
//     tokens. Experts nobody chose exit after the scan. On tensor cores
//     (WMMA, f32 accumulation) with weights dequantized and activations
//     rounded to f16 — bf16 for BF16 weights — as the dense prefill GEMM
//     does; F32 weights keep an f32 SIMT form.
// Each output element is one dot product of one weight row and one input
// row in both forms (backend.h contract).
#include "common.cuh"
#include "dequant.cuh"
#include "kernels.h"

#include <math.h>
#include <mma.h>

// ---- routing -----------------------------------------------------------------

enum { ROUTE_THREADS = 128, ROUTE_EXPERTS_MAX = 8192, ROUTE_K_MAX = 64 };

// Whether (v, i) ranks before (bv, bi): larger probability, then lower id.
__device__ __forceinline__ bool route_better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

// One block per token row: softmax in f32 (sum in double, as the CPU),
// then k rounds of a block arg-max over the probabilities (a chosen expert
// is marked -1), then the optional renormalization by thread 0 in slot order.
__global__ static void __launch_bounds__(ROUTE_THREADS)
    moe_route_kernel(float *weights, size_t w_stride, int32_t *ids, size_t i_stride,
                     const float *logits, size_t l_stride, int n_exp, int k, int renorm) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float p[]; // [n_exp]
  __shared__ float red_f[ROUTE_THREADS / 32];
  __shared__ double red_d[ROUTE_THREADS / 32];
  __shared__ int red_i[ROUTE_THREADS / 32];
  __shared__ float top_v[ROUTE_K_MAX];
  __shared__ int top_i[ROUTE_K_MAX];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = ROUTE_THREADS / 32;
  const int64_t t = blockIdx.x;
  const float *l = logits + t * l_stride;
  float mx = -INFINITY;
  for (int e = tid; e < n_exp; e += ROUTE_THREADS)
    mx = fmaxf(mx, l[e]);
  mx = warp_max(mx);
  if (lane == 0)
    red_f[warp] = mx;
  __syncthreads();
  mx = red_f[0];
  for (int w = 1; w < nw; w++)
    mx = fmaxf(mx, red_f[w]);
  double sum = 0.0;
  for (int e = tid; e < n_exp; e += ROUTE_THREADS)
    sum += (double)expf(l[e] - mx);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0)
    red_d[warp] = sum;
  __syncthreads();
  sum = 0.0;
  for (int w = 0; w < nw; w++)
    sum += red_d[w];
  const float inv = (float)(1.0 / sum);
  for (int e = tid; e < n_exp; e += ROUTE_THREADS)
    p[e] = expf(l[e] - mx) * inv;
  __syncthreads();
  for (int j = 0; j < k; j++) {
    float bv = -2.0f;
    int bi = 0x7fffffff;
    for (int e = tid; e < n_exp; e += ROUTE_THREADS)
      if (route_better(p[e], e, bv, bi))
        bv = p[e], bi = e;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (route_better(ov, oi, bv, bi))
        bv = ov, bi = oi;
    }
    if (lane == 0)
      red_f[warp] = bv, red_i[warp] = bi;
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < nw; w++)
        if (route_better(red_f[w], red_i[w], bv, bi))
          bv = red_f[w], bi = red_i[w];
      top_v[j] = bv;
      top_i[j] = bi; // stays out of range when every p is NaN: the matmul writes NaN
      if (bi < n_exp)
        p[bi] = -1.0f; // taken
    }
    __syncthreads();
  }
  if (tid == 0) {
    float s = 0.0f;
    if (renorm)
      for (int j = 0; j < k; j++)
        s += top_v[j];
    for (int j = 0; j < k; j++) {
      weights[t * w_stride + j] = renorm ? top_v[j] / s : top_v[j];
      ids[t * i_stride + j] = top_i[j];
    }
  }
}

void launch_moe_route(float *weights, size_t w_stride, int32_t *ids, size_t i_stride,
                      const float *logits, size_t l_stride, int64_t n_exp, int64_t n_rows, int k,
                      int renorm, hx_stream st) {
  CU_ASSERT(n_exp >= 1 && n_exp <= ROUTE_EXPERTS_MAX && k >= 1 && k <= ROUTE_K_MAX && k <= n_exp &&
            n_rows >= 1 && n_rows < (1 << 30));
  cu_launch(moe_route_kernel, (unsigned)n_rows, ROUTE_THREADS, (size_t)n_exp * sizeof(float), st,
            weights, w_stride, ids, i_stride, logits, l_stride, (int)n_exp, k, renorm);
  CUDA_LAUNCH_CHECK();
}

// ---- expert matmul: the dp4a dot (as mmvq.cu's dot_sub) ------------------------

template <int TYPE>
__device__ __forceinline__ float moe_dot_sub(const uint8_t *row, int64_t sub,
                                             const cu_block_q8_1 &xb) {
  const int *xq = (const int *)xb.qs;
  if (TYPE == GT_Q8_0) {
    const cu_block_q8_0 *b = (const cu_block_q8_0 *)row + sub;
    int s = 0;
#pragma unroll
    for (int k = 0; k < 8; k++)
      s = __dp4a(get_int_unaligned((const uint8_t *)b->qs + 4 * k), xq[k], s);
    return __half2float(b->d) * xb.d * (float)s;
  } else if (TYPE == GT_Q4_K || TYPE == GT_Q5_K) {
    const uint8_t *base = row + (sub / 8) * (TYPE == GT_Q4_K ? 144 : 176);
    const cu_block_q4_K *b4 = (const cu_block_q4_K *)base;
    const cu_block_q5_K *b5 = (const cu_block_q5_K *)base;
    int j = (int)(sub % 8), g = j / 2, sc, m;
    get_scale_min_k4(j, TYPE == GT_Q4_K ? b4->scales : b5->scales, sc, m);
    const int4 *q = (const int4 *)((TYPE == GT_Q4_K ? b4->qs : b5->qs) + g * 32);
    int4 q0 = q[0], q1 = q[1];
    int w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
    int shift = (j & 1) * 4, s = 0;
    if (TYPE == GT_Q4_K) {
#pragma unroll
      for (int k = 0; k < 8; k++)
        s = __dp4a((w[k] >> shift) & 0x0F0F0F0F, xq[k], s);
    } else {
      const int4 *h = (const int4 *)b5->qh;
      int4 h0 = h[0], h1 = h[1];
      int hv[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
      for (int k = 0; k < 8; k++)
        s = __dp4a(((w[k] >> shift) & 0x0F0F0F0F) | (((hv[k] >> j) & 0x01010101) << 4), xq[k], s);
    }
    float d = __half2float(TYPE == GT_Q4_K ? b4->d : b5->d);
    float dmin = __half2float(TYPE == GT_Q4_K ? b4->dmin : b5->dmin);
    return d * sc * xb.d * (float)s - dmin * m * xb.s;
  } else { // Q6_K
    const cu_block_q6_K *b = (const cu_block_q6_K *)row + sub / 8;
    int j = (int)(sub % 8), h = j / 4, r = j % 4;
    const uint8_t *ql = b->ql + h * 64 + (r & 1) * 32;
    const uint8_t *qh = b->qh + h * 32;
    int lshift = (r >> 1) * 4, hshift = 2 * r, s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
      int lo = (get_int_unaligned(ql + 4 * k) >> lshift) & 0x0F0F0F0F;
      int hi = ((get_int_unaligned(qh + 4 * k) >> hshift) & 0x03030303) << 4;
      int v = __vsubss4(lo | hi, 0x20202020);
      if (k < 4)
        s0 = __dp4a(v, xq[k], s0);
      else
        s1 = __dp4a(v, xq[k], s1);
    }
    const int8_t *sc = b->scales + h * 8 + 2 * r;
    return __half2float(b->d) * xb.d * ((float)sc[0] * s0 + (float)sc[1] * s1);
  }
}

// Up to two weights (gate + up) sharing one input and one ids tensor.
struct moe_jobs {
  cu_moe_job j[2];
  int n;
};

// ---- slot form ------------------------------------------------------------------

enum { MS_WARPS = 4, MS_ROWS = 2, MOE_SLOT_TOKENS_MAX = 4 };

template <int TYPE>
__device__ __forceinline__ void moe_rows_q(float acc[MS_ROWS], const uint8_t *w, size_t row_bytes,
                                           int64_t r0, int64_t n_out, int64_t n_sub,
                                           const cu_block_q8_1 *xq, int lane) {
#pragma unroll 2
  for (int64_t s = lane; s < n_sub; s += 32) {
    cu_block_q8_1 xb = xq[s];
#pragma unroll
    for (int jr = 0; jr < MS_ROWS; jr++) {
      int64_t r = r0 + jr < n_out ? r0 + jr : n_out - 1;
      acc[jr] += moe_dot_sub<TYPE>(w + (size_t)r * row_bytes, s, xb);
    }
  }
}

// grid (row groups of MS_WARPS * MS_ROWS, n * k slots, jobs). x is either the
// q8_1 blocks of the input rows (xq != NULL) or the f32 rows (x).
__global__ static void __launch_bounds__(MS_WARPS * 32)
    moe_slot_kernel(moe_jobs jobs, const cu_block_q8_1 *xq, const float *x, size_t x_stride,
                    int64_t n_in, const int32_t *ids, size_t ids_stride, int k, int64_t n_expert,
                    int x_per_slot) {
  pdl_trigger();
  pdl_wait();
  const cu_moe_job jb = blockIdx.z ? jobs.j[1] : jobs.j[0]; // no local copy of jobs
  const int64_t slot = blockIdx.y, t = slot / k;
  const int j = (int)(slot % k), lane = threadIdx.x & 31;
  const int64_t r0 = ((int64_t)blockIdx.x * MS_WARPS + threadIdx.x / 32) * MS_ROWS;
  if (r0 >= jb.n_out)
    return;
  float *y = jb.y + (size_t)slot * jb.y_stride;
  const int32_t e = ids[(size_t)t * ids_stride + j];
  if (e < 0 || e >= n_expert) { // broken contract: make it visible, touch nothing
    if (lane == 0)
      for (int jr = 0; jr < MS_ROWS && r0 + jr < jb.n_out; jr++)
        y[r0 + jr] = NAN;
    return;
  }
  const uint8_t *w = jb.w + (size_t)e * (size_t)jb.n_out * jb.row_bytes;
  const int64_t xrow = x_per_slot ? slot : t;
  float acc[MS_ROWS];
#pragma unroll
  for (int jr = 0; jr < MS_ROWS; jr++)
    acc[jr] = 0.0f;
  if (xq) {
    const int64_t n_sub = n_in / 32;
    const cu_block_q8_1 *xb = xq + xrow * n_sub;
    switch (jb.type) {
    case GT_Q8_0:
      moe_rows_q<GT_Q8_0>(acc, w, jb.row_bytes, r0, jb.n_out, n_sub, xb, lane);
      break;
    case GT_Q4_K:
      moe_rows_q<GT_Q4_K>(acc, w, jb.row_bytes, r0, jb.n_out, n_sub, xb, lane);
      break;
    case GT_Q5_K:
      moe_rows_q<GT_Q5_K>(acc, w, jb.row_bytes, r0, jb.n_out, n_sub, xb, lane);
      break;
    default:
      moe_rows_q<GT_Q6_K>(acc, w, jb.row_bytes, r0, jb.n_out, n_sub, xb, lane);
      break;
    }
  } else {
    const float *xr = x + (size_t)xrow * x_stride;
    for (int64_t c = lane; c < n_in; c += 32) {
      const float xv = xr[c];
#pragma unroll
      for (int jr = 0; jr < MS_ROWS; jr++) {
        int64_t r = r0 + jr < jb.n_out ? r0 + jr : jb.n_out - 1;
        acc[jr] = fmaf(dequant1(w + (size_t)r * jb.row_bytes, jb.type, c), xv, acc[jr]);
      }
    }
  }
#pragma unroll
  for (int jr = 0; jr < MS_ROWS; jr++) {
    float a = warp_sum(acc[jr]);
    if (lane == 0 && r0 + jr < jb.n_out)
      y[r0 + jr] = a;
  }
}

// ---- grouped form ---------------------------------------------------------------

enum { MG_BM = 64, MG_BN = 32, MG_BK = 32, MG_THREADS = 256, MG_WINDOW = 1024 };

// grid (row tiles of MG_BM, n_expert, jobs). Slots routed to the block's
// expert are gathered from ids MG_WINDOW at a time (their order within a
// window does not matter: every output is computed whole by one thread);
// each tile of MG_BN of them is multiplied with the MG_BM weight rows in
// MG_BK-wide steps through shared memory. Thread (row = tid % 64, group =
// tid / 64) accumulates its row for 8 slots.
__global__ static void __launch_bounds__(MG_THREADS)
    moe_grouped_kernel(moe_jobs jobs, const float *x, size_t x_stride, int64_t n_in,
                       const int32_t *ids, size_t ids_stride, int64_t n, int k, int x_per_slot) {
  pdl_trigger();
  pdl_wait();
  __shared__ float ws[MG_BM][MG_BK + 1];
  __shared__ float xs[MG_BN][MG_BK + 1];
  __shared__ int list[MG_WINDOW];
  __shared__ int count;
  const cu_moe_job jb = blockIdx.z ? jobs.j[1] : jobs.j[0]; // no local copy of jobs
  const int e = blockIdx.y;
  const int64_t r0 = (int64_t)blockIdx.x * MG_BM;
  if (r0 >= jb.n_out) // uniform over the block
    return;
  const int tid = threadIdx.x, row = tid % MG_BM, grp = tid / MG_BM;
  const uint8_t *wbase = jb.w + ((size_t)e * (size_t)jb.n_out + (size_t)r0) * jb.row_bytes;
  const int64_t n_slots = n * k;
  for (int64_t s0 = 0; s0 < n_slots; s0 += MG_WINDOW) {
    __syncthreads(); // the previous window's list is no longer read
    if (tid == 0)
      count = 0;
    __syncthreads();
    for (int64_t s = s0 + tid; s < s0 + MG_WINDOW && s < n_slots; s += MG_THREADS)
      if (ids[(size_t)(s / k) * ids_stride + (size_t)(s % k)] == e)
        list[atomicAdd(&count, 1)] = (int)(s - s0);
    __syncthreads();
    const int cnt = count;
    for (int b0 = 0; b0 < cnt; b0 += MG_BN) {
      float acc[8];
#pragma unroll
      for (int i = 0; i < 8; i++)
        acc[i] = 0.0f;
      for (int64_t k0 = 0; k0 < n_in; k0 += MG_BK) {
        __syncthreads(); // the previous step's tiles are no longer read
        for (int i = tid; i < MG_BM * MG_BK; i += MG_THREADS) {
          const int rr = i / MG_BK, cc = i % MG_BK;
          float v = 0.0f;
          if (r0 + rr < jb.n_out && k0 + cc < n_in)
            v = dequant1(wbase + (size_t)rr * jb.row_bytes, jb.type, k0 + cc);
          ws[rr][cc] = v;
        }
        for (int i = tid; i < MG_BN * MG_BK; i += MG_THREADS) {
          const int bb = i / MG_BK, cc = i % MG_BK;
          float v = 0.0f;
          if (b0 + bb < cnt && k0 + cc < n_in) {
            const int64_t s = s0 + list[b0 + bb];
            v = x[(size_t)(x_per_slot ? s : s / k) * x_stride + (size_t)(k0 + cc)];
          }
          xs[bb][cc] = v;
        }
        __syncthreads();
#pragma unroll 8
        for (int cc = 0; cc < MG_BK; cc++) {
          const float wv = ws[row][cc];
#pragma unroll
          for (int i = 0; i < 8; i++)
            acc[i] = fmaf(wv, xs[grp * 8 + i][cc], acc[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < 8; i++) {
        const int bb = grp * 8 + i;
        if (b0 + bb < cnt && r0 + row < jb.n_out)
          jb.y[(size_t)(s0 + list[b0 + bb]) * jb.y_stride + (size_t)(r0 + row)] = acc[i];
      }
    }
  }
}

// Tensor-core variant: the same tiles as moe_grouped_kernel, held as T (half
// or bf16) in shared memory; warp w computes the 16x16 output fragment (rows
// 16 * (w % 4), slots 16 * (w / 4)) with two 16-deep WMMA steps per MG_BK,
// accumulating in f32; the 64 x 32 result goes through shared memory so the
// stores to y are row-contiguous.
enum { MG_LD = MG_BK + 8, MG_CLD = MG_BN + 4 };

__device__ __forceinline__ void mg_store(half *p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void mg_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }

template <typename T>
__global__ static void __launch_bounds__(MG_THREADS)
    moe_grouped_tc_kernel(moe_jobs jobs, const float *x, size_t x_stride, int64_t n_in,
                          const int32_t *ids, size_t ids_stride, int64_t n, int k, int x_per_slot) {
  namespace wmma = nvcuda::wmma;
  pdl_trigger();
  pdl_wait();
  __shared__ __align__(32) T ws[MG_BM][MG_LD];
  __shared__ __align__(32) T xs[MG_BN][MG_LD];
  __shared__ __align__(32) float cs[MG_BM][MG_CLD];
  __shared__ int list[MG_WINDOW];
  __shared__ int count;
  const cu_moe_job jb = blockIdx.z ? jobs.j[1] : jobs.j[0]; // no local copy of jobs
  const int e = blockIdx.y;
  const int64_t r0 = (int64_t)blockIdx.x * MG_BM;
  if (r0 >= jb.n_out) // uniform over the block
    return;
  const int tid = threadIdx.x, warp = tid >> 5, fr = (warp % 4) * 16, fc = (warp / 4) * 16;
  const uint8_t *wbase = jb.w + ((size_t)e * (size_t)jb.n_out + (size_t)r0) * jb.row_bytes;
  const int64_t n_slots = n * k;
  for (int64_t s0 = 0; s0 < n_slots; s0 += MG_WINDOW) {
    __syncthreads(); // the previous window's list is no longer read
    if (tid == 0)
      count = 0;
    __syncthreads();
    for (int64_t s = s0 + tid; s < s0 + MG_WINDOW && s < n_slots; s += MG_THREADS)
      if (ids[(size_t)(s / k) * ids_stride + (size_t)(s % k)] == e)
        list[atomicAdd(&count, 1)] = (int)(s - s0);
    __syncthreads();
    const int cnt = count;
    for (int b0 = 0; b0 < cnt; b0 += MG_BN) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int64_t k0 = 0; k0 < n_in; k0 += MG_BK) {
        __syncthreads(); // the previous step's tiles are no longer read
        for (int i = tid; i < MG_BM * MG_BK; i += MG_THREADS) {
          const int rr = i / MG_BK, cc = i % MG_BK;
          float v = 0.0f;
          if (r0 + rr < jb.n_out && k0 + cc < n_in)
            v = dequant1(wbase + (size_t)rr * jb.row_bytes, jb.type, k0 + cc);
          mg_store(&ws[rr][cc], v);
        }
        for (int i = tid; i < MG_BN * MG_BK; i += MG_THREADS) {
          const int bb = i / MG_BK, cc = i % MG_BK;
          float v = 0.0f;
          if (b0 + bb < cnt && k0 + cc < n_in) {
            const int64_t s = s0 + list[b0 + bb];
            v = x[(size_t)(x_per_slot ? s : s / k) * x_stride + (size_t)(k0 + cc)];
          }
          mg_store(&xs[bb][cc], v);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < MG_BK; kk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
          wmma::load_matrix_sync(fa, &ws[fr][kk], MG_LD);
          wmma::load_matrix_sync(fb, &xs[fc][kk], MG_LD); // B[kk][slot] = xs[slot][kk]
          wmma::mma_sync(acc, fa, fb, acc);
        }
      }
      wmma::store_matrix_sync(&cs[fr][fc], acc, MG_CLD, wmma::mem_row_major);
      __syncthreads();
      for (int i = tid; i < MG_BM * MG_BN; i += MG_THREADS) {
        const int bb = i / MG_BM, rr = i % MG_BM;
        if (b0 + bb < cnt && r0 + rr < jb.n_out)
          jb.y[(size_t)(s0 + list[b0 + bb]) * jb.y_stride + (size_t)(r0 + rr)] = cs[rr][bb];
      }
    }
  }
}

void launch_moe_matmul_id(const cu_moe_job *jobs, int n_jobs, const float *x, size_t x_stride,
                          int64_t n_x_rows, int64_t n_in, const int32_t *ids, size_t ids_stride,
                          int64_t n, int k, int64_t n_expert, void *q8, size_t q8_bytes,
                          hx_stream st) {
  CU_ASSERT(n_jobs >= 1 && n_jobs <= 2 && n >= 1 && k >= 1 && k <= ROUTE_K_MAX);
  CU_ASSERT(n_x_rows == n || n_x_rows == n * k);
  CU_ASSERT(n_in >= 1 && n_expert >= 1 && n_expert < 65536);
  moe_jobs mj = {};
  int64_t n_out_max = 0;
  bool quantized = n_in % 32 == 0;
  for (int i = 0; i < n_jobs; i++) {
    CU_ASSERT(jobs[i].n_out >= 1 && matvec_type_supported(jobs[i].type));
    mj.j[i] = jobs[i];
    n_out_max = jobs[i].n_out > n_out_max ? jobs[i].n_out : n_out_max;
    quantized = quantized && matvec_type_quantized(jobs[i].type);
  }
  mj.n = n_jobs;
  const int x_per_slot = n_x_rows == n * k && k > 1;
  if (n <= MOE_SLOT_TOKENS_MAX) {
    const size_t q8_need = (size_t)n_x_rows * (size_t)(n_in / 32) * HX_CU_Q8_1_BLOCK_BYTES;
    const cu_block_q8_1 *xq = NULL;
    if (quantized && q8 && q8_need <= q8_bytes) {
      launch_quantize_q8_1(q8, x, x_stride, n_in, n_x_rows, st);
      xq = (const cu_block_q8_1 *)q8;
    }
    dim3 grid(cdiv(n_out_max, MS_WARPS * MS_ROWS), (unsigned)(n * k), (unsigned)n_jobs);
    cu_launch(moe_slot_kernel, grid, MS_WARPS * 32, 0, st, mj, xq, x, x_stride, n_in, ids,
              ids_stride, k, n_expert, x_per_slot);
  } else {
    /* tensor cores unless a weight is F32 (kept exact) or BF16 and other
       types are mixed in one call (one activation format per launch) */
    int n_f32 = 0, n_bf16 = 0;
    for (int i = 0; i < n_jobs; i++)
      n_f32 += jobs[i].type == GT_F32, n_bf16 += jobs[i].type == GT_BF16;
    dim3 grid(cdiv(n_out_max, MG_BM), (unsigned)n_expert, (unsigned)n_jobs);
    if (n_f32 == 0 && n_bf16 == 0)
      cu_launch(moe_grouped_tc_kernel<half>, grid, MG_THREADS, 0, st, mj, x, x_stride, n_in, ids,
                ids_stride, n, k, x_per_slot);
    else if (n_f32 == 0 && n_bf16 == n_jobs)
      cu_launch(moe_grouped_tc_kernel<__nv_bfloat16>, grid, MG_THREADS, 0, st, mj, x, x_stride,
                n_in, ids, ids_stride, n, k, x_per_slot);
    else
      cu_launch(moe_grouped_kernel, grid, MG_THREADS, 0, st, mj, x, x_stride, n_in, ids, ids_stride,
                n, k, x_per_slot);
  }
  CUDA_LAUNCH_CHECK();
}

// ---- combine ------------------------------------------------------------------

__global__ static void moe_combine_kernel(float *out, size_t o_stride, const float *y,
                                          size_t y_stride, const float *w, size_t w_stride,
                                          const float *sh, size_t sh_stride, const float *sg,
                                          size_t sg_stride, int64_t d, int k) {
  pdl_trigger();
  pdl_wait();
  const int64_t t = blockIdx.y, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= d)
    return;
  const float *wt = w + (size_t)t * w_stride;
  float acc = 0.0f;
  for (int j = 0; j < k; j++)
    acc += wt[j] * y[(size_t)(t * k + j) * y_stride + (size_t)i];
  if (sh) {
    const float g = 1.0f / (1.0f + expf(-sg[(size_t)t * sg_stride]));
    acc += g * sh[(size_t)t * sh_stride + (size_t)i];
  }
  out[(size_t)t * o_stride + (size_t)i] = acc;
}

void launch_moe_combine(float *out, size_t o_stride, const float *y, size_t y_stride,
                        const float *w, size_t w_stride, const float *sh, size_t sh_stride,
                        const float *sg, size_t sg_stride, int64_t d, int64_t n_rows, int k,
                        hx_stream st) {
  CU_ASSERT(d >= 1 && n_rows >= 1 && n_rows < 65536 && k >= 1 && k <= ROUTE_K_MAX);
  CU_ASSERT(!sh || sg);
  dim3 grid(cdiv(d, 256), (unsigned)n_rows);
  cu_launch(moe_combine_kernel, grid, 256, 0, st, out, o_stride, y, y_stride, w, w_stride, sh,
            sh_stride, sg, sg_stride, d, k);
  CUDA_LAUNCH_CHECK();
}
