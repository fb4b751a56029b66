/* http_server.c — libmicrohttpd wrapper: routing, limits, deferred and
 * streamed responses, disconnect detection, graceful shutdown.
 *
 * Concurrency model. MHD runs an epoll thread pool. All mutable state of the
 * server and of every request is guarded by one mutex (srv->mu): the workload
 * is a handful of concurrent requests, so simplicity wins over lock
 * granularity. Each request has its own condition variable on which a stream
 * writer waits for queue room.
 *
 * Lifetimes. The server object is reference counted: its owner holds one
 * reference and every live request holds one, so a request finished by its
 * owner after hx_http_server_free still finds a valid mutex. A request has up
 * to three references: the connection (dropped when MHD reports it
 * completed), the owner (taken at dispatch, dropped at the finishing call)
 * and a streamed response (dropped when MHD frees the response).
 *
 * MHD is touched from non-MHD threads only through MHD_resume_connection, and
 * only while the request is marked suspended (set and cleared under srv->mu,
 * suspension happens only inside MHD callbacks), so no call can reach a
 * connection MHD has already freed. */
#include "net/http_server.h"

#include <errno.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/json.h"
#include "base/log.h"
#include "base/time.h"

enum {
  MONITOR_PERIOD_MS = 20,
  METHOD_MAX = 16,
  REQ_ID_MAX = 72,
  NOTE_MAX = 512,
  HEADERS_COPY_MAX = 256 * 1024, /* bounded by MHD's memory limit anyway */
};

typedef struct route {
  char *method;
  char *path;
  hx_http_handler fn;
  void *ctx;
} route;

/* Per-connection bookkeeping for the read deadline (slow clients). */
typedef struct conn_track {
  struct conn_track *prev, *next;
  int fd;
  uint64_t deadline_ns; /* 0: no deadline running */
} conn_track;

struct hx_http_req {
  hx_http_server *srv;
  struct MHD_Connection *conn; /* NULL once MHD reported completion */
  conn_track *track;           /* NULL once completed */
  hx_http_req *prev, *next;    /* srv->live list (every request with a connection) */
  pthread_cond_t cv;           /* stream queue room / state changes */
  int refs;

  char method[METHOD_MAX];
  char *path;
  hx_buf body;
  hx_buf headers; /* copied at dispatch: kind byte, name NUL, value NUL, ... */
  char id[REQ_ID_MAX];
  uint64_t start_ns;
  const route *route; /* NULL: no handler (404/405) */
  bool path_known;    /* some route has this path (405 rather than 404) */

  bool dispatched; /* handler called (owner reference taken) */
  bool finished;   /* owner finished it */
  bool suspended;  /* MHD connection suspended by us */
  bool srv_dead;   /* daemon stopping: never suspend again */
  bool rejected;   /* a server-generated response was queued */
  atomic_bool cancelled;
  bool cancel_fired;
  bool cancel_running;
  hx_http_cancel_fn cancel_fn;
  void *cancel_ctx;

  struct MHD_Response *pending; /* complete response waiting to be queued */
  int status;                   /* for the log line; 0 until known */
  bool streaming;
  bool stream_queued; /* MHD response created and queued */
  bool stream_ended;
  hx_buf queue; /* stream bytes not yet handed to MHD */
  size_t queue_max;
  uint64_t bytes_out;
  char note[NOTE_MAX];
};

struct hx_http_server {
  hx_http_server_config cfg;
  char host[256];
  route *routes;
  size_t n_routes, cap_routes;
  struct MHD_Daemon *daemon;
  uint16_t port;

  pthread_mutex_t mu;
  pthread_cond_t cv; /* inflight changes */
  int refs;          /* owner + live requests */
  hx_http_req *live; /* requests whose connection is alive */
  conn_track *conns;
  unsigned inflight; /* dispatched and not finished */
  unsigned n_conns;
  bool started, shut_down, stop_monitor;
  pthread_t monitor;
  uint64_t id_seed;
  atomic_uint_fast64_t id_counter;
};

/* ---------------------------------------------------------------- helpers */

static void srv_unref_locked(hx_http_server *srv, bool *free_it) {
  HX_ASSERT(srv->refs > 0);
  srv->refs--;
  *free_it = srv->refs == 0;
}

static void srv_destroy(hx_http_server *srv) {
  for (size_t i = 0; i < srv->n_routes; i++) {
    free(srv->routes[i].method);
    free(srv->routes[i].path);
  }
  free(srv->routes);
  pthread_mutex_destroy(&srv->mu);
  pthread_cond_destroy(&srv->cv);
  free(srv);
}

static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static bool req_id_sane(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok)
      return false;
  }
  return true;
}

static void default_error_body(int status, const char *type, const char *code, const char *message,
                               hx_buf *out) {
  (void)status;
  json_t *j = hx_http_error_json(type, code, NULL, message);
  if (j) {
    hx_json_dump(j, out);
    json_decref(j);
  }
}

static void error_body(hx_http_server *srv, int status, const char *type, const char *code,
                       const char *message, hx_buf *out) {
  if (srv->cfg.error_fn)
    srv->cfg.error_fn(srv->cfg.error_ctx, status, type, code, message, out);
  else
    default_error_body(status, type, code, message, out);
}

