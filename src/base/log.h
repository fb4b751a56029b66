/* log.h — leveled logging to stderr: one line per event with an ISO-8601 UTC
 * timestamp, level, the calling thread's request id (when set) and message.
 * Thread-safe; each line is written with a single write(2). */
#ifndef HX_LOG_H
#define HX_LOG_H

typedef enum hx_log_level {
  HX_LOG_DEBUG = 0,
  HX_LOG_INFO,
  HX_LOG_WARN,
  HX_LOG_ERROR,
  HX_LOG_OFF
} hx_log_level;

void hx_log_set_level(hx_log_level level);
hx_log_level hx_log_get_level(void);
/* Parses "debug|info|warn|error|off"; returns -1 on an unknown name. */
int hx_log_level_parse(const char *name, hx_log_level *out);

/* Request id shown on every line logged by this thread until cleared (NULL).
 * The string is copied (up to 63 bytes). */
void hx_log_set_request_id(const char *id);
const char *hx_log_request_id(void); /* "" when unset */

void hx_log(hx_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define HX_DEBUG(...) hx_log(HX_LOG_DEBUG, __VA_ARGS__)
#define HX_INFO(...) hx_log(HX_LOG_INFO, __VA_ARGS__)
#define HX_WARN(...) hx_log(HX_LOG_WARN, __VA_ARGS__)
#define HX_ERROR(...) hx_log(HX_LOG_ERROR, __VA_ARGS__)

#endif
