/* lora.c (kit) — the LoRA adapter set-up that lora, mesp, mezo (params=lora)
 * and prge share: one loop, one initialisation stream, so the four start
 * from the same A for a seed and save the same tensor names. */
#include "ftbench_kit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int ftb_kit_lora_count(const ftb_model *m, int targets)
{
    return ftb_model_config(m)->n_layers * __builtin_popcount((unsigned)targets);
}

int ftb_kit_lora_options(const ftb_options *o, const char *default_targets, long *rank, double *alpha, int *targets,
                         char *err, size_t errlen)
{
    *rank = ftb_opt_int(o, "rank", 8, err, errlen);
    *alpha = ftb_opt_double(o, "alpha", 16.0, err, errlen);
    if (err[0]) return -1;
    *targets = ftb_parse_linear_targets(ftb_opt_str(o, "targets", default_targets), err, errlen);
    if (*targets < 0) return -1;
    if (*rank < 1 || *rank > 4096) {
        snprintf(err, errlen, "option rank: %ld is not in 1..4096", *rank);
        return -1;
    }
    return 0;
}

int64_t ftb_kit_lora_floats(ftb_model *m, int targets, long rank)
{
    int64_t floats = 0;
    for (int l = 0; l < ftb_model_config(m)->n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            if (!(targets & (1 << k))) continue;
            const ftb_tensor *W = ftb_model_linear(m, l, (ftb_linear_kind)k);
            floats += rank * (W->shape[0] + W->shape[1]);
        }
    return floats;
}

/* A factor rows × cols as the mode holds it. */
static int factor_alloc(ftb_tensor *t, const char *name, int64_t rows, int64_t cols, int is_A, ftb_kit_lora_mode mode,
                        char *err, size_t errlen)
{
    if (mode == FTB_KIT_LORA_BACKPROP) return ftb_tensor_alloc(t, name, rows, cols, FTB_MEM_TRAINABLE, 1, err, errlen);
    const int frozen = mode == FTB_KIT_LORA_FROZEN_A && is_A;
    if (ftb_tensor_alloc(t, name, rows, cols, frozen ? FTB_MEM_WEIGHTS : FTB_MEM_TRAINABLE, 0, err, errlen)) return -1;
    t->trainable = !frozen; /* trained by estimates: no gradient buffer */
    return 0;
}

int ftb_kit_lora_attach_all(ftb_model *m, int targets, long rank, double alpha, uint64_t seed, ftb_kit_lora_mode mode,
                            const ftb_adapter_ops *ops, int needs_input, ftb_kit_lora_set *set, char *err,
                            size_t errlen)
{
    set->n = 0;
    ftb_rng rng;
    ftb_rng_seed(&rng, seed ^ FTB_KIT_LORA_SEED_SALT);
    for (int l = 0; l < ftb_model_config(m)->n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            if (!(targets & (1 << k))) continue;
            ftb_kit_lora *a = ftb_kit_lora_at(set, set->n++);
            const ftb_tensor *W = ftb_model_linear(m, l, (ftb_linear_kind)k);
            a->out = (int)W->shape[0];
            a->in = (int)W->shape[1];
            a->r = (int)rank;
            a->scale = (float)(alpha / rank);
            a->layer = l;
            a->kind = (ftb_linear_kind)k;
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d.%s.lora_A.weight", l, ftb_linear_name((ftb_linear_kind)k));
            if (factor_alloc(&a->A, name, rank, a->in, 1, mode, err, errlen)) return -1;
            snprintf(name, sizeof name, "model.layers.%d.%s.lora_B.weight", l, ftb_linear_name((ftb_linear_kind)k));
            if (factor_alloc(&a->B, name, a->out, rank, 0, mode, err, errlen)) return -1;
            const float bound = 1.0f / sqrtf((float)a->in);
            for (int64_t i = 0; i < a->A.numel; i++) a->A.data[i] = bound * (2.0f * ftb_rng_uniform(&rng) - 1.0f);
            a->hook.ops = ops;
            a->hook.needs_input = needs_input;
            a->hook.state = a;
            ftb_attach_adapter(m, l, (ftb_linear_kind)k, &a->hook);
        }
    return 0;
}

void ftb_kit_lora_release(ftb_model *m, ftb_kit_lora_set *set)
{
    for (int i = 0; set->base && i < set->n; i++) {
        ftb_kit_lora *a = ftb_kit_lora_at(set, i);
        if (ftb_model_adapter(m, a->layer, a->kind) == &a->hook) ftb_attach_adapter(m, a->layer, a->kind, NULL);
        ftb_tensor_release(&a->A);
        ftb_tensor_release(&a->B);
    }
    set->n = 0;
}

