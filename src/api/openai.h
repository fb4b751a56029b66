/* openai.h — the OpenAI surface as cortex proxies it: request checks, the
 * error type for a status, usage extraction from responses and chunks, and
 * the model-list object. */
#ifndef HX_API_OPENAI_H
#define HX_API_OPENAI_H

#include <jansson.h>
#include <stdbool.h>

#include "base/status.h"

typedef enum api_openai_kind { API_OPENAI_CHAT, API_OPENAI_COMPLETIONS } api_openai_kind;

/* Checks the fields cortex relies on: "model" a non-empty string, "messages"
 * a non-empty array (chat) or "prompt" present (completions), "stream" a
 * boolean when present. Sets *model (borrowed from req) and *stream. */
hx_code api_openai_request_check(const json_t *req, api_openai_kind kind, const char **model,
                                 bool *stream, hx_err *err);

/* Makes sure a streaming request asks for the final usage chunk
 * (stream_options.include_usage = true) so that cortex can count tokens;
 * the client still gets the chunk (OpenAI clients ignore or use it). */
void api_openai_request_want_usage(json_t *req);

/* OpenAI error type for an HTTP status ("invalid_request_error",
 * "authentication_error", "permission_error", "not_found_error",
 * "rate_limit_error", "server_error", "timeout_error"). */
const char *api_openai_error_type(int status);

/* Reads usage (prompt, completion, cached prompt tokens) from a response or
 * chunk object; returns false when it carries none (outputs untouched). */
bool api_openai_usage(const json_t *obj, long *prompt, long *completion, long *cached);

/* True when a chunk carries generated content (text, reasoning or tool
 * arguments): used for TTFT and inter-token timing. */
bool api_openai_chunk_has_content(const json_t *chunk);

/* {"id","object":"model","created","owned_by"}; new reference. */
json_t *api_openai_model_json(const char *id, long created_s, const char *owned_by);

#endif
