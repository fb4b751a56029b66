/* quant_bench.c — in-situ quantization rate: bf16 rows -> TYPE with the
 * reference (or --fast) quantizer on N threads, as model_file does at load.
 * Prints GB/s of bf16 input over wall time and over CPU time.
 *   quant-bench [--type q4_K] [--threads 2] [--mb 256] [--fast] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/pool.h"
#include "base/time.h"
#include "engine/quant.h"

enum { ROW = 4096, ROWS_PER_TASK = 16 };

typedef struct {
  const uint16_t *src;
  uint8_t *dst;
  size_t dst_row_bytes;
  quant_type t;
  size_t rows;
  int fast;
} job;

static void task(void *ctx, size_t k, int worker) {
  (void)worker;
  job *j = ctx;
  float tmp[ROW];
  for (size_t r = k * ROWS_PER_TASK; r < (k + 1) * ROWS_PER_TASK && r < j->rows; r++) {
    quant_row_dequantize(QUANT_BF16, j->src + r * ROW, tmp, ROW);
    if (j->fast)
      quant_row_quantize_fast(j->t, tmp, j->dst + r * j->dst_row_bytes, ROW);
    else
      quant_row_quantize(j->t, tmp, j->dst + r * j->dst_row_bytes, ROW);
  }
}

int main(int argc, char **argv) {
  const char *type = "q4_K";
  int threads = 2, fast = 0;
  size_t mb = 256;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--type") && i + 1 < argc)
      type = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
      mb = (size_t)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--fast"))
      fast = 1;
    else {
      fprintf(stderr, "usage: quant-bench [--type T] [--threads N] [--mb MB] [--fast]\n");
      return 2;
    }
  }
  job j = {.fast = fast};
  if (!quant_type_parse(type, &j.t) || !quant_type_can_quantize(j.t) || threads < 1 || mb < 1) {
    fprintf(stderr, "quant-bench: bad --type/--threads/--mb\n");
    return 2;
  }
  j.rows = mb * 1024 * 1024 / 2 / ROW;
  uint16_t *src = malloc(j.rows * ROW * 2);
  quant_row_bytes(j.t, ROW, &j.dst_row_bytes);
  j.dst = malloc(j.rows * j.dst_row_bytes);
  if (!src || !j.dst)
    return 1;
  uint64_t s = 88172645463325252ull;
  for (size_t i = 0; i < j.rows * ROW; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    float g = ((float)(s & 0xffff) + (float)((s >> 16) & 0xffff) + (float)((s >> 32) & 0xffff) +
               (float)(s >> 48)) /
                  65536.0f -
              2.0f;
    src[i] = quant_f32_to_bf16(0.035f * g);
  }
  j.src = src;
  hx_pool *pool = hx_pool_create(threads);
  clock_t c0 = clock();
  int64_t t0 = hx_time_mono_ns();
  hx_pool_parallel_for(pool, (j.rows + ROWS_PER_TASK - 1) / ROWS_PER_TASK, task, &j);
  double wall = (double)(hx_time_mono_ns() - t0) / 1e9;
  double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
  double gb = (double)(j.rows * ROW * 2) / 1e9;
  printf("%s%s: %.3f GB bf16 on %d threads: wall %.2f s (%.3f GB/s), cpu %.2f s (%.3f GB/s per "
         "CPU-second)\n",
         quant_type_name(j.t), fast ? " (fast)" : "", gb, threads, wall, gb / wall, cpu, gb / cpu);
  hx_pool_free(pool);
  free(src);
  free(j.dst);
  return 0;
}
