/* adamw.c — AdamW (decoupled weight decay), moments in FTB_MEM_OPTIM; or,
 * when the host selected FTB_OPTIM_SGD before init, plain SGD with no state
 * (m and v NULL).  No decay on tensors flagged no_decay (biases and norms). */
#include "ftbench.h"
#include "op_time.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ftb_optimizer selected = FTB_OPTIM_ADAMW;

void ftb_optimizer_select(ftb_optimizer o) { selected = o == FTB_OPTIM_SGD ? FTB_OPTIM_SGD : FTB_OPTIM_ADAMW; }
ftb_optimizer ftb_optimizer_selected(void) { return selected; }
const char *ftb_optimizer_name(ftb_optimizer o) { return o == FTB_OPTIM_SGD ? "sgd" : "adamw"; }

int ftb_optimizer_parse(const char *s)
{
    if (!strcmp(s, "adamw")) return FTB_OPTIM_ADAMW;
    if (!strcmp(s, "sgd")) return FTB_OPTIM_SGD;
    return -1;
}

int ftb_adamw_init(ftb_adamw *opt, ftb_model *m, ftb_tensor **params, int n, float lr, float weight_decay, char *err,
                   size_t errlen)
{
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
    const int sgd = selected == FTB_OPTIM_SGD;
    opt->params = calloc((size_t)n + 1, sizeof *opt->params);
    if (!sgd) {
        opt->m = calloc((size_t)n + 1, sizeof *opt->m);
        opt->v = calloc((size_t)n + 1, sizeof *opt->v);
    }
    if (!opt->params || (!sgd && (!opt->m || !opt->v))) goto oom;
    if (params)
        memcpy(opt->params, params, sizeof *params * (size_t)n);
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
        if (sgd) continue; /* SGD keeps no state */
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

/* θ ← θ − lr·(g + wd·θ): one rounding for lr·g when wd = 0, so that
 * θ − lr·g is exact to fp32 (tested). */
static void sgd_step(ftb_adamw *opt)
{
    for (int i = 0; i < opt->n; i++) {
        ftb_tensor *p = opt->params[i];
        float *w = p->data, *g = p->grad;
        const float wd = p->no_decay ? 0.0f : opt->weight_decay, lr = opt->lr;
        if (wd == 0.0f) {
#pragma omp parallel for simd schedule(static)
            for (int64_t j = 0; j < p->numel; j++) w[j] -= lr * g[j];
        } else {
#pragma omp parallel for simd schedule(static)
            for (int64_t j = 0; j < p->numel; j++) w[j] -= lr * (g[j] + wd * w[j]);
        }
    }
}

static void adamw_step(ftb_adamw *opt);

void ftb_adamw_step(ftb_adamw *opt)
{
    double numel = 0;
    for (int i = 0; i < opt->n; i++) numel += (double)opt->params[i]->numel;
    ftb_op_timer t = ftb_op_begin();
    opt->t++;
    if (!opt->m) {
        sgd_step(opt);
        /* w and g read, w written; two flops a value */
        ftb_op_end(FTB_OP_OPTIMIZER, t, 2 * numel, 12 * numel);
        return;
    }
    adamw_step(opt);
    /* w, g, m, v read, w, m, v written; about twelve flops a value */
    ftb_op_end(FTB_OP_OPTIMIZER, t, 12 * numel, 28 * numel);
}

static void adamw_step(ftb_adamw *opt)
{
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

void ftb_adamw_free(ftb_adamw *opt)
{
    for (int i = 0; opt->m && opt->v && i < opt->n; i++) {
        ftb_free(opt->m[i]);
        ftb_free(opt->v[i]);
    }
    free(opt->params);
    free(opt->m);
    free(opt->v);
    memset(opt, 0, sizeof *opt);
}
