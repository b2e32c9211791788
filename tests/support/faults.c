/*
 * Helpers for the fault-injection integration tests (see faults.h).
 */
#include "tests/support/faults.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/kafka.h"
#include "tests/support/check.h"

json_t *faults_read_topic(harness_t *h, const char *topic, int want, double timeout_s)
{
    char err[512], group[96];
    static int seq;
    const char *subs[] = {topic};
    snprintf(group, sizeof(group), "test-read-%d-%d-%ld", (int)getpid(), ++seq,
             (long)(check_now_s() * 1000));
    shoal_kprops_t kp = {1, {"session.timeout.ms=6000"}};
    rd_kafka_t *c = shoal_kafka_consumer_new(shoal_devstack_bootstrap(harness_stack(h)), group, &kp,
                                             subs, 1, NULL, NULL, err, sizeof(err));
    if (!c)
        test_fail("could not read %s: %s", topic, err);
    json_t *out = json_array();
    double deadline = check_now_s() + timeout_s;
    while (check_now_s() < deadline && (int)json_array_size(out) < want) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (!m)
            continue;
        if (!m->err) {
            json_t *doc = json_loadb(m->payload, m->len, 0, NULL);
            if (doc)
                json_array_append_new(out, doc);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return out;
}

int faults_log_count(harness_t *h, const char *proc, const char *needle)
{
    char path[1024], line[4096];
    int n = 0;
    snprintf(path, sizeof(path), "%s/logs/%s.log", shoal_devstack_workdir(harness_stack(h)), proc);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

char *faults_job(const char *job_id, const char *const *inputs, size_t n, const char *extra_fields)
{
    json_t *items = json_array();
    char id[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "i%05zu", i);
        json_array_append_new(items, json_pack("{s:s, s:s}", "id", id, "input", inputs[i]));
    }
    json_t *extra = extra_fields ? json_loads(extra_fields, 0, NULL) : json_object();
    assert_true(json_is_object(extra));
    json_object_set_new(extra, "items", items);
    char *extra_text = json_dumps(extra, JSON_COMPACT);
    json_decref(extra);
    char *job = harness_job(job_id, 0, 1, extra_text);
    free(extra_text);
    return job;
}

void faults_assert_once(harness_t *h, const char *job_id, long tasks)
{
    char status[64];
    harness_str(h, status, sizeof(status), "SELECT status FROM shoal.jobs WHERE job_id = $1",
                job_id, NULL);
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT tasks_total FROM shoal.jobs WHERE job_id = $1", job_id, NULL),
        tasks);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = "
                               "'done'",
                               job_id, NULL),
                  tasks);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", job_id, NULL),
        tasks);
    assert_int_eq(harness_long(h,
                               "SELECT count(DISTINCT task_id) FROM shoal.results WHERE job_id = "
                               "$1",
                               job_id, NULL),
                  tasks);
    /* One successful call per task: a second would mean a task already done
     * was called again (and paid for) after its result. */
    assert_int_eq(harness_long(h,
                               "SELECT count(DISTINCT task_id) FROM shoal.attempts WHERE job_id "
                               "= $1 AND outcome = 'ok'",
                               job_id, NULL),
                  tasks);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM (SELECT task_id FROM shoal.attempts WHERE "
                               "job_id = $1 AND outcome = 'ok' GROUP BY task_id HAVING count(*) "
                               "> 1) d",
                               job_id, NULL),
                  0);
}

void faults_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        test_fail("could not write %s", path);
    fputs(text, f);
    if (fclose(f) != 0)
        test_fail("could not write %s", path);
}

double faults_queue_ms(harness_t *h, const char *job_id, const char *agg)
{
    char sql[512], out[64];
    snprintf(sql, sizeof(sql), "SELECT %s FROM shoal.attempts WHERE job_id = $1 AND outcome = 'ok'",
             !strcmp(agg, "median") ? "percentile_cont(0.5) WITHIN GROUP (ORDER BY queue_ms)"
                                    : "max(queue_ms)");
    harness_str(h, out, sizeof(out), sql, job_id, NULL);
    assert_true(*out != '\0');
    return strtod(out, NULL);
}
