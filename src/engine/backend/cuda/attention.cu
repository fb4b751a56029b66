// attention.cu — the KV cache (store in F32/F16/Q8_0) and attention with GQA.
//
// One block handles one KV head, one query token and one split of the KV
// positions, for all G query heads that share the KV head, so every K/V row is
// read once per token. Each of the 4 warps walks batches of 4 positions with an
// online softmax; lane l holds dims l * NK .. l * NK + NK - 1, so a warp reads a
// head row with one vector load per lane. Warps merge in shared memory.
// Decode splits the positions over about 4 blocks per SM (the grid is fixed by
// the device and model so a captured graph replays at any position; each block
// derives its share from the current position) and a second kernel combines
// the splits.
#include "common.cuh"
#include "kernels.h"

#include <mma.h>

__device__ __forceinline__ float load_kv(const uint8_t *row, int type, int64_t i) {
  if (type == GT_F16)
    return __half2float(((const __half *)row)[i]);
  if (type == GT_F32)
    return ((const float *)row)[i];
  const cu_block_q8_0 *b = (const cu_block_q8_0 *)row + i / 32;
  return __half2float(b->d) * (float)b->qs[i % 32];
}

__global__ static void cache_store_kernel(uint8_t *cache, int type, size_t row_bytes,
                                          const float *src, size_t ss, int64_t n_cols,
                                          const int32_t *pos) {
  pdl_trigger();
  pdl_wait();
  int64_t t = blockIdx.y;
  uint8_t *row = cache + (size_t)pos[t] * row_bytes;
  const float *s = src + t * ss;
  if (type == GT_Q8_0) {
    int64_t blk = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (blk * 32 >= n_cols)
      return;
    float v = s[blk * 32 + lane];
    float amax = warp_max(fabsf(v));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    cu_block_q8_0 *b = (cu_block_q8_0 *)row + blk;
    b->qs[lane] = (int8_t)roundf(v * id);
    if (lane == 0)
      b->d = __float2half_rn(d);
    return;
  }
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_cols)
    return;
  if (type == GT_F16)
    ((__half *)row)[i] = __float2half_rn(s[i]);
  else
    ((float *)row)[i] = s[i];
}

void launch_cache_store(uint8_t *cache, int cache_type, size_t cache_row_bytes, const float *src,
                        size_t src_stride, int64_t n_cols, int64_t n_rows, const int32_t *pos,
                        hx_stream st) {
  CU_ASSERT(n_rows > 0 && n_rows < 65536);
  CU_ASSERT(cache_type == GT_F16 || cache_type == GT_F32 || cache_type == GT_Q8_0);
  CU_ASSERT(cache_type != GT_Q8_0 || n_cols % 32 == 0);
  dim3 grid(cdiv(n_cols, 256), (unsigned)n_rows);
  cu_launch(cache_store_kernel, grid, 256, 0, st, cache, cache_type, cache_row_bytes, src,
            src_stride, n_cols, pos);
  CUDA_LAUNCH_CHECK();
}

// Loads this lane's NK consecutive elements (dims lane * NK ..) of one KV head
// row. With vec set (D == 32 * NK and 16-byte aligned rows), F16 and F32 rows
// are read with one or two vector loads per lane, so a warp reads a whole head
// row in one or two instructions; otherwise element by element.
template <int NK>
__device__ __forceinline__ void load_kv_lane(float (&v)[NK], const uint8_t *row, int type,
                                             int64_t base, int lane, int D, bool vec) {
  int64_t i0 = base + (int64_t)lane * NK;
  if (vec && type == GT_F16) {
    const __half *h = (const __half *)row + i0;
    if (NK == 8) {
      uint4 u = *(const uint4 *)h;
      const __half2 *p = (const __half2 *)&u;
#pragma unroll
      for (int k = 0; k < NK / 2; k++) {
        float2 f = __half22float2(p[k]);
        v[2 * k] = f.x, v[2 * k + 1] = f.y;
      }
      return;
    }
    if (NK == 4) {
      uint2 u = *(const uint2 *)h;
      const __half2 *p = (const __half2 *)&u;
#pragma unroll
      for (int k = 0; k < NK / 2; k++) {
        float2 f = __half22float2(p[k]);
        v[2 * k] = f.x, v[2 * k + 1] = f.y;
      }
      return;
    }
    if (NK == 2) {
      float2 f = __half22float2(*(const __half2 *)h);
      v[0] = f.x, v[NK - 1] = f.y;
      return;
    }
  }
  if (vec && type == GT_F32 && NK >= 4) {
    const float4 *f4 = (const float4 *)((const float *)row + i0);
#pragma unroll
    for (int k = 0; k < NK / 4; k++) {
      float4 f = f4[k];
      v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
    }
    return;
  }
  if (vec && type == GT_Q8_0) { /* NK divides 32: the lane's dims share one block */
    const cu_block_q8_0 *b = (const cu_block_q8_0 *)row + i0 / 32;
    float d = __half2float(b->d);
#pragma unroll
    for (int k = 0; k < NK; k++)
      v[k] = d * (float)b->qs[i0 % 32 + k];
    return;
  }
#pragma unroll
  for (int k = 0; k < NK; k++) {
    int d = lane * NK + k;
    v[k] = d < D ? load_kv(row, type, base + d) : 0.0f;
  }
}

