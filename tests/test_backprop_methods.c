/* test_backprop_methods.c — the backprop family (ia3, gc, mesp, mebp),
 * loaded as a run loads them (dlopen from the methods directory) and checked
 * for what each claims:
 *   ia3   gradients exactly those of the row-scaled merged weight (chain
 *         rule on the core's full backward) and of finite differences;
 *   gc    gradients bitwise those of its inner method, with less saved;
 *   mesp  gradients bitwise lora's, no h = x·Aᵀ kept (exactly N·r·4 bytes
 *         per adapted linear less than lora), checkpoints in files;
 *   mebp  gradients bitwise lora's, block activations out of RAM;
 * and the saved-activation bytes of each equal the formulas of
 * docs/methods/<name>.md, byte for byte. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftbench.h"
#include "plugin.h"
#include "helpers.h"

#define MAX_OPTS 8

/* ---- helpers --------------------------------------------------------------- */

/* "tiny" (GQA, qkv biases), optionally with more blocks; weights std 0.2 so
 * that gradients are well above rounding. */
static ftb_model *tiny_model(uint64_t seed, int n_layers)
{
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    if (n_layers) cfg.n_layers = n_layers;
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, seed, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    for (int i = 0; i < m->n_params; i++)
        if (!strstr(m->params[i]->name, "norm"))
            for (int64_t j = 0; j < m->params[i]->numel; j++) m->params[i]->data[j] *= 10.0f;
    return m;
}

/* Options from a NULL-terminated "key=value" list, copied into l. */
typedef struct {
    const char *keys[MAX_OPTS], *values[MAX_OPTS];
    char buf[MAX_OPTS][128];
    ftb_options o;
} opt_list;

static void opts_of(opt_list *l, const char *const *kv)
{
    memset(l, 0, sizeof *l);
    int n = 0;
    for (; kv && kv[n]; n++) {
        cr_assert_lt(n, MAX_OPTS);
        snprintf(l->buf[n], sizeof l->buf[n], "%s", kv[n]);
        char *eq = strchr(l->buf[n], '=');
        cr_assert_not_null(eq, "option '%s' has no '='", kv[n]);
        *eq = 0;
        l->keys[n] = l->buf[n];
        l->values[n] = eq + 1;
    }
    l->o = (ftb_options){ n, l->keys, l->values };
}

/* What one step of a method did: its loss, every trainable tensor's
 * gradient in the method's order, the saved-activation peak (resident),
 * the offloaded peak, and the trainable values right after init. */
typedef struct {
    float loss;
    int n_tensors;
    int64_t n_values;
    float *grads, *init_values;
    int64_t saved_peak, offload_peak;
} step_record;

static void free_record(step_record *r)
{
    free(r->grads);
    free(r->init_values);
    memset(r, 0, sizeof *r);
}

/* Gives every trainable tensor seeded values (LoRA's B starts at zero, which
 * would make dA zero and the comparison empty); scaling vectors (1-D) stay
 * near one. */
static void randomize_trainable(ftb_tensor **t, int n, uint64_t seed)
{
    ftb_rng rng;
    ftb_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < t[i]->numel; j++)
            t[i]->data[j] = t[i]->ndim == 1 ? 1.0f + 0.3f * ftb_rng_normal(&rng) : 0.3f * ftb_rng_normal(&rng);
}

