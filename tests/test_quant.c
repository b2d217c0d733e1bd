/*
 * test_quant.c — frozen base weights stored as bf16, f16, int8 and int4
 * (docs/QUANT.md).  Suite "quant":
 *   - every format dequantizes exactly as the documented layout says (an
 *     independent decoder written here) and within its error bound;
 *   - quantize → save → load gives the same bytes and the same loss, mapped
 *     or copied, without re-quantizing;
 *   - broken quantized files give one-line errors naming file and tensor;
 *   - gradients through a quantized frozen base equal those of its
 *     dequantized fp32 copy (LoRA adapters and trainable norms on top);
 *   - lazy residency gives identical losses and gradients, with a smaller
 *     resident set; the weights category shrinks as the formats say.
 */
#include <criterion/criterion.h>

#include "ftbench.h"
#include "plugin.h"
#include "helpers.h"
#include "quant.h"
#include "safetensors.h"
#include "test_helpers_ckpt.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static const char *FORMATS[] = { "bf16", "f16", "int8", "int4", "int4-asym" };
#define N_FORMATS 5

/* Every width a multiple of 128, so groups of 32, 64 and 128 all fit. */
static ftb_config qcfg(int tied)
{
    ftb_config c = { "quant-test", 96, 128, 2, 4, 2, 32, 256, 64, 10000.f, 1e-6f, 1, 0, { 0 }, "" };
    c.tie_embeddings = tied;
    return c;
}

/* Weights of std 0.2 (×10 the seeded 0.02), so that gradients and errors are
 * well above fp32 rounding. */
