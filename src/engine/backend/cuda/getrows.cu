// getrows.cu — embedding lookup and dequantization of weight rows to f16
// (the operand format of the cuBLAS prefill path).
#include "dequant.cuh"
#include "common.cuh"
#include "kernels.h"

// One thread per 32-element sub-block.
__global__ static void get_rows_kernel(float *out, size_t out_stride, const uint8_t *table,
                                       int type, int64_t n_cols, size_t row_bytes,
                                       const int32_t *ids) {
  int64_t t = blockIdx.y;
  int64_t sub = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (sub * 32 >= n_cols)
    return;
  const uint8_t *row = table + (size_t)ids[t] * row_bytes;
  float v[32];
  dequant32(row, type, sub, v);
  float *o = out + t * out_stride + sub * 32;
#pragma unroll
  for (int i = 0; i < 32; i++)
    o[i] = v[i];
}

void launch_get_rows(float *out, size_t out_stride, const uint8_t *table, int type, int64_t n_cols,
                     size_t row_bytes, const int32_t *ids, int64_t n, hx_stream st) {
  CU_ASSERT(n_cols % 32 == 0 && n > 0 && n < 65536);
  dim3 grid(cdiv(n_cols / 32, 64), (unsigned)n);
  get_rows_kernel<<<grid, 64, 0, st>>>(out, out_stride, table, type, n_cols, row_bytes, ids);
  CUDA_LAUNCH_CHECK();
}

__global__ static void dequant_f16_kernel(__half *dst, const uint8_t *w, int type, int64_t n_cols,
                                          size_t row_bytes, int64_t row0, int64_t n_rows) {
  int64_t r = blockIdx.y;
  const uint8_t *row = w + (size_t)(row0 + r) * row_bytes;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n_cols;
       e += (int64_t)gridDim.x * blockDim.x)
    dst[r * n_cols + e] = __float2half_rn(dequant1(row, type, e));
}

void launch_dequant_f16(void *dst, const uint8_t *w, int type, int64_t n_cols, size_t row_bytes,
                        int64_t row0, int64_t n_rows, hx_stream st) {
  CU_ASSERT(n_cols % 32 == 0 && n_rows > 0);
  CU_ASSERT(n_rows < 65536);
  dim3 grid(cdiv(n_cols, 256) < 16 ? cdiv(n_cols, 256) : 16, (unsigned)n_rows);
  dequant_f16_kernel<<<grid, 256, 0, st>>>((__half *)dst, w, type, n_cols, row_bytes, row0, n_rows);
  CUDA_LAUNCH_CHECK();
}
