/*
 * Fleet leases (see fleet.h): one thread refreshes all models' leases with one
 * statement, the loop reads and adds to per-model state under one mutex. The
 * mutex is never held across a database call: the thread takes the pending
 * counts out, runs the statement unlocked, and puts them back if it failed.
 */
#include "worker/fleet.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/pg.h"
#include "common/service.h"

#define BACKOFF_MAX_MS 5000.0

struct model_state {
    const char *alias; /* borrowed from the models */
    double rpm, tpm;   /* configured, per minute; 0 = none */

    /* Pending: what the next refresh reports. */
    long sent, ok, rate_limited, tokens;
    double demand_rps, demand_tps;
    long limit_rpm, limit_tpm; /* latest header limits; <= 0 none */
    double local_hold_mono;    /* hold this worker observed (monotonic ms) */
    double local_hold_unix;    /* the same on the wall clock */

    /* The last answer. */
    int have;
    double granted_rps, granted_tps; /* < 0: no limit */
    double limit_rps, limit_tps;     /* < 0: none known */
    double server_hold_unix;
    int learned, workers;
    double valid_until_mono; /* when the lease expires, counted from the send */

    shoal_fleet_share_t share;
};

struct shoal_fleet {
    char *worker_id;
    shoal_pg_t *pg;
    shoal_fleet_conf_t conf;
    size_t n;
    struct model_state *m;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int stop, wake;
    unsigned long refreshes;
};

void shoal_fleet_conf_init(shoal_fleet_conf_t *conf)
{
    conf->refresh_ms = 500;
    conf->ttl_ms = 2000;
    conf->timeout_ms = 2000;
}

void shoal_fleet_report_init(shoal_fleet_report_t *r)
{
    memset(r, 0, sizeof(*r));
    r->demand_rps = -1;
    r->demand_tps = -1;
    r->limit_requests = -1;
    r->limit_tokens = -1;
    r->remaining_requests = -1;
    r->remaining_tokens = -1;
    r->reset_ms = -1;
    r->hold_ms = -1;
}

double shoal_fleet_hold_ms(const shoal_fleet_share_t *s)
{
    if (!(s->hold_until_unix > 0))
        return 0;
    double left = (s->hold_until_unix - shoal_service_unix_s()) * 1000.0;
    return left > 0 ? left : 0;
}

/* A granted rate as the share shows it: no limit stays no limit, a zero
 * grant becomes the minimum rate. */
static double shown_rate(double granted)
{
    if (granted < 0)
        return 0;
    return granted < SHOAL_FLEET_MIN_RATE ? SHOAL_FLEET_MIN_RATE : granted;
}

/* A fallback for a rate when no live lease says otherwise: limit / divisor,
 * or no limit when none is known. */
static double fallback_rate(double limit, double divisor)
{
    if (!(limit > 0))
        return 0;
    return shown_rate(limit / divisor);
}

/* Derives the share from the state at now; bumps the version on a change.
 * Called with the mutex held. */
static void recompute(struct model_state *m, double now_mono)
{
    shoal_fleet_share_t s = {0};

    if (m->have && now_mono < m->valid_until_mono) {
        s.rps = m->granted_rps < 0 ? 0 : shown_rate(m->granted_rps);
        s.tps = m->granted_tps < 0 ? 0 : shown_rate(m->granted_tps);
    } else if (m->have) {
        s.stale = 1;
        s.rps = fallback_rate(m->limit_rps, (double)m->workers + 1);
        s.tps = fallback_rate(m->limit_tps, (double)m->workers + 1);
    } else {
        s.stale = 1;
        s.rps = fallback_rate(m->rpm / 60.0, 4);
        s.tps = fallback_rate(m->tpm / 60.0, 4);
    }
    if (m->have) {
        s.limit_rps = m->limit_rps > 0 ? m->limit_rps : 0;
        s.limit_tps = m->limit_tps > 0 ? m->limit_tps : 0;
        s.learned = m->learned;
        s.workers = m->workers;
    } else {
        s.limit_rps = m->rpm / 60.0;
        s.limit_tps = m->tpm / 60.0;
        s.workers = 1;
    }
    s.hold_until_unix =
        m->server_hold_unix > m->local_hold_unix ? m->server_hold_unix : m->local_hold_unix;
    if (s.hold_until_unix > 0 && s.hold_until_unix < shoal_service_unix_s())
        s.hold_until_unix = 0;

    const shoal_fleet_share_t *o = &m->share;
    if (s.rps != o->rps || s.tps != o->tps || s.limit_rps != o->limit_rps ||
        s.limit_tps != o->limit_tps || s.hold_until_unix != o->hold_until_unix ||
        s.learned != o->learned || s.workers != o->workers || s.stale != o->stale) {
        s.version = o->version + 1;
        m->share = s;
    }
}

