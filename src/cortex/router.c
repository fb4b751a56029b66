/* router.c — replica choice, single-flight loads and eviction.
 *
 * A request for a model takes the ready replica with the fewest requests in
 * flight. With none, exactly one request loads the model (placement.h picks
 * the neuron and the victims); the others wait on gw->cond, sending
 * keep-alives. Swaps are serialised fleet-wide and a model with requests in
 * flight or queued is never a victim, so queued requests are served by model
 * in batches instead of thrashing. A neuron whose proxied requests fail
 * twice in a row is ejected for a growing back-off (2 s .. 60 s). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "cortex/gateway.h"
#include "cortex/placement.h"
#include "net/http_client.h"

enum { ROUTER_LOAD_POLL_MS = 200, ROUTER_KA_MS = 1000 };

/* Neuron-side id of a profile: the file or directory name of its path
 * without ".gguf", else its public id. */
void gw_upstream_id(const char *id, const models_profile *pr, char *out, size_t cap) {
  const char *p = pr && pr->path ? pr->path : id;
  const char *base = strrchr(p, '/');
  base = base && base[1] ? base + 1 : p;
  size_t n = strlen(base);
  if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
    n -= 5;
  if (n >= cap)
    n = cap - 1;
  memcpy(out, base, n);
  out[n] = '\0';
}

static void router_upstream_id(const gw_model *m, char *out, size_t cap) {
  gw_upstream_id(m->id, m->profile, out, cap);
}

static gw_loaded *router_find_loaded(gw_neuron *n, const char *uid) {
  for (int i = 0; i < n->n_loaded; i++)
    if (strcmp(n->loaded[i].id, uid) == 0)
      return &n->loaded[i];
  return NULL;
}

static const gw_available *router_find_avail(const gw_neuron *n, const char *uid) {
  for (int i = 0; i < n->n_avail; i++)
    if (strcmp(n->avail[i].id, uid) == 0)
      return &n->avail[i];
  return NULL;
}

gw_model *gw_model_lookup(gateway *gw, const char *name) {
  const models_profile *p = models_config_find(gw->cfg->models, name);
  const char *id = p ? p->id : name;
  for (size_t i = 0; i < gw->n_models; i++)
    if (strcmp(gw->models[i].id, id) == 0)
      return &gw->models[i];
  if (!p) { /* not a profile: some neuron must list it */
    bool found = false;
    for (size_t i = 0; i < gw->n_neurons && !found; i++)
      found = router_find_avail(&gw->neurons[i], name) || router_find_loaded(&gw->neurons[i], name);
    if (!found)
      return NULL;
  }
  if (gw->n_models >= GW_MAX_MODELS || strlen(id) >= GW_ID_MAX)
    return NULL;
  gw_model *m = &gw->models[gw->n_models++];
  memset(m, 0, sizeof *m);
  snprintf(m->id, sizeof m->id, "%s", id);
  m->profile = p;
  m->loading_neuron = -1;
  return m;
}

static bool router_allowed(const models_profile *p, const gw_neuron *n) {
  if (!p)
    return true;
  if (p->n_neurons > 0) {
    bool ok = false;
    for (size_t i = 0; i < p->n_neurons && !ok; i++)
      ok = strcmp(p->neurons[i], n->cfg->name) == 0;
    if (!ok)
      return false;
  }
  if (n->n_devices == 0) /* CPU host: one "device", no compute capability */
    return p->min_devices <= 1 && p->min_compute_major == 0;
  int good = 0;
  for (int i = 0; i < n->n_devices; i++) {
    const gw_device *d = &n->devices[i];
    if (d->poisoned)
      continue;
    if (d->cc_major > (int)p->min_compute_major ||
        (d->cc_major == (int)p->min_compute_major && d->cc_minor >= (int)p->min_compute_minor))
      good++;
  }
  uint32_t need = p->min_devices > p->tensor_parallel ? p->min_devices : p->tensor_parallel;
  return good >= (int)(need ? need : 1);
}

static bool router_usable(const gw_neuron *n, uint64_t now, uint64_t exclude, size_t idx) {
  return n->up && n->ejected_until_ns <= now && !(idx < 64 && (exclude >> idx) & 1);
}

