/* cpu_backend.c — the CPU implementation of the backend table (backend.h).
 *
 * Buffers are host memory (64-byte aligned), or wrapped host memory such as
 * an mmapped weight file. Activations are f32. A matmul quantizes its input
 * rows once to the weight type's dot format (Q8_0 / Q8_K, as ggml does) into
 * scratch reserved at load, then splits the output rows into chunks run on the
 * thread pool. Attention runs one (token, head) pair per task with per-worker
 * score scratch. No op allocates: scratch is sized by reserve(). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/log.h"
#include "base/pool.h"
#include "engine/backend.h"
#include "engine/backend/cpu/cpu_impl.h"
#include "engine/quant.h"

/* A row-interleaved copy of a weight tensor in a buffer (cpu_repack.c), made
 * at load (weight_prepare) or at the tensor's first matmul, and kept until the
 * buffer is freed. */
struct cpu_repacked {
  struct cpu_repacked *next;
  size_t offset; /* the tensor's offset in the buffer */
  uint32_t type;
  int64_t n_cols, n_rows8; /* rows covered: a multiple of 8 */
  void *data;              /* cpu_repack_bytes(type, n_rows8, n_cols) bytes */
};

typedef struct cpu_be {
  hx_pool *pool;
  int n_threads;
  void *act_q; /* quantized activations: max_rows * max_cols * 1.25 bytes */
  size_t act_q_bytes;
  float *att;        /* per worker: CPU_ATTN_GROUP_MAX * max_ctx scores + 2 * HEAD_DIM_MAX floats */
  size_t att_stride; /* floats per worker */
  int64_t max_ctx;
  cpu_dot_fn dot[QUANT_TYPE_COUNT];
  cpu_dot4_fn dot4[QUANT_TYPE_COUNT];
  cpu_gemv8_fn gemv8[QUANT_TYPE_COUNT]; /* repacked 8-row kernels, or NULL */
  cpu_gemm4x8_fn gemm8[QUANT_TYPE_COUNT];
  cpu_attn_f16_fn attn16;               /* fused attention over an F16 cache, or NULL */
  cpu_attn_group_f16_fn attn16g;        /* the same for a KV head's query heads at once */
  cpu_quant_fn quant[QUANT_TYPE_COUNT]; /* SIMD activation quantizers, or NULL */
  /* RoPE tables of the last call: inv_freq for rope_p, cos/sin for position
   * rope_pos (single-row calls: q and k of a decode step share them) */
  hx_rope_params rope_p;
  int rope_valid, rope_pos_valid;
  int32_t rope_pos;
  float rope_mscale;
  float rope_inv_freq[HX_BACKEND_HEAD_DIM_MAX / 2];
  float rope_cs[HX_BACKEND_HEAD_DIM_MAX / 2], rope_sn[HX_BACKEND_HEAD_DIM_MAX / 2];
} cpu_be;

static inline char *tptr(hx_tensor t) {
  HX_ASSERT(t.buf != NULL);
  return (char *)t.buf->data + t.offset;
}
static inline char *trow(hx_tensor t, int64_t r) { return tptr(t) + (size_t)r * t.row_bytes; }

/* Row-parallel helper for the per-token ops: fn(ctx, t0, t1) over rows
 * [0, n), on the pool when there are rows to share (prefill), inline for a
 * few rows (a decode step's single row is not worth a dispatch). */
typedef void (*rows_fn)(void *ctx, int64_t t0, int64_t t1);
typedef struct rows_job {
  rows_fn fn;
  void *ctx;
  int64_t n, per_task;
} rows_job;

static void rows_task(void *jv, size_t task, int worker) {
  (void)worker;
  const rows_job *j = jv;
  const int64_t t0 = (int64_t)task * j->per_task;
  j->fn(j->ctx, t0, t0 + j->per_task < j->n ? t0 + j->per_task : j->n);
}

static void rows_run(hx_pool *pool, int n_threads, int64_t n, rows_fn fn, void *ctx) {
  if (n < 4 || n_threads == 1) {
    fn(ctx, 0, n);
    return;
  }
  const int64_t n_tasks = n < 4 * (int64_t)n_threads ? n : 4 * (int64_t)n_threads;
  rows_job j = {.fn = fn, .ctx = ctx, .n = n, .per_task = (n + n_tasks - 1) / n_tasks};
  hx_pool_parallel_for(pool, (size_t)((n + j.per_task - 1) / j.per_task), rows_task, &j);
}

size_t hx_backend_row_bytes(uint32_t type, int64_t n_cols) {
  size_t out;
  if (!quant_type_is_valid(type) || !quant_row_bytes((quant_type)type, n_cols, &out))
    return 0;
  return out;
}

/* ---- memory ------------------------------------------------------------- */

static hx_bbuf *cpu_buf_alloc(void *bev, size_t n_bytes, hx_err *err) {
  (void)bev;
  hx_bbuf *b = calloc(1, sizeof *b);
  size_t rounded = (n_bytes + 63) & ~(size_t)63;
  if (rounded < n_bytes)
    rounded = 0;
  void *p = rounded ? aligned_alloc(64, rounded) : NULL;
  if (!b || (!p && n_bytes)) {
    free(b);
    free(p);
    hx_err_set(err, HX_ENOMEM, "cpu backend: cannot allocate %zu bytes", n_bytes);
    return NULL;
  }
  if (p)
    memset(p, 0, rounded);
  b->data = p;
  b->n_bytes = n_bytes;
  b->owned = 1;
  return b;
}

static hx_bbuf *cpu_buf_wrap_host(void *bev, const void *host, size_t n_bytes) {
  (void)bev;
  hx_bbuf *b = calloc(1, sizeof *b);
  if (!b)
    return NULL;
  b->data = (void *)(uintptr_t)host; /* read-only by contract: ops never write weights */
  b->n_bytes = n_bytes;
  return b;
}

