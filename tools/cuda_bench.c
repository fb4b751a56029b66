/* cuda_bench.c — `cuda-bench`: batch-1 decode and prefill speed of a Qwen3
 * dense model at real shapes on one CUDA device, with random weights made on
 * the device (random weights cost exactly the bytes and work of real ones).
 *
 * It builds the forward pass from the backend table exactly as the qwen3
 * model code does (embedding, per layer: norm, q/k/v, q/k norm, RoPE, cache
 * store, attention, o, norm + residual, gate/up, SwiGLU, down; final norm,
 * output head, device argmax fed back as the next token) and reports decode
 * tok/s at several context depths and prefill tok/s, each next to its limit:
 * weight bytes read per token / the device-to-device copy bandwidth measured
 * in the same run.
 *
 *   cuda-bench --shape 8b --quant q4_k_m [--ctx 128,4096,16384] [--gen 128]
 *              [--prefill 512,4096] [--device 0] [--json] */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "base/status.h"
#include "base/time.h"
#include "engine/backend.h"
#include "engine/quant.h"
#ifdef HELEXA_HAVE_CUDA
#include "engine/backend/cuda/backend_cuda.h"
#endif

#ifdef HELEXA_HAVE_CUDA

typedef struct shape {
  const char *name;
  int n_layer, d, n_head, n_kv, hd, ff, vocab, tied;
} shape;

static const shape shapes[] = {
    {"0.6b", 28, 1024, 16, 8, 128, 3072, 151936, 1},
    {"1.7b", 28, 2048, 16, 8, 128, 6144, 151936, 1},
    {"4b", 36, 2560, 32, 8, 128, 9728, 151936, 1},
    {"8b", 36, 4096, 32, 8, 128, 12288, 151936, 0},
    {"14b", 40, 5120, 40, 8, 128, 17408, 151936, 0},
    {"32b", 64, 5120, 64, 8, 128, 25600, 151936, 0},
};

enum { T_F32 = 0, T_F16 = 1, T_Q8_0 = 8, T_Q4_K = 12, T_Q6_K = 14, T_BF16 = 30, T_I32 = 26 };

typedef struct layer {
  hx_tensor q, k, v, o, gate, up, down, attn_norm, ffn_norm, q_norm, k_norm, kc, vc;
} layer;

typedef struct bench {
  hx_backend b;
  const shape *s;
  layer *L;
  hx_tensor embd, out, out_norm;
  hx_tensor res, x, xb, q, k, v, att, g, u, logits, pos, ids, topv;
  uint64_t weight_bytes_per_token;
  uint64_t total_weight_bytes;
  int max_rows, n_ctx;
} bench;

static hx_bbuf *alloc_or_die(bench *bn, size_t n) {
  hx_err err;
  hx_bbuf *buf = bn->b.ops->buf_alloc(bn->b.be, n, &err);
  if (!buf) {
    fprintf(stderr, "cuda-bench: %s\n", err.msg);
    exit(1);
  }
  return buf;
}

static hx_tensor tensor(bench *bn, uint32_t type, int64_t cols, int64_t rows, int random,
                        float scale) {
  size_t rb = type == T_I32 ? (size_t)cols * 4 : hx_backend_row_bytes(type, cols);
  HX_ASSERT(rb > 0);
  hx_tensor t = {alloc_or_die(bn, rb * (size_t)rows), 0, type, cols, rows, rb};
  if (random) {
    static uint64_t seed = 1;
    hx_err err;
    if (hx_backend_cuda_fill_random(&bn->b, t.buf, 0, (int)type, (size_t)(cols * rows),
                                    rb * (size_t)rows, seed++ * 0x9E3779B97F4A7C15ull, scale,
                                    &err)) {
      fprintf(stderr, "cuda-bench: %s\n", err.msg);
      exit(1);
    }
  }
  return t;
}

/* The backend's load-time layout of a matmul weight (the planar repacking of
 * Q8_0 / Q6_K), as the model loaders do, so that the real layout is measured. */
