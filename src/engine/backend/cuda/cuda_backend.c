/* cuda_backend.c — see backend_cuda.h. The op table, memory, scratch, the
 * host-side op record and graph capture/replay. Kernels are in the .cu files
 * of this folder (kernels.h). */
#include "engine/backend/cuda/backend_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "engine/backend/cuda/kernels.h"

enum {
  T_F32 = 0,
  T_F16 = 1,
  T_BF16 = 30,
  T_Q8_0 = 8,
  T_Q6_K = 14,
  OPS_MAX = 8192,       /* recorded ops per step */
  ATTN_SPLITS_MAX = 64, /* KV splits of a decode attention */
};
#define W16_SCRATCH_ELEMS ((size_t)32 << 20) /* dequantized weight tile for prefill */

/* A matrix of a buffer that weight_prepare rewrote in a planar layout
 * (common.cuh): rows [offset, offset + n_rows * row_bytes) of native type
 * `type` (Q8_0 or Q6_K). */
typedef struct planar_region {
  size_t offset;
  int64_t n_rows;
  size_t row_bytes;
  uint32_t type;
} planar_region;

struct hx_bbuf {
  uint8_t *dev;
  size_t n_bytes;
  /* the buffer's planar regions, sorted by offset, disjoint; freed with it */
  planar_region *planar;
  int n_planar, cap_planar;
};

typedef enum {
  OP_MATMUL,
  OP_QUANT,
  OP_GET_ROWS,
  OP_RMS_NORM,
  OP_RMS_NORM_HEADS,
  OP_ROPE,
  OP_CACHE_STORE,
  OP_CACHE_COPY,
  OP_ATTN,
  OP_SWIGLU,
  OP_ADD,
  OP_MUL,
  OP_SOFTMAX,
  OP_TOPK,
  /* MoE ops (moe.cu) */
  OP_MOE_ROUTE,
  OP_MOE_MM,  /* expert matmul; with two weights the second is the OP_MOE_MM2 after it */
  OP_MOE_MM2, /* the second weight (gate + up) of the OP_MOE_MM before it: no launch of its own */
  OP_MOE_COMBINE,
  /* DeltaNet ops (ssm.cu) */
  OP_SSM_CONV,
  OP_DELTA,      /* out, q, k, v, state; the OP_DELTA_ARGS after it holds the rest */
  OP_DELTA_ARGS, /* a, b, ssm_a, dt_bias of the OP_DELTA before it: no launch of its own */
  OP_GATED_NORM,
  OP_SIGMOID_MUL,
  OP_ZERO,
  OP_KIND_COUNT
} op_kind;

/* Profile buckets: op kinds, with matmuls split by weight type family. */
enum {
  PROF_MM_Q4K = OP_KIND_COUNT,
  PROF_MM_Q6K,
  PROF_MM_Q8,
  PROF_MM_F,
  PROF_MM_GEMM,
  PROF_F_NORMQ,
  PROF_F_SWIGLUQ,
  PROF_F_MULTI,
  PROF_F_QKROPE,
  PROF_F_MOE_GU,
  PROF_F_MOE_DC,
  PROF_KINDS
};
static const char *const prof_names[PROF_KINDS] = {"matmul (other)",
                                                   "quantize activations",
                                                   "get_rows",
                                                   "rms_norm",
                                                   "rms_norm_heads",
                                                   "rope",
                                                   "cache_store",
                                                   "cache_copy",
                                                   "attention",
                                                   "swiglu",
                                                   "add",
                                                   "mul",
                                                   "softmax",
                                                   "top_k",
                                                   "moe_route",
                                                   "moe_matmul_id",
                                                   "moe_matmul_id (2nd)",
                                                   "moe_combine",
                                                   "ssm_conv",
                                                   "delta_rule",
                                                   "delta_rule (args)",
                                                   "gated_norm",
                                                   "sigmoid_mul",
                                                   "zero",
                                                   "matvec Q4_K/Q5_K",
                                                   "matvec Q6_K",
                                                   "matvec Q8_0",
                                                   "matvec F16/BF16/F32",
                                                   "GEMM (cuBLAS)",
                                                   "fused norm+quantize",
                                                   "fused swiglu+quantize",
                                                   "fused multi-matvec",
                                                   "fused qk-norm+rope+store",
                                                   "fused moe route+gate/up+swiglu",
                                                   "fused moe down+combine"};

/* One recorded op. Zeroed before filling so that records compare with memcmp. */
typedef struct cu_op {
  op_kind kind;
  int ival[3];
  int64_t lval[3];
  float fval[2];
  hx_tensor t[5];
  cu_rope rope;
  hx_attn_params attn;
} cu_op;

typedef struct cuda_be {
  int device;
  cudaStream_t stream;
  cublasHandle_t cublas;
  bool poisoned;
  char poison_msg[HX_ERR_MSG_MAX];
  /* scratch (reserve) */
  void *q8; /* q8_1 blocks of one activation row */
  size_t q8_bytes;
  void *x16; /* activations as f16/bf16 for cuBLAS */
  size_t x16_bytes;
  void *w16; /* dequantized weight rows */
  float *attn_part;
  size_t attn_part_floats;
  void *argmax_scratch; /* HX_CU_ARGMAX_SCRATCH_BYTES, zeroed (topk.cu) */
  /* the step being recorded */
  cu_op *ops;
  int n_ops;
  int step_tokens;
  bool in_step;
  hx_tensor q8_src; /* activation currently quantized in q8 (buf NULL: none) */
  /* the cached decode graph */
  cu_op *graph_ops;
  int graph_n_ops;
  cudaGraphExec_t graph_exec;
  bool use_graphs;
  bool use_fusion; /* HX_CUDA_FUSION=0 turns the one-token fusions off */
  bool moe_fusion; /* HX_MOE_FUSE=1 adds the MoE ones (written without a GPU: off until measured) */
  bool pdl;        /* programmatic dependent launch (sm_90+ unless HX_CUDA_PDL=0) */
  bool use_planar; /* weight_prepare repacks Q8_0 / Q6_K (HX_CUDA_PLANAR=0: off) */
  /* HX_CUDA_SKIP=name,...: one-token launch groups of those profile buckets are
     not launched (a measurement of their cost inside the replayed step; the
     results are garbage). suppress: cu_launch returns without launching. */
  uint64_t skip_mask;
  bool suppress;
  void *repack_tmp; /* weight_prepare's native copy, kept across one load (freed by reserve) */
  size_t repack_tmp_bytes;
  long n_replayed, n_captured;
  /* profiling (HX_CUDA_PROFILE=1): ops run without graphs, timed with events */
  bool profile;
  cudaEvent_t *events;
  double prof_ms[PROF_KINDS];
  double prof_bytes[PROF_KINDS];
  long prof_count[PROF_KINDS];
  long prof_steps;
  int group_bucket[OPS_MAX];
  double group_bytes[OPS_MAX];
} cuda_be;

static _Thread_local cuda_be *t_current;

/* Called by the kernels' CUDA_CHECK and by this file: poisons the backend the
 * calling thread is driving. */
void hx_cuda_report(cudaError_t e, const char *stmt, const char *file, int line) {
  cuda_be *be = t_current;
  HX_ERROR("CUDA error %s (%s) in %s at %s:%d", cudaGetErrorName(e), cudaGetErrorString(e), stmt,
           file, line);
  if (be && !be->poisoned) {
    be->poisoned = true;
    snprintf(be->poison_msg, sizeof be->poison_msg, "CUDA device %d: %s (%s) in %s at %s:%d",
             be->device, cudaGetErrorName(e), cudaGetErrorString(e), stmt, file, line);
  }
}