// Positions per split of a decode attention: the current length spread over
// all splits (rounded to whole batches), so every depth uses the whole grid.
__device__ __forceinline__ int64_t attn_chunk(int64_t n_pos, int n_splits) {
  if (n_splits == 1)
    return n_pos;
  int64_t c = (n_pos + n_splits - 1) / n_splits;
  return (c + 7) / 8 * 8;
}

size_t attn_partial_floats(int n_heads, int head_dim, int n_splits) {
  return (size_t)n_heads * (size_t)n_splits * (size_t)(head_dim + 2);
}

// Positions per batch: 4 for G <= 4 (128 registers, 4 blocks per SM, so the
// decode grid of ~4 blocks per SM runs in one wave; batches of 8 took 168
// registers and two waves: 8B Q4_K_M decode at depth 16k 112 -> 158 tok/s),
// 8 for G = 5 and 8, where 4 measured slower (32B d16k 42.7 -> 37.5 tok/s).
enum { ATT_WARPS = 4 };
template <int G> struct att_batch { static constexpr int n = G <= 4 ? 4 : 8; };

// One batch of AB positions' scores (partial per lane in sc) into a warp's
// online softmax: the scores summed across the warp, then per head the running
// max, the rescale of the sum and accumulator, and the batch's V rows added.
// Positions pb + j at or past p1 do not count.
template <int AB, int G, int NK>
__device__ __forceinline__ void softmax_batch(float (&sc)[AB][G], const float (&vv)[AB][NK],
                                              int64_t pb, int64_t p1, float (&m)[G], float (&l)[G],
                                              float (&acc)[G][NK]) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int j = 0; j < AB; j++)
#pragma unroll
      for (int g = 0; g < G; g++)
        sc[j][g] += __shfl_xor_sync(0xffffffffu, sc[j][g], o);
#pragma unroll
  for (int g = 0; g < G; g++) {
    float mb = m[g];
#pragma unroll
    for (int j = 0; j < AB; j++)
      if (pb + j < p1)
        mb = fmaxf(mb, sc[j][g]);
    const float corr = __expf(m[g] - mb);
    l[g] *= corr;
#pragma unroll
    for (int k = 0; k < NK; k++)
      acc[g][k] *= corr;
#pragma unroll
    for (int j = 0; j < AB; j++) {
      const float e = pb + j < p1 ? __expf(sc[j][g] - mb) : 0.0f;
      l[g] += e;
#pragma unroll
      for (int k = 0; k < NK; k++)
        acc[g][k] = fmaf(e, vv[j][k], acc[g][k]);
    }
    m[g] = mb;
  }
}

// The block's warps' (max, sum, accumulator) per head, left in sm as
// [ATT_WARPS][G][D + 2], merged: the G heads of KV head kvh written to out_row
// (one split) or to the split's partials (several).
__device__ __forceinline__ void merge_warps(const float *sm, int G, int D, int kvh, float *out_row,
                                            float *partial, int n_splits, int split) {
  const int W = D + 2;
  for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
    const int g = e / D, d = e % D;
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++)
      M = fmaxf(M, sm[(w * G + g) * W]);
    float L = 0.0f, A = 0.0f;
    if (M != -INFINITY) {
      for (int w = 0; w < ATT_WARPS; w++) {
        const float *s = sm + (w * G + g) * W;
        const float f = __expf(s[0] - M);
        L += s[1] * f;
        A += s[2 + d] * f;
      }
    }
    const int h = kvh * G + g;
    if (n_splits == 1) {
      out_row[(size_t)h * D + d] = L > 0.0f ? A / L : 0.0f;
    } else {
      float *pp = partial + ((size_t)h * n_splits + split) * W;
      if (d == 0)
        pp[0] = M, pp[1] = L;
      pp[2 + d] = A;
    }
  }
}

