/*
 * The provider simulator (see sim.h for what it answers).
 *
 * libmicrohttpd runs the HTTP side on its own epoll thread(s). A request's
 * body is gathered into a per-request buffer capped at max_body, parsed with
 * jansson, and answered with a reply built from the prompt alone. Latency
 * never blocks a thread: the connection is suspended and put on a timer heap;
 * one timer thread resumes it when due, and libmicrohttpd calls the handler
 * again, which queues the reply it had prepared. So thousands of delayed
 * replies cost one heap entry each, not one thread each.
 *
 * Locks: timers.lock guards the heap and is held across
 * MHD_suspend_connection() and MHD_resume_connection(), so a connection is
 * never resumed before it is suspended; libmicrohttpd never calls back into
 * us while holding its own locks, so there is no cycle. stats_lock guards the
 * counters and the set of prompts seen. Neither is taken while holding the
 * other.
 *
 * Shutdown: the timer thread is told to stop and resumes every sleeping
 * connection before it exits; a handler that finds the simulator stopping
 * replies at once instead of sleeping. Only then is the daemon stopped,
 * because libmicrohttpd aborts if a connection is still suspended.
 *
 * Limits and faults: after parsing, decide() takes limits.lock once per
 * model request, draws the fault dice and checks and charges the buckets, so
 * draws follow arrival order and a seed gives the same run twice. The
 * decision becomes an ordinary reply (status, body, headers, delay), so
 * every fault reuses the one sending path. A hung request sleeps on the timer
 * heap like a delayed one, but the timer thread, instead of resuming it when
 * due, peeks at its socket every HANG_POLL_NS and resumes it only when the
 * client has gone (or on stop); the handler then closes it unanswered.
 * limits.lock is a leaf: nothing else is taken while holding it.
 */
#include "sim/sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/itembatch.h"
#include "common/jsontext.h"
#include "common/log.h"

#define MOD "sim"

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* The set of prompt hashes answered with 200 stops growing at this many slots
 * (32 MiB, about 2 million prompts); later prompts count as untracked. */
#define SEEN_MAX_SLOTS (1u << 22)

#define DEFAULT_MAX_CONNS 16384u
#define LISTEN_BACKLOG 4096
/* Idle keep-alive connections are closed after this long; sleeping ones are
 * exempt because libmicrohttpd does not time out suspended connections. */
#define IDLE_TIMEOUT_S 300u
#define BODY_INITIAL 4096u
/* How often a hung request's socket is checked for a client that gave up. */
#define HANG_POLL_NS (200LL * 1000000LL)
/* Rate-limit headers on one answer: 4 limits x 3, retry-after, retry-after-ms. */
#define MAX_HDRS 16
#define DEFAULT_FAIL_MARKER "SIM_FAIL_400"
#define NS_PER_S 1000000000LL
/* Slack for float rounding when comparing bucket levels, in tokens. */
#define LEVEL_EPS 1e-6

enum fault {
    FAULT_NONE,
    FAULT_5XX,
    FAULT_429,
    FAULT_OVERLOADED,
    FAULT_HANG,
    FAULT_MALFORMED,
    FAULT_TRUNCATED,
};

enum style { STYLE_OPENAI, STYLE_ANTHROPIC, STYLE_NONE };

/* The buckets, in header order. */
enum bucket_kind { B_REQ, B_TOK, B_IN, B_OUT, B_N };

enum route {
    ROUTE_OPENAI,
    ROUTE_ANTHROPIC,
    ROUTE_STATS,
    ROUTE_STATS_RESET,
    ROUTE_HEALTH,
    ROUTE_NOT_FOUND,
    ROUTE_BAD_METHOD,
};

/* One request: lives from the handler's first call to the completed callback. */
/* libmicrohttpd's memory per connection (headers and the read buffer; a
 * body is gathered in struct req). It clears the whole pool for every
 * request: its default of 32 KiB made that a fifteenth of the simulator's
 * CPU. */
#define CONN_POOL_BYTES (8 * 1024)

struct req {
    enum route route;
    int counted; /* inflight was incremented for it */
    int too_big; /* body passed max_body: the rest is dropped */
    char *body;  /* owned; NUL-terminated when complete */
    size_t len, cap;
    struct MHD_Response *resp; /* prepared reply while the connection sleeps */
    unsigned status;           /* status of resp */
    int hang;                  /* never answered: closed when resumed */
};

struct hdr {
    const char *name; /* static */
    char value[40];
};

/* A decided answer, before it becomes an MHD_Response. */
struct reply {
    unsigned status;
    char *body; /* owned, malloc'd */
    size_t body_len;
    int ok; /* a model reply: counts tokens and the prompt */
    uint64_t hash;
    long long prompt_tokens, completion_tokens;
    long long delay_ns;
    int authorized;    /* the request carried an API key header (never kept) */
    const char *ctype; /* content type; NULL = application/json */
    int hang;          /* never answer */
    int limited;       /* a 429 from the limits */
    enum fault fault;  /* injected fault, FAULT_NONE if none */
    int slow;          /* slow_ms was added */
    int marker;        /* a 400 for the fail marker */
    struct hdr hdrs[MAX_HDRS];
    int nhdrs;
};

struct timer {
    long long due_ns;
    struct MHD_Connection *conn;
    int hang; /* re-armed while the client stays; resumed when it goes */
};

struct timers {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when the earliest entry changes or on stop */
    struct timer *heap;  /* min-heap on due_ns, at most cap entries */
    size_t n, alloc, cap;
    int stopping;
    pthread_t thread;
};

struct seen {
    uint64_t *slots; /* open addressing; 0 marks an empty slot */
    size_t nslots, n;
    int has_zero; /* the hash 0 itself, which cannot be stored */
};

/* A token bucket: level refills at rate_per_ns up to cap. limit 0 = off. */
struct bucket {
    long limit;
    double cap, level, rate_per_ns;
    long long last_ns;
};

struct limits {
    pthread_mutex_t lock;
    struct bucket b[B_N];
    uint64_t rng; /* splitmix64 state for fault draws */
};

/* Per-second counts since base; slot s % SHOAL_SIM_HISTORY_S holds second s
 * while s > last - SHOAL_SIM_HISTORY_S. Guarded by stats_lock. */
struct history {
    long long base_ns;
    double base_unix;
    long long last; /* newest second whose slot is current */
    long long served[SHOAL_SIM_HISTORY_S];
    long long limited[SHOAL_SIM_HISTORY_S];
    long long tokens[SHOAL_SIM_HISTORY_S];
};

struct shoal_sim {
    shoal_sim_conf_t conf;
    enum style style;
    double scale; /* time_scale, 0 replaced by 1 */
    struct limits limits;
    struct MHD_Daemon *daemon;
    int port;
    struct timers timers;
    int timer_started;
    atomic_ullong next_id;

    pthread_mutex_t stats_lock;
    shoal_sim_stats_t stats; /* history fields unused: see hist */
    struct history hist;
    struct seen seen;
};

/* ---- small helpers ---- */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t fnv1a(uint64_t h, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= FNV_PRIME;
    }
    return h;
}

uint64_t shoal_sim_hash(const char *const *parts, size_t n)
{
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < n; i++)
        h = fnv1a(h, parts[i], strlen(parts[i]));
    return h;
}

/* xorshift64*, one state per thread: jitter needs speed, not quality. */
static uint64_t rand64(void)
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        uint64_t seed = (uint64_t)now_ns() ^ (uint64_t)(uintptr_t)&state;
        state = seed ? seed : FNV_OFFSET;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}

