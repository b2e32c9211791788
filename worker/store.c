/*
 * The database thread (see store.h).
 */
#include "worker/store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/pg.h"
#include "common/service.h"
#include "worker/budget.h"

#define EXPIRE_EVERY_MS 5000.0 /* how often held reservations past their time are counted */

struct op {
    struct op *next;
    shoal_store_kind_t kind;
    shoal_task_t **tasks; /* CHECKED */
    size_t ntasks;
    char **status; /* CHECKED: per task; CANCELLED: the job ids (ntasks of them) */
    int *attempts;
    int *budgeted;        /* CHECKED */
    char *rows, *release; /* RESERVED: shoal.reserve_calls' arguments */
    shoal_sink_t *sink;   /* WRITTEN */
    void **tokens;
    size_t ntokens, captokens;
    int jobs_ended;
};

struct shoal_store {
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    struct op *todo, *todo_tail;
    struct op *done, *done_tail;
    size_t pending, writes;
    double failing_since; /* monotonic ms, 0 = fine; written by the thread */
    shoal_pg_t *pg;
    int wake_fd;
    long cancel_every_ms;  /* 0: cancels are not looked for */
    double cancel_due;     /* monotonic ms of the next look-up */
    char cancel_since[64]; /* server time of the last look-up ("" before the first) */
    json_t *cancel_seen;   /* job ids already reported, within the look-up's window */
    double expire_due;     /* monotonic ms of the next expiry of reservations */
};

static void op_free(struct op *o)
{
    if (!o)
        return;
    for (size_t i = 0; o->status && i < o->ntasks; i++)
        free(o->status[i]);
    free(o->status);
    free(o->attempts);
    free(o->budgeted);
    free(o->rows);
    free(o->release);
    free(o->tasks);
    free(o->tokens);
    shoal_sink_destroy(o->sink);
    free(o);
}

static void collect(void *token, void *arg)
{
    struct op *o = arg;
    if (o->ntokens == o->captokens) {
        size_t ncap = o->captokens ? o->captokens * 2 : 256;
        void **n = realloc(o->tokens, ncap * sizeof(*n));
        if (!n)
            return; /* its task stays held; the message comes again after a restart */
        o->tokens = n;
        o->captokens = ncap;
    }
    o->tokens[o->ntokens++] = token;
}

static shoal_err_t run_check(shoal_store_t *s, struct op *o, char *err, size_t errlen)
{
    json_t *ids = json_array();
    for (size_t i = 0; ids && i < o->ntasks; i++)
        json_array_append_new(ids, json_string(o->tasks[i]->task_id));
    char *text = ids ? json_dumps(ids, JSON_COMPACT) : NULL;
    json_decref(ids);
    if (!text)
        return shoal_err_set(err, errlen, SHOAL_ERR_NOMEM, "out of memory");
    const char *params[] = {text};
    PGresult *res;
    shoal_err_t e =
        shoal_pg_exec(s->pg,
                      /* calls held back by capacity (429, overload, no
                       * connection) do not count: see worker/runner.c; nor
                       * do calls made before the task was resumed
                       * (shoal.resume_job): max_attempts starts over */
                      "WITH t AS MATERIALIZED (SELECT * FROM shoal.tasks "
                      /* an array, looked up in the primary key whatever the
                       * statistics say (see sql/022) */
                      "WHERE task_id = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))), "
                      /* budgeted: the job's or tenant's calls are reserved
                       * (worker/budget.h); asked once per job, not per task */
                      "b AS (SELECT j.job_id, j.settings ? 'budget_usd' "
                      "OR tn.daily_budget_usd IS NOT NULL AS budgeted "
                      "FROM shoal.jobs j LEFT JOIN LATERAL "
                      "shoal.tenant_plan(coalesce(j.tenant, '')) tn ON true "
                      "WHERE j.job_id IN (SELECT job_id FROM t)) "
                      "SELECT t.task_id, t.status, (SELECT count(*) FROM shoal.attempts a "
                      "WHERE a.task_id = t.task_id AND coalesce(a.outcome_kind, '') NOT IN "
                      "('rate_limited', 'overloaded', 'connection') AND (t.resumed_at IS NULL "
                      "OR a.started_at >= t.resumed_at)), coalesce(b.budgeted, false) "
                      "FROM t LEFT JOIN b ON b.job_id = t.job_id",
                      1, params, &res, err, errlen);
    free(text);
    if (e != SHOAL_OK)
        return e;
    json_t *found = json_object();
    for (int i = 0; found && i < PQntuples(res); i++)
        json_object_set_new(found, PQgetvalue(res, i, 0), json_integer(i));
    if (!o->status && !(o->status = calloc(o->ntasks ? o->ntasks : 1, sizeof(*o->status))))
        e = SHOAL_ERR_NOMEM;
    if (!o->attempts && !(o->attempts = calloc(o->ntasks ? o->ntasks : 1, sizeof(*o->attempts))))
        e = SHOAL_ERR_NOMEM;
    if (!o->budgeted && !(o->budgeted = calloc(o->ntasks ? o->ntasks : 1, sizeof(*o->budgeted))))
        e = SHOAL_ERR_NOMEM;
    for (size_t i = 0; e == SHOAL_OK && i < o->ntasks; i++) {
        json_t *row = json_object_get(found, o->tasks[i]->task_id);
        if (!row)
            continue;
        int r = (int)json_integer_value(row);
        o->status[i] = strdup(PQgetvalue(res, r, 1));
        o->attempts[i] = (int)strtol(PQgetvalue(res, r, 2), NULL, 10);
        o->budgeted[i] = PQgetvalue(res, r, 3)[0] == 't';
    }
    json_decref(found);
    PQclear(res);
    return e == SHOAL_OK ? SHOAL_OK : shoal_err_set(err, errlen, e, "out of memory");
}

