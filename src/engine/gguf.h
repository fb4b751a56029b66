/* gguf.h — read-only GGUF (v2, v3) over an mmap of the file.
 *
 * gguf_open maps the file and validates ALL of it before returning: header,
 * every key/value (all value types, nested arrays), every tensor info, the
 * alignment and the data section. Nothing is copied: strings, array payloads
 * and tensor data point into the mapping and stay valid until gguf_close.
 * The file is treated as hostile: every count, length, offset, dimension and
 * product is overflow-checked and checked against the file size; a violation
 * is HX_EFORMAT (or HX_ETOOLARGE / HX_EUNSUPPORTED) with a message that names
 * the file and the offending key or tensor, e.g.
 *   "m.gguf: tensor \"blk.0.attn_q.weight\": ne[0]=100 is not a multiple of
 *    the block size 256 of q4_K".
 *
 * Layout reminders (little-endian): magic "GGUF", u32 version, u64 n_tensors,
 * u64 n_kv, kv[] {string key, u32 type, value}, tensor_info[] {string name,
 * u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset}, padding to
 * general.alignment (default 32), data. Strings are u64 length + bytes (not
 * NUL-terminated in the file). Tensor ne[0] is the contiguous (row) dimension. */
#ifndef HX_ENGINE_GGUF_H
#define HX_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"
#include "engine/quant.h"

/* GGUF metadata value types (gguf spec numbering). */
typedef enum gguf_type {
  GGUF_TYPE_UINT8 = 0,
  GGUF_TYPE_INT8 = 1,
  GGUF_TYPE_UINT16 = 2,
  GGUF_TYPE_INT16 = 3,
  GGUF_TYPE_UINT32 = 4,
  GGUF_TYPE_INT32 = 5,
  GGUF_TYPE_FLOAT32 = 6,
  GGUF_TYPE_BOOL = 7,
  GGUF_TYPE_STRING = 8,
  GGUF_TYPE_ARRAY = 9,
  GGUF_TYPE_UINT64 = 10,
  GGUF_TYPE_INT64 = 11,
  GGUF_TYPE_FLOAT64 = 12,
  GGUF_TYPE_COUNT
} gguf_type;

enum {
  GGUF_DEFAULT_ALIGNMENT = 32,
  GGUF_MAX_DIMS = 4,
  GGUF_MAX_ARRAY_DEPTH = 4,   /* nested arrays deeper than this: rejected */
  GGUF_MAX_KEY_BYTES = 65535, /* key / tensor name length limit */
  GGUF_MAX_KV = 1 << 20,      /* metadata pairs */
  GGUF_MAX_TENSORS = 1 << 20, /* tensor infos */
};

/* A metadata value. Scalars are decoded; strings and arrays point into the
 * mapping. For arrays: elem_type, n, and either `raw` (fixed-size element
 * types: n * size bytes, little-endian, possibly unaligned — read elements
 * with gguf_arr_* below) or `items` (STRING and ARRAY elements: n decoded
 * values, owned by the gguf_file). */
typedef struct gguf_value {
  gguf_type type;
  union {
    uint64_t u64; /* UINT8/16/32/64 */
    int64_t i64;  /* INT8/16/32/64 */
    double f64;   /* FLOAT32/64 */
    bool b;       /* BOOL */
    hx_slice str; /* STRING (not NUL-terminated; may contain NUL bytes) */
    struct {
      gguf_type elem_type;
      uint64_t n;
      const uint8_t *raw;             /* fixed-size elements */
      const struct gguf_value *items; /* STRING / ARRAY elements */
    } arr;
  } v;
} gguf_value;

/* A tensor of the file. */
typedef struct gguf_tensor {
  const char *name;          /* NUL-terminated copy, owned by the gguf_file */
  quant_type type;           /* always quant_type_is_valid */
  int n_dims;                /* 1..4 */
  int64_t ne[GGUF_MAX_DIMS]; /* ne[0] = row length; unused dims are 1; all >= 1 */
  uint64_t offset;           /* relative to the data section; aligned */
  const void *data;          /* into the mapping */
  size_t nbytes;             /* ne product in bytes of type */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Maps and validates path. On success *out owns the mapping. */
hx_code gguf_open(const char *path, gguf_file **out, hx_err *err);
/* Same over caller memory (kept alive by the caller until gguf_close; not
 * copied). `name` is used in messages. For fuzzing and tests. */
hx_code gguf_open_mem(const void *data, size_t len, const char *name, gguf_file **out, hx_err *err);
void gguf_close(gguf_file *f); /* f may be NULL */

uint32_t gguf_version(const gguf_file *f);
size_t gguf_alignment(const gguf_file *f);
size_t gguf_data_offset(const gguf_file *f); /* file offset of the data section */
size_t gguf_file_size(const gguf_file *f);
const char *gguf_name(const gguf_file *f);      /* the path or name given at open */
const void *gguf_file_base(const gguf_file *f); /* start of the mapping */

/* --- metadata ------------------------------------------------------------ */

size_t gguf_kv_count(const gguf_file *f);
const char *gguf_kv_key(const gguf_file *f, size_t i); /* NUL-terminated, owned by f */
const gguf_value *gguf_kv_value(const gguf_file *f, size_t i);
/* Value for key or NULL when absent (O(1) average, hash lookup). */
const gguf_value *gguf_get(const gguf_file *f, const char *key);

/* Typed getters. Missing key: HX_ENOTFOUND when required, else HX_OK with
 * *out untouched. Integers accept any integer value type whose value lies in
 * [lo, hi]; floats accept FLOAT32/64 and integers; errors name the key. */
hx_code gguf_get_int(const gguf_file *f, const char *key, bool required, int64_t lo, int64_t hi,
                     int64_t *out, hx_err *err);
hx_code gguf_get_float(const gguf_file *f, const char *key, bool required, double *out,
                       hx_err *err);
hx_code gguf_get_bool(const gguf_file *f, const char *key, bool required, bool *out, hx_err *err);
hx_code gguf_get_str(const gguf_file *f, const char *key, bool required, hx_slice *out,
                     hx_err *err);
/* Array of elem_type (GGUF_TYPE_COUNT = any). */
hx_code gguf_get_arr(const gguf_file *f, const char *key, bool required, gguf_type elem_type,
                     const gguf_value **out, hx_err *err);

/* Element i (< arr->v.arr.n) of an array value, by element kind. The caller
 * checks elem_type; these assert it. */
int64_t gguf_arr_int(const gguf_value *arr, uint64_t i);  /* any integer or BOOL elem type */
double gguf_arr_float(const gguf_value *arr, uint64_t i); /* FLOAT32/64 */
hx_slice gguf_arr_str(const gguf_value *arr, uint64_t i); /* STRING */

/* Size in bytes of one fixed-size value type; 0 for STRING/ARRAY/invalid. */
size_t gguf_type_size(gguf_type t);
const char *gguf_type_name(gguf_type t); /* "uint32", "string", ... */

/* --- tensors ------------------------------------------------------------- */

size_t gguf_tensor_count(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, size_t i); /* file order */
/* Tensor by name or NULL (hash lookup). */
const gguf_tensor *gguf_tensor_find(const gguf_file *f, const char *name);

#endif
