/* jinja_eval.c — the tree-walking renderer: scopes, statements, expressions,
 * filters, tests, whitelisted methods and globals, all under the limits of
 * hx_jinja_limits. Semantics follow jinja2 3.x's ImmutableSandboxedEnvironment
 * (Undefined is the default lenient one). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/jinja_impl.h"

enum { EVAL_DEPTH_MAX = 1500, RANGE_MAX = 100000 };

typedef struct scope {
  struct scope *parent;
  jv_dict vars;
} scope;

typedef struct rs {
  const hx_jinja_template *t;
  hx_arena *A;
  hx_buf *out;
  hx_jinja_limits lim;
  uint64_t steps, iters;
  uint32_t macro_depth, eval_depth;
  int64_t now;
  int ctl; /* 0, 1 = break, 2 = continue */
  hx_err *err;
  hx_code code;
  scope *root;
} rs;

static bool fail(rs *r, int line, hx_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool fail(rs *r, int line, hx_code code, const char *fmt, ...) {
  if (r->code != HX_OK)
    return false;
  char msg[HX_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  r->code = code;
  hx_err_set(r->err, code, "%s:%d: %s", r->t->name, line, msg);
  return false;
}

static bool oom(rs *r, int line) {
  return fail(r, line, HX_ETOOLARGE, "memory limit of %zu bytes exceeded", r->lim.memory_bytes_max);
}

static void *ralloc(rs *r, size_t n, int line) {
  void *p = hx_arena_alloc(r->A, n ? n : 1, 16);
  if (!p)
    oom(r, line);
  return p;
}

static bool buf_fail(rs *r, int line, hx_code rc) {
  if (rc == HX_ETOOLARGE)
    return fail(r, line, HX_ETOOLARGE, "output limit of %zu bytes exceeded",
                r->lim.output_bytes_max);
  return fail(r, line, rc, "out of memory");
}

static bool mkstr(rs *r, const char *p, size_t n, jv *out, int line) {
  if (n > r->lim.output_bytes_max)
    return fail(r, line, HX_ETOOLARGE, "string longer than the output limit of %zu bytes",
                r->lim.output_bytes_max);
  char *d = ralloc(r, n, line);
  if (!d)
    return false;
  if (n)
    memcpy(d, p, n);
  *out = jv_str(d, n);
  return true;
}

/* ---- containers ------------------------------------------------------ */

static jv_list *list_new(rs *r, size_t cap, int line) {
  jv_list *l = ralloc(r, sizeof *l, line);
  if (!l)
    return NULL;
  if (cap) {
    l->items = ralloc(r, cap * sizeof(jv), line);
    if (!l->items)
      return NULL;
    l->cap = cap;
  }
  return l;
}

static bool list_push(rs *r, jv_list *l, jv v, int line) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 8;
    jv *ni = ralloc(r, cap * sizeof(jv), line);
    if (!ni)
      return false;
    if (l->n)
      memcpy(ni, l->items, l->n * sizeof(jv));
    l->items = ni;
    l->cap = cap;
  }
  l->items[l->n++] = v;
  return true;
}

static jv_dict *dict_new(rs *r, int line) { return ralloc(r, sizeof(jv_dict), line); }

static jv *dict_find(const jv_dict *d, jv key) {
  for (size_t i = 0; i < d->n; i++)
    if (jv_equal(d->keys[i], key))
      return &d->vals[i];
  return NULL;
}

static jv *dict_find_s(const jv_dict *d, const char *k, size_t n) {
  for (size_t i = 0; i < d->n; i++)
    if (d->keys[i].t == JV_STR && d->keys[i].u.s.n == n && memcmp(d->keys[i].u.s.p, k, n) == 0)
      return &d->vals[i];
  return NULL;
}

static bool dict_set(rs *r, jv_dict *d, jv key, jv val, int line) {
  jv *slot = dict_find(d, key);
  if (slot) {
    *slot = val;
    return true;
  }
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 8;
    jv *nk = ralloc(r, cap * sizeof(jv), line), *nv = ralloc(r, cap * sizeof(jv), line);
    if (!nk || !nv)
      return false;
    if (d->n) {
      memcpy(nk, d->keys, d->n * sizeof(jv));
      memcpy(nv, d->vals, d->n * sizeof(jv));
    }
    d->keys = nk;
    d->vals = nv;
    d->cap = cap;
  }
  d->keys[d->n] = key;
  d->vals[d->n] = val;
  d->n++;
  return true;
}

static bool from_json(rs *r, const json_t *j, jv *out, int depth) {
  if (depth > 256)
    return fail(r, 0, HX_ETOOLARGE, "context JSON nested too deeply");
  switch (json_typeof(j)) {
  case JSON_NULL:
    *out = jv_none();
    return true;
  case JSON_TRUE:
    *out = jv_bool(true);
    return true;
  case JSON_FALSE:
    *out = jv_bool(false);
    return true;
  case JSON_INTEGER:
    *out = jv_int(json_integer_value(j));
    return true;
  case JSON_REAL:
    *out = jv_float(json_real_value(j));
    return true;
  case JSON_STRING:
    *out = jv_str(json_string_value(j), json_string_length(j));
    return true;
  case JSON_ARRAY: {
    jv_list *l = list_new(r, json_array_size(j), 0);
    if (!l)
      return false;
    for (size_t i = 0; i < json_array_size(j); i++)
      if (!from_json(r, json_array_get(j, i), &l->items[l->n++], depth + 1))
        return false;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  case JSON_OBJECT: {
    jv_dict *d = dict_new(r, 0);
    if (!d)
      return false;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)j, k, v) {
      jv val;
      if (!from_json(r, v, &val, depth + 1))
        return false;
      /* keys are unique in a JSON object: append without a lookup */
      if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        jv *nk = ralloc(r, cap * sizeof(jv), 0), *nv = ralloc(r, cap * sizeof(jv), 0);
        if (!nk || !nv)
          return false;
        if (d->n) {
          memcpy(nk, d->keys, d->n * sizeof(jv));
          memcpy(nv, d->vals, d->n * sizeof(jv));
        }
        d->keys = nk, d->vals = nv, d->cap = cap;
      }
      d->keys[d->n] = jv_str(k, strlen(k));
      d->vals[d->n++] = val;
    }
    *out = (jv){.t = JV_DICT, .u.d = d};
    return true;
  }
  }
  return fail(r, 0, HX_EINVAL, "unsupported JSON value in context");
}

/* ---- scopes ---------------------------------------------------------- */

static bool scope_lookup(const scope *sc, const char *k, size_t n, jv *out) {
  for (; sc; sc = sc->parent) {
    jv *v = dict_find_s(&sc->vars, k, n);
    if (v) {
      *out = *v;
      return true;
    }
  }
  return false;
}

static bool scope_set(rs *r, scope *sc, const char *k, size_t n, jv v, int line) {
  return dict_set(r, &sc->vars, jv_str(k, n), v, line);
}

static scope *scope_new(rs *r, scope *parent, int line) {
  scope *s = ralloc(r, sizeof *s, line);
  if (s)
    s->parent = parent;
  return s;
}

/* ---- builtins -------------------------------------------------------- */

enum { FN_RANGE = 1, FN_NAMESPACE, FN_DICT, FN_RAISE, FN_STRFTIME };

static bool name_is(const char *p, size_t n, const char *s) {
  return strlen(s) == n && memcmp(p, s, n) == 0;
}

static bool str_of(rs *r, jv v, jv *out, int line) {
  if (v.t == JV_STR) {
    *out = v;
    return true;
  }
  hx_buf b;
  hx_buf_init(&b, r->lim.output_bytes_max);
  hx_code rc = jv_to_str(v, &b);
  bool ok = rc == HX_OK ? mkstr(r, b.data, b.len, out, line) : buf_fail(r, line, rc);
  hx_buf_free(&b);
  return ok;
}

static bool undefined_error(rs *r, int line, jv u) {
  if (u.u.s.p)
    return fail(r, line, HX_EINVAL, "'%.*s' is undefined", (int)u.u.s.n, u.u.s.p);
  return fail(r, line, HX_EINVAL, "undefined value used");
}

static jv undef_named(const char *p, size_t n) {
  jv u = jv_undef();
  u.u.s.p = p;
  u.u.s.n = n;
  return u;
}

/* Call arguments after evaluation. */
typedef struct args {
  jv *pos;
  size_t npos;
  const char **kwn;
  size_t *kwl;
  jv *kwv;
  size_t nkw;
} args;

static bool arg_get(const args *a, size_t idx, const char *name, jv *out) {
  if (idx < a->npos) {
    *out = a->pos[idx];
    return true;
  }
  for (size_t i = 0; i < a->nkw; i++)
    if (name_is(a->kwn[i], a->kwl[i], name)) {
      *out = a->kwv[i];
      return true;
    }
  return false;
}

static bool ev(rs *r, const jx_node *n, scope *sc, jv *out);
static bool exec(rs *r, const jx_node *n, scope *sc);
static bool call_value(rs *r, jv f, const args *a, jv *out, int line);

static bool step(rs *r, int line) {
  if (++r->steps > r->lim.steps_max)
    return fail(r, line, HX_ETOOLARGE, "step limit of %llu exceeded",
                (unsigned long long)r->lim.steps_max);
  return true;
}

/* Iteration: materializes the items of an iterable as a list. */
static bool iter_items(rs *r, jv v, jv_list **out, int line) {
  switch (v.t) {
  case JV_UNDEF:
    *out = list_new(r, 0, line);
    return *out != NULL;
  case JV_LIST:
    *out = v.u.l;
    return true;
  case JV_DICT:
  case JV_NS: {
    jv_list *l = list_new(r, v.u.d->n, line);
    if (!l)
      return false;
    for (size_t i = 0; i < v.u.d->n; i++)
      l->items[l->n++] = v.u.d->keys[i];
    *out = l;
    return true;
  }
  case JV_STR: {
    jv_list *l = list_new(r, v.u.s.n, line);
    if (!l)
      return false;
    const char *p = v.u.s.p;
    size_t n = v.u.s.n;
    for (size_t i = 0; i < n;) {
      size_t j = i + 1;
      while (j < n && ((unsigned char)p[j] & 0xC0) == 0x80)
        j++;
      l->items[l->n++] = jv_str(p + i, j - i);
      i = j;
    }
    *out = l;
    return true;
  }
  default:
    return fail(r, line, HX_EINVAL, "'%s' object is not iterable", jv_type_name(v));
  }
}

static bool num_compare(rs *r, jv a, jv b, int *cmp, int line) {
  bool an = a.t == JV_INT || a.t == JV_FLOAT || a.t == JV_BOOL;
  bool bn = b.t == JV_INT || b.t == JV_FLOAT || b.t == JV_BOOL;
  if (an && bn) {
    if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
      int64_t x = a.t == JV_INT ? a.u.i : a.u.b, y = b.t == JV_INT ? b.u.i : b.u.b;
      *cmp = x < y ? -1 : x > y;
    } else {
      double x = a.t == JV_FLOAT ? a.u.f : a.t == JV_INT ? (double)a.u.i : a.u.b;
      double y = b.t == JV_FLOAT ? b.u.f : b.t == JV_INT ? (double)b.u.i : b.u.b;
      *cmp = x < y ? -1 : x > y;
    }
    return true;
  }
  if (a.t == JV_STR && b.t == JV_STR) {
    size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
    int c = memcmp(a.u.s.p, b.u.s.p, n);
    *cmp = c ? (c < 0 ? -1 : 1) : (a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n);
    return true;
  }
  if (a.t == JV_LIST && b.t == JV_LIST) {
    for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
      if (jv_equal(a.u.l->items[i], b.u.l->items[i]))
        continue;
      return num_compare(r, a.u.l->items[i], b.u.l->items[i], cmp, line);
    }
    *cmp = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    return true;
  }
  return fail(r, line, HX_EINVAL, "'<' not supported between instances of '%s' and '%s'",
              jv_type_name(a), jv_type_name(b));
}

static bool contains(rs *r, jv hay, jv needle, bool *res, int line) {
  switch (hay.t) {
  case JV_STR:
    if (needle.t != JV_STR)
      return fail(r, line, HX_EINVAL, "'in <string>' requires string as left operand, not %s",
                  jv_type_name(needle));
    *res = needle.u.s.n == 0 || memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
    return true;
  case JV_LIST:
    *res = false;
    for (size_t i = 0; i < hay.u.l->n && !*res; i++)
      *res = jv_equal(hay.u.l->items[i], needle);
    return true;
  case JV_DICT:
  case JV_NS:
    *res = dict_find(hay.u.d, needle) != NULL;
    return true;
  case JV_UNDEF:
    *res = false;
    return true;
  default:
    return fail(r, line, HX_EINVAL, "argument of type '%s' is not iterable", jv_type_name(hay));
  }
}

