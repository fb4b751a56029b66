/* cmd_run.c — `neuron run` (generate from a prompt, streaming to the terminal)
 * and `neuron bench` (prefill / decode throughput of the in-process engine).
 *
 *   neuron run --model PATH (--prompt TEXT | --chat TEXT) [--n N] [--temp T]
 *              [--top-p P] [--top-k K] [--seed S] [--greedy] [--threads N]
 *              [--ctx N] [--kv f16|f32|q8_0] [--quant Q] [--dump-logits FILE]
 *              [--backend cpu|cuda|cuda:N]
 *   neuron bench --model PATH [--prompt-tokens N] [--gen-tokens N]
 *              [--threads N] [--kv T] [--quant Q] [--backend B] [--json] */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/time.h"
#include "engine/chat_template.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "neuron/commands.h"

enum { BENCH_PROMPTS_MAX = 8 };

typedef struct run_args {
  const char *model, *prompt, *chat, *dump, *kv, *quant, *backend;
  int n, threads, ctx, top_k, gen_tokens;
  int prompts[BENCH_PROMPTS_MAX], n_prompts; /* bench: --prompt-tokens N[,N...] */
  float temp, top_p;
  unsigned long long seed;
  bool greedy, json;
} run_args;

static int parse_int(const char *flag, const char *v, long lo, long hi, int *out) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || end == v || x < lo || x > hi) {
    fprintf(stderr, "neuron: %s must be an integer in [%ld, %ld], got \"%s\"\n", flag, lo, hi, v);
    return -1;
  }
  *out = (int)x;
  return 0;
}

/* N[,N...]: up to max integers in [lo, hi]. */
static int parse_int_list(const char *flag, const char *v, long lo, long hi, int *out, int max,
                          int *n_out) {
  char item[32];
  int n = 0;
  for (const char *p = v;; p++) {
    const char *end = strchr(p, ',');
    const size_t len = end ? (size_t)(end - p) : strlen(p);
    if (n == max || len == 0 || len >= sizeof item) {
      fprintf(stderr, "neuron: %s takes 1 to %d comma-separated integers, got \"%s\"\n", flag, max,
              v);
      return -1;
    }
    memcpy(item, p, len);
    item[len] = 0;
    if (parse_int(flag, item, lo, hi, &out[n++]))
      return -1;
    if (!end)
      break;
    p = end;
  }
  *n_out = n;
  return 0;
}

static int parse_float(const char *flag, const char *v, float lo, float hi, float *out) {
  char *end;
  errno = 0;
  float x = strtof(v, &end);
  if (errno || *end || end == v || !(x >= lo && x <= hi)) {
    fprintf(stderr, "neuron: %s must be a number in [%g, %g], got \"%s\"\n", flag, (double)lo,
            (double)hi, v);
    return -1;
  }
  *out = x;
  return 0;
}

static const char usage_run[] =
    "usage: neuron run --model PATH (--prompt TEXT | --chat TEXT) [--n N] [--temp T]\n"
    "                  [--top-p P] [--top-k K] [--seed S] [--greedy] [--threads N]\n"
    "                  [--ctx N] [--kv f16|f32|q8_0] [--quant Q] [--dump-logits FILE]\n"
    "                  [--backend cpu|cuda|cuda:N]\n";
static const char usage_bench[] =
    "usage: neuron bench --model PATH [--prompt-tokens N[,N...]] [--gen-tokens N]\n"
    "                    [--threads N] [--ctx N] [--kv T] [--quant Q]\n"
    "                    [--backend cpu|cuda|cuda:N] [--json]\n"
    "  One row per prompt length (up to 8): prefill tok/s, TTFT, decode tok/s at that\n"
    "  depth, each beside its limit (the bytes a token reads over the copy bandwidth,\n"
    "  the flops a prompt token costs over the GEMM rate, both measured in the run).\n";

