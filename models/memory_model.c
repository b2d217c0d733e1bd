/* memory_model.c — the analytic memory model of one step: what the core's
 * categories will hold, and where their sum peaks, predicted from shapes
 * alone (docs/CORE.md, "Analytic memory model").
 *
 * It walks the schedule transformer.c follows — the same blocks, the same
 * keep decisions (trainable weights, hooks that need their input, keep
 * policies), the same buffers in the same order — but allocates nothing: each
 * buffer is a number added to or taken from a shadow ledger, and the ledger's
 * largest total is the predicted peak.  Keeping the two in step is the
 * point: the tests in the suite memory_model run both and requires the predicted
 * peak to equal the measured one within 1%, so a change to the schedule that
 * is not mirrored here fails a test rather than silently leaving a formula
 * out of date.
 *
 * Not modelled (each far below 1% of a step's peak on real shapes): the
 * hooks' own transient buffers (LoRA's [N, r] products) and the RMSNorm
 * backward's per-thread partial sums when a norm does not train. */
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"

#include <omp.h>
#include <string.h>

typedef struct {
    int64_t live[FTB_MEM_NCAT];
    ftb_memory_estimate *out;
} ledger;

static int64_t ledger_total(const ledger *g)
{
    int64_t t = 0;
    for (int c = 0; c < FTB_MEM_NCAT; c++) t += g->live[c];
    return t;
}

/* A point where the total may peak. */
static void mark(ledger *g, const char *phase)
{
    int64_t t = ledger_total(g);
    if (g->live[FTB_MEM_SAVED] > g->out->saved_peak) g->out->saved_peak = g->live[FTB_MEM_SAVED];
    if (t > g->out->peak_total) {
        g->out->peak_total = t;
        memcpy(g->out->at_peak, g->live, sizeof g->live);
        strncpy(g->out->peak_phase, phase, sizeof g->out->peak_phase - 1);
        g->out->peak_phase[sizeof g->out->peak_phase - 1] = 0;
    }
}

static void add(ledger *g, ftb_mem_category c, int64_t floats) { g->live[c] += 4 * floats; }
static void sub(ledger *g, ftb_mem_category c, int64_t floats) { g->live[c] -= 4 * floats; }
static void add_bytes(ledger *g, ftb_mem_category c, int64_t bytes) { g->live[c] += bytes; }

typedef struct {
    const ftb_model *m;
    const ftb_run_opts *o;
    const int64_t *hook_saved; /* [L × FTB_LIN_COUNT] bytes per call, or NULL */
    int B, T, N, training, threads;
    int64_t D, Q, KV, F, H, hd;
} shape;

static int needs_input(const ftb_layer *ly, ftb_linear_kind k)
{
    const ftb_adapter *a = ly->adapter[k];
    return ftb_layer_weight((ftb_layer *)ly, k)->trainable || (a && a->needs_input);
}

static int64_t hook_bytes(const shape *s, int l, ftb_linear_kind k)
{
    if (!s->hook_saved || !s->m->layers[l].adapter[k]) return 0;
    return s->hook_saved[l * FTB_LIN_COUNT + k];
}

/* What one block holds between its forward and its backward, by piece. */
typedef struct {
    int keep_ln1, keep_ln2, keep_h;
    int64_t hooks; /* bytes saved by the block's hooks */
} block_keep;

static block_keep block_keeps(const shape *s, int l)
{
    const ftb_layer *ly = &s->m->layers[l];
    block_keep k = { needs_input(ly, FTB_LIN_Q) || needs_input(ly, FTB_LIN_K) || needs_input(ly, FTB_LIN_V),
                     needs_input(ly, FTB_LIN_GATE) || needs_input(ly, FTB_LIN_UP), needs_input(ly, FTB_LIN_DOWN), 0 };
    for (int j = 0; j < FTB_LIN_COUNT; j++) k.hooks += hook_bytes(s, l, (ftb_linear_kind)j);
    return k;
}

static int64_t attn_probs_floats(const shape *s)
{
    return s->o->attention == FTB_ATTN_EAGER ? (int64_t)s->B * s->H * s->T * s->T : (int64_t)s->B * s->H * s->T;
}

/* attention.c's per-thread tiles (BR = 64 query rows, BC = 128 keys). */
static int64_t attn_forward_ws(const shape *s)
{
    if (s->o->attention == FTB_ATTN_EAGER) return 0;
    return (int64_t)s->threads * (64 * 128 + 64 * s->hd + 2 * 64);
}

static int64_t attn_backward_ws(const shape *s)
{
    if (s->o->attention == FTB_ATTN_EAGER) return (int64_t)s->threads * s->T * s->T;
    return (int64_t)s->threads * (2 * 64 * 128 + 64);
}

/* block_forward: keep != 0 keeps what backward needs (as SAVED), else every
 * buffer is workspace and is freed as soon as it is consumed. */
