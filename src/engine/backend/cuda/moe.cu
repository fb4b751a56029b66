// moe.cu — the mixture-of-experts ops of the CUDA backend (backend.h "MoE
// ops"): routing, the expert matmul selected by ids, and the weighted
// combine with the shared expert.
//
// Every op reads the expert ids from device memory (written by moe_route),
// so a decode step records the same launches whatever experts it picks and
// replays from the captured graph. The expert matmul has two forms:
//   slot form (few tokens: decode): one block row per (token, slot) pair;
//     each reads the id, then only that expert's weight rows — decode reads
//     exactly the k chosen experts' bytes. Quantized weights use a q8_1 dp4a
//     dot on activations quantized once per call into the backend's q8
//     scratch: Q4_K streams 16-byte chunks per lane, several loads in flight
//     (as mmv_stream.cu), the other types use mmvq.cu's one sub-block per
//     lane (both re-stated here: those device functions are private to their
//     files); float weights, or activations too wide for the scratch, use a
//     dequantize-and-FMA dot on f32 activations.
//   grouped form (prefill): one block per (expert, 128 output rows) gathers
//     the slots routed to its expert from ids into shared memory (no global
//     scratch, so the launch shape never depends on the routing; experts
//     nobody chose exit after the scan) and runs a GEMM over them in tiles
//     of 64 slots, so an expert's rows are read once per 64 routed slots. On
//     tensor cores (WMMA, f32 accumulation) with weights dequantized — the
//     quantized types natively, 16-byte chunks per thread — and activations
//     rounded to f16 (bf16 for BF16 weights), as the dense prefill GEMM
//     does; F32 weights keep an f32 SIMT form.
// Each output element is one dot product of one weight row and one input
// row in both forms (backend.h contract).
#include "common.cuh"
#include "dequant.cuh"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <mma.h>
#include <type_traits>

// ---- routing -----------------------------------------------------------------

enum { ROUTE_THREADS = 128, ROUTE_EXPERTS_MAX = 8192, ROUTE_K_MAX = 64 };

// Whether (v, i) ranks before (bv, bi): larger probability, then lower id.
__device__ __forceinline__ bool route_better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

