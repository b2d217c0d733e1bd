/* mezo — MeZO (Malladi et al., 2023, "Fine-Tuning Language Models with Just
 * Forward Passes", arXiv:2305.17333): zeroth-order SGD with SPSA and the
 * seed trick.  One step, for trainable parameters θ and a fresh seed:
 *
 *   L₊ = loss(θ + εz)                        (inference-mode forward)
 *   L₋ = loss(θ − εz)                        (inference-mode forward)
 *   pg = (L₊ − L₋) / (2ε)
 *   θ −= lr·(pg·z + wd·θ)                    (no decay on biases and norms)
 *
 * z ~ N(0, I) is never stored: it is regenerated from the seed wherever it
 * is needed.  How θ ± εz is formed is the option `perturb`:
 *
 *   read (default)  θ is never written by the forwards: the core reads each
 *                   weight as θ + (±ε)·z (ftb_model_set_read_perturbation:
 *                   one row tile of a weight, one embedding row, one norm or
 *                   bias vector at a time; params=lora: the hook forms its
 *                   perturbed A and B).  θ after a step with lr = 0 is θ bit
 *                   for bit.  Cost: one weight tile and one vector of
 *                   workspace, and z regenerated per read (the LM head's once
 *                   per chunk of the chunked loss).
 *   inplace         the paper's seed trick: θ += εz, forward, θ −= 2εz,
 *                   forward, θ += εz (restored), sharing its sweep with the
 *                   update.  In fp32 the restore is not exact: θ + εz rounds,
 *                   and where |εz| ≫ |θ| or the sum changes binade the bits
 *                   it drops cannot be recovered from θ + εz and z alone
 *                   (docs/methods/mezo.md, "Exactness"); drift ≤ 2 ulp.
 *
 * What is resident is the weights and one inference forward's workspace:
 * nothing is saved for a backward, there are no gradients and no optimizer
 * state.
 *
 * Noise layout (tests/test_zo.c regenerates it independently): tensor t of
 * the trainable list is cut in blocks of ZO_BLOCK elements; block k's
 * normals come from an ftb_rng seeded with
 *   zo_child(zo_child(step_seed, t), k),
 * two normals per ftb_rng_u64 draw (Box–Muller on two 24-bit uniforms).
 * Blocks are independent, so the sweeps run in parallel (OpenMP) and give
 * the same numbers whatever the thread count.  Step seeds are successive
 * ftb_rng_u64 draws of an ftb_rng seeded with session seed ^ MEZO_SEED_SALT.
 *
 * samples=K > 1 (MeZO's n): K seeds per step, each giving pg_k from its own
 * ± pair at the same θ, and the update
 *   θ −= lr·((1/K)·Σ_k pg_k·z_k + wd·θ),
 * one sweep per sample (inplace: the last sample's restore sharing a sweep
 * with its part of the update).
 *
 * params=lora: the trainable parameters are LoRA factors (y += s·x·Aᵀ·Bᵀ on
 * the targeted linears, A ~ U(±1/√in), B = 0, as methods/lora) and the base
 * stays frozen; the hook is forward-only and saves nothing.
 *
 * gradient (ABI 2, for `ftbench fidelity` only — a step never calls it):
 * exact = 0 writes the next step's estimate (1/K)·Σ pg_k·z_k into .grad
 * (allocated on first use); θ is left bit-identical (perturb=read never
 * writes it; inplace copies θ into .grad first and back after each pair); exact = 1 is
 * a real backward: with params=full the core's, with params=lora the hook's
 * (dB = s·dyᵀ·h, dA = (s·dy·B)ᵀ·x with h = x·Aᵀ recomputed from the input
 * the core keeps while needs_input is raised for that call). */
#include "ftbench_kit.h"
#include "ftbench_method.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ZO_BLOCK       FTB_KIT_NOISE_BLOCK /* elements per independently seeded block */
#define ZO_CHUNK       FTB_KIT_NOISE_CHUNK /* normals generated at a time, on the stack (even) */
#define MAX_SAMPLES    64
#define MEZO_SEED_SALT 0x6d657a6fULL /* "mezo" */

/* Seeded noise is the kit's (methods/kit/noise.c), shared with prge. */
#define zo_child          ftb_kit_noise_child
#define fill_normal_pairs ftb_kit_noise_normals

