/*
 * timeline.c — the allocation timeline of one cell, from the
 * <cell>.timeline.tsv the harness writes beside the records (one line per
 * core allocation or free and per RSS sample, each carrying the live bytes
 * of every category and the phase the core was in).
 *
 * Reading: ftr_timeline_read keeps every line, the phase names, and the
 * steps: a step is what lies between the harness's own phases (load, init,
 * harness between steps, end), so a method that names its phases freely is
 * still cut into steps.
 *
 * Decimation: a timeline holds up to millions of lines; a figure or a page
 * draws a few thousand.  ftr_timeline_decimate keeps, per time bucket, the
 * first and the last line (so each band rises where the bytes were
 * accounted), the line with the highest core total and the one with the
 * highest RSS; and, whatever the buckets, every line where the phase
 * changes and the line before it (phase boundaries exact) and the two
 * peaks of the window.  Peaks and boundaries survive by construction
 * (tests/test_report.c checks it).
 *
 * The figure: the measured steps (after the warm-up) fill the main panel,
 * its y axis starting at their low point; a narrow panel on the left shows
 * the whole cell, loading included, with the measured window shaded.  The
 * phase strip sits above the data with a gap, and the peak labels below
 * their marks, so neither covers the other.
 */
#include "input_file.h"
#include "report_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAIN_BUCKETS     1500
#define OVERVIEW_BUCKETS 300

unsigned char ftr_phase_class(const char *p)
{
    if (!strncmp(p, "fwd", 3) || !strncmp(p, "head", 4)) return 1;
    if (!strncmp(p, "bwd", 3)) return 2;
    if (!strncmp(p, "optim", 5)) return 3;
    return 4;
}

const char *const ftr_phase_class_names[5] = { "", "forward", "backward", "optimizer", "other" };

/* The harness's own phases: everything else belongs to a step. */
static int harness_phase(const char *p)
{
    return !strcmp(p, "load") || !strcmp(p, "init") || !strcmp(p, "harness") || !strcmp(p, "end") || !*p;
}

/* Splits line on tabs in place; returns the field count. */
static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    char *p = line;
    while (n < max) {
        f[n++] = p;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = 0;
        p = t + 1;
    }
    char *nl = strchr(f[n - 1], '\n');
    if (nl) *nl = 0;
    return n;
}

static int phase_index(ftr_timeline *tl, const char *name)
{
    /* Phases repeat in order: the last one looked up is the likeliest. */
    for (int i = tl->nnames - 1; i >= 0; i--)
        if (!strcmp(tl->names[i], name)) return i;
    tl->names = realloc(tl->names, (size_t)(tl->nnames + 1) * sizeof *tl->names);
    tl->names[tl->nnames] = strdup(name);
    return tl->nnames++;
}

static void find_steps(ftr_timeline *tl)
{
    int in = 0;
    for (int i = 0; i < tl->n; i++) {
        int own = harness_phase(tl->names[tl->rows[i].phase]);
        if (!own && !in) {
            tl->step_t0 = realloc(tl->step_t0, (size_t)(tl->nsteps + 1) * sizeof *tl->step_t0);
            tl->step_t1 = realloc(tl->step_t1, (size_t)(tl->nsteps + 1) * sizeof *tl->step_t1);
            tl->step_t0[tl->nsteps] = tl->rows[i].t;
            tl->step_t1[tl->nsteps] = tl->rows[tl->n - 1].t;
            tl->nsteps++;
            in = 1;
        } else if (own && in) {
            tl->step_t1[tl->nsteps - 1] = tl->rows[i].t;
            in = 0;
        }
    }
}

