/* lora — LoRA (Hu et al., 2021): on each targeted linear, y = x·W0ᵀ + s·(x·Aᵀ)·Bᵀ
 * with A [r, in], B [out, r], s = alpha / r; the base W0 frozen.
 *
 * What it keeps for backward, per adapted linear: its input x [N, in]
 * (dA = dhᵀ·x needs it; the core keeps one copy per block input, shared by
 * q/k/v and by gate/up) and h = x·Aᵀ [N, r] (dB = s·dyᵀ·h needs it).
 * Backward:  dB += s·dyᵀ·h,  dh = s·dy·B,  dA += dhᵀ·x,  dx += dh·A.
 * Initialisation as in PEFT: A ~ U(±1/√in), B = 0. */
#include "ftbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ftb_adapter hook; /* first: the core hands this pointer back */
    ftb_tensor A, B;
    float scale;
    int in, out, r;
} lora_adapter;

typedef struct {
    lora_adapter *adapters;
    int n_adapters;
    ftb_tensor **params;
    ftb_adamw opt;
    ftb_model *model;
} lora_state;

static void lora_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved) {
    lora_adapter *a = (lora_adapter *)self;
    const int N = c->B * c->T;
    float *h = ftb_alloc(saved ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    if (!h) return; /* the core sees the failure (docs/CORE.md) */
    ftb_gemm(0, 1, N, a->r, a->in, 1.0f, x, a->in, a->A.data, a->in, 0.0f, h, a->r);
    ftb_gemm(0, 1, N, a->out, a->r, a->scale, h, a->r, a->B.data, a->r, 1.0f, y, a->out);
    if (saved) *saved = h;
    else ftb_free(h);
}

static void lora_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx,
                          void *saved) {
    lora_adapter *a = (lora_adapter *)self;
    const int N = c->B * c->T;
    const float *h = saved;
    float *dh = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    if (!dh) { /* the core sees the failure (docs/CORE.md) */
        ftb_free(saved);
        return;
    }
    ftb_gemm(1, 0, a->out, a->r, N, a->scale, dy, a->out, h, a->r, 1.0f, a->B.grad, a->r);
    ftb_gemm(0, 0, N, a->r, a->out, a->scale, dy, a->out, a->B.data, a->r, 0.0f, dh, a->r);
    ftb_gemm(1, 0, a->r, a->in, N, 1.0f, dh, a->r, x, a->in, 1.0f, a->A.grad, a->in);
    ftb_gemm(0, 0, N, a->in, a->r, 1.0f, dh, a->r, a->A.data, a->in, 1.0f, dx, a->in);
    ftb_free(dh);
    ftb_free(saved);
}

static void lora_release(ftb_adapter *self, void *saved) {
    (void)self;
    ftb_free(saved);
}

static const ftb_adapter_ops lora_ops = {lora_forward, lora_backward, lora_release};

static const ftb_option_doc lora_options[] = {
    {"rank", "8", "rank r of A and B"},
    {"alpha", "16", "scale s = alpha / rank"},
    {"targets", "q,k,v,o,gate,up,down", "linear layers to adapt (comma-separated, or 'all' / 'attn' / 'mlp')"},
    {"weight_decay", "0.0", "AdamW weight decay"},
    {NULL, NULL, NULL},
};

static void lora_destroy(void *state);

