/* lastk — the tutorial method (docs/PLUGINS.md): train only the last k
 * blocks and the final norm, everything below frozen.  The core sees that
 * no block below L−k trains and runs those in inference mode, keeping none
 * of their activations: memory falls with k. */
#include "ftbench_method.h"

#include <stdlib.h>

typedef struct {
    ftb_adamw *opt;
} lastk_state;

static const ftb_option_doc lastk_options[] = {
    { "k", "2", "number of final blocks to train" },
    { NULL, NULL, NULL },
};

/* Marks the last k blocks and the final norm trainable: what init does,
 * and what the shape-only plan marks on its descriptors. */
static int mark_trainable(ftb_model *m, const ftb_options *o, char *err, size_t errlen)
{
    const int L = ftb_model_config(m)->n_layers;
    long k = ftb_opt_int(o, "k", 2, err, errlen);
    if (err[0]) return -1;
    if (k < 1 || k > L) {
        snprintf(err, errlen, "option k: %ld is not in 1..%d (the model's blocks)", k, L);
        return -1;
    }
    ftb_model_set_trainable(m, 0);
    /* A block's tensors follow the embedding in params[], 9 to 12 per block
     * depending on biases: select them by their layer index instead. */
    ftb_tensor **params;
    int n = ftb_model_params(m, &params);
    for (int i = 0; i < n; i++) {
        int layer;
        if (sscanf(params[i]->name, "model.layers.%d.", &layer) == 1 && layer >= L - k) params[i]->trainable = 1;
    }
    ftb_model_part_tensor(m, FTB_TENSOR_FINAL_NORM)->trainable = 1;
    return 0;
}

static void *lastk_init(ftb_session *s, char *err, size_t errlen)
{
    if (mark_trainable(s->model, s->options, err, errlen)) return NULL;
    lastk_state *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    if (ftb_model_alloc_grads(s->model, err, errlen) ||
        !(st->opt = ftb_adamw_create(s->model, NULL, 0, s->lr, 0.0f, err, errlen))) {
        free(st);
        return NULL;
    }
    return st;
}

static int lastk_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    lastk_state *st = state;
    return ftb_backprop_step(s, st->opt, b, out, err, errlen);
}

static int lastk_trainable(void *state, ftb_tensor ***tensors)
{
    lastk_state *st = state;
    return ftb_adamw_params(st->opt, tensors);
}

static void lastk_destroy(void *state)
{
    lastk_state *st = state;
    if (!st) return;
    ftb_adamw_destroy(st->opt);
    free(st);
}

/* Shape-only (`ftbench plan`): the same tensors marked, with gradients and
 * optimizer state, no hook. */
static int lastk_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err,
                      size_t errlen)
{
    if (mark_trainable(ftb_plan_model(p), o, err, errlen)) return -1;
    ftb_plan_base_state(p, 1, 1);
    ftb_plan_estimate(p, B, T, 1, NULL, out);
    return 0;
}

static const ftb_method lastk_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "lastk",
    .summary = "train only the last k blocks (tutorial plugin)",
    .options = lastk_options,
    .init = lastk_init,
    .step = lastk_step,
    .trainable = lastk_trainable,
    .destroy = lastk_destroy,
    .memory_plan = lastk_plan,
};

const ftb_method *ftbench_method(void) { return &lastk_method; }
