/* fidelity.c — `ftbench fidelity`: a method's gradient against the exact
 * gradient of the same parameters.  See fidelity.h and docs/HARNESS.md. */
#include "fidelity.h"
#include "commands.h"
#include "dataset.h"
#include "plugin.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIDELITY_SCHEMA 1

/* ---- one method on its own model ---------------------------------------- */

/* A method initialised on a fresh model, a few steps in, with its dataset. */
typedef struct {
    ftb_model *model;
    ftb_plugin plug;
    void *state;
    ftb_session s;
    ftb_options opts;
    ftb_dataset *ds;
    ftb_tensor **tensors; /* what trainable() lists */
    int n;
    ftb_gradient_fn gradient;
} side;

/* Gradients copied out of the tensors, in trainable() order. */
typedef struct {
    int n;
    char (*names)[96];
    int64_t *numel;
    int64_t total;
    float *g;
} grad_copy;

static void grad_copy_free(grad_copy *c)
{
    free(c->names);
    free(c->numel);
    free(c->g);
    memset(c, 0, sizeof *c);
}

static int grad_copy_take(grad_copy *c, ftb_tensor **t, int n, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    c->names = calloc((size_t)n, sizeof *c->names);
    c->numel = calloc((size_t)n, sizeof *c->numel);
    for (int i = 0; i < n; i++) c->total += t[i]->numel;
    c->g = malloc(sizeof(float) * (size_t)(c->total ? c->total : 1));
    if (!c->names || !c->numel || !c->g) {
        grad_copy_free(c);
        return ftb_errf(err, errlen, "out of memory copying %lld gradient values", (long long)c->total);
    }
    float *p = c->g;
    for (int i = 0; i < n; i++) {
        snprintf(c->names[i], sizeof c->names[i], "%s", t[i]->name);
        c->numel[i] = t[i]->numel;
        memcpy(p, t[i]->grad, sizeof(float) * (size_t)t[i]->numel);
        p += t[i]->numel;
    }
    return 0;
}

static void side_close(side *sd)
{
    if (sd->state && sd->plug.method && sd->plug.method->destroy) sd->plug.method->destroy(sd->state);
    sd->state = NULL;
    if (sd->ds) ftb_dataset_close(sd->ds);
    sd->ds = NULL;
    ftb_plugin_close(&sd->plug);
    if (sd->model) ftb_model_free(sd->model);
    sd->model = NULL;
}

/* Model, method, dataset, and `after_steps` ordinary steps on batches
 * 0..after_steps-1.  On failure err starts with the stage. */
static int side_open(side *sd, const ftb_fidelity_spec *f, const ftb_fidelity_method *fm, char *err, size_t errlen)
{
    char e[FTB_ERR_LEN] = "";
    memset(sd, 0, sizeof *sd);
    sd->model =
        f->checkpoint ? ftb_model_load(f->checkpoint, 1, e, sizeof e) : ftb_model_create(&f->cfg, f->seed, e, sizeof e);
    if (!sd->model) return ftb_errf(err, errlen, "load: %s", e[0] ? e : "model load failed");
    if (ftb_plugin_open(fm->path, &sd->plug, e, sizeof e) != 0) return ftb_errf(err, errlen, "plugin: %s", e);
    const ftb_method *m = sd->plug.method;
    sd->gradient = ftb_plugin_gradient(m);
    sd->opts = (ftb_options){ fm->n_opts, fm->opt_keys, fm->opt_values };
    sd->s.model = sd->model;
    ftb_run_opts_default(&sd->s.run);
    sd->s.run.attention = f->attention;
    sd->s.run.loss = f->loss;
    sd->s.options = &sd->opts;
    sd->s.seed = f->seed;
    sd->s.lr = f->lr;
    sd->s.total_steps = f->after_steps + 1;
    e[0] = 0;
    sd->state = m->init(&sd->s, e, sizeof e);
    if (!sd->state)
        return ftb_errf(err, errlen, "init: %s: %s", fm->label, e[0] ? e : "method init failed (no message)");
    sd->ds = ftb_dataset_open(f->dataset, sd->model->cfg.vocab_size, f->seed, e, sizeof e);
    if (!sd->ds) return ftb_errf(err, errlen, "dataset: %s", e);
    for (int i = 0; i < f->after_steps; i++) {
        ftb_batch b;
        if (ftb_dataset_batch(sd->ds, i, f->batch, f->seq, &b, e, sizeof e) != 0)
            return ftb_errf(err, errlen, "dataset: %s", e);
        ftb_step_result r;
        memset(&r, 0, sizeof r);
        e[0] = 0;
        if (m->step(sd->state, &sd->s, &b, &r, e, sizeof e) != 0)
            return ftb_errf(err, errlen, "step %d: %s: %s", i, fm->label, e[0] ? e : "method step failed (no message)");
    }
    if (!m->trainable)
        return ftb_errf(err, errlen, "method %s has no trainable() callback: nothing to compare", fm->label);
    sd->n = m->trainable(sd->state, &sd->tensors);
    if (sd->n <= 0 || !sd->tensors)
        return ftb_errf(err, errlen, "method %s lists no trainable tensors: nothing to compare", fm->label);
    for (int i = 0; i < sd->n; i++)
        if (!sd->tensors[i] || !sd->tensors[i]->data)
            return ftb_errf(err, errlen, "method %s: trainable tensor %d has no fp32 values", fm->label, i);
    return 0;
}

