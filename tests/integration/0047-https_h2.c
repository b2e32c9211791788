/*
 * Models behind https with HTTP/2, as providers serve them. nghttpd
 * (nghttp2's server, which speaks nothing but HTTP/2) answers every POST
 * with one chat completion, over TLS with a certificate made for the test
 * that no CA of the system's signed. A model whose ca_file names that
 * certificate serves a 300-task job exactly once per task, with the
 * server's answer as every result. A model at the same endpoint without
 * ca_file fails each of its tasks after one call, with curl's reason and
 * what to set, and its job ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/faults.h"
#include "tests/support/harness.h"
#include "tests/support/h2server.h"

#define ITEMS 300
#define UNTRUSTED_ITEMS 3

int main(void)
{
    char status[64], models[1024];
    h2server_t *server = h2server_start();
    int port = h2server_port(server);

    snprintf(models, sizeof(models),
             "\"h2\": {\"provider\": \"openai\", \"endpoint\": "
             "\"https://127.0.0.1:%d/v1/chat/completions\", \"model\": \"h2\", "
             "\"ca_file\": \"%s\"},\n"
             "\"h2-untrusted\": {\"provider\": \"openai\", \"endpoint\": "
             "\"https://127.0.0.1:%d/v1/chat/completions\", \"model\": \"h2\"}",
             port, h2server_ca_file(server), port);
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .extra_models = models};
    harness_t *h = harness_start(&conf);

    char *job = harness_job("h2-1", ITEMS, 1, "{\"model\": \"h2\"}");
    harness_run_job(h, "h2-1", job, 120, NULL);
    free(job);
    faults_assert_once(h, "h2-1", ITEMS);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.results WHERE job_id = 'h2-1' AND "
                               "output = '" H2SERVER_CONTENT "'",
                               NULL),
                  ITEMS);
    /* For the log: how many connections the calls shared (the worker keeps
     * them open). */
    fprintf(stderr, "connections open to the HTTP/2 server after %d calls: %ld\n", ITEMS,
            h2server_connections(server));

    /* The same server without its CA: each task fails at its first call,
     * saying what to set, and the job ends. */
    job = harness_job("h2-untrusted-1", UNTRUSTED_ITEMS, 1, "{\"model\": \"h2-untrusted\"}");
    harness_produce(h, "shoal.jobs", "h2-untrusted-1", job, strlen(job));
    free(job);
    harness_wait_job(h, "h2-untrusted-1", 60, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'h2-untrusted-1' "
                               "AND status = 'failed' AND error LIKE '%certificate%' AND error "
                               "LIKE '%ca_file%'",
                               NULL),
                  UNTRUSTED_ITEMS);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = "
                               "'h2-untrusted-1' AND http_status = 0 AND outcome = 'failed'",
                               NULL),
                  UNTRUSTED_ITEMS);

    harness_stop(h);
    h2server_stop(server);
    printf("0047-https_h2: ok\n");
    return 0;
}
