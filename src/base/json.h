/* json.h — strict JSON over jansson with limits.
 *
 * hx_json_parse rejects input larger than max_bytes or nested deeper than
 * max_depth before jansson sees it, rejects duplicate object keys and
 * trailing data, and reports errors as "line L, column C: message".
 * Accessors return HX_EINVAL with a message naming the key and what was
 * expected ("\"max_tokens\" must be an integer ≥ 1"). */
#ifndef HX_JSON_H
#define HX_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"

enum { HX_JSON_DEPTH_DEFAULT = 64 };

typedef struct hx_json_limits {
  size_t max_bytes; /* whole document */
  int max_depth;    /* arrays + objects nested */
} hx_json_limits;

/* Parses exactly one JSON value from (text, len). Returns a new reference or
 * NULL with err set (HX_ETOOLARGE for limits, HX_EINVAL for syntax). */
json_t *hx_json_parse(const char *text, size_t len, hx_json_limits lim, hx_err *err);

/* Serializes compactly (no spaces, keys in insertion order) into out,
 * appending. */
hx_code hx_json_dump(const json_t *v, hx_buf *out);
/* Returns a malloc'd compact serialization or NULL. */
char *hx_json_dumps(const json_t *v);

/* Typed getters on objects. `required`: missing key is an error; otherwise a
 * missing key (or JSON null) leaves *out untouched and returns HX_OK. */
hx_code hx_json_get_string(const json_t *obj, const char *key, bool required, const char **out,
                           hx_err *err);
hx_code hx_json_get_int(const json_t *obj, const char *key, bool required, int64_t lo, int64_t hi,
                        int64_t *out, hx_err *err);
hx_code hx_json_get_number(const json_t *obj, const char *key, bool required, double lo, double hi,
                           double *out, hx_err *err);
hx_code hx_json_get_bool(const json_t *obj, const char *key, bool required, bool *out, hx_err *err);

/* Name of a value's type as a JSON user would say it ("string", "object"...). */
const char *hx_json_type_name(const json_t *v);

#endif