static uint64_t router_free_bytes(const gw_neuron *n) {
  if (n->n_devices > 0) {
    uint64_t f = 0;
    for (int i = 0; i < n->n_devices; i++)
      if (!n->devices[i].poisoned)
        f += n->devices[i].vram_free_bytes;
    return f;
  }
  if (n->budget_bytes) {
    uint64_t used = 0;
    for (int i = 0; i < n->n_loaded; i++)
      used += n->loaded[i].bytes;
    return used < n->budget_bytes ? n->budget_bytes - used : 0;
  }
  return n->ram_available_bytes;
}

static uint64_t router_need_bytes(gateway *gw, const gw_model *m, const char *uid) {
  if (m->profile && m->profile->vram_mb)
    return m->profile->vram_mb << 20;
  uint64_t best = 0;
  for (size_t i = 0; i < gw->n_neurons; i++) {
    const gw_available *a = router_find_avail(&gw->neurons[i], uid);
    if (a && a->est_bytes > best)
      best = a->est_bytes;
  }
  return best;
}

gw_model *gw_model_of_upstream(gateway *gw, const char *uid) {
  for (size_t i = 0; i < gw->n_models; i++) {
    char u[GW_ID_MAX];
    router_upstream_id(&gw->models[i], u, sizeof u);
    if (strcmp(u, uid) == 0)
      return &gw->models[i];
  }
  return NULL;
}

typedef struct router_plan {
  int neuron;
  char victims[PLACE_MAX_LOADED][GW_ID_MAX];
  uint32_t victim_devmask[PLACE_MAX_LOADED]; /* devices (by index) each victim held */
  size_t n_victims;
  bool wait; /* would fit once busy models go idle */
} router_plan;

static void router_snapshot(gateway *gw, gw_model *m, const char *uid, uint64_t now,
                            uint64_t exclude, bool busy_evictable, place_neuron *pn) {
  cortex_evict_strategy s = gw->cfg->eviction.strategy;
  (void)s;
  for (size_t i = 0; i < gw->n_neurons; i++) {
    gw_neuron *n = &gw->neurons[i];
    place_neuron *p = &pn[i];
    memset(p, 0, sizeof *p);
    p->name = n->cfg->name;
    p->eligible = router_usable(n, now, exclude, i) && router_allowed(m->profile, n) &&
                  router_find_avail(n, uid) != NULL;
    p->free_bytes = router_free_bytes(n);
    p->in_flight = n->in_flight;
    for (int k = 0; k < n->n_loaded && p->n_loaded < PLACE_MAX_LOADED; k++) {
      gw_loaded *l = &n->loaded[k];
      gw_model *lm = gw_model_of_upstream(gw, l->id);
      place_model *pm = &p->loaded[p->n_loaded++];
      pm->id = l->id;
      pm->bytes = l->bytes;
      if (!pm->bytes) {
        const gw_available *a = router_find_avail(n, l->id);
        pm->bytes = a ? a->est_bytes : 0;
      }
      pm->pinned = lm && lm->profile && lm->profile->pinned;
      pm->priority = lm && lm->profile ? lm->profile->priority : 0;
      pm->last_used_ns = lm ? lm->last_used_ns : 0;
      pm->busy = strcmp(l->state, "ready") != 0 ||
                 (!busy_evictable && lm && (lm->in_flight > 0 || lm->queued > 0 || lm->loading));
    }
  }
}

