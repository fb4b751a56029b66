/* commands.h — the `cortex` subcommands; each returns the exit code. */
#ifndef CORTEX_COMMANDS_H
#define CORTEX_COMMANDS_H

int cortex_cmd_serve(int argc, char **argv);  /* cmd_serve.c */
int cortex_cmd_status(int argc, char **argv); /* cmd_admin.c */
int cortex_cmd_models(int argc, char **argv); /* cmd_admin.c */
int cortex_cmd_load(int argc, char **argv);   /* cmd_admin.c */
int cortex_cmd_unload(int argc, char **argv); /* cmd_admin.c */

#endif