json_t *hx_http_error_json(const char *type, const char *code, const char *param,
                           const char *message) {
  return json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", message ? message : "", "type",
                   type ? type : "server_error", "param", param ? json_string(param) : json_null(),
                   "code", code ? json_string(code) : json_null());
}

static struct MHD_Response *response_make(hx_http_req *req, const void *body, size_t len,
                                          const char *content_type, const hx_http_header *headers,
                                          size_t n_headers) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return NULL;
  if (content_type)
    MHD_add_response_header(r, "Content-Type", content_type);
  MHD_add_response_header(r, "X-Request-Id", req->id);
  for (size_t i = 0; i < n_headers; i++)
    MHD_add_response_header(r, headers[i].name, headers[i].value);
  return r;
}

/* Queues a server-generated error on the connection (inside the access
 * handler only). */
static enum MHD_Result queue_error(hx_http_req *req, struct MHD_Connection *c, int status,
                                   const char *type, const char *code, const char *message,
                                   const hx_http_header *headers, size_t n_headers) {
  hx_buf b;
  hx_buf_init(&b, 1 << 16);
  error_body(req->srv, status, type, code, message, &b);
  struct MHD_Response *r =
      response_make(req, b.data ? b.data : "", b.len, "application/json", headers, n_headers);
  hx_buf_free(&b);
  if (!r)
    return MHD_NO;
  enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  req->rejected = true;
  req->status = status;
  return ok;
}

/* ------------------------------------------------------- request objects */

static void req_log(hx_http_req *req) {
  if (!req->srv->cfg.log_requests)
    return;
  double ms = hx_time_ns_to_ms(hx_time_mono_ns() - req->start_ns);
  const char *old = hx_log_request_id();
  char saved[64];
  snprintf(saved, sizeof saved, "%s", old);
  hx_log_set_request_id(req->id);
  HX_INFO("%s %s %d %.1fms out=%" PRIu64 "B%s%s%s", req->method, req->path ? req->path : "?",
          req->status, ms, req->bytes_out, req->note[0] ? " " : "", req->note,
          atomic_load(&req->cancelled) ? " cancelled" : "");
  hx_log_set_request_id(saved[0] ? saved : NULL);
}

static void req_destroy(hx_http_req *req) {
  req_log(req);
  if (req->pending)
    MHD_destroy_response(req->pending);
  hx_buf_free(&req->body);
  hx_buf_free(&req->headers);
  hx_buf_free(&req->queue);
  free(req->path);
  pthread_cond_destroy(&req->cv);
  free(req);
}

/* Drops one reference; srv->mu held on entry, released on return. */
static void req_unref_unlock(hx_http_req *req) {
  hx_http_server *srv = req->srv;
  HX_ASSERT(req->refs > 0);
  bool last = --req->refs == 0;
  bool free_srv = false;
  if (last)
    srv_unref_locked(srv, &free_srv);
  pthread_mutex_unlock(&srv->mu);
  if (last)
    req_destroy(req);
  if (free_srv)
    srv_destroy(srv);
}

static hx_http_req *req_new(hx_http_server *srv, const char *method, const char *url) {
  hx_http_req *req = calloc(1, sizeof *req);
  if (!req)
    return NULL;
  req->path = strdup(url ? url : "");
  if (!req->path) {
    free(req);
    return NULL;
  }
  char *q = strchr(req->path, '?');
  if (q)
    *q = '\0';
  snprintf(req->method, sizeof req->method, "%s", method ? method : "");
  pthread_cond_init(&req->cv, NULL);
  hx_buf_init(&req->body, srv->cfg.body_max_bytes);
  hx_buf_init(&req->headers, HEADERS_COPY_MAX);
  hx_buf_init(&req->queue, SIZE_MAX / 2);
  req->queue_max = srv->cfg.stream_queue_max_bytes;
  req->srv = srv;
  req->start_ns = hx_time_mono_ns();
  atomic_init(&req->cancelled, false);
  uint64_t n = atomic_fetch_add(&srv->id_counter, 1);
  snprintf(req->id, sizeof req->id, "req-%016" PRIx64, mix64(srv->id_seed ^ n));
  return req;
}

/* Sets the cancelled flag and takes the callback to run (srv->mu held).
 * Returns true when the caller must run it (then outside the lock, holding a
 * reference, and call cancel_done_locked afterwards). */
static bool req_cancel_locked(hx_http_req *req) {
  atomic_store(&req->cancelled, true);
  pthread_cond_broadcast(&req->cv);
  if (req->cancel_fired || !req->cancel_fn)
    return false;
  req->cancel_fired = true;
  req->cancel_running = true;
  req->refs++;
  return true;
}

static void req_run_cancel(hx_http_req *req) {
  hx_http_server *srv = req->srv;
  pthread_mutex_lock(&srv->mu);
  hx_http_cancel_fn fn = req->cancel_fn;
  void *ctx = req->cancel_ctx;
  pthread_mutex_unlock(&srv->mu);
  if (fn)
    fn(ctx);
  pthread_mutex_lock(&srv->mu);
  req->cancel_running = false;
  pthread_cond_broadcast(&req->cv);
  req_unref_unlock(req);
}

