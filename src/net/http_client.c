/* http_client.c — blocking libcurl transfers with streaming callbacks,
 * timeouts and prompt cross-thread cancellation (see http_client.h).
 *
 * Each call owns a multi handle holding one easy handle; the calling thread
 * loops on curl_multi_poll() with a short cap so that timeouts are checked
 * between wake-ups, and hx_http_call_cancel() wakes the poll at once. */
#include "net/http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/time.h"

enum { HTTP_POLL_CAP_MS = 50, HTTP_DEFAULT_MAX_BYTES = 16 << 20 };

typedef enum { ABORT_NONE, ABORT_CALLBACK, ABORT_TOO_LARGE } http_abort;

struct hx_http_call {
  CURLM *multi;
  CURL *easy;
  atomic_bool cancelled;
  /* state of the running request */
  const hx_http_request *req;
  hx_http_response *resp;
  size_t max_bytes;
  uint64_t start_ns;
  uint64_t last_data_ns;
  bool status_seen;
  http_abort abort_reason;
};

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static void http_global_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void hx_http_client_global_init(void) { pthread_once(&http_once, http_global_init_once); }

hx_http_call *hx_http_call_new(void) {
  hx_http_client_global_init();
  hx_http_call *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->multi = curl_multi_init();
  c->easy = curl_easy_init();
  if (!c->multi || !c->easy) {
    hx_http_call_free(c);
    return NULL;
  }
  atomic_init(&c->cancelled, false);
  return c;
}

void hx_http_call_free(hx_http_call *c) {
  if (!c)
    return;
  if (c->easy)
    curl_easy_cleanup(c->easy);
  if (c->multi)
    curl_multi_cleanup(c->multi);
  free(c);
}

void hx_http_call_cancel(hx_http_call *c) {
  atomic_store(&c->cancelled, true);
  curl_multi_wakeup(c->multi);
}

bool hx_http_call_cancelled(const hx_http_call *c) {
  return atomic_load(&((hx_http_call *)c)->cancelled);
}

/* Fires the status callback once, when the final (non-1xx) header block has
 * ended. Returns false to abort. */
static bool http_status_reached(hx_http_call *c) {
  if (c->status_seen)
    return true;
  long code = 0;
  curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
  if (code >= 100 && code < 200)
    return true;
  c->status_seen = true;
  c->resp->status = (int)code;
  c->resp->got_first_byte = true;
  c->resp->ttfb_ms = (double)(hx_time_mono_ns() - c->start_ns) / 1e6;
  const char *ct = NULL;
  curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
  snprintf(c->resp->content_type, sizeof c->resp->content_type, "%s", ct ? ct : "");
  c->last_data_ns = hx_time_mono_ns();
  if (c->req->on_status && c->req->on_status(c->req->ud, (int)code, c->resp->content_type)) {
    c->abort_reason = ABORT_CALLBACK;
    return false;
  }
  return true;
}

static size_t http_header_cb(char *p, size_t size, size_t n, void *ud) {
  hx_http_call *c = ud;
  size_t len = size * n;
  if ((len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n')) {
    if (!http_status_reached(c))
      return 0;
  }
  return len;
}

static size_t http_write_cb(char *p, size_t size, size_t n, void *ud) {
  hx_http_call *c = ud;
  size_t len = size * n;
  if (!http_status_reached(c))
    return 0;
  if (atomic_load(&c->cancelled))
    return 0;
  size_t total;
  if (hx_size_add(c->resp->body_bytes, len, &total) != 0 || total > c->max_bytes) {
    c->abort_reason = ABORT_TOO_LARGE;
    return 0;
  }
  c->resp->body_bytes = total;
  c->last_data_ns = hx_time_mono_ns();
  if (c->req->on_data) {
    if (c->req->on_data(c->req->ud, p, len) != 0) {
      c->abort_reason = ABORT_CALLBACK;
      return 0;
    }
  } else if (hx_buf_append(&c->resp->body, p, len) != HX_OK) {
    c->abort_reason = ABORT_TOO_LARGE;
    return 0;
  }
  return len;
}

static hx_code http_setup(hx_http_call *c, const hx_http_request *req, struct curl_slist **hdrs,
                          hx_err *err) {
  CURL *e = c->easy;
  curl_easy_reset(e);
  curl_easy_setopt(e, CURLOPT_URL, req->url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 5000L);
  if (req->total_timeout_ms > 0)
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->total_timeout_ms);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  const char *method = req->method ? req->method : (req->body ? "POST" : "GET");
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else {
    if (strcmp(method, "POST") != 0)
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
  }
  struct curl_slist *l = curl_slist_append(NULL, "Expect:");
  for (size_t i = 0; l && i < HX_HTTP_CLIENT_MAX_HEADERS && req->headers[i]; i++) {
    struct curl_slist *n = curl_slist_append(l, req->headers[i]);
    if (!n) {
      curl_slist_free_all(l);
      l = NULL;
    } else {
      l = n;
    }
  }
  if (!l)
    return hx_err_set(err, HX_ENOMEM, "out of memory building request headers");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, l);
  *hdrs = l;
  return HX_OK;
}

