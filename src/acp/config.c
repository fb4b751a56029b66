/* config.c — see config.h. */
#include "acp/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/toml.h"

static const char USAGE[] =
    "usage: helexa-acp [--endpoint URL] [--model ID] [--api-key-env NAME]\n"
    "                  [--config FILE] [--max-turn-requests N] [--log-level LEVEL]\n"
    "\n"
    "An Agent Client Protocol agent: speaks JSON-RPC 2.0 on stdin/stdout (one\n"
    "message per line) with an editor such as Zed, and answers prompts with any\n"
    "OpenAI-compatible endpoint (cortex by default). Logs go to stderr.\n"
    "\n"
    "  --endpoint URL          base URL of the API (default " ACP_DEFAULT_ENDPOINT ")\n"
    "  --model ID              model id (default: the first one the endpoint lists)\n"
    "  --api-key-env NAME      send the value of $NAME as a Bearer token\n"
    "  --config FILE           settings file (default ~/.config/helexa/acp.toml)\n"
    "  --max-turn-requests N   model requests per prompt turn (default 32)\n"
    "  --max-tokens N          cap on tokens per model request (default: endpoint's)\n"
    "  --log-level LEVEL       debug, info, warn (default), error, off\n"
    "  --help, --version\n";

void acp_config_init(acp_config *c) {
  memset(c, 0, sizeof *c);
  c->endpoint = strdup(ACP_DEFAULT_ENDPOINT);
  c->max_turn_requests = 32;
  c->context_window = 32768;
  c->log_level = HX_LOG_WARN;
}

void acp_config_free(acp_config *c) {
  if (!c)
    return;
  free(c->endpoint);
  free(c->model);
  free(c->api_key_env);
  free(c->system_prompt);
  memset(c, 0, sizeof *c);
}

static hx_code set_str(char **dst, const char *v, hx_err *err) {
  char *p = strdup(v);
  if (!p)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  free(*dst);
  *dst = p;
  return HX_OK;
}

static bool endpoint_ok(const char *u) {
  return strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;
}

hx_code acp_config_apply_toml(acp_config *c, const char *text, size_t len, const char *file,
                              hx_err *err) {
  toml_value *root = NULL;
  toml_limits lim = {.max_bytes = 1 << 20, .max_depth = 16};
  hx_err perr;
  if (toml_parse(text, len, &lim, &root, &perr) != HX_OK)
    return hx_err_set(err, HX_EINVAL, "%s: %s", file, perr.msg);
  static const char *const keys[] = {"endpoint",
                                     "model",
                                     "api_key_env",
                                     "system_prompt",
                                     "max_turn_requests",
                                     "context_window",
                                     "max_tokens",
                                     "log_level",
                                     NULL};
  static const char *const levels[] = {"debug", "info", "warn", "error", "off", NULL};
  toml_diag d;
  toml_diag_init(&d, file);
  toml_check_keys(root, "", keys, &d);
  if (toml_get_string(root, "endpoint", "", false, 2000, &c->endpoint, &d) &&
      !endpoint_ok(c->endpoint))
    toml_diag_add(&d, toml_table_get(root, "endpoint")->line,
                  "key \"endpoint\" must be an http:// or https:// URL");
  toml_get_string(root, "model", "", false, 256, &c->model, &d);
  toml_get_string(root, "api_key_env", "", false, 128, &c->api_key_env, &d);
  toml_get_string(root, "system_prompt", "", false, 64 * 1024, &c->system_prompt, &d);
  toml_get_int(root, "max_turn_requests", "", false, 1, 1000, &c->max_turn_requests, &d);
  toml_get_int(root, "context_window", "", false, 1, INT64_C(1) << 32, &c->context_window, &d);
  toml_get_int(root, "max_tokens", "", false, 1, INT64_C(1) << 24, &c->max_tokens, &d);
  int level = 0;
  if (toml_get_enum(root, "log_level", "", false, levels, &level, &d))
    c->log_level = (hx_log_level)level;
  toml_free(root);
  hx_code rc = d.n_errors ? toml_diag_to_err(&d, err) : HX_OK;
  toml_diag_free(&d);
  return rc;
}

