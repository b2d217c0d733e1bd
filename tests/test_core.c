/* test_core.c — behaviour of the model core beyond gradient values (those
 * are checked against PyTorch in test_oracle.c): memory accounting, what is
 * kept for backward under each policy and mode, bad batches, the timeline. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ftbench.h"

typedef struct {
    int B, T;
    int32_t *tokens, *targets;
    ftb_batch batch;
} test_batch;

static test_batch make_batch(int vocab, int B, int T, uint64_t seed)
{
    test_batch tb = { B, T, malloc(sizeof(int32_t) * B * T), malloc(sizeof(int32_t) * B * T), { 0 } };
    ftb_rng r;
    ftb_rng_seed(&r, seed);
    for (int i = 0; i < B * T; i++) tb.tokens[i] = (int32_t)(ftb_rng_u64(&r) % (uint64_t)vocab);
    for (int i = 0; i < B * T; i++) tb.targets[i] = (i + 1) % T ? tb.tokens[i + 1] : FTB_IGNORE_INDEX;
    tb.batch = (ftb_batch){ B, T, tb.tokens, tb.targets };
    return tb;
}

static void free_batch(test_batch *tb)
{
    free(tb->tokens);
    free(tb->targets);
}

static ftb_model *model(const char *name, int trainable)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get(name, &cfg), 0, "zoo has no '%s'", name);
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, 42, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    if (trainable) {
        ftb_model_set_trainable(m, 1);
        cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    }
    return m;
}

/* Copies every gradient (in params order) into one buffer. */
static float *grads_of(ftb_model *m, int64_t *n)
{
    int64_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += m->params[i]->grad ? m->params[i]->numel : 0;
    float *g = malloc(sizeof(float) * total), *p = g;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->grad) {
            memcpy(p, m->params[i]->grad, sizeof(float) * m->params[i]->numel);
            p += m->params[i]->numel;
        }
    *n = total;
    return g;
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

Test(core, zoo_shapes_match_published_parameter_counts)
{
    /* Published totals (tied embeddings counted once). */
    struct {
        const char *name;
        double params;
    } expect[] = {
        { "qwen2.5-0.5b", 494.0e6 }, { "qwen2.5-1.5b", 1543.7e6 },   { "llama-3.2-1b", 1235.8e6 },
        { "smollm2-135m", 134.5e6 }, { "tinyllama-1.1b", 1100.0e6 },
    };
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++) {
        ftb_config c;
        cr_assert_eq(ftb_zoo_get(expect[i].name, &c), 0);
        double p = (double)ftb_config_param_count(&c);
        cr_expect(fabs(p - expect[i].params) / expect[i].params < 0.01, "%s: %.1fM parameters, published %.1fM",
                  expect[i].name, p / 1e6, expect[i].params / 1e6);
    }
    ftb_config c;
    cr_expect_neq(ftb_zoo_get("no-such-model", &c), 0);
}

Test(core, seeded_weights_are_reproducible_and_seed_dependent)
{
    ftb_model *a = model("tiny", 0), *b = model("tiny", 0);
    for (int i = 0; i < a->n_params; i++)
        cr_assert_eq(memcmp(a->params[i]->data, b->params[i]->data, sizeof(float) * a->params[i]->numel), 0,
                     "%s differs between two models of the same seed", a->params[i]->name);
    char err[FTB_ERR_LEN];
    ftb_model *c = ftb_model_create(&a->cfg, 43, err, sizeof err);
    cr_expect_neq(memcmp(a->embed.data, c->embed.data, sizeof(float) * a->embed.numel), 0);
    ftb_model_free(a);
    ftb_model_free(b);
    ftb_model_free(c);
}

Test(core, config_validation_names_the_problem)
{
    ftb_config c;
    ftb_zoo_get("tiny", &c);
    char err[FTB_ERR_LEN];
    c.n_kv_heads = 3; /* 4 heads are not a multiple of 3 */
    cr_assert_neq(ftb_config_validate(&c, err, sizeof err), 0);
    cr_expect(strstr(err, "num_key_value_heads") != NULL, "error was: %s", err);
    ftb_zoo_get("tiny", &c);
    c.head_dim = 7;
    cr_assert_neq(ftb_config_validate(&c, err, sizeof err), 0);
    cr_expect(strstr(err, "head_dim") != NULL, "error was: %s", err);
    cr_expect_null(ftb_model_create(&c, 1, err, sizeof err));
}

