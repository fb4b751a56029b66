/* toml.h — our own TOML 1.0 parser and a small document tree.
 *
 * toml_parse turns a bounded byte string into a tree of toml_value nodes:
 * tables keep their keys in definition order, arrays their items, leaves a
 * typed value. Every node remembers the line and column where it was
 * defined so that config loaders can say `FILE:LINE: key "x" ...`.
 *
 * The parser is strict TOML 1.0 (it passes every case of the toml-test
 * 1.0.0 suite): redefinition of keys and tables, extending inline tables or
 * static arrays, control characters, invalid UTF-8, out-of-range integers
 * and invalid dates are errors. It is bounded: input size and nesting depth
 * are limited (toml_limits) and every count is overflow-checked. Errors read
 * "line L, column C: expected X, found Y".
 *
 * The second half of this header holds the helpers config loaders use to
 * read a tree against a schema while collecting every error (toml_diag). */
#ifndef HX_TOML_H
#define HX_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"

typedef enum toml_type {
  TOML_TABLE = 0,
  TOML_ARRAY,
  TOML_STRING,
  TOML_INTEGER,
  TOML_FLOAT,
  TOML_BOOL,
  TOML_DATETIME,       /* offset date-time: 1979-05-27T07:32:00Z */
  TOML_DATETIME_LOCAL, /* 1979-05-27T07:32:00 */
  TOML_DATE_LOCAL,     /* 1979-05-27 */
  TOML_TIME_LOCAL,     /* 07:32:00 */
} toml_type;

/* The fields that the value's type carries are valid; others are 0. */
typedef struct toml_datetime {
  int year, month, day;     /* date part: 0000..9999, 1..12, 1..28/29/30/31 */
  int hour, minute, second; /* time part: 0..23, 0..59, 0..60 (leap second) */
  int32_t nanosecond;       /* 0..999999999 (digits past 9 are truncated) */
  int frac_digits;          /* fractional digits as written (0 = none) */
  int offset_minutes;       /* TOML_DATETIME only: -1439..1439; Z == 0 */
  bool offset_z;            /* TOML_DATETIME only: written as Z */
} toml_datetime;

typedef struct toml_value toml_value;

typedef struct toml_kv {
  char *key;      /* owned, NUL-terminated (may contain NULs: use key_len) */
  size_t key_len; /* bytes */
  toml_value *value;
} toml_kv;

struct toml_value {
  toml_type type;
  int line;      /* 1-based line where the value (or table header) was defined */
  int column;    /* 1-based column, in bytes */
  uint8_t flags; /* parser bookkeeping (TOML_F_*); readers can ignore it */
  union {
    struct {
      char *ptr;  /* owned, NUL-terminated, valid UTF-8 (may contain NULs) */
      size_t len; /* bytes */
    } str;
    int64_t integer;
    double flt;
    bool boolean;
    toml_datetime dt;
    struct {
      toml_value **items; /* owned */
      size_t len, cap;
    } arr;
    struct {
      toml_kv *items; /* owned, in definition order */
      size_t len, cap;
      uint32_t *index;  /* open-addressing hash of items (1-based), or NULL */
      size_t index_cap; /* slots in index (power of two) */
    } tab;
  } u;
};

enum {
  TOML_F_DEFINED = 1,   /* table: header [x] seen, or assigned as a whole */
  TOML_F_INLINE = 2,    /* table/array: written inline; sealed */
  TOML_F_AOT = 4,       /* array: created by [[x]] */
  TOML_F_DOTTED = 8,    /* table: created by a dotted key a.b = ... */
  TOML_F_IMPLICIT = 16, /* table: created as the parent of a header */
};

typedef struct toml_limits {
  size_t max_bytes; /* whole document; 0 = TOML_MAX_BYTES_DEFAULT */
  int max_depth;    /* tables + arrays nested; 0 = TOML_MAX_DEPTH_DEFAULT */
} toml_limits;

enum { TOML_MAX_BYTES_DEFAULT = 4 << 20, TOML_MAX_DEPTH_DEFAULT = 100 };

/* Parses (text, len) — which need not be NUL-terminated — into a new root
 * table that the caller frees with toml_free. lim may be NULL (defaults).
 * On failure returns HX_EINVAL (syntax/semantics) or HX_ETOOLARGE (limits)
 * or HX_ENOMEM with err's message "line L, column C: ..." and *out NULL. */
hx_code toml_parse(const char *text, size_t len, const toml_limits *lim, toml_value **out,
                   hx_err *err);

/* Reads and parses a file; error messages are prefixed "PATH:L:C: " (or
 * "PATH: " for I/O errors). */
hx_code toml_parse_file(const char *path, const toml_limits *lim, toml_value **out, hx_err *err);

/* Frees a tree (any node that is not owned by a parent); v may be NULL. */
void toml_free(toml_value *v);

/* "table", "array", "string", "integer", "float", "boolean", "datetime",
 * "local datetime", "local date", "local time". Never NULL. */
const char *toml_type_name(toml_type t);

