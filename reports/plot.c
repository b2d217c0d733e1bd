/*
 * plot.c — figures through gnuplot.  Every figure is three files written
 * before gnuplot runs: its data (data/<name>.tsv), its script
 * (gnuplot/<name>.gp, which loads the shared gnuplot/style.gp) and then its
 * images (plots/<name>.png|svg|pdf), rendered by piping
 * `fmt='png'; load 'gnuplot/<name>.gp'` into one gnuplot per figure.  An
 * author restyles by editing style.gp or a script and running replot.sh;
 * the sweep is never re-run.
 */
#include "report_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *const ftr_formats[3] = { "png", "svg", "pdf" };

/* 'x' → '\'x\'' for sh. */
static void shq(ftr_buf *b, const char *s)
{
    ftr_buf_puts(b, "'");
    for (; *s; s++) {
        if (*s == '\'')
            ftr_buf_puts(b, "'\\''");
        else {
            char c[2] = { *s, 0 };
            ftr_buf_puts(b, c);
        }
    }
    ftr_buf_puts(b, "'");
}

static int run_sh(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int in_path(const char *name, char *out, size_t n)
{
    const char *path = getenv("PATH");
    if (!path || !*path) return 0;
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, n, "%s/%s", *d ? d : ".", name);
        struct stat st;
        found = stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* The terminals this gnuplot has (GPVAL_TERMINALS, one run), space-framed:
 * " png pngcairo svg ... "; NULL if gnuplot does not run. */
static char *terminals(const char *gnuplot)
{
    ftr_buf b = { 0 };
    shq(&b, gnuplot);
    ftr_buf_puts(&b, " -e 'print GPVAL_TERMINALS' 2>&1 </dev/null");
    fflush(NULL);
    FILE *f = popen(b.s, "r");
    ftr_buf_free(&b);
    if (!f) return NULL;
    ftr_buf out = { 0 };
    ftr_buf_puts(&out, " ");
    char line[4096];
    while (fgets(line, sizeof line, f)) ftr_buf_puts(&out, line);
    int st = pclose(f);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !strstr(out.s, " svg")) {
        ftr_buf_free(&out);
        return NULL;
    }
    for (char *c = out.s; *c; c++)
        if (*c == '\n' || *c == '\t') *c = ' ';
    ftr_buf_puts(&out, " ");
    return out.s;
}

static int term_ok(const char *terms, const char *term)
{
    char w[64];
    snprintf(w, sizeof w, " %s ", term);
    return strstr(terms, w) != NULL;
}

void ftr_plotter_init(ftr_plotter *p, const char *out, const int want[3], int log_axes)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->log_axes = log_axes;
    for (int i = 0; i < 3; i++) p->want[i] = want[i];
    const char *env = getenv("FTBENCH_GNUPLOT");
    char found[4096];
    if (env && *env) {
        struct stat st;
        if (strchr(env, '/')) {
            if (stat(env, &st) == 0 && S_ISREG(st.st_mode) && access(env, X_OK) == 0)
                snprintf(p->gnuplot, sizeof p->gnuplot, "%s", env);
            else
                snprintf(p->missing_why, sizeof p->missing_why, "FTBENCH_GNUPLOT=%.400s is not an executable file",
                         env);
        } else if (in_path(env, found, sizeof found)) {
            snprintf(p->gnuplot, sizeof p->gnuplot, "%s", found);
        } else {
            snprintf(p->missing_why, sizeof p->missing_why, "FTBENCH_GNUPLOT=%.400s is not in PATH", env);
        }
    } else if (in_path("gnuplot", found, sizeof found)) {
        snprintf(p->gnuplot, sizeof p->gnuplot, "%s", found);
    } else {
        snprintf(p->missing_why, sizeof p->missing_why, "gnuplot is not in PATH");
    }
    char *terms = p->gnuplot[0] ? terminals(p->gnuplot) : NULL;
    if (p->gnuplot[0] && !terms) {
        snprintf(p->missing_why, sizeof p->missing_why, "%.400s does not run (or lists no terminals)", p->gnuplot);
        p->gnuplot[0] = 0;
    }
    if (!p->gnuplot[0]) return;
    /* PNG: cairo, else libgd.  SVG: built in.  PDF: cairo, else EPS through
     * ps2pdf (ghostscript) or epstopdf. */
    if (term_ok(terms, "pngcairo")) {
        p->have[0] = 1;
        snprintf(p->fmt_note[0], sizeof p->fmt_note[0], "pngcairo");
    } else if (term_ok(terms, "png")) {
        p->have[0] = 1;
        snprintf(p->fmt_note[0], sizeof p->fmt_note[0], "png (libgd)");
    } else {
        snprintf(p->fmt_note[0], sizeof p->fmt_note[0], "this gnuplot has neither pngcairo nor png");
    }
    if (term_ok(terms, "svg")) {
        p->have[1] = 1;
        snprintf(p->fmt_note[1], sizeof p->fmt_note[1], "svg");
    } else {
        snprintf(p->fmt_note[1], sizeof p->fmt_note[1], "this gnuplot has no svg terminal");
    }
    char tool[4096];
    if (term_ok(terms, "pdfcairo")) {
        p->have[2] = 1;
        snprintf(p->fmt_note[2], sizeof p->fmt_note[2], "pdfcairo");
    } else if (term_ok(terms, "postscript") && in_path("ps2pdf", tool, sizeof tool)) {
        p->have[2] = 1;
        p->pdf_via_eps = 1;
        snprintf(p->fmt_note[2], sizeof p->fmt_note[2], "postscript eps + ps2pdf -dEPSCrop");
    } else if (term_ok(terms, "postscript") && in_path("epstopdf", tool, sizeof tool)) {
        p->have[2] = 1;
        p->pdf_via_eps = 2;
        snprintf(p->fmt_note[2], sizeof p->fmt_note[2], "postscript eps + epstopdf");
    } else {
        snprintf(p->fmt_note[2], sizeof p->fmt_note[2],
                 "no pdfcairo terminal in this gnuplot and no ps2pdf/epstopdf: install gnuplot-qt (or gnuplot-x11), "
                 "or ghostscript for ps2pdf");
    }
    free(terms);
}

void ftr_plotter_free(ftr_plotter *p)
{
    free(p->plots);
    p->plots = NULL;
    p->nplots = p->cap = 0;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (long)st.st_size : -1;
}

