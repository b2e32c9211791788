/*
 * A backtracking ECMA-262 matcher (the subset regex.h lists) over UTF-8.
 *
 * A pattern compiles to a graph of nodes: each node has a "next" (the rest of
 * its sequence), groups and lookaheads hold their alternatives as sequences,
 * and a repeat holds one atom. Matching is continuation-passing: when a
 * sequence ends, the continuation stack (struct kont, on the C stack) says
 * what comes next, which is how a quantifier tries one more iteration or
 * gives up to the rest of the pattern, exactly in ECMA-262's order. Runs of
 * one character class under a quantifier are matched in a loop and given back
 * by stepping backwards over UTF-8, so "^[a-z]+$" costs no recursion per
 * character. Every step counts against the caller's budget and recursion is
 * capped, so the worst case is a SHOAL_REGEX_BUDGET answer, never a hang or a
 * blown stack.
 */
#include "common/regex.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* Deepest nesting of groups in a pattern, and of recursion while matching. */
#define MAX_NEST 64
#define MAX_DEPTH 2000
/* Longest pattern accepted; bigger ones are not what schemas carry. */
#define MAX_PATTERN 65536
#define INF UINT_MAX

enum rkind {
    R_CHAR,
    R_ANY,
    R_CLASS,
    R_BOL,
    R_EOL,
    R_WORDB,
    R_NWORDB,
    R_GROUP,
    R_REPEAT,
    R_LOOK,
    R_NLOOK,
};

/* Built-in classes a bracket expression or escape may hold. */
enum {
    B_DIGIT = 1 << 0,
    B_NDIGIT = 1 << 1,
    B_WORD = 1 << 2,
    B_NWORD = 1 << 3,
    B_SPACE = 1 << 4,
    B_NSPACE = 1 << 5,
};

struct crange {
    uint32_t lo, hi;
};

struct rnode {
    enum rkind kind;
    struct rnode *next;  /* rest of the sequence; NULL at its end */
    struct rnode *chain; /* every node of the regex, for freeing */
    uint32_t cp;         /* R_CHAR */
    /* R_CLASS */
    int negate;
    unsigned builtins;
    struct crange *ranges;
    size_t n_ranges;
    /* R_GROUP: alternatives (NULL entries are empty sequences) */
    struct rnode **alts;
    size_t n_alts;
    /* R_REPEAT: one atom; R_LOOK, R_NLOOK: a group */
    struct rnode *child;
    unsigned min, max;
    int greedy;
};

struct shoal_regex {
    struct rnode *root; /* a group */
    struct rnode *all;  /* chain of every node */
    int anchored;       /* every alternative starts with ^: try position 0 only */
};

/* ---- UTF-8 ---- */

/* Decodes the code point at s[i]; invalid bytes decode as themselves so
 * that matching never reads past len. Returns the index after it. */
static size_t dec(const unsigned char *s, size_t len, size_t i, uint32_t *cp)
{
    unsigned char c = s[i];
    size_t n;
    uint32_t v;

    if (c < 0x80) {
        *cp = c;
        return i + 1;
    }
    if (c >= 0xF0 && c < 0xF8) {
        n = 3;
        v = c & 0x07;
    } else if (c >= 0xE0) {
        n = 2;
        v = c & 0x0F;
    } else if (c >= 0xC0) {
        n = 1;
        v = c & 0x1F;
    } else {
        *cp = c;
        return i + 1;
    }
    if (n >= len - i) {
        *cp = c;
        return i + 1;
    }
    for (size_t k = 1; k <= n; k++) {
        if ((s[i + k] & 0xC0) != 0x80) {
            *cp = c;
            return i + 1;
        }
        v = (v << 6) | (s[i + k] & 0x3F);
    }
    *cp = v;
    return i + 1 + n;
}

/* Index of the code point before position i (i > 0). */
static size_t prev_cp(const unsigned char *s, size_t i)
{
    size_t j = i - 1;

    while (j > 0 && (s[j] & 0xC0) == 0x80 && i - j < 4)
        j--;
    return j;
}

