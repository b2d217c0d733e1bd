/* abort: a step that calls abort() (a failed assertion). */
#include "common.h"

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    (void)s;
    (void)b;
    (void)out;
    (void)err;
    (void)errlen;
    abort();
}
TEST_PLUGIN("abort", "test: aborts in step", step, FTB_ABI_VERSION)