static hx_code router_plan_load(gateway *gw, gw_model *m, const char *uid, uint64_t exclude,
                                router_plan *plan, hx_err *err) {
  uint64_t now = hx_time_mono_ns();
  place_neuron *pn = calloc(gw->n_neurons ? gw->n_neurons : 1, sizeof *pn);
  if (!pn)
    return hx_err_set(err, HX_ENOMEM, "out of memory planning a load");
  memset(plan, 0, sizeof *plan);
  plan->neuron = -1;
  bool any_up = false, any_serves = false;
  for (size_t i = 0; i < gw->n_neurons; i++) {
    any_up |= router_usable(&gw->neurons[i], now, exclude, i);
    any_serves |= router_find_avail(&gw->neurons[i], uid) != NULL;
  }
  uint64_t need = router_need_bytes(gw, m, uid);
  router_snapshot(gw, m, uid, now, exclude, false, pn);
  place_decision d;
  hx_code rc = HX_OK;
  if (placement_choose(pn, gw->n_neurons, need, gw->cfg->eviction.strategy, &d)) {
    plan->neuron = d.neuron;
    for (size_t k = 0; k < d.n_evict; k++) {
      snprintf(plan->victims[k], GW_ID_MAX, "%s", pn[d.neuron].loaded[d.evict[k]].id);
      const gw_loaded *v = router_find_loaded(&gw->neurons[d.neuron], plan->victims[k]);
      plan->victim_devmask[k] = v ? gw_loaded_devmask(v) : 0;
    }
    plan->n_victims = d.n_evict;
  } else if (!any_up) {
    rc = hx_err_set(err, HX_EBUSY, "no neuron is up to serve model \"%s\"", m->id);
  } else if (!any_serves) {
    rc = hx_err_set(err, HX_ENOTFOUND, "no neuron that is up has model \"%s\"", m->id);
  } else {
    router_snapshot(gw, m, uid, now, exclude, true, pn);
    if (placement_choose(pn, gw->n_neurons, need, gw->cfg->eviction.strategy, &d))
      plan->wait = true;
    else
      rc = hx_err_set(err, HX_ETOOLARGE,
                      "model \"%s\" (%llu MiB) does not fit on any eligible neuron, even after "
                      "evicting every model the %s policy allows",
                      m->id, (unsigned long long)(need >> 20),
                      cortex_evict_strategy_name(gw->cfg->eviction.strategy));
  }
  free(pn);
  return rc;
}

typedef struct router_ka {
  gw_keepalive_fn fn;
  void *ud;
  uint64_t last_ns;
} router_ka;

static int router_tick(void *ud) {
  router_ka *k = ud;
  uint64_t now = hx_time_mono_ns();
  if (!k->fn || now - k->last_ns < (uint64_t)ROUTER_KA_MS * 1000000u)
    return 0;
  k->last_ns = now;
  return k->fn(k->ud);
}

static hx_code router_post(const gw_neuron *n, const char *path, const char *body, long timeout_ms,
                           router_ka *ka, int *status, char *msg, size_t msg_cap, hx_err *err) {
  char url[512];
  snprintf(url, sizeof url, "%s%s", n->cfg->endpoint, path);
  hx_http_call *c = hx_http_call_new();
  if (!c)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  hx_http_request rq = {.method = "POST",
                        .url = url,
                        .body = body,
                        .body_len = strlen(body),
                        .connect_timeout_ms = n->cfg->timeout_ms,
                        .total_timeout_ms = timeout_ms,
                        .max_response_bytes = 1 << 20,
                        .on_tick = router_tick,
                        .ud = ka};
  rq.headers[0] = "Content-Type: application/json";
  hx_http_response rs;
  hx_code rc = hx_http_call_run(c, &rq, &rs, err);
  *status = rs.status;
  msg[0] = '\0';
  if (rc == HX_OK && rs.status >= 300) {
    json_t *j = hx_json_parse(rs.body.data ? rs.body.data : "", rs.body.len,
                              (hx_json_limits){1 << 20, 16}, NULL);
    const char *em = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    snprintf(msg, msg_cap, "%s", em ? em : (rs.body.data ? rs.body.data : ""));
    json_decref(j);
  }
  hx_buf_free(&rs.body);
  hx_http_call_free(c);
  return rc;
}

/* POST /models/unload; ka keeps a waiting client alive meanwhile. */
static hx_code router_unload(gateway *gw, size_t ni, const char *uid, router_ka *ka, hx_err *err) {
  HX_ASSERT(ni < gw->n_neurons);
  const gw_neuron *n = &gw->neurons[ni];
  json_t *b = json_pack("{s:s}", "model", uid);
  char *body = json_dumps(b, JSON_COMPACT);
  json_decref(b);
  if (!body)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  int status = 0;
  char msg[256];
  hx_code rc = router_post(n, "/models/unload", body, 120000, ka, &status, msg, sizeof msg, err);
  free(body);
  if (rc == HX_OK && status >= 300)
    rc = hx_err_set(err, HX_EIO, "neuron %s refused to unload %s (HTTP %d): %s", n->cfg->name, uid,
                    status, msg);
  return rc;
}

hx_code gw_neuron_unload(gateway *gw, size_t ni, const char *uid, hx_err *err) {
  router_ka ka = {0};
  return router_unload(gw, ni, uid, &ka, err);
}

/* POSTs /models/load for uid (with the profile's settings when pr is set; on
 * device when ≥ 0) and polls the neuron until the model is ready. name is the
 * public id for logs and metrics. Without the lock. */
