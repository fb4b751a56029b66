// fused.cu — kernels that do the work of several backend ops in one launch
// for one-token (decode) steps, where launch count, not bytes, dominates the
// small ops. cuda_backend.c chooses them when the recorded ops match; the
// results equal the unfused ops' (same arithmetic, same order per element).
#include "common.cuh"
#include "kernels.h"
#include "rope.cuh"

#include <stdlib.h>

// rms_norm (optionally residual += x first) of one row, writing the f32
// result and its q8_1 quantization. One block of 1024 threads; thread i holds
// elements i + 1024 k in registers (K of them), so warp w's k-th element group
// is exactly q8_1 block w + 32 k: no second pass over memory, and the K
// blocks' max/sum reductions are interleaved rather than run one after another.
template <int K>
__global__ static void __launch_bounds__(1024)
    rms_norm_q8_kernel(float *out, float *x, float *res, const float *w, int64_t n, float eps,
                       int zc, cu_block_q8_1 *q8) {
  pdl_trigger();
  /* the norm weights are constant: read before waiting for x */
  float wv[K];
#pragma unroll
  for (int k = 0; k < K; k++) {
    int64_t i = threadIdx.x + 1024 * k;
    wv[k] = i < n ? (zc ? 1.0f + w[i] : w[i]) : 0.0f;
  }
  pdl_wait();
  __shared__ float red[32];
  float v[K];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < K; k++) {
    int64_t i = threadIdx.x + 1024 * k;
    v[k] = 0.0f;
    if (i < n) {
      v[k] = x[i];
      if (res) {
        v[k] += res[i];
        res[i] = v[k];
      }
    }
    ss += v[k] * v[k];
  }
  ss = block_sum(ss, red);
  float inv = rsqrtf(ss / (float)n + eps);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float amax[K];
#pragma unroll
  for (int k = 0; k < K; k++) {
    int64_t i = threadIdx.x + 1024 * k;
    if (i < n) {
      v[k] = v[k] * inv * wv[k];
      out[i] = v[k];
    }
    amax[k] = fabsf(v[k]);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int k = 0; k < K; k++)
      amax[k] = fmaxf(amax[k], __shfl_xor_sync(0xffffffffu, amax[k], o));
  float qs[K];
#pragma unroll
  for (int k = 0; k < K; k++) {
    float d = amax[k] / 127.0f;
    int qi = amax[k] == 0.0f ? 0 : __float2int_rn(v[k] / d);
    qs[k] = (float)qi;
    int64_t blk = warp + 32 * k;
    if (blk * 32 < n)
      q8[blk].qs[lane] = (int8_t)qi;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int k = 0; k < K; k++)
      qs[k] += __shfl_xor_sync(0xffffffffu, qs[k], o);
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < K; k++) {
      int64_t blk = warp + 32 * k;
      if (blk * 32 < n) {
        float d = amax[k] / 127.0f;
        q8[blk].d = d;
        q8[blk].s = d * qs[k];
      }
    }
}

void launch_rms_norm_q8(float *out, float *x, float *residual, const float *w, int64_t n_cols,
                        float eps, int zero_centred, void *q8, hx_stream st) {
  CU_ASSERT(n_cols % 32 == 0 && n_cols > 0 && n_cols <= 16384);
  cu_block_q8_1 *qb = (cu_block_q8_1 *)q8;
  int64_t k = (n_cols + 1023) / 1024;
  if (k <= 1)
    cu_launch(rms_norm_q8_kernel<1>, 1, 1024, 0, st, out, x, residual, w, n_cols, eps, zero_centred,
              qb);
  else if (k <= 2)
    cu_launch(rms_norm_q8_kernel<2>, 1, 1024, 0, st, out, x, residual, w, n_cols, eps, zero_centred,
              qb);
  else if (k <= 4)
    cu_launch(rms_norm_q8_kernel<4>, 1, 1024, 0, st, out, x, residual, w, n_cols, eps, zero_centred,
              qb);
  else if (k <= 8)
    cu_launch(rms_norm_q8_kernel<8>, 1, 1024, 0, st, out, x, residual, w, n_cols, eps, zero_centred,
              qb);
  else
    cu_launch(rms_norm_q8_kernel<16>, 1, 1024, 0, st, out, x, residual, w, n_cols, eps,
              zero_centred, qb);
  CUDA_LAUNCH_CHECK();
}

__global__ static void swiglu_q8_kernel(float *out, const float *g, const float *u, int64_t n,
                                        cu_block_q8_1 *q8) {
  pdl_trigger();
  pdl_wait();
  int64_t blk = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (blk * 32 >= n)
    return;
  int64_t i = blk * 32 + lane;
  float gv = g[i];
  float v = gv / (1.0f + __expf(-gv)) * u[i];
  out[i] = v;
  warp_quantize_q8_1(v, q8 + blk, lane);
}