/* Reserves the calls of a RESERVED op; a statement the server refuses
 * makes every task wait and ask again, never call unreserved. */
static shoal_err_t run_reserve(shoal_store_t *s, struct op *o, char *err, size_t errlen)
{
    if (!o->status && !(o->status = calloc(o->ntasks ? o->ntasks : 1, sizeof(*o->status))))
        return shoal_err_set(err, errlen, SHOAL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < o->ntasks; i++) {
        free(o->status[i]);
        o->status[i] = NULL;
    }
    shoal_err_t e =
        shoal_budget_reserve(s->pg, o->rows, o->release, o->status, o->ntasks, err, errlen);
    if (e != SHOAL_ERR_INVALID)
        return e;
    shoal_log_error("db", "could not reserve calls error=\"%s\"", err);
    for (size_t i = 0; i < o->ntasks; i++) {
        free(o->status[i]);
        if (!(o->status[i] = strdup("wait")))
            return shoal_err_set(err, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    return SHOAL_OK;
}

/* Looks up jobs cancelled since the last look-up (a minute's margin covers
 * a cancel whose transaction began before that look-up and committed after)
 * and returns an op holding the ids not reported before, or NULL when there
 * are none or the database is away (the next look-up covers the gap). */
static struct op *look_for_cancels(shoal_store_t *s)
{
    char err[256];
    PGresult *res;
    const char *params[] = {s->cancel_since[0] ? s->cancel_since : NULL};
    if (shoal_pg_exec(s->pg,
                      "SELECT now()::text, coalesce(json_agg(job_id), '[]')::text FROM shoal.jobs "
                      "WHERE status = 'cancelled' AND finished_at > coalesce($1::timestamptz, "
                      "now()) - interval '60 seconds'",
                      1, params, &res, err, sizeof(err)) != SHOAL_OK) {
        shoal_log_debug("db", "could not look for cancelled jobs error=\"%s\"", err);
        return NULL;
    }
    snprintf(s->cancel_since, sizeof(s->cancel_since), "%s", PQgetvalue(res, 0, 0));
    json_t *ids = json_loads(PQgetvalue(res, 0, 1), 0, NULL);
    PQclear(res);
    json_t *now = json_object();
    struct op *o = calloc(1, sizeof(*o));
    size_t n = json_array_size(ids);
    if (!o || !now || !(o->status = calloc(n ? n : 1, sizeof(*o->status)))) {
        json_decref(ids);
        json_decref(now);
        op_free(o);
        return NULL;
    }
    o->kind = SHOAL_STORE_CANCELLED;
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        const char *id = json_string_value(v);
        if (!id || json_object_set_new(now, id, json_true()))
            continue;
        if (!json_object_get(s->cancel_seen, id) && (o->status[o->ntasks] = strdup(id)))
            o->ntasks++;
    }
    json_decref(ids);
    /* Ids that left the window will not come back: forget them. */
    json_decref(s->cancel_seen);
    s->cancel_seen = now;
    if (o->ntasks == 0) {
        op_free(o);
        return NULL;
    }
    return o;
}

/* Sleeps up to ms unless the store is stopping; called with mu held. */
static void nap(shoal_store_t *s, long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    if (!s->stopping)
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

static void *thread_main(void *arg)
{
    shoal_store_t *s = arg;
    char err[512];
    long wait_ms = 100;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->todo && !s->stopping) {
            if (!s->cancel_every_ms) {
                pthread_cond_wait(&s->cv, &s->mu);
                continue;
            }
            double left = s->cancel_due - shoal_service_now_ms();
            if (left <= 0)
                break;
            nap(s, (long)left + 1);
        }
        if (s->stopping)
            break;
        if (s->cancel_every_ms && shoal_service_now_ms() >= s->cancel_due) {
            s->cancel_due = shoal_service_now_ms() + (double)s->cancel_every_ms;
            pthread_mutex_unlock(&s->mu);
            struct op *c = look_for_cancels(s);
            if (shoal_service_now_ms() >= s->expire_due) {
                long n = 0;
                s->expire_due = shoal_service_now_ms() + EXPIRE_EVERY_MS;
                if (shoal_budget_expire(s->pg, &n, err, sizeof(err)) != SHOAL_OK)
                    shoal_log_debug("db", "could not expire reservations error=\"%s\"", err);
                else if (n > 0)
                    shoal_log_info("budget", "reservations expired, counted as spent count=%ld", n);
            }
            pthread_mutex_lock(&s->mu);
            if (c) {
                if (s->done_tail)
                    s->done_tail->next = c;
                else
                    s->done = c;
                s->done_tail = c;
                if (s->wake_fd >= 0 && write(s->wake_fd, "c", 1) < 0) {
                    /* the pipe is full: the loop wakes anyway */
                }
            }
            continue;
        }
        struct op *o = s->todo;
        pthread_mutex_unlock(&s->mu);

        shoal_err_t e;
        if (o->kind == SHOAL_STORE_CHECKED) {
            e = run_check(s, o, err, sizeof(err));
        } else if (o->kind == SHOAL_STORE_RESERVED) {
            e = run_reserve(s, o, err, sizeof(err));
        } else {
            o->ntokens = 0;
            o->jobs_ended = 0;
            shoal_sink_set_pg(o->sink, s->pg);
            e = shoal_sink_flush(o->sink, collect, o, &o->jobs_ended, err, sizeof(err));
        }
        if (e == SHOAL_ERR_INVALID && o->kind == SHOAL_STORE_CHECKED) {
            /* A check the server refuses: run the tasks rather than hold them forever. */
            shoal_log_error("db", "could not check tasks error=\"%s\"", err);
            e = SHOAL_OK;
        }

        pthread_mutex_lock(&s->mu);
        if (e != SHOAL_OK) {
            if (s->failing_since == 0) {
                s->failing_since = shoal_service_now_ms();
                shoal_log_warn("db", "could not reach the database, will retry error=\"%s\"", err);
            }
            nap(s, wait_ms);
            wait_ms = wait_ms * 2 > 5000 ? 5000 : wait_ms * 2;
            continue;
        }
        if (s->failing_since != 0)
            shoal_log_info("db", "database reachable again after_ms=%.0f",
                           shoal_service_now_ms() - s->failing_since);
        s->failing_since = 0;
        wait_ms = 100;
        s->todo = o->next;
        if (!s->todo)
            s->todo_tail = NULL;
        o->next = NULL;
        if (s->done_tail)
            s->done_tail->next = o;
        else
            s->done = o;
        s->done_tail = o;
        if (s->wake_fd >= 0 && write(s->wake_fd, "d", 1) < 0) {
            /* the pipe is full: the loop wakes anyway */
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

shoal_store_t *shoal_store_new(const char *conninfo, int wake_fd, char *errbuf, size_t errlen)
{
    shoal_store_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->pg = shoal_pg_new(conninfo, "shoal-worker"))) {
        free(s);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->wake_fd = wake_fd;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, thread_main, s) != 0) {
        shoal_store_destroy(s);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not start the database thread");
        return NULL;
    }
    s->started = 1;
    return s;
}