static long long pick_delay_ns(const shoal_sim_conf_t *conf)
{
    long long d = (long long)conf->latency_ms * 1000000LL;
    if (conf->jitter_ms > 0) {
        unsigned long long span = (unsigned long long)conf->jitter_ms * 2000000ULL + 1;
        d += (long long)(rand64() % span) - (long long)conf->jitter_ms * 1000000LL;
    }
    return d > 0 ? d : 0;
}

/* ---- prompts seen (guarded by stats_lock) ---- */

static size_t seen_slot(uint64_t h, size_t nslots)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h & (nslots - 1);
}

static int seen_grow(struct seen *s)
{
    size_t nslots = s->nslots ? s->nslots * 2 : 1024;
    if (nslots > SEEN_MAX_SLOTS)
        return -1;
    uint64_t *slots = calloc(nslots, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < s->nslots; i++) {
        uint64_t h = s->slots[i];
        if (!h)
            continue;
        size_t j = seen_slot(h, nslots);
        while (slots[j])
            j = (j + 1) & (nslots - 1);
        slots[j] = h;
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = nslots;
    return 0;
}

/* 1 if h was there, 0 if it was added, -1 if it cannot be tracked (cap or
 * memory). */
static int seen_add(struct seen *s, uint64_t h)
{
    if (h == 0) {
        int had = s->has_zero;
        s->has_zero = 1;
        return had;
    }
    if (s->nslots) {
        size_t j = seen_slot(h, s->nslots);
        for (; s->slots[j]; j = (j + 1) & (s->nslots - 1))
            if (s->slots[j] == h)
                return 1;
    }
    if ((s->n + 1) * 2 > s->nslots && seen_grow(s) != 0)
        return -1;
    size_t j = seen_slot(h, s->nslots);
    while (s->slots[j])
        j = (j + 1) & (s->nslots - 1);
    s->slots[j] = h;
    s->n++;
    return 0;
}

static void seen_clear(struct seen *s)
{
    free(s->slots);
    memset(s, 0, sizeof(*s));
}

/* ---- counters ---- */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void hist_start(struct history *h)
{
    memset(h, 0, sizeof(*h));
    h->base_ns = now_ns();
    h->base_unix = wall_now();
}

/* Moves the ring forward to second sec, zeroing the slots it enters; returns
 * the slot of sec. */
static size_t hist_advance(struct history *h, long long sec)
{
    if (sec > h->last) {
        long long from = h->last + 1;
        if (sec - from >= SHOAL_SIM_HISTORY_S)
            from = sec - SHOAL_SIM_HISTORY_S + 1;
        for (long long i = from; i <= sec; i++) {
            size_t k = (size_t)(i % SHOAL_SIM_HISTORY_S);
            h->served[k] = h->limited[k] = h->tokens[k] = 0;
        }
        h->last = sec;
    }
    return (size_t)(h->last % SHOAL_SIM_HISTORY_S);
}

static long long hist_sec(const struct history *h)
{
    long long d = now_ns() - h->base_ns;
    return d > 0 ? d / NS_PER_S : 0;
}

static void account(shoal_sim_t *sim, const struct reply *rep)
{
    pthread_mutex_lock(&sim->stats_lock);
    shoal_sim_stats_t *st = &sim->stats;
    st->requests++;
    if (rep->authorized)
        st->authorized_requests++;
    if (rep->status > 0 && rep->status < SHOAL_SIM_STATUS_MAX)
        st->by_status[rep->status]++;
    if (rep->ok) {
        st->prompt_tokens += rep->prompt_tokens;
        st->completion_tokens += rep->completion_tokens;
        int r = seen_add(&sim->seen, rep->hash);
        if (r > 0)
            st->repeated_prompts++;
        else if (r == 0)
            st->distinct_prompts++;
        else
            st->untracked_prompts++;
    }
    if (rep->limited)
        st->rate_limited++;
    if (rep->marker)
        st->injected.fail_marker++;
    if (rep->slow)
        st->injected.slow++;
    switch (rep->fault) {
    case FAULT_NONE:
        break;
    case FAULT_5XX:
        st->injected.http_5xx++;
        break;
    case FAULT_429:
        st->injected.http_429++;
        break;
    case FAULT_OVERLOADED:
        st->injected.overloaded++;
        break;
    case FAULT_HANG:
        st->injected.hang++;
        st->hung++;
        break;
    case FAULT_MALFORMED:
        st->injected.malformed++;
        break;
    case FAULT_TRUNCATED:
        st->injected.truncated++;
        break;
    }
    if (rep->status == 200 || rep->status == 429) {
        size_t k = hist_advance(&sim->hist, hist_sec(&sim->hist));
        if (rep->status == 429) {
            sim->hist.limited[k]++;
        } else {
            sim->hist.served[k]++;
            if (rep->ok)
                sim->hist.tokens[k] += rep->prompt_tokens + rep->completion_tokens;
        }
    }
    pthread_mutex_unlock(&sim->stats_lock);
}

static void inflight_add(shoal_sim_t *sim, int delta)
{
    pthread_mutex_lock(&sim->stats_lock);
    sim->stats.inflight += delta;
    if (sim->stats.inflight > sim->stats.max_inflight)
        sim->stats.max_inflight = sim->stats.inflight;
    pthread_mutex_unlock(&sim->stats_lock);
}

static void hung_done(shoal_sim_t *sim)
{
    pthread_mutex_lock(&sim->stats_lock);
    sim->stats.hung--;
    pthread_mutex_unlock(&sim->stats_lock);
}

void shoal_sim_stats(shoal_sim_t *sim, shoal_sim_stats_t *out)
{
    pthread_mutex_lock(&sim->stats_lock);
    *out = sim->stats;
    struct history *h = &sim->hist;
    long long sec = hist_sec(h);
    hist_advance(h, sec);
    long long first = sec - SHOAL_SIM_HISTORY_S + 1;
    if (first < 0)
        first = 0;
    out->history_len = (int)(sec - first + 1);
    out->history_start_unix = h->base_unix + (double)first;
    for (long long i = first; i <= sec; i++) {
        size_t k = (size_t)(i % SHOAL_SIM_HISTORY_S);
        out->served_per_s[i - first] = h->served[k];
        out->limited_per_s[i - first] = h->limited[k];
        out->tokens_per_s[i - first] = h->tokens[k];
    }
    pthread_mutex_unlock(&sim->stats_lock);
}

void shoal_sim_stats_reset(shoal_sim_t *sim)
{
    pthread_mutex_lock(&sim->stats_lock);
    long long inflight = sim->stats.inflight;
    long long hung = sim->stats.hung;
    memset(&sim->stats, 0, sizeof(sim->stats));
    sim->stats.inflight = inflight;
    sim->stats.max_inflight = inflight;
    sim->stats.hung = hung;
    hist_start(&sim->hist);
    seen_clear(&sim->seen);
    pthread_mutex_unlock(&sim->stats_lock);
}

static json_t *int_array(const long long *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

static char *stats_json(shoal_sim_t *sim)
{
    shoal_sim_stats_t *st = malloc(sizeof(*st));
    if (!st)
        return NULL;
    shoal_sim_stats(sim, st);

    json_t *by = json_object();
    for (int code = 0; by && code < SHOAL_SIM_STATUS_MAX; code++) {
        if (!st->by_status[code])
            continue;
        char key[8];
        snprintf(key, sizeof(key), "%d", code);
        json_object_set_new(by, key, json_integer(st->by_status[code]));
    }
    const shoal_sim_injected_t *inj = &st->injected;
    json_t *injected =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "5xx", (json_int_t)inj->http_5xx,
                  "429", (json_int_t)inj->http_429, "overloaded", (json_int_t)inj->overloaded,
                  "hang", (json_int_t)inj->hang, "malformed", (json_int_t)inj->malformed,
                  "truncated", (json_int_t)inj->truncated, "slow", (json_int_t)inj->slow,
                  "fail_marker", (json_int_t)inj->fail_marker);
    json_t *o = json_pack(
        "{s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:f, s:o, s:o, s:o}",
        "requests", (json_int_t)st->requests, "authorized_requests",
        (json_int_t)st->authorized_requests, "by_status", by, "prompt_tokens",
        (json_int_t)st->prompt_tokens, "completion_tokens", (json_int_t)st->completion_tokens,
        "distinct_prompts", (json_int_t)st->distinct_prompts, "repeated_prompts",
        (json_int_t)st->repeated_prompts, "untracked_prompts", (json_int_t)st->untracked_prompts,
        "inflight", (json_int_t)st->inflight, "max_inflight", (json_int_t)st->max_inflight,
        "rate_limited", (json_int_t)st->rate_limited, "injected", injected, "hung",
        (json_int_t)st->hung, "history_start_unix", st->history_start_unix, "served_per_s",
        int_array(st->served_per_s, st->history_len), "limited_per_s",
        int_array(st->limited_per_s, st->history_len), "tokens_per_s",
        int_array(st->tokens_per_s, st->history_len));
    free(st);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* ---- timer heap and thread ---- */

static void heap_swap(struct timer *a, struct timer *b)
{
    struct timer t = *a;
    *a = *b;
    *b = t;
}

static void heap_pop(struct timers *t)
{
    t->heap[0] = t->heap[--t->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->n && t->heap[l].due_ns < t->heap[m].due_ns)
            m = l;
        if (r < t->n && t->heap[r].due_ns < t->heap[m].due_ns)
            m = r;
        if (m == i)
            break;
        heap_swap(&t->heap[i], &t->heap[m]);
        i = m;
    }
}

static void heap_push(struct timers *t, long long due_ns, struct MHD_Connection *conn, int hang)
{
    size_t i = t->n++;
    t->heap[i].due_ns = due_ns;
    t->heap[i].conn = conn;
    t->heap[i].hang = hang;
    while (i > 0 && t->heap[(i - 1) / 2].due_ns > t->heap[i].due_ns) {
        heap_swap(&t->heap[i], &t->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
}

/* Suspends conn until now + delay_ns (hang: until its client goes). Returns 0,
 * or -1 when the reply must go out at once (stopping, heap full, no memory).
 * Called from the handler. */
static int timers_sleep(struct timers *t, struct MHD_Connection *conn, long long delay_ns, int hang)
{
    int rc = -1;
    pthread_mutex_lock(&t->lock);
    if (t->stopping)
        goto out;
    if (t->n == t->alloc) {
        if (t->alloc >= t->cap)
            goto out;
        size_t alloc = t->alloc ? t->alloc * 2 : 256;
        if (alloc > t->cap)
            alloc = t->cap;
        struct timer *h = realloc(t->heap, alloc * sizeof(*h));
        if (!h)
            goto out;
        t->heap = h;
        t->alloc = alloc;
    }
    heap_push(t, now_ns() + delay_ns, conn, hang);
    MHD_suspend_connection(conn);
    pthread_cond_signal(&t->cond);
    rc = 0;
out:
    pthread_mutex_unlock(&t->lock);
    return rc;
}

/* True when the client of a suspended connection has closed it or it failed.
 * libmicrohttpd does not watch suspended sockets, so we peek ourselves; the
 * connection is suspended, so nothing else reads the socket meanwhile. */
static int client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 1;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return 0;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return 1;
}

static void *timer_main(void *arg)
{
    struct timers *t = arg;

    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        long long now = now_ns();
        while (t->n > 0 && t->heap[0].due_ns <= now) {
            struct timer e = t->heap[0];
            heap_pop(t);
            if (e.hang && !client_gone(e.conn))
                heap_push(t, now + HANG_POLL_NS, e.conn, 1);
            else
                MHD_resume_connection(e.conn);
        }
        if (t->n == 0) {
            pthread_cond_wait(&t->cond, &t->lock);
        } else {
            struct timespec ts = {(time_t)(t->heap[0].due_ns / 1000000000LL),
                                  (long)(t->heap[0].due_ns % 1000000000LL)};
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
        }
    }
    while (t->n > 0) {
        struct timer e = t->heap[0];
        heap_pop(t);
        MHD_resume_connection(e.conn);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static int timers_init(struct timers *t, size_t cap, char *errbuf, size_t errlen)
{
    pthread_condattr_t ca;

    memset(t, 0, sizeof(*t));
    t->cap = cap;
    if (pthread_mutex_init(&t->lock, NULL) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not create a mutex");
    if (pthread_condattr_init(&ca) != 0) {
        pthread_mutex_destroy(&t->lock);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not create a condition");
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&t->lock);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not create a condition");
    }
    return SHOAL_OK;
}

/* ---- request parsing ---- */

/* Text of a message content: a string, null, or an array of parts of which
 * the {"type":"text","text":...} ones count. When parts are joined the text
 * is owned (free owned), else borrowed from the JSON. */
struct text {
    const char *p;
    size_t len;
    char *owned;
};

static shoal_err_t content_text(json_t *c, struct text *t, char *errbuf, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->p = "";
    if (!c || json_is_null(c))
        return SHOAL_OK;
    if (json_is_string(c)) {
        t->p = json_string_value(c);
        t->len = json_string_length(c);
        return SHOAL_OK;
    }
    if (!json_is_array(c))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "content must be a string or an array of parts");

    size_t total = 0, i;
    json_t *part;
    json_array_foreach(c, i, part)
    {
        if (!json_is_object(part))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "content part %zu must be an object", i);
        json_t *txt = json_object_get(part, "text");
        if (json_is_string(txt))
            total += json_string_length(txt);
    }
    t->owned = malloc(total + 1);
    if (!t->owned)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    json_array_foreach(c, i, part)
    {
        json_t *txt = json_object_get(part, "text");
        if (json_is_string(txt)) {
            memcpy(t->owned + t->len, json_string_value(txt), json_string_length(txt));
            t->len += json_string_length(txt);
        }
    }
    t->owned[t->len] = '\0';
    t->p = t->owned;
    return SHOAL_OK;
}

/* What the reply depends on. */
struct prompt {
    const char *model; /* borrowed from the request JSON */
    uint64_t hash;
    size_t chars;
    struct text user; /* the last user message */
    int json;         /* the client asked for JSON */
    long max_tokens;  /* 0 when absent or null */
    const char *marker;
    int has_marker; /* some text contains marker */
};

static void prompt_add(struct prompt *p, const struct text *t)
{
    p->hash = fnv1a(p->hash, t->p, t->len);
    p->chars += t->len;
    if (p->marker && *p->marker && memmem(t->p, t->len, p->marker, strlen(p->marker)))
        p->has_marker = 1;
}

/* marker (borrowed, may be NULL) is the fail marker to look for. */
static shoal_err_t parse_prompt(json_t *req, enum route route, const char *marker, struct prompt *p,
                                char *errbuf, size_t errlen)
{
    shoal_err_t err;
    struct text t;
    char why[256];

    memset(p, 0, sizeof(*p));
    p->marker = marker;
    p->hash = FNV_OFFSET;
    p->user.p = "";
    if (!json_is_object(req))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "request body must be a JSON object");
    p->model = json_string_value(json_object_get(req, "model"));
    if (!p->model)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "model must be a string");

    json_t *mt = json_object_get(req, "max_tokens");
    if (route == ROUTE_ANTHROPIC && !mt)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "max_tokens is required");
    if (mt && !json_is_null(mt) && (!json_is_integer(mt) || json_integer_value(mt) < 1))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "max_tokens must be a positive integer");
    if (json_is_integer(mt))
        p->max_tokens = json_integer_value(mt) > LONG_MAX ? LONG_MAX : (long)json_integer_value(mt);

    json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "messages must be a non-empty array");

    if (route == ROUTE_ANTHROPIC) {
        err = content_text(json_object_get(req, "system"), &t, why, sizeof(why));
        if (err != SHOAL_OK)
            return shoal_err_set(errbuf, errlen, err, "system: %s", why);
        prompt_add(p, &t);
        free(t.owned);
    } else {
        json_t *rf = json_object_get(req, "response_format");
        const char *type = json_string_value(json_object_get(rf, "type"));
        if (type && (!strcmp(type, "json_object") || !strcmp(type, "json_schema")))
            p->json = 1;
    }

    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "messages[%zu].role must be a string", i);
        if (route == ROUTE_ANTHROPIC && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "messages[%zu].role must be \"user\" or \"assistant\"", i);
        err = content_text(json_object_get(m, "content"), &t, why, sizeof(why));
        if (err != SHOAL_OK)
            return shoal_err_set(errbuf, errlen, err, "messages[%zu]: %s", i, why);
        prompt_add(p, &t);
        if (!strcmp(role, "user")) {
            free(p->user.owned);
            p->user = t;
        } else {
            free(t.owned);
        }
    }
    if (strstr(p->user.p, "JSON"))
        p->json = 1;
    return SHOAL_OK;
}

