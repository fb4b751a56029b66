/* admin.c — operator endpoints (GET /health, GET /status,
 * POST /admin/models/{load,unload}), the model catalogue (GET /v1/models,
 * OpenAI or Anthropic shape) and the metrics registry / GET /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/anthropic.h"
#include "api/openai.h"
#include "base/json.h"
#include "base/time.h"
#include "cortex/gateway.h"

hx_code gw_metrics_init(gateway *gw, hx_err *err) {
  gw_metrics *m = &gw->m;
  m->reg = hx_metrics_create(512);
  if (!m->reg)
    return hx_err_set(err, HX_ENOMEM, "out of memory creating metrics");
  static const char *req_l[] = {"model", "neuron", "dialect", "outcome"};
  static const char *mn_l[] = {"model", "neuron"};
  static const char *load_l[] = {"model", "neuron", "outcome"};
  static const char *dev_l[] = {"neuron", "device"};
  static const char *n_l[] = {"neuron"};
  static const char *tr_l[] = {"neuron", "to"};
  static const char *df_l[] = {"neuron", "device", "outcome"};
  static const double tok_s[] = {0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1};
  static const double load_s[] = {0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600};
  const double *lat = hx_metrics_buckets_latency_s;
  size_t nlat = hx_metrics_buckets_latency_n;
  m->requests = hx_metrics_counter(m->reg, "cortex_requests_total",
                                   "Requests by model, neuron, dialect and outcome", req_l, 4);
  m->prompt_tokens =
      hx_metrics_counter(m->reg, "cortex_prompt_tokens_total", "Prompt tokens", mn_l, 2);
  m->gen_tokens =
      hx_metrics_counter(m->reg, "cortex_generated_tokens_total", "Generated tokens", mn_l, 2);
  m->ttft = hx_metrics_histogram(m->reg, "cortex_time_to_first_token_seconds",
                                 "Request arrival to first generated content", mn_l, 2, lat, nlat);
  m->itl = hx_metrics_histogram(m->reg, "cortex_inter_token_seconds",
                                "Mean time between generated tokens per request", mn_l, 2, tok_s,
                                sizeof tok_s / sizeof tok_s[0]);
  m->e2e = hx_metrics_histogram(m->reg, "cortex_request_duration_seconds",
                                "Request arrival to last byte", mn_l, 2, lat, nlat);
  m->queue = hx_metrics_histogram(m->reg, "cortex_queue_seconds",
                                  "Time waiting for a replica (incl. loads)", mn_l, 2, lat, nlat);
  m->loads = hx_metrics_counter(m->reg, "cortex_model_loads_total", "Model loads", load_l, 3);
  m->load_seconds = hx_metrics_histogram(m->reg, "cortex_model_load_seconds", "Model load duration",
                                         mn_l, 2, load_s, sizeof load_s / sizeof load_s[0]);
  m->evictions =
      hx_metrics_counter(m->reg, "cortex_model_evictions_total", "Models evicted", mn_l, 2);
  m->vram_used =
      hx_metrics_gauge(m->reg, "cortex_device_vram_used_bytes", "VRAM in use per device", dev_l, 2);
  m->vram_total =
      hx_metrics_gauge(m->reg, "cortex_device_vram_total_bytes", "VRAM per device", dev_l, 2);
  m->neuron_up =
      hx_metrics_gauge(m->reg, "cortex_neuron_up", "1 when the neuron answers polls", n_l, 1);
  m->neuron_transitions = hx_metrics_counter(m->reg, "cortex_neuron_transitions_total",
                                             "Neuron up/down transitions", tr_l, 2);
  m->inflight =
      hx_metrics_gauge(m->reg, "cortex_requests_in_flight", "Requests in flight", NULL, 0);
  m->defrags =
      hx_metrics_counter(m->reg, "cortex_defrag_total",
                         "Device repacks after defrag_after_cycles load/evict cycles", df_l, 3);
  return HX_OK;
}

json_t *gw_status_json(gateway *gw) {
  json_t *neurons = json_array(), *models = json_array();
  pthread_mutex_lock(&gw->mu);
  uint64_t now = hx_time_mono_ns();
  long inflight = 0, queued = 0;
  for (size_t i = 0; i < gw->n_neurons; i++) {
    const gw_neuron *n = &gw->neurons[i];
    json_t *devs = json_array(), *loaded = json_array();
    for (int d = 0; d < n->n_devices; d++) {
      const gw_device *g = &n->devices[d];
      json_array_append_new(devs, json_pack("{s:i, s:s, s:I, s:I, s:b}", "index", g->index, "name",
                                            g->name, "vram_used_bytes",
                                            (json_int_t)(g->vram_total_bytes - g->vram_free_bytes),
                                            "vram_total_bytes", (json_int_t)g->vram_total_bytes,
                                            "poisoned", g->poisoned));
    }
    for (int k = 0; k < n->n_loaded; k++) {
      const gw_loaded *l = &n->loaded[k];
      json_t *dv = json_array();
      for (int x = 0; x < l->n_devices; x++)
        json_array_append_new(dv, json_integer(l->devices[x]));
      json_array_append_new(loaded,
                            json_pack("{s:s, s:s, s:I, s:o}", "id", l->id, "state", l->state,
                                      "bytes", (json_int_t)l->bytes, "devices", dv));
    }
    json_array_append_new(neurons,
                          json_pack("{s:s, s:s, s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:o, s:o, s:i}",
                                    "name", n->cfg->name, "endpoint", n->cfg->endpoint, "up", n->up,
                                    "healthy", n->healthy, "ejected", n->ejected_until_ns > now,
                                    "in_flight", (json_int_t)n->in_flight, "ram_total_bytes",
                                    (json_int_t)n->ram_total_bytes, "ram_available_bytes",
                                    (json_int_t)n->ram_available_bytes, "memory_budget_bytes",
                                    (json_int_t)n->budget_bytes, "devices", devs, "loaded", loaded,
                                    "available", n->n_avail));
    unsigned cycles = n->cycles; /* the most on any device, or the whole host */
    for (int d = 0; d < GW_MAX_DEVICES; d++)
      cycles = n->dev_cycles[d] > cycles ? n->dev_cycles[d] : cycles;
    json_t *last = json_array_get(neurons, json_array_size(neurons) - 1);
    json_object_set_new(last, "cycles", json_integer(cycles));
    json_object_set_new(last, "repacking", json_boolean(n->repacking));
  }
  for (size_t i = 0; i < gw->n_models; i++) {
    const gw_model *m = &gw->models[i];
    inflight += m->in_flight;
    queued += m->queued;
    json_array_append_new(models,
                          json_pack("{s:s, s:I, s:I, s:b, s:s}", "id", m->id, "in_flight",
                                    (json_int_t)m->in_flight, "queued", (json_int_t)m->queued,
                                    "loading", m->loading, "last_error", m->last_error));
  }
  pthread_mutex_unlock(&gw->mu);
  return json_pack("{s:s, s:b, s:s, s:I, s:I, s:o, s:o}", "version", HELEXA_VERSION, "draining",
                   atomic_load(&gw->draining), "eviction",
                   cortex_evict_strategy_name(gw->cfg->eviction.strategy), "in_flight",
                   (json_int_t)inflight, "queued", (json_int_t)queued, "neurons", neurons, "models",
                   models);
}

