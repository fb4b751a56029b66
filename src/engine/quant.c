/* quant.c — reference (scalar) implementations of the ggml block formats.
 *
 * The quantizers follow llama.cpp's reference algorithms (ggml-quants.c:
 * make_qkx2_quants for Q4_K/Q5_K with importance weights av_x + |x|,
 * make_qx_quants with rmse_type 1 for Q6_K), so files we write are what
 * llama-quantize would write without an imatrix. The SIMD kernels of the CPU
 * backend are tested against the functions here. */
#include "engine/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/status.h"

_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");

#define GROUP_MAX_EPS 1e-15f

typedef struct {
  const char *name;
  uint16_t block_size; /* 0 = invalid id */
  uint16_t block_bytes;
} type_info;

static const type_info type_table[QUANT_TYPE_COUNT] = {
    [QUANT_F32] = {"f32", 1, 4},
    [QUANT_F16] = {"f16", 1, 2},
    [QUANT_Q4_0] = {"q4_0", 32, 18},
    [QUANT_Q4_1] = {"q4_1", 32, 20},
    [QUANT_Q5_0] = {"q5_0", 32, 22},
    [QUANT_Q5_1] = {"q5_1", 32, 24},
    [QUANT_Q8_0] = {"q8_0", 32, 34},
    [QUANT_Q8_1] = {"q8_1", 32, 36},
    [QUANT_Q2_K] = {"q2_K", 256, 84},
    [QUANT_Q3_K] = {"q3_K", 256, 110},
    [QUANT_Q4_K] = {"q4_K", 256, 144},
    [QUANT_Q5_K] = {"q5_K", 256, 176},
    [QUANT_Q6_K] = {"q6_K", 256, 210},
    [QUANT_Q8_K] = {"q8_K", 256, 292},
    [QUANT_IQ2_XXS] = {"iq2_xxs", 256, 66},
    [QUANT_IQ2_XS] = {"iq2_xs", 256, 74},
    [QUANT_IQ3_XXS] = {"iq3_xxs", 256, 98},
    [QUANT_IQ1_S] = {"iq1_s", 256, 50},
    [QUANT_IQ4_NL] = {"iq4_nl", 32, 18},
    [QUANT_IQ3_S] = {"iq3_s", 256, 110},
    [QUANT_IQ2_S] = {"iq2_s", 256, 82},
    [QUANT_IQ4_XS] = {"iq4_xs", 256, 136},
    [QUANT_I8] = {"i8", 1, 1},
    [QUANT_I16] = {"i16", 1, 2},
    [QUANT_I32] = {"i32", 1, 4},
    [QUANT_I64] = {"i64", 1, 8},
    [QUANT_F64] = {"f64", 1, 8},
    [QUANT_IQ1_M] = {"iq1_m", 256, 56},
    [QUANT_BF16] = {"bf16", 1, 2},
    [QUANT_TQ1_0] = {"tq1_0", 256, 54},
    [QUANT_TQ2_0] = {"tq2_0", 256, 66},
    [QUANT_MXFP4] = {"mxfp4", 32, 17},
};

bool quant_type_is_valid(uint32_t id) {
  return id < QUANT_TYPE_COUNT && type_table[id].block_size != 0;
}

bool quant_type_can_dequantize(quant_type t) {
  switch (t) {
  case QUANT_F32:
  case QUANT_F16:
  case QUANT_BF16:
  case QUANT_Q8_0:
  case QUANT_Q4_K:
  case QUANT_Q5_K:
  case QUANT_Q6_K:
  case QUANT_Q8_K:
    return true;
  default:
    return false;
  }
}

bool quant_type_can_quantize(quant_type t) { return quant_type_can_dequantize(t); }

const char *quant_type_name(quant_type t) {
  return quant_type_is_valid((uint32_t)t) ? type_table[t].name : "?";
}

bool quant_type_parse(const char *name, quant_type *out) {
  if (!name)
    return false;
  for (uint32_t i = 0; i < QUANT_TYPE_COUNT; i++)
    if (type_table[i].block_size && strcasecmp(type_table[i].name, name) == 0) {
      *out = (quant_type)i;
      return true;
    }
  return false;
}

