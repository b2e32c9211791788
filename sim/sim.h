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
 *   GET  /stats                 counters as JSON; POST /stats/reset zeroes them:
 *                               the fields of shoal_sim_stats_t by the same names,
 *                               injected as {"5xx","429","overloaded","hang",
 *                               "malformed","truncated","slow","fail_marker"}, and
 *                               served_per_s, limited_per_s, tokens_per_s arrays of
 *                               history_len entries from history_start_unix
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
 * Rate limits (rpm, tpm, input_tpm, output_tpm) are token buckets refilled
 * continuously at limit/60 per second and holding burst_s seconds of refill
 * (60 = a whole minute's worth; buckets start full). A model request is
 * checked at arrival, before any latency: it costs 1 request and prompt
 * tokens + max_tokens tokens (the actual completion tokens when max_tokens is
 * absent); input = prompt tokens, output = max_tokens or the actual. If any
 * configured bucket lacks its cost the answer is 429 and nothing is taken;
 * otherwise every bucket pays. Requests that do not parse, and the fail
 * marker's 400s, are answered before the limits and cost nothing. A request
 * bigger than a bucket's capacity can never pass: 429 without retry-after.
 *
 * Rate-limit headers (limit_headers) go on every model answer that reached
 * the limits, 200s included, for each configured limit:
 *   "openai"    x-ratelimit-{limit,remaining,reset}-{requests,tokens} (reset
 *               is the time to a full bucket: "12ms", "1s", "6m0s",
 *               "1m30.5s"); a 429 adds retry-after (whole seconds, rounded
 *               up, at least 1) and retry-after-ms: the time until this
 *               request would fit
 *   "anthropic" anthropic-ratelimit-{requests,tokens,input-tokens,
 *               output-tokens}-{limit,remaining,reset}, reset as an RFC 3339
 *               UTC time rounded up to the second; a 429 adds retry-after
 *   "none"      nothing at all, and a 429 is a bare text/plain body
 * retry_after = 0 drops retry-after and retry-after-ms in every style.
 * remaining is the whole part of the bucket's level after this request.
 *
 * time_scale s makes buckets refill s times faster (a "minute" lasts 60/s
 * real seconds). Every duration and time the simulator reports is real
 * wall-clock time consistent with that faster refill, so a client that obeys
 * them exactly is exactly right.
 *
 * Faults: per model request one draw from a generator seeded by seed picks at
 * most one of 5xx, 429, overloaded, hang, malformed, truncated (their p_
 * probabilities must sum to at most 1, and each is hit at exactly its rate
 * in the long run); a second draw adds slow_ms to the answer with p_slow. An
 * injected 429 bypasses the limits and takes nothing from them; the other
 * faults only hit requests the limits admitted (they have paid). Draws happen
 * under one lock in arrival order, so a fixed seed and a fixed request order
 * give the same faults every run.
 *   5xx         500, 502 or 503 (equally likely), error body in the route's shape
 *   429         a 429 with headers per style; retry-after is the limits' wait
 *               or, with none due, one simulated second
 *   overloaded  Anthropic: 529 overloaded_error; OpenAI: 503 server_error
 *   hang        no answer: the connection stays open until the client closes
 *               it (noticed within 0.2 s) or the simulator stops
 *   malformed   200 whose body is either cut JSON or JSON without the content
 *   truncated   200 with the reply cut to half its bytes (at a UTF-8
 *               boundary), finish_reason "length" / stop_reason "max_tokens"
 * A prompt containing fail_marker (any message or the system prompt) is
 * always answered 400 invalid_request_error naming the marker. Normal
 * answers say finish_reason "stop" / stop_reason "end_turn"; max_tokens never
 * cuts a reply.
 *
 * Restart: the listening socket uses SO_REUSEADDR, so a simulator may be
 * destroyed and a new one started on the same port at once (a provider that
 * refuses connections for a while, then is back).
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

    /* Limits per (simulated) minute; 0 = unlimited. */
    long rpm;                  /* requests */
    long tpm;                  /* prompt + output tokens */
    long input_tpm;            /* prompt tokens (Anthropic style) */
    long output_tpm;           /* max_tokens, or the actual completion tokens without it */
    double burst_s;            /* bucket capacity in seconds of refill; 0 = 60 */
    double time_scale;         /* simulated seconds per real second; 0 = 1 */
    const char *limit_headers; /* "openai" (also NULL), "anthropic" or "none"; borrowed */
    int retry_after;           /* send retry-after on 429s; default 1 */

    /* Faults, probabilities 0..1 drawn per model request. */
    unsigned long long seed; /* seeds the fault draws */
    double p_5xx;
    double p_429;
    double p_overloaded;
    double p_hang;
    double p_malformed;
    double p_truncated;      /* the six above sum to at most 1 */
    double p_slow;           /* independent of the others */
    long slow_ms;            /* added to an answer drawn slow */
    double p_drop_item;      /* batch-mode prompts: each item left out of the answer */
    const char *fail_marker; /* default "SIM_FAIL_400"; NULL = none; borrowed for the sim's life */
} shoal_sim_conf_t;

