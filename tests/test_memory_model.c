/* test_memory_model.c — the analytic memory model (models/memory_model.c)
 * against the core's own accounting: for every schedule the core can run
 * (full training, a frozen base trained from a middle block up, blocks
 * recomputed or offloaded, eager attention, the full loss, inference, a
 * quantized base), the predicted peak of a step equals the measured one,
 * byte for byte, and so does its split by category. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ftbench.h"

typedef struct {
    int32_t *tokens, *targets;
    ftb_batch batch;
} mm_batch;

static mm_batch mm_make_batch(int vocab, int B, int T)
{
    mm_batch b = { malloc(sizeof(int32_t) * B * T), malloc(sizeof(int32_t) * B * T), { 0 } };
    for (int i = 0; i < B * T; i++) b.tokens[i] = (int32_t)((i * 7919) % vocab);
    for (int i = 0; i < B * T; i++) b.targets[i] = (i + 1) % T ? b.tokens[i + 1] : FTB_IGNORE_INDEX;
    b.batch = (ftb_batch){ B, T, b.tokens, b.targets };
    return b;
}

static ftb_model *mm_model(const char *name)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get(name, &cfg), 0);
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, 7, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    return m;
}

/* Runs one step of m and requires the measured peak to be the predicted one. */
static void expect_prediction(ftb_model *m, const ftb_run_opts *o, int B, int T, int training, const char *what)
{
    char err[FTB_ERR_LEN] = "";
    mm_batch b = mm_make_batch(m->cfg.vocab_size, B, T);
    ftb_memory_estimate est;
    ftb_memory_estimate_step(m, o, B, T, training, NULL, &est);
    ftb_mem_reset_peaks();
    float loss = training ? ftb_model_forward_backward(m, &b.batch, o, err, sizeof err)
                          : ftb_model_forward(m, &b.batch, o, err, sizeof err);
    cr_assert(loss == loss, "%s: %s", what, err);
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    cr_expect_eq(est.peak_total, st.peak_total, "%s: predicted peak %lld bytes (at %s), measured %lld", what,
                 (long long)est.peak_total, est.peak_phase, (long long)st.peak_total);
    for (int c = 0; c < FTB_MEM_NCAT; c++)
        cr_expect_eq(est.at_peak[c], st.peak_total_at[c], "%s: %s at the peak: predicted %lld, measured %lld", what,
                     ftb_mem_category_name((ftb_mem_category)c), (long long)est.at_peak[c],
                     (long long)st.peak_total_at[c]);
    cr_expect_eq(est.saved_peak, st.peak[FTB_MEM_SAVED], "%s: saved peak predicted %lld, measured %lld", what,
                 (long long)est.saved_peak, (long long)st.peak[FTB_MEM_SAVED]);
    free(b.tokens);
    free(b.targets);
}

static void train_all(ftb_model *m)
{
    char err[FTB_ERR_LEN];
    ftb_model_set_trainable(m, 1);
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
}

/* Only block l's query projection trains: blocks below run in inference mode. */
static void train_one_linear(ftb_model *m, int l)
{
    char err[FTB_ERR_LEN];
    m->layers[l].wq.trainable = 1;
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
}

Test(memory_model, full_training_flash_and_chunked_loss)
{
    ftb_model *m = mm_model("tiny");
    train_all(m);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    expect_prediction(m, &o, 2, 24, 1, "full, flash, chunked");
    o.loss_chunk_rows = 7;
    expect_prediction(m, &o, 1, 40, 1, "full, chunks of 7 rows");
    ftb_model_free(m);
}

Test(memory_model, eager_attention_and_full_loss)
{
    ftb_model *m = mm_model("tiny");
    train_all(m);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    o.attention = FTB_ATTN_EAGER;
    o.loss = FTB_LOSS_FULL;
    expect_prediction(m, &o, 2, 20, 1, "full, eager, full loss");
    ftb_model_free(m);
}

Test(memory_model, frozen_base_trained_from_a_middle_block)
{
    ftb_model *m = mm_model("tiny");
    train_one_linear(m, m->cfg.n_layers - 1);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    expect_prediction(m, &o, 2, 16, 1, "top block's wq only");
    ftb_model_free(m);
}

