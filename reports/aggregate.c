/*
 * aggregate.c — records → scopes.  A scope is one device × model × batch:
 * what one memory-scaling figure shows.  Within a scope, a cell (series ×
 * sequence length) may have several records (merged runs, re-runs): its
 * figures are medians over the records that measured a peak (outcome ok or
 * over_budget).  `fit` probes are kept out of the scaling figures (a probe
 * killed at the budget measured only a lower bound) and feed the max-context
 * table; records with task accuracy or gradient fidelity feed the quality
 * table.
 */
#include "report_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

double ftr_median(double *v, int n)
{
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double ftr_reduction(double x, double ref)
{
    if (!isfinite(x) || !isfinite(ref) || ref <= 0) return NAN;
    return 100.0 * (1.0 - x / ref);
}

ftr_agg *ftr_scope_agg(const ftr_scope *sc, int row, int k)
{
    return &sc->agg[(size_t)row * (size_t)sc->nseq + (size_t)k];
}

static int measured(const ftr_rec *r)
{
    return (!strcmp(r->outcome, "ok") || !strcmp(r->outcome, "over_budget")) && isfinite(r->peak_mib);
}

/* Median over the finite values of one field of the records given. */
static double median_of(const ftr_rec *const *v, int n, size_t off)
{
    double *x = malloc(((size_t)n + 1) * sizeof *x);
    int m = 0;
    for (int i = 0; i < n; i++) {
        double d = *(const double *)((const char *)v[i] + off);
        if (isfinite(d)) x[m++] = d;
    }
    double r = ftr_median(x, m);
    free(x);
    return r;
}

/* tokens/s of every measured step of the records: from step_seconds_all
 * after the warm-up, else (older records) the min and max of
 * timing.step_seconds.  A cell whose only measured step had no warm-up
 * before it is a cold step: marked, not a timing. */
static void step_spread(const ftr_rec *const *v, int n, ftr_agg *a)
{
    a->tps_min = a->tps_med = a->tps_max = NAN;
    a->n_steps = 0;
    a->cold_single = 0;
    int cap = 64, m = 0, any_warm = 0;
    double *tps = malloc((size_t)cap * sizeof *tps);
    for (int i = 0; i < n; i++) {
        const ftr_rec *r = v[i];
        double tokens = (double)r->batch * r->seq;
        json_t *steps = json_object_get(r->j, "steps");
        int nmeas = json_is_integer(steps) ? (int)json_integer_value(steps) : -1;
        any_warm |= r->warmup_steps != 0;
        if (r->step_wall) {
            int len = (int)json_array_size(r->step_wall);
            if (nmeas < 0 || nmeas > len) nmeas = len - (r->warmup_steps > 0 ? r->warmup_steps : 0);
            for (int k = len - nmeas; k < len; k++) {
                double t = json_number_value(json_array_get(r->step_wall, (size_t)k));
                if (!(t > 0)) continue;
                if (m == cap) tps = realloc(tps, (size_t)(cap *= 2) * sizeof *tps);
                tps[m++] = tokens / t;
            }
        } else if (nmeas > 0) {
            json_t *ss = json_object_get(json_object_get(r->j, "timing"), "step_seconds");
            double lo = json_number_value(json_object_get(ss, "min")),
                   hi = json_number_value(json_object_get(ss, "max"));
            if (!(lo > 0) || !(hi > 0)) continue;
            if (m + 2 > cap) tps = realloc(tps, (size_t)(cap *= 2) * sizeof *tps);
            tps[m++] = tokens / hi;
            if (nmeas > 1) tps[m++] = tokens / lo;
            a->n_steps += nmeas - (nmeas > 1 ? 2 : 1); /* counted below with the others */
        }
    }
    a->n_steps += m;
    if (m) {
        a->tps_med = ftr_median(tps, m); /* sorts */
        a->tps_min = tps[0];
        a->tps_max = tps[m - 1];
    }
    a->cold_single = a->n_steps == 1 && !any_warm;
    free(tps);
}

static const ftr_set *g_set; /* for the series sort */

static int cmp_series(const void *a, const void *b)
{
    const ftr_series *x = &g_set->series[*(const int *)a], *y = &g_set->series[*(const int *)b];
    if (x->order != y->order) return x->order < y->order ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Budgets in MiB, equal to the MiB (NaN: unknown, equal to itself).  Records
 * measured under different budgets are never merged: a cell over 1200 MiB
 * may fit in 3482. */
int ftr_same_budget(double a, double b) { return isnan(a) ? isnan(b) : !isnan(b) && fabs(a - b) < 0.5; }

static int cmp_budget(double a, double b)
{
    if (ftr_same_budget(a, b)) return 0;
    return isnan(a) || (!isnan(b) && a > b) ? 1 : -1;
}

static int in_scope(const ftr_rec *r, const ftr_scope *sc)
{
    return !r->fit && !r->train && r->batch == sc->batch && !strcmp(r->device, sc->device) &&
           !strcmp(r->model, sc->model) && ftr_same_budget(r->budget_mib, sc->budget_mib);
}

static void build_scope(const ftr_set *s, ftr_scope *sc, int at_seq)
{
    sc->series = calloc((size_t)s->nseries + 1, sizeof *sc->series);
    sc->seqs = calloc((size_t)s->n + 1, sizeof *sc->seqs);
    for (int i = 0; i < s->n; i++) {
        const ftr_rec *r = &s->r[i];
        if (!in_scope(r, sc)) continue;
        sc->emulated |= r->emulated;
        int found = 0;
        for (int k = 0; k < sc->nseries; k++) found |= sc->series[k] == r->series;
        if (!found) sc->series[sc->nseries++] = r->series;
        found = 0;
        for (int k = 0; k < sc->nseq; k++) found |= sc->seqs[k] == r->seq;
        if (!found) sc->seqs[sc->nseq++] = r->seq;
    }
    g_set = s;
    qsort(sc->series, (size_t)sc->nseries, sizeof *sc->series, cmp_series);
    qsort(sc->seqs, (size_t)sc->nseq, sizeof *sc->seqs, cmp_int);
    sc->agg = calloc((size_t)sc->nseries * (size_t)sc->nseq + 1, sizeof *sc->agg);
    sc->slope_kib = calloc((size_t)sc->nseries + 1, sizeof *sc->slope_kib);
    const ftr_rec **v = calloc((size_t)s->n + 1, sizeof *v);
    for (int row = 0; row < sc->nseries; row++) {
        for (int k = 0; k < sc->nseq; k++) {
            ftr_agg *a = ftr_scope_agg(sc, row, k);
            int n = 0, over_outcome = 0;
            const ftr_rec *last = NULL;
            for (int i = 0; i < s->n; i++) {
                const ftr_rec *r = &s->r[i];
                if (!in_scope(r, sc) || r->series != sc->series[row] || r->seq != sc->seqs[k]) continue;
                a->n++;
                last = r;
                if (r->plan_model) {
                    a->plan_model = r->plan_model;
                    a->plan_reason = r->plan_reason;
                }
                if (measured(r)) {
                    v[n++] = r;
                    over_outcome |= !strcmp(r->outcome, "over_budget");
                }
            }
            a->n_measured = n;
            a->peak_mib = median_of(v, n, offsetof(ftr_rec, peak_mib));
            a->core_peak_mib = median_of(v, n, offsetof(ftr_rec, core_peak_mib));
            a->saved_mib = median_of(v, n, offsetof(ftr_rec, saved_peak_mib));
            a->tokens_per_s = median_of(v, n, offsetof(ftr_rec, tokens_per_s));
            a->step_s = median_of(v, n, offsetof(ftr_rec, step_s));
            a->plan_mib = median_of(v, n, offsetof(ftr_rec, plan_mib));
            step_spread(v, n, a);
            a->over = n > 0 && (over_outcome || (isfinite(sc->budget_mib) && a->peak_mib > sc->budget_mib));
            if (n == 0 && last) a->failure = last->outcome;
            /* The representative: the record whose peak is nearest the
             * median (the first of equals). */
            double best = INFINITY;
            for (int i = 0; i < n; i++) {
                double d = fabs(v[i]->peak_mib - a->peak_mib);
                if (d < best) {
                    best = d;
                    a->rep = v[i];
                }
            }
        }
        /* Saved activations per token: least-squares slope over the
         * measured lengths (one length: saved / tokens). */
        double sx = 0, sy = 0, sxx = 0, sxy = 0;
        int m = 0;
        for (int k = 0; k < sc->nseq; k++) {
            ftr_agg *a = ftr_scope_agg(sc, row, k);
            if (!a->n_measured || !isfinite(a->saved_mib)) continue;
            double x = (double)sc->seqs[k] * sc->batch, y = a->saved_mib * 1024.0;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
            m++;
        }
        double den = m * sxx - sx * sx;
        if (m >= 2 && den > 0)
            sc->slope_kib[row] = (m * sxy - sx * sy) / den;
        else if (m == 1 && sx > 0)
            sc->slope_kib[row] = sy / sx;
        else
            sc->slope_kib[row] = NAN;
    }
    free(v);
    /* The breakdown length: the one asked for, else the longest length at
     * which the most series measured something. */
    sc->at_seq = 0;
    int best = -1;
    for (int k = 0; k < sc->nseq; k++) {
        int cnt = 0;
        for (int row = 0; row < sc->nseries; row++) cnt += ftr_scope_agg(sc, row, k)->n_measured > 0;
        if (at_seq > 0 && sc->seqs[k] == at_seq && cnt > 0) {
            sc->at_seq = at_seq;
            break;
        }
        if (cnt >= best && cnt > 0) {
            best = cnt;
            sc->at_seq = sc->seqs[k];
        }
    }
    /* The LoRA reference: its default options first, else any LoRA. */
    sc->ref = -1;
    for (int pass = 0; pass < 2 && sc->ref < 0; pass++)
        for (int row = 0; row < sc->nseries && sc->ref < 0; row++) {
            const ftr_series *x = &s->series[sc->series[row]];
            if (!strcmp(x->label, "lora") && (pass || !x->options[0])) sc->ref = row;
        }
    char raw[512];
    snprintf(raw, sizeof raw, "%s_%s_b%d", sc->device, sc->model, sc->batch);
    ftr_safe_name(sc->id, sizeof sc->id, raw);
    snprintf(sc->title, sizeof sc->title, "%s on %s%s, batch %d", sc->model, sc->device,
             sc->emulated ? " (emulated)" : "", sc->batch);
}

static int cmp_scope(const void *a, const void *b)
{
    const ftr_scope *x = a, *y = b;
    int c = strcmp(x->device, y->device);
    if (!c) c = strcmp(x->model, y->model);
    if (!c) c = (x->batch > y->batch) - (x->batch < y->batch);
    if (!c) c = cmp_budget(x->budget_mib, y->budget_mib);
    return c;
}

static ftr_maxctx *maxctx_get(ftr_report *r, const ftr_rec *rec)
{
    for (int i = 0; i < r->nmax; i++) {
        ftr_maxctx *m = &r->max[i];
        if (m->series == rec->series && m->batch == rec->batch && !strcmp(m->device, rec->device) &&
            !strcmp(m->model, rec->model) && ftr_same_budget(m->budget_mib, rec->budget_mib))
            return m;
    }
    r->max = realloc(r->max, (size_t)(r->nmax + 1) * sizeof *r->max);
    ftr_maxctx *m = &r->max[r->nmax++];
    memset(m, 0, sizeof *m);
    snprintf(m->device, sizeof m->device, "%s", rec->device);
    snprintf(m->model, sizeof m->model, "%s", rec->model);
    m->batch = rec->batch;
    m->series = rec->series;
    m->budget_mib = rec->budget_mib;
    m->fit_longest = -1;
    return m;
}

static int cmp_max(const void *a, const void *b)
{
    const ftr_maxctx *x = a, *y = b;
    int c = strcmp(x->device, y->device);
    if (!c) c = strcmp(x->model, y->model);
    if (!c) c = (x->batch > y->batch) - (x->batch < y->batch);
    if (!c) c = cmp_budget(x->budget_mib, y->budget_mib);
    if (!c) c = cmp_series(&x->series, &y->series);
    return c;
}

void ftr_aggregate(const ftr_set *s, int at_seq, ftr_report *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < s->n; i++) {
        const ftr_rec *r = &s->r[i];
        if (r->fit || r->train) continue;
        int found = 0;
        for (int k = 0; k < out->nscopes && !found; k++) found = in_scope(r, &out->scopes[k]);
        if (found) continue;
        out->scopes = realloc(out->scopes, (size_t)(out->nscopes + 1) * sizeof *out->scopes);
        ftr_scope *sc = &out->scopes[out->nscopes++];
        memset(sc, 0, sizeof *sc);
        snprintf(sc->device, sizeof sc->device, "%s", r->device);
        snprintf(sc->model, sizeof sc->model, "%s", r->model);
        sc->batch = r->batch;
        sc->budget_mib = r->budget_mib;
    }
    if (out->nscopes) qsort(out->scopes, (size_t)out->nscopes, sizeof *out->scopes, cmp_scope);
    for (int k = 0; k < out->nscopes; k++) build_scope(s, &out->scopes[k], at_seq);
    /* The same device, model and batch under two budgets: two scopes, whose
     * names and titles say which budget each is. */
    for (int k = 0; k < out->nscopes; k++) {
        ftr_scope *sc = &out->scopes[k];
        int twin = 0;
        for (int j = 0; j < out->nscopes; j++)
            twin |= j != k && sc->batch == out->scopes[j].batch && !strcmp(sc->device, out->scopes[j].device) &&
                    !strcmp(sc->model, out->scopes[j].model);
        if (!twin) continue;
        char b[48];
        if (isnan(sc->budget_mib))
            snprintf(b, sizeof b, "unknown");
        else
            snprintf(b, sizeof b, "%.0f MiB", sc->budget_mib);
        size_t n = strlen(sc->id);
        snprintf(sc->id + n, sizeof sc->id - n, "_budget%.0fM", isnan(sc->budget_mib) ? 0.0 : sc->budget_mib);
        n = strlen(sc->title);
        snprintf(sc->title + n, sizeof sc->title - n, ", budget %s", b);
    }

    /* Max context: `fit` probes, and the swept lengths within budget. */
    g_set = s;
    for (int i = 0; i < s->n; i++) {
        const ftr_rec *r = &s->r[i];
        if (!r->fit || r->train) continue;
        ftr_maxctx *m = maxctx_get(out, r);
        if (m->fit_longest < 0) m->fit_longest = 0;
        if (!strcmp(r->outcome, "ok") &&
            !(isfinite(r->peak_mib) && isfinite(r->budget_mib) && r->peak_mib > r->budget_mib)) {
            if (r->seq > m->fit_longest) m->fit_longest = r->seq;
        } else if (!strcmp(r->outcome, "over_budget") || !strcmp(r->outcome, "oom") || !strcmp(r->outcome, "ok")) {
            if (!m->fit_failing || r->seq < m->fit_failing) m->fit_failing = r->seq;
        }
    }
    for (int k = 0; k < out->nscopes; k++) {
        ftr_scope *sc = &out->scopes[k];
        for (int row = 0; row < sc->nseries; row++)
            for (int q = 0; q < sc->nseq; q++) {
                ftr_agg *a = ftr_scope_agg(sc, row, q);
                if (!a->rep) continue;
                ftr_maxctx *m = maxctx_get(out, a->rep);
                if (!a->over && sc->seqs[q] > m->sweep_longest) m->sweep_longest = sc->seqs[q];
            }
    }
    if (out->nmax) qsort(out->max, (size_t)out->nmax, sizeof *out->max, cmp_max);

    for (int i = 0; i < s->n; i++)
        if (s->r[i].train) {
            out->train = realloc(out->train, (size_t)(out->ntrain + 1) * sizeof *out->train);
            out->train[out->ntrain++] = &s->r[i];
        }
}

void ftr_report_free(ftr_report *r)
{
    for (int k = 0; k < r->nscopes; k++) {
        free(r->scopes[k].series);
        free(r->scopes[k].seqs);
        free(r->scopes[k].agg);
        free(r->scopes[k].slope_kib);
    }
    free(r->scopes);
    free(r->max);
    free(r->train);
    memset(r, 0, sizeof *r);
}
