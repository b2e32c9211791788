/*
 * worker/wmetrics: the worker's series exist from the start for every model
 * and outcome, a call counts once in requests, latency, tokens and 429s,
 * lane gauges show the lane's state, and tasks by state are set as given.
 * Also checks deploy/grafana/shoal.json, the dashboard built on these
 * series: Grafana's required fields (title, uid, schemaVersion, panels with
 * ids, types, grid positions and targets), and that every shoal_* series an
 * expression names is one the worker or the scheduler registers.
 */
#include "worker/wmetrics.h"

#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics.h"
#include "scheduler/smetrics.h"
#include "tests/support/check.h"

static const char *source_dir(void)
{
    const char *d = getenv("SHOAL_SOURCE_DIR");
    return d && *d ? d : SHOAL_SOURCE_DIR;
}

static shoal_models_t *load_models(void)
{
    char path[4096], err[512];
    setenv("SHOAL_SIM_URL", "http://127.0.0.1:9", 1);
    snprintf(path, sizeof(path), "%s/tests/data/models.json", source_dir());
    shoal_models_t *m = shoal_models_load(path, err, sizeof(err));
    if (!m)
        test_fail("could not load %s: %s", path, err);
    return m;
}

static void test_series(shoal_models_t *models)
{
    shoal_metrics_t *m = shoal_metrics_new();
    shoal_wmetrics_t *w = shoal_wmetrics_new(m, models);
    assert_true(w != NULL);
    assert_true(shoal_wmetrics_new(NULL, models) == NULL);   /* metrics off */
    shoal_wmetrics_call(NULL, 0, SHOAL_OUTCOME_OK, 1, 1, 1); /* no-op */

    size_t small = (size_t)shoal_models_index(models, "sim-small");
    shoal_wmetrics_call(w, small, SHOAL_OUTCOME_OK, 0.3, 120, 40);
    shoal_wmetrics_call(w, small, SHOAL_OUTCOME_RATE_LIMITED, 0.01, 0, 0);
    shoal_wmetrics_retry(w, small);
    shoal_wmetrics_connects(w, small, 1);
    shoal_wmetrics_connects(w, small, 0);
    shoal_wmetrics_connects(w, small, 1);
    shoal_wmetrics_call(w, 99, SHOAL_OUTCOME_OK, 1, 1, 1); /* unknown model: ignored */
    shoal_wmetrics_db_write(w, 0.02);
    long counts[SHOAL_TASK_FAILED + 1] = {0};
    counts[SHOAL_TASK_IN_FLIGHT] = 3;
    counts[SHOAL_TASK_WAITING] = 2;
    shoal_wmetrics_tasks(w, counts);

    shoal_lane_conf_t lc;
    shoal_lane_conf_init(&lc);
    lc.start_concurrency = 5;
    shoal_lane_t *lane = shoal_lane_new(shoal_models_at(models, small), &lc);
    shoal_lane_set_rates(lane, 10, 0, 0);
    shoal_fleet_share_t sh = {.rps = 10, .limit_rps = 100, .workers = 4, .learned = 1};
    shoal_wmetrics_lane(w, small, lane, &sh, 0);

    char *text = shoal_metrics_render(m, NULL);
    assert_str_contains(text,
                        "shoal_worker_requests_total{model=\"sim-small\",outcome=\"ok\"} 1\n");
    assert_str_contains(
        text, "shoal_worker_requests_total{model=\"sim-small\",outcome=\"rate_limited\"} 1\n");
    /* Every outcome of every model exists at 0 before its first call. */
    assert_str_contains(
        text, "shoal_worker_requests_total{model=\"sim-large\",outcome=\"malformed\"} 0\n");
    assert_str_contains(text, "shoal_worker_call_duration_seconds_bucket{model=\"sim-small\","
                              "outcome=\"ok\",le=\"0.25\"} 0\n");
    assert_str_contains(text, "shoal_worker_call_duration_seconds_bucket{model=\"sim-small\","
                              "outcome=\"ok\",le=\"0.5\"} 1\n");
    assert_str_contains(text, "shoal_worker_input_tokens_total{model=\"sim-small\"} 120\n");
    assert_str_contains(text, "shoal_worker_output_tokens_total{model=\"sim-small\"} 40\n");
    assert_str_contains(text, "shoal_worker_rate_limited_total{model=\"sim-small\"} 1\n");
    assert_str_contains(text, "shoal_worker_connections_opened_total{model=\"sim-small\"} 2\n");
    assert_str_contains(text, "shoal_worker_connections_opened_total{model=\"sim-large\"} 0\n");
    assert_str_contains(text, "shoal_worker_retries_total{model=\"sim-small\"} 1\n");
    assert_str_contains(text, "shoal_worker_db_write_duration_seconds_count 1\n");
    assert_str_contains(text, "shoal_worker_tasks{state=\"in_flight\"} 3\n");
    assert_str_contains(text, "shoal_worker_tasks{state=\"waiting\"} 2\n");
    assert_str_contains(text, "shoal_worker_lane_concurrency_window{model=\"sim-small\"} 5\n");
    assert_str_contains(text, "shoal_worker_lane_requests_per_second{model=\"sim-small\"} 10\n");
    assert_str_contains(text, "shoal_worker_lane_bucket_tokens{model=\"sim-small\"} -1\n");
    assert_str_contains(text,
                        "shoal_worker_fleet_limit_requests_per_second{model=\"sim-small\"} 100\n");
    assert_str_contains(text, "shoal_worker_fleet_limit_learned{model=\"sim-small\"} 1\n");
    assert_str_contains(text, "shoal_worker_fleet_workers{model=\"sim-small\"} 4\n");
    free(text);
    shoal_lane_destroy(lane);
    shoal_wmetrics_destroy(w);
    shoal_metrics_destroy(m);
}

