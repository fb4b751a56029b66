/* upstream.c — see upstream.h. */
#include "acp/upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/log.h"
#include "net/sse.h"

void acp_stream_init(acp_stream *s, acp_stream_on_text on_content, acp_stream_on_text on_reasoning,
                     void *ud) {
  memset(s, 0, sizeof *s);
  hx_buf_init(&s->content, ACP_STREAM_TEXT_MAX);
  hx_buf_init(&s->reasoning, ACP_STREAM_TEXT_MAX);
  for (int i = 0; i < ACP_STREAM_TOOL_CALLS_MAX; i++)
    hx_buf_init(&s->tool_calls[i].arguments, ACP_STREAM_ARGS_MAX);
  s->on_content = on_content;
  s->on_reasoning = on_reasoning;
  s->ud = ud;
}

void acp_stream_free(acp_stream *s) {
  if (!s)
    return;
  hx_buf_free(&s->content);
  hx_buf_free(&s->reasoning);
  for (int i = 0; i < ACP_STREAM_TOOL_CALLS_MAX; i++)
    hx_buf_free(&s->tool_calls[i].arguments);
}

/* Appends to a fixed string field, bounded. */
static hx_code append_name(char *dst, const char *src, const char *what, hx_err *err) {
  size_t have = strlen(dst), add = strlen(src);
  if (have + add >= ACP_STREAM_NAME_MAX)
    return hx_err_set(err, HX_ETOOLARGE, "stream: tool call %s longer than %d bytes", what,
                      ACP_STREAM_NAME_MAX - 1);
  memcpy(dst + have, src, add + 1);
  return HX_OK;
}

static hx_code accept_tool_delta(acp_stream *s, const json_t *tc, hx_err *err) {
  if (!json_is_object(tc))
    return hx_err_set(err, HX_EINVAL, "stream: delta.tool_calls[] must be objects");
  json_t *jidx = json_object_get(tc, "index");
  json_int_t idx = json_is_integer(jidx) ? json_integer_value(jidx) : s->tool_call_count - 1;
  if (!jidx && idx < 0)
    idx = 0;
  if (idx < 0 || idx >= ACP_STREAM_TOOL_CALLS_MAX)
    return hx_err_set(err, HX_ETOOLARGE, "stream: tool call index %lld outside 0..%d",
                      (long long)idx, ACP_STREAM_TOOL_CALLS_MAX - 1);
  if (idx >= s->tool_call_count)
    s->tool_call_count = (int)idx + 1;
  acp_stream_tool_call *call = &s->tool_calls[idx];
  json_t *id = json_object_get(tc, "id");
  if (json_is_string(id) && call->id[0] == '\0' &&
      append_name(call->id, json_string_value(id), "id", err))
    return err ? err->code : HX_ETOOLARGE;
  json_t *fn = json_object_get(tc, "function");
  if (fn && !json_is_object(fn))
    return hx_err_set(err, HX_EINVAL, "stream: delta.tool_calls[].function must be an object");
  json_t *name = json_object_get(fn, "name");
  if (json_is_string(name) && append_name(call->name, json_string_value(name), "name", err))
    return err ? err->code : HX_ETOOLARGE;
  json_t *args = json_object_get(fn, "arguments");
  if (json_is_string(args) &&
      hx_buf_append(&call->arguments, json_string_value(args), json_string_length(args)))
    return hx_err_set(err, HX_ETOOLARGE, "stream: tool call arguments exceed %d bytes",
                      ACP_STREAM_ARGS_MAX);
  return HX_OK;
}

static hx_code accept_text(hx_buf *b, const json_t *v, acp_stream_on_text cb, void *ud,
                           const char *what, hx_err *err) {
  if (!v || json_is_null(v))
    return HX_OK;
  if (!json_is_string(v))
    return hx_err_set(err, HX_EINVAL, "stream: delta.%s must be a string", what);
  size_t n = json_string_length(v);
  if (n == 0)
    return HX_OK;
  if (hx_buf_append(b, json_string_value(v), n))
    return hx_err_set(err, HX_ETOOLARGE, "stream: %s exceeds %d bytes", what, ACP_STREAM_TEXT_MAX);
  if (cb)
    cb(ud, json_string_value(v), n);
  return HX_OK;
}

