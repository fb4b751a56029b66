/* daemon.c — neuron's HTTP surface, request admission and model lifecycle.
 *
 * Locking: d->mu guards the catalogue, the model list and every nmodel field
 * not marked worker-only. Engine, tokenizer, template and slots of a model are
 * touched only by jobs on its device worker (load, generate, unload), which
 * run one at a time in submission order; that order is what makes "requests
 * queued behind a load wait for it" and "unload after the requests ahead of
 * it" hold without further locks.
 *
 * A model's life: admission creates it LOADING and queues a load job; the
 * job makes it READY or FAILED. Unload marks it UNLOADING (new requests get
 * 409), gives requests already admitted until the grace deadline (the reaper
 * thread then cancels the running one and later ones fail fast), and queues an
 * unload job, which frees everything and removes it from the list. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/json.h"
#include "base/log.h"
#include "base/pool.h"
#include "base/time.h"
#include "neuron/daemon_impl.h"

enum { MIB = 1 << 20 };

/* ------------------------------------------------------------- helpers */

int neuron_status_of(hx_code code, const char **type, const char **code_s) {
  *type = "invalid_request_error";
  switch (code) {
  case HX_EINVAL:
  case HX_EFORMAT:
    *code_s = "invalid_request";
    return 400;
  case HX_EUNSUPPORTED:
    *code_s = "unsupported";
    return 400;
  case HX_ETOOLARGE:
    *code_s = "too_large";
    return 400;
  case HX_ENOTFOUND:
    *code_s = "model_not_found";
    return 404;
  case HX_EBUSY:
    *type = "rate_limit_error";
    *code_s = "queue_full";
    return 429;
  case HX_ECANCELLED:
    *type = "server_error";
    *code_s = "cancelled";
    return 503;
  case HX_ENOMEM:
    *type = "server_error";
    *code_s = "out_of_memory";
    return 507;
  case HX_ENUMERIC:
    *type = "server_error";
    *code_s = "numeric_error";
    return 500;
  default:
    *type = "server_error";
    *code_s = "internal_error";
    return 500;
  }
}

json_t *neuron_json_string_lossy(const char *s, size_t n) {
  json_t *j = json_stringn(s, n);
  if (j)
    return j;
  /* Replace each invalid byte with U+FFFD. */
  char *out = malloc(n * 3 + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    size_t len = u[i] < 0x80         ? 1
                 : (u[i] >> 5) == 6  ? 2
                 : (u[i] >> 4) == 14 ? 3
                 : (u[i] >> 3) == 30 ? 4
                                     : 0;
    bool ok = len > 0 && i + len <= n && u[i] != 0;
    for (size_t k = 1; ok && k < len; k++)
      ok = (u[i + k] & 0xC0) == 0x80;
    if (ok && len > 1) { /* reject overlongs / surrogates the cheap way: let jansson judge */
      json_t *t = json_stringn(s + i, len);
      ok = t != NULL;
      json_decref(t);
    }
    if (ok) {
      memcpy(out + o, s + i, len);
      o += len;
      i += len;
    } else {
      memcpy(out + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i++;
    }
  }
  j = json_stringn(out, o);
  free(out);
  return j;
}

static nmodel *model_find(neuron_daemon *d, const char *id) {
  for (nmodel *m = d->models; m; m = m->next)
    if (strcmp(m->id, id) == 0)
      return m;
  return NULL;
}

static const neuron_catalog_entry *catalog_find(neuron_daemon *d, const char *id) {
  for (size_t i = 0; i < d->n_catalog; i++)
    if (strcmp(d->catalog[i].id, id) == 0)
      return &d->catalog[i];
  return NULL;
}

static const char *state_name(model_state s) {
  static const char *const names[] = {"loading", "ready", "unloading", "failed"};
  return names[s];
}

/* Drops a reference (d->mu held); frees the model struct at zero. The
 * worker-only resources must have been released by the unload job. */
static void model_unref_locked(neuron_daemon *d, nmodel *m) {
  (void)d;
  HX_ASSERT(m->refs > 0);
  if (--m->refs == 0) {
    HX_ASSERT(!m->eng && !m->tok && !m->tmpl);
    free(m);
  }
}

static void model_unlink_locked(neuron_daemon *d, nmodel *m) {
  for (nmodel **p = &d->models; *p; p = &(*p)->next) {
    if (*p == m) {
      *p = m->next;
      m->next = NULL;
      d->devices[m->device].used_bytes -= m->mem_bytes;
      m->mem_bytes = 0;
      model_unref_locked(d, m);
      return;
    }
  }
}

static json_t *model_json_locked(neuron_daemon *d, const nmodel *m) {
  json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:I,s:i,s:i,s:I}", "id", m->id, "path", m->path, "state",
                        state_name(m->state), "device", d->devices[m->device].name, "memory_bytes",
                        (json_int_t)m->mem_bytes, "in_flight", m->inflight, "slots", m->n_slots,
                        "last_used_ms", (json_int_t)m->last_used_ms);
  if (!j)
    return NULL;
  if (m->state == MODEL_LOADING)
    json_object_set_new(j, "loading_ms",
                        json_real(hx_time_ns_to_ms(hx_time_mono_ns() - m->load_start_ns)));
  else
    json_object_set_new(j, "load_ms", json_real(m->load_ms));
  if (m->state == MODEL_FAILED)
    json_object_set_new(j, "error", json_string(m->error));
  if (m->state == MODEL_READY || m->state == MODEL_UNLOADING) {
    json_object_set_new(j, "context", json_integer(m->info.n_ctx));
    json_object_set_new(j, "arch", json_string(m->info.arch));
    json_object_set_new(j, "weight_type", json_string(m->info.weight_type));
    json_object_set_new(j, "parameters", json_integer((json_int_t)m->info.n_params));
  }
  return j;
}

/* ------------------------------------------------------------- jobs */

