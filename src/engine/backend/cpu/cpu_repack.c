/* cpu_repack.c — row-interleaved copies of K-quant and Q8_0 weights for the AVX-512 VNNI
 * mat-vec and mat-mat kernels of the CPU backend.
 *
 * A Q4_K matrix is stored row after row, 144 bytes per 256-element
 * super-block. One dot product per row cannot share work between rows, and
 * its nibble unpacking and per-sub-block scale shuffles cost more than the
 * multiplies. The repacked layout puts 8 rows' super-block i side by side
 * (blk_q4_kx8, 1184 bytes for 8 × 256 weights, +2.8% over the original) so
 * that one 512-bit register holds 4 weights of each of 8 rows × 2 column
 * groups: an 8-byte broadcast of the activations then feeds all 16 int32
 * lanes of a VPDPBUSD, and the 6-bit sub-block scales of all 8 rows are
 * applied with one multiply.
 *
 * Lane (r, p) = int32 lane 2r + p of a 512-bit register: row r of the group,
 * column half p. Sub-block j (32 columns) is 4 steps s of 8 columns; in step s
 * lane (r, p) holds row r's columns 32j + 8s + 4p .. +3 and is multiplied with
 * the same 4 activation bytes (the broadcast 8 bytes x[32j + 8s .. +7] give
 * half p its 4). The packed bytes of sub-block j are two 64-byte chunks:
 * chunk c byte 4(2r+p)+b holds step 2c in its low nibble and step 2c+1 in its
 * high nibble (column 32j + 8s + 4p + b).
 *
 * The repacked copy is made once per weight (cpu_backend.c, first use) into
 * memory owned by the backend; the original rows stay where they are for the
 * rows past the last whole group and for get_rows. Results are the same
 * integer sums as the scalar reference (quant.c), scaled in f32 per
 * super-block: they differ from it only by float summation order. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "engine/backend/cpu/cpu_impl.h"

/* 8 rows × one super-block. Every field is a multiple of 32 bytes, so a
 * 32-byte aligned base keeps every 256-bit half of a load inside a line. */
typedef struct blk_q4_kx8 {
  uint16_t dm[16];    /* f16: dm[2r] = d of row r, dm[2r + 1] = dmin */
  uint8_t sc[8][8];   /* [sub-block j][row r] 6-bit scales */
  uint8_t mn[8][8];   /* [row r][sub-block j] 6-bit mins */
  uint8_t qs[8][128]; /* [sub-block j]: two 64-byte chunks, see above */
} blk_q4_kx8;

_Static_assert(sizeof(blk_q4_kx8) == 1184, "blk_q4_kx8 is packed");

/* Q5_K: the Q4_K layout of the low 4 bits, scales and mins, plus the fifth
 * bits: qh[m] byte 4(2r+p)+b, bit 4(j % 2) + s, is the high bit of the weight
 * whose nibble is byte 4(2r+p)+b of step s of sub-block j = 2m + j % 2 (the
 * kernels shift it to bit 4 and OR it in). 1440 bytes (+2.3% over 8 × 176). */
typedef struct blk_q5_kx8 {
  uint8_t qh[4][64]; /* [sub-block pair m]; first, so a block is read in address order */
  blk_q4_kx8 lo;
} blk_q5_kx8;

_Static_assert(sizeof(blk_q5_kx8) == 1440, "blk_q5_kx8 is packed");

/* Q6_K, 8 rows × one super-block, same lane scheme with 16-column
 * sub-blocks k of 2 steps: ql of sub-block k, byte 4(2r+p)+b holds the low 4 bits of
 * column 16k + 4p + b (step 0, low nibble) and 16k + 8 + 4p + b (step 1, high
 * nibble); qh of sub-block pair m, byte 4(2r+p)+b, holds the high 2 bits of steps (2m, 0),
 * (2m, 1), (2m+1, 0), (2m+1, 1) in bits 0-1, 2-3, 4-5, 6-7. 1696 bytes
 * (+1% over 8 × 210). */
typedef struct blk_q6_kx8 {
  uint16_t d[16];   /* f16: d of row r in lanes 2r and 2r + 1 */
  int8_t sc[16][8]; /* [sub-block k][row r] scales */
  struct {
    uint8_t qh[64];    /* sub-blocks 2m and 2m + 1 */
    uint8_t ql[2][64]; /* sub-block 2m + k */
  } q[8];              /* [sub-block pair m], in the order the kernels read */
} blk_q6_kx8;

_Static_assert(sizeof(blk_q6_kx8) == 1696, "blk_q6_kx8 is packed");