static ftb_model *qmodel(int tied, uint64_t seed)
{
    ftb_config c = qcfg(tied);
    char err[FTB_ERR_LEN] = "";
    ftb_model *m = ftb_model_create(&c, seed, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    for (int i = 0; i < m->n_params; i++)
        if (!strstr(m->params[i]->name, "norm"))
            for (int64_t j = 0; j < m->params[i]->numel; j++) m->params[i]->data[j] *= 10.0f;
    return m;
}

static void quantize_or_die(ftb_model *m, const char *fmt, int group, int embeddings)
{
    char err[FTB_ERR_LEN] = "";
    cr_assert_eq(ftb_model_quantize(m, fmt, group, err, sizeof err), 0, "%s", err);
    if (embeddings) cr_assert_eq(ftb_model_quantize_embeddings(m, fmt, group, err, sizeof err), 0, "%s", err);
}

typedef struct {
    int32_t tok[2 * 24], tgt[2 * 24];
    ftb_batch b;
} qbatch;

static void make_batch(qbatch *q, int V, uint64_t seed)
{
    for (int i = 0; i < 48; i++) q->tok[i] = (int32_t)((i * 37 + seed * 11 + 5) % (uint64_t)V);
    for (int i = 0; i < 48; i++) q->tgt[i] = (i + 1) % 24 ? q->tok[i + 1] : FTB_IGNORE_INDEX;
    q->b = (ftb_batch){ 2, 24, q->tok, q->tgt };
}

static float loss_of(ftb_model *m, const ftb_batch *b)
{
    char err[FTB_ERR_LEN] = "";
    float l = ftb_model_forward(m, b, NULL, err, sizeof err);
    cr_assert(!isnan(l), "%s", err);
    return l;
}

/* A copy of m with every weight dequantized to fp32. */
static ftb_model *dequantized_copy(const ftb_model *m)
{
    char err[FTB_ERR_LEN] = "";
    ftb_model *c = ftb_model_create(&m->cfg, 1, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        ftb_tensor_read_rows(t, 0, t->ndim == 2 ? t->shape[0] : 1, c->params[i]->data);
    }
    return c;
}

/* ---- an independent decoder of the documented layouts -------------------- */

static float ref_value(const ftb_tensor *t, int64_t r, int64_t c)
{
    const ftb_qstore *q = t->quant;
    const int64_t C = q->cols;
    switch (q->dtype) {
    case FTB_DTYPE_BF16: return ckpt_bf16_value(((const uint16_t *)q->q)[r * C + c]);
    case FTB_DTYPE_F16: return ckpt_f16_value(((const uint16_t *)q->q)[r * C + c]);
    case FTB_DTYPE_INT8: return ((const float *)q->scales)[r] * (float)((const int8_t *)q->q)[r * C + c];
    default: {
        const int G = q->group;
        const int64_t g = c / G, j = c % G;
        const uint8_t byte = ((const uint8_t *)q->q)[r * (C / 2) + g * (G / 2) + (j < G / 2 ? j : j - G / 2)];
        const int nib = j < G / 2 ? byte & 15 : byte >> 4;
        const float s = ckpt_f16_value(((const uint16_t *)q->scales)[r * (C / G) + g]);
        if (q->dtype == FTB_DTYPE_INT4) return s * (float)(nib - 8);
        const float z = ckpt_f16_value(((const uint16_t *)q->zeros)[r * (C / G) + g]);
        return s * (float)nib + z;
    }
    }
}

/* Per-element error bound of the stored value of w at (r, c). */
static double bound_of(const ftb_tensor *t, int64_t r, int64_t c, float w)
{
    const ftb_qstore *q = t->quant;
    const int64_t C = q->cols;
    double a = fabs((double)w);
    switch (q->dtype) {
    case FTB_DTYPE_BF16: return ldexp(a, -8) + 1e-38;                /* half an ulp of 8 significant bits */
    case FTB_DTYPE_F16: return fmax(ldexp(a, -11), ldexp(1.0, -25)); /* 11 bits; subnormal step 2^-24 */
    case FTB_DTYPE_INT8: return ((const float *)q->scales)[r] / 2 * (1 + 1e-6) + 1e-7 * a;
    default: {
        const int64_t g = c / q->group;
        double s = ckpt_f16_value(((const uint16_t *)q->scales)[r * (C / q->group) + g]);
        double z = q->zeros ? fabs(ckpt_f16_value(((const uint16_t *)q->zeros)[r * (C / q->group) + g])) : 0;
        return s / 2 * (1 + 1e-6) + 2e-7 * (a + z + 16 * s); /* + fp32 rounding of the dequantization */
    }
    }
}

/* A [rows, cols] fp32 tensor with awkward groups: all zero, constant,
 * negative only, positive only, one outlier, tiny, and a normal spread. */
static void fill_awkward(float *w, int64_t rows, int64_t cols, uint64_t seed)
{
    ftb_fill_normal(w, rows * cols, 0.5f, seed);
    for (int64_t r = 0; r < rows; r++) {
        float *x = w + r * cols;
        switch (r % 8) {
        case 0: memset(x, 0, sizeof(float) * (size_t)cols); break;
        case 1:
            for (int64_t i = 0; i < cols; i++) x[i] = 0.37f;
            break;
        case 2:
            for (int64_t i = 0; i < cols; i++) x[i] = -fabsf(x[i]) - 0.1f;
            break;
        case 3:
            for (int64_t i = 0; i < cols; i++) x[i] = fabsf(x[i]);
            break;
        case 4: x[cols / 3] = 40.0f; break;
        case 5:
            for (int64_t i = 0; i < cols; i++) x[i] *= 1e-5f;
            break;
        default: break;
        }
    }
}

Test(quant, formats_have_names_and_sizes)
{
    for (int d = 0; d < FTB_DTYPE_COUNT; d++)
        cr_expect_eq(ftb_dtype_parse(ftb_dtype_name((ftb_dtype)d)), d, "%s", ftb_dtype_name((ftb_dtype)d));
    cr_expect_eq(ftb_dtype_parse("fp16"), FTB_DTYPE_F16);
    cr_expect_eq(ftb_dtype_parse("bfloat16"), FTB_DTYPE_BF16);
    cr_expect_eq(ftb_dtype_parse("int4-sym"), FTB_DTYPE_INT4);
    cr_expect_eq(ftb_dtype_parse("int3"), -1);
    /* [896, 896] (qwen2.5-0.5b's q_proj): bytes per format */
    cr_expect_eq(ftb_dtype_bytes(FTB_DTYPE_F32, 896, 896, 0), 896 * 896 * 4);
    cr_expect_eq(ftb_dtype_bytes(FTB_DTYPE_BF16, 896, 896, 0), 896 * 896 * 2);
    cr_expect_eq(ftb_dtype_bytes(FTB_DTYPE_INT8, 896, 896, 0), 896 * 896 + 896 * 4);
    cr_expect_eq(ftb_dtype_bytes(FTB_DTYPE_INT4, 896, 896, 64), 896 * 448 + 896 * 14 * 2);
    cr_expect_eq(ftb_dtype_bytes(FTB_DTYPE_INT4_ASYM, 896, 896, 64), 896 * 448 + 2 * 896 * 14 * 2);
    cr_expect_eq(ftb_dtype_bytes(FTB_DTYPE_INT4, 896, 896, 0), ftb_dtype_bytes(FTB_DTYPE_INT4, 896, 896, 64));
}

/* The stored codes decode (by the layout alone) to exactly what the core
 * computes with, and every element is within its format's bound. */
Test(quant, dequantization_matches_the_layout_within_the_bound)
{
    const int groups[] = { 32, 64, 128 };
    for (int f = 0; f < N_FORMATS; f++)
        for (int gi = 0; gi < 3; gi++) {
            int is4 = !strncmp(FORMATS[f], "int4", 4);
            if (!is4 && gi > 0) continue;
            ftb_model *m = qmodel(0, 3);
            ftb_tensor *t = &m->layers[0].w_gate; /* [256, 128] */
            fill_awkward(t->data, t->shape[0], t->shape[1], 77 + gi);
            int64_t n = t->numel;
            float *w = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
            memcpy(w, t->data, sizeof(float) * n);
            char err[FTB_ERR_LEN] = "";
            cr_assert_eq(ftb_tensor_quantize(m, t, FORMATS[f], groups[gi], err, sizeof err), 0, "%s", err);
            cr_assert_null(t->data, "%s: data must be NULL once quantized", FORMATS[f]);
            cr_assert_not_null(t->quant);
            ftb_tensor_read_rows(t, 0, t->shape[0], got);
            int bad = 0;
            for (int64_t r = 0; r < t->shape[0]; r++)
                for (int64_t c = 0; c < t->shape[1]; c++) {
                    int64_t i = r * t->shape[1] + c;
                    float ref = ref_value(t, r, c);
                    if (memcmp(&ref, &got[i], 4) != 0 && bad++ < 3)
                        cr_expect(0, "%s/%d (%lld,%lld): layout says %.9g, core gives %.9g", FORMATS[f], groups[gi],
                                  (long long)r, (long long)c, ref, got[i]);
                    double e = fabs((double)w[i] - got[i]), bnd = bound_of(t, r, c, w[i]);
                    if (!(e <= bnd) && bad++ < 3)
                        cr_expect(0, "%s/%d (%lld,%lld): w %.9g stored %.9g, error %.3g above bound %.3g", FORMATS[f],
                                  groups[gi], (long long)r, (long long)c, w[i], got[i], e, bnd);
                }
            cr_expect_eq(bad, 0, "%s/%d: %d elements wrong", FORMATS[f], groups[gi], bad);
            /* the recorded error is the one measured here */
            ftb_quant_error qe[1];
            cr_assert_eq(ftb_model_quant_errors(m, qe, 1), 1);
            double max_abs = 0;
            for (int64_t i = 0; i < n; i++) max_abs = fmax(max_abs, fabs((double)w[i] - got[i]));
            cr_expect_eq(qe[0].max_abs_err, max_abs, "%s: recorded max error %g, measured %g", FORMATS[f],
                         qe[0].max_abs_err, max_abs);
            cr_expect_str_eq(qe[0].name, t->name);
            cr_expect_eq(qe[0].layer, 0);
            free(w);
            free(got);
            ftb_model_free(m);
        }
}

Test(quant, half_formats_round_to_nearest_even_and_saturate)
{
    /* bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even is 1 */
    cr_expect_eq(ftb_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    cr_expect_eq(ftb_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    cr_expect_eq(ftb_f32_to_bf16(3.4e38f), 0x7f7f, "bf16 saturates");
    cr_expect_eq(ftb_f32_to_bf16(-INFINITY), 0xff80);
    cr_expect(ftb_f32_to_bf16(NAN) >> 7 == 0xff || ftb_f32_to_bf16(NAN) >> 7 == 0x1ff, "NaN stays NaN");
    cr_expect_eq(ftb_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    cr_expect_eq(ftb_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    cr_expect_eq(ftb_f32_to_f16(1e6f), 0x7bff, "f16 saturates at 65504");
    cr_expect_eq(ftb_f32_to_f16(-1e6f), 0xfbff);
    cr_expect_eq(ftb_f32_to_f16(0x1p-24f), 0x0001, "smallest subnormal");
    cr_expect_eq(ftb_f32_to_f16(0x1p-26f), 0x0000);
    /* every f16 value round-trips */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue; /* inf, NaN */
        float v = ckpt_f16_value((uint16_t)h);
        cr_assert_eq(ftb_f32_to_f16(v), (uint16_t)h == 0x8000 ? 0x8000 : h, "0x%04x", h);
    }
}

/* ---- round trips ---------------------------------------------------------- */

static void assert_same_storage(const ftb_tensor *a, const ftb_tensor *b)
{
    cr_assert_eq(a->dtype, b->dtype, "%s: dtype %d vs %d", a->name, a->dtype, b->dtype);
    cr_assert_eq(a->group, b->group, "%s: group", a->name);
    if (a->dtype == FTB_DTYPE_F32) {
        cr_assert_eq(memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel), 0, "%s: data", a->name);
        return;
    }
    const ftb_qstore *p = a->quant, *q = b->quant;
    const void *pa[3] = { p->q, p->scales, p->zeros }, *pb[3] = { q->q, q->scales, q->zeros };
    for (int k = 0; k < 3; k++) {
        size_t n = ftb_qstore_part_bytes(p->dtype, p->rows, p->cols, p->group, k);
        if (n) cr_assert_eq(memcmp(pa[k], pb[k], n), 0, "%s: part %d differs", a->name, k);
    }
}

Test(quant, roundtrip_every_format_same_bytes_and_loss)
{
    for (int tied = 0; tied <= 1; tied++)
        for (int f = 0; f < N_FORMATS; f++) {
            int group = !strcmp(FORMATS[f], "int4") ? 32 : 128;
            ftb_model *m = qmodel(tied, 5);
            quantize_or_die(m, FORMATS[f], group, 1);
            qbatch qb;
            make_batch(&qb, m->cfg.vocab_size, 1);
            float loss = loss_of(m, &qb.b);
            char *dir = ckpt_tmpdir(), err[FTB_ERR_LEN] = "";
            cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "%s", err);
            for (int map = 0; map <= 1; map++) {
                ftb_model *l = ftb_model_load(dir, map, err, sizeof err);
                cr_assert_not_null(l, "%s", err);
                cr_expect_eq(ftb_model_quant_errors(l, NULL, 0), 0, "loading re-quantized");
                for (int i = 0; i < m->n_params; i++) {
                    assert_same_storage(m->params[i], l->params[i]);
                    if (l->params[i]->dtype != FTB_DTYPE_F32) {
                        cr_expect_eq(l->params[i]->mapped, map, "%s mapped", l->params[i]->name);
                        cr_expect_null(l->params[i]->data);
                    }
                }
                cr_expect_eq(l->lm_head.dtype, tied ? l->embed.dtype : m->lm_head.dtype);
                float l2 = loss_of(l, &qb.b);
                cr_expect_eq(loss, l2, "%s tied=%d map=%d: loss %.9g after load, %.9g before", FORMATS[f], tied, map,
                             l2, loss);
                ftb_model_free(l);
            }
            ckpt_rm_rf(dir);
            ftb_model_free(m);
        }
}

/* Quantizing while loading an fp32 (or bf16) checkpoint is the same as
 * quantizing in memory, and never holds the whole model in fp32. */
Test(quant, load_quantized_equals_quantize_in_memory)
{
    ftb_model *m = qmodel(0, 6);
    char *dir = ckpt_tmpdir(), err[FTB_ERR_LEN] = "";
    cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "%s", err);
    quantize_or_die(m, "int4-asym", 64, 0);
    cr_assert_eq(ftb_model_quantize_embeddings(m, "int8", 0, err, sizeof err), 0, "%s", err);
    int64_t biggest = 0, quantized = 0;
    for (int i = 0; i < m->n_params; i++) {
        biggest = m->params[i]->numel * 4 > biggest ? m->params[i]->numel * 4 : biggest;
        quantized += ftb_tensor_storage_bytes(m->params[i]);
    }
    for (int map = 0; map <= 1; map++) {
        ftb_mem_stats before, after;
        ftb_mem_get_stats(&before);
        ftb_mem_reset_peaks();
        ftb_model *l = ftb_model_load_quantized(dir, map, "int4-asym", 64, "int8", err, sizeof err);
        cr_assert_not_null(l, "%s", err);
        ftb_mem_get_stats(&after);
        for (int i = 0; i < m->n_params; i++) assert_same_storage(m->params[i], l->params[i]);
        if (!map)
            cr_expect_leq(after.peak[FTB_MEM_WEIGHTS] - before.live[FTB_MEM_WEIGHTS], quantized + biggest,
                          "peak weights %lld while loading: more than the quantized model %lld + one fp32 tensor %lld",
                          (long long)(after.peak[FTB_MEM_WEIGHTS] - before.live[FTB_MEM_WEIGHTS]), (long long)quantized,
                          (long long)biggest);
        cr_expect_eq(ftb_model_quant_errors(l, NULL, 0), 2 * 7 + 2);
        ftb_model_free(l);
    }
    /* a bf16 checkpoint kept as bf16 is not converted (and is mapped) */
    ftb_model *b = qmodel(0, 6);
    quantize_or_die(b, "bf16", 0, 1);
    char *dir2 = ckpt_tmpdir();
    /* written as a plain HF bf16 file: no quantization metadata */
    st_builder sb;
    stb_init(&sb);
    for (int i = 0; i < b->n_params; i++) {
        ftb_tensor *t = b->params[i];
        if (t->dtype == FTB_DTYPE_BF16)
            stb_add_bytes(&sb, t->name, "BF16", 2, t->shape, ((ftb_qstore *)t->quant)->q, (size_t)t->numel * 2);
        else
            stb_add_bytes(&sb, t->name, "F32", t->ndim, t->shape, t->data, (size_t)t->numel * 4);
    }
    char path[4096];
    cr_assert_eq(stb_write(&sb, ckpt_path(path, sizeof path, dir2, "model.safetensors"), 0), 0);
    stb_free(&sb);
    char cfgsrc[4096], cfgdst[4096];
    ckpt_path(cfgsrc, sizeof cfgsrc, dir, "config.json");
    ckpt_path(cfgdst, sizeof cfgdst, dir2, "config.json");
    cr_assert_eq(link(cfgsrc, cfgdst), 0);
    ftb_model *plain = ftb_model_load(dir2, 1, err, sizeof err); /* as before: converted to fp32 */
    cr_assert_not_null(plain, "%s", err);
    cr_expect_eq(plain->layers[0].wq.dtype, FTB_DTYPE_F32);
    ftb_model *kept = ftb_model_load_quantized(dir2, 1, "bf16", 0, "bf16", err, sizeof err);
    cr_assert_not_null(kept, "%s", err);
    for (int i = 0; i < b->n_params; i++) assert_same_storage(b->params[i], kept->params[i]);
    cr_expect_eq(kept->layers[0].wq.mapped, 1, "bf16 kept as bf16 is mapped");
    cr_expect_eq(ftb_model_quant_errors(kept, NULL, 0), 0, "kept without re-quantizing");
    ftb_model *to4 = ftb_model_load_quantized(dir2, 1, "int4", 32, NULL, err, sizeof err);
    cr_assert_not_null(to4, "%s", err);
    cr_expect_eq(to4->layers[1].w_down.dtype, FTB_DTYPE_INT4);
    cr_expect_eq(to4->embed.dtype, FTB_DTYPE_F32);
    cr_expect_null(ftb_model_load_quantized(dir2, 1, "int5", 32, NULL, err, sizeof err));
    cr_expect(strstr(err, "int5") && strstr(err, dir2), "%s", err);
    ftb_model_free(plain);
    ftb_model_free(kept);
    ftb_model_free(to4);
    ftb_model_free(b);
    ckpt_rm_rf(dir2);
    ckpt_rm_rf(dir);
    ftb_model_free(m);
}

Test(quant, safetensors_write_gives_fp32_values_of_a_quantized_tensor)
{
    ftb_model *m = qmodel(0, 7);
    quantize_or_die(m, "int4", 64, 0);
    char *dir = ckpt_tmpdir(), path[4096], err[FTB_ERR_LEN] = "";
    ckpt_path(path, sizeof path, dir, "w.safetensors");
    ftb_tensor *list[] = { &m->layers[1].wo };
    cr_assert_eq(ftb_safetensors_write(path, list, 1, err, sizeof err), 0, "%s", err);
    ftb_st_file f;
    cr_assert_eq(ftb_st_open(path, &f, err, sizeof err), 0, "%s", err);
    const ftb_st_tensor *st = ftb_st_find(&f, list[0]->name);
    cr_assert_not_null(st);
    cr_assert_eq(st->dtype, FTB_ST_F32);
    float *want = malloc(sizeof(float) * list[0]->numel);
    ftb_tensor_read_rows(list[0], 0, list[0]->shape[0], want);
    cr_expect_eq(memcmp(ftb_st_tensor_data(&f, st), want, sizeof(float) * list[0]->numel), 0);
    free(want);
    ftb_st_close(&f);
    ckpt_rm_rf(dir);
    ftb_model_free(m);
}

/* ---- what is refused ------------------------------------------------------ */

Test(quant, bad_requests_name_the_tensor)
{
    ftb_model *m = qmodel(0, 8);
    char err[FTB_ERR_LEN] = "";
    cr_expect_eq(ftb_model_quantize(m, "int4", 48, err, sizeof err), -1);
    cr_expect(strstr(err, "model.layers.0.self_attn.q_proj.weight") && strstr(err, "group size 48") &&
                  strstr(err, "does not divide the row length 128"),
              "%s", err);
    cr_expect_eq(ftb_model_quantize(m, "int4", 7, err, sizeof err), -1);
    cr_expect(strstr(err, "even"), "%s", err);
    cr_expect_eq(ftb_model_quantize(m, "int2", 0, err, sizeof err), -1);
    cr_expect(strstr(err, "unknown storage format 'int2'"), "%s", err);
    cr_expect_eq(ftb_tensor_quantize(m, &m->layers[0].attn_norm, "int8", 0, err, sizeof err), -1);
    cr_expect(strstr(err, "input_layernorm") && strstr(err, "2-D"), "%s", err);
    m->layers[1].w_up.trainable = 1;
    cr_expect_eq(ftb_tensor_quantize(m, &m->layers[1].w_up, "int8", 0, err, sizeof err), -1);
    cr_expect(strstr(err, "up_proj") && strstr(err, "trainable"), "%s", err);
    m->layers[1].w_up.trainable = 0;
    /* bf16 → int4 is allowed; int8 → int4 would compound errors */
    cr_assert_eq(ftb_tensor_quantize(m, &m->layers[0].wq, "bf16", 0, err, sizeof err), 0, "%s", err);
    cr_expect_eq(ftb_tensor_quantize(m, &m->layers[0].wq, "int4", 32, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ftb_tensor_quantize(m, &m->layers[0].wk, "int8", 0, err, sizeof err), 0, "%s", err);
    cr_expect_eq(ftb_tensor_quantize(m, &m->layers[0].wk, "int4", 32, err, sizeof err), -1);
    cr_expect(strstr(err, "k_proj") && strstr(err, "already stored as int8"), "%s", err);
    cr_expect_eq(ftb_tensor_quantize(m, &m->layers[0].wk, "int8", 0, err, sizeof err), 0, "same format: no-op");
    ftb_model_free(m);
}

/* ---- malformed files ------------------------------------------------------ */

/* The header and data section of a safetensors file, to be edited. */
typedef struct {
    json_t *header;
    unsigned char *data;
    size_t data_len;
} st_parts;

static void read_parts(const char *path, st_parts *p)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "%s", path);
    unsigned char len8[8];
    cr_assert_eq(fread(len8, 1, 8, fp), 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | len8[i];
    char *text = malloc(hl);
    cr_assert_eq(fread(text, 1, hl, fp), hl);
    json_error_t je;
    p->header = json_loadb(text, hl, 0, &je);
    cr_assert_not_null(p->header, "%s", je.text);
    free(text);
    long at = ftell(fp);
    fseek(fp, 0, SEEK_END);
    p->data_len = (size_t)(ftell(fp) - at);
    fseek(fp, at, SEEK_SET);
    p->data = malloc(p->data_len + 1);
    cr_assert_eq(fread(p->data, 1, p->data_len, fp), p->data_len);
    fclose(fp);
}

static void write_parts(const char *path, st_parts *p)
{
    char *text = json_dumps(p->header, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    char *h = malloc(padded);
    memcpy(h, text, n);
    memset(h + n, ' ', padded - n);
    cr_assert_eq(ckpt_write_raw(path, padded, h, padded, p->data, p->data_len), 0);
    free(h);
    free(text);
    json_decref(p->header);
    free(p->data);
}

/* A saved quantized model whose file the caller then breaks. */
static char *quantized_checkpoint(const char *fmt, int group, char *path, size_t len)
{
    ftb_model *m = qmodel(0, 9);
    quantize_or_die(m, fmt, group, 0);
    char *dir = ckpt_tmpdir(), err[FTB_ERR_LEN] = "";
    cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "%s", err);
    ftb_model_free(m);
    ckpt_path(path, len, dir, "model.safetensors");
    return dir;
}

static void expect_load_error(const char *dir, const char *path, const char *tensor, const char *what)
{
    for (int map = 0; map <= 1; map++) {
        char err[FTB_ERR_LEN] = "";
        ftb_model *m = ftb_model_load(dir, map, err, sizeof err);
        cr_expect_null(m, "a broken file loaded (%s)", what);
        if (m) ftb_model_free(m);
        cr_expect_null(strchr(err, '\n'), "not one line: %s", err);
        cr_expect(strstr(err, path) != NULL, "error does not name the file: %s", err);
        cr_expect(strstr(err, tensor) != NULL, "error does not name '%s': %s", tensor, err);
        cr_expect(strstr(err, what) != NULL, "error does not say '%s': %s", what, err);
    }
}

#define QNAME "model.layers.1.self_attn.q_proj.weight"

Test(quant, malformed_scales_missing)
{
    char path[4096];
    char *dir = quantized_checkpoint("int4", 64, path, sizeof path);
    st_parts p;
    read_parts(path, &p);
    json_object_del(p.header, QNAME ".scales");
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME ".scales", "missing (scales of quantized weight '" QNAME "')");
    ckpt_rm_rf(dir);
}

