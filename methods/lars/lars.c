/* lars — LARS, Low-memory Activation-Rank Subspace ("Parameter Efficiency Is
 * Not Memory Efficiency: Rethinking Fine-Tuning for On-Device LLM
 * Adaptation", arXiv 2604.22783).  Option variant=pooled (the default, this
 * file) or variant=gated (the authors' other published variant, gated.c).
 * docs/methods/lars.md has the equations, the derived backward and the
 * memory analysis of both.
 *
 * On each targeted linear (input X [B,T,H], frozen base output Y0) a small
 * network computes ONE vector per sequence from a pooled summary of X and
 * adds it to every position of that sequence:
 *   p  = mean_{t pooled} x_t + x_last                 [B,H]
 *   h  = p·Aᵀ ; ĥ = LayerNorm_r(h)                    [B,r]
 *   g  = sigmoid(τ1·p·G_xᵀ + τ2·ĥ·G_hᵀ)               [B,r]
 *   h2 = dropout(ĥ + g·M)                             [B,r]
 *   h3 = h2 + W2·GELU(W1·h2 + b1) + b2                [B,r]
 *   Y  = Y0 + α·(h3·Bᵀ)   at every position           [B,T,out]
 *
 * Why it saves memory: the frozen base linear needs no saved input for its
 * own backward (dx = dy·W), so the hook asks for none (needs_input = 0) and
 * keeps only per-sequence tensors — p [B,H] and a few [B,·r] vectors —
 * whereas LoRA keeps every adapted layer's input [B·T,H].  Backward needs
 * from dy only its sum over positions (o is broadcast to all of them), and
 * the gradient of p spreads back over the pooled positions as dp/n plus dp
 * at the last valid one.
 *
 * Valid positions (pool=valid, the default): in ftbench batches target[t]
 * is the token at t+1 (datasets/dataset.h), so a kept target at t* proves
 * the token at t*+1 is real text; the last real token of a padded row has no
 * target.  A row's last valid position is therefore ℓ = min(t*+1, T−1) with
 * t* its last non-ignored target, and its valid positions are 0..ℓ.  A row
 * with no kept target has no valid position: p gets no last-position term
 * and, under pool=valid, no mean either (p = 0: finite, and that row's
 * outputs carry no loss anyway).  pool=all averages all T positions.
 *
 * Causality (pool=prompt): valid and all pool positions after t, so the
 * output at t sees later tokens — with pool=valid its own target among them.
 * pool=prompt pools only the prompt: positions 0..f−1 before the row's first
 * non-ignored target f (the positions outside the loss mask), with ℓ = f−1.
 * Every position that carries loss (t ≥ f) then sees only tokens < f ≤ t:
 * no leak on prompt→answer data.  A row with f = 0 (plain language
 * modelling) or with no target pools the empty set: p = 0, no NaN.
 *
 * Dropout masks are [B,r] and drawn from a seed made of (session seed, step,
 * layer, linear): the forward that a recomputed block runs twice, and the
 * backward, regenerate the same mask instead of storing it. */
#include "ftbench_kit.h"
#include "ftbench_method.h"
#include "gated.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The trainable tensors of one adapter, in the order trainable() lists them. */
enum {
    P_A,      /* [r, H]   down-projection of the pooled input              */
    P_B,      /* [out, r] up-projection to the layer's output              */
    P_GX,     /* [r, H]   gate from the pooled input                        */
    P_GH,     /* [r, r]   gate from the normalised code                     */
    P_M,      /* [r, r]   gated mixing: h2 = ĥ + g·M                        */
    P_LN_W,   /* [r]      LayerNorm scale                                   */
    P_LN_B,   /* [r]      LayerNorm shift                                   */
    P_FFN1_W, /* [4r, r]                                                    */
    P_FFN1_B, /* [4r]                                                       */
    P_FFN2_W, /* [r, 4r]                                                    */
    P_FFN2_B, /* [r]                                                        */
    P_ALPHA,  /* [1]      output scale α                                    */
    P_TAU1,   /* [1]      gate temperature on the input path                */
    P_TAU2,   /* [1]      gate temperature on the code path                 */
    P_COUNT
};

static const char *const param_names[P_COUNT] = {
    "A",           "B",         "G_x",         "G_h",       "M",     "ln.weight", "ln.bias",
    "ffn1.weight", "ffn1.bias", "ffn2.weight", "ffn2.bias", "alpha", "tau1",      "tau2",
};

#define LN_EPS 1e-5f /* PyTorch's LayerNorm default */

/* What every hook reads from the method: options and the step counter that
 * makes each step's dropout masks new. */
typedef enum { POOL_VALID = 0, POOL_ALL, POOL_PROMPT } lars_pool;

typedef struct {
    float dropout;
    lars_pool pool;
    uint64_t seed;
    uint64_t step;
} lars_shared;

typedef struct {
    ftb_adapter hook; /* first: the core hands this pointer back */
    ftb_tensor t[P_COUNT];
    int in, out, r, layer, kind;
    const lars_shared *shared;
} lars_adapter;

typedef enum { VARIANT_POOLED = 0, VARIANT_GATED } lars_variant;

