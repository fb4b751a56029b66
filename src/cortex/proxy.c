/* proxy.c — the client-facing API: OpenAI /v1/chat/completions and
 * /v1/completions (proxied, streamed chunk by chunk), Anthropic /v1/messages
 * (translated, api/anthropic.h) and /v1/messages/count_tokens.
 *
 * Each request is handed to its own worker thread (the HTTP pool must not
 * block); the worker waits for a replica (gw_acquire, with keep-alives on
 * streams), calls the neuron, and relays. Upstream failures before any
 * upstream byte reached the client are retried on another replica (up to 3
 * attempts); after that, the client gets a terminal error in its dialect
 * (OpenAI: a data line with an "error" object and no [DONE]; Anthropic:
 * `event: error`). A client hang-up cancels the upstream call at once. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/anthropic.h"
#include "api/openai.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "cortex/gateway.h"
#include "net/http_client.h"
#include "net/sse.h"

enum {
  PX_ATTEMPTS = 3,
  PX_WRITE_TIMEOUT_MS = 30000,
  PX_UPSTREAM_MAX_BYTES = 64 << 20,
  PX_PING_MS = 5000,
};

typedef struct px_req {
  gateway *gw;
  hx_http_req *req;
  json_t *body; /* the upstream body (OpenAI shape) */
  bool anthropic, stream, count_tokens;
  api_openai_kind kind;
  char model[GW_ID_MAX];
  /* the upstream call while one runs (from the neuron's keep-alive pool,
   * upstream.c); call_mu orders attaching it against the cancel callback */
  pthread_mutex_t call_mu;
  hx_http_call *call;
  gw_lease lease;
  bool began;     /* downstream 200 stream started */
  bool forwarded; /* an upstream byte was relayed (no retry after this) */
  bool up_done;   /* upstream sent [DONE] */
  atomic_bool client_gone;
  int up_status;
  hx_buf errbody; /* upstream error body, or the non-streaming body */
  hx_sse_parser sse;
  api_anth_stream *anth;
  api_anth_info ainfo;
  bool stop_hit;
  uint64_t t0_ns, first_ns, last_ns, last_write_ns;
  long prompt, gen, cached, content_chunks;
  char msg_id[48];
} px_req;

/* ------------------------------------------------------------ errors */

void gw_respond_error(hx_http_req *req, bool anthropic, int status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_t *body = anthropic ? api_anth_error_json(api_anth_error_type(status), msg)
                           : hx_http_error_json(api_openai_error_type(status), NULL, NULL, msg);
  if (anthropic && status == 413)
    status = 413;
  hx_http_respond_json(req, status, body);
}

static int px_status_of(hx_code c) {
  switch (c) {
  case HX_EINVAL:
    return 400;
  case HX_ENOTFOUND:
    return 404;
  case HX_ETOOLARGE:
    return 507;
  case HX_EBUSY:
    return 503;
  case HX_ETIMEOUT:
    return 504;
  default:
    return 502;
  }
}

static hx_code px_write(px_req *p, const char *s, size_t n) {
  hx_code rc = hx_http_stream_write(p->req, s, n, PX_WRITE_TIMEOUT_MS);
  p->last_write_ns = hx_time_mono_ns();
  if (rc != HX_OK) {
    atomic_store(&p->client_gone, true);
    if (p->call) /* only this (the worker) thread changes p->call */
      hx_http_call_cancel(p->call);
  }
  return rc;
}

static hx_code px_begin(px_req *p) {
  if (p->began)
    return HX_OK;
  p->began = true;
  hx_code rc = hx_http_stream_begin(p->req, 200, "text/event-stream", NULL, 0);
  if (rc != HX_OK)
    atomic_store(&p->client_gone, true);
  if (rc == HX_OK && p->anth)
    rc = api_anth_stream_start(p->anth, NULL);
  return rc;
}

