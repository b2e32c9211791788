/*
 * Metric registry and text exposition (see metrics.h).
 *
 * A value is a double kept as its bits in an atomic 64-bit word: loads and
 * stores are plain atomics, additions a compare-and-swap loop, so updates
 * never take a lock. A histogram series counts observations per bucket
 * (not cumulated, so one observation touches one bucket) and cumulates them
 * when rendered; its count is the sum of its buckets at that moment, so the
 * +Inf bucket and _count always agree even while observations go on.
 */
#include "common/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COLLECT 8
#define RENDER_CAP ((size_t)16 << 20)

const double shoal_metrics_latency_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                2.5,   5,    10,    30,   60,  120,  300};
const size_t shoal_metrics_latency_nbuckets =
    sizeof(shoal_metrics_latency_buckets) / sizeof(shoal_metrics_latency_buckets[0]);

struct shoal_metrics_series {
    struct shoal_metrics_series *next;
    char *values[SHOAL_METRICS_MAX_LABELS];
    _Atomic uint64_t bits;     /* counter or gauge value; histogram sum */
    _Atomic uint64_t *buckets; /* histogram: nbuckets + 1 counts, the last for +Inf */
    const shoal_metrics_family_t *family;
};

struct shoal_metrics_family {
    struct shoal_metrics_family *next;
    shoal_metrics_type_t type;
    char *name, *help;
    char *labels[SHOAL_METRICS_MAX_LABELS];
    int nlabels;
    double bounds[SHOAL_METRICS_MAX_BUCKETS];
    size_t nbuckets;
    pthread_mutex_t lock; /* series list */
    shoal_metrics_series_t *first, *last;
};

struct shoal_metrics {
    pthread_mutex_t lock;        /* family list */
    pthread_mutex_t render_lock; /* one render (and its collect callbacks) at a time */
    shoal_metrics_family_t *first, *last;
    struct {
        void (*fn)(void *arg);
        void *arg;
    } collect[MAX_COLLECT];
    int ncollect;
};

static uint64_t to_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof(b));
    return b;
}

static double from_bits(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof(v));
    return v;
}

shoal_metrics_t *shoal_metrics_new(void)
{
    shoal_metrics_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->render_lock, NULL);
    return m;
}

static void series_free(shoal_metrics_series_t *s)
{
    for (int i = 0; i < SHOAL_METRICS_MAX_LABELS; i++)
        free(s->values[i]);
    free(s->buckets);
    free(s);
}

static void family_free(shoal_metrics_family_t *f)
{
    shoal_metrics_series_t *s = f->first;
    while (s) {
        shoal_metrics_series_t *n = s->next;
        series_free(s);
        s = n;
    }
    for (int i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void shoal_metrics_destroy(shoal_metrics_t *m)
{
    if (!m)
        return;
    shoal_metrics_family_t *f = m->first;
    while (f) {
        shoal_metrics_family_t *n = f->next;
        family_free(f);
        f = n;
    }
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->render_lock);
    free(m);
}

/* Prometheus metric and label names: [a-zA-Z_:][a-zA-Z0-9_:]* (no colon in
 * label names). */
static int valid_name(const char *s, int label)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                    (!label && *p == ':');
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return 0;
    }
    return 1;
}

static int same_shape(const shoal_metrics_family_t *f, shoal_metrics_type_t type,
                      const char *const *labels)
{
    int n = 0;
    if (f->type != type)
        return 0;
    for (; labels && labels[n]; n++)
        if (n >= f->nlabels || strcmp(labels[n], f->labels[n]) != 0)
            return 0;
    return n == f->nlabels;
}

