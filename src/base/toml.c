/* toml.c — TOML 1.0 parser (see toml.h).
 *
 * A single forward pass over the bytes: the document is first checked to be
 * valid UTF-8, then expressions (key/values, [table] and [[array]] headers)
 * are read one line at a time and inserted into the tree. Table state flags
 * (TOML_F_*) carry the TOML 1.0 redefinition rules. Line numbers are
 * counted incrementally (the position only moves forward). */
#include "base/toml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parser state ------------------------------------------------------ */

typedef struct parser {
  const char *s;
  size_t len;
  size_t pos;
  /* incremental line counting: lines counted up to line_pos */
  size_t line_pos;
  int line;
  size_t line_start; /* offset of the first byte of `line` */
  int max_depth;
  hx_err *err;
  hx_code code; /* first failure, HX_OK while fine */
  toml_value *root;
  toml_value *cur; /* table that key/values go into */
  int cur_depth;   /* nodes from root to cur */
} parser;

typedef struct key_part {
  char *s;
  size_t len;
  size_t pos; /* offset in the input, for messages */
} key_part;

enum { KEY_PARTS_MAX = 128 };

typedef struct key_path {
  key_part parts[KEY_PARTS_MAX];
  int n;
} key_path;

static void key_path_free(key_path *k) {
  for (int i = 0; i < k->n; i++)
    free(k->parts[i].s);
  k->n = 0;
}

static void advance_lines(parser *p, size_t upto) {
  if (upto > p->len)
    upto = p->len;
  while (p->line_pos < upto) {
    if (p->s[p->line_pos] == '\n') {
      p->line++;
      p->line_start = p->line_pos + 1;
    }
    p->line_pos++;
  }
}

static void pos_linecol(parser *p, size_t pos, int *line, int *col) {
  if (pos >= p->line_pos) {
    advance_lines(p, pos);
    *line = p->line;
    *col = (int)(pos - p->line_start) + 1;
    return;
  }
  /* Rare: a position behind the counter (error messages only). */
  int l = 1;
  size_t ls = 0;
  for (size_t i = 0; i < pos; i++)
    if (p->s[i] == '\n') {
      l++;
      ls = i + 1;
    }
  *line = l;
  *col = (int)(pos - ls) + 1;
}

static void describe_at(const parser *p, size_t pos, char *out, size_t n) {
  if (pos >= p->len) {
    snprintf(out, n, "end of input");
    return;
  }
  unsigned char c = (unsigned char)p->s[pos];
  if (c == '\n')
    snprintf(out, n, "end of line");
  else if (c == '\r')
    snprintf(out, n, "carriage return");
  else if (c == '\t')
    snprintf(out, n, "tab");
  else if (c == ' ')
    snprintf(out, n, "space");
  else if (c >= 0x21 && c < 0x7f)
    snprintf(out, n, "'%c'", c);
  else
    snprintf(out, n, "byte 0x%02X", c);
}

static bool failf(parser *p, size_t pos, hx_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool failf(parser *p, size_t pos, hx_code code, const char *fmt, ...) {
  if (p->code != HX_OK)
    return false;
  p->code = code;
  if (p->err) {
    int line, col;
    pos_linecol(p, pos, &line, &col);
    char msg[HX_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hx_err_set(p->err, code, "line %d, column %d: %s", line, col, msg);
  }
  return false;
}

/* "expected X, found Y" at pos. */
static bool expect_fail(parser *p, size_t pos, const char *expected) {
  char found[32];
  describe_at(p, pos, found, sizeof found);
  return failf(p, pos, HX_EINVAL, "expected %s, found %s", expected, found);
}

static bool oom(parser *p) { return failf(p, p->pos, HX_ENOMEM, "out of memory"); }

static inline int peek(const parser *p) {
  return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}
static inline int peek_at(const parser *p, size_t off) {
  return p->pos + off < p->len ? (unsigned char)p->s[p->pos + off] : -1;
}

/* ---- values ------------------------------------------------------------ */

static toml_value *value_new(parser *p, toml_type t, size_t pos) {
  toml_value *v = calloc(1, sizeof *v);
  if (!v) {
    oom(p);
    return NULL;
  }
  v->type = t;
  int line, col;
  pos_linecol(p, pos, &line, &col);
  v->line = line;
  v->column = col;
  return v;
}

void toml_free(toml_value *v) {
  if (!v)
    return;
  switch (v->type) {
  case TOML_STRING:
    free(v->u.str.ptr);
    break;
  case TOML_ARRAY:
    for (size_t i = 0; i < v->u.arr.len; i++)
      toml_free(v->u.arr.items[i]);
    free(v->u.arr.items);
    break;
  case TOML_TABLE:
    for (size_t i = 0; i < v->u.tab.len; i++) {
      free(v->u.tab.items[i].key);
      toml_free(v->u.tab.items[i].value);
    }
    free(v->u.tab.items);
    free(v->u.tab.index);
    break;
  default:
    break;
  }
  free(v);
}

const char *toml_type_name(toml_type t) {
  switch (t) {
  case TOML_TABLE:
    return "table";
  case TOML_ARRAY:
    return "array";
  case TOML_STRING:
    return "string";
  case TOML_INTEGER:
    return "integer";
  case TOML_FLOAT:
    return "float";
  case TOML_BOOL:
    return "boolean";
  case TOML_DATETIME:
    return "datetime";
  case TOML_DATETIME_LOCAL:
    return "local datetime";
  case TOML_DATE_LOCAL:
    return "local date";
  case TOML_TIME_LOCAL:
    return "local time";
  }
  return "unknown";
}

static uint64_t key_hash(const char *k, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)k[i];
    h *= 1099511628211ull;
  }
  return h;
}

enum { TABLE_LINEAR_MAX = 8 };

static bool table_index_rebuild(toml_value *t, size_t cap) {
  uint32_t *idx = calloc(cap, sizeof *idx);
  if (!idx)
    return false;
  for (size_t i = 0; i < t->u.tab.len; i++) {
    const toml_kv *kv = &t->u.tab.items[i];
    size_t h = (size_t)key_hash(kv->key, kv->key_len) & (cap - 1);
    while (idx[h])
      h = (h + 1) & (cap - 1);
    idx[h] = (uint32_t)(i + 1);
  }
  free(t->u.tab.index);
  t->u.tab.index = idx;
  t->u.tab.index_cap = cap;
  return true;
}

const toml_value *toml_table_get_n(const toml_value *t, const char *key, size_t n) {
  if (!t || t->type != TOML_TABLE || !key)
    return NULL;
  if (!t->u.tab.index) {
    for (size_t i = 0; i < t->u.tab.len; i++) {
      const toml_kv *kv = &t->u.tab.items[i];
      if (kv->key_len == n && memcmp(kv->key, key, n) == 0)
        return kv->value;
    }
    return NULL;
  }
  size_t cap = t->u.tab.index_cap;
  size_t h = (size_t)key_hash(key, n) & (cap - 1);
  while (t->u.tab.index[h]) {
    const toml_kv *kv = &t->u.tab.items[t->u.tab.index[h] - 1];
    if (kv->key_len == n && memcmp(kv->key, key, n) == 0)
      return kv->value;
    h = (h + 1) & (cap - 1);
  }
  return NULL;
}

const toml_value *toml_table_get(const toml_value *t, const char *key) {
  return key ? toml_table_get_n(t, key, strlen(key)) : NULL;
}

