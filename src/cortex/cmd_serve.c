/* cmd_serve.c — `cortex serve [--config FILE] [--check]`: loads the config,
 * polls the fleet, serves the API (listen) and /metrics (metrics_listen),
 * and drains gracefully on SIGTERM/SIGINT: /health turns 503, new requests
 * get 503, streams in flight get up to 20 s to finish, the rest end with an
 * error event. */
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "cortex/commands.h"
#include "cortex/config.h"
#include "cortex/gateway.h"
#include "net/http_client.h"

enum { SERVE_DRAIN_MS = 20000, SERVE_CANCEL_MS = 3000 };

/* Server-generated errors (404, 405, 413, 431, 503) in a shape that both
 * SDKs understand: Anthropic's envelope plus OpenAI's fields inside. */
static void serve_error_body(void *ctx, int status, const char *type, const char *code,
                             const char *message, hx_buf *out) {
  (void)ctx;
  (void)type;
  json_t *j = json_pack("{s:s, s:{s:s, s:s, s:s, s:n}}", "type", "error", "error", "type",
                        status == 413   ? "request_too_large"
                        : status == 404 ? "not_found_error"
                        : status == 503 ? "overloaded_error"
                                        : "invalid_request_error",
                        "message", message ? message : "", "code", code ? code : "", "param");
  hx_json_dump(j, out);
  json_decref(j);
}

static hx_http_server *serve_server(const char *host, uint16_t port, const cortex_config *cfg,
                                    int threads) {
  hx_http_server_config sc = {
      .host = host,
      .port = port,
      .threads = threads,
      .max_connections = cfg->gateway.max_streams * 4 + 64,
      .body_max_bytes = cfg->gateway.max_body_bytes,
      .header_max_bytes = cfg->gateway.max_header_bytes,
      .request_read_ms = cfg->gateway.header_timeout_ms,
      .idle_timeout_s = 120,
      .log_requests = true,
      .error_fn = serve_error_body,
  };
  return hx_http_server_create(&sc);
}

/* Raises the soft open-files limit to what the API listener may hold (its
 * connection cap, plus upstream connections, pollers and files), up to the
 * hard limit: a 1024 default would refuse clients long before the cap. */
static void serve_raise_nofile(const cortex_config *cfg) {
  rlim_t need = (rlim_t)cfg->gateway.max_streams * 4 + 64 /* api */ +
                (rlim_t)cfg->gateway.max_streams + (rlim_t)cfg->n_neurons * (GW_POOL_MAX + 8) + 256;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
    return;
  rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
  rlim_t had = rl.rlim_cur;
  rl.rlim_cur = want;
  if (want > had && setrlimit(RLIMIT_NOFILE, &rl) != 0)
    want = had;
  if (want < need)
    HX_WARN("open-files limit is %llu (hard limit); max_streams = %u may need %llu",
            (unsigned long long)want, cfg->gateway.max_streams, (unsigned long long)need);
}

