/* jinja_parse.c — lexer and recursive-descent parser of the Jinja subset.
 *
 * The lexer follows jinja2's: data between tags, `{{ }}` / `{% %}` / `{# #}`
 * tags, whitespace control (`-` on either side, `+` to keep lstrip_blocks
 * off), trim_blocks (one "\n" after a block or comment tag), lstrip_blocks
 * (spaces/tabs between line start and a block or comment tag), newlines in
 * data normalized to "\n", and one trailing newline of the source dropped
 * (keep_trailing_newline=False). The parser mirrors jinja2's grammar and
 * operator precedence. Both are bounded: source size, nesting depth. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/jinja_impl.h"

typedef enum tk_type {
  TK_EOF = 0,
  TK_DATA,
  TK_VAR_BEGIN,
  TK_VAR_END,
  TK_BLOCK_BEGIN,
  TK_BLOCK_END,
  TK_NAME,
  TK_STRING,
  TK_INT,
  TK_FLOAT,
  TK_OP,
} tk_type;

/* Two-character operators get codes above 255. */
enum { OP_FLOORDIV = 256, OP_POW, OP_EQ, OP_NE, OP_LE, OP_GE };

typedef struct tk {
  tk_type type;
  int line;
  int op;
  const char *p; /* NAME / DATA / STRING (decoded) bytes */
  size_t n;
  int64_t i;
  double f;
} tk;

typedef struct parser {
  hx_jinja_template *t;
  hx_arena *arena;
  const char *src;
  size_t len;
  hx_jinja_options opts;
  tk *toks;
  size_t ntok, captok;
  size_t pos;
  int depth;
  hx_err *err;
  hx_code code;
} parser;

