/* cpu_dot.c — dot-product kernels of the CPU backend: scalar references
 * (quant.c), AVX2 and AVX-512 versions compiled with function-level target
 * attributes and chosen at run time with __builtin_cpu_supports.
 *
 * The integer kernels follow ggml's scheme: weights and activations both
 * quantized, products summed in int16/int32 per block, scaled once per block
 * in f32. They compute the same sums as the scalar reference up to float
 * summation order. */
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "engine/backend/cpu/cpu_impl.h"

/* ---- scalar references -------------------------------------------------- */

static float dot_scalar_f32(const void *w, const void *x, int64_t n) {
  return quant_row_dot_q8(QUANT_F32, w, x, n);
}
static float dot_scalar_f16(const void *w, const void *x, int64_t n) {
  return quant_row_dot_q8(QUANT_F16, w, x, n);
}
static float dot_scalar_bf16(const void *w, const void *x, int64_t n) {
  return quant_row_dot_q8(QUANT_BF16, w, x, n);
}
static float dot_scalar_q8_0(const void *w, const void *x, int64_t n) {
  return quant_row_dot_q8(QUANT_Q8_0, w, x, n);
}
static float dot_scalar_q4_k(const void *w, const void *x, int64_t n) {
  return quant_row_dot_q8(QUANT_Q4_K, w, x, n);
}
static float dot_scalar_q5_k(const void *w, const void *x, int64_t n) {
  return quant_row_dot_q8(QUANT_Q5_K, w, x, n);
}
static float dot_scalar_q6_k(const void *w, const void *x, int64_t n) {
  return quant_row_dot_q8(QUANT_Q6_K, w, x, n);
}

/* ---- AVX2 --------------------------------------------------------------- */

#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* F16C scalar conversion, inlined (quant_f16_to_f32 is a call per block). */
#define F16(h) _cvtsh_ss(h)

AVX2 static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2 static float dot_avx2_f32(const void *wv, const void *xv, int64_t n) {
  const float *w = wv, *x = xv;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float s = hsum256(_mm256_add_ps(a0, a1));
  for (; i < n; i++)
    s += w[i] * x[i];
  return s;
}

AVX2 static float dot_avx2_f16(const void *wv, const void *xv, int64_t n) {
  const uint16_t *w = wv;
  const float *x = xv;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
    __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8)));
    a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
  }
  float s = hsum256(_mm256_add_ps(a0, a1));
  for (; i < n; i++)
    s += quant_f16_to_f32(w[i]) * x[i];
  return s;
}

