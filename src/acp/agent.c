/* agent.c — the ACP agent: reads JSON-RPC lines from stdin on the main
 * thread, answers the short requests there (initialize, authenticate,
 * session/new, session/load, session/set_mode) and runs each session/prompt
 * turn on a thread of its own, so that session/cancel and the client's
 * answers to our own requests (fs and terminal methods, permission) keep flowing
 * while a turn streams from the model.
 *
 * A turn: the user's content blocks become one user message; the model is
 * asked (streaming) with the session's history and the tools the client's
 * capabilities allow; content and reasoning stream back as
 * agent_message_chunk / agent_thought_chunk; tool calls run through the
 * client and their results go back to the model; this repeats until the
 * model answers without a tool call, the turn is cancelled, or
 * max_turn_requests is reached. stdout carries protocol messages only: fd 1
 * is re-pointed at stderr and the protocol writes to a private copy. */
#include "acp/agent.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acp/config.h"
#include "acp/conn.h"
#include "acp/jsonrpc.h"
#include "acp/session.h"
#include "acp/tools.h"
#include "acp/upstream.h"
#include "base/json.h"
#include "base/log.h"
#include "net/http_client.h"

enum {
  LINE_MAX_BYTES = 16 * 1024 * 1024, /* one incoming JSON-RPC message */
  PROMPT_TEXT_MAX = 8 * 1024 * 1024, /* the user message built from a prompt */
  PROTOCOL_VERSION = 1,
};

typedef struct live_session {
  acp_session *s;
  atomic_bool cancel; /* raised by session/cancel for the running turn */
  bool busy;          /* a turn runs (guarded by agent.mu) */
  bool has_thread;    /* thread must be joined (guarded by agent.mu) */
  pthread_t thread;
  hx_http_call *http;   /* the upstream call in flight (guarded by agent.mu) */
  json_t *prompt_id;    /* id of the running session/prompt request */
  json_t *user_message; /* the turn's user message, handed to the thread */
  struct acp_agent *agent;
  struct live_session *next;
} live_session;

typedef struct acp_agent {
  acp_config *cfg;
  acp_conn *conn;
  char *api_key; /* from $api_key_env, or NULL */
  bool initialized;
  bool fs_read, fs_write, terminal; /* client capabilities */
  char session_dir[4096];
  bool persist;

  pthread_mutex_t mu; /* guards sessions, model and the live_session fields so marked */
  live_session *sessions;
  char *model; /* resolved model id (from config or GET /models) */
} acp_agent;

/* ---- helpers ---- */

static void notify_update(acp_agent *a, const char *session_id, json_t *update) {
  if (!update)
    return;
  acp_conn_notify(a->conn, "session/update",
                  json_pack("{s:s, s:o}", "sessionId", session_id, "update", update));
}

static void notify_text(acp_agent *a, const char *session_id, const char *kind, const char *text,
                        size_t len) {
  notify_update(a, session_id,
                json_pack("{s:s, s:{s:s, s:s#}}", "sessionUpdate", kind, "content", "type", "text",
                          "text", text, len));
}

static live_session *find_session(acp_agent *a, const char *id) {
  for (live_session *l = a->sessions; l; l = l->next)
    if (strcmp(l->s->id, id) == 0)
      return l;
  return NULL;
}

static bool key_missing(const acp_agent *a) {
  return a->cfg->api_key_env && a->cfg->api_key_env[0] && !a->api_key;
}

static json_t *modes_state(const acp_session *s) {
  return json_pack("{s:s, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}", "currentModeId", s->mode,
                   "availableModes", "id", "ask", "name", "Ask", "description",
                   "Edits and commands ask for approval", "id", "read_only", "name", "Read-only",
                   "description", "The model can read files but not write them or run commands");
}

/* Validates params as an object; answers -32602 and returns NULL if not. */
static json_t *want_params(acp_agent *a, const acp_msg *m) {
  if (json_is_object(m->params))
    return m->params;
  acp_conn_respond_error(a->conn, m->id, ACP_RPC_INVALID_PARAMS, "params must be an object");
  return NULL;
}

static void respond_invalid(acp_agent *a, const acp_msg *m, const hx_err *e) {
  char msg[HX_ERR_MSG_MAX + 64];
  snprintf(msg, sizeof msg, "%s: %s", m->method, e->msg);
  acp_conn_respond_error(a->conn, m->id, ACP_RPC_INVALID_PARAMS, msg);
}

/* ---- initialize / authenticate ---- */

