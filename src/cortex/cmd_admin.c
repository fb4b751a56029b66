/* cmd_admin.c — the operator CLI: `cortex status`, `cortex models`,
 * `cortex load MODEL [--neuron NAME]`, `cortex unload MODEL`. Each talks to
 * a running cortex (--url, default http://127.0.0.1:31313; API key from
 * --key or $HELEXA_API_KEY); read commands take --json for the raw answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "cortex/commands.h"
#include "net/http_client.h"

typedef struct adm_opts {
  const char *url;
  const char *key;
  const char *neuron;
  const char *model;
  bool json;
} adm_opts;

static int adm_parse(int argc, char **argv, adm_opts *o, bool want_model, const char *usage) {
  memset(o, 0, sizeof *o);
  o->url = "http://127.0.0.1:31313";
  o->key = getenv("HELEXA_API_KEY");
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
      o->url = argv[++i];
    else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
      o->key = argv[++i];
    else if (strcmp(argv[i], "--neuron") == 0 && i + 1 < argc)
      o->neuron = argv[++i];
    else if (strcmp(argv[i], "--json") == 0)
      o->json = true;
    else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("usage: cortex %s\n", usage);
      return 0;
    } else if (want_model && !o->model && argv[i][0] != '-')
      o->model = argv[i];
    else {
      fprintf(stderr, "cortex %s: unknown argument \"%s\"\nusage: cortex %s\n", argv[0], argv[i],
              usage);
      return 2;
    }
  }
  if (want_model && !o->model) {
    fprintf(stderr, "cortex %s: which model?\nusage: cortex %s\n", argv[0], usage);
    return 2;
  }
  return -1;
}

/* GET or POST to the running cortex; prints errors; returns the parsed JSON
 * (or NULL). */
static json_t *adm_call(const adm_opts *o, const char *method, const char *path, const char *body,
                        int *status) {
  char url[1024], auth[600];
  snprintf(url, sizeof url, "%s%s", o->url, path);
  hx_http_call *c = hx_http_call_new();
  hx_http_request rq = {.method = method,
                        .url = url,
                        .body = body,
                        .body_len = body ? strlen(body) : 0,
                        .connect_timeout_ms = 3000,
                        .total_timeout_ms = strcmp(method, "POST") == 0 ? 900000 : 15000,
                        .max_response_bytes = 16 << 20};
  int h = 0;
  rq.headers[h++] = "Content-Type: application/json";
  if (o->key) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->key);
    rq.headers[h++] = auth;
  }
  hx_http_response rs;
  hx_err err = {0};
  hx_code rc = c ? hx_http_call_run(c, &rq, &rs, &err) : HX_ENOMEM;
  hx_http_call_free(c);
  *status = rs.status;
  if (rc != HX_OK) {
    fprintf(stderr, "cortex: cannot reach cortex at %s: %s\n", o->url, err.msg);
    hx_buf_free(&rs.body);
    return NULL;
  }
  json_t *j = hx_json_parse(rs.body.data ? rs.body.data : "", rs.body.len,
                            (hx_json_limits){16 << 20, 64}, &err);
  if (!j)
    fprintf(stderr, "cortex: %s%s answered HTTP %d with a body that is not JSON: %s\n", o->url,
            path, rs.status, err.msg);
  else if (rs.status >= 300) {
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    fprintf(stderr, "cortex: HTTP %d: %s\n", rs.status, m ? m : "(no message)");
  }
  hx_buf_free(&rs.body);
  return j;
}

static void adm_print_json(const json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2));
  if (s)
    printf("%s\n", s);
  free(s);
}

static double adm_gib(const json_t *o, const char *k) {
  return json_number_value(json_object_get(o, k)) / (1024.0 * 1024.0 * 1024.0);
}

