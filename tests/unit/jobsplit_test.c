/*
 * Splitting a job document in place: the header holds every member but
 * "items" (decoded), the items come back as their exact text spans in order
 * (strings with escaped quotes and brackets, nested values), unread hands the
 * last item back once, rewind starts over, tell and seek go back to a noted
 * place, and malformed documents are
 * refused with where they break.
 */
#include "common/jobsplit.h"

#include <string.h>

#include "tests/support/check.h"

static void test_split(void)
{
    const char *text =
        " {\"job_id\": \"j1\", \"items\": [ {\"id\": \"a\", \"input\": \"x]\\\"}\"} ,"
        "{\"id\":\"b\",\"input\":\"y\",\"meta\":[1,{\"k\":[2]}]}, 7 ],"
        " \"chunking\": {\"max_items\": 2}} ";
    char err[256];
    const char *item;
    size_t len;
    shoal_jobsplit_t *s = shoal_jobsplit_new(text, strlen(text), err, sizeof(err));
    assert_true(s != NULL);
    json_t *h = shoal_jobsplit_header(s);
    assert_int_eq((long)json_object_size(h), 2);
    assert_str_eq(json_string_value(json_object_get(h, "job_id")), "j1");
    assert_int_eq(
        (long)json_integer_value(json_object_get(json_object_get(h, "chunking"), "max_items")), 2);
    assert_true(json_object_get(h, "items") == NULL);

    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
    assert_int_eq((long)len, (long)strlen("{\"id\": \"a\", \"input\": \"x]\\\"}\"}"));
    assert_true(!memcmp(item, "{\"id\": \"a\"", 10));
    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
    assert_true(!memcmp(item, "{\"id\":\"b\"", 9));
    assert_true(item[len - 1] == '}' && item[len - 2] == ']');
    shoal_jobsplit_unread(s);
    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
    assert_true(!memcmp(item, "{\"id\":\"b\"", 9));
    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
    assert_int_eq((long)len, 1);
    assert_true(item[0] == '7');
    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 0);

    shoal_jobsplit_rewind(s);
    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
    assert_true(!memcmp(item, "{\"id\": \"a\"", 10));
    /* tell and seek: back to a place noted earlier, several items back */
    shoal_jobsplit_pos_t at_b;
    shoal_jobsplit_tell(s, &at_b);
    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
    assert_true(item[0] == '7');
    shoal_jobsplit_seek(s, &at_b);
    assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
    assert_true(!memcmp(item, "{\"id\":\"b\"", 9));
    shoal_jobsplit_destroy(s);
    shoal_jobsplit_destroy(NULL);
}

static void test_bad(void)
{
    static const char *const bad[] = {
        "",
        "[1]",
        "{\"job_id\": \"j\"}",           /* no items */
        "{\"items\": {}}",               /* not an array */
        "{\"items\": [1], \"x\": }",     /* missing value */
        "{\"items\": [1] \"x\": 2}",     /* missing comma */
        "{\"items\": [{\"a\": 1]}",      /* brackets do not match */
        "{\"items\": [\"unterminated]}", /* string does not end */
        "{\"items\": [1]} trailing",     /* text after the object */
    };
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        shoal_jobsplit_t *s = shoal_jobsplit_new(bad[i], strlen(bad[i]), err, sizeof(err));
        if (s)
            test_fail("document %zu was accepted: %s", i, bad[i]);
        assert_true(err[0] != '\0');
    }
    /* an array broken after a good item: the first item, then an error */
    const char *text = "{\"items\": [1 2]}";
    char *copy = strdup(text);
    const char *item;
    size_t len;
    shoal_jobsplit_t *s = shoal_jobsplit_new(copy, strlen(copy), err, sizeof(err));
    if (s) {
        assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), 1);
        assert_int_eq(shoal_jobsplit_next(s, &item, &len, err, sizeof(err)), -1);
        assert_str_contains(err, "expected ','");
    }
    shoal_jobsplit_destroy(s);
    free(copy);
}

int main(void)
{
    test_split();
    test_bad();
    return 0;
}