shoal_metrics_family_t *shoal_metrics_family(shoal_metrics_t *m, shoal_metrics_type_t type,
                                             const char *name, const char *help,
                                             const char *const *labels, const double *buckets,
                                             size_t nbuckets)
{
    if (!m || !valid_name(name, 0) || type < SHOAL_METRICS_COUNTER ||
        type > SHOAL_METRICS_HISTOGRAM)
        return NULL;
    int nl = 0;
    for (; labels && labels[nl]; nl++)
        if (nl >= SHOAL_METRICS_MAX_LABELS || !valid_name(labels[nl], 1) ||
            (type == SHOAL_METRICS_HISTOGRAM && !strcmp(labels[nl], "le")))
            return NULL;
    if (type == SHOAL_METRICS_HISTOGRAM) {
        if (nbuckets > SHOAL_METRICS_MAX_BUCKETS || (nbuckets && !buckets))
            return NULL;
        for (size_t i = 1; i < nbuckets; i++)
            if (!(buckets[i] > buckets[i - 1]))
                return NULL;
    }

    pthread_mutex_lock(&m->lock);
    shoal_metrics_family_t *f;
    for (f = m->first; f; f = f->next)
        if (!strcmp(f->name, name))
            break;
    if (f) {
        pthread_mutex_unlock(&m->lock);
        return same_shape(f, type, labels) ? f : NULL;
    }
    f = calloc(1, sizeof(*f));
    int ok = f != NULL;
    if (ok) {
        f->type = type;
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        ok = f->name && f->help;
        for (int i = 0; ok && i < nl; i++)
            ok = (f->labels[f->nlabels++] = strdup(labels[i])) != NULL;
        if (type == SHOAL_METRICS_HISTOGRAM) {
            f->nbuckets = nbuckets;
            if (nbuckets)
                memcpy(f->bounds, buckets, nbuckets * sizeof(*buckets));
        }
        pthread_mutex_init(&f->lock, NULL);
    }
    if (!ok) {
        if (f)
            family_free(f);
        pthread_mutex_unlock(&m->lock);
        return NULL;
    }
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    pthread_mutex_unlock(&m->lock);
    return f;
}

shoal_metrics_family_t *shoal_metrics_lookup(shoal_metrics_t *m, const char *name)
{
    shoal_metrics_family_t *f;
    pthread_mutex_lock(&m->lock);
    for (f = m->first; f; f = f->next)
        if (!strcmp(f->name, name))
            break;
    pthread_mutex_unlock(&m->lock);
    return f;
}

static int same_values(const shoal_metrics_series_t *s, int n, const char *const *values)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s->values[i], values[i]) != 0)
            return 0;
    return 1;
}

