/* pool.h — a small fixed thread pool for data-parallel loops.
 *
 * hx_pool_parallel_for runs fn(ctx, task, worker) for task in [0, n_tasks)
 * across the pool's workers and the calling thread, and returns when all tasks
 * have finished. One parallel_for at a time per pool (calls are serialized by
 * the pool's lock). Workers spin briefly before sleeping so that back-to-back
 * loops (one per matmul in a decode step) do not pay a futex wake each time. */
#ifndef HX_POOL_H
#define HX_POOL_H

#include <stddef.h>

typedef struct hx_pool hx_pool;
typedef void (*hx_pool_fn)(void *ctx, size_t task, int worker);

/* n_threads counts the caller: n_threads == 1 spawns no thread. Returns NULL
 * on failure (n_threads < 1 or > 256, or thread creation failed). */
hx_pool *hx_pool_create(int n_threads);
void hx_pool_free(hx_pool *pool); /* joins workers; pool may be NULL */
int hx_pool_size(const hx_pool *pool);
void hx_pool_parallel_for(hx_pool *pool, size_t n_tasks, hx_pool_fn fn, void *ctx);

/* Online CPUs usable by this process (sched affinity), at least 1. */
int hx_cpu_count(void);

#endif