static void block_forward(ledger *g, const shape *s, int l, int keep, const char *phase)
{
    block_keep k = block_keeps(s, l);
    const int64_t N = s->N;
#define CAT(cond) (keep && (cond) ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE)
    add(g, CAT(k.keep_ln1), N * s->D);
    add(g, CAT(1), N);                      /* rstd1 */
    add(g, CAT(1), N * (s->Q + 2 * s->KV)); /* q, k, v */
    if (keep) {
        for (int j = FTB_LIN_Q; j <= FTB_LIN_V; j++) add_bytes(g, FTB_MEM_SAVED, hook_bytes(s, l, (ftb_linear_kind)j));
    }
    mark(g, phase);
    if (!(keep && k.keep_ln1)) sub(g, CAT(k.keep_ln1), N * s->D);
    add(g, CAT(1), N * s->Q + attn_probs_floats(s)); /* attention output, lse or probs */
    add(g, FTB_MEM_WORKSPACE, attn_forward_ws(s));
    mark(g, phase);
    sub(g, FTB_MEM_WORKSPACE, attn_forward_ws(s));
    if (!keep) sub(g, FTB_MEM_WORKSPACE, N * (s->Q + 2 * s->KV) + attn_probs_floats(s));
    add(g, CAT(1), N * s->D); /* x_mid */
    if (keep) add_bytes(g, FTB_MEM_SAVED, hook_bytes(s, l, FTB_LIN_O));
    mark(g, phase);
    if (!keep) sub(g, FTB_MEM_WORKSPACE, N * s->Q);
    add(g, CAT(k.keep_ln2), N * s->D);
    add(g, CAT(1), N);            /* rstd2 */
    add(g, CAT(1), 2 * N * s->F); /* gate, up */
    if (keep) {
        add_bytes(g, FTB_MEM_SAVED, hook_bytes(s, l, FTB_LIN_GATE));
        add_bytes(g, FTB_MEM_SAVED, hook_bytes(s, l, FTB_LIN_UP));
    }
    mark(g, phase);
    if (!(keep && k.keep_ln2)) sub(g, CAT(k.keep_ln2), N * s->D);
    add(g, CAT(k.keep_h), N * s->F); /* SwiGLU output h */
    mark(g, phase);
    if (!keep) sub(g, FTB_MEM_WORKSPACE, 2 * N * s->F);
    if (keep) add_bytes(g, FTB_MEM_SAVED, hook_bytes(s, l, FTB_LIN_DOWN));
    mark(g, phase);
    if (!(keep && k.keep_h)) sub(g, CAT(k.keep_h), N * s->F);
    if (!keep) sub(g, FTB_MEM_WORKSPACE, N * s->D + 2 * N); /* x_mid, rstd1, rstd2 */
#undef CAT
}

/* block_backward: frees the block's kept buffers as it consumes them. */
static void block_backward(ledger *g, const shape *s, int l, const char *phase)
{
    const ftb_layer *ly = &s->m->layers[l];
    block_keep k = block_keeps(s, l);
    const int64_t N = s->N, ND = N * s->D;
    const int64_t nt = s->threads;
    /* MLP half */
    add(g, FTB_MEM_WORKSPACE, N * s->F); /* dh */
    if (ly->adapter[FTB_LIN_DOWN]) add(g, FTB_MEM_WORKSPACE, ND);
    mark(g, phase);
    if (ly->adapter[FTB_LIN_DOWN]) sub(g, FTB_MEM_WORKSPACE, ND);
    add_bytes(g, FTB_MEM_SAVED, -hook_bytes(s, l, FTB_LIN_DOWN));
    if (k.keep_h) sub(g, FTB_MEM_SAVED, N * s->F);
    add(g, FTB_MEM_WORKSPACE, N * s->F); /* du */
    mark(g, phase);
    sub(g, FTB_MEM_SAVED, 2 * N * s->F); /* gate, up */
    add(g, FTB_MEM_WORKSPACE, ND);       /* dln2 */
    mark(g, phase);
    add_bytes(g, FTB_MEM_SAVED, -hook_bytes(s, l, FTB_LIN_GATE) - hook_bytes(s, l, FTB_LIN_UP));
    sub(g, FTB_MEM_WORKSPACE, 2 * N * s->F);
    if (k.keep_ln2) sub(g, FTB_MEM_SAVED, ND);
    if (ly->mlp_norm.trainable) {
        add(g, FTB_MEM_WORKSPACE, nt * s->D);
        mark(g, phase);
        sub(g, FTB_MEM_WORKSPACE, nt * s->D);
    }
    sub(g, FTB_MEM_WORKSPACE, ND); /* dln2 */
    sub(g, FTB_MEM_SAVED, ND + N); /* x_mid, rstd2 */
    /* attention half */
    add(g, FTB_MEM_WORKSPACE, N * s->Q); /* datt */
    if (ly->adapter[FTB_LIN_O]) add(g, FTB_MEM_WORKSPACE, ND);
    mark(g, phase);
    if (ly->adapter[FTB_LIN_O]) sub(g, FTB_MEM_WORKSPACE, ND);
    add_bytes(g, FTB_MEM_SAVED, -hook_bytes(s, l, FTB_LIN_O));
    add(g, FTB_MEM_WORKSPACE, N * (s->Q + 2 * s->KV) + attn_backward_ws(s)); /* dq, dk, dv, tiles */
    mark(g, phase);
    sub(g, FTB_MEM_WORKSPACE, attn_backward_ws(s) + N * s->Q); /* tiles, datt */
    sub(g, FTB_MEM_SAVED, N * (2 * s->Q + 2 * s->KV) + attn_probs_floats(s));
    add(g, FTB_MEM_WORKSPACE, ND); /* dln1 */
    mark(g, phase);
    for (int j = FTB_LIN_Q; j <= FTB_LIN_V; j++) add_bytes(g, FTB_MEM_SAVED, -hook_bytes(s, l, (ftb_linear_kind)j));
    sub(g, FTB_MEM_WORKSPACE, N * (s->Q + 2 * s->KV));
    if (k.keep_ln1) sub(g, FTB_MEM_SAVED, ND);
    if (ly->attn_norm.trainable) {
        add(g, FTB_MEM_WORKSPACE, nt * s->D);
        mark(g, phase);
        sub(g, FTB_MEM_WORKSPACE, nt * s->D);
    }
    sub(g, FTB_MEM_WORKSPACE, ND); /* dln1 */
    sub(g, FTB_MEM_SAVED, N);      /* rstd1 */
}

