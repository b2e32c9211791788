/*
 * common/kafka configuration: SHOAL_KAFKA_<KEY> variables map to librdkafka
 * properties, -X key=value beats them, librdkafka's own reason for a bad
 * property becomes the error (naming the key), the twin of a shoal option
 * that begins like one is left alone, producers and consumers send
 * without Nagle's wait unless told otherwise, and topic names follow the
 * prefix.
 */
#include "common/kafka.h"

#include <stdlib.h>

#include "tests/support/check.h"

extern char **environ;

/* Starts from an environment without SHOAL_KAFKA_* variables. */
static void clear_kafka_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            if (!strncmp(*e, "SHOAL_KAFKA_", 12) && eq && (size_t)(eq - *e) < sizeof(name)) {
                snprintf(name, sizeof(name), "%.*s", (int)(eq - *e), *e);
                break;
            }
        }
        if (!name[0])
            return;
        assert_int_eq(unsetenv(name), 0);
    }
}

static void conf_value(rd_kafka_conf_t *conf, const char *key, char *out, size_t outlen)
{
    size_t size = outlen;
    if (rd_kafka_conf_get(conf, key, out, &size) != RD_KAFKA_CONF_OK)
        test_fail("rd_kafka_conf_get(%s) failed", key);
}

static void test_env_and_flags(void)
{
    char err[512] = "", val[256];
    shoal_kprops_t props = {0, {NULL}};

    clear_kafka_env();
    assert_int_eq(setenv("SHOAL_KAFKA_SESSION_TIMEOUT_MS", "7000", 1), 0);
    assert_int_eq(setenv("SHOAL_KAFKA_CLIENT_ID", "from-env", 1), 0);
    rd_kafka_conf_t *conf = shoal_kafka_conf_new("127.0.0.1:9092", &props, err, sizeof(err));
    if (!conf)
        test_fail("conf_new: %s", err);
    conf_value(conf, "session.timeout.ms", val, sizeof(val));
    assert_str_eq(val, "7000");
    conf_value(conf, "client.id", val, sizeof(val));
    assert_str_eq(val, "from-env");
    conf_value(conf, "bootstrap.servers", val, sizeof(val));
    assert_str_eq(val, "127.0.0.1:9092");
    rd_kafka_conf_destroy(conf);

    /* -X beats the environment; the environment keeps what -X leaves */
    props.kv[props.n++] = "session.timeout.ms=8000";
    props.kv[props.n++] = "socket.timeout.ms=12345";
    conf = shoal_kafka_conf_new(NULL, &props, err, sizeof(err));
    if (!conf)
        test_fail("conf_new with -X: %s", err);
    conf_value(conf, "session.timeout.ms", val, sizeof(val));
    assert_str_eq(val, "8000");
    conf_value(conf, "socket.timeout.ms", val, sizeof(val));
    assert_str_eq(val, "12345");
    conf_value(conf, "client.id", val, sizeof(val));
    assert_str_eq(val, "from-env");
    rd_kafka_conf_destroy(conf);

    /* SHOAL_KAFKA_TIMEOUT_MS is the twin of the CLI's --kafka-timeout-ms, not
     * a property ("timeout.ms" is none: it would fail every client) */
    assert_int_eq(setenv("SHOAL_KAFKA_TIMEOUT_MS", "2000", 1), 0);
    err[0] = '\0';
    conf = shoal_kafka_conf_new(NULL, NULL, err, sizeof(err));
    if (!conf)
        test_fail("conf_new with SHOAL_KAFKA_TIMEOUT_MS: %s", err);
    size_t size = sizeof(val);
    assert_int_eq(rd_kafka_conf_get(conf, "timeout.ms", val, &size), RD_KAFKA_CONF_UNKNOWN);
    rd_kafka_conf_destroy(conf);
    assert_int_eq(unsetenv("SHOAL_KAFKA_TIMEOUT_MS"), 0);

    /* the environment may name bootstrap.servers itself; it beats the list */
    assert_int_eq(setenv("SHOAL_KAFKA_BOOTSTRAP_SERVERS", "10.0.0.1:9092", 1), 0);
    conf = shoal_kafka_conf_new("127.0.0.1:9092", NULL, err, sizeof(err));
    if (!conf)
        test_fail("conf_new: %s", err);
    conf_value(conf, "bootstrap.servers", val, sizeof(val));
    assert_str_eq(val, "10.0.0.1:9092");
    rd_kafka_conf_destroy(conf);
    clear_kafka_env();
}