// partial layout per (token 0 only when split) head h, split s:
//   [(h * n_splits + s) * (D + 2)] = m, +1 = l, +2.. = acc[D]
template <int G, int NK>
__global__ static void __launch_bounds__(ATT_WARPS * 32)
    attn_kernel(float *out, size_t os, const float *q, size_t qs, const uint8_t *kc,
                const uint8_t *vc, int type, size_t rb, const int32_t *pos, int D, float scale,
                int n_splits, bool vec, float *partial) {
  pdl_trigger();
  {
    /* Before waiting for q: ask L2 for this block's K/V rows of earlier
       positions (written by earlier steps; the current one is being stored by
       the kernel before this). pos is uploaded before the step. */
    const int64_t n_pos = (int64_t)pos[blockIdx.y] + 1, chunk = attn_chunk(n_pos, n_splits);
    const int64_t p0 = (int64_t)blockIdx.z * chunk;
    const int64_t p1 = min(p0 + chunk, n_pos - 1);
    const size_t esz = type == GT_F32 ? 4 : 2;
    const size_t off =
        type == GT_Q8_0 ? (size_t)blockIdx.x * (D / 32) * 34 : (size_t)blockIdx.x * D * esz;
    const size_t len = type == GT_Q8_0 ? (size_t)(D / 32) * 34 : (size_t)D * esz;
    const int lines = (int)((len + 127) / 128);
    if (gridDim.y == 1 && p1 > p0) { /* decode */
      const int64_t n_lines = (p1 - p0) * lines * 2;
      for (int64_t i = threadIdx.x; i < n_lines; i += ATT_WARPS * 32) {
        const int64_t r = p0 + i / (2 * lines);
        const int c = (int)(i % (2 * lines));
        const uint8_t *base =
            (c < lines ? kc : vc) + (size_t)r * rb + off + (size_t)(c % lines) * 128;
        asm volatile("prefetch.global.L2 [%0];" ::"l"(base));
      }
    }
  }
  pdl_wait();
  extern __shared__ float sm[]; // [ATT_WARPS][G][D + 2]
  int kvh = blockIdx.x, t = blockIdx.y;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int64_t n_pos = (int64_t)pos[t] + 1;
  int64_t chunk = attn_chunk(n_pos, n_splits);
  if ((int64_t)blockIdx.z * chunk >= n_pos)
    return; /* no split of this block holds a position yet */
  float qr[G][NK], acc[G][NK], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; g++) {
    const float *qh = q + (size_t)t * qs + (size_t)(kvh * G + g) * D;
#pragma unroll
    for (int k = 0; k < NK; k++) {
      int d = lane * NK + k;
      qr[g][k] = d < D ? qh[d] * scale : 0.0f;
    }
  }
  for (int split = blockIdx.z; split < n_splits && (int64_t)split * chunk < n_pos;
       split += gridDim.z) { /* one split per block: gridDim.z == n_splits */
    int64_t p0 = (int64_t)split * chunk, p1 = min(p0 + chunk, n_pos);
#pragma unroll
    for (int g = 0; g < G; g++) {
#pragma unroll
      for (int k = 0; k < NK; k++)
        acc[g][k] = 0.0f;
      m[g] = -INFINITY;
      l[g] = 0.0f;
    }
    constexpr int AB = att_batch<G>::n;
    // Warp w takes batches of AB consecutive positions; all K/V loads of
    // a batch are issued before any use so their latencies overlap.
    for (int64_t pb = p0 + (int64_t)warp * AB; pb < p1; pb += ATT_WARPS * AB) {
      float kv[AB][NK], vv[AB][NK];
#pragma unroll
      for (int j = 0; j < AB; j++) {
        int64_t p = pb + j < p1 ? pb + j : p1 - 1;
        const uint8_t *krow = kc + (size_t)p * rb, *vrow = vc + (size_t)p * rb;
        load_kv_lane<NK>(kv[j], krow, type, (int64_t)kvh * D, lane, D, vec);
        load_kv_lane<NK>(vv[j], vrow, type, (int64_t)kvh * D, lane, D, vec);
      }
      // scores of the whole batch first: 8 x G independent reductions
      float sc[AB][G];
#pragma unroll
      for (int j = 0; j < AB; j++)
#pragma unroll
        for (int g = 0; g < G; g++) {
          float d = 0.0f;
#pragma unroll
          for (int k = 0; k < NK; k++)
            d = fmaf(qr[g][k], kv[j][k], d);
          sc[j][g] = d;
        }
      softmax_batch<AB, G, NK>(sc, vv, pb, p1, m, l, acc);
    }
    // merge warps
    int W = D + 2;
#pragma unroll
    for (int g = 0; g < G; g++) {
      float *s = sm + (warp * G + g) * W;
      if (lane == 0)
        s[0] = m[g], s[1] = l[g];
#pragma unroll
      for (int k = 0; k < NK; k++) {
        int d = lane * NK + k;
        if (d < D)
          s[2 + d] = acc[g][k];
      }
    }
    __syncthreads();
    merge_warps(sm, G, D, kvh, out + (size_t)t * os, partial, n_splits, split);
    __syncthreads(); /* the next split reuses the shared merge area */
  }
}

// Combines the splits of a decode attention: only splits that hold positions
// up to pos[0] are read (the rest were never written this step); the split
// loop is unrolled so the partials' loads overlap. With q8 set (head_dim a
// multiple of 32) it also writes the q8_1 blocks of the output row for the
// o-projection's mat-vec: each warp's 32 consecutive dims are one block, so
// the quantize step needs no launch of its own.
__global__ static void attn_combine_kernel(float *out, const float *partial, int D, int n_splits,
                                           const int32_t *pos, cu_block_q8_1 *q8) {
  pdl_trigger();
  pdl_wait();
  int h = blockIdx.x;
  int W = D + 2;
  int64_t n_pos = (int64_t)pos[0] + 1, chunk = attn_chunk(n_pos, n_splits);
  int n_act = (int)min((int64_t)n_splits, (n_pos + chunk - 1) / chunk);
  const float *pp = partial + (size_t)h * n_splits * W;
  float M = -INFINITY;
  for (int s = 0; s < n_act; s++)
    M = fmaxf(M, pp[s * W]);
  const int lane = threadIdx.x & 31;
  for (int d0 = threadIdx.x - lane; d0 < D; d0 += blockDim.x) {
    const int d = d0 + lane; /* whole warps stay in the loop (D % 32 == 0 with q8) */
    float L = 0.0f, A = 0.0f;
    if (M != -INFINITY && d < D) {
#pragma unroll 8
      for (int s = 0; s < n_act; s++) {
        float f = __expf(pp[s * W] - M);
        L += pp[s * W + 1] * f;
        A += pp[s * W + 2 + d] * f;
      }
    }
    const float v = L > 0.0f ? A / L : 0.0f;
    if (d < D)
      out[(size_t)h * D + d] = v;
    if (q8) {
      warp_quantize_q8_1(v, q8 + ((size_t)h * D + d0) / 32, lane);
    }
  }
}