Test(core, bad_batches_give_an_error_not_a_crash)
{
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 1, 8, 1);
    char err[FTB_ERR_LEN] = "";
    tb.tokens[3] = m->cfg.vocab_size; /* one past the vocabulary */
    cr_expect(isnan(ftb_model_forward_backward(m, &tb.batch, NULL, err, sizeof err)));
    cr_expect(strstr(err, "outside the vocabulary") != NULL, "error was: %s", err);
    tb.tokens[3] = 1;
    tb.targets[2] = -7;
    cr_expect(isnan(ftb_model_forward(m, &tb.batch, NULL, err, sizeof err)));
    tb.targets[2] = FTB_IGNORE_INDEX;
    ftb_batch too_long = { 1, m->cfg.max_seq + 1, tb.tokens, tb.targets };
    cr_expect(isnan(ftb_model_forward(m, &too_long, NULL, err, sizeof err)));
    cr_expect(strstr(err, "max_position_embeddings") != NULL, "error was: %s", err);
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    cr_expect_eq(st.live[FTB_MEM_SAVED], 0, "a refused batch left saved activations behind");
    free_batch(&tb);
    ftb_model_free(m);
}

Test(core, every_allocation_is_returned)
{
    ftb_mem_stats before, after;
    ftb_mem_get_stats(&before);
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 2, 33, 2);
    char err[FTB_ERR_LEN];
    ftb_adamw opt;
    cr_assert_eq(ftb_adamw_init(&opt, m, NULL, 0, 1e-3f, 0.01f, err, sizeof err), 0, "%s", err);
    for (int mode = 0; mode < 4; mode++) {
        ftb_run_opts o;
        ftb_run_opts_default(&o);
        o.attention = mode & 1 ? FTB_ATTN_EAGER : FTB_ATTN_FLASH;
        o.loss = mode & 2 ? FTB_LOSS_FULL : FTB_LOSS_CHUNKED;
        ftb_model_forward_backward(m, &tb.batch, &o, err, sizeof err);
        ftb_mem_stats mid;
        ftb_mem_get_stats(&mid);
        cr_expect_eq(mid.live[FTB_MEM_SAVED], 0, "mode %d: saved activations outlive the step", mode);
        cr_expect_eq(mid.live[FTB_MEM_WORKSPACE], 0, "mode %d: workspace outlives the step", mode);
        cr_expect_gt(mid.peak[FTB_MEM_SAVED], 0);
    }
    ftb_adamw_step(&opt);
    ftb_adamw_free(&opt);
    ftb_model_free(m);
    free_batch(&tb);
    ftb_mem_get_stats(&after);
    for (int c = 0; c < FTB_MEM_NCAT; c++)
        cr_expect_eq(after.live[c], before.live[c], "category %s leaked %lld bytes", ftb_mem_category_name(c),
                     (long long)(after.live[c] - before.live[c]));
}

Test(core, categories_hold_what_they_say)
{
    ftb_mem_reset_peaks();
    ftb_model *m = model("tiny", 1);
    int64_t P = ftb_config_param_count(&m->cfg) * 4;
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    /* full fine-tuning: every weight is a trainable parameter with a gradient */
    cr_expect_eq(st.live[FTB_MEM_TRAINABLE], P, "trainable %lld, parameters %lld",
                 (long long)st.live[FTB_MEM_TRAINABLE], (long long)P);
    cr_expect_eq(st.live[FTB_MEM_GRADS], P);
    cr_expect_eq(st.live[FTB_MEM_WEIGHTS], 0);
    ftb_adamw opt;
    char err[FTB_ERR_LEN];
    ftb_adamw_init(&opt, m, NULL, 0, 1e-3f, 0, err, sizeof err);
    ftb_mem_get_stats(&st);
    cr_expect_eq(st.live[FTB_MEM_OPTIM], 2 * P);
    ftb_adamw_free(&opt);
    ftb_model_free(m);
}

Test(core, inference_forward_keeps_nothing_and_matches_training_loss)
{
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 2, 40, 3);
    char err[FTB_ERR_LEN];
    ftb_mem_reset_peaks();
    float l_inf = ftb_model_forward(m, &tb.batch, NULL, err, sizeof err);
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    cr_expect_eq(st.peak[FTB_MEM_SAVED], 0, "inference kept %lld bytes for a backward that never comes",
                 (long long)st.peak[FTB_MEM_SAVED]);
    float l_train = ftb_model_forward_backward(m, &tb.batch, NULL, err, sizeof err);
    cr_expect_float_eq(l_inf, l_train, 1e-6f);
    cr_expect(l_inf > 0 && fabsf(l_inf - logf((float)m->cfg.vocab_size)) < 0.5f,
              "a random model's loss %f should be near ln(V) = %f", l_inf, logf((float)m->cfg.vocab_size));
    free_batch(&tb);
    ftb_model_free(m);
}