/* Q8_0, 8 rows × 256 columns (8 blocks of 32; rows need n_cols % 256 == 0):
 * block k is 4 steps of 8 columns, step s a 64-byte run whose byte
 * 4(2r+p)+b is row r's column 32k + 8s + 4p + b, stored as q + 128 (u8 for
 * VPDPBUSD; the kernels subtract 128 · the activations' sum). 2176 bytes,
 * the same as 8 × 8 × 34. */
typedef struct blk_q8_0x8 {
  uint16_t d[8][8];     /* f16 [block k][row r] */
  uint8_t qs[8][4][64]; /* [block k][step s] */
} blk_q8_0x8;

_Static_assert(sizeof(blk_q8_0x8) == 2176, "blk_q8_0x8 is packed");

/* The 8 scales and 8 mins of a Q4_K super-block (6 bits each), as quant.c's
 * get_scale_min_k4. */
static void q4_k_scales(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
  for (int j = 0; j < 8; j++) {
    if (j < 4) {
      sc[j] = s[j] & 63;
      mn[j] = s[j + 4] & 63;
    } else {
      sc[j] = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
      mn[j] = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
  }
}

size_t cpu_repack_bytes(quant_type t, int64_t n_rows, int64_t n_cols) {
  const size_t blk = t == QUANT_Q4_K   ? sizeof(blk_q4_kx8)
                     : t == QUANT_Q5_K ? sizeof(blk_q5_kx8)
                     : t == QUANT_Q6_K ? sizeof(blk_q6_kx8)
                     : t == QUANT_Q8_0 ? sizeof(blk_q8_0x8)
                                       : 0;
  if (blk == 0 || n_rows < 8 || n_cols <= 0 || n_cols % QK_K != 0)
    return 0;
  size_t n;
  if (hx_size_mul((size_t)(n_rows / 8), (size_t)(n_cols / QK_K), &n) || hx_size_mul(n, blk, &n))
    return 0;
  return n;
}

static inline uint64_t load8(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* Q6_K element e = 128n + 32q + l (half n, quarter q, l < 32) has its low 4
 * bits in nibble q / 2 of ql[64n + 32(q % 2) + l] and its high 2 bits in
 * bits 2q, 2q + 1 of qh[32n + l]. Sub-block k lies in half k / 8, quarter
 * (k % 8) / 2, l = 16(k % 2) .. +15; pair m = (2m, 2m + 1) is l = 0 .. 31 of
 * quarter m % 4. Each output byte run of 8 is built from 8-byte words. */
static void repack_q6_k(const void *w, size_t row_bytes, int64_t n_cols, int64_t g0, int64_t g1,
                        void *dst) {
  const uint64_t m4 = 0x0F0F0F0F0F0F0F0Full, m2 = 0x0303030303030303ull;
  const int64_t nb = n_cols / QK_K;
  blk_q6_kx8 *out = dst;
  for (int64_t g = g0; g < g1; g++)
    for (int64_t i = 0; i < nb; i++) {
      blk_q6_kx8 *o = out + g * nb + i;
      for (int r = 0; r < 8; r++) {
        const block_q6_K *b =
            (const block_q6_K *)((const char *)w + (size_t)(8 * g + r) * row_bytes) + i;
        o->d[2 * r] = o->d[2 * r + 1] = b->d;
        for (int k = 0; k < 16; k++) {
          const int n = k / 8, q = (k % 8) / 2;
          const uint8_t *src = b->ql + 64 * n + 32 * (q % 2) + 16 * (k % 2);
          const int sh = 4 * (q / 2);
          const uint64_t v = ((load8(src) >> sh) & m4) | (((load8(src + 8) >> sh) & m4) << 4);
          o->sc[k][r] = b->scales[k];
          memcpy(&o->q[k / 2].ql[k % 2][8 * r], &v, 8);
        }
        for (int m = 0; m < 8; m++) {
          const uint8_t *src = b->qh + 32 * (m / 4);
          const int sh = 2 * (m % 4);
          const uint64_t v = ((load8(src) >> sh) & m2) | (((load8(src + 8) >> sh) & m2) << 2) |
                             (((load8(src + 16) >> sh) & m2) << 4) |
                             (((load8(src + 24) >> sh) & m2) << 6);
          memcpy(&o->q[m].qh[8 * r], &v, 8);
        }
      }
    }
}

static void repack_q8_0(const void *w, size_t row_bytes, int64_t n_cols, int64_t g0, int64_t g1,
                        void *dst) {
  const int64_t nb = n_cols / 256;
  blk_q8_0x8 *out = dst;
  for (int64_t g = g0; g < g1; g++)
    for (int64_t i = 0; i < nb; i++) {
      blk_q8_0x8 *o = out + g * nb + i;
      for (int r = 0; r < 8; r++) {
        const block_q8_0 *b =
            (const block_q8_0 *)((const char *)w + (size_t)(8 * g + r) * row_bytes) + 8 * i;
        for (int k = 0; k < 8; k++) {
          o->d[k][r] = b[k].d;
          for (int s = 0; s < 4; s++) { /* columns 8s .. 8s + 7 → bytes 8r .. 8r + 7 */
            const uint64_t v = load8((const uint8_t *)b[k].qs + 8 * s) ^ 0x8080808080808080ull;
            memcpy(&o->qs[k][s][8 * r], &v, 8); /* q + 128 = q ^ 0x80 as u8 */
          }
        }
      }
    }
}

/* Row r of a group's Q4_K / Q5_K super-block into o: d, dmin, the unpacked
 * scales and mins, and the nibbles (low 4 bits). */
static void repack_k_lo(blk_q4_kx8 *o, int r, uint16_t d, uint16_t dmin, const uint8_t *scales,
                        const uint8_t *qs) {
  uint8_t sc[8], mn[8];
  q4_k_scales(scales, sc, mn);
  o->dm[2 * r] = d;
  o->dm[2 * r + 1] = dmin;
  for (int j = 0; j < 8; j++) {
    o->sc[j][r] = sc[j];
    o->mn[r][j] = mn[j];
  }
  /* Sub-block j is nibble j % 2 of source bytes 32(j / 2) .. +31; its column
   * c = 8s + 4p + b goes to chunk s / 2, byte 4(2r + p) + b, nibble s % 2. So
   * chunk h bytes 8r .. 8r + 7 take columns 16h .. +7 (low nibbles) and 16h +
   * 8 .. +7 (high nibbles). */
  for (int j = 0; j < 8; j++) {
    const uint8_t *src = qs + 32 * (j / 2);
    const int sh = 4 * (j % 2);
    for (int h = 0; h < 2; h++) {
      uint64_t lo, hi;
      memcpy(&lo, src + 16 * h, 8);
      memcpy(&hi, src + 16 * h + 8, 8);
      const uint64_t v =
          ((lo >> sh) & 0x0F0F0F0F0F0F0F0Full) | (((hi >> sh) & 0x0F0F0F0F0F0F0F0Full) << 4);
      memcpy(&o->qs[j][64 * h + 8 * r], &v, 8);
    }
  }
}

void cpu_repack_rows(quant_type t, const void *w, size_t row_bytes, int64_t n_cols, int64_t g0,
                     int64_t g1, void *dst) {
  HX_ASSERT((t == QUANT_Q4_K || t == QUANT_Q5_K || t == QUANT_Q6_K || t == QUANT_Q8_0) &&
            n_cols % QK_K == 0 && g0 >= 0 && g0 <= g1);
  if (t == QUANT_Q6_K) {
    repack_q6_k(w, row_bytes, n_cols, g0, g1, dst);
    return;
  }
  if (t == QUANT_Q8_0) {
    repack_q8_0(w, row_bytes, n_cols, g0, g1, dst);
    return;
  }
  const int64_t nb = n_cols / QK_K;
  for (int64_t g = g0; g < g1; g++)
    for (int64_t i = 0; i < nb; i++)
      for (int r = 0; r < 8; r++) {
        const char *row = (const char *)w + (size_t)(8 * g + r) * row_bytes;
        if (t == QUANT_Q4_K) {
          const block_q4_K *src = (const block_q4_K *)row + i;
          repack_k_lo((blk_q4_kx8 *)dst + g * nb + i, r, src->d, src->dmin, src->scales, src->qs);
          continue;
        }
        /* Q5_K: weight l of sub-block j has its fifth bit in bit j of qh[l];
           column c = 8s + 4p + b of the sub-block is bit 4(2r+p)+b of step s */
        const block_q5_K *src = (const block_q5_K *)row + i;
        blk_q5_kx8 *o = (blk_q5_kx8 *)dst + g * nb + i;
        repack_k_lo(&o->lo, r, src->d, src->dmin, src->scales, src->qs);
        for (int m = 0; m < 4; m++)
          for (int p = 0; p < 2; p++)
            for (int bb = 0; bb < 4; bb++) {
              uint8_t v = 0;
              for (int j = 2 * m; j < 2 * m + 2; j++)
                for (int st = 0; st < 4; st++)
                  v |= (uint8_t)(((src->qh[8 * st + 4 * p + bb] >> j) & 1) << (4 * (j % 2) + st));
              o->qh[m][4 * (2 * r + p) + bb] = v;
            }
      }
}

/* ---- AVX-512 VNNI + VBMI kernels ---------------------------------------- */

#define AVX512R                                                                                    \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,f16c,fma")))

/* Constant vectors of the kernels. */
typedef struct q4kx8_consts {
  __m512i m4;      /* 0x0F bytes */
  __m512i sc_idx;  /* vpermb index: byte 4(2r+p) ← sc[0][r]; +8 per sub-block */
  __m512i mn_idx;  /* byte 4(2r+p) ← mn[r][p], byte 4(2r+p)+2 ← mn[r][p+2]; +4 for m = 1 */
  __m128i bs_perm; /* i16 order 0,2,1,3,4,6,5,7 */
} q4kx8_consts;

AVX512R static inline q4kx8_consts q4kx8_consts_make(void) {
  uint8_t sci[64] = {0}, mni[64] = {0};
  for (int r = 0; r < 8; r++)
    for (int p = 0; p < 2; p++) {
      const int lane = 4 * (2 * r + p);
      sci[lane] = (uint8_t)r;
      mni[lane] = (uint8_t)(8 * r + p);
      mni[lane + 2] = (uint8_t)(8 * r + p + 2);
    }
  q4kx8_consts k;
  k.m4 = _mm512_set1_epi8(0x0F);
  k.sc_idx = _mm512_loadu_si512((const void *)sci);
  k.mn_idx = _mm512_loadu_si512((const void *)mni);
  k.bs_perm = _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
  return k;
}

#define SC_MASK 0x1111111111111111ull /* low byte of every int32 lane */
#define MN_MASK 0x5555555555555555ull /* low byte of every int16 lane */

/* Lane (r, p): Σ over the sub-blocks j ≡ p (mod 2) of mn[r][j] · (sum of the
 * 32 activations of sub-block j). */
AVX512R static inline __m512i q4kx8_mins(const q4kx8_consts *k, __m512i mn_p0, __m512i mn_p1,
                                         const block_q8_K *x) {
  const __m256i bs = _mm256_loadu_si256((const __m256i *)x->bsums);
  /* sums of 32 (|.| ≤ 32·128 fits int16), reordered 0,2,1,3,4,6,5,7 */
  __m128i b32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
  b32 = _mm_shuffle_epi8(b32, k->bs_perm);
  const __m512i b0 = _mm512_broadcastq_epi64(b32);
  const __m512i b1 = _mm512_broadcastq_epi64(_mm_unpackhi_epi64(b32, b32));
  return _mm512_add_epi32(_mm512_madd_epi16(mn_p0, b0), _mm512_madd_epi16(mn_p1, b1));
}

/* Folds lane (r, p) sums into lane (r, 0) = Σ_p sumi, (r, 1) = Σ_p summ, and
 * scales them by d (even lanes) / dmin (odd lanes) and the activation scale. */
AVX512R static inline __m512 q4kx8_finish(__m512i sumi, __m512i summ, __m512 dm, float xd,
                                          __m512 acc) {
  const __m512i v = _mm512_mask_blend_epi32(0xAAAA, sumi, summ);
  const __m512i u = _mm512_shuffle_epi32(_mm512_mask_blend_epi32(0xAAAA, summ, sumi), 0xB1);
  const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(v, u)), dm);
  return _mm512_fmadd_ps(t, _mm512_set1_ps(xd), acc);
}