void shoal_fleet_share(shoal_fleet_t *f, size_t model, shoal_fleet_share_t *out)
{
    if (!f || model >= f->n) {
        memset(out, 0, sizeof(*out));
        out->workers = 1;
        return;
    }
    pthread_mutex_lock(&f->mu);
    /* Recomputed here too, so a lease that expired while the thread was stuck
     * connecting turns into the fallback on time. */
    recompute(&f->m[model], shoal_service_now_ms());
    *out = f->m[model].share;
    pthread_mutex_unlock(&f->mu);
}

/* Adds a hold of ms from now that this worker observed. */
static void local_hold(struct model_state *m, double ms, double now_mono)
{
    if (!(ms > 0))
        return;
    if (now_mono + ms > m->local_hold_mono) {
        m->local_hold_mono = now_mono + ms;
        m->local_hold_unix = shoal_service_unix_s() + ms / 1000.0;
    }
}

void shoal_fleet_report(shoal_fleet_t *f, size_t model, const shoal_fleet_report_t *r)
{
    if (!f || model >= f->n || !r)
        return;
    double now = shoal_service_now_ms();
    pthread_mutex_lock(&f->mu);
    struct model_state *m = &f->m[model];
    if (r->demand_rps >= 0)
        m->demand_rps = r->demand_rps;
    if (r->demand_tps >= 0)
        m->demand_tps = r->demand_tps;
    m->sent += r->sent > 0 ? r->sent : 0;
    m->ok += r->ok > 0 ? r->ok : 0;
    m->rate_limited += r->rate_limited > 0 ? r->rate_limited : 0;
    m->tokens += r->tokens_used > 0 ? r->tokens_used : 0;
    if (r->limit_requests > 0)
        m->limit_rpm = r->limit_requests;
    if (r->limit_tokens > 0)
        m->limit_tpm = r->limit_tokens;
    if (r->hold_ms > 0)
        local_hold(m, (double)r->hold_ms, now);
    /* Remaining 0: nothing until the limit refills. Providers' reset is the
     * time until the whole limit is back, so with a known request limit the
     * hold is only as long as one request takes to refill; tokens are capped
     * at a second for the same reason. */
    if (r->reset_ms > 0 && r->remaining_requests == 0) {
        double rpm = r->limit_requests > 0 ? (double)r->limit_requests
                                           : (m->limit_rps > 0 ? m->limit_rps * 60 : 0);
        double ms = (double)r->reset_ms;
        if (rpm > 0 && ms > 60000.0 / rpm)
            ms = 60000.0 / rpm;
        local_hold(m, ms, now);
    }
    if (r->reset_ms > 0 && r->remaining_tokens == 0)
        local_hold(m, r->reset_ms < 1000 ? (double)r->reset_ms : 1000.0, now);
    if (r->rate_limited > 0) {
        f->wake = 1;
        pthread_cond_signal(&f->cond);
    }
    recompute(m, now);
    pthread_mutex_unlock(&f->mu);
}

