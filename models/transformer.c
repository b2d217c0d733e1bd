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
} run_ctx;

static float *alloc_f(ftb_mem_category c, int64_t n) { return ftb_alloc(c, sizeof(float) * (size_t)n); }
static float *calloc_f(ftb_mem_category c, int64_t n) { return ftb_calloc(c, sizeof(float) * (size_t)n); }

static int linear_in(const ftb_config *c, ftb_linear_kind k) {
    if (k == FTB_LIN_O) return c->n_heads * c->head_dim;
    if (k == FTB_LIN_DOWN) return c->ffn_dim;
    return c->dim;
}

static int linear_out(const ftb_config *c, ftb_linear_kind k) {
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
static int needs_input(ftb_layer *ly, ftb_linear_kind k) {
    ftb_adapter *a = ly->adapter[k];
    return ftb_layer_weight(ly, k)->trainable || (a && a->needs_input);
}

static ftb_linear_ctx hook_ctx(const run_ctx *rc, int l, ftb_linear_kind k) {
    ftb_linear_ctx c = {rc->m, l, k, rc->batch->B, rc->batch->T, linear_in(&rc->m->cfg, k),
                        linear_out(&rc->m->cfg, k), rc->training, rc->batch};
    return c;
}

/* y = x·Wᵀ + b, then the hook (if any) adjusts y. */
static void hooked_linear_forward(const run_ctx *rc, int l, ftb_linear_kind k, const float *x, float *y,
                                  void **saved) {
    ftb_layer *ly = &rc->m->layers[l];
    ftb_tensor *W = ftb_layer_weight(ly, k), *b = ftb_layer_bias(ly, k);
    linear_forward_w(y, x, W, b->numel ? b->data : NULL, rc->N, linear_in(&rc->m->cfg, k),
                     linear_out(&rc->m->cfg, k));
    ftb_adapter *a = ly->adapter[k];
    if (a) {
        ftb_linear_ctx c = hook_ctx(rc, l, k);
        a->ops->forward(a, &c, x, y, saved);
    }
}

/* dx += (hook and base) input gradient; parameter gradients accumulated.
 * dy may be rewritten by the hook: callers pass a copy if they need it. */
static void hooked_linear_backward(const run_ctx *rc, int l, ftb_linear_kind k, const float *x, float *dy,
                                   float *dx, void *saved) {
    ftb_layer *ly = &rc->m->layers[l];
    ftb_tensor *W = ftb_layer_weight(ly, k), *b = ftb_layer_bias(ly, k);
    ftb_adapter *a = ly->adapter[k];
    if (a) {
        ftb_linear_ctx c = hook_ctx(rc, l, k);
        a->ops->backward(a, &c, a->needs_input ? x : NULL, dy, dx, saved);
    }
    linear_backward_w(dx, W->trainable ? W->grad : NULL, b->numel && b->trainable ? b->grad : NULL, dy, x, W,
                      rc->N, linear_in(&rc->m->cfg, k), linear_out(&rc->m->cfg, k));
}

static void add_inplace(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

/* One block.  With c == NULL nothing is kept (inference, or a block that
 * will be recomputed); with c, what backward needs is kept in c. */
static void block_forward(const run_ctx *rc, int l, const float *x, float *out, block_cache *c) {
    const ftb_config *cfg = &rc->m->cfg;
    ftb_layer *ly = &rc->m->layers[l];
    const int N = rc->N, D = cfg->dim, F = cfg->ffn_dim;
    const int64_t Q = (int64_t)cfg->n_heads * cfg->head_dim, KV = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const int keep = c != NULL;
    block_cache tmp;
    if (!c) c = &tmp;
    memset(c, 0, sizeof *c);
    void **saved = keep ? c->hook_saved : NULL;
#define CAT(cond) (keep && (cond) ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE)
#define SAVED_SLOT(k) (saved ? &saved[k] : NULL)
    int keep_ln1 = needs_input(ly, FTB_LIN_Q) || needs_input(ly, FTB_LIN_K) || needs_input(ly, FTB_LIN_V);
    int keep_ln2 = needs_input(ly, FTB_LIN_GATE) || needs_input(ly, FTB_LIN_UP);
    int keep_h = needs_input(ly, FTB_LIN_DOWN);

    /* attention half */
    c->ln1 = alloc_f(CAT(keep_ln1), (int64_t)N * D);
    c->rstd1 = alloc_f(CAT(1), N);
    rmsnorm_forward(c->ln1, c->rstd1, x, ly->attn_norm.data, N, D, cfg->norm_eps);
    c->q = alloc_f(CAT(1), N * Q);
    c->k = alloc_f(CAT(1), N * KV);
    c->v = alloc_f(CAT(1), N * KV);
    hooked_linear_forward(rc, l, FTB_LIN_Q, c->ln1, c->q, SAVED_SLOT(FTB_LIN_Q));
    hooked_linear_forward(rc, l, FTB_LIN_K, c->ln1, c->k, SAVED_SLOT(FTB_LIN_K));
    hooked_linear_forward(rc, l, FTB_LIN_V, c->ln1, c->v, SAVED_SLOT(FTB_LIN_V));
    if (!(keep && keep_ln1)) { ftb_free(c->ln1); c->ln1 = NULL; }
    rope_forward(c->q, rc->rope_cos, rc->rope_sin, N, rc->batch->T, cfg->n_heads, cfg->head_dim);
    rope_forward(c->k, rc->rope_cos, rc->rope_sin, N, rc->batch->T, cfg->n_kv_heads, cfg->head_dim);
    attn_shape as = {rc->batch->B, rc->batch->T, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim};
    c->att = alloc_f(CAT(1), N * Q);
    if (rc->opts->attention == FTB_ATTN_EAGER) {
        c->probs = alloc_f(CAT(1), (int64_t)as.B * as.H * as.T * as.T);
        attention_eager_forward(c->att, c->probs, c->q, c->k, c->v, as);
    } else {
        c->lse = alloc_f(CAT(1), (int64_t)as.B * as.H * as.T);
        attention_flash_forward(c->att, c->lse, c->q, c->k, c->v, as);
    }
    if (!keep) {
        ftb_free(c->q); ftb_free(c->k); ftb_free(c->v); ftb_free(c->probs); ftb_free(c->lse);
    }
    c->x_mid = alloc_f(CAT(1), (int64_t)N * D);
    hooked_linear_forward(rc, l, FTB_LIN_O, c->att, c->x_mid, SAVED_SLOT(FTB_LIN_O));
    add_inplace(c->x_mid, x, (int64_t)N * D);
    if (!keep) ftb_free(c->att);

    /* MLP half */
    c->ln2 = alloc_f(CAT(keep_ln2), (int64_t)N * D);
    c->rstd2 = alloc_f(CAT(1), N);
    rmsnorm_forward(c->ln2, c->rstd2, c->x_mid, ly->mlp_norm.data, N, D, cfg->norm_eps);
    c->g = alloc_f(CAT(1), (int64_t)N * F);
    c->u = alloc_f(CAT(1), (int64_t)N * F);
    hooked_linear_forward(rc, l, FTB_LIN_GATE, c->ln2, c->g, SAVED_SLOT(FTB_LIN_GATE));
    hooked_linear_forward(rc, l, FTB_LIN_UP, c->ln2, c->u, SAVED_SLOT(FTB_LIN_UP));
    if (!(keep && keep_ln2)) { ftb_free(c->ln2); c->ln2 = NULL; }
    c->h = alloc_f(CAT(keep_h), (int64_t)N * F);
    swiglu_forward(c->h, c->g, c->u, (int64_t)N * F);
    if (!keep) { ftb_free(c->g); ftb_free(c->u); }
    hooked_linear_forward(rc, l, FTB_LIN_DOWN, c->h, out, SAVED_SLOT(FTB_LIN_DOWN));
    add_inplace(out, c->x_mid, (int64_t)N * D);
    if (!(keep && keep_h)) { ftb_free(c->h); c->h = NULL; }
    if (!keep) { ftb_free(c->x_mid); ftb_free(c->rstd1); ftb_free(c->rstd2); }
#undef CAT
#undef SAVED_SLOT
}

/* dres holds d(block output) on entry and d(block input) on return.
 * Frees everything c kept. */
static void block_backward(const run_ctx *rc, int l, const float *x, block_cache *c, float *dres) {
    const ftb_config *cfg = &rc->m->cfg;
    ftb_layer *ly = &rc->m->layers[l];
    const int N = rc->N, D = cfg->dim, F = cfg->ffn_dim;
    const int64_t Q = (int64_t)cfg->n_heads * cfg->head_dim, KV = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const int64_t ND = (int64_t)N * D;

    /* MLP half: down, SwiGLU, gate/up, RMSNorm; the residual passes dres through. */
    float *dh = calloc_f(FTB_MEM_WORKSPACE, (int64_t)N * F);
    float *dy = dres, *dy_copy = NULL;
    if (ly->adapter[FTB_LIN_DOWN]) {
        dy = dy_copy = alloc_f(FTB_MEM_WORKSPACE, ND);
        memcpy(dy_copy, dres, sizeof(float) * ND);
    }
    hooked_linear_backward(rc, l, FTB_LIN_DOWN, c->h, dy, dh, c->hook_saved[FTB_LIN_DOWN]);
    ftb_free(dy_copy);
    ftb_free(c->h);
    float *dg = dh, *du = alloc_f(FTB_MEM_WORKSPACE, (int64_t)N * F);
    swiglu_backward(dg, du, dh, c->g, c->u, (int64_t)N * F); /* dg overwrites dh element by element */
    ftb_free(c->g);
    ftb_free(c->u);
    float *dln2 = calloc_f(FTB_MEM_WORKSPACE, ND);
    hooked_linear_backward(rc, l, FTB_LIN_GATE, c->ln2, dg, dln2, c->hook_saved[FTB_LIN_GATE]);
    hooked_linear_backward(rc, l, FTB_LIN_UP, c->ln2, du, dln2, c->hook_saved[FTB_LIN_UP]);
    ftb_free(dg);
    ftb_free(du);
    ftb_free(c->ln2);
    rmsnorm_backward(dres, ly->mlp_norm.trainable ? ly->mlp_norm.grad : NULL, dln2, c->x_mid, c->rstd2,
                     ly->mlp_norm.data, N, D);
    ftb_free(dln2);
    ftb_free(c->x_mid);
    ftb_free(c->rstd2);

    /* attention half */
    float *datt = calloc_f(FTB_MEM_WORKSPACE, N * Q);
    dy = dres;
    dy_copy = NULL;
    if (ly->adapter[FTB_LIN_O]) {
        dy = dy_copy = alloc_f(FTB_MEM_WORKSPACE, ND);
        memcpy(dy_copy, dres, sizeof(float) * ND);
    }
    hooked_linear_backward(rc, l, FTB_LIN_O, c->att, dy, datt, c->hook_saved[FTB_LIN_O]);
    ftb_free(dy_copy);
    float *dq = alloc_f(FTB_MEM_WORKSPACE, N * Q), *dk = alloc_f(FTB_MEM_WORKSPACE, N * KV),
          *dv = alloc_f(FTB_MEM_WORKSPACE, N * KV);
    attn_shape as = {rc->batch->B, rc->batch->T, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim};
    if (c->probs) attention_eager_backward(dq, dk, dv, datt, c->q, c->k, c->v, c->probs, as);
    else attention_flash_backward(dq, dk, dv, datt, c->q, c->k, c->v, c->att, c->lse, as);
    ftb_free(datt);
    ftb_free(c->att); ftb_free(c->probs); ftb_free(c->lse);
    ftb_free(c->q); ftb_free(c->k); ftb_free(c->v);
    rope_backward(dq, rc->rope_cos, rc->rope_sin, N, rc->batch->T, cfg->n_heads, cfg->head_dim);
    rope_backward(dk, rc->rope_cos, rc->rope_sin, N, rc->batch->T, cfg->n_kv_heads, cfg->head_dim);
    float *dln1 = calloc_f(FTB_MEM_WORKSPACE, ND);
    hooked_linear_backward(rc, l, FTB_LIN_Q, c->ln1, dq, dln1, c->hook_saved[FTB_LIN_Q]);
    hooked_linear_backward(rc, l, FTB_LIN_K, c->ln1, dk, dln1, c->hook_saved[FTB_LIN_K]);
    hooked_linear_backward(rc, l, FTB_LIN_V, c->ln1, dv, dln1, c->hook_saved[FTB_LIN_V]);
    ftb_free(dq); ftb_free(dk); ftb_free(dv);
    ftb_free(c->ln1);
    rmsnorm_backward(dres, ly->attn_norm.trainable ? ly->attn_norm.grad : NULL, dln1, x, c->rstd1,
                     ly->attn_norm.data, N, D);
    ftb_free(dln1);
    ftb_free(c->rstd1);
    memset(c, 0, sizeof *c);
}

static ftb_keep_policy policy(const ftb_run_opts *o, int l) { return o->keep ? o->keep[l] : FTB_KEEP_ALL; }

/* Frees what a block kept, when its backward will not run. */
static void release_cache(const run_ctx *rc, int l, block_cache *c) {
    float *bufs[] = {c->ln1, c->rstd1, c->q, c->k, c->v, c->att, c->lse, c->probs,
                     c->x_mid, c->ln2, c->rstd2, c->g, c->u, c->h};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ftb_free(bufs[i]);
    for (int k = 0; k < FTB_LIN_COUNT; k++) {
        ftb_adapter *a = rc->m->layers[l].adapter[k];
        if (c->hook_saved[k] && a && a->ops->release) a->ops->release(a, c->hook_saved[k]);
    }
    memset(c, 0, sizeof *c);
}

static int check_batch(const ftb_model *m, const ftb_batch *b, char *err, size_t errlen) {
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
static int lowest_trainable_block(const ftb_model *m, const ftb_run_opts *o) {
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

void ftb_last_run_times(double *forward, double *backward) {
    if (forward) *forward = last_forward_seconds;
    if (backward) *backward = last_backward_seconds;
}

/* hidden_out (inference only, models/generate.c): receives the final norm's
 * output [N,D] instead of the LM head and loss being computed. */
static float run(ftb_model *m, const ftb_batch *b, const ftb_run_opts *opts_in, int training, float *hidden_out,
                 char *err, size_t errlen) {
    ftb_run_opts defaults;
    if (!opts_in) {
        ftb_run_opts_default(&defaults);
        opts_in = &defaults;
    }
    if (check_batch(m, b, err, errlen)) return NAN;
    const ftb_config *cfg = &m->cfg;
    const int L = cfg->n_layers, D = cfg->dim, N = b->B * b->T;
    const int64_t ND = (int64_t)N * D;
    run_ctx rc = {m, b, opts_in, NULL, NULL, N, training};
    int half = cfg->head_dim / 2;
    float *rope = alloc_f(FTB_MEM_WORKSPACE, 2 * (int64_t)b->T * half);
    rope_tables(rope, rope + (int64_t)b->T * half, b->T, cfg->head_dim, cfg->rope_theta);
    rc.rope_cos = rope;
    rc.rope_sin = rope + (int64_t)b->T * half;

    const double t_start = ftb_now();
    const int first = training ? lowest_trainable_block(m, opts_in) : L;
    /* resid[l] is block l's input; resid[L] feeds the final norm.  Kept
     * (saved) from the first trained block up, else two buffers alternate. */
    float **resid = calloc((size_t)L + 1, sizeof *resid);
    char *offloaded = calloc((size_t)L + 1, 1);
    block_cache *caches = calloc((size_t)L, sizeof *caches);
    int failed = 0;
    if (!resid || !caches || !offloaded) {
        free(resid); free(caches); free(offloaded); ftb_free(rope);
        snprintf(err, errlen, "out of memory");
        return NAN;
    }
    ftb_mem_set_phase("fwd embed");
    float *spare = NULL;
    resid[0] = alloc_f(training && first == 0 ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, ND);
    residency_enter(m, RES_EMBED);
    embedding_forward(resid[0], &m->embed, b->tokens, N, D);
    residency_leave(m, RES_EMBED);
    for (int l = 0; l < L; l++) {
        char phase[32];
        snprintf(phase, sizeof phase, "fwd L%d", l);
        ftb_mem_set_phase(phase);
        int trained = training && l >= first;
        int out_kept = training && l + 1 >= first; /* input of a trained block, or of the final norm */
        if (out_kept && l + 1 < L && policy(opts_in, l + 1) == FTB_KEEP_OFFLOAD) {
            resid[l + 1] = offload_alloc(opts_in->offload_dir, sizeof(float) * (size_t)ND, err, errlen);
            if (!resid[l + 1]) { failed = 1; break; }
            offloaded[l + 1] = 1;
        } else if (out_kept || !spare) {
            resid[l + 1] = alloc_f(out_kept ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, ND);
        } else {
            resid[l + 1] = spare;
            spare = NULL;
        }
        ftb_keep_policy keep = policy(opts_in, l);
        residency_enter(m, l);
        block_forward(&rc, l, resid[l], resid[l + 1], trained && keep == FTB_KEEP_ALL ? &caches[l] : NULL);
        residency_leave(m, l);
        if (offloaded[l]) offload_evict(resid[l]); /* consumed: out of RAM until backward */
        if (!trained) { /* an inference-mode input is done with: recycle it */
            ftb_free(spare);
            spare = resid[l];
            resid[l] = NULL;
        }
    }
    ftb_free(spare);
    if (failed) { /* only an offload file can fail here; give everything back */
        for (int l = 0; l <= L; l++) {
            if (offloaded[l]) offload_free(resid[l]);
            else ftb_free(resid[l]);
        }
        for (int l = 0; l < L; l++) release_cache(&rc, l, &caches[l]);
        ftb_free(rope);
        free(resid); free(caches); free(offloaded);
        return NAN;
    }

    ftb_mem_set_phase("fwd norm");
    residency_enter(m, RES_HEAD); /* final norm and LM head, left after the final norm's backward */
    float *xf = alloc_f(training ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, ND);
    float *rstdf = alloc_f(training ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, N);
    rmsnorm_forward(xf, rstdf, resid[L], m->final_norm.data, N, D, cfg->norm_eps);
    if (!training) { ftb_free(resid[L]); resid[L] = NULL; }
    ftb_mem_set_phase("head");
    float *dxf = training ? alloc_f(FTB_MEM_WORKSPACE, ND) : NULL;
    if (hidden_out) memcpy(hidden_out, xf, sizeof(float) * (size_t)ND);
    float loss = hidden_out ? 0.0f : head_loss(dxf, training && m->lm_head.trainable ? m->lm_head.grad : NULL, xf, &m->lm_head,
                           b->targets, b->B, b->T, D, cfg->vocab_size, opts_in->loss, opts_in->loss_chunk_rows,
                           opts_in->seq_loss, m->residency == FTB_RESIDENT_LAZY_BLOCK);
    ftb_free(xf);
    if (!training) residency_leave(m, RES_HEAD);
    const double t_backward = ftb_now();
    last_forward_seconds = t_backward - t_start;

    if (training) {
        ftb_mem_set_phase("bwd norm");
        float *dres = calloc_f(FTB_MEM_WORKSPACE, ND);
        rmsnorm_backward(dres, m->final_norm.trainable ? m->final_norm.grad : NULL, dxf, resid[L], rstdf,
                         m->final_norm.data, N, D);
        residency_leave(m, RES_HEAD);
        ftb_free(dxf);
        ftb_free(resid[L]);
        for (int l = L - 1; l >= first; l--) {
            char phase[32];
            residency_enter(m, l);
            if (policy(opts_in, l) != FTB_KEEP_ALL) { /* recompute the block, this time keeping what backward needs */
                snprintf(phase, sizeof phase, "recompute L%d", l);
                ftb_mem_set_phase(phase);
                float *out = alloc_f(FTB_MEM_WORKSPACE, ND);
                block_forward(&rc, l, resid[l], out, &caches[l]);
                ftb_free(out);
            }
            snprintf(phase, sizeof phase, "bwd L%d", l);
            ftb_mem_set_phase(phase);
            block_backward(&rc, l, resid[l], &caches[l], dres);
            residency_leave(m, l);
            if (offloaded[l]) offload_free(resid[l]);
            else ftb_free(resid[l]);
        }
        if (first == 0 && m->embed.trainable) {
            ftb_mem_set_phase("bwd embed");
            embedding_backward(m->embed.grad, dres, b->tokens, N, D);
        }
        ftb_free(dres);
    }
    ftb_free(rstdf);
    ftb_free(rope);
    quant_workspace_release();
    free(resid);
    free(caches);
    free(offloaded);
    last_backward_seconds = training ? ftb_now() - t_backward : 0.0;
    return loss;
}

float ftb_model_forward(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, char *err, size_t errlen) {
    return run(m, b, o, 0, NULL, err, errlen);
}

float ftb_model_forward_backward(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, char *err,
                                 size_t errlen) {
    return run(m, b, o, 1, NULL, err, errlen);
}

int ftb_model_forward_hidden(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, float *hidden, char *err,
                             size_t errlen) {
    return isnan(run(m, b, o, 0, hidden, err, errlen)) ? -1 : 0;
}
