/* gateway.h — cortex's shared state: the fleet as last polled, the models
 * cortex knows (profiles + what neurons serve), in-flight and queued counts,
 * loads in progress, and the metrics registry. One mutex guards it all (the
 * workload is a handful of requests; every critical section is short and
 * never spans I/O). Files: poller.c (fleet polling), router.c (replica
 * choice, single-flight loads, eviction), proxy.c (API handlers), admin.c
 * (operator endpoints, catalogue, metrics). */
#ifndef CORTEX_GATEWAY_H
#define CORTEX_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/metrics.h"
#include "cortex/config.h"
#include "net/http_server.h"

enum {
  GW_MAX_DEVICES = 16,
  GW_MAX_LOADED = 64,
  GW_MAX_AVAILABLE = 256,
  GW_ID_MAX = 256,
  GW_MAX_MODELS = 512, /* model states tracked (profiles + discovered) */
  GW_POOL_MAX = 32,    /* idle keep-alive upstream calls kept per neuron */
};

typedef struct gw_device {
  int index;
  char name[96];
  uint64_t vram_total_bytes, vram_free_bytes;
  int cc_major, cc_minor;
  bool poisoned;
} gw_device;

typedef struct gw_loaded {
  char id[GW_ID_MAX]; /* neuron-side id */
  char state[16];     /* loading / ready / unloading / failed */
  uint64_t bytes;     /* memory held */
  int devices[GW_MAX_DEVICES];
  int n_devices;
} gw_loaded;

typedef struct gw_available {
  char id[GW_ID_MAX];
  uint64_t est_bytes; /* estimated memory to load, 0 unknown */
} gw_available;

typedef struct gw_neuron {
  const cortex_neuron_entry *cfg;
  bool up; /* last poll succeeded */
  bool ever_polled;
  bool healthy;   /* /health said 200 */
  int poll_fails; /* consecutive */
  uint64_t next_poll_ns;
  int proxy_fails; /* consecutive upstream failures */
  uint64_t ejected_until_ns;
  gw_device devices[GW_MAX_DEVICES];
  int n_devices;
  uint64_t ram_total_bytes, ram_available_bytes, budget_bytes;
  gw_loaded loaded[GW_MAX_LOADED];
  int n_loaded;
  gw_available avail[GW_MAX_AVAILABLE];
  int n_avail;
  long in_flight;  /* cortex requests being proxied to it */
  bool swapping;   /* a load/unload is in progress on it */
  bool repacking;  /* defrag.c is unloading/reloading it: no new leases */
  unsigned cycles; /* load/evict cycles since the last repack, whole host (CPU, unknown device) */
  unsigned dev_cycles[GW_MAX_DEVICES]; /* the same per device index */
  /* idle upstream calls whose connection to this neuron stays open
   * (upstream.c); guarded by gateway.pool_mu */
  struct hx_http_call *idle_calls[GW_POOL_MAX];
  int n_idle_calls;
} gw_neuron;

/* Per public model: cortex-side bookkeeping. */
typedef struct gw_model {
  char id[GW_ID_MAX];            /* public id (profile id, or neuron id when no profile) */
  const models_profile *profile; /* NULL when discovered only */
  long in_flight, queued;
  bool loading;
  int loading_neuron;
  char last_error[256];
  uint64_t last_used_ns;
  unsigned load_generation; /* bumped at the end of every load attempt */
} gw_model;

typedef struct gw_metrics {
  hx_metrics *reg;
  hx_metric *requests, *prompt_tokens, *gen_tokens, *ttft, *itl, *e2e, *queue, *loads,
      *load_seconds, *evictions, *vram_used, *vram_total, *neuron_up, *neuron_transitions,
      *inflight, *defrags;
} gw_metrics;

typedef struct gateway {
  cortex_config *cfg;
  pthread_mutex_t mu;
  pthread_cond_t cond;     /* broadcast on any load end, swap end or poll */
  pthread_mutex_t pool_mu; /* guards every neuron's idle_calls (upstream.c) */
  bool upstream_pool_off;  /* HELEXA_CORTEX_UPSTREAM_POOL=0: no keep-alive reuse */
  gw_neuron *neurons;
  size_t n_neurons;
  gw_model models[GW_MAX_MODELS];
  size_t n_models;
  gw_metrics m;
  atomic_bool stopping;
  atomic_bool draining;
  atomic_long streams; /* requests being handled (max_streams) */
  pthread_t poller;
  bool poller_started;
  pthread_t defrag_thread; /* the repack in progress (defrag.c), at most one */
  bool defrag_started;     /* defrag_thread needs joining */
  atomic_bool defrag_busy; /* it is still running */
  hx_http_server *api, *metrics_srv;
} gateway;

