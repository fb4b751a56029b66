/* cpu_moe.c — the mixture-of-experts ops of the CPU backend (backend.h):
 * routing, the expert matmul selected by ids, and the weighted combine.
 *
 * moe_matmul_id groups work by expert: the experts present in ids are listed
 * first (on the calling thread, O(n*k)), then each task takes one expert and a
 * chunk of its output rows, finds the input rows routed to that expert (a scan
 * of ids) four at a time, converts them to the weight type's dot format on the
 * stack, and runs a 4-row kernel over its weight rows — so an expert's
 * weight rows are streamed once per four routed tokens, and in decode only the
 * k chosen experts are touched. Where the CPU has the row-interleaved kernels
 * (cpu_repack.c) and each expert's rows are whole groups of 8, the experts are
 * read from the backend's repacked copy (made at load by
 * expert_weight_prepare, or at the first call) with the dense matmul's
 * 4-token x 8-row kernel. Converting an input block once per task costs about
 * 1/chunk of the dot work. Nothing is allocated. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "engine/backend.h"
#include "engine/backend/cpu/cpu_impl.h"
#include "engine/quant.h"

/* Backend buffers are host memory (struct hx_bbuf, cpu_impl.h). */
static inline char *moe_row(hx_tensor t, int64_t r) {
  HX_ASSERT(t.buf != NULL);
  return (char *)t.buf->data + t.offset + (size_t)r * t.row_bytes;
}

/* ---- routing ------------------------------------------------------------- */

void cpu_moe_route(void *be, hx_tensor weights, hx_tensor ids, hx_tensor logits, int k,
                   int renorm) {
  (void)be;
  const int64_t n_exp = logits.n_cols;
  HX_ASSERT(k >= 1 && k <= HX_BACKEND_TOPK_MAX && k <= n_exp);
  HX_ASSERT(logits.type == QUANT_F32 && weights.type == QUANT_F32 && ids.type == QUANT_I32);
  HX_ASSERT(weights.n_cols == k && ids.n_cols == k);
  HX_ASSERT(weights.n_rows >= logits.n_rows && ids.n_rows >= logits.n_rows);
  for (int64_t t = 0; t < logits.n_rows; t++) {
    const float *r = (const float *)moe_row(logits, t);
    float *bv = (float *)moe_row(weights, t);
    int32_t *bi = (int32_t *)moe_row(ids, t);
    float mx = -INFINITY;
    for (int64_t e = 0; e < n_exp; e++)
      mx = r[e] > mx ? r[e] : mx;
    double sum = 0.0;
    for (int64_t e = 0; e < n_exp; e++)
      sum += expf(r[e] - mx);
    const float inv = (float)(1.0 / sum);
    /* insertion top-k on the probabilities (strictly greater displaces: ties keep the lower id) */
    int n = 0;
    for (int64_t e = 0; e < n_exp; e++) {
      const float p = expf(r[e] - mx) * inv;
      if (n == k && !(p > bv[k - 1]))
        continue;
      int j = n < k ? n++ : k - 1;
      while (j > 0 && p > bv[j - 1]) {
        bv[j] = bv[j - 1];
        bi[j] = bi[j - 1];
        j--;
      }
      bv[j] = p;
      bi[j] = (int32_t)e;
    }
    if (renorm) {
      float s = 0.0f;
      for (int j = 0; j < k; j++)
        s += bv[j];
      for (int j = 0; j < k; j++)
        bv[j] /= s;
    }
  }
}

/* ---- expert matmul -------------------------------------------------------- */

enum { MOE_EXPERT_MAX = 4096, MOE_BLOCK = 4 };

