/*
 * The provider simulator: an HTTP server that speaks the OpenAI chat
 * completions and Anthropic messages wire shapes, answers with content derived
 * only from the prompt (so a test can tell which input a result belongs to),
 * adds configurable latency without holding a thread per request, and counts
 * what it served (so a test can check utilization and that nothing was called
 * twice).
 *
 * Endpoints:
 *   POST /v1/chat/completions   OpenAI shape
 *   POST /v1/messages           Anthropic shape
 *   GET  /stats                 counters as JSON; POST /stats/reset zeroes them
 *   GET  /health                200 "ok"
 *
 * Content: U is the last user message, H the 64-bit FNV-1a hash (16 lower-case
 * hex digits) of all message contents concatenated in order, the system
 * prompt included. Text replies are "sim " H " " U; when JSON is asked for
 * (OpenAI response_format json_object or json_schema, or U contains "JSON")
 * the reply is the JSON text {"sim":H,"echo":U}. prompt tokens are
 * ceil(bytes of all contents / 4), at least 1; completion tokens are
 * ceil(bytes of the reply / 4).
 *
 * Rate limits (429 with Retry-After and x-ratelimit-* headers) and injected
 * faults (5xx, timeouts, malformed bodies) are planned: each will be a new
 * field of shoal_sim_conf_t, whose zero value keeps today's behaviour, and a
 * step in the request path between parsing and replying.
 */
#ifndef SHOAL_SIM_SIM_H
#define SHOAL_SIM_SIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct shoal_sim shoal_sim_t;

/* Bodies larger than this are answered with 413. */
#define SHOAL_SIM_MAX_BODY_DEFAULT (8u * 1024 * 1024)

/* Fill with shoal_sim_conf_init() before setting fields, so fields added later
 * start at their defaults. */
typedef struct {
    const char *bind;   /* IPv4 address to listen on; default "127.0.0.1"; borrowed by _new */
    int port;           /* 0 = any free port (read it back with shoal_sim_port) */
    long latency_ms;    /* mean delay added to each 200 reply; 0 = none */
    long jitter_ms;     /* delay is uniform in latency_ms +/- jitter_ms, never < 0 */
    int threads;        /* polling threads; each runs its own epoll loop; default 1 */
    unsigned max_conns; /* concurrent connections accepted; default 16384 */
    size_t max_body;    /* request body cap; default SHOAL_SIM_MAX_BODY_DEFAULT */
} shoal_sim_conf_t;

/* Status codes counted one by one; larger codes are never produced. */
#define SHOAL_SIM_STATUS_MAX 600

/* A snapshot of the counters. Every request is counted except those to
 * /stats, /stats/reset and /health. */
typedef struct {
    long long requests;
    long long authorized_requests;             /* with an Authorization or x-api-key header */
    long long by_status[SHOAL_SIM_STATUS_MAX]; /* indexed by HTTP status */
    long long prompt_tokens;                   /* summed over 200 replies */
    long long completion_tokens;               /* summed over 200 replies */
    long long distinct_prompts;                /* distinct H answered with 200 */
    long long repeated_prompts;                /* 200 replies whose H already had a 200 */
    long long untracked_prompts;               /* 200 replies past the tracking cap: not checked */
    long long inflight;                        /* requests received and not yet answered */
    long long max_inflight;                    /* peak of inflight since start or reset */
} shoal_sim_stats_t;

/* Defaults for every field. */
void shoal_sim_conf_init(shoal_sim_conf_t *conf);

/* Starts listening and serving on background threads. Returns an owned handle,
 * or NULL with the reason in errbuf (bad address, port in use, no memory). */
shoal_sim_t *shoal_sim_new(const shoal_sim_conf_t *conf, char *errbuf, size_t errlen);

/* The port actually bound. */
int shoal_sim_port(const shoal_sim_t *sim);

/* Copies the counters into *out. Thread-safe; the snapshot is consistent. */
void shoal_sim_stats(shoal_sim_t *sim, shoal_sim_stats_t *out);

/* Zeroes the counters and forgets the prompts seen, as POST /stats/reset does.
 * inflight is live and kept; max_inflight restarts from it. Thread-safe. */
void shoal_sim_stats_reset(shoal_sim_t *sim);

/* Stops serving: delayed replies are sent at once, open connections closed,
 * threads joined. NULL is ok. Must not race with other calls on sim. */
void shoal_sim_destroy(shoal_sim_t *sim);

/* The hash H over the concatenation of n strings (FNV-1a, 64 bits), for tests
 * that predict the simulator's content. parts are borrowed. */
uint64_t shoal_sim_hash(const char *const *parts, size_t n);

#endif
