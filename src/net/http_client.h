/* http_client.h — outbound HTTP/1.1 over libcurl, with streaming reads.
 *
 * Threading model: a call runs on the caller's thread (cortex handles each
 * downstream request on its own worker thread; the workload is a handful of
 * long streams, not 10k tiny ones). Each call drives one easy handle through
 * a private multi handle so that hx_http_call_cancel(), from any thread, can
 * wake the transfer with curl_multi_wakeup() and abort it at once instead of
 * waiting for libcurl's ~1 s progress tick.
 *
 * Timeouts: connect, first byte (time from request sent until the response
 * status line arrives), idle (no body bytes for that long) and total. Every
 * response is bounded by max_response_bytes (HX_ETOOLARGE past it).
 *
 * Usage:
 *   hx_http_call *c = hx_http_call_new();
 *   hx_http_request rq = {.method = "POST", .url = u, .body = b, .body_len = n,
 *                         .on_data = cb, .ud = me, ...};
 *   hx_http_response rs;
 *   hx_code rc = hx_http_call_run(c, &rq, &rs, &err);  // blocks
 *   hx_http_call_free(c);
 * Another thread may call hx_http_call_cancel(c) while run blocks; run then
 * returns HX_ECANCELLED promptly (within a few ms). */
#ifndef HX_NET_HTTP_CLIENT_H
#define HX_NET_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/status.h"

enum { HX_HTTP_CLIENT_MAX_HEADERS = 32 };

/* Called once when the status line and headers have arrived (before any body
 * chunk). content_type may be "" when absent. Return 0 to continue, non-zero
 * to abort (run returns HX_ECANCELLED). */
typedef int (*hx_http_on_status)(void *ud, int status, const char *content_type);
/* Called for each body chunk as it arrives (chunk is not NUL-terminated and
 * is only valid during the call). Return 0 to continue, non-zero to abort
 * (run returns HX_ECANCELLED). When NULL, the body is collected into
 * hx_http_response.body instead. */
typedef int (*hx_http_on_data)(void *ud, const char *chunk, size_t len);
/* Called on the calling thread between polls (at least every ~50 ms while the
 * transfer runs), e.g. to send keep-alives downstream. Return non-zero to
 * abort (HX_ECANCELLED). */
typedef int (*hx_http_on_tick)(void *ud);

typedef struct hx_http_request {
  const char *method;                              /* "GET", "POST"; NULL = GET (POST when body) */
  const char *url;                                 /* absolute http:// URL */
  const char *headers[HX_HTTP_CLIENT_MAX_HEADERS]; /* "Name: value", NULL-terminated or full */
  const char *body;                                /* may be NULL */
  size_t body_len;                                 /* bytes of body */
  long connect_timeout_ms;                         /* 0 = 5000 */
  long first_byte_timeout_ms;                      /* 0 = none: status line must arrive in this */
  long idle_timeout_ms;                            /* 0 = none: max gap between body bytes */
  long total_timeout_ms;                           /* 0 = none */
  size_t max_response_bytes;   /* 0 = 16 MiB: body bytes (collected or streamed) */
  hx_http_on_status on_status; /* may be NULL */
  hx_http_on_data on_data;     /* may be NULL: collect into response body */
  hx_http_on_tick on_tick;     /* may be NULL */
  void *ud;
} hx_http_request;

typedef struct hx_http_response {
  int status; /* HTTP status, 0 when none arrived */
  char content_type[128];
  hx_buf body;         /* collected body when on_data == NULL; caller frees */
  size_t body_bytes;   /* total body bytes received (streamed or collected) */
  bool got_first_byte; /* any body byte or the status line arrived */
  double ttfb_ms;      /* request start → status line */
} hx_http_response;

typedef struct hx_http_call hx_http_call;

/* Returns a new call object or NULL on OOM. One call runs at most one
 * request at a time, but may be reused sequentially. */
hx_http_call *hx_http_call_new(void);
/* Frees the call; NULL allowed. Must not be running. */
void hx_http_call_free(hx_http_call *c);
/* Thread-safe, async-signal-unsafe. Aborts the running (or next) request. */
void hx_http_call_cancel(hx_http_call *c);
bool hx_http_call_cancelled(const hx_http_call *c);

/* Performs the request, blocking. resp is initialized by this call (always;
 * free resp->body with hx_buf_free afterwards, also on failure). Returns
 * HX_OK when a complete response arrived (any HTTP status), HX_ETIMEOUT when
 * a timeout fired (err names which), HX_ECANCELLED on cancel or callback
 * abort, HX_ETOOLARGE past max_response_bytes, HX_EIO on connection failure
 * (refused, reset, closed early). */
hx_code hx_http_call_run(hx_http_call *c, const hx_http_request *req, hx_http_response *resp,
                         hx_err *err);

/* One-shot helper: method+url(+JSON body), collected body, total timeout.
 * Adds "Content-Type: application/json" when body != NULL. */
hx_code hx_http_fetch(const char *method, const char *url, const char *body, long timeout_ms,
                      size_t max_bytes, hx_http_response *resp, hx_err *err);

/* Call once at process start before threads (wraps curl_global_init). */
void hx_http_client_global_init(void);

#endif
