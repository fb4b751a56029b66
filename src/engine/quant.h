/* quant.h — tensor element types and the quantized block formats.
 *
 * Type ids are ggml's (`enum ggml_type`) so that a GGUF tensor's type field is
 * a quant_type as is. Block layouts of Q8_0, Q4_K, Q5_K, Q6_K and Q8_K are
 * llama.cpp's bit for bit (the static asserts in quant.c pin their sizes).
 *
 * This module holds the *reference* (scalar, portable) implementations:
 * dequantize a row, quantize a row (llama.cpp-quality quantizers with the
 * iterative scale search, plus a fast min/max path), and dot products of a
 * weight row with f32 or q8 activations. SIMD kernels live in the CPU backend
 * and are tested against these.
 *
 * A "row" is n consecutive elements; n must be a multiple of the type's block
 * size (asserted: callers validate shapes at load, see quant_row_bytes). All
 * multi-byte fields are little-endian, f16 stored as IEEE binary16 bits. */
#ifndef HX_ENGINE_QUANT_H
#define HX_ENGINE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml's numbering. Gaps (4, 5, 31-33, 36-38) are ids ggml removed; they are
 * not valid types. */
typedef enum quant_type {
  QUANT_F32 = 0,
  QUANT_F16 = 1,
  QUANT_Q4_0 = 2,
  QUANT_Q4_1 = 3,
  QUANT_Q5_0 = 6,
  QUANT_Q5_1 = 7,
  QUANT_Q8_0 = 8,
  QUANT_Q8_1 = 9,
  QUANT_Q2_K = 10,
  QUANT_Q3_K = 11,
  QUANT_Q4_K = 12,
  QUANT_Q5_K = 13,
  QUANT_Q6_K = 14,
  QUANT_Q8_K = 15,
  QUANT_IQ2_XXS = 16,
  QUANT_IQ2_XS = 17,
  QUANT_IQ3_XXS = 18,
  QUANT_IQ1_S = 19,
  QUANT_IQ4_NL = 20,
  QUANT_IQ3_S = 21,
  QUANT_IQ2_S = 22,
  QUANT_IQ4_XS = 23,
  QUANT_I8 = 24,
  QUANT_I16 = 25,
  QUANT_I32 = 26,
  QUANT_I64 = 27,
  QUANT_F64 = 28,
  QUANT_IQ1_M = 29,
  QUANT_BF16 = 30,
  QUANT_TQ1_0 = 34,
  QUANT_TQ2_0 = 35,
  QUANT_MXFP4 = 39,
  QUANT_TYPE_COUNT = 40 /* one past the largest id we know */
} quant_type;

enum {
  QK8_0 = 32, /* elements per Q8_0 block */
  QK_K = 256, /* elements per K-quant super-block */
  K_SCALE_SIZE = 12,
};

/* Q8_0: 32 int8 with one f16 scale. x = d * q. */
typedef struct block_q8_0 {
  uint16_t d; /* f16 */
  int8_t qs[QK8_0];
} block_q8_0;

/* Q4_K: 8 sub-blocks of 32; 6-bit scales and mins packed in 12 bytes.
 * x = d * sc[j] * q - dmin * m[j], q in [0, 15]. */
typedef struct block_q4_K {
  uint16_t d;    /* f16 super-block scale for the sub-block scales */
  uint16_t dmin; /* f16 super-block scale for the sub-block mins */
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2]; /* 4-bit quants: low nibbles = elements 0..31 of a 64-group */
} block_q4_K;

/* Q5_K: as Q4_K plus one high bit per element. q in [0, 31]. */
typedef struct block_q5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8]; /* high bits */
  uint8_t qs[QK_K / 2]; /* low 4 bits */
} block_q5_K;

/* Q6_K: 16 sub-blocks of 16, int8 scales. x = d * sc[j] * (q - 32). */
typedef struct block_q6_K {
  uint8_t ql[QK_K / 2];     /* low 4 bits */
  uint8_t qh[QK_K / 4];     /* high 2 bits */
  int8_t scales[QK_K / 16]; /* 8-bit scales */
  uint16_t d;               /* f16 super-block scale */
} block_q6_K;

