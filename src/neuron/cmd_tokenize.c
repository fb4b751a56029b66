/* cmd_tokenize.c — `neuron tokenize` and `neuron detokenize`.
 *
 *   neuron tokenize --model PATH [--special]   text on stdin -> JSON array of ids
 *   neuron detokenize --model PATH [--skip-special]  JSON array on stdin -> text
 *
 * PATH is a model directory with tokenizer.json, a tokenizer.json file, or a
 * GGUF file. --special parses special-token text (e.g. <|im_start|>) in the
 * input as the special token; without it such text is encoded as plain text. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "engine/tokenizer.h"
#include "neuron/commands.h"

enum { TOKENIZE_STDIN_MAX = 64 << 20 };

static int read_stdin(hx_buf *b, const char *cmd) {
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
    if (hx_buf_append(b, chunk, n)) {
      fprintf(stderr, "%s: input exceeds %d bytes\n", cmd, TOKENIZE_STDIN_MAX);
      return 1;
    }
  }
  if (ferror(stdin)) {
    fprintf(stderr, "%s: error reading stdin\n", cmd);
    return 1;
  }
  return 0;
}

/* Prints the usage line to f; returns the exit code (0 for --help on stdout). */
static int usage_to(FILE *f, const char *cmd) {
  if (strcmp(cmd, "tokenize") == 0)
    fprintf(f, "usage: neuron tokenize --model PATH [--special] < text\n");
  else
    fprintf(f, "usage: neuron detokenize --model PATH [--skip-special] < ids.json\n");
  return f == stdout ? -1 : 2;
}

static int usage(const char *cmd) { return usage_to(stderr, cmd); }

/* Parses --model PATH and one optional flag; returns 0 or the usage code. */
static int parse_args(int argc, char **argv, const char *flag, const char **model, bool *flag_on) {
  *model = NULL;
  *flag_on = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
      *model = argv[++i];
    else if (strncmp(argv[i], "--model=", 8) == 0)
      *model = argv[i] + 8;
    else if (strcmp(argv[i], flag) == 0)
      *flag_on = true;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
      return usage_to(stdout, argv[0]); /* -1: the caller exits 0 */
    else {
      fprintf(stderr, "neuron %s: unknown argument \"%s\"\n", argv[0], argv[i]);
      return usage(argv[0]);
    }
  }
  if (!*model)
    return usage(argv[0]);
  return 0;
}

int neuron_cmd_tokenize(int argc, char **argv) {
  const char *model;
  bool special;
  int u = parse_args(argc, argv, "--special", &model, &special);
  if (u)
    return u < 0 ? 0 : u;
  hx_err err = {0};
  tokenizer *tok = NULL;
  if (tokenizer_load_path(model, &tok, &err)) {
    fprintf(stderr, "neuron tokenize: %s\n", err.msg);
    return 1;
  }
  hx_buf in;
  hx_buf_init(&in, TOKENIZE_STDIN_MAX);
  int rc = read_stdin(&in, "neuron tokenize");
  int32_t *ids = NULL;
  size_t n = 0;
  if (!rc && tokenizer_encode(tok, in.data, in.len, special, &ids, &n, &err)) {
    fprintf(stderr, "neuron tokenize: %s\n", err.msg);
    rc = 1;
  }
  if (!rc) {
    hx_buf out;
    hx_buf_init(&out, (size_t)1 << 40);
    hx_buf_append_char(&out, '[');
    for (size_t i = 0; i < n && !rc; i++)
      rc = hx_buf_printf(&out, i ? ",%d" : "%d", ids[i]) ? 1 : 0;
    hx_buf_append_str(&out, "]\n");
    if (!rc)
      fwrite(out.data, 1, out.len, stdout);
    hx_buf_free(&out);
  }
  free(ids);
  hx_buf_free(&in);
  tokenizer_free(tok);
  return rc;
}

int neuron_cmd_detokenize(int argc, char **argv) {
  const char *model;
  bool skip;
  int u = parse_args(argc, argv, "--skip-special", &model, &skip);
  if (u)
    return u < 0 ? 0 : u;
  hx_err err = {0};
  tokenizer *tok = NULL;
  if (tokenizer_load_path(model, &tok, &err)) {
    fprintf(stderr, "neuron detokenize: %s\n", err.msg);
    return 1;
  }
  hx_buf in;
  hx_buf_init(&in, TOKENIZE_STDIN_MAX);
  int rc = read_stdin(&in, "neuron detokenize");
  json_t *arr = NULL;
  int32_t *ids = NULL;
  size_t n = 0;
  if (!rc) {
    arr = hx_json_parse(in.data ? in.data : "", in.len, (hx_json_limits){TOKENIZE_STDIN_MAX, 4},
                        &err);
    if (!arr || !json_is_array(arr)) {
      fprintf(stderr, "neuron detokenize: stdin: %s\n",
              arr ? "expected a JSON array of token ids" : err.msg);
      rc = 1;
    }
  }
  if (!rc) {
    n = json_array_size(arr);
    ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
      rc = 1;
    for (size_t i = 0; i < n && !rc; i++) {
      json_t *v = json_array_get(arr, i);
      if (!json_is_integer(v) || json_integer_value(v) < 0 ||
          json_integer_value(v) >= (json_int_t)tokenizer_vocab_size(tok)) {
        fprintf(stderr, "neuron detokenize: stdin: element %zu is not a token id in [0, %zu)\n", i,
                tokenizer_vocab_size(tok));
        rc = 1;
      } else
        ids[i] = (int32_t)json_integer_value(v);
    }
  }
  char *text = NULL;
  size_t len = 0;
  if (!rc && tokenizer_decode(tok, ids, n, skip, &text, &len, &err)) {
    fprintf(stderr, "neuron detokenize: %s\n", err.msg);
    rc = 1;
  }
  if (!rc)
    fwrite(text, 1, len, stdout);
  free(text);
  free(ids);
  json_decref(arr);
  hx_buf_free(&in);
  tokenizer_free(tok);
  return rc;
}
