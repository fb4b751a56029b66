// topk.cu — per-row top-k (k ≤ 64) on the device, so that greedy decoding
// and logprob alternatives move only k values to the host. Order: value
// descending, ties by lower index (argmax = lowest index of the maximum).
// k passes over the row, each selecting the next element in that order:
// k is small (1 for greedy, ≤ 20 for logprobs) and rows live in L2.
#include "common.cuh"
#include "kernels.h"

#include <limits.h>

// (v, i) comes before (bv, bi) in the output order.
__device__ __forceinline__ bool before(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

// The warp's first (value, index) in that order, on every lane.
__device__ __forceinline__ void warp_best(float &bv, int &bi) {
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (before(ov, oi, bv, bi))
      bv = ov, bi = oi;
  }
}

__global__ static void top_k_kernel(float *vals, size_t vs, int32_t *ids, size_t is, const float *x,
                                    size_t xs, int64_t n_cols, int k) {
  pdl_trigger();
  pdl_wait();
  __shared__ float sv[32];
  __shared__ int si[32];
  const float *p = x + blockIdx.x * xs;
  float prev_v = INFINITY;
  int prev_i = -1;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int r = 0; r < k; r++) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int64_t c = threadIdx.x; c < n_cols; c += blockDim.x) {
      float v = p[c];
      if (v != v)
        v = -INFINITY; // NaN sorts last
      if (before(prev_v, prev_i, v, (int)c) && before(v, (int)c, bv, bi)) {
        bv = v;
        bi = (int)c;
      }
    }
    warp_best(bv, bi);
    __syncthreads();
    if (lane == 0)
      sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    bv = lane < nw ? sv[lane] : -INFINITY;
    bi = lane < nw ? si[lane] : INT_MAX;
    warp_best(bv, bi);
    if (threadIdx.x == 0) {
      vals[blockIdx.x * vs + r] = bv;
      ids[blockIdx.x * is + r] = bi == INT_MAX ? -1 : bi;
    }
    prev_v = bv;
    prev_i = bi;
  }
}

// Arg-max of one row (greedy decoding's top_k with k = 1) over many blocks:
// each block reduces a grid-stride share with 16-byte loads where aligned,
// writes its (value, index) to the scratch, and the last block to finish
// (a ticket counter, reset by that block, so a replayed graph finds it at 0)
// reduces the partials. Same order as top_k_kernel: NaN last, ties to the
// lower index.
enum { AM_THREADS = 256, AM_BLOCKS_MAX = HX_CU_ARGMAX_BLOCKS };

__device__ __forceinline__ void am_take(float v, int i, float &bv, int &bi) {
  if (v != v)
    v = -INFINITY;
  if (before(v, i, bv, bi))
    bv = v, bi = i;
}

__device__ __forceinline__ void am_block(float &bv, int &bi) {
  __shared__ float sv[AM_THREADS / 32];
  __shared__ int si[AM_THREADS / 32];
  warp_best(bv, bi);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0)
    sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  bv = lane < AM_THREADS / 32 ? sv[lane] : -INFINITY;
  bi = lane < AM_THREADS / 32 ? si[lane] : INT_MAX;
  warp_best(bv, bi);
  __syncthreads();
}

__global__ static void __launch_bounds__(AM_THREADS)
    argmax_kernel(float *vals, int32_t *ids, const float *x, int64_t n, float *part_v, int *part_i,
                  unsigned *ticket) {
  pdl_trigger();
  pdl_wait();
  float bv = -INFINITY;
  int bi = INT_MAX;
  const int64_t stride = (int64_t)gridDim.x * AM_THREADS;
  const int64_t t = (int64_t)blockIdx.x * AM_THREADS + threadIdx.x;
  if (((uintptr_t)x & 15) == 0) {
    const int64_t n4 = n / 4;
    for (int64_t c = t; c < n4; c += stride) {
      const float4 v = ((const float4 *)x)[c];
      am_take(v.x, (int)(4 * c), bv, bi);
      am_take(v.y, (int)(4 * c + 1), bv, bi);
      am_take(v.z, (int)(4 * c + 2), bv, bi);
      am_take(v.w, (int)(4 * c + 3), bv, bi);
    }
    for (int64_t c = 4 * n4 + t; c < n; c += stride)
      am_take(x[c], (int)c, bv, bi);
  } else {
    for (int64_t c = t; c < n; c += stride)
      am_take(x[c], (int)c, bv, bi);
  }
  am_block(bv, bi);
  __shared__ bool last;
  if (threadIdx.x == 0) {
    part_v[blockIdx.x] = bv;
    part_i[blockIdx.x] = bi;
    __threadfence();
    last = atomicAdd(ticket, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last)
    return;
  __threadfence();
  bv = -INFINITY;
  bi = INT_MAX;
  for (unsigned b = threadIdx.x; b < gridDim.x; b += AM_THREADS) {
    const float v = ((volatile float *)part_v)[b];
    const int i = ((volatile int *)part_i)[b];
    if (before(v, i, bv, bi))
      bv = v, bi = i;
  }
  am_block(bv, bi);
  if (threadIdx.x == 0) {
    vals[0] = bv;
    ids[0] = bi == INT_MAX ? -1 : bi;
    *ticket = 0;
  }
}

void launch_top_k(float *vals, size_t v_stride, int32_t *ids, size_t i_stride, const float *x,
                  size_t x_stride, int64_t n_cols, int64_t n_rows, int k, void *argmax_scratch,
                  hx_stream st) {
  CU_ASSERT(k >= 1 && k <= 64 && k <= n_cols && n_rows > 0 && n_cols < INT_MAX);
  if (k == 1 && n_rows == 1 && argmax_scratch && n_cols >= 4096) {
    /* scratch: AM_BLOCKS_MAX floats, AM_BLOCKS_MAX ints, one ticket (zeroed at allocation) */
    float *pv = (float *)argmax_scratch;
    int *pi = (int *)(pv + AM_BLOCKS_MAX);
    unsigned *ticket = (unsigned *)(pi + AM_BLOCKS_MAX);
    unsigned blocks = cdiv(n_cols, AM_THREADS * 16);
    if (blocks > (unsigned)AM_BLOCKS_MAX)
      blocks = (unsigned)AM_BLOCKS_MAX;
    cu_launch(argmax_kernel, blocks, AM_THREADS, 0, st, vals, ids, x, n_cols, pv, pi, ticket);
    CUDA_LAUNCH_CHECK();
    return;
  }
  cu_launch(top_k_kernel, (unsigned)n_rows, 1024, 0, st, vals, v_stride, ids, i_stride, x, x_stride,
            n_cols, k);
  CUDA_LAUNCH_CHECK();
}