size_t quant_type_block_size(quant_type t) {
  return quant_type_is_valid((uint32_t)t) ? type_table[t].block_size : 0;
}

size_t quant_type_block_bytes(quant_type t) {
  return quant_type_is_valid((uint32_t)t) ? type_table[t].block_bytes : 0;
}

bool quant_row_bytes(quant_type t, int64_t n_elems, size_t *out_bytes) {
  size_t bs = quant_type_block_size(t);
  if (bs == 0 || n_elems < 0 || (uint64_t)n_elems % bs != 0)
    return false;
  return hx_size_mul((size_t)n_elems / bs, quant_type_block_bytes(t), out_bytes) == 0;
}

quant_type quant_type_dot_type(quant_type w) {
  switch (w) {
  case QUANT_Q8_0:
    return QUANT_Q8_0;
  case QUANT_Q4_K:
  case QUANT_Q5_K:
  case QUANT_Q6_K:
  case QUANT_Q8_K:
    return QUANT_Q8_K;
  default:
    return QUANT_F32;
  }
}

/* --- scalar conversions ------------------------------------------------- */

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline float f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float quant_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) { /* zero or subnormal: man * 2^-24 */
    float v = (float)man * 0x1p-24f;
    return f32_from_bits(f32_bits(v) | sign);
  }
  if (exp == 31)
    return f32_from_bits(sign | 0x7f800000u | (man << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t quant_f32_to_f16(float f) {
  /* Rounds through float arithmetic (the FP16 library's method used by ggml):
   * scaling by 2^112 then 2^-110 makes the FPU round the mantissa to 10 bits
   * at the right position, subnormals included. */
  const float scale_to_inf = 0x1.0p+112f, scale_to_zero = 0x1.0p-110f;
  float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
  uint32_t w = f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xff000000u;
  if (bias < 0x71000000u)
    bias = 0x71000000u;
  base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
  uint32_t bits = f32_bits(base);
  uint32_t exp_bits = (bits >> 13) & 0x00007c00u, man_bits = bits & 0x00000fffu;
  uint32_t nonsign = exp_bits + man_bits;
  return (uint16_t)((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}

float quant_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t quant_f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((u >> 16) | 64); /* quiet NaN, sign kept */
  return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

/* Round half to even, like ggml's nearest_int: adding 1.5 * 2^23 puts the
 * rounded integer in the low mantissa bits (valid for |x| < 2^22, which all
 * callers guarantee: scaled values are bounded by the level count). */
static inline int nearest_int(float x) {
  float v = x + 12582912.f;
  int32_t i;
  memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* --- K-quant helpers ------------------------------------------------------ */

void quant_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
    *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

/* Asymmetric quantization of n values to [0, nmax] with weighted least
 * squares refinement over nstep candidate scales (llama.cpp make_qkx2_quants).
 * Returns the scale; *the_min = -(offset) >= 0. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = weights[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; i++) {
    if (x[i] < min)
      min = x[i];
    if (x[i] > max)
      max = x[i];
    float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0)
    min = 0;
  if (max == min) {
    memset(L, 0, (size_t)n);
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; i++) {
    int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
    L[i] = (uint8_t)l;
    float diff = scale * L[i] + min - x[i];
    best_error += weights[i] * diff * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; is++) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; i++) {
      int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = (uint8_t)l;
      float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; i++) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        cur_error += weights[i] * diff * diff;
      }
      if (cur_error < best_error) {
        memcpy(L, Laux, (size_t)n);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

/* Symmetric quantization of n values to [-nmax, nmax-1] (stored + nmax), with
 * the scale search of llama.cpp make_qx_quants (rmse_type 1: weights x^2).
 * search == false: plain amax scale (the fast path). */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, bool search) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; i++) {
    float ax = fabsf(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    memset(L, 0, (size_t)n);
    return 0.f;
  }
  float iscale = -nmax / max;
  if (!search) {
    for (int i = 0; i < n; i++)
      L[i] = (int8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
    return 1 / iscale;
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; i++) {
    int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = (int8_t)(l + nmax);
    float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; is++) {
    if (is == 0)
      continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; i++) {
      int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; i++)
        L[i] = (int8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

/* Packs 8 6-bit scales and mins into the 12-byte K-quant layout. */
static void pack_k_scales(uint8_t *dst, const uint8_t *ls, const uint8_t *lm) {
  for (int j = 0; j < 8; j++) {
    if (j < 4) {
      dst[j] = ls[j];
      dst[j + 4] = lm[j];
    } else {
      dst[j + 4] = (uint8_t)((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
      dst[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
      dst[j - 0] |= (uint8_t)((lm[j] >> 4) << 6);
    }
  }
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per-sub-block scales/mins
 * into L[256] (levels) plus the block header. */
static void quantize_k_asym(const float *x, int nmax, bool search, uint16_t *d_out,
                            uint16_t *dmin_out, uint8_t scales_out[K_SCALE_SIZE], uint8_t *L) {
  float weights[32], mins[8], scales[8];
  uint8_t Laux[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; j++) {
    const float *xs = x + 32 * j;
    if (search) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; l++)
        sum_x2 += xs[l] * xs[l];
      float av_x = sqrtf(sum_x2 / 32);
      for (int l = 0; l < 32; l++)
        weights[l] = av_x + fabsf(xs[l]);
      scales[j] =
          nmax == 15
              ? make_qkx2_quants(32, 15, xs, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20)
              : make_qkx2_quants(32, 31, xs, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15);
    } else {
      for (int l = 0; l < 32; l++)
        weights[l] = 1.f;
      scales[j] = make_qkx2_quants(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, 0, 0, 0);
    }
    if (scales[j] > max_scale)
      max_scale = scales[j];
    if (mins[j] > max_min)
      max_min = mins[j];
  }
  float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; j++) {
    int a = nearest_int(inv_scale * scales[j]), b = nearest_int(inv_min * mins[j]);
    ls[j] = (uint8_t)(a > 63 ? 63 : a);
    lm[j] = (uint8_t)(b > 63 ? 63 : b);
  }
  memset(scales_out, 0, K_SCALE_SIZE);
  pack_k_scales(scales_out, ls, lm);
  *d_out = quant_f32_to_f16(max_scale / 63.f);
  *dmin_out = quant_f32_to_f16(max_min / 63.f);
  float d_all = quant_f16_to_f32(*d_out), dmin_all = quant_f16_to_f32(*dmin_out);
  for (int j = 0; j < 8; j++) {
    uint8_t sc, m;
    quant_k_scale_min(j, scales_out, &sc, &m);
    float d = d_all * sc;
    if (!d)
      continue;
    float dm = dmin_all * m;
    for (int ii = 0; ii < 32; ii++)
      L[32 * j + ii] = (uint8_t)clampi(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
  }
}

static void quantize_q4_K(const float *x, block_q4_K *y, int64_t nb, bool search) {
  uint8_t L[QK_K];
  for (int64_t i = 0; i < nb; i++, x += QK_K) {
    quantize_k_asym(x, 15, search, &y[i].d, &y[i].dmin, y[i].scales, L);
    uint8_t *q = y[i].qs;
    for (int j = 0; j < QK_K; j += 64, q += 32)
      for (int l = 0; l < 32; l++)
        q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
  }
}

static void quantize_q5_K(const float *x, block_q5_K *y, int64_t nb, bool search) {
  uint8_t L[QK_K];
  for (int64_t i = 0; i < nb; i++, x += QK_K) {
    quantize_k_asym(x, 31, search, &y[i].d, &y[i].dmin, y[i].scales, L);
    uint8_t *qh = y[i].qh, *ql = y[i].qs;
    memset(qh, 0, QK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64, ql += 32) {
      for (int j = 0; j < 32; j++) {
        int l1 = L[n + j], l2 = L[n + j + 32];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = (uint8_t)(l1 | (l2 << 4));
      }
      m1 = (uint8_t)(m1 << 2);
      m2 = (uint8_t)(m2 << 2);
    }
  }
}

static void quantize_q6_K(const float *x, block_q6_K *y, int64_t nb, bool search) {
  int8_t L[QK_K];
  float scales[QK_K / 16];
  for (int64_t i = 0; i < nb; i++, x += QK_K) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ib++) {
      float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, search);
      scales[ib] = scale;
      if (fabsf(scale) > max_abs_scale) {
        max_abs_scale = fabsf(scale);
        max_scale = scale;
      }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
      memset(&y[i], 0, sizeof y[i]);
      continue;
    }
    float iscale = -128.f / max_scale;
    y[i].d = quant_f32_to_f16(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ib++) {
      int v = nearest_int(iscale * scales[ib]);
      y[i].scales[ib] = (int8_t)(v > 127 ? 127 : v);
    }
    float d_all = quant_f16_to_f32(y[i].d);
    for (int j = 0; j < QK_K / 16; j++) {
      float d = d_all * y[i].scales[j];
      if (!d)
        continue;
      for (int ii = 0; ii < 16; ii++)
        L[16 * j + ii] = (int8_t)(clampi(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
    uint8_t *ql = y[i].ql, *qh = y[i].qh;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; l++) {
        int q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf;
        int q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;
        ql[l] = (uint8_t)(q1 | (q3 << 4));
        ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
        qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                          ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
      }
    }
  }
}

static void quantize_q8_0(const float *x, block_q8_0 *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++, x += QK8_0) {
    float amax = 0;
    for (int j = 0; j < QK8_0; j++)
      amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.f, id = d ? 1.f / d : 0.f;
    y[i].d = quant_f32_to_f16(d);
    for (int j = 0; j < QK8_0; j++)
      y[i].qs[j] = (int8_t)roundf(x[j] * id);
  }
}

static void quantize_q8_K(const float *x, block_q8_K *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++, x += QK_K) {
    float max = 0, amax = 0;
    for (int j = 0; j < QK_K; j++)
      if (fabsf(x[j]) > amax) {
        amax = fabsf(x[j]);
        max = x[j];
      }
    if (!amax) {
      memset(&y[i], 0, sizeof y[i]);
      continue;
    }
    float iscale = -127.f / max;
    for (int j = 0; j < QK_K; j++) {
      int v = nearest_int(iscale * x[j]);
      y[i].qs[j] = (int8_t)(v > 127 ? 127 : v);
    }
    for (int j = 0; j < QK_K / 16; j++) {
      int sum = 0;
      for (int ii = 0; ii < 16; ii++)
        sum += y[i].qs[j * 16 + ii];
      y[i].bsums[j] = (int16_t)sum;
    }
    y[i].d = 1 / iscale;
  }
}

static void quantize_row(quant_type t, const float *src, void *dst, int64_t n, bool search) {
  size_t bs = quant_type_block_size(t);
  HX_ASSERT(bs != 0 && n >= 0 && (uint64_t)n % bs == 0);
  int64_t nb = n / (int64_t)bs;
  switch (t) {
  case QUANT_F32:
    memcpy(dst, src, (size_t)n * 4);
    break;
  case QUANT_F16:
    for (int64_t i = 0; i < n; i++)
      ((uint16_t *)dst)[i] = quant_f32_to_f16(src[i]);
    break;
  case QUANT_BF16:
    for (int64_t i = 0; i < n; i++)
      ((uint16_t *)dst)[i] = quant_f32_to_bf16(src[i]);
    break;
  case QUANT_Q8_0:
    quantize_q8_0(src, dst, nb);
    break;
  case QUANT_Q8_K:
    quantize_q8_K(src, dst, nb);
    break;
  case QUANT_Q4_K:
    quantize_q4_K(src, dst, nb, search);
    break;
  case QUANT_Q5_K:
    quantize_q5_K(src, dst, nb, search);
    break;
  case QUANT_Q6_K:
    quantize_q6_K(src, dst, nb, search);
    break;
  default:
    HX_ASSERT(!"quant_row_quantize: unsupported type");
  }
}

void quant_row_quantize(quant_type t, const float *src, void *dst, int64_t n) {
  quantize_row(t, src, dst, n, true);
}

void quant_row_quantize_fast(quant_type t, const float *src, void *dst, int64_t n) {
  quantize_row(t, src, dst, n, false);
}

/* --- dequantize ---------------------------------------------------------- */

static void dequantize_q4_K(const block_q4_K *x, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++) {
    const uint8_t *q = x[i].qs;
    float d = quant_f16_to_f32(x[i].d), min = quant_f16_to_f32(x[i].dmin);
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
      uint8_t sc, m;
      quant_k_scale_min(is, x[i].scales, &sc, &m);
      float d1 = d * sc, m1 = min * m;
      quant_k_scale_min(is + 1, x[i].scales, &sc, &m);
      float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; l++)
        *y++ = d1 * (q[l] & 0xf) - m1;
      for (int l = 0; l < 32; l++)
        *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

static void dequantize_q5_K(const block_q5_K *x, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++) {
    const uint8_t *ql = x[i].qs, *qh = x[i].qh;
    float d = quant_f16_to_f32(x[i].d), min = quant_f16_to_f32(x[i].dmin);
    unsigned u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
      uint8_t sc, m;
      quant_k_scale_min(is, x[i].scales, &sc, &m);
      float d1 = d * sc, m1 = min * m;
      quant_k_scale_min(is + 1, x[i].scales, &sc, &m);
      float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; l++)
        *y++ = d1 * ((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; l++)
        *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
  }
}

static void dequantize_q6_K(const block_q6_K *x, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++) {
    float d = quant_f16_to_f32(x[i].d);
    const uint8_t *ql = x[i].ql, *qh = x[i].qh;
    const int8_t *sc = x[i].scales;
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; l++) {
        int is = l / 16;
        int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
        int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
        int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

void quant_row_dequantize(quant_type t, const void *src, float *dst, int64_t n) {
  size_t bs = quant_type_block_size(t);
  HX_ASSERT(bs != 0 && n >= 0 && (uint64_t)n % bs == 0);
  int64_t nb = n / (int64_t)bs;
  switch (t) {
  case QUANT_F32:
    memcpy(dst, src, (size_t)n * 4);
    break;
  case QUANT_F16: {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, p + 2 * i, 2);
      dst[i] = quant_f16_to_f32(h);
    }
    break;
  }
  case QUANT_BF16: {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, p + 2 * i, 2);
      dst[i] = quant_bf16_to_f32(h);
    }
    break;
  }
  case QUANT_Q8_0: {
    const block_q8_0 *x = src;
    for (int64_t i = 0; i < nb; i++) {
      float d = quant_f16_to_f32(x[i].d);
      for (int j = 0; j < QK8_0; j++)
        dst[i * QK8_0 + j] = d * x[i].qs[j];
    }
    break;
  }
  case QUANT_Q8_K: {
    const block_q8_K *x = src;
    for (int64_t i = 0; i < nb; i++)
      for (int j = 0; j < QK_K; j++)
        dst[i * QK_K + j] = x[i].d * x[i].qs[j];
    break;
  }
  case QUANT_Q4_K:
    dequantize_q4_K(src, dst, nb);
    break;
  case QUANT_Q5_K:
    dequantize_q5_K(src, dst, nb);
    break;
  case QUANT_Q6_K:
    dequantize_q6_K(src, dst, nb);
    break;
  default:
    HX_ASSERT(!"quant_row_dequantize: unsupported type");
  }
}