/* One step of `method` with `kv` options on a fresh tiny model. */
static step_record run_one_step(const char *method, const char *const *kv, int n_layers, int B, int T, int randomize)
{
    ftb_plugin p;
    th_open_method(method, &p);
    ftb_model *m = tiny_model(21, n_layers);
    opt_list ol;
    opts_of(&ol, kv);
    ftb_session s = th_session(m, &ol.o);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s: %s", method, err);
    step_record r = { 0 };
    ftb_tensor **t;
    r.n_tensors = p.method->trainable(st, &t);
    cr_assert_gt(r.n_tensors, 0, "%s lists no trainable tensors", method);
    for (int i = 0; i < r.n_tensors; i++) r.n_values += t[i]->numel;
    r.init_values = malloc(sizeof(float) * r.n_values);
    for (int i = 0, off = 0; i < r.n_tensors; off += (int)t[i]->numel, i++)
        memcpy(r.init_values + off, t[i]->data, sizeof(float) * t[i]->numel);
    if (randomize) randomize_trainable(t, r.n_tensors, 77);

    int32_t *tok = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T);
    ftb_batch b = th_batch(tok, tgt, B, T, m->cfg.vocab_size);
    ftb_mem_reset_peaks();
    ftb_offload_reset_peak();
    ftb_mem_stats before, after;
    ftb_mem_get_stats(&before);
    cr_assert_eq(before.live[FTB_MEM_SAVED], 0);
    ftb_step_result res = { 0 };
    cr_assert_eq(p.method->step(st, &s, &b, &res, err, sizeof err), 0, "%s step: %s", method, err);
    ftb_mem_get_stats(&after);
    r.loss = res.loss;
    r.saved_peak = after.peak[FTB_MEM_SAVED];
    r.offload_peak = ftb_offload_peak();
    cr_expect_eq(after.live[FTB_MEM_SAVED], 0, "%s left saved activations behind", method);
    cr_expect_eq(ftb_offload_live(), 0, "%s left offloaded checkpoints behind", method);
    r.grads = malloc(sizeof(float) * r.n_values);
    for (int i = 0, off = 0; i < r.n_tensors; off += (int)t[i]->numel, i++)
        memcpy(r.grads + off, t[i]->grad, sizeof(float) * t[i]->numel);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
    free(tok);
    free(tgt);
    return r;
}

static double max_rel_diff(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 1e-12;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / den;
}

static void expect_same_gradients(const step_record *a, const step_record *b, const char *what)
{
    cr_assert_eq(a->n_values, b->n_values, "%s: %lld vs %lld trainable values", what, (long long)a->n_values,
                 (long long)b->n_values);
    cr_expect_eq(a->loss, b->loss, "%s: loss %.9g vs %.9g", what, a->loss, b->loss);
    cr_expect_eq(memcmp(a->grads, b->grads, sizeof(float) * a->n_values), 0, "%s: gradients differ (max rel %g)", what,
                 max_rel_diff(a->grads, b->grads, a->n_values));
    double norm = 0;
    for (int64_t i = 0; i < a->n_values; i++) norm += fabs(a->grads[i]);
    cr_expect_gt(norm, 0.0, "%s: all gradients are zero, the comparison says nothing", what);
}

/* ---- memory formulas (docs/methods/<name>.md), in floats ------------------------- */

typedef struct {
    int64_t N, D, Q, KV, F, BHT, L;
} dims;

static dims dims_of(const ftb_model *m, int B, int T)
{
    const ftb_config *c = &m->cfg;
    dims d = { (int64_t)B * T,
               c->dim,
               (int64_t)c->n_heads * c->head_dim,
               (int64_t)c->n_kv_heads * c->head_dim,
               c->ffn_dim,
               (int64_t)B * c->n_heads * T,
               c->n_layers };
    return d;
}

/* What a frozen-base block keeps under FTB_KEEP_ALL, input excluded:
 * rstd1, rstd2, q, k, v, att, x_mid, g, u and the flash lse, plus the
 * inputs the hooks or trained weights need: ln1 (q/k/v), ln2 (gate/up),
 * h (down).  LoRA on all seven linears needs all three. */
static int64_t frozen_block_floats(dims d, int keep_ln1, int keep_ln2, int keep_h)
{
    return d.N * (2 + 2 * d.Q + 2 * d.KV + d.D + 2 * d.F) + d.BHT + keep_ln1 * d.N * d.D + keep_ln2 * d.N * d.D +
           keep_h * d.N * d.F;
}

/* Every block FTB_KEEP_ALL: L blocks and their inputs, the final norm's
 * input and output and its rstd, all alive at the end of forward. */
static int64_t keep_all_peak_floats(dims d, int64_t block) { return d.L * (block + d.N * d.D) + 2 * d.N * d.D + d.N; }