static ftb_keep_policy policy(const ftb_run_opts *o, int l) { return o->keep ? o->keep[l] : FTB_KEEP_ALL; }

void ftb_memory_estimate_step(const ftb_model *m, const ftb_run_opts *opts, int B, int T, int training,
                              const int64_t *hook_saved, ftb_memory_estimate *out)
{
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    const int perturbed = !training && ftb_model_read_perturbation(m, NULL) != NULL;
    ftb_memory_estimate_from(m, opts, B, T, training, hook_saved, st.live, ftb_quant_largest_tile(m, perturbed),
                             omp_get_max_threads(), out);
}

void ftb_memory_estimate_from(const ftb_model *m, const ftb_run_opts *opts, int B, int T, int training,
                              const int64_t *hook_saved, const int64_t state[FTB_MEM_NCAT], int64_t tile_floats,
                              int threads, ftb_memory_estimate *out)
{
    ftb_run_opts defaults;
    if (!opts) {
        ftb_run_opts_default(&defaults);
        opts = &defaults;
    }
    memset(out, 0, sizeof *out);
    const ftb_config *c = &m->cfg;
    shape s = { m,
                opts,
                hook_saved,
                B,
                T,
                B * T,
                training,
                threads,
                c->dim,
                (int64_t)c->n_heads * c->head_dim,
                (int64_t)c->n_kv_heads * c->head_dim,
                c->ffn_dim,
                c->n_heads,
                c->head_dim };
    ledger g = { { 0 }, out };
    /* The state between steps: weights, parameters, gradients, moments. */
    for (int k = FTB_MEM_WEIGHTS; k <= FTB_MEM_OPTIM; k++) g.live[k] = state[k];
    const int L = c->n_layers;
    const int64_t N = s.N, ND = N * s.D;
    const int first = training ? ftb_model_lowest_trained_block(m, opts) : L;

    add(&g, FTB_MEM_WORKSPACE, (int64_t)T * s.hd); /* RoPE tables */
    const int perturbed = !training && ftb_model_read_perturbation(m, NULL) != NULL;
    if (perturbed) add(&g, FTB_MEM_WORKSPACE, ftb_perturbed_vector_floats(c));
    add(&g, FTB_MEM_WORKSPACE, tile_floats);                                 /* one kept for the whole step */
    add(&g, training && first == 0 ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE, ND); /* resid[0] */
    /* A lazy mapped embedding's rows looked up: the core counts the distinct
     * tokens, unknown here; every position distinct bounds them, and this
     * instant never holds the peak (block 0 adds resid[1], at least as large). */
    const int64_t lookup_bytes = ftb_residency_lookup_bound(m, N);
    add_bytes(&g, FTB_MEM_WEIGHTS, lookup_bytes);
    mark(&g, "fwd embed");
    add_bytes(&g, FTB_MEM_WEIGHTS, -lookup_bytes);
    /* resid[l] lives in `kept[l]` (SAVED, offloaded, or a recycled workspace buffer). */
    int spare = 0; /* a freed inference buffer waiting to be reused */
    char phase[32];
    for (int l = 0; l < L; l++) {
        snprintf(phase, sizeof phase, "fwd L%d", l);
        int trained = training && l >= first;
        int out_kept = training && l + 1 >= first;
        if (out_kept && l + 1 < L && policy(opts, l + 1) == FTB_KEEP_OFFLOAD) {
            /* in a mapped file: not resident, not counted */
        } else if (out_kept) {
            add(&g, FTB_MEM_SAVED, ND);
        } else if (!spare) {
            add(&g, FTB_MEM_WORKSPACE, ND);
        } else {
            spare = 0;
        }
        add_bytes(&g, FTB_MEM_WEIGHTS, ftb_residency_unit_bytes(m, l)); /* the block's mapped tensors, lazy */
        block_forward(&g, &s, l, trained && policy(opts, l) == FTB_KEEP_ALL, phase);
        add_bytes(&g, FTB_MEM_WEIGHTS, -ftb_residency_unit_bytes(m, l));
        if (!trained) { /* its input (workspace) becomes the spare */
            if (spare) sub(&g, FTB_MEM_WORKSPACE, ND);
            spare = 1;
        }
        /* An offloaded input, consumed, leaves RAM; a kept one stays SAVED. */
    }
    if (spare) sub(&g, FTB_MEM_WORKSPACE, ND);

    /* final norm and head */
    ftb_mem_category keep_cat = training ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE;
    const int64_t head_unit = ftb_residency_unit_bytes(m, RES_HEAD);
    add_bytes(&g, FTB_MEM_WEIGHTS, head_unit);
    add(&g, keep_cat, ND + N); /* xf, rstdf */
    mark(&g, "fwd norm");
    if (!training) sub(&g, FTB_MEM_WORKSPACE, ND); /* resid[L] */
    if (training) add(&g, FTB_MEM_WORKSPACE, ND);  /* dxf */
    int rows_per = opts->loss == FTB_LOSS_FULL ? (int)N : (opts->loss_chunk_rows > 0 ? opts->loss_chunk_rows : 128);
    if (rows_per > N) rows_per = (int)N;
    ftb_mem_category zcat = opts->loss == FTB_LOSS_FULL ? FTB_MEM_SAVED : FTB_MEM_WORKSPACE;
    add(&g, zcat, (int64_t)rows_per * c->vocab_size);
    add(&g, FTB_MEM_WORKSPACE, N);                              /* per-row losses */
    const int64_t head_tile = ftb_residency_head_tile_bytes(m); /* a streamed tile of a lazy mapped head */
    add_bytes(&g, FTB_MEM_WEIGHTS, head_tile);
    mark(&g, "head");
    add_bytes(&g, FTB_MEM_WEIGHTS, -head_tile);
    sub(&g, FTB_MEM_WORKSPACE, N);
    sub(&g, zcat, (int64_t)rows_per * c->vocab_size);
    sub(&g, keep_cat, ND); /* xf */
    if (!training) add_bytes(&g, FTB_MEM_WEIGHTS, -head_unit);

    if (training) {
        add(&g, FTB_MEM_WORKSPACE, ND); /* dres */
        if (m->final_norm.trainable) {
            add(&g, FTB_MEM_WORKSPACE, (int64_t)s.threads * s.D);
            mark(&g, "bwd norm");
            sub(&g, FTB_MEM_WORKSPACE, (int64_t)s.threads * s.D);
        }
        mark(&g, "bwd norm");
        add_bytes(&g, FTB_MEM_WEIGHTS, -head_unit);
        sub(&g, FTB_MEM_WORKSPACE, ND); /* dxf */
        sub(&g, FTB_MEM_SAVED, ND);     /* resid[L] */
        for (int l = L - 1; l >= first; l--) {
            add_bytes(&g, FTB_MEM_WEIGHTS, ftb_residency_unit_bytes(m, l));
            if (policy(opts, l) != FTB_KEEP_ALL) {
                snprintf(phase, sizeof phase, "recompute L%d", l);
                add(&g, FTB_MEM_WORKSPACE, ND);
                block_forward(&g, &s, l, 1, phase);
                sub(&g, FTB_MEM_WORKSPACE, ND);
            }
            snprintf(phase, sizeof phase, "bwd L%d", l);
            block_backward(&g, &s, l, phase);
            add_bytes(&g, FTB_MEM_WEIGHTS, -ftb_residency_unit_bytes(m, l));
            if (!(l > 0 && policy(opts, l) == FTB_KEEP_OFFLOAD)) sub(&g, FTB_MEM_SAVED, ND); /* resid[l] */
        }
        sub(&g, FTB_MEM_WORKSPACE, ND); /* dres */
    }
    sub(&g, keep_cat, N); /* rstdf */
}