static hx_code http_result(hx_http_call *c, CURLcode cc, const char *url, hx_err *err) {
  if (atomic_load(&c->cancelled))
    return hx_err_set(err, HX_ECANCELLED, "%s: request cancelled", url);
  if (c->abort_reason == ABORT_TOO_LARGE)
    return hx_err_set(err, HX_ETOOLARGE, "%s: response exceeds %zu bytes", url, c->max_bytes);
  if (c->abort_reason == ABORT_CALLBACK)
    return hx_err_set(err, HX_ECANCELLED, "%s: transfer stopped by the consumer", url);
  switch (cc) {
  case CURLE_OK:
    return HX_OK;
  case CURLE_OPERATION_TIMEDOUT:
    return hx_err_set(err, HX_ETIMEOUT, "%s: %s", url, curl_easy_strerror(cc));
  default:
    return hx_err_set(err, HX_EIO, "%s: %s", url, curl_easy_strerror(cc));
  }
}

hx_code hx_http_call_run(hx_http_call *c, const hx_http_request *req, hx_http_response *resp,
                         hx_err *err) {
  HX_ASSERT(c && req && req->url && resp);
  memset(resp, 0, sizeof *resp);
  c->max_bytes = req->max_response_bytes ? req->max_response_bytes : HTTP_DEFAULT_MAX_BYTES;
  hx_buf_init(&resp->body, c->max_bytes);
  c->req = req;
  c->resp = resp;
  c->status_seen = false;
  c->abort_reason = ABORT_NONE;
  c->start_ns = c->last_data_ns = hx_time_mono_ns();
  if (atomic_load(&c->cancelled))
    return hx_err_set(err, HX_ECANCELLED, "%s: request cancelled", req->url);

  struct curl_slist *hdrs = NULL;
  hx_code rc = http_setup(c, req, &hdrs, err);
  if (rc != HX_OK)
    return rc;
  curl_multi_add_handle(c->multi, c->easy);
  CURLcode result = CURLE_OK;
  bool done = false;
  const char *timeout_what = NULL;
  while (!done) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(c->multi, &running);
    if (mc != CURLM_OK) {
      result = CURLE_RECV_ERROR;
      break;
    }
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
      if (m->msg == CURLMSG_DONE) {
        result = m->data.result;
        done = true;
      }
    }
    if (done || running == 0) {
      done = true;
      break;
    }
    if (atomic_load(&c->cancelled))
      break;
    uint64_t now = hx_time_mono_ns();
    double since_start_ms = (double)(now - c->start_ns) / 1e6;
    double since_data_ms = (double)(now - c->last_data_ns) / 1e6;
    if (!c->status_seen && req->first_byte_timeout_ms > 0 &&
        since_start_ms > (double)req->first_byte_timeout_ms) {
      timeout_what = "first byte";
      break;
    }
    if (c->status_seen && req->idle_timeout_ms > 0 &&
        since_data_ms > (double)req->idle_timeout_ms) {
      timeout_what = "idle";
      break;
    }
    if (req->on_tick && req->on_tick(req->ud) != 0) {
      c->abort_reason = ABORT_CALLBACK;
      break;
    }
    curl_multi_poll(c->multi, NULL, 0, HTTP_POLL_CAP_MS, NULL);
  }
  curl_multi_remove_handle(c->multi, c->easy);
  curl_slist_free_all(hdrs);
  if (timeout_what) {
    long ms = timeout_what[0] == 'f' ? req->first_byte_timeout_ms : req->idle_timeout_ms;
    return hx_err_set(err, HX_ETIMEOUT, "%s: no %s within %ld ms", req->url,
                      timeout_what[0] == 'f' ? "response" : "data", ms);
  }
  if (!done && c->abort_reason == ABORT_CALLBACK)
    return hx_err_set(err, HX_ECANCELLED, "%s: transfer stopped by the consumer", req->url);
  if (!done && !atomic_load(&c->cancelled))
    return hx_err_set(err, HX_EIO, "%s: transfer failed", req->url);
  return http_result(c, result, req->url, err);
}

hx_code hx_http_fetch(const char *method, const char *url, const char *body, long timeout_ms,
                      size_t max_bytes, hx_http_response *resp, hx_err *err) {
  hx_http_call *c = hx_http_call_new();
  if (!c) {
    memset(resp, 0, sizeof *resp);
    hx_buf_init(&resp->body, 1);
    return hx_err_set(err, HX_ENOMEM, "out of memory creating HTTP call");
  }
  hx_http_request rq = {
      .method = method,
      .url = url,
      .body = body,
      .body_len = body ? strlen(body) : 0,
      .total_timeout_ms = timeout_ms,
      .connect_timeout_ms = timeout_ms > 0 && timeout_ms < 5000 ? timeout_ms : 5000,
      .max_response_bytes = max_bytes,
  };
  if (body)
    rq.headers[0] = "Content-Type: application/json";
  hx_code rc = hx_http_call_run(c, &rq, resp, err);
  hx_http_call_free(c);
  return rc;
}
