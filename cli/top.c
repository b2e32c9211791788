/*
 * `shoal top`: a live view of the fleet from PostgreSQL, refreshed every
 * second: live workers, each model's traffic against its limit, fleet
 * throughput, the queue per priority and the latest jobs. q quits.
 *
 * Everything comes from the database, so it works against any fleet the CLI
 * can reach, and costs a handful of indexed queries a refresh: per-model
 * traffic is read through shoal.lanes so the (model, finished_at) index of
 * shoal.attempts answers it, and the queue comes from the running jobs'
 * counters (pending + queued tasks), not from a scan of shoal.tasks.
 *
 * Plain output, no curses: on a terminal that understands ANSI a frame is
 * drawn over the last one (cursor home, erase to end of line), every line cut
 * to the terminal's width so nothing wraps; on a dumb terminal or a pipe
 * frames are printed one after the other without escape codes. --once prints
 * one frame and exits.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli/clienv.h"
#include "cli/commands.h"
#include "cli/usd.h"
#include "common/opt.h"
#include "common/pg.h"
#include "common/service.h"

#define MAX_LINES 200
#define LINE_LEN 256

struct top_conf {
    const char *pg;
    long interval_ms;
    long jobs;
    int once;
};

#define OFF(f) offsetof(struct top_conf, f)
static const struct shoal_opt top_opts[] = {
    {"pg", SHOAL_OPT_STR | SHOAL_OPT_SECRET, OFF(pg), "", 0, 0,
     "PostgreSQL conninfo or URI (empty: libpq's PG* environment)"},
    {"interval-ms", SHOAL_OPT_INT, OFF(interval_ms), "1000", 100, 60000,
     "how often the view is refreshed"},
    {"jobs", SHOAL_OPT_INT, OFF(jobs), "10", 0, 100, "how many jobs are listed at most"},
    {"once", SHOAL_OPT_BOOL, OFF(once), "false", 0, 0, "print one frame and exit"},
    {0},
};

/* One frame's text: lines built first, then drawn at once. */
struct frame {
    int n;
    char line[MAX_LINES][LINE_LEN];
};

static void add(struct frame *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct frame *f, const char *fmt, ...)
{
    if (f->n >= MAX_LINES)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *l = f->line[f->n++];
    vsnprintf(l, LINE_LEN, fmt, ap);
    va_end(ap);
    /* A newline or escape inside a value (a libpq message has both kinds)
     * would break the frame's layout: one line stays one line. */
    for (; *l; l++)
        if ((unsigned char)*l < 0x20 || *l == 0x7f)
            *l = ' ';
}