typedef struct {
    lars_variant variant;
    lars_adapter *adapters;    /* variant pooled */
    lars_gated_adapter *gated; /* variant gated (gated.c) */
    int n_adapters;
    int n_params;
    ftb_tensor **params; /* n_adapters * (P_COUNT or G_COUNT) */
    ftb_adamw *opt;
    ftb_model *model;
    lars_shared shared;
} lars_state;

/* ------------------------------------------------------------------------ */
/* Per-sequence activations: the only things kept for backward             */
/* ------------------------------------------------------------------------ */

typedef struct {
    float *p;    /* [B,H]  pooled input                                    */
    float *nhat; /* [B,r]  (h − mean)·rstd, before LayerNorm's scale/shift  */
    float *rstd; /* [B]                                                    */
    float *gx;   /* [B,r]  p·G_xᵀ (dτ1 needs it)                           */
    float *gh;   /* [B,r]  ĥ·G_hᵀ (dτ2 needs it)                           */
    float *g;    /* [B,r]  gate                                            */
    float *h2;   /* [B,r]  after dropout: FFN input and residual           */
    float *u;    /* [B,4r] FFN pre-activation                              */
    float *h3;   /* [B,r]  code that B projects                            */
} lars_acts;

/* Floats of a lars_acts block: B·(H + 10r + 1).  No factor of T. */
static size_t acts_floats(int B, int H, int r) { return (size_t)B * ((size_t)H + 10 * (size_t)r + 1); }

static void acts_bind(lars_acts *a, float *base, int B, int H, int r)
{
    a->p = base;
    a->nhat = a->p + (size_t)B * H;
    a->rstd = a->nhat + (size_t)B * r;
    a->gx = a->rstd + B;
    a->gh = a->gx + (size_t)B * r;
    a->g = a->gh + (size_t)B * r;
    a->h2 = a->g + (size_t)B * r;
    a->u = a->h2 + (size_t)B * r;
    a->h3 = a->u + (size_t)B * 4 * r;
}

/* ------------------------------------------------------------------------ */
/* Which positions a sequence pools                                         */
/* ------------------------------------------------------------------------ */

/* Positions 0..n_pooled−1 are averaged; last is the last valid position or
 * −1 if the row has none (see the top of the file). */
typedef struct {
    int n_pooled;
    int last;
} seq_span;

static void seq_spans(const ftb_batch *batch, lars_pool pool, seq_span *spans)
{
    const int B = batch->B, T = batch->T;
    for (int b = 0; b < B; b++) {
        const int32_t *tgt = batch->targets + (size_t)b * T;
        if (pool == POOL_PROMPT) {
            int f = 0; /* first kept target; T (none) pools nothing either */
            while (f < T && tgt[f] == FTB_IGNORE_INDEX) f++;
            if (f == T) f = 0;
            spans[b].n_pooled = f; /* positions 0..f−1: the prompt */
            spans[b].last = f - 1; /* −1 when f = 0: p = 0 */
            continue;
        }
        int t_star = -1;
        for (int t = T - 1; t >= 0; t--)
            if (tgt[t] != FTB_IGNORE_INDEX) {
                t_star = t;
                break;
            }
        spans[b].last = t_star < 0 ? -1 : (t_star + 1 < T ? t_star + 1 : T - 1);
        spans[b].n_pooled = pool == POOL_ALL ? T : spans[b].last + 1;
    }
}

#define COL_BLOCK 64 /* columns per thread task: each thread streams its own slice of every row */

/* p[b] = mean over pooled rows of x[b] + x[b, last]. */
static void pool_forward(float *p, const float *x, const seq_span *spans, int B, int T, int H)
{
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * T * H;
        const int n = spans[b].n_pooled, last = spans[b].last;
        const double inv_n = n > 0 ? 1.0 / n : 0.0;
#pragma omp parallel for schedule(static)
        for (int j0 = 0; j0 < H; j0 += COL_BLOCK) {
            const int j1 = j0 + COL_BLOCK < H ? j0 + COL_BLOCK : H;
            double acc[COL_BLOCK] = { 0 };
            for (int t = 0; t < n; t++)
                for (int j = j0; j < j1; j++) acc[j - j0] += xb[(size_t)t * H + j];
            for (int j = j0; j < j1; j++)
                p[(size_t)b * H + j] = (float)(acc[j - j0] * inv_n) + (last >= 0 ? xb[(size_t)last * H + j] : 0.0f);
        }
    }
}

/* dx[b, t] += dp[b]/n for pooled t; dx[b, last] += dp[b]. */
static void pool_backward(float *dx, const float *dp, const seq_span *spans, int B, int T, int H)
{
    for (int b = 0; b < B; b++) {
        float *dxb = dx + (size_t)b * T * H;
        const float *dpb = dp + (size_t)b * H;
        const int n = spans[b].n_pooled, last = spans[b].last;
        const float inv_n = n > 0 ? 1.0f / (float)n : 0.0f;
#pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) {
            float w = (t < n ? inv_n : 0.0f) + (t == last ? 1.0f : 0.0f);
            if (w == 0.0f) continue;
            for (int j = 0; j < H; j++) dxb[(size_t)t * H + j] += w * dpb[j];
        }
    }
}

