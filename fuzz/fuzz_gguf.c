/* fuzz_gguf.c — libFuzzer target for the GGUF reader: any input must either
 * be rejected with an error or yield a file whose every key, array element
 * and tensor range can be read without faults. */
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

static void touch_value(const gguf_value *v, volatile uint64_t *sink) {
  if (v->type == GGUF_TYPE_STRING) {
    for (size_t i = 0; i < v->v.str.len; i++)
      *sink += (uint8_t)v->v.str.ptr[i];
  } else if (v->type == GGUF_TYPE_ARRAY) {
    gguf_type et = v->v.arr.elem_type;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
      if (et == GGUF_TYPE_STRING || et == GGUF_TYPE_ARRAY)
        touch_value(&v->v.arr.items[i], sink);
      else if (et == GGUF_TYPE_FLOAT32 || et == GGUF_TYPE_FLOAT64)
        *sink += (uint64_t)(gguf_arr_float(v, i) != 0);
      else
        *sink += (uint64_t)gguf_arr_int(v, i);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  gguf_file *f = NULL;
  hx_err e;
  if (gguf_open_mem(data, size, "fuzz.gguf", &f, &e) != HX_OK)
    return 0;
  volatile uint64_t sink = 0;
  for (size_t i = 0; i < gguf_kv_count(f); i++) {
    touch_value(gguf_kv_value(f, i), &sink);
    sink += (gguf_get(f, gguf_kv_key(f, i)) == gguf_kv_value(f, i));
  }
  for (size_t i = 0; i < gguf_tensor_count(f); i++) {
    const gguf_tensor *t = gguf_tensor_at(f, i);
    const uint8_t *p = t->data;
    if (t->nbytes)
      sink += p[0] + p[t->nbytes - 1];
    sink += gguf_tensor_find(f, t->name) == t;
  }
  gguf_close(f);
  return 0;
}
