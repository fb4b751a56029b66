/* gguf_writer.c — GGUF v3 writer. Metadata is serialized into memory as it
 * is set (one hx_buf per key, so a key can be replaced); tensor infos are
 * kept until gguf_writer_open, which lays out offsets and writes the header;
 * tensor data then streams straight to the file. */
#include "engine/gguf_writer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

enum { WRITER_MAX_VALUE_BYTES = 1 << 30 };

typedef struct {
  char *key;
  hx_buf val; /* u32 type + encoded value */
} w_kv;

typedef struct {
  char *name;
  quant_type type;
  int n_dims;
  int64_t ne[4];
  size_t nbytes;
  uint64_t offset;
} w_tensor;

struct gguf_writer {
  size_t alignment;
  w_kv *kvs;
  size_t n_kv, cap_kv;
  w_tensor *tensors;
  size_t n_tensors, cap_tensors;
  FILE *fp;
  char *path, *tmp_path;
  size_t next_tensor;
  uint64_t written;   /* bytes of the data section written so far (whole tensors) */
  size_t cur_written; /* bytes of the current tensor written so far */
  bool failed;
};

gguf_writer *gguf_writer_create(size_t alignment) {
  if (alignment < 8 || (alignment & (alignment - 1)))
    return NULL;
  gguf_writer *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  w->alignment = alignment;
  if (alignment != GGUF_DEFAULT_ALIGNMENT &&
      gguf_writer_set_u32(w, "general.alignment", (uint32_t)alignment)) {
    free(w);
    return NULL;
  }
  return w;
}

void gguf_writer_free(gguf_writer *w) {
  if (!w)
    return;
  if (w->fp) {
    fclose(w->fp);
    remove(w->tmp_path);
  }
  for (size_t i = 0; i < w->n_kv; i++) {
    free(w->kvs[i].key);
    hx_buf_free(&w->kvs[i].val);
  }
  for (size_t i = 0; i < w->n_tensors; i++)
    free(w->tensors[i].name);
  free(w->kvs);
  free(w->tensors);
  free(w->path);
  free(w->tmp_path);
  free(w);
}

/* Returns the value buffer for key, emptied (replacing an earlier value). */
static hx_buf *kv_slot(gguf_writer *w, const char *key) {
  for (size_t i = 0; i < w->n_kv; i++)
    if (strcmp(w->kvs[i].key, key) == 0) {
      hx_buf_reset(&w->kvs[i].val);
      return &w->kvs[i].val;
    }
  if (w->n_kv == w->cap_kv) {
    size_t cap = w->cap_kv ? 2 * w->cap_kv : 32;
    w_kv *k = realloc(w->kvs, cap * sizeof *k);
    if (!k)
      return NULL;
    w->kvs = k;
    w->cap_kv = cap;
  }
  w_kv *kv = &w->kvs[w->n_kv];
  kv->key = strdup(key);
  if (!kv->key)
    return NULL;
  hx_buf_init(&kv->val, WRITER_MAX_VALUE_BYTES);
  w->n_kv++;
  return &kv->val;
}

static hx_code put_u32(hx_buf *b, uint32_t v) { return hx_buf_append(b, &v, 4); }
static hx_code put_u64(hx_buf *b, uint64_t v) { return hx_buf_append(b, &v, 8); }
static hx_code put_str(hx_buf *b, const char *s, size_t n) {
  hx_code rc = put_u64(b, n);
  return rc ? rc : hx_buf_append(b, s, n);
}

static hx_code set_scalar(gguf_writer *w, const char *key, gguf_type t, const void *v) {
  hx_buf *b = kv_slot(w, key);
  if (!b)
    return HX_ENOMEM;
  hx_code rc = put_u32(b, t);
  return rc ? rc : hx_buf_append(b, v, gguf_type_size(t));
}

hx_code gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) {
  return set_scalar(w, key, GGUF_TYPE_UINT32, &v);
}
hx_code gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) {
  return set_scalar(w, key, GGUF_TYPE_INT32, &v);
}
hx_code gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) {
  return set_scalar(w, key, GGUF_TYPE_UINT64, &v);
}
hx_code gguf_writer_set_f32(gguf_writer *w, const char *key, float v) {
  return set_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}
hx_code gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) {
  uint8_t b = v ? 1 : 0;
  return set_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

hx_code gguf_writer_set_str(gguf_writer *w, const char *key, const char *s, size_t len) {
  hx_buf *b = kv_slot(w, key);
  if (!b)
    return HX_ENOMEM;
  hx_code rc = put_u32(b, GGUF_TYPE_STRING);
  return rc ? rc : put_str(b, s, len);
}

hx_code gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type et, const void *data,
                            uint64_t n) {
  size_t esz = gguf_type_size(et), bytes;
  if (!esz || hx_size_mul(esz, (size_t)n, &bytes))
    return HX_EINVAL;
  hx_buf *b = kv_slot(w, key);
  if (!b)
    return HX_ENOMEM;
  hx_code rc;
  if ((rc = put_u32(b, GGUF_TYPE_ARRAY)) || (rc = put_u32(b, et)) || (rc = put_u64(b, n)))
    return rc;
  return hx_buf_append(b, data, bytes);
}

