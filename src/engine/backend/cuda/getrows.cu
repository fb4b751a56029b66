// getrows.cu — embedding lookup and dequantization of weight rows to f16
// (the operand format of the cuBLAS prefill path). Both take the matrix base,
// a first row row0 and the matrix's row count r_total, so that they read the
// planar layouts (common.cuh) as well as the native ones.
#include "dequant.cuh"
#include "common.cuh"
#include "kernels.h"

// One thread per 32-element sub-block.
__global__ static void get_rows_kernel(float *out, size_t out_stride, const uint8_t *table,
                                       int type, int64_t n_cols, size_t row_bytes, int64_t row0,
                                       int64_t r_total, const int32_t *ids) {
  pdl_trigger();
  pdl_wait();
  int64_t t = blockIdx.y;
  int64_t sub = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (sub * 32 >= n_cols)
    return;
  float v[32];
  dequant32_at(table, type, row0 + ids[t], r_total, row_bytes, n_cols, sub, v);
  float *o = out + t * out_stride + sub * 32;
#pragma unroll
  for (int i = 0; i < 32; i++)
    o[i] = v[i];
}

void launch_get_rows(float *out, size_t out_stride, const uint8_t *table, int type, int64_t n_cols,
                     size_t row_bytes, int64_t row0, int64_t r_total, const int32_t *ids, int64_t n,
                     hx_stream st) {
  CU_ASSERT(n_cols % 32 == 0 && n > 0 && n < 65536);
  CU_ASSERT(row0 >= 0 && r_total > row0);
  CU_ASSERT(!(type & GT_PLANAR) || (type == GT_Q8_0P && n_cols % QK8_0 == 0) ||
            (type == GT_Q6_KP && n_cols % QK_K == 0));
  dim3 grid(cdiv(n_cols / 32, 64), (unsigned)n);
  cu_launch(get_rows_kernel, grid, 64, 0, st, out, out_stride, table, type, n_cols, row_bytes, row0,
            r_total, ids);
  CUDA_LAUNCH_CHECK();
}

// One thread per 32-element sub-block: dequant32 decodes the block header
// once for all 32 elements and the 64 output bytes go out as four 16-byte
// stores (the per-element version spent ~190 us per 8B-model matrix).
__global__ static void dequant_f16_kernel(__half *dst, const uint8_t *w, int type, int64_t n_cols,
                                          size_t row_bytes, int64_t row0, int64_t n_rows,
                                          int64_t r_total) {
  pdl_trigger();
  pdl_wait();
  int64_t subs_per_row = n_cols / 32;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_rows * subs_per_row)
    return;
  int64_t r = i / subs_per_row, sub = i % subs_per_row;
  float v[32];
  dequant32_at(w, type, row0 + r, r_total, row_bytes, n_cols, sub, v);
  uint4 *o = (uint4 *)(dst + r * n_cols + sub * 32);
#pragma unroll
  for (int q = 0; q < 4; q++) {
    uint4 u;
    __half2 *h = (__half2 *)&u;
#pragma unroll
    for (int k = 0; k < 4; k++)
      h[k] = __floats2half2_rn(v[q * 8 + 2 * k], v[q * 8 + 2 * k + 1]);
    o[q] = u;
  }
}

void launch_dequant_f16(void *dst, const uint8_t *w, int type, int64_t n_cols, size_t row_bytes,
                        int64_t row0, int64_t n_rows, int64_t r_total, hx_stream st) {
  CU_ASSERT(n_cols % 32 == 0 && n_rows > 0);
  CU_ASSERT(row0 >= 0 && row0 + n_rows <= r_total);
  CU_ASSERT(!(type & GT_PLANAR) || (type == GT_Q8_0P && n_cols % QK8_0 == 0) ||
            (type == GT_Q6_KP && n_cols % QK_K == 0));
  CU_ASSERT(((uintptr_t)dst % 16) == 0);
  int64_t n_subs = n_rows * (n_cols / 32);
  CU_ASSERT((n_subs + 127) / 128 < ((int64_t)1 << 31));
  cu_launch(dequant_f16_kernel, (unsigned)cdiv(n_subs, 128), 128, 0, st, (__half *)dst, w, type,
            n_cols, row_bytes, row0, n_rows, r_total);
  CUDA_LAUNCH_CHECK();
}
