/* chat_template.c — chat templates on top of the Jinja interpreter: builds
 * the context transformers' apply_chat_template builds (messages, tools,
 * add_generation_prompt, special tokens, kwargs), loads template sources from
 * files, and tells which tool-call dialect a template teaches. */
#include "engine/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/json.h"
#include "engine/gguf.h"
#include "engine/jinja.h"

struct hx_chat_template {
  hx_jinja_template *jt;
  hx_chat_family family;
};

hx_code hx_chat_template_init(hx_chat_template **out, const char *src, size_t len, const char *name,
                              hx_err *err) {
  HX_ASSERT(out);
  *out = NULL;
  hx_chat_template *t = calloc(1, sizeof *t);
  if (!t)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  hx_jinja_options opts = {.trim_blocks = true, .lstrip_blocks = true};
  hx_code rc = hx_jinja_compile(&t->jt, src, len, name, &opts, err);
  if (rc != HX_OK) {
    free(t);
    return rc;
  }
  /* The dialect is the one the template's tool prompt teaches. */
  bool xml = memmem(src, len, "<function=", 10) != NULL;
  bool json = memmem(src, len, "<tool_call>", 11) != NULL;
  t->family = xml    ? HX_CHAT_FAMILY_QWEN_XML
              : json ? HX_CHAT_FAMILY_QWEN3_JSON
                     : HX_CHAT_FAMILY_GENERIC;
  *out = t;
  return HX_OK;
}

void hx_chat_template_free(hx_chat_template *t) {
  if (!t)
    return;
  hx_jinja_template_free(t->jt);
  free(t);
}

hx_chat_family hx_chat_template_family(const hx_chat_template *t) { return t->family; }

/* transformers' _alias_reasoning_fields: the first non-null of
 * reasoning_content / thinking / reasoning becomes both "thinking" (first key
 * unless present) and "reasoning_content" (appended unless present). */
static json_t *message_alias_reasoning(json_t *m) {
  static const char *const fields[] = {"reasoning_content", "thinking", "reasoning"};
  json_t *r = NULL;
  for (size_t i = 0; i < 3 && !r; i++) {
    json_t *v = json_object_get(m, fields[i]);
    if (v && !json_is_null(v))
      r = v;
  }
  if (!r)
    return json_incref(m);
  json_t *out = json_object();
  if (!out)
    return NULL;
  int bad = json_object_set(out, "thinking", r);
  const char *k;
  json_t *v;
  json_object_foreach(m, k, v) bad |= json_object_set(out, k, v);
  bad |= json_object_set(out, "reasoning_content", r);
  if (bad) {
    json_decref(out);
    return NULL;
  }
  return out;
}

/* The messages as the template sees them: reasoning aliased, and with
 * parse_args, string function.arguments holding a JSON object parsed. */
static json_t *messages_prepare(const json_t *messages, bool parse_args) {
  json_t *copy = json_array();
  if (!copy)
    return NULL;
  size_t i;
  json_t *m;
  json_array_foreach(messages, i, m) {
    json_t *a = json_is_object(m) ? message_alias_reasoning(m) : json_incref(m);
    if (!a || json_array_append_new(copy, a)) {
      json_decref(copy);
      return NULL;
    }
  }
  if (!parse_args)
    return copy;
  json_t *deep = json_deep_copy(copy);
  json_decref(copy);
  if (!deep)
    return NULL;
  copy = deep;
  json_array_foreach(copy, i, m) {
    json_t *calls = json_object_get(m, "tool_calls");
    size_t k;
    json_t *c;
    json_array_foreach(calls, k, c) {
      json_t *fn = json_object_get(c, "function");
      json_t *args = json_object_get(fn, "arguments");
      if (!json_is_string(args))
        continue;
      json_t *parsed =
          json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, NULL);
      if (json_is_object(parsed))
        json_object_set_new(fn, "arguments", parsed);
      else
        json_decref(parsed);
    }
  }
  return copy;
}

hx_code hx_chat_template_render(const hx_chat_template *t, const hx_chat_render_args *args,
                                char **out, size_t *out_len, hx_err *err) {
  HX_ASSERT(t && args && out);
  *out = NULL;
  if (!json_is_array(args->messages))
    return hx_err_set(err, HX_EINVAL, "messages must be an array");
  if (args->tools && !json_is_array(args->tools) && !json_is_null(args->tools))
    return hx_err_set(err, HX_EINVAL, "tools must be an array");
  if (args->kwargs && !json_is_object(args->kwargs))
    return hx_err_set(err, HX_EINVAL, "template kwargs must be an object");
  json_t *ctx = json_object();
  if (!ctx)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  json_t *msgs = messages_prepare(args->messages, args->tool_arguments_parse);
  int bad = !msgs;
  bad |= json_object_set_new(ctx, "messages", msgs);
  /* transformers always passes tools and documents, None when absent */
  bad |= json_object_set_new(ctx, "tools",
                             args->tools ? json_incref((json_t *)args->tools) : json_null());
  bad |= json_object_set_new(ctx, "documents", json_null());
  bad |=
      json_object_set_new(ctx, "add_generation_prompt", json_boolean(args->add_generation_prompt));
  if (args->bos_token)
    bad |= json_object_set_new(ctx, "bos_token", json_string(args->bos_token));
  if (args->eos_token)
    bad |= json_object_set_new(ctx, "eos_token", json_string(args->eos_token));
  if (args->kwargs)
    bad |= json_object_update(ctx, (json_t *)args->kwargs);
  if (bad) {
    json_decref(ctx);
    return hx_err_set(err, HX_ENOMEM, "building the template context failed");
  }
  hx_jinja_render_opts ro = {.now_unix_s = args->now_unix_s};
  ro.limits.steps_max = args->limits.steps_max;
  ro.limits.loop_iters_max = args->limits.loop_iters_max;
  ro.limits.depth_max = args->limits.depth_max;
  ro.limits.output_bytes_max = args->limits.output_bytes_max;
  hx_code rc = hx_jinja_render(t->jt, ctx, &ro, out, out_len, err);
  json_decref(ctx);
  return rc;
}

