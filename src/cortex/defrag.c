/* defrag.c — repacking a device after `defrag_after_cycles` load/evict
 * cycles ([eviction] in cortex.toml).
 *
 * Loads and evictions in arbitrary order leave a device's memory fragmented:
 * the free bytes add up but are split into holes that no single model's
 * allocation fits. Each model evicted or unloaded from a device counts one
 * cycle there (a CPU-only host, or a model whose devices are unknown, counts
 * on the whole host). When a device reaches the threshold and its neuron is
 * idle — no request to it in flight or queued for its models, no load or
 * swap anywhere in the fleet — the poller starts a repack on its own thread:
 *   1. the neuron leaves routing (no new leases; requests for its models wait
 *      with keep-alives exactly as they do for a load, they do not fail),
 *   2. every model on the device is unloaded,
 *   3. and loaded back, pinned models first, then largest first (first-fit
 *      decreasing), each onto the same device, so the allocations are made in
 *      one pass into empty memory,
 *   4. the neuron returns to routing and the device's count restarts.
 * Each repack is logged and counted in
 * cortex_defrag_total{neuron,device,outcome}. A model that fails to reload is
 * logged (outcome "error") and loaded again on demand like any other.
 * Pinned models are unloaded too: a repack is not an eviction (they are back
 * before any request is routed to the neuron again). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/time.h"
#include "cortex/gateway.h"

enum { DEFRAG_LOAD_TIMEOUT_MS = 600000 };

typedef struct defrag_item {
  char uid[GW_ID_MAX];           /* neuron-side id */
  const models_profile *profile; /* NULL when no profile names it */
  uint64_t bytes;
} defrag_item;

typedef struct defrag_job {
  gateway *gw;
  size_t neuron;
  int device; /* device index, or -1 for the whole host */
  unsigned cycles;
  defrag_item items[GW_MAX_LOADED];
  size_t n_items;
} defrag_job;

uint32_t gw_loaded_devmask(const gw_loaded *l) {
  uint32_t mask = 0;
  for (int i = 0; i < l->n_devices; i++)
    if (l->devices[i] >= 0 && l->devices[i] < 32)
      mask |= 1u << l->devices[i];
  return mask;
}

void gw_defrag_count(gateway *gw, size_t ni, uint32_t devmask) {
  HX_ASSERT(ni < gw->n_neurons);
  gw_neuron *n = &gw->neurons[ni];
  if (n->n_devices == 0 || devmask == 0) {
    n->cycles++;
    return;
  }
  for (int d = 0; d < GW_MAX_DEVICES; d++)
    if (devmask & (1u << d))
      n->dev_cycles[d]++;
}

static const models_profile *defrag_profile_of(const gateway *gw, const char *uid) {
  const models_config *mc = gw->cfg->models;
  for (size_t i = 0; i < mc->n_models; i++) {
    char u[GW_ID_MAX];
    gw_upstream_id(mc->models[i].id, &mc->models[i], u, sizeof u);
    if (strcmp(u, uid) == 0)
      return &mc->models[i];
  }
  return NULL;
}

/* true when a reloads before b: pinned first, then larger, then by id */
static bool defrag_before(const defrag_item *a, const defrag_item *b) {
  bool pa = a->profile && a->profile->pinned, pb = b->profile && b->profile->pinned;
  if (pa != pb)
    return pa;
  if (a->bytes != b->bytes)
    return a->bytes > b->bytes;
  return strcmp(a->uid, b->uid) < 0;
}

/* Neuron ni is idle: nothing in flight to it, nothing queued for a model it
 * holds. Must hold gw->mu. */
static bool defrag_idle(gateway *gw, gw_neuron *n) {
  if (n->in_flight > 0 || !n->up || n->swapping)
    return false;
  for (int k = 0; k < n->n_loaded; k++) {
    if (strcmp(n->loaded[k].state, "ready") != 0)
      return false;
    const gw_model *m = gw_model_of_upstream(gw, n->loaded[k].id);
    if (m && (m->queued > 0 || m->in_flight > 0))
      return false;
  }
  return true;
}

/* Fills job with the models on (neuron, device), in reload order. Must hold
 * gw->mu. */
static void defrag_collect(gateway *gw, size_t ni, int device, defrag_job *job) {
  gw_neuron *n = &gw->neurons[ni];
  job->n_items = 0;
  for (int k = 0; k < n->n_loaded && job->n_items < GW_MAX_LOADED; k++) {
    const gw_loaded *l = &n->loaded[k];
    if (device >= 0 && !(gw_loaded_devmask(l) & (1u << device)))
      continue;
    defrag_item it = {0};
    snprintf(it.uid, sizeof it.uid, "%s", l->id);
    it.profile = defrag_profile_of(gw, l->id);
    it.bytes = l->bytes;
    size_t j = job->n_items++; /* insertion sort, n ≤ GW_MAX_LOADED */
    while (j > 0 && defrag_before(&it, &job->items[j - 1])) {
      job->items[j] = job->items[j - 1];
      j--;
    }
    job->items[j] = it;
  }
}

