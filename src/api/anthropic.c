/* anthropic.c — Anthropic Messages ⇄ OpenAI chat completions (anthropic.h).
 *
 * Request side: one pass over the Anthropic body building the OpenAI one.
 * Response side: a small state machine over upstream chunks; at most one
 * content block is open at a time, blocks are numbered in the order opened,
 * and text is held back only as long as it could still become a stop
 * sequence. */
#include "api/anthropic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"

/* ---------------------------------------------------------------- request */

static hx_code anth_text_of(const json_t *content, const char *where, hx_buf *out, hx_err *err) {
  /* string, or array of blocks of which the text ones count (others ignored) */
  if (json_is_string(content))
    return hx_buf_append(out, json_string_value(content), json_string_length(content)) == HX_OK
               ? HX_OK
               : hx_err_set(err, HX_ETOOLARGE, "%s: text too large", where);
  if (!json_is_array(content))
    return hx_err_set(err, HX_EINVAL, "%s: must be a string or an array of content blocks, not %s",
                      where, hx_json_type_name(content));
  size_t i;
  json_t *b;
  json_array_foreach(content, i, b) {
    if (!json_is_object(b))
      return hx_err_set(err, HX_EINVAL, "%s[%zu]: content block must be an object", where, i);
    const char *type = json_string_value(json_object_get(b, "type"));
    if (!type)
      return hx_err_set(err, HX_EINVAL, "%s[%zu]: \"type\" must be a string", where, i);
    if (strcmp(type, "text") != 0)
      continue;
    const json_t *t = json_object_get(b, "text");
    if (!json_is_string(t))
      return hx_err_set(err, HX_EINVAL, "%s[%zu]: \"text\" must be a string", where, i);
    if ((out->len > 0 && hx_buf_append_char(out, '\n') != HX_OK) ||
        hx_buf_append(out, json_string_value(t), json_string_length(t)) != HX_OK)
      return hx_err_set(err, HX_ETOOLARGE, "%s: text too large", where);
  }
  return HX_OK;
}

static hx_code anth_image_part(const json_t *b, const char *where, json_t **out, hx_err *err) {
  const json_t *src = json_object_get(b, "source");
  const char *st = json_string_value(json_object_get(src, "type"));
  if (!json_is_object(src) || !st)
    return hx_err_set(err, HX_EINVAL, "%s: image needs a \"source\" object with a \"type\"", where);
  char *url = NULL;
  if (strcmp(st, "base64") == 0) {
    const char *mt = json_string_value(json_object_get(src, "media_type"));
    const char *data = json_string_value(json_object_get(src, "data"));
    if (!mt || !data)
      return hx_err_set(err, HX_EINVAL, "%s: base64 image needs \"media_type\" and \"data\"",
                        where);
    if (asprintf(&url, "data:%s;base64,%s", mt, data) < 0)
      return hx_err_set(err, HX_ENOMEM, "%s: out of memory", where);
  } else if (strcmp(st, "url") == 0) {
    const char *u = json_string_value(json_object_get(src, "url"));
    if (!u)
      return hx_err_set(err, HX_EINVAL, "%s: url image needs \"url\"", where);
    url = strdup(u);
  } else {
    return hx_err_set(err, HX_EINVAL, "%s: unknown image source type \"%s\"", where, st);
  }
  if (!url)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", where);
  *out = json_pack("{s:s, s:{s:s}}", "type", "image_url", "image_url", "url", url);
  free(url);
  return *out ? HX_OK : hx_err_set(err, HX_ENOMEM, "%s: out of memory", where);
}

/* Appends OpenAI messages for one Anthropic user message: tool results
 * become role "tool" messages (first, so they follow the assistant's tool
 * calls), the rest one user message. */
