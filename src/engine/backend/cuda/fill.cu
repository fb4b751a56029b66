// fill.cu — device-side random weights for benchmarks and synthetic models:
// random bytes everywhere, then every block's f16 scales overwritten with
// small finite values so dequantized weights have a sensible scale. Random
// weights cost exactly the bytes and work of real ones.
#include "common.cuh"
#include "kernels.h"

__device__ static uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return (uint32_t)x;
}

__global__ static void fill_kernel(uint32_t *p, size_t n_words, uint64_t seed) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_words;
       i += (size_t)gridDim.x * blockDim.x)
    p[i] = hash32(seed + i);
}

// Float types: uniform in [-scale, scale).
__global__ static void fill_float_kernel(uint8_t *p, int type, size_t n, uint64_t seed,
                                         float scale) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float v = ((float)(hash32(seed + i) >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * scale;
    if (type == GT_F32)
      ((float *)p)[i] = v;
    else if (type == GT_F16)
      ((__half *)p)[i] = __float2half_rn(v);
    else
      ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
  }
}

__global__ static void fix_scales_kernel(uint8_t *p, int type, size_t n_blocks, float d) {
  for (size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x; b < n_blocks;
       b += (size_t)gridDim.x * blockDim.x) {
    switch (type) {
    case GT_Q8_0:
      ((cu_block_q8_0 *)p)[b].d = __float2half_rn(d / 64.0f);
      break;
    case GT_Q4_K:
      ((cu_block_q4_K *)p)[b].d = __float2half_rn(d / 256.0f);
      ((cu_block_q4_K *)p)[b].dmin = __float2half_rn(d / 512.0f);
      break;
    case GT_Q5_K:
      ((cu_block_q5_K *)p)[b].d = __float2half_rn(d / 512.0f);
      ((cu_block_q5_K *)p)[b].dmin = __float2half_rn(d / 1024.0f);
      break;
    case GT_Q6_K:
      ((cu_block_q6_K *)p)[b].d = __float2half_rn(d / 1024.0f);
      break;
    }
  }
}

extern "C" void hx_cuda_fill_random(void *dev, int type, size_t n_elems, size_t n_bytes,
                                    uint64_t seed, float scale, hx_stream st) {
  if (type == GT_F32 || type == GT_F16 || type == GT_BF16) {
    fill_float_kernel<<<1024, 256, 0, st>>>((uint8_t *)dev, type, n_elems, seed, scale);
  } else {
    fill_kernel<<<1024, 256, 0, st>>>((uint32_t *)dev, n_bytes / 4, seed);
    size_t blk = type == GT_Q8_0 ? 32 : 256;
    fix_scales_kernel<<<1024, 256, 0, st>>>((uint8_t *)dev, type, n_elems / blk, scale);
  }
  CUDA_LAUNCH_CHECK();
}