bool hx_chat_prompt_think_open(const char *prompt, size_t len) {
  const char *last = NULL;
  for (const char *p = prompt; (p = memmem(p, len - (size_t)(p - prompt), "<think>", 7)); p += 7)
    last = p;
  if (!last)
    return false;
  size_t rest = len - (size_t)(last - prompt);
  return memmem(last, rest, "</think>", 8) == NULL;
}

static hx_code read_file(const char *path, char **out, size_t *len, hx_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return hx_err_set(err, HX_ENOTFOUND, "%s: cannot open", path);
  hx_buf b;
  hx_buf_init(&b, (size_t)64 << 20);
  char tmp[65536];
  size_t n;
  hx_code rc = HX_OK;
  while (rc == HX_OK && (n = fread(tmp, 1, sizeof tmp, f)) > 0)
    rc = hx_buf_append(&b, tmp, n);
  bool ioerr = ferror(f);
  fclose(f);
  if (rc != HX_OK || ioerr) {
    hx_buf_free(&b);
    return hx_err_set(err, rc ? rc : HX_EIO, "%s: %s", path, rc ? "file too large" : "read error");
  }
  *len = b.len;
  *out = b.data ? hx_buf_detach(&b) : strdup("");
  hx_buf_free(&b);
  return *out ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
}

static hx_code from_tokenizer_config(const char *path, char **src, size_t *len, hx_err *err) {
  char *text;
  size_t n;
  hx_code rc = read_file(path, &text, &n, err);
  if (rc)
    return rc;
  json_t *cfg = hx_json_parse(text, n, (hx_json_limits){(size_t)64 << 20, 64}, err);
  free(text);
  if (!cfg)
    return hx_err_wrap(err, "%s", path);
  json_t *ct = json_object_get(cfg, "chat_template");
  const char *s = NULL;
  size_t sl = 0;
  if (json_is_string(ct)) {
    s = json_string_value(ct);
    sl = json_string_length(ct);
  } else if (json_is_array(ct)) {
    size_t i;
    json_t *e;
    json_array_foreach(ct, i, e) {
      json_t *nm = json_object_get(e, "name"), *tp = json_object_get(e, "template");
      if (json_is_string(nm) && !strcmp(json_string_value(nm), "default") && json_is_string(tp)) {
        s = json_string_value(tp);
        sl = json_string_length(tp);
      }
    }
  }
  if (!s) {
    json_decref(cfg);
    return hx_err_set(err, HX_ENOTFOUND, "%s: no \"chat_template\"", path);
  }
  *src = malloc(sl + 1);
  if (*src) {
    memcpy(*src, s, sl);
    (*src)[sl] = 0;
    *len = sl;
  }
  json_decref(cfg);
  return *src ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
}

hx_code hx_chat_template_source_load(const char *path, char **src_out, size_t *len_out,
                                     hx_err *err) {
  struct stat st;
  if (stat(path, &st) != 0)
    return hx_err_set(err, HX_ENOTFOUND, "%s: no such file or directory", path);
  if (S_ISDIR(st.st_mode)) {
    char p[4096];
    snprintf(p, sizeof p, "%s/chat_template.jinja", path);
    if (stat(p, &st) == 0)
      return read_file(p, src_out, len_out, err);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", path);
    if (stat(p, &st) == 0)
      return from_tokenizer_config(p, src_out, len_out, err);
    return hx_err_set(err, HX_ENOTFOUND,
                      "%s: neither chat_template.jinja nor tokenizer_config.json found", path);
  }
  size_t n = strlen(path);
  if (n >= 5 && !strcmp(path + n - 5, ".gguf")) {
    gguf_file *g;
    hx_code rc = gguf_open(path, &g, err);
    if (rc)
      return rc;
    hx_slice s = {0};
    rc = gguf_get_str(g, "tokenizer.chat_template", true, &s, err);
    if (rc == HX_OK) {
      *src_out = malloc(s.len + 1);
      if (*src_out) {
        memcpy(*src_out, s.ptr, s.len);
        (*src_out)[s.len] = 0;
        *len_out = s.len;
      } else {
        rc = hx_err_set(err, HX_ENOMEM, "out of memory");
      }
    }
    gguf_close(g);
    return rc;
  }
  if (n >= 5 && !strcmp(path + n - 5, ".json"))
    return from_tokenizer_config(path, src_out, len_out, err);
  return read_file(path, src_out, len_out, err);
}
