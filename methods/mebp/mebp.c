/* mebp — MeBP, "Memory-Efficient Backpropagation for Fine-Tuning LLMs on
 * Resource-Constrained Mobile Devices" (Song & Tang, EMNLP 2025 industry
 * track): LoRA, with every block's checkpoint (its input) written to a
 * memory-mapped file instead of the heap and dropped from RAM until its
 * backward, the block recomputed there (FTB_KEEP_OFFLOAD for every block);
 * the adapters, their gradients and AdamW state in RAM.
 *
 * The adapters are the lora plugin's own: mebp loads <dir>/lora.so from the
 * directory it was itself loaded from and hands it every option but
 * offload_dir, so that mebp and lora differ in nothing but where block
 * activations live — the gradients are bitwise lora's.
 *
 * MeBP's base weights are compressed (symmetric INT4), memory-mapped and
 * decompressed one block at a time: run with `--base-dtype int4` (the core
 * dequantizes tile by tile) and mebp sets lazy block residency itself when
 * the base is mapped from a file (option residency=lazy, the default), so a
 * block's weight pages are brought in when it runs and dropped after
 * (docs/methods/mebp.md). */
#include "ftbench.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ADAPTER_METHOD "lora"

typedef struct {
    void *handle; /* lora.so, dlopen'ed by mebp */
    const ftb_method *lora;
    void *lora_state;
    ftb_keep_policy *keep;       /* s->run.keep points here until destroy */
    char *offload_dir;           /* s->run.offload_dir points here, or NULL */
    const char **keys, **values; /* lora's options (strings are the host's) */
    ftb_options lora_options;
    ftb_model *model;
    int residency_before; /* restored at destroy */
} mebp_state;

/* The lora plugin's options (tests check the two lists agree) and mebp's own. */
static const ftb_option_doc mebp_options[] = {
    { "rank", "8", "rank r of A and B" },
    { "alpha", "16", "scale s = alpha / rank" },
    { "targets", "q,k,v,o,gate,up,down", "linear layers to adapt (comma-separated, or 'all' / 'attn' / 'mlp')" },
    { "weight_decay", "0.0", "AdamW weight decay" },
    { "dropout", "0",
      "PEFT's lora_dropout on each adapter's input while training, in [0, 1); > 0 keeps a "
      "dropped-out copy of the input and its mask per adapter" },
    { "offload_dir", "", "directory for the block checkpoint files (default $TMPDIR, else /var/tmp)" },
    { "residency", "lazy",
      "base weights mapped from a file: lazy (brought in block by block, MeBP's scheme) "
      "or as-given (keep the host's --residency)" },
    { NULL, NULL, NULL },
};

/* Loads <mebp's dir>/<name>.so and checks it as the host checks a plugin. */
static int open_sibling_method(const char *name, void **handle, const ftb_method **method, char *err, size_t errlen)
{
    Dl_info info;
    char dir[PATH_MAX], path[PATH_MAX + 256];
    *handle = NULL;
    *method = NULL;
    if (!dladdr((void *)&open_sibling_method, &info) || !info.dli_fname) {
        snprintf(err, errlen, "mebp: cannot tell which directory the mebp plugin was loaded from");
        return -1;
    }
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - info.dli_fname), info.dli_fname);
    snprintf(path, sizeof path, "%s/%s.so", dir, name);
    if (access(path, F_OK) != 0) {
        snprintf(err, errlen, "mebp: its adapters are the %s plugin's, and there is no %s.so in %s", name, name, dir);
        return -1;
    }
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "mebp: cannot load %s: %s", path, dlerror());
        return -1;
    }
    void *sym = dlsym(h, FTB_METHOD_ENTRY);
    ftb_method_entry_fn entry = NULL;
    const ftb_method *m = NULL;
    if (sym) {
        memcpy(&entry, &sym, sizeof entry); /* POSIX: dlsym's object pointer is the function */
        m = entry();
    }
    if (!m || m->abi_version != FTB_ABI_VERSION || !m->init || !m->step || !m->destroy) {
        snprintf(err, errlen, "mebp: %s is not a method plugin of ABI %d with init, step and destroy", path,
                 FTB_ABI_VERSION);
        dlclose(h);
        return -1;
    }
    *handle = h;
    *method = m;
    return 0;
}