/* Returns 0, 1 when --help was printed, or 2 on a usage error (message printed). */
static int parse_args(int argc, char **argv, run_args *a) {
  memset(a, 0, sizeof *a);
  a->n = 128;
  a->temp = 0.7f;
  a->top_p = 0.95f;
  a->prompts[0] = 512;
  a->n_prompts = 1;
  a->gen_tokens = 128;
  for (int i = 1; i < argc; i++) {
    const char *f = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int r = 0;
#define TAKE(name) (strcmp(f, name) == 0 && v && (i++, 1))
    if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
      fputs(strcmp(argv[0], "bench") == 0 ? usage_bench : usage_run, stdout);
      return 1;
    }
    if (strcmp(f, "--greedy") == 0)
      a->greedy = true;
    else if (strcmp(f, "--json") == 0)
      a->json = true;
    else if (TAKE("--model"))
      a->model = v;
    else if (TAKE("--prompt"))
      a->prompt = v;
    else if (TAKE("--chat"))
      a->chat = v;
    else if (TAKE("--dump-logits"))
      a->dump = v;
    else if (TAKE("--kv"))
      a->kv = v;
    else if (TAKE("--backend"))
      a->backend = v;
    else if (TAKE("--quant"))
      a->quant = v;
    else if (TAKE("--n"))
      r = parse_int("--n", v, 1, 1 << 20, &a->n);
    else if (TAKE("--threads"))
      r = parse_int("--threads", v, 1, 256, &a->threads);
    else if (TAKE("--ctx"))
      r = parse_int("--ctx", v, 16, 1 << 20, &a->ctx);
    else if (TAKE("--top-k"))
      r = parse_int("--top-k", v, 0, 1 << 20, &a->top_k);
    else if (TAKE("--prompt-tokens"))
      r = parse_int_list("--prompt-tokens", v, 1, 1 << 20, a->prompts, BENCH_PROMPTS_MAX,
                         &a->n_prompts);
    else if (TAKE("--gen-tokens"))
      r = parse_int("--gen-tokens", v, 1, 1 << 20, &a->gen_tokens);
    else if (TAKE("--temp"))
      r = parse_float("--temp", v, 0, 100, &a->temp);
    else if (TAKE("--top-p"))
      r = parse_float("--top-p", v, 1e-6f, 1, &a->top_p);
    else if (TAKE("--seed")) {
      char *end;
      a->seed = strtoull(v, &end, 10);
      if (*end || end == v) {
        fprintf(stderr, "neuron: --seed must be an unsigned integer, got \"%s\"\n", v);
        r = -1;
      }
    } else {
      fprintf(stderr, "neuron %s: unknown or incomplete option \"%s\"\n", argv[0], f);
      return 2;
    }
#undef TAKE
    if (r)
      return 2;
  }
  if (!a->model) {
    fprintf(stderr, "neuron %s: --model PATH is required\n", argv[0]);
    return 2;
  }
  return 0;
}

static int engine_opts_from(const run_args *a, hx_engine_opts *o) {
  hx_engine_opts_default(o);
  o->n_threads = a->threads;
  o->n_ctx = a->ctx;
  o->quant = a->quant;
  if (a->backend)
    o->backend = a->backend;
  if (a->kv) {
    if (strcmp(a->kv, "f16") == 0)
      o->kv_type = HX_KV_F16;
    else if (strcmp(a->kv, "f32") == 0)
      o->kv_type = HX_KV_F32;
    else if (strcmp(a->kv, "q8_0") == 0)
      o->kv_type = HX_KV_Q8_0;
    else {
      fprintf(stderr, "neuron: --kv must be f16, f32 or q8_0, got \"%s\"\n", a->kv);
      return 2;
    }
  }
  return 0;
}