static void adm_print_status(const json_t *st) {
  const json_t *neurons = json_object_get(st, "neurons");
  size_t up = 0, i;
  json_t *n;
  json_array_foreach(neurons, i, n) up += json_is_true(json_object_get(n, "up"));
  printf("cortex %s  eviction=%s  neurons %zu/%zu up  in-flight %lld  queued %lld%s\n\n",
         json_string_value(json_object_get(st, "version")),
         json_string_value(json_object_get(st, "eviction")), up, json_array_size(neurons),
         (long long)json_integer_value(json_object_get(st, "in_flight")),
         (long long)json_integer_value(json_object_get(st, "queued")),
         json_is_true(json_object_get(st, "draining")) ? "  DRAINING" : "");
  printf("%-16s %-6s %-28s %-8s %s\n", "NEURON", "STATE", "ENDPOINT", "IN-FLT", "MEMORY");
  json_array_foreach(neurons, i, n) {
    const char *state = !json_is_true(json_object_get(n, "up"))         ? "down"
                        : json_is_true(json_object_get(n, "ejected"))   ? "eject"
                        : json_is_true(json_object_get(n, "repacking")) ? "repack"
                                                                        : "up";
    char mem[64];
    if (json_integer_value(json_object_get(n, "memory_budget_bytes")) > 0)
      snprintf(mem, sizeof mem, "budget %.1f GiB", adm_gib(n, "memory_budget_bytes"));
    else
      snprintf(mem, sizeof mem, "RAM %.1f/%.1f GiB free", adm_gib(n, "ram_available_bytes"),
               adm_gib(n, "ram_total_bytes"));
    printf("%-16s %-6s %-28s %-8lld %s\n", json_string_value(json_object_get(n, "name")), state,
           json_string_value(json_object_get(n, "endpoint")),
           (long long)json_integer_value(json_object_get(n, "in_flight")), mem);
    size_t k;
    json_t *d;
    json_array_foreach(json_object_get(n, "devices"), k, d) {
      double used = adm_gib(d, "vram_used_bytes"), tot = adm_gib(d, "vram_total_bytes");
      int bar = tot > 0 ? (int)(20 * used / tot + 0.5) : 0;
      char b[21];
      for (int x = 0; x < 20; x++)
        b[x] = x < bar ? '#' : '.';
      b[20] = '\0';
      printf("  gpu%-3lld %-26s [%s] %5.1f / %5.1f GiB%s\n",
             (long long)json_integer_value(json_object_get(d, "index")),
             json_string_value(json_object_get(d, "name")), b, used, tot,
             json_is_true(json_object_get(d, "poisoned")) ? "  POISONED" : "");
    }
    json_array_foreach(json_object_get(n, "loaded"), k, d) {
      char devs[64] = "";
      size_t x;
      json_t *dv;
      json_array_foreach(json_object_get(d, "devices"), x, dv) {
        size_t l = strlen(devs);
        snprintf(devs + l, sizeof devs - l, "%s%lld", x ? "," : "",
                 (long long)json_integer_value(dv));
      }
      printf("  model  %-26s %-9s %6.2f GiB  devices [%s]\n",
             json_string_value(json_object_get(d, "id")),
             json_string_value(json_object_get(d, "state")), adm_gib(d, "bytes"),
             devs[0] ? devs : "cpu");
    }
  }
  const json_t *models = json_object_get(st, "models");
  if (json_array_size(models) > 0) {
    printf("\n%-28s %-8s %-8s %s\n", "MODEL (requested)", "IN-FLT", "QUEUED", "NOTE");
    json_array_foreach(models, i, n) {
      const char *le = json_string_value(json_object_get(n, "last_error"));
      printf("%-28s %-8lld %-8lld %s%s\n", json_string_value(json_object_get(n, "id")),
             (long long)json_integer_value(json_object_get(n, "in_flight")),
             (long long)json_integer_value(json_object_get(n, "queued")),
             json_is_true(json_object_get(n, "loading")) ? "loading " : "", le && *le ? le : "");
    }
  }
}

int cortex_cmd_status(int argc, char **argv) {
  adm_opts o;
  int r = adm_parse(argc, argv, &o, false, "status [--url URL] [--json]");
  if (r >= 0)
    return r;
  int status;
  json_t *j = adm_call(&o, "GET", "/status", NULL, &status);
  if (!j || status != 200) {
    json_decref(j);
    return 1;
  }
  if (o.json)
    adm_print_json(j);
  else
    adm_print_status(j);
  json_decref(j);
  return 0;
}

int cortex_cmd_models(int argc, char **argv) {
  adm_opts o;
  int r = adm_parse(argc, argv, &o, false, "models [--url URL] [--key KEY] [--json]");
  if (r >= 0)
    return r;
  int status;
  json_t *j = adm_call(&o, "GET", "/v1/models", NULL, &status);
  if (!j || status != 200) {
    json_decref(j);
    return 1;
  }
  if (o.json) {
    adm_print_json(j);
  } else {
    printf("%-30s %-20s %s\n", "MODEL", "LOADED ON", "AVAILABLE ON");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(j, "data"), i, m) {
      char on[256] = "", av[256] = "";
      size_t k;
      json_t *x;
      json_array_foreach(json_object_get(m, "loaded_on"), k, x) {
        size_t l = strlen(on);
        snprintf(on + l, sizeof on - l, "%s%s", k ? "," : "", json_string_value(x));
      }
      json_array_foreach(json_object_get(m, "available_on"), k, x) {
        size_t l = strlen(av);
        snprintf(av + l, sizeof av - l, "%s%s", k ? "," : "", json_string_value(x));
      }
      const char *alias = json_string_value(json_object_get(m, "alias_of"));
      char name[300];
      snprintf(name, sizeof name, "%s%s%s%s", json_string_value(json_object_get(m, "id")),
               alias ? " (→ " : "", alias ? alias : "", alias ? ")" : "");
      printf("%-30s %-20s %s\n", name, on[0] ? on : "-", av[0] ? av : "-");
    }
  }
  json_decref(j);
  return 0;
}

static int adm_action(int argc, char **argv, const char *path, const char *usage) {
  adm_opts o;
  int r = adm_parse(argc, argv, &o, true, usage);
  if (r >= 0)
    return r;
  json_t *b = json_pack("{s:s}", "model", o.model);
  if (o.neuron)
    json_object_set_new(b, "neuron", json_string(o.neuron));
  char *body = json_dumps(b, JSON_COMPACT);
  json_decref(b);
  int status;
  json_t *j = adm_call(&o, "POST", path, body, &status);
  free(body);
  int code = j && status == 200 ? 0 : 1;
  if (code == 0)
    printf("%s: %s\n", o.model, json_string_value(json_object_get(j, "status")));
  json_decref(j);
  return code;
}

int cortex_cmd_load(int argc, char **argv) {
  return adm_action(argc, argv, "/admin/models/load",
                    "load MODEL [--neuron NAME] [--url URL] [--key KEY]");
}

int cortex_cmd_unload(int argc, char **argv) {
  return adm_action(argc, argv, "/admin/models/unload", "unload MODEL [--url URL] [--key KEY]");
}
