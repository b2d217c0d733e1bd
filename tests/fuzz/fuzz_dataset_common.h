/*
 * fuzz_dataset_common.h — what the two dataset targets do with a file once
 * ftb_dataset_open took it: batches of several shapes, at several indices,
 * in and out of order, each checked against dataset.h (every token inside
 * the vocabulary, every target inside it or FTB_IGNORE_INDEX, the same
 * batch for the same index).
 */
#ifndef FTB_FUZZ_DATASET_COMMON_H
#define FTB_FUZZ_DATASET_COMMON_H

#include "dataset.h"

#include "fuzz_common.h"

/* The vocabulary the targets open files with (a real model's order). */
#define FZ_DS_VOCAB 50000

static inline void fz_ds_check_batch(const ftb_batch *b, int B, int T, int vocab)
{
    FZ_CHECK(b->B == B && b->T == T && b->tokens && b->targets, "batch %dx%d came back as %dx%d", B, T, b->B, b->T);
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        FZ_CHECK(b->tokens[i] >= 0 && b->tokens[i] < vocab, "token %lld is %d", (long long)i, b->tokens[i]);
        FZ_CHECK(b->targets[i] == FTB_IGNORE_INDEX || (b->targets[i] >= 0 && b->targets[i] < vocab),
                 "target %lld is %d", (long long)i, b->targets[i]);
    }
}

static inline void fz_ds_exercise(ftb_dataset *d, int vocab)
{
    static const int shapes[][2] = { { 1, 1 }, { 2, 3 }, { 1, 16 }, { 3, 7 }, { 1, 100 } };
    static const int64_t indices[] = { 0, 1, 2, 7, 1000003 };
    char err[512];
    (void)ftb_dataset_kind(d);
    FZ_CHECK(ftb_dataset_size(d) > 0, "an opened file with no examples or tokens");
    int64_t size = ftb_dataset_size(d);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], T = shapes[s][1];
        for (size_t k = 0; k < sizeof indices / sizeof indices[0]; k++) {
            ftb_batch b;
            err[0] = 0;
            if (ftb_dataset_batch(d, indices[k], B, T, &b, err, sizeof err) != 0) {
                fz_check_error(err, sizeof err, 0);
                /* Only a flat file shorter than one row may refuse. */
                FZ_CHECK(!strcmp(ftb_dataset_kind(d), "int32") && size < (int64_t)T + 1,
                         "batch %dx%d at %lld refused: %s", B, T, (long long)indices[k], err);
                continue;
            }
            fz_ds_check_batch(&b, B, T, vocab);
            int32_t first_tok = b.tokens[0], first_tgt = b.targets[0];
            ftb_batch again;
            FZ_CHECK(ftb_dataset_batch(d, indices[k], B, T, &again, err, sizeof err) == 0, "second call: %s", err);
            FZ_CHECK(again.tokens[0] == first_tok && again.targets[0] == first_tgt,
                     "batch %lld differs on a second call", (long long)indices[k]);
        }
    }
    ftb_batch b;
    for (int i = 0; i < 3; i++)
        if (ftb_dataset_next(d, 2, 4, &b, err, sizeof err) == 0) fz_ds_check_batch(&b, 2, 4, vocab);
}

/* Writes the input as name and opens it; returns 1 if accepted. */
static inline int fz_ds_run(const char *name, const uint8_t *data, size_t size)
{
    fz_scratch();
    char path[1024], err[512];
    fz_write(name, data, size);
    fz_path(path, sizeof path, name);
    err[0] = 0;
    ftb_dataset *d = ftb_dataset_open(path, FZ_DS_VOCAB, 42, err, sizeof err);
    if (!d) {
        fz_check_error(err, sizeof err, 0);
        return 0;
    }
    fz_ds_exercise(d, FZ_DS_VOCAB);
    ftb_dataset_close(d);
    return 1;
}

#endif
