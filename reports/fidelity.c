/*
 * fidelity.c — `ftbench fidelity` records (fidelity.jsonl) in the report:
 * how close a method's gradient, or a zeroth-order method's estimate with
 * query budget n, is to the exact gradient of the same parameters (cosine
 * and relative error).  Records of one model, method (options without n),
 * n and length are one group: repeated seeds give a mean and a min–max.
 * The table lists every group; the plot draws cosine and relative error
 * against n for the zeroth-order methods, the gradient methods as flat
 * lines beside them (their n does not exist).
 */
#include "report_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int same_group(const ftr_fid *f, const ftr_fid_group *g)
{
    return f->n == g->n && f->seq == g->seq && !strcmp(f->model, g->model) && !strcmp(f->name, g->name);
}

static int cmp_group(const void *a, const void *b)
{
    const ftr_fid_group *x = a, *y = b;
    int c = strcmp(x->model, y->model);
    if (!c) c = strcmp(x->name, y->name);
    if (!c) c = (x->seq > y->seq) - (x->seq < y->seq);
    if (!c) c = (x->n > y->n) - (x->n < y->n);
    return c;
}

int ftr_fid_groups(const ftr_set *s, ftr_fid_group **out)
{
    ftr_fid_group *g = calloc((size_t)s->nfid + 1, sizeof *g);
    int ng = 0;
    for (int i = 0; i < s->nfid; i++) {
        const ftr_fid *f = &s->fid[i];
        if (!isfinite(f->cosine)) continue; /* a record without its comparison */
        int k = 0;
        while (k < ng && !same_group(f, &g[k])) k++;
        if (k == ng) {
            g[ng] = (ftr_fid_group){ f->model, f->name,   f->n, f->seq,   0,         0,
                                     INFINITY, -INFINITY, 0,    INFINITY, -INFINITY, f->params };
            ng++;
        }
        ftr_fid_group *x = &g[k];
        x->runs++;
        x->cos_mean += f->cosine;
        x->cos_min = fmin(x->cos_min, f->cosine);
        x->cos_max = fmax(x->cos_max, f->cosine);
        x->rel_mean += f->relerr;
        x->rel_min = fmin(x->rel_min, f->relerr);
        x->rel_max = fmax(x->rel_max, f->relerr);
    }
    for (int k = 0; k < ng; k++) {
        g[k].cos_mean /= g[k].runs;
        g[k].rel_mean /= g[k].runs;
    }
    if (ng) qsort(g, (size_t)ng, sizeof *g, cmp_group);
    *out = g;
    return ng;
}

const ftr_fid *ftr_fid_for(const ftr_set *s, const ftr_rec *r)
{
    const ftr_fid *best = NULL;
    for (int i = 0; i < s->nfid; i++) {
        const ftr_fid *f = &s->fid[i];
        if (!isfinite(f->cosine) || strcmp(f->label, r->label) || strcmp(f->all_options, r->options) ||
            strcmp(f->model, r->model))
            continue;
        if (!best || abs(f->seq - r->seq) < abs(best->seq - r->seq)) best = f;
    }
    return best;
}

ftr_table *ftr_fidelity_table(const ftr_set *s)
{
    ftr_fid_group *g;
    int ng = ftr_fid_groups(s, &g);
    if (!ng) {
        free(g);
        return NULL;
    }
    const char *head[] = { "method", "model",      "seq",        "n",          "runs",
                           "cosine", "cosine min", "cosine max", "rel. error", "parameters" };
    ftr_table *t = ftr_table_new("Gradient fidelity", "fidelity", 10, head);
    for (int k = 0; k < ng; k++) {
        ftr_table_add_row(t);
        t->rowrule[k] = k > 0 && strcmp(g[k].model, g[k - 1].model);
        ftr_table_set(t, k, 0, 0, "%s", g[k].name);
        ftr_table_set(t, k, 1, 0, "%s", g[k].model);
        ftr_table_set(t, k, 2, 0, "%d", g[k].seq);
        if (g[k].n > 0)
            ftr_table_set(t, k, 3, 0, "%d", g[k].n);
        else
            ftr_table_set(t, k, 3, 0, "grad.");
        ftr_table_set(t, k, 4, 0, "%d", g[k].runs);
        ftr_table_set(t, k, 5, 0, "%.6f", g[k].cos_mean);
        ftr_table_set(t, k, 6, 0, "%.6f", g[k].cos_min);
        ftr_table_set(t, k, 7, 0, "%.6f", g[k].cos_max);
        ftr_table_set(t, k, 8, 0, "%.3e", g[k].rel_mean);
        if (isfinite(g[k].params)) ftr_table_set(t, k, 9, 0, "%.0f", g[k].params);
    }
    ftr_table_caption(t,
                      "From `ftbench fidelity` (fidelity.jsonl): cosine between the method's gradient (or zeroth-order "
                      "estimate from n queries) and the exact gradient of the same parameters on the same batch, and "
                      "the relative error |g - g*| / |g*|; mean over the runs (seeds), with the cosine's range. "
                      "grad.: a method that computes a gradient (no query budget).");
    free(g);
    return t;
}

