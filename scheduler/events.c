/*
 * Event outbox publisher (see events.h).
 */
#include "scheduler/events.h"

#include <stdlib.h>
#include <string.h>

#include "common/kafka.h"

#define DRAIN_BATCH 500
#define ACK_TIMEOUT_MS 30000

static shoal_err_t drain_once(shoal_pg_t *pg, rd_kafka_t *producer, const char *topic, int *n,
                              char *errbuf, size_t errlen)
{
    PGresult *r;
    shoal_err_t err;
    shoal_kafka_ack_t ack = {0, 0};

    *n = 0;
    if ((err = shoal_pg_exec(pg, "BEGIN", 0, NULL, NULL, errbuf, errlen)) != SHOAL_OK)
        return err;
    err = shoal_pg_exec(pg,
                        "SELECT id, job_id, payload::text FROM shoal.event_outbox ORDER BY id "
                        "LIMIT 500 FOR UPDATE SKIP LOCKED",
                        0, NULL, &r, errbuf, errlen);
    if (err != SHOAL_OK)
        goto rollback;

    int rows = PQntuples(r);
    for (int i = 0; i < rows && err == SHOAL_OK; i++) {
        const char *payload = PQgetvalue(r, i, 2);
        err = shoal_kafka_produce(producer, topic, PQgetvalue(r, i, 1), payload, strlen(payload),
                                  &ack, errbuf, errlen);
    }
    /* Always settle what was produced, even after an error: ack lives here. */
    shoal_err_t werr = shoal_kafka_ack_wait(producer, &ack, ACK_TIMEOUT_MS,
                                            err == SHOAL_OK ? errbuf : NULL, errlen);
    if (err == SHOAL_OK)
        err = werr;
    if (err != SHOAL_OK || rows == 0) {
        PQclear(r);
        goto rollback;
    }
    /* Delete exactly what was sent: ids as a PostgreSQL array literal. */
    size_t cap = (size_t)rows * 21 + 3, len = 0;
    char *ids = malloc(cap);
    if (!ids) {
        PQclear(r);
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto rollback;
    }
    ids[len++] = '{';
    for (int i = 0; i < rows; i++)
        len += (size_t)snprintf(ids + len, cap - len, "%s%s", i ? "," : "", PQgetvalue(r, i, 0));
    snprintf(ids + len, cap - len, "}");
    PQclear(r);
    const char *params[] = {ids};
    err = shoal_pg_exec(pg, "DELETE FROM shoal.event_outbox WHERE id = ANY($1::bigint[])", 1,
                        params, NULL, errbuf, errlen);
    free(ids);
    if (err != SHOAL_OK)
        goto rollback;
    if ((err = shoal_pg_exec(pg, "COMMIT", 0, NULL, NULL, errbuf, errlen)) != SHOAL_OK)
        return err;
    *n = rows;
    return SHOAL_OK;

rollback:
    shoal_pg_exec(pg, "ROLLBACK", 0, NULL, NULL, NULL, 0);
    return err;
}

shoal_err_t shoal_events_drain(shoal_pg_t *pg, rd_kafka_t *producer, const char *topic, int *sent,
                               char *errbuf, size_t errlen)
{
    int n, total = 0;
    shoal_err_t err;

    do {
        err = drain_once(pg, producer, topic, &n, errbuf, errlen);
        total += n;
    } while (err == SHOAL_OK && n == DRAIN_BATCH);
    if (sent)
        *sent = total;
    return err;
}
