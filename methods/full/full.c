/* full — full fine-tuning: every weight trainable, AdamW.  The reference
 * every memory-saving method is measured against. */
#include "ftbench_method.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    ftb_adamw *opt;
} full_state;

static const ftb_option_doc full_options[] = {
    { "weight_decay", "0.0", "AdamW weight decay (not applied to biases and norms)" },
    { NULL, NULL, NULL },
};

static void *full_init(ftb_session *s, char *err, size_t errlen)
{
    double wd = ftb_opt_double(s->options, "weight_decay", 0.0, err, errlen);
    if (err[0]) return NULL;
    full_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "full: out of memory");
        return NULL;
    }
    ftb_model_set_trainable(s->model, 1);
    if (ftb_model_alloc_grads(s->model, err, errlen) ||
        !(st->opt = ftb_adamw_create(s->model, NULL, 0, s->lr, (float)wd, err, errlen))) {
        free(st);
        return NULL;
    }
    return st;
}

static int full_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    full_state *st = state;
    return ftb_backprop_step(s, st->opt, b, out, err, errlen);
}

static int full_trainable(void *state, ftb_tensor ***tensors)
{
    full_state *st = state;
    return ftb_adamw_params(st->opt, tensors);
}

static void full_destroy(void *state)
{
    full_state *st = state;
    if (!st) return;
    ftb_adamw_destroy(st->opt);
    free(st);
}

/* Shape-only: every weight trained (fp32, gradients, optimizer state), no
 * hook — the core's training step. */
static int full_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err,
                     size_t errlen)
{
    (void)ftb_opt_double(o, "weight_decay", 0.0, err, errlen);
    if (err[0]) return -1;
    ftb_model_set_trainable(ftb_plan_model(p), 1);
    ftb_plan_base_state(p, 1, 1);
    ftb_plan_estimate(p, B, T, 1, NULL, out);
    return 0;
}

static const ftb_method full_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "full",
    .summary = "full fine-tuning: all weights trainable, AdamW",
    .options = full_options,
    .init = full_init,
    .step = full_step,
    .trainable = full_trainable,
    .destroy = full_destroy,
    .memory_plan = full_plan,
};

const ftb_method *ftbench_method(void) { return &full_method; }
