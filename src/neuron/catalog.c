/* catalog.c — model directory scan (see catalog.h). */
#include "neuron/catalog.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/log.h"

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* "name-00001-of-00003.gguf" → shard 1; 0 when not a shard name. */
static int shard_index(const char *name, size_t *stem_len) {
  size_t n = strlen(name);
  /* -00001-of-00003.gguf is 20 characters */
  if (n < 21)
    return 0;
  const char *p = name + n - 20;
  int a, b;
  char tail[8];
  if (sscanf(p, "-%5d-of-%5d%7s", &a, &b, tail) != 3 || strcmp(tail, ".gguf") != 0)
    return 0;
  *stem_len = n - 20;
  return a;
}

static uint64_t hf_dir_bytes(const char *dir, bool *ok) {
  *ok = false;
  char p[NEURON_PATH_MAX + 300];
  snprintf(p, sizeof p, "%s/config.json", dir);
  struct stat st;
  if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
    return 0;
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  uint64_t total = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!ends_with(e->d_name, ".safetensors"))
      continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
      total += (uint64_t)st.st_size;
      *ok = true;
    }
  }
  closedir(d);
  return total;
}

static bool have_id(const neuron_catalog_entry *v, size_t n, const char *id) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].id, id) == 0)
      return true;
  return false;
}

hx_code neuron_catalog_scan(char *const *dirs, size_t n_dirs, neuron_catalog_entry **out,
                            size_t *n_out, hx_err *err) {
  *out = NULL;
  *n_out = 0;
  neuron_catalog_entry *v = calloc(NEURON_CATALOG_MAX, sizeof *v);
  if (!v)
    return hx_err_set(err, HX_ENOMEM, "out of memory scanning model directories");
  size_t n = 0;
  for (size_t i = 0; i < n_dirs; i++) {
    DIR *d = opendir(dirs[i]);
    if (!d) {
      HX_WARN("model directory %s: cannot open (skipped)", dirs[i]);
      continue;
    }
    struct dirent *e;
    while ((e = readdir(d)) && n < NEURON_CATALOG_MAX) {
      if (e->d_name[0] == '.')
        continue;
      neuron_catalog_entry *x = &v[n];
      int w = snprintf(x->path, sizeof x->path, "%s/%s", dirs[i], e->d_name);
      if (w < 0 || (size_t)w >= sizeof x->path)
        continue;
      struct stat st;
      if (stat(x->path, &st) != 0)
        continue;
      if (S_ISREG(st.st_mode) && ends_with(e->d_name, ".gguf")) {
        size_t stem = strlen(e->d_name) - 5;
        int shard = shard_index(e->d_name, &stem);
        if (shard > 1)
          continue;
        if (stem >= sizeof x->id)
          continue;
        memcpy(x->id, e->d_name, stem);
        x->id[stem] = '\0';
        x->format = "gguf";
        x->file_bytes = (uint64_t)st.st_size;
      } else if (S_ISDIR(st.st_mode)) {
        bool ok;
        x->file_bytes = hf_dir_bytes(x->path, &ok);
        if (!ok || strlen(e->d_name) >= sizeof x->id)
          continue;
        snprintf(x->id, sizeof x->id, "%s", e->d_name);
        x->format = "hf";
      } else {
        continue;
      }
      if (!have_id(v, n, x->id))
        n++;
    }
    closedir(d);
  }
  *out = v;
  *n_out = n;
  return HX_OK;
}