static void prepare(bench *bn, hx_tensor w) {
  if (bn->b.ops->weight_prepare)
    bn->b.ops->weight_prepare(bn->b.be, w);
}

static hx_tensor weight(bench *bn, uint32_t type, int64_t n_in, int64_t n_out) {
  hx_tensor t = tensor(bn, type, n_in, n_out, 1, 0.05f);
  prepare(bn, t);
  bn->weight_bytes_per_token += t.row_bytes * (uint64_t)n_out;
  bn->total_weight_bytes += t.row_bytes * (uint64_t)n_out;
  return t;
}

static hx_tensor rows_view(hx_tensor t, int64_t row0, int64_t n) {
  t.offset += (size_t)row0 * t.row_bytes;
  t.n_rows = n;
  return t;
}

/* Type of each tensor under a quant recipe (llama.cpp's Q4_K_M: Q6_K for the
 * output and for attn_v / ffn_down in the use_more_bits layers). */
static uint32_t recipe(const char *quant, const char *what, int il, int n_layer) {
  if (strcmp(quant, "bf16") == 0)
    return T_BF16;
  if (strcmp(quant, "f16") == 0)
    return T_F16;
  if (strcmp(quant, "q8_0") == 0)
    return T_Q8_0;
  int more = il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2;
  if (strcmp(what, "output") == 0)
    return T_Q6_K;
  if ((strcmp(what, "v") == 0 || strcmp(what, "down") == 0) && more)
    return T_Q6_K;
  return T_Q4_K;
}

static void build(bench *bn, const char *quant) {
  const shape *s = bn->s;
  int qd = s->n_head * s->hd, kvd = s->n_kv * s->hd, B = bn->max_rows;
  bn->L = calloc((size_t)s->n_layer, sizeof(layer));
  for (int il = 0; il < s->n_layer; il++) {
    layer *l = &bn->L[il];
    l->q = weight(bn, recipe(quant, "q", il, s->n_layer), s->d, qd);
    l->k = weight(bn, recipe(quant, "k", il, s->n_layer), s->d, kvd);
    l->v = weight(bn, recipe(quant, "v", il, s->n_layer), s->d, kvd);
    l->o = weight(bn, recipe(quant, "o", il, s->n_layer), qd, s->d);
    l->gate = weight(bn, recipe(quant, "gate", il, s->n_layer), s->d, s->ff);
    l->up = weight(bn, recipe(quant, "up", il, s->n_layer), s->d, s->ff);
    l->down = weight(bn, recipe(quant, "down", il, s->n_layer), s->ff, s->d);
    l->attn_norm = tensor(bn, T_F32, s->d, 1, 1, 1.0f);
    l->ffn_norm = tensor(bn, T_F32, s->d, 1, 1, 1.0f);
    l->q_norm = tensor(bn, T_F32, s->hd, 1, 1, 1.0f);
    l->k_norm = tensor(bn, T_F32, s->hd, 1, 1, 1.0f);
    l->kc = tensor(bn, T_F16, kvd, bn->n_ctx, 1, 1.0f);
    l->vc = tensor(bn, T_F16, kvd, bn->n_ctx, 1, 1.0f);
  }
  uint32_t ot = recipe(quant, "output", 0, s->n_layer);
  bn->out = weight(bn, ot, s->d, s->vocab);
  if (s->tied) {
    bn->embd = bn->out;
  } else {
    bn->embd = tensor(bn, recipe(quant, "embd", 0, s->n_layer), s->d, s->vocab, 1, 0.05f);
    bn->total_weight_bytes += bn->embd.row_bytes * (uint64_t)s->vocab;
  }
  bn->out_norm = tensor(bn, T_F32, s->d, 1, 1, 1.0f);
  bn->res = tensor(bn, T_F32, s->d, B, 0, 0);
  bn->x = tensor(bn, T_F32, s->d, B, 0, 0);
  bn->xb = tensor(bn, T_F32, s->d, B, 0, 0);
  bn->q = tensor(bn, T_F32, qd, B, 0, 0);
  bn->k = tensor(bn, T_F32, kvd, B, 0, 0);
  bn->v = tensor(bn, T_F32, kvd, B, 0, 0);
  bn->att = tensor(bn, T_F32, qd, B, 0, 0);
  bn->g = tensor(bn, T_F32, s->ff, B, 0, 0);
  bn->u = tensor(bn, T_F32, s->ff, B, 0, 0);
  bn->logits = tensor(bn, T_F32, s->vocab, 1, 0, 0);
  bn->pos = tensor(bn, T_I32, B, 1, 0, 0);
  bn->ids = tensor(bn, T_I32, B, 1, 0, 0);
  bn->topv = tensor(bn, T_F32, 1, 1, 0, 0);
  hx_err err;
  if (bn->b.ops->reserve(bn->b.be, B, s->ff > qd ? s->ff : qd, bn->n_ctx, &err)) {
    fprintf(stderr, "cuda-bench: %s\n", err.msg);
    exit(1);
  }
}