static hx_code perr(parser *ps, int line, hx_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static hx_code perr(parser *ps, int line, hx_code code, const char *fmt, ...) {
  if (ps->code != HX_OK)
    return ps->code;
  char msg[HX_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ps->code = code;
  return hx_err_set(ps->err, code, "%s:%d: %s", ps->t->name, line, msg);
}

static void *palloc(parser *ps, size_t n) {
  void *p = hx_arena_alloc(ps->arena, n ? n : 1, 16);
  if (!p)
    perr(ps, 0, HX_ENOMEM, "out of memory compiling template");
  return p;
}

/* ---- lexer ---------------------------------------------------------- */

static bool tok_push(parser *ps, tk t) {
  if (ps->ntok == ps->captok) {
    size_t cap = ps->captok ? ps->captok * 2 : 256, bytes;
    if (hx_size_mul(cap, sizeof(tk), &bytes)) {
      perr(ps, t.line, HX_ETOOLARGE, "too many tokens");
      return false;
    }
    tk *nt = realloc(ps->toks, bytes);
    if (!nt) {
      perr(ps, t.line, HX_ENOMEM, "out of memory");
      return false;
    }
    ps->toks = nt;
    ps->captok = cap;
  }
  ps->toks[ps->ntok++] = t;
  return true;
}

static int count_lines(const char *p, size_t n) {
  int c = 0;
  for (size_t i = 0; i < n; i++)
    c += p[i] == '\n';
  return c;
}

static bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Copies data text into the arena with newlines normalized to "\n". */
static bool emit_data(parser *ps, const char *p, size_t n, int line) {
  if (n == 0)
    return true;
  char *d = palloc(ps, n);
  if (!d)
    return false;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\r') {
      d[o++] = '\n';
      if (i + 1 < n && p[i + 1] == '\n')
        i++;
    } else {
      d[o++] = p[i];
    }
  }
  return tok_push(ps, (tk){.type = TK_DATA, .line = line, .p = d, .n = o});
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static size_t utf8_put(char *d, uint32_t cp) {
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

/* Lexes a string literal starting at src[*i] (the quote); Python escapes. */
static bool lex_string(parser *ps, size_t *ip, size_t end, int line) {
  const char *s = ps->src;
  char q = s[*ip];
  size_t i = *ip + 1, j = i;
  while (j < end && s[j] != q) {
    if (s[j] == '\\' && j + 1 < end)
      j++;
    j++;
  }
  if (j >= end)
    return perr(ps, line, HX_EINVAL, "unterminated string literal"), false;
  char *d = palloc(ps, (j - i) * 2 + 4);
  if (!d)
    return false;
  size_t o = 0;
  for (size_t k = i; k < j; k++) {
    char c = s[k];
    if (c == '\r') {
      d[o++] = '\n';
      if (k + 1 < j && s[k + 1] == '\n')
        k++;
      continue;
    }
    if (c != '\\') {
      d[o++] = c;
      continue;
    }
    char e = s[++k];
    int nhex = 0;
    switch (e) {
    case 'n':
      d[o++] = '\n';
      break;
    case 't':
      d[o++] = '\t';
      break;
    case 'r':
      d[o++] = '\r';
      break;
    case '\\':
      d[o++] = '\\';
      break;
    case '\'':
      d[o++] = '\'';
      break;
    case '"':
      d[o++] = '"';
      break;
    case 'a':
      d[o++] = '\a';
      break;
    case 'b':
      d[o++] = '\b';
      break;
    case 'f':
      d[o++] = '\f';
      break;
    case 'v':
      d[o++] = '\v';
      break;
    case '\n':
      break; /* line continuation */
    case 'x':
      nhex = 2;
      break;
    case 'u':
      nhex = 4;
      break;
    case 'U':
      nhex = 8;
      break;
    default:
      if (e >= '0' && e <= '7') {
        uint32_t v = 0;
        int m = 0;
        while (m < 3 && k < j && s[k] >= '0' && s[k] <= '7') {
          v = v * 8 + (uint32_t)(s[k] - '0');
          k++;
          m++;
        }
        k--;
        o += utf8_put(d + o, v);
      } else {
        d[o++] = '\\';
        d[o++] = e;
      }
    }
    if (nhex) {
      uint32_t v = 0;
      for (int m = 0; m < nhex; m++) {
        int h = k + 1 + (size_t)m < j ? hexval(s[k + 1 + m]) : -1;
        if (h < 0)
          return perr(ps, line, HX_EINVAL, "bad \\%c escape in string literal", e), false;
        v = v * 16 + (uint32_t)h;
      }
      if (v > 0x10FFFF)
        return perr(ps, line, HX_EINVAL, "escape beyond U+10FFFF in string literal"), false;
      k += (size_t)nhex;
      o += utf8_put(d + o, v);
    }
  }
  *ip = j + 1;
  return tok_push(ps, (tk){.type = TK_STRING, .line = line, .p = d, .n = o});
}

/* Lexes the inside of a tag from *ip; stops after the end marker. Returns
 * whether the marker had '-' (strip following whitespace). */
static bool lex_tag(parser *ps, size_t *ip, int *linep, char kind, bool *strip_after) {
  const char *s = ps->src;
  size_t i = *ip, n = ps->len;
  int depth = 0;
  char close = kind == '{' ? '}' : '%';
  while (i < n) {
    char c = s[i];
    if (c == '\n') {
      (*linep)++;
      i++;
      continue;
    }
    if (is_ws(c)) {
      i++;
      continue;
    }
    if (depth == 0) {
      if (c == '-' && i + 2 < n && s[i + 1] == close && s[i + 2] == '}') {
        *ip = i + 3;
        *strip_after = true;
        return tok_push(ps, (tk){.type = kind == '{' ? TK_VAR_END : TK_BLOCK_END, .line = *linep});
      }
      if (c == close && i + 1 < n && s[i + 1] == '}') {
        *ip = i + 2;
        *strip_after = false;
        return tok_push(ps, (tk){.type = kind == '{' ? TK_VAR_END : TK_BLOCK_END, .line = *linep});
      }
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
      size_t j = i;
      while (j < n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') ||
                       (s[j] >= '0' && s[j] <= '9') || s[j] == '_'))
        j++;
      if (!tok_push(ps, (tk){.type = TK_NAME, .line = *linep, .p = s + i, .n = j - i}))
        return false;
      i = j;
      continue;
    }
    if (c >= '0' && c <= '9') {
      size_t j = i;
      char num[64];
      size_t k = 0;
      bool is_float = false;
      while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) {
        if (s[j] != '_' && k < sizeof num - 1)
          num[k++] = s[j];
        j++;
      }
      if (j + 1 < n && s[j] == '.' && s[j + 1] >= '0' && s[j + 1] <= '9') {
        is_float = true;
        num[k < sizeof num - 1 ? k++ : k] = '.';
        j++;
        while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) {
          if (s[j] != '_' && k < sizeof num - 1)
            num[k++] = s[j];
          j++;
        }
      }
      if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        size_t e = j + 1;
        if (e < n && (s[e] == '+' || s[e] == '-'))
          e++;
        if (e < n && s[e] >= '0' && s[e] <= '9') {
          is_float = true;
          while (j < e && k < sizeof num - 1)
            num[k++] = s[j++];
          while (j < n && s[j] >= '0' && s[j] <= '9') {
            if (k < sizeof num - 1)
              num[k++] = s[j];
            j++;
          }
        }
      }
      num[k] = 0;
      if (k >= sizeof num - 1)
        return perr(ps, *linep, HX_EINVAL, "number literal too long"), false;
      tk t = {.type = is_float ? TK_FLOAT : TK_INT, .line = *linep};
      if (is_float) {
        t.f = strtod(num, NULL);
      } else {
        char *endp;
        errno = 0;
        long long v = strtoll(num, &endp, 10);
        if (errno)
          return perr(ps, *linep, HX_EINVAL, "integer literal out of range"), false;
        t.i = v;
      }
      if (!tok_push(ps, t))
        return false;
      i = j;
      continue;
    }
    if (c == '"' || c == '\'') {
      if (!lex_string(ps, &i, n, *linep))
        return false;
      continue;
    }
    int op = 0;
    size_t w = 1;
    char c2 = i + 1 < n ? s[i + 1] : 0;
    if (c == '/' && c2 == '/')
      op = OP_FLOORDIV, w = 2;
    else if (c == '*' && c2 == '*')
      op = OP_POW, w = 2;
    else if (c == '=' && c2 == '=')
      op = OP_EQ, w = 2;
    else if (c == '!' && c2 == '=')
      op = OP_NE, w = 2;
    else if (c == '<' && c2 == '=')
      op = OP_LE, w = 2;
    else if (c == '>' && c2 == '=')
      op = OP_GE, w = 2;
    else if (strchr("+-*/%~<>=()[]{},.:|", c))
      op = c;
    if (!op)
      return perr(ps, *linep, HX_EINVAL, "unexpected character '%c' in tag", c), false;
    if (op == '(' || op == '[' || op == '{') {
      if (++depth > HX_JINJA_PARSE_DEPTH_MAX)
        return perr(ps, *linep, HX_ETOOLARGE, "brackets nested too deeply"), false;
    } else if ((op == ')' || op == ']' || op == '}') && depth > 0) {
      depth--;
    }
    if (!tok_push(ps, (tk){.type = TK_OP, .line = *linep, .op = op}))
      return false;
    i += w;
  }
  return perr(ps, *linep, HX_EINVAL, "unterminated tag"), false;
}

