// mmv_stream.cu — batch-1 mat-vecs that stream weights with 16-byte loads.
//
// Decode reads every weight byte once per token, so a mat-vec is bound by how
// many bytes each SM keeps in flight. The kernels of mmvq.cu give each lane one
// 32-weight sub-block at a time (a few 4-byte loads, the scale header decoded
// per sub-block); these give each lane 16-byte chunks of the quants, two rows
// per warp and four chunks per row issued before any is used (up to 128 bytes
// in flight per lane), and read the weights without allocating in L1.
//
// Layouts: Q4_K and Q5_K are read in their GGUF layouts (144- and 176-byte
// blocks: 16-aligned; Q5_K opt-in, HX_MV_Q5K=1);
// Q8_0 and Q6_K in the planar layouts of common.cuh (weight_prepare); F16/BF16/
// F32 rows 16 bytes at a time. Activations are the q8_1 blocks of
// launch_quantize_q8_1 (float rows for float weights).
//
// Lane mapping. Q4_K: 4 lanes per 256-weight super-block, 8 super-blocks per
// warp step; lane quarter p = lane % 4 takes quant bytes 16p.. (weights 16(p%2)..
// of sub-blocks 2(p/2) and 2(p/2)+1, low and high nibbles) and 64+16p.. (the
// same of sub-blocks 4+2(p/2), 5+2(p/2)), with one header load for both: every
// lane decodes scales 0-3 for its first chunk and 4-7 for its second, so the
// 6-bit scale unpacking never diverges within a warp. Q6_KP: 8 lanes per
// super-block (16 bytes of ql, 16 of qh each). Q8_0P: lane c takes half a block.
//
// Measured on an H100 (8B Q4_K_M decode, tok/s): this form (two rows per warp,
// a grid of one warp per row pair) and a persistent grid walking rows with the
// next batch's loads issued before computing the current one were a tie
// (252.5 vs 253.0) and BF16 lost 20% in the persistent form (144.5 -> 116.5):
// the mat-vec is bound by instructions per weight byte, not by loads in flight
// -- hence the uniform scale decoding (243 -> 287 tok/s). A two-stage pipeline
// per warp (the next batch's loads issued before the current batch's math)
// measured 278 against 287 and was dropped; ncu puts the big mat-vecs at ~2.45
// TB/s streaming plus a fixed ~6 us per launch (ramp and tail).
//
// One launch serves up to three jobs (q/k/v or gate/up) of any of these types;
// each warp takes two consecutive rows of one job.
#include "common.cuh"
#include "kernels.h"

#include <stdlib.h>

enum { MS_WARPS = 4, MS_ROWS = 2, MS_UNROLL = 4 };

__device__ __forceinline__ int byte_at(uint32_t v, int i) { return (int)((v >> (8 * i)) & 0xFF); }

// Before the PDL wait, a warp asks L2 for bytes [from, to) of a region (its
// rows beyond the first batch, which goes to registers): the whole of a row's
// weights is then on its way while the kernel before finishes.
__device__ __forceinline__ void warp_prefetch_l2(const uint8_t *p, int64_t from, int64_t to) {
  const int lane = threadIdx.x & 31;
  for (int64_t off = (from & ~(int64_t)127) + 128 * lane; off < to; off += 128 * 32)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
}

// Q4_K: scale and min of sub-block j from the 12 scale bytes s0|s1|s2.
__device__ __forceinline__ void q4k_scale_min(int j, uint32_t s0, uint32_t s1, uint32_t s2,
                                              float &sc, float &m) {
  if (j < 4) {
    sc = (float)(byte_at(s0, j) & 63);
    m = (float)(byte_at(s1, j) & 63);
  } else {
    sc = (float)((byte_at(s2, j - 4) & 0xF) | ((byte_at(s0, j - 4) >> 6) << 4));
    m = (float)((byte_at(s2, j - 4) >> 4) | ((byte_at(s1, j - 4) >> 6) << 4));
  }
}

