/* swiglu.c — the MLP's gate: h = silu(g)·u, silu(g) = g·σ(g).
 * silu'(g) = σ(g)·(1 + g·(1 − σ(g))). */
#include "ops.h"

#include <math.h>

void ftb_swiglu_forward(float *h, const float *g, const float *u, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        h[i] = g[i] * s * u[i];
    }
}

void ftb_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        float d = dh[i];
        du[i] = d * g[i] * s;
        dg[i] = d * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}