hx_code gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                const size_t *lens, uint64_t n) {
  hx_buf *b = kv_slot(w, key);
  if (!b)
    return HX_ENOMEM;
  hx_code rc;
  if ((rc = put_u32(b, GGUF_TYPE_ARRAY)) || (rc = put_u32(b, GGUF_TYPE_STRING)) ||
      (rc = put_u64(b, n)))
    return rc;
  for (uint64_t i = 0; i < n; i++)
    if ((rc = put_str(b, strs[i], lens ? lens[i] : strlen(strs[i]))))
      return rc;
  return HX_OK;
}

/* Encodes v (without its type tag when `tagged` is false: array items). */
static hx_code put_value(hx_buf *b, const gguf_value *v, bool tagged) {
  hx_code rc;
  if (tagged && (rc = put_u32(b, v->type)))
    return rc;
  switch (v->type) {
  case GGUF_TYPE_STRING:
    return put_str(b, v->v.str.ptr, v->v.str.len);
  case GGUF_TYPE_ARRAY: {
    gguf_type et = v->v.arr.elem_type;
    if ((rc = put_u32(b, et)) || (rc = put_u64(b, v->v.arr.n)))
      return rc;
    size_t esz = gguf_type_size(et);
    if (esz)
      return hx_buf_append(b, v->v.arr.raw, esz * (size_t)v->v.arr.n);
    for (uint64_t i = 0; i < v->v.arr.n; i++)
      if ((rc = put_value(b, &v->v.arr.items[i], false)))
        return rc;
    return HX_OK;
  }
  default: {
    uint8_t tmp[8];
    switch (v->type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
      tmp[0] = v->type == GGUF_TYPE_BOOL ? (uint8_t)v->v.b : (uint8_t)v->v.u64;
      break;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: {
      uint16_t x = (uint16_t)v->v.u64;
      memcpy(tmp, &x, 2);
      break;
    }
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32: {
      uint32_t x = (uint32_t)v->v.u64;
      memcpy(tmp, &x, 4);
      break;
    }
    case GGUF_TYPE_FLOAT32: {
      float x = (float)v->v.f64;
      memcpy(tmp, &x, 4);
      break;
    }
    default: /* 64-bit */
      memcpy(tmp, &v->v.u64, 8);
      break;
    }
    return hx_buf_append(b, tmp, gguf_type_size(v->type));
  }
  }
}

hx_code gguf_writer_set_value(gguf_writer *w, const char *key, const gguf_value *v) {
  hx_buf *b = kv_slot(w, key);
  if (!b)
    return HX_ENOMEM;
  return put_value(b, v, true);
}

hx_code gguf_writer_add_tensor(gguf_writer *w, const char *name, quant_type type, int n_dims,
                               const int64_t *ne, hx_err *err) {
  HX_ASSERT(!w->fp);
  if (!name || !*name || strlen(name) > GGUF_MAX_KEY_BYTES)
    return hx_err_set(err, HX_EINVAL, "gguf writer: bad tensor name");
  if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !quant_type_is_valid(type))
    return hx_err_set(err, HX_EINVAL, "gguf writer: tensor \"%s\": bad n_dims or type", name);
  for (size_t i = 0; i < w->n_tensors; i++)
    if (strcmp(w->tensors[i].name, name) == 0)
      return hx_err_set(err, HX_EINVAL, "gguf writer: duplicate tensor \"%s\"", name);
  w_tensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
  size_t rows = 1;
  for (int d = 0; d < n_dims; d++) {
    if (ne[d] < 1)
      return hx_err_set(err, HX_EINVAL, "gguf writer: tensor \"%s\": ne[%d] < 1", name, d);
    t.ne[d] = ne[d];
    if (d > 0 && hx_size_mul(rows, (size_t)ne[d], &rows))
      return hx_err_set(err, HX_EINVAL, "gguf writer: tensor \"%s\": size overflows", name);
  }
  size_t row_bytes;
  if (!quant_row_bytes(type, ne[0], &row_bytes) || hx_size_mul(row_bytes, rows, &t.nbytes))
    return hx_err_set(err, HX_EINVAL,
                      "gguf writer: tensor \"%s\": row length %lld is not a multiple of the %s "
                      "block size",
                      name, (long long)ne[0], quant_type_name(type));
  if (w->n_tensors == w->cap_tensors) {
    size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
    w_tensor *p = realloc(w->tensors, cap * sizeof *p);
    if (!p)
      return hx_err_set(err, HX_ENOMEM, "gguf writer: out of memory");
    w->tensors = p;
    w->cap_tensors = cap;
  }
  t.name = strdup(name);
  if (!t.name)
    return hx_err_set(err, HX_ENOMEM, "gguf writer: out of memory");
  w->tensors[w->n_tensors++] = t;
  return HX_OK;
}