/* Q8_K: activation format for K-quant dot products (never stored in files by
 * llama.cpp). x = d * q; bsums[j] = sum of qs[16j .. 16j+15]. */
typedef struct block_q8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
} block_q8_K;

/* --- type table ------------------------------------------------------- */

/* True for ids ggml defines (sizes known), including those without a
 * reference implementation here (IQ*, TQ*, ...). */
bool quant_type_is_valid(uint32_t id);
/* True when this module can dequantize the type (F32, F16, BF16, Q8_0, Q4_K,
 * Q5_K, Q6_K, Q8_K, and the integer types are not floats: false). */
bool quant_type_can_dequantize(quant_type t);
/* True when quant_row_quantize supports t (F32, F16, BF16, Q8_0, Q4_K, Q5_K,
 * Q6_K, Q8_K). */
bool quant_type_can_quantize(quant_type t);
/* ggml's name ("f32", "q4_K", "bf16"); "?" for invalid ids. Never NULL. */
const char *quant_type_name(quant_type t);
/* Parses a type name case-insensitively ("Q4_K", "q8_0", "BF16"). */
bool quant_type_parse(const char *name, quant_type *out);
/* Elements per block (1 for plain types); 0 for invalid ids. */
size_t quant_type_block_size(quant_type t);
/* Bytes per block; 0 for invalid ids. */
size_t quant_type_block_bytes(quant_type t);
/* Bytes of n_elems elements of type t: fails (returns false) when t is
 * invalid, n_elems < 0, n_elems is not a multiple of the block size, or the
 * product overflows. */
bool quant_row_bytes(quant_type t, int64_t n_elems, size_t *out_bytes);
/* The activation format a weight type is dotted with by quant_row_dot_q8:
 * Q8_0 for Q8_0, Q8_K for Q4_K/Q5_K/Q6_K, F32 for F32/F16/BF16. */
quant_type quant_type_dot_type(quant_type weight_type);

/* --- scalar conversions ------------------------------------------------- */

float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f); /* round to nearest even, overflow -> inf */
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

/* --- rows ---------------------------------------------------------------- */

/* dst[0..n) = values of the n elements at src. t must satisfy
 * quant_type_can_dequantize; n a multiple of the block size. */
void quant_row_dequantize(quant_type t, const void *src, float *dst, int64_t n);

/* Quantizes n floats into quant_row_bytes(t, n) bytes at dst with the
 * reference-quality quantizer (llama.cpp's `quantize_row_*_ref` algorithms:
 * make_qkx2_quants for Q4_K/Q5_K, make_qx_quants for Q6_K, round-to-nearest
 * for Q8_0/Q8_K). Inputs must be finite. */
void quant_row_quantize(quant_type t, const float *src, void *dst, int64_t n);

/* Fast quantizer: per-sub-block min/max scales, no search. Same formats;
 * higher error. Used by `neuron synth` and as the baseline in tests. For
 * types without a distinct fast path it is quant_row_quantize. */
void quant_row_quantize_fast(quant_type t, const float *src, void *dst, int64_t n);

/* Dot product of one weight row (n elements of type w_type) with f32 x. */
float quant_row_dot_f32(quant_type w_type, const void *w_row, const float *x, int64_t n);

/* Dot product of one weight row with activations already quantized to
 * quant_type_dot_type(w_type) (use quant_row_quantize(QUANT_Q8_0 / QUANT_Q8_K,
 * ...) on the activations). Integer accumulation like ggml's vec_dot. For
 * F32/F16/BF16 weights x_q is f32. */
float quant_row_dot_q8(quant_type w_type, const void *w_row, const void *x_q, int64_t n);

/* Unpacks scale and min of sub-block j (0..7) from a Q4_K/Q5_K scales[12]. */
void quant_k_scale_min(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m);

#endif