static void mebp_destroy(void *state);

static void *mebp_init(ftb_session *s, char *err, size_t errlen)
{
    const ftb_options *o = s->options;
    const char *dir = ftb_opt_str(o, "offload_dir", "");
    const char *residency = ftb_opt_str(o, "residency", "lazy");
    if (strcmp(residency, "lazy") && strcmp(residency, "as-given")) {
        snprintf(err, errlen, "option residency: '%s' is not lazy or as-given", residency);
        return NULL;
    }
    struct stat sb;
    if (dir[0] && (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(dir, W_OK | X_OK) != 0)) {
        snprintf(err, errlen, "option offload_dir: '%s' is not a writable directory", dir);
        return NULL;
    }
    mebp_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "mebp: out of memory");
        return NULL;
    }
    int n = o ? o->n : 0, count = 0;
    st->keep = calloc((size_t)s->model->cfg.n_layers, sizeof *st->keep);
    st->keys = calloc((size_t)n + 1, sizeof *st->keys);
    st->values = calloc((size_t)n + 1, sizeof *st->values);
    st->offload_dir = dir[0] ? strdup(dir) : NULL;
    if (!st->keep || !st->keys || !st->values || (dir[0] && !st->offload_dir)) {
        snprintf(err, errlen, "mebp: out of memory");
        goto fail;
    }
    /* Every option but offload_dir is lora's; one lora does not know would
     * be silently ignored there, so it is refused here. */
    for (int i = 0; i < n; i++) {
        if (strcmp(o->keys[i], "offload_dir") == 0 || strcmp(o->keys[i], "residency") == 0) continue;
        const ftb_option_doc *d = mebp_options;
        while (d->name && strcmp(d->name, o->keys[i]) != 0) d++;
        if (!d->name) {
            snprintf(err, errlen,
                     "mebp has no option '%s' (options: rank, alpha, targets, weight_decay, "
                     "offload_dir, residency)",
                     o->keys[i]);
            goto fail;
        }
        st->keys[count] = o->keys[i];
        st->values[count] = o->values[i];
        count++;
    }
    st->lora_options = (ftb_options){ count, st->keys, st->values };
    if (open_sibling_method(ADAPTER_METHOD, &st->handle, &st->lora, err, errlen)) goto fail;

    s->options = &st->lora_options;
    st->lora_state = st->lora->init(s, err, errlen);
    s->options = o;
    if (!st->lora_state) {
        if (!err[0]) snprintf(err, errlen, "mebp: the lora adapters failed to initialise");
        goto fail;
    }
    for (int l = 0; l < s->model->cfg.n_layers; l++) st->keep[l] = FTB_KEEP_OFFLOAD;
    s->run.keep = st->keep;
    if (st->offload_dir) s->run.offload_dir = st->offload_dir;
    /* A base mapped from a file is brought in block by block.  A model built
     * in memory has nothing to drop: its residency is left alone. */
    st->model = s->model;
    st->residency_before = s->model->residency;
    if (!strcmp(residency, "lazy") && ftb_model_mapped_bytes(s->model) > 0)
        ftb_model_set_residency(s->model, FTB_RESIDENT_LAZY_BLOCK);
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
    if (st->model) ftb_model_set_residency(st->model, (ftb_residency)st->residency_before);
    if (st->lora_state) st->lora->destroy(st->lora_state);
    if (st->handle) dlclose(st->handle);
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

static const ftb_method mebp_method = {
    FTB_ABI_VERSION,
    "mebp",
    "MeBP: LoRA with every block checkpoint in a memory-mapped file, blocks recomputed in backward, "
    "a mapped base brought in block by block",
    mebp_options,
    mebp_init,
    mebp_step,
    mebp_trainable,
    mebp_destroy,
    .memory_model = mebp_memory_model,
};

const ftb_method *ftbench_method(void) { return &mebp_method; }