Test(quant, malformed_zeros_missing_or_wrong_dtype)
{
    char path[4096];
    char *dir = quantized_checkpoint("int4-asym", 32, path, sizeof path);
    st_parts p;
    read_parts(path, &p);
    json_object_del(p.header, QNAME ".zeros");
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME ".zeros", "missing");
    ckpt_rm_rf(dir);

    dir = quantized_checkpoint("int8", 0, path, sizeof path);
    read_parts(path, &p);
    /* the scales of int8 are F32 [rows]: claim F16 [rows, 2] instead (same bytes) */
    json_t *e = json_object_get(p.header, QNAME ".scales");
    json_object_set_new(e, "dtype", json_string("F16"));
    json_object_set_new(e, "shape", json_pack("[i,i]", 128, 2));
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME ".scales", "dtype F16, but the scales of a quantized weight are F32");
    ckpt_rm_rf(dir);
}

Test(quant, malformed_group_does_not_divide_the_row)
{
    char path[4096];
    char *dir = quantized_checkpoint("int4", 64, path, sizeof path);
    st_parts p;
    read_parts(path, &p);
    json_object_set_new(json_object_get(p.header, "__metadata__"), "ftbench.quant." QNAME, json_string("int4/48"));
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME, "group size 48 does not divide the row length 128");
    ckpt_rm_rf(dir);

    dir = quantized_checkpoint("int4", 64, path, sizeof path);
    read_parts(path, &p);
    /* divides, but the scales were written for 64 */
    json_object_set_new(json_object_get(p.header, "__metadata__"), "ftbench.quant." QNAME, json_string("int4/32"));
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME ".scales", "shape [128, 2], but the scales must be [128, 4]");
    ckpt_rm_rf(dir);
}

