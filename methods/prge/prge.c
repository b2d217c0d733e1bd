/* prge — P-RGE (Gao, Ziashahabi, Niu, Avestimehr, Annavaram, 2024, "Enabling
 * Resource-Efficient On-Device Fine-Tuning of LLMs Using Only Inference
 * Engines", arXiv:2409.15520): zeroth-order fine-tuning of LoRA-FA adapters
 * (A frozen at its random init, only B trained) with parallelised
 * randomised gradient estimation.
 *
 * One step with query budget n and a fresh seed:
 *   z_i ~ N(0, I) for every B, i = 0..n-1 (drawn from seeds);
 *   outer loop: the n queries run as ONE forward whose batch is the input
 *     batch repeated; slice j (B_orig sequences, rows [j·B_orig·T, ...))
 *     sees its own perturbed B over the shared frozen base;
 *   inner loop (dual=1): 2n slices in that forward, slice i with B + ε·z_i
 *     and slice n+i with B − ε·z_i, so one forward gives L₊ᵢ and L₋ᵢ;
 *     (dual=0: two forwards of n slices, + then −);
 *   pg_i = (L₊ᵢ − L₋ᵢ) / (2ε),   B ← B − lr · (1/n) Σᵢ pg_i·z_i.
 * A slice's loss is the token-weighted mean of its sequences' losses
 * (ftb_run_opts.seq_loss), i.e. exactly what a forward of that slice alone
 * returns.
 *
 * Memory: the n perturbations z_i of every B are held from the start of the
 * step to the update (the n "query copies" of B: P-RGE's price for batching
 * its queries), counted as FTB_MEM_WORKSPACE since they live only within a
 * step; plus one inference forward at n·B_orig (dual=0) or 2n·B_orig rows.
 * Nothing is saved for a backward; B has no gradient and no optimizer state.
 *
 * Noise layout (tests/test_zo.c regenerates it independently): adapter a's
 * z_i, cut in blocks of ZO_BLOCK elements, block k drawn from an ftb_rng
 * seeded with zo_child(zo_child(zo_child(step_seed, i), a), k), two normals
 * per ftb_rng_u64 draw (Box–Muller on two 24-bit uniforms), as methods/mezo.
 * Step seeds: successive ftb_rng_u64 draws of an ftb_rng seeded with
 * session seed ^ PRGE_SEED_SALT.
 *
 * Outside a step (or on a batch that is not the step's repeated batch) the
 * hook is plain LoRA with the current B, so the trained model can be
 * evaluated with ftb_model_forward.
 *
 * gradient (ABI 2, for `ftbench fidelity` only — a step never calls it):
 * exact = 0 runs the next step's queries (its seed peeked, not drawn) and
 * writes (1/n)·Σᵢ pgᵢ·zᵢ into B's .grad (allocated on first use); B is
 * never written by a step's forwards, so it is untouched.  exact = 1 is a
 * real backward through the hook: dB = s·dyᵀ·h with h = x·Aᵀ recomputed from
 * the input the core keeps while needs_input is raised for that call (A is
 * frozen: no dA). */
#include "ftbench_kit.h"
#include "ftbench_method.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ZO_BLOCK       FTB_KIT_NOISE_BLOCK
#define ZO_CHUNK       FTB_KIT_NOISE_CHUNK
#define PRGE_SEED_SALT 0x70726765ULL /* "prge" */
#define MAX_QUERIES    64

/* Seeded noise is the kit's (methods/kit/noise.c), the same as mezo's. */
#define zo_child          ftb_kit_noise_child
#define fill_normal_pairs ftb_kit_noise_normals

/* ---- state -------------------------------------------------------------- */

typedef struct prge_state prge_state;

/* tests/test_zo.c reads A and B through this prefix (hook, A, B): the
 * kit's LoRA adapter, A [r, in] frozen, B [out, r] trained. */