int ftr_plot_render(ftr_plotter *p, const char *name, int scope, int wide, const char *script, const char *fmt_caption,
                    ...)
{
    if (p->nplots == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->plots = realloc(p->plots, (size_t)p->cap * sizeof *p->plots);
    }
    ftr_plot *pl = &p->plots[p->nplots];
    memset(pl, 0, sizeof *pl);
    snprintf(pl->name, sizeof pl->name, "%s", name);
    pl->scope = scope;
    pl->wide = wide;
    va_list ap;
    va_start(ap, fmt_caption);
    vsnprintf(pl->caption, sizeof pl->caption, fmt_caption, ap);
    va_end(ap);

    /* The script: a header any author can run as is, then the body. */
    ftr_buf s = { 0 };
    ftr_buf_printf(&s,
                   "# %s\n# Regenerate from the report directory:  gnuplot -e \"fmt='pdf'\" gnuplot/%s.gp\n"
                   "# (fmt: png, svg, pdf; the look is in gnuplot/style.gp)\n"
                   "if (!exists(\"fmt\")) fmt = 'png'\nwide = %d\nload 'gnuplot/style.gp'\n"
                   "set output sprintf('plots/%%s.%%s', '%s', fmt)\n\n%s",
                   pl->caption, name, wide, name, script);
    char path[8192];
    snprintf(path, sizeof path, "%s/gnuplot/%s.gp", p->out, name);
    if (ftr_buf_write(&s, path) != 0) {
        snprintf(pl->problem, sizeof pl->problem, "cannot write %.200s", path);
        ftr_buf_free(&s);
        return p->nplots++;
    }
    ftr_buf_free(&s);
    if (!p->gnuplot[0]) {
        snprintf(pl->problem, sizeof pl->problem, "gnuplot missing");
        return p->nplots++;
    }
    ftr_buf cmd = { 0 };
    ftr_buf_puts(&cmd, "cd ");
    shq(&cmd, p->out);
    ftr_buf_puts(&cmd, " && ");
    shq(&cmd, p->gnuplot);
    ftr_buf_puts(&cmd, " >>gnuplot.log 2>&1");
    /* One gnuplot per format: its exit status says whether that image is
     * good (gnuplot reading a pipe goes on after an error, and exits 1). */
    int wanted = 0, ok = 0;
    for (int f = 0; f < 3; f++) {
        if (!p->want[f] || !p->have[f]) continue;
        wanted++;
        const char *fmt = f == 2 && p->pdf_via_eps ? "eps" : ftr_formats[f];
        snprintf(path, sizeof path, "%s/plots/%s.%s", p->out, name, ftr_formats[f]);
        unlink(path);
        fflush(NULL);
        FILE *g = popen(cmd.s, "w");
        if (!g) {
            snprintf(pl->problem, sizeof pl->problem, "cannot start gnuplot: %s", strerror(errno));
            continue;
        }
        fprintf(g, "fmt = '%s'\nload 'gnuplot/%s.gp'\nunset output\nexit\n", fmt, name);
        int st = pclose(g);
        int good = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (good && f == 2 && p->pdf_via_eps) {
            ftr_buf c = { 0 };
            ftr_buf_puts(&c, "cd ");
            shq(&c, p->out);
            if (p->pdf_via_eps == 1)
                ftr_buf_printf(&c, "/plots && ps2pdf -dEPSCrop '%s.eps' '%s.pdf' >>../gnuplot.log 2>&1", name, name);
            else
                ftr_buf_printf(&c, "/plots && epstopdf '%s.eps' >>../gnuplot.log 2>&1", name);
            good = run_sh(c.s) == 0;
            ftr_buf_free(&c);
            char eps[8192];
            snprintf(eps, sizeof eps, "%s/plots/%s.eps", p->out, name);
            unlink(eps);
        }
        if (!good || file_size(path) <= 0) {
            unlink(path); /* nothing half-written stays behind */
            if (!pl->problem[0])
                snprintf(pl->problem, sizeof pl->problem, "gnuplot failed on the %s (see gnuplot.log)", ftr_formats[f]);
        } else {
            ok++;
        }
    }
    ftr_buf_free(&cmd);
    pl->drawn = wanted > 0 && ok == wanted;
    if (!wanted && !pl->problem[0]) snprintf(pl->problem, sizeof pl->problem, "no requested format is available");
    return p->nplots++;
}

/* ---- data helpers ---------------------------------------------------------------- */

static void tsv_num(ftr_buf *b, double v, const char *fmt)
{
    ftr_buf_puts(b, "\t");
    if (isfinite(v))
        ftr_buf_printf(b, fmt, v);
    else
        ftr_buf_puts(b, "-");
}

static int write_data(const ftr_plotter *p, const char *name, const ftr_buf *b)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/data/%s.tsv", p->out, name);
    return ftr_buf_write(b, path);
}

/* Lengths double from one to the next: a base-2 axis with the measured
 * lengths as its tics (--linear-x: a linear axis). */
static void xaxis_seq(const ftr_plotter *p, ftr_buf *s, const ftr_scope *sc)
{
    ftr_buf_puts(s, "set xlabel 'sequence length (tokens)'\n");
    if (!p->linear_x && sc->nseq && sc->seqs[0] > 0) {
        ftr_buf_puts(s, "set logscale x 2\nset xtics (");
        for (int k = 0; k < sc->nseq; k++) ftr_buf_printf(s, "%s%d", k ? ", " : "", sc->seqs[k]);
        ftr_buf_puts(s, ")\nset mxtics 1\n");
        ftr_buf_printf(s, "set xrange [%g:%g]\n", sc->seqs[0] / 1.25, sc->seqs[sc->nseq - 1] * 1.25);
    } else if (sc->nseq) {
        double span = sc->seqs[sc->nseq - 1] - sc->seqs[0];
        if (span <= 0) span = sc->seqs[0];
        ftr_buf_printf(s, "set xrange [%g:%g]\n", sc->seqs[0] - 0.05 * span, sc->seqs[sc->nseq - 1] + 0.05 * span);
    }
}

/* Where each series' label goes, as a fraction of the plot's height: at its
 * last point's height, then pushed apart to at least `gap` (sorted by
 * height, pushed up, then back down below the top). */
void ftr_spread_labels(double *f, int n, double gap)
{
    int *o = malloc(((size_t)n + 1) * sizeof *o);
    for (int i = 0; i < n; i++) o[i] = i;
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && f[o[b - 1]] > f[o[b]]; b--) {
            int t = o[b];
            o[b] = o[b - 1];
            o[b - 1] = t;
        }
    for (int i = 1; i < n; i++)
        if (f[o[i]] < f[o[i - 1]] + gap) f[o[i]] = f[o[i - 1]] + gap;
    for (int i = n - 1; i >= 0; i--) {
        double cap = i == n - 1 ? 1.0 : f[o[i + 1]] - gap;
        if (f[o[i]] > cap) f[o[i]] = cap;
    }
    free(o);
}

/* Direct labels: each series named in its colour where its line ends —
 * beside the plot for the lines that reach the longest length (spread so
 * that none overlaps), at the last point for the others. */
static void end_labels(ftr_buf *g, const ftr_set *s, const ftr_scope *sc, double (*fn)(const ftr_agg *), double ylo,
                       double yhi, int logy, int first_id)
{
    int n = sc->nseries, id = first_id;
    double *f = calloc((size_t)n + 1, sizeof *f);
    int *rows = calloc((size_t)n + 1, sizeof *rows), m = 0;
    for (int row = 0; row < n; row++) {
        int last = -1;
        for (int k = 0; k < sc->nseq; k++)
            if (isfinite(fn(ftr_scope_agg(sc, row, k)))) last = k;
        if (last < 0) continue;
        double y = fn(ftr_scope_agg(sc, row, last));
        const ftr_series *x = &s->series[sc->series[row]];
        if (last == sc->nseq - 1) {
            double fr = logy ? (log(y) - log(ylo)) / (log(yhi) - log(ylo)) : (y - ylo) / (yhi - ylo);
            f[m] = isfinite(fr) ? fr : 0;
            rows[m++] = row;
            continue;
        }
        ftr_buf_printf(g, "set label %d ", id++);
        ftr_gp_quote(g, x->name);
        ftr_buf_printf(g, " at first %d, first %.4f left offset 0.6,0.4 tc rgb '%s' font ',10' front\n", sc->seqs[last],
                       y, ftr_style_colour(x->style));
    }
    ftr_spread_labels(f, m, 0.065);
    for (int i = 0; i < m; i++) {
        const ftr_series *x = &s->series[sc->series[rows[i]]];
        ftr_buf_printf(g, "set label %d ", id++);
        ftr_gp_quote(g, x->name);
        ftr_buf_printf(g, " at graph 1.02, graph %.4f left tc rgb '%s' front\n", f[i], ftr_style_colour(x->style));
    }
    free(f);
    free(rows);
}