/* A terminal error after the 200 went out. */
static void px_stream_error(px_req *p, const char *type, const char *msg) {
  hx_buf b;
  hx_buf_init(&b, 1 << 16);
  json_t *j = p->anthropic ? api_anth_error_json(type, msg)
                           : hx_http_error_json("server_error", "upstream_error", NULL, msg);
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  hx_sse_write_event(&b, p->anthropic ? "error" : NULL, s ? s : "{}", s ? strlen(s) : 2);
  free(s);
  px_write(p, b.data, b.len);
  hx_buf_free(&b);
}

/* ------------------------------------------------------------ callbacks */

/* The client hung up (monitor thread): stop the upstream call now. */
static void px_on_cancel(void *ud) {
  px_req *p = ud;
  pthread_mutex_lock(&p->call_mu);
  atomic_store(&p->client_gone, true);
  if (p->call)
    hx_http_call_cancel(p->call);
  pthread_mutex_unlock(&p->call_mu);
}

/* Makes c the running call; cancels it at once when the client already
 * hung up (so a hang-up never slips between attach and run). */
static void px_call_attach(px_req *p, hx_http_call *c) {
  pthread_mutex_lock(&p->call_mu);
  p->call = c;
  if (atomic_load(&p->client_gone))
    hx_http_call_cancel(c);
  pthread_mutex_unlock(&p->call_mu);
}

/* Takes the call back; after this the cancel callback cannot reach it, so
 * it may go back to the pool (upstream.c frees it when cancelled). */
static hx_http_call *px_call_detach(px_req *p) {
  pthread_mutex_lock(&p->call_mu);
  hx_http_call *c = p->call;
  p->call = NULL;
  pthread_mutex_unlock(&p->call_mu);
  return c;
}

static int px_keepalive(void *ud) {
  px_req *p = ud;
  if (hx_http_req_cancelled(p->req) || atomic_load(&p->client_gone))
    return 1;
  if (!p->stream || p->count_tokens)
    return 0;
  if (px_begin(p) != HX_OK)
    return 1;
  hx_buf b;
  hx_buf_init(&b, 256);
  if (p->anthropic)
    hx_sse_write_event(&b, "ping", "{\"type\":\"ping\"}", 15);
  else
    hx_sse_write_comment(&b, "waiting for the model to load");
  hx_code rc = px_write(p, b.data, b.len);
  hx_buf_free(&b);
  return rc != HX_OK;
}

static int px_anth_emit(void *ud, const char *event, const json_t *data) {
  px_req *p = ud;
  if (!p->stream)
    return 0;
  if (px_begin(p) != HX_OK)
    return 1;
  char *s = json_dumps(data, JSON_COMPACT);
  if (!s)
    return 1;
  hx_buf b;
  hx_buf_init(&b, 64u << 20);
  hx_sse_write_event(&b, event, s, strlen(s));
  free(s);
  p->forwarded = true;
  hx_code rc = px_write(p, b.data, b.len);
  hx_buf_free(&b);
  return rc != HX_OK;
}

static void px_note_chunk(px_req *p, const json_t *chunk) {
  uint64_t now = hx_time_mono_ns();
  if (api_openai_chunk_has_content(chunk)) {
    if (!p->first_ns)
      p->first_ns = now;
    p->last_ns = now;
    p->content_chunks++;
  }
  api_openai_usage(chunk, &p->prompt, &p->gen, &p->cached);
}

static int px_on_event(void *ud, const hx_sse_event *ev) {
  px_req *p = ud;
  if (strcmp(ev->data, "[DONE]") == 0) {
    p->up_done = true;
    return 0;
  }
  json_t *j = hx_json_parse(ev->data, ev->data_len, (hx_json_limits){16u << 20, 64}, NULL);
  if (!j)
    return 0; /* not JSON: relayed as is (OpenAI) or ignored */
  px_note_chunk(p, j);
  int stop = 0;
  if (json_object_get(j, "error") && !json_object_get(j, "choices")) {
    stop = 1; /* upstream reported an error in-band */
  } else if (p->anth) {
    bool done = false;
    hx_err e;
    hx_code rc = api_anth_stream_feed(p->anth, j, &done, &e);
    if (done) {
      p->stop_hit = true;
      stop = 1;
    } else if (rc != HX_OK) {
      stop = 1;
    }
  }
  json_decref(j);
  return stop;
}

