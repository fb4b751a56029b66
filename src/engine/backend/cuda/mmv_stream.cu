// mmv_stream.cu — batch-1 mat-vecs that stream weights with 16-byte loads.
//
// Decode reads every weight byte once per token, so a mat-vec is bound by how
// many bytes each SM keeps in flight. The kernels of mmvq.cu give each lane one
// 32-weight sub-block at a time (a few 4-byte loads, the scale header decoded
// per sub-block); these give each lane 16-byte chunks of the quants, four per
// batch, and issue the next batch's loads before computing the current one
// (a persistent grid: each warp walks many rows), reading the weights without
// allocating in L1.
//
// Layouts: Q4_K is read in its GGUF layout (144-byte blocks: 16-aligned);
// Q8_0 and Q6_K in the planar layouts of common.cuh (weight_prepare); F16/BF16/
// F32 rows 16 bytes at a time. Activations are the q8_1 blocks of
// launch_quantize_q8_1 (float rows for float weights).
//
// Lane mapping (Q4_K, Q6_KP): 8 lanes per 256-weight super-block, 4 super-
// blocks per warp step; lane p = lane % 8 takes 16 bytes of quants = 32
// weights: Q4_K bytes 16p..16p+15 are weights 16(p%2).. of sub-blocks 2(p/2)
// (low nibbles) and 2(p/2)+1 (high nibbles). Q8_0P: lane c takes half a block.
//
// One launch serves up to three jobs (q/k/v or gate/up) of any of these types.
#include "common.cuh"
#include "kernels.h"

#include <stdlib.h>

enum { MS_WARPS = 4, MS_UNROLL = 4 };

