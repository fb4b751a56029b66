/* arena.h — a bump allocator for per-request and per-load memory that is
 * freed in one go. Memory comes from a chain of blocks; the total is bounded
 * by max_bytes, past which allocation fails (returns NULL). Not thread-safe. */
#ifndef HX_ARENA_H
#define HX_ARENA_H

#include <stddef.h>

typedef struct hx_arena_block hx_arena_block;

typedef struct hx_arena {
  hx_arena_block *head; /* current block; older blocks chained behind */
  size_t block_bytes;   /* default block size */
  size_t used_bytes;    /* sum of block sizes allocated so far */
  size_t max_bytes;     /* limit on used_bytes */
} hx_arena;

void hx_arena_init(hx_arena *a, size_t block_bytes, size_t max_bytes);
/* Returns zeroed memory aligned to `align` (a power of two ≤ 4096), or NULL
 * when the limit would be exceeded or malloc fails. */
void *hx_arena_alloc(hx_arena *a, size_t size, size_t align);
char *hx_arena_strndup(hx_arena *a, const char *s, size_t n);
/* Releases every allocation; keeps the first block for reuse. */
void hx_arena_reset(hx_arena *a);
/* Releases everything; a may be NULL. */
void hx_arena_free(hx_arena *a);

#endif
