/* test_methods.c — the shipped method plugins, loaded as a user's run loads
 * them (dlopen from the methods directory), checked for what each claims:
 * LoRA's gradients are exactly those of the merged weight, lastk trains only
 * its blocks and keeps less, full fine-tuning learns. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftbench.h"
#include "plugin.h"
#include "helpers.h"

static ftb_model *tiny_model(uint64_t seed)
{
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, seed, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    /* weights std 0.2 so that gradients are well above rounding */
    for (int i = 0; i < m->n_params; i++)
        if (!strstr(m->params[i]->name, "norm"))
            for (int64_t j = 0; j < m->params[i]->numel; j++) m->params[i]->data[j] *= 10.0f;
    return m;
}

/* LoRA on W is full fine-tuning of W' = W + s·B·A seen through the chain
 * rule: with G = dL/dW', dB = s·G·Aᵀ and dA = s·Bᵀ·G.  G comes from the
 * core's own full backward (oracle-checked), so this checks LoRA's hand-
 * written backward independently of its forward. */
Test(methods, lora_gradients_equal_the_merged_weight_chain_rule)
{
    ftb_plugin p;
    th_open_method("lora", &p);
    ftb_model *m = tiny_model(11), *merged = tiny_model(11);
    const char *keys[] = { "rank", "alpha", "targets" }, *vals[] = { "3", "6", "q,v,o,down" };
    ftb_options opts = { 3, keys, vals };
    ftb_session s = th_session(m, &opts);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    cr_assert_eq(n, 2 * 4 * m->cfg.n_layers, "%d LoRA tensors", n);
    ftb_rng rng;
    ftb_rng_seed(&rng, 3);
    for (int i = 0; i < n; i++) /* B is zero at init: give both factors values */
        for (int64_t j = 0; j < params[i]->numel; j++) params[i]->data[j] = 0.3f * ftb_rng_normal(&rng);

    int32_t tok[2 * 20], tgt[2 * 20];
    ftb_batch b = th_batch(tok, tgt, 2, 20, m->cfg.vocab_size);
    for (int i = 0; i < n; i++) memset(params[i]->grad, 0, sizeof(float) * params[i]->numel);
    float loss = ftb_model_forward_backward(m, &b, &s.run, err, sizeof err);
    cr_assert(!isnan(loss), "%s", err);

    /* merged model: W' = W + s·B·A, fully trainable */
    const float scale = 2.0f;
    const int kinds[] = { FTB_LIN_Q, FTB_LIN_V, FTB_LIN_O, FTB_LIN_DOWN };
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < 4; k++) {
            ftb_tensor *A = params[2 * (l * 4 + k)], *B = params[2 * (l * 4 + k) + 1];
            ftb_tensor *W = ftb_layer_weight(&merged->layers[l], kinds[k]);
            ftb_gemm(0, 0, (int)W->shape[0], (int)W->shape[1], 3, scale, B->data, 3, A->data, (int)W->shape[1], 1.0f,
                     W->data, (int)W->shape[1]);
        }
    ftb_model_set_trainable(merged, 1);
    cr_assert_eq(ftb_model_alloc_grads(merged, err, sizeof err), 0, "%s", err);
    float merged_loss = ftb_model_forward_backward(merged, &b, NULL, err, sizeof err);
    cr_expect(fabsf(loss - merged_loss) < 1e-5f * fabsf(merged_loss), "LoRA loss %f, merged %f", loss, merged_loss);

    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < 4; k++) {
            ftb_tensor *A = params[2 * (l * 4 + k)], *B = params[2 * (l * 4 + k) + 1];
            ftb_tensor *W = ftb_layer_weight(&merged->layers[l], kinds[k]);
            int out = (int)W->shape[0], in = (int)W->shape[1];
            float *dA = calloc(A->numel, sizeof(float)), *dB = calloc(B->numel, sizeof(float));
            ftb_gemm(0, 1, out, 3, in, scale, W->grad, in, A->data, in, 0.0f, dB, 3); /* s·G·Aᵀ */
            ftb_gemm(1, 0, 3, in, out, scale, B->data, 3, W->grad, in, 0.0f, dA, in); /* s·Bᵀ·G */
            double errA = 0, refA = 1e-12, errB = 0, refB = 1e-12;
            for (int64_t j = 0; j < A->numel; j++) {
                errA = fmax(errA, fabs(A->grad[j] - dA[j]));
                refA = fmax(refA, fabs(dA[j]));
            }
            for (int64_t j = 0; j < B->numel; j++) {
                errB = fmax(errB, fabs(B->grad[j] - dB[j]));
                refB = fmax(refB, fabs(dB[j]));
            }
            cr_expect(errA / refA < 1e-4, "%s: max rel error %g", A->name, errA / refA);
            cr_expect(errB / refB < 1e-4, "%s: max rel error %g", B->name, errB / refB);
            free(dA);
            free(dB);
        }
    for (int i = 0; i < merged->n_params; i++) cr_assert_eq(m->params[i]->grad, NULL, "LoRA trained a base weight");
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_model_free(merged);
    ftb_plugin_close(&p);
}