/* y[b, t] += alpha·o[b] at every position t. */
static void broadcast_forward(float *y, const float *o, float alpha, int B, int T, int out)
{
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < (int64_t)B * T; row++) {
        const float *ob = o + (size_t)(row / T) * out;
        float *yr = y + (size_t)row * out;
        for (int j = 0; j < out; j++) yr[j] += alpha * ob[j];
    }
}

/* s[b] = Σ_t dy[b, t]: all broadcast positions receive o. */
static void broadcast_backward(float *s, const float *dy, int B, int T, int out)
{
    for (int b = 0; b < B; b++) {
        const float *dyb = dy + (size_t)b * T * out;
#pragma omp parallel for schedule(static)
        for (int j0 = 0; j0 < out; j0 += COL_BLOCK) {
            const int j1 = j0 + COL_BLOCK < out ? j0 + COL_BLOCK : out;
            double acc[COL_BLOCK] = { 0 };
            for (int t = 0; t < T; t++)
                for (int j = j0; j < j1; j++) acc[j - j0] += dyb[(size_t)t * out + j];
            for (int j = j0; j < j1; j++) s[(size_t)b * out + j] = (float)acc[j - j0];
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The small per-sequence network: forward/backward pairs on [B, r] rows    */
/* ------------------------------------------------------------------------ */

/* hhat = w·nhat + b with nhat = (h − mean)·rstd over each row of r. */
static void layernorm_forward(float *hhat, float *nhat, float *rstd, const float *h, const float *w, const float *bias,
                              int B, int r)
{
    for (int b = 0; b < B; b++) {
        const float *hb = h + (size_t)b * r;
        double mean = 0, var = 0;
        for (int j = 0; j < r; j++) mean += hb[j];
        mean /= r;
        for (int j = 0; j < r; j++) var += (hb[j] - mean) * (hb[j] - mean);
        var /= r;
        float rs = (float)(1.0 / sqrt(var + LN_EPS));
        rstd[b] = rs;
        for (int j = 0; j < r; j++) {
            float n = (float)(hb[j] - mean) * rs;
            nhat[(size_t)b * r + j] = n;
            hhat[(size_t)b * r + j] = w[j] * n + bias[j];
        }
    }
}

static void layernorm_backward(float *dh, float *dw, float *dbias, const float *dhhat, const float *nhat,
                               const float *rstd, const float *w, int B, int r)
{
    for (int b = 0; b < B; b++) {
        const float *dhb = dhhat + (size_t)b * r, *nb = nhat + (size_t)b * r;
        double mean_dn = 0, mean_dn_n = 0;
        for (int j = 0; j < r; j++) {
            double dn = (double)dhb[j] * w[j];
            mean_dn += dn;
            mean_dn_n += dn * nb[j];
            dw[j] += dhb[j] * nb[j];
            dbias[j] += dhb[j];
        }
        mean_dn /= r;
        mean_dn_n /= r;
        for (int j = 0; j < r; j++)
            dh[(size_t)b * r + j] = (float)(rstd[b] * ((double)dhb[j] * w[j] - mean_dn - nb[j] * mean_dn_n));
    }
}

static float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }

/* Exact (erf) GELU, PyTorch's default. */
static float gelu(float u) { return 0.5f * u * (1.0f + erff(u * (float)M_SQRT1_2)); }
static float gelu_grad(float u)
{
    return 0.5f * (1.0f + erff(u * (float)M_SQRT1_2)) + u * expf(-0.5f * u * u) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
}

/* Dropout on the [B, r] code.  keep[i] is 0 or 1/(1−rate); the mask is a
 * pure function of its seed, so backward regenerates it. */
static void dropout_mask(float *keep, int64_t n, float rate, uint64_t seed)
{
    ftb_rng rng;
    ftb_rng_seed(&rng, seed);
    const float scale = 1.0f / (1.0f - rate);
    for (int64_t i = 0; i < n; i++) keep[i] = ftb_rng_uniform(&rng) >= rate ? scale : 0.0f;
}

#define LARS_SEED_SALT 0x6c617273ULL /* "lars" */

static uint64_t dropout_seed(const lars_adapter *a)
{
    return ftb_kit_hook_seed(a->shared->seed, LARS_SEED_SALT, a->shared->step, a->layer, (ftb_linear_kind)a->kind);
}

static int dropout_active(const lars_adapter *a, const ftb_linear_ctx *c)
{
    return c->training && a->shared->dropout > 0.0f;
}

/* Everything from x to o [B,out], activations into acts. */
static void lars_net_forward(const lars_adapter *a, const ftb_linear_ctx *c, const float *x, const seq_span *spans,
                             const lars_acts *s, float *o)
{
    const int B = c->B, H = a->in, r = a->r, r4 = 4 * r;
    const ftb_tensor *t = a->t;
    const float tau1 = t[P_TAU1].data[0], tau2 = t[P_TAU2].data[0];
    float *tmp = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)B * 2 * r);
    float *act = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)B * r4);
    if (!tmp || !act) { /* the core saw the failure and ends the run; o is not used */
        ftb_free(tmp);
        ftb_free(act);
        return;
    }
    float *h = tmp, *hhat = tmp + (size_t)B * r;

    pool_forward(s->p, x, spans, B, c->T, H);
    ftb_gemm(0, 1, B, r, H, 1.0f, s->p, H, t[P_A].data, H, 0.0f, h, r);
    layernorm_forward(hhat, s->nhat, s->rstd, h, t[P_LN_W].data, t[P_LN_B].data, B, r);
    /* gate */
    ftb_gemm(0, 1, B, r, H, 1.0f, s->p, H, t[P_GX].data, H, 0.0f, s->gx, r);
    ftb_gemm(0, 1, B, r, r, 1.0f, hhat, r, t[P_GH].data, r, 0.0f, s->gh, r);
    for (int64_t i = 0; i < (int64_t)B * r; i++) s->g[i] = sigmoidf(tau1 * s->gx[i] + tau2 * s->gh[i]);
    /* h2 = ĥ + g·M, then dropout */
    memcpy(s->h2, hhat, sizeof(float) * (size_t)B * r);
    ftb_gemm(0, 0, B, r, r, 1.0f, s->g, r, t[P_M].data, r, 1.0f, s->h2, r);
    if (dropout_active(a, c)) {
        float *keep = h; /* h is no longer needed */
        dropout_mask(keep, (int64_t)B * r, a->shared->dropout, dropout_seed(a));
        for (int64_t i = 0; i < (int64_t)B * r; i++) s->h2[i] *= keep[i];
    }
    /* h3 = h2 + FFN(h2) */
    for (int b = 0; b < B; b++) memcpy(s->u + (size_t)b * r4, t[P_FFN1_B].data, sizeof(float) * r4);
    ftb_gemm(0, 1, B, r4, r, 1.0f, s->h2, r, t[P_FFN1_W].data, r, 1.0f, s->u, r4);
    for (int64_t i = 0; i < (int64_t)B * r4; i++) act[i] = gelu(s->u[i]);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < r; j++) s->h3[(size_t)b * r + j] = s->h2[(size_t)b * r + j] + t[P_FFN2_B].data[j];
    ftb_gemm(0, 1, B, r, r4, 1.0f, act, r4, t[P_FFN2_W].data, r4, 1.0f, s->h3, r);
    /* o = h3·Bᵀ */
    ftb_gemm(0, 1, B, a->out, r, 1.0f, s->h3, r, t[P_B].data, r, 0.0f, o, a->out);
    ftb_free(act);
    ftb_free(tmp);
}

