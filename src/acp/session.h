/* session.h — one ACP session: its working directory, its mode, the
 * conversation as OpenAI chat messages, and its on-disk copy.
 *
 * Sessions are persisted as one JSON file each under
 * $XDG_DATA_HOME/helexa/acp/sessions/ (default ~/.local/share/...), written
 * atomically (temporary file + rename) after every turn, so that
 * session/load can restore and replay them after a restart. Session ids are
 * 32 lowercase hex digits from the kernel's random source; only ids of that
 * shape are ever turned into paths. */
#ifndef ACP_SESSION_H
#define ACP_SESSION_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "base/status.h"

enum {
  ACP_SESSION_ID_LEN = 32,          /* hex digits */
  ACP_SESSION_FILE_MAX = 64 << 20,  /* bytes of one persisted session */
  ACP_SESSION_MESSAGES_MAX = 10000, /* history entries kept */
};

typedef struct acp_session {
  char id[ACP_SESSION_ID_LEN + 1];
  char *cwd;              /* absolute working directory, owned */
  char mode[32];          /* "ask" or "read_only" */
  json_t *messages;       /* array of OpenAI chat messages, owned */
  bool allow_edit_always; /* the user chose "always allow" for edits */
  bool allow_exec_always; /* the user chose "always allow" for commands */
} acp_session;

/* Creates a session with a fresh random id. NULL with err set on failure. */
acp_session *acp_session_new(const char *cwd, hx_err *err);
void acp_session_free(acp_session *s);

/* True when id has the shape of our session ids. */
bool acp_session_id_valid(const char *id);

/* The sessions directory (from XDG_DATA_HOME or HOME) into out; HX_ENOTFOUND
 * when neither variable is set. */
hx_code acp_session_dir(char *out, size_t n, hx_err *err);

/* Writes the session to dir/<id>.json atomically, creating dir. */
hx_code acp_session_save(const acp_session *s, const char *dir, hx_err *err);
/* Reads dir/<id>.json. HX_ENOTFOUND when there is no such session. */
acp_session *acp_session_load(const char *dir, const char *id, hx_err *err);

#endif