__device__ __forceinline__ uint4 ld_stream(const void *p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// 16 bytes (4 ints) of a q8_1 block's quants starting at int 4*half, and the
// block's (d, s).
__device__ __forceinline__ void ld_x16(const cu_block_q8_1 *xq, int64_t blk, int half, int x[4],
                                       float2 &ds) {
  const cu_block_q8_1 *b = xq + blk;
  ds = *(const float2 *)b;
  const int2 *q = (const int2 *)(b->qs + 16 * half);
  int2 a = q[0], c = q[1];
  x[0] = a.x, x[1] = a.y, x[2] = c.x, x[3] = c.y;
}

__device__ __forceinline__ int byte_at(uint32_t v, int i) { return (int)((v >> (8 * i)) & 0xFF); }

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

struct ms_jobs {
  cu_mv_job j[3];
  unsigned first_row[4]; /* rows of the jobs, one after another */
  int n;
};

// ---- the persistent, software-pipelined form ---------------------------------
//
// Each warp walks rows w, w + W, ... of the jobs' concatenated rows (W = warps
// in the grid, about as many as fit on the device at once), one row at a time,
// each row in batches of MS_UNROLL 16-byte chunks per lane. The next batch's
// weight loads (quants plus the scales each lane needs) are issued before the
// current one is computed, so every lane keeps a batch in flight across row
// and job boundaries instead of waiting once per row.

struct ms_batch {
  uint4 a[MS_UNROLL];    /* quants: Q4_K qs / Q6_K ql / Q8_0 qs / float rows */
  uint4 b[MS_UNROLL];    /* Q4_K block header, Q6_K qh */
  uint32_t c[MS_UNROLL]; /* Q6_K: d (f16) | scale lo << 16 | scale hi << 24; Q8_0: d (f16) */
};

// Weights per batch of one row for each type (the unit the loop counts).
__device__ __forceinline__ int64_t ms_batches(int type, int64_t n_in) {
  switch (type) {
  case GT_Q4_K:
  case GT_Q6_KP:
    return (n_in / 256 + 4 * MS_UNROLL - 1) / (4 * MS_UNROLL); /* 4 super-blocks per step */
  case GT_Q8_0P:
    return (n_in / 16 + 32 * MS_UNROLL - 1) / (32 * MS_UNROLL); /* 16-byte chunks */
  case GT_F32:
    return (n_in / 4 + 32 * MS_UNROLL - 1) / (32 * MS_UNROLL);
  default:
    return (n_in / 8 + 32 * MS_UNROLL - 1) / (32 * MS_UNROLL);
  }
}

// Issues the loads of batch i0 (in steps) of row r of job jb.
__device__ __forceinline__ void ms_load(ms_batch &bt, const cu_mv_job &jb, int64_t r, int64_t bi,
                                        int64_t n_in) {
  const int lane = threadIdx.x & 31, p = lane & 7;
  switch (jb.type) {
  case GT_Q4_K: {
    const int64_t nb = n_in / 256;
    const uint8_t *row = jb.w + (size_t)r * jb.row_bytes;
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t sb = (bi * MS_UNROLL + u) * 4 + (lane >> 3);
      if (sb < nb) {
        const uint8_t *blk = row + (size_t)sb * 144;
        bt.b[u] = ld_stream(blk);
        bt.a[u] = ld_stream(blk + 16 + 16 * p);
      }
    }
    break;
  }
  case GT_Q6_KP: {
    const int64_t nb = n_in / 256, R = jb.r_total, pr = jb.row0 + r;
    const int h = p >> 2, cc = p & 3;
    const uint8_t *ql = q6_kp_ql(jb.w, pr, nb) + 16 * p;
    const uint8_t *qh = q6_kp_qh(jb.w, R, pr, nb) + 32 * h + 16 * (cc & 1);
    const int8_t *sc = q6_kp_sc(jb.w, R, pr, nb) + h * 8 + cc;
    const unsigned short *dd = (const unsigned short *)q6_kp_d(jb.w, R, pr, nb);
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t sb = (bi * MS_UNROLL + u) * 4 + (lane >> 3);
      if (sb < nb) {
        bt.a[u] = ld_stream(ql + (size_t)sb * 128);
        bt.b[u] = ld_stream(qh + (size_t)sb * 64);
        const int8_t *s = sc + (size_t)sb * 16;
        bt.c[u] = (uint32_t)__ldg(dd + sb) | ((uint32_t)(uint8_t)__ldg(s) << 16) |
                  ((uint32_t)(uint8_t)__ldg(s + 4) << 24);
      }
    }
    break;
  }
  case GT_Q8_0P: {
    const int64_t nb = n_in / 32, R = jb.r_total, pr = jb.row0 + r;
    const uint8_t *qs = q8_0p_qs(jb.w, pr, nb);
    const unsigned short *dd = (const unsigned short *)q8_0p_d(jb.w, R, pr, nb);
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t c = (bi * MS_UNROLL + u) * 32 + lane;
      if (c < nb * 2) {
        bt.a[u] = ld_stream(qs + (size_t)c * 16);
        bt.c[u] = __ldg(dd + (c >> 1));
      }
    }
    break;
  }
  default: { /* float rows */
    const int64_t n_chunks = n_in / (jb.type == GT_F32 ? 4 : 8);
    const uint8_t *row = jb.w + (size_t)r * jb.row_bytes;
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t c = (bi * MS_UNROLL + u) * 32 + lane;
      if (c < n_chunks)
        bt.a[u] = ld_stream(row + (size_t)c * 16);
    }
    break;
  }
  }
}