// One block per token row: softmax in f32 (sum in double, as the CPU),
// then k rounds of a block arg-max over the probabilities (a chosen expert
// is marked -1), then the optional renormalization by thread 0 in slot order.
// With xq (the one-token fusion route ; expert matmul), the block also writes
// the q8_1 blocks of its token's row of x (n_in floats) that the expert
// matmul's slot form reads, saving that form its quantize launch.
__global__ static void __launch_bounds__(ROUTE_THREADS)
    moe_route_kernel(float *weights, size_t w_stride, int32_t *ids, size_t i_stride,
                     const float *logits, size_t l_stride, int n_exp, int k, int renorm,
                     const float *x, size_t x_stride, int64_t n_in, cu_block_q8_1 *xq) {
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
  if (xq)
    for (int64_t b = warp; b < n_in / 32; b += nw)
      warp_quantize_q8_1(x[(size_t)t * x_stride + (size_t)b * 32 + lane], xq + t * (n_in / 32) + b,
                         lane);
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
                      int renorm, const float *x, size_t x_stride, int64_t n_in, void *xq,
                      hx_stream st) {
  CU_ASSERT(n_exp >= 1 && n_exp <= ROUTE_EXPERTS_MAX && k >= 1 && k <= ROUTE_K_MAX && k <= n_exp &&
            n_rows >= 1 && n_rows < (1 << 30));
  CU_ASSERT(!xq || (x && n_in >= 32 && n_in % 32 == 0));
  cu_launch(moe_route_kernel, (unsigned)n_rows, ROUTE_THREADS, (size_t)n_exp * sizeof(float), st,
            weights, w_stride, ids, i_stride, logits, l_stride, (int)n_exp, k, renorm, x, x_stride,
            n_in, (cu_block_q8_1 *)xq);
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

enum { MS_WARPS = 4, MS_ROWS = 2, MOE_SLOT_TOKENS_MAX = HX_CU_MOE_SLOT_TOKENS_MAX };

// Rows r0, r0 + 1 of NJ weights of one type and shape (gate and up: one pass
// over the activation for both).
template <int TYPE, int NJ>
__device__ __forceinline__ void moe_rows_q(float acc[NJ][MS_ROWS], const uint8_t *const w[NJ],
                                           size_t row_bytes, int64_t r0, int64_t n_out,
                                           int64_t n_sub, const cu_block_q8_1 *xq, int lane) {
#pragma unroll 2
  for (int64_t s = lane; s < n_sub; s += 32) {
    cu_block_q8_1 xb = xq[s];
#pragma unroll
    for (int jr = 0; jr < MS_ROWS; jr++) {
      int64_t r = r0 + jr < n_out ? r0 + jr : n_out - 1;
#pragma unroll
      for (int i = 0; i < NJ; i++)
        acc[i][jr] += moe_dot_sub<TYPE>(w[i] + (size_t)r * row_bytes, s, xb);
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
  const uint8_t *const w[1] = {jb.w + (size_t)e * (size_t)jb.n_out * jb.row_bytes};
  const int64_t xrow = x_per_slot ? slot : t;
  float acc[1][MS_ROWS];
#pragma unroll
  for (int jr = 0; jr < MS_ROWS; jr++)
    acc[0][jr] = 0.0f;
  if (xq) {
    const int64_t n_sub = n_in / 32;
    const cu_block_q8_1 *xb = xq + xrow * n_sub;
    switch (jb.type) {
    case GT_Q8_0:
      moe_rows_q<GT_Q8_0, 1>(acc, w, jb.row_bytes, r0, jb.n_out, n_sub, xb, lane);
      break;
    case GT_Q4_K:
      moe_rows_q<GT_Q4_K, 1>(acc, w, jb.row_bytes, r0, jb.n_out, n_sub, xb, lane);
      break;
    case GT_Q5_K:
      moe_rows_q<GT_Q5_K, 1>(acc, w, jb.row_bytes, r0, jb.n_out, n_sub, xb, lane);
      break;
    default:
      moe_rows_q<GT_Q6_K, 1>(acc, w, jb.row_bytes, r0, jb.n_out, n_sub, xb, lane);
      break;
    }
  } else {
    const float *xr = x + (size_t)xrow * x_stride;
    for (int64_t c = lane; c < n_in; c += 32) {
      const float xv = xr[c];
#pragma unroll
      for (int jr = 0; jr < MS_ROWS; jr++) {
        int64_t r = r0 + jr < jb.n_out ? r0 + jr : jb.n_out - 1;
        acc[0][jr] = fmaf(dequant1(w[0] + (size_t)r * jb.row_bytes, jb.type, c), xv, acc[0][jr]);
      }
    }
  }
#pragma unroll
  for (int jr = 0; jr < MS_ROWS; jr++) {
    float a = warp_sum(acc[0][jr]);
    if (lane == 0 && r0 + jr < jb.n_out)
      y[r0 + jr] = a;
  }
}

// ---- one-token fusions of the slot form ---------------------------------------
//
// (cuda_backend.c chooses them when the recorded ops match; each writes the
// bytes the ops it replaces write.) Gate + up + SwiGLU: both weights of one
// quantized type; warp rows r0, r0 + 1 of both for its slot, then
// y_gate = silu(g) * u as launch_swiglu computes it, y_up = u.
// grid (row groups of MS_WARPS * MS_ROWS, n * k).
__global__ static void __launch_bounds__(MS_WARPS * 32)
    moe_gate_up_swiglu_kernel(moe_jobs jobs, const cu_block_q8_1 *xq, int64_t n_in,
                              const int32_t *ids, size_t ids_stride, int k, int64_t n_expert) {
  pdl_trigger();
  pdl_wait();
  const int64_t slot = blockIdx.y, t = slot / k, n_out = jobs.j[0].n_out;
  const int j = (int)(slot % k), lane = threadIdx.x & 31;
  const int64_t r0 = ((int64_t)blockIdx.x * MS_WARPS + threadIdx.x / 32) * MS_ROWS;
  if (r0 >= n_out)
    return;
  float *yg = jobs.j[0].y + (size_t)slot * jobs.j[0].y_stride;
  float *yu = jobs.j[1].y + (size_t)slot * jobs.j[1].y_stride;
  const int32_t e = ids[(size_t)t * ids_stride + j];
  if (e < 0 || e >= n_expert) { // broken contract: make it visible, touch nothing
    if (lane == 0)
      for (int jr = 0; jr < MS_ROWS && r0 + jr < n_out; jr++)
        yg[r0 + jr] = NAN, yu[r0 + jr] = NAN;
    return;
  }
  const size_t rb = jobs.j[0].row_bytes, eo = (size_t)e * (size_t)n_out * rb;
  const uint8_t *const w[2] = {jobs.j[0].w + eo, jobs.j[1].w + eo};
  const int64_t n_sub = n_in / 32;
  const cu_block_q8_1 *xb = xq + t * n_sub;
  float acc[2][MS_ROWS];
#pragma unroll
  for (int jr = 0; jr < MS_ROWS; jr++)
    acc[0][jr] = 0.0f, acc[1][jr] = 0.0f;
  switch (jobs.j[0].type) {
  case GT_Q8_0:
    moe_rows_q<GT_Q8_0, 2>(acc, w, rb, r0, n_out, n_sub, xb, lane);
    break;
  case GT_Q4_K:
    moe_rows_q<GT_Q4_K, 2>(acc, w, rb, r0, n_out, n_sub, xb, lane);
    break;
  case GT_Q5_K:
    moe_rows_q<GT_Q5_K, 2>(acc, w, rb, r0, n_out, n_sub, xb, lane);
    break;
  default:
    moe_rows_q<GT_Q6_K, 2>(acc, w, rb, r0, n_out, n_sub, xb, lane);
    break;
  }
#pragma unroll
  for (int jr = 0; jr < MS_ROWS; jr++) {
    const float g = warp_sum(acc[0][jr]), u = warp_sum(acc[1][jr]);
    if (lane == 0 && r0 + jr < n_out) {
      yg[r0 + jr] = g / (1.0f + __expf(-g)) * u;
      yu[r0 + jr] = u;
    }
  }
}

// Expert down + combine: one block per MC_ROWS output rows of a token; warp w
// takes the token's slots w, w + MC_WARPS, ...: for each, lane l quantizes
// sub-blocks l, l + 32, ... of the slot's input row itself (lane_quantize_q8_1:
// the bytes launch_quantize_q8_1 writes; no quantize launch) and dots them
// with the chosen expert's rows. The per-slot results go to y (as the expert
// matmul writes them) and to shared memory, where thread r sums row r over
// the slots in slot order and adds sigmoid(shared gate) * shared, as
// moe_combine_kernel does. grid (row groups of MC_ROWS, n tokens).
enum { MC_WARPS = 8, MC_ROWS = 4 };

template <int TYPE>
__device__ __forceinline__ void moe_down_rows(float acc[MC_ROWS], const uint8_t *w,
                                              size_t row_bytes, int64_t r0, int64_t n_out,
                                              const float *x, int64_t n_sub, int lane) {
  for (int64_t s = lane; s < n_sub; s += 32) {
    cu_block_q8_1 xb;
    lane_quantize_q8_1(x + (size_t)s * 32, (int *)xb.qs, xb.d, xb.s);
#pragma unroll
    for (int jr = 0; jr < MC_ROWS; jr++) {
      const int64_t r = r0 + jr < n_out ? r0 + jr : n_out - 1;
      acc[jr] += moe_dot_sub<TYPE>(w + (size_t)r * row_bytes, s, xb);
    }
  }
}

__global__ static void __launch_bounds__(MC_WARPS * 32)
    moe_down_combine_kernel(cu_moe_job jb, const float *x, size_t x_stride, int64_t n_in,
                            const int32_t *ids, size_t ids_stride, int k, int64_t n_expert,
                            float *out, size_t o_stride, const float *wt, size_t w_stride,
                            const float *sh, size_t sh_stride, const float *sg, size_t sg_stride) {
  pdl_trigger();
  pdl_wait();
  __shared__ float part[ROUTE_K_MAX][MC_ROWS];
  const int64_t t = blockIdx.y, r0 = (int64_t)blockIdx.x * MC_ROWS, n_out = jb.n_out;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int j = warp; j < k; j += MC_WARPS) {
    const int64_t slot = t * k + j;
    const int32_t e = ids[(size_t)t * ids_stride + j];
    float acc[MC_ROWS];
#pragma unroll
    for (int jr = 0; jr < MC_ROWS; jr++)
      acc[jr] = e < 0 || e >= n_expert ? NAN : 0.0f; // broken contract: make it visible
    if (e >= 0 && e < n_expert) {
      const uint8_t *w = jb.w + (size_t)e * (size_t)n_out * jb.row_bytes;
      const float *xr = x + (size_t)slot * x_stride;
      switch (jb.type) {
      case GT_Q8_0:
        moe_down_rows<GT_Q8_0>(acc, w, jb.row_bytes, r0, n_out, xr, n_in / 32, lane);
        break;
      case GT_Q4_K:
        moe_down_rows<GT_Q4_K>(acc, w, jb.row_bytes, r0, n_out, xr, n_in / 32, lane);
        break;
      case GT_Q5_K:
        moe_down_rows<GT_Q5_K>(acc, w, jb.row_bytes, r0, n_out, xr, n_in / 32, lane);
        break;
      default:
        moe_down_rows<GT_Q6_K>(acc, w, jb.row_bytes, r0, n_out, xr, n_in / 32, lane);
        break;
      }
    }
#pragma unroll
    for (int jr = 0; jr < MC_ROWS; jr++) {
      const float a = warp_sum(acc[jr]);
      if (lane == 0 && r0 + jr < n_out) {
        jb.y[(size_t)slot * jb.y_stride + (size_t)(r0 + jr)] = a;
        part[j][jr] = a;
      }
    }
  }
  __syncthreads();
  const int64_t r = r0 + threadIdx.x;
  if (threadIdx.x >= MC_ROWS || r >= n_out)
    return;
  const float *wr = wt + (size_t)t * w_stride;
  float acc = 0.0f;
  for (int j = 0; j < k; j++)
    acc += wr[j] * part[j][threadIdx.x];
  if (sh) {
    const float g = 1.0f / (1.0f + expf(-sg[(size_t)t * sg_stride]));
    acc += g * sh[(size_t)t * sh_stride + (size_t)r];
  }
  out[(size_t)t * o_stride + (size_t)r] = acc;
}

int moe_slot_fused_type(int type) {
  return type == GT_Q8_0 || type == GT_Q4_K || type == GT_Q5_K || type == GT_Q6_K;
}

void launch_moe_down_combine(const cu_moe_job *jb, const float *x, size_t x_stride, int64_t n_in,
                             const int32_t *ids, size_t ids_stride, int64_t n, int k,
                             int64_t n_expert, float *out, size_t o_stride, const float *w,
                             size_t w_stride, const float *sh, size_t sh_stride, const float *sg,
                             size_t sg_stride, hx_stream st) {
  CU_ASSERT(n >= 1 && n <= MOE_SLOT_TOKENS_MAX && k >= 1 && k <= ROUTE_K_MAX && n_expert >= 1);
  CU_ASSERT(moe_slot_fused_type(jb->type) && n_in >= 32 && n_in % 32 == 0 && jb->n_out >= 1);
  CU_ASSERT((uintptr_t)x % 16 == 0 && x_stride % 4 == 0 && (!sh || sg));
  dim3 grid(cdiv(jb->n_out, MC_ROWS), (unsigned)n);
  cu_launch(moe_down_combine_kernel, grid, MC_WARPS * 32, 0, st, *jb, x, x_stride, n_in, ids,
            ids_stride, k, n_expert, out, o_stride, w, w_stride, sh, sh_stride, sg, sg_stride);
  CUDA_LAUNCH_CHECK();
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

// Rounds an activation or weight to the tensor-core element type.
__device__ __forceinline__ void mg_store(half *p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void mg_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }

// ---- grouped form on tensor cores ---------------------------------------------------
//
// Grid (row tiles of MT_BM, n_expert, jobs). A block first gathers, in slot
// order, the slots routed to its expert into a shared list (a ballot scan of
// ids; up to MT_LIST per pass, so any routing — duplicates included — is
// covered by further passes), exits when there are none, and then runs a
// GEMM over its MT_BM weight rows and the list in tiles of MT_BN slots:
//   per MT_BK = 64 input columns, each thread expands 32 weights of one row
//   (thread pair per row: a Q4_K/Q5_K qs group of 32 bytes, a Q6_K quarter
//   block, two Q8_0 blocks) into T in shared memory, and 16 activations of
//   the gathered rows; the next step's raw bytes are loaded into registers
//   before this step's WMMA, so global latency overlaps the tensor cores;
//   warp w owns rows 16w..16w+15 and up to 4 16x16 f32 accumulators (slot
//   fragments past the tile's slot count are skipped);
//   the result leaves through a per-warp 16x16 staging tile, 32 bytes of a
//   y row per lane.
// Weights are dequantized in f32 exactly as dequant1 and rounded to T, the
// activations rounded to T: the same numbers as one dot product in T with
// f32 accumulation per output element.
enum {
  MT_BM = 128,
  MT_BN = 64,
  MT_BK = 64,
  MT_THREADS = 256,
  MT_WARPS = MT_THREADS / 32,
  MT_LD = MT_BK + 8, // elements per shared row: 16-byte aligned rows, banks staggered
  MT_LIST = 1024,    // routed slots gathered per pass
  MT_GENERIC = -1,   // any type through dequant1 (float weights, odd widths)
};
static_assert(MT_BM == MT_WARPS * 16 && MT_THREADS == 2 * MT_BM, "one thread pair per row");
static_assert(MT_BN * MT_BK == 16 * MT_THREADS, "16 activations per thread per step");

template <typename T> struct mt_smem {
  __align__(32) T ws[MT_BM * MT_LD];        // weights [row][k]
  __align__(32) T xs[MT_BN * MT_LD];        // activations [slot][k]
  __align__(32) float stage[MT_WARPS][256]; // per-warp output fragment
  int64_t xoff[MT_BN];                      // x row offset (floats) of each tile slot
  int list[MT_LIST];                        // slots routed to the block's expert
  int wcount[MT_WARPS];
};

__device__ __forceinline__ uint32_t mt_pack2(float a, float b, const half *) {
  const half2 h = __floats2half2_rn(a, b);
  return *(const uint32_t *)&h;
}
__device__ __forceinline__ uint32_t mt_pack2(float a, float b, const __nv_bfloat16 *) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *(const uint32_t *)&h;
}

// Writes group gr (0..3) of a thread's 32 weights, v[0..7], to shared row
// `row` with one 16-byte store. split (the K types): groups 0, 1 go to
// columns 16 hh.., groups 2, 3 to 32 + 16 hh..; otherwise columns 32 hh + 8 gr.
template <typename T>
__device__ __forceinline__ void mt_put8(T *row, int hh, bool split, int gr, const float v[8]) {
  const int col =
      split ? (gr < 2 ? 16 * hh + 8 * gr : 32 + 16 * hh + 8 * (gr - 2)) : 32 * hh + 8 * gr;
  uint4 u;
  u.x = mt_pack2(v[0], v[1], row);
  u.y = mt_pack2(v[2], v[3], row);
  u.z = mt_pack2(v[4], v[5], row);
  u.w = mt_pack2(v[6], v[7], row);
  *(uint4 *)(row + col) = u;
}

// Byte i (runtime, 0..11) of the 12 scale bytes held in s0, s1, s2; selects
// rather than indexes, so the words stay in registers.
__device__ __forceinline__ int mt_byte(uint32_t s0, uint32_t s1, uint32_t s2, int i) {
  const uint32_t w = i < 4 ? s0 : (i < 8 ? s1 : s2);
  return (int)((w >> (8 * (i & 3))) & 0xFF);
}
// get_scale_min_k4 on the scale bytes in registers.
__device__ __forceinline__ void mt_scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int j, int &d,
                                             int &m) {
  if (j < 4) {
    d = mt_byte(s0, s1, s2, j) & 63;
    m = mt_byte(s0, s1, s2, j + 4) & 63;
  } else {
    d = (mt_byte(s0, s1, s2, j + 4) & 0xF) | ((mt_byte(s0, s1, s2, j - 4) >> 6) << 4);
    m = (mt_byte(s0, s1, s2, j + 4) >> 4) | ((mt_byte(s0, s1, s2, j) >> 6) << 4);
  }
}

__device__ __forceinline__ uint32_t mt_ld16x2(const uint8_t *p) { // 2-byte aligned word
  const unsigned short *q = (const unsigned short *)p;
  return (uint32_t)__ldg(q) | ((uint32_t)__ldg(q + 1) << 16);
}
__device__ __forceinline__ int mt_b(uint32_t w, int i) { return (int)((w >> (8 * i)) & 0xFF); }

// One thread's part of a weight step: load() takes the raw bytes of row
// `row` (columns k0.. of the 64-step, part hh) into registers, or zeros when
// !ok (rows past n_out); put() expands them to the thread's 32 elements of
// the shared weight row.
template <int TYPE> struct mt_wraw;

template <> struct mt_wraw<GT_Q4_K> { // 16 qs bytes: low nibbles sub 2g, high sub 2g+1
  uint4 q;
  uint32_t dm, s0, s1, s2;
  int g;
  __device__ __forceinline__ void load(const uint8_t *row, int64_t k0, int hh, bool ok, int64_t,
                                       int) {
    g = (int)(k0 % QK_K) / 64;
    if (!ok) {
      q = make_uint4(0, 0, 0, 0), dm = s0 = s1 = s2 = 0;
      return;
    }
    const uint8_t *b = row + (size_t)(k0 / QK_K) * sizeof(cu_block_q4_K);
    q = __ldg((const uint4 *)(b + 16 + g * 32 + hh * 16));
    const uint32_t *w = (const uint32_t *)b;
    dm = __ldg(w), s0 = __ldg(w + 1), s1 = __ldg(w + 2), s2 = __ldg(w + 3);
  }
  template <typename T> __device__ __forceinline__ void put(T *dst, int hh) const {
    int sc0, m0, sc1, m1;
    mt_scale_min(s0, s1, s2, 2 * g, sc0, m0);
    mt_scale_min(s0, s1, s2, 2 * g + 1, sc1, m1);
    const half2 h = *(const half2 *)&dm;
    const float d = __low2float(h), dmin = __high2float(h);
    const float d0 = d * sc0, mn0 = dmin * m0, d1 = d * sc1, mn1 = dmin * m1;
    const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
    float v[8];
#pragma unroll
    for (int gr = 0; gr < 4; gr++) { // groups of 8: low nibbles of bytes 0..15, then high
#pragma unroll
      for (int i = 0; i < 8; i++) {
        const int byte = mt_b(qw[(8 * (gr & 1) + i) / 4], i % 4);
        v[i] = gr < 2 ? d0 * (byte & 0xF) - mn0 : d1 * (byte >> 4) - mn1;
      }
      mt_put8(dst, hh, true, gr, v);
    }
  }
  // Held as half (the only T Q4_K weights take; the template above only
  // compiles the bf16 kernel's unused branch): integer tricks instead of a
  // float conversion per weight. 0x6400 | q is the half 1024 + q exactly, so
  // each pair of nibbles costs a byte permute, a mask, a subtract and one
  // fused multiply-add (d·sc and -dmin·m rounded to half first). H100,
  // cuda-moe-bench Qwen3-30B-A3B n=512: gate+up 568 -> 548 us, down 323 -> 310.
  __device__ __forceinline__ void put(half *dst, int hh) const {
    int sc0, m0, sc1, m1;
    mt_scale_min(s0, s1, s2, 2 * g, sc0, m0);
    mt_scale_min(s0, s1, s2, 2 * g + 1, sc1, m1);
    const half2 h = *(const half2 *)&dm;
    const float d = __low2float(h), dmin = __high2float(h);
    const half2 D0 = __float2half2_rn(d * sc0), M0 = __float2half2_rn(-dmin * m0);
    const half2 D1 = __float2half2_rn(d * sc1), M1 = __float2half2_rn(-dmin * m1);
    const half2 k1024 = __float2half2_rn(1024.0f);
    const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int gr = 0; gr < 4; gr++) { // as put(): low nibbles of bytes 0..15, then high
      uint32_t u[4];
#pragma unroll
      for (int j = 0; j < 4; j++) { // bytes 2j, 2j + 1 of the group's 8
        uint32_t p = __byte_perm(qw[2 * (gr & 1) + j / 2], 0, (j & 1) ? 0x4342 : 0x4140);
        if (gr >= 2)
          p >>= 4;
        p = (p & 0x000F000Fu) | 0x64006400u;
        half2 v = __hsub2(*(const half2 *)&p, k1024);
        v = __hfma2(v, gr < 2 ? D0 : D1, gr < 2 ? M0 : M1);
        u[j] = *(const uint32_t *)&v;
      }
      const int col = gr < 2 ? 16 * hh + 8 * gr : 32 + 16 * hh + 8 * (gr - 2);
      *(uint4 *)(dst + col) = make_uint4(u[0], u[1], u[2], u[3]);
    }
  }
};