static void handle_initialize(acp_agent *a, const acp_msg *m) {
  json_t *p = want_params(a, m);
  if (!p)
    return;
  json_t *ver = json_object_get(p, "protocolVersion");
  if (!json_is_integer(ver) && !json_is_string(ver)) {
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_INVALID_PARAMS,
                           "initialize: \"protocolVersion\" must be an integer");
    return;
  }
  json_t *caps = json_object_get(p, "clientCapabilities");
  json_t *fs = json_object_get(caps, "fs");
  a->fs_read = json_is_true(json_object_get(fs, "readTextFile"));
  a->fs_write = json_is_true(json_object_get(fs, "writeTextFile"));
  a->terminal = json_is_true(json_object_get(caps, "terminal"));
  a->initialized = true;
  HX_INFO("acp: initialize: client protocol %lld, fs read %d write %d, terminal %d",
          json_is_integer(ver) ? (long long)json_integer_value(ver) : 0LL, a->fs_read, a->fs_write,
          a->terminal);
  /* We speak version 1 only: answer 1 whatever was asked (the client
   * disconnects if it cannot speak it). */
  json_t *auth = json_array();
  if (key_missing(a)) {
    char desc[512];
    snprintf(desc, sizeof desc,
             "helexa-acp reads the API key from the environment variable %s; set it in the "
             "agent's env and restart the agent",
             a->cfg->api_key_env);
    json_array_append_new(auth, json_pack("{s:s, s:s, s:s}", "id", "env", "name",
                                          "API key from the environment", "description", desc));
  }
  json_t *result =
      json_pack("{s:i, s:{s:b, s:{s:b, s:b, s:b}, s:{s:b, s:b}}, s:o, s:{s:s, s:s, s:s}}",
                "protocolVersion", PROTOCOL_VERSION, "agentCapabilities", "loadSession", a->persist,
                "promptCapabilities", "image", 0, "audio", 0, "embeddedContext", 1,
                "mcpCapabilities", "http", 0, "sse", 0, "authMethods", auth, "agentInfo", "name",
                "helexa-acp", "title", "helexa", "version", HELEXA_VERSION);
  acp_conn_respond(a->conn, m->id, result);
}

static void handle_authenticate(acp_agent *a, const acp_msg *m) {
  json_t *p = want_params(a, m);
  if (!p)
    return;
  const char *method = NULL;
  hx_err e;
  if (hx_json_get_string(p, "methodId", true, &method, &e)) {
    respond_invalid(a, m, &e);
    return;
  }
  if (strcmp(method, "env") != 0 || !a->cfg->api_key_env) {
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_INVALID_PARAMS,
                           "authenticate: unknown methodId (helexa-acp offers no login here)");
    return;
  }
  const char *key = getenv(a->cfg->api_key_env);
  if (!key || !key[0]) {
    char msg[300];
    snprintf(msg, sizeof msg, "the environment variable %s is not set", a->cfg->api_key_env);
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_AUTH_REQUIRED, msg);
    return;
  }
  free(a->api_key);
  a->api_key = strdup(key);
  acp_conn_respond(a->conn, m->id, json_object());
}

/* ---- sessions ---- */

static hx_code check_session_params(const json_t *p, const char **cwd, hx_err *e) {
  if (hx_json_get_string(p, "cwd", true, cwd, e))
    return HX_EINVAL;
  if ((*cwd)[0] != '/')
    return hx_err_set(e, HX_EINVAL, "\"cwd\" must be an absolute path");
  json_t *mcp = json_object_get(p, "mcpServers");
  if (mcp && !json_is_array(mcp))
    return hx_err_set(e, HX_EINVAL, "\"mcpServers\" must be an array");
  if (json_array_size(mcp) > 0)
    HX_INFO("acp: %zu MCP server(s) offered; helexa-acp does not connect to MCP servers",
            json_array_size(mcp));
  return HX_OK;
}

static live_session *add_session(acp_agent *a, acp_session *s) {
  live_session *l = calloc(1, sizeof *l);
  if (!l)
    return NULL;
  l->s = s;
  l->agent = a;
  atomic_init(&l->cancel, false);
  pthread_mutex_lock(&a->mu);
  l->next = a->sessions;
  a->sessions = l;
  pthread_mutex_unlock(&a->mu);
  return l;
}

static void save_session(acp_agent *a, const acp_session *s) {
  if (!a->persist)
    return;
  hx_err e;
  pthread_mutex_lock(&a->mu); /* s->mode may be switched by session/set_mode */
  hx_code rc = acp_session_save(s, a->session_dir, &e);
  pthread_mutex_unlock(&a->mu);
  if (rc != HX_OK)
    HX_WARN("acp: session %s not saved: %s", s->id, e.msg);
}