static hx_code router_load_one(gateway *gw, size_t ni, const models_profile *pr, const char *name,
                               const char *uid, int device, uint64_t deadline_ns, router_ka *ka,
                               hx_err *err) {
  gw_neuron *n = &gw->neurons[ni];
  json_t *b = json_pack("{s:s}", "model", uid);
  if (pr && pr->context)
    json_object_set_new(b, "context", json_integer(pr->context));
  if (pr && pr->quant)
    json_object_set_new(b, "quant", json_string(pr->quant));
  if (pr && pr->tensor_parallel > 1)
    json_object_set_new(b, "tensor_parallel", json_integer(pr->tensor_parallel));
  if (device >= 0)
    json_object_set_new(b, "devices", json_pack("[i]", device));
  char *body = json_dumps(b, JSON_COMPACT);
  json_decref(b);
  if (!body)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  HX_INFO("loading %s on neuron %s", name, n->cfg->name);
  uint64_t t0 = hx_time_mono_ns();
  long left_ms = deadline_ns > t0 ? (long)((deadline_ns - t0) / 1000000u) : 0;
  int status = 0;
  char msg[256];
  hx_code rc = router_post(n, "/models/load", body, left_ms > 1000 ? left_ms : 1000, ka, &status,
                           msg, sizeof msg, err);
  free(body);
  if (rc == HX_OK && status >= 300 && status != 409) {
    return hx_err_set(err,
                      status == 507   ? HX_ETOOLARGE
                      : status == 404 ? HX_ENOTFOUND
                                      : HX_EIO,
                      "neuron %s could not load %s (HTTP %d): %s", n->cfg->name, name, status, msg);
  }
  if (rc != HX_OK)
    return rc;
  /* wait for state ready */
  for (;;) {
    gw_poll_neuron(gw, ni);
    pthread_mutex_lock(&gw->mu);
    gw_loaded *l = router_find_loaded(n, uid);
    char st[16] = "";
    if (l)
      snprintf(st, sizeof st, "%s", l->state);
    bool up = n->up;
    pthread_mutex_unlock(&gw->mu);
    if (strcmp(st, "ready") == 0)
      break;
    if (strcmp(st, "failed") == 0 ||
        (!l && status < 300 && up && st[0] == '\0' && hx_time_mono_ns() - t0 > 2000000000ull))
      return hx_err_set(err, HX_EIO, "neuron %s failed to load %s", n->cfg->name, name);
    if (!up)
      return hx_err_set(err, HX_EIO, "neuron %s went down while loading %s", n->cfg->name, name);
    if (hx_time_mono_ns() > deadline_ns)
      return hx_err_set(err, HX_ETIMEOUT, "loading %s on %s timed out", name, n->cfg->name);
    if (atomic_load(&gw->stopping))
      return hx_err_set(err, HX_ECANCELLED, "cortex is shutting down");
    if (router_tick(ka) != 0)
      return hx_err_set(err, HX_ECANCELLED, "client went away during load");
    hx_time_sleep_ms(ROUTER_LOAD_POLL_MS);
  }
  double secs = (double)(hx_time_mono_ns() - t0) / 1e9;
  const char *ll[] = {name, n->cfg->name};
  hx_metric_observe(gw->m.load_seconds, ll, secs);
  HX_INFO("loaded %s on neuron %s in %.2f s", name, n->cfg->name, secs);
  return HX_OK;
}

hx_code gw_neuron_load(gateway *gw, size_t ni, const models_profile *pr, const char *name,
                       const char *uid, int device, uint64_t deadline_ns, hx_err *err) {
  router_ka ka = {0};
  return router_load_one(gw, ni, pr, name, uid, device, deadline_ns, &ka, err);
}

/* Runs a planned swap on neuron ni without the lock: unload victims, load,
 * wait until ready. Each victim counts one load/evict cycle on the devices
 * it held (defrag.c). */
