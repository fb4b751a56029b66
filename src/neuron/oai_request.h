/* oai_request.h — an OpenAI /v1/chat/completions or /v1/completions body,
 * validated into what the daemon executes.
 *
 * Strict where a field changes meaning (wrong types, out-of-range values,
 * n > 1, echo, best_of > 1, suffix, response_format other than text, legacy
 * functions/function_call, audio / non-text content parts: each a 400 naming
 * the field), lenient where it does not (unknown fields, user, metadata,
 * store, service_tier, ... are ignored). Every error names the field in
 * err->msg and in *param (JSON path such as "messages[2].content"). */
#ifndef NEURON_OAI_REQUEST_H
#define NEURON_OAI_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"
#include "engine/sampler.h"

enum { NEURON_REQUEST_BODY_DEPTH_MAX = 64, NEURON_REQUEST_MESSAGES_MAX = 4096 };

typedef enum neuron_tool_choice {
  NEURON_TOOL_CHOICE_AUTO = 0,
  NEURON_TOOL_CHOICE_NONE,
  NEURON_TOOL_CHOICE_REQUIRED,
  NEURON_TOOL_CHOICE_NAMED,
} neuron_tool_choice;

typedef struct neuron_oai_request {
  bool chat;          /* /v1/chat/completions (else /v1/completions) */
  json_t *root;       /* the parsed body (owned); pointers below borrow from it */
  const char *model;  /* required */
  json_t *messages;   /* chat: array of normalized messages (owned copy) */
  const char *prompt; /* completions: the prompt text */
  json_t *tools;      /* array (borrowed) or NULL; NULL also when tool_choice is none */
  neuron_tool_choice tool_choice;
  const char *tool_choice_name; /* NAMED: the function */
  json_t *template_kwargs;      /* chat_template_kwargs object (borrowed) or NULL */
  bool stream;
  bool include_usage;
  bool logprobs;
  int top_logprobs; /* 0..HX_SAMPLER_TOPK_MAX */
  int max_tokens;   /* 0 = until context end */
  bool has_seed;
  hx_sampling_params sampling;
  int n_stop;
  const char *stop[HX_STOP_STRINGS_MAX];
} neuron_oai_request;

/* Parses body. On failure returns HX_EINVAL (400; also HX_EUNSUPPORTED for
 * fields we understand but do not implement, also 400) with err naming the
 * field and *param set to a static or err-owned string (may be NULL). On
 * success the request owns its references; free with
 * neuron_oai_request_free (also safe after failure). */
hx_code neuron_oai_request_parse(const char *body, size_t len, bool chat, neuron_oai_request *out,
                                 char *param, size_t param_cap, hx_err *err);
void neuron_oai_request_free(neuron_oai_request *r);

#endif
