/*
 * The worker loop (see runner.h).
 *
 * One thread drives everything that may wait: the model calls (curl multi),
 * the Kafka consumer and producer, and the database thread's completions
 * (worker/store.h), all waking one curl_multi_poll through one pipe. Nothing
 * in the loop blocks on the network or the database.
 *
 * A task lives from the moment its message is taken until its result row is
 * committed, and moves through the states of worker/task.h; every decision
 * about where it goes next is in this file, in on_reply() and its helpers,
 * from one classification of each call's outcome. `held` maps task_id to the
 * live task, so a second delivery of a task that is still running attaches
 * its Kafka position to the first instead of calling the model again.
 * Positions are released to the offset tracker only after the database
 * write, so a crash at any point leaves the message uncommitted and it is
 * delivered again.
 *
 * Each model has a lane (worker/lane.h) holding the tasks that wait for its
 * capacity. The task topics are read through one queue per priority, high
 * first; when the worker holds enough, the partitions of a priority are
 * paused rather than left unpolled, so the consumer never leaves its group
 * while the worker is busy or the database is away.
 */
#include "worker/runner.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/service.h"
#include "common/taskmsg.h"
#include "worker/backoff.h"
#include "worker/batchtask.h"
#include "worker/budget.h"
#include "worker/fleet.h"
#include "worker/http.h"
#include "worker/lane.h"
#include "worker/offsets.h"
#include "worker/provider.h"
#include "worker/sink.h"
#include "worker/split.h"
#include "worker/store.h"
#include "worker/task.h"
#include "worker/wmetrics.h"

#define NPRIO 3
#define CHECK_BATCH 512
#define BATCH_BYTES_MAX ((size_t)8 << 20) /* one record_batch statement at most */
#define PAUSE_AFTER_MS 1000.0             /* no room for this long: pause the partitions */
#define PARKED_FACTOR 16 /* tasks parked in cooling lanes: up to this x max_inflight */

/* Whether a try with this outcome counts against the task's attempts.
 * Capacity problems (429, overload, an unreachable provider) say nothing
 * about the task: they hold the lane and are bounded by the task's deadline
 * and the lane's --down-after-ms instead. Retriable or not is
 * shoal_outcome_retriable()'s one rule. */
static int counts_attempt(shoal_outcome_t o)
{
    return !(o == SHOAL_OUTCOME_RATE_LIMITED || o == SHOAL_OUTCOME_OVERLOADED ||
             o == SHOAL_OUTCOME_CONNECTION);
}

#define OUTPUT_ROOM_MAX 65536  /* truncated answers are retried with at most this */
#define EXPIRE_EVERY_MS 250.0  /* how often waiting tasks are checked against their deadlines */
#define METRICS_EVERY_MS 250.0 /* how often lane and task gauges are refreshed */
#define CANCEL_POLL_MS 500     /* how often the checker looks for cancelled jobs */
#define CANCELLED_MAX 10000    /* cancelled job ids remembered; the check covers the rest */
#define BUDGET_WAIT_MS 250     /* a call whose budget is held by calls in flight asks again */

struct runner {
    const shoal_runner_conf_t *conf;
    shoal_runner_stats_t *stats;
    rd_kafka_t *consumer;
    rd_kafka_t *producer; /* dead-letter topic */
    rd_kafka_queue_t *main_queue;
    rd_kafka_queue_t *prio_queue[NPRIO];
    const char *prio_topic[NPRIO];
    rd_kafka_topic_partition_list_t *assigned;
    int paused[NPRIO];
    double full_since[NPRIO]; /* when priority p last ran out of room (0: has room) */
    int wake[2];
    shoal_http_t *http;
    shoal_store_t *store;   /* result writes */
    shoal_store_t *checker; /* checks of taken tasks, on a connection of their own so
                             * they never wait behind a large write */
    shoal_sink_t *sink, *spare;
    shoal_offsets_t *offsets;
    shoal_lane_t **lanes; /* per model, by index */
    shoal_fleet_t *fleet;
    unsigned long *share_version; /* per lane: the fleet share last applied */
    double reported_ms;           /* when demand was last reported to the fleet */
    size_t nlanes;
    json_t *held; /* task_id -> shoal_task_t* as json_integer(intptr) */
    long nheld;
    long held_prio[NPRIO];
    long unwritten;           /* finished tasks whose results are not yet durable */
    shoal_task_t **unchecked; /* taken, not yet sent to the database check */
    size_t nunchecked, capunchecked;
    shoal_task_t **timers; /* BACKOFF tasks, a min-heap on due_ms */
    size_t ntimers, captimers;
    struct curl_slist **headers; /* per model, by index */
    shoal_backoff_t backoff;
    shoal_kafka_ack_t dlq_ack;
    double first_result_ms; /* when the oldest unflushed result finished */
    unsigned long long seq;
    double expired_ms; /* when waiting tasks were last checked against their deadlines */
    json_t *cancelled; /* job ids cancelled while this worker ran (object as a set) */
    long long start_ms;
    unsigned rand_state;
    shoal_wmetrics_t *wm;    /* NULL when metrics are off */
    double metrics_ms;       /* when the gauges were last refreshed */
    double write_started_ms; /* when the write in progress was handed over */
    shoal_split_t *split;    /* batch mode: leftovers of the results not yet handed over */
    /* Budgeted calls the lanes let go in this pass, reserved in one batch. */
    shoal_task_t **reserving;
    size_t nreserving, capreserving;
    json_t *reserve_rows; /* shoal.reserve_calls' rows for them */
    json_t *release;      /* reservations granted but never called, to give back */
};

static shoal_lane_t *lane_of(struct runner *r, const shoal_task_t *t)
{
    return r->lanes[t->model->index];
}

/* ---- held tasks ---------------------------------------------------------- */

static shoal_task_t *held_get(struct runner *r, const char *task_id)
{
    json_t *v = json_object_get(r->held, task_id);
    return v ? (shoal_task_t *)(intptr_t)json_integer_value(v) : NULL;
}

static void held_put(struct runner *r, shoal_task_t *t)
{
    json_object_set_new(r->held, t->task_id, json_integer((json_int_t)(intptr_t)t));
    r->nheld++;
    r->held_prio[t->prio]++;
}

static void held_drop(struct runner *r, shoal_task_t *t)
{
    if (held_get(r, t->task_id) == t) {
        json_object_del(r->held, t->task_id);
        r->nheld--;
        r->held_prio[t->prio]--;
    }
}

/* Releases a finished task: its Kafka positions become committable. */
static void release(struct runner *r, shoal_task_t *t)
{
    for (int i = 0; i < t->nrefs; i++)
        shoal_offsets_done(r->offsets, &t->refs[i]);
    held_drop(r, t);
    shoal_task_destroy(t);
}

/* ---- timers (BACKOFF) ------------------------------------------------------ */

static void heap_swap(struct runner *r, size_t a, size_t b)
{
    shoal_task_t *t = r->timers[a];
    r->timers[a] = r->timers[b];
    r->timers[b] = t;
    r->timers[a]->heap_at = a;
    r->timers[b]->heap_at = b;
}

static void heap_up(struct runner *r, size_t i)
{
    while (i > 0 && r->timers[(i - 1) / 2]->due_ms > r->timers[i]->due_ms) {
        heap_swap(r, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct runner *r, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < r->ntimers && r->timers[l]->due_ms < r->timers[m]->due_ms)
            m = l;
        if (l + 1 < r->ntimers && r->timers[l + 1]->due_ms < r->timers[m]->due_ms)
            m = l + 1;
        if (m == i)
            return;
        heap_swap(r, i, m);
        i = m;
    }
}

static int timer_add(struct runner *r, shoal_task_t *t)
{
    if (r->ntimers == r->captimers) {
        size_t ncap = r->captimers ? r->captimers * 2 : 256;
        shoal_task_t **n = realloc(r->timers, ncap * sizeof(*n));
        if (!n)
            return -1;
        r->timers = n;
        r->captimers = ncap;
    }
    t->heap_at = r->ntimers;
    r->timers[r->ntimers++] = t;
    heap_up(r, t->heap_at);
    return 0;
}

/* Takes t out of the heap wherever it is. */
static void timer_remove(struct runner *r, shoal_task_t *t)
{
    size_t i = t->heap_at, last = --r->ntimers;
    if (i == last)
        return;
    r->timers[i] = r->timers[last];
    r->timers[i]->heap_at = i;
    heap_up(r, i);
    heap_down(r, r->timers[i]->heap_at);
}

