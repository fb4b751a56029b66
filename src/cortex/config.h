/* config.h — cortex.toml (the gateway) and models.toml (placement profiles),
 * as plain data.
 *
 * Loaders validate types, ranges, unique names, endpoints ("http://host:port")
 * and listen addresses ("host:port"), strategy names, and reject unknown keys;
 * every error is collected and reported as `FILE:LINE: key "x" ...`.
 * cortex_config_load also loads the models.toml that [gateway] models_file
 * names (relative to cortex.toml's directory). Every key, its default and
 * meaning: docs/config.md. */
#ifndef CORTEX_CONFIG_H
#define CORTEX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

enum {
  CORTEX_CONFIG_MAX_NEURONS = 1024,
  CORTEX_CONFIG_MAX_KEYS = 1024,   /* API keys */
  CORTEX_CONFIG_MAX_MODELS = 4096, /* profiles in models.toml */
  CORTEX_CONFIG_MAX_LIST = 256,    /* aliases, neurons, models per key */
};

/* ---- models.toml ------------------------------------------------------- */

/* Sampling defaults of a profile; a field is applied only when its has_ flag
 * is set (a request's own value always wins). */
typedef struct models_sampling {
  bool has_temperature, has_top_p, has_top_k, has_min_p, has_repetition_penalty,
      has_presence_penalty, has_frequency_penalty, has_max_tokens;
  double temperature;        /* 0..2 */
  double top_p;              /* (0, 1] */
  int32_t top_k;             /* 0 (off) .. 1000000 */
  double min_p;              /* 0..1 */
  double repetition_penalty; /* (0, 10] */
  double presence_penalty;   /* -2..2 */
  double frequency_penalty;  /* -2..2 */
  uint32_t max_tokens;       /* ≥ 1 */
} models_sampling;

typedef struct models_profile {
  char *id;       /* public model id (required, unique across ids and aliases) */
  char **aliases; /* other names the model answers to */
  size_t n_aliases;
  char *path;           /* file or directory on the neuron hosts; NULL = resolve id there */
  char *quant;          /* NULL = as stored; or "Q8_0", "Q6_K", "Q4_K", "Q4_K_M" (in-situ) */
  uint32_t context;     /* context length, tokens; 0 = the model's own */
  uint64_t vram_mb;     /* VRAM need, MiB; 0 = estimate from the file */
  uint32_t min_devices; /* ≥ 1, default 1 */
  uint32_t min_compute_major, min_compute_minor; /* "8.6" → 8, 6; 0.0 = any */
  uint32_t tensor_parallel;                      /* devices to split across, ≥ 1, default 1 */
  bool pinned;                                   /* never evicted, default false */
  int32_t priority; /* higher survives eviction longer ("priority" strategy), default 0 */
  char **neurons;   /* names of neurons allowed to host it; empty = any */
  size_t n_neurons;
  models_sampling sampling;
  bool has_thinking;
  bool thinking; /* default for Qwen3 thinking mode when has_thinking */
  int line;      /* line of the [[models]] header */
} models_profile;

typedef struct models_config {
  char *path; /* file loaded, or NULL when empty */
  models_profile *models;
  size_t n_models;
} models_config;

/* Loads and validates a models.toml. Same error contract as
 * cortex_config_load. */
hx_code models_config_load(const char *path, models_config **out, hx_err *err);
/* An empty profile set (no file). */
hx_code models_config_defaults(models_config **out, hx_err *err);
void models_config_free(models_config *mc);
/* Profile whose id or alias is name, or NULL. */
const models_profile *models_config_find(const models_config *mc, const char *name);

/* ---- cortex.toml ------------------------------------------------------- */

typedef enum cortex_evict_strategy {
  CORTEX_EVICT_LRU = 0, /* least recently used first */
  CORTEX_EVICT_PRIORITY /* lowest profile priority first, then LRU */
} cortex_evict_strategy;

typedef struct cortex_neuron_entry {
  char *name;                /* unique, non-empty */
  char *endpoint;            /* "http://host:port" as written */
  char *host;                /* parsed from endpoint */
  uint16_t port;             /* parsed from endpoint */
  uint32_t poll_interval_ms; /* default 2000 */
  uint32_t timeout_ms;       /* per poll/proxy connect, default 5000 */
  int line;                  /* line of the [[neurons]] header */
} cortex_neuron_entry;

typedef struct cortex_api_key {
  char *key;     /* the secret (from `key`, or from the env var `key_env`) */
  char *key_env; /* name of the env var it came from, or NULL */
  char **models; /* model ids/aliases it may use; empty = all */
  size_t n_models;
  int line;
} cortex_api_key;

typedef struct cortex_config {
  char *path; /* file loaded, or NULL for defaults */
  struct {
    char *listen; /* "host:port", default "0.0.0.0:31313" */
    char *listen_host;
    uint16_t listen_port;
    char *metrics_listen; /* "host:port", default "0.0.0.0:31314" */
    char *metrics_host;
    uint16_t metrics_port;
    char *models_file;           /* resolved path of models.toml, or NULL (no profiles) */
    uint64_t max_body_bytes;     /* request body limit (413), default 16 MiB */
    uint32_t max_header_bytes;   /* request header limit (431), default 32 KiB */
    uint32_t header_timeout_ms;  /* to read headers (slow clients), default 10000 */
    uint32_t max_streams;        /* concurrent requests, default 256 */
    uint32_t request_timeout_ms; /* whole request incl. load wait; 0 = none; default 600000 */
  } gateway;
  struct {
    cortex_evict_strategy strategy; /* default CORTEX_EVICT_LRU */
    uint32_t
        defrag_after_cycles; /* repack a device after N load/evict cycles; 0 = never; default 50 */
  } eviction;
  cortex_neuron_entry *neurons;
  size_t n_neurons;
  cortex_api_key *keys; /* empty = no auth */
  size_t n_keys;
  models_config *models; /* never NULL after load/defaults (possibly empty) */
} cortex_config;

/* A config with every default and no neurons, no keys, no profiles. */
hx_code cortex_config_defaults(cortex_config **out, hx_err *err);

/* Loads and validates path and the models.toml it names. On success *out
 * owns a new config. On failure *out is NULL and err's message holds every
 * error ("FILE:LINE: ..." lines, truncated to fit hx_err); HX_EINVAL for
 * invalid content, HX_EIO when a file cannot be read. */
hx_code cortex_config_load(const char *path, cortex_config **out, hx_err *err);

/* As cortex_config_load, and on content errors *report (when report is
 * non-NULL) receives every error line of both files, untruncated (malloc'd,
 * caller frees; NULL when there are none). */
hx_code cortex_config_load_report(const char *path, cortex_config **out, char **report,
                                  hx_err *err);

void cortex_config_free(cortex_config *cfg);

/* Name of a strategy as written in cortex.toml ("lru", "priority"). */
const char *cortex_evict_strategy_name(cortex_evict_strategy s);

/* Loads and validates FILE (and the models.toml it refers to), prints a
 * one-screen summary and returns 0, or prints every error as
 * "FILE:LINE: ..." to stderr and returns 1. */
int cortex_config_check_cli(const char *path);

#endif