// Decode attention with the K/V rows staged through shared memory by
// cp.async, three batches ahead per warp: the generic loop above issues a
// batch's loads and waits for them before its math, so each warp has one
// batch in flight and long contexts ran at a fraction of HBM bandwidth (8B at
// depth 16k: ~97 us of attention per layer for 67 MB of K/V). F16 cache,
// head_dim = 32 * NK, 16-byte aligned rows; decode only (one token). Each warp
// owns a ring of AS_STAGES batches of AS_B positions, K row then V row per
// position; the block's merge reuses the same shared memory afterwards.
enum { AS_STAGES = 3, AS_B = 4 };

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

static size_t attn_async_smem(int G, int D) {
  const size_t ring = (size_t)ATT_WARPS * AS_STAGES * AS_B * 2 * D * sizeof(__half);
  const size_t merge = (size_t)ATT_WARPS * G * (D + 2) * sizeof(float);
  return ring > merge ? ring : merge;
}

// One halving round of a warp reduce-scatter: a lane keeps the half of its
// values its bit o selects and adds the partner's copy of that half.
template <int HALF> __device__ __forceinline__ void rs_step(float *v, int o, bool up) {
#pragma unroll
  for (int i = 0; i < HALF; i++) {
    const float send = up ? v[i] : v[i + HALF];
    const float keep = up ? v[i + HALF] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
  }
}