static void handle_session_new(acp_agent *a, const acp_msg *m) {
  json_t *p = want_params(a, m);
  if (!p)
    return;
  const char *cwd = NULL;
  hx_err e;
  if (check_session_params(p, &cwd, &e)) {
    respond_invalid(a, m, &e);
    return;
  }
  if (key_missing(a)) {
    char msg[300];
    snprintf(msg, sizeof msg, "authentication required: set the environment variable %s",
             a->cfg->api_key_env);
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_AUTH_REQUIRED, msg);
    return;
  }
  acp_session *s = acp_session_new(cwd, &e);
  live_session *l = s ? add_session(a, s) : NULL;
  if (!l) {
    acp_session_free(s);
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_INTERNAL_ERROR, "cannot create a session");
    return;
  }
  save_session(a, s);
  HX_INFO("acp: session %s created in %s", s->id, s->cwd);
  acp_conn_respond(a->conn, m->id,
                   json_pack("{s:s, s:o}", "sessionId", s->id, "modes", modes_state(s)));
}

/* Replays a persisted history as session/update notifications. */
static void replay_history(acp_agent *a, const acp_session *s) {
  size_t i;
  json_t *msg;
  json_array_foreach(s->messages, i, msg) {
    const char *role = json_string_value(json_object_get(msg, "role"));
    json_t *content = json_object_get(msg, "content");
    if (!role)
      continue;
    if (strcmp(role, "user") == 0 && json_is_string(content)) {
      notify_text(a, s->id, "user_message_chunk", json_string_value(content),
                  json_string_length(content));
    } else if (strcmp(role, "assistant") == 0) {
      json_t *r = json_object_get(msg, "reasoning_content");
      if (json_is_string(r) && json_string_length(r))
        notify_text(a, s->id, "agent_thought_chunk", json_string_value(r), json_string_length(r));
      if (json_is_string(content) && json_string_length(content))
        notify_text(a, s->id, "agent_message_chunk", json_string_value(content),
                    json_string_length(content));
      size_t k;
      json_t *tc;
      json_array_foreach(json_object_get(msg, "tool_calls"), k, tc) {
        const char *id = json_string_value(json_object_get(tc, "id"));
        const char *name =
            json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        if (id)
          notify_update(a, s->id,
                        json_pack("{s:s, s:s, s:s, s:s}", "sessionUpdate", "tool_call",
                                  "toolCallId", id, "title", name ? name : "tool", "status",
                                  "pending"));
      }
    } else if (strcmp(role, "tool") == 0 && json_is_string(content)) {
      const char *id = json_string_value(json_object_get(msg, "tool_call_id"));
      if (id)
        notify_update(a, s->id,
                      json_pack("{s:s, s:s, s:s, s:[{s:s, s:{s:s, s:O}}]}", "sessionUpdate",
                                "tool_call_update", "toolCallId", id, "status", "completed",
                                "content", "type", "content", "content", "type", "text", "text",
                                content));
    }
  }
}

static void handle_session_load(acp_agent *a, const acp_msg *m) {
  json_t *p = want_params(a, m);
  if (!p)
    return;
  const char *cwd = NULL, *id = NULL;
  hx_err e;
  if (check_session_params(p, &cwd, &e) || hx_json_get_string(p, "sessionId", true, &id, &e)) {
    respond_invalid(a, m, &e);
    return;
  }
  if (!a->persist) {
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_METHOD_NOT_FOUND,
                           "session/load: sessions are not persisted (no HOME)");
    return;
  }
  pthread_mutex_lock(&a->mu);
  bool live = find_session(a, id) != NULL;
  pthread_mutex_unlock(&a->mu);
  if (live) {
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_INVALID_PARAMS,
                           "session/load: that session is already open");
    return;
  }
  acp_session *s = acp_session_load(a->session_dir, id, &e);
  if (!s) {
    char msg[HX_ERR_MSG_MAX + 32];
    snprintf(msg, sizeof msg, "session/load: %s", e.msg);
    acp_conn_respond_error(
        a->conn, m->id,
        e.code == HX_ENOTFOUND ? ACP_RPC_RESOURCE_NOT_FOUND : ACP_RPC_INTERNAL_ERROR, msg);
    return;
  }
  if (strcmp(s->cwd, cwd) != 0) { /* the client's cwd wins */
    char *c = strdup(cwd);
    if (c) {
      free(s->cwd);
      s->cwd = c;
    }
  }
  if (!add_session(a, s)) {
    acp_session_free(s);
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_INTERNAL_ERROR, "out of memory");
    return;
  }
  replay_history(a, s);
  acp_conn_respond(a->conn, m->id, json_pack("{s:o}", "modes", modes_state(s)));
}

