/*
 * ftbench_method.h — the method plugin ABI: everything a fine-tuning method
 * may see and call, and nothing else.  A plugin includes this header alone
 * and is built with -Iinclude only (docs/PLUGINS.md); the harness and the
 * core use include/ftbench.h, which includes this one and adds the rest.
 *
 * A plugin exports `const ftb_method *ftbench_method(void)`.  Its core calls
 * are resolved against the ftbench executable that loads it.
 *
 * ---- The ABI rule --------------------------------------------------------
 * ANY change to a struct a plugin can see, or to a function declared here,
 * bumps FTB_ABI_VERSION (and adds a line to docs/PLUGINS.md, "ABI
 * history").  What a change may be depends on who allocates the struct
 * (the model is SQLite's sqlite3_vfs/iVersion and ggml.h's "add at the end"):
 *
 *   host-owned, plugin reads it through a pointer (ftb_config,
 *   ftb_linear_ctx, ftb_session, ftb_step_result, ftb_options): fields are
 *   appended at the end, never moved (so none of them is embedded by value
 *   in another visible struct, except at its end); an older
 *   plugin reads the prefix it knows.  The host zeroes what it hands out,
 *   so a field an older plugin does not fill reads as 0 = "as before".
 *
 *   plugin-owned, host reads it through a pointer (ftb_method,
 *   ftb_adapter_ops): it leads with a version (abi_version, version) and
 *   fields are appended; the host reads an appended field only when the
 *   struct's version says it is there (sqlite3_io_methods.iVersion).
 *
 *   held by value on both sides and expected to grow (ftb_tensor,
 *   ftb_run_opts, ftb_memory_estimate): the size never changes.  Each ends
 *   in reserved words that every constructor zeroes; a new field takes
 *   reserved space and its zero means "as before" (ggml_tensor's padding).
 *   Held by value and frozen (ftb_batch, ftb_adapter, ftb_rng,
 *   ftb_option_doc): not expected to change; a change is a break (below).
 *
 *   opaque (ftb_model, ftb_adamw, ftb_plan): the core changes them freely;
 *   plugins use the accessors below, at the boundary only — a hook's inner
 *   loop gets pointers to its data arrays, never a call per element.
 *
 * A change that cannot follow these rules (a field removed or changing
 * meaning, reserved space used up) also raises FTB_ABI_MIN_VERSION to the
 * new version: older plugins are then refused with a message naming both
 * versions.  tests/test_abi.c pins the size of every by-value struct, so a
 * change that forgets the rule fails the suite.
 *
 * Coming (designed for, not implemented): 16-bit parameters and
 * activations (a tensor's dtype other than f32 keeps data NULL for plugins
 * of an older ABI; 16-bit activations arrive as new ftb_adapter_ops entries
 * read when ops->version covers them, and a dtype field in ftb_linear_ctx).
 *
 * Conventions (the same as Hugging Face checkpoints, so real weights load):
 *   - a linear layer's weight W is [out, in], y = x·Wᵀ (+ b);
 *   - activations are row-major [B·T, features], rows ordered batch-major;
 *   - all compute is fp32; every byte the core allocates is accounted under
 *     a category (ftb_mem_*), so that a method's memory can be explained.
 */
#ifndef FTBENCH_METHOD_H
#define FTBENCH_METHOD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FTB_ABI_VERSION     3
#define FTB_ABI_MIN_VERSION 3 /* oldest abi_version the host still loads */
#define FTB_IGNORE_INDEX    (-100)
#define FTB_ERR_LEN         512

/* ------------------------------------------------------------------------ */
/* Memory: every allocation accounted under a category                       */
/* ------------------------------------------------------------------------ */

typedef enum {
    FTB_MEM_WEIGHTS = 0, /* frozen or trainable base model weights        */
    FTB_MEM_TRAINABLE,   /* method-owned trainable parameters (adapters)   */
    FTB_MEM_GRADS,       /* parameter gradients                            */
    FTB_MEM_OPTIM,       /* optimizer state (AdamW moments)                */
    FTB_MEM_SAVED,       /* activations kept for the backward pass         */
    FTB_MEM_WORKSPACE,   /* transient buffers of a single op or phase      */
    FTB_MEM_NCAT
} ftb_mem_category;