static int px_on_status(void *ud, int status, const char *ct) {
  px_req *p = ud;
  (void)ct;
  p->up_status = status;
  if (status == 200 && p->stream && !p->count_tokens)
    return px_begin(p) != HX_OK;
  return 0;
}

static int px_on_data(void *ud, const char *chunk, size_t len) {
  px_req *p = ud;
  if (p->up_status != 200 || (!p->stream && !p->anth) || p->count_tokens)
    return hx_buf_append(&p->errbody, chunk, len) != HX_OK;
  if (!p->anth) { /* OpenAI: relay the bytes as they come */
    p->forwarded = true;
    if (px_write(p, chunk, len) != HX_OK)
      return 1;
  }
  hx_code rc = hx_sse_parser_feed(&p->sse, chunk, len, NULL);
  return rc != HX_OK && (p->anth != NULL || rc != HX_ETOOLARGE);
}

static int px_on_tick(void *ud) {
  px_req *p = ud;
  if (atomic_load(&p->client_gone))
    return 1;
  if (p->up_status == 0 && !p->forwarded) {
    /* no answer yet and the poller has since marked the neuron down (it
     * stopped answering /health within timeout_ms, e.g. SIGSTOPped): give
     * up on it; the caller retries on another replica */
    pthread_mutex_lock(&p->gw->mu);
    bool down = !p->gw->neurons[p->lease.neuron].up;
    pthread_mutex_unlock(&p->gw->mu);
    if (down) {
      HX_WARN("neuron %s went down before answering; abandoning the call",
              p->gw->neurons[p->lease.neuron].cfg->name);
      return 1;
    }
  }
  if (p->anth && p->began && p->stream &&
      hx_time_mono_ns() - p->last_write_ns > (uint64_t)PX_PING_MS * 1000000u) {
    hx_buf b;
    hx_buf_init(&b, 64);
    hx_sse_write_event(&b, "ping", "{\"type\":\"ping\"}", 15);
    int r = px_write(p, b.data, b.len) != HX_OK;
    hx_buf_free(&b);
    return r;
  }
  return 0;
}

/* ------------------------------------------------------------ the worker */

static void px_metrics(px_req *p, const char *outcome) {
  gateway *gw = p->gw;
  const char *neuron = p->lease.url_base[0] ? gw->neurons[p->lease.neuron].cfg->name : "";
  const char *dialect = p->anthropic ? "anthropic" : "openai";
  const char *rl[] = {p->model, neuron, dialect, outcome};
  hx_metric_inc(gw->m.requests, rl);
  const char *ml[] = {p->model, neuron};
  if (p->anth) {
    long in, out, cached;
    api_anth_stream_usage(p->anth, &in, &out, &cached);
    p->prompt = in;
    p->gen = out;
  }
  hx_metric_add(gw->m.prompt_tokens, ml, (double)p->prompt);
  hx_metric_add(gw->m.gen_tokens, ml, (double)p->gen);
  uint64_t now = hx_time_mono_ns();
  hx_metric_observe(gw->m.e2e, ml, (double)(now - p->t0_ns) / 1e9);
  hx_metric_observe(gw->m.queue, ml, (double)p->lease.queue_ns / 1e9);
  if (p->first_ns) {
    hx_metric_observe(gw->m.ttft, ml, (double)(p->first_ns - p->t0_ns) / 1e9);
    long n = p->gen > 1 ? p->gen : p->content_chunks;
    if (n > 1 && p->last_ns > p->first_ns)
      hx_metric_observe(gw->m.itl, ml, (double)(p->last_ns - p->first_ns) / 1e9 / (double)(n - 1));
  }
  hx_http_req_set_log_note(p->req, "model=%s neuron=%s dialect=%s outcome=%s prompt=%ld gen=%ld",
                           p->model, neuron, dialect, outcome, p->prompt, p->gen);
}

