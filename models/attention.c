/* attention.c — causal grouped-query attention, two ways.
 *
 * eager: materialises the T×T probabilities of every head and keeps them for
 *   backward, as PyTorch's eager attention does: memory O(B·H·T²).
 * flash: tiles of BR query rows × BC key columns with an online softmax; keeps
 *   only the output and each row's log-sum-exp, and recomputes the tiles in
 *   backward: memory O(B·H·T).
 * Both give the same gradients up to rounding.  Query head h reads key/value
 * head h / (H/Hkv).  Every product is an sgemm on strided views of q, k, v;
 * the heads run in parallel with OpenBLAS held to one thread meanwhile, so
 * the two thread pools never compete. */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

enum { BR = 64, BC = 128 };

#define QROW(base, b, t, h) ((base) + ((int64_t)(b)*s.T + (t)) * ldq + (int64_t)(h)*s.hd)
#define KROW(base, b, t, h) ((base) + ((int64_t)(b)*s.T + (t)) * ldk + (int64_t)(h)*s.hd)

/* OpenBLAS threads off while our own threads run one sgemm each. */
static int blas_serial_begin(void)
{
    int n = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return n;
}
static void blas_serial_end(int n) { openblas_set_num_threads(n); }

void ftb_attention_flash_forward(float *o, float *lse, const float *q, const float *k, const float *v, attn_shape s)
{
    const int ldq = s.H * s.hd, ldk = s.Hkv * s.hd, group = s.H / s.Hkv;
    const int tiles = (s.T + BR - 1) / BR;
    const float scale = 1.0f / sqrtf((float)s.hd);
    int nt = omp_get_max_threads();
    float *ws = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)nt * (BR * BC + BR * s.hd + 2 * BR));
    if (!ws) return; /* the caller sees the failure flag (mem.c) */
    int saved_threads = blas_serial_begin();
#pragma omp parallel
    {
        float *S = ws + (size_t)omp_get_thread_num() * (BR * BC + BR * s.hd + 2 * BR);
        float *acc = S + BR * BC, *mx = acc + BR * s.hd, *sum = mx + BR;
#pragma omp for schedule(dynamic)
        for (int64_t job = 0; job < (int64_t)s.B * s.H * tiles; job++) {
            int b = (int)(job / ((int64_t)s.H * tiles)), h = (int)(job / tiles % s.H), tile = (int)(job % tiles);
            int kvh = h / group, i0 = tile * BR, br = s.T - i0 < BR ? s.T - i0 : BR;
            for (int r = 0; r < br; r++) {
                mx[r] = -INFINITY;
                sum[r] = 0;
            }
            memset(acc, 0, sizeof(float) * br * s.hd);
            for (int j0 = 0; j0 < i0 + br; j0 += BC) {
                int bc = i0 + br - j0 < BC ? i0 + br - j0 : BC;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, br, bc, s.hd, scale, QROW(q, b, i0, h), ldq,
                            KROW(k, b, j0, kvh), ldk, 0.0f, S, BC);
                for (int r = 0; r < br; r++) {
                    float *row = S + r * BC;
                    int last = i0 + r - j0; /* last visible column of this row */
                    float m = mx[r];
                    for (int c = 0; c < bc; c++) {
                        if (c > last)
                            row[c] = -INFINITY;
                        else if (row[c] > m)
                            m = row[c];
                    }
                    float corr = expf(mx[r] - m), z = 0; /* m is finite: column 0 is always seen first */
                    for (int c = 0; c < bc; c++) {
                        row[c] = expf(row[c] - m);
                        z += row[c];
                    }
                    sum[r] = sum[r] * corr + z;
                    mx[r] = m;
                    if (corr != 1.0f)
                        for (int d = 0; d < s.hd; d++) acc[r * s.hd + d] *= corr;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, br, s.hd, bc, 1.0f, S, BC, KROW(v, b, j0, kvh),
                            ldk, 1.0f, acc, s.hd);
            }
            for (int r = 0; r < br; r++) {
                float *out = QROW(o, b, i0 + r, h);
                float inv = 1.0f / sum[r];
                for (int d = 0; d < s.hd; d++) out[d] = acc[r * s.hd + d] * inv;
                lse[((int64_t)b * s.H + h) * s.T + i0 + r] = mx[r] + logf(sum[r]);
            }
        }
    }
    blas_serial_end(saved_threads);
    ftb_free(ws);
}