typedef struct {
    ftb_kit_lora lora; /* first: the core hands &lora.hook back */
    float *z;          /* during a step: [queries][out·r], query i at i·out·r */
    prge_state *owner;
} prge_adapter;

/* The forward in flight, as the hooks need to see it. */
typedef struct {
    int active;              /* a step's repeated forward is running */
    int rows_per_slice_seqs; /* B_orig: sequences per slice */
    int n_slices;
    int all_minus; /* dual=0, second forward: every slice is B − εz_i */
} forward_plan;

struct prge_state {
    ftb_model *model;
    prge_adapter *adapters;
    int n_adapters;
    ftb_kit_lora_set set; /* the adapters, as the kit sees them */
    ftb_tensor **params;  /* the B's */
    int queries, dual;
    float eps;
    ftb_rng seeds;
    forward_plan plan;
};

/* Slice j → (query, sign): dual puts + in slices 0..n-1 and − in n..2n-1. */
static void slice_query(const prge_state *st, int j, int *query, float *sign)
{
    if (st->dual) {
        *query = j % st->queries;
        *sign = j < st->queries ? 1.0f : -1.0f;
    } else {
        *query = j;
        *sign = st->plan.all_minus ? -1.0f : 1.0f;
    }
}

/* ---- the per-slice LoRA hook -------------------------------------------- */

/* y += s·(x·Aᵀ)·B_jᵀ with B_j = B ± ε·z_i for the rows of slice j.  h and
 * B_j are workspace; nothing is kept in any mode. */
static void prge_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    (void)saved;
    prge_adapter *a = (prge_adapter *)self;
    const prge_state *st = a->owner;
    const int N = c->B * c->T, r = a->lora.r, out = a->lora.out;
    float *h = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * r);
    if (!h) return; /* the core sees the failure (docs/CORE.md) */
    ftb_kit_lora_down(&a->lora, N, x, a->lora.A.data, h);
    const forward_plan *p = &st->plan;
    if (!p->active || !a->z || c->B != p->n_slices * p->rows_per_slice_seqs) {
        ftb_kit_lora_up(&a->lora, N, h, a->lora.B.data, y);
        ftb_free(h);
        return;
    }
    const int64_t nb = (int64_t)out * r;
    const int rows = p->rows_per_slice_seqs * c->T;
    float *Bj = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)nb);
    if (!Bj) { /* the core sees the failure (docs/CORE.md) */
        ftb_free(h);
        return;
    }
    for (int j = 0; j < p->n_slices; j++) {
        int q;
        float sign;
        slice_query(st, j, &q, &sign);
        const float step = sign * st->eps;
        const float *z = a->z + (int64_t)q * nb;
        for (int64_t k = 0; k < nb; k++) Bj[k] = a->lora.B.data[k] + step * z[k];
        ftb_kit_lora_up(&a->lora, rows, h + (int64_t)j * rows * r, Bj, y + (int64_t)j * rows * out);
    }
    ftb_free(Bj);
    ftb_free(h);
}

/* A P-RGE step never runs a backward.  The exact gradient (gradient() with
 * exact = 1) does, with needs_input raised: h = x·Aᵀ is recomputed and
 * dB += s·dyᵀ·h.  In any backward the gradient passes through the adapter
 * (dx += s·dy·B·A, unperturbed B), so other gradients stay exact. */
static void prge_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
    (void)saved;
    const prge_adapter *a = (const prge_adapter *)self;
    /* A is frozen (no A.grad): dB only, and only when asked for */
    ftb_kit_lora_backward_recomputed(&a->lora, c->B * c->T, x && a->lora.B.grad ? x : NULL, dy, dx);
}

static void prge_release(ftb_adapter *self, void *saved)
{
    (void)self;
    (void)saved; /* nothing was saved */
}

static const ftb_adapter_ops prge_ops = { FTB_ADAPTER_OPS_VERSION, prge_forward, prge_backward, prge_release };

