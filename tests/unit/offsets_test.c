/*
 * worker/offsets: the committable position of a partition moves only past
 * the finished prefix, whatever order tasks finish in; commit_list reports
 * each advance once per partition; a re-fetch from a lower offset restarts a
 * partition; a forgotten partition ignores late completions. The randomized
 * case compares every reported position with a brute-force answer.
 */
#include "worker/offsets.h"

#include <stdint.h>
#include <stdlib.h>

#include "tests/support/check.h"

#define MAX_SEEN 64

/* What one commit_list call reported. */
struct seen {
    int n;
    char topic[MAX_SEEN][64];
    int32_t partition[MAX_SEEN];
    int64_t next[MAX_SEEN];
};

static void on_commit(const char *topic, int32_t partition, int64_t next, void *arg)
{
    struct seen *s = arg;
    if (s->n >= MAX_SEEN)
        test_fail("more than %d partitions reported", MAX_SEEN);
    snprintf(s->topic[s->n], sizeof(s->topic[0]), "%s", topic);
    s->partition[s->n] = partition;
    s->next[s->n] = next;
    s->n++;
}

static void collect(shoal_offsets_t *o, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    shoal_offsets_commit_list(o, on_commit, s);
}

/* The next offset reported for topic/partition, or -1 when it was not. */
static int64_t reported(const struct seen *s, const char *topic, int32_t partition)
{
    for (int i = 0; i < s->n; i++)
        if (s->partition[i] == partition && !strcmp(s->topic[i], topic))
            return s->next[i];
    return -1;
}

static shoal_offset_ref_t track(shoal_offsets_t *o, const char *topic, int32_t partition,
                                int64_t offset)
{
    shoal_offset_ref_t ref;
    assert_int_eq(shoal_offsets_track(o, topic, partition, offset, &ref), SHOAL_OK);
    assert_int_eq(ref.offset, offset);
    return ref;
}

static void test_in_order(void)
{
    shoal_offsets_t *o = shoal_offsets_new();
    struct seen s;
    shoal_offset_ref_t r[3];

    assert_true(o != NULL);
    collect(o, &s);
    assert_int_eq(s.n, 0);
    assert_int_eq(shoal_offsets_pending(o), 0);

    for (int i = 0; i < 3; i++)
        r[i] = track(o, "t", 0, 10 + i);
    assert_int_eq(shoal_offsets_pending(o), 3);
    collect(o, &s);
    assert_int_eq(s.n, 0); /* nothing finished yet */

    for (int i = 0; i < 3; i++) {
        shoal_offsets_done(o, &r[i]);
        assert_int_eq(shoal_offsets_pending(o), 2 - i);
        collect(o, &s);
        assert_int_eq(s.n, 1);
        assert_str_eq(s.topic[0], "t");
        assert_int_eq(s.partition[0], 0);
        assert_int_eq(s.next[0], 11 + i);
        collect(o, &s);
        assert_int_eq(s.n, 0); /* each advance is reported once */
    }

    /* a second "done" for the same message changes nothing */
    shoal_offsets_done(o, &r[2]);
    assert_int_eq(shoal_offsets_pending(o), 0);
    collect(o, &s);
    assert_int_eq(s.n, 0);

    /* tracking continues after the partition drained */
    shoal_offset_ref_t more = track(o, "t", 0, 13);
    assert_int_eq(shoal_offsets_pending(o), 1);
    collect(o, &s);
    assert_int_eq(s.n, 0);
    shoal_offsets_done(o, &more);
    collect(o, &s);
    assert_int_eq(reported(&s, "t", 0), 14);
    shoal_offsets_destroy(o);
}

