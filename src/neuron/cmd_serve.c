/* cmd_serve.c — `neuron serve [--config FILE] [--check]`. */
#include <stdio.h>
#include <string.h>

#include "neuron/commands.h"
#include "neuron/config.h"

int neuron_cmd_serve(int argc, char **argv) {
  const char *config = NULL;
  int check = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
      config = argv[++i];
    else if (strcmp(argv[i], "--check") == 0)
      check = 1;
    else if (strcmp(argv[i], "--help") == 0) {
      printf("usage: neuron serve [--config neuron.toml] [--check]\n");
      return 0;
    } else {
      fprintf(stderr, "neuron serve: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (check) {
    if (!config) {
      fprintf(stderr, "neuron serve: --check needs --config FILE\n");
      return 2;
    }
    return neuron_config_check_cli(config);
  }
  fprintf(stderr, "neuron serve: the daemon is not available in this build yet\n");
  return 1;
}