/* out[r] = acc(r, 0) − acc(r, 1) for the 8 rows. */
AVX512R static inline void q4kx8_store(__m512 acc, float out[8]) {
  const __m512 diff = _mm512_sub_ps(acc, _mm512_permute_ps(acc, 0xB1));
  _mm256_storeu_ps(out, _mm512_castps512_ps256(_mm512_maskz_compress_ps(0x5555, diff)));
}

AVX512R static inline __m512i bcast8(const int8_t *p) {
  return _mm512_broadcastq_epi64(_mm_loadl_epi64((const __m128i *)p));
}

/* T activation rows (x, x + x_stride, ...) against one group of 8 repacked
 * Q4_K rows (FIVE = 0) or Q5_K rows (FIVE = 1: 16 is ORed into the nibbles
 * under the qh byte masks): out[t][r]. The weights are unpacked once for all
 * T rows. T and FIVE are constants at each call, so each use is its own
 * specialization. */
__attribute__((always_inline)) AVX512R static inline void kx8_rows(const void *wv, const void *xv,
                                                                   size_t x_stride, int64_t n,
                                                                   int T, int FIVE,
                                                                   float out[][8]) {
  const size_t blk_bytes = FIVE ? sizeof(blk_q5_kx8) : sizeof(blk_q4_kx8);
  const int64_t nb = n / QK_K;
  const q4kx8_consts k = q4kx8_consts_make();
  const __m512i eight = _mm512_set1_epi8(8), four = _mm512_set1_epi8(4);
  const __m512i sixteen = _mm512_set1_epi8(16);
  const __m512i mn_idx1 = _mm512_add_epi8(k.mn_idx, four);
  const block_q8_K *xs[4];
  for (int t = 0; t < T; t++)
    xs[t] = (const block_q8_K *)((const char *)xv + (size_t)t * x_stride);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  for (int64_t i = 0; i < nb; i++) {
    const char *blk = (const char *)wv + (size_t)i * blk_bytes;
    const blk_q4_kx8 *b = FIVE ? &((const blk_q5_kx8 *)blk)->lo : (const blk_q4_kx8 *)blk;
    const uint8_t *qh = FIVE ? ((const blk_q5_kx8 *)blk)->qh[0] : NULL;
    const __m512i mnv = _mm512_loadu_si512((const void *)b->mn);
    const __m512i mn0 = _mm512_maskz_permutexvar_epi8(MN_MASK, k.mn_idx, mnv);
    const __m512i mn1 = _mm512_maskz_permutexvar_epi8(MN_MASK, mn_idx1, mnv);
    const __m512i scv = _mm512_loadu_si512((const void *)b->sc);
    __m512i idx = k.sc_idx;
    __m512i sumi[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                       _mm512_setzero_si512()};
    for (int j = 0; j < 8; j++) {
      const __m512i ca = _mm512_loadu_si512((const void *)b->qs[j]);
      const __m512i cb = _mm512_loadu_si512((const void *)(b->qs[j] + 64));
      __m512i w0 = _mm512_and_si512(ca, k.m4),
              w1 = _mm512_and_si512(_mm512_srli_epi16(ca, 4), k.m4);
      __m512i w2 = _mm512_and_si512(cb, k.m4),
              w3 = _mm512_and_si512(_mm512_srli_epi16(cb, 4), k.m4);
      if (FIVE) { /* step s's bits to bit 4 + s of each byte, then bit 4 ORed in
                     (w | (h & 16): ternary-logic 0xF8); byte-mask moves from k
                     registers loaded from memory ran at half the speed */
        const __m512i hv = _mm512_loadu_si512((const void *)(qh + 64 * (j / 2)));
        const __m512i h = j % 2 ? hv : _mm512_slli_epi16(hv, 4);
        w0 = _mm512_ternarylogic_epi32(w0, h, sixteen, 0xF8);
        w1 = _mm512_ternarylogic_epi32(w1, _mm512_srli_epi16(h, 1), sixteen, 0xF8);
        w2 = _mm512_ternarylogic_epi32(w2, _mm512_srli_epi16(h, 2), sixteen, 0xF8);
        w3 = _mm512_ternarylogic_epi32(w3, _mm512_srli_epi16(h, 3), sixteen, 0xF8);
      }
      const __m512i sc = _mm512_maskz_permutexvar_epi8(SC_MASK, idx, scv);
      idx = _mm512_add_epi8(idx, eight);
#pragma GCC unroll 4
      for (int t = 0; t < T; t++) {
        /* u4 (u5) × s8, 16 products per lane: |.| ≤ 16·31·128 */
        const int8_t *q8 = xs[t][i].qs + 32 * j;
        __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, bcast8(q8));
        d = _mm512_dpbusd_epi32(d, w1, bcast8(q8 + 8));
        d = _mm512_dpbusd_epi32(d, w2, bcast8(q8 + 16));
        d = _mm512_dpbusd_epi32(d, w3, bcast8(q8 + 24));
        sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(d, sc));
      }
    }
    const __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b->dm));
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
      acc[t] = q4kx8_finish(sumi[t], q4kx8_mins(&k, mn0, mn1, xs[t] + i), dm, xs[t][i].d, acc[t]);
  }
  for (int t = 0; t < T; t++)
    q4kx8_store(acc[t], out[t]);
}