/* From s[b] = Σ_t dy[b,t] back to dp [B,H]; accumulates parameter grads. */
static void lars_net_backward(const lars_adapter *a, const ftb_linear_ctx *c, const float *sum_dy, const lars_acts *s,
                              float *dp)
{
    const int B = c->B, H = a->in, r = a->r, r4 = 4 * r, out = a->out;
    const ftb_tensor *t = a->t;
    const float alpha = t[P_ALPHA].data[0], tau1 = t[P_TAU1].data[0], tau2 = t[P_TAU2].data[0];
    const size_t Br = (size_t)B * r;
    float *buf = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (Br * 6 + (size_t)B * r4 * 2));
    if (!buf) return; /* the core saw the failure and ends the run */
    float *bts = buf, *dh3 = bts + Br, *dh2 = dh3 + Br, *dz = dh2 + Br, *dhhat = dz + Br, *hhat = dhhat + Br;
    float *act = hhat + Br, *du = act + (size_t)B * r4;

    /* o = h3·Bᵀ, Y += α·o:  dα = Σ_b s_b·o_b = Σ_b (s_b·B)·h3_b,  dB += α·sᵀ·h3,  dh3 = α·s·B */
    ftb_gemm(0, 0, B, r, out, 1.0f, sum_dy, out, t[P_B].data, r, 0.0f, bts, r);
    double dalpha = 0;
    for (size_t i = 0; i < Br; i++) dalpha += (double)bts[i] * s->h3[i];
    t[P_ALPHA].grad[0] += (float)dalpha;
    ftb_gemm(1, 0, out, r, B, alpha, sum_dy, out, s->h3, r, 1.0f, t[P_B].grad, r);
    for (size_t i = 0; i < Br; i++) dh3[i] = alpha * bts[i];

    /* h3 = h2 + W2·GELU(W1·h2 + b1) + b2 */
    for (int64_t i = 0; i < (int64_t)B * r4; i++) act[i] = gelu(s->u[i]);
    ftb_gemm(1, 0, r, r4, B, 1.0f, dh3, r, act, r4, 1.0f, t[P_FFN2_W].grad, r4);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < r; j++) t[P_FFN2_B].grad[j] += dh3[(size_t)b * r + j];
    ftb_gemm(0, 0, B, r4, r, 1.0f, dh3, r, t[P_FFN2_W].data, r4, 0.0f, du, r4);
    for (int64_t i = 0; i < (int64_t)B * r4; i++) du[i] *= gelu_grad(s->u[i]);
    ftb_gemm(1, 0, r4, r, B, 1.0f, du, r4, s->h2, r, 1.0f, t[P_FFN1_W].grad, r);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < r4; j++) t[P_FFN1_B].grad[j] += du[(size_t)b * r4 + j];
    memcpy(dh2, dh3, sizeof(float) * Br);
    ftb_gemm(0, 0, B, r, r4, 1.0f, du, r4, t[P_FFN1_W].data, r, 1.0f, dh2, r);

    /* dropout: the same mask as forward, regenerated */
    if (dropout_active(a, c)) {
        float *keep = dz; /* free until the gate's backward */
        dropout_mask(keep, (int64_t)Br, a->shared->dropout, dropout_seed(a));
        for (size_t i = 0; i < Br; i++) dh2[i] *= keep[i];
    }

    /* h2 = ĥ + g·M:  dM += gᵀ·dh2,  dg = dh2·Mᵀ,  dĥ = dh2 */
    ftb_gemm(1, 0, r, r, B, 1.0f, s->g, r, dh2, r, 1.0f, t[P_M].grad, r);
    ftb_gemm(0, 1, B, r, r, 1.0f, dh2, r, t[P_M].data, r, 0.0f, dz, r);
    memcpy(dhhat, dh2, sizeof(float) * Br);

    /* g = sigmoid(z), z = τ1·gx + τ2·gh, gx = p·G_xᵀ, gh = ĥ·G_hᵀ */
    double dtau1 = 0, dtau2 = 0;
    for (size_t i = 0; i < Br; i++) {
        dz[i] *= s->g[i] * (1.0f - s->g[i]);
        dtau1 += (double)dz[i] * s->gx[i];
        dtau2 += (double)dz[i] * s->gh[i];
    }
    t[P_TAU1].grad[0] += (float)dtau1;
    t[P_TAU2].grad[0] += (float)dtau2;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < r; j++)
            hhat[(size_t)b * r + j] = t[P_LN_W].data[j] * s->nhat[(size_t)b * r + j] + t[P_LN_B].data[j];
    ftb_gemm(1, 0, r, H, B, tau1, dz, r, s->p, H, 1.0f, t[P_GX].grad, H);
    ftb_gemm(1, 0, r, r, B, tau2, dz, r, hhat, r, 1.0f, t[P_GH].grad, r);
    ftb_gemm(0, 0, B, H, r, tau1, dz, r, t[P_GX].data, H, 0.0f, dp, H);
    ftb_gemm(0, 0, B, r, r, tau2, dz, r, t[P_GH].data, r, 1.0f, dhhat, r);

    /* ĥ = LayerNorm(h), h = p·Aᵀ:  dA += dhᵀ·p,  dp += dh·A */
    float *dh = dh3; /* dh3 is done with */
    layernorm_backward(dh, t[P_LN_W].grad, t[P_LN_B].grad, dhhat, s->nhat, s->rstd, t[P_LN_W].data, B, r);
    ftb_gemm(1, 0, r, H, B, 1.0f, dh, r, s->p, H, 1.0f, t[P_A].grad, H);
    ftb_gemm(0, 0, B, H, r, 1.0f, dh, r, t[P_A].data, H, 1.0f, dp, H);
    ftb_free(buf);
}