static hx_code anth_user_msg(const json_t *content, const char *where, json_t *msgs, hx_err *err) {
  if (json_is_string(content))
    return json_array_append_new(msgs,
                                 json_pack("{s:s, s:O}", "role", "user", "content", content)) == 0
               ? HX_OK
               : hx_err_set(err, HX_ENOMEM, "out of memory");
  if (!json_is_array(content))
    return hx_err_set(err, HX_EINVAL, "%s: must be a string or an array of content blocks, not %s",
                      where, hx_json_type_name(content));
  json_t *parts = json_array();
  bool has_image = false;
  hx_code rc = HX_OK;
  size_t i;
  json_t *b;
  char w[160];
  json_array_foreach(content, i, b) {
    snprintf(w, sizeof w, "%s[%zu]", where, i);
    const char *type = json_is_object(b) ? json_string_value(json_object_get(b, "type")) : NULL;
    if (!type) {
      rc = hx_err_set(err, HX_EINVAL, "%s: content block needs a string \"type\"", w);
      break;
    }
    if (strcmp(type, "text") == 0) {
      const json_t *t = json_object_get(b, "text");
      if (!json_is_string(t)) {
        rc = hx_err_set(err, HX_EINVAL, "%s: \"text\" must be a string", w);
        break;
      }
      json_array_append_new(parts, json_pack("{s:s, s:O}", "type", "text", "text", t));
    } else if (strcmp(type, "image") == 0) {
      json_t *p = NULL;
      if ((rc = anth_image_part(b, w, &p, err)) != HX_OK)
        break;
      json_array_append_new(parts, p);
      has_image = true;
    } else if (strcmp(type, "tool_result") == 0) {
      const char *id = json_string_value(json_object_get(b, "tool_use_id"));
      if (!id) {
        rc = hx_err_set(err, HX_EINVAL, "%s: tool_result needs a string \"tool_use_id\"", w);
        break;
      }
      hx_buf text;
      hx_buf_init(&text, 64u << 20);
      const json_t *c = json_object_get(b, "content");
      if (c && !json_is_null(c))
        rc = anth_text_of(c, w, &text, err);
      if (rc == HX_OK && json_is_true(json_object_get(b, "is_error"))) {
        /* keep the signal visible to the model */
        hx_buf tmp;
        hx_buf_init(&tmp, 64u << 20);
        hx_buf_printf(&tmp, "Error: %s", text.data ? text.data : "");
        hx_buf_free(&text);
        text = tmp;
      }
      if (rc == HX_OK)
        json_array_append_new(msgs, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", id,
                                              "content", text.data ? text.data : ""));
      hx_buf_free(&text);
      if (rc != HX_OK)
        break;
    } else if (strcmp(type, "document") == 0) {
      const json_t *src = json_object_get(b, "source");
      const char *st = json_string_value(json_object_get(src, "type"));
      const json_t *d = json_object_get(src, "data");
      if (st && strcmp(st, "text") == 0 && json_is_string(d))
        json_array_append_new(parts, json_pack("{s:s, s:O}", "type", "text", "text", d));
    }
    /* other block types (server tool results, search results…) are ignored */
  }
  if (rc == HX_OK && json_array_size(parts) > 0) {
    json_t *m;
    if (has_image) {
      m = json_pack("{s:s, s:O}", "role", "user", "content", parts);
    } else { /* plain text: one string, which every chat template handles */
      hx_buf t;
      hx_buf_init(&t, 64u << 20);
      size_t k;
      json_t *p;
      json_array_foreach(parts, k, p) {
        if (k > 0)
          hx_buf_append_char(&t, '\n');
        const json_t *s = json_object_get(p, "text");
        hx_buf_append(&t, json_string_value(s), json_string_length(s));
      }
      m = json_pack("{s:s, s:s}", "role", "user", "content", t.data ? t.data : "");
      hx_buf_free(&t);
    }
    json_array_append_new(msgs, m);
  }
  json_decref(parts);
  return rc;
}

static hx_code anth_assistant_msg(const json_t *content, const char *where, json_t *msgs,
                                  hx_err *err) {
  if (json_is_string(content))
    return json_array_append_new(
               msgs, json_pack("{s:s, s:O}", "role", "assistant", "content", content)) == 0
               ? HX_OK
               : hx_err_set(err, HX_ENOMEM, "out of memory");
  if (!json_is_array(content))
    return hx_err_set(err, HX_EINVAL, "%s: must be a string or an array of content blocks, not %s",
                      where, hx_json_type_name(content));
  hx_buf text, think;
  hx_buf_init(&text, 64u << 20);
  hx_buf_init(&think, 64u << 20);
  json_t *calls = json_array();
  hx_code rc = HX_OK;
  size_t i;
  json_t *b;
  char w[160];
  json_array_foreach(content, i, b) {
    snprintf(w, sizeof w, "%s[%zu]", where, i);
    const char *type = json_is_object(b) ? json_string_value(json_object_get(b, "type")) : NULL;
    if (!type) {
      rc = hx_err_set(err, HX_EINVAL, "%s: content block needs a string \"type\"", w);
      break;
    }
    if (strcmp(type, "text") == 0) {
      const json_t *t = json_object_get(b, "text");
      if (!json_is_string(t)) {
        rc = hx_err_set(err, HX_EINVAL, "%s: \"text\" must be a string", w);
        break;
      }
      hx_buf_append(&text, json_string_value(t), json_string_length(t));
    } else if (strcmp(type, "thinking") == 0) {
      const json_t *t = json_object_get(b, "thinking");
      if (json_is_string(t))
        hx_buf_append(&think, json_string_value(t), json_string_length(t));
    } else if (strcmp(type, "tool_use") == 0 || strcmp(type, "server_tool_use") == 0) {
      const char *id = json_string_value(json_object_get(b, "id"));
      const char *name = json_string_value(json_object_get(b, "name"));
      const json_t *input = json_object_get(b, "input");
      if (!id || !name) {
        rc = hx_err_set(err, HX_EINVAL, "%s: tool_use needs string \"id\" and \"name\"", w);
        break;
      }
      char *args = input ? json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
      if (!args) {
        rc = hx_err_set(err, HX_ENOMEM, "%s: out of memory", w);
        break;
      }
      json_array_append_new(calls,
                            json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function",
                                      "function", "name", name, "arguments", args));
      free(args);
    }
    /* redacted_thinking and unknown blocks are dropped */
  }
  if (rc == HX_OK) {
    json_t *m = json_pack("{s:s, s:s}", "role", "assistant", "content", text.data ? text.data : "");
    if (think.len > 0)
      json_object_set_new(m, "reasoning_content", json_string(think.data));
    if (json_array_size(calls) > 0)
      json_object_set(m, "tool_calls", calls);
    json_array_append_new(msgs, m);
  }
  json_decref(calls);
  hx_buf_free(&text);
  hx_buf_free(&think);
  return rc;
}

