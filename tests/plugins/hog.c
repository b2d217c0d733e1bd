/* hog: a step that allocates --opt mb=N MiB (default 256) through the core
 * and touches every page, then succeeds: over any small budget.  With
 * --opt kb_per_token=K it allocates K KiB per token of the batch instead,
 * a memory cost that grows with the length (for `fit`). */
#include "common.h"
#include <string.h>

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    err[0] = 0;
    long mb = ftb_opt_int(s->options, "mb", 256, err, errlen);
    long kpt = ftb_opt_int(s->options, "kb_per_token", 0, err, errlen);
    if (err[0]) return -1;
    if (forward_once(s, b, out, err, errlen)) return -1;
    size_t n = kpt > 0 ? (size_t)kpt * 1024 * (size_t)b->B * (size_t)b->T : (size_t)mb << 20;
    char *p = ftb_alloc(FTB_MEM_WORKSPACE, n);
    if (!p) {
        snprintf(err, errlen, "hog: cannot allocate %ld MiB", mb);
        return -1;
    }
    memset(p, 1, n);
    /* Kept until the process ends, like a leak. */
    return 0;
}
TEST_PLUGIN("hog", "test: allocates past the budget in step", step, FTB_ABI_VERSION)