void neuron_job_done(gen_job *j) {
  neuron_daemon *d = j->d;
  pthread_mutex_lock(&d->mu);
  if (j->m) {
    if (j->m->running == j)
      j->m->running = NULL;
    j->m->inflight--;
    j->m->last_used_ms = hx_time_wall_ms();
    model_unref_locked(d, j->m);
  }
  pthread_mutex_unlock(&d->mu);
  /* j->req was finished (which cleared its cancel callback): not touched. */
  neuron_oai_request_free(&j->r);
  json_decref(j->body);
  free(j);
}

static void job_cancel_cb(void *ctx) {
  gen_job *j = ctx;
  atomic_store(&j->cancel, true);
}

static void job_run(neuron_job *base) {
  gen_job *j = (gen_job *)base;
  neuron_daemon *d = j->d;
  pthread_mutex_lock(&d->mu);
  nmodel *m = j->m;
  bool past_grace = m->state == MODEL_UNLOADING && hx_time_mono_ns() >= m->unload_deadline_ns;
  model_state st = m->state;
  char error[HX_ERR_MSG_MAX];
  snprintf(error, sizeof error, "%s", m->error);
  if (st == MODEL_READY || (st == MODEL_UNLOADING && !past_grace))
    m->running = j;
  pthread_mutex_unlock(&d->mu);
  if (st == MODEL_FAILED) {
    hx_http_respond_error(j->req, 500, "server_error", "model_load_failed", "model", 0,
                          "model \"%s\" failed to load: %s", m->id, error);
  } else if (st != MODEL_READY && (st != MODEL_UNLOADING || past_grace)) {
    hx_http_respond_error(j->req, 503, "server_error", "model_unloaded", "model", 0,
                          "request cancelled: model \"%s\" was unloaded before it ran", m->id);
  } else {
    neuron_job_execute(j); /* responds */
  }
  neuron_job_done(j);
}

static void job_drop(neuron_job *base) {
  gen_job *j = (gen_job *)base;
  hx_http_respond_error(j->req, 503, "server_error", "shutting_down", NULL, 0,
                        "request cancelled: the neuron is shutting down");
  neuron_job_done(j);
}

/* ------------------------------------------------------------- loading */

/* After a load or unload, on the device's worker: re-reads its free VRAM. */
static void device_vram_refresh(neuron_daemon *d, int device) {
  int gpu = d->devices[device].gpu_index;
  if (gpu < 0)
    return;
  uint64_t fr = neuron_hardware_gpu_free_bytes(gpu);
  pthread_mutex_lock(&d->mu);
  for (int i = 0; i < d->hw.n_gpus; i++)
    if (d->hw.gpus[i].index == gpu && fr != UINT64_MAX)
      d->hw.gpus[i].vram_free_bytes = fr;
  pthread_mutex_unlock(&d->mu);
}

typedef struct life_job {
  neuron_job base;
  neuron_daemon *d;
  nmodel *m;
} life_job;

static void respond_waiters(hx_http_req **w, int n, int status, json_t *body) {
  for (int i = 0; i < n; i++)
    hx_http_respond_json(w[i], status, json_deep_copy(body));
  json_decref(body);
}

static void load_run(neuron_job *base) {
  life_job *lj = (life_job *)base;
  neuron_daemon *d = lj->d;
  nmodel *m = lj->m;
  hx_err err = {0};
  hx_code rc = hx_engine_open(m->path, &m->opts, &m->eng, &err);
  if (rc == HX_OK) {
    m->info = *hx_engine_get_info(m->eng);
    rc = tokenizer_load_path(m->path, &m->tok, &err);
    if (rc == HX_OK) { /* stop at the end of a turn even when the config's eos is another token */
      hx_engine_add_eos_id(m->eng, tokenizer_eot_id(m->tok));
      hx_engine_add_eos_id(m->eng, tokenizer_eos_id(m->tok));
      m->info = *hx_engine_get_info(m->eng);
    }
  }
  if (rc == HX_OK) {
    const char *src = tokenizer_chat_template(m->tok);
    char *owned = NULL;
    size_t len = 0;
    if (!src && hx_chat_template_source_load(m->path, &owned, &len, NULL) == HX_OK)
      src = owned;
    if (src) {
      hx_err terr = {0};
      if (hx_chat_template_init(&m->tmpl, src, strlen(src), m->id, &terr) != HX_OK)
        HX_WARN("model %s: chat template does not compile (%s); chat completions disabled", m->id,
                terr.msg);
    }
    free(owned);
  }
  for (int i = 0; rc == HX_OK && i < m->n_slots; i++)
    rc = hx_engine_slot_create(m->eng, &m->slots[i], &err);
  device_vram_refresh(d, m->device);
  double ms = hx_time_ns_to_ms(hx_time_mono_ns() - m->load_start_ns);
  const char *lab[] = {m->id, rc == HX_OK ? "ok" : "error"};
  hx_metric_inc(d->m.loads, lab);
  if (rc != HX_OK) {
    for (int i = 0; i < m->n_slots; i++) {
      hx_engine_slot_free(m->slots[i]);
      m->slots[i] = NULL;
    }
    hx_chat_template_free(m->tmpl);
    tokenizer_free(m->tok);
    hx_engine_close(m->eng);
    m->tmpl = NULL;
    m->tok = NULL;
    m->eng = NULL;
    HX_ERROR("model %s: load failed after %.0f ms: %s", m->id, ms, err.msg);
  } else {
    hx_metric_observe(d->m.load_s, lab, ms / 1000.0);
    HX_INFO("model %s: loaded on %s in %.0f ms (ctx %d, %d slots, %.1f MiB)", m->id,
            d->devices[m->device].name, ms, m->info.n_ctx, m->n_slots, (double)m->mem_bytes / MIB);
  }
  pthread_mutex_lock(&d->mu);
  m->load_ms = ms;
  if (rc == HX_OK) {
    m->state = MODEL_READY;
  } else {
    m->state = MODEL_FAILED;
    snprintf(m->error, sizeof m->error, "%s", err.msg);
    d->devices[m->device].used_bytes -= m->mem_bytes;
    m->mem_bytes = 0;
  }
  json_t *body = model_json_locked(d, m);
  hx_http_req *w[NEURON_WAITERS_MAX];
  int n = m->n_load_waiters;
  memcpy(w, m->load_waiters, (size_t)n * sizeof w[0]);
  m->n_load_waiters = 0;
  model_unref_locked(d, m);
  pthread_mutex_unlock(&d->mu);
  if (rc == HX_OK) {
    respond_waiters(w, n, 200, body);
  } else {
    json_decref(body);
    const char *type, *code;
    int status = neuron_status_of(rc, &type, &code);
    for (int i = 0; i < n; i++)
      hx_http_respond_error(w[i], status, type, "model_load_failed", "model", 0,
                            "model \"%s\" failed to load: %s", m->id, err.msg);
  }
  free(lj);
}

