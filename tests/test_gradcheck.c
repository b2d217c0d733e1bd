/*
 * test_gradcheck.c — analytic gradients against central finite differences,
 * in C, independent of the PyTorch oracle.
 *
 * Seeded "tiny" (GQA, qkv bias) and "tiny-tied" zoo models are rescaled so that gradients are not tiny
 * (weights std 0.2, norms 1 + 0.1·noise, biases 0.1·noise).  For every
 * parameter tensor two entries are checked: the one with the largest |analytic
 * gradient| and one pseudo-random entry (for the embedding, in a row the batch
 * uses).  The loss is fp32, so the step is large and the test is loose:
 *   h    = GC_STEP · max(|w|, 1)            (absolute, GC_STEP = 1e-2)
 *   fd   = (L(w+h) − L(w−h)) / 2h
 *   pass   |fd − g| ≤ max(GC_REL · |fd|, GC_ABS),  GC_REL = 2e-2, GC_ABS = 1e-4
 * The "detects" test scales the analytic gradient by 1.1 and requires the same
 * comparison to reject every largest-gradient entry, so the tolerance is
 * known to catch a 10% error.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftbench.h"

#define GC_STEP        1e-2
#define GC_REL         2e-2
#define GC_ABS         1e-4
#define GC_B           2
#define GC_T           6
#define GC_MAX_ENTRIES 256

typedef struct {
    char name[96];
    int64_t idx;
    int largest; /* chosen as the tensor's largest |grad| entry     */
    double analytic, fd;
} gc_entry;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s) { return (splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }
static double gauss(uint64_t *s)
{
    double u = unif(s), v = unif(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static int is_norm(const char *n) { return strstr(n, "norm.weight") != NULL; }
static int is_bias(const char *n) { return strstr(n, ".bias") != NULL; }

static ftb_model *gc_model(const char *zoo_name)
{
    ftb_config cfg;
    char err[FTB_ERR_LEN] = "";
    cr_assert_eq(ftb_zoo_get(zoo_name, &cfg), 0, "zoo has no '%s' model", zoo_name);
    ftb_model *m = ftb_model_create(&cfg, 42, err, sizeof err);
    cr_assert(m, "ftb_model_create: %s", err);
    uint64_t s = 2024;
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (m->cfg.tie_embeddings && t != &m->embed && t->data == m->embed.data) continue;
        cr_assert(!t->mapped, "%s is mapped", t->name);
        for (int64_t j = 0; j < t->numel; j++) {
            double z = gauss(&s);
            t->data[j] = (float)(is_norm(t->name) ? 1.0 + 0.1 * z : is_bias(t->name) ? 0.1 * z : 0.2 * z);
        }
    }
    ftb_model_set_trainable(m, 1);
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "alloc_grads: %s", err);
    return m;
}

static void gc_batch(const ftb_model *m, int32_t *tok, int32_t *tgt)
{
    uint64_t s = 77;
    int V = m->cfg.vocab_size;
    for (int i = 0; i < GC_B * GC_T; i++) tok[i] = (int32_t)(splitmix(&s) % (uint64_t)V);
    for (int b = 0; b < GC_B; b++)
        for (int t = 0; t < GC_T; t++)
            tgt[b * GC_T + t] = t + 1 < GC_T ? tok[b * GC_T + t + 1] : (int32_t)(splitmix(&s) % (uint64_t)V);
    tgt[1] = FTB_IGNORE_INDEX;            /* one ignored mid-sequence   */
    tgt[2 * GC_T - 1] = FTB_IGNORE_INDEX; /* padded end of sequence 1   */
}

/* Fills entries with analytic and finite-difference values; returns count. */
static int gc_collect(ftb_model *m, ftb_attention_impl attn, gc_entry *out)
{
    int32_t tok[GC_B * GC_T], tgt[GC_B * GC_T];
    gc_batch(m, tok, tgt);
    ftb_batch b = { .B = GC_B, .T = GC_T, .tokens = tok, .targets = tgt };
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    o.attention = attn;
    o.loss_chunk_rows = 5;
    char err[FTB_ERR_LEN] = "";

    ftb_model_zero_grads(m);
    float L0 = ftb_model_forward_backward(m, &b, &o, err, sizeof err);
    cr_assert(isfinite(L0), "forward_backward: %s", err);

    int n = 0;
    uint64_t s = 9;
    for (int i = 0; i < m->n_params && n + 2 <= GC_MAX_ENTRIES; i++) {
        ftb_tensor *t = m->params[i];
        if (!t->grad || t->numel == 0) continue;
        if (m->cfg.tie_embeddings && t != &m->embed && t->data == m->embed.data) continue;
        int64_t big = 0;
        for (int64_t j = 1; j < t->numel; j++)
            if (fabsf(t->grad[j]) > fabsf(t->grad[big])) big = j;
        int64_t rnd = (int64_t)(splitmix(&s) % (uint64_t)t->numel);
        if (t == &m->embed) {
            int64_t row = tok[splitmix(&s) % (GC_B * GC_T)];
            rnd = row * t->shape[1] + rnd % t->shape[1];
        }
        if (rnd == big) rnd = (rnd + 1) % t->numel;
        int64_t pick[2] = { big, rnd };
        for (int k = 0; k < 2; k++) {
            gc_entry *e = &out[n++];
            snprintf(e->name, sizeof e->name, "%s", t->name);
            e->idx = pick[k];
            e->largest = k == 0;
            e->analytic = t->grad[pick[k]];
        }
    }
    for (int k = 0; k < n; k++) {
        ftb_tensor *t = ftb_model_find(m, out[k].name);
        cr_assert(t, "ftb_model_find(%s)", out[k].name);
        float w = t->data[out[k].idx];
        double h = GC_STEP * fmax(fabs(w), 1.0);
        float wp = (float)(w + h), wm = (float)(w - h);
        t->data[out[k].idx] = wp;
        float Lp = ftb_model_forward(m, &b, &o, err, sizeof err);
        t->data[out[k].idx] = wm;
        float Lm = ftb_model_forward(m, &b, &o, err, sizeof err);
        t->data[out[k].idx] = w;
        cr_assert(isfinite(Lp) && isfinite(Lm), "forward: %s", err);
        out[k].fd = ((double)Lp - (double)Lm) / ((double)wp - (double)wm); /* exact step taken */
    }
    return n;
}

static int gc_ok(double analytic, double fd) { return fabs(fd - analytic) <= fmax(GC_REL * fabs(fd), GC_ABS); }

static void gc_run(const char *zoo_name, ftb_attention_impl attn)
{
    static gc_entry e[GC_MAX_ENTRIES];
    ftb_model *m = gc_model(zoo_name);
    int n = gc_collect(m, attn, e);
    cr_assert_geq(n, 20, "only %d entries checked", n);
    int bad = 0;
    char first[512] = "";
    double worst = 0;
    for (int k = 0; k < n; k++) {
        double d = fabs(e[k].fd - e[k].analytic);
        double ratio = d / fmax(GC_REL * fabs(e[k].fd), GC_ABS);
        if (ratio > worst) worst = ratio;
        if (!gc_ok(e[k].analytic, e[k].fd)) {
            if (!bad++)
                snprintf(first, sizeof first, "%.95s[%lld]: analytic %.6g, finite difference %.6g", e[k].name,
                         (long long)e[k].idx, e[k].analytic, e[k].fd);
        }
    }
    cr_expect_eq(bad, 0, "[%s %s] %d of %d entries disagree, first: %s", zoo_name,
                 attn == FTB_ATTN_FLASH ? "flash" : "eager", bad, n, first);
    if (getenv("FTBENCH_GRADCHECK_VERBOSE")) {
        for (int k = 0; k < n; k++)
            fprintf(stderr, "%-48s %6lld %c analytic %+.6e fd %+.6e\n", e[k].name, (long long)e[k].idx,
                    e[k].largest ? '*' : ' ', e[k].analytic, e[k].fd);
        fprintf(stderr, "worst |diff|/tolerance %.3f\n", worst);
    }
    ftb_model_free(m);
}

Test(gradcheck, flash) { gc_run("tiny", FTB_ATTN_FLASH); }
Test(gradcheck, eager) { gc_run("tiny", FTB_ATTN_EAGER); }
Test(gradcheck, tied_flash) { gc_run("tiny-tied", FTB_ATTN_FLASH); }
Test(gradcheck, tied_eager) { gc_run("tiny-tied", FTB_ATTN_EAGER); }

/* The tolerance is tight enough to catch a 10% gradient error: with the
 * analytic gradient scaled by 1.1, every largest-|grad| entry must fail. */
Test(gradcheck, detects_scaled_gradient)
{
    static gc_entry e[GC_MAX_ENTRIES];
    ftb_model *m = gc_model("tiny");
    int n = gc_collect(m, FTB_ATTN_FLASH, e);
    int largest = 0, caught = 0;
    for (int k = 0; k < n; k++) {
        if (!e[k].largest) continue;
        largest++;
        if (!gc_ok(1.1 * e[k].analytic, e[k].fd))
            caught++;
        else
            cr_log_warn("a 10%% error in %s[%lld] (grad %.3g) would pass", e[k].name, (long long)e[k].idx,
                        e[k].analytic);
    }
    cr_expect_eq(caught, largest, "only %d of %d scaled gradients detected", caught, largest);
    ftb_model_free(m);
}