/* 950, 12.3k, 4.5M: counts that fit a column. */
static const char *human(double v, char *buf, size_t len)
{
    if (v >= 1e6)
        snprintf(buf, len, "%.1fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(buf, len, "%.1fk", v / 1e3);
    else
        snprintf(buf, len, "%.0f", v);
    return buf;
}

static const char *val(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static double num(PGresult *r, int row, int col)
{
    const char *v = val(r, row, col);
    return v ? strtod(v, NULL) : 0;
}

/* Runs one query for the frame; on an error adds it as a line and returns
 * NULL so the rest of the frame still shows. */
static PGresult *query(shoal_pg_t *pg, struct frame *f, int *failed, const char *sql,
                       const char *p1)
{
    char err[512];
    PGresult *r;
    const char *params[] = {p1};
    if (shoal_pg_exec(pg, sql, p1 ? 1 : 0, params, &r, err, sizeof(err)) != SHOAL_OK) {
        add(f, "database: %s", err);
        *failed = 1;
        return NULL;
    }
    return r;
}

static const char models_sql[] =
    "SELECT s.model, s.live_workers, s.limit_rps, s.limit_source, "
    "       greatest(extract(epoch FROM s.hold_until - now()), 0), "
    "       a.calls10 / 10.0, a.r429_10 / 10.0, a.lat10 / 10000.0, a.ok60, a.calls60, "
    "       a.tok60, a.p50 "
    "  FROM shoal.lane_status s "
    " CROSS JOIN LATERAL ("
    "   SELECT count(*) FILTER (WHERE finished_at > now() - interval '10 s') AS calls10, "
    "          count(*) FILTER (WHERE finished_at > now() - interval '10 s' "
    "                             AND http_status = 429) AS r429_10, "
    "          coalesce(sum(latency_ms) FILTER (WHERE finished_at > now() - interval '10 s'), "
    "                   0) AS lat10, "
    "          count(*) FILTER (WHERE outcome = 'ok') AS ok60, "
    "          count(*) AS calls60, "
    "          coalesce(sum(tokens_in + tokens_out), 0) AS tok60, "
    "          percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) "
    "              FILTER (WHERE outcome = 'ok') AS p50 "
    "     FROM shoal.attempts a "
    "    WHERE a.model = s.model AND a.finished_at > now() - interval '60 s') a "
    " ORDER BY s.model";

/* Running jobs first, then the latest ones; the ids are picked from jobs
 * before job_progress sums each one's calls. */
static const char jobs_sql[] =
    "SELECT p.job_id, p.status, p.tasks_done, p.tasks_total, p.tasks_failed, p.percent, "
    "       p.elapsed_s, p.cost_usd, coalesce(p.eta_s, -1) "
    "  FROM (SELECT job_id FROM shoal.jobs "
    "         ORDER BY status = 'running' DESC, submitted_at DESC LIMIT $1::int) j "
    "  JOIN shoal.job_progress p USING (job_id) "
    " ORDER BY p.status = 'running' DESC, p.submitted_at DESC";

static void add_summary(shoal_pg_t *pg, struct frame *f, int *failed, int live)
{
    PGresult *r = query(pg, f, failed,
                        "SELECT (SELECT count(DISTINCT worker_id) FROM shoal.leases "
                        "         WHERE expires_at > now()), "
                        "       (SELECT count(*) FROM shoal.jobs WHERE status = 'running'), "
                        "       to_char(now(), 'YYYY-MM-DD HH24:MI:SS')",
                        NULL);
    if (!r)
        return;
    add(f, "shoal top  %s  workers %s  jobs running %s%s", PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 0),
        PQgetvalue(r, 0, 1), live ? "  (q quits)" : "");
    PQclear(r);
}

static void add_queue(shoal_pg_t *pg, struct frame *f, int *failed)
{
    static const char *const prios[] = {"high", "normal", "low"};
    long depth[3] = {0, 0, 0};
    PGresult *r = query(pg, f, failed,
                        "SELECT coalesce(priority, 'normal'), "
                        "       sum(tasks_total - tasks_done - tasks_failed) "
                        "  FROM shoal.jobs WHERE status = 'running' GROUP BY 1",
                        NULL);
    if (!r)
        return;
    for (int i = 0; i < PQntuples(r); i++)
        for (int p = 0; p < 3; p++)
            if (!strcmp(PQgetvalue(r, i, 0), prios[p]))
                depth[p] += strtol(PQgetvalue(r, i, 1), NULL, 10);
    PQclear(r);
    add(f, "queue (tasks not done yet):  high %ld  normal %ld  low %ld", depth[0], depth[1],
        depth[2]);
}

static void add_models(shoal_pg_t *pg, struct frame *f, int *failed)
{
    char a[32], b[32], c[32], limit[32], hold[32], p50[32];
    PGresult *r = query(pg, f, failed, models_sql, NULL);
    if (!r)
        return;
    double ok60 = 0, calls60 = 0, tok60 = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        ok60 += num(r, i, 8);
        calls60 += num(r, i, 9);
        tok60 += num(r, i, 10);
    }
    add(f, "throughput (last 60s):  %s tasks done/min  %s calls/min  %s tokens/min",
        human(ok60, a, sizeof(a)), human(calls60, b, sizeof(b)), human(tok60, c, sizeof(c)));
    add(f, "%s", "");
    /* INFLIGHT: calls in flight on average over the last 10 s (the time the
     * calls that ended then spent, over 10 s); the database sees a call only
     * once it ended, so calls still running are not in it. */
    add(f, "%-20s %8s %7s %8s %7s %9s %-7s %7s %6s", "MODEL", "CALLS/S", "429/S", "INFLIGHT",
        "P50MS", "LIMIT/S", "SOURCE", "WORKERS", "HOLD");
    for (int i = 0; i < PQntuples(r); i++) {
        if (val(r, i, 11))
            snprintf(p50, sizeof(p50), "%.0f", num(r, i, 11));
        else
            snprintf(p50, sizeof(p50), "-");
        if (val(r, i, 2))
            snprintf(limit, sizeof(limit), "%.2f", num(r, i, 2));
        else
            snprintf(limit, sizeof(limit), "-");
        if (num(r, i, 4) > 0)
            snprintf(hold, sizeof(hold), "%.1fs", num(r, i, 4));
        else
            snprintf(hold, sizeof(hold), "-");
        add(f, "%-20.20s %8.1f %7.1f %8.1f %7s %9s %-7s %7s %6s", PQgetvalue(r, i, 0), num(r, i, 5),
            num(r, i, 6), num(r, i, 7), p50, limit, PQgetvalue(r, i, 3), PQgetvalue(r, i, 1), hold);
    }
    if (PQntuples(r) == 0)
        add(f, "(no model has been used yet)");
    PQclear(r);
}

