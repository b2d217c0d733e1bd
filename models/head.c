/* head.c — LM head and next-token cross-entropy, fused with its gradient.
 *
 * loss = mean over valid targets of (logsumexp(z) − z[target]), z = x·Wᵀ.
 * d loss/d z = (softmax(z) − onehot(target)) / n_valid, so once a row's
 * logits exist, its gradient is known and the row can be turned into
 * dx = dz·W and dW += dzᵀ·x right away.
 *
 * chunked: rows go through in chunks of chunk_rows; no more than one chunk
 *   of logits ever exists (workspace).  The price: each chunk adds into all
 *   of dW, so dW is streamed once per chunk.
 * full: all N×V logits are materialised and held as a saved activation from
 *   the forward half to the backward half, as frameworks hold them. */
#include "ops.h"
#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Turns logits rows into per-row losses and, if grad, into dz in place. */
static double rows_loss(float *z, const int32_t *targets, int rows, int V, float inv_valid, int grad, float *row_loss)
{
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int r = 0; r < rows; r++) {
        float *row = z + (int64_t)r * V;
        int t = targets[r];
        if (t == FTB_IGNORE_INDEX) {
            row_loss[r] = 0;
            if (grad) memset(row, 0, sizeof(float) * V);
            continue;
        }
        float m = row[0];
        for (int j = 1; j < V; j++) m = row[j] > m ? row[j] : m;
        double sum = 0;
        for (int j = 0; j < V; j++) sum += expf(row[j] - m);
        float lse = m + (float)log(sum);
        row_loss[r] = lse - row[t];
        total += row_loss[r];
        if (grad) {
            for (int j = 0; j < V; j++) row[j] = expf(row[j] - lse) * inv_valid;
            row[t] -= inv_valid;
        }
    }
    return total;
}

/* z[rows,V] = x·Wᵀ, and dx[rows,D] = dz·W: single sgemms for an fp32 W, tiles
 * of dequantized rows of W (a bounded workspace) for any other format. */
static void head_logits(float *z, const float *x, const ftb_tensor *W, int rows, int D, int V, int stream)
{
    if ((W->dtype == FTB_DTYPE_F32 || !W->quant) && !stream && !ftb_quant_read_perturbed())
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, V, D, 1.0f, x, D, W->data, D, 0.0f, z, V);
    else
        ftb_linear_apply_ex(W, rows, x, z, 0.0f, stream);
}

static void head_dx(float *dx, const float *z, const ftb_tensor *W, int rows, int D, int V, int stream)
{
    if ((W->dtype == FTB_DTYPE_F32 || !W->quant) && !stream)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, V, 1.0f, z, V, W->data, D, 0.0f, dx, D);
    else
        ftb_linear_apply_t_ex(W, rows, z, dx, 0.0f, stream);
}

float ftb_head_loss(float *dx, float *dW, const float *x, const ftb_tensor *W, const int32_t *targets, int B, int T,
                    int D, int V, ftb_loss_mode mode, int chunk_rows, float *seq_loss, int stream)
{
    const int N = B * T;
    int n_valid = 0;
    for (int n = 0; n < N; n++) n_valid += targets[n] != FTB_IGNORE_INDEX;
    const float inv_valid = n_valid ? 1.0f / (float)n_valid : 0.0f;
    const int grad = dx != NULL;
    int rows_per = mode == FTB_LOSS_FULL ? N : (chunk_rows > 0 ? chunk_rows : 128);
    if (rows_per > N) rows_per = N;
    float *z =
        ftb_alloc(mode == FTB_LOSS_FULL ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, sizeof(float) * (size_t)rows_per * V);
    float *row_loss = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N);
    if (!z || !row_loss) { /* the caller sees the failure flag (mem.c) */
        ftb_free(z);
        ftb_free(row_loss);
        return NAN;
    }
    double total = 0;
    for (int c0 = 0; c0 < N; c0 += rows_per) {
        int rows = N - c0 < rows_per ? N - c0 : rows_per;
        if (mode == FTB_LOSS_FULL) ftb_mem_set_phase("fwd head");
        head_logits(z, x + (int64_t)c0 * D, W, rows, D, V, stream && !dW);
        if (mode == FTB_LOSS_FULL && grad) ftb_mem_set_phase("bwd head");
        total += rows_loss(z, targets + c0, rows, V, inv_valid, grad, row_loss + c0);
        if (grad) {
            head_dx(dx + (int64_t)c0 * D, z, W, rows, D, V, stream && !dW);
            if (dW)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, D, rows, 1.0f, z, V, x + (int64_t)c0 * D, D,
                            1.0f, dW, D);
        }
    }
    if (seq_loss)
        for (int b = 0; b < B; b++) {
            double s = 0;
            int cnt = 0;
            for (int t = 0; t < T; t++)
                if (targets[b * T + t] != FTB_IGNORE_INDEX) {
                    s += row_loss[b * T + t];
                    cnt++;
                }
            seq_loss[b] = cnt ? (float)(s / cnt) : 0.0f;
        }
    ftb_free(row_loss);
    ftb_free(z);
    return n_valid ? (float)(total / n_valid) : 0.0f;
}