static void adm_health(hx_http_req *req, void *ctx) {
  gateway *gw = ctx;
  int up = 0;
  pthread_mutex_lock(&gw->mu);
  for (size_t i = 0; i < gw->n_neurons; i++)
    up += gw->neurons[i].up;
  pthread_mutex_unlock(&gw->mu);
  bool draining = atomic_load(&gw->draining);
  hx_http_respond_json(req, draining ? 503 : 200,
                       json_pack("{s:s, s:i, s:i}", "status", draining ? "draining" : "ok",
                                 "neurons_up", up, "neurons", (int)gw->n_neurons));
}

static void adm_status(hx_http_req *req, void *ctx) {
  hx_http_respond_json(req, 200, gw_status_json(ctx));
}

/* Shared by load/unload: parse {"model", "neuron"?}. The actual work may
 * take long (a load), so it runs on a detached thread. */
typedef struct adm_job {
  gateway *gw;
  hx_http_req *req;
  char model[GW_ID_MAX];
  char neuron[128];
  bool load;
} adm_job;

static void *adm_job_main(void *arg) {
  adm_job *j = arg;
  hx_err err = {0};
  hx_code rc = j->load ? gw_admin_load(j->gw, j->model, j->neuron[0] ? j->neuron : NULL, &err)
                       : gw_admin_unload(j->gw, j->model, &err);
  if (rc == HX_OK)
    hx_http_respond_json(
        j->req, 200,
        json_pack("{s:s, s:s}", "model", j->model, "status", j->load ? "loaded" : "unloaded"));
  else
    gw_respond_error(j->req, false,
                     rc == HX_ENOTFOUND   ? 404
                     : rc == HX_ETOOLARGE ? 507
                     : rc == HX_EBUSY     ? 503
                     : rc == HX_ETIMEOUT  ? 504
                                          : 502,
                     "%s", err.msg);
  free(j);
  return NULL;
}

