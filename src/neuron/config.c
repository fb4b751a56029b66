/* config.c — neuron.toml loader: defaults, then the file's values, each
 * validated; every problem is collected in a toml_diag and reported as
 * `FILE:LINE: key "x" ...`. Relative model_dirs are resolved against the
 * directory of the config file. */
#include "neuron/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/toml.h"

enum { NAME_MAX_BYTES = 64, PATH_MAX_BYTES = 4096 };

static const char *const kv_types[] = {"f16", "f32", "q8_0", NULL};

void neuron_config_free(neuron_config *c) {
  if (!c)
    return;
  free(c->path);
  free(c->listen);
  free(c->listen_host);
  free(c->name);
  toml_strings_free(c->model_dirs, c->n_model_dirs);
  free(c->devices);
  free(c->memory.device_budgets);
  free(c->engine.kv_type);
  for (size_t i = 0; i < c->n_preload; i++)
    free(c->preload[i].model);
  free(c->preload);
  free(c);
}

hx_code neuron_config_defaults(neuron_config **out, hx_err *err) {
  *out = NULL;
  neuron_config *c = calloc(1, sizeof *c);
  if (!c)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  char host[256] = "neuron";
  if (gethostname(host, sizeof host - 1) != 0 || !host[0])
    snprintf(host, sizeof host, "neuron");
  host[NAME_MAX_BYTES] = '\0';
  c->listen = strdup("0.0.0.0:13131");
  c->listen_host = strdup("0.0.0.0");
  c->listen_port = 13131;
  c->name = strdup(host);
  c->model_dirs = calloc(1, sizeof *c->model_dirs);
  if (c->model_dirs) {
    c->model_dirs[0] = strdup("models");
    c->n_model_dirs = c->model_dirs[0] ? 1 : 0;
  }
  c->devices_mode = NEURON_DEVICES_ALL;
  c->memory.device_reserve_mb = 512;
  c->limits.max_context = 0;
  c->limits.max_concurrent_per_model = 8;
  c->limits.queue_length = 64;
  c->limits.max_request_bytes = 8u << 20;
  c->limits.header_timeout_ms = 10000;
  c->limits.unload_grace_ms = 30000;
  c->limits.shutdown_deadline_ms = 30000;
  c->engine.threads = 0;
  c->engine.kv_type = strdup("f16");
  c->engine.prefix_cache_mb = 1024;
  c->engine.load_on_demand = true;
  if (!c->listen || !c->listen_host || !c->name || !c->n_model_dirs || !c->engine.kv_type) {
    neuron_config_free(c);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  *out = c;
  return HX_OK;
}

static bool name_ok(const char *s) {
  if (!*s)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_' || *s == '.'))
      return false;
  return true;
}

/* dir of path joined with rel (rel returned as a copy when absolute). */
static char *path_join_dir(const char *path, const char *rel) {
  if (rel[0] == '/' || !strchr(path, '/'))
    return strdup(rel);
  size_t dl = (size_t)(strrchr(path, '/') - path);
  size_t n = dl + 1 + strlen(rel) + 1;
  char *o = malloc(n);
  if (o)
    snprintf(o, n, "%.*s/%s", (int)dl, path, rel);
  return o;
}

static void get_u32(const toml_value *t, const char *key, const char *prefix, int64_t lo,
                    int64_t hi, uint32_t *out, toml_diag *d) {
  int64_t v;
  if (toml_get_int(t, key, prefix, false, lo, hi, &v, d))
    *out = (uint32_t)v;
}

static void get_u64(const toml_value *t, const char *key, const char *prefix, int64_t lo,
                    int64_t hi, uint64_t *out, toml_diag *d) {
  int64_t v;
  if (toml_get_int(t, key, prefix, false, lo, hi, &v, d))
    *out = (uint64_t)v;
}

static void load_top(neuron_config *c, const toml_value *root, toml_diag *d) {
  static const char *const keys[] = {"listen", "name",   "model_dirs", "devices", "memory",
                                     "limits", "engine", "preload",    NULL};
  toml_check_keys(root, "", keys, d);
  char *listen = NULL;
  if (toml_get_string(root, "listen", "", false, 300, &listen, d)) {
    char *host;
    uint16_t port;
    if (toml_hostport_parse(listen, &host, &port)) {
      free(c->listen);
      free(c->listen_host);
      c->listen = listen;
      c->listen_host = host;
      c->listen_port = port;
      listen = NULL;
    } else {
      toml_diag_add(d, toml_table_get(root, "listen")->line,
                    "key \"listen\" must be a listen address host:port (e.g. \"0.0.0.0:13131\"), "
                    "not \"%s\"",
                    listen);
    }
  }
  free(listen);
  char *name = NULL;
  if (toml_get_string(root, "name", "", false, NAME_MAX_BYTES, &name, d)) {
    if (name_ok(name)) {
      free(c->name);
      c->name = name;
      name = NULL;
    } else {
      toml_diag_add(d, toml_table_get(root, "name")->line,
                    "key \"name\" must be 1..%d characters of A-Z a-z 0-9 . _ -", NAME_MAX_BYTES);
    }
  }
  free(name);
  char **dirs = NULL;
  size_t n_dirs = 0;
  if (toml_get_string_array(root, "model_dirs", "", false, NEURON_CONFIG_MAX_MODEL_DIRS,
                            PATH_MAX_BYTES, &dirs, &n_dirs, d)) {
    for (size_t i = 0; i < n_dirs; i++) {
      char *abs = path_join_dir(c->path, dirs[i]);
      if (abs) {
        free(dirs[i]);
        dirs[i] = abs;
      }
    }
    toml_strings_free(c->model_dirs, c->n_model_dirs);
    c->model_dirs = dirs;
    c->n_model_dirs = n_dirs;
  }
  const toml_value *dv = toml_table_get(root, "devices");
  if (dv && dv->type == TOML_STRING) {
    if (strcmp(dv->u.str.ptr, "all") == 0)
      c->devices_mode = NEURON_DEVICES_ALL;
    else if (strcmp(dv->u.str.ptr, "cpu") == 0)
      c->devices_mode = NEURON_DEVICES_CPU;
    else
      toml_diag_add(d, dv->line,
                    "key \"devices\" must be \"all\", \"cpu\" or an array of CUDA device "
                    "indices, not \"%.40s\"",
                    dv->u.str.ptr);
  } else if (dv && dv->type == TOML_ARRAY) {
    size_t n = toml_array_len(dv);
    if (n == 0 || n > NEURON_CONFIG_MAX_DEVICES) {
      toml_diag_add(d, dv->line, "key \"devices\" must list 1..%d device indices",
                    NEURON_CONFIG_MAX_DEVICES);
    } else {
      int *idx = calloc(n, sizeof *idx);
      bool ok = idx != NULL;
      for (size_t i = 0; i < n && idx; i++) {
        const toml_value *it = toml_array_at(dv, i);
        if (it->type != TOML_INTEGER || it->u.integer < 0 ||
            it->u.integer >= NEURON_CONFIG_MAX_DEVICES) {
          toml_diag_add(d, it->line, "key \"devices\" item %zu must be a CUDA index 0..%d", i,
                        NEURON_CONFIG_MAX_DEVICES - 1);
          ok = false;
          continue;
        }
        idx[i] = (int)it->u.integer;
        for (size_t j = 0; j < i; j++)
          if (idx[j] == idx[i]) {
            toml_diag_add(d, it->line, "key \"devices\" lists device %d twice", idx[i]);
            ok = false;
          }
      }
      if (ok) {
        c->devices_mode = NEURON_DEVICES_LIST;
        c->devices = idx;
        c->n_devices = n;
      } else {
        free(idx);
      }
    }
  } else if (dv) {
    toml_diag_add(d, dv->line,
                  "key \"devices\" must be \"all\", \"cpu\" or an array of CUDA device indices, "
                  "not %s",
                  toml_type_name(dv->type));
  }
}

static void load_memory(neuron_config *c, const toml_value *root, toml_diag *d) {
  const toml_value *m = toml_get_table(root, "memory", "", false, d);
  if (!m)
    return;
  static const char *const keys[] = {"cpu_budget_mb", "device_budget_mb", "device_reserve_mb",
                                     NULL};
  toml_check_keys(m, "memory.", keys, d);
  get_u64(m, "cpu_budget_mb", "memory.", 0, (int64_t)1 << 32, &c->memory.cpu_budget_mb, d);
  get_u64(m, "device_reserve_mb", "memory.", 0, (int64_t)1 << 24, &c->memory.device_reserve_mb, d);
  const toml_value *b = toml_get_table(m, "device_budget_mb", "memory.", false, d);
  size_t n = toml_table_len(b);
  if (!b || n == 0)
    return;
  if (n > NEURON_CONFIG_MAX_DEVICES) {
    toml_diag_add(d, b->line, "key \"memory.device_budget_mb\" has more than %d entries",
                  NEURON_CONFIG_MAX_DEVICES);
    return;
  }
  neuron_device_budget *v = calloc(n, sizeof *v);
  if (!v)
    return;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const toml_kv *kv = &b->u.tab.items[i];
    char *end;
    long dev = strtol(kv->key, &end, 10);
    if (kv->key_len == 0 || kv->key_len > 2 || *end || dev < 0 ||
        dev >= NEURON_CONFIG_MAX_DEVICES || kv->key[0] == '-' || kv->key[0] == '+') {
      toml_diag_add(d, kv->value->line,
                    "key \"memory.device_budget_mb.%.20s\" must be a CUDA index 0..%d", kv->key,
                    NEURON_CONFIG_MAX_DEVICES - 1);
      continue;
    }
    char prefix[48];
    snprintf(prefix, sizeof prefix, "memory.device_budget_mb.");
    int64_t mb;
    if (toml_get_int(b, kv->key, prefix, true, 1, (int64_t)1 << 24, &mb, d))
      v[k++] = (neuron_device_budget){(int)dev, (uint64_t)mb};
  }
  c->memory.device_budgets = v;
  c->memory.n_device_budgets = k;
}