/* 64-byte aligned.  NULL on failure: the core notices (docs/CORE.md, "When
 * an allocation fails"); a hook returns without doing its work. */
void *ftb_alloc(ftb_mem_category c, size_t bytes);
void *ftb_calloc(ftb_mem_category c, size_t bytes);
void ftb_free(void *p);

double ftb_now(void); /* monotonic seconds */
/* Marks the timeline with a phase label ("optim", "zo update") and returns
 * ftb_now(). */
double ftb_phase(const char *label);

/* C[M,N] = alpha·op(A)·op(B) + beta·C, row-major, on the core's BLAS. */
void ftb_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc);

/* ------------------------------------------------------------------------ */
/* Models and tensors                                                        */
/* ------------------------------------------------------------------------ */

/* RoPE frequency scaling, config.json's "rope_scaling" (docs/CORE.md):
 * inv_freq[i] = theta^(-2i/head_dim), then, as Hugging Face transformers'
 * modeling_rope_utils.py computes it,
 *   linear: inv_freq[i] / factor;
 *   llama3: wavelengths 2π/inv_freq above original_max_seq/low_freq_factor
 *           are divided by factor, those below original_max_seq /
 *           high_freq_factor are kept, and those between interpolate with
 *           s = (original_max_seq/wavelen − low) / (high − low):
 *           (1 − s)·inv_freq/factor + s·inv_freq. */
typedef enum {
    FTB_ROPE_DEFAULT = 0, /* no scaling ("rope_scaling" absent, null or "default") */
    FTB_ROPE_LINEAR,
    FTB_ROPE_LLAMA3,
} ftb_rope_kind;

typedef struct {
    int kind;                                /* ftb_rope_kind                  */
    float factor;                            /* linear, llama3                 */
    float low_freq_factor, high_freq_factor; /* llama3                       */
    int original_max_seq;                    /* llama3: original_max_position_embeddings */
} ftb_rope_scaling;

/* Host-owned (append only). */
typedef struct {
    char name[64];
    int vocab_size;
    int dim; /* hidden size                                   */
    int n_layers;
    int n_heads;
    int n_kv_heads; /* grouped-query attention: n_kv_heads | n_heads */
    int head_dim;
    int ffn_dim; /* SwiGLU intermediate size                      */
    int max_seq;
    float rope_theta;
    float norm_eps;
    int qkv_bias; /* Qwen2: 1                                      */
    int tie_embeddings;
    ftb_rope_scaling rope_scaling;
    /* "" when the core computes this model as its checkpoint defines it.
     * Otherwise why it cannot (e.g. "rope_scaling rope_type 'yarn' is not
     * supported"): the shapes, and so the memory, are still the model's, so
     * a shape-only use (a memory planner) may take the config and say
     * "rope scaling ignored for memory"; ftb_config_check_computable()
     * refuses it for anything that computes. */
    char shape_only[128];
} ftb_config;

/* How a tensor's values are stored (docs/QUANT.md). */
typedef enum {
    FTB_DTYPE_F32 = 0,   /* data holds the values                          */
    FTB_DTYPE_BF16,      /* bfloat16, round to nearest even                */
    FTB_DTYPE_F16,       /* IEEE half, round to nearest even, saturating   */
    FTB_DTYPE_INT8,      /* int8, one fp32 scale per row (output channel)  */
    FTB_DTYPE_INT4,      /* 4-bit symmetric, fp16 scale per group of a row */
    FTB_DTYPE_INT4_ASYM, /* 4-bit, fp16 scale and fp16 zero per group      */
    FTB_DTYPE_COUNT
} ftb_dtype;

/* A tensor: a base weight of the model (the core's) or a method's own
 * (ftb_tensor_alloc).  Held by value: its size never changes (see the ABI
 * rule); zero it before use (ftb_tensor_alloc does). */