int ftr_timeline_read(const char *path, ftr_timeline *tl, char *err, size_t errlen)
{
    memset(tl, 0, sizeof *tl);
    FILE *f = ftb_input_fopen(path, err, errlen); /* regular files only: a FIFO would block */
    if (!f) return -1;
    int col_t = -1, col_phase = -1, col_rss = -1, col_cat[FTR_NCAT], col_live = -1;
    for (int c = 0; c < FTR_NCAT; c++) col_cat[c] = -1;
    char *line = NULL;
    size_t cap = 0;
    int alloc = 0, have_header = 0, lineno = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n') continue;
        char *fld[64];
        int nf = split_tabs(line, fld, 64);
        if (!have_header) {
            for (int i = 0; i < nf; i++) {
                if (!strcmp(fld[i], "t_sec"))
                    col_t = i;
                else if (!strcmp(fld[i], "phase"))
                    col_phase = i;
                else if (!strcmp(fld[i], "rss_bytes"))
                    col_rss = i;
                else if (!strcmp(fld[i], "live_total"))
                    col_live = i;
                for (int c = 0; c < FTR_NCAT; c++)
                    if (!strcmp(fld[i], ftr_category_name(c))) col_cat[c] = i;
            }
            have_header = 1;
            if (col_t < 0 || col_rss < 0) {
                snprintf(err, errlen, "%.400s: no t_sec/rss_bytes header", path);
                free(line);
                fclose(f);
                ftr_timeline_free(tl);
                return -1;
            }
            continue;
        }
        int need = col_t > col_rss ? col_t : col_rss;
        if (nf <= need) continue; /* a torn last line */
        char *end;
        double t = strtod(fld[col_t], &end);
        if (end == fld[col_t] || !isfinite(t)) { /* not a time: not a line to draw, and said so */
            if (!tl->ndropped) tl->first_dropped = lineno;
            tl->ndropped++;
            continue;
        }
        if (tl->n == alloc) {
            alloc = alloc ? alloc * 2 : 4096;
            tl->rows = realloc(tl->rows, (size_t)alloc * sizeof *tl->rows);
        }
        ftr_tl_row *r = &tl->rows[tl->n];
        r->t = t;
        double rss = strtod(fld[col_rss], NULL);
        r->rss = rss >= 0 && isfinite(rss) ? rss / 1048576.0 : NAN;
        r->live = 0;
        for (int c = 0; c < FTR_NCAT; c++) {
            double v = col_cat[c] >= 0 && col_cat[c] < nf ? strtod(fld[col_cat[c]], NULL) / 1048576.0 : 0;
            r->cat[c] = isfinite(v) ? v : 0;
            r->live += r->cat[c];
        }
        if (col_live >= 0 && col_live < nf) {
            double v = strtod(fld[col_live], NULL) / 1048576.0;
            if (isfinite(v)) r->live = v;
        }
        const char *ph = col_phase >= 0 && col_phase < nf ? fld[col_phase] : "";
        r->phase = phase_index(tl, ph);
        r->cls = ftr_phase_class(ph);
        tl->n++;
    }
    free(line);
    fclose(f);
    if (tl->n == 0) {
        snprintf(err, errlen, "%.400s: no timeline lines", path);
        ftr_timeline_free(tl);
        return -1;
    }
    find_steps(tl);
    return 0;
}

void ftr_timeline_free(ftr_timeline *tl)
{
    free(tl->rows);
    for (int i = 0; i < tl->nnames; i++) free(tl->names[i]);
    free(tl->names);
    free(tl->step_t0);
    free(tl->step_t1);
    memset(tl, 0, sizeof *tl);
}

void ftr_timeline_peaks(const ftr_timeline *tl, int lo, int hi, int *ipk_live, int *ipk_rss)
{
    *ipk_live = lo;
    *ipk_rss = -1;
    for (int i = lo; i < hi; i++) {
        if (tl->rows[i].live > tl->rows[*ipk_live].live) *ipk_live = i;
        if (isfinite(tl->rows[i].rss) && (*ipk_rss < 0 || tl->rows[i].rss > tl->rows[*ipk_rss].rss)) *ipk_rss = i;
    }
}

/* First row at or after t (rows are in time order). */
static int row_at(const ftr_timeline *tl, double t)
{
    int lo = 0, hi = tl->n;
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (tl->rows[m].t < t)
            lo = m + 1;
        else
            hi = m;
    }
    return lo;
}