static void life_drop(neuron_job *base) {
  life_job *lj = (life_job *)base;
  neuron_daemon *d = lj->d;
  pthread_mutex_lock(&d->mu);
  nmodel *m = lj->m;
  hx_http_req *w[2 * NEURON_WAITERS_MAX];
  int n = 0;
  for (int i = 0; i < m->n_load_waiters; i++)
    w[n++] = m->load_waiters[i];
  for (int i = 0; i < m->n_unload_waiters; i++)
    w[n++] = m->unload_waiters[i];
  m->n_load_waiters = m->n_unload_waiters = 0;
  model_unref_locked(d, m);
  pthread_mutex_unlock(&d->mu);
  for (int i = 0; i < n; i++)
    hx_http_respond_error(w[i], 503, "server_error", "shutting_down", NULL, 0,
                          "cancelled: the neuron is shutting down");
  free(lj);
}

static hx_kv_type kv_type_of(const char *s) {
  if (s && strcmp(s, "f32") == 0)
    return HX_KV_F32;
  if (s && strcmp(s, "q8_0") == 0)
    return HX_KV_Q8_0;
  return HX_KV_F16;
}

/* Starts loading entry on a device (d->mu held). On success *out is the new
 * LOADING model (in the list) and a load job is queued; waiter (may be NULL)
 * gets the answer when it finishes. On failure returns the HTTP status with
 * msg filled (404/409/507/...). */
static int load_start_locked(neuron_daemon *d, const neuron_catalog_entry *e, int context,
                             const char *quant, int device, hx_http_req *waiter, nmodel **out,
                             char *msg, size_t msg_cap) {
  nmodel *m = calloc(1, sizeof *m);
  if (!m) {
    snprintf(msg, msg_cap, "out of memory");
    return 500;
  }
  snprintf(m->id, sizeof m->id, "%s", e->id);
  snprintf(m->path, sizeof m->path, "%s", e->path);
  m->format = e->format;
  m->device = device;
  hx_engine_opts_default(&m->opts);
  m->opts.backend = device == 0 ? "cpu" : "cuda";
  /* "All cores" leaves one to the HTTP threads: a pool spread over every
     core stalls whenever a streaming hand-off preempts one of its workers
     (measured: 2.6x slower decode per streamed token on 16 cores). */
  int cpus = hx_cpu_count();
  m->opts.n_threads =
      d->cfg->engine.threads ? (int)d->cfg->engine.threads : (cpus > 1 ? cpus - 1 : 1);
  m->opts.kv_type = kv_type_of(d->cfg->engine.kv_type);
  uint32_t max_ctx = d->cfg->limits.max_context;
  m->opts.n_ctx = context > 0 ? context : (int)max_ctx;
  if (max_ctx && m->opts.n_ctx > (int)max_ctx)
    m->opts.n_ctx = (int)max_ctx;
  if (quant && *quant) {
    snprintf(m->quant, sizeof m->quant, "%s", quant);
    m->opts.quant = m->quant;
  }
  hx_err err = {0};
  /* Estimating reads the file's header only (no model state). */
  if (hx_engine_estimate(m->path, &m->opts, &m->mem, &err) != HX_OK) {
    snprintf(msg, msg_cap, "model \"%s\": cannot estimate its memory: %s", e->id, err.msg);
    free(m);
    return 400;
  }
  uint64_t cache_bytes = (uint64_t)d->cfg->engine.prefix_cache_mb * MIB;
  int slots = m->mem.kv_bytes_slot ? (int)(cache_bytes / m->mem.kv_bytes_slot) : 1;
  if (slots < 1)
    slots = 1;
  if (slots > NEURON_SLOTS_MAX)
    slots = NEURON_SLOTS_MAX;
  m->n_slots = slots;
  m->mem_bytes =
      m->mem.weight_bytes + m->mem.scratch_bytes + m->mem.kv_bytes_slot * (uint64_t)slots;
  neuron_device *dev = &d->devices[device];
  if (dev->used_bytes + m->mem_bytes > dev->budget_bytes) {
    snprintf(msg, msg_cap,
             "model \"%s\" needs %.1f MiB (weights %.1f, KV %d x %.1f, scratch %.1f) but %s has "
             "%.1f MiB free of its %.1f MiB budget",
             e->id, (double)m->mem_bytes / MIB, (double)m->mem.weight_bytes / MIB, slots,
             (double)m->mem.kv_bytes_slot / MIB, (double)m->mem.scratch_bytes / MIB, dev->name,
             (double)(dev->budget_bytes - dev->used_bytes) / MIB, (double)dev->budget_bytes / MIB);
    free(m);
    return 507;
  }
  life_job *lj = calloc(1, sizeof *lj);
  if (!lj) {
    free(m);
    snprintf(msg, msg_cap, "out of memory");
    return 500;
  }
  m->state = MODEL_LOADING;
  m->load_start_ns = hx_time_mono_ns();
  m->refs = 2; /* the list + the load job */
  if (waiter)
    m->load_waiters[m->n_load_waiters++] = waiter;
  lj->base.run = load_run;
  lj->base.drop = life_drop;
  lj->d = d;
  lj->m = m;
  if (!neuron_worker_submit(dev->worker, &lj->base)) {
    free(lj);
    free(m);
    snprintf(msg, msg_cap, "the neuron is shutting down");
    return 503;
  }
  dev->used_bytes += m->mem_bytes;
  m->next = d->models;
  d->models = m;
  *out = m;
  return 0;
}

/* ------------------------------------------------------------- unloading */