typedef struct {
    char name[96]; /* Hugging Face tensor name                      */
    int ndim;
    int64_t shape[2];
    int64_t numel;
    float *data; /* fp32 values; NULL when dtype is not f32         */
    float *grad; /* NULL unless trainable (after ftb_model_alloc_grads) */
    int trainable;
    int no_decay; /* biases and norms: no weight decay             */
    int mapped;   /* core's: data points into a mapped checkpoint   */
    int writable; /* core's: made writable and counted as trainable */
    /* Storage format.  Any dtype but f32 keeps data NULL and the values in
     * core-private storage (quant); read them with ftb_linear_apply.  A
     * tensor that becomes trainable is dequantized into fp32 data first. */
    ftb_dtype dtype;
    int group;            /* int4: elements per group along a row; else 0    */
    void *quant;          /* core-private; NULL for fp32                      */
    uint64_t reserved[6]; /* zero; room for fields (ABI rule) */
} ftb_tensor;

typedef enum {
    FTB_LIN_Q = 0,
    FTB_LIN_K,
    FTB_LIN_V,
    FTB_LIN_O,
    FTB_LIN_GATE,
    FTB_LIN_UP,
    FTB_LIN_DOWN,
    FTB_LIN_COUNT
} ftb_linear_kind;

const char *ftb_linear_name(ftb_linear_kind k); /* "q_proj", ... */

/* The model is opaque to plugins: these accessors are the boundary. */
typedef struct ftb_model ftb_model;
typedef struct ftb_adapter ftb_adapter;

const ftb_config *ftb_model_config(const ftb_model *m);
/* Weight W [out, in] of one block's linear layer. */
ftb_tensor *ftb_model_linear(ftb_model *m, int layer, ftb_linear_kind k);
/* The hook attached to one linear layer, or NULL. */
ftb_adapter *ftb_model_adapter(const ftb_model *m, int layer, ftb_linear_kind k);
/* Every parameter tensor, in checkpoint order (a tied LM head is not one
 * of them): *params receives the core's array.  Returns the count. */
int ftb_model_params(ftb_model *m, ftb_tensor ***params);
typedef enum { FTB_TENSOR_EMBED = 0, FTB_TENSOR_FINAL_NORM, FTB_TENSOR_LM_HEAD } ftb_model_part;
/* The embedding, final norm or LM head (tied: a tensor of its own whose
 * data is the embedding's). */
ftb_tensor *ftb_model_part_tensor(ftb_model *m, ftb_model_part part);

void ftb_model_set_trainable(ftb_model *m, int trainable); /* all params */
/* Allocates grads (FTB_MEM_GRADS) for trainable tensors; copy-on-write maps
 * a mapped tensor into owned memory if it becomes trainable. 0 or -1. */
int ftb_model_alloc_grads(ftb_model *m, char *err, size_t errlen);
/* Makes every trainable tensor writable and counts it as trainable, without
 * allocating gradients (zeroth-order methods update weights in place). */
int ftb_model_make_writable(ftb_model *m, char *err, size_t errlen);
/* Bytes of m's frozen weights mapped from a file: what lazy residency can
 * drop; 0 for a model built in memory. */
int64_t ftb_model_mapped_bytes(const ftb_model *m);

/* Residency of mapped weights (docs/QUANT.md): ALL, or brought in block by
 * block and dropped after (LAZY_BLOCK). */
typedef enum { FTB_RESIDENT_ALL = 0, FTB_RESIDENT_LAZY_BLOCK } ftb_residency;
ftb_residency ftb_model_residency(const ftb_model *m);
void ftb_model_set_residency(ftb_model *m, ftb_residency r);

/* ------------------------------------------------------------------------ */
/* Running the model                                                         */
/* ------------------------------------------------------------------------ */

/* Held by value and frozen (a change raises FTB_ABI_MIN_VERSION): what a
 * batch is does not grow with dtypes or plans. */
typedef struct {
    int B, T;
    const int32_t *tokens;  /* [B*T]                                     */
    const int32_t *targets; /* [B*T] next-token ids, FTB_IGNORE_INDEX to skip */
} ftb_batch;

typedef enum { FTB_ATTN_FLASH = 0, FTB_ATTN_EAGER } ftb_attention_impl;
typedef enum { FTB_LOSS_CHUNKED = 0, FTB_LOSS_FULL } ftb_loss_mode;

