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

/* ---- our own cases ---- */

static shoal_jsonschema_t *compile_text(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    char err[512] = "";
    shoal_jsonschema_t *s;

    if (!j)
        test_fail("bad test schema %s: %s", text, je.text);
    s = shoal_jsonschema_new(j, err, sizeof(err));
    json_decref(j);
    if (!s)
        test_fail("schema %s refused: %s", text, err);
    return s;
}

/* The compile error for text, which must be refused. */
static void expect_refused(const char *text, const char *want)
{
    json_t *j = json_loads(text, 0, NULL);
    char err[512] = "";
    shoal_jsonschema_t *s;

    assert_true(j != NULL);
    s = shoal_jsonschema_new(j, err, sizeof(err));
    json_decref(j);
    if (s)
        test_fail("schema %s was accepted; expected \"%s\"", text, want);
    assert_str_contains(err, want);
}

/* Validates instance text; want NULL for valid, else the exact message. */
static void expect_msg(const shoal_jsonschema_t *s, const char *instance, const char *want)
{
    json_t *v = json_loads(instance, JSON_DECODE_ANY, NULL);
    char err[512] = "";
    shoal_err_t r;

    assert_true(v != NULL);
    r = shoal_jsonschema_validate(s, v, err, sizeof(err));
    /* the verdict without a message buffer is the same */
    assert_int_eq(shoal_jsonschema_validate(s, v, NULL, 0), r);
    json_decref(v);
    if (!want) {
        if (r != SHOAL_OK)
            test_fail("%s: expected valid, got \"%s\"", instance, err);
        return;
    }
    assert_int_eq(r, SHOAL_ERR_INVALID);
    assert_str_eq(err, want);
}

static void test_messages(void)
{
    shoal_jsonschema_t *s = compile_text(
        "{\"type\": \"object\", \"required\": [\"items\"], \"additionalProperties\": false,"
        " \"properties\": {"
        "  \"items\": {\"type\": \"array\", \"minItems\": 1, \"maxItems\": 3,"
        "   \"items\": {\"type\": \"object\", \"properties\": {\"input\": {\"type\": \"string\","
        "    \"minLength\": 2, \"maxLength\": 3}}}},"
        "  \"name\": {\"type\": [\"string\", \"null\"], \"pattern\": \"^[a-z]+$\"},"
        "  \"level\": {\"enum\": [\"low\", \"high\"]},"
        "  \"n\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 10, \"multipleOf\": 2},"
        "  \"price\": {\"type\": \"number\", \"exclusiveMinimum\": 0},"
        "  \"tags\": {\"uniqueItems\": true},"
        "  \"a b\": {\"type\": \"boolean\"},"
        "  \"gone\": false,"
        "  \"mode\": {\"const\": \"json\"},"
        "  \"pick\": {\"oneOf\": [{\"type\": \"integer\"}, {\"minimum\": 0}]}}}");

    expect_msg(s, "{\"items\": [{\"input\": \"ab\"}]}", NULL);
    expect_msg(s, "[]", "expected an object, got an array");
    expect_msg(s, "{}", "missing required field \"items\"");
    expect_msg(s, "{\"items\": [{}, {}, {\"input\": 5}]}",
               "items[2].input: expected a string, got an integer");
    expect_msg(s, "{\"items\": [], \"nmae\": \"x\"}",
               "unknown field \"nmae\" (did you mean \"name\"?)");
    expect_msg(s, "{\"items\": [], \"zzzzzz\": 1}", "unknown field \"zzzzzz\"");
    expect_msg(s, "{\"items\": []}", "items: must not be empty");
    expect_msg(s, "{\"items\": [1, 2, 3, 4]}", "items: too many entries (4; the limit is 3)");
    /* lengths count code points: two of them here, in four bytes */
    expect_msg(s, "{\"items\": [{\"input\": \"\\u00e9\\u00e9\"}]}", NULL);
    expect_msg(s, "{\"items\": [{\"input\": \"a\"}]}",
               "items[0].input: too short (1 characters; the minimum is 2)");
    expect_msg(s, "{\"items\": [{\"input\": \"abcd\"}]}",
               "items[0].input: too long (4 characters; the limit is 3)");
    expect_msg(s, "{\"items\": [{}], \"name\": \"Bob\"}",
               "name: \"Bob\" does not match the pattern ^[a-z]+$");
    expect_msg(s, "{\"items\": [{}], \"name\": 7}",
               "name: expected a string or null, got an integer");
    expect_msg(s, "{\"items\": [{}], \"level\": \"mid\"}",
               "level: \"mid\" is not one of low, high");
    expect_msg(s, "{\"items\": [{}], \"level\": 3}",
               "level: expected one of low, high, got an integer");
    expect_msg(s, "{\"items\": [{}], \"n\": 4.0}", NULL);
    expect_msg(s, "{\"items\": [{}], \"n\": 4.5}", "n: expected an integer, got a number");
    expect_msg(s, "{\"items\": [{}], \"n\": 0}", "n: 0 is less than the minimum 1");
    expect_msg(s, "{\"items\": [{}], \"n\": 12}", "n: 12 is more than the maximum 10");
    expect_msg(s, "{\"items\": [{}], \"n\": 3}", "n: 3 is not a multiple of 2");
    expect_msg(s, "{\"items\": [{}], \"price\": 0}", "price: must be more than 0, got 0");
    expect_msg(s, "{\"items\": [{}], \"tags\": [1, \"x\", 1.0]}", "tags[2]: 1 repeats tags[0]");
    expect_msg(s, "{\"items\": [{}], \"a b\": 1}", "[\"a b\"]: expected a boolean, got an integer");
    expect_msg(s, "{\"items\": [{}], \"gone\": 1}", "gone: not allowed");
    expect_msg(s, "{\"items\": [{}], \"mode\": \"text\"}", "mode: expected \"json\", got \"text\"");
    expect_msg(s, "{\"items\": [{}], \"pick\": 1}",
               "pick: expected a value matching exactly one oneOf schema, got one matching "
               "schemas 0 and 1");
    shoal_jsonschema_destroy(s);
}