/* Status codes counted one by one; larger codes are never produced. */
#define SHOAL_SIM_STATUS_MAX 600

/* Seconds of per-second history kept (a ring). */
#define SHOAL_SIM_HISTORY_S 600

/* Faults injected, by kind, counted when decided. */
typedef struct {
    long long http_5xx;    /* 500/502/503 */
    long long http_429;    /* 429 regardless of limits */
    long long overloaded;  /* 529 (Anthropic) or 503 (OpenAI) */
    long long hang;        /* requests never answered (total; hung is the live count) */
    long long malformed;   /* 200 with a broken body */
    long long truncated;   /* 200 cut short */
    long long slow;        /* answers given slow_ms extra latency */
    long long fail_marker; /* 400s for prompts with fail_marker */
} shoal_sim_injected_t;

/* A snapshot of the counters. Every request is counted except those to
 * /stats, /stats/reset and /health. Answers are counted when decided, at
 * arrival, not when a delayed answer is sent. */
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
    long long rate_limited;                    /* 429s from the limits (injected ones aside) */
    shoal_sim_injected_t injected;             /* faults injected, by kind */
    long long hung;                            /* requests hanging now (live, like inflight) */

    /* Per-second history of the last SHOAL_SIM_HISTORY_S seconds since start
     * or reset, oldest first: slot i covers [history_start_unix + i,
     * history_start_unix + i + 1) and the last slot is the current, partial
     * second. While the history spans the whole run, served_per_s sums to
     * by_status[200] and limited_per_s to by_status[429]. */
    double history_start_unix;                    /* wall-clock time of slot 0 */
    int history_len;                              /* slots filled, 1..SHOAL_SIM_HISTORY_S */
    long long served_per_s[SHOAL_SIM_HISTORY_S];  /* 200 answers (malformed included) */
    long long limited_per_s[SHOAL_SIM_HISTORY_S]; /* 429 answers, limits and injected */
    long long tokens_per_s[SHOAL_SIM_HISTORY_S];  /* prompt + completion tokens of 200s */
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

/* Zeroes the counters and the history (which restarts now) and forgets the
 * prompts seen, as POST /stats/reset does. inflight and hung are live and
 * kept; max_inflight restarts from inflight. The rate-limit buckets are not
 * touched. Thread-safe. */
void shoal_sim_stats_reset(shoal_sim_t *sim);

/* Stops serving: delayed replies are sent at once, open connections closed,
 * threads joined. NULL is ok. Must not race with other calls on sim. */
void shoal_sim_destroy(shoal_sim_t *sim);

/* The hash H over the concatenation of n strings (FNV-1a, 64 bits), for tests
 * that predict the simulator's content. parts are borrowed. */
uint64_t shoal_sim_hash(const char *const *parts, size_t n);

#endif
