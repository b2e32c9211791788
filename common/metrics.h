/*
 * A registry of Prometheus metrics: counters, gauges and histograms with
 * labels, rendered in the text exposition format 0.0.4. A family (name, help,
 * type, label names) holds series, one per set of label values. Series are
 * found or created once (a mutex per family, an allocation) and kept as
 * pointers; updating one is a few atomic operations with no lock and no
 * allocation, safe from any thread. Families and series live as long as the
 * registry.
 *
 * Values that are only known somewhere else (a database count, another
 * thread's state) are set by collect callbacks, which run on the rendering
 * thread just before each render.
 */
#ifndef SHOAL_COMMON_METRICS_H
#define SHOAL_COMMON_METRICS_H

#include <stddef.h>

typedef struct shoal_metrics shoal_metrics_t;
typedef struct shoal_metrics_family shoal_metrics_family_t;
typedef struct shoal_metrics_series shoal_metrics_series_t;

typedef enum {
    SHOAL_METRICS_COUNTER = 1,
    SHOAL_METRICS_GAUGE,
    SHOAL_METRICS_HISTOGRAM,
} shoal_metrics_type_t;

/* Most label names a family may have. */
#define SHOAL_METRICS_MAX_LABELS 4
/* Most buckets (besides +Inf) a histogram may have. */
#define SHOAL_METRICS_MAX_BUCKETS 32

/* Call latencies in seconds, 5 ms to 5 min. */
extern const double shoal_metrics_latency_buckets[];
extern const size_t shoal_metrics_latency_nbuckets;

/* NULL when out of memory. */
shoal_metrics_t *shoal_metrics_new(void);
void shoal_metrics_destroy(shoal_metrics_t *m); /* NULL ok; no thread may use it any more */

/* Registers a family, or returns the one of that name when its type matches.
 * labels: NULL-terminated names (NULL: none); buckets: the increasing upper
 * bounds of a histogram (+Inf is implicit), ignored for other types. name,
 * help, labels and buckets are copied. NULL for a bad name, a clash, too many
 * labels or buckets, or no memory. Thread-safe. */
shoal_metrics_family_t *shoal_metrics_family(shoal_metrics_t *m, shoal_metrics_type_t type,
                                             const char *name, const char *help,
                                             const char *const *labels, const double *buckets,
                                             size_t nbuckets);

/* The family registered under name, NULL when none (tests, and checks that
 * a dashboard names only series that exist). Thread-safe. */
shoal_metrics_family_t *shoal_metrics_lookup(shoal_metrics_t *m, const char *name);

/* The series of f with these label values (one per label name, in order;
 * NULL when f has none), created at 0 when new. Values are copied and
 * escaped when rendered. NULL when f is NULL or out of memory. Thread-safe;
 * keep the pointer rather than calling this on a hot path. */
shoal_metrics_series_t *shoal_metrics_series(shoal_metrics_family_t *f, const char *const *values);

/* Counters and gauges: adds v (a counter must only grow). NULL s is a no-op,
 * so metrics that are off cost one test. Lock-free. */
void shoal_metrics_add(shoal_metrics_series_t *s, double v);
/* Gauges, and counters mirrored from a total kept elsewhere. NULL ok. */
void shoal_metrics_set(shoal_metrics_series_t *s, double v);
/* Histograms: counts one observation of v. NULL ok. Lock-free. */
void shoal_metrics_observe(shoal_metrics_series_t *s, double v);

/* The value of a counter or gauge, or the observation count of a
 * histogram (tests). */
double shoal_metrics_value(const shoal_metrics_series_t *s);

/* fn(arg) runs before every render, on the rendering thread, one render at
 * a time; it sets series from state it can read safely there. Up to 8. */
int shoal_metrics_on_collect(shoal_metrics_t *m, void (*fn)(void *arg), void *arg);

/* Renders every family in registration order, series in creation order.
 * Returns the text (caller frees) and its length in *len, NULL when out of
 * memory or past 16 MiB. Serialized: concurrent renders wait. */
char *shoal_metrics_render(shoal_metrics_t *m, size_t *len);

#endif