/* ---- the plot ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    int seq, zo, style;
} fid_series;

/* One figure per model: cosine (top) and relative error (bottom, log) against
 * the query budget n, log2 axis with the measured n as tics. */
void ftr_fidelity_plots(ftr_plotter *p, const ftr_set *s)
{
    ftr_fid_group *g;
    int ng = ftr_fid_groups(s, &g);
    for (int i = 0; i < ng; i++) {
        int first = 1;
        for (int j = 0; j < i; j++) first &= strcmp(g[j].model, g[i].model) != 0;
        if (!first) continue;
        const char *model = g[i].model;
        /* Series: method × length; n values. */
        fid_series ser[64];
        int nser = 0, ns[64], nn = 0, nseqs = 0, seqs[16];
        for (int j = i; j < ng; j++) {
            if (strcmp(g[j].model, model)) continue;
            int k = 0;
            while (k < nser && !(ser[k].seq == g[j].seq && !strcmp(ser[k].name, g[j].name))) k++;
            if (k == nser && nser < 64) {
                const ftr_fid *f = NULL;
                for (int q = 0; q < s->nfid && !f; q++)
                    if (!strcmp(s->fid[q].name, g[j].name)) f = &s->fid[q];
                ser[nser++] = (fid_series){ g[j].name, g[j].seq, g[j].n > 0, ftr_style_for(f ? f->label : "?", 0) };
            }
            if (k < nser && g[j].n > 0) ser[k].zo = 1;
            int seen = 0;
            for (int q = 0; q < nn; q++) seen |= ns[q] == g[j].n;
            if (!seen && g[j].n > 0 && nn < 64) ns[nn++] = g[j].n;
            seen = 0;
            for (int q = 0; q < nseqs; q++) seen |= seqs[q] == g[j].seq;
            if (!seen && nseqs < 16) seqs[nseqs++] = g[j].seq;
        }
        for (int a = 1; a < nn; a++)
            for (int b = a; b > 0 && ns[b - 1] > ns[b]; b--) {
                int t = ns[b];
                ns[b] = ns[b - 1];
                ns[b - 1] = t;
            }
        char name[320], safe[200];
        ftr_safe_name(safe, sizeof safe, model);
        snprintf(name, sizeof name, "fidelity_%s", safe);
        /* Data: one block per series (gnuplot index), columns
         * x cos_mean cos_min cos_max rel_mean rel_min rel_max runs; a
         * gradient method spans the n axis as a flat line (or sits at x = its
         * position when there is no zeroth-order method). */
        ftr_buf d = { 0 }, gp = { 0 };
        ftr_buf_printf(&d,
                       "# gradient fidelity of %s against the exact gradient, one block per method (and length):\n"
                       "# x = query budget n (zeroth order) or the axis ends (gradient methods: flat)\n",
                       model);
        double relmin = INFINITY, relmax = 0;
        for (int k = 0; k < nser; k++) {
            ftr_buf_printf(&d, "%s# %s, seq %d\n# x\tcos_mean\tcos_min\tcos_max\trel_mean\trel_min\trel_max\truns\n",
                           k ? "\n\n" : "", ser[k].name, ser[k].seq);
            for (int j = 0; j < ng; j++) {
                const ftr_fid_group *x = &g[j];
                if (strcmp(x->model, model) || strcmp(x->name, ser[k].name) || x->seq != ser[k].seq) continue;
                if (x->rel_min > 0) relmin = fmin(relmin, x->rel_min);
                relmax = fmax(relmax, x->rel_max);
                int reps = ser[k].zo || !nn ? 1 : 2; /* flat line: both ends of the n axis */
                for (int e = 0; e < reps; e++) {
                    double xv = ser[k].zo ? x->n : nn ? (e ? ns[nn - 1] * 1.25 : ns[0] / 1.25) : k;
                    ftr_buf_printf(&d, "%g\t%.9f\t%.9f\t%.9f\t%.6e\t%.6e\t%.6e\t%d\n", xv, x->cos_mean, x->cos_min,
                                   x->cos_max, x->rel_mean, fmax(x->rel_min, 1e-300), x->rel_max, x->runs);
                }
            }
        }
        char dpath[8192];
        snprintf(dpath, sizeof dpath, "%s/data/%s.tsv", p->out, name);
        ftr_buf_write(&d, dpath);
        if (!(relmin < INFINITY)) relmin = 1e-9;
        if (!(relmax > 0)) relmax = 1;
        char title[400];
        snprintf(title, sizeof title, "Gradient fidelity: %s", model);
        ftr_buf_puts(&gp, "set multiplot layout 2,1 title ");
        ftr_gp_quote(&gp, title);
        /* Both panels share the x axis: the same margins, the key beside the top one. */
        ftr_buf_printf(&gp,
                       "\nset key at screen 0.99, screen 0.9 right top vertical Left reverse noopaque nobox\n"
                       "set lmargin at screen 0.12\nset rmargin at screen 0.66\nrel_floor = %g\n",
                       relmin / 3);
        if (nn) {
            ftr_buf_puts(&gp, "set logscale x 2\nset xtics (");
            for (int q = 0; q < nn; q++) ftr_buf_printf(&gp, "%s%d", q ? ", " : "", ns[q]);
            ftr_buf_printf(&gp, ")\nset xrange [%g:%g]\n", ns[0] / 1.3, ns[nn - 1] * 1.3);
        } else {
            ftr_buf_printf(&gp, "set xrange [-0.6:%g]\nset xtics (", nser - 0.4);
            for (int k = 0; k < nser; k++) {
                ftr_buf_printf(&gp, "%s", k ? ", " : "");
                ftr_gp_quote(&gp, ser[k].name);
                ftr_buf_printf(&gp, " %d", k);
            }
            ftr_buf_puts(&gp, ")\n");
        }
        ftr_buf_puts(&gp, "set ylabel 'cosine to exact'\nset format x ''\nset xlabel ''\nset yrange [*:1.02]\n");
        for (int panel = 0; panel < 2; panel++) {
            if (panel == 1) {
                ftr_buf_printf(&gp,
                               "set ylabel 'relative error'\nset logscale y 10\nset format y '10^{%%L}'\n"
                               "set yrange [rel_floor:%g]\nset format x '%%g'\nset xlabel '%s'\n"
                               "set label 1 'relative error 0 is drawn at the bottom' at graph 0.01, graph 0.04 "
                               "left font ',9' tc rgb '#666666'\n",
                               relmax * 3, nn ? "query budget n (forward-pass pairs per estimate)" : "method");
            }
            ftr_buf_puts(&gp, "plot \\\n");
            for (int k = 0; k < nser; k++) {
                char t[400];
                if (nseqs > 1)
                    snprintf(t, sizeof t, "%s, seq %d%s", ser[k].name, ser[k].seq, ser[k].zo ? "" : " (gradient)");
                else
                    snprintf(t, sizeof t, "%s%s", ser[k].name, ser[k].zo ? "" : " (gradient)");
                /* An exact gradient's relative error of 0 sits on the log axis's floor. */
                const char *cols = panel ? "1:($5 > rel_floor ? $5 : rel_floor):($6 > rel_floor ? $6 : rel_floor):"
                                           "($7 > rel_floor ? $7 : rel_floor)"
                                         : "1:2:3:4";
                ftr_buf_printf(&gp, "  'data/%s.tsv' index %d using %s with yerrorlines ls %d%s title ", name, k, cols,
                               ser[k].style, ser[k].zo || !nn ? "" : " pt -1");
                ftr_gp_quote(&gp, panel ? "" : t);
                ftr_buf_puts(&gp, ", \\\n");
            }
            ftr_buf_puts(&gp, "  NaN notitle\n");
        }
        ftr_buf_puts(&gp, "unset multiplot\n");
        ftr_plot_render(p, name, -1, 0, gp.s,
                        "Gradient fidelity of %s (ftbench fidelity): cosine to the exact gradient (top) and relative "
                        "error (bottom) %s; bars span the runs' min to max.",
                        model,
                        nn ? "against the query budget n of the zeroth-order estimates, gradient methods flat"
                           : "per method");
        ftr_buf_free(&d);
        ftr_buf_free(&gp);
    }
    free(g);
}
