/* cmd_model.c — placeholder until the owning module lands. */
#include <stdio.h>

#include "neuron/commands.h"

int neuron_cmd_inspect(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "neuron inspect: not available in this build yet\n");
  return 1;
}

int neuron_cmd_convert(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "neuron convert: not available in this build yet\n");
  return 1;
}

int neuron_cmd_synth(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "neuron synth: not available in this build yet\n");
  return 1;
}