template <int G, int NK>
__global__ static void __launch_bounds__(ATT_WARPS * 32)
    attn_decode_async(float *out, const float *q, const uint8_t *kc, const uint8_t *vc, size_t rb,
                      const int32_t *pos, float scale, int n_splits, float *partial) {
  constexpr int D = 32 * NK;
  pdl_trigger();
  const int kvh = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n_pos = (int64_t)pos[0] + 1, chunk = attn_chunk(n_pos, n_splits);
  const int64_t p0 = (int64_t)blockIdx.z * chunk;
  const int64_t p1 = min(p0 + chunk, n_pos);
  {
    /* before waiting for q: ask L2 for this split's K/V rows of earlier
       positions (the current one is being stored by the kernel before) */
    const int64_t pe = min(p0 + chunk, n_pos - 1);
    const int64_t n_lines = pe > p0 ? (pe - p0) * (D * 2 / 128) * 2 : 0;
    for (int64_t i = threadIdx.x; i < n_lines; i += ATT_WARPS * 32) {
      const int per = D * 2 / 128;
      const int64_t r = p0 + i / (2 * per);
      const int c = (int)(i % (2 * per));
      const uint8_t *base =
          (c < per ? kc : vc) + (size_t)r * rb + (size_t)kvh * D * 2 + (size_t)(c % per) * 128;
      asm volatile("prefetch.global.L2 [%0];" ::"l"(base));
    }
  }
  pdl_wait();
  if (p0 >= n_pos)
    return; /* no position in this split yet */
  extern __shared__ __align__(16) unsigned char smraw[];
  __half *ring = (__half *)smraw + (size_t)warp * AS_STAGES * AS_B * 2 * D;
  float qr[G][NK], acc[G][NK], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; g++) {
    const float *qh = q + (size_t)(kvh * G + g) * D;
#pragma unroll
    for (int k = 0; k < NK; k++)
      qr[g][k] = qh[lane * NK + k] * scale;
#pragma unroll
    for (int k = 0; k < NK; k++)
      acc[g][k] = 0.0f;
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  float m_d = -INFINITY, l_d = 0.0f; /* G = 4, 8: this lane's head's running max and sum */
  const int64_t first = p0 + (int64_t)warp * AS_B, step = (int64_t)ATT_WARPS * AS_B;
  const int n_it = first < p1 ? (int)((p1 - first + step - 1) / step) : 0;
  /* batch i of this warp → its ring stage: 16-byte pieces, K then V per position */
  auto issue = [&](int i) {
    __half *st = ring + (size_t)(i % AS_STAGES) * AS_B * 2 * D;
    const int64_t pb = first + (int64_t)i * step;
    constexpr int PIECES = AS_B * 2 * D / 8; /* 16-byte pieces per batch */
#pragma unroll
    for (int c = lane; c < PIECES; c += 32) {
      const int j = c / (2 * D / 8), w = c % (2 * D / 8), isv = w / (D / 8), pc = w % (D / 8);
      const int64_t p = pb + j < p1 ? pb + j : p1 - 1;
      const uint8_t *src = (isv ? vc : kc) + (size_t)p * rb + (size_t)kvh * D * 2 + pc * 16;
      cp_async16(st + j * 2 * D + isv * D + pc * 8, src);
    }
  };
#pragma unroll
  for (int s = 0; s < AS_STAGES - 1; s++) {
    if (s < n_it)
      issue(s);
    cp_async_commit();
  }
  for (int it = 0; it < n_it; it++) {
    __syncwarp(); /* the stage about to be refilled has been read */
    if (it + AS_STAGES - 1 < n_it)
      issue(it + AS_STAGES - 1);
    cp_async_commit();
    cp_async_wait<AS_STAGES - 1>(); /* batch it has landed (this lane's pieces) */
    __syncwarp();                   /* ... and every lane's */
    const __half *st = ring + (size_t)(it % AS_STAGES) * AS_B * 2 * D;
    const int64_t pb = first + (int64_t)it * step;
    float kv[AS_B][NK], vv[AS_B][NK];
#pragma unroll
    for (int j = 0; j < AS_B; j++) {
#pragma unroll
      for (int k = 0; k < NK; k += 2) {
        const float2 a = __half22float2(*(const __half2 *)(st + j * 2 * D + lane * NK + k));
        const float2 b = __half22float2(*(const __half2 *)(st + j * 2 * D + D + lane * NK + k));
        kv[j][k] = a.x, kv[j][k + 1] = a.y;
        vv[j][k] = b.x, vv[j][k + 1] = b.y;
      }
    }
    float sc[AS_B][G];
#pragma unroll
    for (int j = 0; j < AS_B; j++)
#pragma unroll
      for (int g = 0; g < G; g++) {
        float d = 0.0f;
#pragma unroll
        for (int k = 0; k < NK; k++)
          d = fmaf(qr[g][k], kv[j][k], d);
        sc[j][g] = d;
      }
    constexpr int NV = AS_B * G;         /* scores per batch */
    constexpr int SH = NV == 16 ? 1 : 0; /* lanes per score after the reduce-scatter: 1 << SH */
    if constexpr (NV == 32 || NV == 16) {
      /* 8 or 4 query heads per KV head: reduce-scatter the NV partial scores
         so lane l holds the whole sum for score i = l >> SH (position i / G,
         head i % G) — 31 (NV 32) or 16 (NV 16) shuffles instead of 5 NV —
         run the online softmax on that layout (two exps per lane instead of
         NV + G) and broadcast back what the V sums need */
      float v[NV];
#pragma unroll
      for (int j = 0; j < AS_B; j++)
#pragma unroll
        for (int g = 0; g < G; g++)
          v[j * G + g] = sc[j][g];
      rs_step<NV / 2>(v, 16, lane & 16);
      rs_step<NV / 4>(v, 8, lane & 8);
      rs_step<NV / 8>(v, 4, lane & 4);
      rs_step<NV / 16>(v, 2, lane & 2);
      if constexpr (NV == 32)
        rs_step<1>(v, 1, lane & 1);
      else
        v[0] += __shfl_xor_sync(0xffffffffu, v[0], 1);
      const bool valid = pb + (lane >> SH) / G < p1;
      const float sv = valid ? v[0] : -INFINITY;
      float mb = fmaxf(sv, __shfl_xor_sync(0xffffffffu, sv, 8)); /* lanes g, g+8, g+16, g+24 */
      mb = fmaxf(mb, __shfl_xor_sync(0xffffffffu, mb, 16));
      const float mnew = fmaxf(m_d, mb);
      const float corr = __expf(m_d - mnew);
      const float e = valid ? __expf(sv - mnew) : 0.0f;
      float es = e + __shfl_xor_sync(0xffffffffu, e, 8);
      es += __shfl_xor_sync(0xffffffffu, es, 16);
      l_d = l_d * corr + es;
      m_d = mnew;
#pragma unroll
      for (int g = 0; g < G; g++) {
        const float cg = __shfl_sync(0xffffffffu, corr, g << SH);
#pragma unroll
        for (int k = 0; k < NK; k++)
          acc[g][k] *= cg;
#pragma unroll
        for (int j = 0; j < AS_B; j++) {
          const float ej = __shfl_sync(0xffffffffu, e, (j * G + g) << SH);
#pragma unroll
          for (int k = 0; k < NK; k++)
            acc[g][k] = fmaf(ej, vv[j][k], acc[g][k]);
        }
      }
    } else {
      softmax_batch<AS_B, G, NK>(sc, vv, pb, p1, m, l, acc);
    }
  }
  cp_async_wait<0>();
  __syncthreads(); /* the rings become the merge area */
  float *sm = (float *)smraw;
  const int W = D + 2;
#pragma unroll
  for (int g = 0; g < G; g++) {
    float *s = sm + (warp * G + g) * W;
    if (AS_B * G == 32 || AS_B * G == 16) {
      if (lane == g << (AS_B * G == 16 ? 1 : 0)) /* the lanes of head g hold its max and sum */
        s[0] = m_d, s[1] = l_d;
    } else if (lane == 0) {
      s[0] = m[g], s[1] = l[g];
    }
#pragma unroll
    for (int k = 0; k < NK; k++)
      s[2 + lane * NK + k] = acc[g][k];
  }
  __syncthreads();
  merge_warps(sm, G, D, kvh, out, partial, n_splits, blockIdx.z);
}

template <int G>
static void launch_async_g(int nk, dim3 grid, size_t smem, cudaStream_t st, float *out,
                           const float *q, const uint8_t *kc, const uint8_t *vc, size_t rb,
                           const int32_t *pos, float scale, int n_splits, float *partial) {
#define AS_LAUNCH(NK)                                                                              \
  do {                                                                                             \
    static unsigned long long raised;                                                              \
    cu_smem_limit(attn_decode_async<G, NK>, 96 * 1024, &raised);                                   \
    cu_launch(attn_decode_async<G, NK>, grid, ATT_WARPS * 32, smem, st, out, q, kc, vc, rb, pos,   \
              scale, n_splits, partial);                                                           \
  } while (0)
  switch (nk) {
  case 2:
    AS_LAUNCH(2);
    break;
  case 4:
    AS_LAUNCH(4);
    break;
  default:
    AS_LAUNCH(8);
    break;
  }
#undef AS_LAUNCH
}

