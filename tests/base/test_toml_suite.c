/* test_toml_suite.c — every toml-test 1.0.0 case (tests/data/toml-test,
 * listed in files-toml-1.0.0): valid documents must decode to the expected
 * tagged JSON (floats compared numerically, date-times by value: offset
 * date-times as instants), invalid ones must be rejected. Prints counts.
 *
 * The expected .json files hold only objects, arrays and strings (keys may
 * contain \u0000, which jansson rejects), so a tiny reader for that subset
 * lives here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/toml.h"

#define SUITE_DIR "tests/data/toml-test/"

/* ---- expected-JSON subset reader ---- */
typedef struct jnode jnode;
struct jnode {
  int kind; /* 'o' object, 'a' array, 's' string */
  char *s;  /* string bytes (kind 's') */
  size_t len;
  char **keys; /* object keys (with lengths) */
  size_t *key_lens;
  jnode **items; /* object values / array items */
  size_t n;
};

typedef struct {
  const char *p, *end;
} jrd;

static void jfree(jnode *j) {
  if (!j)
    return;
  for (size_t i = 0; i < j->n; i++) {
    if (j->keys)
      free(j->keys[i]);
    jfree(j->items[i]);
  }
  free(j->keys);
  free(j->key_lens);
  free(j->items);
  free(j->s);
  free(j);
}

static void jws(jrd *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
    r->p++;
}

static int hexv(char c) {
  return c >= '0' && c <= '9'                     ? c - '0'
         : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                  : -1;
}

static unsigned jhex4(jrd *r) {
  unsigned v = 0;
  for (int i = 0; i < 4 && r->p < r->end; i++)
    v = v * 16 + (unsigned)hexv(*r->p++);
  return v;
}