static void unload_run(neuron_job *base) {
  life_job *lj = (life_job *)base;
  neuron_daemon *d = lj->d;
  nmodel *m = lj->m;
  for (int i = 0; i < m->n_slots; i++) {
    hx_engine_slot_free(m->slots[i]);
    m->slots[i] = NULL;
  }
  hx_chat_template_free(m->tmpl);
  tokenizer_free(m->tok);
  hx_engine_close(m->eng);
  m->tmpl = NULL;
  m->tok = NULL;
  m->eng = NULL;
  device_vram_refresh(d, m->device);
  pthread_mutex_lock(&d->mu);
  uint64_t freed = m->mem_bytes;
  json_t *body =
      json_pack("{s:s,s:b,s:I}", "model", m->id, "unloaded", 1, "freed_bytes", (json_int_t)freed);
  hx_http_req *w[NEURON_WAITERS_MAX];
  int n = m->n_unload_waiters;
  memcpy(w, m->unload_waiters, (size_t)n * sizeof w[0]);
  m->n_unload_waiters = 0;
  HX_INFO("model %s: unloaded (%.1f MiB freed)", m->id, (double)freed / MIB);
  model_unlink_locked(d, m);
  model_unref_locked(d, m); /* the job's */
  pthread_mutex_unlock(&d->mu);
  respond_waiters(w, n, 200, body);
  free(lj);
}

/* Marks m UNLOADING and queues its unload (d->mu held). */
static int unload_start_locked(neuron_daemon *d, nmodel *m, hx_http_req *waiter,
                               unsigned grace_ms) {
  if (m->state == MODEL_UNLOADING) {
    if (waiter && m->n_unload_waiters < NEURON_WAITERS_MAX)
      m->unload_waiters[m->n_unload_waiters++] = waiter;
    else if (waiter)
      return 429;
    return 0;
  }
  life_job *lj = calloc(1, sizeof *lj);
  if (!lj)
    return 500;
  lj->base.run = unload_run;
  lj->base.drop = life_drop;
  lj->d = d;
  lj->m = m;
  m->refs++;
  if (!neuron_worker_submit(d->devices[m->device].worker, &lj->base)) {
    m->refs--;
    free(lj);
    return 503;
  }
  m->state = MODEL_UNLOADING;
  m->unload_deadline_ns = hx_time_mono_ns() + (uint64_t)grace_ms * 1000000ull;
  if (waiter)
    m->unload_waiters[m->n_unload_waiters++] = waiter;
  pthread_cond_broadcast(&d->reaper_cv);
  return 0;
}

/* Cancels the running request of models past their unload grace. */
static void *reaper_main(void *arg) {
  neuron_daemon *d = arg;
  pthread_mutex_lock(&d->mu);
  while (!d->stopping) {
    uint64_t now = hx_time_mono_ns();
    for (nmodel *m = d->models; m; m = m->next)
      if (m->state == MODEL_UNLOADING && now >= m->unload_deadline_ns && m->running)
        atomic_store(&m->running->cancel, true);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&d->reaper_cv, &d->mu, &ts);
  }
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

/* ------------------------------------------------------------- admission */

static json_t *body_json(hx_http_req *req) {
  hx_slice b = hx_http_req_body(req);
  hx_err err = {0};
  hx_json_limits lim = {b.len + 1, NEURON_REQUEST_BODY_DEPTH_MAX};
  json_t *j = hx_json_parse(b.ptr, b.len, lim, &err);
  if (!j) {
    hx_http_respond_error(req, 400, "invalid_request_error", "invalid_json", NULL, 0,
                          "request body is not valid JSON: %s", err.msg);
    return NULL;
  }
  if (!json_is_object(j)) {
    json_decref(j);
    hx_http_respond_error(req, 400, "invalid_request_error", "invalid_request", NULL, 0,
                          "request body must be a JSON object");
    return NULL;
  }
  return j;
}

/* Admits a job for model id: finds (or loads on demand) the model, checks
 * the queue, queues the job. Responds itself on failure (and frees j). */
static void admit(neuron_daemon *d, gen_job *j, const char *id) {
  char msg[1024];
  int status = 0;
  const char *code = NULL, *type = "invalid_request_error";
  /* Before the job can run (and finish the request) on its worker. */
  hx_http_req_on_cancel(j->req, job_cancel_cb, j);
  pthread_mutex_lock(&d->mu);
  nmodel *m = model_find(d, id);
  if (m && m->state == MODEL_FAILED && d->cfg->engine.load_on_demand) {
    model_unlink_locked(d, m); /* try again */
    m = NULL;
  }
  if (!m) {
    const neuron_catalog_entry *e = catalog_find(d, id);
    if (!e) {
      status = 404;
      code = "model_not_found";
      snprintf(msg, sizeof msg, "model \"%.300s\" does not exist on this neuron (GET /models)", id);
    } else if (!d->cfg->engine.load_on_demand) {
      status = 409;
      code = "model_not_loaded";
      snprintf(msg, sizeof msg, "model \"%.300s\" is not loaded (POST /models/load)", id);
    } else {
      status = load_start_locked(d, e, 0, NULL, 0, NULL, &m, msg, sizeof msg);
      code = status == 507 ? "insufficient_memory" : "model_load_failed";
      if (status)
        type = "server_error";
    }
  } else if (m->state == MODEL_UNLOADING) {
    status = 409;
    code = "model_unloading";
    snprintf(msg, sizeof msg, "model \"%.300s\" is being unloaded", id);
  } else if (m->inflight > (int)d->cfg->limits.queue_length) { /* one runs, the rest wait */
    status = 429;
    type = "rate_limit_error";
    code = "queue_full";
    snprintf(msg, sizeof msg, "model \"%.300s\" has %d requests waiting (limit %u); retry later",
             id, m->inflight - 1, d->cfg->limits.queue_length);
  }
  if (!status) {
    j->m = m;
    m->refs++;
    m->inflight++;
    j->enqueued_ns = hx_time_mono_ns();
    j->base.run = job_run;
    j->base.drop = job_drop;
    if (!neuron_worker_submit(d->devices[m->device].worker, &j->base)) {
      m->refs--;
      m->inflight--;
      j->m = NULL;
      status = 503;
      type = "server_error";
      code = "shutting_down";
      snprintf(msg, sizeof msg, "the neuron is shutting down");
    }
  }
  pthread_mutex_unlock(&d->mu);
  if (status) {
    hx_http_respond_error(j->req, status, type, code, "model", status == 429 ? 1 : 0, "%s", msg);
    j->req = NULL;
    neuron_job_done(j);
  }
}

