// norm.cu — RMS norm with the residual add fused in, and per-head q/k norm.
#include "common.cuh"
#include "kernels.h"

// One block per row. With residual: residual += x, then normalize the sum.
__global__ static void rms_norm_kernel(float *out, size_t out_stride, float *x, size_t x_stride,
                                       float *res, size_t res_stride, const float *w,
                                       int64_t n_cols, float eps, int zc) {
  pdl_trigger();
  pdl_wait();
  __shared__ float red[32];
  int64_t r = blockIdx.x;
  float *xr = x + r * x_stride;
  float *rr = res ? res + r * res_stride : nullptr;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x) {
    float v = xr[i];
    if (rr) {
      v += rr[i];
      rr[i] = v;
    }
    ss += v * v;
  }
  ss = block_sum(ss, red);
  float inv = rsqrtf(ss / (float)n_cols + eps);
  float *o = out + r * out_stride;
  const float *src = rr ? rr : xr;
  for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x)
    o[i] = src[i] * inv * (zc ? 1.0f + w[i] : w[i]);
}

void launch_rms_norm(float *out, size_t out_stride, float *x, size_t x_stride, float *residual,
                     size_t res_stride, const float *w, int64_t n_cols, int64_t n_rows, float eps,
                     int zero_centred, hx_stream st) {
  CU_ASSERT(n_rows > 0 && n_cols > 0);
  /* one block per row; wide blocks keep a lone decode row from being
   * latency-bound on one SM */
  unsigned threads = n_rows == 1 ? 1024 : 256;
  cu_launch(rms_norm_kernel, (unsigned)n_rows, threads, 0, st, out, out_stride, x, x_stride,
            residual, res_stride, w, n_cols, eps, zero_centred);
  CUDA_LAUNCH_CHECK();
}

// One warp per (row, head).
__global__ static void rms_norm_heads_kernel(float *x, size_t x_stride, const float *w,
                                             int64_t n_heads, int head_dim, float eps) {
  pdl_trigger();
  pdl_wait();
  int64_t r = blockIdx.y;
  int64_t h = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (h >= n_heads)
    return;
  float *p = x + r * x_stride + h * head_dim;
  float ss = 0.0f;
  for (int i = lane; i < head_dim; i += 32)
    ss += p[i] * p[i];
  ss = warp_sum(ss);
  float inv = rsqrtf(ss / (float)head_dim + eps);
  for (int i = lane; i < head_dim; i += 32)
    p[i] = p[i] * inv * w[i];
}

void launch_rms_norm_heads(float *x, size_t x_stride, const float *w, int64_t n_cols,
                           int64_t n_rows, int head_dim, float eps, hx_stream st) {
  CU_ASSERT(head_dim > 0 && n_cols % head_dim == 0 && n_rows > 0 && n_rows < 65536);
  int64_t n_heads = n_cols / head_dim;
  dim3 grid(cdiv(n_heads, 4), (unsigned)n_rows);
  cu_launch(rms_norm_heads_kernel, grid, 128, 0, st, x, x_stride, w, n_heads, head_dim, eps);
  CUDA_LAUNCH_CHECK();
}
