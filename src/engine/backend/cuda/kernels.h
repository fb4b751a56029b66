/* kernels.h — C entry points of the CUDA backend's op families, one .cu file
 * each (getrows.cu, mmvq.cu, norm.cu, rope.cu, attention.cu, elementwise.cu,
 * topk.cu). Called by cuda_backend.c; all launch on stream `st` (a
 * cudaStream_t) and assert their shape preconditions. Pointers are device
 * pointers. Errors are reported through hx_cuda_report (cuda_backend.c). */
#ifndef HX_CUDA_KERNELS_H
#define HX_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *hx_stream;

/* Planar weight layouts private to this backend (common.cuh describes them):
 * the GGUF type id with bit CU_PLANAR set. */
enum { CU_PLANAR = 0x100, CU_Q8_0P = CU_PLANAR | 8, CU_Q6_KP = CU_PLANAR | 14 };

/* RoPE parameters (mirror of hx_rope_params). */
typedef struct cu_rope {
  int n_rot;
  float freq_base, freq_scale;
  float yarn_factor;
  int yarn_orig_ctx;
  float yarn_beta_fast, yarn_beta_slow, yarn_attn_factor;
} cu_rope;

enum { HX_CU_Q8_1_BLOCK_BYTES = 40 }; /* activation block: f32 d, f32 d*sum, 32 x i8 */

/* getrows.cu: w / table = the matrix base; rows row0 .. (+ n_rows, + ids) of
 * its r_total rows are read (r_total places the planar sections; native
 * layouts only check it). */
void launch_dequant_f16(void *dst_f16, const uint8_t *w, int type, int64_t n_cols, size_t row_bytes,
                        int64_t row0, int64_t n_rows, int64_t r_total, hx_stream st);
void launch_get_rows(float *out, size_t out_stride, const uint8_t *table, int type, int64_t n_cols,
                     size_t row_bytes, int64_t row0, int64_t r_total, const int32_t *ids, int64_t n,
                     hx_stream st);

/* mmvq.cu: y[o] = W[o]·x (+ bias[o]) for one activation row; quantized W
 * reads xq (from launch_quantize_q8_1), float W reads x. */
void launch_quantize_q8_1(void *dst, const float *x, size_t x_stride, int64_t n_cols,
                          int64_t n_rows, hx_stream st);
void launch_matvec(float *y, const uint8_t *w, int type, int64_t n_out, int64_t n_in,
                   size_t row_bytes, const float *x, const void *xq, const float *bias,
                   hx_stream st);
int matvec_type_quantized(int type);
int matvec_type_supported(int type);
/* float rows go 8 columns per lane (16-byte loads), quantized ones one q8_1
   block of 32 at a time; other widths take the GEMM path */
int matvec_shape_ok(int type, int64_t n_in);

/* norm.cu */
void launch_rms_norm(float *out, size_t out_stride, float *x, size_t x_stride, float *residual,
                     size_t res_stride, const float *w, int64_t n_cols, int64_t n_rows, float eps,
                     int zero_centred, hx_stream st);
void launch_rms_norm_heads(float *x, size_t x_stride, const float *w, int64_t n_cols,
                           int64_t n_rows, int head_dim, float eps, hx_stream st);

/* rope.cu */
void launch_rope(float *x, size_t x_stride, int64_t n_cols, int64_t n_rows, const int32_t *pos,
                 int head_dim, const cu_rope *p, hx_stream st);

/* attention.cu */
void launch_cache_store(uint8_t *cache, int cache_type, size_t cache_row_bytes, const float *src,
                        size_t src_stride, int64_t n_cols, int64_t n_rows, const int32_t *pos,
                        hx_stream st);
size_t attn_partial_floats(int n_heads, int head_dim, int n_splits);
void launch_attention(float *out, size_t out_stride, const float *q, size_t q_stride,
                      const uint8_t *k_cache, const uint8_t *v_cache, int cache_type,
                      size_t cache_row_bytes, const int32_t *pos, int64_t n_tokens, int n_heads,
                      int n_kv_heads, int head_dim, float scale, int64_t max_ctx, float *partial,
                      int n_splits_max, void *q8_out, hx_stream st);

/* elementwise.cu; launch_binary op 0 = add, 1 = mul; b_stride 0 broadcasts. */
void launch_swiglu(float *out, size_t out_stride, const float *gate, size_t g_stride,
                   const float *up, size_t u_stride, int64_t n_cols, int64_t n_rows, hx_stream st);