static hx_code anth_tools(const json_t *tools, json_t *out, hx_err *err) {
  if (!json_is_array(tools))
    return hx_err_set(err, HX_EINVAL, "\"tools\" must be an array, not %s",
                      hx_json_type_name(tools));
  json_t *arr = json_array();
  size_t i;
  json_t *t;
  json_array_foreach(tools, i, t) {
    if (!json_is_object(t)) {
      json_decref(arr);
      return hx_err_set(err, HX_EINVAL, "tools[%zu]: must be an object", i);
    }
    const char *name = json_string_value(json_object_get(t, "name"));
    const json_t *schema = json_object_get(t, "input_schema");
    if (!schema)
      continue; /* server tools (web_search_…, bash_…) have no schema here */
    if (!name || !json_is_object(schema)) {
      json_decref(arr);
      return hx_err_set(err, HX_EINVAL,
                        "tools[%zu]: needs a string \"name\" and an object \"input_schema\"", i);
    }
    json_t *fn = json_pack("{s:s, s:O}", "name", name, "parameters", schema);
    const json_t *d = json_object_get(t, "description");
    if (json_is_string(d))
      json_object_set(fn, "description", (json_t *)d);
    json_array_append_new(arr, json_pack("{s:s, s:o}", "type", "function", "function", fn));
  }
  if (json_array_size(arr) > 0)
    json_object_set(out, "tools", arr);
  json_decref(arr);
  return HX_OK;
}

static hx_code anth_tool_choice(const json_t *tc, json_t *out, hx_err *err) {
  const char *type = json_is_object(tc) ? json_string_value(json_object_get(tc, "type")) : NULL;
  if (!type)
    return hx_err_set(err, HX_EINVAL, "\"tool_choice\" must be an object with a string \"type\"");
  if (strcmp(type, "auto") == 0) {
    json_object_set_new(out, "tool_choice", json_string("auto"));
  } else if (strcmp(type, "any") == 0) {
    json_object_set_new(out, "tool_choice", json_string("required"));
  } else if (strcmp(type, "none") == 0) {
    json_object_set_new(out, "tool_choice", json_string("none"));
  } else if (strcmp(type, "tool") == 0) {
    const char *name = json_string_value(json_object_get(tc, "name"));
    if (!name)
      return hx_err_set(err, HX_EINVAL, "\"tool_choice\" of type \"tool\" needs a \"name\"");
    json_object_set_new(out, "tool_choice",
                        json_pack("{s:s, s:{s:s}}", "type", "function", "function", "name", name));
  } else {
    return hx_err_set(err, HX_EINVAL,
                      "\"tool_choice.type\" must be auto, any, tool or none, not \"%s\"", type);
  }
  if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")))
    json_object_set_new(out, "parallel_tool_calls", json_false());
  return HX_OK;
}

static hx_code anth_number(const json_t *req, const char *key, double lo, double hi, json_t *out,
                           hx_err *err) {
  const json_t *v = json_object_get(req, key);
  if (!v || json_is_null(v))
    return HX_OK;
  if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
    return hx_err_set(err, HX_EINVAL, "\"%s\" must be a number in [%g, %g]", key, lo, hi);
  json_object_set(out, key, (json_t *)v);
  return HX_OK;
}