static void add_jobs(shoal_pg_t *pg, struct frame *f, int *failed, long max_jobs)
{
    char limit[24], cost[32], eta[32];
    if (max_jobs <= 0)
        return;
    snprintf(limit, sizeof(limit), "%ld", max_jobs);
    PGresult *r = query(pg, f, failed, jobs_sql, limit);
    if (!r)
        return;
    add(f, "%s", "");
    add(f, "%-36s %-9s %13s %6s %6s %9s %9s %12s", "JOB", "STATUS", "DONE/TOTAL", "FAILED", "%",
        "ELAPSED", "ETA", "COST");
    for (int i = 0; i < PQntuples(r); i++) {
        char done[32];
        snprintf(done, sizeof(done), "%s/%s", PQgetvalue(r, i, 2), PQgetvalue(r, i, 3));
        if (num(r, i, 8) >= 0)
            snprintf(eta, sizeof(eta), "%.1fs", num(r, i, 8));
        else
            snprintf(eta, sizeof(eta), "-");
        add(f, "%-36.36s %-9s %13s %6s %6.1f %8.1fs %9s %12s", PQgetvalue(r, i, 0),
            PQgetvalue(r, i, 1), done, PQgetvalue(r, i, 4), num(r, i, 5), num(r, i, 6), eta,
            shoal_usd_format(num(r, i, 7), cost, sizeof(cost)));
    }
    if (PQntuples(r) == 0)
        add(f, "(no jobs yet)");
    PQclear(r);
}

/* Terminal size from stdout; 0 when it is not a terminal (no cutting). */
static void term_size(int *cols, int *rows)
{
    struct winsize ws;
    *cols = *rows = 0;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
        *cols = ws.ws_col;
        *rows = ws.ws_row;
    }
}

/* Draws the frame. ansi: over the last frame, each line cut one short of
 * the width (a full line makes some terminals wrap) and at most rows lines;
 * else appended as plain text. */
static void draw(const struct frame *f, int ansi)
{
    int cols, rows;
    term_size(&cols, &rows);
    if (ansi)
        fputs("\033[H", stdout);
    for (int i = 0; i < f->n; i++) {
        if (ansi && rows > 0 && i >= rows - 1)
            break;
        int len = (int)strlen(f->line[i]);
        if (cols > 1 && len > cols - 1)
            len = cols - 1;
        fwrite(f->line[i], 1, (size_t)len, stdout);
        fputs(ansi ? "\033[K\n" : "\n", stdout);
    }
    if (ansi)
        fputs("\033[J", stdout);
    else if (f->n)
        fputc('\n', stdout);
    fflush(stdout);
}

