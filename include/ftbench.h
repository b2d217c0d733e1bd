/*
 * ftbench.h — the whole public interface of ftbench's model core and of its
 * method plugin ABI.  A fine-tuning method needs this header and nothing else.
 *
 * Conventions (the same as Hugging Face checkpoints, so real weights load):
 *   - a linear layer's weight W is [out, in], y = x·Wᵀ (+ b);
 *   - activations are row-major [B·T, features], rows ordered batch-major;
 *   - RoPE uses the "rotate half" pairing (i, i + head_dim/2);
 *   - all compute is fp32; every byte the core allocates is accounted under a
 *     category (ftb_mem_*), so that a method's memory can be explained.
 *
 * ABI: a plugin exports `const ftb_method *ftbench_method(void)`; the host
 * accepts abi_version FTB_ABI_VERSION and the older versions it still
 * understands (FTB_ABI_MIN_VERSION and up: a v1 struct simply ends before
 * the fields v2 appended) and refuses any other.  Plugins
 * call the core functions declared below; they are resolved against the
 * ftbench executable when the plugin is loaded.
 */
#ifndef FTBENCH_H
#define FTBENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FTB_ABI_VERSION     2
#define FTB_ABI_MIN_VERSION 1 /* oldest abi_version the host still loads */
#define FTB_IGNORE_INDEX    (-100)
#define FTB_ERR_LEN         512

/* ------------------------------------------------------------------------ */
/* Memory accounting                                                         */
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

const char *ftb_mem_category_name(ftb_mem_category c); /* "weights", ... */

/* Every core (and method) allocation goes through these: 64-byte aligned. */
void *ftb_alloc(ftb_mem_category c, size_t bytes);
void *ftb_calloc(ftb_mem_category c, size_t bytes);
void ftb_free(void *p);
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
double ftb_now(void); /* monotonic seconds                  */

/* jemalloc's own counters (stats.allocated, stats.active, stats.resident);
 * returns 0 on success, -1 if the process allocator is not jemalloc. */
int ftb_jemalloc_stats(size_t *allocated, size_t *active, size_t *resident);

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

/* How a tensor's values are stored (docs/QUANT.md).  Compute is fp32
 * whatever the storage: a non-fp32 weight is dequantized tile by tile. */
typedef enum {
    FTB_DTYPE_F32 = 0,   /* data holds the values                          */
    FTB_DTYPE_BF16,      /* bfloat16, round to nearest even                */
    FTB_DTYPE_F16,       /* IEEE half, round to nearest even, saturating   */
    FTB_DTYPE_INT8,      /* int8, one fp32 scale per row (output channel)  */
    FTB_DTYPE_INT4,      /* 4-bit symmetric, fp16 scale per group of a row */
    FTB_DTYPE_INT4_ASYM, /* 4-bit, fp16 scale and fp16 zero per group      */
    FTB_DTYPE_COUNT
} ftb_dtype;