static hx_code anth_messages(const json_t *req, json_t *msgs, hx_buf *system, hx_err *err) {
  const json_t *arr = json_object_get(req, "messages");
  if (!json_is_array(arr))
    return hx_err_set(err, HX_EINVAL, "\"messages\" must be an array");
  size_t i;
  json_t *m;
  char w[96];
  json_array_foreach(arr, i, m) {
    snprintf(w, sizeof w, "messages[%zu].content", i);
    const char *role = json_is_object(m) ? json_string_value(json_object_get(m, "role")) : NULL;
    if (!role)
      return hx_err_set(err, HX_EINVAL, "messages[%zu]: needs a string \"role\"", i);
    const json_t *content = json_object_get(m, "content");
    if (!content)
      return hx_err_set(err, HX_EINVAL, "messages[%zu]: needs \"content\"", i);
    hx_code rc;
    if (strcmp(role, "user") == 0) {
      rc = anth_user_msg(content, w, msgs, err);
    } else if (strcmp(role, "assistant") == 0) {
      rc = anth_assistant_msg(content, w, msgs, err);
    } else if (strcmp(role, "system") == 0) {
      if (system->len > 0 && hx_buf_append(system, "\n\n", 2) != HX_OK)
        return hx_err_set(err, HX_ETOOLARGE, "system prompt too large");
      rc = anth_text_of(content, w, system, err);
    } else {
      return hx_err_set(err, HX_EINVAL,
                        "messages[%zu].role must be \"user\" or \"assistant\", not \"%s\"", i,
                        role);
    }
    if (rc != HX_OK)
      return rc;
  }
  return HX_OK;
}

static hx_code anth_stop_and_thinking(const json_t *req, json_t *out, api_anth_info *info,
                                      hx_err *err) {
  const json_t *ss = json_object_get(req, "stop_sequences");
  if (ss && !json_is_null(ss)) {
    if (!json_is_array(ss) || json_array_size(ss) > API_ANTH_MAX_STOP_SEQUENCES)
      return hx_err_set(err, HX_EINVAL, "\"stop_sequences\" must be an array of at most %d strings",
                        API_ANTH_MAX_STOP_SEQUENCES);
    size_t i;
    json_t *s;
    json_array_foreach(ss, i, s) {
      if (!json_is_string(s) || json_string_length(s) == 0 ||
          json_string_length(s) > API_ANTH_MAX_STOP_BYTES)
        return hx_err_set(err, HX_EINVAL,
                          "stop_sequences[%zu] must be a non-empty string of at most %d bytes", i,
                          API_ANTH_MAX_STOP_BYTES);
      memcpy(info->stop[info->n_stop], json_string_value(s), json_string_length(s) + 1);
      info->n_stop++;
    }
  }
  const json_t *th = json_object_get(req, "thinking");
  if (th && !json_is_null(th)) {
    const char *t = json_string_value(json_object_get(th, "type"));
    if (!json_is_object(th) || !t)
      return hx_err_set(err, HX_EINVAL, "\"thinking\" must be an object with a string \"type\"");
    if (strcmp(t, "enabled") == 0 || strcmp(t, "adaptive") == 0)
      info->thinking = true;
    else if (strcmp(t, "disabled") == 0)
      info->thinking = false;
    else
      return hx_err_set(err, HX_EINVAL,
                        "\"thinking.type\" must be enabled, disabled or adaptive, not \"%s\"", t);
    info->thinking_set = true;
    json_object_set_new(out, "chat_template_kwargs",
                        json_pack("{s:b}", "enable_thinking", info->thinking));
  }
  return HX_OK;
}

