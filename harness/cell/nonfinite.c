/* nonfinite.c — see nonfinite.h. */
#include "nonfinite.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const char *ftb_nonfinite_name(double x, char *buf, size_t n)
{
    if (isnan(x))
        snprintf(buf, n, "nan");
    else if (isinf(x))
        snprintf(buf, n, "%sinf", x < 0 ? "-" : "");
    else
        snprintf(buf, n, "%g", x);
    return buf;
}

/* Non-finite values in x[0..n): their count, and the first one's index. */
static int64_t count_nonfinite(const float *x, int64_t n, int64_t *first)
{
    int64_t bad = 0;
    *first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            if (!bad) *first = i;
            bad++;
        }
    return bad;
}

static void describe(char *out, size_t n, const char *what, const ftb_tensor *t, const float *x, int64_t bad,
                     int64_t first)
{
    size_t len = strlen(out);
    char v[32];
    snprintf(out + len, n - len, "%s%s %s has %lld of %lld values non-finite (first [%lld] = %s)", len ? "; " : "",
             what, t->name, (long long)bad, (long long)t->numel, (long long)first,
             ftb_nonfinite_name(x[first], v, sizeof v));
}

int ftb_nonfinite_find(const ftb_method *m, void *state, const ftb_model *model, char *out, size_t n)
{
    out[0] = 0;
    ftb_tensor **ts = NULL;
    int nt = m && m->trainable && state ? m->trainable(state, &ts) : 0;
    int from_model = nt <= 0 || !ts;
    if (from_model) nt = model ? model->n_params : 0;
    const ftb_tensor *bad_grad = NULL, *bad_data = NULL;
    int64_t ng = 0, nd = 0, fg = -1, fd = -1;
    for (int i = 0; i < nt; i++) {
        const ftb_tensor *t = from_model ? model->params[i] : ts[i];
        if (!t || (from_model && !t->trainable) || t->dtype != FTB_DTYPE_F32) continue;
        int64_t first;
        int64_t k;
        /* The gradient first: a non-finite gradient is the cause, the
         * parameter it updated the effect. */
        if (!bad_grad && t->grad && (k = count_nonfinite(t->grad, t->numel, &first)) > 0) {
            bad_grad = t;
            ng = k;
            fg = first;
        }
        if (!bad_data && t->data && (k = count_nonfinite(t->data, t->numel, &first)) > 0) {
            bad_data = t;
            nd = k;
            fd = first;
        }
        if (bad_grad && bad_data) break;
    }
    if (bad_grad) describe(out, n, "the gradient of", bad_grad, bad_grad->grad, ng, fg);
    if (bad_data) describe(out, n, "parameter", bad_data, bad_data->data, nd, fd);
    return bad_grad || bad_data;
}