/* Every block recomputed, inputs on the heap: the larger of the end of
 * forward (L+1 inputs, final norm) and the recompute of the top block
 * (L inputs, rstd of the final norm, one block's activations). */
static int64_t recompute_peak_floats(dims d, int64_t block)
{
    int64_t fwd = (d.L + 1) * d.N * d.D + d.N * d.D + d.N, bwd = d.L * d.N * d.D + d.N + block;
    return fwd > bwd ? fwd : bwd;
}

/* Inputs of blocks 1..L-1 in files: block 0's input (the embedding output)
 * and the final norm's stay on the heap. */
static int64_t offload_peak_floats(dims d, int64_t block)
{
    int64_t fwd = 3 * d.N * d.D + d.N, bwd = d.N * d.D + d.N + block;
    return fwd > bwd ? fwd : bwd;
}

/* ---- ia3 -------------------------------------------------------------------- */

/* IA3 on a linear is the linear with its rows (and bias) scaled: W' = diag(l)·W,
 * b' = l ⊙ b.  With G = dL/dW' and g = dL/db' from the core's full backward
 * on that merged model, dL/dl_j = Σ_i G[j,i]·W[j,i] + g_j·b_j: the chain rule,
 * independent of the hook's own backward. */
Test(backprop, ia3_gradients_equal_the_row_scaled_weight_chain_rule)
{
    ftb_plugin p;
    th_open_method("ia3", &p);
    ftb_model *m = tiny_model(11, 0), *merged = tiny_model(11, 0);
    const char *kv[] = { "targets=all", NULL };
    opt_list ol;
    opts_of(&ol, kv);
    ftb_session s = th_session(m, &ol.o);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **l;
    int n = p.method->trainable(st, &l);
    cr_assert_eq(n, FTB_LIN_COUNT * m->cfg.n_layers);
    randomize_trainable(l, n, 3);

    int32_t tok[2 * 20], tgt[2 * 20];
    ftb_batch b = th_batch(tok, tgt, 2, 20, m->cfg.vocab_size);
    float loss = ftb_model_forward_backward(m, &b, &s.run, err, sizeof err);
    cr_assert(!isnan(loss), "%s", err);

    for (int layer = 0; layer < m->cfg.n_layers; layer++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            ftb_tensor *scale = l[layer * FTB_LIN_COUNT + k];
            ftb_tensor *W = ftb_layer_weight(&merged->layers[layer], k);
            ftb_tensor *bias = ftb_layer_bias(&merged->layers[layer], k);
            for (int64_t j = 0; j < W->shape[0]; j++) {
                for (int64_t i = 0; i < W->shape[1]; i++) W->data[j * W->shape[1] + i] *= scale->data[j];
                if (bias->numel) bias->data[j] *= scale->data[j];
            }
        }
    ftb_model_set_trainable(merged, 1);
    cr_assert_eq(ftb_model_alloc_grads(merged, err, sizeof err), 0, "%s", err);
    float merged_loss = ftb_model_forward_backward(merged, &b, NULL, err, sizeof err);
    cr_expect(fabsf(loss - merged_loss) < 1e-5f * fabsf(merged_loss), "IA3 loss %f, merged %f", loss, merged_loss);

    int with_bias = 0;
    for (int layer = 0; layer < m->cfg.n_layers; layer++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            ftb_tensor *scale = l[layer * FTB_LIN_COUNT + k];
            ftb_tensor *W = ftb_layer_weight(&m->layers[layer], k), *bias = ftb_layer_bias(&m->layers[layer], k);
            ftb_tensor *Wm = ftb_layer_weight(&merged->layers[layer], k);
            ftb_tensor *bm = ftb_layer_bias(&merged->layers[layer], k);
            double err_max = 0, ref = 1e-12;
            for (int64_t j = 0; j < W->shape[0]; j++) {
                double want = 0;
                for (int64_t i = 0; i < W->shape[1]; i++)
                    want += (double)Wm->grad[j * W->shape[1] + i] * W->data[j * W->shape[1] + i];
                if (bias->numel) want += (double)bm->grad[j] * bias->data[j];
                err_max = fmax(err_max, fabs(scale->grad[j] - want));
                ref = fmax(ref, fabs(want));
            }
            with_bias += bias->numel > 0;
            cr_expect(err_max / ref < 1e-4, "%s: max rel error %g", scale->name, err_max / ref);
            cr_expect_gt(ref, 1e-6, "%s: gradient is zero", scale->name);
        }
    cr_expect_gt(with_bias, 0, "no biased linear was checked");
    for (int i = 0; i < m->n_params; i++) cr_assert_null(m->params[i]->grad, "IA3 trained a base weight");
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_model_free(merged);
    ftb_plugin_close(&p);
}

