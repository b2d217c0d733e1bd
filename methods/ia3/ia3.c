/* ia3 — IA3 (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is
 * Better and Cheaper than In-Context Learning"): learned vectors that rescale
 * the keys, the values and the MLP intermediate, element by element; the
 * base model frozen, the vectors initialised to one (the model unchanged).
 *
 * Each vector is a hook on a linear layer's output, y = l ⊙ (x·Wᵀ + b):
 * k_proj and v_proj as in the paper, and up_proj for the MLP intermediate —
 * scaling h = silu(g) ⊙ u by l is scaling u by l, so a hook on up_proj's
 * output is exactly the paper's (and PEFT's) scaling of down_proj's input.
 *
 * What it keeps for backward, per hooked linear: the base output
 * y_base [N, out] (dl = Σ_rows dy ⊙ y_base needs it, as in PEFT, where
 * autograd saves the unscaled output of the product).  It needs no input x:
 * a frozen linear whose hook does not ask for x keeps none.
 * Backward:  dl += Σ_rows dy ⊙ y_base,  then dy := l ⊙ dy in place (the
 * gradient of the base output, which the core's frozen backward turns
 * into dx = dy·W). */
#include "ftbench_kit.h"
#include "ftbench_method.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    ftb_adapter hook; /* first: the core hands this pointer back */
    ftb_tensor scale; /* l [out] */
    int out, layer;
    ftb_linear_kind kind;
} ia3_adapter;

typedef struct {
    ia3_adapter *adapters;
    int n_adapters;
    ftb_tensor **params;
    ftb_adamw *opt;
    ftb_model *model;
} ia3_state;

static void ia3_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    (void)x;
    ia3_adapter *a = (ia3_adapter *)self;
    const int64_t N = (int64_t)c->B * c->T, out = a->out;
    const float *l = a->scale.data;
    if (saved) {
        float *y_base = ftb_alloc(FTB_MEM_SAVED, sizeof(float) * (size_t)(N * out));
        if (!y_base) return; /* the core sees the failure (docs/CORE.md) */
        memcpy(y_base, y, sizeof(float) * (size_t)(N * out));
        *saved = y_base;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < out; j++) y[i * out + j] *= l[j];
}

static void ia3_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
    (void)x;
    (void)dx; /* the hook adds nothing to dx itself: the rescaled dy carries it */
    ia3_adapter *a = (ia3_adapter *)self;
    const int64_t N = (int64_t)c->B * c->T, out = a->out;
    const float *y_base = saved, *l = a->scale.data;
    float *dl = a->scale.grad;
    /* Rows in order, one thread: the sum is reproducible run to run. */
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < out; j++) dl[j] += dy[i * out + j] * y_base[i * out + j];
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < out; j++) dy[i * out + j] *= l[j];
    ftb_free(saved);
}

static void ia3_release(ftb_adapter *self, void *saved)
{
    (void)self;
    ftb_free(saved);
}

static const ftb_adapter_ops ia3_ops = { FTB_ADAPTER_OPS_VERSION, ia3_forward, ia3_backward, ia3_release };

static const ftb_option_doc ia3_options[] = {
    { "targets", "k,v,up",
      "linear outputs to rescale (comma-separated, or 'all' / 'attn' / 'mlp'); "
      "up = the MLP intermediate" },
    { "weight_decay", "0.0", "AdamW weight decay" },
    { NULL, NULL, NULL },
};

static void ia3_destroy(void *state);