hx_code api_anth_request_translate(const json_t *req, json_t **out, api_anth_info *info,
                                   hx_err *err) {
  *out = NULL;
  memset(info, 0, sizeof *info);
  if (!json_is_object(req))
    return hx_err_set(err, HX_EINVAL, "request body must be a JSON object");
  const char *model = json_string_value(json_object_get(req, "model"));
  if (!model || !*model || strlen(model) >= sizeof info->model)
    return hx_err_set(err, HX_EINVAL, "\"model\" must be a non-empty string");
  snprintf(info->model, sizeof info->model, "%s", model);
  const json_t *mt = json_object_get(req, "max_tokens");
  if (!json_is_integer(mt) || json_integer_value(mt) < 1)
    return hx_err_set(err, HX_EINVAL, "\"max_tokens\" must be an integer ≥ 1");
  const json_t *st = json_object_get(req, "stream");
  if (st && !json_is_null(st) && !json_is_boolean(st))
    return hx_err_set(err, HX_EINVAL, "\"stream\" must be a boolean");
  info->stream = json_is_true(st);

  json_t *o = json_pack("{s:s, s:O, s:b, s:{s:b}}", "model", model, "max_tokens", mt, "stream", 1,
                        "stream_options", "include_usage", 1);
  json_t *msgs = json_array();
  hx_buf system;
  hx_buf_init(&system, 64u << 20);
  hx_code rc = HX_OK;
  const json_t *sys = json_object_get(req, "system");
  if (sys && !json_is_null(sys))
    rc = anth_text_of(sys, "system", &system, err);
  if (rc == HX_OK)
    rc = anth_messages(req, msgs, &system, err);
  if (rc == HX_OK && system.len > 0)
    json_array_insert_new(msgs, 0,
                          json_pack("{s:s, s:s}", "role", "system", "content", system.data));
  hx_buf_free(&system);
  json_object_set_new(o, "messages", msgs);
  if (rc == HX_OK && json_object_get(req, "tools") && !json_is_null(json_object_get(req, "tools")))
    rc = anth_tools(json_object_get(req, "tools"), o, err);
  if (rc == HX_OK && json_object_get(req, "tool_choice") &&
      !json_is_null(json_object_get(req, "tool_choice")))
    rc = anth_tool_choice(json_object_get(req, "tool_choice"), o, err);
  if (rc == HX_OK)
    rc = anth_number(req, "temperature", 0, 2, o, err);
  if (rc == HX_OK)
    rc = anth_number(req, "top_p", 0, 1, o, err);
  if (rc == HX_OK)
    rc = anth_number(req, "top_k", 0, 1e9, o, err);
  if (rc == HX_OK)
    rc = anth_stop_and_thinking(req, o, info, err);
  const char *user =
      json_string_value(json_object_get(json_object_get(req, "metadata"), "user_id"));
  if (rc == HX_OK && user)
    json_object_set_new(o, "user", json_string(user));
  if (rc != HX_OK) {
    json_decref(o);
    return rc;
  }
  *out = o;
  return HX_OK;
}

/* ----------------------------------------------------------------- errors */

const char *api_anth_error_type(int status) {
  switch (status) {
  case 400:
  case 405:
  case 415:
  case 422:
  case 431:
    return "invalid_request_error";
  case 401:
    return "authentication_error";
  case 402:
    return "billing_error";
  case 403:
    return "permission_error";
  case 404:
    return "not_found_error";
  case 408:
  case 504:
    return "timeout_error";
  case 413:
    return "request_too_large";
  case 429:
    return "rate_limit_error";
  case 503:
  case 507:
  case 529:
    return "overloaded_error";
  default:
    return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
  }
}

json_t *api_anth_error_json(const char *type, const char *message) {
  return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", type, "message",
                   message ? message : "");
}

json_t *api_anth_model_json(const char *id, long created_s) {
  char iso[32] = "1970-01-01T00:00:00Z";
  time_t t = (time_t)created_s;
  struct tm tm;
  if (gmtime_r(&t, &tm))
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json_pack("{s:s, s:s, s:s, s:s}", "type", "model", "id", id, "display_name", id,
                   "created_at", iso);
}

/* ----------------------------------------------------------------- stream */

typedef enum { BLK_NONE, BLK_TEXT, BLK_THINKING, BLK_TOOL } blk_kind;

struct api_anth_stream {
  api_anth_info info;
  char msg_id[80];
  api_anth_emit_fn emit;
  void *ud;
  bool started, finished, failed_emit;
  blk_kind open;
  int n_blocks;              /* blocks opened so far (next index) */
  int open_tool_idx;         /* upstream tool_calls index of the open tool block */
  json_t *content;           /* accumulated blocks */
  hx_buf pending;            /* text held back: could be the start of a stop sequence */
  hx_buf tool_args;          /* arguments of the open tool block */
  const char *finish_reason; /* static string or NULL */
  int stop_hit;              /* index of the matched stop sequence or -1 */
  long in_tok, out_tok, cached_tok;
  bool usage_seen;
  long deltas; /* content deltas seen, a fallback count of output tokens */
};

api_anth_stream *api_anth_stream_new(const api_anth_info *info, const char *msg_id,
                                     api_anth_emit_fn emit, void *ud) {
  api_anth_stream *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->info = *info;
  snprintf(s->msg_id, sizeof s->msg_id, "%s", msg_id);
  s->emit = emit;
  s->ud = ud;
  s->content = json_array();
  hx_buf_init(&s->pending, 1u << 20);
  hx_buf_init(&s->tool_args, 16u << 20);
  s->stop_hit = -1;
  s->open_tool_idx = -1;
  return s;
}

void api_anth_stream_free(api_anth_stream *s) {
  if (!s)
    return;
  json_decref(s->content);
  hx_buf_free(&s->pending);
  hx_buf_free(&s->tool_args);
  free(s);
}

void api_anth_stream_set_input_tokens(api_anth_stream *s, long n) { s->in_tok = n; }

void api_anth_stream_usage(const api_anth_stream *s, long *input, long *output, long *cached) {
  *input = s->in_tok;
  *output = s->usage_seen ? s->out_tok : s->deltas;
  *cached = s->cached_tok;
}