static shoal_task_t *timer_pop(struct runner *r)
{
    shoal_task_t *t = r->timers[0];
    r->ntimers--;
    if (r->ntimers > 0) {
        r->timers[0] = r->timers[r->ntimers];
        r->timers[0]->heap_at = 0;
        heap_down(r, 0);
    }
    return t;
}

/* ---- results and dead letters -------------------------------------------- */

static void dead_letter(struct runner *r, const void *value, size_t len, const char *key,
                        const char *error)
{
    char err[256];
    json_t *msg = json_object();
    json_t *task = value ? json_loadb(value, len, 0, NULL) : NULL;
    if (task) {
        json_object_set_new(msg, "task", task);
    } else if (value) {
        /* The message as text when it is UTF-8, else its first bytes in hex. */
        size_t keep = len < 4096 ? len : 4096;
        json_t *raw = json_stringn(value, keep);
        if (raw) {
            json_object_set_new(msg, "raw", raw);
        } else {
            char hex[2 * 1024 + 1];
            size_t n = keep < 1024 ? keep : 1024;
            for (size_t i = 0; i < n; i++)
                snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)value)[i]);
            hex[2 * n] = '\0';
            json_object_set_new(msg, "raw_hex", json_string(hex));
        }
    }
    json_object_set_new(msg, "error", json_string(error));
    json_object_set_new(msg, "worker_id", json_string(r->conf->worker_id));
    char *text = json_dumps(msg, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(msg);
    if (!text)
        return;
    if (shoal_kafka_produce(r->producer, r->conf->topics->dlq, key, text, strlen(text), &r->dlq_ack,
                            err, sizeof(err)) != SHOAL_OK)
        shoal_log_error("dlq", "could not dead-letter a task error=\"%s\"", err);
    free(text);
}

/* The task reached DONE or FAILED: queue its result row. */
static void finish(struct runner *r, shoal_task_t *t, shoal_task_state_t to)
{
    shoal_task_set_state(t, to);
    if (to == SHOAL_TASK_FAILED) {
        r->stats->tasks_failed++;
        char *v = json_dumps(t->doc, JSON_COMPACT);
        dead_letter(r, v, v ? strlen(v) : 0, t->task_id, t->error);
        free(v);
        shoal_log_warn("task", "task failed job_id=%s task_id=%s attempts=%d error=\"%s\"",
                       t->job_id, t->task_id, t->attempts, t->error);
    } else {
        r->stats->tasks_done++;
    }
    if (shoal_sink_results(r->sink) == 0)
        r->first_result_ms = shoal_service_now_ms();
    r->unwritten++;
    size_t len = 0;
    char *row = shoal_task_result_text(t, NULL, r->conf->worker_id, &len);
    if (shoal_sink_add_result_text(r->sink, row, len, t) != SHOAL_OK)
        shoal_log_error("task", "out of memory queueing a result task_id=%s", t->task_id);
    else if (t->item_rows &&
             shoal_sink_add_items_text(r->sink, t->item_rows, t->item_rows_len) != SHOAL_OK)
        shoal_log_error("task", "out of memory queueing item results task_id=%s", t->task_id);
    t->item_rows = NULL; /* the sink's now, or freed */
}

/* A batch task's call answered some of its items (ans): the task is done
 * with those, and the items left out go to the split (worker/split.h),
 * which hands them on in a sub-task written with this result. A task that
 * cannot split again (or out of memory) fails instead, keeping its answers. */
static void batch_done(struct runner *r, shoal_task_t *t, shoal_batchtask_answer_t *ans)
{
    char err[256];

    t->output = ans->output;
    ans->output = NULL;
    t->item_rows = ans->item_rows;
    t->item_rows_len = ans->item_rows_len;
    ans->item_rows = NULL;
    if (ans->missing) {
        size_t left = json_array_size(ans->missing);
        json_t *msg = t->message ? json_loadb(t->message, t->message_len, 0, NULL)
                                 : json_incref(t->doc); /* slim() kept the whole message */
        json_t *missing = ans->missing;
        ans->missing = NULL;
        shoal_err_t e = SHOAL_ERR_NOMEM;
        if (msg)
            e = shoal_split_add(r->split, msg, missing, t->prio, err, sizeof(err));
        else
            json_decref(missing);
        if (e != SHOAL_OK) {
            snprintf(t->error, sizeof(t->error),
                     "%zu of %zu items not answered and not split off: %.300s", left, ans->n,
                     e == SHOAL_ERR_NOMEM ? "out of memory" : err);
            shoal_batchtask_answer_clear(ans);
            finish(r, t, SHOAL_TASK_FAILED);
            return;
        }
        shoal_log_debug("task", "items left for a sub-task job_id=%s task_id=%s items=%zu of=%zu",
                        t->job_id, t->task_id, left, ans->n);
    }
    shoal_batchtask_answer_clear(ans);
    finish(r, t, SHOAL_TASK_DONE);
}

/* t ran out of time: its error says which deadline it was (the job's
 * deadline_s or this worker's --max-wait-ms), after why (NULL: none) and
 * with the model it was waiting for (NULL: none), then fails it. */
static void fail_deadline(struct runner *r, shoal_task_t *t, const char *why, const char *model)
{
    char which[96];

    if (t->job_deadline)
        snprintf(which, sizeof(which), "deadline of the job passed (deadline_s=%ld)",
                 t->deadline_s);
    else
        snprintf(which, sizeof(which), "deadline of the task passed (--max-wait-ms=%ld)",
                 r->conf->max_wait_ms);
    snprintf(t->error, sizeof(t->error), "%.300s%s%s after %d attempt%s%s%.100s", why ? why : "",
             why ? "; " : "", which, t->attempts, t->attempts == 1 ? "" : "s",
             model ? " waiting for model " : "", model ? model : "");
    finish(r, t, SHOAL_TASK_FAILED);
}

static void fail(struct runner *r, shoal_task_t *t, const char *fmt, const char *why)
{
    snprintf(t->error, sizeof(t->error), fmt, why);
    finish(r, t, SHOAL_TASK_FAILED);
}

/* ---- routing ------------------------------------------------------------- */

/* The model the task's chain names at position k, NULL past its end: the
 * task's own model, then the job's fallback_models, or when the job names
 * none, the fallbacks the models file gives its model. */
static const shoal_model_t *chain_at(struct runner *r, const shoal_task_t *t, int k)
{
    if (k == 0)
        return t->requested;
    size_t njob = json_array_size(t->fallback_models);
    const char *alias = njob ? json_string_value(json_array_get(t->fallback_models, (size_t)k - 1))
                        : (size_t)k <= t->requested->nfallbacks ? t->requested->fallbacks[k - 1]
                                                                : NULL;
    return alias ? shoal_models_find(r->conf->models, alias) : NULL;
}

/* Moves t to the next model of its chain that this worker knows; 0 when
 * there is none. */
static int fall_back(struct runner *r, shoal_task_t *t, const char *why)
{
    if (!t->requested)
        return 0;
    size_t len = json_array_size(t->fallback_models);
    if (len == 0)
        len = t->requested->nfallbacks;
    for (int k = t->fallback + 1; k <= (int)len; k++) {
        const shoal_model_t *m = chain_at(r, t, k);
        if (!m)
            continue;
        shoal_log_info("task", "falling back job_id=%s task_id=%s from=%s to=%s why=\"%s\"",
                       t->job_id, t->task_id, t->model->alias, m->alias, why);
        t->fallback = k;
        t->model = m;
        t->failures = 0;
        if (shoal_task_build_request(t) != SHOAL_OK)
            return 0;
        r->stats->fallbacks++;
        return 1;
    }
    return 0;
}

/* ---- cancels ---------------------------------------------------------------- */

/* Drops t when its job was cancelled: no call of it starts again. Its row is
 * already 'cancelled' (shoal.cancel_job), so only its Kafka positions are
 * released. 1 when dropped (t is gone). */
static int drop_if_cancelled(struct runner *r, shoal_task_t *t)
{
    if (json_object_size(r->cancelled) == 0 || !json_object_get(r->cancelled, t->job_id))
        return 0;
    shoal_log_debug("task", "dropped, job cancelled job_id=%s task_id=%s state=%s", t->job_id,
                    t->task_id, shoal_task_state_name(t->state));
    r->stats->tasks_skipped++;
    release(r, t);
    return 1;
}

/* Jobs cancelled lately (from the checker): their tasks waiting for capacity
 * or a backoff are dropped now, before any call of theirs starts; tasks
 * being checked are dropped by the check, calls in flight finish and their
 * tasks are dropped instead of retried. */
