/* mebp — MeBP, "Memory-Efficient Backpropagation for Fine-Tuning LLMs on
 * Resource-Constrained Mobile Devices" (Song & Tang, EMNLP 2025 industry
 * track): LoRA, with every block's checkpoint (its input) written to a
 * memory-mapped file instead of the heap and dropped from RAM until its
 * backward, the block recomputed there (FTB_KEEP_OFFLOAD for every block);
 * the adapters, their gradients and AdamW state in RAM.
 *
 * The adapters are the lora plugin's own: mebp opens lora through the
 * host's loader (ftb_method_open: the plugin search path) and hands it
 * every option but its own, so that mebp and lora differ in nothing but
 * where block activations live — the gradients are bitwise lora's.
 *
 * MeBP's base weights are compressed (symmetric INT4), memory-mapped and
 * decompressed one block at a time: run with `--base-dtype int4` (the core
 * dequantizes tile by tile) and mebp sets lazy block residency itself when
 * the base is mapped from a file (option residency=lazy, the default), so a
 * block's weight pages are brought in when it runs and dropped after
 * (docs/methods/mebp.md). */
#include "ftbench_kit.h"
#include "ftbench_method.h"

#include <stdlib.h>
#include <string.h>

#define ADAPTER_METHOD "lora"

typedef struct {
    const ftb_method *lora; /* opened with ftb_method_open */
    void *lora_state;
    ftb_keep_policy *keep;       /* s->run.keep points here until destroy */
    char *offload_dir;           /* s->run.offload_dir points here, or NULL */
    const char **keys, **values; /* lora's options (strings are the host's) */
    ftb_options lora_options;
    ftb_model *model;
    ftb_residency residency_before; /* restored at destroy */
} mebp_state;

/* The lora plugin's options (the kit's list, which lora shows too) and
 * mebp's own. */
static const ftb_option_doc mebp_options[] = {
    FTB_KIT_LORA_OPTION_DOCS, FTB_KIT_LORA_DROPOUT_DOC, FTB_KIT_OFFLOAD_DIR_DOC,
    FTB_KIT_RESIDENCY_DOC,    { NULL, NULL, NULL },
};

static int is_own_option(const char *key) { return !strcmp(key, "offload_dir") || !strcmp(key, "residency"); }

/* Every option but mebp's own is lora's; one lora does not know would be
 * silently ignored there, so it is refused here. */
static int lora_options_of(const ftb_options *o, const char **keys, const char **values, ftb_options *out, char *err,
                           size_t errlen)
{
    int n = o ? o->n : 0, count = 0;
    for (int i = 0; i < n; i++) {
        if (is_own_option(o->keys[i])) continue;
        const ftb_option_doc *d = mebp_options;
        while (d->name && strcmp(d->name, o->keys[i]) != 0) d++;
        if (!d->name) {
            snprintf(err, errlen,
                     "mebp has no option '%s' (options: rank, alpha, targets, weight_decay, dropout, "
                     "offload_dir, residency)",
                     o->keys[i]);
            return -1;
        }
        keys[count] = o->keys[i];
        values[count] = o->values[i];
        count++;
    }
    *out = (ftb_options){ count, keys, values };
    return 0;
}

static const ftb_method *open_lora(const ftb_options *lora_options, char *err, size_t errlen)
{
    char why[FTB_ERR_LEN];
    const ftb_method *m = ftb_method_open(ADAPTER_METHOD, lora_options, why, sizeof why);
    if (!m) snprintf(err, errlen, "mebp: its adapters are the lora plugin's: %s", why);
    return m;
}

static void mebp_destroy(void *state);