bool api_anth_stream_has_finish(const api_anth_stream *s) {
  return s->finish_reason != NULL || s->stop_hit >= 0;
}

/* Emits one event; steals ev. */
static hx_code anth_emit(api_anth_stream *s, const char *name, json_t *ev, hx_err *err) {
  if (!ev)
    return hx_err_set(err, HX_ENOMEM, "out of memory building a stream event");
  int stop = s->emit ? s->emit(s->ud, name, ev) : 0;
  json_decref(ev);
  if (stop) {
    s->failed_emit = true;
    return hx_err_set(err, HX_ECANCELLED, "client went away");
  }
  return HX_OK;
}

static json_t *anth_usage(const api_anth_stream *s) {
  return json_pack("{s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)s->in_tok, "output_tokens",
                   (json_int_t)(s->usage_seen ? s->out_tok : s->deltas), "cache_read_input_tokens",
                   (json_int_t)s->cached_tok, "cache_creation_input_tokens", (json_int_t)0);
}

hx_code api_anth_stream_start(api_anth_stream *s, hx_err *err) {
  if (s->started)
    return HX_OK;
  s->started = true;
  json_t *msg = json_pack("{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:o}", "id", s->msg_id, "type",
                          "message", "role", "assistant", "model", s->info.model, "content",
                          "stop_reason", "stop_sequence", "usage", anth_usage(s));
  return anth_emit(s, "message_start",
                   json_pack("{s:s, s:o}", "type", "message_start", "message", msg), err);
}

static json_t *anth_last_block(api_anth_stream *s) {
  return json_array_get(s->content, json_array_size(s->content) - 1);
}

static hx_code anth_close_block(api_anth_stream *s, hx_err *err) {
  if (s->open == BLK_NONE)
    return HX_OK;
  int idx = s->n_blocks - 1;
  hx_code rc = HX_OK;
  json_t *blk = anth_last_block(s);
  if (s->open == BLK_THINKING) {
    /* Opaque signature so clients can echo the block back (we accept it). */
    char sig[96];
    snprintf(sig, sizeof sig, "helexa-%s-%d", s->msg_id, idx);
    json_object_set_new(blk, "signature", json_string(sig));
    rc = anth_emit(s, "content_block_delta",
                   json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_delta", "index",
                             idx, "delta", "type", "signature_delta", "signature", sig),
                   err);
  } else if (s->open == BLK_TOOL) {
    json_error_t je;
    json_t *input = s->tool_args.len
                        ? json_loadb(s->tool_args.data, s->tool_args.len, JSON_DECODE_ANY, &je)
                        : json_object();
    if (!json_is_object(input)) { /* keep what the model wrote, visibly */
      json_decref(input);
      input = json_pack("{s:s%}", "_raw_arguments", s->tool_args.data ? s->tool_args.data : "",
                        s->tool_args.len);
    }
    json_object_set_new(blk, "input", input);
    hx_buf_reset(&s->tool_args);
  }
  s->open = BLK_NONE;
  s->open_tool_idx = -1;
  if (rc == HX_OK)
    rc = anth_emit(s, "content_block_stop",
                   json_pack("{s:s, s:i}", "type", "content_block_stop", "index", idx), err);
  return rc;
}

/* Opens a block (closing the open one); blk is stolen. */
static hx_code anth_open_block(api_anth_stream *s, blk_kind kind, json_t *blk, hx_err *err) {
  hx_code rc = anth_close_block(s, err);
  if (rc != HX_OK) {
    json_decref(blk);
    return rc;
  }
  json_array_append(s->content, blk);
  int idx = s->n_blocks++;
  s->open = kind;
  json_t *shown = json_deep_copy(blk);
  json_decref(blk);
  return anth_emit(s, "content_block_start",
                   json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index", idx,
                             "content_block", shown),
                   err);
}

static hx_code anth_text_out(api_anth_stream *s, const char *p, size_t n, hx_err *err) {
  if (n == 0)
    return HX_OK;
  hx_code rc = HX_OK;
  if (s->open != BLK_TEXT)
    rc = anth_open_block(s, BLK_TEXT, json_pack("{s:s, s:s}", "type", "text", "text", ""), err);
  if (rc != HX_OK)
    return rc;
  json_t *blk = anth_last_block(s);
  const json_t *old = json_object_get(blk, "text");
  size_t ol = json_string_length(old);
  char *joined = malloc(ol + n + 1);
  if (!joined)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  memcpy(joined, json_string_value(old), ol);
  memcpy(joined + ol, p, n);
  json_object_set_new(blk, "text", json_stringn_nocheck(joined, ol + n));
  free(joined);
  return anth_emit(s, "content_block_delta",
                   json_pack("{s:s, s:i, s:{s:s, s:s%}}", "type", "content_block_delta", "index",
                             s->n_blocks - 1, "delta", "type", "text_delta", "text", p, n),
                   err);
}