static hx_code router_do_load(gateway *gw, gw_model *m, const char *uid, const router_plan *plan,
                              uint64_t deadline_ns, router_ka *ka, hx_err *err) {
  gw_neuron *n = &gw->neurons[plan->neuron];
  for (size_t k = 0; k < plan->n_victims; k++) {
    HX_INFO("evicting %s from neuron %s to load %s", plan->victims[k], n->cfg->name, m->id);
    hx_code rc = router_unload(gw, (size_t)plan->neuron, plan->victims[k], ka, err);
    if (rc != HX_OK)
      return rc;
    const char *el[] = {plan->victims[k], n->cfg->name};
    hx_metric_inc(gw->m.evictions, el);
    pthread_mutex_lock(&gw->mu);
    gw_defrag_count(gw, (size_t)plan->neuron, plan->victim_devmask[k]);
    pthread_mutex_unlock(&gw->mu);
  }
  return router_load_one(gw, (size_t)plan->neuron, m->profile, m->id, uid, -1, deadline_ns, ka,
                         err);
}

static void router_lease(gateway *gw, gw_model *m, size_t ni, const char *uid, gw_lease *out) {
  gw_neuron *n = &gw->neurons[ni];
  out->neuron = ni;
  out->model = m;
  snprintf(out->upstream_id, sizeof out->upstream_id, "%s", uid);
  snprintf(out->url_base, sizeof out->url_base, "%s", n->cfg->endpoint);
  m->in_flight++;
  n->in_flight++;
  m->last_used_ns = hx_time_mono_ns();
}

hx_code gw_acquire(gateway *gw, const char *model, uint64_t exclude, gw_keepalive_fn ka_fn,
                   void *ud, gw_lease *out, hx_err *err) {
  uint64_t t0 = hx_time_mono_ns();
  uint32_t tmo = gw->cfg->gateway.request_timeout_ms;
  uint64_t deadline = t0 + (uint64_t)(tmo ? tmo : 3600000u) * 1000000u;
  router_ka ka = {ka_fn, ud, t0};
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&gw->mu);
  gw_model *m = gw_model_lookup(gw, model);
  if (!m) {
    pthread_mutex_unlock(&gw->mu);
    return hx_err_set(err, HX_ENOTFOUND, "model \"%s\" does not exist", model);
  }
  char uid[GW_ID_MAX];
  router_upstream_id(m, uid, sizeof uid);
  m->queued++;
  unsigned seen_gen = m->load_generation;
  hx_code rc = HX_OK;
  for (;;) {
    uint64_t now = hx_time_mono_ns();
    if (atomic_load(&gw->stopping)) {
      rc = hx_err_set(err, HX_ECANCELLED, "cortex is shutting down");
      break;
    }
    long best_if = -1;
    size_t best = 0;
    for (size_t i = 0; i < gw->n_neurons; i++) {
      gw_neuron *n = &gw->neurons[i];
      gw_loaded *l = router_find_loaded(n, uid);
      if (!l || strcmp(l->state, "ready") != 0 || !router_usable(n, now, exclude, i) ||
          n->repacking)
        continue;
      if (best_if < 0 || n->in_flight < best_if) {
        best_if = n->in_flight;
        best = i;
      }
    }
    if (best_if >= 0) {
      router_lease(gw, m, best, uid, out);
      break;
    }
    if (m->load_generation != seen_gen && m->last_error[0]) {
      rc = hx_err_set(err, HX_EIO, "%s", m->last_error); /* the load we waited for failed */
      break;
    }
    if (now > deadline) {
      rc = hx_err_set(err, HX_ETIMEOUT, "timed out waiting for model \"%s\"", m->id);
      break;
    }
    bool swapping = false;
    for (size_t i = 0; i < gw->n_neurons; i++)
      swapping |= gw->neurons[i].swapping;
    router_plan plan;
    if (!m->loading && !swapping) {
      rc = router_plan_load(gw, m, uid, exclude, &plan, err);
      if (rc != HX_OK)
        break;
      if (!plan.wait) {
        m->loading = true;
        m->loading_neuron = plan.neuron;
        gw->neurons[plan.neuron].swapping = true;
        for (size_t k = 0; k < plan.n_victims; k++) { /* no new leases on victims */
          gw_loaded *v = router_find_loaded(&gw->neurons[plan.neuron], plan.victims[k]);
          if (v)
            snprintf(v->state, sizeof v->state, "%s", "unloading");
        }
        pthread_mutex_unlock(&gw->mu);
        hx_err lerr = {0};
        hx_code lrc = router_do_load(gw, m, uid, &plan, deadline, &ka, &lerr);
        pthread_mutex_lock(&gw->mu);
        m->loading = false;
        m->loading_neuron = -1;
        gw->neurons[plan.neuron].swapping = false;
        m->load_generation++;
        seen_gen = m->load_generation;
        const char *ll[] = {m->id, gw->neurons[plan.neuron].cfg->name,
                            lrc == HX_OK ? "ok" : "error"};
        hx_metric_inc(gw->m.loads, ll);
        snprintf(m->last_error, sizeof m->last_error, "%s", lrc == HX_OK ? "" : lerr.msg);
        pthread_cond_broadcast(&gw->cond);
        if (lrc != HX_OK) {
          HX_WARN("load of %s failed: %s", m->id, lerr.msg);
          rc = lrc;
          if (err)
            *err = lerr;
          break;
        }
        continue;
      }
    }
    /* wait for the load in progress, a swap elsewhere, or busy victims */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 250 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&gw->cond, &gw->mu, &ts);
    pthread_mutex_unlock(&gw->mu);
    int stop = router_tick(&ka);
    pthread_mutex_lock(&gw->mu);
    if (stop) {
      rc = hx_err_set(err, HX_ECANCELLED, "client went away while waiting for \"%s\"", m->id);
      break;
    }
  }
  m->queued--;
  out->queue_ns = hx_time_mono_ns() - t0;
  pthread_mutex_unlock(&gw->mu);
  return rc;
}