static bool lex(parser *ps) {
  const char *s = ps->src;
  size_t n = ps->len;
  /* keep_trailing_newline=False: drop one trailing newline. */
  if (n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n')
    n -= 2;
  else if (n >= 1 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
    n -= 1;
  ps->len = n;
  size_t pos = 0;
  int line = 1;
  bool strip_next = false, trim_next = false;
  while (pos < n) {
    size_t k = pos;
    while (k + 1 < n && !(s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')))
      k++;
    if (k + 1 >= n)
      k = n;
    size_t a = pos, b = k;
    if (strip_next) {
      while (a < b && is_ws(s[a]))
        a++;
    } else if (trim_next && a < b && s[a] == '\n') {
      a++;
    } else if (trim_next && a + 1 < b && s[a] == '\r' && s[a + 1] == '\n') {
      a += 2;
    }
    bool line_starting = a == 0 || s[a - 1] == '\n';
    strip_next = trim_next = false;
    int data_line = line + count_lines(s + pos, a - pos);
    if (k < n) {
      char kind = s[k + 1];
      char mod = k + 2 < n ? s[k + 2] : 0;
      if (mod == '-') {
        while (b > a && is_ws(s[b - 1]))
          b--;
      } else if (mod != '+' && ps->opts.lstrip_blocks && kind != '{') {
        size_t l = b;
        while (l > a && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\f' ||
                         s[l - 1] == '\v' || s[l - 1] == '\r'))
          l--;
        if ((l > a && s[l - 1] == '\n') || (l == a && line_starting))
          b = l;
      }
    }
    if (!emit_data(ps, s + a, b - a, data_line))
      return false;
    line += count_lines(s + pos, k - pos);
    if (k >= n)
      break;
    char kind = s[k + 1];
    size_t i = k + 2;
    if (i < n && (s[i] == '-' || s[i] == '+'))
      i++;
    if (kind == '#') {
      size_t j = i;
      while (j + 1 < n && !(s[j] == '#' && s[j + 1] == '}'))
        j++;
      if (j + 1 >= n)
        return perr(ps, line, HX_EINVAL, "unterminated comment"), false;
      strip_next = j > i && s[j - 1] == '-';
      trim_next = !strip_next && ps->opts.trim_blocks;
      line += count_lines(s + k, j + 2 - k);
      pos = j + 2;
      continue;
    }
    bool strip_after = false;
    if (!tok_push(ps, (tk){.type = kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, .line = line}))
      return false;
    /* {% raw %} ... {% endraw %}: copy verbatim. */
    if (kind == '%') {
      size_t j = i;
      while (j < n && is_ws(s[j]))
        j++;
      if (j + 3 <= n && memcmp(s + j, "raw", 3) == 0 &&
          (j + 3 == n || !((s[j + 3] >= 'a' && s[j + 3] <= 'z') || s[j + 3] == '_'))) {
        ps->ntok--; /* drop BLOCK_BEGIN */
        j += 3;
        while (j < n && is_ws(s[j]))
          j++;
        bool rs = false;
        if (j < n && s[j] == '-')
          rs = true, j++;
        if (j + 1 >= n || s[j] != '%' || s[j + 1] != '}')
          return perr(ps, line, HX_EINVAL, "malformed raw tag"), false;
        j += 2;
        size_t body = j;
        if (rs)
          while (body < n && is_ws(s[body]))
            body++;
        else if (ps->opts.trim_blocks && body < n && s[body] == '\n')
          body++;
        /* find {% endraw %} */
        size_t e = body;
        for (;; e++) {
          if (e + 1 >= n)
            return perr(ps, line, HX_EINVAL, "raw block without endraw"), false;
          if (s[e] == '{' && s[e + 1] == '%') {
            size_t q = e + 2;
            if (q < n && (s[q] == '-' || s[q] == '+'))
              q++;
            while (q < n && is_ws(s[q]))
              q++;
            if (q + 6 <= n && memcmp(s + q, "endraw", 6) == 0)
              break;
          }
        }
        size_t body_end = e;
        if (e + 2 < n && s[e + 2] == '-')
          while (body_end > body && is_ws(s[body_end - 1]))
            body_end--;
        else if (ps->opts.lstrip_blocks && !(e + 2 < n && s[e + 2] == '+')) {
          size_t l = body_end;
          while (l > body && (s[l - 1] == ' ' || s[l - 1] == '\t'))
            l--;
          if (l == body ? (body == 0 || s[body - 1] == '\n') : s[l - 1] == '\n')
            body_end = l;
        }
        if (!emit_data(ps, s + body, body_end - body, line))
          return false;
        size_t q = e + 2;
        while (q + 1 < n && !(s[q] == '%' && s[q + 1] == '}'))
          q++;
        if (q + 1 >= n)
          return perr(ps, line, HX_EINVAL, "unterminated endraw tag"), false;
        strip_next = s[q - 1] == '-';
        trim_next = !strip_next && ps->opts.trim_blocks;
        line += count_lines(s + k, q + 2 - k);
        pos = q + 2;
        continue;
      }
    }
    if (!lex_tag(ps, &i, &line, kind, &strip_after))
      return false;
    strip_next = strip_after;
    trim_next = !strip_after && kind == '%' && ps->opts.trim_blocks;
    pos = i;
  }
  return tok_push(ps, (tk){.type = TK_EOF, .line = line});
}

/* ---- parser ---------------------------------------------------------- */

static const tk *cur(parser *ps) { return &ps->toks[ps->pos]; }
static const tk *peek(parser *ps, size_t k) {
  size_t i = ps->pos + k;
  return &ps->toks[i < ps->ntok ? i : ps->ntok - 1];
}
static void adv(parser *ps) {
  if (ps->toks[ps->pos].type != TK_EOF)
    ps->pos++;
}
static bool is_op(const tk *t, int op) { return t->type == TK_OP && t->op == op; }
static bool is_name(const tk *t, const char *name) {
  return t->type == TK_NAME && t->n == strlen(name) && memcmp(t->p, name, t->n) == 0;
}
static bool expect_op(parser *ps, int op) {
  if (is_op(cur(ps), op)) {
    adv(ps);
    return true;
  }
  const tk *t = cur(ps);
  if (t->type == TK_NAME)
    perr(ps, t->line, HX_EINVAL, "expected '%c', got '%.*s'", op, (int)t->n, t->p);
  else
    perr(ps, t->line, HX_EINVAL, "expected '%c'", op);
  return false;
}

static jx_node *node_new(parser *ps, jx_kind kind, int line) {
  jx_node *n = palloc(ps, sizeof *n);
  if (n) {
    n->kind = kind;
    n->line = line;
  }
  return n;
}

/* A growable array of node pointers, copied into the arena when done. */
typedef struct nvec {
  const jx_node **v;
  size_t n, cap;
} nvec;

static bool nvec_push(parser *ps, nvec *a, const jx_node *x) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 8;
    const jx_node **nv = palloc(ps, cap * sizeof *nv);
    if (!nv)
      return false;
    if (a->n)
      memcpy(nv, a->v, a->n * sizeof *nv);
    a->v = nv;
    a->cap = cap;
  }
  a->v[a->n++] = x;
  return true;
}

static const jx_node *parse_expr(parser *ps, bool with_cond);
static const jx_node *parse_unary(parser *ps, bool with_filter);
static const jx_node *parse_or(parser *ps);

static bool enter(parser *ps, int line) {
  if (++ps->depth > HX_JINJA_PARSE_DEPTH_MAX) {
    perr(ps, line, HX_ETOOLARGE, "expression or blocks nested deeper than %d",
         HX_JINJA_PARSE_DEPTH_MAX);
    return false;
  }
  return true;
}

/* Call arguments: '(' already current. Fills items / kw arrays of n. */
static bool parse_call_args(parser *ps, jx_node *n) {
  if (!expect_op(ps, '('))
    return false;
  nvec args = {0}, kwv = {0};
  const char *kwn[64];
  size_t kwl[64];
  size_t nkw = 0;
  while (!is_op(cur(ps), ')')) {
    if (args.n + nkw > 0 && !expect_op(ps, ','))
      return false;
    if (is_op(cur(ps), ')'))
      break;
    if (cur(ps)->type == TK_NAME && is_op(peek(ps, 1), '=')) {
      if (nkw == 64)
        return perr(ps, cur(ps)->line, HX_ETOOLARGE, "too many keyword arguments"), false;
      kwn[nkw] = cur(ps)->p;
      kwl[nkw] = cur(ps)->n;
      adv(ps);
      adv(ps);
      const jx_node *v = parse_expr(ps, true);
      if (!v || !nvec_push(ps, &kwv, v))
        return false;
      nkw++;
    } else {
      if (nkw)
        return perr(ps, cur(ps)->line, HX_EINVAL, "positional argument after keyword argument"),
               false;
      const jx_node *v = parse_expr(ps, true);
      if (!v || !nvec_push(ps, &args, v))
        return false;
    }
  }
  adv(ps);
  n->items = args.v;
  n->n = args.n;
  n->nkw = nkw;
  n->kw_vals = kwv.v;
  if (nkw) {
    n->kw_names = palloc(ps, nkw * sizeof(char *));
    n->kw_lens = palloc(ps, nkw * sizeof(size_t));
    if (!n->kw_names || !n->kw_lens)
      return false;
    memcpy(n->kw_names, kwn, nkw * sizeof(char *));
    memcpy(n->kw_lens, kwl, nkw * sizeof(size_t));
  }
  return true;
}

static const jx_node *parse_primary(parser *ps) {
  const tk *t = cur(ps);
  int line = t->line;
  jx_node *n;
  switch (t->type) {
  case TK_NAME:
    if (is_name(t, "true") || is_name(t, "True") || is_name(t, "false") || is_name(t, "False")) {
      n = node_new(ps, JX_LIT, line);
      if (n)
        n->lit = jv_bool(t->p[0] == 't' || t->p[0] == 'T');
    } else if (is_name(t, "none") || is_name(t, "None")) {
      n = node_new(ps, JX_LIT, line);
      if (n)
        n->lit = jv_none();
    } else {
      n = node_new(ps, JX_NAME, line);
      if (n) {
        n->name = t->p;
        n->name_len = t->n;
      }
    }
    adv(ps);
    return n;
  case TK_STRING: {
    /* adjacent string literals concatenate */
    size_t total = 0, k = 0;
    while (peek(ps, k)->type == TK_STRING)
      total += peek(ps, k++)->n;
    n = node_new(ps, JX_LIT, line);
    if (!n)
      return NULL;
    if (k == 1) {
      n->lit = jv_str(t->p, t->n);
      adv(ps);
    } else {
      char *d = palloc(ps, total);
      if (!d)
        return NULL;
      size_t o = 0;
      while (cur(ps)->type == TK_STRING) {
        memcpy(d + o, cur(ps)->p, cur(ps)->n);
        o += cur(ps)->n;
        adv(ps);
      }
      n->lit = jv_str(d, o);
    }
    return n;
  }
  case TK_INT:
    n = node_new(ps, JX_LIT, line);
    if (n)
      n->lit = jv_int(t->i);
    adv(ps);
    return n;
  case TK_FLOAT:
    n = node_new(ps, JX_LIT, line);
    if (n)
      n->lit = jv_float(t->f);
    adv(ps);
    return n;
  case TK_OP:
    if (t->op == '(') {
      adv(ps);
      if (is_op(cur(ps), ')')) {
        adv(ps);
        return node_new(ps, JX_TUPLELIT, line);
      }
      const jx_node *e = parse_expr(ps, true);
      if (!e)
        return NULL;
      if (is_op(cur(ps), ',')) {
        nvec v = {0};
        if (!nvec_push(ps, &v, e))
          return NULL;
        while (is_op(cur(ps), ',')) {
          adv(ps);
          if (is_op(cur(ps), ')'))
            break;
          const jx_node *x = parse_expr(ps, true);
          if (!x || !nvec_push(ps, &v, x))
            return NULL;
        }
        n = node_new(ps, JX_TUPLELIT, line);
        if (!n)
          return NULL;
        n->items = v.v;
        n->n = v.n;
        e = n;
      }
      if (!expect_op(ps, ')'))
        return NULL;
      return e;
    }
    if (t->op == '[') {
      adv(ps);
      nvec v = {0};
      while (!is_op(cur(ps), ']')) {
        if (v.n && !expect_op(ps, ','))
          return NULL;
        if (is_op(cur(ps), ']'))
          break;
        const jx_node *x = parse_expr(ps, true);
        if (!x || !nvec_push(ps, &v, x))
          return NULL;
      }
      adv(ps);
      n = node_new(ps, JX_LISTLIT, line);
      if (n) {
        n->items = v.v;
        n->n = v.n;
      }
      return n;
    }
    if (t->op == '{') {
      adv(ps);
      nvec k = {0}, v = {0};
      while (!is_op(cur(ps), '}')) {
        if (k.n && !expect_op(ps, ','))
          return NULL;
        if (is_op(cur(ps), '}'))
          break;
        const jx_node *kx = parse_expr(ps, true);
        if (!kx || !expect_op(ps, ':'))
          return NULL;
        const jx_node *vx = parse_expr(ps, true);
        if (!vx || !nvec_push(ps, &k, kx) || !nvec_push(ps, &v, vx))
          return NULL;
      }
      adv(ps);
      n = node_new(ps, JX_DICTLIT, line);
      if (n) {
        n->items = k.v;
        n->items2 = v.v;
        n->n = k.n;
      }
      return n;
    }
    break;
  default:
    break;
  }
  if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || t->type == TK_EOF)
    perr(ps, line, HX_EINVAL, "unexpected end of tag, expected an expression");
  else if (t->type == TK_OP)
    perr(ps, line, HX_EINVAL, "unexpected '%c'", t->op < 256 ? t->op : '?');
  else
    perr(ps, line, HX_EINVAL, "unexpected token");
  return NULL;
}