// One warp, rows w[0], w[1] (GGUF Q4_K, or with Q5 GGUF Q5_K: 176-byte blocks,
// the same 16-byte header, then qh[32], then qs[128]), nb super-blocks per
// row. Q5_K keeps the Q4_K lane mapping; each lane also loads the 16 qh bytes
// of its 16 weights per sub-block (qh[16 hf ..]) and ORs bits 2g, 2g+1 (sub-
// blocks 2g, 2g+1) and 2g+4, 2g+5 (4+2g, 5+2g) into the nibbles as their fifth
// bit.
template <bool Q5>
__device__ __forceinline__ void rows_k45(const uint8_t *const w[MS_ROWS], int64_t nb,
                                         const cu_block_q8_1 *xq, float acc[MS_ROWS],
                                         bool wait_first, bool prefetch) {
  enum { U = 2, BB = Q5 ? 176 : 144, QS = Q5 ? 48 : 16 }; /* 8 super-blocks per step */
  const int lane = threadIdx.x & 31, p = lane & 3, g = p >> 1, hf = p & 1;
  if (prefetch && nb > U * 8)
#pragma unroll
    for (int r = 0; r < MS_ROWS; r++)
      warp_prefetch_l2(w[r], (int64_t)U * 8 * BB, nb * BB);
  for (int64_t i0 = 0; i0 * 8 < nb; i0 += U) {
    uint4 qa[MS_ROWS][U], qb[MS_ROWS][U], h[MS_ROWS][U], qh[MS_ROWS][Q5 ? U : 1];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int64_t sb = (i0 + u) * 8 + (lane >> 2);
#pragma unroll
      for (int r = 0; r < MS_ROWS; r++)
        if (sb < nb) {
          const uint8_t *blk = w[r] + (size_t)sb * BB;
          h[r][u] = ld_stream(blk);
          if constexpr (Q5)
            qh[r][u] = ld_stream(blk + 16 + 16 * hf);
          qa[r][u] = ld_stream(blk + QS + 16 * p);
          qb[r][u] = ld_stream(blk + QS + 64 + 16 * p);
        }
    }
    if (wait_first && i0 == 0)
      pdl_wait();
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int64_t sb = (i0 + u) * 8 + (lane >> 2);
      if (sb >= nb)
        break;
      /* activation: sub-blocks 2g, 2g+1 (first chunk), 4+2g, 5+2g (second) */
      int x0[4], x1[4], x2[4], x3[4];
      float2 d0, d1, d2, d3;
      ld_x16(xq, sb * 8 + 2 * g, hf, x0, d0);
      ld_x16(xq, sb * 8 + 2 * g + 1, hf, x1, d1);
      ld_x16(xq, sb * 8 + 2 * g + 4, hf, x2, d2);
      ld_x16(xq, sb * 8 + 2 * g + 5, hf, x3, d3);
#pragma unroll
      for (int r = 0; r < MS_ROWS; r++) {
        const uint4 qq = qa[r][u], qr = qb[r][u], hh = h[r][u];
        const int va[4] = {(int)qq.x, (int)qq.y, (int)qq.z, (int)qq.w};
        const int vb[4] = {(int)qr.x, (int)qr.y, (int)qr.z, (int)qr.w};
        int s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
          int h0 = 0, h1 = 0, h2 = 0, h3 = 0; /* fifth bits, already at bit 4 of each byte */
          if constexpr (Q5) {
            const uint4 hq = qh[r][u];
            const int hb = (int)(k == 0 ? hq.x : k == 1 ? hq.y : k == 2 ? hq.z : hq.w) >> (2 * g);
            h0 = (hb & 0x01010101) << 4, h1 = (hb & 0x02020202) << 3;
            h2 = ((hb >> 4) & 0x01010101) << 4, h3 = ((hb >> 4) & 0x02020202) << 3;
          }
          s0 = __dp4a((va[k] & 0x0F0F0F0F) | h0, x0[k], s0);
          s1 = __dp4a(((va[k] >> 4) & 0x0F0F0F0F) | h1, x1[k], s1);
          s2 = __dp4a((vb[k] & 0x0F0F0F0F) | h2, x2[k], s2);
          s3 = __dp4a(((vb[k] >> 4) & 0x0F0F0F0F) | h3, x3[k], s3);
        }
        /* scales j = 2g, 2g+1 (< 4) and 4+2g, 5+2g; the 12 bytes are hh.y|hh.z|hh.w */
        const int j0 = 2 * g, j1 = 2 * g + 1;
        const int a0 = byte_at(hh.y, j0), a1 = byte_at(hh.y, j1); /* scales 0-3 (+ high bits) */
        const int b0 = byte_at(hh.z, j0), b1 = byte_at(hh.z, j1); /* mins 0-3 (+ high bits) */
        const int c0 = byte_at(hh.w, j0), c1 = byte_at(hh.w, j1); /* low nibbles of 4-7 */
        const int sc0 = a0 & 63, sc1 = a1 & 63, m0 = b0 & 63, m1 = b1 & 63;
        const int sc2 = (c0 & 0xF) | ((a0 >> 6) << 4), sc3 = (c1 & 0xF) | ((a1 >> 6) << 4);
        const int m2 = (c0 >> 4) | ((b0 >> 6) << 4), m3 = (c1 >> 4) | ((b1 >> 6) << 4);
        const float2 dm = __half22float2(*(const __half2 *)&hh.x);
        float v = (float)(s0 * sc0) * d0.x + (float)(s1 * sc1) * d1.x + (float)(s2 * sc2) * d2.x +
                  (float)(s3 * sc3) * d3.x;
        v *= dm.x;
        if (hf == 0) /* the min term once per sub-block: x.s sums all 32 */
          v -= dm.y * ((float)m0 * d0.y + (float)m1 * d1.y + (float)m2 * d2.y + (float)m3 * d3.y);
        acc[r] += v;
      }
    }
  }
}