Test(memory_model, recomputed_and_offloaded_blocks)
{
    ftb_model *m = mm_model("tiny");
    for (int l = 0; l < m->cfg.n_layers; l++) m->layers[l].wv.trainable = 1;
    char err[FTB_ERR_LEN];
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    ftb_keep_policy *keep = calloc((size_t)m->cfg.n_layers, sizeof *keep);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    o.keep = keep;
    for (int l = 0; l < m->cfg.n_layers; l++) keep[l] = FTB_KEEP_INPUT;
    expect_prediction(m, &o, 2, 16, 1, "every block recomputed");
    for (int l = 0; l < m->cfg.n_layers; l++) keep[l] = l % 2 ? FTB_KEEP_OFFLOAD : FTB_KEEP_ALL;
    expect_prediction(m, &o, 1, 32, 1, "odd blocks offloaded, even kept");
    free(keep);
    ftb_model_free(m);
}

Test(memory_model, inference_forward)
{
    ftb_model *m = mm_model("tiny");
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    expect_prediction(m, &o, 3, 17, 0, "inference");
    ftb_model_free(m);
}

Test(memory_model, quantized_base_with_trained_norms)
{
    ftb_model *m = mm_model("tiny");
    char err[FTB_ERR_LEN];
    cr_assert_eq(ftb_model_quantize(m, "int4", 32, err, sizeof err), 0, "%s", err);
    for (int l = 0; l < m->cfg.n_layers; l++) m->layers[l].attn_norm.trainable = m->layers[l].mlp_norm.trainable = 1;
    m->final_norm.trainable = 1;
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    expect_prediction(m, &o, 2, 16, 1, "int4 base, norms trained");
    ftb_model_free(m);
}

/* The model must notice when the schedule changes: a method keeping more
 * than the core does (hook bytes) moves the prediction by exactly that. */
Test(memory_model, hook_bytes_add_to_the_saved_peak)
{
    ftb_model *m = mm_model("tiny");
    train_all(m);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    ftb_memory_estimate a, b;
    ftb_memory_estimate_step(m, &o, 1, 8, 1, NULL, &a);
    int64_t *row = calloc((size_t)m->cfg.n_layers * FTB_LIN_COUNT, sizeof *row);
    /* Hook bytes count only where a hook is attached: none is, so no change. */
    for (int i = 0; i < m->cfg.n_layers * FTB_LIN_COUNT; i++) row[i] = 100;
    ftb_memory_estimate_step(m, &o, 1, 8, 1, row, &b);
    cr_expect_eq(a.saved_peak, b.saved_peak);
    free(row);
    ftb_model_free(m);
}

/* ---- the methods' models, through the plugins as a run loads them ---- */

#include "plugin.h"

/* The model the methods' tests below run on: tiny, or what this returns. */
static ftb_model *(*method_model)(void);

/* One step of a plugin on the tiny model: the measured peak of the step
 * against what the harness would record as its prediction. */
