/*
 * test_datasets.c — batch sources (suite "datasets"): determinism, shifted
 * targets, the learnable structure of synthetic-lang (a model's loss falls
 * on it), the int32 and JSON Lines readers, and malformed files reported
 * with file and line.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"

static char tmpfile_path[64];

static const char *write_tmp(const char *suffix, const void *data, size_t n)
{
    snprintf(tmpfile_path, sizeof tmpfile_path, "/tmp/ftbds-XXXXXX%s", suffix);
    int fd = mkstemps(tmpfile_path, (int)strlen(suffix));
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
    return tmpfile_path;
}

static void cleanup(void)
{
    if (tmpfile_path[0]) unlink(tmpfile_path);
    tmpfile_path[0] = 0;
}

Test(datasets, synthetic_batches_are_seeded_and_shifted)
{
    const char *specs[] = { "uniform", "synthetic-lang", "synthetic-lang:32", NULL };
    for (int k = 0; specs[k]; k++) {
        char err[512];
        ftb_dataset *a = ftb_dataset_open(specs[k], 1000, 7, err, sizeof err);
        ftb_dataset *b = ftb_dataset_open(specs[k], 1000, 7, err, sizeof err);
        ftb_dataset *c = ftb_dataset_open(specs[k], 1000, 8, err, sizeof err);
        cr_assert(a && b && c, "%s: %s", specs[k], err);
        ftb_batch x, y, z;
        cr_assert_eq(ftb_dataset_batch(a, 3, 2, 64, &x, err, sizeof err), 0);
        int32_t keep[128];
        memcpy(keep, x.tokens, sizeof keep);
        cr_assert_eq(ftb_dataset_batch(b, 3, 2, 64, &y, err, sizeof err), 0);
        cr_expect(!memcmp(keep, y.tokens, sizeof keep), "%s: same seed, same batch", specs[k]);
        cr_assert_eq(ftb_dataset_batch(c, 3, 2, 64, &z, err, sizeof err), 0);
        cr_expect(memcmp(keep, z.tokens, sizeof keep) != 0, "%s: another seed, another batch", specs[k]);
        cr_assert_eq(ftb_dataset_batch(a, 4, 2, 64, &x, err, sizeof err), 0);
        cr_expect(memcmp(keep, x.tokens, sizeof keep) != 0, "%s: batches differ", specs[k]);
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < 64; i++) {
                int32_t t = x.tokens[r * 64 + i], g = x.targets[r * 64 + i];
                cr_assert(t >= 0 && t < 1000 && g >= 0 && g < 1000);
                if (i + 1 < 64) cr_assert_eq(g, x.tokens[r * 64 + i + 1], "%s: targets are the next tokens", specs[k]);
            }
        /* next() walks batch 0, 1, ... */
        ftb_dataset_next(b, 2, 64, &y, err, sizeof err);
        memcpy(keep, y.tokens, sizeof keep);
        ftb_dataset_batch(c, 0, 2, 64, &z, err, sizeof err);
        ftb_dataset_batch(a, 0, 2, 64, &x, err, sizeof err);
        cr_expect(!memcmp(keep, x.tokens, sizeof keep));
        ftb_dataset_close(a);
        ftb_dataset_close(b);
        ftb_dataset_close(c);
    }
}

Test(datasets, synthetic_lang_has_structure)
{
    char err[512];
    ftb_dataset *d = ftb_dataset_open("synthetic-lang:64", 50000, 1, err, sizeof err);
    cr_assert(d, "%s", err);
    double h = ftb_dataset_entropy_rate(d);
    cr_expect(h > 0.5 && h < 2.0, "entropy rate %.3f nats", h);
    cr_expect(h < log(64.0) / 2, "far below uniform over the active tokens");
    /* Empirically: the 64 active tokens only, and each token's most
     * frequent successor takes about half of its transitions. */
    static int count[50000];
    static int pair[64][64];
    int32_t ids[64];
    int nid = 0;
    ftb_batch b;
    for (int k = 0; k < 20; k++) {
        cr_assert_eq(ftb_dataset_batch(d, k, 4, 512, &b, err, sizeof err), 0);
        for (int i = 0; i < 4 * 512; i++) {
            if (!count[b.tokens[i]]++) {
                cr_assert(nid < 64, "more than 64 distinct tokens");
                ids[nid++] = b.tokens[i];
            }
        }
        for (int i = 0; i < 4 * 512; i++) {
            int a = -1, c = -1;
            for (int q = 0; q < nid; q++) {
                if (ids[q] == b.tokens[i]) a = q;
                if (ids[q] == b.targets[i]) c = q;
            }
            if (a >= 0 && c >= 0) pair[a][c]++;
        }
    }
    int top = 0, all = 0;
    for (int a = 0; a < nid; a++) {
        int m = 0;
        for (int c = 0; c < nid; c++) {
            all += pair[a][c];
            m = pair[a][c] > m ? pair[a][c] : m;
        }
        top += m;
    }
    cr_expect(nid <= 64);
    cr_expect((double)top / all > 0.45, "top successor share %.2f", (double)top / all);
    ftb_dataset_close(d);
}

