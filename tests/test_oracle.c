/*
 * test_oracle.c — the C core against the independent PyTorch oracle.
 *
 * tests/oracle/gen_oracle.py computes, in float64 with plain torch ops, the
 * loss, the per-sequence losses and every parameter gradient of small
 * Llama/Qwen2 checkpoints (tests/oracle/fixtures/<case>/).  Here each case is
 * loaded with ftb_model_load and run under every attention implementation and
 * loss mode; the loss and all gradients must match to a relative 1e-4:
 *   err(tensor) = max|core - oracle| / max(max|oracle|, 1e-6).
 * Fixtures are found under $FTBENCH_ORACLE_DIR, else tests/oracle/fixtures
 * (tests run from the repository root).
 *
 * expected.safetensors is read by a small standalone reader below, so this
 * test shares no code with the checkpoint loader it checks.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftbench.h"

#define ORACLE_REL_TOL  1e-4 /* per-tensor relative tolerance           */
#define ORACLE_LOSS_TOL 1e-5 /* relative, on loss and seq_loss          */

static const char *oracle_dir(void)
{
    const char *d = getenv("FTBENCH_ORACLE_DIR");
    return d && *d ? d : "tests/oracle/fixtures";
}

/* ---- minimal safetensors reader (F32, I32) ------------------------------ */

typedef struct {
    char name[128];
    char dtype[8];
    int ndim;
    int64_t shape[4];
    int64_t numel;
    void *data; /* points into buf                                 */
} st_entry;

typedef struct {
    unsigned char *buf;
    st_entry *e;
    int n;
} st_file;

static void st_close(st_file *f)
{
    free(f->buf);
    free(f->e);
    memset(f, 0, sizeof *f);
}

static int st_open(st_file *f, const char *path, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot open %s", path);
        return -1;
    }
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f->buf = malloc((size_t)sz + 1);
    if (!f->buf || fread(f->buf, 1, (size_t)sz, fp) != (size_t)sz) {
        fclose(fp);
        snprintf(err, errlen, "cannot read %s", path);
        st_close(f);
        return -1;
    }
    fclose(fp);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | f->buf[i];
    if (sz < 8 || hl > (uint64_t)sz - 8) {
        snprintf(err, errlen, "%s: bad header length", path);
        st_close(f);
        return -1;
    }
    json_error_t je;
    json_t *h = json_loadb((const char *)f->buf + 8, (size_t)hl, 0, &je);
    if (!h || !json_is_object(h)) {
        snprintf(err, errlen, "%s: bad header json: %s", path, je.text);
        json_decref(h);
        st_close(f);
        return -1;
    }
    unsigned char *base = f->buf + 8 + hl;
    uint64_t datalen = (uint64_t)sz - 8 - hl;
    f->e = calloc(json_object_size(h) + 1, sizeof *f->e);
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v)
    {
        if (!strcmp(key, "__metadata__")) continue;
        st_entry *e = &f->e[f->n];
        snprintf(e->name, sizeof e->name, "%s", key);
        snprintf(e->dtype, sizeof e->dtype, "%s", json_string_value(json_object_get(v, "dtype")));
        json_t *shape = json_object_get(v, "shape");
        json_t *offs = json_object_get(v, "data_offsets");
        e->ndim = (int)json_array_size(shape);
        e->numel = 1;
        for (int i = 0; i < e->ndim && i < 4; i++) {
            e->shape[i] = json_integer_value(json_array_get(shape, i));
            e->numel *= e->shape[i];
        }
        uint64_t a = json_integer_value(json_array_get(offs, 0));
        uint64_t b = json_integer_value(json_array_get(offs, 1));
        if (b < a || b > datalen || b - a != (uint64_t)e->numel * 4) {
            snprintf(err, errlen, "%s: bad offsets for %s", path, key);
            json_decref(h);
            st_close(f);
            return -1;
        }
        e->data = base + a;
        f->n++;
    }
    json_decref(h);
    return 0;
}

