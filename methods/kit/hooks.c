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

ftb_adapter *ftb_kit_plan_hooks(ftb_model *plan_model, int targets, int needs_input)
{
    const int L = ftb_model_config(plan_model)->n_layers;
    ftb_adapter *hooks = calloc((size_t)L * FTB_LIN_COUNT, sizeof *hooks);
    if (!hooks) return NULL;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            if (!(targets & (1 << k))) continue;
            ftb_adapter *h = &hooks[l * FTB_LIN_COUNT + k];
            h->needs_input = needs_input;
            h->state = h;
            ftb_attach_adapter(plan_model, l, (ftb_linear_kind)k, h);
        }
    return hooks;
}
