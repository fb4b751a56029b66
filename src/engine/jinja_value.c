/* jinja_value.c — the Python-like values of the Jinja interpreter: truth,
 * equality, str() / repr() text forms and json.dumps(ensure_ascii=False),
 * each matching CPython's output byte for byte for the types we model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/jinja_impl.h"

bool jv_truthy(jv v) {
  switch (v.t) {
  case JV_UNDEF:
  case JV_NONE:
    return false;
  case JV_BOOL:
    return v.u.b;
  case JV_INT:
    return v.u.i != 0;
  case JV_FLOAT:
    return v.u.f != 0.0;
  case JV_STR:
    return v.u.s.n > 0;
  case JV_LIST:
    return v.u.l->n > 0;
  case JV_DICT:
    return v.u.d->n > 0;
  default:
    return true;
  }
}

static bool is_num(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static double num_f(jv v) {
  return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b;
}

bool jv_equal(jv a, jv b) {
  if (is_num(a) && is_num(b)) {
    if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
      int64_t x = a.t == JV_INT ? a.u.i : a.u.b, y = b.t == JV_INT ? b.u.i : b.u.b;
      return x == y;
    }
    return num_f(a) == num_f(b);
  }
  if (a.t != b.t)
    return false;
  switch (a.t) {
  case JV_UNDEF:
  case JV_NONE:
    return true;
  case JV_STR:
    return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
  case JV_LIST:
    if (a.u.l->is_tuple != b.u.l->is_tuple || a.u.l->n != b.u.l->n)
      return false;
    for (size_t i = 0; i < a.u.l->n; i++)
      if (!jv_equal(a.u.l->items[i], b.u.l->items[i]))
        return false;
    return true;
  case JV_DICT:
    if (a.u.d->n != b.u.d->n)
      return false;
    for (size_t i = 0; i < a.u.d->n; i++) {
      size_t j = 0;
      while (j < b.u.d->n && !jv_equal(a.u.d->keys[i], b.u.d->keys[j]))
        j++;
      if (j == b.u.d->n || !jv_equal(a.u.d->vals[i], b.u.d->vals[j]))
        return false;
    }
    return true;
  case JV_NS:
    return a.u.d == b.u.d;
  case JV_MACRO:
    return a.u.mac == b.u.mac;
  case JV_FUNC:
    return a.u.fn == b.u.fn;
  case JV_LOOP:
    return a.u.loop == b.u.loop;
  default:
    return false;
  }
}

const char *jv_type_name(jv v) {
  switch (v.t) {
  case JV_UNDEF:
    return "Undefined";
  case JV_NONE:
    return "NoneType";
  case JV_BOOL:
    return "bool";
  case JV_INT:
    return "int";
  case JV_FLOAT:
    return "float";
  case JV_STR:
    return "str";
  case JV_LIST:
    return v.u.l->is_tuple ? "tuple" : "list";
  case JV_DICT:
    return "dict";
  case JV_NS:
    return "Namespace";
  case JV_MACRO:
    return "Macro";
  case JV_FUNC:
    return "function";
  case JV_LOOP:
    return "LoopContext";
  case JV_METHOD:
    return "method";
  }
  return "object";
}

size_t jv_utf8_len(const char *p, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    c += ((unsigned char)p[i] & 0xC0) != 0x80;
  return c;
}

size_t jv_utf8_offset(const char *p, size_t n, size_t cp) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++) {
    if (((unsigned char)p[i] & 0xC0) != 0x80) {
      if (c == cp)
        return i;
      c++;
    }
  }
  return n;
}

void jv_format_float(double f, char out[32]) {
  if (isnan(f)) {
    strcpy(out, "nan");
    return;
  }
  if (isinf(f)) {
    strcpy(out, f < 0 ? "-inf" : "inf");
    return;
  }
  if (f == 0) {
    strcpy(out, signbit(f) ? "-0.0" : "0.0");
    return;
  }
  /* Shortest round-tripping digits, as CPython's repr. */
  char buf[40];
  int prec;
  for (prec = 1; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
    if (strtod(buf, NULL) == f)
      break;
  }
  /* buf: [-]d[.ddd]e[+-]XX */
  char digits[24];
  size_t nd = 0;
  const char *q = buf;
  bool neg = false;
  if (*q == '-') {
    neg = true;
    q++;
  }
  while (*q && *q != 'e') {
    if (*q != '.')
      digits[nd++] = *q;
    q++;
  }
  int exp10 = atoi(q + 1);
  while (nd > 1 && digits[nd - 1] == '0')
    nd--;
  digits[nd] = 0;
  char *o = out;
  if (neg)
    *o++ = '-';
  if (exp10 >= -4 && exp10 < 16) {
    if (exp10 >= 0) {
      for (int i = 0; i <= exp10; i++)
        *o++ = (size_t)i < nd ? digits[i] : '0';
      *o++ = '.';
      if ((size_t)exp10 + 1 < nd) {
        for (size_t i = (size_t)exp10 + 1; i < nd; i++)
          *o++ = digits[i];
      } else {
        *o++ = '0';
      }
    } else {
      *o++ = '0';
      *o++ = '.';
      for (int i = 0; i < -exp10 - 1; i++)
        *o++ = '0';
      for (size_t i = 0; i < nd; i++)
        *o++ = digits[i];
    }
    *o = 0;
  } else {
    *o++ = digits[0];
    if (nd > 1) {
      *o++ = '.';
      for (size_t i = 1; i < nd; i++)
        *o++ = digits[i];
    }
    snprintf(o, 12, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
  }
}

