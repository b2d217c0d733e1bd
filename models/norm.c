/* norm.c — RMSNorm (Llama/Qwen2): y = x·rstd·w, rstd = 1/sqrt(mean(x²)+eps).
 * Backward: with g = dy·w,  dx = rstd·g − x·rstd³·(g·x)/D,  dw = Σ dy·x·rstd. */
#include "ops.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

void ftb_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int D, float eps)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (int64_t)n * D;
        float *yr = y + (int64_t)n * D;
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / D + eps));
        for (int i = 0; i < D; i++) yr[i] = xr[i] * r * w[i];
        if (rstd) rstd[n] = r;
    }
}

void ftb_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *rstd, const float *w,
                          int N, int D)
{
    int nt = omp_get_max_threads();
    /* Per-thread partial sums of dw, added up at the end: no races, and the
     * result does not depend on scheduling within a thread count. */
    float *partial = dw ? ftb_calloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)nt * D) : NULL;
    if (dw && !partial) return; /* the caller sees the failure flag (mem.c) */
#pragma omp parallel
    {
        float *pw = partial ? partial + (size_t)omp_get_thread_num() * D : NULL;
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (int64_t)n * D, *gr = dy + (int64_t)n * D;
            float *dxr = dx + (int64_t)n * D;
            float r = rstd[n];
            double dot = 0;
            for (int i = 0; i < D; i++) dot += (double)gr[i] * w[i] * xr[i];
            float c = (float)(dot * r * r * r / D);
            for (int i = 0; i < D; i++) dxr[i] += r * gr[i] * w[i] - c * xr[i];
            if (pw)
                for (int i = 0; i < D; i++) pw[i] += gr[i] * xr[i] * r;
        }
    }
    if (partial) {
        for (int t = 0; t < nt; t++)
            for (int i = 0; i < D; i++) dw[i] += partial[(size_t)t * D + i];
        ftb_free(partial);
    }
}
