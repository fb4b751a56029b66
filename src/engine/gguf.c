/* gguf.c — GGUF v2/v3 reader over an mmap, validating the whole file at open.
 *
 * Parsing is a single forward pass of a bounds-checked cursor over the
 * mapping; nothing in the file is trusted: counts are bounded both by fixed
 * limits and by the bytes left (every element needs at least a few bytes),
 * lengths are checked against the end before use, tensor shapes and byte
 * sizes are overflow-checked, and the data ranges must be aligned, inside
 * the file and not overlapping. Keys, tensor names and decoded array items
 * live in one arena freed at close. Lookups use open-addressing hash tables. */
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/arena.h"

struct gguf_file {
  char *name;
  const uint8_t *base;
  size_t size;
  bool mapped; /* base is our mmap (unmapped at close) */
  uint32_t version;
  size_t alignment;
  size_t data_offset;
  size_t n_kv;
  const char **keys;
  gguf_value *values;
  size_t n_tensors;
  gguf_tensor *tensors;
  uint32_t *kv_hash; /* slots hold index + 1; 0 = empty */
  size_t kv_hash_cap;
  uint32_t *t_hash;
  size_t t_hash_cap;
  hx_arena arena;
};

typedef struct {
  const uint8_t *p;
  size_t size;
  size_t pos;
  gguf_file *f;
  hx_err *err;
} cursor;

static size_t left(const cursor *c) { return c->size - c->pos; }

static hx_code eof_err(cursor *c, const char *what, size_t need) {
  return hx_err_set(
      c->err, HX_EFORMAT,
      "%s: unexpected end of file reading %s at offset %zu (%zu bytes needed, %zu left)",
      c->f->name, what, c->pos, need, left(c));
}

static hx_code rd(cursor *c, void *out, size_t n, const char *what) {
  if (left(c) < n)
    return eof_err(c, what, n);
  memcpy(out, c->p + c->pos, n);
  c->pos += n;
  return HX_OK;
}

static hx_code rd_u32(cursor *c, uint32_t *v, const char *what) { return rd(c, v, 4, what); }
static hx_code rd_u64(cursor *c, uint64_t *v, const char *what) { return rd(c, v, 8, what); }

/* A string in place: u64 length then bytes. `what` names it for errors. */
static hx_code rd_str(cursor *c, hx_slice *s, const char *what) {
  uint64_t n = 0;
  hx_code rc = rd_u64(c, &n, what);
  if (rc)
    return rc;
  if (n > left(c))
    return hx_err_set(c->err, HX_EFORMAT,
                      "%s: string length %llu of %s at offset %zu runs past the end of the file "
                      "(%zu bytes left)",
                      c->f->name, (unsigned long long)n, what, c->pos - 8, left(c));
  s->ptr = (const char *)c->p + c->pos;
  s->len = (size_t)n;
  c->pos += (size_t)n;
  return HX_OK;
}

size_t gguf_type_size(gguf_type t) {
  switch (t) {
  case GGUF_TYPE_UINT8:
  case GGUF_TYPE_INT8:
  case GGUF_TYPE_BOOL:
    return 1;
  case GGUF_TYPE_UINT16:
  case GGUF_TYPE_INT16:
    return 2;
  case GGUF_TYPE_UINT32:
  case GGUF_TYPE_INT32:
  case GGUF_TYPE_FLOAT32:
    return 4;
  case GGUF_TYPE_UINT64:
  case GGUF_TYPE_INT64:
  case GGUF_TYPE_FLOAT64:
    return 8;
  default:
    return 0;
  }
}

const char *gguf_type_name(gguf_type t) {
  static const char *names[GGUF_TYPE_COUNT] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                               "int32",  "float32", "bool",   "string", "array",
                                               "uint64", "int64",   "float64"};
  return (unsigned)t < GGUF_TYPE_COUNT ? names[t] : "invalid";
}