static void test_out_of_order(void)
{
    shoal_offsets_t *o = shoal_offsets_new();
    struct seen s;
    shoal_offset_ref_t r[5];

    for (int i = 0; i < 5; i++)
        r[i] = track(o, "t", 3, 100 + i);

    /* later messages finish first: the position may not move past 100 */
    shoal_offsets_done(o, &r[4]);
    shoal_offsets_done(o, &r[2]);
    shoal_offsets_done(o, &r[1]);
    assert_int_eq(shoal_offsets_pending(o), 2);
    collect(o, &s);
    assert_int_eq(s.n, 0);

    /* 100 finishes: 100..102 are done, 103 is not */
    shoal_offsets_done(o, &r[0]);
    collect(o, &s);
    assert_int_eq(s.n, 1);
    assert_int_eq(reported(&s, "t", 3), 103);

    /* 103 finishes: the prefix now runs through 104 */
    shoal_offsets_done(o, &r[3]);
    assert_int_eq(shoal_offsets_pending(o), 0);
    collect(o, &s);
    assert_int_eq(reported(&s, "t", 3), 105);
    shoal_offsets_destroy(o);
}

/* Gaps in offsets (compacted topics, transaction markers) are normal: the
 * position is just past the last finished message of the prefix. */
static void test_gaps(void)
{
    shoal_offsets_t *o = shoal_offsets_new();
    struct seen s;
    shoal_offset_ref_t a = track(o, "t", 0, 5);
    shoal_offset_ref_t b = track(o, "t", 0, 9);
    shoal_offset_ref_t c = track(o, "t", 0, 20);

    shoal_offsets_done(o, &b);
    collect(o, &s);
    assert_int_eq(s.n, 0);
    shoal_offsets_done(o, &a);
    collect(o, &s);
    assert_int_eq(reported(&s, "t", 0), 10);

    /* a ref for an offset that was never tracked is ignored */
    shoal_offset_ref_t bogus = c;
    bogus.offset = 15;
    shoal_offsets_done(o, &bogus);
    assert_int_eq(shoal_offsets_pending(o), 1);
    bogus.offset = 99;
    shoal_offsets_done(o, &bogus);
    bogus.slot = 7;
    shoal_offsets_done(o, &bogus);
    bogus.slot = -1;
    shoal_offsets_done(o, &bogus);
    assert_int_eq(shoal_offsets_pending(o), 1);
    collect(o, &s);
    assert_int_eq(s.n, 0);

    shoal_offsets_done(o, &c);
    collect(o, &s);
    assert_int_eq(reported(&s, "t", 0), 21);
    shoal_offsets_destroy(o);
}

static void test_partitions_and_topics(void)
{
    shoal_offsets_t *o = shoal_offsets_new();
    struct seen s;

    /* the same partition number in two topics is two partitions */
    shoal_offset_ref_t a0 = track(o, "a", 0, 0);
    shoal_offset_ref_t a1 = track(o, "a", 1, 50);
    shoal_offset_ref_t b0 = track(o, "b", 0, 7);
    shoal_offset_ref_t a0b = track(o, "a", 0, 1);
    shoal_offset_ref_t b0b = track(o, "b", 0, 8);
    assert_true(a0.slot != b0.slot);
    assert_true(a0.slot != a1.slot);
    assert_int_eq(a0.slot, a0b.slot);
    assert_int_eq(shoal_offsets_pending(o), 5);

    shoal_offsets_done(o, &a0b); /* a/0 still waits for 0 */
    shoal_offsets_done(o, &b0);
    shoal_offsets_done(o, &a1);
    collect(o, &s);
    assert_int_eq(s.n, 2);
    assert_int_eq(reported(&s, "a", 0), -1);
    assert_int_eq(reported(&s, "a", 1), 51);
    assert_int_eq(reported(&s, "b", 0), 8);

    shoal_offsets_done(o, &a0);
    collect(o, &s);
    assert_int_eq(s.n, 1);
    assert_int_eq(reported(&s, "a", 0), 2);

    shoal_offsets_done(o, &b0b);
    assert_int_eq(shoal_offsets_pending(o), 0);
    collect(o, &s);
    assert_int_eq(s.n, 1);
    assert_int_eq(reported(&s, "b", 0), 9);
    collect(o, &s);
    assert_int_eq(s.n, 0);

    /* more partitions than the tracker's first allocation */
    shoal_offset_ref_t many[40];
    for (int p = 0; p < 40; p++)
        many[p] = track(o, "c", p, 1000 + p);
    assert_int_eq(shoal_offsets_pending(o), 40);
    for (int p = 39; p >= 0; p--)
        shoal_offsets_done(o, &many[p]);
    assert_int_eq(shoal_offsets_pending(o), 0);
    collect(o, &s);
    assert_int_eq(s.n, 40);
    for (int p = 0; p < 40; p++)
        assert_int_eq(reported(&s, "c", p), 1001 + p);
    shoal_offsets_destroy(o);
}