static gen_job *job_new(neuron_daemon *d, hx_http_req *req, job_kind kind) {
  gen_job *j = calloc(1, sizeof *j);
  if (!j) {
    hx_http_respond_error(req, 500, "server_error", "out_of_memory", NULL, 0, "out of memory");
    return NULL;
  }
  j->d = d;
  j->req = req;
  j->kind = kind;
  atomic_init(&j->cancel, false);
  return j;
}

static void handle_completion(hx_http_req *req, neuron_daemon *d, bool chat) {
  gen_job *j = job_new(d, req, chat ? JOB_CHAT : JOB_COMPLETION);
  if (!j)
    return;
  hx_slice b = hx_http_req_body(req);
  char param[128];
  hx_err err = {0};
  hx_code rc = neuron_oai_request_parse(b.ptr, b.len, chat, &j->r, param, sizeof param, &err);
  if (rc != HX_OK) {
    const char *lab[] = {"", chat ? "chat" : "completions", "invalid"};
    hx_metric_inc(d->m.requests, lab);
    hx_http_respond_error(req, 400, "invalid_request_error",
                          rc == HX_EUNSUPPORTED ? "unsupported_parameter" : "invalid_request",
                          param[0] ? param : NULL, 0, "%s", err.msg);
    j->req = NULL;
    neuron_job_done(j);
    return;
  }
  admit(d, j, j->r.model);
}

static void h_chat(hx_http_req *req, void *ctx) { handle_completion(req, ctx, true); }
static void h_completions(hx_http_req *req, void *ctx) { handle_completion(req, ctx, false); }

static void handle_model_job(hx_http_req *req, neuron_daemon *d, job_kind kind) {
  json_t *body = body_json(req);
  if (!body)
    return;
  const char *model = json_string_value(json_object_get(body, "model"));
  if (!model) {
    json_decref(body);
    hx_http_respond_error(req, 400, "invalid_request_error", "invalid_request", "model", 0,
                          "\"model\" is required and must be a string");
    return;
  }
  gen_job *j = job_new(d, req, kind);
  if (!j) {
    json_decref(body);
    return;
  }
  j->body = body;
  admit(d, j, model);
}

static void h_tokenize(hx_http_req *req, void *ctx) { handle_model_job(req, ctx, JOB_TOKENIZE); }
static void h_detokenize(hx_http_req *req, void *ctx) {
  handle_model_job(req, ctx, JOB_DETOKENIZE);
}
static void h_apply_template(hx_http_req *req, void *ctx) {
  handle_model_job(req, ctx, JOB_APPLY_TEMPLATE);
}

/* ------------------------------------------------------------- lifecycle endpoints */

static void h_load(hx_http_req *req, void *ctx) {
  neuron_daemon *d = ctx;
  json_t *body = body_json(req);
  if (!body)
    return;
  const char *id = json_string_value(json_object_get(body, "model"));
  json_t *ctxj = json_object_get(body, "context");
  json_t *quantj = json_object_get(body, "quant");
  json_t *devj = json_object_get(body, "devices");
  json_t *tpj = json_object_get(body, "tensor_parallel");
  const char *bad = NULL;
  if (!id)
    bad = "model";
  else if (ctxj && !json_is_null(ctxj) &&
           (!json_is_integer(ctxj) || json_integer_value(ctxj) < 16 ||
            json_integer_value(ctxj) > (1 << 24)))
    bad = "context";
  else if (quantj && !json_is_null(quantj) && !json_is_string(quantj))
    bad = "quant";
  else if (devj && !json_is_null(devj) && !json_is_array(devj))
    bad = "devices";
  else if (tpj && !json_is_null(tpj) && (!json_is_integer(tpj) || json_integer_value(tpj) < 1))
    bad = "tensor_parallel";
  if (bad) {
    json_decref(body);
    hx_http_respond_error(req, 400, "invalid_request_error", "invalid_request", bad, 0,
                          "\"%s\" is missing or has the wrong type/range", bad);
    return;
  }
  int device = 0; /* CPU unless a GPU is named */
  if (devj && json_array_size(devj) > 0) {
    json_t *first = json_array_get(devj, 0);
    if (json_array_size(devj) > 1 || (tpj && json_integer_value(tpj) > 1)) {
      json_decref(body);
      hx_http_respond_error(req, 400, "invalid_request_error", "unsupported", "devices", 0,
                            "multi-device placement is not supported by this neuron yet");
      return;
    }
    bool found = false;
    for (int i = 1; i < d->n_devices; i++)
      if (json_is_integer(first) && d->devices[i].gpu_index == json_integer_value(first)) {
        device = i;
        found = true;
      }
    if (json_is_string(first) && strcmp(json_string_value(first), "cpu") == 0)
      found = true;
    if (!found) {
      json_decref(body);
      hx_http_respond_error(req, 400, "invalid_request_error", "invalid_request", "devices", 0,
                            "\"devices\" names a device this neuron does not have (GET /hardware)");
      return;
    }
  }
  char msg[1024];
  int status = 0;
  const char *code = "invalid_request";
  bool respond_now = false;
  json_t *now_body = NULL;
  pthread_mutex_lock(&d->mu);
  nmodel *m = model_find(d, id);
  if (m && m->state == MODEL_FAILED) {
    model_unlink_locked(d, m);
    m = NULL;
  }
  if (m && m->state == MODEL_READY) {
    respond_now = true; /* already there */
    now_body = model_json_locked(d, m);
  } else if (m && m->state == MODEL_LOADING) {
    bool same =
        (!ctxj || json_is_null(ctxj) || json_integer_value(ctxj) == m->opts.n_ctx) &&
        (!quantj || json_is_null(quantj) || strcmp(json_string_value(quantj), m->quant) == 0) &&
        device == m->device;
    if (!same) {
      status = 409;
      code = "already_loading";
      snprintf(msg, sizeof msg, "model \"%.300s\" is already loading with other settings", id);
    } else if (m->n_load_waiters >= NEURON_WAITERS_MAX) {
      status = 429;
      code = "queue_full";
      snprintf(msg, sizeof msg, "too many requests are waiting for \"%.300s\"", id);
    } else {
      m->load_waiters[m->n_load_waiters++] = req; /* join the load in progress */
    }
  } else if (m && m->state == MODEL_UNLOADING) {
    status = 409;
    code = "model_unloading";
    snprintf(msg, sizeof msg, "model \"%.300s\" is being unloaded; load it again afterwards", id);
  } else {
    const neuron_catalog_entry *e = catalog_find(d, id);
    if (!e) {
      status = 404;
      code = "model_not_found";
      snprintf(msg, sizeof msg, "model \"%.300s\" is not in this neuron's model directories", id);
    } else {
      status = load_start_locked(d, e, ctxj ? (int)json_integer_value(ctxj) : 0,
                                 quantj ? json_string_value(quantj) : NULL, device, req, &m, msg,
                                 sizeof msg);
      code = status == 507 ? "insufficient_memory" : "model_load_failed";
    }
  }
  pthread_mutex_unlock(&d->mu);
  json_decref(body);
  if (respond_now)
    hx_http_respond_json(req, 200, now_body);
  else if (status)
    hx_http_respond_error(req, status, status >= 500 ? "server_error" : "invalid_request_error",
                          code, "model", status == 429 ? 1 : 0, "%s", msg);
}