/* The host's gradient for a method without a callback: forward_backward as
 * ftb_backprop_step runs it (the method's run options), or with every
 * activation kept (exact). */
static float generic_gradient(side *sd, const ftb_batch *b, int exact, char *err, size_t errlen)
{
    int missing = 0;
    for (int i = 0; i < sd->n; i++) missing |= sd->tensors[i]->grad == NULL;
    if (missing && ftb_model_alloc_grads(sd->model, err, errlen) != 0) return NAN;
    for (int i = 0; i < sd->n; i++) {
        ftb_tensor *t = sd->tensors[i];
        if (!t->grad) {
            ftb_errf(err, errlen, "tensor %s has no gradient buffer and the method has no gradient callback", t->name);
            return NAN;
        }
        memset(t->grad, 0, sizeof(float) * (size_t)t->numel);
    }
    ftb_run_opts run = sd->s.run;
    run.seq_loss = NULL;
    if (exact) {
        run.keep = NULL;
        run.first_trainable_layer = 0;
    }
    return ftb_model_forward_backward(sd->model, b, &run, err, errlen);
}

/* FNV-1a over the trainable values: "bit-identical" checked without a copy. */
static uint64_t params_hash(const side *sd)
{
    uint64_t h = FTB_FNV_INIT;
    for (int i = 0; i < sd->n; i++)
        h = ftb_fnv1a(sd->tensors[i]->data, sizeof(float) * (size_t)sd->tensors[i]->numel, h);
    return h;
}

/* One gradient (method's or exact) into *out.  *seconds: its wall time. */
static int side_gradient(side *sd, const ftb_batch *b, int exact, grad_copy *out, float *loss, double *seconds,
                         char *err, size_t errlen)
{
    char e[FTB_ERR_LEN] = "";
    *loss = NAN;
    double t0 = ftb_now();
    int rc;
    if (sd->gradient) {
        rc = sd->gradient(sd->state, &sd->s, b, exact, loss, e, sizeof e);
    } else {
        *loss = generic_gradient(sd, b, exact, e, sizeof e);
        rc = isnan(*loss) ? -1 : 0;
    }
    *seconds = ftb_now() - t0;
    const char *what = exact ? "exact gradient" : "method gradient";
    if (rc != 0) return ftb_errf(err, errlen, "%s: %s: %s", what, sd->plug.label, e[0] ? e : "failed (no message)");
    for (int i = 0; i < sd->n; i++)
        if (!sd->tensors[i]->grad)
            return ftb_errf(err, errlen, "%s: %s left tensor %s without a gradient", what, sd->plug.label,
                            sd->tensors[i]->name);
    /* The list may not change between calls: the comparison pairs tensors. */
    ftb_tensor **t2 = NULL;
    int n2 = sd->plug.method->trainable(sd->state, &t2);
    if (n2 != sd->n || t2 != sd->tensors)
        return ftb_errf(err, errlen, "%s: %s's trainable() list changed", what, sd->plug.label);
    return grad_copy_take(out, sd->tensors, sd->n, err, errlen);
}

/* ---- comparison ----------------------------------------------------------- */

typedef struct {
    double dot, nn, rr, dd, maxabs; /* ⟨g,r⟩, ‖g‖², ‖r‖², ‖g−r‖², max|g−r| */
} pair_sums;

