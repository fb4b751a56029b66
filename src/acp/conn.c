/* conn.c — see conn.h. Pending outgoing calls live in a short singly linked
 * list (a turn has at most one call in flight; sessions run concurrently)
 * guarded by one mutex with one condition variable that is broadcast on
 * every delivery, wake-up and close. */
#include "acp/conn.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

enum { MSG_MAX_BYTES = 64 * 1024 * 1024 }; /* one outgoing message */

typedef struct pending_call {
  json_int_t id;
  bool done;
  json_t *result; /* owned once done */
  json_t *error;  /* owned once done */
  struct pending_call *next;
} pending_call;

struct acp_conn {
  int out_fd;
  pthread_mutex_t write_mu; /* one whole line per write */
  hx_buf line;              /* guarded by write_mu */
  bool write_failed;        /* guarded by write_mu */

  pthread_mutex_t mu; /* guards what follows */
  pthread_cond_t cv;
  json_int_t next_id;
  pending_call *calls;
  bool closed;
};

acp_conn *acp_conn_new(int out_fd) {
  acp_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->out_fd = out_fd;
  pthread_mutex_init(&c->write_mu, NULL);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  hx_buf_init(&c->line, MSG_MAX_BYTES);
  return c;
}

void acp_conn_free(acp_conn *c) {
  if (!c)
    return;
  HX_ASSERT(c->calls == NULL);
  hx_buf_free(&c->line);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->write_mu);
  free(c);
}

static hx_code write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return HX_EIO;
    }
    p += w;
    n -= (size_t)w;
  }
  return HX_OK;
}

hx_code acp_conn_send(acp_conn *c, const json_t *msg) {
  if (!msg)
    return HX_ENOMEM;
  pthread_mutex_lock(&c->write_mu);
  hx_code rc = HX_EIO;
  if (!c->write_failed) {
    hx_buf_reset(&c->line);
    rc = acp_jsonrpc_encode(msg, &c->line);
    if (rc != HX_OK) {
      HX_ERROR("acp: outgoing message not sent: %s", hx_strerror(rc));
    } else {
      rc = write_all(c->out_fd, c->line.data, c->line.len);
      if (rc != HX_OK) {
        HX_WARN("acp: writing to the client failed: %s", strerror(errno));
        c->write_failed = true;
      }
    }
    if (c->line.cap > 1024 * 1024) /* do not keep a huge buffer around */
      hx_buf_free(&c->line), hx_buf_init(&c->line, MSG_MAX_BYTES);
  }
  pthread_mutex_unlock(&c->write_mu);
  return rc;
}

hx_code acp_conn_notify(acp_conn *c, const char *method, json_t *params) {
  json_t *m = acp_jsonrpc_notification(method, params);
  hx_code rc = acp_conn_send(c, m);
  json_decref(m);
  json_decref(params);
  return rc;
}

hx_code acp_conn_respond(acp_conn *c, json_t *id, json_t *result) {
  json_t *m = acp_jsonrpc_result(id, result);
  hx_code rc = acp_conn_send(c, m);
  json_decref(m);
  return rc;
}

hx_code acp_conn_respond_error(acp_conn *c, json_t *id, int code, const char *message) {
  json_t *m = acp_jsonrpc_error(id, code, message);
  hx_code rc = acp_conn_send(c, m);
  json_decref(m);
  return rc;
}

static void calls_unlink(acp_conn *c, pending_call *pc) {
  for (pending_call **pp = &c->calls; *pp; pp = &(*pp)->next) {
    if (*pp == pc) {
      *pp = pc->next;
      return;
    }
  }
}

hx_code acp_conn_call(acp_conn *c, const char *method, json_t *params, const atomic_bool *cancel,
                      json_t **result, hx_err *err) {
  *result = NULL;
  pending_call *pc = calloc(1, sizeof *pc);
  if (!pc) {
    json_decref(params);
    return hx_err_set(err, HX_ENOMEM, "out of memory calling %s", method);
  }
  pthread_mutex_lock(&c->mu);
  if (c->closed) {
    pthread_mutex_unlock(&c->mu);
    free(pc);
    json_decref(params);
    return hx_err_set(err, HX_EIO, "%s: the client has disconnected", method);
  }
  pc->id = c->next_id++;
  pc->next = c->calls;
  c->calls = pc;
  pthread_mutex_unlock(&c->mu);

  json_t *req = acp_jsonrpc_request(pc->id, method, params);
  json_decref(params);
  hx_code rc = req ? acp_conn_send(c, req) : HX_ENOMEM;
  json_decref(req);

  pthread_mutex_lock(&c->mu);
  if (rc != HX_OK) {
    hx_err_set(err, rc, "%s: request could not be sent", method);
  } else {
    while (!pc->done && !c->closed && !(cancel && atomic_load(cancel)))
      pthread_cond_wait(&c->cv, &c->mu);
    if (pc->done && pc->error) {
      json_t *m = json_object_get(pc->error, "message");
      rc = hx_err_set(err, HX_EIO, "%s failed: client error %lld: %s", method,
                      (long long)json_integer_value(json_object_get(pc->error, "code")),
                      json_is_string(m) ? json_string_value(m) : "(no message)");
    } else if (pc->done) {
      *result = pc->result ? json_incref(pc->result) : json_null();
    } else if (c->closed) {
      rc = hx_err_set(err, HX_EIO, "%s: the client has disconnected", method);
    } else {
      rc = hx_err_set(err, HX_ECANCELLED, "%s: cancelled", method);
    }
  }
  calls_unlink(c, pc);
  pthread_mutex_unlock(&c->mu);
  json_decref(pc->result);
  json_decref(pc->error);
  free(pc);
  return rc;
}

hx_code acp_conn_call_nowait(acp_conn *c, const char *method, json_t *params) {
  pthread_mutex_lock(&c->mu);
  json_int_t id = c->next_id++;
  pthread_mutex_unlock(&c->mu);
  json_t *req = acp_jsonrpc_request(id, method, params);
  json_decref(params);
  hx_code rc = req ? acp_conn_send(c, req) : HX_ENOMEM;
  json_decref(req);
  return rc;
}

bool acp_conn_deliver(acp_conn *c, const acp_msg *response) {
  if (!json_is_integer(response->id))
    return false; /* we only ever send integer ids */
  json_int_t id = json_integer_value(response->id);
  bool found = false;
  pthread_mutex_lock(&c->mu);
  for (pending_call *pc = c->calls; pc; pc = pc->next) {
    if (pc->id == id && !pc->done) {
      pc->done = true;
      /* Deep copies: the message belongs to the reader thread, and jansson
       * values are not to be shared between threads. */
      pc->result = response->result ? json_deep_copy(response->result) : NULL;
      pc->error = response->error ? json_deep_copy(response->error) : NULL;
      if ((response->result && !pc->result) || (response->error && !pc->error))
        pc->error = json_pack("{s:i, s:s}", "code", ACP_RPC_INTERNAL_ERROR, "message",
                              "out of memory copying the response");
      found = true;
      break;
    }
  }
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  return found;
}

void acp_conn_wake(acp_conn *c) {
  pthread_mutex_lock(&c->mu);
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

void acp_conn_close(acp_conn *c) {
  pthread_mutex_lock(&c->mu);
  c->closed = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}
