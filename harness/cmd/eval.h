/*
 * eval.h — held-out evaluation of a model on a task: the mean loss on the
 * answer tokens and the exact-match accuracy of greedy answers.
 *
 * Greedy answers are decoded causally, token by token, through the core's
 * inference forward with the method's hooks attached (models/generate.c):
 * the model sees the prompt and what it generated so far, never the answer
 * it is scored on.  Teacher forcing (one forward of prompt + gold answer,
 * argmax at each answer position) gives the same exact-match verdict for a
 * causal model — the first wrong token is predicted from the same prefix
 * either way — at the cost of one forward instead of (answer length + 1);
 * tests/test_tasks.c checks the two agree.
 */
#ifndef FTB_HARNESS_EVAL_H
#define FTB_HARNESS_EVAL_H

#include "ftbench.h"
#include "tasks.h"
#include <jansson.h>

typedef enum { FTB_DECODE_GREEDY = 0, FTB_DECODE_TEACHER_FORCED } ftb_decode_mode;

/* "greedy" | "teacher-forced"; -1 if unknown. */
int ftb_decode_parse(const char *s);
const char *ftb_decode_name(ftb_decode_mode d);

typedef struct {
    int examples, correct;
    double accuracy; /* correct / examples                          */
    double loss;     /* mean cross-entropy per answer token (nats)   */
    int64_t answer_tokens;
    double seconds;
} ftb_eval_result;

/* Evaluates examples 0..n-1 of the task's eval split (at most the split's
 * size for a file).  show (optional):
 * the first show_n examples are printed there (prompt tail, gold, greedy).
 * 0, or -1 with err. */
int ftb_eval_task(ftb_model *m, const ftb_run_opts *o, ftb_task *t, int n, ftb_decode_mode decode, ftb_eval_result *r,
                  FILE *show, int show_n, char *err, size_t errlen);

/* {"task","metric":"exact_match","accuracy","loss","examples",
 *  "answer_tokens","decode","seconds"} */
json_t *ftb_eval_json(const ftb_eval_result *r, const ftb_task *t, ftb_decode_mode decode);

/* The `ftbench eval` command. */
int ftb_cmd_eval(int argc, char **argv);

#endif
