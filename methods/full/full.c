/* full — full fine-tuning: every weight trainable, AdamW.  The reference
 * every memory-saving method is measured against. */
#include "ftbench.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    ftb_adamw opt;
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
        ftb_adamw_init(&st->opt, s->model, NULL, 0, s->lr, (float)wd, err, errlen)) {
        free(st);
        return NULL;
    }
    return st;
}

static int full_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    full_state *st = state;
    return ftb_backprop_step(s, &st->opt, b, out, err, errlen);
}

static int full_trainable(void *state, ftb_tensor ***tensors)
{
    full_state *st = state;
    *tensors = st->opt.params;
    return st->opt.n;
}

static void full_destroy(void *state)
{
    full_state *st = state;
    if (!st) return;
    ftb_adamw_free(&st->opt);
    free(st);
}

static const ftb_method full_method = {
    FTB_ABI_VERSION, "full",       "full fine-tuning: all weights trainable, AdamW", full_options, full_init, full_step,
    full_trainable,  full_destroy,
};

const ftb_method *ftbench_method(void) { return &full_method; }
