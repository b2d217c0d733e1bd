/* model_internal.h — what the core's own files share about a model's
 * storage.  Not part of the public interface (include/ftbench.h). */
#ifndef FTB_MODEL_INTERNAL_H
#define FTB_MODEL_INTERNAL_H
#include "ftbench.h"

/* Builds a model's tensor descriptors (names, shapes, flags, params[] in
 * checkpoint order) for cfg, with every data pointer NULL.  Ties lm_head to
 * embed when cfg->tie_embeddings (lm_head is then not in params[]). */
ftb_model *ftb_model_new_empty(const ftb_config *cfg, char *err, size_t errlen);

/* Allocates owned storage (FTB_MEM_WEIGHTS) for every tensor whose data is
 * still NULL, and re-points lm_head at embed when tied. 0 or -1. */
int ftb_model_alloc_missing(ftb_model *m, char *err, size_t errlen);

/* The model keeps what it must release: owned buffers (ftb_free) and file
 * mappings (munmap + ftb_mem_account(FTB_MEM_WEIGHTS, -len)). */
void ftb_model_own(ftb_model *m, void *buffer);
void ftb_model_add_mapping(ftb_model *m, void *addr, size_t len);

/* The read perturbation set on m (ftb_model_set_read_perturbation), or
 * NULL; *ctx receives its context. */
ftb_read_perturb_fn ftb_model_read_perturbation(const ftb_model *m, void **ctx);

/* Floats of the buffer a perturbed read of a norm or bias vector uses
 * (transformer.c; the memory model counts it). */
int64_t ftb_perturbed_vector_floats(const ftb_config *c);

/* Moves an ftb_alloc'd buffer to another category (a base weight that
 * becomes trainable is counted as trainable from then on). */
void ftb_mem_recategorize(void *p, ftb_mem_category c);

/* Checking builds allocate the exact size, from the process allocator
 * (mem.c): ASan builds, make memcheck (-DFTB_EXACT_ALLOC=1). */
#ifndef FTB_EXACT_ALLOC
#if defined(__SANITIZE_ADDRESS__)
#define FTB_EXACT_ALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FTB_EXACT_ALLOC 1
#endif
#endif
#endif
#ifndef FTB_EXACT_ALLOC
#define FTB_EXACT_ALLOC 0
#endif

/* The step arena (step_arena.c): saved activations and workspaces placed
 * deterministically in one reserved range whose pages stay, so that a
 * later step touches no fresh page.  alloc returns NULL when the arena is
 * off or full (the caller falls back to the process allocator); owns tells
 * an arena block by its address; free takes the size alloc was given.
 * Off in checking builds, so that ASan and valgrind see every block. */
void *ftb_step_arena_alloc(size_t bytes);
int ftb_step_arena_owns(const void *p);
void ftb_step_arena_free(void *p, size_t bytes);

/* Lowest block whose backward a training run needs (below it nothing
 * trains, and blocks run in inference mode): transformer.c's schedule, which
 * the analytic memory model (memory_model.c) follows too. */
int ftb_model_lowest_trained_block(const ftb_model *m, const ftb_run_opts *o);

/* The analytic memory model's walk (memory_model.c) with its inputs given:
 * the state between steps by category (weights … optim), the dequantization
 * tile kept for the step, in floats, and the thread count.
 * ftb_memory_estimate_step reads them from the live accounting and the
 * model's storage; a plan (memory_plan.c) computes them from shapes. */
void ftb_memory_estimate_from(const ftb_model *m, const ftb_run_opts *opts, int B, int T, int training,
                              const int64_t *hook_saved, const int64_t state[FTB_MEM_NCAT], int64_t tile_floats,
                              int threads, ftb_memory_estimate *out);

/* Allocation failure (docs/CORE.md, "When an allocation fails").  The first
 * ftb_alloc that returns NULL sets a sticky flag, kept until cleared;
 * forward/backward clear it on entry and check it after every step that
 * may have allocated (hooks included).  The message names the size, the
 * category and the phase of the failed allocation. */
int ftb_mem_failed(void);
void ftb_mem_clear_failure(void);
void ftb_mem_failure_message(char *err, size_t errlen);
/* Test hook: the next n allocations succeed, the one after fails (and every
 * later one when persistent); n < 0 turns injection off.  The environment
 * variable FTBENCH_FAIL_ALLOC_AFTER=N (or N+) sets it at process start. */
void ftb_mem_fail_after(int64_t n, int persistent);
/* ftb_alloc calls so far (failed ones included). */
int64_t ftb_mem_alloc_calls(void);

/* The inference forward (hooks applied) up to the final norm: hidden
 * [B*T, dim] receives its output; no LM head, no loss (models/generate.c
 * turns the rows it needs into logits).  0, or -1 with err. */
int ftb_model_forward_hidden(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, float *hidden, char *err,
                             size_t errlen);

#endif