/* ---- replies ---- */

/* An error body in the route's shape; code NULL is sent as null (OpenAI). */
static void reply_error_code(struct reply *rep, enum route route, unsigned status, const char *type,
                             const char *code, const char *msg)
{
    json_t *o;
    if (route == ROUTE_ANTHROPIC)
        o = json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", type, "message",
                      msg);
    else
        o = json_pack("{s:{s:s, s:s, s:n, s:o}}", "error", "message", msg, "type", type, "param",
                      "code", code ? json_string(code) : json_null());
    rep->status = status;
    rep->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!rep->body) {
        /* The message may not be valid UTF-8 (it can quote user input). */
        rep->body = strdup("{\"error\":{\"message\":\"request rejected\","
                           "\"type\":\"invalid_request_error\"}}");
    }
    rep->body_len = rep->body ? strlen(rep->body) : 0;
}

static void reply_error(struct reply *rep, enum route route, unsigned status, const char *type,
                        const char *msg)
{
    reply_error_code(rep, route, status, type, NULL, msg);
}

static long long tokens_of(size_t bytes)
{
    return (long long)((bytes + 3) / 4);
}

/* A batch-mode prompt (common/itembatch.h): one member per item id, "sim H
 * <id>", each item left out with probability p_drop (drawn from seed, so the
 * same prompt asked again may lose other items). NULL when the prompt is not
 * a batch prompt. */