/* ---- the LoRA variant's forward hook ------------------------------------ */

struct mezo_state;

typedef struct {
    ftb_kit_lora lora;           /* first: hook, A, B and shapes (the method kit) */
    const struct mezo_state *st; /* perturb=read: the current perturbation */
    int index_A, index_B;        /* A's and B's places in the noise layout */
} mezo_lora;

static int perturbed_factors(const mezo_lora *a, float **A, float **B);

/* y += s·(x·Aᵀ)·Bᵀ.  h is workspace: nothing is kept, in any mode. */
static void mezo_lora_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    (void)saved;
    mezo_lora *a = (mezo_lora *)self;
    const int N = c->B * c->T;
    float *A = a->lora.A.data, *B = a->lora.B.data;
    if (perturbed_factors(a, &A, &B)) return; /* the core sees the failure (docs/CORE.md) */
    float *h = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->lora.r);
    if (h) {
        ftb_kit_lora_down(&a->lora, N, x, A, h);
        ftb_kit_lora_up(&a->lora, N, h, B, y);
    }
    ftb_free(h);
    if (A != a->lora.A.data) ftb_free(A); /* one allocation holds both */
}

/* A MeZO step never runs a backward.  The exact gradient (gradient() with
 * exact = 1) does: needs_input is raised for it, so x is there, h = x·Aᵀ is
 * recomputed (nothing was saved) and dB += s·dyᵀ·h, dA += dhᵀ·x with
 * dh = s·dy·B.  Without x (a backward run by someone else) the adapter only
 * passes the gradient through, dx += dh·A, so other gradients stay exact. */
static void mezo_lora_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx,
                               void *saved)
{
    (void)saved;
    const mezo_lora *a = (const mezo_lora *)self;
    const int grads = x && a->lora.A.grad && a->lora.B.grad;
    ftb_kit_lora_backward_recomputed(&a->lora, c->B * c->T, grads ? x : NULL, dy, dx);
}

static void mezo_lora_release(ftb_adapter *self, void *saved)
{
    (void)self;
    (void)saved; /* nothing was saved */
}

static const ftb_adapter_ops mezo_lora_ops = { FTB_ADAPTER_OPS_VERSION, mezo_lora_forward, mezo_lora_backward,
                                               mezo_lora_release };

/* ---- state -------------------------------------------------------------- */

typedef struct {
    int tensor;
    int64_t block;
} noise_block;

typedef struct mezo_state {
    ftb_model *model;
    ftb_tensor **params; /* what is perturbed and updated, in noise order */
    int n_params;
    noise_block *blocks; /* every (tensor, block) pair: one parallel loop */
    int64_t n_blocks;
    mezo_lora *adapters; /* params=lora only */
    int n_adapters;
    ftb_kit_lora_set set; /* the adapters, as the kit sees them */
    float eps, weight_decay;
    int samples;   /* K: ± pairs per step */
    int inplace;   /* perturb=inplace: the seed trick writes θ */
    ftb_rng seeds; /* K draws per step */
    /* perturb=read: the perturbation forwards see now (scale 0: none) */
    uint64_t read_seed;
    float read_scale;
} mezo_state;

static const ftb_option_doc mezo_options[] = {
    { "params", "full", "what is trained: full (every weight, as in the paper) or lora" },
    { "eps", "auto", "perturbation scale ε; auto: 1e-3 with params=full, 1e-2 with params=lora (the paper's)" },
    { "weight_decay", "0.0", "decoupled weight decay wd in θ -= lr·(pg·z + wd·θ); none on biases and norms" },
    { "samples", "1",
      "K: perturbations per step (MeZO's n), 2K forwards, the update averages the K estimates (1..64)" },
    { "perturb", "read",
      "how forwards see θ ± εz: read (added as the core reads θ, never written: exact) or inplace (the paper's seed "
      "trick: written and undone, within 2 ulp)" },
    { "rank", "8", "params=lora: rank r of A and B" },
    { "alpha", "16", "params=lora: scale s = alpha / rank" },
    { "targets", "q,v", "params=lora: linear layers to adapt (comma-separated, or 'all' / 'attn' / 'mlp')" },
    { NULL, NULL, NULL },
};