static const st_entry *st_get(const st_file *f, const char *name, const char *dtype)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].name, name)) return strcmp(f->e[i].dtype, dtype) ? NULL : &f->e[i];
    return NULL;
}

/* little-endian host assumed (x86-64, aarch64) */
static float st_f32(const st_entry *e, int64_t i)
{
    float x;
    memcpy(&x, (const unsigned char *)e->data + 4 * i, 4);
    return x;
}

/* ---- one fixture -------------------------------------------------------- */

typedef struct {
    st_file exp;
    int B, T;
    int32_t *tokens, *targets;
    float loss;
    float *seq_loss;
} fixture;

static void fixture_load(fixture *fx, const char *case_name)
{
    char path[512], err[1024];
    memset(fx, 0, sizeof *fx);
    snprintf(path, sizeof path, "%s/%s/expected.safetensors", oracle_dir(), case_name);
    cr_assert_eq(st_open(&fx->exp, path, err, sizeof err), 0, "%s", err);
    const st_entry *tok = st_get(&fx->exp, "tokens", "I32");
    const st_entry *tgt = st_get(&fx->exp, "targets", "I32");
    const st_entry *loss = st_get(&fx->exp, "loss", "F32");
    const st_entry *sl = st_get(&fx->exp, "seq_loss", "F32");
    cr_assert(tok && tgt && loss && sl && tok->ndim == 2, "%s: missing tokens/targets/loss/seq_loss", path);
    fx->B = (int)tok->shape[0];
    fx->T = (int)tok->shape[1];
    fx->tokens = malloc(sizeof(int32_t) * tok->numel);
    fx->targets = malloc(sizeof(int32_t) * tgt->numel);
    memcpy(fx->tokens, tok->data, sizeof(int32_t) * tok->numel);
    memcpy(fx->targets, tgt->data, sizeof(int32_t) * tgt->numel);
    fx->loss = st_f32(loss, 0);
    fx->seq_loss = malloc(sizeof(float) * fx->B);
    for (int b = 0; b < fx->B; b++) fx->seq_loss[b] = st_f32(sl, b);
}

static void fixture_free(fixture *fx)
{
    st_close(&fx->exp);
    free(fx->tokens);
    free(fx->targets);
    free(fx->seq_loss);
}

static double rel_err(float a, float b) { return fabs((double)a - (double)b) / fmax(fabs((double)b), 1e-6); }

/* Compares every parameter gradient with scale * oracle; returns the worst
 * relative error and its tensor name.  Fails on a missing or extra tensor. */
static double compare_grads(ftb_model *m, const fixture *fx, double scale, char *worst_name, size_t wlen)
{
    double worst = 0;
    int matched = 0;
    snprintf(worst_name, wlen, "(none)");
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", t->name);
        const st_entry *e = st_get(&fx->exp, gname, "F32");
        if (!e && m->cfg.tie_embeddings && !strcmp(t->name, "lm_head.weight")) {
            /* a tied head listed as its own parameter must share the embedding's grad */
            cr_assert(t->grad == m->embed.grad, "tied lm_head.weight listed with a separate grad");
            continue;
        }
        cr_assert(e, "parameter %s has no oracle gradient", t->name);
        cr_assert_eq(e->numel, t->numel, "%s: numel %lld vs oracle %lld", t->name, (long long)t->numel,
                     (long long)e->numel);
        cr_assert(t->grad, "%s: no grad after ftb_model_alloc_grads", t->name);
        double maxref = 0, maxdiff = 0;
        for (int64_t j = 0; j < t->numel; j++) {
            double ref = scale * st_f32(e, j);
            double d = fabs((double)t->grad[j] - ref);
            if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates */
            if (fabs(ref) > maxref) maxref = fabs(ref);
        }
        double r = maxdiff / fmax(maxref, 1e-6);
        if (!(r <= worst)) {
            worst = r;
            snprintf(worst_name, wlen, "%s (max|diff| %.3g, max|ref| %.3g)", t->name, maxdiff, maxref);
        }
        matched++;
    }
    int expected_grads = 0;
    for (int i = 0; i < fx->exp.n; i++)
        if (!strncmp(fx->exp.e[i].name, "grad.", 5)) expected_grads++;
    cr_assert_eq(matched, expected_grads, "model has %d parameters with grads, oracle has %d", matched, expected_grads);
    return worst;
}

