/* tokenizer_bench.c — single-threaded encode throughput of our tokenizer.
 *
 *   tokenizer-bench --model PATH [--corpus FILE.jsonl] [--seconds S]
 *
 * Reads the conformance corpus (one {"text"} or {"hex"} per line), then
 * encodes (a) every case separately and (b) all cases joined into one text,
 * repeating each for at least S seconds (default 3) after one warm-up pass,
 * and prints MB/s (10^6 input bytes per second of process CPU time, so that
 * other load on a shared machine does not count) and tokens/s. Compare with
 * bench/tokenizer_bench.py, which does the same with HF `tokenizers`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/time.h"
#include "engine/tokenizer.h"

typedef struct text {
  char *s;
  size_t n;
} text;

static int load_corpus(const char *path, text **out, size_t *n_out) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "tokenizer-bench: cannot open %s\n", path);
    return 1;
  }
  size_t cap = 1024, n = 0;
  text *v = malloc(cap * sizeof *v);
  char *line = NULL;
  size_t lcap = 0;
  ssize_t len;
  while ((len = getline(&line, &lcap, f)) > 0) {
    hx_err err = {0};
    json_t *c = hx_json_parse(line, (size_t)len, (hx_json_limits){1 << 26, 8}, &err);
    if (!c) {
      fprintf(stderr, "tokenizer-bench: %s: %s\n", path, err.msg);
      return 1;
    }
    if (n == cap)
      v = realloc(v, (cap *= 2) * sizeof *v);
    const json_t *t = json_object_get(c, "text");
    if (t) {
      v[n].n = json_string_length(t);
      v[n].s = malloc(v[n].n + 1);
      memcpy(v[n].s, json_string_value(t), v[n].n + 1);
    } else {
      const char *hex = json_string_value(json_object_get(c, "hex"));
      size_t h = hex ? strlen(hex) : 0;
      v[n].n = h / 2;
      v[n].s = malloc(h / 2 + 1);
      for (size_t i = 0; i < h / 2; i++) {
        unsigned x;
        sscanf(hex + 2 * i, "%2x", &x);
        v[n].s[i] = (char)x;
      }
    }
    n++;
    json_decref(c);
  }
  free(line);
  fclose(f);
  *out = v;
  *n_out = n;
  return 0;
}

static uint64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Encodes texts[0..n) repeatedly for >= seconds; returns bytes/s, tokens/s. */
static int run(const tokenizer *tok, const text *texts, size_t n, double seconds, double *mbps,
               double *tps) {
  size_t bytes = 0, tokens = 0;
  uint64_t t0 = 0;
  for (int pass = 0;; pass++) {
    if (pass == 1) { /* pass 0 warms the caches */
      t0 = cpu_ns();
      bytes = tokens = 0;
    }
    for (size_t i = 0; i < n; i++) {
      int32_t *ids = NULL;
      size_t k = 0;
      hx_err err = {0};
      if (tokenizer_encode(tok, texts[i].s, texts[i].n, true, &ids, &k, &err)) {
        fprintf(stderr, "tokenizer-bench: %s\n", err.msg);
        return 1;
      }
      free(ids);
      bytes += texts[i].n;
      tokens += k;
    }
    double el = pass >= 1 ? (double)(cpu_ns() - t0) / 1e9 : 0;
    if (pass >= 1 && el >= seconds) {
      *mbps = (double)bytes / el / 1e6;
      *tps = (double)tokens / el;
      return 0;
    }
  }
}

int main(int argc, char **argv) {
  const char *model = NULL, *corpus = "tests/data/tokenizer/corpus.jsonl";
  double seconds = 3;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
      model = argv[++i];
    else if (strcmp(argv[i], "--corpus") == 0 && i + 1 < argc)
      corpus = argv[++i];
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else {
      fprintf(stderr, "usage: tokenizer-bench --model PATH [--corpus FILE] [--seconds S]\n");
      return 2;
    }
  }
  if (!model) {
    fprintf(stderr, "usage: tokenizer-bench --model PATH [--corpus FILE] [--seconds S]\n");
    return 2;
  }
  hx_err err = {0};
  tokenizer *tok = NULL;
  uint64_t l0 = hx_time_mono_ns();
  if (tokenizer_load_path(model, &tok, &err)) {
    fprintf(stderr, "tokenizer-bench: %s\n", err.msg);
    return 1;
  }
  double load_s = (double)(hx_time_mono_ns() - l0) / 1e9;
  text *texts = NULL;
  size_t n = 0;
  if (load_corpus(corpus, &texts, &n))
    return 1;
  hx_buf all;
  hx_buf_init(&all, (size_t)1 << 32);
  for (size_t i = 0; i < n; i++)
    hx_buf_append(&all, texts[i].s, texts[i].n);
  text joined = {all.data, all.len};
  double mb1, tp1, mb2, tp2;
  if (run(tok, texts, n, seconds, &mb1, &tp1) || run(tok, &joined, 1, seconds, &mb2, &tp2))
    return 1;
  printf("helexa %s: load %.2f s; %zu texts one by one: %.1f MB/s, %.0f tokens/s; "
         "joined (%zu bytes): %.1f MB/s, %.0f tokens/s\n",
         model, load_s, n, mb1, tp1, all.len, mb2, tp2);
  for (size_t i = 0; i < n; i++)
    free(texts[i].s);
  free(texts);
  hx_buf_free(&all);
  tokenizer_free(tok);
  return 0;
}
