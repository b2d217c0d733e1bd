/* method_support.c — the core's side of the method ABI
 * (include/ftbench_method.h): the accessors through which plugins see the
 * opaque model and optimizer, and pieces every method plugin would
 * otherwise write again: parsing which linear layers to adapt,
 * method-owned tensors, the backprop step (zero gradients, forward and
 * backward, the optimizer) and whether the base is mapped. */
#include "ftbench.h"

#include <stdlib.h>
#include <string.h>

/* ---- the model, seen from a plugin ---------------------------------------- */

const ftb_config *ftb_model_config(const ftb_model *m) { return &m->cfg; }

ftb_tensor *ftb_model_linear(ftb_model *m, int layer, ftb_linear_kind k)
{
    if (layer < 0 || layer >= m->cfg.n_layers || (unsigned)k >= FTB_LIN_COUNT) return NULL;
    return ftb_layer_weight(&m->layers[layer], k);
}

ftb_adapter *ftb_model_adapter(const ftb_model *m, int layer, ftb_linear_kind k)
{
    if (layer < 0 || layer >= m->cfg.n_layers || (unsigned)k >= FTB_LIN_COUNT) return NULL;
    return m->layers[layer].adapter[k];
}

int ftb_model_params(ftb_model *m, ftb_tensor ***params)
{
    *params = m->params;
    return m->n_params;
}

ftb_tensor *ftb_model_part_tensor(ftb_model *m, ftb_model_part part)
{
    switch (part) {
    case FTB_TENSOR_EMBED: return &m->embed;
    case FTB_TENSOR_FINAL_NORM: return &m->final_norm;
    case FTB_TENSOR_LM_HEAD: return &m->lm_head;
    }
    return NULL;
}

ftb_residency ftb_model_residency(const ftb_model *m) { return (ftb_residency)m->residency; }

/* ---- the optimizer, seen from a plugin ------------------------------------ */

ftb_adamw *ftb_adamw_create(ftb_model *m, ftb_tensor **params, int n, float lr, float weight_decay, char *err,
                            size_t errlen)
{
    ftb_adamw *opt = calloc(1, sizeof *opt);
    if (!opt) {
        snprintf(err, errlen, "out of memory for the optimizer");
        return NULL;
    }
    if (ftb_adamw_init(opt, m, params, n, lr, weight_decay, err, errlen)) {
        ftb_adamw_destroy(opt);
        return NULL;
    }
    return opt;
}

void ftb_adamw_destroy(ftb_adamw *opt)
{
    if (!opt) return;
    ftb_adamw_free(opt);
    free(opt);
}

int ftb_adamw_params(const ftb_adamw *opt, ftb_tensor ***params)
{
    *params = opt ? opt->params : NULL;
    return opt ? opt->n : 0;
}

int64_t ftb_optimizer_state_bytes(int64_t floats)
{
    return ftb_optimizer_selected() == FTB_OPTIM_SGD ? 0 : 2 * (int64_t)sizeof(float) * floats;
}

int ftb_parse_linear_targets(const char *spec, char *err, size_t errlen)
{
    if (strcmp(spec, "all") == 0) return (1 << FTB_LIN_COUNT) - 1;
    if (strcmp(spec, "attn") == 0) return (1 << FTB_LIN_Q) | (1 << FTB_LIN_K) | (1 << FTB_LIN_V) | (1 << FTB_LIN_O);
    if (strcmp(spec, "mlp") == 0) return (1 << FTB_LIN_GATE) | (1 << FTB_LIN_UP) | (1 << FTB_LIN_DOWN);
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", spec) >= (int)sizeof buf) {
        snprintf(err, errlen, "option targets: list too long");
        return -1;
    }
    int mask = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int k = ftb_linear_parse(tok);
        if (k < 0) {
            snprintf(err, errlen, "option targets: unknown linear layer '%s' (q,k,v,o,gate,up,down)", tok);
            return -1;
        }
        mask |= 1 << k;
    }
    if (!mask) {
        snprintf(err, errlen, "option targets: no layer given");
        return -1;
    }
    return mask;
}

int ftb_tensor_alloc(ftb_tensor *t, const char *name, int64_t rows, int64_t cols, ftb_mem_category cat, int with_grad,
                     char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = cols > 0 ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols > 0 ? cols : 0;
    t->numel = rows * (cols > 0 ? cols : 1);
    t->trainable = with_grad;
    t->writable = 1;
    t->data = ftb_calloc(cat, sizeof(float) * (size_t)t->numel);
    if (with_grad) t->grad = ftb_calloc(FTB_MEM_GRADS, sizeof(float) * (size_t)t->numel);
    if (!t->data || (with_grad && !t->grad)) {
        snprintf(err, errlen, "out of memory for '%s' (%lld floats)", name, (long long)t->numel);
        ftb_tensor_release(t);
        return -1;
    }
    return 0;
}

void ftb_tensor_release(ftb_tensor *t)
{
    ftb_free(t->data);
    ftb_free(t->grad);
    t->data = t->grad = NULL;
}

int ftb_backprop_step(ftb_session *s, ftb_adamw *opt, const ftb_batch *b, ftb_step_result *out, char *err,
                      size_t errlen)
{
    for (int i = 0; i < opt->n; i++) memset(opt->params[i]->grad, 0, sizeof(float) * (size_t)opt->params[i]->numel);
    out->loss = ftb_model_forward_backward(s->model, b, &s->run, err, errlen);
    if (out->loss != out->loss) return -1; /* NaN: err says why */
    ftb_last_run_times(&out->t_forward, &out->t_backward);
    double t0 = ftb_phase("optim");
    ftb_adamw_step(opt);
    out->t_optim = ftb_now() - t0;
    out->forward_passes = 1;
    return 0;
}

int64_t ftb_model_mapped_bytes(const ftb_model *m)
{
    int64_t bytes = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->mapped) bytes += ftb_tensor_storage_bytes(m->params[i]);
    return bytes;
}
