/*
 * report.c — `ftbench report`: options, then report.md, report.html (one
 * self-contained page, plots embedded as data: URIs) and table.tex, around
 * the plots of plot.c and the tables of tables.c.  See docs/REPORTS.md.
 */
#include "report.h"
#include "../../reports/report_internal.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_OK    0
#define EXIT_FAIL  1
#define EXIT_USAGE 2

static void usage(FILE *f)
{
    fprintf(f, "usage: ftbench report RESULTS_DIR [RESULTS_DIR...] [options]\n"
               "Tables and plots for papers from the records of run/sweep/fit (results.jsonl files,\n"
               "found up to 5 directory levels under each RESULTS_DIR; several directories are merged\n"
               "into one set of figures: one memory-scaling figure per device x model x batch).\n\n"
               "options:\n"
               "  --out DIR           where to write (default: RESULTS_DIR/report for one directory,\n"
               "                      ./report for several)\n"
               "  --formats LIST      plot formats among png,svg,pdf (default: all three)\n"
               "  --log               logarithmic memory axes in the scaling plots (base 10)\n"
               "  --linear-x          lengths on a linear axis (default: base 2, the measured lengths as tics)\n"
               "  --cell KEY          allocation timeline of this cell (a cell key or a glob such as\n"
               "                      'lora.*.s1024.b1'; repeatable); default: every method at the\n"
               "                      breakdown length\n"
               "  --seq N             the length of the breakdown bars, the loss curves and the default\n"
               "                      timelines (default: the longest length most methods measured)\n"
               "  --help              this text\n\n"
               "writes: report.md, report.html (self-contained), table.tex (booktabs), plots/*.{png,svg,pdf},\n"
               "data/*.tsv, gnuplot/*.gp (+ style.gp) and replot.sh.  Without gnuplot (or with\n"
               "FTBENCH_GNUPLOT=/nonexistent) the tables, data and scripts are still written.\n");
}

/* ---- base64 ------------------------------------------------------------------------ */

static void base64(ftr_buf *b, const unsigned char *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[5] = { 0 };
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        ftr_buf_puts(b, q);
    }
}

static int file_exists_nonempty(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

/* ---- shared pieces ------------------------------------------------------------------- */

typedef struct {
    const ftr_set *s;
    const ftr_report *r;
    const ftr_tables *t;
    const ftr_plotter *p;
    const char *out;
} ctx;

static int plot_has(const ftr_plotter *p, const ftr_plot *pl, int f)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/plots/%s.%s", p->out, pl->name, ftr_formats[f]);
    return p->want[f] && file_exists_nonempty(path);
}

static void time_range(const ftr_set *s, char *lo, char *hi, size_t n)
{
    lo[0] = hi[0] = 0;
    for (int i = 0; i < s->n; i++) {
        const char *ts = json_string_value(json_object_get(s->r[i].j, "timestamp_utc"));
        if (!ts) continue;
        if (!lo[0] || strcmp(ts, lo) < 0) snprintf(lo, n, "%s", ts);
        if (!hi[0] || strcmp(ts, hi) > 0) snprintf(hi, n, "%s", ts);
    }
}

static void git_revs(const ftr_set *s, ftr_buf *b)
{
    const char *seen[32];
    int n = 0;
    for (int i = 0; i < s->n + s->nfid && n < 32; i++) {
        json_t *j = i < s->n ? s->r[i].j : s->fid[i - s->n].j;
        const char *g = json_string_value(json_object_get(j, "git_rev"));
        if (!g) continue;
        int f = 0;
        for (int k = 0; k < n; k++) f |= !strcmp(seen[k], g);
        if (!f) {
            seen[n++] = g;
            ftr_buf_printf(b, "%s%s", n > 1 ? ", " : "", g);
        }
    }
    if (!n) ftr_buf_puts(b, "unknown");
}

static int records_of_source(const ftr_set *s, const char *src)
{
    int n = 0;
    for (int i = 0; i < s->n; i++) n += s->r[i].source == src;
    return n;
}

/* "12 records (sweep default, run default-0123, rpi5-8gb, qwen2.5-0.5b; 3 fit
 * probes)" or "6 fidelity records (smollm2-135m)": what one file brought. */
