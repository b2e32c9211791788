/*
 * Job estimates with known numbers: ten chunks of exactly 100 prompt tokens
 * each, on models whose prices and limits make every figure easy to check by
 * hand: output capped or not, cost and worst-case cost, and the duration
 * bound by rpm, tpm, Anthropic's input/output limits or concurrency (which
 * grows with workers while rate limits do not). Also the JSON shape and the
 * error for a model missing from the models file.
 */
#include "common/estimate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/support/check.h"
#include "tests/support/textgen.h"

static const char models_text[] =
    "{\"models\": {"
    "\"a\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:1/v1\", \"model\": \"ma\","
    " \"input_usd_per_mtok\": 1, \"output_usd_per_mtok\": 2, \"rpm\": 2, \"max_output_tokens\": "
    "40},"
    "\"b\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:1/v1\", \"model\": \"mb\","
    " \"input_usd_per_mtok\": 10, \"output_usd_per_mtok\": 30, \"tpm\": 5000,"
    " \"max_output_tokens\": 150, \"max_concurrency\": 2},"
    "\"c\": {\"provider\": \"anthropic\", \"endpoint\": \"http://127.0.0.1:1/v1\", \"model\": "
    "\"mc\","
    " \"input_tpm\": 600, \"output_tpm\": 100000},"
    "\"d\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:1/v1\", \"model\": \"md\"}"
    "}}";

static void near(double got, double want, const char *what)
{
    if (fabs(got - want) > 1e-9 * (fabs(want) + 1))
        test_fail("%s: %.12g, want %.12g", what, got, want);
}

/* Ten items of 97 tokens under "{{input}}" (3): ten chunks of 100. */
static shoal_job_t *ten_chunks(const shoal_models_t *models, const char *fallbacks)
{
    char *in = textgen_tokens(97), *text, err[512];
    json_t *items = json_array();

    for (int i = 0; i < 10; i++) {
        char id[8];
        snprintf(id, sizeof(id), "i%d", i);
        json_array_append_new(items, json_pack("{s:s, s:s}", "id", id, "input", in));
    }
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:o, s:o}", "tenant", "acme", "model", "a", "prompt_template",
                  "{{input}}", "items", items, "fallback_models", json_loads(fallbacks, 0, NULL));
    text = json_dumps(doc, JSON_COMPACT);
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
    if (!job)
        test_fail("job rejected: %s", err);
    assert_int_eq(shoal_job_n_chunks(job), 10);
    assert_int_eq(shoal_job_est_tokens(job), 1000);
    json_decref(doc);
    free(text);
    free(in);
    return job;
}

