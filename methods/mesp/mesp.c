/* mesp — MeSP, "Memory-Efficient Structured Backpropagation for On-Device
 * LLM Fine-Tuning" (arXiv 2602.13069): LoRA whose backward is derived by
 * hand from LoRA's low-rank structure, so that the rank-r projection
 * h = x·Aᵀ is recomputed from x in backward instead of being stored; on top
 * of the block checkpoints of MeBP (Song & Tang, 2025), which MeSP builds
 * on: each block keeps only its input, in a memory-mapped file, and is
 * recomputed in backward.  Like MeBP, a base mapped from a file (e.g.
 * `--base-dtype int4`, MeSP's 4-bit base) is brought in block by block:
 * mesp sets lazy residency itself (option residency=lazy, the default).
 *
 * Adapter (A [r, in], B [out, r], s = alpha / r, as the lora plugin):
 *   forward   y = x·W0ᵀ + s·(x·Aᵀ)·Bᵀ      h = x·Aᵀ is a transient
 *   backward  h = x·Aᵀ (again)
 *             dB += s·dyᵀ·h,  dh = s·dy·B,  dA += dhᵀ·x,  dx += dh·A
 * The same products in the same order as the lora plugin, on an h computed
 * by the same call from the same x: gradients are bitwise LoRA's.  What the
 * hook keeps is nothing: x is the linear's input, which the core keeps
 * anyway (needs_input), once per block input.
 *
 * Initialisation is the lora plugin's (same seed, same order), so the two
 * methods start from the same adapters and save the same tensor names. */
#include "ftbench_kit.h"
#include "ftbench_method.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The adapter is the kit's LoRA adapter (the lora plugin's). */
typedef ftb_kit_lora mesp_adapter;

typedef struct {
    ftb_kit_lora_trained adapters; /* the kit's, as the lora plugin's */
    ftb_model *model;
    ftb_keep_policy *keep;          /* s->run.keep points here until destroy */
    char *offload_dir;              /* s->run.offload_dir points here, or NULL */
    ftb_residency residency_before; /* the model's, restored at destroy */
} mesp_state;

/* h = x·Aᵀ [N, r], in a workspace buffer: never kept. */
static float *low_rank_projection(const mesp_adapter *a, int N, const float *x)
{
    float *h = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    if (h) ftb_kit_lora_down(a, N, x, a->A.data, h);
    return h;
}

static void mesp_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    (void)saved; /* nothing to keep: backward recomputes h from x */
    mesp_adapter *a = (mesp_adapter *)self;
    const int N = c->B * c->T;
    float *h = low_rank_projection(a, N, x);
    if (!h) return; /* the core sees the failure (docs/CORE.md) */
    ftb_kit_lora_up(a, N, h, a->B.data, y);
    ftb_free(h);
}

/* lora's backward products (the kit's), on h recomputed from x. */
static void mesp_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
    (void)saved;
    ftb_kit_lora_backward_recomputed((mesp_adapter *)self, c->B * c->T, x, dy, dx);
}

static void mesp_release(ftb_adapter *self, void *saved)
{
    (void)self;
    (void)saved; /* never set */
}

static const ftb_adapter_ops mesp_ops = { FTB_ADAPTER_OPS_VERSION, mesp_forward, mesp_backward, mesp_release };

static const ftb_option_doc mesp_options[] = {
    FTB_KIT_LORA_OPTION_DOCS,
    { "checkpoint", "offload",
      "block checkpoints: offload (input in a mapped file, MeBP), "
      "recompute (input on the heap), none (keep every activation)" },
    FTB_KIT_OFFLOAD_DIR_DOC,
    FTB_KIT_RESIDENCY_DOC,
    { NULL, NULL, NULL },
};

/* "offload" | "recompute" | "none" → the keep policy of every block. */
static int parse_checkpoint(const char *s, ftb_keep_policy *out, char *err, size_t errlen)
{
    if (strcmp(s, "offload") == 0)
        *out = FTB_KEEP_OFFLOAD;
    else if (strcmp(s, "recompute") == 0)
        *out = FTB_KEEP_INPUT;
    else if (strcmp(s, "none") == 0)
        *out = FTB_KEEP_ALL;
    else {
        snprintf(err, errlen, "option checkpoint: '%s' is not offload, recompute or none", s);
        return -1;
    }
    return 0;
}