static void test_errors(void)
{
    char err[512];
    shoal_kprops_t props = {0, {NULL}};

    clear_kafka_env();

    /* an unknown -X property: librdkafka's reason, naming the key */
    props.kv[props.n++] = "no.such.property=1";
    err[0] = '\0';
    assert_true(shoal_kafka_conf_new(NULL, &props, err, sizeof(err)) == NULL);
    assert_str_contains(err, "no.such.property");
    assert_str_contains(err, "No such configuration property");
    assert_str_contains(err, "-X");

    /* a bad value for a real property */
    props.kv[0] = "session.timeout.ms=soon";
    err[0] = '\0';
    assert_true(shoal_kafka_conf_new(NULL, &props, err, sizeof(err)) == NULL);
    assert_str_contains(err, "session.timeout.ms");
    assert_str_contains(err, "Invalid value");

    /* a pair without "=" */
    props.kv[0] = "session.timeout.ms";
    err[0] = '\0';
    assert_true(shoal_kafka_conf_new(NULL, &props, err, sizeof(err)) == NULL);
    assert_str_contains(err, "expected key=value");

    /* a bad environment variable names the variable's property */
    assert_int_eq(setenv("SHOAL_KAFKA_NO_SUCH_THING", "1", 1), 0);
    err[0] = '\0';
    assert_true(shoal_kafka_conf_new(NULL, NULL, err, sizeof(err)) == NULL);
    assert_str_contains(err, "environment");
    assert_str_contains(err, "no.such.thing");
    clear_kafka_env();

    assert_int_eq(setenv("SHOAL_KAFKA_SESSION_TIMEOUT_MS", "-5", 1), 0);
    err[0] = '\0';
    assert_true(shoal_kafka_conf_new(NULL, NULL, err, sizeof(err)) == NULL);
    assert_str_contains(err, "session.timeout.ms");
    clear_kafka_env();

    /* with the variable gone the same call works */
    rd_kafka_conf_t *conf = shoal_kafka_conf_new(NULL, NULL, err, sizeof(err));
    if (!conf)
        test_fail("conf_new: %s", err);
    rd_kafka_conf_destroy(conf);
}

/* rk's socket.nagle.disable is want. */
static void assert_nagle(rd_kafka_t *rk, const char *want)
{
    char val[64];
    size_t size = sizeof(val);
    assert_int_eq(rd_kafka_conf_get(rd_kafka_conf(rk), "socket.nagle.disable", val, &size),
                  RD_KAFKA_CONF_OK);
    assert_str_eq(val, want);
}

/* Both kinds of client send without Nagle's wait unless told otherwise. */
static void test_nagle_default(void)
{
    char err[512] = "";
    static const char *const topics[] = {"shoal.jobs"};
    shoal_kprops_t props = {0, {NULL}};

    clear_kafka_env();
    for (int told = 0; told < 2; told++) {
        if (told)
            props.kv[props.n++] = "socket.nagle.disable=false";
        rd_kafka_t *p = shoal_kafka_producer_new(NULL, &props, err, sizeof(err));
        if (!p)
            test_fail("producer: %s", err);
        assert_nagle(p, told ? "false" : "true");
        rd_kafka_destroy(p);
        rd_kafka_t *c =
            shoal_kafka_consumer_new(NULL, "g", &props, topics, 1, NULL, NULL, err, sizeof(err));
        if (!c)
            test_fail("consumer: %s", err);
        assert_nagle(c, told ? "false" : "true");
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
    }
}

static void test_topics(void)
{
    shoal_topics_t t;

    assert_int_eq(shoal_topics_init(&t, "acme", NULL, 0), SHOAL_OK);
    assert_str_eq(t.jobs, "acme.jobs");
    assert_str_eq(t.tasks_high, "acme.tasks.high");
    assert_str_eq(t.tasks_normal, "acme.tasks.normal");
    assert_str_eq(t.tasks_low, "acme.tasks.low");
    assert_str_eq(t.dlq, "acme.tasks.dlq");
    assert_str_eq(t.events, "acme.events");

    assert_str_eq(shoal_topics_task(&t, "high"), "acme.tasks.high");
    assert_str_eq(shoal_topics_task(&t, "normal"), "acme.tasks.normal");
    assert_str_eq(shoal_topics_task(&t, "low"), "acme.tasks.low");
    assert_str_eq(shoal_topics_task(&t, "urgent"), "acme.tasks.normal");
    assert_str_eq(shoal_topics_task(&t, ""), "acme.tasks.normal");
    assert_str_eq(shoal_topics_task(&t, NULL), "acme.tasks.normal");

    assert_int_eq(shoal_topics_init(&t, NULL, NULL, 0), SHOAL_OK);
    assert_str_eq(t.jobs, "shoal.jobs");
    assert_str_eq(t.dlq, "shoal.tasks.dlq");
    assert_int_eq(shoal_topics_init(&t, "", NULL, 0), SHOAL_OK);
    assert_str_eq(t.events, "shoal.events");
    assert_str_eq(shoal_topics_task(&t, "high"), "shoal.tasks.high");

    /* a prefix too long for distinct topic names, or with characters Kafka
     * refuses, is an error naming the option */
    char prefix[300], err[256];
    memset(prefix, 'p', sizeof(prefix) - 1);
    prefix[sizeof(prefix) - 1] = '\0';
    assert_int_eq(shoal_topics_init(&t, prefix, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "topic-prefix: too long");
    prefix[100] = '\0';
    assert_int_eq(shoal_topics_init(&t, prefix, err, sizeof(err)), SHOAL_OK);
    assert_true(strlen(t.tasks_normal) < sizeof(t.tasks_normal));
    assert_int_eq(shoal_topics_init(&t, "my topics", err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "may only contain");
}

int main(void)
{
    test_env_and_flags();
    test_errors();
    test_nagle_default();
    test_topics();
    printf("kafka_conf_test: ok\n");
    return 0;
}
