/* memory_plan.c — a method's memory from shapes alone, without weights and
 * without the method's init (ftb_method.memory_plan, include/ftbench_method.h;
 * the planner of issue 24 builds on it).
 *
 * A plan holds the model as descriptors (ftb_model_new_empty: every tensor's
 * name, shape and flags, no data), on which the method marks what it would
 * train and where it would hook, as its init would.  The estimate is the
 * analytic memory model's own walk (memory_model.c) over those descriptors;
 * only its inputs differ from ftb_memory_estimate_step: the state between
 * steps is computed from the descriptors and what the method adds, instead
 * of read from the live accounting, and the dequantization tile from the
 * planned storage formats.  Both paths share the walk, so the suite `plan`
 * can require them to agree byte for byte on a built model.  A config the
 * core refuses to compute for a reason that leaves the shapes alone
 * (cfg.shape_only: a rope scaling it does not implement) is planned. */
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

struct ftb_plan {
    ftb_model *model; /* descriptors only: every data pointer NULL */
    ftb_model_shape shape;
    ftb_run_opts run;
    ftb_keep_policy *keep;        /* [n_layers]: run.keep points here once set */
    int64_t state[FTB_MEM_NCAT];  /* what the method adds */
    int base_grads, base_moments; /* state of the trainable base tensors */
};

void ftb_model_shape_from_config(const ftb_config *cfg, ftb_model_shape *out)
{
    memset(out, 0, sizeof *out);
    out->config = *cfg;
    out->base_dtype = FTB_DTYPE_F32;
    out->embed_dtype = FTB_DTYPE_F32;
}

static int is_block_linear(const ftb_model *m, const ftb_tensor *t)
{
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            if (ftb_layer_weight(&m->layers[l], (ftb_linear_kind)k) == t) return 1;
    return 0;
}

ftb_plan *ftb_plan_new(const ftb_model_shape *shape, const ftb_run_opts *run, char *err, size_t errlen)
{
    ftb_plan *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory for a plan");
        return NULL;
    }
    p->shape = *shape;
    /* A config the core would not compute (an unsupported rope scaling,
     * cfg.shape_only) still has the model's shapes, and so its memory: the
     * descriptors are made from it, its reason kept for the planner to
     * state (ftbench plan prints it). */
    ftb_config shapes = shape->config;
    shapes.shape_only[0] = 0;
    p->model = ftb_model_new_empty(&shapes, err, errlen);
    if (p->model) p->model->cfg = shape->config;
    p->keep = p->model ? calloc((size_t)shape->config.n_layers, sizeof *p->keep) : NULL;
    if (!p->model || !p->keep) {
        if (p->model && !p->keep) snprintf(err, errlen, "out of memory for a plan");
        ftb_plan_free(p);
        return NULL;
    }
    if (run)
        p->run = *run;
    else
        ftb_run_opts_default(&p->run);
    if (p->run.keep) {
        memcpy(p->keep, p->run.keep, sizeof *p->keep * (size_t)shape->config.n_layers);
        p->run.keep = p->keep;
    }
    /* Storage formats as the quantized loader stores them: the block
     * linears in base_dtype, the embedding and an untied head in
     * embed_dtype, norms and biases in f32. */
    for (int i = 0; i < p->model->n_params; i++) {
        ftb_tensor *t = p->model->params[i];
        if (t->ndim != 2) continue;
        t->dtype = is_block_linear(p->model, t) ? shape->base_dtype : shape->embed_dtype;
        t->group = t->dtype == FTB_DTYPE_INT4 || t->dtype == FTB_DTYPE_INT4_ASYM
                       ? (shape->group > 0 ? shape->group : FTB_QUANT_DEFAULT_GROUP)
                       : 0;
    }
    if (shape->config.tie_embeddings) { /* the head reads the embedding */
        p->model->lm_head.dtype = p->model->embed.dtype;
        p->model->lm_head.group = p->model->embed.group;
    }
    return p;
}

void ftb_plan_free(ftb_plan *p)
{
    if (!p) return;
    ftb_model_free(p->model);
    free(p->keep);
    free(p);
}

ftb_model *ftb_plan_model(ftb_plan *p) { return p->model; }
ftb_run_opts *ftb_plan_run(ftb_plan *p) { return &p->run; }

void ftb_plan_keep_all(ftb_plan *p, ftb_keep_policy policy)
{
    for (int l = 0; l < p->model->cfg.n_layers; l++) p->keep[l] = policy;
    p->run.keep = p->keep;
}

void ftb_plan_add_state(ftb_plan *p, ftb_mem_category c, int64_t bytes)
{
    if ((unsigned)c < FTB_MEM_NCAT) p->state[c] += bytes;
}

void ftb_plan_base_state(ftb_plan *p, int grads, int moments)
{
    p->base_grads = grads;
    p->base_moments = moments;
}

/* A tensor's bytes as stored: fp32 once trainable (a trained tensor is
 * dequantized first), else its format's. */
static int64_t stored_bytes(const ftb_tensor *t)
{
    if (t->trainable || t->dtype == FTB_DTYPE_F32 || t->ndim != 2) return (int64_t)sizeof(float) * t->numel;
    return ftb_dtype_bytes(t->dtype, t->shape[0], t->shape[1], t->group);
}

/* ftb_quant_largest_tile's rule on descriptors: the widest tile of a 2-D
 * tensor read through tiles (stored in another format, or every one under
 * a read perturbation). */
static int64_t largest_tile(const ftb_model *m, int include_f32)
{
    int64_t best = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        if (t->ndim != 2 || (!include_f32 && (t->dtype == FTB_DTYPE_F32 || t->trainable))) continue;
        int64_t cols = t->shape[1], floats = ftb_quant_tile_rows(t->shape[0], cols) * cols;
        if (floats > best) best = floats;
    }
    return best;
}

void ftb_plan_estimate(ftb_plan *p, int B, int T, int training, const int64_t *hook_saved, ftb_memory_estimate *out)
{
    const ftb_model *m = p->model;
    int64_t state[FTB_MEM_NCAT];
    memcpy(state, p->state, sizeof state);
    int64_t trained_floats = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        if (t->trainable) {
            state[FTB_MEM_TRAINABLE] += stored_bytes(t);
            trained_floats += t->numel;
        } else {
            state[FTB_MEM_WEIGHTS] += stored_bytes(t);
        }
    }
    if (p->base_grads) state[FTB_MEM_GRADS] += (int64_t)sizeof(float) * trained_floats;
    if (p->base_moments) state[FTB_MEM_OPTIM] += ftb_optimizer_state_bytes(trained_floats);
    const int perturbed = !training && ftb_model_read_perturbation(m, NULL) != NULL;
    const int threads = p->shape.threads > 0 ? p->shape.threads : omp_get_max_threads();
    ftb_memory_estimate_from(m, &p->run, B, T, training, hook_saved, state, largest_tile(m, perturbed), threads, out);
}
