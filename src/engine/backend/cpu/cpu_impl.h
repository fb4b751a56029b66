/* cpu_impl.h — internals of the CPU backend shared by its files and tests.
 *
 * Dot kernels: one weight row (n elements in its stored type) against one
 * activation row in the weight type's dot format (quant_type_dot_type: Q8_0
 * for Q8_0 weights, Q8_K for K-quants, f32 for F32/F16/BF16). Each exists as a
 * scalar reference (quant.c's) and, where the CPU has it, AVX2 and AVX-512
 * versions chosen at run time; tests compare every path with the scalar one. */
#ifndef HX_ENGINE_CPU_IMPL_H
#define HX_ENGINE_CPU_IMPL_H

#include <stdint.h>

#include "base/pool.h"
#include "engine/backend.h"
#include "engine/quant.h"

typedef enum cpu_isa {
  CPU_ISA_SCALAR = 0,
  CPU_ISA_AVX2,   /* AVX2 + FMA + F16C */
  CPU_ISA_AVX512, /* AVX-512 F/BW/VL/VNNI(+BF16 where used) */
  CPU_ISA_COUNT
} cpu_isa;

typedef float (*cpu_dot_fn)(const void *w_row, const void *x, int64_t n);

/* The best ISA this CPU supports (HX_CPU_ISA=scalar|avx2|avx512 in the
 * environment caps it, for debugging and benchmarks). */
cpu_isa cpu_isa_best(void);
const char *cpu_isa_name(cpu_isa isa);
/* The dot kernel of weight type t for an ISA; NULL when that ISA has no
 * kernel for t or the CPU lacks the ISA. CPU_ISA_SCALAR always has one for
 * the supported weight types (F32, F16, BF16, Q8_0, Q4_K, Q5_K, Q6_K). */
cpu_dot_fn cpu_dot_get(quant_type t, cpu_isa isa);
/* Four activation rows (x, x + x_stride, ...) against one weight row, for
 * prefill: out[t] = dot(w, x_t). NULL where no such kernel exists (the
 * caller then uses the one-row kernel). n must be a multiple of 64 for Q8_0. */
typedef void (*cpu_dot4_fn)(const void *w_row, const void *x, size_t x_stride, int64_t n,
                            float out[4]);
cpu_dot4_fn cpu_dot4_get(quant_type t, cpu_isa isa);

/* The best available kernel: falls back to lower ISAs. */
cpu_dot_fn cpu_dot_best(quant_type t);

/* A CPU backend buffer: host memory, allocated by the backend or wrapped
 * (e.g. an mmapped weight file). One definition for every file of the
 * backend: ops read tensors through data. */
typedef struct cpu_repacked cpu_repacked;
struct hx_bbuf {
  void *data;
  size_t n_bytes;
  int owned;        /* allocated here (freed by buf_free) vs wrapped */
  cpu_repacked *rp; /* repacked weight views of this buffer (cpu_backend.c) */
};

/* Entry points of cpu_backend.c for the op files beside it (cpu_moe.c,
 * cpu_ssm.c): the backend's pool, its size, and the matmul op. */
hx_pool *cpu_be_pool(void *be);
int cpu_be_threads(void *be);
void cpu_be_matmul(void *be, hx_tensor y, hx_tensor w, hx_tensor x, hx_tensor bias);

/* MoE ops (cpu_moe.c), as backend.h describes them. */
void cpu_moe_route(void *be, hx_tensor weights, hx_tensor ids, hx_tensor logits, int k, int renorm);
void cpu_moe_matmul_id(void *be, int n_w, const hx_tensor *y, const hx_tensor *w, hx_tensor x,
                       hx_tensor ids);
void cpu_moe_combine(void *be, hx_tensor out, hx_tensor y, hx_tensor weights, hx_tensor shared,
                     hx_tensor shared_gate);

/* DeltaNet ops (cpu_ssm.c), as backend.h describes them. */
void cpu_ssm_conv(void *be, hx_tensor out, hx_tensor x, hx_tensor w, hx_tensor state);
void cpu_delta_rule(void *be, hx_tensor out, hx_tensor q, hx_tensor k, hx_tensor v, hx_tensor a,
                    hx_tensor b, hx_tensor ssm_a, hx_tensor dt_bias, hx_tensor state,
                    const hx_delta_params *p);