// One warp, rows r[0], r[1] of a planar Q6_K matrix (R rows, nb super-blocks
// per row) at base.
__device__ __forceinline__ void rows_q6kp(const uint8_t *base, int64_t R, const int64_t rr[MS_ROWS],
                                          int64_t nb, const cu_block_q8_1 *xq, float acc[MS_ROWS],
                                          bool wait_first, bool prefetch) {
  const int lane = threadIdx.x & 31, p = lane & 7, h = p >> 2, cc = p & 3;
  const int e_lo = h * 128 + 16 * cc, sh = cc < 2 ? 0 : 2;
  const uint8_t *ql[MS_ROWS], *qh[MS_ROWS];
  const int8_t *sc[MS_ROWS];
  const __half *dd[MS_ROWS];
#pragma unroll
  for (int r = 0; r < MS_ROWS; r++) {
    ql[r] = q6_kp_ql(base, rr[r], nb) + 16 * p;
    qh[r] = q6_kp_qh(base, R, rr[r], nb) + 32 * h + 16 * (cc & 1);
    sc[r] = q6_kp_sc(base, R, rr[r], nb);
    dd[r] = q6_kp_d(base, R, rr[r], nb);
  }
  if (prefetch && nb > MS_UNROLL * 4)
#pragma unroll
    for (int r = 0; r < MS_ROWS; r++) {
      warp_prefetch_l2(q6_kp_ql(base, rr[r], nb), MS_UNROLL * 4 * 128, nb * 128);
      warp_prefetch_l2(q6_kp_qh(base, R, rr[r], nb), MS_UNROLL * 4 * 64, nb * 64);
      warp_prefetch_l2((const uint8_t *)q6_kp_sc(base, R, rr[r], nb), 0, nb * 16);
    }
  for (int64_t i0 = 0; i0 * 4 < nb; i0 += MS_UNROLL) {
    uint4 l[MS_ROWS][MS_UNROLL], hb[MS_ROWS][MS_UNROLL];
    uint32_t sd[MS_ROWS][MS_UNROLL]; /* d (f16) | scale lo << 16 | scale hi << 24 */
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t sb = (i0 + u) * 4 + (lane >> 3);
#pragma unroll
      for (int r = 0; r < MS_ROWS; r++)
        if (sb < nb) {
          l[r][u] = ld_stream(ql[r] + (size_t)sb * 128);
          hb[r][u] = ld_stream(qh[r] + (size_t)sb * 64);
          const int8_t *s = sc[r] + (size_t)sb * 16 + h * 8 + cc;
          sd[r][u] = (uint32_t)__ldg((const unsigned short *)dd[r] + sb) |
                     ((uint32_t)(uint8_t)__ldg(s) << 16) | ((uint32_t)(uint8_t)__ldg(s + 4) << 24);
        }
    }
    if (wait_first && i0 == 0)
      pdl_wait();
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t sb = (i0 + u) * 4 + (lane >> 3);
      if (sb >= nb)
        break;
      int xa[4], xb[4];
      float2 da, db;
      ld_x16(xq, sb * 8 + e_lo / 32, cc & 1, xa, da);
      ld_x16(xq, sb * 8 + e_lo / 32 + 2, cc & 1, xb, db);
#pragma unroll
      for (int r = 0; r < MS_ROWS; r++) {
        const uint4 lq = l[r][u], hq = hb[r][u];
        const int lv[4] = {(int)lq.x, (int)lq.y, (int)lq.z, (int)lq.w};
        const int hv[4] = {(int)hq.x, (int)hq.y, (int)hq.z, (int)hq.w};
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
          const int lo =
              __vsubss4((lv[k] & 0x0F0F0F0F) | (((hv[k] >> sh) & 0x03030303) << 4), 0x20202020);
          const int hi = __vsubss4(
              ((lv[k] >> 4) & 0x0F0F0F0F) | (((hv[k] >> (sh + 4)) & 0x03030303) << 4), 0x20202020);
          s0 = __dp4a(lo, xa[k], s0);
          s1 = __dp4a(hi, xb[k], s1);
        }
        const uint32_t c = sd[r][u];
        const float d = __half2float(__ushort_as_half((unsigned short)(c & 0xFFFF)));
        acc[r] += d * ((float)(s0 * (int)(int8_t)(c >> 16)) * da.x +
                       (float)(s1 * (int)(int8_t)(c >> 24)) * db.x);
      }
    }
  }
}