/* Large arrays take the sorted path; it names the same pair as pairwise. */
static void test_unique_large(void)
{
    shoal_jsonschema_t *s = compile_text("{\"uniqueItems\": true}");
    json_t *arr = json_array();
    char err[256];

    for (int i = 0; i < 100000; i++)
        json_array_append_new(arr, json_integer(i));
    assert_int_eq(shoal_jsonschema_validate(s, arr, err, sizeof(err)), SHOAL_OK);
    json_array_set_new(arr, 70000, json_real(123.0));
    json_array_set_new(arr, 90000, json_pack("{s:[i]}", "k", 1));
    json_array_set_new(arr, 95000, json_pack("{s:[f]}", "k", 1.0));
    assert_int_eq(shoal_jsonschema_validate(s, arr, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "[70000]: 123 repeats [123]");
    json_array_set_new(arr, 70000, json_integer(70000));
    assert_int_eq(shoal_jsonschema_validate(s, arr, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "[95000]: an object repeats [90000]");
    json_decref(arr);
    /* every entry the same: still linear */
    arr = json_array();
    for (int i = 0; i < 100000; i++)
        json_array_append_new(arr, json_string("x"));
    assert_int_eq(shoal_jsonschema_validate(s, arr, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "[1]: \"x\" repeats [0]");
    json_decref(arr);
    shoal_jsonschema_destroy(s);
}

static void test_detail(void)
{
    shoal_jsonschema_t *s = compile_text(
        "{\"properties\": {\"ids\": {\"items\": {\"$ref\": \"#/$defs/key\"}}},"
        " \"$defs\": {\"key\": {\"type\": \"string\", \"pattern\": \"^[a-z]+$(?!\\\\n)\"}}}");
    json_t *v = json_loads("{\"ids\": [\"ok\", \"not ok\"]}", 0, NULL);
    shoal_jsonschema_error_t d;
    char err[256];

    assert_int_eq(shoal_jsonschema_validate_ex(s, v, &d, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(d.instance_path, "ids[1]");
    assert_str_eq(d.schema_path, "/$defs/key/pattern");
    assert_str_eq(d.keyword, "pattern");
    assert_true(d.value == json_array_get(json_object_get(v, "ids"), 1));
    assert_str_eq(err, "ids[1]: \"not ok\" does not match the pattern ^[a-z]+$(?!\\n)");
    json_decref(v);
    v = json_loads("{\"ids\": [\"ok\"]}", 0, NULL);
    assert_int_eq(shoal_jsonschema_validate_ex(s, v, &d, err, sizeof(err)), SHOAL_OK);
    assert_true(d.keyword == NULL);
    json_decref(v);
    shoal_jsonschema_destroy(s);
}

static void test_refs(void)
{
    shoal_jsonschema_t *s;
    json_t *deep, *cur;
    char err[256];

    /* loops that never move into the instance are refused */
    expect_refused("{\"$ref\": \"#\"}", "a $ref loop");
    expect_refused("{\"$ref\": \"#/$defs/a\", \"$defs\": {\"a\": {\"$ref\": \"#/$defs/b\"},"
                   " \"b\": {\"allOf\": [{\"$ref\": \"#/$defs/a\"}]}}}",
                   "a $ref loop");
    expect_refused("{\"$ref\": \"other.json#/x\"}", "points to another document");
    expect_refused("{\"$ref\": \"http://example.com/s.json\"}", "points to another document");
    expect_refused("{\"$ref\": \"#/$defs/missing\"}", "points to nothing in the schema");

    /* pointers with ~0, ~1 and % escapes, and anchors */
    s = compile_text(
        "{\"$defs\": {\"a/b\": {\"type\": \"integer\"}, \"c~d\": {\"type\": \"string\"},"
        " \"e f\": {\"minimum\": 3}, \"x\": {\"$anchor\": \"big\", \"minimum\": 100}},"
        " \"properties\": {\"p\": {\"$ref\": \"#/$defs/a~1b\"},"
        " \"q\": {\"$ref\": \"#/$defs/c~0d\"}, \"r\": {\"$ref\": \"#/$defs/e%20f\"},"
        " \"s\": {\"$ref\": \"#big\"}}}");
    expect_msg(s, "{\"p\": 1, \"q\": \"x\", \"r\": 3, \"s\": 100}", NULL);
    expect_msg(s, "{\"p\": \"1\"}", "p: expected an integer, got a string");
    expect_msg(s, "{\"q\": 1}", "q: expected a string, got an integer");
    expect_msg(s, "{\"r\": 2}", "r: 2 is less than the minimum 3");
    expect_msg(s, "{\"s\": 99}", "s: 99 is less than the minimum 100");
    shoal_jsonschema_destroy(s);

    /* recursion through the instance is fine, up to the depth limit */
    s = compile_text("{\"type\": \"object\", \"properties\": {\"child\": {\"$ref\": \"#\"},"
                     " \"v\": {\"type\": \"integer\"}}}");
    expect_msg(s, "{\"child\": {\"child\": {\"v\": 1}}}", NULL);
    expect_msg(s, "{\"child\": {\"child\": {\"v\": \"x\"}}}",
               "child.child.v: expected an integer, got a string");
    deep = json_object();
    cur = deep;
    for (int i = 0; i < SHOAL_JSONSCHEMA_MAX_DEPTH + 10; i++) {
        json_t *next = json_object();
        json_object_set_new(cur, "child", next);
        cur = next;
    }
    assert_int_eq(shoal_jsonschema_validate(s, deep, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "schema evaluation nests deeper than 512 levels");
    json_decref(deep);
    shoal_jsonschema_destroy(s);
}

static void test_compile_errors(void)
{
    expect_refused("{\"properties\": {\"a\": {\"unevaluatedProperties\": false}}}",
                   "unsupported keyword \"unevaluatedProperties\" at /properties/a");
    expect_refused("{\"items\": {\"unevaluatedItems\": false}}",
                   "unsupported keyword \"unevaluatedItems\" at /items");
    expect_refused("{\"$dynamicRef\": \"#meta\"}", "unsupported keyword \"$dynamicRef\" at /");
    expect_refused("{\"$schema\": \"http://json-schema.org/draft-04/schema#\"}",
                   "unsupported dialect");
    expect_refused("{\"minLength\": -1}", "minLength at / must be a non-negative integer");
    expect_refused("{\"type\": \"text\"}", "type at / must be one of");
    expect_refused("{\"properties\": {\"a\": 5}}",
                   "schema at /properties/a must be an object or a boolean");
    expect_refused("{\"pattern\": \"(?<=a)b\"}", "lookbehind is not supported");
    expect_refused("{\"pattern\": \"(a)\\\\1\"}", "backreferences are not supported");
    expect_refused("{\"patternProperties\": {\"\\\\p{L}\": true}}",
                   "unicode property escapes (\\p, \\P) are not supported");
    expect_refused("{\"pattern\": \"a{3,1}\"}", "numbers out of order");
    expect_refused("{\"pattern\": \"(ab\"}", "missing )");
    expect_refused("{\"pattern\": \"*a\"}", "nothing to repeat");
    expect_refused("{\"pattern\": \"[z-a]\"}", "range out of order");
    /* annotations and unknown keywords change nothing */
    shoal_jsonschema_destroy(compile_text(
        "{\"title\": \"t\", \"description\": \"d\", \"default\": 1, \"examples\": [1],"
        " \"$comment\": \"c\", \"format\": \"email\", \"contentMediaType\": \"text/plain\","
        " \"x-vendor\": {\"anything\": true}}"));
}

static int search(const char *pattern, const char *s)
{
    char err[256];
    shoal_regex_t *re = shoal_regex_new(pattern, strlen(pattern), err, sizeof(err));
    int r;

    if (!re)
        test_fail("regex %s refused: %s", pattern, err);
    r = shoal_regex_search(re, s, strlen(s), 0);
    shoal_regex_destroy(re);
    return r;
}

static void test_regex(void)
{
    char *long_text, err[256];
    shoal_regex_t *re;
    shoal_jsonschema_t *s;
    json_t *v;

    assert_int_eq(search("^abc$", "abc"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^abc$", "abc\n"), SHOAL_REGEX_NOMATCH);
    assert_int_eq(search("b", "abc"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^a+?b$", "aaab"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^(?=.*\\d)\\w+$", "abc1"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^(?=.*\\d)\\w+$", "abcd"), SHOAL_REGEX_NOMATCH);
    assert_int_eq(search("^(?!ab)", "abc"), SHOAL_REGEX_NOMATCH);
    assert_int_eq(search("\\bfoo\\b", "a foo."), SHOAL_REGEX_MATCH);
    assert_int_eq(search("\\bfoo\\b", "afoo"), SHOAL_REGEX_NOMATCH);
    assert_int_eq(search("^[^a-c]+$", "xyz"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^[^a-c]+$", "xaz"), SHOAL_REGEX_NOMATCH);
    assert_int_eq(search("^x{2,3}$", "xxxx"), SHOAL_REGEX_NOMATCH);
    assert_int_eq(search("^x{2,3}$", "xxx"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^(?:ab|cd)*$", "abcdab"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^(?<word>\\w+) $", "hi "), SHOAL_REGEX_MATCH);
    /* code points, not bytes: one dragon is one "." */
    assert_int_eq(search("^.$", "\xf0\x9f\x90\xb2"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^[\\u00e0-\\u00ff]$", "\xc3\xa9"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^\\u{1F432}+$", "\xf0\x9f\x90\xb2\xf0\x9f\x90\xb2"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^[a-z]+$(?!\\n)", "abc"), SHOAL_REGEX_MATCH);
    assert_int_eq(search("a|", "zzz"), SHOAL_REGEX_MATCH);

    /* a long run under one quantifier costs no recursion per character */
    long_text = malloc(200001);
    assert_true(long_text != NULL);
    memset(long_text, 'a', 200000);
    long_text[200000] = '\0';
    assert_int_eq(search("^[a-z]+$", long_text), SHOAL_REGEX_MATCH);
    assert_int_eq(search("^.*?$", long_text), SHOAL_REGEX_MATCH);

    /* catastrophic backtracking ends at the step budget, not in a hang */
    long_text[40] = 'b';
    long_text[41] = '\0';
    re = shoal_regex_new("^(a+)+$", 7, err, sizeof(err));
    assert_true(re != NULL);
    assert_int_eq(shoal_regex_search(re, long_text, 41, 0), SHOAL_REGEX_BUDGET);
    assert_int_eq(shoal_regex_search(re, "aaab", 4, 0), SHOAL_REGEX_NOMATCH);
    shoal_regex_destroy(re);
    s = compile_text("{\"properties\": {\"v\": {\"anyOf\": [{\"pattern\": \"^(a+)+$\"}, true]}}}");
    v = json_pack("{s:s}", "v", long_text);
    assert_int_eq(shoal_jsonschema_validate(s, v, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "v: pattern ^(a+)+$ needs more than 1000000 steps on this value");
    json_decref(v);
    shoal_jsonschema_destroy(s);
    free(long_text);
}
int main(void)
{
    test_messages();
    test_unique_large();
    test_detail();
    test_refs();
    test_compile_errors();
    test_regex();
    test_suite();
    return 0;
}