static const char *attn_name(ftb_attention_impl a) { return a == FTB_ATTN_FLASH ? "flash" : "eager"; }
static const char *loss_name(ftb_loss_mode l) { return l == FTB_LOSS_CHUNKED ? "chunked" : "full"; }

static void run_case(const char *case_name, ftb_attention_impl attn, ftb_loss_mode lm, int map)
{
    fixture fx;
    fixture_load(&fx, case_name);
    char dir[1024], err[FTB_ERR_LEN] = "";
    snprintf(dir, sizeof dir, "%s/%s", oracle_dir(), case_name);
    ftb_model *m = ftb_model_load(dir, map, err, sizeof err);
    cr_assert(m, "ftb_model_load(%s): %s", dir, err);
    ftb_model_set_trainable(m, 1);
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "alloc_grads: %s", err);
    ftb_model_zero_grads(m);

    ftb_batch b = { .B = fx.B, .T = fx.T, .tokens = fx.tokens, .targets = fx.targets };
    float *sl = calloc(fx.B, sizeof(float));
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    o.attention = attn;
    o.loss = lm;
    o.loss_chunk_rows = 3; /* B*T is 9 or 14: several chunks, a ragged last one */
    o.seq_loss = sl;

    const char *tag_fmt = "[%s %s/%s map=%d] ";
    char tag[128];
    snprintf(tag, sizeof tag, tag_fmt, case_name, attn_name(attn), loss_name(lm), map);

    float loss = ftb_model_forward_backward(m, &b, &o, err, sizeof err);
    cr_assert(isfinite(loss), "%sforward_backward: %s", tag, err);
    cr_expect(rel_err(loss, fx.loss) <= ORACLE_LOSS_TOL, "%sloss %.8g vs oracle %.8g (rel %.3g)", tag, loss, fx.loss,
              rel_err(loss, fx.loss));
    for (int i = 0; i < fx.B; i++)
        cr_expect(rel_err(sl[i], fx.seq_loss[i]) <= ORACLE_LOSS_TOL,
                  "%sforward_backward seq_loss[%d] %.8g vs oracle %.8g", tag, i, sl[i], fx.seq_loss[i]);

    char worst[256];
    double r = compare_grads(m, &fx, 1.0, worst, sizeof worst);
    cr_expect(r <= ORACLE_REL_TOL, "%sgradients: worst relative error %.3g in %s", tag, r, worst);
    if (getenv("FTBENCH_ORACLE_VERBOSE"))
        fprintf(stderr, "%sloss rel err %.2e, worst grad rel err %.2e in %s\n", tag, rel_err(loss, fx.loss), r, worst);

    float **snap = calloc(m->n_params, sizeof *snap);
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (!t->grad) continue;
        snap[i] = malloc(sizeof(float) * t->numel);
        memcpy(snap[i], t->grad, sizeof(float) * t->numel);
    }

    /* inference-mode forward: same loss and per-sequence losses */
    memset(sl, 0, sizeof(float) * fx.B);
    float floss = ftb_model_forward(m, &b, &o, err, sizeof err);
    cr_assert(isfinite(floss), "%sforward: %s", tag, err);
    cr_expect(rel_err(floss, fx.loss) <= ORACLE_LOSS_TOL, "%sforward loss %.8g vs oracle %.8g", tag, floss, fx.loss);
    for (int i = 0; i < fx.B; i++)
        cr_expect(rel_err(sl[i], fx.seq_loss[i]) <= ORACLE_LOSS_TOL, "%sforward seq_loss[%d] %.8g vs oracle %.8g", tag,
                  i, sl[i], fx.seq_loss[i]);
    /* forward must leave the gradients exactly as they were */
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (t->grad)
            cr_expect(!memcmp(t->grad, snap[i], sizeof(float) * t->numel),
                      "%sftb_model_forward changed the gradient of %s", tag, t->name);
        free(snap[i]);
    }
    free(snap);

    free(sl);
    ftb_model_free(m);
    fixture_free(&fx);
}