static char *batch_content(const struct prompt *p, const char *hex, double p_drop, uint64_t seed,
                           size_t *len)
{
    char *user = strndup(p->user.p, p->user.len), *s = NULL;
    json_t *ids = user ? shoal_itembatch_prompt_ids(user) : NULL, *o;

    free(user);
    if (!ids || !(o = json_object())) {
        json_decref(ids);
        return NULL;
    }
    for (size_t i = 0; i < json_array_size(ids); i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);
        char v[300];

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        if ((double)(z >> 11) * 0x1.0p-53 < p_drop)
            continue;
        snprintf(v, sizeof(v), "sim %s %s", hex, id);
        json_object_set_new(o, id, json_string(v));
    }
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    json_decref(ids);
    *len = s ? strlen(s) : 0;
    return s ? s : strdup("{}");
}

/* CONTENT from the prompt: "sim H U", or {"sim":H,"echo":U} in JSON mode; for
 * a batch-mode prompt, one answer per item (see batch_content). */
static char *make_content(const struct prompt *p, double p_drop, size_t *len)
{
    char hex[17];
    snprintf(hex, sizeof(hex), "%016" PRIx64, p->hash);

    if (memmem(p->user.p, p->user.len, "\n" SHOAL_ITEMBATCH_IDS_MARK,
               sizeof(SHOAL_ITEMBATCH_IDS_MARK))) {
        char *b = batch_content(p, hex, p_drop, p->hash ^ (uint64_t)now_ns(), len);
        if (b)
            return b;
    }

    if (p->json) {
        json_t *o = json_pack("{s:s, s:s%}", "sim", hex, "echo", p->user.p, p->user.len);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        *len = s ? strlen(s) : 0;
        return s;
    }
    *len = 4 + 16 + 1 + p->user.len;
    char *s = malloc(*len + 1);
    if (!s)
        return NULL;
    memcpy(s, "sim ", 4);
    memcpy(s + 4, hex, 16);
    s[20] = ' ';
    memcpy(s + 21, p->user.p, p->user.len);
    s[*len] = '\0';
    return s;
}

/* ---- limits and fault draws ---- */

