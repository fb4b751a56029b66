/* config.c — placeholder until the config module lands. */
#include "neuron/config.h"

#include <stdio.h>

int neuron_config_check_cli(const char *path) {
  fprintf(stderr, "%s: config checking not available in this build yet\n", path);
  return 1;
}
