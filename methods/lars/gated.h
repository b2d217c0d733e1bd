/* gated.h — LARS variant `gated` (methods/lars/gated.c): a per-token,
 * block-wise input gate on a frozen linear layer.  docs/methods/lars.md,
 * "Variant gated", has the equations, the backward and the memory. */
#ifndef LARS_GATED_H
#define LARS_GATED_H

#include "ftbench_method.h"

enum { G_U, G_V, G_ALPHA, G_COUNT }; /* trainable tensors of one gated adapter */

#define GATED_RMS_EPS 1e-6f /* RMSNorm(x) without learned scale */

typedef struct {
    ftb_adapter hook;          /* first: the core hands this pointer back     */
    ftb_tensor t[G_COUNT];     /* U [H, r], V [r, nb], alpha [1]              */
    const ftb_tensor *W;       /* the frozen base weight [out, H]             */
    int in, out, r, block, nb; /* nb = ceil(H / block) gate values per token */
    int layer, kind;
} lars_gated_adapter;

/* Allocates and initialises the tensors (U Kaiming-uniform, V ~ N(0, 1e-8),
 * alpha = 0.1) and fills the hook; a->in/out/r/block/layer/kind and a->W
 * must be set.  0, or -1 with err filled. */
int lars_gated_init(lars_gated_adapter *a, ftb_rng *rng, char *err, size_t errlen);
void lars_gated_free(lars_gated_adapter *a);
/* Bytes one call keeps for backward on top of the layer input that the core
 * keeps (needs_input): rstd [N], a = z·U [N, r], c = a·V [N, nb]. */
size_t lars_gated_saved_bytes(int N, int r, int nb);

#endif