/* Upstream error body → client error (before the 200). */
static void px_relay_error(px_req *p) {
  json_t *j = hx_json_parse(p->errbody.data ? p->errbody.data : "", p->errbody.len,
                            (hx_json_limits){1 << 20, 32}, NULL);
  const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
  if (!p->anthropic && j) {
    hx_http_respond_json(p->req, p->up_status, j); /* OpenAI shape already */
    return;
  }
  gw_respond_error(p->req, p->anthropic, p->up_status, "%s",
                   msg ? msg : (p->errbody.data ? p->errbody.data : "upstream error"));
  json_decref(j);
}

static void px_finish_ok(px_req *p) {
  if (p->anth) {
    api_anth_stream_finish(p->anth, NULL);
    px_metrics(p, "ok");
    if (!p->stream) {
      hx_http_respond_json(p->req, 200, api_anth_stream_message(p->anth));
      return;
    }
  } else if (!p->stream) {
    json_t *j = hx_json_parse(p->errbody.data ? p->errbody.data : "", p->errbody.len,
                              (hx_json_limits){PX_UPSTREAM_MAX_BYTES, 64}, NULL);
    if (j) {
      api_openai_usage(j, &p->prompt, &p->gen, &p->cached);
      if (!p->first_ns)
        p->first_ns = hx_time_mono_ns();
      json_decref(j);
    }
    px_metrics(p, "ok");
    hx_http_respond(p->req, 200, "application/json", p->errbody.data ? p->errbody.data : "",
                    p->errbody.len, NULL, 0);
    return;
  } else {
    px_metrics(p, "ok");
  }
  hx_http_stream_end(p->req);
}

static void px_count_tokens(px_req *p);