/* Log-scale y tics at 1, 2, 5 × 10^k within [lo, hi]. */
static void log_ytics(ftr_buf *s, double lo, double hi)
{
    if (!(lo > 0) || !(hi > lo)) return;
    ftr_buf_puts(s, "set ytics (");
    int n = 0;
    for (int e = (int)floor(log10(lo)); e <= (int)ceil(log10(hi)); e++)
        for (int m = 0; m < 3; m++) {
            double v = (m == 0 ? 1 : m == 1 ? 2 : 5) * pow(10, e);
            if (v >= lo && v <= hi) ftr_buf_printf(s, "%s%g", n++ ? ", " : "", v);
        }
    ftr_buf_puts(s, ")\n");
    if (!n) s->s[s->n -= strlen("set ytics ()\n")] = 0;
}

/* ---- memory scaling ----------------------------------------------------------------- */

typedef double (*agg_field)(const ftr_agg *a);
static double f_peak(const ftr_agg *a) { return a->n_measured ? a->peak_mib : NAN; }
static double f_saved(const ftr_agg *a) { return a->n_measured ? a->saved_mib : NAN; }
static double f_tps(const ftr_agg *a) { return a->n_measured ? a->tokens_per_s : NAN; }
static double f_plan(const ftr_agg *a) { return a->n_measured ? a->plan_mib : NAN; }

/* Data: seq, then one column per series of the scope.  Returns max value. */
static double seq_data(const ftr_set *s, const ftr_scope *sc, agg_field fn, ftr_buf *d, const char *what,
                       double *minpos)
{
    double mx = 0;
    *minpos = INFINITY;
    ftr_buf_printf(d, "# %s: %s\n# seq", what, sc->title);
    for (int row = 0; row < sc->nseries; row++) ftr_buf_printf(d, "\t%s", s->series[sc->series[row]].name);
    ftr_buf_puts(d, "\n");
    for (int k = 0; k < sc->nseq; k++) {
        ftr_buf_printf(d, "%d", sc->seqs[k]);
        for (int row = 0; row < sc->nseries; row++) {
            double v = fn(ftr_scope_agg(sc, row, k));
            tsv_num(d, v, "%.4f");
            if (isfinite(v) && v > mx) mx = v;
            if (isfinite(v) && v > 0 && v < *minpos) *minpos = v;
        }
        ftr_buf_puts(d, "\n");
    }
    return mx;
}