/* Reads one little-endian fixed-size scalar at p into v. */
static void decode_scalar(gguf_type t, const uint8_t *p, gguf_value *v) {
  v->type = t;
  switch (t) {
  case GGUF_TYPE_UINT8:
    v->v.u64 = p[0];
    break;
  case GGUF_TYPE_INT8:
    v->v.i64 = (int8_t)p[0];
    break;
  case GGUF_TYPE_BOOL:
    v->v.b = p[0] != 0;
    break;
  case GGUF_TYPE_UINT16: {
    uint16_t x;
    memcpy(&x, p, 2);
    v->v.u64 = x;
    break;
  }
  case GGUF_TYPE_INT16: {
    int16_t x;
    memcpy(&x, p, 2);
    v->v.i64 = x;
    break;
  }
  case GGUF_TYPE_UINT32: {
    uint32_t x;
    memcpy(&x, p, 4);
    v->v.u64 = x;
    break;
  }
  case GGUF_TYPE_INT32: {
    int32_t x;
    memcpy(&x, p, 4);
    v->v.i64 = x;
    break;
  }
  case GGUF_TYPE_FLOAT32: {
    float x;
    memcpy(&x, p, 4);
    v->v.f64 = x;
    break;
  }
  case GGUF_TYPE_UINT64:
    memcpy(&v->v.u64, p, 8);
    break;
  case GGUF_TYPE_INT64:
    memcpy(&v->v.i64, p, 8);
    break;
  case GGUF_TYPE_FLOAT64:
    memcpy(&v->v.f64, p, 8);
    break;
  default:
    HX_ASSERT(!"decode_scalar: not a scalar type");
  }
}

static hx_code read_value(cursor *c, gguf_type t, const char *key, int depth, gguf_value *out);

static hx_code read_array(cursor *c, const char *key, int depth, gguf_value *out) {
  uint32_t et = 0;
  uint64_t n = 0;
  hx_code rc = rd_u32(c, &et, "array element type");
  if (!rc)
    rc = rd_u64(c, &n, "array length");
  if (rc)
    return hx_err_wrap(c->err, "key \"%s\"", key);
  if (et >= GGUF_TYPE_COUNT)
    return hx_err_set(c->err, HX_EFORMAT, "%s: key \"%s\": unknown array element type %u",
                      c->f->name, key, et);
  if (depth + 1 > GGUF_MAX_ARRAY_DEPTH)
    return hx_err_set(c->err, HX_EFORMAT, "%s: key \"%s\": arrays nested deeper than %d",
                      c->f->name, key, GGUF_MAX_ARRAY_DEPTH);
  out->type = GGUF_TYPE_ARRAY;
  out->v.arr.elem_type = (gguf_type)et;
  out->v.arr.n = n;
  out->v.arr.raw = NULL;
  out->v.arr.items = NULL;
  size_t esz = gguf_type_size((gguf_type)et);
  /* smallest encoding of one element: strings 8, arrays 12 */
  size_t min_sz = esz ? esz : et == GGUF_TYPE_STRING ? 8 : 12;
  if (n > left(c) / min_sz)
    return hx_err_set(c->err, HX_EFORMAT,
                      "%s: key \"%s\": array of %llu %s elements cannot fit in the %zu bytes left "
                      "(absurd count)",
                      c->f->name, key, (unsigned long long)n, gguf_type_name((gguf_type)et),
                      left(c));
  if (esz) {
    out->v.arr.raw = c->p + c->pos;
    c->pos += (size_t)n * esz;
    return HX_OK;
  }
  gguf_value *items = NULL;
  if (n) {
    items = hx_arena_alloc(&c->f->arena, (size_t)n * sizeof *items, 8);
    if (!items)
      return hx_err_set(c->err, HX_ENOMEM, "%s: key \"%s\": out of memory for %llu items",
                        c->f->name, key, (unsigned long long)n);
  }
  for (uint64_t i = 0; i < n; i++) {
    hx_code r = read_value(c, (gguf_type)et, key, depth + 1, &items[i]);
    if (r)
      return r;
  }
  out->v.arr.items = items;
  return HX_OK;
}