AVX2 static inline __m256 bf16x8_avx2(const uint16_t *p) {
  __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

AVX2 static float dot_avx2_bf16(const void *wv, const void *xv, int64_t n) {
  const uint16_t *w = wv;
  const float *x = xv;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(bf16x8_avx2(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(bf16x8_avx2(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float s = hsum256(_mm256_add_ps(a0, a1));
  for (; i < n; i++)
    s += quant_bf16_to_f32(w[i]) * x[i];
  return s;
}

/* Signed int8 × int8 pairs summed to 8 int32 (ggml's mul_sum_i8_pairs). */
AVX2 static inline __m256i mul_sum_i8_avx2(__m256i x, __m256i y) {
  const __m256i ax = _mm256_sign_epi8(x, x);
  const __m256i sy = _mm256_sign_epi8(y, x);
  const __m256i dot16 = _mm256_maddubs_epi16(ax, sy);
  return _mm256_madd_epi16(dot16, _mm256_set1_epi16(1));
}

AVX2 static float dot_avx2_q8_0(const void *wv, const void *xv, int64_t n) {
  const block_q8_0 *w = wv, *x = xv;
  const int64_t nb = n / QK8_0;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; i++) {
    const __m256 d = _mm256_set1_ps(F16(w[i].d) * F16(x[i].d));
    const __m256i qw = _mm256_loadu_si256((const __m256i *)w[i].qs);
    const __m256i qx = _mm256_loadu_si256((const __m256i *)x[i].qs);
    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(mul_sum_i8_avx2(qw, qx)), acc);
  }
  return hsum256(acc);
}

/* Unpacks the 12-byte K-quant scales into 8 scales (utmp[0..1]) and 8 mins
 * (utmp[2..3]), one byte each. */
static inline void k_scales_unpack(const uint8_t *scales, uint32_t utmp[4]) {
  const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
  memcpy(utmp, scales, 12);
  utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
  const uint32_t uaux = utmp[1] & kmask1;
  utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
  utmp[2] = uaux;
  utmp[0] &= kmask1;
}

AVX2 static inline __m256i scale_pick_avx2(__m256i scales16, int i) {
  /* broadcast 16-bit lane i of a 128-bit half to all 16 lanes */
  const short sel = (short)(((2 * i + 1) << 8) | (2 * i));
  return _mm256_shuffle_epi8(scales16, _mm256_set1_epi16(sel));
}

AVX2 static float dot_avx2_q4_k(const void *wv, const void *xv, int64_t n) {
  const block_q4_K *w = wv;
  const block_q8_K *x = xv;
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0xF);
  __m256 acc = _mm256_setzero_ps();
  __m128 acc_m = _mm_setzero_ps();
  for (int64_t i = 0; i < nb; i++) {
    const float d = x[i].d * F16(w[i].d);
    const float dmin = -x[i].d * F16(w[i].dmin);
    uint32_t utmp[4];
    k_scales_unpack(w[i].scales, utmp);
    const __m256i mins_and_scales =
        _mm256_cvtepu8_epi16(_mm_set_epi32((int)utmp[3], (int)utmp[2], (int)utmp[1], (int)utmp[0]));
    const __m256i q8sums = _mm256_loadu_si256((const __m256i *)x[i].bsums);
    const __m128i q8s =
        _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
    const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
    acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
    const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
    const __m256i scales = _mm256_set_m128i(sc128, sc128);
    const uint8_t *q4 = w[i].qs;
    const int8_t *q8 = x[i].qs;
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < QK_K / 64; j++) {
      const __m256i scale_l = scale_pick_avx2(scales, 2 * j);
      const __m256i scale_h = scale_pick_avx2(scales, 2 * j + 1);
      const __m256i q4bits = _mm256_loadu_si256((const __m256i *)q4);
      q4 += 32;
      const __m256i q4l = _mm256_and_si256(q4bits, m4);
      const __m256i q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
      const __m256i q8l = _mm256_loadu_si256((const __m256i *)q8);
      q8 += 32;
      const __m256i q8h = _mm256_loadu_si256((const __m256i *)q8);
      q8 += 32;
      __m256i p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
      __m256i p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
  acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
  return hsum256(acc) + _mm_cvtss_f32(acc_m);
}

AVX2 static float dot_avx2_q5_k(const void *wv, const void *xv, int64_t n) {
  const block_q5_K *w = wv;
  const block_q8_K *x = xv;
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0xF);
  const __m256i b16 = _mm256_set1_epi8(16);
  __m256 acc = _mm256_setzero_ps();
  float summs = 0.0f;
  for (int64_t i = 0; i < nb; i++) {
    const float d = x[i].d * F16(w[i].d);
    const float dmin = -x[i].d * F16(w[i].dmin);
    uint32_t utmp[4];
    k_scales_unpack(w[i].scales, utmp);
    const __m256i mins_and_scales =
        _mm256_cvtepu8_epi16(_mm_set_epi32((int)utmp[3], (int)utmp[2], (int)utmp[1], (int)utmp[0]));
    const __m256i q8sums = _mm256_loadu_si256((const __m256i *)x[i].bsums);
    const __m128i q8s =
        _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
    const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
    __m128i hs = _mm_add_epi32(prod, _mm_shuffle_epi32(prod, 0x4e));
    hs = _mm_add_epi32(hs, _mm_shuffle_epi32(hs, 0xb1));
    summs += dmin * (float)_mm_cvtsi128_si32(hs);
    const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
    const __m256i scales = _mm256_set_m128i(sc128, sc128);
    const __m256i hbits = _mm256_loadu_si256((const __m256i *)w[i].qh);
    __m256i hmask = _mm256_set1_epi8(1);
    const uint8_t *q5 = w[i].qs;
    const int8_t *q8 = x[i].qs;
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < QK_K / 64; j++) {
      const __m256i scale_0 = scale_pick_avx2(scales, 2 * j);
      const __m256i scale_1 = scale_pick_avx2(scales, 2 * j + 1);
      const __m256i q5bits = _mm256_loadu_si256((const __m256i *)q5);
      q5 += 32;
      const __m256i h0 =
          _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask), b16);
      hmask = _mm256_slli_epi16(hmask, 1);
      const __m256i h1 =
          _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask), b16);
      hmask = _mm256_slli_epi16(hmask, 1);
      const __m256i q5_0 = _mm256_add_epi8(_mm256_and_si256(q5bits, m4), h0);
      const __m256i q5_1 = _mm256_add_epi8(_mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4), h1);
      const __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
      q8 += 32;
      const __m256i q8_1 = _mm256_loadu_si256((const __m256i *)q8);
      q8 += 32;
      const __m256i p0 = _mm256_madd_epi16(scale_0, _mm256_maddubs_epi16(q5_0, q8_0));
      const __m256i p1 = _mm256_madd_epi16(scale_1, _mm256_maddubs_epi16(q5_1, q8_1));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum256(acc) + summs;
}

AVX2 static float dot_avx2_q6_k(const void *wv, const void *xv, int64_t n) {
  const block_q6_K *w = wv;
  const block_q8_K *x = xv;
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0xF);
  const __m256i m2 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; i++) {
    const float d = x[i].d * F16(w[i].d);
    const uint8_t *q4 = w[i].ql;
    const uint8_t *qh = w[i].qh;
    const int8_t *q8 = x[i].qs;
    const __m128i scales = _mm_loadu_si128((const __m128i *)w[i].scales);
    const __m256i scales16 = _mm256_cvtepi8_epi16(scales);
    const __m256i q8sums = _mm256_loadu_si256((const __m256i *)x[i].bsums);
    const __m256i q8sclsub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales16), 5);
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < QK_K / 128; j++) {
      const __m256i q4bits1 = _mm256_loadu_si256((const __m256i *)q4);
      const __m256i q4bits2 = _mm256_loadu_si256((const __m256i *)(q4 + 32));
      q4 += 64;
      const __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
      qh += 32;
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4);
      const __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4);
      const __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4);
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), h0);
      q[1] = _mm256_or_si256(_mm256_and_si256(q4bits2, m4), h1);
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m4), h2);
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m4), h3);
      for (int k = 0; k < 4; k++) {
        const __m256i q8v = _mm256_loadu_si256((const __m256i *)(q8 + 32 * k));
        const __m256i p16 = _mm256_maddubs_epi16(q[k], q8v);
        const int s = 8 * j + 2 * k; /* sub-blocks s (first 16) and s+1 */
        const __m256i sc =
            _mm256_set_m128i(_mm_set1_epi16(w[i].scales[s + 1]), _mm_set1_epi16(w[i].scales[s]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p16));
      }
      q8 += 128;
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi, q8sclsub)),
                          acc);
  }
  return hsum256(acc);
}