static void source_summary(const ftr_set *s, const char *src, ftr_buf *b)
{
    int n = records_of_source(s, src), nfit = 0, ntrain = 0, nfid = 0;
    const char *vals[4][8];
    int nv[4] = { 0 };
    for (int i = 0; i < s->n; i++) {
        const ftr_rec *r = &s->r[i];
        if (r->source != src) continue;
        nfit += r->fit;
        ntrain += r->train;
        const char *v[4] = { json_string_value(json_object_get(r->j, "sweep")), r->run_id, r->device, r->model };
        for (int k = 0; k < 4; k++) {
            if (!v[k]) continue;
            int seen = 0;
            for (int q = 0; q < nv[k]; q++) seen |= !strcmp(vals[k][q], v[k]);
            if (!seen && nv[k] < 8) vals[k][nv[k]++] = v[k];
        }
    }
    for (int i = 0; i < s->nfid; i++) {
        if (s->fid[i].source != src) continue;
        nfid++;
        int seen = 0;
        for (int q = 0; q < nv[3]; q++) seen |= !strcmp(vals[3][q], s->fid[i].model);
        if (!seen && nv[3] < 8) vals[3][nv[3]++] = s->fid[i].model;
    }
    if (n || !nfid) ftr_buf_printf(b, "%d record%s", n, n == 1 ? "" : "s");
    if (nfid) ftr_buf_printf(b, "%s%d fidelity record%s", n ? ", " : "", nfid, nfid == 1 ? "" : "s");
    static const char *const what[4] = { "sweep ", "run ", "", "" };
    int any = 0;
    for (int k = 0; k < 4; k++)
        for (int q = 0; q < nv[k]; q++) {
            ftr_buf_printf(b, "%s%s%s", any ? ", " : " (", what[k], vals[k][q]);
            any = 1;
        }
    if (nfit) ftr_buf_printf(b, "%s%d fit probe%s", any ? "; " : " (", nfit, nfit == 1 ? "" : "s");
    if (ntrain) ftr_buf_printf(b, "%s%d training record%s", any || nfit ? "; " : " (", ntrain, ntrain == 1 ? "" : "s");
    if (any || nfit || ntrain) ftr_buf_puts(b, ")");
}

/* Hardware counters of a scope's records: read, or unavailable and why
 * (hw_counters.reason, distinct reasons listed).  Empty when no record says. */
static void counters_note(const ftr_set *s, const ftr_scope *sc, ftr_buf *b)
{
    int n = 0, unavailable = 0;
    const char *why[4];
    int nwhy = 0, more = 0;
    for (int i = 0; i < s->n; i++) {
        const ftr_rec *r = &s->r[i];
        if (r->fit || r->train || r->hwc < 0 || r->batch != sc->batch || strcmp(r->device, sc->device) ||
            strcmp(r->model, sc->model))
            continue;
        n++;
        if (r->hwc) continue;
        unavailable++;
        const char *w = r->hwc_reason ? r->hwc_reason : "no reason recorded";
        int seen = 0;
        for (int k = 0; k < nwhy; k++) seen |= !strcmp(why[k], w);
        if (!seen && nwhy < 4)
            why[nwhy++] = w;
        else if (!seen)
            more = 1;
    }
    if (!n) return;
    if (!unavailable) {
        ftr_buf_printf(b, "Hardware counters: read in %s %d record%s (per phase in each record's hw_counters).",
                       n == 1 ? "the" : "all", n, n == 1 ? "" : "s");
        return;
    }
    if (unavailable == n)
        ftr_buf_printf(b,
                       n == 1 ? "Hardware counters: unavailable in the one record: "
                              : "Hardware counters: unavailable in all %d records: ",
                       n);
    else
        ftr_buf_printf(b, "Hardware counters: read in %d of %d records, unavailable in %d: ", n - unavailable, n,
                       unavailable);
    for (int k = 0; k < nwhy; k++) ftr_buf_printf(b, "%s%s", k ? "; " : "", why[k]);
    ftr_buf_printf(b, "%s.", more ? "; and other reasons" : "");
}

static int count_fit(const ftr_set *s)
{
    int n = 0;
    for (int i = 0; i < s->n; i++) n += s->r[i].fit;
    return n;
}

/* ---- Markdown ------------------------------------------------------------------------ */