/* Queues one forward step over n tokens (ids and pos already on the device);
 * the argmax of the last token's logits lands in ids[0]. */
static void forward(bench *bn, int n) {
  const hx_backend_ops *o = bn->b.ops;
  void *be = bn->b.be;
  const shape *s = bn->s;
  hx_tensor none = {0};
  hx_tensor res = rows_view(bn->res, 0, n), x = rows_view(bn->x, 0, n);
  hx_tensor xb = rows_view(bn->xb, 0, n), q = rows_view(bn->q, 0, n);
  hx_tensor k = rows_view(bn->k, 0, n), v = rows_view(bn->v, 0, n);
  hx_tensor att = rows_view(bn->att, 0, n), g = rows_view(bn->g, 0, n);
  hx_tensor u = rows_view(bn->u, 0, n);
  hx_tensor pos = bn->pos, ids = bn->ids;
  pos.n_cols = n;
  ids.n_cols = n;
  hx_rope_params rp = {.n_rot = s->hd, .freq_base = 1e6f, .freq_scale = 1.0f};
  hx_attn_params ap = {s->n_head, s->n_kv, s->hd, 1.0f / sqrtf((float)s->hd)};
  o->get_rows(be, res, bn->embd, ids, n);
  for (int il = 0; il < s->n_layer; il++) {
    layer *l = &bn->L[il];
    if (il == 0)
      o->rms_norm(be, xb, res, none, l->attn_norm, 1e-6f, 0);
    else
      o->rms_norm(be, xb, x, res, l->attn_norm, 1e-6f, 0);
    o->matmul(be, q, l->q, xb, none);
    o->matmul(be, k, l->k, xb, none);
    o->matmul(be, v, l->v, xb, none);
    o->rms_norm_heads(be, q, l->q_norm, s->hd, 1e-6f);
    o->rms_norm_heads(be, k, l->k_norm, s->hd, 1e-6f);
    o->rope(be, q, pos, s->hd, &rp);
    o->rope(be, k, pos, s->hd, &rp);
    o->cache_store(be, l->kc, k, pos);
    o->cache_store(be, l->vc, v, pos);
    o->attention(be, att, q, l->kc, l->vc, pos, &ap);
    o->matmul(be, x, l->o, att, none);
    o->rms_norm(be, xb, x, res, l->ffn_norm, 1e-6f, 0);
    o->matmul(be, g, l->gate, xb, none);
    o->matmul(be, u, l->up, xb, none);
    o->swiglu(be, g, g, u);
    o->matmul(be, x, l->down, g, none);
  }
  hx_tensor xl = rows_view(x, n - 1, 1), rl = rows_view(res, n - 1, 1);
  hx_tensor xbl = rows_view(xb, n - 1, 1);
  o->rms_norm(be, xbl, xl, rl, bn->out_norm, 1e-6f, 0);
  o->matmul(be, bn->logits, bn->out, xbl, none);
  hx_tensor id0 = ids;
  id0.n_cols = 1;
  o->top_k(be, bn->topv, id0, bn->logits, 1);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median tok/s of `reps` runs of gen decode steps starting at depth ctx. */
static double run_decode(bench *bn, int ctx, int gen, int reps) {
  hx_err err;
  double tps[8];
  for (int r = 0; r < reps; r++) {
    int32_t tok = 1;
    bn->b.ops->buf_upload(bn->b.be, bn->ids.buf, 0, &tok, 4, &err);
    uint64_t t0 = 0;
    for (int i = -8; i < gen; i++) { /* 8 warm-up steps */
      if (i == 0)
        t0 = hx_time_mono_ns();
      int32_t p = ctx + (i < 0 ? i + 8 : i);
      bn->b.ops->buf_upload(bn->b.be, bn->pos.buf, 0, &p, 4, &err);
      bn->b.ops->step_begin(bn->b.be, 1);
      forward(bn, 1);
      if (bn->b.ops->step_end(bn->b.be, &err)) {
        fprintf(stderr, "cuda-bench: %s\n", err.msg);
        exit(1);
      }
      int32_t next;
      bn->b.ops->buf_download(bn->b.be, bn->ids.buf, 0, &next, 4, &err); /* to the host */
    }
    tps[r] = gen / ((double)(hx_time_mono_ns() - t0) / 1e9);
  }
  qsort(tps, (size_t)reps, sizeof tps[0], cmp_d);
  return tps[reps / 2];
}

static double run_prefill(bench *bn, int n, int reps) {
  hx_err err;
  int32_t *p = malloc((size_t)n * 4);
  for (int i = 0; i < n; i++)
    p[i] = i;
  bn->b.ops->buf_upload(bn->b.be, bn->pos.buf, 0, p, (size_t)n * 4, &err);
  bn->b.ops->buf_upload(bn->b.be, bn->ids.buf, 0, p, (size_t)n * 4, &err);
  free(p);
  double tps[8];
  for (int r = -1; r < reps; r++) {
    uint64_t t0 = hx_time_mono_ns();
    bn->b.ops->step_begin(bn->b.be, n);
    forward(bn, n);
    if (bn->b.ops->step_end(bn->b.be, &err)) {
      fprintf(stderr, "cuda-bench: %s\n", err.msg);
      exit(1);
    }
    if (r >= 0)
      tps[r] = n / ((double)(hx_time_mono_ns() - t0) / 1e9);
  }
  qsort(tps, (size_t)reps, sizeof tps[0], cmp_d);
  return tps[reps / 2];
}

/* Steady-state matvec bandwidth per weight type at the model's shapes: many
 * launches in one step over rotating weight copies (so L2 holds none). */
static void run_matvec(bench *bn) {
  const shape *s = bn->s;
  const uint32_t types[] = {T_Q4_K, T_Q6_K, T_Q8_0, T_BF16};
  const char *tn[] = {"Q4_K", "Q6_K", "Q8_0", "BF16"};
  const int64_t dims[][2] = {{s->n_head * s->hd, s->d}, {s->ff, s->d}, {s->d, s->ff}};
  const char *dn[] = {"q/o", "gate/up", "down"};
  hx_tensor none = {0};
  hx_err err;
  for (int ti = 0; ti < 4; ti++) {
    for (int di = 0; di < 3; di++) {
      enum { COPIES = 6, REPS = 60 };
      hx_tensor w[COPIES];
      for (int c = 0; c < COPIES; c++) {
        w[c] = tensor(bn, types[ti], dims[di][1], dims[di][0], 1, 0.05f);
        prepare(bn, w[c]);
      }
      hx_tensor x = tensor(bn, T_F32, dims[di][1], 1, 1, 1.0f);
      hx_tensor y = tensor(bn, T_F32, dims[di][0], 1, 0, 0);
      double best = 1e30;
      for (int rep = 0; rep < 3; rep++) {
        uint64_t t0 = hx_time_mono_ns();
        bn->b.ops->step_begin(bn->b.be, 2); /* > 1 token: no graph, but n_rows 1 views */
        for (int i = 0; i < REPS; i++)
          bn->b.ops->matmul(bn->b.be, y, w[i % COPIES], x, none);
        if (bn->b.ops->step_end(bn->b.be, &err)) {
          fprintf(stderr, "cuda-bench: %s\n", err.msg);
          exit(1);
        }
        double us = (double)(hx_time_mono_ns() - t0) / 1e3 / REPS;
        if (us < best)
          best = us;
      }
      double bytes = (double)w[0].row_bytes * (double)w[0].n_rows;
      printf("  matvec %-5s %-8s %6lldx%-6lld %7.1f us  %6.0f GB/s\n", tn[ti], dn[di],
             (long long)dims[di][0], (long long)dims[di][1], best, bytes / (best * 1e-6) / 1e9);
      for (int c = 0; c < COPIES; c++)
        bn->b.ops->buf_free(bn->b.be, w[c].buf);
      bn->b.ops->buf_free(bn->b.be, x.buf);
      bn->b.ops->buf_free(bn->b.be, y.buf);
    }
  }
}

/* A comma-separated list of token counts, each 1 .. 1M; returns how many, or
 * -1 for a bad entry or too many ("" = none). */
static int parse_list(const char *s, int *out, int max) {
  int n = 0;
  while (s && *s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 1 || v > (1L << 20) || (*end != ',' && *end != '\0') || n >= max)
      return -1;
    out[n++] = (int)v;
    s = *end == ',' ? end + 1 : end;
  }
  return n;
}