AVX512R static void gemv_q4_kx8(const void *wv, const void *xv, int64_t n, float out[8]) {
  kx8_rows(wv, xv, 0, n, 1, 0, (float(*)[8])out);
}

AVX512R static void gemm4_q4_kx8(const void *wv, const void *xv, size_t x_stride, int64_t n,
                                 float out[4][8]) {
  kx8_rows(wv, xv, x_stride, n, 4, 0, out);
}

AVX512R static void gemv_q5_kx8(const void *wv, const void *xv, int64_t n, float out[8]) {
  kx8_rows(wv, xv, 0, n, 1, 1, (float(*)[8])out);
}

AVX512R static void gemm4_q5_kx8(const void *wv, const void *xv, size_t x_stride, int64_t n,
                                 float out[4][8]) {
  kx8_rows(wv, xv, x_stride, n, 4, 1, out);
}

/* ---- Q6_K ---- */

#define Q6_SC_MASK 0x8888888888888888ull /* top byte of every int32 lane */

typedef struct q6kx8_consts {
  __m512i m4, m30; /* 0x0F, 0x30 bytes */
  __m512i sc_idx;  /* vpermt2b index: byte 4(2r+p)+3 ← sc[0][r]; +8 per sub-block */
} q6kx8_consts;

AVX512R static inline q6kx8_consts q6kx8_consts_make(void) {
  uint8_t sci[64] = {0};
  for (int r = 0; r < 8; r++)
    for (int p = 0; p < 2; p++)
      sci[4 * (2 * r + p) + 3] = (uint8_t)r;
  q6kx8_consts k;
  k.m4 = _mm512_set1_epi8(0x0F);
  k.m30 = _mm512_set1_epi8(0x30);
  k.sc_idx = _mm512_loadu_si512((const void *)sci);
  return k;
}