static void px_run(px_req *p) {
  hx_err err = {0};
  uint64_t exclude = 0;
  const char *outcome = "error";
  for (int attempt = 0; attempt < PX_ATTEMPTS; attempt++) {
    hx_code rc = gw_acquire(p->gw, p->model, exclude, px_keepalive, p, &p->lease, &err);
    if (rc != HX_OK) {
      outcome = rc == HX_ECANCELLED ? "cancelled" : "unavailable";
      px_metrics(p, outcome);
      if (p->began)
        px_stream_error(p, api_anth_error_type(px_status_of(rc)), err.msg);
      else if (!atomic_load(&p->client_gone))
        gw_respond_error(p->req, p->anthropic, px_status_of(rc), "%s", err.msg);
      if (p->began)
        hx_http_stream_end(p->req);
      else if (atomic_load(&p->client_gone))
        hx_http_respond(p->req, 499, "text/plain", "", 0, NULL, 0);
      return;
    }
    if (p->count_tokens) {
      px_count_tokens(p);
      gw_release(p->gw, &p->lease, true);
      return;
    }
    hx_http_call *call = gw_upstream_take(p->gw, p->lease.neuron);
    if (!call) {
      gw_release(p->gw, &p->lease, true);
      px_metrics(p, "error");
      if (p->began) {
        px_stream_error(p, "api_error", "out of memory");
        hx_http_stream_end(p->req);
      } else {
        gw_respond_error(p->req, p->anthropic, 500, "out of memory");
      }
      return;
    }
    json_object_set_new(p->body, "model", json_string(p->lease.upstream_id));
    char *body = json_dumps(p->body, JSON_COMPACT);
    char url[400];
    snprintf(url, sizeof url, "%s%s", p->lease.url_base,
             p->kind == API_OPENAI_COMPLETIONS ? "/v1/completions" : "/v1/chat/completions");
    const gw_neuron *n = &p->gw->neurons[p->lease.neuron];
    hx_http_request rq = {.method = "POST",
                          .url = url,
                          .body = body,
                          .body_len = body ? strlen(body) : 0,
                          .connect_timeout_ms = n->cfg->timeout_ms,
                          .first_byte_timeout_ms = 300000,
                          .idle_timeout_ms = 120000,
                          .max_response_bytes = PX_UPSTREAM_MAX_BYTES,
                          .on_status = px_on_status,
                          .on_data = px_on_data,
                          .on_tick = px_on_tick,
                          .ud = p};
    rq.headers[0] = "Content-Type: application/json";
    char rid[96];
    snprintf(rid, sizeof rid, "X-Request-Id: %s", hx_http_req_id(p->req));
    rq.headers[1] = rid;
    hx_http_response rs;
    p->up_status = 0;
    hx_buf_reset(&p->errbody);
    px_call_attach(p, call);
    hx_http_call_run(call, &rq, &rs, &err);
    px_call_detach(p);
    bool cancelled = hx_http_call_cancelled(call);
    gw_upstream_put(p->gw, p->lease.neuron, call);
    hx_buf_free(&rs.body);
    free(body);
    rc = err.code;
    if (cancelled || atomic_load(&p->client_gone)) {
      gw_release(p->gw, &p->lease, true);
      px_metrics(p, "cancelled");
      if (p->began)
        hx_http_stream_end(p->req);
      else
        hx_http_respond(p->req, 499, "text/plain", "", 0, NULL, 0);
      return;
    }
    bool upstream_failed =
        (rc != HX_OK && !(rc == HX_ECANCELLED && p->stop_hit)) || p->up_status >= 500 ||
        ((p->stream || p->anth) && p->up_status == 200 && !p->up_done && !p->stop_hit &&
         !(p->anth && api_anth_stream_has_finish(p->anth) && rc == HX_OK));
    gw_release(p->gw, &p->lease, !upstream_failed || (p->up_status < 500 && p->up_status >= 400));
    if (p->up_status == 404 && !p->forwarded && attempt + 1 < PX_ATTEMPTS) {
      /* the neuron no longer has it (evicted or restarted since the last
       * poll): refresh the view and route again (this may load it) */
      HX_WARN("neuron %s does not have %s loaded; refreshing and retrying", n->cfg->name,
              p->lease.upstream_id);
      gw_poll_neuron(p->gw, p->lease.neuron);
      hx_err_clear(&err);
      continue;
    }
    if (upstream_failed && !p->forwarded && attempt + 1 < PX_ATTEMPTS) {
      HX_WARN("upstream %s failed before the first byte (%s); retrying on another replica",
              n->cfg->name, rc != HX_OK ? err.msg : "HTTP error");
      if (p->lease.neuron < 64)
        exclude |= 1ull << p->lease.neuron;
      hx_err_clear(&err);
      continue;
    }
    if (p->up_status != 200 && p->up_status != 0 && !p->forwarded) {
      px_metrics(p, p->up_status < 500 ? "client_error" : "upstream_error");
      if (p->began)
        px_stream_error(p, api_anth_error_type(p->up_status),
                        p->errbody.data ? p->errbody.data : "upstream error");
      else
        px_relay_error(p);
      if (p->began)
        hx_http_stream_end(p->req);
      return;
    }
    if (upstream_failed) {
      char m[700];
      snprintf(m, sizeof m, "upstream neuron %s failed: %s", n->cfg->name,
               rc != HX_OK ? err.msg : "stream ended before completion");
      px_metrics(p, "upstream_error");
      if (p->began) {
        px_stream_error(p, p->anthropic ? "api_error" : "server_error", m);
        hx_http_stream_end(p->req);
      } else {
        gw_respond_error(p->req, p->anthropic, rc == HX_ETIMEOUT ? 504 : 502, "%s", m);
      }
      return;
    }
    outcome = "ok";
    px_finish_ok(p);
    return;
  }
}

/* count_tokens: the neuron's own template + tokenizer (POST /apply-template
 * answers the rendered prompt and its token count), exact. */