template <> struct mt_wraw<GT_Q5_K> { // as Q4_K plus the fifth bits from qh
  uint4 q, h;
  uint32_t dm, s0, s1, s2;
  int g;
  __device__ __forceinline__ void load(const uint8_t *row, int64_t k0, int hh, bool ok, int64_t,
                                       int) {
    g = (int)(k0 % QK_K) / 64;
    if (!ok) {
      q = h = make_uint4(0, 0, 0, 0), dm = s0 = s1 = s2 = 0;
      return;
    }
    const uint8_t *b = row + (size_t)(k0 / QK_K) * sizeof(cu_block_q5_K);
    q = __ldg((const uint4 *)(b + 48 + g * 32 + hh * 16));
    h = __ldg((const uint4 *)(b + 16 + hh * 16));
    const uint32_t *w = (const uint32_t *)b;
    dm = __ldg(w), s0 = __ldg(w + 1), s1 = __ldg(w + 2), s2 = __ldg(w + 3);
  }
  template <typename T> __device__ __forceinline__ void put(T *dst, int hh) const {
    int sc0, m0, sc1, m1;
    const int j0 = 2 * g, j1 = 2 * g + 1;
    mt_scale_min(s0, s1, s2, j0, sc0, m0);
    mt_scale_min(s0, s1, s2, j1, sc1, m1);
    const half2 hd = *(const half2 *)&dm;
    const float d = __low2float(hd), dmin = __high2float(hd);
    const float d0 = d * sc0, mn0 = dmin * m0, d1 = d * sc1, mn1 = dmin * m1;
    const uint32_t qw[4] = {q.x, q.y, q.z, q.w}, hw[4] = {h.x, h.y, h.z, h.w};
    float v[8];
#pragma unroll
    for (int gr = 0; gr < 4; gr++) {
#pragma unroll
      for (int i = 0; i < 8; i++) {
        const int w = (8 * (gr & 1) + i) / 4;
        const int byte = mt_b(qw[w], i % 4), hb = mt_b(hw[w], i % 4);
        v[i] = gr < 2 ? d0 * ((byte & 0xF) + (((hb >> j0) & 1) << 4)) - mn0
                      : d1 * ((byte >> 4) + (((hb >> j1) & 1) << 4)) - mn1;
      }
      mt_put8(dst, hh, true, gr, v);
    }
  }
};

