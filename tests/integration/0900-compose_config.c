/*
 * Validates compose.yaml the way Compose itself reads it: runs
 * "docker-compose config" (no Docker engine needed) and checks that the
 * resolved fleet has its services, three worker replicas, a KRaft-mode Kafka
 * without ZooKeeper, start-up ordering on health and completion, and the
 * environment every shoal binary is configured from. A missing docker-compose
 * is a failure, not a skip: scripts/install-deps.sh --test installs it.
 *
 * The child sees no API keys, passwords or port overrides and an empty env
 * file instead of any .env, so the output is deterministic and safe to print.
 */
#include "tests/support/check.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define OUTPUT_CAP (4 * 1024 * 1024)

static const char *source_dir(void)
{
    const char *dir = getenv("SHOAL_SOURCE_DIR");
    if (dir && *dir)
        return dir;
    return SHOAL_SOURCE_DIR;
}

/* True if an executable called name is on PATH. */
static bool on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        char full[4096];
        int n = snprintf(full, sizeof(full), "%.*s/%s", (int)len, len ? path : ".", name);
        struct stat st;
        if (n > 0 && (size_t)n < sizeof(full) && stat(full, &st) == 0 && S_ISREG(st.st_mode) &&
            access(full, X_OK) == 0)
            return true;
        path += len;
        if (*path == ':')
            path++;
    }
    return false;
}

/* Single-quotes s for /bin/sh into out; fails the test if it does not fit. */
static void shell_quote(const char *s, char *out, size_t outlen)
{
    size_t o = 0;
    assert_true(outlen > 2);
    out[o++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t plen = piece ? strlen(piece) : 1;
        if (o + plen + 2 > outlen)
            test_fail("path too long to quote: %s", s);
        if (piece) {
            memcpy(out + o, piece, plen);
        } else {
            out[o] = *s;
        }
        o += plen;
    }
    out[o++] = '\'';
    out[o] = '\0';
}

/* Runs cmd through popen; returns its combined output (caller frees). */
static char *run_capture(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        test_fail("could not run \"%s\": %s", cmd, strerror(errno));
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap);
    assert_true(buf != NULL);
    for (;;) {
        if (len + 1 == cap) {
            if (cap >= OUTPUT_CAP)
                test_fail("output of \"%s\" exceeds %d bytes", cmd, OUTPUT_CAP);
            cap *= 2;
            char *grown = realloc(buf, cap);
            assert_true(grown != NULL);
            buf = grown;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, p);
        if (n == 0)
            break;
        len += n;
    }
    buf[len] = '\0';
    *status = pclose(p);
    return buf;
}

/*
 * Returns a copy of one service's block from "docker-compose config" output:
 * the two-space-indented "name:" line under the top-level "services:" and
 * everything indented deeper after it. NULL if there is no such service.
 */
static char *service_block(const char *cfg, const char *name)
{
    const char *line = cfg;
    bool in_services = false;
    const char *start = NULL;
    size_t nlen = strlen(name);

    while (*line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        const char *next = eol ? eol + 1 : line + len;

        if (len > 0 && line[0] != ' ') {
            if (start)
                break;
            in_services = len == strlen("services:") && strncmp(line, "services:", len) == 0;
        } else if (in_services && len > 2 && line[0] == ' ' && line[1] == ' ' && line[2] != ' ') {
            if (start)
                break;
            if (len == nlen + 3 && strncmp(line + 2, name, nlen) == 0 && line[nlen + 2] == ':')
                start = line;
        }
        line = next;
    }
    if (!start)
        return NULL;
    size_t blen = (size_t)(line - start);
    char *block = malloc(blen + 1);
    assert_true(block != NULL);
    memcpy(block, start, blen);
    block[blen] = '\0';
    return block;
}

/*
 * Copies the value of the first "key:" in block into out, without the quotes
 * Compose may put around scalars. Returns false if block has no such key.
 */