#define CK(stmt)                                                                                   \
  do {                                                                                             \
    cudaError_t e_ = (stmt);                                                                       \
    if (e_ != cudaSuccess)                                                                         \
      hx_cuda_report(e_, #stmt, __FILE__, __LINE__);                                               \
  } while (0)

#define CKB(stmt)                                                                                  \
  do {                                                                                             \
    cublasStatus_t s_ = (stmt);                                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                               \
      hx_cuda_report(cudaErrorUnknown, #stmt " (cuBLAS status)", __FILE__, __LINE__);              \
  } while (0)

int hx_cuda_pdl_enabled(void) { return t_current && t_current->pdl; }
int hx_cuda_launch_suppressed(void) { return t_current && t_current->suppress; }

/* HX_CUDA_SKIP's comma-separated profile bucket names → a mask. */
static uint64_t parse_skip(const char *s) {
  uint64_t m = 0;
  while (s && *s) {
    size_t n = strcspn(s, ",");
    for (int k = 0; k < PROF_KINDS && k < 64; k++)
      if (strlen(prof_names[k]) == n && strncmp(prof_names[k], s, n) == 0)
        m |= (uint64_t)1 << k;
    s += n + (s[n] == ',');
  }
  return m;
}

static cuda_be *enter(void *p) {
  cuda_be *be = p;
  t_current = be;
  cudaSetDevice(be->device);
  return be;
}

static uint8_t *ptr(hx_tensor t) { return t.buf ? t.buf->dev + t.offset : NULL; }
static size_t stride_f(hx_tensor t) { return t.row_bytes / sizeof(float); }

/* ---- memory ---- */

/* The load's repack copy goes when the load is done (reserve, the first step) or
 * when a buffer allocation needs its room. */
static void repack_tmp_free(cuda_be *be) {
  if (be->repack_tmp)
    cudaFree(be->repack_tmp);
  be->repack_tmp = NULL;
  be->repack_tmp_bytes = 0;
}

static hx_bbuf *cu_buf_alloc(void *p, size_t n_bytes, hx_err *err) {
  cuda_be *be = enter(p);
  hx_bbuf *b = calloc(1, sizeof *b);
  if (!b) {
    hx_err_set(err, HX_ENOMEM, "out of host memory");
    return NULL;
  }
  cudaError_t e = cudaMalloc((void **)&b->dev, n_bytes ? n_bytes : 1);
  if (e == cudaErrorMemoryAllocation && be->repack_tmp) {
    cudaGetLastError(); /* the load's repack copy gives way to the model's buffers */
    repack_tmp_free(be);
    e = cudaMalloc((void **)&b->dev, n_bytes ? n_bytes : 1);
  }
  if (e != cudaSuccess) {
    cudaGetLastError(); /* an allocation failure is not sticky */
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    hx_err_set(err, e == cudaErrorMemoryAllocation ? HX_ENOMEM : HX_EDEVICE,
               "CUDA device %d: cannot allocate %zu MiB (%zu MiB free of %zu MiB): %s", be->device,
               n_bytes >> 20, free_b >> 20, total_b >> 20, cudaGetErrorString(e));
    free(b);
    return NULL;
  }
  b->n_bytes = n_bytes;
  return b;
}

static hx_bbuf *cu_buf_wrap_host(void *p, const void *host, size_t n_bytes) { return NULL; }

static void cu_buf_free(void *p, hx_bbuf *b) {
  if (!b)
    return;
  enter(p);
  cudaFree(b->dev);
  free(b->planar);
  free(b);
}

static hx_code check_range(const hx_bbuf *b, size_t off, size_t n, hx_err *err) {
  size_t end;
  if (!b || hx_size_add(off, n, &end) || end > b->n_bytes)
    return hx_err_set(err, HX_EINVAL, "CUDA buffer access [%zu, +%zu) out of range", off, n);
  return HX_OK;
}

/* ---- planar weights: the registry of repacked matrices (weight_prepare;
 * layouts in common.cuh). Each buffer keeps its own sorted region list, so a
 * lookup is a binary search in the weight's buffer and the list goes with
 * the buffer. ---- */

static size_t region_end(const planar_region *r) {
  return r->offset + (size_t)r->n_rows * r->row_bytes;
}

/* Index of the first region of b ending after off (the regions are disjoint
 * and sorted, so their ends are sorted too); n_planar when none. */
static int planar_lower(const hx_bbuf *b, size_t off) {
  int lo = 0, hi = b->n_planar;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (region_end(&b->planar[mid]) <= off)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The first region of b that [off, off + n) overlaps; NULL when none. */
static const planar_region *planar_overlap(const hx_bbuf *b, size_t off, size_t n) {
  if (!b || b->n_planar == 0 || n == 0)
    return NULL;
  int i = planar_lower(b, off);
  return i < b->n_planar && b->planar[i].offset < off + n ? &b->planar[i] : NULL;
}

/* Drops the regions that [off, off + n) overwrites whole (an upload or a fill
 * makes them native again); false, dropping nothing, when the range covers a
 * region only in part. */
static bool planar_forget(hx_bbuf *b, size_t off, size_t n) {
  if (!b || b->n_planar == 0 || n == 0)
    return true;
  int i = planar_lower(b, off), j = i;
  for (; j < b->n_planar && b->planar[j].offset < off + n; j++)
    if (b->planar[j].offset < off || region_end(&b->planar[j]) > off + n)
      return false;
  memmove(&b->planar[i], &b->planar[j], (size_t)(b->n_planar - j) * sizeof *b->planar);
  b->n_planar -= j - i;
  return true;
}

/* Room for one more region (before repacking, so that registering cannot fail). */
static bool planar_reserve(hx_bbuf *b) {
  if (b->n_planar < b->cap_planar)
    return true;
  int cap = b->cap_planar ? 2 * b->cap_planar : 16;
  planar_region *np = realloc(b->planar, (size_t)cap * sizeof *np);
  if (!np)
    return false;
  b->planar = np;
  b->cap_planar = cap;
  return true;
}

static void planar_insert(hx_bbuf *b, planar_region r) {
  HX_ASSERT(b->n_planar < b->cap_planar);
  int i = planar_lower(b, r.offset);
  HX_ASSERT(i == b->n_planar || b->planar[i].offset >= region_end(&r));
  memmove(&b->planar[i + 1], &b->planar[i], (size_t)(b->n_planar - i) * sizeof *b->planar);
  b->planar[i] = r;
  b->n_planar++;
}

/* The recorded form of a weight: a tensor inside a planar region gets the
 * planar type (CU_PLANAR bit) and *row0 = its first row in the region,
 * *r_total = the region's rows; a native one is returned as it is (*row0 0,
 * *r_total its rows). A tensor that overlaps a region in any other way would
 * read repacked bytes natively: that is a bug, and asserts. */
static hx_tensor planar_weight(hx_tensor w, int64_t *row0, int64_t *r_total) {
  *row0 = 0;
  *r_total = w.n_rows;
  if (!w.buf || w.buf->n_planar == 0 || w.n_rows < 1)
    return w;
  const planar_region *r = planar_overlap(w.buf, w.offset, (size_t)w.n_rows * w.row_bytes);
  if (!r)
    return w;
  HX_ASSERT(w.type == r->type && w.row_bytes == r->row_bytes &&
            hx_backend_row_bytes(w.type, w.n_cols) == r->row_bytes);
  HX_ASSERT(w.offset >= r->offset && (w.offset - r->offset) % r->row_bytes == 0);
  *row0 = (int64_t)((w.offset - r->offset) / r->row_bytes);
  HX_ASSERT(*row0 + w.n_rows <= r->n_rows);
  *r_total = r->n_rows;
  w.type |= CU_PLANAR;
  return w;
}

/* Asserts that t reads no repacked bytes (for ops without planar support). */
static void assert_native(hx_tensor t) {
  HX_ASSERT(t.n_rows < 1 || !planar_overlap(t.buf, t.offset, (size_t)t.n_rows * t.row_bytes));
}

static hx_code poisoned_err(cuda_be *be, hx_err *err) {
  return hx_err_set(err, HX_EDEVICE, "%s", be->poison_msg);
}

static hx_code cu_buf_upload(void *p, hx_bbuf *b, size_t off, const void *src, size_t n,
                             hx_err *err) {
  cuda_be *be = enter(p);
  if (be->poisoned)
    return poisoned_err(be, err);
  if (check_range(b, off, n, err))
    return err ? err->code : HX_EINVAL;
  if (!planar_forget(b, off, n))
    return hx_err_set(err, HX_EINVAL,
                      "CUDA buffer upload [%zu, +%zu) overwrites part of a repacked weight", off,
                      n);
  /* On the backend's stream, waited for: a plain cudaMemcpy from pageable
     memory runs on the legacy stream, which the non-blocking stream does not
     wait for, and may return before its DMA has landed -- a step's token ids
     and positions, or weight_prepare's copy right after a weight upload,
     could then read bytes not yet written (synthetic Qwen3-0.6B with 8k-16k
     token prompts stopped at random with non-finite logits). */
  CK(cudaMemcpyAsync(b->dev + off, src, n, cudaMemcpyHostToDevice, be->stream));
  CK(cudaStreamSynchronize(be->stream));
  return be->poisoned ? poisoned_err(be, err) : HX_OK;
}

static hx_code cu_buf_download(void *p, const hx_bbuf *b, size_t off, void *dst, size_t n,
                               hx_err *err) {
  cuda_be *be = enter(p);
  if (be->poisoned)
    return poisoned_err(be, err);
  if (check_range(b, off, n, err))
    return err ? err->code : HX_EINVAL;
  HX_ASSERT(!be->in_step);
  CK(cudaMemcpyAsync(dst, b->dev + off, n, cudaMemcpyDeviceToHost, be->stream));
  CK(cudaStreamSynchronize(be->stream));
  return be->poisoned ? poisoned_err(be, err) : HX_OK;
}

static hx_code grow(cuda_be *be, void **buf, size_t *have, size_t want, hx_err *err) {
  if (*have >= want)
    return HX_OK;
  cudaFree(*buf);
  *buf = NULL;
  *have = 0;
  if (cudaMalloc(buf, want) != cudaSuccess) {
    cudaGetLastError();
    return hx_err_set(err, HX_ENOMEM, "CUDA device %d: cannot allocate %zu MiB of scratch",
                      be->device, want >> 20);
  }
  *have = want;
  return HX_OK;
}

static hx_code cu_reserve(void *p, int64_t max_rows, int64_t max_cols, int64_t max_ctx,
                          hx_err *err) {
  cuda_be *be = enter(p);
  if (max_rows < 1 || max_cols < 1 || max_ctx < 1)
    return hx_err_set(err, HX_EINVAL, "reserve: bad sizes");
  repack_tmp_free(be);
  size_t q8 = ((size_t)max_cols / 32 + 1) * HX_CU_Q8_1_BLOCK_BYTES;
  size_t x16 = (size_t)max_rows * (size_t)max_cols * 2;
  size_t w16 = W16_SCRATCH_ELEMS * 2;
  if ((size_t)max_cols > W16_SCRATCH_ELEMS)
    w16 = (size_t)max_cols * 2;
  size_t part = 3 * (size_t)max_cols * ATTN_SPLITS_MAX * sizeof(float); /* ≥ heads*(D+2) */
  size_t w16_have = be->w16 ? W16_SCRATCH_ELEMS * 2 : 0;
  size_t part_have = be->attn_part_floats * sizeof(float);
  hx_code rc;
  if ((rc = grow(be, &be->q8, &be->q8_bytes, q8, err)) ||
      (rc = grow(be, &be->x16, &be->x16_bytes, x16, err)) ||
      (rc = grow(be, &be->w16, &w16_have, w16, err)) ||
      (rc = grow(be, (void **)&be->attn_part, &part_have, part, err)))
    return rc;
  be->attn_part_floats = part_have / sizeof(float);
  return HX_OK;
}

/* Rewrites a Q8_0 / Q6_K matrix in place in its planar layout (repack.cu)
 * and registers the region, so that its ops read it with 16-byte loads. Best
 * effort (backend.h): anything that does not fit — other types, one row,
 * padded rows, a 16-byte misaligned start, a matrix the planar mat-vec cannot
 * take, no device memory for the temporary copy — stays native. A matrix
 * already (partly) repacked is left as it is, so a tied table prepared twice
 * is repacked once. */
static void cu_weight_prepare(void *p, hx_tensor w) {
  cuda_be *be = enter(p);
  HX_ASSERT(!be->in_step);
  if (!be->use_planar || be->poisoned || !w.buf || (w.type != T_Q8_0 && w.type != T_Q6_K) ||
      w.n_rows <= 1)
    return;
  size_t rb = hx_backend_row_bytes(w.type, w.n_cols), n_bytes = 0;
  if (rb == 0 || rb != w.row_bytes || hx_size_mul(rb, (size_t)w.n_rows, &n_bytes) ||
      check_range(w.buf, w.offset, n_bytes, NULL) != HX_OK)
    return;
  uint8_t *dst = w.buf->dev + w.offset;
  if ((uintptr_t)dst % 16 != 0) {
    HX_DEBUG("CUDA device %d: weight at offset %zu not 16-byte aligned: native layout", be->device,
             w.offset);
    return;
  }
  /* planar weights have only the streaming mat-vec (mmv_stream.cu): keep the
     native layout where it cannot take the matrix (HX_MV_STREAM=0 too) */
  const cu_mv_job probe = {NULL, dst, NULL, (int)(w.type | CU_PLANAR), w.n_rows, rb, 0, w.n_rows};
  if (!matvec_stream_ok(&probe, w.n_cols))
    return;
  if (planar_overlap(w.buf, w.offset, n_bytes) || !planar_reserve(w.buf))
    return;
  if (be->repack_tmp_bytes < n_bytes) {
    repack_tmp_free(be);
    if (cudaMalloc(&be->repack_tmp, n_bytes) != cudaSuccess) {
      cudaGetLastError(); /* not sticky */
      be->repack_tmp = NULL;
      HX_INFO("CUDA device %d: no room for a %zu MiB copy to repack a %lld x %lld weight: "
              "native layout",
              be->device, n_bytes >> 20, (long long)w.n_rows, (long long)w.n_cols);
      return;
    }
    be->repack_tmp_bytes = n_bytes;
  }
  CK(cudaMemcpyAsync(be->repack_tmp, dst, n_bytes, cudaMemcpyDeviceToDevice, be->stream));
  launch_repack_planar(dst, be->repack_tmp, (int)w.type, w.n_rows, w.n_cols, be->stream);
  CK(cudaStreamSynchronize(be->stream));
  if (be->poisoned)
    return;
  planar_insert(w.buf, (planar_region){w.offset, w.n_rows, rb, w.type});
}

/* ---- recording ---- */

static cu_op *rec(cuda_be *be, op_kind kind) {
  HX_ASSERT(be->in_step);
  HX_ASSERT(be->n_ops < OPS_MAX);
  cu_op *op = &be->ops[be->n_ops++];
  memset(op, 0, sizeof *op);
  op->kind = kind;
  if (kind != OP_MATMUL && kind != OP_QUANT)
    be->q8_src.buf = NULL; /* any other op may write the quantized activation */
  return op;
}

/* Whether two tensors' byte ranges intersect (same buffer). */
static bool overlaps(hx_tensor a, hx_tensor b) {
  if (!a.buf || a.buf != b.buf)
    return false;
  size_t a1 = a.offset + (size_t)a.n_rows * a.row_bytes;
  size_t b1 = b.offset + (size_t)b.n_rows * b.row_bytes;
  return a.offset < b1 && b.offset < a1;
}

static bool same_tensor(hx_tensor a, hx_tensor b) {
  return a.buf == b.buf && a.offset == b.offset && a.n_cols == b.n_cols && a.n_rows == b.n_rows &&
         a.row_bytes == b.row_bytes;
}

static void cu_step_begin(void *p, int n_tokens) {
  cuda_be *be = enter(p);
  HX_ASSERT(!be->in_step && n_tokens >= 1);
  if (be->repack_tmp)
    repack_tmp_free(be);
  be->in_step = true;
  be->n_ops = 0;
  be->step_tokens = n_tokens;
  be->q8_src.buf = NULL;
}

static void cu_matmul(void *p, hx_tensor y, hx_tensor w, hx_tensor x, hx_tensor bias) {
  cuda_be *be = p;
  HX_ASSERT(w.n_cols == x.n_cols && y.n_cols == w.n_rows && y.n_rows == x.n_rows);
  if (x.n_rows == 1 && matvec_type_quantized((int)w.type) && !same_tensor(be->q8_src, x)) {
    cu_op *q = rec(be, OP_QUANT);
    q->t[0] = x;
    be->q8_src = x;
  }
  cu_op *op = rec(be, OP_MATMUL);
  int64_t row0, r_total;
  op->t[0] = y;
  op->t[1] = planar_weight(w, &row0, &r_total);
  op->t[2] = x;
  op->t[3] = bias;
  if (op->t[1].type & CU_PLANAR) {
    op->lval[1] = row0;
    op->lval[2] = r_total;
  }
  if (overlaps(y, be->q8_src))
    be->q8_src.buf = NULL; /* the output overwrote the quantized input */
}

/* Recorded as n matmuls on the same input: the activation is quantized once
 * and execution fuses them into one multi-matvec launch (fuse_matvecs). */
static void cu_matmul_n(void *p, int n, const hx_tensor *y, const hx_tensor *w, hx_tensor x,
                        const hx_tensor *bias) {
  HX_ASSERT(n >= 1 && n <= HX_BACKEND_MATMUL_N_MAX);
  hx_tensor none = {0};
  for (int i = 0; i < n; i++)
    cu_matmul(p, y[i], w[i], x, bias ? bias[i] : none);
}

static void cu_get_rows(void *p, hx_tensor out, hx_tensor table, hx_tensor ids, int64_t n) {
  cu_op *op = rec(p, OP_GET_ROWS);
  int64_t row0, r_total;
  op->t[0] = out;
  op->t[1] = planar_weight(table, &row0, &r_total);
  op->t[2] = ids;
  op->lval[0] = n;
  if (op->t[1].type & CU_PLANAR) {
    op->lval[1] = row0;
    op->lval[2] = r_total;
  }
}

static void cu_rms_norm(void *p, hx_tensor out, hx_tensor x, hx_tensor residual, hx_tensor w,
                        float eps, int zero_centred) {
  cu_op *op = rec(p, OP_RMS_NORM);
  op->t[0] = out;
  op->t[1] = x;
  op->t[2] = residual;
  op->t[3] = w;
  op->fval[0] = eps;
  op->ival[0] = zero_centred;
}

static void cu_rms_norm_heads(void *p, hx_tensor x, hx_tensor w, int head_dim, float eps) {
  cu_op *op = rec(p, OP_RMS_NORM_HEADS);
  op->t[0] = x;
  op->t[1] = w;
  op->ival[0] = head_dim;
  op->fval[0] = eps;
}

static void cu_rope_op(void *p, hx_tensor x, hx_tensor pos, int head_dim,
                       const hx_rope_params *rp) {
  cu_op *op = rec(p, OP_ROPE);
  op->t[0] = x;
  op->t[1] = pos;
  op->ival[0] = head_dim;
  op->rope =
      (cu_rope){rp->n_rot,         rp->freq_base,      rp->freq_scale,     rp->yarn_factor,
                rp->yarn_orig_ctx, rp->yarn_beta_fast, rp->yarn_beta_slow, rp->yarn_attn_factor};
}

static void cu_cache_store(void *p, hx_tensor cache, hx_tensor src, hx_tensor pos) {
  cu_op *op = rec(p, OP_CACHE_STORE);
  op->t[0] = cache;
  op->t[1] = src;
  op->t[2] = pos;
}

static void cu_cache_copy(void *p, hx_tensor cache, int64_t pos_dst, int64_t pos_src, int64_t n) {
  cu_op *op = rec(p, OP_CACHE_COPY);
  op->t[0] = cache;
  op->lval[0] = pos_dst;
  op->lval[1] = pos_src;
  op->lval[2] = n;
}

static void cu_attention(void *p, hx_tensor out, hx_tensor q, hx_tensor k_cache, hx_tensor v_cache,
                         hx_tensor pos, const hx_attn_params *ap) {
  cu_op *op = rec(p, OP_ATTN);
  op->t[0] = out;
  op->t[1] = q;
  op->t[2] = k_cache;
  op->t[3] = v_cache;
  op->t[4] = pos;
  op->attn = *ap;
}

static void cu_swiglu(void *p, hx_tensor out, hx_tensor gate, hx_tensor up) {
  cu_op *op = rec(p, OP_SWIGLU);
  op->t[0] = out;
  op->t[1] = gate;
  op->t[2] = up;
}

static void cu_add(void *p, hx_tensor out, hx_tensor a, hx_tensor b) {
  cu_op *op = rec(p, OP_ADD);
  op->t[0] = out;
  op->t[1] = a;
  op->t[2] = b;
}

static void cu_mul(void *p, hx_tensor out, hx_tensor a, hx_tensor b) {
  cu_op *op = rec(p, OP_MUL);
  op->t[0] = out;
  op->t[1] = a;
  op->t[2] = b;
}

static void cu_softmax(void *p, hx_tensor x) {
  cu_op *op = rec(p, OP_SOFTMAX);
  op->t[0] = x;
}

static void cu_top_k(void *p, hx_tensor vals, hx_tensor ids, hx_tensor x, int k) {
  cu_op *op = rec(p, OP_TOPK);
  op->t[0] = vals;
  op->t[1] = ids;
  op->t[2] = x;
  op->ival[0] = k;
}

/* ---- MoE ops (moe.cu) ---- */

static void cu_moe_route(void *p, hx_tensor weights, hx_tensor ids, hx_tensor logits, int k,
                         int renorm) {
  HX_ASSERT(k >= 1 && k <= HX_BACKEND_TOPK_MAX && k <= logits.n_cols);
  HX_ASSERT(weights.n_cols == k && ids.n_cols == k && weights.n_rows >= logits.n_rows &&
            ids.n_rows >= logits.n_rows);
  cu_op *op = rec(p, OP_MOE_ROUTE);
  op->t[0] = weights;
  op->t[1] = ids;
  op->t[2] = logits;
  op->ival[0] = k;
  op->ival[1] = renorm;
}

static void cu_moe_matmul_id(void *p, int n_w, const hx_tensor *y, const hx_tensor *w, hx_tensor x,
                             hx_tensor ids) {
  HX_ASSERT(n_w >= 1 && n_w <= 2);
  const int64_t n = ids.n_rows, k = ids.n_cols;
  HX_ASSERT(n >= 1 && k >= 1 && k <= HX_BACKEND_TOPK_MAX && x.type == T_F32);
  HX_ASSERT((x.n_rows == n || x.n_rows == n * k) && x.n_cols <= HX_BACKEND_MOE_N_IN_MAX);
  const int64_t n_expert = w[0].n_rows / y[0].n_cols;
  for (int i = 0; i < n_w; i++) {
    HX_ASSERT(y[i].type == T_F32 && y[i].n_rows >= n * k && w[i].n_cols == x.n_cols);
    HX_ASSERT(w[i].n_rows == n_expert * y[i].n_cols && !overlaps(y[i], x));
    assert_native(w[i]); /* expert stacks are never repacked */
  }
  cu_op *op = rec(p, OP_MOE_MM);
  op->t[0] = y[0];
  op->t[1] = w[0];
  op->t[2] = x;
  op->t[3] = ids;
  op->ival[0] = n_w;
  if (n_w == 2) {
    cu_op *op2 = rec(p, OP_MOE_MM2);
    op2->t[0] = y[1];
    op2->t[1] = w[1];
  }
}

static void cu_moe_combine(void *p, hx_tensor out, hx_tensor y, hx_tensor weights, hx_tensor shared,
                           hx_tensor shared_gate) {
  HX_ASSERT(y.n_cols == out.n_cols && y.n_rows >= out.n_rows * weights.n_cols &&
            weights.n_rows >= out.n_rows);
  HX_ASSERT(!shared.buf || (shared.n_cols == out.n_cols && shared.n_rows >= out.n_rows &&
                            shared_gate.buf && shared_gate.n_cols == 1));
  cu_op *op = rec(p, OP_MOE_COMBINE);
  op->t[0] = out;
  op->t[1] = y;
  op->t[2] = weights;
  op->t[3] = shared;
  op->t[4] = shared_gate;
}

/* ---- DeltaNet ops (ssm.cu) ---- */

static void cu_ssm_conv(void *p, hx_tensor out, hx_tensor x, hx_tensor w, hx_tensor state) {
  HX_ASSERT(w.n_cols >= 2 && w.n_cols <= HX_BACKEND_SSM_CONV_MAX && w.n_rows == x.n_cols);
  HX_ASSERT(state.n_rows == w.n_cols - 1 && state.n_cols == x.n_cols);
  HX_ASSERT(out.n_cols == x.n_cols && out.n_rows == x.n_rows && x.n_rows >= 1);
  assert_native(w);
  cu_op *op = rec(p, OP_SSM_CONV);
  op->t[0] = out;
  op->t[1] = x;
  op->t[2] = w;
  op->t[3] = state;
}

static void cu_delta_rule(void *p, hx_tensor out, hx_tensor q, hx_tensor k, hx_tensor v,
                          hx_tensor a, hx_tensor b, hx_tensor ssm_a, hx_tensor dt_bias,
                          hx_tensor state, const hx_delta_params *dp) {
  HX_ASSERT(dp->n_k_heads > 0 && dp->n_v_heads % dp->n_k_heads == 0);
  HX_ASSERT(dp->d_k > 0 && dp->d_k <= HX_BACKEND_SSM_HEAD_DIM_MAX && dp->d_v > 0 &&
            dp->d_v <= HX_BACKEND_SSM_HEAD_DIM_MAX);
  const int64_t n = q.n_rows;
  HX_ASSERT(n >= 1 && k.n_rows == n && v.n_rows == n && a.n_rows == n && b.n_rows == n);
  HX_ASSERT(out.n_rows == n && out.n_cols == (int64_t)dp->n_v_heads * dp->d_v);
  HX_ASSERT(q.n_cols == (int64_t)dp->n_k_heads * dp->d_k && k.n_cols == q.n_cols);
  HX_ASSERT(v.n_cols == out.n_cols && a.n_cols == dp->n_v_heads && b.n_cols == dp->n_v_heads);
  HX_ASSERT(ssm_a.n_cols * ssm_a.n_rows == dp->n_v_heads &&
            dt_bias.n_cols * dt_bias.n_rows == dp->n_v_heads);
  HX_ASSERT(state.n_rows == dp->n_v_heads && state.n_cols == (int64_t)dp->d_k * dp->d_v);
  cu_op *op = rec(p, OP_DELTA);
  op->t[0] = out;
  op->t[1] = q;
  op->t[2] = k;
  op->t[3] = v;
  op->t[4] = state;
  op->ival[0] = dp->n_k_heads;
  op->ival[1] = dp->n_v_heads;
  op->ival[2] = dp->d_k;
  op->lval[0] = dp->d_v;
  op->lval[1] = dp->kv_tiled;
  op->lval[2] = dp->chunk; /* the recurrent form runs either way (ssm.cu) */
  op->fval[0] = dp->eps_l2;
  cu_op *args = rec(p, OP_DELTA_ARGS);
  args->t[0] = a;
  args->t[1] = b;
  args->t[2] = ssm_a;
  args->t[3] = dt_bias;
}

static void cu_gated_norm(void *p, hx_tensor out, hx_tensor x, hx_tensor z, hx_tensor w,
                          int head_dim, float eps) {
  HX_ASSERT(head_dim > 0 && x.n_cols % head_dim == 0 && w.n_cols * w.n_rows == head_dim);
  HX_ASSERT(z.n_cols == x.n_cols && out.n_cols == x.n_cols && z.n_rows == x.n_rows &&
            out.n_rows == x.n_rows);
  cu_op *op = rec(p, OP_GATED_NORM);
  op->t[0] = out;
  op->t[1] = x;
  op->t[2] = z;
  op->t[3] = w;
  op->ival[0] = head_dim;
  op->fval[0] = eps;
}

static void cu_sigmoid_mul(void *p, hx_tensor out, hx_tensor x, hx_tensor g) {
  HX_ASSERT(out.n_cols == x.n_cols && out.n_rows == x.n_rows && g.n_rows == x.n_rows);
  HX_ASSERT(g.n_cols == x.n_cols || g.n_cols == 1);
  cu_op *op = rec(p, OP_SIGMOID_MUL);
  op->t[0] = out;
  op->t[1] = x;
  op->t[2] = g;
}

static void cu_zero(void *p, hx_tensor t) {
  size_t width = hx_backend_row_bytes(t.type, t.n_cols);
  HX_ASSERT(width > 0 && width <= t.row_bytes);
  cu_op *op = rec(p, OP_ZERO);
  op->t[0] = t;
  op->lval[0] = (int64_t)width;
}

/* ---- execution ---- */

/* The GGUF type of a recorded weight type (the CU_PLANAR bit cleared). */
static int native_type(uint32_t type) { return (int)(type & ~(uint32_t)CU_PLANAR); }

/* The matrix a recorded weight op->t[1] reads: its base, the view's first row
 * in it and its rows (planar: from the region, lval[1..2]; native: the view). */
static const uint8_t *weight_base(const cu_op *op, int64_t *row0, int64_t *r_total) {
  hx_tensor w = op->t[1];
  if (!(w.type & CU_PLANAR)) {
    *row0 = 0;
    *r_total = w.n_rows;
    return ptr(w);
  }
  *row0 = op->lval[1];
  *r_total = op->lval[2];
  HX_ASSERT(*row0 >= 0 && *row0 + w.n_rows <= *r_total);
  return ptr(w) - (size_t)*row0 * w.row_bytes;
}

/* A single-row matmul op as a mat-vec job. */
static cu_mv_job mv_job(const cu_op *op) {
  int64_t row0, r_total;
  const uint8_t *w = weight_base(op, &row0, &r_total);
  return (cu_mv_job){(float *)ptr(op->t[0]),
                     w,
                     (const float *)ptr(op->t[3]),
                     (int)op->t[1].type,
                     op->t[1].n_rows,
                     op->t[1].row_bytes,
                     row0,
                     r_total};
}

static cudaDataType_t cublas_type(uint32_t t) {
  return t == T_F32 ? CUDA_R_32F : t == T_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

/* y[n][o] = x[n][i] · W[o][i]ᵀ through cuBLAS (column-major: Yᵀ = W · Xᵀ). */
static void exec_gemm(cuda_be *be, const cu_op *op) {
  hx_tensor y = op->t[0], w = op->t[1], x = op->t[2], bias = op->t[3];
  int64_t n = x.n_rows, n_in = w.n_cols, n_out = w.n_rows;
  const float one = 1.0f, zero = 0.0f;
  if (w.type == T_F32) {
    CKB(cublasGemmEx(be->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)n, (int)n_in, &one,
                     ptr(w), CUDA_R_32F, (int)(w.row_bytes / 4), ptr(x), CUDA_R_32F,
                     (int)stride_f(x), &zero, ptr(y), CUDA_R_32F, (int)stride_f(y),
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    uint32_t op_type = w.type == T_BF16 ? T_BF16 : T_F16;
    HX_ASSERT((size_t)n * (size_t)n_in * 2 <= be->x16_bytes);
    if (op_type == T_BF16)
      launch_f32_to_bf16(be->x16, (const float *)ptr(x), stride_f(x), n_in, n, be->stream);
    else
      launch_f32_to_f16(be->x16, (const float *)ptr(x), stride_f(x), n_in, n, be->stream);
    if (w.type == T_F16 || w.type == T_BF16) {
      CKB(cublasGemmEx(be->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)n, (int)n_in, &one,
                       ptr(w), cublas_type(w.type), (int)(w.row_bytes / 2), be->x16,
                       cublas_type(op_type), (int)n_in, &zero, ptr(y), CUDA_R_32F, (int)stride_f(y),
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    } else {
      /* whole tiles of 128 rows per chunk: a ragged row count (and the
         unaligned output offset it makes) sends cuBLAS to a slow kernel — an
         8B down projection (n_in 12288) chunked at 2730 rows cost ~4x */
      int64_t chunk = (int64_t)(W16_SCRATCH_ELEMS / (size_t)n_in);
      if (chunk >= 128)
        chunk -= chunk % 128;
      if (chunk < 1)
        chunk = 1;
      int64_t w_row0, w_rows;
      const uint8_t *w_base = weight_base(op, &w_row0, &w_rows);
      for (int64_t r0 = 0; r0 < n_out; r0 += chunk) {
        int64_t rows = n_out - r0 < chunk ? n_out - r0 : chunk;
        launch_dequant_f16(be->w16, w_base, (int)w.type, n_in, w.row_bytes, w_row0 + r0, rows,
                           w_rows, be->stream);
        CKB(cublasGemmEx(be->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)n, (int)n_in, &one,
                         be->w16, CUDA_R_16F, (int)n_in, be->x16, CUDA_R_16F, (int)n_in, &zero,
                         (float *)ptr(y) + r0, CUDA_R_32F, (int)stride_f(y), CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
      }
    }
  }
  if (bias.buf)
    launch_add_bias((float *)ptr(y), stride_f(y), (const float *)ptr(bias), n_out, n, be->stream);
}

/* The attention op; q8_out also writes the q8_1 blocks of its (one-row) output. */
static void exec_attention(cuda_be *be, const cu_op *op, void *q8_out) {
  const hx_tensor *t = op->t;
  const hx_attn_params *a = &op->attn;
  launch_attention(
      (float *)ptr(t[0]), stride_f(t[0]), (const float *)ptr(t[1]), stride_f(t[1]), ptr(t[2]),
      ptr(t[3]), (int)t[2].type, t[2].row_bytes, (const int32_t *)ptr(t[4]), t[1].n_rows,
      a->n_heads, a->n_kv_heads, a->head_dim, a->scale, t[2].n_rows, be->attn_part,
      be->attn_part_floats >= attn_partial_floats(a->n_heads, a->head_dim, ATTN_SPLITS_MAX)
          ? ATTN_SPLITS_MAX
          : 1,
      q8_out, be->stream);
}

/* The expert matmul's jobs from an OP_MOE_MM (and the OP_MOE_MM2 after it). */
static int moe_jobs_of(const cu_op *op, cu_moe_job jobs[2]) {
  const int n_w = op->ival[0];
  for (int i = 0; i < n_w; i++) {
    const hx_tensor *ti = op[i].t;
    jobs[i] = (cu_moe_job){(float *)ptr(ti[0]), stride_f(ti[0]), ptr(ti[1]),
                           (int)ti[1].type,     ti[0].n_cols,    ti[1].row_bytes};
  }
  return n_w;
}

static void exec_op(cuda_be *be, const cu_op *op) {
  const hx_tensor *t = op->t;
  cudaStream_t st = be->stream;
  switch (op->kind) {
  case OP_QUANT:
    launch_quantize_q8_1(be->q8, (const float *)ptr(t[0]), stride_f(t[0]), t[0].n_cols, 1, st);
    break;
  case OP_MATMUL:
    if (t[2].n_rows == 1 && matvec_shape_ok(native_type(t[1].type), t[1].n_cols)) {
      if (t[1].type & CU_PLANAR) {
        cu_mv_job job = mv_job(op);
        launch_matvec_job(&job, t[1].n_cols, (const float *)ptr(t[2]), be->q8, st);
      } else {
        launch_matvec((float *)ptr(t[0]), ptr(t[1]), (int)t[1].type, t[1].n_rows, t[1].n_cols,
                      t[1].row_bytes, (const float *)ptr(t[2]), be->q8, (const float *)ptr(t[3]),
                      st);
      }
    } else {
      exec_gemm(be, op);
    }
    break;
  case OP_GET_ROWS: {
    int64_t row0, r_total;
    const uint8_t *table = weight_base(op, &row0, &r_total);
    launch_get_rows((float *)ptr(t[0]), stride_f(t[0]), table, (int)t[1].type, t[1].n_cols,
                    t[1].row_bytes, row0, r_total, (const int32_t *)ptr(t[2]), op->lval[0], st);
    break;
  }
  case OP_RMS_NORM:
    launch_rms_norm((float *)ptr(t[0]), stride_f(t[0]), (float *)ptr(t[1]), stride_f(t[1]),
                    (float *)ptr(t[2]), t[2].buf ? stride_f(t[2]) : 0, (const float *)ptr(t[3]),
                    t[1].n_cols, t[1].n_rows, op->fval[0], op->ival[0], st);
    break;
  case OP_RMS_NORM_HEADS:
    launch_rms_norm_heads((float *)ptr(t[0]), stride_f(t[0]), (const float *)ptr(t[1]), t[0].n_cols,
                          t[0].n_rows, op->ival[0], op->fval[0], st);
    break;
  case OP_ROPE:
    launch_rope((float *)ptr(t[0]), stride_f(t[0]), t[0].n_cols, t[0].n_rows,
                (const int32_t *)ptr(t[1]), op->ival[0], &op->rope, st);
    break;
  case OP_CACHE_STORE:
    launch_cache_store(ptr(t[0]), (int)t[0].type, t[0].row_bytes, (const float *)ptr(t[1]),
                       stride_f(t[1]), t[1].n_cols, t[1].n_rows, (const int32_t *)ptr(t[2]), st);
    break;
  case OP_CACHE_COPY: {
    /* Overlapping moves go in chunks that never overlap themselves. */
    int64_t dst = op->lval[0], src = op->lval[1], n = op->lval[2];
    int64_t gap = dst > src ? dst - src : src - dst;
    if (n <= 0 || gap == 0)
      break;
    int64_t chunk = gap < n ? gap : n;
    for (int64_t done = 0; done < n; done += chunk) {
      int64_t c = n - done < chunk ? n - done : chunk;
      int64_t off = dst > src ? n - done - c : done; /* back to front when moving up */
      CK(cudaMemcpyAsync(ptr(t[0]) + (size_t)(dst + off) * t[0].row_bytes,
                         ptr(t[0]) + (size_t)(src + off) * t[0].row_bytes,
                         (size_t)c * t[0].row_bytes, cudaMemcpyDeviceToDevice, st));
    }
    break;
  }
  case OP_ATTN:
    exec_attention(be, op, NULL);
    break;
  case OP_SWIGLU:
    launch_swiglu((float *)ptr(t[0]), stride_f(t[0]), (const float *)ptr(t[1]), stride_f(t[1]),
                  (const float *)ptr(t[2]), stride_f(t[2]), t[0].n_cols, t[0].n_rows, st);
    break;
  case OP_ADD:
  case OP_MUL:
    launch_binary(op->kind == OP_ADD ? 0 : 1, (float *)ptr(t[0]), stride_f(t[0]),
                  (const float *)ptr(t[1]), stride_f(t[1]), (const float *)ptr(t[2]),
                  t[2].n_rows == 1 ? 0 : stride_f(t[2]), t[0].n_cols, t[0].n_rows, st);
    break;
  case OP_SOFTMAX:
    launch_softmax((float *)ptr(t[0]), stride_f(t[0]), t[0].n_cols, t[0].n_rows, st);
    break;
  case OP_TOPK:
    launch_top_k((float *)ptr(t[0]), stride_f(t[0]), (int32_t *)ptr(t[1]),
                 t[1].row_bytes / sizeof(int32_t), (const float *)ptr(t[2]), stride_f(t[2]),
                 t[2].n_cols, t[2].n_rows, op->ival[0], be->argmax_scratch, st);
    break;
  case OP_MOE_ROUTE:
    launch_moe_route((float *)ptr(t[0]), stride_f(t[0]), (int32_t *)ptr(t[1]),
                     t[1].row_bytes / sizeof(int32_t), (const float *)ptr(t[2]), stride_f(t[2]),
                     t[2].n_cols, t[2].n_rows, op->ival[0], op->ival[1], NULL, 0, 0, NULL, st);
    break;
  case OP_MOE_MM: {
    cu_moe_job jobs[2];
    HX_ASSERT(op->ival[0] == 1 || op[1].kind == OP_MOE_MM2);
    const int n_w = moe_jobs_of(op, jobs);
    launch_moe_matmul_id(jobs, n_w, (const float *)ptr(t[2]), stride_f(t[2]), t[2].n_rows,
                         t[2].n_cols, (const int32_t *)ptr(t[3]), t[3].row_bytes / sizeof(int32_t),
                         t[3].n_rows, (int)t[3].n_cols, t[1].n_rows / t[0].n_cols, be->q8,
                         be->q8_bytes, 0, 0, st);
    break;
  }
  case OP_MOE_MM2:
  case OP_DELTA_ARGS:
    break; /* read by the op before */
  case OP_MOE_COMBINE:
    launch_moe_combine((float *)ptr(t[0]), stride_f(t[0]), (const float *)ptr(t[1]), stride_f(t[1]),
                       (const float *)ptr(t[2]), stride_f(t[2]), (const float *)ptr(t[3]),
                       t[3].buf ? stride_f(t[3]) : 0, (const float *)ptr(t[4]),
                       t[4].buf ? stride_f(t[4]) : 0, t[0].n_cols, t[0].n_rows, (int)t[2].n_cols,
                       st);
    break;
  case OP_SSM_CONV:
    launch_ssm_conv((float *)ptr(t[0]), stride_f(t[0]), (const float *)ptr(t[1]), stride_f(t[1]),
                    (const float *)ptr(t[2]), stride_f(t[2]), (float *)ptr(t[3]), stride_f(t[3]),
                    t[1].n_cols, t[1].n_rows, (int)t[2].n_cols, st);
    break;
  case OP_DELTA: {
    HX_ASSERT(op[1].kind == OP_DELTA_ARGS);
    const hx_tensor *ta = op[1].t;
    cu_delta_args da = {
        .out = (float *)ptr(t[0]),
        .q = (const float *)ptr(t[1]),
        .k = (const float *)ptr(t[2]),
        .v = (const float *)ptr(t[3]),
        .a = (const float *)ptr(ta[0]),
        .b = (const float *)ptr(ta[1]),
        .ssm_a = (const float *)ptr(ta[2]),
        .dt_bias = (const float *)ptr(ta[3]),
        .state = (float *)ptr(t[4]),
        .out_stride = stride_f(t[0]),
        .q_stride = stride_f(t[1]),
        .k_stride = stride_f(t[2]),
        .v_stride = stride_f(t[3]),
        .a_stride = stride_f(ta[0]),
        .b_stride = stride_f(ta[1]),
        .state_stride = stride_f(t[4]),
        .n = t[1].n_rows,
        .n_k_heads = op->ival[0],
        .n_v_heads = op->ival[1],
        .d_k = op->ival[2],
        .d_v = (int)op->lval[0],
        .kv_tiled = (int)op->lval[1],
        .eps = op->fval[0],
    };
    launch_delta_rule(&da, st);
    break;
  }
  case OP_GATED_NORM:
    launch_gated_norm((float *)ptr(t[0]), stride_f(t[0]), (const float *)ptr(t[1]), stride_f(t[1]),
                      (const float *)ptr(t[2]), stride_f(t[2]), (const float *)ptr(t[3]),
                      t[1].n_cols, t[1].n_rows, op->ival[0], op->fval[0], st);
    break;
  case OP_SIGMOID_MUL:
    launch_sigmoid_mul((float *)ptr(t[0]), stride_f(t[0]), (const float *)ptr(t[1]), stride_f(t[1]),
                       (const float *)ptr(t[2]), stride_f(t[2]), t[2].n_cols == 1, t[1].n_cols,
                       t[1].n_rows, st);
    break;
  case OP_ZERO:
    launch_zero_rows(ptr(t[0]), t[0].row_bytes, (size_t)op->lval[0], t[0].n_rows, st);
    break;
  case OP_KIND_COUNT:
    HX_ASSERT(!"not an op");
  }
}

static int prof_bucket(const cu_op *op) {
  if (op->kind != OP_MATMUL)
    return op->kind;
  if (op->t[2].n_rows > 1 || !matvec_shape_ok(native_type(op->t[1].type), op->t[1].n_cols))
    return PROF_MM_GEMM;
  switch (native_type(op->t[1].type)) {
  case 12:
  case 13:
    return PROF_MM_Q4K;
  case 14:
    return PROF_MM_Q6K;
  case 8:
    return PROF_MM_Q8;
  default:
    return PROF_MM_F;
  }
}

/* ---- one-token fusions: chosen at execution when the recorded ops match;
 * each returns how many ops it consumed (0 = no match). ---- */

static bool is_quant_of(const cu_op *op, hx_tensor t) {
  return op->kind == OP_QUANT && same_tensor(op->t[0], t);
}

/* rms_norm(out) ; quant(out) → one kernel */
static int fuse_norm_quant(cuda_be *be, const cu_op *ops, int n) {
  const hx_tensor *t = ops[0].t;
  if (n < 2 || ops[0].kind != OP_RMS_NORM || t[1].n_rows != 1 || !is_quant_of(&ops[1], t[0]) ||
      t[1].n_cols % 32 != 0)
    return 0;
  launch_rms_norm_q8((float *)ptr(t[0]), (float *)ptr(t[1]), (float *)ptr(t[2]),
                     (const float *)ptr(t[3]), t[1].n_cols, ops[0].fval[0], ops[0].ival[0], be->q8,
                     be->stream);
  return 2;
}

/* attention(out) ; quant(out) → the split combine writes the q8_1 blocks too */
static int fuse_attn_quant(cuda_be *be, const cu_op *ops, int n) {
  const hx_tensor *t = ops[0].t;
  if (n < 2 || ops[0].kind != OP_ATTN || t[1].n_rows != 1 || !is_quant_of(&ops[1], t[0]) ||
      ops[0].attn.head_dim % 32 != 0 ||
      t[0].n_cols != (int64_t)ops[0].attn.n_heads * ops[0].attn.head_dim)
    return 0;
  exec_attention(be, &ops[0], be->q8);
  return 2;
}

/* swiglu(out) ; quant(out) → one kernel */
static int fuse_swiglu_quant(cuda_be *be, const cu_op *ops, int n) {
  const hx_tensor *t = ops[0].t;
  if (n < 2 || ops[0].kind != OP_SWIGLU || t[0].n_rows != 1 || !is_quant_of(&ops[1], t[0]) ||
      t[0].n_cols % 32 != 0)
    return 0;
  launch_swiglu_q8((float *)ptr(t[0]), (const float *)ptr(t[1]), (const float *)ptr(t[2]),
                   t[0].n_cols, be->q8, be->stream);
  return 2;
}

/* consecutive quantized matvecs on the same activation → one launch */
static int fuse_matvecs(cuda_be *be, const cu_op *ops, int n) {
  cu_mv_job jobs[3];
  int k = 0;
  while (k < 3 && k < n && ops[k].kind == OP_MATMUL && ops[k].t[2].n_rows == 1 &&
         matvec_type_quantized(native_type(ops[k].t[1].type)) &&
         same_tensor(ops[k].t[2], ops[0].t[2]) && !overlaps(ops[k].t[0], ops[0].t[2])) {
    jobs[k] = mv_job(&ops[k]);
    k++;
  }
  if (k < 2)
    return 0;
  launch_matvec_multi(jobs, k, ops[0].t[1].n_cols, be->q8, be->stream);
  return k;
}

/* [rms_norm_heads q, rms_norm_heads k,] rope q, rope k, cache_store k, cache_store v */
static int fuse_qk_rope_store(cuda_be *be, const cu_op *ops, int n) {
  int i = 0;
  const cu_op *nq = NULL, *nk = NULL;
  if (n >= 2 && ops[0].kind == OP_RMS_NORM_HEADS && ops[1].kind == OP_RMS_NORM_HEADS) {
    nq = &ops[0];
    nk = &ops[1];
    i = 2;
  }
  if (n < i + 4)
    return 0;
  const cu_op *rq = &ops[i], *rk = &ops[i + 1], *sk = &ops[i + 2], *sv = &ops[i + 3];
  if (rq->kind != OP_ROPE || rk->kind != OP_ROPE || sk->kind != OP_CACHE_STORE ||
      sv->kind != OP_CACHE_STORE)
    return 0;
  hx_tensor q = rq->t[0], k = rk->t[0], pos = rq->t[1];
  int hd = rq->ival[0];
  if (q.n_rows != 1 || k.n_rows != 1 || rk->ival[0] != hd || !same_tensor(rk->t[1], pos) ||
      !same_tensor(sk->t[1], k) || !same_tensor(sk->t[2], pos) || !same_tensor(sv->t[2], pos) ||
      memcmp(&rq->rope, &rk->rope, sizeof rq->rope) != 0 || sk->t[0].type != sv->t[0].type ||
      sk->t[0].row_bytes != sv->t[0].row_bytes || sv->t[1].n_cols != k.n_cols ||
      k.n_cols % hd != 0 || q.n_cols % hd != 0 || hd > 256)
    return 0;
  if (nq && (!same_tensor(nq->t[0], q) || !same_tensor(nk->t[0], k) || nq->ival[0] != hd ||
             nk->ival[0] != hd || nq->fval[0] != nk->fval[0]))
    return 0;
  launch_qk_rope_store((float *)ptr(q), (float *)ptr(k), (const float *)ptr(sv->t[1]),
                       nq ? (const float *)ptr(nq->t[1]) : NULL,
                       nk ? (const float *)ptr(nk->t[1]) : NULL, (const int32_t *)ptr(pos),
                       (int)(q.n_cols / hd), (int)(k.n_cols / hd), hd, nq ? nq->fval[0] : 0.0f,
                       &rq->rope, ptr(sk->t[0]), ptr(sv->t[0]), (int)sk->t[0].type,
                       sk->t[0].row_bytes, be->stream);
  return i + 4;
}

/* moe_route ; expert gate+up (one input row per token) [; swiglu of the two]
 * → the route kernel also quantizes the input, and the gate/up kernel applies
 * SwiGLU: one or two launches instead of three or four. */
static int fuse_moe_gate_up(cuda_be *be, const cu_op *ops, int n) {
  if (!be->moe_fusion || n < 2 || ops[0].kind != OP_MOE_ROUTE || ops[1].kind != OP_MOE_MM)
    return 0;
  const cu_op *rt = &ops[0], *mm = &ops[1];
  cu_moe_job jobs[2];
  if (n < 1 + 1 + (mm->ival[0] == 2))
    return 0;
  const int n_w = moe_jobs_of(mm, jobs), k = rt->ival[0], used = 1 + n_w; /* route, mm[, mm2] */
  const hx_tensor x = mm->t[2], ids = mm->t[3];
  const int64_t tokens = ids.n_rows, n_in = x.n_cols;
  if (!same_tensor(rt->t[1], ids) || rt->t[2].n_rows != tokens || x.n_rows != tokens ||
      tokens > HX_CU_MOE_SLOT_TOKENS_MAX || n_in % 32 != 0 ||
      (size_t)tokens * (size_t)(n_in / 32) * HX_CU_Q8_1_BLOCK_BYTES > be->q8_bytes)
    return 0;
  for (int i = 0; i < n_w; i++)
    if (!moe_slot_fused_type(jobs[i].type))
      return 0;
  const cu_op *sw = used < n ? &ops[used] : NULL;
  const bool swiglu = n_w == 2 && sw && sw->kind == OP_SWIGLU &&
                      same_tensor(sw->t[0], mm[0].t[0]) && same_tensor(sw->t[1], mm[0].t[0]) &&
                      same_tensor(sw->t[2], mm[1].t[0]) && jobs[0].type == jobs[1].type &&
                      jobs[0].n_out == jobs[1].n_out && jobs[0].row_bytes == jobs[1].row_bytes;
  const hx_tensor *t = rt->t;
  launch_moe_route((float *)ptr(t[0]), stride_f(t[0]), (int32_t *)ptr(t[1]),
                   t[1].row_bytes / sizeof(int32_t), (const float *)ptr(t[2]), stride_f(t[2]),
                   t[2].n_cols, t[2].n_rows, k, rt->ival[1], (const float *)ptr(x), stride_f(x),
                   n_in, be->q8, be->stream);
  launch_moe_matmul_id(jobs, n_w, (const float *)ptr(x), stride_f(x), x.n_rows, n_in,
                       (const int32_t *)ptr(ids), ids.row_bytes / sizeof(int32_t), tokens,
                       (int)ids.n_cols, mm->t[1].n_rows / mm->t[0].n_cols, be->q8, be->q8_bytes, 1,
                       swiglu, be->stream);
  return used + swiglu;
}

/* expert down (one input row per slot) ; moe_combine of its output → one
 * launch that quantizes each slot's input in registers and combines in place. */
static int fuse_moe_down_combine(cuda_be *be, const cu_op *ops, int n) {
  if (!be->moe_fusion || n < 2 || ops[0].kind != OP_MOE_MM || ops[0].ival[0] != 1 ||
      ops[1].kind != OP_MOE_COMBINE)
    return 0;
  const cu_op *mm = &ops[0], *cb = &ops[1];
  cu_moe_job jobs[2];
  moe_jobs_of(mm, jobs);
  const cu_moe_job job = jobs[0];
  const hx_tensor x = mm->t[2], ids = mm->t[3], *t = cb->t;
  const int64_t tokens = ids.n_rows;
  const int k = (int)ids.n_cols;
  if (!same_tensor(t[1], mm->t[0]) || x.n_rows != tokens * k || t[0].n_rows != tokens ||
      t[2].n_cols != k || tokens > HX_CU_MOE_SLOT_TOKENS_MAX || x.n_cols % 32 != 0 ||
      !moe_slot_fused_type(job.type) || (uintptr_t)ptr(x) % 16 != 0 || stride_f(x) % 4 != 0)
    return 0;
  launch_moe_down_combine(&job, (const float *)ptr(x), stride_f(x), x.n_cols,
                          (const int32_t *)ptr(ids), ids.row_bytes / sizeof(int32_t), tokens, k,
                          mm->t[1].n_rows / mm->t[0].n_cols, (float *)ptr(t[0]), stride_f(t[0]),
                          (const float *)ptr(t[2]), stride_f(t[2]), (const float *)ptr(t[3]),
                          t[3].buf ? stride_f(t[3]) : 0, (const float *)ptr(t[4]),
                          t[4].buf ? stride_f(t[4]) : 0, be->stream);
  return 2;
}

/* Launches one group of recorded ops starting at op (fused where they match
 * in a one-token step); *used gets how many ops it took; returns its profile
 * bucket. */
static int run_group(cuda_be *be, const cu_op *op, int rest, int *used) {
  bool fuse = be->step_tokens == 1 && be->use_fusion;
  int kind = prof_bucket(op);
  if (fuse && (*used = fuse_norm_quant(be, op, rest)))
    kind = PROF_F_NORMQ;
  else if (fuse && (*used = fuse_swiglu_quant(be, op, rest)))
    kind = PROF_F_SWIGLUQ;
  else if (fuse && (*used = fuse_attn_quant(be, op, rest)))
    kind = OP_ATTN;
  else if (fuse && (*used = fuse_matvecs(be, op, rest)))
    kind = PROF_F_MULTI;
  else if (fuse && (*used = fuse_qk_rope_store(be, op, rest)))
    kind = PROF_F_QKROPE;
  else if (fuse && (*used = fuse_moe_gate_up(be, op, rest)))
    kind = PROF_F_MOE_GU;
  else if (fuse && (*used = fuse_moe_down_combine(be, op, rest)))
    kind = PROF_F_MOE_DC;
  else {
    exec_op(be, op);
    *used = 1;
  }
  return kind;
}

/* Runs the recorded ops, fused where they match. With profiling on, an event
 * brackets every launch group and its time goes to the group's bucket. */
static void run_ops(cuda_be *be) {
  bool fuse = be->step_tokens == 1 && be->use_fusion;
  if (be->profile && !be->events) {
    be->events = calloc(OPS_MAX + 1, sizeof(cudaEvent_t));
    for (int i = 0; i <= OPS_MAX; i++)
      CK(cudaEventCreate(&be->events[i]));
  }
  int n_groups = 0;
  for (int i = 0; i < be->n_ops && !be->poisoned;) {
    const cu_op *op = &be->ops[i];
    int rest = be->n_ops - i, used = 0, kind;
    if (be->profile)
      CK(cudaEventRecord(be->events[n_groups], be->stream));
    if (fuse && be->skip_mask) { /* a dry pass names the group; skipped ones stop there */
      be->suppress = true;
      int k = run_group(be, op, rest, &used);
      be->suppress = false;
      if (k < 64 && (be->skip_mask >> k & 1)) {
        i += used;
        continue;
      }
    }
    kind = run_group(be, op, rest, &used);
    double b = 0;
    for (int j = 0; j < used; j++)
      if (op[j].kind == OP_MATMUL)
        b += (double)op[j].t[1].row_bytes * (double)op[j].t[1].n_rows;
    be->group_bucket[n_groups] = kind;
    be->group_bytes[n_groups] = b;
    n_groups++;
    i += used;
  }
  if (!be->profile || be->poisoned)
    return;
  CK(cudaEventRecord(be->events[n_groups], be->stream));
  CK(cudaEventSynchronize(be->events[n_groups]));
  for (int g = 0; g < n_groups; g++) {
    float ms = 0;
    cudaEventElapsedTime(&ms, be->events[g], be->events[g + 1]);
    be->prof_ms[be->group_bucket[g]] += ms;
    be->prof_count[be->group_bucket[g]]++;
    be->prof_bytes[be->group_bucket[g]] += be->group_bytes[g];
  }
  be->prof_steps++;
}

/* A one-token step: replay the cached graph when the ops equal the captured
 * ones, otherwise capture them (updating the executable graph in place when
 * the topology allows). */
static void run_decode_graph(cuda_be *be) {
  if (be->graph_exec && be->graph_n_ops == be->n_ops &&
      memcmp(be->graph_ops, be->ops, sizeof(cu_op) * (size_t)be->n_ops) == 0) {
    CK(cudaGraphLaunch(be->graph_exec, be->stream));
    be->n_replayed++;
    return;
  }
  cudaGraph_t graph = NULL;
  CK(cudaStreamBeginCapture(be->stream, cudaStreamCaptureModeThreadLocal));
  if (be->poisoned)
    return;
  run_ops(be);
  CK(cudaStreamEndCapture(be->stream, &graph));
  if (be->poisoned)
    return;
  if (be->graph_exec) {
    cudaGraphExecUpdateResultInfo info;
    if (cudaGraphExecUpdate(be->graph_exec, graph, &info) != cudaSuccess) {
      cudaGetLastError();
      cudaGraphExecDestroy(be->graph_exec);
      be->graph_exec = NULL;
    }
  }
  if (!be->graph_exec)
    CK(cudaGraphInstantiate(&be->graph_exec, graph, 0));
  cudaGraphDestroy(graph);
  if (be->poisoned)
    return;
  memcpy(be->graph_ops, be->ops, sizeof(cu_op) * (size_t)be->n_ops);
  be->graph_n_ops = be->n_ops;
  be->n_captured++;
  CK(cudaGraphLaunch(be->graph_exec, be->stream));
}

static hx_code cu_step_end(void *p, hx_err *err) {
  cuda_be *be = enter(p);
  HX_ASSERT(be->in_step);
  be->in_step = false;
  if (be->poisoned)
    return poisoned_err(be, err);
  if (be->step_tokens == 1 && be->use_graphs && !be->profile)
    run_decode_graph(be);
  else
    run_ops(be);
  if (!be->poisoned)
    CK(cudaStreamSynchronize(be->stream));
  if (!be->poisoned)
    CK(cudaGetLastError());
  return be->poisoned ? poisoned_err(be, err) : HX_OK;
}

static const hx_backend_ops cuda_ops = {
    .name = "cuda",
    .buf_alloc = cu_buf_alloc,
    .buf_wrap_host = cu_buf_wrap_host,
    .buf_free = cu_buf_free,
    .buf_upload = cu_buf_upload,
    .buf_download = cu_buf_download,
    .reserve = cu_reserve,
    .weight_prepare = cu_weight_prepare,
    .step_begin = cu_step_begin,
    .step_end = cu_step_end,
    .matmul = cu_matmul,
    .matmul_n = cu_matmul_n,
    .get_rows = cu_get_rows,
    .rms_norm = cu_rms_norm,
    .rms_norm_heads = cu_rms_norm_heads,
    .rope = cu_rope_op,
    .cache_store = cu_cache_store,
    .cache_copy = cu_cache_copy,
    .attention = cu_attention,
    .swiglu = cu_swiglu,
    .add = cu_add,
    .mul = cu_mul,
    .softmax = cu_softmax,
    .top_k = cu_top_k,
    /* MoE ops (moe.cu) */
    .moe_route = cu_moe_route,
    .moe_matmul_id = cu_moe_matmul_id,
    .moe_combine = cu_moe_combine,
    /* DeltaNet ops (ssm.cu) */
    .ssm_conv = cu_ssm_conv,
    .delta_rule = cu_delta_rule,
    .gated_norm = cu_gated_norm,
    .sigmoid_mul = cu_sigmoid_mul,
    .zero = cu_zero,
};

int hx_backend_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

hx_code hx_backend_cuda_mem_info(int device, size_t *free_bytes, size_t *total_bytes, hx_err *err) {
  if (cudaSetDevice(device) != cudaSuccess ||
      cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
    cudaError_t e = cudaGetLastError();
    return hx_err_set(err, HX_EDEVICE, "CUDA device %d: %s", device, cudaGetErrorString(e));
  }
  return HX_OK;
}

hx_code hx_backend_cuda_init(hx_backend *out, int device, hx_err *err) {
  memset(out, 0, sizeof *out);
  int n = hx_backend_cuda_device_count();
  if (device < 0 || device >= n)
    return hx_err_set(err, HX_EDEVICE, "no CUDA device %d (%d present)", device, n);
  cuda_be *be = calloc(1, sizeof *be);
  if (!be)
    return hx_err_set(err, HX_ENOMEM, "out of host memory");
  be->device = device;
  be->ops = calloc(OPS_MAX, sizeof(cu_op));
  be->graph_ops = calloc(OPS_MAX, sizeof(cu_op));
  const char *g = getenv("HX_CUDA_GRAPHS");
  be->use_graphs = !(g && strcmp(g, "0") == 0);
  const char *fu = getenv("HX_CUDA_FUSION");
  be->use_fusion = !(fu && strcmp(fu, "0") == 0);
  const char *mf = getenv("HX_MOE_FUSE");
  be->moe_fusion = mf && strcmp(mf, "1") == 0;
  const char *planar = getenv("HX_CUDA_PLANAR");
  be->use_planar = !(planar && strcmp(planar, "0") == 0);
  const char *prof = getenv("HX_CUDA_PROFILE");
  be->profile = prof && strcmp(prof, "1") == 0;
  be->skip_mask = parse_skip(getenv("HX_CUDA_SKIP"));
  t_current = be;
  if (!be->ops || !be->graph_ops || cudaSetDevice(device) != cudaSuccess ||
      cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking) != cudaSuccess ||
      cublasCreate(&be->cublas) != CUBLAS_STATUS_SUCCESS) {
    cudaError_t e = cudaGetLastError();
    hx_err_set(err, HX_EDEVICE, "CUDA device %d: cannot initialise: %s", device,
               cudaGetErrorString(e));
    hx_backend tmp = {&cuda_ops, be};
    hx_backend_cuda_free(&tmp);
    return HX_EDEVICE;
  }
  cublasSetStream(be->cublas, be->stream);
  cublasSetMathMode(be->cublas, CUBLAS_DEFAULT_MATH);
  /* the many-block arg-max's partials and ticket; without it top_k keeps the
     one-block kernel */
  if (cudaMalloc(&be->argmax_scratch, HX_CU_ARGMAX_SCRATCH_BYTES) != cudaSuccess ||
      cudaMemsetAsync(be->argmax_scratch, 0, HX_CU_ARGMAX_SCRATCH_BYTES, be->stream) !=
          cudaSuccess ||
      cudaStreamSynchronize(be->stream) != cudaSuccess) {
    cudaFree(be->argmax_scratch);
    be->argmax_scratch = NULL;
    (void)cudaGetLastError();
  }
  int cc_major = 0;
  cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device);
  /* On by default on sm_90+ (H100, 8B Q4_K_M decode 287 -> 295 tok/s with the
     streaming mat-vecs; docs/benchmarks.md); HX_CUDA_PDL=0 turns it off. */
  const char *pdl = getenv("HX_CUDA_PDL");
  be->pdl = cc_major >= 9 && !(pdl && strcmp(pdl, "0") == 0);
  out->ops = &cuda_ops;
  out->be = be;
  return HX_OK;
}

void hx_backend_cuda_free(hx_backend *b) {
  if (!b || !b->be)
    return;
  cuda_be *be = enter(b->be);
  if (be->profile && getenv("HX_CUDA_PROFILE"))
    hx_backend_cuda_profile_print(b, stderr); /* HX_CUDA_PROFILE=1: the table at exit */
  if (be->graph_exec)
    cudaGraphExecDestroy(be->graph_exec);
  if (be->cublas)
    cublasDestroy(be->cublas);
  if (be->stream)
    cudaStreamDestroy(be->stream);
  cudaFree(be->q8);
  cudaFree(be->x16);
  cudaFree(be->w16);
  cudaFree(be->attn_part);
  cudaFree(be->argmax_scratch);
  repack_tmp_free(be);
  if (be->events) {
    for (int i = 0; i <= OPS_MAX; i++)
      cudaEventDestroy(be->events[i]);
    free(be->events);
  }
  free(be->ops);
  free(be->graph_ops);
  t_current = NULL;
  free(be);
  b->be = NULL;
  b->ops = NULL;
}

bool hx_backend_cuda_poisoned(const hx_backend *b, const char **msg) {
  const cuda_be *be = b->be;
  if (msg)
    *msg = be->poisoned ? be->poison_msg : NULL;
  return be->poisoned;
}

void hx_backend_cuda_graph_stats(const hx_backend *b, long *replayed, long *captured) {
  const cuda_be *be = b->be;
  *replayed = be->n_replayed;
  *captured = be->n_captured;
}

hx_code hx_backend_cuda_fill_random(const hx_backend *b, hx_bbuf *buf, size_t offset, int type,
                                    size_t n_elems, size_t n_bytes, uint64_t seed, float scale,
                                    hx_err *err) {
  cuda_be *be = enter(b->be);
  if (check_range(buf, offset, n_bytes, err))
    return HX_EINVAL;
  if (!planar_forget(buf, offset, n_bytes))
    return hx_err_set(err, HX_EINVAL, "CUDA fill [%zu, +%zu) overwrites part of a repacked weight",
                      offset, n_bytes);
  hx_cuda_fill_random(buf->dev + offset, type, n_elems, n_bytes, seed, scale, be->stream);
  CK(cudaStreamSynchronize(be->stream));
  return be->poisoned ? poisoned_err(be, err) : HX_OK;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

double hx_backend_cuda_copy_bandwidth(const hx_backend *b, size_t n_bytes) {
  cuda_be *be = enter(b->be);
  void *src = NULL, *dst = NULL;
  if (cudaMalloc(&src, n_bytes) != cudaSuccess || cudaMalloc(&dst, n_bytes) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(src);
    return 0.0;
  }
  cudaMemsetAsync(src, 1, n_bytes, be->stream);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  float ms[10];
  for (int i = 0; i < 12; i++) {
    cudaEventRecord(e0, be->stream);
    cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToDevice, be->stream);
    cudaEventRecord(e1, be->stream);
    cudaEventSynchronize(e1);
    if (i >= 2)
      cudaEventElapsedTime(&ms[i - 2], e0, e1);
  }
  qsort(ms, 10, sizeof ms[0], cmp_float);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * (double)n_bytes / (ms[5] * 1e-3) / 1e9;
}

double hx_backend_cuda_gemm_tflops(const hx_backend *b) {
  enum { M = 8192, N = 4096, K = 8192, REPS = 7 };
  cuda_be *be = enter(b->be);
  void *a = NULL, *x = NULL, *y = NULL;
  if (cudaMalloc(&a, (size_t)M * K * 2) != cudaSuccess ||
      cudaMalloc(&x, (size_t)K * N * 2) != cudaSuccess ||
      cudaMalloc(&y, (size_t)M * N * 4) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(a);
    cudaFree(x);
    return 0.0;
  }
  /* 0x3c00 = half 1.0 everywhere: values do not change the rate */
  cudaMemsetAsync(a, 0x3c, (size_t)M * K * 2, be->stream);
  cudaMemsetAsync(x, 0x3c, (size_t)K * N * 2, be->stream);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const float one = 1.0f, zero = 0.0f;
  float ms[REPS];
  bool ok = true;
  for (int i = 0; i < REPS + 2 && ok; i++) {
    cudaEventRecord(e0, be->stream);
    ok = cublasGemmEx(be->cublas, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, a, CUDA_R_16F, K, x,
                      CUDA_R_16F, K, &zero, y, CUDA_R_32F, M, CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
    cudaEventRecord(e1, be->stream);
    cudaEventSynchronize(e1);
    if (i >= 2)
      cudaEventElapsedTime(&ms[i - 2], e0, e1);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(x);
  cudaFree(y);
  if (!ok)
    return 0.0;
  qsort(ms, REPS, sizeof ms[0], cmp_float);
  return 2.0 * M * (double)N * K / (ms[REPS / 2] * 1e-3) / 1e12;
}

void hx_backend_cuda_profile_set(const hx_backend *b, bool on) {
  cuda_be *be = b->be;
  be->profile = on;
  memset(be->prof_ms, 0, sizeof be->prof_ms);
  memset(be->prof_bytes, 0, sizeof be->prof_bytes);
  memset(be->prof_count, 0, sizeof be->prof_count);
  be->prof_steps = 0;
}

void hx_backend_cuda_profile_print(const hx_backend *b, FILE *f) {
  const cuda_be *be = b->be;
  if (be->prof_steps == 0)
    return;
  double total = 0;
  for (int k = 0; k < PROF_KINDS; k++)
    total += be->prof_ms[k];
  fprintf(f, "  profile over %ld steps (ops run one by one, no graph): %.3f ms per step\n",
          be->prof_steps, total / (double)be->prof_steps);
  fprintf(f, "    %-22s %10s %8s %7s %12s\n", "op family", "us/step", "launches", "share",
          "GB/s (weights)");
  for (int k = 0; k < PROF_KINDS; k++) {
    if (be->prof_count[k] == 0)
      continue;
    double us = 1000.0 * be->prof_ms[k] / (double)be->prof_steps;
    fprintf(f, "    %-22s %10.1f %8ld %6.1f%%", prof_names[k], us,
            be->prof_count[k] / be->prof_steps, 100.0 * be->prof_ms[k] / total);
    if (be->prof_bytes[k] > 0)
      fprintf(f, " %12.0f", be->prof_bytes[k] / (be->prof_ms[k] * 1e-3) / 1e9);
    fprintf(f, "\n");
  }
}