/* The prompt text: as given, or rendered through the model's chat template. */
static char *make_prompt(const run_args *a, const tokenizer *tok, hx_err *err) {
  if (a->prompt)
    return strdup(a->prompt);
  const char *tsrc = tokenizer_chat_template(tok);
  char *owned = NULL;
  size_t len = 0;
  if (!tsrc || !*tsrc) {
    if (hx_chat_template_source_load(a->model, &owned, &len, err) != HX_OK)
      return NULL;
    tsrc = owned;
  }
  hx_chat_template *t = NULL;
  char *out = NULL;
  if (hx_chat_template_init(&t, tsrc, strlen(tsrc), a->model, err) == HX_OK) {
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", a->chat);
    hx_chat_render_args ra = {.messages = msgs, .add_generation_prompt = true, .now_unix_s = -1};
    hx_chat_template_render(t, &ra, &out, NULL, err);
    json_decref(msgs);
  }
  hx_chat_template_free(t);
  free(owned);
  return out;
}

typedef struct stream {
  const tokenizer *tok;
  tokenizer_decoder dec;
  char *buf;
  size_t cap;
} stream;

static bool on_token(void *user, const hx_gen_token *t) {
  stream *s = user;
  size_t n = 0;
  hx_err err;
  if (tokenizer_decoder_push(&s->dec, t->id, s->buf, s->cap, &n, &err) == HX_OK) {
    fwrite(s->buf, 1, n, stdout);
    fflush(stdout);
  }
  return true;
}

static long peak_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* --dump-logits: greedy steps via hx_engine_eval, every step's logits as raw
 * f32 rows (prompt positions first, then one row per generated token). */
static int dump_logits(hx_engine *e, hx_engine_slot *s, const int32_t *ids, int n, int n_gen,
                       const char *path, stream *st) {
  const hx_engine_info *in = hx_engine_get_info(e);
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "neuron run: cannot open %s: %s\n", path, strerror(errno));
    return 1;
  }
  float *all = malloc((size_t)n * (size_t)in->n_vocab * sizeof(float));
  float *last = malloc((size_t)in->n_vocab * sizeof(float));
  hx_err err = {0};
  int rc = 0;
  if (!all || !last || hx_engine_eval(e, s, ids, n, last, all, NULL, &err) != HX_OK) {
    fprintf(stderr, "neuron run: %s\n", all && last ? err.msg : "out of memory");
    rc = 1;
    goto out;
  }
  fwrite(all, sizeof(float), (size_t)n * (size_t)in->n_vocab, f);
  for (int g = 0; g < n_gen && s; g++) {
    int32_t best = 0;
    for (int i = 1; i < in->n_vocab; i++)
      best = last[i] > last[best] ? i : best;
    hx_gen_token t = {.id = best};
    on_token(st, &t);
    if (hx_engine_eval(e, s, &best, 1, last, NULL, NULL, &err) != HX_OK) {
      fprintf(stderr, "\nneuron run: %s\n", err.msg);
      rc = 1;
      break;
    }
    fwrite(last, sizeof(float), (size_t)in->n_vocab, f);
  }
  printf("\n");
out:
  free(all);
  free(last);
  if (fclose(f) != 0)
    rc = 1;
  return rc;
}

