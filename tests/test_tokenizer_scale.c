/*
 * test_tokenizer_scale.c — a tokenizer.json with very many added tokens
 * (suite tokenizer_scale).  Loading used to sort the added tokens by an
 * insertion sort calling strlen (O(n²): 100k tokens were still loading after
 * a minute), and encoding tried every added token at every position.  Both
 * now index the tokens (datasets/bpe.c); here 100k of them must load and
 * encode within a CPU-time budget far above what that takes (≈1 s) and
 * far below what the quadratic code took, and the longest-match rule must
 * hold as before.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tokenizer.h"

#define FIXTURE    "tests/fixtures/bpe/tokenizer.json" /* Qwen3's, cut; ids < 151669 */
#define FIRST_ID   151669
#define N_ADDED    100000
#define CPU_BUDGET 20.0 /* seconds of CPU for load + encode, sanitizers included */

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void add_token(json_t *added, const char *content, int id)
{
    json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", id, "content", content, "single_word",
                                           0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1));
}

/* The fixture with the given added tokens appended, written to a temporary
 * file whose path is returned (static buffer). */
static const char *with_added(void (*add)(json_t *added))
{
    static char path[64];
    json_error_t je;
    json_t *root = json_load_file(FIXTURE, 0, &je);
    cr_assert_not_null(root, "%s: %s", FIXTURE, je.text);
    json_t *added = json_object_get(root, "added_tokens");
    cr_assert(json_is_array(added), "fixture has added_tokens");
    add(added);
    snprintf(path, sizeof path, "/tmp/ftbtok-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(json_dump_file(root, path, JSON_COMPACT), 0, "cannot write %s", path);
    json_decref(root);
    return path;
}

/* Token i: "<|reserved_<i>" padded with '_' to a pseudo-random length of
 * 16..63 bytes, then "|>".  Lengths in no order are what made the old
 * insertion sort quadratic (about n²/4 moves). */
static const char *token_content(int i)
{
    static char name[80];
    int len = snprintf(name, sizeof name, "<|reserved_%d", i);
    int want = 16 + (int)(((unsigned)i * 2654435761u) >> 7) % 48;
    while (len < want) name[len++] = '_';
    memcpy(name + len, "|>", 3);
    return name;
}

static void add_many(json_t *added)
{
    for (int i = 0; i < N_ADDED; i++) add_token(added, token_content(i), FIRST_ID + i);
}

Test(tokenizer_scale, hundred_thousand_added_tokens_load_and_encode_within_budget)
{
    const char *path = with_added(add_many);
    char err[512];
    double t0 = cpu_seconds();
    ftb_tokenizer *t = ftb_tokenizer_open(path, err, sizeof err);
    double t_load = cpu_seconds() - t0;
    cr_assert_not_null(t, "%s", err);
    cr_expect_eq(ftb_tokenizer_vocab(t), FIRST_ID + N_ADDED);

    /* 40 KB of text that keeps almost matching: every '<' starts a
     * candidate, as a chat transcript full of special tokens does. */
    size_t cap_text = 48 * 1024, n = 0;
    char *text = malloc(cap_text);
    cr_assert_not_null(text);
    for (int i = 0; n + 128 < cap_text && i < 100000; i++)
        n += (size_t)snprintf(text + n, cap_text - n, "%s a<|reserved_x <", token_content((i * 7919) % N_ADDED));
    int32_t *ids = NULL;
    int ni = 0, cap = 0;
    t0 = cpu_seconds();
    cr_assert_eq(ftb_tokenizer_encode(t, text, n, &ids, &ni, &cap, err, sizeof err), 0, "%s", err);
    double t_encode = cpu_seconds() - t0;
    cr_expect_eq(ids[0], FIRST_ID + 0, "first token: %d", ids[0]);
    int specials = 0;
    for (int i = 0; i < ni; i++) specials += ids[i] >= FIRST_ID;
    int expected = 0;
    for (size_t i = 0; i + 11 < n; i++) expected += !strncmp(text + i, "<|reserved_", 11) && text[i + 11] != 'x';
    cr_expect_eq(specials, expected, "%d added tokens found, %d in the text", specials, expected);
    cr_log_info("100k added tokens: load %.3f s CPU, encode %zu bytes %.3f s CPU", t_load, n, t_encode);
    cr_expect(t_load + t_encode < CPU_BUDGET, "load %.1f s + encode %.1f s CPU, budget %.0f s", t_load, t_encode,
              CPU_BUDGET);
    free(ids);
    free(text);
    ftb_tokenizer_close(t);
    unlink(path);
}

static void add_overlapping(json_t *added)
{
    add_token(added, "<|ab", 200000);
    add_token(added, "<|abc", 200001);
    add_token(added, "<|abcde", 200002);
    add_token(added, "<|abc", 200003); /* the same content again: the first id keeps it */
    add_token(added, "zz<", 200004);
}

/* The longest added token at a position wins, text between them is BPE'd. */
Test(tokenizer_scale, longest_added_token_wins_and_first_duplicate_keeps_it)
{
    const char *path = with_added(add_overlapping);
    char err[512];
    ftb_tokenizer *t = ftb_tokenizer_open(path, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    static const struct {
        const char *text;
        int32_t want[4];
        int n;
    } cases[] = {
        { "<|abcd", { 200001, -1 }, 2 },        /* <|abc + d */
        { "<|abcde", { 200002 }, 1 },           /* the longest */
        { "<|ab<|abc", { 200000, 200001 }, 2 }, /* back to back */
        { "zz<|ab", { 200004, -1 }, 2 },        /* leftmost first: zz< then |ab */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t *ids = NULL;
        int ni = 0, cap = 0;
        cr_assert_eq(ftb_tokenizer_encode(t, cases[c].text, strlen(cases[c].text), &ids, &ni, &cap, err, sizeof err), 0,
                     "%s", err);
        cr_expect(ni >= cases[c].n, "'%s': %d ids", cases[c].text, ni);
        for (int i = 0; i < cases[c].n && i < ni; i++)
            if (cases[c].want[i] >= 0)
                cr_expect_eq(ids[i], cases[c].want[i], "'%s' id %d: %d, want %d", cases[c].text, i, ids[i],
                             cases[c].want[i]);
            else
                cr_expect(ids[i] < 200000, "'%s' id %d: %d should be a BPE token", cases[c].text, i, ids[i]);
        free(ids);
    }
    ftb_tokenizer_close(t);
    unlink(path);
}
