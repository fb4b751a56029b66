/* agent.h — the ACP agent's entry point. */
#ifndef ACP_AGENT_H
#define ACP_AGENT_H

/* Parses the command line, runs the agent on stdin/stdout until EOF; returns
 * the exit code. */
int acp_main(int argc, char **argv);

#endif
