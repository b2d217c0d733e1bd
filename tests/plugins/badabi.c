/* badabi: built for the next ABI version; the harness must refuse it. */
#include "common.h"

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    return forward_once(s, b, out, err, errlen);
}
TEST_PLUGIN("badabi", "test: wrong ABI version", step, FTB_ABI_VERSION + 1)