static void px_count_tokens(px_req *p) {
  json_t *b = json_pack("{s:s, s:O, s:b}", "model", p->lease.upstream_id, "messages",
                        json_object_get(p->body, "messages"), "add_generation_prompt", 1);
  if (json_object_get(p->body, "tools"))
    json_object_set(b, "tools", json_object_get(p->body, "tools"));
  if (json_object_get(p->body, "chat_template_kwargs"))
    json_object_set(b, "chat_template_kwargs", json_object_get(p->body, "chat_template_kwargs"));
  char *s = json_dumps(b, JSON_COMPACT);
  json_decref(b);
  char url[400];
  snprintf(url, sizeof url, "%s/apply-template", p->lease.url_base);
  hx_http_response rs;
  hx_err err = {0};
  hx_code rc;
  hx_http_call *call = gw_upstream_take(p->gw, p->lease.neuron); /* keep-alive */
  if (!call) {
    memset(&rs, 0, sizeof rs);
    hx_buf_init(&rs.body, 1);
    rc = hx_err_set(&err, HX_ENOMEM, "out of memory");
  } else {
    hx_http_request rq = {.method = "POST",
                          .url = url,
                          .body = s,
                          .body_len = s ? strlen(s) : 0,
                          .connect_timeout_ms = p->gw->neurons[p->lease.neuron].cfg->timeout_ms,
                          .total_timeout_ms = 60000,
                          .max_response_bytes = 16u << 20};
    rq.headers[0] = "Content-Type: application/json";
    px_call_attach(p, call);
    rc = hx_http_call_run(call, &rq, &rs, &err);
    px_call_detach(p);
    gw_upstream_put(p->gw, p->lease.neuron, call);
  }
  free(s);
  json_t *j = rc == HX_OK ? hx_json_parse(rs.body.data ? rs.body.data : "", rs.body.len,
                                          (hx_json_limits){16u << 20, 16}, &err)
                          : NULL;
  long n = -1;
  const json_t *c = json_object_get(j, "tokens"); /* neuron: count of template tokens */
  if (!json_is_integer(c))
    c = json_object_get(j, "n_tokens");
  if (json_is_integer(c))
    n = (long)json_integer_value(c);
  else if (json_is_array(json_object_get(j, "tokens")))
    n = (long)json_array_size(json_object_get(j, "tokens"));
  if (rc == HX_OK && rs.status == 200 && n >= 0) {
    px_metrics(p, "ok");
    hx_http_respond_json(p->req, 200, json_pack("{s:I}", "input_tokens", (json_int_t)n));
  } else {
    px_metrics(p, "upstream_error");
    gw_respond_error(p->req, true, rc == HX_OK && rs.status >= 400 ? rs.status : 502,
                     "counting tokens on neuron failed: %s",
                     rc != HX_OK ? err.msg : (rs.body.data ? rs.body.data : "bad response"));
  }
  json_decref(j);
  hx_buf_free(&rs.body);
}

static void *px_thread(void *arg) {
  px_req *p = arg;
  hx_log_set_request_id(hx_http_req_id(p->req));
  px_run(p);
  /* the request is finished: nothing may touch p->req now */
  pthread_mutex_destroy(&p->call_mu);
  hx_sse_parser_free(&p->sse);
  api_anth_stream_free(p->anth);
  hx_buf_free(&p->errbody);
  json_decref(p->body);
  atomic_fetch_sub(&p->gw->streams, 1);
  free(p);
  hx_log_set_request_id(NULL);
  return NULL;
}

/* ------------------------------------------------------------ handlers */

/* Auth: nothing configured = open. Else Bearer or x-api-key must match a
 * key; the key's model scope applies. Returns false after responding. */