static void h_unload(hx_http_req *req, void *ctx) {
  neuron_daemon *d = ctx;
  json_t *body = body_json(req);
  if (!body)
    return;
  const char *id = json_string_value(json_object_get(body, "model"));
  if (!id) {
    json_decref(body);
    hx_http_respond_error(req, 400, "invalid_request_error", "invalid_request", "model", 0,
                          "\"model\" is required and must be a string");
    return;
  }
  pthread_mutex_lock(&d->mu);
  nmodel *m = model_find(d, id);
  int status = 0;
  if (m && m->state == MODEL_FAILED) {
    model_unlink_locked(d, m);
    m = NULL;
  }
  if (!m)
    status = catalog_find(d, id) ? 409 : 404;
  else
    status = unload_start_locked(d, m, req, d->cfg->limits.unload_grace_ms);
  pthread_mutex_unlock(&d->mu);
  if (status == 404)
    hx_http_respond_error(req, 404, "invalid_request_error", "model_not_found", "model", 0,
                          "model \"%.300s\" does not exist on this neuron", id);
  else if (status == 409)
    hx_http_respond_error(req, 409, "invalid_request_error", "model_not_loaded", "model", 0,
                          "model \"%.300s\" is not loaded", id);
  else if (status)
    hx_http_respond_error(req, status, "server_error", "unload_failed", "model",
                          status == 429 ? 1 : 0, "cannot unload \"%.300s\" now", id);
  json_decref(body);
}

/* ------------------------------------------------------------- info endpoints */

static void h_health(hx_http_req *req, void *ctx) {
  neuron_daemon *d = ctx;
  pthread_mutex_lock(&d->mu);
  int poisoned = 0, loaded = 0;
  for (int i = 0; i < d->hw.n_gpus; i++)
    poisoned += d->hw.gpus[i].poisoned;
  for (nmodel *m = d->models; m; m = m->next)
    loaded += m->state == MODEL_READY;
  pthread_mutex_unlock(&d->mu);
  json_t *j = json_pack("{s:s,s:i,s:i,s:i}", "status", poisoned ? "degraded" : "ok",
                        "models_loaded", loaded, "poisoned_devices", poisoned, "in_flight",
                        (int)hx_http_server_inflight(d->http));
  hx_http_respond_json(req, poisoned ? 503 : 200, j);
}

static void h_hardware(hx_http_req *req, void *ctx) {
  neuron_daemon *d = ctx;
  pthread_mutex_lock(&d->mu);
  neuron_hardware_refresh(&d->hw);
  json_t *j = neuron_hardware_json(&d->hw);
  json_t *budgets = json_array();
  for (int i = 0; i < d->n_devices; i++)
    json_array_append_new(budgets, json_pack("{s:s,s:I,s:I}", "device", d->devices[i].name,
                                             "budget_bytes", (json_int_t)d->devices[i].budget_bytes,
                                             "used_bytes", (json_int_t)d->devices[i].used_bytes));
  json_object_set_new(j, "budgets", budgets);
  json_object_set_new(j, "name", json_string(d->cfg->name ? d->cfg->name : d->hw.hostname));
  pthread_mutex_unlock(&d->mu);
  hx_http_respond_json(req, 200, j);
}

static void rescan_locked(neuron_daemon *d) {
  neuron_catalog_entry *v = NULL;
  size_t n = 0;
  hx_err err = {0};
  if (neuron_catalog_scan(d->cfg->model_dirs, d->cfg->n_model_dirs, &v, &n, &err) != HX_OK) {
    HX_WARN("model scan: %s", err.msg);
    return;
  }
  free(d->catalog);
  d->catalog = v;
  d->n_catalog = n;
}

static void h_models(hx_http_req *req, void *ctx) {
  neuron_daemon *d = ctx;
  const char *rescan = hx_http_req_query(req, "rescan");
  pthread_mutex_lock(&d->mu);
  if (rescan && strcmp(rescan, "0") != 0)
    rescan_locked(d);
  json_t *avail = json_array();
  for (size_t i = 0; i < d->n_catalog; i++) {
    const neuron_catalog_entry *e = &d->catalog[i];
    json_array_append_new(avail,
                          json_pack("{s:s,s:s,s:s,s:I}", "id", e->id, "path", e->path, "format",
                                    e->format, "file_bytes", (json_int_t)e->file_bytes));
  }
  json_t *loaded = json_array();
  for (nmodel *m = d->models; m; m = m->next)
    json_array_append_new(loaded, model_json_locked(d, m));
  pthread_mutex_unlock(&d->mu);
  hx_http_respond_json(req, 200, json_pack("{s:o,s:o}", "available", avail, "loaded", loaded));
}

