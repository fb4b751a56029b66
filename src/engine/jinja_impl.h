/* jinja_impl.h — internals shared by jinja_parse.c, jinja_value.c and
 * jinja_eval.c: the syntax tree built at compile time and the value model
 * (Python-like: None, bool, int, float, str, list/tuple, dict, namespace,
 * macro, loop, bound method) used while rendering. All memory of a render
 * lives in one arena that is freed when the render ends. */
#ifndef HX_ENGINE_JINJA_IMPL_H
#define HX_ENGINE_JINJA_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/status.h"
#include "engine/jinja.h"

/* ---- values ------------------------------------------------------------ */

typedef enum jv_type {
  JV_UNDEF = 0, /* jinja2 Undefined: prints "", iterates empty, errors on use */
  JV_NONE,
  JV_BOOL,
  JV_INT,
  JV_FLOAT,
  JV_STR,
  JV_LIST, /* list or tuple (l->is_tuple) */
  JV_DICT, /* insertion-ordered str/any → value */
  JV_NS,   /* namespace(): a mutable dict shared by reference */
  JV_MACRO,
  JV_FUNC,  /* global function or filter-like builtin, by id */
  JV_LOOP,  /* the `loop` variable of a for block */
  JV_METHOD /* bound method: self + name, called later */
} jv_type;

typedef struct jv jv;
typedef struct jv_list jv_list;
typedef struct jv_dict jv_dict;
typedef struct jx_node jx_node;
typedef struct jx_loop jx_loop;
typedef struct jv_method jv_method;
typedef struct jv_macro jv_macro;

struct jv {
  jv_type t;
  union {
    bool b;
    int64_t i;
    double f;
    struct {
      const char *p; /* arena or template memory; not NUL-terminated */
      size_t n;
    } s;
    jv_list *l;
    jv_dict *d; /* JV_DICT and JV_NS */
    struct jv_macro *mac;
    int fn;
    jx_loop *loop;
    jv_method *m;
  } u;
};

struct jv_list {
  jv *items;
  size_t n, cap;
  bool is_tuple;
};

struct jv_dict {
  jv *keys;
  jv *vals;
  size_t n, cap;
};

struct jv_method {
  jv self;
  const char *name;
};

struct jv_macro {
  const jx_node *node; /* JX_MACRO */
  void *scope;         /* defining scope (jinja_eval.c) */
  jv_macro *caller;    /* for {% call %}: the caller() macro, else NULL */
};

struct jx_loop {
  const jv_list *seq; /* the items iterated */
  size_t index0;
  size_t length;
};

/* ---- syntax tree ----------------------------------------------------- */

typedef enum jx_kind {
  /* expressions */
  JX_LIT,
  JX_NAME,
  JX_LISTLIT,
  JX_TUPLELIT,
  JX_DICTLIT,
  JX_ATTR,
  JX_ITEM,
  JX_SLICE,
  JX_CALL,
  JX_FILTER,
  JX_TEST,
  JX_NOT,
  JX_NEG,
  JX_POS,
  JX_BIN, /* op: '+','-','*','/','F'(//),'%','P'(**),'~' */
  JX_CMP, /* a, then ops[] / items[] chained */
  JX_AND,
  JX_OR,
  JX_COND,
  /* statements */
  JX_BODY,
  JX_TEXT,
  JX_OUTPUT,
  JX_IF,
  JX_FOR,
  JX_SET,
  JX_SETBLOCK,
  JX_MACRO,
  JX_CALLBLOCK,
  JX_FILTERBLOCK,
  JX_BREAK,
  JX_CONTINUE,
} jx_kind;

/* Comparison operators of JX_CMP. */
enum { JX_EQ = 1, JX_NE, JX_LT, JX_LE, JX_GT, JX_GE, JX_IN, JX_NOTIN };

struct jx_node {
  jx_kind kind;
  int op;   /* operator, or "negated" for JX_TEST */
  int line; /* 1-based template line */
  const jx_node *a, *b, *c, *d;
  const jx_node **items;  /* children: list items, call args, body statements,
                             for/set targets, macro params, CMP operands */
  const jx_node **items2; /* dict values, macro param defaults (NULL = none) */
  int *ops;               /* JX_CMP operators */
  size_t n;
  const char **kw_names; /* call keyword arguments */
  size_t *kw_lens;
  const jx_node **kw_vals;
  size_t nkw;
  const char *name; /* NAME, ATTR, FILTER, TEST, TEXT (bytes), MACRO, SETBLOCK */
  size_t name_len;
  jv lit;
};

struct hx_jinja_template {
  hx_arena arena; /* nodes and literal strings */
  const jx_node *root;
  char *name;
};

/* Whether a filter / test of that name exists (jinja_eval.c); checked at
 * compile time like jinja2 does. */
bool jx_filter_known(const char *name, size_t len);
bool jx_test_known(const char *name, size_t len);

/* Parses source into t->root (jinja_parse.c). */
hx_code jx_parse(hx_jinja_template *t, const char *src, size_t len, const hx_jinja_options *opts,
                 hx_err *err);

/* ---- values (jinja_value.c) ------------------------------------------ */

static inline jv jv_undef(void) { return (jv){.t = JV_UNDEF}; }
static inline jv jv_none(void) { return (jv){.t = JV_NONE}; }
static inline jv jv_bool(bool b) { return (jv){.t = JV_BOOL, .u.b = b}; }
static inline jv jv_int(int64_t i) { return (jv){.t = JV_INT, .u.i = i}; }
static inline jv jv_float(double f) { return (jv){.t = JV_FLOAT, .u.f = f}; }
static inline jv jv_str(const char *p, size_t n) {
  jv v = {.t = JV_STR};
  v.u.s.p = p;
  v.u.s.n = n;
  return v;
}

bool jv_truthy(jv v);
bool jv_equal(jv a, jv b);
const char *jv_type_name(jv v); /* Python-ish: "str", "dict object"... */
/* Number of code points in valid-or-not UTF-8 (each invalid byte counts 1). */
size_t jv_utf8_len(const char *p, size_t n);
/* Byte offset of code point `cp` (clamped to n). */
size_t jv_utf8_offset(const char *p, size_t n, size_t cp);

/* Appends Python str(v) / repr(v). HX_ETOOLARGE / HX_ENOMEM from the buffer;
 * HX_EINVAL for values without a text form. */
hx_code jv_to_str(jv v, hx_buf *out);
hx_code jv_repr(jv v, hx_buf *out);
/* json.dumps(v, ensure_ascii=False, indent, separators, sort_keys).
 * indent < 0: None. item_sep/key_sep NULL: Python's defaults. */
hx_code jv_to_json(jv v, int indent, const char *item_sep, const char *key_sep, bool sort_keys,
                   hx_buf *out, hx_err *err);
/* Python float repr ("1.0", "1e+20", "0.1", "inf", "nan"). */
void jv_format_float(double f, char out[32]);

#endif
