/* tools.c — see tools.h. */
#include "acp/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acp/jsonrpc.h"
#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"

/* The longest prefix of text (len bytes) of at most max bytes that does not
 * end inside a UTF-8 sequence. */
static size_t utf8_cut(const char *text, size_t len, size_t max) {
  if (len <= max)
    return len;
  size_t n = max;
  while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
    n--;
  return n;
}

static const char PERMISSION_DENIED[] = "The user denied permission for this action.";

json_t *acp_tools_definitions(const acp_tool_ctx *ctx) {
  json_t *tools = json_array();
  if (!tools)
    return NULL;
  if (ctx->fs_read)
    json_array_append_new(
        tools, json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:s}}, "
                         "s:[s]}}}",
                         "type", "function", "function", "name", "read_file", "description",
                         "Read a text file from the user's workspace (as the editor sees it, "
                         "including unsaved changes).",
                         "parameters", "type", "object", "properties", "path", "type", "string",
                         "description", "absolute path, or relative to the working directory",
                         "line", "type", "integer", "description",
                         "first line to read (1-based, optional)", "limit", "type", "integer",
                         "description", "maximum lines to read (optional)", "required", "path"));
  if (ctx->fs_write && !ctx->read_only)
    json_array_append_new(
        tools, json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:s}, s:{s:s, s:s}}, s:[s,s]}}}",
                         "type", "function", "function", "name", "write_file", "description",
                         "Create or overwrite a text file in the user's workspace with the given "
                         "full content. The user is asked for approval.",
                         "parameters", "type", "object", "properties", "path", "type", "string",
                         "description", "absolute path, or relative to the working directory",
                         "content", "type", "string", "description", "the complete new content",
                         "required", "path", "content"));
  if (ctx->terminal && !ctx->read_only)
    json_array_append_new(
        tools,
        json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:s}, s:{s:s, s:{s:s}, s:s}, "
                  "s:{s:s, s:s}}, s:[s]}}}",
                  "type", "function", "function", "name", "run_command", "description",
                  "Run a program in the user's terminal and return its output and exit status. "
                  "The user is asked for approval.",
                  "parameters", "type", "object", "properties", "command", "type", "string",
                  "description", "the program to run (e.g. \"ls\" or \"bash\")", "args", "type",
                  "array", "items", "type", "string", "description", "its arguments", "cwd", "type",
                  "string", "description", "working directory (optional)", "required", "command"));
  return tools;
}

char *acp_tool_path_resolve(const char *cwd, const char *path) {
  if (path[0] == '/' || !cwd || !cwd[0])
    return strdup(path);
  while (path[0] == '.' && path[1] == '/')
    path += 2;
  size_t n = strlen(cwd) + strlen(path) + 2;
  char *out = malloc(n);
  if (!out)
    return NULL;
  size_t cl = strlen(cwd);
  snprintf(out, n, "%s%s%s", cwd, cl && cwd[cl - 1] == '/' ? "" : "/", path);
  return out;
}

/* ---- session updates ---- */

static void send_update(const acp_tool_ctx *ctx, json_t *update) {
  if (!update)
    return;
  acp_conn_notify(ctx->conn, "session/update",
                  json_pack("{s:s, s:o}", "sessionId", ctx->session->id, "update", update));
}

static json_t *text_content(const char *text, size_t len) {
  return json_pack("[{s:s, s:{s:s, s:s#}}]", "type", "content", "content", "type", "text", "text",
                   text, len);
}

static void update_status(const acp_tool_ctx *ctx, const char *call_id, const char *status,
                          json_t *content /* stolen, may be NULL */, json_t *raw_output) {
  json_t *u = json_pack("{s:s, s:s, s:s}", "sessionUpdate", "tool_call_update", "toolCallId",
                        call_id, "status", status);
  if (u && content)
    json_object_set_new(u, "content", content);
  else
    json_decref(content);
  if (u && raw_output)
    json_object_set_new(u, "rawOutput", raw_output);
  else
    json_decref(raw_output);
  send_update(ctx, u);
}

static json_t *tool_message(const char *call_id, const char *text, size_t len) {
  if (len > ACP_TOOL_RESULT_MAX) {
    size_t keep = utf8_cut(text, len, ACP_TOOL_RESULT_MAX);
    hx_buf b;
    hx_buf_init(&b, ACP_TOOL_RESULT_MAX + 128);
    hx_buf_append(&b, text, keep);
    hx_buf_printf(&b, "\n[… %zu more bytes not shown]", len - keep);
    json_t *m = json_pack("{s:s, s:s, s:s#}", "role", "tool", "tool_call_id", call_id, "content",
                          b.data, b.len);
    hx_buf_free(&b);
    return m;
  }
  return json_pack("{s:s, s:s, s:s#}", "role", "tool", "tool_call_id", call_id, "content", text,
                   len);
}