/* ---- character classes ---- */

static int is_digit(uint32_t c)
{
    return c >= '0' && c <= '9';
}

static int is_word(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}

/* ECMA-262 WhiteSpace and LineTerminator. */
static int is_space(uint32_t c)
{
    switch (c) {
    case '\t':
    case '\n':
    case 0x0B:
    case 0x0C:
    case '\r':
    case ' ':
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0xFEFF:
        return 1;
    default:
        return c >= 0x2000 && c <= 0x200A;
    }
}

static int is_line_terminator(uint32_t c)
{
    return c == '\n' || c == '\r' || c == 0x2028 || c == 0x2029;
}

static int class_has(const struct rnode *n, uint32_t c)
{
    unsigned b = n->builtins;
    int in = 0;

    if (b) {
        in = ((b & B_DIGIT) && is_digit(c)) || ((b & B_NDIGIT) && !is_digit(c)) ||
             ((b & B_WORD) && is_word(c)) || ((b & B_NWORD) && !is_word(c)) ||
             ((b & B_SPACE) && is_space(c)) || ((b & B_NSPACE) && !is_space(c));
    }
    for (size_t i = 0; !in && i < n->n_ranges; i++)
        in = c >= n->ranges[i].lo && c <= n->ranges[i].hi;
    return in != n->negate;
}

/* True when n matches one code point (and so can be looped over). */
static int single(const struct rnode *n)
{
    return n->kind == R_CHAR || n->kind == R_ANY || n->kind == R_CLASS;
}

static int single_has(const struct rnode *n, uint32_t c)
{
    switch (n->kind) {
    case R_CHAR:
        return c == n->cp;
    case R_ANY:
        return !is_line_terminator(c);
    case R_CLASS:
        return class_has(n, c);
    default:
        return 0;
    }
}

/* ---- parsing ---- */

struct parser {
    const unsigned char *p, *start, *end;
    shoal_regex_t *re;
    int nest;
    char *errbuf;
    size_t errlen;
    int failed;
};

static void perr(struct parser *ps, const char *what)
{
    if (ps->failed)
        return;
    ps->failed = 1;
    shoal_err_set(ps->errbuf, ps->errlen, SHOAL_ERR_INVALID, "%s at offset %zu", what,
                  (size_t)(ps->p - ps->start));
}

static struct rnode *new_node(struct parser *ps, enum rkind kind)
{
    struct rnode *n = calloc(1, sizeof(*n));

    if (!n) {
        if (!ps->failed) {
            ps->failed = 1;
            shoal_err_set(ps->errbuf, ps->errlen, SHOAL_ERR_NOMEM, "out of memory");
        }
        return NULL;
    }
    n->kind = kind;
    n->chain = ps->re->all;
    ps->re->all = n;
    return n;
}

static int more(const struct parser *ps)
{
    return ps->p < ps->end;
}

static uint32_t peek(const struct parser *ps)
{
    uint32_t c;

    dec(ps->p, (size_t)(ps->end - ps->p), 0, &c);
    return c;
}

static uint32_t take(struct parser *ps)
{
    uint32_t c;

    ps->p += dec(ps->p, (size_t)(ps->end - ps->p), 0, &c);
    return c;
}

