/* fuzz_output_parser.c — arbitrary generated text through the streaming
 * output parser in every configuration, whole and split in two at a
 * fuzzer-chosen point: must not crash or leak, and both splits must give the
 * same content, reasoning and tool calls. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "engine/output_parser.h"

static json_t *tools(void) {
  static json_t *t;
  if (!t)
    t = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
                   "\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
                   "\"object\"},\"c\":{\"type\":\"boolean\"}}}}}]",
                   0, NULL);
  return t;
}

typedef struct acc {
  hx_buf text[3]; /* content, reasoning, tool calls */
} acc;

static int on_event(void *user, const hx_output_event *ev) {
  acc *a = user;
  int slot = ev->kind == HX_OUTPUT_CONTENT ? 0 : ev->kind == HX_OUTPUT_REASONING ? 1 : 2;
  if (ev->kind == HX_OUTPUT_TOOL_START)
    hx_buf_append_str(&a->text[2], ev->name);
  else if (ev->text)
    hx_buf_append(&a->text[slot], ev->text, ev->len);
  return 0;
}

static void run(const hx_output_parser_config *cfg, const char *t, size_t n, size_t k, acc *a) {
  for (int i = 0; i < 3; i++)
    hx_buf_init(&a->text[i], 1 << 24);
  hx_output_parser *p;
  if (hx_output_parser_init(&p, cfg, NULL) != HX_OK)
    abort();
  if (hx_output_parser_feed(p, t, k, on_event, a, NULL) ||
      hx_output_parser_feed(p, t + k, n - k, on_event, a, NULL) ||
      hx_output_parser_finish(p, on_event, a, NULL))
    abort();
  hx_output_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  uint8_t mode = data[0], cut = data[1];
  const char *t = (const char *)data + 2;
  size_t n = size - 2;
  hx_output_parser_config cfg = {
      .family = (hx_chat_family)(mode % 3),
      .think_open = (mode >> 2) & 1,
      .parse_think = !((mode >> 3) & 1),
      .parse_tools = !((mode >> 4) & 1),
      .tools = (mode >> 5) & 1 ? tools() : NULL,
      .tool_call_max_bytes = (mode >> 6) & 1 ? 64 : 0,
  };
  json_decref(hx_output_parse_message(&cfg, t, n, NULL));
  acc whole, split;
  run(&cfg, t, n, 0, &whole);
  run(&cfg, t, n, n ? cut % (n + 1) : 0, &split);
  for (int i = 0; i < 3; i++) {
    /* a block given up on for size may end at a chunk-dependent point */
    if (!cfg.tool_call_max_bytes &&
        !hx_slice_eq(hx_buf_slice(&whole.text[i]), hx_buf_slice(&split.text[i])))
      abort();
    hx_buf_free(&whole.text[i]);
    hx_buf_free(&split.text[i]);
  }
  return 0;
}