static void handle_set_mode(acp_agent *a, const acp_msg *m) {
  json_t *p = want_params(a, m);
  if (!p)
    return;
  const char *id = NULL, *mode = NULL;
  hx_err e;
  if (hx_json_get_string(p, "sessionId", true, &id, &e) ||
      hx_json_get_string(p, "modeId", true, &mode, &e)) {
    respond_invalid(a, m, &e);
    return;
  }
  if (strcmp(mode, "ask") != 0 && strcmp(mode, "read_only") != 0) {
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_INVALID_PARAMS,
                           "session/set_mode: \"modeId\" must be \"ask\" or \"read_only\"");
    return;
  }
  pthread_mutex_lock(&a->mu);
  live_session *l = find_session(a, id);
  if (l)
    snprintf(l->s->mode, sizeof l->s->mode, "%s", mode);
  pthread_mutex_unlock(&a->mu);
  if (!l) {
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_RESOURCE_NOT_FOUND,
                           "session/set_mode: unknown sessionId");
    return;
  }
  acp_conn_respond(a->conn, m->id, json_object());
}

/* ---- prompt ---- */

/* Turns the prompt's content blocks into the text of one user message. */
static json_t *prompt_to_message(const json_t *blocks, hx_err *e) {
  if (!json_is_array(blocks) || json_array_size(blocks) == 0) {
    hx_err_set(e, HX_EINVAL, "\"prompt\" must be a non-empty array of content blocks");
    return NULL;
  }
  hx_buf text;
  hx_buf_init(&text, PROMPT_TEXT_MAX);
  size_t i;
  json_t *b;
  hx_code rc = HX_OK;
  json_array_foreach(blocks, i, b) {
    const char *type = json_string_value(json_object_get(b, "type"));
    if (!type) {
      hx_err_set(e, HX_EINVAL, "prompt[%zu] needs a \"type\"", i);
      goto bad;
    }
    if (text.len)
      rc = hx_buf_append_char(&text, '\n');
    if (strcmp(type, "text") == 0) {
      json_t *t = json_object_get(b, "text");
      if (!json_is_string(t)) {
        hx_err_set(e, HX_EINVAL, "prompt[%zu].text must be a string", i);
        goto bad;
      }
      rc = rc ? rc : hx_buf_append(&text, json_string_value(t), json_string_length(t));
    } else if (strcmp(type, "resource_link") == 0) {
      const char *uri = json_string_value(json_object_get(b, "uri"));
      const char *name = json_string_value(json_object_get(b, "name"));
      if (!uri) {
        hx_err_set(e, HX_EINVAL, "prompt[%zu].uri must be a string", i);
        goto bad;
      }
      rc = rc ? rc : hx_buf_printf(&text, "[@%s](%s)", name ? name : uri, uri);
    } else if (strcmp(type, "resource") == 0) {
      json_t *r = json_object_get(b, "resource");
      const char *uri = json_string_value(json_object_get(r, "uri"));
      json_t *t = json_object_get(r, "text");
      if (!uri) {
        hx_err_set(e, HX_EINVAL, "prompt[%zu].resource.uri must be a string", i);
        goto bad;
      }
      if (json_is_string(t)) {
        rc = rc ? rc : hx_buf_printf(&text, "<context uri=\"%s\">\n", uri);
        rc = rc ? rc : hx_buf_append(&text, json_string_value(t), json_string_length(t));
        rc = rc ? rc : hx_buf_append_str(&text, "\n</context>");
      } else {
        rc = rc ? rc : hx_buf_printf(&text, "[binary resource %s not included]", uri);
      }
    } else if (strcmp(type, "image") == 0 || strcmp(type, "audio") == 0) {
      hx_err_set(e, HX_EUNSUPPORTED,
                 "prompt[%zu]: %s content is not supported (see promptCapabilities)", i, type);
      goto bad;
    } else {
      hx_err_set(e, HX_EINVAL, "prompt[%zu]: unknown content type \"%.64s\"", i, type);
      goto bad;
    }
    if (rc) {
      hx_err_set(e, HX_ETOOLARGE, "the prompt exceeds %d bytes", PROMPT_TEXT_MAX);
      goto bad;
    }
  }
  json_t *msg =
      json_pack("{s:s, s:s#}", "role", "user", "content", text.data ? text.data : "", text.len);
  hx_buf_free(&text);
  return msg;
bad:
  hx_buf_free(&text);
  return NULL;
}