int ftr_timeline_decimate(const ftr_timeline *tl, double t_lo, double t_hi, int buckets, int *keep)
{
    int a = row_at(tl, t_lo), b = row_at(tl, t_hi);
    while (b < tl->n && tl->rows[b].t <= t_hi) b++;
    if (a >= b) return 0;
    if (buckets < 1) buckets = 1;
    unsigned char *mark = calloc((size_t)(b - a), 1);
    double dt = (t_hi - t_lo) / buckets;
    for (int i = a; i < b;) {
        /* Clamped before the cast: a row's time outside [t_lo, t_hi] (an
         * unsorted or hand-edited timeline) would overflow an int. */
        double q = dt > 0 ? (tl->rows[i].t - t_lo) / dt : 0;
        int bucket = q > 0 ? (q < buckets - 1 ? (int)q : buckets - 1) : 0;
        double end = dt > 0 ? t_lo + (bucket + 1) * dt : INFINITY;
        int best = i, brss = -1, j = i;
        while (j < b && (j == i || tl->rows[j].t < end)) {
            if (tl->rows[j].live > tl->rows[best].live) best = j;
            if (isfinite(tl->rows[j].rss) && (brss < 0 || tl->rows[j].rss > tl->rows[brss].rss)) brss = j;
            j++;
        }
        mark[i - a] = mark[j - 1 - a] = mark[best - a] = 1;
        if (brss >= 0) mark[brss - a] = 1;
        i = j;
    }
    for (int i = a + 1; i < b; i++)
        if (tl->rows[i].phase != tl->rows[i - 1].phase) mark[i - a] = mark[i - 1 - a] = 1;
    int pl, pr;
    ftr_timeline_peaks(tl, a, b, &pl, &pr);
    mark[pl - a] = 1;
    if (pr >= 0) mark[pr - a] = 1;
    int n = 0;
    for (int i = a; i < b; i++)
        if (mark[i - a]) keep[n++] = i;
    free(mark);
    return n;
}

void ftr_timeline_window(const ftr_timeline *tl, int warmup, double *lo, double *hi, int *first_step)
{
    *first_step = warmup > 0 && warmup < tl->nsteps ? warmup : 0;
    if (!tl->nsteps) {
        *lo = tl->rows[0].t;
        *hi = tl->rows[tl->n - 1].t;
        *first_step = -1;
        return;
    }
    *lo = tl->step_t0[*first_step];
    *hi = tl->step_t1[tl->nsteps - 1];
    if (!(*hi > *lo)) {
        *lo = tl->rows[0].t;
        *hi = tl->rows[tl->n - 1].t;
        *first_step = -1;
    }
}

/* ---- the figure -------------------------------------------------------------------- */

static void data_rows(ftr_buf *d, const ftr_timeline *tl, const int *keep, int nk)
{
    for (int q = 0; q < nk; q++) {
        const ftr_tl_row *r = &tl->rows[keep[q]];
        ftr_buf_printf(d, "%.6f", r->t);
        for (int c = 0; c < FTR_NCAT; c++) ftr_buf_printf(d, "\t%.5f", r->cat[c]);
        if (isfinite(r->rss))
            ftr_buf_printf(d, "\t%.5f", r->rss);
        else
            ftr_buf_puts(d, "\t-");
        ftr_buf_printf(d, "\t%.5f\t%d\n", r->live, r->cls);
    }
}

/* Phase-class intervals within [lo, hi], at full resolution. */
static void phase_rows(ftr_buf *ph, const ftr_timeline *tl, double lo, double hi)
{
    int n = tl->n;
    for (int a = 0; a < n;) {
        int b = a;
        while (b < n && tl->rows[b].cls == tl->rows[a].cls) b++;
        double ts = tl->rows[a].t, te = b < n ? tl->rows[b].t : tl->rows[n - 1].t;
        if (te >= lo && ts <= hi)
            ftr_buf_printf(ph, "%.6f\t%.6f\t%d\t%s\n", ts < lo ? lo : ts, te > hi ? hi : te, tl->rows[a].cls,
                           ftr_phase_class_names[tl->rows[a].cls]);
        a = b;
    }
}

static const char *const cum[FTR_NCAT + 1] = {
    "(0)", "($2)", "($2+$3)", "($2+$3+$4)", "($2+$3+$4+$5)", "($2+$3+$4+$5+$6)", "($2+$3+$4+$5+$6+$7)"
};

static void bands(ftr_buf *g, const char *file, int titled)
{
    for (int c = 0; c < FTR_NCAT; c++)
        ftr_buf_printf(g, "  %s using 1:%s:%s with filledcurves lc rgb cat_col_%d fs @cat_fs_%d %s%s%s, \\\n", file,
                       cum[c], cum[c + 1], c + 1, c + 1, titled ? "title '" : "notitle",
                       titled ? ftr_category_title(c) : "", titled ? "'" : "");
    ftr_buf_printf(g, "  %s using 1:8 with steps ls 92 %s, \\\n", file, titled ? "title 'RSS (sampled)'" : "notitle");
}

static void strip(ftr_buf *g, const char *file, int titled)
{
    for (int k = 1; k <= 4; k++)
        ftr_buf_printf(g,
                       "  %s using (($1+$2)/2):($3==%d ? (strip_lo+strip_hi)/2 : NaN):(($2-$1)/2):"
                       "((strip_hi-strip_lo)/2) with boxxyerror fs solid 1.0 noborder lc rgb ph_col_%d %s%s%s%s\n",
                       file, k, k, titled ? "title '" : "notitle", titled ? ftr_phase_class_names[k] : "",
                       titled ? "'" : "", k < 4 ? ", \\" : "");
}

