/*
 * Fleet-wide rate limits on a throwaway PostgreSQL: shoal.fleet_lease driven
 * directly with SQL (one worker alone gets the whole limit; workers split it
 * by demand, max-min fair, and the unexpired grants never sum above the limit
 * at any point of a join sequence; an expired lease's share returns; a 429
 * sets a fleet-wide hold the other worker sees and lowers the learned rate
 * once per interval; decisions wait for enough calls and allow for the
 * window's size against the noise level; a header limit replaces the
 * configured one), then the worker/fleet thread API (three handles converge
 * to thirds; a 429 report holds the other handle; a learned limit survives a
 * new handle; an unreachable store gives the documented conservative shares;
 * destroy removes the leases).
 */
#include "worker/fleet.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack/pgcluster.h"
#include "common/log.h"
#include "common/pg.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"
#include "tests/support/testdb.h"

#define assert_near(a, b, tol)                                                                     \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (fabs(a_ - b_) > (tol))                                                                 \
            test_fail("%s ~= %s: %.6f != %.6f", #a, #b, a_, b_);                                   \
    } while (0)

static shoal_pgcluster_t *cluster;
static shoal_pg_t *pg;

/* Model aliases and their configured rpm (0 = none); the thread tests use
 * these, the SQL tests use names of their own. */
static const char models_text[] =
    "{\"models\": {"
    "\"trio\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:9/v1\","
    " \"model\": \"m\", \"rpm\": 600},"
    "\"held\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:9/v1\","
    " \"model\": \"m\", \"rpm\": 600},"
    "\"open\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:9/v1\","
    " \"model\": \"m\"},"
    "\"down\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:9/v1\","
    " \"model\": \"m\", \"rpm\": 600, \"tpm\": 60000}}}";
enum { M_TRIO, M_HELD, M_OPEN, M_DOWN };
static shoal_models_t *models;

/* One call of shoal.fleet_lease for one model; returns the model's answer
 * (caller decrefs). row is a JSON object without the model. */
static json_t *lease(const char *worker, int ttl_ms, const char *model, const char *row)
{
    char err[512], ttl[16], rows[1024];
    snprintf(ttl, sizeof(ttl), "%d", ttl_ms);
    snprintf(rows, sizeof(rows), "[{\"model\": \"%s\", %s}]", model, row);
    const char *params[] = {worker, ttl, rows};
    PGresult *r;
    if (shoal_pg_exec(pg, "SELECT shoal.fleet_lease($1, $2::int, $3::jsonb)", 3, params, &r, err,
                      sizeof(err)) != SHOAL_OK)
        test_fail("fleet_lease: %s", err);
    json_error_t jerr;
    json_t *doc = json_loads(PQgetvalue(r, 0, 0), 0, &jerr);
    PQclear(r);
    json_t *o = json_incref(json_object_get(doc, model));
    json_decref(doc);
    if (!json_is_object(o))
        test_fail("no answer for %s", model);
    return o;
}

static double field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        test_fail("%s is not a number", key);
    return json_number_value(v);
}

/* The granted rate of one call; -1 when there is no limit (NULL). */
static double grant(const char *worker, int ttl_ms, const char *model, const char *row)
{
    json_t *o = lease(worker, ttl_ms, model, row);
    double g = json_is_null(json_object_get(o, "granted_rps")) ? -1 : field(o, "granted_rps");
    json_decref(o);
    return g;
}

static double sql_double(const char *sql, const char *p1)
{
    char v[64];
    sqlcheck_text(pg, sql, p1, v, sizeof(v));
    if (!strcmp(v, "NULL"))
        test_fail("%s: NULL", sql);
    return strtod(v, NULL);
}

/* Sum of unexpired grants of a model, as the rule is stated. */
static double granted_sum(const char *model)
{
    return sql_double("SELECT coalesce(sum(granted_rps), 0) FROM shoal.leases"
                      " WHERE model = $1 AND expires_at > clock_timestamp()",
                      model);
}

#define assert_within_limit(model, limit)                                                          \
    do {                                                                                           \
        double s_ = granted_sum(model);                                                            \
        if (s_ > (limit) + 1e-9)                                                                   \
            test_fail("grants of %s sum to %.6f, above the limit %.6f", model, s_,                 \
                      (double)(limit));                                                            \
    } while (0)

/* The pure pieces: max-min fair shares and the decrease rule. */
static void test_functions(void)
{
    /* Alone: the whole limit; light demands get their demand and a third
     * of the spare each; heavy ones share what the light ones leave. */
    assert_near(sql_double("SELECT shoal.fleet_fair_share(10, 100, '{}')", NULL), 10, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_fair_share(10, 1, '{0,0}')", NULL), 4, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_fair_share(10, 100, '{100,1}')", NULL), 4.5, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_fair_share(10, 1, '{100,100}')", NULL), 1, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_fair_share(10, NULL, '{NULL}')", NULL), 5, 1e-9);
    /* A few refusals: times 0.85; many: times the accepted share, at most
     * halving; no limit yet: half the served rate, or still none. */
    assert_near(sql_double("SELECT shoal.fleet_decrease(10, 3, 0.1)", NULL), 8.5, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_decrease(10, 3, 0.3)", NULL), 7, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_decrease(10, 3, 0.9)", NULL), 5, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_decrease(NULL, 7, 0.9)", NULL), 3.5, 1e-9);
    char v[16];
    sqlcheck_text(pg, "SELECT shoal.fleet_decrease(NULL, 0, 1)", NULL, v, sizeof(v));
    assert_str_eq(v, "NULL");
    /* Limits: a header replaces the configuration, learning only lowers. */
    assert_near(sql_double("SELECT shoal.fleet_limit(1200, 600, NULL)", NULL), 20, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_limit(NULL, 600, 3)", NULL), 3, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_limit(NULL, 600, 30)", NULL), 10, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_limit(NULL, 0, 4)", NULL), 4, 1e-9);
}