static const jx_node *parse_subscript(parser *ps, const jx_node *obj) {
  int line = cur(ps)->line;
  adv(ps); /* [ */
  const jx_node *parts[3] = {NULL, NULL, NULL};
  int np = 0;
  bool slice = false;
  for (;;) {
    if (is_op(cur(ps), ':')) {
      slice = true;
      if (++np > 2)
        return perr(ps, line, HX_EINVAL, "bad slice"), NULL;
      adv(ps);
      continue;
    }
    if (is_op(cur(ps), ']'))
      break;
    if (parts[np])
      return perr(ps, line, HX_EINVAL, "expected ']'"), NULL;
    parts[np] = parse_expr(ps, true);
    if (!parts[np])
      return NULL;
  }
  adv(ps);
  jx_node *n = node_new(ps, slice ? JX_SLICE : JX_ITEM, line);
  if (!n)
    return NULL;
  n->a = obj;
  if (slice) {
    n->b = parts[0];
    n->c = parts[1];
    n->d = parts[2];
  } else {
    if (!parts[0])
      return perr(ps, line, HX_EINVAL, "empty subscript"), NULL;
    n->b = parts[0];
  }
  return n;
}

static const jx_node *parse_postfix(parser *ps, const jx_node *node) {
  while (node) {
    const tk *t = cur(ps);
    if (is_op(t, '.')) {
      adv(ps);
      const tk *a = cur(ps);
      jx_node *n;
      if (a->type == TK_NAME) {
        n = node_new(ps, JX_ATTR, a->line);
        if (!n)
          return NULL;
        n->a = node;
        n->name = a->p;
        n->name_len = a->n;
      } else if (a->type == TK_INT) {
        n = node_new(ps, JX_ITEM, a->line);
        jx_node *idx = node_new(ps, JX_LIT, a->line);
        if (!n || !idx)
          return NULL;
        idx->lit = jv_int(a->i);
        n->a = node;
        n->b = idx;
      } else {
        return perr(ps, a->line, HX_EINVAL, "expected a name after '.'"), NULL;
      }
      adv(ps);
      node = n;
    } else if (is_op(t, '[')) {
      node = parse_subscript(ps, node);
    } else if (is_op(t, '(')) {
      jx_node *n = node_new(ps, JX_CALL, t->line);
      if (!n)
        return NULL;
      n->a = node;
      if (!parse_call_args(ps, n))
        return NULL;
      node = n;
    } else {
      break;
    }
  }
  return node;
}