static void on_cancelled(struct runner *r, const shoal_store_done_t *d)
{
    const char *key;
    json_t *v;
    void *tmp;

    if (json_object_size(r->cancelled) + d->njobs > CANCELLED_MAX)
        json_object_clear(r->cancelled);
    for (size_t i = 0; i < d->njobs; i++)
        json_object_set_new(r->cancelled, d->job_ids[i], json_true());
    long dropped = 0;
    json_object_foreach_safe(r->held, tmp, key, v)
    {
        shoal_task_t *t = (shoal_task_t *)(intptr_t)json_integer_value(v);
        if (t->state != SHOAL_TASK_WAITING && t->state != SHOAL_TASK_BACKOFF)
            continue;
        if (!json_object_get(r->cancelled, t->job_id))
            continue;
        if (t->state == SHOAL_TASK_WAITING)
            shoal_lane_remove(lane_of(r, t), t);
        else
            timer_remove(r, t);
        dropped += drop_if_cancelled(r, t);
    }
    for (size_t i = 0; i < d->njobs; i++)
        shoal_log_info("task", "job cancelled job_id=%s", d->job_ids[i]);
    if (dropped)
        shoal_log_info("task", "dropped tasks of cancelled jobs tasks=%ld", dropped);
}

/* A task ready for a try: into its lane's queue, unless its job was cancelled. */
static void route(struct runner *r, shoal_task_t *t)
{
    if (drop_if_cancelled(r, t))
        return;
    shoal_lane_push(lane_of(r, t), t);
}

/* ---- calls --------------------------------------------------------------- */

static const struct curl_slist *headers_for(struct runner *r, const shoal_model_t *m)
{
    return r->headers[m->index];
}

static void give_back(struct runner *r, shoal_task_t *t);

static void start_call(struct runner *r, shoal_task_t *t)
{
    char err[256];
    shoal_task_set_state(t, t->repairing ? SHOAL_TASK_REPAIRING : SHOAL_TASK_IN_FLIGHT);
    long timeout = t->model->timeout_ms > 0 ? t->model->timeout_ms : t->timeout_ms;
    if (shoal_http_post(r->http, t->model->endpoint, headers_for(r, t->model), t->model->ca_file,
                        t->request, t->request_len, timeout, 0, t, err, sizeof(err)) != SHOAL_OK) {
        shoal_lane_ended(lane_of(r, t), t, SHOAL_LANE_NEUTRAL, NULL, -1, shoal_service_now_ms());
        give_back(r, t);
        fail(r, t, "could not start the call: %s", err);
    }
}

/* ---- budgets (worker/budget.h) --------------------------------------------- */

/* t's reservation will not be called: it goes back with the next batch. */
static void give_back(struct runner *r, shoal_task_t *t)
{
    if (!t->reservation)
        return;
    json_array_append_new(r->release, json_string(t->reservation));
    free(t->reservation);
    t->reservation = NULL;
}

/* A budgeted task the lane let go: its call waits for the reservation of its
 * worst case, asked for with the others of this pass (send_reserves). */
static void ask_reserve(struct runner *r, shoal_task_t *t)
{
    char id[200];
    double usd = 0;
    shoal_err_t e = shoal_budget_prepare(t, &usd);
    if (e == SHOAL_OK && r->nreserving == r->capreserving) {
        size_t ncap = r->capreserving ? r->capreserving * 2 : 64;
        shoal_task_t **n = realloc(r->reserving, ncap * sizeof(*n));
        if (n) {
            r->reserving = n;
            r->capreserving = ncap;
        } else {
            e = SHOAL_ERR_NOMEM;
        }
    }
    snprintf(id, sizeof(id), "%s/%lld/%llu", r->conf->worker_id, r->start_ms, ++r->seq);
    json_t *row = e == SHOAL_OK ? shoal_budget_row(t, id, r->conf->worker_id, usd) : NULL;
    free(t->reservation);
    t->reservation = row ? strdup(id) : NULL;
    if (!t->reservation || json_array_append_new(r->reserve_rows, row) != 0) {
        if (t->reservation)
            row = NULL; /* stolen by the failed append */
        json_decref(row);
        free(t->reservation);
        t->reservation = NULL;
        shoal_lane_ended(lane_of(r, t), t, SHOAL_LANE_NEUTRAL, NULL, -1, shoal_service_now_ms());
        fail(r, t, "cannot reserve the call's cost: %s",
             e == SHOAL_ERR_INVALID ? "the request is not JSON" : "out of memory");
        return;
    }
    shoal_task_set_state(t, SHOAL_TASK_RESERVING);
    r->reserving[r->nreserving++] = t;
}

/* Hands this pass's reservations (and reservations to give back) to the
 * checker's connection: one round trip for all of them. */
static void send_reserves(struct runner *r)
{
    if (r->nreserving == 0 && json_array_size(r->release) == 0)
        return;
    char *rows = json_dumps(r->reserve_rows, JSON_COMPACT);
    char *rel = json_dumps(r->release, JSON_COMPACT);
    if (!rows || !rel ||
        shoal_store_reserve(r->checker, r->reserving, r->nreserving, rows, rel) != SHOAL_OK) {
        if (!rows || !rel) {
            free(rows);
            free(rel);
        }
        shoal_log_error("db", "out of memory queueing reservations");
        return; /* tried again next pass */
    }
    json_array_clear(r->reserve_rows);
    json_array_clear(r->release);
    r->nreserving = 0;
}

/* The database's answer on each reserved call: granted calls start (unless
 * their job was cancelled meanwhile), "wait" asks again shortly, refused
 * fails the task: its job's budget (or its tenant's) is exhausted. */
static void on_reserved(struct runner *r, const shoal_store_done_t *d)
{
    double now = shoal_service_now_ms();
    for (size_t i = 0; i < d->ntasks; i++) {
        shoal_task_t *t = d->tasks[i];
        const char *v = d->status && d->status[i] ? d->status[i] : "wait";
        if (!strcmp(v, "granted")) {
            if (json_object_size(r->cancelled) && json_object_get(r->cancelled, t->job_id)) {
                shoal_lane_ended(lane_of(r, t), t, SHOAL_LANE_NEUTRAL, NULL, -1, now);
                give_back(r, t);
                drop_if_cancelled(r, t);
                continue;
            }
            start_call(r, t);
            continue;
        }
        /* No call: the lane's tokens go back, its request slot is spent. */
        shoal_usage_t none = {0, 0, 0, 0};
        shoal_lane_ended(lane_of(r, t), t, SHOAL_LANE_NEUTRAL, &none, -1, now);
        free(t->reservation);
        t->reservation = NULL;
        if (!strncmp(v, "refused:", 8)) {
            r->stats->budget_refused++;
            fail(r, t, "%s", v + 8);
            continue;
        }
        if (now > t->deadline_ms) {
            fail_deadline(r, t, "waiting for room in the budget", NULL);
            continue;
        }
        t->due_ms = now + BUDGET_WAIT_MS + (double)(rand_r(&r->rand_state) % BUDGET_WAIT_MS);
        shoal_task_set_state(t, SHOAL_TASK_BACKOFF);
        if (timer_add(r, t) != 0)
            route(r, t);
    }
}

/* Starts every call the lanes allow now; returns ms until one may allow more
 * (-1: nothing to wait for). */
static double dispatch(struct runner *r)
{
    double now = shoal_service_now_ms(), next = -1;
    for (size_t i = 0; i < r->nlanes; i++) {
        shoal_lane_t *l = r->lanes[i];
        double wait;
        shoal_task_t *t;
        while ((t = shoal_lane_next(l, now, &wait)) != NULL) {
            if (now > t->deadline_ms) {
                shoal_lane_ended(l, t, SHOAL_LANE_NEUTRAL, NULL, -1, now);
                fail_deadline(r, t, NULL, t->model->alias);
                continue;
            }
            if (t->budgeted)
                ask_reserve(r, t);
            else
                start_call(r, t);
        }
        if (wait >= 0 && (next < 0 || wait < next))
            next = wait;
    }
    return next;
}

/* Fails the tasks waiting in a lane past their deadline. dispatch() catches
 * a task only when its lane lets it go, and a cooling or held lane (an
 * outage, a long Retry-After) may keep it far longer than a job's deadline
 * allows; so the waiting tasks are looked at a few times a second. */
static void expire_waiting(struct runner *r)
{
    double now = shoal_service_now_ms();
    const char *key;
    json_t *v;
    void *tmp;

    if (now - r->expired_ms < EXPIRE_EVERY_MS)
        return;
    r->expired_ms = now;
    json_object_foreach_safe(r->held, tmp, key, v)
    {
        shoal_task_t *t = (shoal_task_t *)(intptr_t)json_integer_value(v);
        if (t->state != SHOAL_TASK_WAITING || now <= t->deadline_ms)
            continue;
        shoal_lane_remove(lane_of(r, t), t);
        fail_deadline(r, t, NULL, t->model->alias);
    }
}