static void sums_add(pair_sums *s, const float *g, const float *r, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double a = g[i], b = r[i], d = a - b;
        s->dot += a * b;
        s->nn += a * a;
        s->rr += b * b;
        s->dd += d * d;
        if (fabs(d) > s->maxabs) s->maxabs = fabs(d);
    }
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static double sums_cos(const pair_sums *s) { return s->nn > 0 && s->rr > 0 ? s->dot / sqrt(s->nn * s->rr) : NAN; }
/* ‖g − r‖/‖r‖; 0 when both are zero (identical), NaN when only r is. */
static double sums_rel(const pair_sums *s) { return s->rr > 0 ? sqrt(s->dd / s->rr) : s->dd == 0 ? 0 : NAN; }

static void sums_json(json_t *o, const pair_sums *s)
{
    json_object_set_new(o, "cosine", jnum(sums_cos(s)));
    json_object_set_new(o, "rel_error", jnum(sums_rel(s)));
    json_object_set_new(o, "norm", json_real(sqrt(s->nn)));
    json_object_set_new(o, "norm_ref", json_real(sqrt(s->rr)));
    json_object_set_new(o, "max_abs_diff", json_real(s->maxabs));
}

/* g against the reference r.  by_name: r's tensors are found by name (and
 * may be more); otherwise both have the same tensors in the same order. */
static json_t *compare(const grad_copy *g, const grad_copy *r, int by_name, char *err, size_t errlen)
{
    int64_t *off_r = malloc(sizeof(int64_t) * (size_t)(r->n + 1));
    if (!off_r) {
        ftb_errf(err, errlen, "out of memory");
        return NULL;
    }
    off_r[0] = 0;
    for (int j = 0; j < r->n; j++) off_r[j + 1] = off_r[j] + r->numel[j];
    json_t *o = json_object(), *per = json_array();
    pair_sums all = { 0 };
    double worst = -1;
    int worst_i = -1;
    pair_sums worst_s = { 0 };
    int64_t off = 0, params = 0;
    for (int i = 0; i < g->n; i++) {
        int j = i;
        if (by_name) {
            for (j = 0; j < r->n && strcmp(r->names[j], g->names[i]) != 0; j++)
                ;
        }
        if (j >= r->n || strcmp(r->names[j], g->names[i]) != 0 || r->numel[j] != g->numel[i]) {
            ftb_errf(err, errlen, "tensor %s (%lld values) has no counterpart of the same size in the reference",
                     g->names[i], (long long)g->numel[i]);
            json_decref(o);
            json_decref(per);
            free(off_r);
            return NULL;
        }
        pair_sums s = { 0 };
        sums_add(&s, g->g + off, r->g + off_r[j], g->numel[i]);
        off += g->numel[i];
        params += g->numel[i];
        all.dot += s.dot;
        all.nn += s.nn;
        all.rr += s.rr;
        all.dd += s.dd;
        all.maxabs = s.maxabs > all.maxabs ? s.maxabs : all.maxabs;
        json_t *t = json_object();
        json_object_set_new(t, "name", json_string(g->names[i]));
        json_object_set_new(t, "numel", json_integer(g->numel[i]));
        sums_json(t, &s);
        json_array_append_new(per, t);
        double rel = sums_rel(&s);
        double key = isnan(rel) ? INFINITY : rel;
        if (key > worst) {
            worst = key;
            worst_i = i;
            worst_s = s;
        }
    }
    free(off_r);
    json_object_set_new(o, "tensors", json_integer(g->n));
    json_object_set_new(o, "params", json_integer(params));
    sums_json(o, &all);
    if (worst_i >= 0) {
        json_t *w = json_object();
        json_object_set_new(w, "name", json_string(g->names[worst_i]));
        sums_json(w, &worst_s);
        json_object_set_new(o, "worst_tensor", w);
    }
    json_object_set_new(o, "per_tensor", per);
    return o;
}

static json_t *method_json(const side *sd, const ftb_fidelity_method *fm)
{
    json_t *o = json_object();
    const ftb_method *m = sd->plug.method;
    json_object_set_new(o, "label", json_string(fm->label));
    json_object_set_new(o, "name", json_string(m && m->name ? m->name : fm->label));
    json_object_set_new(o, "abi_version", json_integer(m ? m->abi_version : 0));
    json_t *opts = json_object();
    for (int i = 0; i < fm->n_opts; i++) json_object_set_new(opts, fm->opt_keys[i], json_string(fm->opt_values[i]));
    json_object_set_new(o, "options", opts);
    json_object_set_new(o, "gradient", json_string(sd->gradient ? "method callback" : "host: forward_backward"));
    return o;
}