void gw_release(gateway *gw, gw_lease *l, bool upstream_ok) {
  if (!l->model)
    return;
  pthread_mutex_lock(&gw->mu);
  gw_neuron *n = &gw->neurons[l->neuron];
  l->model->in_flight--;
  n->in_flight--;
  l->model->last_used_ns = hx_time_mono_ns();
  if (upstream_ok) {
    n->proxy_fails = 0;
  } else if (++n->proxy_fails >= 2) {
    int k = n->proxy_fails - 2 < 5 ? n->proxy_fails - 2 : 5;
    uint64_t ms = 2000u << k;
    if (ms > 60000)
      ms = 60000;
    n->ejected_until_ns = hx_time_mono_ns() + ms * 1000000u;
    HX_WARN("neuron %s ejected for %llu ms after %d failed requests", n->cfg->name,
            (unsigned long long)ms, n->proxy_fails);
  }
  pthread_cond_broadcast(&gw->cond);
  pthread_mutex_unlock(&gw->mu);
  l->model = NULL;
}

hx_code gw_admin_load(gateway *gw, const char *model, const char *neuron, hx_err *err) {
  uint64_t exclude = 0;
  if (neuron) {
    bool found = false;
    for (size_t i = 0; i < gw->n_neurons; i++) {
      if (strcmp(gw->neurons[i].cfg->name, neuron) == 0)
        found = true;
      else if (i < 64)
        exclude |= 1ull << i;
    }
    if (!found)
      return hx_err_set(err, HX_ENOTFOUND, "no neuron named \"%s\"", neuron);
  }
  gw_lease l;
  hx_code rc = gw_acquire(gw, model, exclude, NULL, NULL, &l, err);
  if (rc == HX_OK)
    gw_release(gw, &l, true);
  return rc;
}

hx_code gw_admin_unload(gateway *gw, const char *model, hx_err *err) {
  pthread_mutex_lock(&gw->mu);
  gw_model *m = gw_model_lookup(gw, model);
  char uid[GW_ID_MAX] = "";
  if (m)
    router_upstream_id(m, uid, sizeof uid);
  pthread_mutex_unlock(&gw->mu);
  if (!m)
    return hx_err_set(err, HX_ENOTFOUND, "model \"%s\" does not exist", model);
  int done = 0;
  for (size_t i = 0; i < gw->n_neurons; i++) {
    pthread_mutex_lock(&gw->mu);
    const gw_loaded *l = gw->neurons[i].up ? router_find_loaded(&gw->neurons[i], uid) : NULL;
    uint32_t mask = l ? gw_loaded_devmask(l) : 0; /* devices it leaves (defrag.c) */
    pthread_mutex_unlock(&gw->mu);
    if (!l)
      continue;
    hx_code rc = gw_neuron_unload(gw, i, uid, err);
    if (rc != HX_OK)
      return rc;
    pthread_mutex_lock(&gw->mu);
    gw_defrag_count(gw, i, mask);
    pthread_mutex_unlock(&gw->mu);
    gw_poll_neuron(gw, i);
    done++;
  }
  if (!done)
    return hx_err_set(err, HX_ENOTFOUND, "model \"%s\" is not loaded anywhere", model);
  return HX_OK;
}