/* ---- options and init --------------------------------------------------- */

static const ftb_option_doc prge_options[] = {
    { "queries", "4", "query budget n: perturbations per step, run as slices of one batched forward (1..64)" },
    { "dual", "1", "1: +ε and −ε slices in the same forward (one forward per step); 0: two forwards" },
    { "eps", "1e-2", "perturbation scale ε" },
    { "rank", "8", "rank r of A (frozen) and B (trained)" },
    { "alpha", "16", "scale s = alpha / rank" },
    { "targets", "q,k,v,o,gate,up,down", "linear layers to adapt (comma-separated, or 'all' / 'attn' / 'mlp')" },
    { NULL, NULL, NULL },
};

static void prge_destroy(void *state);

static void *prge_init(ftb_session *s, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    long queries = ftb_opt_int(s->options, "queries", 4, err, errlen);
    long dual = ftb_opt_int(s->options, "dual", 1, err, errlen);
    double eps = ftb_opt_double(s->options, "eps", 1e-2, err, errlen);
    long rank = ftb_opt_int(s->options, "rank", 8, err, errlen);
    double alpha = ftb_opt_double(s->options, "alpha", 16.0, err, errlen);
    if (err[0]) return NULL;
    int mask = ftb_parse_linear_targets(ftb_opt_str(s->options, "targets", "q,k,v,o,gate,up,down"), err, errlen);
    if (mask < 0) return NULL;
    if (queries < 1 || queries > MAX_QUERIES) {
        snprintf(err, errlen, "option queries: %ld is not in 1..%d", queries, MAX_QUERIES);
        return NULL;
    }
    if (dual != 0 && dual != 1) {
        snprintf(err, errlen, "option dual: %ld is neither 0 nor 1", dual);
        return NULL;
    }
    if (!(eps > 0.0) || eps > 1.0) {
        snprintf(err, errlen, "option eps: %g is not in (0, 1]", eps);
        return NULL;
    }
    if (rank < 1 || rank > 4096) {
        snprintf(err, errlen, "option rank: %ld is not in 1..4096", rank);
        return NULL;
    }
    if (!(alpha > 0.0)) {
        snprintf(err, errlen, "option alpha: %g is not positive", alpha);
        return NULL;
    }
    prge_state *st = calloc(1, sizeof *st);
    const int n = ftb_kit_lora_count(m, mask);
    if (st) {
        st->adapters = calloc((size_t)n, sizeof *st->adapters);
        st->params = calloc((size_t)n, sizeof *st->params);
    }
    if (!st || !st->adapters || !st->params) {
        snprintf(err, errlen, "prge: out of memory");
        if (st) {
            free(st->adapters);
            free(st->params);
            free(st);
        }
        return NULL;
    }
    st->model = m;
    st->queries = (int)queries;
    st->dual = (int)dual;
    st->eps = (float)eps;
    ftb_rng_seed(&st->seeds, s->seed ^ PRGE_SEED_SALT);
    ftb_model_set_trainable(m, 0);
    for (int i = 0; i < n; i++) st->adapters[i].owner = st;
    /* A is frozen (counted with the frozen weights); B is what trains, by
     * estimates: no gradient buffer. */
    st->set = (ftb_kit_lora_set){ st->adapters, sizeof *st->adapters, 0 };
    int rc = ftb_kit_lora_attach_all(m, mask, rank, alpha, s->seed, FTB_KIT_LORA_FROZEN_A, &prge_ops, 0, &st->set, err,
                                     errlen);
    st->n_adapters = st->set.n;
    if (rc) goto fail;
    for (int i = 0; i < n; i++) st->params[i] = &st->adapters[i].lora.B;
    return st;
fail:
    prge_destroy(st);
    return NULL;
}

/* ---- the step ----------------------------------------------------------- */

