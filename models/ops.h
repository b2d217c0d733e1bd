/* ops.h — the decoder's layers as forward/backward pairs of plain functions
 * (the way llm.c's train_gpt2.c writes them).  Shapes are row-major, N rows
 * = B*T positions.  Backward functions *accumulate* into parameter
 * gradients (so a tied or shared weight sums its contributions) and either
 * write or accumulate input gradients as each comment says.  None of them
 * allocates except through ftb_alloc(FTB_MEM_WORKSPACE) for its own scratch,
 * freed before it returns. */
#ifndef FTB_OPS_H
#define FTB_OPS_H
#include "ftbench.h"

/* y[N,out] = x[N,in]·Wᵀ (+ b) */
void ftb_linear_forward(float *y, const float *x, const float *W, const float *b, int N, int in, int out);
/* dx[N,in] += dy·W (if dx); dW[out,in] += dyᵀ·x (if dW); db += Σrows dy (if db) */
void ftb_linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int N,
                         int in, int out);
/* The same with W in any storage format (models/quant_linear.c): an fp32 W takes
 * the paths above; another format is dequantized tile by tile, and has no
 * dW (a weight that trains is fp32). */
void ftb_linear_forward_w(float *y, const float *x, const ftb_tensor *W, const float *b, int N, int in, int out);
void ftb_linear_backward_w(float *dx, float *dW, float *db, const float *dy, const float *x, const ftb_tensor *W, int N,
                           int in, int out);

/* y = x / sqrt(mean(x²)+eps) * w, per row; rstd[N] saved for backward */
void ftb_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int D, float eps);
/* dx[N,D] += ∂; dw[D] += ∂ (if dw) */
void ftb_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *rstd, const float *w,
                          int N, int D);

/* inv_freq[i] of RoPE pair i (i < head_dim/2), rope_scaling applied. */
double ftb_rope_inv_freq(const ftb_config *cfg, int i);
/* Rotary tables for positions 0..T-1: cos/sin [T, head_dim/2]. */
void ftb_rope_tables(float *cos_t, float *sin_t, int T, const ftb_config *cfg);
/* Rotates x[N, n_heads*head_dim] in place (position = row % T). */
void ftb_rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int T, int n_heads, int head_dim);
/* The transpose rotation: turns d(rotated) into d(unrotated), in place. */
void ftb_rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int T, int n_heads, int head_dim);

/* h = silu(g) * u */
void ftb_swiglu_forward(float *h, const float *g, const float *u, int64_t n);
/* dg, du written from dh */
void ftb_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);

/* Causal grouped-query attention.  q [N, H*hd], k/v [N, Hkv*hd], out o
 * [N, H*hd].  flash: keeps lse [B,H,T]; eager: keeps probs [B,H,T,T]. */
typedef struct {
    int B, T, H, Hkv, hd;
} attn_shape;
void ftb_attention_flash_forward(float *o, float *lse, const float *q, const float *k, const float *v, attn_shape s);
/* dq, dk, dv are written (not accumulated). */
void ftb_attention_flash_backward(float *dq, float *dk, float *dv, const float *d_o, const float *q, const float *k,
                                  const float *v, const float *o, const float *lse, attn_shape s);
void ftb_attention_eager_forward(float *o, float *probs, const float *q, const float *k, const float *v, attn_shape s);
void ftb_attention_eager_backward(float *dq, float *dk, float *dv, const float *d_o, const float *q, const float *k,
                                  const float *v, const float *probs, attn_shape s);

/* LM head + next-token cross-entropy over x [N,D] (the final norm's output).
 * Returns the mean loss over targets != FTB_IGNORE_INDEX (0 if none).
 * If dx is given, also writes dx [N,D] and accumulates dW (if dW) for
 * d(mean loss) — the gradient is fused into the pass so that, in chunked
 * mode, no more than chunk_rows rows of logits ever exist.  seq_loss [B]
 * optional.  full mode: the N×V logits are held as a saved activation
 * between the forward and backward halves, as frameworks do.  stream: W's
 * mapped pages are dropped tile by tile once used (lazy residency). */
float ftb_head_loss(float *dx, float *dW, const float *x, const ftb_tensor *W, const int32_t *targets, int B, int T,
                    int D, int V, ftb_loss_mode mode, int chunk_rows, float *seq_loss, int stream);

/* x[N,D] = E[tokens] (E in any storage format: rows dequantized) */
void ftb_embedding_forward(float *x, const ftb_tensor *E, const int32_t *tokens, int N, int D);
/* dE[tokens] += dx */
void ftb_embedding_backward(float *dE, const float *dx, const int32_t *tokens, int N, int D);

#endif