Test(methods, lora_keeps_less_than_full_and_learns)
{
    ftb_plugin lora, full;
    th_open_method("lora", &lora);
    th_open_method("full", &full);
    int32_t tok[64], tgt[64];
    int64_t peak[2];
    ftb_plugin *methods[2] = { &full, &lora };
    for (int i = 0; i < 2; i++) {
        ftb_model *m = tiny_model(12);
        ftb_batch b = th_batch(tok, tgt, 1, 64, m->cfg.vocab_size);
        ftb_options none = { 0, NULL, NULL };
        ftb_session s = th_session(m, &none);
        s.lr = 1e-2f;
        char err[FTB_ERR_LEN] = "";
        ftb_mem_reset_peaks();
        ftb_mem_stats before;
        ftb_mem_get_stats(&before);
        void *st = methods[i]->method->init(&s, err, sizeof err);
        cr_assert_not_null(st, "%s", err);
        ftb_step_result r = { 0 }, first = { 0 };
        for (int step = 0; step < 15; step++) {
            cr_assert_eq(methods[i]->method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
            if (step == 0) first = r;
        }
        cr_expect_lt(r.loss, first.loss, "%s did not learn: %f -> %f", methods[i]->method->name, first.loss, r.loss);
        cr_expect_gt(r.t_forward, 0);
        ftb_mem_stats st_mem;
        ftb_mem_get_stats(&st_mem);
        peak[i] = st_mem.peak_total - before.live_total;
        methods[i]->method->destroy(st);
        ftb_model_free(m);
    }
    cr_expect_lt(peak[1], peak[0], "lora's peak %lld is not below full's %lld", (long long)peak[1], (long long)peak[0]);
    ftb_plugin_close(&lora);
    ftb_plugin_close(&full);
}

Test(methods, lastk_trains_only_its_blocks)
{
    ftb_plugin p;
    th_open_method("lastk", &p);
    ftb_model *m = tiny_model(13);
    const char *keys[] = { "k" }, *vals[] = { "1" };
    ftb_options opts = { 1, keys, vals };
    ftb_session s = th_session(m, &opts);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    for (int i = 0; i < m->n_params; i++) {
        int want = strncmp(m->params[i]->name, "model.layers.1.", 15) == 0 ||
                   strcmp(m->params[i]->name, "model.norm.weight") == 0;
        cr_expect_eq(m->params[i]->trainable, want, "%s trainable=%d", m->params[i]->name, m->params[i]->trainable);
    }
    p.method->destroy(st);
    const char *bad[] = { "0" };
    ftb_options bad_opts = { 1, keys, bad };
    s.options = &bad_opts;
    err[0] = 0;
    cr_expect_null(p.method->init(&s, err, sizeof err));
    cr_expect(strstr(err, "option k") != NULL, "error was: %s", err);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(methods, lora_rejects_bad_options_clearly)
{
    ftb_plugin p;
    th_open_method("lora", &p);
    ftb_model *m = tiny_model(14);
    struct {
        const char *key, *value, *expect;
    } cases[] = {
        { "rank", "abc", "option rank" },
        { "rank", "0", "option rank" },
        { "targets", "q,zz", "unknown linear layer 'zz'" },
        { "alpha", "1e999", "option alpha" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *keys[] = { cases[i].key }, *vals[] = { cases[i].value };
        ftb_options o = { 1, keys, vals };
        ftb_session s = th_session(m, &o);
        char err[FTB_ERR_LEN] = "";
        cr_expect_null(p.method->init(&s, err, sizeof err), "%s=%s accepted", cases[i].key, cases[i].value);
        cr_expect(strstr(err, cases[i].expect) != NULL, "%s=%s: error was '%s'", cases[i].key, cases[i].value, err);
    }
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* ---- LoRA with PEFT's lora_dropout (option dropout) --------------------- */

/* One training pass (dropout applies with this step's masks). */
static float train_loss(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o)
{
    char err[FTB_ERR_LEN] = "";
    float l = ftb_model_forward_backward(m, b, o, err, sizeof err);
    cr_assert(isfinite(l), "%s", err);
    return l;
}

/* With dropout the loss of one step is a fixed function of that step's
 * masks, so central differences check the exact gradient of the masked
 * model: A and B of the first and last adapter, and the four RMSNorm
 * weights (made trainable after init), whose gradients come through the
 * hooks' dx = (dh·A) ⊙ mask/(1 − p).  Also with blocks recomputed in
 * backward: the recomputed forward must draw the same masks. */
static void lora_dropout_gradcheck(ftb_keep_policy keep)
{
    ftb_plugin p;
    th_open_method("lora", &p);
    ftb_model *m = tiny_model(41);
    const char *keys[] = { "rank", "alpha", "targets", "dropout" }, *vals[] = { "3", "6", "all", "0.3" };
    ftb_options opts = { 4, keys, vals };
    ftb_session s = th_session(m, &opts);
    ftb_keep_policy policy[2] = { keep, keep };
    s.run.keep = policy;
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    ftb_rng rng;
    ftb_rng_seed(&rng, 8);
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < params[i]->numel; j++) params[i]->data[j] = 0.3f * ftb_rng_normal(&rng);
    const char *norms[] = { "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                            "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight" };
    ftb_tensor *check[8] = { params[0], params[1], params[n - 2], params[n - 1] };
    for (int i = 0; i < 4; i++) {
        check[4 + i] = ftb_model_find(m, norms[i]);
        check[4 + i]->trainable = 1;
    }
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    int32_t tok[2 * 16], tgt[2 * 16];
    ftb_batch b = th_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
    for (int i = 0; i < 8; i++) memset(check[i]->grad, 0, sizeof(float) * check[i]->numel);
    train_loss(m, &b, &s.run);
    int64_t jmax[8];
    double g[8];
    for (int i = 0; i < 8; i++) {
        jmax[i] = 0;
        for (int64_t j = 1; j < check[i]->numel; j++)
            if (fabsf(check[i]->grad[j]) > fabsf(check[i]->grad[jmax[i]])) jmax[i] = j;
        g[i] = check[i]->grad[jmax[i]];
    }
    for (int i = 0; i < 8; i++) {
        ftb_tensor *t = check[i];
        /* step 2e-3: at 1e-2 the curvature of layer 0's A and B (s·B·A is large
         * here) costs 3-5 % of truncation error */
        float w = t->data[jmax[i]], h = (float)(2e-3 * fmax(fabs(w), 1.0));
        t->data[jmax[i]] = w + h;
        double lp = train_loss(m, &b, &s.run);
        t->data[jmax[i]] = w - h;
        double lm = train_loss(m, &b, &s.run);
        t->data[jmax[i]] = w;
        double fd = (lp - lm) / (2.0 * h);
        cr_expect(fabs(fd - g[i]) <= fmax(2e-2 * fabs(fd), 1e-4), "[dropout 0.3%s] %s[%lld]: analytic %.6g, fd %.6g",
                  keep == FTB_KEEP_ALL ? "" : ", recomputed", t->name, (long long)jmax[i], g[i], fd);
        cr_expect(fabs(g[i]) > 5e-4, "%s: largest gradient %.3g is too small to check", t->name, g[i]);
        if (getenv("FTBENCH_GRADCHECK_VERBOSE"))
            fprintf(stderr, "[lora dropout] %-48s analytic %+.6e fd %+.6e\n", t->name, g[i], fd);
    }
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(methods, lora_dropout_gradients_match_finite_differences) { lora_dropout_gradcheck(FTB_KEEP_ALL); }
Test(methods, lora_dropout_gradients_match_finite_differences_recomputed) { lora_dropout_gradcheck(FTB_KEEP_INPUT); }

/* Saved-activation peak of one training pass of lora with the given dropout. */
static int64_t lora_saved_peak(const char *dropout, const ftb_batch *b)
{
    ftb_plugin p;
    th_open_method("lora", &p);
    ftb_model *m = tiny_model(42);
    const char *keys[] = { "rank", "targets", "dropout" }, *vals[] = { "4", "all", dropout };
    ftb_options opts = { 3, keys, vals };
    ftb_session s = th_session(m, &opts);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_mem_reset_peaks();
    ftb_mem_stats before, after;
    ftb_mem_get_stats(&before);
    train_loss(m, b, &s.run);
    ftb_mem_get_stats(&after);
    cr_assert_eq(after.live[FTB_MEM_SAVED], before.live[FTB_MEM_SAVED], "saved activations leaked");
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
    return after.peak[FTB_MEM_SAVED] - before.live[FTB_MEM_SAVED];
}

/* PEFT's memory with lora_dropout: each adapter keeps its own x_drop [N, in]
 * (4 bytes) and mask (1 byte), while the shared inputs the core kept for
 * dA (ln1, ln2, the SwiGLU output h) are no longer needed.  Per token and
 * layer, all 7 linears: 5·Σin − 4·(2D + F) bytes more; exact, at two lengths. */
Test(methods, lora_dropout_saved_bytes_grow_by_the_expected_amount)
{
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    const int64_t sum_in = 5 * (int64_t)cfg.dim + (int64_t)cfg.n_heads * cfg.head_dim + cfg.ffn_dim;
    const int64_t per_token = (int64_t)cfg.n_layers * (5 * sum_in - 4 * (2 * (int64_t)cfg.dim + cfg.ffn_dim));
    const int Ts[2] = { 32, 128 };
    for (int i = 0; i < 2; i++) {
        const int B = 2, T = Ts[i];
        int32_t *tok = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T);
        ftb_batch b = th_batch(tok, tgt, B, T, cfg.vocab_size);
        int64_t plain = lora_saved_peak("0", &b), dropped = lora_saved_peak("0.05", &b);
        cr_expect_eq(dropped - plain, per_token * B * T, "T=%d: dropout keeps %lld bytes more, expected %lld", T,
                     (long long)(dropped - plain), (long long)(per_token * B * T));
        free(tok);
        free(tgt);
    }
}

/* Inference is dropout-free; a training pass repeats its masks within a
 * step and draws new ones the next step; rate 1 is refused. */
Test(methods, lora_dropout_masks_and_inference)
{
    ftb_plugin p;
    th_open_method("lora", &p);
    ftb_model *m = tiny_model(43), *ref = tiny_model(43);
    const char *keys[] = { "rank", "dropout" }, *vals[] = { "4", "0.5" };
    ftb_options opts = { 2, keys, vals };
    const char *ref_vals[] = { "4", "0" };
    ftb_options ref_opts = { 2, keys, ref_vals };
    ftb_session s = th_session(m, &opts), rs = th_session(ref, &ref_opts);
    s.lr = rs.lr = 0.0f; /* steps change nothing but the masks */
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    void *rst = p.method->init(&rs, err, sizeof err);
    cr_assert(st && rst, "%s", err);
    ftb_tensor **params, **rparams;
    int n = p.method->trainable(st, &params);
    p.method->trainable(rst, &rparams);
    ftb_rng rng;
    ftb_rng_seed(&rng, 9);
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < params[i]->numel; j++)
            rparams[i]->data[j] = params[i]->data[j] = 0.3f * ftb_rng_normal(&rng);
    int32_t tok[2 * 16], tgt[2 * 16];
    ftb_batch b = th_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
    float inf = ftb_model_forward(m, &b, &s.run, err, sizeof err),
          inf_ref = ftb_model_forward(ref, &b, &rs.run, err, sizeof err);
    cr_expect_eq(inf, inf_ref, "inference with dropout 0.5: %f, without: %f", inf, inf_ref);
    float l1 = train_loss(m, &b, &s.run), l2 = train_loss(m, &b, &s.run);
    cr_expect_eq(l1, l2, "same step, different masks: %f vs %f", l1, l2);
    cr_expect_neq(l1, train_loss(ref, &b, &rs.run), "dropout 0.5 changed nothing");
    ftb_step_result r1 = { 0 }, r2 = { 0 };
    cr_assert_eq(p.method->step(st, &s, &b, &r1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.method->step(st, &s, &b, &r2, err, sizeof err), 0, "%s", err);
    cr_expect_neq(r1.loss, r2.loss, "two steps drew the same masks");
    p.method->destroy(st);
    p.method->destroy(rst);
    const char *bad[] = { "4", "1" };
    ftb_options bad_opts = { 2, keys, bad };
    ftb_session bs = th_session(m, &bad_opts);
    err[0] = 0;
    cr_expect_null(p.method->init(&bs, err, sizeof err));
    cr_expect(strstr(err, "option dropout: 1 is not in [0, 1)") != NULL, "error was: %s", err);
    ftb_model_free(m);
    ftb_model_free(ref);
    ftb_plugin_close(&p);
}