/* Appends (key, v) to table t; takes ownership of key and v on success. */
static bool table_put(parser *p, toml_value *t, char *key, size_t key_len, toml_value *v) {
  HX_ASSERT(t->type == TOML_TABLE);
  if (t->u.tab.len == t->u.tab.cap) {
    size_t cap = t->u.tab.cap ? t->u.tab.cap * 2 : 4, bytes;
    if (cap > UINT32_MAX || hx_size_mul(cap, sizeof(toml_kv), &bytes))
      return failf(p, p->pos, HX_ETOOLARGE, "too many keys in one table");
    toml_kv *items = realloc(t->u.tab.items, bytes);
    if (!items)
      return oom(p);
    t->u.tab.items = items;
    t->u.tab.cap = cap;
  }
  t->u.tab.items[t->u.tab.len++] = (toml_kv){key, key_len, v};
  size_t n = t->u.tab.len;
  if (n > TABLE_LINEAR_MAX && (!t->u.tab.index || n * 2 > t->u.tab.index_cap)) {
    size_t cap = 32;
    while (cap < n * 4)
      cap *= 2;
    if (!table_index_rebuild(t, cap)) {
      t->u.tab.len--; /* caller still owns key and v */
      return oom(p);
    }
  } else if (t->u.tab.index) {
    size_t cap = t->u.tab.index_cap;
    size_t h = (size_t)key_hash(key, key_len) & (cap - 1);
    while (t->u.tab.index[h])
      h = (h + 1) & (cap - 1);
    t->u.tab.index[h] = (uint32_t)n;
  }
  return true;
}

static bool array_push(parser *p, toml_value *a, toml_value *v) {
  HX_ASSERT(a->type == TOML_ARRAY);
  if (a->u.arr.len == a->u.arr.cap) {
    size_t cap = a->u.arr.cap ? a->u.arr.cap * 2 : 4, bytes;
    if (hx_size_mul(cap, sizeof(toml_value *), &bytes))
      return failf(p, p->pos, HX_ETOOLARGE, "too many array items");
    toml_value **items = realloc(a->u.arr.items, bytes);
    if (!items)
      return oom(p);
    a->u.arr.items = items;
    a->u.arr.cap = cap;
  }
  a->u.arr.items[a->u.arr.len++] = v;
  return true;
}

/* ---- UTF-8 and lexical helpers ------------------------------------------ */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80)
    return 1;
  size_t len;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

static bool check_utf8(parser *p) {
  const unsigned char *s = (const unsigned char *)p->s;
  for (size_t i = 0; i < p->len;) {
    size_t n = utf8_len(s + i, p->len - i);
    if (!n)
      return failf(p, i, HX_EINVAL, "invalid UTF-8 (byte 0x%02X)", s[i]);
    i += n;
  }
  return true;
}

static inline bool is_bare(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}
static inline bool is_digit(int c) { return c >= '0' && c <= '9'; }
static inline bool is_hex(int c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
/* Control characters not allowed in strings and comments (tab is allowed). */
static inline bool is_ctrl(int c) { return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f; }

static void skip_ws(parser *p) {
  while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'))
    p->pos++;
}

/* At '#': consumes the comment up to (not including) the newline. */
static bool skip_comment(parser *p) {
  HX_ASSERT(peek(p) == '#');
  p->pos++;
  while (p->pos < p->len) {
    int c = (unsigned char)p->s[p->pos];
    if (c == '\n' || (c == '\r' && peek_at(p, 1) == '\n'))
      return true;
    if (is_ctrl(c))
      return failf(p, p->pos, HX_EINVAL, "control character 0x%02X is not allowed in a comment",
                   (unsigned)c);
    p->pos++;
  }
  return true;
}

/* Consumes one newline (LF or CRLF). */
static bool eat_newline(parser *p) {
  if (peek(p) == '\n') {
    p->pos++;
    return true;
  }
  if (peek(p) == '\r' && peek_at(p, 1) == '\n') {
    p->pos += 2;
    return true;
  }
  return false;
}

/* Skips whitespace, comments and newlines (inside arrays). */
static bool skip_ws_nl_comments(parser *p) {
  for (;;) {
    skip_ws(p);
    if (peek(p) == '#') {
      if (!skip_comment(p))
        return false;
    } else if (!eat_newline(p)) {
      return true;
    }
  }
}

/* ---- strings ------------------------------------------------------------ */

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static bool sbuf_put(parser *pp, sbuf *b, const char *s, size_t n) {
  size_t need;
  if (hx_size_add(b->len, n + 1, &need))
    return failf(pp, pp->pos, HX_ETOOLARGE, "string too long");
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap : 16;
    while (cap < need)
      cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q)
      return oom(pp);
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return true;
}

static bool sbuf_put_cp(parser *pp, sbuf *b, uint32_t cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  return sbuf_put(pp, b, u, n);
}

