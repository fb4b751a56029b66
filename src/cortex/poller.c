/* poller.c — keeps the fleet view fresh: each [[neurons]] entry is polled
 * (GET /health, /hardware, /models) every poll_interval_ms with timeout_ms;
 * failures back off exponentially (up to 30 s); up/down transitions are
 * logged and counted. The HTTP calls run without the lock; results are
 * swapped in under it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "cortex/gateway.h"
#include "net/http_client.h"

enum { POLL_MAX_BYTES = 4 << 20, POLL_BACKOFF_MAX_MS = 30000 };

static uint64_t poll_u64(const json_t *o, const char *k1, const char *k2) {
  const json_t *v = json_object_get(o, k1);
  if (!json_is_number(v) && k2)
    v = json_object_get(o, k2);
  double d = json_is_number(v) ? json_number_value(v) : 0;
  return d > 0 ? (uint64_t)d : 0;
}

static void poll_parse_hardware(gw_neuron *n, const json_t *hw) {
  const json_t *devs = json_object_get(hw, "devices");
  n->n_devices = 0;
  size_t i;
  json_t *d;
  json_array_foreach(devs, i, d) {
    if (n->n_devices >= GW_MAX_DEVICES)
      break;
    gw_device *g = &n->devices[n->n_devices++];
    memset(g, 0, sizeof *g);
    const json_t *idx = json_object_get(d, "index");
    g->index = json_is_integer(idx) ? (int)json_integer_value(idx) : (int)i;
    snprintf(g->name, sizeof g->name, "%s",
             json_string_value(json_object_get(d, "name"))
                 ? json_string_value(json_object_get(d, "name"))
                 : "?");
    g->vram_total_bytes = poll_u64(d, "vram_total_bytes", NULL);
    g->vram_free_bytes = poll_u64(d, "vram_free_bytes", NULL);
    const char *cc = json_string_value(json_object_get(d, "compute_capability"));
    if (cc)
      sscanf(cc, "%d.%d", &g->cc_major, &g->cc_minor);
    g->poisoned = json_is_true(json_object_get(d, "poisoned"));
  }
  const json_t *ram = json_object_get(hw, "ram");
  n->ram_total_bytes = poll_u64(ram, "total_bytes", NULL);
  n->ram_available_bytes = poll_u64(ram, "available_bytes", NULL);
  n->budget_bytes = poll_u64(hw, "memory_budget_bytes", NULL);
  if (!n->budget_bytes && n->n_devices == 0) { /* neuron: budgets[] per device, "cpu" here */
    size_t k;
    json_t *b;
    json_array_foreach(json_object_get(hw, "budgets"), k, b) n->budget_bytes +=
        poll_u64(b, "budget_bytes", NULL);
  }
  if (!n->budget_bytes)
    n->budget_bytes = poll_u64(ram, "budget_bytes", NULL);
}

static const char *poll_id(const json_t *m) {
  const char *id = json_string_value(json_object_get(m, "id"));
  if (!id)
    id = json_string_value(json_object_get(m, "model"));
  if (!id)
    id = json_string_value(json_object_get(m, "name"));
  return id;
}

static void poll_parse_models(gw_neuron *n, const json_t *models) {
  n->n_avail = 0;
  n->n_loaded = 0;
  const json_t *avail = json_object_get(models, "available");
  if (!avail)
    avail = json_object_get(models, "data");
  size_t i;
  json_t *m;
  json_array_foreach(avail, i, m) {
    const char *id = poll_id(m);
    if (!id || n->n_avail >= GW_MAX_AVAILABLE)
      continue;
    gw_available *a = &n->avail[n->n_avail++];
    snprintf(a->id, sizeof a->id, "%s", id);
    a->est_bytes = poll_u64(m, "estimated_vram_bytes", "vram_estimate_bytes");
    if (!a->est_bytes)
      a->est_bytes = poll_u64(m, "file_bytes", "file_size_bytes") / 100 * 115;
  }
  const json_t *loaded = json_object_get(models, "loaded");
  json_array_foreach(loaded, i, m) {
    const char *id = poll_id(m);
    if (!id || n->n_loaded >= GW_MAX_LOADED)
      continue;
    gw_loaded *l = &n->loaded[n->n_loaded++];
    memset(l, 0, sizeof *l);
    snprintf(l->id, sizeof l->id, "%s", id);
    const char *st = json_string_value(json_object_get(m, "state"));
    snprintf(l->state, sizeof l->state, "%s", st ? st : "ready");
    l->bytes = poll_u64(m, "vram_used_bytes", "memory_bytes");
    const json_t *devs = json_object_get(m, "devices");
    size_t k;
    json_t *dv;
    json_array_foreach(devs, k, dv) {
      if (l->n_devices < GW_MAX_DEVICES && json_is_integer(dv))
        l->devices[l->n_devices++] = (int)json_integer_value(dv);
    }
    /* neuron serve reports one "device": "cpu" | "cuda:N" */
    const char *dn = json_string_value(json_object_get(m, "device"));
    int di = -1;
    if (l->n_devices == 0 && dn && sscanf(dn, "cuda:%d", &di) == 1 && di >= 0 && di < 64)
      l->devices[l->n_devices++] = di;
  }
}