/* The LoRA factors are the kit's (the lora plugin's names, shapes and
 * initialisation), trained without gradients; the hook saves nothing. */
static int attach_lora(mezo_state *st, ftb_session *s, long rank, double alpha, int mask, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    const int n = ftb_kit_lora_count(m, mask);
    st->adapters = calloc((size_t)n, sizeof *st->adapters);
    st->params = calloc((size_t)n * 2, sizeof *st->params);
    if (!st->adapters || !st->params) {
        snprintf(err, errlen, "mezo: out of memory");
        return -1;
    }
    st->set = (ftb_kit_lora_set){ st->adapters, sizeof *st->adapters, 0 };
    int rc = ftb_kit_lora_attach_all(m, mask, rank, alpha, s->seed, FTB_KIT_LORA_ZO, &mezo_lora_ops, 0, &st->set, err,
                                     errlen);
    st->n_adapters = st->set.n;
    if (rc) return -1;
    for (int i = 0; i < n; i++) {
        mezo_lora *a = &st->adapters[i];
        a->st = st;
        a->index_A = st->n_params;
        st->params[st->n_params++] = &a->lora.A;
        a->index_B = st->n_params;
        st->params[st->n_params++] = &a->lora.B;
    }
    return 0;
}

/* The base weights themselves: written in place, so they must be writable;
 * ftb_model_make_writable copies mapped ones out of the checkpoint without
 * allocating gradients. */