/* Lanes whose model has been failing for longer than down_after_ms hand
 * their waiting tasks on down their fallback chains (or fail them), so a dead
 * model never holds a job forever. */
static void abandon_down_lanes(struct runner *r)
{
    double now = shoal_service_now_ms();
    for (size_t i = 0; i < r->nlanes; i++) {
        shoal_lane_t *l = r->lanes[i];
        double down = shoal_lane_down_ms(l, now);
        if (down < (double)r->conf->down_after_ms || shoal_lane_waiting(l) == 0)
            continue;
        char why[160];
        snprintf(why, sizeof(why), "model %s failing for %.0f s", shoal_lane_model(l)->alias,
                 down / 1000.0);
        shoal_task_t *t;
        while ((t = shoal_lane_pop(l)) != NULL) {
            if (fall_back(r, t, why))
                route(r, t);
            else
                fail(r, t, "%s", why);
        }
    }
}

static shoal_lane_signal_t lane_signal(shoal_outcome_t o)
{
    switch (o) {
    case SHOAL_OUTCOME_OK:
    case SHOAL_OUTCOME_TRUNCATED:
    case SHOAL_OUTCOME_MALFORMED:
        return SHOAL_LANE_OK;
    case SHOAL_OUTCOME_RATE_LIMITED:
        return SHOAL_LANE_LIMITED;
    case SHOAL_OUTCOME_OVERLOADED:
    case SHOAL_OUTCOME_SERVER_ERROR:
    case SHOAL_OUTCOME_TIMEOUT:
    case SHOAL_OUTCOME_CONNECTION:
        return SHOAL_LANE_DOWN;
    case SHOAL_OUTCOME_PERMANENT:
        break;
    }
    return SHOAL_LANE_NEUTRAL;
}

/* Why a truncated answer was cut short: at the request's max_tokens, or
 * when the request set none, at the provider's own limit after got tokens. */
static void truncated_why(const shoal_task_t *t, long got, char *why, size_t len)
{
    json_t *req = json_loadb(t->request, t->request_len, 0, NULL);
    json_t *mt = json_object_get(req, "max_tokens");

    if (json_is_integer(mt))
        snprintf(why, len, "answer truncated at max_tokens %lld",
                 (long long)json_integer_value(mt));
    else
        snprintf(why, len,
                 "answer truncated after %ld output tokens (the provider's default limit)", got);
    json_decref(req);
}

/* A truncated answer of a job that retries them (output.on_truncated
 * "retry"): ask again with twice the output room (the request's max_tokens,
 * or when it set none, what the answer got), up to OUTPUT_ROOM_MAX. 0 when
 * there is no more room to give. */
static int grow_output_room(shoal_task_t *t, long got)
{
    json_t *req = json_loadb(t->request, t->request_len, 0, NULL);
    json_t *mt = json_object_get(req, "max_tokens");
    long now = json_is_integer(mt) ? (long)json_integer_value(mt) : got;
    int ok = now > 0 && now < OUTPUT_ROOM_MAX;
    if (ok) {
        long next = now * 2 < OUTPUT_ROOM_MAX ? now * 2 : OUTPUT_ROOM_MAX;
        char *text = json_object_set_new(req, "max_tokens", json_integer(next)) == 0
                         ? json_dumps(req, JSON_COMPACT)
                         : NULL;
        ok = text != NULL;
        if (ok) {
            free(t->request);
            t->request = text;
            t->request_len = strlen(text);
        }
    }
    json_decref(req);
    return ok;
}

/* Tells the fleet what a call showed: what it used, a 429, and the limits
 * the provider's headers announce. */
static void report_call(struct runner *r, const shoal_task_t *t, const shoal_http_reply_t *reply,
                        shoal_outcome_t oc, const shoal_usage_t *u, long hold_ms)
{
    shoal_fleet_report_t rep;
    shoal_provider_signals_t sig;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    shoal_fleet_report_init(&rep);
    shoal_provider_signals(reply->headers, reply->headers_len,
                           (double)tv.tv_sec + (double)tv.tv_usec / 1e6, &sig);
    rep.sent = 1;
    rep.ok = oc == SHOAL_OUTCOME_RATE_LIMITED ? 0 : 1;
    rep.rate_limited = oc == SHOAL_OUTCOME_RATE_LIMITED;
    rep.tokens_used = u->input + u->output;
    rep.limit_requests = sig.limit_requests;
    rep.limit_tokens = sig.limit_tokens;
    rep.remaining_requests = sig.remaining_requests;
    rep.remaining_tokens = sig.remaining_tokens;
    rep.reset_ms = sig.remaining_requests == 0 ? sig.reset_requests_ms
                   : sig.remaining_tokens == 0 ? sig.reset_tokens_ms
                                               : -1;
    rep.hold_ms = oc == SHOAL_OUTCOME_RATE_LIMITED ? hold_ms : -1;
    shoal_fleet_report(r->fleet, t->model->index, &rep);
}

/* After a failed try that may succeed later: wait, then try again (on the
 * same model, or the next one of the chain once this one is used up). */
static void retry_later(struct runner *r, shoal_task_t *t, shoal_outcome_t oc, long retry_after_ms,
                        const char *why)
{
    if (drop_if_cancelled(r, t))
        return;
    int out_of_attempts = t->attempts >= t->max_attempts * (t->fallback + 1);
    if (out_of_attempts && !fall_back(r, t, why)) {
        snprintf(t->error, sizeof(t->error), "%.400s after %d attempt%s", why, t->attempts,
                 t->attempts == 1 ? "" : "s");
        finish(r, t, SHOAL_TASK_FAILED);
        return;
    }
    t->failures++;
    long wait = shoal_backoff_ms(&r->backoff, t->failures, retry_after_ms, &r->rand_state);
    double now = shoal_service_now_ms();
    if (now + (double)wait > t->deadline_ms) {
        /* a fallback model is tried at once, with no wait, while time is left */
        if (now <= t->deadline_ms && fall_back(r, t, why)) {
            route(r, t);
            return;
        }
        fail_deadline(r, t, why, NULL);
        return;
    }
    r->stats->retries++;
    shoal_wmetrics_retry(r->wm, t->model->index);
    shoal_log_info("task",
                   "retrying job_id=%s task_id=%s attempt=%d outcome=%s wait_ms=%ld why=\"%s\"",
                   t->job_id, t->task_id, t->attempts, shoal_outcome_name(oc), wait, why);
    t->due_ms = now + (double)wait;
    shoal_task_set_state(t, SHOAL_TASK_BACKOFF);
    if (timer_add(r, t) != 0)
        route(r, t);
}

/* Every call ends here: one classification (shoal_provider_outcome), then
 * one decision. */
