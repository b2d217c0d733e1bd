/* fwdonly: a healthy, quick method (one inference forward per step, nothing
 * trained), used as the "third method dropped in" and as a neighbour of
 * the failing plugins in sweeps. */
#include "common.h"

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    return forward_once(s, b, out, err, errlen);
}
TEST_PLUGIN("fwdonly", "test: forward only, trains nothing", step, FTB_ABI_VERSION)