/* --- dot products -------------------------------------------------------- */

float quant_row_dot_f32(quant_type t, const void *w_row, const float *x, int64_t n) {
  size_t bs = quant_type_block_size(t), bb = quant_type_block_bytes(t);
  HX_ASSERT(bs != 0 && n >= 0 && (uint64_t)n % bs == 0);
  float tmp[QK_K];
  const size_t chunk = bs == 1 ? QK_K : bs; /* elements dequantized per step */
  double sum = 0;
  const uint8_t *w = w_row;
  for (int64_t i = 0; i < n; i += (int64_t)chunk) {
    int64_t m = n - i < (int64_t)chunk ? n - i : (int64_t)chunk;
    quant_row_dequantize(t, w + (size_t)i / bs * bb, tmp, m);
    for (int64_t j = 0; j < m; j++)
      sum += (double)tmp[j] * x[i + j];
  }
  return (float)sum;
}

static float dot_q8_0_q8_0(const block_q8_0 *w, const block_q8_0 *x, int64_t nb) {
  float sum = 0;
  for (int64_t i = 0; i < nb; i++) {
    int32_t s = 0;
    for (int j = 0; j < QK8_0; j++)
      s += w[i].qs[j] * x[i].qs[j];
    sum += quant_f16_to_f32(w[i].d) * quant_f16_to_f32(x[i].d) * (float)s;
  }
  return sum;
}