static void free_perturbations(prge_state *st)
{
    for (int a = 0; a < st->n_adapters; a++) {
        ftb_free(st->adapters[a].z);
        st->adapters[a].z = NULL;
    }
}

/* z_i of every B for this step's seed: the n query copies, held until the
 * update.  Generated in parallel over (adapter, query, block). */
static int draw_perturbations(prge_state *st, uint64_t step_seed, char *err, size_t errlen)
{
    const int n = st->queries;
    int64_t jobs = 0;
    for (int a = 0; a < st->n_adapters; a++) {
        int64_t nb = st->adapters[a].lora.B.numel;
        st->adapters[a].z = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)(nb * n));
        if (!st->adapters[a].z) {
            free_perturbations(st);
            snprintf(err, errlen, "prge: out of memory for %d perturbations of '%s'", n, st->adapters[a].lora.B.name);
            return -1;
        }
        jobs += n * ((nb + ZO_BLOCK - 1) / ZO_BLOCK);
    }
    /* job → (adapter, query, block) by walking the same order */
    int64_t *first_job = malloc(sizeof *first_job * (size_t)(st->n_adapters + 1));
    if (!first_job) {
        free_perturbations(st);
        snprintf(err, errlen, "prge: out of memory");
        return -1;
    }
    first_job[0] = 0;
    for (int a = 0; a < st->n_adapters; a++)
        first_job[a + 1] = first_job[a] + n * ((st->adapters[a].lora.B.numel + ZO_BLOCK - 1) / ZO_BLOCK);
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t j = 0; j < jobs; j++) {
        int a = 0;
        while (first_job[a + 1] <= j) a++;
        const prge_adapter *ad = &st->adapters[a];
        const int64_t nb = ad->lora.B.numel, blocks = (nb + ZO_BLOCK - 1) / ZO_BLOCK;
        const int64_t local = j - first_job[a], q = local / blocks, k = local % blocks;
        const int64_t lo = k * ZO_BLOCK, len = nb - lo < ZO_BLOCK ? nb - lo : ZO_BLOCK;
        ftb_rng r;
        ftb_rng_seed(&r, zo_child(zo_child(zo_child(step_seed, (uint64_t)q), (uint64_t)a), (uint64_t)k));
        float *z = ad->z + q * nb + lo;
        for (int64_t c = 0; c < len; c += ZO_CHUNK)
            fill_normal_pairs(z + c, len - c < ZO_CHUNK ? (int)(len - c) : ZO_CHUNK, &r);
    }
    free(first_job);
    return 0;
}

/* Token-weighted mean loss of each slice from the per-sequence losses. */
static void slice_losses(const float *seq_loss, const int *valid, int b_orig, int n_slices, double *loss)
{
    for (int j = 0; j < n_slices; j++) {
        double sum = 0;
        long count = 0;
        for (int b = 0; b < b_orig; b++) {
            sum += (double)seq_loss[j * b_orig + b] * valid[b];
            count += valid[b];
        }
        loss[j] = count ? sum / (double)count : 0.0;
    }
}

typedef struct {
    int32_t *tokens, *targets;
    float *seq_loss;
    int *valid; /* non-ignored targets per original sequence */
} repeated_batch;

static void free_repeated(repeated_batch *rb)
{
    ftb_free(rb->tokens);
    ftb_free(rb->targets);
    ftb_free(rb->seq_loss);
    free(rb->valid);
}

/* A batch the repeated forward can take (checked before a seed is drawn). */
static int check_batch(const prge_state *st, const ftb_batch *b, char *err, size_t errlen)
{
    const int n_slices = st->dual ? 2 * st->queries : st->queries;
    if (!b || b->B <= 0 || b->T <= 0 || !b->tokens || !b->targets) {
        snprintf(err, errlen, "batch: B and T must be positive and tokens/targets given");
        return -1;
    }
    const int64_t per_slice = (int64_t)b->B * b->T;
    if ((int64_t)n_slices * b->B > INT32_MAX / 2 || per_slice * n_slices > INT32_MAX / 2) {
        snprintf(err, errlen, "prge: %d slices of %d x %d positions is too many", n_slices, b->B, b->T);
        return -1;
    }
    return 0;
}