typedef struct {
    char name[96]; /* Hugging Face tensor name                      */
    int ndim;
    int64_t shape[2];
    int64_t numel;
    float *data;
    float *grad; /* NULL unless trainable (after ftb_model_alloc_grads) */
    int trainable;
    int no_decay; /* biases and norms: no weight decay             */
    int mapped;   /* data points into a mapped checkpoint (read-only) */
    int writable; /* made writable and counted as trainable          */
    /* Storage format (added at the end, docs/QUANT.md).  For any dtype but FTB_DTYPE_F32, data is NULL
     * and the values live in core-private storage (quant); read them with
     * ftb_tensor_read_rows() or multiply with ftb_linear_apply().  A tensor
     * that becomes trainable is dequantized into fp32 data first. */
    ftb_dtype dtype;
    int group;   /* int4: elements per group along a row; else 0    */
    void *quant; /* core-private; NULL for fp32                      */
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
/* Parses "q_proj" or "q"; -1 if unknown. */
int ftb_linear_parse(const char *s);

typedef struct ftb_adapter ftb_adapter;

typedef struct {
    ftb_tensor attn_norm;
    ftb_tensor wq, wk, wv, wo;
    ftb_tensor bq, bk, bv; /* numel 0 unless qkv_bias            */
    ftb_tensor mlp_norm;
    ftb_tensor w_gate, w_up, w_down;
    ftb_adapter *adapter[FTB_LIN_COUNT]; /* hooks on each linear, or NULL */
} ftb_layer;

typedef struct ftb_model {
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
} ftb_model;

/* Seeded initialisation: uniform with standard deviation 0.02, norms = 1. */
ftb_model *ftb_model_create(const ftb_config *cfg, uint64_t seed, char *err, size_t errlen);
void ftb_model_free(ftb_model *m);
ftb_tensor *ftb_model_find(ftb_model *m, const char *hf_name);
/* W and bias (bias->numel == 0 if none) of one linear layer. */
ftb_tensor *ftb_layer_weight(ftb_layer *L, ftb_linear_kind k);
ftb_tensor *ftb_layer_bias(ftb_layer *L, ftb_linear_kind k);

void ftb_model_set_trainable(ftb_model *m, int trainable); /* all params */
/* Allocates grads (FTB_MEM_GRADS) for trainable tensors; copy-on-write maps
 * a mapped tensor into owned memory if it becomes trainable. 0 or -1. */
int ftb_model_alloc_grads(ftb_model *m, char *err, size_t errlen);
void ftb_model_zero_grads(ftb_model *m);
/* Makes every trainable tensor writable and counts it as trainable, without
 * allocating gradients (zeroth-order methods update weights in place):
 * mapped tensors are copied out of the checkpoint.  0 or -1. */
int ftb_model_make_writable(ftb_model *m, char *err, size_t errlen);
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

typedef struct {
    ftb_attention_impl attention;
    ftb_loss_mode loss;
    int loss_chunk_rows;         /* rows of logits per chunk; 0 = 128     */
    const ftb_keep_policy *keep; /* [n_layers] or NULL = all FTB_KEEP_ALL  */
    const char *offload_dir;     /* for FTB_KEEP_OFFLOAD; NULL = $TMPDIR,
                                     else /var/tmp                          */
    float *seq_loss;             /* optional out [B]: mean loss per sequence */
    int first_trainable_layer;   /* backward stops below this layer; 0 = all */
} ftb_run_opts;

void ftb_run_opts_default(ftb_run_opts *o);

/* Inference-mode forward: nothing kept for backward; returns mean loss over
 * the non-ignored targets (NaN on bad input, with err filled). */
float ftb_model_forward(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, char *err, size_t errlen);
/* Forward and exact backward: accumulates into .grad of trainable tensors
 * and adapters.  Returns the loss. */
float ftb_model_forward_backward(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, char *err, size_t errlen);

/* Read-time perturbation of the weights (docs/CORE.md, "Perturbed reads"),
 * for zeroth-order methods that must not write their perturbation into the
 * weights (writing θ + εz and undoing it is not exact in fp32).  While set,
 * every inference forward reads each weight, norm and bias tensor t of the
 * model as t + what fn adds: the core copies (or dequantizes) a stretch of
 * t's values — elements [offset, offset + n) of t in row-major order — into
 * a buffer of its own and calls fn(ctx, t, offset, n, values), which adds
 * its perturbation to values[0..n).  Stretches are linear-weight row tiles,
 * embedding rows looked up, whole norm and bias vectors; the LM head tied to
 * the embedding comes as &m->lm_head.  fn is called from the forward's own
 * thread, never concurrently (it may parallelise itself) and must not
 * allocate through the core's hooks.  Costs: linear weights go through the
 * tile path (one tile of ftb dequantization size, FTB_MEM_WORKSPACE) and
 * norms and biases through one vector buffer.  Training runs
 * (ftb_model_forward_backward) refuse while it is set.  fn NULL clears it. */
typedef void (*ftb_read_perturb_fn)(void *ctx, const ftb_tensor *t, int64_t offset, int64_t n, float *values);
void ftb_model_set_read_perturbation(ftb_model *m, ftb_read_perturb_fn fn, void *ctx);

/* Wall time of the last forward_backward's forward part (embedding to loss)
 * and backward part, in seconds. */
void ftb_last_run_times(double *forward, double *backward);

/* C[M,N] = alpha·op(A)·op(B) + beta·C, row-major, on the core's BLAS: what
 * a method needs for its own products without depending on a BLAS header. */
void ftb_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc);

/* ------------------------------------------------------------------------ */
/* Analytic memory model (docs/CORE.md)                                      */
/* ------------------------------------------------------------------------ */