static void mem_plot(ftr_plotter *p, const ftr_set *s, const ftr_report *r, int si)
{
    const ftr_scope *sc = &r->scopes[si];
    char name[320];
    snprintf(name, sizeof name, "mem_%s", sc->id);
    ftr_buf d = { 0 }, o = { 0 }, g = { 0 };
    double minpos;
    double mx = seq_data(s, sc, f_peak, &d, "peak RSS (MiB) by sequence length, '-' = not measured", &minpos);
    write_data(p, name, &d);
    /* The plan's predictions recorded with the cells (memory.plan): a line
     * per method that has them, its measurements as points; a method that
     * declares no memory model keeps its line of measurements and is named
     * in a note. */
    int *planned = calloc((size_t)sc->nseries + 1, sizeof *planned), nplanned = 0;
    ftr_buf nomodel = { 0 };
    for (int row = 0; row < sc->nseries; row++) {
        int no_model = 0;
        for (int k = 0; k < sc->nseq; k++) {
            const ftr_agg *a = ftr_scope_agg(sc, row, k);
            planned[row] |= isfinite(f_plan(a));
            no_model |= a->plan_model && !strcmp(a->plan_model, "no model");
        }
        nplanned += planned[row];
        if (no_model && !planned[row])
            ftr_buf_printf(&nomodel, "%s%s", nomodel.n ? ", " : "", s->series[sc->series[row]].name);
    }
    char pname[340];
    snprintf(pname, sizeof pname, "%s_plan", name);
    if (nplanned) {
        ftr_buf pd = { 0 };
        double pmin;
        double pmx = seq_data(s, sc, f_plan, &pd,
                              "peak RSS predicted by ftbench plan (memory.plan, MiB), '-' = no prediction", &pmin);
        write_data(p, pname, &pd);
        ftr_buf_free(&pd);
        mx = fmax(mx, pmx);
        minpos = fmin(minpos, pmin);
    }
    /* Over-budget cells. */
    int nover = 0;
    ftr_buf_printf(&o, "# cells over the budget (%.0f MiB): seq, peak RSS MiB, method\n", sc->budget_mib);
    for (int row = 0; row < sc->nseries; row++)
        for (int k = 0; k < sc->nseq; k++) {
            ftr_agg *a = ftr_scope_agg(sc, row, k);
            if (a->over) {
                ftr_buf_printf(&o, "%d\t%.4f\t%s\n", sc->seqs[k], a->peak_mib, s->series[sc->series[row]].name);
                nover++;
            }
        }
    char oname[340];
    snprintf(oname, sizeof oname, "%s_over", name);
    write_data(p, oname, &o);
    int show_budget = isfinite(sc->budget_mib) && (nover || sc->budget_mib <= 1.5 * mx);
    ftr_buf_puts(&g, "set title ");
    char t[512];
    snprintf(t, sizeof t, "Peak RSS: %s", sc->title);
    ftr_gp_quote(&g, t);
    ftr_buf_puts(&g, "\n");
    /* Difference to LoRA at each length: a second panel under the curves,
     * where methods within a few percent of each other separate. */
    int diff = sc->ref >= 0 && sc->nseries >= 2;
    char dname[340];
    snprintf(dname, sizeof dname, "%s_vs_lora", name);
    double dlo = 0, dhi = 0;
    ftr_buf offscale = { 0 };
    if (diff) {
        ftr_buf dd = { 0 };
        ftr_buf_printf(&dd, "# peak RSS minus %s's at the same length (MiB): %s\n# seq",
                       s->series[sc->series[sc->ref]].name, sc->title);
        for (int row = 0; row < sc->nseries; row++) ftr_buf_printf(&dd, "\t%s", s->series[sc->series[row]].name);
        ftr_buf_puts(&dd, "\n");
        for (int k = 0; k < sc->nseq; k++) {
            ftr_buf_printf(&dd, "%d", sc->seqs[k]);
            double ref = f_peak(ftr_scope_agg(sc, sc->ref, k));
            for (int row = 0; row < sc->nseries; row++) tsv_num(&dd, f_peak(ftr_scope_agg(sc, row, k)) - ref, "%.4f");
            ftr_buf_puts(&dd, "\n");
        }
        /* The panel is for the methods the curves above cannot tell apart:
         * a method further from LoRA than a fifth of the panel above is
         * apart already; it leaves the scale, named in a note. */
        double limit = 0.2 * mx;
        for (int row = 0; row < sc->nseries; row++) {
            double lo = 0, hi = 0;
            for (int k = 0; k < sc->nseq; k++) {
                double v = f_peak(ftr_scope_agg(sc, row, k)) - f_peak(ftr_scope_agg(sc, sc->ref, k));
                if (isfinite(v)) {
                    lo = fmin(lo, v);
                    hi = fmax(hi, v);
                }
            }
            if (hi - lo <= limit && fmax(hi, -lo) <= limit) {
                dlo = fmin(dlo, lo);
                dhi = fmax(dhi, hi);
            } else {
                ftr_buf_printf(&offscale, "%s%s %+.0f",
                               offscale.n ? ", " : "off the scale: ", s->series[sc->series[row]].name,
                               fabs(hi) > fabs(lo) ? hi : lo);
            }
        }
        write_data(p, dname, &dd);
        ftr_buf_free(&dd);
    }
    ftr_buf_puts(&g, "set multiplot\nset key off\nset lmargin at screen 0.12\nset rmargin at screen 0.78\n");
    ftr_buf_printf(&g, "set tmargin at screen 0.9\nset bmargin at screen %s\n", diff ? "0.42" : "0.12");
    xaxis_seq(p, &g, sc);
    if (diff) ftr_buf_puts(&g, "set xlabel ''\nset format x ''\n");
    ftr_buf_puts(&g, "set ylabel 'peak RSS (MiB)'\n");
    double top = show_budget && sc->budget_mib > mx ? sc->budget_mib : mx;
    double ylo, yhi;
    if (p->log_axes) {
        ylo = isfinite(minpos) ? minpos / 1.3 : 1;
        yhi = top * 1.6;
        ftr_buf_printf(&g, "set logscale y 10\nset yrange [%g:%g]\n", ylo, yhi);
        log_ytics(&g, ylo, yhi);
    } else {
        ylo = 0;
        yhi = top > 0 ? top * 1.12 : 1;
        ftr_buf_printf(&g, "set yrange [0:%g]\n", yhi);
    }
    if (show_budget) {
        ftr_buf_printf(&g, "budget = %.3f\n", sc->budget_mib);
        ftr_buf_puts(&g, "set arrow 1 from graph 0, first budget to graph 1, first budget nohead ls 90 front\n");
        ftr_buf_printf(&g,
                       "set label 1 sprintf('budget of %s: %%.0f MiB', budget) at graph 0.02, first budget "
                       "left offset 0,0.7 tc rgb '#B00000' front\n",
                       sc->device);
    } else if (isfinite(sc->budget_mib)) {
        ftr_buf_printf(&g,
                       "set label 1 'budget %.0f MiB: off the scale' at graph 0.98, graph 0.04 right tc rgb "
                       "'#B00000'\n",
                       sc->budget_mib);
    }
    end_labels(&g, s, sc, f_peak, ylo, yhi, p->log_axes, 10);
    if (nplanned || nomodel.n) {
        ftr_buf note = { 0 };
        if (nplanned) ftr_buf_puts(&note, "points: measured, lines: predicted (ftbench plan)");
        if (nomodel.n) ftr_buf_printf(&note, "%sno model: %s (measured only)", nplanned ? "; " : "", nomodel.s);
        ftr_buf_puts(&g, "set label 4 ");
        ftr_gp_quote(&g, note.s);
        ftr_buf_puts(&g, " at graph 0.02, graph 0.95 left font ',9' tc rgb '#333333' front\n");
        ftr_buf_free(&note);
    }
    ftr_buf_puts(&g, "plot \\\n");
    for (int row = 0; row < sc->nseries; row++) {
        const ftr_series *x = &s->series[sc->series[row]];
        ftr_buf_printf(&g, "  'data/%s.tsv' using 1:%d with %s ls %d title ", name, row + 2,
                       planned[row] ? "points" : "linespoints", x->style);
        ftr_gp_quote(&g, x->name);
        ftr_buf_puts(&g, ", \\\n");
        if (planned[row]) {
            ftr_buf_printf(&g, "  'data/%s.tsv' using 1:%d with lines ls %d title ", pname, row + 2, x->style);
            char pt[360];
            snprintf(pt, sizeof pt, "%s predicted", x->name);
            ftr_gp_quote(&g, pt);
            ftr_buf_puts(&g, ", \\\n");
        }
    }
    if (nover) ftr_buf_printf(&g, "  'data/%s.tsv' using 1:2 with points ls 91 title 'over budget', \\\n", oname);
    ftr_buf_puts(&g, "  NaN notitle\n");
    if (diff) {
        double pad = 0.08 * (dhi - dlo > 0 ? dhi - dlo : 1);
        /* About four tics. */
        double span = dhi - dlo + 2 * pad, step = pow(10, floor(log10(span / 4)));
        if (span / step > 10)
            step *= 5;
        else if (span / step > 5)
            step *= 2;
        ftr_buf_printf(&g,
                       "unset label\nunset arrow\nunset title\nunset logscale y\nset format x '%%g'\n"
                       "set xlabel 'sequence length (tokens)'\nset tmargin at screen 0.36\nset bmargin at screen 0.12\n"
                       "set ylabel 'vs %s (MiB)'\nset yrange [%g:%g]\nset ytics %g\nset mytics default\n"
                       "set arrow 2 from graph 0, first 0 to graph 1, first 0 nohead lc rgb '#555555' lw 1 back\n",
                       s->series[sc->series[sc->ref]].name, dlo - pad, dhi + pad, step);
        if (offscale.n) {
            ftr_buf_puts(&g, "set label 3 ");
            ftr_buf_puts(&offscale, " MiB");
            ftr_gp_quote(&g, offscale.s);
            ftr_buf_puts(&g, " at graph 0.01, graph 0.07 left font ',10' tc rgb '#555555' boxed front\n"
                             "set style textbox opaque noborder margins 0.5,0.5\n");
        }
        ftr_buf_puts(&g, "plot \\\n");
        for (int row = 0; row < sc->nseries; row++)
            ftr_buf_printf(&g, "  'data/%s.tsv' using 1:%d with linespoints ls %d notitle, \\\n", dname, row + 2,
                           s->series[sc->series[row]].style);
        ftr_buf_puts(&g, "  NaN notitle\n");
    }
    ftr_buf_puts(&g, "unset multiplot\n");
    ftr_buf_free(&offscale);
    ftr_plot_render(
        p, name, si, 0, g.s, "Peak RSS against sequence length, one line per method, named at its end: %s%s%s%s%s%s%s.",
        sc->title,
        nplanned ? "; measured as points, the peak `ftbench plan` predicted for each cell as a line of "
                   "the same colour"
                 : "",
        nomodel.n ? "; no model (nothing predicted): " : "", nomodel.n ? nomodel.s : "",
        show_budget ? "; the dashed line is the device's memory budget" : "", nover ? ", circled points exceed it" : "",
        diff ? "; below, each method's peak minus LoRA's at the same length" : "");
    free(planned);
    ftr_buf_free(&nomodel);
    ftr_buf_free(&d);
    ftr_buf_free(&o);
    ftr_buf_free(&g);
}

static void act_plot(ftr_plotter *p, const ftr_set *s, const ftr_report *r, int si)
{
    const ftr_scope *sc = &r->scopes[si];
    char name[320];
    snprintf(name, sizeof name, "act_%s", sc->id);
    ftr_buf d = { 0 }, g = { 0 };
    double minpos;
    double mx = seq_data(s, sc, f_saved, &d, "saved activations at their peak (MiB), '-' = not measured", &minpos);
    write_data(p, name, &d);
    char t[512];
    snprintf(t, sizeof t, "Saved activations: %s", sc->title);
    ftr_buf_puts(&g, "set title ");
    ftr_gp_quote(&g, t);
    ftr_buf_puts(&g, "\n");
    xaxis_seq(p, &g, sc);
    ftr_buf_puts(&g, "set ylabel 'saved activations (MiB)'\n");
    if (p->log_axes) {
        double lo = isfinite(minpos) ? minpos / 1.3 : 0.01, hi = mx > 0 ? mx * 1.6 : 1;
        ftr_buf_printf(&g, "set logscale y 10\nset yrange [%g:%g]\n", lo, hi);
        log_ytics(&g, lo, hi);
    } else
        ftr_buf_printf(&g, "set yrange [0:%g]\n", mx > 0 ? mx * 1.12 : 1);
    ftr_buf_puts(&g, "plot \\\n");
    for (int row = 0; row < sc->nseries; row++) {
        const ftr_series *x = &s->series[sc->series[row]];
        char title[400];
        if (isfinite(sc->slope_kib[row]))
            snprintf(title, sizeof title, "%s (%.1f KiB/token)", x->name, sc->slope_kib[row]);
        else
            snprintf(title, sizeof title, "%s", x->name);
        ftr_buf_printf(&g, "  'data/%s.tsv' using 1:%d with linespoints ls %d title ", name, row + 2, x->style);
        ftr_gp_quote(&g, title);
        ftr_buf_puts(&g, ", \\\n");
    }
    ftr_buf_puts(&g, "  NaN notitle\n");
    ftr_plot_render(p, name, si, 0, g.s,
                    "Bytes kept for the backward pass (the core's saved_activations peak) against sequence length: "
                    "%s; the key gives each method's slope per token.",
                    sc->title);
    ftr_buf_free(&d);
    ftr_buf_free(&g);
}