int main(void)
{
    char err[512];
    shoal_models_t *models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    shoal_job_t *job = ten_chunks(models, "[\"b\", \"c\", \"d\"]");
    shoal_estimate_t e;

    assert_int_eq(shoal_estimate_job(job, models, NULL, &e, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(e.chunks, 10);
    assert_int_eq(e.calls, 10);
    assert_int_eq(e.tokens_in, 1000);
    assert_int_eq(e.workers, SHOAL_ESTIMATE_WORKERS);
    assert_int_eq(e.inflight_per_worker, SHOAL_ESTIMATE_INFLIGHT);
    near(e.call_s, SHOAL_ESTIMATE_CALL_S, "call_s");
    assert_int_eq(e.n_models, 4);

    /* a: output capped at 40 a call; 10 calls at 2 a minute take 300 s */
    const shoal_estimate_model_t *a = &e.models[0];
    assert_str_eq(a->model->alias, "a");
    assert_int_eq(a->output_cap, 40);
    assert_int_eq(a->tokens_out, 400);
    assert_int_eq(a->tokens_out_max, 400);
    near(a->cost_usd, 1000 * 1e-6 + 400 * 2e-6, "a cost");
    near(a->cost_max_usd, a->cost_usd, "a cost max");
    near(a->duration_s, 300, "a duration");
    assert_str_eq(a->bound, "rpm");

    /* b: output as long as the prompt (100 < 150), worst case 150 a call;
     * tpm reserves 1000 + 1500 = 2500 of 5000 a minute: 30 s; two calls in
     * flight on one worker: 5 rounds of 10 s = 50 s, the slower */
    const shoal_estimate_model_t *b = &e.models[1];
    assert_str_eq(b->model->alias, "b");
    assert_int_eq(b->tokens_out, 1000);
    assert_int_eq(b->tokens_out_max, 1500);
    near(b->cost_usd, 1000 * 10e-6 + 1000 * 30e-6, "b cost");
    near(b->cost_max_usd, 1000 * 10e-6 + 1500 * 30e-6, "b cost max");
    near(b->duration_s, 50, "b duration");
    assert_str_eq(b->bound, "concurrency");

    /* c: no cap in the file: SHOAL_ESTIMATE_OUTPUT_CAP; input_tpm 600: 100 s */
    const shoal_estimate_model_t *c = &e.models[2];
    assert_int_eq(c->output_cap, SHOAL_ESTIMATE_OUTPUT_CAP);
    assert_int_eq(c->tokens_out, 1000);
    assert_int_eq(c->tokens_out_max, 10 * SHOAL_ESTIMATE_OUTPUT_CAP);
    near(c->cost_usd, 0, "c cost");
    near(c->duration_s, 100, "c duration");
    assert_str_eq(c->bound, "input_tpm");

    /* d: no limits at all: one round of 10 s */
    near(e.models[3].duration_s, SHOAL_ESTIMATE_CALL_S, "d duration");
    assert_str_eq(e.models[3].bound, "concurrency");

    /* four workers and 2 s calls: b has 8 slots, 2 rounds = 4 s, so tpm (30 s)
     * binds; a's rpm does not move with workers */
    shoal_estimate_conf_t conf = {.workers = 4, .inflight_per_worker = 100, .call_s = 2};
    assert_int_eq(shoal_estimate_job(job, models, &conf, &e, err, sizeof(err)), SHOAL_OK);
    near(e.models[1].duration_s, 30, "b duration, 4 workers");
    assert_str_eq(e.models[1].bound, "tpm");
    near(e.models[0].duration_s, 300, "a duration, 4 workers");
    near(e.models[3].duration_s, 2, "d duration, 4 workers");

    /* the JSON carries the same figures */
    json_t *j = shoal_estimate_json(&e);
    assert_true(j != NULL);
    assert_int_eq(json_integer_value(json_object_get(j, "calls")), 10);
    assert_int_eq(json_integer_value(json_object_get(j, "tokens_in")), 1000);
    assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "assumptions"), "workers")),
                  4);
    json_t *jb = json_array_get(json_object_get(j, "models"), 1);
    assert_str_eq(json_string_value(json_object_get(jb, "alias")), "b");
    assert_str_eq(json_string_value(json_object_get(jb, "bound")), "tpm");
    assert_int_eq(json_integer_value(json_object_get(jb, "tokens_out_max")), 1500);
    near(json_real_value(json_object_get(jb, "cost_max_usd")), 1000 * 10e-6 + 1500 * 30e-6,
         "json cost max");
    json_decref(j);

    /* a model missing from the models file is named */
    const char other_text[] = "{\"models\": {\"b\": {\"provider\": \"openai\", \"endpoint\": "
                              "\"http://127.0.0.1:1/v1\", \"model\": \"mb\"}}}";
    shoal_models_t *other = shoal_models_parse(other_text, strlen(other_text), err, sizeof(err));
    assert_true(other != NULL);
    assert_int_eq(shoal_estimate_job(job, other, NULL, &e, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "model \"a\" is not in the models file");
    assert_int_eq(shoal_estimate_job(job, NULL, NULL, &e, err, sizeof(err)), SHOAL_ERR_INVALID);
    shoal_models_destroy(other);

    shoal_job_destroy(job);
    shoal_models_destroy(models);
    printf("estimate_test: ok\n");
    return 0;
}