/* At '\\' inside a basic string: appends the escaped character. */
static bool parse_escape(parser *p, sbuf *b) {
  size_t at = p->pos;
  p->pos++; /* backslash */
  int c = peek(p);
  const char *simple = NULL;
  switch (c) {
  case 'b':
    simple = "\b";
    break;
  case 't':
    simple = "\t";
    break;
  case 'n':
    simple = "\n";
    break;
  case 'f':
    simple = "\f";
    break;
  case 'r':
    simple = "\r";
    break;
  case '"':
    simple = "\"";
    break;
  case '\\':
    simple = "\\";
    break;
  case 'u':
  case 'U': {
    int nd = c == 'u' ? 4 : 8;
    uint32_t cp = 0;
    for (int i = 1; i <= nd; i++) {
      int h = peek_at(p, (size_t)i);
      if (!is_hex(h))
        return expect_fail(p, p->pos + (size_t)i,
                           nd == 4 ? "4 hex digits after \\u" : "8 hex digits after \\U");
      cp = cp * 16 + (uint32_t)(is_digit(h) ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return failf(p, at, HX_EINVAL, "escape is not a Unicode scalar value (U+%X)", cp);
    p->pos += (size_t)nd + 1;
    return sbuf_put_cp(p, b, cp);
  }
  default:
    return failf(p, at, HX_EINVAL,
                 "invalid escape sequence (expected one of \\b \\t \\n \\f \\r \\\" \\\\ "
                 "\\uXXXX \\UXXXXXXXX)");
  }
  p->pos++;
  return sbuf_put(p, b, simple, 1);
}

/* Parses any of the four string kinds at the cursor. multi_ok: multi-line
 * forms allowed (not for keys). */
static bool parse_string(parser *p, bool multi_ok, sbuf *b) {
  int q = peek(p);
  HX_ASSERT(q == '"' || q == '\'');
  size_t start = p->pos;
  bool multi = peek_at(p, 1) == q && peek_at(p, 2) == q;
  if (multi && !multi_ok)
    return failf(p, start, HX_EINVAL, "multi-line strings cannot be keys");
  if (!sbuf_put(p, b, "", 0))
    return false;
  if (!multi) {
    p->pos++;
    for (;;) {
      int c = peek(p);
      if (c < 0)
        return failf(p, start, HX_EINVAL, "unterminated string (expected closing %c)", q);
      if (c == q) {
        p->pos++;
        return true;
      }
      if (c == '\n' || c == '\r')
        return failf(p, p->pos, HX_EINVAL, "newline in a single-line string (expected closing %c)",
                     q);
      if (is_ctrl(c))
        return failf(p, p->pos, HX_EINVAL, "control character 0x%02X must be escaped in a string",
                     (unsigned)c);
      if (c == '\\' && q == '"') {
        if (!parse_escape(p, b))
          return false;
        continue;
      }
      /* copy a run of plain bytes */
      size_t s0 = p->pos;
      while (p->pos < p->len) {
        int d = (unsigned char)p->s[p->pos];
        if (d == q || d == '\n' || d == '\r' || is_ctrl(d) || (d == '\\' && q == '"'))
          break;
        p->pos++;
      }
      if (!sbuf_put(p, b, p->s + s0, p->pos - s0))
        return false;
    }
  }
  p->pos += 3;
  eat_newline(p); /* a newline right after the opening delimiter is trimmed */
  for (;;) {
    int c = peek(p);
    if (c < 0)
      return failf(p, start, HX_EINVAL, "unterminated multi-line string (expected %c%c%c)", q, q,
                   q);
    if (c == q) {
      size_t n = 0;
      while (peek_at(p, n) == q)
        n++;
      if (n >= 3) {
        if (n > 5)
          return failf(p, p->pos, HX_EINVAL, "too many quotes closing a multi-line string");
        if (!sbuf_put(p, b, p->s + p->pos, n - 3))
          return false;
        p->pos += n;
        return true;
      }
      if (!sbuf_put(p, b, p->s + p->pos, n))
        return false;
      p->pos += n;
      continue;
    }
    if (c == '\n' || (c == '\r' && peek_at(p, 1) == '\n')) {
      size_t n = c == '\n' ? 1 : 2;
      if (!sbuf_put(p, b, p->s + p->pos, n))
        return false;
      p->pos += n;
      continue;
    }
    if (is_ctrl(c))
      return failf(p, p->pos, HX_EINVAL, "control character 0x%02X must be escaped in a string",
                   (unsigned)c);
    if (c == '\\' && q == '"') {
      /* line-ending backslash: \ ws* newline → trims all whitespace/newlines */
      size_t k = 1;
      while (peek_at(p, k) == ' ' || peek_at(p, k) == '\t')
        k++;
      if (peek_at(p, k) == '\n' || (peek_at(p, k) == '\r' && peek_at(p, k + 1) == '\n')) {
        p->pos += k;
        for (;;) {
          int d = peek(p);
          if (d == ' ' || d == '\t' || d == '\n')
            p->pos++;
          else if (d == '\r' && peek_at(p, 1) == '\n')
            p->pos += 2;
          else
            break;
        }
        continue;
      }
      if (!parse_escape(p, b))
        return false;
      continue;
    }
    size_t s0 = p->pos;
    while (p->pos < p->len) {
      int d = (unsigned char)p->s[p->pos];
      if (d == q || d == '\n' || d == '\r' || is_ctrl(d) || (d == '\\' && q == '"'))
        break;
      p->pos++;
    }
    if (!sbuf_put(p, b, p->s + s0, p->pos - s0))
      return false;
  }
}

/* ---- keys --------------------------------------------------------------- */

static bool parse_simple_key(parser *p, key_part *out) {
  int c = peek(p);
  sbuf b = {0};
  out->pos = p->pos;
  if (c == '"' || c == '\'') {
    if (!parse_string(p, false, &b)) {
      free(b.p);
      return false;
    }
  } else if (is_bare(c)) {
    size_t s0 = p->pos;
    while (is_bare(peek(p)))
      p->pos++;
    if (!sbuf_put(p, &b, p->s + s0, p->pos - s0)) {
      free(b.p);
      return false;
    }
  } else {
    return expect_fail(p, p->pos, "a key (bare A-Za-z0-9_- or quoted)");
  }
  out->s = b.p;
  out->len = b.len;
  return true;
}

/* key ( ws '.' ws key )* ; leaves the cursor after the last key. */
static bool parse_key(parser *p, key_path *k) {
  k->n = 0;
  for (;;) {
    if (k->n >= KEY_PARTS_MAX || k->n >= p->max_depth)
      return failf(p, p->pos, HX_ETOOLARGE, "dotted key has too many parts (limit %d)", k->n);
    if (!parse_simple_key(p, &k->parts[k->n]))
      return false;
    k->n++;
    skip_ws(p);
    if (peek(p) != '.')
      return true;
    p->pos++;
    skip_ws(p);
  }
}

/* ---- scalars ------------------------------------------------------------ */

static int digits_n(const char *s, size_t n, size_t at, size_t count) {
  if (at + count > n)
    return -1;
  int v = 0;
  for (size_t i = 0; i < count; i++) {
    if (!is_digit((unsigned char)s[at + i]))
      return -1;
    v = v * 10 + (s[at + i] - '0');
  }
  return v;
}

static bool is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int y, int m) {
  static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Parses HH:MM:SS[.frac] at t[0..n); returns bytes used or 0. */
static size_t parse_time_part(const char *t, size_t n, toml_datetime *dt, const char **why) {
  int h = digits_n(t, n, 0, 2), mi = digits_n(t, n, 3, 2), se = digits_n(t, n, 6, 2);
  if (h < 0 || mi < 0 || se < 0 || t[2] != ':' || t[5] != ':') {
    *why = "a time HH:MM:SS";
    return 0;
  }
  if (h > 23 || mi > 59 || se > 60) {
    *why = "a valid time (hour 00-23, minute 00-59, second 00-60)";
    return 0;
  }
  dt->hour = h;
  dt->minute = mi;
  dt->second = se;
  size_t i = 8;
  if (i < n && t[i] == '.') {
    i++;
    size_t f0 = i;
    int32_t ns = 0;
    while (i < n && is_digit((unsigned char)t[i])) {
      if (i - f0 < 9)
        ns = ns * 10 + (t[i] - '0');
      i++;
    }
    if (i == f0) {
      *why = "digits after the decimal point of the seconds";
      return 0;
    }
    for (size_t k = i - f0; k < 9; k++)
      ns *= 10;
    dt->nanosecond = ns;
    dt->frac_digits = (int)(i - f0);
  }
  return i;
}

/* Parses a date/time token (t, n). Returns the type or -1 with *why. */
static int parse_datetime_token(const char *t, size_t n, toml_datetime *dt, const char **why) {
  memset(dt, 0, sizeof *dt);
  *why = "a date-time";
  if (n >= 3 && t[2] == ':') {
    size_t used = parse_time_part(t, n, dt, why);
    if (!used)
      return -1;
    if (used != n) {
      *why = "end of the local time";
      return -1;
    }
    return TOML_TIME_LOCAL;
  }
  int y = digits_n(t, n, 0, 4), m = digits_n(t, n, 5, 2), d = digits_n(t, n, 8, 2);
  if (y < 0 || m < 0 || d < 0 || t[4] != '-' || t[7] != '-') {
    *why = "a date YYYY-MM-DD";
    return -1;
  }
  if (m < 1 || m > 12 || d < 1 || d > days_in_month(y, m)) {
    *why = "a valid calendar date";
    return -1;
  }
  dt->year = y;
  dt->month = m;
  dt->day = d;
  if (n == 10)
    return TOML_DATE_LOCAL;
  if (t[10] != 'T' && t[10] != 't' && t[10] != ' ') {
    *why = "'T' or a space between date and time";
    return -1;
  }
  size_t used = parse_time_part(t + 11, n - 11, dt, why);
  if (!used)
    return -1;
  size_t i = 11 + used;
  if (i == n)
    return TOML_DATETIME_LOCAL;
  if ((t[i] == 'Z' || t[i] == 'z') && i + 1 == n) {
    dt->offset_z = true;
    return TOML_DATETIME;
  }
  if ((t[i] == '+' || t[i] == '-') && i + 6 == n) {
    int oh = digits_n(t, n, i + 1, 2), om = digits_n(t, n, i + 4, 2);
    if (oh < 0 || om < 0 || t[i + 3] != ':') {
      *why = "a UTC offset Z or +HH:MM";
      return -1;
    }
    if (oh > 23 || om > 59) {
      *why = "a valid UTC offset (hours 00-23, minutes 00-59)";
      return -1;
    }
    dt->offset_minutes = (oh * 60 + om) * (t[i] == '-' ? -1 : 1);
    return TOML_DATETIME;
  }
  *why = "end of the date-time or a UTC offset Z or +HH:MM";
  return -1;
}

/* digits with single underscores between digits; is_ok picks the digit set.
 * Appends the digits (no underscores) to out (size cap). Returns count or -1. */
static int scan_digits(const char *t, size_t n, size_t *i, bool (*is_ok)(int), char *out,
                       size_t *out_len, size_t cap) {
  int count = 0;
  bool last_us = true; /* an underscore may not lead */
  while (*i < n) {
    int c = (unsigned char)t[*i];
    if (c == '_') {
      if (last_us)
        return -1;
      last_us = true;
    } else if (is_ok(c)) {
      if (*out_len + 1 >= cap)
        return -1;
      out[(*out_len)++] = (char)c;
      count++;
      last_us = false;
    } else {
      break;
    }
    (*i)++;
  }
  if (count && last_us)
    return -1; /* trailing underscore */
  return count;
}

static bool ok_dec(int c) { return is_digit(c); }
static bool ok_hex(int c) { return is_hex(c); }
static bool ok_oct(int c) { return c >= '0' && c <= '7'; }
static bool ok_bin(int c) { return c == '0' || c == '1'; }

/* Parses a number token; sets v's type and value. */
static bool parse_number_token(parser *p, const char *t, size_t n, size_t pos, toml_value *v) {
  char buf[512];
  size_t bl = 0, i = 0;
  if (n >= sizeof buf - 8)
    return failf(p, pos, HX_EINVAL, "number is too long");
  bool neg = false, sign = false;
  if (t[0] == '+' || t[0] == '-') {
    neg = t[0] == '-';
    sign = true;
    i = 1;
  }
  const char *rest = t + i;
  size_t rn = n - i;
  if ((rn == 3 && memcmp(rest, "inf", 3) == 0) || (rn == 3 && memcmp(rest, "nan", 3) == 0)) {
    v->type = TOML_FLOAT;
    v->u.flt = rest[0] == 'i' ? (neg ? -INFINITY : INFINITY) : (neg ? -NAN : NAN);
    return true;
  }
  if (!sign && n > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'o' || t[1] == 'b')) {
    int base = t[1] == 'x' ? 16 : t[1] == 'o' ? 8 : 2;
    bool (*ok)(int) = base == 16 ? ok_hex : base == 8 ? ok_oct : ok_bin;
    i = 2;
    int cnt = scan_digits(t, n, &i, ok, buf, &bl, sizeof buf);
    if (cnt <= 0 || i != n)
      return failf(p, pos, HX_EINVAL,
                   "invalid base-%d integer (expected digits with single "
                   "underscores between them)",
                   base);
    uint64_t acc = 0;
    for (size_t k = 0; k < bl; k++) {
      int c = (unsigned char)buf[k];
      uint64_t d = (uint64_t)(is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
      if (acc > ((uint64_t)INT64_MAX - d) / (uint64_t)base)
        return failf(p, pos, HX_EINVAL, "integer does not fit in 64 bits (max %lld)",
                     (long long)INT64_MAX);
      acc = acc * (uint64_t)base + d;
    }
    v->type = TOML_INTEGER;
    v->u.integer = (int64_t)acc;
    return true;
  }
  /* decimal integer part */
  if (neg)
    buf[bl++] = '-';
  size_t int_start = i;
  int cnt = scan_digits(t, n, &i, ok_dec, buf, &bl, sizeof buf);
  if (cnt <= 0)
    return failf(p, pos, HX_EINVAL,
                 "invalid number (expected digits with single underscores between them)");
  if (t[int_start] == '0' && cnt > 1)
    return failf(p, pos, HX_EINVAL, "leading zeros are not allowed in numbers");
  bool is_float = false;
  if (i < n && t[i] == '.') {
    is_float = true;
    buf[bl++] = '.';
    i++;
    if (scan_digits(t, n, &i, ok_dec, buf, &bl, sizeof buf) <= 0)
      return failf(p, pos, HX_EINVAL, "invalid float (expected digits after the decimal point)");
  }
  if (i < n && (t[i] == 'e' || t[i] == 'E')) {
    is_float = true;
    buf[bl++] = 'e';
    i++;
    if (i < n && (t[i] == '+' || t[i] == '-'))
      buf[bl++] = t[i++];
    if (scan_digits(t, n, &i, ok_dec, buf, &bl, sizeof buf) <= 0)
      return failf(p, pos, HX_EINVAL, "invalid float (expected digits in the exponent)");
  }
  if (i != n)
    return failf(p, pos, HX_EINVAL, "invalid number '%.*s'", (int)(n > 40 ? 40 : n), t);
  buf[bl] = '\0';
  if (is_float) {
    errno = 0;
    double d = strtod(buf, NULL);
    if (errno == ERANGE && isinf(d))
      return failf(p, pos, HX_EINVAL, "float is out of range for 64-bit floating point");
    v->type = TOML_FLOAT;
    v->u.flt = d;
    return true;
  }
  errno = 0;
  long long ll = strtoll(buf, NULL, 10);
  if (errno == ERANGE)
    return failf(p, pos, HX_EINVAL, "integer does not fit in 64 bits (range %lld..%lld)",
                 (long long)INT64_MIN, (long long)INT64_MAX);
  v->type = TOML_INTEGER;
  v->u.integer = ll;
  return true;
}

static inline bool is_token_char(int c) { return is_bare(c) || c == '+' || c == '.' || c == ':'; }

/* A bare scalar: boolean, number, date/time. */
static toml_value *parse_bare_scalar(parser *p) {
  size_t start = p->pos;
  size_t end = start;
  while (end < p->len && is_token_char((unsigned char)p->s[end]))
    end++;
  /* "1979-05-27 07:32:00": a date, a space, then a time */
  if (end - start == 10 && p->s[start + 4] == '-' && end + 3 < p->len && p->s[end] == ' ' &&
      is_digit((unsigned char)p->s[end + 1]) && is_digit((unsigned char)p->s[end + 2]) &&
      p->s[end + 3] == ':') {
    end++;
    while (end < p->len && is_token_char((unsigned char)p->s[end]))
      end++;
  }
  size_t n = end - start;
  const char *t = p->s + start;
  if (n == 0) {
    expect_fail(p, start, "a value (string, number, boolean, date-time, array or inline table)");
    return NULL;
  }
  toml_value *v = value_new(p, TOML_BOOL, start);
  if (!v)
    return NULL;
  p->pos = end;
  if (n == 4 && memcmp(t, "true", 4) == 0) {
    v->u.boolean = true;
    return v;
  }
  if (n == 5 && memcmp(t, "false", 5) == 0) {
    v->u.boolean = false;
    return v;
  }
  bool datey = n >= 5 && is_digit((unsigned char)t[0]) &&
               ((t[2] == ':') || (n >= 5 && t[4] == '-' && is_digit((unsigned char)t[1])));
  if (datey) {
    const char *why;
    int ty = parse_datetime_token(t, n, &v->u.dt, &why);
    if (ty < 0) {
      expect_fail(p, start, why);
      toml_free(v);
      return NULL;
    }
    v->type = (toml_type)ty;
    return v;
  }
  int c = (unsigned char)t[0];
  if (!(is_digit(c) || c == '+' || c == '-' || c == 'i' || c == 'n')) {
    char what[80];
    snprintf(what, sizeof what, "a value (strings must be quoted: found '%.*s')",
             (int)(n > 30 ? 30 : n), t);
    expect_fail(p, start, what);
    toml_free(v);
    return NULL;
  }
  if (!parse_number_token(p, t, n, start, v)) {
    toml_free(v);
    return NULL;
  }
  return v;
}

/* ---- compound values ---------------------------------------------------- */

static toml_value *parse_value(parser *p, int depth);

/* Where a dotted key path lands: walks/creates the intermediate tables of
 * k (all but the last part) below t. Tables made by dotted keys may be
 * extended by later dotted keys; [header] tables and inline tables not. */
static toml_value *walk_dotted(parser *p, toml_value *t, const key_path *k, int *depth) {
  for (int i = 0; i < k->n - 1; i++) {
    const key_part *kp = &k->parts[i];
    toml_value *sub = (toml_value *)toml_table_get_n(t, kp->s, kp->len);
    if (!sub) {
      sub = value_new(p, TOML_TABLE, kp->pos);
      if (!sub)
        return NULL;
      sub->flags = TOML_F_DOTTED;
      char *key = malloc(kp->len + 1);
      if (!key) {
        toml_free(sub);
        oom(p);
        return NULL;
      }
      memcpy(key, kp->s, kp->len + 1);
      if (!table_put(p, t, key, kp->len, sub)) {
        free(key);
        toml_free(sub);
        return NULL;
      }
    } else if (sub->type != TOML_TABLE) {
      failf(p, kp->pos, HX_EINVAL, "key \"%.*s\" is already defined as %s (line %d), not a table",
            (int)kp->len, kp->s, toml_type_name(sub->type), sub->line);
      return NULL;
    } else if (sub->flags & TOML_F_INLINE) {
      failf(p, kp->pos, HX_EINVAL, "cannot add keys to inline table \"%.*s\" (line %d)",
            (int)kp->len, kp->s, sub->line);
      return NULL;
    } else if (sub->flags & TOML_F_DEFINED) {
      failf(p, kp->pos, HX_EINVAL,
            "cannot add keys to table \"%.*s\" with a dotted key: it was defined by a [header] "
            "(line %d)",
            (int)kp->len, kp->s, sub->line);
      return NULL;
    }
    t = sub;
    if (++*depth > p->max_depth) {
      failf(p, kp->pos, HX_ETOOLARGE, "nesting deeper than %d", p->max_depth);
      return NULL;
    }
  }
  return t;
}

/* key = value into table t (depth = t's depth). */
static bool parse_keyval(parser *p, toml_value *t, int depth) {
  key_path k = {.n = 0};
  bool ok = false;
  if (!parse_key(p, &k))
    goto out;
  skip_ws(p);
  if (peek(p) != '=') {
    expect_fail(p, p->pos, "'=' after the key");
    goto out;
  }
  p->pos++;
  skip_ws(p);
  toml_value *dst = walk_dotted(p, t, &k, &depth);
  if (!dst)
    goto out;
  key_part *last = &k.parts[k.n - 1];
  const toml_value *old = toml_table_get_n(dst, last->s, last->len);
  if (old) {
    failf(p, last->pos, HX_EINVAL, "key \"%.*s\" is already defined (line %d)", (int)last->len,
          last->s, old->line);
    goto out;
  }
  toml_value *v = parse_value(p, depth + 1);
  if (!v)
    goto out;
  if (!table_put(p, dst, last->s, last->len, v)) {
    toml_free(v);
    goto out;
  }
  last->s = NULL; /* owned by the table now */
  ok = true;
out:
  key_path_free(&k);
  return ok;
}

static toml_value *parse_array(parser *p, int depth) {
  if (depth > p->max_depth) {
    failf(p, p->pos, HX_ETOOLARGE, "nesting deeper than %d", p->max_depth);
    return NULL;
  }
  toml_value *a = value_new(p, TOML_ARRAY, p->pos);
  if (!a)
    return NULL;
  a->flags = TOML_F_INLINE;
  p->pos++; /* '[' */
  for (;;) {
    if (!skip_ws_nl_comments(p))
      goto fail;
    if (peek(p) == ']') {
      p->pos++;
      return a;
    }
    toml_value *v = parse_value(p, depth + 1);
    if (!v)
      goto fail;
    if (!array_push(p, a, v)) {
      toml_free(v);
      goto fail;
    }
    if (!skip_ws_nl_comments(p))
      goto fail;
    if (peek(p) == ',') {
      p->pos++;
      continue;
    }
    if (peek(p) == ']') {
      p->pos++;
      return a;
    }
    expect_fail(p, p->pos, "',' or ']' in the array");
    goto fail;
  }
fail:
  toml_free(a);
  return NULL;
}

static toml_value *parse_inline_table(parser *p, int depth) {
  if (depth > p->max_depth) {
    failf(p, p->pos, HX_ETOOLARGE, "nesting deeper than %d", p->max_depth);
    return NULL;
  }
  toml_value *t = value_new(p, TOML_TABLE, p->pos);
  if (!t)
    return NULL;
  p->pos++; /* '{' */
  skip_ws(p);
  if (peek(p) == '}') {
    p->pos++;
    t->flags = TOML_F_INLINE;
    return t;
  }
  for (;;) {
    skip_ws(p);
    if (!parse_keyval(p, t, depth))
      goto fail;
    skip_ws(p);
    if (peek(p) == ',') {
      p->pos++;
      skip_ws(p);
      if (peek(p) == '}') {
        expect_fail(p, p->pos, "a key after ',' (no trailing comma in inline tables)");
        goto fail;
      }
      continue;
    }
    if (peek(p) == '}') {
      p->pos++;
      t->flags = TOML_F_INLINE;
      return t;
    }
    expect_fail(p, p->pos, "',' or '}' in the inline table (inline tables are one line)");
    goto fail;
  }
fail:
  toml_free(t);
  return NULL;
}

static toml_value *parse_value(parser *p, int depth) {
  int c = peek(p);
  if (c == '"' || c == '\'') {
    toml_value *v = value_new(p, TOML_STRING, p->pos);
    if (!v)
      return NULL;
    sbuf b = {0};
    if (!parse_string(p, true, &b)) {
      free(b.p);
      toml_free(v);
      return NULL;
    }
    v->u.str.ptr = b.p;
    v->u.str.len = b.len;
    return v;
  }
  if (c == '[')
    return parse_array(p, depth);
  if (c == '{')
    return parse_inline_table(p, depth);
  return parse_bare_scalar(p);
}

/* ---- headers ------------------------------------------------------------ */

/* Walks the header path's parents (creating implicit tables). */
static toml_value *walk_header(parser *p, const key_path *k, int *depth) {
  toml_value *t = p->root;
  *depth = 0;
  for (int i = 0; i < k->n - 1; i++) {
    const key_part *kp = &k->parts[i];
    toml_value *sub = (toml_value *)toml_table_get_n(t, kp->s, kp->len);
    if (!sub) {
      sub = value_new(p, TOML_TABLE, kp->pos);
      if (!sub)
        return NULL;
      sub->flags = TOML_F_IMPLICIT;
      char *key = malloc(kp->len + 1);
      if (!key) {
        toml_free(sub);
        oom(p);
        return NULL;
      }
      memcpy(key, kp->s, kp->len + 1);
      if (!table_put(p, t, key, kp->len, sub)) {
        free(key);
        toml_free(sub);
        return NULL;
      }
    } else if (sub->type == TOML_ARRAY && (sub->flags & TOML_F_AOT)) {
      HX_ASSERT(sub->u.arr.len > 0);
      sub = sub->u.arr.items[sub->u.arr.len - 1];
      ++*depth;
    } else if (sub->type != TOML_TABLE) {
      failf(p, kp->pos, HX_EINVAL, "key \"%.*s\" is already defined as %s (line %d), not a table",
            (int)kp->len, kp->s, toml_type_name(sub->type), sub->line);
      return NULL;
    } else if (sub->flags & TOML_F_INLINE) {
      failf(p, kp->pos, HX_EINVAL, "cannot extend inline table \"%.*s\" (line %d)", (int)kp->len,
            kp->s, sub->line);
      return NULL;
    }
    t = sub;
    if (++*depth > p->max_depth) {
      failf(p, kp->pos, HX_ETOOLARGE, "nesting deeper than %d", p->max_depth);
      return NULL;
    }
  }
  return t;
}

/* At '[': [table] or [[array of tables]]. */
static bool parse_header(parser *p) {
  size_t start = p->pos;
  bool aot = peek_at(p, 1) == '[';
  p->pos += aot ? 2 : 1;
  skip_ws(p);
  key_path k = {.n = 0};
  bool ok = false;
  if (!parse_key(p, &k))
    goto out;
  skip_ws(p);
  if (peek(p) != ']' || (aot && peek_at(p, 1) != ']')) {
    expect_fail(p, p->pos,
                aot ? "']]' closing the array-of-tables header"
                    : "']' closing the "
                      "table header");
    goto out;
  }
  p->pos += aot ? 2 : 1;
  int depth;
  toml_value *parent = walk_header(p, &k, &depth);
  if (!parent)
    goto out;
  key_part *last = &k.parts[k.n - 1];
  toml_value *ex = (toml_value *)toml_table_get_n(parent, last->s, last->len);
  if (depth + 2 > p->max_depth) {
    failf(p, start, HX_ETOOLARGE, "nesting deeper than %d", p->max_depth);
    goto out;
  }
  if (aot) {
    toml_value *arr = ex;
    if (!arr) {
      arr = value_new(p, TOML_ARRAY, start);
      if (!arr)
        goto out;
      arr->flags = TOML_F_AOT;
      if (!table_put(p, parent, last->s, last->len, arr)) {
        toml_free(arr);
        goto out;
      }
      last->s = NULL;
    } else if (arr->type != TOML_ARRAY || !(arr->flags & TOML_F_AOT)) {
      failf(p, last->pos, HX_EINVAL,
            "cannot define [[%.*s]]: the key is already defined as %s (line %d)", (int)last->len,
            last->s, arr->type == TOML_ARRAY ? "a static array" : toml_type_name(arr->type),
            arr->line);
      goto out;
    }
    toml_value *t = value_new(p, TOML_TABLE, start);
    if (!t)
      goto out;
    t->flags = TOML_F_DEFINED;
    if (!array_push(p, arr, t)) {
      toml_free(t);
      goto out;
    }
    p->cur = t;
    p->cur_depth = depth + 2;
  } else {
    toml_value *t = ex;
    if (!t) {
      t = value_new(p, TOML_TABLE, start);
      if (!t)
        goto out;
      if (!table_put(p, parent, last->s, last->len, t)) {
        toml_free(t);
        goto out;
      }
      last->s = NULL;
    } else if (t->type != TOML_TABLE) {
      failf(p, last->pos, HX_EINVAL, "cannot define table [%.*s]: already defined as %s (line %d)",
            (int)last->len, last->s,
            t->type == TOML_ARRAY && (t->flags & TOML_F_AOT) ? "an array of tables"
                                                             : toml_type_name(t->type),
            t->line);
      goto out;
    } else if (t->flags & (TOML_F_DEFINED | TOML_F_DOTTED | TOML_F_INLINE)) {
      failf(p, last->pos, HX_EINVAL, "table [%.*s] is already defined (line %d)", (int)last->len,
            last->s, t->line);
      goto out;
    } else {
      /* implicit table becomes defined here: it now "starts" at this header */
      int line, col;
      pos_linecol(p, start, &line, &col);
      t->line = line;
      t->column = col;
    }
    t->flags = TOML_F_DEFINED;
    p->cur = t;
    p->cur_depth = depth + 1;
  }
  ok = true;
out:
  key_path_free(&k);
  return ok;
}

/* ---- document ----------------------------------------------------------- */

static bool parse_document(parser *p) {
  while (p->pos < p->len) {
    skip_ws(p);
    int c = peek(p);
    if (c < 0)
      break;
    if (c == '#') {
      if (!skip_comment(p))
        return false;
    } else if (c == '\n' || c == '\r') {
      /* handled below */
    } else if (c == '[') {
      if (!parse_header(p))
        return false;
    } else {
      if (!parse_keyval(p, p->cur, p->cur_depth))
        return false;
    }
    skip_ws(p);
    if (peek(p) == '#' && !skip_comment(p))
      return false;
    if (p->pos >= p->len)
      break;
    if (!eat_newline(p))
      return expect_fail(p, p->pos, "end of line");
  }
  return true;
}

hx_code toml_parse(const char *text, size_t len, const toml_limits *lim, toml_value **out,
                   hx_err *err) {
  HX_ASSERT(out);
  *out = NULL;
  size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : TOML_MAX_BYTES_DEFAULT;
  int max_depth = lim && lim->max_depth > 0 ? lim->max_depth : TOML_MAX_DEPTH_DEFAULT;
  if (len > max_bytes)
    return hx_err_set(err, HX_ETOOLARGE, "document is %zu bytes, more than the limit of %zu", len,
                      max_bytes);
  if (!text && len)
    return hx_err_set(err, HX_EINVAL, "no input");
  parser p = {.s = text ? text : "", .len = len, .line = 1, .max_depth = max_depth, .err = err};
  if (!check_utf8(&p))
    return p.code;
  p.root = value_new(&p, TOML_TABLE, 0);
  if (!p.root)
    return p.code;
  p.root->flags = TOML_F_DEFINED;
  p.cur = p.root;
  if (len >= 3 && memcmp(p.s, "\xEF\xBB\xBF", 3) == 0)
    p.pos = 3; /* a byte order mark is not content */
  if (!parse_document(&p)) {
    toml_free(p.root);
    HX_ASSERT(p.code != HX_OK);
    return p.code;
  }
  *out = p.root;
  return HX_OK;
}

hx_code toml_parse_file(const char *path, const toml_limits *lim, toml_value **out, hx_err *err) {
  HX_ASSERT(out);
  *out = NULL;
  size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : TOML_MAX_BYTES_DEFAULT;
  FILE *f = fopen(path, "rb");
  if (!f)
    return hx_err_set(err, HX_EIO, "%s: cannot open: %s", path, strerror(errno));
  hx_buf b;
  hx_buf_init(&b, max_bytes);
  char chunk[16384];
  size_t n;
  hx_code rc = HX_OK;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    rc = hx_buf_append(&b, chunk, n);
    if (rc != HX_OK)
      break;
  }
  bool read_err = ferror(f);
  fclose(f);
  if (rc == HX_ETOOLARGE) {
    hx_buf_free(&b);
    return hx_err_set(err, rc, "%s: file is larger than the limit of %zu bytes", path, max_bytes);
  }
  if (rc != HX_OK || read_err) {
    hx_buf_free(&b);
    return hx_err_set(err, rc != HX_OK ? rc : HX_EIO, "%s: cannot read", path);
  }
  hx_err e;
  hx_err_clear(&e);
  rc = toml_parse(b.data, b.len, lim, out, &e);
  hx_buf_free(&b);
  if (rc != HX_OK) {
    /* "line L, column C: msg" → "PATH:L:C: msg" */
    int line, col, used = 0;
    if (sscanf(e.msg, "line %d, column %d: %n", &line, &col, &used) == 2 && used > 0)
      return hx_err_set(err, rc, "%s:%d:%d: %s", path, line, col, e.msg + used);
    return hx_err_set(err, rc, "%s: %s", path, e.msg);
  }
  return HX_OK;
}

size_t toml_datetime_format(const toml_value *v, char *out, size_t n) {
  HX_ASSERT(out && n >= 40);
  const toml_datetime *d = &v->u.dt;
  int k = 0;
  char frac[16] = "";
  if (d->frac_digits > 0) {
    int digits = d->frac_digits > 9 ? 9 : d->frac_digits;
    int32_t ns = d->nanosecond;
    for (int i = digits; i < 9; i++)
      ns /= 10;
    snprintf(frac, sizeof frac, ".%0*d", digits, (int)ns);
  }
  switch (v->type) {
  case TOML_DATE_LOCAL:
    k = snprintf(out, n, "%04d-%02d-%02d", d->year, d->month, d->day);
    break;
  case TOML_TIME_LOCAL:
    k = snprintf(out, n, "%02d:%02d:%02d%s", d->hour, d->minute, d->second, frac);
    break;
  case TOML_DATETIME_LOCAL:
  case TOML_DATETIME:
    k = snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d%s", d->year, d->month, d->day, d->hour,
                 d->minute, d->second, frac);
    if (v->type == TOML_DATETIME && k > 0 && (size_t)k < n) {
      if (d->offset_z) {
        k += snprintf(out + k, n - (size_t)k, "Z");
      } else {
        int m = d->offset_minutes < 0 ? -d->offset_minutes : d->offset_minutes;
        k += snprintf(out + k, n - (size_t)k, "%c%02d:%02d", d->offset_minutes < 0 ? '-' : '+',
                      m / 60, m % 60);
      }
    }
    break;
  default:
    out[0] = '\0';
    return 0;
  }
  return k < 0 ? 0 : (size_t)k < n ? (size_t)k : n - 1;
}