/* Wakes MHD for this request if we suspended it (srv->mu held). */
static void req_wake_locked(hx_http_req *req) {
  if (req->suspended && req->conn) {
    req->suspended = false;
    MHD_resume_connection(req->conn);
  }
}

/* The owner is done with req (srv->mu held; released on return). */
static void req_finish_unlock(hx_http_req *req) {
  hx_http_server *srv = req->srv;
  HX_ASSERT(req->dispatched && !req->finished);
  while (req->cancel_running) /* the owner may free the callback's context next */
    pthread_cond_wait(&req->cv, &srv->mu);
  req->cancel_fn = NULL;
  req->cancel_ctx = NULL;
  req->finished = true;
  HX_ASSERT(srv->inflight > 0);
  srv->inflight--;
  pthread_cond_broadcast(&srv->cv);
  req_unref_unlock(req);
}

/* ------------------------------------------------------------ MHD glue */

static void copy_header(hx_http_req *req, char kind, const char *k, const char *v) {
  if (!k)
    return;
  hx_buf *b = &req->headers;
  if (hx_buf_append_char(b, kind) != HX_OK || hx_buf_append(b, k, strlen(k) + 1) != HX_OK ||
      hx_buf_append(b, v ? v : "", strlen(v ? v : "") + 1) != HX_OK)
    return; /* bounded by MHD's header limit; past ours the rest is dropped */
}

static enum MHD_Result header_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
  copy_header(cls, kind == MHD_HEADER_KIND ? 'H' : 'Q', key, value);
  return MHD_YES;
}

static const route *route_find(hx_http_server *srv, const char *method, const char *path,
                               bool *path_known) {
  *path_known = false;
  for (size_t i = 0; i < srv->n_routes; i++) {
    if (strcmp(srv->routes[i].path, path) != 0)
      continue;
    *path_known = true;
    if (strcmp(srv->routes[i].method, method) == 0)
      return &srv->routes[i];
  }
  return NULL;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max) {
  (void)pos;
  hx_http_req *req = cls;
  hx_http_server *srv = req->srv;
  pthread_mutex_lock(&srv->mu);
  ssize_t n;
  if (req->queue.len > 0) {
    size_t k = req->queue.len < max ? req->queue.len : max;
    memcpy(out, req->queue.data, k);
    hx_buf_consume(&req->queue, k);
    req->bytes_out += k;
    pthread_cond_broadcast(&req->cv);
    n = (ssize_t)k;
  } else if (req->stream_ended) {
    n = MHD_CONTENT_READER_END_OF_STREAM;
  } else if (req->srv_dead || atomic_load(&req->cancelled)) {
    n = MHD_CONTENT_READER_END_WITH_ERROR;
  } else {
    /* Nothing to send yet: leave the event loop until the writer wakes us. */
    req->suspended = true;
    MHD_suspend_connection(req->conn);
    n = 0;
  }
  pthread_mutex_unlock(&srv->mu);
  return n;
}

static void stream_reader_free(void *cls) {
  hx_http_req *req = cls;
  pthread_mutex_lock(&req->srv->mu);
  req_unref_unlock(req);
}

/* Queues whatever the owner produced (srv->mu held). Returns MHD_NO to close
 * the connection. The queued response's own reference goes to *drop, which
 * the caller must release with MHD_destroy_response after unlocking srv->mu:
 * when the queueing failed that call frees the response and runs
 * stream_reader_free, which takes srv->mu itself. */
static enum MHD_Result deliver_locked(hx_http_req *req, struct MHD_Connection *c,
                                      struct MHD_Response **drop) {
  if (req->pending) {
    struct MHD_Response *r = req->pending;
    req->pending = NULL;
    *drop = r;
    return MHD_queue_response(c, (unsigned)req->status, r);
  }
  if (req->streaming && !req->stream_queued) {
    struct MHD_Response *r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 4096, stream_reader, req, stream_reader_free);
    if (!r)
      return MHD_NO;
    req->refs++; /* the response's reference, dropped in stream_reader_free */
    req->stream_queued = true;
    MHD_add_response_header(r, "X-Request-Id", req->id);
    hx_buf *h = &req->headers; /* stream headers were stashed as 'R' entries */
    for (size_t off = 0; off < h->len;) {
      char kind = h->data[off];
      const char *k = h->data + off + 1;
      const char *v = k + strlen(k) + 1;
      off = (size_t)(v - h->data) + strlen(v) + 1;
      if (kind == 'R')
        MHD_add_response_header(r, k, v);
    }
    *drop = r;
    return MHD_queue_response(c, (unsigned)req->status, r);
  }
  if (req->srv_dead)
    return MHD_NO;
  if (!req->suspended) {
    req->suspended = true;
    MHD_suspend_connection(c);
  }
  return MHD_YES;
}

