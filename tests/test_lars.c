/*
 * test_lars.c — the LARS plugin (methods/lars/), suite "lars", loaded as a
 * user's run loads it (dlopen from the methods directory).
 *
 *  - oracle: loss and the gradient of every LARS parameter against
 *    tests/oracle/gen_lars.py (float64 PyTorch, LARS written from its
 *    equations), on the gqa_bias / tied_mha base fixtures, with padded rows
 *    and a row without any target; flash and eager attention, and a block
 *    recomputed in backward (FTB_KEEP_INPUT).  Tolerances:
 *      loss  |a−b| / |b| ≤ 1e-5
 *      grads max|a−b| / max|b| ≤ 1e-4 per tensor;
 *  - finite differences in fp32 on α, τ1, τ2, M, A, B, G_x, G_h, LayerNorm
 *    and FFN entries, with dropout 0 and with dropout 0.5 (which checks that
 *    backward regenerates forward's mask):  |fd − g| ≤ max(2e-2·|fd|, 1e-4);
 *  - memory: saved activations above the frozen base's own are exactly
 *    Σ_adapters 4·B·(H + 10r + 1) bytes at T and at 4T, while LoRA's grow ∝ T;
 *  - bad options are refused with a message naming the option;
 *  - it learns; masks repeat within a step and change between steps;
 *  - pool=prompt: finite differences on prompt→answer rows, an empty prompt
 *    (p = 0) stays finite; causality: with one kept target at t per row,
 *    changing a token after t moves the loss at t under pool=all/valid
 *    (leak) and leaves it bit-identical under pool=prompt.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftbench.h"
#include "plugin.h"
#include "helpers.h"

#define LARS_LOSS_TOL 1e-5
#define LARS_GRAD_TOL 1e-4
#define FD_STEP       1e-2
#define FD_REL        2e-2
#define FD_ABS        1e-4
#define LARS_NT       14 /* tensors per adapter */

static const char *fixtures_dir(void)
{
    const char *d = getenv("FTBENCH_ORACLE_DIR");
    return d && *d ? d : "tests/oracle/fixtures";
}

/* ---- a minimal safetensors reader (F32, I32, string metadata) ----------- */

typedef struct {
    char name[160];
    char dtype[8];
    int64_t numel;
    int64_t shape[2];
    const unsigned char *data;
} st_entry;

typedef struct {
    unsigned char *buf;
    st_entry *e;
    int n;
    json_t *meta;
} st_file;

static void st_open(st_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "cannot open %s (run tests/oracle/gen_lars.py)", path);
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f->buf = malloc((size_t)sz);
    cr_assert(f->buf && fread(f->buf, 1, (size_t)sz, fp) == (size_t)sz, "cannot read %s", path);
    fclose(fp);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | f->buf[i];
    cr_assert(sz >= 8 && hl <= (uint64_t)sz - 8, "%s: bad header length", path);
    json_error_t je;
    json_t *h = json_loadb((const char *)f->buf + 8, (size_t)hl, 0, &je);
    cr_assert(h && json_is_object(h), "%s: bad header: %s", path, je.text);
    f->e = calloc(json_object_size(h), sizeof *f->e);
    const unsigned char *base = f->buf + 8 + hl;
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v)
    {
        if (!strcmp(key, "__metadata__")) {
            f->meta = json_incref(v);
            continue;
        }
        st_entry *e = &f->e[f->n++];
        snprintf(e->name, sizeof e->name, "%s", key);
        snprintf(e->dtype, sizeof e->dtype, "%s", json_string_value(json_object_get(v, "dtype")));
        json_t *shape = json_object_get(v, "shape");
        e->numel = 1;
        for (size_t i = 0; i < json_array_size(shape); i++) {
            int64_t s = json_integer_value(json_array_get(shape, i));
            if (i < 2) e->shape[i] = s;
            e->numel *= s;
        }
        uint64_t a = json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 0));
        uint64_t b = json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 1));
        cr_assert(b >= a && b <= (uint64_t)sz - 8 - hl && b - a == (uint64_t)e->numel * 4, "%s: bad offsets for %s",
                  path, key);
        e->data = base + a;
    }
    json_decref(h);
}

static void st_close(st_file *f)
{
    json_decref(f->meta);
    free(f->buf);
    free(f->e);
}

static const st_entry *st_get(const st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].name, name)) return &f->e[i];
    return NULL;
}

static float st_f32(const st_entry *e, int64_t i)
{
    float x;
    memcpy(&x, e->data + 4 * i, 4);
    return x;
}

static const char *st_meta_opt(const st_file *f, const char *key)
{
    return json_string_value(json_object_get(f->meta, key));
}

static const char *st_meta(const st_file *f, const char *key)
{
    const char *s = json_string_value(json_object_get(f->meta, key));
    cr_assert(s, "fixture metadata has no '%s'", key);
    return s;
}

/* ---- helpers ------------------------------------------------------------ */

static void *init_lars(ftb_plugin *p, ftb_session *s)
{
    char err[FTB_ERR_LEN] = "";
    void *st = p->method->init(s, err, sizeof err);
    cr_assert_not_null(st, "lars init: %s", err);
    return st;
}

static void zero_grads(ftb_tensor **t, int n)
{
    for (int i = 0; i < n; i++) memset(t[i]->grad, 0, sizeof(float) * (size_t)t[i]->numel);
}

/* The tiny zoo model (GQA, qkv bias) with weights std ~0.2 so that
 * gradients are well above fp32 rounding. */
static ftb_model *tiny_model(uint64_t seed)
{
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, seed, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    for (int i = 0; i < m->n_params; i++)
        if (!strstr(m->params[i]->name, "norm"))
            for (int64_t j = 0; j < m->params[i]->numel; j++) m->params[i]->data[j] *= 10.0f;
    return m;
}

/* Rows of T tokens; targets are the next token, none on the last position,
 * and row 1 (if any) padded: its last third carries no target. */
static ftb_batch padded_batch(int32_t *tok, int32_t *tgt, int B, int T, int V)
{
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7 + 3) % V;
    for (int i = 0; i < B * T; i++) tgt[i] = (i + 1) % T ? tok[i + 1] : FTB_IGNORE_INDEX;
    if (B > 1)
        for (int t = T - T / 3; t < T; t++) tgt[T + t] = FTB_IGNORE_INDEX;
    return (ftb_batch){ B, T, tok, tgt };
}