static void adm_models_action(hx_http_req *req, gateway *gw, bool load) {
  if (!gw_auth_check(gw, req, false, NULL))
    return;
  hx_slice raw = hx_http_req_body(req);
  hx_err err = {0};
  json_t *b = hx_json_parse(raw.ptr ? raw.ptr : "", raw.len, (hx_json_limits){1 << 16, 8}, &err);
  const char *model = NULL, *neuron = NULL;
  if (b && hx_json_get_string(b, "model", true, &model, &err) == HX_OK &&
      hx_json_get_string(b, "neuron", false, &neuron, &err) == HX_OK && strlen(model) < GW_ID_MAX &&
      (!neuron || strlen(neuron) < 128)) {
    adm_job *j = calloc(1, sizeof *j);
    pthread_t t;
    if (j) {
      j->gw = gw;
      j->req = req;
      j->load = load;
      snprintf(j->model, sizeof j->model, "%s", model);
      snprintf(j->neuron, sizeof j->neuron, "%s", neuron ? neuron : "");
      if (pthread_create(&t, NULL, adm_job_main, j) == 0) {
        pthread_detach(t);
        json_decref(b);
        return;
      }
      free(j);
    }
    gw_respond_error(req, false, 503, "cannot start a worker thread");
  } else {
    gw_respond_error(req, false, 400, "body must be {\"model\": ID, \"neuron\"?: NAME}: %s",
                     err.msg);
  }
  json_decref(b);
}

static void adm_load(hx_http_req *req, void *ctx) { adm_models_action(req, ctx, true); }
static void adm_unload(hx_http_req *req, void *ctx) { adm_models_action(req, ctx, false); }

/* The catalogue: profiles (ids, then aliases), then models neurons offer
 * that no profile covers. Each OpenAI entry carries where it is loaded. */