static hx_code read_value(cursor *c, gguf_type t, const char *key, int depth, gguf_value *out) {
  if (t == GGUF_TYPE_STRING) {
    out->type = t;
    hx_code rc = rd_str(c, &out->v.str, "string value");
    return rc ? hx_err_wrap(c->err, "key \"%s\"", key) : HX_OK;
  }
  if (t == GGUF_TYPE_ARRAY)
    return read_array(c, key, depth, out);
  size_t sz = gguf_type_size(t);
  HX_ASSERT(sz != 0);
  if (left(c) < sz) {
    eof_err(c, "value", sz);
    return hx_err_wrap(c->err, "key \"%s\"", key);
  }
  decode_scalar(t, c->p + c->pos, out);
  c->pos += sz;
  return HX_OK;
}

/* --- hashing --------------------------------------------------------------- */

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static size_t hash_cap_for(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n)
    cap <<= 1;
  return cap;
}

/* Inserts index i with name; returns the existing index + 1 on duplicate. */
static uint32_t hash_insert(uint32_t *tab, size_t cap, const char *name, uint32_t i,
                            const char *(*name_of)(const gguf_file *, uint32_t),
                            const gguf_file *f) {
  for (size_t s = hash_str(name) & (cap - 1);; s = (s + 1) & (cap - 1)) {
    if (!tab[s]) {
      tab[s] = i + 1;
      return 0;
    }
    if (strcmp(name_of(f, tab[s] - 1), name) == 0)
      return tab[s];
  }
}

static int64_t hash_find(const uint32_t *tab, size_t cap, const char *name,
                         const char *(*name_of)(const gguf_file *, uint32_t), const gguf_file *f) {
  if (!tab)
    return -1;
  for (size_t s = hash_str(name) & (cap - 1);; s = (s + 1) & (cap - 1)) {
    if (!tab[s])
      return -1;
    if (strcmp(name_of(f, tab[s] - 1), name) == 0)
      return (int64_t)tab[s] - 1;
  }
}

static const char *key_of(const gguf_file *f, uint32_t i) { return f->keys[i]; }
static const char *tname_of(const gguf_file *f, uint32_t i) { return f->tensors[i].name; }

/* --- parse ------------------------------------------------------------------ */

/* Copies a name slice into the arena as a C string; rejects empty, too long
 * and embedded-NUL names. */
static hx_code name_dup(cursor *c, hx_slice s, const char *kind, size_t index, char **out) {
  if (s.len == 0)
    return hx_err_set(c->err, HX_EFORMAT, "%s: %s #%zu has an empty name", c->f->name, kind, index);
  if (s.len > GGUF_MAX_KEY_BYTES)
    return hx_err_set(c->err, HX_EFORMAT, "%s: %s #%zu: name of %zu bytes exceeds the limit %d",
                      c->f->name, kind, index, s.len, GGUF_MAX_KEY_BYTES);
  if (memchr(s.ptr, 0, s.len))
    return hx_err_set(c->err, HX_EFORMAT, "%s: %s #%zu: name contains a NUL byte", c->f->name, kind,
                      index);
  *out = hx_arena_strndup(&c->f->arena, s.ptr, s.len);
  if (!*out)
    return hx_err_set(c->err, HX_ENOMEM, "%s: out of memory", c->f->name);
  return HX_OK;
}