static void test_alone(void)
{
    json_t *o = lease("w1", 3000, "solo", "\"rpm\": 600, \"demand_rps\": 2");
    /* Alone: its demand plus all the spare, i.e. the whole limit. */
    assert_near(field(o, "granted_rps"), 10, 1e-9);
    assert_near(field(o, "limit_rps"), 10, 1e-9);
    assert_int_eq(field(o, "workers"), 1);
    assert_str_eq(json_string_value(json_object_get(o, "source")), "config");
    assert_true(json_is_null(json_object_get(o, "granted_tps")));
    json_decref(o);
    /* No limit known at all: no grant, i.e. no limit. */
    o = lease("w1", 3000, "nolimit", "\"demand_rps\": 5");
    assert_true(json_is_null(json_object_get(o, "granted_rps")));
    assert_true(json_is_null(json_object_get(o, "limit_rps")));
    json_decref(o);
}

static void test_split_join(void)
{
    const char *busy = "\"rpm\": 600, \"demand_rps\": 100";
    const char *light = "\"rpm\": 600, \"demand_rps\": 2";

    assert_near(grant("a", 3000, "split", busy), 10, 1e-9);
    assert_within_limit("split", 10);
    /* A newcomer gets only what the unexpired leases leave: nothing yet. */
    assert_near(grant("b", 3000, "split", busy), 0, 1e-9);
    assert_within_limit("split", 10);
    /* Shares move towards fairness as each refreshes; the sum holds at every
     * step, also when a third worker joins mid-way. */
    const char *order[] = {"a", "b", "a", "c", "b", "a", "c", "b", "c", "a", "b", "c"};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        grant(order[i], 3000, "split", !strcmp(order[i], "a") ? light : busy);
        assert_within_limit("split", 10);
    }
    /* Max-min fair: the light worker gets its 2, the busy ones share 8. */
    assert_near(grant("a", 3000, "split", light), 2, 1e-9);
    assert_near(grant("b", 3000, "split", busy), 4, 1e-9);
    assert_near(grant("c", 3000, "split", busy), 4, 1e-9);
    assert_within_limit("split", 10);

    /* Demands below the limit: each gets its demand plus an equal part of
     * the spare (1 + 2 + 3 = 6, spare 4). Shrinking ones first, so the
     * others find the room. */
    for (int round = 0; round < 3; round++) {
        grant("a", 3000, "split2", "\"rpm\": 600, \"demand_rps\": 1");
        grant("b", 3000, "split2", "\"rpm\": 600, \"demand_rps\": 2");
        grant("c", 3000, "split2", "\"rpm\": 600, \"demand_rps\": 3");
        assert_within_limit("split2", 10);
    }
    assert_near(grant("a", 3000, "split2", "\"rpm\": 600, \"demand_rps\": 1"), 1 + 4.0 / 3, 1e-9);
    assert_near(grant("b", 3000, "split2", "\"rpm\": 600, \"demand_rps\": 2"), 2 + 4.0 / 3, 1e-9);
    assert_near(grant("c", 3000, "split2", "\"rpm\": 600, \"demand_rps\": 3"), 3 + 4.0 / 3, 1e-9);

    /* The operators' view agrees. */
    assert_int_eq(
        sqlcheck_long(pg, "SELECT live_workers FROM shoal.lane_status WHERE model = $1", "split"),
        3);
    assert_near(sql_double("SELECT granted_rps FROM shoal.lane_status WHERE model = $1", "split"),
                10, 1e-9);
}

static void test_expiry(void)
{
    const char *busy = "\"rpm\": 600, \"demand_rps\": 100";

    grant("a", 1500, "exp", busy);
    grant("b", 1500, "exp", busy);
    grant("a", 1500, "exp", busy);
    assert_near(grant("b", 1500, "exp", busy), 5, 1e-9);
    /* b dies: a keeps half while b's lease lives, then gets it all back. */
    assert_near(grant("a", 1500, "exp", busy), 5, 1e-9);
    assert_wait(grant("a", 1500, "exp", busy) > 9.999, 5, "a's share to return to the whole limit");
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.leases WHERE model = $1", "exp"),
                  1);
}

static long decreases(const char *model)
{
    return sqlcheck_long(pg, "SELECT decreases FROM shoal.lanes WHERE model = $1", model);
}