template <> struct mt_wraw<GT_Q6_K> { // a quarter block: sub-rows r0 and r0 + 1
  uint32_t l0[4], l1[4], hq[4];
  float ds0, ds1;
  int r0;
  __device__ __forceinline__ void load(const uint8_t *row, int64_t k0, int hh, bool ok, int64_t,
                                       int) {
    const int c = (int)(k0 % QK_K), h = c / 128;
    r0 = (c % 128) / 32;
    if (!ok) {
#pragma unroll
      for (int i = 0; i < 4; i++)
        l0[i] = l1[i] = hq[i] = 0;
      ds0 = ds1 = 0.0f;
      return;
    }
    const uint8_t *b = row + (size_t)(k0 / QK_K) * sizeof(cu_block_q6_K); // 2-byte aligned
#pragma unroll
    for (int i = 0; i < 4; i++) {
      l0[i] = mt_ld16x2(b + h * 64 + hh * 16 + 4 * i);
      l1[i] = mt_ld16x2(b + h * 64 + 32 + hh * 16 + 4 * i);
      hq[i] = mt_ld16x2(b + 128 + h * 32 + hh * 16 + 4 * i);
    }
    const float d = __half2float(__ushort_as_half(__ldg((const unsigned short *)(b + 208))));
    const int8_t *sc = (const int8_t *)b + 192 + h * 8 + hh;
    ds0 = d * (float)__ldg(sc + 2 * r0);
    ds1 = d * (float)__ldg(sc + 2 * r0 + 2);
  }
  template <typename T> __device__ __forceinline__ void put(T *dst, int hh) const {
    const int ls = (r0 >> 1) * 4, hs0 = 2 * r0, hs1 = 2 * r0 + 2;
    float v[8];
#pragma unroll
    for (int gr = 0; gr < 4; gr++) {
#pragma unroll
      for (int i = 0; i < 8; i++) {
        const int w = (8 * (gr & 1) + i) / 4, h = mt_b(hq[w], i % 4);
        v[i] = gr < 2 ? ds0 * ((((mt_b(l0[w], i % 4) >> ls) & 0xF) | (((h >> hs0) & 3) << 4)) - 32)
                      : ds1 * ((((mt_b(l1[w], i % 4) >> ls) & 0xF) | (((h >> hs1) & 3) << 4)) - 32);
      }
      mt_put8(dst, hh, true, gr, v);
    }
  }
};