/* What a block keeps for backward. */
typedef enum {
    FTB_KEEP_ALL = 0, /* every activation backward needs               */
    FTB_KEEP_INPUT,   /* block input only; block recomputed in backward */
    FTB_KEEP_OFFLOAD  /* like KEEP_INPUT, the input in a mapped file whose
                             pages leave the resident set until backward  */
} ftb_keep_policy;

/* Held by value (plugins copy s->run and change a field). */
typedef struct {
    ftb_attention_impl attention;
    ftb_loss_mode loss;
    int loss_chunk_rows;         /* rows of logits per chunk; 0 = 128     */
    const ftb_keep_policy *keep; /* [n_layers] or NULL = all FTB_KEEP_ALL  */
    const char *offload_dir;     /* for FTB_KEEP_OFFLOAD; NULL = $TMPDIR,
                                     else /var/tmp                          */
    float *seq_loss;             /* optional out [B]: mean loss per sequence */
    int first_trainable_layer;   /* backward stops below this layer; 0 = all */
    uint64_t reserved[4];        /* zero; room for fields (ABI rule) */
} ftb_run_opts;

/* Inference-mode forward: nothing kept for backward; returns mean loss over
 * the non-ignored targets (NaN on bad input, with err filled). */
float ftb_model_forward(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, char *err, size_t errlen);
/* Forward and exact backward: accumulates into .grad of trainable tensors
 * and adapters.  Returns the loss. */
float ftb_model_forward_backward(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, char *err, size_t errlen);
/* Wall time of the last run's forward part (embedding to loss) and backward
 * part, in seconds. */
void ftb_last_run_times(double *forward, double *backward);

/* Read-time perturbation of the weights (docs/CORE.md, "Perturbed reads"),
 * for zeroth-order methods.  While set, every inference forward reads each
 * weight, norm and bias tensor t as t + what fn adds: fn(ctx, t, offset, n,
 * values) adds its perturbation to values[0..n), elements [offset, offset +
 * n) of t in row-major order.  Called from the forward's own thread, never
 * concurrently; must not allocate through the core.  Training runs refuse
 * while it is set.  fn NULL clears it. */
typedef void (*ftb_read_perturb_fn)(void *ctx, const ftb_tensor *t, int64_t offset, int64_t n, float *values);
void ftb_model_set_read_perturbation(ftb_model *m, ftb_read_perturb_fn fn, void *ctx);

/* Products with a weight W [out, in] through its storage format, on tiles
 * dequantized into a bounded workspace (FTB_MEM_WORKSPACE):
 *   y[N,out]  = beta·y  + x[N,in]·Wᵀ
 *   dx[N,in]  = beta·dx + dy[N,out]·W                                     */
void ftb_linear_apply(const ftb_tensor *W, int N, const float *x, float *y, float beta);
void ftb_linear_apply_t(const ftb_tensor *W, int N, const float *dy, float *dx, float beta);

/* ------------------------------------------------------------------------ */
/* Adapter hooks on linear layers                                            */
/* ------------------------------------------------------------------------ */

/* Where a hook sits: what the core tells it about one call.  Host-owned. */
typedef struct {
    const ftb_model *model;
    int layer;
    ftb_linear_kind kind;
    int B, T; /* rows N = B*T                                     */
    int in, out;
    int training;           /* 0 in inference-mode forward                      */
    const ftb_batch *batch; /* tokens and targets (padding shows as
                               FTB_IGNORE_INDEX targets)                    */
} ftb_linear_ctx;

/* A hook sees the linear's input x [N,in] and its base output y [N,out]
 * (x·Wᵀ+b) and may change y in place.  What it needs for backward it saves
 * itself, with ftb_alloc(FTB_MEM_SAVED, ...), into *saved.  saved is NULL
 * when the core keeps nothing for this call (inference, or the first
 * forward of a block recomputed in backward): save nothing then.  If
 * needs_input is set, the core keeps x for the backward call.
 *
 * backward: dy [N,out] is the gradient of the hooked output; the hook
 * accumulates its parameters' gradients, adds its own contribution to
 * dx [N,in] (never NULL) and may rewrite dy in place into the gradient of
 * the base output.  x is NULL unless needs_input.  The hook frees *saved. */