static void expect_method_prediction_within(const char *method, int n_opts, const char *const *keys,
                                            const char *const *values, int ran_backward, double tolerance)
{
    const char *dir = getenv("FTBENCH_METHODS");
    if (!dir) cr_skip_test("FTBENCH_METHODS is set by make test");
    char path[4096], err[FTB_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/%s.so", dir, method);
    ftb_plugin plug;
    cr_assert_eq(ftb_plugin_open(path, &plug, err, sizeof err), 0, "%s", err);
    ftb_model *m = method_model ? method_model() : mm_model("tiny");
    ftb_options opts = { n_opts, keys, values };
    ftb_session s;
    memset(&s, 0, sizeof s);
    s.model = m;
    ftb_run_opts_default(&s.run);
    s.options = &opts;
    s.seed = 3;
    s.lr = 1e-3f;
    s.total_steps = 2;
    void *state = plug.method->init(&s, err, sizeof err);
    cr_assert_not_null(state, "%s: %s", method, err);
    mm_batch b = mm_make_batch(m->cfg.vocab_size, 2, 24);
    ftb_memory_estimate est;
    const char *source = ftb_method_memory_estimate(plug.method, state, &s, 2, 24, ran_backward, &est);
    ftb_mem_reset_peaks();
    ftb_step_result res;
    cr_assert_eq(plug.method->step(state, &s, &b.batch, &res, err, sizeof err), 0, "%s: %s", method, err);
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    double err_rel = (double)(st.peak_total - est.peak_total) / (double)st.peak_total;
    cr_expect(tolerance > 0 ? fabs(err_rel) <= tolerance : est.peak_total == st.peak_total,
              "%s (%s): predicted peak %lld bytes (at %s), measured %lld", method, source, (long long)est.peak_total,
              est.peak_phase, (long long)st.peak_total);
    cr_expect_eq(est.saved_peak, st.peak[FTB_MEM_SAVED], "%s: saved peak predicted %lld, measured %lld", method,
                 (long long)est.saved_peak, (long long)st.peak[FTB_MEM_SAVED]);
    plug.method->destroy(state);
    ftb_model_free(m);
    free(b.tokens);
    free(b.targets);
    ftb_plugin_close(&plug);
}

/* Byte for byte. */
static void expect_method_prediction(const char *method, int n_opts, const char *const *keys, const char *const *values,
                                     int ran_backward)
{
    expect_method_prediction_within(method, n_opts, keys, values, ran_backward, 0.0);
}

Test(memory_model, methods_full_lastk_lora_ia3)
{
    expect_method_prediction("full", 0, NULL, NULL, 1);
    expect_method_prediction("lastk", 0, NULL, NULL, 1);
    expect_method_prediction("lora", 0, NULL, NULL, 1);
    const char *k[] = { "rank", "targets" }, *v[] = { "3", "q,v,down" };
    expect_method_prediction("lora", 2, k, v, 1);
    const char *kd[] = { "dropout" }, *vd[] = { "0.05" };
    expect_method_prediction("lora", 1, kd, vd, 1);
    expect_method_prediction("ia3", 0, NULL, NULL, 1);
}

Test(memory_model, methods_gc_mebp_mesp)
{
    expect_method_prediction("gc", 0, NULL, NULL, 1);
    const char *k[] = { "inner" }, *v1[] = { "ia3" }, *v2[] = { "full" };
    expect_method_prediction("gc", 1, k, v1, 1);
    expect_method_prediction("gc", 1, k, v2, 1);
    expect_method_prediction("mebp", 0, NULL, NULL, 1);
    expect_method_prediction("mesp", 0, NULL, NULL, 1);
}

Test(memory_model, zeroth_order_mezo_is_one_inference_forward)
{
    expect_method_prediction("mezo", 0, NULL, NULL, 0);
    const char *k[] = { "params" }, *v[] = { "lora" };
    expect_method_prediction("mezo", 1, k, v, 0);
}

/* P-RGE leaves its hooks' transient products out of its model (documented):
 * within 0.5% on the tiny model, far less on real shapes. */
Test(memory_model, zeroth_order_prge_is_one_forward_of_the_repeated_batch)
{
    expect_method_prediction_within("prge", 0, NULL, NULL, 0, 5e-3);
    const char *k[] = { "queries", "dual" }, *v[] = { "2", "0" };
    expect_method_prediction_within("prge", 2, k, v, 0, 5e-3);
}

/* LARS leaves its hooks' transient buffers out of its model (documented). */
Test(memory_model, lars_pooled_and_gated)
{
    expect_method_prediction_within("lars", 0, NULL, NULL, 1, 5e-3);
    const char *k[] = { "variant" }, *v[] = { "gated" };
    expect_method_prediction_within("lars", 1, k, v, 1, 5e-3);
}

/* ---- a lazily resident mapped base (docs/CORE.md, "Mapped weights count as
 * resident"): a block's mapped tensors count as weights only while the block
 * runs, the LM head only its streamed tile, the embedding only the rows
 * looked up; the prediction stays byte for byte. */

#include "test_helpers_ckpt.h"

/* name's seeded weights in `format`, saved and loaded back mapped. */
static ftb_model *mm_mapped(const char *name, const char *format)
{
    ftb_model *m = mm_model(name);
    char err[FTB_ERR_LEN] = "";
    if (strcmp(format, "f32") != 0) cr_assert_eq(ftb_model_quantize(m, format, 8, err, sizeof err), 0, "%s", err);
    char *dir = ckpt_tmpdir();
    cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "%s", err);
    ftb_model_free(m);
    m = ftb_model_load(dir, 1, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    ckpt_rm_rf(dir); /* the mapping outlives the file's name */
    return m;
}

static int64_t live_weights(void)
{
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    return st.live[FTB_MEM_WEIGHTS];
}

static int64_t mapped_storage(const ftb_tensor *t) { return t->mapped ? ftb_tensor_storage_bytes(t) : 0; }

/* What the core brings in at once, at most: a block, the final norm with the
 * head (one tile on these shapes), or the distinct rows of a lookup. */
static int64_t largest_unit(const ftb_model *m, const mm_batch *b, int N)
{
    int64_t largest = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const ftb_layer *L = &m->layers[l];
        const ftb_tensor *ts[] = { &L->attn_norm, &L->wq, &L->wk,       &L->wv,     &L->wo,   &L->bq,
                                   &L->bk,        &L->bv, &L->mlp_norm, &L->w_gate, &L->w_up, &L->w_down };
        int64_t bytes = 0;
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) bytes += mapped_storage(ts[i]);
        if (bytes > largest) largest = bytes;
    }
    int64_t head = mapped_storage(&m->final_norm) + mapped_storage(&m->lm_head);
    if (head > largest) largest = head;
    char seen[4096] = { 0 };
    int64_t distinct = 0;
    for (int i = 0; i < N; i++) distinct += !seen[b->tokens[i]]++;
    int64_t rows = distinct * mapped_storage(&m->embed) / m->cfg.vocab_size;
    return rows > largest ? rows : largest;
}