json_t *ftb_fidelity_measure(const ftb_fidelity_spec *f, char *err, size_t errlen)
{
    side sd;
    grad_copy gm = { 0 }, gx = { 0 }, ga = { 0 };
    json_t *res = NULL, *cmp = NULL;
    ftb_batch b;
    char e[FTB_ERR_LEN];
    if (f->threads > 0) ftb_set_threads(f->threads);
    if (side_open(&sd, f, &f->method, err, errlen) != 0) goto fail;
    if (ftb_dataset_batch(sd.ds, f->after_steps, f->batch, f->seq, &b, e, sizeof e) != 0) {
        ftb_errf(err, errlen, "dataset: %s", e);
        goto fail;
    }
    uint64_t h0 = params_hash(&sd);
    float loss_m, loss_x;
    double sec_m, sec_x;
    if (side_gradient(&sd, &b, 0, &gm, &loss_m, &sec_m, err, errlen) != 0) goto fail;
    int unchanged = params_hash(&sd) == h0;
    if (side_gradient(&sd, &b, 1, &gx, &loss_x, &sec_x, err, errlen) != 0) goto fail;
    cmp = compare(&gm, &gx, 0, err, errlen);
    if (!cmp) goto fail;

    res = json_object();
    json_object_set_new(res, "schema", json_integer(FIDELITY_SCHEMA));
    json_t *model = json_object();
    json_object_set_new(model, "name", json_string(f->model_name ? f->model_name : f->cfg.name));
    json_object_set_new(model, "source", json_string(f->checkpoint ? "checkpoint" : "zoo"));
    json_object_set_new(model, "params", json_integer(ftb_config_param_count(&sd.model->cfg)));
    json_object_set_new(res, "model", model);
    json_object_set_new(res, "method", method_json(&sd, &f->method));
    json_object_set_new(res, "seq", json_integer(f->seq));
    json_object_set_new(res, "batch", json_integer(f->batch));
    json_object_set_new(res, "seed", json_integer((json_int_t)f->seed));
    json_object_set_new(res, "lr", json_real(f->lr));
    json_object_set_new(res, "after_steps", json_integer(f->after_steps));
    json_object_set_new(res, "dataset", json_string(f->dataset));
    json_object_set_new(res, "attention", json_string(f->attention == FTB_ATTN_EAGER ? "eager" : "flash"));
    json_object_set_new(res, "loss_mode", json_string(f->loss == FTB_LOSS_FULL ? "full" : "chunked"));
    json_object_set_new(res, "threads", json_integer(ftb_get_threads()));
    json_object_set_new(res, "loss_method", jnum(loss_m));
    json_object_set_new(res, "loss_exact", jnum(loss_x));
    json_object_set_new(res, "seconds_method", json_real(sec_m));
    json_object_set_new(res, "seconds_exact", json_real(sec_x));
    json_object_set_new(res, "params_unchanged", json_boolean(unchanged));
    json_object_set_new(res, "exact", cmp);
    cmp = NULL;
    side_close(&sd);
    grad_copy_free(&gx);

    if (f->against.path) {
        /* The reference method on a fresh model of the same seed, the same
         * steps and the same batch; its own (method) gradient. */
        if (side_open(&sd, f, &f->against, err, errlen) != 0) goto fail;
        if (ftb_dataset_batch(sd.ds, f->after_steps, f->batch, f->seq, &b, e, sizeof e) != 0) {
            ftb_errf(err, errlen, "dataset: %s", e);
            goto fail;
        }
        float loss_a;
        double sec_a;
        if (side_gradient(&sd, &b, 0, &ga, &loss_a, &sec_a, err, errlen) != 0) goto fail;
        char ce[FTB_ERR_LEN];
        cmp = compare(&gm, &ga, 1, ce, sizeof ce);
        if (!cmp) {
            ftb_errf(err, errlen, "against %s: %s", f->against.label, ce);
            goto fail;
        }
        json_object_set_new(cmp, "method", method_json(&sd, &f->against));
        json_object_set_new(cmp, "loss", jnum(loss_a));
        json_object_set_new(cmp, "seconds", json_real(sec_a));
        json_object_set_new(cmp, "reference_tensors", json_integer(ga.n));
        json_object_set_new(res, "against", cmp);
        cmp = NULL;
        side_close(&sd);
    }
    grad_copy_free(&gm);
    grad_copy_free(&ga);
    return res;
fail:
    json_decref(res);
    json_decref(cmp);
    side_close(&sd);
    grad_copy_free(&gm);
    grad_copy_free(&gx);
    grad_copy_free(&ga);
    return NULL;
}

