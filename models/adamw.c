/* adamw.c — AdamW (decoupled weight decay), moments in FTB_MEM_OPTIM.
 * No decay on tensors flagged no_decay (biases and norms). */
#include "ftbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int ftb_adamw_init(ftb_adamw *opt, ftb_model *m, ftb_tensor **params, int n, float lr, float weight_decay,
                   char *err, size_t errlen) {
    memset(opt, 0, sizeof *opt);
    opt->lr = lr;
    opt->beta1 = 0.9f;
    opt->beta2 = 0.999f;
    opt->eps = 1e-8f;
    opt->weight_decay = weight_decay;
    if (!params) { /* every trainable tensor of the model with a gradient */
        n = 0;
        for (int i = 0; i < m->n_params; i++) n += m->params[i]->trainable && m->params[i]->grad;
    }
    opt->params = calloc((size_t)n + 1, sizeof *opt->params);
    opt->m = calloc((size_t)n + 1, sizeof *opt->m);
    opt->v = calloc((size_t)n + 1, sizeof *opt->v);
    if (!opt->params || !opt->m || !opt->v) goto oom;
    if (params) memcpy(opt->params, params, sizeof *params * (size_t)n);
    else
        for (int i = 0, j = 0; i < m->n_params; i++)
            if (m->params[i]->trainable && m->params[i]->grad) opt->params[j++] = m->params[i];
    /* opt->n counts tensors as they are filled, so that a failure frees
     * exactly what was allocated. */
    for (int i = 0; i < n; i++) {
        opt->n = i + 1;
        if (!opt->params[i]->grad) {
            snprintf(err, errlen, "adamw: tensor '%s' has no gradient", opt->params[i]->name);
            ftb_adamw_free(opt);
            return -1;
        }
        size_t bytes = sizeof(float) * (size_t)opt->params[i]->numel;
        opt->m[i] = ftb_calloc(FTB_MEM_OPTIM, bytes);
        opt->v[i] = ftb_calloc(FTB_MEM_OPTIM, bytes);
        if (!opt->m[i] || !opt->v[i]) goto oom;
    }
    return 0;
oom:
    snprintf(err, errlen, "adamw: out of memory for optimizer state");
    ftb_adamw_free(opt);
    return -1;
}

void ftb_adamw_step(ftb_adamw *opt) {
    opt->t++;
    const float b1 = opt->beta1, b2 = opt->beta2;
    const float c1 = 1.0f - powf(b1, (float)opt->t), c2 = 1.0f - powf(b2, (float)opt->t);
    for (int i = 0; i < opt->n; i++) {
        ftb_tensor *p = opt->params[i];
        float *w = p->data, *g = p->grad, *m = opt->m[i], *v = opt->v[i];
        const float wd = p->no_decay ? 0.0f : opt->weight_decay, lr = opt->lr, eps = opt->eps;
#pragma omp parallel for simd schedule(static)
        for (int64_t j = 0; j < p->numel; j++) {
            m[j] = b1 * m[j] + (1.0f - b1) * g[j];
            v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
            float mhat = m[j] / c1, vhat = v[j] / c2;
            w[j] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w[j]);
        }
    }
}

void ftb_adamw_free(ftb_adamw *opt) {
    for (int i = 0; i < opt->n; i++) {
        ftb_free(opt->m[i]);
        ftb_free(opt->v[i]);
    }
    free(opt->params);
    free(opt->m);
    free(opt->v);
    memset(opt, 0, sizeof *opt);
}
