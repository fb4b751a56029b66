/* config.h — neuron.toml. (Owned by the config module; see docs/config.md.) */
#ifndef NEURON_CONFIG_H
#define NEURON_CONFIG_H

/* Loads and validates FILE, prints a one-screen summary to stdout and returns
 * 0, or prints every error as "FILE:LINE: ..." to stderr and returns 1. */
int neuron_config_check_cli(const char *path);

#endif