static size_t pad_to(size_t x, size_t a) { return (x + a - 1) / a * a; }

static hx_code write_all(gguf_writer *w, const void *p, size_t n, hx_err *err) {
  if (n && fwrite(p, 1, n, w->fp) != n) {
    w->failed = true;
    return hx_err_set(err, HX_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
  }
  return HX_OK;
}

static hx_code write_zeros(gguf_writer *w, size_t n, hx_err *err) {
  static const uint8_t zeros[256];
  while (n) {
    size_t k = n < sizeof zeros ? n : sizeof zeros;
    hx_code rc = write_all(w, zeros, k, err);
    if (rc)
      return rc;
    n -= k;
  }
  return HX_OK;
}

hx_code gguf_writer_open(gguf_writer *w, const char *path, hx_err *err) {
  HX_ASSERT(!w->fp);
  size_t plen = strlen(path);
  w->path = strdup(path);
  w->tmp_path = malloc(plen + 5);
  if (!w->path || !w->tmp_path)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  memcpy(w->tmp_path, path, plen);
  memcpy(w->tmp_path + plen, ".tmp", 5);
  w->fp = fopen(w->tmp_path, "wb");
  if (!w->fp)
    return hx_err_set(err, HX_EIO, "%s: %s", w->tmp_path, strerror(errno));
  hx_buf h;
  hx_buf_init(&h, (size_t)1 << 31);
  hx_code rc = hx_buf_append(&h, "GGUF", 4);
  if (!rc)
    rc = put_u32(&h, 3);
  if (!rc)
    rc = put_u64(&h, w->n_tensors);
  if (!rc)
    rc = put_u64(&h, w->n_kv);
  for (size_t i = 0; i < w->n_kv && !rc; i++) {
    rc = put_str(&h, w->kvs[i].key, strlen(w->kvs[i].key));
    if (!rc)
      rc = hx_buf_append(&h, w->kvs[i].val.data, w->kvs[i].val.len);
  }
  uint64_t off = 0;
  for (size_t i = 0; i < w->n_tensors && !rc; i++) {
    w_tensor *t = &w->tensors[i];
    t->offset = off;
    off = pad_to(off + t->nbytes, w->alignment);
    rc = put_str(&h, t->name, strlen(t->name));
    if (!rc)
      rc = put_u32(&h, (uint32_t)t->n_dims);
    for (int d = 0; d < t->n_dims && !rc; d++)
      rc = put_u64(&h, (uint64_t)t->ne[d]);
    if (!rc)
      rc = put_u32(&h, t->type);
    if (!rc)
      rc = put_u64(&h, t->offset);
  }
  if (rc) {
    hx_buf_free(&h);
    return hx_err_set(err, rc, "%s: header too large or out of memory", path);
  }
  size_t hlen = h.len;
  rc = write_all(w, h.data, hlen, err);
  hx_buf_free(&h);
  if (!rc)
    rc = write_zeros(w, pad_to(hlen, w->alignment) - hlen, err);
  return rc;
}

hx_code gguf_writer_write_tensor(gguf_writer *w, const void *data, size_t nbytes, hx_err *err) {
  HX_ASSERT(w->fp && w->next_tensor < w->n_tensors);
  w_tensor *t = &w->tensors[w->next_tensor];
  HX_ASSERT(nbytes <= t->nbytes - w->cur_written);
  hx_code rc = write_all(w, data, nbytes, err);
  if (rc)
    return rc;
  w->cur_written += nbytes;
  if (w->cur_written < t->nbytes)
    return HX_OK;
  size_t padded = pad_to(t->nbytes, w->alignment);
  if (w->next_tensor + 1 < w->n_tensors && (rc = write_zeros(w, padded - t->nbytes, err)))
    return rc;
  w->written += padded;
  w->cur_written = 0;
  w->next_tensor++;
  return HX_OK;
}

hx_code gguf_writer_finish(gguf_writer *w, hx_err *err) {
  HX_ASSERT(w->fp);
  if (w->next_tensor != w->n_tensors)
    return hx_err_set(err, HX_EINVAL, "%s: %zu of %zu tensors written", w->path, w->next_tensor,
                      w->n_tensors);
  int bad = fclose(w->fp);
  w->fp = NULL;
  if (bad || w->failed) {
    remove(w->tmp_path);
    return hx_err_set(err, HX_EIO, "%s: write failed", w->tmp_path);
  }
  if (rename(w->tmp_path, w->path) != 0) {
    hx_code rc = hx_err_set(err, HX_EIO, "%s: rename: %s", w->path, strerror(errno));
    remove(w->tmp_path);
    return rc;
  }
  return HX_OK;
}
