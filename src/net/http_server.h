/* http_server.h — a small HTTP/1.1 server over libmicrohttpd, shared by
 * neuron and cortex.
 *
 * What it owns: listening, an epoll thread pool, routing by exact method and
 * path, limits against hostile clients (body size → 413 before the body is
 * read when Content-Length says so, counted while receiving otherwise; header
 * size → 431; a deadline on receiving a whole request against slow clients;
 * a connection cap), a request id per request (the client's X-Request-Id when
 * it is sane, else generated; echoed in the response), one log line per
 * request, deferred responses, streamed responses (SSE) with a bounded queue
 * per response, prompt client-disconnect detection, and graceful shutdown.
 * It knows nothing about models or OpenAI beyond the default error shape.
 *
 * Request lifecycle. When the whole body has arrived, the route's handler is
 * called on a server thread with an hx_http_req. The handler (or any thread
 * it hands the request to) must eventually finish the request exactly once,
 * by one of:
 *   - hx_http_respond / _json / _error     (a complete response), or
 *   - hx_http_stream_begin, any number of hx_http_stream_write, then
 *     hx_http_stream_end                    (a streamed response).
 * Until then the request stays valid even if the client is gone; after the
 * finishing call the caller must not touch it again. A handler may return
 * before finishing: the connection is suspended (costs no thread) until the
 * response arrives. Handlers must not block for long: they run on the thread
 * pool that serves every connection.
 *
 * Disconnects. A monitor thread polls the sockets of requests in flight
 * (every ~20 ms) and, when the client has hung up, sets the request's
 * cancelled flag and calls its cancel callback once (from the monitor thread,
 * so the callback must be quick and thread-safe: set a flag). Writes to a
 * stream whose client is gone fail with HX_ECANCELLED.
 *
 * Thread safety: every hx_http_req function may be called from any thread,
 * but one request must be driven by one thread at a time. */
#ifndef HX_NET_HTTP_SERVER_H
#define HX_NET_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"

typedef struct hx_http_server hx_http_server;
typedef struct hx_http_req hx_http_req;

typedef void (*hx_http_handler)(hx_http_req *req, void *ctx);
typedef void (*hx_http_cancel_fn)(void *ctx);

/* Builds the body of a response the server generates itself (404, 405, 413,
 * 431, 503 while shutting down) into out; content type is JSON. status is the
 * HTTP status, type/code short strings ("invalid_request_error",
 * "body_too_large"), message human text. The default writes the OpenAI shape
 * {"error":{"message","type","param":null,"code"}}. */
typedef void (*hx_http_error_fn)(void *ctx, int status, const char *type, const char *code,
                                 const char *message, hx_buf *out);

typedef struct hx_http_server_config {
  const char *host;              /* IPv4/IPv6 literal or name; "0.0.0.0" all; NULL → 127.0.0.1 */
  uint16_t port;                 /* 0 → an ephemeral port (see hx_http_server_port) */
  int threads;                   /* epoll thread pool size; 0 → 4 */
  unsigned max_connections;      /* 0 → 256 */
  size_t body_max_bytes;         /* request body limit → 413; 0 → 8 MiB */
  size_t header_max_bytes;       /* request line + headers limit → 431; 0 → 32 KiB */
  unsigned idle_timeout_s;       /* inactivity on a connection; 0 → 60 */
  unsigned request_read_ms;      /* headers + body must arrive within; 0 → 30000 */
  size_t stream_queue_max_bytes; /* bytes buffered per stream before write blocks; 0 → 1 MiB */
  bool log_requests;             /* one INFO line per finished request */
  hx_http_error_fn error_fn;     /* NULL → OpenAI shape */
  void *error_ctx;
} hx_http_server_config;

/* Parses "HOST:PORT", "[V6]:PORT" or ":PORT" (host defaults to 0.0.0.0) into
 * host (NUL-terminated, host_cap bytes) and port. HX_EINVAL with a message
 * naming the text otherwise. */
hx_code hx_http_listen_parse(const char *text, char *host, size_t host_cap, uint16_t *port,
                             hx_err *err);

/* Creates a server (not yet listening). NULL only on OOM. */
hx_http_server *hx_http_server_create(const hx_http_server_config *cfg);

/* Registers handler for exactly (method, path); path has no query string.
 * Register everything before hx_http_server_start. A path registered for some
 * method but requested with another gets 405; an unknown path gets 404. */
hx_code hx_http_server_route(hx_http_server *srv, const char *method, const char *path,
                             hx_http_handler handler, void *ctx, hx_err *err);

/* Binds and starts serving. HX_EIO with the reason (address in use, ...). */
hx_code hx_http_server_start(hx_http_server *srv, hx_err *err);

/* The bound port (useful when config.port was 0); 0 before start. */
uint16_t hx_http_server_port(const hx_http_server *srv);