unsigned long shoal_fleet_refreshes(shoal_fleet_t *f)
{
    pthread_mutex_lock(&f->mu);
    unsigned long n = f->refreshes;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* Pending counts taken out for one refresh, put back if it fails. */
struct taken {
    long sent, ok, rate_limited, tokens;
};

/* Builds the rows of one refresh and takes the pending counts out. Called
 * with the mutex held. Returns NULL only when out of memory. */
static char *build_rows(shoal_fleet_t *f, struct taken *tk, double now)
{
    json_t *rows = json_array();
    if (!rows)
        return NULL;
    for (size_t i = 0; i < f->n; i++) {
        struct model_state *m = &f->m[i];
        double hold = m->local_hold_mono > now ? m->local_hold_mono - now : 0;
        json_t *row = json_pack(
            "{s:s, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "model", m->alias,
            "rpm", m->rpm, "tpm", m->tpm, "demand_rps", m->demand_rps, "demand_tps", m->demand_tps,
            "sent", (json_int_t)m->sent, "ok", (json_int_t)m->ok, "rate_limited",
            (json_int_t)m->rate_limited, "tokens", (json_int_t)m->tokens, "limit_rpm",
            (json_int_t)m->limit_rpm, "limit_tpm", (json_int_t)m->limit_tpm, "hold_ms", hold);
        if (!row || json_array_append_new(rows, row) != 0) {
            json_decref(rows);
            return NULL;
        }
    }
    char *text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    if (!text)
        return NULL;
    for (size_t i = 0; i < f->n; i++) {
        struct model_state *m = &f->m[i];
        tk[i] = (struct taken){m->sent, m->ok, m->rate_limited, m->tokens};
        m->sent = m->ok = m->rate_limited = m->tokens = 0;
    }
    return text;
}

static void put_back(shoal_fleet_t *f, const struct taken *tk)
{
    for (size_t i = 0; i < f->n; i++) {
        f->m[i].sent += tk[i].sent;
        f->m[i].ok += tk[i].ok;
        f->m[i].rate_limited += tk[i].rate_limited;
        f->m[i].tokens += tk[i].tokens;
    }
}

static double num(json_t *o, const char *key, double absent)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : absent;
}

/* Applies one answer of shoal.fleet_lease. Called with the mutex held. */
static shoal_err_t apply(shoal_fleet_t *f, const char *text, double sent_mono, char *errbuf,
                         size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "fleet_lease answered something else than an object");
    }
    double now_wall = shoal_service_unix_s();
    for (size_t i = 0; i < f->n; i++) {
        struct model_state *m = &f->m[i];
        json_t *o = json_object_get(doc, m->alias);
        if (!json_is_object(o))
            continue;
        m->have = 1;
        m->granted_rps = num(o, "granted_rps", -1);
        m->granted_tps = num(o, "granted_tps", -1);
        m->limit_rps = num(o, "limit_rps", -1);
        m->limit_tps = num(o, "limit_tps", -1);
        m->learned = json_is_true(json_object_get(o, "learned"));
        m->workers = (int)num(o, "workers", 1);
        if (m->workers < 1)
            m->workers = 1;
        double hold_ms = num(o, "hold_ms", 0);
        m->server_hold_unix = hold_ms > 0 ? now_wall + hold_ms / 1000.0 : 0;
        m->valid_until_mono = sent_mono + (double)f->conf.ttl_ms;
        recompute(m, shoal_service_now_ms());
    }
    json_decref(doc);
    return SHOAL_OK;
}

static void timed_wait(shoal_fleet_t *f, double until_mono)
{
    double ms = until_mono - shoal_service_now_ms();
    if (ms <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_nsec + (long long)(ms * 1e6);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    pthread_cond_timedwait(&f->cond, &f->mu, &ts);
}

static void *run(void *arg)
{
    shoal_fleet_t *f = arg;
    struct taken *tk = calloc(f->n ? f->n : 1, sizeof(*tk));
    double next = 0, last_start = -1e18;
    int fails = 0;
    char err[512];

    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        double now = shoal_service_now_ms();
        double min_gap = (double)f->conf.refresh_ms / 5.0;
        double due = next;
        if (f->wake && fails == 0 && last_start + min_gap < due)
            due = last_start + min_gap;
        if (now < due) {
            timed_wait(f, due);
            continue;
        }
        f->wake = 0;
        last_start = now;
        char *rows = tk ? build_rows(f, tk, now) : NULL;
        if (!rows) {
            shoal_log_error("fleet", "cannot build a lease refresh: out of memory");
            next = now + (double)f->conf.refresh_ms;
            continue;
        }
        pthread_mutex_unlock(&f->mu);

        char ttl[32];
        snprintf(ttl, sizeof(ttl), "%ld", f->conf.ttl_ms);
        const char *params[] = {f->worker_id, ttl, rows};
        PGresult *res = NULL;
        shoal_err_t e = shoal_pg_exec(f->pg, "SELECT shoal.fleet_lease($1, $2::int, $3::jsonb)", 3,
                                      params, &res, err, sizeof(err));
        pthread_mutex_lock(&f->mu);
        if (e == SHOAL_OK && (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)))
            e = shoal_err_set(err, sizeof(err), SHOAL_ERR_INVALID, "fleet_lease returned no row");
        if (e == SHOAL_OK)
            e = apply(f, PQgetvalue(res, 0, 0), now, err, sizeof(err));
        PQclear(res);
        free(rows);
        if (e == SHOAL_OK) {
            if (fails)
                shoal_log_info("fleet", "lease refresh works again after %d failures", fails);
            fails = 0;
            f->refreshes++;
            next = now + (double)f->conf.refresh_ms;
        } else {
            put_back(f, tk);
            if (!fails)
                shoal_log_warn("fleet", "could not refresh the rate-limit leases: %s", err);
            fails++;
            double backoff = (double)f->conf.refresh_ms / 2.0;
            for (int i = 1; i < fails && backoff < BACKOFF_MAX_MS; i++)
                backoff *= 2;
            next = now + (backoff < BACKOFF_MAX_MS ? backoff : BACKOFF_MAX_MS);
        }
        double t = shoal_service_now_ms();
        for (size_t i = 0; i < f->n; i++)
            recompute(&f->m[i], t);
    }
    pthread_mutex_unlock(&f->mu);
    free(tk);

    /* Hand the shares back at once; if the store is away they expire. */
    const char *params[] = {f->worker_id};
    if (shoal_pg_exec(f->pg, "SELECT shoal.fleet_leave($1)", 1, params, NULL, err, sizeof(err)) !=
        SHOAL_OK)
        shoal_log_debug("fleet", "could not remove the leases on stop: %s", err);
    return NULL;
}