static void md_figure(const ctx *c, const ftr_plot *pl, ftr_buf *b)
{
    if (plot_has(c->p, pl, 0)) ftr_buf_printf(b, "![%s](plots/%s.png)\n\n", pl->name, pl->name);
    ftr_buf_printf(b, "*%s*", pl->caption);
    int any = 0;
    for (int f = 0; f < 3; f++)
        if (plot_has(c->p, pl, f)) {
            ftr_buf_printf(b, "%s[%s](plots/%s.%s)", any ? " · " : " — ", ftr_formats[f], pl->name, ftr_formats[f]);
            any = 1;
        }
    if (!any) ftr_buf_printf(b, " — not drawn (%s)", pl->problem[0] ? pl->problem : "no format requested");
    ftr_buf_printf(b, " · [data](data/%s.tsv) · [script](gnuplot/%s.gp)", pl->name, pl->name);
    if (pl->page) ftr_buf_printf(b, " · [interactive](timelines/%s.html)", pl->name);
    ftr_buf_puts(b, "\n\n");
}

static void header_md(const ctx *c, ftr_buf *b)
{
    const ftr_set *s = c->s;
    char lo[64], hi[64];
    time_range(s, lo, hi, sizeof lo);
    ftr_buf_puts(b, "# ftbench report\n\n");
    ftr_buf_printf(b, "%s%d records", "", s->n);
    if (s->nfid) ftr_buf_printf(b, " and %d fidelity records", s->nfid);
    ftr_buf_printf(b, " from %d file%s", s->nsources, s->nsources == 1 ? "" : "s");
    if (lo[0]) ftr_buf_printf(b, ", measured %s to %s", lo, hi);
    ftr_buf_puts(b, ", ftbench revision ");
    git_revs(s, b);
    ftr_buf_puts(b, ".\n\n");
    ftr_buf_puts(b, "Sources (`ftbench report");
    for (int i = 0; i < s->ngiven; i++) ftr_buf_printf(b, " %s", s->given[i]);
    ftr_buf_puts(b, "`):\n\n");
    for (int i = 0; i < s->nsources; i++) {
        ftr_buf_printf(b, "- `%s`: ", s->sources[i]);
        source_summary(s, s->sources[i], b);
        ftr_buf_puts(b, "\n");
    }
    if (s->nskipped) {
        ftr_buf_printf(b, "\n%d line%s skipped:\n\n", s->nskipped, s->nskipped == 1 ? "" : "s");
        for (int i = 0; i < s->nskipped; i++) ftr_buf_printf(b, "- `%s`\n", s->skipped[i]);
    }
    ftr_buf_puts(b, "\nFigures: `plots/` (png, svg, pdf), their data in `data/`, their gnuplot scripts in "
                    "`gnuplot/`; restyle with `gnuplot/style.gp` and `./replot.sh` (docs/REPORTS.md). "
                    "Memory is in MiB (2^20 bytes).\n\n");
}

static void write_md(const ctx *c, ftr_buf *b)
{
    header_md(c, b);
    for (int si = 0; si < c->r->nscopes; si++) {
        const ftr_scope *sc = &c->r->scopes[si];
        ftr_buf_printf(b, "## %s\n\n", sc->title);
        if (isfinite(sc->budget_mib)) ftr_buf_printf(b, "Memory budget of %s: %.0f MiB. ", sc->device, sc->budget_mib);
        ftr_buf_printf(b, "Breakdown, loss curves and timelines at %d tokens.", sc->at_seq);
        ftr_buf hw = { 0 };
        counters_note(c->s, sc, &hw);
        if (hw.s) ftr_buf_printf(b, " %s", hw.s);
        ftr_buf_free(&hw);
        ftr_buf_puts(b, "\n\n");
        for (int i = 0; i < c->p->nplots; i++)
            if (c->p->plots[i].scope == si) md_figure(c, &c->p->plots[i], b);
        for (int i = 0; i < c->t->n; i++)
            if (c->t->scope[i] == si) ftr_table_markdown(c->t->t[i], b);
    }
    ftr_buf_puts(b, "## Across devices and models\n\n");
    for (int i = 0; i < c->t->n; i++)
        if (c->t->scope[i] < 0) ftr_table_markdown(c->t->t[i], b);
    if (!c->r->nmax || !count_fit(c->s))
        ftr_buf_puts(b, "No `ftbench fit` records: the longest context that fits comes from the swept lengths only "
                        "(run `ftbench fit --device D --method M` for the exact limit).\n\n");
    if (!c->r->ntrain)
        ftr_buf_puts(b, "No training records (task accuracy): the accuracy-against-memory plot and the quality "
                        "table are left out. The fields they read are listed in docs/REPORTS.md.\n\n");
    if (!c->s->nfid)
        ftr_buf_puts(b, "No `ftbench fidelity` records (fidelity.jsonl): no gradient fidelity table or plot.\n\n");
    for (int i = 0; i < c->p->nplots; i++)
        if (c->p->plots[i].scope < 0) md_figure(c, &c->p->plots[i], b);
}