shoal_metrics_series_t *shoal_metrics_series(shoal_metrics_family_t *f, const char *const *values)
{
    if (!f)
        return NULL;
    for (int i = 0; i < f->nlabels; i++)
        if (!values || !values[i])
            return NULL;
    pthread_mutex_lock(&f->lock);
    shoal_metrics_series_t *s;
    for (s = f->first; s; s = s->next)
        if (same_values(s, f->nlabels, values))
            break;
    if (!s && (s = calloc(1, sizeof(*s))) != NULL) {
        int ok = 1;
        s->family = f;
        for (int i = 0; ok && i < f->nlabels; i++)
            ok = (s->values[i] = strdup(values[i])) != NULL;
        if (ok && f->type == SHOAL_METRICS_HISTOGRAM)
            ok = (s->buckets = calloc(f->nbuckets + 1, sizeof(*s->buckets))) != NULL;
        if (!ok) {
            series_free(s);
            s = NULL;
        } else {
            atomic_init(&s->bits, to_bits(0.0));
            if (f->last)
                f->last->next = s;
            else
                f->first = s;
            f->last = s;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return s;
}

static void add_bits(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, to_bits(from_bits(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void shoal_metrics_add(shoal_metrics_series_t *s, double v)
{
    if (s)
        add_bits(&s->bits, v);
}

void shoal_metrics_set(shoal_metrics_series_t *s, double v)
{
    if (s)
        atomic_store_explicit(&s->bits, to_bits(v), memory_order_relaxed);
}

void shoal_metrics_observe(shoal_metrics_series_t *s, double v)
{
    if (!s || !s->buckets)
        return;
    const shoal_metrics_family_t *f = s->family;
    size_t i = 0;
    while (i < f->nbuckets && v > f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    add_bits(&s->bits, v);
}

double shoal_metrics_value(const shoal_metrics_series_t *s)
{
    if (!s)
        return 0;
    if (!s->buckets)
        return from_bits(atomic_load_explicit(&s->bits, memory_order_relaxed));
    uint64_t n = 0;
    for (size_t i = 0; i <= s->family->nbuckets; i++)
        n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    return (double)n;
}

int shoal_metrics_on_collect(shoal_metrics_t *m, void (*fn)(void *arg), void *arg)
{
    int ok = 0;
    pthread_mutex_lock(&m->render_lock);
    if (m->ncollect < MAX_COLLECT) {
        m->collect[m->ncollect].fn = fn;
        m->collect[m->ncollect].arg = arg;
        m->ncollect++;
        ok = 1;
    }
    pthread_mutex_unlock(&m->render_lock);
    return ok ? 0 : -1;
}

/* ---- rendering ------------------------------------------------------------ */

struct out {
    char *buf;
    size_t len, cap;
    int failed;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t ncap = o->cap ? o->cap : 4096;
        while (ncap < o->len + n + 1)
            ncap *= 2;
        char *nb = ncap <= RENDER_CAP ? realloc(o->buf, ncap) : NULL;
        if (!nb) {
            o->failed = 1;
            return;
        }
        o->buf = nb;
        o->cap = ncap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Label values escape backslash, double quote and newline; HELP text only
 * backslash and newline. */
static void put_escaped(struct out *o, const char *s, int quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\'           ? "\\\\"
                          : *s == '\n'         ? "\\n"
                          : quote && *s == '"' ? "\\\""
                                               : NULL;
        if (esc) {
            put(o, run, (size_t)(s - run));
            puts_(o, esc);
            run = s + 1;
        }
    }
    put(o, run, (size_t)(s - run));
}

/* The shortest text that reads back as v, with +Inf, -Inf and NaN spelt
 * the way the exposition format expects. */
static void format_value(double v, char *buf, size_t len)
{
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, len, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* Whole numbers (counts, most counters) in full, not as 4e+05. */
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, len, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void put_value(struct out *o, double v)
{
    char buf[64];
    format_value(v, buf, sizeof(buf));
    puts_(o, buf);
}

/* name{a="x",b="y"[,le="..."]} */
static void put_series_name(struct out *o, const shoal_metrics_family_t *f,
                            const shoal_metrics_series_t *s, const char *suffix, const char *le)
{
    puts_(o, f->name);
    puts_(o, suffix);
    if (f->nlabels == 0 && !le)
        return;
    puts_(o, "{");
    for (int i = 0; i < f->nlabels; i++) {
        if (i)
            puts_(o, ",");
        puts_(o, f->labels[i]);
        puts_(o, "=\"");
        put_escaped(o, s->values[i], 1);
        puts_(o, "\"");
    }
    if (le) {
        if (f->nlabels)
            puts_(o, ",");
        puts_(o, "le=\"");
        puts_(o, le);
        puts_(o, "\"");
    }
    puts_(o, "}");
}

static void render_histogram(struct out *o, const shoal_metrics_family_t *f,
                             const shoal_metrics_series_t *s)
{
    char le[64];
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->nbuckets; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        if (i < f->nbuckets)
            format_value(f->bounds[i], le, sizeof(le));
        else
            snprintf(le, sizeof(le), "+Inf");
        put_series_name(o, f, s, "_bucket", le);
        puts_(o, " ");
        put_value(o, (double)cum);
        puts_(o, "\n");
    }
    put_series_name(o, f, s, "_sum", NULL);
    puts_(o, " ");
    put_value(o, from_bits(atomic_load_explicit(&s->bits, memory_order_relaxed)));
    puts_(o, "\n");
    put_series_name(o, f, s, "_count", NULL);
    puts_(o, " ");
    put_value(o, (double)cum);
    puts_(o, "\n");
}

static void render_family(struct out *o, shoal_metrics_family_t *f)
{
    static const char *const type_name[] = {"", "counter", "gauge", "histogram"};
    puts_(o, "# HELP ");
    puts_(o, f->name);
    puts_(o, " ");
    put_escaped(o, f->help, 0);
    puts_(o, "\n# TYPE ");
    puts_(o, f->name);
    puts_(o, " ");
    puts_(o, type_name[f->type]);
    puts_(o, "\n");
    pthread_mutex_lock(&f->lock);
    for (const shoal_metrics_series_t *s = f->first; s; s = s->next) {
        if (f->type == SHOAL_METRICS_HISTOGRAM) {
            render_histogram(o, f, s);
            continue;
        }
        put_series_name(o, f, s, "", NULL);
        puts_(o, " ");
        put_value(o, from_bits(atomic_load_explicit(&s->bits, memory_order_relaxed)));
        puts_(o, "\n");
    }
    pthread_mutex_unlock(&f->lock);
}

char *shoal_metrics_render(shoal_metrics_t *m, size_t *len)
{
    struct out o = {0};
    pthread_mutex_lock(&m->render_lock);
    for (int i = 0; i < m->ncollect; i++)
        m->collect[i].fn(m->collect[i].arg);
    put(&o, "", 0); /* an empty registry renders as "", not NULL */
    pthread_mutex_lock(&m->lock);
    for (shoal_metrics_family_t *f = m->first; f; f = f->next)
        render_family(&o, f);
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_unlock(&m->render_lock);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    if (len)
        *len = o.len;
    return o.buf;
}
