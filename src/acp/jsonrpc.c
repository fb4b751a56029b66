/* jsonrpc.c — see jsonrpc.h. Parsing is strict about the envelope (jsonrpc
 * "2.0", id a string, integer or null, method a string, params an object or
 * array) and lenient about what it does not use (unknown members are ignored,
 * as JSON-RPC 2.0 asks). */
#include "acp/jsonrpc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/json.h"

enum { READ_CHUNK_BYTES = 64 * 1024 };

void acp_msg_free(acp_msg *msg) {
  if (!msg)
    return;
  json_decref(msg->root);
  memset(msg, 0, sizeof *msg);
}

static bool id_is_valid(const json_t *id) {
  return json_is_string(id) || json_is_integer(id) || json_is_null(id);
}

static int fail(int code, json_t *id, json_t **err_id, hx_err *err, const char *what) {
  *err_id = id && id_is_valid(id) ? json_incref(id) : json_null();
  hx_err_set(err, HX_EINVAL, "%s", what);
  return code;
}

int acp_jsonrpc_parse(const char *line, size_t len, size_t max_bytes, acp_msg *msg, json_t **err_id,
                      hx_err *err) {
  memset(msg, 0, sizeof *msg);
  *err_id = NULL;
  hx_json_limits lim = {.max_bytes = max_bytes, .max_depth = HX_JSON_DEPTH_DEFAULT};
  hx_err perr;
  json_t *root = hx_json_parse(line, len, lim, &perr);
  if (!root) {
    *err_id = json_null();
    hx_err_set(err, HX_EINVAL, "parse error: %s", perr.msg);
    return ACP_RPC_PARSE_ERROR;
  }
  int code = ACP_RPC_INVALID_REQUEST;
  if (json_is_array(root)) {
    code = fail(code, NULL, err_id, err, "batch requests are not supported");
    goto bad;
  }
  if (!json_is_object(root)) {
    code = fail(code, NULL, err_id, err, "a message must be a JSON object");
    goto bad;
  }
  json_t *id = json_object_get(root, "id");
  json_t *jv = json_object_get(root, "jsonrpc");
  if (!json_is_string(jv) || strcmp(json_string_value(jv), "2.0") != 0) {
    code = fail(code, id, err_id, err, "\"jsonrpc\" must be \"2.0\"");
    goto bad;
  }
  if (id && !id_is_valid(id)) {
    code = fail(code, NULL, err_id, err, "\"id\" must be a string, an integer or null");
    goto bad;
  }
  json_t *method = json_object_get(root, "method");
  if (method) {
    if (!json_is_string(method) || json_string_length(method) == 0 ||
        json_string_length(method) > ACP_RPC_METHOD_MAX ||
        strlen(json_string_value(method)) != json_string_length(method)) {
      code = fail(code, id, err_id, err, "\"method\" must be a non-empty string");
      goto bad;
    }
    json_t *params = json_object_get(root, "params");
    if (params && !json_is_object(params) && !json_is_array(params) && !json_is_null(params)) {
      code = fail(code, id, err_id, err, "\"params\" must be an object or an array");
      goto bad;
    }
    msg->kind = id ? ACP_MSG_REQUEST : ACP_MSG_NOTIFICATION;
    msg->method = json_string_value(method);
    msg->params = json_is_null(params) ? NULL : params;
    msg->id = id;
    msg->root = root;
    return 0;
  }
  json_t *result = json_object_get(root, "result");
  json_t *error = json_object_get(root, "error");
  if (!id || (!result && !error) || (result && error)) {
    code = fail(code, id, err_id, err,
                "a message needs \"method\" (request) or \"id\" with exactly one of "
                "\"result\" and \"error\" (response)");
    goto bad;
  }
  if (error && (!json_is_object(error) || !json_is_integer(json_object_get(error, "code")))) {
    code = fail(code, id, err_id, err, "\"error\" must be an object with an integer \"code\"");
    goto bad;
  }
  msg->kind = ACP_MSG_RESPONSE;
  msg->id = id;
  msg->result = result;
  msg->error = error;
  msg->root = root;
  return 0;
bad:
  json_decref(root);
  return code;
}

json_t *acp_jsonrpc_result(json_t *id, json_t *result) {
  if (!result)
    result = json_null();
  return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result",
                   result);
}

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0. */
static int utf8_seq_len(const unsigned char *p) {
  unsigned c = p[0];
  if (c < 0x80)
    return 1;
  int n;
  unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0)
      lo = 0xA0; /* overlong */
    if (c == 0xED)
      hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0)
      lo = 0x90;
    if (c == 0xF4)
      hi = 0x8F; /* > U+10FFFF */
  } else {
    return 0;
  }
  if (p[1] < lo || p[1] > hi)
    return 0;
  for (int i = 2; i < n; i++)
    if ((p[i] & 0xC0) != 0x80)
      return 0;
  return n;
}