Test(datasets, a_model_learns_synthetic_lang)
{
    /* The point of synthetic-lang: loss curves fall.  A tiny model, full
     * fine-tuning, a few dozen AdamW steps. */
    char err[512];
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("tiny", &cfg), 0);
    ftb_model *m = ftb_model_create(&cfg, 1, err, sizeof err);
    cr_assert(m, "%s", err);
    ftb_model_set_trainable(m, 1);
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    ftb_adamw opt;
    cr_assert_eq(ftb_adamw_init(&opt, m, NULL, 0, 1e-2f, 0.0f, err, sizeof err), 0, "%s", err);
    ftb_dataset *d = ftb_dataset_open("synthetic-lang:16", cfg.vocab_size, 3, err, sizeof err);
    cr_assert(d, "%s", err);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    float first = 0, last = 0;
    for (int s = 0; s < 60; s++) {
        ftb_batch b;
        cr_assert_eq(ftb_dataset_next(d, 4, 32, &b, err, sizeof err), 0);
        ftb_model_zero_grads(m);
        float loss = ftb_model_forward_backward(m, &b, &o, err, sizeof err);
        cr_assert(isfinite(loss), "%s", err);
        ftb_adamw_step(&opt);
        if (s < 5) first += loss / 5;
        if (s >= 55) last += loss / 5;
    }
    double h = ftb_dataset_entropy_rate(d);
    cr_expect(last < first - 1.0, "loss %.3f -> %.3f did not fall", first, last);
    cr_expect(last < log(16.0), "loss %.3f still at or above uniform over the active tokens (%.3f); floor %.3f", last,
              log(16.0), h);
    ftb_dataset_close(d);
    ftb_adamw_free(&opt);
    ftb_model_free(m);
}

Test(datasets, int32_file_windows, .fini = cleanup)
{
    int32_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = i % 50;
    const char *p = write_tmp(".bin", ids, sizeof ids);
    char err[512];
    ftb_dataset *d = ftb_dataset_open(p, 64, 0, err, sizeof err);
    cr_assert(d, "%s", err);
    cr_expect_str_eq(ftb_dataset_kind(d), "int32");
    cr_expect_eq(ftb_dataset_size(d), 100);
    ftb_batch b;
    cr_assert_eq(ftb_dataset_batch(d, 0, 2, 10, &b, err, sizeof err), 0);
    for (int i = 0; i < 10; i++) {
        cr_expect_eq(b.tokens[i], i % 50);
        cr_expect_eq(b.targets[i], (i + 1) % 50);
        cr_expect_eq(b.tokens[10 + i], (10 + i) % 50, "row 1 continues where row 0 ended");
    }
    cr_expect_neq(ftb_dataset_batch(d, 0, 1, 100, &b, err, sizeof err), 0);
    cr_expect(strstr(err, "holds 100 tokens") && strstr(err, p), "%s", err);
    ftb_dataset_close(d);
}

Test(datasets, int32_file_errors, .fini = cleanup)
{
    char err[512];
    int32_t ids[5] = { 1, 2, 3, 70, 4 };
    const char *p = write_tmp(".bin", ids, sizeof ids);
    cr_expect_null(ftb_dataset_open(p, 64, 0, err, sizeof err));
    cr_expect(strstr(err, p) && strstr(err, "token 3 (byte offset 12) is 70"), "%s", err);
    cleanup();
    p = write_tmp(".bin", ids, 7);
    cr_expect_null(ftb_dataset_open(p, 64, 0, err, sizeof err));
    cr_expect(strstr(err, "7 bytes is not a whole number of int32"), "%s", err);
    cr_expect_null(ftb_dataset_open("/nonexistent/tokens.bin", 64, 0, err, sizeof err));
    cr_expect(strstr(err, "/nonexistent/tokens.bin"), "%s", err);
    cr_expect_null(ftb_dataset_open("synthetic-lang:x", 64, 0, err, sizeof err));
    cr_expect(strstr(err, "synthetic-lang:x"), "%s", err);
}