template <> struct mt_wraw<GT_Q8_0> { // block k0 / 32 + hh
  uint32_t q[8];
  float d;
  __device__ __forceinline__ void load(const uint8_t *row, int64_t k0, int hh, bool ok,
                                       int64_t n_in, int) {
    if (!ok || k0 + 32 * hh >= n_in) {
#pragma unroll
      for (int i = 0; i < 8; i++)
        q[i] = 0;
      d = 0.0f;
      return;
    }
    const uint8_t *b = row + (size_t)(k0 / 32 + hh) * sizeof(cu_block_q8_0); // 2-byte aligned
    d = __half2float(__ushort_as_half(__ldg((const unsigned short *)b)));
#pragma unroll
    for (int i = 0; i < 8; i++)
      q[i] = mt_ld16x2(b + 2 + 4 * i);
  }
  template <typename T> __device__ __forceinline__ void put(T *dst, int hh) const {
    float v[8];
#pragma unroll
    for (int gr = 0; gr < 4; gr++) {
#pragma unroll
      for (int i = 0; i < 8; i++)
        v[i] = d * (float)(int8_t)mt_b(q[2 * gr + i / 4], i % 4);
      mt_put8(dst, hh, false, gr, v);
    }
  }
};

// F16 / BF16 rows held as the same T: 4 16-byte chunks copied as they are
// (rows 16-byte aligned, n_in % 8 == 0: checked by the kernel).
struct mt_wraw_f16 {
  uint4 v[4];
  __device__ __forceinline__ void load(const uint8_t *row, int64_t k0, int hh, bool ok,
                                       int64_t n_in, int) {
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const int64_t c = k0 + 32 * hh + 8 * q;
      v[q] = ok && c < n_in ? __ldg((const uint4 *)(row + 2 * c)) : make_uint4(0, 0, 0, 0);
    }
  }
  template <typename T> __device__ __forceinline__ void put(T *dst, int hh) const {
    static_assert(sizeof(T) == 2, "16-bit element");
#pragma unroll
    for (int q = 0; q < 4; q++)
      *(uint4 *)(dst + 32 * hh + 8 * q) = v[q];
  }
};
template <> struct mt_wraw<GT_F16> : mt_wraw_f16 {};
template <> struct mt_wraw<GT_BF16> : mt_wraw_f16 {};

template <> struct mt_wraw<MT_GENERIC> { // element by element at expand time
  const uint8_t *row;
  int64_t c0, n_in;
  int type;
  bool ok;
  __device__ __forceinline__ void load(const uint8_t *r, int64_t k0, int hh, bool ok_, int64_t n,
                                       int ty) {
    row = r, c0 = k0 + 32 * hh, n_in = n, ok = ok_, type = ty;
  }
  template <typename T> __device__ __forceinline__ void put(T *dst, int hh) const {
    for (int i = 0; i < 32; i++)
      mg_store(dst + 32 * hh + i, ok && c0 + i < n_in ? dequant1(row, type, c0 + i) : 0.0f);
  }
};

