/*
 * common/log: the text line format (ts level proc module msg="..." then the
 * fields), one JSON object per line in JSON mode (parsed back with jansson,
 * whatever the message holds), one line per event even when a message holds
 * a newline, and nothing written below the level. Hostile values (quotes,
 * backslashes, "=", " key=" inside a value, control and non-UTF-8 bytes,
 * lines cut at the buffer) come back unchanged through a strict logfmt
 * parser and through jansson, with no field made up from a value.
 */
#include "common/log.h"

#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#include "tests/support/capture.h"
#include "tests/support/check.h"
#include "tests/support/logparse.h"

static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

/* Checks "ts=YYYY-MM-DDTHH:MM:SS.mmmZ " at the start of line; returns the rest. */
static const char *skip_ts(const char *line)
{
    static const char pattern[] = "ts=dddd-dd-ddTdd:dd:dd.dddZ ";
    for (size_t i = 0; i < sizeof(pattern) - 1; i++) {
        int ok = pattern[i] == 'd' ? (line[i] >= '0' && line[i] <= '9') : line[i] == pattern[i];
        if (!ok)
            test_fail("bad timestamp at column %zu in: %s", i, line);
    }
    return line + sizeof(pattern) - 1;
}

static void test_text_format(void)
{
    shoal_log_init("logtest", SHOAL_LOG_INFO, 0);
    capture_stderr_begin();
    shoal_log_info("engine", "task done job_id=%s task_id=%s attempt=%d", "j1", "t1", 2);
    char *text = capture_stderr_end();
    assert_int_eq(count_char(text, '\n'), 1);
    assert_str_eq(skip_ts(text), "level=info proc=logtest module=engine msg=\"task done\" "
                                 "job_id=j1 task_id=t1 attempt=2\n");
    free(text);

    /* no fields: the whole message is quoted */
    capture_stderr_begin();
    shoal_log_warn("conf", "could not read file, using defaults");
    shoal_log_error("pg", "a = b is not a field");
    text = capture_stderr_end();
    assert_int_eq(count_char(text, '\n'), 2);
    char *second = strchr(text, '\n') + 1;
    second[-1] = '\0';
    assert_str_eq(
        skip_ts(text),
        "level=warn proc=logtest module=conf msg=\"could not read file, using defaults\"");
    assert_str_eq(skip_ts(second),
                  "level=error proc=logtest module=pg msg=\"a = b is not a field\"\n");
    free(text);
}

static void test_levels(void)
{
    shoal_log_init("logtest", SHOAL_LOG_WARN, 0);
    capture_stderr_begin();
    shoal_log_debug("m", "debug line");
    shoal_log_info("m", "info line");
    shoal_log_warn("m", "warn line");
    shoal_log_error("m", "error line");
    /* below the level the arguments are not even evaluated */
    int evaluated = 0;
    shoal_log_info("m", "%d", ++evaluated);
    char *text = capture_stderr_end();
    assert_int_eq(evaluated, 0);
    assert_int_eq(count_char(text, '\n'), 2);
    assert_true(!strstr(text, "debug line"));
    assert_true(!strstr(text, "info line"));
    assert_str_contains(text, "level=warn");
    assert_str_contains(text, "msg=\"warn line\"");
    assert_str_contains(text, "msg=\"error line\"");
    free(text);

    /* shoal_log_write checks the level too; OFF silences everything */
    capture_stderr_begin();
    shoal_log_write(SHOAL_LOG_INFO, "m", "direct info");
    shoal_log_init("logtest", SHOAL_LOG_OFF, 0);
    shoal_log_error("m", "error while off");
    shoal_log_write(SHOAL_LOG_OFF, "m", "at level off");
    shoal_log_init("logtest", SHOAL_LOG_DEBUG, 0);
    shoal_log_debug("m", "debug shown");
    text = capture_stderr_end();
    assert_int_eq(count_char(text, '\n'), 1);
    assert_str_contains(text, "level=debug proc=logtest module=m msg=\"debug shown\"");
    free(text);

    assert_int_eq(shoal_log_level_parse("debug"), SHOAL_LOG_DEBUG);
    assert_int_eq(shoal_log_level_parse("INFO"), SHOAL_LOG_INFO);
    assert_int_eq(shoal_log_level_parse("warn"), SHOAL_LOG_WARN);
    assert_int_eq(shoal_log_level_parse("error"), SHOAL_LOG_ERROR);
    assert_int_eq(shoal_log_level_parse("off"), SHOAL_LOG_OFF);
    assert_int_eq(shoal_log_level_parse("verbose"), -1);
    assert_int_eq(shoal_log_level_parse(""), -1);
    assert_int_eq(shoal_log_level_parse(NULL), -1);
}

