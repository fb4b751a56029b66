/* pool.c — see pool.h.
 *
 * A job is one 64-bit atomic word: job number (16 bits) | task count (24) |
 * next task index (24). A thread claims a task with a compare-and-swap that
 * succeeds only while the word still names the same job and tasks remain, so
 * a worker that wakes late (or was descheduled on a busy machine) can never
 * run a task of a job that is over, nor one of the next job twice. The caller
 * waits only for workers that are inside the job (`busy`), never for workers
 * that have not woken up yet: on an oversubscribed machine a decode step does
 * not pay a scheduler timeslice per parallel loop. */
#include "base/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/status.h"

enum { SPIN_ITERS = 20000 };
#define TASKS_MAX ((size_t)1 << 24)

struct hx_pool {
  int n_threads; /* including the caller */
  pthread_t *threads;
  pthread_mutex_t lock;      /* guards the condvars */
  pthread_mutex_t call_lock; /* one parallel_for at a time */
  pthread_cond_t work_cv;
  pthread_cond_t done_cv;
  _Atomic unsigned generation; /* bumped per job: wakes the workers */
  _Atomic uint64_t word;       /* job (16) | n_tasks (24) | next index (24) */
  _Atomic int busy;            /* workers inside run_tasks */
  _Atomic bool stop;
  hx_pool_fn fn; /* of the current job; stable while any thread is busy in it */
  void *ctx;
};

typedef struct {
  hx_pool *pool;
  int index;
} worker_arg;

static uint64_t word_make(uint64_t job, uint64_t n, uint64_t idx) {
  return (job & 0xffff) << 48 | (n & 0xffffff) << 24 | (idx & 0xffffff);
}

/* Claims and runs tasks of the job the word names at entry. */
static void run_tasks(hx_pool *p, int worker) {
  uint64_t w = atomic_load(&p->word);
  const uint64_t job = w >> 48;
  for (;;) {
    uint64_t n = (w >> 24) & 0xffffff, idx = w & 0xffffff;
    if ((w >> 48) != job || idx >= n)
      return;
    if (atomic_compare_exchange_weak(&p->word, &w, w + 1)) {
      p->fn(p->ctx, (size_t)idx, worker);
      w = atomic_load(&p->word);
    }
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
      while ((gen = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->work_cv, &p->lock);
      pthread_mutex_unlock(&p->lock);
    }
    if (atomic_load(&p->stop))
      return NULL;
    seen = gen;
    atomic_fetch_add(&p->busy, 1);
    run_tasks(p, wa.index);
    if (atomic_fetch_sub(&p->busy, 1) == 1) {
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
    if (wa) {
      wa->pool = p; /* filled before the thread starts: it reads wa at once */
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
  atomic_store(&p->stop, true);
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
  HX_ASSERT(n_tasks < TASKS_MAX);
  pthread_mutex_lock(&p->call_lock);
  /* No worker is busy here (the previous call waited for them), so fn/ctx
   * can change; a late worker only sees the new word after they are set. */
  p->fn = fn;
  p->ctx = ctx;
  uint64_t job = (atomic_load(&p->word) >> 48) + 1;
  atomic_store(&p->word, word_make(job, n_tasks, 0));
  pthread_mutex_lock(&p->lock);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->lock);
  run_tasks(p, 0);
  /* Every task is claimed; wait for those still running one. */
  for (int i = 0; i < SPIN_ITERS && atomic_load(&p->busy) > 0; i++)
    __builtin_ia32_pause();
  if (atomic_load(&p->busy) > 0) {
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->busy) > 0)
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