// One block's work (see above) for weights of type TYPE held as T. W32 is an
// A/B against the measured form (HX_MOE_TC_W32=1, written without a GPU): its
// branches repeat the activation staging, MMA and store steps with warps of
// 32 rows x 32 slots; whichever form loses on the GPU is deleted, not kept
// beside the other (unifying them now would change the measured default
// instance's code before a GPU can test it).
template <int TYPE, typename T, bool W32>
__device__ __forceinline__ void
mt_block(mt_smem<T> &sm, const cu_moe_job &jb, int e, int64_t r0, const float *x, size_t x_stride,
         int64_t n_in, const int32_t *ids, size_t ids_stride, int n_slots, int k, int x_per_slot) {
  namespace wmma = nvcuda::wmma;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rr = tid >> 1, hh = tid & 1; // weight row and part this thread expands
  const bool row_ok = r0 + rr < jb.n_out, warp_ok = r0 + warp * 16 < jb.n_out;
  const uint8_t *wrow =
      jb.w + ((size_t)e * (size_t)jb.n_out + (size_t)(row_ok ? r0 + rr : r0)) * jb.row_bytes;
  const int xc = tid & (MT_BK - 1), xs0 = tid / MT_BK; // activation column, first slot
  mt_wraw<TYPE> wr;
  for (int cursor = 0; cursor < n_slots;) {
    // gather the next up to MT_LIST routed slots, in slot order
    int cnt = 0;
    while (cursor < n_slots && cnt <= MT_LIST - MT_THREADS) {
      const int s = cursor + tid;
      const bool hit = s < n_slots && ids[(size_t)(s / k) * ids_stride + (size_t)(s % k)] == e;
      const unsigned bal = __ballot_sync(0xffffffffu, hit);
      if (lane == 0)
        sm.wcount[warp] = __popc(bal);
      __syncthreads();
      int before = 0, total = 0;
#pragma unroll
      for (int w = 0; w < MT_WARPS; w++) {
        const int c = sm.wcount[w];
        before += w < warp ? c : 0;
        total += c;
      }
      if (hit)
        sm.list[cnt + before + __popc(bal & ((1u << lane) - 1u))] = s;
      cnt += total;
      cursor += MT_THREADS;
      __syncthreads(); // wcount is rewritten next round; the list is complete
    }
    for (int b0 = 0; b0 < cnt; b0 += MT_BN) {
      const int nt = cnt - b0 < MT_BN ? cnt - b0 : MT_BN; // slots in this tile
      if (tid < MT_BN) {
        int64_t off = 0;
        if (tid < nt) {
          const int s = sm.list[b0 + tid];
          off = (int64_t)(x_per_slot ? s : s / k) * (int64_t)x_stride;
        }
        sm.xoff[tid] = off;
      }
      __syncthreads(); // xoff set; the previous tile's shared tiles are no longer read
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[MT_BN / 16];
#pragma unroll
      for (int f = 0; f < MT_BN / 16; f++)
        wmma::fill_fragment(acc[f], 0.0f);
      float xv[16];
      auto load_x = [&](int64_t k0) {
        if constexpr (W32) { // 16-byte pieces: column quad tid % 16, slots tid / 16 + 16 i
#pragma unroll
          for (int i = 0; i < 4; i++) {
            const int sl = (tid >> 4) + 16 * i;
            const int64_t c = k0 + 4 * (tid & 15);
            const float4 v = sl < nt && c < n_in ? __ldg((const float4 *)(x + sm.xoff[sl] + c))
                                                 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            xv[4 * i] = v.x, xv[4 * i + 1] = v.y, xv[4 * i + 2] = v.z, xv[4 * i + 3] = v.w;
          }
        } else {
#pragma unroll
          for (int i = 0; i < 16; i++) {
            const int sl = xs0 + i * (MT_THREADS / MT_BK);
            xv[i] = sl < nt && k0 + xc < n_in ? __ldg(x + sm.xoff[sl] + k0 + xc) : 0.0f;
          }
        }
      };
      wr.load(wrow, 0, hh, row_ok, n_in, jb.type);
      load_x(0);
      for (int64_t k0 = 0; k0 < n_in; k0 += MT_BK) {
        if (k0 > 0)
          __syncthreads(); // the previous step's tiles are no longer read
        wr.put(sm.ws + rr * MT_LD, hh);
        if constexpr (W32) {
#pragma unroll
          for (int i = 0; i < 4; i++) {
            T *d = sm.xs + ((tid >> 4) + 16 * i) * MT_LD + 4 * (tid & 15);
            *(uint2 *)d = make_uint2(mt_pack2(xv[4 * i], xv[4 * i + 1], d),
                                     mt_pack2(xv[4 * i + 2], xv[4 * i + 3], d));
          }
        } else {
#pragma unroll
          for (int i = 0; i < 16; i++)
            mg_store(&sm.xs[(xs0 + i * (MT_THREADS / MT_BK)) * MT_LD + xc], xv[i]);
        }
        __syncthreads();
        if (k0 + MT_BK < n_in) { // next step's bytes in flight during the MMAs
          wr.load(wrow, k0 + MT_BK, hh, row_ok, n_in, jb.type);
          load_x(k0 + MT_BK);
        }
        if constexpr (W32) {
          // warp w: rows 32 (w % 4) .. + 31 (two A fragments), slots 32 (w / 4) .. + 31 (two
          // B fragments): 4 fragment loads per 4 MMAs instead of 3 per 2
          const int rg = warp & 3, sg = warp >> 2;
          if (32 * sg < nt && r0 + 32 * rg < jb.n_out) {
#pragma unroll
            for (int kk = 0; kk < MT_BK; kk += 16) {
              wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
              wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
              for (int i = 0; i < 2; i++)
                wmma::load_matrix_sync(fa[i], sm.ws + (32 * rg + 16 * i) * MT_LD + kk, MT_LD);
#pragma unroll
              for (int j = 0; j < 2; j++)
                if (32 * sg + 16 * j < nt)
                  wmma::load_matrix_sync(fb[j], sm.xs + (32 * sg + 16 * j) * MT_LD + kk, MT_LD);
#pragma unroll
              for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 2; j++)
                  if (32 * sg + 16 * j < nt)
                    wmma::mma_sync(acc[2 * i + j], fa[i], fb[j], acc[2 * i + j]);
            }
          }
        } else if (warp_ok) {
#pragma unroll
          for (int kk = 0; kk < MT_BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
            wmma::load_matrix_sync(fa, sm.ws + warp * 16 * MT_LD + kk, MT_LD);
#pragma unroll
            for (int f = 0; f < MT_BN / 16; f++)
              if (f * 16 < nt) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
                wmma::load_matrix_sync(fb, sm.xs + f * 16 * MT_LD + kk,
                                       MT_LD); // B[k][n] = xs[n][k]
                wmma::mma_sync(acc[f], fa, fb, acc[f]);
              }
          }
        }
      }
      if constexpr (W32) {
        const int rg = warp & 3, sg = warp >> 2;
        float *stage = sm.stage[warp];
        const int c = lane >> 1, rh = (lane & 1) * 8;
#pragma unroll
        for (int f = 0; f < 4; f++) { // acc[2 i + j]: rows 16 i.., slots 16 j.. of the warp's
          const int i = f >> 1, j = f & 1;
          const int sl = 32 * sg + 16 * j;
          const int64_t row = r0 + 32 * rg + 16 * i + rh;
          if (sl < nt && r0 + 32 * rg + 16 * i < jb.n_out) { // uniform over the warp
            wmma::store_matrix_sync(stage, acc[f], 16, wmma::mem_col_major); // [slot][row]
            __syncwarp();
            if (sl + c < nt) {
              float *yr = jb.y + (size_t)sm.list[b0 + sl + c] * jb.y_stride + (size_t)row;
#pragma unroll
              for (int q = 0; q < 8; q++)
                if (row + q < jb.n_out)
                  yr[q] = stage[c * 16 + rh + q];
            }
            __syncwarp(); // stage is rewritten by the next fragment
          }
        }
      } else if (warp_ok) {
        float *stage = sm.stage[warp];
        const int c = lane >> 1, rh = (lane & 1) * 8;
        const int64_t row = r0 + warp * 16 + rh;
#pragma unroll
        for (int f = 0; f < MT_BN / 16; f++)
          if (f * 16 < nt) {
            wmma::store_matrix_sync(stage, acc[f], 16, wmma::mem_col_major); // [slot][row]
            __syncwarp();
            if (f * 16 + c < nt) {
              float *yr = jb.y + (size_t)sm.list[b0 + f * 16 + c] * jb.y_stride + (size_t)row;
#pragma unroll
              for (int i = 0; i < 8; i++)
                if (row + i < jb.n_out)
                  yr[i] = stage[c * 16 + rh + i];
            }
            __syncwarp(); // stage is rewritten by the next fragment
          }
      }
    }
  }
}

