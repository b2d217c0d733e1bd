/* hang: a step that never returns (a deadlock), to hit the cell timeout. */
#include "common.h"
#include <unistd.h>

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    (void)s;
    (void)b;
    (void)out;
    (void)err;
    (void)errlen;
    for (;;) pause();
    return 0;
}
TEST_PLUGIN("hang", "test: hangs in step", step, FTB_ABI_VERSION)