/* Non-trivial LARS parameters (B, G ≠ 0, M ≠ I), as the oracle uses. */
static void randomise(ftb_tensor **t, int n, uint64_t seed)
{
    ftb_rng rng;
    ftb_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) {
        const char *name = strstr(t[i]->name, ".lars.") + 6;
        for (int64_t j = 0; j < t[i]->numel; j++) {
            float z = ftb_rng_normal(&rng);
            float v = 0.3f * z;
            if (!strcmp(name, "M"))
                v = (j % (t[i]->shape[1] + 1) == 0 ? 1.0f : 0.0f) + 0.3f * z;
            else if (!strcmp(name, "ln.weight"))
                v = 1.0f + 0.2f * z;
            else if (!strcmp(name, "alpha") || !strcmp(name, "tau1") || !strcmp(name, "tau2"))
                v = 0.8f + 0.2f * z;
            else if (!strcmp(name, "G_x"))
                v = 0.15f * z;
            else if (strstr(name, "bias"))
                v = 0.1f * z;
            t[i]->data[j] = v;
        }
    }
}

/* ---- oracle ------------------------------------------------------------- */

static void run_oracle(const char *case_name, ftb_attention_impl attn, ftb_keep_policy keep)
{
    char path[1024], err[FTB_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/%s/expected.safetensors", fixtures_dir(), case_name);
    st_file fx;
    st_open(&fx, path);
    snprintf(path, sizeof path, "%s/%s", fixtures_dir(), st_meta(&fx, "base"));
    ftb_model *m = ftb_model_load(path, 1, err, sizeof err);
    cr_assert(m, "ftb_model_load(%s): %s", path, err);

    ftb_plugin p;
    th_open_method("lars", &p);
    const char *keys[4] = { "rank", "targets" }, *vals[4] = { st_meta(&fx, "rank"), st_meta(&fx, "targets") };
    if (st_meta_opt(&fx, "variant")) { /* gated: no pool, no dropout */
        keys[2] = "variant", vals[2] = st_meta(&fx, "variant");
        keys[3] = "block", vals[3] = st_meta(&fx, "block");
    } else {
        keys[2] = "pool", vals[2] = st_meta(&fx, "pool");
        keys[3] = "dropout", vals[3] = "0";
    }
    ftb_options opts = { 4, keys, vals };
    ftb_session s = th_session(m, &opts);
    s.run.attention = attn;
    ftb_keep_policy *policy = malloc(sizeof *policy * m->cfg.n_layers);
    for (int l = 0; l < m->cfg.n_layers; l++) policy[l] = keep;
    s.run.keep = policy;
    void *st = init_lars(&p, &s);

    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    int n_expected = 0;
    for (int i = 0; i < fx.n; i++) n_expected += !strncmp(fx.e[i].name, "param.", 6);
    cr_assert_eq(n, n_expected, "[%s] plugin has %d LARS tensors, the oracle %d", case_name, n, n_expected);
    for (int i = 0; i < n; i++) {
        char name[200];
        snprintf(name, sizeof name, "param.%s", params[i]->name);
        const st_entry *e = st_get(&fx, name);
        cr_assert(e, "[%s] oracle has no %s", case_name, name);
        cr_assert_eq(e->numel, params[i]->numel, "[%s] %s: %lld entries, oracle %lld", case_name, name,
                     (long long)params[i]->numel, (long long)e->numel);
        for (int64_t j = 0; j < e->numel; j++) params[i]->data[j] = st_f32(e, j);
    }
    const st_entry *tok = st_get(&fx, "tokens"), *tgt = st_get(&fx, "targets");
    ftb_batch b = { (int)tok->shape[0], (int)tok->shape[1], (const int32_t *)tok->data, (const int32_t *)tgt->data };
    float ref_loss = st_f32(st_get(&fx, "loss"), 0);
    const char *tag = attn == FTB_ATTN_FLASH ? (keep == FTB_KEEP_ALL ? "flash" : "flash/recompute") : "eager";

    zero_grads(params, n);
    float loss = ftb_model_forward_backward(m, &b, &s.run, err, sizeof err);
    cr_assert(isfinite(loss), "[%s %s] forward_backward: %s", case_name, tag, err);
    cr_expect(fabs(loss - ref_loss) <= LARS_LOSS_TOL * fabs(ref_loss), "[%s %s] loss %.8g vs oracle %.8g", case_name,
              tag, loss, ref_loss);
    double worst = 0;
    const char *worst_name = "(none)";
    for (int i = 0; i < n; i++) {
        char name[200];
        snprintf(name, sizeof name, "grad.%s", params[i]->name);
        const st_entry *e = st_get(&fx, name);
        cr_assert(e, "[%s] oracle has no %s", case_name, name);
        double maxdiff = 0, maxref = 0;
        for (int64_t j = 0; j < e->numel; j++) {
            double d = fabs((double)params[i]->grad[j] - st_f32(e, j));
            if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates */
            maxref = fmax(maxref, fabs(st_f32(e, j)));
        }
        /* a gated α's gradient is a sum whose terms cancel: its error is
         * measured against the sum of their magnitudes (gen_lars.py) */
        snprintf(name, sizeof name, "absterms.%s", params[i]->name);
        const st_entry *abs_terms = st_get(&fx, name);
        if (abs_terms) maxref = fmax(maxref, st_f32(abs_terms, 0));
        double rel = maxdiff / fmax(maxref, 1e-6);
        if (!(rel <= worst)) {
            worst = rel;
            worst_name = params[i]->name;
        }
    }
    cr_expect(worst <= LARS_GRAD_TOL, "[%s %s] worst gradient relative error %.3g in %s", case_name, tag, worst,
              worst_name);
    if (getenv("FTBENCH_ORACLE_VERBOSE"))
        fprintf(stderr, "[%s %s] loss rel err %.2e, worst grad rel err %.2e in %s\n", case_name, tag,
                fabs(loss - ref_loss) / fabs(ref_loss), worst, worst_name);
    for (int i = 0; i < m->n_params; i++)
        cr_expect_null(m->params[i]->grad, "LARS trained base tensor %s", m->params[i]->name);

    /* inference mode: the same function (dropout is 0) */
    float floss = ftb_model_forward(m, &b, &s.run, err, sizeof err);
    cr_expect(fabs(floss - ref_loss) <= LARS_LOSS_TOL * fabs(ref_loss), "[%s %s] forward loss %.8g vs oracle %.8g",
              case_name, tag, floss, ref_loss);

    p.method->destroy(st);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) cr_expect_null(m->layers[l].adapter[k], "destroy left a hook attached");
    free(policy);
    ftb_model_free(m);
    ftb_plugin_close(&p);
    st_close(&fx);
}