template <typename T, bool W32>
__global__ static void __launch_bounds__(MT_THREADS, 2)
    moe_grouped_tc_kernel(moe_jobs jobs, const float *x, size_t x_stride, int64_t n_in,
                          const int32_t *ids, size_t ids_stride, int n_slots, int k,
                          int x_per_slot) {
  pdl_trigger();
  pdl_wait();
  __shared__ mt_smem<T> sm;
  const cu_moe_job jb = blockIdx.z ? jobs.j[1] : jobs.j[0]; // no local copy of jobs
  const int e = blockIdx.y;
  const int64_t r0 = (int64_t)blockIdx.x * MT_BM;
  if (r0 >= jb.n_out) // uniform over the block
    return;
#define MT_BLOCK(TY)                                                                               \
  mt_block<TY, T, W32>(sm, jb, e, r0, x, x_stride, n_in, ids, ids_stride, n_slots, k, x_per_slot)
  // 16-bit float rows copy straight into the tile when they are 16-byte aligned
  const bool f16_ok = (uintptr_t)jb.w % 16 == 0 && jb.row_bytes % 16 == 0 && n_in % 8 == 0;
  if (std::is_same<T, half>::value) { // quantized types expand natively
    switch (jb.type) {
    case GT_Q4_K:
      MT_BLOCK(GT_Q4_K);
      return;
    case GT_Q5_K:
      MT_BLOCK(GT_Q5_K);
      return;
    case GT_Q6_K:
      MT_BLOCK(GT_Q6_K);
      return;
    case GT_Q8_0:
      MT_BLOCK(GT_Q8_0);
      return;
    case GT_F16:
      if (f16_ok) {
        MT_BLOCK(GT_F16);
        return;
      }
      break;
    default:
      break;
    }
  } else if (jb.type == GT_BF16 && f16_ok) { // the bf16 kernel gets only BF16 weights
    MT_BLOCK(GT_BF16);
    return;
  }
  MT_BLOCK(MT_GENERIC);
#undef MT_BLOCK
}

// ---- slot form, Q4_K streaming --------------------------------------------------
//
// Q4_K weights with q8_1 activations (decode's common case) stream as in
// mmv_stream.cu: a warp owns `rows` consecutive rows of its slot's expert
// and walks their (row, super-block) units, 8 lanes per unit; lane p = lane
// % 8 takes qs bytes 16p..16p+15 (16-byte loads that skip L1): weights
// 16(p%2).. of sub-blocks 2(p/2) (low nibbles) and 2(p/2) + 1 (high), and the
// unit's 16-byte header. MQ_UNITS units per lane group are loaded before
// any is used, so a warp keeps up to 4 * MQ_UNITS units in flight; `rows`
// is chosen so that one such batch covers the warp's rows when they are
// short (down: 3 super-blocks per row).
enum { MQ_UNITS = 4, MQ_ROWS_MAX = 4 };

// grid (row groups of MS_WARPS * rows, n * k slots, jobs); every job Q4_K.
__global__ static void __launch_bounds__(MS_WARPS * 32, 6)
    moe_slot_q4k_kernel(moe_jobs jobs, const cu_block_q8_1 *xq, int64_t n_in, const int32_t *ids,
                        size_t ids_stride, int k, int64_t n_expert, int x_per_slot, int rows) {
  pdl_trigger();
  pdl_wait();
  const cu_moe_job jb = blockIdx.z ? jobs.j[1] : jobs.j[0]; // no local copy of jobs
  const int64_t slot = blockIdx.y, t = slot / k;
  const int j = (int)(slot % k), lane = threadIdx.x & 31;
  const int64_t r0 = ((int64_t)blockIdx.x * MS_WARPS + threadIdx.x / 32) * rows;
  if (r0 >= jb.n_out)
    return;
  const int nr = (int)(jb.n_out - r0 < rows ? jb.n_out - r0 : rows); // rows of this warp
  float *y = jb.y + (size_t)slot * jb.y_stride + (size_t)r0;
  const int32_t e = ids[(size_t)t * ids_stride + j];
  if (e < 0 || e >= n_expert) { // broken contract: make it visible, touch nothing
    if (lane < nr)
      y[lane] = NAN;
    return;
  }
  const uint8_t *w = jb.w + ((size_t)e * (size_t)jb.n_out + (size_t)r0) * jb.row_bytes;
  const int nb = (int)(n_in / QK_K), n_units = nr * nb;
  const cu_block_q8_1 *xb = xq + (x_per_slot ? slot : t) * (n_in / 32);
  const int p = lane & 7, grp = lane >> 3, g = p >> 1, hf = p & 1;
  float acc[MQ_ROWS_MAX];
#pragma unroll
  for (int jr = 0; jr < MQ_ROWS_MAX; jr++)
    acc[jr] = 0.0f;
  for (int base = 0; base < n_units; base += 4 * MQ_UNITS) {
    uint4 qs[MQ_UNITS], hd[MQ_UNITS];
#pragma unroll
    for (int u = 0; u < MQ_UNITS; u++) {
      const int un = base + 4 * u + grp;
      if (un < n_units) {
        const uint8_t *blk = w + (size_t)(un / nb) * jb.row_bytes + (size_t)(un % nb) * 144;
        hd[u] = ld_stream(blk);
        qs[u] = ld_stream(blk + 16 + 16 * p);
      }
    }
#pragma unroll
    for (int u = 0; u < MQ_UNITS; u++) {
      const int un = base + 4 * u + grp;
      if (un >= n_units)
        break;
      const int rr = un / nb, sb = un % nb;
      int xa[4], xc[4];
      float2 da, dc;
      ld_x16(xb, sb * 8 + 2 * g, hf, xa, da);
      ld_x16(xb, sb * 8 + 2 * g + 1, hf, xc, dc);
      const int qv[4] = {(int)qs[u].x, (int)qs[u].y, (int)qs[u].z, (int)qs[u].w};
      int s0 = 0, s1 = 0;
#pragma unroll
      for (int i = 0; i < 4; i++) {
        s0 = __dp4a(qv[i] & 0x0F0F0F0F, xa[i], s0);
        s1 = __dp4a((qv[i] >> 4) & 0x0F0F0F0F, xc[i], s1);
      }
      int sc0, m0, sc1, m1;
      mt_scale_min(hd[u].y, hd[u].z, hd[u].w, 2 * g, sc0, m0);
      mt_scale_min(hd[u].y, hd[u].z, hd[u].w, 2 * g + 1, sc1, m1);
      const float2 dm = __half22float2(*(const __half2 *)&hd[u].x);
      float v = dm.x * ((float)sc0 * da.x * (float)s0 + (float)sc1 * dc.x * (float)s1);
      if (hf == 0) // the min term once per sub-block: x.s sums all 32 of its inputs
        v -= dm.y * ((float)m0 * da.y + (float)m1 * dc.y);
#pragma unroll
      for (int jr = 0; jr < MQ_ROWS_MAX; jr++)
        acc[jr] += jr == rr ? v : 0.0f;
    }
  }
#pragma unroll
  for (int jr = 0; jr < MQ_ROWS_MAX; jr++)
    if (jr < nr) { // uniform over the warp
      const float a = warp_sum(acc[jr]);
      if (lane == 0)
        y[jr] = a;
    }
}