static void *defrag_main(void *arg) {
  defrag_job *job = arg;
  gateway *gw = job->gw;
  gw_neuron *n = &gw->neurons[job->neuron];
  char dev[16];
  snprintf(dev, sizeof dev, job->device >= 0 ? "%d" : "all", job->device);
  uint64_t t0 = hx_time_mono_ns();
  HX_INFO("repacking neuron %s device %s after %u load/evict cycles: %zu model(s)", n->cfg->name,
          dev, job->cycles, job->n_items);
  bool ok = true;
  size_t unloaded = 0;
  for (size_t i = 0; i < job->n_items && ok; i++) {
    hx_err e = {0};
    if (gw_neuron_unload(gw, job->neuron, job->items[i].uid, &e) != HX_OK) {
      HX_WARN("repack of neuron %s: unloading %s failed: %s", n->cfg->name, job->items[i].uid,
              e.msg);
      ok = false;
    } else {
      unloaded++;
    }
  }
  /* reload what was unloaded, in order (also after a failed unload: the
   * models already out must come back) */
  size_t reloaded = 0;
  for (size_t i = 0; i < unloaded && !atomic_load(&gw->stopping); i++) {
    const defrag_item *it = &job->items[i];
    hx_err e = {0};
    uint64_t deadline = hx_time_mono_ns() + (uint64_t)DEFRAG_LOAD_TIMEOUT_MS * 1000000u;
    if (gw_neuron_load(gw, job->neuron, it->profile, it->profile ? it->profile->id : it->uid,
                       it->uid, job->device, deadline, &e) != HX_OK) {
      HX_WARN("repack of neuron %s: reloading %s failed: %s", n->cfg->name, it->uid, e.msg);
      ok = false;
    } else {
      reloaded++;
    }
  }
  pthread_mutex_lock(&gw->mu);
  n->repacking = false;
  n->swapping = false;
  if (job->device >= 0)
    n->dev_cycles[job->device] = 0;
  else
    n->cycles = 0;
  const char *labels[] = {n->cfg->name, dev, ok ? "ok" : "error"};
  hx_metric_inc(gw->m.defrags, labels);
  pthread_cond_broadcast(&gw->cond);
  pthread_mutex_unlock(&gw->mu);
  HX_INFO("repacked neuron %s device %s in %.2f s: %zu unloaded, %zu reloaded%s", n->cfg->name, dev,
          (double)(hx_time_mono_ns() - t0) / 1e9, unloaded, reloaded, ok ? "" : " (with errors)");
  free(job);
  atomic_store(&gw->defrag_busy, false);
  return NULL;
}

/* The first (neuron, device) at or over the threshold whose neuron is idle;
 * false when none. Must hold gw->mu. */
static bool defrag_pick(gateway *gw, unsigned after, size_t *ni, int *device, unsigned *cycles) {
  for (size_t i = 0; i < gw->n_neurons; i++)
    if (gw->neurons[i].swapping)
      return false; /* swaps are serialised fleet-wide */
  for (size_t i = 0; i < gw->n_models; i++)
    if (gw->models[i].loading)
      return false;
  for (size_t i = 0; i < gw->n_neurons; i++) {
    gw_neuron *n = &gw->neurons[i];
    int due = -2;
    if (n->cycles >= after)
      due = -1;
    for (int d = 0; d < GW_MAX_DEVICES && due == -2; d++)
      if (n->dev_cycles[d] >= after)
        due = d;
    if (due == -2 || !defrag_idle(gw, n))
      continue;
    *ni = i;
    *device = due;
    *cycles = due >= 0 ? n->dev_cycles[due] : n->cycles;
    return true;
  }
  return false;
}

void gw_defrag_maybe(gateway *gw) {
  unsigned after = gw->cfg->eviction.defrag_after_cycles;
  if (after == 0 || atomic_load(&gw->stopping))
    return;
  if (gw->defrag_started) {
    if (atomic_load(&gw->defrag_busy))
      return;
    pthread_join(gw->defrag_thread, NULL);
    gw->defrag_started = false;
  }
  size_t ni = 0;
  int device = -1;
  unsigned cycles = 0;
  defrag_job *job = NULL;
  pthread_mutex_lock(&gw->mu);
  bool go = defrag_pick(gw, after, &ni, &device, &cycles);
  if (go) {
    job = calloc(1, sizeof *job);
    go = job != NULL;
  }
  if (go) {
    job->gw = gw;
    job->neuron = ni;
    job->device = device;
    job->cycles = cycles;
    defrag_collect(gw, ni, device, job);
    gw_neuron *n = &gw->neurons[ni];
    if (job->n_items == 0) { /* nothing left on it: nothing to repack */
      if (device >= 0)
        n->dev_cycles[device] = 0;
      else
        n->cycles = 0;
      go = false;
    } else {
      n->repacking = true;
      n->swapping = true;
    }
  }
  pthread_mutex_unlock(&gw->mu);
  if (!go) {
    free(job);
    return;
  }
  atomic_store(&gw->defrag_busy, true);
  if (pthread_create(&gw->defrag_thread, NULL, defrag_main, job) != 0) {
    HX_WARN("cannot start the repack thread; will retry");
    pthread_mutex_lock(&gw->mu);
    gw->neurons[job->neuron].repacking = false;
    gw->neurons[job->neuron].swapping = false;
    pthread_cond_broadcast(&gw->cond);
    pthread_mutex_unlock(&gw->mu);
    atomic_store(&gw->defrag_busy, false);
    free(job);
    return;
  }
  gw->defrag_started = true;
}

void gw_defrag_stop(gateway *gw) {
  if (gw->defrag_started)
    pthread_join(gw->defrag_thread, NULL);
  gw->defrag_started = false;
}
