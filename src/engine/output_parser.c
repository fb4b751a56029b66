/* output_parser.c — streaming split of generated text into reasoning, content
 * and tool calls (see output_parser.h for the grammar).
 *
 * A small state machine over a pending buffer: in CONTENT mode it looks for
 * "<think>" and "<tool_call>", in REASONING mode for "</think>", in TOOL mode
 * it buffers until "</tool_call>" and then parses the block. Text that may be
 * the beginning of a tag is held back until the next chunk decides it, so
 * the result does not depend on chunk boundaries. A block that does not
 * parse is returned as content verbatim, tags included. */
#include "engine/output_parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/json.h"

enum { MODE_CONTENT, MODE_REASONING, MODE_TOOL };

static const char TAG_THINK[] = "<think>";
static const char TAG_THINK_END[] = "</think>";
static const char TAG_TOOL[] = "<tool_call>";
static const char TAG_TOOL_END[] = "</tool_call>";

struct hx_output_parser {
  hx_output_parser_config cfg;
  json_t *tools; /* own reference, or NULL */
  char *id_prefix;
  int mode;
  hx_buf pending; /* undecided text (held back or being scanned) */
  hx_buf block;   /* TOOL mode: text after "<tool_call>" */
  int next_index;
  bool finished, stopped;
};