/* ---- output ----------------------------------------------------------------- */

static double jget(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "?";
}

static void print_cmp(FILE *out, const json_t *c, const char *ref)
{
    fprintf(out, "  cosine            %.9f\n", jget(c, "cosine"));
    fprintf(out, "  relative error    %.3e   (|g - %s| / |%s|)\n", jget(c, "rel_error"), ref, ref);
    fprintf(out, "  norms             |g| %.6e   |%s| %.6e\n", jget(c, "norm"), ref, jget(c, "norm_ref"));
    fprintf(out, "  max |difference|  %.3e\n", jget(c, "max_abs_diff"));
    const json_t *w = json_object_get(c, "worst_tensor");
    if (w)
        fprintf(out, "  worst tensor      %s: cosine %.9f, relative error %.3e\n", jstr(w, "name"), jget(w, "cosine"),
                jget(w, "rel_error"));
}

static void print_options(FILE *out, const json_t *m)
{
    const char *k;
    json_t *v;
    int first = 1;
    json_object_foreach((json_t *)json_object_get(m, "options"), k, v)
    {
        fprintf(out, "%s%s=%s", first ? " (" : ", ", k, json_string_value(v));
        first = 0;
    }
    if (!first) fprintf(out, ")");
}

void ftb_fidelity_print(FILE *out, const json_t *r)
{
    const json_t *m = json_object_get(r, "method"), *x = json_object_get(r, "exact");
    fprintf(out, "fidelity    %s", jstr(m, "label"));
    print_options(out, m);
    fprintf(out, " on %s, seq %d, batch %d, seed %lld, after %d step(s)\n", jstr(json_object_get(r, "model"), "name"),
            (int)jget(r, "seq"), (int)jget(r, "batch"), (long long)jget(r, "seed"), (int)jget(r, "after_steps"));
    fprintf(out, "g           the method's gradient (%s), loss %.6f, %.3f s\n", jstr(m, "gradient"),
            jget(r, "loss_method"), jget(r, "seconds_method"));
    fprintf(out, "g*          exact gradient of the same parameters, every activation kept, loss %.6f, %.3f s\n",
            jget(r, "loss_exact"), jget(r, "seconds_exact"));
    fprintf(out, "tensors     %d, %lld parameters; parameters unchanged by g: %s\n", (int)jget(x, "tensors"),
            (long long)jget(x, "params"), json_is_true(json_object_get(r, "params_unchanged")) ? "yes" : "NO");
    print_cmp(out, x, "g*");
    const json_t *a = json_object_get(r, "against");
    if (a) {
        const json_t *am = json_object_get(a, "method");
        fprintf(out, "against     %s", jstr(am, "label"));
        print_options(out, am);
        fprintf(out, ": its gradient g_ref (%s), %d of its %d tensors matched by name\n", jstr(am, "gradient"),
                (int)jget(a, "tensors"), (int)jget(a, "reference_tensors"));
        print_cmp(out, a, "g_ref");
    }
}

/* ---- the command ---------------------------------------------------------- */

static const unsigned FIDELITY_OPTS = CLI_MODEL | CLI_METHOD | CLI_SHAPE | CLI_TRAIN | CLI_OUT;

static void fidelity_help(FILE *f)
{
    fprintf(f, "usage: ftbench fidelity --method NAME --model NAME [options]\n"
               "Takes --after-steps ordinary steps, then on the next batch computes the method's\n"
               "gradient (or gradient estimate) of its trainable parameters and the exact gradient\n"
               "of the same parameters with every activation kept; prints their cosine and relative\n"
               "error, overall and per tensor, and appends a JSON line to <out>/fidelity.jsonl.\n"
               "Exit code: 0 measured, 1 the method failed or crashed, 2 bad input.\n\noptions:\n");
    fprintf(f, "  %-28s %s\n", "--after-steps N", "ordinary steps before the measured batch (default 1)");
    fprintf(f, "  %-28s %s\n", "--against NAME|PATH.so", "also compare with this method's gradient (tensors by name)");
    fprintf(f, "  %-28s %s\n", "--threads N", "compute threads (default: this machine's cores)");
    ftb_cli_print_options(f, FIDELITY_OPTS);
}

