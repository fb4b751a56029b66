/* cmd_run.c — placeholder until the owning module lands. */
#include <stdio.h>

#include "neuron/commands.h"

int neuron_cmd_run(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "neuron run: not available in this build yet\n");
  return 1;
}

int neuron_cmd_bench(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "neuron bench: not available in this build yet\n");
  return 1;
}
