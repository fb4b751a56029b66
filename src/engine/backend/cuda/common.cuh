// common.cuh — shared by the CUDA backend's kernels: error checks, the ggml
// block layouts as device structs (bit-identical to quant.h), f16/bf16
// helpers and warp reductions. Internal to backend/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"

// Host-side check that reports statement, file and line through the
// backend's sticky error (cuda_backend.cu).
extern "C" void hx_cuda_report(cudaError_t e, const char *stmt, const char *file, int line);
#define CUDA_CHECK(stmt)                                                                           \
  do {                                                                                             \
    cudaError_t e_ = (stmt);                                                                       \
    if (e_ != cudaSuccess)                                                                         \
      hx_cuda_report(e_, #stmt, __FILE__, __LINE__);                                               \
  } while (0)
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

// Launcher preconditions: always on, like HX_ASSERT.
extern "C" void hx_assert_fail(const char *expr, const char *file, int line, const char *func);
#define CU_ASSERT(cond)                                                                            \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      hx_assert_fail(#cond, __FILE__, __LINE__, __func__);                                         \
  } while (0)

enum {
  GT_F32 = 0,
  GT_F16 = 1,
  GT_Q8_0 = 8,
  GT_Q4_K = 12,
  GT_Q5_K = 13,
  GT_Q6_K = 14,
  GT_BF16 = 30,
  GT_I32 = 26,
};

#define QK8_0 32
#define QK_K 256

struct cu_block_q8_0 {
  __half d;
  int8_t qs[QK8_0];
};
struct cu_block_q4_K {
  __half d, dmin;
  uint8_t scales[12];
  uint8_t qs[QK_K / 2];
};
struct cu_block_q5_K {
  __half d, dmin;
  uint8_t scales[12];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
struct cu_block_q6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  __half d;
};
static_assert(sizeof(cu_block_q8_0) == 34, "q8_0 layout");
static_assert(sizeof(cu_block_q4_K) == 144, "q4_K layout");
static_assert(sizeof(cu_block_q5_K) == 176, "q5_K layout");
static_assert(sizeof(cu_block_q6_K) == 210, "q6_K layout");

// d and d * sum(qs) (like ggml's q8_1, with f32 scales), 40 bytes.
// Planar layouts, made in place at load by weight_prepare (repack.cu) for the
// row types whose blocks are not 16-byte aligned (Q8_0: 34 bytes, Q6_K: 210),
// so that the mat-vecs read weights with 16-byte loads. A planar matrix of R
// rows and NB blocks per row keeps the native byte count (R * row_bytes) and
// splits it into sections, each row's part of a section contiguous:
//   Q8_0P: qs [R][NB][32] | d [R][NB] (f16)
//   Q6_KP: ql [R][NB][128] | qh [R][NB][64] | scales [R][NB][16] | d [R][NB] (f16)
// The type ids (kernels.h: CU_PLANAR bit on the GGUF id) are private to the
// CUDA backend; kernels address a row r of the matrix starting at `base`.
enum { GT_PLANAR = CU_PLANAR, GT_Q8_0P = CU_Q8_0P, GT_Q6_KP = CU_Q6_KP };
__host__ __device__ __forceinline__ const uint8_t *q8_0p_qs(const uint8_t *base, int64_t r,
                                                            int64_t nb) {
  return base + (size_t)r * nb * 32;
}
__host__ __device__ __forceinline__ const __half *q8_0p_d(const uint8_t *base, int64_t R, int64_t r,
                                                          int64_t nb) {
  return (const __half *)(base + (size_t)R * nb * 32) + (size_t)r * nb;
}
__host__ __device__ __forceinline__ const uint8_t *q6_kp_ql(const uint8_t *base, int64_t r,
                                                            int64_t nb) {
  return base + (size_t)r * nb * 128;
}
__host__ __device__ __forceinline__ const uint8_t *q6_kp_qh(const uint8_t *base, int64_t R,
                                                            int64_t r, int64_t nb) {
  return base + (size_t)R * nb * 128 + (size_t)r * nb * 64;
}
__host__ __device__ __forceinline__ const int8_t *q6_kp_sc(const uint8_t *base, int64_t R,
                                                           int64_t r, int64_t nb) {
  return (const int8_t *)(base + (size_t)R * nb * 192 + (size_t)r * nb * 16);
}
__host__ __device__ __forceinline__ const __half *q6_kp_d(const uint8_t *base, int64_t R, int64_t r,
                                                          int64_t nb) {
  return (const __half *)(base + (size_t)R * nb * 208) + (size_t)r * nb;
}

struct cu_block_q8_1 {
  float d;
  float s;
  int8_t qs[32];
};
static_assert(sizeof(cu_block_q8_1) == 40, "q8_1 layout");

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// q8_1 block b of 32 floats, one per lane (v = element lane): d = amax / 127,
// q = round(v / d), s = d * sum(q). Every q8_1 quantization of the backend
// goes through here or lane_quantize_q8_1, so the fused forms produce the same
// bytes as launch_quantize_q8_1.
__device__ __forceinline__ void warp_quantize_q8_1(float v, cu_block_q8_1 *b, int lane) {
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.0f;
  const int q = amax == 0.0f ? 0 : __float2int_rn(v / d);
  const float sum = warp_sum((float)q); // exact: |sum| <= 32 * 127
  b->qs[lane] = (int8_t)q;
  if (lane == 0) {
    b->d = d;
    b->s = d * sum;
  }
}

