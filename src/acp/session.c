/* session.c — see session.h. File shape:
 * {"version":1,"sessionId":"…","cwd":"…","mode":"ask","messages":[…]}. */
#include "acp/session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"

static hx_code random_id(char out[ACP_SESSION_ID_LEN + 1], hx_err *err) {
  unsigned char raw[ACP_SESSION_ID_LEN / 2];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return hx_err_set(err, HX_EIO, "getrandom: %s", strerror(errno));
    }
    got += (size_t)n;
  }
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < sizeof raw; i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  out[ACP_SESSION_ID_LEN] = '\0';
  return HX_OK;
}

bool acp_session_id_valid(const char *id) {
  if (!id || strlen(id) != ACP_SESSION_ID_LEN)
    return false;
  for (const char *p = id; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return false;
  return true;
}

static acp_session *session_alloc(const char *cwd, hx_err *err) {
  acp_session *s = calloc(1, sizeof *s);
  if (!s || !(s->cwd = strdup(cwd)) || !(s->messages = json_array())) {
    acp_session_free(s);
    hx_err_set(err, HX_ENOMEM, "out of memory creating a session");
    return NULL;
  }
  snprintf(s->mode, sizeof s->mode, "ask");
  return s;
}

acp_session *acp_session_new(const char *cwd, hx_err *err) {
  acp_session *s = session_alloc(cwd, err);
  if (s && random_id(s->id, err) != HX_OK) {
    acp_session_free(s);
    return NULL;
  }
  return s;
}

void acp_session_free(acp_session *s) {
  if (!s)
    return;
  free(s->cwd);
  json_decref(s->messages);
  free(s);
}

hx_code acp_session_dir(char *out, size_t n, hx_err *err) {
  const char *xdg = getenv("XDG_DATA_HOME");
  const char *home = getenv("HOME");
  int w;
  if (xdg && xdg[0] == '/')
    w = snprintf(out, n, "%s/helexa/acp/sessions", xdg);
  else if (home && home[0])
    w = snprintf(out, n, "%s/.local/share/helexa/acp/sessions", home);
  else
    return hx_err_set(err, HX_ENOTFOUND, "neither XDG_DATA_HOME nor HOME is set");
  if (w < 0 || (size_t)w >= n)
    return hx_err_set(err, HX_ETOOLARGE, "session directory path too long");
  return HX_OK;
}

/* mkdir -p with mode 0700 for the components we create. */
static hx_code make_dirs(const char *dir, hx_err *err) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp)
    return hx_err_set(err, HX_ETOOLARGE, "path too long: %s", dir);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
      return hx_err_set(err, HX_EIO, "%s: %s", tmp, strerror(errno));
    *p = '/';
  }
  if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
    return hx_err_set(err, HX_EIO, "%s: %s", tmp, strerror(errno));
  return HX_OK;
}

hx_code acp_session_save(const acp_session *s, const char *dir, hx_err *err) {
  HX_ASSERT(acp_session_id_valid(s->id));
  hx_code rc = make_dirs(dir, err);
  if (rc)
    return rc;
  char path[4200], tmp[4300];
  snprintf(path, sizeof path, "%s/%s.json", dir, s->id);
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  json_t *doc = json_pack("{s:i, s:s, s:s, s:s, s:O}", "version", 1, "sessionId", s->id, "cwd",
                          s->cwd, "mode", s->mode, "messages", s->messages);
  hx_buf out;
  hx_buf_init(&out, ACP_SESSION_FILE_MAX);
  if (!doc || hx_json_dump(doc, &out) != HX_OK) {
    json_decref(doc);
    hx_buf_free(&out);
    return hx_err_set(err, HX_ETOOLARGE, "session %s is too large to save", s->id);
  }
  json_decref(doc);
  rc = HX_OK;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = hx_err_set(err, HX_EIO, "%s: %s", tmp, strerror(errno));
    goto done;
  }
  size_t off = 0;
  while (off < out.len) {
    ssize_t w = write(fd, out.data + off, out.len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      rc = hx_err_set(err, HX_EIO, "%s: %s", tmp, strerror(errno));
      break;
    }
    off += (size_t)w;
  }
  if (close(fd) != 0 && rc == HX_OK)
    rc = hx_err_set(err, HX_EIO, "%s: %s", tmp, strerror(errno));
  if (rc == HX_OK && rename(tmp, path) != 0)
    rc = hx_err_set(err, HX_EIO, "%s: %s", path, strerror(errno));
  if (rc != HX_OK)
    unlink(tmp);
done:
  hx_buf_free(&out);
  return rc;
}

acp_session *acp_session_load(const char *dir, const char *id, hx_err *err) {
  if (!acp_session_id_valid(id)) {
    hx_err_set(err, HX_ENOTFOUND, "unknown session \"%.64s\"", id ? id : "");
    return NULL;
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/%s.json", dir, id);
  FILE *f = fopen(path, "rb");
  if (!f) {
    hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "session %s: %s", id, strerror(errno));
    return NULL;
  }
  hx_buf text;
  hx_buf_init(&text, ACP_SESSION_FILE_MAX);
  char chunk[65536];
  size_t n;
  hx_code rc = HX_OK;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && rc == HX_OK)
    rc = hx_buf_append(&text, chunk, n);
  fclose(f);
  acp_session *s = NULL;
  if (rc != HX_OK) {
    hx_err_set(err, rc, "%s: larger than %d bytes", path, ACP_SESSION_FILE_MAX);
    goto out;
  }
  hx_json_limits lim = {.max_bytes = ACP_SESSION_FILE_MAX, .max_depth = 64};
  hx_err perr;
  json_t *doc = hx_json_parse(text.data ? text.data : "", text.len, lim, &perr);
  if (!doc) {
    hx_err_set(err, HX_EFORMAT, "%s: %s", path, perr.msg);
    goto out;
  }
  const char *cwd = NULL, *mode = NULL;
  json_t *msgs = json_object_get(doc, "messages");
  if (hx_json_get_string(doc, "cwd", true, &cwd, &perr) ||
      hx_json_get_string(doc, "mode", false, &mode, &perr) || !json_is_array(msgs)) {
    hx_err_set(err, HX_EFORMAT, "%s: %s", path,
               msgs && json_is_array(msgs) ? perr.msg : "\"messages\" must be an array");
    json_decref(doc);
    goto out;
  }
  s = session_alloc(cwd, err);
  if (s) {
    snprintf(s->id, sizeof s->id, "%s", id);
    if (mode && (strcmp(mode, "ask") == 0 || strcmp(mode, "read_only") == 0))
      snprintf(s->mode, sizeof s->mode, "%s", mode);
    json_decref(s->messages);
    s->messages = json_incref(msgs);
  }
  json_decref(doc);
out:
  hx_buf_free(&text);
  return s;
}
