/*
 * Provider wire formats (see provider.h).
 *
 * Everything that reads an answer is bounded by the length it is given:
 * bodies go through json_loadb, header values are copied into small local
 * buffers before any number is read, so a hostile or truncated answer can
 * never make us read past it.
 */
#include "worker/provider.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/jsontext.h"
#include "worker/jsonpick.h"

#define DEFAULT_ANTHROPIC_MAX_TOKENS 4096

/* A request body never exceeds this (a rendered prompt is capped far below). */
#define REQUEST_MAX ((size_t)256 << 20)

/* {"role":role,"content":text}; -1 when text is not valid UTF-8. */
static int message(shoal_jsontext_t *b, const char *role, const char *text)
{
    shoal_jsontext_open(b);
    int bad = shoal_jsontext_key_str(b, "role", role) | shoal_jsontext_key_str(b, "content", text);
    shoal_jsontext_close(b);
    return bad;
}

char *shoal_provider_request(const shoal_model_t *m, const char *system, const char *prompt,
                             int want_json, size_t *len)
{
    /* Written as text, members in the order a jansson object dumped them
     * (the same bytes, without a tree of a dozen allocations per call). A
     * string jansson would refuse (invalid UTF-8) fails the whole request, as
     * a body missing a message must never be sent. */
    shoal_jsontext_t b;
    int bad = 0;
    int has_system = system && *system;

    shoal_jsontext_init(&b, REQUEST_MAX);
    shoal_jsontext_open(&b);
    bad |= shoal_jsontext_key_str(&b, "model", m->model);
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC) {
        if (has_system)
            bad |= shoal_jsontext_key_str(&b, "system", system);
        shoal_jsontext_key_int(&b, "max_tokens",
                               m->max_output_tokens > 0 ? m->max_output_tokens
                                                        : DEFAULT_ANTHROPIC_MAX_TOKENS);
    } else {
        if (m->max_output_tokens > 0)
            shoal_jsontext_key_int(&b, "max_tokens", m->max_output_tokens);
        if (want_json) {
            shoal_jsontext_key(&b, "response_format");
            shoal_jsontext_open(&b);
            bad |= shoal_jsontext_key_str(&b, "type", "json_object");
            shoal_jsontext_close(&b);
        }
    }
    shoal_jsontext_key(&b, "messages");
    shoal_jsontext_raw(&b, "[", 1);
    if (has_system && m->provider != SHOAL_PROVIDER_ANTHROPIC) {
        bad |= message(&b, "system", system);
        shoal_jsontext_raw(&b, ",", 1);
    }
    bad |= message(&b, "user", prompt ? prompt : "");
    shoal_jsontext_raw(&b, "]", 1);
    shoal_jsontext_close(&b);
    if (bad || !prompt) {
        shoal_jsontext_free(&b);
        return NULL;
    }
    size_t n = 0;
    char *out = shoal_jsontext_detach(&b, &n);
    if (out && len)
        *len = n;
    return out;
}

struct curl_slist *shoal_provider_headers(const shoal_model_t *m)
{
    struct curl_slist *h = NULL, *t;
    char line[4200];
    const char *key = m->api_key_env ? getenv(m->api_key_env) : NULL;

    if (!(h = curl_slist_append(NULL, "Content-Type: application/json")))
        return NULL;
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC) {
        if (!(t = curl_slist_append(h, "anthropic-version: 2023-06-01")))
            goto fail;
        h = t;
    }
    if (key && *key) {
        snprintf(line, sizeof(line), "%s: %s%s", shoal_provider_key_header(m->provider),
                 m->provider == SHOAL_PROVIDER_OPENAI ? "Bearer " : "", key);
        t = curl_slist_append(h, line);
        memset(line, 0, sizeof(line));
        if (!t)
            goto fail;
        h = t;
    }
    /* The models file's own, after ours: a gateway's or an organization's. */
    for (size_t i = 0; i < m->nheaders; i++) {
        char extra[SHOAL_MODEL_HEADER_LINE_MAX];
        shoal_err_t err = shoal_model_header_line(m, i, extra, sizeof(extra), NULL, 0);
        t = err == SHOAL_OK ? curl_slist_append(h, extra) : NULL;
        memset(extra, 0, sizeof(extra));
        if (!t)
            goto fail;
        h = t;
    }
    /* No "Expect: 100-continue" round trip on large bodies. */
    if (!(t = curl_slist_append(h, "Expect:")))
        goto fail;
    return t;
