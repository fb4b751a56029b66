/* chat_template.h — render a model's chat template (Jinja) for a conversation.
 *
 * A template is compiled once (hx_chat_template_init) from its source text —
 * the `chat_template` of tokenizer_config.json, `chat_template.jinja`, or the
 * GGUF key `tokenizer.chat_template` — and rendered per request. Rendering is
 * byte-identical to `transformers.apply_chat_template` (Python jinja2 with
 * trim_blocks, lstrip_blocks, loopcontrols, tojson = json.dumps(ensure_ascii=
 * False), raise_exception, strftime_now), inside a sandbox with limits on
 * steps, loop iterations, recursion and output size (see jinja.h).
 *
 * Messages are OpenAI-shaped jansson values, passed to the template as-is:
 *   {"role": "system"|"user"|"assistant"|"tool",
 *    "content": "text" | [{"type":"text","text":"..."}, ...] | null,
 *    "reasoning_content": "...",            (assistant, optional)
 *    "tool_calls": [{"id": "...", "type": "function",
 *                    "function": {"name": "...", "arguments": {..} | "{json}"}}],
 *    "tool_call_id": "...", "name": "..."}  (tool, optional)
 * With `tool_arguments_parse` set, string `function.arguments` that hold a JSON
 * object are parsed into objects before rendering (what vLLM does; templates
 * such as Qwen3.5's iterate `arguments|items`). As transformers does, the
 * first non-null of reasoning_content / thinking / reasoning is exposed under
 * both "thinking" and "reasoning_content"; `tools` and `documents` are always
 * defined (None when absent).
 *
 * Thread safety: a compiled template is immutable; any number of threads may
 * render it at once. */
#ifndef HX_ENGINE_CHAT_TEMPLATE_H
#define HX_ENGINE_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct hx_chat_template hx_chat_template; /* opaque, immutable after init */

/* Which output-parser dialect a template's model speaks (derived from the
 * template text; see output_parser.h). */
typedef enum hx_chat_family {
  HX_CHAT_FAMILY_GENERIC = 0, /* no known tool-call syntax; <think> still parsed */
  HX_CHAT_FAMILY_QWEN3_JSON,  /* <tool_call>{"name":..,"arguments":..}</tool_call> */
  HX_CHAT_FAMILY_QWEN_XML,    /* <tool_call><function=N><parameter=P>..</parameter>.. */
} hx_chat_family;

/* Sandbox limits; a zero field means "use the default" (HX_JINJA_*_DEFAULT in
 * jinja.h). Exceeding one fails the render with HX_ETOOLARGE and a message
 * naming the limit. */
typedef struct hx_chat_template_limits {
  uint64_t steps_max;      /* interpreter steps (expressions + statements) */
  uint64_t loop_iters_max; /* total loop iterations over the whole render */
  uint32_t depth_max;      /* macro / call / expression recursion depth */
  size_t output_bytes_max; /* rendered text, and any single string value */
} hx_chat_template_limits;

typedef struct hx_chat_render_args {
  const json_t *messages;     /* array, required (borrowed) */
  const json_t *tools;        /* array of OpenAI tool objects, or NULL = None */
  bool add_generation_prompt; /* open an assistant turn at the end */
  const json_t *kwargs;       /* object of extra template variables (e.g.
                                 {"enable_thinking": false}), or NULL; they
                                 override the fields below of the same name */
  const char *bos_token;      /* NULL: variable left undefined */
  const char *eos_token;      /* NULL: variable left undefined */
  bool tool_arguments_parse;  /* parse string function.arguments (see top) */
  int64_t now_unix_s;         /* time for strftime_now (UTC); < 0: the clock */
  hx_chat_template_limits limits;
} hx_chat_render_args;

/* Compiles template source (src, len; need not be NUL-terminated). `name`
 * (e.g. the file path) prefixes error messages: "qwen3.jinja:12: ...".
 * On success *out owns the template; free with hx_chat_template_free.
 * Errors: HX_EINVAL (syntax, with line), HX_ETOOLARGE (source > 1 MiB),
 * HX_ENOMEM. */
hx_code hx_chat_template_init(hx_chat_template **out, const char *src, size_t len, const char *name,
                              hx_err *err);
void hx_chat_template_free(hx_chat_template *t); /* NULL ok */

/* Renders the prompt. On success *out is a malloc'd NUL-terminated string the
 * caller frees, *out_len its length (out_len may be NULL). On failure *out is
 * NULL and err says why: HX_EINVAL for template errors and raise_exception
 * (message "template.jinja:LINE: <text>"), HX_ETOOLARGE for sandbox limits. */
hx_code hx_chat_template_render(const hx_chat_template *t, const hx_chat_render_args *args,
                                char **out, size_t *out_len, hx_err *err);

/* The tool-call dialect of this template's model (by the syntax its text
 * teaches the model). */
hx_chat_family hx_chat_template_family(const hx_chat_template *t);

/* True when `prompt` (a rendered prompt ending with the generation prompt)
 * leaves a <think> block open, so that generation starts inside reasoning
 * (Qwen3.5, Qwen3-2507-thinking, DeepSeek-R1 distills; Qwen3 with
 * enable_thinking=false closes it). Looks only after the last "<think>". */
bool hx_chat_prompt_think_open(const char *prompt, size_t len);

/* Loads template source from PATH: a `.jinja` file; a HuggingFace directory
 * (chat_template.jinja, else tokenizer_config.json "chat_template" — string,
 * or the entry named "default" of a list); or a tokenizer_config.json file.
 * *src_out is malloc'd, NUL-terminated. HX_ENOTFOUND when none is present. */
hx_code hx_chat_template_source_load(const char *path, char **src_out, size_t *len_out,
                                     hx_err *err);

#endif