/* What the core's categories will hold at the peak of one step, predicted
 * from shapes: the state between steps (weights, parameters, gradients,
 * moments) as allocated now, plus every activation and workspace buffer the
 * step's schedule allocates, walked in the order the core allocates them. */
typedef struct {
    int64_t at_peak[FTB_MEM_NCAT]; /* split at the predicted peak of the total */
    int64_t peak_total;            /* sum of at_peak                          */
    int64_t saved_peak;            /* peak of FTB_MEM_SAVED alone             */
    char peak_phase[32];           /* where it falls: "head", "bwd L23", ...  */
} ftb_memory_estimate;

/* One forward (training: forward and backward) of m on B×T tokens under the
 * run options o (keep policies, attention, loss mode), with the trainable
 * flags and hooks m has now.  hook_saved [n_layers × FTB_LIN_COUNT], index
 * layer·FTB_LIN_COUNT + kind: bytes each attached hook saves (FTB_MEM_SAVED)
 * in one training forward of B×T tokens, freed in its backward (NULL: none).
 * A method's memory_model (ftb_method) calls this with its own figures. */
void ftb_memory_estimate_step(const ftb_model *m, const ftb_run_opts *o, int B, int T, int training,
                              const int64_t *hook_saved, ftb_memory_estimate *out);

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

/* Products with a weight W [out, in] through its storage format, on tiles
 * of W dequantized into a bounded workspace (FTB_MEM_WORKSPACE):
 *   y[N,out]  = beta·y  + x[N,in]·Wᵀ
 *   dx[N,in]  = beta·dx + dy[N,out]·W                                     */
void ftb_linear_apply(const ftb_tensor *W, int N, const float *x, float *y, float beta);
void ftb_linear_apply_t(const ftb_tensor *W, int N, const float *dy, float *dx, float beta);
/* Tile size of those products in floats (rows = tile / in, at least 256
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

/* Residency of mapped weights.  ALL: pages stay once touched (default).
 * LAZY_BLOCK: a block's mapped tensors are brought in (MADV_POPULATE_READ,
 * or MADV_WILLNEED on kernels before 5.14) when the block runs — forward,
 * recompute, backward — and dropped from the resident set after
 * (MADV_DONTNEED); the embedding lookup touches only its tokens' rows and
 * the LM head streams its row tiles, dropping each once used.  Accounting
 * is unchanged (the mapping counts under FTB_MEM_WEIGHTS); the resident set
 * is what shrinks.  Only weights mapped from a file (ftb_model_load with
 * map) can be dropped. */
typedef enum { FTB_RESIDENT_ALL = 0, FTB_RESIDENT_LAZY_BLOCK } ftb_residency;
void ftb_model_set_residency(ftb_model *m, ftb_residency r);

/* ------------------------------------------------------------------------ */
/* Adapter hooks on linear layers                                             */
/* ------------------------------------------------------------------------ */

/* Where a hook sits: what the core tells it about one call. */
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
 * (x·Wᵀ+b) and may change y in place (LoRA adds, IA3 scales, LARS adds a
 * per-sequence vector).  What it needs for backward it saves itself, with
 * ftb_alloc(FTB_MEM_SAVED, ...), into *saved.  saved is NULL when the core
 * keeps nothing for this call (inference, or the first forward of a block
 * that is recomputed in backward): save nothing then.  If needs_input is set, the core
 * keeps x for the backward call (shared with the base layer's own need).
 *
 * backward: dy [N,out] is the gradient of the hooked output; the hook
 * accumulates its parameters' gradients, adds its own contribution to
 * dx [N,in] (dx is never NULL) and may rewrite dy in place into the gradient
 * of the base output (IA3 does; LoRA leaves it).  x is NULL unless
 * needs_input.  The hook frees its *saved there. */
typedef struct {
    void (*forward)(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved);
    void (*backward)(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved);
    void (*release)(ftb_adapter *self, void *saved); /* drop saved, no backward */
} ftb_adapter_ops;

struct ftb_adapter {
    const ftb_adapter_ops *ops;
    int needs_input;
    void *state; /* the method's data for this hook                  */
};

/* Attach (or with NULL detach) a hook.  The adapter is not owned. */
void ftb_attach_adapter(ftb_model *m, int layer, ftb_linear_kind k, ftb_adapter *a);

/* ------------------------------------------------------------------------ */
/* Optimizer                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t t;
    int n;
    ftb_tensor **params; /* trainable tensors with grads                   */
    float **m, **v;      /* FTB_MEM_OPTIM                                   */
} ftb_adamw;

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

