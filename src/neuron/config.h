/* config.h — neuron.toml: the per-host daemon's settings, as plain data.
 *
 * neuron_config_load reads and validates a file (unknown keys, wrong types,
 * out-of-range values and malformed addresses are errors, each reported as
 * `FILE:LINE: key "x" ...`; every error is collected, not just the first).
 * neuron_config_defaults gives the same struct for `neuron serve` without a
 * file. Every key, its default and meaning: docs/config.md. */
#ifndef NEURON_CONFIG_H
#define NEURON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

enum {
  NEURON_CONFIG_MAX_DEVICES = 64,    /* entries in devices / device budgets */
  NEURON_CONFIG_MAX_MODEL_DIRS = 64, /* entries in model_dirs */
  NEURON_CONFIG_MAX_PRELOAD = 64,    /* [[preload]] entries */
};

typedef enum neuron_devices_mode {
  NEURON_DEVICES_ALL = 0, /* devices = "all": every CUDA device found (CPU if none) */
  NEURON_DEVICES_LIST,    /* devices = [0, 2]: these CUDA indices */
  NEURON_DEVICES_CPU,     /* devices = "cpu": no accelerator */
} neuron_devices_mode;

typedef struct neuron_device_budget {
  int device;         /* CUDA index 0..NEURON_CONFIG_MAX_DEVICES-1 */
  uint64_t budget_mb; /* VRAM the neuron may use on it, MiB (≥ 1) */
} neuron_device_budget;

typedef struct neuron_preload {
  char *model; /* model id or file/dir name under model_dirs (non-empty) */
  int line;    /* where it was declared in the file (0 without a file) */
} neuron_preload;

typedef struct neuron_config {
  char *path; /* file loaded, or NULL for defaults */

  char *listen;         /* "host:port", default "0.0.0.0:13131" */
  char *listen_host;    /* parsed host part of listen */
  uint16_t listen_port; /* parsed port of listen */
  char *name;           /* this neuron's name; default: the host name */

  char **model_dirs; /* directories searched for models; default {"models"} */
  size_t n_model_dirs;

  neuron_devices_mode devices_mode; /* default NEURON_DEVICES_ALL */
  int *devices;                     /* CUDA indices when _LIST (unique, sorted as written) */
  size_t n_devices;

  struct {
    uint64_t cpu_budget_mb;               /* host RAM for CPU-resident models; 0 = 80% of RAM */
    neuron_device_budget *device_budgets; /* per-device VRAM caps; absent = all free VRAM */
    size_t n_device_budgets;
    uint64_t device_reserve_mb; /* VRAM left free on each device, default 512 */
  } memory;

  struct {
    uint32_t max_context; /* cap on a model's context length, tokens; 0 = model's own */
    uint32_t max_concurrent_per_model; /* sequences decoded together per model, default 8 */
    uint32_t queue_length;             /* requests waiting per model before 503, default 64 */
    uint64_t max_request_bytes;        /* HTTP request body, default 8 MiB */
    uint32_t header_timeout_ms;        /* to read request headers, default 10000 */
    uint32_t unload_grace_ms;      /* in-flight requests may finish before unload, default 30000 */
    uint32_t shutdown_deadline_ms; /* SIGTERM drain deadline, default 30000 */
  } limits;

  struct {
    uint32_t threads;         /* CPU threads; 0 = all cores */
    char *kv_type;            /* "f16" (default), "f32" or "q8_0" */
    uint64_t prefix_cache_mb; /* KV prefix cache per model, default 1024; 0 = off */
    bool load_on_demand;      /* load a model on its first request, default true */
  } engine;

  neuron_preload *preload; /* models loaded at start, in order */
  size_t n_preload;
} neuron_config;

/* Fills *out with a new config holding every default (name = host name).
 * HX_ENOMEM on allocation failure. Free with neuron_config_free. */
hx_code neuron_config_defaults(neuron_config **out, hx_err *err);

/* Loads and validates path. On success *out owns a new config. On failure
 * *out is NULL and err's message holds every error ("FILE:LINE: ..." lines,
 * truncated to fit hx_err); HX_EINVAL for invalid content, HX_EIO when the
 * file cannot be read. */
hx_code neuron_config_load(const char *path, neuron_config **out, hx_err *err);

/* As neuron_config_load, and on content errors *report (when report is
 * non-NULL) receives every error line, untruncated (malloc'd, caller
 * frees; NULL when there are none). */
hx_code neuron_config_load_report(const char *path, neuron_config **out, char **report,
                                  hx_err *err);

/* Frees a config; cfg may be NULL. */
void neuron_config_free(neuron_config *cfg);

/* Loads and validates FILE, prints a one-screen summary to stdout and returns
 * 0, or prints every error as "FILE:LINE: ..." to stderr and returns 1. */
int neuron_config_check_cli(const char *path);

#endif
