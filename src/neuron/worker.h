/* worker.h — a device worker: one thread that owns one device (a CUDA GPU,
 * or the CPU backend) for the daemon's lifetime and runs every job for it —
 * model loads, generations, unloads — one at a time, in submission order. */
#ifndef NEURON_WORKER_H
#define NEURON_WORKER_H

#include <stdbool.h>

typedef struct neuron_job neuron_job;
struct neuron_job {
  void (*run)(neuron_job *job);  /* on the worker thread; owns job afterwards */
  void (*drop)(neuron_job *job); /* reserved: a job that can never run */
  neuron_job *next;
};

typedef struct neuron_worker neuron_worker;

/* name: for logs ("cpu", "cuda:0"). NULL when the thread cannot start. */
neuron_worker *neuron_worker_start(const char *name);
/* Queues job. false when the worker is stopping (job untouched). */
bool neuron_worker_submit(neuron_worker *w, neuron_job *job);
/* Jobs queued and not yet started. */
int neuron_worker_queued(neuron_worker *w);
/* Refuses new jobs, runs every job already queued (callers cancel what
 * should end early), joins and frees. */
void neuron_worker_stop(neuron_worker *w);

#endif
