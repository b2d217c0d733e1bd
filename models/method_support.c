/* method_support.c — pieces every method plugin would otherwise write
 * again: parsing which linear layers to adapt, method-owned tensors, the
 * backprop step (zero gradients, forward and backward, the optimizer) and
 * whether the base is mapped. */
#include "ftbench.h"

#include <string.h>

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