/* ---- tagged JSON (toml-test) --------------------------------------------- */

static hx_code json_str(hx_buf *out, const char *s, size_t n) {
  hx_code rc = hx_buf_append_char(out, '"');
  for (size_t i = 0; i < n && rc == HX_OK; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\')
      rc = hx_buf_printf(out, "\\%c", c);
    else if (c < 0x20 || c == 0x7f)
      rc = hx_buf_printf(out, "\\u%04x", c);
    else
      rc = hx_buf_append_char(out, (char)c);
  }
  return rc != HX_OK ? rc : hx_buf_append_char(out, '"');
}

static hx_code tagged(hx_buf *out, const char *type, const char *value) {
  hx_code rc = hx_buf_printf(out, "{\"type\":\"%s\",\"value\":", type);
  return rc != HX_OK                                           ? rc
         : (rc = json_str(out, value, strlen(value))) != HX_OK ? rc
                                                               : hx_buf_append_char(out, '}');
}

hx_code toml_to_tagged_json(const toml_value *v, hx_buf *out) {
  hx_code rc = HX_OK;
  char tmp[64];
  switch (v->type) {
  case TOML_TABLE:
    rc = hx_buf_append_char(out, '{');
    for (size_t i = 0; i < v->u.tab.len && rc == HX_OK; i++) {
      const toml_kv *kv = &v->u.tab.items[i];
      if (i)
        rc = hx_buf_append_char(out, ',');
      if (rc == HX_OK)
        rc = json_str(out, kv->key, kv->key_len);
      if (rc == HX_OK)
        rc = hx_buf_append_char(out, ':');
      if (rc == HX_OK)
        rc = toml_to_tagged_json(kv->value, out);
    }
    return rc != HX_OK ? rc : hx_buf_append_char(out, '}');
  case TOML_ARRAY:
    rc = hx_buf_append_char(out, '[');
    for (size_t i = 0; i < v->u.arr.len && rc == HX_OK; i++) {
      if (i)
        rc = hx_buf_append_char(out, ',');
      if (rc == HX_OK)
        rc = toml_to_tagged_json(v->u.arr.items[i], out);
    }
    return rc != HX_OK ? rc : hx_buf_append_char(out, ']');
  case TOML_STRING:
    rc = hx_buf_append_str(out, "{\"type\":\"string\",\"value\":");
    if (rc == HX_OK)
      rc = json_str(out, v->u.str.ptr, v->u.str.len);
    return rc != HX_OK ? rc : hx_buf_append_char(out, '}');
  case TOML_INTEGER:
    snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.integer);
    return tagged(out, "integer", tmp);
  case TOML_FLOAT:
    if (isnan(v->u.flt))
      snprintf(tmp, sizeof tmp, "nan");
    else if (isinf(v->u.flt))
      snprintf(tmp, sizeof tmp, "%s", v->u.flt < 0 ? "-inf" : "inf");
    else
      snprintf(tmp, sizeof tmp, "%.17g", v->u.flt);
    return tagged(out, "float", tmp);
  case TOML_BOOL:
    return tagged(out, "bool", v->u.boolean ? "true" : "false");
  case TOML_DATETIME:
  case TOML_DATETIME_LOCAL:
  case TOML_DATE_LOCAL:
  case TOML_TIME_LOCAL:
    toml_datetime_format(v, tmp, sizeof tmp);
    return tagged(out,
                  v->type == TOML_DATETIME         ? "datetime"
                  : v->type == TOML_DATETIME_LOCAL ? "datetime-local"
                  : v->type == TOML_DATE_LOCAL     ? "date-local"
                                                   : "time-local",
                  tmp);
  }
  return HX_EINTERNAL;
}