static void adm_models(hx_http_req *req, void *ctx) {
  gateway *gw = ctx;
  bool anth = hx_http_req_header(req, "anthropic-version") != NULL;
  if (!gw_auth_check(gw, req, anth, NULL))
    return;
  long created = (long)hx_time_wall_s();
  json_t *data = json_array();
  const models_config *mc = gw->cfg->models;
  pthread_mutex_lock(&gw->mu);
  for (size_t pi = 0; pi < mc->n_models; pi++) {
    const models_profile *p = &mc->models[pi];
    char uid[GW_ID_MAX];
    gw_upstream_id(p->id, p, uid, sizeof uid);
    json_t *on = json_array(), *av = json_array();
    for (size_t i = 0; i < gw->n_neurons; i++) {
      const gw_neuron *n = &gw->neurons[i];
      for (int k = 0; k < n->n_loaded; k++)
        if (strcmp(n->loaded[k].id, uid) == 0)
          json_array_append_new(on, json_string(n->cfg->name));
      for (int k = 0; k < n->n_avail; k++)
        if (strcmp(n->avail[k].id, uid) == 0)
          json_array_append_new(av, json_string(n->cfg->name));
    }
    for (size_t a = 0; a <= p->n_aliases; a++) {
      const char *id = a == 0 ? p->id : p->aliases[a - 1];
      json_t *e =
          anth ? api_anth_model_json(id, created) : api_openai_model_json(id, created, "helexa");
      if (!anth) {
        json_object_set_new(e, "loaded_on", json_deep_copy(on));
        json_object_set_new(e, "available_on", json_deep_copy(av));
        json_object_set_new(e, "pinned", json_boolean(p->pinned));
        if (a > 0)
          json_object_set_new(e, "alias_of", json_string(p->id));
      }
      json_array_append_new(data, e);
    }
    json_decref(on);
    json_decref(av);
  }
  for (size_t i = 0; i < gw->n_neurons; i++) {
    const gw_neuron *n = &gw->neurons[i];
    if (!n->up)
      continue;
    for (int k = 0; k < n->n_avail; k++) {
      const char *id = n->avail[k].id;
      bool covered = false;
      for (size_t pi = 0; pi < mc->n_models && !covered; pi++) {
        char uid[GW_ID_MAX];
        gw_upstream_id(mc->models[pi].id, &mc->models[pi], uid, sizeof uid);
        covered = strcmp(uid, id) == 0;
      }
      size_t j;
      json_t *e;
      json_array_foreach(data, j, e) {
        if (!covered && strcmp(json_string_value(json_object_get(e, "id")), id) == 0)
          covered = true;
      }
      if (covered)
        continue;
      e = anth ? api_anth_model_json(id, created) : api_openai_model_json(id, created, "helexa");
      json_array_append_new(data, e);
    }
  }
  pthread_mutex_unlock(&gw->mu);
  json_t *out;
  if (anth) {
    size_t n = json_array_size(data);
    out = json_pack("{s:o, s:b}", "data", data, "has_more", 0);
    json_object_set_new(out, "first_id",
                        n ? json_incref(json_object_get(json_array_get(data, 0), "id"))
                          : json_null());
    json_object_set_new(out, "last_id",
                        n ? json_incref(json_object_get(json_array_get(data, n - 1), "id"))
                          : json_null());
  } else {
    out = json_pack("{s:s, s:o}", "object", "list", "data", data);
  }
  hx_http_respond_json(req, 200, out);
}

static void adm_metrics(hx_http_req *req, void *ctx) {
  gateway *gw = ctx;
  hx_metric_set(gw->m.inflight, NULL, (double)atomic_load(&gw->streams));
  hx_buf b;
  hx_buf_init(&b, 64u << 20);
  hx_metrics_render(gw->m.reg, &b);
  hx_http_respond(req, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len, NULL, 0);
  hx_buf_free(&b);
}

hx_code gw_routes_admin(gateway *gw, hx_http_server *srv, hx_err *err) {
  hx_code rc = hx_http_server_route(srv, "GET", "/health", adm_health, gw, err);
  if (rc == HX_OK)
    rc = hx_http_server_route(srv, "GET", "/status", adm_status, gw, err);
  if (rc == HX_OK)
    rc = hx_http_server_route(srv, "POST", "/admin/models/load", adm_load, gw, err);
  if (rc == HX_OK)
    rc = hx_http_server_route(srv, "POST", "/admin/models/unload", adm_unload, gw, err);
  if (rc == HX_OK)
    rc = hx_http_server_route(srv, "GET", "/v1/models", adm_models, gw, err);
  if (rc == HX_OK && gw->metrics_srv)
    rc = hx_http_server_route(gw->metrics_srv, "GET", "/metrics", adm_metrics, gw, err);
  return rc;
}
