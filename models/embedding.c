/* embedding.c — token lookup and its scatter-add backward. */
#include "ops.h"

#include <string.h>

void embedding_forward(float *x, const float *E, const int32_t *tokens, int N, int D) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) memcpy(x + (int64_t)n * D, E + (int64_t)tokens[n] * D, sizeof(float) * D);
}

void embedding_backward(float *dE, const float *dx, const int32_t *tokens, int N, int D) {
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