/* Central differences on the (inference-mode) loss, for the largest-gradient
 * entry and one other entry of every vector, as tests/test_gradcheck.c does
 * for the core: fp32 loss, so a large step and a loose tolerance. */
Test(backprop, ia3_gradients_match_finite_differences)
{
    ftb_plugin p;
    th_open_method("ia3", &p);
    ftb_model *m = tiny_model(12, 0);
    ftb_options none = { 0, NULL, NULL };
    ftb_session s = th_session(m, &none);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **l;
    int n = p.method->trainable(st, &l);
    cr_assert_eq(n, 3 * m->cfg.n_layers, "default targets are k, v and up");
    randomize_trainable(l, n, 4);
    int32_t tok[2 * 6], tgt[2 * 6];
    ftb_batch b = th_batch(tok, tgt, 2, 6, m->cfg.vocab_size);
    cr_assert(!isnan(ftb_model_forward_backward(m, &b, &s.run, err, sizeof err)), "%s", err);
    for (int t = 0; t < n; t++) {
        int64_t largest = 0;
        for (int64_t j = 1; j < l[t]->numel; j++)
            if (fabsf(l[t]->grad[j]) > fabsf(l[t]->grad[largest])) largest = j;
        int64_t entries[2] = { largest, (largest + 5) % l[t]->numel };
        for (int e = 0; e < 2; e++) {
            float *w = &l[t]->data[entries[e]], w0 = *w;
            const double h = 1e-2 * fmax(fabs(w0), 1.0);
            *w = (float)(w0 + h);
            double up = ftb_model_forward(m, &b, &s.run, err, sizeof err);
            *w = (float)(w0 - h);
            double down = ftb_model_forward(m, &b, &s.run, err, sizeof err);
            *w = w0;
            double fd = (up - down) / (2 * h), g = l[t]->grad[entries[e]];
            cr_expect(fabs(fd - g) <= fmax(2e-2 * fabs(fd), 1e-4), "%s[%lld]: analytic %g, finite differences %g",
                      l[t]->name, (long long)entries[e], g, fd);
        }
    }
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(backprop, ia3_starts_as_the_base_model_and_keeps_base_outputs_not_inputs)
{
    ftb_plugin p;
    th_open_method("ia3", &p);
    ftb_model *m = tiny_model(13, 0);
    int32_t tok[2 * 24], tgt[2 * 24];
    ftb_batch b = th_batch(tok, tgt, 2, 24, m->cfg.vocab_size);
    char err[FTB_ERR_LEN] = "";
    float base = ftb_model_forward(m, &b, NULL, err, sizeof err);
    ftb_options none = { 0, NULL, NULL };
    ftb_session s = th_session(m, &none);
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    cr_expect_eq(ftb_model_forward(m, &b, &s.run, err, sizeof err), base, "IA3 at init changed the model");
    ftb_tensor **l;
    int n = p.method->trainable(st, &l);
    const ftb_config *c = &m->cfg;
    for (int i = 0; i < n; i++) {
        int64_t want = i % 3 == 2 ? c->ffn_dim : c->n_kv_heads * c->head_dim;
        cr_expect_eq(l[i]->numel, want, "%s has %lld entries", l[i]->name, (long long)l[i]->numel);
        for (int64_t j = 0; j < l[i]->numel; j++) cr_assert_eq(l[i]->data[j], 1.0f);
    }
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);

    /* k, v, up hooked: the base outputs of those three kept, no ln1 or ln2. */
    step_record r = run_one_step("ia3", NULL, 4, 2, 24, 1);
    ftb_model *shape = tiny_model(1, 4);
    dims d = dims_of(shape, 2, 24);
    int64_t block = frozen_block_floats(d, 0, 0, 0) + d.N * (2 * d.KV + d.F);
    cr_expect_eq(r.saved_peak, 4 * keep_all_peak_floats(d, block), "ia3 saved %lld bytes, formula %lld",
                 (long long)r.saved_peak, (long long)(4 * keep_all_peak_floats(d, block)));
    free_record(&r);
    ftb_model_free(shape);
}