static void h_rescan(hx_http_req *req, void *ctx) {
  neuron_daemon *d = ctx;
  pthread_mutex_lock(&d->mu);
  rescan_locked(d);
  size_t n = d->n_catalog;
  pthread_mutex_unlock(&d->mu);
  hx_http_respond_json(req, 200, json_pack("{s:I}", "available", (json_int_t)n));
}

static void h_v1_models(hx_http_req *req, void *ctx) {
  neuron_daemon *d = ctx;
  json_t *data = json_array();
  pthread_mutex_lock(&d->mu);
  for (size_t i = 0; i < d->n_catalog; i++) {
    nmodel *m = model_find(d, d->catalog[i].id);
    json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s,s:s}", "id", d->catalog[i].id, "object",
                                          "model", "created", 0, "owned_by", "neuron", "state",
                                          m ? state_name(m->state) : "available"));
  }
  pthread_mutex_unlock(&d->mu);
  hx_http_respond_json(req, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

static void h_metrics(hx_http_req *req, void *ctx) {
  neuron_daemon *d = ctx;
  pthread_mutex_lock(&d->mu);
  int loaded = 0;
  for (nmodel *m = d->models; m; m = m->next)
    loaded += m->state == MODEL_READY;
  for (int i = 0; i < d->n_devices; i++) {
    const char *lab[] = {d->devices[i].name};
    hx_metric_set(d->m.mem_used, lab, (double)d->devices[i].used_bytes);
    hx_metric_set(d->m.mem_budget, lab, (double)d->devices[i].budget_bytes);
  }
  pthread_mutex_unlock(&d->mu);
  hx_metric_set(d->m.loaded, NULL, loaded);
  hx_metric_set(d->m.inflight, NULL, hx_http_server_inflight(d->http));
  hx_buf out;
  hx_buf_init(&out, 64u << 20);
  hx_metrics_render(d->m.reg, &out);
  hx_http_respond(req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len, NULL,
                  0);
  hx_buf_free(&out);
}

/* ------------------------------------------------------------- start / stop */

static void metrics_init(neuron_metrics *m) {
  m->reg = hx_metrics_create(256);
  const char *me[] = {"model", "endpoint", "outcome"};
  const char *mo[] = {"model"};
  const char *mout[] = {"model", "outcome"};
  const char *dev[] = {"device"};
  const double *lb = hx_metrics_buckets_latency_s;
  size_t ln = hx_metrics_buckets_latency_n;
  m->requests = hx_metrics_counter(m->reg, "neuron_requests_total", "Requests by outcome.", me, 3);
  m->prompt_tokens =
      hx_metrics_counter(m->reg, "neuron_prompt_tokens_total", "Prompt tokens processed.", mo, 1);
  m->gen_tokens =
      hx_metrics_counter(m->reg, "neuron_generated_tokens_total", "Tokens generated.", mo, 1);
  m->ttft =
      hx_metrics_histogram(m->reg, "neuron_ttft_seconds", "Time to first token.", mo, 1, lb, ln);
  m->itl = hx_metrics_histogram(m->reg, "neuron_inter_token_seconds",
                                "Mean time between generated tokens, per request.", mo, 1, lb, ln);
  m->e2e = hx_metrics_histogram(m->reg, "neuron_request_seconds", "End-to-end request time.", mo, 1,
                                lb, ln);
  m->queue = hx_metrics_histogram(m->reg, "neuron_queue_seconds",
                                  "Time from admission to the worker starting the request.", mo, 1,
                                  lb, ln);
  m->cache_hits = hx_metrics_counter(m->reg, "neuron_prefix_cache_hits_total",
                                     "Requests that reused a cached prompt prefix.", mo, 1);
  m->cache_reused =
      hx_metrics_counter(m->reg, "neuron_prefix_cache_reused_tokens_total",
                         "Prompt tokens not prefilled thanks to prefix reuse.", mo, 1);
  m->loads =
      hx_metrics_counter(m->reg, "neuron_model_loads_total", "Model loads by outcome.", mout, 2);
  m->load_s = hx_metrics_histogram(m->reg, "neuron_model_load_seconds", "Model load time.", mout, 2,
                                   lb, ln);
  m->mem_used = hx_metrics_gauge(m->reg, "neuron_device_memory_used_bytes",
                                 "Memory charged to models per device (estimates).", dev, 1);
  m->mem_budget = hx_metrics_gauge(m->reg, "neuron_device_memory_budget_bytes",
                                   "Memory budget per device.", dev, 1);
  m->loaded = hx_metrics_gauge(m->reg, "neuron_models_loaded", "Models ready.", NULL, 0);
  m->inflight =
      hx_metrics_gauge(m->reg, "neuron_requests_in_flight", "HTTP requests in flight.", NULL, 0);
}

static hx_code devices_init(neuron_daemon *d, hx_err *err) {
  const neuron_config *cfg = d->cfg;
  neuron_device *cpu = &d->devices[0];
  snprintf(cpu->name, sizeof cpu->name, "cpu");
  cpu->gpu_index = -1;
  cpu->budget_bytes = cfg->memory.cpu_budget_mb ? cfg->memory.cpu_budget_mb * (uint64_t)MIB
                                                : d->hw.ram_total_bytes / 5 * 4;
  d->n_devices = 1;
  for (int i = 0; i < d->hw.n_gpus && cfg->devices_mode != NEURON_DEVICES_CPU; i++) {
    const neuron_gpu *g = &d->hw.gpus[i];
    bool use = cfg->devices_mode == NEURON_DEVICES_ALL;
    for (size_t k = 0; k < cfg->n_devices; k++)
      use |= cfg->devices[k] == g->index;
    if (!use)
      continue;
    neuron_device *x = &d->devices[d->n_devices++];
    snprintf(x->name, sizeof x->name, "cuda:%d", g->index);
    x->gpu_index = g->index;
    uint64_t reserve = cfg->memory.device_reserve_mb * (uint64_t)MIB;
    x->budget_bytes = g->vram_free_bytes > reserve ? g->vram_free_bytes - reserve : 0;
    for (size_t k = 0; k < cfg->memory.n_device_budgets; k++)
      if (cfg->memory.device_budgets[k].device == g->index)
        x->budget_bytes = cfg->memory.device_budgets[k].budget_mb * (uint64_t)MIB;
  }
  for (int i = 0; i < d->n_devices; i++) {
    d->devices[i].worker = neuron_worker_start(d->devices[i].name);
    if (!d->devices[i].worker)
      return hx_err_set(err, HX_EINTERNAL, "cannot start the worker thread of %s",
                        d->devices[i].name);
  }
  return HX_OK;
}

hx_code neuron_daemon_start(const neuron_config *cfg, neuron_daemon **out, hx_err *err) {
  *out = NULL;
  neuron_daemon *d = calloc(1, sizeof *d);
  if (!d)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  d->cfg = cfg;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->reaper_cv, NULL);
  metrics_init(&d->m);
  hx_code rc = neuron_hardware_discover(&d->hw, err);
  if (rc == HX_OK)
    rc = devices_init(d, err);
  if (rc == HX_OK) {
    rescan_locked(d);
    HX_INFO("neuron: %s, %d CPUs, %.1f GiB RAM, %d GPU(s), %zu model(s) available", d->hw.cpu_model,
            d->hw.cpu_logical, (double)d->hw.ram_total_bytes / (1u << 30), d->hw.n_gpus,
            d->n_catalog);
    if (pthread_create(&d->reaper, NULL, reaper_main, d) != 0)
      rc = hx_err_set(err, HX_EINTERNAL, "cannot start the reaper thread");
  }
  if (rc != HX_OK) {
    for (int i = 0; i < d->n_devices; i++)
      neuron_worker_stop(d->devices[i].worker);
    hx_metrics_free(d->m.reg);
    free(d);
    return rc;
  }
  hx_http_server_config hc = {
      .host = cfg->listen_host,
      .port = cfg->listen_port,
      .threads = 4,
      .body_max_bytes = cfg->limits.max_request_bytes,
      .request_read_ms = cfg->limits.header_timeout_ms,
      .log_requests = true,
  };
  d->http = hx_http_server_create(&hc);
  struct {
    const char *method, *path;
    hx_http_handler fn;
  } routes[] = {
      {"GET", "/health", h_health},
      {"GET", "/hardware", h_hardware},
      {"GET", "/models", h_models},
      {"POST", "/models/rescan", h_rescan},
      {"POST", "/models/load", h_load},
      {"POST", "/models/unload", h_unload},
      {"GET", "/v1/models", h_v1_models},
      {"POST", "/v1/chat/completions", h_chat},
      {"POST", "/v1/completions", h_completions},
      {"POST", "/tokenize", h_tokenize},
      {"POST", "/detokenize", h_detokenize},
      {"POST", "/apply-template", h_apply_template},
      {"GET", "/metrics", h_metrics},
  };
  for (size_t i = 0; d->http && rc == HX_OK && i < sizeof routes / sizeof routes[0]; i++)
    rc = hx_http_server_route(d->http, routes[i].method, routes[i].path, routes[i].fn, d, err);
  if (!d->http)
    rc = hx_err_set(err, HX_ENOMEM, "out of memory");
  if (rc == HX_OK)
    rc = hx_http_server_start(d->http, err);
  if (rc != HX_OK) {
    neuron_daemon_stop(d);
    return rc;
  }
  HX_INFO("neuron: listening on %s:%u", cfg->listen_host, hx_http_server_port(d->http));
  /* Preloads queue behind each other on their worker. */
  pthread_mutex_lock(&d->mu);
  for (size_t i = 0; i < cfg->n_preload; i++) {
    const neuron_catalog_entry *e = catalog_find(d, cfg->preload[i].model);
    char msg[1024];
    nmodel *m;
    if (!e)
      HX_WARN("preload: model \"%s\" not found in the model directories", cfg->preload[i].model);
    else if (!model_find(d, e->id) &&
             load_start_locked(d, e, 0, NULL, 0, NULL, &m, msg, sizeof msg) != 0)
      HX_WARN("preload %s: %s", e->id, msg);
  }
  pthread_mutex_unlock(&d->mu);
  *out = d;
  return HX_OK;
}