/* ---- AVX-512 ------------------------------------------------------------ */

#define AVX512                                                                                     \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

AVX512 static float dot_avx512_f32(const void *wv, const void *xv, int64_t n) {
  const float *w = wv, *x = xv;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  for (; i < n; i++)
    s += w[i] * x[i];
  return s;
}

AVX512 static float dot_avx512_f16(const void *wv, const void *xv, int64_t n) {
  const uint16_t *w = wv;
  const float *x = xv;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i)));
    __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i + 16)));
    a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  for (; i < n; i++)
    s += quant_f16_to_f32(w[i]) * x[i];
  return s;
}

AVX512 static float dot_avx512_bf16(const void *wv, const void *xv, int64_t n) {
  const uint16_t *w = wv;
  const float *x = xv;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512i v0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i)));
    __m512i v1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i + 16)));
    a0 =
        _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)),
                         _mm512_loadu_ps(x + i + 16), a1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  for (; i < n; i++)
    s += quant_bf16_to_f32(w[i]) * x[i];
  return s;
}

/* VNNI: dpbusd needs an unsigned left operand: |w| and sign(x, w). */
AVX512 static inline __m256i mul_sum_i8_vnni(__m256i w, __m256i x) {
  const __m256i aw = _mm256_sign_epi8(w, w);
  const __m256i sx = _mm256_sign_epi8(x, w);
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
}

AVX512 static float dot_avx512_q8_0(const void *wv, const void *xv, int64_t n) {
  const block_q8_0 *w = wv, *x = xv;
  const int64_t nb = n / QK8_0;
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) { /* two blocks per 512-bit register */
    const __m512i qw =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)w[i].qs)),
                           _mm256_loadu_si256((const __m256i *)w[i + 1].qs), 1);
    const __m512i qx =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[i].qs)),
                           _mm256_loadu_si256((const __m256i *)x[i + 1].qs), 1);
    const __mmask64 neg = _mm512_movepi8_mask(qw);
    const __m512i aw = _mm512_abs_epi8(qw);
    const __m512i sx = _mm512_mask_sub_epi8(qx, neg, _mm512_setzero_si512(), qx);
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
    const __m512 d = _mm512_insertf32x8(_mm512_set1_ps(F16(w[i].d) * F16(x[i].d)),
                                        _mm256_set1_ps(F16(w[i + 1].d) * F16(x[i + 1].d)), 1);
    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc);
  }
  float s = _mm512_reduce_add_ps(acc);
  for (; i < nb; i++) {
    const __m256i s0 = mul_sum_i8_vnni(_mm256_loadu_si256((const __m256i *)w[i].qs),
                                       _mm256_loadu_si256((const __m256i *)x[i].qs));
    s += F16(w[i].d) * F16(x[i].d) * hsum256(_mm256_cvtepi32_ps(s0));
  }
  return s;
}

/* Q4_K with VNNI: a 64-element group is one 512-bit register (low nibbles =
 * sub-block 2j, high = 2j+1, matching 64 contiguous Q8_K bytes); maddubs gives
 * int16 pair sums and madd applies the 16-bit sub-block scales (ggml's AVX2
 * scheme at 512 bits). */
AVX512 static float dot_avx512_q4_k(const void *wv, const void *xv, int64_t n) {
  const block_q4_K *w = wv;
  const block_q8_K *x = xv;
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0xF);
  const __m512i sel0 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(1), 1);
  const __m512i two = _mm512_set1_epi16(2);
  __m512 acc = _mm512_setzero_ps();
  float summs = 0.0f;
  for (int64_t i = 0; i < nb; i++) {
    const float d = x[i].d * F16(w[i].d);
    const float dmin = x[i].d * F16(w[i].dmin);
    uint32_t utmp[4];
    k_scales_unpack(w[i].scales, utmp);
    const uint8_t *sc = (const uint8_t *)&utmp[0];
    const uint8_t *mn = (const uint8_t *)&utmp[2];
    const __m256i bs = _mm256_loadu_si256((const __m256i *)x[i].bsums);
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn));
    /* bsums pairs (16 → 8 sums of 32) dotted with mins */
    const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    __m128i pm = _mm_madd_epi16(_mm256_castsi256_si128(mins16), q8s);
    pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0x4e));
    pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0xb1));
    summs += dmin * (float)_mm_cvtsi128_si32(pm);
    const uint8_t *q4 = w[i].qs;
    const int8_t *q8 = x[i].qs;
    /* the 8 scales as i16; lanes 0-15 of group j take scale 2j, 16-31 scale 2j+1 */
    const __m512i sc16 =
        _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
    __m512i sel = sel0;
    __m512i sumi = _mm512_setzero_si512();
    for (int j = 0; j < QK_K / 64; j++) {
      const __m256i q4bits = _mm256_loadu_si256((const __m256i *)(q4 + 32 * j));
      const __m512i q4v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(q4bits, m4)),
                                             _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4), 1);
      const __m512i q8v = _mm512_loadu_si512((const void *)(q8 + 64 * j));
      /* u8 x i8 pairs → i16 (≤ 2·15·128, no saturation), then × scale → i32 */
      const __m512i p16 = _mm512_maddubs_epi16(q4v, q8v);
      const __m512i scv = _mm512_permutexvar_epi16(sel, sc16);
      sel = _mm512_add_epi16(sel, two);
      sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p16, scv));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return _mm512_reduce_add_ps(acc) - summs;
}