/* Requests handed to a handler and not yet finished. */
unsigned hx_http_server_inflight(const hx_http_server *srv);

/* Graceful shutdown: stop accepting new connections, wait up to grace_ms for
 * requests in flight to finish, then mark the rest cancelled (their cancel
 * callbacks run) and wait up to cancel_ms more for their owners to finish
 * them, then stop the daemon. Returns how many requests had to be cancelled.
 * Safe to call once; hx_http_server_free calls it with (0, 0) when needed. */
unsigned hx_http_server_shutdown(hx_http_server *srv, unsigned grace_ms, unsigned cancel_ms);

/* Shuts down if needed and frees; srv may be NULL. Requests still held by
 * their owners stay valid until finished (their writes then fail). */
void hx_http_server_free(hx_http_server *srv);

/* ---- request accessors (valid until the request is finished) ---- */

const char *hx_http_req_method(const hx_http_req *req);
const char *hx_http_req_path(const hx_http_req *req); /* without the query string */
/* The raw body (may contain NULs; data is also NUL-terminated). */
hx_slice hx_http_req_body(const hx_http_req *req);
/* Header value (case-insensitive name) or NULL. */
const char *hx_http_req_header(const hx_http_req *req, const char *name);
/* Query-string argument or NULL. */
const char *hx_http_req_query(const hx_http_req *req, const char *key);
/* "req-" + 16 hex digits, or the client's sane X-Request-Id (≤ 64 chars of
 * [A-Za-z0-9._:-]). */
const char *hx_http_req_id(const hx_http_req *req);
/* hx_time_mono_ns() when the request's headers had arrived. */
uint64_t hx_http_req_start_ns(const hx_http_req *req);

/* True once the client has hung up (or the server is shutting down and gave
 * up waiting). Cheap: an atomic load. */
bool hx_http_req_cancelled(const hx_http_req *req);
/* Registers fn(ctx) to run once when the request becomes cancelled; runs at
 * once (on this thread) if it already is. Replaces an earlier callback.
 * Pass fn == NULL to clear it before freeing ctx. Finishing the request
 * clears it too (waiting for a callback that is running), so ctx may be freed
 * right after the finishing call. */
void hx_http_req_on_cancel(hx_http_req *req, hx_http_cancel_fn fn, void *ctx);
/* Text appended to the request's log line ("model=x prompt=12 gen=30 ..."),
 * copied (up to 511 bytes). */
void hx_http_req_set_log_note(hx_http_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- finishing with a complete response ---- */

typedef struct hx_http_header {
  const char *name;
  const char *value;
} hx_http_header;

/* Sends status with body (copied) and content_type; headers (n_headers may be
 * 0) are added. Finishes req. Returns HX_ECANCELLED when the client is gone
 * (req is finished all the same). */
hx_code hx_http_respond(hx_http_req *req, int status, const char *content_type, const void *body,
                        size_t len, const hx_http_header *headers, size_t n_headers);
/* Same with a JSON body; STEALS the reference to body. */
hx_code hx_http_respond_json(hx_http_req *req, int status, json_t *body);
/* Error in the server's error shape (the config's error_fn; OpenAI by
 * default): {"error":{"message","type","param","code"}}. param may be NULL;
 * retry_after_s > 0 adds a Retry-After header (for 429/503). */
hx_code hx_http_respond_error(hx_http_req *req, int status, const char *type, const char *code,
                              const char *param, unsigned retry_after_s, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* The OpenAI error body {"error":{"message","type","param","code"}} (param
 * and code null when NULL). New reference. */
json_t *hx_http_error_json(const char *type, const char *code, const char *param,
                           const char *message);

/* ---- finishing with a streamed response ---- */

/* Starts a streamed response (chunked transfer encoding) with status and
 * content type, e.g. "text/event-stream" (then Cache-Control: no-cache is
 * added). HX_ECANCELLED when the client is gone already (req still needs
 * hx_http_stream_end). */
hx_code hx_http_stream_begin(hx_http_req *req, int status, const char *content_type,
                             const hx_http_header *headers, size_t n_headers);
/* Queues bytes (copied). Blocks while the queue is over its limit, up to
 * timeout_ms (0 = no wait). HX_ECANCELLED when the client is gone or the
 * server gave up on the request; HX_ETIMEOUT when the client reads too slowly
 * (the caller should then end the stream). */
hx_code hx_http_stream_write(hx_http_req *req, const void *data, size_t len, unsigned timeout_ms);
/* Convenience: one SSE event "data: <json>\n\n" (json not stolen). */
hx_code hx_http_stream_write_sse_json(hx_http_req *req, const json_t *json, unsigned timeout_ms);
/* Ends the stream after the queued bytes are sent. Finishes req. */
void hx_http_stream_end(hx_http_req *req);

#endif
