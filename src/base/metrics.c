/* metrics.c — Prometheus registry (see metrics.h). Series are kept in a
 * small array per metric and found by linear search: metrics have tens of
 * series, and a scrape every few seconds renders them all anyway. */
#include "base/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LABEL_VALUE_MAX = 128 };

typedef enum kind { K_COUNTER, K_GAUGE, K_HISTOGRAM } kind;

typedef struct series {
  char values[HX_METRIC_LABELS_MAX][LABEL_VALUE_MAX];
  double value;                              /* counter / gauge; histogram sum */
  double count;                              /* histogram observations */
  double buckets[HX_METRIC_BUCKETS_MAX + 1]; /* cumulative counts; last = +Inf */
} series;

struct hx_metric {
  hx_metrics *reg;
  kind k;
  char *name;
  char *help;
  char *labels[HX_METRIC_LABELS_MAX];
  size_t n_labels;
  double bounds[HX_METRIC_BUCKETS_MAX];
  size_t n_bounds;
  series *s;
  size_t n_s, cap_s;
};

struct hx_metrics {
  pthread_mutex_t mu;
  size_t max_series;
  hx_metric **metrics;
  size_t n, cap;
};

const double hx_metrics_buckets_latency_s[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
const size_t hx_metrics_buckets_latency_n =
    sizeof hx_metrics_buckets_latency_s / sizeof hx_metrics_buckets_latency_s[0];

static bool name_ok(const char *s) {
  if (!s || !*s)
    return false;
  for (size_t i = 0; s[i]; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok)
      return false;
  }
  return true;
}

hx_metrics *hx_metrics_create(size_t max_series) {
  hx_metrics *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  pthread_mutex_init(&m->mu, NULL);
  m->max_series = max_series ? max_series : 256;
  return m;
}

static void metric_free(hx_metric *x) {
  free(x->name);
  free(x->help);
  for (size_t i = 0; i < x->n_labels; i++)
    free(x->labels[i]);
  free(x->s);
  free(x);
}

void hx_metrics_free(hx_metrics *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->n; i++)
    metric_free(m->metrics[i]);
  free(m->metrics);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

static hx_metric *metric_register(hx_metrics *m, kind k, const char *name, const char *help,
                                  const char *const *label_names, size_t n_labels,
                                  const double *bounds, size_t n_bounds) {
  HX_ASSERT(name_ok(name) && n_labels <= HX_METRIC_LABELS_MAX && n_bounds <= HX_METRIC_BUCKETS_MAX);
  for (size_t i = 0; i < n_labels; i++)
    HX_ASSERT(name_ok(label_names[i]));
  for (size_t i = 1; i < n_bounds; i++)
    HX_ASSERT(bounds[i] > bounds[i - 1]);
  pthread_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->n; i++) {
    if (strcmp(m->metrics[i]->name, name) == 0) {
      HX_ASSERT(m->metrics[i]->k == k && m->metrics[i]->n_labels == n_labels);
      pthread_mutex_unlock(&m->mu);
      return m->metrics[i];
    }
  }
  hx_metric *x = calloc(1, sizeof *x);
  bool ok = x != NULL;
  if (ok) {
    x->reg = m;
    x->k = k;
    x->name = strdup(name);
    x->help = strdup(help ? help : "");
    ok = x->name && x->help;
    for (size_t i = 0; ok && i < n_labels; i++) {
      x->labels[i] = strdup(label_names[i]);
      x->n_labels = i + 1;
      ok = x->labels[i] != NULL;
    }
    if (n_bounds)
      memcpy(x->bounds, bounds, n_bounds * sizeof *bounds);
    x->n_bounds = n_bounds;
  }
  if (ok && m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 32;
    hx_metric **p = realloc(m->metrics, cap * sizeof *p);
    if (p) {
      m->metrics = p;
      m->cap = cap;
    } else {
      ok = false;
    }
  }
  if (!ok) {
    if (x)
      metric_free(x);
    pthread_mutex_unlock(&m->mu);
    return NULL;
  }
  m->metrics[m->n++] = x;
  pthread_mutex_unlock(&m->mu);
  return x;
}