static const jx_node *parse_filter_or_test(parser *ps, const jx_node *node) {
  while (node) {
    const tk *t = cur(ps);
    if (is_op(t, '|')) {
      adv(ps);
      const tk *nm = cur(ps);
      if (nm->type != TK_NAME)
        return perr(ps, nm->line, HX_EINVAL, "expected a filter name after '|'"), NULL;
      jx_node *n = node_new(ps, JX_FILTER, nm->line);
      if (!n)
        return NULL;
      n->a = node;
      n->name = nm->p;
      n->name_len = nm->n;
      adv(ps);
      if (is_op(cur(ps), '(') && !parse_call_args(ps, n))
        return NULL;
      node = n;
    } else if (is_name(t, "is")) {
      adv(ps);
      jx_node *n = node_new(ps, JX_TEST, t->line);
      if (!n)
        return NULL;
      if (is_name(cur(ps), "not")) {
        n->op = 1;
        adv(ps);
      }
      const tk *nm = cur(ps);
      if (nm->type != TK_NAME)
        return perr(ps, nm->line, HX_EINVAL, "expected a test name after 'is'"), NULL;
      n->a = node;
      n->name = nm->p;
      n->name_len = nm->n;
      adv(ps);
      const tk *nx = cur(ps);
      if (is_op(nx, '(')) {
        if (!parse_call_args(ps, n))
          return NULL;
      } else if ((nx->type == TK_NAME || nx->type == TK_STRING || nx->type == TK_INT ||
                  nx->type == TK_FLOAT || is_op(nx, '[') || is_op(nx, '{')) &&
                 !is_name(nx, "else") && !is_name(nx, "or") && !is_name(nx, "and") &&
                 !is_name(nx, "if") && !is_name(nx, "is") && !is_name(nx, "in") &&
                 !is_name(nx, "not")) {
        const jx_node *arg = parse_postfix(ps, parse_primary(ps));
        if (!arg)
          return NULL;
        const jx_node **items = palloc(ps, sizeof *items);
        if (!items)
          return NULL;
        items[0] = arg;
        n->items = items;
        n->n = 1;
      }
      node = n;
    } else if (is_op(t, '(')) {
      jx_node *n = node_new(ps, JX_CALL, t->line);
      if (!n)
        return NULL;
      n->a = node;
      if (!parse_call_args(ps, n))
        return NULL;
      node = n;
    } else {
      break;
    }
  }
  return node;
}

static const jx_node *parse_unary(parser *ps, bool with_filter) {
  const tk *t = cur(ps);
  if (!enter(ps, t->line))
    return NULL;
  const jx_node *node;
  if (is_op(t, '-') || is_op(t, '+')) {
    adv(ps);
    jx_node *n = node_new(ps, t->op == '-' ? JX_NEG : JX_POS, t->line);
    if (!n)
      return NULL;
    n->a = parse_unary(ps, false);
    node = n->a ? n : NULL;
  } else {
    node = parse_primary(ps);
  }
  node = parse_postfix(ps, node);
  if (with_filter)
    node = parse_filter_or_test(ps, node);
  ps->depth--;
  return node;
}

static const jx_node *bin(parser *ps, jx_kind kind, int op, int line, const jx_node *a,
                          const jx_node *b) {
  if (!a || !b)
    return NULL;
  jx_node *n = node_new(ps, kind, line);
  if (!n)
    return NULL;
  n->op = op;
  n->a = a;
  n->b = b;
  return n;
}

static const jx_node *parse_pow(parser *ps) {
  const jx_node *l = parse_unary(ps, true);
  while (l && is_op(cur(ps), OP_POW)) {
    int line = cur(ps)->line;
    adv(ps);
    l = bin(ps, JX_BIN, 'P', line, l, parse_unary(ps, true));
  }
  return l;
}