/* ---- schema helpers ------------------------------------------------------ */

enum { DIAG_TEXT_MAX = 64 * 1024 };

void toml_diag_init(toml_diag *d, const char *file) {
  d->file = file;
  d->n_errors = 0;
  hx_buf_init(&d->text, DIAG_TEXT_MAX);
}

void toml_diag_free(toml_diag *d) {
  if (d)
    hx_buf_free(&d->text);
}

void toml_diag_add(toml_diag *d, int line, const char *fmt, ...) {
  d->n_errors++;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* A line that does not fit is dropped whole; n_errors still counts it. */
  if (line > 0)
    hx_buf_printf(&d->text, "%s:%d: %s\n", d->file, line, msg);
  else
    hx_buf_printf(&d->text, "%s: %s\n", d->file, msg);
}

hx_code toml_diag_to_err(const toml_diag *d, hx_err *err) {
  if (!err)
    return HX_EINVAL;
  const char *t = d->text.data ? d->text.data : "";
  size_t len = d->text.len;
  while (len && t[len - 1] == '\n')
    len--;
  if (len < sizeof err->msg - 1) {
    hx_err_set(err, HX_EINVAL, "%.*s", (int)len, t);
    return HX_EINVAL;
  }
  /* keep whole lines that fit, then say how many errors there were */
  size_t keep = 0, lines = 0, room = sizeof err->msg - 64;
  for (size_t i = 0; i < len && i < room; i++)
    if (t[i] == '\n') {
      keep = i;
      lines++;
    }
  if (lines == 0) { /* one very long line: cut it */
    keep = room;
    lines = 1;
  }
  hx_err_set(err, HX_EINVAL, "%.*s\n(%zu errors in all; %zu shown)", (int)keep, t, d->n_errors,
             lines);
  return HX_EINVAL;
}