/* Tokens/s per method: the median step's line; bars from the slowest to the
 * fastest measured step where a cell has two or more; a cell whose only
 * measured step had no warm-up before it (the default sweep) is a cold
 * step, drawn with its own mark and named so in the key. */
static void throughput_plot(ftr_plotter *p, const ftr_set *s, const ftr_report *r, int si)
{
    const ftr_scope *sc = &r->scopes[si];
    char name[320], sname[340], cname[340];
    snprintf(name, sizeof name, "throughput_%s", sc->id);
    snprintf(sname, sizeof sname, "%s_steps", name);
    snprintf(cname, sizeof cname, "%s_cold", name);
    ftr_buf d = { 0 }, sp = { 0 }, cold = { 0 }, g = { 0 };
    double minpos;
    double mx = seq_data(s, sc, f_tps, &d, "tokens per second (median step), '-' = not measured", &minpos);
    if (mx <= 0) {
        ftr_buf_free(&d);
        return;
    }
    write_data(p, name, &d);
    /* Spread: per series three columns (median, slowest, fastest step), '-'
     * where a cell has fewer than two measured steps. */
    ftr_buf_printf(&sp,
                   "# tokens/s of the measured steps (step_seconds_all after the warm-up): median, min, max "
                   "where a cell has >= 2 steps: %s\n# seq",
                   sc->title);
    for (int row = 0; row < sc->nseries; row++) {
        const char *n = s->series[sc->series[row]].name;
        ftr_buf_printf(&sp, "\t%s\t%s_min\t%s_max\t%s_steps", n, n, n, n);
    }
    ftr_buf_puts(&sp, "\n");
    ftr_buf_puts(&cold, "# cells measured by one step with no warm-up before it (cold: not a timing): seq, tokens/s, "
                        "method\n");
    int nspread = 0, ncold = 0;
    for (int k = 0; k < sc->nseq; k++) {
        ftr_buf_printf(&sp, "%d", sc->seqs[k]);
        for (int row = 0; row < sc->nseries; row++) {
            const ftr_agg *a = ftr_scope_agg(sc, row, k);
            int bars = a->n_measured && a->n_steps >= 2 && isfinite(a->tps_min);
            tsv_num(&sp, bars ? a->tokens_per_s : NAN, "%.4f");
            tsv_num(&sp, bars ? a->tps_min : NAN, "%.4f");
            tsv_num(&sp, bars ? a->tps_max : NAN, "%.4f");
            ftr_buf_printf(&sp, "\t%d", a->n_steps);
            nspread += bars;
            if (bars && a->tps_max > mx) mx = a->tps_max;
            if (a->n_measured && a->cold_single && isfinite(a->tokens_per_s)) {
                ftr_buf_printf(&cold, "%d\t%.4f\t%s\n", sc->seqs[k], a->tokens_per_s, s->series[sc->series[row]].name);
                ncold++;
            }
        }
        ftr_buf_puts(&sp, "\n");
    }
    write_data(p, sname, &sp);
    write_data(p, cname, &cold);
    char t[512];
    snprintf(t, sizeof t, "Throughput: %s%s", sc->title, sc->emulated ? " (measured on the host)" : "");
    ftr_buf_puts(&g, "set title ");
    ftr_gp_quote(&g, t);
    ftr_buf_puts(&g, "\n");
    xaxis_seq(p, &g, sc);
    ftr_buf_puts(&g, "set ylabel 'tokens / s'\n");
    if (p->log_axes) {
        ftr_buf_printf(&g, "set logscale y 10\nset yrange [%g:%g]\n", minpos / 1.3, mx * 1.6);
        log_ytics(&g, minpos / 1.3, mx * 1.6);
    } else
        ftr_buf_printf(&g, "set yrange [0:%g]\n", mx * 1.12);
    ftr_buf_puts(&g, "set style line 94 lc rgb '#B00000' lw 1.2 pt 6 ps 2.2\nset errorbars small\nplot \\\n");
    for (int row = 0; row < sc->nseries; row++) {
        const ftr_series *x = &s->series[sc->series[row]];
        ftr_buf_printf(&g, "  'data/%s.tsv' using 1:%d with linespoints ls %d title ", name, row + 2, x->style);
        ftr_gp_quote(&g, x->name);
        ftr_buf_puts(&g, ", \\\n");
        int bars = 0;
        for (int k = 0; k < sc->nseq; k++) {
            const ftr_agg *a = ftr_scope_agg(sc, row, k);
            bars |= a->n_measured && a->n_steps >= 2 && isfinite(a->tps_min);
        }
        if (bars) /* gnuplot warns about a column with no point */
            ftr_buf_printf(&g, "  'data/%s.tsv' using 1:%d:%d:%d with yerrorbars ls %d ps 0 dt 1 notitle, \\\n", sname,
                           4 * row + 2, 4 * row + 3, 4 * row + 4, x->style);
    }
    if (ncold)
        ftr_buf_printf(&g,
                       "  'data/%s.tsv' using 1:2 with points ls 94 title 'one cold step (no warm-up): not a "
                       "timing', \\\n",
                       cname);
    ftr_buf_puts(&g, "  NaN notitle\n");
    ftr_plot_render(p, name, si, 0, g.s,
                    "Training throughput (tokens per second of the median step) against sequence length: %s%s%s%s.",
                    sc->title, nspread ? "; bars from the slowest to the fastest measured step" : "",
                    ncold ? "; circled: one cold step with no warm-up, not a timing" : "",
                    sc->emulated ? "; an emulated device's steps run on this host" : "");
    ftr_buf_free(&d);
    ftr_buf_free(&sp);
    ftr_buf_free(&cold);
    ftr_buf_free(&g);
}

/* ---- breakdown at one length ---------------------------------------------------------- */

/* The column of the scope's breakdown length (sc->at_seq), or -1. */
static int at_seq_column(const ftr_scope *sc)
{
    for (int q = 0; q < sc->nseq; q++)
        if (sc->seqs[q] == sc->at_seq) return q;
    return -1;
}

