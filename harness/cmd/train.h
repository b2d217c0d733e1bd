/*
 * train.h — `ftbench train`: fine-tuning on a task, with accuracy measured
 * beside memory.  A training run is a cell (harness/cell.h) whose data is
 * the task's training split (dataset "task:SPEC") and whose child also
 * evaluates the model — with the method's hooks attached, in the same
 * process — at step 0, every --eval-every steps and after the last step
 * (the cell's between-steps hook, registered by ftb_train_eval_attach).
 * The cell's record then carries, besides everything a memory record has:
 *   "train": {"task", "eval_every", "eval_examples", "decode"}
 *   "eval":  the last evaluation (task, metric "exact_match", accuracy,
 *            loss, examples, step, train_seconds, ...; eval.h)
 *   "eval_history": every evaluation, in step order.
 */
#ifndef FTB_HARNESS_TRAIN_H
#define FTB_HARNESS_TRAIN_H

#include "cell.h"
#include "eval.h"

/* What a training cell's child evaluates (typed; the record's "train"
 * object describes the same settings). */
typedef struct {
    const char *task_spec; /* --task                                          */
    int eval_every;        /* 0: at step 0 and after the last step only       */
    int eval_examples;     /* held-out examples per evaluation                */
    ftb_decode_mode decode;
    uint64_t seed;  /* the cell's (set by attach)                      */
    ftb_task *task; /* the child's, opened at its first evaluation     */
} ftb_train_eval;

/* Registers t as the cell's between-steps hook (cell.h): the child
 * evaluates the model with the method's hooks attached at step 0, every
 * eval_every steps and after the last step, writing "eval" and
 * "eval_history" into the record.  t must outlive ftb_cell_run. */
void ftb_train_eval_attach(ftb_train_eval *t, ftb_cell *c);

#endif