Test(core, recomputation_gives_identical_gradients_with_less_saved)
{
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 2, 48, 4);
    char err[FTB_ERR_LEN];
    ftb_run_opts keep_all, keep_input;
    ftb_run_opts_default(&keep_all);
    ftb_run_opts_default(&keep_input);
    ftb_keep_policy policy[2] = { FTB_KEEP_INPUT, FTB_KEEP_INPUT };
    keep_input.keep = policy;

    ftb_model_zero_grads(m);
    ftb_mem_reset_peaks();
    float la = ftb_model_forward_backward(m, &tb.batch, &keep_all, err, sizeof err);
    ftb_mem_stats sa;
    ftb_mem_get_stats(&sa);
    int64_t n;
    float *ga = grads_of(m, &n);

    ftb_model_zero_grads(m);
    ftb_mem_reset_peaks();
    float lb = ftb_model_forward_backward(m, &tb.batch, &keep_input, err, sizeof err);
    ftb_mem_stats sb;
    ftb_mem_get_stats(&sb);
    float *gb = grads_of(m, &n);
    cr_expect_eq(la, lb);
    cr_expect_eq(memcmp(ga, gb, sizeof(float) * n), 0, "recomputed block gradients differ (max rel %g)",
                 max_rel_diff(gb, ga, n));
    cr_expect_lt(sb.peak[FTB_MEM_SAVED], sa.peak[FTB_MEM_SAVED] * 2 / 3, "keep-input saved peak %lld vs keep-all %lld",
                 (long long)sb.peak[FTB_MEM_SAVED], (long long)sa.peak[FTB_MEM_SAVED]);
    free(ga);
    free(gb);
    free_batch(&tb);
    ftb_model_free(m);
}

Test(core, offloaded_checkpoints_give_identical_gradients_outside_ram)
{
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 2, 48, 4);
    char err[FTB_ERR_LEN];
    ftb_keep_policy keep_input[2] = { FTB_KEEP_INPUT, FTB_KEEP_INPUT },
                    offload[2] = { FTB_KEEP_OFFLOAD, FTB_KEEP_OFFLOAD };
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    o.keep = keep_input;
    ftb_model_zero_grads(m);
    ftb_mem_reset_peaks();
    float la = ftb_model_forward_backward(m, &tb.batch, &o, err, sizeof err);
    ftb_mem_stats sa;
    ftb_mem_get_stats(&sa);
    int64_t n;
    float *ga = grads_of(m, &n);

    o.keep = offload;
    ftb_model_zero_grads(m);
    ftb_mem_reset_peaks();
    ftb_offload_reset_peak();
    float lb = ftb_model_forward_backward(m, &tb.batch, &o, err, sizeof err);
    cr_assert(!isnan(lb), "%s", err);
    ftb_mem_stats sb;
    ftb_mem_get_stats(&sb);
    float *gb = grads_of(m, &n);
    cr_expect_eq(la, lb);
    cr_expect_eq(memcmp(ga, gb, sizeof(float) * n), 0, "offloaded checkpoints changed the gradients");
    /* block 0's input is the embedding output (heap); block 1's is in a file */
    int64_t block_input = (int64_t)tb.B * tb.T * m->cfg.dim * 4;
    cr_expect_eq(ftb_offload_peak(), block_input, "offloaded %lld bytes", (long long)ftb_offload_peak());
    cr_expect_eq(ftb_offload_live(), 0);
    cr_expect_eq(sa.peak[FTB_MEM_SAVED] - sb.peak[FTB_MEM_SAVED], block_input);

    o.offload_dir = "/nonexistent-dir";
    cr_expect(isnan(ftb_model_forward_backward(m, &tb.batch, &o, err, sizeof err)));
    cr_expect(strstr(err, "/nonexistent-dir") != NULL, "error was: %s", err);
    ftb_mem_stats sc;
    ftb_mem_get_stats(&sc);
    cr_expect_eq(sc.live[FTB_MEM_SAVED], 0, "a failed offload left saved activations behind");
    free(ga);
    free(gb);
    free_batch(&tb);
    ftb_model_free(m);
}

