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
 *   LoRA products       h = x·Aᵀ, y += s·h·Bᵀ and their backward, one
 *                       definition for lora, mesp, mezo and prge;
 *   hook memory         the per-hook byte array every memory model of a
 *                       hooking method builds (lora, ia3, lars), and the
 *                       placeholder hooks of their shape-only plans;
 *   hook seeds, exact   per-hook seeds of dropout masks (lora, lars); the
 *   gradients           exact backward of zeroth-order methods (mezo, prge);
 *   offload options     mebp's and mesp's offload_dir and residency;
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

/* LoRA adapters trained by backprop with the selected optimizer: what lora
 * and mesp hold (gc and mebp through them). */
typedef struct {
    ftb_model *model;
    ftb_kit_lora_set set; /* base: the method's own adapter array */
    ftb_tensor **params;  /* A and B of each adapter, in order */
    ftb_adamw *opt;
} ftb_kit_lora_trained;

/* The base frozen, then adapters of `stride` bytes each (a struct starting
 * with ftb_kit_lora; zeroed, in t->set.base) with gradients, attached with
 * ops and needs_input, and their optimizer.  0, or -1 with err (what was
 * made is freed by ftb_kit_lora_trained_free, which the caller calls). */
int ftb_kit_lora_trained_init(ftb_kit_lora_trained *t, ftb_session *s, size_t stride, int targets, long rank,
                              double alpha, double weight_decay, const ftb_adapter_ops *ops, int needs_input, char *err,
                              size_t errlen);
void ftb_kit_lora_trained_free(ftb_kit_lora_trained *t);
/* trainable(): the adapters' A and B. */
int ftb_kit_lora_trained_params(const ftb_kit_lora_trained *t, ftb_tensor ***tensors);
/* On a plan: the base frozen and the state those adapters hold (A and B,
 * with their gradients and optimizer state). */
void ftb_kit_lora_trained_plan(ftb_plan *p, int targets, long rank);

/* LoRA's products, one definition for every method that has the adapter
 * (so that, e.g., mesp's gradients are bitwise lora's):
 *   down      h [N, r] = x·Aᵀ
 *   up        y [N, out] += s·h·Bᵀ
 *   backward  dB += s·dyᵀ·h   (when h and B.grad are given)
 *             dh  = s·dy·B    (dh: [N, r] the caller's)
 *             dA += dhᵀ·x     (when x and A.grad are given)
 *             dx += dh·A      (when dx is given)
 * A and B: the adapter's own data, or a perturbed copy (mezo, prge). */
void ftb_kit_lora_down(const ftb_kit_lora *a, int N, const float *x, const float *A, float *h);
void ftb_kit_lora_up(const ftb_kit_lora *a, int N, const float *h, const float *B, float *y);
void ftb_kit_lora_backward(const ftb_kit_lora *a, int N, const float *x, const float *h, const float *dy, float *dh,
                           float *dx);
/* The backward of an adapter that kept nothing (mesp; mezo and prge, whose
 * steps run no backward): with x given, h = x·Aᵀ recomputed from it and
 * dB, dA accumulated (each when its gradient exists); dx += dh·A always.
 * Its two [N, r] buffers are workspace; on a failed allocation it does
 * nothing (the core saw the failure). */
void ftb_kit_lora_backward_recomputed(const ftb_kit_lora *a, int N, const float *x, const float *dy, float *dx);

/* ---- What hooking methods share (methods/kit/hooks.c) --------------------- */

/* The seed of one hook's random draws in one step (dropout masks of lora
 * and lars): the session seed salted per method, then the step, then the
 * hook's place, so a block recomputed in backward draws the same again. */
uint64_t ftb_kit_hook_seed(uint64_t seed, uint64_t salt, uint64_t step, int layer, ftb_linear_kind kind);

/* The exact gradient of a method whose step runs no backward (mezo, prge:
 * `ftbench fidelity`): one forward and backward with every activation kept
 * (run's keep and first trainable layer reset, no per-sequence loss), the
 * set's hooks asking for their input for that call.  Returns the loss (NaN
 * with err). */
float ftb_kit_exact_backward(ftb_model *m, const ftb_run_opts *run, const ftb_batch *b, ftb_kit_lora_set *set,
                             char *err, size_t errlen);
/* .grad for each of the tensors that has none, zeroed (FTB_MEM_GRADS).
 * 0, or -1 with err naming the tensor. */
int ftb_kit_ensure_grads(ftb_tensor *const *tensors, int n, const char *method, char *err, size_t errlen);

/* ---- Offloaded checkpoints and a lazily resident base (methods/kit/offload.c)
 * What mebp and mesp share: the options offload_dir and residency, read and
 * checked, and the residency they set and restore. */
#define FTB_KIT_OFFLOAD_DIR_DOC                                                                        \
    {                                                                                                  \
        "offload_dir", "", "directory for the block checkpoint files (default $TMPDIR, else /var/tmp)" \
    }
#define FTB_KIT_RESIDENCY_DOC                                                                                    \
    {                                                                                                            \
        "residency", "lazy",                                                                                     \
            "base weights mapped from a file: lazy (brought in block by block, as MeBP/MeSP) or as-given (keep " \
            "the host's --residency)"                                                                            \
    }
/* *dir: "" or a writable directory; *lazy: residency=lazy.  0 or -1 with err. */
int ftb_kit_offload_options(const ftb_options *o, const char **dir, int *lazy, char *err, size_t errlen);
/* Lazy block residency when lazy and the base is mapped from a file (a
 * model built in memory has nothing to drop); returns the residency to
 * restore at destroy. */
ftb_residency ftb_kit_enter_lazy_residency(ftb_model *m, int lazy);

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

/* ftb_memory_estimate_step of a training step of m with the bytes fn
 * gives each attached hook.  0, or -1 if memory runs out. */
int ftb_kit_estimate_hooked(ftb_model *m, const ftb_run_opts *run, int B, int T, ftb_kit_hook_bytes_fn fn, void *ctx,
                            ftb_memory_estimate *out);

/* A plan's estimate with hooks where the method's init would attach them:
 * a placeholder adapter (needs_input as given) on every targeted linear of
 * the plan's model, fn's bytes for each (fn NULL: none saved), then
 * ftb_plan_estimate of B×T tokens (training or one inference forward).
 * 0, or -1 with err if memory runs out. */
int ftb_kit_plan_hooked(ftb_plan *p, int targets, int needs_input, int B, int T, int training, ftb_kit_hook_bytes_fn fn,
                        void *ctx, ftb_memory_estimate *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