// The dot of batch bi of one row with the activation (per-lane partial).
__device__ __forceinline__ float ms_dot(const ms_batch &bt, int type, int64_t bi, int64_t n_in,
                                        const float *x, const cu_block_q8_1 *xq) {
  const int lane = threadIdx.x & 31, p = lane & 7;
  float acc = 0.0f;
  switch (type) {
  case GT_Q4_K: {
    const int64_t nb = n_in / 256;
    const int g = p >> 1, hf = p & 1;
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t sb = (bi * MS_UNROLL + u) * 4 + (lane >> 3);
      if (sb >= nb)
        break;
      int xa[4], xb[4];
      float2 da, db;
      ld_x16(xq, sb * 8 + 2 * g, hf, xa, da);
      ld_x16(xq, sb * 8 + 2 * g + 1, hf, xb, db);
      const uint4 qq = bt.a[u], hh = bt.b[u];
      const int qv[4] = {(int)qq.x, (int)qq.y, (int)qq.z, (int)qq.w};
      int s0 = 0, s1 = 0;
#pragma unroll
      for (int k = 0; k < 4; k++) {
        s0 = __dp4a(qv[k] & 0x0F0F0F0F, xa[k], s0);
        s1 = __dp4a((qv[k] >> 4) & 0x0F0F0F0F, xb[k], s1);
      }
      float sc0, m0, sc1, m1;
      q4k_scale_min(2 * g, hh.y, hh.z, hh.w, sc0, m0);
      q4k_scale_min(2 * g + 1, hh.y, hh.z, hh.w, sc1, m1);
      const float2 dm = __half22float2(*(const __half2 *)&hh.x);
      acc += dm.x * (sc0 * da.x * (float)s0 + sc1 * db.x * (float)s1);
      if (hf == 0) /* the min term once per sub-block: x.s sums all 32 */
        acc -= dm.y * (m0 * da.y + m1 * db.y);
    }
    break;
  }
  case GT_Q6_KP: {
    const int64_t nb = n_in / 256;
    const int h = p >> 2, cc = p & 3, e_lo = h * 128 + 16 * cc, sh = cc < 2 ? 0 : 2;
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t sb = (bi * MS_UNROLL + u) * 4 + (lane >> 3);
      if (sb >= nb)
        break;
      int xa[4], xb[4];
      float2 da, db;
      ld_x16(xq, sb * 8 + e_lo / 32, cc & 1, xa, da);
      ld_x16(xq, sb * 8 + e_lo / 32 + 2, cc & 1, xb, db);
      const uint4 lq = bt.a[u], hq = bt.b[u];
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
      const uint32_t c = bt.c[u];
      const float d = __half2float(__ushort_as_half((unsigned short)(c & 0xFFFF)));
      const float sc_lo = (float)(int8_t)(c >> 16), sc_hi = (float)(int8_t)(c >> 24);
      acc += d * (sc_lo * da.x * (float)s0 + sc_hi * db.x * (float)s1);
    }
    break;
  }
  case GT_Q8_0P: {
    const int64_t nb = n_in / 32;
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t c = (bi * MS_UNROLL + u) * 32 + lane;
      if (c >= nb * 2)
        break;
      int xa[4];
      float2 da;
      ld_x16(xq, c >> 1, (int)(c & 1), xa, da);
      const uint4 qq = bt.a[u];
      int s = __dp4a((int)qq.x, xa[0], 0);
      s = __dp4a((int)qq.y, xa[1], s);
      s = __dp4a((int)qq.z, xa[2], s);
      s = __dp4a((int)qq.w, xa[3], s);
      acc += __half2float(__ushort_as_half((unsigned short)bt.c[u])) * da.x * (float)s;
    }
    break;
  }
  default: {
    const int per = type == GT_F32 ? 4 : 8;
    const int64_t n_chunks = n_in / per;
#pragma unroll
    for (int u = 0; u < MS_UNROLL; u++) {
      const int64_t c = (bi * MS_UNROLL + u) * 32 + lane;
      if (c >= n_chunks)
        break;
      const float4 *xv = (const float4 *)(x + c * per);
      const uint32_t v[4] = {bt.a[u].x, bt.a[u].y, bt.a[u].z, bt.a[u].w};
      const float4 x0 = xv[0];
      if (type == GT_F32) {
        acc = fmaf(__uint_as_float(v[0]), x0.x, acc);
        acc = fmaf(__uint_as_float(v[1]), x0.y, acc);
        acc = fmaf(__uint_as_float(v[2]), x0.z, acc);
        acc = fmaf(__uint_as_float(v[3]), x0.w, acc);
      } else {
        const float4 x1 = xv[1];
        const float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
          float lo, hi;
          if (type == GT_F16) {
            const float2 f = __half22float2(*(const __half2 *)&v[k]);
            lo = f.x, hi = f.y;
          } else {
            lo = __uint_as_float(v[k] << 16), hi = __uint_as_float(v[k] & 0xffff0000u);
          }
          acc = fmaf(lo, xs[2 * k], acc);
          acc = fmaf(hi, xs[2 * k + 1], acc);
        }
      }
    }
    break;
  }
  }
  return acc;
}

// Where the warp's t-th item is: its job, the row in that job, the batch.
struct ms_item {
  int ji, r, bi, nbatch; /* rows and batches < 2^31 (launch_matvec_stream checks) */
};