int neuron_cmd_run(int argc, char **argv) {
  run_args a;
  int u = parse_args(argc, argv, &a);
  if (u)
    return u == 1 ? 0 : u;
  if (!a.prompt == !a.chat) {
    fprintf(stderr, "neuron run: give exactly one of --prompt TEXT or --chat TEXT\n");
    return 2;
  }
  hx_engine_opts o;
  if (engine_opts_from(&a, &o))
    return 2;
  hx_err err = {0};
  tokenizer *tok = NULL;
  hx_engine *e = NULL;
  hx_engine_slot *s = NULL;
  char *text = NULL;
  int32_t *ids = NULL;
  size_t n_ids = 0;
  int rc = 1;
  if (tokenizer_load_path(a.model, &tok, &err) != HX_OK || !(text = make_prompt(&a, tok, &err)) ||
      tokenizer_encode(tok, text, strlen(text), true, &ids, &n_ids, &err) != HX_OK ||
      hx_engine_open(a.model, &o, &e, &err) != HX_OK ||
      hx_engine_slot_create(e, &s, &err) != HX_OK) {
    fprintf(stderr, "neuron run: %s\n", err.msg);
    goto out;
  }
  if (n_ids == 0) {
    fprintf(stderr, "neuron run: the prompt encodes to no tokens\n");
    goto out;
  }
  stream st = {.tok = tok, .cap = tokenizer_decoder_out_max(tok)};
  st.buf = malloc(st.cap);
  if (!st.buf)
    goto out;
  tokenizer_decoder_init(&st.dec, tok, true);
  if (a.dump) {
    rc = dump_logits(e, s, ids, (int)n_ids, a.n, a.dump, &st);
    free(st.buf);
    goto out;
  }
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  p.greedy = a.greedy;
  p.temperature = a.temp;
  p.top_p = a.top_p;
  p.top_k = a.top_k;
  p.seed = a.seed;
  p.max_tokens = a.n;
  int32_t eot = tokenizer_eot_id(tok), eos = tokenizer_eos_id(tok);
  if (eot >= 0)
    p.stop_ids[p.n_stop_ids++] = eot;
  if (eos >= 0)
    p.stop_ids[p.n_stop_ids++] = eos;
  hx_gen_result res;
  if (hx_engine_generate(e, s, ids, (int)n_ids, &p, on_token, &st, NULL, &res, &err) != HX_OK) {
    fprintf(stderr, "\nneuron run: %s\n", err.msg);
  } else {
    size_t n = tokenizer_decoder_flush(&st.dec, st.buf, st.cap);
    fwrite(st.buf, 1, n, stdout);
    fprintf(stderr, "\n[%d prompt tokens, %.1f ms to first token; %d generated, %.2f tok/s]\n",
            res.n_prompt, res.prefill_ms, res.n_generated,
            res.n_generated > 1 ? (res.n_generated - 1) / (res.decode_ms / 1e3) : 0.0);
    rc = 0;
  }
  free(st.buf);
out:
  hx_engine_slot_free(s);
  hx_engine_close(e);
  tokenizer_free(tok);
  free(text);
  free(ids);
  return rc;
}

/* One bench row: a prompt of p tokens, then gen decoded at that depth. */
typedef struct bench_row {
  int p, n_gen;
  double pp, tg, ttft_ms, pp_limit, tg_limit, tg_bytes;
} bench_row;

static void json_num_or_null(const char *key, double v, bool have) {
  if (have)
    printf(",\"%s\":%.2f", key, v);
  else
    printf(",\"%s\":null", key);
}

