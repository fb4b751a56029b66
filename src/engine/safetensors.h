/* safetensors.h — read-only safetensors checkpoints over mmap.
 *
 * A checkpoint is one `*.safetensors` file or a directory: either with a
 * `model.safetensors.index.json` (weight_map name -> shard file) or with a
 * single `model.safetensors`. Each file is: u64 little-endian header length N,
 * N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
 * "__metadata__": {str: str}}, then the data buffer. Validation (hostile
 * input): N <= SAFETENSORS_MAX_HEADER_BYTES and within the file; strict JSON;
 * known dtype; shape product * dtype size == end - begin, no overflow; ranges
 * inside the buffer and not overlapping each other; duplicate names across
 * shards rejected; every index entry must exist in the shard it names.
 * Errors name the file and the tensor. Tensor data points into the mapping. */
#ifndef HX_ENGINE_SAFETENSORS_H
#define HX_ENGINE_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

enum {
  SAFETENSORS_MAX_HEADER_BYTES = 100 * 1024 * 1024, /* the format's own limit */
  SAFETENSORS_MAX_DIMS = 8,
  SAFETENSORS_MAX_SHARDS = 4096,
};

typedef enum st_dtype {
  ST_BOOL,
  ST_U8,
  ST_I8,
  ST_I16,
  ST_U16,
  ST_I32,
  ST_U32,
  ST_I64,
  ST_U64,
  ST_F16,
  ST_BF16,
  ST_F32,
  ST_F64,
  ST_F8_E4M3,
  ST_F8_E5M2,
  ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor {
  const char *name; /* NUL-terminated, owned by the checkpoint */
  st_dtype dtype;
  int n_dims;                          /* 0..8 (0 = scalar) */
  int64_t shape[SAFETENSORS_MAX_DIMS]; /* row-major, outermost first (HF order) */
  const void *data;                    /* into the mapping of its shard */
  size_t nbytes;
  int shard; /* index of the file it lives in */
} st_tensor;

typedef struct safetensors safetensors;

/* path: a .safetensors file or a directory (see above). */
hx_code safetensors_open(const char *path, safetensors **out, hx_err *err);
/* One file's bytes in caller memory (not copied; kept alive until close). */
hx_code safetensors_open_mem(const void *data, size_t len, const char *name, safetensors **out,
                             hx_err *err);
void safetensors_close(safetensors *st); /* st may be NULL */

size_t safetensors_count(const safetensors *st);
const st_tensor *safetensors_at(const safetensors *st, size_t i);           /* sorted by name */
const st_tensor *safetensors_find(const safetensors *st, const char *name); /* NULL if absent */
/* "__metadata__" value for key of the first shard, or NULL. */
const char *safetensors_metadata(const safetensors *st, const char *key);

size_t st_dtype_size(st_dtype t);      /* bytes per element */
const char *st_dtype_name(st_dtype t); /* "BF16", ... */

#endif