static void test_429(void)
{
    const char *busy = "\"rpm\": 600, \"demand_rps\": 100, \"sent\": 10, \"ok\": 10";
    const char *refused = "\"rpm\": 600, \"demand_rps\": 100, \"sent\": 10, \"ok\": 9, "
                          "\"rate_limited\": 1";

    grant("a", 3000, "lim", busy);
    grant("b", 3000, "lim", busy);
    assert_int_eq(decreases("lim"), 0);
    /* a reports a 429 without any header: within a window the lane lowers
     * its learned rate below the configured 10/s and holds the fleet. */
    assert_wait((grant("a", 3000, "lim", refused), decreases("lim") == 1), 5, "the first decrease");
    double learned = sql_double("SELECT learned_rps FROM shoal.lanes WHERE model = $1", "lim");
    assert_near(learned, 8.5, 1e-9);
    /* b's next refresh sees the hold and the learned limit. */
    json_t *o = lease("b", 3000, "lim", busy);
    assert_true(field(o, "hold_ms") > 0);
    assert_true(field(o, "hold_until") > 0);
    assert_near(field(o, "limit_rps"), 8.5, 1e-9);
    assert_str_eq(json_string_value(json_object_get(o, "source")), "learned");
    assert_true(json_is_true(json_object_get(o, "learned")));
    json_decref(o);
    /* More 429s right away (calls sent before the decrease) lower nothing
     * within the interval (checked only if this machine was quick enough to
     * send them within it). */
    const char *since_first = "SELECT extract(epoch FROM clock_timestamp() - last_decrease_at)"
                              " FROM shoal.lanes WHERE model = $1";
    for (int i = 0; i < 5; i++)
        grant("b", 3000, "lim", refused);
    if (sql_double(since_first, "lim") < 1.0) {
        assert_int_eq(decreases("lim"), 1);
        assert_near(sql_double("SELECT learned_rps FROM shoal.lanes WHERE model = $1", "lim"), 8.5,
                    1e-9);
    }
    double first = sql_double("SELECT extract(epoch FROM last_decrease_at) FROM shoal.lanes"
                              " WHERE model = $1",
                              "lim");
    /* A larger refused share lowers it again, once the interval has passed,
     * by the share refused (at most to half). */
    const char *storm = "\"rpm\": 600, \"demand_rps\": 100, \"sent\": 10, \"ok\": 5, "
                        "\"rate_limited\": 5";
    assert_wait((grant("a", 3000, "lim", storm), decreases("lim") >= 2), 5, "the second decrease");
    assert_int_eq(decreases("lim"), 2);
    /* (the window also holds some of the 10% reports: the share is between) */
    double after = sql_double("SELECT learned_rps FROM shoal.lanes WHERE model = $1", "lim");
    assert_true(after >= 8.5 * 0.5 - 1e-9 && after < 8.5 * 0.85 - 0.1);
    double second = sql_double("SELECT extract(epoch FROM last_decrease_at) FROM shoal.lanes"
                               " WHERE model = $1",
                               "lim");
    assert_true(second - first >= 1.0);
    /* Now the levels below refuse 10% again, at least half the share of
     * the levels above: not the limit speaking. It becomes the lane's noise
     * level, the last cut is undone, and nothing lowers the rate again. */
    assert_wait((grant("a", 3000, "lim", refused),
                 sql_double("SELECT noise_share FROM shoal.lanes WHERE model = $1", "lim") > 0.05),
                5, "the noise level");
    long at_noise = decreases("lim");
    assert_true(at_noise >= 2 && at_noise <= 4);
    double low = sql_double("SELECT learned_rps FROM shoal.lanes WHERE model = $1", "lim");
    double until = check_now_s() + 2.5;
    while (check_now_s() < until)
        grant("a", 3000, "lim", refused);
    assert_int_eq(decreases("lim"), at_noise);
    assert_true(sql_double("SELECT learned_rps FROM shoal.lanes WHERE model = $1", "lim") >= low);
    assert_true(sql_double("SELECT noise_share FROM shoal.lane_status WHERE model = $1", "lim") >
                0.05);
    assert_true(sqlcheck_long(pg,
                              "SELECT count(*) FROM shoal.lane_status WHERE model = $1"
                              " AND limit_source = 'learned' AND last_429_at IS NOT NULL",
                              "lim") == 1);

    /* A Retry-After reported by one worker holds the others as long. */
    o = lease("a", 3000, "ra", "\"rpm\": 600, \"hold_ms\": 5000");
    json_decref(o);
    o = lease("b", 3000, "ra", "\"rpm\": 600");
    assert_true(field(o, "hold_ms") > 4000 && field(o, "hold_ms") <= 5000);
    json_decref(o);

    /* Unknown limit: the first 429 starts from half the rate actually served
     * (slow start before it: no limit; the window may hold a burst). */
    o = lease("a", 3000, "slow", "\"sent\": 50, \"ok\": 50");
    assert_true(json_is_null(json_object_get(o, "granted_rps")));
    json_decref(o);
    assert_wait((grant("a", 3000, "slow", "\"sent\": 20, \"ok\": 15, \"rate_limited\": 5") > 0 &&
                 decreases("slow") == 1),
                5, "slow start to end");
    double served = sql_double("SELECT served_rps FROM shoal.lanes WHERE model = $1", "slow");
    assert_near(sql_double("SELECT learned_rps FROM shoal.lanes WHERE model = $1", "slow"),
                served * 0.5, 1e-9);
}

/* 2026-01-01 00:00:00 UTC, where window_after's windows start. */
#define T0 1767225600.0

/* One closing of the window of a lane given as JSON (fields of shoal.lanes,
 * the window started at 2026-01-01 00:00:00 UTC), p_now that many seconds
 * later, with the fleet's demand; returns `out`, an expression over the
 * lane's fields (-1 for NULL). */
static double window_after(const char *lane, double seconds, double demand, const char *out)
{
    char sql[1024], sec[32], v[64];
    snprintf(sec, sizeof(sec), "%.3f", seconds);
    snprintf(sql, sizeof(sql),
             "SELECT %s FROM shoal.fleet_window(jsonb_populate_record(NULL::shoal.lanes,"
             " '{\"model\": \"w\", \"config_rpm\": 0, \"config_tpm\": 0, \"pending_429\": 0,"
             " \"noise_share\": 0, \"win_start\": \"2026-01-01T00:00:00Z\", \"win_sent\": 0,"
             " \"win_ok\": 0, \"win_429\": 0, \"win_tokens\": 0, \"decreases\": 0,"
             " \"level_sent\": 0, \"level_429\": 0, \"probe_sent\": 0}'::jsonb"
             " || '%s'::jsonb),"
             " '2026-01-01T00:00:00Z'::timestamptz + $1::double precision * interval '1 second',"
             " %.3f)",
             out, lane, demand);
    sqlcheck_text(pg, sql, sec, v, sizeof(v));
    return strcmp(v, "NULL") ? strtod(v, NULL) : -1;
}

/* Decisions rest on enough calls: a 429 among a handful waits for ten
 * calls (or 5 s), then starts measuring the rate as it is; only a window
 * far over cuts at once; the noise level allows for the window's size; the
 * rate grows back while the fleet has more work than it allows, even when
 * holds kept it from sending; an empty window starts at the reporting
 * worker's previous refresh. */
