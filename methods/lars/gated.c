/* gated.c — LARS variant `gated`: each adapted linear's input is scaled,
 * block of `block` features by block, by a gate computed from the token's
 * own (normalised) input through a rank-r bottleneck:
 *
 *   z    = x / rms(x)                 RMSNorm, no learned scale   [N, H]
 *   a    = z·U                        U [H, r]                    [N, r]
 *   c    = a·V                        V [r, nb], nb = ⌈H/block⌉   [N, nb]
 *   gate = 1 + α·c                    gate value k scales features k·block … (k+1)·block − 1
 *   Y    = (x ⊙ gate)·Wᵀ + b
 *
 * The hook sees y = x·Wᵀ + b after the core's product, so it adds
 * (x ⊙ (gate − 1))·Wᵀ = (x ⊙ α·c)·Wᵀ with a second product on the frozen W
 * (ftb_linear_apply: any storage format).  Backward, with e = dy·W:
 *
 *   dx    = e ⊙ gate + RMSNorm'ᵀ(dz)  — the core adds e itself (dy is left
 *           as is), the hook adds e ⊙ (gate − 1) and the path through z;
 *   dgate_k = Σ_{j in block k} e_j·x_j,   dα = Σ dgate·c,   dc = α·dgate,
 *   dV   += aᵀ·dc,   da = dc·Vᵀ,   dU += zᵀ·da,   dz = da·Uᵀ,
 *   dx   += rstd·(dz − z·mean(dz ⊙ z)).
 *
 * Unlike the pooled variant it needs every position's input x in backward
 * (dgate and z both read it): the hook sets needs_input, so the core keeps
 * the layer input as it does for LoRA, and the hook itself keeps rstd, a
 * and c per position.  Each position's gate depends on that position only:
 * causal by construction.  Rows are processed in chunks so that the [rows,
 * H] temporaries stay a few MiB whatever the sequence length. */
#include "gated.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_FLOATS   (1 << 20) /* one [rows, H] temporary: 4 MiB */
#define CHUNK_MIN_ROWS 64

static const char *const gated_names[G_COUNT] = { "U", "V", "alpha" };

size_t lars_gated_saved_bytes(int N, int r, int nb) { return sizeof(float) * (size_t)N * (1 + (size_t)r + nb); }

static int chunk_rows(int N, int H)
{
    int rows = CHUNK_FLOATS / H;
    if (rows < CHUNK_MIN_ROWS) rows = CHUNK_MIN_ROWS;
    return rows < N ? rows : N;
}

/* Per-call tensors, kept for backward: rstd [N], a [N, r], c [N, nb]. */
typedef struct {
    float *rstd, *a, *c;
} gated_acts;

static void acts_bind(gated_acts *s, float *base, int N, int r)
{
    s->rstd = base;
    s->a = base + N;
    s->c = s->a + (size_t)N * r;
}

/* rstd of n rows of x, and z = x·rstd into z. */
static void rms_forward(float *z, float *rstd, const float *x, int n, int H)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * H;
        double ss = 0;
        for (int j = 0; j < H; j++) ss += (double)xi[j] * xi[j];
        float s = (float)(1.0 / sqrt(ss / H + GATED_RMS_EPS));
        rstd[i] = s;
        for (int j = 0; j < H; j++) z[(size_t)i * H + j] = xi[j] * s;
    }
}

static void gated_forward(ftb_adapter *self, const ftb_linear_ctx *ctx, const float *x, float *y, void **saved)
{
    lars_gated_adapter *g = (lars_gated_adapter *)self;
    const int N = ctx->B * ctx->T, H = g->in, r = g->r, nb = g->nb, bs = g->block, out = g->out;
    const float alpha = g->t[G_ALPHA].data[0];
    const float *U = g->t[G_U].data, *V = g->t[G_V].data;
    float *buf = ftb_alloc(saved ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, lars_gated_saved_bytes(N, r, nb));
    const int R = chunk_rows(N, H);
    float *xg = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)R * H);
    if (!buf || !xg) { /* the core saw the failure and ends the run (docs/PLUGINS.md) */
        ftb_free(buf);
        ftb_free(xg);
        return;
    }
    gated_acts s;
    acts_bind(&s, buf, N, r);
    for (int r0 = 0; r0 < N; r0 += R) {
        const int n = N - r0 < R ? N - r0 : R;
        const float *xr = x + (size_t)r0 * H;
        float *a = s.a + (size_t)r0 * r, *c = s.c + (size_t)r0 * nb;
        rms_forward(xg, s.rstd + r0, xr, n, H); /* xg holds z for now */
        ftb_gemm(0, 0, n, r, H, 1.0f, xg, H, U, r, 0.0f, a, r);
        ftb_gemm(0, 0, n, nb, r, 1.0f, a, r, V, nb, 0.0f, c, nb);
        /* xg = x ⊙ (gate − 1) = x ⊙ α·c, block by block */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < H; j++)
                xg[(size_t)i * H + j] = xr[(size_t)i * H + j] * alpha * c[(size_t)i * nb + j / bs];
        ftb_linear_apply(g->W, n, xg, y + (size_t)r0 * out, 1.0f);
    }
    ftb_free(xg);
    if (saved)
        *saved = buf;
    else
        ftb_free(buf);
}

