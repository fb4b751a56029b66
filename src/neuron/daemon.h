/* daemon.h — `neuron serve`: the per-host daemon.
 *
 * Owns the HTTP server (net/http_server.h), the hardware inventory, the model
 * catalogue (model directories), one worker thread per device (the CPU
 * backend has its own), the loaded models and the Prometheus registry. HTTP
 * threads validate requests and admit them; every touch of model state
 * (load, generate, tokenize, unload) runs as a job on the model's device
 * worker. The HTTP API is documented in docs/api-neuron.md. */
#ifndef NEURON_DAEMON_H
#define NEURON_DAEMON_H

#include <stdint.h>

#include "base/status.h"
#include "neuron/config.h"

typedef struct neuron_daemon neuron_daemon;

/* Discovers hardware, scans model directories, starts workers and the HTTP
 * server, and queues the config's preloads. cfg must outlive the daemon. */
hx_code neuron_daemon_start(const neuron_config *cfg, neuron_daemon **out, hx_err *err);
uint16_t neuron_daemon_port(const neuron_daemon *d);
/* Graceful stop: no new connections; requests in flight get up to
 * limits.shutdown_deadline_ms, then are cancelled; models are unloaded on
 * their workers; everything is freed. d may be NULL. */
void neuron_daemon_stop(neuron_daemon *d);

#endif
