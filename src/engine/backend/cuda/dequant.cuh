// dequant.cuh — device functions that expand 32 consecutive elements
// (sub-block `sub` of a row) of any supported weight type to floats.
#pragma once

#include "common.cuh"

// Elements per sub-block are always 32; `sub` counts 32-element groups from
// the start of the row.
__device__ __forceinline__ void dequant32(const uint8_t *row, int type, int64_t sub,
                                          float out[32]) {
  switch (type) {
  case GT_F32: {
    const float *p = (const float *)row + sub * 32;
#pragma unroll
    for (int i = 0; i < 32; i++)
      out[i] = p[i];
    break;
  }
  case GT_F16: {
    const __half *p = (const __half *)row + sub * 32;
#pragma unroll
    for (int i = 0; i < 32; i++)
      out[i] = __half2float(p[i]);
    break;
  }
  case GT_BF16: {
    const __nv_bfloat16 *p = (const __nv_bfloat16 *)row + sub * 32;
#pragma unroll
    for (int i = 0; i < 32; i++)
      out[i] = __bfloat162float(p[i]);
    break;
  }
  case GT_Q8_0: {
    const cu_block_q8_0 *b = (const cu_block_q8_0 *)row + sub;
    float d = __half2float(b->d);
#pragma unroll
    for (int i = 0; i < 32; i++)
      out[i] = d * b->qs[i];
    break;
  }
  case GT_Q4_K: {
    const cu_block_q4_K *b = (const cu_block_q4_K *)row + sub / 8;
    int j = (int)(sub % 8), g = j / 2, sc, m;
    get_scale_min_k4(j, b->scales, sc, m);
    float d = __half2float(b->d) * sc, mn = __half2float(b->dmin) * m;
    const uint8_t *q = b->qs + g * 32;
    int shift = (j & 1) * 4;
#pragma unroll
    for (int i = 0; i < 32; i++)
      out[i] = d * ((q[i] >> shift) & 0xF) - mn;
    break;
  }
  case GT_Q5_K: {
    const cu_block_q5_K *b = (const cu_block_q5_K *)row + sub / 8;
    int j = (int)(sub % 8), g = j / 2, sc, m;
    get_scale_min_k4(j, b->scales, sc, m);
    float d = __half2float(b->d) * sc, mn = __half2float(b->dmin) * m;
    const uint8_t *q = b->qs + g * 32;
    int shift = (j & 1) * 4;
    uint8_t hb = (uint8_t)(1u << j);
#pragma unroll
    for (int i = 0; i < 32; i++)
      out[i] = d * (((q[i] >> shift) & 0xF) + ((b->qh[i] & hb) ? 16 : 0)) - mn;
    break;
  }
  case GT_Q6_K: {
    const cu_block_q6_K *b = (const cu_block_q6_K *)row + sub / 8;
    int j = (int)(sub % 8), h = j / 4, r = j % 4;
    const uint8_t *ql = b->ql + h * 64 + (r & 1) * 32;
    const uint8_t *qh = b->qh + h * 32;
    const int8_t *sc = b->scales + h * 8 + 2 * r;
    float d = __half2float(b->d);
    int lshift = (r >> 1) * 4, hshift = 2 * r;
#pragma unroll
    for (int i = 0; i < 32; i++) {
      int q = (((ql[i] >> lshift) & 0xF) | (((qh[i] >> hshift) & 3) << 4)) - 32;
      out[i] = d * sc[i / 16] * q;
    }
    break;
  }
  default:
    break;
  }
}

// Sub-block `sub` (32 elements) of row r of a matrix at `base` of r_total
// rows, in any layout: native types address the row at r * row_bytes, the
// planar ones (common.cuh) read the row's parts of their sections.
__device__ __forceinline__ void dequant32_at(const uint8_t *base, int type, int64_t r,
                                             int64_t r_total, size_t row_bytes, int64_t n_cols,
                                             int64_t sub, float out[32]) {
  if (type == GT_Q8_0P) {
    const int64_t nb = n_cols / QK8_0;
    const int8_t *qs = (const int8_t *)q8_0p_qs(base, r, nb) + sub * 32;
    float d = __half2float(q8_0p_d(base, r_total, r, nb)[sub]);
#pragma unroll
    for (int i = 0; i < 32; i++)
      out[i] = d * qs[i];
    return;
  }
  if (type == GT_Q6_KP) {
    const int64_t nb = n_cols / QK_K, jb = sub / 8;
    int j = (int)(sub % 8), h = j / 4, q4 = j % 4;
    const uint8_t *ql = q6_kp_ql(base, r, nb) + jb * 128 + h * 64 + (q4 & 1) * 32;
    const uint8_t *qh = q6_kp_qh(base, r_total, r, nb) + jb * 64 + h * 32;
    const int8_t *sc = q6_kp_sc(base, r_total, r, nb) + jb * 16 + h * 8 + 2 * q4;
    float d = __half2float(q6_kp_d(base, r_total, r, nb)[jb]);
    int lshift = (q4 >> 1) * 4, hshift = 2 * q4;
#pragma unroll
    for (int i = 0; i < 32; i++) {
      int q = (((ql[i] >> lshift) & 0xF) | (((qh[i] >> hshift) & 3) << 4)) - 32;
      out[i] = d * sc[i / 16] * q;
    }
    return;
  }
  dequant32(base + (size_t)r * row_bytes, type, sub, out);
}

// One element e of a row: coalesced when consecutive threads take
// consecutive e (used to expand whole matrices, where dequant32's one thread
// per 32 elements would make every warp access scatter).
__device__ __forceinline__ float dequant1(const uint8_t *row, int type, int64_t e) {
  switch (type) {
  case GT_F32:
    return ((const float *)row)[e];
  case GT_F16:
    return __half2float(((const __half *)row)[e]);
  case GT_BF16:
    return __bfloat162float(((const __nv_bfloat16 *)row)[e]);
  case GT_Q8_0: {
    const cu_block_q8_0 *b = (const cu_block_q8_0 *)row + e / 32;
    return __half2float(b->d) * b->qs[e % 32];
  }
  case GT_Q4_K:
  case GT_Q5_K: {
    int i = (int)(e % 256), j = i / 32, g = j / 2, l = i % 32, sc, m;
    const uint8_t *base = row + (e / 256) * (type == GT_Q4_K ? 144 : 176);
    const uint8_t *scales = base + 4;
    get_scale_min_k4(j, scales, sc, m);
    float d = __half2float(*(const __half *)base), dmin = __half2float(*(const __half *)(base + 2));
    const uint8_t *qs = base + (type == GT_Q4_K ? 16 : 48);
    int q = (qs[g * 32 + l] >> (4 * (j & 1))) & 0xF;
    if (type == GT_Q5_K)
      q += ((base[16 + l] >> j) & 1) << 4;
    return d * sc * q - dmin * m;
  }
  case GT_Q6_K: {
    const cu_block_q6_K *b = (const cu_block_q6_K *)row + e / 256;
    int i = (int)(e % 256), h = i / 128, r = (i % 128) / 32, l = i % 32;
    int lo = (b->ql[h * 64 + (r & 1) * 32 + l] >> ((r >> 1) * 4)) & 0xF;
    int hi = (b->qh[h * 32 + l] >> (2 * r)) & 3;
    return __half2float(b->d) * b->scales[h * 8 + 2 * r + l / 16] * ((lo | (hi << 4)) - 32);
  }
  default:
    return 0.0f;
  }
}
