/* segv: a step that dereferences an unmapped page (a real SIGSEGV, which
 * UBSan's null check would not turn into an abort). */
#include "common.h"
#include <sys/mman.h>

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    if (forward_once(s, b, out, err, errlen)) return -1;
    volatile char *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p[0] = 1;
    return 0;
}
TEST_PLUGIN("segv", "test: segfaults in step", step, FTB_ABI_VERSION)