static char *jstring(jrd *r, size_t *len) {
  if (r->p >= r->end || *r->p != '"')
    return NULL;
  r->p++;
  size_t cap = (size_t)(r->end - r->p) * 2 + 8, n = 0;
  char *o = malloc(cap);
  while (r->p < r->end && *r->p != '"') {
    if (*r->p != '\\') {
      o[n++] = *r->p++;
      continue;
    }
    r->p++;
    char c = *r->p++;
    unsigned cp;
    switch (c) {
    case 'b':
      o[n++] = '\b';
      continue;
    case 'f':
      o[n++] = '\f';
      continue;
    case 'n':
      o[n++] = '\n';
      continue;
    case 'r':
      o[n++] = '\r';
      continue;
    case 't':
      o[n++] = '\t';
      continue;
    case 'u':
      cp = jhex4(r);
      if (cp >= 0xD800 && cp <= 0xDBFF && r->p + 1 < r->end && r->p[0] == '\\' && r->p[1] == 'u') {
        r->p += 2;
        unsigned lo = jhex4(r);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (cp < 0x80) {
        o[n++] = (char)cp;
      } else if (cp < 0x800) {
        o[n++] = (char)(0xC0 | (cp >> 6));
        o[n++] = (char)(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        o[n++] = (char)(0xE0 | (cp >> 12));
        o[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[n++] = (char)(0x80 | (cp & 0x3F));
      } else {
        o[n++] = (char)(0xF0 | (cp >> 18));
        o[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[n++] = (char)(0x80 | (cp & 0x3F));
      }
      continue;
    default:
      o[n++] = c;
      continue; /* \" \\ \/ */
    }
  }
  r->p++; /* closing quote */
  o[n] = '\0';
  *len = n;
  return o;
}

static jnode *jvalue(jrd *r, int depth) {
  jws(r);
  if (r->p >= r->end || depth > 200)
    return NULL;
  jnode *j = calloc(1, sizeof *j);
  if (*r->p == '"') {
    j->kind = 's';
    j->s = jstring(r, &j->len);
    if (!j->s) {
      jfree(j);
      return NULL;
    }
    return j;
  }
  char close = *r->p == '{' ? '}' : *r->p == '[' ? ']' : 0;
  if (!close) {
    jfree(j);
    return NULL;
  }
  j->kind = close == '}' ? 'o' : 'a';
  r->p++;
  size_t cap = 0;
  for (;;) {
    jws(r);
    if (r->p < r->end && *r->p == close) {
      r->p++;
      return j;
    }
    if (j->n && r->p < r->end && *r->p == ',') {
      r->p++;
      jws(r);
    }
    if (j->n == cap) {
      cap = cap ? cap * 2 : 8;
      j->items = realloc(j->items, cap * sizeof *j->items);
      if (j->kind == 'o') {
        j->keys = realloc(j->keys, cap * sizeof *j->keys);
        j->key_lens = realloc(j->key_lens, cap * sizeof *j->key_lens);
      }
    }
    if (j->kind == 'o') {
      size_t kl;
      char *k = jstring(r, &kl);
      jws(r);
      if (!k || r->p >= r->end || *r->p != ':') {
        free(k);
        jfree(j);
        return NULL;
      }
      r->p++;
      j->keys[j->n] = k;
      j->key_lens[j->n] = kl;
    }
    jnode *v = jvalue(r, depth + 1);
    if (!v) {
      if (j->kind == 'o')
        free(j->keys[j->n]);
      jfree(j);
      return NULL;
    }
    j->items[j->n++] = v;
  }
}

static const jnode *jget(const jnode *o, const char *k) {
  for (size_t i = 0; i < o->n; i++)
    if (o->key_lens[i] == strlen(k) && memcmp(o->keys[i], k, o->key_lens[i]) == 0)
      return o->items[i];
  return NULL;
}

/* ---- comparison ---- */

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  size_t k;
  while ((k = fread(b + n, 1, cap - n, f)) > 0) {
    n += k;
    if (n == cap)
      b = realloc(b, cap *= 2);
  }
  fclose(f);
  b[n] = '\0';
  *len = n;
  return b;
}

/* Instant in ns (offset date-times) or a field key (local kinds). */
static void dt_key(const toml_value *v, long double *key) {
  const toml_datetime *d = &v->u.dt;
  long double days = (long double)d->year * 372 + d->month * 31 + d->day; /* monotone, not real */
  if (v->type == TOML_DATETIME) {
    /* real instant: days since epoch via civil algorithm */
    int y = d->year - (d->month <= 2), m = d->month;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d->day - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = (long double)era * 146097 + doe;
  }
  long double secs = days * 86400 + d->hour * 3600 + d->minute * 60 + d->second;
  if (v->type == TOML_DATETIME)
    secs -= d->offset_minutes * 60;
  *key = secs * 1e9L + d->nanosecond;
}

static const char *tag_of(toml_type t) {
  switch (t) {
  case TOML_STRING:
    return "string";
  case TOML_INTEGER:
    return "integer";
  case TOML_FLOAT:
    return "float";
  case TOML_BOOL:
    return "bool";
  case TOML_DATETIME:
    return "datetime";
  case TOML_DATETIME_LOCAL:
    return "datetime-local";
  case TOML_DATE_LOCAL:
    return "date-local";
  case TOML_TIME_LOCAL:
    return "time-local";
  default:
    return "?";
  }
}

static bool leaf_eq(const toml_value *v, const char *type, const jnode *val, char *why, size_t wn) {
  if (strcmp(tag_of(v->type), type) != 0) {
    snprintf(why, wn, "type %s, expected %s", tag_of(v->type), type);
    return false;
  }
  switch (v->type) {
  case TOML_STRING:
    if (v->u.str.len != val->len || memcmp(v->u.str.ptr, val->s, val->len) != 0) {
      snprintf(why, wn, "string differs");
      return false;
    }
    return true;
  case TOML_INTEGER:
    if (v->u.integer != strtoll(val->s, NULL, 10)) {
      snprintf(why, wn, "integer %lld, expected %s", (long long)v->u.integer, val->s);
      return false;
    }
    return true;
  case TOML_FLOAT: {
    double e = strcmp(val->s, "nan") == 0 ? NAN : strtod(val->s, NULL);
    if (strcmp(val->s, "inf") == 0 || strcmp(val->s, "+inf") == 0)
      e = INFINITY;
    if (strcmp(val->s, "-inf") == 0)
      e = -INFINITY;
    if (isnan(e) ? !isnan(v->u.flt) : e != v->u.flt) {
      snprintf(why, wn, "float %.17g, expected %s", v->u.flt, val->s);
      return false;
    }
    return true;
  }
  case TOML_BOOL:
    if (strcmp(val->s, v->u.boolean ? "true" : "false") != 0) {
      snprintf(why, wn, "bool differs");
      return false;
    }
    return true;
  default: {
    /* parse the expected date-time with the same grammar, compare values */
    char doc[128];
    snprintf(doc, sizeof doc, "v = %s", val->s);
    toml_value *root = NULL;
    if (toml_parse(doc, strlen(doc), NULL, &root, NULL) != HX_OK) {
      snprintf(why, wn, "expected date-time %s unreadable", val->s);
      return false;
    }
    const toml_value *e = toml_table_get(root, "v");
    long double a, b;
    dt_key(v, &a);
    dt_key(e, &b);
    bool ok = e->type == v->type && a == b;
    if (!ok)
      snprintf(why, wn, "date-time differs from %s", val->s);
    toml_free(root);
    return ok;
  }
  }
}

static bool tree_eq(const toml_value *v, const jnode *j, char *why, size_t wn) {
  if (j->kind == 'o') {
    const jnode *ty = jget(j, "type"), *val = jget(j, "value");
    if (j->n == 2 && ty && val && ty->kind == 's' && val->kind == 's')
      return leaf_eq(v, ty->s, val, why, wn);
    if (v->type != TOML_TABLE || toml_table_len(v) != j->n) {
      snprintf(why, wn, "table with %zu keys expected (line %d)", j->n, v->line);
      return false;
    }
    for (size_t i = 0; i < j->n; i++) {
      const toml_value *c = toml_table_get_n(v, j->keys[i], j->key_lens[i]);
      if (!c) {
        snprintf(why, wn, "missing key \"%.*s\"", (int)j->key_lens[i], j->keys[i]);
        return false;
      }
      if (!tree_eq(c, j->items[i], why, wn))
        return false;
    }
    return true;
  }
  if (j->kind == 'a') {
    if (v->type != TOML_ARRAY || toml_array_len(v) != j->n) {
      snprintf(why, wn, "array of %zu expected (line %d)", j->n, v->line);
      return false;
    }
    for (size_t i = 0; i < j->n; i++)
      if (!tree_eq(toml_array_at(v, i), j->items[i], why, wn))
        return false;
    return true;
  }
  snprintf(why, wn, "bare string in expected JSON");
  return false;
}

static void test_toml_suite_all(void **state) {
  (void)state;
  size_t list_len;
  char *list = read_all(SUITE_DIR "files-toml-1.0.0", &list_len);
  assert_non_null(list);
  int valid_total = 0, valid_ok = 0, invalid_total = 0, invalid_ok = 0;
  for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
    size_t n = strlen(line);
    if (n < 5 || strcmp(line + n - 5, ".toml") != 0)
      continue;
    char path[512];
    snprintf(path, sizeof path, SUITE_DIR "%s", line);
    size_t len;
    char *text = read_all(path, &len);
    if (!text) {
      fprintf(stderr, "missing case %s\n", path);
      fail();
    }
    toml_value *root = NULL;
    hx_err err;
    hx_err_clear(&err);
    hx_code rc = toml_parse(text, len, NULL, &root, &err);
    free(text);
    if (strncmp(line, "invalid/", 8) == 0) {
      invalid_total++;
      if (rc != HX_OK)
        invalid_ok++;
      else
        fprintf(stderr, "FAIL %s: accepted an invalid document\n", line);
      toml_free(root);
      continue;
    }
    valid_total++;
    if (rc != HX_OK) {
      fprintf(stderr, "FAIL %s: %s\n", line, err.msg);
      continue;
    }
    char jpath[512];
    snprintf(jpath, sizeof jpath, SUITE_DIR "%.*s.json", (int)(n - 5), line);
    size_t jlen;
    char *jtext = read_all(jpath, &jlen);
    assert_non_null(jtext);
    jrd r = {jtext, jtext + jlen};
    jnode *exp = jvalue(&r, 0);
    assert_non_null(exp);
    char why[256] = "";
    if (tree_eq(root, exp, why, sizeof why))
      valid_ok++;
    else
      fprintf(stderr, "FAIL %s: %s\n", line, why);
    jfree(exp);
    free(jtext);
    toml_free(root);
  }
  free(list);
  printf("toml-test 1.0.0: valid %d/%d passed, invalid %d/%d rejected\n", valid_ok, valid_total,
         invalid_ok, invalid_total);
  assert_true(valid_total > 100 && invalid_total > 100);
  assert_int_equal(valid_ok, valid_total);
  assert_int_equal(invalid_ok, invalid_total);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_toml_suite_all)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
