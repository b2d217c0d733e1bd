/*
 * timeline.c — the allocation timeline of one cell, from the
 * <cell>.timeline.tsv the harness writes beside results.jsonl (one line per
 * core allocation or free and per RSS sample, each carrying the live bytes
 * of every category).  A timeline holds tens of thousands of lines, so the
 * plotted data is reduced to at most MAX_POINTS buckets in time, each
 * keeping the line where the core's live total was highest and the highest
 * RSS sample: peaks survive the reduction.  Phases are classed as forward
 * (fwd ..., the fused LM head + loss), backward (bwd ...), optimizer
 * (optim ...) or other (load, init, harness) and drawn as a strip on top.
 */
#include "report_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_POINTS 1500

typedef struct {
    double t, rss;        /* rss in MiB, NaN before the first sample */
    double cat[FTR_NCAT]; /* MiB                                       */
    double live;          /* MiB                                       */
    unsigned char phase;  /* 1 forward, 2 backward, 3 optimizer, 4 other */
} row;

static unsigned char phase_class(const char *p)
{
    if (!strncmp(p, "fwd", 3) || !strncmp(p, "head", 4)) return 1;
    if (!strncmp(p, "bwd", 3)) return 2;
    if (!strncmp(p, "optim", 5)) return 3;
    return 4;
}

static const char *const phase_names[5] = { "", "forward", "backward", "optimizer", "other" };

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

static int read_timeline(const char *path, row **out, int *nout, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %.400s", path);
        return -1;
    }
    int col_t = -1, col_kind = -1, col_phase = -1, col_rss = -1, col_cat[FTR_NCAT], col_live = -1;
    for (int c = 0; c < FTR_NCAT; c++) col_cat[c] = -1;
    char *line = NULL;
    size_t cap = 0;
    int n = 0, alloc = 0, have_header = 0;
    row *rows = NULL;
    while (getline(&line, &cap, f) >= 0) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char *fld[64];
        int nf = split_tabs(line, fld, 64);
        if (!have_header) {
            for (int i = 0; i < nf; i++) {
                if (!strcmp(fld[i], "t_sec"))
                    col_t = i;
                else if (!strcmp(fld[i], "kind"))
                    col_kind = i;
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
                return -1;
            }
            continue;
        }
        int need = col_t > col_rss ? col_t : col_rss;
        if (nf <= need) continue; /* a torn last line */
        if (n == alloc) {
            alloc = alloc ? alloc * 2 : 4096;
            rows = realloc(rows, (size_t)alloc * sizeof *rows);
        }
        row *r = &rows[n];
        r->t = strtod(fld[col_t], NULL);
        double rss = strtod(fld[col_rss], NULL);
        r->rss = rss >= 0 ? rss / 1048576.0 : NAN;
        r->live = 0;
        for (int c = 0; c < FTR_NCAT; c++) {
            r->cat[c] = col_cat[c] >= 0 && col_cat[c] < nf ? strtod(fld[col_cat[c]], NULL) / 1048576.0 : 0;
            r->live += r->cat[c];
        }
        if (col_live >= 0 && col_live < nf) r->live = strtod(fld[col_live], NULL) / 1048576.0;
        r->phase = col_phase >= 0 && col_phase < nf ? phase_class(fld[col_phase]) : 4;
        (void)col_kind;
        n++;
    }
    free(line);
    fclose(f);
    if (n == 0) {
        free(rows);
        snprintf(err, errlen, "%.400s: no timeline lines", path);
        return -1;
    }
    *out = rows;
    *nout = n;
    return 0;
}

