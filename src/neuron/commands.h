/* commands.h — the `neuron` subcommands. Each returns the process exit code
 * (0 success, 1 failure the user caused or the world caused, 2 usage error).
 * argv[0] is the subcommand name. */
#ifndef NEURON_COMMANDS_H
#define NEURON_COMMANDS_H

int neuron_cmd_serve(int argc, char **argv);      /* cmd_serve.c */
int neuron_cmd_inspect(int argc, char **argv);    /* cmd_model.c */
int neuron_cmd_convert(int argc, char **argv);    /* cmd_model.c */
int neuron_cmd_synth(int argc, char **argv);      /* cmd_model.c */
int neuron_cmd_tokenize(int argc, char **argv);   /* cmd_tokenize.c */
int neuron_cmd_detokenize(int argc, char **argv); /* cmd_tokenize.c */
int neuron_cmd_template(int argc, char **argv);   /* cmd_template.c */
int neuron_cmd_run(int argc, char **argv);        /* cmd_run.c */
int neuron_cmd_bench(int argc, char **argv);      /* cmd_run.c */

#endif