void ftb_attention_flash_backward(float *dq, float *dk, float *dv, const float *d_o, const float *q, const float *k,
                                  const float *v, const float *o, const float *lse, attn_shape s)
{
    const int ldq = s.H * s.hd, ldk = s.Hkv * s.hd, group = s.H / s.Hkv;
    const int tiles = (s.T + BR - 1) / BR;
    const float scale = 1.0f / sqrtf((float)s.hd);
    const int64_t N = (int64_t)s.B * s.T;
    memset(dq, 0, sizeof(float) * N * ldq);
    memset(dk, 0, sizeof(float) * N * ldk);
    memset(dv, 0, sizeof(float) * N * ldk);
    int nt = omp_get_max_threads();
    size_t per = 2 * BR * BC + BR;
    float *ws = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)nt * per);
    if (!ws) return; /* the caller sees the failure flag (mem.c) */
    int saved_threads = blas_serial_begin();
    /* One job per (batch, kv head): the query heads of a group add into the
     * same dk, dv, so they stay in one thread. */
#pragma omp parallel
    {
        float *P = ws + (size_t)omp_get_thread_num() * per, *dP = P + BR * BC, *Di = dP + BR * BC;
#pragma omp for schedule(dynamic)
        for (int64_t job = 0; job < (int64_t)s.B * s.Hkv; job++) {
            int b = (int)(job / s.Hkv), kvh = (int)(job % s.Hkv);
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int tile = 0; tile < tiles; tile++) {
                    int i0 = tile * BR, br = s.T - i0 < BR ? s.T - i0 : BR;
                    const float *L = lse + ((int64_t)b * s.H + h) * s.T + i0;
                    for (int r = 0; r < br; r++) {
                        const float *g = QROW(d_o, b, i0 + r, h), *out = QROW(o, b, i0 + r, h);
                        float acc = 0;
                        for (int d = 0; d < s.hd; d++) acc += g[d] * out[d];
                        Di[r] = acc;
                    }
                    for (int j0 = 0; j0 < i0 + br; j0 += BC) {
                        int bc = i0 + br - j0 < BC ? i0 + br - j0 : BC;
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, br, bc, s.hd, scale, QROW(q, b, i0, h),
                                    ldq, KROW(k, b, j0, kvh), ldk, 0.0f, P, BC);
                        for (int r = 0; r < br; r++) {
                            int last = i0 + r - j0;
                            for (int c = 0; c < bc; c++) P[r * BC + c] = c > last ? 0.0f : expf(P[r * BC + c] - L[r]);
                        }
                        /* dV += Pᵀ·dO;  dP = dO·Vᵀ */
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bc, s.hd, br, 1.0f, P, BC,
                                    QROW(d_o, b, i0, h), ldq, 1.0f, KROW(dv, b, j0, kvh), ldk);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, br, bc, s.hd, 1.0f, QROW(d_o, b, i0, h),
                                    ldq, KROW(v, b, j0, kvh), ldk, 0.0f, dP, BC);
                        for (int r = 0; r < br; r++)
                            for (int c = 0; c < bc; c++) dP[r * BC + c] = P[r * BC + c] * (dP[r * BC + c] - Di[r]);
                        /* dQ += scale·dS·K;  dK += scale·dSᵀ·Q */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, br, s.hd, bc, scale, dP, BC,
                                    KROW(k, b, j0, kvh), ldk, 1.0f, QROW(dq, b, i0, h), ldq);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bc, s.hd, br, scale, dP, BC,
                                    QROW(q, b, i0, h), ldq, 1.0f, KROW(dk, b, j0, kvh), ldk);
                    }
                }
        }
    }
    blas_serial_end(saved_threads);
    ftb_free(ws);
}

