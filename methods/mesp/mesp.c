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
#include <sys/stat.h>
#include <unistd.h>

/* The adapter is the kit's LoRA adapter (the lora plugin's). */
typedef ftb_kit_lora mesp_adapter;

typedef struct {
    mesp_adapter *adapters;
    ftb_kit_lora_set set;
    ftb_tensor **params;
    ftb_adamw *opt;
    ftb_model *model;
    ftb_keep_policy *keep;          /* s->run.keep points here until destroy */
    char *offload_dir;              /* s->run.offload_dir points here, or NULL */
    ftb_residency residency_before; /* the model's, restored at destroy */
} mesp_state;

/* h = x·Aᵀ [N, r], in a workspace buffer: never kept. */
static float *low_rank_projection(const mesp_adapter *a, int N, const float *x)
{
    float *h = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    if (h) ftb_gemm(0, 1, N, a->r, a->in, 1.0f, x, a->in, a->A.data, a->in, 0.0f, h, a->r);
    return h;
}

static void mesp_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    (void)saved; /* nothing to keep: backward recomputes h from x */
    mesp_adapter *a = (mesp_adapter *)self;
    const int N = c->B * c->T;
    float *h = low_rank_projection(a, N, x);
    if (!h) return; /* the core sees the failure (docs/CORE.md) */
    ftb_gemm(0, 1, N, a->out, a->r, a->scale, h, a->r, a->B.data, a->r, 1.0f, y, a->out);
    ftb_free(h);
}

static void mesp_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
    (void)saved;
    mesp_adapter *a = (mesp_adapter *)self;
    const int N = c->B * c->T;
    float *h = low_rank_projection(a, N, x);
    float *dh = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * a->r);
    if (!h || !dh) { /* the core sees the failure (docs/CORE.md) */
        ftb_free(h);
        ftb_free(dh);
        return;
    }
    ftb_gemm(1, 0, a->out, a->r, N, a->scale, dy, a->out, h, a->r, 1.0f, a->B.grad, a->r); /* dB += s·dyᵀ·h */
    ftb_free(h);
    ftb_gemm(0, 0, N, a->r, a->out, a->scale, dy, a->out, a->B.data, a->r, 0.0f, dh, a->r); /* dh = s·dy·B   */
    ftb_gemm(1, 0, a->r, a->in, N, 1.0f, dh, a->r, x, a->in, 1.0f, a->A.grad, a->in);       /* dA += dhᵀ·x   */
    ftb_gemm(0, 0, N, a->in, a->r, 1.0f, dh, a->r, a->A.data, a->in, 1.0f, dx, a->in);      /* dx += dh·A    */
    ftb_free(dh);
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
    { "offload_dir", "", "directory for offloaded checkpoints (default $TMPDIR, else /var/tmp)" },
    { "residency", "lazy",
      "base weights mapped from a file: lazy (brought in block by block, as MeBP/MeSP) "
      "or as-given (keep the host's --residency)" },
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
    const char *dir = ftb_opt_str(s->options, "offload_dir", "");
    const char *residency = ftb_opt_str(s->options, "residency", "lazy");
    if (strcmp(residency, "lazy") && strcmp(residency, "as-given")) {
        snprintf(err, errlen, "option residency: '%s' is not lazy or as-given", residency);
        return NULL;
    }
    struct stat sb;
    if (dir[0] && (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(dir, W_OK | X_OK) != 0)) {
        snprintf(err, errlen, "option offload_dir: '%s' is not a writable directory", dir);
        return NULL;
    }

    mesp_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "mesp: out of memory");
        return NULL;
    }
    const int n = ftb_kit_lora_count(m, mask), L = ftb_model_config(m)->n_layers;
    st->model = m;
    st->residency_before = ftb_model_residency(m);
    st->adapters = calloc((size_t)n, sizeof *st->adapters);
    st->params = calloc((size_t)n * 2, sizeof *st->params);
    st->set = (ftb_kit_lora_set){ st->adapters, sizeof *st->adapters, 0 };
    st->keep = calloc((size_t)L, sizeof *st->keep);
    st->offload_dir = dir[0] ? strdup(dir) : NULL;
    if (!st->adapters || !st->params || !st->keep || (dir[0] && !st->offload_dir)) {
        snprintf(err, errlen, "mesp: out of memory");
        goto fail;
    }
    ftb_model_set_trainable(m, 0);
    /* The lora plugin's adapters (the kit's), draw for draw. */
    if (ftb_kit_lora_attach_all(m, mask, rank, alpha, s->seed, FTB_KIT_LORA_BACKPROP, &mesp_ops, 1, &st->set, err,
                                errlen))
        goto fail;
    for (int i = 0; i < n; i++) {
        st->params[2 * i] = &st->adapters[i].A;
        st->params[2 * i + 1] = &st->adapters[i].B;
    }
    if (!(st->opt = ftb_adamw_create(m, st->params, 2 * n, s->lr, (float)wd, err, errlen))) goto fail;
    for (int l = 0; l < L; l++) st->keep[l] = policy;
    s->run.keep = st->keep;
    if (st->offload_dir) s->run.offload_dir = st->offload_dir;
    /* A base mapped from a file is brought in block by block; a model built
     * in memory has nothing to drop and keeps its residency. */
    if (!strcmp(residency, "lazy") && ftb_model_mapped_bytes(m) > 0)
        ftb_model_set_residency(m, FTB_RESIDENT_LAZY_BLOCK);
    return st;
fail:
    mesp_destroy(st);
    return NULL;
}

static int mesp_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    mesp_state *st = state;
    return ftb_backprop_step(s, st->opt, b, out, err, errlen);
}

static int mesp_trainable(void *state, ftb_tensor ***tensors)
{
    mesp_state *st = state;
    *tensors = st->params;
    return 2 * st->set.n;
}

static void mesp_destroy(void *state)
{
    mesp_state *st = state;
    if (!st) return;
    ftb_model_set_residency(st->model, st->residency_before);
    ftb_adamw_destroy(st->opt);
    ftb_kit_lora_release(st->model, &st->set);
    free(st->adapters);
    free(st->params);
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
    ftb_model *m = ftb_plan_model(p);
    ftb_model_set_trainable(m, 0);
    const int64_t floats = ftb_kit_lora_floats(m, mask, rank);
    ftb_plan_add_state(p, FTB_MEM_TRAINABLE, (int64_t)sizeof(float) * floats);
    ftb_plan_add_state(p, FTB_MEM_GRADS, (int64_t)sizeof(float) * floats);
    ftb_plan_add_state(p, FTB_MEM_OPTIM, ftb_optimizer_state_bytes(floats));
    ftb_plan_keep_all(p, policy);
    ftb_adapter *hooks = ftb_kit_plan_hooks(m, mask, 1);
    if (!hooks) {
        snprintf(err, errlen, "mesp: out of memory");
        return -1;
    }
    ftb_plan_estimate(p, B, T, 1, NULL, out);
    free(hooks);
    return 0;
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