/* splitmix64: one state, stepped under limits.lock, so a seed fixes the run. */
static double draw(struct limits *l)
{
    uint64_t z = (l->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static void bucket_init(struct bucket *b, long limit, double burst_s, double scale, long long now)
{
    memset(b, 0, sizeof(*b));
    b->limit = limit;
    if (!limit)
        return;
    b->cap = (double)limit * burst_s / 60.0;
    b->level = b->cap;
    b->rate_per_ns = (double)limit * scale / 60.0 / (double)NS_PER_S;
    b->last_ns = now;
}

static void bucket_refill(struct bucket *b, long long now)
{
    if (!b->limit || now <= b->last_ns)
        return;
    b->level += (double)(now - b->last_ns) * b->rate_per_ns;
    if (b->level > b->cap)
        b->level = b->cap;
    b->last_ns = now;
}

/* What decide() found, for the answer and its headers. */
struct decision {
    enum fault fault;
    int slow;
    double variant; /* picks the 5xx status and the malformed kind */
    int limited;    /* some bucket lacked its cost */
    int never;      /* some cost exceeds its bucket's capacity */
    int denied;     /* the bucket that made the longest wait (or never fits) */
    long long wait_ns;
    struct {
        long limit;
        long long remaining;
        long long reset_ns; /* to a full bucket */
    } view[B_N];
};

static enum fault pick_fault(const shoal_sim_conf_t *c, double u)
{
    const struct {
        double p;
        enum fault f;
    } order[] = {
        {c->p_5xx, FAULT_5XX},
        {c->p_429, FAULT_429},
        {c->p_overloaded, FAULT_OVERLOADED},
        {c->p_hang, FAULT_HANG},
        {c->p_malformed, FAULT_MALFORMED},
        {c->p_truncated, FAULT_TRUNCATED},
    };
    double acc = 0;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        acc += order[i].p;
        if (order[i].p > 0 && u < acc)
            return order[i].f;
    }
    return FAULT_NONE;
}

/* Draws the faults, then checks the buckets against cost and charges them
 * when all have room. An injected 429 skips the check and the charge. */
static void decide(shoal_sim_t *sim, const double cost[B_N], struct decision *d)
{
    struct limits *l = &sim->limits;
    memset(d, 0, sizeof(*d));

    pthread_mutex_lock(&l->lock);
    d->fault = pick_fault(&sim->conf, draw(l));
    d->slow = draw(l) < sim->conf.p_slow;
    d->variant = draw(l);

    long long now = now_ns();
    double wait = 0;
    for (int i = 0; i < B_N; i++) {
        struct bucket *b = &l->b[i];
        if (!b->limit)
            continue;
        bucket_refill(b, now);
        if (cost[i] > b->cap + LEVEL_EPS) {
            d->never = 1;
            d->limited = 1;
            d->denied = i;
        } else if (cost[i] > b->level + LEVEL_EPS) {
            double w = (cost[i] - b->level) / b->rate_per_ns;
            if (!d->limited || (!d->never && w > wait))
                d->denied = i;
            d->limited = 1;
            if (w > wait)
                wait = w;
        }
    }
    if (d->fault == FAULT_429) {
        /* Not the limits' doing: they keep their level, and the client is
         * told to wait at least one simulated second. */
        d->limited = 0;
        d->never = 0;
        double sec = (double)NS_PER_S / sim->scale;
        if (wait < sec)
            wait = sec;
    } else if (d->limited) {
        d->fault = FAULT_NONE;
        d->slow = 0;
    } else {
        for (int i = 0; i < B_N; i++)
            if (l->b[i].limit)
                l->b[i].level -= cost[i];
    }
    d->wait_ns = (long long)ceil(wait);
    for (int i = 0; i < B_N; i++) {
        struct bucket *b = &l->b[i];
        if (!b->limit)
            continue;
        double level = b->level > 0 ? b->level : 0;
        d->view[i].limit = b->limit;
        d->view[i].remaining = (long long)floor(level + LEVEL_EPS);
        d->view[i].reset_ns = (long long)ceil((b->cap - level) / b->rate_per_ns);
    }
    pthread_mutex_unlock(&l->lock);
}

static void add_hdr(struct reply *rep, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add_hdr(struct reply *rep, const char *name, const char *fmt, ...)
{
    if (rep->nhdrs >= MAX_HDRS)
        return;
    struct hdr *h = &rep->hdrs[rep->nhdrs++];
    va_list ap;
    va_start(ap, fmt);
    h->name = name;
    vsnprintf(h->value, sizeof(h->value), fmt, ap);
    va_end(ap);
}

/* OpenAI's duration format: "0s", "12ms", "1s", "1.5s", "6m0s", "1m30.5s",
 * "1h0m0s"; rounded up to the millisecond. */
static void fmt_duration(long long ns, char *buf, size_t len)
{
    long long ms = (ns + 999999) / 1000000;
    if (ms <= 0) {
        snprintf(buf, len, "0s");
        return;
    }
    if (ms < 1000) {
        snprintf(buf, len, "%lldms", ms);
        return;
    }
    long long h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
    char sec[24];
    if (frac) {
        snprintf(sec, sizeof(sec), "%lld.%03lld", s, frac);
        size_t n = strlen(sec);
        while (sec[n - 1] == '0')
            sec[--n] = '\0';
    } else {
        snprintf(sec, sizeof(sec), "%lld", s);
    }
    if (h)
        snprintf(buf, len, "%lldh%lldm%ss", h, m, sec);
    else if (m)
        snprintf(buf, len, "%lldm%ss", m, sec);
    else
        snprintf(buf, len, "%ss", sec);
}

/* RFC 3339 UTC time of now + ns, rounded up to the second. */
static void fmt_reset_time(long long ns, char *buf, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long total = (long long)ts.tv_nsec + ns;
    time_t t = ts.tv_sec + (time_t)(total / NS_PER_S) + (total % NS_PER_S ? 1 : 0);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "1970-01-01T00:00:00Z");
}

static void add_limit_headers(shoal_sim_t *sim, const struct decision *d, int is_429,
                              struct reply *rep)
{
    static const char *const oa[B_N][3] = {
        {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
         "x-ratelimit-reset-requests"},
        {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"},
        {NULL, NULL, NULL},
        {NULL, NULL, NULL},
    };
    static const char *const an[B_N][3] = {
        {"anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
         "anthropic-ratelimit-requests-reset"},
        {"anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining",
         "anthropic-ratelimit-tokens-reset"},
        {"anthropic-ratelimit-input-tokens-limit", "anthropic-ratelimit-input-tokens-remaining",
         "anthropic-ratelimit-input-tokens-reset"},
        {"anthropic-ratelimit-output-tokens-limit", "anthropic-ratelimit-output-tokens-remaining",
         "anthropic-ratelimit-output-tokens-reset"},
    };
    char when[40];

    if (sim->style == STYLE_NONE)
        return;
    const char *const(*names)[3] = sim->style == STYLE_ANTHROPIC ? an : oa;
    for (int i = 0; i < B_N; i++) {
        if (!d->view[i].limit || !names[i][0])
            continue;
        add_hdr(rep, names[i][0], "%ld", d->view[i].limit);
        add_hdr(rep, names[i][1], "%lld", d->view[i].remaining);
        if (sim->style == STYLE_ANTHROPIC)
            fmt_reset_time(d->view[i].reset_ns, when, sizeof(when));
        else
            fmt_duration(d->view[i].reset_ns, when, sizeof(when));
        add_hdr(rep, names[i][2], "%s", when);
    }
    if (!is_429 || !sim->conf.retry_after || d->never)
        return;
    long long secs = (d->wait_ns + NS_PER_S - 1) / NS_PER_S;
    add_hdr(rep, "retry-after", "%lld", secs > 0 ? secs : 1);
    if (sim->style == STYLE_OPENAI) {
        long long ms = (d->wait_ns + 999999) / 1000000;
        add_hdr(rep, "retry-after-ms", "%lld", ms > 0 ? ms : 1);
    }
}

static void reply_429(shoal_sim_t *sim, enum route route, const struct decision *d,
                      struct reply *rep)
{
    if (sim->style == STYLE_NONE) {
        rep->status = 429;
        rep->body = strdup("Too Many Requests\n");
        rep->body_len = rep->body ? strlen(rep->body) : 0;
        rep->ctype = "text/plain";
        return;
    }
    const char *msg = d->never ? "Request too large: it exceeds a rate limit's capacity"
                               : "Rate limit reached, please try again later";
    if (route == ROUTE_ANTHROPIC)
        reply_error(rep, route, 429, "rate_limit_error", msg);
    else
        reply_error_code(rep, route, 429, d->denied == B_REQ ? "requests" : "tokens",
                         "rate_limit_exceeded", msg);
}

/* The model answer. content (length clen) is what the reply carries;
 * truncated sets the "cut short" reason; no_content leaves it out. Written
 * as text (common/jsontext.h): building and dumping a jansson tree per
 * answer was a third of the simulator's CPU. NULL when out of memory or the
 * content is not UTF-8. */
static char *model_body(shoal_sim_t *sim, enum route route, const struct prompt *p,
                        const char *content, size_t clen, int truncated, int no_content,
                        const struct reply *rep)
{
    unsigned long long n = atomic_fetch_add(&sim->next_id, 1) + 1;
    char id[48];
    shoal_jsontext_t b;
    int bad = 0;
    shoal_jsontext_init(&b, (size_t)1 << 30);
    shoal_jsontext_open(&b);
    if (route == ROUTE_ANTHROPIC) {
        snprintf(id, sizeof(id), "msg_sim_%llu", n);
        bad |= shoal_jsontext_key_str(&b, "id", id) |
               shoal_jsontext_key_str(&b, "type", "message") |
               shoal_jsontext_key_str(&b, "role", "assistant") |
               shoal_jsontext_key_str(&b, "model", p->model);
        shoal_jsontext_key(&b, "content");
        if (no_content) {
            shoal_jsontext_raw(&b, "[]", 2);
        } else {
            shoal_jsontext_raw(&b, "[{\"type\":\"text\",\"text\":", 23);
            bad |= shoal_jsontext_strn(&b, content, clen);
            shoal_jsontext_raw(&b, "}]", 2);
        }
        bad |= shoal_jsontext_key_str(&b, "stop_reason", truncated ? "max_tokens" : "end_turn");
        shoal_jsontext_key(&b, "stop_sequence");
        shoal_jsontext_raw(&b, "null", 4);
        shoal_jsontext_key(&b, "usage");
        shoal_jsontext_open(&b);
        shoal_jsontext_key_int(&b, "input_tokens", rep->prompt_tokens);
        shoal_jsontext_key_int(&b, "output_tokens", rep->completion_tokens);
        shoal_jsontext_close(&b);
    } else {
        snprintf(id, sizeof(id), "chatcmpl-sim-%llu", n);
        bad |= shoal_jsontext_key_str(&b, "id", id) |
               shoal_jsontext_key_str(&b, "object", "chat.completion");
        shoal_jsontext_key_int(&b, "created", (long long)time(NULL));
        bad |= shoal_jsontext_key_str(&b, "model", p->model);
        shoal_jsontext_key(&b, "choices");
        shoal_jsontext_raw(&b, "[{\"index\":0,\"message\":{\"role\":\"assistant\"", 41);
        if (!no_content) {
            shoal_jsontext_raw(&b, ",\"content\":", 11);
            bad |= shoal_jsontext_strn(&b, content, clen);
        }
        shoal_jsontext_raw(&b, "},\"finish_reason\":", 18);
        bad |= shoal_jsontext_str(&b, truncated ? "length" : "stop");
        shoal_jsontext_raw(&b, "}]", 2);
        shoal_jsontext_key(&b, "usage");
        shoal_jsontext_open(&b);
        shoal_jsontext_key_int(&b, "prompt_tokens", rep->prompt_tokens);
        shoal_jsontext_key_int(&b, "completion_tokens", rep->completion_tokens);
        shoal_jsontext_key_int(&b, "total_tokens", rep->prompt_tokens + rep->completion_tokens);
        shoal_jsontext_close(&b);
    }
    shoal_jsontext_close(&b);
    if (bad) {
        shoal_jsontext_free(&b);
        return NULL;
    }
    return shoal_jsontext_detach(&b, NULL);
}

/* Length of the first half of s, not splitting a UTF-8 sequence. */
static size_t half_utf8(const char *s, size_t len)
{
    size_t n = len / 2;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

static void reply_model(shoal_sim_t *sim, enum route route, const char *body, size_t len,
                        struct reply *rep)
{
    char err[512];
    json_error_t jerr;
    struct prompt p;
    char *content = NULL;

    json_t *req = json_loadb(body, len, 0, &jerr);
    if (!req) {
        snprintf(err, sizeof(err), "request body is not valid JSON: %s (line %d, column %d)",
                 jerr.text, jerr.line, jerr.column);
        reply_error(rep, route, 400, "invalid_request_error", err);
        return;
    }
    shoal_err_t e = parse_prompt(req, route, sim->conf.fail_marker, &p, err, sizeof(err));
    if (e != SHOAL_OK) {
        if (e == SHOAL_ERR_NOMEM)
            reply_error(rep, route, 500, "api_error", "out of memory");
        else
            reply_error(rep, route, 400, "invalid_request_error", err);
        goto out;
    }
    if (p.has_marker) {
        snprintf(err, sizeof(err), "the prompt contains the failure marker %.200s",
                 sim->conf.fail_marker);
        reply_error(rep, route, 400, "invalid_request_error", err);
        rep->marker = 1;
        goto out;
    }

    size_t clen;
    content = make_content(&p, sim->conf.p_drop_item, &clen);
    if (!content) {
        reply_error(rep, route, 500, "api_error", "out of memory");
        goto out;
    }
    rep->hash = p.hash;
    rep->prompt_tokens = tokens_of(p.chars);
    if (rep->prompt_tokens < 1)
        rep->prompt_tokens = 1;
    rep->completion_tokens = tokens_of(clen);

    double out_cost = p.max_tokens > 0 ? (double)p.max_tokens : (double)rep->completion_tokens;
    double cost[B_N] = {1, (double)rep->prompt_tokens + out_cost, (double)rep->prompt_tokens,
                        out_cost};
    struct decision d;
    decide(sim, cost, &d);
    int is_429 = d.limited || d.fault == FAULT_429;
    add_limit_headers(sim, &d, is_429, rep);
    rep->fault = d.fault;
    if (d.slow && d.fault != FAULT_HANG) {
        rep->slow = 1;
        rep->delay_ns += (long long)sim->conf.slow_ms * 1000000LL;
    }
    if (is_429) {
        rep->limited = d.limited;
        reply_429(sim, route, &d, rep);
        goto out;
    }
    switch (d.fault) {
    case FAULT_5XX: {
        static const unsigned codes[] = {500, 502, 503};
        unsigned code = codes[(int)(d.variant * 3) % 3];
        reply_error(rep, route, code, route == ROUTE_ANTHROPIC ? "api_error" : "server_error",
                    "The server had an error while processing your request");
        goto out;
    }
    case FAULT_OVERLOADED:
        if (route == ROUTE_ANTHROPIC)
            reply_error(rep, route, 529, "overloaded_error", "Overloaded");
        else
            reply_error(rep, route, 503, "server_error",
                        "The engine is currently overloaded, please try again later");
        goto out;
    case FAULT_HANG:
        rep->hang = 1;
        rep->status = 0;
        goto out;
    default:
        break;
    }

    int truncated = d.fault == FAULT_TRUNCATED;
    int no_content = d.fault == FAULT_MALFORMED && d.variant >= 0.5;
    if (truncated) {
        clen = half_utf8(content, clen);
        content[clen] = '\0';
        rep->completion_tokens = tokens_of(clen);
    }
    rep->body = model_body(sim, route, &p, content, clen, truncated, no_content, rep);
    if (!rep->body) {
        reply_error(rep, route, 500, "api_error", "out of memory");
        goto out;
    }
    rep->status = 200;
    rep->body_len = strlen(rep->body);
    if (d.fault == FAULT_MALFORMED) {
        if (!no_content) {
            /* Half of a JSON object is never a JSON text. */
            rep->body_len /= 2;
            rep->body[rep->body_len] = '\0';
        }
    } else {
        rep->ok = 1;
    }
    rep->delay_ns += pick_delay_ns(&sim->conf);
out:
    free(content);
    free(p.user.owned);
    json_decref(req);
}

/* ---- libmicrohttpd glue ---- */

static enum route route_of(const char *method, const char *url)
{
    int post = !strcmp(method, MHD_HTTP_METHOD_POST);
    int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);

    if (!strcmp(url, "/v1/chat/completions"))
        return post ? ROUTE_OPENAI : ROUTE_BAD_METHOD;
    if (!strcmp(url, "/v1/messages"))
        return post ? ROUTE_ANTHROPIC : ROUTE_BAD_METHOD;
    if (!strcmp(url, "/stats"))
        return get ? ROUTE_STATS : ROUTE_BAD_METHOD;
    if (!strcmp(url, "/stats/reset"))
        return post ? ROUTE_STATS_RESET : ROUTE_BAD_METHOD;
    if (!strcmp(url, "/health"))
        return get ? ROUTE_HEALTH : ROUTE_BAD_METHOD;
    return ROUTE_NOT_FOUND;
}

static int is_control(const char *url)
{
    return !strcmp(url, "/stats") || !strcmp(url, "/stats/reset") || !strcmp(url, "/health");
}

static struct MHD_Response *make_response(struct reply *rep)
{
    struct MHD_Response *resp;
    if (rep->body) {
        resp = MHD_create_response_from_buffer(rep->body_len, rep->body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
            free(rep->body);
            rep->body = NULL;
            return NULL;
        }
        rep->body = NULL;
    } else {
        /* No memory left for a body: an empty 500 is the best we can do. */
        rep->status = 500;
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!resp)
        return NULL;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            rep->ctype ? rep->ctype : "application/json");
    for (int i = 0; i < rep->nhdrs; i++)
        MHD_add_response_header(resp, rep->hdrs[i].name, rep->hdrs[i].value);
    return resp;
}

static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
                             struct MHD_Response *resp)
{
    if (!resp)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result answer_now(struct MHD_Connection *conn, struct reply *rep)
{
    struct MHD_Response *resp = make_response(rep);
    return queue(conn, rep->status, resp);
}

static enum MHD_Result answer_text(struct MHD_Connection *conn, unsigned status, const char *text,
                                   const char *type)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    return queue(conn, status, resp);
}

