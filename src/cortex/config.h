/* config.h — cortex.toml and models.toml. (Owned by the config module.) */
#ifndef CORTEX_CONFIG_H
#define CORTEX_CONFIG_H

/* Loads and validates FILE (and the models.toml it refers to), prints a
 * one-screen summary and returns 0, or prints every error as
 * "FILE:LINE: ..." to stderr and returns 1. */
int cortex_config_check_cli(const char *path);

#endif