static void load_limits(neuron_config *c, const toml_value *root, toml_diag *d) {
  const toml_value *l = toml_get_table(root, "limits", "", false, d);
  if (!l)
    return;
  static const char *const keys[] = {
      "max_context",       "max_concurrent_per_model", "queue_length",         "max_request_bytes",
      "header_timeout_ms", "unload_grace_ms",          "shutdown_deadline_ms", NULL};
  toml_check_keys(l, "limits.", keys, d);
  get_u32(l, "max_context", "limits.", 0, 1 << 21, &c->limits.max_context, d);
  get_u32(l, "max_concurrent_per_model", "limits.", 1, 1024, &c->limits.max_concurrent_per_model,
          d);
  get_u32(l, "queue_length", "limits.", 0, 100000, &c->limits.queue_length, d);
  get_u64(l, "max_request_bytes", "limits.", 1024, (int64_t)1 << 30, &c->limits.max_request_bytes,
          d);
  get_u32(l, "header_timeout_ms", "limits.", 100, 600000, &c->limits.header_timeout_ms, d);
  get_u32(l, "unload_grace_ms", "limits.", 0, 3600000, &c->limits.unload_grace_ms, d);
  get_u32(l, "shutdown_deadline_ms", "limits.", 0, 3600000, &c->limits.shutdown_deadline_ms, d);
}