static void gated_backward(ftb_adapter *self, const ftb_linear_ctx *ctx, const float *x, float *dy, float *dx,
                           void *saved)
{
    lars_gated_adapter *g = (lars_gated_adapter *)self;
    const int N = ctx->B * ctx->T, H = g->in, r = g->r, nb = g->nb, bs = g->block, out = g->out;
    const float alpha = g->t[G_ALPHA].data[0];
    const float *U = g->t[G_U].data, *V = g->t[G_V].data;
    gated_acts s;
    acts_bind(&s, saved, N, r);
    const int R = chunk_rows(N, H);
    float *e = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)R * H * 2);
    float *dc = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)R * ((size_t)nb + r));
    if (!e || !dc) { /* the core saw the failure and ends the run */
        ftb_free(e);
        ftb_free(dc);
        ftb_free(saved);
        return;
    }
    float *z = e + (size_t)R * H, *da = dc + (size_t)R * nb;
    double dalpha = 0;
    for (int r0 = 0; r0 < N; r0 += R) {
        const int n = N - r0 < R ? N - r0 : R;
        const float *xr = x + (size_t)r0 * H, *a = s.a + (size_t)r0 * r, *c = s.c + (size_t)r0 * nb;
        const float *rstd = s.rstd + r0;
        float *dxr = dx + (size_t)r0 * H;
        /* e = dy·W: the gradient of the gated input x ⊙ gate */
        ftb_linear_apply_t(g->W, n, dy + (size_t)r0 * out, e, 0.0f);
        /* dgate per block; dx += e ⊙ (gate − 1) (the core adds e ⊙ 1) */
#pragma omp parallel for schedule(static) reduction(+ : dalpha)
        for (int i = 0; i < n; i++) {
            const float *ei = e + (size_t)i * H, *xi = xr + (size_t)i * H, *ci = c + (size_t)i * nb;
            float *dxi = dxr + (size_t)i * H;
            for (int k = 0; k < nb; k++) {
                const int j0 = k * bs, j1 = j0 + bs < H ? j0 + bs : H;
                double dg = 0;
                for (int j = j0; j < j1; j++) {
                    dg += (double)ei[j] * xi[j];
                    dxi[j] += ei[j] * alpha * ci[k];
                }
                dalpha += dg * ci[k];
                dc[(size_t)i * nb + k] = (float)(alpha * dg);
            }
        }
        ftb_gemm(1, 0, r, nb, n, 1.0f, a, r, dc, nb, 1.0f, g->t[G_V].grad, nb);
        ftb_gemm(0, 1, n, r, nb, 1.0f, dc, nb, V, nb, 0.0f, da, r);
        /* z again (cheaper than keeping it: one pass over x) */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < H; j++) z[(size_t)i * H + j] = xr[(size_t)i * H + j] * rstd[i];
        ftb_gemm(1, 0, H, r, n, 1.0f, z, H, da, r, 1.0f, g->t[G_U].grad, r);
        float *dz = e; /* e is done with */
        ftb_gemm(0, 1, n, H, r, 1.0f, da, r, U, r, 0.0f, dz, H);
        /* RMSNorm without scale: dx += rstd·(dz − z·mean(dz ⊙ z)) */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            const float *dzi = dz + (size_t)i * H, *zi = z + (size_t)i * H;
            double m = 0;
            for (int j = 0; j < H; j++) m += (double)dzi[j] * zi[j];
            const float mean = (float)(m / H);
            for (int j = 0; j < H; j++) dxr[(size_t)i * H + j] += rstd[i] * (dzi[j] - zi[j] * mean);
        }
    }
    g->t[G_ALPHA].grad[0] += (float)dalpha;
    /* dy is unchanged: the core's dx += dy·W is the gate's "1" term. */
    ftb_free(dc);
    ftb_free(e);
    ftb_free(saved);
}

static void gated_release(ftb_adapter *self, void *saved)
{
    (void)self;
    ftb_free(saved);
}

static const ftb_adapter_ops gated_ops = { FTB_ADAPTER_OPS_VERSION, gated_forward, gated_backward, gated_release };

/* U: PyTorch's kaiming_uniform_ with its defaults (a = 0, fan_in, gain √2)
 * on a tensor of the stated shape H × r, whose fan_in is size(1) = r:
 * U(±√(6/r)).  V ~ N(0, 10⁻⁸) (variance: std 1e-4), so every gate starts
 * within ~1e-3 of 1.  α = 0.1. */
int lars_gated_init(lars_gated_adapter *a, ftb_rng *rng, char *err, size_t errlen)
{
    a->nb = (a->in + a->block - 1) / a->block;
    const int64_t shape[G_COUNT][2] = { [G_U] = { a->in, a->r }, [G_V] = { a->r, a->nb }, [G_ALPHA] = { 1, 0 } };
    for (int i = 0; i < G_COUNT; i++) {
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d.%s.lars.%s", a->layer, ftb_linear_name(a->kind), gated_names[i]);
        if (ftb_tensor_alloc(&a->t[i], name, shape[i][0], shape[i][1], FTB_MEM_TRAINABLE, 1, err, errlen)) return -1;
    }
    a->t[G_ALPHA].no_decay = 1;
    const float bound = sqrtf(6.0f / (float)a->r);
    for (int64_t i = 0; i < a->t[G_U].numel; i++) a->t[G_U].data[i] = bound * (2.0f * ftb_rng_uniform(rng) - 1.0f);
    for (int64_t i = 0; i < a->t[G_V].numel; i++) a->t[G_V].data[i] = 1e-4f * ftb_rng_normal(rng);
    a->t[G_ALPHA].data[0] = 0.1f;
    a->hook.ops = &gated_ops;
    a->hook.needs_input = 1; /* dgate and z read every position's x */
    a->hook.state = a;
    return 0;
}

void lars_gated_free(lars_gated_adapter *a)
{
    for (int i = 0; i < G_COUNT; i++) {
        ftb_free(a->t[i].data);
        ftb_free(a->t[i].grad);
        a->t[i].data = a->t[i].grad = NULL;
    }
}