// One warp, rows r[0], r[1] of a planar Q8_0 matrix (R rows, nb blocks per row).
__device__ __forceinline__ void rows_q8_0p(const uint8_t *base, int64_t R,
                                           const int64_t rr[MS_ROWS], int64_t nb,
                                           const cu_block_q8_1 *xq, float acc[MS_ROWS],
                                           bool wait_first, bool prefetch) {
  const int lane = threadIdx.x & 31;
  const int64_t n_chunks = nb * 2;
  if (prefetch && n_chunks > MS_UNROLL * 32)
#pragma unroll
    for (int r = 0; r < MS_ROWS; r++) {
      warp_prefetch_l2(q8_0p_qs(base, rr[r], nb), MS_UNROLL * 32 * 16, nb * 32);
      warp_prefetch_l2((const uint8_t *)q8_0p_d(base, R, rr[r], nb), 0, nb * 2);
    }
  for (int64_t i0 = 0; i0 * 32 < n_chunks; i0 += MS_UNROLL) {
    uint4 q[MS_ROWS][MS_UNROLL];
    unsigned short dq[MS_ROWS][MS_UNROLL];
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t c = (i0 + u) * 32 + lane;
#pragma unroll
      for (int r = 0; r < MS_ROWS; r++)
        if (c < n_chunks) {
          q[r][u] = ld_stream(q8_0p_qs(base, rr[r], nb) + (size_t)c * 16);
          dq[r][u] = __ldg((const unsigned short *)q8_0p_d(base, R, rr[r], nb) + (c >> 1));
        }
    }
    if (wait_first && i0 == 0)
      pdl_wait();
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t c = (i0 + u) * 32 + lane;
      if (c >= n_chunks)
        break;
      int xa[4];
      float2 da;
      ld_x16(xq, c >> 1, (int)(c & 1), xa, da);
#pragma unroll
      for (int r = 0; r < MS_ROWS; r++) {
        const uint4 qq = q[r][u];
        int s = __dp4a((int)qq.x, xa[0], 0);
        s = __dp4a((int)qq.y, xa[1], s);
        s = __dp4a((int)qq.z, xa[2], s);
        s = __dp4a((int)qq.w, xa[3], s);
        acc[r] += __half2float(__ushort_as_half(dq[r][u])) * da.x * (float)s;
      }
    }
  }
}

