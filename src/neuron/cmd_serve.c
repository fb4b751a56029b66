/* cmd_serve.c — `neuron serve [--config FILE] [--listen HOST:PORT]
 * [--models DIR] [--check]`: runs the daemon until SIGTERM / SIGINT, then
 * shuts down gracefully (stop accepting, drain or cancel in-flight requests
 * within limits.shutdown_deadline_ms, unload models) and exits 0. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "net/http_server.h"
#include "neuron/commands.h"
#include "neuron/config.h"
#include "neuron/daemon.h"

static int usage(void) {
  printf("usage: neuron serve [--config neuron.toml] [--listen HOST:PORT] "
         "[--models DIR]\n"
         "                    [--no-load-on-demand] [--check]\n");
  return 0;
}

/* Replaces a malloc'd string field of the config. */
static int set_str(char **field, const char *v) {
  char *s = strdup(v);
  if (!s)
    return -1;
  free(*field);
  *field = s;
  return 0;
}

int neuron_cmd_serve(int argc, char **argv) {
  const char *config = NULL, *listen = NULL, *models = NULL;
  int check = 0, no_lod = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
      config = argv[++i];
    else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      listen = argv[++i];
    else if (strcmp(argv[i], "--models") == 0 && i + 1 < argc)
      models = argv[++i];
    else if (strcmp(argv[i], "--no-load-on-demand") == 0)
      no_lod = 1;
    else if (strcmp(argv[i], "--check") == 0)
      check = 1;
    else if (strcmp(argv[i], "--help") == 0)
      return usage();
    else {
      fprintf(stderr, "neuron serve: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (check) {
    if (!config) {
      fprintf(stderr, "neuron serve: --check needs --config FILE\n");
      return 2;
    }
    return neuron_config_check_cli(config);
  }
  neuron_config *cfg = NULL;
  hx_err err = {0};
  hx_code rc = config ? neuron_config_load(config, &cfg, &err) : neuron_config_defaults(&cfg, &err);
  if (rc != HX_OK) {
    fprintf(stderr, "neuron serve: %s\n", err.msg);
    return 1;
  }
  if (listen) {
    char host[256];
    uint16_t port;
    if (hx_http_listen_parse(listen, host, sizeof host, &port, &err) != HX_OK) {
      fprintf(stderr, "neuron serve: --listen: %s\n", err.msg);
      neuron_config_free(cfg);
      return 2;
    }
    if (set_str(&cfg->listen, listen) || set_str(&cfg->listen_host, host)) {
      neuron_config_free(cfg);
      return 1;
    }
    cfg->listen_port = port;
  }
  if (models) {
    char **dirs = realloc(cfg->model_dirs, (cfg->n_model_dirs + 1) * sizeof *dirs);
    if (!dirs) {
      neuron_config_free(cfg);
      return 1;
    }
    cfg->model_dirs = dirs;
    /* a --models directory comes first */
    memmove(dirs + 1, dirs, cfg->n_model_dirs * sizeof *dirs);
    dirs[0] = strdup(models);
    cfg->n_model_dirs++;
    if (!dirs[0]) {
      neuron_config_free(cfg);
      return 1;
    }
  }
  if (no_lod)
    cfg->engine.load_on_demand = false;

  /* Signals are taken synchronously by this thread; every thread the
     daemon starts inherits the blocked mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  neuron_daemon *d = NULL;
  rc = neuron_daemon_start(cfg, &d, &err);
  if (rc != HX_OK) {
    fprintf(stderr, "neuron serve: %s\n", err.msg);
    neuron_config_free(cfg);
    return 1;
  }
  /* Tests read the bound port from this line (--listen 127.0.0.1:0). */
  printf("neuron: listening on %s:%u\n", cfg->listen_host, neuron_daemon_port(d));
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  HX_INFO("neuron: %s received, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  neuron_daemon_stop(d);
  neuron_config_free(cfg);
  HX_INFO("neuron: stopped");
  return 0;
}