/* The 6-bit weights of sub-blocks 2m, 2m + 1: w[0], w[1] steps of 2m, w[2],
 * w[3] of 2m + 1 (unsigned 0..63). (a & 0x0F) | h is one ternary-logic op. */
AVX512R static inline void q6kx8_unpack(const q6kx8_consts *k, const blk_q6_kx8 *b, int m,
                                        __m512i w[4]) {
  const __m512i h = _mm512_loadu_si512((const void *)b->q[m].qh);
  const __m512i l0 = _mm512_loadu_si512((const void *)b->q[m].ql[0]);
  const __m512i l1 = _mm512_loadu_si512((const void *)b->q[m].ql[1]);
  const __m512i h0 = _mm512_and_si512(_mm512_slli_epi16(h, 4), k->m30);
  const __m512i h1 = _mm512_and_si512(_mm512_slli_epi16(h, 2), k->m30);
  const __m512i h2 = _mm512_and_si512(h, k->m30);
  const __m512i h3 = _mm512_and_si512(_mm512_srli_epi16(h, 2), k->m30);
  w[0] = _mm512_ternarylogic_epi32(l0, k->m4, h0, 0xEA);
  w[1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(l0, 4), k->m4, h1, 0xEA);
  w[2] = _mm512_ternarylogic_epi32(l1, k->m4, h2, 0xEA);
  w[3] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(l1, 4), k->m4, h3, 0xEA);
}