Test(quant, malformed_truncated_file)
{
    char path[4096];
    char *dir = quantized_checkpoint("int4", 64, path, sizeof path);
    long size = ckpt_file_size(path);
    cr_assert_eq(truncate(path, size - 100), 0);
    /* the last tensor of the data section is a packed weight */
    for (int map = 0; map <= 1; map++) {
        char err[FTB_ERR_LEN] = "";
        cr_expect_null(ftb_model_load(dir, map, err, sizeof err));
        cr_expect(strstr(err, path) && strstr(err, "tensor 'model.layers.") && strstr(err, "out of range"), "%s", err);
        cr_expect_null(strchr(err, '\n'));
    }
    ckpt_rm_rf(dir);
}

Test(quant, malformed_metadata_and_dtypes)
{
    char path[4096];
    st_parts p;
    /* an unknown format */
    char *dir = quantized_checkpoint("int8", 0, path, sizeof path);
    read_parts(path, &p);
    json_object_set_new(json_object_get(p.header, "__metadata__"), "ftbench.quant." QNAME, json_string("int3"));
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME, "metadata format 'int3'");
    ckpt_rm_rf(dir);
    /* int4 without a group */
    dir = quantized_checkpoint("int4", 64, path, sizeof path);
    read_parts(path, &p);
    json_object_set_new(json_object_get(p.header, "__metadata__"), "ftbench.quant." QNAME, json_string("int4"));
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME, "gives no group size");
    ckpt_rm_rf(dir);
    /* packed codes under an I8 dtype */
    dir = quantized_checkpoint("int4", 64, path, sizeof path);
    read_parts(path, &p);
    json_object_set_new(json_object_get(p.header, QNAME), "dtype", json_string("I8"));
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME, "dtype I8, but the packed 4-bit codes");
    ckpt_rm_rf(dir);
    /* the packed shape of an unpacked tensor */
    dir = quantized_checkpoint("int8", 0, path, sizeof path);
    read_parts(path, &p);
    json_object_set_new(json_object_get(p.header, "__metadata__"), "ftbench.quant." QNAME, json_string("int4/64"));
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME, "of a quantized weight are U8");
    ckpt_rm_rf(dir);
    /* quantized bytes whose metadata is gone */
    dir = quantized_checkpoint("int8", 0, path, sizeof path);
    read_parts(path, &p);
    json_object_del(json_object_get(p.header, "__metadata__"), "ftbench.quant." QNAME);
    write_parts(path, &p);
    expect_load_error(dir, path, QNAME, "dtype I8 is read only for quantized weights");
    ckpt_rm_rf(dir);
    /* metadata about a tensor the model does not have */
    dir = quantized_checkpoint("int8", 0, path, sizeof path);
    read_parts(path, &p);
    json_object_set_new(json_object_get(p.header, "__metadata__"), "ftbench.quant.model.layers.7.mlp.up_proj.weight",
                        json_string("int8"));
    write_parts(path, &p);
    expect_load_error(dir, path, "model.layers.7.mlp.up_proj.weight", "which the model does not have");
    ckpt_rm_rf(dir);
    /* a 1-D tensor described as quantized */
    dir = quantized_checkpoint("int8", 0, path, sizeof path);
    read_parts(path, &p);
    json_object_set_new(json_object_get(p.header, "__metadata__"), "ftbench.quant.model.norm.weight",
                        json_string("bf16"));
    write_parts(path, &p);
    expect_load_error(dir, path, "model.norm.weight", "only 2-D weights");
    ckpt_rm_rf(dir);
}