hx_code hx_output_parser_init(hx_output_parser **out, const hx_output_parser_config *cfg,
                              hx_err *err) {
  HX_ASSERT(out && cfg);
  *out = NULL;
  hx_output_parser *p = calloc(1, sizeof *p);
  if (!p)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  p->cfg = *cfg;
  if (!p->cfg.tool_call_max_bytes)
    p->cfg.tool_call_max_bytes = (size_t)1 << 20;
  p->id_prefix = strdup(cfg->id_prefix ? cfg->id_prefix : "call_");
  if (!p->id_prefix) {
    free(p);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  if (cfg->tools)
    p->tools = json_incref((json_t *)cfg->tools);
  p->cfg.tools = p->tools;
  p->cfg.id_prefix = p->id_prefix;
  p->mode = cfg->think_open && cfg->parse_think ? MODE_REASONING : MODE_CONTENT;
  /* pending never holds more than one chunk plus a partial tag; the block is
   * bounded by tool_call_max_bytes (checked before appending) */
  hx_buf_init(&p->pending, SIZE_MAX / 2);
  hx_buf_init(&p->block, SIZE_MAX / 2);
  *out = p;
  return HX_OK;
}

void hx_output_parser_free(hx_output_parser *p) {
  if (!p)
    return;
  hx_buf_free(&p->pending);
  hx_buf_free(&p->block);
  json_decref(p->tools);
  free(p->id_prefix);
  free(p);
}

typedef struct sink {
  hx_output_event_fn fn;
  void *user;
  hx_output_parser *p;
} sink;

static bool send(sink *s, hx_output_event ev) {
  if (s->p->stopped)
    return false;
  if (ev.kind <= HX_OUTPUT_REASONING && ev.len == 0)
    return true;
  if (s->fn(s->user, &ev) != 0) {
    s->p->stopped = true;
    return false;
  }
  return true;
}

static bool send_text(sink *s, hx_output_event_kind kind, const char *t, size_t n) {
  return send(s, (hx_output_event){.kind = kind, .index = -1, .text = t, .len = n});
}

/* Length of the longest suffix of (t, n) that is a proper prefix of tag. */
static size_t partial_suffix(const char *t, size_t n, const char *tag) {
  size_t tl = strlen(tag);
  size_t k = n < tl - 1 ? n : tl - 1;
  for (; k > 0; k--)
    if (memcmp(t + n - k, tag, k) == 0)
      return k;
  return 0;
}

/* ---- tool-call block parsing ------------------------------------------ */

typedef struct call {
  char *name;
  json_t *args; /* object */
} call;

static const json_t *tool_schema_props(const json_t *tools, const char *name) {
  size_t i;
  json_t *t;
  json_array_foreach(tools, i, t) {
    json_t *fn = json_object_get(t, "function");
    if (!fn)
      fn = t;
    const char *n = json_string_value(json_object_get(fn, "name"));
    if (n && !strcmp(n, name))
      return json_object_get(json_object_get(fn, "parameters"), "properties");
  }
  return NULL;
}

static const char *schema_type(const json_t *prop) {
  const json_t *ty = json_object_get(prop, "type");
  if (json_is_string(ty))
    return json_string_value(ty);
  if (json_is_array(ty)) { /* ["integer", "null"]: the first non-null */
    size_t i;
    json_t *e;
    json_array_foreach(ty, i,
                       e) if (json_is_string(e) &&
                              strcmp(json_string_value(e), "null")) return json_string_value(e);
  }
  if (json_object_get(prop, "properties"))
    return "object";
  if (json_object_get(prop, "items"))
    return "array";
  return NULL;
}

static json_t *json_try(const char *t, size_t n) {
  hx_err e;
  return hx_json_parse(t, n, (hx_json_limits){(size_t)16 << 20, 64}, &e);
}

/* Typed parameter value per the tool's JSON schema (never fails: falls back
 * to the string). */
static json_t *param_value(const json_t *props, bool have_schema, const char *pname, const char *v,
                           size_t n) {
  const json_t *prop = json_object_get(props, pname);
  const char *ty = prop ? schema_type(prop) : NULL;
  json_t *parsed = NULL;
  if (ty && strcmp(ty, "string") != 0) {
    if (!strcmp(ty, "boolean") && (n == 4 || n == 5)) {
      if (!strncasecmp(v, "true", n) && n == 4)
        return json_true();
      if (!strncasecmp(v, "false", n) && n == 5)
        return json_false();
    }
    parsed = json_try(v, n);
    bool ok = parsed && ((!strcmp(ty, "integer") && json_is_integer(parsed)) ||
                         (!strcmp(ty, "number") && json_is_number(parsed)) ||
                         (!strcmp(ty, "boolean") && json_is_boolean(parsed)) ||
                         (!strcmp(ty, "null") && json_is_null(parsed)) ||
                         (!strcmp(ty, "object") && json_is_object(parsed)) ||
                         (!strcmp(ty, "array") && json_is_array(parsed)));
    if (ok)
      return parsed;
    json_decref(parsed);
  } else if (!have_schema || (!prop && !ty)) {
    /* no schema for this parameter: keep JSON objects/arrays, else a string */
    if (!have_schema && n && (v[0] == '{' || v[0] == '[')) {
      parsed = json_try(v, n);
      if (json_is_object(parsed) || json_is_array(parsed))
        return parsed;
      json_decref(parsed);
    }
  }
  return json_stringn(v, n);
}

static const char *find(const char *h, size_t hn, const char *needle) {
  return memmem(h, hn, needle, strlen(needle));
}

/* <function=NAME>\n<parameter=P>\nV\n</parameter>...</function>, possibly
 * several; only whitespace may surround them. */
static int parse_xml(const hx_output_parser *p, const char *t, size_t n, call *calls, int max) {
  int nc = 0;
  size_t i = 0;
  for (;;) {
    while (i < n && (t[i] == ' ' || t[i] == '\n' || t[i] == '\r' || t[i] == '\t'))
      i++;
    if (i == n)
      break;
    if (nc == max || n - i < 10 || memcmp(t + i, "<function=", 10) != 0)
      return -1;
    i += 10;
    const char *gt = memchr(t + i, '>', n - i);
    const char *nl = memchr(t + i, '\n', n - i);
    if (!gt || (nl && nl < gt) || gt == t + i)
      return -1;
    size_t name_len = (size_t)(gt - (t + i));
    const char *end = find(gt, n - (size_t)(gt - t), "</function>");
    if (!end)
      return -1;
    call *c = &calls[nc];
    c->name = strndup(t + i, name_len);
    c->args = json_object();
    nc++;
    if (!c->name || !c->args)
      return -1;
    const json_t *props = tool_schema_props(p->tools, c->name);
    bool have_schema = props != NULL;
    size_t j = (size_t)(gt - t) + 1, fe = (size_t)(end - t);
    for (;;) {
      while (j < fe && (t[j] == ' ' || t[j] == '\n' || t[j] == '\r' || t[j] == '\t'))
        j++;
      if (j == fe)
        break;
      if (fe - j < 11 || memcmp(t + j, "<parameter=", 11) != 0)
        return -1;
      j += 11;
      const char *pg = memchr(t + j, '>', fe - j);
      if (!pg || pg == t + j)
        return -1;
      char *pname = strndup(t + j, (size_t)(pg - (t + j)));
      if (!pname)
        return -1;
      size_t vs = (size_t)(pg - t) + 1;
      const char *pe = find(t + vs, fe - vs, "</parameter>");
      if (!pe) {
        free(pname);
        return -1;
      }
      size_t ve = (size_t)(pe - t);
      if (vs < ve && t[vs] == '\n')
        vs++;
      if (ve > vs && t[ve - 1] == '\n')
        ve--;
      json_t *val = param_value(props, have_schema, pname, t + vs, ve - vs);
      int bad = !val || json_object_set_new(c->args, pname, val);
      free(pname);
      if (bad)
        return -1;
      j = (size_t)(pe - t) + 12;
    }
    i = fe + 11;
  }
  return nc > 0 ? nc : -1;
}

static int parse_json_call(const char *t, size_t n, call *c) {
  json_t *v = json_try(t, n);
  if (!json_is_object(v)) {
    json_decref(v);
    return -1;
  }
  const char *name = json_string_value(json_object_get(v, "name"));
  json_t *args = json_object_get(v, "arguments");
  if (!args)
    args = json_object_get(v, "parameters");
  json_t *obj = NULL;
  if (!args)
    obj = json_object();
  else if (json_is_object(args))
    obj = json_incref(args);
  else if (json_is_string(args)) {
    obj = json_try(json_string_value(args), json_string_length(args));
    if (!json_is_object(obj)) {
      json_decref(obj);
      obj = NULL;
    }
  }
  if (!name || !*name || !obj) {
    json_decref(obj);
    json_decref(v);
    return -1;
  }
  c->name = strdup(name);
  c->args = obj;
  json_decref(v);
  return c->name ? 1 : -1;
}

static void calls_free(call *calls, int n) {
  for (int i = 0; i < n; i++) {
    free(calls[i].name);
    json_decref(calls[i].args);
  }
}

enum { CALLS_PER_BLOCK_MAX = 16 };

/* The block (text between the tags) is complete: emit calls or content. */
static bool block_close(hx_output_parser *p, sink *s, bool closed) {
  call calls[CALLS_PER_BLOCK_MAX];
  memset(calls, 0, sizeof calls);
  int nc = -1;
  const char *t = p->block.data ? p->block.data : "";
  size_t n = p->block.len;
  if (closed) {
    if (p->cfg.family == HX_CHAT_FAMILY_QWEN_XML) {
      nc = parse_xml(p, t, n, calls, CALLS_PER_BLOCK_MAX);
      if (nc < 0) { /* a Qwen3.5 model may still write JSON */
        calls_free(calls, CALLS_PER_BLOCK_MAX);
        memset(calls, 0, sizeof calls);
        nc = parse_json_call(t, n, &calls[0]);
      }
    } else {
      nc = parse_json_call(t, n, &calls[0]);
      if (nc < 0) {
        calls_free(calls, CALLS_PER_BLOCK_MAX);
        memset(calls, 0, sizeof calls);
        nc = parse_xml(p, t, n, calls, CALLS_PER_BLOCK_MAX);
      }
    }
  }
  bool ok = true;
  if (nc < 0) {
    ok = send_text(s, HX_OUTPUT_CONTENT, TAG_TOOL, strlen(TAG_TOOL)) &&
         send_text(s, HX_OUTPUT_CONTENT, t, n) &&
         (!closed || send_text(s, HX_OUTPUT_CONTENT, TAG_TOOL_END, strlen(TAG_TOOL_END)));
    calls_free(calls, CALLS_PER_BLOCK_MAX);
  } else {
    for (int i = 0; i < nc && ok; i++) {
      char id[256];
      int idx = p->next_index++;
      snprintf(id, sizeof id, "%s%d", p->id_prefix, idx);
      char *args = json_dumps(calls[i].args, JSON_COMPACT | JSON_PRESERVE_ORDER);
      ok =
          args &&
          send(s,
               (hx_output_event){
                   .kind = HX_OUTPUT_TOOL_START, .index = idx, .id = id, .name = calls[i].name}) &&
          send(s,
               (hx_output_event){
                   .kind = HX_OUTPUT_TOOL_ARGS, .index = idx, .text = args, .len = strlen(args)}) &&
          send(s, (hx_output_event){.kind = HX_OUTPUT_TOOL_END, .index = idx});
      free(args);
    }
    calls_free(calls, nc);
  }
  hx_buf_reset(&p->block);
  p->mode = MODE_CONTENT;
  return ok;
}

/* ---- the scanner ------------------------------------------------------ */

/* Processes p->pending as far as it can be decided; at_end: nothing more
 * will come. */
static bool scan(hx_output_parser *p, sink *s, bool at_end) {
  size_t pos = 0;
  const char *t = p->pending.data;
  size_t n = p->pending.len;
  bool ok = true;
  while (ok && pos < n) {
    const char *rest = t + pos;
    size_t rn = n - pos;
    if (p->mode == MODE_REASONING) {
      const char *e = find(rest, rn, TAG_THINK_END);
      if (e) {
        ok = send_text(s, HX_OUTPUT_REASONING, rest, (size_t)(e - rest));
        pos += (size_t)(e - rest) + strlen(TAG_THINK_END);
        p->mode = MODE_CONTENT;
        continue;
      }
      size_t hold = at_end ? 0 : partial_suffix(rest, rn, TAG_THINK_END);
      ok = send_text(s, HX_OUTPUT_REASONING, rest, rn - hold);
      pos += rn - hold;
      break;
    }
    if (p->mode == MODE_TOOL) {
      const char *e = find(rest, rn, TAG_TOOL_END);
      size_t take =
          e ? (size_t)(e - rest) : rn - (at_end ? 0 : partial_suffix(rest, rn, TAG_TOOL_END));
      if (p->block.len + take > p->cfg.tool_call_max_bytes) {
        /* give up on this block: everything so far is content */
        ok = block_close(p, s, false);
        continue;
      }
      if (hx_buf_append(&p->block, rest, take) != HX_OK)
        return false;
      pos += take;
      if (e) {
        pos += strlen(TAG_TOOL_END);
        ok = block_close(p, s, true);
        continue;
      }
      break;
    }
    /* CONTENT */
    bool tools = p->cfg.parse_tools && p->cfg.family != HX_CHAT_FAMILY_GENERIC;
    const char *th = p->cfg.parse_think ? find(rest, rn, TAG_THINK) : NULL;
    const char *tc = tools ? find(rest, rn, TAG_TOOL) : NULL;
    const char *first = th && (!tc || th < tc) ? th : tc;
    if (first) {
      ok = send_text(s, HX_OUTPUT_CONTENT, rest, (size_t)(first - rest));
      if (first == th) {
        pos += (size_t)(first - rest) + strlen(TAG_THINK);
        p->mode = MODE_REASONING;
      } else {
        pos += (size_t)(first - rest) + strlen(TAG_TOOL);
        p->mode = MODE_TOOL;
      }
      continue;
    }
    size_t hold = 0;
    if (!at_end) {
      size_t h1 = p->cfg.parse_think ? partial_suffix(rest, rn, TAG_THINK) : 0;
      size_t h2 = tools ? partial_suffix(rest, rn, TAG_TOOL) : 0;
      hold = h1 > h2 ? h1 : h2;
    }
    ok = send_text(s, HX_OUTPUT_CONTENT, rest, rn - hold);
    pos += rn - hold;
    break;
  }
  hx_buf_consume(&p->pending, pos);
  return ok;
}

hx_code hx_output_parser_feed(hx_output_parser *p, const char *text, size_t len,
                              hx_output_event_fn fn, void *user, hx_err *err) {
  HX_ASSERT(p && !p->finished);
  if (p->stopped)
    return hx_err_set(err, HX_ECANCELLED, "output parser stopped by its callback");
  if (len && hx_buf_append(&p->pending, text, len) != HX_OK)
    return hx_err_set(err, HX_ENOMEM, "output parser: out of memory");
  sink s = {fn, user, p};
  if (!scan(p, &s, false))
    return p->stopped ? hx_err_set(err, HX_ECANCELLED, "output parser stopped by its callback")
                      : hx_err_set(err, HX_ENOMEM, "output parser: out of memory");
  return HX_OK;
}

hx_code hx_output_parser_finish(hx_output_parser *p, hx_output_event_fn fn, void *user,
                                hx_err *err) {
  HX_ASSERT(p && !p->finished);
  p->finished = true;
  sink s = {fn, user, p};
  bool ok = scan(p, &s, true);
  if (ok && p->mode == MODE_TOOL)
    ok = block_close(p, &s, false); /* cut off: the raw text is content */
  if (!ok)
    return p->stopped ? hx_err_set(err, HX_ECANCELLED, "output parser stopped by its callback")
                      : hx_err_set(err, HX_ENOMEM, "output parser: out of memory");
  return HX_OK;
}

/* ---- whole-message convenience ------------------------------------------ */

typedef struct collect {
  hx_buf content, reasoning;
  json_t *calls;
  bool oom;
} collect;

static int collect_event(void *user, const hx_output_event *ev) {
  collect *c = user;
  switch (ev->kind) {
  case HX_OUTPUT_CONTENT:
    c->oom |= hx_buf_append(&c->content, ev->text, ev->len) != HX_OK;
    break;
  case HX_OUTPUT_REASONING:
    c->oom |= hx_buf_append(&c->reasoning, ev->text, ev->len) != HX_OK;
    break;
  case HX_OUTPUT_TOOL_START:
    c->oom |= json_array_append_new(c->calls, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", ev->id,
                                                        "type", "function", "function", "name",
                                                        ev->name, "arguments", "")) != 0;
    break;
  case HX_OUTPUT_TOOL_ARGS: {
    json_t *fn =
        json_object_get(json_array_get(c->calls, json_array_size(c->calls) - 1), "function");
    json_t *a = json_object_get(fn, "arguments");
    if (!a) {
      c->oom = true;
      break;
    }
    size_t old = json_string_length(a);
    char *s = malloc(old + ev->len + 1);
    if (!s) {
      c->oom = true;
      break;
    }
    memcpy(s, json_string_value(a), old);
    memcpy(s + old, ev->text, ev->len);
    c->oom |= json_object_set_new(fn, "arguments", json_stringn(s, old + ev->len)) != 0;
    free(s);
    break;
  }
  case HX_OUTPUT_TOOL_END:
    break;
  }
  return 0;
}