static conn_track *conn_of(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? ci->socket_context : NULL;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls) {
  (void)version;
  hx_http_server *srv = cls;
  hx_http_req *req = *con_cls;

  if (!req) { /* headers complete: a new request */
    req = req_new(srv, method, url);
    if (!req)
      return MHD_NO;
    pthread_mutex_lock(&srv->mu);
    req->refs = 1; /* the connection's */
    srv->refs++;
    req->conn = c;
    req->track = conn_of(c);
    req->next = srv->live;
    if (srv->live)
      srv->live->prev = req;
    srv->live = req;
    pthread_mutex_unlock(&srv->mu);
    *con_cls = req;
    const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && req_id_sane(rid))
      snprintf(req->id, sizeof req->id, "%s", rid);

    pthread_mutex_lock(&srv->mu);
    bool closing = srv->shut_down;
    pthread_mutex_unlock(&srv->mu);
    if (closing)
      return queue_error(req, c, 503, "server_error", "shutting_down", "server is shutting down",
                         NULL, 0);
    bool known;
    req->route = route_find(srv, req->method, req->path, &known);
    req->path_known = known; /* unknown routes are answered once the body is in */
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
      char *end = NULL;
      errno = 0;
      unsigned long long n = strtoull(cl, &end, 10);
      if (errno || end == cl || *end || n > srv->cfg.body_max_bytes) {
        char msg[160];
        snprintf(msg, sizeof msg, "request body of %.24s bytes is larger than the limit of %zu", cl,
                 srv->cfg.body_max_bytes);
        return queue_error(req, c, 413, "invalid_request_error", "body_too_large", msg, NULL, 0);
      }
    }
    return MHD_YES;
  }

  if (*upload_size > 0) {
    if (req->rejected) { /* discard (MHD closes such connections) */
      *upload_size = 0;
      return MHD_YES;
    }
    if (hx_buf_append(&req->body, upload, *upload_size) != HX_OK) {
      *upload_size = 0;
      char msg[160];
      snprintf(msg, sizeof msg, "request body is larger than the limit of %zu bytes",
               srv->cfg.body_max_bytes);
      if (queue_error(req, c, 413, "invalid_request_error", "body_too_large", msg, NULL, 0) ==
          MHD_YES)
        return MHD_YES;
      return MHD_NO; /* could not answer mid-upload: drop the connection */
    }
    *upload_size = 0;
    return MHD_YES;
  }

  if (req->rejected)
    return MHD_YES;
  if (!req->route) { /* answered after the body so that keep-alive survives */
    char msg[256];
    if (req->path_known) {
      snprintf(msg, sizeof msg, "method %.16s is not allowed on %.128s", req->method, req->path);
      return queue_error(req, c, 405, "invalid_request_error", "method_not_allowed", msg, NULL, 0);
    }
    snprintf(msg, sizeof msg, "no such endpoint: %.16s %.160s", req->method, req->path);
    return queue_error(req, c, 404, "invalid_request_error", "not_found", msg, NULL, 0);
  }

  pthread_mutex_lock(&srv->mu);
  if (!req->dispatched) {
    if (req->track)
      req->track->deadline_ns = 0; /* the whole request has arrived */
    req->dispatched = true;
    req->refs++; /* the owner's */
    srv->inflight++;
    pthread_mutex_unlock(&srv->mu);
    if (!req->body.data)
      hx_buf_append(&req->body, "", 0);
    MHD_get_connection_values(c, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, header_iter, req);
    req->route->fn(req, req->route->ctx);
    pthread_mutex_lock(&srv->mu);
  }
  struct MHD_Response *drop = NULL;
  enum MHD_Result ok = deliver_locked(req, c, &drop);
  pthread_mutex_unlock(&srv->mu);
  if (drop)
    MHD_destroy_response(drop);
  return ok;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)c;
  hx_http_server *srv = cls;
  hx_http_req *req = *con_cls;
  if (!req)
    return;
  *con_cls = NULL;
  pthread_mutex_lock(&srv->mu);
  req->conn = NULL;
  req->suspended = false;
  if (req->prev)
    req->prev->next = req->next;
  else
    srv->live = req->next;
  if (req->next)
    req->next->prev = req->prev;
  req->prev = req->next = NULL;
  conn_track *t = req->track;
  req->track = NULL;
  if (t) /* the next request on this connection must arrive in time too */
    t->deadline_ns = hx_time_mono_ns() + (uint64_t)srv->cfg.request_read_ms * 1000000ull;
  bool run_cb = false;
  if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
    HX_DEBUG("http: %s: connection ended early (MHD termination code %d)", req->id, (int)toe);
    if (!req->status || (req->dispatched && !req->finished))
      req->status = 499; /* client closed request (nginx's convention) */
    if (!(req->dispatched && req->finished))
      run_cb = req_cancel_locked(req);
  }
  pthread_cond_broadcast(&req->cv);
  pthread_cond_broadcast(&srv->cv); /* shutdown waits for responses to be sent */
  if (run_cb) {
    pthread_mutex_unlock(&srv->mu);
    req_run_cancel(req);
    pthread_mutex_lock(&srv->mu);
  }
  req_unref_unlock(req);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
  hx_http_server *srv = cls;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    conn_track *t = calloc(1, sizeof *t);
    *socket_context = t;
    if (!t)
      return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    t->fd = ci ? ci->connect_fd : -1;
    t->deadline_ns = hx_time_mono_ns() + (uint64_t)srv->cfg.request_read_ms * 1000000ull;
    pthread_mutex_lock(&srv->mu);
    t->next = srv->conns;
    if (srv->conns)
      srv->conns->prev = t;
    srv->conns = t;
    srv->n_conns++;
    pthread_mutex_unlock(&srv->mu);
  } else {
    conn_track *t = *socket_context;
    *socket_context = NULL;
    if (!t)
      return;
    pthread_mutex_lock(&srv->mu);
    if (t->prev)
      t->prev->next = t->next;
    else
      srv->conns = t->next;
    if (t->next)
      t->next->prev = t->prev;
    srv->n_conns--;
    for (hx_http_req *r = srv->live; r; r = r->next)
      if (r->track == t)
        r->track = NULL;
    pthread_mutex_unlock(&srv->mu);
    free(t);
  }
}