/* ---- exact gradients through a quantized frozen base --------------------- */

typedef struct {
    ftb_plugin plugin;
    void *state;
    ftb_session s;
    ftb_options opts;
    const char *keys[3], *vals[3];
    ftb_tensor **params;
    int n;
} lora_run;

/* LoRA on q, v, o, down with both factors nonzero, plus every norm and
 * bias of the base trainable. */
static void lora_setup(lora_run *r, ftb_model *m)
{
    memset(r, 0, sizeof *r);
    th_open_method("lora", &r->plugin);
    r->keys[0] = "rank", r->keys[1] = "alpha", r->keys[2] = "targets";
    r->vals[0] = "4", r->vals[1] = "8", r->vals[2] = "q,v,o,down";
    r->opts = (ftb_options){ 3, r->keys, r->vals };
    r->s.model = m;
    ftb_run_opts_default(&r->s.run);
    r->s.options = &r->opts;
    r->s.seed = 5;
    r->s.lr = 1e-3f;
    r->s.total_steps = 1;
    char err[FTB_ERR_LEN] = "";
    r->state = r->plugin.method->init(&r->s, err, sizeof err);
    cr_assert_not_null(r->state, "%s", err);
    r->n = r->plugin.method->trainable(r->state, &r->params);
    ftb_rng rng;
    ftb_rng_seed(&rng, 3);
    for (int i = 0; i < r->n; i++)
        for (int64_t j = 0; j < r->params[i]->numel; j++) r->params[i]->data[j] = 0.2f * ftb_rng_normal(&rng);
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->ndim == 1) m->params[i]->trainable = 1;
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
}

static void lora_teardown(lora_run *r)
{
    r->plugin.method->destroy(r->state);
    ftb_plugin_close(&r->plugin);
}

static float fwd_bwd(ftb_model *m, lora_run *r, const ftb_batch *b, const ftb_run_opts *o)
{
    char err[FTB_ERR_LEN] = "";
    ftb_model_zero_grads(m);
    for (int i = 0; i < r->n; i++) memset(r->params[i]->grad, 0, sizeof(float) * r->params[i]->numel);
    float loss = ftb_model_forward_backward(m, b, o, err, sizeof err);
    cr_assert(!isnan(loss), "%s", err);
    return loss;
}

static double rel_diff(const float *a, const float *b, int64_t n)
{
    double e = 0, ref = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        ref = fmax(ref, fabs((double)b[i]));
    }
    return e / ref;
}

/* With the default tile every weight of this model is one tile, so the
 * products are the dequantized copy's own sgemms: equal to ~1e-6.  With
 * small tiles (several per weight, a partial last one) backward's dx sums
 * over the tiles in another order: equal to fp32 rounding amplified through
 * two blocks (~1e-5). */
static void gradients_equal_dequantized(int64_t tile, double tol)
{
    ftb_set_dequant_tile(tile);
    for (int f = 0; f < N_FORMATS; f++) {
        ftb_model *q = qmodel(f % 2, 21);
        quantize_or_die(q, FORMATS[f], 32, 1);
        ftb_model *d = dequantized_copy(q);
        lora_run rq, rd;
        lora_setup(&rq, q);
        lora_setup(&rd, d);
        qbatch qb;
        make_batch(&qb, q->cfg.vocab_size, 2);
        float lq = fwd_bwd(q, &rq, &qb.b, NULL), ld = fwd_bwd(d, &rd, &qb.b, NULL);
        cr_expect(fabsf(lq - ld) <= 1e-6f * fabsf(ld), "%s: loss %.9g vs dequantized %.9g", FORMATS[f], lq, ld);
        double worst = 0;
        for (int i = 0; i < rq.n; i++) {
            double e = rel_diff(rq.params[i]->grad, rd.params[i]->grad, rq.params[i]->numel);
            worst = fmax(worst, e);
            cr_expect(e < tol, "%s: %s max rel diff %g", FORMATS[f], rq.params[i]->name, e);
        }
        for (int i = 0; i < q->n_params; i++) {
            if (!q->params[i]->trainable) continue;
            double e = rel_diff(q->params[i]->grad, d->params[i]->grad, q->params[i]->numel);
            worst = fmax(worst, e);
            cr_expect(e < tol, "%s: %s max rel diff %g", FORMATS[f], q->params[i]->name, e);
        }
        cr_log_info("%s, tile %lld: loss %.7g (vs %.7g), worst gradient rel diff %.2g", FORMATS[f], (long long)tile, lq,
                    ld, worst);
        /* a frozen quantized tensor has no fp32 data for a method to read */
        cr_expect_null(q->layers[0].wq.data);
        cr_expect_null(q->layers[0].wq.grad);
        lora_teardown(&rq);
        lora_teardown(&rd);
        ftb_model_free(q);
        ftb_model_free(d);
    }
    ftb_set_dequant_tile(0);
}

Test(quant, gradients_through_a_quantized_base_equal_its_dequantized_copy) { gradients_equal_dequantized(0, 1e-6); }

Test(quant, gradients_through_small_tiles_equal_to_rounding) { gradients_equal_dequantized(40 * 128, 5e-5); }

/* A quantized weight that becomes trainable is dequantized into an owned
 * fp32 buffer (the compressed storage goes), and trains as any other. */
Test(quant, a_quantized_weight_made_trainable_becomes_fp32)
{
    ftb_model *m = qmodel(1, 22);
    quantize_or_die(m, "int4", 64, 1);
    ftb_tensor *t = &m->layers[1].w_down;
    float *want = malloc(sizeof(float) * t->numel);
    ftb_tensor_read_rows(t, 0, t->shape[0], want);
    int64_t qbytes = ftb_tensor_storage_bytes(t);
    ftb_mem_stats a, b;
    ftb_mem_get_stats(&a);
    t->trainable = 1;
    m->embed.trainable = 1; /* tied: the LM head follows */
    char err[FTB_ERR_LEN] = "";
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    ftb_mem_get_stats(&b);
    cr_assert_not_null(t->data);
    cr_expect_eq(t->dtype, FTB_DTYPE_F32);
    cr_expect_null(t->quant);
    cr_expect_eq(memcmp(t->data, want, sizeof(float) * t->numel), 0);
    cr_expect_eq(m->lm_head.data, m->embed.data);
    cr_expect_eq(m->lm_head.dtype, FTB_DTYPE_F32);
    int64_t ebytes = ftb_dtype_bytes(FTB_DTYPE_INT4, m->embed.shape[0], m->embed.shape[1], 64);
    cr_expect_eq(b.live[FTB_MEM_WEIGHTS] - a.live[FTB_MEM_WEIGHTS], -(qbytes + ebytes));
    cr_expect_eq(b.live[FTB_MEM_TRAINABLE] - a.live[FTB_MEM_TRAINABLE], 4 * (t->numel + m->embed.numel));
    qbatch qb;
    make_batch(&qb, m->cfg.vocab_size, 3);
    float loss = ftb_model_forward_backward(m, &qb.b, NULL, err, sizeof err);
    cr_assert(!isnan(loss), "%s", err);
    double g = 0;
    for (int64_t i = 0; i < t->numel; i++) g += fabs(t->grad[i]);
    cr_expect_gt(g, 0, "no gradient reached the dequantized weight");
    free(want);
    ftb_model_free(m);
}

