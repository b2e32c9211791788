/*
 * Benchmark measurements (see benchstat.h).
 */
#include "tests/support/benchstat.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pstat {
    char comm[64];
    int ppid;
    unsigned long utime, stime;
    long cutime, cstime;
};

static int read_stat(int pid, struct pstat *ps)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name sits in parentheses and may hold spaces or ")". */
    char *open = strchr(buf, '('), *close = strrchr(buf, ')');
    if (!open || !close || close < open)
        return -1;
    size_t cl = (size_t)(close - open - 1);
    if (cl >= sizeof(ps->comm))
        cl = sizeof(ps->comm) - 1;
    memcpy(ps->comm, open + 1, cl);
    ps->comm[cl] = '\0';
    /* fields after ")": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17) */
    if (sscanf(close + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &ps->ppid,
               &ps->utime, &ps->stime, &ps->cutime, &ps->cstime) != 5)
        return -1;
    return 0;
}

static double ticks_us(double ticks)
{
    return ticks * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

double bench_cpu_us(int pid)
{
    struct pstat ps;
    if (pid <= 0 || read_stat(pid, &ps) != 0)
        return 0;
    return ticks_us((double)(ps.utime + ps.stime));
}

/* Calls fn for every process whose parent is ppid. */
static void each_child(int ppid, void (*fn)(int pid, const struct pstat *ps, void *arg), void *arg)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        struct pstat ps;
        if (*end || pid <= 0 || read_stat((int)pid, &ps) != 0 || ps.ppid != ppid)
            continue;
        fn((int)pid, &ps, arg);
    }
    closedir(d);
}

static void add_tree(int pid, const struct pstat *ps, void *arg)
{
    double *sum = arg;
    *sum +=
        ticks_us((double)ps->utime + (double)ps->stime + (double)ps->cutime + (double)ps->cstime);
    each_child(pid, add_tree, arg);
}

double bench_cpu_tree_us(int pid)
{
    struct pstat ps;
    double sum = 0;
    if (pid <= 0 || read_stat(pid, &ps) != 0)
        return 0;
    add_tree(pid, &ps, &sum);
    return sum;
}

double bench_self_cpu_us(void)
{
    return bench_cpu_us((int)getpid());
}

struct find {
    const char *comm;
    int pid;
};

static void match_comm(int pid, const struct pstat *ps, void *arg)
{
    struct find *f = arg;
    if (f->pid < 0 && strcmp(ps->comm, f->comm) == 0)
        f->pid = pid;
}

int bench_child_pid(const char *comm)
{
    struct find f = {comm, -1};
    each_child((int)getpid(), match_comm, &f);
    return f.pid;
}

static long status_kb(int pid, const char *field)
{
    char path[64], line[256], fmt[64];
    long kb = 0;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    snprintf(fmt, sizeof(fmt), "%s: %%ld kB", field);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, fmt, &kb) == 1)
            break;
    fclose(f);
    return kb;
}

long bench_peak_rss_kb(int pid)
{
    return status_kb(pid, "VmHWM");
}

long bench_rss_kb(int pid)
{
    return status_kb(pid, "VmRSS");
}

void bench_loadavg(char *out, size_t len)
{
    double l[3] = {-1, -1, -1};
    if (getloadavg(l, 3) != 3)
        snprintf(out, len, "unknown");
    else
        snprintf(out, len, "%.2f %.2f %.2f", l[0], l[1], l[2]);
}

long long bench_sim_at(json_t *stats, const char *series, int i)
{
    json_t *a = json_object_get(stats, series);
    if (i < 0 || (size_t)i >= json_array_size(a))
        return 0;
    return (long long)json_integer_value(json_array_get(a, (size_t)i));
}

int bench_sim_last_second(json_t *stats)
{
    return (int)json_array_size(json_object_get(stats, "served_per_s")) - 2;
}

bench_window_t bench_sim_window(json_t *stats, int from, int to)
{
    bench_window_t w = {0, 0, 0, 0, 0, 0};
    int last = bench_sim_last_second(stats);
    if (from < 0)
        from = 0;
    if (to <= 0 || to > last + 1)
        to = last + 1;
    w.first = from;
    w.last = to - 1;
    for (int i = from; i < to; i++) {
        w.served += bench_sim_at(stats, "served_per_s", i);
        w.limited += bench_sim_at(stats, "limited_per_s", i);
        w.tokens += bench_sim_at(stats, "tokens_per_s", i);
        w.seconds += 1;
    }
    return w;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}