int neuron_cmd_bench(int argc, char **argv) {
  run_args a;
  int u = parse_args(argc, argv, &a);
  if (u)
    return u == 1 ? 0 : u;
  hx_engine_opts o;
  if (engine_opts_from(&a, &o))
    return 2;
  int p_max = 0;
  for (int i = 0; i < a.n_prompts; i++)
    p_max = a.prompts[i] > p_max ? a.prompts[i] : p_max;
  if (!o.n_ctx)
    o.n_ctx = p_max + a.gen_tokens + 8;
  hx_err err = {0};
  /* device memory before the load: the baseline of the VRAM figure */
  size_t free0 = 0, free1 = 0, total = 0;
  const bool have_vram = hx_engine_device_memory(o.backend, &free0, &total, &err) == HX_OK;
  size_t vram_used = 0;
  hx_engine *e = NULL;
  hx_engine_slot *s = NULL;
  const uint64_t t_load0 = hx_time_mono_ns();
  if (hx_engine_open(a.model, &o, &e, &err) != HX_OK ||
      hx_engine_slot_create(e, &s, &err) != HX_OK) {
    fprintf(stderr, "neuron bench: %s\n", err.msg);
    hx_engine_close(e);
    return 1;
  }
  const double load_ms = (double)(hx_time_mono_ns() - t_load0) / 1e6;
  const hx_engine_info *in = hx_engine_get_info(e);
  bench_row rows[BENCH_PROMPTS_MAX] = {0};
  int32_t *ids = malloc((size_t)p_max * sizeof *ids);
  int rc = 1;
  if (!ids)
    goto out;
  uint64_t x = 42;
  for (int i = 0; i < p_max; i++) { /* deterministic pseudo-random ids */
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    ids[i] = (int32_t)((x >> 33) % (uint64_t)in->n_vocab);
  }
  hx_sampling_params p;
  hx_sampling_params_default(&p);
  p.greedy = true;
  p.ignore_eos = true;
  p.max_tokens = a.gen_tokens;
  hx_gen_result res;
  /* A first request pays one-time costs (CUDA: lazily loaded kernel modules,
   * cuBLAS heuristics, graph capture; CPU: page-in of the mapped weights). It
   * is timed and reported as the cold TTFT; the figures come from later runs
   * on the reset slot (no prefix reuse). */
  hx_sampling_params warm = p;
  warm.max_tokens = 2;
  if (hx_engine_generate(e, s, ids, a.prompts[0], &warm, NULL, NULL, NULL, &res, &err) != HX_OK) {
    fprintf(stderr, "neuron bench: %s\n", err.msg);
    goto out;
  }
  const double cold_ttft_ms = res.prefill_ms;
  if (have_vram && hx_engine_device_memory(o.backend, &free1, &total, &err) == HX_OK)
    vram_used = free0 > free1 ? free0 - free1 : 0;
  for (int i = 0; i < a.n_prompts; i++) {
    hx_engine_slot_reset(s);
    if (hx_engine_generate(e, s, ids, a.prompts[i], &p, NULL, NULL, NULL, &res, &err) != HX_OK) {
      fprintf(stderr, "neuron bench: %s\n", err.msg);
      goto out;
    }
    bench_row *r = &rows[i];
    r->p = a.prompts[i];
    r->n_gen = res.n_generated;
    r->ttft_ms = res.prefill_ms;
    r->pp = r->p / (res.prefill_ms / 1e3);
    r->tg = res.n_generated > 1 ? (res.n_generated - 1) / (res.decode_ms / 1e3) : 0;
    if (have_vram && hx_engine_device_memory(o.backend, &free1, &total, &err) == HX_OK &&
        free0 > free1 && free0 - free1 > vram_used)
      vram_used = free0 - free1;
  }
  /* the limits: measured after the runs (the probe's buffers would count as
   * the engine's memory otherwise) */
  const double peak_mib = (double)peak_rss_kb() / 1024.0;
  hx_engine_roofs roofs;
  if (hx_engine_measure_roofs(e, &roofs, &err) != HX_OK) { /* the figures stand without them */
    fprintf(stderr, "neuron bench: limits not shown: %s\n", err.msg);
    memset(&roofs, 0, sizeof roofs);
  }
  for (int i = 0; i < a.n_prompts; i++) {
    bench_row *r = &rows[i];
    /* decode reads the K/V of its depth: the prompt and half the tokens decoded */
    r->tg_bytes = (double)in->decode_weight_bytes + (double)in->state_bytes +
                  (double)in->kv_bytes_per_pos * (r->p + r->n_gen / 2.0);
    r->tg_limit = roofs.copy_gbps * 1e9 / r->tg_bytes; /* 0 without a probe */
    /* a prompt token attends to (p + 1) / 2 positions on average */
    const double flops =
        (double)in->layer_flops + (double)in->attn_flops_per_pos * (r->p + 1) / 2.0;
    r->pp_limit = roofs.gemm_tflops > 0 ? roofs.gemm_tflops * 1e12 / flops : 0;
  }
  if (a.json) {
    for (int i = 0; i < a.n_prompts; i++) {
      const bench_row *r = &rows[i];
      printf(
          "{\"model\":\"%s\",\"arch\":\"%s\",\"weights\":\"%s\",\"backend\":\"%s\","
          "\"threads\":%d,\"prompt_tokens\":%d,\"gen_tokens\":%d,\"prefill_tok_s\":%.2f,"
          "\"decode_tok_s\":%.2f,\"ttft_ms\":%.2f,\"cold_ttft_ms\":%.2f,\"load_ms\":%.1f,"
          "\"peak_rss_mib\":%.1f,\"decode_bytes_per_token\":%.0f,\"weight_bytes_per_token\":%llu,"
          "\"kv_bytes_per_pos\":%llu,\"state_bytes_per_token\":%llu,"
          "\"layer_flops_per_token\":%llu,\"attn_flops_per_pos\":%llu",
          a.model, in->arch, in->weight_type, o.backend, o.n_threads, r->p, r->n_gen, r->pp, r->tg,
          r->ttft_ms, cold_ttft_ms, load_ms, peak_mib, r->tg_bytes,
          (unsigned long long)in->decode_weight_bytes, (unsigned long long)in->kv_bytes_per_pos,
          (unsigned long long)in->state_bytes, (unsigned long long)in->layer_flops,
          (unsigned long long)in->attn_flops_per_pos);
      json_num_or_null("copy_gbps", roofs.copy_gbps, roofs.copy_gbps > 0);
      json_num_or_null("decode_limit_tok_s", r->tg_limit, r->tg_limit > 0);
      json_num_or_null("gemm_tflops", roofs.gemm_tflops, roofs.gemm_tflops > 0);
      json_num_or_null("prefill_limit_tok_s", r->pp_limit, r->pp_limit > 0);
      json_num_or_null("vram_used_mib", vram_used / 1048576.0, have_vram);
      json_num_or_null("vram_total_mib", total / 1048576.0, have_vram);
      printf("}\n");
    }
  } else {
    printf("model %s (%s, %s) on %s\n", a.model, in->arch, in->weight_type, o.backend);
    printf("load %.1f ms; first request after load: TTFT %.1f ms\n", load_ms, cold_ttft_ms);
    printf("per token: %.1f MB of weights, %.1f KB of K/V per position of context, %.2f MB of "
           "recurrent state; %.1f MFLOP + %.1f KFLOP per position\n",
           in->decode_weight_bytes / 1e6, in->kv_bytes_per_pos / 1e3, in->state_bytes / 1e6,
           in->layer_flops / 1e6, in->attn_flops_per_pos / 1e3);
    if (roofs.gemm_tflops > 0)
      printf("measured: copy %.0f GB/s (read + write), f16 GEMM %.1f TFLOP/s\n", roofs.copy_gbps,
             roofs.gemm_tflops);
    else if (roofs.copy_gbps > 0)
      printf("measured: copy %.1f GB/s (read + write)\n", roofs.copy_gbps);
    printf("%8s %14s %16s %10s %8s %14s %16s\n", "prompt", "prefill tok/s", "limit", "TTFT ms",
           "decoded", "decode tok/s", "limit at depth");
    for (int i = 0; i < a.n_prompts; i++) {
      const bench_row *r = &rows[i];
      char pl[32] = "-", tl[32] = "-";
      if (r->pp_limit > 0)
        snprintf(pl, sizeof pl, "%.0f (%.0f%%)", r->pp_limit, 100.0 * r->pp / r->pp_limit);
      if (r->tg_limit > 0)
        snprintf(tl, sizeof tl, "%.0f (%.0f%%)", r->tg_limit, 100.0 * r->tg / r->tg_limit);
      printf("%8d %14.2f %16s %10.1f %8d %14.2f %16s\n", r->p, r->pp, pl, r->ttft_ms, r->n_gen,
             r->tg, tl);
    }
    if (have_vram)
      printf("VRAM: %.2f GiB used (peak over the free memory before load) of %.2f GiB; ",
             vram_used / 1073741824.0, total / 1073741824.0);
    printf("peak RSS %.1f MiB\n", peak_mib);
  }
  rc = 0;
out:
  free(ids);
  hx_engine_slot_free(s);
  hx_engine_close(e);
  return rc;
}
