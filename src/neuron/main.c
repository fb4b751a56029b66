/* main.c — the `neuron` binary: the per-host daemon (`neuron serve`) and the
 * engine's command-line tools. Dispatches to neuron_cmd_* (commands.h). */
#include <stdio.h>
#include <string.h>

#include "neuron/commands.h"

typedef struct {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} command;

static const command commands[] = {
    {"serve", neuron_cmd_serve, "run the host daemon (HTTP API on :13131)"},
    {"inspect", neuron_cmd_inspect, "describe a GGUF file or HF directory"},
    {"convert", neuron_cmd_convert, "write a GGUF file from an HF directory or GGUF"},
    {"synth", neuron_cmd_synth, "write a random-weight model of a real shape"},
    {"tokenize", neuron_cmd_tokenize, "text on stdin -> JSON array of token ids"},
    {"detokenize", neuron_cmd_detokenize, "JSON array of ids on stdin -> text"},
    {"template", neuron_cmd_template, "render a chat template for a conversation"},
    {"run", neuron_cmd_run, "generate text with a model in this process"},
    {"bench", neuron_cmd_bench, "measure prefill and decode speed"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: neuron <command> [options]\n\n"
             "helexa's per-host daemon and engine tools.\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n`neuron <command> --help` describes each command.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
    printf("neuron %s\n", HELEXA_VERSION);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(argv[1], commands[i].name) == 0)
      return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "neuron: unknown command \"%s\"\n\n", argv[1]);
  usage(stderr);
  return 2;
}
