/* quant_fidelity.c — how far a quantized model is from its fp32 reference:
 * the error of each stored tensor, and the loss of both on one batch.  It
 * sits above the forward pass (transformer.c), which the storage code below
 * it never calls. */
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int ftb_quant_compare(const ftb_model *ref, const ftb_model *m, ftb_quant_error *out, int cap, char *err, size_t errlen)
{
    int count = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        if (t->dtype == FTB_DTYPE_F32) continue;
        const ftb_tensor *r = ftb_model_find((ftb_model *)ref, t->name);
        if (!r || r->ndim != t->ndim || r->shape[0] != t->shape[0] || r->shape[1] != t->shape[1]) {
            snprintf(err, errlen, "tensor '%s': the reference model has no tensor of this name and shape", t->name);
            return -1;
        }
        const int64_t R = ftb_tensor_rows(t), C = ftb_tensor_cols(t), tr = ftb_quant_tile_rows(R, C);
        float *a = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)(tr * C));
        float *b = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)(tr * C));
        if (!a || !b) {
            ftb_free(a);
            ftb_free(b);
            snprintf(err, errlen, "tensor '%s': out of memory comparing it", t->name);
            return -1;
        }
        double max_abs = 0, max_w = 0, sum_err = 0, sum_w = 0, sq_err = 0, sq_w = 0;
        for (int64_t r0 = 0; r0 < R; r0 += tr) {
            int64_t n = R - r0 < tr ? R - r0 : tr;
            ftb_tensor_read_rows(r, r0, n, a);
            ftb_tensor_read_rows(t, r0, n, b);
#pragma omp parallel for reduction(max : max_abs, max_w) reduction(+ : sum_err, sum_w, sq_err, sq_w)
            for (int64_t k = 0; k < n * C; k++) {
                double w = fabs((double)a[k]), d = fabs((double)a[k] - (double)b[k]);
                max_abs = d > max_abs ? d : max_abs;
                max_w = w > max_w ? w : max_w;
                sum_err += d;
                sum_w += w;
                sq_err += d * d;
                sq_w += w * w;
            }
        }
        ftb_free(a);
        ftb_free(b);
        if (count < cap && out) {
            ftb_quant_error *e = &out[count];
            memset(e, 0, sizeof *e);
            snprintf(e->name, sizeof e->name, "%s", t->name);
            e->layer = ftb_tensor_layer(t);
            e->dtype = t->dtype;
            e->group = t->group;
            e->numel = t->numel;
            e->max_abs_err = max_abs;
            e->max_rel_err = max_w > 0 ? max_abs / max_w : 0;
            e->mean_rel_err = sum_w > 0 ? sum_err / sum_w : 0;
            e->rms_rel_err = sq_w > 0 ? sqrt(sq_err / sq_w) : 0;
        }
        count++;
    }
    return count;
}

float ftb_quant_loss_delta(ftb_model *ref, ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, float *loss_ref,
                           float *loss_m, char *err, size_t errlen)
{
    float a = ftb_model_forward(ref, b, o, err, errlen);
    if (isnan(a)) return NAN;
    float c = ftb_model_forward(m, b, o, err, errlen);
    if (isnan(c)) return NAN;
    if (loss_ref) *loss_ref = a;
    if (loss_m) *loss_m = c;
    return c - a;
}