static hx_code parse_header(cursor *c, uint64_t *n_tensors, uint64_t *n_kv) {
  gguf_file *f = c->f;
  char magic[4];
  if (left(c) < 4)
    return hx_err_set(c->err, HX_EFORMAT, "%s: bad magic: file of %zu bytes is too short for GGUF",
                      f->name, c->size);
  rd(c, magic, 4, "magic");
  if (memcmp(magic, "GGUF", 4) != 0)
    return hx_err_set(c->err, HX_EFORMAT,
                      "%s: bad magic %02x %02x %02x %02x (expected \"GGUF\"): not a GGUF file",
                      f->name, (uint8_t)magic[0], (uint8_t)magic[1], (uint8_t)magic[2],
                      (uint8_t)magic[3]);
  hx_code rc = rd_u32(c, &f->version, "version");
  if (rc)
    return rc;
  if (f->version == 0x02000000u || f->version == 0x03000000u)
    return hx_err_set(c->err, HX_EUNSUPPORTED, "%s: unsupported version: big-endian GGUF", f->name);
  if (f->version != 2 && f->version != 3)
    return hx_err_set(c->err, HX_EUNSUPPORTED,
                      "%s: unsupported version %u (only GGUF v2 and v3 are read)", f->name,
                      f->version);
  if ((rc = rd_u64(c, n_tensors, "tensor count")) || (rc = rd_u64(c, n_kv, "metadata count")))
    return rc;
  /* each tensor info needs >= 32 bytes (8 name len, 4 n_dims, 8 ne, 4 type,
   * 8 offset), each kv >= 13 (8 key len, 4 type, 1 value) */
  if (*n_tensors > GGUF_MAX_TENSORS || *n_tensors > left(c) / 32)
    return hx_err_set(c->err, HX_EFORMAT,
                      "%s: absurd tensor count %llu (limit %d, or more than the file can hold)",
                      f->name, (unsigned long long)*n_tensors, GGUF_MAX_TENSORS);
  if (*n_kv > GGUF_MAX_KV || *n_kv > left(c) / 13)
    return hx_err_set(c->err, HX_EFORMAT,
                      "%s: absurd metadata count %llu (limit %d, or more than the file can hold)",
                      f->name, (unsigned long long)*n_kv, GGUF_MAX_KV);
  return HX_OK;
}

static hx_code parse_kvs(cursor *c, size_t n_kv) {
  gguf_file *f = c->f;
  f->keys = hx_arena_alloc(&f->arena, (n_kv ? n_kv : 1) * sizeof *f->keys, 8);
  f->values = hx_arena_alloc(&f->arena, (n_kv ? n_kv : 1) * sizeof *f->values, 8);
  f->kv_hash_cap = hash_cap_for(n_kv);
  f->kv_hash = calloc(f->kv_hash_cap, sizeof *f->kv_hash);
  if (!f->keys || !f->values || !f->kv_hash)
    return hx_err_set(c->err, HX_ENOMEM, "%s: out of memory for %zu keys", f->name, n_kv);
  for (size_t i = 0; i < n_kv; i++) {
    hx_slice ks;
    hx_code rc = rd_str(c, &ks, "key");
    if (rc)
      return hx_err_wrap(c->err, "metadata #%zu", i);
    char *key;
    if ((rc = name_dup(c, ks, "key", i, &key)))
      return rc;
    f->keys[i] = key;
    uint32_t t;
    if ((rc = rd_u32(c, &t, "value type")))
      return hx_err_wrap(c->err, "key \"%s\"", key);
    if (t >= GGUF_TYPE_COUNT)
      return hx_err_set(c->err, HX_EFORMAT, "%s: key \"%s\": unknown value type %u", f->name, key,
                        t);
    if ((rc = read_value(c, (gguf_type)t, key, 0, &f->values[i])))
      return rc;
    if (hash_insert(f->kv_hash, f->kv_hash_cap, key, (uint32_t)i, key_of, f))
      return hx_err_set(c->err, HX_EFORMAT, "%s: duplicate key \"%s\"", f->name, key);
    f->n_kv = i + 1;
  }
  return HX_OK;
}