typedef struct mid_ctx {
  int n_w;
  const hx_tensor *y, *w;
  hx_tensor x, ids;
  int64_t n, k;          /* token rows, slots per row */
  int64_t n_in, n_out;   /* per expert */
  bool x_per_slot;       /* x has n*k rows */
  const int32_t *active; /* experts present in ids */
  int64_t chunk;         /* output rows per task */
  int64_t chunks;        /* tasks per expert */
  quant_type dt;         /* dot format of the activations (one for all weights) */
  size_t xq_bytes;       /* bytes of one converted input row */
  cpu_dot_fn dot[2];
  cpu_dot4_fn dot4[2];
  /* row-interleaved copies (all experts' rows, groups of 8), or NULL */
  const char *rp[2];
  size_t group_bytes[2];
  cpu_gemv8_fn gemv8[2];
  cpu_gemm4x8_fn gemm8[2];
} mid_ctx;

/* Rows [r0, r1) (whole groups of 8) of weight i's expert e for the nb
 * converted input rows at xq (xq_bytes apart) from the repacked copy: 4 rows
 * by 8 weight rows at a time (the dense matmul's prefill kernel), else one
 * row at a time. */
static void mid_rows_repacked(const mid_ctx *c, int i, int32_t e, int64_t r0, int64_t r1,
                              const char *xq, int nb, float *const yr[MOE_BLOCK]) {
  const char *base = c->rp[i] + (size_t)(e * c->n_out / 8) * c->group_bytes[i];
  for (int64_t r = r0; r < r1; r += 8) {
    const char *wg = base + (size_t)(r / 8) * c->group_bytes[i];
    if (nb == MOE_BLOCK && c->gemm8[i]) {
      float v[MOE_BLOCK][8];
      c->gemm8[i](wg, xq, c->xq_bytes, c->n_in, v);
      for (int b = 0; b < MOE_BLOCK; b++)
        memcpy(yr[b] + r, v[b], sizeof v[b]);
    } else {
      for (int b = 0; b < nb; b++)
        c->gemv8[i](wg, xq + (size_t)b * c->xq_bytes, c->n_in, yr[b] + r);
    }
  }
}

static bool moe_repack_on(void) {
  static int on = -1;
  if (on < 0) {
    const char *e = getenv("HX_CPU_MOE_REPACK");
    on = !(e && e[0] == '0');
  }
  return on != 0;
}

static void mid_task(void *cv, size_t task, int worker) {
  (void)worker;
  const mid_ctx *c = cv;
  const int32_t e = c->active[task / (size_t)c->chunks];
  const int64_t r0 = (int64_t)(task % (size_t)c->chunks) * c->chunk;
  const int64_t r1 = r0 + c->chunk < c->n_out ? r0 + c->chunk : c->n_out;
  const int32_t *ids = (const int32_t *)moe_row(c->ids, 0);
  const int64_t ids_stride = (int64_t)(c->ids.row_bytes / sizeof(int32_t));
  /* converted input rows of the current block; Q8_K of HX_BACKEND_MOE_N_IN_MAX is < 19 KiB */
  _Alignas(64) char xq[MOE_BLOCK * (HX_BACKEND_MOE_N_IN_MAX / 256) * 320];
  HX_ASSERT(c->xq_bytes * MOE_BLOCK <= sizeof xq);
  int64_t slot[MOE_BLOCK];
  int64_t t = 0, j = 0;
  for (;;) {
    int nb = 0; /* gather up to four (t, j) routed to e */
    for (; t < c->n && nb < MOE_BLOCK; j = (j + 1 == c->k) ? 0 : j + 1, t += (j == 0)) {
      if (ids[t * ids_stride + j] == e)
        slot[nb++] = t * c->k + j;
    }
    if (nb == 0)
      break;
    const void *xr[MOE_BLOCK];
    for (int b = 0; b < nb; b++) {
      const float *src = (const float *)moe_row(c->x, c->x_per_slot ? slot[b] : slot[b] / c->k);
      if (c->dt == QUANT_F32) {
        xr[b] = src;
      } else {
        quant_row_quantize(c->dt, src, xq + (size_t)b * c->xq_bytes, c->n_in);
        xr[b] = xq + (size_t)b * c->xq_bytes;
      }
    }
    for (int i = 0; i < c->n_w; i++) {
      const hx_tensor w = c->w[i];
      float *yr[MOE_BLOCK];
      for (int b = 0; b < nb; b++)
        yr[b] = (float *)moe_row(c->y[i], slot[b]);
      const int64_t wr0 = (int64_t)e * c->n_out;
      if (c->rp[i]) {
        mid_rows_repacked(c, i, e, r0, r1, xq, nb, yr);
      } else if (nb == MOE_BLOCK && c->dot4[i] && c->dt != QUANT_F32) {
        for (int64_t r = r0; r < r1; r++) {
          float v[MOE_BLOCK];
          c->dot4[i](moe_row(w, wr0 + r), xq, c->xq_bytes, c->n_in, v);
          for (int b = 0; b < MOE_BLOCK; b++)
            yr[b][r] = v[b];
        }
      } else {
        for (int64_t r = r0; r < r1; r++) {
          const void *wr = moe_row(w, wr0 + r);
          for (int b = 0; b < nb; b++)
            yr[b][r] = c->dot[i](wr, xr[b], c->n_in);
        }
      }
    }
    if (nb < MOE_BLOCK)
      break;
  }
}