static void test_refetch(void)
{
    shoal_offsets_t *o = shoal_offsets_new();
    struct seen s;
    shoal_offset_ref_t r10 = track(o, "t", 0, 10);
    shoal_offset_ref_t r11 = track(o, "t", 0, 11);
    shoal_offset_ref_t r12 = track(o, "t", 0, 12);

    shoal_offsets_done(o, &r10);
    collect(o, &s);
    assert_int_eq(reported(&s, "t", 0), 11);
    assert_int_eq(shoal_offsets_pending(o), 2);

    /* a rebalance hands the partition back from offset 11: it restarts */
    shoal_offset_ref_t n11 = track(o, "t", 0, 11);
    assert_true(n11.gen != r11.gen);
    assert_int_eq(shoal_offsets_pending(o), 1);
    shoal_offset_ref_t n12 = track(o, "t", 0, 12);
    assert_int_eq(shoal_offsets_pending(o), 2);

    /* the old refs are stale: finishing them moves nothing */
    shoal_offsets_done(o, &r11);
    shoal_offsets_done(o, &r12);
    assert_int_eq(shoal_offsets_pending(o), 2);
    collect(o, &s);
    assert_int_eq(s.n, 0);

    shoal_offsets_done(o, &n12);
    collect(o, &s);
    assert_int_eq(s.n, 0);
    shoal_offsets_done(o, &n11);
    assert_int_eq(shoal_offsets_pending(o), 0);
    collect(o, &s);
    assert_int_eq(reported(&s, "t", 0), 13);

    /* re-fetching the very same offset also restarts */
    shoal_offset_ref_t a = track(o, "t", 0, 13);
    shoal_offset_ref_t b = track(o, "t", 0, 13);
    assert_true(a.gen != b.gen);
    assert_int_eq(shoal_offsets_pending(o), 1);
    shoal_offsets_done(o, &a);
    assert_int_eq(shoal_offsets_pending(o), 1);
    shoal_offsets_done(o, &b);
    assert_int_eq(shoal_offsets_pending(o), 0);
    collect(o, &s);
    assert_int_eq(reported(&s, "t", 0), 14);
    shoal_offsets_destroy(o);
}

