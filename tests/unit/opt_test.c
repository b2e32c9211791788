/*
 * common/opt: one table gives defaults, environment twins, flags (which beat
 * the environment), bounds with messages naming the option, -X collection,
 * positionals and --help text that never shows a secret's default.
 */
#include "common/opt.h"

#include <stddef.h>
#include <stdlib.h>

#include "tests/support/check.h"

struct conf {
    long max_inflight;
    const char *group;
    const char *pg;
    int dry_run;
    double ratio;
    shoal_kprops_t kafka;
};

#define OFF(f) offsetof(struct conf, f)
static const struct shoal_opt opts[] = {
    {"max-inflight", SHOAL_OPT_INT, OFF(max_inflight), "64", 1, 4096, "concurrent model calls"},
    {"group", SHOAL_OPT_STR, OFF(group), "shoal-workers", 0, 0, "consumer group"},
    {"pg", SHOAL_OPT_STR | SHOAL_OPT_SECRET, OFF(pg), "postgresql://u:hunter2@db/x", 0, 0,
     "libpq conninfo or URI"},
    {"dry-run", SHOAL_OPT_BOOL, OFF(dry_run), "false", 0, 0, "do nothing"},
    {"ratio", SHOAL_OPT_DOUBLE, OFF(ratio), "0.5", 0, 0, "a fraction"},
    {"kafka", SHOAL_OPT_KPROPS, OFF(kafka), NULL, 0, 0, "librdkafka property"},
    {0},
};

static const char *const twins[] = {"SHOAL_MAX_INFLIGHT", "SHOAL_GROUP", "SHOAL_PG",
                                    "SHOAL_DRY_RUN", "SHOAL_RATIO"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(twins) / sizeof(twins[0]); i++)
        assert_int_eq(unsetenv(twins[i]), 0);
}

/* Parses argv (NULL-terminated, argv[0] is the program). */
static shoal_err_t parse(struct conf *c, shoal_optres_t *res, char *err, size_t errlen, char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    memset(c, 0, sizeof(*c));
    err[0] = '\0';
    return shoal_opt_parse(opts, c, argc, argv, 1, res, err, errlen);
}

#define PARSE_OK(c, res, ...)                                                                      \
    do {                                                                                           \
        char *argv_[] = {"prog", __VA_ARGS__, NULL};                                               \
        char err_[256];                                                                            \
        shoal_err_t e_ = parse((c), (res), err_, sizeof(err_), argv_);                             \
        if (e_ != SHOAL_OK)                                                                        \
            test_fail("parse failed (%d): %s", (int)e_, err_);                                     \
    } while (0)

/* Parsing must fail with SHOAL_ERR_INVALID and a message containing want. */
#define PARSE_FAIL(want, ...)                                                                      \
    do {                                                                                           \
        char *argv_[] = {"prog", __VA_ARGS__, NULL};                                               \
        char err_[256];                                                                            \
        struct conf c_;                                                                            \
        shoal_optres_t r_;                                                                         \
        assert_int_eq(parse(&c_, &r_, err_, sizeof(err_), argv_), SHOAL_ERR_INVALID);              \
        assert_str_contains(err_, want);                                                           \
    } while (0)

static void test_defaults(void)
{
    struct conf c;
    shoal_optres_t res;
    char err[256];
    char *argv[] = {"prog", NULL};

    clear_env();
    assert_int_eq(parse(&c, &res, err, sizeof(err), argv), SHOAL_OK);
    assert_int_eq(c.max_inflight, 64);
    assert_str_eq(c.group, "shoal-workers");
    assert_str_eq(c.pg, "postgresql://u:hunter2@db/x");
    assert_int_eq(c.dry_run, 0);
    assert_true(c.ratio == 0.5);
    assert_int_eq(c.kafka.n, 0);
    assert_int_eq(res.npos, 0);
    assert_int_eq(res.help, 0);
}