template <int G>
static void launch_g(int nk, dim3 grid, size_t smem, cudaStream_t st, float *out, size_t os,
                     const float *q, size_t qs, const uint8_t *kc, const uint8_t *vc, int type,
                     size_t rb, const int32_t *pos, int D, float scale, int n_splits, bool vec,
                     float *partial) {
#define ATT_LAUNCH(NK)                                                                             \
  cu_launch(attn_kernel<G, NK>, grid, ATT_WARPS * 32, smem, st, out, os, q, qs, kc, vc, type, rb,  \
            pos, D, scale, n_splits, vec, partial)
  switch (nk) {
  case 1:
    ATT_LAUNCH(1);
    break;
  case 2:
    ATT_LAUNCH(2);
    break;
  case 4:
    ATT_LAUNCH(4);
    break;
  default:
    ATT_LAUNCH(8);
    break;
  }
#undef ATT_LAUNCH
}

// Prefill attention on tensor cores (F16 cache, head_dim 64, 128 or 256). A
// block takes 16 query rows that share one KV head: 16 / G consecutive tokens
// times the G heads of the group (3 x 5 rows for G = 5, the 16th row idle), so
// every K/V tile staged in shared memory serves all of them. Per tile of 32
// positions: S = Q Kᵀ (wmma, f32 accumulate), an online softmax per row with
// the causal mask (one warp per 4 rows, one lane per position), then O += P V
// (wmma; O kept in shared memory so the softmax can rescale it). Positions
// past the tile's last query are zero-filled so unwritten cache rows never
// reach the products. The tiles live in dynamic shared memory (head_dim 256
// needs about 62 KB, past the 48 KB a static array may take).
enum { PF_ROWS = 16, PF_NT = 32 };

// The shared-memory carve-up of attn_prefill_wmma for head_dim D: offsets in
// bytes, each 128-byte aligned (wmma wants 32).
template <int D> struct pf_layout {
  static constexpr int LDH = D + 8, LDO = D + 4, LDS = PF_NT + 4, LDP = PF_NT + 8;
  static constexpr size_t up(size_t b) { return (b + 127) / 128 * 128; }
  static constexpr size_t q = 0;
  static constexpr size_t k = q + up(sizeof(__half) * PF_ROWS * LDH);
  static constexpr size_t v = k + up(sizeof(__half) * PF_NT * LDH);
  static constexpr size_t o = v + up(sizeof(__half) * PF_NT * LDH);
  static constexpr size_t s = o + up(sizeof(float) * PF_ROWS * LDO);
  static constexpr size_t p = s + up(sizeof(float) * PF_ROWS * LDS);
  static constexpr size_t rp = p + up(sizeof(__half) * PF_ROWS * LDP);
  static constexpr size_t rl = rp + up(sizeof(int) * PF_ROWS);
  static constexpr size_t bytes = rl + up(sizeof(float) * PF_ROWS);
};

