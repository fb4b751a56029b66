/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser:
 * rejected with an error, or every tensor's byte range is readable. */
#include <stddef.h>
#include <stdint.h>

#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  safetensors *st = NULL;
  hx_err e;
  if (safetensors_open_mem(data, size, "fuzz.safetensors", &st, &e) != HX_OK)
    return 0;
  uint64_t sink = 0; /* touches the first and last byte of every tensor */
  for (size_t i = 0; i < safetensors_count(st); i++) {
    const st_tensor *t = safetensors_at(st, i);
    const uint8_t *p = t->data;
    if (t->nbytes)
      sink += p[0] + p[t->nbytes - 1];
    sink += safetensors_find(st, t->name) == t;
  }
  safetensors_close(st);
  __asm__ volatile("" : : "r"(sink)); /* keep the reads: ASan checks them */
  return 0;
}
