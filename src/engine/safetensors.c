/* safetensors.c — safetensors files and sharded checkpoint directories over
 * mmap. Each shard's JSON header is parsed strictly (hx_json_parse: size and
 * depth limits, duplicate keys rejected); every tensor entry is checked
 * (dtype known, shape product * dtype size == byte range, range inside the
 * data buffer, ranges not overlapping). Tensors of all shards are merged
 * into one name-sorted table. */
#include "engine/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/json.h"

typedef struct {
  char *path;
  const uint8_t *base;
  size_t size;
  bool mapped;
} st_shard;

struct safetensors {
  st_shard *shards;
  size_t n_shards;
  st_tensor *tensors;
  size_t n, cap;
  json_t *metadata; /* first shard's __metadata__ (may be NULL) */
};

static const struct {
  const char *name;
  size_t size;
} dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},           [ST_I8] = {"I8", 1},
    [ST_I16] = {"I16", 2},   [ST_U16] = {"U16", 2},         [ST_I32] = {"I32", 4},
    [ST_U32] = {"U32", 4},   [ST_I64] = {"I64", 8},         [ST_U64] = {"U64", 8},
    [ST_F16] = {"F16", 2},   [ST_BF16] = {"BF16", 2},       [ST_F32] = {"F32", 4},
    [ST_F64] = {"F64", 8},   [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

size_t st_dtype_size(st_dtype t) { return (unsigned)t < ST_DTYPE_COUNT ? dtypes[t].size : 0; }
const char *st_dtype_name(st_dtype t) {
  return (unsigned)t < ST_DTYPE_COUNT ? dtypes[t].name : "?";
}

typedef struct {
  uint64_t begin, end;
  const char *name;
} range;

static int cmp_range(const void *a, const void *b) {
  const range *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int cmp_tensor(const void *a, const void *b) {
  return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static hx_code push_tensor(safetensors *st, const st_tensor *t) {
  if (st->n == st->cap) {
    size_t cap = st->cap ? 2 * st->cap : 256;
    st_tensor *p = realloc(st->tensors, cap * sizeof *p);
    if (!p)
      return HX_ENOMEM;
    st->tensors = p;
    st->cap = cap;
  }
  st->tensors[st->n++] = *t;
  return HX_OK;
}

/* Parses one tensor entry of shard `si`. */
static hx_code parse_entry(safetensors *st, int si, const char *name, json_t *v,
                           const uint8_t *data, size_t data_len, range *rg, hx_err *err) {
  const char *fname = st->shards[si].path;
  if (!json_is_object(v))
    return hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\": entry is not an object", fname, name);
  const char *dt = NULL;
  hx_code rc = hx_json_get_string(v, "dtype", true, &dt, err);
  if (rc)
    return hx_err_wrap(err, "%s: tensor \"%s\"", fname, name);
  st_tensor t = {.shard = si};
  int d;
  for (d = 0; d < ST_DTYPE_COUNT; d++)
    if (strcmp(dtypes[d].name, dt) == 0)
      break;
  if (d == ST_DTYPE_COUNT)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: tensor \"%s\": unknown dtype \"%s\"", fname, name,
                      dt);
  t.dtype = (st_dtype)d;
  json_t *shape = json_object_get(v, "shape"), *offs = json_object_get(v, "data_offsets");
  if (!json_is_array(shape) || json_array_size(shape) > SAFETENSORS_MAX_DIMS)
    return hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\": \"shape\" must be an array of <= %d",
                      fname, name, SAFETENSORS_MAX_DIMS);
  size_t nelem = 1;
  t.n_dims = (int)json_array_size(shape);
  for (int i = 0; i < t.n_dims; i++) {
    json_t *e = json_array_get(shape, (size_t)i);
    if (!json_is_integer(e) || json_integer_value(e) < 0)
      return hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\": shape[%d] is not a size", fname, name,
                        i);
    t.shape[i] = json_integer_value(e);
    if (hx_size_mul(nelem, (size_t)t.shape[i], &nelem))
      return hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\": shape product overflows", fname, name);
  }
  if (!json_is_array(offs) || json_array_size(offs) != 2 ||
      !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)))
    return hx_err_set(err, HX_EFORMAT,
                      "%s: tensor \"%s\": \"data_offsets\" must be [begin, end] integers", fname,
                      name);
  json_int_t b = json_integer_value(json_array_get(offs, 0));
  json_int_t e = json_integer_value(json_array_get(offs, 1));
  if (b < 0 || e < b || (uint64_t)e > data_len)
    return hx_err_set(err, HX_EFORMAT,
                      "%s: tensor \"%s\": data_offsets [%lld, %lld] out of range (buffer of %zu "
                      "bytes)",
                      fname, name, (long long)b, (long long)e, data_len);
  size_t nbytes;
  if (hx_size_mul(nelem, dtypes[d].size, &nbytes) || nbytes != (size_t)(e - b))
    return hx_err_set(err, HX_EFORMAT,
                      "%s: tensor \"%s\": shape needs %zu bytes of %s but data_offsets span %lld",
                      fname, name, nelem * dtypes[d].size, dt, (long long)(e - b));
  t.name = strdup(name);
  if (!t.name)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  t.data = data + b;
  t.nbytes = nbytes;
  *rg = (range){(uint64_t)b, (uint64_t)e, t.name};
  if (push_tensor(st, &t)) {
    free((char *)t.name);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  return HX_OK;
}