static void cpu_buf_free(void *bev, hx_bbuf *b) {
  (void)bev;
  if (!b)
    return;
  while (b->rp) {
    cpu_repacked *next = b->rp->next;
    free(b->rp->data);
    free(b->rp);
    b->rp = next;
  }
  if (b->owned)
    free(b->data);
  free(b);
}

static hx_code cpu_buf_upload(void *bev, hx_bbuf *b, size_t off, const void *src, size_t n,
                              hx_err *err) {
  (void)bev;
  size_t end;
  if (!b->owned || hx_size_add(off, n, &end) || end > b->n_bytes)
    return hx_err_set(err, HX_EINVAL, "cpu backend: upload of %zu bytes at %zu out of range", n,
                      off);
  memcpy((char *)b->data + off, src, n);
  return HX_OK;
}

static hx_code cpu_buf_download(void *bev, const hx_bbuf *b, size_t off, void *dst, size_t n,
                                hx_err *err) {
  (void)bev;
  size_t end;
  if (hx_size_add(off, n, &end) || end > b->n_bytes)
    return hx_err_set(err, HX_EINVAL, "cpu backend: download of %zu bytes at %zu out of range", n,
                      off);
  memcpy(dst, (const char *)b->data + off, n);
  return HX_OK;
}

static hx_code cpu_reserve(void *bev, int64_t max_rows, int64_t max_cols, int64_t max_ctx,
                           hx_err *err) {
  cpu_be *be = bev;
  HX_ASSERT(max_rows > 0 && max_cols > 0 && max_ctx > 0);
  size_t q_bytes, att_floats, att_total;
  /* two activation copies: Q8_0 and Q8_K formats may both be needed by one matmul_n */
  if (hx_size_mul((size_t)max_rows, 2 * ((size_t)max_cols + (size_t)max_cols / 4 + 64), &q_bytes) ||
      hx_size_mul((size_t)max_ctx, CPU_ATTN_GROUP_MAX, &att_floats) ||
      hx_size_add(att_floats, 2 * HX_BACKEND_HEAD_DIM_MAX + 16, &att_floats) ||
      hx_size_mul(att_floats, (size_t)be->n_threads * sizeof(float), &att_total))
    return hx_err_set(err, HX_ETOOLARGE, "cpu backend: scratch size overflows");
  if (q_bytes > be->act_q_bytes) {
    free(be->act_q);
    be->act_q = aligned_alloc(64, (q_bytes + 63) & ~(size_t)63);
    be->act_q_bytes = be->act_q ? q_bytes : 0;
  }
  if (max_ctx > be->max_ctx) {
    free(be->att);
    be->att = aligned_alloc(64, (att_total + 63) & ~(size_t)63);
    be->att_stride = att_floats;
    be->max_ctx = be->att ? max_ctx : 0;
  }
  if (!be->act_q || !be->att)
    return hx_err_set(err, HX_ENOMEM, "cpu backend: cannot allocate scratch (%zu + %zu bytes)",
                      q_bytes, att_total);
  return HX_OK;
}

static void cpu_step_begin(void *bev, int n_tokens) { (void)bev, (void)n_tokens; }
static hx_code cpu_step_end(void *bev, hx_err *err) {
  (void)bev, (void)err;
  return HX_OK;
}

/* ---- matmul ------------------------------------------------------------- */

typedef struct mm_ctx {
  cpu_be *be;
  hx_tensor y, w, x, bias;
  const char *xq;   /* activation rows in the dot format */
  size_t xq_stride; /* bytes between activation rows */
  int64_t chunk;    /* output rows per task */
  cpu_dot_fn dot;
  cpu_dot4_fn dot4; /* 4 tokens per weight row (prefill), or NULL */
  /* rows [0, n_rows8) from the repacked copy when rp != NULL */
  const cpu_repacked *rp;
  cpu_gemv8_fn gemv8;
  cpu_gemm4x8_fn gemm8;
} mm_ctx;

/* Rows [r0, r1) (whole groups of 8) from the repacked copy, every token. */
static void mm_rows_repacked(const mm_ctx *c, int64_t r0, int64_t r1) {
  const int64_t n_in = c->w.n_cols, n_tok = c->x.n_rows;
  const size_t group_bytes = cpu_repack_bytes((quant_type)c->w.type, 8, n_in);
  const float *bias = c->bias.buf ? (const float *)tptr(c->bias) : NULL;
  HX_ASSERT(r0 % 8 == 0 && r1 % 8 == 0 && r1 <= c->rp->n_rows8 && group_bytes > 0);
  for (int64_t r = r0; r < r1; r += 8) {
    const char *wg = (const char *)c->rp->data + (size_t)(r / 8) * group_bytes;
    int64_t t = 0;
    float v[4][8];
    for (; c->gemm8 && t + 4 <= n_tok; t += 4) {
      c->gemm8(wg, c->xq + (size_t)t * c->xq_stride, c->xq_stride, n_in, v);
      for (int k = 0; k < 4; k++) {
        float *y = (float *)trow(c->y, t + k) + r;
        for (int i = 0; i < 8; i++)
          y[i] = bias ? v[k][i] + bias[r + i] : v[k][i];
      }
    }
    for (; t < n_tok; t++) {
      c->gemv8(wg, c->xq + (size_t)t * c->xq_stride, n_in, v[0]);
      float *y = (float *)trow(c->y, t) + r;
      for (int i = 0; i < 8; i++)
        y[i] = bias ? v[0][i] + bias[r + i] : v[0][i];
    }
  }
}

