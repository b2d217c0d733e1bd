/* transformer.c — the decoder: blocks forward and backward, the residual
 * stream, what each block keeps for backward, and the model-level calls.
 *
 * Memory, block by block (N = B·T rows, D hidden, Q = H·hd, KV = Hkv·hd,
 * F ffn), when a block keeps everything for backward (FTB_KEEP_ALL):
 *   always:  block input x [N,D] (the residual stream), rstd1, rstd2 [N],
 *            q, attn out [N,Q], k, v [N,KV], x_mid [N,D], gate, up [N,F],
 *            and lse [B,H,T] (flash) or probs [B,H,T,T] (eager);
 *   only if a linear that reads it trains its weight or has a hook that
 *   needs its input:  ln1 [N,D] (q/k/v), ln2 [N,D] (gate/up), h [N,F] (down).
 * A frozen linear needs no saved input for its own backward (dx = dy·W), so
 * a frozen base keeps less than a trained one: that difference is what the
 * methods measured here are about.  FTB_KEEP_INPUT keeps only x and
 * recomputes the block in backward.  Blocks below the lowest one with
 * anything trainable run in inference mode and keep nothing. */
#include "ftbench.h"
#include "model_internal.h"
#include "offload.h"
#include "op_time.h"
#include "ops.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *ln1, *rstd1, *q, *k, *v, *att, *lse, *probs, *x_mid, *ln2, *rstd2, *g, *u, *h;
    void *hook_saved[FTB_LIN_COUNT];
} block_cache;

typedef struct {
    ftb_model *m;
    const ftb_batch *batch;
    const ftb_run_opts *opts;
    const float *rope_cos, *rope_sin;
    int N;
    int training;
    ftb_read_perturb_fn perturb; /* the model's read perturbation, or NULL */
    void *perturb_ctx;
    float *perturbed; /* one norm or bias vector as read, when perturbed */
} run_ctx;

static float *alloc_f(ftb_mem_category c, int64_t n) { return ftb_alloc(c, sizeof(float) * (size_t)n); }
static float *calloc_f(ftb_mem_category c, int64_t n) { return ftb_calloc(c, sizeof(float) * (size_t)n); }

/* TIMED(cls, flops, bytes, call): runs call as one op of class cls, with
 * its FLOPs and bytes by shape (models/op_time.c).  flops, bytes may come
 * as one *_COST(...) pair: the indirection expands it into two arguments. */
#define TIMED(cls, ...) TIMED_(cls, __VA_ARGS__)
#define TIMED_(cls, flops, bytes, call)             \
    do {                                            \
        ftb_op_timer op_t_ = ftb_op_begin();        \
        call;                                       \
        ftb_op_end((cls), op_t_, (flops), (bytes)); \
    } while (0)

/* FLOPs and bytes of the thin ops, by shape (exp counted as one flop). */
static double attn_fwd_flops(attn_shape s) /* QKᵀ and PV over the causal half */
{
    return 2.0 * s.B * s.H * (double)s.hd * s.T * (s.T + 1.0);
}
static double attn_bytes(attn_shape s, int backward) /* q, k, v, o (and dO, dq, dk, dv) */
{
    double N = (double)s.B * s.T, Q = (double)s.H * s.hd, KV = (double)s.Hkv * s.hd;
    return 4.0 * (backward ? 3.0 * N * Q + 2.0 * N * KV + N * Q + 2.0 * N * KV : 2.0 * N * Q + 2.0 * N * KV);
}
#define NORM_FWD_COST(N, D) 4.0 * (N) * (D), 4.0 * (2.0 * (N) * (D) + (D) + (N))
#define NORM_BWD_COST(N, D) 11.0 * (N) * (D), 4.0 * (4.0 * (N) * (D) + (D) + (N))
#define ROPE_COST(N, width) 3.0 * (N) * (width), 8.0 * (N) * (width)
#define ADD_COST(n)         (double)(n), 12.0 * (n)


static int linear_in(const ftb_config *c, ftb_linear_kind k)
{
    if (k == FTB_LIN_O) return c->n_heads * c->head_dim;
    if (k == FTB_LIN_DOWN) return c->ffn_dim;
    return c->dim;
}

static int linear_out(const ftb_config *c, ftb_linear_kind k)
{
    switch (k) {
    case FTB_LIN_Q: return c->n_heads * c->head_dim;
    case FTB_LIN_K:
    case FTB_LIN_V: return c->n_kv_heads * c->head_dim;
    case FTB_LIN_GATE:
    case FTB_LIN_UP: return c->ffn_dim;
    default: return c->dim;
    }
}