static hx_code parse_alignment(cursor *c) {
  gguf_file *f = c->f;
  f->alignment = GGUF_DEFAULT_ALIGNMENT;
  int64_t i = hash_find(f->kv_hash, f->kv_hash_cap, "general.alignment", key_of, f);
  if (i < 0)
    return HX_OK;
  const gguf_value *v = &f->values[i];
  if (v->type != GGUF_TYPE_UINT32)
    return hx_err_set(c->err, HX_EFORMAT,
                      "%s: key \"general.alignment\" has type %s, expected uint32 (mismatched "
                      "type)",
                      f->name, gguf_type_name(v->type));
  uint64_t a = v->v.u64;
  if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 24))
    return hx_err_set(c->err, HX_EFORMAT,
                      "%s: bad alignment %llu in \"general.alignment\" (must be a power of two "
                      "<= 16 MiB)",
                      f->name, (unsigned long long)a);
  f->alignment = (size_t)a;
  return HX_OK;
}

static hx_code parse_tensor_infos(cursor *c, size_t n) {
  gguf_file *f = c->f;
  f->tensors = hx_arena_alloc(&f->arena, (n ? n : 1) * sizeof *f->tensors, 8);
  f->t_hash_cap = hash_cap_for(n);
  f->t_hash = calloc(f->t_hash_cap, sizeof *f->t_hash);
  if (!f->tensors || !f->t_hash)
    return hx_err_set(c->err, HX_ENOMEM, "%s: out of memory for %zu tensors", f->name, n);
  for (size_t i = 0; i < n; i++) {
    gguf_tensor *t = &f->tensors[i];
    hx_slice ns;
    hx_code rc = rd_str(c, &ns, "tensor name");
    if (rc)
      return hx_err_wrap(c->err, "tensor #%zu", i);
    char *name;
    if ((rc = name_dup(c, ns, "tensor", i, &name)))
      return rc;
    t->name = name;
    uint32_t nd;
    if ((rc = rd_u32(c, &nd, "n_dims")))
      return hx_err_wrap(c->err, "tensor \"%s\"", name);
    if (nd == 0 || nd > GGUF_MAX_DIMS)
      return hx_err_set(c->err, HX_EFORMAT, "%s: tensor \"%s\": n_dims %u is not in 1..%d", f->name,
                        name, nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t nelem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
      uint64_t ne = 1;
      if (d < (int)nd && (rc = rd_u64(c, &ne, "dimension")))
        return hx_err_wrap(c->err, "tensor \"%s\"", name);
      if (ne == 0)
        return hx_err_set(c->err, HX_EFORMAT, "%s: tensor \"%s\": dimension ne[%d] is zero",
                          f->name, name, d);
      if (ne > (uint64_t)INT64_MAX || __builtin_mul_overflow(nelem, ne, &nelem) ||
          nelem > (uint64_t)INT64_MAX)
        return hx_err_set(c->err, HX_EFORMAT,
                          "%s: tensor \"%s\": dimensions overflow (ne[%d]=%llu)", f->name, name, d,
                          (unsigned long long)ne);
      t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    if ((rc = rd_u32(c, &type, "tensor type")))
      return hx_err_wrap(c->err, "tensor \"%s\"", name);
    if (!quant_type_is_valid(type))
      return hx_err_set(c->err, HX_EFORMAT, "%s: tensor \"%s\": unknown tensor type %u", f->name,
                        name, type);
    t->type = (quant_type)type;
    size_t bs = quant_type_block_size(t->type);
    if ((uint64_t)t->ne[0] % bs != 0)
      return hx_err_set(c->err, HX_EFORMAT,
                        "%s: tensor \"%s\": row length ne[0]=%lld is not a multiple of the block "
                        "size %zu of %s",
                        f->name, name, (long long)t->ne[0], bs, quant_type_name(t->type));
    size_t row_bytes, nbytes;
    if (!quant_row_bytes(t->type, t->ne[0], &row_bytes) ||
        hx_size_mul(row_bytes, (size_t)(nelem / (uint64_t)t->ne[0]), &nbytes))
      return hx_err_set(c->err, HX_EFORMAT, "%s: tensor \"%s\": byte size overflows", f->name,
                        name);
    t->nbytes = nbytes;
    if ((rc = rd_u64(c, &t->offset, "tensor data offset")))
      return hx_err_wrap(c->err, "tensor \"%s\"", name);
    if (t->offset % f->alignment != 0)
      return hx_err_set(c->err, HX_EFORMAT,
                        "%s: tensor \"%s\": data offset %llu is unaligned (alignment %zu)", f->name,
                        name, (unsigned long long)t->offset, f->alignment);
    if (hash_insert(f->t_hash, f->t_hash_cap, name, (uint32_t)i, tname_of, f))
      return hx_err_set(c->err, HX_EFORMAT, "%s: duplicate tensor name \"%s\"", f->name, name);
    f->n_tensors = i + 1;
  }
  return HX_OK;
}

static int cmp_by_offset(const void *a, const void *b) {
  const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Places the data section and checks every tensor's range against it. */
static hx_code check_data(cursor *c) {
  gguf_file *f = c->f;
  size_t off = c->pos;
  size_t rem = off % f->alignment;
  if (rem && hx_size_add(off, f->alignment - rem, &off))
    return hx_err_set(c->err, HX_EFORMAT, "%s: data offset overflows", f->name);
  f->data_offset = off;
  if (f->n_tensors == 0)
    return HX_OK;
  if (off > c->size)
    return hx_err_set(c->err, HX_EFORMAT,
                      "%s: data section starts at %zu, past the end of the file (%zu bytes)",
                      f->name, off, c->size);
  size_t data_size = c->size - off;
  const gguf_tensor **order = malloc(f->n_tensors * sizeof *order);
  if (!order)
    return hx_err_set(c->err, HX_ENOMEM, "%s: out of memory", f->name);
  hx_code rc = HX_OK;
  for (size_t i = 0; i < f->n_tensors && !rc; i++) {
    gguf_tensor *t = &f->tensors[i];
    order[i] = t;
    if (t->offset > data_size || t->nbytes > data_size - t->offset)
      rc = hx_err_set(c->err, HX_EFORMAT,
                      "%s: tensor \"%s\": data [%llu, +%zu) lies past the end of the file "
                      "(data section holds %zu bytes)",
                      f->name, t->name, (unsigned long long)t->offset, t->nbytes, data_size);
    else
      t->data = c->p + off + t->offset;
  }
  if (!rc) {
    qsort(order, f->n_tensors, sizeof *order, cmp_by_offset);
    for (size_t i = 1; i < f->n_tensors && !rc; i++)
      if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset)
        rc = hx_err_set(c->err, HX_EFORMAT, "%s: tensor \"%s\" overlaps tensor \"%s\" in the data",
                        f->name, order[i]->name, order[i - 1]->name);
  }
  free(order);
  return rc;
}

static hx_code parse(gguf_file *f, hx_err *err) {
  cursor c = {.p = f->base, .size = f->size, .pos = 0, .f = f, .err = err};
  uint64_t n_tensors, n_kv;
  hx_code rc;
  if ((rc = parse_header(&c, &n_tensors, &n_kv)))
    return rc;
  if ((rc = parse_kvs(&c, (size_t)n_kv)) || (rc = parse_alignment(&c)) ||
      (rc = parse_tensor_infos(&c, (size_t)n_tensors)) || (rc = check_data(&c)))
    return rc;
  return HX_OK;
}

static gguf_file *file_new(const char *name) {
  gguf_file *f = calloc(1, sizeof *f);
  if (!f)
    return NULL;
  f->name = strdup(name ? name : "(memory)");
  if (!f->name) {
    free(f);
    return NULL;
  }
  hx_arena_init(&f->arena, 1 << 16, (size_t)1 << 32);
  return f;
}

hx_code gguf_open_mem(const void *data, size_t len, const char *name, gguf_file **out,
                      hx_err *err) {
  *out = NULL;
  gguf_file *f = file_new(name);
  if (!f)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  f->base = data;
  f->size = len;
  hx_code rc = parse(f, err);
  if (rc) {
    gguf_close(f);
    return rc;
  }
  *out = f;
  return HX_OK;
}

hx_code gguf_open(const char *path, gguf_file **out, hx_err *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "%s: %s", path,
                      strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return hx_err_set(err, HX_EIO, "%s: not a regular file", path);
  }
  if (st.st_size == 0) {
    close(fd);
    return hx_err_set(err, HX_EFORMAT, "%s: bad magic: empty file", path);
  }
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (p == MAP_FAILED)
    return hx_err_set(err, HX_EIO, "%s: mmap: %s", path, strerror(errno));
  gguf_file *f = file_new(path);
  if (!f) {
    munmap(p, (size_t)st.st_size);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  f->base = p;
  f->size = (size_t)st.st_size;
  f->mapped = true;
  hx_code rc = parse(f, err);
  if (rc) {
    gguf_close(f);
    return rc;
  }
  *out = f;
  return HX_OK;
}

void gguf_close(gguf_file *f) {
  if (!f)
    return;
  if (f->mapped)
    munmap((void *)f->base, f->size);
  hx_arena_free(&f->arena);
  free(f->kv_hash);
  free(f->t_hash);
  free(f->name);
  free(f);
}

uint32_t gguf_version(const gguf_file *f) { return f->version; }
size_t gguf_alignment(const gguf_file *f) { return f->alignment; }
size_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }
size_t gguf_file_size(const gguf_file *f) { return f->size; }
const char *gguf_name(const gguf_file *f) { return f->name; }
const void *gguf_file_base(const gguf_file *f) { return f->base; }