static float dot_q4_K_q8_K(const block_q4_K *w, const block_q8_K *x, int64_t nb) {
  float sum = 0;
  for (int64_t i = 0; i < nb; i++) {
    float d = quant_f16_to_f32(w[i].d) * x[i].d, dmin = quant_f16_to_f32(w[i].dmin) * x[i].d;
    int32_t sum_q = 0, sum_m = 0;
    for (int j = 0; j < 8; j++) {
      uint8_t sc, m;
      quant_k_scale_min(j, w[i].scales, &sc, &m);
      const uint8_t *q = w[i].qs + 32 * (j / 2);
      int32_t s = 0;
      for (int l = 0; l < 32; l++) {
        int v = j % 2 ? q[l] >> 4 : q[l] & 0xf;
        s += v * x[i].qs[32 * j + l];
      }
      sum_q += sc * s;
      sum_m += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
    }
    sum += d * (float)sum_q - dmin * (float)sum_m;
  }
  return sum;
}

static float dot_q5_K_q8_K(const block_q5_K *w, const block_q8_K *x, int64_t nb) {
  float sum = 0;
  for (int64_t i = 0; i < nb; i++) {
    float d = quant_f16_to_f32(w[i].d) * x[i].d, dmin = quant_f16_to_f32(w[i].dmin) * x[i].d;
    int32_t sum_q = 0, sum_m = 0;
    for (int j = 0; j < 8; j++) {
      uint8_t sc, m;
      quant_k_scale_min(j, w[i].scales, &sc, &m);
      const uint8_t *q = w[i].qs + 32 * (j / 2);
      int32_t s = 0;
      for (int l = 0; l < 32; l++) {
        int v = (j % 2 ? q[l] >> 4 : q[l] & 0xf) + ((w[i].qh[l] >> j) & 1 ? 16 : 0);
        s += v * x[i].qs[32 * j + l];
      }
      sum_q += sc * s;
      sum_m += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
    }
    sum += d * (float)sum_q - dmin * (float)sum_m;
  }
  return sum;
}