static void test_env(void)
{
    struct conf c;
    shoal_optres_t res;

    clear_env();
    assert_int_eq(setenv("SHOAL_MAX_INFLIGHT", "12", 1), 0);
    assert_int_eq(setenv("SHOAL_GROUP", "from-env", 1), 0);
    assert_int_eq(setenv("SHOAL_DRY_RUN", "yes", 1), 0);
    assert_int_eq(setenv("SHOAL_RATIO", "0.25", 1), 0);
    PARSE_OK(&c, &res, "pos");
    assert_int_eq(c.max_inflight, 12);
    assert_str_eq(c.group, "from-env");
    assert_int_eq(c.dry_run, 1);
    assert_true(c.ratio == 0.25);

    /* the flag beats the environment, in both spellings */
    PARSE_OK(&c, &res, "--max-inflight", "99", "--group=from-flag", "--dry-run=false");
    assert_int_eq(c.max_inflight, 99);
    assert_str_eq(c.group, "from-flag");
    assert_int_eq(c.dry_run, 0);

    /* a bad environment value names the variable and the option */
    assert_int_eq(setenv("SHOAL_MAX_INFLIGHT", "lots", 1), 0);
    PARSE_FAIL("SHOAL_MAX_INFLIGHT", "x");
    PARSE_FAIL("max-inflight", "x");
    PARSE_FAIL("\"lots\"", "x");
    assert_int_eq(setenv("SHOAL_MAX_INFLIGHT", "0", 1), 0);
    PARSE_FAIL("out of range", "x");
    assert_int_eq(setenv("SHOAL_DRY_RUN", "maybe", 1), 0);
    assert_int_eq(unsetenv("SHOAL_MAX_INFLIGHT"), 0);
    PARSE_FAIL("SHOAL_DRY_RUN dry-run", "x");
    clear_env();
}

static void test_flags(void)
{
    struct conf c;
    shoal_optres_t res;

    clear_env();
    PARSE_OK(&c, &res, "--max-inflight=1", "--dry-run", "--ratio", "2.5", "--pg", "host=db");
    assert_int_eq(c.max_inflight, 1);
    assert_int_eq(c.dry_run, 1);
    assert_true(c.ratio == 2.5);
    assert_str_eq(c.pg, "host=db");
    assert_int_eq(res.npos, 0);

    /* a bool flag takes no separate value: the next word is a positional */
    PARSE_OK(&c, &res, "--dry-run", "file.json");
    assert_int_eq(c.dry_run, 1);
    assert_int_eq(res.npos, 1);
    assert_str_eq(res.pos[0], "file.json");
    PARSE_OK(&c, &res, "--dry-run=off");
    assert_int_eq(c.dry_run, 0);
    PARSE_OK(&c, &res, "--dry-run=TRUE");
    assert_int_eq(c.dry_run, 1);

    /* bounds are inclusive */
    PARSE_OK(&c, &res, "--max-inflight", "4096");
    assert_int_eq(c.max_inflight, 4096);
    /* an empty string value is taken as given */
    PARSE_OK(&c, &res, "--group=");
    assert_str_eq(c.group, "");
}

static void test_errors(void)
{
    clear_env();
    PARSE_FAIL("max-inflight", "--max-inflight", "0");
    PARSE_FAIL("out of range (1 to 4096)", "--max-inflight", "0");
    PARSE_FAIL("max-inflight", "--max-inflight=4097");
    PARSE_FAIL("max-inflight", "--max-inflight", "-5");
    PARSE_FAIL("max-inflight: \"12x\" is not a whole number", "--max-inflight=12x");
    PARSE_FAIL("is not a whole number", "--max-inflight", "");
    PARSE_FAIL("is not a whole number", "--max-inflight", "99999999999999999999999");
    PARSE_FAIL("ratio: \"half\" is not a number", "--ratio=half");
    PARSE_FAIL("dry-run", "--dry-run=maybe");
    PARSE_FAIL("option --group needs a value", "--group");
    PARSE_FAIL("unknown option \"--nope\"", "--nope");
    PARSE_FAIL("unknown option \"--nope=1\"", "--nope=1");
    PARSE_FAIL("unknown option \"-q\"", "-q");
    /* -X's table entry is not reachable as a long option */
    PARSE_FAIL("unknown option \"--kafka", "--kafka=a=b");
    PARSE_FAIL("-X needs key=value", "-X");
    PARSE_FAIL("expected key=value", "-X", "novalue");
    PARSE_FAIL("too many arguments", "1", "2", "3", "4", "5", "6", "7", "8", "9");
    PARSE_FAIL("too many arguments", "--", "1", "2", "3", "4", "5", "6", "7", "8", "9");

    /* a table without a KPROPS entry refuses -X */
    static const struct shoal_opt small[] = {
        {"group", SHOAL_OPT_STR, OFF(group), NULL, 0, 0, "consumer group"}, {0}};
    struct conf c;
    shoal_optres_t res;
    char err[256] = "";
    char *argv[] = {"prog", "-X", "a=b", NULL};
    memset(&c, 0, sizeof(c));
    assert_int_eq(shoal_opt_parse(small, &c, 3, argv, 1, &res, err, sizeof(err)),
                  SHOAL_ERR_INVALID);
    assert_str_contains(err, "-X is not an option");
}

