/* upstream.c — a per-neuron pool of idle upstream calls, so that proxied
 * requests reuse keep-alive connections instead of opening one each.
 *
 * An hx_http_call keeps its libcurl connection cache between runs: a call
 * returned here after a request to neuron N holds an open connection to N,
 * and the next request to N that takes it skips connect + slow start. libcurl
 * checks a cached connection before reuse and reconnects when the peer has
 * closed it (neuron restarted or SIGKILLed); a request whose reused
 * connection dies before any response byte is retried by libcurl on a fresh
 * one. A cancelled call (client hang-up: the flag is sticky) is freed, never
 * pooled. The pool is bounded (GW_POOL_MAX per neuron); extra calls are
 * freed, which closes their connections. HELEXA_CORTEX_UPSTREAM_POOL=0 in
 * the environment turns pooling off (a connection per request; for
 * benchmarks that compare the two). */
#include "base/log.h"
#include "cortex/gateway.h"
#include "net/http_client.h"

hx_http_call *gw_upstream_take(gateway *gw, size_t ni) {
  HX_ASSERT(ni < gw->n_neurons);
  gw_neuron *n = &gw->neurons[ni];
  hx_http_call *c = NULL;
  pthread_mutex_lock(&gw->pool_mu);
  if (n->n_idle_calls > 0)
    c = n->idle_calls[--n->n_idle_calls];
  pthread_mutex_unlock(&gw->pool_mu);
  return c ? c : hx_http_call_new();
}

void gw_upstream_put(gateway *gw, size_t ni, hx_http_call *c) {
  if (!c)
    return;
  HX_ASSERT(ni < gw->n_neurons);
  if (hx_http_call_cancelled(c)) {
    hx_http_call_free(c);
    return;
  }
  gw_neuron *n = &gw->neurons[ni];
  pthread_mutex_lock(&gw->pool_mu);
  if (!gw->upstream_pool_off && n->n_idle_calls < GW_POOL_MAX) {
    n->idle_calls[n->n_idle_calls++] = c;
    c = NULL;
  }
  pthread_mutex_unlock(&gw->pool_mu);
  hx_http_call_free(c);
}

void gw_upstream_free_all(gateway *gw) {
  pthread_mutex_lock(&gw->pool_mu);
  for (size_t i = 0; i < gw->n_neurons; i++) {
    gw_neuron *n = &gw->neurons[i];
    while (n->n_idle_calls > 0)
      hx_http_call_free(n->idle_calls[--n->n_idle_calls]);
  }
  pthread_mutex_unlock(&gw->pool_mu);
}