/* Waits up to ms for a key on a terminal stdin; 1 when q (or Q) came. Stops
 * reading stdin once it ended (a closed or redirected stdin). */
static int wait_key(long ms, int *stdin_open)
{
    struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
    double end = shoal_service_now_ms() + ms;
    while (!shoal_service_stopping()) {
        double left = end - shoal_service_now_ms();
        if (left <= 0)
            return 0;
        if (!*stdin_open) {
            shoal_service_sleep_ms((long)left);
            return 0;
        }
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno != EINTR)
            *stdin_open = 0;
        if (n <= 0)
            continue;
        char buf[64];
        ssize_t got = read(STDIN_FILENO, buf, sizeof(buf));
        if (got <= 0) {
            if (got == 0 || (errno != EINTR && errno != EAGAIN))
                *stdin_open = 0;
            continue;
        }
        if (memchr(buf, 'q', (size_t)got) || memchr(buf, 'Q', (size_t)got))
            return 1;
    }
    return 0;
}

static int parse_top(struct top_conf *c, int argc, char **argv)
{
    static const char usage[] = "shoal top [options]";
    static const char summary[] =
        "A live view of the fleet: live workers, each model's calls/s, 429s/s, calls in\n"
        "flight (averaged over the last 10 s), median latency and limit, throughput over the\n"
        "last minute, tasks not done yet per priority, and the latest jobs. Refreshes every\n"
        "second; q or Ctrl-C quits. --once prints one frame and exits (for scripts).";
    char err[512];
    shoal_optres_t res;
    memset(c, 0, sizeof(*c));
    shoal_clienv_load();
    if (shoal_opt_parse(top_opts, c, argc, argv, 1, &res, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: %s\n", err);
        return SHOAL_EXIT_USAGE;
    }
    if (res.help) {
        shoal_opt_help(stdout, usage, summary, top_opts);
        return SHOAL_EXIT_OK;
    }
    if (res.npos) {
        fprintf(stderr, "shoal: usage: %s (see --help)\n", usage);
        return SHOAL_EXIT_USAGE;
    }
    return -1;
}

int shoal_cmd_top(int argc, char **argv)
{
    struct top_conf c;
    int rc = parse_top(&c, argc, argv);
    if (rc >= 0)
        return rc;

    const char *term = getenv("TERM");
    int ansi = !c.once && isatty(STDOUT_FILENO) && term && *term && strcmp(term, "dumb") != 0;
    int stdin_open = !c.once && isatty(STDIN_FILENO);
    struct termios saved;
    int raw = 0;
    if (stdin_open && tcgetattr(STDIN_FILENO, &saved) == 0) {
        /* Keys arrive one at a time and are not echoed over the frame. */
        struct termios t = saved;
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        t.c_cc[VMIN] = 0;
        t.c_cc[VTIME] = 0;
        raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
    }
    shoal_service_signals();
    if (ansi)
        fputs("\033[?25l\033[H\033[2J", stdout); /* hide the cursor, clear */

    struct frame *f = malloc(sizeof(*f));
    shoal_pg_t *pg = shoal_pg_new(c.pg, "shoal-top");
    rc = f && pg ? SHOAL_EXIT_OK : SHOAL_EXIT_ERROR;
    while (rc == SHOAL_EXIT_OK) {
        int failed = 0;
        f->n = 0;
        add_summary(pg, f, &failed, !c.once);
        if (!failed) {
            add_queue(pg, f, &failed);
            add_models(pg, f, &failed);
            add_jobs(pg, f, &failed, c.jobs);
        }
        draw(f, ansi);
        if (c.once) {
            rc = failed ? SHOAL_EXIT_ERROR : SHOAL_EXIT_OK;
            break;
        }
        if (wait_key(c.interval_ms, &stdin_open) || shoal_service_stopping())
            break;
    }

    if (ansi)
        fputs("\033[?25h\n", stdout); /* the cursor back */
    fflush(stdout);
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    shoal_pg_destroy(pg);
    free(f);
    return rc;
}
