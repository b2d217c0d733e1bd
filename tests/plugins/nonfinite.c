/* nonfinite: a method with one trainable 8×8 tensor "test.w" whose step
 * goes non-finite where --opt where=... says, to check that the harness
 * names what went non-finite and where:
 *   loss    the loss is +inf, every value and gradient finite
 *   grad    a NaN gradient (index 5) and the NaN it put into the
 *           parameter; the loss NaN; the step fails without a message
 *   update  the loss finite, but the last update leaves +inf at index 3 */
#include "ftbench.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static ftb_tensor w;

static void *init(ftb_session *s, char *err, size_t errlen)
{
    ftb_model_set_trainable(s->model, 0);
    if (ftb_tensor_alloc(&w, "test.w", 8, 8, FTB_MEM_TRAINABLE, 1, err, errlen)) return NULL;
    for (int64_t i = 0; i < w.numel; i++) w.data[i] = 0.5f;
    return &w;
}

static int trainable(void *st, ftb_tensor ***out)
{
    static ftb_tensor *list[1];
    list[0] = st;
    *out = list;
    return 1;
}

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    (void)b;
    const char *where = ftb_opt_str(s->options, "where", "loss");
    out->forward_passes = 1;
    out->loss = 2.0f;
    if (!strcmp(where, "loss")) {
        out->loss = INFINITY;
        return 0;
    }
    if (!strcmp(where, "grad")) {
        w.grad[5] = NAN;
        w.data[5] -= 1e-3f * w.grad[5];
        out->loss = NAN;
        return -1; /* no message: the harness must find out */
    }
    if (!strcmp(where, "update")) {
        w.data[3] = INFINITY;
        return 0;
    }
    snprintf(err, errlen, "nonfinite: unknown where=%s", where);
    return -1;
}

static const ftb_option_doc opts[] = { { "where", "loss", "loss | grad | update" }, { NULL, NULL, NULL } };
static const ftb_method method = { .abi_version = FTB_ABI_VERSION,
                                   .name = "nonfinite",
                                   .summary = "test: goes non-finite in step",
                                   .options = opts,
                                   .init = init,
                                   .step = step,
                                   .trainable = trainable };
const ftb_method *ftbench_method(void) { return &method; }