/* Whether backward needs this linear's input kept. */
static int needs_input(ftb_layer *ly, ftb_linear_kind k)
{
    ftb_adapter *a = ly->adapter[k];
    return ftb_layer_weight(ly, k)->trainable || (a && a->needs_input);
}

static ftb_linear_ctx hook_ctx(const run_ctx *rc, int l, ftb_linear_kind k)
{
    ftb_linear_ctx c = {
        rc->m,        l,        k, rc->batch->B, rc->batch->T, linear_in(&rc->m->cfg, k), linear_out(&rc->m->cfg, k),
        rc->training, rc->batch
    };
    return c;
}

/* A norm or bias vector as this run reads it: t itself, or a copy in
 * rc->perturbed with the read perturbation added (valid until the next call). */
static const float *read_vector(const run_ctx *rc, const ftb_tensor *t)
{
    if (!rc->perturb) return t->data;
    memcpy(rc->perturbed, t->data, sizeof(float) * (size_t)t->numel);
    rc->perturb(rc->perturb_ctx, t, 0, t->numel, rc->perturbed);
    return rc->perturbed;
}

/* y = x·Wᵀ + b, then the hook (if any) adjusts y. */
static void hooked_linear_forward(const run_ctx *rc, int l, ftb_linear_kind k, const float *x, float *y, void **saved)
{
    ftb_layer *ly = &rc->m->layers[l];
    ftb_tensor *W = ftb_layer_weight(ly, k), *b = ftb_layer_bias(ly, k);
    const int in = linear_in(&rc->m->cfg, k), out = linear_out(&rc->m->cfg, k);
    const double N = rc->N;
    TIMED(FTB_OP_LINEAR_Q + k, 2.0 * N * in * out, 4.0 * N * (in + out) + (double)ftb_tensor_storage_bytes(W),
          ftb_linear_forward_w(y, x, W, b->numel ? read_vector(rc, b) : NULL, rc->N, in, out));
    ftb_adapter *a = ly->adapter[k];
    if (a) {
        ftb_linear_ctx c = hook_ctx(rc, l, k);
        TIMED(FTB_OP_HOOKS, 0, 0, a->ops->forward(a, &c, x, y, saved));
    }
}

/* dx += (hook and base) input gradient; parameter gradients accumulated.
 * dy may be rewritten by the hook: callers pass a copy if they need it. */
static void hooked_linear_backward(const run_ctx *rc, int l, ftb_linear_kind k, const float *x, float *dy, float *dx,
                                   void *saved)
{
    ftb_layer *ly = &rc->m->layers[l];
    ftb_tensor *W = ftb_layer_weight(ly, k), *b = ftb_layer_bias(ly, k);
    ftb_adapter *a = ly->adapter[k];
    if (a) {
        ftb_linear_ctx c = hook_ctx(rc, l, k);
        TIMED(FTB_OP_HOOKS, 0, 0, a->ops->backward(a, &c, a->needs_input ? x : NULL, dy, dx, saved));
    }
    const int in = linear_in(&rc->m->cfg, k), out = linear_out(&rc->m->cfg, k);
    const double N = rc->N, products = W->trainable ? 2 : 1; /* dx = dy·W, and dW += dyᵀ·x if it trains */
    /* dy and W read, dx read and written; x read and dW read and written if W trains */
    const double bytes = 4.0 * N * (out + 2.0 * in) + (double)ftb_tensor_storage_bytes(W) +
                         (W->trainable ? 4.0 * N * in + 8.0 * in * out : 0);
    TIMED(FTB_OP_LINEAR_Q + k, products * 2.0 * N * in * out, bytes,
          ftb_linear_backward_w(dx, W->trainable ? W->grad : NULL, b->numel && b->trainable ? b->grad : NULL, dy, x, W,
                                rc->N, in, out));
}