Test(datasets, jsonl_labels_masks_and_padding, .fini = cleanup)
{
    const char *text = "{\"input_ids\": [1, 2, 3, 4, 5], \"labels\": [-100, -100, 3, 4, 5]}\n"
                       "\n"
                       "{\"input_ids\": [6, 7, 8], \"loss_mask\": [1, 0, 1]}\n"
                       "{\"input_ids\": [9, 10, 11, 12, 13, 14, 15, 16, 17]}\n";
    const char *p = write_tmp(".jsonl", text, strlen(text));
    char err[512];
    ftb_dataset *d = ftb_dataset_open(p, 64, 0, err, sizeof err);
    cr_assert(d, "%s", err);
    cr_expect_eq(ftb_dataset_size(d), 3);
    ftb_batch b;
    cr_assert_eq(ftb_dataset_batch(d, 0, 3, 6, &b, err, sizeof err), 0);
    const int I = FTB_IGNORE_INDEX, P = FTB_DATASET_PAD_ID;
    /* row 0: labels shifted; one pad */
    int t0[6] = { 1, 2, 3, 4, 5, P }, g0[6] = { I, 3, 4, 5, I, I };
    /* row 1: mask on position 1 hides target of position 0 */
    int t1[6] = { 6, 7, 8, P, P, P }, g1[6] = { I, 8, I, I, I, I };
    /* row 2: truncated to 6; target of the last position still known */
    int t2[6] = { 9, 10, 11, 12, 13, 14 }, g2[6] = { 10, 11, 12, 13, 14, 15 };
    for (int i = 0; i < 6; i++) {
        cr_expect_eq(b.tokens[i], t0[i], "row 0 token %d", i);
        cr_expect_eq(b.targets[i], g0[i], "row 0 target %d", i);
        cr_expect_eq(b.tokens[6 + i], t1[i], "row 1 token %d", i);
        cr_expect_eq(b.targets[6 + i], g1[i], "row 1 target %d", i);
        cr_expect_eq(b.tokens[12 + i], t2[i], "row 2 token %d", i);
        cr_expect_eq(b.targets[12 + i], g2[i], "row 2 target %d", i);
    }
    /* Cycles through the examples. */
    cr_assert_eq(ftb_dataset_batch(d, 1, 3, 6, &b, err, sizeof err), 0);
    cr_expect_eq(b.tokens[0], 1);
    ftb_dataset_close(d);
}

static void expect_jsonl_error(const char *text, const char *needle)
{
    const char *p = write_tmp(".jsonl", text, strlen(text));
    char err[512] = "";
    ftb_dataset *d = ftb_dataset_open(p, 64, 0, err, sizeof err);
    cr_expect_null(d, "accepted: %s", text);
    ftb_dataset_close(d);
    char want[600];
    snprintf(want, sizeof want, "%s%s", p, needle);
    cr_expect(strstr(err, want) != NULL, "error '%s' lacks '%s'", err, want);
    cleanup();
}

Test(datasets, jsonl_errors_name_file_and_line)
{
    const char *ok = "{\"input_ids\": [1, 2]}\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s%s{\"input_ids\": [1, 2,]}\n", ok, ok);
    expect_jsonl_error(buf, ":3: not valid JSON");
    snprintf(buf, sizeof buf, "%s{\"ids\": [1]}\n", ok);
    expect_jsonl_error(buf, ":2: missing \"input_ids\"");
    expect_jsonl_error("[1, 2, 3]\n", ":1: expected an object");
    expect_jsonl_error("{\"input_ids\": []}\n", ":1: \"input_ids\" is empty");
    expect_jsonl_error("{\"input_ids\": [1, \"two\"]}\n", ":1: input_ids[1] is not an integer");
    expect_jsonl_error("{\"input_ids\": [1, 99]}\n", ":1: input_ids[1] is 99, outside the vocabulary 0..63");
    expect_jsonl_error("{\"input_ids\": [1, 2], \"labels\": [1]}\n", ":1: \"labels\" has 1 entries");
    expect_jsonl_error("{\"input_ids\": [1, 2], \"labels\": [1, -5]}\n", ":1: labels[1] is -5");
    expect_jsonl_error("{\"input_ids\": [1, 2], \"loss_mask\": [1, 2]}\n", ":1: loss_mask[1] is 2");
    expect_jsonl_error("{\"input_ids\": [1], \"labels\": [1], \"loss_mask\": [1]}\n", ":1: give \"labels\" or");
    expect_jsonl_error("{\"input_ids\": 5}\n", ":1: \"input_ids\" is not an array");
    expect_jsonl_error("\n\n", ": no examples");
}