/* ---- errors ----------------------------------------------------------------- */

Test(quant, errors_per_tensor_and_loss_difference)
{
    double rms[N_FORMATS];
    for (int f = 0; f < N_FORMATS; f++) {
        ftb_model *ref = qmodel(0, 31), *m = qmodel(0, 31);
        quantize_or_die(m, FORMATS[f], 64, 1);
        ftb_quant_error rec[32], cmp[32];
        int n = ftb_model_quant_errors(m, rec, 32);
        cr_assert_eq(n, 2 * 7 + 2, "%s: %d tensors recorded", FORMATS[f], n);
        char err[FTB_ERR_LEN] = "";
        int n2 = ftb_quant_compare(ref, m, cmp, 32, err, sizeof err);
        cr_assert_eq(n2, n, "%s: %s", FORMATS[f], err);
        rms[f] = 0;
        for (int i = 0; i < n; i++) {
            const ftb_quant_error *c = NULL;
            for (int j = 0; j < n2; j++)
                if (!strcmp(cmp[j].name, rec[i].name)) c = &cmp[j];
            cr_assert_not_null(c, "%s", rec[i].name);
            cr_expect(fabs(c->max_abs_err - rec[i].max_abs_err) <= 1e-12, "%s", rec[i].name);
            cr_expect(fabs(c->rms_rel_err - rec[i].rms_rel_err) <= 1e-9, "%s", rec[i].name);
            cr_expect(fabs(c->mean_rel_err - rec[i].mean_rel_err) <= 1e-9, "%s", rec[i].name);
            cr_expect_gt(c->max_abs_err, 0, "%s", rec[i].name);
            cr_expect_leq(c->max_rel_err, 1.0);
            rms[f] = fmax(rms[f], c->rms_rel_err);
        }
        qbatch qb;
        make_batch(&qb, m->cfg.vocab_size, 4);
        float lr, lm;
        float delta = ftb_quant_loss_delta(ref, m, &qb.b, NULL, &lr, &lm, err, sizeof err);
        cr_assert(!isnan(delta), "%s", err);
        cr_expect_eq(delta, lm - lr);
        cr_log_info("%s: worst rms rel err %.3g, loss %.6f vs fp32 %.6f", FORMATS[f], rms[f], lm, lr);
        ftb_model_free(ref);
        ftb_model_free(m);
    }
    /* Gaussian weights: bf16 ~2^-9, f16 ~2^-11, int8 ~1%, int4 ~10% */
    cr_expect_lt(rms[0], 3e-3);
    cr_expect_lt(rms[1], 5e-4);
    cr_expect_lt(rms[2], 1.5e-2);
    cr_expect_lt(rms[3], 0.2);
    cr_expect_lt(rms[4], 0.2);
    cr_expect_lt(rms[1], rms[0]);
    cr_expect_lt(rms[2], rms[3]);
    cr_expect_lt(rms[4], rms[3], "asymmetric int4 fits a group better than symmetric");
}

/* ---- memory and residency -------------------------------------------------- */

Test(quant, weights_category_shrinks_as_the_format_says)
{
    ftb_config c = qcfg(1);
    char err[FTB_ERR_LEN] = "";
    int64_t lin = 0, lin_rows = 0, fp32_all = 0;
    {
        ftb_model *m = ftb_model_create(&c, 1, err, sizeof err);
        for (int l = 0; l < c.n_layers; l++)
            for (int k = 0; k < FTB_LIN_COUNT; k++) {
                lin += ftb_layer_weight(&m->layers[l], k)->numel;
                lin_rows += ftb_layer_weight(&m->layers[l], k)->shape[0];
            }
        for (int i = 0; i < m->n_params; i++) fp32_all += 4 * m->params[i]->numel;
        ftb_model_free(m);
    }
    /* bytes of the seven linears, by the layouts of docs/QUANT.md (group 64) */
    const int64_t want[N_FORMATS] = { 2 * lin, 2 * lin, lin + 4 * lin_rows, lin / 2 + 2 * (lin / 64),
                                      lin / 2 + 4 * (lin / 64) };
    for (int f = 0; f < N_FORMATS; f++) {
        ftb_mem_stats a, b;
        ftb_mem_get_stats(&a);
        ftb_model *m = ftb_model_create(&c, 1, err, sizeof err);
        quantize_or_die(m, FORMATS[f], 64, 0);
        ftb_mem_get_stats(&b);
        int64_t weights = b.live[FTB_MEM_WEIGHTS] - a.live[FTB_MEM_WEIGHTS];
        cr_expect_eq(weights, fp32_all - 4 * lin + want[f], "%s: weights %lld, expected %lld", FORMATS[f],
                     (long long)weights, (long long)(fp32_all - 4 * lin + want[f]));
        int64_t storage = 0;
        for (int i = 0; i < m->n_params; i++) storage += ftb_tensor_storage_bytes(m->params[i]);
        cr_expect_eq(storage, weights, "%s: storage bytes %lld vs weights category %lld", FORMATS[f],
                     (long long)storage, (long long)weights);
        cr_log_info("%s: %.3f bits per linear weight; model %lld bytes vs %lld in fp32", FORMATS[f],
                    8.0 * want[f] / lin, (long long)weights, (long long)fp32_all);
        ftb_model_free(m);
    }
    /* int4 with group 64: 4.25 bits, about 1/7.5 of fp32 */
    cr_expect(fabs(32.0 * (double)want[3] / (4.0 * lin) - 4.25) < 1e-9);
}

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') v = atol(line + n + 1);
    if (f) fclose(f);
    return v;
}

/* Mapped pages are sampled at every phase change and, through a hook on
 * gate_proj that changes nothing, inside every block's forward and backward. */
static long peak_file_kb;
static void sample_rss(const char *label, void *ud)
{
    (void)label, (void)ud;
    long v = status_kb("RssFile");
    if (v > peak_file_kb) peak_file_kb = v;
}
static void probe_fwd(ftb_adapter *a, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    (void)a, (void)c, (void)x, (void)y, (void)saved;
    sample_rss(NULL, NULL);
}
static void probe_bwd(ftb_adapter *a, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
    (void)a, (void)c, (void)x, (void)dy, (void)dx, (void)saved;
    sample_rss(NULL, NULL);
}
static const ftb_adapter_ops probe_ops = { FTB_ADAPTER_OPS_VERSION, probe_fwd, probe_bwd, NULL };

/* Lazy residency: identical losses and gradients (bitwise for a quantized
 * base; for an fp32 one the streamed LM head sums dx over its row tiles,
 * so equal to rounding), and a resident set of mapped weights that never
 * holds much more than one block: the LM head streams its tiles. */
