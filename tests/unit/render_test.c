/*
 * Prompt rendering: placeholders, several items, inputs never expanded,
 * malformed items refused, NUL bytes kept, and the output cap.
 */
#include "common/render.h"

#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/textgen.h"

static void check_render(const char *tmpl, const char *items_json, const char *want)
{
    json_error_t e;
    json_t *items = json_loads(items_json, 0, &e);
    size_t len = 99;
    char *out;

    if (!items)
        test_fail("bad test items %s: %s", items_json, e.text);
    out = shoal_render_prompt(tmpl, items, &len);
    if (!out)
        test_fail("render failed for %s", tmpl);
    assert_str_eq(out, want);
    assert_int_eq(len, strlen(want));
    free(out);
    json_decref(items);
}

static void test_render(void)
{
    check_render("Summarize:\n{{input}}", "[{\"id\":\"a1\",\"input\":\"hello\"}]",
                 "Summarize:\nhello");
    check_render("{{input}}", "[{\"id\":\"a\",\"input\":\"x\"},{\"id\":\"b\",\"input\":\"y\"}]",
                 "[a]\nx\n\n[b]\ny");
    check_render("ids {{ids}}: {{input}}|{{ids}}",
                 "[{\"id\":\"a\",\"input\":\"x\"},{\"id\":\"b\",\"input\":\"y\"},"
                 "{\"id\":\"c\",\"input\":\"\"}]",
                 "ids a, b, c: [a]\nx\n\n[b]\ny\n\n[c]\n|a, b, c");
    check_render("{{ids}}", "[{\"id\":\"only\",\"input\":\"z\"}]", "only");
    /* inputs are never expanded; unknown and broken placeholders stay */
    check_render("<{{input}}> {{other}} {{ {{inp {{",
                 "[{\"id\":\"a\",\"input\":\"{{ids}} {{input}}\"}]",
                 "<{{ids}} {{input}}> {{other}} {{ {{inp {{");
    check_render("{{{input}}}", "[{\"id\":\"a\",\"input\":\"v\"}]", "{v}");
    check_render("no placeholder", "[{\"id\":\"a\",\"input\":\"v\"}]", "no placeholder");
    check_render("[{{input}}][{{ids}}]", "[]", "[][]");
    check_render("\xc3\xa9{{input}}\xc3\xa9", "[{\"id\":\"a\",\"input\":\"\\u65e5\"}]",
                 "\xc3\xa9\xe6\x97\xa5\xc3\xa9");

    /* NUL inside an input is copied; the length says where the text ends */
    {
        json_t *items = json_pack("[{s:s, s:s%}]", "id", "a", "input", "x\0y", (size_t)3);
        size_t len;
        char *out = shoal_render_prompt("<{{input}}>", items, &len);
        assert_true(out != NULL);
        assert_int_eq(len, 5);
        assert_true(memcmp(out, "<x\0y>", 6) == 0);
        free(out);
        out = shoal_render_prompt("{{input}}", items, NULL); /* len_out may be NULL */
        assert_true(out != NULL);
        free(out);
        json_decref(items);
    }
    /* malformed items */
    {
        json_t *bad[] = {json_pack("{s:s}", "id", "a"), json_pack("[{s:s}]", "id", "a"),
                         json_pack("[{s:s, s:i}]", "id", "a", "input", 1), json_pack("[i]", 1),
                         json_pack("[{s:i, s:s}]", "id", 1, "input", "x")};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            size_t len = 7;
            assert_true(bad[i] != NULL);
            assert_true(shoal_render_prompt("{{input}}", bad[i], &len) == NULL);
            assert_int_eq(len, 0);
            json_decref(bad[i]);
        }
        assert_true(shoal_render_prompt(NULL, NULL, NULL) == NULL);
    }
    /* the output cap: 16 copies of an input just over 4 MiB pass 64 MiB */
    {
        size_t big = ((size_t)4 << 20) + 1;
        char *in = textgen_repeat("x", big), *tmpl = textgen_repeat("{{input}}", 16);
        json_t *items = json_pack("[{s:s, s:s}]", "id", "a", "input", in);
        assert_true(shoal_render_prompt(tmpl, items, NULL) == NULL);
        tmpl[9 * 15] = '\0'; /* 15 copies fit */
        {
            size_t len;
            char *out = shoal_render_prompt(tmpl, items, &len);
            assert_true(out != NULL);
            assert_int_eq(len, 15 * big);
            free(out);
        }
        json_decref(items);
        free(in);
        free(tmpl);
    }
}

/* Counting agrees with rendering, and a template with too many placeholders
 * is refused rather than multiplied out. */
static void test_placeholders(void)
{
    size_t in = 9, ids = 9;
    char tmpl[512] = "";
    json_t *items = json_pack("[{s:s, s:s}]", "id", "a", "input", "v");

    assert_int_eq(shoal_render_placeholders("Summarize:\n{{input}}", &in, &ids), 1);
    assert_int_eq(in, 1);
    assert_int_eq(ids, 0);
    assert_int_eq(
        shoal_render_placeholders("{{input}} then {{ids}}: {{input}} {{{input}}}", &in, &ids), 4);
    assert_int_eq(in, 3);
    assert_int_eq(ids, 1);
    /* unknown and broken ones are text, as rendering treats them */
    assert_int_eq(shoal_render_placeholders("{{other}} {{ {{inp {{input}", NULL, NULL), 0);
    assert_int_eq(shoal_render_placeholders(NULL, &in, &ids), 0);
    assert_int_eq(in, 0);

    /* the limit itself renders; one more does not */
    size_t off = 0;
    for (int i = 0; i < SHOAL_RENDER_MAX_PLACEHOLDERS; i++)
        off +=
            (size_t)snprintf(tmpl + off, sizeof(tmpl) - off, "%s", i % 2 ? "{{ids}}" : "{{input}}");
    char *out = shoal_render_prompt(tmpl, items, NULL);
    assert_true(out != NULL);
    assert_int_eq(strlen(out), SHOAL_RENDER_MAX_PLACEHOLDERS);
    free(out);
    snprintf(tmpl + off, sizeof(tmpl) - off, "{{input}}");
    assert_int_eq(shoal_render_placeholders(tmpl, NULL, NULL), SHOAL_RENDER_MAX_PLACEHOLDERS + 1);
    assert_true(shoal_render_prompt(tmpl, items, NULL) == NULL);
    json_decref(items);
}

int main(void)
{
    test_render();
    test_placeholders();
    printf("render_test: ok\n");
    return 0;
}