__device__ __forceinline__ bool ms_next_row(const ms_jobs &jobs, int64_t n_in, unsigned grow,
                                            ms_item &it) {
  if (grow >= jobs.first_row[jobs.n])
    return false;
  int ji = 0;
  while (ji + 1 < jobs.n && grow >= jobs.first_row[ji + 1])
    ji++;
  it.ji = ji;
  it.r = (int)(grow - jobs.first_row[ji]);
  it.bi = 0;
  it.nbatch = (int)ms_batches(jobs.j[ji].type, n_in);
  return true;
}

template <int MINB>
__global__ static void __launch_bounds__(MS_WARPS * 32, MINB)
    mv_stream_kernel(ms_jobs jobs, int64_t n_in, const float *x, const cu_block_q8_1 *xq) {
  pdl_trigger();
  const unsigned W = gridDim.x * MS_WARPS;
  unsigned grow = blockIdx.x * MS_WARPS + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  ms_item cur, nxt;
  if (!ms_next_row(jobs, n_in, grow, cur))
    return;
  ms_batch b0, b1;
  ms_load(b0, jobs.j[cur.ji], cur.r, 0, n_in);
  pdl_wait(); /* the first weights are on their way; now the activation may be read */
  float acc = 0.0f;
  for (;;) {
    /* the item after cur: the next batch of the row, or the warp's next row */
    nxt = cur;
    bool more = true;
    if (++nxt.bi == cur.nbatch) {
      grow += W;
      more = ms_next_row(jobs, n_in, grow, nxt);
    }
    if (more)
      ms_load(b1, jobs.j[nxt.ji], nxt.r, nxt.bi, n_in);
    acc += ms_dot(b0, jobs.j[cur.ji].type, cur.bi, n_in, x, xq);
    if (cur.bi + 1 == cur.nbatch) {
      const cu_mv_job &jb = jobs.j[cur.ji];
      const float a = warp_sum(acc);
      if (lane == 0)
        jb.y[cur.r] = a + (jb.bias ? jb.bias[cur.r] : 0.0f);
      acc = 0.0f;
    }
    if (!more)
      break;
    cur = nxt;
    b0 = b1;
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
  switch (j->type) {
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
  CU_ASSERT(n_jobs >= 1 && n_jobs <= 3 && n_in > 0 && n_in < (1 << 30));
  ms_jobs mj = {};
  unsigned rows = 0;
  for (int i = 0; i < n_jobs; i++) {
    CU_ASSERT(jobs[i].n_out >= 1 && jobs[i].n_out < (1 << 30) - (int64_t)rows &&
              matvec_stream_ok(&jobs[i], n_in));
    mj.j[i] = jobs[i];
    mj.first_row[i] = rows;
    rows += (unsigned)jobs[i].n_out;
  }
  mj.first_row[n_jobs] = rows;
  mj.n = n_jobs;
  /* Two builds of the kernel: registers for 3 blocks per SM (168, no spills)
     or 4 (128, a few spilled; HX_MS_MINB=4). The grid is as many warps as
     fit at once, never more than one per row. */
  static int minb = 0, per_sm = 0, n_sm = 0;
  if (minb == 0) {
    const char *e = getenv("HX_MS_MINB");
    minb = e && e[0] == '4' ? 4 : 3;
    CUDA_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, 0));
    if (minb == 4)
      CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mv_stream_kernel<4>,
                                                               MS_WARPS * 32, 0));
    else
      CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mv_stream_kernel<3>,
                                                               MS_WARPS * 32, 0));
    if (per_sm < 1)
      per_sm = 1;
  }
  unsigned blocks = cdiv(rows, MS_WARPS), cap = (unsigned)(per_sm * n_sm);
  if (cap > 0 && blocks > cap)
    blocks = cap;
  if (minb == 4)
    cu_launch(mv_stream_kernel<4>, blocks, MS_WARPS * 32, 0, st, mj, n_in, x,
              (const cu_block_q8_1 *)xq);
  else
    cu_launch(mv_stream_kernel<3>, blocks, MS_WARPS * 32, 0, st, mj, n_in, x,
              (const cu_block_q8_1 *)xq);
  CUDA_LAUNCH_CHECK();
}