static void add_inplace(float *y, const float *x, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

static void drop(float **p)
{
    ftb_free(*p);
    *p = NULL;
}

/* Frees what a block kept, when its backward will not run (or failed). */
static void release_cache(const run_ctx *rc, int l, block_cache *c)
{
    float *bufs[] = { c->ln1,   c->rstd1, c->q,   c->k,     c->v, c->att, c->lse,
                      c->probs, c->x_mid, c->ln2, c->rstd2, c->g, c->u,   c->h };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ftb_free(bufs[i]);
    for (int k = 0; k < FTB_LIN_COUNT; k++) {
        ftb_adapter *a = rc->m->layers[l].adapter[k];
        if (c->hook_saved[k] && a && a->ops->release) a->ops->release(a, c->hook_saved[k]);
    }
    memset(c, 0, sizeof *c);
}

/* An allocation that failed here, or inside a hook or an op (the sticky
 * flag of mem.c), ends the block: what it holds is released, -1 returned. */
#define ALLOC_OR_FAIL(p, cat, n)                     \
    do {                                             \
        if (!((p) = alloc_f((cat), (n)))) goto fail; \
    } while (0)
#define CHECK_FAILED()                   \
    do {                                 \
        if (ftb_mem_failed()) goto fail; \
    } while (0)

/* One block.  With c == NULL nothing is kept (inference, or a block that
 * will be recomputed); with c, what backward needs is kept in c.  0, or -1
 * when an allocation failed (nothing left allocated, c cleared). */
static int block_forward(const run_ctx *rc, int l, const float *x, float *out, block_cache *c)
{
    const ftb_config *cfg = &rc->m->cfg;
    ftb_layer *ly = &rc->m->layers[l];
    const int N = rc->N, D = cfg->dim, F = cfg->ffn_dim;
    const int64_t Q = (int64_t)cfg->n_heads * cfg->head_dim, KV = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const int keep = c != NULL;
    block_cache tmp;
    if (!c) c = &tmp;
    memset(c, 0, sizeof *c);
    void **saved = keep ? c->hook_saved : NULL;
#define CAT(cond)     (keep && (cond) ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE)
#define SAVED_SLOT(k) (saved ? &saved[k] : NULL)
    int keep_ln1 = needs_input(ly, FTB_LIN_Q) || needs_input(ly, FTB_LIN_K) || needs_input(ly, FTB_LIN_V);
    int keep_ln2 = needs_input(ly, FTB_LIN_GATE) || needs_input(ly, FTB_LIN_UP);
    int keep_h = needs_input(ly, FTB_LIN_DOWN);

    /* attention half */
    ALLOC_OR_FAIL(c->ln1, CAT(keep_ln1), (int64_t)N * D);
    ALLOC_OR_FAIL(c->rstd1, CAT(1), N);
    TIMED(FTB_OP_NORM, NORM_FWD_COST(N, D),
          ftb_rmsnorm_forward(c->ln1, c->rstd1, x, read_vector(rc, &ly->attn_norm), N, D, cfg->norm_eps));
    ALLOC_OR_FAIL(c->q, CAT(1), N * Q);
    ALLOC_OR_FAIL(c->k, CAT(1), N * KV);
    ALLOC_OR_FAIL(c->v, CAT(1), N * KV);
    hooked_linear_forward(rc, l, FTB_LIN_Q, c->ln1, c->q, SAVED_SLOT(FTB_LIN_Q));
    hooked_linear_forward(rc, l, FTB_LIN_K, c->ln1, c->k, SAVED_SLOT(FTB_LIN_K));
    hooked_linear_forward(rc, l, FTB_LIN_V, c->ln1, c->v, SAVED_SLOT(FTB_LIN_V));
    CHECK_FAILED();
    if (!(keep && keep_ln1)) drop(&c->ln1);
    TIMED(FTB_OP_ROPE, ROPE_COST(N, (double)(Q + KV)), {
        ftb_rope_forward(c->q, rc->rope_cos, rc->rope_sin, N, rc->batch->T, cfg->n_heads, cfg->head_dim);
        ftb_rope_forward(c->k, rc->rope_cos, rc->rope_sin, N, rc->batch->T, cfg->n_kv_heads, cfg->head_dim);
    });
    attn_shape as = { rc->batch->B, rc->batch->T, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim };
    ALLOC_OR_FAIL(c->att, CAT(1), N * Q);
    if (rc->opts->attention == FTB_ATTN_EAGER) {
        ALLOC_OR_FAIL(c->probs, CAT(1), (int64_t)as.B * as.H * as.T * as.T);
        TIMED(FTB_OP_ATTN_FWD, attn_fwd_flops(as), attn_bytes(as, 0) + 8.0 * as.B * as.H * (double)as.T * as.T,
              ftb_attention_eager_forward(c->att, c->probs, c->q, c->k, c->v, as));
    } else {
        ALLOC_OR_FAIL(c->lse, CAT(1), (int64_t)as.B * as.H * as.T);
        TIMED(FTB_OP_ATTN_FWD, attn_fwd_flops(as), attn_bytes(as, 0),
              ftb_attention_flash_forward(c->att, c->lse, c->q, c->k, c->v, as));
    }
    CHECK_FAILED();
    if (!keep) {
        drop(&c->q);
        drop(&c->k);
        drop(&c->v);
        drop(&c->probs);
        drop(&c->lse);
    }
    ALLOC_OR_FAIL(c->x_mid, CAT(1), (int64_t)N * D);
    hooked_linear_forward(rc, l, FTB_LIN_O, c->att, c->x_mid, SAVED_SLOT(FTB_LIN_O));
    CHECK_FAILED();
    TIMED(FTB_OP_RESIDUAL, ADD_COST((double)N * D), add_inplace(c->x_mid, x, (int64_t)N * D));
    if (!keep) drop(&c->att);

    /* MLP half */
    ALLOC_OR_FAIL(c->ln2, CAT(keep_ln2), (int64_t)N * D);
    ALLOC_OR_FAIL(c->rstd2, CAT(1), N);
    TIMED(FTB_OP_NORM, NORM_FWD_COST(N, D),
          ftb_rmsnorm_forward(c->ln2, c->rstd2, c->x_mid, read_vector(rc, &ly->mlp_norm), N, D, cfg->norm_eps));
    ALLOC_OR_FAIL(c->g, CAT(1), (int64_t)N * F);
    ALLOC_OR_FAIL(c->u, CAT(1), (int64_t)N * F);
    hooked_linear_forward(rc, l, FTB_LIN_GATE, c->ln2, c->g, SAVED_SLOT(FTB_LIN_GATE));
    hooked_linear_forward(rc, l, FTB_LIN_UP, c->ln2, c->u, SAVED_SLOT(FTB_LIN_UP));
    CHECK_FAILED();
    if (!(keep && keep_ln2)) drop(&c->ln2);
    ALLOC_OR_FAIL(c->h, CAT(keep_h), (int64_t)N * F);
    TIMED(FTB_OP_SWIGLU, 5.0 * N * F, 12.0 * N * F, ftb_swiglu_forward(c->h, c->g, c->u, (int64_t)N * F));
    if (!keep) {
        drop(&c->g);
        drop(&c->u);
    }
    hooked_linear_forward(rc, l, FTB_LIN_DOWN, c->h, out, SAVED_SLOT(FTB_LIN_DOWN));
    CHECK_FAILED();
    TIMED(FTB_OP_RESIDUAL, ADD_COST((double)N * D), add_inplace(out, c->x_mid, (int64_t)N * D));
    if (!(keep && keep_h)) drop(&c->h);
    if (!keep) {
        drop(&c->x_mid);
        drop(&c->rstd1);
        drop(&c->rstd2);
    }
    return 0;
fail:
    release_cache(rc, l, c);
    return -1;
#undef CAT
#undef SAVED_SLOT
}

/* dres holds d(block output) on entry and d(block input) on return.
 * Frees everything c kept, also when an allocation fails (then -1). */
static int block_backward(const run_ctx *rc, int l, const float *x, block_cache *c, float *dres)
{
    const ftb_config *cfg = &rc->m->cfg;
    ftb_layer *ly = &rc->m->layers[l];
    const int N = rc->N, D = cfg->dim, F = cfg->ffn_dim;
    const int64_t Q = (int64_t)cfg->n_heads * cfg->head_dim, KV = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const int64_t ND = (int64_t)N * D;
    float *dh = NULL, *dy_copy = NULL, *du = NULL, *dln2 = NULL, *datt = NULL, *dq = NULL, *dk = NULL, *dv = NULL,
          *dln1 = NULL, *dy;
    /* A hook frees its saved data in its backward: forget it once called. */
#define HOOK_BACKWARD(k, xin, dy, dx)                                            \
    do {                                                                         \
        hooked_linear_backward(rc, l, (k), (xin), (dy), (dx), c->hook_saved[k]); \
        c->hook_saved[k] = NULL;                                                 \
    } while (0)

    /* MLP half: down, SwiGLU, gate/up, RMSNorm; the residual passes dres through. */
    dh = calloc_f(FTB_MEM_WORKSPACE, (int64_t)N * F);
    if (!dh) goto fail;
    dy = dres;
    if (ly->adapter[FTB_LIN_DOWN]) {
        ALLOC_OR_FAIL(dy_copy, FTB_MEM_WORKSPACE, ND);
        TIMED(FTB_OP_RESIDUAL, 0, 8.0 * ND, memcpy(dy_copy, dres, sizeof(float) * ND));
        dy = dy_copy;
    }
    HOOK_BACKWARD(FTB_LIN_DOWN, c->h, dy, dh);
    drop(&dy_copy);
    drop(&c->h);
    CHECK_FAILED();
    ALLOC_OR_FAIL(du, FTB_MEM_WORKSPACE, (int64_t)N * F);
    /* dg overwrites dh element by element */
    TIMED(FTB_OP_SWIGLU, 10.0 * N * F, 20.0 * N * F, ftb_swiglu_backward(dh, du, dh, c->g, c->u, (int64_t)N * F));
    drop(&c->g);
    drop(&c->u);
    dln2 = calloc_f(FTB_MEM_WORKSPACE, ND);
    if (!dln2) goto fail;
    HOOK_BACKWARD(FTB_LIN_GATE, c->ln2, dh, dln2); /* dh holds dg now */
    HOOK_BACKWARD(FTB_LIN_UP, c->ln2, du, dln2);
    drop(&dh);
    drop(&du);
    drop(&c->ln2);
    CHECK_FAILED();
    TIMED(FTB_OP_NORM, NORM_BWD_COST(N, D),
          ftb_rmsnorm_backward(dres, ly->mlp_norm.trainable ? ly->mlp_norm.grad : NULL, dln2, c->x_mid, c->rstd2,
                               ly->mlp_norm.data, N, D));
    drop(&dln2);
    drop(&c->x_mid);
    drop(&c->rstd2);
    CHECK_FAILED();

    /* attention half */
    datt = calloc_f(FTB_MEM_WORKSPACE, N * Q);
    if (!datt) goto fail;
    dy = dres;
    if (ly->adapter[FTB_LIN_O]) {
        ALLOC_OR_FAIL(dy_copy, FTB_MEM_WORKSPACE, ND);
        TIMED(FTB_OP_RESIDUAL, 0, 8.0 * ND, memcpy(dy_copy, dres, sizeof(float) * ND));
        dy = dy_copy;
    }
    HOOK_BACKWARD(FTB_LIN_O, c->att, dy, datt);
    drop(&dy_copy);
    CHECK_FAILED();
    ALLOC_OR_FAIL(dq, FTB_MEM_WORKSPACE, N * Q);
    ALLOC_OR_FAIL(dk, FTB_MEM_WORKSPACE, N * KV);
    ALLOC_OR_FAIL(dv, FTB_MEM_WORKSPACE, N * KV);
    attn_shape as = { rc->batch->B, rc->batch->T, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim };
    /* recomputed scores, dV, dP, dQ, dK: five products of the forward's two */
    TIMED(FTB_OP_ATTN_BWD, 2.5 * attn_fwd_flops(as), attn_bytes(as, 1), {
        if (c->probs)
            ftb_attention_eager_backward(dq, dk, dv, datt, c->q, c->k, c->v, c->probs, as);
        else
            ftb_attention_flash_backward(dq, dk, dv, datt, c->q, c->k, c->v, c->att, c->lse, as);
    });
    drop(&datt);
    drop(&c->att);
    drop(&c->probs);
    drop(&c->lse);
    drop(&c->q);
    drop(&c->k);
    drop(&c->v);
    CHECK_FAILED();
    TIMED(FTB_OP_ROPE, ROPE_COST(N, (double)(Q + KV)), {
        ftb_rope_backward(dq, rc->rope_cos, rc->rope_sin, N, rc->batch->T, cfg->n_heads, cfg->head_dim);
        ftb_rope_backward(dk, rc->rope_cos, rc->rope_sin, N, rc->batch->T, cfg->n_kv_heads, cfg->head_dim);
    });
    dln1 = calloc_f(FTB_MEM_WORKSPACE, ND);
    if (!dln1) goto fail;
    HOOK_BACKWARD(FTB_LIN_Q, c->ln1, dq, dln1);
    HOOK_BACKWARD(FTB_LIN_K, c->ln1, dk, dln1);
    HOOK_BACKWARD(FTB_LIN_V, c->ln1, dv, dln1);
    drop(&dq);
    drop(&dk);
    drop(&dv);
    drop(&c->ln1);
    CHECK_FAILED();
    TIMED(FTB_OP_NORM, NORM_BWD_COST(N, D),
          ftb_rmsnorm_backward(dres, ly->attn_norm.trainable ? ly->attn_norm.grad : NULL, dln1, x, c->rstd1,
                               ly->attn_norm.data, N, D));
    drop(&dln1);
    drop(&c->rstd1);
    CHECK_FAILED();
    memset(c, 0, sizeof *c);
    return 0;
fail : {
    float *ws[] = { dh, dy_copy, du, dln2, datt, dq, dk, dv, dln1 };
    for (size_t i = 0; i < sizeof ws / sizeof *ws; i++) ftb_free(ws[i]);
    release_cache(rc, l, c);
    return -1;
}
#undef HOOK_BACKWARD
}

static ftb_keep_policy policy(const ftb_run_opts *o, int l) { return o->keep ? o->keep[l] : FTB_KEEP_ALL; }

int64_t ftb_perturbed_vector_floats(const ftb_config *c)
{
    int64_t n = c->dim, q = (int64_t)c->n_heads * c->head_dim;
    if (q > n) n = q;
    if (c->ffn_dim > n) n = c->ffn_dim; /* the widest norm or bias */
    return n;
}

static int check_batch(const ftb_model *m, const ftb_batch *b, char *err, size_t errlen)
{
    if (!b || b->B <= 0 || b->T <= 0 || !b->tokens || !b->targets) {
        snprintf(err, errlen, "batch: B and T must be positive and tokens/targets given");
        return -1;
    }
    if (b->T > m->cfg.max_seq) {
        snprintf(err, errlen, "batch: sequence length %d exceeds the model's max_position_embeddings %d", b->T,
                 m->cfg.max_seq);
        return -1;
    }
    if ((int64_t)b->B * b->T > INT32_MAX / 2) {
        snprintf(err, errlen, "batch: %d x %d positions is too many", b->B, b->T);
        return -1;
    }
    for (int64_t i = 0; i < (int64_t)b->B * b->T; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= m->cfg.vocab_size) {
            snprintf(err, errlen, "batch: token %d at position %lld is outside the vocabulary (0..%d)", b->tokens[i],
                     (long long)i, m->cfg.vocab_size - 1);
            return -1;
        }
        if (b->targets[i] != FTB_IGNORE_INDEX && (b->targets[i] < 0 || b->targets[i] >= m->cfg.vocab_size)) {
            snprintf(err, errlen, "batch: target %d at position %lld is outside the vocabulary", b->targets[i],
                     (long long)i);
            return -1;
        }
    }
    return 0;
}