static void test_kprops(void)
{
    struct conf c;
    shoal_optres_t res;

    clear_env();
    PARSE_OK(&c, &res, "-X", "session.timeout.ms=7000", "pos", "-X", "debug=all", "-X", "list");
    assert_int_eq(c.kafka.n, 3);
    assert_str_eq(c.kafka.kv[0], "session.timeout.ms=7000");
    assert_str_eq(c.kafka.kv[1], "debug=all");
    assert_str_eq(c.kafka.kv[2], "list");
    assert_int_eq(res.npos, 1);
    assert_str_eq(res.pos[0], "pos");

    /* the cap is reported, not overrun */
    char *argv[2 * SHOAL_KPROPS_MAX + 4];
    int argc = 0;
    argv[argc++] = "prog";
    for (int i = 0; i <= SHOAL_KPROPS_MAX; i++) {
        argv[argc++] = "-X";
        argv[argc++] = "a=b";
    }
    argv[argc] = NULL;
    char err[256];
    assert_int_eq(parse(&c, &res, err, sizeof(err), argv), SHOAL_ERR_LIMIT);
    assert_str_contains(err, "too many -X");
    assert_int_eq(c.kafka.n, SHOAL_KPROPS_MAX);
}

static void test_positionals(void)
{
    struct conf c;
    shoal_optres_t res;

    clear_env();
    PARSE_OK(&c, &res, "submit", "--group", "g", "job.json", "-");
    assert_int_eq(res.npos, 3);
    assert_str_eq(res.pos[0], "submit");
    assert_str_eq(res.pos[1], "job.json");
    assert_str_eq(res.pos[2], "-"); /* stdin, not an option */
    assert_str_eq(c.group, "g");

    /* after "--" everything is positional */
    PARSE_OK(&c, &res, "a", "--", "--group", "-X", "--help");
    assert_int_eq(res.npos, 4);
    assert_str_eq(res.pos[1], "--group");
    assert_str_eq(res.pos[2], "-X");
    assert_str_eq(res.pos[3], "--help");
    assert_int_eq(res.help, 0);
    assert_str_eq(c.group, "shoal-workers");

    /* the first index is respected: words before it are not parsed */
    char *argv[] = {"shoal", "--bogus", "status", "--dry-run", NULL};
    char err[256] = "";
    memset(&c, 0, sizeof(c));
    assert_int_eq(shoal_opt_parse(opts, &c, 4, argv, 2, &res, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(res.npos, 1);
    assert_str_eq(res.pos[0], "status");
    assert_int_eq(c.dry_run, 1);
}

static void test_help_flag(void)
{
    struct conf c;
    shoal_optres_t res;

    clear_env();
    PARSE_OK(&c, &res, "--help");
    assert_int_eq(res.help, 1);
    PARSE_OK(&c, &res, "x", "-h");
    assert_int_eq(res.help, 1);
    assert_int_eq(res.npos, 1);
}

static void test_env_name(void)
{
    char buf[64];

    shoal_opt_env_name("max-inflight", buf, sizeof(buf));
    assert_str_eq(buf, "SHOAL_MAX_INFLIGHT");
    shoal_opt_env_name("pg", buf, sizeof(buf));
    assert_str_eq(buf, "SHOAL_PG");
    shoal_opt_env_name("log-level2", buf, sizeof(buf));
    assert_str_eq(buf, "SHOAL_LOG_LEVEL2");
    /* a short buffer truncates instead of overflowing */
    shoal_opt_env_name("max-inflight", buf, 10);
    assert_str_eq(buf, "SHOAL_MAX");
    shoal_opt_env_name("max-inflight", buf, 4);
    assert_int_eq(strlen(buf), 3);
}

static void test_help_text(void)
{
    FILE *f = tmpfile();
    char text[8192];

    assert_true(f != NULL);
    shoal_opt_help(f, "prog [options] FILE", "Does things.", opts);
    assert_int_eq(fflush(f), 0);
    rewind(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);

    assert_str_contains(text, "usage: prog [options] FILE");
    assert_str_contains(text, "Does things.");
    assert_str_contains(text, "--max-inflight VALUE");
    assert_str_contains(text, "env SHOAL_MAX_INFLIGHT, default 64, range 1..4096");
    assert_str_contains(text, "--dry-run\n"); /* a bool takes no VALUE */
    assert_str_contains(text, "env SHOAL_GROUP, default shoal-workers");
    assert_str_contains(text, "-X key=value");
    assert_str_contains(text, "--help");

    /* the secret's default is never printed, but it says it is secret */
    assert_str_contains(text, "env SHOAL_PG");
    assert_str_contains(text, "secret");
    if (strstr(text, "hunter2") || strstr(text, "postgresql://"))
        test_fail("help text shows a secret default:\n%s", text);
}

int main(void)
{
    test_defaults();
    test_env();
    test_flags();
    test_errors();
    test_kprops();
    test_positionals();
    test_help_flag();
    test_env_name();
    test_help_text();
    printf("opt_test: ok\n");
    return 0;
}
