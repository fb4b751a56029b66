/* upstream.h — one streamed chat completion against an OpenAI-compatible
 * endpoint (`POST {endpoint}/chat/completions`, `stream: true`,
 * `stream_options.include_usage`).
 *
 * acp_stream is the pure part: it accepts the parsed `data:` payloads of the
 * SSE stream one at a time and accumulates content, reasoning_content,
 * tool-call deltas (by index), the finish reason and usage, calling back on
 * every content and reasoning delta. acp_upstream_chat drives it over HTTP
 * (net/http_client.h + net/sse.h); the call may be cancelled from another
 * thread with hx_http_call_cancel. */
#ifndef ACP_UPSTREAM_H
#define ACP_UPSTREAM_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"
#include "net/http_client.h"

enum {
  ACP_STREAM_TOOL_CALLS_MAX = 16,             /* tool calls in one assistant message */
  ACP_STREAM_TEXT_MAX = 8 * 1024 * 1024,      /* content / reasoning bytes per message */
  ACP_STREAM_ARGS_MAX = 1024 * 1024,          /* one tool call's arguments, bytes */
  ACP_STREAM_EVENT_MAX = 4 * 1024 * 1024,     /* one SSE event, bytes */
  ACP_STREAM_NAME_MAX = 128,                  /* function name / call id, bytes */
  ACP_UPSTREAM_ERROR_BODY_MAX = 64 * 1024,    /* error body kept for the message */
  ACP_UPSTREAM_IDLE_TIMEOUT_MS = 600 * 1000,  /* no byte for this long: give up */
  ACP_UPSTREAM_CONNECT_TIMEOUT_MS = 5 * 1000, /* TCP connect */
};

typedef void (*acp_stream_on_text)(void *ud, const char *text, size_t len);

typedef struct acp_stream_tool_call {
  char id[ACP_STREAM_NAME_MAX];
  char name[ACP_STREAM_NAME_MAX];
  hx_buf arguments; /* JSON text as streamed */
} acp_stream_tool_call;

typedef struct acp_stream {
  hx_buf content;
  hx_buf reasoning;
  acp_stream_tool_call tool_calls[ACP_STREAM_TOOL_CALLS_MAX];
  int tool_call_count;    /* highest index seen + 1 */
  char finish_reason[32]; /* "" until a choice finishes */
  bool done;              /* "[DONE]" seen */
  bool has_usage;         /* usage fields below are valid */
  int64_t prompt_tokens;  /* usage.prompt_tokens */
  int64_t completion_tokens;
  int64_t reasoning_tokens; /* completion_tokens_details.reasoning_tokens, 0 if absent */
  acp_stream_on_text on_content;
  acp_stream_on_text on_reasoning;
  void *ud;
} acp_stream;

void acp_stream_init(acp_stream *s, acp_stream_on_text on_content, acp_stream_on_text on_reasoning,
                     void *ud);
void acp_stream_free(acp_stream *s);
/* Accepts one SSE data payload ("[DONE]" or a chat.completion.chunk JSON
 * object). HX_EINVAL on malformed JSON or shapes (err names the field),
 * HX_ETOOLARGE past a bound, HX_EIO when the chunk carries an "error". */
hx_code acp_stream_accept(acp_stream *s, const char *data, size_t len, hx_err *err);
/* The assistant message for the history: {"role":"assistant","content",
 * "reasoning_content"?, "tool_calls"?}. New reference or NULL on OOM. */
json_t *acp_stream_message(const acp_stream *s);

typedef struct acp_upstream {
  const char *endpoint; /* base URL ending before "/chat/completions" */
  const char *model;
  const char *api_key; /* may be NULL: no Authorization header */
  int64_t max_tokens;  /* sent as max_tokens when > 0 */
} acp_upstream;

/* Streams one completion of `messages` (with `tools` when non-NULL and
 * non-empty) into s. HX_OK when the stream ended (finish reason or
 * [DONE]); HX_ECANCELLED when call was cancelled; otherwise err says what
 * went wrong in words meant for the user (unreachable endpoint, HTTP status
 * with the server's error message, malformed stream). */
hx_code acp_upstream_chat(const acp_upstream *u, hx_http_call *call, const json_t *messages,
                          const json_t *tools, acp_stream *s, hx_err *err);

/* GET {endpoint}/models and returns the first model id (malloc'd) or NULL
 * with err set. */
char *acp_upstream_first_model(const acp_upstream *u, hx_err *err);

#endif
