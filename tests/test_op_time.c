/* test_op_time.c — the per-operation time accounting (models/op_time.c):
 * classes that add up to the core's call, FLOPs by shape (a frozen weight
 * has no weight-gradient product), nested brackets counted once. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ftbench.h"
#include "op_time.h"

static ftb_batch batch_of(int vocab, int B, int T, int32_t *tokens, int32_t *targets)
{
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)((i * 7 + 3) % vocab);
    for (int i = 0; i < B * T; i++) targets[i] = (i + 1) % T ? tokens[i + 1] : FTB_IGNORE_INDEX;
    return (ftb_batch){ B, T, tokens, targets };
}

static double sum_seconds(const ftb_op_stat *st)
{
    double s = 0;
    for (int c = 0; c < FTB_OP_NCLASS; c++) s += st[c].seconds;
    return s;
}

Test(op_time, classes_add_up_to_the_core_call)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("tiny", &cfg), 0);
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, 42, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    ftb_model_set_trainable(m, 1);
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    enum { B = 2, T = 64 };
    int32_t tokens[B * T], targets[B * T];
    ftb_batch b = batch_of(cfg.vocab_size, B, T, tokens, targets);
    ftb_op_stats_reset();
    double t0 = ftb_now();
    float loss = ftb_model_forward_backward(m, &b, NULL, err, sizeof err);
    double wall = ftb_now() - t0;
    cr_assert(isfinite(loss), "%s", err);
    ftb_op_stat st[FTB_OP_NCLASS];
    ftb_op_stats_get(st);
    double sum = sum_seconds(st);
    cr_expect(sum <= wall && sum >= 0.95 * wall - 200e-6, "classes sum to %.6f s, the call took %.6f s", sum, wall);
    const ftb_op_class ran[] = { FTB_OP_LINEAR_Q,  FTB_OP_LINEAR_DOWN, FTB_OP_ATTN_FWD, FTB_OP_ATTN_BWD,
                                 FTB_OP_HEAD_LOSS, FTB_OP_NORM,        FTB_OP_ROPE,     FTB_OP_SWIGLU,
                                 FTB_OP_RESIDUAL,  FTB_OP_EMBED };
    for (size_t i = 0; i < sizeof ran / sizeof *ran; i++)
        cr_expect(st[ran[i]].calls > 0 && st[ran[i]].seconds > 0, "%s: %lld calls", ftb_op_class_name(ran[i]),
                  (long long)st[ran[i]].calls);
    cr_expect_eq(st[FTB_OP_HOOKS].calls, 0);
    cr_expect_eq(st[FTB_OP_OPTIMIZER].calls, 0);
    /* q_proj: forward, and backward with dx and dW: 3 × 2·N·in·out per layer */
    double N = B * T, q = (double)cfg.n_heads * cfg.head_dim;
    cr_expect_eq(st[FTB_OP_LINEAR_Q].calls, 2 * cfg.n_layers);
    cr_expect(fabs(st[FTB_OP_LINEAR_Q].flops - cfg.n_layers * 3 * 2 * N * cfg.dim * q) < 1, "q_proj flops %.0f",
              st[FTB_OP_LINEAR_Q].flops);
    cr_expect_str_eq(ftb_op_class_name(FTB_OP_LINEAR_GATE), "linear_gate");
    ftb_model_free(m);
}

Test(op_time, a_frozen_weight_has_no_weight_gradient_flops)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("tiny", &cfg), 0);
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, 42, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    /* only the first block's norm trains: every block runs backward, no linear trains */
    m->layers[0].attn_norm.trainable = 1;
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    enum { B = 1, T = 32 };
    int32_t tokens[B * T], targets[B * T];
    ftb_batch b = batch_of(cfg.vocab_size, B, T, tokens, targets);
    ftb_op_stats_reset();
    cr_assert(isfinite(ftb_model_forward_backward(m, &b, NULL, err, sizeof err)), "%s", err);
    ftb_op_stat st[FTB_OP_NCLASS];
    ftb_op_stats_get(st);
    double N = B * T;
    for (int k = 0; k < FTB_LIN_COUNT; k++) {
        ftb_tensor *W = ftb_layer_weight(&m->layers[0], k);
        double in = (double)W->shape[1], out = (double)W->shape[0]; /* stored [out, in] */
        cr_expect(fabs(st[FTB_OP_LINEAR_Q + k].flops - cfg.n_layers * 2 * 2 * N * in * out) < 1, "%s: %.0f flops",
                  ftb_op_class_name(FTB_OP_LINEAR_Q + k), st[FTB_OP_LINEAR_Q + k].flops);
    }
    ftb_model_free(m);
}

Test(op_time, a_bracket_inside_another_is_counted_once)
{
    ftb_op_stats_reset();
    ftb_op_timer outer = ftb_op_begin();
    ftb_op_timer inner = ftb_op_begin();
    double t0 = ftb_now();
    while (ftb_now() - t0 < 2e-3) {}
    ftb_op_end(FTB_OP_ROPE, inner, 10, 10);
    ftb_op_end(FTB_OP_NORM, outer, 5, 5);
    ftb_op_stat st[FTB_OP_NCLASS];
    ftb_op_stats_get(st);
    cr_expect_eq(st[FTB_OP_ROPE].calls, 0);
    cr_expect_eq(st[FTB_OP_NORM].calls, 1);
    cr_expect(st[FTB_OP_NORM].seconds >= 2e-3);
    cr_expect(fabs(sum_seconds(st) - st[FTB_OP_NORM].seconds) < 1e-12);
    cr_expect(ftb_op_fault_seconds() > 0 && ftb_op_fault_seconds() < 1e-3);
}
