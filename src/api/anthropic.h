/* anthropic.h — the Anthropic Messages API on top of an OpenAI chat
 * completions upstream.
 *
 * Requests: api_anth_request_translate() turns a /v1/messages body into an
 * OpenAI /v1/chat/completions body (always streaming upstream, usage
 * included) plus the facts the response side needs (stop sequences, model,
 * streaming or not). Stop sequences are NOT sent upstream: cortex matches them
 * itself so that it can report stop_reason "stop_sequence" (an OpenAI
 * upstream cannot tell a stop string from end of turn) and cut generation at
 * once.
 *
 * Responses: an api_anth_stream is fed the upstream's chat.completion.chunk
 * objects in order and produces the Anthropic event sequence (message_start,
 * content_block_start/delta/stop, message_delta with cumulative usage,
 * message_stop) through an emit callback, while accumulating the whole
 * message for non-streaming callers (api_anth_stream_message).
 *
 * Errors: api_anth_error_json() builds {"type":"error","error":{type,message}}
 * and api_anth_error_type() maps HTTP status to Anthropic's error types. */
#ifndef HX_API_ANTHROPIC_H
#define HX_API_ANTHROPIC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/status.h"

enum {
  API_ANTH_MAX_STOP_SEQUENCES = 16,
  API_ANTH_MAX_STOP_BYTES = 256, /* per stop sequence */
};

typedef struct api_anth_info {
  char model[256];
  bool stream;
  size_t n_stop;
  char stop[API_ANTH_MAX_STOP_SEQUENCES][API_ANTH_MAX_STOP_BYTES + 1];
  bool thinking_set; /* the request said enabled/disabled/adaptive */
  bool thinking;     /* its value when thinking_set */
} api_anth_info;

/* Translates an Anthropic Messages request body into an OpenAI chat
 * completions body (new reference in *out). HX_EINVAL with a message naming
 * the field ("messages[2].content[0]: unknown image source type \"x\"") on
 * a malformed request. Unknown fields are ignored. */
hx_code api_anth_request_translate(const json_t *req, json_t **out, api_anth_info *info,
                                   hx_err *err);

/* Anthropic error type for an HTTP status ("invalid_request_error",
 * "authentication_error", "permission_error", "not_found_error",
 * "request_too_large", "rate_limit_error", "api_error", "overloaded_error",
 * "timeout_error"). */
const char *api_anth_error_type(int status);
/* {"type":"error","error":{"type":type,"message":message}}; new reference. */
json_t *api_anth_error_json(const char *type, const char *message);

/* Called for each Anthropic stream event; data is borrowed (do not keep).
 * Return 0 to continue, non-zero to stop (feed then returns HX_ECANCELLED). */
typedef int (*api_anth_emit_fn)(void *ud, const char *event, const json_t *data);

typedef struct api_anth_stream api_anth_stream;

/* A translator for one response. msg_id like "msg_0123…". emit may be NULL
 * (non-streaming: only the accumulated message is wanted). NULL on OOM. */
api_anth_stream *api_anth_stream_new(const api_anth_info *info, const char *msg_id,
                                     api_anth_emit_fn emit, void *ud);
void api_anth_stream_free(api_anth_stream *s);

/* Input tokens known before any chunk (e.g. from count_tokens); shown in
 * message_start. Optional. */
void api_anth_stream_set_input_tokens(api_anth_stream *s, long n);

/* Emits message_start if not yet done (lets the caller open the stream and
 * send pings before the upstream answers). */
hx_code api_anth_stream_start(api_anth_stream *s, hx_err *err);

/* Feeds one upstream chunk (a parsed chat.completion.chunk). HX_EINVAL for a
 * chunk that is not an object. Returns HX_OK and sets *done when the message
 * is complete for the client's purposes (a stop sequence matched): the caller
 * should stop the upstream and call finish. */
hx_code api_anth_stream_feed(api_anth_stream *s, const json_t *chunk, bool *done, hx_err *err);

/* True once the upstream reported a finish_reason or a stop sequence hit. */
bool api_anth_stream_has_finish(const api_anth_stream *s);

/* Ends the message normally: flushes held-back text, closes the open block,
 * emits message_delta (stop_reason, stop_sequence, cumulative usage) and
 * message_stop. */
hx_code api_anth_stream_finish(api_anth_stream *s, hx_err *err);

/* The whole message as the non-streaming API returns it (new reference);
 * valid after finish. */
json_t *api_anth_stream_message(const api_anth_stream *s);

/* Usage so far (for metrics). */
void api_anth_stream_usage(const api_anth_stream *s, long *input, long *output, long *cached);

/* Anthropic model object for the catalogue:
 * {"type":"model","id","display_name","created_at"}. */
json_t *api_anth_model_json(const char *id, long created_s);

#endif