size_t gguf_kv_count(const gguf_file *f) { return f->n_kv; }
const char *gguf_kv_key(const gguf_file *f, size_t i) {
  HX_ASSERT(i < f->n_kv);
  return f->keys[i];
}
const gguf_value *gguf_kv_value(const gguf_file *f, size_t i) {
  HX_ASSERT(i < f->n_kv);
  return &f->values[i];
}

const gguf_value *gguf_get(const gguf_file *f, const char *key) {
  int64_t i = hash_find(f->kv_hash, f->kv_hash_cap, key, key_of, f);
  return i < 0 ? NULL : &f->values[i];
}

static bool is_int_type(gguf_type t) {
  return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_INT8 || t == GGUF_TYPE_UINT16 ||
         t == GGUF_TYPE_INT16 || t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_INT32 ||
         t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}
static bool is_unsigned(gguf_type t) {
  return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
         t == GGUF_TYPE_UINT64;
}

static const gguf_value *lookup(const gguf_file *f, const char *key, bool required, hx_code *rc,
                                hx_err *err) {
  const gguf_value *v = gguf_get(f, key);
  *rc = HX_OK;
  if (!v && required)
    *rc = hx_err_set(err, HX_ENOTFOUND, "%s: required key \"%s\" is missing", f->name, key);
  return v;
}

