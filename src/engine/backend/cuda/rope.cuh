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