void shoal_store_destroy(shoal_store_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->started)
        pthread_join(s->thread, NULL);
    for (struct op *o = s->todo, *n; o; o = n) {
        n = o->next;
        op_free(o);
    }
    for (struct op *o = s->done, *n; o; o = n) {
        n = o->next;
        op_free(o);
    }
    shoal_pg_destroy(s->pg);
    json_decref(s->cancel_seen);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void shoal_store_watch_cancels(shoal_store_t *s, long every_ms)
{
    pthread_mutex_lock(&s->mu);
    s->cancel_every_ms = every_ms > 0 ? every_ms : 0;
    s->cancel_due = shoal_service_now_ms();
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void enqueue(shoal_store_t *s, struct op *o)
{
    pthread_mutex_lock(&s->mu);
    if (s->todo_tail)
        s->todo_tail->next = o;
    else
        s->todo = o;
    s->todo_tail = o;
    s->pending++;
    if (o->kind == SHOAL_STORE_WRITTEN)
        s->writes++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Adds the tasks to the last queued check when the thread has not started
 * it (every op but the head is waiting): checks queued behind a slow one
 * go as one statement. Sent one by one, the checks of a loop taking a
 * message or two per pass queued by the thousand, each a round trip, and
 * the queue never caught up (a 20,000-task job made 15,000 checks instead
 * of 200 and ran at a sixth of its speed). Holding the loop's checks back
 * until the last one ended did the same, but held tasks from their lanes,
 * and blind rate limits drew more 429s from the bursts. 1 when merged. */
static int merge_check(shoal_store_t *s, shoal_task_t *const *tasks, size_t n)
{
    int merged = 0;
    pthread_mutex_lock(&s->mu);
    struct op *tail = s->todo_tail;
    if (tail && tail != s->todo && tail->kind == SHOAL_STORE_CHECKED) {
        shoal_task_t **nt = realloc(tail->tasks, (tail->ntasks + n) * sizeof(*nt));
        if (nt) {
            memcpy(nt + tail->ntasks, tasks, n * sizeof(*tasks));
            tail->tasks = nt;
            tail->ntasks += n;
            merged = 1;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return merged;
}

shoal_err_t shoal_store_check(shoal_store_t *s, shoal_task_t *const *tasks, size_t n)
{
    if (n > 0 && merge_check(s, tasks, n))
        return SHOAL_OK;
    struct op *o = calloc(1, sizeof(*o));
    if (!o || !(o->tasks = malloc((n ? n : 1) * sizeof(*o->tasks)))) {
        free(o);
        return SHOAL_ERR_NOMEM;
    }
    memcpy(o->tasks, tasks, n * sizeof(*tasks));
    o->ntasks = n;
    o->kind = SHOAL_STORE_CHECKED;
    enqueue(s, o);
    return SHOAL_OK;
}

shoal_err_t shoal_store_reserve(shoal_store_t *s, shoal_task_t *const *tasks, size_t n, char *rows,
                                char *release)
{
    struct op *o = calloc(1, sizeof(*o));
    if (!o || !(o->tasks = malloc((n ? n : 1) * sizeof(*o->tasks)))) {
        free(o);
        free(rows);
        free(release);
        return SHOAL_ERR_NOMEM;
    }
    if (n)
        memcpy(o->tasks, tasks, n * sizeof(*tasks));
    o->ntasks = n;
    o->kind = SHOAL_STORE_RESERVED;
    o->rows = rows;
    o->release = release;
    enqueue(s, o);
    return SHOAL_OK;
}

shoal_err_t shoal_store_write(shoal_store_t *s, shoal_sink_t *sink)
{
    struct op *o = calloc(1, sizeof(*o));
    if (!o)
        return SHOAL_ERR_NOMEM;
    o->kind = SHOAL_STORE_WRITTEN;
    o->sink = sink;
    enqueue(s, o);
    return SHOAL_OK;
}

int shoal_store_poll(shoal_store_t *s, void (*fn)(const shoal_store_done_t *d, void *arg),
                     void *arg)
{
    pthread_mutex_lock(&s->mu);
    struct op *list = s->done;
    s->done = s->done_tail = NULL;
    pthread_mutex_unlock(&s->mu);

    int n = 0;
    for (struct op *o = list, *next; o; o = next) {
        next = o->next;
        shoal_store_done_t d = {.kind = o->kind,
                                .tasks = o->tasks,
                                .ntasks = o->ntasks,
                                .status = (const char **)o->status,
                                .attempts = o->attempts,
                                .budgeted = o->budgeted,
                                .tokens = o->tokens,
                                .ntokens = o->ntokens,
                                .jobs_ended = o->jobs_ended,
                                .sink = o->sink};
        o->sink = NULL; /* handed back through d.sink */
        if (o->kind == SHOAL_STORE_CANCELLED) {
            d.tasks = NULL;
            d.ntasks = 0;
            d.status = NULL;
            d.job_ids = (const char *const *)o->status;
            d.njobs = o->ntasks;
            fn(&d, arg);
            op_free(o);
            n++;
            continue;
        }
        pthread_mutex_lock(&s->mu);
        s->pending--;
        if (o->kind == SHOAL_STORE_WRITTEN)
            s->writes--;
        pthread_mutex_unlock(&s->mu);
        fn(&d, arg);
        op_free(o);
        n++;
    }
    return n;
}

/* The counters are shared with the thread: read them under the lock. */
static size_t locked_read(const shoal_store_t *s, const size_t *field)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    size_t v = *field;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return v;
}

size_t shoal_store_pending(const shoal_store_t *s)
{
    return locked_read(s, &s->pending);
}

size_t shoal_store_writes_pending(const shoal_store_t *s)
{
    return locked_read(s, &s->writes);
}

double shoal_store_failing_ms(const shoal_store_t *s)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    double since = s->failing_since;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return since > 0 ? shoal_service_now_ms() - since : 0;
}
