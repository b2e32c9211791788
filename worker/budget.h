/*
 * Hard budgets on the worker's side: what a call may cost at worst, and the
 * reservation of that amount in PostgreSQL before the call starts
 * (shoal.reserve_calls, sql/016_budgets.sql). Only tasks of jobs with
 * budget_usd, or of tenants with a daily budget, are reserved; the database
 * check of a taken task says which (worker/store.c). Settlement needs no
 * call of its own: the call's attempts row, written by record_batch, settles
 * the reservation whose id is its attempt_id.
 *
 * shoal_budget_prepare and shoal_budget_row are for the loop's thread;
 * shoal_budget_reserve and shoal_budget_expire run on a database thread.
 */
#ifndef SHOAL_WORKER_BUDGET_H
#define SHOAL_WORKER_BUDGET_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "common/pg.h"
#include "worker/task.h"

/* Output room a budgeted call gets when neither the request nor the model
 * sets max_tokens: without a ceiling a call's cost has no bound. */
#define SHOAL_BUDGET_DEFAULT_MAX_TOKENS 4096

/* How long a reservation outlives its call's timeout before it counts as
 * spent: time for the worker to write the call's attempts row. */
#define SHOAL_BUDGET_EXPIRY_MARGIN_MS 30000L

/* Makes sure t's request caps its output (max_tokens; added when missing)
 * and sets *usd to the worst case of the call: its input counted as a token
 * per 3 bytes of the request (prose, code and most scripts take 4 or more
 * bytes per token), every prompt token at the dearest prompt price (plain,
 * cached or cache write), and all of max_tokens at the output price.
 * SHOAL_ERR_NOMEM; SHOAL_ERR_INVALID when the request is not JSON. */
shoal_err_t shoal_budget_prepare(shoal_task_t *t, double *usd);

/* One element of shoal.reserve_calls' p_rows for t's next call, reserved
 * under id (the call's attempt_id) for usd; caller owns. NULL without memory. */
json_t *shoal_budget_row(const shoal_task_t *t, const char *id, const char *worker_id, double usd);

/* Runs shoal.reserve_calls(rows, release) and fills verdict[0..n) (n = the
 * number of rows) with "granted", "wait" or "refused:<reason>", each owned
 * by the caller. SHOAL_ERR_RETRY when the server is away (nothing reserved,
 * ask again with the same ids), SHOAL_ERR_INVALID when it refuses the
 * statement, SHOAL_ERR_NOMEM. */
shoal_err_t shoal_budget_reserve(shoal_pg_t *pg, const char *rows, const char *release,
                                 char **verdict, size_t n, char *errbuf, size_t errlen);

/* Counts held reservations past their time as spent
 * (shoal.expire_reservations); *expired gets how many. */
shoal_err_t shoal_budget_expire(shoal_pg_t *pg, long *expired, char *errbuf, size_t errlen);

#endif