static json_t *poll_get(const gw_neuron *n, const char *path, int *status, hx_err *err) {
  char url[512];
  snprintf(url, sizeof url, "%s%s", n->cfg->endpoint, path);
  hx_http_response rs;
  hx_code rc = hx_http_fetch("GET", url, NULL, (long)n->cfg->timeout_ms, POLL_MAX_BYTES, &rs, err);
  *status = rs.status;
  json_t *j = NULL;
  if (rc == HX_OK && rs.body.len > 0)
    j = hx_json_parse(rs.body.data, rs.body.len,
                      (hx_json_limits){POLL_MAX_BYTES, HX_JSON_DEPTH_DEFAULT}, err);
  hx_buf_free(&rs.body);
  return j;
}

void gw_poll_neuron(gateway *gw, size_t idx) {
  gw_neuron *n = &gw->neurons[idx];
  hx_err err = {0};
  int st_health = 0, st_hw = 0, st_models = 0;
  json_t *health = poll_get(n, "/health", &st_health, &err);
  json_t *hw = st_health ? poll_get(n, "/hardware", &st_hw, &err) : NULL;
  json_t *models = st_hw == 200 ? poll_get(n, "/models", &st_models, &err) : NULL;
  bool ok = st_health != 0 && st_hw == 200 && st_models == 200 && hw && models;

  pthread_mutex_lock(&gw->mu);
  bool was_up = n->up;
  uint64_t now = hx_time_mono_ns();
  if (ok) {
    poll_parse_hardware(n, hw);
    poll_parse_models(n, models);
    n->healthy = st_health == 200;
    n->up = true;
    n->poll_fails = 0;
    n->next_poll_ns = now + (uint64_t)n->cfg->poll_interval_ms * 1000000u;
  } else {
    n->up = false;
    n->healthy = false;
    n->poll_fails++;
    uint64_t back = (uint64_t)n->cfg->poll_interval_ms
                    << (n->poll_fails < 5 ? n->poll_fails - 1 : 4);
    if (back > POLL_BACKOFF_MAX_MS)
      back = POLL_BACKOFF_MAX_MS;
    n->next_poll_ns = now + back * 1000000u;
  }
  bool first = !n->ever_polled;
  n->ever_polled = true;
  const char *lbl[] = {n->cfg->name};
  hx_metric_set(gw->m.neuron_up, lbl, n->up ? 1 : 0);
  if (n->up) {
    for (int d = 0; d < n->n_devices; d++) {
      char di[16];
      snprintf(di, sizeof di, "%d", n->devices[d].index);
      const char *dl[] = {n->cfg->name, di};
      hx_metric_set(gw->m.vram_total, dl, (double)n->devices[d].vram_total_bytes);
      hx_metric_set(gw->m.vram_used, dl,
                    (double)(n->devices[d].vram_total_bytes - n->devices[d].vram_free_bytes));
    }
  }
  if (was_up != n->up || first) {
    const char *tl[] = {n->cfg->name, n->up ? "up" : "down"};
    if (!first || !n->up)
      hx_metric_inc(gw->m.neuron_transitions, tl);
  }
  pthread_cond_broadcast(&gw->cond);
  pthread_mutex_unlock(&gw->mu);

  if (was_up != n->up || first) {
    if (n->up)
      HX_INFO("neuron %s (%s) is up: %d device(s), %d model(s) available, %d loaded", n->cfg->name,
              n->cfg->endpoint, n->n_devices, n->n_avail, n->n_loaded);
    else
      HX_WARN("neuron %s (%s) is down: %s", n->cfg->name, n->cfg->endpoint,
              err.msg[0] ? err.msg : "unexpected response");
  }
  json_decref(health);
  json_decref(hw);
  json_decref(models);
}

static void *poll_main(void *arg) {
  gateway *gw = arg;
  while (!atomic_load(&gw->stopping)) {
    uint64_t now = hx_time_mono_ns();
    for (size_t i = 0; i < gw->n_neurons && !atomic_load(&gw->stopping); i++) {
      pthread_mutex_lock(&gw->mu);
      bool due = gw->neurons[i].next_poll_ns <= now;
      pthread_mutex_unlock(&gw->mu);
      if (due)
        gw_poll_neuron(gw, i);
    }
    gw_defrag_maybe(gw);
    hx_time_sleep_ms(50);
  }
  return NULL;
}

hx_code gw_poller_start(gateway *gw, hx_err *err) {
  for (size_t i = 0; i < gw->n_neurons; i++)
    gw_poll_neuron(gw, i); /* a first view before serving */
  if (pthread_create(&gw->poller, NULL, poll_main, gw) != 0)
    return hx_err_set(err, HX_ENOMEM, "cannot start the poller thread");
  gw->poller_started = true;
  return HX_OK;
}

void gw_poller_stop(gateway *gw) {
  atomic_store(&gw->stopping, true);
  if (gw->poller_started)
    pthread_join(gw->poller, NULL);
  gw->poller_started = false;
  gw_defrag_stop(gw); /* after the poller: nothing starts another */
}