static void *lora_init(ftb_session *s, char *err, size_t errlen) {
    ftb_model *m = s->model;
    long rank = ftb_opt_int(s->options, "rank", 8, err, errlen);
    double alpha = ftb_opt_double(s->options, "alpha", 16.0, err, errlen);
    double wd = ftb_opt_double(s->options, "weight_decay", 0.0, err, errlen);
    if (err[0]) return NULL;
    int mask = ftb_parse_linear_targets(ftb_opt_str(s->options, "targets", "q,k,v,o,gate,up,down"), err, errlen);
    if (mask < 0) return NULL;
    if (rank < 1 || rank > 4096) {
        snprintf(err, errlen, "option rank: %ld is not in 1..4096", rank);
        return NULL;
    }
    lora_state *st = calloc(1, sizeof *st);
    int per_layer = __builtin_popcount((unsigned)mask);
    st->adapters = calloc((size_t)m->cfg.n_layers * per_layer, sizeof *st->adapters);
    st->params = calloc((size_t)m->cfg.n_layers * per_layer * 2, sizeof *st->params);
    st->model = m;
    ftb_model_set_trainable(m, 0);
    ftb_rng rng;
    ftb_rng_seed(&rng, s->seed ^ 0x6c6f7261ULL);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            if (!(mask & (1 << k))) continue;
            lora_adapter *a = &st->adapters[st->n_adapters++];
            ftb_tensor *W = ftb_layer_weight(&m->layers[l], k);
            a->out = (int)W->shape[0];
            a->in = (int)W->shape[1];
            a->r = (int)rank;
            a->scale = (float)(alpha / rank);
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d.%s.lora_A.weight", l, ftb_linear_name(k));
            if (ftb_tensor_alloc(&a->A, name, rank, a->in, FTB_MEM_TRAINABLE, 1, err, errlen)) goto fail;
            snprintf(name, sizeof name, "model.layers.%d.%s.lora_B.weight", l, ftb_linear_name(k));
            if (ftb_tensor_alloc(&a->B, name, a->out, rank, FTB_MEM_TRAINABLE, 1, err, errlen)) goto fail;
            float bound = 1.0f / sqrtf((float)a->in);
            for (int64_t i = 0; i < a->A.numel; i++) a->A.data[i] = bound * (2.0f * ftb_rng_uniform(&rng) - 1.0f);
            a->hook.ops = &lora_ops;
            a->hook.needs_input = 1;
            a->hook.state = a;
            st->params[2 * (st->n_adapters - 1)] = &a->A;
            st->params[2 * (st->n_adapters - 1) + 1] = &a->B;
            ftb_attach_adapter(m, l, k, &a->hook);
        }
    if (ftb_adamw_init(&st->opt, m, st->params, 2 * st->n_adapters, s->lr, (float)wd, err, errlen)) goto fail;
    return st;
fail:
    lora_destroy(st);
    return NULL;
}

static int lora_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err,
                     size_t errlen) {
    lora_state *st = state;
    return ftb_backprop_step(s, &st->opt, b, out, err, errlen);
}

static int lora_trainable(void *state, ftb_tensor ***tensors) {
    lora_state *st = state;
    *tensors = st->params;
    return 2 * st->n_adapters;
}

static void lora_destroy(void *state) {
    lora_state *st = state;
    if (!st) return;
    for (int l = 0; l < st->model->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) ftb_attach_adapter(st->model, l, k, NULL);
    ftb_adamw_free(&st->opt);
    for (int i = 0; i < st->n_adapters; i++) {
        ftb_free(st->adapters[i].A.data); ftb_free(st->adapters[i].A.grad);
        ftb_free(st->adapters[i].B.data); ftb_free(st->adapters[i].B.grad);
    }
    free(st->adapters);
    free(st->params);
    free(st);
}

/* Analytic memory (docs/methods/lora.md): the core's schedule, plus the
 * h = x·Aᵀ [N, r] each adapter saves for its backward. */
static int lora_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out) {
    lora_state *st = state;
    const ftb_model *m = st->model;
    int64_t *hook = calloc((size_t)m->cfg.n_layers * FTB_LIN_COUNT, sizeof *hook);
    if (!hook) return -1;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            const ftb_adapter *a = m->layers[l].adapter[k];
            if (a && a->ops == &lora_ops)
                hook[l * FTB_LIN_COUNT + k] = (int64_t)sizeof(float) * B * T * ((const lora_adapter *)a->state)->r;
        }
    ftb_memory_estimate_step(m, &s->run, B, T, 1, hook, out);
    free(hook);
    return 0;
}

static const ftb_method lora_method = {
    FTB_ABI_VERSION, "lora", "LoRA: low-rank A·B on chosen linear layers, base frozen", lora_options,
    lora_init,       lora_step, lora_trainable, lora_destroy, .memory_model = lora_memory_model,
};

const ftb_method *ftbench_method(void) { return &lora_method; }