/* The queries of one step for step_seed (batch checked): draws z_i (left in the adapters:
 * the caller frees them with free_perturbations) and runs the repeated
 * forward(s).  pg[i] = (L₊ᵢ − L₋ᵢ)/(2ε); *mean_loss = mean of the 2n losses.
 * 0, or -1 with err (perturbations freed). */
static int run_queries(prge_state *st, ftb_session *s, const ftb_batch *b, uint64_t step_seed, double *pg,
                       double *mean_loss, int *passes_out, double *t_forward, double *t_optim, char *err, size_t errlen)
{
    const int n = st->queries, n_slices = st->dual ? 2 * n : n;
    const int64_t per_slice = (int64_t)b->B * b->T;
    double t0 = ftb_phase("zo perturb");
    if (draw_perturbations(st, step_seed, err, errlen)) return -1;

    /* The batch repeated once per slice, batch-major: slice j's sequences
     * are rows [j·B·T, (j+1)·B·T). */
    repeated_batch rb = { 0 };
    rb.tokens = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(int32_t) * (size_t)(per_slice * n_slices));
    rb.targets = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(int32_t) * (size_t)(per_slice * n_slices));
    rb.seq_loss = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)n_slices * b->B);
    rb.valid = calloc((size_t)b->B, sizeof *rb.valid);
    if (!rb.tokens || !rb.targets || !rb.seq_loss || !rb.valid) {
        free_repeated(&rb);
        free_perturbations(st);
        snprintf(err, errlen, "prge: out of memory for the repeated batch");
        return -1;
    }
    for (int j = 0; j < n_slices; j++) {
        memcpy(rb.tokens + j * per_slice, b->tokens, sizeof(int32_t) * (size_t)per_slice);
        memcpy(rb.targets + j * per_slice, b->targets, sizeof(int32_t) * (size_t)per_slice);
    }
    for (int64_t i = 0; i < per_slice; i++) rb.valid[i / b->T] += b->targets[i] != FTB_IGNORE_INDEX;
    *t_optim += ftb_now() - t0;

    double loss_plus[MAX_QUERIES], loss_minus[MAX_QUERIES], slice[2 * MAX_QUERIES];
    ftb_run_opts run = s->run;
    run.seq_loss = rb.seq_loss;
    int passes = st->dual ? 1 : 2, rc = 0;
    for (int pass = 0; pass < passes && rc == 0; pass++) {
        ftb_batch rep = { n_slices * b->B, b->T, rb.tokens, rb.targets };
        st->plan = (forward_plan){ 1, b->B, n_slices, pass == 1 };
        float loss = ftb_model_forward(s->model, &rep, &run, err, errlen);
        st->plan.active = 0;
        double fwd = 0;
        ftb_last_run_times(&fwd, NULL);
        *t_forward += fwd;
        if (isnan(loss)) {
            rc = -1;
            break;
        }
        slice_losses(rb.seq_loss, rb.valid, b->B, n_slices, slice);
        for (int j = 0; j < n_slices; j++) {
            int q;
            float sign;
            slice_query(st, j, &q, &sign);
            if (sign > 0)
                loss_plus[q] = slice[j];
            else
                loss_minus[q] = slice[j];
        }
    }
    free_repeated(&rb);
    if (rc) {
        free_perturbations(st);
        return -1;
    }
    *mean_loss = 0;
    for (int i = 0; i < n; i++) {
        pg[i] = (loss_plus[i] - loss_minus[i]) / (2.0 * (double)st->eps);
        *mean_loss += (loss_plus[i] + loss_minus[i]) / (2.0 * n);
        if (!isfinite(pg[i])) {
            free_perturbations(st);
            snprintf(err, errlen, "prge: query %d: the projected gradient is not finite (L+ %g, L- %g)", i,
                     loss_plus[i], loss_minus[i]);
            return -1;
        }
    }
    *passes_out = passes;
    return 0;
}

