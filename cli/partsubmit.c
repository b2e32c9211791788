/*
 * Sending a job in parts (see partsubmit.h).
 */
#include "cli/partsubmit.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/jobsplit.h"
#include "common/kafka.h"

#define PART_ITEMS_MAX 100000 /* the schema's items maxItems */
#define MAX_CHUNKS 100000     /* scheduler/parts.h SHOAL_PARTS_MAX_CHUNKS */
#define MAX_PARTS 100000
#define ACK_EVERY 8

struct shoal_partsubmit {
    shoal_jobsplit_t *split;
    char job_id[256];
    char *id_json; /* the job_id as a JSON string */
    size_t part_bytes, parts, items;
    size_t chunks; /* the job's chunks, counted when its parts were checked */
    char *buf;     /* one part message */
    size_t cap, len;
    /* repeated item ids: 64-bit hashes, open addressing */
    uint64_t *ids;
    size_t ids_cap, ids_n;
};

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ? h : 1;
}

/* 1 when the id was seen, 0 when added, -1 when out of memory. */
static int seen(shoal_partsubmit_t *p, const char *id)
{
    if (p->ids_n * 2 >= p->ids_cap) {
        size_t cap = p->ids_cap ? p->ids_cap * 2 : 1024;
        uint64_t *n = calloc(cap, sizeof(*n));
        if (!n)
            return -1;
        for (size_t i = 0; i < p->ids_cap; i++)
            if (p->ids[i])
                for (size_t j = p->ids[i] & (cap - 1);; j = (j + 1) & (cap - 1))
                    if (!n[j]) {
                        n[j] = p->ids[i];
                        break;
                    }
        free(p->ids);
        p->ids = n;
        p->ids_cap = cap;
    }
    uint64_t h = hash(id, strlen(id));
    for (size_t j = h & (p->ids_cap - 1);; j = (j + 1) & (p->ids_cap - 1)) {
        if (p->ids[j] == h)
            return 1;
        if (!p->ids[j]) {
            p->ids[j] = h;
            p->ids_n++;
            return 0;
        }
    }
}

static int put(shoal_partsubmit_t *p, const char *s, size_t n)
{
    if (p->len + n + 1 > p->cap) {
        size_t cap = (p->len + n + 1) * 2;
        char *b = realloc(p->buf, cap);
        if (!b)
            return -1;
        p->buf = b;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
    return 0;
}

/* Builds part k's message in p->buf from the next items: as many as fit in
 * part_bytes. 1 when a part was built (*item_index advanced past its items),
 * 0 after the last item, -1 with the reason in errbuf. */
static int next_part(shoal_partsubmit_t *p, size_t k, size_t *item_index, char *errbuf,
                     size_t errlen)
{
    char head[400];
    const char *item;
    size_t ilen, n = 0;
    int r;
    /* A chunk never spans parts, so a part that ends mid-chunk adds a short
     * chunk: without group_by, parts end after a whole number of max_items
     * where they can (the last such place seen). */
    const json_t *chunking = json_object_get(shoal_jobsplit_header(p->split), "chunking");
    json_int_t per_chunk = json_integer_value(json_object_get(chunking, "max_items"));
    int whole = per_chunk > 1 && !json_object_get(chunking, "group_by");
    struct {
        size_t len, n, index;
        shoal_jobsplit_pos_t pos;
    } cut = {0, 0, 0, {NULL, 0}};

    snprintf(head, sizeof(head), "{\"job_id\":%s,\"part\":%zu,\"items\":[", p->id_json, k);
    p->len = 0;
    if (put(p, head, strlen(head)))
        goto nomem;
    for (;;) {
        r = shoal_jobsplit_next(p->split, &item, &ilen, errbuf, errlen);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        if (p->len + ilen + 3 > p->part_bytes || n == PART_ITEMS_MAX) {
            if (n == 0) {
                shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                              "items[%zu]: %zu bytes, more than one part message may hold (%zu)",
                              *item_index, ilen, p->part_bytes);
                return -1;
            }
            /* it starts the next part, or the items since the last whole
             * chunk do */
            if (whole && cut.n > 0 && n % (size_t)per_chunk != 0) {
                p->len = cut.len;
                n = cut.n;
                *item_index = cut.index;
                shoal_jobsplit_seek(p->split, &cut.pos);
            } else {
                shoal_jobsplit_unread(p->split);
            }
            break;
        }
        if ((n && put(p, ",", 1)) || put(p, item, ilen))
            goto nomem;
        n++;
        (*item_index)++;
        if (whole && n % (size_t)per_chunk == 0) {
            cut.len = p->len;
            cut.n = n;
            cut.index = *item_index;
            shoal_jobsplit_tell(p->split, &cut.pos);
        }
    }
    if (n == 0)
        return 0;
    if (put(p, "]}", 2))
        goto nomem;
    return 1;
nomem:
    shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    return -1;
}