static hx_code parse_shard(safetensors *st, int si, hx_err *err) {
  st_shard *sh = &st->shards[si];
  uint64_t hlen;
  if (sh->size < 8)
    return hx_err_set(err, HX_EFORMAT, "%s: file of %zu bytes is too short for safetensors",
                      sh->path, sh->size);
  memcpy(&hlen, sh->base, 8);
  if (hlen > SAFETENSORS_MAX_HEADER_BYTES)
    return hx_err_set(err, HX_ETOOLARGE, "%s: header of %llu bytes exceeds the limit of %d",
                      sh->path, (unsigned long long)hlen, SAFETENSORS_MAX_HEADER_BYTES);
  if (hlen > sh->size - 8)
    return hx_err_set(err, HX_EFORMAT, "%s: header length %llu runs past the end of the file",
                      sh->path, (unsigned long long)hlen);
  hx_json_limits lim = {.max_bytes = SAFETENSORS_MAX_HEADER_BYTES, .max_depth = 8};
  json_t *root = hx_json_parse((const char *)sh->base + 8, (size_t)hlen, lim, err);
  if (!root)
    return hx_err_wrap(err, "%s: header", sh->path);
  hx_code rc = HX_OK;
  if (!json_is_object(root)) {
    json_decref(root);
    return hx_err_set(err, HX_EFORMAT, "%s: header is not a JSON object", sh->path);
  }
  const uint8_t *data = sh->base + 8 + hlen;
  size_t data_len = sh->size - 8 - (size_t)hlen;
  size_t n_entries = json_object_size(root);
  range *rgs = calloc(n_entries ? n_entries : 1, sizeof *rgs);
  if (!rgs) {
    json_decref(root);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  size_t nr = 0;
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
    if (strcmp(key, "__metadata__") == 0) {
      if (!json_is_object(v)) {
        rc = hx_err_set(err, HX_EFORMAT, "%s: __metadata__ is not an object", sh->path);
        break;
      }
      if (si == 0 && !st->metadata)
        st->metadata = json_incref(v);
      continue;
    }
    if ((rc = parse_entry(st, si, key, v, data, data_len, &rgs[nr], err)))
      break;
    nr++;
  }
  if (!rc) {
    qsort(rgs, nr, sizeof *rgs, cmp_range);
    for (size_t i = 1; i < nr && !rc; i++)
      if (rgs[i].begin < rgs[i - 1].end)
        rc = hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" overlaps tensor \"%s\"", sh->path,
                        rgs[i].name, rgs[i - 1].name);
  }
  free(rgs);
  json_decref(root);
  return rc;
}

