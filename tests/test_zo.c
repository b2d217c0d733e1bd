/* test_zo.c — the zeroth-order methods (methods/mezo, methods/prge), loaded
 * as a run loads them, checked against the core's exact gradient and
 * against forwards run one query at a time.
 *
 * The perturbation noise is regenerated here from the layout the plugins
 * document (block seeds derived from the step seed, Box–Muller pairs on
 * ftb_rng_u64), independently of the plugins' code: the tests that use it
 * also check that an update is exactly pg·z for that z.
 *
 * FTBENCH_ZO_VERBOSE=1 prints the measured figures (cosines, drifts,
 * peaks); FTBENCH_ZO_REPORT=1 also runs the slower estimate-quality tables
 * quoted in docs/methods/mezo.md and prge.md. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftbench.h"
#include "plugin.h"
#include "helpers.h"

#define ZO_BLOCK  65536
#define MEZO_SALT 0x6d657a6fULL
#define PRGE_SALT 0x70726765ULL

static int verbose(void) { return getenv("FTBENCH_ZO_VERBOSE") || getenv("FTBENCH_ZO_REPORT"); }
#define SAY(...)                                     \
    do {                                             \
        if (verbose()) fprintf(stderr, __VA_ARGS__); \
    } while (0)

/* ---- the documented noise layout, regenerated ---------------------------- */

static uint64_t zo_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t zo_child(uint64_t parent, uint64_t index)
{
    return zo_mix(parent + 0x9e3779b97f4a7c15ULL * (index + 1));
}

/* z[0..n) of one stream: blocks of ZO_BLOCK, block k from zo_child(stream, k),
 * two normals per ftb_rng_u64 draw. */
static void regen_noise(float *z, int64_t n, uint64_t stream)
{
    for (int64_t k = 0; k * ZO_BLOCK < n; k++) {
        ftb_rng r;
        ftb_rng_seed(&r, zo_child(stream, (uint64_t)k));
        int64_t lo = k * ZO_BLOCK, len = n - lo < ZO_BLOCK ? n - lo : ZO_BLOCK;
        for (int64_t i = 0; i < len; i += 2) {
            uint64_t x = ftb_rng_u64(&r);
            float u1 = (float)((x >> 40) + 1) * (1.0f / 16777216.0f);
            float u2 = (float)((x >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
            float radius = sqrtf(-2.0f * logf(u1)), s, c;
            sincosf(6.2831853071795865f * u2, &s, &c);
            z[lo + i] = radius * c;
            if (i + 1 < len) z[lo + i + 1] = radius * s;
        }
    }
}

/* The k-th step seed (k from 0) of a session seed. */
static uint64_t step_seed(uint64_t session_seed, uint64_t salt, int k)
{
    ftb_rng r;
    ftb_rng_seed(&r, session_seed ^ salt);
    uint64_t s = 0;
    for (int i = 0; i <= k; i++) s = ftb_rng_u64(&r);
    return s;
}

/* ---- fixtures ----------------------------------------------------------- */

/* The tiny models here gain nothing from threads, and on a loaded machine
 * every OpenMP barrier waits for a descheduled thread: one thread, unless a
 * test asks for more. */
static void one_thread(void) { ftb_set_threads(1); }
TestSuite(zo, .init = one_thread);

/* The tiny zoo model; weights scaled to std 0.2 (norms kept at 1) when
 * `sharp`, so that gradients stand well above fp32 rounding. */
static ftb_model *zoo_model(const char *name, uint64_t seed, int sharp)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get(name, &cfg), 0, "no zoo model '%s'", name);
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, seed, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    if (sharp)
        for (int i = 0; i < m->n_params; i++)
            if (!strstr(m->params[i]->name, "norm"))
                for (int64_t j = 0; j < m->params[i]->numel; j++) m->params[i]->data[j] *= 10.0f;
    return m;
}

static ftb_model *tiny_model(uint64_t seed, int sharp) { return zoo_model("tiny", seed, sharp); }

static ftb_session session_for(ftb_model *m, const ftb_options *o, float lr)
{
    ftb_session s = th_session(m, o);
    s.lr = lr;
    s.total_steps = 100;
    return s;
}

static int64_t total_numel(ftb_tensor **t, int n)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += t[i]->numel;
    return total;
}

static void gather(float *dst, ftb_tensor **t, int n)
{
    for (int i = 0; i < n; i++) {
        memcpy(dst, t[i]->data, sizeof(float) * t[i]->numel);
        dst += t[i]->numel;
    }
}

static void scatter(ftb_tensor **t, int n, const float *src)
{
    for (int i = 0; i < n; i++) {
        memcpy(t[i]->data, src, sizeof(float) * t[i]->numel);
        src += t[i]->numel;
    }
}

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double cosine(const float *a, const float *b, int64_t n)
{
    return dot(a, b, n) / sqrt(dot(a, a, n) * dot(b, b, n));
}

/* The core's exact gradient of every parameter (params order), flattened,
 * from a second copy of the model. */
static float *exact_gradient(const char *name, uint64_t seed, const ftb_batch *b, int64_t *n)
{
    ftb_model *g = zoo_model(name, seed, 1);
    char err[FTB_ERR_LEN] = "";
    ftb_model_set_trainable(g, 1);
    cr_assert_eq(ftb_model_alloc_grads(g, err, sizeof err), 0, "%s", err);
    float loss = ftb_model_forward_backward(g, b, NULL, err, sizeof err);
    cr_assert(!isnan(loss), "%s", err);
    int64_t total = 0;
    for (int i = 0; i < g->n_params; i++) total += g->params[i]->numel;
    float *grad = malloc(sizeof(float) * total), *p = grad;
    for (int i = 0; i < g->n_params; i++) {
        memcpy(p, g->params[i]->grad, sizeof(float) * g->params[i]->numel);
        p += g->params[i]->numel;
    }
    *n = total;
    ftb_model_free(g);
    return grad;
}

/* MeZO full: the regenerated z of step k, flattened in params order. */
static void mezo_noise(float *z, ftb_tensor **params, int n, uint64_t seed)
{
    for (int t = 0; t < n; t++) {
        regen_noise(z, params[t]->numel, zo_child(seed, (uint64_t)t));
        z += params[t]->numel;
    }
}

/* ---- 1. MeZO's estimate ------------------------------------------------- */

/* With θ reset before every step, a step moves θ by −lr·pg·z exactly (up to
 * rounding), so (θ₀ − θ)/lr is that step's estimate pg·z.  Its mean over
 * seeds tends to ∇L: for Gaussian z, E[pg·z] = ∇L + O(ε²) and each sample's
 * noise is ~|∇L| per direction, so cos(mean of K, ∇L) ≈ 1/√(1 + (d+1)/K). */