/* A round tic step giving about five tics over span. */
static double tic_step(double span)
{
    if (!(span > 0)) return 1;
    double step = pow(10, floor(log10(span / 5)));
    if (span / step > 20)
        step *= 5;
    else if (span / step > 10)
        step *= 2;
    return step;
}

int ftr_timeline_plot(ftr_plotter *p, const ftr_rec *rec, int scope, char *err, size_t errlen)
{
    if (!rec->timeline_file) {
        snprintf(err, errlen, "the record has no timeline_file (run without --no-timeline)");
        return -1;
    }
    char path[8192];
    if (ftr_timeline_path(rec, path, sizeof path, err, errlen) != 0) return -1;
    ftr_timeline tl;
    if (ftr_timeline_read(path, &tl, err, errlen) != 0) return -1;
    if (tl.ndropped)
        fprintf(stderr, "ftbench report: %s:%d: t_sec is not a finite number; %d such line%s left out of the plot\n",
                path, tl.first_dropped, tl.ndropped, tl.ndropped == 1 ? "" : "s");

    /* Name: device + cell, and the run when a name is taken already. */
    char name[300];
    ftr_timeline_name(p, rec, name, sizeof name);
    for (int i = 0; i < p->nplots; i++)
        if (!strcmp(p->plots[i].name, name)) {
            ftr_timeline_free(&tl);
            return 0; /* the same record asked twice */
        }

    double w0, w1;
    int first;
    ftr_timeline_window(&tl, rec->warmup_steps, &w0, &w1, &first);
    double t0 = tl.rows[0].t, t1 = tl.rows[tl.n - 1].t;
    int *keep = malloc(((size_t)tl.n + 1) * sizeof *keep);

    /* Main panel: the measured steps. */
    int nk = ftr_timeline_decimate(&tl, w0, w1, MAIN_BUCKETS, keep);
    ftr_buf d = { 0 }, o = { 0 }, ph = { 0 }, g = { 0 };
    ftr_buf_printf(&d,
                   "# allocation timeline of %s (run %s, %s), %s: %d of %d lines kept (per bucket of %.6f s the "
                   "first, last, highest core total and highest RSS; every phase boundary; the peaks); MiB\n# t_sec",
                   rec->cell, rec->run_id ? rec->run_id : "?", rec->device,
                   first >= 0 ? "the measured steps" : "the whole cell", nk, tl.n, (w1 - w0) / MAIN_BUCKETS);
    for (int c = 0; c < FTR_NCAT; c++) ftr_buf_printf(&d, "\t%s", ftr_category_name(c));
    ftr_buf_puts(&d, "\trss\tlive_total\tphase_class\n");
    data_rows(&d, &tl, keep, nk);
    double lo = INFINITY, hi = 0;
    for (int q = 0; q < nk; q++) {
        const ftr_tl_row *r = &tl.rows[keep[q]];
        lo = fmin(lo, r->live);
        hi = fmax(hi, r->live);
        if (isfinite(r->rss)) {
            lo = fmin(lo, r->rss);
            hi = fmax(hi, r->rss);
        }
    }
    /* Overview: the whole cell. */
    int nko = ftr_timeline_decimate(&tl, t0, t1, OVERVIEW_BUCKETS, keep);
    ftr_buf_printf(&o, "# the whole cell (loading included), %d of %d lines kept; MiB\n# t_sec", nko, tl.n);
    for (int c = 0; c < FTR_NCAT; c++) ftr_buf_printf(&o, "\t%s", ftr_category_name(c));
    ftr_buf_puts(&o, "\trss\tlive_total\tphase_class\n");
    data_rows(&o, &tl, keep, nko);
    double ohi = 0;
    for (int q = 0; q < nko; q++)
        ohi = fmax(ohi, fmax(tl.rows[keep[q]].live, isfinite(tl.rows[keep[q]].rss) ? tl.rows[keep[q]].rss : 0));
    ftr_buf_puts(&ph, "# phase intervals: t_start, t_end, class (1 forward, 2 backward, 3 optimizer, 4 other), name\n");
    phase_rows(&ph, &tl, t0, t1);

    char dname[8192], pname[340], oname[340];
    snprintf(pname, sizeof pname, "%s_phases", name);
    snprintf(oname, sizeof oname, "%s_whole", name);
    snprintf(dname, sizeof dname, "%s/data/%s.tsv", p->out, name);
    int bad = ftr_buf_write(&d, dname);
    snprintf(dname, sizeof dname, "%s/data/%s.tsv", p->out, pname);
    bad |= ftr_buf_write(&ph, dname);
    snprintf(dname, sizeof dname, "%s/data/%s.tsv", p->out, oname);
    bad |= ftr_buf_write(&o, dname);
    if (bad) {
        snprintf(err, errlen, "cannot write %.400s", dname);
        free(keep);
        ftr_timeline_free(&tl);
        ftr_buf_free(&d);
        ftr_buf_free(&o);
        ftr_buf_free(&ph);
        return -1;
    }

    /* The main panel's y axis: from the steps' low point (a margin below),
     * the phase strip above the data with a gap, labels below their marks. */
    if (!(hi > lo)) hi = lo + 1;
    double span = hi - lo, ylo = fmax(0, lo - 0.08 * span);
    span = hi - ylo;
    int ipk_live, ipk_rss;
    ftr_timeline_peaks(&tl, row_at(&tl, w0), row_at(&tl, w1 + 1e-9), &ipk_live, &ipk_rss);
    char title[600];
    snprintf(title, sizeof title, "%s on %s%s: allocation timeline%s", rec->cell, rec->device,
             rec->emulated ? " (emulated)" : "", first >= 0 ? (first > 0 ? ", measured steps" : ", steps") : "");
    ftr_buf_puts(&g, "set multiplot title ");
    ftr_gp_quote(&g, title);
    ftr_buf_printf(&g,
                   "\nf = 'data/%s.tsv'\nfo = 'data/%s.tsv'\nph = 'data/%s.tsv'\n"
                   "set style fill solid 0.9 noborder\nset style textbox opaque noborder margins 0.5,0.5\n"
                   "set tmargin at screen 0.88\nset bmargin at screen 0.14\n",
                   name, oname, pname);
    /* Left: the whole cell, compressed. */
    double ostep = tic_step(ohi);
    ftr_buf_printf(&g,
                   "# left: the whole cell (loading included), the measured window shaded\n"
                   "set lmargin at screen 0.05\nset rmargin at screen 0.2\nset key off\n"
                   "set xlabel 'whole cell (s)'\nset ylabel ''\nset xrange [%.6f:%.6f]\n"
                   "ymax = %.5f\nstrip_lo = ymax * 1.08; strip_hi = ymax * 1.15\nset yrange [0:ymax * 1.18]\n"
                   "set ytics 0, %g, ymax\nset xtics %g\n"
                   "set object 1 rect from %.6f, graph 0 to %.6f, graph 1 fc rgb '#000000' fs transparent solid 0.08 "
                   "noborder behind\n",
                   t0, t1, ohi > 0 ? ohi : 1, ostep, tic_step(t1 - t0) * 2, w0, w1);
    ftr_buf_puts(&g, "plot \\\n");
    bands(&g, "fo", 0);
    strip(&g, "ph", 0);
    /* Right: the measured steps. */
    ftr_buf_printf(&g,
                   "unset object 1\n# right: the measured steps, y from their low point\n"
                   "set lmargin at screen 0.29\nset rmargin at screen 0.84\n"
                   "set key at screen 0.995, screen 0.86 right top vertical Left reverse noopaque nobox\n"
                   "set xlabel 'time since the cell started (s)'\nset ylabel 'MiB'\nset xrange [%.6f:%.6f]\n"
                   "ylo = %.5f; ymax = %.5f\nstrip_lo = ymax + 0.09 * (ymax - ylo); strip_hi = ymax + 0.15 * (ymax - "
                   "ylo)\n"
                   "set yrange [ylo:ymax + 0.18 * (ymax - ylo)]\nset ytics 0, %g, ymax\nset xtics autofreq\n"
                   "set label 2 'phase' at graph 0, first (strip_lo + strip_hi) / 2 right offset -0.6,0\n",
                   w0, w1, ylo, hi, tic_step(span));
    if (ylo > 0) ftr_buf_printf(&g, "set ylabel 'MiB (axis from %.0f)'\n", ylo);
    /* Steps: their boundaries as thin lines (step numbers from 1, warm-up counted). */
    for (int k = first >= 0 ? first : tl.nsteps; k < tl.nsteps; k++)
        ftr_buf_printf(&g,
                       "set arrow %d from %.6f, graph 0 to %.6f, graph 1 nohead lc rgb '#666666' dt (2,3) lw 0.8 "
                       "back\nset label %d 'step %d' at %.6f, graph 0.03 left offset 0.3,0 font ',10' tc rgb "
                       "'#444444' boxed front\n",
                       10 + k, tl.step_t0[k], tl.step_t0[k], 100 + k, k + 1, tl.step_t0[k]);
    /* Peak labels below their marks, on the side away from the edge. */
    double mid = w0 + 0.6 * (w1 - w0);
    int rss_left = ipk_rss >= 0 && tl.rows[ipk_rss].t > mid;
    if (ipk_rss >= 0)
        ftr_buf_printf(&g,
                       "set label 3 sprintf('RSS peak %%.1f MiB', %.5f) at %.6f, %.5f %s point ls 93 "
                       "offset %s,-1.1 boxed front\n",
                       tl.rows[ipk_rss].rss, tl.rows[ipk_rss].t, tl.rows[ipk_rss].rss, rss_left ? "right" : "left",
                       rss_left ? "-0.8" : "0.8");
    int left = tl.rows[ipk_live].t > mid;
    int stack = ipk_rss >= 0 && left == rss_left; /* same side: one under the other */
    ftr_buf_printf(&g,
                   "set label 4 sprintf('core peak %%.1f MiB', %.5f) at %.6f, %.5f %s point ls 93 "
                   "offset %s,%s boxed front\n",
                   tl.rows[ipk_live].live, tl.rows[ipk_live].t, tl.rows[ipk_live].live, left ? "right" : "left",
                   left ? "-0.8" : "0.8", stack ? "-2.4" : "-1.1");
    if (isfinite(rec->peak_mib)) ftr_buf_printf(&g, "# the record's peak RSS (VmHWM): %.1f MiB\n", rec->peak_mib);
    ftr_buf_puts(&g, "plot \\\n");
    bands(&g, "f", 1);
    strip(&g, "ph", 1);
    ftr_buf_puts(&g, "unset multiplot\n");
    char cap[700];
    snprintf(cap, sizeof cap,
             "Allocation timeline of %s on %s: %s on the right (y axis from their low point), the whole cell with "
             "loading on the left (measured window shaded); the core's categories stacked, the sampled RSS on top, "
             "phases in the strip; the core's and the RSS peaks marked.",
             rec->cell, rec->device,
             first > 0    ? "the measured steps after the warm-up"
             : first == 0 ? "the steps"
                          : "the whole cell");
    int idx = ftr_plot_render(p, name, scope, 1, g.s, "%s", cap);
    p->plots[idx].rec = rec; /* its interactive page comes once every timeline is known */
    free(keep);
    ftr_timeline_free(&tl);
    ftr_buf_free(&d);
    ftr_buf_free(&o);
    ftr_buf_free(&ph);
    ftr_buf_free(&g);
    return 0;
}