Test(quant, lazy_residency_identical_results_smaller_resident_set)
{
    ftb_config c = { "quant-rss", 256, 256, 8, 4, 2, 64, 1024, 64, 10000.f, 1e-6f, 1, 1, { 0 }, "" };
    char err[FTB_ERR_LEN] = "";
    const char *fmts[] = { "f32", "int4" };
    for (int f = 0; f < 2; f++) {
        ftb_model *m = ftb_model_create(&c, 41, err, sizeof err);
        cr_assert_not_null(m, "%s", err);
        quantize_or_die(m, fmts[f], 64, 1);
        char *dir = ckpt_tmpdir();
        cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "%s", err);
        ftb_model_free(m);
        m = ftb_model_load(dir, 1, err, sizeof err);
        cr_assert_not_null(m, "%s", err);
        lora_run r;
        lora_setup(&r, m);
        ftb_adapter probe = { &probe_ops, 0, NULL };
        for (int l = 0; l < c.n_layers; l++) ftb_attach_adapter(m, l, FTB_LIN_GATE, &probe);
        qbatch qb;
        make_batch(&qb, c.vocab_size, 5);
        ftb_keep_policy keep[8];
        ftb_run_opts o;
        ftb_run_opts_default(&o);
        float loss[2][2];
        float *grads[2][2];
        long peak[2] = { 0, 0 };
        ftb_model_set_residency(m, FTB_RESIDENT_LAZY_BLOCK);
        fwd_bwd(m, &r, &qb.b, &o); /* warm-up: code pages, allocator */
        for (int pol = 0; pol < 2; pol++) {
            for (int l = 0; l < 8; l++) keep[l] = pol ? FTB_KEEP_INPUT : FTB_KEEP_ALL;
            o.keep = keep;
            for (int res = 1; res >= 0; res--) { /* lazy first: all-resident leaves its pages in */
                ftb_model_set_residency(m, res ? FTB_RESIDENT_LAZY_BLOCK : FTB_RESIDENT_ALL);
                long base = status_kb("RssFile");
                peak_file_kb = 0;
                ftb_mem_set_phase_listener(sample_rss, NULL);
                loss[pol][res] = fwd_bwd(m, &r, &qb.b, &o);
                ftb_mem_set_phase_listener(NULL, NULL);
                if (pol == 0) peak[res] = peak_file_kb - base;
                int64_t total = 0;
                for (int i = 0; i < r.n; i++) total += r.params[i]->numel;
                for (int i = 0; i < m->n_params; i++)
                    if (m->params[i]->grad) total += m->params[i]->numel;
                float *g = grads[pol][res] = malloc(sizeof(float) * total);
                for (int i = 0; i < r.n; i++, g += r.params[i - 1]->numel)
                    memcpy(g, r.params[i]->grad, sizeof(float) * r.params[i]->numel);
                for (int i = 0; i < m->n_params; i++)
                    if (m->params[i]->grad) {
                        memcpy(g, m->params[i]->grad, sizeof(float) * m->params[i]->numel);
                        g += m->params[i]->numel;
                    }
                if (res == 0 && f == 1) {
                    cr_expect_eq(loss[pol][0], loss[pol][1], "%s: loss differs with lazy residency", fmts[f]);
                    cr_expect_eq(memcmp(grads[pol][0], grads[pol][1], sizeof(float) * total), 0,
                                 "%s keep=%d: gradients differ with lazy residency", fmts[f], pol);
                }
                if (res == 0 && f == 0) {
                    cr_expect_eq(loss[pol][0], loss[pol][1], "%s: loss differs with lazy residency", fmts[f]);
                    double e = rel_diff(grads[pol][1], grads[pol][0], total);
                    cr_expect_lt(e, 1e-5, "%s keep=%d: gradients differ by %g with lazy residency", fmts[f], pol, e);
                }
                if (pol == 0 && res == 0) {
                    /* put the pages back out for the next policy's lazy run */
                    ftb_model_set_residency(m, FTB_RESIDENT_LAZY_BLOCK);
                    fwd_bwd(m, &r, &qb.b, &o);
                }
            }
        }
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) free(grads[i][j]);
        long file_kb = ckpt_file_size(ckpt_path((char[4096]){ 0 }, 4096, dir, "model.safetensors")) / 1024;
        long block_kb = 0;
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            block_kb += ftb_tensor_storage_bytes(ftb_layer_weight(&m->layers[0], k)) / 1024;
        long head_kb = ftb_tensor_storage_bytes(&m->embed) / 1024;
        cr_log_info(
            "%s: file %ld KiB, one block %ld KiB, embedding %ld KiB; peak mapped RSS growth: all %ld KiB, lazy %ld KiB",
            fmts[f], file_kb, block_kb, head_kb, peak[0], peak[1]);
        cr_expect_gt(peak[0], file_kb * 8 / 10, "%s: all-resident run touched %ld of %ld KiB", fmts[f], peak[0],
                     file_kb);
        long bound = 2 * block_kb + 256; /* a block, the next one's first pages, a head tile */
        cr_expect_lt(peak[1], bound, "%s: lazy resident peak %ld KiB, more than ~one block (%ld KiB)", fmts[f], peak[1],
                     bound);
        cr_expect_lt(peak[1], peak[0] / 2);
        lora_teardown(&r);
        ftb_model_free(m);
        ckpt_rm_rf(dir);
    }
}

/* No fp32 copy of a quantized model exists while it runs: the workspace
 * peak grows by at most one dequantized tile (here one weight, the largest),
 * and the tile is returned when the step ends. */
Test(quant, a_step_holds_one_dequantized_tile_at_most)
{
    int64_t peak[2], after[2], before[2];
    int64_t largest = 0, linears = 0;
    for (int q = 0; q < 2; q++) {
        ftb_model *m = qmodel(0, 51);
        for (int i = 0; i < m->n_params; i++)
            if (m->params[i]->ndim == 2) {
                largest = m->params[i]->numel * 4 > largest ? m->params[i]->numel * 4 : largest;
                linears += m->params[i]->numel * 4;
            }
        if (q) quantize_or_die(m, "int4", 32, 1);
        lora_run r;
        lora_setup(&r, m);
        qbatch qb;
        make_batch(&qb, m->cfg.vocab_size, 6);
        ftb_mem_stats a, b;
        ftb_mem_get_stats(&a);
        ftb_mem_reset_peaks();
        fwd_bwd(m, &r, &qb.b, NULL);
        ftb_mem_get_stats(&b);
        before[q] = a.live[FTB_MEM_WORKSPACE];
        peak[q] = b.peak[FTB_MEM_WORKSPACE] - a.live[FTB_MEM_WORKSPACE];
        after[q] = b.live[FTB_MEM_WORKSPACE];
        lora_teardown(&r);
        ftb_model_free(m);
    }
    cr_expect_eq(after[1], before[1], "workspace left after a quantized step: %lld", (long long)(after[1] - before[1]));
    cr_expect_leq(peak[1] - peak[0], largest, "workspace peak +%lld bytes over fp32: more than one weight (%lld)",
                  (long long)(peak[1] - peak[0]), (long long)largest);
    cr_expect_lt(largest, linears / 4);
}

/* ---- SGD (--optimizer sgd) -------------------------------------------------- */

/* θ − lr·g with one fp32 rounding per operation, as the update must do it. */
static float sgd_expected(float w, float g, float lr, float wd)
{
    volatile float step = wd == 0.0f ? lr * g : lr * (g + wd * w);
    volatile float r = w - step;
    return r;
}

/* SGD keeps no state and updates θ ← θ − lr·g exactly (θ − lr·(g + wd·θ)
 * with weight decay, none on no_decay tensors); AdamW, selected again,
 * allocates its moments as before. */
