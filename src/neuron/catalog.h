/* catalog.h — the models a neuron can load: a scan of its model directories.
 *
 * An entry is a GGUF file (`*.gguf`; of a split model only the first shard,
 * `*-00001-of-NNNNN.gguf`) or a HuggingFace directory (holding config.json
 * and at least one *.safetensors file), found directly inside one of the
 * directories. Its id is the file name without `.gguf` (shard suffix
 * dropped) or the directory name; the first directory wins on a clash. */
#ifndef NEURON_CATALOG_H
#define NEURON_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

enum { NEURON_CATALOG_MAX = 1024, NEURON_MODEL_ID_MAX = 256, NEURON_PATH_MAX = 4096 };

typedef struct neuron_catalog_entry {
  char id[NEURON_MODEL_ID_MAX];
  char path[NEURON_PATH_MAX];
  const char *format;  /* "gguf" or "hf" (static) */
  uint64_t file_bytes; /* the file, or the sum of the directory's safetensors */
} neuron_catalog_entry;

/* Scans dirs (missing or unreadable directories are skipped with a warning).
 * *out is malloc'd (free()), *n_out entries, at most NEURON_CATALOG_MAX. */
hx_code neuron_catalog_scan(char *const *dirs, size_t n_dirs, neuron_catalog_entry **out,
                            size_t *n_out, hx_err *err);

#endif