static void *ia3_init(ftb_session *s, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    double wd = ftb_opt_double(s->options, "weight_decay", 0.0, err, errlen);
    if (err[0]) return NULL;
    int mask = ftb_parse_linear_targets(ftb_opt_str(s->options, "targets", "k,v,up"), err, errlen);
    if (mask < 0) return NULL;
    ia3_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "ia3: out of memory");
        return NULL;
    }
    const int L = ftb_model_config(m)->n_layers, per_layer = __builtin_popcount((unsigned)mask);
    st->model = m;
    st->adapters = calloc((size_t)L * per_layer, sizeof *st->adapters);
    st->params = calloc((size_t)L * per_layer, sizeof *st->params);
    if (!st->adapters || !st->params) {
        snprintf(err, errlen, "ia3: out of memory");
        ia3_destroy(st);
        return NULL;
    }
    ftb_model_set_trainable(m, 0);
    for (int l = 0; l < L; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            if (!(mask & (1 << k))) continue;
            ia3_adapter *a = &st->adapters[st->n_adapters++];
            ftb_tensor *t = &a->scale;
            a->out = (int)ftb_model_linear(m, l, (ftb_linear_kind)k)->shape[0];
            snprintf(t->name, sizeof t->name, "model.layers.%d.%s.ia3_l", l, ftb_linear_name(k));
            t->ndim = 1;
            t->shape[0] = a->out;
            t->numel = a->out;
            t->trainable = 1;
            t->no_decay = 0;
            t->data = ftb_alloc(FTB_MEM_TRAINABLE, sizeof(float) * (size_t)a->out);
            t->grad = ftb_calloc(FTB_MEM_GRADS, sizeof(float) * (size_t)a->out);
            st->params[st->n_adapters - 1] = t;
            if (!t->data || !t->grad) {
                snprintf(err, errlen, "ia3: out of memory for '%s'", t->name);
                ia3_destroy(st);
                return NULL;
            }
            for (int j = 0; j < a->out; j++) t->data[j] = 1.0f; /* identity: training starts from the base model */
            a->layer = l;
            a->kind = (ftb_linear_kind)k;
            a->hook.ops = &ia3_ops;
            a->hook.needs_input = 0;
            a->hook.state = a;
            ftb_attach_adapter(m, l, (ftb_linear_kind)k, &a->hook);
        }
    if (!(st->opt = ftb_adamw_create(m, st->params, st->n_adapters, s->lr, (float)wd, err, errlen))) {
        ia3_destroy(st);
        return NULL;
    }
    return st;
}

static int ia3_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    ia3_state *st = state;
    return ftb_backprop_step(s, st->opt, b, out, err, errlen);
}

static int ia3_trainable(void *state, ftb_tensor ***tensors)
{
    ia3_state *st = state;
    *tensors = st->params;
    return st->n_adapters;
}

static void ia3_destroy(void *state)
{
    ia3_state *st = state;
    if (!st) return;
    for (int i = 0; i < st->n_adapters; i++)
        ftb_attach_adapter(st->model, st->adapters[i].layer, st->adapters[i].kind, NULL);
    ftb_adamw_destroy(st->opt);
    for (int i = 0; i < st->n_adapters; i++) {
        ftb_free(st->adapters[i].scale.data);
        ftb_free(st->adapters[i].scale.grad);
    }
    free(st->adapters);
    free(st->params);
    free(st);
}

/* Analytic memory (docs/methods/ia3.md): the core's schedule, plus the base
 * output y_base [N, out] each hooked linear saves for dl — on a built model
 * the hooks that are ia3's, on a plan every placeholder. */
static int64_t adapter_bytes(const ftb_adapter *a, ftb_model *m, int layer, ftb_linear_kind kind, int B, int T,
                             void *planned)
{
    if (!planned && a->ops != &ia3_ops) return 0;
    return (int64_t)sizeof(float) * B * T * ftb_model_linear(m, layer, kind)->shape[0];
}

static int ia3_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out)
{
    ia3_state *st = state;
    return ftb_kit_estimate_hooked(st->model, &s->run, B, T, adapter_bytes, NULL, out);
}

/* Shape-only (`ftbench plan`): a vector l [out] per target with its
 * gradient and optimizer state, hooks that keep no input. */
static int ia3_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err, size_t errlen)
{
    (void)ftb_opt_double(o, "weight_decay", 0.0, err, errlen);
    if (err[0]) return -1;
    int mask = ftb_parse_linear_targets(ftb_opt_str(o, "targets", "k,v,up"), err, errlen);
    if (mask < 0) return -1;
    ftb_model *m = ftb_plan_model(p);
    ftb_model_set_trainable(m, 0);
    int64_t floats = 0;
    for (int l = 0; l < ftb_model_config(m)->n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            if (mask & (1 << k)) floats += ftb_model_linear(m, l, (ftb_linear_kind)k)->shape[0];
    ftb_plan_add_state(p, FTB_MEM_TRAINABLE, (int64_t)sizeof(float) * floats);
    ftb_plan_add_state(p, FTB_MEM_GRADS, (int64_t)sizeof(float) * floats);
    ftb_plan_add_state(p, FTB_MEM_OPTIM, ftb_optimizer_state_bytes(floats));
    return ftb_kit_plan_hooked(p, mask, 0, B, T, 1, adapter_bytes, p, out, err, errlen);
}

static const ftb_method ia3_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "ia3",
    .summary = "IA3: learned scaling of keys, values and the MLP intermediate, base frozen",
    .options = ia3_options,
    .init = ia3_init,
    .step = ia3_step,
    .trainable = ia3_trainable,
    .destroy = ia3_destroy,
    .memory_model = ia3_memory_model,
    .memory_plan = ia3_plan,
};

const ftb_method *ftbench_method(void) { return &ia3_method; }
