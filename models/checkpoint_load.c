/*
 * checkpoint_load.c — a model from a Hugging Face checkpoint (config.json,
 * model.safetensors or an index + shards).
 *
 * Every tensor the config implies is looked up by its HF name, its shape
 * checked against the config, and its data either pointed into the file
 * mapping (F32, aligned, map != 0) or copied/converted into owned fp32
 * memory; bf16/f16 tensors may be kept in their format, and tensors the
 * file stores quantized are read as such (checkpoint_load_quant.c).
 *
 * Every error is one line, "path: tensor 'name': problem" (or "path:
 * problem" when no tensor is involved).
 */
#include "checkpoint_internal.h"
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"
#include "safetensors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int shapes_equal(const ftb_tensor *t, const ftb_st_tensor *st)
{
    if (t->ndim != st->ndim) return 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != st->shape[i]) return 0;
    return 1;
}
/* Storage of a bf16/f16 tensor kept in its own format: the file's bytes
 * (map) or an owned copy. */
static int keep_half(ftb_model *m, ftb_tensor *t, shard *s, const ftb_st_tensor *st, int map, char *err, size_t errlen)
{
    ftb_dtype d = st->dtype == FTB_ST_BF16 ? FTB_DTYPE_BF16 : FTB_DTYPE_F16;
    const uint8_t *bytes = ftb_st_tensor_data(&s->file, st);
    ftb_qstore *q;
    if (map && (uintptr_t)bytes % 2 == 0) {
        q = calloc(1, sizeof *q);
        if (q) {
            ftb_ckpt_give_mapping(m, s);
            q->dtype = d;
            q->rows = t->shape[0];
            q->cols = t->shape[1];
            q->q = bytes;
            q->mapped = 1;
        }
    } else {
        q = ftb_qstore_alloc(d, 0, t->shape[0], t->shape[1]);
        if (q) memcpy(q->owned[QPART_Q], bytes, (size_t)t->numel * 2);
    }
    if (!q) {
        ck_error(err, errlen, "%s: tensor '%s': out of memory", s->path, t->name);
        return -1;
    }
    ftb_model_track_qstore(m, q);
    t->data = NULL;
    t->dtype = d;
    t->group = 0;
    t->quant = q;
    t->mapped = q->mapped;
    return 0;
}

/* Points t at the file's bytes or copies/converts them into owned memory.
 * keep_as: a bf16/f16 tensor wanted in that same format is kept so (no
 * conversion); FTB_DTYPE_F32 converts everything to fp32 as before. */
static int load_tensor(ftb_model *m, ftb_tensor *t, shard *s, const ftb_st_tensor *st, int map, ftb_dtype keep_as,
                       char *err, size_t errlen)
{
    if (!shapes_equal(t, st)) {
        char want[160], got[160];
        ftb_st_format_shape(want, sizeof want, t->ndim, t->shape);
        ftb_st_format_shape(got, sizeof got, st->ndim, st->shape);
        ck_error(err, errlen, "%s: tensor '%s': shape %s does not match the config's %s", s->path, t->name, got, want);
        return -1;
    }
    if (st->dtype == FTB_ST_I8 || st->dtype == FTB_ST_U8) {
        ck_error(err, errlen,
                 "%s: tensor '%s': dtype %s is read only for quantized weights the file's metadata describes "
                 "(no '" QUANT_META_PREFIX "%s' entry)",
                 s->path, t->name, ftb_st_dtype_name(st->dtype), t->name);
        return -1;
    }
    if (t->ndim == 2 && ((st->dtype == FTB_ST_BF16 && keep_as == FTB_DTYPE_BF16) ||
                         (st->dtype == FTB_ST_F16 && keep_as == FTB_DTYPE_F16)))
        return keep_half(m, t, s, st, map, err, errlen);
    const uint8_t *bytes = ftb_st_tensor_data(&s->file, st);
    if (st->dtype == FTB_ST_F32 && map && ((uintptr_t)bytes % _Alignof(float)) == 0) {
        ftb_ckpt_give_mapping(m, s);
        t->data = (float *)(uintptr_t)bytes; /* read-only pages: t->mapped says so */
        t->mapped = 1;
        return 0;
    }
    float *data = ftb_alloc(FTB_MEM_WEIGHTS, (size_t)t->numel * sizeof(float));
    if (!data) {
        ck_error(err, errlen, "%s: tensor '%s': out of memory for %" PRId64 " floats", s->path, t->name, t->numel);
        return -1;
    }
    ftb_model_own(m, data);
    switch (st->dtype) {
    case FTB_ST_F32: memcpy(data, bytes, (size_t)t->numel * sizeof(float)); break;
    case FTB_ST_BF16: ftb_bf16_to_f32_array(bytes, data, t->numel); break;
    case FTB_ST_F16: ftb_f16_to_f32_array(bytes, data, t->numel); break;
    default: break;
    }
    t->data = data;
    t->mapped = 0;
    return 0;
}