/* The job the scheduler makes of the header and items, checked. */
static shoal_err_t check_job(json_t *header, json_t *items, const shoal_models_t *models,
                             size_t *chunks, char *why, size_t whylen)
{
    json_t *doc = json_copy(header);
    char *text = NULL;
    if (doc && !json_object_set(doc, "items", items))
        text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        return shoal_err_set(why, whylen, SHOAL_ERR_NOMEM, "out of memory");
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, why, whylen);
    free(text);
    if (!job)
        return SHOAL_ERR_INVALID;
    *chunks = shoal_job_n_chunks(job);
    shoal_job_destroy(job);
    return SHOAL_OK;
}

static shoal_err_t validate_parts(shoal_partsubmit_t *p, const shoal_models_t *models, char *errbuf,
                                  size_t errlen)
{
    char why[700];
    size_t total_chunks = 0, index = 0, first;
    json_t *header = shoal_jobsplit_header(p->split);
    shoal_err_t err;

    if (json_object_get(header, "parts"))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "parts: set by shoal submit itself; leave it out of the file");
    if (json_is_false(json_object_get(header, "store_inputs")))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "store_inputs: a job too large for one message is sent in parts and "
                             "kept in PostgreSQL, so it cannot set store_inputs to false");
    shoal_jobsplit_rewind(p->split);
    for (size_t k = 0;; k++) {
        first = index;
        int r = next_part(p, k, &index, errbuf, errlen);
        if (r < 0)
            return SHOAL_ERR_INVALID;
        if (r == 0)
            break;
        json_t *msg = json_loadb(p->buf, p->len, 0, NULL);
        json_t *items = json_object_get(msg, "items");
        size_t chunks = 0;
        if (!json_is_array(items)) {
            json_decref(msg);
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "items %zu to %zu: not valid JSON", first, index - 1);
        }
        err = check_job(header, items, models, &chunks, why, sizeof(why));
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            const char *id = json_string_value(json_object_get(it, "id"));
            int s = err == SHOAL_OK && id ? seen(p, id) : 0;
            if (s < 0)
                err = shoal_err_set(why, sizeof(why), SHOAL_ERR_NOMEM, "out of memory");
            else if (s > 0)
                err = shoal_err_set(why, sizeof(why), SHOAL_ERR_INVALID,
                                    "items[%zu].id: \"%.100s\" repeats an earlier item's id",
                                    first + i, id);
            if (err != SHOAL_OK)
                break;
        }
        json_decref(msg);
        if (err != SHOAL_OK)
            return shoal_err_set(errbuf, errlen, err, "part %zu (items %zu to %zu): %s", k, first,
                                 index - 1, why);
        total_chunks += chunks;
        p->chunks = total_chunks;
        if (total_chunks > MAX_CHUNKS)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "the job makes more than %d chunks; raise chunking.max_items or "
                                 "split the job",
                                 MAX_CHUNKS);
    }
    return SHOAL_OK;
}

