/* config.c — cortex.toml and models.toml loaders: defaults, then the file's
 * values, each validated; every problem is collected in a toml_diag per file
 * and reported as `FILE:LINE: key "x" ...`. Cross-file checks (API keys
 * scoped to unknown models, profiles restricted to unknown neurons) are
 * reported against the file that names the unknown thing. */
#include "cortex/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/toml.h"

enum { NAME_MAX_BYTES = 128, PATH_MAX_BYTES = 4096, KEY_MAX_BYTES = 512 };

static const char *const strategies[] = {"lru", "priority", NULL};
static const char *const quants[] = {"stored", "Q8_0", "Q6_K", "Q4_K", "Q4_K_M", NULL};

const char *cortex_evict_strategy_name(cortex_evict_strategy s) {
  return s == CORTEX_EVICT_PRIORITY ? "priority" : "lru";
}

static bool name_ok(const char *s) {
  if (!*s)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_' || *s == '.' || *s == ':' || *s == '/'))
      return false;
  return true;
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

static int line_of(const toml_value *t, const char *key) {
  const toml_value *v = toml_table_get(t, key);
  return v ? v->line : t ? t->line : 0;
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

/* ---- models.toml -------------------------------------------------------- */

static void profile_free(models_profile *m) {
  free(m->id);
  toml_strings_free(m->aliases, m->n_aliases);
  free(m->path);
  free(m->quant);
  toml_strings_free(m->neurons, m->n_neurons);
}

void models_config_free(models_config *mc) {
  if (!mc)
    return;
  for (size_t i = 0; i < mc->n_models; i++)
    profile_free(&mc->models[i]);
  free(mc->models);
  free(mc->path);
  free(mc);
}

hx_code models_config_defaults(models_config **out, hx_err *err) {
  *out = calloc(1, sizeof **out);
  return *out ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
}

const models_profile *models_config_find(const models_config *mc, const char *name) {
  if (!mc || !name)
    return NULL;
  for (size_t i = 0; i < mc->n_models; i++) {
    const models_profile *m = &mc->models[i];
    if (m->id && strcmp(m->id, name) == 0)
      return m;
    for (size_t j = 0; j < m->n_aliases; j++)
      if (strcmp(m->aliases[j], name) == 0)
        return m;
  }
  return NULL;
}

static void load_sampling(models_profile *m, const toml_value *t, const char *prefix,
                          toml_diag *d) {
  char p[96];
  snprintf(p, sizeof p, "%ssampling.", prefix);
  const toml_value *s = toml_get_table(t, "sampling", prefix, false, d);
  if (!s)
    return;
  static const char *const keys[] = {
      "temperature",       "top_p",      "top_k", "min_p", "repetition_penalty", "presence_penalty",
      "frequency_penalty", "max_tokens", NULL};
  toml_check_keys(s, p, keys, d);
  models_sampling *o = &m->sampling;
  o->has_temperature = toml_get_float(s, "temperature", p, false, 0, 2, &o->temperature, d);
  o->has_top_p = toml_get_float(s, "top_p", p, false, 1e-9, 1, &o->top_p, d);
  int64_t v;
  if ((o->has_top_k = toml_get_int(s, "top_k", p, false, 0, 1000000, &v, d)))
    o->top_k = (int32_t)v;
  o->has_min_p = toml_get_float(s, "min_p", p, false, 0, 1, &o->min_p, d);
  o->has_repetition_penalty =
      toml_get_float(s, "repetition_penalty", p, false, 1e-9, 10, &o->repetition_penalty, d);
  o->has_presence_penalty =
      toml_get_float(s, "presence_penalty", p, false, -2, 2, &o->presence_penalty, d);
  o->has_frequency_penalty =
      toml_get_float(s, "frequency_penalty", p, false, -2, 2, &o->frequency_penalty, d);
  if ((o->has_max_tokens = toml_get_int(s, "max_tokens", p, false, 1, 1 << 24, &v, d)))
    o->max_tokens = (uint32_t)v;
}

static void load_profile(models_profile *m, const toml_value *t, const char *prefix, toml_diag *d) {
  static const char *const keys[] = {"id",       "aliases",         "path",        "quant",
                                     "context",  "vram_mb",         "min_devices", "min_compute",
                                     "pinned",   "priority",        "neurons",     "sampling",
                                     "thinking", "tensor_parallel", NULL};
  toml_check_keys(t, prefix, keys, d);
  m->line = t->line;
  m->min_devices = 1;
  m->tensor_parallel = 1;
  if (toml_get_string(t, "id", prefix, true, NAME_MAX_BYTES, &m->id, d) && !name_ok(m->id)) {
    toml_diag_add(d, line_of(t, "id"),
                  "key \"%sid\" must be 1..%d characters of A-Z a-z 0-9 . _ - : /", prefix,
                  NAME_MAX_BYTES);
    free(m->id);
    m->id = NULL;
  }
  if (toml_get_string_array(t, "aliases", prefix, false, CORTEX_CONFIG_MAX_LIST, NAME_MAX_BYTES,
                            &m->aliases, &m->n_aliases, d))
    for (size_t i = 0; i < m->n_aliases; i++)
      if (!name_ok(m->aliases[i]))
        toml_diag_add(d, line_of(t, "aliases"),
                      "key \"%saliases\" item %zu must be 1..%d characters of A-Z a-z 0-9 . _ - "
                      ": /",
                      prefix, i, NAME_MAX_BYTES);
  if (toml_get_string(t, "path", prefix, false, PATH_MAX_BYTES, &m->path, d) && !m->path[0])
    toml_diag_add(d, line_of(t, "path"), "key \"%spath\" must not be empty", prefix);
  int q;
  if (toml_get_enum(t, "quant", prefix, false, quants, &q, d) && q > 0)
    m->quant = strdup(quants[q]);
  get_u32(t, "context", prefix, 0, 1 << 21, &m->context, d);
  get_u64(t, "vram_mb", prefix, 0, (int64_t)1 << 24, &m->vram_mb, d);
  get_u32(t, "min_devices", prefix, 1, 64, &m->min_devices, d);
  get_u32(t, "tensor_parallel", prefix, 1, 64, &m->tensor_parallel, d);
  if (m->tensor_parallel > m->min_devices)
    m->min_devices = m->tensor_parallel; /* TP over n devices needs n devices */
  char *cc = NULL;
  if (toml_get_string(t, "min_compute", prefix, false, 16, &cc, d)) {
    unsigned maj, min;
    int used = 0;
    if (sscanf(cc, "%2u.%1u%n", &maj, &min, &used) == 2 && cc[used] == '\0' && maj >= 1 &&
        cc[0] != '+' && cc[0] != ' ') {
      m->min_compute_major = maj;
      m->min_compute_minor = min;
    } else {
      toml_diag_add(d, line_of(t, "min_compute"),
                    "key \"%smin_compute\" must be a compute capability \"MAJOR.MINOR\" (e.g. "
                    "\"8.6\"), not \"%s\"",
                    prefix, cc);
    }
    free(cc);
  }
  toml_get_bool(t, "pinned", prefix, false, &m->pinned, d);
  int64_t pr;
  if (toml_get_int(t, "priority", prefix, false, -1000, 1000, &pr, d))
    m->priority = (int32_t)pr;
  if (toml_get_string_array(t, "neurons", prefix, false, CORTEX_CONFIG_MAX_LIST, NAME_MAX_BYTES,
                            &m->neurons, &m->n_neurons, d) &&
      m->n_neurons == 0)
    toml_diag_add(d, line_of(t, "neurons"),
                  "key \"%sneurons\" must name at least one neuron (leave it out to allow any)",
                  prefix);
  load_sampling(m, t, prefix, d);
  m->has_thinking = toml_get_bool(t, "thinking", prefix, false, &m->thinking, d);
}

/* Every id and alias is unique across all profiles. */
static void check_model_names(const models_config *mc, toml_diag *d) {
  size_t total = 0; /* the check is quadratic: bound it */
  for (size_t i = 0; i < mc->n_models; i++)
    total += 1 + mc->models[i].n_aliases;
  if (total > 8192) {
    toml_diag_add(d, 0, "more than 8192 model ids and aliases in all (%zu)", total);
    return;
  }
  for (size_t i = 0; i < mc->n_models; i++) {
    const models_profile *m = &mc->models[i];
    for (size_t k = 0; k <= m->n_aliases; k++) {
      const char *nm = k == 0 ? m->id : m->aliases[k - 1];
      if (!nm)
        continue;
      /* earlier names: all of profiles < i, and this profile's names < k */
      for (size_t j = 0; j <= i; j++) {
        const models_profile *o = &mc->models[j];
        size_t lim = j == i ? k : o->n_aliases + 1;
        for (size_t l = 0; l < lim; l++) {
          const char *on = l == 0 ? o->id : o->aliases[l - 1];
          if (on && strcmp(on, nm) == 0) {
            toml_diag_add(d, m->line,
                          "key \"models[%zu].%s\" \"%s\" is already used by models[%zu] (line %d)",
                          i, k == 0 ? "id" : "aliases", nm, j, o->line);
            goto next;
          }
        }
      }
    next:;
    }
  }
}

static hx_code models_load_diag(const char *path, models_config **out, toml_diag *d, hx_err *err) {
  *out = NULL;
  toml_value *root;
  hx_code rc = toml_parse_file(path, NULL, &root, err);
  if (rc != HX_OK)
    return rc;
  models_config *mc = calloc(1, sizeof *mc);
  if (!mc || !(mc->path = strdup(path))) {
    free(mc);
    toml_free(root);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  static const char *const keys[] = {"models", NULL};
  toml_check_keys(root, "", keys, d);
  const toml_value *a = toml_get_array(root, "models", "", false, d);
  size_t n = toml_array_len(a);
  if (n > CORTEX_CONFIG_MAX_MODELS) {
    toml_diag_add(d, a->line, "key \"models\" has more than %d profiles", CORTEX_CONFIG_MAX_MODELS);
    n = 0;
  }
  if (n && !(mc->models = calloc(n, sizeof *mc->models))) {
    models_config_free(mc);
    toml_free(root);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    const toml_value *t = toml_array_at(a, i);
    if (t->type != TOML_TABLE) {
      toml_diag_add(d, t->line, "key \"models\" must be an array of tables ([[models]])");
      continue;
    }
    char prefix[32];
    snprintf(prefix, sizeof prefix, "models[%zu].", i);
    load_profile(&mc->models[mc->n_models++], t, prefix, d);
  }
  check_model_names(mc, d);
  toml_free(root);
  *out = mc;
  return HX_OK; /* the caller checks d->n_errors */
}

hx_code models_config_load(const char *path, models_config **out, hx_err *err) {
  toml_diag d;
  toml_diag_init(&d, path);
  hx_code rc = models_load_diag(path, out, &d, err);
  if (rc == HX_OK && d.n_errors) {
    models_config_free(*out);
    *out = NULL;
    rc = toml_diag_to_err(&d, err);
  }
  toml_diag_free(&d);
  return rc;
}

/* ---- cortex.toml -------------------------------------------------------- */

void cortex_config_free(cortex_config *c) {
  if (!c)
    return;
  free(c->path);
  free(c->gateway.listen);
  free(c->gateway.listen_host);
  free(c->gateway.metrics_listen);
  free(c->gateway.metrics_host);
  free(c->gateway.models_file);
  for (size_t i = 0; i < c->n_neurons; i++) {
    free(c->neurons[i].name);
    free(c->neurons[i].endpoint);
    free(c->neurons[i].host);
  }
  free(c->neurons);
  for (size_t i = 0; i < c->n_keys; i++) {
    free(c->keys[i].key);
    free(c->keys[i].key_env);
    toml_strings_free(c->keys[i].models, c->keys[i].n_models);
  }
  free(c->keys);
  models_config_free(c->models);
  free(c);
}

hx_code cortex_config_defaults(cortex_config **out, hx_err *err) {
  *out = NULL;
  cortex_config *c = calloc(1, sizeof *c);
  if (!c)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  c->gateway.listen = strdup("0.0.0.0:31313");
  c->gateway.listen_host = strdup("0.0.0.0");
  c->gateway.listen_port = 31313;
  c->gateway.metrics_listen = strdup("0.0.0.0:31314");
  c->gateway.metrics_host = strdup("0.0.0.0");
  c->gateway.metrics_port = 31314;
  c->gateway.max_body_bytes = 16u << 20;
  c->gateway.max_header_bytes = 32u << 10;
  c->gateway.header_timeout_ms = 10000;
  c->gateway.max_streams = 256;
  c->gateway.request_timeout_ms = 600000;
  c->eviction.strategy = CORTEX_EVICT_LRU;
  c->eviction.defrag_after_cycles = 50;
  c->models = calloc(1, sizeof *c->models);
  if (!c->gateway.listen || !c->gateway.listen_host || !c->gateway.metrics_listen ||
      !c->gateway.metrics_host || !c->models) {
    cortex_config_free(c);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  *out = c;
  return HX_OK;
}

static void get_listen(const toml_value *t, const char *key, const char *example, char **text,
                       char **host, uint16_t *port, toml_diag *d) {
  char *s = NULL;
  if (!toml_get_string(t, key, "gateway.", false, 300, &s, d))
    return;
  char *h;
  uint16_t p;
  if (!toml_hostport_parse(s, &h, &p)) {
    toml_diag_add(d, line_of(t, key),
                  "key \"gateway.%s\" must be a listen address host:port (e.g. \"%s\"), not "
                  "\"%s\"",
                  key, example, s);
    free(s);
    return;
  }
  free(*text);
  free(*host);
  *text = s;
  *host = h;
  *port = p;
}

static void load_gateway(cortex_config *c, const toml_value *root, toml_diag *d,
                         const toml_value **models_file_v) {
  const toml_value *g = toml_get_table(root, "gateway", "", false, d);
  if (!g)
    return;
  static const char *const keys[] = {"listen",         "metrics_listen",     "models_file",
                                     "max_body_bytes", "max_header_bytes",   "header_timeout_ms",
                                     "max_streams",    "request_timeout_ms", NULL};
  toml_check_keys(g, "gateway.", keys, d);
  get_listen(g, "listen", "0.0.0.0:31313", &c->gateway.listen, &c->gateway.listen_host,
             &c->gateway.listen_port, d);
  get_listen(g, "metrics_listen", "0.0.0.0:31314", &c->gateway.metrics_listen,
             &c->gateway.metrics_host, &c->gateway.metrics_port, d);
  char *mf = NULL;
  if (toml_get_string(g, "models_file", "gateway.", false, PATH_MAX_BYTES, &mf, d)) {
    if (!mf[0])
      toml_diag_add(d, line_of(g, "models_file"), "key \"gateway.models_file\" must not be empty");
    else
      *models_file_v = toml_table_get(g, "models_file");
    c->gateway.models_file = mf;
  }
  get_u64(g, "max_body_bytes", "gateway.", 1024, (int64_t)1 << 30, &c->gateway.max_body_bytes, d);
  get_u32(g, "max_header_bytes", "gateway.", 1024, 1 << 20, &c->gateway.max_header_bytes, d);
  get_u32(g, "header_timeout_ms", "gateway.", 100, 600000, &c->gateway.header_timeout_ms, d);
  get_u32(g, "max_streams", "gateway.", 1, 100000, &c->gateway.max_streams, d);
  get_u32(g, "request_timeout_ms", "gateway.", 0, 86400000, &c->gateway.request_timeout_ms, d);
  if (c->gateway.listen_port == c->gateway.metrics_port &&
      strcmp(c->gateway.listen_host, c->gateway.metrics_host) == 0)
    toml_diag_add(d, line_of(g, "metrics_listen"),
                  "key \"gateway.metrics_listen\" must differ from gateway.listen (%s)",
                  c->gateway.listen);
}

static void load_eviction(cortex_config *c, const toml_value *root, toml_diag *d) {
  const toml_value *e = toml_get_table(root, "eviction", "", false, d);
  if (!e)
    return;
  static const char *const keys[] = {"strategy", "defrag_after_cycles", NULL};
  toml_check_keys(e, "eviction.", keys, d);
  int s;
  if (toml_get_enum(e, "strategy", "eviction.", false, strategies, &s, d))
    c->eviction.strategy = (cortex_evict_strategy)s;
  get_u32(e, "defrag_after_cycles", "eviction.", 0, 1000000, &c->eviction.defrag_after_cycles, d);
}

/* "http://host:port" with an optional trailing '/'. */
static bool endpoint_parse(const char *s, char **host, uint16_t *port) {
  if (strncmp(s, "http://", 7) != 0)
    return false;
  char tmp[320];
  size_t n = strlen(s + 7);
  if (n == 0 || n >= sizeof tmp)
    return false;
  memcpy(tmp, s + 7, n + 1);
  if (tmp[n - 1] == '/')
    tmp[n - 1] = '\0';
  return toml_hostport_parse(tmp, host, port);
}

static void load_neurons(cortex_config *c, const toml_value *root, toml_diag *d) {
  const toml_value *a = toml_get_array(root, "neurons", "", false, d);
  size_t n = toml_array_len(a);
  if (!a || !n)
    return;
  if (n > CORTEX_CONFIG_MAX_NEURONS) {
    toml_diag_add(d, a->line, "key \"neurons\" has more than %d entries",
                  CORTEX_CONFIG_MAX_NEURONS);
    return;
  }
  if (!(c->neurons = calloc(n, sizeof *c->neurons)))
    return;
  static const char *const keys[] = {"name", "endpoint", "poll_interval_ms", "timeout_ms", NULL};
  for (size_t i = 0; i < n; i++) {
    const toml_value *t = toml_array_at(a, i);
    if (t->type != TOML_TABLE) {
      toml_diag_add(d, t->line, "key \"neurons\" must be an array of tables ([[neurons]])");
      continue;
    }
    char prefix[32];
    snprintf(prefix, sizeof prefix, "neurons[%zu].", i);
    toml_check_keys(t, prefix, keys, d);
    cortex_neuron_entry *e = &c->neurons[c->n_neurons++];
    e->line = t->line;
    e->poll_interval_ms = 2000;
    e->timeout_ms = 5000;
    if (toml_get_string(t, "name", prefix, true, NAME_MAX_BYTES, &e->name, d)) {
      if (!name_ok(e->name))
        toml_diag_add(d, line_of(t, "name"),
                      "key \"%sname\" must be 1..%d characters of A-Z a-z 0-9 . _ - : /", prefix,
                      NAME_MAX_BYTES);
      for (size_t j = 0; j + 1 < c->n_neurons; j++)
        if (c->neurons[j].name && strcmp(c->neurons[j].name, e->name) == 0)
          toml_diag_add(d, line_of(t, "name"),
                        "key \"%sname\" \"%s\" is already used by neurons[%zu] (line %d)", prefix,
                        e->name, j, c->neurons[j].line);
    }
    if (toml_get_string(t, "endpoint", prefix, true, 300, &e->endpoint, d) &&
        !endpoint_parse(e->endpoint, &e->host, &e->port))
      toml_diag_add(d, line_of(t, "endpoint"),
                    "key \"%sendpoint\" must be http://host:port (e.g. "
                    "\"http://10.0.0.5:13131\"), not \"%s\"",
                    prefix, e->endpoint);
    get_u32(t, "poll_interval_ms", prefix, 100, 3600000, &e->poll_interval_ms, d);
    get_u32(t, "timeout_ms", prefix, 100, 600000, &e->timeout_ms, d);
  }
}

static void load_key(cortex_api_key *k, const toml_value *t, const char *prefix, toml_diag *d) {
  static const char *const keys[] = {"key", "key_env", "models", NULL};
  toml_check_keys(t, prefix, keys, d);
  k->line = t->line;
  bool want_key = toml_table_get(t, "key") != NULL, want_env = toml_table_get(t, "key_env") != NULL;
  if (want_key == want_env) {
    toml_diag_add(d, t->line, "key \"%skey\" or \"%skey_env\": exactly one of them is required",
                  prefix, prefix);
    return;
  }
  bool has_key = want_key && toml_get_string(t, "key", prefix, false, KEY_MAX_BYTES, &k->key, d);
  bool has_env = want_env && toml_get_string(t, "key_env", prefix, false, 256, &k->key_env, d);
  if (has_key && strlen(k->key) < 8) {
    toml_diag_add(d, line_of(t, "key"), "key \"%skey\" must be at least 8 characters", prefix);
  } else if (has_env) {
    const char *v = getenv(k->key_env);
    if (!v || !*v)
      toml_diag_add(d, line_of(t, "key_env"),
                    "key \"%skey_env\": environment variable %s is not set or empty", prefix,
                    k->key_env);
    else if (strlen(v) > KEY_MAX_BYTES)
      toml_diag_add(d, line_of(t, "key_env"),
                    "key \"%skey_env\": environment variable %s is longer than %d bytes", prefix,
                    k->key_env, KEY_MAX_BYTES);
    else
      k->key = strdup(v);
  }
  toml_get_string_array(t, "models", prefix, false, CORTEX_CONFIG_MAX_LIST, NAME_MAX_BYTES,
                        &k->models, &k->n_models, d);
}

static void load_auth(cortex_config *c, const toml_value *root, toml_diag *d) {
  const toml_value *au = toml_get_table(root, "auth", "", false, d);
  if (!au)
    return;
  static const char *const keys[] = {"keys", NULL};
  toml_check_keys(au, "auth.", keys, d);
  const toml_value *a = toml_get_array(au, "keys", "auth.", false, d);
  size_t n = toml_array_len(a);
  if (!a || !n)
    return;
  if (n > CORTEX_CONFIG_MAX_KEYS) {
    toml_diag_add(d, a->line, "key \"auth.keys\" has more than %d entries", CORTEX_CONFIG_MAX_KEYS);
    return;
  }
  if (!(c->keys = calloc(n, sizeof *c->keys)))
    return;
  for (size_t i = 0; i < n; i++) {
    const toml_value *t = toml_array_at(a, i);
    if (t->type != TOML_TABLE) {
      toml_diag_add(d, t->line, "key \"auth.keys\" must be an array of tables");
      continue;
    }
    char prefix[32];
    snprintf(prefix, sizeof prefix, "auth.keys[%zu].", i);
    cortex_api_key *k = &c->keys[c->n_keys++];
    load_key(k, t, prefix, d);
    for (size_t j = 0; k->key && j + 1 < c->n_keys; j++)
      if (c->keys[j].key && strcmp(c->keys[j].key, k->key) == 0)
        toml_diag_add(d, t->line, "key \"%skey\" repeats the key of auth.keys[%zu] (line %d)",
                      prefix, j, c->keys[j].line);
  }
}

static bool file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Loads everything; errors of cortex.toml go to d, of models.toml to md.
 * Returns non-OK only for failures that are not content errors (I/O,
 * syntax, OOM) with err set. */
static hx_code cortex_load_diag(const char *path, cortex_config **out, toml_diag *d, toml_diag *md,
                                hx_err *err) {
  *out = NULL;
  toml_value *root;
  hx_code rc = toml_parse_file(path, NULL, &root, err);
  if (rc != HX_OK)
    return rc;
  cortex_config *c;
  if ((rc = cortex_config_defaults(&c, err)) != HX_OK) {
    toml_free(root);
    return rc;
  }
  if (!(c->path = strdup(path))) {
    toml_free(root);
    cortex_config_free(c);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  static const char *const keys[] = {"gateway", "eviction", "neurons", "auth", NULL};
  toml_check_keys(root, "", keys, d);
  const toml_value *mf_v = NULL;
  load_gateway(c, root, d, &mf_v);
  load_eviction(c, root, d);
  load_neurons(c, root, d);
  load_auth(c, root, d);
  int mf_line = mf_v ? mf_v->line : 0;
  toml_free(root);

  /* models.toml: named explicitly (must exist) or "models.toml" beside. */
  char *mpath = NULL;
  if (c->gateway.models_file && c->gateway.models_file[0]) {
    mpath = path_join_dir(path, c->gateway.models_file);
    if (mpath && !file_exists(mpath)) {
      toml_diag_add(d, mf_line, "key \"gateway.models_file\": cannot read \"%s\"", mpath);
      free(mpath);
      mpath = NULL;
    }
  } else {
    mpath = path_join_dir(path, "models.toml");
    if (mpath && !file_exists(mpath)) {
      free(mpath);
      mpath = NULL;
    }
  }
  free(c->gateway.models_file);
  c->gateway.models_file = mpath;
  if (mpath) {
    md->file = mpath;
    models_config *mc;
    rc = models_load_diag(mpath, &mc, md, err);
    if (rc != HX_OK) {
      *out = c; /* caller reports err and frees */
      return rc;
    }
    models_config_free(c->models);
    c->models = mc;
  }
  /* cross-file checks */
  for (size_t i = 0; i < c->n_keys; i++)
    for (size_t j = 0; c->models->n_models && j < c->keys[i].n_models; j++)
      if (!models_config_find(c->models, c->keys[i].models[j]))
        toml_diag_add(d, c->keys[i].line,
                      "key \"auth.keys[%zu].models\": \"%s\" is not a model id or alias of %s", i,
                      c->keys[i].models[j], mpath ? mpath : "models.toml");
  for (size_t i = 0; i < c->models->n_models; i++) {
    const models_profile *m = &c->models->models[i];
    for (size_t j = 0; j < m->n_neurons; j++) {
      bool found = false;
      for (size_t k = 0; k < c->n_neurons && !found; k++)
        found = c->neurons[k].name && strcmp(c->neurons[k].name, m->neurons[j]) == 0;
      if (!found)
        toml_diag_add(md, m->line, "key \"models[%zu].neurons\": \"%s\" is not a neuron of %s", i,
                      m->neurons[j], path);
    }
  }
  *out = c;
  return HX_OK;
}

hx_code cortex_config_load(const char *path, cortex_config **out, hx_err *err) {
  return cortex_config_load_report(path, out, NULL, err);
}

hx_code cortex_config_load_report(const char *path, cortex_config **out, char **report,
                                  hx_err *err) {
  if (report)
    *report = NULL;
  toml_diag d, md;
  toml_diag_init(&d, path);
  toml_diag_init(&md, "models.toml");
  hx_code rc = cortex_load_diag(path, out, &d, &md, err);
  if (rc == HX_OK && (d.n_errors || md.n_errors)) {
    toml_diag all;
    toml_diag_init(&all, path);
    hx_buf_append(&all.text, d.text.data ? d.text.data : "", d.text.len);
    hx_buf_append(&all.text, md.text.data ? md.text.data : "", md.text.len);
    all.n_errors = d.n_errors + md.n_errors;
    rc = toml_diag_to_err(&all, err);
    if (report)
      *report = hx_buf_detach(&all.text);
    toml_diag_free(&all);
  }
  if (rc != HX_OK) {
    cortex_config_free(*out);
    *out = NULL;
  }
  toml_diag_free(&d);
  toml_diag_free(&md);
  return rc;
}

static void print_list(char **v, size_t n, const char *none) {
  if (!n)
    printf("%s", none);
  for (size_t i = 0; i < n; i++)
    printf("%s%s", i ? "," : "", v[i]);
}

static void print_summary(const cortex_config *c) {
  printf("%s: OK\n", c->path);
  printf("  gateway   listen=%s metrics_listen=%s max_streams=%u\n", c->gateway.listen,
         c->gateway.metrics_listen, c->gateway.max_streams);
  printf("            max_body_bytes=%llu max_header_bytes=%u header_timeout_ms=%u "
         "request_timeout_ms=%u\n",
         (unsigned long long)c->gateway.max_body_bytes, c->gateway.max_header_bytes,
         c->gateway.header_timeout_ms, c->gateway.request_timeout_ms);
  printf("  eviction  strategy=%s defrag_after_cycles=%u\n",
         cortex_evict_strategy_name(c->eviction.strategy), c->eviction.defrag_after_cycles);
  printf("  neurons   %zu\n", c->n_neurons);
  for (size_t i = 0; i < c->n_neurons && i < 8; i++)
    printf("    %-20s %s (poll %u ms, timeout %u ms)\n", c->neurons[i].name, c->neurons[i].endpoint,
           c->neurons[i].poll_interval_ms, c->neurons[i].timeout_ms);
  if (c->n_neurons > 8)
    printf("    ... and %zu more\n", c->n_neurons - 8);
  printf("  auth      %s", c->n_keys ? "" : "off (no API keys)");
  if (c->n_keys)
    printf("%zu API key(s)", c->n_keys);
  printf("\n  models    %zu profile(s) from %s\n", c->models->n_models,
         c->gateway.models_file ? c->gateway.models_file : "(no models.toml)");
  for (size_t i = 0; i < c->models->n_models && i < 8; i++) {
    const models_profile *m = &c->models->models[i];
    printf("    %-28s aliases=", m->id);
    print_list(m->aliases, m->n_aliases, "-");
    printf(" quant=%s devices>=%u%s neurons=", m->quant ? m->quant : "stored", m->min_devices,
           m->pinned ? " pinned" : "");
    print_list(m->neurons, m->n_neurons, "any");
    printf("\n");
  }
  if (c->models->n_models > 8)
    printf("    ... and %zu more\n", c->models->n_models - 8);
}

int cortex_config_check_cli(const char *path) {
  toml_diag d, md;
  toml_diag_init(&d, path);
  toml_diag_init(&md, "models.toml");
  cortex_config *c;
  hx_err err;
  hx_err_clear(&err);
  hx_code rc = cortex_load_diag(path, &c, &d, &md, &err);
  int status = 0;
  if (rc != HX_OK || d.n_errors || md.n_errors) {
    fputs(d.text.data ? d.text.data : "", stderr);
    fputs(md.text.data ? md.text.data : "", stderr);
    if (rc != HX_OK)
      fprintf(stderr, "%s\n", err.msg);
    size_t n = d.n_errors + md.n_errors + (rc != HX_OK);
    if (n > 1)
      fprintf(stderr, "%zu errors\n", n);
    status = 1;
  } else {
    print_summary(c);
  }
  cortex_config_free(c);
  toml_diag_free(&d);
  toml_diag_free(&md);
  return status;
}