/* Lane k = −32 · (sum of the 16 activations of sub-block k): the q − 32
 * offset, moved to lanes (r, 0) of sub-block k's sum before its scale. */
AVX512R static inline __m512i q6kx8_corr(const block_q8_K *x) {
  const __m512i bs = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)x->bsums));
  return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(bs, 5));
}

/* Sub-blocks 2m, 2m + 1 of one activation row, scaled: Σ lanes (r, p). */
AVX512R static inline __m512i q6kx8_pair(const __m512i w[4], const int8_t *q8, __m512i corr,
                                         __m512i k0, __m512i k1, __m512i s0, __m512i s1) {
  /* u6 × s8, 8 products per lane plus the offset: |.| ≤ 8·63·128 + 32·16·128 */
  __m512i d0 =
      _mm512_dpbusd_epi32(_mm512_maskz_permutexvar_epi32(0x5555, k0, corr), w[0], bcast8(q8));
  d0 = _mm512_dpbusd_epi32(d0, w[1], bcast8(q8 + 8));
  __m512i d1 =
      _mm512_dpbusd_epi32(_mm512_maskz_permutexvar_epi32(0x5555, k1, corr), w[2], bcast8(q8 + 16));
  d1 = _mm512_dpbusd_epi32(d1, w[3], bcast8(q8 + 24));
  return _mm512_add_epi32(_mm512_mullo_epi32(d0, s0), _mm512_mullo_epi32(d1, s1));
}

/* The int8 scales of sub-block k of all 8 rows, sign-extended into int32
 * lanes (r, p). */
AVX512R static inline __m512i q6kx8_scale(__m512i idx, __m512i sc_lo, __m512i sc_hi) {
  return _mm512_srai_epi32(_mm512_maskz_permutex2var_epi8(Q6_SC_MASK, sc_lo, idx, sc_hi), 24);
}