// Float rows (F32, F16, BF16): 16 bytes per lane per step.
template <int TYPE>
__device__ __forceinline__ void rows_f(const uint8_t *const w[MS_ROWS], int64_t n_in,
                                       const float *x, float acc[MS_ROWS], bool wait_first,
                                       bool prefetch) {
  const int lane = threadIdx.x & 31;
  const int per = TYPE == GT_F32 ? 4 : 8; /* elements per 16 bytes */
  const int64_t n_chunks = n_in / per;
  if (prefetch && n_chunks > MS_UNROLL * 32)
#pragma unroll
    for (int r = 0; r < MS_ROWS; r++)
      warp_prefetch_l2(w[r], MS_UNROLL * 32 * 16, n_chunks * 16);
  for (int64_t i0 = 0; i0 * 32 < n_chunks; i0 += MS_UNROLL) {
    uint4 q[MS_ROWS][MS_UNROLL];
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t c = (i0 + u) * 32 + lane;
#pragma unroll
      for (int r = 0; r < MS_ROWS; r++)
        if (c < n_chunks)
          q[r][u] = ld_stream(w[r] + (size_t)c * 16);
    }
    if (wait_first && i0 == 0)
      pdl_wait();
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t c = (i0 + u) * 32 + lane;
      if (c >= n_chunks)
        break;
      const float4 *xv = (const float4 *)(x + c * per);
      float xs[8];
      float4 x0 = xv[0];
      xs[0] = x0.x, xs[1] = x0.y, xs[2] = x0.z, xs[3] = x0.w;
      if (per == 8) {
        float4 x1 = xv[1];
        xs[4] = x1.x, xs[5] = x1.y, xs[6] = x1.z, xs[7] = x1.w;
      }
#pragma unroll
      for (int r = 0; r < MS_ROWS; r++) {
        const uint32_t v[4] = {q[r][u].x, q[r][u].y, q[r][u].z, q[r][u].w};
        float a = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
          if (TYPE == GT_F32) {
            a = fmaf(__uint_as_float(v[k]), xs[k], a);
          } else if (TYPE == GT_F16) {
            const float2 f = __half22float2(*(const __half2 *)&v[k]);
            a = fmaf(f.x, xs[2 * k], a);
            a = fmaf(f.y, xs[2 * k + 1], a);
          } else {
            a = fmaf(__uint_as_float(v[k] << 16), xs[2 * k], a);
            a = fmaf(__uint_as_float(v[k] & 0xffff0000u), xs[2 * k + 1], a);
          }
        }
        acc[r] += a;
      }
    }
  }
}

struct ms_jobs {
  cu_mv_job j[3];
  unsigned first_warp[4];
  int n;
};

// Q5: whether any job is Q5_K (opt-in: HX_MV_Q5K=1); its case is compiled only
// into that instance, so the others keep their register budget.
template <bool Q5>
__global__ static void __launch_bounds__(MS_WARPS * 32)
    mv_stream_kernel(ms_jobs jobs, int64_t n_in, const float *x, const cu_block_q8_1 *xq, bool pf) {
  pdl_trigger();
  const unsigned gw = blockIdx.x * MS_WARPS + (threadIdx.x >> 5);
  if (gw >= jobs.first_warp[jobs.n])
    return;
  int ji = 0;
  while (ji + 1 < jobs.n && gw >= jobs.first_warp[ji + 1])
    ji++;
  const cu_mv_job &jb = jobs.j[ji];
  const int64_t r0 = (int64_t)(gw - jobs.first_warp[ji]) * MS_ROWS;
  int64_t rr[MS_ROWS];
  const uint8_t *w[MS_ROWS];
#pragma unroll
  for (int r = 0; r < MS_ROWS; r++) {
    rr[r] = r0 + r < jb.n_out ? r0 + r : jb.n_out - 1; /* a clamped row is computed, not stored */
    w[r] = jb.w + (size_t)rr[r] * jb.row_bytes;
  }
  float acc[MS_ROWS];
#pragma unroll
  for (int r = 0; r < MS_ROWS; r++)
    acc[r] = 0.0f;
  switch (jb.type) {
  case GT_Q4_K:
    rows_k45<false>(w, n_in / 256, xq, acc, true, pf);
    break;
  case GT_Q5_K:
    if constexpr (Q5)
      rows_k45<true>(w, n_in / 256, xq, acc, true, pf);
    break;
  case GT_Q6_KP: {
    const int64_t pr[MS_ROWS] = {jb.row0 + rr[0], jb.row0 + rr[1]};
    rows_q6kp(jb.w, jb.r_total, pr, n_in / 256, xq, acc, true, pf);
    break;
  }
  case GT_Q8_0P: {
    const int64_t pr[MS_ROWS] = {jb.row0 + rr[0], jb.row0 + rr[1]};
    rows_q8_0p(jb.w, jb.r_total, pr, n_in / 32, xq, acc, true, pf);
    break;
  }
  case GT_F32:
    rows_f<GT_F32>(w, n_in, x, acc, true, pf);
    break;
  case GT_F16:
    rows_f<GT_F16>(w, n_in, x, acc, true, pf);
    break;
  default:
    rows_f<GT_BF16>(w, n_in, x, acc, true, pf);
    break;
  }
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < MS_ROWS; r++) {
    const float a = warp_sum(acc[r]);
    if (lane == 0 && r0 + r < jb.n_out)
      jb.y[r0 + r] = a + (jb.bias ? jb.bias[r0 + r] : 0.0f);
  }
}