/* ------------------------------------------------------------------------ */
/* Hooks                                                                    */
/* ------------------------------------------------------------------------ */

static void lars_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    lars_adapter *a = (lars_adapter *)self;
    const int B = c->B;
    seq_span *spans = ftb_alloc(FTB_MEM_WORKSPACE, sizeof *spans * (size_t)B);
    float *acts = ftb_alloc(saved ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, sizeof(float) * acts_floats(B, a->in, a->r));
    float *o = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)B * a->out);
    if (!spans || !acts || !o) { /* the core saw the failure and ends the run (docs/PLUGINS.md) */
        ftb_free(spans);
        ftb_free(acts);
        ftb_free(o);
        return;
    }
    lars_acts s;
    acts_bind(&s, acts, B, a->in, a->r);
    seq_spans(c->batch, a->shared->pool, spans);
    lars_net_forward(a, c, x, spans, &s, o);
    broadcast_forward(y, o, a->t[P_ALPHA].data[0], B, c->T, a->out);
    ftb_free(o);
    ftb_free(spans);
    if (saved)
        *saved = acts;
    else
        ftb_free(acts);
}

static void lars_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
    (void)x; /* NULL: needs_input is 0 — the point of the method */
    lars_adapter *a = (lars_adapter *)self;
    const int B = c->B;
    seq_span *spans = ftb_alloc(FTB_MEM_WORKSPACE, sizeof *spans * (size_t)B);
    float *sum_dy = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)B * a->out);
    float *dp = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)B * a->in);
    if (!spans || !sum_dy || !dp) { /* the core saw the failure and ends the run */
        ftb_free(spans);
        ftb_free(sum_dy);
        ftb_free(dp);
        ftb_free(saved);
        return;
    }
    lars_acts s;
    acts_bind(&s, saved, B, a->in, a->r);
    seq_spans(c->batch, a->shared->pool, spans);
    broadcast_backward(sum_dy, dy, B, c->T, a->out);
    lars_net_backward(a, c, sum_dy, &s, dp);
    pool_backward(dx, dp, spans, B, c->T, a->in);
    /* dy itself is unchanged: Y = Y0 + α·o is additive, so dY0 = dy. */
    ftb_free(dp);
    ftb_free(sum_dy);
    ftb_free(spans);
    ftb_free(saved);
}

static void lars_release(ftb_adapter *self, void *saved)
{
    (void)self;
    ftb_free(saved);
}