void launch_moe_matmul_id(const cu_moe_job *jobs, int n_jobs, const float *x, size_t x_stride,
                          int64_t n_x_rows, int64_t n_in, const int32_t *ids, size_t ids_stride,
                          int64_t n, int k, int64_t n_expert, void *q8, size_t q8_bytes,
                          int xq_ready, int swiglu, hx_stream st) {
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
      if (!xq_ready)
        launch_quantize_q8_1(q8, x, x_stride, n_in, n_x_rows, st);
      xq = (const cu_block_q8_1 *)q8;
    }
    CU_ASSERT(!xq_ready || xq);
    if (swiglu) {
      CU_ASSERT(xq && n_jobs == 2 && !x_per_slot && jobs[0].type == jobs[1].type &&
                moe_slot_fused_type(jobs[0].type) && jobs[0].n_out == jobs[1].n_out &&
                jobs[0].row_bytes == jobs[1].row_bytes);
      dim3 grid(cdiv(n_out_max, MS_WARPS * MS_ROWS), (unsigned)(n * k));
      cu_launch(moe_gate_up_swiglu_kernel, grid, MS_WARPS * 32, 0, st, mj, xq, n_in, ids,
                ids_stride, k, n_expert);
      CUDA_LAUNCH_CHECK();
      return;
    }
    /* the streaming Q4_K slot kernel is opt-in (HX_MOE_SLOT_STREAM=1): on an
       H100 (cuda-moe-bench, Qwen3-30B-A3B shapes) it took 13.2 / 9.5 us for
       gate+up / down against 10.1 / 7.4 us for moe_slot_kernel */
    static int slot_stream = -1;
    if (slot_stream < 0) {
      const char *e = getenv("HX_MOE_SLOT_STREAM");
      slot_stream = e && e[0] == '1';
    }
    bool all_q4k = xq != NULL && slot_stream;
    for (int i = 0; i < n_jobs; i++)
      all_q4k = all_q4k && jobs[i].type == GT_Q4_K;
    if (all_q4k) {
      /* rows per warp: one batch of 4 * MQ_UNITS super-blocks covers them */
      int64_t rows = (4 * MQ_UNITS) / (n_in / QK_K);
      rows = rows < 1 ? 1 : (rows > MQ_ROWS_MAX ? (int64_t)MQ_ROWS_MAX : rows);
      dim3 grid(cdiv(n_out_max, MS_WARPS * rows), (unsigned)(n * k), (unsigned)n_jobs);
      cu_launch(moe_slot_q4k_kernel, grid, MS_WARPS * 32, 0, st, mj, xq, n_in, ids, ids_stride, k,
                n_expert, x_per_slot, (int)rows);
    } else {
      dim3 grid(cdiv(n_out_max, MS_WARPS * MS_ROWS), (unsigned)(n * k), (unsigned)n_jobs);
      cu_launch(moe_slot_kernel, grid, MS_WARPS * 32, 0, st, mj, xq, x, x_stride, n_in, ids,
                ids_stride, k, n_expert, x_per_slot);
    }
  } else {
    CU_ASSERT(!xq_ready && !swiglu);
    /* tensor cores unless a weight is F32 (kept exact) or BF16 and other
       types are mixed in one call (one activation format per launch) */
    int n_f32 = 0, n_bf16 = 0;
    for (int i = 0; i < n_jobs; i++)
      n_f32 += jobs[i].type == GT_F32, n_bf16 += jobs[i].type == GT_BF16;
    CU_ASSERT(n * k < INT32_MAX - MT_THREADS);
    if (n_f32 == 0 && (n_bf16 == 0 || n_bf16 == n_jobs)) {
      dim3 grid(cdiv(n_out_max, MT_BM), (unsigned)n_expert, (unsigned)n_jobs);
      /* HX_MOE_TC_W32=1: warps of 32 rows x 32 slots and 16-byte activation
         loads (fewer shared-memory wavefronts per MMA; written without a
         GPU, off until measured: docs/benchmarks.md) */
      static int w32 = -1;
      if (w32 < 0) {
        const char *e = getenv("HX_MOE_TC_W32");
        w32 = e && e[0] == '1';
      }
      const bool wide = w32 && (uintptr_t)x % 16 == 0 && x_stride % 4 == 0 && n_in % 4 == 0;
#define MT_LAUNCH(TT, WW)                                                                          \
  cu_launch(moe_grouped_tc_kernel<TT, WW>, grid, MT_THREADS, 0, st, mj, x, x_stride, n_in, ids,    \
            ids_stride, (int)(n * k), k, x_per_slot)
      if (n_bf16 == 0 && wide)
        MT_LAUNCH(half, true);
      else if (n_bf16 == 0)
        MT_LAUNCH(half, false);
      else if (wide)
        MT_LAUNCH(__nv_bfloat16, true);
      else
        MT_LAUNCH(__nv_bfloat16, false);
#undef MT_LAUNCH
    } else {
      dim3 grid(cdiv(n_out_max, MG_BM), (unsigned)n_expert, (unsigned)n_jobs);
      cu_launch(moe_grouped_kernel, grid, MG_THREADS, 0, st, mj, x, x_stride, n_in, ids, ids_stride,
                n, k, x_per_slot);
    }
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