typedef struct turn {
  acp_agent *a;
  live_session *l;
  int64_t prompt_tokens, completion_tokens, reasoning_tokens; /* summed over requests */
  bool has_usage;
} turn;

static void on_content(void *ud, const char *text, size_t len) {
  turn *t = ud;
  notify_text(t->a, t->l->s->id, "agent_message_chunk", text, len);
}

static void on_reasoning(void *ud, const char *text, size_t len) {
  turn *t = ud;
  notify_text(t->a, t->l->s->id, "agent_thought_chunk", text, len);
}

static char *system_prompt(const acp_agent *a, const acp_session *s) {
  hx_buf b;
  hx_buf_init(&b, 128 * 1024);
  hx_buf_printf(&b,
                "You are a coding assistant working in the user's editor through helexa-acp. "
                "The working directory is %s. Use the tools you are given to read files, write "
                "files and run commands when that helps; paths may be relative to the working "
                "directory.",
                s->cwd);
  if (a->cfg->system_prompt) {
    hx_buf_append_str(&b, "\n\n");
    hx_buf_append_str(&b, a->cfg->system_prompt);
  }
  return hx_buf_detach(&b);
}

/* Resolves the model id once per process. */
static const char *turn_model(acp_agent *a, hx_err *e) {
  pthread_mutex_lock(&a->mu);
  const char *m = a->model;
  pthread_mutex_unlock(&a->mu);
  if (m)
    return m;
  acp_upstream u = {.endpoint = a->cfg->endpoint, .api_key = a->api_key};
  char *id = acp_upstream_first_model(&u, e);
  if (!id)
    return NULL;
  pthread_mutex_lock(&a->mu);
  if (!a->model)
    a->model = id;
  else
    free(id);
  m = a->model;
  pthread_mutex_unlock(&a->mu);
  HX_INFO("acp: using model %s", m);
  return m;
}

/* One upstream request. Returns the stop reason when the turn ends here
 * ("" to continue with tool results). */
