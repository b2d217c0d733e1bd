/* lora — LoRA (Hu et al., 2021): on each targeted linear, y = x·W0ᵀ + s·(x·Aᵀ)·Bᵀ
 * with A [r, in], B [out, r], s = alpha / r; the base W0 frozen.
 *
 * What it keeps for backward, per adapted linear: its input x [N, in]
 * (dA = dhᵀ·x needs it; the core keeps one copy per block input, shared by
 * q/k/v and by gate/up) and h = x·Aᵀ [N, r] (dB = s·dyᵀ·h needs it).
 * Backward:  dB += s·dyᵀ·h,  dh = s·dy·B,  dA += dhᵀ·x,  dx += dh·A.
 * Initialisation as in PEFT: A ~ U(±1/√in), B = 0.
 *
 * Option dropout p > 0 is PEFT's lora_dropout: y = x·W0ᵀ + s·(drop(x)·Aᵀ)·Bᵀ
 * with drop(x) = x ⊙ mask/(1 − p) while training (inference: no dropout).
 * PyTorch's autograd then keeps, per adapter, its own dropped-out input
 * [N, in] (lora_A's input) and dropout's mask (one byte per element), and
 * nothing keeps the undropped x for the adapter (the frozen base linear
 * needs none).  This hook keeps the same: h, x_drop and the mask; it no
 * longer asks the core for x (needs_input = 0).  Backward:
 *   dB += s·dyᵀ·h,  dh = s·dy·B,  dA += dhᵀ·x_drop,  dx += (dh·A) ⊙ mask/(1 − p).
 * Masks are drawn from (seed, step, layer, linear, row), so a block that is
 * recomputed in backward draws the same mask again. */
#include "ftbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* What every hook reads from the method: the dropout rate and the step
 * counter that makes each step's masks new. */
typedef struct {
    float dropout;
    uint64_t seed;
    uint64_t step;
} lora_shared;

typedef struct {
    ftb_adapter hook; /* first: the core hands this pointer back */
    ftb_tensor A, B;
    float scale;
    int in, out, r;
    int layer, kind;
    const lora_shared *shared;
} lora_adapter;

typedef struct {
    lora_shared shared;
    lora_adapter *adapters;
    int n_adapters;
    ftb_tensor **params;
    ftb_adamw opt;
    ftb_model *model;
} lora_state;

static void lora_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    lora_adapter *a = (lora_adapter *)self;
    const int N = c->B * c->T;
    float *h = ftb_alloc(saved ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    if (!h) return; /* the core sees the failure (docs/CORE.md) */
    ftb_gemm(0, 1, N, a->r, a->in, 1.0f, x, a->in, a->A.data, a->in, 0.0f, h, a->r);
    ftb_gemm(0, 1, N, a->out, a->r, a->scale, h, a->r, a->B.data, a->r, 1.0f, y, a->out);
    if (saved)
        *saved = h;
    else
        ftb_free(h);
}

static void lora_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
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

/* ---- dropout (PEFT's lora_dropout) ---------------------------------------- */

/* What a dropout adapter keeps per call, in one block: h [N, r] and
 * x_drop [N, in] as floats, then mask [N, in] as bytes (PyTorch's bool). */
static size_t dropout_saved_bytes(int N, int in, int r)
{
    return sizeof(float) * (size_t)N * ((size_t)r + in) + (size_t)N * in;
}

#define MASK_CHUNK_ROWS 256 /* rows of the [rows, in] temporary of backward */

/* mask and x_drop = x ⊙ mask/(1 − p) of rows 0..N−1; each row's mask from
 * its own seed, so threads and recomputation draw the same bits. */