/* Q5_K group j (64 weights: sub-blocks 2j and 2j+1) as one 512-bit register of
 * values 0..31: the Q4_K nibbles plus 16 where the qh bit (2j for the low
 * nibbles, 2j+1 for the high) is set. */
AVX512 static inline __m512i q5_k_group(const block_q5_K *b, __m256i hbits, int j) {
  const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
  const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * j));
  const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one), 4);
  const __m256i h1 =
      _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one), 4);
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_or_si256(_mm256_and_si256(q, m4), h0)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1), 1);
}

/* The mins' share of a K-quant super-block against one Q8_K row: sum over the
 * 8 sub-blocks of min * (sum of its 32 activations). */
AVX512 static inline int k_mins_dot(__m128i mins16, const block_q8_K *x) {
  const __m256i bs = _mm256_loadu_si256((const __m256i *)x->bsums);
  const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
  __m128i pm = _mm_madd_epi16(mins16, q8s);
  pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0x4e));
  pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0xb1));
  return _mm_cvtsi128_si32(pm);
}

/* Q4_K group j (64 weights: sub-blocks 2j and 2j+1, the low and high
 * nibbles of 32 bytes) as one 512-bit register of values 0..15. */
AVX512 static inline __m512i q4_k_group(const uint8_t *qs, int j) {
  const __m256i m4 = _mm256_set1_epi8(0xF);
  const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(q, m4)),
                            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4), 1);
}

/* Up to four activation rows (T) against one Q4_K (FIVE = 0) or Q5_K (FIVE =
 * 1) weight row: the weights and scales are unpacked once per super-block for
 * all of them (ggml's AVX2 K-quant scheme at 512 bits). T and FIVE are
 * constants at each call. */
__attribute__((always_inline)) AVX512 static inline void
dot_t_avx512_k(const void *wv, const void *xv, size_t x_stride, int64_t n, int T, int FIVE,
               float *out) {
  const block_q4_K *w4 = wv;
  const block_q5_K *w5 = wv;
  const int64_t nb = n / QK_K;
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  float summs[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < nb; i++) {
    uint32_t utmp[4];
    k_scales_unpack(FIVE ? w5[i].scales : w4[i].scales, utmp);
    const uint8_t *sc = (const uint8_t *)&utmp[0];
    const uint8_t *mn = (const uint8_t *)&utmp[2];
    const float wd = F16(FIVE ? w5[i].d : w4[i].d), wdmin = F16(FIVE ? w5[i].dmin : w4[i].dmin);
    __m512i qv[4], scv[4];
    for (int j = 0; j < 4; j++) {
      qv[j] = FIVE ? q5_k_group(&w5[i], _mm256_loadu_si256((const __m256i *)w5[i].qh), j)
                   : q4_k_group(w4[i].qs, j);
      scv[j] = _mm512_inserti64x4(_mm512_set1_epi16((short)sc[2 * j]),
                                  _mm256_set1_epi16((short)sc[2 * j + 1]), 1);
    }
    const __m128i mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn));
    for (int t = 0; t < T; t++) {
      const block_q8_K *x = (const block_q8_K *)((const char *)xv + (size_t)t * x_stride) + i;
      summs[t] += x->d * wdmin * (float)k_mins_dot(mins16, x);
      __m512i sumi = _mm512_setzero_si512();
      for (int j = 0; j < 4; j++) {
        /* u8 (≤ 31) x i8 pairs → i16 (≤ 2·31·128, no saturation), × scale → i32 */
        const __m512i q8v = _mm512_loadu_si512((const void *)(x->qs + 64 * j));
        sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(qv[j], q8v), scv[j]));
      }
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(x->d * wd), _mm512_cvtepi32_ps(sumi), acc[t]);
    }
  }
  for (int t = 0; t < T; t++)
    out[t] = _mm512_reduce_add_ps(acc[t]) - summs[t];
}

/* Four activation rows against one Q4_K weight row (prefill). */
AVX512 static void dot4_avx512_q4_k(const void *wv, const void *xv, size_t x_stride, int64_t n,
                                    float out[4]) {
  dot_t_avx512_k(wv, xv, x_stride, n, 4, 0, out);
}

AVX512 static float dot_avx512_q5_k(const void *wv, const void *xv, int64_t n) {
  float v;
  dot_t_avx512_k(wv, xv, 0, n, 1, 1, &v);
  return v;
}