static void accept_usage(acp_stream *s, const json_t *usage) {
  if (!json_is_object(usage))
    return;
  json_t *p = json_object_get(usage, "prompt_tokens");
  json_t *c = json_object_get(usage, "completion_tokens");
  if (!json_is_integer(p) || !json_is_integer(c))
    return;
  s->has_usage = true;
  s->prompt_tokens = json_integer_value(p) > 0 ? json_integer_value(p) : 0;
  s->completion_tokens = json_integer_value(c) > 0 ? json_integer_value(c) : 0;
  json_t *r =
      json_object_get(json_object_get(usage, "completion_tokens_details"), "reasoning_tokens");
  s->reasoning_tokens = json_is_integer(r) && json_integer_value(r) > 0 ? json_integer_value(r) : 0;
}

hx_code acp_stream_accept(acp_stream *s, const char *data, size_t len, hx_err *err) {
  hx_slice d = hx_slice_trim(hx_slice_make(data, len));
  if (hx_slice_eq_cstr(d, "[DONE]")) {
    s->done = true;
    return HX_OK;
  }
  hx_json_limits lim = {.max_bytes = ACP_STREAM_EVENT_MAX, .max_depth = 32};
  hx_err perr;
  json_t *chunk = hx_json_parse(d.ptr ? d.ptr : "", d.len, lim, &perr);
  if (!chunk)
    return hx_err_set(err, HX_EINVAL, "stream: malformed chunk: %s", perr.msg);
  hx_code rc = HX_OK;
  if (!json_is_object(chunk)) {
    rc = hx_err_set(err, HX_EINVAL, "stream: a chunk must be a JSON object");
    goto out;
  }
  json_t *e = json_object_get(chunk, "error");
  if (e) {
    json_t *m = json_is_object(e) ? json_object_get(e, "message") : e;
    rc = hx_err_set(err, HX_EIO, "upstream error during the stream: %s",
                    json_is_string(m) ? json_string_value(m) : "(no message)");
    goto out;
  }
  accept_usage(s, json_object_get(chunk, "usage"));
  json_t *choices = json_object_get(chunk, "choices");
  if (choices && !json_is_array(choices)) {
    rc = hx_err_set(err, HX_EINVAL, "stream: \"choices\" must be an array");
    goto out;
  }
  /* We ask for n = 1: only choice 0 matters. */
  json_t *choice = json_array_get(choices, 0);
  if (!choice)
    goto out;
  if (!json_is_object(choice)) {
    rc = hx_err_set(err, HX_EINVAL, "stream: choices[0] must be an object");
    goto out;
  }
  json_t *delta = json_object_get(choice, "delta");
  if (json_is_object(delta)) {
    rc = accept_text(&s->reasoning, json_object_get(delta, "reasoning_content"), s->on_reasoning,
                     s->ud, "reasoning_content", err);
    if (rc == HX_OK && !json_object_get(delta, "reasoning_content"))
      rc = accept_text(&s->reasoning, json_object_get(delta, "reasoning"), s->on_reasoning, s->ud,
                       "reasoning", err);
    if (rc == HX_OK)
      rc = accept_text(&s->content, json_object_get(delta, "content"), s->on_content, s->ud,
                       "content", err);
    json_t *tcs = json_object_get(delta, "tool_calls");
    if (rc == HX_OK && tcs && !json_is_null(tcs)) {
      if (!json_is_array(tcs)) {
        rc = hx_err_set(err, HX_EINVAL, "stream: delta.tool_calls must be an array");
        goto out;
      }
      size_t i;
      json_t *tc;
      json_array_foreach(tcs, i, tc) {
        rc = accept_tool_delta(s, tc, err);
        if (rc)
          goto out;
      }
    }
  }
  json_t *fr = json_object_get(choice, "finish_reason");
  if (json_is_string(fr))
    snprintf(s->finish_reason, sizeof s->finish_reason, "%s", json_string_value(fr));
out:
  json_decref(chunk);
  return rc;
}