json_t *hx_output_parse_message(const hx_output_parser_config *cfg, const char *text, size_t len,
                                hx_err *err) {
  hx_output_parser *p;
  if (hx_output_parser_init(&p, cfg, err))
    return NULL;
  collect c = {.calls = json_array()};
  hx_buf_init(&c.content, SIZE_MAX / 2);
  hx_buf_init(&c.reasoning, SIZE_MAX / 2);
  json_t *msg = NULL;
  if (c.calls && !hx_output_parser_feed(p, text, len, collect_event, &c, err) &&
      !hx_output_parser_finish(p, collect_event, &c, err) && !c.oom) {
    msg = json_object();
    int bad = !msg;
    bad = bad || json_object_set_new(msg, "role", json_string("assistant"));
    bad = bad || json_object_set_new(
                     msg, "content",
                     c.content.len || json_array_size(c.calls) == 0
                         ? json_stringn(c.content.data ? c.content.data : "", c.content.len)
                         : json_null());
    if (!bad && c.reasoning.len)
      bad = json_object_set_new(msg, "reasoning_content",
                                json_stringn(c.reasoning.data, c.reasoning.len));
    if (!bad && json_array_size(c.calls))
      bad = json_object_set(msg, "tool_calls", c.calls);
    if (bad) {
      json_decref(msg);
      msg = NULL;
      hx_err_set(err, HX_ENOMEM, "out of memory");
    }
  } else if (c.oom || !c.calls) {
    hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  json_decref(c.calls);
  hx_buf_free(&c.content);
  hx_buf_free(&c.reasoning);
  hx_output_parser_free(p);
  return msg;
}