/* A libpq-style message with a newline inside stays on one line. */
static void test_text_one_line(void)
{
    shoal_log_init("logtest", SHOAL_LOG_INFO, 0);
    capture_stderr_begin();
    shoal_log_error("pg", "could not connect: %s attempt=%d",
                    "connection refused\n\tIs the server running?\r\n", 3);
    char *text = capture_stderr_end();
    assert_int_eq(count_char(text, '\n'), 1);
    assert_true(!strchr(text, '\r'));
    assert_str_contains(text, "Is the server running?");
    assert_str_contains(text, "attempt=3\n");
    free(text);

    /* a very long message is cut to one line, never split */
    char *big = malloc(10001);
    assert_true(big != NULL);
    memset(big, 'x', 10000);
    big[10000] = '\0';
    capture_stderr_begin();
    shoal_log_info("m", "%s", big);
    text = capture_stderr_end();
    assert_int_eq(count_char(text, '\n'), 1);
    assert_true(strlen(text) <= 4096);
    assert_true(text[strlen(text) - 1] == '\n');
    free(text);
    free(big);
}

/* Parses every line of text as a JSON object; returns how many there were. */
static int parse_lines(const char *text, json_t **objs, int max)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_true(nl != NULL); /* every line ends with a newline */
        assert_true(n < max);
        json_error_t jerr;
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, &jerr);
        if (!json_is_object(o))
            test_fail("not a JSON object (%s at column %d): %.*s", jerr.text, jerr.column,
                      (int)(nl - p), p);
        objs[n++] = o;
        p = nl + 1;
    }
    return n;
}