json_t *acp_stream_message(const acp_stream *s) {
  json_t *m = json_pack("{s:s, s:s#}", "role", "assistant", "content",
                        s->content.data ? s->content.data : "", s->content.len);
  if (!m)
    return NULL;
  if (s->reasoning.len)
    json_object_set_new(m, "reasoning_content", json_stringn(s->reasoning.data, s->reasoning.len));
  if (s->tool_call_count > 0) {
    json_t *arr = json_array();
    for (int i = 0; i < s->tool_call_count; i++) {
      const acp_stream_tool_call *tc = &s->tool_calls[i];
      char idbuf[ACP_STREAM_NAME_MAX + 16];
      if (tc->id[0])
        snprintf(idbuf, sizeof idbuf, "%s", tc->id);
      else
        snprintf(idbuf, sizeof idbuf, "call_%d", i);
      const char *args = tc->arguments.len ? tc->arguments.data : "{}";
      json_array_append_new(arr,
                            json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", idbuf, "type", "function",
                                      "function", "name", tc->name, "arguments", args));
    }
    json_object_set_new(m, "tool_calls", arr);
  }
  return m;
}

/* ---- HTTP ---- */

typedef struct chat_ctx {
  acp_stream *s;
  hx_sse_parser sse;
  int status;
  hx_buf error_body; /* non-2xx body, bounded */
  hx_err stream_err;
  bool stream_failed;
  bool finished; /* [DONE] seen: the transfer was stopped on purpose */
} chat_ctx;

static int on_status(void *ud, int status, const char *content_type) {
  chat_ctx *x = ud;
  (void)content_type;
  x->status = status;
  return 0;
}

static int on_event(void *ud, const hx_sse_event *ev) {
  chat_ctx *x = ud;
  if (acp_stream_accept(x->s, ev->data, ev->data_len, &x->stream_err) != HX_OK) {
    x->stream_failed = true;
    return 1;
  }
  if (x->s->done) { /* do not wait for a server that keeps the stream open */
    x->finished = true;
    return 1;
  }
  return 0;
}

static int on_data(void *ud, const char *chunk, size_t len) {
  chat_ctx *x = ud;
  if (x->status < 200 || x->status > 299) {
    size_t room = x->error_body.max_len - x->error_body.len;
    hx_buf_append(&x->error_body, chunk, len < room ? len : room);
    return 0;
  }
  hx_err e;
  hx_code rc = hx_sse_parser_feed(&x->sse, chunk, len, &e);
  if (rc != HX_OK && !x->stream_failed && !x->finished) {
    x->stream_failed = true;
    x->stream_err = e;
  }
  return rc == HX_OK ? 0 : 1;
}

static void url_join(char *out, size_t n, const char *endpoint, const char *path) {
  size_t el = strlen(endpoint);
  while (el > 0 && endpoint[el - 1] == '/')
    el--;
  snprintf(out, n, "%.*s%s", (int)el, endpoint, path);
}

/* Pulls "error.message" (or the raw text) out of an error body. */
static void describe_error_body(const hx_buf *body, char *out, size_t n) {
  out[0] = '\0';
  if (body->len == 0)
    return;
  hx_json_limits lim = {.max_bytes = ACP_UPSTREAM_ERROR_BODY_MAX, .max_depth = 16};
  json_t *j = hx_json_parse(body->data, body->len, lim, NULL);
  json_t *e = json_object_get(j, "error");
  json_t *m = json_is_object(e) ? json_object_get(e, "message") : e;
  if (json_is_string(m))
    snprintf(out, n, "%s", json_string_value(m));
  else
    snprintf(out, n, "%.*s", (int)(body->len < 300 ? body->len : 300), body->data);
  json_decref(j);
}