/* out[r] = acc(r, 0) + acc(r, 1). */
AVX512R static inline void q6kx8_store(__m512 acc, float out[8]) {
  const __m512 sum = _mm512_add_ps(acc, _mm512_permute_ps(acc, 0xB1));
  _mm256_storeu_ps(out, _mm512_castps512_ps256(_mm512_maskz_compress_ps(0x5555, sum)));
}

AVX512R static void gemv_q6_kx8(const void *wv, const void *xv, int64_t n, float out[8]) {
  const blk_q6_kx8 *w = wv;
  const block_q8_K *x = xv;
  const int64_t nb = n / QK_K;
  const q6kx8_consts k = q6kx8_consts_make();
  const __m512i eight = _mm512_set1_epi8(8);
  const __m512i one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; i++) {
    const blk_q6_kx8 *b = w + i;
    const __m512i corr = q6kx8_corr(x + i);
    __m512i k0 = _mm512_setzero_si512();
    const __m512i sc_lo = _mm512_loadu_si512((const void *)b->sc[0]);
    const __m512i sc_hi = _mm512_loadu_si512((const void *)b->sc[8]);
    __m512i idx = k.sc_idx, sumi = _mm512_setzero_si512();
    for (int m = 0; m < 8; m++) {
      __m512i wq[4];
      q6kx8_unpack(&k, b, m, wq);
      const __m512i s0 = q6kx8_scale(idx, sc_lo, sc_hi);
      idx = _mm512_add_epi8(idx, eight);
      const __m512i s1 = q6kx8_scale(idx, sc_lo, sc_hi);
      idx = _mm512_add_epi8(idx, eight);
      const __m512i k1 = _mm512_add_epi32(k0, one);
      sumi = _mm512_add_epi32(sumi, q6kx8_pair(wq, x[i].qs + 32 * m, corr, k0, k1, s0, s1));
      k0 = _mm512_add_epi32(k0, two);
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b->d));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sumi), d), _mm512_set1_ps(x[i].d), acc);
  }
  q6kx8_store(acc, out);
}

AVX512R static void gemm4_q6_kx8(const void *wv, const void *xv, size_t x_stride, int64_t n,
                                 float out[4][8]) {
  const blk_q6_kx8 *w = wv;
  const int64_t nb = n / QK_K;
  const q6kx8_consts k = q6kx8_consts_make();
  const __m512i eight = _mm512_set1_epi8(8);
  const block_q8_K *xs[4];
  for (int t = 0; t < 4; t++)
    xs[t] = (const block_q8_K *)((const char *)xv + (size_t)t * x_stride);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  const __m512i one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2);
  for (int64_t i = 0; i < nb; i++) {
    const blk_q6_kx8 *b = w + i;
    __m512i corr[4], k0 = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++)
      corr[t] = q6kx8_corr(xs[t] + i);
    const __m512i sc_lo = _mm512_loadu_si512((const void *)b->sc[0]);
    const __m512i sc_hi = _mm512_loadu_si512((const void *)b->sc[8]);
    __m512i idx = k.sc_idx;
    __m512i sumi[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                       _mm512_setzero_si512()};
    for (int m = 0; m < 8; m++) {
      __m512i wq[4];
      q6kx8_unpack(&k, b, m, wq);
      const __m512i s0 = q6kx8_scale(idx, sc_lo, sc_hi);
      idx = _mm512_add_epi8(idx, eight);
      const __m512i s1 = q6kx8_scale(idx, sc_lo, sc_hi);
      idx = _mm512_add_epi8(idx, eight);
      const __m512i k1 = _mm512_add_epi32(k0, one);
#pragma GCC unroll 4
      for (int t = 0; t < 4; t++)
        sumi[t] = _mm512_add_epi32(sumi[t],
                                   q6kx8_pair(wq, xs[t][i].qs + 32 * m, corr[t], k0, k1, s0, s1));
      k0 = _mm512_add_epi32(k0, two);
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b->d));
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++)
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sumi[t]), d),
                               _mm512_set1_ps(xs[t][i].d), acc[t]);
  }
  for (int t = 0; t < 4; t++)
    q6kx8_store(acc[t], out[t]);
}

/* ---- Q8_0 ---- */

/* Lanes (r, 0) = −128 · (sum of the 32 activations of block x), lanes
 * (r, 1) = 0: removes the +128 of the stored weights. */
