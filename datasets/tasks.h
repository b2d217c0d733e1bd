/*
 * tasks.h — supervised tasks: a prompt, an answer, and loss on the answer
 * tokens only.  Every example is generated from (seed, split, index), so a
 * task is reproducible at any size and any length without files.
 *
 * Specs (options after ':' as key=value, comma separated):
 *   reasoning[:steps=2,digits=1]
 *       multi-step arithmetic, evaluated left to right with explicit
 *       parentheses: "Compute ((3+4)*2)-5 =" -> " 9\n"  (steps operations,
 *       operands of 1..digits digits)
 *   understanding[:labels=4,words=24]
 *       classify a passage by topic: words of one topic outnumber those of
 *       the others among neutral filler -> " science\n"  (2..4 labels)
 *   passkey[:len=512,depth=0.5,digits=5]      (alias long-context)
 *       needle in a haystack: a pass key at relative depth `depth` (0 = at
 *       the start of the filler, 1 = at its end; `depth=random` draws one per
 *       example) of a `len`-token example -> " 48213\n"
 *   PATH.jsonl | jsonl:PATH
 *       instruction data: {"prompt": "...", "answer": "..."} lines
 *       (tokenized here) or {"input_ids": [...], "loss_mask": [0/1...]}
 *       (pre-tokenized; the answer is the masked-in span)
 * Every answer ends with the tokens of "\n", which greedy decoding stops at.
 * Text is tokenized with the task's tokenizer (tokenizer.h): the byte
 * tokenizer by default, or the tokenizer.json named after an '@' at the end
 * of the spec ("reasoning@/models/qwen/tokenizer.json").
 *
 * Splits: FTB_SPLIT_TRAIN and FTB_SPLIT_EVAL draw from disjoint random
 * streams; a JSON Lines file is split by line: every `eval_every`-th line
 * (default 10) is held out for evaluation.
 */
#ifndef FTB_TASKS_H
#define FTB_TASKS_H

#include "ftbench.h"
#include "tokenizer.h"

typedef struct ftb_task ftb_task;

typedef enum { FTB_SPLIT_TRAIN = 0, FTB_SPLIT_EVAL = 1 } ftb_split;

/* One example: tokens [n_prompt + n_answer], prompt first.  The buffer
 * belongs to the task and stays valid until the next call on it. */
typedef struct {
    const int32_t *tokens;
    int n_prompt, n_answer;
    int needle_pos; /* passkey: token index where the needle starts; else -1 */
} ftb_example;

/* tok: NULL = the byte tokenizer (the task then owns one).  The tokenizer
 * must outlive the task.  NULL with err on a bad spec or file. */
ftb_task *ftb_task_open(const char *spec, const ftb_tokenizer *tok, uint64_t seed, char *err, size_t errlen);
void ftb_task_close(ftb_task *t);
/* "reasoning", "understanding", "passkey", "jsonl". */
const char *ftb_task_kind(const ftb_task *t);
/* The spec it was opened with (options included). */
const char *ftb_task_spec(const ftb_task *t);
/* Examples available in a split: -1 = unlimited (generated tasks). */
int64_t ftb_task_count(const ftb_task *t, ftb_split split);
/* An upper bound on the tokens of any example (prompt + answer) of either
 * split: from the options for generated tasks (a byte bound, which also
 * bounds any BPE), the longest example for a file. */
int ftb_task_max_tokens(const ftb_task *t);
/* Largest token id any example can hold + 1 (256 for byte-tokenized text). */
int ftb_task_vocab_needed(const ftb_task *t);
/* The token ids of "\n": every answer ends with them. */
int ftb_task_stop(const ftb_task *t, const int32_t **ids);
const ftb_tokenizer *ftb_task_tokenizer(const ftb_task *t);

/* Example `index` of a split (cycling through a file's examples). */
int ftb_task_example(ftb_task *t, ftb_split split, int64_t index, ftb_example *out, char *err, size_t errlen);

/* A training batch: row r holds example index·B + r, right-padded with
 * FTB_DATASET_PAD_ID-like pad id 0 (targets FTB_IGNORE_INDEX); targets are
 * the next token where it is an answer token, FTB_IGNORE_INDEX elsewhere.
 * all_tokens: targets on every real token instead (language-model loss on
 * the whole text, used to pretrain on the tasks' format).  An example
 * longer than T is an error naming it.  tokens/targets: [B*T]. */
int ftb_task_batch(ftb_task *t, ftb_split split, int64_t index, int B, int T, int all_tokens, int32_t *tokens,
                   int32_t *targets, char *err, size_t errlen);

/* ---- the generators (one file each) --------------------------------------- */

/* Text appended to a growing buffer. */
typedef struct {
    char *s;
    size_t n, cap;
} ftb_text;
void ftb_text_clear(ftb_text *x);
void ftb_text_printf(ftb_text *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ftb_text_free(ftb_text *x);

/* splitmix64 stream for the generators. */
uint64_t ftb_task_rand(uint64_t *state);
uint64_t ftb_task_below(uint64_t *state, uint64_t n);

typedef struct {
    int steps, digits;
} ftb_reasoning_opts;
/* Writes prompt and answer (with its "\n"); returns the answer's value. */
long ftb_reasoning_generate(const ftb_reasoning_opts *o, uint64_t *rng, ftb_text *prompt, ftb_text *answer);

typedef struct {
    int labels, words;
} ftb_understanding_opts;
/* Returns the label index; the passage has exactly one majority topic. */
int ftb_understanding_generate(const ftb_understanding_opts *o, uint64_t *rng, ftb_text *prompt, ftb_text *answer);
const char *ftb_understanding_label(int i);

typedef struct {
    int len;      /* tokens of the whole example                        */
    double depth; /* 0..1, or < 0: random per example                   */
    int digits;
} ftb_passkey_opts;
/* Builds the example directly as tokens (lengths are in tokens, whatever the
 * tokenizer): ids, n, cap as in ftb_tokenizer_encode; n_prompt and the
 * needle's token index out; returns the key, or -1 with err. */
long ftb_passkey_generate(const ftb_passkey_opts *o, const ftb_tokenizer *tok, uint64_t *rng, int32_t **ids, int *n,
                          int *cap, int *n_prompt, int *needle_pos, char *err, size_t errlen);

/* Instruction data from JSON Lines (task_jsonl.c). */
typedef struct ftb_instr ftb_instr;
/* Every holdout-th line (1-based: lines holdout, 2·holdout, ...) goes to the
 * eval split; holdout 0 = none held out (eval = train).  NULL with err
 * "PATH:LINE: problem" on the first bad line. */
ftb_instr *ftb_instr_load(const char *path, const ftb_tokenizer *tok, int holdout, char *err, size_t errlen);
void ftb_instr_free(ftb_instr *d);
int64_t ftb_instr_count(const ftb_instr *d, ftb_split split);
int ftb_instr_vocab_needed(const ftb_instr *d);
int ftb_instr_max_tokens(const ftb_instr *d);
/* Example i of a split: tokens [n_prompt + n_answer], owned by d. */
void ftb_instr_get(const ftb_instr *d, ftb_split split, int64_t i, const int32_t **tokens, int *n_prompt,
                   int *n_answer);

#endif