/* Largest k such that the last k bytes of (p, n) are a proper prefix of
 * some stop sequence. */
static size_t anth_stop_holdback(const api_anth_stream *s, const char *p, size_t n) {
  size_t best = 0;
  for (size_t i = 0; i < s->info.n_stop; i++) {
    size_t sl = strlen(s->info.stop[i]);
    for (size_t k = sl - 1 < n ? sl - 1 : n; k > best; k--)
      if (memcmp(p + n - k, s->info.stop[i], k) == 0) {
        best = k;
        break;
      }
  }
  return best;
}

static hx_code anth_text_in(api_anth_stream *s, const char *p, size_t n, bool *done, hx_err *err) {
  if (s->info.n_stop == 0)
    return anth_text_out(s, p, n, err);
  if (hx_buf_append(&s->pending, p, n) != HX_OK)
    return hx_err_set(err, HX_ETOOLARGE, "held-back text too large");
  /* earliest match of any stop sequence */
  const char *t = s->pending.data;
  size_t tl = s->pending.len;
  const char *hit = NULL;
  for (size_t i = 0; i < s->info.n_stop; i++) {
    const char *m = memmem(t, tl, s->info.stop[i], strlen(s->info.stop[i]));
    if (m && (!hit || m < hit)) {
      hit = m;
      s->stop_hit = (int)i;
    }
  }
  hx_code rc;
  if (hit) {
    rc = anth_text_out(s, t, (size_t)(hit - t), err);
    hx_buf_reset(&s->pending);
    *done = true;
    return rc;
  }
  size_t keep = anth_stop_holdback(s, t, tl);
  rc = anth_text_out(s, t, tl - keep, err);
  hx_buf_consume(&s->pending, tl - keep);
  return rc;
}

static hx_code anth_flush_pending(api_anth_stream *s, hx_err *err) {
  hx_code rc = anth_text_out(s, s->pending.data, s->pending.len, err);
  hx_buf_reset(&s->pending);
  return rc;
}

