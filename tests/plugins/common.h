/* common.h — shared by the fault-injection test plugins: a method whose
 * init succeeds (nothing trainable) and whose step does whatever the
 * plugin is testing.  Each plugin is one .c file built into one .so. */
#ifndef FTB_TEST_PLUGIN_COMMON_H
#define FTB_TEST_PLUGIN_COMMON_H

#include "ftbench_method.h"
#include <stdio.h>
#include <stdlib.h>

static inline void *noop_init(ftb_session *s, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    ftb_model_set_trainable(s->model, 0);
    static int token;
    return &token;
}

/* One inference-mode forward, so a step does some real work first. */
static inline int forward_once(ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    double t = ftb_now();
    out->loss = ftb_model_forward(s->model, b, &s->run, err, errlen);
    out->forward_passes = 1;
    out->t_forward = ftb_now() - t;
    return out->loss == out->loss ? 0 : -1;
}

#define TEST_PLUGIN(NAME, SUMMARY, STEP, ABI)                                                                       \
    static const ftb_option_doc test_opts[] = { { "mb", "256", "MiB to allocate (hog)" },                           \
                                                { "kb_per_token", "0", "KiB per token (hog)" },                     \
                                                { NULL, NULL, NULL } };                                             \
    static const ftb_method test_method = {                                                                         \
        .abi_version = ABI, .name = NAME, .summary = SUMMARY, .options = test_opts, .init = noop_init, .step = STEP \
    };                                                                                                              \
    const ftb_method *ftbench_method(void) { return &test_method; }

#endif
