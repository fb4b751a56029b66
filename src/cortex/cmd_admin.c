/* cmd_admin.c — placeholder until the gateway's operator commands land. */
#include <stdio.h>

#include "cortex/commands.h"

static int unavailable(const char *name) {
  fprintf(stderr, "cortex %s: not available in this build yet\n", name);
  return 1;
}

int cortex_cmd_status(int argc, char **argv) {
  (void)argc;
  return unavailable(argv[0]);
}
int cortex_cmd_models(int argc, char **argv) {
  (void)argc;
  return unavailable(argv[0]);
}
int cortex_cmd_load(int argc, char **argv) {
  (void)argc;
  return unavailable(argv[0]);
}
int cortex_cmd_unload(int argc, char **argv) {
  (void)argc;
  return unavailable(argv[0]);
}
