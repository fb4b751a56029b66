// repack.cu — rewrites a Q8_0 or Q6_K matrix from the ggml block layout to the
// planar layout of common.cuh (weight_prepare in cuda_backend.c). With
// row_bytes equal to the native row size, block j of row r is block
// b = r * nb + j of the whole matrix in both layouts, so the repack is a
// per-block scatter of the block's fields to their sections.
#include "common.cuh"
#include "kernels.h"

// Copies 16 bytes from a 2-byte aligned source to a 16-byte aligned
// destination.
static __host__ __device__ __forceinline__ void copy16_from_u16(uint8_t *dst, const uint8_t *src) {
  const uint16_t *s = (const uint16_t *)src;
  uint4 u;
  u.x = (uint32_t)s[0] | ((uint32_t)s[1] << 16);
  u.y = (uint32_t)s[2] | ((uint32_t)s[3] << 16);
  u.z = (uint32_t)s[4] | ((uint32_t)s[5] << 16);
  u.w = (uint32_t)s[6] | ((uint32_t)s[7] << 16);
  *(uint4 *)dst = u;
}

// Piece c (0 .. PIECES) of block b: PIECES 16-byte pieces (Q8_0: qs in 2;
// Q6_K: ql in 8, qh in 4, scales in 1), then the block's f16 scale d.
template <int TYPE> struct repack_shape {
  static constexpr int BLOCK_BYTES = TYPE == GT_Q8_0 ? 34 : 210;
  static constexpr int PIECES = TYPE == GT_Q8_0 ? 2 : 13;
};

template <int TYPE>
__host__ __device__ __forceinline__ void repack_piece(uint8_t *w, const uint8_t *tmp,
                                                      int64_t n_blocks, int64_t b, int c) {
  const uint8_t *src = tmp + (size_t)b * repack_shape<TYPE>::BLOCK_BYTES;
  if (TYPE == GT_Q8_0) {
    // native: d @0, qs[32] @2. planar: qs [B][32] | d [B]
    if (c < 2)
      copy16_from_u16(w + (size_t)b * 32 + (size_t)c * 16, src + 2 + c * 16);
    else
      ((uint16_t *)(w + (size_t)n_blocks * 32))[b] = *(const uint16_t *)src;
  } else {
    // native: ql[128] @0, qh[64] @128, scales[16] @192, d @208.
    // planar: ql [B][128] | qh [B][64] | scales [B][16] | d [B]
    if (c < 8)
      copy16_from_u16(w + (size_t)b * 128 + (size_t)c * 16, src + c * 16);
    else if (c < 12)
      copy16_from_u16(w + (size_t)n_blocks * 128 + (size_t)b * 64 + (size_t)(c - 8) * 16,
                      src + 128 + (c - 8) * 16);
    else if (c == 12)
      copy16_from_u16(w + (size_t)n_blocks * 192 + (size_t)b * 16, src + 192);
    else
      ((uint16_t *)(w + (size_t)n_blocks * 208))[b] = *(const uint16_t *)(src + 208);
  }
}

// One thread per piece; the pieces of a block are adjacent threads, so a warp
// writes whole runs of each section.
template <int TYPE>
__global__ static void repack_planar_kernel(uint8_t *w, const uint8_t *tmp, int64_t n_blocks) {
  pdl_trigger();
  pdl_wait();
  constexpr int STEPS = repack_shape<TYPE>::PIECES + 1;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_blocks * STEPS)
    return;
  repack_piece<TYPE>(w, tmp, n_blocks, i / STEPS, (int)(i % STEPS));
}

void launch_repack_planar(uint8_t *w, const uint8_t *tmp_native_copy, int type, int64_t n_rows,
                          int64_t n_cols, hx_stream st) {
  CU_ASSERT(type == GT_Q8_0 || type == GT_Q6_K);
  const int64_t qk = type == GT_Q8_0 ? QK8_0 : QK_K;
  CU_ASSERT(n_rows >= 1 && n_cols >= qk && n_cols % qk == 0);
  CU_ASSERT(((uintptr_t)w % 16) == 0 && ((uintptr_t)tmp_native_copy % 2) == 0);
  CU_ASSERT(w != tmp_native_copy);
  const int64_t n_blocks = n_rows * (n_cols / qk);
  const int64_t n_threads = n_blocks * (type == GT_Q8_0 ? 3 : 14);
  CU_ASSERT((n_threads + 255) / 256 < ((int64_t)1 << 31));
  if (type == GT_Q8_0)
    cu_launch(repack_planar_kernel<GT_Q8_0>, cdiv(n_threads, 256), 256, 0, st, w, tmp_native_copy,
              n_blocks);
  else
    cu_launch(repack_planar_kernel<GT_Q6_K>, cdiv(n_threads, 256), 256, 0, st, w, tmp_native_copy,
              n_blocks);
  CUDA_LAUNCH_CHECK();
}