void cpu_gated_norm(void *be, hx_tensor out, hx_tensor x, hx_tensor z, hx_tensor w, int head_dim,
                    float eps);
void cpu_sigmoid_mul(void *be, hx_tensor out, hx_tensor x, hx_tensor g);
void cpu_zero(void *be, hx_tensor t);

/* f16 row → f32 (F16C when available). */
void cpu_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n);

/* ---- row-interleaved weights (cpu_repack.c) ----
 * Q4_K, Q5_K, Q6_K and Q8_0 matrices are copied once into groups of 8
 * interleaved rows for the AVX-512 VNNI kernels. A group's kernels take the repacked group (n
 * columns, cpu_repack_bytes(t, 8, n) bytes) and Q8_K activations. */
#include <stdbool.h>
typedef void (*cpu_gemv8_fn)(const void *w_group, const void *x, int64_t n, float out[8]);
typedef void (*cpu_gemm4x8_fn)(const void *w_group, const void *x, size_t x_stride, int64_t n,
                               float out[4][8]);
/* The kernels for weight type t on this CPU; false (and NULLs) when t has no
 * repacked form or the CPU lacks AVX-512 VNNI/VBMI (or HX_CPU_ISA caps it, or
 * HX_CPU_REPACK=0). */
bool cpu_repack_get(quant_type t, cpu_gemv8_fn *gemv, cpu_gemm4x8_fn *gemm);
/* Bytes of the repacked form of the first n_rows / 8 * 8 rows; 0 if t has
 * none, fewer than 8 rows, n_cols not whole super-blocks, or overflow. */
size_t cpu_repack_bytes(quant_type t, int64_t n_rows, int64_t n_cols);
/* Repacks groups [g0, g1) (rows 8·g0 .. 8·g1−1) of the matrix w (rows
 * row_bytes apart) into dst, which holds the whole repacked matrix. */
void cpu_repack_rows(quant_type t, const void *w, size_t row_bytes, int64_t n_cols, int64_t g0,
                     int64_t g1, void *dst);
/* The repacked copy of all of w's rows (cpu_backend.c: found, or made now as
 * at a matmul) and its kernels; NULL when w has none or its rows are not whole
 * groups of 8. Groups of 8 rows follow one another, cpu_repack_bytes(type, 8,
 * n_cols) bytes each. */
const void *cpu_be_repacked(void *be, hx_tensor w, cpu_gemv8_fn *gemv, cpu_gemm4x8_fn *gemm);

/* Attention of one query head over an F16 cache head slice (cpu_dot.c):
 * q[hd] against rows 0..n_kv-1 of k and v (stride halves apart), out[hd] =
 * softmax(q·Kᵀ·scale)·V; scores is n_kv floats of scratch; hd % 8 == 0.
 * NULL below AVX2 (the caller then uses the reference path). */
typedef void (*cpu_attn_f16_fn)(const float *q, const uint16_t *k, const uint16_t *v, size_t stride,
                                int64_t n_kv, int hd, float scale, float *scores, float *out);
cpu_attn_f16_fn cpu_attn_f16_get(cpu_isa isa);
/* The same for the G ≤ CPU_ATTN_GROUP_MAX query heads sharing one KV head
 * (q and out: G heads of hd floats one after another; scores: G * n_kv
 * floats); hd % 16 == 0 and ≤ 256. NULL below AVX-512. */
enum { CPU_ATTN_GROUP_MAX = 8 };
typedef void (*cpu_attn_group_f16_fn)(const float *q, int G, const uint16_t *k, const uint16_t *v,
                                      size_t stride, int64_t n_kv, int hd, float scale,
                                      float *scores, float *out);
cpu_attn_group_f16_fn cpu_attn_group_f16_get(cpu_isa isa);

/* Activation rows (n f32) → Q8_0 / Q8_K, byte-identical to
 * quant_row_quantize (cpu_dot.c, AVX-512); NULL for other types or ISAs. */
typedef void (*cpu_quant_fn)(const float *x, void *dst, int64_t n);
cpu_quant_fn cpu_quant_get(quant_type dt, cpu_isa isa);

/* f32 row → f16, bit-identical to quant_f32_to_f16 (F16C when available). */
void cpu_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n);
/* out = silu(g) · u over n elements (out may alias g); AVX2 uses a vector
 * e^x of about 1 ulp instead of expf. */
void cpu_swiglu_row(const float *g, const float *u, float *out, int64_t n);

#endif