/* Fails the tool call visibly and tells the model why. */
static hx_code tool_fail(const acp_tool_ctx *ctx, const char *call_id, const char *why_in,
                         json_t **out) {
  char why[HX_ERR_MSG_MAX + 256];
  snprintf(why, sizeof why, "%s", why_in);
  acp_utf8_scrub(why);
  update_status(ctx, call_id, "failed", text_content(why, strlen(why)), NULL);
  *out = tool_message(call_id, why, strlen(why));
  return *out ? HX_OK : HX_ENOMEM;
}

/* ---- permission ---- */

typedef enum permission { PERM_ALLOW, PERM_DENY, PERM_CANCELLED, PERM_ERROR } permission;

static permission ask_permission(const acp_tool_ctx *ctx, json_t *tool_call /* stolen */,
                                 bool *always, hx_err *err) {
  json_t *params = json_pack("{s:s, s:o, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s, s:s}]}",
                             "sessionId", ctx->session->id, "toolCall", tool_call, "options",
                             "optionId", "allow", "name", "Allow", "kind", "allow_once", "optionId",
                             "allow_always", "name", "Always allow", "kind", "allow_always",
                             "optionId", "reject", "name", "Reject", "kind", "reject_once");
  json_t *res = NULL;
  hx_code rc =
      acp_conn_call(ctx->conn, "session/request_permission", params, ctx->cancel, &res, err);
  if (rc == HX_ECANCELLED)
    return PERM_CANCELLED;
  if (rc != HX_OK)
    return PERM_ERROR;
  permission p = PERM_DENY;
  json_t *outcome = json_object_get(res, "outcome");
  const char *kind = json_string_value(json_object_get(outcome, "outcome"));
  const char *option = json_string_value(json_object_get(outcome, "optionId"));
  if (kind && strcmp(kind, "cancelled") == 0) {
    p = PERM_CANCELLED;
  } else if (kind && strcmp(kind, "selected") == 0 && option) {
    if (strcmp(option, "allow") == 0) {
      p = PERM_ALLOW;
    } else if (strcmp(option, "allow_always") == 0) {
      p = PERM_ALLOW;
      *always = true;
    }
  } else {
    HX_WARN("acp: unexpected permission outcome; treating it as a rejection");
  }
  json_decref(res);
  return p;
}

/* ---- the tools ---- */

static hx_code run_read(const acp_tool_ctx *ctx, const char *call_id, json_t *args, json_t **out,
                        hx_err *err) {
  const char *path_in = NULL;
  int64_t line = 0, limit = 0;
  hx_err aerr;
  if (hx_json_get_string(args, "path", true, &path_in, &aerr) ||
      hx_json_get_int(args, "line", false, 1, INT32_MAX, &line, &aerr) ||
      hx_json_get_int(args, "limit", false, 1, INT32_MAX, &limit, &aerr))
    return tool_fail(ctx, call_id, aerr.msg, out);
  char *path = acp_tool_path_resolve(ctx->session->cwd, path_in);
  if (!path)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  char title[512];
  snprintf(title, sizeof title, "Read %s", path_in);
  acp_utf8_scrub(title); /* a long path may have been cut mid-character */
  json_t *loc = json_pack("{s:s}", "path", path);
  if (line)
    json_object_set_new(loc, "line", json_integer(line));
  send_update(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s, s:[o], s:O}", "sessionUpdate", "tool_call",
                             "toolCallId", call_id, "title", title, "kind", "read", "status",
                             "pending", "locations", loc, "rawInput", args));
  json_t *params = json_pack("{s:s, s:s}", "sessionId", ctx->session->id, "path", path);
  if (line)
    json_object_set_new(params, "line", json_integer(line));
  if (limit)
    json_object_set_new(params, "limit", json_integer(limit));
  json_t *res = NULL;
  hx_err cerr;
  hx_code rc = acp_conn_call(ctx->conn, "fs/read_text_file", params, ctx->cancel, &res, &cerr);
  free(path);
  if (rc == HX_ECANCELLED) {
    update_status(ctx, call_id, "failed", NULL, NULL);
    return hx_err_set(err, rc, "cancelled");
  }
  if (rc != HX_OK)
    return tool_fail(ctx, call_id, cerr.msg, out);
  json_t *content = json_object_get(res, "content");
  if (!json_is_string(content)) {
    json_decref(res);
    return tool_fail(ctx, call_id, "fs/read_text_file answered without \"content\"", out);
  }
  const char *text = json_string_value(content);
  size_t len = json_string_length(content);
  /* The editor shows the file itself; keep the update line modest (some
   * clients bound their line length) while the model gets up to
   * ACP_TOOL_RESULT_MAX. */
  size_t shown = utf8_cut(text, len, ACP_TOOL_DISPLAY_MAX);
  update_status(ctx, call_id, "completed", text_content(text, shown), NULL);
  *out = tool_message(call_id, text, len);
  json_decref(res);
  return *out ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
}

