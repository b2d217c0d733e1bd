/*
 * train.h — `ftbench train`: fine-tuning on a task, with accuracy measured
 * beside memory.  A training run is a cell (harness/cell.h) whose data is
 * the task's training split (dataset "task:SPEC") and whose child also
 * evaluates the model — with the method's hooks attached, in the same
 * process — at step 0, every --eval-every steps and after the last step.
 * The cell's record then carries, besides everything a memory record has:
 *   "train": {"task", "eval_every", "eval_examples", "decode"}
 *   "eval":  the last evaluation (task, metric "exact_match", accuracy,
 *            loss, examples, step, train_seconds, ...; eval.h)
 *   "eval_history": every evaluation, in step order.
 */
#ifndef FTB_HARNESS_TRAIN_H
#define FTB_HARNESS_TRAIN_H

#include "cell.h"

/* In the cell child, after step `step` of `total` (0: before the first):
 * evaluates if the cell is a training cell (c->extra holds "train") and an
 * evaluation is due, writing "eval" and "eval_history" into out.
 * train_seconds: wall time of the steps so far.  0 (also when nothing was
 * due), or -1 with err. */
int ftb_train_cell_eval(const ftb_cell *c, ftb_model *m, const ftb_run_opts *run, int step, int total,
                        double train_seconds, json_t *out, char *err, size_t errlen);

#endif