void ftb_kit_lora_down(const ftb_kit_lora *a, int N, const float *x, const float *A, float *h)
{
    ftb_gemm(0, 1, N, a->r, a->in, 1.0f, x, a->in, A, a->in, 0.0f, h, a->r);
}

void ftb_kit_lora_up(const ftb_kit_lora *a, int N, const float *h, const float *B, float *y)
{
    ftb_gemm(0, 1, N, a->out, a->r, a->scale, h, a->r, B, a->r, 1.0f, y, a->out);
}

void ftb_kit_lora_backward(const ftb_kit_lora *a, int N, const float *x, const float *h, const float *dy, float *dh,
                           float *dx)
{
    if (h && a->B.grad) ftb_gemm(1, 0, a->out, a->r, N, a->scale, dy, a->out, h, a->r, 1.0f, a->B.grad, a->r);
    ftb_gemm(0, 0, N, a->r, a->out, a->scale, dy, a->out, a->B.data, a->r, 0.0f, dh, a->r);
    if (x && a->A.grad) ftb_gemm(1, 0, a->r, a->in, N, 1.0f, dh, a->r, x, a->in, 1.0f, a->A.grad, a->in);
    if (dx) ftb_gemm(0, 0, N, a->in, a->r, 1.0f, dh, a->r, a->A.data, a->in, 1.0f, dx, a->in);
}

void ftb_kit_lora_backward_recomputed(const ftb_kit_lora *a, int N, const float *x, const float *dy, float *dx)
{
    float *dh = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    float *h = x ? ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r) : NULL;
    if (dh && (h || !x)) {
        if (h) ftb_kit_lora_down(a, N, x, a->A.data, h);
        ftb_kit_lora_backward(a, N, x, h, dy, dh, dx);
    }
    ftb_free(h);
    ftb_free(dh);
}

int ftb_kit_lora_trained_init(ftb_kit_lora_trained *t, ftb_session *s, size_t stride, int targets, long rank,
                              double alpha, double weight_decay, const ftb_adapter_ops *ops, int needs_input, char *err,
                              size_t errlen)
{
    ftb_model *m = s->model;
    const int n = ftb_kit_lora_count(m, targets);
    *t = (ftb_kit_lora_trained){
        m, { calloc((size_t)n, stride), stride, 0 }, calloc((size_t)n * 2, sizeof *t->params), NULL
    };
    if (!t->set.base || !t->params) {
        snprintf(err, errlen, "out of memory for %d LoRA adapters", n);
        return -1;
    }
    ftb_model_set_trainable(m, 0);
    if (ftb_kit_lora_attach_all(m, targets, rank, alpha, s->seed, FTB_KIT_LORA_BACKPROP, ops, needs_input, &t->set, err,
                                errlen))
        return -1;
    for (int i = 0; i < n; i++) {
        t->params[2 * i] = &ftb_kit_lora_at(&t->set, i)->A;
        t->params[2 * i + 1] = &ftb_kit_lora_at(&t->set, i)->B;
    }
    t->opt = ftb_adamw_create(m, t->params, 2 * n, s->lr, (float)weight_decay, err, errlen);
    return t->opt ? 0 : -1;
}

void ftb_kit_lora_trained_free(ftb_kit_lora_trained *t)
{
    ftb_adamw_destroy(t->opt);
    ftb_kit_lora_release(t->model, &t->set);
    free(t->set.base);
    free(t->params);
    t->opt = NULL;
    t->set.base = NULL;
    t->params = NULL;
}

int ftb_kit_lora_trained_params(const ftb_kit_lora_trained *t, ftb_tensor ***tensors)
{
    *tensors = t->params;
    return 2 * t->set.n;
}

void ftb_kit_lora_trained_plan(ftb_plan *p, int targets, long rank)
{
    ftb_model *m = ftb_plan_model(p);
    ftb_model_set_trainable(m, 0);
    const int64_t floats = ftb_kit_lora_floats(m, targets, rank);
    ftb_plan_add_state(p, FTB_MEM_TRAINABLE, (int64_t)sizeof(float) * floats);
    ftb_plan_add_state(p, FTB_MEM_GRADS, (int64_t)sizeof(float) * floats);
    ftb_plan_add_state(p, FTB_MEM_OPTIM, ftb_optimizer_state_bytes(floats));
}