static bool px_auth(gateway *gw, hx_http_req *req, bool anthropic, const char *model) {
  if (gw->cfg->n_keys == 0)
    return true;
  const char *k = hx_http_req_header(req, "x-api-key");
  const char *a = hx_http_req_header(req, "authorization");
  if (!k && a && strncasecmp(a, "Bearer ", 7) == 0)
    k = a + 7;
  const cortex_api_key *key = NULL;
  for (size_t i = 0; k && i < gw->cfg->n_keys && !key; i++)
    if (strcmp(gw->cfg->keys[i].key, k) == 0)
      key = &gw->cfg->keys[i];
  if (!key) {
    gw_respond_error(req, anthropic, 401,
                     k ? "invalid API key"
                       : "missing API key (send "
                         "Authorization: Bearer KEY or "
                         "x-api-key: KEY)");
    return false;
  }
  if (!model || key->n_models == 0)
    return true;
  const models_profile *p = models_config_find(gw->cfg->models, model);
  for (size_t i = 0; i < key->n_models; i++) {
    if (strcmp(key->models[i], model) == 0)
      return true;
    if (p && models_config_find(gw->cfg->models, key->models[i]) == p)
      return true;
  }
  gw_respond_error(req, anthropic, 403, "this API key may not use model \"%s\"", model);
  return false;
}

bool gw_auth_check(gateway *gw, hx_http_req *req, bool anthropic, const char *model) {
  return px_auth(gw, req, anthropic, model);
}

static void px_apply_profile(gateway *gw, json_t *body, const char *model) {
  const models_profile *pr = models_config_find(gw->cfg->models, model);
  if (!pr)
    return;
  const models_sampling *s = &pr->sampling;
#define PX_DEF(flag, key, val)                                                                     \
  if (s->flag && !json_object_get(body, key))                                                      \
    json_object_set_new(body, key, val);
  PX_DEF(has_temperature, "temperature", json_real(s->temperature));
  PX_DEF(has_top_p, "top_p", json_real(s->top_p));
  PX_DEF(has_top_k, "top_k", json_integer(s->top_k));
  PX_DEF(has_min_p, "min_p", json_real(s->min_p));
  PX_DEF(has_repetition_penalty, "repetition_penalty", json_real(s->repetition_penalty));
  PX_DEF(has_presence_penalty, "presence_penalty", json_real(s->presence_penalty));
  PX_DEF(has_frequency_penalty, "frequency_penalty", json_real(s->frequency_penalty));
  if (s->has_max_tokens && !json_object_get(body, "max_tokens") &&
      !json_object_get(body, "max_completion_tokens"))
    json_object_set_new(body, "max_tokens", json_integer(s->max_tokens));
#undef PX_DEF
  if (pr->has_thinking) {
    json_t *k = json_object_get(body, "chat_template_kwargs");
    if (!json_is_object(k)) {
      k = json_object();
      json_object_set_new(body, "chat_template_kwargs", k);
    }
    if (!json_object_get(k, "enable_thinking"))
      json_object_set_new(k, "enable_thinking", json_boolean(pr->thinking));
  }
}