hx_metric *hx_metrics_counter(hx_metrics *m, const char *name, const char *help,
                              const char *const *label_names, size_t n_labels) {
  return metric_register(m, K_COUNTER, name, help, label_names, n_labels, NULL, 0);
}
hx_metric *hx_metrics_gauge(hx_metrics *m, const char *name, const char *help,
                            const char *const *label_names, size_t n_labels) {
  return metric_register(m, K_GAUGE, name, help, label_names, n_labels, NULL, 0);
}
hx_metric *hx_metrics_histogram(hx_metrics *m, const char *name, const char *help,
                                const char *const *label_names, size_t n_labels,
                                const double *buckets, size_t n_buckets) {
  HX_ASSERT(n_buckets >= 1);
  return metric_register(m, K_HISTOGRAM, name, help, label_names, n_labels, buckets, n_buckets);
}

static bool series_match(const series *s, const hx_metric *x, const char *const *vals) {
  for (size_t i = 0; i < x->n_labels; i++) {
    const char *v = vals && vals[i] ? vals[i] : "";
    if (strncmp(s->values[i], v, LABEL_VALUE_MAX - 1) != 0)
      return false;
  }
  return true;
}

/* Finds or creates the series (registry lock held); NULL only on OOM. */
static series *series_get(hx_metric *x, const char *const *vals, bool create) {
  for (size_t i = 0; i < x->n_s; i++)
    if (series_match(&x->s[i], x, vals))
      return &x->s[i];
  if (!create)
    return NULL;
  static const char *const other[HX_METRIC_LABELS_MAX] = {"other", "other", "other", "other",
                                                          "other", "other", "other", "other"};
  if (x->n_s + 1 >= x->reg->max_series && vals != other) /* keep one slot for "other" */
    return series_get(x, other, true);
  if (x->n_s == x->cap_s) {
    size_t cap = x->cap_s ? x->cap_s * 2 : 4;
    series *p = realloc(x->s, cap * sizeof *p);
    if (!p)
      return NULL;
    x->s = p;
    x->cap_s = cap;
  }
  series *s = &x->s[x->n_s++];
  memset(s, 0, sizeof *s);
  for (size_t i = 0; i < x->n_labels; i++) {
    const char *v = vals && vals[i] ? vals[i] : "";
    strncpy(s->values[i], v, LABEL_VALUE_MAX - 1);
  }
  return s;
}

void hx_metric_add(hx_metric *x, const char *const *vals, double v) {
  HX_ASSERT(x->k != K_HISTOGRAM);
  if (!isfinite(v) || (x->k == K_COUNTER && v < 0))
    return;
  pthread_mutex_lock(&x->reg->mu);
  series *s = series_get(x, vals, true);
  if (s)
    s->value += v;
  pthread_mutex_unlock(&x->reg->mu);
}

void hx_metric_inc(hx_metric *x, const char *const *vals) { hx_metric_add(x, vals, 1.0); }

void hx_metric_set(hx_metric *x, const char *const *vals, double v) {
  HX_ASSERT(x->k == K_GAUGE);
  pthread_mutex_lock(&x->reg->mu);
  series *s = series_get(x, vals, true);
  if (s)
    s->value = v;
  pthread_mutex_unlock(&x->reg->mu);
}

void hx_metric_observe(hx_metric *x, const char *const *vals, double v) {
  HX_ASSERT(x->k == K_HISTOGRAM);
  if (isnan(v))
    return;
  pthread_mutex_lock(&x->reg->mu);
  series *s = series_get(x, vals, true);
  if (s) {
    s->value += v;
    s->count += 1;
    for (size_t i = 0; i < x->n_bounds; i++)
      if (v <= x->bounds[i])
        s->buckets[i] += 1;
    s->buckets[x->n_bounds] += 1;
  }
  pthread_mutex_unlock(&x->reg->mu);
}

void hx_metric_clear(hx_metric *x) {
  pthread_mutex_lock(&x->reg->mu);
  x->n_s = 0;
  pthread_mutex_unlock(&x->reg->mu);
}

double hx_metric_value(hx_metric *x, const char *const *vals) {
  pthread_mutex_lock(&x->reg->mu);
  series *s = series_get(x, vals, false);
  double v = s ? (x->k == K_HISTOGRAM ? s->count : s->value) : 0;
  pthread_mutex_unlock(&x->reg->mu);
  return v;
}

