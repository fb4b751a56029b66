/* main.c — `helexa-acp`: an Agent Client Protocol agent (JSON-RPC 2.0 over
 * stdio) that connects editors to an OpenAI-compatible endpoint. */
#include <stdio.h>
#include <string.h>

#include "acp/agent.h"

int main(int argc, char **argv) { return acp_main(argc, argv); }
