/* output_parser.h — split generated text into reasoning, content and tool calls.
 *
 * Streaming and incremental: feed decoded text chunks as they come (any
 * boundaries, even inside a tag or a UTF-8 character), receive events through
 * a callback; hx_output_parser_finish flushes at the end of generation. The
 * concatenated events are the same whatever the chunking.
 *
 * Grammar understood (the Qwen3 family):
 *   <think> ... </think>   → REASONING deltas (also when the prompt already
 *                            opened the block: config.think_open). Tool-call
 *                            markup inside the think block is reasoning text,
 *                            never a call.
 *   <tool_call> ... </tool_call> outside the think block → one tool call:
 *     HX_CHAT_FAMILY_QWEN3_JSON: {"name": "...", "arguments": {...}}
 *     HX_CHAT_FAMILY_QWEN_XML:   <function=NAME>
 *                                <parameter=P>\nVALUE\n</parameter>...
 *                                </function>
 *       parameter values are typed by the tool's JSON schema (config.tools):
 *       string → kept as text; integer/number/boolean/null/object/array →
 *       parsed as JSON when valid, else kept as a string.
 *   everything else        → CONTENT deltas.
 * Tool calls are buffered until their closing tag and then emitted as
 * TOOL_START {index, id, name}, one TOOL_ARGS delta holding the complete
 * arguments object as compact JSON, TOOL_END. Indices count 0, 1, 2... per
 * parser. A tool-call block that does not parse, or is cut off by the end of
 * generation, is emitted as CONTENT verbatim: no text is ever dropped.
 * Whitespace between the content and a tool call, and between tool calls, is
 * content like any other (callers may trim it).
 *
 * Ownership: event strings are valid only during the callback. */
#ifndef HX_ENGINE_OUTPUT_PARSER_H
#define HX_ENGINE_OUTPUT_PARSER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"
#include "engine/chat_template.h"

typedef struct hx_output_parser hx_output_parser; /* opaque, one per generation */

typedef struct hx_output_parser_config {
  hx_chat_family family;      /* tool-call dialect; GENERIC: <tool_call> is content */
  bool think_open;            /* generation starts inside <think> (prompt opened it;
                                 see hx_chat_prompt_think_open) */
  bool parse_think;           /* false: <think> tags are plain content */
  bool parse_tools;           /* false: tool-call markup is plain content (e.g. the
                                 request had no tools) */
  const json_t *tools;        /* OpenAI tools array for XML parameter typing, or NULL
                                 (values then kept as strings unless valid JSON
                                 objects/arrays); the parser takes its own reference */
  const char *id_prefix;      /* tool-call ids are id_prefix + index ("call_0"...);
                                 NULL: "call_"; copied */
  size_t tool_call_max_bytes; /* a tool-call block longer than this is given up on
                                 and emitted as content; 0: 1 MiB */
} hx_output_parser_config;

typedef enum hx_output_event_kind {
  HX_OUTPUT_CONTENT = 0, /* text: content delta */
  HX_OUTPUT_REASONING,   /* text: reasoning_content delta */
  HX_OUTPUT_TOOL_START,  /* index, id, name */
  HX_OUTPUT_TOOL_ARGS,   /* index, text: arguments JSON text delta */
  HX_OUTPUT_TOOL_END,    /* index */
} hx_output_event_kind;

typedef struct hx_output_event {
  hx_output_event_kind kind;
  int index;        /* tool-call index (tool events), else -1 */
  const char *id;   /* TOOL_START only, NUL-terminated */
  const char *name; /* TOOL_START only, NUL-terminated */
  const char *text; /* CONTENT / REASONING / TOOL_ARGS: bytes (not NUL-terminated) */
  size_t len;
} hx_output_event;

/* Returns 0 to continue; non-zero stops the parser, which then returns
 * HX_ECANCELLED from feed/finish. */
typedef int (*hx_output_event_fn)(void *user, const hx_output_event *ev);

hx_code hx_output_parser_init(hx_output_parser **out, const hx_output_parser_config *cfg,
                              hx_err *err);
void hx_output_parser_free(hx_output_parser *p); /* NULL ok */

/* Feeds the next chunk of generated text. Events for everything that can be
 * decided are delivered before it returns; bytes that may still be the start
 * of a tag are held back. HX_ENOMEM, HX_ECANCELLED. */
hx_code hx_output_parser_feed(hx_output_parser *p, const char *text, size_t len,
                              hx_output_event_fn fn, void *user, hx_err *err);

/* End of generation: delivers everything held back (an unterminated tool call
 * as content, an unterminated think block as reasoning). The parser must not
 * be fed afterwards. */
hx_code hx_output_parser_finish(hx_output_parser *p, hx_output_event_fn fn, void *user,
                                hx_err *err);

/* Non-streaming convenience: parses a whole text and returns a new OpenAI
 * assistant message object {"role":"assistant","content": str|null,
 * "reasoning_content": str (only if any), "tool_calls": [...] (only if any,
 * arguments as JSON strings)}. NULL with err set on failure. */
json_t *hx_output_parse_message(const hx_output_parser_config *cfg, const char *text, size_t len,
                                hx_err *err);

#endif