void cpu_moe_matmul_id(void *be, int n_w, const hx_tensor *y, const hx_tensor *w, hx_tensor x,
                       hx_tensor ids) {
  HX_ASSERT(n_w >= 1 && n_w <= 2);
  HX_ASSERT(ids.type == QUANT_I32 && x.type == QUANT_F32);
  const int64_t n = ids.n_rows, k = ids.n_cols, n_in = x.n_cols, n_out = y[0].n_cols;
  HX_ASSERT(n >= 1 && k >= 1 && k <= HX_BACKEND_TOPK_MAX);
  HX_ASSERT(n_in >= 1 && n_in <= HX_BACKEND_MOE_N_IN_MAX);
  HX_ASSERT(x.n_rows == n || x.n_rows == n * k);
  const int64_t n_exp = w[0].n_rows / n_out;
  HX_ASSERT(n_exp >= 1 && n_exp <= MOE_EXPERT_MAX && n_exp * n_out == w[0].n_rows);
  mid_ctx c = {.n_w = n_w,
               .y = y,
               .w = w,
               .x = x,
               .ids = ids,
               .n = n,
               .k = k,
               .n_in = n_in,
               .n_out = n_out,
               .x_per_slot = x.n_rows == n * k};
  const cpu_isa isa = cpu_isa_best();
  for (int i = 0; i < n_w; i++) {
    HX_ASSERT(w[i].n_cols == n_in && w[i].n_rows == w[0].n_rows && y[i].n_cols == n_out);
    HX_ASSERT(y[i].type == QUANT_F32 && y[i].n_rows >= n * k);
    HX_ASSERT(y[i].buf != x.buf || y[i].offset >= x.offset + (size_t)x.n_rows * x.row_bytes ||
              x.offset >= y[i].offset + (size_t)y[i].n_rows * y[i].row_bytes);
    const quant_type dt = quant_type_dot_type((quant_type)w[i].type);
    HX_ASSERT(i == 0 || dt == c.dt);
    c.dt = dt;
    c.dot[i] = cpu_dot_best((quant_type)w[i].type);
    HX_ASSERT(c.dot[i] != NULL);
    c.dot4[i] = cpu_dot4_get((quant_type)w[i].type, isa);
    if (w[i].type == QUANT_Q8_0 && n_in % 64 != 0)
      c.dot4[i] = NULL;
    /* the row-interleaved copy when every expert's rows are whole groups
       (HX_CPU_MOE_REPACK=0: the row kernels, for comparison) */
    if (dt != QUANT_F32 && n_out % 8 == 0 && moe_repack_on() &&
        (c.rp[i] = cpu_be_repacked(be, w[i], &c.gemv8[i], &c.gemm8[i])) != NULL)
      c.group_bytes[i] = cpu_repack_bytes((quant_type)w[i].type, 8, n_in);
  }
  if (c.dt != QUANT_F32) {
    HX_ASSERT(quant_row_bytes(c.dt, n_in, &c.xq_bytes));
  }
  /* experts present, in id order */
  uint8_t seen[MOE_EXPERT_MAX];
  int32_t active[MOE_EXPERT_MAX];
  memset(seen, 0, (size_t)n_exp);
  const int32_t *id = (const int32_t *)moe_row(ids, 0);
  const int64_t ids_stride = (int64_t)(ids.row_bytes / sizeof(int32_t));
  for (int64_t t = 0; t < n; t++)
    for (int64_t j = 0; j < k; j++) {
      const int32_t e = id[t * ids_stride + j];
      HX_ASSERT(e >= 0 && e < n_exp);
      seen[e] = 1;
    }
  int64_t n_active = 0;
  for (int64_t e = 0; e < n_exp; e++)
    if (seen[e])
      active[n_active++] = (int32_t)e;
  c.active = active;
  /* enough tasks to balance the pool, output rows a multiple of 8 */
  const int64_t target = (int64_t)cpu_be_threads(be) * 8;
  int64_t per_exp = (target + n_active - 1) / n_active;
  int64_t chunk = (n_out + per_exp - 1) / per_exp;
  chunk = chunk < 8 ? 8 : (chunk + 7) & ~(int64_t)7; /* whole repacked groups */
  c.chunk = chunk;
  c.chunks = (n_out + chunk - 1) / chunk;
  hx_pool_parallel_for(cpu_be_pool(be), (size_t)(n_active * c.chunks), mid_task, &c);
}

