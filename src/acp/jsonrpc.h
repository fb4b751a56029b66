/* jsonrpc.h — JSON-RPC 2.0 framing for ACP: one message per line.
 *
 * Two pieces, both free of threads and I/O policy so they can be unit tested
 * and fuzzed:
 *  - acp_line_reader: splits a byte stream (a file descriptor) into lines of
 *    at most max_line_bytes. A longer line is skipped up to its newline and
 *    reported once as HX_ETOOLARGE, so one bad line never wedges the stream.
 *  - acp_jsonrpc_parse: classifies one line as a request, a notification or
 *    a response, or says which JSON-RPC error it deserves (-32700 parse
 *    error, -32600 invalid request) and with which id.
 * Plus builders for the messages we send. */
#ifndef ACP_JSONRPC_H
#define ACP_JSONRPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/status.h"

/* JSON-RPC 2.0 error codes (and ACP's). */
enum {
  ACP_RPC_PARSE_ERROR = -32700,
  ACP_RPC_INVALID_REQUEST = -32600,
  ACP_RPC_METHOD_NOT_FOUND = -32601,
  ACP_RPC_INVALID_PARAMS = -32602,
  ACP_RPC_INTERNAL_ERROR = -32603,
  ACP_RPC_AUTH_REQUIRED = -32000,
  ACP_RPC_RESOURCE_NOT_FOUND = -32002,
};

enum { ACP_RPC_METHOD_MAX = 256 }; /* longest method name we accept, bytes */

typedef enum acp_msg_kind {
  ACP_MSG_REQUEST,      /* method + id: must be answered */
  ACP_MSG_NOTIFICATION, /* method, no id: never answered */
  ACP_MSG_RESPONSE,     /* id + result or error: answers one of our requests */
} acp_msg_kind;

typedef struct acp_msg {
  acp_msg_kind kind;
  json_t *root;       /* owned: the whole message */
  json_t *id;         /* borrowed from root; NULL for notifications */
  const char *method; /* borrowed; NULL for responses */
  json_t *params;     /* borrowed; NULL when absent */
  json_t *result;     /* borrowed; responses only, NULL on error responses */
  json_t *error;      /* borrowed; error responses only */
} acp_msg;

/* Parses and classifies one line (without its newline). On success returns 0
 * and fills msg (free with acp_msg_free). On failure returns the JSON-RPC
 * error code the sender deserves, sets err to a message naming the problem
 * and *err_id to a new reference to the id to answer with (json null when
 * the id could not be recovered). A response that is malformed also fails
 * (there is nobody to answer: the caller just logs it). */
int acp_jsonrpc_parse(const char *line, size_t len, size_t max_bytes, acp_msg *msg, json_t **err_id,
                      hx_err *err);
void acp_msg_free(acp_msg *msg);

/* Builders: each returns a new object or NULL on OOM. `id` and `params` are
 * borrowed (copied by reference count); result is stolen. */
json_t *acp_jsonrpc_result(json_t *id, json_t *result);
json_t *acp_jsonrpc_error(json_t *id, int code, const char *message);
json_t *acp_jsonrpc_request(json_int_t id, const char *method, json_t *params);
json_t *acp_jsonrpc_notification(const char *method, json_t *params);

/* Replaces every byte of s that is not part of a well-formed UTF-8 sequence
 * with '?', in place, so that text built from outside input (error messages
 * quoting it, truncated bodies) can always be sent as a JSON string. */
void acp_utf8_scrub(char *s);

/* Serializes msg as one compact line ending in '\n', appended to out. */
hx_code acp_jsonrpc_encode(const json_t *msg, hx_buf *out);

typedef struct acp_line_reader {
  int fd;
  hx_buf pending;     /* bytes read but not yet returned */
  size_t scan_from;   /* bytes of pending already known to hold no '\n' */
  size_t line_len;    /* length of the line last returned (consumed on next call) */
  bool discarding;    /* inside an over-long line: drop bytes up to '\n' */
  bool eof;           /* read returned 0 */
  size_t max_line;    /* bytes per line, excluding the newline */
  size_t skipped_len; /* length of the last over-long line (for messages) */
} acp_line_reader;

void acp_line_reader_init(acp_line_reader *r, int fd, size_t max_line_bytes);
void acp_line_reader_free(acp_line_reader *r);
/* Returns the next line (without "\n" or a trailing "\r") in *line and *len,
 * valid until the next call. HX_OK: a line; HX_ETOOLARGE: a line longer than
 * the limit was skipped (err says how long); HX_EIO: end of input (err empty)
 * or a read error (err says which). A final line without newline is
 * returned as a line. */
hx_code acp_line_reader_next(acp_line_reader *r, const char **line, size_t *len, hx_err *err);

#endif