static void breakdown_plot(ftr_plotter *p, const ftr_set *s, const ftr_report *r, int si)
{
    const ftr_scope *sc = &r->scopes[si];
    int k = at_seq_column(sc);
    if (k < 0) return;
    char name[320];
    snprintf(name, sizeof name, "breakdown_%s_s%d", sc->id, sc->at_seq);
    ftr_buf d = { 0 }, g = { 0 };
    ftr_buf_printf(&d,
                   "# split of each method's peak at seq %d (MiB): the core's categories at the core's peak, "
                   "then other = peak RSS - core peak (runtime, allocator, libraries): %s\n# method",
                   sc->at_seq, sc->title);
    for (int c = 0; c < FTR_NCAT; c++) ftr_buf_printf(&d, "\t%s", ftr_category_name(c));
    ftr_buf_puts(&d, "\tother_rss\tpeak_rss\n");
    int rows = 0;
    double mx = 0;
    for (int row = 0; row < sc->nseries; row++) {
        const ftr_agg *a = ftr_scope_agg(sc, row, k);
        if (!a->rep) continue;
        const ftr_rec *x = a->rep;
        ftr_buf_printf(&d, "%s", s->series[sc->series[row]].name);
        double core = 0;
        for (int c = 0; c < FTR_NCAT; c++) {
            tsv_num(&d, isfinite(x->split_mib[c]) ? x->split_mib[c] : 0, "%.4f");
            core += isfinite(x->split_mib[c]) ? x->split_mib[c] : 0;
        }
        double other = isfinite(x->peak_mib) && x->peak_mib > core ? x->peak_mib - core : 0;
        tsv_num(&d, other, "%.4f");
        tsv_num(&d, x->peak_mib, "%.4f");
        ftr_buf_puts(&d, "\n");
        if (core + other > mx) mx = core + other;
        rows++;
    }
    if (!rows) {
        ftr_buf_free(&d);
        return;
    }
    write_data(p, name, &d);
    char t[512];
    snprintf(t, sizeof t, "Memory at the peak, seq %d: %s", sc->at_seq, sc->title);
    ftr_buf_puts(&g, "set title ");
    ftr_gp_quote(&g, t);
    ftr_buf_puts(&g, "\n");
    int show_budget = isfinite(sc->budget_mib) && sc->budget_mib <= 1.5 * mx;
    double top = show_budget && sc->budget_mib > mx ? sc->budget_mib : mx;
    ftr_buf_printf(&g, "set ylabel 'MiB'\nset yrange [0:%g]\nset xrange [-0.6:%g]\n", top * 1.1 + 1e-9, rows - 0.4);
    ftr_buf_puts(&g, "set style data histograms\nset style histogram rowstacked\nset boxwidth 0.62 relative\n"
                     "set grid noxtics ytics\nset xtics nomirror scale 0\n"
                     "set key outside right top vertical Left reverse invert noopaque nobox\n");
    if (rows > 8) ftr_buf_puts(&g, "set xtics rotate by -30\n");
    if (show_budget) {
        ftr_buf_printf(&g, "budget = %.3f\n", sc->budget_mib);
        ftr_buf_puts(&g, "set arrow 1 from graph 0, first budget to graph 1, first budget nohead ls 90 front\n");
        ftr_buf_puts(&g, "set label 1 sprintf('budget %.0f MiB', budget) at graph 0.98, first budget right offset "
                         "0,0.7 tc rgb '#B00000' front\n");
    }
    ftr_buf_puts(&g, "set style fill border rgb '#333333'\n");
    ftr_buf_printf(&g, "plot 'data/%s.tsv' using 2:xtic(1) title '%s' lw 0.5 lc rgb cat_col_1 fs @cat_fs_1, \\\n", name,
                   ftr_category_title(0));
    for (int c = 1; c < FTR_NCAT; c++)
        ftr_buf_printf(&g, "  '' using %d title '%s' lw 0.5 lc rgb cat_col_%d fs @cat_fs_%d, \\\n", c + 2,
                       ftr_category_title(c), c + 1, c + 1);
    ftr_buf_puts(&g, "  '' using 8 title 'other RSS' lw 0.5 lc rgb cat_col_7 fs @cat_fs_7\n");
    ftr_plot_render(p, name, si, 0, g.s,
                    "Each method's peak at %d tokens, split by category at the moment of the core's peak; the bar's "
                    "top is the peak RSS (\"other\": memory outside the core's categories): %s.",
                    sc->at_seq, sc->title);
    ftr_buf_free(&d);
    ftr_buf_free(&g);
}

/* ---- time breakdown at one length ---------------------------------------------------- */

/* Beside the memory breakdown: each method's step at the same length,
 * stacked by operation group (ops, docs/HARNESS.md), the bar's top the
 * mean measured step. */
static void ops_plot(ftr_plotter *p, const ftr_set *s, const ftr_report *r, int si)
{
    const ftr_scope *sc = &r->scopes[si];
    int k = at_seq_column(sc);
    if (k < 0) return;
    char name[320];
    snprintf(name, sizeof name, "ops_%s_s%d", sc->id, sc->at_seq);
    ftr_buf d = { 0 }, g = { 0 };
    ftr_buf_printf(&d,
                   "# time per measured step by operation group at seq %d (ms, means over the measured steps; "
                   "the groups add up to the step): %s\n# method",
                   sc->at_seq, sc->title);
    for (int c = 0; c < FTR_NOPG; c++) ftr_buf_printf(&d, "\t%s", ftr_op_group_title(c));
    ftr_buf_puts(&d, "\tstep\n");
    int rows = 0;
    double mx = 0;
    for (int row = 0; row < sc->nseries; row++) {
        const ftr_agg *a = ftr_scope_agg(sc, row, k);
        const ftr_rec *x = a->rep;
        if (!x || !x->has_ops) continue;
        ftr_buf_printf(&d, "%s", s->series[sc->series[row]].name);
        /* A bar stacks upwards: a negative "outside the core" (rounding) is drawn as 0. */
        for (int c = 0; c < FTR_NOPG; c++) tsv_num(&d, x->op_ms[c] > 0 ? x->op_ms[c] : 0, "%.6f");
        tsv_num(&d, x->op_step_ms, "%.6f");
        ftr_buf_puts(&d, "\n");
        if (x->op_step_ms > mx) mx = x->op_step_ms;
        rows++;
    }
    if (!rows) {
        ftr_buf_free(&d);
        return;
    }
    write_data(p, name, &d);
    char t[512];
    snprintf(t, sizeof t, "Time per step by operation, seq %d: %s", sc->at_seq, sc->title);
    ftr_buf_puts(&g, "set title ");
    ftr_gp_quote(&g, t);
    ftr_buf_puts(&g, "\n");
    ftr_buf_printf(&g, "set ylabel 'ms per step'\nset yrange [0:%g]\nset xrange [-0.6:%g]\n", mx * 1.1 + 1e-9,
                   rows - 0.4);
    ftr_buf_puts(&g, "set style data histograms\nset style histogram rowstacked\nset boxwidth 0.62 relative\n"
                     "set grid noxtics ytics\nset xtics nomirror scale 0\n"
                     "set key outside right top vertical Left reverse invert noopaque nobox\n");
    if (rows > 8) ftr_buf_puts(&g, "set xtics rotate by -30\n");
    ftr_buf_puts(&g, "set style fill border rgb '#333333'\n");
    ftr_buf_printf(&g, "plot 'data/%s.tsv' using 2:xtic(1) title '%s' lw 0.5 lc rgb op_col_1 fs @op_fs_1", name,
                   ftr_op_group_title(0));
    for (int c = 1; c < FTR_NOPG; c++)
        ftr_buf_printf(&g, ", \\\n  '' using %d title '%s' lw 0.5 lc rgb op_col_%d fs @op_fs_%d", c + 2,
                       ftr_op_group_title(c), c + 1, c + 1);
    ftr_buf_puts(&g, "\n");
    ftr_plot_render(p, name, si, 0, g.s,
                    "Each method's mean measured step at %d tokens, split by operation group (the record's ops: "
                    "linears = the base's GEMMs; outside the core = the method's own code between the core's calls); "
                    "the bar's top is the step: %s.",
                    sc->at_seq, sc->title);
    ftr_buf_free(&d);
    ftr_buf_free(&g);
}

/* ---- loss curves ---------------------------------------------------------------------- */