#define FTB_ADAPTER_OPS_VERSION 1
typedef struct {
    int version; /* FTB_ADAPTER_OPS_VERSION: entries appended later are read only when it covers them */
    void (*forward)(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved);
    void (*backward)(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved);
    void (*release)(ftb_adapter *self, void *saved); /* drop saved, no backward */
} ftb_adapter_ops;

/* Held by value (usually the first member of a method's adapter struct)
 * and frozen: what a hook gains later goes into its ops, read by version. */
struct ftb_adapter {
    const ftb_adapter_ops *ops;
    int needs_input;
    void *state; /* the method's data for this hook                  */
};

/* Attach (or with NULL detach) a hook.  The adapter is not owned. */
void ftb_attach_adapter(ftb_model *m, int layer, ftb_linear_kind k, ftb_adapter *a);

/* ------------------------------------------------------------------------ */
/* Optimizer and random numbers                                              */
/* ------------------------------------------------------------------------ */

/* AdamW (or SGD when the user runs with --optimizer sgd: the host selects
 * it before init, and every optimizer created after gets it).  Opaque.
 * params NULL: every trainable tensor of the model that has a grad. */
typedef struct ftb_adamw ftb_adamw;
ftb_adamw *ftb_adamw_create(ftb_model *m, ftb_tensor **params, int n, float lr, float weight_decay, char *err,
                            size_t errlen);
void ftb_adamw_destroy(ftb_adamw *opt); /* NULL: nothing */
/* The tensors it updates: *params receives its array; returns the count. */
int ftb_adamw_params(const ftb_adamw *opt, ftb_tensor ***params);
/* Bytes of optimizer state for n trainable floats under the selected
 * optimizer (AdamW: two moments; SGD: none) — for a memory plan. */
int64_t ftb_optimizer_state_bytes(int64_t floats);

/* xoshiro256** state: methods regenerate perturbations from seeds. */
typedef struct {
    uint64_t s[4];
} ftb_rng;
void ftb_rng_seed(ftb_rng *r, uint64_t seed);
uint64_t ftb_rng_u64(ftb_rng *r);
float ftb_rng_uniform(ftb_rng *r); /* [0,1) */
float ftb_rng_normal(ftb_rng *r);

/* ------------------------------------------------------------------------ */
/* Options, session, step                                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    const char *default_value;
    const char *help;
} ftb_option_doc;

/* Options given to a method as key=value strings.  Host-owned. */
typedef struct {
    int n;
    const char *const *keys;
    const char *const *values;
} ftb_options;

/* Typed option getters: return the default if absent; on a malformed value
 * fill err ("option rank: 'x' is not an integer") and return the default. */
const char *ftb_opt_str(const ftb_options *o, const char *key, const char *def);
long ftb_opt_int(const ftb_options *o, const char *key, long def, char *err, size_t errlen);
double ftb_opt_double(const ftb_options *o, const char *key, double def, char *err, size_t errlen);

/* What the host hands a method.  Host-owned. */
typedef struct {
    ftb_model *model;
    ftb_run_opts run; /* attention/loss modes chosen by the user; the
                             method may set keep policies (run.keep must
                             stay valid until the method's destroy)        */
    const ftb_options *options;
    uint64_t seed;
    float lr;
    int total_steps;
} ftb_session;

/* Host-owned: zeroed by the host before each step. */
typedef struct {
    float loss;                            /* the loss this step measured                    */
    int forward_passes;                    /* how many forward passes the step ran           */
    double t_forward, t_backward, t_optim; /* seconds, as the method saw them */
} ftb_step_result;

/* ------------------------------------------------------------------------ */
/* What methods share (models/method_support.c)                             */
/* ------------------------------------------------------------------------ */

/* "q,v,down", "all", "attn" (q,k,v,o) or "mlp" (gate,up,down) → bitmask of
 * (1 << ftb_linear_kind); -1 with err ("option targets: ...") otherwise. */
