/* cmd_template.c — `neuron template`: render a model's chat template.
 *
 *   neuron template --model PATH --messages FILE.json [--tools FILE.json]
 *                   [--kwargs JSON] [--no-generation-prompt] [--now UNIX_S]
 *                   [--bos TEXT] [--eos TEXT]
 *
 * PATH: a .jinja file, a HuggingFace directory, a tokenizer_config.json or a
 * GGUF file. Prints the rendered prompt to stdout, byte for byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "engine/chat_template.h"
#include "neuron/commands.h"

static void usage(void) {
  fprintf(stderr, "usage: neuron template --model PATH --messages FILE.json [--tools FILE.json]\n"
                  "                       [--kwargs JSON] [--no-generation-prompt] [--now UNIX_S]\n"
                  "                       [--bos TEXT] [--eos TEXT]\n");
}

static json_t *load_json_file(const char *path, hx_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    hx_err_set(err, HX_ENOTFOUND, "%s: cannot open", path);
    return NULL;
  }
  hx_buf b;
  hx_buf_init(&b, (size_t)64 << 20);
  char tmp[65536];
  size_t n;
  hx_code rc = HX_OK;
  while (rc == HX_OK && (n = fread(tmp, 1, sizeof tmp, f)) > 0)
    rc = hx_buf_append(&b, tmp, n);
  fclose(f);
  json_t *v = NULL;
  if (rc != HX_OK)
    hx_err_set(err, rc, "%s: file too large", path);
  else if (!(v = hx_json_parse(b.data ? b.data : "", b.len, (hx_json_limits){(size_t)64 << 20, 64},
                               err)))
    hx_err_wrap(err, "%s", path);
  hx_buf_free(&b);
  return v;
}

int neuron_cmd_template(int argc, char **argv) {
  const char *model = NULL, *messages_path = NULL, *tools_path = NULL, *kwargs_text = NULL;
  hx_chat_render_args args = {
      .add_generation_prompt = true, .tool_arguments_parse = true, .now_unix_s = -1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--no-generation-prompt")) {
      args.add_generation_prompt = false;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage();
      return 0;
    }
    if (!val) {
      fprintf(stderr, "neuron template: %s needs a value\n", a);
      usage();
      return 2;
    }
    if (!strcmp(a, "--model"))
      model = val;
    else if (!strcmp(a, "--messages"))
      messages_path = val;
    else if (!strcmp(a, "--tools"))
      tools_path = val;
    else if (!strcmp(a, "--kwargs"))
      kwargs_text = val;
    else if (!strcmp(a, "--bos"))
      args.bos_token = val;
    else if (!strcmp(a, "--eos"))
      args.eos_token = val;
    else if (!strcmp(a, "--now")) {
      char *end;
      args.now_unix_s = strtoll(val, &end, 10);
      if (*end || args.now_unix_s < 0) {
        fprintf(stderr, "neuron template: --now must be a non-negative integer\n");
        return 2;
      }
    } else {
      fprintf(stderr, "neuron template: unknown option %s\n", a);
      usage();
      return 2;
    }
    i++;
  }
  if (!model || !messages_path) {
    usage();
    return 2;
  }
  hx_err err = {0};
  int rc = 1;
  char *src = NULL, *out = NULL;
  size_t src_len = 0, out_len = 0;
  json_t *messages = NULL, *tools = NULL, *kwargs = NULL;
  hx_chat_template *t = NULL;
  if (hx_chat_template_source_load(model, &src, &src_len, &err))
    goto done;
  if (hx_chat_template_init(&t, src, src_len, model, &err))
    goto done;
  if (!(messages = load_json_file(messages_path, &err)))
    goto done;
  if (tools_path && !(tools = load_json_file(tools_path, &err)))
    goto done;
  if (kwargs_text) {
    kwargs = hx_json_parse(kwargs_text, strlen(kwargs_text), (hx_json_limits){1 << 20, 64}, &err);
    if (!kwargs) {
      hx_err_wrap(&err, "--kwargs");
      goto done;
    }
    if (!json_is_object(kwargs)) {
      hx_err_set(&err, HX_EINVAL, "--kwargs must be a JSON object");
      goto done;
    }
  }
  args.messages = messages;
  args.tools = tools;
  args.kwargs = kwargs;
  if (hx_chat_template_render(t, &args, &out, &out_len, &err))
    goto done;
  fwrite(out, 1, out_len, stdout);
  rc = fflush(stdout) == 0 ? 0 : 1;
done:
  if (rc)
    fprintf(stderr, "neuron template: %s\n", err.msg[0] ? err.msg : "failed");
  free(out);
  free(src);
  json_decref(messages);
  json_decref(tools);
  json_decref(kwargs);
  hx_chat_template_free(t);
  return rc;
}