static void load_engine(neuron_config *c, const toml_value *root, toml_diag *d) {
  const toml_value *e = toml_get_table(root, "engine", "", false, d);
  if (!e)
    return;
  static const char *const keys[] = {"threads", "kv_type", "prefix_cache_mb", "load_on_demand",
                                     NULL};
  toml_check_keys(e, "engine.", keys, d);
  get_u32(e, "threads", "engine.", 0, 1024, &c->engine.threads, d);
  int kv;
  if (toml_get_enum(e, "kv_type", "engine.", false, kv_types, &kv, d)) {
    char *s = strdup(kv_types[kv]);
    if (s) {
      free(c->engine.kv_type);
      c->engine.kv_type = s;
    }
  }
  get_u64(e, "prefix_cache_mb", "engine.", 0, (int64_t)1 << 24, &c->engine.prefix_cache_mb, d);
  toml_get_bool(e, "load_on_demand", "engine.", false, &c->engine.load_on_demand, d);
}

static void load_preload(neuron_config *c, const toml_value *root, toml_diag *d) {
  const toml_value *a = toml_get_array(root, "preload", "", false, d);
  size_t n = toml_array_len(a);
  if (!a || n == 0)
    return;
  if (n > NEURON_CONFIG_MAX_PRELOAD) {
    toml_diag_add(d, a->line, "key \"preload\" has more than %d entries",
                  NEURON_CONFIG_MAX_PRELOAD);
    return;
  }
  c->preload = calloc(n, sizeof *c->preload);
  if (!c->preload)
    return;
  for (size_t i = 0; i < n; i++) {
    const toml_value *t = toml_array_at(a, i);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "preload[%zu].", i);
    if (t->type != TOML_TABLE) {
      toml_diag_add(d, t->line, "key \"preload\" must be an array of tables ([[preload]])");
      continue;
    }
    static const char *const keys[] = {"model", NULL};
    toml_check_keys(t, prefix, keys, d);
    char *model = NULL;
    if (toml_get_string(t, "model", prefix, true, 256, &model, d)) {
      if (!model[0]) {
        toml_diag_add(d, t->line, "key \"%smodel\" must not be empty", prefix);
        free(model);
        continue;
      }
      c->preload[c->n_preload++] = (neuron_preload){model, t->line};
    }
  }
}

