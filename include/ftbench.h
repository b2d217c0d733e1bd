/*
 * ftbench.h — the model core and the harness's view of it: everything
 * include/ftbench_method.h (the method plugin ABI) declares, and what only
 * the host uses — model construction and checkpoints, storage formats,
 * accounting statistics and timelines, BLAS selection, generation, and the
 * full layouts of the structs that plugins see as opaque (ftb_model,
 * ftb_adamw, ftb_plan).  A method plugin must not include it: plugins are
 * built with -Iinclude and include ftbench_method.h alone (docs/PLUGINS.md).
 */
#ifndef FTBENCH_H
#define FTBENCH_H

#include "ftbench_method.h"

#ifdef __cplusplus
extern "C" {
#endif


/* ------------------------------------------------------------------------ */
/* Memory accounting                                                         */
/* ------------------------------------------------------------------------ */

const char *ftb_mem_category_name(ftb_mem_category c); /* "weights", ... */

/* Bytes that live outside the allocator (a mapped checkpoint's pages):
 * counted under c without allocating.  delta may be negative. */
void ftb_mem_account(ftb_mem_category c, int64_t delta);

typedef struct {
    int64_t live[FTB_MEM_NCAT];
    int64_t peak[FTB_MEM_NCAT]; /* each category's own peak            */
    int64_t live_total;
    int64_t peak_total;                  /* peak of the sum (not sum of peaks)  */
    int64_t peak_total_at[FTB_MEM_NCAT]; /* category split at that peak */
} ftb_mem_stats;

void ftb_mem_get_stats(ftb_mem_stats *out);
/* Bytes of block checkpoints held in memory-mapped files (FTB_KEEP_OFFLOAD):
 * outside the categories above, since they are not resident. */
int64_t ftb_offload_live(void);
int64_t ftb_offload_peak(void);
void ftb_offload_reset_peak(void);
void ftb_mem_reset_peaks(void); /* peaks := live */

/* Phase label for the timeline, e.g. "fwd L3", "bwd L7", "optim".
 * The string is copied (interned); at most 4096 distinct labels. */
void ftb_mem_set_phase(const char *label);
const char *ftb_mem_phase(void);
/* Called on every phase change (the harness reads hardware counters per
 * phase there).  One listener; NULL removes it. */
typedef void (*ftb_phase_listener)(const char *label, void *userdata);
void ftb_mem_set_phase_listener(ftb_phase_listener fn, void *userdata);

/* Timeline: one event per allocation/free (time, phase, category, delta).
 * Off by default; enabling with capacity 0 turns it off again. */
typedef struct {
    double t_sec;   /* since ftb_mem_timeline_enable()             */
    uint16_t phase; /* index for ftb_mem_phase_name()              */
    uint8_t category;
    int64_t delta; /* +bytes allocated, -bytes freed              */
} ftb_mem_event;

void ftb_mem_timeline_enable(size_t capacity);
size_t ftb_mem_timeline_count(void);
const ftb_mem_event *ftb_mem_timeline_events(void);
int ftb_mem_timeline_dropped(void); /* events lost because capacity ran out */
const char *ftb_mem_phase_name(uint16_t phase);

/* jemalloc's own counters (stats.allocated, stats.active, stats.resident);
 * returns 0 on success, -1 if the process allocator is not jemalloc. */
int ftb_jemalloc_stats(size_t *allocated, size_t *active, size_t *resident);

/* The step arena (models/step_arena.c, docs/CORE.md "What is kept across
 * steps"): where saved activations and workspaces of 16 KiB or more live,
 * their pages kept from step to step.  Off in checking builds (SAN=1,
 * make memcheck) and with FTBENCH_STEP_ARENA=0. */
typedef struct {
    int enabled;
    int64_t reserved_bytes;   /* address space reserved (not resident)        */
    int64_t high_water_bytes; /* highest end of a block so far: what stays    */
    int64_t live_bytes;       /* bytes of blocks live now, headers included   */
    int64_t fallbacks;        /* blocks the arena could not place (allocator) */
} ftb_step_arena_info;
void ftb_step_arena_stats(ftb_step_arena_info *out);

/* ------------------------------------------------------------------------ */
/* Time per operation class (models/op_time.c)                               */
/* ------------------------------------------------------------------------ */

/* Where a step's time goes, the way the memory categories say where its
 * bytes go: every op of the core is timed (CLOCK_MONOTONIC around the call,
 * on the training thread) into one class, with the FLOPs and bytes the op
 * does by its shapes.  The linears are split by projection; dequantization
 * inside a linear or the LM head is moved out of it into FTB_OP_DEQUANT;
 * FTB_OP_CORE_OTHER is the rest of a forward/backward call (allocation,
 * zeroing, control).  The harness adds what lies outside the core. */
typedef enum {
    FTB_OP_LINEAR_Q = 0, /* = FTB_OP_LINEAR_Q + ftb_linear_kind            */
    FTB_OP_LINEAR_K,
    FTB_OP_LINEAR_V,
    FTB_OP_LINEAR_O,
    FTB_OP_LINEAR_GATE,
    FTB_OP_LINEAR_UP,
    FTB_OP_LINEAR_DOWN,
    FTB_OP_ATTN_FWD,   /* causal attention forward (recompute included)  */
    FTB_OP_ATTN_BWD,   /* attention backward                             */
    FTB_OP_HEAD_LOSS,  /* LM head products and cross-entropy             */
    FTB_OP_NORM,       /* RMSNorm forward and backward                   */
    FTB_OP_ROPE,       /* rotary embedding forward and backward          */
    FTB_OP_SWIGLU,     /* the MLP's activation, forward and backward     */
    FTB_OP_RESIDUAL,   /* residual adds and gradient copies              */
    FTB_OP_EMBED,      /* embedding lookup and its gradient              */
    FTB_OP_HOOKS,      /* the method's adapters on the linears           */
    FTB_OP_DEQUANT,    /* dequantizing base weights                      */
    FTB_OP_OPTIMIZER,  /* AdamW / SGD updates                            */
    FTB_OP_CORE_OTHER, /* inside forward/backward, outside every op       */
    FTB_OP_NCLASS
} ftb_op_class;

typedef struct {
    double seconds; /* wall time on the calling thread                   */
    double flops;   /* by the op's shapes (useful work, not tile padding) */
    double bytes;   /* operands read and results written, once each       */
    int64_t calls;
    int64_t page_faults; /* minor+major faults of the process meanwhile  */
} ftb_op_stat;

const char *ftb_op_class_name(ftb_op_class c); /* "linear_q", "attn_fwd", ... */
void ftb_op_stats_reset(void);
void ftb_op_stats_get(ftb_op_stat out[FTB_OP_NCLASS]);
/* Time of one page fault of fresh anonymous memory on this machine, in
 * seconds (measured once, on first call): faults × this estimates how much
 * of a class's time is first touch. */
double ftb_op_fault_seconds(void);

/* ------------------------------------------------------------------------ */
/* BLAS kernel selection and threads                                         */
/* ------------------------------------------------------------------------ */

/* Call first thing in main(), before any BLAS work.  Makes idle OpenMP
 * threads sleep (OMP_WAIT_POLICY=passive unless set).  If OPENBLAS_CORETYPE is
 * unset and OpenBLAS picked a generic kernel on a CPU that has a better one,
 * self-tests the candidates in child processes, picks the fastest correct one
 * and re-executes the program with it set (the variable is read when the
 * library loads).  Never returns on re-exec.  Disabled by FTBENCH_BLAS_AUTO=0. */
void ftb_blas_autoselect(int argc, char **argv);
const char *ftb_blas_corename(void);  /* kernel OpenBLAS runs now        */
const char *ftb_blas_selection(void); /* "user", "auto", "default"       */
const char *ftb_cpu_features(void);   /* e.g. "avx2 fma avx512f ..."     */
void ftb_set_threads(int n);          /* BLAS and elementwise threads    */
int ftb_get_threads(void);
/* Measured sgemm rate (GFLOP/s) for C[M,N] = A[M,K]·B[N,K]ᵀ, best of reps. */
double ftb_sgemm_gflops(int M, int N, int K, int reps);

/* ------------------------------------------------------------------------ */
/* Model                                                                      */
/* ------------------------------------------------------------------------ */

/* Built-in zoo: published shapes of real models (qwen2.5-0.5b, ...) and
 * tiny test shapes.  Returns 0 if found. */
int ftb_zoo_get(const char *name, ftb_config *out);
int ftb_zoo_count(void);
const ftb_config *ftb_zoo_at(int i);
/* Checks a config's consistency; 0 or -1 with err filled. */
int ftb_config_validate(const ftb_config *c, char *err, size_t errlen);
/* 0 if the core computes this model exactly; -1 with err naming what it
 * does not compute (c->shape_only). */
int ftb_config_check_computable(const ftb_config *c, char *err, size_t errlen);
int64_t ftb_config_param_count(const ftb_config *c);

/* Parses "q_proj" or "q"; -1 if unknown. */
int ftb_linear_parse(const char *s);


typedef struct {
    ftb_tensor attn_norm;
    ftb_tensor wq, wk, wv, wo;
    ftb_tensor bq, bk, bv; /* numel 0 unless qkv_bias            */
    ftb_tensor mlp_norm;
    ftb_tensor w_gate, w_up, w_down;
    ftb_adapter *adapter[FTB_LIN_COUNT]; /* hooks on each linear, or NULL */
} ftb_layer;

struct ftb_model {
    ftb_config cfg;
    ftb_tensor embed;      /* [V, dim]                                   */
    ftb_tensor final_norm; /* [dim]                                      */
    ftb_tensor lm_head;    /* [V, dim]; data == embed.data when tied     */
    ftb_layer *layers;
    ftb_tensor **params; /* every parameter tensor, in checkpoint order */
    int n_params;
    void *storage; /* core-private: mappings, owned buffers      */
    int residency; /* ftb_residency; set with
                               ftb_model_set_residency                    */
};

/* Seeded initialisation: uniform with standard deviation 0.02, norms = 1. */
ftb_model *ftb_model_create(const ftb_config *cfg, uint64_t seed, char *err, size_t errlen);
void ftb_model_free(ftb_model *m);
ftb_tensor *ftb_model_find(ftb_model *m, const char *hf_name);
/* W and bias (bias->numel == 0 if none) of one linear layer. */
ftb_tensor *ftb_layer_weight(ftb_layer *L, ftb_linear_kind k);
ftb_tensor *ftb_layer_bias(ftb_layer *L, ftb_linear_kind k);

void ftb_model_zero_grads(ftb_model *m);
int64_t ftb_model_trainable_count(const ftb_model *m);

/* Checkpoints (Hugging Face layout).  dir holds config.json and either
 * model.safetensors or model.safetensors.index.json + shards.  F32, BF16
 * and F16 are read; F32 tensors are memory-mapped when map != 0. */
ftb_model *ftb_model_load(const char *dir, int map, char *err, size_t errlen);
/* Parses a Hugging Face config.json into cfg. */
int ftb_config_load_json(const char *path, ftb_config *cfg, char *err, size_t errlen);
/* Writes config.json + model.safetensors into dir (created if missing). */
int ftb_model_save(const ftb_model *m, const char *dir, char *err, size_t errlen);
/* Writes the given tensors as one F32 safetensors file. */
int ftb_safetensors_write(const char *path, ftb_tensor *const *tensors, int n, char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* Running the model                                                          */
/* ------------------------------------------------------------------------ */

void ftb_run_opts_default(ftb_run_opts *o);

/* ------------------------------------------------------------------------ */
/* Shape-only memory plans (ftb_method.memory_plan)                          */
/* ------------------------------------------------------------------------ */

/* The shape of a model without its weights: what a planner knows from a
 * config.  Zero what you do not set. */
typedef struct {
    ftb_config config;
    ftb_dtype base_dtype;  /* block linears' storage (f32 for a built model) */
    ftb_dtype embed_dtype; /* embedding and LM head                          */
    int group;             /* int4 group size; 0 = 64                        */
    int threads;           /* compute threads the step will run on; 0 = now  */
} ftb_model_shape;

/* A shape from a config: f32 storage everywhere, threads 0 (the core's
 * thread count when estimated). */
void ftb_model_shape_from_config(const ftb_config *cfg, ftb_model_shape *out);
/* A plan for one step of a method on that shape under run (keep policies
 * copied into the plan's own array).  NULL with err if the config is not
 * valid or memory runs out. */
ftb_plan *ftb_plan_new(const ftb_model_shape *shape, const ftb_run_opts *run, char *err, size_t errlen);
void ftb_plan_free(ftb_plan *p);

/* ------------------------------------------------------------------------ */
/* Storage formats of frozen base weights (docs/QUANT.md)                    */
/* ------------------------------------------------------------------------ */

/* "f32", "bf16", "f16", "int8", "int4", "int4-asym". */
const char *ftb_dtype_name(ftb_dtype d);
/* Parses a name above ("fp32", "fp16", "float16", "bfloat16", "int4-sym"
 * are accepted too); -1 if unknown. */
int ftb_dtype_parse(const char *s);
/* Bytes a format takes for rows × cols values, scales and zeros included
 * (group: int4's group size). */
int64_t ftb_dtype_bytes(ftb_dtype d, int64_t rows, int64_t cols, int group);
#define FTB_QUANT_DEFAULT_GROUP 64

/* Stores one 2-D tensor in format ("bf16", "f16", "int8", "int4",
 * "int4-asym"; "f32" keeps fp32) with group size group (int4 only: an even
 * divisor of the row length, 32/64/128 in practice; 0 = 64).  The fp32 values
 * are freed (owned) or their pages dropped (mapped); the per-tensor error is
 * recorded (ftb_model_quant_errors).  Only fp32/bf16/f16-stored tensors can
 * be re-quantized; a trainable tensor cannot be.  0, or -1 with err naming
 * the tensor. */
int ftb_tensor_quantize(ftb_model *m, ftb_tensor *t, const char *format, int group, char *err, size_t errlen);
/* The seven linear weights of every block (q, k, v, o, gate, up, down). */
int ftb_model_quantize(ftb_model *m, const char *format, int group, char *err, size_t errlen);
/* The token embedding and, if untied, the LM head (row-tiled, any format). */
int ftb_model_quantize_embeddings(ftb_model *m, const char *format, int group, char *err, size_t errlen);
/* Loads a checkpoint (as ftb_model_load) and stores the block linears in
 * format and the embedding/LM head in embed_format (NULL or "f32": as
 * stored), tensor by tensor as they are read, so that no full fp32 copy of
 * the model ever exists.  A tensor the file already stores in the wanted
 * format is taken as it is (mapped when map != 0). */
ftb_model *ftb_model_load_quantized(const char *dir, int map, const char *format, int group, const char *embed_format,
                                    char *err, size_t errlen);

/* Rows [row0, row0+n) of t as fp32 into out [n, cols] (a 1-D tensor is one
 * row), whatever t's storage format. */
void ftb_tensor_read_rows(const ftb_tensor *t, int64_t row0, int64_t n, float *out);
/* Bytes t's values take in memory or in the mapped file, scales included. */
int64_t ftb_tensor_storage_bytes(const ftb_tensor *t);

/* Residency of mapped weights (ftb_model_set_residency).  ALL: pages stay
 * once touched (default).  LAZY_BLOCK: a block's mapped tensors are brought
 * in (MADV_POPULATE_READ, or MADV_WILLNEED on kernels before 5.14) when the
 * block runs — forward, recompute, backward — and dropped from the resident
 * set after (MADV_DONTNEED); the embedding lookup touches only its tokens'
 * rows and the LM head streams its row tiles, dropping each once used.
 * Accounting is unchanged (the mapping counts under FTB_MEM_WEIGHTS); the
 * resident set is what shrinks.  Only weights mapped from a file
 * (ftb_model_load with map) can be dropped. */

/* Tile size of ftb_linear_apply's products in floats (rows = tile / in, at least 256
 * rows or all of them); 0 restores the default (1 Mi floats = 4 MiB). */
void ftb_set_dequant_tile(int64_t floats);
int64_t ftb_get_dequant_tile(void);
/* Time spent dequantizing (all threads' wall time inside dequantization)
 * and elements dequantized, since the last reset. */
void ftb_dequant_stats(double *seconds, int64_t *elements);
void ftb_dequant_stats_reset(void);

/* Quantization error of one tensor, against fp32 values w → stored ŵ. */
typedef struct {
    char name[96];
    int layer; /* block index; -1 for embedding and LM head    */
    ftb_dtype dtype;
    int group;
    int64_t numel;
    double max_abs_err;  /* max |w − ŵ|                                  */
    double max_rel_err;  /* max |w − ŵ| / max |w|                        */
    double mean_rel_err; /* Σ|w − ŵ| / Σ|w|                              */
    double rms_rel_err;  /* ‖w − ŵ‖₂ / ‖w‖₂                              */
} ftb_quant_error;

/* The errors measured when m's tensors were quantized (in quantization
 * order; not kept across save/load).  Returns how many there are; fills at
 * most cap. */
int ftb_model_quant_errors(const ftb_model *m, ftb_quant_error *out, int cap);
/* Errors of every tensor of m stored other than fp32, against the same
 * tensor of ref (same config; any storage).  Returns the count (at most
 * cap filled), or -1 with err. */
int ftb_quant_compare(const ftb_model *ref, const ftb_model *m, ftb_quant_error *out, int cap, char *err,
                      size_t errlen);
/* Inference loss of both models on one batch; returns loss(m) − loss(ref)
 * (NaN with err on failure). */
float ftb_quant_loss_delta(ftb_model *ref, ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, float *loss_ref,
                           float *loss_m, char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* Optimizer                                                                  */
/* ------------------------------------------------------------------------ */

/* The optimizer's layout (plugins see ftb_adamw as opaque and use
 * ftb_adamw_create; the harness may hold one by value with ftb_adamw_init). */
struct ftb_adamw {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t t;
    int n;
    ftb_tensor **params; /* trainable tensors with grads                   */
    float **m, **v;      /* FTB_MEM_OPTIM                                   */
};

/* Allocates moments for the tensors given (or, if params == NULL, every
 * trainable tensor of the model that has a grad). */
int ftb_adamw_init(ftb_adamw *opt, ftb_model *m, ftb_tensor **params, int n, float lr, float weight_decay, char *err,
                   size_t errlen);
void ftb_adamw_step(ftb_adamw *opt);
void ftb_adamw_free(ftb_adamw *opt);

/* Which update ftb_adamw_init prepares (added with --optimizer).  The host
 * selects it, process-wide, before a method's init; every optimizer
 * initialised after that gets it, so every plugin built on ftb_adamw_init
 * and ftb_backprop_step offers SGD without a change.  FTB_OPTIM_SGD keeps
 * no state: m and v stay NULL (nothing under FTB_MEM_OPTIM) and
 * ftb_adamw_step does θ ← θ − lr·(g + wd·θ) (wd = 0 on no_decay tensors):
 * θ ← θ − lr·g without weight decay.  Default FTB_OPTIM_ADAMW. */
typedef enum { FTB_OPTIM_ADAMW = 0, FTB_OPTIM_SGD } ftb_optimizer;
void ftb_optimizer_select(ftb_optimizer o);
ftb_optimizer ftb_optimizer_selected(void);
const char *ftb_optimizer_name(ftb_optimizer o); /* "adamw", "sgd"  */
int ftb_optimizer_parse(const char *s);          /* -1 if unknown   */

/* ------------------------------------------------------------------------ */
/* Deterministic random numbers (methods regenerate perturbations with it)   */
/* ------------------------------------------------------------------------ */

void ftb_fill_normal(float *x, int64_t n, float std, uint64_t seed);

/* ------------------------------------------------------------------------ */
/* Generation (models/generate.c)                                            */
/* ------------------------------------------------------------------------ */

/* Logits [n_rows, vocab] of the given positions (row = b·T + t) of one
 * inference-mode forward: the core's forward with every attached hook, the
 * LM head applied to those rows only.  0, or -1 with err. */
int ftb_model_logits(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, const int *rows, int n_rows,
                     float *logits, char *err, size_t errlen);
/* Logits [vocab] of the token after tokens[0..n) (one sequence), of which
 * the first n_prompt are the prompt: the hooks see the loss mask a training
 * row of prompt → answer has (targets kept from position n_prompt − 1 on),
 * so a hook that pools the prompt finds the same prompt as in training.
 * n_prompt ≤ 0: no position is marked (plain prefix). */
int ftb_next_token_logits(ftb_model *m, const ftb_run_opts *o, const int32_t *tokens, int n, int n_prompt,
                          float *logits, char *err, size_t errlen);
/* Index of the largest logit (the lowest on ties). */
int32_t ftb_argmax(const float *logits, int V);
/* Greedy decoding, causally, token by token: up to max_new tokens into out,
 * stopping after the sequence stop[0..n_stop) (n_stop 0: no stop); each
 * forward marks prompt and answer as ftb_next_token_logits does.  Each
 * token recomputes the whole prefix (no KV cache): cost max_new forwards.
 * Returns the number of tokens written, or -1 with err. */
int ftb_generate_greedy(ftb_model *m, const ftb_run_opts *o, const int32_t *prompt, int n_prompt, int max_new,
                        const int32_t *stop, int n_stop, int32_t *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
