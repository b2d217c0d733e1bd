/* nomodel: a healthy method (one inference forward per step) that declares
 * it has no memory model: its memory_plan returns -1 with err starting
 * FTB_NO_MEMORY_MODEL, so `ftbench plan` lists it as "no model" instead of
 * guessing (tests plan_cmd/a_method_declaring_no_model_is_listed_not_guessed). */
#include "common.h"

#include <string.h>

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    return forward_once(s, b, out, err, errlen);
}

static int no_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err, size_t errlen)
{
    (void)p, (void)o, (void)B, (void)T;
    memset(out, 0, sizeof *out);
    snprintf(err, errlen, "%s: what this method holds depends on its data, not on shapes", FTB_NO_MEMORY_MODEL);
    return -1;
}

static const ftb_method method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "nomodel",
    .summary = "test: declares no memory model",
    .init = noop_init,
    .step = step,
    .memory_plan = no_plan,
};
const ftb_method *ftbench_method(void) { return &method; }