static enum MHD_Result answer_stats(shoal_sim_t *sim, struct MHD_Connection *conn)
{
    struct reply rep = {.status = 200};
    rep.body = stats_json(sim);
    rep.body_len = rep.body ? strlen(rep.body) : 0;
    return answer_now(conn, &rep);
}

/* The request's body is complete (or dropped): decide and send, or sleep. */
static enum MHD_Result finish(shoal_sim_t *sim, struct MHD_Connection *conn, struct req *r,
                              const char *url)
{
    struct reply rep = {0};
    char msg[300];

    switch (r->route) {
    case ROUTE_STATS:
        return answer_stats(sim, conn);
    case ROUTE_STATS_RESET:
        shoal_sim_stats_reset(sim);
        return answer_stats(sim, conn);
    case ROUTE_HEALTH:
        return answer_text(conn, 200, "ok\n", "text/plain");
    case ROUTE_NOT_FOUND:
        snprintf(msg, sizeof(msg), "unknown path %.200s", url);
        reply_error(&rep, ROUTE_OPENAI, 404, "not_found_error", msg);
        break;
    case ROUTE_BAD_METHOD:
        snprintf(msg, sizeof(msg), "method not allowed on %.200s", url);
        reply_error(&rep, ROUTE_OPENAI, 405, "invalid_request_error", msg);
        break;
    case ROUTE_OPENAI:
    case ROUTE_ANTHROPIC:
        if (r->too_big) {
            snprintf(msg, sizeof(msg), "request body is larger than %zu bytes", sim->conf.max_body);
            reply_error(&rep, r->route, 413, "request_too_large", msg);
            break;
        }
        reply_model(sim, r->route, r->body ? r->body : "", r->len, &rep);
        break;
    }
    free(r->body);
    r->body = NULL;
    rep.authorized = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization") != NULL ||
                     MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "x-api-key") != NULL;
    if (r->counted)
        account(sim, &rep);
    shoal_log_debug(MOD,
                    "reply status=%u prompt_tokens=%lld completion_tokens=%lld delay_ms=%lld "
                    "fault=%d limited=%d",
                    rep.status, rep.prompt_tokens, rep.completion_tokens, rep.delay_ns / 1000000,
                    (int)rep.fault, rep.limited);

    if (rep.hang) {
        /* hung was counted by account(); on_completed uncounts it. */
        r->hang = 1;
        if (timers_sleep(&sim->timers, conn, HANG_POLL_NS, 1) == 0)
            return MHD_YES;
        return MHD_NO;
    }

    if (rep.delay_ns <= 0)
        return answer_now(conn, &rep);
    r->resp = make_response(&rep);
    r->status = rep.status;
    if (!r->resp)
        return MHD_NO;
    if (timers_sleep(&sim->timers, conn, rep.delay_ns, 0) == 0)
        return MHD_YES;
    struct MHD_Response *resp = r->resp;
    r->resp = NULL;
    return queue(conn, r->status, resp);
}