static float dot_q6_K_q8_K(const block_q6_K *w, const block_q8_K *x, int64_t nb) {
  float sum = 0;
  int8_t q[QK_K];
  for (int64_t i = 0; i < nb; i++) {
    const uint8_t *ql = w[i].ql, *qh = w[i].qh;
    for (int n = 0; n < QK_K; n += 128, ql += 64, qh += 32)
      for (int l = 0; l < 32; l++) {
        q[n + l] = (int8_t)(((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32);
        q[n + l + 32] = (int8_t)(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
        q[n + l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        q[n + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    int32_t s_all = 0;
    for (int j = 0; j < QK_K / 16; j++) {
      int32_t s = 0;
      for (int l = 0; l < 16; l++)
        s += q[16 * j + l] * x[i].qs[16 * j + l];
      s_all += w[i].scales[j] * s;
    }
    sum += quant_f16_to_f32(w[i].d) * x[i].d * (float)s_all;
  }
  return sum;
}

float quant_row_dot_q8(quant_type t, const void *w_row, const void *x_q, int64_t n) {
  size_t bs = quant_type_block_size(t);
  HX_ASSERT(bs != 0 && n >= 0 && (uint64_t)n % bs == 0);
  int64_t nb = n / (int64_t)bs;
  switch (t) {
  case QUANT_Q8_0:
    return dot_q8_0_q8_0(w_row, x_q, nb);
  case QUANT_Q4_K:
    return dot_q4_K_q8_K(w_row, x_q, nb);
  case QUANT_Q5_K:
    return dot_q5_K_q8_K(w_row, x_q, nb);
  case QUANT_Q6_K:
    return dot_q6_K_q8_K(w_row, x_q, nb);
  case QUANT_Q8_K: {
    const block_q8_K *w = w_row, *x = x_q;
    float sum = 0;
    for (int64_t i = 0; i < nb; i++) {
      int32_t s = 0;
      for (int j = 0; j < QK_K; j++)
        s += w[i].qs[j] * x[i].qs[j];
      sum += w[i].d * x[i].d * (float)s;
    }
    return sum;
  }
  default:
    return quant_row_dot_f32(t, w_row, x_q, n);
  }
}
