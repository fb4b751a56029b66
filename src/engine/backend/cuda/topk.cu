// topk.cu — per-row top-k (k ≤ 64) on the device, so that greedy decoding
// and logprob alternatives move only k values to the host. Order: value
// descending, ties by lower index (argmax = lowest index of the maximum).
// k passes over the row, each selecting the next element in that order:
// k is small (1 for greedy, ≤ 20 for logprobs) and rows live in L2.
#include "common.cuh"
#include "kernels.h"

// (v, i) comes before (bv, bi) in the output order.
__device__ __forceinline__ bool before(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
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
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (before(ov, oi, bv, bi))
        bv = ov, bi = oi;
    }
    __syncthreads();
    if (lane == 0)
      sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    bv = lane < nw ? sv[lane] : -INFINITY;
    bi = lane < nw ? si[lane] : INT_MAX;
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (before(ov, oi, bv, bi))
        bv = ov, bi = oi;
    }
    if (threadIdx.x == 0) {
      vals[blockIdx.x * vs + r] = bv;
      ids[blockIdx.x * is + r] = bi == INT_MAX ? -1 : bi;
    }
    prev_v = bv;
    prev_i = bi;
  }
}

void launch_top_k(float *vals, size_t v_stride, int32_t *ids, size_t i_stride, const float *x,
                  size_t x_stride, int64_t n_cols, int64_t n_rows, int k, hx_stream st) {
  CU_ASSERT(k >= 1 && k <= 64 && k <= n_cols && n_rows > 0 && n_cols < INT_MAX);
  cu_launch(top_k_kernel, (unsigned)n_rows, 1024, 0, st, vals, v_stride, ids, i_stride, x, x_stride,
            n_cols, k);
  CUDA_LAUNCH_CHECK();
}