Test(quant, sgd_is_theta_minus_lr_g_exactly_and_keeps_no_state)
{
    for (int decay = 0; decay < 2; decay++) {
        ftb_model *m = qmodel(0, 61);
        char err[FTB_ERR_LEN] = "";
        ftb_model_set_trainable(m, 1);
        cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
        int64_t total = 0;
        for (int i = 0; i < m->n_params; i++) {
            ftb_fill_normal(m->params[i]->grad, m->params[i]->numel, 0.5f, 100 + (uint64_t)i);
            total += m->params[i]->numel;
        }
        float *before = malloc(sizeof(float) * (size_t)total);
        for (int i = 0, k = 0; i < m->n_params; k += (int)m->params[i]->numel, i++)
            memcpy(before + k, m->params[i]->data, sizeof(float) * (size_t)m->params[i]->numel);
        ftb_mem_stats a, b;
        ftb_mem_get_stats(&a);
        ftb_optimizer_select(FTB_OPTIM_SGD);
        cr_expect_eq(ftb_optimizer_selected(), FTB_OPTIM_SGD);
        ftb_adamw opt;
        const float lr = 0.0137f, wd = decay ? 0.1f : 0.0f;
        cr_assert_eq(ftb_adamw_init(&opt, m, NULL, 0, lr, wd, err, sizeof err), 0, "%s", err);
        ftb_mem_get_stats(&b);
        cr_expect_eq(b.live[FTB_MEM_OPTIM], a.live[FTB_MEM_OPTIM], "SGD allocated %lld bytes of optimizer state",
                     (long long)(b.live[FTB_MEM_OPTIM] - a.live[FTB_MEM_OPTIM]));
        cr_expect_null(opt.m);
        ftb_adamw_step(&opt);
        ftb_adamw_step(&opt); /* twice: no hidden state between steps */
        int64_t bad = 0;
        for (int i = 0, k = 0; i < m->n_params; k += (int)m->params[i]->numel, i++) {
            const ftb_tensor *t = m->params[i];
            const float d = t->no_decay ? 0.0f : wd;
            for (int64_t j = 0; j < t->numel; j++) {
                float e = sgd_expected(sgd_expected(before[k + j], t->grad[j], lr, d), t->grad[j], lr, d);
                bad += memcmp(&e, &t->data[j], sizeof e) != 0;
            }
        }
        cr_expect_eq(bad, 0, "%lld of %lld values differ from theta - lr*g (decay %d)", (long long)bad,
                     (long long)total, decay);
        ftb_adamw_free(&opt);
        ftb_optimizer_select(FTB_OPTIM_ADAMW);
        cr_assert_eq(ftb_adamw_init(&opt, m, NULL, 0, lr, wd, err, sizeof err), 0, "%s", err);
        ftb_mem_get_stats(&b);
        cr_expect_eq(b.live[FTB_MEM_OPTIM] - a.live[FTB_MEM_OPTIM], 8 * total, "AdamW moments: %lld bytes",
                     (long long)(b.live[FTB_MEM_OPTIM] - a.live[FTB_MEM_OPTIM]));
        ftb_adamw_free(&opt);
        free(before);
        ftb_model_free(m);
    }
    cr_expect_eq(ftb_optimizer_parse("sgd"), FTB_OPTIM_SGD);
    cr_expect_eq(ftb_optimizer_parse("adamw"), FTB_OPTIM_ADAMW);
    cr_expect_eq(ftb_optimizer_parse("adam"), -1);
    cr_expect_str_eq(ftb_optimizer_name(FTB_OPTIM_SGD), "sgd");
}

/* Through a plugin: a backprop step of lora with SGD selected moves each
 * adapter by exactly −lr times the gradient that step computed (the
 * gradients are left in place after the step). */
Test(quant, sgd_through_a_plugin_step_is_exact)
{
    ftb_model *m = qmodel(0, 62);
    ftb_optimizer_select(FTB_OPTIM_SGD);
    lora_run r;
    lora_setup(&r, m);
    int64_t total = 0;
    for (int i = 0; i < r.n; i++) total += r.params[i]->numel;
    float *before = malloc(sizeof(float) * (size_t)total);
    for (int i = 0, k = 0; i < r.n; k += (int)r.params[i]->numel, i++)
        memcpy(before + k, r.params[i]->data, sizeof(float) * (size_t)r.params[i]->numel);
    qbatch qb;
    make_batch(&qb, m->cfg.vocab_size, 8);
    ftb_step_result out;
    memset(&out, 0, sizeof out);
    char err[FTB_ERR_LEN] = "";
    cr_assert_eq(r.plugin.method->step(r.state, &r.s, &qb.b, &out, err, sizeof err), 0, "%s", err);
    int64_t bad = 0, moved = 0;
    for (int i = 0, k = 0; i < r.n; k += (int)r.params[i]->numel, i++)
        for (int64_t j = 0; j < r.params[i]->numel; j++) {
            float e = sgd_expected(before[k + j], r.params[i]->grad[j], r.s.lr, 0.0f);
            bad += memcmp(&e, &r.params[i]->data[j], sizeof e) != 0;
            moved += r.params[i]->data[j] != before[k + j];
        }
    cr_expect_eq(bad, 0, "%lld of %lld adapter values differ from theta - lr*g", (long long)bad, (long long)total);
    cr_expect_gt(moved, total / 2, "only %lld of %lld values moved", (long long)moved, (long long)total);
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    cr_expect_eq(st.live[FTB_MEM_OPTIM], 0, "lora with SGD holds %lld bytes of optimizer state",
                 (long long)st.live[FTB_MEM_OPTIM]);
    free(before);
    lora_teardown(&r);
    ftb_model_free(m);
    ftb_optimizer_select(FTB_OPTIM_ADAMW);
}

/* ---- mebp and mesp bring a mapped base in block by block ------------------- */

static void *init_method(ftb_plugin *p, ftb_session *s, ftb_model *m, const char *residency_opt)
{
    static const char *keys[1] = { "residency" };
    static const char *vals[1];
    static ftb_options o;
    vals[0] = residency_opt;
    o = (ftb_options){ residency_opt ? 1 : 0, keys, vals };
    memset(s, 0, sizeof *s);
    s->model = m;
    ftb_run_opts_default(&s->run);
    s->options = &o;
    s->seed = 3;
    s->lr = 1e-3f;
    s->total_steps = 1;
    char err[FTB_ERR_LEN] = "";
    void *st = p->method->init(s, err, sizeof err);
    cr_assert_not_null(st, "%s: %s", p->method->name, err);
    return st;
}

Test(quant, mebp_and_mesp_set_lazy_residency_on_a_mapped_base)
{
    const char *methods[] = { "mebp", "mesp" };
    char err[FTB_ERR_LEN] = "";
    ftb_model *q = qmodel(1, 63);
    quantize_or_die(q, "int4", 64, 1);
    char *dir = ckpt_tmpdir();
    cr_assert_eq(ftb_model_save(q, dir, err, sizeof err), 0, "%s", err);
    ftb_model_free(q);
    for (int k = 0; k < 2; k++) {
        ftb_plugin p;
        th_open_method(methods[k], &p);
        /* Mapped: lazy by default, restored at destroy; as-given keeps it. */
        ftb_model *m = ftb_model_load(dir, 1, err, sizeof err);
        cr_assert_not_null(m, "%s", err);
        cr_expect_gt(ftb_model_mapped_bytes(m), 0);
        ftb_session s;
        void *st = init_method(&p, &s, m, NULL);
        cr_expect_eq(m->residency, FTB_RESIDENT_LAZY_BLOCK, "%s left a mapped base all-resident", methods[k]);
        qbatch qb;
        make_batch(&qb, m->cfg.vocab_size, 9);
        ftb_step_result out;
        cr_expect_eq(p.method->step(st, &s, &qb.b, &out, err, sizeof err), 0, "%s", err);
        p.method->destroy(st);
        cr_expect_eq(m->residency, FTB_RESIDENT_ALL, "%s did not restore the residency", methods[k]);
        st = init_method(&p, &s, m, "as-given");
        cr_expect_eq(m->residency, FTB_RESIDENT_ALL);
        p.method->destroy(st);
        ftb_model_free(m);
        /* Built in memory: nothing to drop, residency left alone. */
        m = qmodel(1, 64);
        cr_expect_eq(ftb_model_mapped_bytes(m), 0);
        st = init_method(&p, &s, m, NULL);
        cr_expect_eq(m->residency, FTB_RESIDENT_ALL, "%s set lazy residency on a model in memory", methods[k]);
        p.method->destroy(st);
        ftb_model_free(m);
        /* A bad value is one clear error. */
        m = qmodel(1, 65);
        static const char *keys[1] = { "residency" }, *vals[1] = { "sometimes" };
        ftb_options o = { 1, keys, vals };
        memset(&s, 0, sizeof s);
        s.model = m;
        ftb_run_opts_default(&s.run);
        s.options = &o;
        err[0] = 0;
        cr_expect_null(p.method->init(&s, err, sizeof err));
        cr_expect(strstr(err, "option residency: 'sometimes'") != NULL, "%s: %s", methods[k], err);
        ftb_model_free(m);
        ftb_plugin_close(&p);
    }
    ckpt_rm_rf(dir);
}