static hx_code repr_str(const char *p, size_t n, hx_buf *out) {
  bool has_sq = memchr(p, '\'', n) != NULL, has_dq = memchr(p, '"', n) != NULL;
  char q = has_sq && !has_dq ? '"' : '\'';
  hx_code rc = hx_buf_append_char(out, q);
  for (size_t i = 0; i < n && rc == HX_OK; i++) {
    unsigned char c = (unsigned char)p[i];
    char tmp[8];
    if (c == '\\')
      rc = hx_buf_append(out, "\\\\", 2);
    else if (c == (unsigned char)q)
      rc = hx_buf_printf(out, "\\%c", q);
    else if (c == '\n')
      rc = hx_buf_append(out, "\\n", 2);
    else if (c == '\r')
      rc = hx_buf_append(out, "\\r", 2);
    else if (c == '\t')
      rc = hx_buf_append(out, "\\t", 2);
    else if (c < 0x20 || c == 0x7f) {
      snprintf(tmp, sizeof tmp, "\\x%02x", c);
      rc = hx_buf_append_str(out, tmp);
    } else if (c == 0xC2 && i + 1 < n && (unsigned char)p[i + 1] >= 0x80 &&
               (unsigned char)p[i + 1] <= 0xA0) {
      /* U+0080..U+00A0 are not printable: \x80.. \xa0 */
      snprintf(tmp, sizeof tmp, "\\x%02x", (unsigned char)p[i + 1]);
      rc = hx_buf_append_str(out, tmp);
      i++;
    } else
      rc = hx_buf_append_char(out, (char)c);
  }
  return rc ? rc : hx_buf_append_char(out, q);
}

hx_code jv_repr(jv v, hx_buf *out) {
  char tmp[40];
  hx_code rc = HX_OK;
  switch (v.t) {
  case JV_STR:
    return repr_str(v.u.s.p, v.u.s.n, out);
  case JV_LIST: {
    rc = hx_buf_append_char(out, v.u.l->is_tuple ? '(' : '[');
    for (size_t i = 0; i < v.u.l->n && rc == HX_OK; i++) {
      if (i)
        rc = hx_buf_append(out, ", ", 2);
      if (rc == HX_OK)
        rc = jv_repr(v.u.l->items[i], out);
    }
    if (rc == HX_OK && v.u.l->is_tuple && v.u.l->n == 1)
      rc = hx_buf_append_char(out, ',');
    return rc ? rc : hx_buf_append_char(out, v.u.l->is_tuple ? ')' : ']');
  }
  case JV_DICT: {
    rc = hx_buf_append_char(out, '{');
    for (size_t i = 0; i < v.u.d->n && rc == HX_OK; i++) {
      if (i)
        rc = hx_buf_append(out, ", ", 2);
      if (rc == HX_OK)
        rc = jv_repr(v.u.d->keys[i], out);
      if (rc == HX_OK)
        rc = hx_buf_append(out, ": ", 2);
      if (rc == HX_OK)
        rc = jv_repr(v.u.d->vals[i], out);
    }
    return rc ? rc : hx_buf_append_char(out, '}');
  }
  case JV_NS: {
    jv d = {.t = JV_DICT, .u.d = v.u.d};
    rc = hx_buf_append_str(out, "<Namespace ");
    if (rc == HX_OK)
      rc = jv_repr(d, out);
    return rc ? rc : hx_buf_append_char(out, '>');
  }
  case JV_UNDEF:
    return HX_OK;
  default:
    (void)tmp;
    return jv_to_str(v, out);
  }
}