Test(lars, oracle_all_linears_pool_valid_flash) { run_oracle("lars_gqa_all", FTB_ATTN_FLASH, FTB_KEEP_ALL); }
Test(lars, oracle_all_linears_pool_valid_eager) { run_oracle("lars_gqa_all", FTB_ATTN_EAGER, FTB_KEEP_ALL); }
Test(lars, oracle_all_linears_recomputed_blocks) { run_oracle("lars_gqa_all", FTB_ATTN_FLASH, FTB_KEEP_INPUT); }
Test(lars, oracle_tied_qv_pool_all_flash) { run_oracle("lars_tied_qv", FTB_ATTN_FLASH, FTB_KEEP_ALL); }
Test(lars, oracle_tied_qv_pool_all_eager) { run_oracle("lars_tied_qv", FTB_ATTN_EAGER, FTB_KEEP_ALL); }
/* Variant gated: U, V, α of every adapter; layer 0's gradients also check
 * the input gradient dx that layer 1's gated hooks pass down. */
Test(lars, oracle_gated_all_linears_flash) { run_oracle("lars_gated_gqa_all", FTB_ATTN_FLASH, FTB_KEEP_ALL); }
Test(lars, oracle_gated_all_linears_eager) { run_oracle("lars_gated_gqa_all", FTB_ATTN_EAGER, FTB_KEEP_ALL); }
Test(lars, oracle_gated_all_linears_recomputed_blocks)
{
    run_oracle("lars_gated_gqa_all", FTB_ATTN_FLASH, FTB_KEEP_INPUT);
}
Test(lars, oracle_gated_partial_blocks_tied) { run_oracle("lars_gated_tied", FTB_ATTN_FLASH, FTB_KEEP_ALL); }

/* ---- finite differences ------------------------------------------------- */

static float fd_loss(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o)
{
    char err[FTB_ERR_LEN] = "";
    /* forward_backward, not forward: a training pass, so dropout (if any)
     * applies with this step's mask.  Its gradients are not read. */
    float l = ftb_model_forward_backward(m, b, o, err, sizeof err);
    cr_assert(isfinite(l), "%s", err);
    return l;
}

/* Prompt→answer rows: row 0's targets start at position 4, row 1's at 2
 * (and row 1 is padded), so pool=prompt pools 4 and 2 positions. */
static void prompt_targets(int32_t *tgt, int T)
{
    for (int t = 0; t < 4; t++) tgt[t] = FTB_IGNORE_INDEX;
    for (int t = 0; t < 2; t++) tgt[T + t] = FTB_IGNORE_INDEX;
}

static void run_gradcheck(const char *dropout, ftb_keep_policy keep, const char *pool)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(21);
    const char *keys[] = { "rank", "targets", "dropout", "pool" }, *vals[] = { "4", "q,v,o,down", dropout, pool };
    ftb_options opts = { 4, keys, vals };
    ftb_session s = th_session(m, &opts);
    ftb_keep_policy policy[2] = { keep, keep };
    s.run.keep = policy;
    void *st = init_lars(&p, &s);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    randomise(params, n, 77);
    int32_t tok[2 * 12], tgt[2 * 12];
    ftb_batch b = padded_batch(tok, tgt, 2, 12, m->cfg.vocab_size);
    if (!strcmp(pool, "prompt")) prompt_targets(tgt, 12);

    zero_grads(params, n);
    fd_loss(m, &b, &s.run);
    float **analytic = calloc((size_t)n, sizeof *analytic);
    for (int i = 0; i < n; i++) {
        analytic[i] = malloc(sizeof(float) * (size_t)params[i]->numel);
        memcpy(analytic[i], params[i]->grad, sizeof(float) * (size_t)params[i]->numel);
    }
    /* first adapter (layer 0 q_proj) and last (layer 1 down_proj): every
     * tensor's largest-|grad| entry */
    int checked = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        if (i >= LARS_NT && i < n - LARS_NT) continue;
        ftb_tensor *t = params[i];
        int64_t jmax = 0;
        for (int64_t j = 1; j < t->numel; j++)
            if (fabsf(analytic[i][j]) > fabsf(analytic[i][jmax])) jmax = j;
        float w = t->data[jmax];
        float h = (float)(FD_STEP * fmax(fabs(w), 1.0));
        t->data[jmax] = w + h;
        double lp = fd_loss(m, &b, &s.run);
        t->data[jmax] = w - h;
        double lm = fd_loss(m, &b, &s.run);
        t->data[jmax] = w;
        double fd = (lp - lm) / (2.0 * h), g = analytic[i][jmax];
        int ok = fabs(fd - g) <= fmax(FD_REL * fabs(fd), FD_ABS);
        cr_expect(ok, "[dropout %s pool %s] %s[%lld]: analytic %.6g, finite difference %.6g", dropout, pool, t->name,
                  (long long)jmax, g, fd);
        cr_expect(fabs(g) > 5 * FD_ABS, "%s: largest gradient %.3g is too small to check", t->name, g);
        if (getenv("FTBENCH_GRADCHECK_VERBOSE"))
            fprintf(stderr, "[dropout %s pool %s] %-40s analytic %+.6e fd %+.6e\n", dropout, pool, t->name, g, fd);
        checked++;
        failed += !ok;
    }
    cr_expect_eq(checked, 2 * LARS_NT);
    for (int i = 0; i < n; i++) free(analytic[i]);
    free(analytic);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(lars, finite_differences) { run_gradcheck("0", FTB_KEEP_ALL, "valid"); }
/* pool=prompt on prompt→answer rows: the gradient of p goes only to the
 * prompt positions (A, G_x and every layer below see it). */
Test(lars, finite_differences_pool_prompt) { run_gradcheck("0", FTB_KEEP_ALL, "prompt"); }
Test(lars, finite_differences_pool_prompt_with_dropout_recomputed) { run_gradcheck("0.5", FTB_KEEP_INPUT, "prompt"); }
/* With dropout the function is fixed by the step's masks: the finite
 * difference then checks that backward regenerated forward's mask, also
 * when the block's forward runs twice (recomputed in backward). */
Test(lars, finite_differences_with_dropout) { run_gradcheck("0.5", FTB_KEEP_ALL, "valid"); }
Test(lars, finite_differences_with_dropout_recomputed) { run_gradcheck("0.5", FTB_KEEP_INPUT, "valid"); }

/* Variant gated: the largest-|grad| entry of U, V and α of the first
 * (layer 0 q) and last (layer 1 down) adapter, and of the four RMSNorm
 * weights of the base (made trainable after init): their gradients are
 * formed from dx of the gated hooks above them (ln1 feeds q/k/v, ln2
 * gate/up), so they check the hook's input gradient — the direct e ⊙ gate
 * term and the path through RMSNorm(x) — and blocks of 8 features (dim 32:
 * 4 gate values; ffn 64: 8). */