int ftb_parse_linear_targets(const char *spec, char *err, size_t errlen);
/* A method-owned tensor rows×cols (cols 0: a vector), zeroed, counted
 * under cat, trainable with a zeroed gradient when with_grad.  0 or -1. */
int ftb_tensor_alloc(ftb_tensor *t, const char *name, int64_t rows, int64_t cols, ftb_mem_category cat, int with_grad,
                     char *err, size_t errlen);
void ftb_tensor_release(ftb_tensor *t);
/* One backprop step: zero the gradients of opt's tensors, forward and
 * backward, the optimizer step; fills out (loss, passes, phase times). */
int ftb_backprop_step(ftb_session *s, ftb_adamw *opt, const ftb_batch *b, ftb_step_result *out, char *err,
                      size_t errlen);

/* ------------------------------------------------------------------------ */
/* Analytic memory model (docs/CORE.md)                                      */
/* ------------------------------------------------------------------------ */

/* What the core's categories hold at the peak of one step, predicted from
 * shapes.  Held by value. */
typedef struct {
    int64_t at_peak[FTB_MEM_NCAT]; /* split at the predicted peak of the total */
    int64_t peak_total;            /* sum of at_peak                          */
    int64_t saved_peak;            /* peak of FTB_MEM_SAVED alone             */
    char peak_phase[32];           /* where it falls: "head", "bwd L23", ...  */
    uint64_t reserved[4];          /* zero; room for fields (ABI rule) */
} ftb_memory_estimate;

/* One forward (training: forward and backward) of m on B×T tokens under the
 * run options o, with the trainable flags and hooks m has now, and the
 * state between steps as allocated now.  hook_saved [n_layers ×
 * FTB_LIN_COUNT], index layer·FTB_LIN_COUNT + kind: bytes each attached
 * hook saves (FTB_MEM_SAVED) in one training forward of B×T tokens, freed in
 * its backward (NULL: none). */
void ftb_memory_estimate_step(const ftb_model *m, const ftb_run_opts *o, int B, int T, int training,
                              const int64_t *hook_saved, ftb_memory_estimate *out);

/* ---- Shape-only plans: a method's memory without a model (ftbench plan) --- */

/* A plan: the model's tensors as descriptors (names, shapes, flags; no
 * data), on which a method's memory_plan marks what it would train and
 * where it would attach hooks — as its init would — and the bytes of the
 * state it would allocate.  Made by the host from a shape; opaque. */
typedef struct ftb_plan ftb_plan;
/* The descriptor model: ftb_model_config, ftb_model_linear, ftb_model_params,
 * ftb_model_part_tensor, ftb_model_set_trainable and ftb_attach_adapter
 * work on it (an attached adapter needs only needs_input: it never runs);
 * every data pointer is NULL. */
ftb_model *ftb_plan_model(ftb_plan *p);
/* The run options of the planned step; the method may set keep policies. */
ftb_run_opts *ftb_plan_run(ftb_plan *p);
/* Keep policy of every block (the plan owns the array). */
void ftb_plan_keep_all(ftb_plan *p, ftb_keep_policy policy);
/* Bytes the method's own state holds between steps, by category (its
 * adapters, their gradients, optimizer moments, a frozen factor under
 * weights).  Base weights are counted by the plan itself: frozen ones in
 * their storage format, trainable ones as fp32 under FTB_MEM_TRAINABLE. */
void ftb_plan_add_state(ftb_plan *p, ftb_mem_category c, int64_t bytes);
/* Gradients and optimizer state of the base tensors marked trainable:
 * their fp32 bytes under FTB_MEM_GRADS when grads, and the optimizer's
 * state under FTB_MEM_OPTIM when moments. */
void ftb_plan_base_state(ftb_plan *p, int grads, int moments);
/* The estimate for one step on B×T tokens: what ftb_memory_estimate_step
 * predicts for a built model with these flags, hooks, keep policies and
 * state (hook_saved as there). */
void ftb_plan_estimate(ftb_plan *p, int B, int T, int training, const int64_t *hook_saved, ftb_memory_estimate *out);