Test(core, eager_attention_and_full_logits_are_visible_in_memory)
{
    ftb_model *m = model("tiny", 1);
    const int T = 128;
    test_batch tb = make_batch(m->cfg.vocab_size, 1, T, 5);
    char err[FTB_ERR_LEN];
    int64_t saved[2][2];
    for (int attn = 0; attn < 2; attn++)
        for (int loss = 0; loss < 2; loss++) {
            ftb_run_opts o;
            ftb_run_opts_default(&o);
            o.attention = attn ? FTB_ATTN_EAGER : FTB_ATTN_FLASH;
            o.loss = loss ? FTB_LOSS_FULL : FTB_LOSS_CHUNKED;
            o.loss_chunk_rows = 16;
            ftb_mem_reset_peaks();
            ftb_model_forward_backward(m, &tb.batch, &o, err, sizeof err);
            ftb_mem_stats st;
            ftb_mem_get_stats(&st);
            saved[attn][loss] = st.peak[FTB_MEM_SAVED];
        }
    /* eager keeps H·T² probabilities per layer; full keeps T·V logits */
    int64_t probs = (int64_t)m->cfg.n_layers * m->cfg.n_heads * T * T * 4;
    int64_t logits = (int64_t)T * m->cfg.vocab_size * 4;
    cr_expect_geq(saved[1][0] - saved[0][0], probs * 9 / 10, "eager adds %lld, probabilities are %lld",
                  (long long)(saved[1][0] - saved[0][0]), (long long)probs);
    cr_expect_geq(saved[0][1] - saved[0][0], logits * 9 / 10, "full loss adds %lld, logits are %lld",
                  (long long)(saved[0][1] - saved[0][0]), (long long)logits);
    free_batch(&tb);
    ftb_model_free(m);
}

Test(core, frozen_lower_blocks_keep_nothing_and_gradients_agree)
{
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 1, 64, 6);
    char err[FTB_ERR_LEN];
    ftb_model_zero_grads(m);
    ftb_mem_reset_peaks();
    ftb_model_forward_backward(m, &tb.batch, NULL, err, sizeof err);
    ftb_mem_stats all;
    ftb_mem_get_stats(&all);
    ftb_tensor *wo1 = ftb_model_find(m, "model.layers.1.self_attn.o_proj.weight");
    float *ref = malloc(sizeof(float) * wo1->numel);
    memcpy(ref, wo1->grad, sizeof(float) * wo1->numel);

    /* Freeze the embedding and block 0: backward must stop at block 1. */
    for (int i = 0; i < m->n_params; i++)
        if (strstr(m->params[i]->name, "layers.0.") || strstr(m->params[i]->name, "embed_tokens"))
            m->params[i]->trainable = 0;
    ftb_model_zero_grads(m);
    ftb_mem_reset_peaks();
    ftb_model_forward_backward(m, &tb.batch, NULL, err, sizeof err);
    ftb_mem_stats top;
    ftb_mem_get_stats(&top);
    cr_expect_eq(memcmp(ref, wo1->grad, sizeof(float) * wo1->numel), 0, "upper block gradient changed");
    cr_expect_lt(top.peak[FTB_MEM_SAVED], all.peak[FTB_MEM_SAVED] * 3 / 4);
    ftb_tensor *wq0 = ftb_model_find(m, "model.layers.0.self_attn.q_proj.weight");
    for (int64_t i = 0; i < wq0->numel; i++) cr_assert_eq(wq0->grad[i], 0.0f, "frozen block 0 received a gradient");
    free(ref);
    free_batch(&tb);
    ftb_model_free(m);
}

Test(core, timeline_records_phases_and_balances)
{
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 1, 32, 7);
    char err[FTB_ERR_LEN];
    ftb_mem_timeline_enable(100000);
    ftb_model_forward_backward(m, &tb.batch, NULL, err, sizeof err);
    size_t n = ftb_mem_timeline_count();
    const ftb_mem_event *ev = ftb_mem_timeline_events();
    cr_assert_gt(n, 10);
    int64_t saved = 0;
    int seen_fwd = 0, seen_bwd = 0;
    double last_t = 0;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].category == FTB_MEM_SAVED) saved += ev[i].delta;
        const char *ph = ftb_mem_phase_name(ev[i].phase);
        seen_fwd |= strcmp(ph, "fwd L1") == 0;
        seen_bwd |= strcmp(ph, "bwd L0") == 0;
        cr_expect_geq(ev[i].t_sec, last_t, "timeline goes back in time");
        last_t = ev[i].t_sec;
    }
    cr_expect_eq(saved, 0, "saved activations allocated and freed do not balance");
    cr_expect(seen_fwd && seen_bwd, "phases fwd L1 / bwd L0 missing from the timeline");
    cr_expect_eq(ftb_mem_timeline_dropped(), 0);
    ftb_mem_timeline_enable(0);
    free_batch(&tb);
    ftb_model_free(m);
}

