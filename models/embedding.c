/* embedding.c — token lookup and its scatter-add backward. */
#include "ops.h"
#include "quant.h"

#include <string.h>

void ftb_embedding_forward(float *x, const ftb_tensor *E, const int32_t *tokens, int N, int D)
{
    if (E->dtype == FTB_DTYPE_F32 || !E->quant) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(x + (int64_t)n * D, E->data + (int64_t)tokens[n] * D, sizeof(float) * D);
        return;
    }
    /* Only the rows looked up are dequantized. */
    double t0 = ftb_now();
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) ftb_qstore_dequant_row(E->quant, tokens[n], x + (int64_t)n * D);
    ftb_dequant_account(ftb_now() - t0, (int64_t)N * D);
}

void ftb_embedding_backward(float *dE, const float *dx, const int32_t *tokens, int N, int D)
{
    /* Each thread owns a band of columns, so repeated tokens never race. */
    enum { BAND = 64 };
    int bands = (D + BAND - 1) / BAND;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < bands; b++) {
        int i0 = b * BAND, i1 = i0 + BAND < D ? i0 + BAND : D;
        for (int n = 0; n < N; n++) {
            float *row = dE + (int64_t)tokens[n] * D;
            const float *g = dx + (int64_t)n * D;
            for (int i = i0; i < i1; i++) row[i] += g[i];
        }
    }
}
