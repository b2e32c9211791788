/*
 * Process plumbing shared by the binaries (see service.h).
 */
#include "common/service.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/kafka.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/opt.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

shoal_err_t shoal_service_log_setup(const char *proc, const char *level, const char *format,
                                    char *errbuf, size_t errlen)
{
    int l = shoal_log_level_parse(level ? level : "info");
    if (l < 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "log-level: \"%s\" is not one of debug, info, warn, error, off",
                             level);
    if (format && strcmp(format, "text") != 0 && strcmp(format, "json") != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "log-format: \"%s\" is not one of text, json", format);
    shoal_log_init(proc, (shoal_log_level_t)l, format && !strcmp(format, "json"));
    return SHOAL_OK;
}

static void on_deadline(int sig)
{
    static const char msg[] = "shutdown took too long (Kafka or PostgreSQL unreachable?); "
                              "exiting, unfinished work will be redelivered\n";
    (void)sig;
    ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)w;
    _exit(1);
}

void shoal_service_shutdown_deadline(unsigned seconds)
{
    signal(SIGALRM, on_deadline);
    alarm(seconds);
}

int shoal_service_cmdline(const char *proc, const char *usage, const char *summary,
                          const struct shoal_opt *opts, void *conf, int argc, char **argv,
                          const char *const *log_level, const char *const *log_format,
                          const void *kafka)
{
    shoal_optres_t res;
    char err[1024];
    const shoal_kprops_t *kp = kafka;

    if (shoal_opt_parse(opts, conf, argc, argv, 1, &res, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", proc, err);
        return 2;
    }
    if (res.help) {
        shoal_opt_help(stdout, usage, summary, opts);
        return 0;
    }
    if (kp && kp->n == 1 && !strcmp(kp->kv[0], "list")) {
        shoal_kafka_print_properties();
        return 0;
    }
    if (res.npos) {
        fprintf(stderr, "%s: unexpected argument \"%s\" (see --help)\n", proc, res.pos[0]);
        return 2;
    }
    const char *short_name = strncmp(proc, "shoal-", 6) ? proc : proc + 6;
    if (shoal_service_log_setup(short_name, *log_level, *log_format, err, sizeof(err)) !=
        SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", proc, err);
        return 2;
    }
    return -1;
}

void shoal_service_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int shoal_service_stopping(void)
{
    return stop_flag != 0;
}

void shoal_service_request_stop(void)
{
    stop_flag = 1;
}

double shoal_service_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

double shoal_service_unix_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void shoal_service_sleep_ms(long ms)
{
    while (ms > 0 && !stop_flag) {
        long step = ms > 50 ? 50 : ms;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

shoal_err_t shoal_service_migrate(shoal_pg_t *pg, int wait_s, char *errbuf, size_t errlen)
{
    double deadline = shoal_service_now_ms() + wait_s * 1000.0;
    long backoff = 100;
    for (;;) {
        int applied = 0;
        shoal_err_t err = shoal_migrate_apply(pg, &applied, errbuf, errlen);
        if (err == SHOAL_OK) {
            if (applied)
                shoal_log_info("migrate", "database schema updated applied=%d", applied);
            return SHOAL_OK;
        }
        if (!shoal_err_retriable(err) || shoal_service_now_ms() > deadline || stop_flag)
            return err;
        shoal_log_warn("migrate", "database not ready, retrying error=\"%s\"", errbuf);
        shoal_service_sleep_ms(backoff);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
    }
}