/* One step under lazy residency: predicted = measured, and the weights
 * category rises during the step by the largest unit only. */
static void expect_lazy_step(ftb_model *m, const ftb_run_opts *o, int B, int T, int training, const char *what)
{
    int64_t between = live_weights();
    expect_prediction(m, o, B, T, training, what);
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    mm_batch b = mm_make_batch(m->cfg.vocab_size, B, T);
    int64_t unit = largest_unit(m, &b, B * T);
    cr_expect_eq(st.peak[FTB_MEM_WEIGHTS] - between, unit,
                 "%s: weights rose by %lld bytes during the step, the largest unit brought in is %lld", what,
                 (long long)(st.peak[FTB_MEM_WEIGHTS] - between), (long long)unit);
    cr_expect_eq(live_weights(), between, "%s: weights after the step %lld, before %lld", what,
                 (long long)live_weights(), (long long)between);
    free(b.tokens);
    free(b.targets);
}

Test(memory_model, lazy_mapped_base_counts_resident_weights_only)
{
    const char *formats[] = { "f32", "int4" }, *models[] = { "tiny", "tiny-tied" };
    for (int f = 0; f < 2; f++)
        for (int k = 0; k < 2; k++) {
            char what[96];
            ftb_model *m = mm_mapped(models[k], formats[f]);
            train_one_linear(m, m->cfg.n_layers - 1); /* its wq leaves the mapping: owned, trainable */
            int64_t all = live_weights(), mapped = ftb_model_mapped_bytes(m);
            cr_assert_gt(mapped, 0);
            ftb_model_set_residency(m, FTB_RESIDENT_LAZY_BLOCK);
            int64_t lazy = live_weights();
            cr_expect_geq(all - lazy, mapped, "%s %s: lazy residency took %lld bytes off weights, %lld are mapped",
                          formats[f], models[k], (long long)(all - lazy), (long long)mapped);
            ftb_run_opts o;
            ftb_run_opts_default(&o);
            snprintf(what, sizeof what, "%s %s lazy, top block trained", formats[f], models[k]);
            expect_lazy_step(m, &o, 2, 16, 1, what);
            ftb_keep_policy keep[2] = { FTB_KEEP_INPUT, FTB_KEEP_INPUT };
            o.keep = keep;
            snprintf(what, sizeof what, "%s %s lazy, blocks recomputed", formats[f], models[k]);
            expect_lazy_step(m, &o, 1, 40, 1, what);
            o.keep = NULL;
            o.loss = FTB_LOSS_FULL;
            snprintf(what, sizeof what, "%s %s lazy, inference, full loss", formats[f], models[k]);
            expect_lazy_step(m, &o, 3, 17, 0, what);
            ftb_model_set_residency(m, FTB_RESIDENT_ALL);
            cr_expect_eq(live_weights(), all, "%s %s: back to all resident, weights %lld, were %lld", formats[f],
                         models[k], (long long)live_weights(), (long long)all);
            ftb_model_free(m);
        }
}

static ftb_model *mapped_int4_tiny(void) { return mm_mapped("tiny", "int4"); }

/* MeBP and MeSP set lazy residency themselves on a mapped base. */
Test(memory_model, methods_mebp_mesp_lora_on_a_lazy_mapped_base)
{
    method_model = mapped_int4_tiny;
    expect_method_prediction("mebp", 0, NULL, NULL, 1);
    expect_method_prediction("mesp", 0, NULL, NULL, 1);
    const char *k[] = { "inner" }, *v[] = { "lora" };
    expect_method_prediction("gc", 1, k, v, 1);
    method_model = NULL;
}