static const char *turn_step(turn *t, const char *model, hx_err *e) {
  acp_agent *a = t->a;
  live_session *l = t->l;
  acp_session *s = l->s;
  pthread_mutex_lock(&a->mu);
  bool read_only = strcmp(s->mode, "read_only") == 0;
  pthread_mutex_unlock(&a->mu);
  acp_tool_ctx tctx = {.conn = a->conn,
                       .session = s,
                       .cancel = &l->cancel,
                       .fs_read = a->fs_read,
                       .fs_write = a->fs_write,
                       .terminal = a->terminal,
                       .read_only = read_only};
  json_t *tools = acp_tools_definitions(&tctx);
  json_t *msgs = json_array();
  char *sys = system_prompt(a, s);
  json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", sys ? sys : ""));
  free(sys);
  json_array_extend(msgs, s->messages);

  hx_http_call *call = hx_http_call_new();
  pthread_mutex_lock(&a->mu);
  l->http = call;
  bool cancelled = atomic_load(&l->cancel);
  pthread_mutex_unlock(&a->mu);
  acp_stream st;
  acp_stream_init(&st, on_content, on_reasoning, t);
  acp_upstream u = {.endpoint = a->cfg->endpoint,
                    .model = model,
                    .api_key = a->api_key,
                    .max_tokens = a->cfg->max_tokens};
  hx_code rc = !call       ? hx_err_set(e, HX_ENOMEM, "out of memory")
               : cancelled ? HX_ECANCELLED
                           : acp_upstream_chat(&u, call, msgs, tools, &st, e);
  pthread_mutex_lock(&a->mu);
  l->http = NULL;
  pthread_mutex_unlock(&a->mu);
  hx_http_call_free(call);
  json_decref(msgs);
  json_decref(tools);
  if (atomic_load(&l->cancel))
    rc = HX_ECANCELLED;

  if (st.has_usage) {
    t->has_usage = true;
    t->prompt_tokens += st.prompt_tokens;
    t->completion_tokens += st.completion_tokens;
    t->reasoning_tokens += st.reasoning_tokens;
    notify_update(a, s->id,
                  json_pack("{s:s, s:I, s:I}", "sessionUpdate", "usage_update", "used",
                            (json_int_t)(st.prompt_tokens + st.completion_tokens), "size",
                            (json_int_t)a->cfg->context_window));
  }
  const char *stop = "";
  if (rc == HX_ECANCELLED) {
    if (st.content.len || st.reasoning.len) { /* keep what the user saw */
      st.tool_call_count = 0;
      json_array_append_new(s->messages, acp_stream_message(&st));
    }
    stop = "cancelled";
  } else if (rc != HX_OK) {
    HX_WARN("acp: session %s: %s", s->id, e->msg);
    char msg[HX_ERR_MSG_MAX + 32];
    snprintf(msg, sizeof msg, "%s⚠ helexa-acp: %s", st.content.len ? "\n\n" : "", e->msg);
    acp_utf8_scrub(msg);
    notify_text(a, s->id, "agent_message_chunk", msg, strlen(msg));
    if (st.content.len || st.reasoning.len) {
      st.tool_call_count = 0;
      json_array_append_new(s->messages, acp_stream_message(&st));
    }
    stop = "end_turn";
  } else {
    /* Give the tool calls ids unique within the session. */
    size_t base = json_array_size(s->messages);
    for (int i = 0; i < st.tool_call_count; i++)
      snprintf(st.tool_calls[i].id, sizeof st.tool_calls[i].id, "call_%zu_%d", base, i);
    json_array_append_new(s->messages, acp_stream_message(&st));
    if (st.tool_call_count == 0) {
      stop = strcmp(st.finish_reason, "length") == 0           ? "max_tokens"
             : strcmp(st.finish_reason, "content_filter") == 0 ? "refusal"
                                                               : "end_turn";
    }
    for (int i = 0; i < st.tool_call_count && !stop[0]; i++) {
      const acp_stream_tool_call *tc = &st.tool_calls[i];
      json_t *result = NULL;
      hx_err terr;
      hx_code trc = acp_tool_run(&tctx, tc->id, tc->name, tc->arguments.data, &result, &terr);
      if (trc == HX_OK) {
        json_array_append_new(s->messages, result);
      } else {
        acp_utf8_scrub(terr.msg);
        /* Keep the history well-formed: every tool call gets an answer. */
        json_array_append_new(s->messages,
                              json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", tc->id,
                                        "content", trc == HX_ECANCELLED ? "cancelled" : terr.msg));
        stop = trc == HX_ECANCELLED ? "cancelled" : "end_turn";
      }
    }
    for (int i = 0; i < st.tool_call_count && stop[0]; i++) { /* unanswered after a stop */
      bool answered = false;
      size_t k;
      json_t *m;
      json_array_foreach(s->messages, k, m) {
        const char *id = json_string_value(json_object_get(m, "tool_call_id"));
        answered = answered || (id && strcmp(id, st.tool_calls[i].id) == 0);
      }
      if (!answered)
        json_array_append_new(s->messages,
                              json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id",
                                        st.tool_calls[i].id, "content", "not run: the turn ended"));
    }
    if (atomic_load(&l->cancel))
      stop = "cancelled";
  }
  acp_stream_free(&st);
  return stop;
}

static void *turn_main(void *arg) {
  live_session *l = arg;
  acp_agent *a = l->agent;
  acp_session *s = l->s;
  hx_log_set_request_id(s->id);
  turn t = {.a = a, .l = l};
  json_array_append_new(s->messages, l->user_message);
  l->user_message = NULL;
  hx_err e;
  const char *stop = NULL;
  const char *model = atomic_load(&l->cancel) ? NULL : turn_model(a, &e);
  if (atomic_load(&l->cancel)) {
    stop = "cancelled";
  } else if (!model) {
    char msg[HX_ERR_MSG_MAX + 32];
    snprintf(msg, sizeof msg, "⚠ helexa-acp: %s", e.msg);
    acp_utf8_scrub(msg);
    notify_text(a, s->id, "agent_message_chunk", msg, strlen(msg));
    stop = "end_turn";
  }
  for (int64_t n = 0; !stop && n < a->cfg->max_turn_requests; n++) {
    const char *r = turn_step(&t, model, &e);
    if (r[0])
      stop = r;
  }
  if (!stop)
    stop = "max_turn_requests";
  while (json_array_size(s->messages) > ACP_SESSION_MESSAGES_MAX)
    json_array_remove(s->messages, 0);
  save_session(a, s);
  json_t *result = json_pack("{s:s}", "stopReason", stop);
  if (t.has_usage)
    json_object_set_new(result, "usage",
                        json_pack("{s:I, s:I, s:I, s:I}", "inputTokens",
                                  (json_int_t)t.prompt_tokens, "outputTokens",
                                  (json_int_t)t.completion_tokens, "totalTokens",
                                  (json_int_t)(t.prompt_tokens + t.completion_tokens),
                                  "thoughtTokens", (json_int_t)t.reasoning_tokens));
  HX_INFO("acp: turn ended: %s", stop);
  json_t *id = l->prompt_id;
  pthread_mutex_lock(&a->mu);
  l->prompt_id = NULL;
  l->busy = false;
  pthread_mutex_unlock(&a->mu);
  acp_conn_respond(a->conn, id, result);
  json_decref(id);
  hx_log_set_request_id(NULL);
  return NULL;
}

