/* daemon_impl.h — internals shared by daemon.c (HTTP surface, admission,
 * lifecycle) and generate.c (what runs on a device worker for a request). */
#ifndef NEURON_DAEMON_IMPL_H
#define NEURON_DAEMON_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/metrics.h"
#include "engine/chat_template.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "net/http_server.h"
#include "neuron/catalog.h"
#include "neuron/config.h"
#include "neuron/daemon.h"
#include "neuron/hardware.h"
#include "neuron/oai_request.h"
#include "neuron/worker.h"

enum {
  NEURON_SLOTS_MAX = 8,                     /* engine slots per model = prefix snapshots kept */
  NEURON_WAITERS_MAX = 64,                  /* joined load / unload requests per model */
  NEURON_DEVICES_MAX = 1 + NEURON_GPUS_MAX, /* index 0 is the CPU */
};

typedef enum model_state {
  MODEL_LOADING = 0,
  MODEL_READY,
  MODEL_UNLOADING,
  MODEL_FAILED,
} model_state;

typedef struct neuron_device {
  char name[16];         /* "cpu", "cuda:0" */
  neuron_worker *worker; /* owns the device */
  uint64_t budget_bytes; /* what models may use on it */
  uint64_t used_bytes;   /* sum of estimates of models placed on it (d->mu) */
  int gpu_index;         /* -1 for the CPU */
} neuron_device;

typedef struct gen_job gen_job;

typedef struct nmodel {
  struct nmodel *next;
  int refs; /* the list + each job holding it (d->mu) */
  char id[NEURON_MODEL_ID_MAX];
  char path[NEURON_PATH_MAX];
  const char *format;
  int device; /* index into d->devices */
  model_state state;
  char error[HX_ERR_MSG_MAX];
  uint64_t mem_bytes; /* estimate charged to the device */
  hx_engine_mem mem;
  hx_engine_opts opts;
  char quant[16];
  int n_slots;
  uint64_t load_start_ns;
  double load_ms;
  uint64_t last_used_ms; /* wall clock */
  int inflight;          /* admitted requests not yet finished */
  uint64_t unload_deadline_ns;
  gen_job *running; /* the request on the worker now (d->mu) */
  hx_http_req *load_waiters[NEURON_WAITERS_MAX];
  int n_load_waiters;
  hx_http_req *unload_waiters[NEURON_WAITERS_MAX];
  int n_unload_waiters;

  /* Worker-only from here (set by the load job, read by later jobs). */
  hx_engine *eng;
  hx_engine_info info;
  tokenizer *tok;
  hx_chat_template *tmpl;
  hx_engine_slot *slots[NEURON_SLOTS_MAX];
  uint64_t slot_used_ns[NEURON_SLOTS_MAX];
} nmodel;

typedef struct neuron_metrics {
  hx_metrics *reg;
  hx_metric *requests, *prompt_tokens, *gen_tokens, *ttft, *itl, *e2e, *queue;
  hx_metric *cache_hits, *cache_reused, *loads, *load_s, *mem_used, *mem_budget, *loaded, *inflight;
} neuron_metrics;

struct neuron_daemon {
  const neuron_config *cfg;
  neuron_hardware hw;
  hx_http_server *http;
  neuron_metrics m;
  pthread_mutex_t mu;
  neuron_catalog_entry *catalog;
  size_t n_catalog;
  nmodel *models;
  neuron_device devices[NEURON_DEVICES_MAX];
  int n_devices;
  pthread_t reaper;
  bool stopping;
  pthread_cond_t reaper_cv;
  atomic_uint_fast64_t seq;
};

/* What kind of model job a request is. */
typedef enum job_kind {
  JOB_CHAT = 0,
  JOB_COMPLETION,
  JOB_TOKENIZE,
  JOB_DETOKENIZE,
  JOB_APPLY_TEMPLATE,
} job_kind;

struct gen_job {
  neuron_job base;
  neuron_daemon *d;
  nmodel *m;
  hx_http_req *req;
  job_kind kind;
  neuron_oai_request r; /* JOB_CHAT / JOB_COMPLETION */
  json_t *body;         /* tokenize & co.: the parsed body (owned) */
  atomic_bool cancel;   /* client gone, unload past grace, or shutdown */
  uint64_t enqueued_ns;
};

/* generate.c: runs a job on the worker (responds and finishes req). */
void neuron_job_execute(gen_job *j);
/* generate.c: renders the prompt of a chat request (worker only). */
hx_code neuron_render_chat(nmodel *m, const json_t *messages, const json_t *tools,
                           const json_t *kwargs, bool add_generation_prompt, char **out,
                           size_t *out_len, hx_err *err);

/* daemon.c: releases a job's hold on its model and frees the job. */
void neuron_job_done(gen_job *j);
/* daemon.c: maps an hx_code to an HTTP status, OpenAI type and code. */
int neuron_status_of(hx_code code, const char **type, const char **code_s);
/* Makes text safe for a JSON string: invalid UTF-8 becomes U+FFFD. */
json_t *neuron_json_string_lossy(const char *s, size_t n);

#endif
