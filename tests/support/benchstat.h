/*
 * Measurements for the benchmarks in tests/bench/: CPU time and peak memory
 * of processes from /proc, the simulator's per-second history reduced to
 * steady-state rates, and percentiles. Linux only; a process that cannot be
 * read counts as zero rather than failing the run, since a benchmark reports
 * figures and never asserts them.
 */
#ifndef SHOAL_TESTS_SUPPORT_BENCHSTAT_H
#define SHOAL_TESTS_SUPPORT_BENCHSTAT_H

#include <jansson.h>
#include <stddef.h>

/* utime + stime of a live process, in microseconds (0 if unreadable). */
double bench_cpu_us(int pid);

/* CPU of a process and all of its descendants, in microseconds: its own
 * time, the time of children it has reaped (cutime + cstime) and the time of
 * descendants still running. Fits the PostgreSQL postmaster, which reaps its
 * backends. */
double bench_cpu_tree_us(int pid);

/* CPU of this process (every thread, the mock Kafka cluster included). */
double bench_self_cpu_us(void);

/* PID of the first child of this process whose command name is comm
 * (e.g. "shoal-sim"), or -1. */
int bench_child_pid(const char *comm);

/* Peak resident set size (VmHWM) and current (VmRSS) of a process, in KiB. */
long bench_peak_rss_kb(int pid);
long bench_rss_kb(int pid);

/* Load averages (1, 5, 15 min) formatted as "0.52 0.61 0.70" into out. */
void bench_loadavg(char *out, size_t len);

/* Sums of the simulator's per-second history over seconds [from, to) counted
 * from history_start_unix (to <= 0 means "to the last complete second"). */
typedef struct {
    double seconds; /* how many seconds were summed */
    long long served, limited, tokens;
    int first, last; /* the range actually used */
} bench_window_t;

bench_window_t bench_sim_window(json_t *stats, int from, int to);

/* Index in the history of the last complete second (the current one is
 * still filling), or -1 for an empty history. */
int bench_sim_last_second(json_t *stats);

/* Element i of one of the history arrays ("served_per_s", ...), 0 outside. */
long long bench_sim_at(json_t *stats, const char *series, int i);

/* The p-th percentile (0..100) of v[0..n), nearest rank; sorts v in place. */
double bench_percentile(double *v, size_t n, double p);

#endif