void ftb_attention_eager_forward(float *o, float *probs, const float *q, const float *k, const float *v, attn_shape s)
{
    const int ldq = s.H * s.hd, ldk = s.Hkv * s.hd, group = s.H / s.Hkv;
    const float scale = 1.0f / sqrtf((float)s.hd);
    int saved_threads = blas_serial_begin();
#pragma omp parallel for schedule(dynamic)
    for (int64_t job = 0; job < (int64_t)s.B * s.H; job++) {
        int b = (int)(job / s.H), h = (int)(job % s.H), kvh = h / group;
        float *P = probs + job * (int64_t)s.T * s.T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.T, s.T, s.hd, scale, QROW(q, b, 0, h), ldq,
                    KROW(k, b, 0, kvh), ldk, 0.0f, P, s.T);
        for (int i = 0; i < s.T; i++) {
            float *row = P + (int64_t)i * s.T, m = -INFINITY, z = 0;
            for (int j = 0; j <= i; j++) m = row[j] > m ? row[j] : m;
            for (int j = 0; j <= i; j++) z += (row[j] = expf(row[j] - m));
            for (int j = 0; j <= i; j++) row[j] /= z;
            for (int j = i + 1; j < s.T; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s.T, s.hd, s.T, 1.0f, P, s.T, KROW(v, b, 0, kvh), ldk,
                    0.0f, QROW(o, b, 0, h), ldq);
    }
    blas_serial_end(saved_threads);
}

void ftb_attention_eager_backward(float *dq, float *dk, float *dv, const float *d_o, const float *q, const float *k,
                                  const float *v, const float *probs, attn_shape s)
{
    const int ldq = s.H * s.hd, ldk = s.Hkv * s.hd, group = s.H / s.Hkv;
    const float scale = 1.0f / sqrtf((float)s.hd);
    const int64_t N = (int64_t)s.B * s.T;
    memset(dk, 0, sizeof(float) * N * ldk);
    memset(dv, 0, sizeof(float) * N * ldk);
    int nt = omp_get_max_threads();
    float *ws = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)nt * s.T * s.T);
    if (!ws) return; /* the caller sees the failure flag (mem.c) */
    int saved_threads = blas_serial_begin();
#pragma omp parallel
    {
        float *dS = ws + (size_t)omp_get_thread_num() * s.T * s.T;
#pragma omp for schedule(dynamic)
        for (int64_t job = 0; job < (int64_t)s.B * s.Hkv; job++) {
            int b = (int)(job / s.Hkv), kvh = (int)(job % s.Hkv);
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                const float *P = probs + ((int64_t)b * s.H + h) * s.T * s.T;
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s.T, s.hd, s.T, 1.0f, P, s.T, QROW(d_o, b, 0, h),
                            ldq, 1.0f, KROW(dv, b, 0, kvh), ldk);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.T, s.T, s.hd, 1.0f, QROW(d_o, b, 0, h), ldq,
                            KROW(v, b, 0, kvh), ldk, 0.0f, dS, s.T);
                for (int i = 0; i < s.T; i++) {
                    const float *p = P + (int64_t)i * s.T;
                    float *d = dS + (int64_t)i * s.T, dot = 0;
                    for (int j = 0; j <= i; j++) dot += p[j] * d[j];
                    for (int j = 0; j < s.T; j++) d[j] = p[j] * (d[j] - dot);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s.T, s.hd, s.T, scale, dS, s.T,
                            KROW(k, b, 0, kvh), ldk, 0.0f, QROW(dq, b, 0, h), ldq);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s.T, s.hd, s.T, scale, dS, s.T, QROW(q, b, 0, h),
                            ldq, 1.0f, KROW(dk, b, 0, kvh), ldk);
            }
        }
    }
    blas_serial_end(saved_threads);
    ftb_free(ws);
}