Test(core, adamw_lowers_the_loss)
{
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 2, 24, 8);
    char err[FTB_ERR_LEN];
    ftb_adamw opt;
    ftb_adamw_init(&opt, m, NULL, 0, 3e-3f, 0.0f, err, sizeof err);
    float first = 0, last = 0;
    for (int s = 0; s < 20; s++) {
        ftb_model_zero_grads(m);
        last = ftb_model_forward_backward(m, &tb.batch, NULL, err, sizeof err);
        if (s == 0) first = last;
        ftb_adamw_step(&opt);
    }
    cr_expect_lt(last, first * 0.8f, "20 AdamW steps on one batch: %f -> %f", first, last);
    ftb_adamw_free(&opt);
    free_batch(&tb);
    ftb_model_free(m);
}

#if !defined(__SANITIZE_ADDRESS__)
/* Resident bytes of the mappings that /proc/self/smaps lists and
 * /proc/self/maps does not.  Natively both list the same mappings: 0.
 * Under qemu-user, maps is emulated (the guest's mappings only) while
 * smaps is the real process's, which also holds the emulator itself: its
 * buffer of translated code (an rwx mapping that grows as new code runs)
 * and its own heap.  Measured under qemu-aarch64 7.2 with -cpu cortex-a76:
 * about 15 MiB for a small program; during this test's two steps it grows
 * by the code they translate, which is why RSS growth exceeded the core's
 * peak by 14-15 MiB (263.4 MiB against 277.5 and 278.7 MiB, issue 18)
 * before this was subtracted; with it subtracted the 5 % holds. */
static int64_t emulator_rss(void)
{
    static unsigned long lo[8192], hi[8192];
    int n = 0;
    char l[512];
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && n < 8192 && fgets(l, sizeof l, f))
        if (sscanf(l, "%lx-%lx", &lo[n], &hi[n]) == 2) n++;
    if (f) fclose(f);
    f = fopen("/proc/self/smaps", "r");
    int64_t sum = 0;
    int listed = 1;
    while (f && fgets(l, sizeof l, f)) {
        unsigned long a, b;
        long kb;
        char c;
        if (sscanf(l, "%lx-%lx %c", &a, &b, &c) == 3) {
            listed = 0;
            for (int i = 0; i < n && !listed; i++) listed = a == lo[i] && b == hi[i];
        } else if (!listed && sscanf(l, "Rss: %ld", &kb) == 1) {
            sum += (int64_t)kb * 1024;
        }
    }
    if (f) fclose(f);
    return sum;
}

/* Issue #2's criterion: for a full fine-tuning step the core's categories
 * explain the process's RSS growth to within 5%.  Not under ASan, whose
 * shadow memory is RSS that no allocation accounts for.  Under an emulator
 * the emulator's own growth (emulator_rss) is not the process's memory as
 * the device would see it and is taken out of the growth. */
Test(core, categories_explain_peak_rss)
{
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    if (cr) {
        fputs("5", cr);
        fclose(cr);
    }
    char line[256];
    int64_t base = -1, hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f)) sscanf(line, "VmRSS: %ld", &base);
    if (f) fclose(f);
    int64_t emulator0 = emulator_rss();
    ftb_mem_reset_peaks();
    ftb_mem_stats st0;
    ftb_mem_get_stats(&st0);
    ftb_model *m = model("small-20m", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 1, 256, 9);
    char err[FTB_ERR_LEN];
    ftb_adamw opt;
    ftb_adamw_init(&opt, m, NULL, 0, 1e-4f, 0, err, sizeof err);
    for (int s = 0; s < 2; s++) {
        ftb_model_zero_grads(m);
        ftb_model_forward_backward(m, &tb.batch, NULL, err, sizeof err);
        ftb_adamw_step(&opt);
    }
    f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f)) sscanf(line, "VmHWM: %ld", &hwm);
    if (f) fclose(f);
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    double emulator = (double)(emulator_rss() - emulator0);
    double growth = (hwm - base) * 1024.0 - emulator, core = (double)(st.peak_total - st0.live_total);
    cr_expect(fabs(core - growth) / growth < 0.05,
              "core peak %.1f MiB, RSS growth %.1f MiB (emulator's own %.1f MiB out)", core / 1048576, growth / 1048576,
              emulator / 1048576);
    ftb_adamw_free(&opt);
    free_batch(&tb);
    ftb_model_free(m);
}
#endif