static int serve_run(cortex_config *cfg) {
  serve_raise_nofile(cfg);
  gateway *gw = calloc(1, sizeof *gw);
  if (!gw)
    return 1;
  gw->cfg = cfg;
  pthread_mutex_init(&gw->mu, NULL);
  pthread_cond_init(&gw->cond, NULL);
  pthread_mutex_init(&gw->pool_mu, NULL);
  const char *pool_env = getenv("HELEXA_CORTEX_UPSTREAM_POOL");
  gw->upstream_pool_off = pool_env && strcmp(pool_env, "0") == 0;
  gw->n_neurons = cfg->n_neurons;
  gw->neurons = calloc(cfg->n_neurons ? cfg->n_neurons : 1, sizeof *gw->neurons);
  for (size_t i = 0; i < cfg->n_neurons; i++)
    gw->neurons[i].cfg = &cfg->neurons[i];
  hx_err err = {0};
  int exit_code = 1;

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* every thread inherits this */
  signal(SIGPIPE, SIG_IGN);
  hx_http_client_global_init();

  hx_code rc = gw_metrics_init(gw, &err);
  if (rc == HX_OK) {
    gw->api = serve_server(cfg->gateway.listen_host, cfg->gateway.listen_port, cfg, 4);
    gw->metrics_srv = serve_server(cfg->gateway.metrics_host, cfg->gateway.metrics_port, cfg, 2);
    if (!gw->api || !gw->metrics_srv)
      rc = hx_err_set(&err, HX_ENOMEM, "out of memory creating servers");
  }
  if (rc == HX_OK)
    rc = gw_routes_api(gw, gw->api, &err);
  if (rc == HX_OK)
    rc = gw_routes_admin(gw, gw->api, &err);
  if (rc == HX_OK)
    rc = gw_poller_start(gw, &err);
  if (rc == HX_OK)
    rc = hx_http_server_start(gw->api, &err);
  if (rc == HX_OK)
    rc = hx_http_server_start(gw->metrics_srv, &err);
  if (rc != HX_OK) {
    fprintf(stderr, "cortex serve: %s\n", err.msg);
  } else {
    HX_INFO("cortex %s serving on %s:%u (metrics on %s:%u/metrics), %zu neuron(s), %zu "
            "profile(s), eviction %s",
            HELEXA_VERSION, cfg->gateway.listen_host, hx_http_server_port(gw->api),
            cfg->gateway.metrics_host, hx_http_server_port(gw->metrics_srv), cfg->n_neurons,
            cfg->models->n_models, cortex_evict_strategy_name(cfg->eviction.strategy));
    int sig = 0;
    sigwait(&sigs, &sig);
    HX_INFO("signal %d: draining (up to %d ms for requests in flight)", sig, SERVE_DRAIN_MS);
    atomic_store(&gw->draining, true);
    unsigned cut = hx_http_server_shutdown(gw->api, SERVE_DRAIN_MS, SERVE_CANCEL_MS);
    HX_INFO("drained; %u request(s) had to be cancelled", cut);
    exit_code = 0;
  }
  atomic_store(&gw->stopping, true);
  pthread_mutex_lock(&gw->mu);
  pthread_cond_broadcast(&gw->cond);
  pthread_mutex_unlock(&gw->mu);
  hx_http_server_free(gw->api);
  hx_http_server_free(gw->metrics_srv);
  gw_poller_stop(gw);
  /* detached workers have all finished their requests (shutdown waited) */
  for (int i = 0; i < 100 && atomic_load(&gw->streams) > 0; i++)
    hx_time_sleep_ms(20);
  const long left = atomic_load(&gw->streams);
  if (left > 0) { /* a worker still runs: freeing what it uses would be a use-after-free */
    HX_WARN("%ld request worker(s) still running 2 s after the drain; exiting without freeing "
            "the gateway",
            left);
    return exit_code;
  }
  hx_metrics_free(gw->m.reg);
  gw_upstream_free_all(gw);
  free(gw->neurons);
  pthread_mutex_destroy(&gw->pool_mu);
  pthread_mutex_destroy(&gw->mu);
  pthread_cond_destroy(&gw->cond);
  free(gw);
  return exit_code;
}

int cortex_cmd_serve(int argc, char **argv) {
  const char *config = NULL;
  int check = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
      config = argv[++i];
    else if (strcmp(argv[i], "--check") == 0)
      check = 1;
    else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
      hx_log_level lv;
      if (hx_log_level_parse(argv[++i], &lv) != 0) {
        fprintf(stderr, "cortex serve: unknown log level \"%s\"\n", argv[i]);
        return 2;
      }
      hx_log_set_level(lv);
    } else if (strcmp(argv[i], "--help") == 0) {
      printf("usage: cortex serve [--config cortex.toml] [--check] [--log-level LEVEL]\n\n"
             "Runs the gateway: OpenAI + Anthropic APIs on [gateway] listen, Prometheus\n"
             "metrics on metrics_listen. Without --config, defaults and no neurons.\n"
             "--check validates the config files and exits.\n");
      return 0;
    } else {
      fprintf(stderr, "cortex serve: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (check) {
    if (!config) {
      fprintf(stderr, "cortex serve: --check needs --config FILE\n");
      return 2;
    }
    return cortex_config_check_cli(config);
  }
  cortex_config *cfg = NULL;
  hx_err err = {0};
  char *report = NULL;
  hx_code rc = config ? cortex_config_load_report(config, &cfg, &report, &err)
                      : cortex_config_defaults(&cfg, &err);
  if (rc != HX_OK) {
    fprintf(stderr, "%s\n", report ? report : err.msg);
    free(report);
    return 1;
  }
  free(report);
  int code = serve_run(cfg);
  cortex_config_free(cfg);
  return code;
}
