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
#include "ftbench_kit.h"
#include "ftbench_method.h"

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
    ftb_kit_lora lora; /* first: hook, A, B and shapes (the method kit) */
    const lora_shared *shared;
} lora_adapter;

typedef struct {
    lora_shared shared;
    ftb_kit_lora_trained adapters; /* lora_adapter elements, their optimizer (the method kit) */
} lora_state;

static void lora_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    ftb_kit_lora *a = (ftb_kit_lora *)self;
    const int N = c->B * c->T;
    float *h = ftb_alloc(saved ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    if (!h) return; /* the core sees the failure (docs/CORE.md) */
    ftb_kit_lora_down(a, N, x, a->A.data, h);
    ftb_kit_lora_up(a, N, h, a->B.data, y);
    if (saved)
        *saved = h;
    else
        ftb_free(h);
}

static void lora_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
    ftb_kit_lora *a = (ftb_kit_lora *)self;
    const int N = c->B * c->T;
    float *dh = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    if (dh) ftb_kit_lora_backward(a, N, x, saved, dy, dh, dx); /* else the core saw the failure (docs/CORE.md) */
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
static void dropout_rows(const lora_adapter *d, int N, const float *x, float *xd, uint8_t *mask)
{
    const ftb_kit_lora *a = &d->lora;
    const float p = d->shared->dropout, keep_scale = 1.0f / (1.0f - p);
    const uint64_t base =
        ftb_kit_hook_seed(d->shared->seed, FTB_KIT_LORA_SEED_SALT, d->shared->step, a->layer, a->kind);
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
    lora_adapter *d = (lora_adapter *)self;
    ftb_kit_lora *a = &d->lora;
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
    dropout_rows(d, N, x, xd, mask);
    ftb_kit_lora_down(a, N, xd, a->A.data, h);
    ftb_kit_lora_up(a, N, h, a->B.data, y);
    if (saved)
        *saved = buf;
    else
        ftb_free(buf);
}

static void lora_dropout_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx,
                                  void *saved)
{
    (void)x; /* NULL: the hook keeps x_drop itself */
    const lora_adapter *d = (const lora_adapter *)self;
    const ftb_kit_lora *a = &d->lora;
    const int N = c->B * c->T, in = a->in;
    const float *h = saved, *xd = h + (size_t)N * a->r;
    const uint8_t *mask = (const uint8_t *)(xd + (size_t)N * in);
    const float keep_scale = 1.0f / (1.0f - d->shared->dropout);
    float *dh = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    const int R = N < MASK_CHUNK_ROWS ? N : MASK_CHUNK_ROWS;
    float *dxd = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)R * in);
    if (!dh || !dxd) { /* the core saw the failure and ends the run */
        ftb_free(dh);
        ftb_free(dxd);
        ftb_free(saved);
        return;
    }
    ftb_kit_lora_backward(a, N, xd, h, dy, dh, NULL); /* dB, dh, dA from x_drop; dx below */
    for (int r0 = 0; r0 < N; r0 += R) {               /* dx += (dh·A) ⊙ mask/(1 − p), R rows at a time */
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

static const ftb_adapter_ops lora_ops = { FTB_ADAPTER_OPS_VERSION, lora_forward, lora_backward, lora_release };
static const ftb_adapter_ops lora_dropout_ops = { FTB_ADAPTER_OPS_VERSION, lora_dropout_forward, lora_dropout_backward,
                                                  lora_release };

static const ftb_option_doc lora_options[] = {
    FTB_KIT_LORA_OPTION_DOCS,
    FTB_KIT_LORA_DROPOUT_DOC,
    { NULL, NULL, NULL },
};

static void lora_destroy(void *state);

/* The options init and the plan read alike. */
typedef struct {
    long rank;
    double alpha, weight_decay, dropout;
    int targets;
} lora_config;

static int read_options(const ftb_options *o, lora_config *c, char *err, size_t errlen)
{
    c->weight_decay = ftb_opt_double(o, "weight_decay", 0.0, err, errlen);
    c->dropout = ftb_opt_double(o, "dropout", 0.0, err, errlen);
    if (err[0]) return -1;
    if (!(c->dropout >= 0.0 && c->dropout < 1.0)) {
        snprintf(err, errlen, "option dropout: %g is not in [0, 1)", c->dropout);
        return -1;
    }
    return ftb_kit_lora_options(o, "q,k,v,o,gate,up,down", &c->rank, &c->alpha, &c->targets, err, errlen);
}

static void *lora_init(ftb_session *s, char *err, size_t errlen)
{
    lora_config c;
    if (read_options(s->options, &c, err, errlen)) return NULL;
    lora_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "lora: out of memory");
        return NULL;
    }
    st->shared.dropout = (float)c.dropout;
    st->shared.seed = s->seed;
    /* with dropout the hook keeps x_drop instead of the core keeping x */
    if (ftb_kit_lora_trained_init(&st->adapters, s, sizeof(lora_adapter), c.targets, c.rank, c.alpha, c.weight_decay,
                                  c.dropout > 0.0 ? &lora_dropout_ops : &lora_ops, c.dropout == 0.0, err, errlen)) {
        lora_destroy(st);
        return NULL;
    }
    lora_adapter *a = st->adapters.set.base;
    for (int i = 0; i < st->adapters.set.n; i++) a[i].shared = &st->shared;
    return st;
}