static hx_code run_write(const acp_tool_ctx *ctx, const char *call_id, json_t *args, json_t **out,
                         hx_err *err) {
  const char *path_in = NULL, *content = NULL;
  hx_err aerr;
  if (hx_json_get_string(args, "path", true, &path_in, &aerr) ||
      hx_json_get_string(args, "content", true, &content, &aerr))
    return tool_fail(ctx, call_id, aerr.msg, out);
  char *path = acp_tool_path_resolve(ctx->session->cwd, path_in);
  if (!path)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  /* The old text, for the diff; a missing file is a new file (oldText null). */
  json_t *old_text = json_null();
  if (ctx->fs_read) {
    json_t *res = NULL;
    hx_err rerr;
    hx_code rc = acp_conn_call(ctx->conn, "fs/read_text_file",
                               json_pack("{s:s, s:s}", "sessionId", ctx->session->id, "path", path),
                               ctx->cancel, &res, &rerr);
    if (rc == HX_ECANCELLED) {
      free(path);
      json_decref(old_text);
      return hx_err_set(err, rc, "cancelled");
    }
    json_t *c = json_object_get(res, "content");
    if (rc == HX_OK && json_is_string(c)) {
      json_decref(old_text);
      old_text = json_incref(c);
    }
    json_decref(res);
  }
  char title[512];
  snprintf(title, sizeof title, "Write %s", path_in);
  acp_utf8_scrub(title);
  json_t *diff = json_pack("[{s:s, s:s, s:o, s:s}]", "type", "diff", "path", path, "oldText",
                           old_text, "newText", content);
  send_update(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:[{s:s}], s:O}", "sessionUpdate",
                             "tool_call", "toolCallId", call_id, "title", title, "kind", "edit",
                             "status", "pending", "content", diff, "locations", "path", path,
                             "rawInput", args));
  hx_code rc = HX_OK;
  if (!ctx->session->allow_edit_always) {
    bool always = false;
    permission p =
        ask_permission(ctx,
                       json_pack("{s:s, s:s, s:s, s:s, s:O}", "toolCallId", call_id, "title", title,
                                 "kind", "edit", "status", "pending", "content", diff),
                       &always, err);
    if (p == PERM_CANCELLED) {
      update_status(ctx, call_id, "failed", NULL, NULL);
      rc = hx_err_set(err, HX_ECANCELLED, "cancelled");
      goto done;
    }
    if (p == PERM_ERROR) {
      rc = tool_fail(ctx, call_id, err->msg, out);
      goto done;
    }
    if (p == PERM_DENY) {
      rc = tool_fail(ctx, call_id, PERMISSION_DENIED, out);
      goto done;
    }
    if (always)
      ctx->session->allow_edit_always = true;
  }
  update_status(ctx, call_id, "in_progress", NULL, NULL);
  json_t *res = NULL;
  hx_err werr;
  rc = acp_conn_call(
      ctx->conn, "fs/write_text_file",
      json_pack("{s:s, s:s, s:s}", "sessionId", ctx->session->id, "path", path, "content", content),
      ctx->cancel, &res, &werr);
  json_decref(res);
  if (rc == HX_ECANCELLED) {
    update_status(ctx, call_id, "failed", NULL, NULL);
    rc = hx_err_set(err, rc, "cancelled");
    goto done;
  }
  if (rc != HX_OK) {
    rc = tool_fail(ctx, call_id, werr.msg, out);
    goto done;
  }
  update_status(ctx, call_id, "completed", json_incref(diff), NULL);
  char msg[600];
  snprintf(msg, sizeof msg, "Wrote %zu bytes to %s.", strlen(content), path);
  *out = tool_message(call_id, msg, strlen(msg));
  rc = *out ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