static void mm_task(void *ctxv, size_t task, int worker) {
  (void)worker;
  const mm_ctx *c = ctxv;
  const int64_t n_out = c->w.n_rows, n_in = c->w.n_cols, n_tok = c->x.n_rows;
  int64_t r0 = (int64_t)task * c->chunk;
  const int64_t r1 = r0 + c->chunk < n_out ? r0 + c->chunk : n_out;
  const float *bias = c->bias.buf ? (const float *)tptr(c->bias) : NULL;
  if (c->rp && r0 < c->rp->n_rows8) {
    const int64_t e = r1 < c->rp->n_rows8 ? r1 : c->rp->n_rows8;
    mm_rows_repacked(c, r0, e);
    r0 = e;
  }
  int64_t t0 = 0;
  if (c->dot4)
    for (; t0 + 4 <= n_tok; t0 += 4) {
      const char *xr = c->xq + (size_t)t0 * c->xq_stride;
      float *y[4];
      for (int k = 0; k < 4; k++)
        y[k] = (float *)trow(c->y, t0 + k);
      for (int64_t r = r0; r < r1; r++) {
        float v[4];
        c->dot4(trow(c->w, r), xr, c->xq_stride, n_in, v);
        for (int k = 0; k < 4; k++)
          y[k][r] = bias ? v[k] + bias[r] : v[k];
      }
    }
  for (int64_t t = t0; t < n_tok; t++) {
    const void *xr = c->xq + (size_t)t * c->xq_stride;
    float *yr = (float *)trow(c->y, t);
    for (int64_t r = r0; r < r1; r++) {
      float v = c->dot(trow(c->w, r), xr, n_in);
      yr[r] = bias ? v + bias[r] : v;
    }
  }
}

typedef struct repack_ctx {
  const cpu_repacked *rp;
  hx_tensor w;
  int64_t groups_per_task;
} repack_ctx;

static void repack_task(void *ctxv, size_t task, int worker) {
  (void)worker;
  const repack_ctx *c = ctxv;
  const int64_t n_groups = c->rp->n_rows8 / 8;
  const int64_t g0 = (int64_t)task * c->groups_per_task;
  const int64_t g1 = g0 + c->groups_per_task < n_groups ? g0 + c->groups_per_task : n_groups;
  cpu_repack_rows((quant_type)c->w.type, tptr(c->w), c->w.row_bytes, c->w.n_cols, g0, g1,
                  c->rp->data);
}

/* True when [p, p + n) lies in one read-only private file mapping of this
 * process (an mmapped model file), per /proc/self/maps. */
static int range_is_private_file(const void *p, size_t n) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f)
    return 0;
  const uintptr_t a = (uintptr_t)p;
  char line[512];
  int ok = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi, inode;
    char perms[5];
    if (sscanf(line, "%lx-%lx %4s %*s %*s %lu", &lo, &hi, perms, &inode) != 4)
      continue;
    if (a >= lo && a < hi) {
      ok = a + n <= hi && perms[0] == 'r' && perms[1] != 'w' && perms[3] == 'p' && inode != 0;
      break;
    }
  }
  fclose(f);
  return ok;
}

/* Once every row of a wrapped weight has its repacked copy, the process's
 * pages of the original are dropped when they are a read-only private file
 * mapping: nothing writes them, and a later read (get_rows of a tied
 * embedding) faults the page back from the page cache. Resident memory then
 * holds one copy of the weights instead of two. Other memory is left alone
 * (MADV_DONTNEED would zero anonymous pages). */
static void mm_release_original(hx_tensor w) {
  const size_t page = 4096, n = (size_t)w.n_rows * w.row_bytes;
  const uintptr_t a0 = ((uintptr_t)tptr(w) + page - 1) & ~(uintptr_t)(page - 1);
  const uintptr_t a1 = ((uintptr_t)tptr(w) + n) & ~(uintptr_t)(page - 1);
  if (w.buf->owned || w.n_rows % 8 != 0 || a1 <= a0 || !range_is_private_file(tptr(w), n))
    return;
  (void)madvise((void *)a0, a1 - a0, MADV_DONTNEED);
}

/* The repacked copy of weight w: found in its buffer, or made now (the
 * tensor's first matmul; weights never change while the buffer lives). NULL
 * when w has no repacked form or memory is short (the caller then uses the
 * row kernels). */
static const cpu_repacked *mm_repacked(cpu_be *be, hx_tensor w) {
  if (!be->gemv8[w.type] || w.n_rows < 8)
    return NULL;
  for (const cpu_repacked *r = w.buf->rp; r; r = r->next)
    if (r->offset == w.offset && r->type == w.type && r->n_cols == w.n_cols &&
        r->n_rows8 == w.n_rows / 8 * 8)
      return r;
  const size_t n_bytes = cpu_repack_bytes((quant_type)w.type, w.n_rows, w.n_cols);
  if (n_bytes == 0)
    return NULL;
  cpu_repacked *rp = calloc(1, sizeof *rp);
  /* 2 MiB aligned, and its whole 2 MiB pages marked for transparent huge
   * pages (THP "madvise" mode): the kernels stream the copy once per token,
   * so 4 KiB pages would cost a TLB miss every 4 KiB, and faulting them in
   * slows the first use. The partial last page stays 4 KiB (a huge page
   * there would hold up to 2 MiB of nothing). */
  const size_t huge = (size_t)2 << 20;
  const size_t align = n_bytes >= huge ? huge : 64;
  void *data = aligned_alloc(align, (n_bytes + align - 1) & ~(align - 1));
  if (data && align == huge)
    (void)madvise(data, n_bytes & ~(huge - 1), MADV_HUGEPAGE);
  if (!rp || !data) {
    free(rp);
    free(data);
    HX_WARN("cpu backend: no memory for a repacked %lldx%lld weight (%zu bytes); using row kernels",
            (long long)w.n_rows, (long long)w.n_cols, n_bytes);
    return NULL;
  }
  *rp = (cpu_repacked){.next = w.buf->rp,
                       .offset = w.offset,
                       .type = w.type,
                       .n_cols = w.n_cols,
                       .n_rows8 = w.n_rows / 8 * 8,
                       .data = data};
  repack_ctx rc = {.rp = rp, .w = w, .groups_per_task = 16};
  const int64_t n_groups = rp->n_rows8 / 8;
  hx_pool_parallel_for(be->pool, (size_t)((n_groups + rc.groups_per_task - 1) / rc.groups_per_task),
                       repack_task, &rc);
  w.buf->rp = rp;
  mm_release_original(w);
  return rp;
}