static int hexval(uint32_t c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

/* Reads exactly n hex digits; -1 when they are not there (nothing taken). */
static long hex_digits(struct parser *ps, int n)
{
    long v = 0;

    if (ps->end - ps->p < n)
        return -1;
    for (int i = 0; i < n; i++) {
        int h = hexval(ps->p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    ps->p += n;
    return v;
}

/* After "\u": HHHH (a surrogate pair written as two escapes becomes one code
 * point) or {H...}. Returns the code point or -1. */
static long unicode_escape(struct parser *ps)
{
    long v, lo;

    if (more(ps) && *ps->p == '{') {
        const unsigned char *save = ps->p;
        v = 0;
        ps->p++;
        while (more(ps) && hexval(*ps->p) >= 0 && v <= 0x10FFFF)
            v = v * 16 + hexval(*ps->p++);
        if (!more(ps) || *ps->p != '}' || v > 0x10FFFF || ps->p == save + 1) {
            ps->p = save;
            return -1;
        }
        ps->p++;
        return v;
    }
    if ((v = hex_digits(ps, 4)) < 0)
        return -1;
    if (v >= 0xD800 && v <= 0xDBFF && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
        const unsigned char *save = ps->p;
        ps->p += 2;
        lo = hex_digits(ps, 4);
        if (lo >= 0xDC00 && lo <= 0xDFFF)
            return 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
        ps->p = save;
    }
    return v;
}

/* Built-in class letter after a backslash, or 0. */
static unsigned builtin_of(uint32_t c)
{
    switch (c) {
    case 'd':
        return B_DIGIT;
    case 'D':
        return B_NDIGIT;
    case 'w':
        return B_WORD;
    case 'W':
        return B_NWORD;
    case 's':
        return B_SPACE;
    case 'S':
        return B_NSPACE;
    default:
        return 0;
    }
}

/* A character escape after the backslash (already taken); in_class allows
 * \b (backspace) and \-. Returns the code point or -1 after reporting. */
static long char_escape(struct parser *ps, int in_class)
{
    uint32_t c;
    long v;

    if (!more(ps)) {
        perr(ps, "pattern ends with a backslash");
        return -1;
    }
    c = take(ps);
    switch (c) {
    case 't':
        return '\t';
    case 'n':
        return '\n';
    case 'v':
        return 0x0B;
    case 'f':
        return 0x0C;
    case 'r':
        return '\r';
    case '0':
        if (more(ps) && is_digit(peek(ps))) {
            perr(ps, "octal escapes are not supported");
            return -1;
        }
        return 0;
    case 'c':
        if (more(ps) &&
            ((peek(ps) >= 'a' && peek(ps) <= 'z') || (peek(ps) >= 'A' && peek(ps) <= 'Z')))
            return (long)(take(ps) % 32);
        perr(ps, "\\c must be followed by a letter");
        return -1;
    case 'x':
        if ((v = hex_digits(ps, 2)) < 0) {
            perr(ps, "\\x must be followed by two hex digits");
            return -1;
        }
        return v;
    case 'u':
        if ((v = unicode_escape(ps)) < 0) {
            perr(ps, "\\u must be followed by four hex digits or {hex}");
            return -1;
        }
        return v;
    case 'b':
        if (in_class)
            return 0x08;
        break;
    case '-':
        if (in_class)
            return '-';
        break;
    default:
        break;
    }
    if (c >= '1' && c <= '9') {
        perr(ps, "backreferences are not supported");
        return -1;
    }
    if (c == 'p' || c == 'P') {
        perr(ps, "unicode property escapes (\\p, \\P) are not supported");
        return -1;
    }
    if (c == 'k') {
        perr(ps, "named backreferences are not supported");
        return -1;
    }
    /* identity escapes: punctuation and other non-word characters */
    if (c < 0x80 && (is_word(c) || c == ' ')) {
        ps->p--;
        perr(ps, "unknown escape");
        return -1;
    }
    return (long)c;
}

static int add_range(struct parser *ps, struct rnode *n, uint32_t lo, uint32_t hi)
{
    struct crange *r = realloc(n->ranges, (n->n_ranges + 1) * sizeof(*r));

    if (!r) {
        perr(ps, "out of memory");
        return -1;
    }
    n->ranges = r;
    r[n->n_ranges].lo = lo;
    r[n->n_ranges].hi = hi;
    n->n_ranges++;
    return 0;
}

/* One class member: a code point (returned) or a built-in class (*builtin
 * set, returns 0). -1 on error. */
static long class_atom(struct parser *ps, unsigned *builtin)
{
    uint32_t c = take(ps);

    *builtin = 0;
    if (c != '\\')
        return (long)c;
    if (more(ps) && (*builtin = builtin_of(peek(ps)))) {
        ps->p++;
        return 0;
    }
    return char_escape(ps, 1);
}

/* After '[': members up to ']'. */
static struct rnode *parse_class(struct parser *ps)
{
    struct rnode *n = new_node(ps, R_CLASS);

    if (!n)
        return NULL;
    if (more(ps) && *ps->p == '^') {
        n->negate = 1;
        ps->p++;
    }
    for (;;) {
        unsigned b1, b2;
        long lo, hi;

        if (!more(ps)) {
            perr(ps, "unterminated character class");
            return NULL;
        }
        if (*ps->p == ']') {
            ps->p++;
            return n;
        }
        if ((lo = class_atom(ps, &b1)) < 0)
            return NULL;
        if (b1) {
            n->builtins |= b1;
            if (more(ps) && *ps->p == '-' && ps->p + 1 < ps->end && ps->p[1] != ']') {
                perr(ps, "a class escape cannot start a range");
                return NULL;
            }
            continue;
        }
        if (more(ps) && *ps->p == '-' && ps->p + 1 < ps->end && ps->p[1] != ']') {
            ps->p++;
            if ((hi = class_atom(ps, &b2)) < 0)
                return NULL;
            if (b2) {
                perr(ps, "a class escape cannot end a range");
                return NULL;
            }
            if (hi < lo) {
                perr(ps, "range out of order in character class");
                return NULL;
            }
        } else {
            hi = lo;
        }
        if (add_range(ps, n, (uint32_t)lo, (uint32_t)hi))
            return NULL;
    }
}

static struct rnode *parse_disjunction(struct parser *ps);

/* {n}, {n,}, {n,m} at ps->p; 1 when read (p moved), 0 when the brace is
 * not a quantifier (p unchanged: the brace is then a literal, as Annex B
 * allows), -1 on error. */
static int brace_quantifier(struct parser *ps, unsigned *min, unsigned *max)
{
    const unsigned char *q = ps->p + 1;
    unsigned long a = 0, b;
    int digits = 0;

    while (q < ps->end && is_digit(*q)) {
        a = a * 10 + (*q++ - '0');
        if (a > 100000)
            a = 100000;
        digits = 1;
    }
    if (!digits)
        return 0;
    b = a;
    if (q < ps->end && *q == ',') {
        q++;
        b = INF;
        if (q < ps->end && is_digit(*q)) {
            b = 0;
            while (q < ps->end && is_digit(*q)) {
                b = b * 10 + (*q++ - '0');
                if (b > 100000)
                    b = 100000;
            }
        }
    }
    if (q >= ps->end || *q != '}')
        return 0;
    ps->p = q + 1;
    if (b < a) {
        perr(ps, "numbers out of order in {} quantifier");
        return -1;
    }
    *min = (unsigned)a;
    *max = (unsigned)b;
    return 1;
}

/* At ps->p: a quantifier or not. 1 with min/max/greedy set, 0, -1. */
static int quantifier(struct parser *ps, unsigned *min, unsigned *max, int *greedy)
{
    int r = 1;

    if (!more(ps))
        return 0;
    switch (*ps->p) {
    case '*':
        *min = 0;
        *max = INF;
        ps->p++;
        break;
    case '+':
        *min = 1;
        *max = INF;
        ps->p++;
        break;
    case '?':
        *min = 0;
        *max = 1;
        ps->p++;
        break;
    case '{':
        r = brace_quantifier(ps, min, max);
        if (r <= 0)
            return r;
        break;
    default:
        return 0;
    }
    *greedy = 1;
    if (more(ps) && *ps->p == '?') {
        *greedy = 0;
        ps->p++;
    }
    return 1;
}

/* After '(': the group's kind, its disjunction and ')'. */
static struct rnode *parse_group(struct parser *ps)
{
    enum rkind kind = R_GROUP;
    struct rnode *body, *n;

    if (ps->end - ps->p >= 2 && ps->p[0] == '?') {
        switch (ps->p[1]) {
        case ':':
            ps->p += 2;
            break;
        case '=':
            kind = R_LOOK;
            ps->p += 2;
            break;
        case '!':
            kind = R_NLOOK;
            ps->p += 2;
            break;
        case '<':
            if (ps->end - ps->p >= 3 && (ps->p[2] == '=' || ps->p[2] == '!')) {
                perr(ps, "lookbehind is not supported");
                return NULL;
            }
            /* a named group: the name only matters to backreferences */
            ps->p += 2;
            while (more(ps) && *ps->p != '>') {
                if (!is_word(*ps->p) && *ps->p != '$' && *ps->p < 0x80) {
                    perr(ps, "invalid group name");
                    return NULL;
                }
                ps->p++;
            }
            if (!more(ps)) {
                perr(ps, "unterminated group name");
                return NULL;
            }
            ps->p++;
            break;
        default:
            perr(ps, "unsupported group modifier");
            return NULL;
        }
    } else if (more(ps) && *ps->p == '?') {
        perr(ps, "unsupported group modifier");
        return NULL;
    }
    if (++ps->nest > MAX_NEST) {
        perr(ps, "groups nested too deeply");
        return NULL;
    }
    body = parse_disjunction(ps);
    ps->nest--;
    if (!body)
        return NULL;
    if (!more(ps) || *ps->p != ')') {
        perr(ps, "missing )");
        return NULL;
    }
    ps->p++;
    if (kind == R_GROUP)
        return body;
    if (!(n = new_node(ps, kind)))
        return NULL;
    n->child = body;
    return n;
}

/* One atom at ps->p (which is not at '|' or ')' or the end). */
static struct rnode *parse_atom(struct parser *ps)
{
    uint32_t c = take(ps);
    struct rnode *n;
    unsigned b, mn, mx;
    long v;

    switch (c) {
    case '^':
        return new_node(ps, R_BOL);
    case '$':
        return new_node(ps, R_EOL);
    case '.':
        return new_node(ps, R_ANY);
    case '(':
        return parse_group(ps);
    case '[':
        return parse_class(ps);
    case '*':
    case '+':
    case '?':
        ps->p--;
        perr(ps, "nothing to repeat");
        return NULL;
    case '{':
        ps->p--;
        if (brace_quantifier(ps, &mn, &mx) != 0) {
            perr(ps, "nothing to repeat");
            return NULL;
        }
        ps->p++;
        break;
    case '\\':
        if (more(ps) && (*ps->p == 'b' || *ps->p == 'B'))
            return new_node(ps, *ps->p++ == 'b' ? R_WORDB : R_NWORDB);
        if (more(ps) && (b = builtin_of(peek(ps)))) {
            ps->p++;
            if ((n = new_node(ps, R_CLASS)))
                n->builtins = b;
            return n;
        }
        if ((v = char_escape(ps, 0)) < 0)
            return NULL;
        c = (uint32_t)v;
        break;
    default:
        break;
    }
    if ((n = new_node(ps, R_CHAR)))
        n->cp = c;
    return n;
}

/* A sequence up to '|', ')' or the end; NULL with *empty set for none. */
static struct rnode *parse_sequence(struct parser *ps, int *empty)
{
    struct rnode *head = NULL, **tail = &head;

    *empty = 1;
    while (more(ps) && *ps->p != '|' && *ps->p != ')') {
        struct rnode *atom = parse_atom(ps), *r;
        unsigned mn, mx;
        int greedy, q;

        if (!atom)
            return NULL;
        if ((q = quantifier(ps, &mn, &mx, &greedy)) < 0)
            return NULL;
        if (q) {
            if (atom->kind == R_BOL || atom->kind == R_EOL || atom->kind == R_WORDB ||
                atom->kind == R_NWORDB) {
                perr(ps, "nothing to repeat");
                return NULL;
            }
            if (!(r = new_node(ps, R_REPEAT)))
                return NULL;
            r->child = atom;
            r->min = mn;
            r->max = mx;
            r->greedy = greedy;
            atom = r;
        }
        *tail = atom;
        tail = &atom->next;
        *empty = 0;
    }
    return head;
}

static struct rnode *parse_disjunction(struct parser *ps)
{
    struct rnode *g = new_node(ps, R_GROUP);

    if (!g)
        return NULL;
    for (;;) {
        int empty;
        struct rnode *seq = parse_sequence(ps, &empty), **alts;

        if (!seq && !empty)
            return NULL;
        if (!(alts = realloc(g->alts, (g->n_alts + 1) * sizeof(*alts)))) {
            perr(ps, "out of memory");
            return NULL;
        }
        g->alts = alts;
        g->alts[g->n_alts++] = seq;
        if (!more(ps) || *ps->p != '|')
            return g;
        ps->p++;
    }
}

void shoal_regex_destroy(shoal_regex_t *re)
{
    struct rnode *n, *next;

    if (!re)
        return;
    for (n = re->all; n; n = next) {
        next = n->chain;
        free(n->ranges);
        free(n->alts);
        free(n);
    }
    free(re);
}

shoal_regex_t *shoal_regex_new(const char *pattern, size_t len, char *errbuf, size_t errlen)
{
    struct parser ps;
    shoal_regex_t *re;

    if (len > MAX_PATTERN) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_LIMIT, "pattern is %zu bytes; the limit is %d", len,
                      MAX_PATTERN);
        return NULL;
    }
    if (!(re = calloc(1, sizeof(*re)))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memset(&ps, 0, sizeof(ps));
    ps.p = ps.start = (const unsigned char *)pattern;
    ps.end = ps.p + len;
    ps.re = re;
    ps.errbuf = errbuf;
    ps.errlen = errlen;
    re->root = parse_disjunction(&ps);
    if (re->root && more(&ps))
        perr(&ps, "unmatched )");
    if (!re->root || ps.failed) {
        shoal_regex_destroy(re);
        return NULL;
    }
    re->anchored = 1;
    for (size_t i = 0; i < re->root->n_alts; i++) {
        if (!re->root->alts[i] || re->root->alts[i]->kind != R_BOL)
            re->anchored = 0;
    }
    return re;
}

/* ---- matching ---- */

enum kkind { K_NEXT, K_REPEAT, K_ACCEPT };

/* What to do once the current sequence has matched. */
struct kont {
    enum kkind kind;
    const struct rnode *node; /* K_NEXT: where to go on; K_REPEAT: the repeat */
    unsigned count;           /* K_REPEAT: iterations including the current one */
    size_t start;             /* K_REPEAT: where the current iteration began */
    const struct kont *up;
};

struct mctx {
    const unsigned char *s;
    size_t len;
    unsigned long steps, budget;
    unsigned depth;
    int aborted;
};

static int match(struct mctx *c, const struct rnode *n, size_t pos, const struct kont *k);

static int step(struct mctx *c)
{
    if (++c->steps > c->budget) {
        c->aborted = 1;
        return 0;
    }
    return 1;
}

/* Iteration count done so far is count; try one more, or the rest. */
static int repeat_iter(struct mctx *c, const struct rnode *r, unsigned count, size_t pos,
                       const struct kont *k)
{
    struct kont again = {K_REPEAT, r, count + 1, pos, k};

    if (r->greedy) {
        if (count < r->max && match(c, r->child, pos, &again))
            return 1;
        if (c->aborted || count < r->min)
            return 0;
        return match(c, r->next, pos, k);
    }
    if (count >= r->min && match(c, r->next, pos, k))
        return 1;
    if (c->aborted || count >= r->max)
        return 0;
    return match(c, r->child, pos, &again);
}

/* A repeat of one code point: counted in a loop, given back one by one. */
static int repeat_single(struct mctx *c, const struct rnode *r, size_t pos, const struct kont *k)
{
    unsigned cnt = 0;
    size_t p = pos, np;
    uint32_t cp;

    if (r->greedy) {
        while (cnt < r->max && p < c->len) {
            np = dec(c->s, c->len, p, &cp);
            if (!single_has(r->child, cp))
                break;
            if (!step(c))
                return 0;
            p = np;
            cnt++;
        }
        if (cnt < r->min)
            return 0;
        for (;;) {
            if (match(c, r->next, p, k))
                return 1;
            if (c->aborted || cnt == r->min)
                return 0;
            p = prev_cp(c->s, p);
            cnt--;
        }
    }
    for (;;) {
        if (cnt >= r->min) {
            if (match(c, r->next, p, k))
                return 1;
            if (c->aborted)
                return 0;
        }
        if (cnt >= r->max || p >= c->len)
            return 0;
        np = dec(c->s, c->len, p, &cp);
        if (!single_has(r->child, cp) || !step(c))
            return 0;
        p = np;
        cnt++;
    }
}

static int word_at(const struct mctx *c, size_t pos)
{
    return pos < c->len && is_word(c->s[pos]);
}

static int match_here(struct mctx *c, const struct rnode *n, size_t pos, const struct kont *k)
{
    uint32_t cp;

    for (;;) {
        if (!step(c))
            return 0;
        if (!n) {
            if (!k || k->kind == K_ACCEPT)
                return 1;
            if (k->kind == K_NEXT) {
                n = k->node;
                k = k->up;
                continue;
            }
            /* K_REPEAT: one iteration done; an empty one past the minimum
             * fails, as ECMA-262 says, which also ends (a*)* loops */
            if (pos == k->start && k->count > k->node->min)
                return 0;
            return repeat_iter(c, k->node, k->count, pos, k->up);
        }
        switch (n->kind) {
        case R_CHAR:
        case R_ANY:
        case R_CLASS:
            if (pos >= c->len)
                return 0;
            pos = dec(c->s, c->len, pos, &cp);
            if (!single_has(n, cp))
                return 0;
            n = n->next;
            break;
        case R_BOL:
            if (pos != 0)
                return 0;
            n = n->next;
            break;
        case R_EOL:
            if (pos != c->len)
                return 0;
            n = n->next;
            break;
        case R_WORDB:
        case R_NWORDB: {
            int at = (pos > 0 && word_at(c, pos - 1)) != word_at(c, pos);
            if (at != (n->kind == R_WORDB))
                return 0;
            n = n->next;
            break;
        }
        case R_GROUP: {
            struct kont kk = {K_NEXT, n->next, 0, 0, k};
            for (size_t i = 0; i < n->n_alts; i++) {
                if (match(c, n->alts[i], pos, &kk))
                    return 1;
                if (c->aborted)
                    return 0;
            }
            return 0;
        }
        case R_LOOK:
        case R_NLOOK: {
            struct kont acc = {K_ACCEPT, NULL, 0, 0, NULL};
            int r = match(c, n->child, pos, &acc);
            if (c->aborted || r != (n->kind == R_LOOK))
                return 0;
            n = n->next;
            break;
        }
        case R_REPEAT:
            if (single(n->child))
                return repeat_single(c, n, pos, k);
            return repeat_iter(c, n, 0, pos, k);
        }
    }
}

static int match(struct mctx *c, const struct rnode *n, size_t pos, const struct kont *k)
{
    int r;

    if (c->depth >= MAX_DEPTH) {
        c->aborted = 1;
        return 0;
    }
    c->depth++;
    r = match_here(c, n, pos, k);
    c->depth--;
    return r;
}

int shoal_regex_search(const shoal_regex_t *re, const char *s, size_t len, unsigned long budget)
{
    struct mctx c = {
        (const unsigned char *)s, len, 0, budget ? budget : SHOAL_REGEX_DEFAULT_BUDGET, 0, 0};
    size_t pos = 0;
    uint32_t cp;

    for (;;) {
        if (match(&c, re->root, pos, NULL))
            return SHOAL_REGEX_MATCH;
        if (c.aborted)
            return SHOAL_REGEX_BUDGET;
        if (re->anchored || pos >= len)
            return SHOAL_REGEX_NOMATCH;
        pos = dec(c.s, len, pos, &cp);
    }
}