static hx_code load_file(acp_config *c, const char *path, bool must_exist, hx_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (!must_exist && errno == ENOENT)
      return HX_OK;
    return hx_err_set(err, HX_EIO, "%s: %s", path, strerror(errno));
  }
  hx_buf text;
  hx_buf_init(&text, 1 << 20);
  char chunk[16384];
  size_t n;
  hx_code rc = HX_OK;
  while (rc == HX_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
    rc = hx_buf_append(&text, chunk, n);
  fclose(f);
  if (rc != HX_OK)
    rc = hx_err_set(err, rc, "%s: larger than 1 MiB", path);
  else
    rc = acp_config_apply_toml(c, text.data ? text.data : "", text.len, path, err);
  hx_buf_free(&text);
  return rc;
}

static const char *flag_value(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (strcmp(argv[*i], name) == 0 && *i + 1 < argc)
    return argv[++*i];
  return NULL;
}

hx_code acp_config_load(acp_config *c, int argc, char **argv, acp_config_action *action,
                        hx_err *err) {
  *action = ACP_CONFIG_RUN;
  const char *config_path = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(USAGE, stdout);
      *action = ACP_CONFIG_EXIT;
      return HX_OK;
    }
    if (strcmp(argv[i], "--version") == 0) {
      printf("helexa-acp %s\n", HELEXA_VERSION);
      *action = ACP_CONFIG_EXIT;
      return HX_OK;
    }
    const char *v = flag_value(argc, argv, &i, "--config");
    if (v)
      config_path = v;
  }
  hx_code rc;
  if (config_path) {
    rc = load_file(c, config_path, true, err);
  } else {
    char path[4096];
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    path[0] = '\0';
    if (xdg && xdg[0] == '/')
      snprintf(path, sizeof path, "%s/helexa/acp.toml", xdg);
    else if (home && home[0])
      snprintf(path, sizeof path, "%s/.config/helexa/acp.toml", home);
    rc = path[0] ? load_file(c, path, false, err) : HX_OK;
  }
  if (rc)
    return rc;
  for (int i = 1; i < argc; i++) {
    const char *v;
    if ((v = flag_value(argc, argv, &i, "--config"))) {
      continue;
    } else if ((v = flag_value(argc, argv, &i, "--endpoint"))) {
      if (!endpoint_ok(v))
        return hx_err_set(err, HX_EINVAL, "--endpoint must be an http:// or https:// URL, got %s",
                          v);
      rc = set_str(&c->endpoint, v, err);
    } else if ((v = flag_value(argc, argv, &i, "--model"))) {
      rc = set_str(&c->model, v, err);
    } else if ((v = flag_value(argc, argv, &i, "--api-key-env"))) {
      rc = set_str(&c->api_key_env, v, err);
    } else if ((v = flag_value(argc, argv, &i, "--max-turn-requests"))) {
      char *end;
      long n = strtol(v, &end, 10);
      if (*end || n < 1 || n > 1000)
        return hx_err_set(err, HX_EINVAL, "--max-turn-requests must be 1..1000, got %s", v);
      c->max_turn_requests = n;
    } else if ((v = flag_value(argc, argv, &i, "--max-tokens"))) {
      char *end;
      long n = strtol(v, &end, 10);
      if (*end || n < 1 || n > (1L << 24))
        return hx_err_set(err, HX_EINVAL, "--max-tokens must be 1..16777216, got %s", v);
      c->max_tokens = n;
    } else if ((v = flag_value(argc, argv, &i, "--log-level"))) {
      if (hx_log_level_parse(v, &c->log_level) != 0)
        return hx_err_set(err, HX_EINVAL, "--log-level must be debug|info|warn|error|off, got %s",
                          v);
    } else {
      return hx_err_set(err, HX_EINVAL, "unknown or incomplete option \"%s\" (see --help)",
                        argv[i]);
    }
    if (rc)
      return rc;
  }
  return HX_OK;
}
