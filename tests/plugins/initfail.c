/* initfail: init reports an error; the cell's outcome is "error" with it. */
#include "common.h"

static void *fail_init(ftb_session *s, char *err, size_t errlen)
{
    (void)s;
    snprintf(err, errlen, "initfail: refusing on purpose");
    return NULL;
}
static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    return forward_once(s, b, out, err, errlen);
}
static const ftb_method m = { FTB_ABI_VERSION, "initfail", "test: init fails", NULL, fail_init, step, NULL, NULL };
const ftb_method *ftbench_method(void) { return &m; }
