/*
 * dataset.h — where training batches come from.  Every source is seeded and
 * deterministic: the same (spec, seed, B, T) gives the same batches.
 *
 * Specs:
 *   uniform                 uniform random token ids (memory/speed runs)
 *   synthetic-lang[:N]      a seeded sparse Markov chain over N active
 *                           tokens (default 256) spread over the vocabulary:
 *                           real, learnable structure, so loss curves fall
 *   PATH.jsonl / PATH.json  JSON Lines, one example per line:
 *                           {"input_ids": [...], "labels": [...]} or
 *                           {"input_ids": [...], "loss_mask": [0/1 ...]}
 *   task:SPEC               the training split of a task (datasets/tasks.h),
 *                           loss on the answer tokens only
 *   any other PATH          flat little-endian int32 token ids, no header
 *
 * A batch row holds T tokens and T targets; target[i] is the token at i+1
 * (FTB_IGNORE_INDEX where there is none, where a label is -100, where the
 * loss mask is 0, and on padding).
 */
#ifndef FTB_DATASET_H
#define FTB_DATASET_H

#include "ftbench.h"

typedef struct ftb_dataset ftb_dataset;

/* Opens (and for files, fully validates) a source.  NULL with err naming
 * the file and line (or token index) on failure. */
ftb_dataset *ftb_dataset_open(const char *spec, int vocab_size, uint64_t seed, char *err, size_t errlen);
/* Fills the next batch into buffers the dataset owns (valid until the next
 * call or close).  0, or -1 with err filled. */
int ftb_dataset_next(ftb_dataset *d, int B, int T, ftb_batch *out, char *err, size_t errlen);
/* Batch number i, independent of call order (the next() stream is
 * batch(0), batch(1), ...). */
int ftb_dataset_batch(ftb_dataset *d, int64_t index, int B, int T, ftb_batch *out, char *err, size_t errlen);
/* "uniform", "synthetic-lang", "jsonl", "int32", "task". */
const char *ftb_dataset_kind(const ftb_dataset *d);
/* Examples (jsonl) or tokens (int32) in a file; 0 for synthetic sources. */
int64_t ftb_dataset_size(const ftb_dataset *d);
void ftb_dataset_close(ftb_dataset *d);

/* The Markov chain behind synthetic-lang, exposed for tests: the entropy
 * rate in nats per token (the loss a perfect model reaches). */
double ftb_dataset_entropy_rate(const ftb_dataset *d);

/* Pad id used for JSON Lines rows shorter than T. */
#define FTB_DATASET_PAD_ID 0

#endif