int main(int argc, char **argv) {
  const char *shape_name = "8b", *quant = "q4_k_m", *ctx_s = "128,4096,16384", *pp_s = "512,4096";
  int gen = 128, device = 0, json = 0, profile = 0, matvec = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc)
      shape_name = argv[++i];
    else if (strcmp(argv[i], "--quant") == 0 && i + 1 < argc)
      quant = argv[++i];
    else if (strcmp(argv[i], "--ctx") == 0 && i + 1 < argc)
      ctx_s = argv[++i];
    else if (strcmp(argv[i], "--prefill") == 0 && i + 1 < argc)
      pp_s = argv[++i];
    else if (strcmp(argv[i], "--gen") == 0 && i + 1 < argc)
      gen = atoi(argv[++i]);
    else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
      device = atoi(argv[++i]);
    else if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (strcmp(argv[i], "--profile") == 0)
      profile = 1;
    else if (strcmp(argv[i], "--matvec") == 0)
      matvec = 1;
    else {
      fprintf(stderr, "usage: cuda-bench [--shape 0.6b|1.7b|4b|8b|14b|32b] "
                      "[--quant q4_k_m|q8_0|bf16|f16] [--ctx N,..] [--gen N] [--prefill N,..] "
                      "[--device N] [--json]\n");
      return 2;
    }
  }
  bench bn = {0};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    if (strcmp(shapes[i].name, shape_name) == 0)
      bn.s = &shapes[i];
  if (!bn.s || gen < 1 || gen > 4096) {
    fprintf(stderr, "cuda-bench: unknown shape \"%s\" or bad --gen\n", shape_name);
    return 2;
  }
  int ctxs[8], pps[8];
  int n_ctx = parse_list(ctx_s, ctxs, 8), n_pp = parse_list(pp_s, pps, 8);
  if (n_ctx < 0 || n_pp < 0) {
    fprintf(stderr, "cuda-bench: --ctx and --prefill take up to 8 comma-separated token counts, "
                    "each 1 to 1048576 (--prefill \"\" for none)\n");
    return 2;
  }
  bn.max_rows = 1;
  bn.n_ctx = 256;
  for (int i = 0; i < n_ctx; i++)
    if (ctxs[i] + gen + 16 > bn.n_ctx)
      bn.n_ctx = ctxs[i] + gen + 16;
  for (int i = 0; i < n_pp; i++) {
    if (pps[i] > bn.max_rows)
      bn.max_rows = pps[i];
    if (pps[i] > bn.n_ctx)
      bn.n_ctx = pps[i];
  }
  hx_err err;
  if (hx_backend_cuda_init(&bn.b, device, &err)) {
    fprintf(stderr, "cuda-bench: %s\n", err.msg);
    return 1;
  }
  double bw = hx_backend_cuda_copy_bandwidth(&bn.b, (size_t)1 << 30);
  uint64_t t0 = hx_time_mono_ns();
  build(&bn, quant);
  double build_s = (double)(hx_time_mono_ns() - t0) / 1e9;
  size_t free_b = 0, total_b = 0;
  hx_backend_cuda_mem_info(device, &free_b, &total_b, &err);
  double limit = bw * 1e9 / (double)bn.weight_bytes_per_token;
  if (!json) {
    printf("Qwen3-%s %s: %.2f GiB weights, %.2f GB read per token; copy bandwidth %.0f GB/s "
           "(read+write); decode limit %.0f tok/s; VRAM used %.1f GiB\n",
           bn.s->name, quant, bn.total_weight_bytes / 1073741824.0, bn.weight_bytes_per_token / 1e9,
           bw, limit, (total_b - free_b) / 1073741824.0);
    printf("  (device-side random weights built in %.1f s)\n", build_s);
  } else {
    printf("{\"shape\":\"%s\",\"quant\":\"%s\",\"weight_bytes_per_token\":%llu,"
           "\"copy_gbps\":%.1f,\"decode_limit_tps\":%.1f,\"vram_used_bytes\":%zu,\"results\":[",
           bn.s->name, quant, (unsigned long long)bn.weight_bytes_per_token, bw, limit,
           total_b - free_b);
  }
  if (matvec) {
    run_matvec(&bn);
    return 0;
  }
  int first = 1;
  for (int i = 0; i < n_ctx; i++) {
    /* KV bytes read per token at this depth, for the limit */
    double kv_bytes = 2.0 * bn.s->n_layer * (double)ctxs[i] * bn.s->n_kv * bn.s->hd * 2.0;
    double lim = bw * 1e9 / ((double)bn.weight_bytes_per_token + kv_bytes);
    double tps = run_decode(&bn, ctxs[i], gen, 3);
    if (json)
      printf("%s{\"test\":\"tg%d@d%d\",\"tps\":%.1f,\"limit_tps\":%.1f}", first ? "" : ",", gen,
             ctxs[i], tps, lim);
    else
      printf("  decode tg%d at depth %5d: %8.1f tok/s   limit %7.0f   %3.0f%% of limit\n", gen,
             ctxs[i], tps, lim, 100.0 * tps / lim);
    first = 0;
  }
  for (int i = 0; i < n_pp; i++) {
    double tps = run_prefill(&bn, pps[i], 3);
    if (json)
      printf("%s{\"test\":\"pp%d\",\"tps\":%.1f}", first ? "" : ",", pps[i], tps);
    else
      printf("  prefill pp%-5d: %9.1f tok/s  (TTFT %.1f ms)\n", pps[i], tps, 1000.0 * pps[i] / tps);
    first = 0;
  }
  if (json)
    printf("]}\n");
  if (profile && !json) {
    hx_backend_cuda_profile_set(&bn.b, true);
    run_decode(&bn, ctxs[0], 32, 1);
    hx_backend_cuda_profile_print(&bn.b, stdout);
    if (n_pp > 0) {
      hx_backend_cuda_profile_set(&bn.b, true);
      run_prefill(&bn, pps[0], 1);
      printf("  prefill pp%d:\n", pps[0]);
      hx_backend_cuda_profile_print(&bn.b, stdout);
    }
    hx_backend_cuda_profile_set(&bn.b, false);
  }
  long replayed = 0, captured = 0;
  hx_backend_cuda_graph_stats(&bn.b, &replayed, &captured);
  if (!json)
    printf("  CUDA graphs: %ld decode steps replayed, %ld captured\n", replayed, captured);
  return 0;
}

#else

int main(void) {
  fprintf(stderr, "cuda-bench: this build has no CUDA backend\n");
  return 1;
}

#endif