static int prge_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    prge_state *st = state;
    const int n = st->queries;
    if (check_batch(st, b, err, errlen)) return -1;
    const uint64_t step_seed = ftb_rng_u64(&st->seeds);
    double t_optim = 0, t_forward = 0, pg[MAX_QUERIES], mean_loss = 0;
    int passes = 0;
    if (run_queries(st, s, b, step_seed, pg, &mean_loss, &passes, &t_forward, &t_optim, err, errlen)) return -1;

    /* B ← B − lr·(1/n)·Σᵢ pgᵢ·zᵢ, with the held zᵢ (identical to a regeneration). */
    double t0 = ftb_phase("zo update");
    float coef[MAX_QUERIES];
    for (int i = 0; i < n; i++) coef[i] = (float)(s->lr * pg[i] / n);
#pragma omp parallel for schedule(dynamic, 1)
    for (int a = 0; a < st->n_adapters; a++) {
        prge_adapter *ad = &st->adapters[a];
        const int64_t nb = ad->lora.B.numel;
        for (int64_t k = 0; k < nb; k++) {
            float step = 0;
            for (int i = 0; i < n; i++) step += coef[i] * ad->z[i * nb + k];
            ad->lora.B.data[k] -= step;
        }
    }
    free_perturbations(st);
    t_optim += ftb_now() - t0;

    out->loss = (float)mean_loss; /* mean over the 2n perturbed losses ≈ L(B) up to O(ε²) */
    out->forward_passes = passes;
    out->t_forward = t_forward;
    out->t_backward = 0;
    out->t_optim = t_optim;
    return 0;
}

/* ---- gradient (ABI 2): for `ftbench fidelity` only ---------------------- */

static int prge_gradient(void *state, ftb_session *s, const ftb_batch *b, int exact, float *loss, char *err,
                         size_t errlen)
{
    prge_state *st = state;
    *loss = NAN;
    if (ftb_kit_ensure_grads(st->params, st->n_adapters, "prge", err, errlen)) return -1;
    if (exact) {
        for (int a = 0; a < st->n_adapters; a++)
            memset(st->adapters[a].lora.B.grad, 0, sizeof(float) * (size_t)st->adapters[a].lora.B.numel);
        *loss = ftb_kit_exact_backward(st->model, &s->run, b, &st->set, err, errlen);
        return isnan(*loss) ? -1 : 0;
    }
    const int n = st->queries;
    if (check_batch(st, b, err, errlen)) return -1;
    ftb_rng peek = st->seeds;
    const uint64_t step_seed = ftb_rng_u64(&peek);
    double t_optim = 0, t_forward = 0, pg[MAX_QUERIES], mean_loss = 0;
    int passes = 0;
    if (run_queries(st, s, b, step_seed, pg, &mean_loss, &passes, &t_forward, &t_optim, err, errlen)) return -1;
    float coef[MAX_QUERIES];
    for (int i = 0; i < n; i++) coef[i] = (float)(pg[i] / n);
#pragma omp parallel for schedule(dynamic, 1)
    for (int a = 0; a < st->n_adapters; a++) {
        prge_adapter *ad = &st->adapters[a];
        const int64_t nb = ad->lora.B.numel;
        for (int64_t k = 0; k < nb; k++) {
            float g = 0;
            for (int i = 0; i < n; i++) g += coef[i] * ad->z[i * nb + k];
            ad->lora.B.grad[k] = g;
        }
    }
    free_perturbations(st);
    *loss = (float)mean_loss;
    return 0;
}

static int prge_trainable(void *state, ftb_tensor ***tensors)
{
    prge_state *st = state;
    *tensors = st->params;
    return st->n_adapters;
}