/* ------------------------------------------------------------- monitor */

/* Every MONITOR_PERIOD_MS: shuts down connections past their read deadline
 * and cancels requests in flight whose client has hung up. */
static void *monitor_main(void *arg) {
  hx_http_server *srv = arg;
  pthread_mutex_lock(&srv->mu);
  while (!srv->stop_monitor) {
    uint64_t now = hx_time_mono_ns();
    for (conn_track *t = srv->conns; t; t = t->next) {
      if (t->deadline_ns && now > t->deadline_ns && t->fd >= 0) {
        t->deadline_ns = 0;
        HX_WARN("http: closing connection (fd %d): request not received within %u ms", t->fd,
                srv->cfg.request_read_ms);
        shutdown(t->fd, SHUT_RDWR);
      }
    }
    /* Requests whose owner still works on them: did the client leave? */
    hx_http_req *fire[64];
    size_t n_fire = 0;
    for (hx_http_req *r = srv->live; r; r = r->next) {
      if (!r->dispatched || r->finished || atomic_load(&r->cancelled) || !r->track ||
          r->track->fd < 0)
        continue;
      struct pollfd p = {.fd = r->track->fd, .events = POLLRDHUP};
      if (n_fire == 64)
        break; /* the rest are checked next round */
      if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        HX_DEBUG("http: %s: client hung up (fd %d, revents 0x%x)", r->id, r->track->fd,
                 (unsigned)p.revents);
        if (req_cancel_locked(r))
          fire[n_fire++] = r;
        /* Wake a suspended stream so MHD notices the hang-up and closes. */
        req_wake_locked(r);
      }
    }
    if (n_fire) {
      pthread_mutex_unlock(&srv->mu);
      for (size_t i = 0; i < n_fire; i++)
        req_run_cancel(fire[i]);
      pthread_mutex_lock(&srv->mu);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += MONITOR_PERIOD_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
  }
  pthread_mutex_unlock(&srv->mu);
  return NULL;
}

/* ------------------------------------------------------------- server */

hx_code hx_http_listen_parse(const char *text, char *host, size_t host_cap, uint16_t *port,
                             hx_err *err) {
  if (!text || !*text)
    return hx_err_set(err, HX_EINVAL, "listen address is empty (expected HOST:PORT)");
  const char *colon;
  const char *h = text;
  size_t hlen;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close || close[1] != ':')
      return hx_err_set(err, HX_EINVAL, "listen address \"%.80s\": expected [IPV6]:PORT", text);
    h = text + 1;
    hlen = (size_t)(close - h);
    colon = close + 1;
  } else {
    colon = strrchr(text, ':');
    if (!colon)
      return hx_err_set(err, HX_EINVAL, "listen address \"%.80s\": expected HOST:PORT", text);
    hlen = (size_t)(colon - text);
  }
  char *end = NULL;
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
    return hx_err_set(err, HX_EINVAL, "listen address \"%.80s\": port must be 0..65535", text);
  if (hlen == 0) {
    h = "0.0.0.0";
    hlen = 7;
  }
  if (hlen + 1 > host_cap)
    return hx_err_set(err, HX_EINVAL, "listen address \"%.80s\": host too long", text);
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  *port = (uint16_t)p;
  return HX_OK;
}

hx_http_server *hx_http_server_create(const hx_http_server_config *cfg) {
  hx_http_server *srv = calloc(1, sizeof *srv);
  if (!srv)
    return NULL;
  srv->cfg = *cfg;
  snprintf(srv->host, sizeof srv->host, "%s", cfg->host ? cfg->host : "127.0.0.1");
  srv->cfg.host = srv->host;
  if (!srv->cfg.threads)
    srv->cfg.threads = 4;
  if (!srv->cfg.max_connections)
    srv->cfg.max_connections = 256;
  if (!srv->cfg.body_max_bytes)
    srv->cfg.body_max_bytes = 8u << 20;
  if (!srv->cfg.header_max_bytes)
    srv->cfg.header_max_bytes = 32u << 10;
  if (!srv->cfg.idle_timeout_s)
    srv->cfg.idle_timeout_s = 60;
  if (!srv->cfg.request_read_ms)
    srv->cfg.request_read_ms = 30000;
  if (!srv->cfg.stream_queue_max_bytes)
    srv->cfg.stream_queue_max_bytes = 1u << 20;
  pthread_mutex_init(&srv->mu, NULL);
  pthread_cond_init(&srv->cv, NULL);
  srv->refs = 1;
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
    seed = hx_time_mono_ns() ^ ((uint64_t)getpid() << 32);
  srv->id_seed = seed;
  atomic_init(&srv->id_counter, 1);
  return srv;
}

