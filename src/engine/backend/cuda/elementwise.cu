// elementwise.cu — SwiGLU, add/mul with row broadcast, softmax, bias, and
// f32 → f16/bf16 conversion for the cuBLAS operands.
#include "common.cuh"
#include "kernels.h"

__global__ static void swiglu_kernel(float *out, size_t os, const float *g, size_t gs,
                                     const float *u, size_t us, int64_t n_cols) {
  pdl_trigger();
  pdl_wait();
  int64_t r = blockIdx.y;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_cols)
    return;
  float gv = g[r * gs + i];
  out[r * os + i] = gv / (1.0f + __expf(-gv)) * u[r * us + i];
}

void launch_swiglu(float *out, size_t out_stride, const float *gate, size_t g_stride,
                   const float *up, size_t u_stride, int64_t n_cols, int64_t n_rows, hx_stream st) {
  CU_ASSERT(n_rows > 0 && n_rows < 65536);
  dim3 grid(cdiv(n_cols, 256), (unsigned)n_rows);
  cu_launch(swiglu_kernel, grid, 256, 0, st, out, out_stride, gate, g_stride, up, u_stride, n_cols);
  CUDA_LAUNCH_CHECK();
}

__global__ static void binary_kernel(int op, float *out, size_t os, const float *a, size_t as,
                                     const float *b, size_t bs, int64_t n_cols) {
  pdl_trigger();
  pdl_wait();
  int64_t r = blockIdx.y;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_cols)
    return;
  float x = a[r * as + i], y = b[r * bs + i];
  out[r * os + i] = op == 0 ? x + y : x * y;
}

void launch_binary(int op, float *out, size_t out_stride, const float *a, size_t a_stride,
                   const float *b, size_t b_stride, int64_t n_cols, int64_t n_rows, hx_stream st) {
  CU_ASSERT(n_rows > 0 && n_rows < 65536);
  dim3 grid(cdiv(n_cols, 256), (unsigned)n_rows);
  cu_launch(binary_kernel, grid, 256, 0, st, op, out, out_stride, a, a_stride, b, b_stride, n_cols);
  CUDA_LAUNCH_CHECK();
}

__global__ static void softmax_kernel(float *x, size_t stride, int64_t n_cols) {
  pdl_trigger();
  pdl_wait();
  __shared__ float red[32];
  float *p = x + blockIdx.x * stride;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x)
    m = fmaxf(m, p[i]);
  // block max via warp max + shared
  m = warp_max(m);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0)
    red[warp] = m;
  __syncthreads();
  m = lane < (int)(blockDim.x >> 5) ? red[lane] : -INFINITY;
  m = warp_max(m);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x)
    s += __expf(p[i] - m);
  s = block_sum(s, red);
  float inv = 1.0f / s;
  for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x)
    p[i] = __expf(p[i] - m) * inv;
}

void launch_softmax(float *x, size_t stride, int64_t n_cols, int64_t n_rows, hx_stream st) {
  CU_ASSERT(n_rows > 0);
  cu_launch(softmax_kernel, (unsigned)n_rows, 256, 0, st, x, stride, n_cols);
  CUDA_LAUNCH_CHECK();
}

void launch_add_bias(float *y, size_t y_stride, const float *bias, int64_t n_cols, int64_t n_rows,
                     hx_stream st) {
  launch_binary(0, y, y_stride, y, y_stride, bias, 0, n_cols, n_rows, st);
}

__global__ static void to_f16_kernel(__half *dst, const float *x, size_t xs, int64_t n_cols) {
  pdl_trigger();
  pdl_wait();
  int64_t r = blockIdx.y;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n_cols)
    dst[r * n_cols + i] = __float2half_rn(x[r * xs + i]);
}

__global__ static void to_bf16_kernel(__nv_bfloat16 *dst, const float *x, size_t xs,
                                      int64_t n_cols) {
  pdl_trigger();
  pdl_wait();
  int64_t r = blockIdx.y;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n_cols)
    dst[r * n_cols + i] = __float2bfloat16_rn(x[r * xs + i]);
}

void launch_f32_to_f16(void *dst, const float *x, size_t x_stride, int64_t n_cols, int64_t n_rows,
                       hx_stream st) {
  CU_ASSERT(n_rows > 0 && n_rows < 65536);
  dim3 grid(cdiv(n_cols, 256), (unsigned)n_rows);
  cu_launch(to_f16_kernel, grid, 256, 0, st, (__half *)dst, x, x_stride, n_cols);
  CUDA_LAUNCH_CHECK();
}

void launch_f32_to_bf16(void *dst, const float *x, size_t x_stride, int64_t n_cols, int64_t n_rows,
                        hx_stream st) {
  CU_ASSERT(n_rows > 0 && n_rows < 65536);
  dim3 grid(cdiv(n_cols, 256), (unsigned)n_rows);
  cu_launch(to_bf16_kernel, grid, 256, 0, st, (__nv_bfloat16 *)dst, x, x_stride, n_cols);
  CUDA_LAUNCH_CHECK();
}
