/* status.c — hx_err helpers and the assertion handler. */
#include "base/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const code_names[HX_CODE_COUNT] = {
    [HX_OK] = "ok",
    [HX_EINVAL] = "invalid",
    [HX_ENOMEM] = "out_of_memory",
    [HX_EIO] = "io",
    [HX_EFORMAT] = "format",
    [HX_ETOOLARGE] = "too_large",
    [HX_ENOTFOUND] = "not_found",
    [HX_EUNSUPPORTED] = "unsupported",
    [HX_ECANCELLED] = "cancelled",
    [HX_EBUSY] = "busy",
    [HX_ETIMEOUT] = "timeout",
    [HX_EDEVICE] = "device",
    [HX_ENUMERIC] = "numeric",
    [HX_EINTERNAL] = "internal",
};

const char *hx_strerror(hx_code code) {
  if ((unsigned)code >= HX_CODE_COUNT)
    return "unknown";
  return code_names[code];
}

hx_code hx_err_vset(hx_err *err, hx_code code, const char *fmt, va_list ap) {
  if (err) {
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  }
  return code;
}

hx_code hx_err_set(hx_err *err, hx_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  hx_err_vset(err, code, fmt, ap);
  va_end(ap);
  return code;
}

hx_code hx_err_wrap(hx_err *err, const char *fmt, ...) {
  if (!err)
    return HX_EINTERNAL;
  char prefix[HX_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  char old[HX_ERR_MSG_MAX];
  memcpy(old, err->msg, sizeof old);
  snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
  return err->code;
}

void hx_err_clear(hx_err *err) {
  if (err) {
    err->code = HX_OK;
    err->msg[0] = '\0';
  }
}

_Noreturn void hx_assert_fail(const char *expr, const char *file, int line, const char *func) {
  fprintf(stderr, "%s:%d: %s: assertion failed: %s\n", file, line, func, expr);
  fflush(stderr);
  abort();
}
