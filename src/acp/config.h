/* config.h — helexa-acp's settings: built-in defaults, then
 * ~/.config/helexa/acp.toml (or $XDG_CONFIG_HOME/helexa/acp.toml, or the
 * file named by --config), then command-line flags, each overriding the
 * previous. */
#ifndef ACP_CONFIG_H
#define ACP_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "base/log.h"
#include "base/status.h"

#define ACP_DEFAULT_ENDPOINT "http://127.0.0.1:31313/v1"

typedef struct acp_config {
  char *endpoint;            /* OpenAI-compatible base URL (…/v1), owned */
  char *model;               /* model id; NULL = first of GET {endpoint}/models */
  char *api_key_env;         /* name of the env variable holding the API key, or NULL */
  char *system_prompt;       /* extra system prompt, or NULL */
  int64_t max_turn_requests; /* model requests per prompt turn, 1..1000 */
  int64_t context_window;    /* tokens, for usage_update "size" */
  int64_t max_tokens;        /* per model request; 0 = the endpoint's default */
  hx_log_level log_level;
} acp_config;

typedef enum acp_config_action {
  ACP_CONFIG_RUN,  /* start the agent */
  ACP_CONFIG_EXIT, /* --help / --version printed: exit 0 */
} acp_config_action;

void acp_config_init(acp_config *c);
void acp_config_free(acp_config *c);
/* Applies one TOML document (text) to c; file names the source in
 * messages. HX_EINVAL with every problem listed ("acp.toml:3: ..."). */
hx_code acp_config_apply_toml(acp_config *c, const char *text, size_t len, const char *file,
                              hx_err *err);
/* Loads defaults, the config file and the flags. On --help / --version
 * prints to out and returns ACP_CONFIG_EXIT in *action. */
hx_code acp_config_load(acp_config *c, int argc, char **argv, acp_config_action *action,
                        hx_err *err);

#endif