typedef struct quant_ctx {
  hx_tensor x;
  quant_type dt;
  cpu_quant_fn fn; /* SIMD quantizer, or NULL for quant.c's */
  char *q;
  size_t rb;
} quant_ctx;

static void quant_rows(void *cv, int64_t t0, int64_t t1) {
  const quant_ctx *c = cv;
  for (int64_t t = t0; t < t1; t++) {
    const float *x = (const float *)trow(c->x, t);
    if (c->fn)
      c->fn(x, c->q + (size_t)t * c->rb, c->x.n_cols);
    else
      quant_row_quantize(c->dt, x, c->q + (size_t)t * c->rb, c->x.n_cols);
  }
}

/* Sets up one weight's share of a matmul: activations in its dot format
 * (quantized once per format into scratch slot q_slot) and its row chunks. */
static void mm_prepare(cpu_be *be, mm_ctx *c, hx_tensor y, hx_tensor w, hx_tensor x, hx_tensor bias,
                       const char *xq_by_type[QUANT_TYPE_COUNT], int *q_slot) {
  HX_ASSERT(x.type == QUANT_F32 && y.type == QUANT_F32);
  HX_ASSERT(x.n_cols == w.n_cols && y.n_cols == w.n_rows && y.n_rows == x.n_rows);
  HX_ASSERT(w.type < QUANT_TYPE_COUNT && be->dot[w.type] != NULL);
  *c = (mm_ctx){.be = be, .y = y, .w = w, .x = x, .bias = bias, .dot = be->dot[w.type]};
  if (x.n_rows >= 4 && (w.type != QUANT_Q8_0 || w.n_cols % 64 == 0))
    c->dot4 = be->dot4[w.type];
  const quant_type dt = quant_type_dot_type((quant_type)w.type);
  if (dt == QUANT_F32) {
    c->xq = tptr(x);
    c->xq_stride = x.row_bytes;
  } else {
    const size_t rb = hx_backend_row_bytes(dt, x.n_cols);
    if (!xq_by_type[dt]) {
      HX_ASSERT(*q_slot < 2 && rb > 0 && rb * (size_t)x.n_rows <= be->act_q_bytes / 2);
      char *q = (char *)be->act_q + (size_t)(*q_slot)++ * (be->act_q_bytes / 2);
      quant_ctx qc = {.x = x, .dt = dt, .fn = be->quant[dt], .q = q, .rb = rb};
      rows_run(be->pool, be->n_threads, x.n_rows, quant_rows, &qc);
      xq_by_type[dt] = q;
    }
    c->xq = xq_by_type[dt];
    c->xq_stride = rb;
  }
  if (dt != QUANT_F32 && (c->rp = mm_repacked(be, w)) != NULL) {
    c->gemv8 = be->gemv8[w.type];
    c->gemm8 = be->gemm8[w.type];
  }
  /* enough chunks for load balance across threads, rows a multiple of 8 (a
   * repacked group; 4 for the dot4 kernels) */
  const int64_t n_chunks = (int64_t)be->n_threads * 8;
  int64_t chunk = (w.n_rows + n_chunks - 1) / n_chunks;
  c->chunk = chunk < 8 ? 8 : (chunk + 7) & ~(int64_t)7;
}

typedef struct mm_multi {
  mm_ctx part[HX_BACKEND_MATMUL_N_MAX];
  size_t first_task[HX_BACKEND_MATMUL_N_MAX + 1];
  int n;
} mm_multi;

static void mm_multi_task(void *ctxv, size_t task, int worker) {
  const mm_multi *m = ctxv;
  int i = 0;
  while (task >= m->first_task[i + 1])
    i++;
  mm_task((void *)&m->part[i], task - m->first_task[i], worker);
}

/* Several weights against the same input in one parallel loop: one barrier
 * instead of n, and the input quantized once per dot format. */
static void cpu_matmul_n(void *bev, int n, const hx_tensor *y, const hx_tensor *w, hx_tensor x,
                         const hx_tensor *bias) {
  cpu_be *be = bev;
  HX_ASSERT(n >= 1 && n <= HX_BACKEND_MATMUL_N_MAX);
  mm_multi m = {.n = n};
  const char *xq_by_type[QUANT_TYPE_COUNT] = {0};
  int q_slot = 0;
  const hx_tensor none = {0};
  for (int i = 0; i < n; i++) {
    mm_prepare(be, &m.part[i], y[i], w[i], x, bias ? bias[i] : none, xq_by_type, &q_slot);
    const int64_t n_tasks = (w[i].n_rows + m.part[i].chunk - 1) / m.part[i].chunk;
    m.first_task[i + 1] = m.first_task[i] + (size_t)n_tasks;
  }
  hx_pool_parallel_for(be->pool, m.first_task[n], mm_multi_task, &m);
}

static void cpu_matmul(void *bev, hx_tensor y, hx_tensor w, hx_tensor x, hx_tensor bias) {
  cpu_matmul_n(bev, 1, &y, &w, x, &bias);
}

/* ---- elementwise and row ops --------------------------------------------- */

static void cpu_get_rows(void *bev, hx_tensor out, hx_tensor table, hx_tensor ids, int64_t n) {
  (void)bev;
  HX_ASSERT(out.type == QUANT_F32 && out.n_cols == table.n_cols && ids.type == QUANT_I32);
  const int32_t *id = (const int32_t *)tptr(ids);
  for (int64_t t = 0; t < n; t++) {
    HX_ASSERT(id[t] >= 0 && id[t] < table.n_rows);
    quant_row_dequantize((quant_type)table.type, trow(table, id[t]), (float *)trow(out, t),
                         table.n_cols);
  }
}

