/*
 * Tenant plans (see tenants.h): the file is decoded with jansson, every
 * field checked, and every problem collected (bounded) so that an operator
 * fixes the file in one pass rather than one error per restart.
 */
#include "common/tenants.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NAME_MAX_LEN 100
#define COUNT_MAX 1000000000L
#define FILE_MAX_BYTES (16L * 1024 * 1024)

struct shoal_tenants {
    json_t *doc; /* owned; plans' strings are borrowed from it */
    size_t n;
    shoal_tenant_plan_t *plans; /* n entries; the default plan, if any, is first */
    int has_default;
};

/* Problems found so far, one per line, at most SHOAL_TENANTS_MAX_ERRORS. */
struct problems {
    char *buf;
    size_t len, off;
    int n;
};

static void problem(struct problems *p, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(struct problems *p, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (p->n++ >= SHOAL_TENANTS_MAX_ERRORS || !p->buf || p->off >= p->len)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int w = snprintf(p->buf + p->off, p->len - p->off, "%s%s: %s", p->n > 1 ? "\n" : "", path, msg);
    if (w > 0)
        p->off += (size_t)w;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > NAME_MAX_LEN)
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static long get_count(struct problems *p, const char *path, const char *key, const json_t *v)
{
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > COUNT_MAX) {
        problem(p, path, "%s must be an integer from 1 to %ld", key, COUNT_MAX);
        return 0;
    }
    return (long)json_integer_value(v);
}

/* Fills plan from obj (at path), naming every problem. */
static void read_plan(struct problems *p, const char *path, const char *name, const json_t *obj,
                      shoal_tenant_plan_t *plan)
{
    const char *key;
    json_t *v;

    memset(plan, 0, sizeof(*plan));
    plan->name = name;
    if (!json_is_object(obj)) {
        problem(p, path, "expected an object (the tenant's plan)");
        return;
    }
    json_object_foreach((json_t *)obj, key, v)
    {
        if (!strcmp(key, "jobs_per_minute")) {
            plan->jobs_per_minute = get_count(p, path, key, v);
        } else if (!strcmp(key, "jobs_per_day")) {
            plan->jobs_per_day = get_count(p, path, key, v);
        } else if (!strcmp(key, "max_prompt_tokens")) {
            plan->max_prompt_tokens = get_count(p, path, key, v);
        } else if (!strcmp(key, "max_items")) {
            plan->max_items = get_count(p, path, key, v);
        } else if (!strcmp(key, "default_priority")) {
            const char *s = json_string_value(v);
            if (!s || (strcmp(s, "high") && strcmp(s, "normal") && strcmp(s, "low")))
                problem(p, path, "default_priority must be \"high\", \"normal\" or \"low\"");
            else
                plan->default_priority = s;
        } else if (!strcmp(key, "daily_budget_usd")) {
            double d = json_number_value(v);
            if (!json_is_number(v) || !(d > 0) || !isfinite(d))
                problem(p, path, "daily_budget_usd must be a number above 0");
            else
                plan->daily_budget_usd = d;
        } else {
            problem(p, path,
                    "unknown field \"%.100s\" (known: jobs_per_minute, jobs_per_day, "
                    "max_prompt_tokens, max_items, default_priority, daily_budget_usd)",
                    key);
        }
    }
}

void shoal_tenants_destroy(shoal_tenants_t *t)
{
    if (!t)
        return;
    json_decref(t->doc);
    free(t->plans);
    free(t);
}

shoal_tenants_t *shoal_tenants_parse(const char *text, size_t len, char *errbuf, size_t errlen)
{
    struct problems p = {errbuf, errlen, 0, 0};
    json_error_t e;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    shoal_tenants_t *t;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!doc) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "invalid JSON at line %d, column %d: %s",
                      e.line, e.column, e.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "expected an object with \"tenants\" and \"default\"");
        json_decref(doc);
        return NULL;
    }
    const json_t *tenants = json_object_get(doc, "tenants");
    const json_t *def = json_object_get(doc, "default");
    size_t cap = json_object_size(tenants) + 1;
    if (!(t = calloc(1, sizeof(*t))) || !(t->plans = calloc(cap, sizeof(*t->plans)))) {
        free(t);
        json_decref(doc);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    t->doc = doc;
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v)
    {
        if (strcmp(key, "tenants") && strcmp(key, "default"))
            problem(&p, "tenants file", "unknown field \"%.100s\" (known: tenants, default)", key);
    }
    if (def) {
        read_plan(&p, "default", SHOAL_TENANTS_DEFAULT_NAME, def, &t->plans[t->n++]);
        t->has_default = 1;
    }
    if (tenants && !json_is_object(tenants))
        problem(&p, "tenants", "expected an object of plans by tenant name");
    json_object_foreach((json_t *)tenants, key, v)
    {
        char path[160];
        snprintf(path, sizeof(path), "tenants.%.100s", key);
        if (!valid_name(key))
            problem(&p, path, "a tenant name is 1 to %d letters, digits and . _ -", NAME_MAX_LEN);
        read_plan(&p, path, key, v, &t->plans[t->n++]);
    }
    if (p.n > 0) {
        if (p.n > SHOAL_TENANTS_MAX_ERRORS && p.buf && p.off < p.len)
            snprintf(p.buf + p.off, p.len - p.off, "\n(%d more problems not shown)",
                     p.n - SHOAL_TENANTS_MAX_ERRORS);
        shoal_tenants_destroy(t);
        return NULL;
    }
    return t;
}