static int train_full_model(mezo_state *st, ftb_session *s, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    ftb_model_set_trainable(m, 1);
    if (ftb_model_make_writable(m, err, errlen)) return -1;
    ftb_tensor **all;
    const int n = ftb_model_params(m, &all);
    st->params = calloc((size_t)n, sizeof *st->params);
    if (!st->params) {
        snprintf(err, errlen, "mezo: out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) /* a tied lm_head is not in params[]: perturbed once, as embed */
        if (all[i]->numel > 0) st->params[st->n_params++] = all[i];
    return 0;
}

static int list_noise_blocks(mezo_state *st, char *err, size_t errlen)
{
    for (int t = 0; t < st->n_params; t++) st->n_blocks += (st->params[t]->numel + ZO_BLOCK - 1) / ZO_BLOCK;
    st->blocks = malloc(sizeof *st->blocks * (size_t)(st->n_blocks ? st->n_blocks : 1));
    if (!st->blocks) {
        snprintf(err, errlen, "mezo: out of memory");
        return -1;
    }
    int64_t j = 0;
    for (int t = 0; t < st->n_params; t++)
        for (int64_t k = 0; k * ZO_BLOCK < st->params[t]->numel; k++) st->blocks[j++] = (noise_block){ t, k };
    return 0;
}

static void mezo_destroy(void *state);

static void *mezo_init(ftb_session *s, char *err, size_t errlen)
{
    const char *params = ftb_opt_str(s->options, "params", "full");
    int lora = strcmp(params, "lora") == 0;
    if (!lora && strcmp(params, "full") != 0) {
        snprintf(err, errlen, "option params: '%s' is neither 'full' nor 'lora'", params);
        return NULL;
    }
    const double eps_default = lora ? 1e-2 : 1e-3;
    const char *eps_s = ftb_opt_str(s->options, "eps", "auto");
    double eps = strcmp(eps_s, "auto") == 0 ? eps_default : ftb_opt_double(s->options, "eps", eps_default, err, errlen);
    double wd = ftb_opt_double(s->options, "weight_decay", 0.0, err, errlen);
    long samples = ftb_opt_int(s->options, "samples", 1, err, errlen);
    const char *perturb = ftb_opt_str(s->options, "perturb", "read");
    if (strcmp(perturb, "read") != 0 && strcmp(perturb, "inplace") != 0) {
        snprintf(err, errlen, "option perturb: '%s' is neither 'read' nor 'inplace'", perturb);
        return NULL;
    }
    /* LoRA's options are checked even with params=full (a typo should not
     * pass silently) but not refused: a sweep hands unscoped options to
     * every method. */
    long rank = ftb_opt_int(s->options, "rank", 8, err, errlen);
    double alpha = ftb_opt_double(s->options, "alpha", 16.0, err, errlen);
    if (err[0]) return NULL;
    int mask = ftb_parse_linear_targets(ftb_opt_str(s->options, "targets", "q,v"), err, errlen);
    if (mask < 0) return NULL;
    if (!(eps > 0.0) || eps > 1.0) {
        snprintf(err, errlen, "option eps: %g is not in (0, 1]", eps);
        return NULL;
    }
    if (wd < 0.0) {
        snprintf(err, errlen, "option weight_decay: %g is negative", wd);
        return NULL;
    }
    if (samples < 1 || samples > MAX_SAMPLES) {
        snprintf(err, errlen, "option samples: %ld is not in 1..%d", samples, MAX_SAMPLES);
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
    mezo_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "mezo: out of memory");
        return NULL;
    }
    st->model = s->model;
    st->eps = (float)eps;
    st->weight_decay = (float)wd;
    st->samples = (int)samples;
    st->inplace = strcmp(perturb, "inplace") == 0;
    ftb_rng_seed(&st->seeds, s->seed ^ MEZO_SEED_SALT);
    if (lora) {
        ftb_model_set_trainable(s->model, 0);
        if (attach_lora(st, s, rank, alpha, mask, err, errlen)) goto fail;
    } else if (train_full_model(st, s, err, errlen)) {
        goto fail;
    }
    if (list_noise_blocks(st, err, errlen)) goto fail;
    return st;
fail:
    mezo_destroy(st);
    return NULL;
}

/* What a sweep does with z. */
enum { SWEEP_ADD, SWEEP_UPDATE, SWEEP_DESCEND, SWEEP_GRAD_SET, SWEEP_GRAD_ADD };

/* One sweep over every trainable element with z regenerated:
 *   SWEEP_ADD:       θ += add·z;
 *   SWEEP_UPDATE:    θ += add·z, then θ −= lr·(pg·z + wd·θ) (wd 0 on no_decay);
 *   SWEEP_DESCEND:   θ −= lr·(pg·z + wd·θ) alone, a zero change leaving θ's
 *                    bits as they were (perturb=read: θ was never moved);
 *   SWEEP_GRAD_SET:  grad = pg·z;   SWEEP_GRAD_ADD: grad += pg·z  (θ untouched).
 * No allocation: each thread generates a block's z ZO_CHUNK at a time. */
static void sweep_mode(const mezo_state *st, uint64_t step_seed, int mode, float add, float lr, float pg,
                       float weight_decay)
{
    const noise_block *blocks = st->blocks;
    const int update = mode == SWEEP_UPDATE;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t j = 0; j < st->n_blocks; j++) {
        ftb_tensor *t = st->params[blocks[j].tensor];
        const int64_t lo = blocks[j].block * ZO_BLOCK;
        const int64_t n = t->numel - lo < ZO_BLOCK ? t->numel - lo : ZO_BLOCK;
        const float wd = t->no_decay ? 0.0f : weight_decay;
        float *x = (mode == SWEEP_GRAD_SET || mode == SWEEP_GRAD_ADD ? t->grad : t->data) + lo;
        ftb_rng r;
        ftb_rng_seed(&r, zo_child(zo_child(step_seed, (uint64_t)blocks[j].tensor), (uint64_t)blocks[j].block));
        float z[ZO_CHUNK];
        for (int64_t c = 0; c < n; c += ZO_CHUNK) {
            int m = n - c < ZO_CHUNK ? (int)(n - c) : ZO_CHUNK;
            fill_normal_pairs(z, m, &r);
            if (update) {
                for (int i = 0; i < m; i++) {
                    float v = x[c + i] + add * z[i];
                    x[c + i] = v - lr * (pg * z[i] + wd * v);
                }
            } else if (mode == SWEEP_DESCEND) {
                for (int i = 0; i < m; i++) {
                    float d = lr * (pg * z[i] + wd * x[c + i]);
                    x[c + i] = d != 0.0f ? x[c + i] - d : x[c + i]; /* −0 − (−0) would be +0 */
                }
            } else if (mode == SWEEP_GRAD_SET) {
                for (int i = 0; i < m; i++) x[c + i] = pg * z[i];
            } else if (mode == SWEEP_GRAD_ADD) {
                for (int i = 0; i < m; i++) x[c + i] += pg * z[i];
            } else {
                for (int i = 0; i < m; i++) x[c + i] += add * z[i];
            }
        }
    }
}

