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
#include "ftbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    ftb_adapter hook; /* first: the core hands this pointer back */
    ftb_tensor A, B;
    float scale;
    int in, out, r;
} mesp_adapter;

typedef struct {
    mesp_adapter *adapters;
    int n_adapters;
    ftb_tensor **params;
    ftb_adamw opt;
    ftb_model *model;
    ftb_keep_policy *keep; /* s->run.keep points here until destroy */
    char *offload_dir;     /* s->run.offload_dir points here, or NULL */
    int residency_before;  /* the model's, restored at destroy */
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

static const ftb_adapter_ops mesp_ops = { mesp_forward, mesp_backward, mesp_release };

static const ftb_option_doc mesp_options[] = {
    { "rank", "8", "rank r of A and B" },
    { "alpha", "16", "scale s = alpha / rank" },
    { "targets", "q,k,v,o,gate,up,down", "linear layers to adapt (comma-separated, or 'all' / 'attn' / 'mlp')" },
    { "weight_decay", "0.0", "AdamW weight decay" },
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
    long rank = ftb_opt_int(s->options, "rank", 8, err, errlen);
    double alpha = ftb_opt_double(s->options, "alpha", 16.0, err, errlen);
    double wd = ftb_opt_double(s->options, "weight_decay", 0.0, err, errlen);
    if (err[0]) return NULL;
    int mask = ftb_parse_linear_targets(ftb_opt_str(s->options, "targets", "q,k,v,o,gate,up,down"), err, errlen);
    if (mask < 0) return NULL;
    if (rank < 1 || rank > 4096) {
        snprintf(err, errlen, "option rank: %ld is not in 1..4096", rank);
        return NULL;
    }
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
    int per_layer = __builtin_popcount((unsigned)mask);
    st->model = m;
    st->residency_before = m->residency;
    st->adapters = calloc((size_t)m->cfg.n_layers * per_layer, sizeof *st->adapters);
    st->params = calloc((size_t)m->cfg.n_layers * per_layer * 2, sizeof *st->params);
    st->keep = calloc((size_t)m->cfg.n_layers, sizeof *st->keep);
    st->offload_dir = dir[0] ? strdup(dir) : NULL;
    if (!st->adapters || !st->params || !st->keep || (dir[0] && !st->offload_dir)) {
        snprintf(err, errlen, "mesp: out of memory");
        goto fail;
    }
    ftb_model_set_trainable(m, 0);
    /* The lora plugin's initialisation, draw for draw. */
    ftb_rng rng;
    ftb_rng_seed(&rng, s->seed ^ 0x6c6f7261ULL);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            if (!(mask & (1 << k))) continue;
            mesp_adapter *a = &st->adapters[st->n_adapters++];
            ftb_tensor *W = ftb_layer_weight(&m->layers[l], k);
            a->out = (int)W->shape[0];
            a->in = (int)W->shape[1];
            a->r = (int)rank;
            a->scale = (float)(alpha / rank);
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d.%s.lora_A.weight", l, ftb_linear_name(k));
            if (ftb_tensor_alloc(&a->A, name, rank, a->in, FTB_MEM_TRAINABLE, 1, err, errlen)) goto fail;
            snprintf(name, sizeof name, "model.layers.%d.%s.lora_B.weight", l, ftb_linear_name(k));
            if (ftb_tensor_alloc(&a->B, name, a->out, rank, FTB_MEM_TRAINABLE, 1, err, errlen)) goto fail;
            float bound = 1.0f / sqrtf((float)a->in);
            for (int64_t i = 0; i < a->A.numel; i++) a->A.data[i] = bound * (2.0f * ftb_rng_uniform(&rng) - 1.0f);
            a->hook.ops = &mesp_ops;
            a->hook.needs_input = 1;
            a->hook.state = a;
            st->params[2 * (st->n_adapters - 1)] = &a->A;
            st->params[2 * (st->n_adapters - 1) + 1] = &a->B;
            ftb_attach_adapter(m, l, k, &a->hook);
        }
    if (ftb_adamw_init(&st->opt, m, st->params, 2 * st->n_adapters, s->lr, (float)wd, err, errlen)) goto fail;
    for (int l = 0; l < m->cfg.n_layers; l++) st->keep[l] = policy;
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
    return ftb_backprop_step(s, &st->opt, b, out, err, errlen);
}

static int mesp_trainable(void *state, ftb_tensor ***tensors)
{
    mesp_state *st = state;
    *tensors = st->params;
    return 2 * st->n_adapters;
}

static void mesp_destroy(void *state)
{
    mesp_state *st = state;
    if (!st) return;
    ftb_model_set_residency(st->model, (ftb_residency)st->residency_before);
    for (int l = 0; l < st->model->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) ftb_attach_adapter(st->model, l, k, NULL);
    ftb_adamw_free(&st->opt);
    for (int i = 0; i < st->n_adapters; i++) {
        ftb_free(st->adapters[i].A.data);
        ftb_free(st->adapters[i].A.grad);
        ftb_free(st->adapters[i].B.data);
        ftb_free(st->adapters[i].B.grad);
    }
    free(st->adapters);
    free(st->params);
    free(st->keep);
    free(st->offload_dir);
    free(st);
}

static const ftb_method mesp_method = {
    FTB_ABI_VERSION,
    "mesp",
    "MeSP: LoRA with a structured backward that recomputes x·Aᵀ, blocks checkpointed to mapped files",
    mesp_options,
    mesp_init,
    mesp_step,
    mesp_trainable,
    mesp_destroy,
};

const ftb_method *ftbench_method(void) { return &mesp_method; }