hx_code hx_http_server_route(hx_http_server *srv, const char *method, const char *path,
                             hx_http_handler handler, void *ctx, hx_err *err) {
  HX_ASSERT(srv && method && path && handler && !srv->started);
  if (srv->n_routes == srv->cap_routes) {
    size_t cap = srv->cap_routes ? srv->cap_routes * 2 : 16;
    route *r = realloc(srv->routes, cap * sizeof *r);
    if (!r)
      return hx_err_set(err, HX_ENOMEM, "out of memory adding route %s %s", method, path);
    srv->routes = r;
    srv->cap_routes = cap;
  }
  route *r = &srv->routes[srv->n_routes];
  r->method = strdup(method);
  r->path = strdup(path);
  if (!r->method || !r->path) {
    free(r->method);
    free(r->path);
    return hx_err_set(err, HX_ENOMEM, "out of memory adding route %s %s", method, path);
  }
  r->fn = handler;
  r->ctx = ctx;
  srv->n_routes++;
  return HX_OK;
}

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    line[--n] = '\0';
  HX_DEBUG("mhd: %s", line);
}

hx_code hx_http_server_start(hx_http_server *srv, hx_err *err) {
  HX_ASSERT(!srv->started);
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
  char port_s[8];
  snprintf(port_s, sizeof port_s, "%u", srv->cfg.port);
  struct addrinfo *ai = NULL;
  int gai = getaddrinfo(srv->host, port_s, &hints, &ai);
  if (gai != 0)
    return hx_err_set(err, HX_EIO, "listen address %s:%u: %s", srv->host, srv->cfg.port,
                      gai_strerror(gai));
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(ai);
    return hx_err_set(err, HX_EIO, "socket: %s", strerror(errno));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
    int e = errno;
    freeaddrinfo(ai);
    close(fd);
    return hx_err_set(err, HX_EIO, "cannot listen on %s:%u: %s", srv->host, srv->cfg.port,
                      strerror(e));
  }
  freeaddrinfo(ai);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  srv->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);

  unsigned flags =
      MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  srv->daemon = MHD_start_daemon(
      flags, 0, NULL, NULL, on_access, srv, MHD_OPTION_LISTEN_SOCKET, fd,
      MHD_OPTION_THREAD_POOL_SIZE, (unsigned)srv->cfg.threads, MHD_OPTION_CONNECTION_LIMIT,
      srv->cfg.max_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)srv->cfg.header_max_bytes, MHD_OPTION_CONNECTION_TIMEOUT, srv->cfg.idle_timeout_s,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
      srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv, MHD_OPTION_END);
  if (!srv->daemon) {
    close(fd);
    return hx_err_set(err, HX_EIO, "cannot start the HTTP daemon on %s:%u", srv->host, srv->port);
  }
  if (pthread_create(&srv->monitor, NULL, monitor_main, srv) != 0) {
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    return hx_err_set(err, HX_EINTERNAL, "cannot start the HTTP monitor thread");
  }
  srv->started = true;
  return HX_OK;
}

uint16_t hx_http_server_port(const hx_http_server *srv) { return srv->port; }

unsigned hx_http_server_inflight(const hx_http_server *srv) {
  hx_http_server *s = (hx_http_server *)srv;
  pthread_mutex_lock(&s->mu);
  unsigned n = s->inflight;
  pthread_mutex_unlock(&s->mu);
  return n;
}