/* The options only fidelity has, taken out of argv before the shared parser
 * sees the rest.  0, or -1 with err. */
static int take_own_options(int *argc, char **argv, int *after_steps, const char **against, int *threads, char *err,
                            size_t errlen)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i], *names[] = { "--after-steps", "--against", "--threads" };
        int which = -1;
        const char *val = NULL;
        for (int k = 0; k < 3 && which < 0; k++) {
            size_t l = strlen(names[k]);
            if (strncmp(a, names[k], l) == 0 && (a[l] == 0 || a[l] == '=')) {
                which = k;
                val = a[l] == '=' ? a + l + 1 : NULL;
            }
        }
        if (which < 0) {
            argv[out++] = argv[i];
            continue;
        }
        if (!val) {
            if (i + 1 >= *argc) return ftb_errf(err, errlen, "%s needs a value", names[which]);
            val = argv[++i];
        }
        long x;
        if (which == 0) {
            if (ftb_parse_long(val, 0, 1000000, &x) != 0)
                return ftb_errf(err, errlen, "--after-steps: '%s' is not an integer in 0..1000000", val);
            *after_steps = (int)x;
        } else if (which == 1) {
            if (!*val) return ftb_errf(err, errlen, "--against: empty value");
            *against = val;
        } else {
            if (ftb_parse_long(val, 1, 4096, &x) != 0)
                return ftb_errf(err, errlen, "--threads: '%s' is not an integer in 1..4096", val);
            *threads = (int)x;
        }
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

/* Runs the measurement in a child, so that a method that crashes or hangs
 * ends as one line.  Returns the result, or NULL with err (*crashed set
 * when the child did not report). */
