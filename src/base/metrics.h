/* metrics.h — a Prometheus registry: counters, gauges and histograms with
 * label sets, rendered in the text exposition format (version 0.0.4).
 *
 * Thread-safe (one mutex per registry; updates are a lookup plus an add).
 * Cardinality is bounded: each metric holds at most max_series label sets;
 * further label sets are folded into one series whose label values are all
 * "other" (so a client inventing model names cannot grow memory). Label
 * values are copied (up to 127 bytes each) and escaped when rendered. */
#ifndef HX_METRICS_H
#define HX_METRICS_H

#include <stddef.h>

#include "base/buf.h"
#include "base/status.h"

typedef struct hx_metrics hx_metrics;
typedef struct hx_metric hx_metric;

enum { HX_METRIC_LABELS_MAX = 8, HX_METRIC_BUCKETS_MAX = 32 };

/* max_series: per metric, ≥ 1 (0 → 256). NULL on OOM. */
hx_metrics *hx_metrics_create(size_t max_series);
void hx_metrics_free(hx_metrics *m); /* m may be NULL */

/* Registers a metric; the names are copied. name and label names must match
 * [a-zA-Z_][a-zA-Z0-9_]* (asserted: they are program constants). Registering
 * the same name twice returns the first metric (same kind and labels
 * asserted). The metric lives as long as the registry. NULL on OOM. */
hx_metric *hx_metrics_counter(hx_metrics *m, const char *name, const char *help,
                              const char *const *label_names, size_t n_labels);
hx_metric *hx_metrics_gauge(hx_metrics *m, const char *name, const char *help,
                            const char *const *label_names, size_t n_labels);
/* bucket upper bounds strictly increasing, 1..HX_METRIC_BUCKETS_MAX of them
 * (+Inf is implicit). */
hx_metric *hx_metrics_histogram(hx_metrics *m, const char *name, const char *help,
                                const char *const *label_names, size_t n_labels,
                                const double *buckets, size_t n_buckets);

/* label_values has exactly the metric's n_labels entries (NULL allowed when
 * n_labels is 0; a NULL entry reads as ""). */
void hx_metric_inc(hx_metric *x, const char *const *label_values);               /* counter += 1 */
void hx_metric_add(hx_metric *x, const char *const *label_values, double v);     /* counter/gauge */
void hx_metric_set(hx_metric *x, const char *const *label_values, double v);     /* gauge */
void hx_metric_observe(hx_metric *x, const char *const *label_values, double v); /* histogram */
/* Drops every series of the metric (for gauges refreshed as a whole). */
void hx_metric_clear(hx_metric *x);
/* Current value of a counter/gauge series (0 when absent), or a histogram's
 * count; for tests and /health-style summaries. */
double hx_metric_value(hx_metric *x, const char *const *label_values);

/* Appends the whole registry in Prometheus text format. */
hx_code hx_metrics_render(hx_metrics *m, hx_buf *out);

/* Bucket sets in seconds for latencies. */
extern const double hx_metrics_buckets_latency_s[];
extern const size_t hx_metrics_buckets_latency_n;

#endif