static void rms_row(float *out, const float *x, const float *w, int64_t n, float eps, int zc) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; i++)
    ss += (double)x[i] * x[i];
  const float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
  for (int64_t i = 0; i < n; i++)
    out[i] = (x[i] * r) * (zc ? 1.0f + w[i] : w[i]);
}

typedef struct norm_ctx {
  hx_tensor out, x, residual;
  const float *w;
  float eps;
  int zero_centred, head_dim;
} norm_ctx;

static void rms_norm_rows(void *cv, int64_t t0, int64_t t1) {
  const norm_ctx *c = cv;
  for (int64_t t = t0; t < t1; t++) {
    float *xr = (float *)trow(c->x, t);
    if (c->residual.buf) {
      float *rr = (float *)trow(c->residual, t);
      for (int64_t i = 0; i < c->x.n_cols; i++)
        rr[i] += xr[i];
      xr = rr;
    }
    rms_row((float *)trow(c->out, t), xr, c->w, c->x.n_cols, c->eps, c->zero_centred);
  }
}

static void cpu_rms_norm(void *bev, hx_tensor out, hx_tensor x, hx_tensor residual, hx_tensor w,
                         float eps, int zero_centred) {
  cpu_be *be = bev;
  HX_ASSERT(w.type == QUANT_F32 && w.n_cols * w.n_rows == x.n_cols && out.n_rows == x.n_rows);
  norm_ctx c = {.out = out,
                .x = x,
                .residual = residual,
                .w = (const float *)tptr(w),
                .eps = eps,
                .zero_centred = zero_centred};
  rows_run(be->pool, be->n_threads, x.n_rows, rms_norm_rows, &c);
}

static void rms_norm_heads_rows(void *cv, int64_t t0, int64_t t1) {
  const norm_ctx *c = cv;
  const int hd = c->head_dim;
  for (int64_t t = t0; t < t1; t++) {
    float *xr = (float *)trow(c->x, t);
    for (int64_t h = 0; h < c->x.n_cols / hd; h++)
      rms_row(xr + h * hd, xr + h * hd, c->w, hd, c->eps, 0);
  }
}

static void cpu_rms_norm_heads(void *bev, hx_tensor x, hx_tensor w, int head_dim, float eps) {
  cpu_be *be = bev;
  HX_ASSERT(head_dim > 0 && x.n_cols % head_dim == 0 && w.n_cols * w.n_rows == head_dim);
  norm_ctx c = {.x = x, .w = (const float *)tptr(w), .eps = eps, .head_dim = head_dim};
  rows_run(be->pool, be->n_threads, x.n_rows, rms_norm_heads_rows, &c);
}

/* inv_freq[i] for i < n_rot/2 and the cos/sin multiplier, as transformers'
 * default and YaRN rope initialisers compute them (f32 results). */
static float rope_inv_freq(const hx_rope_params *p, float *inv_freq) {
  const int half = p->n_rot / 2;
  const double dim = p->n_rot;
  float mscale = 1.0f;
  const int yarn = p->yarn_factor > 1.0f;
  double low = 0, high = 0;
  if (yarn) {
    const double base = p->freq_base, orig = p->yarn_orig_ctx;
    const double bf = p->yarn_beta_fast > 0 ? p->yarn_beta_fast : 32.0;
    const double bs = p->yarn_beta_slow > 0 ? p->yarn_beta_slow : 1.0;
    low = floor(dim * log(orig / (bf * 2 * M_PI)) / (2 * log(base)));
    high = ceil(dim * log(orig / (bs * 2 * M_PI)) / (2 * log(base)));
    low = low < 0 ? 0 : low;
    high = high > dim - 1 ? dim - 1 : high;
    if (low == high)
      high += 0.001;
    mscale = p->yarn_attn_factor > 0 ? p->yarn_attn_factor
                                     : (float)(0.1 * log((double)p->yarn_factor) + 1.0);
  }
  for (int i = 0; i < half; i++) {
    const float pos_freq = (float)pow((double)p->freq_base, (double)(2 * i) / dim);
    float f = 1.0f / pos_freq;
    if (yarn) {
      const float interp = 1.0f / (p->yarn_factor * pos_freq);
      float ramp = (float)(((double)i - low) / (high - low));
      ramp = ramp < 0 ? 0 : (ramp > 1 ? 1 : ramp);
      const float extrap_factor = 1.0f - ramp;
      f = interp * (1.0f - extrap_factor) + f * extrap_factor;
    } else if (p->freq_scale > 0 && p->freq_scale != 1.0f) {
      f *= p->freq_scale;
    }
    inv_freq[i] = f;
  }
  return mscale;
}

static void rope_tables(const float *inv_freq, float mscale, int half, int32_t pos, float *cs,
                        float *sn) {
  for (int i = 0; i < half; i++) {
    const float ang = (float)pos * inv_freq[i];
    cs[i] = (float)cos((double)ang) * mscale;
    sn[i] = (float)sin((double)ang) * mscale;
  }
}

static void rope_apply(float *xr, int64_t n_heads, int head_dim, int half, const float *cs,
                       const float *sn) {
  for (int64_t h = 0; h < n_heads; h++) {
    float *v = xr + h * head_dim;
    for (int i = 0; i < half; i++) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cs[i] - b * sn[i];
      v[i + half] = b * cs[i] + a * sn[i];
    }
  }
}

typedef struct rope_ctx {
  hx_tensor x;
  const int32_t *pos;
  const float *inv_freq;
  float mscale;
  int head_dim, half;
} rope_ctx;

static void rope_rows(void *cv, int64_t t0, int64_t t1) {
  const rope_ctx *c = cv;
  float cs[HX_BACKEND_HEAD_DIM_MAX / 2], sn[HX_BACKEND_HEAD_DIM_MAX / 2];
  for (int64_t t = t0; t < t1; t++) {
    rope_tables(c->inv_freq, c->mscale, c->half, c->pos[t], cs, sn);
    rope_apply((float *)trow(c->x, t), c->x.n_cols / c->head_dim, c->head_dim, c->half, cs, sn);
  }
}