static hx_code anth_thinking_in(api_anth_stream *s, const char *p, size_t n, hx_err *err) {
  if (n == 0)
    return HX_OK;
  hx_code rc = anth_flush_pending(s, err);
  if (rc == HX_OK && s->open != BLK_THINKING)
    rc = anth_open_block(
        s, BLK_THINKING,
        json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", ""), err);
  if (rc != HX_OK)
    return rc;
  json_t *blk = anth_last_block(s);
  json_object_del(blk, "signature");
  const json_t *old = json_object_get(blk, "thinking");
  size_t ol = json_string_length(old);
  char *joined = malloc(ol + n + 1);
  if (!joined)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  memcpy(joined, json_string_value(old), ol);
  memcpy(joined + ol, p, n);
  json_object_set_new(blk, "thinking", json_stringn_nocheck(joined, ol + n));
  free(joined);
  return anth_emit(s, "content_block_delta",
                   json_pack("{s:s, s:i, s:{s:s, s:s%}}", "type", "content_block_delta", "index",
                             s->n_blocks - 1, "delta", "type", "thinking_delta", "thinking", p, n),
                   err);
}

static hx_code anth_tool_in(api_anth_stream *s, const json_t *tc, hx_err *err) {
  const json_t *jidx = json_object_get(tc, "index");
  int idx = json_is_integer(jidx) ? (int)json_integer_value(jidx) : 0;
  const json_t *fn = json_object_get(tc, "function");
  const char *name = json_string_value(json_object_get(fn, "name"));
  const json_t *args = json_object_get(fn, "arguments");
  hx_code rc = HX_OK;
  if (s->open != BLK_TOOL || s->open_tool_idx != idx) {
    rc = anth_flush_pending(s, err);
    const char *id = json_string_value(json_object_get(tc, "id"));
    char gen[64];
    if (!id) {
      snprintf(gen, sizeof gen, "toolu_%s_%d", s->msg_id, s->n_blocks);
      id = gen;
    }
    if (rc == HX_OK)
      rc = anth_open_block(s, BLK_TOOL,
                           json_pack("{s:s, s:s, s:s, s:{}}", "type", "tool_use", "id", id, "name",
                                     name ? name : "", "input"),
                           err);
    s->open_tool_idx = idx;
  }
  if (rc == HX_OK && json_is_string(args) && json_string_length(args) > 0) {
    if (hx_buf_append(&s->tool_args, json_string_value(args), json_string_length(args)) != HX_OK)
      return hx_err_set(err, HX_ETOOLARGE, "tool arguments too large");
    rc = anth_emit(s, "content_block_delta",
                   json_pack("{s:s, s:i, s:{s:s, s:O}}", "type", "content_block_delta", "index",
                             s->n_blocks - 1, "delta", "type", "input_json_delta", "partial_json",
                             args),
                   err);
  }
  return rc;
}

static void anth_usage_in(api_anth_stream *s, const json_t *u) {
  if (!json_is_object(u))
    return;
  const json_t *p = json_object_get(u, "prompt_tokens");
  const json_t *c = json_object_get(u, "completion_tokens");
  const json_t *cached =
      json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
  if (json_is_integer(p))
    s->in_tok = (long)json_integer_value(p);
  if (json_is_integer(c)) {
    s->out_tok = (long)json_integer_value(c);
    s->usage_seen = true;
  }
  if (json_is_integer(cached))
    s->cached_tok = (long)json_integer_value(cached);
}

hx_code api_anth_stream_feed(api_anth_stream *s, const json_t *chunk, bool *done, hx_err *err) {
  *done = false;
  if (!json_is_object(chunk))
    return hx_err_set(err, HX_EINVAL, "upstream chunk is not a JSON object");
  hx_code rc = api_anth_stream_start(s, err);
  anth_usage_in(s, json_object_get(chunk, "usage"));
  if (s->stop_hit >= 0) { /* already cut: ignore the rest */
    *done = true;
    return rc;
  }
  const json_t *ch = json_array_get(json_object_get(chunk, "choices"), 0);
  if (rc != HX_OK || !json_is_object(ch))
    return rc;
  const json_t *d = json_object_get(ch, "delta");
  const json_t *r = json_object_get(d, "reasoning_content");
  if (!json_is_string(r))
    r = json_object_get(d, "reasoning");
  if (json_is_string(r) && json_string_length(r) > 0) {
    s->deltas++;
    rc = anth_thinking_in(s, json_string_value(r), json_string_length(r), err);
  }
  const json_t *c = json_object_get(d, "content");
  if (rc == HX_OK && json_is_string(c) && json_string_length(c) > 0) {
    s->deltas++;
    rc = anth_text_in(s, json_string_value(c), json_string_length(c), done, err);
  }
  const json_t *tcs = json_object_get(d, "tool_calls");
  size_t i;
  json_t *tc;
  if (rc == HX_OK && !*done && json_is_array(tcs))
    json_array_foreach(tcs, i, tc) {
      if (rc == HX_OK && json_is_object(tc))
        rc = anth_tool_in(s, tc, err);
    }
  const char *fr = json_string_value(json_object_get(ch, "finish_reason"));
  if (fr) {
    if (strcmp(fr, "length") == 0)
      s->finish_reason = "max_tokens";
    else if (strcmp(fr, "tool_calls") == 0)
      s->finish_reason = "tool_use";
    else
      s->finish_reason = "end_turn";
  }
  return rc;
}

hx_code api_anth_stream_finish(api_anth_stream *s, hx_err *err) {
  if (s->finished)
    return HX_OK;
  hx_code rc = api_anth_stream_start(s, err);
  if (rc == HX_OK)
    rc = anth_flush_pending(s, err);
  if (rc == HX_OK)
    rc = anth_close_block(s, err);
  s->finished = true;
  const char *reason = s->stop_hit >= 0   ? "stop_sequence"
                       : s->finish_reason ? s->finish_reason
                                          : "end_turn";
  json_t *seq = s->stop_hit >= 0 ? json_string(s->info.stop[s->stop_hit]) : json_null();
  if (rc == HX_OK)
    rc = anth_emit(s, "message_delta",
                   json_pack("{s:s, s:{s:s, s:o}, s:o}", "type", "message_delta", "delta",
                             "stop_reason", reason, "stop_sequence", seq, "usage", anth_usage(s)),
                   err);
  else
    json_decref(seq);
  if (rc == HX_OK)
    rc = anth_emit(s, "message_stop", json_pack("{s:s}", "type", "message_stop"), err);
  return rc;
}

json_t *api_anth_stream_message(const api_anth_stream *s) {
  const char *reason = s->stop_hit >= 0   ? "stop_sequence"
                       : s->finish_reason ? s->finish_reason
                                          : "end_turn";
  json_t *seq = s->stop_hit >= 0 ? json_string(s->info.stop[s->stop_hit]) : json_null();
  return json_pack("{s:s, s:s, s:s, s:s, s:O, s:s, s:o, s:o}", "id", s->msg_id, "type", "message",
                   "role", "assistant", "model", s->info.model, "content", s->content,
                   "stop_reason", reason, "stop_sequence", seq, "usage", anth_usage(s));
}