fail:
    curl_slist_free_all(h);
    return NULL;
}

#define WHY_MAX 200       /* bytes of provider text kept in a reason */
#define VALUE_MAX 64      /* bytes of one header value we read */
#define DAY_MS 86400000.0 /* times further away than this are nonsense */

const char *shoal_outcome_name(shoal_outcome_t o)
{
    switch (o) {
    case SHOAL_OUTCOME_OK:
        return "ok";
    case SHOAL_OUTCOME_TRUNCATED:
        return "truncated";
    case SHOAL_OUTCOME_RATE_LIMITED:
        return "rate_limited";
    case SHOAL_OUTCOME_OVERLOADED:
        return "overloaded";
    case SHOAL_OUTCOME_SERVER_ERROR:
        return "server_error";
    case SHOAL_OUTCOME_TIMEOUT:
        return "timeout";
    case SHOAL_OUTCOME_CONNECTION:
        return "connection";
    case SHOAL_OUTCOME_PERMANENT:
        return "permanent";
    case SHOAL_OUTCOME_MALFORMED:
        return "malformed";
    }
    return "unknown";
}

int shoal_outcome_retriable(shoal_outcome_t o)
{
    switch (o) {
    case SHOAL_OUTCOME_RATE_LIMITED:
    case SHOAL_OUTCOME_OVERLOADED:
    case SHOAL_OUTCOME_SERVER_ERROR:
    case SHOAL_OUTCOME_TIMEOUT:
    case SHOAL_OUTCOME_CONNECTION:
    case SHOAL_OUTCOME_MALFORMED: /* a broken answer is the provider's fault, not the prompt's */
        return 1;
    case SHOAL_OUTCOME_OK:
    case SHOAL_OUTCOME_TRUNCATED: /* the same request is cut at the same place again */
    case SHOAL_OUTCOME_PERMANENT:
        return 0;
    }
    return 0;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t want;
    unsigned cp;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        want = 2, cp = p[0] & 0x1fu;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        want = 3, cp = p[0] & 0x0fu;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        want = 4, cp = p[0] & 0x07u;
    else
        return 0;
    if (want > n)
        return 0;
    for (size_t i = 1; i < want; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    if ((want == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (want == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return want;
}

/* Appends up to WHY_MAX bytes of text to out as one printable line: control
 * characters become spaces, invalid UTF-8 becomes '?', and no multi-byte
 * character is cut, so the text is always valid for a JSON row. */
static void one_line(char *out, size_t outlen, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t o = strlen(out), start = o, i = 0;

    while (i < len && o - start < WHY_MAX && o + 1 < outlen) {
        size_t n = utf8_len(p + i, len - i);

        if (n == 0) {
            out[o++] = '?';
            i++;
        } else if (n == 1) {
            out[o++] = p[i] < 0x20 || p[i] == 0x7f ? ' ' : (char)p[i];
            i++;
        } else {
            if (o - start + n > WHY_MAX || o + n + 1 > outlen)
                break;
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        }
    }
    while (o > start && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

/* The provider's own words from an error body: OpenAI {"error":{"message"}},
 * Anthropic {"type":"error","error":{"type","message"}}, {"error":"text"},
 * {"message":"..."}, FastAPI/vLLM {"detail":...}, else the body's first
 * bytes. Appended to out; nothing when the body is empty. */
static void error_text(const json_t *doc, const char *body, size_t len, char *out, size_t outlen)
{
    const json_t *err = json_object_get(doc, "error");
    const json_t *detail = json_object_get(doc, "detail");
    const char *msg = NULL;
    char *dumped = NULL;

    if (!json_is_object(doc)) {
        while (len > 0 && (*body == ' ' || *body == '\t' || *body == '\r' || *body == '\n'))
            body++, len--;
        one_line(out, outlen, body, len);
        return;
    }
    if (json_is_object(err)) {
        msg = json_string_value(json_object_get(err, "message"));
        if (!msg)
            msg = json_string_value(json_object_get(err, "type"));
        if (!msg)
            msg = json_string_value(json_object_get(err, "code"));
    } else if (json_is_string(err)) {
        msg = json_string_value(err);
    }
    if (!msg)
        msg = json_string_value(json_object_get(doc, "message"));
    if (!msg && json_is_string(detail))
        msg = json_string_value(detail);
    if (!msg && json_is_array(detail)) /* FastAPI validation errors: [{"msg": ...}] */
        msg = json_string_value(json_object_get(json_array_get(detail, 0), "msg"));
    if (!msg && detail)
        msg = dumped = json_dumps(detail, JSON_COMPACT | JSON_ENCODE_ANY);
    if (msg)
        one_line(out, outlen, msg, strlen(msg));
    else /* JSON we do not know: still better than nothing */
        one_line(out, outlen, body, len);
    free(dumped);
}

static long count_field(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;

    return n < 0 ? 0 : n > 1000000000000 ? 1000000000000 : (long)n;
}

/* The text of an Anthropic answer: every text block joined (a thinking or
 * tool block may come first). NULL when there is none. */
static char *anthropic_text(const json_t *content)
{
    size_t i, n = 0, o = 0;
    const json_t *b;
    char *text;
    int any = 0;

    json_array_foreach(content, i, b)
    {
        const json_t *t = json_object_get(b, "text");
        const char *type = json_string_value(json_object_get(b, "type"));

        if (json_is_string(t) && (!type || strcmp(type, "text") == 0)) {
            n += json_string_length(t);
            any = 1;
        }
    }
    if (!any || !(text = malloc(n + 1)))
        return NULL;
    json_array_foreach(content, i, b)
    {
        const json_t *t = json_object_get(b, "text");
        const char *type = json_string_value(json_object_get(b, "type"));

        if (json_is_string(t) && (!type || strcmp(type, "text") == 0)) {
            memcpy(text + o, json_string_value(t), json_string_length(t));
            o += json_string_length(t);
        }
    }
    text[o] = '\0';
    return text;
}

static void set_why(char *why, size_t whylen, const char *fmt, const char *arg)
{
    if (why && whylen)
        snprintf(why, whylen, fmt, arg);
}

static long count_pick(const shoal_jsonpick_t *p)
{
    long long n = p->kind == SHOAL_JSONPICK_INTEGER ? p->integer : 0;

    return n < 0 ? 0 : n > 1000000000000 ? 1000000000000 : (long)n;
}

static int pick_is(const shoal_jsonpick_t *p, const char *s)
{
    return p->kind == SHOAL_JSONPICK_STRING && p->len == strlen(s) && !memcmp(p->text, s, p->len);
}

/* parse_success without a jansson tree, for the answers of every call: 1
 * with out and the outcome set when the answer is plain (see
 * worker/jsonpick.h) and has its text where it usually is (an OpenAI
 * message's content; one Anthropic text block); 0 leaves the answer to
 * parse_success's jansson reading, which gives the same result for these
 * and says what is wrong with the others. */
static int parse_success_fast(const shoal_model_t *m, const shoal_http_reply_t *r,
                              shoal_provider_reply_t *out, shoal_outcome_t *oc)
{
    shoal_jsonpick_t p[8];

    if (!r->body)
        return 0;
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC) {
        static const char *const paths[] = {"content.0.text",
                                            "content.0.type",
                                            "content.1",
                                            "stop_reason",
                                            "usage.input_tokens",
                                            "usage.output_tokens",
                                            "usage.cache_read_input_tokens",
                                            "usage.cache_creation_input_tokens"};
        for (size_t i = 0; i < 8; i++)
            p[i].path = paths[i];
        /* a second block (thinking, tools, more text) is joined by the slow path */
        if (!shoal_jsonpick_object(r->body, r->len, p, 8) || p[0].kind != SHOAL_JSONPICK_STRING ||
            p[2].kind != SHOAL_JSONPICK_ABSENT ||
            (p[1].kind == SHOAL_JSONPICK_STRING && !pick_is(&p[1], "text")))
            return 0;
        long read = count_pick(&p[6]), write = count_pick(&p[7]);
        if (!(out->content = shoal_jsonpick_string(&p[0])))
            return 0;
        out->usage.input = count_pick(&p[4]) + read + write;
        out->usage.cached = read;
        out->usage.cache_write = write;
        out->usage.output = count_pick(&p[5]);
        *oc = pick_is(&p[3], "max_tokens") ? SHOAL_OUTCOME_TRUNCATED : SHOAL_OUTCOME_OK;
        return 1;
    }
    static const char *const paths[] = {"choices.0.message.content", "choices.0.finish_reason",
                                        "usage.prompt_tokens", "usage.completion_tokens",
                                        "usage.prompt_tokens_details.cached_tokens"};
    for (size_t i = 0; i < 5; i++)
        p[i].path = paths[i];
    if (!shoal_jsonpick_object(r->body, r->len, p, 5) || p[0].kind != SHOAL_JSONPICK_STRING ||
        !(out->content = shoal_jsonpick_string(&p[0])))
        return 0;
    out->usage.input = count_pick(&p[2]);
    out->usage.cached = count_pick(&p[4]);
    out->usage.output = count_pick(&p[3]);
    *oc = pick_is(&p[1], "length") ? SHOAL_OUTCOME_TRUNCATED : SHOAL_OUTCOME_OK;
    return 1;
}

/* A 2xx answer: content, usage and whether it was cut at max tokens. */
static shoal_outcome_t parse_success(const shoal_model_t *m, const shoal_http_reply_t *r,
                                     shoal_provider_reply_t *out, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(r->body ? r->body : "", r->body ? r->len : 0, 0, &jerr);
    const json_t *usage = json_object_get(doc, "usage");
    shoal_outcome_t oc = SHOAL_OUTCOME_OK;
    const char *stop;
    char *text = NULL;

    if (!json_is_object(doc)) {
        /* jansson's text quotes the bad token: raw newlines, bytes that are
         * not UTF-8, which the one-line rule keeps out of rows and logs. */
        const char *what = doc ? "not a JSON object" : jerr.text;
        set_why(why, whylen, "%s", "malformed answer from the provider: ");
        if (why && whylen)
            one_line(why, whylen, what, strlen(what));
        json_decref(doc);
        return SHOAL_OUTCOME_MALFORMED;
    }
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC) {
        long read = count_field(usage, "cache_read_input_tokens");
        long write = count_field(usage, "cache_creation_input_tokens");

        /* input_tokens counts only what came after the last cache breakpoint */
        out->usage.input = count_field(usage, "input_tokens") + read + write;
        out->usage.cached = read;
        out->usage.cache_write = write;
        out->usage.output = count_field(usage, "output_tokens");
        text = anthropic_text(json_object_get(doc, "content"));
        stop = json_string_value(json_object_get(doc, "stop_reason"));
        if (stop && strcmp(stop, "max_tokens") == 0)
            oc = SHOAL_OUTCOME_TRUNCATED;
    } else {
        const json_t *c = json_array_get(json_object_get(doc, "choices"), 0);
        const char *s =
            json_string_value(json_object_get(json_object_get(c, "message"), "content"));

        /* prompt_tokens already includes the cached ones */
        out->usage.input = count_field(usage, "prompt_tokens");
        out->usage.cached =
            count_field(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
        out->usage.output = count_field(usage, "completion_tokens");
        if (s && !(text = strdup(s))) {
            set_why(why, whylen, "%s", "out of memory copying the answer");
            json_decref(doc);
            return SHOAL_OUTCOME_MALFORMED;
        }
        stop = json_string_value(json_object_get(c, "finish_reason"));
        if (stop && strcmp(stop, "length") == 0)
            oc = SHOAL_OUTCOME_TRUNCATED;
    }
    if (!text) {
        if (why && whylen) {
            snprintf(why, whylen, "malformed answer from the provider: no message content");
            if (json_object_get(doc, "error") || json_object_get(doc, "detail")) {
                /* some proxies answer 200 with an error object */
                size_t n = strlen(why);
                snprintf(why + n, whylen - n, ": ");
                error_text(doc, r->body, r->len, why, whylen);
            }
        }
        json_decref(doc);
        return SHOAL_OUTCOME_MALFORMED;
    }
    out->content = text;
    if (oc == SHOAL_OUTCOME_TRUNCATED)
        set_why(why, whylen, "%s", "the answer was cut at the output token limit");
    json_decref(doc);
    return oc;
}

static shoal_outcome_t status_outcome(long s, const json_t *doc)
{
    const char *type = json_string_value(json_object_get(json_object_get(doc, "error"), "type"));
    int overloaded = type && strcmp(type, "overloaded_error") == 0;

    if (s == 429)
        return overloaded ? SHOAL_OUTCOME_OVERLOADED : SHOAL_OUTCOME_RATE_LIMITED;
    if (s == 503 || s == 529 || (overloaded && s >= 500))
        return SHOAL_OUTCOME_OVERLOADED;
    if (s >= 500 || s == 408 || s == 409 || s == 425)
        return SHOAL_OUTCOME_SERVER_ERROR;
    return SHOAL_OUTCOME_PERMANENT;
}

shoal_outcome_t shoal_provider_outcome(const shoal_model_t *m, const shoal_http_reply_t *r,
                                       shoal_provider_reply_t *out, char *why, size_t whylen)
{
    shoal_outcome_t oc;
    json_t *doc;

    memset(out, 0, sizeof(*out));
    if (why && whylen)
        why[0] = '\0';
    if (r->status == 0) {
        const char *e = r->error && *r->error ? r->error : "no answer";

        if (r->timed_out) {
            set_why(why, whylen, "timed out: %s", e);
            return SHOAL_OUTCOME_TIMEOUT;
        }
        /* Not a passing fault: every call to this endpoint fails the same
         * way until its CA is trusted, so the task fails with what to do. */
        if (r->untrusted) {
            set_why(why, whylen,
                    "%s; if the endpoint's certificate is signed by a private CA, name that "
                    "CA's PEM file in the models file's ca_file",
                    e);
            return SHOAL_OUTCOME_PERMANENT;
        }
        set_why(why, whylen, "%s", e);
        return SHOAL_OUTCOME_CONNECTION;
    }
    if (r->status >= 200 && r->status < 300) {
        if (!parse_success_fast(m, r, out, &oc))
            return parse_success(m, r, out, why, whylen);
        if (oc == SHOAL_OUTCOME_TRUNCATED)
            set_why(why, whylen, "%s", "the answer was cut at the output token limit");
        return oc;
    }
    doc = json_loadb(r->body ? r->body : "", r->body ? r->len : 0, 0, NULL);
    oc = status_outcome(r->status, doc);
    if (why && whylen) {
        size_t n;

        snprintf(why, whylen, "HTTP %ld", r->status);
        n = strlen(why);
        if (r->body && r->len > 0 && n + 2 < whylen) {
            snprintf(why + n, whylen - n, ": ");
            error_text(doc, r->body, r->len, why, whylen);
            if (strlen(why) == n + 2) /* nothing printable */
                why[n] = '\0';
        }
    }
    json_decref(doc);
    return oc;
}

/* ---- rate-limit signals ---- */

/* Reads an unsigned decimal number (digits, optional fraction) at *p into
 * *v; advances *p. 0 when there are no digits. No locale, no strtod. */
static int read_decimal(const char **p, double *v)
{
    const char *s = *p;
    double n = 0, scale = 1;
    int digits = 0;

    for (; *s >= '0' && *s <= '9'; s++, digits++)
        n = n * 10 + (*s - '0');
    if (*s == '.') {
        for (s++; *s >= '0' && *s <= '9'; s++, digits++) {
            scale /= 10;
            n += (*s - '0') * scale;
        }
    }
    if (!digits || digits > 18)
        return 0;
    *p = s;
    *v = n;
    return 1;
}

/* Milliseconds as a field value: -1 unless 0 <= ms <= a day; rounded up, so
 * a wait is never cut short (less a nanosecond, so the binary noise of a
 * decimal like 59.999 s does not add a whole millisecond). */
static long ms_value(double ms)
{
    if (!(ms >= 0) || ms > DAY_MS)
        return -1;
    return ms < 1e-6 ? 0 : (long)ceil(ms - 1e-6);
}

/* Whole number >= 0 (limits, remaining counts); -1 when unreadable. */
static long parse_count(const char *v)
{
    double n;

    if (!read_decimal(&v, &n) || *v || n != floor(n) || n > 1e15)
        return -1;
    return (long)n;
}

/* A Go-style duration as OpenAI sends it: "12ms", "1s", "6m0s", "1m30.5s",
 * "2h", or a bare number of seconds. -1 when unreadable. */
static long parse_duration_ms(const char *v)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ms", 1},      {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ns", 1e-6},
                 {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    double total = 0, n;

    if (!read_decimal(&v, &n))
        return -1;
    if (!*v)
        return ms_value(n * 1000);
    for (;;) {
        size_t i;

        /* "ms" before "m": the longest unit that matches */
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t ul = strlen(units[i].unit);

            if (strncmp(v, units[i].unit, ul) == 0) {
                v += ul;
                break;
            }
        }
        if (i == sizeof(units) / sizeof(units[0]))
            return -1;
        total += n * units[i].ms;
        if (!*v)
            return ms_value(total);
        if (!read_decimal(&v, &n))
            return -1;
    }
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil): no timegm, no TZ, no locale. */
static long days_from_civil(long y, long mo, long d)
{
    long era, yoe, doy, doe;

    y -= mo <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Exactly n digits at *p into *v; advances *p. */
static int read_digits(const char **p, int n, long *v)
{
    long x = 0;

    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return 0;
        x = x * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *v = x;
    return 1;
}

static int valid_time(long y, long mo, long d, long h, long mi, long sec)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return y >= 1970 && y <= 9999 && mo >= 1 && mo <= 12 && d >= 1 && d <= mdays[mo - 1] &&
           h <= 23 && mi <= 59 && sec <= 60;
}

/* "HH:MM:SS" at *p. */
static int read_clock(const char **p, long *h, long *mi, long *sec)
{
    return read_digits(p, 2, h) && *(*p)++ == ':' && read_digits(p, 2, mi) && *(*p)++ == ':' &&
           read_digits(p, 2, sec);
}

/* RFC 3339 ("2024-05-01T12:00:30.5Z", "...+02:00") as Unix seconds; -1 when
 * unreadable. */
static double parse_rfc3339(const char *v)
{
    long y, mo, d, h, mi, sec, oh, om;
    double t, frac = 0;

    if (!read_digits(&v, 4, &y) || *v++ != '-' || !read_digits(&v, 2, &mo) || *v++ != '-' ||
        !read_digits(&v, 2, &d) || (*v != 'T' && *v != 't' && *v != ' ') || !*v++ ||
        !read_clock(&v, &h, &mi, &sec) || !valid_time(y, mo, d, h, mi, sec))
        return -1;
    if (*v == '.') {
        double scale = 1;

        if (*++v < '0' || *v > '9')
            return -1;
        for (; *v >= '0' && *v <= '9'; v++) {
            scale /= 10;
            frac += (*v - '0') * scale;
        }
    }
    t = (double)days_from_civil(y, mo, d) * 86400 + (double)(h * 3600 + mi * 60 + sec) + frac;
    if (*v == 'Z' || *v == 'z') {
        v++;
    } else if (*v == '+' || *v == '-') {
        int sign = *v++ == '+' ? 1 : -1;

        if (!read_digits(&v, 2, &oh) || *v++ != ':' || !read_digits(&v, 2, &om) || oh > 23 ||
            om > 59)
            return -1;
        t -= sign * (double)(oh * 3600 + om * 60);
    } else {
        return -1;
    }
    return *v ? -1 : t;
}

/* A month's three-letter name at *p (any case) as 1..12; advances *p. */
static int read_month(const char **p, long *mo)
{
    static const char names[] = "janfebmaraprmayjunjulaugsepoctnovdec";

    for (long i = 0; i < 12; i++) {
        if (strncasecmp(*p, names + 3 * i, 3) == 0) {
            *p += 3;
            *mo = i + 1;
            return 1;
        }
    }
    return 0;
}

/* An HTTP date (IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850
 * "Sunday, 06-Nov-94 08:49:37 GMT" or asctime "Sun Nov  6 08:49:37 1994") as
 * Unix seconds; -1 when unreadable. Each comparison stops at the terminator,
 * so a short value is never read past. */
static double parse_http_date(const char *v)
{
    long y, mo, d, h, mi, sec;
    const char *p = v;

    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
        p++;
    if (p - v < 3)
        return -1;
    if (*p == ',') {
        p++;
        if (*p++ != ' ' || !read_digits(&p, 2, &d))
            return -1;
        if (*p == ' ') {
            p++;
            if (!read_month(&p, &mo) || *p++ != ' ' || !read_digits(&p, 4, &y))
                return -1;
        } else if (*p == '-') {
            p++;
            if (!read_month(&p, &mo) || *p++ != '-' || !read_digits(&p, 2, &y))
                return -1;
            y += y < 70 ? 2000 : 1900; /* RFC 850's two-digit year */
        } else {
            return -1;
        }
        if (*p++ != ' ' || !read_clock(&p, &h, &mi, &sec) || strcmp(p, " GMT") != 0)
            return -1;
    } else if (*p == ' ') {
        p++;
        if (!read_month(&p, &mo) || *p++ != ' ')
            return -1;
        if (*p == ' ') {
            p++;
            if (!read_digits(&p, 1, &d))
                return -1;
        } else if (!read_digits(&p, 2, &d)) {
            return -1;
        }
        if (*p++ != ' ' || !read_clock(&p, &h, &mi, &sec) || *p++ != ' ' ||
            !read_digits(&p, 4, &y) || *p)
            return -1;
    } else {
        return -1;
    }
    if (!valid_time(y, mo, d, h, mi, sec))
        return -1;
    return (double)days_from_civil(y, mo, d) * 86400 + (double)(h * 3600 + mi * 60 + sec);
}

/* Retry-After: seconds, or an HTTP date made relative to now_unix. */
static long parse_retry_after(const char *v, double now_unix)
{
    double n, t;
    const char *p = v;

    if (read_decimal(&p, &n) && !*p)
        return ms_value(n * 1000);
    if ((t = parse_http_date(v)) < 0)
        return -1;
    return ms_value(t > now_unix ? (t - now_unix) * 1000 : 0);
}

/* An RFC 3339 reset time as milliseconds from now_unix, floored at 0. */
static long parse_reset_time(const char *v, double now_unix)
{
    double t = parse_rfc3339(v);

    if (t < 0)
        return -1;
    return ms_value(t > now_unix ? (t - now_unix) * 1000 : 0);
}

enum sig_kind { SIG_LIMIT, SIG_COUNT, SIG_DURATION, SIG_RESET_TIME, SIG_MS, SIG_RETRY_AFTER };

#define SIG(name, kind, field)                                                                     \
    {                                                                                              \
        name, sizeof(name) - 1, kind, offsetof(shoal_provider_signals_t, field)                    \
    }
static const struct {
    const char *name;
    size_t len;
    enum sig_kind kind;
    size_t off;
} sigs[] = {
    SIG("x-ratelimit-limit-requests", SIG_LIMIT, limit_requests),
    SIG("x-ratelimit-remaining-requests", SIG_COUNT, remaining_requests),
    SIG("x-ratelimit-reset-requests", SIG_DURATION, reset_requests_ms),
    SIG("x-ratelimit-limit-tokens", SIG_LIMIT, limit_tokens),
    SIG("x-ratelimit-remaining-tokens", SIG_COUNT, remaining_tokens),
    SIG("x-ratelimit-reset-tokens", SIG_DURATION, reset_tokens_ms),
    SIG("anthropic-ratelimit-requests-limit", SIG_LIMIT, limit_requests),
    SIG("anthropic-ratelimit-requests-remaining", SIG_COUNT, remaining_requests),
    SIG("anthropic-ratelimit-requests-reset", SIG_RESET_TIME, reset_requests_ms),
    SIG("anthropic-ratelimit-tokens-limit", SIG_LIMIT, limit_tokens),
    SIG("anthropic-ratelimit-tokens-remaining", SIG_COUNT, remaining_tokens),
    SIG("anthropic-ratelimit-tokens-reset", SIG_RESET_TIME, reset_tokens_ms),
    SIG("anthropic-ratelimit-input-tokens-limit", SIG_LIMIT, limit_input_tokens),
    SIG("anthropic-ratelimit-input-tokens-remaining", SIG_COUNT, remaining_input_tokens),
    SIG("anthropic-ratelimit-input-tokens-reset", SIG_RESET_TIME, reset_input_tokens_ms),
    SIG("anthropic-ratelimit-output-tokens-limit", SIG_LIMIT, limit_output_tokens),
    SIG("anthropic-ratelimit-output-tokens-remaining", SIG_COUNT, remaining_output_tokens),
    SIG("anthropic-ratelimit-output-tokens-reset", SIG_RESET_TIME, reset_output_tokens_ms),
    SIG("retry-after-ms", SIG_MS, retry_after_ms),
    SIG("retry-after", SIG_RETRY_AFTER, retry_after_ms),
};
#undef SIG

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

void shoal_provider_signals(const char *headers, size_t len, double now_unix,
                            shoal_provider_signals_t *out)
{
    const char *p = headers, *end = headers ? headers + len : NULL;
    long retry_after = -1, retry_after_ms = -1;

    *out = (shoal_provider_signals_t){-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end, *colon = memchr(p, ':', (size_t)(le - p));
        const char *name = p, *ne, *v, *ve;
        char buf[VALUE_MAX];
        size_t i;

        p = nl ? nl + 1 : end;
        if (!colon)
            continue; /* a status line or a blank line */
        for (ne = colon; ne > name && is_blank(ne[-1]); ne--)
            ;
        for (v = colon + 1; v < le && is_blank(*v); v++)
            ;
        for (ve = le; ve > v && is_blank(ve[-1]); ve--)
            ;
        if ((size_t)(ve - v) >= sizeof(buf))
            continue; /* no value we read is this long */
        for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
            if ((size_t)(ne - name) == sigs[i].len &&
                strncasecmp(name, sigs[i].name, sigs[i].len) == 0)
                break;
        }
        if (i == sizeof(sigs) / sizeof(sigs[0]))
            continue;
        memcpy(buf, v, (size_t)(ve - v));
        buf[ve - v] = '\0';

        long val = -1, *field = (long *)((char *)out + sigs[i].off);
        double ms;
        const char *q = buf;

        switch (sigs[i].kind) {
        case SIG_LIMIT:
            val = parse_count(buf);
            if (val == 0) /* Azure sends 0 for "no limit known" */
                val = -1;
            break;
        case SIG_COUNT:
            val = parse_count(buf);
            break;
        case SIG_DURATION:
            val = parse_duration_ms(buf);
            break;
        case SIG_RESET_TIME:
            val = parse_reset_time(buf, now_unix);
            break;
        case SIG_MS:
            if (read_decimal(&q, &ms) && !*q && (val = ms_value(ms)) >= 0)
                retry_after_ms = val;
            continue;
        case SIG_RETRY_AFTER:
            if ((val = parse_retry_after(buf, now_unix)) >= 0)
                retry_after = val;
            continue;
        }
        if (val >= 0)
            *field = val;
    }
    /* the millisecond form is the more precise one when both are sent */
    out->retry_after_ms = retry_after_ms >= 0 ? retry_after_ms : retry_after;
}
