/* worker.c — device worker thread with a FIFO job queue (see worker.h). */
#include "neuron/worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"

struct neuron_worker {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  neuron_job *head, *tail;
  int queued;
  bool stopping;
  char name[32];
};

static void *worker_main(void *arg) {
  neuron_worker *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->head && !w->stopping)
      pthread_cond_wait(&w->cv, &w->mu);
    if (!w->head) /* stopping and drained */
      break;
    neuron_job *j = w->head;
    w->head = j->next;
    if (!w->head)
      w->tail = NULL;
    w->queued--;
    pthread_mutex_unlock(&w->mu);
    j->next = NULL;
    j->run(j);
    pthread_mutex_lock(&w->mu);
  }
  neuron_job *rest = w->head;
  w->head = w->tail = NULL;
  w->queued = 0;
  pthread_mutex_unlock(&w->mu);
  while (rest) {
    neuron_job *next = rest->next;
    rest->drop(rest);
    rest = next;
  }
  return NULL;
}

neuron_worker *neuron_worker_start(const char *name) {
  neuron_worker *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  snprintf(w->name, sizeof w->name, "%s", name);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
    return NULL;
  }
  return w;
}

bool neuron_worker_submit(neuron_worker *w, neuron_job *job) {
  pthread_mutex_lock(&w->mu);
  if (w->stopping) {
    pthread_mutex_unlock(&w->mu);
    return false;
  }
  job->next = NULL;
  if (w->tail)
    w->tail->next = job;
  else
    w->head = job;
  w->tail = job;
  w->queued++;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return true;
}

int neuron_worker_queued(neuron_worker *w) {
  pthread_mutex_lock(&w->mu);
  int n = w->queued;
  pthread_mutex_unlock(&w->mu);
  return n;
}

void neuron_worker_stop(neuron_worker *w) {
  if (!w)
    return;
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}
