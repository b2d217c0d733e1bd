/*
 * ftbench_kit.h — the method kit: code several method plugins share, so
 * that none copies another's (methods/kit/, a static library linked into
 * every in-tree plugin and installed beside the header for out-of-tree
 * ones: -lftbench_methodkit).  It sits on the method ABI
 * (ftbench_method.h) and adds nothing to it: the host never sees the kit.
 *
 *   LoRA adapters       the A/B set-up of lora, mesp, mezo (params=lora) and
 *                       prge: names, shapes, PEFT's initialisation drawn
 *                       from one seeded stream, attach and release;
 *   seeded noise        the zeroth-order methods' z ~ N(0, I), regenerated
 *                       from seeds (mezo, prge; tests/test_zo.c checks the
 *                       layout independently);
 *   hook memory         the per-hook byte array every memory model of a
 *                       hooking method builds (lora, ia3, lars, and their
 *                       shape-only plans);
 *   option docs         LoRA's options, listed once for lora, mesp, mebp.
 */
#ifndef FTBENCH_KIT_H
#define FTBENCH_KIT_H

#include "ftbench_method.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- LoRA adapters (methods/kit/lora.c) --------------------------------- */

/* XORed into the session seed for the stream A is drawn from: every method
 * with LoRA factors starts from the same A for a seed ("lora"). */
#define FTB_KIT_LORA_SEED_SALT 0x6c6f7261ULL

/* The options every LoRA-based method documents the same way. */
#define FTB_KIT_LORA_OPTION_DOCS                                                                                      \
    { "rank", "8", "rank r of A and B" }, { "alpha", "16", "scale s = alpha / rank" },                                \
        { "targets", "q,k,v,o,gate,up,down", "linear layers to adapt (comma-separated, or 'all' / 'attn' / 'mlp')" }, \
    {                                                                                                                 \
        "weight_decay", "0.0", "AdamW weight decay"                                                                   \
    }
#define FTB_KIT_LORA_DROPOUT_DOC                                                                  \
    {                                                                                             \
        "dropout", "0",                                                                           \
            "PEFT's lora_dropout on each adapter's input while training, in [0, 1); > 0 keeps a " \
            "dropped-out copy of the input and its mask per adapter"                              \
    }

/* One LoRA adapter: y += s·(x·Aᵀ)·Bᵀ on linear (layer, kind), A [r, in],
 * B [out, r], s = alpha / r.  A method's own adapter struct starts with it
 * (the core hands &hook back to the hook). */
typedef struct {
    ftb_adapter hook;
    ftb_tensor A, B;
    float scale;
    int in, out, r;
    int layer;
    ftb_linear_kind kind;
} ftb_kit_lora;

/* How the factors are held. */
typedef enum {
    FTB_KIT_LORA_BACKPROP = 0, /* A and B trainable with gradients (lora, mesp)         */
    FTB_KIT_LORA_ZO,           /* A and B trainable, no gradient (mezo's params=lora)    */
    FTB_KIT_LORA_FROZEN_A      /* A frozen under weights, B trainable without gradient
                                  (prge's LoRA-FA)                                       */
} ftb_kit_lora_mode;

/* Sequences of adapters a method keeps in an array of its own struct type
 * (each starting with ftb_kit_lora), stride bytes apart. */
typedef struct {
    void *base;
    size_t stride;
    int n;
} ftb_kit_lora_set;

static inline ftb_kit_lora *ftb_kit_lora_at(const ftb_kit_lora_set *set, int i)
{
    return (ftb_kit_lora *)((char *)set->base + (size_t)i * set->stride);
}

/* Adapters on every targeted linear of every block (targets: a mask from
 * ftb_parse_linear_targets), in (layer, kind) order: set->base must hold
 * ftb_kit_lora_count(m, targets) zeroed elements.  Names
 * model.layers.L.K.lora_A/B.weight; A ~ U(±1/√in) drawn from one stream
 * seeded seed ^ FTB_KIT_LORA_SEED_SALT, B = 0 (PEFT).  Each hook gets ops,
 * needs_input and state = the element, and is attached.  set->n counts the
 * adapters made, so ftb_kit_lora_release frees exactly those.  0 or -1. */
int ftb_kit_lora_count(const ftb_model *m, int targets);
int ftb_kit_lora_attach_all(ftb_model *m, int targets, long rank, double alpha, uint64_t seed, ftb_kit_lora_mode mode,
                            const ftb_adapter_ops *ops, int needs_input, ftb_kit_lora_set *set, char *err,
                            size_t errlen);
/* Detaches the set's hooks and frees their tensors (the array is the
 * caller's). */
void ftb_kit_lora_release(ftb_model *m, ftb_kit_lora_set *set);
/* Checks rank (1..4096) and reads rank, alpha and targets (default
 * default_targets) from options.  0 or -1 with err. */
int ftb_kit_lora_options(const ftb_options *o, const char *default_targets, long *rank, double *alpha, int *targets,
                         char *err, size_t errlen);
/* Float count of the adapters' A and B on m for targets and rank. */
int64_t ftb_kit_lora_floats(ftb_model *m, int targets, long rank);

/* ---- Seeded noise (methods/kit/noise.c) --------------------------------- */

#define FTB_KIT_NOISE_BLOCK 65536 /* elements per independently seeded block */
#define FTB_KIT_NOISE_CHUNK 256   /* normals generated at a time (even)      */

/* The seed of child `index` of a seed (splitmix64's finaliser on parent +
 * golden-ratio steps): tensors of a step, blocks of a tensor. */
uint64_t ftb_kit_noise_child(uint64_t parent, uint64_t index);
/* z[0..n) ~ N(0,1), continuing r's stream: two normals per ftb_rng_u64
 * draw (Box–Muller on two 24-bit uniforms; u1 ∈ (0,1] keeps the log
 * finite).  n even, except at the very end of a block. */
void ftb_kit_noise_normals(float *z, int n, ftb_rng *r);

/* ---- Hook memory (methods/kit/hooks.c) ---------------------------------- */

/* Bytes the hook a on (layer, kind) saves for one training forward of B×T
 * tokens; 0 for a hook that is not the method's. */
typedef int64_t (*ftb_kit_hook_bytes_fn)(const ftb_adapter *a, ftb_model *m, int layer, ftb_linear_kind kind, int B,
                                         int T, void *ctx);
/* The hook_saved array of ftb_memory_estimate_step / ftb_plan_estimate for
 * every hook attached to m: malloc'd [n_layers × FTB_LIN_COUNT], NULL if
 * memory runs out.  free() it. */
int64_t *ftb_kit_hook_saved(ftb_model *m, int B, int T, ftb_kit_hook_bytes_fn fn, void *ctx);

/* Placeholder hooks for a plan (ftb_plan_model): one zeroed adapter with
 * needs_input on every targeted linear, state pointing at the adapter,
 * attached; the calloc'd array (NULL if memory runs out) is freed by the
 * caller after ftb_plan_estimate. */
ftb_adapter *ftb_kit_plan_hooks(ftb_model *plan_model, int targets, int needs_input);

#ifdef __cplusplus
}
#endif
#endif