static const jx_node *parse_math2(parser *ps) {
  const jx_node *l = parse_pow(ps);
  while (l) {
    const tk *t = cur(ps);
    int op = is_op(t, '*')           ? '*'
             : is_op(t, '/')         ? '/'
             : is_op(t, OP_FLOORDIV) ? 'F'
             : is_op(t, '%')         ? '%'
                                     : 0;
    if (!op)
      break;
    adv(ps);
    l = bin(ps, JX_BIN, op, t->line, l, parse_pow(ps));
  }
  return l;
}

static const jx_node *parse_concat(parser *ps) {
  const jx_node *l = parse_math2(ps);
  while (l && is_op(cur(ps), '~')) {
    int line = cur(ps)->line;
    adv(ps);
    l = bin(ps, JX_BIN, '~', line, l, parse_math2(ps));
  }
  return l;
}

static const jx_node *parse_math1(parser *ps) {
  const jx_node *l = parse_concat(ps);
  while (l && (is_op(cur(ps), '+') || is_op(cur(ps), '-'))) {
    const tk *t = cur(ps);
    adv(ps);
    l = bin(ps, JX_BIN, t->op, t->line, l, parse_concat(ps));
  }
  return l;
}

static const jx_node *parse_compare(parser *ps) {
  int line = cur(ps)->line;
  const jx_node *first = parse_math1(ps);
  if (!first)
    return NULL;
  nvec operands = {0};
  int ops[32];
  size_t nops = 0;
  for (;;) {
    const tk *t = cur(ps);
    int op = 0;
    if (is_op(t, OP_EQ))
      op = JX_EQ;
    else if (is_op(t, OP_NE))
      op = JX_NE;
    else if (is_op(t, '<'))
      op = JX_LT;
    else if (is_op(t, OP_LE))
      op = JX_LE;
    else if (is_op(t, '>'))
      op = JX_GT;
    else if (is_op(t, OP_GE))
      op = JX_GE;
    else if (is_name(t, "in"))
      op = JX_IN;
    else if (is_name(t, "not") && is_name(peek(ps, 1), "in")) {
      op = JX_NOTIN;
      adv(ps);
    }
    if (!op)
      break;
    adv(ps);
    if (nops == 32)
      return perr(ps, t->line, HX_ETOOLARGE, "comparison chain too long"), NULL;
    ops[nops++] = op;
    const jx_node *x = parse_math1(ps);
    if (!x || !nvec_push(ps, &operands, x))
      return NULL;
  }
  if (!nops)
    return first;
  jx_node *n = node_new(ps, JX_CMP, line);
  if (!n)
    return NULL;
  n->a = first;
  n->items = operands.v;
  n->n = nops;
  n->ops = palloc(ps, nops * sizeof(int));
  if (!n->ops)
    return NULL;
  memcpy(n->ops, ops, nops * sizeof(int));
  return n;
}

static const jx_node *parse_not(parser *ps) {
  const tk *t = cur(ps);
  if (is_name(t, "not")) {
    adv(ps);
    if (!enter(ps, t->line))
      return NULL;
    jx_node *n = node_new(ps, JX_NOT, t->line);
    if (!n)
      return NULL;
    n->a = parse_not(ps);
    ps->depth--;
    return n->a ? n : NULL;
  }
  return parse_compare(ps);
}

static const jx_node *parse_and(parser *ps) {
  const jx_node *l = parse_not(ps);
  while (l && is_name(cur(ps), "and")) {
    int line = cur(ps)->line;
    adv(ps);
    l = bin(ps, JX_AND, 0, line, l, parse_not(ps));
  }
  return l;
}

static const jx_node *parse_or(parser *ps) {
  const jx_node *l = parse_and(ps);
  while (l && is_name(cur(ps), "or")) {
    int line = cur(ps)->line;
    adv(ps);
    l = bin(ps, JX_OR, 0, line, l, parse_and(ps));
  }
  return l;
}

static const jx_node *parse_expr(parser *ps, bool with_cond) {
  if (!enter(ps, cur(ps)->line))
    return NULL;
  const jx_node *e = parse_or(ps);
  while (with_cond && e && is_name(cur(ps), "if")) {
    int line = cur(ps)->line;
    adv(ps);
    jx_node *n = node_new(ps, JX_COND, line);
    if (!n)
      return NULL;
    n->b = e;
    n->a = parse_or(ps);
    if (!n->a)
      return NULL;
    if (is_name(cur(ps), "else")) {
      adv(ps);
      n->c = parse_expr(ps, true);
      if (!n->c)
        return NULL;
    }
    e = n;
  }
  ps->depth--;
  return e;
}

/* Tuple without parentheses (for targets / set values): a, b */
static const jx_node *parse_tuple(parser *ps, bool names_only) {
  int line = cur(ps)->line;
  nvec v = {0};
  bool trailing = false;
  for (;;) {
    const jx_node *x;
    if (names_only) {
      const tk *t = cur(ps);
      if (t->type != TK_NAME)
        return perr(ps, t->line, HX_EINVAL, "expected a variable name"), NULL;
      jx_node *n = node_new(ps, JX_NAME, t->line);
      if (!n)
        return NULL;
      n->name = t->p;
      n->name_len = t->n;
      adv(ps);
      if (is_op(cur(ps), '.')) { /* namespace attribute target */
        adv(ps);
        const tk *a = cur(ps);
        if (a->type != TK_NAME)
          return perr(ps, a->line, HX_EINVAL, "expected an attribute name"), NULL;
        jx_node *at = node_new(ps, JX_ATTR, a->line);
        if (!at)
          return NULL;
        at->a = n;
        at->name = a->p;
        at->name_len = a->n;
        adv(ps);
        x = at;
      } else {
        x = n;
      }
    } else {
      x = parse_expr(ps, true);
    }
    if (!x || !nvec_push(ps, &v, x))
      return NULL;
    trailing = false;
    if (!is_op(cur(ps), ','))
      break;
    adv(ps);
    trailing = true;
    const tk *t = cur(ps);
    if (t->type == TK_BLOCK_END || is_name(t, "in") || is_op(t, '='))
      break;
  }
  if (v.n == 1 && !trailing)
    return v.v[0];
  jx_node *n = node_new(ps, JX_TUPLELIT, line);
  if (!n)
    return NULL;
  n->items = v.v;
  n->n = v.n;
  return n;
}

static bool expect_block_end(parser *ps) {
  if (cur(ps)->type == TK_BLOCK_END) {
    adv(ps);
    return true;
  }
  perr(ps, cur(ps)->line, HX_EINVAL, "expected end of block tag '%%}'");
  return false;
}