static void *mebp_init(ftb_session *s, char *err, size_t errlen)
{
    const ftb_options *o = s->options;
    const char *dir;
    int lazy;
    if (ftb_kit_offload_options(o, &dir, &lazy, err, errlen)) return NULL;
    mebp_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "mebp: out of memory");
        return NULL;
    }
    const int n = o ? o->n : 0, L = ftb_model_config(s->model)->n_layers;
    st->keep = calloc((size_t)L, sizeof *st->keep);
    st->keys = calloc((size_t)n + 1, sizeof *st->keys);
    st->values = calloc((size_t)n + 1, sizeof *st->values);
    st->offload_dir = dir[0] ? strdup(dir) : NULL;
    if (!st->keep || !st->keys || !st->values || (dir[0] && !st->offload_dir)) {
        snprintf(err, errlen, "mebp: out of memory");
        goto fail;
    }
    if (lora_options_of(o, st->keys, st->values, &st->lora_options, err, errlen) ||
        !(st->lora = open_lora(&st->lora_options, err, errlen)))
        goto fail;

    s->options = &st->lora_options;
    st->lora_state = st->lora->init(s, err, errlen);
    s->options = o;
    if (!st->lora_state) {
        if (!err[0]) snprintf(err, errlen, "mebp: the lora adapters failed to initialise");
        goto fail;
    }
    for (int l = 0; l < L; l++) st->keep[l] = FTB_KEEP_OFFLOAD;
    s->run.keep = st->keep;
    if (st->offload_dir) s->run.offload_dir = st->offload_dir;
    /* A base mapped from a file is brought in block by block.  A model built
     * in memory has nothing to drop: its residency is left alone. */
    st->model = s->model;
    st->residency_before = ftb_kit_enter_lazy_residency(s->model, lazy);
    return st;
fail:
    mebp_destroy(st);
    return NULL;
}

static int mebp_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    mebp_state *st = state;
    const ftb_options *host_options = s->options;
    s->options = &st->lora_options;
    int rc = st->lora->step(st->lora_state, s, b, out, err, errlen);
    s->options = host_options;
    return rc;
}

static int mebp_trainable(void *state, ftb_tensor ***tensors)
{
    mebp_state *st = state;
    if (!st->lora->trainable) {
        *tensors = NULL;
        return 0;
    }
    return st->lora->trainable(st->lora_state, tensors);
}

static void mebp_destroy(void *state)
{
    mebp_state *st = state;
    if (!st) return;
    if (st->model) ftb_model_set_residency(st->model, st->residency_before);
    if (st->lora_state && st->lora->destroy) st->lora->destroy(st->lora_state);
    if (st->lora) ftb_method_close(st->lora);
    free(st->keep);
    free(st->offload_dir);
    free(st->keys);
    free(st->values);
    free(st);
}

/* Its LoRA adapters' model, under the keep policies mebp has set in s->run
 * (checkpoints offloaded: not resident, so not in the prediction). */
static int mebp_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out)
{
    mebp_state *st = state;
    if (st->lora->abi_version >= 2 && st->lora->memory_model)
        return st->lora->memory_model(st->lora_state, s, B, T, out);
    return -1;
}

/* Shape-only (`ftbench plan`): lora's plan with every block offloaded. */
static int mebp_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err,
                     size_t errlen)
{
    const int n = o ? o->n : 0;
    const char **keys = calloc((size_t)n + 1, sizeof *keys), **values = calloc((size_t)n + 1, sizeof *values);
    ftb_options lora_options;
    const ftb_method *lora = NULL;
    int rc = -1;
    if (!keys || !values)
        snprintf(err, errlen, "mebp: out of memory");
    else if (lora_options_of(o, keys, values, &lora_options, err, errlen) == 0 &&
             (lora = open_lora(&lora_options, err, errlen))) {
        if (lora->abi_version < 3 || !lora->memory_plan) {
            snprintf(err, errlen, "mebp: the lora plugin has no plan");
        } else {
            ftb_plan_keep_all(p, FTB_KEEP_OFFLOAD);
            rc = lora->memory_plan(p, &lora_options, B, T, out, err, errlen);
        }
    }
    if (lora) ftb_method_close(lora);
    free(keys);
    free(values);
    return rc;
}

static const ftb_method mebp_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "mebp",
    .summary = "MeBP: LoRA with every block checkpoint in a memory-mapped file, blocks recomputed in backward, "
               "a mapped base brought in block by block",
    .options = mebp_options,
    .init = mebp_init,
    .step = mebp_step,
    .trainable = mebp_trainable,
    .destroy = mebp_destroy,
    .memory_model = mebp_memory_model,
    .memory_plan = mebp_plan,
};

const ftb_method *ftbench_method(void) { return &mebp_method; }