AVX512 static void dot4_avx512_q5_k(const void *wv, const void *xv, size_t x_stride, int64_t n,
                                    float out[4]) {
  dot_t_avx512_k(wv, xv, x_stride, n, 4, 1, out);
}

/* Four activation rows against one Q8_0 weight row (prefill). */
AVX512 static void dot4_avx512_q8_0(const void *wv, const void *xv, size_t x_stride, int64_t n,
                                    float out[4]) {
  const block_q8_0 *w = wv;
  const int64_t nb = n / QK8_0;
  HX_ASSERT(nb % 2 == 0);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  for (int64_t i = 0; i < nb; i += 2) {
    const __m512i qw =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)w[i].qs)),
                           _mm256_loadu_si256((const __m256i *)w[i + 1].qs), 1);
    const __mmask64 neg = _mm512_movepi8_mask(qw);
    const __m512i aw = _mm512_abs_epi8(qw);
    const float d0 = F16(w[i].d), d1 = F16(w[i + 1].d);
    for (int t = 0; t < 4; t++) {
      const block_q8_0 *x = (const block_q8_0 *)((const char *)xv + (size_t)t * x_stride) + i;
      const __m512i qx =
          _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[0].qs)),
                             _mm256_loadu_si256((const __m256i *)x[1].qs), 1);
      const __m512i sx = _mm512_mask_sub_epi8(qx, neg, _mm512_setzero_si512(), qx);
      const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
      const __m512 d =
          _mm512_insertf32x8(_mm512_set1_ps(d0 * F16(x[0].d)), _mm256_set1_ps(d1 * F16(x[1].d)), 1);
      acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc[t]);
    }
  }
  for (int t = 0; t < 4; t++)
    out[t] = _mm512_reduce_add_ps(acc[t]);
}

/* Q6_K with VNNI: 64 elements (two 32-element groups of one 128-half) per
 * 512-bit register; each group of 4 int32 lanes belongs to one 16-element
 * sub-block. q is unsigned 0..63; the -32 offset is applied through bsums. */
AVX512 static float dot_avx512_q6_k(const void *wv, const void *xv, int64_t n) {
  const block_q6_K *w = wv;
  const block_q8_K *x = xv;
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0xF);
  const __m256i m2 = _mm256_set1_epi8(3);
  /* i16 lane l of a 64-element register belongs to sub-block l / 8 */
  int16_t idx_init[32];
  for (int l = 0; l < 32; l++)
    idx_init[l] = (int16_t)(l / 8);
  const __m512i idx_lo = _mm512_loadu_si512((const void *)idx_init);
  const __m512i four = _mm512_set1_epi16(4);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; i++) {
    const float d = x[i].d * F16(w[i].d);
    const __m128i sc8 = _mm_loadu_si128((const __m128i *)w[i].scales);
    const __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(sc8));
    const __m256i bs = _mm256_loadu_si256((const __m256i *)x[i].bsums);
    __m256i corr = _mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc8));
    const uint8_t *ql = w[i].ql;
    const uint8_t *qh = w[i].qh;
    const int8_t *q8 = x[i].qs;
    __m512i sumi = _mm512_setzero_si512();
    __m512i idx = idx_lo;
    for (int j = 0; j < QK_K / 128; j++) {
      const __m256i b1 = _mm256_loadu_si256((const __m256i *)(ql + 64 * j));
      const __m256i b2 = _mm256_loadu_si256((const __m256i *)(ql + 64 * j + 32));
      const __m256i hb = _mm256_loadu_si256((const __m256i *)(qh + 32 * j));
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4);
      const __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4);
      const __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4);
      const __m256i q0 = _mm256_or_si256(_mm256_and_si256(b1, m4), h0);
      const __m256i q1 = _mm256_or_si256(_mm256_and_si256(b2, m4), h1);
      const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), h2);
      const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4), h3);
      const __m512i qa = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
      const __m512i qb = _mm512_inserti64x4(_mm512_castsi256_si512(q2), q3, 1);
      /* u8 (0..63) x i8 pairs → i16 (≤ 2·63·128), × sub-block scale → i32 */
      const __m512i pa = _mm512_maddubs_epi16(qa, _mm512_loadu_si512((const void *)(q8 + 128 * j)));
      const __m512i pb =
          _mm512_maddubs_epi16(qb, _mm512_loadu_si512((const void *)(q8 + 128 * j + 64)));
      sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(pa, _mm512_permutexvar_epi16(idx, sc16)));
      idx = _mm512_add_epi16(idx, four);
      sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(pb, _mm512_permutexvar_epi16(idx, sc16)));
      idx = _mm512_add_epi16(idx, four);
    }
    corr = _mm256_slli_epi32(corr, 5);
    const __m512i tot = _mm512_sub_epi32(sumi, _mm512_inserti64x4(_mm512_setzero_si512(), corr, 0));
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(tot), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

/* ---- attention over an F16 cache ---------------------------------------- */

/* One query head against positions 0..n_kv-1 of one kv head of an F16 cache
 * (rows `stride` halves apart): out = softmax(q·Kᵀ·scale) · V, as the
 * reference path in cpu_backend.c (exp in f32, sum in double, weights
 * p_j = e_j / sum) with the f16 → f32 conversions fused into the FMAs.
 * hd % 8 == 0; scores: n_kv floats of scratch. */