/* Lowest block whose backward is needed: below it nothing trains. */
int ftb_model_lowest_trained_block(const ftb_model *m, const ftb_run_opts *o)
{
    int L = m->cfg.n_layers, first = L;
    if (m->embed.trainable) first = 0;
    for (int l = 0; l < L && first == L; l++) {
        ftb_layer *ly = &m->layers[l];
        int any = ly->attn_norm.trainable || ly->mlp_norm.trainable;
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            any |= ftb_layer_weight(ly, k)->trainable || ftb_layer_bias(ly, k)->trainable || ly->adapter[k] != NULL;
        if (any) first = l;
    }
    if (o->first_trainable_layer > first) first = o->first_trainable_layer < L ? o->first_trainable_layer : L;
    return first;
}

static double last_forward_seconds, last_backward_seconds;

void ftb_last_run_times(double *forward, double *backward)
{
    if (forward) *forward = last_forward_seconds;
    if (backward) *backward = last_backward_seconds;
}

/* hidden_out (inference only, models/generate.c): receives the final norm's
 * output [N,D] instead of the LM head and loss being computed. */
static float run(ftb_model *m, const ftb_batch *b, const ftb_run_opts *opts_in, int training, float *hidden_out,
                 char *err, size_t errlen)
{
    ftb_run_opts defaults;
    if (!opts_in) {
        ftb_run_opts_default(&defaults);
        opts_in = &defaults;
    }
    if (check_batch(m, b, err, errlen)) return NAN;
    ftb_mem_clear_failure(); /* per run: what fails from here on fails this run */
    const ftb_config *cfg = &m->cfg;
    const int L = cfg->n_layers, D = cfg->dim, N = b->B * b->T;
    const int64_t ND = (int64_t)N * D;
    run_ctx rc = { m, b, opts_in, NULL, NULL, N, training, NULL, NULL, NULL };
    rc.perturb = ftb_model_read_perturbation(m, &rc.perturb_ctx);
    if (rc.perturb && training) {
        snprintf(err, errlen, "a read perturbation is set: only inference forwards run (clear it to train)");
        return NAN;
    }
    int half = cfg->head_dim / 2;
    float loss = NAN;
    float *rope = NULL, *spare = NULL, *xf = NULL, *rstdf = NULL, *dxf = NULL, *dres = NULL;
    int resident = INT32_MIN; /* the residency unit entered and not yet left */
#define ENTER(u) (ftb_residency_enter(m, (u)), resident = (u))
#define LEAVE(u) (ftb_residency_leave(m, (u)), resident = INT32_MIN)
    const double t_start = ftb_now(), counted_at_start = ftb_op_counted_seconds();
    const int first = training ? ftb_model_lowest_trained_block(m, opts_in) : L;
    /* resid[l] is block l's input; resid[L] feeds the final norm.  Kept
     * (saved) from the first trained block up, else two buffers alternate. */
    float **resid = calloc((size_t)L + 1, sizeof *resid);
    char *offloaded = calloc((size_t)L + 1, 1);
    block_cache *caches = calloc((size_t)L, sizeof *caches);
    if (!resid || !caches || !offloaded) {
        free(resid);
        free(caches);
        free(offloaded);
        snprintf(err, errlen, "out of memory");
        return NAN;
    }
    rope = alloc_f(FTB_MEM_WORKSPACE, 2 * (int64_t)b->T * half);
    if (!rope) goto oom;
    if (rc.perturb) { /* one vector buffer for the whole forward */
        rc.perturbed = alloc_f(FTB_MEM_WORKSPACE, ftb_perturbed_vector_floats(cfg));
        if (!rc.perturbed) goto oom;
        ftb_quant_set_read_perturbation(rc.perturb, rc.perturb_ctx);
    }
    /* The largest dequantization tile, held from the start as the memory
     * model counts it: grown on first use instead, a block's attention peak
     * would see a smaller tile in block 0 than in the next ones. */
    if (ftb_quant_reserve_tile(ftb_quant_largest_tile(m, rc.perturb != NULL))) goto oom;
    ftb_rope_tables(rope, rope + (int64_t)b->T * half, b->T, cfg);
    rc.rope_cos = rope;
    rc.rope_sin = rope + (int64_t)b->T * half;

    ftb_mem_set_phase("fwd embed");
    resid[0] = alloc_f(training && first == 0 ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, ND);
    if (!resid[0]) goto oom;
    ENTER(RES_EMBED);
    /* the rows looked up count as weights while the lookup runs (lazy, mapped) */
    const int64_t looked_up = ftb_residency_lookup_bytes(m, b->tokens, N, (int32_t *)resid[0]);
    ftb_mem_account(FTB_MEM_WEIGHTS, looked_up);
    TIMED(FTB_OP_EMBED, 0, 8.0 * ND, ftb_embedding_forward(resid[0], &m->embed, b->tokens, N, D));
    ftb_mem_account(FTB_MEM_WEIGHTS, -looked_up);
    if (rc.perturb)
        for (int n = 0; n < N; n++)
            rc.perturb(rc.perturb_ctx, &m->embed, (int64_t)b->tokens[n] * D, D, resid[0] + (int64_t)n * D);
    LEAVE(RES_EMBED);
    for (int l = 0; l < L; l++) {
        char phase[32];
        snprintf(phase, sizeof phase, "fwd L%d", l);
        ftb_mem_set_phase(phase);
        int trained = training && l >= first;
        int out_kept = training && l + 1 >= first; /* input of a trained block, or of the final norm */
        if (out_kept && l + 1 < L && policy(opts_in, l + 1) == FTB_KEEP_OFFLOAD) {
            resid[l + 1] = ftb_offload_alloc(opts_in->offload_dir, sizeof(float) * (size_t)ND, err, errlen);
            if (!resid[l + 1]) goto failed; /* err says why */
            offloaded[l + 1] = 1;
        } else if (out_kept || !spare) {
            resid[l + 1] = alloc_f(out_kept ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, ND);
            if (!resid[l + 1]) goto oom;
        } else {
            resid[l + 1] = spare;
            spare = NULL;
        }
        ftb_keep_policy keep = policy(opts_in, l);
        ENTER(l);
        if (block_forward(&rc, l, resid[l], resid[l + 1], trained && keep == FTB_KEEP_ALL ? &caches[l] : NULL))
            goto oom;
        LEAVE(l);
        if (offloaded[l]) ftb_offload_evict(resid[l]); /* consumed: out of RAM until backward */
        if (!trained) {                                /* an inference-mode input is done with: recycle it */
            ftb_free(spare);
            spare = resid[l];
            resid[l] = NULL;
        }
    }
    ftb_free(spare);
    spare = NULL;

    ftb_mem_set_phase("fwd norm");
    ENTER(RES_HEAD); /* final norm and LM head, left after the final norm's backward */
    xf = alloc_f(training ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, ND);
    rstdf = alloc_f(training ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, N);
    if (!xf || !rstdf) goto oom;
    TIMED(FTB_OP_NORM, NORM_FWD_COST(N, D),
          ftb_rmsnorm_forward(xf, rstdf, resid[L], read_vector(&rc, &m->final_norm), N, D, cfg->norm_eps));
    if (!training) {
        ftb_free(resid[L]);
        resid[L] = NULL;
    }
    ftb_mem_set_phase("head");
    if (training && !(dxf = alloc_f(FTB_MEM_WORKSPACE, ND))) goto oom;
    if (hidden_out) { /* generation: the final norm's output, no head */
        memcpy(hidden_out, xf, sizeof(float) * (size_t)ND);
        loss = 0.0f;
    } else {
        /* logits, and with a gradient dx = dz·W (and dW += dzᵀ·x when the head trains) */
        const int head_trains = training && m->lm_head.trainable;
        const double V = cfg->vocab_size, products = 1 + (training ? 1 : 0) + (head_trains ? 1 : 0);
        TIMED(FTB_OP_HEAD_LOSS, products * 2.0 * ND * V + 4.0 * N * V,
              products * (double)ftb_tensor_storage_bytes(&m->lm_head) + 4.0 * (2.0 * ND + 2.0 * N * V),
              loss = ftb_head_loss(dxf, head_trains ? m->lm_head.grad : NULL, xf, &m->lm_head, b->targets, b->B, b->T,
                                   D, cfg->vocab_size, opts_in->loss, opts_in->loss_chunk_rows, opts_in->seq_loss,
                                   m->residency == FTB_RESIDENT_LAZY_BLOCK));
    }
    drop(&xf);
    if (ftb_mem_failed()) goto oom;
    if (!training) LEAVE(RES_HEAD);
    const double t_backward = ftb_now();
    last_forward_seconds = t_backward - t_start;

    if (training) {
        ftb_mem_set_phase("bwd norm");
        dres = calloc_f(FTB_MEM_WORKSPACE, ND);
        if (!dres) goto oom;
        TIMED(FTB_OP_NORM, NORM_BWD_COST(N, D),
              ftb_rmsnorm_backward(dres, m->final_norm.trainable ? m->final_norm.grad : NULL, dxf, resid[L], rstdf,
                                   m->final_norm.data, N, D));
        LEAVE(RES_HEAD);
        drop(&dxf);
        drop(&resid[L]);
        if (ftb_mem_failed()) goto oom;
        for (int l = L - 1; l >= first; l--) {
            char phase[32];
            ENTER(l);
            if (policy(opts_in, l) != FTB_KEEP_ALL) { /* recompute the block, this time keeping what backward needs */
                snprintf(phase, sizeof phase, "recompute L%d", l);
                ftb_mem_set_phase(phase);
                float *out = alloc_f(FTB_MEM_WORKSPACE, ND);
                if (!out) goto oom;
                int bad = block_forward(&rc, l, resid[l], out, &caches[l]);
                ftb_free(out);
                if (bad) goto oom;
            }
            snprintf(phase, sizeof phase, "bwd L%d", l);
            ftb_mem_set_phase(phase);
            if (block_backward(&rc, l, resid[l], &caches[l], dres)) goto oom;
            LEAVE(l);
            if (offloaded[l])
                ftb_offload_free(resid[l]);
            else
                ftb_free(resid[l]);
            resid[l] = NULL;
        }
        if (first == 0 && m->embed.trainable) {
            ftb_mem_set_phase("bwd embed");
            TIMED(FTB_OP_EMBED, (double)ND, 12.0 * ND, ftb_embedding_backward(m->embed.grad, dres, b->tokens, N, D));
        }
    }
    if (ftb_mem_failed()) goto oom; /* a hook that could not allocate said nothing else */
    last_backward_seconds = training ? ftb_now() - t_backward : 0.0;
    goto done;

oom:
    ftb_mem_failure_message(err, errlen);
failed: /* what was allocated goes back; gradients accumulated so far are partial */
    loss = NAN;
    if (resident != INT32_MIN) LEAVE(resident);
done: /* on success every entry below is already NULL or cleared */
    for (int l = 0; l <= L; l++) {
        if (offloaded[l])
            ftb_offload_free(resid[l]);
        else
            ftb_free(resid[l]);
    }
    for (int l = 0; l < L; l++) release_cache(&rc, l, &caches[l]);
    ftb_free(spare);
    ftb_free(xf);
    ftb_free(dxf);
    ftb_free(dres);
    ftb_free(rstdf);
    ftb_free(rope);
    ftb_free(rc.perturbed);
    ftb_quant_set_read_perturbation(NULL, NULL);
    ftb_quant_workspace_release();
    /* the run's time outside its ops: allocation, zeroing, control */
    ftb_op_add_seconds(FTB_OP_CORE_OTHER, (ftb_now() - t_start) - (ftb_op_counted_seconds() - counted_at_start));
    free(resid);
    free(caches);
    free(offloaded);
    return loss;
#undef ENTER
#undef LEAVE
}

float ftb_model_forward(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, char *err, size_t errlen)
{
    return run(m, b, o, 0, NULL, err, errlen);
}

float ftb_model_forward_backward(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, char *err, size_t errlen)
{
    return run(m, b, o, 1, NULL, err, errlen);
}

int ftb_model_forward_hidden(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, float *hidden, char *err,
                             size_t errlen)
{
    return isnan(run(m, b, o, 0, hidden, err, errlen)) ? -1 : 0;
}