/* ---- attribute / item access ---------------------------------------- */

static const char *const str_methods[] = {
    "startswith", "endswith", "split",   "rsplit",       "strip",        "lstrip",  "rstrip",
    "replace",    "upper",    "lower",   "title",        "capitalize",   "format",  "join",
    "find",       "rfind",    "count",   "splitlines",   "isdigit",      "isalpha", "isalnum",
    "isspace",    "isupper",  "islower", "removeprefix", "removesuffix", "index",   NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", NULL};
static const char *const list_methods[] = {"index", "count", NULL};

static const char *method_name(const char *const *tbl, const char *p, size_t n) {
  for (size_t i = 0; tbl[i]; i++)
    if (name_is(p, n, tbl[i]))
      return tbl[i];
  return NULL;
}

static bool getattr_(rs *r, jv obj, const char *name, size_t n, jv *out, int line) {
  if (n && name[0] == '_') { /* sandbox: no private / dunder attributes */
    *out = undef_named(name, n);
    return true;
  }
  const char *m = NULL;
  switch (obj.t) {
  case JV_UNDEF:
    return undefined_error(r, line, obj);
  case JV_DICT:
    m = method_name(dict_methods, name, n);
    if (!m) {
      jv *v = dict_find_s(obj.u.d, name, n);
      *out = v ? *v : undef_named(name, n);
      return true;
    }
    break;
  case JV_NS: {
    jv *v = dict_find_s(obj.u.d, name, n);
    *out = v ? *v : undef_named(name, n);
    return true;
  }
  case JV_STR:
    m = method_name(str_methods, name, n);
    break;
  case JV_LIST:
    m = method_name(list_methods, name, n);
    break;
  case JV_LOOP: {
    jx_loop *L = obj.u.loop;
    size_t i = L->index0, len = L->length;
    if (name_is(name, n, "index"))
      *out = jv_int((int64_t)i + 1);
    else if (name_is(name, n, "index0"))
      *out = jv_int((int64_t)i);
    else if (name_is(name, n, "revindex"))
      *out = jv_int((int64_t)(len - i));
    else if (name_is(name, n, "revindex0"))
      *out = jv_int((int64_t)(len - i - 1));
    else if (name_is(name, n, "first"))
      *out = jv_bool(i == 0);
    else if (name_is(name, n, "last"))
      *out = jv_bool(i + 1 == len);
    else if (name_is(name, n, "length"))
      *out = jv_int((int64_t)len);
    else if (name_is(name, n, "depth"))
      *out = jv_int(1);
    else if (name_is(name, n, "depth0"))
      *out = jv_int(0);
    else if (name_is(name, n, "previtem"))
      *out = i > 0 ? L->seq->items[i - 1] : undef_named("previtem", 8);
    else if (name_is(name, n, "nextitem"))
      *out = i + 1 < len ? L->seq->items[i + 1] : undef_named("nextitem", 8);
    else if (name_is(name, n, "cycle"))
      m = "cycle";
    else
      *out = undef_named(name, n);
    if (!m)
      return true;
    break;
  }
  default:
    break;
  }
  if (!m) {
    *out = undef_named(name, n);
    return true;
  }
  jv_method *bm = ralloc(r, sizeof *bm, line);
  if (!bm)
    return false;
  bm->self = obj;
  bm->name = m;
  *out = (jv){.t = JV_METHOD, .u.m = bm};
  return true;
}

static bool getitem(rs *r, jv obj, jv key, jv *out, int line) {
  switch (obj.t) {
  case JV_UNDEF:
    return undefined_error(r, line, obj);
  case JV_DICT:
  case JV_NS: {
    jv *v = dict_find(obj.u.d, key);
    if (v) {
      *out = *v;
      return true;
    }
    break;
  }
  case JV_LIST:
    if (key.t == JV_INT || key.t == JV_BOOL) {
      int64_t i = key.t == JV_INT ? key.u.i : key.u.b, n = (int64_t)obj.u.l->n;
      if (i < 0)
        i += n;
      *out = i >= 0 && i < n ? obj.u.l->items[i] : jv_undef();
      return true;
    }
    break;
  case JV_STR:
    if (key.t == JV_INT) {
      int64_t n = (int64_t)jv_utf8_len(obj.u.s.p, obj.u.s.n), i = key.u.i;
      if (i < 0)
        i += n;
      if (i < 0 || i >= n) {
        *out = jv_undef();
        return true;
      }
      size_t a = jv_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i);
      size_t b = jv_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i + 1);
      *out = jv_str(obj.u.s.p + a, b - a);
      return true;
    }
    break;
  default:
    break;
  }
  if (key.t == JV_STR)
    return getattr_(r, obj, key.u.s.p, key.u.s.n, out, line);
  *out = jv_undef();
  return true;
}

static bool slice_idx(rs *r, jv v, int64_t *out, bool *given, int line) {
  if (v.t == JV_NONE || v.t == JV_UNDEF) {
    *given = false;
    return true;
  }
  if (v.t != JV_INT && v.t != JV_BOOL)
    return fail(r, line, HX_EINVAL, "slice indices must be integers or None");
  *given = true;
  *out = v.t == JV_INT ? v.u.i : v.u.b;
  return true;
}

static bool do_slice(rs *r, jv obj, jv a, jv b, jv c, jv *out, int line) {
  int64_t start = 0, stop = 0, stepv = 1;
  bool hs = false, he = false, hst = false;
  if (!slice_idx(r, a, &start, &hs, line) || !slice_idx(r, b, &stop, &he, line) ||
      !slice_idx(r, c, &stepv, &hst, line))
    return false;
  if (!hst)
    stepv = 1;
  if (stepv == 0)
    return fail(r, line, HX_EINVAL, "slice step cannot be zero");
  bool is_str = obj.t == JV_STR;
  if (obj.t == JV_UNDEF)
    return undefined_error(r, line, obj);
  if (!is_str && obj.t != JV_LIST)
    return fail(r, line, HX_EINVAL, "'%s' object is not subscriptable", jv_type_name(obj));
  jv_list *chars = NULL;
  if (is_str && !iter_items(r, obj, &chars, line))
    return false;
  const jv_list *src = is_str ? chars : obj.u.l;
  int64_t n = (int64_t)src->n;
  /* Python slice.indices */
  if (stepv > 0) {
    start = !hs ? 0 : start < 0 ? (start + n < 0 ? 0 : start + n) : (start > n ? n : start);
    stop = !he ? n : stop < 0 ? (stop + n < 0 ? 0 : stop + n) : (stop > n ? n : stop);
  } else {
    start = !hs         ? n - 1
            : start < 0 ? (start + n < 0 ? -1 : start + n)
                        : (start >= n ? n - 1 : start);
    stop = !he ? -1 : stop < 0 ? (stop + n < 0 ? -1 : stop + n) : (stop >= n ? n - 1 : stop);
  }
  jv_list *l = list_new(r, 0, line);
  if (!l)
    return false;
  l->is_tuple = !is_str && obj.u.l->is_tuple;
  for (int64_t i = start; stepv > 0 ? i < stop : i > stop; i += stepv)
    if (!list_push(r, l, src->items[i], line))
      return false;
  if (!is_str) {
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  size_t total = 0;
  for (size_t i = 0; i < l->n; i++)
    total += l->items[i].u.s.n;
  char *d = ralloc(r, total, line);
  if (!d)
    return false;
  size_t o = 0;
  for (size_t i = 0; i < l->n; i++) {
    memcpy(d + o, l->items[i].u.s.p, l->items[i].u.s.n);
    o += l->items[i].u.s.n;
  }
  *out = jv_str(d, o);
  return true;
}

/* ---- string helpers (Python str methods) ---------------------------- */

static uint32_t utf8_dec(const char *p, size_t n, size_t *len) {
  unsigned char c = (unsigned char)p[0];
  size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (k > n || c >= 0xF8 || (c >= 0x80 && c < 0xC0)) {
    *len = 1;
    return c;
  }
  uint32_t cp = k == 1 ? c : k == 2 ? (c & 0x1F) : k == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t i = 1; i < k; i++)
    cp = (cp << 6) | ((unsigned char)p[i] & 0x3F);
  *len = k;
  return cp;
}

static bool py_space(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

static bool in_chars(uint32_t c, jv chars) {
  if (chars.t != JV_STR)
    return py_space(c);
  for (size_t i = 0; i < chars.u.s.n;) {
    size_t k;
    uint32_t x = utf8_dec(chars.u.s.p + i, chars.u.s.n - i, &k);
    if (x == c)
      return true;
    i += k;
  }
  return false;
}

/* Previous code point start before byte offset e. */
static size_t utf8_prev(const char *p, size_t e) {
  size_t i = e - 1;
  while (i > 0 && ((unsigned char)p[i] & 0xC0) == 0x80 && e - i < 4)
    i--;
  return i;
}

static jv str_strip(jv s, jv chars, bool left, bool right) {
  const char *p = s.u.s.p;
  size_t a = 0, b = s.u.s.n;
  while (left && a < b) {
    size_t k;
    uint32_t c = utf8_dec(p + a, b - a, &k);
    if (!in_chars(c, chars))
      break;
    a += k;
  }
  while (right && b > a) {
    size_t i = utf8_prev(p, b);
    size_t k;
    uint32_t c = utf8_dec(p + i, b - i, &k);
    if (i + k != b || !in_chars(c, chars))
      break;
    b = i;
  }
  return jv_str(p + a, b - a);
}

static bool str_replace(rs *r, jv s, jv old, jv neu, int64_t count, jv *out, int line) {
  hx_buf b;
  hx_buf_init(&b, r->lim.output_bytes_max);
  hx_code rc = HX_OK;
  const char *p = s.u.s.p;
  size_t n = s.u.s.n, i = 0;
  int64_t done = 0;
  if (old.u.s.n == 0) {
    /* inserts `new` between code points and at both ends */
    while (rc == HX_OK && (count < 0 || done < count)) {
      rc = hx_buf_append(&b, neu.u.s.p, neu.u.s.n);
      done++;
      if (i >= n)
        break;
      size_t k;
      utf8_dec(p + i, n - i, &k);
      if (rc == HX_OK)
        rc = hx_buf_append(&b, p + i, k);
      i += k;
    }
    if (rc == HX_OK && i < n)
      rc = hx_buf_append(&b, p + i, n - i);
  } else {
    while (rc == HX_OK) {
      const char *f =
          (count < 0 || done < count) ? memmem(p + i, n - i, old.u.s.p, old.u.s.n) : NULL;
      if (!f) {
        rc = hx_buf_append(&b, p + i, n - i);
        break;
      }
      rc = hx_buf_append(&b, p + i, (size_t)(f - (p + i)));
      if (rc == HX_OK)
        rc = hx_buf_append(&b, neu.u.s.p, neu.u.s.n);
      i = (size_t)(f - p) + old.u.s.n;
      done++;
    }
  }
  bool ok = rc == HX_OK ? mkstr(r, b.data, b.len, out, line) : buf_fail(r, line, rc);
  hx_buf_free(&b);
  return ok;
}

static bool str_split(rs *r, jv s, jv sep, int64_t maxsplit, jv *out, int line) {
  jv_list *l = list_new(r, 0, line);
  if (!l)
    return false;
  const char *p = s.u.s.p;
  size_t n = s.u.s.n, i = 0;
  int64_t splits = 0;
  if (sep.t != JV_STR) {
    for (;;) {
      while (i < n) {
        size_t k;
        if (!py_space(utf8_dec(p + i, n - i, &k)))
          break;
        i += k;
      }
      if (i >= n)
        break;
      if (maxsplit >= 0 && splits >= maxsplit) {
        jv rest = str_strip(jv_str(p + i, n - i), jv_undef(), false, true);
        if (!list_push(r, l, rest, line))
          return false;
        break;
      }
      size_t j = i;
      while (j < n) {
        size_t k;
        if (py_space(utf8_dec(p + j, n - j, &k)))
          break;
        j += k;
      }
      if (!list_push(r, l, jv_str(p + i, j - i), line))
        return false;
      splits++;
      i = j;
    }
  } else {
    if (sep.u.s.n == 0)
      return fail(r, line, HX_EINVAL, "empty separator");
    for (;;) {
      const char *f =
          (maxsplit < 0 || splits < maxsplit) ? memmem(p + i, n - i, sep.u.s.p, sep.u.s.n) : NULL;
      if (!f) {
        if (!list_push(r, l, jv_str(p + i, n - i), line))
          return false;
        break;
      }
      if (!list_push(r, l, jv_str(p + i, (size_t)(f - (p + i))), line))
        return false;
      i = (size_t)(f - p) + sep.u.s.n;
      splits++;
    }
  }
  *out = (jv){.t = JV_LIST, .u.l = l};
  return true;
}

/* case mapping: ASCII + Latin-1/Greek/Cyrillic basics via towupper-like rules */
static uint32_t cp_upper(uint32_t c) {
  if (c >= 'a' && c <= 'z')
    return c - 32;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7))
    return c - 32;
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2)
    return c - 32;
  if (c >= 0x430 && c <= 0x44F)
    return c - 32;
  if (c >= 0x450 && c <= 0x45F)
    return c - 80;
  return c;
}
static uint32_t cp_lower(uint32_t c) {
  if (c >= 'A' && c <= 'Z')
    return c + 32;
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7))
    return c + 32;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2)
    return c + 32;
  if (c >= 0x410 && c <= 0x42F)
    return c + 32;
  if (c >= 0x400 && c <= 0x40F)
    return c + 80;
  return c;
}
static bool cp_cased(uint32_t c) { return cp_upper(c) != c || cp_lower(c) != c; }