static void test_forget(void)
{
    shoal_offsets_t *o = shoal_offsets_new();
    struct seen s;
    shoal_offset_ref_t x0 = track(o, "t", 0, 0);
    shoal_offset_ref_t x1 = track(o, "t", 0, 1);
    shoal_offset_ref_t y0 = track(o, "t", 1, 0);
    assert_int_eq(shoal_offsets_pending(o), 3);

    shoal_offsets_forget(o, "t", 0);
    assert_int_eq(shoal_offsets_pending(o), 1);
    /* late completions for the revoked partition are ignored */
    shoal_offsets_done(o, &x0);
    shoal_offsets_done(o, &x1);
    assert_int_eq(shoal_offsets_pending(o), 1);
    collect(o, &s);
    assert_int_eq(s.n, 0);

    /* forgetting an unknown partition is harmless */
    shoal_offsets_forget(o, "t", 9);
    shoal_offsets_forget(o, "other", 0);
    assert_int_eq(shoal_offsets_pending(o), 1);

    /* the other partition is untouched */
    shoal_offsets_done(o, &y0);
    collect(o, &s);
    assert_int_eq(s.n, 1);
    assert_int_eq(reported(&s, "t", 1), 1);

    /* the partition comes back, possibly from where it was */
    shoal_offset_ref_t z = track(o, "t", 0, 1);
    assert_int_eq(shoal_offsets_pending(o), 1);
    shoal_offsets_done(o, &x1); /* still stale */
    assert_int_eq(shoal_offsets_pending(o), 1);
    shoal_offsets_done(o, &z);
    assert_int_eq(shoal_offsets_pending(o), 0);
    collect(o, &s);
    assert_int_eq(s.n, 1);
    assert_int_eq(reported(&s, "t", 0), 2);

    /* forgetting a drained partition then finishing nothing reports nothing */
    shoal_offsets_forget(o, "t", 1);
    collect(o, &s);
    assert_int_eq(s.n, 0);
    shoal_offsets_destroy(o);
    shoal_offsets_destroy(NULL);
}

#define RAND_PARTS 4
#define RAND_TOTAL 10000

/* xorshift64*: a fixed sequence on every platform. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

struct msg {
    int part;
    int64_t offset;
    shoal_offset_ref_t ref;
};

static void test_random(void)
{
    static struct msg msgs[RAND_TOTAL];
    static int order[RAND_TOTAL];
    static unsigned char finished[RAND_PARTS][RAND_TOTAL];
    int64_t base[RAND_PARTS], count[RAND_PARTS] = {0}, last_seen[RAND_PARTS];
    shoal_offsets_t *o = shoal_offsets_new();
    struct seen s;

    for (int p = 0; p < RAND_PARTS; p++) {
        base[p] = 1000000 * (int64_t)(p + 1);
        last_seen[p] = -1;
    }
    /* messages arrive interleaved over the partitions, each in offset order */
    for (int i = 0; i < RAND_TOTAL; i++) {
        int p = (int)(rng() % RAND_PARTS);
        msgs[i].part = p;
        msgs[i].offset = base[p] + count[p]++;
        msgs[i].ref = track(o, "rand", p, msgs[i].offset);
        order[i] = i;
    }
    assert_int_eq(shoal_offsets_pending(o), RAND_TOTAL);
    for (int i = RAND_TOTAL - 1; i > 0; i--) {
        int j = (int)(rng() % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }

    for (int k = 0; k < RAND_TOTAL; k++) {
        struct msg *m = &msgs[order[k]];
        shoal_offsets_done(o, &m->ref);
        finished[m->part][m->offset - base[m->part]] = 1;
        assert_int_eq(shoal_offsets_pending(o), RAND_TOTAL - k - 1);

        collect(o, &s);
        for (int p = 0; p < RAND_PARTS; p++) {
            /* brute force: the smallest unfinished offset, or one past the last */
            int64_t first = 0;
            while (first < count[p] && finished[p][first])
                first++;
            int64_t want = first == 0 ? -1 : base[p] + first;
            int64_t got = reported(&s, "rand", p);
            if (got >= 0) {
                if (got != want)
                    test_fail("completion %d partition %d: reported %lld, expected %lld", k, p,
                              (long long)got, (long long)want);
                last_seen[p] = got;
            } else if (want != last_seen[p]) {
                test_fail("completion %d partition %d: position %lld not reported (last %lld)", k,
                          p, (long long)want, (long long)last_seen[p]);
            }
        }
    }
    for (int p = 0; p < RAND_PARTS; p++)
        assert_int_eq(last_seen[p], base[p] + count[p]);
    assert_int_eq(shoal_offsets_pending(o), 0);
    shoal_offsets_destroy(o);
}

int main(void)
{
    test_in_order();
    test_out_of_order();
    test_gaps();
    test_partitions_and_topics();
    test_refetch();
    test_forget();
    test_random();
    printf("offsets_test: ok\n");
    return 0;
}