void launch_binary(int op, float *out, size_t out_stride, const float *a, size_t a_stride,
                   const float *b, size_t b_stride, int64_t n_cols, int64_t n_rows, hx_stream st);
void launch_softmax(float *x, size_t stride, int64_t n_cols, int64_t n_rows, hx_stream st);
void launch_add_bias(float *y, size_t y_stride, const float *bias, int64_t n_cols, int64_t n_rows,
                     hx_stream st);
void launch_f32_to_f16(void *dst, const float *x, size_t x_stride, int64_t n_cols, int64_t n_rows,
                       hx_stream st);
void launch_f32_to_bf16(void *dst, const float *x, size_t x_stride, int64_t n_cols, int64_t n_rows,
                        hx_stream st);

/* topk.cu */
/* argmax_scratch: HX_CU_ARGMAX_SCRATCH_BYTES of device memory zeroed once, for
 * the many-block arg-max of one row (k = 1); NULL keeps the one-block kernel. */
enum { HX_CU_ARGMAX_BLOCKS = 256, HX_CU_ARGMAX_SCRATCH_BYTES = HX_CU_ARGMAX_BLOCKS * 8 + 16 };
void launch_top_k(float *vals, size_t v_stride, int32_t *ids, size_t i_stride, const float *x,
                  size_t x_stride, int64_t n_cols, int64_t n_rows, int k, void *argmax_scratch,
                  hx_stream st);

/* fused.cu: one-token fusions (see cuda_backend.c for when they apply). */
void launch_rms_norm_q8(float *out, float *x, float *residual, const float *w, int64_t n_cols,
                        float eps, int zero_centred, void *q8, hx_stream st);
void launch_swiglu_q8(float *out, const float *gate, const float *up, int64_t n_cols, void *q8,
                      hx_stream st);
void launch_qk_rope_store(float *q, float *k, const float *v, const float *q_norm,
                          const float *k_norm, const int32_t *pos, int n_heads, int n_kv_heads,
                          int head_dim, float eps, const cu_rope *p, uint8_t *k_cache,
                          uint8_t *v_cache, int cache_type, size_t cache_row_bytes, hx_stream st);
/* mmvq.cu: up to 3 matvecs sharing one quantized activation row, one launch.
 * Native layouts: w = the first row to compute (row0, r_total unused).
 * Planar types (GT_PLANAR bit, common.cuh): w = the whole matrix's base,
 * rows row0 .. row0 + n_out - 1 of its r_total rows are computed. */
typedef struct cu_mv_job {
  float *y;
  const uint8_t *w;
  const float *bias;
  int type;
  int64_t n_out;
  size_t row_bytes;
  int64_t row0, r_total;
} cu_mv_job;
/* One matvec described as a job (any layout); x = the f32 activation row (float
 * weights), xq = its q8_1 blocks (quantized weights). */
void launch_matvec_job(const cu_mv_job *job, int64_t n_in, const float *x, const void *xq,
                       hx_stream st);
/* mmv_stream.cu: the 16-byte streaming mat-vecs (Q4_K, planar Q8_0/Q6_K,
 * F32/F16/BF16). matvec_stream_ok: whether a job can take them (type, width,
 * 16-byte alignment; HX_MV_STREAM=0 turns them off). launch_matvec_stream:
 * 1..3 jobs sharing the activation x (float) / xq (q8_1), one launch. */
int matvec_stream_ok(const cu_mv_job *job, int64_t n_in);
void launch_matvec_stream(const cu_mv_job *jobs, int n_jobs, int64_t n_in, const float *x,
                          const void *xq, hx_stream st);
void launch_matvec_multi(const cu_mv_job *jobs, int n_jobs, int64_t n_in, const void *xq,
                         hx_stream st);

/* fill.cu: random weights (float types uniform in ±scale; quantized types
 * random bits with block scales set so values are about ±scale). */
void hx_cuda_fill_random(void *dev, int type, size_t n_elems, size_t n_bytes, uint64_t seed,
                         float scale, hx_stream st);

/* moe.cu: routing, the expert matmul selected by device-side ids, combine
 * (backend.h MoE ops). One job per weight (gate, up) sharing x and ids. */
typedef struct cu_moe_job {
  float *y;         /* [n*k][n_out] f32 */
  size_t y_stride;  /* floats between rows of y */
  const uint8_t *w; /* stacked experts [n_expert * n_out][n_in] */
  int type;         /* weight type */
  int64_t n_out;    /* rows per expert */
  size_t row_bytes; /* of w */
} cu_moe_job;
/* With xq (else NULL, and x unused), each token's block also writes the q8_1
 * blocks of its row of x (n_in floats, n_in % 32 == 0) there: the one-token
 * fusion route ; expert matmul (whose call then passes xq_ready). */