typedef struct {
    const char *linears, *embeddings;
    int group;
} load_plan;

static int is_block_linear(const ftb_model *m, const ftb_tensor *t)
{
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            if (ftb_layer_weight(&m->layers[l], (ftb_linear_kind)k) == t) return 1;
    return 0;
}

static ftb_model *load_model(const char *dir, int map, const load_plan *plan, char *err, size_t errlen)
{
    char *config_path = ftb_path_join(dir, "config.json");
    if (!config_path) {
        ck_error(err, errlen, "%s: out of memory", dir);
        return NULL;
    }
    ftb_config cfg;
    int rc = ftb_config_load_json(config_path, &cfg, err, errlen);
    /* Loading is for computing: a model the core would compute differently
     * (cfg.shape_only says why) is refused here. */
    if (rc == 0 && cfg.shape_only[0]) {
        ck_error(err, errlen, "%s: %s", config_path, cfg.shape_only);
        rc = -1;
    }
    free(config_path);
    if (rc != 0) return NULL;

    ftb_model *m = ftb_model_new_empty(&cfg, err, errlen);
    if (!m) return NULL;

    checkpoint_source src;
    if (ftb_ckpt_source_open(&src, dir, err, errlen) != 0) goto fail;
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (t->numel == 0) continue; /* nothing to read (absent bias) */
        const ftb_st_tensor *st;
        shard *s = ftb_ckpt_source_locate(&src, t->name, &st, err, errlen);
        if (!s) goto fail;
        const char *want = NULL;
        if (plan && is_block_linear(m, t))
            want = plan->linears;
        else if (plan && (t == &m->embed || t == &m->lm_head))
            want = plan->embeddings;
        int want_d = want ? ftb_dtype_parse(want) : FTB_DTYPE_F32;
        char key[160];
        snprintf(key, sizeof key, "%s%s", QUANT_META_PREFIX, t->name);
        const char *desc = ftb_st_meta(&s->file, key);
        if (desc ? ftb_ckpt_load_quantized_tensor(m, t, s, st, desc, map, err, errlen)
                 : load_tensor(m, t, s, st, map, want_d < 0 ? FTB_DTYPE_F32 : (ftb_dtype)want_d, err, errlen))
            goto fail;
        if (want && want_d != FTB_DTYPE_F32) {
            /* Quantized as it is read: at most one tensor exists in fp32. */
            char why[FTB_ERR_LEN];
            if (ftb_tensor_quantize(m, t, want, plan->group, why, sizeof why) != 0) {
                ck_error(err, errlen, "%s: %s", s->path, why);
                goto fail;
            }
        }
    }
    for (int i = 0; i < src.n_shards; i++)
        if (src.shards[i].open && ftb_ckpt_check_quant_metadata(m, &src.shards[i], err, errlen) != 0) goto fail;
    /* Files the model did not take a mapping of (all of them when map == 0)
     * are unmapped here; their data has been copied. */
    ftb_ckpt_source_close(&src);
    if (ftb_model_alloc_missing(m, err, errlen) != 0) {
        ftb_model_free(m);
        return NULL;
    }
    return m;

fail:
    ftb_ckpt_source_close(&src);
    ftb_model_free(m);
    return NULL;
}

ftb_model *ftb_model_load(const char *dir, int map, char *err, size_t errlen)
{
    return load_model(dir, map, NULL, err, errlen);
}

ftb_model *ftb_model_load_quantized(const char *dir, int map, const char *format, int group, const char *embed_format,
                                    char *err, size_t errlen)
{
    const char *formats[2] = { format, embed_format };
    for (int i = 0; i < 2; i++)
        if (formats[i] && ftb_dtype_parse(formats[i]) < 0) {
            ck_error(err, errlen, "%s: unknown storage format '%s' (f32, bf16, f16, int8, int4, int4-asym)", dir,
                     formats[i]);
            return NULL;
        }
    load_plan plan = { format, embed_format, group };
    return load_model(dir, map, &plan, err, errlen);
}