AVX2 static void attn_head_f16_avx2(const float *q, const uint16_t *k, const uint16_t *v,
                                    size_t stride, int64_t n_kv, int hd, float scale, float *scores,
                                    float *out) {
  HX_ASSERT(hd % 8 == 0 && hd > 0);
  float mx = -INFINITY;
  for (int64_t j = 0; j < n_kv; j++) {
    const uint16_t *kr = k + (size_t)j * stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= hd; i += 16) {
      a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kr + i))),
                           _mm256_loadu_ps(q + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kr + i + 8))),
                           _mm256_loadu_ps(q + i + 8), a1);
    }
    if (i < hd)
      a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kr + i))),
                           _mm256_loadu_ps(q + i), a0);
    const float sc = hsum256(_mm256_add_ps(a0, a1)) * scale;
    scores[j] = sc;
    mx = sc > mx ? sc : mx;
  }
  double sum = 0.0;
  for (int64_t j = 0; j < n_kv; j++) {
    scores[j] = expf(scores[j] - mx);
    sum += scores[j];
  }
  const float inv = (float)(1.0 / sum);
  for (int64_t j = 0; j < n_kv; j++)
    scores[j] *= inv;
  /* V: 32 columns per pass over the positions, accumulators in registers */
  for (int c = 0; c < hd; c += 32) {
    const int w = hd - c < 32 ? hd - c : 32;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    for (int64_t j = 0; j < n_kv; j++) {
      const uint16_t *vr = v + (size_t)j * stride + c;
      const __m256 pj = _mm256_broadcast_ss(scores + j);
      for (int u = 0; u < w / 8; u++)
        acc[u] = _mm256_fmadd_ps(
            pj, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vr + 8 * u))), acc[u]);
    }
    for (int u = 0; u < w / 8; u++)
      _mm256_storeu_ps(out + c + 8 * u, acc[u]);
  }
}

/* The G query heads of one KV head at once (AVX-512; hd % 16 == 0, hd ≤
 * 256, G ≤ CPU_ATTN_GROUP_MAX): each K and V row is converted from f16 once for
 * all G heads instead of once per head, and read once. Per head the same sums
 * as attn_head_f16_avx2 except the order inside a q·k dot product. */
AVX512 static void attn_group_f16_avx512(const float *q, int G, const uint16_t *k,
                                         const uint16_t *v, size_t stride, int64_t n_kv, int hd,
                                         float scale, float *scores, float *out) {
  HX_ASSERT(hd % 16 == 0 && hd > 0 && hd <= 256 && G >= 1 && G <= CPU_ATTN_GROUP_MAX);
  const int nu = hd / 16;
  float mx[CPU_ATTN_GROUP_MAX];
  for (int g = 0; g < G; g++)
    mx[g] = -INFINITY;
  for (int64_t j = 0; j < n_kv; j++) {
    const uint16_t *kr = k + (size_t)j * stride;
    __m512 kf[16];
    for (int u = 0; u < nu; u++)
      kf[u] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kr + 16 * u)));
    for (int g = 0; g < G; g++) {
      const float *qg = q + (size_t)g * hd;
      __m512 a = _mm512_mul_ps(kf[0], _mm512_loadu_ps(qg));
      for (int u = 1; u < nu; u++)
        a = _mm512_fmadd_ps(kf[u], _mm512_loadu_ps(qg + 16 * u), a);
      const float sc = _mm512_reduce_add_ps(a) * scale;
      scores[(size_t)g * n_kv + j] = sc;
      mx[g] = sc > mx[g] ? sc : mx[g];
    }
  }
  for (int g = 0; g < G; g++) {
    float *sg = scores + (size_t)g * n_kv;
    double sum = 0.0;
    for (int64_t j = 0; j < n_kv; j++) {
      sg[j] = expf(sg[j] - mx[g]);
      sum += sg[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n_kv; j++)
      sg[j] *= inv;
  }
  /* V: 32 columns per pass over the positions, G × 2 accumulators in registers */
  for (int c = 0; c < hd; c += 32) {
    const int two = hd - c >= 32;
    __m512 acc[CPU_ATTN_GROUP_MAX][2];
    for (int g = 0; g < G; g++)
      acc[g][0] = acc[g][1] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n_kv; j++) {
      const uint16_t *vr = v + (size_t)j * stride + c;
      const __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)vr));
      const __m512 v1 = two ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vr + 16))) : v0;
      for (int g = 0; g < G; g++) {
        const __m512 pj = _mm512_set1_ps(scores[(size_t)g * n_kv + j]);
        acc[g][0] = _mm512_fmadd_ps(pj, v0, acc[g][0]);
        acc[g][1] = _mm512_fmadd_ps(pj, v1, acc[g][1]);
      }
    }
    for (int g = 0; g < G; g++) {
      _mm512_storeu_ps(out + (size_t)g * hd + c, acc[g][0]);
      if (two)
        _mm512_storeu_ps(out + (size_t)g * hd + c + 16, acc[g][1]);
    }
  }
}

static int cpu_has_avx2(void);
static int cpu_has_avx512(void);

cpu_attn_f16_fn cpu_attn_f16_get(cpu_isa isa) {
  if (isa < CPU_ISA_AVX2 || !cpu_has_avx2())
    return NULL;
  return attn_head_f16_avx2;
}