AVX512R static inline __m512i q80x8_corr(const block_q8_0 *x) {
  const __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x->qs),
                                     _mm256_set1_epi8((char)0x80)); /* x + 128 as u8 */
  const __m256i sad = _mm256_sad_epu8(v, _mm256_setzero_si256());
  __m128i t = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
  t = _mm_add_epi64(t, _mm_unpackhi_epi64(t, t));
  const int sum = _mm_cvtsi128_si32(t) - 32 * 128;
  return _mm512_maskz_set1_epi32(0x5555, -128 * sum);
}

/* d of block k of the 8 rows in lanes (r, p), f32. */
AVX512R static inline __m512 q80x8_d(const blk_q8_0x8 *b, int k, __m512i dup_idx) {
  const __m256 d8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)b->d[k]));
  return _mm512_permutexvar_ps(dup_idx, _mm512_castps256_ps512(d8));
}

AVX512R static inline __m512i q80x8_dup_idx(void) {
  return _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
}

AVX512R static void gemv_q8_0x8(const void *wv, const void *xv, int64_t n, float out[8]) {
  const blk_q8_0x8 *w = wv;
  const block_q8_0 *x = xv;
  const int64_t nb = n / 256;
  const __m512i dup = q80x8_dup_idx();
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; i++)
    for (int k = 0; k < 8; k++) {
      const blk_q8_0x8 *b = w + i;
      const block_q8_0 *xb = x + 8 * i + k;
      __m512i d = q80x8_corr(xb);
      for (int s = 0; s < 4; s++) /* (q + 128) u8 × s8, 16 products per lane */
        d = _mm512_dpbusd_epi32(d, _mm512_loadu_si512((const void *)b->qs[k][s]),
                                bcast8(xb->qs + 8 * s));
      const __m512 dd = _mm512_mul_ps(q80x8_d(b, k, dup), _mm512_set1_ps(_cvtsh_ss(xb->d)));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), dd, acc);
    }
  q6kx8_store(acc, out); /* out[r] = acc(r, 0) + acc(r, 1) */
}

AVX512R static void gemm4_q8_0x8(const void *wv, const void *xv, size_t x_stride, int64_t n,
                                 float out[4][8]) {
  const blk_q8_0x8 *w = wv;
  const int64_t nb = n / 256;
  const __m512i dup = q80x8_dup_idx();
  const block_q8_0 *xs[4];
  for (int t = 0; t < 4; t++)
    xs[t] = (const block_q8_0 *)((const char *)xv + (size_t)t * x_stride);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  for (int64_t i = 0; i < nb; i++)
    for (int k = 0; k < 8; k++) {
      const blk_q8_0x8 *b = w + i;
      __m512i wq[4];
      for (int s = 0; s < 4; s++)
        wq[s] = _mm512_loadu_si512((const void *)b->qs[k][s]);
      const __m512 dw = q80x8_d(b, k, dup);
#pragma GCC unroll 4
      for (int t = 0; t < 4; t++) {
        const block_q8_0 *xb = xs[t] + 8 * i + k;
        __m512i d = q80x8_corr(xb);
        for (int s = 0; s < 4; s++)
          d = _mm512_dpbusd_epi32(d, wq[s], bcast8(xb->qs + 8 * s));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d),
                                 _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(xb->d))), acc[t]);
      }
    }
#pragma GCC unroll 4
  for (int t = 0; t < 4; t++)
    q6kx8_store(acc[t], out[t]);
}

/* ---- dispatch ----------------------------------------------------------- */

static int repack_cpu_ok(void) {
  const char *env = getenv("HX_CPU_REPACK");
  if (env && strcmp(env, "0") == 0)
    return 0;
  __builtin_cpu_init();
  return cpu_isa_best() == CPU_ISA_AVX512 && __builtin_cpu_supports("avx512vbmi");
}

bool cpu_repack_get(quant_type t, cpu_gemv8_fn *gemv, cpu_gemm4x8_fn *gemm) {
  *gemv = NULL;
  *gemm = NULL;
  if ((t != QUANT_Q4_K && t != QUANT_Q5_K && t != QUANT_Q6_K && t != QUANT_Q8_0) ||
      !repack_cpu_ok())
    return false;
  *gemv = t == QUANT_Q4_K   ? gemv_q4_kx8
          : t == QUANT_Q5_K ? gemv_q5_kx8
          : t == QUANT_Q6_K ? gemv_q6_kx8
                            : gemv_q8_0x8;
  *gemm = t == QUANT_Q4_K   ? gemm4_q4_kx8
          : t == QUANT_Q5_K ? gemm4_q5_kx8
          : t == QUANT_Q6_K ? gemm4_q6_kx8
                            : gemm4_q8_0x8;
  return true;
}
