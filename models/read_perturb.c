/* read_perturb.c — the read perturbation of the inference forward in
 * progress (ftb_model_set_read_perturbation): while one is set, every
 * product reads its weight through a tile (quant_linear.c), to which it is
 * added. */
#include "ftbench.h"
#include "quant.h"

/* The read perturbation of the run in progress (set by transformer.c for
 * an inference forward of a model that has one): every product reads W
 * through a tile, to which it is added. */
static ftb_read_perturb_fn read_fn;
static void *read_ctx;

void ftb_quant_set_read_perturbation(ftb_read_perturb_fn fn, void *ctx)
{
    read_fn = fn;
    read_ctx = fn ? ctx : NULL;
}

int ftb_quant_read_perturbed(void) { return read_fn != NULL; }

void ftb_quant_perturb_tile(const ftb_tensor *W, int64_t offset, int64_t n, float *tile)
{
    read_fn(read_ctx, W, offset, n, tile);
}