static int lora_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    lora_state *st = state;
    st->shared.step++; /* fresh dropout masks */
    return ftb_backprop_step(s, st->adapters.opt, b, out, err, errlen);
}

static int lora_trainable(void *state, ftb_tensor ***tensors)
{
    lora_state *st = state;
    return ftb_kit_lora_trained_params(&st->adapters, tensors);
}

static void lora_destroy(void *state)
{
    lora_state *st = state;
    if (!st) return;
    ftb_kit_lora_trained_free(&st->adapters);
    free(st);
}

/* Analytic memory (docs/methods/lora.md): the core's schedule, plus what
 * each adapter saves for its backward: h = x·Aᵀ [N, r], and with dropout its
 * dropped-out input and mask too.  The same rule for a built adapter and
 * for a plan's placeholder (ctx: the options; in from the linear). */
static int64_t saved_bytes(const lora_config *c, int64_t in, int B, int T)
{
    return c->dropout > 0.0 ? (int64_t)dropout_saved_bytes(B * T, (int)in, (int)c->rank)
                            : (int64_t)sizeof(float) * B * T * c->rank;
}

static int64_t adapter_bytes(const ftb_adapter *a, ftb_model *m, int layer, ftb_linear_kind kind, int B, int T,
                             void *ctx)
{
    (void)m, (void)layer, (void)kind, (void)ctx;
    if (a->ops != &lora_ops && a->ops != &lora_dropout_ops) return 0;
    const ftb_kit_lora *la = a->state;
    const lora_config c = { la->r, 0, 0, a->ops == &lora_dropout_ops ? 1.0 : 0.0, 0 };
    return saved_bytes(&c, la->in, B, T);
}

static int lora_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out)
{
    lora_state *st = state;
    return ftb_kit_estimate_hooked(st->adapters.model, &s->run, B, T, adapter_bytes, NULL, out);
}

static int64_t planned_bytes(const ftb_adapter *a, ftb_model *m, int layer, ftb_linear_kind kind, int B, int T,
                             void *ctx)
{
    (void)a;
    return saved_bytes(ctx, ftb_model_linear(m, layer, kind)->shape[1], B, T);
}

/* Shape-only (`ftbench plan`): the adapters init would make — A and B with
 * gradients and optimizer state — and the bytes their hooks save. */
static int lora_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err,
                     size_t errlen)
{
    lora_config c;
    if (read_options(o, &c, err, errlen)) return -1;
    ftb_kit_lora_trained_plan(p, c.targets, c.rank);
    return ftb_kit_plan_hooked(p, c.targets, c.dropout == 0.0, B, T, 1, planned_bytes, &c, out, err, errlen);
}

static const ftb_method lora_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "lora",
    .summary = "LoRA: low-rank A·B on chosen linear layers, base frozen",
    .options = lora_options,
    .init = lora_init,
    .step = lora_step,
    .trainable = lora_trainable,
    .destroy = lora_destroy,
    .memory_model = lora_memory_model,
    .memory_plan = lora_plan,
};

const ftb_method *ftbench_method(void) { return &lora_method; }