static bool yaml_value(const char *block, const char *key, char *out, size_t outlen)
{
    char pat[128];
    assert_true((size_t)snprintf(pat, sizeof(pat), " %s:", key) < sizeof(pat));
    const char *at = strstr(block, pat);
    if (!at)
        return false;
    at += strlen(pat);
    at += strspn(at, " '\"");
    size_t len = strcspn(at, "'\"\n");
    if (len >= outlen)
        len = outlen - 1;
    memcpy(out, at, len);
    out[len] = '\0';
    return true;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        test_fail("cannot open %s: %s", path, strerror(errno));
    size_t cap = 256 * 1024;
    char *buf = malloc(cap);
    assert_true(buf != NULL);
    size_t len = fread(buf, 1, cap - 1, f);
    assert_true(!ferror(f));
    if (len == cap - 1)
        test_fail("%s is larger than the %zu bytes this test reads", path, cap - 1);
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static void check_service_env(const char *block, const char *svc)
{
    static const char *const env[] = {
        "SHOAL_BOOTSTRAP: kafka:9092",
        "SHOAL_PG: postgresql://shoal:shoal@postgres:5432/shoal",
        "SHOAL_MODELS: /usr/share/shoal/examples/models.compose.json",
        "SHOAL_SIM_URL: http://sim:8080",
        "OPENAI_API_KEY:",
        "image: shoal:local",
    };
    for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++) {
        if (!strstr(block, env[i]))
            test_fail("service %s lacks \"%s\" in:\n%s", svc, env[i], block);
    }
}

