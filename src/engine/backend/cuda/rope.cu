// rope.cu — NeoX-style rotary embedding (full or partial), linear and YaRN
// scaling as transformers computes them (_compute_yarn_parameters).
#include <math.h>

#include "common.cuh"
#include "kernels.h"
#include "rope.cuh"

__global__ static void rope_kernel(float *x, size_t x_stride, int64_t n_heads, int head_dim,
                                   const int32_t *pos, cu_rope p) {
  pdl_trigger();
  pdl_wait();
  int64_t r = blockIdx.y;
  int half = p.n_rot / 2;
  int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n_heads * half)
    return;
  int64_t h = idx / half;
  int i = (int)(idx % half);
  float ms;
  float theta = (float)pos[r] * rope_inv_freq(i, p, &ms);
  float s, c;
  double sd, cd; /* precise: fast-math sincosf is poor for large angles */
  sincos((double)theta, &sd, &cd);
  s = (float)sd;
  c = (float)cd;
  c *= ms;
  s *= ms;
  float *q = x + r * x_stride + h * head_dim;
  float a = q[i], b = q[i + half];
  q[i] = a * c - b * s;
  q[i + half] = a * s + b * c;
}

void launch_rope(float *x, size_t x_stride, int64_t n_cols, int64_t n_rows, const int32_t *pos,
                 int head_dim, const cu_rope *pp, hx_stream st) {
  const cu_rope &p = *pp;
  CU_ASSERT(p.n_rot > 0 && p.n_rot % 2 == 0 && p.n_rot <= head_dim && n_cols % head_dim == 0);
  CU_ASSERT(n_rows > 0 && n_rows < 65536);
  int64_t n_heads = n_cols / head_dim;
  dim3 grid(cdiv(n_heads * (p.n_rot / 2), 128), (unsigned)n_rows);
  cu_launch(rope_kernel, grid, 128, 0, st, x, x_stride, n_heads, head_dim, pos, p);
  CUDA_LAUNCH_CHECK();
}