/* The gate multiplies a whole block of inputs, and with gates far from 1
 * (V ~ 0.3) the loss is strongly curved in U: the default step's truncation
 * error reaches 2 % there (U: −0.9527 vs −0.9721 at h = 1e-2, which the
 * oracle confirms to 1.6e-5), so this test steps 5× finer. */
#define GATED_FD_STEP 2e-3
static void run_gated_gradcheck(ftb_keep_policy keep)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(22);
    const char *keys[] = { "variant", "rank", "targets", "block" }, *vals[] = { "gated", "3", "all", "8" };
    ftb_options opts = { 4, keys, vals };
    ftb_session s = th_session(m, &opts);
    ftb_keep_policy policy[2] = { keep, keep };
    s.run.keep = policy;
    void *st = init_lars(&p, &s);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    cr_assert_eq(n, 3 * 7 * m->cfg.n_layers, "%d gated tensors", n);
    randomise(params, n, 78);
    const char *norms[] = { "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                            "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight" };
    ftb_tensor *check[6 + 4];
    int nc = 0;
    for (int i = 0; i < 3; i++) check[nc++] = params[i];
    for (int i = n - 3; i < n; i++) check[nc++] = params[i];
    char err[FTB_ERR_LEN] = "";
    for (int i = 0; i < 4; i++) {
        ftb_tensor *t = ftb_model_find(m, norms[i]);
        cr_assert(t);
        t->trainable = 1;
        check[nc++] = t;
    }
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    int32_t tok[2 * 12], tgt[2 * 12];
    ftb_batch b = padded_batch(tok, tgt, 2, 12, m->cfg.vocab_size);
    zero_grads(params, n);
    zero_grads(check + 6, 4);
    fd_loss(m, &b, &s.run);
    /* the finite-difference passes accumulate into .grad: pick the entries
     * and read the analytic values first */
    int64_t jmax_of[10];
    double g_of[10];
    for (int i = 0; i < nc; i++) {
        int64_t jmax = 0;
        for (int64_t j = 1; j < check[i]->numel; j++)
            if (fabsf(check[i]->grad[j]) > fabsf(check[i]->grad[jmax])) jmax = j;
        jmax_of[i] = jmax;
        g_of[i] = check[i]->grad[jmax];
    }
    for (int i = 0; i < nc; i++) {
        ftb_tensor *t = check[i];
        const int64_t jmax = jmax_of[i];
        const double g = g_of[i];
        float w = t->data[jmax];
        float h = (float)(GATED_FD_STEP * fmax(fabs(w), 1.0));
        t->data[jmax] = w + h;
        double lp = fd_loss(m, &b, &s.run);
        t->data[jmax] = w - h;
        double lm = fd_loss(m, &b, &s.run);
        t->data[jmax] = w;
        double fd = (lp - lm) / (2.0 * h);
        int ok = fabs(fd - g) <= fmax(FD_REL * fabs(fd), FD_ABS);
        cr_expect(ok, "[gated %s] %s[%lld]: analytic %.6g, finite difference %.6g",
                  keep == FTB_KEEP_ALL ? "" : "recomputed", t->name, (long long)jmax, g, fd);
        cr_expect(fabs(g) > 5 * FD_ABS, "%s: largest gradient %.3g is too small to check", t->name, g);
        if (getenv("FTBENCH_GRADCHECK_VERBOSE"))
            fprintf(stderr, "[gated] %-48s analytic %+.6e fd %+.6e\n", t->name, g, fd);
    }
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(lars, gated_finite_differences) { run_gated_gradcheck(FTB_KEEP_ALL); }
Test(lars, gated_finite_differences_recomputed) { run_gated_gradcheck(FTB_KEEP_INPUT); }

/* ---- memory ------------------------------------------------------------- */

/* Saved-activation peak of one forward_backward. */
static int64_t saved_peak(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o)
{
    char err[FTB_ERR_LEN] = "";
    ftb_mem_reset_peaks();
    ftb_mem_stats before, after;
    ftb_mem_get_stats(&before);
    cr_assert(isfinite(ftb_model_forward_backward(m, b, o, err, sizeof err)), "%s", err);
    ftb_mem_get_stats(&after);
    cr_assert_eq(after.live[FTB_MEM_SAVED], before.live[FTB_MEM_SAVED], "saved activations leaked");
    return after.peak[FTB_MEM_SAVED] - before.live[FTB_MEM_SAVED];
}

/* What the frozen base keeps by itself: a model whose every block runs
 * backward (layer 0's norm trains, so nothing is skipped) but in which no
 * linear trains or has a hook: exactly what LARS's base keeps. */
static int64_t frozen_base_saved(const ftb_batch *b)
{
    ftb_model *m = tiny_model(31);
    char err[FTB_ERR_LEN] = "";
    ftb_model_set_trainable(m, 0);
    ftb_tensor *norm = ftb_model_find(m, "model.layers.0.input_layernorm.weight");
    cr_assert(norm);
    norm->trainable = 1;
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    int64_t s = saved_peak(m, b, NULL);
    ftb_model_free(m);
    return s;
}

/* Saved-activation peak of method `name` on all 7 linears, with rank and,
 * if key is not NULL, one more option key=value. */
static int64_t method_saved_opt(const char *name, const ftb_batch *b, const char *rank, const char *key,
                                const char *value)
{
    ftb_plugin p;
    th_open_method(name, &p);
    ftb_model *m = tiny_model(31);
    const char *keys[] = { "rank", "targets", key }, *vals[] = { rank, "all", value };
    ftb_options opts = { key ? 3 : 2, keys, vals };
    ftb_session s = th_session(m, &opts);
    void *st = init_lars(&p, &s);
    int64_t saved = saved_peak(m, b, &s.run);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
    return saved;
}

static int64_t method_saved(const char *name, const ftb_batch *b, const char *rank)
{
    return method_saved_opt(name, b, rank, NULL, NULL);
}

/* Variant gated keeps per-position tensors: the layer input (the core keeps
 * ln1, ln2 and the SwiGLU output h once each, as for LoRA; o's input is kept
 * by attention anyway) plus, per adapter, rstd, a = z·U and c = a·V:
 * 4·(1 + r + ⌈in/block⌉) bytes per token.  Exact at two lengths. */
Test(lars, gated_saved_activations_are_the_documented_per_token_bytes)
{
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    const int B = 2, r = 8, block = 8, Ts[2] = { 64, 256 };
    const int in_of[FTB_LIN_COUNT] = { cfg.dim, cfg.dim, cfg.dim,    cfg.n_heads * cfg.head_dim,
                                       cfg.dim, cfg.dim, cfg.ffn_dim };
    int64_t per_token = 4 * (2 * (int64_t)cfg.dim + cfg.ffn_dim); /* ln1, ln2, h */
    for (int k = 0; k < FTB_LIN_COUNT; k++) per_token += 4 * (1 + r + (in_of[k] + block - 1) / block);
    per_token *= cfg.n_layers;
    for (int i = 0; i < 2; i++) {
        int32_t *tok = malloc(sizeof(int32_t) * B * Ts[i]), *tgt = malloc(sizeof(int32_t) * B * Ts[i]);
        ftb_batch b = padded_batch(tok, tgt, B, Ts[i], cfg.vocab_size);
        int64_t base = frozen_base_saved(&b);
        ftb_plugin p;
        th_open_method("lars", &p);
        ftb_model *m = tiny_model(31);
        const char *keys[] = { "variant", "rank", "targets", "block" }, *vals[] = { "gated", "8", "all", "8" };
        ftb_options opts = { 4, keys, vals };
        ftb_session s = th_session(m, &opts);
        void *st = init_lars(&p, &s);
        int64_t extra = saved_peak(m, &b, &s.run) - base;
        cr_expect_eq(extra, per_token * B * Ts[i],
                     "gated keeps %lld bytes above the frozen base at T=%d, expected %lld", (long long)extra, Ts[i],
                     (long long)(per_token * B * Ts[i]));
        p.method->destroy(st);
        ftb_model_free(m);
        ftb_plugin_close(&p);
        free(tok);
        free(tgt);
    }
}

Test(lars, saved_activations_do_not_grow_with_sequence_length)
{
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    const int B = 2, r = 8, T1 = 64, T2 = 4 * T1;
    /* per sequence and adapter: p [in] + nhat, gx, gh, g, h2, h3 [r] + u [4r] + rstd */
    const int in_of[FTB_LIN_COUNT] = { cfg.dim, cfg.dim, cfg.dim,    cfg.n_heads * cfg.head_dim,
                                       cfg.dim, cfg.dim, cfg.ffn_dim };
    int64_t expected = 0;
    for (int k = 0; k < FTB_LIN_COUNT; k++) expected += (int64_t)cfg.n_layers * 4 * B * (in_of[k] + 10 * r + 1);

    int64_t lars_extra[2], lora_extra[2];
    const int Ts[2] = { T1, T2 };
    for (int i = 0; i < 2; i++) {
        int32_t *tok = malloc(sizeof(int32_t) * B * Ts[i]), *tgt = malloc(sizeof(int32_t) * B * Ts[i]);
        ftb_batch b = padded_batch(tok, tgt, B, Ts[i], cfg.vocab_size);
        int64_t base = frozen_base_saved(&b);
        lars_extra[i] = method_saved("lars", &b, "8") - base;
        lora_extra[i] = method_saved("lora", &b, "8") - base;
        free(tok);
        free(tgt);
    }
    cr_expect_eq(lars_extra[0], expected, "LARS keeps %lld bytes above the frozen base at T=%d, expected %lld",
                 (long long)lars_extra[0], T1, (long long)expected);
    cr_expect_eq(lars_extra[1], lars_extra[0], "LARS's extra saved bytes grew from %lld (T=%d) to %lld (T=%d)",
                 (long long)lars_extra[0], T1, (long long)lars_extra[1], T2);
    /* LoRA keeps at least the block's three linear inputs per position */
    int64_t lora_growth = lora_extra[1] - lora_extra[0];
    int64_t min_growth = (int64_t)cfg.n_layers * B * (T2 - T1) * 4 * (2 * cfg.dim + cfg.ffn_dim);
    cr_expect_geq(lora_growth, min_growth, "LoRA's extra saved bytes grew by %lld from T=%d to %d, expected >= %lld",
                  (long long)lora_growth, T1, T2, (long long)min_growth);
    cr_expect_lt(lars_extra[1], lora_extra[1]);
}

/* ---- options, learning, masks ------------------------------------------- */

Test(lars, rejects_bad_options_clearly)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(14);
    struct {
        const char *key, *value, *expect;
    } cases[] = {
        { "rank", "0", "option rank: 0 is not in 1..4096" },
        { "rank", "abc", "option rank" },
        { "targets", "q,zz", "unknown linear layer 'zz'" },
        { "targets", ",", "option targets" },
        { "dropout", "2", "option dropout: 2 is not in [0, 1)" },
        { "dropout", "1", "option dropout" },
        { "dropout", "-0.1", "option dropout" },
        { "pool", "first", "option pool: 'first' is not 'valid', 'all' or 'prompt'" },
        { "weight_decay", "x", "option weight_decay" },
        { "variant", "fancy", "option variant: 'fancy' is not 'pooled' or 'gated'" },
        { "block", "0", "option block: 0 is not in 1..65536" },
        { "block", "16", "option block: not used by variant=pooled" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *keys[] = { cases[i].key }, *vals[] = { cases[i].value };
        ftb_options o = { 1, keys, vals };
        ftb_session s = th_session(m, &o);
        char err[FTB_ERR_LEN] = "";
        cr_expect_null(p.method->init(&s, err, sizeof err), "%s=%s accepted", cases[i].key, cases[i].value);
        cr_expect(strstr(err, cases[i].expect) != NULL, "%s=%s: error was '%s'", cases[i].key, cases[i].value, err);
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int k = 0; k < FTB_LIN_COUNT; k++) cr_expect_null(m->layers[l].adapter[k]);
    }
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* pool and dropout mean nothing to the gated variant: refused, not ignored. */
Test(lars, gated_refuses_pooled_options)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(14);
    const char *bad[][2] = { { "pool", "prompt" }, { "dropout", "0.1" } };
    for (int i = 0; i < 2; i++) {
        const char *keys[] = { "variant", bad[i][0] }, *vals[] = { "gated", bad[i][1] };
        ftb_options o = { 2, keys, vals };
        ftb_session s = th_session(m, &o);
        char err[FTB_ERR_LEN] = "";
        cr_expect_null(p.method->init(&s, err, sizeof err), "gated accepted %s", bad[i][0]);
        char want[64];
        snprintf(want, sizeof want, "option %s: not used by variant=gated", bad[i][0]);
        cr_expect(strstr(err, want) != NULL, "error was '%s'", err);
    }
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* Gated defaults: q,v, rank 8, blocks of 32; U ~ U(±√(6/r)), V ~ N(0, 1e-8)
 * (std 1e-4), α = 0.1: the model starts within ~1e-4 of the base model. */
Test(lars, gated_defaults_and_initial_state)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(15);
    const char *keys[] = { "variant" }, *vals[] = { "gated" };
    ftb_options o = { 1, keys, vals };
    ftb_session s = th_session(m, &o);
    int32_t tok[2 * 16], tgt[2 * 16];
    ftb_batch b = padded_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
    char err[FTB_ERR_LEN] = "";
    float base_loss = ftb_model_forward(m, &b, NULL, err, sizeof err);
    void *st = init_lars(&p, &s);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    cr_assert_eq(n, 3 * 2 * m->cfg.n_layers, "default targets q,v: %d tensors", n);
    cr_expect(strstr(params[0]->name, "layers.0.q_proj.lars.U") != NULL, "%s", params[0]->name);
    cr_expect_eq(params[0]->shape[0], m->cfg.dim);
    cr_expect_eq(params[0]->shape[1], 8, "default rank 8");
    cr_expect_eq(params[1]->shape[1], (m->cfg.dim + 31) / 32, "one gate value per 32 features");
    cr_expect_eq(params[2]->data[0], 0.1f, "alpha");
    double umax = 0, vss = 0;
    int64_t vn = 0;
    for (int i = 0; i < n; i += 3) {
        for (int64_t j = 0; j < params[i]->numel; j++) umax = fmax(umax, fabs(params[i]->data[j]));
        for (int64_t j = 0; j < params[i + 1]->numel; j++, vn++)
            vss += (double)params[i + 1]->data[j] * params[i + 1]->data[j];
    }
    cr_expect(umax <= sqrt(6.0 / 8) && umax > 0.5 * sqrt(6.0 / 8), "U: max |u| %g, bound %g", umax, sqrt(6.0 / 8));
    double vstd = sqrt(vss / vn);
    cr_expect(vstd > 0.5e-4 && vstd < 2e-4, "V: std %g over %lld values, expected 1e-4", vstd, (long long)vn);
    float loss = ftb_model_forward(m, &b, NULL, err, sizeof err);
    cr_expect(fabsf(loss - base_loss) < 1e-3f * base_loss && loss != base_loss,
              "gates start near 1: loss %f vs base %f", loss, base_loss);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(lars, defaults_and_initial_state)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(15);
    ftb_options none = { 0, NULL, NULL };
    ftb_session s = th_session(m, &none);
    /* at init B = 0: the model is the base model */
    int32_t tok[2 * 16], tgt[2 * 16];
    ftb_batch b = padded_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
    char err[FTB_ERR_LEN] = "";
    float base_loss = ftb_model_forward(m, &b, NULL, err, sizeof err);
    void *st = init_lars(&p, &s);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    cr_assert_eq(n, LARS_NT * 2 * m->cfg.n_layers, "default targets q,v: %d tensors", n);
    cr_expect(strstr(params[0]->name, "layers.0.q_proj.lars.A") != NULL, "%s", params[0]->name);
    cr_expect(strstr(params[LARS_NT]->name, "layers.0.v_proj.lars.A") != NULL, "%s", params[LARS_NT]->name);
    cr_expect_eq(params[0]->shape[0], 8, "default rank 8");
    cr_expect_eq(params[11]->data[0], 0.5f, "alpha");
    cr_expect_eq(params[12]->data[0], 1.0f, "tau1");
    float loss = ftb_model_forward(m, &b, NULL, err, sizeof err);
    cr_expect_eq(loss, base_loss, "B = 0 at init, yet the loss changed: %f vs %f", loss, base_loss);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(lars, learns_and_redraws_masks_per_step)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(16);
    const char *keys[] = { "targets", "dropout" }, *vals[] = { "all", "0.1" };
    ftb_options opts = { 2, keys, vals };
    ftb_session s = th_session(m, &opts);
    s.lr = 1e-2f;
    void *st = init_lars(&p, &s);
    int32_t tok[2 * 32], tgt[2 * 32];
    ftb_batch b = padded_batch(tok, tgt, 2, 32, m->cfg.vocab_size);
    char err[FTB_ERR_LEN] = "";
    ftb_step_result r = { 0 }, first = { 0 };
    for (int step = 0; step < 20; step++) {
        cr_assert_eq(p.method->step(st, &s, &b, &r, err, sizeof err), 0, "%s", err);
        cr_assert(isfinite(r.loss));
        if (step == 0) first = r;
    }
    cr_expect_lt(r.loss, first.loss - 0.05f, "lars did not learn: %f -> %f", first.loss, r.loss);
    cr_expect_eq(r.forward_passes, 1);
    /* within a step the masks repeat: two training passes, same loss */
    float l1 = ftb_model_forward_backward(m, &b, &s.run, err, sizeof err);
    float l2 = ftb_model_forward_backward(m, &b, &s.run, err, sizeof err);
    cr_expect_eq(l1, l2, "same step, different dropout masks: %f vs %f", l1, l2);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* Each step draws new masks: at lr 0 the parameters stay put, so two steps
 * differ only by their masks; without dropout they agree exactly. */
Test(lars, dropout_masks_change_between_steps)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    const char *rates[] = { "0.5", "0" };
    for (int i = 0; i < 2; i++) {
        ftb_model *m = tiny_model(18);
        const char *keys[] = { "dropout" }, *vals[] = { rates[i] };
        ftb_options opts = { 1, keys, vals };
        ftb_session s = th_session(m, &opts);
        s.lr = 0.0f;
        void *st = init_lars(&p, &s);
        ftb_tensor **params;
        int n = p.method->trainable(st, &params);
        randomise(params, n, 4);
        int32_t tok[2 * 16], tgt[2 * 16];
        ftb_batch b = padded_batch(tok, tgt, 2, 16, m->cfg.vocab_size);
        char err[FTB_ERR_LEN] = "";
        ftb_step_result r1 = { 0 }, r2 = { 0 };
        cr_assert_eq(p.method->step(st, &s, &b, &r1, err, sizeof err), 0, "%s", err);
        cr_assert_eq(p.method->step(st, &s, &b, &r2, err, sizeof err), 0, "%s", err);
        if (i == 0)
            cr_expect_neq(r1.loss, r2.loss, "dropout 0.5: two steps drew the same masks");
        else
            cr_expect_eq(r1.loss, r2.loss, "dropout 0 at lr 0: losses %f and %f differ", r1.loss, r2.loss);
        p.method->destroy(st);
        ftb_model_free(m);
    }
    ftb_plugin_close(&p);
}