static void key_list(const char *const *allowed, char *out, size_t n) {
  size_t k = 0;
  out[0] = '\0';
  for (size_t i = 0; allowed[i] && k < n; i++) {
    int w = snprintf(out + k, n - k, "%s%s", i ? ", " : "", allowed[i]);
    if (w < 0)
      break;
    k += (size_t)w;
  }
}

void toml_check_keys(const toml_value *tab, const char *prefix, const char *const *allowed,
                     toml_diag *d) {
  if (!tab || tab->type != TOML_TABLE)
    return;
  for (size_t i = 0; i < tab->u.tab.len; i++) {
    const toml_kv *kv = &tab->u.tab.items[i];
    bool ok = false;
    for (size_t j = 0; allowed[j] && !ok; j++)
      ok = strlen(allowed[j]) == kv->key_len && memcmp(allowed[j], kv->key, kv->key_len) == 0;
    if (!ok) {
      char list[512];
      key_list(allowed, list, sizeof list);
      toml_diag_add(d, kv->value->line, "key \"%s%.*s\" is not a known key (expected one of: %s)",
                    prefix, (int)(kv->key_len > 100 ? 100 : kv->key_len), kv->key, list);
    }
  }
}

static const char *article(const char *type) { return strchr("aeiou", type[0]) ? "an" : "a"; }