static void on_reply(void *user, const shoal_http_reply_t *reply, void *arg)
{
    struct runner *r = arg;
    shoal_task_t *t = user;
    char attempt_id[200], why[512] = "";
    shoal_provider_reply_t out;
    double now = shoal_service_now_ms();

    shoal_outcome_t oc = shoal_provider_outcome(t->model, reply, &out, why, sizeof(why));
    int was_repair = t->repairing;
    if (was_repair)
        shoal_task_end_repair(t);
    /* An answer, but not the output the job asked for: one repair call,
     * then a failed attempt. */
    shoal_batchtask_answer_t ans;
    memset(&ans, 0, sizeof(ans));
    int invalid =
        oc == SHOAL_OUTCOME_OK &&
        (t->batch ? shoal_batchtask_read(t, out.content, t->model->alias, r->conf->worker_id, &ans,
                                         why, sizeof(why)) != SHOAL_OK
                  : shoal_task_check_output(t, out.content, why, sizeof(why)) != SHOAL_OK);
    if (invalid) {
        r->stats->invalid_outputs++;
        oc = SHOAL_OUTCOME_MALFORMED;
    }
    if (oc == SHOAL_OUTCOME_TRUNCATED)
        truncated_why(t, out.usage.output, why, sizeof(why));
    if (counts_attempt(oc) && !was_repair) /* a repair and its call are one attempt */
        t->attempts++;
    r->stats->calls++;
    long hold = -1;
    if (reply->retry_after_ms >= 0)
        hold = reply->retry_after_ms < r->backoff.retry_after_cap_ms
                   ? reply->retry_after_ms
                   : r->backoff.retry_after_cap_ms;
    if (oc == SHOAL_OUTCOME_RATE_LIMITED)
        r->stats->rate_limited++;
    shoal_wmetrics_call(r->wm, t->model->index, oc, reply->latency_ms / 1000.0, out.usage.input,
                        out.usage.output);
    shoal_wmetrics_connects(r->wm, t->model->index, reply->connects);
    /* What the provider's limit counted, for the fleet's token accounting. */
    shoal_usage_t charged = out.usage;
    charged.output = shoal_lane_charged_output(lane_of(r, t), t, out.usage.output);
    shoal_lane_ended(lane_of(r, t), t, lane_signal(oc),
                     oc == SHOAL_OUTCOME_OK || oc == SHOAL_OUTCOME_TRUNCATED ? &out.usage : NULL,
                     oc == SHOAL_OUTCOME_RATE_LIMITED ? hold : -1, now);
    report_call(r, t, reply, oc, &charged, hold);
    shoal_task_set_state(t, SHOAL_TASK_VALIDATING);

    int stopping = shoal_service_stopping();
    int done = oc == SHOAL_OUTCOME_OK;
    int repair = invalid && !was_repair && !stopping &&
                 shoal_task_begin_repair(t, out.content, why) == SHOAL_OK;
    /* A truncated answer is retried only when the job says so; else it
     * fails at once, keeping what it cost to one call. */
    int retriable = !done && (shoal_outcome_retriable(oc) || invalid ||
                              (oc == SHOAL_OUTCOME_TRUNCATED && !t->fail_truncated &&
                               grow_output_room(t, out.usage.output)));
    int more = retriable && !stopping &&
               (!counts_attempt(oc) || t->attempts < t->max_attempts * (t->fallback + 1));
    /* A reserved call's attempts row settles its reservation (same id). */
    if (t->reservation)
        snprintf(attempt_id, sizeof(attempt_id), "%s", t->reservation);
    else
        snprintf(attempt_id, sizeof(attempt_id), "%s/%lld/%llu", r->conf->worker_id, r->start_ms,
                 ++r->seq);
    free(t->reservation);
    t->reservation = NULL;
    shoal_log_debug("call",
                    "call ended job_id=%s task_id=%s model=%s attempt=%d status=%ld kind=%s "
                    "latency_ms=%.1f tokens_in=%ld tokens_out=%ld",
                    t->job_id, t->task_id, t->model->alias, t->attempts, reply->status,
                    shoal_outcome_name(oc), reply->latency_ms, out.usage.input, out.usage.output);
    shoal_task_call_t call = {.model = t->model,
                              .outcome = done   ? "ok"
                                         : more ? "retry"
                                                : "failed",
                              .kind = oc,
                              .error = why,
                              .usage = out.usage};
    size_t row_len = 0;
    char *row = shoal_task_attempt_text(t, attempt_id, r->conf->worker_id, reply, &call, &row_len);
    shoal_sink_add_attempt_text(r->sink, row, row_len);
    if (done) {
        t->tokens_in = out.usage.input;
        t->tokens_out = out.usage.output;
        if (t->batch) {
            free(out.content);
            batch_done(r, t, &ans);
            return;
        }
        t->output = out.content;
        finish(r, t, SHOAL_TASK_DONE);
        return;
    }
    free(out.content);
    if (repair) {
        r->stats->repairs++;
        shoal_log_info("task", "repairing output job_id=%s task_id=%s why=\"%s\"", t->job_id,
                       t->task_id, why);
        route(r, t);
        return;
    }
    if (!retriable) {
        fail(r, t, "%.480s", why);
        return;
    }
    if (stopping) {
        /* Leave the task unfinished; its message comes again. */
        held_drop(r, t);
        shoal_task_destroy(t);
        return;
    }
    retry_later(r, t, oc,
                oc == SHOAL_OUTCOME_RATE_LIMITED || oc == SHOAL_OUTCOME_OVERLOADED ? hold : -1,
                why);
}

/* ---- intake -------------------------------------------------------------- */

static int prio_of(struct runner *r, const char *topic)
{
    for (int p = 0; p < NPRIO; p++)
        if (!strcmp(topic, r->prio_topic[p]))
            return p;
    return NPRIO - 1;
}

/* A message that names its task and job but cannot run (an unknown model,
 * a prompt that cannot be rendered) is recorded failed with the reason, so
 * its job still ends; one that names nothing is only dead-lettered. */
static int record_unrunnable(struct runner *r, rd_kafka_message_t *m, const shoal_offset_ref_t *ref,
                             const char *err)
{
    char task_id[SHOAL_TASKMSG_ID_MAX], job_id[SHOAL_TASKMSG_ID_MAX];
    if (!shoal_taskmsg_ids(m->payload, m->len, task_id, sizeof(task_id), job_id, sizeof(job_id)) ||
        held_get(r, task_id))
        return 0;
    shoal_task_t *t = calloc(1, sizeof(*t));
    json_t *doc = json_pack("{s:s, s:s}", "task_id", task_id, "job_id", job_id);
    json_t *orig = json_loadb(m->payload, m->len, 0, NULL);
    if (!t || !doc) {
        free(t);
        json_decref(doc);
        json_decref(orig);
        return 0;
    }
    /* The model it names, for the result row, when it names one. */
    if (json_is_string(json_object_get(orig, "model")))
        json_object_set(doc, "model", json_object_get(orig, "model"));
    json_decref(orig);
    t->doc = doc;
    t->task_id = json_string_value(json_object_get(doc, "task_id"));
    t->job_id = json_string_value(json_object_get(doc, "job_id"));
    /* The chunk is the task id's last six digits (common/taskmsg.h). */
    size_t n = strlen(task_id);
    t->chunk = n > 6 ? strtol(task_id + n - 6, NULL, 10) : 0;
    t->prio = prio_of(r, rd_kafka_topic_name(m->rkt));
    shoal_task_add_ref(t, ref);
    held_put(r, t);
    fail(r, t, "cannot run this task: %s", err);
    return 1;
}

/* Queues a held task for the next database check; 0 when out of memory. */
static int check_later(struct runner *r, shoal_task_t *t)
{
    if (r->nunchecked == r->capunchecked) {
        size_t ncap = r->capunchecked ? r->capunchecked * 2 : CHECK_BATCH;
        shoal_task_t **n = realloc(r->unchecked, ncap * sizeof(*n));
        if (!n)
            return 0;
        r->unchecked = n;
        r->capunchecked = ncap;
    }
    r->unchecked[r->nunchecked++] = t;
    return 1;
}

/* Takes one message: tracks its position, then parks the task for the
 * database check (or attaches it to a live duplicate). */
static void take(struct runner *r, rd_kafka_message_t *m)
{
    char err[512];
    shoal_offset_ref_t ref;
    const char *topic = rd_kafka_topic_name(m->rkt);

    if (shoal_offsets_track(r->offsets, topic, m->partition, m->offset, &ref) != SHOAL_OK) {
        shoal_log_error("kafka", "out of memory tracking offsets");
        return;
    }
    shoal_task_t *t = shoal_task_parse(m->payload, m->len, r->conf->models, err, sizeof(err));
    if (!t) {
        r->stats->poison++;
        shoal_log_error("task", "cannot run a task message source=%s/%d@%lld error=\"%s\"", topic,
                        (int)m->partition, (long long)m->offset, err);
        if (!record_unrunnable(r, m, &ref, err)) {
            dead_letter(r, m->payload, m->len, NULL, err);
            shoal_offsets_done(r->offsets, &ref);
        }
        return;
    }
    shoal_task_t *live = held_get(r, t->task_id);
    if (live) {
        shoal_task_add_ref(live, &ref);
        shoal_task_destroy(t);
        return;
    }
    shoal_task_add_ref(t, &ref);
    t->prio = prio_of(r, topic);
    t->received_ms = shoal_service_now_ms();
    t->deadline_ms = t->received_ms + (double)r->conf->max_wait_ms;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    t->received_unix = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    /* The job's deadline is wall-clock time; on the monotonic clock it is as
     * far from now as it is on the wall clock now. The earlier one wins. */
    if (t->deadline_unix > 0) {
        double job_ms = t->received_ms + ((double)t->deadline_unix - t->received_unix) * 1000.0;
        if (job_ms < t->deadline_ms) {
            t->deadline_ms = job_ms;
            t->job_deadline = 1;
        }
    }
    held_put(r, t);
    if (!check_later(r, t)) {
        shoal_log_error("task", "out of memory");
        held_drop(r, t);
        shoal_task_destroy(t);
    }
}

/* Sends the taken tasks to the database check, which skips those already
 * finished (a redelivery after a crash or a rebalance) and tells how many
 * calls the others made already. Checks queued behind a running one go as
 * one (shoal_store_check). */