static void dropout_rows(const lora_adapter *a, int N, const float *x, float *xd, uint8_t *mask)
{
    const float p = a->shared->dropout, keep_scale = 1.0f / (1.0f - p);
    uint64_t base = a->shared->seed ^ 0x6c6f7261ULL; /* "lora" */
    base = base * 0x9e3779b97f4a7c15ULL + a->shared->step;
    base = base * 0x9e3779b97f4a7c15ULL + (uint64_t)a->layer * FTB_LIN_COUNT + (uint64_t)a->kind;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        ftb_rng rng;
        ftb_rng_seed(&rng, base * 0x9e3779b97f4a7c15ULL + (uint64_t)i);
        for (int j = 0; j < a->in; j++) {
            const size_t k = (size_t)i * a->in + j;
            mask[k] = ftb_rng_uniform(&rng) >= p;
            xd[k] = mask[k] ? x[k] * keep_scale : 0.0f;
        }
    }
}

static void lora_dropout_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    lora_adapter *a = (lora_adapter *)self;
    if (!c->training) { /* inference: PEFT's dropout is the identity in eval mode */
        lora_forward(self, c, x, y, NULL);
        return;
    }
    const int N = c->B * c->T;
    /* the first forward of a recomputed block (saved NULL) keeps nothing */
    unsigned char *buf = ftb_alloc(saved ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, dropout_saved_bytes(N, a->in, a->r));
    if (!buf) return; /* the core saw the failure and ends the run (docs/PLUGINS.md) */
    float *h = (float *)buf, *xd = h + (size_t)N * a->r;
    uint8_t *mask = (uint8_t *)(xd + (size_t)N * a->in);
    dropout_rows(a, N, x, xd, mask);
    ftb_gemm(0, 1, N, a->r, a->in, 1.0f, xd, a->in, a->A.data, a->in, 0.0f, h, a->r);
    ftb_gemm(0, 1, N, a->out, a->r, a->scale, h, a->r, a->B.data, a->r, 1.0f, y, a->out);
    if (saved)
        *saved = buf;
    else
        ftb_free(buf);
}

static void lora_dropout_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx,
                                  void *saved)
{
    (void)x; /* NULL: the hook keeps x_drop itself */
    lora_adapter *a = (lora_adapter *)self;
    const int N = c->B * c->T, in = a->in;
    const float *h = saved, *xd = h + (size_t)N * a->r;
    const uint8_t *mask = (const uint8_t *)(xd + (size_t)N * in);
    const float keep_scale = 1.0f / (1.0f - a->shared->dropout);
    float *dh = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    const int R = N < MASK_CHUNK_ROWS ? N : MASK_CHUNK_ROWS;
    float *dxd = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)R * in);
    if (!dh || !dxd) { /* the core saw the failure and ends the run */
        ftb_free(dh);
        ftb_free(dxd);
        ftb_free(saved);
        return;
    }
    ftb_gemm(1, 0, a->out, a->r, N, a->scale, dy, a->out, h, a->r, 1.0f, a->B.grad, a->r);
    ftb_gemm(0, 0, N, a->r, a->out, a->scale, dy, a->out, a->B.data, a->r, 0.0f, dh, a->r);
    ftb_gemm(1, 0, a->r, in, N, 1.0f, dh, a->r, xd, in, 1.0f, a->A.grad, in);
    for (int r0 = 0; r0 < N; r0 += R) { /* dx += (dh·A) ⊙ mask/(1 − p), R rows at a time */
        const int n = N - r0 < R ? N - r0 : R;
        ftb_gemm(0, 0, n, in, a->r, 1.0f, dh + (size_t)r0 * a->r, a->r, a->A.data, in, 0.0f, dxd, in);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < in; j++) {
                const size_t k = (size_t)(r0 + i) * in + j;
                if (mask[k]) dx[k] += dxd[(size_t)i * in + j] * keep_scale;
            }
    }
    ftb_free(dxd);
    ftb_free(dh);
    ftb_free(saved);
}

static void lora_release(ftb_adapter *self, void *saved)
{
    (void)self;
    ftb_free(saved);
}

static const ftb_adapter_ops lora_ops = { lora_forward, lora_backward, lora_release };
static const ftb_adapter_ops lora_dropout_ops = { lora_dropout_forward, lora_dropout_backward, lora_release };