/* ---- HTML ---------------------------------------------------------------------------- */

static void html_figure(const ctx *c, const ftr_plot *pl, ftr_buf *b)
{
    ftr_buf_printf(b, "<figure id=\"fig-%s\" class=\"%s\">\n", pl->name, pl->wide ? "wide" : "std");
    /* SVG unless it is much bigger than the PNG (a timeline's thousands of
     * points): the page stays light enough to open and mail. */
    int emb = plot_has(c->p, pl, 1) ? 1 : plot_has(c->p, pl, 0) ? 0 : -1;
    if (emb == 1 && plot_has(c->p, pl, 0)) {
        char sv[8192], pn[8192];
        struct stat svg_st, png_st;
        snprintf(sv, sizeof sv, "%s/plots/%s.svg", c->out, pl->name);
        snprintf(pn, sizeof pn, "%s/plots/%s.png", c->out, pl->name);
        if (stat(sv, &svg_st) == 0 && stat(pn, &png_st) == 0 && svg_st.st_size > 2 * png_st.st_size) emb = 0;
    }
    if (emb >= 0) {
        char path[8192];
        snprintf(path, sizeof path, "%s/plots/%s.%s", c->out, pl->name, ftr_formats[emb]);
        size_t len = 0;
        char err[256];
        char *data = ftb_read_file(path, &len, err, sizeof err);
        if (data) {
            ftr_buf_printf(b, "<img alt=\"%s\" src=\"data:%s;base64,", pl->name,
                           emb == 1 ? "image/svg+xml" : "image/png");
            base64(b, (const unsigned char *)data, len);
            ftr_buf_puts(b, "\">\n");
            free(data);
        }
    } else {
        ftr_buf_printf(b, "<div class=\"missing\">plot %s not drawn: ", pl->name);
        ftr_html_escape(b, pl->problem[0] ? pl->problem : "no format requested");
        ftr_buf_puts(b, "</div>\n");
    }
    ftr_buf_puts(b, "<figcaption>");
    ftr_html_escape(b, pl->caption);
    ftr_buf_puts(b, " <span class=\"files\">");
    for (int f = 0; f < 3; f++)
        if (plot_has(c->p, pl, f))
            ftr_buf_printf(b, "<a href=\"plots/%s.%s\">%s</a> ", pl->name, ftr_formats[f], ftr_formats[f]);
    ftr_buf_printf(b, "<a href=\"data/%s.tsv\">data</a> <a href=\"gnuplot/%s.gp\">script</a>", pl->name, pl->name);
    if (pl->page) ftr_buf_printf(b, " <a href=\"timelines/%s.html\">interactive</a>", pl->name);
    ftr_buf_puts(b, "</span>");
    ftr_buf_puts(b, "</figcaption>\n</figure>\n");
}