/* Parses statements until a block tag named one of `ends` (NULL-terminated);
 * leaves the parser on that name token. ends NULL: until EOF. */
static const jx_node *parse_body(parser *ps, const char *const *ends, const char *what);

static bool name_in(const tk *t, const char *const *ends) {
  for (size_t i = 0; ends && ends[i]; i++)
    if (is_name(t, ends[i]))
      return true;
  return false;
}

static const jx_node *parse_if(parser *ps, int line) {
  jx_node *n = node_new(ps, JX_IF, line);
  if (!n)
    return NULL;
  n->a = parse_expr(ps, true);
  if (!n->a || !expect_block_end(ps))
    return NULL;
  static const char *const ends[] = {"elif", "else", "endif", NULL};
  n->b = parse_body(ps, ends, "if");
  if (!n->b)
    return NULL;
  const tk *t = cur(ps);
  if (is_name(t, "elif")) {
    adv(ps);
    n->c = parse_if(ps, t->line);
    return n->c ? n : NULL;
  }
  if (is_name(t, "else")) {
    adv(ps);
    if (!expect_block_end(ps))
      return NULL;
    static const char *const ends2[] = {"endif", NULL};
    n->c = parse_body(ps, ends2, "if");
    if (!n->c)
      return NULL;
  }
  adv(ps); /* endif */
  return expect_block_end(ps) ? n : NULL;
}

static const jx_node *parse_for(parser *ps, int line) {
  jx_node *n = node_new(ps, JX_FOR, line);
  if (!n)
    return NULL;
  const jx_node *targets = parse_tuple(ps, true);
  if (!targets)
    return NULL;
  if (targets->kind == JX_ATTR)
    return perr(ps, line, HX_EINVAL, "for loop target cannot be an attribute"), NULL;
  n->d = targets;
  if (!is_name(cur(ps), "in"))
    return perr(ps, cur(ps)->line, HX_EINVAL, "expected 'in' in for loop"), NULL;
  adv(ps);
  n->a = parse_expr(ps, false);
  if (!n->a)
    return NULL;
  if (is_name(cur(ps), "if")) {
    adv(ps);
    const jx_node *f = parse_expr(ps, true);
    if (!f)
      return NULL;
    const jx_node **items = palloc(ps, sizeof *items);
    if (!items)
      return NULL;
    items[0] = f;
    n->items = items;
    n->n = 1;
  }
  if (is_name(cur(ps), "recursive"))
    return perr(ps, line, HX_EUNSUPPORTED, "recursive for loops are not supported"), NULL;
  if (!expect_block_end(ps))
    return NULL;
  static const char *const ends[] = {"else", "endfor", NULL};
  n->b = parse_body(ps, ends, "for");
  if (!n->b)
    return NULL;
  if (is_name(cur(ps), "else")) {
    adv(ps);
    if (!expect_block_end(ps))
      return NULL;
    static const char *const ends2[] = {"endfor", NULL};
    n->c = parse_body(ps, ends2, "for");
    if (!n->c)
      return NULL;
  }
  adv(ps);
  return expect_block_end(ps) ? n : NULL;
}

/* {% filter name(args) | name2 %}: a chain of JX_FILTER nodes whose innermost
 * operand is NULL (the block's output). */
static const jx_node *parse_filter_chain(parser *ps) {
  const jx_node *node = NULL;
  bool first = true;
  while (first || is_op(cur(ps), '|')) {
    if (!first)
      adv(ps);
    first = false;
    const tk *nm = cur(ps);
    if (nm->type != TK_NAME)
      return perr(ps, nm->line, HX_EINVAL, "expected a filter name"), NULL;
    jx_node *n = node_new(ps, JX_FILTER, nm->line);
    if (!n)
      return NULL;
    n->a = node;
    n->name = nm->p;
    n->name_len = nm->n;
    adv(ps);
    if (is_op(cur(ps), '(') && !parse_call_args(ps, n))
      return NULL;
    node = n;
  }
  return node;
}

static const jx_node *parse_set(parser *ps, int line) {
  const jx_node *targets = parse_tuple(ps, true);
  if (!targets)
    return NULL;
  if (is_op(cur(ps), '=')) {
    adv(ps);
    jx_node *n = node_new(ps, JX_SET, line);
    if (!n)
      return NULL;
    n->d = targets;
    n->a = parse_tuple(ps, false);
    if (!n->a || !expect_block_end(ps))
      return NULL;
    return n;
  }
  if (targets->kind != JX_NAME)
    return perr(ps, line, HX_EINVAL, "block set needs a single variable name"), NULL;
  jx_node *n = node_new(ps, JX_SETBLOCK, line);
  if (!n)
    return NULL;
  n->d = targets;
  if (is_op(cur(ps), '|')) {
    n->a = parse_filter_chain(ps);
    if (!n->a)
      return NULL;
  }
  if (!expect_block_end(ps))
    return NULL;
  static const char *const ends[] = {"endset", NULL};
  n->b = parse_body(ps, ends, "set");
  if (!n->b)
    return NULL;
  adv(ps);
  return expect_block_end(ps) ? n : NULL;
}

/* Macro signature: (a, b=default, ...) */
static bool parse_signature(parser *ps, jx_node *n) {
  nvec params = {0}, defs = {0};
  if (is_op(cur(ps), '(')) {
    adv(ps);
    while (!is_op(cur(ps), ')')) {
      if (params.n && !expect_op(ps, ','))
        return false;
      if (is_op(cur(ps), ')'))
        break;
      const tk *t = cur(ps);
      if (t->type != TK_NAME)
        return perr(ps, t->line, HX_EINVAL, "expected a parameter name"), false;
      jx_node *p = node_new(ps, JX_NAME, t->line);
      if (!p)
        return false;
      p->name = t->p;
      p->name_len = t->n;
      adv(ps);
      const jx_node *def = NULL;
      if (is_op(cur(ps), '=')) {
        adv(ps);
        def = parse_expr(ps, true);
        if (!def)
          return false;
      }
      if (!nvec_push(ps, &params, p) || !nvec_push(ps, &defs, def))
        return false;
    }
    adv(ps);
  }
  n->items = params.v;
  n->items2 = defs.v;
  n->n = params.n;
  return true;
}