hx_code jv_to_str(jv v, hx_buf *out) {
  char tmp[40];
  switch (v.t) {
  case JV_UNDEF:
    return HX_OK;
  case JV_NONE:
    return hx_buf_append_str(out, "None");
  case JV_BOOL:
    return hx_buf_append_str(out, v.u.b ? "True" : "False");
  case JV_INT:
    snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
    return hx_buf_append_str(out, tmp);
  case JV_FLOAT:
    jv_format_float(v.u.f, tmp);
    return hx_buf_append_str(out, tmp);
  case JV_STR:
    return hx_buf_append(out, v.u.s.p, v.u.s.n);
  case JV_LIST:
  case JV_DICT:
  case JV_NS:
    return jv_repr(v, out);
  case JV_MACRO:
    return hx_buf_append_str(out, "<Macro>");
  case JV_FUNC:
    return hx_buf_append_str(out, "<built-in function>");
  case JV_LOOP:
    return hx_buf_append_str(out, "<LoopContext>");
  case JV_METHOD:
    return hx_buf_append_str(out, "<built-in method>");
  }
  return HX_EINVAL;
}

static hx_code json_str(const char *p, size_t n, hx_buf *out) {
  hx_code rc = hx_buf_append_char(out, '"');
  size_t run = 0;
  for (size_t i = 0; i < n && rc == HX_OK; i++) {
    unsigned char c = (unsigned char)p[i];
    const char *esc = NULL;
    char tmp[8];
    switch (c) {
    case '"':
      esc = "\\\"";
      break;
    case '\\':
      esc = "\\\\";
      break;
    case '\n':
      esc = "\\n";
      break;
    case '\r':
      esc = "\\r";
      break;
    case '\t':
      esc = "\\t";
      break;
    case '\b':
      esc = "\\b";
      break;
    case '\f':
      esc = "\\f";
      break;
    default:
      if (c < 0x20) {
        snprintf(tmp, sizeof tmp, "\\u%04x", c);
        esc = tmp;
      }
    }
    if (esc) {
      if (i > run)
        rc = hx_buf_append(out, p + run, i - run);
      if (rc == HX_OK)
        rc = hx_buf_append_str(out, esc);
      run = i + 1;
    }
  }
  if (rc == HX_OK && n > run)
    rc = hx_buf_append(out, p + run, n - run);
  return rc ? rc : hx_buf_append_char(out, '"');
}

static hx_code json_indent(hx_buf *out, int indent, int level) {
  hx_code rc = hx_buf_append_char(out, '\n');
  for (int i = 0; i < indent * level && rc == HX_OK; i++)
    rc = hx_buf_append_char(out, ' ');
  return rc;
}

typedef struct json_ctx {
  int indent;
  const char *item_sep, *key_sep;
  bool sort_keys;
  hx_err *err;
} json_ctx;

static int key_cmp(const void *a, const void *b, void *unused);

static hx_code json_key(jv k, hx_buf *out, hx_err *err) {
  char tmp[40];
  switch (k.t) {
  case JV_STR:
    return json_str(k.u.s.p, k.u.s.n, out);
  case JV_INT:
    snprintf(tmp, sizeof tmp, "\"%lld\"", (long long)k.u.i);
    return hx_buf_append_str(out, tmp);
  case JV_FLOAT:
    tmp[0] = '"';
    jv_format_float(k.u.f, tmp + 1);
    strcat(tmp, "\"");
    return hx_buf_append_str(out, tmp);
  case JV_BOOL:
    return hx_buf_append_str(out, k.u.b ? "\"true\"" : "\"false\"");
  case JV_NONE:
    return hx_buf_append_str(out, "\"null\"");
  default:
    return hx_err_set(err, HX_EINVAL, "keys must be str, int, float, bool or None, not %s",
                      jv_type_name(k));
  }
}