static bool wait_inflight_locked(hx_http_server *srv, uint64_t deadline_ns) {
  while (srv->inflight > 0) {
    uint64_t now = hx_time_mono_ns();
    if (now >= deadline_ns)
      return false;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t wait_ns = deadline_ns - now;
    if (wait_ns > 50000000ull)
      wait_ns = 50000000ull;
    ts.tv_nsec += (long)wait_ns;
    while (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
  }
  return true;
}

/* True while some finished request's response is still being written: the
 * owner is done, but MHD has not reported the request complete yet. */
static bool unsent_locked(const hx_http_server *srv) {
  for (const hx_http_req *r = srv->live; r; r = r->next)
    if (r->dispatched && r->finished)
      return true;
  return false;
}

static void wait_sent_locked(hx_http_server *srv, uint64_t deadline_ns) {
  while (unsent_locked(srv)) {
    uint64_t now = hx_time_mono_ns();
    if (now >= deadline_ns)
      return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t wait_ns = deadline_ns - now;
    if (wait_ns > 50000000ull)
      wait_ns = 50000000ull;
    ts.tv_nsec += (long)wait_ns;
    while (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
  }
}

unsigned hx_http_server_shutdown(hx_http_server *srv, unsigned grace_ms, unsigned cancel_ms) {
  pthread_mutex_lock(&srv->mu);
  if (srv->shut_down || !srv->started) {
    srv->shut_down = true;
    pthread_mutex_unlock(&srv->mu);
    return 0;
  }
  srv->shut_down = true;
  pthread_mutex_unlock(&srv->mu);

  MHD_socket lfd = MHD_quiesce_daemon(srv->daemon);
  if (lfd != MHD_INVALID_SOCKET)
    close(lfd);

  pthread_mutex_lock(&srv->mu);
  unsigned cancelled = 0;
  if (!wait_inflight_locked(srv, hx_time_mono_ns() + (uint64_t)grace_ms * 1000000ull)) {
    /* Cancel what is left; owners see it through their flag or callback. */
    for (;;) {
      hx_http_req *fire = NULL;
      for (hx_http_req *r = srv->live; r; r = r->next) {
        if (r->dispatched && !r->finished && !atomic_load(&r->cancelled)) {
          cancelled++;
          if (req_cancel_locked(r)) {
            fire = r;
            break;
          }
        }
      }
      if (!fire)
        break;
      pthread_mutex_unlock(&srv->mu);
      req_run_cancel(fire);
      pthread_mutex_lock(&srv->mu);
    }
    wait_inflight_locked(srv, hx_time_mono_ns() + (uint64_t)cancel_ms * 1000000ull);
  }
  /* A finished request's response may still sit in MHD's buffers (or ours,
   * for a stream): let it reach the client before connections are closed. */
  if (cancel_ms)
    wait_sent_locked(srv, hx_time_mono_ns() + (uint64_t)cancel_ms * 1000000ull);
  srv->stop_monitor = true;
  pthread_cond_broadcast(&srv->cv);
  /* MHD must not be stopped with suspended connections. */
  for (hx_http_req *r = srv->live; r; r = r->next) {
    r->srv_dead = true;
    if (r->dispatched && !r->finished)
      atomic_store(&r->cancelled, true);
    pthread_cond_broadcast(&r->cv);
    req_wake_locked(r);
  }
  pthread_mutex_unlock(&srv->mu);
  pthread_join(srv->monitor, NULL);
  MHD_stop_daemon(srv->daemon);
  srv->daemon = NULL;
  return cancelled;
}

void hx_http_server_free(hx_http_server *srv) {
  if (!srv)
    return;
  hx_http_server_shutdown(srv, 0, 0);
  pthread_mutex_lock(&srv->mu);
  bool free_it;
  srv_unref_locked(srv, &free_it);
  pthread_mutex_unlock(&srv->mu);
  if (free_it)
    srv_destroy(srv);
}

/* ------------------------------------------------------------ accessors */

const char *hx_http_req_method(const hx_http_req *req) { return req->method; }
const char *hx_http_req_path(const hx_http_req *req) { return req->path; }
hx_slice hx_http_req_body(const hx_http_req *req) {
  return hx_slice_make(req->body.data ? req->body.data : "", req->body.len);
}
const char *hx_http_req_id(const hx_http_req *req) { return req->id; }
uint64_t hx_http_req_start_ns(const hx_http_req *req) { return req->start_ns; }

static const char *headers_find(const hx_http_req *req, char kind, const char *name, bool icase) {
  const hx_buf *h = &req->headers;
  for (size_t off = 0; off < h->len;) {
    char k = h->data[off];
    const char *key = h->data + off + 1;
    const char *v = key + strlen(key) + 1;
    off = (size_t)(v - h->data) + strlen(v) + 1;
    if (k == kind && (icase ? strcasecmp(key, name) == 0 : strcmp(key, name) == 0))
      return v;
  }
  return NULL;
}

const char *hx_http_req_header(const hx_http_req *req, const char *name) {
  return headers_find(req, 'H', name, true);
}
const char *hx_http_req_query(const hx_http_req *req, const char *key) {
  return headers_find(req, 'Q', key, false);
}

bool hx_http_req_cancelled(const hx_http_req *req) { return atomic_load(&req->cancelled); }

void hx_http_req_on_cancel(hx_http_req *req, hx_http_cancel_fn fn, void *ctx) {
  hx_http_server *srv = req->srv;
  pthread_mutex_lock(&srv->mu);
  while (req->cancel_running) /* never free ctx under a running callback */
    pthread_cond_wait(&req->cv, &srv->mu);
  req->cancel_fn = fn;
  req->cancel_ctx = ctx;
  bool run_now = fn && atomic_load(&req->cancelled) && !req->cancel_fired;
  if (run_now)
    req->cancel_fired = true;
  pthread_mutex_unlock(&srv->mu);
  if (run_now)
    fn(ctx);
}

void hx_http_req_set_log_note(hx_http_req *req, const char *fmt, ...) {
  char tmp[NOTE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&req->srv->mu);
  memcpy(req->note, tmp, sizeof tmp);
  pthread_mutex_unlock(&req->srv->mu);
}

/* ------------------------------------------------------------ responses */

hx_code hx_http_respond(hx_http_req *req, int status, const char *content_type, const void *body,
                        size_t len, const hx_http_header *headers, size_t n_headers) {
  hx_http_server *srv = req->srv;
  struct MHD_Response *r = response_make(req, body, len, content_type, headers, n_headers);
  pthread_mutex_lock(&srv->mu);
  HX_ASSERT(!req->streaming && !req->pending);
  bool gone = !req->conn || req->srv_dead;
  req->status = status;
  if (r && !gone) {
    req->pending = r;
    req->bytes_out = len;
    req_wake_locked(req);
  } else if (r) {
    MHD_destroy_response(r);
  }
  req_finish_unlock(req);
  if (!r)
    return HX_ENOMEM;
  return gone ? HX_ECANCELLED : HX_OK;
}

hx_code hx_http_respond_json(hx_http_req *req, int status, json_t *body) {
  hx_buf b;
  hx_buf_init(&b, SIZE_MAX / 2);
  hx_code rc = body ? hx_json_dump(body, &b) : HX_ENOMEM;
  json_decref(body);
  if (rc != HX_OK) {
    hx_buf_free(&b);
    const char *fallback = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                           "\"param\":null,\"code\":null}}";
    hx_http_respond(req, 500, "application/json", fallback, strlen(fallback), NULL, 0);
    return rc;
  }
  rc = hx_http_respond(req, status, "application/json", b.data, b.len, NULL, 0);
  hx_buf_free(&b);
  return rc;
}

hx_code hx_http_respond_error(hx_http_req *req, int status, const char *type, const char *code,
                              const char *param, unsigned retry_after_s, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  hx_buf b;
  hx_buf_init(&b, 1 << 16);
  if (req->srv->cfg.error_fn) {
    req->srv->cfg.error_fn(req->srv->cfg.error_ctx, status, type, code, msg, &b);
  } else {
    json_t *j = hx_http_error_json(type, code, param, msg);
    if (j)
      hx_json_dump(j, &b);
    json_decref(j);
  }
  char ra[24];
  hx_http_header h = {"Retry-After", ra};
  snprintf(ra, sizeof ra, "%u", retry_after_s);
  hx_code rc = hx_http_respond(req, status, "application/json", b.data ? b.data : "", b.len, &h,
                               retry_after_s > 0 ? 1 : 0);
  hx_buf_free(&b);
  return rc;
}

hx_code hx_http_stream_begin(hx_http_req *req, int status, const char *content_type,
                             const hx_http_header *headers, size_t n_headers) {
  hx_http_server *srv = req->srv;
  pthread_mutex_lock(&srv->mu);
  HX_ASSERT(!req->streaming && !req->pending && !req->finished);
  req->streaming = true;
  req->status = status;
  /* Stash response headers as 'R' entries next to the request's. */
  copy_header(req, 'R', "Content-Type", content_type ? content_type : "application/octet-stream");
  if (content_type && strncmp(content_type, "text/event-stream", 17) == 0) {
    copy_header(req, 'R', "Cache-Control", "no-cache");
    copy_header(req, 'R', "X-Accel-Buffering", "no");
  }
  for (size_t i = 0; i < n_headers; i++)
    copy_header(req, 'R', headers[i].name, headers[i].value);
  bool gone = !req->conn || req->srv_dead || atomic_load(&req->cancelled);
  req_wake_locked(req);
  pthread_mutex_unlock(&srv->mu);
  return gone ? HX_ECANCELLED : HX_OK;
}

static void deadline_after_ms(struct timespec *ts, unsigned ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

hx_code hx_http_stream_write(hx_http_req *req, const void *data, size_t len, unsigned timeout_ms) {
  hx_http_server *srv = req->srv;
  struct timespec ts;
  deadline_after_ms(&ts, timeout_ms);
  pthread_mutex_lock(&srv->mu);
  HX_ASSERT(req->streaming && !req->stream_ended);
  hx_code rc = HX_OK;
  for (;;) {
    if (!req->conn || req->srv_dead || atomic_load(&req->cancelled)) {
      rc = HX_ECANCELLED;
      break;
    }
    if (req->queue.len <= req->queue_max) {
      if (hx_buf_append(&req->queue, data, len) != HX_OK)
        rc = HX_ENOMEM;
      req_wake_locked(req);
      break;
    }
    if (timeout_ms == 0 || pthread_cond_timedwait(&req->cv, &srv->mu, &ts) == ETIMEDOUT) {
      rc = HX_ETIMEOUT;
      break;
    }
  }
  pthread_mutex_unlock(&srv->mu);
  return rc;
}

hx_code hx_http_stream_write_sse_json(hx_http_req *req, const json_t *json, unsigned timeout_ms) {
  hx_buf b;
  hx_buf_init(&b, SIZE_MAX / 2);
  hx_code rc = hx_buf_append_str(&b, "data: ");
  if (rc == HX_OK)
    rc = hx_json_dump(json, &b);
  if (rc == HX_OK)
    rc = hx_buf_append_str(&b, "\n\n");
  if (rc == HX_OK)
    rc = hx_http_stream_write(req, b.data, b.len, timeout_ms);
  hx_buf_free(&b);
  return rc;
}

void hx_http_stream_end(hx_http_req *req) {
  hx_http_server *srv = req->srv;
  pthread_mutex_lock(&srv->mu);
  HX_ASSERT(req->streaming && !req->stream_ended);
  req->stream_ended = true;
  req_wake_locked(req);
  req_finish_unlock(req);
}