hx_code gguf_get_int(const gguf_file *f, const char *key, bool required, int64_t lo, int64_t hi,
                     int64_t *out, hx_err *err) {
  hx_code rc;
  const gguf_value *v = lookup(f, key, required, &rc, err);
  if (!v)
    return rc;
  if (!is_int_type(v->type))
    return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\" has type %s, expected an integer", f->name,
                      key, gguf_type_name(v->type));
  bool big = is_unsigned(v->type) && v->v.u64 > (uint64_t)INT64_MAX;
  int64_t x = is_unsigned(v->type) ? (int64_t)v->v.u64 : v->v.i64;
  if (big || x < lo || x > hi)
    return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\" = %s%lld is out of range [%lld, %lld]",
                      f->name, key, big ? ">" : "", big ? (long long)INT64_MAX : (long long)x,
                      (long long)lo, (long long)hi);
  *out = x;
  return HX_OK;
}

hx_code gguf_get_float(const gguf_file *f, const char *key, bool required, double *out,
                       hx_err *err) {
  hx_code rc;
  const gguf_value *v = lookup(f, key, required, &rc, err);
  if (!v)
    return rc;
  if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64)
    *out = v->v.f64;
  else if (is_int_type(v->type))
    *out = is_unsigned(v->type) ? (double)v->v.u64 : (double)v->v.i64;
  else
    return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\" has type %s, expected a number", f->name,
                      key, gguf_type_name(v->type));
  return HX_OK;
}