static hx_code json_rec(jv v, const json_ctx *c, int level, hx_buf *out) {
  if (level > 512)
    return hx_err_set(c->err, HX_ETOOLARGE, "tojson: value nested too deeply");
  char tmp[40];
  hx_code rc;
  switch (v.t) {
  case JV_NONE:
    return hx_buf_append_str(out, "null");
  case JV_BOOL:
    return hx_buf_append_str(out, v.u.b ? "true" : "false");
  case JV_INT:
    snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
    return hx_buf_append_str(out, tmp);
  case JV_FLOAT:
    if (isnan(v.u.f))
      return hx_buf_append_str(out, "NaN");
    if (isinf(v.u.f))
      return hx_buf_append_str(out, v.u.f < 0 ? "-Infinity" : "Infinity");
    jv_format_float(v.u.f, tmp);
    return hx_buf_append_str(out, tmp);
  case JV_STR:
    return json_str(v.u.s.p, v.u.s.n, out);
  case JV_LIST: {
    if (v.u.l->n == 0)
      return hx_buf_append(out, "[]", 2);
    rc = hx_buf_append_char(out, '[');
    for (size_t i = 0; i < v.u.l->n && rc == HX_OK; i++) {
      if (i)
        rc = hx_buf_append_str(out, c->item_sep);
      if (rc == HX_OK && c->indent >= 0)
        rc = json_indent(out, c->indent, level + 1);
      if (rc == HX_OK)
        rc = json_rec(v.u.l->items[i], c, level + 1, out);
    }
    if (rc == HX_OK && c->indent >= 0)
      rc = json_indent(out, c->indent, level);
    return rc ? rc : hx_buf_append_char(out, ']');
  }
  case JV_DICT: {
    size_t n = v.u.d->n;
    if (n == 0)
      return hx_buf_append(out, "{}", 2);
    size_t *order = malloc(n * sizeof *order);
    if (!order)
      return hx_err_set(c->err, HX_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
      order[i] = i;
    if (c->sort_keys)
      qsort_r(order, n, sizeof *order, key_cmp, v.u.d);
    rc = hx_buf_append_char(out, '{');
    for (size_t k = 0; k < n && rc == HX_OK; k++) {
      size_t i = order[k];
      if (k)
        rc = hx_buf_append_str(out, c->item_sep);
      if (rc == HX_OK && c->indent >= 0)
        rc = json_indent(out, c->indent, level + 1);
      if (rc == HX_OK)
        rc = json_key(v.u.d->keys[i], out, c->err);
      if (rc == HX_OK)
        rc = hx_buf_append_str(out, c->key_sep);
      if (rc == HX_OK)
        rc = json_rec(v.u.d->vals[i], c, level + 1, out);
    }
    free(order);
    if (rc == HX_OK && c->indent >= 0)
      rc = json_indent(out, c->indent, level);
    return rc ? rc : hx_buf_append_char(out, '}');
  }
  default:
    return hx_err_set(c->err, HX_EINVAL, "tojson: Object of type %s is not JSON serializable",
                      jv_type_name(v));
  }
}

static int key_cmp(const void *a, const void *b, void *dict) {
  const jv_dict *d = dict;
  jv x = d->keys[*(const size_t *)a], y = d->keys[*(const size_t *)b];
  if (x.t == JV_STR && y.t == JV_STR) {
    size_t n = x.u.s.n < y.u.s.n ? x.u.s.n : y.u.s.n;
    int r = memcmp(x.u.s.p, y.u.s.p, n);
    if (r)
      return r;
    return x.u.s.n < y.u.s.n ? -1 : x.u.s.n > y.u.s.n;
  }
  if (x.t == JV_INT && y.t == JV_INT)
    return x.u.i < y.u.i ? -1 : x.u.i > y.u.i;
  return (int)x.t - (int)y.t;
}

hx_code jv_to_json(jv v, int indent, const char *item_sep, const char *key_sep, bool sort_keys,
                   hx_buf *out, hx_err *err) {
  json_ctx c = {.indent = indent,
                .item_sep = item_sep      ? item_sep
                            : indent >= 0 ? ","
                                          : ", ",
                .key_sep = key_sep ? key_sep : ": ",
                .sort_keys = sort_keys,
                .err = err};
  hx_code rc = json_rec(v, &c, 0, out);
  if (rc == HX_ETOOLARGE && err && err->code != HX_ETOOLARGE)
    hx_err_set(err, rc, "tojson: output too large");
  else if (rc == HX_ENOMEM && err && err->code != HX_ENOMEM)
    hx_err_set(err, rc, "tojson: out of memory");
  return rc;
}
