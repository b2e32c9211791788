/*
 * Local token estimates (see tokens.h).
 *
 * BPE tokenizers of the o200k_base family first cut text into pieces with a
 * regular expression (words with one leading space or punctuation mark,
 * digits in groups of up to three, punctuation runs, whitespace runs), then
 * merge bytes inside each piece. This file does the first step roughly, in
 * one pass without allocating, and replaces the second by a per-piece price:
 * how many tokens a piece of that kind and length tends to become. The prices
 * (weight[] below) were fitted to o200k_base counts of the corpus in
 * tests/bench/data/estimate/ and are checked against them by
 * tests/unit/tokens_test.c; change them only together with that corpus.
 */
#include "common/tokens.h"

#include <limits.h>
#include <string.h>

/* What one piece of text adds to the estimate, in tokens per unit. */
enum feature {
    F_LATIN_WORD,     /* a Latin-script word (camelCase humps count apart) */
    F_LATIN_LONG,     /* letters of a Latin word beyond LATIN_SHORT */
    F_LATIN_NONASCII, /* accented Latin letters: rarer merges */
    F_LATIN_CAPS,     /* letters of an all-capitals word beyond the first */
    F_ALPHA_WORD,     /* a Cyrillic, Armenian or Georgian word */
    F_ALPHA_LETTER,   /* its letters */
    F_GREEK_WORD,     /* a Greek word */
    F_GREEK_LETTER,   /* its letters: fewer merges than Cyrillic */
    F_ABJAD_WORD,     /* an Arabic or Hebrew word */
    F_ABJAD_LETTER,   /* its letters */
    F_INDIC_WORD,     /* a word of a Brahmic script of India */
    F_INDIC_LETTER,   /* its code points (vowel signs included) */
    F_SEA_LETTER,     /* Thai, Lao, Tibetan, Myanmar, Khmer: no spaces */
    F_HAN,            /* one Chinese character */
    F_KANA,           /* one hiragana or katakana */
    F_HANGUL,         /* one Hangul syllable */
    F_HANGUL_WORD,    /* a run of Hangul */
    F_OTHER_LETTER,   /* letters of any other script */
    F_DIGITS,         /* a group of up to three digits */
    F_PUNCT_RUN,      /* a run of ASCII punctuation */
    F_PUNCT_CHAR,     /* its characters beyond the first */
    F_PUNCT_LEAD,     /* one mark directly before a word, which it joins */
    F_SYMBOL,         /* other non-letters below U+10000: dashes, quotes, CJK punctuation */
    F_EMOJI,          /* code points from U+10000 up, and emoji joiners */
    F_SPACE_RUN,      /* spaces or tabs beyond the one a word takes */
    F_NEWLINE_RUN,    /* whitespace holding line breaks */
    F_COUNT
};

/* Latin words up to this many letters are priced as a word alone. */
#define LATIN_SHORT 6

/* Fitted to o200k_base (see the file comment). */
static const double weight[F_COUNT] = {
    [F_LATIN_WORD] = 0.875,   [F_LATIN_LONG] = 0.281,   [F_LATIN_NONASCII] = 0.675,
    [F_LATIN_CAPS] = 0.194,   [F_ALPHA_WORD] = 0.463,   [F_ALPHA_LETTER] = 0.244,
    [F_GREEK_WORD] = 0.650,   [F_GREEK_LETTER] = 0.400, [F_ABJAD_WORD] = 0.650,
    [F_ABJAD_LETTER] = 0.225, [F_INDIC_WORD] = 0.588,   [F_INDIC_LETTER] = 0.213,
    [F_SEA_LETTER] = 0.300,   [F_HAN] = 0.850,          [F_KANA] = 0.488,
    [F_HANGUL] = 0.812,       [F_HANGUL_WORD] = 0.294,  [F_OTHER_LETTER] = 0.500,
    [F_DIGITS] = 1.143,       [F_PUNCT_RUN] = 0.831,    [F_PUNCT_CHAR] = 0.200,
    [F_PUNCT_LEAD] = 0.612,   [F_SYMBOL] = 1.288,       [F_EMOJI] = 2.200,
    [F_SPACE_RUN] = 0.419,    [F_NEWLINE_RUN] = 1.000,
};

enum cls {
    C_SPACE,
    C_NEWLINE,
    C_DIGIT,
    C_PUNCT, /* ASCII punctuation */
    C_SYMBOL,
    C_EMOJI,
    C_LATIN,
    C_ALPHA,
    C_GREEK,
    C_ABJAD,
    C_INDIC,
    C_SEA,
    C_HAN,
    C_KANA,
    C_HANGUL,
    C_OTHER_LETTER,
};

/* Decodes one code point at s[*i] and advances *i. A byte that does not start
 * a valid sequence decodes as itself (U+0080..U+00FF range, a symbol), so
 * broken UTF-8 still moves forward one byte at a time. */