/* ---- combine ------------------------------------------------------------- */

typedef struct comb_ctx {
  hx_tensor out, y, weights, shared, shared_gate;
  int64_t k, d, rows_per_task;
} comb_ctx;

static void comb_task(void *cv, size_t task, int worker) {
  (void)worker;
  const comb_ctx *c = cv;
  const int64_t t0 = (int64_t)task * c->rows_per_task;
  const int64_t t1 = t0 + c->rows_per_task < c->out.n_rows ? t0 + c->rows_per_task : c->out.n_rows;
  for (int64_t t = t0; t < t1; t++) {
    const float *wt = (const float *)moe_row(c->weights, t);
    float *o = (float *)moe_row(c->out, t);
    float g = 0.0f;
    const float *s = NULL;
    if (c->shared.buf) { /* read before out (may alias shared) is written */
      g = 1.0f / (1.0f + expf(-*(const float *)moe_row(c->shared_gate, t)));
      s = (const float *)moe_row(c->shared, t);
    }
    for (int64_t i = 0; i < c->d; i++) {
      float acc = 0.0f;
      for (int64_t j = 0; j < c->k; j++)
        acc += wt[j] * ((const float *)moe_row(c->y, t * c->k + j))[i];
      o[i] = s ? acc + g * s[i] : acc;
    }
  }
}

void cpu_moe_combine(void *be, hx_tensor out, hx_tensor y, hx_tensor weights, hx_tensor shared,
                     hx_tensor shared_gate) {
  const int64_t n = out.n_rows, k = weights.n_cols, d = out.n_cols;
  HX_ASSERT(out.type == QUANT_F32 && y.type == QUANT_F32 && weights.type == QUANT_F32);
  HX_ASSERT(y.n_cols == d && y.n_rows >= n * k && weights.n_rows >= n);
  HX_ASSERT(!shared.buf || (shared.n_cols == d && shared.n_rows >= n && shared_gate.buf &&
                            shared_gate.n_cols == 1 && shared_gate.n_rows >= n));
  comb_ctx c = {.out = out,
                .y = y,
                .weights = weights,
                .shared = shared,
                .shared_gate = shared_gate,
                .k = k,
                .d = d};
  /* rows in tasks of ~64k multiply-adds; a decode row stays on the caller */
  c.rows_per_task = 65536 / (d * k + 1) + 1;
  const int64_t n_tasks = (n + c.rows_per_task - 1) / c.rows_per_task;
  if (n_tasks == 1)
    comb_task(&c, 0, 0);
  else
    hx_pool_parallel_for(cpu_be_pool(be), (size_t)n_tasks, comb_task, &c);
}
