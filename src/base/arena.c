/* arena.c — see arena.h. */
#include "base/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

struct hx_arena_block {
  hx_arena_block *prev;
  size_t size; /* usable bytes in data */
  size_t off;  /* next free offset */
  _Alignas(64) unsigned char data[];
};

void hx_arena_init(hx_arena *a, size_t block_bytes, size_t max_bytes) {
  a->head = NULL;
  a->block_bytes = block_bytes ? block_bytes : 64 * 1024;
  a->used_bytes = 0;
  a->max_bytes = max_bytes;
}

static hx_arena_block *block_new(hx_arena *a, size_t need) {
  size_t size = need > a->block_bytes ? need : a->block_bytes;
  size_t total;
  if (hx_size_add(a->used_bytes, size, &total) || total > a->max_bytes)
    return NULL;
  size_t alloc;
  if (hx_size_add(sizeof(hx_arena_block), size, &alloc))
    return NULL;
  hx_arena_block *b = aligned_alloc(64, (alloc + 63) & ~(size_t)63);
  if (!b)
    return NULL;
  b->prev = a->head;
  b->size = size;
  b->off = 0;
  a->head = b;
  a->used_bytes = total;
  return b;
}

void *hx_arena_alloc(hx_arena *a, size_t size, size_t align) {
  HX_ASSERT(align && (align & (align - 1)) == 0 && align <= 4096);
  hx_arena_block *b = a->head;
  size_t pad = 0;
  if (b) {
    uintptr_t p = (uintptr_t)(b->data + b->off);
    pad = (align - (p & (align - 1))) & (align - 1);
  }
  if (!b || b->off + pad + size > b->size || b->off + pad + size < size) {
    size_t need;
    if (hx_size_add(size, align, &need))
      return NULL;
    b = block_new(a, need);
    if (!b)
      return NULL;
    uintptr_t p = (uintptr_t)b->data;
    pad = (align - (p & (align - 1))) & (align - 1);
  }
  void *out = b->data + b->off + pad;
  b->off += pad + size;
  memset(out, 0, size);
  return out;
}

char *hx_arena_strndup(hx_arena *a, const char *s, size_t n) {
  if (n == SIZE_MAX)
    return NULL;
  char *p = hx_arena_alloc(a, n + 1, 1);
  if (!p)
    return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

void hx_arena_reset(hx_arena *a) {
  hx_arena_block *b = a->head;
  if (!b)
    return;
  while (b->prev) {
    hx_arena_block *prev = b->prev;
    a->used_bytes -= b->size;
    free(b);
    b = prev;
  }
  b->off = 0;
  a->head = b;
}

void hx_arena_free(hx_arena *a) {
  if (!a)
    return;
  hx_arena_block *b = a->head;
  while (b) {
    hx_arena_block *prev = b->prev;
    free(b);
    b = prev;
  }
  a->head = NULL;
  a->used_bytes = 0;
}