static hx_code map_file(const char *path, st_shard *sh, hx_err *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "%s: %s", path,
                      strerror(errno));
  struct stat s;
  if (fstat(fd, &s) != 0 || !S_ISREG(s.st_mode) || s.st_size == 0) {
    close(fd);
    return hx_err_set(err, HX_EFORMAT, "%s: not a non-empty regular file", path);
  }
  void *p = mmap(NULL, (size_t)s.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (p == MAP_FAILED)
    return hx_err_set(err, HX_EIO, "%s: mmap: %s", path, strerror(errno));
  sh->base = p;
  sh->size = (size_t)s.st_size;
  sh->mapped = true;
  return HX_OK;
}

static safetensors *st_new(size_t n_shards) {
  safetensors *st = calloc(1, sizeof *st);
  if (!st)
    return NULL;
  st->shards = calloc(n_shards, sizeof *st->shards);
  if (!st->shards) {
    free(st);
    return NULL;
  }
  st->n_shards = n_shards;
  return st;
}

static hx_code finish(safetensors *st, hx_err *err) {
  if (st->n > 1)
    qsort(st->tensors, st->n, sizeof *st->tensors, cmp_tensor);
  for (size_t i = 1; i < st->n; i++)
    if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0)
      return hx_err_set(err, HX_EFORMAT, "%s: duplicate tensor \"%s\" (also in %s)",
                        st->shards[st->tensors[i].shard].path, st->tensors[i].name,
                        st->shards[st->tensors[i - 1].shard].path);
  return HX_OK;
}

hx_code safetensors_open_mem(const void *data, size_t len, const char *name, safetensors **out,
                             hx_err *err) {
  *out = NULL;
  safetensors *st = st_new(1);
  if (!st || !(st->shards[0].path = strdup(name ? name : "(memory)"))) {
    safetensors_close(st);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  st->shards[0].base = data;
  st->shards[0].size = len;
  hx_code rc = parse_shard(st, 0, err);
  if (!rc)
    rc = finish(st, err);
  if (rc) {
    safetensors_close(st);
    return rc;
  }
  *out = st;
  return HX_OK;
}

static char *path_join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static hx_code read_text(const char *path, size_t max, char **out, size_t *len, hx_err *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "%s: %s", path,
                      strerror(errno));
  hx_buf b;
  hx_buf_init(&b, max);
  char tmp[65536];
  size_t k;
  hx_code rc = HX_OK;
  while (!rc && (k = fread(tmp, 1, sizeof tmp, fp)) > 0)
    rc = hx_buf_append(&b, tmp, k);
  fclose(fp);
  if (rc) {
    hx_buf_free(&b);
    return hx_err_set(err, rc, "%s: larger than %zu bytes", path, max);
  }
  *len = b.len;
  *out = b.data ? hx_buf_detach(&b) : strdup("");
  return *out ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
}

