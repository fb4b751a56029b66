/* tools.h — the model's tools, each backed by a capability the client
 * advertised in `initialize`:
 *   read_file   → fs/read_text_file                      (kind "read")
 *   write_file  → fs/write_text_file, shown as a diff    (kind "edit", asks)
 *   run_command → terminal/create, wait_for_exit, output, release
 *                                                        (kind "execute", asks)
 * Every call is reported to the client as a `tool_call` session update and
 * finished with a `tool_call_update`; writes and commands first ask the user
 * through session/request_permission (unless they chose "always allow" for
 * that kind in this session). */
#ifndef ACP_TOOLS_H
#define ACP_TOOLS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "acp/conn.h"
#include "acp/session.h"
#include "acp/upstream.h"
#include "base/status.h"

enum {
  ACP_TOOL_RESULT_MAX = 256 * 1024,  /* bytes of a tool result shown to the model */
  ACP_TOOL_OUTPUT_LIMIT = 64 * 1024, /* terminal outputByteLimit */
  ACP_TOOL_DISPLAY_MAX = 16 * 1024,  /* bytes of a file shown in a tool_call_update */
};

typedef struct acp_tool_ctx {
  acp_conn *conn;
  acp_session *session;
  const atomic_bool *cancel; /* the turn's cancel flag */
  bool fs_read;              /* client capabilities */
  bool fs_write;
  bool terminal;
  bool read_only; /* session mode "read_only": no writes, no commands */
} acp_tool_ctx;

/* The OpenAI `tools` array for this context (possibly empty). New reference. */
json_t *acp_tools_definitions(const acp_tool_ctx *ctx);

/* Runs one tool call (call_id is the id recorded in the history and used as
 * the ACP toolCallId) and returns the `{"role":"tool"}` message for the
 * model in *out (also when the tool failed or was denied: the model is told
 * why). HX_ECANCELLED when the turn was cancelled meanwhile (*out is NULL);
 * HX_EIO when the client went away. */
hx_code acp_tool_run(const acp_tool_ctx *ctx, const char *call_id, const char *name,
                     const char *arguments, json_t **out, hx_err *err);

/* Joins a path the model gave with the session's cwd (absolute paths stay).
 * Returns malloc'd text or NULL on OOM. */
char *acp_tool_path_resolve(const char *cwd, const char *path);

#endif