#define ORACLE_CASE(cname, attn, lm) \
    Test(oracle, cname##_##attn##_##lm) { run_case(#cname, FTB_ATTN_##attn, FTB_LOSS_##lm, 1); }

ORACLE_CASE(gqa_bias, FLASH, CHUNKED)
ORACLE_CASE(gqa_bias, FLASH, FULL)
ORACLE_CASE(gqa_bias, EAGER, CHUNKED)
ORACLE_CASE(gqa_bias, EAGER, FULL)
ORACLE_CASE(tied_mha, FLASH, CHUNKED)
ORACLE_CASE(tied_mha, FLASH, FULL)
ORACLE_CASE(tied_mha, EAGER, CHUNKED)
ORACLE_CASE(tied_mha, EAGER, FULL)
ORACLE_CASE(gqa_bias_bf16, FLASH, CHUNKED)
ORACLE_CASE(gqa_bias_bf16, FLASH, FULL)
ORACLE_CASE(gqa_bias_bf16, EAGER, CHUNKED)
ORACLE_CASE(gqa_bias_bf16, EAGER, FULL)
/* rope_scaling: Llama 3's (every branch of its formula) and linear (legacy
 * "type" key), on a Qwen2 layout with bias and tied embeddings. */
ORACLE_CASE(llama3_rope, FLASH, CHUNKED)
ORACLE_CASE(llama3_rope, FLASH, FULL)
ORACLE_CASE(llama3_rope, EAGER, CHUNKED)
ORACLE_CASE(llama3_rope, EAGER, FULL)
ORACLE_CASE(linear_rope, FLASH, CHUNKED)
ORACLE_CASE(linear_rope, FLASH, FULL)
ORACLE_CASE(linear_rope, EAGER, CHUNKED)
ORACLE_CASE(linear_rope, EAGER, FULL)

/* Owned (not memory-mapped) F32 weights take the same path to the same numbers. */
Test(oracle, gqa_bias_unmapped) { run_case("gqa_bias", FTB_ATTN_FLASH, FTB_LOSS_CHUNKED, 0); }
Test(oracle, tied_mha_unmapped) { run_case("tied_mha", FTB_ATTN_EAGER, FTB_LOSS_FULL, 0); }

/* Gradients accumulate: two forward_backward calls without zeroing give
 * twice the oracle gradient; zero_grads resets them. */
Test(oracle, grads_accumulate)
{
    fixture fx;
    fixture_load(&fx, "gqa_bias");
    char dir[1024], err[FTB_ERR_LEN] = "";
    snprintf(dir, sizeof dir, "%s/gqa_bias", oracle_dir());
    ftb_model *m = ftb_model_load(dir, 1, err, sizeof err);
    cr_assert(m, "ftb_model_load(%s): %s", dir, err);
    ftb_model_set_trainable(m, 1);
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "alloc_grads: %s", err);
    ftb_model_zero_grads(m);
    ftb_batch b = { .B = fx.B, .T = fx.T, .tokens = fx.tokens, .targets = fx.targets };
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    for (int k = 0; k < 2; k++) cr_assert(isfinite(ftb_model_forward_backward(m, &b, &o, err, sizeof err)), "%s", err);
    char worst[256];
    double r = compare_grads(m, &fx, 2.0, worst, sizeof worst);
    cr_expect(r <= ORACLE_REL_TOL, "accumulated gradients: worst relative error %.3g in %s", r, worst);
    ftb_model_zero_grads(m);
    cr_assert(isfinite(ftb_model_forward_backward(m, &b, &o, err, sizeof err)), "%s", err);
    r = compare_grads(m, &fx, 1.0, worst, sizeof worst);
    cr_expect(r <= ORACLE_REL_TOL, "after zero_grads: worst relative error %.3g in %s", r, worst);
    ftb_model_free(m);
    fixture_free(&fx);
}