static const ftb_adapter_ops lars_ops = { FTB_ADAPTER_OPS_VERSION, lars_forward, lars_backward, lars_release };

/* ------------------------------------------------------------------------ */
/* Method                                                                   */
/* ------------------------------------------------------------------------ */

#define DEFAULT_TARGETS "q,v"

static const ftb_option_doc lars_options[] = {
    { "variant", "pooled",
      "'pooled' (one vector per sequence from pooled inputs, added at every position) or 'gated' (per-token "
      "block-wise input gate 1 + alpha*(RMSNorm(x)*U)*V)" },
    { "rank", "8", "rank r of the activation subspace (pooled) or of U, V (gated)" },
    { "targets", DEFAULT_TARGETS,
      "linear layers to adapt (comma-separated q,k,v,o,gate,up,down, or 'all' / 'attn' / 'mlp')" },
    { "dropout", "0.1", "pooled only: dropout on the gated code h2 while training, in [0, 1)" },
    { "pool", "valid",
      "pooled only: positions averaged into p: 'valid' (up to the last real token), 'all' (every position) or "
      "'prompt' (only positions before the first kept target: causal for prompt->answer data)" },
    { "block", "32", "gated only: input features scaled by one gate value" },
    { "weight_decay", "0.0", "AdamW weight decay (not on LayerNorm, biases, alpha, tau)" },
    { NULL, NULL, NULL },
};

static void fill_uniform(ftb_tensor *t, float bound, ftb_rng *rng)
{
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = bound * (2.0f * ftb_rng_uniform(rng) - 1.0f);
}

/* Shapes, then the paper's initialisation: A ~ N(0, 0.01²), B = 0 (so the
 * model starts as the base model), G_x = G_h = 0, M = I, LayerNorm (1, 0),
 * FFN as PyTorch's Linear (U(±1/√fan_in) for weight and bias), α = 0.5,
 * τ1 = τ2 = 1. */
static int adapter_init(lars_adapter *a, int layer, int kind, ftb_rng *rng, char *err, size_t errlen)
{
    const int r = a->r, H = a->in, out = a->out;
    const int64_t shape[P_COUNT][2] = {
        [P_A] = { r, H },          [P_B] = { out, r },        [P_GX] = { r, H },     [P_GH] = { r, r },
        [P_M] = { r, r },          [P_LN_W] = { r, 0 },       [P_LN_B] = { r, 0 },   [P_FFN1_W] = { 4 * r, r },
        [P_FFN1_B] = { 4 * r, 0 }, [P_FFN2_W] = { r, 4 * r }, [P_FFN2_B] = { r, 0 }, [P_ALPHA] = { 1, 0 },
        [P_TAU1] = { 1, 0 },       [P_TAU2] = { 1, 0 },
    };
    for (int i = 0; i < P_COUNT; i++) {
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d.%s.lars.%s", layer, ftb_linear_name(kind), param_names[i]);
        int no_decay = shape[i][1] == 0; /* vectors and scalars: norms, biases, α, τ */
        if (ftb_tensor_alloc(&a->t[i], name, shape[i][0], shape[i][1], FTB_MEM_TRAINABLE, 1, err, errlen)) return -1;
        a->t[i].no_decay = no_decay;
    }
    for (int64_t i = 0; i < a->t[P_A].numel; i++) a->t[P_A].data[i] = 0.01f * ftb_rng_normal(rng);
    for (int j = 0; j < r; j++) a->t[P_M].data[(size_t)j * r + j] = 1.0f;
    for (int j = 0; j < r; j++) a->t[P_LN_W].data[j] = 1.0f;
    fill_uniform(&a->t[P_FFN1_W], 1.0f / sqrtf((float)r), rng);
    fill_uniform(&a->t[P_FFN1_B], 1.0f / sqrtf((float)r), rng);
    fill_uniform(&a->t[P_FFN2_W], 1.0f / sqrtf((float)(4 * r)), rng);
    fill_uniform(&a->t[P_FFN2_B], 1.0f / sqrtf((float)(4 * r)), rng);
    a->t[P_ALPHA].data[0] = 0.5f;
    a->t[P_TAU1].data[0] = 1.0f;
    a->t[P_TAU2].data[0] = 1.0f;
    return 0;
}

static void lars_destroy(void *state);

/* Variant-specific options given to the other variant are refused rather
 * than silently ignored: a record then never claims a setting that had no
 * effect. */
static int refuse_foreign_option(const ftb_options *o, const char *key, const char *variant, char *err, size_t errlen)
{
    if (!ftb_opt_str(o, key, NULL)) return 0;
    snprintf(err, errlen, "option %s: not used by variant=%s", key, variant);
    return -1;
}