static void test_evidence(void)
{
    /* One 429 in three calls: not yet decided after 1.5 s; after 5 the
     * rate is measured as it is, not cut. */
    const char *few = "{\"learned_rps\": 10, \"pending_429\": 1, \"win_sent\": 3,"
                      " \"win_ok\": 2, \"win_429\": 1}";
    assert_near(window_after(few, 1.5, 0, "learned_rps"), 10, 1e-9);
    assert_near(window_after(few, 1.5, 0, "win_sent"), 3, 1e-9);
    assert_near(window_after(few, 1.5, 0, "extract(epoch FROM level_at)"), -1, 1e-9);
    assert_near(window_after(few, 5.5, 0, "learned_rps"), 10, 1e-9);
    assert_near(window_after(few, 5.5, 0, "decreases"), 0, 1e-9);
    assert_near(window_after(few, 5.5, 0, "extract(epoch FROM level_at)"), T0 + 5.5, 1e-6);
    assert_near(window_after(few, 5.5, 0, "win_sent"), 0, 1e-9);
    /* Ten calls, one 429: measured too. Five of ten: cut at once, by the
     * share refused (at most to half). */
    const char *ten = "{\"learned_rps\": 10, \"pending_429\": 1, \"win_sent\": 10,"
                      " \"win_ok\": 9, \"win_429\": 1}";
    assert_near(window_after(ten, 1.5, 0, "learned_rps"), 10, 1e-9);
    assert_near(window_after(ten, 1.5, 0, "extract(epoch FROM level_at)"), T0 + 1.5, 1e-6);
    const char *half = "{\"learned_rps\": 10, \"pending_429\": 5, \"win_sent\": 10,"
                       " \"win_ok\": 5, \"win_429\": 5}";
    assert_near(window_after(half, 1.5, 0, "learned_rps"), 5, 1e-9);
    assert_near(window_after(half, 1.5, 0, "decreases"), 1, 1e-9);
    assert_near(window_after(half, 1.5, 0, "extract(epoch FROM level_at)"), T0 + 1.5, 1e-6);
    /* A lane with no rate at all: 30 of 100 calls over 2 s are cut to half
     * what was served, as each worker holds itself after a 429 on such a
     * lane (measuring "no limit" would measure those clamps). */
    const char *blind = "{\"pending_429\": 30, \"win_sent\": 100, \"win_ok\": 70,"
                        " \"win_429\": 30}";
    assert_near(window_after(blind, 2, 0, "learned_rps"), 17.5, 1e-9);
    assert_near(window_after(blind, 2, 0, "decreases"), 1, 1e-9);
    assert_near(window_after(blind, 2, 0, "extract(epoch FROM level_at)"), T0 + 2, 1e-6);

    /* Noise of 15%: 3 of 10 is chance (bound 0.386), 30 of 100 is not
     * (bound 0.231), but on a noisy lane one window only starts a
     * measurement. */
    assert_near(sql_double("SELECT shoal.fleet_noise_bound(0.15, 10)", NULL),
                0.15 + 2 * sqrt(0.15 * 0.85 / 10) + 0.01, 1e-9);
    assert_near(sql_double("SELECT shoal.fleet_noise_bound(0, 3)", NULL), 0.01, 1e-9);
    const char *chance = "{\"learned_rps\": 10, \"noise_share\": 0.15, \"pending_429\": 3,"
                         " \"win_sent\": 10, \"win_ok\": 7, \"win_429\": 3}";
    assert_near(window_after(chance, 1.5, 0, "learned_rps"), 10, 1e-9);
    assert_near(window_after(chance, 1.5, 0, "extract(epoch FROM level_at)"), -1, 1e-9);
    const char *excess = "{\"learned_rps\": 10, \"noise_share\": 0.15, \"pending_429\": 30,"
                         " \"win_sent\": 100, \"win_ok\": 70, \"win_429\": 30}";
    assert_near(window_after(excess, 1.5, 0, "learned_rps"), 10, 1e-9);
    assert_near(window_after(excess, 1.5, 0, "extract(epoch FROM level_at)"), T0 + 1.5, 1e-6);

    /* Three calls in 1.5 s against a learned 10/s: with 50 tasks of demand
     * the rate grows (2%), with 5 it stays. */
    const char *held = "{\"learned_rps\": 10, \"win_sent\": 3, \"win_ok\": 3}";
    assert_near(window_after(held, 1.5, 50, "learned_rps"), 10.2, 1e-9);
    assert_near(window_after(held, 1.5, 5, "learned_rps"), 10, 1e-9);

    /* The empty window of a fresh lane; the worker refreshes 0.3 s later,
     * then reports calls: the window starts at that refresh (checked when
     * this machine was quick enough that the window had not closed anyway). */
    grant("e", 3000, "evid", "\"sent\": 0");
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep(&pause, NULL);
    grant("e", 3000, "evid", "\"sent\": 0");
    double prev = sql_double("SELECT extract(epoch FROM updated_at) FROM shoal.leases"
                             " WHERE worker_id = 'e' AND model = $1",
                             "evid");
    double start = sql_double("SELECT extract(epoch FROM win_start) FROM shoal.lanes"
                              " WHERE model = $1",
                              "evid");
    grant("e", 3000, "evid", "\"sent\": 5, \"ok\": 5");
    double after = sql_double("SELECT extract(epoch FROM win_start) FROM shoal.lanes"
                              " WHERE model = $1",
                              "evid");
    if (start < prev - 0.2 &&
        sqlcheck_long(pg, "SELECT win_sent FROM shoal.lanes WHERE model = $1", "evid") == 5)
        assert_near(after, prev, 1e-6);
}

/* A level is a rate held while its calls are pooled: clean, it ends and
 * the rate grows; refused more than noise allows, the rate is cut and the
 * next level compared with it; refused as often 0.85x lower, it is noise;
 * far over, it is cut before it is complete. */
/* A level at 8.5/s, 5 of its 45 calls refused (the last in a window of 10
 * closing now), after levels at 10/s that refused probe_share of
 * probe_sent calls. */
static const char *below_levels(char *buf, size_t len, double probe_share, int probe_sent)
{
    snprintf(buf, len,
             "{\"learned_rps\": 8.5, \"level_at\": \"2026-01-01T00:00:00Z\","
             " \"probe_rps\": 10, \"probe_share\": %g, \"probe_sent\": %d,"
             " \"level_sent\": 35, \"level_429\": 4, \"pending_429\": 1,"
             " \"win_sent\": 10, \"win_ok\": 9, \"win_429\": 1}",
             probe_share, probe_sent);
    return buf;
}

