/* log.c — see log.h. The level is a process-wide atomic (set once by main);
 * the request id is thread-local. */
#include "base/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = HX_LOG_INFO;
static _Thread_local char t_request_id[64];

void hx_log_set_level(hx_log_level level) { atomic_store(&g_level, (int)level); }
hx_log_level hx_log_get_level(void) { return (hx_log_level)atomic_load(&g_level); }

int hx_log_level_parse(const char *name, hx_log_level *out) {
  static const char *const names[] = {"debug", "info", "warn", "error", "off"};
  for (int i = 0; i < 5; i++) {
    if (strcmp(name, names[i]) == 0) {
      *out = (hx_log_level)i;
      return 0;
    }
  }
  return -1;
}

void hx_log_set_request_id(const char *id) {
  if (!id) {
    t_request_id[0] = '\0';
    return;
  }
  snprintf(t_request_id, sizeof t_request_id, "%s", id);
}

const char *hx_log_request_id(void) { return t_request_id; }

void hx_log(hx_log_level level, const char *fmt, ...) {
  if ((int)level < atomic_load(&g_level))
    return;
  static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
  char line[2048];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000, tags[level < 4 ? level : 3]);
  if (t_request_id[0] && n < (int)sizeof line)
    n += snprintf(line + n, sizeof line - (size_t)n, "[%s] ", t_request_id);
  if (n < (int)sizeof line) {
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
  }
  if (n >= (int)sizeof line - 1)
    n = (int)sizeof line - 2; /* truncated: keep the newline */
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}