/* Tables: lookup by key (NUL-terminated; keys with NULs need _n), NULL when
 * absent or when tab is not a table. O(1) on average. */
const toml_value *toml_table_get(const toml_value *tab, const char *key);
const toml_value *toml_table_get_n(const toml_value *tab, const char *key, size_t key_len);
static inline size_t toml_table_len(const toml_value *tab) {
  return tab && tab->type == TOML_TABLE ? tab->u.tab.len : 0;
}
/* Arrays: number of items and item i (NULL when out of range). */
static inline size_t toml_array_len(const toml_value *arr) {
  return arr && arr->type == TOML_ARRAY ? arr->u.arr.len : 0;
}
static inline const toml_value *toml_array_at(const toml_value *arr, size_t i) {
  return i < toml_array_len(arr) ? arr->u.arr.items[i] : NULL;
}

/* Writes a date/time value in RFC 3339 form (uppercase T and Z, the
 * fraction as written) into out (at least 40 bytes). Returns the length. */
size_t toml_datetime_format(const toml_value *v, char *out, size_t out_size);

/* Appends v as toml-test "tagged JSON" to out: tables → objects, arrays →
 * arrays, leaves → {"type":"integer","value":"42"} (types "string",
 * "integer", "float", "bool", "datetime", "datetime-local", "date-local",
 * "time-local"; floats as %.17g, "inf", "-inf", "nan"). */
hx_code toml_to_tagged_json(const toml_value *v, hx_buf *out);

/* ---- Schema helpers for config loaders ---------------------------------
 *
 * A toml_diag collects errors as lines "FILE:LINE: message\n" so that a
 * loader reports every problem in one pass. Getters take the table, the key
 * and a path prefix for messages ("gateway." or "neurons[2].") and, on a
 * wrong type or range, add `FILE:LINE: key "gateway.listen" must be ...`
 * with the value's line (the table's line when a required key is missing).
 * They return true when *out was set, false when the key was absent (out
 * untouched, so defaults survive) or wrong (an error was added). */

typedef struct toml_diag {
  const char *file; /* name used in messages; not owned */
  hx_buf text;      /* the error lines, bounded (64 KiB) */
  size_t n_errors;  /* every error counted, even past the text bound */
} toml_diag;

void toml_diag_init(toml_diag *d, const char *file);
void toml_diag_free(toml_diag *d);
/* Adds one error "FILE:LINE: <formatted>" (line <= 0: "FILE: ..."). */
void toml_diag_add(toml_diag *d, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies the collected text into err (truncated to fit, noting how many
 * errors were left out) with code HX_EINVAL. Returns HX_EINVAL. */
hx_code toml_diag_to_err(const toml_diag *d, hx_err *err);

/* Adds an error for each key of tab that is not in `allowed` (a
 * NULL-terminated list): `key "prefix+k" is not a known key (expected one
 * of: a, b, c)`. */
void toml_check_keys(const toml_value *tab, const char *prefix, const char *const *allowed,
                     toml_diag *d);

/* Gets a table/array/string... under key; wrong type → error. */
const toml_value *toml_get_table(const toml_value *tab, const char *key, const char *prefix,
                                 bool required, toml_diag *d);
const toml_value *toml_get_array(const toml_value *tab, const char *key, const char *prefix,
                                 bool required, toml_diag *d);
/* *out becomes a malloc'd copy (caller frees; the old *out is freed first).
 * Strings with embedded NULs or longer than max_len bytes are rejected. */
bool toml_get_string(const toml_value *tab, const char *key, const char *prefix, bool required,
                     size_t max_len, char **out, toml_diag *d);
bool toml_get_int(const toml_value *tab, const char *key, const char *prefix, bool required,
                  int64_t lo, int64_t hi, int64_t *out, toml_diag *d);
/* Accepts floats and integers; NaN and inf are rejected. */
bool toml_get_float(const toml_value *tab, const char *key, const char *prefix, bool required,
                    double lo, double hi, double *out, toml_diag *d);
bool toml_get_bool(const toml_value *tab, const char *key, const char *prefix, bool required,
                   bool *out, toml_diag *d);
/* A string that must be one of `names` (NULL-terminated); *out = its index. */
bool toml_get_enum(const toml_value *tab, const char *key, const char *prefix, bool required,
                   const char *const *names, int *out, toml_diag *d);

/* An array of strings → *out: a malloc'd array of malloc'd strings (the
 * old contents freed first; free with toml_strings_free). At most max_items
 * items of 1..max_len bytes (no NULs). */
bool toml_get_string_array(const toml_value *tab, const char *key, const char *prefix,
                           bool required, size_t max_items, size_t max_len, char ***out,
                           size_t *n_out, toml_diag *d);
void toml_strings_free(char **v, size_t n);

/* Splits "host:port" ("[v6addr]:port" too) into a malloc'd host and a port
 * 1..65535. Returns false (nothing allocated) when malformed. */
bool toml_hostport_parse(const char *s, char **host_out, uint16_t *port_out);

#endif
