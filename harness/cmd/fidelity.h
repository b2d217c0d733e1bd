/*
 * fidelity.h — `ftbench fidelity`: how close a method's gradient (or
 * gradient estimate) is to the exact gradient of the same parameters.
 *
 * On one batch, after a few ordinary steps, the method's gradient g is
 * computed the way its step computes it (its `gradient` callback, or for a
 * method without one — every backprop plugin — forward_backward under the
 * run options the method set), then the exact gradient g* of the same
 * tensors by backprop with every activation kept.  Recorded: cos(g, g*),
 * ‖g − g*‖ / ‖g*‖, both norms, the same per tensor, and whether the
 * parameters were left bit-identical.  With an `against` method, g is also
 * compared with that method's gradient, tensors matched by name (gc, mebp
 * and mesp against lora).  docs/HARNESS.md describes the command.
 */
#ifndef FTB_HARNESS_FIDELITY_H
#define FTB_HARNESS_FIDELITY_H

#include "ftbench.h"
#include <jansson.h>

typedef struct {
    const char *path; /* plugin .so                              */
    const char *label;
    int n_opts;
    const char *const *opt_keys, *const *opt_values;
} ftb_fidelity_method;

typedef struct {
    ftb_config cfg;
    const char *model_name;
    const char *checkpoint; /* NULL: the zoo model built from cfg      */
    ftb_fidelity_method method;
    ftb_fidelity_method against; /* path NULL: none                     */
    int seq, batch, after_steps;
    uint64_t seed;
    float lr;
    ftb_attention_impl attention;
    ftb_loss_mode loss;
    const char *dataset;
    int threads;
} ftb_fidelity_spec;

/* Measures in this process (the command runs it in a child).  Returns the
 * result object (see docs/HARNESS.md, "Gradient fidelity"), or NULL with
 * err. */
json_t *ftb_fidelity_measure(const ftb_fidelity_spec *f, char *err, size_t errlen);

/* Prints the readable table of a result. */
void ftb_fidelity_print(FILE *out, const json_t *result);

#endif
