/* conn.h — the agent's side of one JSON-RPC connection (stdio).
 *
 * Writes are serialized by a mutex so that every message is one whole line,
 * whichever thread sends it (the reader thread answers requests, prompt-turn
 * threads stream session/update notifications and call the client).
 * Outgoing requests (fs and terminal methods, session/request_permission) block
 * their calling thread until the reader thread delivers the matching
 * response, the caller's cancel flag is raised, or the connection closes. */
#ifndef ACP_CONN_H
#define ACP_CONN_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "acp/jsonrpc.h"
#include "base/status.h"

typedef struct acp_conn acp_conn;

/* Returns a connection writing to out_fd (not owned), or NULL on OOM. */
acp_conn *acp_conn_new(int out_fd);
/* Frees it; no call may be waiting. NULL allowed. */
void acp_conn_free(acp_conn *c);

/* Sends one message (borrowed) as a line. HX_EIO when the peer is gone. */
hx_code acp_conn_send(acp_conn *c, const json_t *msg);
/* Convenience senders; params / result are stolen (may be NULL). */
hx_code acp_conn_notify(acp_conn *c, const char *method, json_t *params);
hx_code acp_conn_respond(acp_conn *c, json_t *id, json_t *result);
hx_code acp_conn_respond_error(acp_conn *c, json_t *id, int code, const char *message);

/* Sends a request (params stolen) and waits for its answer. HX_OK with
 * *result a new reference; HX_EIO when the peer answered with an error (err
 * holds its code and message) or the connection closed; HX_ECANCELLED when
 * *cancel became true (checked whenever the connection is woken; a late
 * answer is then dropped). cancel may be NULL. */
hx_code acp_conn_call(acp_conn *c, const char *method, json_t *params, const atomic_bool *cancel,
                      json_t **result, hx_err *err);

/* Sends a request (params stolen) without waiting; its answer, when it
 * comes, is dropped. For clean-up calls (terminal/release after a cancel)
 * that must not block a turn that is ending. */
hx_code acp_conn_call_nowait(acp_conn *c, const char *method, json_t *params);

/* Reader side: hands a response to the waiting caller (false when no call
 * waits for that id). */
bool acp_conn_deliver(acp_conn *c, const acp_msg *response);
/* Wakes all waiting callers so that they re-check their cancel flags. */
void acp_conn_wake(acp_conn *c);
/* Input ended: every waiting and future call fails with HX_EIO. */
void acp_conn_close(acp_conn *c);

#endif