static const char *field(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void test_json(void)
{
    json_t *objs[8];

    shoal_log_init("worker", SHOAL_LOG_INFO, 1);
    capture_stderr_begin();
    shoal_log_info("engine", "task done job_id=%s why=\"%s\" n=%d", "j1", "a \"b\" c", 7);
    shoal_log_warn("http", "odd answer: %s", "quote \" backslash \\ newline \n tab \t bell \a end");
    shoal_log_error("x", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac");
    shoal_log_debug("x", "not shown");
    char *text = capture_stderr_end();
    int n = parse_lines(text, objs, 8);
    assert_int_eq(n, 3);

    const char *ts = field(objs[0], "ts");
    assert_true(ts != NULL);
    assert_int_eq(strlen(ts), 24); /* 2024-01-02T03:04:05.678Z */
    assert_true(ts[10] == 'T' && ts[23] == 'Z');
    assert_str_eq(field(objs[0], "level"), "info");
    assert_str_eq(field(objs[0], "proc"), "worker");
    assert_str_eq(field(objs[0], "module"), "engine");
    /* Fields become members of their own, quoted values unquoted. */
    assert_str_eq(field(objs[0], "msg"), "task done");
    assert_str_eq(field(objs[0], "job_id"), "j1");
    assert_str_eq(field(objs[0], "why"), "a \"b\" c");
    assert_str_eq(field(objs[0], "n"), "7");

    assert_str_eq(field(objs[1], "level"), "warn");
    assert_str_eq(field(objs[1], "msg"),
                  "odd answer: quote \" backslash \\ newline \n tab \t bell \a end");
    assert_str_eq(field(objs[2], "level"), "error");
    assert_str_eq(field(objs[2], "msg"), "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac");
    for (int i = 0; i < n; i++)
        json_decref(objs[i]);
    free(text);
}

/* Whatever bytes a message holds, and wherever it is cut, the line is JSON. */
static void test_json_hostile(void)
{
    json_t *objs[8];

    shoal_log_init("worker", SHOAL_LOG_INFO, 1);

    /* two-byte characters far past the buffers: the cut may not split one */
    char *big = malloc(12001);
    assert_true(big != NULL);
    for (int i = 0; i < 6000; i++) {
        big[2 * i] = (char)0xc3;
        big[2 * i + 1] = (char)0xa9;
    }
    big[12000] = '\0';
    capture_stderr_begin();
    shoal_log_info("m", "%s", big);
    shoal_log_info("m", "x%s", big); /* cut on the other byte parity */
    char *text = capture_stderr_end();
    int n = parse_lines(text, objs, 8);
    assert_int_eq(n, 2);
    for (int i = 0; i < n; i++) {
        assert_true(strlen(field(objs[i], "msg")) > 1000);
        json_decref(objs[i]);
    }
    free(text);

    /* control characters only: each is escaped, and the cut lands between escapes */
    memset(big, '\x01', 3000);
    big[3000] = '\0';
    capture_stderr_begin();
    shoal_log_info("m", "%s", big);
    text = capture_stderr_end();
    assert_int_eq(parse_lines(text, objs, 8), 1);
    json_decref(objs[0]);
    free(text);
    free(big);

    /* bytes that are not UTF-8 at all */
    capture_stderr_begin();
    shoal_log_info("m", "bad \xff\xfe bytes \xc3 and \xed\xa0\x80 surrogate");
    text = capture_stderr_end();
    assert_int_eq(parse_lines(text, objs, 8), 1);
    assert_str_contains(field(objs[0], "msg"), "bad ");
    assert_str_contains(field(objs[0], "msg"), " surrogate");
    json_decref(objs[0]);
    free(text);
}

/* The values a job or a provider can put into a line. */
#define HOSTILE_ID "job \"one\" x=1"
#define HOSTILE_WHY "bad \"model\" = back\\slash\nnext line\ttab\x01 end=\"\" fake=field \xff"
#define HOSTILE_WHY_READ                                                                           \
    "bad \"model\" = back\\slash\nnext line\ttab\x01 end=\"\" fake=field \xef\xbf\xbd"

/* Captures one line logged with hostile values and parses it strictly. */
static json_t *hostile_line(int json)
{
    shoal_log_init("intake", SHOAL_LOG_INFO, json);
    capture_stderr_begin();
    shoal_log_warn("intake", "job rejected: \"%s\" job_id=%s reason=\"%s\" empty=%s attempt=%d",
                   "a=b \"q\"", HOSTILE_ID, HOSTILE_WHY, "", 3);
    char *text = capture_stderr_end();
    assert_int_eq(count_char(text, '\n'), 1);
    json_t *lines = logparse_lines(text, json, "hostile");
    json_t *o = json_incref(json_array_get(lines, 0));
    json_decref(lines);
    if (!json) {
        /* plain values stay bare, anything else is quoted */
        assert_str_contains(text, " level=warn proc=intake module=intake ");
        assert_str_contains(text, " attempt=3\n");
        assert_str_contains(text, " empty=\"\" ");
        assert_str_contains(text, " job_id=\"job \\\"one\\\" x=1\" ");
    }
    free(text);
    return o;
}

static void test_hostile_values(void)
{
    for (int json = 0; json <= 1; json++) {
        json_t *o = hostile_line(json);
        assert_int_eq(json_object_size(o), 9); /* ts level proc module msg + 4 fields */
        assert_str_eq(field(o, "msg"), "job rejected: \"a=b \"q\"\"");
        assert_str_eq(field(o, "job_id"), HOSTILE_ID);
        assert_str_eq(field(o, "reason"), HOSTILE_WHY_READ);
        assert_str_eq(field(o, "empty"), "");
        assert_str_eq(field(o, "attempt"), "3");
        assert_true(json_object_get(o, "fake") == NULL);
        assert_true(json_object_get(o, "x") == NULL);
        json_decref(o);
    }
}

/* Conversions expand as printf would, wherever they are in the line. */
static void test_conversions(void)
{
    char want[256];
    long long big = -1234567890123LL;
    size_t z = 42;
    const char *volatile null_str = NULL; /* hidden from the compiler's format check */
    snprintf(want, sizeof(want), "%5.2f|%-4d|%*d|%.*s|%zu|%lld|%%|%c|%x|%g|%05ld|%u", 3.14159, 7, 6,
             42, 3, "abcdef", z, big, 'q', 255u, 1e-7, 12L, 9u);
    for (int json = 0; json <= 1; json++) {
        shoal_log_init("logtest", SHOAL_LOG_INFO, json);
        capture_stderr_begin();
        shoal_log_info("m", "%5.2f|%-4d|%*d|%.*s|%zu|%lld|%%|%c|%x|%g|%05ld|%u val=%s n=%d last=%s",
                       3.14159, 7, 6, 42, 3, "abcdef", z, big, 'q', 255u, 1e-7, 12L, 9u, null_str,
                       -5, "end");
        char *text = capture_stderr_end();
        json_t *lines = logparse_lines(text, json, "conversions");
        json_t *o = json_array_get(lines, 0);
        assert_str_eq(field(o, "msg"), want);
        assert_str_eq(field(o, "val"), "(null)");
        assert_str_eq(field(o, "n"), "-5");
        assert_str_eq(field(o, "last"), "end");
        json_decref(lines);
        free(text);
    }
}

/* Cut lines stay whole: quotes, escapes and the JSON object are closed. */
static void test_hostile_cut(void)
{
    char *big = malloc(6001);
    assert_true(big != NULL);
    for (int i = 0; i < 6000; i++)
        big[i] = "\"\\\n\x01 =\xc3\xa9"[i % 8];
    big[6000] = '\0';
    for (int json = 0; json <= 1; json++) {
        shoal_log_init("logtest", SHOAL_LOG_INFO, json);
        for (int shift = 0; shift < 8; shift++) {
            capture_stderr_begin();
            shoal_log_error("m", "failed job_id=%s error=\"%s\" why=%s tail=%d", "j1", big + shift,
                            big, 1);
            shoal_log_error("m", "%s", big + shift);
            char *text = capture_stderr_end();
            assert_int_eq(count_char(text, '\n'), 2);
            assert_true(strchr(text, '\n') - text < 4096);
            json_t *lines = logparse_lines(text, json, "cut");
            json_t *o = json_array_get(lines, 0);
            assert_str_eq(field(o, "job_id"), "j1");
            assert_true(strlen(field(o, "error")) > 500);
            json_decref(lines);
            free(text);
        }
    }
    free(big);
}

int main(void)
{
    test_text_format();
    test_levels();
    test_text_one_line();
    test_json();
    test_json_hostile();
    test_hostile_values();
    test_conversions();
    test_hostile_cut();
    printf("log_test: ok\n");
    return 0;
}
