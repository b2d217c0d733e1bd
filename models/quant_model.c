/* quant_model.c — a model's frozen weights quantized in place: each tensor's
 * fp32 (or half) storage replaced by its quantized storage, the error of
 * every element recorded (docs/QUANT.md). */
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"

#include <stdio.h>
#include <string.h>

int ftb_tensor_layer(const ftb_tensor *t)
{
    int l;
    return sscanf(t->name, "model.layers.%d.", &l) == 1 ? l : -1;
}

int ftb_tensor_quantize(ftb_model *m, ftb_tensor *t, const char *format, int group, char *err, size_t errlen)
{
    if (m->cfg.tie_embeddings && t == &m->lm_head) t = &m->embed; /* one storage for both */
    int d = ftb_dtype_parse(format);
    if (d < 0) {
        snprintf(err, errlen, "tensor '%s': unknown storage format '%s' (f32, bf16, f16, int8, int4, int4-asym)",
                 t->name, format ? format : "(null)");
        return -1;
    }
    if (ftb_dtype_is_int4(d) && group == 0) group = FTB_QUANT_DEFAULT_GROUP;
    if (!ftb_dtype_is_int4(d)) group = 0;
    if ((int)t->dtype == d && t->group == group) return 0; /* already so */
    if (d == FTB_DTYPE_F32) {
        snprintf(err, errlen, "tensor '%s': stored as %s; it becomes fp32 only by being made trainable", t->name,
                 ftb_dtype_name(t->dtype));
        return -1;
    }
    if (t->ndim != 2 || t->numel == 0) {
        snprintf(err, errlen, "tensor '%s': only 2-D weights are stored as %s", t->name, ftb_dtype_name(d));
        return -1;
    }
    if (t->trainable || t->writable || t->grad) {
        snprintf(err, errlen, "tensor '%s': trainable, so it stays fp32", t->name);
        return -1;
    }
    if (t->dtype != FTB_DTYPE_F32 && t->dtype != FTB_DTYPE_BF16 && t->dtype != FTB_DTYPE_F16) {
        snprintf(err, errlen, "tensor '%s': already stored as %s (group %d); re-quantizing would compound the error",
                 t->name, ftb_dtype_name(t->dtype), t->group);
        return -1;
    }
    char why[256];
    if (ftb_qstore_check(d, group, t->shape[0], t->shape[1], why, sizeof why)) {
        snprintf(err, errlen, "tensor '%s': %s", t->name, why);
        return -1;
    }
    const float *src = t->data;
    float *tmp = NULL;
    if (t->dtype != FTB_DTYPE_F32) { /* bf16/f16 storage: through fp32 */
        tmp = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)t->numel);
        if (!tmp) {
            snprintf(err, errlen, "tensor '%s': out of memory converting it", t->name);
            return -1;
        }
        ftb_tensor_read_rows(t, 0, t->shape[0], tmp);
        src = tmp;
    }
    ftb_qstore *q = ftb_qstore_alloc((ftb_dtype)d, group, t->shape[0], t->shape[1]);
    if (!q) {
        ftb_free(tmp);
        snprintf(err, errlen, "tensor '%s': out of memory for its %s storage", t->name, ftb_dtype_name(d));
        return -1;
    }
    ftb_quant_error e;
    memset(&e, 0, sizeof e);
    ftb_qstore_quantize(q, src, &e);
    snprintf(e.name, sizeof e.name, "%s", t->name);
    e.layer = ftb_tensor_layer(t);
    ftb_model_record_error(m, &e);
    ftb_free(tmp);

    /* The old storage goes. */
    if (t->quant) {
        ftb_model_forget_qstore(m, t->quant);
    } else if (t->mapped) {
        ftb_model_release_mapped(m, t->data, sizeof(float) * (size_t)t->numel);
    } else {
        ftb_model_disown(m, t->data);
    }
    ftb_model_track_qstore(m, q);
    t->data = NULL;
    t->mapped = 0;
    t->dtype = (ftb_dtype)d;
    t->group = group;
    t->quant = q;
    ftb_model_retie(m);
    return 0;
}

int ftb_model_quantize(ftb_model *m, const char *format, int group, char *err, size_t errlen)
{
    if (ftb_dtype_parse(format) == FTB_DTYPE_F32) return 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            if (ftb_tensor_quantize(m, ftb_layer_weight(&m->layers[l], (ftb_linear_kind)k), format, group, err, errlen))
                return -1;
    return 0;
}

int ftb_model_quantize_embeddings(ftb_model *m, const char *format, int group, char *err, size_t errlen)
{
    if (ftb_dtype_parse(format) == FTB_DTYPE_F32) return 0;
    if (ftb_tensor_quantize(m, &m->embed, format, group, err, errlen)) return -1;
    if (!m->cfg.tie_embeddings && ftb_tensor_quantize(m, &m->lm_head, format, group, err, errlen)) return -1;
    return 0;
}