static void write_html(const ctx *c, ftr_buf *b)
{
    const ftr_set *s = c->s;
    ftr_buf_puts(
        b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<title>ftbench report</title>\n<style>\n"
           "body{font-family:Helvetica,Arial,sans-serif;max-width:1500px;margin:2em auto;padding:0 1em;color:#222}\n"
           "h1,h2,h3{font-weight:600}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\n"
           "figure{margin:1em 0;display:inline-block;vertical-align:top}figure.std img{width:640px;max-width:100%}\n"
           "figure.wide{display:block}figure.wide img{width:100%;max-width:1440px}\n"
           "figcaption{font-size:.85em;color:#444;max-width:640px}figure.wide figcaption{max-width:none}\n"
           ".files a{margin-right:.4em}\n"
           "table{border-collapse:collapse;margin:1em 0 .3em;font-size:.9em}\n"
           "caption{text-align:left;font-weight:600;padding-bottom:.3em}\n"
           "th,td{padding:.2em .7em;border-bottom:1px solid #e5e5e5}thead th{border-bottom:1.5px solid #333}\n"
           "th.span{border-bottom:1px solid #999;text-align:center}td.num,th.num{text-align:right;"
           "font-variant-numeric:tabular-nums}\n"
           "td.over{color:#b00000;font-style:italic}td.fail{color:#b00000;font-weight:600}\n"
           "tr.rule td{border-top:1.5px solid #999}\n"
           "p.note{font-size:.85em;color:#555;margin-top:0}div.missing{padding:2em;border:1px dashed #999;color:#777}\n"
           "code{background:#f4f4f4;padding:0 .2em}\n"
           "</style>\n</head>\n<body>\n<h1>ftbench report</h1>\n");
    char lo[64], hi[64];
    time_range(s, lo, hi, sizeof lo);
    ftr_buf_printf(b, "%s%d records", "<p>", s->n);
    if (s->nfid) ftr_buf_printf(b, " and %d fidelity records", s->nfid);
    ftr_buf_printf(b, " from %d file%s", s->nsources, s->nsources == 1 ? "" : "s");
    if (lo[0]) ftr_buf_printf(b, ", measured %s to %s", lo, hi);
    ftr_buf_puts(b, ", ftbench revision ");
    ftr_buf gr = { 0 };
    git_revs(s, &gr);
    ftr_html_escape(b, gr.s);
    ftr_buf_free(&gr);
    ftr_buf_puts(b, ".</p>\n");
    ftr_buf_puts(b, "<p>Sources (<code>ftbench report");
    for (int i = 0; i < s->ngiven; i++) {
        ftr_buf_puts(b, " ");
        ftr_html_escape(b, s->given[i]);
    }
    ftr_buf_puts(b, "</code>):</p>\n<ul>\n");
    for (int i = 0; i < s->nsources; i++) {
        ftr_buf_puts(b, "<li><code>");
        ftr_html_escape(b, s->sources[i]);
        ftr_buf_puts(b, "</code>: ");
        ftr_buf sum = { 0 };
        source_summary(s, s->sources[i], &sum);
        ftr_html_escape(b, sum.s);
        ftr_buf_free(&sum);
        ftr_buf_puts(b, "</li>\n");
    }
    ftr_buf_puts(b, "</ul>\n");
    if (s->nskipped) {
        ftr_buf_printf(b, "<p>%d line%s skipped:</p>\n<ul>\n", s->nskipped, s->nskipped == 1 ? "" : "s");
        for (int i = 0; i < s->nskipped; i++) {
            ftr_buf_puts(b, "<li><code>");
            ftr_html_escape(b, s->skipped[i]);
            ftr_buf_puts(b, "</code></li>\n");
        }
        ftr_buf_puts(b, "</ul>\n");
    }
    /* Contents. */
    ftr_buf_puts(b, "<nav>\n<ul>\n");
    for (int si = 0; si < c->r->nscopes; si++) {
        ftr_buf_printf(b, "<li><a href=\"#scope-%s\">", c->r->scopes[si].id);
        ftr_html_escape(b, c->r->scopes[si].title);
        ftr_buf_puts(b, "</a></li>\n");
    }
    ftr_buf_puts(b, "<li><a href=\"#across\">Across devices and models</a></li>\n</ul>\n</nav>\n");
    for (int si = 0; si < c->r->nscopes; si++) {
        const ftr_scope *sc = &c->r->scopes[si];
        ftr_buf_printf(b, "<section id=\"scope-%s\">\n<h2>", sc->id);
        ftr_html_escape(b, sc->title);
        ftr_buf_puts(b, "</h2>\n<p>");
        if (isfinite(sc->budget_mib)) {
            ftr_buf_puts(b, "Memory budget of ");
            ftr_html_escape(b, sc->device);
            ftr_buf_printf(b, ": %.0f MiB. ", sc->budget_mib);
        }
        ftr_buf_printf(b, "Breakdown, loss curves and timelines at %d tokens.", sc->at_seq);
        ftr_buf hw = { 0 };
        counters_note(c->s, sc, &hw);
        if (hw.s) {
            ftr_buf_puts(b, " ");
            ftr_html_escape(b, hw.s);
        }
        ftr_buf_free(&hw);
        ftr_buf_puts(b, "</p>\n");
        for (int i = 0; i < c->p->nplots; i++)
            if (c->p->plots[i].scope == si) html_figure(c, &c->p->plots[i], b);
        for (int i = 0; i < c->t->n; i++)
            if (c->t->scope[i] == si) ftr_table_html(c->t->t[i], b);
        ftr_buf_puts(b, "</section>\n");
    }
    ftr_buf_puts(b, "<section id=\"across\">\n<h2>Across devices and models</h2>\n");
    for (int i = 0; i < c->t->n; i++)
        if (c->t->scope[i] < 0) ftr_table_html(c->t->t[i], b);
    if (!c->r->nmax || !count_fit(c->s))
        ftr_buf_puts(b, "<p>No <code>ftbench fit</code> records: the longest context that fits comes from the swept "
                        "lengths only.</p>\n");
    if (!c->r->ntrain)
        ftr_buf_puts(b, "<p>No training records (task accuracy): the accuracy-against-memory plot and the quality "
                        "table are left out (fields: docs/REPORTS.md).</p>\n");
    if (!c->s->nfid)
        ftr_buf_puts(b, "<p>No <code>ftbench fidelity</code> records (fidelity.jsonl): no gradient fidelity table or "
                        "plot.</p>\n");
    for (int i = 0; i < c->p->nplots; i++)
        if (c->p->plots[i].scope < 0) html_figure(c, &c->p->plots[i], b);
    ftr_buf_puts(b, "</section>\n</body>\n</html>\n");
}

