/*
 * nonfinite.h — where a step went non-finite.  A NaN or infinite loss, or a
 * method that fails without a message, is described by what the harness
 * can see after the step: which trainable tensor's gradient or values hold
 * a non-finite number, how many, and the first one.  Run only after a
 * failure and once after the last step, outside the measured time.
 */
#ifndef FTB_HARNESS_NONFINITE_H
#define FTB_HARNESS_NONFINITE_H

#include "ftbench.h"

/* The trainable tensors are the method's (m->trainable) when it names
 * them, else the model's trainable parameters.  Fills `out` with e.g.
 * "the gradient of model.layers.0.q_proj.lora_B.weight has 12 of 4096
 * values non-finite (first [3] = inf); parameter ... has ..." and returns
 * 1; returns 0 (out = "") when every value and gradient is finite. */
int ftb_nonfinite_find(const ftb_method *m, void *state, const ftb_model *model, char *out, size_t n);

/* "nan", "inf" or "-inf" (or the number) — for messages. */
const char *ftb_nonfinite_name(double x, char *buf, size_t n);

#endif