void launch_moe_route(float *weights, size_t w_stride, int32_t *ids, size_t i_stride,
                      const float *logits, size_t l_stride, int64_t n_exp, int64_t n_rows, int k,
                      int renorm, const float *x, size_t x_stride, int64_t n_in, void *xq,
                      hx_stream st);
/* x has n_x_rows = n (one input per token) or n * k (one per slot) rows;
 * q8 (q8_bytes) is scratch for the quantized activations of the decode form.
 * One-token fusions (n <= HX_CU_MOE_SLOT_TOKENS_MAX, the quantized slot form):
 * xq_ready: q8 already holds x's q8_1 blocks (launch_moe_route wrote them);
 * swiglu: two jobs of one moe_slot_fused_type and shape on x one row per
 * token; jobs[0].y gets silu(gate) * up (launch_swiglu's values), jobs[1].y up. */
enum { HX_CU_MOE_SLOT_TOKENS_MAX = 4 };
void launch_moe_matmul_id(const cu_moe_job *jobs, int n_jobs, const float *x, size_t x_stride,
                          int64_t n_x_rows, int64_t n_in, const int32_t *ids, size_t ids_stride,
                          int64_t n, int k, int64_t n_expert, void *q8, size_t q8_bytes,
                          int xq_ready, int swiglu, hx_stream st);
/* Whether the fused slot kernels take a weight type (the quantized ones). */
int moe_slot_fused_type(int type);
/* The one-token fusion expert down ; combine: y (per slot) as launch_moe_matmul_id
 * writes it for one job on x one row per slot (n_in % 32 == 0, rows 16-byte
 * aligned), and out as launch_moe_combine writes it from y. n <= 4 tokens. */
void launch_moe_down_combine(const cu_moe_job *jb, const float *x, size_t x_stride, int64_t n_in,
                             const int32_t *ids, size_t ids_stride, int64_t n, int k,
                             int64_t n_expert, float *out, size_t o_stride, const float *w,
                             size_t w_stride, const float *sh, size_t sh_stride, const float *sg,
                             size_t sg_stride, hx_stream st);
void launch_moe_combine(float *out, size_t o_stride, const float *y, size_t y_stride,
                        const float *w, size_t w_stride, const float *sh, size_t sh_stride,
                        const float *sg, size_t sg_stride, int64_t d, int64_t n_rows, int k,
                        hx_stream st);

/* ssm.cu: Gated DeltaNet (backend.h DeltaNet ops). Strides in floats. */
void launch_ssm_conv(float *out, size_t o_stride, const float *x, size_t x_stride, const float *w,
                     size_t w_stride, float *state, size_t s_stride, int64_t n_channels,
                     int64_t n_tokens, int K, hx_stream st);
typedef struct cu_delta_args {
  float *out;
  const float *q, *k, *v, *a, *b, *ssm_a, *dt_bias;
  float *state;
  size_t out_stride, q_stride, k_stride, v_stride, a_stride, b_stride;
  size_t state_stride; /* floats between value heads' matrices */
  int64_t n;           /* tokens */
  int n_k_heads, n_v_heads, d_k, d_v, kv_tiled;
  float eps; /* of the q/k L2 norm */
} cu_delta_args;
void launch_delta_rule(const cu_delta_args *a, hx_stream st);
void launch_gated_norm(float *out, size_t o_stride, const float *x, size_t x_stride, const float *z,
                       size_t z_stride, const float *w, int64_t n_cols, int64_t n_rows,
                       int head_dim, float eps, hx_stream st);
void launch_sigmoid_mul(float *out, size_t o_stride, const float *x, size_t x_stride,
                        const float *g, size_t g_stride, int broadcast, int64_t n_cols,
                        int64_t n_rows, hx_stream st);
void launch_zero_rows(void *p, size_t row_bytes, size_t width_bytes, int64_t n_rows, hx_stream st);

/* repack.cu: writes the planar layout (common.cuh) of the native Q8_0 / Q6_K
 * matrix tmp_native_copy (n_rows rows of n_cols, rows contiguous at the native
 * row size) into w (16-byte aligned, same byte count, not overlapping tmp). */
void launch_repack_planar(uint8_t *w, const uint8_t *tmp_native_copy, int type, int64_t n_rows,
                          int64_t n_cols, hx_stream st);

#ifdef __cplusplus
}
#endif

#endif