static void loss_plot(ftr_plotter *p, const ftr_set *s, const ftr_rec *const *recs, int n, const char *name, int scope,
                      const char *title, const char *caption)
{
    int maxsteps = 0;
    for (int i = 0; i < n; i++) {
        int m = (int)json_array_size(json_object_get(recs[i]->j, "loss_per_step"));
        maxsteps = m > maxsteps ? m : maxsteps;
    }
    if (maxsteps < 2 || n == 0) return; /* one step is a point, not a curve */
    ftr_buf d = { 0 }, g = { 0 };
    ftr_buf_printf(&d, "# loss per step (warm-up steps included): %s\n# step", title);
    for (int i = 0; i < n; i++) ftr_buf_printf(&d, "\t%s", s->series[recs[i]->series].name);
    ftr_buf_puts(&d, "\n");
    for (int st = 0; st < maxsteps; st++) {
        ftr_buf_printf(&d, "%d", st + 1);
        for (int i = 0; i < n; i++) {
            json_t *v = json_array_get(json_object_get(recs[i]->j, "loss_per_step"), (size_t)st);
            tsv_num(&d, json_is_number(v) ? json_number_value(v) : NAN, "%.6f");
        }
        ftr_buf_puts(&d, "\n");
    }
    write_data(p, name, &d);
    ftr_buf_puts(&g, "set title ");
    ftr_gp_quote(&g, title);
    ftr_buf_printf(&g,
                   "\nset xlabel 'step'\nset ylabel 'training loss'\n"
                   "set xrange [0.7:%g]\n",
                   maxsteps + 0.3);
    if (maxsteps <= 20) ftr_buf_puts(&g, "set xtics 1\n");
    ftr_buf_puts(&g, "plot \\\n");
    for (int i = 0; i < n; i++) {
        const ftr_series *x = &s->series[recs[i]->series];
        ftr_buf_printf(&g, "  'data/%s.tsv' using 1:%d with linespoints ls %d title ", name, i + 2, x->style);
        ftr_gp_quote(&g, x->name);
        ftr_buf_puts(&g, ", \\\n");
    }
    ftr_buf_puts(&g, "  NaN notitle\n");
    ftr_plot_render(p, name, scope, 0, g.s, "%s", caption);
    ftr_buf_free(&d);
    ftr_buf_free(&g);
}

static void scope_loss_plot(ftr_plotter *p, const ftr_set *s, const ftr_report *r, int si)
{
    const ftr_scope *sc = &r->scopes[si];
    const ftr_rec **v = calloc((size_t)sc->nseries + 1, sizeof *v);
    int n = 0;
    for (int k = 0; k < sc->nseq; k++)
        if (sc->seqs[k] == sc->at_seq)
            for (int row = 0; row < sc->nseries; row++)
                if (ftr_scope_agg(sc, row, k)->rep) v[n++] = ftr_scope_agg(sc, row, k)->rep;
    char name[320], title[512], cap[700];
    snprintf(name, sizeof name, "loss_%s_s%d", sc->id, sc->at_seq);
    snprintf(title, sizeof title, "Loss per step, seq %d: %s", sc->at_seq, sc->title);
    snprintf(cap, sizeof cap,
             "Training loss at each step (warm-up steps included) at %d tokens, one line per "
             "method: %s.",
             sc->at_seq, sc->title);
    loss_plot(p, s, v, n, name, si, title, cap);
    free(v);
}

/* ---- cross-scope: max context, accuracy -------------------------------------------------- */

static int fill_for(int style)
{
    int base = style % 100;
    return base <= 0 ? 0 : (base - 1) % 8;
}

static void maxctx_plot(ftr_plotter *p, const ftr_set *s, const ftr_report *r)
{
    /* One figure per model: clusters = devices, bars = methods. */
    for (int i = 0; i < r->nmax; i++) {
        const char *model = r->max[i].model;
        int first = 1;
        for (int j = 0; j < i; j++) first &= strcmp(r->max[j].model, model) != 0;
        if (!first) continue;
        int series[256], ns = 0;
        const ftr_maxctx *devs[64]; /* one cluster per device and budget */
        int nd = 0, anyfit = 0;
        for (int j = i; j < r->nmax; j++) {
            const ftr_maxctx *m = &r->max[j];
            if (strcmp(m->model, model) || m->fit_longest < 0) continue;
            anyfit = 1;
            int f = 0;
            for (int q = 0; q < ns; q++) f |= series[q] == m->series;
            if (!f && ns < 256) series[ns++] = m->series;
            f = 0;
            for (int q = 0; q < nd; q++)
                f |= !strcmp(devs[q]->device, m->device) && ftr_same_budget(devs[q]->budget_mib, m->budget_mib);
            if (!f && nd < 64) devs[nd++] = m;
        }
        if (!anyfit) continue;
        /* Series in display order. */
        for (int a = 1; a < ns; a++)
            for (int b = a; b > 0 && s->series[series[b - 1]].order > s->series[series[b]].order; b--) {
                int t = series[b];
                series[b] = series[b - 1];
                series[b - 1] = t;
            }
        char name[320], safe[200];
        ftr_safe_name(safe, sizeof safe, model);
        snprintf(name, sizeof name, "maxctx_%s", safe);
        ftr_buf d = { 0 }, g = { 0 };
        ftr_buf_printf(&d,
                       "# longest sequence that fits (ftbench fit), %s; 0 = nothing fits, '-' = not searched\n"
                       "# device, budget",
                       model);
        for (int q = 0; q < ns; q++) ftr_buf_printf(&d, "\t%s", s->series[series[q]].name);
        ftr_buf_puts(&d, "\n");
        double mx = 0;
        for (int dv = 0; dv < nd; dv++) {
            /* The cluster's label carries the budget the fit ran under. */
            if (isfinite(devs[dv]->budget_mib))
                ftr_buf_printf(&d, "%s, %.0f MiB", devs[dv]->device, devs[dv]->budget_mib);
            else
                ftr_buf_printf(&d, "%s, budget unknown", devs[dv]->device);
            for (int q = 0; q < ns; q++) {
                double v = NAN;
                for (int j = 0; j < r->nmax; j++) {
                    const ftr_maxctx *m = &r->max[j];
                    if (!strcmp(m->model, model) && !strcmp(m->device, devs[dv]->device) &&
                        ftr_same_budget(m->budget_mib, devs[dv]->budget_mib) && m->series == series[q] &&
                        m->fit_longest >= 0)
                        v = m->fit_longest;
                }
                tsv_num(&d, v, "%.0f");
                if (isfinite(v) && v > mx) mx = v;
            }
            ftr_buf_puts(&d, "\n");
        }
        write_data(p, name, &d);
        char t[400];
        snprintf(t, sizeof t, "Longest sequence that fits: %s", model);
        ftr_buf_puts(&g, "set title ");
        ftr_gp_quote(&g, t);
        ftr_buf_printf(&g,
                       "\nset ylabel 'tokens'\nset yrange [0:%g]\nset style data histograms\n"
                       "set style histogram clustered gap 1\nset boxwidth 0.9 relative\n"
                       "set grid noxtics ytics\nset xtics nomirror scale 0\n"
                       "set key outside right top vertical Left reverse noopaque nobox\n"
                       "set xrange [-0.6:%g]\n",
                       mx > 0 ? mx * 1.15 : 1, nd - 0.4);
        ftr_buf_puts(&g, "plot \\\n");
        for (int q = 0; q < ns; q++) {
            const ftr_series *x = &s->series[series[q]];
            int f = fill_for(x->style);
            char fs[32];
            if (f)
                snprintf(fs, sizeof fs, "pattern %d", f);
            else
                snprintf(fs, sizeof fs, "solid 0.9");
            ftr_buf_printf(&g, "  'data/%s.tsv' using %d%s ls %d dt 1 fs %s border lc rgb '#333333' title ", name,
                           q + 2, q == 0 ? ":xtic(1)" : "", x->style, fs);
            ftr_gp_quote(&g, x->name);
            ftr_buf_puts(&g, ", \\\n");
        }
        ftr_buf_puts(&g, "  NaN notitle\n");
        ftr_plot_render(p, name, -1, 0, g.s,
                        "Longest sequence length that fits each device's memory budget (from ftbench fit; each "
                        "cluster is one device under the budget its fit ran with), per method: %s.",
                        model);
        ftr_buf_free(&d);
        ftr_buf_free(&g);
    }
}