/* Whether name (a series as an expression names it) belongs to a family of
 * m: itself, or a histogram's _bucket, _sum or _count. */
static int exported(shoal_metrics_t *m, const char *name)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    if (shoal_metrics_lookup(m, name))
        return 1;
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(name), k = strlen(suffixes[i]);
        char base[256];
        if (n > k && n - k < sizeof(base) && !strcmp(name + n - k, suffixes[i])) {
            memcpy(base, name, n - k);
            base[n - k] = '\0';
            if (shoal_metrics_lookup(m, base))
                return 1;
        }
    }
    return 0;
}

static void test_dashboard(shoal_models_t *models)
{
    char path[4096], err[512];
    shoal_metrics_t *m = shoal_metrics_new();
    shoal_wmetrics_t *w = shoal_wmetrics_new(m, models);
    shoal_topics_t topics;
    shoal_topics_init(&topics, NULL, err, sizeof(err));
    /* Nothing is read from these until a scrape, which never comes here. */
    shoal_smetrics_conf_t sc = {"host=127.0.0.1 port=1", "127.0.0.1:1", NULL, "shoal-workers",
                                &topics};
    shoal_smetrics_t *s = shoal_smetrics_new(m, &sc, err, sizeof(err));
    if (!s)
        test_fail("scheduler series: %s", err);

    snprintf(path, sizeof(path), "%s/deploy/grafana/shoal.json", source_dir());
    json_error_t jerr;
    json_t *d = json_load_file(path, 0, &jerr);
    if (!d)
        test_fail("%s: %s (line %d)", path, jerr.text, jerr.line);
    assert_true(json_string_length(json_object_get(d, "title")) > 0);
    assert_true(json_string_length(json_object_get(d, "uid")) > 0);
    assert_int_ge(json_integer_value(json_object_get(d, "schemaVersion")), 36);
    assert_true(json_is_object(json_object_get(d, "time")));
    json_t *panels = json_object_get(d, "panels");
    assert_int_ge(json_array_size(panels), 10);

    regex_t re;
    assert_int_eq(regcomp(&re, "shoal_[a-z_]+", REG_EXTENDED), 0);
    int ids[256] = {0}, graphs = 0, exprs = 0;
    size_t i;
    json_t *p;
    json_array_foreach(panels, i, p)
    {
        json_int_t id = json_integer_value(json_object_get(p, "id"));
        assert_true(id > 0 && id < 256);
        assert_int_eq(ids[id]++, 0); /* unique */
        const char *type = json_string_value(json_object_get(p, "type"));
        assert_true(type != NULL);
        assert_true(json_string_length(json_object_get(p, "title")) > 0);
        json_t *g = json_object_get(p, "gridPos");
        static const char *const keys[] = {"h", "w", "x", "y"};
        for (int k = 0; k < 4; k++)
            assert_true(json_is_integer(json_object_get(g, keys[k])));
        assert_true(json_integer_value(json_object_get(g, "x")) +
                        json_integer_value(json_object_get(g, "w")) <=
                    24);
        if (!strcmp(type, "row"))
            continue;
        graphs++;
        assert_true(json_is_object(json_object_get(p, "datasource")));
        json_t *targets = json_object_get(p, "targets");
        assert_int_ge(json_array_size(targets), 1);
        size_t j;
        json_t *t;
        json_array_foreach(targets, j, t)
        {
            const char *expr = json_string_value(json_object_get(t, "expr"));
            assert_true(expr != NULL);
            assert_true(json_string_length(json_object_get(t, "refId")) > 0);
            int named = 0;
            regmatch_t mt;
            for (const char *e = expr; regexec(&re, e, 1, &mt, 0) == 0; e += mt.rm_eo) {
                char name[256];
                int n = (int)(mt.rm_eo - mt.rm_so);
                snprintf(name, sizeof(name), "%.*s", n, e + mt.rm_so);
                if (!exported(m, name))
                    test_fail("panel \"%s\" names %s, which no process exports",
                              json_string_value(json_object_get(p, "title")), name);
                named++;
            }
            assert_int_ge(named, 1);
            exprs++;
        }
    }
    assert_int_ge(graphs, 10);
    regfree(&re);
    json_decref(d);
    fprintf(stderr, "dashboard: %d panels, %d expressions, every series exported\n", graphs, exprs);
    shoal_smetrics_destroy(s);
    shoal_wmetrics_destroy(w);
    shoal_metrics_destroy(m);
}

int main(void)
{
    shoal_models_t *models = load_models();
    test_series(models);
    test_dashboard(models);
    shoal_models_destroy(models);
    return 0;
}
