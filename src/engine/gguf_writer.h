/* gguf_writer.h — writes GGUF v3 files, streaming tensor data.
 *
 * Usage: gguf_writer_create; gguf_writer_set_* for metadata (insertion order
 * is kept; setting a key twice replaces its value); gguf_writer_add_tensor
 * for every tensor's info (name, type, shape); gguf_writer_open writes the
 * header, metadata and tensor infos to path; gguf_writer_write_tensor with
 * each tensor's bytes (one call or several consecutive pieces), in the order
 * the tensors were added (data is padded to the alignment);
 * gguf_writer_finish flushes and closes. Tensor data is never held by the
 * writer, so multi-GB files stream through bounded memory. The writer writes
 * to "<path>.tmp" and renames on finish, so a failed write leaves no file. */
#ifndef HX_ENGINE_GGUF_WRITER_H
#define HX_ENGINE_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/gguf.h"
#include "engine/quant.h"

typedef struct gguf_writer gguf_writer;

/* alignment: power of two >= 8 (GGUF_DEFAULT_ALIGNMENT usual); when it is not
 * 32 the writer also stores general.alignment. NULL on OOM. */
gguf_writer *gguf_writer_create(size_t alignment);
void gguf_writer_free(gguf_writer *w); /* abandons an unfinished file; w may be NULL */

hx_code gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
hx_code gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
hx_code gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
hx_code gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
hx_code gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
hx_code gguf_writer_set_str(gguf_writer *w, const char *key, const char *s, size_t len);
/* Array of fixed-size elements (elem_type not STRING/ARRAY): n elements at
 * data in little-endian layout (copied). */
hx_code gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem_type, const void *data,
                            uint64_t n);
/* Array of strings (copied). lens may be NULL (then strings are C strings). */
hx_code gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                const size_t *lens, uint64_t n);
/* Copies any value read from a GGUF file (including nested arrays). */
hx_code gguf_writer_set_value(gguf_writer *w, const char *key, const gguf_value *v);

/* Declares a tensor. ne[0] is the row length; n_dims 1..4. Fails on duplicate
 * name, bad shape, or a row length that is not a multiple of the block size. */
hx_code gguf_writer_add_tensor(gguf_writer *w, const char *name, quant_type type, int n_dims,
                               const int64_t *ne, hx_err *err);

hx_code gguf_writer_open(gguf_writer *w, const char *path, hx_err *err);
/* Writes the next piece of the current tensor's bytes. Pieces of one tensor
 * are consecutive; when they sum to its nbytes the writer pads and moves to
 * the next tensor (one call with all bytes is fine). */
hx_code gguf_writer_write_tensor(gguf_writer *w, const void *data, size_t nbytes, hx_err *err);
/* After all tensors: fsync-free flush, close, rename into place. */
hx_code gguf_writer_finish(gguf_writer *w, hx_err *err);

#endif
