/* jinja.h — a sandboxed interpreter for the Jinja subset chat templates use.
 *
 * Compile once, render many times (a compiled template is immutable and may
 * be rendered from several threads at once). The language and its corner
 * cases follow Python jinja2 3.x as configured by transformers'
 * apply_chat_template: ImmutableSandboxedEnvironment, trim_blocks,
 * lstrip_blocks, loopcontrols, autoescape off, a `tojson` that is
 * json.dumps(ensure_ascii=False), globals raise_exception and strftime_now.
 * docs/templates.md lists what is supported.
 *
 * Sandbox: templates can only read the context they are given; attribute
 * access is limited to data keys, loop/namespace fields and a whitelist of
 * pure string/dict methods. Every render runs under limits (steps, loop
 * iterations, recursion depth, output bytes, memory); exceeding one stops the
 * render with HX_ETOOLARGE and a message naming the limit and template line. */
#ifndef HX_ENGINE_JINJA_H
#define HX_ENGINE_JINJA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

enum {
  HX_JINJA_SOURCE_BYTES_MAX = 1 << 20, /* template source */
  HX_JINJA_PARSE_DEPTH_MAX = 128,      /* nesting of expressions and blocks */
};

#define HX_JINJA_STEPS_DEFAULT ((uint64_t)20000000)
#define HX_JINJA_LOOP_ITERS_DEFAULT ((uint64_t)2000000)
#define HX_JINJA_DEPTH_DEFAULT ((uint32_t)64)
#define HX_JINJA_OUTPUT_BYTES_DEFAULT ((size_t)64 << 20)
#define HX_JINJA_MEMORY_BYTES_DEFAULT ((size_t)512 << 20)

typedef struct hx_jinja_template hx_jinja_template;

typedef struct hx_jinja_options {
  bool trim_blocks;   /* drop the first newline after a block tag */
  bool lstrip_blocks; /* strip spaces/tabs before a block tag at line start */
} hx_jinja_options;

/* Zero fields take the defaults above. */
typedef struct hx_jinja_limits {
  uint64_t steps_max;      /* evaluated expressions + statements */
  uint64_t loop_iters_max; /* loop iterations, summed over the render */
  uint32_t depth_max;      /* macro call depth */
  size_t output_bytes_max; /* rendered output (and any captured block) */
  size_t memory_bytes_max; /* all values created during the render */
} hx_jinja_limits;

typedef struct hx_jinja_render_opts {
  hx_jinja_limits limits;
  int64_t now_unix_s; /* strftime_now's time (UTC); < 0: the system clock */
} hx_jinja_render_opts;

/* Compiles (src, len). `name` prefixes error messages ("NAME:LINE: msg").
 * opts NULL: trim_blocks and lstrip_blocks both on (transformers' settings).
 * HX_EINVAL with the line on syntax errors, HX_EUNSUPPORTED for constructs
 * outside the subset (include, extends, import...), HX_ETOOLARGE, HX_ENOMEM. */
hx_code hx_jinja_compile(hx_jinja_template **out, const char *src, size_t len, const char *name,
                         const hx_jinja_options *opts, hx_err *err);
void hx_jinja_template_free(hx_jinja_template *t); /* NULL ok */

/* Renders with the variables of `context` (a JSON object, borrowed; NULL =
 * empty). JSON values map to Python ones: object → dict (key order kept),
 * array → list, integer → int, real → float, true/false → bool, null → None.
 * On success *out is malloc'd and NUL-terminated (caller frees), *out_len
 * (if non-NULL) its length. Errors: HX_EINVAL (runtime error or
 * raise_exception, message "NAME:LINE: text"), HX_ETOOLARGE (a limit),
 * HX_ENOMEM. */
hx_code hx_jinja_render(const hx_jinja_template *t, const json_t *context,
                        const hx_jinja_render_opts *opts, char **out, size_t *out_len, hx_err *err);

#endif