static unsigned long next_cp(const unsigned char *s, size_t len, size_t *i)
{
    unsigned char c = s[*i];
    size_t n;
    unsigned long cp;

    if (c < 0x80) {
        (*i)++;
        return c;
    }
    if (c >= 0xF0 && c < 0xF8) {
        n = 3;
        cp = c & 0x07;
    } else if (c >= 0xE0) {
        n = 2;
        cp = c & 0x0F;
    } else if (c >= 0xC0) {
        n = 1;
        cp = c & 0x1F;
    } else {
        (*i)++;
        return 0xFFFD;
    }
    if (n >= len - *i) {
        (*i)++;
        return 0xFFFD;
    }
    for (size_t k = 1; k <= n; k++) {
        if ((s[*i + k] & 0xC0) != 0x80) {
            (*i)++;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[*i + k] & 0x3F);
    }
    *i += n + 1;
    return cp;
}

static int in(unsigned long cp, unsigned long lo, unsigned long hi)
{
    return cp >= lo && cp <= hi;
}

static enum cls classify(unsigned long cp)
{
    if (cp < 0x80) {
        if (cp == '\n' || cp == '\r')
            return C_NEWLINE;
        if (cp == ' ' || cp == '\t' || cp == '\v' || cp == '\f')
            return C_SPACE;
        if (cp >= '0' && cp <= '9')
            return C_DIGIT;
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return C_LATIN;
        return C_PUNCT;
    }
    if (cp == 0xA0 || cp == 0x3000 || in(cp, 0x2000, 0x200A))
        return C_SPACE;
    if (cp == 0x200D || in(cp, 0xFE00, 0xFE0F) || cp >= 0x10000) {
        if (in(cp, 0x20000, 0x3FFFF))
            return C_HAN;
        return C_EMOJI;
    }
    if ((in(cp, 0xC0, 0x24F) && cp != 0xD7 && cp != 0xF7) || in(cp, 0x300, 0x36F) ||
        in(cp, 0x1E00, 0x1EFF))
        return C_LATIN;
    if (in(cp, 0x370, 0x3FF) || in(cp, 0x1F00, 0x1FFF))
        return C_GREEK;
    if (in(cp, 0x400, 0x52F) || in(cp, 0x530, 0x58F) || in(cp, 0x10A0, 0x10FF))
        return C_ALPHA;
    if (in(cp, 0x590, 0x5FF) || in(cp, 0x600, 0x6FF) || in(cp, 0x750, 0x77F) ||
        in(cp, 0xFB1D, 0xFDFF) || in(cp, 0xFE70, 0xFEFF)) {
        /* Arabic comma, semicolon and question mark are punctuation */
        if (cp == 0x60C || cp == 0x61B || cp == 0x61F || cp == 0x6D4)
            return C_SYMBOL;
        return C_ABJAD;
    }
    if (in(cp, 0x900, 0xDFF))
        return (cp == 0x964 || cp == 0x965) ? C_SYMBOL : C_INDIC;
    if (in(cp, 0xE00, 0xFFF) || in(cp, 0x1000, 0x109F) || in(cp, 0x1780, 0x17FF))
        return C_SEA;
    if (in(cp, 0x3400, 0x4DBF) || in(cp, 0x4E00, 0x9FFF) || in(cp, 0xF900, 0xFAFF))
        return C_HAN;
    if (in(cp, 0x3040, 0x30FF) || in(cp, 0x31F0, 0x31FF) || in(cp, 0xFF66, 0xFF9F))
        return (cp == 0x30FB) ? C_SYMBOL : C_KANA;
    if (in(cp, 0xAC00, 0xD7AF) || in(cp, 0x1100, 0x11FF) || in(cp, 0x3130, 0x318F))
        return C_HANGUL;
    if (in(cp, 0x2000, 0x2BFF) || in(cp, 0x3000, 0x303F) || in(cp, 0xFF00, 0xFF65) ||
        in(cp, 0x80, 0xBF) || cp == 0xD7 || cp == 0xF7 || cp == 0xFFFD || in(cp, 0xE000, 0xF8FF))
        return C_SYMBOL;
    return C_OTHER_LETTER;
}

static int is_letter(enum cls c)
{
    return c >= C_LATIN;
}

static int latin_upper(unsigned long cp)
{
    return (cp >= 'A' && cp <= 'Z') || (in(cp, 0xC0, 0xDE) && cp != 0xD7);
}

static int latin_lower(unsigned long cp)
{
    return (cp >= 'a' && cp <= 'z') || (in(cp, 0xDF, 0xFF) && cp != 0xF7);
}