cpu_attn_group_f16_fn cpu_attn_group_f16_get(cpu_isa isa) {
  if (isa < CPU_ISA_AVX512 || !cpu_has_avx512())
    return NULL;
  return attn_group_f16_avx512;
}

/* ---- activation quantization (AVX-512) ------------------------------------ */

/* Same bytes as quant.c's quantize_q8_0: amax / 127 as f16 (round to nearest
 * even), q = roundf(x / d) (half away from zero: truncate, then step away
 * from zero when the exact remainder is ≥ 0.5). */
AVX512 static inline __m512i round_half_away_avx512(__m512 p) {
  const __m512 t = _mm512_roundscale_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_sub_ps(p, t); /* exact */
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(frac), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 step = _mm512_or_ps(
      _mm512_set1_ps(1.0f), _mm512_and_ps(p, _mm512_castsi512_ps(_mm512_set1_epi32(INT32_MIN))));
  return _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, step));
}

AVX512 static void quant_q8_0_avx512(const float *x, void *dst, int64_t n) {
  block_q8_0 *y = dst;
  for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
    const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    const float d = amax / 127.f, id = d ? 1.f / d : 0.f;
    y[i].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 vid = _mm512_set1_ps(id);
    _mm_storeu_si128((__m128i *)y[i].qs,
                     _mm512_cvtepi32_epi8(round_half_away_avx512(_mm512_mul_ps(a, vid))));
    _mm_storeu_si128((__m128i *)(y[i].qs + 16),
                     _mm512_cvtepi32_epi8(round_half_away_avx512(_mm512_mul_ps(b, vid))));
  }
}

/* Same bytes as quant.c's quantize_q8_K: the scale from the first element of
 * largest magnitude (its sign included), q = nearest (half to even) of
 * x · (−127 / max) capped at 127, bsums of 16. */
AVX512 static void quant_q8_k_avx512(const float *x, void *dst, int64_t n) {
  block_q8_K *y = dst;
  for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
    __m512 m = _mm512_setzero_ps();
    for (int j = 0; j < QK_K; j += 16)
      m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
    const float amax = _mm512_reduce_max_ps(m);
    if (!amax) {
      memset(&y[i], 0, sizeof y[i]);
      continue;
    }
    float max = 0;
    for (int j = 0; j < QK_K; j += 16) {
      const __mmask16 eq = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + j)),
                                              _mm512_set1_ps(amax), _CMP_EQ_OQ);
      if (eq) {
        max = x[j + __builtin_ctz(eq)];
        break;
      }
    }
    const float iscale = -127.f / max;
    const __m512 vs = _mm512_set1_ps(iscale);
    for (int j = 0; j < QK_K; j += 16) {
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + j), vs)); /* RNE */
      v = _mm512_min_epi32(v, _mm512_set1_epi32(127));
      _mm_storeu_si128((__m128i *)(y[i].qs + j), _mm512_cvtepi32_epi8(v));
      y[i].bsums[j / 16] = (int16_t)_mm512_reduce_add_epi32(v);
    }
    y[i].d = 1 / iscale;
  }
}

cpu_quant_fn cpu_quant_get(quant_type dt, cpu_isa isa) {
  if (isa != CPU_ISA_AVX512 || !cpu_has_avx512())
    return NULL;
  return dt == QUANT_Q8_0 ? quant_q8_0_avx512 : dt == QUANT_Q8_K ? quant_q8_k_avx512 : NULL;
}

/* ---- f16 rows ----------------------------------------------------------- */

AVX2 static void f16_row_avx2(const uint16_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  for (; i < n; i++)
    dst[i] = quant_f16_to_f32(src[i]);
}

/* f32 → f16 with F16C: round to nearest even like quant_f32_to_f16 (the
 * FP16 library's method), and NaN → 0x7e00 with the sign as it does. */
AVX2 static void f32_to_f16_row_avx2(const float *src, uint16_t *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    if (!_mm256_testz_ps(nan, nan)) {
      const __m256i sign = _mm256_srli_epi32(
          _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(INT32_MIN)), 16);
      const __m256i qnan = _mm256_or_si256(sign, _mm256_set1_epi32(0x7e00));
      const __m256i keep = _mm256_cvtepu16_epi32(h);
      const __m256i fixed = _mm256_blendv_epi8(keep, qnan, _mm256_castps_si256(nan));
      h = _mm_packus_epi32(_mm256_castsi256_si128(fixed), _mm256_extracti128_si256(fixed, 1));
    }
    _mm_storeu_si128((__m128i *)(dst + i), h);
  }
  for (; i < n; i++)
    dst[i] = quant_f32_to_f16(src[i]);
}

/* e^x for 8 lanes (Cephes expf: n = round(x·log2 e), x − n·ln 2 in two
 * parts, degree-6 polynomial; about 1 ulp), inputs clamped to ±88.3 so that
 * silu's 1 + e^−g stays finite and its quotient goes to 0 as expf's does. */
AVX2 static inline __m256 exp8_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

