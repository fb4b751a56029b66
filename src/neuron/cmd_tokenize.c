/* cmd_tokenize.c — placeholder until the owning module lands. */
#include <stdio.h>

#include "neuron/commands.h"

int neuron_cmd_tokenize(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "neuron tokenize: not available in this build yet\n");
  return 1;
}

int neuron_cmd_detokenize(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "neuron detokenize: not available in this build yet\n");
  return 1;
}