void launch_swiglu_q8(float *out, const float *gate, const float *up, int64_t n_cols, void *q8,
                      hx_stream st) {
  CU_ASSERT(n_cols % 32 == 0);
  cu_launch(swiglu_q8_kernel, cdiv(n_cols / 32, 8), 256, 0, st, out, gate, up, n_cols,
            (cu_block_q8_1 *)q8);
  CUDA_LAUNCH_CHECK();
}

__device__ __forceinline__ float kv_round(float v, int type) {
  return type == GT_F16 ? __half2float(__float2half_rn(v)) : v;
}

// q/k per-head RMS norm (when weights given), NeoX RoPE of q and k at pos[0],
// and the K/V cache store, for one token. One warp per head: blocks
// [0, n_q) are query heads, [n_q, n_q + n_kv) key heads (norm, rope, store),
// [n_q + n_kv, n_q + 2 n_kv) value heads (store).
__global__ static void qk_rope_store_kernel(float *q, float *k, const float *v, const float *qw,
                                            const float *kw, const int32_t *pos, int n_q, int n_kv,
                                            int D, float eps, cu_rope p, uint8_t *kc, uint8_t *vc,
                                            int ctype, size_t crb) {
  pdl_trigger();
  pdl_wait();
  int h = blockIdx.x, lane = threadIdx.x;
  int kind = h < n_q ? 0 : h < n_q + n_kv ? 1 : 2;
  int hh = kind == 0 ? h : kind == 1 ? h - n_q : h - n_q - n_kv;
  float *x = kind == 0 ? q + (size_t)hh * D : kind == 1 ? k + (size_t)hh * D : nullptr;
  const float *src = kind == 2 ? v + (size_t)hh * D : x;
  int32_t ps = pos[0];
  if (kind < 2) {
    const float *w = kind == 0 ? qw : kw;
    if (w) {
      float ss = 0.0f;
      for (int i = lane; i < D; i += 32)
        ss += x[i] * x[i];
      ss = warp_sum(ss);
      float inv = rsqrtf(ss / (float)D + eps);
      for (int i = lane; i < D; i += 32)
        x[i] = x[i] * inv * w[i];
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
      float a = x[i], b = x[i + half];
      x[i] = a * c - b * s;
      x[i + half] = a * s + b * c;
    }
    __syncwarp();
    if (kind == 0)
      return;
  }
  uint8_t *row = (kind == 1 ? kc : vc) + (size_t)ps * crb;
  if (ctype == GT_Q8_0) {
    for (int b = 0; b < D / 32; b++) {
      float val = src[b * 32 + lane];
      float amax = warp_max(fabsf(val));
      float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      cu_block_q8_0 *blk = (cu_block_q8_0 *)row + ((size_t)hh * D) / 32 + b;
      blk->qs[lane] = (int8_t)roundf(val * id);
      if (lane == 0)
        blk->d = __float2half_rn(d);
    }
  } else {
    for (int i = lane; i < D; i += 32) {
      if (ctype == GT_F16)
        ((__half *)row)[(size_t)hh * D + i] = __float2half_rn(src[i]);
      else
        ((float *)row)[(size_t)hh * D + i] = kv_round(src[i], ctype);
    }
  }
}