static const toml_value *get_typed(const toml_value *tab, const char *key, const char *prefix,
                                   bool required, toml_type want, toml_diag *d) {
  const toml_value *v = toml_table_get(tab, key);
  if (!v) {
    if (required)
      toml_diag_add(d, tab ? tab->line : 0, "key \"%s%s\" is required (%s %s)", prefix, key,
                    article(toml_type_name(want)), toml_type_name(want));
    return NULL;
  }
  if (v->type != want) {
    toml_diag_add(d, v->line, "key \"%s%s\" must be %s %s, not %s %s", prefix, key,
                  article(toml_type_name(want)), toml_type_name(want),
                  article(toml_type_name(v->type)), toml_type_name(v->type));
    return NULL;
  }
  return v;
}

const toml_value *toml_get_table(const toml_value *tab, const char *key, const char *prefix,
                                 bool required, toml_diag *d) {
  return get_typed(tab, key, prefix, required, TOML_TABLE, d);
}

const toml_value *toml_get_array(const toml_value *tab, const char *key, const char *prefix,
                                 bool required, toml_diag *d) {
  return get_typed(tab, key, prefix, required, TOML_ARRAY, d);
}

bool toml_get_string(const toml_value *tab, const char *key, const char *prefix, bool required,
                     size_t max_len, char **out, toml_diag *d) {
  const toml_value *v = get_typed(tab, key, prefix, required, TOML_STRING, d);
  if (!v)
    return false;
  if (strlen(v->u.str.ptr) != v->u.str.len) {
    toml_diag_add(d, v->line, "key \"%s%s\" must not contain NUL characters", prefix, key);
    return false;
  }
  if (v->u.str.len > max_len) {
    toml_diag_add(d, v->line, "key \"%s%s\" must be at most %zu bytes long", prefix, key, max_len);
    return false;
  }
  char *s = strdup(v->u.str.ptr);
  if (!s) {
    toml_diag_add(d, v->line, "key \"%s%s\": out of memory", prefix, key);
    return false;
  }
  free(*out);
  *out = s;
  return true;
}