/* The harness names the timeline by its bare file name, beside the records.
 * A record from elsewhere may name anything: a path out of the directory,
 * /dev/zero (read until memory runs out), a FIFO (blocks forever).  Only a
 * regular file in the record's directory is read. */
int ftr_timeline_path(const ftr_rec *rec, char *path, size_t n, char *err, size_t errlen)
{
    const char *tf = rec->timeline_file;
    if (!tf || !*tf || strchr(tf, '/') || !strcmp(tf, ".") || !strcmp(tf, "..")) {
        snprintf(err, errlen, "timeline_file '%.200s' is not a file name beside results.jsonl", tf ? tf : "");
        return -1;
    }
    snprintf(path, n, "%s/%s", rec->dir, tf);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%.400s: not a regular file", path);
        return -1;
    }
    return 0;
}

void ftr_timeline_name(const ftr_plotter *p, const ftr_rec *rec, char *name, size_t n)
{
    char raw[600];
    snprintf(raw, sizeof raw, "timeline_%s_%s", rec->device, rec->cell);
    ftr_safe_name(name, n, raw);
    /* Another record of the same cell (another run) drawn already: add the run. */
    for (int i = 0; i < p->nplots; i++)
        if (!strcmp(p->plots[i].name, name)) {
            char withrun[700];
            snprintf(withrun, sizeof withrun, "timeline_%s_%s_%s", rec->device, rec->cell,
                     rec->run_id ? rec->run_id : "x");
            ftr_safe_name(name, n, withrun);
            break;
        }
}