/* The step's sweeps: perturb (update 0) or restore and update (update 1). */
static void sweep(const mezo_state *st, uint64_t step_seed, float add, int update, float lr, float pg)
{
    sweep_mode(st, step_seed, update ? SWEEP_UPDATE : SWEEP_ADD, add, lr, pg, st->weight_decay);
}

/* ---- perturb=read: θ ± εz formed where θ is read ------------------------ */

/* values[0..n) += scale·z for elements [offset, offset + n) of trainable
 * tensor t: the same z as the sweeps draw.  Each block's generator is
 * advanced past the pairs before offset (a draw each, no log or sine), so a
 * stretch costs its own normals plus at most one block of skipped draws. */
static void add_noise(uint64_t step_seed, int t, int64_t offset, int64_t n, float scale, float *values)
{
    if (n <= 0) return;
    const int64_t k0 = offset / ZO_BLOCK, k1 = (offset + n - 1) / ZO_BLOCK;
#pragma omp parallel for schedule(dynamic, 1) if (k1 > k0)
    for (int64_t k = k0; k <= k1; k++) {
        const int64_t lo = k * ZO_BLOCK;
        const int64_t a = offset > lo ? offset - lo : 0;                           /* within the block */
        const int64_t b = offset + n < lo + ZO_BLOCK ? offset + n - lo : ZO_BLOCK; /* end, exclusive */
        ftb_rng r;
        ftb_rng_seed(&r, zo_child(zo_child(step_seed, (uint64_t)t), (uint64_t)k));
        for (int64_t i = 0; i < a / 2; i++) (void)ftb_rng_u64(&r); /* one draw per pair */
        float z[ZO_CHUNK];
        for (int64_t e = a & ~(int64_t)1; e < b; e += ZO_CHUNK) {
            int m = b - e < ZO_CHUNK ? (int)(b - e) : ZO_CHUNK; /* even but at the stretch's end */
            fill_normal_pairs(z, m, &r);
            for (int i = e < a ? 1 : 0; i < m; i++) values[lo + e + i - offset] += scale * z[i];
        }
    }
}

/* The core's read hook (params=full): which trainable tensor t is — a tied
 * LM head is the embedding, perturbed once — and its stretch of z. */
static void read_perturbation(void *ctx, const ftb_tensor *t, int64_t offset, int64_t n, float *values)
{
    const mezo_state *st = ctx;
    ftb_model *m = st->model;
    if (t == ftb_model_part_tensor(m, FTB_TENSOR_LM_HEAD) && ftb_model_config(m)->tie_embeddings)
        t = ftb_model_part_tensor(m, FTB_TENSOR_EMBED);
    for (int i = 0; i < st->n_params; i++)
        if (st->params[i] == t) {
            add_noise(st->read_seed, i, offset, n, st->read_scale, values);
            return;
        }
}

/* What the next forwards see: θ + scale·z of step_seed (scale 0: θ). */
static void perturb_reads(mezo_state *st, uint64_t step_seed, float scale)
{
    st->read_seed = step_seed;
    st->read_scale = scale;
    if (!st->adapters) ftb_model_set_read_perturbation(st->model, scale != 0.0f ? read_perturbation : NULL, st);
}

/* params=lora under perturb=read: A + s·z_A and B + s·z_B in one workspace
 * allocation (*A, *B point into it; the caller frees *A), or A and B
 * themselves when nothing is perturbed.  -1 if it cannot be allocated. */
static int perturbed_factors(const mezo_lora *a, float **A, float **B)
{
    const mezo_state *st = a->st;
    if (st->inplace || st->read_scale == 0.0f) return 0;
    const int64_t nA = a->lora.A.numel, nB = a->lora.B.numel;
    float *buf = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)(nA + nB));
    if (!buf) return -1;
    memcpy(buf, a->lora.A.data, sizeof(float) * (size_t)nA);
    memcpy(buf + nA, a->lora.B.data, sizeof(float) * (size_t)nB);
    add_noise(st->read_seed, a->index_A, 0, nA, st->read_scale, buf);
    add_noise(st->read_seed, a->index_B, 0, nB, st->read_scale, buf + nA);
    *A = buf;
    *B = buf + nA;
    return 0;
}

/* ---- the step ------------------------------------------------------------ */

