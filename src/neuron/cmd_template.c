/* cmd_template.c — placeholder until the owning module lands. */
#include <stdio.h>

#include "neuron/commands.h"

int neuron_cmd_template(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "neuron template: not available in this build yet\n");
  return 1;
}