/* A row with no kept target has no valid position: finite everything. */
Test(lars, row_without_targets_stays_finite)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(17);
    const char *keys[] = { "targets", "dropout" }, *vals[] = { "all", "0" };
    ftb_options opts = { 2, keys, vals };
    ftb_session s = th_session(m, &opts);
    void *st = init_lars(&p, &s);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    randomise(params, n, 3);
    int32_t tok[2 * 10], tgt[2 * 10];
    ftb_batch b = padded_batch(tok, tgt, 2, 10, m->cfg.vocab_size);
    for (int t = 0; t < 10; t++) tgt[10 + t] = FTB_IGNORE_INDEX;
    char err[FTB_ERR_LEN] = "";
    zero_grads(params, n);
    cr_assert(isfinite(ftb_model_forward_backward(m, &b, &s.run, err, sizeof err)), "%s", err);
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < params[i]->numel; j++)
            cr_assert(isfinite(params[i]->grad[j]), "%s[%lld] is %f", params[i]->name, (long long)j,
                      params[i]->grad[j]);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* ---- causality ---------------------------------------------------------- */

/* Loss of row b when only its target at position t is kept (so seq_loss[b]
 * is the loss at t alone), with tokens tok. */
static void single_target_losses(ftb_model *m, const ftb_run_opts *run, const int32_t *tok, const int *t_of, int B,
                                 int T, float *seq_loss)
{
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)B * T);
    for (int i = 0; i < B * T; i++) tgt[i] = FTB_IGNORE_INDEX;
    for (int b = 0; b < B; b++) tgt[b * T + t_of[b]] = (t_of[b] * 5 + b + 1) % m->cfg.vocab_size; /* fixed label */
    ftb_batch batch = { B, T, tok, tgt };
    ftb_run_opts o = *run;
    o.seq_loss = seq_loss;
    char err[FTB_ERR_LEN] = "";
    cr_assert(isfinite(ftb_model_forward(m, &batch, &o, err, sizeof err)), "%s", err);
    free(tgt);
}