done:
  json_decref(diff);
  free(path);
  return rc;
}

static void command_line(json_t *args_arr, const char *command, char *out, size_t n) {
  size_t used = (size_t)snprintf(out, n, "%s", command);
  size_t i;
  json_t *a;
  json_array_foreach(args_arr, i, a) {
    if (used >= n)
      break;
    used += (size_t)snprintf(out + used, n - used, " %s", json_string_value(a));
  }
}

static hx_code run_command(const acp_tool_ctx *ctx, const char *call_id, json_t *args, json_t **out,
                           hx_err *err) {
  const char *command = NULL, *cwd_in = NULL;
  hx_err aerr;
  if (hx_json_get_string(args, "command", true, &command, &aerr) ||
      hx_json_get_string(args, "cwd", false, &cwd_in, &aerr))
    return tool_fail(ctx, call_id, aerr.msg, out);
  json_t *argv = json_object_get(args, "args");
  if (argv && !json_is_null(argv)) {
    bool ok = json_is_array(argv) && json_array_size(argv) <= 1024;
    size_t i;
    json_t *a;
    json_array_foreach(argv, i, a) ok = ok && json_is_string(a);
    if (!ok)
      return tool_fail(ctx, call_id, "\"args\" must be an array of strings", out);
  } else {
    argv = NULL;
  }
  char *cwd = acp_tool_path_resolve(ctx->session->cwd, cwd_in ? cwd_in : ctx->session->cwd);
  if (!cwd)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  char cmdline[400], title[512];
  command_line(argv, command, cmdline, sizeof cmdline);
  snprintf(title, sizeof title, "Run `%s`", cmdline);
  acp_utf8_scrub(title);
  send_update(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "sessionUpdate", "tool_call",
                             "toolCallId", call_id, "title", title, "kind", "execute", "status",
                             "pending", "rawInput", args));
  hx_code rc = HX_OK;
  char *terminal_id = NULL;
  if (!ctx->session->allow_exec_always) {
    bool always = false;
    permission p =
        ask_permission(ctx,
                       json_pack("{s:s, s:s, s:s, s:s, s:O}", "toolCallId", call_id, "title", title,
                                 "kind", "execute", "status", "pending", "rawInput", args),
                       &always, err);
    if (p == PERM_CANCELLED) {
      update_status(ctx, call_id, "failed", NULL, NULL);
      rc = hx_err_set(err, HX_ECANCELLED, "cancelled");
      goto done;
    }
    if (p != PERM_ALLOW) {
      rc = tool_fail(ctx, call_id, p == PERM_DENY ? PERMISSION_DENIED : err->msg, out);
      goto done;
    }
    if (always)
      ctx->session->allow_exec_always = true;
  }
  json_t *params =
      json_pack("{s:s, s:s, s:s, s:I}", "sessionId", ctx->session->id, "command", command, "cwd",
                cwd, "outputByteLimit", (json_int_t)ACP_TOOL_OUTPUT_LIMIT);
  if (argv)
    json_object_set(params, "args", argv);
  json_t *res = NULL;
  hx_err cerr;
  rc = acp_conn_call(ctx->conn, "terminal/create", params, ctx->cancel, &res, &cerr);
  const char *tid = json_string_value(json_object_get(res, "terminalId"));
  if (rc == HX_OK && tid)
    terminal_id = strdup(tid);
  json_decref(res);
  if (rc == HX_ECANCELLED) {
    update_status(ctx, call_id, "failed", NULL, NULL);
    rc = hx_err_set(err, rc, "cancelled");
    goto done;
  }
  if (rc != HX_OK || !terminal_id) {
    rc =
        tool_fail(ctx, call_id, rc != HX_OK ? cerr.msg : "terminal/create gave no terminalId", out);
    goto done;
  }
  update_status(ctx, call_id, "in_progress",
                json_pack("[{s:s, s:s}]", "type", "terminal", "terminalId", terminal_id), NULL);
  res = NULL;
  rc = acp_conn_call(
      ctx->conn, "terminal/wait_for_exit",
      json_pack("{s:s, s:s}", "sessionId", ctx->session->id, "terminalId", terminal_id),
      ctx->cancel, &res, &cerr);
  json_t *exit_code = json_incref(json_object_get(res, "exitCode"));
  json_t *signal = json_incref(json_object_get(res, "signal"));
  json_decref(res);
  if (rc == HX_ECANCELLED) {
    acp_conn_call_nowait(
        ctx->conn, "terminal/kill",
        json_pack("{s:s, s:s}", "sessionId", ctx->session->id, "terminalId", terminal_id));
  }
  json_t *output = NULL;
  bool truncated = false;
  if (rc == HX_OK) {
    res = NULL;
    rc = acp_conn_call(
        ctx->conn, "terminal/output",
        json_pack("{s:s, s:s}", "sessionId", ctx->session->id, "terminalId", terminal_id),
        ctx->cancel, &res, &cerr);
    output = json_incref(json_object_get(res, "output"));
    truncated = json_is_true(json_object_get(res, "truncated"));
    json_decref(res);
  }
  acp_conn_call_nowait(
      ctx->conn, "terminal/release",
      json_pack("{s:s, s:s}", "sessionId", ctx->session->id, "terminalId", terminal_id));
  if (rc == HX_ECANCELLED) {
    update_status(ctx, call_id, "failed", NULL, NULL);
    rc = hx_err_set(err, rc, "cancelled");
  } else if (rc != HX_OK) {
    rc = tool_fail(ctx, call_id, cerr.msg, out);
  } else {
    hx_buf b;
    hx_buf_init(&b, ACP_TOOL_RESULT_MAX + 1024);
    if (json_is_integer(exit_code))
      hx_buf_printf(&b, "exit code %lld", (long long)json_integer_value(exit_code));
    else if (json_is_string(signal))
      hx_buf_printf(&b, "killed by signal %s", json_string_value(signal));
    else
      hx_buf_printf(&b, "exit status unknown");
    hx_buf_printf(&b, "%s\n", truncated ? " (output truncated to its last part)" : "");
    if (json_is_string(output))
      hx_buf_append(
          &b, json_string_value(output),
          utf8_cut(json_string_value(output), json_string_length(output), ACP_TOOL_RESULT_MAX));
    bool ok = json_is_integer(exit_code) && json_integer_value(exit_code) == 0;
    update_status(ctx, call_id, ok ? "completed" : "failed",
                  json_pack("[{s:s, s:s}]", "type", "terminal", "terminalId", terminal_id),
                  json_pack("{s:O, s:O}", "exitCode", exit_code ? exit_code : json_null(), "signal",
                            signal ? signal : json_null()));
    *out = tool_message(call_id, b.data ? b.data : "", b.len);
    hx_buf_free(&b);
    rc = *out ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  json_decref(output);
  json_decref(exit_code);
  json_decref(signal);
done:
  free(terminal_id);
  free(cwd);
  return rc;
}