// The same block held by one thread: 32 floats from x (16-byte aligned) into
// q[8] (4 quants per int, element 4i + c in byte c) and (d, s).
__device__ __forceinline__ void lane_quantize_q8_1(const float *x, int q[8], float &d, float &s) {
  float v[32];
#pragma unroll
  for (int i = 0; i < 8; i++) {
    const float4 f = ((const float4 *)x)[i];
    v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
  }
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 32; i++)
    amax = fmaxf(amax, fabsf(v[i]));
  d = amax / 127.0f;
  int sum = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    uint32_t w = 0;
#pragma unroll
    for (int c = 0; c < 4; c++) {
      const int qi = amax == 0.0f ? 0 : __float2int_rn(v[4 * i + c] / d);
      sum += qi;
      w |= (uint32_t)(qi & 0xFF) << (8 * c);
    }
    q[i] = (int)w;
  }
  s = d * (float)sum;
}

// Block-wide sum for blockDim.x a multiple of 32 (≤ 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v, float *smem32) {
  v = warp_sum(v);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0)
    smem32[warp] = v;
  __syncthreads();
  int nw = blockDim.x >> 5;
  v = lane < nw ? smem32[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ int get_int_unaligned(const uint8_t *p) {
  // 2-byte aligned loads (Q8_0 / Q6_K rows are only 2-byte aligned).
  const uint16_t *q = (const uint16_t *)p;
  return (int)((uint32_t)q[0] | ((uint32_t)q[1] << 16));
}

// Scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block.
__device__ __forceinline__ void get_scale_min_k4(int j, const uint8_t *q, int &d, int &m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

__device__ __forceinline__ float load_f(const void *p, int type, int64_t i) {
  if (type == GT_F32)
    return ((const float *)p)[i];
  if (type == GT_F16)
    return __half2float(((const __half *)p)[i]);
  return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

static inline unsigned cdiv(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }

// Programmatic dependent launch (sm_90+). Every kernel of this backend starts
// with pdl_trigger(), which lets the next kernel in the stream be scheduled
// while this one runs, and pdl_wait(), which returns once the kernels before
// it have completed and their writes are visible. A kernel must not read
// anything an earlier kernel writes, nor write anything an earlier kernel
// reads, before pdl_wait(); what it may do before is read immutable data —
// the mat-vecs prefetch their weight rows into L2 there, so weight streaming
// overlaps the tail of the kernel before. Both are no-ops on older GPUs and
// when the kernel was launched without the attribute.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// 16 bytes of weights streamed past L1 (read once per token: caching them
// there would only evict the activations).
__device__ __forceinline__ uint4 ld_stream(const void *p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// 16 bytes (4 ints) of q8_1 block blk's quants starting at int 4 * half, and
// the block's (d, s): a 16-byte weight chunk's activations.
__device__ __forceinline__ void ld_x16(const cu_block_q8_1 *xq, int64_t blk, int half, int x[4],
                                       float2 &ds) {
  const cu_block_q8_1 *b = xq + blk;
  ds = *(const float2 *)b;
  const int2 *q = (const int2 *)(b->qs + 16 * half);
  const int2 a = q[0], c = q[1];
  x[0] = a.x, x[1] = a.y, x[2] = c.x, x[3] = c.y;
}

// Asks L2 for [p, p + n_bytes), one 128-byte line per thread step.
__device__ __forceinline__ void prefetch_l2(const void *p, size_t n_bytes, int tid, int n_threads) {
  const char *c = (const char *)p;
  for (size_t off = (size_t)tid * 128; off < n_bytes; off += (size_t)n_threads * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}

// Whether launches on the calling thread's device use programmatic dependent
// launch (compute capability ≥ 9.0 unless HX_CUDA_PDL=0; cuda_backend.c).
extern "C" int hx_cuda_pdl_enabled(void);
// Whether launches are suppressed (HX_CUDA_SKIP's dry pass; cuda_backend.c).
extern "C" int hx_cuda_launch_suppressed(void);

// Launches kernel<<<grid, block, smem, st>>>(args...), with the programmatic
// stream serialization attribute when PDL is on (see pdl_wait above).
template <typename... KArgs, typename... Args>
static inline void cu_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                             cudaStream_t st, Args &&...args) {
  if (hx_cuda_launch_suppressed())
    return;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = hx_cuda_pdl_enabled() ? 1 : 0;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Args &&>(args)...));
}

// Raises kernel's dynamic shared-memory limit to `bytes` on the calling
// thread's device, once per device (the attribute belongs to the device's
// context): `done` is the kernel's own mask of devices already raised.
template <typename... KArgs>
static inline void cu_smem_limit(void (*kernel)(KArgs...), size_t bytes, unsigned long long *done) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  const unsigned long long bit = dev < 64 ? 1ull << dev : 0;
  if (bit && (__atomic_load_n(done, __ATOMIC_ACQUIRE) & bit))
    return;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  __atomic_fetch_or(done, bit, __ATOMIC_ACQ_REL);
}