static void cpu_rope(void *bev, hx_tensor x, hx_tensor pos, int head_dim, const hx_rope_params *p) {
  cpu_be *be = bev;
  HX_ASSERT(p->n_rot > 0 && p->n_rot % 2 == 0 && p->n_rot <= head_dim);
  HX_ASSERT(head_dim <= HX_BACKEND_HEAD_DIM_MAX && x.n_cols % head_dim == 0);
  /* the frequencies depend only on the model's parameters: kept across calls */
  if (!be->rope_valid || memcmp(&be->rope_p, p, sizeof *p) != 0) {
    be->rope_mscale = rope_inv_freq(p, be->rope_inv_freq);
    be->rope_p = *p;
    be->rope_valid = 1;
    be->rope_pos_valid = 0;
  }
  const int half = p->n_rot / 2;
  const int32_t *ps = (const int32_t *)tptr(pos);
  if (x.n_rows == 1) { /* decode: q then k at the same position */
    if (!be->rope_pos_valid || be->rope_pos != ps[0]) {
      rope_tables(be->rope_inv_freq, be->rope_mscale, half, ps[0], be->rope_cs, be->rope_sn);
      be->rope_pos = ps[0];
      be->rope_pos_valid = 1;
    }
    rope_apply((float *)trow(x, 0), x.n_cols / head_dim, head_dim, half, be->rope_cs, be->rope_sn);
    return;
  }
  rope_ctx c = {.x = x,
                .pos = ps,
                .inv_freq = be->rope_inv_freq,
                .mscale = be->rope_mscale,
                .head_dim = head_dim,
                .half = half};
  rows_run(be->pool, be->n_threads, x.n_rows, rope_rows, &c);
}

typedef struct store_ctx {
  hx_tensor cache, src;
  const int32_t *pos;
} store_ctx;

static void cache_store_rows(void *cv, int64_t t0, int64_t t1) {
  const store_ctx *c = cv;
  for (int64_t t = t0; t < t1; t++) {
    HX_ASSERT(c->pos[t] >= 0 && c->pos[t] < c->cache.n_rows);
    const float *src = (const float *)trow(c->src, t);
    if (c->cache.type == QUANT_F16)
      cpu_f32_to_f16_row(src, (uint16_t *)trow(c->cache, c->pos[t]), c->src.n_cols);
    else
      quant_row_quantize((quant_type)c->cache.type, src, trow(c->cache, c->pos[t]), c->src.n_cols);
  }
}

static void cpu_cache_store(void *bev, hx_tensor cache, hx_tensor src, hx_tensor pos) {
  cpu_be *be = bev;
  HX_ASSERT(src.n_cols == cache.n_cols && src.type == QUANT_F32);
  store_ctx c = {.cache = cache, .src = src, .pos = (const int32_t *)tptr(pos)};
  rows_run(be->pool, be->n_threads, src.n_rows, cache_store_rows, &c);
}

static void cpu_cache_copy(void *bev, hx_tensor cache, int64_t dst, int64_t src, int64_t n) {
  (void)bev;
  HX_ASSERT(dst >= 0 && src >= 0 && n >= 0 && dst + n <= cache.n_rows && src + n <= cache.n_rows);
  memmove(trow(cache, dst), trow(cache, src), (size_t)n * cache.row_bytes);
}

typedef struct att_ctx {
  cpu_be *be;
  hx_tensor out, q, k, v;
  const int32_t *pos;
  const hx_attn_params *p;
  size_t kv_head_bytes;   /* bytes of one kv head's slice in a cache row */
  cpu_dot_fn kdot;        /* f32-activation dot for F32/F16 caches; NULL = reference */
  cpu_attn_f16_fn attn16; /* fused F16-cache head kernel, or NULL */
} att_ctx;

static void att_task(void *cv, size_t task, int worker) {
  const att_ctx *c = cv;
  const hx_attn_params *p = c->p;
  const int64_t t = (int64_t)task / p->n_heads;
  const int h = (int)((int64_t)task % p->n_heads);
  const int kvh = h / (p->n_heads / p->n_kv_heads);
  const int hd = p->head_dim;
  const int64_t n_kv = (int64_t)c->pos[t] + 1;
  HX_ASSERT(n_kv <= c->be->max_ctx && n_kv <= c->k.n_rows);
  float *scores = c->be->att + (size_t)worker * c->be->att_stride;
  float *tmp = scores + (size_t)CPU_ATTN_GROUP_MAX * c->be->max_ctx;
  float *acc = tmp + HX_BACKEND_HEAD_DIM_MAX;
  const float *qh = (const float *)trow(c->q, t) + (size_t)h * hd;
  if (c->attn16) {
    c->attn16(qh, (const uint16_t *)(tptr(c->k) + (size_t)kvh * c->kv_head_bytes),
              (const uint16_t *)(tptr(c->v) + (size_t)kvh * c->kv_head_bytes),
              c->k.row_bytes / sizeof(uint16_t), n_kv, hd, p->scale, scores,
              (float *)trow(c->out, t) + (size_t)h * hd);
    return;
  }
  const quant_type kt = (quant_type)c->k.type, vt = (quant_type)c->v.type;
  float mx = -INFINITY;
  for (int64_t j = 0; j < n_kv; j++) {
    const char *kr = trow(c->k, j) + (size_t)kvh * c->kv_head_bytes;
    const float s = (c->kdot ? c->kdot(kr, qh, hd) : quant_row_dot_f32(kt, kr, qh, hd)) * p->scale;
    scores[j] = s;
    mx = s > mx ? s : mx;
  }
  double sum = 0.0;
  for (int64_t j = 0; j < n_kv; j++) {
    scores[j] = expf(scores[j] - mx);
    sum += scores[j];
  }
  const float inv = (float)(1.0 / sum);
  for (int i = 0; i < hd; i++)
    acc[i] = 0.0f;
  for (int64_t j = 0; j < n_kv; j++) {
    const char *vr = trow(c->v, j) + (size_t)kvh * c->kv_head_bytes;
    const float *vv;
    if (vt == QUANT_F32) {
      vv = (const float *)vr;
    } else if (vt == QUANT_F16) {
      cpu_f16_to_f32_row((const uint16_t *)vr, tmp, hd);
      vv = tmp;
    } else {
      quant_row_dequantize(vt, vr, tmp, hd);
      vv = tmp;
    }
    const float pj = scores[j] * inv;
    for (int i = 0; i < hd; i++)
      acc[i] += pj * vv[i];
  }
  memcpy((float *)trow(c->out, t) + (size_t)h * hd, acc, (size_t)hd * sizeof(float));
}