/* Everything _new set up except the thread, which is gone or never started. */
static void fleet_free(shoal_fleet_t *f)
{
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mu);
    shoal_pg_destroy(f->pg);
    free(f->worker_id);
    free(f->m);
    free(f);
}

shoal_fleet_t *shoal_fleet_new(const char *pg_conninfo, const char *worker_id,
                               const shoal_models_t *models, const shoal_fleet_conf_t *conf,
                               char *errbuf, size_t errlen)
{
    if (!worker_id || !*worker_id || !models) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "a worker id and models are required");
        return NULL;
    }
    shoal_fleet_conf_t c;
    shoal_fleet_conf_init(&c);
    if (conf)
        c = *conf;
    if (c.refresh_ms < 10 || c.ttl_ms <= c.refresh_ms || c.timeout_ms < 10) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "cannot use refresh %ld ms, ttl %ld ms, timeout %ld ms: the lease must "
                      "outlive a refresh period",
                      c.refresh_ms, c.ttl_ms, c.timeout_ms);
        return NULL;
    }

    shoal_fleet_t *f = calloc(1, sizeof(*f));
    if (!f) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cond, &ca);
    pthread_condattr_destroy(&ca);
    f->conf = c;
    f->n = shoal_models_count(models);
    f->m = calloc(f->n ? f->n : 1, sizeof(*f->m));
    f->worker_id = strdup(worker_id);
    f->pg = shoal_pg_new(pg_conninfo, "shoal-fleet");
    if (!f->m || !f->worker_id || !f->pg) {
        fleet_free(f);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    /* A refresh must never hold the thread (and so destroy) for long. */
    char on_connect[128];
    snprintf(on_connect, sizeof(on_connect), "SET statement_timeout = %ld", c.timeout_ms);
    shoal_pg_set_on_connect(f->pg, on_connect);

    double now = shoal_service_now_ms();
    for (size_t i = 0; i < f->n; i++) {
        const shoal_model_t *md = shoal_models_at(models, i);
        struct model_state *m = &f->m[i];
        m->alias = md->alias;
        m->rpm = md->rpm > 0 ? (double)md->rpm : 0;
        m->tpm = md->tpm > 0 ? (double)md->tpm : 0;
        m->limit_rpm = m->limit_tpm = -1;
        m->granted_rps = m->granted_tps = -1;
        m->limit_rps = m->limit_tps = -1;
        m->workers = 1;
        recompute(m, now);
    }

    int rc = pthread_create(&f->thread, NULL, run, f);
    if (rc != 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "cannot start the lease thread: %s",
                      strerror(rc));
        fleet_free(f);
        return NULL;
    }
    return f;
}

void shoal_fleet_destroy(shoal_fleet_t *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    fleet_free(f);
}