static void px_handle(hx_http_req *req, gateway *gw, bool anthropic, bool count,
                      api_openai_kind kind) {
  if (atomic_load(&gw->draining)) {
    gw_respond_error(req, anthropic, 503, "cortex is shutting down");
    return;
  }
  hx_slice raw = hx_http_req_body(req);
  hx_err err = {0};
  json_t *in = hx_json_parse(raw.ptr ? raw.ptr : "", raw.len,
                             (hx_json_limits){gw->cfg->gateway.max_body_bytes, 128}, &err);
  if (!in) {
    if (!px_auth(gw, req, anthropic, NULL))
      return;
    gw_respond_error(req, anthropic, err.code == HX_ETOOLARGE ? 413 : 400,
                     "request body is not valid JSON: %s", err.msg);
    return;
  }
  px_req *p = calloc(1, sizeof *p);
  if (!p) {
    json_decref(in);
    gw_respond_error(req, anthropic, 500, "out of memory");
    return;
  }
  p->gw = gw;
  p->req = req;
  p->anthropic = anthropic;
  p->count_tokens = count;
  p->kind = kind;
  p->t0_ns = hx_http_req_start_ns(req);
  pthread_mutex_init(&p->call_mu, NULL);
  atomic_init(&p->client_gone, false);
  hx_buf_init(&p->errbody, PX_UPSTREAM_MAX_BYTES);
  hx_sse_parser_init(&p->sse, 16u << 20, px_on_event, p);
  hx_code rc;
  const char *model = NULL;
  if (anthropic) {
    if (count && json_is_object(in) && !json_object_get(in, "max_tokens"))
      json_object_set_new(in, "max_tokens", json_integer(1));
    rc = api_anth_request_translate(in, &p->body, &p->ainfo, &err);
    model = rc == HX_OK ? p->ainfo.model : NULL;
    p->stream = p->ainfo.stream && !count;
  } else {
    bool stream = false;
    rc = api_openai_request_check(in, kind, &model, &stream, &err);
    if (rc == HX_OK) {
      p->body = json_incref(in);
      p->stream = stream;
      if (stream)
        api_openai_request_want_usage(p->body);
    }
  }
  if (model)
    snprintf(p->model, sizeof p->model, "%s", model);
  json_decref(in);
  bool ok = px_auth(gw, req, anthropic, rc == HX_OK ? p->model : NULL);
  if (ok && rc != HX_OK)
    gw_respond_error(req, anthropic, 400, "%s", err.msg);
  if (ok && rc == HX_OK) {
    px_apply_profile(gw, p->body, p->model);
    if (anthropic && !count) {
      snprintf(p->msg_id, sizeof p->msg_id, "msg_%s", hx_http_req_id(req) + 4);
      p->anth = api_anth_stream_new(&p->ainfo, p->msg_id, px_anth_emit, p);
    }
    long n = atomic_fetch_add(&gw->streams, 1);
    if (anthropic && !count && !p->anth) {
      gw_respond_error(req, anthropic, 500, "out of memory");
      atomic_fetch_sub(&gw->streams, 1);
    } else if (n >= (long)gw->cfg->gateway.max_streams) {
      atomic_fetch_sub(&gw->streams, 1);
      gw_respond_error(req, anthropic, anthropic ? 529 : 503,
                       "too many concurrent requests (max_streams = %u)",
                       gw->cfg->gateway.max_streams);
    } else {
      hx_http_req_on_cancel(req, px_on_cancel, p);
      pthread_t t;
      pthread_attr_t attr;
      pthread_attr_init(&attr);
      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
      pthread_attr_setstacksize(&attr, 256 << 10);
      int e = pthread_create(&t, &attr, px_thread, p);
      pthread_attr_destroy(&attr);
      if (e == 0)
        return;
      hx_http_req_on_cancel(req, NULL, NULL);
      atomic_fetch_sub(&gw->streams, 1);
      gw_respond_error(req, anthropic, 503, "cannot start a worker thread");
    }
  }
  pthread_mutex_destroy(&p->call_mu);
  hx_sse_parser_free(&p->sse);
  api_anth_stream_free(p->anth);
  hx_buf_free(&p->errbody);
  json_decref(p->body);
  free(p);
}

static void px_chat(hx_http_req *req, void *ctx) {
  px_handle(req, ctx, false, false, API_OPENAI_CHAT);
}
static void px_completions(hx_http_req *req, void *ctx) {
  px_handle(req, ctx, false, false, API_OPENAI_COMPLETIONS);
}
static void px_messages(hx_http_req *req, void *ctx) {
  px_handle(req, ctx, true, false, API_OPENAI_CHAT);
}
static void px_count(hx_http_req *req, void *ctx) {
  px_handle(req, ctx, true, true, API_OPENAI_CHAT);
}

hx_code gw_routes_api(gateway *gw, hx_http_server *srv, hx_err *err) {
  hx_code rc = hx_http_server_route(srv, "POST", "/v1/chat/completions", px_chat, gw, err);
  if (rc == HX_OK)
    rc = hx_http_server_route(srv, "POST", "/v1/completions", px_completions, gw, err);
  if (rc == HX_OK)
    rc = hx_http_server_route(srv, "POST", "/v1/messages", px_messages, gw, err);
  if (rc == HX_OK)
    rc = hx_http_server_route(srv, "POST", "/v1/messages/count_tokens", px_count, gw, err);
  return rc;
}