static void prge_destroy(void *state)
{
    prge_state *st = state;
    if (!st) return;
    free_perturbations(st);
    ftb_kit_lora_release(st->model, &st->set); /* B's .grad too: allocated by gradient() only */
    free(st->adapters);
    free(st->params);
    free(st);
}

/* Analytic memory (docs/methods/prge.md): one inference forward of the
 * repeated batch (2n·B rows, n with dual=0), plus what the step holds
 * around it: every adapter's n perturbations z_i, the repeated tokens and
 * targets, the per-sequence losses.  Not counted: each hook's transient
 * h [N', r] and B_j [out, r] (well under 0.1% of a step). */
static int prge_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out)
{
    const prge_state *st = state;
    const int n_slices = st->dual ? 2 * st->queries : st->queries;
    ftb_memory_estimate_step(st->model, &s->run, n_slices * B, T, 0, NULL, out);
    int64_t extra = (int64_t)sizeof(int32_t) * 2 * n_slices * B * T + (int64_t)sizeof(float) * n_slices * B;
    for (int a = 0; a < st->n_adapters; a++)
        extra += (int64_t)sizeof(float) * st->adapters[a].lora.B.numel * st->queries;
    out->at_peak[FTB_MEM_WORKSPACE] += extra;
    out->peak_total += extra;
    return 0;
}

/* Shape-only (`ftbench plan`): A frozen (weights) and B (trainable, no
 * gradient) per target, the same inference forward of the repeated batch
 * and the same extras as prge_memory_model. */
static int prge_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err,
                     size_t errlen)
{
    long queries = ftb_opt_int(o, "queries", 4, err, errlen), dual = ftb_opt_int(o, "dual", 1, err, errlen), rank;
    double alpha;
    int mask;
    if (err[0] || ftb_kit_lora_options(o, "q,k,v,o,gate,up,down", &rank, &alpha, &mask, err, errlen)) return -1;
    if (queries < 1 || queries > MAX_QUERIES || (dual != 0 && dual != 1)) {
        snprintf(err, errlen, "prge: queries or dual out of range");
        return -1;
    }
    ftb_model *m = ftb_plan_model(p);
    ftb_model_set_trainable(m, 0);
    int64_t a_floats = 0, b_floats = 0;
    for (int l = 0; l < ftb_model_config(m)->n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            if (mask & (1 << k)) {
                const ftb_tensor *W = ftb_model_linear(m, l, (ftb_linear_kind)k);
                a_floats += rank * W->shape[1];
                b_floats += W->shape[0] * rank;
            }
    ftb_plan_add_state(p, FTB_MEM_WEIGHTS, (int64_t)sizeof(float) * a_floats);
    ftb_plan_add_state(p, FTB_MEM_TRAINABLE, (int64_t)sizeof(float) * b_floats);
    const int n_slices = dual ? 2 * (int)queries : (int)queries;
    if (ftb_kit_plan_hooked(p, mask, 0, n_slices * B, T, 0, NULL, NULL, out, err, errlen)) return -1;
    int64_t extra = (int64_t)sizeof(int32_t) * 2 * n_slices * B * T + (int64_t)sizeof(float) * n_slices * B +
                    (int64_t)sizeof(float) * b_floats * queries;
    out->at_peak[FTB_MEM_WORKSPACE] += extra;
    out->peak_total += extra;
    return 0;
}

static const ftb_method prge_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "prge",
    .summary = "P-RGE: zeroth-order LoRA-FA, n perturbed copies of B as slices of one batched inference forward",
    .options = prge_options,
    .init = prge_init,
    .step = prge_step,
    .trainable = prge_trainable,
    .destroy = prge_destroy,
    .gradient = prge_gradient,
    .memory_model = prge_memory_model,
    .memory_plan = prge_plan,
};

const ftb_method *ftbench_method(void) { return &prge_method; }