static void mesp_destroy(void *state);

static void *mesp_init(ftb_session *s, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    long rank;
    double alpha;
    int mask;
    double wd = ftb_opt_double(s->options, "weight_decay", 0.0, err, errlen);
    if (err[0] || ftb_kit_lora_options(s->options, "q,k,v,o,gate,up,down", &rank, &alpha, &mask, err, errlen))
        return NULL;
    ftb_keep_policy policy;
    if (parse_checkpoint(ftb_opt_str(s->options, "checkpoint", "offload"), &policy, err, errlen)) return NULL;
    const char *dir;
    int lazy;
    if (ftb_kit_offload_options(s->options, &dir, &lazy, err, errlen)) return NULL;

    mesp_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "mesp: out of memory");
        return NULL;
    }
    const int L = ftb_model_config(m)->n_layers;
    st->model = m;
    st->residency_before = ftb_model_residency(m); /* what destroy restores, even after a failed init */
    st->keep = calloc((size_t)L, sizeof *st->keep);
    st->offload_dir = dir[0] ? strdup(dir) : NULL;
    if (!st->keep || (dir[0] && !st->offload_dir)) {
        snprintf(err, errlen, "mesp: out of memory");
        goto fail;
    }
    /* The lora plugin's adapters (the kit's), draw for draw. */
    if (ftb_kit_lora_trained_init(&st->adapters, s, sizeof(mesp_adapter), mask, rank, alpha, wd, &mesp_ops, 1, err,
                                  errlen))
        goto fail;
    for (int l = 0; l < L; l++) st->keep[l] = policy;
    s->run.keep = st->keep;
    if (st->offload_dir) s->run.offload_dir = st->offload_dir;
    /* A base mapped from a file is brought in block by block; a model built
     * in memory has nothing to drop and keeps its residency. */
    st->residency_before = ftb_kit_enter_lazy_residency(m, lazy);
    return st;
fail:
    mesp_destroy(st);
    return NULL;
}

static int mesp_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    mesp_state *st = state;
    return ftb_backprop_step(s, st->adapters.opt, b, out, err, errlen);
}

static int mesp_trainable(void *state, ftb_tensor ***tensors)
{
    mesp_state *st = state;
    return ftb_kit_lora_trained_params(&st->adapters, tensors);
}

static void mesp_destroy(void *state)
{
    mesp_state *st = state;
    if (!st) return;
    ftb_model_set_residency(st->model, st->residency_before);
    ftb_kit_lora_trained_free(&st->adapters);
    free(st->keep);
    free(st->offload_dir);
    free(st);
}

/* Shape-only (`ftbench plan`): lora's adapters, whose hooks save nothing
 * (the core keeps their input), under the blocks' keep policy. */
static int mesp_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err,
                     size_t errlen)
{
    long rank;
    double alpha;
    int mask;
    ftb_keep_policy policy;
    (void)ftb_opt_double(o, "weight_decay", 0.0, err, errlen);
    if (err[0] || ftb_kit_lora_options(o, "q,k,v,o,gate,up,down", &rank, &alpha, &mask, err, errlen) ||
        parse_checkpoint(ftb_opt_str(o, "checkpoint", "offload"), &policy, err, errlen))
        return -1;
    ftb_kit_lora_trained_plan(p, mask, rank);
    ftb_plan_keep_all(p, policy);
    return ftb_kit_plan_hooked(p, mask, 1, B, T, 1, NULL, NULL, out, err, errlen); /* hooks that save nothing */
}

static const ftb_method mesp_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "mesp",
    .summary = "MeSP: LoRA with a structured backward that recomputes x·Aᵀ, blocks checkpointed to mapped files",
    .options = mesp_options,
    .init = mesp_init,
    .step = mesp_step,
    .trainable = mesp_trainable,
    .destroy = mesp_destroy,
    .memory_plan = mesp_plan,
};

const ftb_method *ftbench_method(void) { return &mesp_method; }