/* poller.c */
hx_code gw_poller_start(gateway *gw, hx_err *err);
void gw_poller_stop(gateway *gw);
/* Polls one neuron now (any thread, without the lock held). */
void gw_poll_neuron(gateway *gw, size_t idx);

/* router.c */
/* Public model state whose neuron-side id is uid, or NULL. Must hold gw->mu. */
gw_model *gw_model_of_upstream(gateway *gw, const char *uid);
/* POST /models/unload to neuron ni (without the lock). */
hx_code gw_neuron_unload(gateway *gw, size_t ni, const char *uid, hx_err *err);
/* POST /models/load to neuron ni with the profile's settings (pr may be
 * NULL), onto device when ≥ 0, and wait until ready (without the lock). */
hx_code gw_neuron_load(gateway *gw, size_t ni, const models_profile *pr, const char *name,
                       const char *uid, int device, uint64_t deadline_ns, hx_err *err);

/* defrag.c */
/* Bit d set for each device index d (< 32) the loaded model holds. */
uint32_t gw_loaded_devmask(const gw_loaded *l);
/* Counts one load/evict cycle on the devices in devmask of neuron ni (the
 * whole host when devmask is 0 or the host has no devices). Must hold gw->mu. */
void gw_defrag_count(gateway *gw, size_t ni, uint32_t devmask);
/* Starts a repack when a device is due and its neuron idle (poller thread;
 * without the lock). */
void gw_defrag_maybe(gateway *gw);
/* Waits for a repack in progress (shutdown; after gw->stopping is set). */
void gw_defrag_stop(gateway *gw);
/* Neuron-side id of a public model: its profile path's file or directory
 * name without ".gguf", else the id itself. */
void gw_upstream_id(const char *id, const models_profile *pr, char *out, size_t cap);
bool gw_auth_check(gateway *gw, hx_http_req *req, bool anthropic, const char *model);
/* Finds or creates the model state for a public name (alias resolved).
 * Must hold gw->mu. NULL when unknown (no profile, no neuron serves it). */
gw_model *gw_model_lookup(gateway *gw, const char *name);

typedef struct gw_lease {
  size_t neuron;
  char upstream_id[GW_ID_MAX];
  char url_base[320]; /* "http://host:port" */
  gw_model *model;
  uint64_t queue_ns; /* time spent waiting for a replica */
} gw_lease;

/* keepalive(ud) is called about every second while the request waits for
 * a load; a non-zero return gives up (client gone). */
typedef int (*gw_keepalive_fn)(void *ud);

/* Picks the ready replica with the least in-flight work (skipping neurons in
 * exclude, a bitmask over indices < 64), loading the model first when no
 * replica exists (one load per model; other requests wait). On success the
 * lease counts as in flight until gw_release. HX_ENOTFOUND unknown model,
 * HX_ETOOLARGE nothing fits (507), HX_EBUSY no neuron up, HX_ETIMEOUT,
 * HX_ECANCELLED. */
hx_code gw_acquire(gateway *gw, const char *model, uint64_t exclude, gw_keepalive_fn ka, void *ud,
                   gw_lease *out, hx_err *err);
/* ok=false counts an upstream failure against the neuron (ejection). */
void gw_release(gateway *gw, gw_lease *l, bool upstream_ok);

/* Operator actions. neuron may be NULL (cortex chooses). */
hx_code gw_admin_load(gateway *gw, const char *model, const char *neuron, hx_err *err);
hx_code gw_admin_unload(gateway *gw, const char *model, hx_err *err);

/* admin.c */
hx_code gw_routes_admin(gateway *gw, hx_http_server *srv, hx_err *err);
hx_code gw_metrics_init(gateway *gw, hx_err *err);
/* Fleet snapshot as /status returns it; new reference. */
json_t *gw_status_json(gateway *gw);

/* upstream.c — keep-alive connections to neurons. Each hx_http_call owns a
 * libcurl easy+multi pair whose connection cache keeps the TCP connection
 * to the last host open; reusing a call for the same neuron reuses it. */
/* An idle call for neuron ni, or a new one (NULL on OOM). The caller owns it
 * until gw_upstream_put. */
struct hx_http_call *gw_upstream_take(gateway *gw, size_t ni);
/* Returns a call after a request to neuron ni. A cancelled call (sticky flag)
 * or one beyond GW_POOL_MAX is freed instead; NULL allowed. */
void gw_upstream_put(gateway *gw, size_t ni, struct hx_http_call *c);
/* Frees every idle call (shutdown, after the workers are gone). */
void gw_upstream_free_all(gateway *gw);

/* proxy.c */
hx_code gw_routes_api(gateway *gw, hx_http_server *srv, hx_err *err);
/* Error body in the dialect of the request (Anthropic when the path starts
 * with /v1/messages or it carries anthropic-version). */
void gw_respond_error(hx_http_req *req, bool anthropic, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