/* One (token, KV head) task: its G query heads through the grouped kernel. */
static void att_group_task(void *cv, size_t task, int worker) {
  const att_ctx *c = cv;
  const hx_attn_params *p = c->p;
  const int64_t t = (int64_t)task / p->n_kv_heads;
  const int kvh = (int)((int64_t)task % p->n_kv_heads);
  const int G = p->n_heads / p->n_kv_heads, hd = p->head_dim;
  const int64_t n_kv = (int64_t)c->pos[t] + 1;
  HX_ASSERT(n_kv <= c->be->max_ctx && n_kv <= c->k.n_rows);
  const size_t off = (size_t)kvh * (size_t)G * (size_t)hd;
  c->be->attn16g((const float *)trow(c->q, t) + off, G,
                 (const uint16_t *)(tptr(c->k) + (size_t)kvh * c->kv_head_bytes),
                 (const uint16_t *)(tptr(c->v) + (size_t)kvh * c->kv_head_bytes),
                 c->k.row_bytes / sizeof(uint16_t), n_kv, hd, p->scale,
                 c->be->att + (size_t)worker * c->be->att_stride, (float *)trow(c->out, t) + off);
}

static void cpu_attention(void *bev, hx_tensor out, hx_tensor q, hx_tensor k, hx_tensor v,
                          hx_tensor pos, const hx_attn_params *p) {
  cpu_be *be = bev;
  HX_ASSERT(p->n_kv_heads > 0 && p->n_heads % p->n_kv_heads == 0);
  HX_ASSERT(p->head_dim > 0 && p->head_dim <= HX_BACKEND_HEAD_DIM_MAX);
  HX_ASSERT(q.n_cols == (int64_t)p->n_heads * p->head_dim && out.n_cols == q.n_cols);
  HX_ASSERT(k.n_cols == (int64_t)p->n_kv_heads * p->head_dim && k.type == v.type);
  att_ctx c = {.be = be, .out = out, .q = q, .k = k, .v = v, .p = p};
  c.pos = (const int32_t *)tptr(pos);
  c.kv_head_bytes = hx_backend_row_bytes(k.type, p->head_dim);
  HX_ASSERT(c.kv_head_bytes > 0);
  c.kdot = (k.type == QUANT_F32 || k.type == QUANT_F16) ? be->dot[k.type] : NULL;
  if (k.type == QUANT_F16 && p->head_dim % 8 == 0 && k.row_bytes == v.row_bytes &&
      k.row_bytes % sizeof(uint16_t) == 0)
    c.attn16 = be->attn16;
  const int G = p->n_heads / p->n_kv_heads;
  if (c.attn16 && be->attn16g && G <= CPU_ATTN_GROUP_MAX && p->head_dim % 16 == 0 &&
      p->head_dim <= 256)
    hx_pool_parallel_for(be->pool, (size_t)q.n_rows * (size_t)p->n_kv_heads, att_group_task, &c);
  else
    hx_pool_parallel_for(be->pool, (size_t)q.n_rows * (size_t)p->n_heads, att_task, &c);
}

typedef struct swiglu_ctx {
  hx_tensor out, g, u;
} swiglu_ctx;

static void swiglu_rows(void *cv, int64_t t0, int64_t t1) {
  const swiglu_ctx *c = cv;
  for (int64_t t = t0; t < t1; t++) {
    cpu_swiglu_row((const float *)trow(c->g, t), (const float *)trow(c->u, t),
                   (float *)trow(c->out, t), c->g.n_cols);
  }
}

static void cpu_swiglu(void *bev, hx_tensor out, hx_tensor g, hx_tensor u) {
  cpu_be *be = bev;
  HX_ASSERT(g.n_cols == u.n_cols && g.n_rows == u.n_rows && out.n_cols == g.n_cols);
  swiglu_ctx c = {.out = out, .g = g, .u = u};
  rows_run(be->pool, be->n_threads, g.n_rows, swiglu_rows, &c);
}

static void binop(hx_tensor out, hx_tensor a, hx_tensor b, int mul) {
  HX_ASSERT(a.n_cols == b.n_cols && (b.n_rows == a.n_rows || b.n_rows == 1));
  for (int64_t t = 0; t < a.n_rows; t++) {
    const float *ar = (const float *)trow(a, t);
    const float *br = (const float *)trow(b, b.n_rows == 1 ? 0 : t);
    float *o = (float *)trow(out, t);
    for (int64_t i = 0; i < a.n_cols; i++)
      o[i] = mul ? ar[i] * br[i] : ar[i] + br[i];
  }
}
static void cpu_add(void *bev, hx_tensor out, hx_tensor a, hx_tensor b) {
  (void)bev;
  binop(out, a, b, 0);
}
static void cpu_mul(void *bev, hx_tensor out, hx_tensor a, hx_tensor b) {
  (void)bev;
  binop(out, a, b, 1);
}

static void cpu_softmax(void *bev, hx_tensor x) {
  (void)bev;
  for (int64_t t = 0; t < x.n_rows; t++) {
    float *r = (float *)trow(x, t);
    float mx = -INFINITY;
    for (int64_t i = 0; i < x.n_cols; i++)
      mx = r[i] > mx ? r[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < x.n_cols; i++) {
      r[i] = expf(r[i] - mx);
      s += r[i];
    }
    for (int64_t i = 0; i < x.n_cols; i++)
      r[i] = (float)(r[i] / s);
  }
}