static const jx_node *parse_macro(parser *ps, int line) {
  const tk *t = cur(ps);
  if (t->type != TK_NAME)
    return perr(ps, t->line, HX_EINVAL, "expected a macro name"), NULL;
  jx_node *n = node_new(ps, JX_MACRO, line);
  if (!n)
    return NULL;
  n->name = t->p;
  n->name_len = t->n;
  adv(ps);
  if (!parse_signature(ps, n) || !expect_block_end(ps))
    return NULL;
  static const char *const ends[] = {"endmacro", NULL};
  n->b = parse_body(ps, ends, "macro");
  if (!n->b)
    return NULL;
  adv(ps);
  if (cur(ps)->type == TK_NAME) /* {% endmacro name %} */
    adv(ps);
  return expect_block_end(ps) ? n : NULL;
}

static const jx_node *parse_call_block(parser *ps, int line) {
  jx_node *n = node_new(ps, JX_CALLBLOCK, line);
  if (!n)
    return NULL;
  jx_node *caller = node_new(ps, JX_MACRO, line);
  if (!caller)
    return NULL;
  caller->name = "caller";
  caller->name_len = 6;
  if (is_op(cur(ps), '(') && !parse_signature(ps, caller))
    return NULL;
  n->a = parse_expr(ps, true);
  if (!n->a)
    return NULL;
  if (n->a->kind != JX_CALL)
    return perr(ps, line, HX_EINVAL, "call block needs a macro call"), NULL;
  if (!expect_block_end(ps))
    return NULL;
  static const char *const ends[] = {"endcall", NULL};
  caller->b = parse_body(ps, ends, "call");
  if (!caller->b)
    return NULL;
  n->b = caller;
  adv(ps);
  return expect_block_end(ps) ? n : NULL;
}

static const jx_node *parse_statement(parser *ps) {
  const tk *t = cur(ps);
  int line = t->line;
  if (t->type != TK_NAME)
    return perr(ps, line, HX_EINVAL, "expected a statement name after '{%%'"), NULL;
  adv(ps);
  if (is_name(t, "if"))
    return parse_if(ps, line);
  if (is_name(t, "for"))
    return parse_for(ps, line);
  if (is_name(t, "set"))
    return parse_set(ps, line);
  if (is_name(t, "macro"))
    return parse_macro(ps, line);
  if (is_name(t, "call"))
    return parse_call_block(ps, line);
  if (is_name(t, "break") || is_name(t, "continue")) {
    jx_node *n = node_new(ps, t->p[0] == 'b' ? JX_BREAK : JX_CONTINUE, line);
    return n && expect_block_end(ps) ? n : NULL;
  }
  if (is_name(t, "filter")) {
    jx_node *n = node_new(ps, JX_FILTERBLOCK, line);
    if (!n)
      return NULL;
    n->a = parse_filter_chain(ps);
    if (!n->a || !expect_block_end(ps))
      return NULL;
    static const char *const ends[] = {"endfilter", NULL};
    n->b = parse_body(ps, ends, "filter");
    if (!n->b)
      return NULL;
    adv(ps);
    return expect_block_end(ps) ? n : NULL;
  }
  if (is_name(t, "generation")) { /* transformers' AssistantTracker: renders its body */
    if (!expect_block_end(ps))
      return NULL;
    static const char *const ends[] = {"endgeneration", NULL};
    const jx_node *b = parse_body(ps, ends, "generation");
    if (!b)
      return NULL;
    adv(ps);
    return expect_block_end(ps) ? b : NULL;
  }
  static const char *const unsupported[] = {"include", "extends",    "import", "from",  "block",
                                            "with",    "autoescape", "do",     "trans", NULL};
  if (name_in(t, unsupported))
    return perr(ps, line, HX_EUNSUPPORTED, "'%.*s' is not supported in chat templates", (int)t->n,
                t->p),
           NULL;
  return perr(ps, line, HX_EINVAL, "unknown or misplaced tag '%.*s'", (int)t->n, t->p), NULL;
}

static const jx_node *parse_body(parser *ps, const char *const *ends, const char *what) {
  /* the opening tag's line: the token before the body ends that tag */
  int line = ps->pos ? ps->toks[ps->pos - 1].line : 1;
  if (!enter(ps, line))
    return NULL;
  nvec v = {0};
  for (;;) {
    const tk *t = cur(ps);
    if (t->type == TK_EOF) {
      if (ends)
        return perr(ps, line, HX_EINVAL, "'%s' block opened here is never closed", what), NULL;
      break;
    }
    const jx_node *st = NULL;
    if (t->type == TK_DATA) {
      jx_node *n = node_new(ps, JX_TEXT, t->line);
      if (!n)
        return NULL;
      n->name = t->p;
      n->name_len = t->n;
      adv(ps);
      st = n;
    } else if (t->type == TK_VAR_BEGIN) {
      adv(ps);
      jx_node *n = node_new(ps, JX_OUTPUT, t->line);
      if (!n)
        return NULL;
      n->a = parse_tuple(ps, false);
      if (!n->a)
        return NULL;
      if (cur(ps)->type != TK_VAR_END)
        return perr(ps, cur(ps)->line, HX_EINVAL, "expected end of print tag '}}'"), NULL;
      adv(ps);
      st = n;
    } else if (t->type == TK_BLOCK_BEGIN) {
      adv(ps);
      if (name_in(cur(ps), ends))
        break;
      st = parse_statement(ps);
      if (!st)
        return NULL;
    } else {
      return perr(ps, t->line, HX_EINVAL, "unexpected token"), NULL;
    }
    if (!nvec_push(ps, &v, st))
      return NULL;
  }
  jx_node *b = node_new(ps, JX_BODY, line);
  if (!b)
    return NULL;
  b->items = v.v;
  b->n = v.n;
  ps->depth--;
  return b;
}

hx_code jx_parse(hx_jinja_template *t, const char *src, size_t len, const hx_jinja_options *opts,
                 hx_err *err) {
  parser ps = {.t = t, .arena = &t->arena, .src = src, .len = len, .opts = *opts, .err = err};
  if (lex(&ps)) {
    const jx_node *root = parse_body(&ps, NULL, "template");
    if (root)
      t->root = root;
  }
  free(ps.toks);
  if (ps.code == HX_OK && !t->root)
    return hx_err_set(err, HX_EINTERNAL, "%s: parse failed", t->name);
  return ps.code;
}