/* ---- LaTeX --------------------------------------------------------------------------- */

static void write_tex(const ctx *c, ftr_buf *b)
{
    ftr_buf_puts(b, "% ftbench report: tables for a paper.  Needs \\usepackage{booktabs}.\n"
                    "% Over-budget cells are italic with an asterisk; failed cells in small caps.\n\n");
    for (int i = 0; i < c->t->n; i++) ftr_table_latex(c->t->t[i], b);
}

/* ---- replot.sh ------------------------------------------------------------------------- */

static void write_replot(const ftr_plotter *p, const char *path)
{
    ftr_buf b = { 0 };
    ftr_buf_puts(&b, "#!/bin/sh\n"
                     "# Re-renders every figure of this report from data/ and gnuplot/ (after editing\n"
                     "# gnuplot/style.gp or a script).  FORMATS=\"pdf\" ./replot.sh for one format;\n"
                     "# GNUPLOT=/path/to/gnuplot to choose the executable.\n"
                     "set -e\ncd \"$(dirname \"$0\")\"\nmkdir -p plots\n");
    ftr_buf_puts(&b, "FORMATS=${FORMATS:-\"");
    int any = 0;
    for (int f = 0; f < 3; f++)
        if (p->want[f]) {
            ftr_buf_printf(&b, "%s%s", any ? " " : "", ftr_formats[f]);
            any = 1;
        }
    ftr_buf_printf(&b,
                   "\"}\nGNUPLOT=${GNUPLOT:-gnuplot}\n"
                   "for f in gnuplot/*.gp; do\n"
                   "    [ \"$f\" = gnuplot/style.gp ] && continue\n"
                   "    for fmt in $FORMATS; do\n"
                   "        if [ \"$fmt\" = pdf ] && ! \"$GNUPLOT\" -e 'set terminal pdfcairo' >/dev/null 2>&1; then\n"
                   "            # no pdfcairo: EPS, then ps2pdf (ghostscript)\n"
                   "            \"$GNUPLOT\" -e \"fmt='eps'\" \"$f\"\n"
                   "            n=$(basename \"$f\" .gp)\n"
                   "            (cd plots && ps2pdf -dEPSCrop \"$n.eps\" \"$n.pdf\" && rm -f \"$n.eps\")\n"
                   "        else\n"
                   "            \"$GNUPLOT\" -e \"fmt='$fmt'\" \"$f\"\n"
                   "        fi\n"
                   "    done\n"
                   "done\n");
    ftr_buf_write(&b, path);
    /* Executable, through a descriptor: a link swapped in after the write
     * is not followed. */
    int xfd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (xfd >= 0) {
        if (fchmod(xfd, 0755) != 0) { /* replot.sh stays runnable with sh */
        }
        close(xfd);
    }
    ftr_buf_free(&b);
}