/* Runs one inference-mode forward; adds its time to *t_forward. */
static float timed_forward(ftb_session *s, const ftb_batch *b, double *t_forward, char *err, size_t errlen)
{
    ftb_run_opts run = s->run;
    run.seq_loss = NULL;
    float loss = ftb_model_forward(s->model, b, &run, err, errlen);
    double fwd = 0;
    ftb_last_run_times(&fwd, NULL);
    *t_forward += fwd;
    return loss;
}

/* pg of one ± pair under perturb=read: θ itself is not touched. */
static int read_pair(mezo_state *st, ftb_session *s, const ftb_batch *b, uint64_t seed, double *pg, float *loss,
                     double *t_forward, char *err, size_t errlen)
{
    perturb_reads(st, seed, st->eps);
    float loss_plus = timed_forward(s, b, t_forward, err, errlen);
    float loss_minus = NAN;
    if (!isnan(loss_plus)) {
        perturb_reads(st, seed, -st->eps);
        loss_minus = timed_forward(s, b, t_forward, err, errlen);
    }
    perturb_reads(st, 0, 0.0f);
    *pg = ((double)loss_plus - (double)loss_minus) / (2.0 * (double)st->eps);
    *loss = 0.5f * (loss_plus + loss_minus);
    if (isfinite(*pg)) return 0;
    if (!err[0])
        snprintf(err, errlen, "mezo: the projected gradient is not finite (L+ %g, L- %g)", (double)loss_plus,
                 (double)loss_minus);
    return -1;
}

static int read_step(mezo_state *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    const int K = st->samples;
    uint64_t seeds[MAX_SAMPLES];
    double pg[MAX_SAMPLES], t_forward = 0;
    float loss_sum = 0;
    for (int k = 0; k < K; k++) seeds[k] = ftb_rng_u64(&st->seeds);
    for (int k = 0; k < K; k++) {
        float loss;
        if (read_pair(st, s, b, seeds[k], &pg[k], &loss, &t_forward, err, errlen)) return -1; /* θ untouched */
        loss_sum += loss;
    }
    double t0 = ftb_phase("zo update");
    /* The last sample's share first, with the weight decay (once, on θ as
     * it was: as inplace applies it), then the others'. */
    sweep_mode(st, seeds[K - 1], SWEEP_DESCEND, 0.0f, s->lr, (float)(pg[K - 1] / K), st->weight_decay);
    for (int k = 0; k < K - 1; k++) sweep_mode(st, seeds[k], SWEEP_DESCEND, 0.0f, s->lr, (float)(pg[k] / K), 0.0f);
    out->t_optim = ftb_now() - t0;
    out->loss = loss_sum / (float)K; /* ≈ L(θ) up to O(ε²) */
    out->forward_passes = 2 * K;
    out->t_forward = t_forward;
    out->t_backward = 0;
    return 0;
}

/* perturb=inplace: the paper's seed trick, θ written and restored. */
static int inplace_step(mezo_state *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err,
                        size_t errlen)
{
    const float eps = st->eps;
    const int K = st->samples;
    uint64_t seeds[MAX_SAMPLES];
    double pg[MAX_SAMPLES];
    for (int k = 0; k < K; k++) seeds[k] = ftb_rng_u64(&st->seeds);
    double t_optim = 0, t_forward = 0, t0;
    float loss_sum = 0;

    for (int k = 0; k < K; k++) {
        const int last = k == K - 1;
        t0 = ftb_phase("zo perturb");
        sweep(st, seeds[k], eps, 0, 0, 0);
        t_optim += ftb_now() - t0;
        float loss_plus = timed_forward(s, b, &t_forward, err, errlen);
        t0 = ftb_phase("zo perturb");
        sweep(st, seeds[k], isnan(loss_plus) ? -eps : -2.0f * eps, 0, 0, 0);
        t_optim += ftb_now() - t0;
        if (isnan(loss_plus)) return -1; /* restored (earlier samples were); err says why */
        float loss_minus = timed_forward(s, b, &t_forward, err, errlen);
        pg[k] = ((double)loss_plus - (double)loss_minus) / (2.0 * (double)eps);
        int ok = !isnan(loss_minus) && isfinite(pg[k]);
        if (!ok && !err[0])
            snprintf(err, errlen, "mezo: the projected gradient is not finite (L+ %g, L- %g)", (double)loss_plus,
                     (double)loss_minus);

        /* Restore (+εz).  The last sample's restore and its share of the
         * update are one sweep; a failed step only restores. */
        t0 = ftb_phase(last && ok ? "zo update" : "zo perturb");
        sweep(st, seeds[k], eps, ok && last, s->lr, ok && last ? (float)(pg[k] / K) : 0.0f);
        t_optim += ftb_now() - t0;
        if (!ok) return -1;
        loss_sum += 0.5f * (loss_plus + loss_minus);
    }
    if (K > 1) { /* the other samples' shares; weight decay was applied once, above */
        t0 = ftb_phase("zo update");
        for (int k = 0; k < K - 1; k++) sweep_mode(st, seeds[k], SWEEP_UPDATE, 0.0f, s->lr, (float)(pg[k] / K), 0.0f);
        t_optim += ftb_now() - t0;
    }

    out->loss = loss_sum / (float)K; /* ≈ L(θ) up to O(ε²) */
    out->forward_passes = 2 * K;
    out->t_forward = t_forward;
    out->t_backward = 0;
    out->t_optim = t_optim;
    return 0;
}