int matvec_stream_ok(const cu_mv_job *j, int64_t n_in) {
  static int off = -1;
  if (off < 0) {
    const char *e = getenv("HX_MV_STREAM");
    off = e && e[0] == '0';
  }
  /* planar sections are 16-byte aligned given an aligned base; native rows
     need aligned starts */
  if (off || n_in <= 0 || ((uintptr_t)j->w & 15) != 0 ||
      (!(j->type & GT_PLANAR) && j->row_bytes % 16 != 0))
    return 0;
  if ((j->type & GT_PLANAR) && (j->row0 < 0 || j->row0 + j->n_out > j->r_total))
    return 0;
  /* Q5_K streams only when asked (HX_MV_Q5K=1): written without a GPU,
     off until measured (docs/benchmarks.md) */
  static int q5 = -1;
  if (q5 < 0) {
    const char *e = getenv("HX_MV_Q5K");
    q5 = e && e[0] == '1';
  }
  switch (j->type) {
  case GT_Q5_K:
    return q5 && n_in % 256 == 0;
  case GT_Q4_K:
  case GT_Q6_KP:
    return n_in % 256 == 0;
  case GT_Q8_0P:
    return n_in % 32 == 0;
  case GT_F32:
    return n_in % 4 == 0;
  case GT_F16:
  case GT_BF16:
    return n_in % 8 == 0;
  default:
    return 0;
  }
}

void launch_matvec_stream(const cu_mv_job *jobs, int n_jobs, int64_t n_in, const float *x,
                          const void *xq, hx_stream st) {
  CU_ASSERT(n_jobs >= 1 && n_jobs <= 3 && n_in > 0);
  ms_jobs mj = {};
  unsigned warps = 0;
  bool q5 = false;
  for (int i = 0; i < n_jobs; i++) {
    CU_ASSERT(jobs[i].n_out >= 1 && matvec_stream_ok(&jobs[i], n_in));
    q5 = q5 || jobs[i].type == GT_Q5_K;
    mj.j[i] = jobs[i];
    mj.first_warp[i] = warps;
    warps += cdiv(jobs[i].n_out, MS_ROWS);
  }
  mj.first_warp[n_jobs] = warps;
  mj.n = n_jobs;
  /* rows past the first batch asked of L2 before the PDL wait: opt-in
     (HX_MV_PREFETCH=1); on an H100 it cost 8B Q4_K_M decode 327.7 -> 319.5,
     Q8_0 260.7 -> 231.7 and BF16 154.6 -> 131.4 tok/s (the prefetches compete
     with the loads the kernel is waiting for) */
  static int pf = -1;
  if (pf < 0) {
    const char *e = getenv("HX_MV_PREFETCH");
    pf = e && e[0] == '1';
  }
  if (q5)
    cu_launch(mv_stream_kernel<true>, cdiv(warps, MS_WARPS), MS_WARPS * 32, 0, st, mj, n_in, x,
              (const cu_block_q8_1 *)xq, pf != 0);
  else
    cu_launch(mv_stream_kernel<false>, cdiv(warps, MS_WARPS), MS_WARPS * 32, 0, st, mj, n_in, x,
              (const cu_block_q8_1 *)xq, pf != 0);
  CUDA_LAUNCH_CHECK();
}
