/* main.c — the `cortex` binary: the gateway (`cortex serve`) and the
 * operator CLI. Dispatches to cortex_cmd_* (commands.h). */
#include <stdio.h>
#include <string.h>

#include "cortex/commands.h"

typedef struct {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} command;

static const command commands[] = {
    {"serve", cortex_cmd_serve, "run the gateway (API :31313, metrics :31314)"},
    {"status", cortex_cmd_status, "fleet at a glance: neurons, devices, VRAM, models"},
    {"models", cortex_cmd_models, "the merged model catalogue"},
    {"load", cortex_cmd_load, "load a model (cortex picks the neuron unless --neuron)"},
    {"unload", cortex_cmd_unload, "unload a model"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: cortex <command> [options]\n\n"
             "helexa's gateway: OpenAI + Anthropic APIs in front of a fleet of neurons.\n\n"
             "commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n`cortex <command> --help` describes each command.\n");
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
    printf("cortex %s\n", HELEXA_VERSION);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(argv[1], commands[i].name) == 0)
      return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "cortex: unknown command \"%s\"\n\n", argv[1]);
  usage(stderr);
  return 2;
}
