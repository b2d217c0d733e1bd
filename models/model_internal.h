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

/* Moves an ftb_alloc'd buffer to another category (a base weight that
 * becomes trainable is counted as trainable from then on). */
void ftb_mem_recategorize(void *p, ftb_mem_category c);

/* The inference forward (hooks applied) up to the final norm: hidden
 * [B*T, dim] receives its output; no LM head, no loss (models/generate.c
 * turns the rows it needs into logits).  0, or -1 with err. */
int ftb_model_forward_hidden(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, float *hidden, char *err,
                             size_t errlen);

#endif