static int mezo_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    mezo_state *st = state;
    return st->inplace ? inplace_step(st, s, b, out, err, errlen) : read_step(st, s, b, out, err, errlen);
}

/* ---- gradient (ABI 2): for `ftbench fidelity` only ---------------------- */

/* .grad for every trainable tensor, allocated on first use (FTB_MEM_GRADS). */
static int ensure_grads(mezo_state *st, char *err, size_t errlen)
{
    if (!st->adapters) return ftb_model_alloc_grads(st->model, err, errlen);
    return ftb_kit_ensure_grads(st->params, st->n_params, "mezo", err, errlen);
}

static void copy_params(mezo_state *st, int to_grad)
{
    for (int i = 0; i < st->n_params; i++) {
        ftb_tensor *t = st->params[i];
        if (to_grad)
            memcpy(t->grad, t->data, sizeof(float) * (size_t)t->numel);
        else
            memcpy(t->data, t->grad, sizeof(float) * (size_t)t->numel);
    }
}

/* exact = 0: the estimate (1/K)·Σ pg_k·z_k of the next step (its seeds
 * peeked, not drawn); inplace saves θ in .grad and copies it back after
 * each pair; exact = 1: backprop with every activation kept. */
static int mezo_gradient(void *state, ftb_session *s, const ftb_batch *b, int exact, float *loss, char *err,
                         size_t errlen)
{
    mezo_state *st = state;
    *loss = NAN;
    if (ensure_grads(st, err, errlen)) return -1;
    if (exact) {
        for (int i = 0; i < st->n_params; i++)
            memset(st->params[i]->grad, 0, sizeof(float) * (size_t)st->params[i]->numel);
        *loss = ftb_kit_exact_backward(st->model, &s->run, b, &st->set, err, errlen);
        return isnan(*loss) ? -1 : 0;
    }
    const int K = st->samples;
    const float eps = st->eps;
    ftb_rng peek = st->seeds;
    uint64_t seeds[MAX_SAMPLES];
    double pg[MAX_SAMPLES], t_forward = 0, loss_sum = 0;
    for (int k = 0; k < K; k++) seeds[k] = ftb_rng_u64(&peek);
    if (st->inplace) copy_params(st, 1);
    for (int k = 0; k < K; k++) {
        float pair_loss;
        if (!st->inplace) {
            if (read_pair(st, s, b, seeds[k], &pg[k], &pair_loss, &t_forward, err, errlen)) return -1;
            loss_sum += pair_loss;
            continue;
        }
        sweep(st, seeds[k], eps, 0, 0, 0);
        float loss_plus = timed_forward(s, b, &t_forward, err, errlen);
        sweep(st, seeds[k], -2.0f * eps, 0, 0, 0);
        float loss_minus = isnan(loss_plus) ? NAN : timed_forward(s, b, &t_forward, err, errlen);
        copy_params(st, 0);
        pg[k] = ((double)loss_plus - (double)loss_minus) / (2.0 * (double)eps);
        if (!isfinite(pg[k])) {
            if (!err[0])
                snprintf(err, errlen, "mezo: the projected gradient is not finite (L+ %g, L- %g)", (double)loss_plus,
                         (double)loss_minus);
            return -1;
        }
        loss_sum += 0.5 * ((double)loss_plus + (double)loss_minus);
    }
    for (int k = 0; k < K; k++)
        sweep_mode(st, seeds[k], k ? SWEEP_GRAD_ADD : SWEEP_GRAD_SET, 0.0f, 0.0f, (float)(pg[k] / K), 0.0f);
    *loss = (float)(loss_sum / K);
    return 0;
}