static json_t *measure_in_child(const ftb_fidelity_spec *f, double timeout, char *err, size_t errlen)
{
    int fds[2];
    if (pipe(fds) != 0) {
        ftb_errf(err, errlen, "pipe: %s", strerror(errno));
        return NULL;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        ftb_errf(err, errlen, "fork: %s", strerror(errno));
        return NULL;
    }
    if (pid == 0) {
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGPIPE, SIG_IGN);
        char e[FTB_ERR_LEN] = "";
        json_t *r = ftb_fidelity_measure(f, e, sizeof e);
        char *body = r ? json_dumps(r, JSON_COMPACT) : NULL;
        char tag = body ? 'O' : 'E';
        const char *text = body ? body : e[0] ? e : "failed (no message)";
        size_t len = strlen(text);
        if (write(fds[1], &tag, 1) == 1)
            for (size_t off = 0; off < len;) {
                ssize_t w = write(fds[1], text + off, len - off);
                if (w <= 0) break;
                off += (size_t)w;
            }
        _exit(body ? 0 : 3);
    }
    close(fds[1]);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    double t0 = ftb_now();
    int timed_out = 0;
    for (;;) {
        double left = timeout - (ftb_now() - t0);
        if (left <= 0) {
            timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        struct pollfd p = { fds[0], POLLIN, 0 };
        int pr = poll(&p, 1, left > 1 ? 1000 : (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) continue;
        if (n + 4096 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) break;
            buf = nb;
        }
        ssize_t r = read(fds[0], buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fds[0]);
    buf[n] = 0;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    json_t *res = NULL;
    if (timed_out)
        ftb_errf(err, errlen, "method '%s' did not finish within %.0f s (--timeout)", f->method.label, timeout);
    else if (n > 0 && buf[0] == 'O' && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        res = json_loads(buf + 1, 0, NULL);
        if (!res) ftb_errf(err, errlen, "the measuring process sent a result that does not parse");
    } else if (n > 0 && buf[0] == 'E')
        ftb_errf(err, errlen, "%s", buf + 1);
    else if (WIFSIGNALED(status))
        ftb_errf(err, errlen, "method '%s' crashed: %s (signal %d)", f->method.label, ftb_signal_name(WTERMSIG(status)),
                 WTERMSIG(status));
    else
        ftb_errf(err, errlen, "the measuring process exited with status %d without a result",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    free(buf);
    return res;
}

int ftb_cmd_fidelity(int argc, char **argv)
{
    char err[FTB_ERR_LEN + 256];
    int after_steps = 1, threads = 0;
    const char *against = NULL;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) return ftb_usage_error("fidelity", "out of memory");
    memcpy(args, argv, sizeof *args * (size_t)argc);
    int nargs = argc;
    ftb_setup s;
    memset(&s, 0, sizeof s);
    int rc = FTB_EXIT_USAGE;
    if (take_own_options(&nargs, args, &after_steps, &against, &threads, err, sizeof err) != 0) {
        ftb_usage_error("fidelity", err);
        free(args);
        return rc;
    }
    int pr = ftb_cli_parse("fidelity", FIDELITY_OPTS, nargs, args, &s.cli, err, sizeof err);
    free(args);
    if (pr == 1) {
        fidelity_help(stdout);
        return FTB_EXIT_OK;
    }
    if (pr < 0) return ftb_usage_error("fidelity", err);
    ftb_cli *o = &s.cli;
    ftb_cell mc, ac;
    if (!o->method) {
        ftb_usage_error("fidelity", "--method is required (see ftbench list)");
        goto out;
    }
    if (!o->seq_given) o->seq = 128;
    if (ftb_cli_model(o, NULL, &s.cfg, s.model_name, sizeof s.model_name, err, sizeof err) != 0) {
        ftb_usage_error("fidelity", err);
        goto out;
    }
    if (o->methods_dir && !ftb_is_dir(o->methods_dir)) {
        snprintf(err, sizeof err, "--methods-dir %s: not a directory", o->methods_dir);
        ftb_usage_error("fidelity", err);
        goto out;
    }
    s.methods_dir = ftb_methods_search_path(o->methods_dir); /* user dirs first, then the built-ins */
    ftb_cell_init(&mc);
    ftb_cell_init(&ac);
    if (ftb_setup_method(&s, o->method, &mc, 1, NULL, err, sizeof err) != 0 ||
        (against && ftb_setup_method(&s, against, &ac, 0, NULL, err, sizeof err) != 0) ||
        ftb_setup_check_dataset(&s, err, sizeof err) != 0) {
        ftb_usage_error("fidelity", err);
        goto out;
    }
    if (o->seq > s.cfg.max_seq) {
        snprintf(err, sizeof err, "--seq %d is longer than %s's max_seq %d", o->seq, s.model_name, s.cfg.max_seq);
        ftb_usage_error("fidelity", err);
        goto out;
    }
    if (ftb_mkdirs(o->out_dir, err, sizeof err) != 0) {
        ftb_usage_error("fidelity", err);
        goto out;
    }

    ftb_fidelity_spec f;
    memset(&f, 0, sizeof f);
    f.cfg = s.cfg;
    f.model_name = s.model_name;
    f.checkpoint = o->checkpoint;
    f.method = (ftb_fidelity_method){ mc.method_path, mc.method_label, mc.n_opts, mc.opt_keys, mc.opt_values };
    if (against)
        f.against = (ftb_fidelity_method){ ac.method_path, ac.method_label, ac.n_opts, ac.opt_keys, ac.opt_values };
    f.seq = o->seq;
    f.batch = o->batch;
    f.after_steps = after_steps;
    f.seed = o->seed;
    f.lr = (float)o->lr;
    f.attention = o->attention;
    f.loss = o->loss;
    f.dataset = o->dataset;
    f.threads = threads ? threads : ftb_host_cores();

    json_t *r = measure_in_child(&f, o->timeout, err, sizeof err);
    if (!r) {
        fprintf(stderr, "ftbench fidelity: %s\n", err);
        rc = FTB_EXIT_FAIL;
        goto out;
    }
    char ts[32];
    ftb_utc_timestamp(ts, sizeof ts);
    json_object_set_new(r, "timestamp_utc", json_string(ts));
    json_object_set_new(r, "git_rev", json_string(ftb_git_revision()));
    json_object_set_new(r, "hostname", json_string(ftb_hostname()));
    json_object_set_new(r, "host_abi_version", json_integer(FTB_ABI_VERSION));
    ftb_fidelity_print(stdout, r);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%.4000s/fidelity.jsonl", o->out_dir);
    char *line = json_dumps(r, JSON_COMPACT);
    rc = FTB_EXIT_OK;
    if (!line || ftb_append_line(path, line, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench fidelity: %s: %s\n", path, line ? err : "cannot serialise the record");
        rc = FTB_EXIT_FAIL;
    } else {
        printf("record      %s\n", path);
    }
    free(line);
    json_decref(r);
out:
    ftb_cli_free(o);
    return rc;
}