static void accuracy_plot(ftr_plotter *p, const ftr_set *s, const ftr_report *r)
{
    ftr_buf d = { 0 }, g = { 0 };
    ftr_buf_puts(&d, "# task accuracy against peak RSS, one point per training record\n"
                     "# peak_rss_mib\taccuracy_percent\tmethod\tdevice\tmodel\tseq\n");
    int n = 0;
    double mxp = 0;
    for (int i = 0; i < r->ntrain; i++) {
        const ftr_rec *x = r->train[i];
        if (!isfinite(x->accuracy) || !isfinite(x->peak_mib)) continue;
        ftr_buf_printf(&d, "%.4f\t%.4f\t%s\t%s\t%s\t%d\n", x->peak_mib, 100.0 * x->accuracy, s->series[x->series].name,
                       x->device, x->model, x->seq);
        mxp = x->peak_mib > mxp ? x->peak_mib : mxp;
        n++;
    }
    if (!n) {
        ftr_buf_free(&d);
        return;
    }
    write_data(p, "accuracy_vs_memory", &d);
    ftr_buf_printf(&g,
                   "set title 'Task accuracy against peak memory'\nset xlabel 'peak RSS (MiB)'\n"
                   "set ylabel 'accuracy (%%)'\nset xrange [0:%g]\nset offsets 0,0,graph 0.1,graph 0.1\n"
                   "",
                   mxp * 1.15);
    ftr_buf_puts(&g, "plot \\\n");
    /* One plot element per series, so each gets its style and key entry. */
    int *order = malloc(((size_t)s->nseries + 1) * sizeof *order);
    for (int k = 0; k < s->nseries; k++) order[k] = k;
    for (int a = 1; a < s->nseries; a++)
        for (int b = a; b > 0 && s->series[order[b - 1]].order > s->series[order[b]].order; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    for (int q = 0; q < s->nseries; q++) {
        int k = order[q];
        int has = 0;
        for (int i = 0; i < r->ntrain; i++)
            has |= r->train[i]->series == k && isfinite(r->train[i]->accuracy) && isfinite(r->train[i]->peak_mib);
        if (!has) continue;
        ftr_buf_puts(&g, "  'data/accuracy_vs_memory.tsv' using 1:(strcol(3) eq ");
        ftr_gp_quote(&g, s->series[k].name);
        ftr_buf_printf(&g, " ? $2 : NaN) with points ls %d ps 1.6 title ", s->series[k].style);
        ftr_gp_quote(&g, s->series[k].name);
        ftr_buf_puts(&g, ", \\\n");
    }
    ftr_buf_puts(&g, "  'data/accuracy_vs_memory.tsv' using 1:2:3 with labels offset 0,1 font ',9' notitle\n");
    free(order);
    ftr_plot_render(p, "accuracy_vs_memory", -1, 0, g.s,
                    "Task accuracy against peak RSS, one point per method and training run.");
    ftr_buf_free(&d);
    ftr_buf_free(&g);
}

/* ---- interactive timelines --------------------------------------------------------------- */

/* Each timeline drawn gets its page, with the other timelines of its scope
 * and length to compare with. */
static void timeline_pages(ftr_plotter *p)
{
    const ftr_rec **others = calloc((size_t)p->nplots + 1, sizeof *others);
    for (int i = 0; i < p->nplots; i++) {
        const ftr_rec *rec = p->plots[i].rec;
        if (!rec) continue;
        int n = 0;
        for (int k = 0; k < p->nplots; k++) {
            const ftr_rec *o = p->plots[k].rec;
            if (k != i && o && o->seq == rec->seq && o->batch == rec->batch && !strcmp(o->device, rec->device) &&
                !strcmp(o->model, rec->model))
                others[n++] = o;
        }
        char err[512];
        if (ftr_timeline_page(p, rec, others, n, p->plots[i].name, err, sizeof err) == 0)
            p->plots[i].page = 1;
        else
            fprintf(stderr, "ftbench report: interactive timeline of %s: %s\n", rec->cell, err);
    }
    free(others);
}

/* ---- everything ------------------------------------------------------------------------- */

static int cell_wanted(const ftr_rec *x, char *const *cells, int ncells);

void ftr_make_plots(ftr_plotter *p, const ftr_set *s, const ftr_report *r, char *const *cells, int ncells)
{
    for (int si = 0; si < r->nscopes; si++) {
        mem_plot(p, s, r, si);
        act_plot(p, s, r, si);
        breakdown_plot(p, s, r, si);
        ops_plot(p, s, r, si);
        throughput_plot(p, s, r, si);
        scope_loss_plot(p, s, r, si);
        if (ncells) continue;
        /* Default timelines: every method at the breakdown length. */
        const ftr_scope *sc = &r->scopes[si];
        for (int k = 0; k < sc->nseq; k++)
            if (sc->seqs[k] == sc->at_seq)
                for (int row = 0; row < sc->nseries; row++) {
                    const ftr_agg *a = ftr_scope_agg(sc, row, k);
                    char err[512];
                    if (a->rep && a->rep->timeline_file && ftr_timeline_plot(p, a->rep, si, err, sizeof err) != 0)
                        fprintf(stderr, "ftbench report: timeline of %s: %s\n", a->rep->cell, err);
                }
    }
    /* Timelines asked for by --cell: every record whose cell matches. */
    for (int c = 0; c < ncells; c++) {
        int hit = 0;
        for (int i = 0; i < s->n && !hit; i++) hit = cell_wanted(&s->r[i], &cells[c], 1);
        if (!hit) fprintf(stderr, "ftbench report: --cell %s: no record has such a cell\n", cells[c]);
    }
    for (int i = 0; ncells && i < s->n; i++) {
        const ftr_rec *x = &s->r[i];
        if (!cell_wanted(x, cells, ncells)) continue;
        int scope = -1;
        for (int k = 0; k < r->nscopes; k++)
            if (!strcmp(r->scopes[k].device, x->device) && !strcmp(r->scopes[k].model, x->model) &&
                r->scopes[k].batch == x->batch)
                scope = k;
        char err[512];
        if (ftr_timeline_plot(p, x, scope, err, sizeof err) != 0)
            fprintf(stderr, "ftbench report: timeline of %s: %s\n", x->cell, err);
    }
    timeline_pages(p);
    maxctx_plot(p, s, r);
    accuracy_plot(p, s, r);
    ftr_fidelity_plots(p, s);
    if (r->ntrain) {
        const ftr_rec **v = calloc((size_t)r->ntrain + 1, sizeof *v);
        int n = 0;
        for (int i = 0; i < r->ntrain; i++)
            if (json_array_size(json_object_get(r->train[i]->j, "loss_per_step"))) v[n++] = r->train[i];
        loss_plot(p, s, v, n, "loss_training", -1, "Training loss per step",
                  "Training loss at each step of the training runs, one line per method.");
        free(v);
    }
}

#include <fnmatch.h>

static int cell_wanted(const ftr_rec *x, char *const *cells, int ncells)
{
    for (int i = 0; i < ncells; i++)
        if (x->cell && (!strcmp(cells[i], x->cell) || fnmatch(cells[i], x->cell, 0) == 0)) return 1;
    return 0;
}

/* ---- PNG header -------------------------------------------------------------------------- */

int ftr_png_size(const char *path, int *w, int *h)
{
    unsigned char b[24];
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    static const unsigned char sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    if (n < 24 || memcmp(b, sig, 8) || memcmp(b + 12, "IHDR", 4)) return -1;
    *w = (int)((unsigned)b[16] << 24 | (unsigned)b[17] << 16 | (unsigned)b[18] << 8 | b[19]);
    *h = (int)((unsigned)b[20] << 24 | (unsigned)b[21] << 16 | (unsigned)b[22] << 8 | b[23]);
    return 0;
}
