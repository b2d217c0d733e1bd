/* linear.c — y = x·Wᵀ + b with W stored [out, in], as checkpoints store it.
 * All three products of forward and backward are single sgemm calls. */
#include "ops.h"
#include "quant.h"

#include <cblas.h>

void ftb_linear_forward(float *y, const float *x, const float *W, const float *b, int N, int in, int out)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    if (b) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < out; o++) y[(int64_t)n * out + o] += b[o];
    }
}

void ftb_linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int N,
                         int in, int out)
{
    if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1.0f, dy, out, W, in, 1.0f, dx, in);
    if (dW) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < out; o++) {
            float s = 0;
            for (int n = 0; n < N; n++) s += dy[(int64_t)n * out + o];
            db[o] += s;
        }
    }
}

static void add_bias(float *y, const float *b, int N, int out)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) y[(int64_t)n * out + o] += b[o];
}

static void bias_grad(float *db, const float *dy, int N, int out)
{
#pragma omp parallel for schedule(static)
    for (int o = 0; o < out; o++) {
        float s = 0;
        for (int n = 0; n < N; n++) s += dy[(int64_t)n * out + o];
        db[o] += s;
    }
}

void ftb_linear_forward_w(float *y, const float *x, const ftb_tensor *W, const float *b, int N, int in, int out)
{
    if ((W->dtype == FTB_DTYPE_F32 || !W->quant) && !ftb_quant_read_perturbed()) {
        ftb_linear_forward(y, x, W->data, b, N, in, out);
        return;
    }
    ftb_linear_apply(W, N, x, y, 0.0f);
    if (b) add_bias(y, b, N, out);
}

void ftb_linear_backward_w(float *dx, float *dW, float *db, const float *dy, const float *x, const ftb_tensor *W, int N,
                           int in, int out)
{
    if (W->dtype == FTB_DTYPE_F32 || !W->quant) {
        ftb_linear_backward(dx, dW, db, dy, x, W->data, N, in, out);
        return;
    }
    if (dx) ftb_linear_apply_t(W, N, dy, dx, 1.0f);
    if (db) bias_grad(db, dy, N, out);
}

void ftb_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                A, lda, B, ldb, beta, C, ldc);
}