/* The leak measurement (docs/methods/lars.md, "Causality"): row b keeps only
 * its target at t; the token at t' > t is changed; a causal model's loss at t
 * cannot move.  With pool=all and pool=valid it does (t' = t+1, the token
 * that is t's own target); with pool=prompt it does not, while changing a
 * token before t (t'' = t−1) does move it under every mode (the check is
 * sensitive).  Returns, per mode, the largest relative change seen. */
static void measure_leak(const char *pool, double *after_t, double *before_t)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(23);
    /* pool "gated": the gated variant (which has no pooling) */
    const int gated = !strcmp(pool, "gated");
    const char *keys[] = { "rank", "targets", gated ? "variant" : "dropout", gated ? "block" : "pool" };
    const char *vals[] = { "4", "all", gated ? "gated" : "0", gated ? "8" : pool };
    ftb_options opts = { 4, keys, vals };
    ftb_session s = th_session(m, &opts);
    void *st = init_lars(&p, &s);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    randomise(params, n, 9);
    enum { B = 3, T = 12 };
    const int t_of[B] = { 3, 6, 9 };
    int32_t tok[B * T], tok2[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7 + 3) % m->cfg.vocab_size;
    float ref[B], pert[B];
    single_target_losses(m, &s.run, tok, t_of, B, T, ref);
    *after_t = *before_t = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int dt = 1; dt <= 2; dt++) { /* t' = t+1, t+2 after; t−1, t−2 before */
            memcpy(tok2, tok, sizeof tok);
            for (int b = 0; b < B; b++) {
                int tp = pass == 0 ? t_of[b] + dt : t_of[b] - dt;
                tok2[b * T + tp] = (tok[b * T + tp] + 11) % m->cfg.vocab_size;
            }
            single_target_losses(m, &s.run, tok2, t_of, B, T, pert);
            for (int b = 0; b < B; b++) {
                double rel = fabs((double)pert[b] - ref[b]) / fabs(ref[b]);
                double *w = pass == 0 ? after_t : before_t;
                if (pass == 0 && !strcmp(pool, "valid") && dt == 2) continue; /* valid stops at t+1 */
                if (!(rel <= *w)) *w = rel;
            }
        }
    }
    if (getenv("FTBENCH_LEAK_VERBOSE"))
        fprintf(stderr, "[pool=%s] loss at t: max rel change %.3e from a later token, %.3e from an earlier one\n", pool,
                *after_t, *before_t);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

