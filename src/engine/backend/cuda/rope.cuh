// rope.cuh — the rotary frequencies shared by rope.cu and the fused decode
// kernel (fused.cu), computed exactly as the CPU backend does (which follows
// transformers' _compute_default/_compute_yarn_parameters): inv_freq in f32,
// YaRN's correction range in double with beta_fast/beta_slow defaulting to
// 32/1 when unset, linear freq_scale only without YaRN.
#pragma once

#include <math.h>

#include "common.cuh"
#include "kernels.h"

// Inverse frequency of pair i (0 ≤ i < n_rot/2); *mscale gets the cos/sin
// multiplier (YaRN's attention factor, else 1).
__device__ __forceinline__ float rope_inv_freq(int i, const cu_rope &p, float *mscale) {
  const double dim = (double)p.n_rot;
  const float pos_freq = (float)pow((double)p.freq_base, (double)(2 * i) / dim);
  float inv = 1.0f / pos_freq;
  *mscale = 1.0f;
  if (p.yarn_factor > 1.0f) {
    const double base = p.freq_base, orig = p.yarn_orig_ctx;
    const double bf = p.yarn_beta_fast > 0 ? p.yarn_beta_fast : 32.0;
    const double bs = p.yarn_beta_slow > 0 ? p.yarn_beta_slow : 1.0;
    double lo = floor(dim * log(orig / (bf * 2 * M_PI)) / (2 * log(base)));
    double hi = ceil(dim * log(orig / (bs * 2 * M_PI)) / (2 * log(base)));
    lo = lo < 0 ? 0 : lo;
    hi = hi > dim - 1 ? dim - 1 : hi;
    if (lo == hi)
      hi += 0.001;
    float ramp = (float)(((double)i - lo) / (hi - lo));
    ramp = ramp < 0 ? 0 : (ramp > 1 ? 1 : ramp);
    const float interp = 1.0f / (p.yarn_factor * pos_freq);
    const float extrap = 1.0f - ramp;
    inv = interp * (1.0f - extrap) + inv * extrap;
    *mscale = p.yarn_attn_factor > 0 ? p.yarn_attn_factor
                                     : (float)(0.1 * log((double)p.yarn_factor) + 1.0);
  } else if (p.freq_scale > 0 && p.freq_scale != 1.0f) {
    inv *= p.freq_scale;
  }
  return inv;
}

__device__ __forceinline__ float kv_round(float v, int type) {
  return type == GT_F16 ? __half2float(__float2half_rn(v)) : v;
}

// One decode token's q/k per-head RMS norm (weights qw / kw when given), NeoX
// RoPE of q and k at pos[0] and the K/V cache store, one warp per head h:
// [0, n_q) query heads, [n_q, n_q + n_kv) key heads (norm, rope, store),
// [n_q + n_kv, n_q + 2 n_kv) value heads (store). Used by fused.cu's kernel
// and by the mat-vec fold (mmv_stream.cu) after another block wrote the head,
// so the head is read through L2 (ld.cg).

__device__ __forceinline__ void qk_rope_store_head(const cu_qk_rope &a, int h, int lane) {
  const int D = a.D, n_q = a.n_q, n_kv = a.n_kv, ctype = a.ctype;
  const cu_rope &p = a.p;
  const float eps = a.eps;
  int kind = h < n_q ? 0 : h < n_q + n_kv ? 1 : 2;
  int hh = kind == 0 ? h : kind == 1 ? h - n_q : h - n_q - n_kv;
  float *x = kind == 0 ? a.q + (size_t)hh * D : kind == 1 ? a.k + (size_t)hh * D : nullptr;
  const float *src = kind == 2 ? a.v + (size_t)hh * D : x;
  int32_t ps = a.pos[0];
  if (kind < 2) {
    const float *w = kind == 0 ? a.qw : a.kw;
    if (w) {
      float ss = 0.0f;
      for (int i = lane; i < D; i += 32) {
        const float xi = __ldcg(x + i);
        ss += xi * xi;
      }
      ss = warp_sum(ss);
      float inv = rsqrtf(ss / (float)D + eps);
      for (int i = lane; i < D; i += 32)
        x[i] = __ldcg(x + i) * inv * w[i];
      __syncwarp();
    }
    int half = p.n_rot / 2;
    for (int i = lane; i < half; i += 32) {
      float ms;
      float inv = rope_inv_freq(i, p, &ms);
      float theta = (float)ps * inv;
      double sd, cd;
      sincos((double)theta, &sd, &cd);
      float s = (float)sd * ms, c = (float)cd * ms;
      float xa = __ldcg(x + i), xb = __ldcg(x + i + half);
      x[i] = xa * c - xb * s;
      x[i + half] = xa * s + xb * c;
    }
    __syncwarp();
    if (kind == 0)
      return;
  }
  uint8_t *row = (kind == 1 ? a.kc : a.vc) + (size_t)ps * a.crb;
  if (ctype == GT_Q8_0) {
    for (int b = 0; b < D / 32; b++) {
      float val = __ldcg(src + b * 32 + lane);
      float amax = warp_max(fabsf(val));
      float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      cu_block_q8_0 *blk = (cu_block_q8_0 *)row + ((size_t)hh * D) / 32 + b;
      blk->qs[lane] = (int8_t)roundf(val * id);
      if (lane == 0)
        blk->d = __float2half_rn(d);
    }
  } else {
    for (int i = lane; i < D; i += 32) {
      const float si = __ldcg(src + i);
      if (ctype == GT_F16)
        ((__half *)row)[(size_t)hh * D + i] = __float2half_rn(si);
      else
        ((float *)row)[(size_t)hh * D + i] = kv_round(si, ctype);
    }
  }
}