typedef struct {
    uint64_t s[4];
} ftb_rng;
void ftb_rng_seed(ftb_rng *r, uint64_t seed);
uint64_t ftb_rng_u64(ftb_rng *r);
float ftb_rng_uniform(ftb_rng *r); /* [0,1) */
float ftb_rng_normal(ftb_rng *r);
void ftb_fill_normal(float *x, int64_t n, float std, uint64_t seed);

/* ------------------------------------------------------------------------ */
/* Method plugin ABI                                                          */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    const char *default_value;
    const char *help;
} ftb_option_doc;

/* Options given to a method as key=value strings. */
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

/* What the host hands a method. */
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

typedef struct {
    float loss;                            /* the loss this step measured                    */
    int forward_passes;                    /* how many forward passes the step ran           */
    double t_forward, t_backward, t_optim; /* seconds, as the method saw them */
} ftb_step_result;

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
    /* ---- ABI 2 (the host reads nothing below in a v1 struct) ---- */
    /* Gradient fidelity (`ftbench fidelity`, docs/PLUGINS.md).  Fills .grad
     * of every tensor trainable() lists (allocating it under FTB_MEM_GRADS
     * if the method has none), overwriting what was there:
     *   exact = 0: the gradient, or the estimate, the method's next step
     *              would apply, computed the way step computes it, without
     *              updating anything: the parameters are bit-identical
     *              afterwards and the next step is unchanged;
     *   exact = 1: the exact gradient of the same parameters, by backprop
     *              with every activation kept.
     * *loss receives the loss measured (NaN if none).  0, or -1 with err.
     * NULL means the method's gradient is what ftb_model_forward_backward
     * computes under the session's run options (as ftb_backprop_step): the
     * host computes both itself, the exact one with run.keep = NULL and
     * run.first_trainable_layer = 0. */
    int (*gradient)(void *state, ftb_session *s, const ftb_batch *b, int exact, float *loss, char *err, size_t errlen);
    /* Analytic memory model (docs/CORE.md, "Analytic memory model"): what
     * one step of this method on B×T tokens holds at its peak, predicted
     * from shapes — usually ftb_memory_estimate_step with the bytes the
     * method's hooks save.  0, or -1 if it has none for these options.
     * NULL: the host calls ftb_memory_estimate_step with no hook bytes (a
     * backprop step, or one inference forward for a method that ran no
     * backward), exact for methods whose hooks save nothing. */
    int (*memory_model)(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out);
} ftb_method;

typedef const ftb_method *(*ftb_method_entry_fn)(void);
#define FTB_METHOD_ENTRY "ftbench_method"

/* Phase timing helper for methods: marks the timeline and returns now. */
double ftb_phase(const char *label);

/* What most methods share, so that each plugin holds only what is its own. */

/* "q,v,down", "all", "attn" (q,k,v,o) or "mlp" (gate,up,down) → bitmask of
 * (1 << ftb_linear_kind); -1 with err ("option targets: ...") otherwise. */
int ftb_parse_linear_targets(const char *spec, char *err, size_t errlen);
/* A method-owned tensor rows×cols (cols 0: a vector), zeroed, counted
 * under cat, trainable with a zeroed gradient when with_grad.  0 or -1. */
int ftb_tensor_alloc(ftb_tensor *t, const char *name, int64_t rows, int64_t cols, ftb_mem_category cat, int with_grad,
                     char *err, size_t errlen);
void ftb_tensor_release(ftb_tensor *t);
/* One backprop step: zero the gradients of opt's tensors, forward and
 * backward, the optimizer step (AdamW, or SGD: ftb_optimizer_select);
 * fills out (loss, passes, phase times).  0 or -1. */
int ftb_backprop_step(ftb_session *s, ftb_adamw *opt, const ftb_batch *b, ftb_step_result *out, char *err,
                      size_t errlen);
/* Bytes of m's frozen weights mapped from a file (their storage format's
 * size): what lazy residency can drop; 0 for a model built in memory. */
int64_t ftb_model_mapped_bytes(const ftb_model *m);

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
