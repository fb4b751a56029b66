/* status.h — the one error type of helexa.
 *
 * Failures the world can cause (bad file, bad request, OOM, unreachable peer)
 * are reported as an hx_code plus a human message in an hx_err that the caller
 * owns. Functions that can fail return hx_code (HX_OK == 0) and take an
 * `hx_err *err` that may be NULL. Bugs are not failures: see HX_ASSERT. */
#ifndef HX_STATUS_H
#define HX_STATUS_H

#include <stdarg.h>
#include <stddef.h>

typedef enum hx_code {
  HX_OK = 0,
  HX_EINVAL,       /* malformed input: bad syntax, wrong type, out of range */
  HX_ENOMEM,       /* allocation failed (host or device) */
  HX_EIO,          /* read/write/open failed */
  HX_EFORMAT,      /* file or message violates its format */
  HX_ETOOLARGE,    /* a bounded size was exceeded */
  HX_ENOTFOUND,    /* unknown name, key, model, file */
  HX_EUNSUPPORTED, /* well-formed, but not something we implement */
  HX_ECANCELLED,   /* stopped on request */
  HX_EBUSY,        /* resource in use / queue full */
  HX_ETIMEOUT,     /* a deadline passed */
  HX_EDEVICE,      /* accelerator error (may poison the device) */
  HX_ENUMERIC,     /* NaN/inf where numbers must be finite */
  HX_EINTERNAL,    /* unexpected state that is not a bug of the caller */
  HX_CODE_COUNT
} hx_code;

enum { HX_ERR_MSG_MAX = 512 };

typedef struct hx_err {
  hx_code code;
  char msg[HX_ERR_MSG_MAX]; /* NUL-terminated, human readable, names the input */
} hx_err;

/* Short stable name of a code ("invalid", "too_large", ...). Never NULL. */
const char *hx_strerror(hx_code code);

/* Sets err (if non-NULL) to code and the formatted message; returns code so
 * that `return hx_err_set(err, HX_EINVAL, "...")` reads naturally. */
hx_code hx_err_set(hx_err *err, hx_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
hx_code hx_err_vset(hx_err *err, hx_code code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Prepends "prefix: " to err's message (context on the way up). Returns code. */
hx_code hx_err_wrap(hx_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void hx_err_clear(hx_err *err);

/* Always-on invariant check: prints file:line and the expression, aborts. */
#define HX_ASSERT(cond)                                                                            \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      hx_assert_fail(#cond, __FILE__, __LINE__, __func__);                                         \
  } while (0)

_Noreturn void hx_assert_fail(const char *expr, const char *file, int line, const char *func);

/* Overflow-checked size arithmetic: return 0 and set *out on success, -1 on
 * overflow (out untouched). */
static inline int hx_size_mul(size_t a, size_t b, size_t *out) {
  size_t r;
  if (__builtin_mul_overflow(a, b, &r))
    return -1;
  *out = r;
  return 0;
}
static inline int hx_size_add(size_t a, size_t b, size_t *out) {
  size_t r;
  if (__builtin_add_overflow(a, b, &r))
    return -1;
  *out = r;
  return 0;
}

#endif