Test(lars, causality_leak_pool_all_and_valid_detected)
{
    const char *pools[] = { "all", "valid" };
    for (int i = 0; i < 2; i++) {
        double after, before;
        measure_leak(pools[i], &after, &before);
        cr_expect_gt(after, 1e-4, "pool=%s: a later token moved the loss at t by only %.3g: leak not detected",
                     pools[i], after);
        cr_expect_gt(before, 1e-4, "pool=%s: an earlier token moved the loss at t by only %.3g", pools[i], before);
    }
}

Test(lars, causality_pool_prompt_does_not_leak)
{
    double after, before;
    measure_leak("prompt", &after, &before);
    cr_expect_eq(after, 0.0, "pool=prompt: a later token moved the loss at t by %.3g (relative)", after);
    cr_expect_gt(before, 1e-4, "pool=prompt: an earlier token moved the loss at t by only %.3g", before);
}

/* Generation must show a hook the prompt that training showed it: greedy
 * decoding of prompt + k generated tokens, with the prompt length given,
 * gives the logits that one teacher-forced forward of prompt + answer (the
 * training row's loss mask) gives at the same position.  Before the fix,
 * generation passed no loss mask, pool=prompt pooled nothing (p = 0), and
 * a trained LARS answered as an untrained one: 0 exact answers where its
 * teacher-forced loss equalled LoRA's.  Without the prompt length (the
 * plain-prefix form) the logits must differ, or the test could not fail. */