static void handle_prompt(acp_agent *a, const acp_msg *m) {
  json_t *p = want_params(a, m);
  if (!p)
    return;
  const char *id = NULL;
  hx_err e;
  if (hx_json_get_string(p, "sessionId", true, &id, &e)) {
    respond_invalid(a, m, &e);
    return;
  }
  json_t *user = prompt_to_message(json_object_get(p, "prompt"), &e);
  if (!user) {
    respond_invalid(a, m, &e);
    return;
  }
  pthread_mutex_lock(&a->mu);
  live_session *l = find_session(a, id);
  const char *problem = !l ? "unknown sessionId" : l->busy ? "a prompt is already running" : NULL;
  bool join = false;
  pthread_t old;
  if (!problem) {
    join = l->has_thread;
    old = l->thread;
    l->has_thread = false;
    l->busy = true;
  }
  pthread_mutex_unlock(&a->mu);
  if (problem) {
    json_decref(user);
    char msg[128];
    snprintf(msg, sizeof msg, "session/prompt: %s", problem);
    acp_conn_respond_error(a->conn, m->id, l ? ACP_RPC_INVALID_REQUEST : ACP_RPC_RESOURCE_NOT_FOUND,
                           msg);
    return;
  }
  if (join)
    pthread_join(old, NULL); /* the previous turn has already answered */
  atomic_store(&l->cancel, false);
  l->prompt_id = json_deep_copy(m->id); /* m belongs to this thread */
  l->user_message = user;
  pthread_mutex_lock(&a->mu);
  int rc = pthread_create(&l->thread, NULL, turn_main, l);
  if (rc == 0)
    l->has_thread = true;
  else
    l->busy = false;
  pthread_mutex_unlock(&a->mu);
  if (rc != 0) {
    json_decref(l->prompt_id);
    json_decref(l->user_message);
    l->prompt_id = l->user_message = NULL;
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_INTERNAL_ERROR, "cannot start a thread");
  }
}

static void cancel_session(acp_agent *a, live_session *l) {
  pthread_mutex_lock(&a->mu);
  if (l->busy) {
    atomic_store(&l->cancel, true);
    if (l->http)
      hx_http_call_cancel(l->http);
  }
  pthread_mutex_unlock(&a->mu);
  acp_conn_wake(a->conn);
}

static void handle_cancel(acp_agent *a, const acp_msg *m) {
  const char *id = json_string_value(json_object_get(m->params, "sessionId"));
  if (!id) {
    HX_WARN("acp: session/cancel without a sessionId ignored");
    return;
  }
  pthread_mutex_lock(&a->mu);
  live_session *l = find_session(a, id);
  pthread_mutex_unlock(&a->mu);
  if (!l) {
    HX_WARN("acp: session/cancel for an unknown session ignored");
    return;
  }
  HX_INFO("acp: session %s: cancel", id);
  cancel_session(a, l);
}

/* ---- the loop ---- */

static void dispatch(acp_agent *a, const acp_msg *m) {
  if (m->kind == ACP_MSG_RESPONSE) {
    if (!acp_conn_deliver(a->conn, m))
      HX_DEBUG("acp: response to no pending request dropped");
    return;
  }
  const char *method = m->method;
  if (m->kind == ACP_MSG_NOTIFICATION) {
    if (strcmp(method, "session/cancel") == 0)
      handle_cancel(a, m);
    else
      HX_DEBUG("acp: notification %s ignored", method);
    return;
  }
  if (strcmp(method, "initialize") == 0) {
    handle_initialize(a, m);
  } else if (strcmp(method, "authenticate") == 0) {
    handle_authenticate(a, m);
  } else if (strcmp(method, "session/new") == 0) {
    handle_session_new(a, m);
  } else if (strcmp(method, "session/load") == 0) {
    handle_session_load(a, m);
  } else if (strcmp(method, "session/prompt") == 0) {
    handle_prompt(a, m);
  } else if (strcmp(method, "session/set_mode") == 0) {
    handle_set_mode(a, m);
  } else {
    char msg[ACP_RPC_METHOD_MAX + 32];
    snprintf(msg, sizeof msg, "method not found: %s", method);
    acp_conn_respond_error(a->conn, m->id, ACP_RPC_METHOD_NOT_FOUND, msg);
  }
}