/* ---- memory model (ABI 2) ------------------------------------------------ */

/* A step is inference forwards: the core's schedule of one, read through
 * the perturbation when params=full and perturb=read (its tile and vector
 * buffer).  The LoRA hook's transients (h, perturbed A and B) are not in it. */
static int mezo_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out)
{
    mezo_state *st = state;
    const int reads = !st->inplace && !st->adapters;
    if (reads) ftb_model_set_read_perturbation(st->model, read_perturbation, st);
    ftb_memory_estimate_step(st->model, &s->run, B, T, 0, NULL, out);
    if (reads) ftb_model_set_read_perturbation(st->model, NULL, NULL);
    return 0;
}

static int mezo_trainable(void *state, ftb_tensor ***tensors)
{
    mezo_state *st = state;
    *tensors = st->params;
    return st->n_params;
}

static void mezo_destroy(void *state)
{
    mezo_state *st = state;
    if (!st) return;
    if (!st->adapters && st->model) ftb_model_set_read_perturbation(st->model, NULL, NULL);
    if (st->adapters) ftb_kit_lora_release(st->model, &st->set); /* .grad too: allocated by gradient() only */
    free(st->adapters);
    free(st->params);
    free(st->blocks);
    free(st);
}

/* The plan's stand-in for the read hook: it never runs (a plan runs no
 * forward); its presence is what the estimate reads. */
static void planned_perturbation(void *ctx, const ftb_tensor *t, int64_t offset, int64_t n, float *values)
{
    (void)ctx, (void)t, (void)offset, (void)n, (void)values;
}

/* Shape-only (`ftbench plan`): params=full makes every weight trainable
 * without gradients (fp32, counted as trainable), params=lora the kit's
 * factors without gradients and hooks that keep nothing; a step is one
 * inference forward, read through the perturbation when perturb=read and
 * params=full. */
static int mezo_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err,
                     size_t errlen)
{
    const char *params = ftb_opt_str(o, "params", "full");
    const char *perturb = ftb_opt_str(o, "perturb", "read");
    const int lora = !strcmp(params, "lora");
    if ((!lora && strcmp(params, "full")) || (strcmp(perturb, "read") && strcmp(perturb, "inplace"))) {
        snprintf(err, errlen, "mezo: params must be full or lora and perturb read or inplace");
        return -1;
    }
    ftb_model *m = ftb_plan_model(p);
    if (lora) {
        long rank;
        double alpha;
        int mask;
        if (ftb_kit_lora_options(o, "q,v", &rank, &alpha, &mask, err, errlen)) return -1;
        ftb_model_set_trainable(m, 0);
        ftb_plan_add_state(p, FTB_MEM_TRAINABLE, (int64_t)sizeof(float) * ftb_kit_lora_floats(m, mask, rank));
        return ftb_kit_plan_hooked(p, mask, 0, B, T, 0, NULL, NULL, out, err, errlen);
    }
    ftb_model_set_trainable(m, 1);
    if (strcmp(perturb, "read") == 0) ftb_model_set_read_perturbation(m, planned_perturbation, NULL);
    ftb_plan_estimate(p, B, T, 0, NULL, out);
    ftb_model_set_read_perturbation(m, NULL, NULL);
    return 0;
}

static const ftb_method mezo_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "mezo",
    .summary = "MeZO: zeroth-order SGD, two inference forwards per step, seeded perturbations never stored",
    .options = mezo_options,
    .init = mezo_init,
    .step = mezo_step,
    .trainable = mezo_trainable,
    .destroy = mezo_destroy,
    .gradient = mezo_gradient,
    .memory_model = mezo_memory_model,
    .memory_plan = mezo_plan,
};

const ftb_method *ftbench_method(void) { return &mezo_method; }
