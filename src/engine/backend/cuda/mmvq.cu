// mmvq.cu — batch-1 matrix-vector products, the decode step's hot loop.
//
// Batch-1 decode is memory-bound: every weight byte is read exactly once per
// token, so the kernels aim at streaming weights with wide coalesced loads.
// Quantized weights (Q8_0, Q4_K, Q5_K, Q6_K) are multiplied with activations
// quantized on the fly to 8-bit blocks of 32 (cu_block_q8_1) using dp4a, as
// llama.cpp does; float weights (F32/F16/BF16) use 16-byte loads and FMA.
// Layout: one warp per output row, lanes stride over 32-element sub-blocks.
#include "common.cuh"
#include "kernels.h"

#include <stdlib.h>

enum { MV_WARPS = 4, MV_ROWS = 2 };

__global__ static void quantize_q8_1_kernel(cu_block_q8_1 *dst, const float *x, size_t x_stride,
                                            int64_t n_cols) {
  pdl_trigger();
  pdl_wait();
  int64_t blk = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  int64_t row = blockIdx.y;
  int64_t nb = n_cols / 32;
  if (blk >= nb)
    return;
  warp_quantize_q8_1(x[row * x_stride + blk * 32 + lane], dst + row * nb + blk, lane);
}

void launch_quantize_q8_1(void *dst, const float *x, size_t x_stride, int64_t n_cols,
                          int64_t n_rows, hx_stream st) {
  CU_ASSERT(n_cols % 32 == 0 && n_rows > 0 && n_rows < 65536);
  dim3 grid(cdiv(n_cols / 32, 8), (unsigned)n_rows);
  cu_launch(quantize_q8_1_kernel, grid, 256, 0, st, (cu_block_q8_1 *)dst, x, x_stride, n_cols);
  CUDA_LAUNCH_CHECK();
}