static void test_levels(void)
{
    char buf_same[512], buf_few_above[512], buf_fell[512];
    /* 35 calls with one 429 so far, ten more clean ones after 1.5 s. */
    const char *clean = "{\"learned_rps\": 10, \"level_at\": \"2026-01-01T00:00:00Z\","
                        " \"level_sent\": 35, \"level_429\": 1, \"win_sent\": 10, \"win_ok\": 10}";
    assert_near(window_after(clean, 1.5, 50, "extract(epoch FROM level_at)"), -1, 1e-9);
    assert_near(window_after(clean, 1.5, 50, "learned_rps"), 10.2, 1e-9);
    /* The same level not yet complete: the rate a lone 429 set measuring
     * grows meanwhile; one a cut set does not. */
    const char *young = "{\"learned_rps\": 10, \"level_at\": \"2026-01-01T00:00:00Z\","
                        " \"level_sent\": 5, \"level_429\": 1, \"win_sent\": 10, \"win_ok\": 10}";
    assert_near(window_after(young, 3, 50, "learned_rps"), 10.2, 1e-9);
    assert_near(window_after(young, 3, 50, "level_sent"), 15, 1e-9);
    const char *young_cut = "{\"learned_rps\": 10, \"level_at\": \"2026-01-01T00:00:00Z\","
                            " \"last_decrease_at\": \"2026-01-01T00:00:00Z\","
                            " \"level_sent\": 5, \"level_429\": 1, \"win_sent\": 10,"
                            " \"win_ok\": 10}";
    assert_near(window_after(young_cut, 3, 50, "learned_rps"), 10, 1e-9);
    /* What a cut's level hears in its first 1.5 s answers calls sent before
     * the cut: not pooled (a later level of a run: the first is cut at its
     * third 429, below). */
    const char *settling = "{\"learned_rps\": 8.5, \"level_at\": \"2026-01-01T00:00:00Z\","
                           " \"last_decrease_at\": \"2026-01-01T00:00:00Z\","
                           " \"probe_rps\": 10, \"probe_share\": 0.3, \"probe_sent\": 40,"
                           " \"pending_429\": 5, \"win_sent\": 10, \"win_ok\": 5,"
                           " \"win_429\": 5}";
    assert_near(window_after(settling, 1.2, 50, "level_sent + level_429"), 0, 1e-9);
    assert_near(window_after(settling, 1.6, 50, "level_sent + level_429"), 15, 1e-9);
    /* The first level of a run (the cut that began it came from a window)
     * has nothing to be compared with: on a lane that knows no noise, three
     * 429s above the noise bound cut it at once, by its share. */
    const char *first_cut = "{\"learned_rps\": 68, \"level_at\": \"2026-01-01T00:00:00Z\","
                            " \"last_decrease_at\": \"2026-01-01T00:00:00Z\","
                            " \"pending_429\": 3, \"win_sent\": 12, \"win_ok\": 9,"
                            " \"win_429\": 3}";
    assert_near(window_after(first_cut, 1.6, 50, "decreases"), 1, 1e-9);
    assert_near(window_after(first_cut, 1.6, 50, "learned_rps"), 68 * 0.75, 1e-9);
    assert_near(window_after(first_cut, 1.6, 50, "probe_sent"), 12, 1e-9);

    /* Five 429s in 45 calls, nothing to compare with: cut by 15%, and the
     * next level is compared with this one (and any before it in the run). */
    const char *first = "{\"learned_rps\": 10, \"level_at\": \"2026-01-01T00:00:00Z\","
                        " \"level_sent\": 35, \"level_429\": 4, \"pending_429\": 1,"
                        " \"win_sent\": 10, \"win_ok\": 9, \"win_429\": 1}";
    assert_near(window_after(first, 1.5, 50, "learned_rps"), 8.5, 1e-9);
    assert_near(window_after(first, 1.5, 50, "probe_rps"), 10, 1e-9);
    assert_near(window_after(first, 1.5, 50, "probe_share"), 5.0 / 45, 1e-9);
    assert_near(window_after(first, 1.5, 50, "probe_sent"), 45, 1e-9);
    assert_near(window_after(first, 1.5, 50, "extract(epoch FROM level_at)"), T0 + 1.5, 1e-6);
    assert_near(window_after(first, 1.5, 50, "level_sent"), 0, 1e-9);
    /* The same after levels of 40 calls refused 12%: noise, the share of
     * all; the last cut is undone. */
    const char *same = below_levels(buf_same, sizeof(buf_same), 0.12, 40);
    assert_near(window_after(same, 1.5, 50, "noise_share"), (5 + 0.12 * 40) / 85, 1e-9);
    assert_near(window_after(same, 1.5, 50, "learned_rps"), 10, 1e-9);
    assert_near(window_after(same, 1.5, 50, "probe_sent"), 0, 1e-9);
    assert_near(window_after(same, 1.5, 50, "extract(epoch FROM level_at)"), -1, 1e-9);
    /* Not noise, cut again: levels above of fewer than 40 calls (one cut
     * early stops at its third 429), a share under half theirs, or
     * one grown beyond chance (a provider's burst allowance running out
     * makes a limit's share grow). */
    const char *few_above = below_levels(buf_few_above, sizeof(buf_few_above), 0.12, 24);
    assert_near(window_after(few_above, 1.5, 50, "noise_share"), 0, 1e-9);
    assert_near(window_after(few_above, 1.5, 50, "learned_rps"), 8.5 * 0.85, 1e-9);
    const char *fewer = "{\"learned_rps\": 8.5, \"level_at\": \"2026-01-01T00:00:00Z\","
                        " \"probe_rps\": 10, \"probe_share\": 0.2, \"probe_sent\": 40,"
                        " \"level_sent\": 36, \"level_429\": 3, \"pending_429\": 0,"
                        " \"win_sent\": 10, \"win_ok\": 10, \"win_429\": 0}";
    assert_near(window_after(fewer, 1.5, 50, "noise_share"), 0, 1e-9); /* 3/46 < 0.2 / 2 */
    assert_near(window_after(fewer, 1.5, 50, "decreases"), 1, 1e-9);
    const char *grown = "{\"learned_rps\": 8.5, \"level_at\": \"2026-01-01T00:00:00Z\","
                        " \"probe_rps\": 10, \"probe_share\": 0.16, \"probe_sent\": 68,"
                        " \"level_sent\": 35, \"level_429\": 12, \"pending_429\": 4,"
                        " \"win_sent\": 10, \"win_ok\": 6, \"win_429\": 4}";
    assert_near(window_after(grown, 1.5, 50, "noise_share"), 0, 1e-9); /* 16/45 > 0.28 */
    assert_near(window_after(grown, 1.5, 50, "decreases"), 1, 1e-9);
    /* After levels refused 30%, 11% is the limit falling away: cut again,
     * the levels pooled. */
    const char *fell = below_levels(buf_fell, sizeof(buf_fell), 0.3, 40);
    assert_near(window_after(fell, 1.5, 50, "noise_share"), 0, 1e-9);
    assert_near(window_after(fell, 1.5, 50, "learned_rps"), 8.5 * 0.85, 1e-9);
    assert_near(window_after(fell, 1.5, 50, "probe_share"), (12 + 5) / 85.0, 1e-9);
    /* Six of ten refused one second into a level: cut at once, by half. */
    const char *far = "{\"learned_rps\": 10, \"level_at\": \"2026-01-01T00:00:00Z\","
                      " \"last_decrease_at\": \"2025-12-31T23:59:59Z\","
                      " \"pending_429\": 6, \"win_sent\": 10, \"win_ok\": 4, \"win_429\": 6}";
    assert_near(window_after(far, 1.0, 50, "learned_rps"), 5, 1e-9);
    assert_near(window_after(far, 1.0, 50, "probe_share"), 0.6, 1e-9);
}