/* ---- gc --------------------------------------------------------------------- */

Test(backprop, gc_around_lora_gives_lora_gradients_bitwise_with_less_saved)
{
    const char *lora_kv[] = { "rank=3", "alpha=6", "targets=q,v,o,down", NULL };
    const char *gc_kv[] = { "inner=lora", "inner.rank=3", "alpha=6", "targets=q,v,o,down", NULL };
    step_record plain = run_one_step("lora", lora_kv, 4, 2, 24, 1);
    step_record gc = run_one_step("gc", gc_kv, 4, 2, 24, 1);
    expect_same_gradients(&gc, &plain, "gc(lora) vs lora");
    cr_expect_lt(gc.saved_peak, plain.saved_peak, "gc saved %lld, lora %lld", (long long)gc.saved_peak,
                 (long long)plain.saved_peak);
    free_record(&plain);
    free_record(&gc);
}

Test(backprop, gc_around_full_and_ia3_gives_their_gradients_bitwise_with_less_saved)
{
    const char *inner[] = { "full", "ia3" };
    for (int i = 0; i < 2; i++) {
        char opt[64];
        snprintf(opt, sizeof opt, "inner=%s", inner[i]);
        const char *gc_kv[] = { opt, NULL };
        step_record plain = run_one_step(inner[i], NULL, 4, 2, 24, i == 1);
        step_record gc = run_one_step("gc", gc_kv, 4, 2, 24, i == 1);
        char what[64];
        snprintf(what, sizeof what, "gc(%s) vs %s", inner[i], inner[i]);
        expect_same_gradients(&gc, &plain, what);
        cr_expect_lt(gc.saved_peak, plain.saved_peak, "%s: saved %lld vs %lld", what, (long long)gc.saved_peak,
                     (long long)plain.saved_peak);
        free_record(&plain);
        free_record(&gc);
    }
}

/* lars is another engineer's plugin: checked when it is built. */
Test(backprop, gc_around_lars_gives_lars_gradients_bitwise)
{
    const char *dir = getenv("FTBENCH_METHODS");
    char path[4096];
    snprintf(path, sizeof path, "%s/lars.so", dir ? dir : "build/methods");
    FILE *f = fopen(path, "rb");
    if (!f) cr_skip_test("no lars.so in %s", dir ? dir : "build/methods");
    fclose(f);
    const char *gc_kv[] = { "inner=lars", NULL };
    step_record plain = run_one_step("lars", NULL, 4, 2, 24, 0);
    step_record gc = run_one_step("gc", gc_kv, 4, 2, 24, 0);
    expect_same_gradients(&gc, &plain, "gc(lars) vs lars");
    cr_expect_leq(gc.saved_peak, plain.saved_peak, "gc saved %lld, lars %lld", (long long)gc.saved_peak,
                  (long long)plain.saved_peak);
    free_record(&plain);
    free_record(&gc);
}