int main(void)
{
    const char *src = source_dir();
    char compose_path[4096], quoted_compose[8192], quoted_env[8192], cmd[20000];
    assert_true((size_t)snprintf(compose_path, sizeof(compose_path), "%s/compose.yaml", src) <
                sizeof(compose_path));

    if (!on_path("docker-compose"))
        test_fail("docker-compose not found on PATH, cannot validate %s\n"
                  "hint: install it with scripts/install-deps.sh --test",
                  compose_path);

    /* The file as written: Compose spec, so no top-level "version". */
    char *raw = read_file(compose_path);
    if (strncmp(raw, "version:", 8) == 0 || strstr(raw, "\nversion:"))
        test_fail("%s has a top-level \"version\"; the Compose spec has none", compose_path);

    /* kafka-init's topics and partition counts, as in the design. */
    static const char *const topics[] = {
        "create shoal.jobs 4\n",         "create shoal.tasks.high 8\n",
        "create shoal.tasks.normal 8\n", "create shoal.tasks.low 8\n",
        "create shoal.tasks.dlq 2\n",    "create shoal.events 4\n",
    };
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        assert_str_contains(raw, topics[i]);
    free(raw);

    /* The models file the containers point at exists and has the sim aliases. */
    char models_path[4096];
    assert_true((size_t)snprintf(models_path, sizeof(models_path),
                                 "%s/examples/models.compose.json", src) < sizeof(models_path));
    char *models = read_file(models_path);
    assert_str_contains(models, "\"sim-small\"");
    assert_str_contains(models, "\"sim-large\"");
    assert_str_contains(models, "${SHOAL_SIM_URL}/v1/chat/completions");
    free(models);

    /* Deterministic, secret-free input for the child. */
    static const char *const scrub[] = {
        "OPENAI_API_KEY",       "ANTHROPIC_API_KEY",      "POSTGRES_PASSWORD", "SHOAL_LOG_LEVEL",
        "KAFKA_HOST_PORT",      "PG_HOST_PORT",           "COMPOSE_FILE",      "COMPOSE_PROFILES",
        "COMPOSE_PROJECT_NAME", "COMPOSE_PATH_SEPARATOR",
    };
    for (size_t i = 0; i < sizeof(scrub) / sizeof(scrub[0]); i++)
        unsetenv(scrub[i]);
    const char *tmpdir = getenv("TMPDIR");
    char env_file[4096];
    assert_true((size_t)snprintf(env_file, sizeof(env_file), "%s/shoal-compose-env-XXXXXX",
                                 tmpdir && *tmpdir ? tmpdir : "/tmp") < sizeof(env_file));
    int fd = mkstemp(env_file);
    if (fd < 0)
        test_fail("could not create an empty env file in %s: %s", env_file, strerror(errno));
    close(fd);

    shell_quote(compose_path, quoted_compose, sizeof(quoted_compose));
    shell_quote(env_file, quoted_env, sizeof(quoted_env));
    assert_true((size_t)snprintf(cmd, sizeof(cmd), "docker-compose --env-file %s -f %s config 2>&1",
                                 quoted_env, quoted_compose) < sizeof(cmd));
    int status;
    char *cfg = run_capture(cmd, &status);
    unlink(env_file);

    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        test_fail("\"%s\" failed (status %d, exit %d):\n%s", cmd, status,
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1, cfg);
    /* Compose warns about unset variables: each use needs a default. */
    if (strstr(cfg, "WARN") || strstr(cfg, "variable is not set"))
        test_fail("docker-compose config warned:\n%s", cfg);

    static const char *const services[] = {"kafka", "kafka-init", "postgres", "migrate",
                                           "sim",   "scheduler",  "worker",   "prometheus"};
    for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
        char *b = service_block(cfg, services[i]);
        if (!b)
            test_fail("service %s missing from the resolved config:\n%s", services[i], cfg);
        free(b);
    }

    char *kafka = service_block(cfg, "kafka");
    assert_str_contains(kafka, "KAFKA_PROCESS_ROLES: broker,controller");
    assert_str_contains(kafka, "KAFKA_CONTROLLER_QUORUM_VOTERS: 1@kafka:9093");
    assert_str_contains(kafka, "KAFKA_ADVERTISED_LISTENERS: PLAINTEXT://kafka:9092");
    char val[256];
    assert_true(yaml_value(kafka, "KAFKA_AUTO_CREATE_TOPICS_ENABLE", val, sizeof(val)));
    assert_str_eq(val, "false");
    assert_str_contains(kafka, "healthcheck:");
    assert_true(strstr(kafka, "ZOOKEEPER") == NULL);
    free(kafka);

    char *init = service_block(cfg, "kafka-init");
    assert_str_contains(init, "condition: service_healthy");
    assert_str_contains(init, "kafka-topics.sh");
    free(init);

    char *pg = service_block(cfg, "postgres");
    assert_str_contains(pg, "image: postgres:15");
    assert_str_contains(pg, "POSTGRES_PASSWORD: shoal");
    assert_str_contains(pg, "pg_isready");
    assert_str_contains(pg, "/var/lib/postgresql/data");
    free(pg);

    char *migrate = service_block(cfg, "migrate");
    assert_str_contains(migrate, "- shoal\n    - migrate\n");
    assert_str_contains(migrate, "postgres:\n        condition: service_healthy");
    assert_str_contains(migrate, "SHOAL_PG: postgresql://shoal:shoal@postgres:5432/shoal");
    free(migrate);

    char *sim = service_block(cfg, "sim");
    assert_str_contains(sim, "- shoal-sim\n");
    assert_str_contains(sim, "- --bind\n    - 0.0.0.0\n");
    assert_true(strstr(sim, "API_KEY") == NULL);
    free(sim);

    char *sched = service_block(cfg, "scheduler");
    assert_str_contains(sched, "- shoal-scheduler\n");
    assert_str_contains(sched, "kafka-init:\n        condition: service_completed_successfully");
    assert_str_contains(sched, "migrate:\n        condition: service_completed_successfully");
    check_service_env(sched, "scheduler");
    free(sched);

    char *worker = service_block(cfg, "worker");
    assert_str_contains(worker, "- shoal-worker\n");
    assert_str_contains(worker, "deploy:");
    char replicas[32];
    if (!yaml_value(worker, "replicas", replicas, sizeof(replicas)))
        test_fail("worker has no deploy.replicas in:\n%s", worker);
    assert_str_eq(replicas, "3");
    assert_str_contains(worker, "kafka-init:\n        condition: service_completed_successfully");
    assert_str_contains(worker, "migrate:\n        condition: service_completed_successfully");
    check_service_env(worker, "worker");
    assert_true(yaml_value(worker, "SHOAL_METRICS_PORT", val, sizeof(val)));
    assert_true(strstr(val, "9464") != NULL); /* quoting differs between Compose versions */
    free(worker);

    /* Prometheus scrapes the fleet with the config in the tree. */
    char *prom = service_block(cfg, "prometheus");
    assert_str_contains(prom, "deploy/prometheus.yml");
    assert_str_contains(prom, "/etc/prometheus/prometheus.yml");
    free(prom);

    free(cfg);
    printf("ok compose.yaml resolves: 8 services, worker replicas 3, kafka in KRaft mode\n");
    return 0;
}