shoal_tenants_t *shoal_tenants_load(const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 4096, n = 0, got;
    char *buf;

    if (!f) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "cannot open: %s", strerror(errno));
        return NULL;
    }
    buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n < cap)
            continue;
        char *nb = cap < (size_t)FILE_MAX_BYTES ? realloc(buf, cap * 2) : NULL;
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int ioerr = ferror(f);
    fclose(f);
    if (!buf || ioerr) {
        free(buf);
        shoal_err_set(errbuf, errlen, ioerr ? SHOAL_ERR_IO : SHOAL_ERR_LIMIT,
                      ioerr ? "could not read the file" : "larger than %ld bytes or out of memory",
                      FILE_MAX_BYTES);
        return NULL;
    }
    shoal_tenants_t *t = shoal_tenants_parse(buf, n, errbuf, errlen);
    free(buf);
    return t;
}

const shoal_tenant_plan_t *shoal_tenants_plan(const shoal_tenants_t *t, const char *tenant)
{
    if (!t)
        return NULL;
    for (size_t i = t->has_default ? 1 : 0; tenant && i < t->n; i++) {
        if (!strcmp(t->plans[i].name, tenant))
            return &t->plans[i];
    }
    return t->has_default ? &t->plans[0] : NULL;
}

json_t *shoal_tenants_rows(const shoal_tenants_t *t)
{
    json_t *rows = json_array();

    for (size_t i = 0; rows && t && i < t->n; i++) {
        const shoal_tenant_plan_t *p = &t->plans[i];
        json_t *row =
            json_pack("{s:s, s:I, s:I, s:I, s:I, s:s?, s:f}", "tenant", p->name, "jobs_per_minute",
                      (json_int_t)p->jobs_per_minute, "jobs_per_day", (json_int_t)p->jobs_per_day,
                      "max_prompt_tokens", (json_int_t)p->max_prompt_tokens, "max_items",
                      (json_int_t)p->max_items, "default_priority", p->default_priority,
                      "daily_budget_usd", p->daily_budget_usd);
        if (json_array_append_new(rows, row)) {
            json_decref(rows);
            return NULL;
        }
    }
    return rows;
}

shoal_err_t shoal_tenants_check_job(const shoal_tenant_plan_t *plan, const char *tenant,
                                    size_t n_items, long max_call_tokens, char *errbuf,
                                    size_t errlen)
{
    if (!plan)
        return SHOAL_OK;
    if (plan->max_items > 0 && n_items > (size_t)plan->max_items)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_LIMIT,
                             "tenant %s: the job has %zu items; the plan allows at most %ld per "
                             "job (split the job)",
                             tenant, n_items, plan->max_items);
    if (plan->max_prompt_tokens > 0 && max_call_tokens > plan->max_prompt_tokens)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_LIMIT,
                             "tenant %s: a call of the job has a prompt of about %ld tokens; the "
                             "plan allows at most %ld (lower chunking.max_tokens or "
                             "chunking.max_items)",
                             tenant, max_call_tokens, plan->max_prompt_tokens);
    return SHOAL_OK;
}

shoal_err_t shoal_tenants_quota_reason(const char *tenant, const char *kind, double count,
                                       double limit, long long reset_unix, char *buf, size_t len)
{
    time_t reset = (time_t)reset_unix;
    struct tm tm;
    char when[40];

    if (!gmtime_r(&reset, &tm) || !strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(when, sizeof(when), "%lld (unix time)", reset_unix);
    if (!strcmp(kind, "minute") || !strcmp(kind, "day"))
        return shoal_err_set(buf, len, SHOAL_ERR_LIMIT,
                             "tenant %s: %.0f jobs per %s reached (limit %.0f); resets at %s",
                             tenant, count, kind, limit, when);
    if (!strcmp(kind, "budget"))
        return shoal_err_set(buf, len, SHOAL_ERR_LIMIT,
                             "tenant %s: daily budget of $%.2f reached ($%.4f spent today); "
                             "resets at %s",
                             tenant, limit, count, when);
    return shoal_err_set(buf, len, SHOAL_ERR_INVALID, "unknown quota kind \"%s\"", kind);
}

json_t *shoal_tenants_quota_json(const shoal_tenant_plan_t *plan)
{
    if (!plan ||
        (plan->jobs_per_minute <= 0 && plan->jobs_per_day <= 0 && !(plan->daily_budget_usd > 0)))
        return NULL;
    return json_pack("{s:I, s:I, s:f}", "jobs_per_minute", (json_int_t)plan->jobs_per_minute,
                     "jobs_per_day", (json_int_t)plan->jobs_per_day, "daily_budget_usd",
                     plan->daily_budget_usd);
}

shoal_err_t shoal_tenants_quota_answer(const char *answer, const char *tenant, char *buf,
                                       size_t len)
{
    char kind[16], *end;
    const char *p;
    double count, limit;
    long long reset;

    if (strncmp(answer, "quota:", 6) != 0 || !(p = strchr(answer + 6, ':')) ||
        (size_t)(p - answer - 6) >= sizeof(kind))
        return shoal_err_set(buf, len, SHOAL_ERR_INVALID, "not a quota answer");
    memcpy(kind, answer + 6, (size_t)(p - answer - 6));
    kind[p - answer - 6] = '\0';
    count = strtod(p + 1, &end);
    if (*end != ':')
        return shoal_err_set(buf, len, SHOAL_ERR_INVALID, "not a quota answer");
    limit = strtod(end + 1, &end);
    if (*end != ':')
        return shoal_err_set(buf, len, SHOAL_ERR_INVALID, "not a quota answer");
    errno = 0;
    reset = strtoll(end + 1, &end, 10);
    if (*end != '\0' || errno)
        return shoal_err_set(buf, len, SHOAL_ERR_INVALID, "not a quota answer");
    return shoal_tenants_quota_reason(tenant, kind, count, limit, reset, buf, len);
}