static void send_checks(struct runner *r)
{
    if (r->nunchecked == 0)
        return;
    for (size_t i = 0; i < r->nunchecked; i++) {
        shoal_task_set_state(r->unchecked[i], SHOAL_TASK_CHECKING);
        r->unchecked[i]->refs_checked = r->unchecked[i]->nrefs;
    }
    if (shoal_store_check(r->checker, r->unchecked, r->nunchecked) != SHOAL_OK) {
        shoal_log_error("db", "out of memory queueing a check");
        return;
    }
    r->nunchecked = 0;
}

static void on_checked(struct runner *r, const shoal_store_done_t *d)
{
    for (size_t i = 0; i < d->ntasks; i++) {
        shoal_task_t *t = d->tasks[i];
        const char *st = d->status ? d->status[i] : NULL;
        /* A delivery that came while the check ran may be newer than what
         * it read: `shoal resume` makes a failed task pending and publishes
         * it again. Released with the stale one, it would leave the task
         * queued with no call until the reconciler; look once more. */
        if (st && !strcmp(st, "failed") && t->nrefs > t->refs_checked) {
            shoal_task_set_state(t, SHOAL_TASK_TAKEN);
            if (check_later(r, t))
                continue;
        }
        if (st && (!strcmp(st, "done") || !strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
            r->stats->tasks_skipped++;
            release(r, t);
            continue;
        }
        t->attempts = d->attempts ? d->attempts[i] : 0;
        t->budgeted = d->budgeted ? d->budgeted[i] : 0;
        if (t->attempts >= t->max_attempts) {
            /* The calls of earlier deliveries used every attempt. */
            fail(r, t, "%s", "out of attempts (made by earlier deliveries of this task)");
            continue;
        }
        route(r, t);
    }
}

/* A sub-task the database just recorded: its message goes to the topic its
 * parent came from. A produce that fails is only logged: the row is
 * committed, and the reconciler publishes a sub-task nobody calls. */
static void produce_subtask(const char *task_id, const char *msg, size_t len, int prio, void *arg)
{
    struct runner *r = arg;
    char err[256];

    r->stats->subtasks++;
    if (shoal_kafka_produce(r->producer, r->prio_topic[prio], task_id, msg, len, NULL, err,
                            sizeof(err)) != SHOAL_OK)
        shoal_log_warn("task",
                       "could not publish a sub-task; the reconciler will task_id=%s error=\"%s\"",
                       task_id, err);
    else
        shoal_log_debug("task", "sub-task published task_id=%s", task_id);
}

static void on_written(struct runner *r, const shoal_store_done_t *d)
{
    /* after the commit: a crash before this leaves the sub-tasks recorded
     * and queued, for the reconciler */
    shoal_sink_take_subtasks(d->sink, produce_subtask, r);
    for (size_t i = 0; i < d->ntokens; i++)
        release(r, d->tokens[i]);
    r->unwritten -= (long)d->ntokens;
    r->stats->flushes++;
    shoal_wmetrics_db_write(r->wm, (shoal_service_now_ms() - r->write_started_ms) / 1000.0);
    shoal_log_debug("db", "results written results=%zu jobs_ended=%d", d->ntokens, d->jobs_ended);
    if (!r->spare)
        r->spare = d->sink;
    else
        shoal_sink_destroy(d->sink);
}

static void on_store(const shoal_store_done_t *d, void *arg)
{
    if (d->kind == SHOAL_STORE_CHECKED)
        on_checked(arg, d);
    else if (d->kind == SHOAL_STORE_CANCELLED)
        on_cancelled(arg, d);
    else if (d->kind == SHOAL_STORE_RESERVED)
        on_reserved(arg, d);
    else
        on_written(arg, d);
}

/* ---- offsets, flushing, backpressure -------------------------------------- */

static void store_one(const char *topic, int32_t partition, int64_t next, void *arg)
{
    rd_kafka_topic_partition_list_t *l = arg;
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = next;
}

static void store_offsets(struct runner *r)
{
    if (r->dlq_ack.pending > 0)
        return; /* dead letters must be in Kafka before their source moves on */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    shoal_offsets_commit_list(r->offsets, store_one, l);
    if (l->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_offsets_store(r->consumer, l);
        if (e && e != RD_KAFKA_RESP_ERR__STATE)
            shoal_log_warn("kafka", "could not store offsets error=\"%s\"", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* A sub-task of the leftovers in the sink: written with the results. */
static void add_subtask(shoal_split_sub_t *sub, void *arg)
{
    struct runner *r = arg;
    shoal_log_info("task", "items split off job_id=%s task_id=%s items=%zu", sub->job_id,
                   sub->task_id, sub->n_items);
    if (shoal_sink_add_subtask_text(r->sink, sub->task_id, sub->row, sub->row_len, sub->msg,
                                    sub->msg_len, sub->prio) != SHOAL_OK)
        shoal_log_error("task", "out of memory queueing a sub-task task_id=%s", sub->task_id);
    sub->row = sub->msg = NULL; /* the sink's now, or freed */
}

/* Hands the waiting rows to the database thread when the batch is full or
 * old enough (or always, with force); one write at a time. Leftovers of
 * batch tasks become sub-tasks of this write just before it goes. */
static void flush(struct runner *r, int force)
{
    size_t n = shoal_sink_results(r->sink), na = shoal_sink_attempts(r->sink);
    double now = shoal_service_now_ms();

    if (n + na == 0 || !r->spare || shoal_store_writes_pending(r->store) > 0)
        return;
    /* Every task held is finished: nothing more is coming to wait for. */
    int all_done = n > 0 && (long)n >= r->nheld;
    if (!force && !all_done && (long)n < r->conf->batch_size &&
        shoal_sink_bytes(r->sink) < BATCH_BYTES_MAX &&
        (n == 0 || now - r->first_result_ms < r->conf->flush_ms) &&
        na < 4 * (size_t)r->conf->batch_size)
        return;
    if (shoal_split_pending(r->split) > 0) {
        size_t dropped = 0;
        shoal_split_flush(r->split, add_subtask, r, &dropped);
        if (dropped)
            shoal_log_error("task",
                            "out of memory building sub-tasks; their items stay "
                            "unanswered sub_tasks=%zu",
                            dropped);
    }
    if (shoal_store_write(r->store, r->sink) != SHOAL_OK)
        return;
    r->write_started_ms = now; /* one write at a time: its completion is this one's */
    r->sink = r->spare;
    r->spare = NULL;
}

/* Tasks held that occupy the worker. Parked ones, waiting in a lane whose
 * model is cooling down, do not (up to a hard cap), so a model that hangs
 * cannot keep the worker from taking tasks for the others; nor do finished
 * ones waiting for their write (bounded by room_for), so calls go on while
 * results are written. */
static long busy(struct runner *r)
{
    double now = shoal_service_now_ms();
    long parked = 0;
    for (size_t i = 0; i < r->nlanes; i++)
        if (shoal_lane_cooling(r->lanes[i], now))
            parked += (long)shoal_lane_waiting(r->lanes[i]);
    return r->nheld - parked - r->unwritten;
}

/* Whether tasks of priority p may be taken now. */
static int room_for(struct runner *r, int p, long busy_now)
{
    const shoal_runner_conf_t *c = r->conf;
    if (shoal_service_stopping())
        return 0;
    if (r->nheld >= c->max_inflight * PARKED_FACTOR)
        return 0;
    if (r->unwritten >= 4 * c->batch_size)
        return 0; /* results wait for the database */
    /* High priority keeps a reserve above the limit, so a worker full of
     * lower tasks still takes it at once; low keeps a small share so a high
     * backlog never starves it. */
    if (p == 0 && r->held_prio[0] < c->max_inflight / 8 + 1)
        return busy_now < c->max_inflight + c->max_inflight / 8 + 1;
    if (p == NPRIO - 1 && r->held_prio[p] < c->max_inflight / 16 + 1)
        return busy_now < c->max_inflight + c->max_inflight / 16 + 1;
    return busy_now < c->max_inflight;
}

static void set_paused(struct runner *r, int p, int pause)
{
    if (r->paused[p] == pause || !r->assigned)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < r->assigned->cnt; i++)
        if (!strcmp(r->assigned->elems[i].topic, r->prio_topic[p]))
            rd_kafka_topic_partition_list_add(l, r->prio_topic[p], r->assigned->elems[i].partition);
    rd_kafka_resp_err_t e = l->cnt == 0 ? RD_KAFKA_RESP_ERR_NO_ERROR
                            : pause     ? rd_kafka_pause_partitions(r->consumer, l)
                                        : rd_kafka_resume_partitions(r->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        shoal_log_warn("kafka", "could not %s partitions topic=%s error=\"%s\"",
                       pause ? "pause" : "resume", r->prio_topic[p], rd_kafka_err2str(e));
        return;
    }
    r->paused[p] = pause;
    shoal_log_debug("kafka", "%s topic=%s held=%ld", pause ? "paused" : "resumed", r->prio_topic[p],
                    r->nheld);
}

/* Takes messages high priority first, as far as there is room, and pauses
 * the priorities that have none. The consumer itself is polled every pass
 * whatever happens, for rebalances and errors. */
static void take_messages(struct runner *r)
{
    rd_kafka_message_t *m;
    while ((m = rd_kafka_consumer_poll(r->consumer, 0)) != NULL) {
        if (!m->err)
            take(r, m);
        else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            shoal_log_warn("kafka", "consumer error error=\"%s\"", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
    }
    for (int p = 0; p < NPRIO; p++) {
        long b = busy(r);
        while (room_for(r, p, b) && (m = rd_kafka_consume_queue(r->prio_queue[p], 0)) != NULL) {
            if (!m->err)
                take(r, m);
            else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                shoal_log_warn("kafka", "consumer error error=\"%s\"", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            b++;
        }
        /* Pause only a lasting lack of room (the database away, a lane held
         * back): a pause drops the fetched messages and a resume fetches
         * them again, too costly for the moments a batch is being written. */
        double now = shoal_service_now_ms();
        if (room_for(r, p, busy(r))) {
            r->full_since[p] = 0;
            set_paused(r, p, 0);
        } else {
            if (r->full_since[p] == 0)
                r->full_since[p] = now;
            if (now - r->full_since[p] >= PAUSE_AFTER_MS)
                set_paused(r, p, 1);
        }
    }
}

/* Waits (bounded) until the results finished so far are durable. */
static void flush_now(struct runner *r, double timeout_ms)
{
    double deadline = shoal_service_now_ms() + timeout_ms;
    while (shoal_service_now_ms() < deadline) {
        shoal_store_poll(r->store, on_store, r);
        shoal_store_poll(r->checker, on_store, r);
        if (shoal_sink_results(r->sink) + shoal_sink_attempts(r->sink) == 0 &&
            shoal_store_writes_pending(r->store) == 0)
            return;
        flush(r, 1);
        usleep(5000);
    }
    shoal_log_warn("db", "results not yet durable when giving up waiting results=%zu",
                   shoal_sink_results(r->sink));
}

static void rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct runner *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        shoal_log_info("kafka", "partitions assigned count=%d", parts->cnt);
        rd_kafka_assign(rk, parts);
        /* librdkafka keeps a partition's pause across a revoke and a new
         * assignment to this consumer; r->paused starts at 0 below, so every
         * assigned partition must start resumed too. */
        rd_kafka_resume_partitions(rk, parts);
        /* Each partition feeds its priority's queue, read high first. */
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_queue_t *pq =
                rd_kafka_queue_get_partition(rk, parts->elems[i].topic, parts->elems[i].partition);
            if (pq) {
                rd_kafka_queue_forward(pq, r->prio_queue[prio_of(r, parts->elems[i].topic)]);
                rd_kafka_queue_destroy(pq);
            }
        }
        if (r->assigned)
            rd_kafka_topic_partition_list_destroy(r->assigned);
        r->assigned = rd_kafka_topic_partition_list_copy(parts);
        /* No pause right after an assignment either: librdkafka starts
         * fetching once the committed offsets arrive, and a pause whose
         * version overtakes that start drops it, leaving the partition
         * unfetched (a resume does not restart a stopped fetch) until the
         * next rebalance. A lack of room seen before counts from now. */
        for (int p = 0; p < NPRIO; p++) {
            r->paused[p] = 0;
            r->full_since[p] = 0;
        }
        return;
    }
    /* Write what is finished before the partitions go, so their new owner
     * finds those tasks done instead of calling the model again. */
    flush_now(r, 5000);
    store_offsets(r);
    for (int i = 0; i < parts->cnt; i++)
        shoal_offsets_forget(r->offsets, parts->elems[i].topic, parts->elems[i].partition);
    shoal_log_info("kafka", "partitions revoked count=%d", parts->cnt);
    if (r->assigned)
        rd_kafka_topic_partition_list_destroy(r->assigned);
    r->assigned = NULL;
    rd_kafka_assign(rk, NULL);
}

static void drain_wake(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

/* ---- setup and the loop ---------------------------------------------------- */

static shoal_err_t setup(struct runner *r, char *errbuf, size_t errlen)
{
    const shoal_runner_conf_t *c = r->conf;
    const char *topics[] = {c->topics->tasks_high, c->topics->tasks_normal, c->topics->tasks_low};
    struct timeval tv;

    gettimeofday(&tv, NULL);
    r->start_ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    r->rand_state = (unsigned)(tv.tv_usec ^ getpid());
    r->wake[0] = r->wake[1] = -1;
    shoal_backoff_init(&r->backoff);
    if (c->retry_after_cap_ms > 0)
        r->backoff.retry_after_cap_ms = c->retry_after_cap_ms;
    for (int p = 0; p < NPRIO; p++)
        r->prio_topic[p] = topics[p];
    /* Kafka and the database thread write to this pipe when something
     * arrives, waking curl_multi_poll. */
    if (pipe2(r->wake, O_NONBLOCK | O_CLOEXEC) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create a pipe");
    if (!(r->held = json_object()) || !(r->cancelled = json_object()) ||
        !(r->reserve_rows = json_array()) || !(r->release = json_array()) ||
        !(r->offsets = shoal_offsets_new()) || !(r->sink = shoal_sink_new(NULL)) ||
        !(r->spare = shoal_sink_new(NULL)) || !(r->split = shoal_split_new()))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    size_t nm = shoal_models_count(c->models);
    r->nlanes = nm;
    if (!(r->headers = calloc(nm ? nm : 1, sizeof(*r->headers))) ||
        !(r->lanes = calloc(nm ? nm : 1, sizeof(*r->lanes))))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    shoal_lane_conf_t lc;
    shoal_lane_conf_init(&lc);
    lc.max_concurrency = c->max_inflight;
    lc.start_concurrency = 8;
    for (size_t i = 0; i < nm; i++) {
        const shoal_model_t *m = shoal_models_at(c->models, i);
        if (!(r->headers[i] = shoal_provider_headers(m)) || !(r->lanes[i] = shoal_lane_new(m, &lc)))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    if (!(r->share_version = calloc(nm ? nm : 1, sizeof(*r->share_version))))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    if (!(r->fleet = shoal_fleet_new(c->pg, c->worker_id, c->models, NULL, errbuf, errlen)))
        return SHOAL_ERR_NOMEM;
    if (!(r->store = shoal_store_new(c->pg, r->wake[1], errbuf, errlen)) ||
        !(r->checker = shoal_store_new(c->pg, r->wake[1], errbuf, errlen)))
        return SHOAL_ERR_NOMEM;
    shoal_store_watch_cancels(r->checker, CANCEL_POLL_MS);
    if (!(r->http = shoal_http_new(on_reply, r, errbuf, errlen)))
        return SHOAL_ERR_NOMEM;
    if (c->metrics && !(r->wm = shoal_wmetrics_new(c->metrics, c->models)))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    if (!(r->producer = shoal_kafka_producer_new(c->bootstrap, c->kafka, errbuf, errlen)))
        return SHOAL_ERR_INVALID;
    if (!(r->consumer = shoal_kafka_consumer_new(c->bootstrap, c->group, c->kafka, topics, 3,
                                                 rebalance, r, errbuf, errlen)))
        return SHOAL_ERR_INVALID;
    r->main_queue = rd_kafka_queue_get_consumer(r->consumer);
    rd_kafka_queue_io_event_enable(r->main_queue, r->wake[1], "1", 1);
    for (int p = 0; p < NPRIO; p++) {
        if (!(r->prio_queue[p] = rd_kafka_queue_new(r->consumer)))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        rd_kafka_queue_io_event_enable(r->prio_queue[p], r->wake[1], "1", 1);
    }
    return SHOAL_OK;
}

static void teardown(struct runner *r)
{
    for (int p = 0; p < NPRIO; p++) {
        if (r->prio_queue[p]) {
            rd_kafka_queue_io_event_enable(r->prio_queue[p], -1, NULL, 0);
            rd_kafka_queue_destroy(r->prio_queue[p]);
        }
    }
    if (r->main_queue) {
        rd_kafka_queue_io_event_enable(r->main_queue, -1, NULL, 0);
        rd_kafka_queue_destroy(r->main_queue);
    }
    if (r->consumer) {
        rd_kafka_consumer_close(r->consumer);
        rd_kafka_destroy(r->consumer);
    }
    if (r->assigned)
        rd_kafka_topic_partition_list_destroy(r->assigned);
    if (r->producer) {
        rd_kafka_flush(r->producer, 10000);
        rd_kafka_destroy(r->producer);
    }
    shoal_http_destroy(r->http);   /* abandons calls still running */
    shoal_store_destroy(r->store); /* drops writes not done: their messages come again */
    shoal_store_destroy(r->checker);
    shoal_fleet_destroy(r->fleet); /* gives this worker's shares back */
    free(r->share_version);
    /* Tasks still held were never made durable: their messages come again. */
    const char *k;
    json_t *v;
    json_object_foreach(r->held, k, v)
        shoal_task_destroy((shoal_task_t *)(intptr_t)json_integer_value(v));
    json_decref(r->held);
    json_decref(r->cancelled);
    json_decref(r->reserve_rows);
    json_decref(r->release);
    free(r->reserving);
    free(r->unchecked);
    free(r->timers);
    for (size_t i = 0; i < r->nlanes; i++) {
        if (r->headers)
            curl_slist_free_all(r->headers[i]);
        if (r->lanes)
            shoal_lane_destroy(r->lanes[i]);
    }
    free(r->headers);
    free(r->lanes);
    shoal_wmetrics_destroy(r->wm);
    shoal_sink_destroy(r->sink);
    shoal_sink_destroy(r->spare);
    shoal_split_destroy(r->split);
    shoal_offsets_destroy(r->offsets);
    if (r->wake[0] >= 0)
        close(r->wake[0]);
    if (r->wake[1] >= 0)
        close(r->wake[1]);
}

/* Applies the fleet's current shares to the lanes, and every 200 ms tells
 * the fleet what each lane could use: its waiting and running calls over
 * the next second. */
static void sync_fleet(struct runner *r)
{
    double now = shoal_service_now_ms();
    int report = now - r->reported_ms >= 200;
    for (size_t i = 0; i < r->nlanes; i++) {
        shoal_fleet_share_t sh;
        shoal_fleet_share(r->fleet, i, &sh);
        if (sh.version != r->share_version[i]) {
            const shoal_model_t *m = shoal_lane_model(r->lanes[i]);
            r->share_version[i] = sh.version;
            shoal_lane_set_rates(r->lanes[i], sh.rps, sh.tps, now);
            /* Separate input and output limits take this worker's part of the
             * fleet as its request or token share shows it, else an equal part. */
            double part = sh.limit_rps > 0 && sh.rps > 0 ? sh.rps / sh.limit_rps
                          : sh.limit_tps > 0 && sh.tps > 0
                              ? sh.tps / sh.limit_tps
                              : 1.0 / (sh.workers > 0 ? sh.workers : 1);
            shoal_lane_set_io_rates(r->lanes[i], (double)m->input_tpm / 60.0 * part,
                                    (double)m->output_tpm / 60.0 * part, now);
            shoal_log_debug("fleet", "share model=%s rps=%.3f tps=%.1f workers=%d learned=%d",
                            shoal_lane_model(r->lanes[i])->alias, sh.rps, sh.tps, sh.workers,
                            sh.learned);
        }
        double hold = shoal_fleet_hold_ms(&sh);
        if (hold > 0)
            shoal_lane_hold(r->lanes[i], now + hold);
        if (report) {
            shoal_fleet_report_t rep;
            shoal_fleet_report_init(&rep);
            double want =
                (double)shoal_lane_waiting(r->lanes[i]) + (double)shoal_lane_in_flight(r->lanes[i]);
            rep.demand_rps = want;
            rep.demand_tps = want * (double)shoal_lane_avg_tokens(r->lanes[i]);
            shoal_fleet_report(r->fleet, i, &rep);
        }
    }
    if (report)
        r->reported_ms = now;
}

/* Refreshes the gauges a few times a second: lane and fleet state, and the
 * tasks held by state (a walk over them, hence not on every pass). */
static void update_metrics(struct runner *r)
{
    double now = shoal_service_now_ms();
    long counts[SHOAL_TASK_FAILED + 1] = {0};
    const char *key;
    json_t *v;

    if (!r->wm || now - r->metrics_ms < METRICS_EVERY_MS)
        return;
    r->metrics_ms = now;
    for (size_t i = 0; i < r->nlanes; i++) {
        shoal_fleet_share_t sh;
        shoal_fleet_share(r->fleet, i, &sh);
        shoal_wmetrics_lane(r->wm, i, r->lanes[i], &sh, now);
    }
    json_object_foreach(r->held, key, v)
    {
        const shoal_task_t *t = (const shoal_task_t *)(intptr_t)json_integer_value(v);
        if ((int)t->state >= 0 && t->state <= SHOAL_TASK_FAILED)
            counts[t->state]++;
    }
    shoal_wmetrics_tasks(r->wm, counts);
}

/* Moves BACKOFF tasks whose time came back to their lanes; returns ms until
 * the next one is due (-1: none). */
static double wake_timers(struct runner *r)
{
    double now = shoal_service_now_ms();
    while (r->ntimers > 0 && r->timers[0]->due_ms <= now)
        route(r, timer_pop(r));
    return r->ntimers > 0 ? r->timers[0]->due_ms - now : -1;
}

static void one_pass(struct runner *r)
{
    const shoal_runner_conf_t *conf = r->conf;
    char errbuf[256];

    /* Finished database work first: written results free room to take, and
     * nothing else frees room, so after this pass's take the loop may sleep
     * until something wakes it. */
    shoal_store_poll(r->store, on_store, r);
    shoal_store_poll(r->checker, on_store, r);
    take_messages(r);
    send_checks(r);
    double wait = 200, w;
    if ((w = wake_timers(r)) >= 0 && w < wait)
        wait = w;
    abandon_down_lanes(r);
    expire_waiting(r);
    sync_fleet(r);
    if ((w = dispatch(r)) >= 0 && w < wait)
        wait = w;
    send_reserves(r);
    update_metrics(r);
    flush(r, 0);
    /* A write in progress wakes the loop when it ends; only an idle store
     * makes the age of the batch a reason to wake. */
    if (shoal_sink_results(r->sink) > 0 && r->spare && shoal_store_writes_pending(r->store) == 0) {
        double due = r->first_result_ms + (double)conf->flush_ms - shoal_service_now_ms();
        if (due < wait)
            wait = due < 0 ? 0 : due;
    }
    if (shoal_http_run(r->http, (int)(wait + 0.999), r->wake[0], errbuf, sizeof(errbuf)) !=
        SHOAL_OK)
        shoal_log_error("http", "transfer loop failed error=\"%s\"", errbuf);
    drain_wake(r->wake[0]);
    rd_kafka_poll(r->producer, 0);
    store_offsets(r);
}

shoal_err_t shoal_runner_run(const shoal_runner_conf_t *conf, shoal_runner_stats_t *stats,
                             char *errbuf, size_t errlen)
{
    struct runner r;
    shoal_err_t err;

    memset(&r, 0, sizeof(r));
    memset(stats, 0, sizeof(*stats));
    r.conf = conf;
    r.stats = stats;
    if ((err = setup(&r, errbuf, errlen)) != SHOAL_OK) {
        teardown(&r);
        return err;
    }
    shoal_log_info("main", "worker started worker_id=%s max_inflight=%ld", conf->worker_id,
                   conf->max_inflight);

    while (!shoal_service_stopping())
        one_pass(&r);

    /* Stop: take nothing more, let running calls end within the grace
     * period, write what is done. Waiting tasks are left: not committed,
     * their messages come again. */
    shoal_log_info("main", "worker stopping held=%ld in_flight=%d", r.nheld,
                   shoal_http_pending(r.http));
    shoal_service_shutdown_deadline((unsigned)(conf->grace_ms / 1000) + 30);
    for (int p = 0; p < NPRIO; p++)
        set_paused(&r, p, 1);
    double deadline = shoal_service_now_ms() + (double)conf->grace_ms;
    while (shoal_http_pending(r.http) > 0 && shoal_service_now_ms() < deadline) {
        shoal_http_run(r.http, 100, r.wake[0], errbuf, errlen);
        drain_wake(r.wake[0]);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r.consumer, 0);
        if (m)
            rd_kafka_message_destroy(m); /* not taken: it comes again */
        shoal_store_poll(r.store, on_store, &r);
        shoal_store_poll(r.checker, on_store, &r);
    }
    flush_now(&r, 10000);
    shoal_kafka_ack_wait(r.producer, &r.dlq_ack, 10000, NULL, 0);
    store_offsets(&r);
    teardown(&r);
    shoal_log_info("main", "worker stopped done=%ld failed=%ld skipped=%ld calls=%ld",
                   stats->tasks_done, stats->tasks_failed, stats->tasks_skipped, stats->calls);
    return SHOAL_OK;
}