/* Appends an upload chunk; past max_body the request is marked and the rest
 * dropped. */
static void gather(shoal_sim_t *sim, struct req *r, const char *data, size_t n)
{
    if (r->too_big)
        return;
    if (r->len + n > sim->conf.max_body) {
        r->too_big = 1;
        free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
        return;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : BODY_INITIAL;
        while (cap < r->len + n + 1)
            cap *= 2;
        if (cap > sim->conf.max_body + 1)
            cap = sim->conf.max_body + 1;
        char *b = realloc(r->body, cap);
        if (!b) {
            /* Answered like an oversized body: the client may retry smaller. */
            r->too_big = 1;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return;
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
}

/* Set just before the handler closes a hung request, for on_mhd_log. */
static _Thread_local int closing_hung;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    shoal_sim_t *sim = cls;
    struct req *r = *req_cls;
    (void)version;

    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        r->route = route_of(method, url);
        *req_cls = r;
        if (!is_control(url)) {
            r->counted = 1;
            inflight_add(sim, 1);
        }
        if (r->route == ROUTE_OPENAI || r->route == ROUTE_ANTHROPIC) {
            const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            char *end;
            unsigned long long n = cl ? strtoull(cl, &end, 10) : 0;
            if (cl && *end == '\0' && n > sim->conf.max_body) {
                /* Refused before the body is sent (no 100 Continue). */
                r->too_big = 1;
                return finish(sim, conn, r, url);
            }
        }
        return MHD_YES;
    }
    closing_hung = 0;
    if (r->hang) {
        /* Woken because the client went or we stop: close unanswered.
         * libmicrohttpd logs that as an application error at once, on this
         * thread; closing_hung tells on_mhd_log it was meant. */
        closing_hung = 1;
        return MHD_NO;
    }
    if (r->resp) {
        /* Woken by the timer thread: send what was prepared. */
        struct MHD_Response *resp = r->resp;
        r->resp = NULL;
        return queue(conn, r->status, resp);
    }
    if (*upload_data_size) {
        if (r->route == ROUTE_OPENAI || r->route == ROUTE_ANTHROPIC)
            gather(sim, r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    return finish(sim, conn, r, url);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode why)
{
    shoal_sim_t *sim = cls;
    struct req *r = *req_cls;
    (void)conn;
    (void)why;

    if (!r)
        return;
    if (r->counted)
        inflight_add(sim, -1);
    if (r->hang)
        hung_done(sim);
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r->body);
    free(r);
    *req_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    (void)cls;
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (closing_hung) {
        closing_hung = 0;
        shoal_log_debug(MOD, "closed a hung request detail=\"libmicrohttpd: %s\"", buf);
        return;
    }
    shoal_log_warn(MOD, "libmicrohttpd: %s", buf);
}

/* ---- life cycle ---- */

void shoal_sim_conf_init(shoal_sim_conf_t *conf)
{
    memset(conf, 0, sizeof(*conf));
    conf->bind = "127.0.0.1";
    conf->threads = 1;
    conf->max_conns = DEFAULT_MAX_CONNS;
    conf->max_body = SHOAL_SIM_MAX_BODY_DEFAULT;
    conf->burst_s = 60;
    conf->time_scale = 1.0;
    conf->limit_headers = "openai";
    conf->retry_after = 1;
    conf->fail_marker = DEFAULT_FAIL_MARKER;
}

static int is_prob(double p)
{
    return p >= 0 && p <= 1; /* false for NaN too */
}

/* The reason conf's limits and faults are unusable, or NULL. */
static const char *check_faults(const shoal_sim_conf_t *c, enum style *style)
{
    const char *lh = c->limit_headers ? c->limit_headers : "openai";
    if (!strcmp(lh, "openai"))
        *style = STYLE_OPENAI;
    else if (!strcmp(lh, "anthropic"))
        *style = STYLE_ANTHROPIC;
    else if (!strcmp(lh, "none"))
        *style = STYLE_NONE;
    else
        return "limit_headers must be \"openai\", \"anthropic\" or \"none\"";
    if (c->rpm < 0 || c->tpm < 0 || c->input_tpm < 0 || c->output_tpm < 0)
        return "rate limits must not be negative";
    if (!(c->burst_s >= 0 && c->burst_s <= 86400))
        return "burst_s must be 0 to 86400";
    if (!(c->time_scale >= 0 && c->time_scale <= 1e6))
        return "time_scale must be 0 to 1000000";
    double burst = c->burst_s > 0 ? c->burst_s : 60;
    if (c->rpm && (double)c->rpm * burst / 60.0 < 1.0)
        return "burst_s is too small to hold one request at this rpm";
    if (!is_prob(c->p_5xx) || !is_prob(c->p_429) || !is_prob(c->p_overloaded) ||
        !is_prob(c->p_hang) || !is_prob(c->p_malformed) || !is_prob(c->p_truncated) ||
        !is_prob(c->p_drop_item) || !is_prob(c->p_slow))
        return "fault probabilities must be 0 to 1";
    double sum =
        c->p_5xx + c->p_429 + c->p_overloaded + c->p_hang + c->p_malformed + c->p_truncated;
    if (sum > 1.0 + 1e-9)
        return "p_5xx, p_429, p_overloaded, p_hang, p_malformed and p_truncated must sum to at "
               "most 1";
    if (c->slow_ms < 0 || c->slow_ms > 3600000)
        return "slow_ms must be 0 to 3600000";
    return NULL;
}

static int open_listener(const shoal_sim_conf_t *conf, int *port, char *errbuf, size_t errlen)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);
    int one = 1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)conf->port);
    if (inet_pton(AF_INET, conf->bind, &sa.sin_addr) != 1) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "cannot listen on \"%s\": not an IPv4 address", conf->bind);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create a socket: %s",
                      strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, LISTEN_BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not listen on %s:%d: %s", conf->bind,
                      conf->port, strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