hx_code acp_upstream_chat(const acp_upstream *u, hx_http_call *call, const json_t *messages,
                          const json_t *tools, acp_stream *s, hx_err *err) {
  json_t *body = json_pack("{s:s, s:O, s:b, s:{s:b}}", "model", u->model ? u->model : "",
                           "messages", messages, "stream", 1, "stream_options", "include_usage", 1);
  if (!body)
    return hx_err_set(err, HX_ENOMEM, "out of memory building the request");
  if (tools && json_array_size(tools) > 0)
    json_object_set(body, "tools", (json_t *)tools);
  if (u->max_tokens > 0)
    json_object_set_new(body, "max_tokens", json_integer((json_int_t)u->max_tokens));
  char *text = hx_json_dumps(body);
  json_decref(body);
  if (!text)
    return hx_err_set(err, HX_ENOMEM, "out of memory building the request");

  char url[2048], auth[1024];
  url_join(url, sizeof url, u->endpoint, "/chat/completions");
  hx_http_request rq = {.method = "POST",
                        .url = url,
                        .body = text,
                        .body_len = strlen(text),
                        .connect_timeout_ms = ACP_UPSTREAM_CONNECT_TIMEOUT_MS,
                        .idle_timeout_ms = ACP_UPSTREAM_IDLE_TIMEOUT_MS,
                        .max_response_bytes = (size_t)1 << 30,
                        .on_status = on_status,
                        .on_data = on_data};
  int h = 0;
  rq.headers[h++] = "Content-Type: application/json";
  rq.headers[h++] = "Accept: text/event-stream";
  if (u->api_key && u->api_key[0]) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", u->api_key);
    rq.headers[h++] = auth;
  }
  chat_ctx x = {.s = s};
  hx_sse_parser_init(&x.sse, ACP_STREAM_EVENT_MAX, on_event, &x);
  hx_buf_init(&x.error_body, ACP_UPSTREAM_ERROR_BODY_MAX);
  rq.ud = &x;
  hx_http_response rs;
  hx_err herr;
  hx_err_clear(&herr);
  hx_code rc = hx_http_call_run(call, &rq, &rs, &herr);
  hx_buf_free(&rs.body);
  free(text);

  if (x.finished && !x.stream_failed && rc == HX_ECANCELLED && !hx_http_call_cancelled(call))
    rc = HX_OK;
  if (x.stream_failed) {
    rc = hx_err_set(err, x.stream_err.code ? x.stream_err.code : HX_EINVAL, "%s (from %s)",
                    x.stream_err.msg, url);
  } else if (rc == HX_ECANCELLED) {
    rc = hx_err_set(err, HX_ECANCELLED, "cancelled");
  } else if (rc != HX_OK) {
    rc = hx_err_set(err, rc, "cannot reach the model endpoint %s: %s", url, herr.msg);
  } else if (x.status < 200 || x.status > 299) {
    char detail[400];
    describe_error_body(&x.error_body, detail, sizeof detail);
    rc = hx_err_set(err, HX_EIO, "the model endpoint %s answered HTTP %d%s%s", url, x.status,
                    detail[0] ? ": " : "", detail);
  } else if (!s->done && s->finish_reason[0] == '\0') {
    rc = hx_err_set(err, HX_EIO, "the stream from %s ended before the answer was complete", url);
  }
  hx_sse_parser_free(&x.sse);
  hx_buf_free(&x.error_body);
  return rc;
}

char *acp_upstream_first_model(const acp_upstream *u, hx_err *err) {
  char url[2048];
  url_join(url, sizeof url, u->endpoint, "/models");
  hx_http_response rs;
  hx_err herr;
  hx_err_clear(&herr);
  hx_code rc = hx_http_fetch("GET", url, NULL, 10000, 4 * 1024 * 1024, &rs, &herr);
  char *id = NULL;
  if (rc != HX_OK) {
    hx_err_set(err, rc, "cannot reach the model endpoint %s: %s", url, herr.msg);
  } else if (rs.status != 200) {
    char detail[400];
    describe_error_body(&rs.body, detail, sizeof detail);
    hx_err_set(err, HX_EIO, "listing models at %s failed with HTTP %d%s%s", url, rs.status,
               detail[0] ? ": " : "", detail);
  } else {
    hx_json_limits lim = {.max_bytes = 4 * 1024 * 1024, .max_depth = 32};
    json_t *j = hx_json_parse(rs.body.data ? rs.body.data : "", rs.body.len, lim, NULL);
    json_t *first = json_array_get(json_object_get(j, "data"), 0);
    json_t *jid = json_object_get(first, "id");
    if (json_is_string(jid))
      id = strdup(json_string_value(jid));
    else
      hx_err_set(err, HX_ENOTFOUND, "%s lists no models; pass --model", url);
    json_decref(j);
  }
  hx_buf_free(&rs.body);
  return id;
}