/* A lane simulated in SQL: shoal.fleet_window every 0.5 s of simulated
 * time, the fleet sending at the lane's rate (or p_demand) with more work
 * than that, a provider whose limit p_limit is a bucket of one second's
 * calls refilled continuously, refusing besides one call in p_noise_every
 * at random (a fixed linear congruential sequence from p_seed) and
 * reporting 429s as a worker does (those during a hold left out of
 * pending_429). Returns what was served per second over the second half,
 * the share refused there, and the noise level at the end. */
static const char fleet_sim_sql[] =
    "CREATE FUNCTION pg_temp.fleet_sim(p_start double precision, p_limit double precision,"
    "    p_noise_every integer, p_seconds integer, p_demand double precision, p_seed bigint,"
    "    OUT served double precision, OUT refused double precision,"
    "    OUT noise double precision)"
    " LANGUAGE plpgsql AS $$"
    " DECLARE"
    "    l shoal.lanes; t0 timestamptz := '2026-01-01T00:00:00Z'; v_now timestamptz;"
    "    tick double precision := 0.5; acc double precision := 0; rate double precision;"
    "    bucket double precision := greatest(p_limit, 1); x bigint := p_seed;"
    "    n integer; k integer; s_sent bigint := 0; s_429 bigint := 0; s_ok bigint := 0;"
    " BEGIN"
    "    l := jsonb_populate_record(NULL::shoal.lanes, jsonb_build_object("
    "        'model', 'sim', 'config_rpm', 0, 'config_tpm', 0, 'learned_rps', p_start,"
    "        'limit_source', 'learned', 'pending_429', 0, 'noise_share', 0, 'win_start', t0,"
    "        'win_sent', 0, 'win_ok', 0, 'win_429', 0, 'win_tokens', 0, 'sent_total', 0,"
    "        'ok_total', 0, 'rate_limited_total', 0, 'tokens_total', 0, 'decreases', 0,"
    "        'level_sent', 0, 'level_429', 0, 'probe_sent', 0));"
    "    FOR i IN 1 .. (p_seconds / tick)::integer LOOP"
    "        v_now := t0 + i * tick * interval '1 second';"
    "        IF p_limit > 0 THEN"
    "            bucket := least(bucket + p_limit * tick, greatest(p_limit, 1));"
    "        END IF;"
    "        rate := least(coalesce(shoal.fleet_limit(l.header_rpm, l.config_rpm,"
    "                                                 l.learned_rps), p_demand), p_demand);"
    "        n := 0;"
    "        IF l.hold_until IS NULL OR v_now >= l.hold_until THEN"
    "            acc := acc + rate * tick; n := floor(acc); acc := acc - n;"
    "        END IF;"
    "        k := 0;"
    "        FOR c IN 1 .. n LOOP"
    "            x := (x * 1103515245 + 12345) % 2147483648;"
    "            IF p_noise_every > 0 AND (x / 65536) % p_noise_every = 0 THEN"
    "                k := k + 1;"
    "            ELSIF p_limit > 0 AND bucket < 1 THEN"
    "                k := k + 1;"
    "            ELSIF p_limit > 0 THEN"
    "                bucket := bucket - 1;"
    "            END IF;"
    "        END LOOP;"
    "        l.win_sent := l.win_sent + n; l.win_ok := l.win_ok + n - k;"
    "        l.win_429 := l.win_429 + k;"
    "        IF k > 0 THEN"
    "            l.last_429_at := v_now;"
    "            IF l.last_decrease_at IS NULL OR l.hold_until IS NULL"
    "               OR v_now > l.hold_until THEN"
    "                l.pending_429 := l.pending_429 + k;"
    "            END IF;"
    "        END IF;"
    "        l := shoal.fleet_window(l, v_now, p_demand);"
    "        IF i * tick > p_seconds / 2 THEN"
    "            s_sent := s_sent + n; s_429 := s_429 + k; s_ok := s_ok + n - k;"
    "        END IF;"
    "    END LOOP;"
    "    served := s_ok / (p_seconds / 2.0);"
    "    refused := s_429::double precision / greatest(s_sent, 1);"
    "    noise := l.noise_share;"
    " END $$";

/* The least served rate (or the largest refused share, or noise level)
 * over three seeds of one simulated case. */
static double simulated(const char *what, const char *start, double limit, int noise_every,
                        int seconds, double demand)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT %s FROM generate_series(1, 3) AS seed,"
             " pg_temp.fleet_sim(%s, %g, %d, %d, %g, seed * 7919) AS r",
             what, start, limit, noise_every, seconds, demand);
    return sql_double(sql, NULL);
}