#if !defined(__SANITIZE_ADDRESS__) && !(defined(FTB_EXACT_ALLOC) && FTB_EXACT_ALLOC)
static int64_t faults_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_minflt + (int64_t)ru.ru_majflt;
}

static int64_t vmhwm_now(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f)) sscanf(line, "VmHWM: %ld", &kb);
    if (f) fclose(f);
    return (int64_t)kb * 1024;
}

/* Issue 17 item 2: a step's saved activations and workspaces keep their
 * pages for the next step (the step arena, docs/CORE.md "What is kept
 * across steps"), so a later step takes no page fault for them and peaks
 * no higher than the first.  256 rows of 128 tokens make the SwiGLU
 * tensors and the full loss's logits 8 MiB each: jemalloc hands blocks
 * that large back to the kernel at once, so without the arena
 * (FTBENCH_STEP_ARENA=0) every step faults them in again: 44,065, 35,415
 * and 33,310 faults in the three steps, VmHWM 1.2 MiB higher after the
 * second; with it 35,106, 0 and 0, VmHWM the same.  The bound on a later
 * step is 1 % of the step's pages (321). */
Test(core, later_steps_take_no_fresh_pages)
{
    ftb_model *m = model("tiny", 1);
    test_batch tb = make_batch(m->cfg.vocab_size, 256, 128, 17);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    o.loss = FTB_LOSS_FULL;
    char err[FTB_ERR_LEN];
    ftb_adamw opt;
    cr_assert_eq(ftb_adamw_init(&opt, m, NULL, 0, 1e-3f, 0, err, sizeof err), 0, "%s", err);
    ftb_mem_stats st0, st;
    ftb_mem_get_stats(&st0);
    ftb_mem_reset_peaks();
    int64_t faults[3], hwm[3];
    float loss[3];
    for (int s = 0; s < 3; s++) {
        int64_t f0 = faults_now();
        ftb_model_zero_grads(m);
        loss[s] = ftb_model_forward_backward(m, &tb.batch, &o, err, sizeof err);
        ftb_adamw_step(&opt);
        faults[s] = faults_now() - f0;
        hwm[s] = vmhwm_now();
        cr_assert(isfinite(loss[s]), "step %d: %s", s, err);
    }
    ftb_mem_get_stats(&st);
    const int64_t step_bytes = st.peak_total - st0.live_total, step_pages = step_bytes / 4096;
    ftb_step_arena_info a;
    ftb_step_arena_stats(&a);
    cr_log_info("tiny, 256 x 128 tokens, full loss: faults per step %lld, %lld, %lld; step's own %.1f MiB (%lld "
                "pages); VmHWM %.1f, %.1f, %.1f MiB; arena high water %.1f MiB, %lld fallbacks",
                (long long)faults[0], (long long)faults[1], (long long)faults[2], step_bytes / 1048576.0,
                (long long)step_pages, hwm[0] / 1048576.0, hwm[1] / 1048576.0, hwm[2] / 1048576.0,
                a.high_water_bytes / 1048576.0, (long long)a.fallbacks);
    /* The first step touches its buffers fresh: most of its pages fault. */
    cr_expect_gt(faults[0], step_pages / 2, "first step: %lld faults for %lld pages", (long long)faults[0],
                 (long long)step_pages);
    for (int s = 1; s < 3; s++)
        cr_expect_lt(faults[s], step_pages / 100,
                     "step %d took %lld page faults (bound %lld: 1%% of the step's %lld pages)", s + 1,
                     (long long)faults[s], (long long)(step_pages / 100), (long long)step_pages);
    /* Nothing kept raises the peak: later steps reuse the first's pages. */
    cr_expect_leq(hwm[2] - hwm[0], 256 << 10, "VmHWM rose by %lld KiB after the first step",
                  (long long)(hwm[2] - hwm[0]) >> 10);
    cr_expect_eq(a.fallbacks, 0, "every step buffer found its place in the arena");
    ftb_adamw_free(&opt);
    free_batch(&tb);
    ftb_model_free(m);
}
#endif
