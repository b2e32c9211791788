/*
 * Batch mode's prompt and answer format (see itembatch.h).
 */
#include "common/itembatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/tokens.h"

#define INSTRUCTION_PART "\n\n" SHOAL_ITEMBATCH_INSTRUCTION "\n" SHOAL_ITEMBATCH_IDS_MARK

long shoal_itembatch_instruction_tokens(void)
{
    return shoal_tokens_estimate(INSTRUCTION_PART, sizeof(INSTRUCTION_PART) - 1);
}

char *shoal_itembatch_prompt(const char *rendered, const json_t *items, size_t *len_out)
{
    json_t *ids = json_array();
    char *list = NULL, *out = NULL;
    size_t n, rl = strlen(rendered), ll;

    if (!ids || !json_is_array(items))
        goto done;
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *id = json_object_get(json_array_get(items, i), "id");

        if (!json_is_string(id) || json_array_append(ids, (json_t *)id))
            goto done;
    }
    if (!(list = json_dumps(ids, JSON_COMPACT)))
        goto done;
    ll = strlen(list);
    n = rl + sizeof(INSTRUCTION_PART) - 1 + ll;
    if (!(out = malloc(n + 1)))
        goto done;
    memcpy(out, rendered, rl);
    memcpy(out + rl, INSTRUCTION_PART, sizeof(INSTRUCTION_PART) - 1);
    memcpy(out + rl + sizeof(INSTRUCTION_PART) - 1, list, ll + 1);
    if (len_out)
        *len_out = n;
done:
    free(list);
    json_decref(ids);
    return out;
}

json_t *shoal_itembatch_prompt_ids(const char *prompt)
{
    static const char mark[] = "\n" SHOAL_ITEMBATCH_IDS_MARK;
    const char *at = NULL, *p = prompt;
    json_t *ids;

    while ((p = strstr(p, mark)) != NULL)
        at = p++;
    if (!at)
        return NULL;
    at += sizeof(mark) - 1;
    ids = json_loadb(at, strcspn(at, "\n"), 0, NULL);
    if (!json_is_array(ids)) {
        json_decref(ids);
        return NULL;
    }
    for (size_t i = 0; i < json_array_size(ids); i++) {
        if (!json_is_string(json_array_get(ids, i))) {
            json_decref(ids);
            return NULL;
        }
    }
    return ids;
}

/* The answer as a JSON object: as it is, or inside a ``` fence (models add
 * one even when told not to). */
static json_t *answer_object(const char *answer, char *errbuf, size_t errlen)
{
    json_error_t e;
    const char *s = answer + strspn(answer, " \t\r\n");
    size_t n = strlen(s);
    json_t *doc;

    if (strncmp(s, "```", 3) == 0) {
        const char *body = strchr(s, '\n');
        const char *end = body ? strstr(body, "```") : NULL;

        if (body && end) {
            s = body + 1;
            n = (size_t)(end - s);
        }
    }
    doc = json_loadb(s, n, JSON_REJECT_DUPLICATES, &e);
    if (!doc) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "answer is not a JSON object: %s", e.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "answer is not a JSON object keyed by item id");
        json_decref(doc);
        return NULL;
    }
    return doc;
}

size_t shoal_itembatch_parse(const char *answer, const json_t *items, int want_json,
                             const shoal_jsonschema_t *schema, char **outputs, char *errbuf,
                             size_t errlen)
{
    size_t n = json_array_size(items), ok = 0;
    json_t *doc;
    int said = 0;

    for (size_t i = 0; i < n; i++)
        outputs[i] = NULL;
    if (errlen)
        errbuf[0] = '\0';
    if (!answer || !(doc = answer_object(answer, errbuf, errlen)))
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(items, i), "id"));
        const json_t *v = id ? json_object_get(doc, id) : NULL;
        char why[300];

        if (!v || json_is_null(v)) {
            if (!said++)
                shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "no answer for item %s",
                              id ? id : "?");
            continue;
        }
        if (schema && shoal_jsonschema_validate(schema, v, why, sizeof(why)) != SHOAL_OK) {
            if (!said++)
                shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                              "answer for item %s does not match the schema: %s", id, why);
            continue;
        }
        outputs[i] = json_is_string(v) && !want_json
                         ? strdup(json_string_value(v))
                         : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        ok += outputs[i] != NULL;
    }
    json_decref(doc);
    return ok;
}