// Partial dot of sub-block `sub` of a quantized row with the activation block.
template <int TYPE>
__device__ __forceinline__ float dot_sub(const uint8_t *row, int64_t sub, const cu_block_q8_1 &xb) {
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
    const uint8_t *scales = TYPE == GT_Q4_K ? b4->scales : b5->scales;
    get_scale_min_k4(j, scales, sc, m);
    const int4 *q = (const int4 *)((TYPE == GT_Q4_K ? b4->qs : b5->qs) + g * 32);
    int4 q0 = q[0], q1 = q[1];
    int w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
    int shift = (j & 1) * 4;
    int s = 0;
    if (TYPE == GT_Q4_K) {
#pragma unroll
      for (int k = 0; k < 8; k++)
        s = __dp4a((w[k] >> shift) & 0x0F0F0F0F, xq[k], s);
    } else {
      const int4 *h = (const int4 *)b5->qh;
      int4 h0 = h[0], h1 = h[1];
      int hv[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
      for (int k = 0; k < 8; k++) {
        int v = ((w[k] >> shift) & 0x0F0F0F0F) | (((hv[k] >> j) & 0x01010101) << 4);
        s = __dp4a(v, xq[k], s);
      }
    }
    float d = __half2float(TYPE == GT_Q4_K ? b4->d : b5->d);
    float dmin = __half2float(TYPE == GT_Q4_K ? b4->dmin : b5->dmin);
    return d * sc * xb.d * (float)s - dmin * m * xb.s;
  } else { // Q6_K
    const cu_block_q6_K *b = (const cu_block_q6_K *)row + sub / 8;
    int j = (int)(sub % 8), h = j / 4, r = j % 4;
    const uint8_t *ql = b->ql + h * 64 + (r & 1) * 32;
    const uint8_t *qh = b->qh + h * 32;
    int lshift = (r >> 1) * 4, hshift = 2 * r;
    int s0 = 0, s1 = 0;
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

// Q4_K: the two sub-blocks 2g and 2g+1 of a super-block share the same 32
// bytes of quants (low and high nibbles), so one lane takes both: one pair of
// 16-byte loads and one header read per 64 weights instead of per 32.
// Measured (8B, H200): variant C Q4_K 1170 -> 1333 GB/s; in the block-per-row
// multi-matvec it idled half the threads of a 4096-wide row (1605 -> 1337
// GB/s), so the multi kernel keeps one sub-block per thread (pairs = false).
__device__ __forceinline__ float dot_pair_q4k(const uint8_t *row, int64_t pair,
                                              const cu_block_q8_1 &x0, const cu_block_q8_1 &x1) {
  const cu_block_q4_K *b = (const cu_block_q4_K *)row + pair / 4;
  int g = (int)(pair % 4), sc0, m0, sc1, m1;
  get_scale_min_k4(2 * g, b->scales, sc0, m0);
  get_scale_min_k4(2 * g + 1, b->scales, sc1, m1);
  const int4 *q = (const int4 *)(b->qs + g * 32);
  int4 q0 = q[0], q1 = q[1];
  int w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
  const int *a0 = (const int *)x0.qs, *a1 = (const int *)x1.qs;
  int s0 = 0, s1 = 0;
#pragma unroll
  for (int k = 0; k < 8; k++) {
    s0 = __dp4a(w[k] & 0x0F0F0F0F, a0[k], s0);
    s1 = __dp4a((w[k] >> 4) & 0x0F0F0F0F, a1[k], s1);
  }
  float d = __half2float(b->d), dmin = __half2float(b->dmin);
  return d * ((float)sc0 * x0.d * (float)s0 + (float)sc1 * x1.d * (float)s1) -
         dmin * ((float)m0 * x0.s + (float)m1 * x1.s);
}

static bool mv_q4k_pairs(void) {
  static int v = -1;
  if (v < 0)
    v = getenv("HX_MV_Q4K_SINGLE") == NULL;
  return v != 0;
}

// Each warp computes MV_ROWS rows so that every lane has several independent
// weight loads in flight (batch-1 decode is bound by loads in flight).
template <int TYPE>
__global__ static void __launch_bounds__(MV_WARPS * 32)
    matvec_q_kernel(float *y, const uint8_t *w, int64_t n_out, int64_t n_in, size_t row_bytes,
                    const cu_block_q8_1 *xq, const float *bias) {
  pdl_trigger();
  {
    int64_t p0 = (int64_t)blockIdx.x * MV_WARPS * MV_ROWS;
    int64_t pn = n_out - p0 < MV_WARPS * MV_ROWS ? n_out - p0 : MV_WARPS * MV_ROWS;
    prefetch_l2(w + (size_t)p0 * row_bytes, (size_t)pn * row_bytes, threadIdx.x, blockDim.x);
  }
  pdl_wait();
  int64_t r0 = ((int64_t)blockIdx.x * MV_WARPS + threadIdx.x / 32) * MV_ROWS;
  int lane = threadIdx.x & 31;
  if (r0 >= n_out)
    return;
  int64_t n_sub = n_in / 32;
  float acc[MV_ROWS];
#pragma unroll
  for (int j = 0; j < MV_ROWS; j++)
    acc[j] = 0.0f;
#pragma unroll 4
  for (int64_t s = lane; s < n_sub; s += 32) {
    cu_block_q8_1 xb = xq[s];
#pragma unroll
    for (int j = 0; j < MV_ROWS; j++) {
      int64_t r = r0 + j < n_out ? r0 + j : n_out - 1;
      acc[j] += dot_sub<TYPE>(w + (size_t)r * row_bytes, s, xb);
    }
  }
#pragma unroll
  for (int j = 0; j < MV_ROWS; j++) {
    float a = warp_sum(acc[j]);
    if (lane == 0 && r0 + j < n_out)
      y[r0 + j] = a + (bias ? bias[r0 + j] : 0.0f);
  }
}

// Variant B: one block of MVB_THREADS threads per MVB_ROWS rows; threads stride
// over the row's sub-blocks, then reduce across warps in shared memory. More
// threads per row than variant A: better for short rows and for filling the
// machine with loads in flight.
enum { MVB_THREADS = 128, MVB_ROWS = 1 };
template <int TYPE>
__global__ static void __launch_bounds__(MVB_THREADS)
    matvec_qb_kernel(float *y, const uint8_t *w, int64_t n_out, int64_t n_in, size_t row_bytes,
                     const cu_block_q8_1 *xq, const float *bias) {
  pdl_trigger();
  __shared__ float red[MVB_ROWS][MVB_THREADS / 32];
  int64_t r0 = (int64_t)blockIdx.x * MVB_ROWS;
  prefetch_l2(w + (size_t)r0 * row_bytes,
              (size_t)(n_out - r0 < MVB_ROWS ? n_out - r0 : MVB_ROWS) * row_bytes, threadIdx.x,
              blockDim.x);
  pdl_wait();
  int64_t n_sub = n_in / 32;
  float acc[MVB_ROWS];
#pragma unroll
  for (int j = 0; j < MVB_ROWS; j++)
    acc[j] = 0.0f;
#pragma unroll 2
  for (int64_t s = threadIdx.x; s < n_sub; s += MVB_THREADS) {
    cu_block_q8_1 xb = xq[s];
#pragma unroll
    for (int j = 0; j < MVB_ROWS; j++) {
      int64_t r = r0 + j < n_out ? r0 + j : n_out - 1;
      acc[j] += dot_sub<TYPE>(w + (size_t)r * row_bytes, s, xb);
    }
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < MVB_ROWS; j++) {
    float a = warp_sum(acc[j]);
    if (lane == 0)
      red[j][warp] = a;
  }
  __syncthreads();
  if (threadIdx.x < MVB_ROWS) {
    int j = threadIdx.x;
    float a = 0.0f;
#pragma unroll
    for (int k = 0; k < MVB_THREADS / 32; k++)
      a += red[j][k];
    if (r0 + j < n_out)
      y[r0 + j] = a + (bias ? bias[r0 + j] : 0.0f);
  }
}

// One row of a block-per-row matvec (variant B) for a runtime type: the
// multi-matvec kernel below serves q/k/v (or gate/up) of mixed types at once.
template <int TYPE>
__device__ __forceinline__ float mv_row_b(const uint8_t *row, int64_t n_sub,
                                          const cu_block_q8_1 *xq, bool pairs) {
  float acc = 0.0f;
  if (TYPE == GT_Q4_K && pairs) {
#pragma unroll 2
    for (int64_t p = threadIdx.x; p < n_sub / 2; p += MVB_THREADS)
      acc += dot_pair_q4k(row, p, xq[2 * p], xq[2 * p + 1]);
    return acc;
  }
#pragma unroll 2
  for (int64_t s = threadIdx.x; s < n_sub; s += MVB_THREADS)
    acc += dot_sub<TYPE>(row, s, xq[s]);
  return acc;
}

struct mv_jobs {
  cu_mv_job j[3];
  unsigned first_block[4];
  int n;
};

__global__ static void __launch_bounds__(MVB_THREADS)
    matvec_multi_kernel(mv_jobs jobs, int64_t n_in, const cu_block_q8_1 *xq, bool pairs) {
  pdl_trigger();
  __shared__ float red[MVB_THREADS / 32];
  int ji = 0;
  while (ji + 1 < jobs.n && blockIdx.x >= jobs.first_block[ji + 1])
    ji++;
  const cu_mv_job &jb = jobs.j[ji];
  int64_t r = blockIdx.x - jobs.first_block[ji];
  const uint8_t *row = jb.w + (size_t)r * jb.row_bytes;
  prefetch_l2(row, jb.row_bytes, threadIdx.x, blockDim.x);
  pdl_wait();
  int64_t n_sub = n_in / 32;
  float acc;
  switch (jb.type) {
  case GT_Q8_0:
    acc = mv_row_b<GT_Q8_0>(row, n_sub, xq, pairs);
    break;
  case GT_Q4_K:
    acc = mv_row_b<GT_Q4_K>(row, n_sub, xq, pairs);
    break;
  case GT_Q5_K:
    acc = mv_row_b<GT_Q5_K>(row, n_sub, xq, pairs);
    break;
  default:
    acc = mv_row_b<GT_Q6_K>(row, n_sub, xq, pairs);
    break;
  }
  acc = warp_sum(acc);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0)
    red[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float a = 0.0f;
#pragma unroll
    for (int k = 0; k < MVB_THREADS / 32; k++)
      a += red[k];
    jb.y[r] = a + (jb.bias ? jb.bias[r] : 0.0f);
  }
}

// Multi-matvec with two rows per 128-thread block (64 threads per row): Q4_K
// rows take both nibble sub-blocks per thread (dot_pair_q4k) without idling
// threads on a 4096-wide row; other types stride 64 threads over sub-blocks.
template <int TYPE>
__device__ __forceinline__ float mv_row_half(const uint8_t *row, int64_t n_sub,
                                             const cu_block_q8_1 *xq, int tid) {
  float acc = 0.0f;
  if (TYPE == GT_Q4_K) {
#pragma unroll 2
    for (int64_t p = tid; p < n_sub / 2; p += 64)
      acc += dot_pair_q4k(row, p, xq[2 * p], xq[2 * p + 1]);
  } else {
#pragma unroll 2
    for (int64_t s = tid; s < n_sub; s += 64)
      acc += dot_sub<TYPE>(row, s, xq[s]);
  }
  return acc;
}

__global__ static void __launch_bounds__(128)
    matvec_multi2_kernel(mv_jobs jobs, int64_t n_in, const cu_block_q8_1 *xq) {
  pdl_trigger();
  __shared__ float red[4];
  int ji = 0;
  while (ji + 1 < jobs.n && blockIdx.x >= jobs.first_block[ji + 1])
    ji++;
  const cu_mv_job &jb = jobs.j[ji];
  int half = threadIdx.x >> 6, tid = threadIdx.x & 63;
  int64_t r = 2 * (int64_t)(blockIdx.x - jobs.first_block[ji]) + half;
  int64_t rr = r < jb.n_out ? r : jb.n_out - 1;
  const uint8_t *row = jb.w + (size_t)rr * jb.row_bytes;
  prefetch_l2(row, jb.row_bytes, tid, 64);
  pdl_wait();
  int64_t n_sub = n_in / 32;
  float acc;
  switch (jb.type) {
  case GT_Q8_0:
    acc = mv_row_half<GT_Q8_0>(row, n_sub, xq, tid);
    break;
  case GT_Q4_K:
    acc = mv_row_half<GT_Q4_K>(row, n_sub, xq, tid);
    break;
  case GT_Q5_K:
    acc = mv_row_half<GT_Q5_K>(row, n_sub, xq, tid);
    break;
  default:
    acc = mv_row_half<GT_Q6_K>(row, n_sub, xq, tid);
    break;
  }
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0)
    red[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (tid == 0 && r < jb.n_out)
    jb.y[r] = red[2 * half] + red[2 * half + 1] + (jb.bias ? jb.bias[r] : 0.0f);
}

void launch_matvec_multi(const cu_mv_job *jobs, int n_jobs, int64_t n_in, const void *xq,
                         hx_stream st) {
  {
    /* the streaming kernel when it takes every job; planar jobs it cannot take
       together with the others go one by one */
    bool all = true, planar = false;
    for (int i = 0; i < n_jobs; i++) {
      all = all && matvec_stream_ok(&jobs[i], n_in);
      planar = planar || (jobs[i].type & GT_PLANAR);
    }
    if (all) {
      launch_matvec_stream(jobs, n_jobs, n_in, NULL, xq, st);
      return;
    }
    if (planar) {
      for (int i = 0; i < n_jobs; i++)
        launch_matvec_job(&jobs[i], n_in, NULL, xq, st);
      return;
    }
  }
  /* two rows per block for rows up to 4096 wide: measured on the H200 (tok/s,
     two-row vs one-row) 0.6B 753.9 vs 700.2, 1.7B 566.9 vs 542.5, 4B 322.0
     vs 312.4, 8B 259.8 vs 259.3; at 5120 (14B, 32B) one row per block wins
     (156.3 vs 149.3, 76.2 vs 72.1): 160 sub-blocks spread unevenly over 64
     threads. HX_MV_MULTI=1|2 forces one. */
  static int mode = -1;
  if (mode < 0) {
    const char *e = getenv("HX_MV_MULTI");
    mode = e && e[0] == '1' ? 1 : e && e[0] == '2' ? 2 : 0;
  }
  bool two_rows = mode == 2 || (mode == 0 && n_in <= 4096);
  if (two_rows && n_in % 64 == 0) {
    CU_ASSERT(n_jobs >= 1 && n_jobs <= 3);
    mv_jobs mj = {};
    unsigned blocks = 0;
    for (int i = 0; i < n_jobs; i++) {
      CU_ASSERT(matvec_type_quantized(jobs[i].type));
      mj.j[i] = jobs[i];
      mj.first_block[i] = blocks;
      blocks += cdiv(jobs[i].n_out, 2);
    }
    mj.first_block[n_jobs] = blocks;
    mj.n = n_jobs;
    cu_launch(matvec_multi2_kernel, blocks, 128, 0, st, mj, n_in, (const cu_block_q8_1 *)xq);
    CUDA_LAUNCH_CHECK();
    return;
  }
  CU_ASSERT(n_jobs >= 1 && n_jobs <= 3 && n_in % 32 == 0);
  mv_jobs mj = {};
  unsigned blocks = 0;
  for (int i = 0; i < n_jobs; i++) {
    CU_ASSERT(matvec_type_quantized(jobs[i].type));
    mj.j[i] = jobs[i];
    mj.first_block[i] = blocks;
    blocks += (unsigned)jobs[i].n_out;
  }
  mj.first_block[n_jobs] = blocks;
  mj.n = n_jobs;
  cu_launch(matvec_multi_kernel, blocks, MVB_THREADS, 0, st, mj, n_in, (const cu_block_q8_1 *)xq,
            false);
  CUDA_LAUNCH_CHECK();
}

// Variant C: the activation's q8_1 blocks are staged in shared memory once per
// block; 8 warps each compute MVC_ROWS rows, lanes striding over sub-blocks
// with two sub-blocks' weight loads issued before use.
enum { MVC_WARPS = 8, MVC_ROWS = 2, MVC_SMEM_MAX = 48 * 1024 };
template <int TYPE>
__global__ static void __launch_bounds__(MVC_WARPS * 32)
    matvec_qc_kernel(float *y, const uint8_t *w, int64_t n_out, int64_t n_in, size_t row_bytes,
                     const cu_block_q8_1 *xq, const float *bias, bool pairs) {
  pdl_trigger();
  {
    int64_t p0 = (int64_t)blockIdx.x * MVC_WARPS * MVC_ROWS;
    int64_t pn = n_out - p0 < MVC_WARPS * MVC_ROWS ? n_out - p0 : MVC_WARPS * MVC_ROWS;
    prefetch_l2(w + (size_t)p0 * row_bytes, (size_t)pn * row_bytes, threadIdx.x, blockDim.x);
  }
  pdl_wait();
  extern __shared__ cu_block_q8_1 xs[];
  int64_t n_sub = n_in / 32;
  {
    const int *src = (const int *)xq;
    int *dst = (int *)xs;
    int64_t n_words = n_sub * (int64_t)(sizeof(cu_block_q8_1) / 4);
    for (int64_t i = threadIdx.x; i < n_words; i += blockDim.x)
      dst[i] = src[i];
  }
  __syncthreads();
  int64_t r0 = ((int64_t)blockIdx.x * MVC_WARPS + threadIdx.x / 32) * MVC_ROWS;
  int lane = threadIdx.x & 31;
  if (r0 >= n_out)
    return;
  float acc[MVC_ROWS];
#pragma unroll
  for (int j = 0; j < MVC_ROWS; j++)
    acc[j] = 0.0f;
  if (TYPE == GT_Q4_K && pairs) {
#pragma unroll 2
    for (int64_t p = lane; p < n_sub / 2; p += 32) {
#pragma unroll
      for (int j = 0; j < MVC_ROWS; j++) {
        int64_t r = r0 + j < n_out ? r0 + j : n_out - 1;
        acc[j] += dot_pair_q4k(w + (size_t)r * row_bytes, p, xs[2 * p], xs[2 * p + 1]);
      }
    }
  } else
#pragma unroll 2
    for (int64_t s = lane; s < n_sub; s += 32) {
#pragma unroll
      for (int j = 0; j < MVC_ROWS; j++) {
        int64_t r = r0 + j < n_out ? r0 + j : n_out - 1;
        acc[j] += dot_sub<TYPE>(w + (size_t)r * row_bytes, s, xs[s]);
      }
    }
#pragma unroll
  for (int j = 0; j < MVC_ROWS; j++) {
    float a = warp_sum(acc[j]);
    if (lane == 0 && r0 + j < n_out)
      y[r0 + j] = a + (bias ? bias[r0 + j] : 0.0f);
  }
}

static int mv_variant(void) {
  static int v = -1;
  if (v < 0) {
    const char *e = getenv("HX_MV_VARIANT");
    v = e && e[0] == 'a' ? 0 : e && e[0] == 'b' ? 1 : 2;
  }
  return v;
}

// Float weights: 8 elements (16 bytes of f16/bf16, 32 of f32) per load step.
template <int TYPE>
__global__ static void __launch_bounds__(MV_WARPS * 32)
    matvec_f_kernel(float *y, const uint8_t *w, int64_t n_out, int64_t n_in, size_t row_bytes,
                    const float *x, const float *bias) {
  pdl_trigger();
  {
    int64_t p0 = (int64_t)blockIdx.x * MV_WARPS;
    int64_t pn = n_out - p0 < MV_WARPS ? n_out - p0 : MV_WARPS;
    prefetch_l2(w + (size_t)p0 * row_bytes, (size_t)pn * row_bytes, threadIdx.x, blockDim.x);
  }
  pdl_wait();
  int64_t r = (int64_t)blockIdx.x * MV_WARPS + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (r >= n_out)
    return;
  const uint8_t *row = w + (size_t)r * row_bytes;
  float acc = 0.0f;
  for (int64_t c = (int64_t)lane * 8; c < n_in; c += 256) {
    const float4 *xv = (const float4 *)(x + c);
    float4 x0 = xv[0], x1 = xv[1];
    float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    float ws[8];
    if (TYPE == GT_F32) {
      const float4 *p = (const float4 *)((const float *)row + c);
      float4 a = p[0], b = p[1];
      ws[0] = a.x, ws[1] = a.y, ws[2] = a.z, ws[3] = a.w;
      ws[4] = b.x, ws[5] = b.y, ws[6] = b.z, ws[7] = b.w;
    } else {
      int4 v = *(const int4 *)((const uint16_t *)row + c);
      const uint32_t u[4] = {(uint32_t)v.x, (uint32_t)v.y, (uint32_t)v.z, (uint32_t)v.w};
#pragma unroll
      for (int k = 0; k < 4; k++) {
        if (TYPE == GT_F16) {
          float2 f = __half22float2(*(const __half2 *)&u[k]);
          ws[2 * k] = f.x, ws[2 * k + 1] = f.y;
        } else {
          ws[2 * k] = __uint_as_float(u[k] << 16);
          ws[2 * k + 1] = __uint_as_float(u[k] & 0xffff0000u);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < 8; k++)
      acc = fmaf(ws[k], xs[k], acc);
  }
  acc = warp_sum(acc);
  if (lane == 0)
    y[r] = acc + (bias ? bias[r] : 0.0f);
}

int matvec_type_quantized(int type) {
  return type == GT_Q8_0 || type == GT_Q4_K || type == GT_Q5_K || type == GT_Q6_K ||
         type == GT_Q8_0P || type == GT_Q6_KP;
}

int matvec_type_supported(int type) {
  return matvec_type_quantized(type) || type == GT_F32 || type == GT_F16 || type == GT_BF16;
}

int matvec_shape_ok(int type, int64_t n_in) {
  return matvec_type_supported(type) && n_in % (matvec_type_quantized(type) ? 32 : 8) == 0;
}

// Launches the quantized matvec variant in use (HX_MV_VARIANT: a, b, or c,
// the default; c needs the activation row in shared memory and falls back to
// b past MVC_SMEM_MAX).
template <int TYPE>
static void launch_q(float *y, const uint8_t *w, int64_t n_out, int64_t n_in, size_t row_bytes,
                     const cu_block_q8_1 *xq, const float *bias, hx_stream st) {
  size_t smem_c = (size_t)(n_in / 32) * sizeof(cu_block_q8_1);
  if (mv_variant() == 0)
    cu_launch(matvec_q_kernel<TYPE>, cdiv(n_out, MV_WARPS * MV_ROWS), MV_WARPS * 32, 0, st, y, w,
              n_out, n_in, row_bytes, xq, bias);
  else if (mv_variant() == 1 || smem_c > MVC_SMEM_MAX)
    cu_launch(matvec_qb_kernel<TYPE>, cdiv(n_out, MVB_ROWS), MVB_THREADS, 0, st, y, w, n_out, n_in,
              row_bytes, xq, bias);
  else
    cu_launch(matvec_qc_kernel<TYPE>, cdiv(n_out, MVC_WARPS * MVC_ROWS), MVC_WARPS * 32, smem_c, st,
              y, w, n_out, n_in, row_bytes, xq, bias, mv_q4k_pairs());
}

void launch_matvec(float *y, const uint8_t *w, int type, int64_t n_out, int64_t n_in,
                   size_t row_bytes, const float *x, const void *xq_, const float *bias,
                   hx_stream st) {
  const cu_block_q8_1 *xq = (const cu_block_q8_1 *)xq_;
  CU_ASSERT(n_out > 0 && n_in % 8 == 0 && !(type & GT_PLANAR));
  {
    const cu_mv_job job = {y, w, bias, type, n_out, row_bytes, 0, n_out};
    if (matvec_stream_ok(&job, n_in)) {
      launch_matvec_stream(&job, 1, n_in, x, xq_, st);
      return;
    }
  }
  CU_ASSERT(n_in % 32 == 0 || type == GT_F32 || type == GT_F16 || type == GT_BF16);
  unsigned grid = cdiv(n_out, MV_WARPS), block = MV_WARPS * 32;
  switch (type) {
  case GT_Q8_0:
    launch_q<GT_Q8_0>(y, w, n_out, n_in, row_bytes, xq, bias, st);
    break;
  case GT_Q4_K:
    launch_q<GT_Q4_K>(y, w, n_out, n_in, row_bytes, xq, bias, st);
    break;
  case GT_Q5_K:
    launch_q<GT_Q5_K>(y, w, n_out, n_in, row_bytes, xq, bias, st);
    break;
  case GT_Q6_K:
    launch_q<GT_Q6_K>(y, w, n_out, n_in, row_bytes, xq, bias, st);
    break;
  case GT_F32:
    cu_launch(matvec_f_kernel<GT_F32>, grid, block, 0, st, y, w, n_out, n_in, row_bytes, x, bias);
    break;
  case GT_F16:
    cu_launch(matvec_f_kernel<GT_F16>, grid, block, 0, st, y, w, n_out, n_in, row_bytes, x, bias);
    break;
  case GT_BF16:
    cu_launch(matvec_f_kernel<GT_BF16>, grid, block, 0, st, y, w, n_out, n_in, row_bytes, x, bias);
    break;
  default:
    CU_ASSERT(!"matvec: unsupported weight type");
  }
  CUDA_LAUNCH_CHECK();
}

void launch_matvec_job(const cu_mv_job *job, int64_t n_in, const float *x, const void *xq,
                       hx_stream st) {
  if (job->type & GT_PLANAR) {
    CU_ASSERT(matvec_stream_ok(job, n_in)); /* planar weights have no other mat-vec */
    launch_matvec_stream(job, 1, n_in, x, xq, st);
    return;
  }
  launch_matvec(job->y, job->w, job->type, job->n_out, n_in, job->row_bytes, x, xq, job->bias, st);
}