void acp_utf8_scrub(char *s) {
  unsigned char *p = (unsigned char *)s;
  while (*p) {
    int n = utf8_seq_len(p);
    if (n == 0) {
      *p++ = '?';
      continue;
    }
    p += n;
  }
}

json_t *acp_jsonrpc_error(json_t *id, int code, const char *message) {
  char text[1024];
  snprintf(text, sizeof text, "%s", message ? message : "error");
  acp_utf8_scrub(text);
  return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                   "error", "code", code, "message", text);
}

json_t *acp_jsonrpc_request(json_int_t id, const char *method, json_t *params) {
  return json_pack("{s:s, s:I, s:s, s:O}", "jsonrpc", "2.0", "id", id, "method", method, "params",
                   params ? params : json_null());
}

json_t *acp_jsonrpc_notification(const char *method, json_t *params) {
  return json_pack("{s:s, s:s, s:O}", "jsonrpc", "2.0", "method", method, "params",
                   params ? params : json_null());
}

hx_code acp_jsonrpc_encode(const json_t *msg, hx_buf *out) {
  size_t mark = out->len;
  hx_code rc = hx_json_dump(msg, out);
  if (rc == HX_OK)
    rc = hx_buf_append_char(out, '\n');
  if (rc != HX_OK) {
    out->len = mark; /* leave no half message behind */
    if (out->data)
      out->data[mark] = '\0';
  }
  return rc;
}

void acp_line_reader_init(acp_line_reader *r, int fd, size_t max_line_bytes) {
  memset(r, 0, sizeof *r);
  r->fd = fd;
  r->max_line = max_line_bytes;
  /* A line of max_line bytes plus one read chunk always fits. */
  hx_buf_init(&r->pending, max_line_bytes + READ_CHUNK_BYTES + 1);
}

void acp_line_reader_free(acp_line_reader *r) {
  if (!r)
    return;
  hx_buf_free(&r->pending);
}

static void reader_drop_all(acp_line_reader *r) {
  r->skipped_len += r->pending.len;
  hx_buf_reset(&r->pending);
  r->scan_from = 0;
}

hx_code acp_line_reader_next(acp_line_reader *r, const char **line, size_t *len, hx_err *err) {
  hx_buf_consume(&r->pending, r->line_len);
  r->line_len = 0;
  r->scan_from = 0;
  for (;;) {
    char *base = r->pending.data;
    char *nl = r->pending.len > r->scan_from
                   ? memchr(base + r->scan_from, '\n', r->pending.len - r->scan_from)
                   : NULL;
    if (nl) {
      size_t n = (size_t)(nl - base);
      if (r->discarding) {
        r->skipped_len += n;
        hx_buf_consume(&r->pending, n + 1);
        r->discarding = false;
        return hx_err_set(err, HX_ETOOLARGE, "input line of %zu bytes exceeds the limit of %zu",
                          r->skipped_len, r->max_line);
      }
      if (n > r->max_line) { /* arrived in one read with its newline */
        hx_buf_consume(&r->pending, n + 1);
        return hx_err_set(err, HX_ETOOLARGE, "input line of %zu bytes exceeds the limit of %zu", n,
                          r->max_line);
      }
      r->line_len = n + 1;
      *line = base;
      *len = n > 0 && base[n - 1] == '\r' ? n - 1 : n;
      return HX_OK;
    }
    r->scan_from = r->pending.len;
    if (r->discarding) {
      reader_drop_all(r);
    } else if (r->pending.len > r->max_line) {
      r->discarding = true;
      r->skipped_len = 0;
      reader_drop_all(r);
    }
    if (r->eof) {
      if (r->discarding) {
        r->discarding = false;
        return hx_err_set(err, HX_ETOOLARGE, "input line of %zu bytes exceeds the limit of %zu",
                          r->skipped_len, r->max_line);
      }
      if (r->pending.len > 0) {
        size_t n = r->pending.len;
        r->line_len = n;
        *line = r->pending.data;
        *len = n > 0 && r->pending.data[n - 1] == '\r' ? n - 1 : n;
        return HX_OK;
      }
      hx_err_clear(err);
      return HX_EIO;
    }
    if (hx_buf_reserve(&r->pending, READ_CHUNK_BYTES) != HX_OK)
      return hx_err_set(err, HX_ENOMEM, "out of memory reading input");
    ssize_t got = read(r->fd, r->pending.data + r->pending.len, READ_CHUNK_BYTES);
    if (got < 0) {
      if (errno == EINTR)
        continue;
      return hx_err_set(err, HX_EIO, "reading input: %s", strerror(errno));
    }
    if (got == 0) {
      r->eof = true;
      continue;
    }
    r->pending.len += (size_t)got;
    r->pending.data[r->pending.len] = '\0';
  }
}
