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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/faults.h"
#include "tests/support/harness.h"
#include "tests/support/netport.h"

#define ITEMS 300
#define UNTRUSTED_ITEMS 3

/* Runs argv to its end; it must exit 0 within 30 s. */
static void run(char *const argv[], const char *log)
{
    char err[256];
    int status = -1;
    shoal_proc_t *p = shoal_proc_spawn(NULL, argv, NULL, log, err, sizeof(err));
    if (!p)
        test_fail("%s: %s", argv[0], err);
    assert_int_eq(shoal_proc_wait(p, 30000, &status), SHOAL_OK);
    if (status != 0)
        test_fail("%s exited with %d (see %s)", argv[0], status, log);
    shoal_proc_destroy(p);
}

/* Established TCP connections (IPv4) whose remote end is 127.0.0.1:port:
 * the clients' side of the connections to the server on that port. */
static long connections_to(int port)
{
    char line[512], rem[64];
    unsigned st;
    long n = 0;
    FILE *f = fopen("/proc/net/tcp", "r");
    assert_true(f != NULL);
    while (fgets(line, sizeof(line), f)) {
        unsigned long addr;
        unsigned rport;
        if (sscanf(line, " %*d: %*s %63s %x", rem, &st) != 2 ||
            sscanf(rem, "%lx:%x", &addr, &rport) != 2)
            continue; /* the header line */
        n += st == 1 && rport == (unsigned)port && addr == 0x0100007FUL;
    }
    fclose(f);
    return n;
}

int main(void)
{
    char dir[] = "/tmp/shoal-it47-XXXXXX", key[256], cert[256], doc[256], log[256], path[512],
         status[64], models[1024], sport[16];
    assert_true(mkdtemp(dir) != NULL);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(doc, sizeof(doc), "%s/doc", dir);
    snprintf(log, sizeof(log), "%s/openssl.log", dir);

    /* A certificate for 127.0.0.1 that is its own CA. */
    char *gen[] = {"openssl",
                   "req",
                   "-x509",
                   "-newkey",
                   "ec",
                   "-pkeyopt",
                   "ec_paramgen_curve:prime256v1",
                   "-nodes",
                   "-keyout",
                   key,
                   "-out",
                   cert,
                   "-days",
                   "2",
                   "-subj",
                   "/CN=shoal test",
                   "-addext",
                   "subjectAltName=IP:127.0.0.1",
                   NULL};
    run(gen, log);

    /* Every POST to /v1/chat/completions gets this file. */
    snprintf(path, sizeof(path), "%s/v1", doc);
    assert_true(mkdir(doc, 0700) == 0 && mkdir(path, 0700) == 0);
    snprintf(path, sizeof(path), "%s/v1/chat", doc);
    assert_true(mkdir(path, 0700) == 0);
    snprintf(path, sizeof(path), "%s/v1/chat/completions", doc);
    faults_write_file(path, "{\"id\": \"chatcmpl-h2\", \"object\": \"chat.completion\", "
                            "\"model\": \"h2\", \"choices\": [{\"index\": 0, \"message\": "
                            "{\"role\": \"assistant\", \"content\": \"over h2\"}, "
                            "\"finish_reason\": \"stop\"}], \"usage\": {\"prompt_tokens\": 5, "
                            "\"completion_tokens\": 2, \"total_tokens\": 7}}");

    int port = netport_free();
    snprintf(sport, sizeof(sport), "%d", port);
    snprintf(log, sizeof(log), "%s/nghttpd.log", dir);
    char *serve[] = {"nghttpd", "--htdocs", doc, "--address", "127.0.0.1", sport, key, cert, NULL};
    char err[256];
    shoal_proc_t *server = shoal_proc_spawn(NULL, serve, NULL, log, err, sizeof(err));
    if (!server)
        test_fail("nghttpd: %s (Debian package nghttp2-server)", err);
    netport_wait_listening(port, 10, "nghttpd", log);

    snprintf(models, sizeof(models),
             "\"h2\": {\"provider\": \"openai\", \"endpoint\": "
             "\"https://127.0.0.1:%d/v1/chat/completions\", \"model\": \"h2\", "
             "\"ca_file\": \"%s\"},\n"
             "\"h2-untrusted\": {\"provider\": \"openai\", \"endpoint\": "
             "\"https://127.0.0.1:%d/v1/chat/completions\", \"model\": \"h2\"}",
             port, cert, port);
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .extra_models = models};
    harness_t *h = harness_start(&conf);

    char *job = harness_job("h2-1", ITEMS, 1, "{\"model\": \"h2\"}");
    harness_run_job(h, "h2-1", job, 120, NULL);
    free(job);
    faults_assert_once(h, "h2-1", ITEMS);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.results WHERE job_id = 'h2-1' AND "
                               "output = 'over h2'",
                               NULL),
                  ITEMS);
    /* For the log: how many connections the calls shared (the worker keeps
     * them open). */
    fprintf(stderr, "connections open to the HTTP/2 server after %d calls: %ld\n", ITEMS,
            connections_to(port));

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

    char out[256];
    harness_sh(h, out, sizeof(out), "rm -rf '%s'", dir);
    harness_stop(h);
    shoal_proc_kill(server, SIGTERM);
    shoal_proc_wait(server, 5000, NULL);
    shoal_proc_destroy(server);
    printf("0047-https_h2: ok\n");
    return 0;
}