/* Full load with every error in d. */
static hx_code load_diag(const char *path, neuron_config **out, toml_diag *d, hx_err *err) {
  *out = NULL;
  toml_value *root;
  hx_code rc = toml_parse_file(path, NULL, &root, err);
  if (rc != HX_OK)
    return rc;
  neuron_config *c;
  rc = neuron_config_defaults(&c, err);
  if (rc != HX_OK) {
    toml_free(root);
    return rc;
  }
  c->path = strdup(path);
  if (!c->path) {
    toml_free(root);
    neuron_config_free(c);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  load_top(c, root, d);
  load_memory(c, root, d);
  load_limits(c, root, d);
  load_engine(c, root, d);
  load_preload(c, root, d);
  toml_free(root);
  if (d->n_errors) {
    neuron_config_free(c);
    return toml_diag_to_err(d, err);
  }
  *out = c;
  return HX_OK;
}

hx_code neuron_config_load_report(const char *path, neuron_config **out, char **report,
                                  hx_err *err) {
  toml_diag d;
  toml_diag_init(&d, path);
  if (report)
    *report = NULL;
  hx_code rc = load_diag(path, out, &d, err);
  if (report && d.n_errors)
    *report = hx_buf_detach(&d.text);
  toml_diag_free(&d);
  return rc;
}

hx_code neuron_config_load(const char *path, neuron_config **out, hx_err *err) {
  return neuron_config_load_report(path, out, NULL, err);
}

int neuron_config_check_cli(const char *path) {
  toml_diag d;
  toml_diag_init(&d, path);
  neuron_config *c;
  hx_err err;
  hx_err_clear(&err);
  hx_code rc = load_diag(path, &c, &d, &err);
  if (rc != HX_OK) {
    if (d.n_errors) {
      fputs(d.text.data ? d.text.data : "", stderr);
      if (d.n_errors > 1)
        fprintf(stderr, "%s: %zu errors\n", path, d.n_errors);
    } else {
      fprintf(stderr, "%s\n", err.msg);
    }
    toml_diag_free(&d);
    return 1;
  }
  toml_diag_free(&d);
  printf("%s: OK\n", path);
  printf("  name            %s\n", c->name);
  printf("  listen          %s\n", c->listen);
  printf("  model_dirs     ");
  for (size_t i = 0; i < c->n_model_dirs; i++)
    printf(" %s", c->model_dirs[i]);
  printf("\n  devices        ");
  if (c->devices_mode == NEURON_DEVICES_ALL)
    printf(" all");
  else if (c->devices_mode == NEURON_DEVICES_CPU)
    printf(" cpu");
  for (size_t i = 0; i < c->n_devices; i++)
    printf(" %d", c->devices[i]);
  printf("\n  memory          cpu_budget_mb=%llu device_reserve_mb=%llu",
         (unsigned long long)c->memory.cpu_budget_mb,
         (unsigned long long)c->memory.device_reserve_mb);
  for (size_t i = 0; i < c->memory.n_device_budgets; i++)
    printf(" device%d=%lluMB", c->memory.device_budgets[i].device,
           (unsigned long long)c->memory.device_budgets[i].budget_mb);
  printf("\n  limits          max_context=%u max_concurrent_per_model=%u queue_length=%u\n"
         "                  max_request_bytes=%llu header_timeout_ms=%u unload_grace_ms=%u "
         "shutdown_deadline_ms=%u\n",
         c->limits.max_context, c->limits.max_concurrent_per_model, c->limits.queue_length,
         (unsigned long long)c->limits.max_request_bytes, c->limits.header_timeout_ms,
         c->limits.unload_grace_ms, c->limits.shutdown_deadline_ms);
  printf("  engine          threads=%u kv_type=%s prefix_cache_mb=%llu load_on_demand=%s\n",
         c->engine.threads, c->engine.kv_type, (unsigned long long)c->engine.prefix_cache_mb,
         c->engine.load_on_demand ? "true" : "false");
  printf("  preload        ");
  if (!c->n_preload)
    printf(" (none)");
  for (size_t i = 0; i < c->n_preload; i++)
    printf(" %s", c->preload[i].model);
  printf("\n");
  neuron_config_free(c);
  return 0;
}