template <int G, int D>
__global__ static void __launch_bounds__(128)
    attn_prefill_wmma(float *out, size_t os, const float *q, size_t qs, const uint8_t *kc,
                      const uint8_t *vc, size_t rb, const int32_t *pos, int64_t n_tokens,
                      float scale) {
  pdl_trigger();
  pdl_wait();
  using L = pf_layout<D>;
  constexpr int TOK = PF_ROWS / G, LDH = L::LDH, LDO = L::LDO, LDS = L::LDS, LDP = L::LDP;
  extern __shared__ __align__(128) unsigned char pf_sm[];
  __half *Qs = (__half *)(pf_sm + L::q), *Ks = (__half *)(pf_sm + L::k);
  __half *Vs = (__half *)(pf_sm + L::v), *Ps = (__half *)(pf_sm + L::p);
  float *Os = (float *)(pf_sm + L::o), *Ss = (float *)(pf_sm + L::s);
  int *rowpos = (int *)(pf_sm + L::rp);
  float *rowl = (float *)(pf_sm + L::rl);
  int kvh = blockIdx.x;
  int64_t t0 = (int64_t)blockIdx.y * TOK;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (threadIdx.x < PF_ROWS) {
    int64_t t = t0 + threadIdx.x / G;
    rowpos[threadIdx.x] = threadIdx.x < TOK * G && t < n_tokens ? pos[t] : -1;
  }
  for (int e = threadIdx.x; e < PF_ROWS * D; e += blockDim.x) {
    int r = e / D, d = e % D;
    int64_t t = t0 + r / G;
    float v = 0.0f;
    if (r < TOK * G && t < n_tokens)
      v = q[(size_t)t * qs + (size_t)(kvh * G + r % G) * D + d] * scale;
    Qs[r * LDH + d] = __float2half_rn(v);
    Os[r * LDO + d] = 0.0f;
  }
  __syncthreads();
  int pmax = -1;
#pragma unroll
  for (int r = 0; r < PF_ROWS; r++)
    pmax = max(pmax, rowpos[r]);
  int64_t n_pos = (int64_t)pmax + 1;
  float m[4], l[4]; /* this warp's rows 4 * warp + i; every lane holds them */
#pragma unroll
  for (int i = 0; i < 4; i++)
    m[i] = -INFINITY, l[i] = 0.0f;
  for (int64_t p0 = 0; p0 < n_pos; p0 += PF_NT) {
    constexpr int V8 = D / 8; /* 16-byte pieces per row */
    for (int e = threadIdx.x; e < PF_NT * V8; e += blockDim.x) {
      int j = e / V8, c = e % V8;
      int64_t p = p0 + j;
      uint4 kk = make_uint4(0, 0, 0, 0), vv = kk;
      if (p < n_pos) {
        kk = ((const uint4 *)(kc + (size_t)p * rb + (size_t)kvh * D * 2))[c];
        vv = ((const uint4 *)(vc + (size_t)p * rb + (size_t)kvh * D * 2))[c];
      }
      *(uint4 *)&Ks[j * LDH + c * 8] = kk;
      *(uint4 *)&Vs[j * LDH + c * 8] = vv;
    }
    __syncthreads();
    if (warp < PF_NT / 16) {
      nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> sf;
      nvcuda::wmma::fill_fragment(sf, 0.0f);
#pragma unroll
      for (int k = 0; k < D / 16; k++) {
        nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major>
            a;
        nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, nvcuda::wmma::col_major>
            b;
        nvcuda::wmma::load_matrix_sync(a, Qs + k * 16, LDH);
        nvcuda::wmma::load_matrix_sync(b, Ks + warp * 16 * LDH + k * 16, LDH);
        nvcuda::wmma::mma_sync(sf, a, b, sf);
      }
      nvcuda::wmma::store_matrix_sync(Ss + warp * 16, sf, LDS, nvcuda::wmma::mem_row_major);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int r = warp * 4 + i;
      bool ok = p0 + lane <= (int64_t)rowpos[r];
      float sc = ok ? Ss[r * LDS + lane] : -INFINITY;
      float mn = fmaxf(m[i], warp_max(sc));
      float pr = ok ? __expf(sc - mn) : 0.0f;
      float corr = m[i] == -INFINITY ? 0.0f : __expf(m[i] - mn);
      l[i] = l[i] * corr + warp_sum(pr);
      m[i] = mn;
      Ps[r * LDP + lane] = __float2half_rn(pr);
      for (int d = lane; d < D; d += 32)
        Os[r * LDO + d] *= corr;
    }
    __syncthreads();
    for (int f = warp; f < D / 16; f += 4) {
      nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> of;
      nvcuda::wmma::load_matrix_sync(of, Os + f * 16, LDO, nvcuda::wmma::mem_row_major);
#pragma unroll
      for (int k = 0; k < PF_NT / 16; k++) {
        nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major>
            a;
        nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, nvcuda::wmma::row_major>
            b;
        nvcuda::wmma::load_matrix_sync(a, Ps + k * 16, LDP);
        nvcuda::wmma::load_matrix_sync(b, Vs + k * 16 * LDH + f * 16, LDH);
        nvcuda::wmma::mma_sync(of, a, b, of);
      }
      nvcuda::wmma::store_matrix_sync(Os + f * 16, of, LDO, nvcuda::wmma::mem_row_major);
    }
    __syncthreads();
  }
  if (lane == 0)
#pragma unroll
    for (int i = 0; i < 4; i++)
      rowl[warp * 4 + i] = l[i];
  __syncthreads();
  for (int e = threadIdx.x; e < PF_ROWS * D; e += blockDim.x) {
    int r = e / D, d = e % D;
    int64_t t = t0 + r / G;
    if (r >= TOK * G || t >= n_tokens)
      continue;
    float L = rowl[r];
    out[(size_t)t * os + (size_t)(kvh * G + r % G) * D + d] = L > 0.0f ? Os[r * LDO + d] / L : 0.0f;
  }
}

template <int G, int D>
static void launch_prefill_gd(dim3 grid, cudaStream_t st, float *out, size_t os, const float *q,
                              size_t qs, const uint8_t *kc, const uint8_t *vc, size_t rb,
                              const int32_t *pos, int64_t n_tokens, float scale) {
  constexpr size_t bytes = pf_layout<D>::bytes;
  static unsigned long long raised; /* past 48 KB the limit must be raised */
  if (bytes > 48 * 1024)
    cu_smem_limit(attn_prefill_wmma<G, D>, bytes, &raised);
  cu_launch(attn_prefill_wmma<G, D>, grid, 128, bytes, st, out, os, q, qs, kc, vc, rb, pos,
            n_tokens, scale);
}

template <int G>
static void launch_prefill_g(int D, dim3 grid, cudaStream_t st, float *out, size_t os,
                             const float *q, size_t qs, const uint8_t *kc, const uint8_t *vc,
                             size_t rb, const int32_t *pos, int64_t n_tokens, float scale) {
  if (D == 64)
    launch_prefill_gd<G, 64>(grid, st, out, os, q, qs, kc, vc, rb, pos, n_tokens, scale);
  else if (D == 128)
    launch_prefill_gd<G, 128>(grid, st, out, os, q, qs, kc, vc, rb, pos, n_tokens, scale);
  else
    launch_prefill_gd<G, 256>(grid, st, out, os, q, qs, kc, vc, rb, pos, n_tokens, scale);
}