static hx_code put_escaped(hx_buf *out, const char *s, bool is_help) {
  hx_code rc = HX_OK;
  for (; *s && rc == HX_OK; s++) {
    if (*s == '\\')
      rc = hx_buf_append_str(out, "\\\\");
    else if (*s == '\n')
      rc = hx_buf_append_str(out, "\\n");
    else if (*s == '"' && !is_help)
      rc = hx_buf_append_str(out, "\\\"");
    else
      rc = hx_buf_append_char(out, *s);
  }
  return rc;
}

/* Shortest of %.15g / %.17g that reads back exactly. */
static void fmt_double(char *dst, size_t cap, double v) {
  snprintf(dst, cap, "%.15g", v);
  if (strtod(dst, NULL) != v)
    snprintf(dst, cap, "%.17g", v);
}

static hx_code put_number(hx_buf *out, double v) {
  if (isinf(v))
    return hx_buf_append_str(out, v > 0 ? "+Inf" : "-Inf");
  if (isnan(v))
    return hx_buf_append_str(out, "NaN");
  char tmp[40];
  fmt_double(tmp, sizeof tmp, v);
  return hx_buf_append_str(out, tmp);
}

/* {a="x",b="y"[,le="..."]} — extra_le NULL for none. */
static hx_code put_labels(hx_buf *out, const hx_metric *x, const series *s, const char *le) {
  if (x->n_labels == 0 && !le)
    return HX_OK;
  hx_code rc = hx_buf_append_char(out, '{');
  for (size_t i = 0; i < x->n_labels && rc == HX_OK; i++) {
    rc = hx_buf_printf(out, "%s%s=\"", i ? "," : "", x->labels[i]);
    if (rc == HX_OK)
      rc = put_escaped(out, s->values[i], false);
    if (rc == HX_OK)
      rc = hx_buf_append_char(out, '"');
  }
  if (le && rc == HX_OK)
    rc = hx_buf_printf(out, "%sle=\"%s\"", x->n_labels ? "," : "", le);
  if (rc == HX_OK)
    rc = hx_buf_append_char(out, '}');
  return rc;
}

hx_code hx_metrics_render(hx_metrics *m, hx_buf *out) {
  static const char *const kinds[] = {"counter", "gauge", "histogram"};
  hx_code rc = HX_OK;
  pthread_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->n && rc == HX_OK; i++) {
    hx_metric *x = m->metrics[i];
    rc = hx_buf_printf(out, "# HELP %s ", x->name);
    if (rc == HX_OK)
      rc = put_escaped(out, x->help, true);
    if (rc == HX_OK)
      rc = hx_buf_printf(out, "\n# TYPE %s %s\n", x->name, kinds[x->k]);
    for (size_t j = 0; j < x->n_s && rc == HX_OK; j++) {
      series *s = &x->s[j];
      if (x->k != K_HISTOGRAM) {
        rc = hx_buf_append_str(out, x->name);
        if (rc == HX_OK)
          rc = put_labels(out, x, s, NULL);
        if (rc == HX_OK)
          rc = hx_buf_append_char(out, ' ');
        if (rc == HX_OK)
          rc = put_number(out, s->value);
        if (rc == HX_OK)
          rc = hx_buf_append_char(out, '\n');
        continue;
      }
      for (size_t b = 0; b <= x->n_bounds && rc == HX_OK; b++) {
        char le[40];
        if (b == x->n_bounds)
          strcpy(le, "+Inf");
        else
          fmt_double(le, sizeof le, x->bounds[b]);
        rc = hx_buf_printf(out, "%s_bucket", x->name);
        if (rc == HX_OK)
          rc = put_labels(out, x, s, le);
        if (rc == HX_OK)
          rc = hx_buf_append_char(out, ' ');
        if (rc == HX_OK)
          rc = put_number(out, s->buckets[b]);
        if (rc == HX_OK)
          rc = hx_buf_append_char(out, '\n');
      }
      const char *suffix[2] = {"_sum", "_count"};
      double vals[2] = {s->value, s->count};
      for (int k = 0; k < 2 && rc == HX_OK; k++) {
        rc = hx_buf_printf(out, "%s%s", x->name, suffix[k]);
        if (rc == HX_OK)
          rc = put_labels(out, x, s, NULL);
        if (rc == HX_OK)
          rc = hx_buf_append_char(out, ' ');
        if (rc == HX_OK)
          rc = put_number(out, vals[k]);
        if (rc == HX_OK)
          rc = hx_buf_append_char(out, '\n');
      }
    }
  }
  pthread_mutex_unlock(&m->mu);
  return rc;
}
