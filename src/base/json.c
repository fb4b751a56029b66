/* json.c — see json.h. */
#include "base/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Depth pre-scan: jansson's own limit is a compile-time constant, so we bound
 * nesting ourselves. Strings are skipped with their escapes. */
static hx_code check_depth(const char *s, size_t n, int max_depth, hx_err *err) {
  int depth = 0;
  size_t line = 1, col = 1;
  bool in_str = false;
  for (size_t i = 0; i < n; i++, col++) {
    char c = s[i];
    if (c == '\n') {
      line++;
      col = 0;
    }
    if (in_str) {
      if (c == '\\')
        i++, col++;
      else if (c == '"')
        in_str = false;
      continue;
    }
    if (c == '"')
      in_str = true;
    else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        return hx_err_set(err, HX_ETOOLARGE, "line %zu, column %zu: nesting deeper than %d levels",
                          line, col, max_depth);
    } else if (c == ']' || c == '}')
      depth--;
  }
  return HX_OK;
}

json_t *hx_json_parse(const char *text, size_t len, hx_json_limits lim, hx_err *err) {
  if (lim.max_depth <= 0)
    lim.max_depth = HX_JSON_DEPTH_DEFAULT;
  if (len > lim.max_bytes) {
    hx_err_set(err, HX_ETOOLARGE, "JSON document of %zu bytes exceeds the limit of %zu", len,
               lim.max_bytes);
    return NULL;
  }
  if (check_depth(text, len, lim.max_depth, err))
    return NULL;
  json_error_t je;
  json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
  if (!v) {
    hx_err_set(err, HX_EINVAL, "line %d, column %d: %s", je.line, je.column, je.text);
    return NULL;
  }
  return v;
}

static int dump_cb(const char *buffer, size_t size, void *data) {
  return hx_buf_append((hx_buf *)data, buffer, size) == HX_OK ? 0 : -1;
}

hx_code hx_json_dump(const json_t *v, hx_buf *out) {
  if (json_dump_callback(v, dump_cb, out, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER))
    return HX_ETOOLARGE;
  return HX_OK;
}

char *hx_json_dumps(const json_t *v) {
  return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
}

const char *hx_json_type_name(const json_t *v) {
  if (!v)
    return "nothing";
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    return "object";
  case JSON_ARRAY:
    return "array";
  case JSON_STRING:
    return "string";
  case JSON_INTEGER:
    return "integer";
  case JSON_REAL:
    return "number";
  case JSON_TRUE:
  case JSON_FALSE:
    return "boolean";
  case JSON_NULL:
    return "null";
  }
  return "unknown";
}

static const json_t *lookup(const json_t *obj, const char *key, bool required, hx_code *rc,
                            hx_err *err) {
  *rc = HX_OK;
  const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
  if (!v || json_is_null(v)) {
    if (required)
      *rc = hx_err_set(err, HX_EINVAL, "missing required field \"%s\"", key);
    return NULL;
  }
  return v;
}

hx_code hx_json_get_string(const json_t *obj, const char *key, bool required, const char **out,
                           hx_err *err) {
  hx_code rc;
  const json_t *v = lookup(obj, key, required, &rc, err);
  if (!v)
    return rc;
  if (!json_is_string(v))
    return hx_err_set(err, HX_EINVAL, "\"%s\" must be a string, not %s", key, hx_json_type_name(v));
  *out = json_string_value(v);
  return HX_OK;
}

hx_code hx_json_get_int(const json_t *obj, const char *key, bool required, int64_t lo, int64_t hi,
                        int64_t *out, hx_err *err) {
  hx_code rc;
  const json_t *v = lookup(obj, key, required, &rc, err);
  if (!v)
    return rc;
  int64_t x;
  if (json_is_integer(v))
    x = (int64_t)json_integer_value(v);
  else if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) &&
           fabs(json_real_value(v)) < 9e15)
    x = (int64_t)json_real_value(v);
  else
    return hx_err_set(err, HX_EINVAL, "\"%s\" must be an integer, not %s", key,
                      hx_json_type_name(v));
  if (x < lo || x > hi)
    return hx_err_set(err, HX_EINVAL, "\"%s\" must be between %lld and %lld, got %lld", key,
                      (long long)lo, (long long)hi, (long long)x);
  *out = x;
  return HX_OK;
}

hx_code hx_json_get_number(const json_t *obj, const char *key, bool required, double lo, double hi,
                           double *out, hx_err *err) {
  hx_code rc;
  const json_t *v = lookup(obj, key, required, &rc, err);
  if (!v)
    return rc;
  if (!json_is_number(v))
    return hx_err_set(err, HX_EINVAL, "\"%s\" must be a number, not %s", key, hx_json_type_name(v));
  double x = json_number_value(v);
  if (!(x >= lo && x <= hi))
    return hx_err_set(err, HX_EINVAL, "\"%s\" must be between %g and %g, got %g", key, lo, hi, x);
  *out = x;
  return HX_OK;
}

hx_code hx_json_get_bool(const json_t *obj, const char *key, bool required, bool *out,
                         hx_err *err) {
  hx_code rc;
  const json_t *v = lookup(obj, key, required, &rc, err);
  if (!v)
    return rc;
  if (!json_is_boolean(v))
    return hx_err_set(err, HX_EINVAL, "\"%s\" must be a boolean, not %s", key,
                      hx_json_type_name(v));
  *out = json_is_true(v);
  return HX_OK;
}