/* ---- the command ----------------------------------------------------------------------- */

static int parse_formats(const char *s, int want[3], char *err, size_t n)
{
    want[0] = want[1] = want[2] = 0;
    char *copy = strdup(s), *save = NULL;
    int any = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        t = ftb_trim(t);
        int f = -1;
        for (int k = 0; k < 3; k++)
            if (!strcmp(t, ftr_formats[k])) f = k;
        if (f < 0) {
            snprintf(err, n, "--formats: unknown format '%.40s' (png, svg, pdf)", t);
            free(copy);
            return -1;
        }
        want[f] = 1;
        any = 1;
    }
    free(copy);
    if (!any) {
        snprintf(err, n, "--formats: empty list (png, svg, pdf)");
        return -1;
    }
    return 0;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "ftbench report: %s\n", msg);
    return EXIT_USAGE;
}

int ftb_cmd_report(int argc, char **argv)
{
    const char *out_opt = NULL;
    int want[3] = { 1, 1, 1 }, log_axes = 0, linear_x = 0, at_seq = 0;
    char **dirs = calloc((size_t)argc + 1, sizeof *dirs);
    char **cells = calloc((size_t)argc + 1, sizeof *cells);
    int ndirs = 0, ncells = 0, rc = EXIT_USAGE;
    char err[1024];
    ftr_set set;
    memset(&set, 0, sizeof set);
    ftr_report rep;
    memset(&rep, 0, sizeof rep);
    ftr_tables tabs;
    memset(&tabs, 0, sizeof tabs);
    ftr_plotter plt;
    memset(&plt, 0, sizeof plt);
    char out[PATH_MAX];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int takes = !strcmp(a, "--out") || !strcmp(a, "--formats") || !strcmp(a, "--cell") || !strcmp(a, "--seq");
        if (takes) {
            if (i + 1 >= argc) {
                snprintf(err, sizeof err, "%s needs a value", a);
                rc = usage_error(err);
                goto done;
            }
            val = argv[++i];
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            rc = EXIT_OK;
            goto done;
        } else if (!strcmp(a, "--out")) {
            out_opt = val;
        } else if (!strcmp(a, "--formats")) {
            if (parse_formats(val, want, err, sizeof err) != 0) {
                rc = usage_error(err);
                goto done;
            }
        } else if (!strcmp(a, "--log")) {
            log_axes = 1;
        } else if (!strcmp(a, "--linear-x")) {
            linear_x = 1;
        } else if (!strcmp(a, "--cell")) {
            cells[ncells++] = (char *)val;
        } else if (!strcmp(a, "--seq")) {
            long v;
            if (ftb_parse_long(val, 1, 1 << 24, &v) != 0) {
                snprintf(err, sizeof err, "--seq: '%.40s' is not a positive integer", val);
                rc = usage_error(err);
                goto done;
            }
            at_seq = (int)v;
        } else if (a[0] == '-' && a[1]) {
            snprintf(err, sizeof err, "unknown option '%.100s' (ftbench report --help)", a);
            rc = usage_error(err);
            goto done;
        } else {
            dirs[ndirs++] = (char *)a;
        }
    }
    if (!ndirs) {
        rc = usage_error("give at least one results directory (ftbench report --help)");
        goto done;
    }
    for (int i = 0; i < ndirs; i++) {
        if (ftr_load(&set, dirs[i], stderr, err, sizeof err) < 0) {
            rc = usage_error(err);
            goto done;
        }
    }
    if (set.n == 0 && set.nfid == 0) {
        fprintf(stderr, "ftbench report: no records in %s%s\n", dirs[0], ndirs > 1 ? " and the others" : "");
        rc = EXIT_FAIL;
        goto done;
    }
    ftr_finish(&set);
    ftr_aggregate(&set, at_seq, &rep);
    ftr_build_tables(&set, &rep, &tabs);

    if (out_opt)
        snprintf(out, sizeof out, "%s", out_opt);
    else if (ndirs == 1 && ftb_is_dir(dirs[0]))
        snprintf(out, sizeof out, "%.4000s/report", dirs[0]);
    else
        snprintf(out, sizeof out, "report");
    static const char *const sub[] = { "", "/data", "/gnuplot", "/plots", "/timelines" };
    for (int i = 0; i < 5; i++) {
        char d[PATH_MAX + 16];
        snprintf(d, sizeof d, "%s%s", out, sub[i]);
        if (ftb_mkdirs(d, err, sizeof err) != 0) {
            fprintf(stderr, "ftbench report: %s\n", err);
            rc = EXIT_FAIL;
            goto done;
        }
    }
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/gnuplot.log", out);
    unlink(path);

    /* Plots. */
    ftr_plotter_init(&plt, out, want, log_axes);
    plt.linear_x = linear_x;
    ftr_buf style = { 0 };
    ftr_style_file(&style, &set, plt.have[0] && strstr(plt.fmt_note[0], "libgd") != NULL);
    snprintf(path, sizeof path, "%s/gnuplot/style.gp", out);
    ftr_buf_write(&style, path);
    ftr_buf_free(&style);
    ftr_make_plots(&plt, &set, &rep, cells, ncells);
    snprintf(path, sizeof path, "%s/replot.sh", out);
    write_replot(&plt, path);

    /* Documents. */
    ctx c = { &set, &rep, &tabs, &plt, out };
    ftr_buf md = { 0 }, html = { 0 }, tex = { 0 };
    write_md(&c, &md);
    write_html(&c, &html);
    write_tex(&c, &tex);
    int bad = 0;
    snprintf(path, sizeof path, "%s/report.md", out);
    bad |= ftr_buf_write(&md, path);
    snprintf(path, sizeof path, "%s/report.html", out);
    bad |= ftr_buf_write(&html, path);
    snprintf(path, sizeof path, "%s/table.tex", out);
    bad |= ftr_buf_write(&tex, path);
    ftr_buf_free(&md);
    ftr_buf_free(&html);
    ftr_buf_free(&tex);
    if (bad) {
        fprintf(stderr, "ftbench report: cannot write the report in %s: %s\n", out, strerror(errno));
        rc = EXIT_FAIL;
        goto done;
    }
    snprintf(path, sizeof path, "%s/gnuplot.log", out);
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size == 0) unlink(path);

    /* What happened. */
    int drawn = 0;
    for (int i = 0; i < plt.nplots; i++) drawn += plt.plots[i].drawn;
    if (!plt.gnuplot[0] && plt.nplots) {
        ftr_buf names = { 0 };
        for (int i = 0; i < plt.nplots; i++) ftr_buf_printf(&names, "%s%s", i ? ", " : "", plt.plots[i].name);
        fprintf(stderr,
                "ftbench report: %s: skipped %d plots (%s); install gnuplot (apt-get install gnuplot-nox) "
                "and re-run, or run %s/replot.sh - tables, plot data and scripts are written\n",
                plt.missing_why, plt.nplots, names.s, out);
        ftr_buf_free(&names);
    } else {
        for (int f = 0; f < 3; f++)
            if (want[f] && !plt.have[f])
                fprintf(stderr, "ftbench report: %s skipped: %s\n", ftr_formats[f], plt.fmt_note[f]);
        for (int i = 0; i < plt.nplots; i++)
            if (!plt.plots[i].drawn)
                fprintf(stderr, "ftbench report: plot %s: %s\n", plt.plots[i].name, plt.plots[i].problem);
    }
    printf("report: %s/report.html, report.md, table.tex (%d records, %d scopes, %d tables, %d of %d plots drawn%s)\n",
           out, set.n, rep.nscopes, tabs.n, drawn, plt.nplots, set.nskipped ? "; some lines skipped, see above" : "");
    rc = EXIT_OK;
done:
    ftr_plotter_free(&plt);
    ftr_tables_free(&tabs);
    ftr_report_free(&rep);
    ftr_set_free(&set);
    free(dirs);
    free(cells);
    return rc;
}