AVX2 static void swiglu_row_avx2(const float *g, const float *u, float *out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 den =
        _mm256_add_ps(_mm256_set1_ps(1.0f), exp8_avx2(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; i++)
    out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- dispatch ----------------------------------------------------------- */

static int cpu_has_avx2(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int cpu_has_avx512(void) {
  __builtin_cpu_init();
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
}

cpu_isa cpu_isa_best(void) {
  cpu_isa best = CPU_ISA_SCALAR;
  if (cpu_has_avx512())
    best = CPU_ISA_AVX512;
  else if (cpu_has_avx2())
    best = CPU_ISA_AVX2;
  const char *cap = getenv("HX_CPU_ISA");
  if (cap && strcmp(cap, "scalar") == 0)
    best = CPU_ISA_SCALAR;
  else if (cap && strcmp(cap, "avx2") == 0 && best > CPU_ISA_AVX2)
    best = CPU_ISA_AVX2;
  return best;
}

const char *cpu_isa_name(cpu_isa isa) {
  switch (isa) {
  case CPU_ISA_SCALAR:
    return "scalar";
  case CPU_ISA_AVX2:
    return "avx2";
  case CPU_ISA_AVX512:
    return "avx512";
  default:
    return "?";
  }
}

cpu_dot_fn cpu_dot_get(quant_type t, cpu_isa isa) {
  if (isa == CPU_ISA_AVX2 && !cpu_has_avx2())
    return NULL;
  if (isa == CPU_ISA_AVX512 && !cpu_has_avx512())
    return NULL;
  switch (isa) {
  case CPU_ISA_SCALAR:
    switch (t) {
    case QUANT_F32:
      return dot_scalar_f32;
    case QUANT_F16:
      return dot_scalar_f16;
    case QUANT_BF16:
      return dot_scalar_bf16;
    case QUANT_Q8_0:
      return dot_scalar_q8_0;
    case QUANT_Q4_K:
      return dot_scalar_q4_k;
    case QUANT_Q5_K:
      return dot_scalar_q5_k;
    case QUANT_Q6_K:
      return dot_scalar_q6_k;
    default:
      return NULL;
    }
  case CPU_ISA_AVX2:
    switch (t) {
    case QUANT_F32:
      return dot_avx2_f32;
    case QUANT_F16:
      return dot_avx2_f16;
    case QUANT_BF16:
      return dot_avx2_bf16;
    case QUANT_Q8_0:
      return dot_avx2_q8_0;
    case QUANT_Q4_K:
      return dot_avx2_q4_k;
    case QUANT_Q5_K:
      return dot_avx2_q5_k;
    case QUANT_Q6_K:
      return dot_avx2_q6_k;
    default:
      return NULL;
    }
  case CPU_ISA_AVX512:
    switch (t) {
    case QUANT_F32:
      return dot_avx512_f32;
    case QUANT_F16:
      return dot_avx512_f16;
    case QUANT_BF16:
      return dot_avx512_bf16;
    case QUANT_Q8_0:
      return dot_avx512_q8_0;
    case QUANT_Q4_K:
      return dot_avx512_q4_k;
    case QUANT_Q5_K:
      return dot_avx512_q5_k;
    case QUANT_Q6_K:
      return dot_avx512_q6_k;
    default:
      return NULL;
    }
  default:
    return NULL;
  }
}

cpu_dot4_fn cpu_dot4_get(quant_type t, cpu_isa isa) {
  if (isa != CPU_ISA_AVX512 || !cpu_has_avx512())
    return NULL;
  return t == QUANT_Q4_K   ? dot4_avx512_q4_k
         : t == QUANT_Q5_K ? dot4_avx512_q5_k
         : t == QUANT_Q8_0 ? dot4_avx512_q8_0
                           : NULL;
}

cpu_dot_fn cpu_dot_best(quant_type t) {
  for (int isa = (int)cpu_isa_best(); isa >= 0; isa--) {
    cpu_dot_fn f = cpu_dot_get(t, (cpu_isa)isa);
    if (f)
      return f;
  }
  return NULL;
}

static int have_avx2_rows(void) {
  static _Atomic int have = -1; /* every thread computes the same value */
  int h = atomic_load_explicit(&have, memory_order_relaxed);
  if (h < 0) {
    h = cpu_has_avx2() && cpu_isa_best() != CPU_ISA_SCALAR;
    atomic_store_explicit(&have, h, memory_order_relaxed);
  }
  return h;
}

void cpu_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n) {
  if (have_avx2_rows()) {
    f32_to_f16_row_avx2(src, dst, n);
    return;
  }
  for (int64_t i = 0; i < n; i++)
    dst[i] = quant_f32_to_f16(src[i]);
}

void cpu_swiglu_row(const float *g, const float *u, float *out, int64_t n) {
  if (have_avx2_rows()) {
    swiglu_row_avx2(g, u, out, n);
    return;
  }
  for (int64_t i = 0; i < n; i++)
    out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void cpu_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n) {
  static _Atomic int have = -1; /* every thread computes the same value */
  int h = atomic_load_explicit(&have, memory_order_relaxed);
  if (h < 0) {
    h = cpu_has_avx2() && cpu_isa_best() != CPU_ISA_SCALAR;
    atomic_store_explicit(&have, h, memory_order_relaxed);
  }
  if (h) {
    f16_row_avx2(src, dst, n);
    return;
  }
  for (int64_t i = 0; i < n; i++)
    dst[i] = quant_f16_to_f32(src[i]);
}