static const ftb_option_doc lora_options[] = {
    { "rank", "8", "rank r of A and B" },
    { "alpha", "16", "scale s = alpha / rank" },
    { "targets", "q,k,v,o,gate,up,down", "linear layers to adapt (comma-separated, or 'all' / 'attn' / 'mlp')" },
    { "weight_decay", "0.0", "AdamW weight decay" },
    { "dropout", "0",
      "PEFT's lora_dropout on each adapter's input while training, in [0, 1); > 0 keeps a "
      "dropped-out copy of the input and its mask per adapter" },
    { NULL, NULL, NULL },
};

static void lora_destroy(void *state);

static void *lora_init(ftb_session *s, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    long rank = ftb_opt_int(s->options, "rank", 8, err, errlen);
    double alpha = ftb_opt_double(s->options, "alpha", 16.0, err, errlen);
    double wd = ftb_opt_double(s->options, "weight_decay", 0.0, err, errlen);
    double dropout = ftb_opt_double(s->options, "dropout", 0.0, err, errlen);
    if (err[0]) return NULL;
    if (!(dropout >= 0.0 && dropout < 1.0)) {
        snprintf(err, errlen, "option dropout: %g is not in [0, 1)", dropout);
        return NULL;
    }
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
    st->shared.dropout = (float)dropout;
    st->shared.seed = s->seed;
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
            a->layer = l;
            a->kind = k;
            a->shared = &st->shared;
            a->hook.ops = dropout > 0.0 ? &lora_dropout_ops : &lora_ops;
            a->hook.needs_input = dropout == 0.0; /* with dropout it keeps x_drop instead */
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

static int lora_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    lora_state *st = state;
    st->shared.step++; /* fresh dropout masks */
    return ftb_backprop_step(s, &st->opt, b, out, err, errlen);
}

static int lora_trainable(void *state, ftb_tensor ***tensors)
{
    lora_state *st = state;
    *tensors = st->params;
    return 2 * st->n_adapters;
}

static void lora_destroy(void *state)
{
    lora_state *st = state;
    if (!st) return;
    for (int l = 0; l < st->model->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) ftb_attach_adapter(st->model, l, k, NULL);
    ftb_adamw_free(&st->opt);
    for (int i = 0; i < st->n_adapters; i++) {
        ftb_free(st->adapters[i].A.data);
        ftb_free(st->adapters[i].A.grad);
        ftb_free(st->adapters[i].B.data);
        ftb_free(st->adapters[i].B.grad);
    }
    free(st->adapters);
    free(st->params);
    free(st);
}

/* Analytic memory (docs/methods/lora.md): the core's schedule, plus what
 * each adapter saves for its backward: h = x·Aᵀ [N, r], and with dropout its
 * dropped-out input and mask too. */
static int lora_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out)
{
    lora_state *st = state;
    const ftb_model *m = st->model;
    int64_t *hook = calloc((size_t)m->cfg.n_layers * FTB_LIN_COUNT, sizeof *hook);
    if (!hook) return -1;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            const ftb_adapter *a = m->layers[l].adapter[k];
            const lora_adapter *la = a ? a->state : NULL;
            if (a && a->ops == &lora_ops)
                hook[l * FTB_LIN_COUNT + k] = (int64_t)sizeof(float) * B * T * la->r;
            else if (a && a->ops == &lora_dropout_ops)
                hook[l * FTB_LIN_COUNT + k] = (int64_t)dropout_saved_bytes(B * T, la->in, la->r);
        }
    ftb_memory_estimate_step(m, &s->run, B, T, 1, hook, out);
    free(hook);
    return 0;
}

static const ftb_method lora_method = {
    FTB_ABI_VERSION, "lora",       "LoRA: low-rank A·B on chosen linear layers, base frozen",
    lora_options,    lora_init,    lora_step,
    lora_trainable,  lora_destroy, .memory_model = lora_memory_model,
};

const ftb_method *ftbench_method(void) { return &lora_method; }