int ftr_timeline_plot(ftr_plotter *p, const ftr_rec *rec, int scope, char *err, size_t errlen)
{
    if (!rec->timeline_file) {
        snprintf(err, errlen, "the record has no timeline_file (run without --no-timeline)");
        return -1;
    }
    /* The harness names the timeline by its bare file name, beside
     * results.jsonl.  A record from elsewhere may name anything: a path out
     * of the directory, /dev/zero (read until memory runs out), a FIFO
     * (blocks forever).  Only a regular file in the record's directory is
     * read. */
    const char *tf = rec->timeline_file;
    if (!*tf || strchr(tf, '/') || !strcmp(tf, ".") || !strcmp(tf, "..")) {
        snprintf(err, errlen, "timeline_file '%.200s' is not a file name beside results.jsonl", tf);
        return -1;
    }
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", rec->dir, tf);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%.400s: not a regular file", path);
        return -1;
    }
    row *rows;
    int n;
    if (read_timeline(path, &rows, &n, err, errlen) != 0) return -1;

    /* Name: device + cell, and the run when a name is taken already. */
    char raw[600], name[300];
    snprintf(raw, sizeof raw, "timeline_%s_%s", rec->device, rec->cell);
    ftr_safe_name(name, sizeof name, raw);
    for (int i = 0; i < p->nplots; i++)
        if (!strcmp(p->plots[i].name, name)) {
            snprintf(raw, sizeof raw, "timeline_%s_%s_%s", rec->device, rec->cell, rec->run_id ? rec->run_id : "x");
            ftr_safe_name(name, sizeof name, raw);
            break;
        }
    for (int i = 0; i < p->nplots; i++)
        if (!strcmp(p->plots[i].name, name)) {
            free(rows);
            return 0; /* the same record asked twice */
        }

    /* Peaks over the full resolution. */
    int ipk_live = 0, ipk_rss = -1;
    for (int i = 0; i < n; i++) {
        if (rows[i].live > rows[ipk_live].live) ipk_live = i;
        if (isfinite(rows[i].rss) && (ipk_rss < 0 || rows[i].rss > rows[ipk_rss].rss)) ipk_rss = i;
    }
    double t0 = rows[0].t, t1 = rows[n - 1].t;
    double dt = (t1 - t0) / MAX_POINTS;

    ftr_buf d = { 0 }, ph = { 0 }, g = { 0 };
    ftr_buf_printf(&d,
                   "# allocation timeline of %s (run %s, %s), reduced from %d lines to buckets of %.6f s "
                   "(each keeps its highest core total and highest RSS); MiB\n# t_sec",
                   rec->cell, rec->run_id ? rec->run_id : "?", rec->device, n, dt);
    for (int c = 0; c < FTR_NCAT; c++) ftr_buf_printf(&d, "\t%s", ftr_category_name(c));
    ftr_buf_puts(&d, "\trss\tlive_total\tphase\n");
    int i = 0;
    double ymax = 0;
    while (i < n) {
        double end = dt > 0 ? rows[i].t + dt : rows[i].t;
        int best = i;
        double rssmax = rows[i].rss;
        int j = i;
        while (j < n && (j == i || rows[j].t < end)) {
            if (rows[j].live > rows[best].live) best = j;
            if (isfinite(rows[j].rss) && (!isfinite(rssmax) || rows[j].rss > rssmax)) rssmax = rows[j].rss;
            j++;
        }
        /* The peak rows themselves, exactly. */
        if (ipk_live >= i && ipk_live < j) best = ipk_live;
        const row *b = &rows[best];
        ftr_buf_printf(&d, "%.6f", b->t);
        for (int c = 0; c < FTR_NCAT; c++) ftr_buf_printf(&d, "\t%.5f", b->cat[c]);
        if (isfinite(rssmax))
            ftr_buf_printf(&d, "\t%.5f", rssmax);
        else
            ftr_buf_puts(&d, "\t-");
        ftr_buf_printf(&d, "\t%.5f\t%d\n", b->live, b->phase);
        if (b->live > ymax) ymax = b->live;
        if (isfinite(rssmax) && rssmax > ymax) ymax = rssmax;
        i = j;
    }
    /* Phase intervals at full resolution. */
    ftr_buf_puts(&ph, "# phase intervals: t_start, t_end, class (1 forward, 2 backward, 3 optimizer, 4 other), name\n");
    int nint = 0;
    for (int a = 0; a < n;) {
        int bnd = a;
        while (bnd < n && rows[bnd].phase == rows[a].phase) bnd++;
        double te = bnd < n ? rows[bnd].t : rows[n - 1].t;
        ftr_buf_printf(&ph, "%.6f\t%.6f\t%d\t%s\n", rows[a].t, te, rows[a].phase, phase_names[rows[a].phase]);
        nint++;
        a = bnd;
    }
    char dname[8192], pname[340];
    snprintf(dname, sizeof dname, "%s/data/%s.tsv", p->out, name);
    snprintf(pname, sizeof pname, "%s_phases", name);
    if (ftr_buf_write(&d, dname) != 0) {
        snprintf(err, errlen, "cannot write %.400s", dname);
        free(rows);
        ftr_buf_free(&d);
        ftr_buf_free(&ph);
        return -1;
    }
    snprintf(dname, sizeof dname, "%s/data/%s.tsv", p->out, pname);
    ftr_buf_write(&ph, dname);

    if (ymax <= 0) ymax = 1;
    double peak_rss_rec = rec->peak_mib;
    char title[600];
    snprintf(title, sizeof title, "%s on %s%s: allocation timeline", rec->cell, rec->device,
             rec->emulated ? " (emulated)" : "");
    ftr_buf_puts(&g, "set title ");
    ftr_gp_quote(&g, title);
    ftr_buf_puts(&g, "\n");
    ftr_buf_printf(&g,
                   "set xlabel 'time since the cell started (s)'\nset ylabel 'MiB'\n"
                   "ymax = %.5f\nstrip_lo = ymax * 1.045; strip_hi = ymax * 1.095\n"
                   "set yrange [0:ymax * 1.13]\nset xrange [%.6f:%.6f]\n"
                   "set key outside right top vertical Left reverse noopaque nobox\n"
                   "set style fill solid 0.9 noborder\n",
                   ymax, t0, t1);
    /* Tics only below the strip: a round step to ymax. */
    double step = pow(10, floor(log10(ymax / 5)));
    if (ymax / step > 20)
        step *= 5;
    else if (ymax / step > 10)
        step *= 2;
    ftr_buf_printf(&g, "set ytics 0, %g, ymax\n", step);
    ftr_buf_puts(&g, "set label 2 'phase' at graph 0, first (strip_lo + strip_hi) / 2 right offset -0.6,0\n"
                     "set style textbox opaque noborder margins 0.5,0.5\n");
    /* Peak labels: to the right of the mark in the left part, to its left
     * in the right part, on an opaque box. */
    double mid = t0 + 0.6 * (t1 - t0);
    if (ipk_rss >= 0) {
        int left = rows[ipk_rss].t > mid;
        ftr_buf_printf(&g,
                       "set label 3 sprintf('RSS peak %%.1f MiB', %.5f) at %.6f, %.5f %s point ls 93 "
                       "offset %s,0.9 boxed front\n",
                       rows[ipk_rss].rss, rows[ipk_rss].t, rows[ipk_rss].rss, left ? "right" : "left",
                       left ? "-0.8" : "0.8");
    }
    int left = rows[ipk_live].t > mid;
    ftr_buf_printf(&g,
                   "set label 4 sprintf('core peak %%.1f MiB', %.5f) at %.6f, %.5f %s point ls 93 "
                   "offset %s,-1.1 boxed front\n",
                   rows[ipk_live].live, rows[ipk_live].t, rows[ipk_live].live, left ? "right" : "left",
                   left ? "-0.8" : "0.8");
    if (isfinite(peak_rss_rec)) ftr_buf_printf(&g, "# the record's peak RSS (VmHWM): %.1f MiB\n", peak_rss_rec);
    ftr_buf_printf(&g, "f = 'data/%s.tsv'\nph = 'data/%s.tsv'\n", name, pname);
    ftr_buf_puts(&g, "plot \\\n");
    const char *cum[FTR_NCAT + 1] = {
        "(0)", "($2)", "($2+$3)", "($2+$3+$4)", "($2+$3+$4+$5)", "($2+$3+$4+$5+$6)", "($2+$3+$4+$5+$6+$7)"
    };
    for (int c = 0; c < FTR_NCAT; c++)
        ftr_buf_printf(&g, "  f using 1:%s:%s with filledcurves lc rgb cat_col_%d fs @cat_fs_%d title '%s', \\\n",
                       cum[c], cum[c + 1], c + 1, c + 1, ftr_category_title(c));
    ftr_buf_puts(&g, "  f using 1:8 with steps ls 92 title 'RSS (sampled)', \\\n");
    for (int k = 1; k <= 4; k++)
        ftr_buf_printf(&g,
                       "  ph using (($1+$2)/2):($3==%d ? (strip_lo+strip_hi)/2 : NaN):(($2-$1)/2):"
                       "((strip_hi-strip_lo)/2) with boxxyerror fs solid 1.0 noborder lc rgb ph_col_%d "
                       "title '%s'%s\n",
                       k, k, phase_names[k], k < 4 ? ", \\" : "");
    char cap[512];
    snprintf(cap, sizeof cap,
             "Allocation timeline of %s on %s: the core's categories stacked, the sampled RSS on top, "
             "phases in the strip; the core's and the RSS peaks marked.",
             rec->cell, rec->device);
    ftr_plot_render(p, name, scope, 1, g.s, "%s", cap);
    (void)nint;
    free(rows);
    ftr_buf_free(&d);
    ftr_buf_free(&ph);
    ftr_buf_free(&g);
    return 0;
}