hx_code gguf_get_bool(const gguf_file *f, const char *key, bool required, bool *out, hx_err *err) {
  hx_code rc;
  const gguf_value *v = lookup(f, key, required, &rc, err);
  if (!v)
    return rc;
  if (v->type != GGUF_TYPE_BOOL)
    return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\" has type %s, expected bool", f->name, key,
                      gguf_type_name(v->type));
  *out = v->v.b;
  return HX_OK;
}

hx_code gguf_get_str(const gguf_file *f, const char *key, bool required, hx_slice *out,
                     hx_err *err) {
  hx_code rc;
  const gguf_value *v = lookup(f, key, required, &rc, err);
  if (!v)
    return rc;
  if (v->type != GGUF_TYPE_STRING)
    return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\" has type %s, expected string", f->name, key,
                      gguf_type_name(v->type));
  *out = v->v.str;
  return HX_OK;
}

hx_code gguf_get_arr(const gguf_file *f, const char *key, bool required, gguf_type elem_type,
                     const gguf_value **out, hx_err *err) {
  hx_code rc;
  const gguf_value *v = lookup(f, key, required, &rc, err);
  if (!v)
    return rc;
  if (v->type != GGUF_TYPE_ARRAY)
    return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\" has type %s, expected an array", f->name,
                      key, gguf_type_name(v->type));
  if (elem_type != GGUF_TYPE_COUNT && v->v.arr.elem_type != elem_type)
    return hx_err_set(err, HX_EFORMAT, "%s: key \"%s\" is an array of %s, expected %s", f->name,
                      key, gguf_type_name(v->v.arr.elem_type), gguf_type_name(elem_type));
  *out = v;
  return HX_OK;
}

int64_t gguf_arr_int(const gguf_value *arr, uint64_t i) {
  HX_ASSERT(arr->type == GGUF_TYPE_ARRAY && i < arr->v.arr.n);
  gguf_type et = arr->v.arr.elem_type;
  HX_ASSERT(is_int_type(et) || et == GGUF_TYPE_BOOL);
  gguf_value v;
  decode_scalar(et, arr->v.arr.raw + i * gguf_type_size(et), &v);
  if (et == GGUF_TYPE_BOOL)
    return v.v.b;
  return is_unsigned(et) ? (int64_t)v.v.u64 : v.v.i64;
}

double gguf_arr_float(const gguf_value *arr, uint64_t i) {
  HX_ASSERT(arr->type == GGUF_TYPE_ARRAY && i < arr->v.arr.n);
  gguf_type et = arr->v.arr.elem_type;
  HX_ASSERT(et == GGUF_TYPE_FLOAT32 || et == GGUF_TYPE_FLOAT64);
  gguf_value v;
  decode_scalar(et, arr->v.arr.raw + i * gguf_type_size(et), &v);
  return v.v.f64;
}

hx_slice gguf_arr_str(const gguf_value *arr, uint64_t i) {
  HX_ASSERT(arr->type == GGUF_TYPE_ARRAY && arr->v.arr.elem_type == GGUF_TYPE_STRING &&
            i < arr->v.arr.n);
  return arr->v.arr.items[i].v.str;
}

size_t gguf_tensor_count(const gguf_file *f) { return f->n_tensors; }
const gguf_tensor *gguf_tensor_at(const gguf_file *f, size_t i) {
  HX_ASSERT(i < f->n_tensors);
  return &f->tensors[i];
}
const gguf_tensor *gguf_tensor_find(const gguf_file *f, const char *name) {
  int64_t i = hash_find(f->t_hash, f->t_hash_cap, name, tname_of, f);
  return i < 0 ? NULL : &f->tensors[i];
}