uint16_t neuron_daemon_port(const neuron_daemon *d) { return hx_http_server_port(d->http); }

void neuron_daemon_stop(neuron_daemon *d) {
  if (!d)
    return;
  if (d->http) {
    unsigned n = hx_http_server_shutdown(d->http, d->cfg->limits.shutdown_deadline_ms, 5000);
    if (n)
      HX_WARN("neuron: %u request(s) cancelled at shutdown", n);
  }
  /* Unload every model on its own worker, then stop the workers. */
  pthread_mutex_lock(&d->mu);
  for (nmodel *m = d->models; m; m = m->next)
    if (m->state != MODEL_UNLOADING)
      unload_start_locked(d, m, NULL, 0);
  d->stopping = true;
  pthread_cond_broadcast(&d->reaper_cv);
  pthread_mutex_unlock(&d->mu);
  if (d->reaper)
    pthread_join(d->reaper, NULL);
  for (int i = 0; i < d->n_devices; i++) {
    neuron_worker_stop(d->devices[i].worker);
  }
  /* Models whose unload job was dropped (worker stopped first) or failed. */
  while (d->models) {
    nmodel *m = d->models;
    for (int i = 0; i < m->n_slots; i++)
      hx_engine_slot_free(m->slots[i]);
    hx_chat_template_free(m->tmpl);
    tokenizer_free(m->tok);
    hx_engine_close(m->eng);
    d->models = m->next;
    free(m);
  }
  hx_http_server_free(d->http);
  hx_metrics_free(d->m.reg);
  free(d->catalog);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->reaper_cv);
  free(d);
}