/* Random 429s at a few calls a second once spiralled a lane down to a
 * fraction of a call a second (its noise test needed windows of 10 calls);
 * a limit configured four times too high could be taken for noise. Ten
 * simulated minutes of each, three seeds each. */
static void test_simulated(void)
{
    char err[512];
    if (shoal_pg_exec(pg, fleet_sim_sql, 0, NULL, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("fleet_sim: %s", err);
    /* 10% refused at random, starting from 1 and 3 calls a second, with
     * 50 a second of work: the rate climbs to the work (45 served; 026's
     * windows served under 0.3 here). */
    assert_true(simulated("min(served)", "1", 0, 10, 600, 50) > 20);
    assert_true(simulated("min(served)", "3", 0, 10, 600, 50) > 30);
    double n = simulated("min(noise)", "3", 0, 10, 600, 50);
    assert_true(n > 0.05 && n < 0.2);
    /* 20% refused, and 10% with only 2 calls a second of work. */
    assert_true(simulated("min(served)", "3", 0, 5, 600, 50) > 25);
    assert_true(simulated("min(served)", "2", 0, 10, 600, 2) > 1.6);
    /* A limit of 5 a second, from slow start and from 20 (a configured
     * limit four times too high): served near it, few 429s, no noise. */
    assert_true(simulated("min(served)", "NULL", 5, 0, 600, 200) > 4.6);
    assert_true(simulated("max(refused)", "NULL", 5, 0, 600, 200) < 0.1);
    assert_true(simulated("max(noise)", "NULL", 5, 0, 600, 200) < 0.02);
    assert_true(simulated("min(served)", "20", 5, 0, 600, 200) > 4.6);
    assert_true(simulated("max(noise)", "20", 5, 0, 600, 200) < 0.02);
    /* 10% refused from no rate at all (cut at once to half what was
     * served, as the workers hold themselves): recognised as noise, the
     * rate climbs back to the work, with 50 and with 2 a second of it. */
    assert_true(simulated("min(served)", "NULL", 0, 10, 600, 50) > 30);
    n = simulated("min(noise)", "NULL", 0, 10, 600, 50);
    assert_true(n > 0.05 && n < 0.2);
    assert_true(simulated("min(served)", "NULL", 0, 10, 600, 2) > 1.6);
    /* The same limit with 10% noise besides. */
    assert_true(simulated("min(served)", "20", 5, 10, 600, 200) > 4.0);
}

static void test_header(void)
{
    json_t *o = lease("a", 3000, "hdr", "\"rpm\": 600, \"demand_rps\": 100, \"limit_rpm\": 1200");
    assert_near(field(o, "limit_rps"), 20, 1e-9);
    assert_near(field(o, "granted_rps"), 20, 1e-9);
    assert_str_eq(json_string_value(json_object_get(o, "source")), "header");
    json_decref(o);
    /* It stays after reports without headers, and a lower one replaces it. */
    assert_near(grant("a", 3000, "hdr", "\"rpm\": 600, \"demand_rps\": 100"), 20, 1e-9);
    assert_near(grant("a", 3000, "hdr", "\"rpm\": 600, \"demand_rps\": 100, \"limit_rpm\": 300"), 5,
                1e-9);
    /* Tokens the same way. */
    o = lease("a", 3000, "hdr",
              "\"rpm\": 600, \"tpm\": 6000, \"demand_tps\": 1000,"
              " \"limit_tpm\": 12000");
    assert_near(field(o, "granted_tps"), 200, 1e-9);
    json_decref(o);
}

static void share(shoal_fleet_t *f, size_t m, shoal_fleet_share_t *s)
{
    shoal_fleet_share(f, m, s);
}

static double share_rps(shoal_fleet_t *f, size_t m)
{
    shoal_fleet_share_t s;
    share(f, m, &s);
    return s.rps;
}

static shoal_fleet_t *fleet(const char *worker, long refresh_ms, long ttl_ms)
{
    char err[512];
    shoal_fleet_conf_t conf;
    shoal_fleet_conf_init(&conf);
    conf.refresh_ms = refresh_ms;
    conf.ttl_ms = ttl_ms;
    shoal_fleet_t *f =
        shoal_fleet_new(shoal_pgcluster_url(cluster), worker, models, &conf, err, sizeof(err));
    if (!f)
        test_fail("fleet %s: %s", worker, err);
    return f;
}

static void demand(shoal_fleet_t *f, size_t m, double rps)
{
    shoal_fleet_report_t r;
    shoal_fleet_report_init(&r);
    r.demand_rps = rps;
    shoal_fleet_report(f, m, &r);
}

static void test_threads(void)
{
    char err[512];
    shoal_fleet_conf_t bad;
    shoal_fleet_conf_init(&bad);
    bad.ttl_ms = bad.refresh_ms;
    assert_true(shoal_fleet_new("", "x", models, &bad, err, sizeof(err)) == NULL);
    assert_str_contains(err, "outlive");

    shoal_fleet_t *f[3];
    const char *ids[] = {"t-a", "t-b", "t-c"};
    f[0] = fleet(ids[0], 100, 1000);
    /* Before the first refresh: a quarter of the configured limit. */
    shoal_fleet_share_t s;
    share(f[0], M_TRIO, &s);
    if (shoal_fleet_refreshes(f[0]) == 0) {
        assert_true(s.stale);
        assert_near(s.rps, 2.5, 1e-9);
    }
    demand(f[0], M_TRIO, 100);
    assert_wait(fabs(share_rps(f[0], M_TRIO) - 10) < 1e-6, 5, "one worker to get the whole limit");
    share(f[0], M_TRIO, &s);
    assert_true(!s.stale);
    assert_int_eq(s.workers, 1);
    /* A model without any limit is free. */
    share(f[0], M_OPEN, &s);
    assert_true(s.rps <= 0);

    unsigned long v = s.version;
    for (int i = 1; i < 3; i++) {
        f[i] = fleet(ids[i], 100, 1000);
        demand(f[i], M_TRIO, 100);
    }
    /* Joining never makes the grants overshoot; all converge to thirds. */
    double dl = check_now_s() + 10;
    for (;;) {
        assert_within_limit("trio", 10);
        int fair = 1;
        for (int i = 0; i < 3; i++)
            fair &= fabs(share_rps(f[i], M_TRIO) - 10.0 / 3) < 1e-6;
        if (fair)
            break;
        if (check_now_s() > dl)
            test_fail("shares did not converge to thirds");
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    share(f[0], M_TRIO, &s);
    assert_int_eq(s.workers, 3);
    assert_true(s.version > v);

    /* A 429 with Retry-After: the reporter holds at once, the others at
     * their next refresh. */
    shoal_fleet_report_t r;
    shoal_fleet_report_init(&r);
    r.sent = 1;
    r.rate_limited = 1;
    r.hold_ms = 3000;
    shoal_fleet_report(f[0], M_HELD, &r);
    share(f[0], M_HELD, &s);
    assert_true(shoal_fleet_hold_ms(&s) > 2000);
    assert_wait((share(f[1], M_HELD, &s), shoal_fleet_hold_ms(&s) > 1000), 5,
                "the other worker to see the hold");

    /* destroy hands the shares back at once. */
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.leases WHERE worker_id = $1", ids[2]), 4);
    shoal_fleet_destroy(f[2]);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.leases WHERE worker_id = $1", ids[2]), 0);
    assert_wait(fabs(share_rps(f[0], M_TRIO) - 5) < 1e-6 &&
                    fabs(share_rps(f[1], M_TRIO) - 5) < 1e-6,
                5, "the remaining two to split the limit");
    shoal_fleet_destroy(f[0]);
    shoal_fleet_destroy(f[1]);
    shoal_fleet_destroy(NULL);
}

static void test_learned_survives(void)
{
    shoal_fleet_t *f = fleet("l-a", 100, 1000);
    shoal_fleet_report_t r;
    shoal_fleet_share_t s;

    assert_wait(shoal_fleet_refreshes(f) > 0, 5, "a first refresh");
    share(f, M_OPEN, &s);
    assert_true(s.rps <= 0 && !s.learned);
    /* 429s without headers on a model without limits: a limit is learned. */
    assert_wait((shoal_fleet_report_init(&r), r.demand_rps = 100, r.sent = 20, r.ok = 10,
                 r.rate_limited = 10, shoal_fleet_report(f, M_OPEN, &r), share(f, M_OPEN, &s),
                 s.learned && s.rps > 0),
                5, "a learned limit");
    assert_true(s.limit_rps > 0);
    shoal_fleet_destroy(f);
    double limit = sql_double("SELECT learned_rps FROM shoal.lanes WHERE model = $1", "open");

    /* A new handle starts from it, not from "no limit". */
    f = fleet("l-b", 100, 1000);
    assert_wait(shoal_fleet_refreshes(f) > 0, 5, "a first refresh");
    share(f, M_OPEN, &s);
    assert_true(s.learned);
    assert_true(s.rps > 0);
    assert_near(s.limit_rps, limit, 1e-6);
    shoal_fleet_destroy(f);
}

static void test_store_down(void)
{
    char err[512];
    shoal_fleet_t *f = fleet("d-a", 100, 500);
    shoal_fleet_share_t s;

    demand(f, M_DOWN, 100);
    assert_wait((share(f, M_DOWN, &s), !s.stale && fabs(s.rps - 10) < 1e-6), 5, "the whole limit");
    assert_near(s.tps, 1000, 1e-6);
    unsigned long refreshes = shoal_fleet_refreshes(f);

    assert_int_eq(shoal_pgcluster_stop(cluster, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    /* When the lease would have expired: limit / (last known workers + 1). */
    assert_wait((share(f, M_DOWN, &s), s.stale), 5, "the share to go stale");
    assert_near(s.rps, 5, 1e-6);
    assert_near(s.tps, 500, 1e-6);
    /* A handle that never reached the store: a quarter of the configured limit. */
    shoal_fleet_t *g = fleet("d-b", 100, 500);
    share(g, M_DOWN, &s);
    assert_true(s.stale);
    assert_near(s.rps, 2.5, 1e-9);
    share(g, M_OPEN, &s);
    assert_true(s.rps <= 0);
    /* Counts reported meanwhile are kept for when the store is back. */
    shoal_fleet_report_t r;
    shoal_fleet_report_init(&r);
    r.sent = 3;
    r.ok = 3;
    shoal_fleet_report(f, M_DOWN, &r);

    if (shoal_pgcluster_start(cluster, err, sizeof(err)) != SHOAL_OK)
        test_fail("restart: %s", err);
    /* The test's own connection died with the server: the first statement
     * notices and the next one reconnects. */
    shoal_pg_exec(pg, "SELECT 1", 0, NULL, NULL, NULL, 0);
    assert_wait((share(f, M_DOWN, &s), !s.stale), 15, "a fresh lease after the restart");
    assert_true(shoal_fleet_refreshes(f) > refreshes);
    assert_wait(shoal_fleet_refreshes(g) > 0, 15, "the second handle's first refresh");
    assert_wait(sqlcheck_long(pg, "SELECT sent_total FROM shoal.lanes WHERE model = $1", "down") >=
                    3,
                5, "the counts of the outage to arrive");
    shoal_fleet_destroy(g);
    shoal_fleet_destroy(f);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.leases WHERE worker_id LIKE 'd-%'", NULL), 0);
}

int main(void)
{
    char err[512];

    shoal_log_init("fleet_test", SHOAL_LOG_ERROR, 0);
    models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    pg = testdb_start("fleet_test", &cluster);

    test_functions();
    test_alone();
    test_split_join();
    test_expiry();
    test_429();
    test_evidence();
    test_levels();
    test_simulated();
    test_header();
    test_threads();
    test_learned_survives();
    test_store_down();

    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    shoal_models_destroy(models);
    printf("fleet_test: ok\n");
    return 0;
}