static void cpu_top_k(void *bev, hx_tensor vals, hx_tensor ids, hx_tensor x, int k) {
  (void)bev;
  HX_ASSERT(k >= 1 && k <= HX_BACKEND_TOPK_MAX && k <= x.n_cols);
  for (int64_t t = 0; t < x.n_rows; t++) {
    const float *r = (const float *)trow(x, t);
    float *bv = (float *)trow(vals, t);
    int32_t *bi = (int32_t *)trow(ids, t);
    int n = 0;
    for (int64_t i = 0; i < x.n_cols; i++) {
      if (n == k && !(r[i] > bv[k - 1]))
        continue;
      int j = n < k ? n++ : k - 1;
      while (j > 0 && r[i] > bv[j - 1]) {
        bv[j] = bv[j - 1];
        bi[j] = bi[j - 1];
        j--;
      }
      bv[j] = r[i];
      bi[j] = (int32_t)i;
    }
  }
}

/* Entry points for the op files beside this one (cpu_impl.h). */
const void *cpu_be_repacked(void *bev, hx_tensor w, cpu_gemv8_fn *gemv, cpu_gemm4x8_fn *gemm) {
  cpu_be *be = bev;
  const cpu_repacked *rp = quant_type_is_valid(w.type) ? mm_repacked(be, w) : NULL;
  if (!rp || rp->n_rows8 != w.n_rows)
    return NULL;
  *gemv = be->gemv8[w.type];
  *gemm = be->gemm8[w.type];
  return rp->data;
}

hx_pool *cpu_be_pool(void *bev) { return ((cpu_be *)bev)->pool; }
int cpu_be_threads(void *bev) { return ((cpu_be *)bev)->n_threads; }
void cpu_be_matmul(void *bev, hx_tensor y, hx_tensor w, hx_tensor x, hx_tensor bias) {
  cpu_matmul(bev, y, w, x, bias);
}

static void cpu_weight_prepare(void *bev, hx_tensor w) {
  if (w.buf && quant_type_is_valid(w.type) && quant_type_dot_type((quant_type)w.type) != QUANT_F32)
    (void)mm_repacked(bev, w);
}

static void cpu_expert_weight_prepare(void *bev, hx_tensor w, int64_t n_out) {
  if (n_out > 0 && n_out % 8 == 0)
    cpu_weight_prepare(bev, w); /* every expert's rows are whole groups of 8 */
}

static const hx_backend_ops cpu_ops = {
    .name = "cpu",
    .buf_alloc = cpu_buf_alloc,
    .buf_wrap_host = cpu_buf_wrap_host,
    .buf_free = cpu_buf_free,
    .buf_upload = cpu_buf_upload,
    .buf_download = cpu_buf_download,
    .reserve = cpu_reserve,
    .weight_prepare = cpu_weight_prepare,
    .step_begin = cpu_step_begin,
    .step_end = cpu_step_end,
    .matmul = cpu_matmul,
    .matmul_n = cpu_matmul_n,
    .get_rows = cpu_get_rows,
    .rms_norm = cpu_rms_norm,
    .rms_norm_heads = cpu_rms_norm_heads,
    .rope = cpu_rope,
    .cache_store = cpu_cache_store,
    .cache_copy = cpu_cache_copy,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .mul = cpu_mul,
    .softmax = cpu_softmax,
    .top_k = cpu_top_k,
    /* MoE ops (cpu_moe.c) */
    .moe_route = cpu_moe_route,
    .moe_matmul_id = cpu_moe_matmul_id,
    .expert_weight_prepare = cpu_expert_weight_prepare,
    .moe_combine = cpu_moe_combine,
    /* DeltaNet ops (cpu_ssm.c) */
    .ssm_conv = cpu_ssm_conv,
    .delta_rule = cpu_delta_rule,
    .gated_norm = cpu_gated_norm,
    .sigmoid_mul = cpu_sigmoid_mul,
    .zero = cpu_zero,
};

hx_code hx_backend_cpu_init(hx_backend *out, int n_threads, hx_err *err) {
  memset(out, 0, sizeof *out);
  if (n_threads < 1 || n_threads > 256)
    return hx_err_set(err, HX_EINVAL, "cpu backend: threads must be 1..256, got %d", n_threads);
  cpu_be *be = calloc(1, sizeof *be);
  if (!be)
    return hx_err_set(err, HX_ENOMEM, "cpu backend: out of memory");
  be->n_threads = n_threads;
  be->pool = hx_pool_create(n_threads);
  if (!be->pool) {
    free(be);
    return hx_err_set(err, HX_ENOMEM, "cpu backend: cannot start %d threads", n_threads);
  }
  for (int t = 0; t < QUANT_TYPE_COUNT; t++) {
    be->dot[t] = cpu_dot_best((quant_type)t);
    be->dot4[t] = cpu_dot4_get((quant_type)t, cpu_isa_best());
    cpu_repack_get((quant_type)t, &be->gemv8[t], &be->gemm8[t]);
  }
  be->attn16 = cpu_attn_f16_get(cpu_isa_best());
  be->attn16g = cpu_attn_group_f16_get(cpu_isa_best());
  be->quant[QUANT_Q8_0] = cpu_quant_get(QUANT_Q8_0, cpu_isa_best());
  be->quant[QUANT_Q8_K] = cpu_quant_get(QUANT_Q8_K, cpu_isa_best());
  out->ops = &cpu_ops;
  out->be = be;
  return HX_OK;
}

void hx_backend_cpu_free(hx_backend *b) {
  if (!b || !b->be)
    return;
  cpu_be *be = b->be;
  hx_pool_free(be->pool);
  free(be->act_q);
  free(be->att);
  free(be);
  b->be = NULL;
  b->ops = NULL;
}