static void agent_run(acp_agent *a, int in_fd) {
  acp_line_reader r;
  acp_line_reader_init(&r, in_fd, LINE_MAX_BYTES);
  for (;;) {
    const char *line;
    size_t len;
    hx_err e;
    hx_code rc = acp_line_reader_next(&r, &line, &len, &e);
    if (rc == HX_EIO) {
      if (e.msg[0])
        HX_ERROR("acp: %s", e.msg);
      break;
    }
    if (rc == HX_ETOOLARGE) {
      HX_WARN("acp: %s", e.msg);
      acp_conn_respond_error(a->conn, NULL, ACP_RPC_INVALID_REQUEST, e.msg);
      continue;
    }
    if (rc != HX_OK) {
      HX_ERROR("acp: %s", e.msg);
      break;
    }
    if (hx_slice_trim(hx_slice_make(line, len)).len == 0)
      continue; /* blank lines are harmless */
    acp_msg m;
    json_t *err_id = NULL;
    int code = acp_jsonrpc_parse(line, len, LINE_MAX_BYTES, &m, &err_id, &e);
    if (code != 0) {
      HX_WARN("acp: bad message: %s", e.msg);
      acp_conn_respond_error(a->conn, err_id, code, e.msg);
      json_decref(err_id);
      continue;
    }
    dispatch(a, &m);
    acp_msg_free(&m);
  }
  acp_line_reader_free(&r);
}

static void agent_shutdown(acp_agent *a) {
  acp_conn_close(a->conn);
  pthread_mutex_lock(&a->mu);
  live_session *list = a->sessions;
  pthread_mutex_unlock(&a->mu);
  for (live_session *l = list; l; l = l->next)
    cancel_session(a, l);
  for (live_session *l = list; l; l = l->next) {
    pthread_mutex_lock(&a->mu);
    bool join = l->has_thread;
    l->has_thread = false;
    pthread_mutex_unlock(&a->mu);
    if (join)
      pthread_join(l->thread, NULL);
  }
  while (a->sessions) {
    live_session *l = a->sessions;
    a->sessions = l->next;
    acp_session_free(l->s);
    json_decref(l->prompt_id);
    json_decref(l->user_message);
    free(l);
  }
}

int acp_main(int argc, char **argv) {
  acp_config cfg;
  acp_config_init(&cfg);
  acp_config_action action;
  hx_err e;
  if (acp_config_load(&cfg, argc, argv, &action, &e) != HX_OK) {
    fprintf(stderr, "helexa-acp: %s\n", e.msg);
    acp_config_free(&cfg);
    return 2;
  }
  if (action == ACP_CONFIG_EXIT) {
    acp_config_free(&cfg);
    return 0;
  }
  hx_log_set_level(cfg.log_level);
  /* Protocol output goes to a private copy of stdout; anything else that
   * writes to fd 1 ends up on stderr instead of corrupting the stream. */
  fflush(stdout);
  int out_fd = dup(STDOUT_FILENO);
  if (out_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
    fprintf(stderr, "helexa-acp: cannot set up stdout\n");
    acp_config_free(&cfg);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  hx_http_client_global_init();

  acp_agent a = {.cfg = &cfg};
  pthread_mutex_init(&a.mu, NULL);
  a.conn = acp_conn_new(out_fd);
  if (cfg.model)
    a.model = strdup(cfg.model);
  if (cfg.api_key_env && cfg.api_key_env[0]) {
    const char *k = getenv(cfg.api_key_env);
    if (k && k[0])
      a.api_key = strdup(k);
    else
      HX_WARN("acp: the environment variable %s is not set", cfg.api_key_env);
  }
  a.persist = acp_session_dir(a.session_dir, sizeof a.session_dir, &e) == HX_OK;
  if (!a.persist)
    HX_WARN("acp: sessions will not be saved: %s", e.msg);
  HX_INFO("acp: helexa-acp %s, endpoint %s", HELEXA_VERSION, cfg.endpoint);
  if (!a.conn) {
    fprintf(stderr, "helexa-acp: out of memory\n");
  } else {
    agent_run(&a, STDIN_FILENO);
    agent_shutdown(&a);
  }
  acp_conn_free(a.conn);
  free(a.api_key);
  free(a.model);
  pthread_mutex_destroy(&a.mu);
  close(out_fd);
  acp_config_free(&cfg);
  return 0;
}