bool toml_get_int(const toml_value *tab, const char *key, const char *prefix, bool required,
                  int64_t lo, int64_t hi, int64_t *out, toml_diag *d) {
  const toml_value *v = get_typed(tab, key, prefix, required, TOML_INTEGER, d);
  if (!v)
    return false;
  if (v->u.integer < lo || v->u.integer > hi) {
    toml_diag_add(d, v->line, "key \"%s%s\" must be an integer in %lld..%lld, not %lld", prefix,
                  key, (long long)lo, (long long)hi, (long long)v->u.integer);
    return false;
  }
  *out = v->u.integer;
  return true;
}

bool toml_get_float(const toml_value *tab, const char *key, const char *prefix, bool required,
                    double lo, double hi, double *out, toml_diag *d) {
  const toml_value *v = toml_table_get(tab, key);
  if (!v) {
    if (required)
      toml_diag_add(d, tab ? tab->line : 0, "key \"%s%s\" is required (a number)", prefix, key);
    return false;
  }
  double x;
  if (v->type == TOML_FLOAT)
    x = v->u.flt;
  else if (v->type == TOML_INTEGER)
    x = (double)v->u.integer;
  else {
    toml_diag_add(d, v->line, "key \"%s%s\" must be a number, not %s %s", prefix, key,
                  article(toml_type_name(v->type)), toml_type_name(v->type));
    return false;
  }
  if (!(x >= lo && x <= hi)) {
    toml_diag_add(d, v->line, "key \"%s%s\" must be a number in %g..%g, not %g", prefix, key, lo,
                  hi, x);
    return false;
  }
  *out = x;
  return true;
}

bool toml_get_bool(const toml_value *tab, const char *key, const char *prefix, bool required,
                   bool *out, toml_diag *d) {
  const toml_value *v = get_typed(tab, key, prefix, required, TOML_BOOL, d);
  if (!v)
    return false;
  *out = v->u.boolean;
  return true;
}

bool toml_get_enum(const toml_value *tab, const char *key, const char *prefix, bool required,
                   const char *const *names, int *out, toml_diag *d) {
  const toml_value *v = get_typed(tab, key, prefix, required, TOML_STRING, d);
  if (!v)
    return false;
  for (int i = 0; names[i]; i++)
    if (strlen(names[i]) == v->u.str.len && memcmp(names[i], v->u.str.ptr, v->u.str.len) == 0) {
      *out = i;
      return true;
    }
  char list[256];
  key_list(names, list, sizeof list);
  toml_diag_add(d, v->line, "key \"%s%s\" must be one of: %s (not \"%.*s\")", prefix, key, list,
                (int)(v->u.str.len > 60 ? 60 : v->u.str.len), v->u.str.ptr);
  return false;
}

bool toml_hostport_parse(const char *s, char **host_out, uint16_t *port_out) {
  if (!s)
    return false;
  const char *colon;
  const char *h0 = s, *h1;
  if (s[0] == '[') {
    const char *rb = strchr(s, ']');
    if (!rb || rb[1] != ':' || rb == s + 1)
      return false;
    h0 = s + 1;
    h1 = rb;
    colon = rb + 1;
    for (const char *c = h0; c < h1; c++)
      if (!(is_hex((unsigned char)*c) || *c == ':' || *c == '.'))
        return false;
  } else {
    colon = strrchr(s, ':');
    if (!colon || colon == s)
      return false;
    h1 = colon;
    for (const char *c = h0; c < h1; c++)
      if (!(is_bare((unsigned char)*c) || *c == '.'))
        return false; /* host names and IPv4: letters, digits, '-', '_', '.' */
  }
  if (h1 - h0 > 253)
    return false;
  const char *ps = colon + 1;
  if (!*ps || strlen(ps) > 5)
    return false;
  long port = 0;
  for (const char *c = ps; *c; c++) {
    if (!is_digit((unsigned char)*c))
      return false;
    port = port * 10 + (*c - '0');
  }
  if (port < 1 || port > 65535)
    return false;
  char *h = strndup(h0, (size_t)(h1 - h0));
  if (!h)
    return false;
  *host_out = h;
  *port_out = (uint16_t)port;
  return true;
}

void toml_strings_free(char **v, size_t n) {
  if (!v)
    return;
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

bool toml_get_string_array(const toml_value *tab, const char *key, const char *prefix,
                           bool required, size_t max_items, size_t max_len, char ***out,
                           size_t *n_out, toml_diag *d) {
  const toml_value *a = get_typed(tab, key, prefix, required, TOML_ARRAY, d);
  if (!a)
    return false;
  size_t n = a->u.arr.len;
  if (n > max_items) {
    toml_diag_add(d, a->line, "key \"%s%s\" must have at most %zu items, not %zu", prefix, key,
                  max_items, n);
    return false;
  }
  char **v = calloc(n ? n : 1, sizeof *v);
  if (!v) {
    toml_diag_add(d, a->line, "key \"%s%s\": out of memory", prefix, key);
    return false;
  }
  bool ok = true;
  for (size_t i = 0; i < n; i++) {
    const toml_value *it = a->u.arr.items[i];
    if (it->type != TOML_STRING) {
      toml_diag_add(d, it->line, "key \"%s%s\" must be an array of strings (item %zu is %s %s)",
                    prefix, key, i, article(toml_type_name(it->type)), toml_type_name(it->type));
      ok = false;
    } else if (it->u.str.len == 0 || it->u.str.len > max_len ||
               strlen(it->u.str.ptr) != it->u.str.len) {
      toml_diag_add(d, it->line,
                    "key \"%s%s\" item %zu must be a string of 1..%zu bytes without NULs", prefix,
                    key, i, max_len);
      ok = false;
    } else if (!(v[i] = strdup(it->u.str.ptr))) {
      toml_diag_add(d, it->line, "key \"%s%s\": out of memory", prefix, key);
      ok = false;
    }
  }
  if (!ok) {
    toml_strings_free(v, n);
    return false;
  }
  toml_strings_free(*out, *n_out);
  *out = v;
  *n_out = n;
  return true;
}
