/* pool.c — see pool.h. A job is published by bumping `generation`; workers
 * claim task indices from an atomic counter; the last finisher wakes the
 * caller. */
#include "base/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "base/status.h"

enum { SPIN_ITERS = 20000 };

struct hx_pool {
  int n_threads; /* including the caller */
  pthread_t *threads;
  pthread_mutex_t lock; /* guards the condvars and serializes callers */
  pthread_mutex_t call_lock;
  pthread_cond_t work_cv;
  pthread_cond_t done_cv;
  _Atomic unsigned generation;
  _Atomic size_t next_task;
  _Atomic int active; /* workers (not the caller) still in the current job */
  bool stop;
  size_t n_tasks;
  hx_pool_fn fn;
  void *ctx;
};

typedef struct {
  hx_pool *pool;
  int index;
} worker_arg;

static void run_tasks(hx_pool *p, int worker) {
  for (;;) {
    size_t t = atomic_fetch_add(&p->next_task, 1);
    if (t >= p->n_tasks)
      break;
    p->fn(p->ctx, t, worker);
  }
}

static void *worker_main(void *arg) {
  worker_arg wa = *(worker_arg *)arg;
  free(arg);
  hx_pool *p = wa.pool;
  unsigned seen = 0;
  for (;;) {
    unsigned gen = atomic_load(&p->generation);
    for (int i = 0; i < SPIN_ITERS && gen == seen; i++) {
      __builtin_ia32_pause();
      gen = atomic_load(&p->generation);
    }
    if (gen == seen) {
      pthread_mutex_lock(&p->lock);
      while ((gen = atomic_load(&p->generation)) == seen && !p->stop)
        pthread_cond_wait(&p->work_cv, &p->lock);
      pthread_mutex_unlock(&p->lock);
    }
    if (p->stop)
      return NULL;
    seen = gen;
    run_tasks(p, wa.index);
    if (atomic_fetch_sub(&p->active, 1) == 1) {
      pthread_mutex_lock(&p->lock);
      pthread_cond_signal(&p->done_cv);
      pthread_mutex_unlock(&p->lock);
    }
  }
}

hx_pool *hx_pool_create(int n_threads) {
  if (n_threads < 1 || n_threads > 256)
    return NULL;
  hx_pool *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->n_threads = n_threads;
  pthread_mutex_init(&p->lock, NULL);
  pthread_mutex_init(&p->call_lock, NULL);
  pthread_cond_init(&p->work_cv, NULL);
  pthread_cond_init(&p->done_cv, NULL);
  if (n_threads > 1) {
    p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
    if (!p->threads) {
      free(p);
      return NULL;
    }
  }
  for (int i = 1; i < n_threads; i++) {
    worker_arg *wa = malloc(sizeof *wa);
    if (wa) { /* filled before the thread starts: it reads wa at once */
      wa->pool = p;
      wa->index = i;
    }
    if (!wa || pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
      free(wa);
      p->n_threads = i; /* join what started */
      hx_pool_free(p);
      return NULL;
    }
  }
  return p;
}

void hx_pool_free(hx_pool *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->lock);
  p->stop = true;
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->lock);
  for (int i = 1; i < p->n_threads; i++)
    pthread_join(p->threads[i - 1], NULL);
  free(p->threads);
  pthread_mutex_destroy(&p->lock);
  pthread_mutex_destroy(&p->call_lock);
  pthread_cond_destroy(&p->work_cv);
  pthread_cond_destroy(&p->done_cv);
  free(p);
}

int hx_pool_size(const hx_pool *p) { return p ? p->n_threads : 1; }

void hx_pool_parallel_for(hx_pool *p, size_t n_tasks, hx_pool_fn fn, void *ctx) {
  if (n_tasks == 0)
    return;
  if (!p || p->n_threads == 1 || n_tasks == 1) {
    for (size_t t = 0; t < n_tasks; t++)
      fn(ctx, t, 0);
    return;
  }
  pthread_mutex_lock(&p->call_lock);
  p->fn = fn;
  p->ctx = ctx;
  p->n_tasks = n_tasks;
  atomic_store(&p->next_task, 0);
  atomic_store(&p->active, p->n_threads - 1);
  pthread_mutex_lock(&p->lock);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->lock);
  run_tasks(p, 0);
  for (int i = 0; i < SPIN_ITERS && atomic_load(&p->active) > 0; i++)
    __builtin_ia32_pause();
  if (atomic_load(&p->active) > 0) {
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->active) > 0)
      pthread_cond_wait(&p->done_cv, &p->lock);
    pthread_mutex_unlock(&p->lock);
  }
  pthread_mutex_unlock(&p->call_lock);
}

int hx_cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0)
      return n;
  }
  return 1;
}
