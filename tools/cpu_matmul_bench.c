/* cpu_matmul_bench.c — throughput of the CPU backend's matmul on one weight
 * matrix: GB/s of weight bytes streamed, over wall and over process CPU time
 * (the dev VM is shared; CPU time keeps others' load out of the per-core
 * figure). Random weights quantized by the reference quantizer, one untimed
 * call first (it makes the repacked copy where there is one).
 *   cpu-matmul-bench [--type q4_K] [--rows 151936] [--cols 1024] [--tokens 1]
 *                    [--threads 2] [--seconds 2] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/time.h"
#include "engine/backend.h"
#include "engine/quant.h"

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_type(const char *name, quant_type *out) {
  for (int t = 0; t < QUANT_TYPE_COUNT; t++)
    if (quant_type_is_valid((uint32_t)t) && strcmp(quant_type_name((quant_type)t), name) == 0) {
      *out = (quant_type)t;
      return 1;
    }
  return 0;
}

int main(int argc, char **argv) {
  quant_type type = QUANT_Q4_K;
  long rows = 151936, cols = 1024, tokens = 1, threads = 2;
  double seconds = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--type") == 0) {
      if (!parse_type(argv[i + 1], &type)) {
        fprintf(stderr, "cpu-matmul-bench: unknown type %s\n", argv[i + 1]);
        return 2;
      }
    } else if (strcmp(argv[i], "--rows") == 0) {
      rows = atol(argv[i + 1]);
    } else if (strcmp(argv[i], "--cols") == 0) {
      cols = atol(argv[i + 1]);
    } else if (strcmp(argv[i], "--tokens") == 0) {
      tokens = atol(argv[i + 1]);
    } else if (strcmp(argv[i], "--threads") == 0) {
      threads = atol(argv[i + 1]);
    } else if (strcmp(argv[i], "--seconds") == 0) {
      seconds = atof(argv[i + 1]);
    } else {
      fprintf(stderr, "usage: cpu-matmul-bench [--type T] [--rows N] [--cols N] [--tokens N] "
                      "[--threads N] [--seconds S]\n");
      return 2;
    }
  }
  const size_t rb = hx_backend_row_bytes(type, cols);
  if (rows < 1 || rows > (1 << 22) || tokens < 1 || tokens > 4096 || rb == 0 || threads < 1 ||
      threads > 256 || seconds <= 0) {
    fprintf(stderr,
            "cpu-matmul-bench: bad sizes (rows 1..4M, tokens 1..4096, cols whole blocks)\n");
    return 2;
  }
  hx_backend b;
  hx_err err;
  if (hx_backend_cpu_init(&b, (int)threads, &err) != HX_OK ||
      b.ops->reserve(b.be, tokens, cols, 16, &err) != HX_OK) {
    fprintf(stderr, "cpu-matmul-bench: %s\n", err.msg);
    return 1;
  }
  char *w = malloc(rb * (size_t)rows);
  float *f = malloc((size_t)cols * sizeof *f);
  float *x = malloc((size_t)cols * (size_t)tokens * sizeof *x);
  if (!w || !f || !x) {
    fprintf(stderr, "cpu-matmul-bench: out of memory\n");
    return 1;
  }
  uint64_t s = 42;
  for (long r = 0; r < rows; r++) {
    for (long i = 0; i < cols; i++) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      f[i] = (float)((s >> 40) & 0xffff) / 32768.0f - 1.0f;
    }
    quant_row_quantize_fast(type, f, w + (size_t)r * rb, cols);
  }
  for (long i = 0; i < cols * tokens; i++)
    x[i] = (float)(i % 17) / 8.0f - 1.0f;
  hx_tensor tw = {.buf = b.ops->buf_wrap_host(b.be, w, rb * (size_t)rows),
                  .type = type,
                  .n_cols = cols,
                  .n_rows = rows,
                  .row_bytes = rb};
  hx_tensor tx = {.buf = b.ops->buf_alloc(b.be, (size_t)cols * tokens * 4, &err),
                  .type = QUANT_F32,
                  .n_cols = cols,
                  .n_rows = tokens,
                  .row_bytes = (size_t)cols * 4};
  hx_tensor ty = {.buf = b.ops->buf_alloc(b.be, (size_t)rows * tokens * 4, &err),
                  .type = QUANT_F32,
                  .n_cols = rows,
                  .n_rows = tokens,
                  .row_bytes = (size_t)rows * 4};
  if (!tw.buf || !tx.buf || !ty.buf ||
      b.ops->buf_upload(b.be, tx.buf, 0, x, (size_t)cols * tokens * 4, &err) != HX_OK) {
    fprintf(stderr, "cpu-matmul-bench: cannot set up buffers\n");
    return 1;
  }
  const hx_tensor none = {0};
  double t0 = (double)hx_time_mono_ns() * 1e-9;
  b.ops->matmul(b.be, ty, tw, tx, none);
  const double first_s = (double)hx_time_mono_ns() * 1e-9 - t0;
  long calls = 0;
  const double c0 = cpu_s();
  t0 = (double)hx_time_mono_ns() * 1e-9;
  double el;
  do {
    b.ops->matmul(b.be, ty, tw, tx, none);
    calls++;
    el = (double)hx_time_mono_ns() * 1e-9 - t0;
  } while (el < seconds);
  const double cpu = cpu_s() - c0;
  const double gb = (double)rb * (double)rows * (double)calls / 1e9;
  printf("%s %ldx%ld tokens %ld threads %ld: %.3f ms/call, %.1f GB/s wall, %.1f GB/s per "
         "CPU-second (first call %.1f ms)\n",
         quant_type_name(type), rows, cols, tokens, threads, el / (double)calls * 1e3, gb / el,
         gb / cpu, first_s * 1e3);
  b.ops->buf_free(b.be, tw.buf);
  b.ops->buf_free(b.be, tx.buf);
  b.ops->buf_free(b.be, ty.buf);
  hx_backend_cpu_free(&b);
  free(w), free(f), free(x);
  return 0;
}
