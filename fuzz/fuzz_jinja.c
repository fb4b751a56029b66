/* fuzz_jinja.c — compile arbitrary template text and render it against a
 * fixed chat context under tight sandbox limits: must never crash, hang or
 * leak; errors are fine. Seeds: the conformance templates. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "engine/jinja.h"

static const char *CONTEXT =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, {\"role\": \"user\", "
    "\"content\": \"hi <tool_response>\"}, {\"role\": \"assistant\", \"content\": "
    "\"<think>r</think>a\", "
    "\"reasoning_content\": \"r\", \"tool_calls\": [{\"id\": \"call_123456789\", \"type\": "
    "\"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"x\": [1, 2.5, null]}}}]}, "
    "{\"role\": \"tool\", \"tool_call_id\": \"call_123456789\", \"content\": \"ok\"}, {\"role\": "
    "\"user\", \"content\": [{\"type\": \"text\", \"text\": \"parts\"}]}], \"tools\": [{\"type\": "
    "\"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}}], "
    "\"add_generation_prompt\": true, \"enable_thinking\": false, \"bos_token\": \"<s>\", "
    "\"eos_token\": \"</s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static json_t *ctx;
  if (!ctx)
    ctx = json_loads(CONTEXT, 0, NULL);
  hx_jinja_template *t;
  if (hx_jinja_compile(&t, (const char *)data, size, "fuzz", NULL, NULL) != HX_OK)
    return 0;
  hx_jinja_render_opts opts = {.now_unix_s = 0};
  opts.limits.steps_max = 200000;
  opts.limits.loop_iters_max = 20000;
  opts.limits.output_bytes_max = 1 << 20;
  opts.limits.memory_bytes_max = 64 << 20;
  char *out = NULL;
  hx_jinja_render(t, ctx, &opts, &out, NULL, NULL);
  free(out);
  hx_jinja_template_free(t);
  return 0;
}