/* Counts the pieces of text into f[]. */
static void scan(const unsigned char *s, size_t len, double f[F_COUNT])
{
    size_t i = 0;
    /* the current run: its class and what it has counted so far */
    enum cls run = C_SPACE;
    size_t run_len = 0, run_nonascii = 0, run_upper = 0, trailing_spaces = 0;
    int prev_lower = 0, run_open = 0;

    memset(f, 0, sizeof(double) * F_COUNT);
    while (i <= len) {
        unsigned long cp = 0;
        enum cls c = C_SPACE;
        int end = i == len;

        if (!end) {
            cp = next_cp(s, len, &i);
            c = classify(cp);
            /* an apostrophe inside a word (don't, l'eau) leaves it one piece */
            if (c == C_PUNCT && cp == '\'' && run_open && run == C_LATIN && i < len &&
                classify(s[i]) == C_LATIN) {
                f[F_LATIN_WORD] += 0.5;
                continue;
            }
        } else {
            i++;
        }
        int newline_ws = c == C_NEWLINE;
        if (newline_ws)
            c = C_SPACE; /* one whitespace run; line breaks noted apart */
        int same = run_open && c == run;
        if (same && c == C_LATIN && prev_lower && latin_upper(cp))
            same = 0; /* camelCase: a new hump is a new piece */
        if (run_open && !same) {
            /* close the run */
            switch (run) {
            case C_LATIN:
                f[F_LATIN_WORD] += 1;
                if (run_len > LATIN_SHORT)
                    f[F_LATIN_LONG] += (double)(run_len - LATIN_SHORT);
                f[F_LATIN_NONASCII] += (double)run_nonascii;
                if (run_upper == run_len && run_len > 1)
                    f[F_LATIN_CAPS] += (double)(run_len - 1);
                break;
            case C_ALPHA:
                f[F_ALPHA_WORD] += 1;
                f[F_ALPHA_LETTER] += (double)run_len;
                break;
            case C_GREEK:
                f[F_GREEK_WORD] += 1;
                f[F_GREEK_LETTER] += (double)run_len;
                break;
            case C_ABJAD:
                f[F_ABJAD_WORD] += 1;
                f[F_ABJAD_LETTER] += (double)run_len;
                break;
            case C_INDIC:
                f[F_INDIC_WORD] += 1;
                f[F_INDIC_LETTER] += (double)run_len;
                break;
            case C_SEA:
                f[F_SEA_LETTER] += (double)run_len;
                break;
            case C_HAN:
                f[F_HAN] += (double)run_len;
                break;
            case C_KANA:
                f[F_KANA] += (double)run_len;
                break;
            case C_HANGUL:
                f[F_HANGUL_WORD] += 1;
                f[F_HANGUL] += (double)run_len;
                break;
            case C_OTHER_LETTER:
                f[F_OTHER_LETTER] += (double)run_len;
                break;
            case C_DIGIT:
                f[F_DIGITS] += (double)((run_len + 2) / 3);
                break;
            case C_PUNCT:
                if (run_len == 1 && is_letter(c) && !end) {
                    f[F_PUNCT_LEAD] += 1;
                } else {
                    f[F_PUNCT_RUN] += 1;
                    f[F_PUNCT_CHAR] += (double)(run_len - 1);
                }
                break;
            case C_SYMBOL:
                f[F_SYMBOL] += (double)run_len;
                break;
            case C_EMOJI:
                f[F_EMOJI] += (double)run_len;
                break;
            case C_SPACE:
            case C_NEWLINE:
                if (run_nonascii) /* holds a line break */
                    f[F_NEWLINE_RUN] += 1;
                /* the last space joins a following word or punctuation;
                 * more spaces, or a space before digits, are a piece */
                if (trailing_spaces > 1 ||
                    (trailing_spaces == 1 && (end || !(is_letter(c) || c == C_PUNCT))))
                    f[F_SPACE_RUN] += 1;
                break;
            }
            run_open = 0;
        }
        if (end)
            break;
        if (!run_open) {
            run = c;
            run_open = 1;
            run_len = run_nonascii = run_upper = trailing_spaces = 0;
            prev_lower = 0;
        }
        run_len++;
        if (c == C_SPACE) {
            /* run_nonascii marks a line break in a whitespace run */
            if (newline_ws) {
                run_nonascii = 1;
                trailing_spaces = 0;
            } else {
                trailing_spaces++;
            }
        } else if (c == C_LATIN) {
            run_nonascii += cp >= 0x80;
            run_upper += latin_upper(cp);
            prev_lower = latin_lower(cp);
        }
    }
}

size_t shoal_tokens_codepoints(const char *s, size_t len)
{
    size_t n = 0;

    if (!s)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    }
    return n;
}

long shoal_tokens_estimate(const char *s, size_t len)
{
    double f[F_COUNT], t = 0;

    if (!s || len == 0)
        return 0;
    scan((const unsigned char *)s, len, f);
    for (int k = 0; k < F_COUNT; k++)
        t += weight[k] * f[k];
    if (t < 1)
        return 1;
    if (t >= (double)LONG_MAX)
        return LONG_MAX;
    return (long)t + (t > (double)(long)t);
}