static void *lars_init(ftb_session *s, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    const char *variant = ftb_opt_str(s->options, "variant", "pooled");
    long rank = ftb_opt_int(s->options, "rank", 8, err, errlen);
    double dropout = ftb_opt_double(s->options, "dropout", 0.1, err, errlen);
    double wd = ftb_opt_double(s->options, "weight_decay", 0.0, err, errlen);
    long block = ftb_opt_int(s->options, "block", 32, err, errlen);
    if (err[0]) return NULL;
    if (strcmp(variant, "pooled") != 0 && strcmp(variant, "gated") != 0) {
        snprintf(err, errlen, "option variant: '%s' is not 'pooled' or 'gated'", variant);
        return NULL;
    }
    const int gated = !strcmp(variant, "gated");
    if (rank < 1 || rank > 4096) {
        snprintf(err, errlen, "option rank: %ld is not in 1..4096", rank);
        return NULL;
    }
    if (!(dropout >= 0.0 && dropout < 1.0)) {
        snprintf(err, errlen, "option dropout: %g is not in [0, 1)", dropout);
        return NULL;
    }
    if (wd < 0.0) {
        snprintf(err, errlen, "option weight_decay: %g is negative", wd);
        return NULL;
    }
    if (block < 1 || block > 65536) {
        snprintf(err, errlen, "option block: %ld is not in 1..65536", block);
        return NULL;
    }
    const char *pool = ftb_opt_str(s->options, "pool", "valid");
    if (strcmp(pool, "valid") != 0 && strcmp(pool, "all") != 0 && strcmp(pool, "prompt") != 0) {
        snprintf(err, errlen, "option pool: '%s' is not 'valid', 'all' or 'prompt'", pool);
        return NULL;
    }
    if (gated ? refuse_foreign_option(s->options, "pool", variant, err, errlen) ||
                    refuse_foreign_option(s->options, "dropout", variant, err, errlen)
              : refuse_foreign_option(s->options, "block", variant, err, errlen))
        return NULL;
    int mask = ftb_parse_linear_targets(ftb_opt_str(s->options, "targets", DEFAULT_TARGETS), err, errlen);
    if (mask < 0) return NULL;

    lars_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "lars: out of memory");
        return NULL;
    }
    st->model = m;
    st->variant = gated ? VARIANT_GATED : VARIANT_POOLED;
    st->shared.dropout = (float)dropout;
    st->shared.pool = !strcmp(pool, "all") ? POOL_ALL : !strcmp(pool, "prompt") ? POOL_PROMPT : POOL_VALID;
    st->shared.seed = s->seed;
    const int L = ftb_model_config(m)->n_layers, per_layer = __builtin_popcount((unsigned)mask);
    const int per_adapter = gated ? G_COUNT : P_COUNT;
    if (gated)
        st->gated = calloc((size_t)L * per_layer, sizeof *st->gated);
    else
        st->adapters = calloc((size_t)L * per_layer, sizeof *st->adapters);
    st->params = calloc((size_t)L * per_layer * per_adapter, sizeof *st->params);
    if ((!st->adapters && !st->gated) || !st->params) {
        snprintf(err, errlen, "lars: out of memory");
        goto fail;
    }
    ftb_model_set_trainable(m, 0);
    ftb_rng rng;
    ftb_rng_seed(&rng, s->seed ^ LARS_SEED_SALT);
    for (int l = 0; l < L; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            if (!(mask & (1 << k))) continue;
            ftb_tensor *W = ftb_model_linear(m, l, (ftb_linear_kind)k);
            ftb_adapter *hook;
            ftb_tensor *tensors;
            if (gated) {
                lars_gated_adapter *a = &st->gated[st->n_adapters++];
                a->W = W;
                a->out = (int)W->shape[0];
                a->in = (int)W->shape[1];
                a->r = (int)rank;
                a->block = (int)block;
                a->layer = l;
                a->kind = k;
                if (lars_gated_init(a, &rng, err, errlen)) goto fail;
                hook = &a->hook;
                tensors = a->t;
            } else {
                lars_adapter *a = &st->adapters[st->n_adapters++];
                a->out = (int)W->shape[0];
                a->in = (int)W->shape[1];
                a->r = (int)rank;
                a->layer = l;
                a->kind = k;
                a->shared = &st->shared;
                if (adapter_init(a, l, k, &rng, err, errlen)) goto fail;
                a->hook.ops = &lars_ops;
                a->hook.needs_input = 0; /* the frozen base keeps no input on our account */
                a->hook.state = a;
                hook = &a->hook;
                tensors = a->t;
            }
            for (int i = 0; i < per_adapter; i++) st->params[st->n_params++] = &tensors[i];
            ftb_attach_adapter(m, l, k, hook);
        }
    if (!(st->opt = ftb_adamw_create(m, st->params, st->n_params, s->lr, (float)wd, err, errlen))) goto fail;
    return st;
fail:
    lars_destroy(st);
    return NULL;
}

static int lars_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    lars_state *st = state;
    st->shared.step++; /* fresh dropout masks */
    return ftb_backprop_step(s, st->opt, b, out, err, errlen);
}

static int lars_trainable(void *state, ftb_tensor ***tensors)
{
    lars_state *st = state;
    *tensors = st->params;
    return st->n_params;
}

