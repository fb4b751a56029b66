// rope.cu — NeoX-style rotary embedding (full or partial), linear and YaRN
// scaling as transformers computes them (_compute_yarn_parameters).
#include <math.h>

#include "common.cuh"
#include "kernels.h"

__device__ static float yarn_corr_dim(float n_rot_f, float n_rot, float base, float orig_ctx) {
  return n_rot * logf(orig_ctx / (n_rot_f * 2.0f * 3.14159265358979f)) / (2.0f * logf(base));
}

// Inverse frequency of pair i (0 ≤ i < n_rot/2) and the cos/sin multiplier.
__device__ static float rope_inv_freq(int i, const cu_rope &p, float *mscale) {
  float dim = (float)p.n_rot;
  /* as transformers: inv_freq in f32, theta = pos * inv_freq in f32 */
  float inv = (float)(1.0 / pow((double)p.freq_base, (double)(2 * i) / (double)p.n_rot));
  *mscale = 1.0f;
  if (p.yarn_factor > 1.0f) {
    float lo = floorf(yarn_corr_dim(p.yarn_beta_fast, dim, p.freq_base, (float)p.yarn_orig_ctx));
    float hi = ceilf(yarn_corr_dim(p.yarn_beta_slow, dim, p.freq_base, (float)p.yarn_orig_ctx));
    lo = fmaxf(lo, 0.0f);
    hi = fminf(hi, dim - 1.0f);
    if (lo == hi)
      hi += 0.001f;
    float ramp = fminf(fmaxf(((float)i - lo) / (hi - lo), 0.0f), 1.0f);
    float extrap = 1.0f - ramp;
    float interp = inv / p.yarn_factor;
    inv = interp * (1.0f - extrap) + inv * extrap;
    *mscale = p.yarn_attn_factor > 0.0f ? p.yarn_attn_factor : 0.1f * logf(p.yarn_factor) + 1.0f;
  }
  return inv * p.freq_scale;
}

__global__ static void rope_kernel(float *x, size_t x_stride, int64_t n_heads, int head_dim,
                                   const int32_t *pos, cu_rope p) {
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
  rope_kernel<<<grid, 128, 0, st>>>(x, x_stride, n_heads, head_dim, pos, p);
  CUDA_LAUNCH_CHECK();
}