shoal_partsubmit_t *shoal_partsubmit_new(const char *text, size_t len, const char *job_id,
                                         const shoal_models_t *models, size_t part_bytes,
                                         int validate, shoal_err_t *err, char *errbuf,
                                         size_t errlen)
{
    shoal_partsubmit_t *p = calloc(1, sizeof(*p));
    *err = SHOAL_ERR_NOMEM;
    if (!p) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    p->part_bytes = part_bytes;
    if (!(p->split = shoal_jobsplit_new(text, len, errbuf, errlen))) {
        *err = SHOAL_ERR_INVALID;
        goto fail;
    }
    json_t *header = shoal_jobsplit_header(p->split);
    const char *id = json_string_value(json_object_get(header, "job_id"));
    if (!id)
        id = job_id;
    if (!id || !shoal_job_id_valid(id)) {
        *err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "job_id: a job sent in parts needs a valid job_id");
        goto fail;
    }
    snprintf(p->job_id, sizeof(p->job_id), "%s", id);
    json_t *jid = json_string(p->job_id);
    if (!jid || json_object_set_new(header, "job_id", jid) ||
        !(p->id_json = json_dumps(json_object_get(header, "job_id"), JSON_ENCODE_ANY))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (validate && (*err = validate_parts(p, models, errbuf, errlen)) != SHOAL_OK)
        goto fail;
    /* count parts and items (validate counted them too, without keeping) */
    shoal_jobsplit_rewind(p->split);
    int r;
    while ((r = next_part(p, p->parts, &p->items, errbuf, errlen)) > 0)
        p->parts++;
    if (r < 0) {
        *err = SHOAL_ERR_INVALID;
        goto fail;
    }
    if (p->parts == 0 || p->parts > MAX_PARTS) {
        *err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "items: a job sent in parts has 1 to %d parts, this one %zu",
                             MAX_PARTS, p->parts);
        goto fail;
    }
    free(p->ids); /* only the check needed them */
    p->ids = NULL;
    p->ids_cap = p->ids_n = 0;
    *err = SHOAL_OK;
    return p;
fail:
    shoal_partsubmit_destroy(p);
    return NULL;
}

void shoal_partsubmit_destroy(shoal_partsubmit_t *p)
{
    if (!p)
        return;
    shoal_jobsplit_destroy(p->split);
    free(p->id_json);
    free(p->buf);
    free(p->ids);
    free(p);
}

const char *shoal_partsubmit_job_id(const shoal_partsubmit_t *p)
{
    return p->job_id;
}

size_t shoal_partsubmit_parts(const shoal_partsubmit_t *p)
{
    return p->parts;
}

size_t shoal_partsubmit_items(const shoal_partsubmit_t *p)
{
    return p->items;
}

size_t shoal_partsubmit_chunks(const shoal_partsubmit_t *p)
{
    return p->chunks;
}

shoal_err_t shoal_partsubmit_send(shoal_partsubmit_t *p, rd_kafka_t *rk, const char *topic,
                                  char *errbuf, size_t errlen)
{
    shoal_kafka_ack_t ack = {0, 0};
    json_t *header = shoal_jobsplit_header(p->split);
    shoal_err_t err;

    if (json_object_set_new(header, "parts", json_integer((json_int_t)p->parts)))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    char *h = json_dumps(header, JSON_COMPACT);
    json_object_del(header, "parts");
    if (!h)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    err = shoal_kafka_produce(rk, topic, p->job_id, h, strlen(h), &ack, errbuf, errlen);
    free(h);
    shoal_jobsplit_rewind(p->split);
    size_t index = 0;
    for (size_t k = 0; err == SHOAL_OK && k < p->parts; k++) {
        if (next_part(p, k, &index, errbuf, errlen) <= 0) {
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "the file changed while sent");
            break;
        }
        err = shoal_kafka_produce(rk, topic, p->job_id, p->buf, p->len, &ack, errbuf, errlen);
        if (err == SHOAL_OK && (k + 1) % ACK_EVERY == 0)
            err = shoal_kafka_ack_wait(rk, &ack, 60000, errbuf, errlen);
    }
    shoal_err_t werr =
        shoal_kafka_ack_wait(rk, &ack, 60000, err == SHOAL_OK ? errbuf : NULL, errlen);
    return err == SHOAL_OK ? werr : err;
}