Test(backprop, gc_sets_every_block_to_recompute_and_passes_options_through)
{
    ftb_plugin p;
    th_open_method("gc", &p);
    ftb_model *m = tiny_model(14, 3);
    const char *kv[] = { "rank=2", "inner.rank=5", NULL }; /* the prefixed one wins */
    opt_list ol;
    opts_of(&ol, kv);
    ftb_session s = th_session(m, &ol.o);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    cr_assert_not_null(s.run.keep);
    for (int l = 0; l < 3; l++) cr_expect_eq(s.run.keep[l], FTB_KEEP_INPUT, "block %d", l);
    cr_expect_eq(s.options, &ol.o, "gc did not give the host its options back");
    ftb_tensor **t;
    int n = p.method->trainable(st, &t);
    cr_assert_eq(n, 2 * 7 * 3);
    cr_expect_eq(t[0]->shape[0], 5, "lora_A has rank %lld", (long long)t[0]->shape[0]);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* ---- mesp ------------------------------------------------------------------- */

Test(backprop, mesp_gives_lora_gradients_bitwise_under_every_checkpoint_policy)
{
    const char *lora_kv[] = { "rank=4", "alpha=8", NULL };
    step_record lora = run_one_step("lora", lora_kv, 3, 2, 24, 1);
    step_record lora_init = run_one_step("lora", lora_kv, 3, 2, 24, 0);
    const char *policy[] = { "offload", "recompute", "none" };
    for (int i = 0; i < 3; i++) {
        char opt[64];
        snprintf(opt, sizeof opt, "checkpoint=%s", policy[i]);
        const char *kv[] = { "rank=4", "alpha=8", opt, NULL };
        step_record mesp = run_one_step("mesp", kv, 3, 2, 24, 1);
        char what[64];
        snprintf(what, sizeof what, "mesp(%s) vs lora", policy[i]);
        expect_same_gradients(&mesp, &lora, what);
        cr_expect_eq(memcmp(mesp.init_values, lora.init_values, sizeof(float) * lora.n_values), 0,
                     "%s: initial adapters differ", what);
        free_record(&mesp);
    }
    /* and with lora's own initialisation (B = 0: only dB is nonzero) */
    const char *kv[] = { "rank=4", "alpha=8", NULL };
    step_record mesp_init = run_one_step("mesp", kv, 3, 2, 24, 0);
    expect_same_gradients(&mesp_init, &lora_init, "mesp vs lora from init");
    free_record(&mesp_init);
    free_record(&lora_init);
    free_record(&lora);
}

Test(backprop, mesp_keeps_less_than_lora_and_offloads_checkpoints)
{
    step_record lora = run_one_step("lora", NULL, 4, 2, 24, 1);
    step_record mesp = run_one_step("mesp", NULL, 4, 2, 24, 1);
    cr_expect_lt(mesp.saved_peak, lora.saved_peak, "mesp saved %lld, lora %lld", (long long)mesp.saved_peak,
                 (long long)lora.saved_peak);
    cr_expect_gt(mesp.offload_peak, 0, "mesp offloaded nothing");
    cr_expect_eq(lora.offload_peak, 0);
    free_record(&lora);
    free_record(&mesp);
}

/* The test that fails if mesp stored h = x·Aᵀ: with every block keeping all
 * it needs (checkpoint=none), mesp keeps exactly lora's activations minus
 * one [N, r] float buffer per adapted linear. */
Test(backprop, mesp_keeps_exactly_one_n_by_r_less_per_adapted_linear_than_lora)
{
    const int B = 2, T = 24, L = 3;
    const char *targets[] = { "q,k,v,o,gate,up,down", "v,down" };
    const int per_layer[] = { 7, 2 };
    for (int i = 0; i < 2; i++) {
        char t[64];
        snprintf(t, sizeof t, "targets=%s", targets[i]);
        const char *lora_kv[] = { "rank=5", t, NULL }, *mesp_kv[] = { "rank=5", t, "checkpoint=none", NULL };
        step_record lora = run_one_step("lora", lora_kv, L, B, T, 1);
        step_record mesp = run_one_step("mesp", mesp_kv, L, B, T, 1);
        int64_t want = (int64_t)L * per_layer[i] * B * T * 5 * 4;
        cr_expect_eq(lora.saved_peak - mesp.saved_peak, want, "targets %s: lora %lld - mesp %lld != %lld", targets[i],
                     (long long)lora.saved_peak, (long long)mesp.saved_peak, (long long)want);
        cr_expect_eq(mesp.offload_peak, 0, "checkpoint=none offloaded");
        free_record(&lora);
        free_record(&mesp);
    }
}

/* ---- mebp ------------------------------------------------------------------- */

Test(backprop, mebp_gives_lora_gradients_bitwise_with_block_activations_out_of_ram)
{
    const int B = 2, T = 24, L = 4;
    const char *kv[] = { "rank=4", "alpha=8", NULL };
    step_record lora = run_one_step("lora", kv, L, B, T, 1);
    step_record mebp = run_one_step("mebp", kv, L, B, T, 1);
    expect_same_gradients(&mebp, &lora, "mebp vs lora");
    ftb_model *shape = tiny_model(1, L);
    dims d = dims_of(shape, B, T);
    /* one block's activations (LoRA on all seven: ln1, ln2, h kept, + 7 h's) */
    int64_t block_bytes = 4 * (frozen_block_floats(d, 1, 1, 1) + 7 * d.N * 4);
    cr_expect_geq(lora.saved_peak - mebp.saved_peak, (L - 1) * block_bytes,
                  "lora saved %lld, mebp %lld: less than %d blocks' activations (%lld each) apart",
                  (long long)lora.saved_peak, (long long)mebp.saved_peak, L - 1, (long long)block_bytes);
    cr_expect_eq(mebp.offload_peak, (L - 1) * d.N * d.D * 4, "offloaded %lld bytes", (long long)mebp.offload_peak);
    ftb_model_free(shape);
    free_record(&lora);
    free_record(&mebp);
}

Test(backprop, mebp_documents_every_lora_option_with_lora_defaults)
{
    ftb_plugin lora, mebp;
    th_open_method("lora", &lora);
    th_open_method("mebp", &mebp);
    for (const ftb_option_doc *d = lora.method->options; d->name; d++) {
        const ftb_option_doc *e = mebp.method->options;
        while (e->name && strcmp(e->name, d->name)) e++;
        cr_expect_not_null(e->name, "mebp does not list lora's option %s", d->name);
        if (e->name) cr_expect_str_eq(e->default_value, d->default_value, "option %s", d->name);
    }
    ftb_plugin_close(&lora);
    ftb_plugin_close(&mebp);
}

/* ---- memory formulas ------------------------------------------------------- */

/* The saved-activation peak of each method, byte for byte, against the
 * formulas of docs/methods/{lora,mesp,mebp,gc,full}.md. */
Test(backprop, saved_peaks_equal_the_documented_formulas)
{
    const int B = 2, T = 24, L = 4, r = 8;
    ftb_model *shape = tiny_model(1, L);
    dims d = dims_of(shape, B, T);
    ftb_model_free(shape);
    const int64_t lora_block = frozen_block_floats(d, 1, 1, 1) + 7 * d.N * r; /* + h = x·Aᵀ per linear */
    const int64_t mesp_block = frozen_block_floats(d, 1, 1, 1);
    const int64_t full_block = frozen_block_floats(d, 1, 1, 1); /* trained weights need the same inputs */
    struct {
        const char *method;
        const char *kv[3];
        int64_t floats;
    } cases[] = {
        { "lora", { NULL }, keep_all_peak_floats(d, lora_block) },
        { "full", { NULL }, keep_all_peak_floats(d, full_block) },
        { "mesp", { "checkpoint=none", NULL }, keep_all_peak_floats(d, mesp_block) },
        { "mesp", { "checkpoint=recompute", NULL }, recompute_peak_floats(d, mesp_block) },
        { "mesp", { NULL }, offload_peak_floats(d, mesp_block) },
        { "mebp", { NULL }, offload_peak_floats(d, lora_block) },
        { "gc", { NULL }, recompute_peak_floats(d, lora_block) },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        step_record rec = run_one_step(cases[i].method, cases[i].kv, L, B, T, 0);
        cr_expect_eq(rec.saved_peak, 4 * cases[i].floats, "%s %s: saved peak %lld bytes, formula %lld", cases[i].method,
                     cases[i].kv[0] ? cases[i].kv[0] : "", (long long)rec.saved_peak, (long long)(4 * cases[i].floats));
        free_record(&rec);
    }
}

/* ---- bad options ------------------------------------------------------------ */

Test(backprop, bad_options_give_clear_errors)
{
    struct {
        const char *method, *kv, *expect;
    } cases[] = {
        { "ia3", "targets=k,zz", "unknown linear layer 'zz'" },
        { "ia3", "weight_decay=x", "option weight_decay" },
        { "gc", "inner=nosuch", "no nosuch.so in" },
        { "gc", "inner=gc", "option inner" },
        { "gc", "inner=../lora", "option inner" },
        { "gc", "inner.rank=abc", "option rank" },
        { "gc", "rank=0", "option rank" },
        { "gc", "inner.=3", "no option name" },
        { "gc", "bogus=1", "the inner method lora has no option 'bogus'" },
        { "mesp", "checkpoint=disk", "option checkpoint: 'disk'" },
        { "mesp", "rank=0", "option rank" },
        { "mesp", "targets=", "option targets" },
        { "mesp", "offload_dir=/nonexistent-dir", "option offload_dir: '/nonexistent-dir'" },
        { "mebp", "offload_dir=/nonexistent-dir", "option offload_dir" },
        { "mebp", "rank=abc", "option rank" },
        { "mebp", "checkpoint=none", "mebp has no option 'checkpoint'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ftb_plugin p;
        th_open_method(cases[i].method, &p);
        ftb_model *m = tiny_model(15, 0);
        const char *kv[] = { cases[i].kv, NULL };
        opt_list ol;
        opts_of(&ol, kv);
        ftb_session s = th_session(m, &ol.o);
        char err[FTB_ERR_LEN] = "";
        void *st = p.method->init(&s, err, sizeof err);
        cr_expect_null(st, "%s %s accepted", cases[i].method, cases[i].kv);
        cr_expect_null(s.run.keep, "%s %s: a failed init left a keep policy in the session", cases[i].method,
                       cases[i].kv);
        if (st) p.method->destroy(st);
        cr_expect(strstr(err, cases[i].expect) != NULL, "%s %s: error was '%s'", cases[i].method, cases[i].kv, err);
        ftb_mem_stats ms;
        ftb_mem_get_stats(&ms);
        cr_expect_eq(ms.live[FTB_MEM_TRAINABLE] + ms.live[FTB_MEM_GRADS] + ms.live[FTB_MEM_OPTIM], 0,
                     "%s %s: a failed init left memory behind", cases[i].method, cases[i].kv);
        ftb_model_free(m);
        ftb_plugin_close(&p);
    }
    /* gc with full: rank is not full's option */
    ftb_plugin p;
    th_open_method("gc", &p);
    ftb_model *m = tiny_model(16, 0);
    const char *kv[] = { "inner=full", "rank=3", NULL };
    opt_list ol;
    opts_of(&ol, kv);
    ftb_session s = th_session(m, &ol.o);
    char err[FTB_ERR_LEN] = "";
    cr_expect_null(p.method->init(&s, err, sizeof err));
    cr_expect(strstr(err, "inner method full has no option 'rank'") != NULL, "error was '%s'", err);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* A missing inner plugin is named, with where it was looked for: lars is
 * written elsewhere and may not be built. */
Test(backprop, gc_names_a_missing_inner_plugin_and_its_directory)
{
    ftb_plugin p;
    th_open_method("gc", &p);
    ftb_model *m = tiny_model(17, 0);
    const char *kv[] = { "inner=not-built-yet", NULL };
    opt_list ol;
    opts_of(&ol, kv);
    ftb_session s = th_session(m, &ol.o);
    char err[FTB_ERR_LEN] = "";
    cr_expect_null(p.method->init(&s, err, sizeof err));
    const char *dir = getenv("FTBENCH_METHODS");
    cr_expect(strstr(err, "inner method 'not-built-yet' is not available") != NULL, "error was '%s'", err);
    if (dir) cr_expect(strstr(err, dir) != NULL, "error '%s' does not name %s", err, dir);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}
