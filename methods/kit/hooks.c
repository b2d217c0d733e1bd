/* hooks.c (kit) — what the memory model of a hooking method builds: the
 * bytes each attached hook saves, as one array indexed layer·FTB_LIN_COUNT
 * + kind (lora, ia3, lars; on a built model and on a plan alike). */
#include "ftbench_kit.h"

#include <stdlib.h>

int64_t *ftb_kit_hook_saved(ftb_model *m, int B, int T, ftb_kit_hook_bytes_fn fn, void *ctx)
{
    const int L = ftb_model_config(m)->n_layers;
    int64_t *hook = calloc((size_t)L * FTB_LIN_COUNT, sizeof *hook);
    if (!hook) return NULL;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            const ftb_adapter *a = ftb_model_adapter(m, l, (ftb_linear_kind)k);
            if (a) hook[l * FTB_LIN_COUNT + k] = fn(a, m, l, (ftb_linear_kind)k, B, T, ctx);
        }
    return hook;
}

int ftb_kit_estimate_hooked(ftb_model *m, const ftb_run_opts *run, int B, int T, ftb_kit_hook_bytes_fn fn, void *ctx,
                            ftb_memory_estimate *out)
{
    int64_t *hook = ftb_kit_hook_saved(m, B, T, fn, ctx);
    if (!hook) return -1;
    ftb_memory_estimate_step(m, run, B, T, 1, hook, out);
    free(hook);
    return 0;
}

int ftb_kit_plan_hooked(ftb_plan *p, int targets, int needs_input, int B, int T, int training, ftb_kit_hook_bytes_fn fn,
                        void *ctx, ftb_memory_estimate *out, char *err, size_t errlen)
{
    ftb_model *m = ftb_plan_model(p);
    const int L = ftb_model_config(m)->n_layers;
    ftb_adapter *hooks = calloc((size_t)L * FTB_LIN_COUNT, sizeof *hooks);
    int64_t *saved = NULL;
    if (hooks) {
        for (int l = 0; l < L; l++)
            for (int k = 0; k < FTB_LIN_COUNT; k++) {
                if (!(targets & (1 << k))) continue;
                ftb_adapter *h = &hooks[l * FTB_LIN_COUNT + k];
                h->needs_input = needs_input;
                h->state = h;
                ftb_attach_adapter(m, l, (ftb_linear_kind)k, h);
            }
        saved = fn ? ftb_kit_hook_saved(m, B, T, fn, ctx) : NULL;
    }
    const int ok = hooks && (saved || !fn);
    if (ok) ftb_plan_estimate(p, B, T, training, saved, out);
    for (int l = 0; hooks && l < L; l++) /* the plan outlives this call: no dangling hooks */
        for (int k = 0; k < FTB_LIN_COUNT; k++) ftb_attach_adapter(m, l, (ftb_linear_kind)k, NULL);
    free(saved);
    free(hooks);
    if (!ok) snprintf(err, errlen, "out of memory for a plan's hooks");
    return ok ? 0 : -1;
}

uint64_t ftb_kit_hook_seed(uint64_t seed, uint64_t salt, uint64_t step, int layer, ftb_linear_kind kind)
{
    uint64_t z = seed ^ salt;
    z = z * 0x9e3779b97f4a7c15ULL + step;
    return z * 0x9e3779b97f4a7c15ULL + (uint64_t)layer * FTB_LIN_COUNT + (uint64_t)kind;
}

float ftb_kit_exact_backward(ftb_model *m, const ftb_run_opts *run, const ftb_batch *b, ftb_kit_lora_set *set,
                             char *err, size_t errlen)
{
    for (int i = 0; i < set->n; i++) ftb_kit_lora_at(set, i)->hook.needs_input = 1;
    ftb_run_opts all = *run;
    all.keep = NULL;
    all.first_trainable_layer = 0;
    all.seq_loss = NULL;
    float loss = ftb_model_forward_backward(m, b, &all, err, errlen);
    for (int i = 0; i < set->n; i++) ftb_kit_lora_at(set, i)->hook.needs_input = 0;
    return loss;
}

int ftb_kit_ensure_grads(ftb_tensor *const *tensors, int n, const char *method, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        ftb_tensor *t = tensors[i];
        if (!t->grad) t->grad = ftb_calloc(FTB_MEM_GRADS, sizeof(float) * (size_t)t->numel);
        if (!t->grad) {
            snprintf(err, errlen, "%s: out of memory for the gradient of '%s'", method, t->name);
            return -1;
        }
    }
    return 0;
}