shoal_sim_t *shoal_sim_new(const shoal_sim_conf_t *conf, char *errbuf, size_t errlen)
{
    const char *bad = NULL;
    if (!conf->bind)
        bad = "bind is not set";
    else if (conf->port < 0 || conf->port > 65535)
        bad = "port must be 0 to 65535";
    else if (conf->latency_ms < 0 || conf->jitter_ms < 0)
        bad = "latency and jitter must not be negative";
    else if (conf->threads < 1 || conf->threads > 64)
        bad = "threads must be 1 to 64";
    else if (conf->max_conns < 1 || conf->max_body < 1)
        bad = "max_conns and max_body must be positive";
    enum style style = STYLE_OPENAI;
    if (!bad)
        bad = check_faults(conf, &style);
    if (bad) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "cannot start the simulator: %s", bad);
        return NULL;
    }
    shoal_sim_t *sim = calloc(1, sizeof(*sim));
    if (!sim) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    sim->conf = *conf;
    sim->style = style;
    sim->scale = conf->time_scale > 0 ? conf->time_scale : 1.0;
    hist_start(&sim->hist);
    if (pthread_mutex_init(&sim->stats_lock, NULL) != 0) {
        free(sim);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not create a mutex");
        return NULL;
    }
    if (pthread_mutex_init(&sim->limits.lock, NULL) != 0) {
        pthread_mutex_destroy(&sim->stats_lock);
        free(sim);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not create a mutex");
        return NULL;
    }
    sim->limits.rng = conf->seed;
    double burst = conf->burst_s > 0 ? conf->burst_s : 60;
    long long now = now_ns();
    bucket_init(&sim->limits.b[B_REQ], conf->rpm, burst, sim->scale, now);
    bucket_init(&sim->limits.b[B_TOK], conf->tpm, burst, sim->scale, now);
    bucket_init(&sim->limits.b[B_IN], conf->input_tpm, burst, sim->scale, now);
    bucket_init(&sim->limits.b[B_OUT], conf->output_tpm, burst, sim->scale, now);
    if (timers_init(&sim->timers, conf->max_conns, errbuf, errlen) != SHOAL_OK) {
        pthread_mutex_destroy(&sim->limits.lock);
        pthread_mutex_destroy(&sim->stats_lock);
        free(sim);
        return NULL;
    }
    int err = pthread_create(&sim->timers.thread, NULL, timer_main, &sim->timers);
    if (err != 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not start the timer thread: %s",
                      strerror(err));
        shoal_sim_destroy(sim);
        return NULL;
    }
    sim->timer_started = 1;

    int fd = open_listener(conf, &sim->port, errbuf, errlen);
    if (fd < 0) {
        shoal_sim_destroy(sim);
        return NULL;
    }
    struct MHD_OptionItem pool[] = {
        {conf->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)conf->threads,
         NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    /* poll(2), not epoll: with libmicrohttpd's epoll loop (edge-triggered
     * connections) a fresh server left most of a first burst of connections
     * unread, each holding its request until the client gave up
     * (tests/unit/http_test.c, test_sim_process_burst). */
    sim->daemon = MHD_start_daemon(
        MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, sim, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, sim, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, conf->max_conns, MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_POOL_BYTES, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, sim, MHD_OPTION_ARRAY, pool, MHD_OPTION_END);
    if (!sim->daemon) {
        /* libmicrohttpd may or may not have closed the socket on failure. */
        if (fcntl(fd, F_GETFD) != -1)
            close(fd);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO,
                      "could not start the HTTP server on %s:%d (see the log for why)", conf->bind,
                      sim->port);
        shoal_sim_destroy(sim);
        return NULL;
    }
    return sim;
}

int shoal_sim_port(const shoal_sim_t *sim)
{
    return sim->port;
}

void shoal_sim_destroy(shoal_sim_t *sim)
{
    if (!sim)
        return;
    if (sim->timer_started) {
        pthread_mutex_lock(&sim->timers.lock);
        sim->timers.stopping = 1;
        pthread_cond_signal(&sim->timers.cond);
        pthread_mutex_unlock(&sim->timers.lock);
        pthread_join(sim->timers.thread, NULL);
    }
    if (sim->daemon)
        MHD_stop_daemon(sim->daemon);
    free(sim->timers.heap);
    pthread_cond_destroy(&sim->timers.cond);
    pthread_mutex_destroy(&sim->timers.lock);
    seen_clear(&sim->seen);
    pthread_mutex_destroy(&sim->limits.lock);
    pthread_mutex_destroy(&sim->stats_lock);
    free(sim);
}
