/* lastk — the tutorial method (docs/PLUGINS.md): train only the last k
 * blocks and the final norm, everything below frozen.  The core sees that
 * no block below L−k trains and runs those in inference mode, keeping none
 * of their activations: memory falls with k. */
#include "ftbench.h"

#include <stdlib.h>

typedef struct {
    ftb_adamw opt;
} lastk_state;

static const ftb_option_doc lastk_options[] = {
    { "k", "2", "number of final blocks to train" },
    { NULL, NULL, NULL },
};

static void *lastk_init(ftb_session *s, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    long k = ftb_opt_int(s->options, "k", 2, err, errlen);
    if (err[0]) return NULL;
    if (k < 1 || k > m->cfg.n_layers) {
        snprintf(err, errlen, "option k: %ld is not in 1..%d (the model's blocks)", k, m->cfg.n_layers);
        return NULL;
    }
    lastk_state *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    ftb_model_set_trainable(m, 0);
    /* A block's tensors follow the embedding in params[], 9 to 12 per block
     * depending on biases: select them by their layer index instead. */
    for (int i = 0; i < m->n_params; i++) {
        int layer;
        ftb_tensor *t = m->params[i];
        if (sscanf(t->name, "model.layers.%d.", &layer) == 1 && layer >= m->cfg.n_layers - k) t->trainable = 1;
    }
    m->final_norm.trainable = 1;
    if (ftb_model_alloc_grads(m, err, errlen) || ftb_adamw_init(&st->opt, m, NULL, 0, s->lr, 0.0f, err, errlen)) {
        free(st);
        return NULL;
    }
    return st;
}

static int lastk_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    lastk_state *st = state;
    return ftb_backprop_step(s, &st->opt, b, out, err, errlen);
}

static int lastk_trainable(void *state, ftb_tensor ***tensors)
{
    lastk_state *st = state;
    *tensors = st->opt.params;
    return st->opt.n;
}

static void lastk_destroy(void *state)
{
    lastk_state *st = state;
    if (!st) return;
    ftb_adamw_free(&st->opt);
    free(st);
}

static const ftb_method lastk_method = {
    FTB_ABI_VERSION, "lastk",       "train only the last k blocks (tutorial plugin)",
    lastk_options,   lastk_init,    lastk_step,
    lastk_trainable, lastk_destroy,
};

const ftb_method *ftbench_method(void) { return &lastk_method; }