/* Directory with model.safetensors.index.json. */
static hx_code open_index(const char *dir, const char *index_path, safetensors **out, hx_err *err) {
  char *text;
  size_t len;
  hx_code rc = read_text(index_path, 64 << 20, &text, &len, err);
  if (rc)
    return rc;
  hx_json_limits lim = {.max_bytes = 64 << 20, .max_depth = 8};
  json_t *root = hx_json_parse(text, len, lim, err);
  free(text);
  if (!root)
    return hx_err_wrap(err, "%s", index_path);
  json_t *wm = json_object_get(root, "weight_map");
  if (!json_is_object(wm)) {
    json_decref(root);
    return hx_err_set(err, HX_EFORMAT, "%s: \"weight_map\" must be an object", index_path);
  }
  /* distinct shard file names, in first-seen order */
  const char **names = calloc(SAFETENSORS_MAX_SHARDS, sizeof *names);
  size_t n_names = 0;
  const char *key;
  json_t *v;
  rc = names ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
  json_object_foreach(wm, key, v) {
    if (rc)
      break;
    const char *fn = json_string_value(v);
    if (!fn || !*fn || strchr(fn, '/') || strcmp(fn, "..") == 0 || strcmp(fn, ".") == 0) {
      rc = hx_err_set(err, HX_EFORMAT, "%s: weight_map[\"%s\"] is not a plain file name",
                      index_path, key);
      break;
    }
    size_t i;
    for (i = 0; i < n_names; i++)
      if (strcmp(names[i], fn) == 0)
        break;
    if (i == n_names) {
      if (n_names == SAFETENSORS_MAX_SHARDS) {
        rc = hx_err_set(err, HX_ETOOLARGE, "%s: more than %d shards", index_path,
                        SAFETENSORS_MAX_SHARDS);
        break;
      }
      names[n_names++] = fn;
    }
  }
  safetensors *st = rc ? NULL : st_new(n_names ? n_names : 1);
  if (!rc && !st)
    rc = hx_err_set(err, HX_ENOMEM, "out of memory");
  if (st)
    st->n_shards = 0;
  for (size_t i = 0; !rc && i < n_names; i++) {
    st_shard *sh = &st->shards[i];
    sh->path = path_join(dir, names[i]);
    st->n_shards = i + 1;
    if (!sh->path)
      rc = hx_err_set(err, HX_ENOMEM, "out of memory");
    else if (!(rc = map_file(sh->path, sh, err)))
      rc = parse_shard(st, (int)i, err);
  }
  if (!rc)
    rc = finish(st, err);
  json_object_foreach(wm, key, v) { /* every index entry must be where it says */
    if (rc)
      break;
    const st_tensor *t = safetensors_find(st, key);
    const char *fn = json_string_value(v);
    const char *sp = t ? st->shards[t->shard].path : "";
    size_t a = strlen(sp), b = strlen(fn);
    if (!t || a < b + 1 || strcmp(sp + a - b, fn) != 0 || sp[a - b - 1] != '/')
      rc = hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" listed in the index is not in %s",
                      index_path, key, json_string_value(v));
  }
  free(names);
  json_decref(root);
  if (rc) {
    safetensors_close(st);
    return rc;
  }
  *out = st;
  return HX_OK;
}

hx_code safetensors_open(const char *path, safetensors **out, hx_err *err) {
  *out = NULL;
  struct stat s;
  if (stat(path, &s) != 0)
    return hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "%s: %s", path,
                      strerror(errno));
  if (S_ISDIR(s.st_mode)) {
    char *idx = path_join(path, "model.safetensors.index.json");
    if (!idx)
      return hx_err_set(err, HX_ENOMEM, "out of memory");
    struct stat si;
    hx_code rc;
    if (stat(idx, &si) == 0) {
      rc = open_index(path, idx, out, err);
      free(idx);
      return rc;
    }
    free(idx);
    char *single = path_join(path, "model.safetensors");
    if (!single)
      return hx_err_set(err, HX_ENOMEM, "out of memory");
    rc = safetensors_open(single, out, err);
    free(single);
    if (rc == HX_ENOTFOUND)
      return hx_err_set(err, HX_ENOTFOUND,
                        "%s: no model.safetensors.index.json or model.safetensors", path);
    return rc;
  }
  safetensors *st = st_new(1);
  if (!st || !(st->shards[0].path = strdup(path))) {
    safetensors_close(st);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  hx_code rc = map_file(path, &st->shards[0], err);
  if (!rc)
    rc = parse_shard(st, 0, err);
  if (!rc)
    rc = finish(st, err);
  if (rc) {
    safetensors_close(st);
    return rc;
  }
  *out = st;
  return HX_OK;
}

void safetensors_close(safetensors *st) {
  if (!st)
    return;
  for (size_t i = 0; i < st->n; i++)
    free((char *)st->tensors[i].name);
  for (size_t i = 0; i < st->n_shards; i++) {
    if (st->shards[i].mapped)
      munmap((void *)st->shards[i].base, st->shards[i].size);
    free(st->shards[i].path);
  }
  json_decref(st->metadata);
  free(st->tensors);
  free(st->shards);
  free(st);
}

size_t safetensors_count(const safetensors *st) { return st->n; }
const st_tensor *safetensors_at(const safetensors *st, size_t i) {
  HX_ASSERT(i < st->n);
  return &st->tensors[i];
}

const st_tensor *safetensors_find(const safetensors *st, const char *name) {
  size_t lo = 0, hi = st->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(st->tensors[mid].name, name);
    if (c == 0)
      return &st->tensors[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

const char *safetensors_metadata(const safetensors *st, const char *key) {
  return st->metadata ? json_string_value(json_object_get(st->metadata, key)) : NULL;
}