static void lars_destroy(void *state)
{
    lars_state *st = state;
    if (!st) return;
    for (int i = 0; i < st->n_adapters; i++) {
        ftb_adapter *hook = st->gated ? &st->gated[i].hook : &st->adapters[i].hook;
        int layer = st->gated ? st->gated[i].layer : st->adapters[i].layer;
        int kind = st->gated ? st->gated[i].kind : st->adapters[i].kind;
        if (ftb_model_adapter(st->model, layer, kind) == hook) ftb_attach_adapter(st->model, layer, kind, NULL);
        if (st->gated) {
            lars_gated_free(&st->gated[i]);
            continue;
        }
        lars_adapter *a = &st->adapters[i];
        for (int j = 0; j < P_COUNT; j++) {
            ftb_free(a->t[j].data);
            ftb_free(a->t[j].grad);
        }
    }
    ftb_adamw_destroy(st->opt);
    free(st->adapters);
    free(st->gated);
    free(st->params);
    free(st);
}

/* Analytic memory (docs/methods/lars.md): the core's schedule plus what each
 * hook keeps — pooled: its per-sequence activations, B·(H + 10r + 1) floats,
 * nothing per position; gated: rstd, z·U and the gate per token (the layer
 * input is the core's, needs_input).  The hooks' transient buffers (o, the
 * chunked gated input) are left out: well under 0.1% of a step. */
static int64_t adapter_bytes(const ftb_adapter *a, ftb_model *m, int layer, ftb_linear_kind kind, int B, int T,
                             void *ctx)
{
    (void)m, (void)layer, (void)kind;
    const lars_state *st = ctx;
    if (a->ops == &lars_ops) {
        const lars_adapter *p = (const lars_adapter *)a;
        return (int64_t)(sizeof(float) * acts_floats(B, p->in, p->r));
    }
    if (st->variant != VARIANT_GATED) return 0;
    const lars_gated_adapter *g = (const lars_gated_adapter *)a;
    return (int64_t)lars_gated_saved_bytes(B * T, g->r, g->nb);
}

static int lars_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out)
{
    const lars_state *st = state;
    return ftb_kit_estimate_hooked(st->model, &s->run, B, T, adapter_bytes, (void *)st, out);
}

/* What a plan needs to size an adapter and its saved bytes. */
typedef struct {
    int gated;
    long rank, block;
} lars_planned;

static int64_t planned_bytes(const ftb_adapter *a, ftb_model *m, int layer, ftb_linear_kind kind, int B, int T,
                             void *ctx)
{
    (void)a;
    const lars_planned *c = ctx;
    const int64_t H = ftb_model_linear(m, layer, kind)->shape[1];
    if (!c->gated) return (int64_t)(sizeof(float) * acts_floats(B, (int)H, (int)c->rank));
    return (int64_t)lars_gated_saved_bytes(B * T, (int)c->rank, (int)((H + c->block - 1) / c->block));
}

/* Shape-only (`ftbench plan`): the tensors adapter_init / lars_gated_init
 * allocate (with gradients and optimizer state), and what the hooks save. */
static int lars_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err,
                     size_t errlen)
{
    lars_planned c = { !strcmp(ftb_opt_str(o, "variant", "pooled"), "gated"), 0, 0 };
    c.rank = ftb_opt_int(o, "rank", 8, err, errlen);
    c.block = ftb_opt_int(o, "block", 32, err, errlen);
    if (err[0]) return -1;
    if (c.rank < 1 || c.rank > 4096 || c.block < 1 || c.block > 65536) {
        snprintf(err, errlen, "lars: rank or block out of range");
        return -1;
    }
    int mask = ftb_parse_linear_targets(ftb_opt_str(o, "targets", DEFAULT_TARGETS), err, errlen);
    if (mask < 0) return -1;
    ftb_model *m = ftb_plan_model(p);
    ftb_model_set_trainable(m, 0);
    const int64_t r = c.rank;
    int64_t floats = 0;
    for (int l = 0; l < ftb_model_config(m)->n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            if (!(mask & (1 << k))) continue;
            const ftb_tensor *W = ftb_model_linear(m, l, (ftb_linear_kind)k);
            const int64_t out_ = W->shape[0], H = W->shape[1], nb = (H + c.block - 1) / c.block;
            /* pooled: A, G_x [r,H]; B [out,r]; G_h, M [r,r]; LayerNorm 2r;
             * FFN 4r·r + 4r + r·4r + r; α, τ1, τ2.  gated: U [H,r], V [r,nb], α. */
            floats += c.gated ? H * r + r * nb + 1 : 2 * r * H + out_ * r + 10 * r * r + 7 * r + 3;
        }
    ftb_plan_add_state(p, FTB_MEM_TRAINABLE, (int64_t)sizeof(float) * floats);
    ftb_plan_add_state(p, FTB_MEM_GRADS, (int64_t)sizeof(float) * floats);
    ftb_plan_add_state(p, FTB_MEM_OPTIM, ftb_optimizer_state_bytes(floats));
    return ftb_kit_plan_hooked(p, mask, c.gated, B, T, 1, planned_bytes, &c, out, err, errlen);
}

static const ftb_method lars_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "lars",
    .summary = "LARS: per-sequence activation-subspace adapter (variant pooled: no per-position activations kept) "
               "or per-token block-wise input gate (variant gated)",
    .options = lars_options,
    .init = lars_init,
    .step = lars_step,
    .trainable = lars_trainable,
    .destroy = lars_destroy,
    .memory_model = lars_memory_model,
    .memory_plan = lars_plan,
};

const ftb_method *ftbench_method(void) { return &lars_method; }