Test(lars, generation_sees_the_prompt_that_training_saw)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(29);
    const char *keys[] = { "rank", "targets", "dropout", "pool" }, *vals[] = { "4", "all", "0", "prompt" };
    ftb_options opts = { 4, keys, vals };
    ftb_session s = th_session(m, &opts);
    void *st = init_lars(&p, &s);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    randomise(params, n, 13);
    enum { P = 7, A = 4, LEN = P + A };
    const int V = m->cfg.vocab_size;
    int32_t tok[LEN], tgt[LEN];
    for (int i = 0; i < LEN; i++) tok[i] = (i * 5 + 2) % V;
    for (int t = 0; t < LEN; t++) tgt[t] = t >= P - 1 && t + 1 < LEN ? tok[t + 1] : FTB_IGNORE_INDEX;
    int rows[A];
    for (int a = 0; a < A; a++) rows[a] = P - 1 + a;
    float *teacher = malloc(sizeof(float) * A * V), *z = malloc(sizeof(float) * V);
    char err[FTB_ERR_LEN] = "";
    ftb_batch b = { 1, LEN, tok, tgt };
    cr_assert_eq(ftb_model_logits(m, &b, &s.run, rows, A, teacher, err, sizeof err), 0, "%s", err);
    for (int k = 0; k < A; k++) {
        const float *want = teacher + (size_t)k * V;
        double scale = 0, worst = 0, plain = 0;
        cr_assert_eq(ftb_next_token_logits(m, &s.run, tok, P + k, P, z, err, sizeof err), 0, "%s", err);
        for (int j = 0; j < V; j++) {
            scale = fmax(scale, fabs(want[j]));
            worst = fmax(worst, fabs((double)z[j] - want[j]));
        }
        cr_expect_leq(worst, 1e-5 * scale, "after %d generated tokens: logits differ by %.3g (scale %.3g)", k, worst,
                      scale);
        cr_assert_eq(ftb_next_token_logits(m, &s.run, tok, P + k, 0, z, err, sizeof err), 0, "%s", err);
        for (int j = 0; j < V; j++) plain = fmax(plain, fabs((double)z[j] - want[j]));
        cr_expect_gt(plain, 1e-3 * scale, "without the prompt length the logits should change (p = 0): %.3g", plain);
    }
    cr_expect_eq(ftb_next_token_logits(m, &s.run, tok, 3, 5, z, err, sizeof err), -1,
                 "a prompt longer than the prefix");
    free(teacher);
    free(z);
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* Rows whose first target is at 0 (plain language modelling) pool the empty
 * set under pool=prompt: p = 0, finite loss and gradients; so do rows
 * without any target. */
Test(lars, pool_prompt_empty_prompt_stays_finite)
{
    ftb_plugin p;
    th_open_method("lars", &p);
    ftb_model *m = tiny_model(19);
    const char *keys[] = { "targets", "dropout", "pool" }, *vals[] = { "all", "0", "prompt" };
    ftb_options opts = { 3, keys, vals };
    ftb_session s = th_session(m, &opts);
    void *st = init_lars(&p, &s);
    ftb_tensor **params;
    int n = p.method->trainable(st, &params);
    randomise(params, n, 5);
    int32_t tok[2 * 10], tgt[2 * 10];
    ftb_batch b = padded_batch(tok, tgt, 2, 10, m->cfg.vocab_size);
    for (int t = 0; t < 10; t++) tgt[10 + t] = FTB_IGNORE_INDEX;
    char err[FTB_ERR_LEN] = "";
    zero_grads(params, n);
    cr_assert(isfinite(ftb_model_forward_backward(m, &b, &s.run, err, sizeof err)), "%s", err);
    for (int i = 0; i < n; i++) {
        const char *name = strstr(params[i]->name, ".lars.") + 6;
        for (int64_t j = 0; j < params[i]->numel; j++) {
            cr_assert(isfinite(params[i]->grad[j]), "%s[%lld] is %f", params[i]->name, (long long)j,
                      params[i]->grad[j]);
            /* p = 0 in every row: A and G_x get no gradient */
            if (!strcmp(name, "A") || !strcmp(name, "G_x"))
                cr_assert_eq(params[i]->grad[j], 0.0f, "%s[%lld] = %g with p = 0", params[i]->name, (long long)j,
                             params[i]->grad[j]);
        }
    }
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* The gated variant's gate at t reads x_t only: no leak. */
Test(lars, causality_gated_does_not_leak)
{
    double after, before;
    measure_leak("gated", &after, &before);
    cr_expect_eq(after, 0.0, "gated: a later token moved the loss at t by %.3g (relative)", after);
    cr_expect_gt(before, 1e-4, "gated: an earlier token moved the loss at t by only %.3g", before);
}

/* The gated hook's second product goes through ftb_linear_apply(_t), so a
 * quantized base is gated too: an int8 base gives the loss and gradients of
 * an fp32 base holding the same (dequantized) weights. */
Test(lars, gated_on_a_quantized_base_equals_its_dequantized_weights)
{
    ftb_model *q = tiny_model(24), *ref = tiny_model(24);
    char err[FTB_ERR_LEN] = "";
    cr_assert_eq(ftb_model_quantize(q, "int8", 0, err, sizeof err), 0, "%s", err);
    for (int l = 0; l < q->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++) {
            ftb_tensor *wq = ftb_layer_weight(&q->layers[l], k), *wr = ftb_layer_weight(&ref->layers[l], k);
            ftb_tensor_read_rows(wq, 0, wq->shape[0], wr->data);
        }
    ftb_plugin p;
    th_open_method("lars", &p);
    const char *keys[] = { "variant", "rank", "targets", "block" }, *vals[] = { "gated", "3", "all", "8" };
    ftb_options opts = { 4, keys, vals };
    ftb_model *models[2] = { q, ref };
    void *st[2];
    ftb_tensor **params[2];
    float loss[2];
    int n = 0;
    int32_t tok[2 * 12], tgt[2 * 12];
    ftb_batch b = padded_batch(tok, tgt, 2, 12, q->cfg.vocab_size);
    ftb_session s[2];
    for (int i = 0; i < 2; i++) {
        s[i] = th_session(models[i], &opts);
        st[i] = init_lars(&p, &s[i]);
        n = p.method->trainable(st[i], &params[i]);
        randomise(params[i], n, 79);
        zero_grads(params[i], n);
        loss[i] = ftb_model_forward_backward(models[i], &b, &s[i].run, err, sizeof err);
        cr_assert(isfinite(loss[i]), "%s", err);
    }
    cr_expect(fabsf(loss[0] - loss[1]) <= 1e-5f * fabsf(loss[1]), "int8 base %f, dequantized fp32 %f", loss[0],
              loss[1]);
    for (int i = 0; i < n; i++) {
        double maxdiff = 0, maxref = 1e-6;
        for (int64_t j = 0; j < params[0][i]->numel; j++) {
            maxdiff = fmax(maxdiff, fabs((double)params[0][i]->grad[j] - params[1][i]->grad[j]));
            maxref = fmax(maxref, fabs(params[1][i]->grad[j]));
        }
        cr_expect(maxdiff / maxref <= 1e-4, "%s: int8 vs dequantized relative difference %g", params[0][i]->name,
                  maxdiff / maxref);
    }
    for (int i = 0; i < 2; i++) p.method->destroy(st[i]);
    ftb_model_free(q);
    ftb_model_free(ref);
    ftb_plugin_close(&p);
}