static size_t utf8_enc(char *d, uint32_t cp) {
  if (cp < 0x80) {
    d[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    d[0] = (char)(0xC0 | (cp >> 6));
    d[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    d[0] = (char)(0xE0 | (cp >> 12));
    d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  d[0] = (char)(0xF0 | (cp >> 18));
  d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  d[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* mode: 'U' upper, 'L' lower, 'T' title, 'C' capitalize */
static bool str_case(rs *r, jv s, char mode, jv *out, int line) {
  char *d = ralloc(r, s.u.s.n, line);
  if (!d)
    return false;
  size_t o = 0;
  bool prev_cased = false, first = true;
  for (size_t i = 0; i < s.u.s.n;) {
    size_t k;
    uint32_t c = utf8_dec(s.u.s.p + i, s.u.s.n - i, &k);
    uint32_t m = c;
    if (mode == 'U')
      m = cp_upper(c);
    else if (mode == 'L')
      m = cp_lower(c);
    else if (mode == 'T')
      m = prev_cased ? cp_lower(c) : cp_upper(c);
    else
      m = first ? cp_upper(c) : cp_lower(c);
    prev_cased = cp_cased(c);
    first = false;
    size_t w = utf8_enc(d + o, m);
    if (w != k) { /* never changes width in the ranges mapped above */
      memcpy(d + o, s.u.s.p + i, k);
      w = k;
    }
    o += w;
    i += k;
  }
  *out = jv_str(d, o);
  return true;
}

static bool want_str(rs *r, jv v, const char *what, int line) {
  if (v.t != JV_STR)
    return fail(r, line, HX_EINVAL, "%s must be a string, not %s", what, jv_type_name(v));
  return true;
}

static bool want_int(rs *r, jv v, int64_t *out, const char *what, int line) {
  if (v.t == JV_INT || v.t == JV_BOOL) {
    *out = v.t == JV_INT ? v.u.i : v.u.b;
    return true;
  }
  return fail(r, line, HX_EINVAL, "%s must be an integer, not %s", what, jv_type_name(v));
}

static bool join_values(rs *r, const jv_list *l, jv sep, jv *out, int line) {
  hx_buf b;
  hx_buf_init(&b, r->lim.output_bytes_max);
  hx_code rc = HX_OK;
  for (size_t i = 0; i < l->n && rc == HX_OK; i++) {
    if (i && sep.t == JV_STR)
      rc = hx_buf_append(&b, sep.u.s.p, sep.u.s.n);
    if (rc == HX_OK)
      rc = jv_to_str(l->items[i], &b);
  }
  bool ok = rc == HX_OK ? mkstr(r, b.data, b.len, out, line) : buf_fail(r, line, rc);
  hx_buf_free(&b);
  return ok;
}

static bool str_format(rs *r, jv fmt, const args *a, jv *out, int line) {
  hx_buf b;
  hx_buf_init(&b, r->lim.output_bytes_max);
  hx_code rc = HX_OK;
  size_t auto_idx = 0;
  const char *p = fmt.u.s.p;
  size_t n = fmt.u.s.n;
  bool ok = true;
  for (size_t i = 0; i < n && rc == HX_OK && ok; i++) {
    if (p[i] == '{' && i + 1 < n && p[i + 1] == '{') {
      rc = hx_buf_append_char(&b, '{');
      i++;
    } else if (p[i] == '}' && i + 1 < n && p[i + 1] == '}') {
      rc = hx_buf_append_char(&b, '}');
      i++;
    } else if (p[i] == '{') {
      size_t j = i + 1;
      while (j < n && p[j] != '}')
        j++;
      if (j >= n) {
        ok = fail(r, line, HX_EINVAL, "format: unmatched '{'");
        break;
      }
      jv v;
      bool found;
      if (j == i + 1) {
        found = auto_idx < a->npos;
        if (found)
          v = a->pos[auto_idx++];
      } else if (p[i + 1] >= '0' && p[i + 1] <= '9') {
        size_t idx = (size_t)atoi(p + i + 1);
        found = idx < a->npos;
        if (found)
          v = a->pos[idx];
      } else {
        found = false;
        for (size_t k = 0; k < a->nkw && !found; k++)
          if (a->kwl[k] == j - i - 1 && memcmp(a->kwn[k], p + i + 1, j - i - 1) == 0) {
            v = a->kwv[k];
            found = true;
          }
      }
      if (!found) {
        ok = fail(r, line, HX_EINVAL, "format: missing argument for '%.*s'", (int)(j - i + 1),
                  p + i);
        break;
      }
      rc = jv_to_str(v, &b);
      i = j;
    } else {
      rc = hx_buf_append_char(&b, p[i]);
    }
  }
  if (ok)
    ok = rc == HX_OK ? mkstr(r, b.data, b.len, out, line) : buf_fail(r, line, rc);
  hx_buf_free(&b);
  return ok;
}

static bool call_method(rs *r, jv_method *m, const args *a, jv *out, int line) {
  jv self = m->self, x, y;
  const char *nm = m->name;
  if (self.t == JV_DICT) {
    if (!strcmp(nm, "get")) {
      if (!arg_get(a, 0, "key", &x))
        return fail(r, line, HX_EINVAL, "get() needs a key");
      jv *v = dict_find(self.u.d, x);
      *out = v ? *v : arg_get(a, 1, "default", &y) ? y : jv_none();
      return true;
    }
    jv_list *l = list_new(r, self.u.d->n, line);
    if (!l)
      return false;
    for (size_t i = 0; i < self.u.d->n; i++) {
      if (!strcmp(nm, "keys"))
        l->items[l->n++] = self.u.d->keys[i];
      else if (!strcmp(nm, "values"))
        l->items[l->n++] = self.u.d->vals[i];
      else {
        jv_list *t = list_new(r, 2, line);
        if (!t)
          return false;
        t->is_tuple = true;
        t->items[0] = self.u.d->keys[i];
        t->items[1] = self.u.d->vals[i];
        t->n = 2;
        l->items[l->n++] = (jv){.t = JV_LIST, .u.l = t};
      }
    }
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  if (self.t == JV_LOOP) { /* loop.cycle(a, b, ...) */
    if (a->npos == 0)
      return fail(r, line, HX_EINVAL, "no items for cycling given");
    *out = a->pos[self.u.loop->index0 % a->npos];
    return true;
  }
  if (self.t == JV_LIST) {
    if (!arg_get(a, 0, "x", &x))
      return fail(r, line, HX_EINVAL, "%s() needs an argument", nm);
    int64_t cnt = 0;
    for (size_t i = 0; i < self.u.l->n; i++)
      if (jv_equal(self.u.l->items[i], x)) {
        if (!strcmp(nm, "index")) {
          *out = jv_int((int64_t)i);
          return true;
        }
        cnt++;
      }
    if (!strcmp(nm, "index"))
      return fail(r, line, HX_EINVAL, "value is not in list");
    *out = jv_int(cnt);
    return true;
  }
  HX_ASSERT(self.t == JV_STR);
  if (!strcmp(nm, "startswith") || !strcmp(nm, "endswith")) {
    if (!arg_get(a, 0, "prefix", &x))
      return fail(r, line, HX_EINVAL, "%s() needs an argument", nm);
    bool ends = nm[0] == 'e';
    jv_list one = {.items = &x, .n = 1};
    const jv_list *cands = x.t == JV_LIST ? x.u.l : &one;
    bool res = false;
    for (size_t i = 0; i < cands->n && !res; i++) {
      jv c = cands->items[i];
      if (!want_str(r, c, "startswith/endswith argument", line))
        return false;
      res = c.u.s.n <= self.u.s.n &&
            memcmp(ends ? self.u.s.p + self.u.s.n - c.u.s.n : self.u.s.p, c.u.s.p, c.u.s.n) == 0;
    }
    *out = jv_bool(res);
    return true;
  }
  if (!strcmp(nm, "strip") || !strcmp(nm, "lstrip") || !strcmp(nm, "rstrip")) {
    jv chars = jv_none();
    arg_get(a, 0, "chars", &chars);
    if (chars.t != JV_NONE && !want_str(r, chars, "strip argument", line))
      return false;
    *out = str_strip(self, chars, nm[0] != 'r', nm[0] != 'l');
    return true;
  }
  if (!strcmp(nm, "split") || !strcmp(nm, "rsplit")) {
    jv sep = jv_none(), ms = jv_int(-1);
    arg_get(a, 0, "sep", &sep);
    arg_get(a, 1, "maxsplit", &ms);
    int64_t maxsplit = -1;
    if ((sep.t != JV_NONE && !want_str(r, sep, "separator", line)) ||
        !want_int(r, ms, &maxsplit, "maxsplit", line))
      return false;
    if (nm[0] == 'r' && maxsplit >= 0)
      return fail(r, line, HX_EUNSUPPORTED, "rsplit with maxsplit is not supported");
    return str_split(r, self, sep, maxsplit, out, line);
  }
  if (!strcmp(nm, "replace")) {
    jv c = jv_int(-1);
    int64_t count = -1;
    if (!arg_get(a, 0, "old", &x) || !arg_get(a, 1, "new", &y))
      return fail(r, line, HX_EINVAL, "replace() needs two arguments");
    arg_get(a, 2, "count", &c);
    if (!want_str(r, x, "replace argument", line) || !want_str(r, y, "replace argument", line) ||
        !want_int(r, c, &count, "count", line))
      return false;
    return str_replace(r, self, x, y, count, out, line);
  }
  if (!strcmp(nm, "upper"))
    return str_case(r, self, 'U', out, line);
  if (!strcmp(nm, "lower"))
    return str_case(r, self, 'L', out, line);
  if (!strcmp(nm, "title"))
    return str_case(r, self, 'T', out, line);
  if (!strcmp(nm, "capitalize"))
    return str_case(r, self, 'C', out, line);
  if (!strcmp(nm, "format"))
    return str_format(r, self, a, out, line);
  if (!strcmp(nm, "join")) {
    jv_list *l;
    if (!arg_get(a, 0, "iterable", &x) || !iter_items(r, x, &l, line))
      return r->code ? false : fail(r, line, HX_EINVAL, "join() needs an argument");
    for (size_t i = 0; i < l->n; i++)
      if (!want_str(r, l->items[i], "join item", line))
        return false;
    return join_values(r, l, self, out, line);
  }
  if (!strcmp(nm, "find") || !strcmp(nm, "rfind") || !strcmp(nm, "count") || !strcmp(nm, "index")) {
    if (!arg_get(a, 0, "sub", &x) || !want_str(r, x, "argument", line))
      return r->code ? false : fail(r, line, HX_EINVAL, "%s() needs an argument", nm);
    int64_t pos = -1, cnt = 0;
    for (size_t i = 0; i + x.u.s.n <= self.u.s.n;) {
      if (memcmp(self.u.s.p + i, x.u.s.p, x.u.s.n) == 0) {
        if (pos < 0 || nm[0] == 'r')
          pos = (int64_t)jv_utf8_len(self.u.s.p, i);
        cnt++;
        i += x.u.s.n ? x.u.s.n : 1;
      } else {
        i++;
      }
    }
    if (!strcmp(nm, "count")) {
      *out = jv_int(cnt);
      return true;
    }
    if (!strcmp(nm, "index") && pos < 0)
      return fail(r, line, HX_EINVAL, "substring not found");
    *out = jv_int(pos);
    return true;
  }
  if (!strcmp(nm, "removeprefix") || !strcmp(nm, "removesuffix")) {
    if (!arg_get(a, 0, "fix", &x) || !want_str(r, x, "argument", line))
      return r->code ? false : fail(r, line, HX_EINVAL, "%s() needs an argument", nm);
    bool pre = nm[6] == 'p';
    *out = self;
    if (x.u.s.n <= self.u.s.n &&
        memcmp(pre ? self.u.s.p : self.u.s.p + self.u.s.n - x.u.s.n, x.u.s.p, x.u.s.n) == 0)
      *out = jv_str(self.u.s.p + (pre ? x.u.s.n : 0), self.u.s.n - x.u.s.n);
    return true;
  }
  if (!strcmp(nm, "splitlines")) {
    jv_list *l = list_new(r, 0, line);
    if (!l)
      return false;
    size_t i = 0, n = self.u.s.n;
    const char *p = self.u.s.p;
    while (i < n) {
      size_t j = i;
      while (j < n && p[j] != '\n' && p[j] != '\r')
        j++;
      if (!list_push(r, l, jv_str(p + i, j - i), line))
        return false;
      if (j < n && p[j] == '\r' && j + 1 < n && p[j + 1] == '\n')
        j++;
      i = j + 1;
    }
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  /* is* predicates */
  bool any = false, res = true, has_cased = false;
  for (size_t i = 0; i < self.u.s.n;) {
    size_t k;
    uint32_t c = utf8_dec(self.u.s.p + i, self.u.s.n - i, &k);
    i += k;
    any = true;
    bool digit = c >= '0' && c <= '9', alpha = cp_cased(c) || (c >= 0x4E00 && c <= 0x9FFF);
    if (!strcmp(nm, "isdigit"))
      res &= digit;
    else if (!strcmp(nm, "isalpha"))
      res &= alpha;
    else if (!strcmp(nm, "isalnum"))
      res &= alpha || digit;
    else if (!strcmp(nm, "isspace"))
      res &= py_space(c);
    else if (!strcmp(nm, "isupper")) {
      res &= cp_lower(c) == c || cp_upper(c) == c ? !(cp_upper(c) != c) : true;
      has_cased |= cp_cased(c);
    } else if (!strcmp(nm, "islower")) {
      res &= !(cp_lower(c) != c);
      has_cased |= cp_cased(c);
    }
  }
  if (!strcmp(nm, "isupper") || !strcmp(nm, "islower"))
    res = res && has_cased;
  *out = jv_bool(any && res);
  return true;
}

/* ---- tests ----------------------------------------------------------- */

static const char *const test_names[] = {
    "defined",     "undefined", "none",        "string",  "mapping", "iterable", "sequence",
    "number",      "integer",   "float",       "boolean", "true",    "false",    "callable",
    "odd",         "even",      "divisibleby", "eq",      "equalto", "==",       "ne",
    "!=",          "lt",        "lessthan",    "<",       "le",      "<=",       "gt",
    "greaterthan", ">",         "ge",          ">=",      "in",      "sameas",   "lower",
    "upper",       "escaped",   NULL};

bool jx_test_known(const char *name, size_t len) {
  return method_name(test_names, name, len) != NULL;
}

static bool run_test(rs *r, const char *nm, size_t nlen, jv v, const jv *argv, size_t argc,
                     bool *res, int line) {
  const char *t = method_name(test_names, nm, nlen);
  if (!t)
    return fail(r, line, HX_EINVAL, "no test named '%.*s'", (int)nlen, nm);
  jv x = argc ? argv[0] : jv_undef();
  int c;
  if (!strcmp(t, "defined"))
    *res = v.t != JV_UNDEF;
  else if (!strcmp(t, "undefined"))
    *res = v.t == JV_UNDEF;
  else if (!strcmp(t, "none"))
    *res = v.t == JV_NONE;
  else if (!strcmp(t, "string"))
    *res = v.t == JV_STR;
  else if (!strcmp(t, "mapping"))
    *res = v.t == JV_DICT;
  else if (!strcmp(t, "iterable"))
    *res = v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
  else if (!strcmp(t, "sequence"))
    *res = v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
  else if (!strcmp(t, "number"))
    *res = v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
  else if (!strcmp(t, "integer"))
    *res = v.t == JV_INT;
  else if (!strcmp(t, "float"))
    *res = v.t == JV_FLOAT;
  else if (!strcmp(t, "boolean"))
    *res = v.t == JV_BOOL;
  else if (!strcmp(t, "true"))
    *res = v.t == JV_BOOL && v.u.b;
  else if (!strcmp(t, "false"))
    *res = v.t == JV_BOOL && !v.u.b;
  else if (!strcmp(t, "callable"))
    *res = v.t == JV_MACRO || v.t == JV_FUNC || v.t == JV_METHOD;
  else if (!strcmp(t, "odd") || !strcmp(t, "even") || !strcmp(t, "divisibleby")) {
    int64_t i = 0, d = 2;
    if (!want_int(r, v, &i, "operand", line))
      return false;
    if (t[0] == 'd') {
      if (!want_int(r, x, &d, "divisor", line))
        return false;
      if (d == 0)
        return fail(r, line, HX_EINVAL, "integer division or modulo by zero");
      *res = i % d == 0;
    } else {
      *res = ((i % 2) != 0) == (t[0] == 'o');
    }
  } else if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "=="))
    *res = jv_equal(v, x);
  else if (!strcmp(t, "ne") || !strcmp(t, "!="))
    *res = !jv_equal(v, x);
  else if (!strcmp(t, "sameas"))
    *res = v.t == x.t && (v.t == JV_NONE || v.t == JV_UNDEF || (v.t == JV_BOOL && v.u.b == x.u.b) ||
                          jv_equal(v, x));
  else if (!strcmp(t, "in"))
    return contains(r, x, v, res, line);
  else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
    jv s, m;
    if (!str_of(r, v, &s, line) || !str_case(r, s, t[0] == 'l' ? 'L' : 'U', &m, line))
      return false;
    *res = jv_equal(s, m);
  } else if (!strcmp(t, "escaped"))
    *res = false;
  else {
    if (!num_compare(r, v, x, &c, line))
      return false;
    if (t[0] == 'l')
      *res = t[1] == 'e' ? c <= 0 : c < 0;
    else if (t[0] == '<')
      *res = t[1] == '=' ? c <= 0 : c < 0;
    else if (t[0] == 'g')
      *res = t[1] == 'e' ? c >= 0 : c > 0;
    else
      *res = t[1] == '=' ? c >= 0 : c > 0;
  }
  return true;
}

/* ---- filters --------------------------------------------------------- */

static const char *const filter_names[] = {
    "length",     "count",    "tojson", "trim",       "string",    "items",  "selectattr",
    "rejectattr", "select",   "reject", "map",        "join",      "first",  "last",
    "default",    "d",        "lower",  "upper",      "replace",   "safe",   "list",
    "int",        "float",    "abs",    "capitalize", "title",     "unique", "sort",
    "reverse",    "dictsort", "round",  "indent",     "e",         "escape", "sum",
    "min",        "max",      "attr",   "format",     "wordcount", "center", "batch",
    "striptags",  "truncate", "pprint", NULL};

bool jx_filter_known(const char *name, size_t len) {
  return method_name(filter_names, name, len) != NULL;
}

/* dotted attribute path lookup used by map/selectattr/sort(attribute=) */
static bool attr_path(rs *r, jv v, jv path, jv *out, int line) {
  if (path.t == JV_INT)
    return getitem(r, v, path, out, line);
  if (!want_str(r, path, "attribute", line))
    return false;
  const char *p = path.u.s.p;
  size_t n = path.u.s.n, i = 0;
  *out = v;
  while (i <= n) {
    size_t j = i;
    while (j < n && p[j] != '.')
      j++;
    jv key = jv_str(p + i, j - i);
    bool digits = j > i;
    for (size_t k = i; k < j; k++)
      digits &= p[k] >= '0' && p[k] <= '9';
    if (digits)
      key = jv_int(atoll(p + i));
    if (out->t == JV_UNDEF)
      return true;
    if (!getitem(r, *out, key, out, line))
      return false;
    i = j + 1;
  }
  return true;
}

static bool apply_filter(rs *r, const char *nm, size_t nlen, jv v, const args *a, scope *sc,
                         jv *out, int line);

static bool escape_html(rs *r, jv v, jv *out, int line) {
  jv s;
  if (!str_of(r, v, &s, line))
    return false;
  hx_buf b;
  hx_buf_init(&b, r->lim.output_bytes_max);
  hx_code rc = HX_OK;
  for (size_t i = 0; i < s.u.s.n && rc == HX_OK; i++) {
    char c = s.u.s.p[i];
    rc = c == '&'    ? hx_buf_append_str(&b, "&amp;")
         : c == '<'  ? hx_buf_append_str(&b, "&lt;")
         : c == '>'  ? hx_buf_append_str(&b, "&gt;")
         : c == '"'  ? hx_buf_append_str(&b, "&#34;")
         : c == '\'' ? hx_buf_append_str(&b, "&#39;")
                     : hx_buf_append_char(&b, c);
  }
  bool ok = rc == HX_OK ? mkstr(r, b.data, b.len, out, line) : buf_fail(r, line, rc);
  hx_buf_free(&b);
  return ok;
}

static int sort_cmp_rs(rs *r, jv a, jv b, bool ci, int line, bool *ok) {
  int c = 0;
  if (ci && a.t == JV_STR && b.t == JV_STR) {
    jv la, lb;
    if (!str_case(r, a, 'L', &la, line) || !str_case(r, b, 'L', &lb, line)) {
      *ok = false;
      return 0;
    }
    a = la, b = lb;
  }
  if (!num_compare(r, a, b, &c, line))
    *ok = false;
  return c;
}

/* stable insertion/merge sort on keys */
static bool sort_list(rs *r, jv_list *l, const jv *keys, bool reverse, bool ci, int line) {
  size_t n = l->n;
  size_t *idx = ralloc(r, n * sizeof *idx, line), *tmp = ralloc(r, n * sizeof *tmp, line);
  if (!idx || !tmp)
    return false;
  for (size_t i = 0; i < n; i++)
    idx[i] = i;
  bool ok = true;
  for (size_t w = 1; w < n && ok; w *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * w) {
      size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
      size_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi) {
        int c = sort_cmp_rs(r, keys[idx[j]], keys[idx[i]], ci, line, &ok);
        if (reverse ? c > 0 : c < 0)
          tmp[k++] = idx[j++];
        else
          tmp[k++] = idx[i++];
      }
      while (i < mid)
        tmp[k++] = idx[i++];
      while (j < hi)
        tmp[k++] = idx[j++];
    }
    memcpy(idx, tmp, n * sizeof *idx);
  }
  if (!ok)
    return false;
  jv *items = ralloc(r, n * sizeof(jv), line);
  if (!items)
    return false;
  for (size_t i = 0; i < n; i++)
    items[i] = l->items[idx[i]];
  l->items = items;
  l->cap = n;
  return true;
}

static bool copy_list(rs *r, jv v, jv_list **out, int line) {
  jv_list *src;
  if (!iter_items(r, v, &src, line))
    return false;
  jv_list *l = list_new(r, src->n, line);
  if (!l)
    return false;
  if (src->n)
    memcpy(l->items, src->items, src->n * sizeof(jv));
  l->n = src->n;
  *out = l;
  return true;
}

static bool apply_filter(rs *r, const char *nm, size_t nlen, jv v, const args *a, scope *sc,
                         jv *out, int line) {
  (void)sc;
  const char *f = method_name(filter_names, nm, nlen);
  if (!f)
    return fail(r, line, HX_EINVAL, "no filter named '%.*s'", (int)nlen, nm);
  jv x, y;
  if (!strcmp(f, "length") || !strcmp(f, "count")) {
    switch (v.t) {
    case JV_STR:
      *out = jv_int((int64_t)jv_utf8_len(v.u.s.p, v.u.s.n));
      return true;
    case JV_LIST:
      *out = jv_int((int64_t)v.u.l->n);
      return true;
    case JV_DICT:
    case JV_NS:
      *out = jv_int((int64_t)v.u.d->n);
      return true;
    case JV_UNDEF:
      *out = jv_int(0);
      return true;
    default:
      return fail(r, line, HX_EINVAL, "object of type '%s' has no len()", jv_type_name(v));
    }
  }
  if (!strcmp(f, "tojson")) {
    int indent = -1;
    bool sort_keys = false;
    const char *isep = NULL, *ksep = NULL;
    char sepbuf[2][64];
    if (arg_get(a, 0, "indent", &x) && x.t != JV_NONE) {
      int64_t i = 0;
      if (!want_int(r, x, &i, "indent", line))
        return false;
      if (i < 0 || i > 64)
        return fail(r, line, HX_EINVAL, "tojson indent out of range");
      indent = (int)i;
    }
    if (arg_get(a, 99, "sort_keys", &x))
      sort_keys = jv_truthy(x);
    if (arg_get(a, 99, "separators", &x) && x.t != JV_NONE) {
      if (x.t != JV_LIST || x.u.l->n != 2 || x.u.l->items[0].t != JV_STR ||
          x.u.l->items[1].t != JV_STR || x.u.l->items[0].u.s.n >= 64 || x.u.l->items[1].u.s.n >= 64)
        return fail(r, line, HX_EINVAL, "tojson separators must be a pair of short strings");
      for (int k = 0; k < 2; k++) {
        memcpy(sepbuf[k], x.u.l->items[k].u.s.p, x.u.l->items[k].u.s.n);
        sepbuf[k][x.u.l->items[k].u.s.n] = 0;
      }
      isep = sepbuf[0];
      ksep = sepbuf[1];
    }
    hx_buf b;
    hx_buf_init(&b, r->lim.output_bytes_max);
    hx_err e = {0};
    hx_code rc = jv_to_json(v, indent, isep, ksep, sort_keys, &b, &e);
    bool ok = rc == HX_OK ? mkstr(r, b.data, b.len, out, line) : fail(r, line, rc, "%s", e.msg);
    hx_buf_free(&b);
    return ok;
  }
  if (!strcmp(f, "trim")) {
    jv s, chars = jv_none();
    arg_get(a, 0, "chars", &chars);
    if (!str_of(r, v, &s, line))
      return false;
    *out = str_strip(s, chars, true, true);
    return true;
  }
  if (!strcmp(f, "string") || !strcmp(f, "safe") || !strcmp(f, "pprint")) {
    if (!strcmp(f, "safe") && v.t != JV_UNDEF) {
      return str_of(r, v, out, line);
    }
    return str_of(r, v, out, line);
  }
  if (!strcmp(f, "items")) {
    if (v.t == JV_UNDEF) {
      *out = (jv){.t = JV_LIST, .u.l = list_new(r, 0, line)};
      return out->u.l != NULL;
    }
    if (v.t != JV_DICT)
      return fail(r, line, HX_EINVAL, "Can only get item pairs from a mapping.");
    jv_method m = {.self = v, .name = "items"};
    args none = {0};
    return call_method(r, &m, &none, out, line);
  }
  if (!strcmp(f, "selectattr") || !strcmp(f, "rejectattr") || !strcmp(f, "select") ||
      !strcmp(f, "reject")) {
    bool is_attr = !strcmp(f, "selectattr") || !strcmp(f, "rejectattr");
    bool want = f[0] == 's';
    jv_list *src, *l;
    if (!iter_items(r, v, &src, line) || !(l = list_new(r, 0, line)))
      return false;
    size_t off = is_attr ? 1 : 0;
    jv attr = jv_undef(), test = jv_undef();
    if (is_attr && !arg_get(a, 0, "attribute", &attr))
      return fail(r, line, HX_EINVAL, "%s needs an attribute name", f);
    bool has_test = a->npos > off;
    if (has_test) {
      test = a->pos[off];
      if (!want_str(r, test, "test name", line))
        return false;
    }
    for (size_t i = 0; i < src->n; i++) {
      jv item = src->items[i], val = item;
      if (is_attr && !attr_path(r, item, attr, &val, line))
        return false;
      bool res;
      if (has_test) {
        if (!run_test(r, test.u.s.p, test.u.s.n, val, a->pos + off + 1, a->npos - off - 1, &res,
                      line))
          return false;
      } else {
        res = jv_truthy(val);
      }
      if (res == want && !list_push(r, l, item, line))
        return false;
    }
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  if (!strcmp(f, "map")) {
    jv_list *src, *l;
    if (!iter_items(r, v, &src, line) || !(l = list_new(r, src->n, line)))
      return false;
    jv attr, def;
    bool has_attr = arg_get(a, 99, "attribute", &attr);
    bool has_def = arg_get(a, 99, "default", &def);
    for (size_t i = 0; i < src->n; i++) {
      jv res;
      if (has_attr) {
        if (!attr_path(r, src->items[i], attr, &res, line))
          return false;
        if (res.t == JV_UNDEF && has_def)
          res = def;
      } else {
        if (a->npos < 1 || !want_str(r, a->pos[0], "filter name", line))
          return r->code ? false : fail(r, line, HX_EINVAL, "map needs a filter or attribute");
        args sub = {.pos = a->pos + 1,
                    .npos = a->npos - 1,
                    .kwn = a->kwn,
                    .kwl = a->kwl,
                    .kwv = a->kwv,
                    .nkw = a->nkw};
        if (!apply_filter(r, a->pos[0].u.s.p, a->pos[0].u.s.n, src->items[i], &sub, sc, &res, line))
          return false;
      }
      l->items[l->n++] = res;
    }
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  if (!strcmp(f, "join")) {
    jv_list *src, *l;
    jv sep = jv_str("", 0), attr;
    arg_get(a, 0, "d", &sep);
    if (!iter_items(r, v, &src, line))
      return false;
    l = src;
    if (arg_get(a, 1, "attribute", &attr)) {
      if (!(l = list_new(r, src->n, line)))
        return false;
      for (size_t i = 0; i < src->n; i++)
        if (!attr_path(r, src->items[i], attr, &l->items[l->n++], line))
          return false;
    }
    if (!str_of(r, sep, &sep, line))
      return false;
    return join_values(r, l, sep, out, line);
  }
  if (!strcmp(f, "first") || !strcmp(f, "last")) {
    jv_list *src;
    if (!iter_items(r, v, &src, line))
      return false;
    *out = src->n == 0 ? jv_undef() : src->items[f[0] == 'f' ? 0 : src->n - 1];
    return true;
  }
  if (!strcmp(f, "default") || !strcmp(f, "d")) {
    jv def = jv_str("", 0), boolean = jv_bool(false);
    arg_get(a, 0, "default_value", &def);
    arg_get(a, 1, "boolean", &boolean);
    *out = (v.t == JV_UNDEF || (jv_truthy(boolean) && !jv_truthy(v))) ? def : v;
    return true;
  }
  if (!strcmp(f, "lower") || !strcmp(f, "upper") || !strcmp(f, "capitalize") ||
      !strcmp(f, "title")) {
    jv s;
    if (!str_of(r, v, &s, line))
      return false;
    char mode = f[0] == 'l' ? 'L' : f[0] == 'u' ? 'U' : f[0] == 'c' ? 'C' : 'T';
    return str_case(r, s, mode, out, line);
  }
  if (!strcmp(f, "replace")) {
    jv s, c = jv_int(-1);
    int64_t count = -1;
    if (!arg_get(a, 0, "old", &x) || !arg_get(a, 1, "new", &y))
      return fail(r, line, HX_EINVAL, "replace needs two arguments");
    arg_get(a, 2, "count", &c);
    if (c.t == JV_NONE)
      c = jv_int(-1);
    if (!str_of(r, v, &s, line) || !str_of(r, x, &x, line) || !str_of(r, y, &y, line) ||
        !want_int(r, c, &count, "count", line))
      return false;
    return str_replace(r, s, x, y, count, out, line);
  }
  if (!strcmp(f, "list")) {
    jv_list *l;
    if (!copy_list(r, v, &l, line))
      return false;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  if (!strcmp(f, "int") || !strcmp(f, "float")) {
    bool is_int = f[0] == 'i';
    jv def = is_int ? jv_int(0) : jv_float(0.0);
    arg_get(a, 0, "default", &def);
    if (v.t == JV_INT || v.t == JV_BOOL) {
      int64_t i = v.t == JV_INT ? v.u.i : v.u.b;
      *out = is_int ? jv_int(i) : jv_float((double)i);
    } else if (v.t == JV_FLOAT) {
      if (is_int && !(fabs(v.u.f) < 9.2e18))
        *out = def;
      else
        *out = is_int ? jv_int((int64_t)v.u.f) : v;
    } else if (v.t == JV_STR) {
      char tmp[64];
      jv t = str_strip(v, jv_undef(), true, true);
      if (t.u.s.n == 0 || t.u.s.n >= sizeof tmp) {
        *out = def;
        return true;
      }
      memcpy(tmp, t.u.s.p, t.u.s.n);
      tmp[t.u.s.n] = 0;
      char *end;
      if (is_int) {
        errno = 0;
        long long i = strtoll(tmp, &end, 10);
        if (*end || errno) {
          double d = strtod(tmp, &end);
          *out = (*end || !(fabs(d) < 9.2e18)) ? def : jv_int((int64_t)d);
        } else {
          *out = jv_int(i);
        }
      } else {
        double d = strtod(tmp, &end);
        *out = *end ? def : jv_float(d);
      }
    } else {
      *out = def;
    }
    return true;
  }
  if (!strcmp(f, "abs")) {
    if (v.t == JV_INT)
      *out = v.u.i == INT64_MIN ? v : jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
    else if (v.t == JV_FLOAT)
      *out = jv_float(fabs(v.u.f));
    else if (v.t == JV_BOOL)
      *out = jv_int(v.u.b);
    else
      return fail(r, line, HX_EINVAL, "bad operand type for abs(): '%s'", jv_type_name(v));
    return true;
  }
  if (!strcmp(f, "unique")) {
    jv_list *src, *l;
    if (!iter_items(r, v, &src, line) || !(l = list_new(r, 0, line)))
      return false;
    for (size_t i = 0; i < src->n; i++) {
      bool seen = false;
      for (size_t j = 0; j < l->n && !seen; j++)
        seen = jv_equal(l->items[j], src->items[i]);
      if (!seen && !list_push(r, l, src->items[i], line))
        return false;
    }
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  if (!strcmp(f, "sort") || !strcmp(f, "dictsort")) {
    jv_list *l;
    bool dictsort = f[0] == 'd';
    if (dictsort) {
      if (v.t != JV_DICT)
        return fail(r, line, HX_EINVAL, "dictsort needs a mapping");
      jv_method m = {.self = v, .name = "items"};
      args none = {0};
      jv it;
      if (!call_method(r, &m, &none, &it, line))
        return false;
      l = it.u.l;
    } else if (!copy_list(r, v, &l, line)) {
      return false;
    }
    jv rev = jv_bool(false), cs = jv_bool(false), attr = jv_undef(), by = jv_str("key", 3);
    if (dictsort) {
      arg_get(a, 0, "case_sensitive", &cs);
      arg_get(a, 1, "by", &by);
      arg_get(a, 2, "reverse", &rev);
    } else {
      arg_get(a, 0, "reverse", &rev);
      arg_get(a, 1, "case_sensitive", &cs);
      arg_get(a, 2, "attribute", &attr);
    }
    jv *keys = ralloc(r, (l->n ? l->n : 1) * sizeof(jv), line);
    if (!keys)
      return false;
    for (size_t i = 0; i < l->n; i++) {
      if (dictsort)
        keys[i] = l->items[i].u.l->items[by.t == JV_STR && by.u.s.n == 5 ? 1 : 0];
      else if (attr.t != JV_UNDEF) {
        if (!attr_path(r, l->items[i], attr, &keys[i], line))
          return false;
      } else
        keys[i] = l->items[i];
    }
    if (!sort_list(r, l, keys, jv_truthy(rev), !jv_truthy(cs), line))
      return false;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  if (!strcmp(f, "reverse")) {
    if (v.t == JV_STR)
      return do_slice(r, v, jv_none(), jv_none(), jv_int(-1), out, line);
    jv_list *l;
    if (!copy_list(r, v, &l, line))
      return false;
    for (size_t i = 0; i < l->n / 2; i++) {
      jv t = l->items[i];
      l->items[i] = l->items[l->n - 1 - i];
      l->items[l->n - 1 - i] = t;
    }
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  if (!strcmp(f, "round")) {
    jv prec = jv_int(0), method = jv_str("common", 6);
    int64_t p = 0;
    arg_get(a, 0, "precision", &prec);
    arg_get(a, 1, "method", &method);
    if (!want_int(r, prec, &p, "precision", line))
      return false;
    if (p < 0 || p > 15)
      return fail(r, line, HX_EINVAL, "round precision out of range");
    double d = v.t == JV_FLOAT  ? v.u.f
               : v.t == JV_INT  ? (double)v.u.i
               : v.t == JV_BOOL ? v.u.b
                                : NAN;
    if (isnan(d) && v.t != JV_FLOAT)
      return fail(r, line, HX_EINVAL, "round needs a number");
    double m = pow(10, (double)p);
    if (method.t == JV_STR && method.u.s.n && method.u.s.p[0] == 'c')
      d = round(d * m) / m;
    else if (method.t == JV_STR && method.u.s.n && method.u.s.p[0] == 'f')
      d = floor(d * m) / m;
    else
      d = ceil(d * m) / m;
    *out = jv_float(d);
    return true;
  }
  if (!strcmp(f, "indent")) {
    jv width = jv_int(4), first = jv_bool(false), blank = jv_bool(false), s;
    arg_get(a, 0, "width", &width);
    arg_get(a, 1, "first", &first);
    arg_get(a, 2, "blank", &blank);
    jv pad;
    if (width.t == JV_INT) {
      if (width.u.i < 0 || width.u.i > 256)
        return fail(r, line, HX_EINVAL, "indent width out of range");
      char sp[257];
      memset(sp, ' ', (size_t)width.u.i);
      if (!mkstr(r, sp, (size_t)width.u.i, &pad, line))
        return false;
    } else if (!str_of(r, width, &pad, line)) {
      return false;
    }
    if (!str_of(r, v, &s, line))
      return false;
    hx_buf b;
    hx_buf_init(&b, r->lim.output_bytes_max);
    hx_code rc = HX_OK;
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, i = 0;
    bool firstline = true;
    while (rc == HX_OK && i <= n) {
      size_t j = i;
      while (j < n && p[j] != '\n')
        j++;
      bool empty = j == i;
      bool do_pad = firstline ? jv_truthy(first) : (jv_truthy(blank) || !empty);
      if (firstline && empty && !jv_truthy(blank) && jv_truthy(first))
        do_pad = true;
      if (do_pad && !(j == n && empty && !firstline))
        rc = hx_buf_append(&b, pad.u.s.p, pad.u.s.n);
      if (rc == HX_OK)
        rc = hx_buf_append(&b, p + i, j - i);
      if (j < n && rc == HX_OK)
        rc = hx_buf_append_char(&b, '\n');
      firstline = false;
      if (j >= n)
        break;
      i = j + 1;
    }
    bool ok = rc == HX_OK ? mkstr(r, b.data, b.len, out, line) : buf_fail(r, line, rc);
    hx_buf_free(&b);
    return ok;
  }
  if (!strcmp(f, "e") || !strcmp(f, "escape"))
    return escape_html(r, v, out, line);
  if (!strcmp(f, "sum") || !strcmp(f, "min") || !strcmp(f, "max")) {
    jv_list *src;
    if (!iter_items(r, v, &src, line))
      return false;
    jv attr;
    bool has_attr = arg_get(a, 99, "attribute", &attr);
    if (f[1] == 'u') {
      jv start = jv_int(0);
      arg_get(a, 99, "start", &start);
      int64_t acc_i = start.t == JV_INT ? start.u.i : 0;
      double acc_f = start.t == JV_FLOAT ? start.u.f : 0;
      bool is_f = start.t == JV_FLOAT;
      for (size_t i = 0; i < src->n; i++) {
        jv it = src->items[i];
        if (has_attr && !attr_path(r, it, attr, &it, line))
          return false;
        if (it.t == JV_FLOAT) {
          if (!is_f)
            acc_f = (double)acc_i, is_f = true;
          acc_f += it.u.f;
        } else if (it.t == JV_INT || it.t == JV_BOOL) {
          int64_t k = it.t == JV_INT ? it.u.i : it.u.b;
          if (is_f)
            acc_f += (double)k;
          else if (__builtin_add_overflow(acc_i, k, &acc_i))
            return fail(r, line, HX_EINVAL, "integer overflow in sum");
        } else {
          return fail(r, line, HX_EINVAL, "unsupported operand type for sum: '%s'",
                      jv_type_name(it));
        }
      }
      *out = is_f ? jv_float(acc_f) : jv_int(acc_i);
      return true;
    }
    if (src->n == 0) {
      *out = jv_undef();
      return true;
    }
    jv best = src->items[0], bk = best;
    if (has_attr && !attr_path(r, best, attr, &bk, line))
      return false;
    for (size_t i = 1; i < src->n; i++) {
      jv k = src->items[i];
      if (has_attr && !attr_path(r, src->items[i], attr, &k, line))
        return false;
      bool ok = true;
      int c = sort_cmp_rs(r, k, bk, true, line, &ok);
      if (!ok)
        return false;
      if (f[1] == 'i' ? c < 0 : c > 0)
        best = src->items[i], bk = k;
    }
    *out = best;
    return true;
  }
  if (!strcmp(f, "attr")) {
    if (!arg_get(a, 0, "name", &x) || !want_str(r, x, "attribute name", line))
      return r->code ? false : fail(r, line, HX_EINVAL, "attr needs a name");
    return getattr_(r, v, x.u.s.p, x.u.s.n, out, line);
  }
  if (!strcmp(f, "format")) {
    /* printf-style: only %s and %d / %i and %% */
    jv s;
    if (!str_of(r, v, &s, line))
      return false;
    hx_buf b;
    hx_buf_init(&b, r->lim.output_bytes_max);
    hx_code rc = HX_OK;
    size_t k = 0;
    bool ok = true;
    for (size_t i = 0; i < s.u.s.n && rc == HX_OK && ok; i++) {
      if (s.u.s.p[i] != '%' || i + 1 >= s.u.s.n) {
        rc = hx_buf_append_char(&b, s.u.s.p[i]);
        continue;
      }
      char c = s.u.s.p[++i];
      if (c == '%')
        rc = hx_buf_append_char(&b, '%');
      else if ((c == 's' || c == 'd' || c == 'i') && k < a->npos)
        rc = jv_to_str(a->pos[k++], &b);
      else
        ok = fail(r, line, HX_EUNSUPPORTED, "format: unsupported conversion '%%%c'", c);
    }
    if (ok)
      ok = rc == HX_OK ? mkstr(r, b.data, b.len, out, line) : buf_fail(r, line, rc);
    hx_buf_free(&b);
    return ok;
  }
  if (!strcmp(f, "wordcount")) {
    jv s, parts;
    if (!str_of(r, v, &s, line) || !str_split(r, s, jv_none(), -1, &parts, line))
      return false;
    *out = jv_int((int64_t)parts.u.l->n);
    return true;
  }
  return fail(r, line, HX_EUNSUPPORTED, "filter '%s' is not supported", f);
}

/* ---- calls ----------------------------------------------------------- */

static bool call_macro(rs *r, jv_macro *mac, const args *a, jv *out, int line) {
  const jx_node *m = mac->node;
  if (++r->macro_depth > r->lim.depth_max)
    return fail(r, line, HX_ETOOLARGE, "recursion limit of %u macro calls exceeded",
                r->lim.depth_max);
  if (a->npos > m->n)
    return fail(r, line, HX_EINVAL, "macro '%.*s' takes not more than %zu argument(s)",
                (int)m->name_len, m->name, m->n);
  scope *sc = scope_new(r, mac->scope, line);
  if (!sc)
    return false;
  for (size_t k = 0; k < a->nkw; k++) {
    bool found = false;
    for (size_t i = 0; i < m->n && !found; i++)
      found = name_is(a->kwn[k], a->kwl[k], "") ||
              (m->items[i]->name_len == a->kwl[k] &&
               memcmp(m->items[i]->name, a->kwn[k], a->kwl[k]) == 0);
    if (!found)
      return fail(r, line, HX_EINVAL, "macro '%.*s' takes no keyword argument '%.*s'",
                  (int)m->name_len, m->name, (int)a->kwl[k], a->kwn[k]);
  }
  for (size_t i = 0; i < m->n; i++) {
    const jx_node *p = m->items[i];
    jv v;
    bool have = i < a->npos;
    if (have)
      v = a->pos[i];
    for (size_t k = 0; k < a->nkw && !have; k++)
      if (a->kwl[k] == p->name_len && memcmp(a->kwn[k], p->name, p->name_len) == 0) {
        v = a->kwv[k];
        have = true;
      }
    if (!have) {
      if (m->items2 && m->items2[i]) {
        if (!ev(r, m->items2[i], sc, &v))
          return false;
      } else {
        v = undef_named(p->name, p->name_len);
      }
    }
    if (!scope_set(r, sc, p->name, p->name_len, v, line))
      return false;
  }
  if (mac->caller &&
      !scope_set(r, sc, "caller", 6, (jv){.t = JV_MACRO, .u.mac = mac->caller}, line))
    return false;
  hx_buf b, *saved = r->out;
  hx_buf_init(&b, r->lim.output_bytes_max);
  r->out = &b;
  bool ok = exec(r, m->b, sc);
  r->out = saved;
  r->ctl = 0;
  if (ok)
    ok = mkstr(r, b.data ? b.data : "", b.len, out, line);
  hx_buf_free(&b);
  r->macro_depth--;
  return ok;
}

static bool call_value(rs *r, jv f, const args *a, jv *out, int line) {
  jv x;
  switch (f.t) {
  case JV_MACRO:
    return call_macro(r, f.u.mac, a, out, line);
  case JV_METHOD:
    return call_method(r, f.u.m, a, out, line);
  case JV_UNDEF:
    return undefined_error(r, line, f);
  case JV_FUNC:
    break;
  default:
    return fail(r, line, HX_EINVAL, "'%s' object is not callable", jv_type_name(f));
  }
  switch (f.u.fn) {
  case FN_RAISE: {
    jv msg = jv_str("", 0);
    arg_get(a, 0, "message", &msg);
    if (!str_of(r, msg, &msg, line))
      return false;
    return fail(r, line, HX_EINVAL, "%.*s", (int)(msg.u.s.n > 400 ? 400 : msg.u.s.n), msg.u.s.p);
  }
  case FN_STRFTIME: {
    if (!arg_get(a, 0, "format", &x) || !want_str(r, x, "strftime format", line))
      return r->code ? false : fail(r, line, HX_EINVAL, "strftime_now needs a format");
    char fmt[256], res[512];
    if (x.u.s.n >= sizeof fmt)
      return fail(r, line, HX_ETOOLARGE, "strftime format too long");
    memcpy(fmt, x.u.s.p, x.u.s.n);
    fmt[x.u.s.n] = 0;
    time_t tt = (time_t)(r->now >= 0 ? r->now : (int64_t)time(NULL));
    struct tm tmv;
    gmtime_r(&tt, &tmv);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    size_t n = strftime(res, sizeof res, fmt, &tmv); /* format from the template, as Python's */
#pragma GCC diagnostic pop
    return mkstr(r, res, n, out, line);
  }
  case FN_RANGE: {
    int64_t lo = 0, hi = 0, st = 1;
    if (a->npos == 1) {
      if (!want_int(r, a->pos[0], &hi, "range argument", line))
        return false;
    } else if (a->npos == 2 || a->npos == 3) {
      if (!want_int(r, a->pos[0], &lo, "range argument", line) ||
          !want_int(r, a->pos[1], &hi, "range argument", line) ||
          (a->npos == 3 && !want_int(r, a->pos[2], &st, "range argument", line)))
        return false;
    } else {
      return fail(r, line, HX_EINVAL, "range expects 1 to 3 arguments");
    }
    if (st == 0)
      return fail(r, line, HX_EINVAL, "range() arg 3 must not be zero");
    double cnt = st > 0 ? ceil(((double)hi - (double)lo) / (double)st)
                        : ceil(((double)lo - (double)hi) / (double)-st);
    if (cnt > RANGE_MAX)
      return fail(r, line, HX_ETOOLARGE, "range too big, maximum size is %d", RANGE_MAX);
    jv_list *l = list_new(r, cnt > 0 ? (size_t)cnt : 0, line);
    if (!l)
      return false;
    for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st)
      l->items[l->n++] = jv_int(i);
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  case FN_NAMESPACE:
  case FN_DICT: {
    jv_dict *d = dict_new(r, line);
    if (!d)
      return false;
    for (size_t i = 0; i < a->npos; i++) {
      if (a->pos[i].t != JV_DICT)
        return fail(r, line, HX_EINVAL, "namespace()/dict() positional argument must be a mapping");
      for (size_t k = 0; k < a->pos[i].u.d->n; k++)
        if (!dict_set(r, d, a->pos[i].u.d->keys[k], a->pos[i].u.d->vals[k], line))
          return false;
    }
    for (size_t k = 0; k < a->nkw; k++)
      if (!dict_set(r, d, jv_str(a->kwn[k], a->kwl[k]), a->kwv[k], line))
        return false;
    *out = (jv){.t = f.u.fn == FN_NAMESPACE ? JV_NS : JV_DICT, .u.d = d};
    return true;
  }
  }
  return fail(r, line, HX_EINTERNAL, "bad builtin");
}

static bool eval_args(rs *r, const jx_node *n, scope *sc, args *a, jv *extra_first) {
  size_t np = n->n + (extra_first ? 1 : 0);
  a->pos = ralloc(r, (np ? np : 1) * sizeof(jv), n->line);
  a->kwv = ralloc(r, (n->nkw ? n->nkw : 1) * sizeof(jv), n->line);
  if (!a->pos || !a->kwv)
    return false;
  a->npos = 0;
  if (extra_first)
    a->pos[a->npos++] = *extra_first;
  for (size_t i = 0; i < n->n; i++)
    if (!ev(r, n->items[i], sc, &a->pos[a->npos++]))
      return false;
  for (size_t i = 0; i < n->nkw; i++)
    if (!ev(r, n->kw_vals[i], sc, &a->kwv[i]))
      return false;
  a->kwn = n->kw_names;
  a->kwl = n->kw_lens;
  a->nkw = n->nkw;
  return true;
}

/* ---- expressions ----------------------------------------------------- */

static bool arith(rs *r, int op, jv a, jv b, jv *out, int line) {
  if (op == '~') {
    jv sa, sb;
    if (!str_of(r, a, &sa, line) || !str_of(r, b, &sb, line))
      return false;
    size_t n;
    if (hx_size_add(sa.u.s.n, sb.u.s.n, &n) || n > r->lim.output_bytes_max)
      return fail(r, line, HX_ETOOLARGE, "string longer than the output limit");
    char *d = ralloc(r, n, line);
    if (!d)
      return false;
    if (sa.u.s.n)
      memcpy(d, sa.u.s.p, sa.u.s.n);
    if (sb.u.s.n)
      memcpy(d + sa.u.s.n, sb.u.s.p, sb.u.s.n);
    *out = jv_str(d, n);
    return true;
  }
  if (a.t == JV_UNDEF)
    return undefined_error(r, line, a);
  if (b.t == JV_UNDEF)
    return undefined_error(r, line, b);
  bool an = a.t == JV_INT || a.t == JV_FLOAT || a.t == JV_BOOL;
  bool bn = b.t == JV_INT || b.t == JV_FLOAT || b.t == JV_BOOL;
  if (op == '+' && a.t == JV_STR && b.t == JV_STR)
    return arith(r, '~', a, b, out, line);
  if (op == '+' && a.t == JV_LIST && b.t == JV_LIST) {
    jv_list *l = list_new(r, a.u.l->n + b.u.l->n, line);
    if (!l)
      return false;
    if (a.u.l->n)
      memcpy(l->items, a.u.l->items, a.u.l->n * sizeof(jv));
    if (b.u.l->n)
      memcpy(l->items + a.u.l->n, b.u.l->items, b.u.l->n * sizeof(jv));
    l->n = a.u.l->n + b.u.l->n;
    l->is_tuple = a.u.l->is_tuple;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  if (op == '*' && ((a.t == JV_STR && (b.t == JV_INT || b.t == JV_BOOL)) ||
                    (b.t == JV_STR && (a.t == JV_INT || a.t == JV_BOOL)))) {
    jv s = a.t == JV_STR ? a : b, k = a.t == JV_STR ? b : a;
    int64_t times = k.t == JV_INT ? k.u.i : k.u.b;
    if (times <= 0) {
      *out = jv_str("", 0);
      return true;
    }
    size_t n;
    if (hx_size_mul(s.u.s.n, (size_t)times, &n) || n > r->lim.output_bytes_max)
      return fail(r, line, HX_ETOOLARGE, "string longer than the output limit");
    char *d = ralloc(r, n, line);
    if (!d)
      return false;
    for (int64_t i = 0; i < times; i++)
      memcpy(d + (size_t)i * s.u.s.n, s.u.s.p, s.u.s.n);
    *out = jv_str(d, n);
    return true;
  }
  if (op == '%' && a.t == JV_STR) {
    jv_list one = {.items = &b, .n = 1};
    args fa = {.pos = b.t == JV_LIST && b.u.l->is_tuple ? b.u.l->items : one.items,
               .npos = b.t == JV_LIST && b.u.l->is_tuple ? b.u.l->n : 1};
    return apply_filter(r, "format", 6, a, &fa, NULL, out, line);
  }
  if (!an || !bn)
    return fail(r, line, HX_EINVAL, "unsupported operand type(s) for %c: '%s' and '%s'",
                op == 'F'   ? '/'
                : op == 'P' ? '*'
                            : op,
                jv_type_name(a), jv_type_name(b));
  bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT || op == '/';
  if (op == 'P' && !fl) {
    int64_t base = a.t == JV_INT ? a.u.i : a.u.b, e = b.t == JV_INT ? b.u.i : b.u.b;
    if (e < 0) {
      *out = jv_float(pow((double)base, (double)e));
      return true;
    }
    int64_t acc = 1;
    for (int64_t i = 0; i < e; i++) {
      if (__builtin_mul_overflow(acc, base, &acc))
        return fail(r, line, HX_EINVAL, "integer overflow in **");
      if (acc == 0 || acc == 1)
        break;
    }
    *out = jv_int(acc);
    return true;
  }
  if (fl) {
    double x = a.t == JV_FLOAT ? a.u.f : a.t == JV_INT ? (double)a.u.i : a.u.b;
    double y = b.t == JV_FLOAT ? b.u.f : b.t == JV_INT ? (double)b.u.i : b.u.b;
    double z;
    switch (op) {
    case '+':
      z = x + y;
      break;
    case '-':
      z = x - y;
      break;
    case '*':
      z = x * y;
      break;
    case '/':
    case 'F':
    case '%':
      if (y == 0)
        return fail(r, line, HX_EINVAL, "division by zero");
      z = op == '/' ? x / y : op == 'F' ? floor(x / y) : x - floor(x / y) * y;
      break;
    default:
      z = pow(x, y);
      break;
    }
    *out = jv_float(z);
    return true;
  }
  int64_t x = a.t == JV_INT ? a.u.i : a.u.b, y = b.t == JV_INT ? b.u.i : b.u.b, z = 0;
  bool ovf = false;
  switch (op) {
  case '+':
    ovf = __builtin_add_overflow(x, y, &z);
    break;
  case '-':
    ovf = __builtin_sub_overflow(x, y, &z);
    break;
  case '*':
    ovf = __builtin_mul_overflow(x, y, &z);
    break;
  case 'F':
  case '%':
    if (y == 0)
      return fail(r, line, HX_EINVAL, "integer division or modulo by zero");
    if (x == INT64_MIN && y == -1) {
      ovf = op == 'F';
      z = 0;
      break;
    }
    z = op == 'F' ? x / y : x % y;
    if (op == 'F' && (x % y != 0) && ((x < 0) != (y < 0)))
      z--;
    if (op == '%' && z != 0 && ((z < 0) != (y < 0)))
      z += y;
    break;
  }
  if (ovf)
    return fail(r, line, HX_EINVAL, "integer overflow");
  *out = jv_int(z);
  return true;
}

static bool ev_inner(rs *r, const jx_node *n, scope *sc, jv *out);

static bool ev(rs *r, const jx_node *n, scope *sc, jv *out) {
  if (!step(r, n->line))
    return false;
  if (++r->eval_depth > EVAL_DEPTH_MAX)
    return fail(r, n->line, HX_ETOOLARGE, "evaluation nested deeper than %d", EVAL_DEPTH_MAX);
  bool ok = ev_inner(r, n, sc, out);
  r->eval_depth--;
  return ok;
}

static bool ev_inner(rs *r, const jx_node *n, scope *sc, jv *out) {
  jv a, b, c;
  int line = n->line;
  switch (n->kind) {
  case JX_LIT:
    *out = n->lit;
    return true;
  case JX_NAME:
    if (scope_lookup(sc, n->name, n->name_len, out))
      return true;
    {
      static const struct {
        const char *name;
        int fn;
      } g[] = {{"range", FN_RANGE},
               {"namespace", FN_NAMESPACE},
               {"dict", FN_DICT},
               {"raise_exception", FN_RAISE},
               {"strftime_now", FN_STRFTIME}};
      for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        if (name_is(n->name, n->name_len, g[i].name)) {
          *out = (jv){.t = JV_FUNC, .u.fn = g[i].fn};
          return true;
        }
    }
    *out = undef_named(n->name, n->name_len);
    return true;
  case JX_LISTLIT:
  case JX_TUPLELIT: {
    jv_list *l = list_new(r, n->n, line);
    if (!l)
      return false;
    l->is_tuple = n->kind == JX_TUPLELIT;
    for (size_t i = 0; i < n->n; i++)
      if (!ev(r, n->items[i], sc, &l->items[l->n++]))
        return false;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return true;
  }
  case JX_DICTLIT: {
    jv_dict *d = dict_new(r, line);
    if (!d)
      return false;
    for (size_t i = 0; i < n->n; i++)
      if (!ev(r, n->items[i], sc, &a) || !ev(r, n->items2[i], sc, &b) ||
          !dict_set(r, d, a, b, line))
        return false;
    *out = (jv){.t = JV_DICT, .u.d = d};
    return true;
  }
  case JX_ATTR:
    return ev(r, n->a, sc, &a) && getattr_(r, a, n->name, n->name_len, out, line);
  case JX_ITEM:
    return ev(r, n->a, sc, &a) && ev(r, n->b, sc, &b) && getitem(r, a, b, out, line);
  case JX_SLICE: {
    jv s = jv_none(), e = jv_none(), st = jv_none();
    if (!ev(r, n->a, sc, &a) || (n->b && !ev(r, n->b, sc, &s)) || (n->c && !ev(r, n->c, sc, &e)) ||
        (n->d && !ev(r, n->d, sc, &st)))
      return false;
    return do_slice(r, a, s, e, st, out, line);
  }
  case JX_CALL: {
    args ar;
    if (!ev(r, n->a, sc, &a) || !eval_args(r, n, sc, &ar, NULL))
      return false;
    return call_value(r, a, &ar, out, line);
  }
  case JX_FILTER: {
    args ar;
    if (!ev(r, n->a, sc, &a) || !eval_args(r, n, sc, &ar, NULL))
      return false;
    return apply_filter(r, n->name, n->name_len, a, &ar, sc, out, line);
  }
  case JX_TEST: {
    args ar;
    bool res;
    if (!ev(r, n->a, sc, &a) || !eval_args(r, n, sc, &ar, NULL) ||
        !run_test(r, n->name, n->name_len, a, ar.pos, ar.npos, &res, line))
      return false;
    *out = jv_bool(n->op ? !res : res);
    return true;
  }
  case JX_NOT:
    if (!ev(r, n->a, sc, &a))
      return false;
    *out = jv_bool(!jv_truthy(a));
    return true;
  case JX_NEG:
  case JX_POS:
    if (!ev(r, n->a, sc, &a))
      return false;
    if (n->kind == JX_POS && (a.t == JV_INT || a.t == JV_FLOAT)) {
      *out = a;
      return true;
    }
    return arith(r, '-', jv_int(0), a, out, line);
  case JX_BIN:
    return ev(r, n->a, sc, &a) && ev(r, n->b, sc, &b) && arith(r, n->op, a, b, out, line);
  case JX_CMP: {
    if (!ev(r, n->a, sc, &a))
      return false;
    for (size_t i = 0; i < n->n; i++) {
      if (!ev(r, n->items[i], sc, &b))
        return false;
      bool res;
      int cmp;
      switch (n->ops[i]) {
      case JX_EQ:
        res = jv_equal(a, b);
        break;
      case JX_NE:
        res = !jv_equal(a, b);
        break;
      case JX_IN:
      case JX_NOTIN:
        if (!contains(r, b, a, &res, line))
          return false;
        if (n->ops[i] == JX_NOTIN)
          res = !res;
        break;
      default:
        if (!num_compare(r, a, b, &cmp, line))
          return false;
        res = n->ops[i] == JX_LT   ? cmp < 0
              : n->ops[i] == JX_LE ? cmp <= 0
              : n->ops[i] == JX_GT ? cmp > 0
                                   : cmp >= 0;
      }
      if (!res) {
        *out = jv_bool(false);
        return true;
      }
      a = b;
    }
    *out = jv_bool(true);
    return true;
  }
  case JX_AND:
    if (!ev(r, n->a, sc, &a))
      return false;
    if (!jv_truthy(a)) {
      *out = a;
      return true;
    }
    return ev(r, n->b, sc, out);
  case JX_OR:
    if (!ev(r, n->a, sc, &a))
      return false;
    if (jv_truthy(a)) {
      *out = a;
      return true;
    }
    return ev(r, n->b, sc, out);
  case JX_COND:
    if (!ev(r, n->a, sc, &c))
      return false;
    if (jv_truthy(c))
      return ev(r, n->b, sc, out);
    if (n->c)
      return ev(r, n->c, sc, out);
    *out = jv_undef();
    return true;
  default:
    return fail(r, line, HX_EINTERNAL, "statement used as expression");
  }
}

/* ---- statements ------------------------------------------------------ */

static bool emit(rs *r, const char *p, size_t n, int line) {
  hx_code rc = hx_buf_append(r->out, p, n);
  return rc == HX_OK ? true : buf_fail(r, line, rc);
}

static bool assign(rs *r, scope *sc, const jx_node *target, jv v, int line) {
  if (target->kind == JX_NAME)
    return scope_set(r, sc, target->name, target->name_len, v, line);
  if (target->kind == JX_ATTR) {
    jv ns;
    if (!ev(r, target->a, sc, &ns))
      return false;
    if (ns.t != JV_NS)
      return fail(r, line, HX_EINVAL, "cannot assign attribute on non-namespace object");
    return dict_set(r, ns.u.d, jv_str(target->name, target->name_len), v, line);
  }
  HX_ASSERT(target->kind == JX_TUPLELIT);
  jv_list *items;
  if (!iter_items(r, v, &items, line))
    return false;
  if (items->n != target->n)
    return fail(r, line, HX_EINVAL, "cannot unpack %zu values into %zu names", items->n, target->n);
  for (size_t i = 0; i < target->n; i++)
    if (!assign(r, sc, target->items[i], items->items[i], line))
      return false;
  return true;
}

static bool capture(rs *r, const jx_node *body, scope *sc, jv *out) {
  hx_buf b, *saved = r->out;
  hx_buf_init(&b, r->lim.output_bytes_max);
  r->out = &b;
  bool ok = exec(r, body, sc);
  r->out = saved;
  if (ok)
    ok = mkstr(r, b.data ? b.data : "", b.len, out, body->line);
  hx_buf_free(&b);
  return ok;
}

/* Applies a {% filter %} / {% set x | f %} chain to v. */
static bool filter_chain(rs *r, const jx_node *f, scope *sc, jv v, jv *out) {
  if (!f) {
    *out = v;
    return true;
  }
  jv inner;
  args ar;
  return filter_chain(r, f->a, sc, v, &inner) && eval_args(r, f, sc, &ar, NULL) &&
         apply_filter(r, f->name, f->name_len, inner, &ar, sc, out, f->line);
}

static bool exec_for(rs *r, const jx_node *n, scope *sc) {
  jv it;
  jv_list *items;
  if (!ev(r, n->a, sc, &it) || !iter_items(r, it, &items, n->line))
    return false;
  scope *ls = scope_new(r, sc, n->line);
  if (!ls)
    return false;
  if (n->n) { /* {% for x in xs if cond %}: filter first, loop.length counts kept items */
    jv_list *kept = list_new(r, 0, n->line);
    if (!kept)
      return false;
    for (size_t i = 0; i < items->n; i++) {
      jv c;
      if (!assign(r, ls, n->d, items->items[i], n->line) || !ev(r, n->items[0], ls, &c))
        return false;
      if (jv_truthy(c) && !list_push(r, kept, items->items[i], n->line))
        return false;
    }
    items = kept;
  }
  jx_loop *L = ralloc(r, sizeof *L, n->line);
  if (!L)
    return false;
  L->seq = items;
  L->length = items->n;
  for (size_t i = 0; i < items->n; i++) {
    if (++r->iters > r->lim.loop_iters_max)
      return fail(r, n->line, HX_ETOOLARGE, "loop iteration limit of %llu exceeded",
                  (unsigned long long)r->lim.loop_iters_max);
    L->index0 = i;
    if (!assign(r, ls, n->d, items->items[i], n->line) ||
        !scope_set(r, ls, "loop", 4, (jv){.t = JV_LOOP, .u.loop = L}, n->line))
      return false;
    if (!exec(r, n->b, ls))
      return false;
    if (r->ctl == 1) {
      r->ctl = 0;
      break;
    }
    r->ctl = 0;
  }
  if (items->n == 0 && n->c)
    return exec(r, n->c, sc);
  return true;
}

static bool exec(rs *r, const jx_node *n, scope *sc) {
  if (!step(r, n->line))
    return false;
  if (++r->eval_depth > EVAL_DEPTH_MAX)
    return fail(r, n->line, HX_ETOOLARGE, "blocks nested deeper than %d", EVAL_DEPTH_MAX);
  bool ok = true;
  jv v;
  switch (n->kind) {
  case JX_BODY:
    for (size_t i = 0; i < n->n && ok && !r->ctl; i++)
      ok = exec(r, n->items[i], sc);
    break;
  case JX_TEXT:
    ok = emit(r, n->name, n->name_len, n->line);
    break;
  case JX_OUTPUT: {
    ok = ev(r, n->a, sc, &v);
    if (ok) {
      hx_code rc = jv_to_str(v, r->out);
      ok = rc == HX_OK ? true : buf_fail(r, n->line, rc);
    }
    break;
  }
  case JX_IF:
    ok = ev(r, n->a, sc, &v);
    if (ok) {
      if (jv_truthy(v))
        ok = exec(r, n->b, sc);
      else if (n->c)
        ok = exec(r, n->c, sc);
    }
    break;
  case JX_FOR:
    ok = exec_for(r, n, sc);
    break;
  case JX_SET:
    ok = ev(r, n->a, sc, &v) && assign(r, sc, n->d, v, n->line);
    break;
  case JX_SETBLOCK: {
    jv s;
    ok = capture(r, n->b, sc, &v) && filter_chain(r, n->a, sc, v, &s) &&
         assign(r, sc, n->d, s, n->line);
    break;
  }
  case JX_FILTERBLOCK: {
    jv s;
    ok = capture(r, n->b, sc, &v) && filter_chain(r, n->a, sc, v, &s);
    if (ok) {
      hx_code rc = jv_to_str(s, r->out);
      ok = rc == HX_OK ? true : buf_fail(r, n->line, rc);
    }
    break;
  }
  case JX_MACRO: {
    jv_macro *m = ralloc(r, sizeof *m, n->line);
    ok = m != NULL;
    if (ok) {
      m->node = n;
      m->scope = sc;
      ok = scope_set(r, sc, n->name, n->name_len, (jv){.t = JV_MACRO, .u.mac = m}, n->line);
    }
    break;
  }
  case JX_CALLBLOCK: {
    jv callee;
    args ar;
    const jx_node *call = n->a;
    ok = ev(r, call->a, sc, &callee) && eval_args(r, call, sc, &ar, NULL);
    if (!ok)
      break;
    if (callee.t != JV_MACRO) {
      ok = fail(r, n->line, HX_EINVAL, "call block needs a macro");
      break;
    }
    jv_macro *caller = ralloc(r, sizeof *caller, n->line), *m = ralloc(r, sizeof *m, n->line);
    ok = caller && m;
    if (!ok)
      break;
    caller->node = n->b;
    caller->scope = sc;
    *m = *callee.u.mac;
    m->caller = caller;
    ok = call_macro(r, m, &ar, &v, n->line);
    if (ok) {
      hx_code rc = jv_to_str(v, r->out);
      ok = rc == HX_OK ? true : buf_fail(r, n->line, rc);
    }
    break;
  }
  case JX_BREAK:
    r->ctl = 1;
    break;
  case JX_CONTINUE:
    r->ctl = 2;
    break;
  default:
    ok = fail(r, n->line, HX_EINTERNAL, "expression used as statement");
  }
  r->eval_depth--;
  return ok;
}

/* ---- public ---------------------------------------------------------- */

hx_code hx_jinja_compile(hx_jinja_template **out, const char *src, size_t len, const char *name,
                         const hx_jinja_options *opts, hx_err *err) {
  HX_ASSERT(out);
  *out = NULL;
  if (!name)
    name = "template";
  if (len > HX_JINJA_SOURCE_BYTES_MAX)
    return hx_err_set(err, HX_ETOOLARGE, "%s: template of %zu bytes exceeds the %d byte limit",
                      name, len, HX_JINJA_SOURCE_BYTES_MAX);
  hx_jinja_template *t = calloc(1, sizeof *t);
  if (!t || !(t->name = strdup(name))) {
    free(t);
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
  }
  hx_arena_init(&t->arena, 64 * 1024, (size_t)64 << 20);
  hx_jinja_options def = {.trim_blocks = true, .lstrip_blocks = true};
  /* names in the tree point into the source: keep a copy for the template's life */
  char *copy = hx_arena_alloc(&t->arena, len + 1, 1);
  if (!copy) {
    hx_jinja_template_free(t);
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
  }
  if (len)
    memcpy(copy, src, len);
  hx_code rc = jx_parse(t, copy, len, opts ? opts : &def, err);
  if (rc != HX_OK) {
    hx_jinja_template_free(t);
    return rc;
  }
  *out = t;
  return HX_OK;
}

void hx_jinja_template_free(hx_jinja_template *t) {
  if (!t)
    return;
  hx_arena_free(&t->arena);
  free(t->name);
  free(t);
}

hx_code hx_jinja_render(const hx_jinja_template *t, const json_t *context,
                        const hx_jinja_render_opts *opts, char **out, size_t *out_len,
                        hx_err *err) {
  HX_ASSERT(t && out);
  *out = NULL;
  if (out_len)
    *out_len = 0;
  if (context && !json_is_object(context))
    return hx_err_set(err, HX_EINVAL, "%s: render context must be a JSON object", t->name);
  hx_jinja_limits lim = opts ? opts->limits : (hx_jinja_limits){0};
  if (!lim.steps_max)
    lim.steps_max = HX_JINJA_STEPS_DEFAULT;
  if (!lim.loop_iters_max)
    lim.loop_iters_max = HX_JINJA_LOOP_ITERS_DEFAULT;
  if (!lim.depth_max)
    lim.depth_max = HX_JINJA_DEPTH_DEFAULT;
  if (!lim.output_bytes_max)
    lim.output_bytes_max = HX_JINJA_OUTPUT_BYTES_DEFAULT;
  if (!lim.memory_bytes_max)
    lim.memory_bytes_max = HX_JINJA_MEMORY_BYTES_DEFAULT;
  hx_arena arena;
  hx_arena_init(&arena, 64 * 1024, lim.memory_bytes_max);
  hx_buf buf;
  hx_buf_init(&buf, lim.output_bytes_max);
  rs r = {.t = t,
          .A = &arena,
          .out = &buf,
          .lim = lim,
          .err = err,
          .now = opts ? opts->now_unix_s : -1};
  bool ok = (r.root = scope_new(&r, NULL, 0)) != NULL;
  if (ok && context) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)context, k, v) {
      jv val;
      if (!(ok = from_json(&r, v, &val, 0)))
        break;
      if (!(ok = scope_set(&r, r.root, k, strlen(k), val, 0)))
        break;
    }
  }
  if (ok)
    ok = exec(&r, t->root, r.root);
  hx_arena_free(&arena);
  if (!ok) {
    hx_buf_free(&buf);
    return r.code ? r.code : HX_EINTERNAL;
  }
  size_t n = buf.len;
  char *s = buf.data ? hx_buf_detach(&buf) : strdup("");
  hx_buf_free(&buf);
  if (!s)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", t->name);
  *out = s;
  if (out_len)
    *out_len = n;
  return HX_OK;
}