// CALL(g) with g the compile-time form of the query heads per KV head G
// (1-6 or 8, as launch_attention asserts).
#define G_DISPATCH(G, CALL)                                                                        \
  switch (G) {                                                                                     \
  case 1:                                                                                          \
    CALL(1);                                                                                       \
    break;                                                                                         \
  case 2:                                                                                          \
    CALL(2);                                                                                       \
    break;                                                                                         \
  case 3:                                                                                          \
    CALL(3);                                                                                       \
    break;                                                                                         \
  case 4:                                                                                          \
    CALL(4);                                                                                       \
    break;                                                                                         \
  case 5:                                                                                          \
    CALL(5);                                                                                       \
    break;                                                                                         \
  case 6:                                                                                          \
    CALL(6);                                                                                       \
    break;                                                                                         \
  default:                                                                                         \
    CALL(8);                                                                                       \
    break;                                                                                         \
  }

void launch_attention(float *out, size_t out_stride, const float *q, size_t q_stride,
                      const uint8_t *k_cache, const uint8_t *v_cache, int cache_type,
                      size_t cache_row_bytes, const int32_t *pos, int64_t n_tokens, int n_heads,
                      int n_kv_heads, int head_dim, float scale, int64_t max_ctx, float *partial,
                      int n_splits_max, void *q8_out, hx_stream st) {
  CU_ASSERT(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && head_dim > 0 && head_dim <= 256);
  CU_ASSERT(n_tokens > 0 && n_tokens < 65536 && max_ctx > 0);
  int G = n_heads / n_kv_heads;
  /* 5: Qwen3-14B (40/8); 6: Qwen3.5-27B (24/4); 3: 3 query heads per KV head */
  CU_ASSERT(G == 1 || G == 2 || G == 3 || G == 4 || G == 5 || G == 6 || G == 8);
  if (n_tokens > 1 && cache_type == GT_F16 &&
      (head_dim == 64 || head_dim == 128 || head_dim == 256) && ((uintptr_t)k_cache % 16) == 0 &&
      ((uintptr_t)v_cache % 16) == 0 && cache_row_bytes % 16 == 0 && !getenv("HX_ATTN_NO_WMMA")) {
    dim3 grid((unsigned)n_kv_heads, cdiv(n_tokens, PF_ROWS / G));
#define PF_LAUNCH(GG)                                                                              \
  launch_prefill_g<GG>(head_dim, grid, st, out, out_stride, q, q_stride, k_cache, v_cache,         \
                       cache_row_bytes, pos, n_tokens, scale)
    G_DISPATCH(G, PF_LAUNCH);
#undef PF_LAUNCH
    CUDA_LAUNCH_CHECK();
    return;
  }
  int nk = (head_dim + 31) / 32;
  nk = nk <= 1 ? 1 : nk <= 2 ? 2 : nk <= 4 ? 4 : 8;
  int n_splits = 1;
  if (n_tokens == 1 && n_splits_max > 1) {
    /* about 4 blocks per SM over the KV heads, fixed by the device and the
       model (not the position) so a captured graph stays valid; each block's
       share of the positions is computed from pos on the device */
    static int n_sm;
    if (n_sm == 0)
      CUDA_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, 0));
    n_splits = n_sm > 0 ? 4 * n_sm / n_kv_heads : 1;
    n_splits = n_splits < 1 ? 1 : n_splits > n_splits_max ? n_splits_max : n_splits;
    if ((int64_t)n_splits > max_ctx)
      n_splits = (int)max_ctx;
  }
  bool vec = head_dim == 32 * nk && ((uintptr_t)k_cache % 16) == 0 &&
             ((uintptr_t)v_cache % 16) == 0 && cache_row_bytes % 16 == 0;
  size_t smem = (size_t)ATT_WARPS * G * (head_dim + 2) * sizeof(float);
  dim3 grid((unsigned)n_kv_heads, (unsigned)n_tokens, (unsigned)n_splits);
  static int async_off = -1;
  if (async_off < 0) {
    const char *e = getenv("HX_ATTN_ASYNC");
    async_off = e && e[0] == '0';
  }
  if (!async_off && n_tokens == 1 && cache_type == GT_F16 && vec && nk >= 2 &&
      head_dim == 32 * nk && attn_async_smem(G, head_dim) <= 96 * 1024) {
    const size_t asmem = attn_async_smem(G, head_dim);
#define ASG(GG)                                                                                    \
  launch_async_g<GG>(nk, grid, asmem, st, out, q, k_cache, v_cache, cache_row_bytes, pos, scale,   \
                     n_splits, partial)
    G_DISPATCH(G, ASG);
#undef ASG
  } else {
#define GEN(GG)                                                                                    \
  launch_g<GG>(nk, grid, smem, st, out, out_stride, q, q_stride, k_cache, v_cache, cache_type,     \
               cache_row_bytes, pos, head_dim, scale, n_splits, vec, partial)
    G_DISPATCH(G, GEN);
#undef GEN
  }
  CUDA_LAUNCH_CHECK();
  CU_ASSERT(!q8_out || (n_tokens == 1 && head_dim % 32 == 0));
  if (n_splits > 1) {
    cu_launch(attn_combine_kernel, (unsigned)n_heads, 128, 0, st, out, partial, head_dim, n_splits,
              pos, (cu_block_q8_1 *)q8_out);
    CUDA_LAUNCH_CHECK();
  } else if (q8_out) {
    launch_quantize_q8_1(q8_out, out, out_stride, (int64_t)n_heads * head_dim, 1, st);
  }
}