/* ------------------------------------------------------------------------ */
/* The method                                                                */
/* ------------------------------------------------------------------------ */

/* Plugin-owned; read by version.  Initialise with designated initialisers:
 * fields left out are NULL. */
typedef struct ftb_method {
    uint32_t abi_version; /* FTB_ABI_VERSION                        */
    const char *name;
    const char *summary;           /* one line                               */
    const ftb_option_doc *options; /* terminated by {NULL}                   */
    /* Sets trainable tensors, attaches hooks, allocates optimizer state.
     * Returns the method's state, or NULL with err filled. */
    void *(*init)(ftb_session *s, char *err, size_t errlen);
    /* One optimisation step on one batch.  0, or -1 with err filled. */
    int (*step)(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen);
    /* Trainable parameters the method owns (for counting and saving). */
    int (*trainable)(void *state, ftb_tensor ***tensors);
    void (*destroy)(void *state);
    /* ---- ABI 2 ---- */
    /* Gradient fidelity (`ftbench fidelity`, docs/PLUGINS.md).  Fills .grad
     * of every tensor trainable() lists, overwriting what was there:
     *   exact = 0: the gradient, or the estimate, the method's next step
     *              would apply, without updating anything;
     *   exact = 1: the exact gradient of the same parameters, by backprop
     *              with every activation kept.
     * *loss receives the loss measured (NaN if none).  0, or -1 with err.
     * NULL: the method's gradient is what ftb_model_forward_backward computes
     * under the session's run options (the host computes both itself). */
    int (*gradient)(void *state, ftb_session *s, const ftb_batch *b, int exact, float *loss, char *err, size_t errlen);
    /* Analytic memory model of the initialised method: what one step on
     * B×T tokens holds at its peak — usually ftb_memory_estimate_step with
     * the bytes the method's hooks save.  0, or -1 if it has none for these
     * options.  NULL: the host calls ftb_memory_estimate_step with no hook
     * bytes (exact for methods whose hooks save nothing). */
    int (*memory_model)(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out);
    /* ---- ABI 3 ---- */
    /* The same prediction from shapes alone, without init and without a
     * model (`ftbench plan`; the host makes the plan from a config,
     * ftb_model_shape in ftbench.h): the method marks on the plan what its init
     * would train and hook, adds the state it would allocate, and calls
     * ftb_plan_estimate.  Must equal memory_model's answer on a built model
     * of that shape (suite plan).  0, -1 if these options cannot be planned
     * (err says why).  A method with no memory model for these options
     * declares it: -1 with err starting FTB_NO_MEMORY_MODEL (ftbench plan
     * lists it as "no model", never guessed; any other err is bad options).
     * NULL: ftbench plan uses the host's default (the core's training step
     * with the base frozen, no state of the method, no hook bytes: exact
     * only for a method that trains nothing and whose hooks save nothing). */
    int (*memory_plan)(ftb_plan *p, const ftb_options *options, int B, int T, ftb_memory_estimate *out, char *err,
                       size_t errlen);
} ftb_method;

/* How memory_plan's err starts when the method declares it has no memory
 * model (above). */
#define FTB_NO_MEMORY_MODEL "no memory model"

typedef const ftb_method *(*ftb_method_entry_fn)(void);
#define FTB_METHOD_ENTRY "ftbench_method"
/* The one symbol a plugin exports (declared here so that its definition
 * has a prototype; the host finds it with dlsym). */
const ftb_method *ftbench_method(void);

/* Another method plugin, for a method that wraps one (gc, mebp): loaded by
 * the host's own loader — the same search path, then the directories
 * plugins were loaded from (a name), or a path (with a
 * '/' or ending in .so), the same ABI check — and each key of options (NULL:
 * none) checked against the options it documents (err lists them).  NULL
 * with err on failure.  Fields past destroy: read only when the returned
 * method's abi_version covers them.  Close it once its state is destroyed. */
const ftb_method *ftb_method_open(const char *name_or_path, const ftb_options *options, char *err, size_t errlen);
void ftb_method_close(const ftb_method *m);

#ifdef __cplusplus
}
#endif
#endif