Test(zo, mezo_estimate_averages_to_the_exact_gradient)
{
    ftb_plugin p;
    th_open_method("mezo", &p);
    ftb_model *m = tiny_model(21, 1);
    int32_t tok[2 * 20], tgt[2 * 20];
    ftb_batch b = th_batch(tok, tgt, 2, 20, m->cfg.vocab_size);
    int64_t d;
    float *grad = exact_gradient("tiny", 21, &b, &d);
    ftb_options none = { 0, NULL, NULL };
    ftb_session s = session_for(m, &none, 1.0f);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    cr_assert_eq(total_numel(params, n), d, "mezo trains %lld parameters, the model has %lld",
                 (long long)total_numel(params, n), (long long)d);
    float *theta0 = malloc(sizeof(float) * d), *theta = malloc(sizeof(float) * d);
    double *sum = calloc(d, sizeof(double));
    float *mean = malloc(sizeof(float) * d);
    gather(theta0, params, n);
    const int checkpoints[] = { 25, 100, 400 };
    double cos_at[3];
    int next = 0;
    for (int k = 1; k <= 400; k++) {
        ftb_step_result r = { 0 };
        cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
        cr_assert_eq(r.forward_passes, 2);
        gather(theta, params, n);
        for (int64_t i = 0; i < d; i++) sum[i] += ((double)theta0[i] - theta[i]) / s.lr;
        scatter(params, n, theta0);
        if (k == checkpoints[next]) {
            for (int64_t i = 0; i < d; i++) mean[i] = (float)(sum[i] / k);
            cos_at[next] = cosine(mean, grad, d);
            double theory = 1.0 / sqrt(1.0 + (double)(d + 1) / k);
            SAY("mezo: cos(mean of %3d estimates, exact gradient) = %.4f (theory %.4f, d = %lld)\n", k, cos_at[next],
                theory, (long long)d);
            cr_expect(cos_at[next] > 0.5 * theory && cos_at[next] < 1.5 * theory,
                      "K=%d: cosine %.4f, expected about %.4f", k, cos_at[next], theory);
            next++;
        }
    }
    cr_expect_gt(cos_at[1], cos_at[0]);
    cr_expect_gt(cos_at[2], cos_at[1]);
    cr_expect_gt(cos_at[2], 0.08, "400 estimates: cosine %.4f", cos_at[2]);
    free(theta0);
    free(theta);
    free(sum);
    free(mean);
    free(grad);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* One seed: the step is exactly −lr·pg·z for the documented z (the plugin's
 * noise is the one regenerated here), and pg is the directional derivative
 * ⟨∇L, z⟩ up to the central difference's truncation error, O(ε²): checked
 * by running the same seeds at ε and 3ε, whose error must be several times
 * larger (fp32 loss rounding would instead grow as ε shrinks). */
static void mezo_directional_errors(const char *model, double eps, int steps, double *abs_err, double *rel_err,
                                    double *gnorm_out)
{
    ftb_plugin p;
    th_open_method("mezo", &p);
    ftb_model *m = zoo_model(model, 22, 1);
    int32_t tok[2 * 20], tgt[2 * 20];
    ftb_batch b = th_batch(tok, tgt, 2, 20, m->cfg.vocab_size);
    int64_t d;
    float *grad = exact_gradient(model, 22, &b, &d);
    *gnorm_out = sqrt(dot(grad, grad, d));
    char eps_s[32];
    snprintf(eps_s, sizeof eps_s, "%g", eps);
    const char *keys[] = { "eps" }, *vals[] = { eps_s };
    ftb_options o = { 1, keys, vals };
    ftb_session s = session_for(m, &o, 1.0f);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    float *theta0 = malloc(sizeof(float) * d), *theta = malloc(sizeof(float) * d), *z = malloc(sizeof(float) * d);
    gather(theta0, params, n);
    for (int k = 0; k < steps; k++) {
        ftb_step_result r = { 0 };
        cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
        gather(theta, params, n);
        scatter(params, n, theta0);
        mezo_noise(z, params, n, step_seed(s.seed, MEZO_SALT, k));
        /* v = pg·z: pg from the projection on z, then v must be pg·z everywhere */
        double pg = 0, resid = 0, vmax = 0;
        for (int64_t i = 0; i < d; i++) pg += ((double)theta0[i] - theta[i]) / s.lr * z[i];
        pg /= dot(z, z, d);
        for (int64_t i = 0; i < d; i++) {
            double v = ((double)theta0[i] - theta[i]) / s.lr;
            resid = fmax(resid, fabs(v - pg * z[i]));
            vmax = fmax(vmax, fabs(v));
        }
        cr_expect(resid < 1e-4 * vmax + 1e-6, "step %d: the update is not pg·z for the documented z (%g vs %g)", k,
                  resid, vmax);
        double dd = dot(grad, z, d);
        abs_err[k] = fabs(pg - dd);
        rel_err[k] = abs_err[k] / fabs(dd);
        SAY("mezo: %s eps %g step %d  pg %+.6f  <grad,z> %+.6f  error %.2e (rel. %.2e)\n", model, eps, k, pg, dd,
            abs_err[k], rel_err[k]);
    }
    free(theta0);
    free(theta);
    free(z);
    free(grad);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(zo, mezo_single_estimate_is_the_directional_derivative)
{
    enum { STEPS = 8 };
    double abs1[STEPS], rel1[STEPS], abs3[STEPS], rel3[STEPS], gnorm;
    mezo_directional_errors("tiny", 1e-3, STEPS, abs1, rel1, &gnorm);
    mezo_directional_errors("tiny", 3e-3, STEPS, abs3, rel3, &gnorm);
    double mean1 = 0, mean3 = 0;
    for (int k = 0; k < STEPS; k++) {
        mean1 += abs1[k] / STEPS;
        mean3 += abs3[k] / STEPS;
        /* every draw: within 1 % of |∇L|, the scale of ⟨∇L, z⟩ */
        cr_expect(abs1[k] < 0.01 * gnorm, "step %d: |pg − <grad,z>| = %g, |grad| %g", k, abs1[k], gnorm);
        /* draws where ⟨∇L, z⟩ is not small: within 3 % of it */
        if (abs1[k] / rel1[k] > 0.2 * gnorm) cr_expect(rel1[k] < 0.03, "step %d: relative error %g", k, rel1[k]);
    }
    SAY("mezo: mean |pg − <grad,z>|: %.2e at eps 1e-3, %.2e at eps 3e-3 (|grad| %.3f)\n", mean1, mean3, gnorm);
    cr_expect_gt(mean3, 4.0 * mean1, "the error is not the O(eps^2) truncation: %g at 3e-3, %g at 1e-3", mean3, mean1);
}

/* Tied embeddings: the LM head shares the embedding's data and is perturbed
 * once with it (the core's gradient of the embedding includes the head's):
 * perturbing it twice, or not at all, would break pg ≈ ⟨∇L, z⟩. */
Test(zo, mezo_tied_head_is_perturbed_once)
{
    enum { STEPS = 4 };
    double abs_err[STEPS], rel_err[STEPS], gnorm;
    mezo_directional_errors("tiny-tied", 1e-3, STEPS, abs_err, rel_err, &gnorm);
    for (int k = 0; k < STEPS; k++)
        cr_expect(abs_err[k] < 0.01 * gnorm, "step %d: |pg − <grad,z>| = %g, |grad| %g", k, abs_err[k], gnorm);
}

/* The noise does not depend on the thread count: on a model whose tensors
 * span many blocks, a step run on two threads moves the embedding by
 * pg·z for the z regenerated here on one. */
Test(zo, mezo_noise_is_the_same_on_any_number_of_threads)
{
    ftb_set_threads(2);
    ftb_plugin p;
    th_open_method("mezo", &p);
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    cfg.vocab_size = 8192; /* embedding and head of 262144 elements: 4 blocks each */
    char err[FTB_ERR_LEN] = "";
    ftb_model *m = ftb_model_create(&cfg, 31, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    int32_t tok[8], tgt[8];
    ftb_batch b = th_batch(tok, tgt, 1, 8, m->cfg.vocab_size);
    ftb_options none = { 0, NULL, NULL };
    ftb_session s = session_for(m, &none, 1.0f);
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    p.method->trainable(st, &params);
    ftb_tensor *E = params[0];
    cr_assert_gt(E->numel, 3 * ZO_BLOCK, "%s spans only %lld elements", E->name, (long long)E->numel);
    float *theta0 = malloc(sizeof(float) * E->numel), *z = malloc(sizeof(float) * E->numel);
    memcpy(theta0, E->data, sizeof(float) * E->numel);
    ftb_step_result r = { 0 };
    cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
    regen_noise(z, E->numel, zo_child(step_seed(s.seed, MEZO_SALT, 0), 0));
    double pg = 0, resid = 0, vmax = 0;
    for (int64_t i = 0; i < E->numel; i++) pg += ((double)theta0[i] - E->data[i]) / s.lr * z[i];
    pg /= dot(z, z, E->numel);
    for (int64_t i = 0; i < E->numel; i++) {
        double v = ((double)theta0[i] - E->data[i]) / s.lr;
        resid = fmax(resid, fabs(v - pg * z[i]));
        vmax = fmax(vmax, fabs(v));
    }
    SAY("mezo: 2 threads, %lld-element embedding: max |update - pg z| = %.2e of %.2e\n", (long long)E->numel, resid,
        vmax);
    cr_expect(resid < 1e-4 * vmax, "2-thread update is not pg·z for the 1-thread z: %g of %g", resid, vmax);
    free(theta0);
    free(z);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* ---- 2. restoration ----------------------------------------------------- */

static double ulp_of(float x)
{
    float a = fabsf(x);
    return (double)(nextafterf(a, INFINITY) - a);
}

/* perturb=read: the forwards read θ ± εz and never write θ, and a zero
 * update leaves every bit (−0 included), so a step with lr = 0 gives θ back
 * bit for bit — all weights, or the LoRA factors.  (That the reads add the
 * right z is the next test's.) */
static void expect_bitwise_restore(const char *params_opt, int samples)
{
    ftb_plugin p;
    th_open_method("mezo", &p);
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    cfg.vocab_size = 8192; /* tensors of several noise blocks */
    char err[FTB_ERR_LEN] = "";
    ftb_model *m = ftb_model_create(&cfg, 41, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    m->layers[0].attn_norm.data[3] = -0.0f; /* a negative zero stays one */
    ftb_set_dequant_tile(1000);             /* tiles that start inside noise blocks */
    int32_t tok[2 * 16], tgt[2 * 16];
    ftb_batch b = th_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
    char k_s[8];
    snprintf(k_s, sizeof k_s, "%d", samples);
    const char *keys[] = { "params", "samples", "targets" }, *vals[] = { params_opt, k_s, "all" };
    ftb_options o = { 3, keys, vals };
    ftb_session s = session_for(m, &o, 0.0f);
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    int64_t d = total_numel(params, n);
    float *theta0 = malloc(sizeof(float) * d), *theta = malloc(sizeof(float) * d);
    for (int step = 0; step < 2; step++) {
        gather(theta0, params, n);
        ftb_step_result r = { 0 };
        cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
        cr_assert(isfinite(r.loss), "loss %g", (double)r.loss);
        gather(theta, params, n);
        int64_t differ = 0;
        for (int64_t i = 0; i < d; i++) differ += memcmp(&theta[i], &theta0[i], sizeof(float)) != 0;
        SAY("mezo params=%s samples=%d, lr=0, step %d: %lld of %lld parameters differ in any bit\n", params_opt,
            samples, step, (long long)differ, (long long)d);
        cr_expect_eq(differ, 0, "params=%s: %lld of %lld parameters changed", params_opt, (long long)differ,
                     (long long)d);
    }
    cr_expect(signbit(m->layers[0].attn_norm.data[3]), "a negative zero norm weight became +0");
    ftb_set_dequant_tile(0);
    free(theta0);
    free(theta);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(zo, mezo_read_restores_parameters_bitwise_when_lr_is_zero)
{
    expect_bitwise_restore("full", 1);
    expect_bitwise_restore("full", 3);
    expect_bitwise_restore("lora", 1);
}

static void no_perturbation(void *ctx, const ftb_tensor *t, int64_t offset, int64_t n, float *values)
{
    (void)ctx;
    (void)t;
    (void)offset;
    (void)n;
    (void)values;
}

/* perturb=read: the losses of a step are those of forwards at θ + εz and
 * θ − εz written out in full, with z regenerated here — bit for bit (the
 * reference reads its weights through the same tiles, perturbed by
 * nothing).  The shapes make tiles start at odd offsets inside noise blocks
 * (F = 63, tiles of 999 floats), the tokens reach every block of the
 * embedding, the last block is partial (V = 8191), the head is untied and
 * tied; ε = 0.05, so a wrong z in any stretch moves the loss. */
Test(zo, mezo_read_forwards_see_exactly_theta_plus_minus_eps_z)
{
    const char *models[] = { "tiny", "tiny-tied" };
    const float eps = 0.05f;
    for (int mi = 0; mi < 2; mi++) {
        ftb_plugin p;
        th_open_method("mezo", &p);
        ftb_config cfg;
        ftb_zoo_get(models[mi], &cfg);
        cfg.vocab_size = 8191;
        cfg.ffn_dim = 63;
        char err[FTB_ERR_LEN] = "";
        ftb_set_dequant_tile(999);
        ftb_model *m = ftb_model_create(&cfg, 47, err, sizeof err), *ref = ftb_model_create(&cfg, 47, err, sizeof err);
        cr_assert(m && ref, "%s", err);
        int32_t tok[2 * 16], tgt[2 * 16];
        ftb_batch b = th_batch(tok, tgt, 2, 16, cfg.vocab_size);
        for (int i = 0; i < 2 * 16; i++) tok[i] = (int32_t)((i * 2039 + 5) % cfg.vocab_size);
        const char *keys[] = { "eps" }, *vals[] = { "0.05" };
        ftb_options o = { 1, keys, vals };
        ftb_session s = session_for(m, &o, 0.0f);
        void *st = p.method->init(&s, err, sizeof err);
        cr_assert_not_null(st, "%s", err);
        ftb_tensor **params;
        int n = p.method->trainable(st, &params);
        ftb_tensor **mine = malloc(sizeof *mine * (size_t)n);
        int j = 0;
        for (int i = 0; i < ref->n_params && j < n; i++)
            if (ref->params[i]->numel > 0) mine[j++] = ref->params[i];
        cr_assert_eq(j, n, "the reference has %d trainable tensors, mezo %d", j, n);
        ftb_model_set_read_perturbation(ref, no_perturbation, NULL);
        for (int step = 0; step < 2; step++) {
            ftb_step_result r = { 0 };
            cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
            uint64_t seed = step_seed(s.seed, MEZO_SALT, step);
            float L[2];
            for (int sign = 0; sign < 2; sign++) {
                for (int t = 0; t < n; t++) {
                    float *z = malloc(sizeof(float) * (size_t)params[t]->numel);
                    regen_noise(z, params[t]->numel, zo_child(seed, (uint64_t)t));
                    for (int64_t i = 0; i < params[t]->numel; i++)
                        mine[t]->data[i] = params[t]->data[i] + (sign ? -eps : eps) * z[i];
                    free(z);
                }
                L[sign] = ftb_model_forward(ref, &b, &s.run, err, sizeof err);
                cr_assert(!isnan(L[sign]), "%s", err);
            }
            float expected = 0.5f * (L[0] + L[1]);
            SAY("mezo %s step %d: reported loss %.9g, forwards at θ ± εz written out %.9g / %.9g -> %.9g\n", models[mi],
                step, (double)r.loss, (double)L[0], (double)L[1], (double)expected);
            cr_expect(memcmp(&r.loss, &expected, sizeof expected) == 0, "%s step %d: %a reported, %a expected",
                      models[mi], step, (double)r.loss, (double)expected);
            cr_expect(L[0] != L[1], "the perturbation changed nothing");
        }
        ftb_set_dequant_tile(0);
        free(mine);
        p.method->destroy(st);
        ftb_model_free(m);
        ftb_model_free(ref);
        ftb_plugin_close(&p);
    }
}

/* perturb=read forms θ ± εz from the same z as the in-place sweeps: the two
 * schemes' estimates of one step agree (they differ only by the rounding of
 * θ + εz − 2εz, which read never does), across tiles that start mid-block,
 * embedding rows, norms and a tied head. */
Test(zo, mezo_read_and_inplace_estimates_agree)
{
    const char *models[] = { "tiny", "tiny-tied" };
    for (int mi = 0; mi < 2; mi++)
        for (int lora = 0; lora < 2; lora++) {
            ftb_plugin p;
            th_open_method("mezo", &p);
            ftb_config cfg;
            ftb_zoo_get(models[mi], &cfg);
            cfg.vocab_size = 4096;
            char err[FTB_ERR_LEN] = "";
            ftb_set_dequant_tile(1000);
            int32_t tok[2 * 16], tgt[2 * 16];
            double est[2][2]; /* [scheme][first, norm] */
            for (int scheme = 0; scheme < 2; scheme++) {
                ftb_model *m = ftb_model_create(&cfg, 43, err, sizeof err);
                cr_assert_not_null(m, "%s", err);
                ftb_batch b = th_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
                const char *keys[] = { "perturb", "params", "targets" };
                const char *vals[] = { scheme ? "inplace" : "read", lora ? "lora" : "full", "all" };
                ftb_options o = { 3, keys, vals };
                ftb_session s = session_for(m, &o, 1.0f);
                void *st = p.method->init(&s, err, sizeof err);
                cr_assert_not_null(st, "%s", err);
                float loss;
                cr_assert_eq(p.method->gradient(st, &s, &b, 0, &loss, err, sizeof err), 0, "%s", err);
                ftb_tensor **params;
                int n = p.method->trainable(st, &params);
                double norm = 0;
                for (int t = 0; t < n; t++)
                    for (int64_t i = 0; i < params[t]->numel; i++)
                        norm += (double)params[t]->grad[i] * params[t]->grad[i];
                est[scheme][0] = params[0]->grad[0];
                est[scheme][1] = sqrt(norm);
                p.method->destroy(st);
                ftb_model_free(m);
            }
            ftb_set_dequant_tile(0);
            double rel = fabs(est[0][1] - est[1][1]) / est[1][1];
            SAY("mezo %s params=%s: |estimate| read %.6g, inplace %.6g (rel. diff %.1e)\n", models[mi],
                lora ? "lora" : "full", est[0][1], est[1][1], rel);
            cr_expect(rel < 2e-3, "%s %s: |estimate| %g (read) vs %g (inplace)", models[mi], lora ? "lora" : "full",
                      est[0][1], est[1][1]);
            cr_expect(fabs(est[0][0] - est[1][0]) <= 2e-3 * fabs(est[1][0]) + 1e-12, "first element %g vs %g",
                      est[0][0], est[1][0]);
            ftb_plugin_close(&p);
        }
}

/* perturb=inplace (the paper's seed trick): with lr = 0 a step is
 * θ + εz − 2εz + εz in fp32: three roundings, each at most half an ulp of a
 * value no larger than |θ| + 2ε|z|, so an element may drift by a few ulps of
 * that size; it need not come back bitwise. */
Test(zo, mezo_inplace_restores_parameters_within_2_ulp_when_lr_is_zero)
{
    ftb_plugin p;
    th_open_method("mezo", &p);
    ftb_model *m = tiny_model(23, 1);
    int32_t tok[2 * 16], tgt[2 * 16];
    ftb_batch b = th_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
    const char *keys[] = { "perturb" }, *vals[] = { "inplace" };
    ftb_options inplace = { 1, keys, vals };
    ftb_session s = session_for(m, &inplace, 0.0f);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    int64_t d = total_numel(params, n);
    float *theta0 = malloc(sizeof(float) * d), *theta = malloc(sizeof(float) * d), *z = malloc(sizeof(float) * d);
    gather(theta0, params, n);
    ftb_step_result r = { 0 };
    cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
    gather(theta, params, n);
    mezo_noise(z, params, n, step_seed(s.seed, MEZO_SALT, 0));
    const float eps = 1e-3f;
    int64_t same = 0;
    double worst_ulps = 0, worst_rel_eps = 0;
    for (int64_t i = 0; i < d; i++) {
        same += theta[i] == theta0[i];
        double drift = fabs((double)theta[i] - theta0[i]);
        double scale = ulp_of(fabsf(theta0[i]) + 2.0f * eps * fabsf(z[i]));
        cr_expect(drift <= 2.0 * scale, "element %lld: %a -> %a (%g ulps)", (long long)i, theta0[i], theta[i],
                  drift / scale);
        worst_ulps = fmax(worst_ulps, drift / ulp_of(theta0[i]));
        worst_rel_eps = fmax(worst_rel_eps, drift / eps);
    }
    SAY("mezo: lr=0: %.2f %% of %lld parameters bitwise restored; worst drift %.1f ulp(θ), %.2e ε\n", 100.0 * same / d,
        (long long)d, worst_ulps, worst_rel_eps);
    cr_expect(worst_rel_eps < 1e-3, "drift %.2e ε", worst_rel_eps);
    cr_expect_gt(same, d / 2, "only %lld of %lld restored bitwise", (long long)same, (long long)d);
    free(theta0);
    free(theta);
    free(z);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* ---- 3. memory ---------------------------------------------------------- */

typedef struct {
    int64_t extra; /* peak of the sum above what was live before */
    int64_t peak_total;
    int64_t saved_peak, workspace_peak;
} peak_figures;

static void peak_begin(ftb_mem_stats *before)
{
    ftb_mem_reset_peaks();
    ftb_mem_get_stats(before);
}

static peak_figures peak_end(const ftb_mem_stats *before)
{
    ftb_mem_stats after;
    ftb_mem_get_stats(&after);
    peak_figures f = { after.peak_total - before->live_total, after.peak_total, after.peak[FTB_MEM_SAVED],
                       after.peak[FTB_MEM_WORKSPACE] };
    return f;
}

/* MeZO allocates nothing of its own in a step (z is regenerated in
 * registers): with perturb=inplace its peak is the inference forward's, byte
 * for byte.  perturb=read adds one weight tile and one vector to it, which
 * its memory model predicts to the byte. */
Test(zo, mezo_peak_is_an_inference_forward)
{
    for (int reads = 0; reads < 2; reads++) {
        ftb_plugin p;
        th_open_method("mezo", &p);
        ftb_model *m = tiny_model(24, 0);
        int32_t tok[2 * 64], tgt[2 * 64];
        ftb_batch b = th_batch(tok, tgt, 2, 64, m->cfg.vocab_size);
        const char *keys[] = { "perturb" }, *vals[] = { reads ? "read" : "inplace" };
        ftb_options o = { 1, keys, vals };
        ftb_session s = session_for(m, &o, 1e-3f);
        char err[FTB_ERR_LEN] = "";
        void *st = p.method->init(&s, err, sizeof err);
        cr_assert_not_null(st, "%s", err);
        ftb_mem_stats before;
        peak_begin(&before);
        cr_assert(!isnan(ftb_model_forward(m, &b, &s.run, err, sizeof err)), "%s", err);
        peak_figures fwd = peak_end(&before);
        peak_begin(&before);
        ftb_step_result r = { 0 };
        cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
        peak_figures step = peak_end(&before);
        SAY("mezo: inference forward peak %lld B (+%lld over live), mezo step peak %lld B (+%lld), saved %lld B\n",
            (long long)fwd.peak_total, (long long)fwd.extra, (long long)step.peak_total, (long long)step.extra,
            (long long)step.saved_peak);
        cr_expect_eq(step.saved_peak, 0, "mezo saved %lld bytes of activations", (long long)step.saved_peak);
        ftb_memory_estimate est;
        cr_assert_eq(p.method->memory_model(st, &s, b.B, b.T, &est), 0);
        cr_expect_eq(est.peak_total, step.peak_total, "perturb=%s: predicted %lld, measured %lld", vals[0],
                     (long long)est.peak_total, (long long)step.peak_total);
        if (!reads) {
            cr_expect_eq(step.extra, fwd.extra, "a step needs %lld bytes beyond the weights, a forward %lld",
                         (long long)step.extra, (long long)fwd.extra);
        } else { /* the largest weight tile (here: the LM head, whole) and a vector of max(D, F) */
            int64_t tile = (int64_t)m->cfg.vocab_size * m->cfg.dim,
                    vec = m->cfg.ffn_dim > m->cfg.dim ? m->cfg.ffn_dim : m->cfg.dim;
            cr_expect_eq(step.extra, fwd.extra + 4 * (tile + vec),
                         "read: %lld bytes beyond the weights, a forward %lld", (long long)step.extra,
                         (long long)fwd.extra);
        }
        cr_expect_eq(before.live[FTB_MEM_GRADS], 0, "gradients were allocated");
        cr_expect_eq(before.live[FTB_MEM_OPTIM], 0, "optimizer state was allocated");
        for (int i = 0; i < m->n_params; i++)
            cr_expect_null(m->params[i]->grad, "%s has a gradient", m->params[i]->name);
        p.method->destroy(st);
        ftb_model_free(m);
        ftb_plugin_close(&p);
    }
}

/* P-RGE's forward runs 2n·B sequences and holds n copies of every B: its
 * peak grows with n, and still nothing is saved for a backward. */
Test(zo, prge_peak_grows_with_queries)
{
    ftb_plugin p;
    th_open_method("prge", &p);
    const int budgets[] = { 1, 2, 4, 8 };
    int64_t prev = 0;
    for (int q = 0; q < 4; q++) {
        ftb_model *m = tiny_model(25, 0);
        int32_t tok[64], tgt[64];
        ftb_batch b = th_batch(tok, tgt, 1, 64, m->cfg.vocab_size);
        char n_s[8];
        snprintf(n_s, sizeof n_s, "%d", budgets[q]);
        const char *keys[] = { "queries" }, *vals[] = { n_s };
        ftb_options o = { 1, keys, vals };
        ftb_session s = session_for(m, &o, 1e-3f);
        char err[FTB_ERR_LEN] = "";
        void *st = p.method->init(&s, err, sizeof err);
        cr_assert_not_null(st, "%s", err);
        ftb_mem_stats before;
        peak_begin(&before);
        ftb_step_result r = { 0 };
        cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
        cr_expect_eq(r.forward_passes, 1);
        peak_figures f = peak_end(&before);
        SAY("prge: n=%d  step peak +%lld B over live (workspace peak %lld B), saved %lld B\n", budgets[q],
            (long long)f.extra, (long long)f.workspace_peak, (long long)f.saved_peak);
        cr_expect_eq(f.saved_peak, 0);
        cr_expect_gt(f.extra, prev, "n=%d: peak %lld not above n=%d's %lld", budgets[q], (long long)f.extra,
                     q ? budgets[q - 1] : 0, (long long)prev);
        prev = f.extra;
        ftb_mem_stats after;
        ftb_mem_get_stats(&after);
        cr_expect_eq(after.live[FTB_MEM_WORKSPACE], before.live[FTB_MEM_WORKSPACE], "the step leaked workspace");
        p.method->destroy(st);
        ftb_model_free(m);
    }
    ftb_plugin_close(&p);
}

/* ---- 4. P-RGE against one forward per query ---------------------------- */

/* The prefix of prge's adapter (methods/prge/prge.c documents it). */
typedef struct {
    ftb_adapter hook;
    ftb_tensor A, B;
    float scale;
} prge_adapter_view;

typedef struct {
    int n;
    prge_adapter_view *a[64];
} prge_adapters;

static prge_adapters prge_views(ftb_model *m)
{
    prge_adapters v = { 0 };
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            if (m->layers[l].adapter[k]) v.a[v.n++] = (prge_adapter_view *)m->layers[l].adapter[k];
    return v;
}

static void set_B(prge_adapters *v, const float *B0, const float *z, float step)
{
    for (int a = 0; a < v->n; a++) {
        ftb_tensor *B = &v->a[a]->B;
        for (int64_t k = 0; k < B->numel; k++) B->data[k] = z ? B0[k] + step * z[k] : B0[k];
        B0 += B->numel;
        if (z) z += B->numel;
    }
}

/* Solves the n×n system G·c = rhs in place (Gaussian elimination, partial
 * pivoting); n ≤ 16. */
static void solve(double *G, double *rhs, int n)
{
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(G[r * n + c]) > fabs(G[piv * n + c])) piv = r;
        for (int k = 0; k < n; k++) {
            double t = G[c * n + k];
            G[c * n + k] = G[piv * n + k];
            G[piv * n + k] = t;
        }
        double t = rhs[c];
        rhs[c] = rhs[piv];
        rhs[piv] = t;
        for (int r = c + 1; r < n; r++) {
            double f = G[r * n + c] / G[c * n + c];
            for (int k = c; k < n; k++) G[r * n + k] -= f * G[c * n + k];
            rhs[r] -= f * rhs[c];
        }
    }
    for (int c = n - 1; c >= 0; c--) {
        for (int k = c + 1; k < n; k++) rhs[c] -= G[c * n + k] * rhs[k];
        rhs[c] /= G[c * n + c];
    }
}

/* One P-RGE step (dual, n = 4) against what it stands for: for each query,
 * two forwards of the original batch with B ± ε·zᵢ (zᵢ regenerated here),
 * pgᵢ = (L₊ᵢ − L₋ᵢ)/2ε, ΔB = −lr·meanᵢ(pgᵢ·zᵢ).  The plugin's own pgᵢ are
 * read back from its update by projecting ΔB on the zᵢ. */
Test(zo, prge_batched_queries_equal_separate_forwards)
{
    enum { Q = 4 };
    const float eps = 1e-2f, lr = 1e-2f;
    ftb_set_threads(2); /* the perturbations are drawn in parallel: check against a serial regeneration */
    ftb_plugin p;
    th_open_method("prge", &p);
    ftb_model *m = tiny_model(26, 1);
    int32_t tok[2 * 16], tgt[2 * 16];
    ftb_batch b = th_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
    tgt[5] = FTB_IGNORE_INDEX; /* sequences of unequal valid lengths: slice losses are token-weighted */
    const char *keys[] = { "queries", "dual" }, *vals[] = { "4", "1" };
    ftb_options o = { 2, keys, vals };
    ftb_session s = session_for(m, &o, lr);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **Bs;
    int nB = p.method->trainable(st, &Bs);
    prge_adapters v = prge_views(m);
    cr_assert_eq(nB, v.n);
    for (int a = 0; a < nB; a++)
        cr_assert_eq(v.a[a]->B.data, Bs[a]->data, "adapter %d is not trainable tensor %d", a, a);
    int64_t d = total_numel(Bs, nB);
    float *B0 = malloc(sizeof(float) * d), *B1 = malloc(sizeof(float) * d), *B1_single = malloc(sizeof(float) * d);
    ftb_rng rng;
    ftb_rng_seed(&rng, 77);
    for (int64_t i = 0; i < d; i++) B0[i] = 0.05f * ftb_rng_normal(&rng);
    set_B(&v, B0, NULL, 0);

    /* Outside a step the hook is LoRA: same loss as the merged W + s·B·A. */
    ftb_model *merged = tiny_model(26, 1);
    for (int l = 0, a = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++, a++) {
            ftb_tensor *W = ftb_layer_weight(&merged->layers[l], k), *A = &v.a[a]->A, *B = &v.a[a]->B;
            int r = (int)A->shape[0];
            ftb_gemm(0, 0, (int)W->shape[0], (int)W->shape[1], r, v.a[a]->scale, B->data, r, A->data, (int)W->shape[1],
                     1.0f, W->data, (int)W->shape[1]);
        }
    float l_hook = ftb_model_forward(m, &b, NULL, err, sizeof err),
          l_merged = ftb_model_forward(merged, &b, NULL, err, sizeof err);
    SAY("prge: LoRA hook loss %.7f, merged weights %.7f\n", l_hook, l_merged);
    cr_expect(fabsf(l_hook - l_merged) < 1e-5f * l_merged, "hook %f vs merged %f", l_hook, l_merged);
    ftb_model_free(merged);

    ftb_step_result r = { 0 };
    cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
    cr_expect_eq(r.forward_passes, 1);
    gather(B1, Bs, nB);

    /* the same step, one forward per query and sign */
    uint64_t seed0 = step_seed(s.seed, PRGE_SALT, 0);
    float *z = malloc(sizeof(float) * d * Q);
    double pg[Q], mean_loss = 0;
    for (int i = 0; i < Q; i++) {
        float *zi = z + (int64_t)i * d;
        for (int a = 0; a < nB; a++) {
            regen_noise(zi, Bs[a]->numel, zo_child(zo_child(seed0, (uint64_t)i), (uint64_t)a));
            zi += Bs[a]->numel;
        }
        set_B(&v, B0, z + (int64_t)i * d, eps);
        float lp = ftb_model_forward(m, &b, NULL, err, sizeof err);
        set_B(&v, B0, z + (int64_t)i * d, -eps);
        float lm = ftb_model_forward(m, &b, NULL, err, sizeof err);
        pg[i] = ((double)lp - lm) / (2.0 * eps);
        mean_loss += ((double)lp + lm) / (2 * Q);
    }
    double max_err = 0, max_ref = 0;
    for (int64_t k = 0; k < d; k++) {
        double expect = 0;
        for (int i = 0; i < Q; i++) expect -= lr * pg[i] * z[(int64_t)i * d + k] / Q;
        max_err = fmax(max_err, fabs((B1[k] - (double)B0[k]) - expect));
        max_ref = fmax(max_ref, fabs(expect));
    }
    /* pg as the plugin used it: ΔB = Σ cᵢ·zᵢ with cᵢ = −lr·pgᵢ/n */
    double G[Q * Q], c[Q];
    for (int i = 0; i < Q; i++) {
        for (int j = 0; j < Q; j++) G[i * Q + j] = dot(z + (int64_t)i * d, z + (int64_t)j * d, d);
        c[i] = 0;
        for (int64_t k = 0; k < d; k++) c[i] += (double)z[(int64_t)i * d + k] * ((double)B1[k] - B0[k]);
    }
    solve(G, c, Q);
    double pg_scale = 0;
    for (int i = 0; i < Q; i++) pg_scale = fmax(pg_scale, fabs(pg[i]));
    for (int i = 0; i < Q; i++) {
        double pg_plugin = -c[i] * Q / lr;
        SAY("prge: query %d  pg batched %+.6f  separate forwards %+.6f\n", i, pg_plugin, pg[i]);
        cr_expect(fabs(pg_plugin - pg[i]) < 2e-3 * pg_scale, "query %d: pg %g batched, %g separately", i, pg_plugin,
                  pg[i]);
    }
    SAY("prge: update vs mean(pg_i z_i): max error %.2e of max %.2e; loss %.7f vs %.7f\n", max_err, max_ref,
        (double)r.loss, mean_loss);
    cr_expect(max_err < 2e-3 * max_ref, "update off by %g (max %g)", max_err, max_ref);
    cr_expect(fabs(r.loss - mean_loss) < 1e-5 * mean_loss, "loss %f vs %f", (double)r.loss, mean_loss);
    p.method->destroy(st);

    /* dual=0: the same queries as two forwards of n slices, same update */
    vals[1] = "0";
    st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    v = prge_views(m);
    set_B(&v, B0, NULL, 0);
    cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
    cr_expect_eq(r.forward_passes, 2);
    p.method->trainable(st, &Bs);
    gather(B1_single, Bs, nB);
    double diff = 0;
    for (int64_t k = 0; k < d; k++) diff = fmax(diff, fabs((double)B1_single[k] - B1[k]));
    SAY("prge: dual=0 vs dual=1 update: max difference %.2e\n", diff);
    cr_expect(diff < 1e-3 * max_ref, "dual=0 update differs by %g", diff);
    p.method->destroy(st);
    free(B0);
    free(B1);
    free(B1_single);
    free(z);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* ---- MeZO with LoRA parameters ------------------------------------------ */

/* params=lora: the hook is LoRA (loss of the merged W + s·B·A), the base is
 * never written, A and B both move, nothing has a gradient. */
Test(zo, mezo_lora_trains_only_the_adapters)
{
    ftb_plugin p;
    th_open_method("mezo", &p);
    ftb_model *m = tiny_model(27, 1), *merged = tiny_model(27, 1);
    const char *keys[] = { "params", "rank", "alpha", "targets" }, *vals[] = { "lora", "4", "8", "q,v,down" };
    ftb_options o = { 4, keys, vals };
    ftb_session s = session_for(m, &o, 1e-2f);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    cr_assert_eq(n, 2 * 3 * m->cfg.n_layers);
    ftb_rng rng;
    ftb_rng_seed(&rng, 3);
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < params[i]->numel; j++) params[i]->data[j] = 0.2f * ftb_rng_normal(&rng);
    const int kinds[] = { FTB_LIN_Q, FTB_LIN_V, FTB_LIN_DOWN };
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < 3; k++) {
            ftb_tensor *A = params[2 * (l * 3 + k)], *B = params[2 * (l * 3 + k) + 1];
            ftb_tensor *W = ftb_layer_weight(&merged->layers[l], kinds[k]);
            ftb_gemm(0, 0, (int)W->shape[0], (int)W->shape[1], 4, 2.0f, B->data, 4, A->data, (int)W->shape[1], 1.0f,
                     W->data, (int)W->shape[1]);
        }
    int32_t tok[2 * 16], tgt[2 * 16];
    ftb_batch b = th_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
    float l_hook = ftb_model_forward(m, &b, NULL, err, sizeof err),
          l_merged = ftb_model_forward(merged, &b, NULL, err, sizeof err);
    cr_expect(fabsf(l_hook - l_merged) < 1e-5f * l_merged, "hook %f vs merged %f", l_hook, l_merged);

    int64_t d = total_numel(params, n), base_n = 0;
    for (int i = 0; i < m->n_params; i++) base_n += m->params[i]->numel;
    float *before = malloc(sizeof(float) * d), *after = malloc(sizeof(float) * d);
    float *base = malloc(sizeof(float) * base_n), *base_after = malloc(sizeof(float) * base_n);
    gather(before, params, n);
    gather(base, m->params, m->n_params);
    for (int k = 0; k < 3; k++) {
        ftb_step_result r = { 0 };
        cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
    }
    gather(after, params, n);
    gather(base_after, m->params, m->n_params);
    cr_expect_eq(memcmp(base, base_after, sizeof(float) * base_n), 0, "a base weight changed");
    for (int i = 0, off = 0; i < n; off += (int)params[i]->numel, i++) {
        int moved = 0;
        for (int64_t j = 0; j < params[i]->numel; j++) moved |= before[off + j] != after[off + j];
        cr_expect(moved, "%s did not move", params[i]->name);
        cr_expect_null(params[i]->grad);
    }
    for (int i = 0; i < m->n_params; i++) cr_expect_null(m->params[i]->grad);
    free(before);
    free(after);
    free(base);
    free(base_after);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_model_free(merged);
    ftb_plugin_close(&p);
}

/* A mapped checkpoint's weights are read-only pages: mezo makes them
 * writable (copied out, counted as trainable) without any gradient. */
Test(zo, mezo_trains_a_mapped_checkpoint_without_gradients)
{
    ftb_plugin p;
    th_open_method("mezo", &p);
    ftb_model *src = tiny_model(28, 1);
    char dir[] = "/tmp/ftbench_zo_XXXXXX", err[FTB_ERR_LEN] = "";
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(ftb_model_save(src, dir, err, sizeof err), 0, "%s", err);
    ftb_model_free(src);
    ftb_model *m = ftb_model_load(dir, 1, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    int mapped = 0;
    for (int i = 0; i < m->n_params; i++) mapped += m->params[i]->mapped;
    cr_assert_gt(mapped, 0, "nothing was mapped: the test would not test anything");
    ftb_options none = { 0, NULL, NULL };
    ftb_session s = session_for(m, &none, 1e-3f);
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_mem_stats mem;
    ftb_mem_get_stats(&mem);
    cr_expect_eq(mem.live[FTB_MEM_GRADS], 0);
    for (int i = 0; i < m->n_params; i++) {
        cr_expect(!m->params[i]->mapped && m->params[i]->writable, "%s is not writable", m->params[i]->name);
        cr_expect_null(m->params[i]->grad);
    }
    int32_t tok[16], tgt[16];
    ftb_batch b = th_batch(tok, tgt, 1, 16, m->cfg.vocab_size);
    ftb_step_result r = { 0 };
    cr_expect_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
    p.method->destroy(st);
    ftb_model_free(m);
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
    ftb_plugin_close(&p);
}

/* ---- 5. learning -------------------------------------------------------- */

static double mean_of(const float *x, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

/* 100 steps on one repeated batch of a learnable sequence: the loss falls. */
static void learns(const char *method, const ftb_options *o, float lr, int steps, double min_drop)
{
    ftb_plugin p;
    th_open_method(method, &p);
    ftb_model *m = tiny_model(29, 0);
    int32_t tok[2 * 32], tgt[2 * 32];
    ftb_batch b = th_batch(tok, tgt, 2, 32, m->cfg.vocab_size);
    ftb_session s = session_for(m, o, lr);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    float *loss = malloc(sizeof(float) * steps);
    double t_fwd = 0, t_opt = 0;
    for (int k = 0; k < steps; k++) {
        ftb_step_result r = { 0 };
        cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
        cr_assert(isfinite(r.loss), "step %d: loss %f", k, r.loss);
        loss[k] = r.loss;
        t_fwd += r.t_forward;
        t_opt += r.t_optim;
    }
    double first = mean_of(loss, 10), last = mean_of(loss + steps - 10, 10);
    SAY("%s: %d steps at lr %g: loss %.4f -> %.4f (forward %.3f s, zo sweeps %.3f s)\n", method, steps, lr, first, last,
        t_fwd, t_opt);
    cr_expect_lt(last, first - min_drop, "%s: loss %.4f -> %.4f", method, first, last);
    cr_expect_gt(t_fwd, 0);
    cr_expect_gt(t_opt, 0);
    free(loss);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(zo, mezo_full_learns_a_repeated_batch)
{
    ftb_options none = { 0, NULL, NULL };
    learns("mezo", &none, 2e-3f, 100, 0.05);
}

Test(zo, prge_learns_a_repeated_batch)
{
    ftb_options none = { 0, NULL, NULL };
    learns("prge", &none, 5e-2f, 100, 0.05);
}

/* ---- 6. options --------------------------------------------------------- */

static void rejects(const char *method, const char *key, const char *value, const char *expect)
{
    ftb_plugin p;
    th_open_method(method, &p);
    ftb_model *m = tiny_model(30, 0);
    const char *keys[] = { key }, *vals[] = { value };
    ftb_options o = { 1, keys, vals };
    ftb_session s = session_for(m, &o, 1e-3f);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_expect_null(st, "%s: %s=%s accepted", method, key, value);
    if (st) p.method->destroy(st);
    cr_expect(strstr(err, expect) != NULL, "%s: %s=%s: error was '%s'", method, key, value, err);
    ftb_mem_stats mem;
    ftb_mem_get_stats(&mem);
    int64_t weights = mem.live[FTB_MEM_WEIGHTS] + mem.live[FTB_MEM_TRAINABLE];
    ftb_model_free(m);
    ftb_mem_get_stats(&mem);
    cr_expect_eq(mem.live_total, 0, "%s: %s=%s: %lld bytes left after a refused init (weights %lld)", method, key,
                 value, (long long)mem.live_total, (long long)weights);
    ftb_plugin_close(&p);
}

Test(zo, bad_options_are_refused_clearly)
{
    rejects("mezo", "params", "half", "option params: 'half'");
    rejects("mezo", "eps", "0", "option eps");
    rejects("mezo", "eps", "-1e-3", "option eps");
    rejects("mezo", "eps", "small", "option eps: 'small' is not a number");
    rejects("mezo", "weight_decay", "-0.1", "option weight_decay");
    rejects("mezo", "rank", "0", "option rank");
    rejects("mezo", "targets", "q,zz", "unknown linear layer 'zz'");
    rejects("mezo", "alpha", "0", "option alpha");
    rejects("prge", "queries", "0", "option queries: 0 is not in 1..64");
    rejects("prge", "queries", "65", "option queries");
    rejects("prge", "queries", "four", "option queries: 'four' is not an integer");
    rejects("prge", "dual", "2", "option dual");
    rejects("prge", "eps", "-1", "option eps");
    rejects("prge", "rank", "5000", "option rank");
    rejects("prge", "targets", "", "option targets");
    rejects("prge", "alpha", "1e999", "option alpha");
}

/* ---- reports (FTBENCH_ZO_REPORT=1): the figures of docs/methods/ -------- */

static int reporting(void) { return getenv("FTBENCH_ZO_REPORT") != NULL; }

typedef struct {
    double mean, sd;
} mean_sd;

static mean_sd stats_of(const double *x, int n)
{
    double m = 0, v = 0;
    for (int i = 0; i < n; i++) m += x[i] / n;
    for (int i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m) / (n > 1 ? n - 1 : 1);
    return (mean_sd){ m, sqrt(v) };
}

/* Cosine of the zeroth-order estimate to the exact gradient against the
 * number of queries it averages: MeZO (full parameters; K steps' pg·z
 * averaged) and P-RGE (B of LoRA-FA; one step with n queries), on the tiny
 * model, each figure over R independent estimates. */
Test(zo, report_estimate_quality)
{
    if (!reporting()) cr_skip_test("set FTBENCH_ZO_REPORT=1");
    int32_t tok[2 * 20], tgt[2 * 20];

    /* MeZO */
    ftb_plugin p;
    th_open_method("mezo", &p);
    ftb_model *m = tiny_model(21, 1);
    ftb_batch b = th_batch(tok, tgt, 2, 20, m->cfg.vocab_size);
    int64_t d;
    float *grad = exact_gradient("tiny", 21, &b, &d);
    ftb_options none = { 0, NULL, NULL };
    ftb_session s = session_for(m, &none, 1.0f);
    char err[FTB_ERR_LEN] = "";
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    float *theta0 = malloc(sizeof(float) * d), *theta = malloc(sizeof(float) * d), *est = malloc(sizeof(float) * d);
    double *sum = malloc(sizeof(double) * d), cosines[64];
    gather(theta0, params, n);
    fprintf(stderr, "MeZO, full parameters, tiny model (d = %lld), eps 1e-3\n", (long long)d);
    fprintf(stderr, "| queries K | estimates | mean cos(estimate, exact gradient) | sd | 1/sqrt(1+(d+1)/K) |\n");
    const int Ks[] = { 1, 4, 16, 64, 256 }, Rs[] = { 64, 64, 64, 16, 8 };
    for (int ki = 0; ki < 5; ki++) {
        for (int rep = 0; rep < Rs[ki]; rep++) {
            memset(sum, 0, sizeof(double) * d);
            for (int k = 0; k < Ks[ki]; k++) {
                ftb_step_result r = { 0 };
                cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
                gather(theta, params, n);
                for (int64_t i = 0; i < d; i++) sum[i] += ((double)theta0[i] - theta[i]) / s.lr;
                scatter(params, n, theta0);
            }
            for (int64_t i = 0; i < d; i++) est[i] = (float)(sum[i] / Ks[ki]);
            cosines[rep] = cosine(est, grad, d);
        }
        mean_sd c = stats_of(cosines, Rs[ki]);
        fprintf(stderr, "| %d | %d | %.4f | %.4f | %.4f |\n", Ks[ki], Rs[ki], c.mean, c.sd,
                1.0 / sqrt(1.0 + (double)(d + 1) / Ks[ki]));
    }
    free(theta0);
    free(theta);
    free(est);
    free(sum);
    free(grad);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);

    /* P-RGE: the exact gradient of B at B = 0 is s·G·Aᵀ, G = dL/dW of the
     * base (LoRA's chain rule, checked in tests/test_methods.c). */
    th_open_method("prge", &p);
    fprintf(stderr, "P-RGE, B of rank-8 LoRA-FA on all seven linears, tiny model, eps 1e-2, dual\n");
    fprintf(stderr, "| queries n | estimates | mean cos(estimate, exact gradient) | sd | 1/sqrt(1+(d+1)/n) |\n");
    const int Ns[] = { 1, 2, 4, 8, 16 };
    for (int ni = 0; ni < 5; ni++) {
        m = tiny_model(21, 1);
        char n_s[8];
        snprintf(n_s, sizeof n_s, "%d", Ns[ni]);
        const char *keys[] = { "queries" }, *vals[] = { n_s };
        ftb_options o = { 1, keys, vals };
        s = session_for(m, &o, 1.0f);
        st = p.method->init(&s, err, sizeof err);
        cr_assert_not_null(st, "%s", err);
        ftb_tensor **Bs;
        int nB = p.method->trainable(st, &Bs);
        prge_adapters v = prge_views(m);
        ftb_model *g = tiny_model(21, 1);
        ftb_model_set_trainable(g, 1);
        cr_assert_eq(ftb_model_alloc_grads(g, err, sizeof err), 0, "%s", err);
        cr_assert(!isnan(ftb_model_forward_backward(g, &b, NULL, err, sizeof err)), "%s", err);
        int64_t dB = total_numel(Bs, nB);
        float *gB = malloc(sizeof(float) * dB), *B1 = malloc(sizeof(float) * dB), *e = malloc(sizeof(float) * dB);
        for (int l = 0, a = 0, off = 0; l < m->cfg.n_layers; l++)
            for (int k = 0; k < FTB_LIN_COUNT; k++, a++) {
                ftb_tensor *W = ftb_layer_weight(&g->layers[l], k), *A = &v.a[a]->A;
                int out = (int)W->shape[0], in = (int)W->shape[1], r = (int)A->shape[0];
                ftb_gemm(0, 1, out, r, in, v.a[a]->scale, W->grad, in, A->data, in, 0.0f, gB + off, r);
                off += out * r;
            }
        ftb_model_free(g);
        int R = 64;
        for (int rep = 0; rep < R; rep++) {
            ftb_step_result r = { 0 };
            cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
            gather(B1, Bs, nB);
            for (int64_t i = 0; i < dB; i++) e[i] = -B1[i] / s.lr; /* B was 0 */
            for (int i = 0; i < nB; i++) memset(Bs[i]->data, 0, sizeof(float) * Bs[i]->numel);
            cosines[rep] = cosine(e, gB, dB);
        }
        mean_sd c = stats_of(cosines, R);
        fprintf(stderr, "| %d | %d | %.4f | %.4f | %.4f |\n", Ns[ni], R, c.mean, c.sd,
                1.0 / sqrt(1.0 + (double)(dB + 1) / Ns[ni]));
        free(gB);
        free(B1);
        free(e);
        p.method->destroy(st);
        ftb_model_free(m);
    }
    ftb_plugin_close(&p);
}

/* Peak of the core's accounting for one step of each method against one
 * inference forward, on a zoo model at two sequence lengths (batch 1). */
static int64_t method_peak(const char *method, ftb_model *m, const ftb_batch *b, int n_opts, const char **keys,
                           const char **vals, int64_t *saved, double *seconds)
{
    ftb_plugin p;
    th_open_method(method, &p);
    ftb_options o = { n_opts, keys, vals };
    ftb_session s = session_for(m, &o, 1e-5f);
    char err[FTB_ERR_LEN] = "";
    ftb_mem_reset_peaks();
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "%s: %s", method, err);
    ftb_step_result r = { 0 };
    double t0 = ftb_now();
    cr_assert_eq(p.method->step(st, &s, b, &r, err, sizeof err), 0, "%s: %s", method, err);
    *seconds = ftb_now() - t0;
    ftb_mem_stats mem;
    ftb_mem_get_stats(&mem);
    *saved = mem.peak[FTB_MEM_SAVED];
    p.method->destroy(st);
    ftb_model_set_trainable(m, 0);
    for (int i = 0; i < m->n_params; i++) { /* a full method's gradients die with the model: drop them now */
        ftb_free(m->params[i]->grad);
        m->params[i]->grad = NULL;
    }
    ftb_plugin_close(&p);
    return mem.peak_total;
}

Test(zo, report_memory, .timeout = 3600)
{
    if (!reporting()) cr_skip_test("set FTBENCH_ZO_REPORT=1");
    const char *model_name = getenv("FTBENCH_ZO_REPORT_MODEL") ? getenv("FTBENCH_ZO_REPORT_MODEL") : "smollm2-135m";
    ftb_set_threads(2);
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get(model_name, &cfg), 0);
    char err[FTB_ERR_LEN] = "";
    ftb_model *m = ftb_model_create(&cfg, 42, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    fprintf(stderr, "%s, batch 1, core accounting (MiB = 2^20 bytes); weights %.1f MiB\n", model_name,
            4.0 * ftb_config_param_count(&cfg) / 1048576.0);
    fprintf(stderr, "| seq | method | peak MiB | vs inference forward | saved MiB | step s |\n");
    const int seqs[] = { 256, 1024 };
    for (int si = 0; si < 2; si++) {
        int T = seqs[si];
        int32_t *tok = malloc(sizeof(int32_t) * T), *tgt = malloc(sizeof(int32_t) * T);
        ftb_batch b = th_batch(tok, tgt, 1, T, cfg.vocab_size);
        ftb_mem_reset_peaks();
        double t0 = ftb_now();
        cr_assert(!isnan(ftb_model_forward(m, &b, NULL, err, sizeof err)), "%s", err);
        double tf = ftb_now() - t0;
        ftb_mem_stats mem;
        ftb_mem_get_stats(&mem);
        int64_t fwd = mem.peak_total;
        fprintf(stderr, "| %d | inference forward | %.1f | 1.000 | %.1f | %.2f |\n", T, fwd / 1048576.0,
                mem.peak[FTB_MEM_SAVED] / 1048576.0, tf);
        struct {
            const char *label, *method;
            int n;
            const char *k[2], *v[2];
        } rows[] = {
            { "mezo (params=full)", "mezo", 0, { 0 }, { 0 } },
            { "mezo (params=lora, q,v r8)", "mezo", 1, { "params" }, { "lora" } },
            { "prge (n=1, dual)", "prge", 1, { "queries" }, { "1" } },
            { "prge (n=4, dual)", "prge", 1, { "queries" }, { "4" } },
            { "prge (n=16, dual)", "prge", 1, { "queries" }, { "16" } },
            { "lora (backprop, AdamW, r8 all)", "lora", 0, { 0 }, { 0 } },
        };
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
            int64_t saved;
            double secs;
            int64_t peak = method_peak(rows[i].method, m, &b, rows[i].n, rows[i].k, rows[i].v, &saved, &secs);
            fprintf(stderr, "| %d | %s | %.1f | %.3f | %.1f | %.2f |\n", T, rows[i].label, peak / 1048576.0,
                    (double)peak / fwd, saved / 1048576.0, secs);
        }
        free(tok);
        free(tgt);
    }
    ftb_model_free(m);
}
