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
static const ftb_method m = {
    .abi_version = FTB_ABI_VERSION, .name = "initfail", .summary = "test: init fails", .init = fail_init, .step = step
};
const ftb_method *ftbench_method(void) { return &m; }