hx_code acp_tool_run(const acp_tool_ctx *ctx, const char *call_id, const char *name,
                     const char *arguments, json_t **out, hx_err *err) {
  *out = NULL;
  hx_json_limits lim = {.max_bytes = ACP_STREAM_ARGS_MAX, .max_depth = 16};
  hx_err perr;
  const char *a = arguments && arguments[0] ? arguments : "{}";
  json_t *args = hx_json_parse(a, strlen(a), lim, &perr);
  char why[700];
  if (!args || !json_is_object(args)) {
    snprintf(why, sizeof why, "the arguments of %s are not a JSON object: %s", name,
             args ? "wrong type" : perr.msg);
    json_decref(args);
    send_update(ctx, json_pack("{s:s, s:s, s:s, s:s}", "sessionUpdate", "tool_call", "toolCallId",
                               call_id, "title", name, "status", "pending"));
    return tool_fail(ctx, call_id, why, out);
  }
  hx_code rc;
  if (strcmp(name, "read_file") == 0 && ctx->fs_read) {
    rc = run_read(ctx, call_id, args, out, err);
  } else if (strcmp(name, "write_file") == 0 && ctx->fs_write && !ctx->read_only) {
    rc = run_write(ctx, call_id, args, out, err);
  } else if (strcmp(name, "run_command") == 0 && ctx->terminal && !ctx->read_only) {
    rc = run_command(ctx, call_id, args, out, err);
  } else {
    snprintf(why, sizeof why, "there is no tool named \"%.200s\" in this session", name);
    send_update(ctx,
                json_pack("{s:s, s:s, s:s, s:s, s:O}", "sessionUpdate", "tool_call", "toolCallId",
                          call_id, "title", name, "status", "pending", "rawInput", args));
    rc = tool_fail(ctx, call_id, why, out);
  }
  json_decref(args);
  return rc;
}
