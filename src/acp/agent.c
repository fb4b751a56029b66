/* agent.c — placeholder until the ACP agent lands. */
#include "acp/agent.h"

#include <stdio.h>
#include <string.h>

int acp_main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0) {
      printf("usage: helexa-acp [--endpoint URL] [--model ID] [--api-key-env NAME]\n");
      return 0;
    }
    if (strcmp(argv[i], "--version") == 0) {
      printf("helexa-acp %s\n", HELEXA_VERSION);
      return 0;
    }
  }
  fprintf(stderr, "helexa-acp: not available in this build yet\n");
  return 1;
}