// The same with the head held in registers (lane l owns dims l + 32 j, j < NE;
// needs head_dim = 32 NE and n_rot / 2 a multiple of 32, so the RoPE partner
// of dim i < n_rot / 2, i + n_rot / 2, sits in the same lane): one load of the
// head, the norm, RoPE and the stores from registers. The rotation's cos/sin
// depend only on the position and the model, so they are computed before the
// PDL wait, overlapping the q/k/v mat-vec this kernel waits for.
template <int NE>
__global__ static void __launch_bounds__(32)
    qk_rope_store_reg_kernel(float *q, float *k, const float *v, const float *qw, const float *kw,
                             const int32_t *pos, int n_q, int n_kv, float eps, cu_rope p,
                             uint8_t *kc, uint8_t *vc, int ctype, size_t crb) {
  pdl_trigger();
  const int D = 32 * NE, h = blockIdx.x, lane = threadIdx.x;
  const int kind = h < n_q ? 0 : h < n_q + n_kv ? 1 : 2;
  const int hh = kind == 0 ? h : kind == 1 ? h - n_q : h - n_q - n_kv;
  const int32_t ps = pos[0];   /* uploaded before the step: not written by a kernel */
  const int hp = p.n_rot / 64; /* rotated pairs per lane: dims lane + 32 j, j < hp */
  float cs[NE], sn[NE];
#pragma unroll
  for (int j = 0; j < NE; j++) {
    cs[j] = 1.0f, sn[j] = 0.0f;
    if (kind < 2 && j < hp) {
      float ms;
      const float inv = rope_inv_freq(lane + 32 * j, p, &ms);
      const float theta = (float)ps * inv;
      double sd, cd;
      sincos((double)theta, &sd, &cd);
      sn[j] = (float)sd * ms, cs[j] = (float)cd * ms;
    }
  }
  const float *w = kind == 0 ? qw : kind == 1 ? kw : nullptr;
  float xr[NE], wr[NE];
#pragma unroll
  for (int j = 0; j < NE; j++)
    wr[j] = w ? w[lane + 32 * j] : 1.0f; /* constant: read before the wait */
  pdl_wait();
  float *x = kind == 0 ? q + (size_t)hh * D : kind == 1 ? k + (size_t)hh * D : nullptr;
  const float *src = kind == 2 ? v + (size_t)hh * D : x;
#pragma unroll
  for (int j = 0; j < NE; j++)
    xr[j] = src[lane + 32 * j];
  if (kind < 2) {
    if (w) {
      float ss = 0.0f;
#pragma unroll
      for (int j = 0; j < NE; j++)
        ss += xr[j] * xr[j];
      ss = warp_sum(ss);
      const float inv = rsqrtf(ss / (float)D + eps);
#pragma unroll
      for (int j = 0; j < NE; j++)
        xr[j] = xr[j] * inv * wr[j];
    }
#pragma unroll
    for (int j = 0; j < NE; j++)
      if (j < hp) {
        const int jp = j + hp; /* partner dim lane + 32 j + n_rot / 2 */
        float b = 0.0f;
#pragma unroll
        for (int t = 0; t < NE; t++)
          if (t == jp)
            b = xr[t];
        const float a = xr[j];
        xr[j] = a * cs[j] - b * sn[j];
#pragma unroll
        for (int t = 0; t < NE; t++)
          if (t == jp)
            xr[t] = a * sn[j] + b * cs[j];
      }
#pragma unroll
    for (int j = 0; j < NE; j++)
      x[lane + 32 * j] = xr[j];
    if (kind == 0)
      return;
  }
  uint8_t *row = (kind == 1 ? kc : vc) + (size_t)ps * crb;
#pragma unroll
  for (int j = 0; j < NE; j++) {
    const int64_t i = (int64_t)hh * D + lane + 32 * j;
    if (ctype == GT_Q8_0) {
      const float amax = warp_max(fabsf(xr[j]));
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      cu_block_q8_0 *blk = (cu_block_q8_0 *)row + i / 32;
      blk->qs[lane] = (int8_t)roundf(xr[j] * id);
      if (lane == 0)
        blk->d = __float2half_rn(d);
    } else if (ctype == GT_F16) {
      ((__half *)row)[i] = __float2half_rn(xr[j]);
    } else {
      ((float *)row)[i] = kv_round(xr[j], ctype);
    }
  }
}

void launch_qk_rope_store(float *q, float *k, const float *v, const float *q_norm,
                          const float *k_norm, const int32_t *pos, int n_heads, int n_kv_heads,
                          int head_dim, float eps, const cu_rope *p, uint8_t *k_cache,
                          uint8_t *v_cache, int cache_type, size_t cache_row_bytes, hx_stream st) {
  CU_ASSERT(p->n_rot > 0 && p->n_rot % 2 == 0 && p->n_rot <= head_dim);
  CU_ASSERT(cache_type != GT_Q8_0 || head_dim % 32 == 0);
  const unsigned grid = (unsigned)(n_heads + 2 * n_kv_heads);
  if (head_dim % 32 == 0 && p->n_rot % 64 == 0 && !getenv("HX_QK_ROPE_GENERIC")) {
#define QKR(NE)                                                                                    \
  cu_launch(qk_rope_store_reg_kernel<NE>, grid, 32, 0, st, q, k, v, q_norm, k_norm, pos, n_heads,  \
            n_kv_heads, eps, *p, k_cache, v_cache, cache_type, cache_row_bytes)
    switch (head_dim / 32) {
    case 1:
      QKR(1);
      CUDA_LAUNCH_CHECK();
      return;
    case 2:
      QKR(2);
      CUDA_LAUNCH_CHECK();
      return;
    case 4:
      QKR(4);
      CUDA_LAUNCH_CHECK();
      return;
    case 8:
      QKR(8);
      CUDA_LAUNCH_CHECK();
      return;
    default:
      break;
    }
#undef QKR
  }
  cu_launch(qk_rope_store_kernel, (unsigned)(n_heads + 2 * n_kv_heads), 32, 0, st, q, k, v, q_norm,
            k_norm, pos, n_heads, n_kv_heads, head_dim, eps, *p, k_cache, v_cache, cache_type,
            cache_row_bytes);
  CUDA_LAUNCH_CHECK();
}
