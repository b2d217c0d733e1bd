/*
 * test_report.c — `ftbench report` (suite "report") on the committed fixture
 * tests/fixtures/results/: records of real runs (smollm2-135m on the host
 * and on an emulated Raspberry Pi 4 4GB, a LoRA cell measured three times,
 * `fit` probes), trimmed, with one foreign and one truncated line and one
 * thinned timeline (README.md there says how it was made).
 *
 * Golden values: the tables' numbers are checked exactly against figures
 * worked out from the fixture's records by hand (and by a separate script,
 * see the fixture's README); plots are checked to exist in every format, the
 * PNGs to have their documented sizes, the HTML to be balanced and to embed
 * and link every plot; without gnuplot the tables must still be written.
 */
#include <criterion/criterion.h>

#include "helpers.h"

#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"
#include "../reports/report_internal.h"

#define FIXTURE       "tests/fixtures/results"
#define HOST_RUN      "host/default-035401b0b1dde7c1"
#define TIMELINE_PLOT "timeline_host_lora.smollm2-135m.s256.b1"

/* Every plot the fixture gives: per scope (host; rpi4-4gb) scaling, saved
 * activations, breakdown at the breakdown length, throughput, and the loss
 * curves of the host (the rpi4-4gb sweep ran one step: no curve); the one
 * timeline kept in the fixture; max context from the fit probes. */
static const char *const expected_plots[] = {
    "mem_host_smollm2-135m_b1",
    "act_host_smollm2-135m_b1",
    "breakdown_host_smollm2-135m_b1_s256",
    "throughput_host_smollm2-135m_b1",
    "loss_host_smollm2-135m_b1_s256",
    TIMELINE_PLOT,
    "mem_rpi4-4gb_smollm2-135m_b1",
    "act_rpi4-4gb_smollm2-135m_b1",
    "breakdown_rpi4-4gb_smollm2-135m_b1_s2048",
    "throughput_rpi4-4gb_smollm2-135m_b1",
    "maxctx_smollm2-135m",
    NULL,
};

static char tmpdir[256];

static void need_fixture(void)
{
    struct stat st;
    if (stat(FIXTURE, &st) != 0) cr_skip_test("run from the source tree (make test): %s not found", FIXTURE);
}

static void make_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftbreport-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void remove_tmp(void)
{
    if (tmpdir[0]) nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static long fsize(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Runs the command with stderr captured into *err_out (may be NULL). */
static int run_report(const char *const *args, char **err_out)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"report";
    for (int i = 0; args[i]; i++) argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    char errpath[512];
    snprintf(errpath, sizeof errpath, "%s/.stderr", tmpdir);
    fflush(stdout);
    fflush(stderr);
    int saved = dup(2), saved_out = dup(1);
    FILE *ef = fopen(errpath, "w");
    dup2(fileno(ef), 2);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1); /* the summary line: not the test's output */
    close(devnull);
    int rc = ftb_cmd_report(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved, 2);
    dup2(saved_out, 1);
    close(saved);
    close(saved_out);
    fclose(ef);
    char *e = th_slurp_or_null(errpath, NULL);
    unlink(errpath);
    if (err_out)
        *err_out = e;
    else
        free(e);
    return rc;
}

static void load_fixture(ftr_set *s, ftr_report *r)
{
    memset(s, 0, sizeof *s);
    char err[512];
    cr_assert_gt(ftr_load(s, FIXTURE, NULL, err, sizeof err), 0, "%s", err);
    ftr_finish(s);
    ftr_aggregate(s, 0, r);
}

static const ftr_scope *scope_of(const ftr_report *r, const char *device)
{
    for (int k = 0; k < r->nscopes; k++)
        if (!strcmp(r->scopes[k].device, device)) return &r->scopes[k];
    cr_assert_fail("no scope for %s", device);
    return NULL;
}

static int row_of(const ftr_set *s, const ftr_scope *sc, const char *name)
{
    for (int i = 0; i < sc->nseries; i++)
        if (!strcmp(s->series[sc->series[i]].name, name)) return i;
    cr_assert_fail("no series %s", name);
    return -1;
}

static int col_of(const ftr_scope *sc, int seq)
{
    for (int k = 0; k < sc->nseq; k++)
        if (sc->seqs[k] == seq) return k;
    cr_assert_fail("no length %d", seq);
    return -1;
}

#define MIB(b) ((double)(b) / 1048576.0)

/* ---- loading ------------------------------------------------------------------- */

Test(report, bad_lines_are_reported_by_number_and_the_rest_is_used)
{
    need_fixture();
    ftr_set s;
    ftr_report r;
    load_fixture(&s, &r);
    cr_expect_eq(s.nskipped, 2, "one foreign and one truncated line");
    int foreign = 0, truncated = 0;
    for (int i = 0; i < s.nskipped; i++) {
        if (strstr(s.skipped[i], "/" HOST_RUN "/results.jsonl:6: foreign line")) foreign = 1;
        if (strstr(s.skipped[i], "/" HOST_RUN "/results.jsonl:16: truncated record")) truncated = 1;
    }
    cr_expect(foreign, "foreign line reported with its number: %s", s.nskipped ? s.skipped[0] : "");
    cr_expect(truncated, "truncated line reported with its number: %s", s.nskipped > 1 ? s.skipped[1] : "");
    cr_expect_eq(s.n, 32, "14 host records (12 swept + 2 re-runs), 12 swept on rpi4-4gb, 6 fit probes");
    cr_expect_eq(s.nsources, 3);
    ftr_report_free(&r);
    ftr_set_free(&s);
}

/* ---- numbers ------------------------------------------------------------------- */

Test(report, medians_reductions_and_slopes_are_exact)
{
    need_fixture();
    ftr_set s;
    ftr_report r;
    load_fixture(&s, &r);
    cr_assert_eq(r.nscopes, 2, "host and rpi4-4gb, merged from their directories");
    const ftr_scope *h = scope_of(&r, "host");
    cr_expect_eq(h->nseq, 3);
    cr_expect_eq(h->at_seq, 256, "the longest length every method measured");
    int lora = row_of(&s, h, "lora"), k128 = col_of(h, 128);
    cr_expect_eq(h->ref, lora);
    const ftr_agg *a = ftr_scope_agg(h, lora, k128);
    cr_expect_eq(a->n, 3, "the lora s128 cell was measured three times");
    cr_expect_eq(a->n_measured, 3);
    /* The median of three peaks is the middle one, exactly. */
    /* The median of three peaks (757587968, 757063680, 756473856 bytes) is
     * the middle one. */
    cr_expect_eq(a->peak_mib, MIB(757063680), "%.6f", a->peak_mib);
    cr_expect_eq(a->rep->line, 14, "the representative is the record with the median peak");
    /* Reductions vs LoRA at 256 tokens. */
    int k256 = col_of(h, 256);
    const double lora256 = MIB(889987072);
    cr_expect_eq(ftr_scope_agg(h, lora, k256)->peak_mib, lora256);
    struct {
        const char *m;
        double bytes;
        const char *pct;
    } red[] = {
        { "full", 2484453376.0, "-179.2" },
        { "lars", 779673600.0, "12.4" },
        { "mesp", 632098816.0, "29.0" },
    };
    for (int i = 0; i < 3; i++) {
        const ftr_agg *x = ftr_scope_agg(h, row_of(&s, h, red[i].m), k256);
        cr_expect_eq(x->peak_mib, MIB(red[i].bytes), "%s", red[i].m);
        double rd = ftr_reduction(x->peak_mib, lora256);
        cr_expect(fabs(rd - 100.0 * (1.0 - red[i].bytes / 889987072.0)) < 1e-9, "%s: %.12f", red[i].m, rd);
        char txt[32];
        snprintf(txt, sizeof txt, "%.1f", rd);
        cr_expect_str_eq(txt, red[i].pct);
    }
    /* Per-token slope of saved activations: exact for a method whose saved
     * bytes are linear in the length. */
    cr_expect(fabs(h->slope_kib[row_of(&s, h, "mesp")] - 33.0) < 0.05, "%f", h->slope_kib[row_of(&s, h, "mesp")]);

    const ftr_scope *p = scope_of(&r, "rpi4-4gb");
    cr_expect(p->emulated);
    cr_expect_eq(p->budget_mib, MIB(3650722201.0), "%f", p->budget_mib);
    cr_expect_eq(p->at_seq, 2048);
    int full = row_of(&s, p, "full");
    const ftr_agg *f2k = ftr_scope_agg(p, full, col_of(p, 2048));
    cr_expect(f2k->over, "full fine-tuning at 2048 tokens is over the 3482 MiB budget");
    cr_expect_eq(f2k->peak_mib, MIB(4318113792.0));
    cr_expect(!ftr_scope_agg(p, full, col_of(p, 1024))->over);
    /* Max context: LoRA's fit probes, and the swept lengths. */
    int found = 0;
    for (int i = 0; i < r.nmax; i++) {
        const ftr_maxctx *m = &r.max[i];
        if (strcmp(m->device, "rpi4-4gb")) continue;
        const char *name = s.series[m->series].name;
        if (!strcmp(name, "lora")) {
            cr_expect_eq(m->fit_longest, 2560);
            cr_expect_eq(m->fit_failing, 3072);
            cr_expect_eq(m->sweep_longest, 2048);
            found++;
        } else if (!strcmp(name, "full")) {
            cr_expect_eq(m->fit_longest, -1, "no fit records for full");
            cr_expect_eq(m->sweep_longest, 1024);
            found++;
        }
    }
    cr_expect_eq(found, 2);
    cr_expect_eq(r.ntrain, 0);
    ftr_report_free(&r);
    ftr_set_free(&s);
}

Test(report, median_and_reduction_helpers)
{
    double v[] = { 3, 1, 2 };
    cr_expect_eq(ftr_median(v, 3), 2.0);
    double w[] = { 4, 1, 3, 2 };
    cr_expect_eq(ftr_median(w, 4), 2.5);
    cr_expect(isnan(ftr_median(w, 0)));
    cr_expect_eq(ftr_reduction(50, 200), 75.0);
    cr_expect_eq(ftr_reduction(300, 200), -50.0);
    cr_expect(isnan(ftr_reduction(NAN, 200)));
    cr_expect(isnan(ftr_reduction(1, 0)));
}

Test(report, markdown_and_latex_tables_golden)
{
    need_fixture();
    ftr_set s;
    ftr_report r;
    load_fixture(&s, &r);
    ftr_tables t;
    ftr_build_tables(&s, &r, &t);
    ftr_buf md = { 0 }, tex = { 0 };
    for (int i = 0; i < t.n; i++) {
        ftr_table_markdown(t.t[i], &md);
        ftr_table_latex(t.t[i], &tex);
    }
    static const char *const md_lines[] = {
        "| full | 2156.7 | 2244.1 | 2369.4 |\n| lora | 646.5 | 722.0 | 848.8 |\n| lars | 598.4 | 655.7 | 743.6 |\n"
        "| mesp | 583.5 | 599.6 | 602.8 |\n",
        "| full | -233.6 | -210.8 | -179.2 |\n| lars | 7.4 | 9.2 | 12.4 |\n| mesp | 9.7 | 16.9 | 29.0 |\n",
        "| method | 64 | 128 | 256 | KiB/token |\n",
        "| full | 62.2 | 124.5 | 248.9 | 995.8 |\n| lora | 62.6 | 125.3 | 250.6 | 1002.4 |\n"
        "| lars | 42.7 | 85.2 | 170.3 | 680.8 |\n| mesp | 2.1 | 4.1 | 8.3 | 33.0 |\n",
        "| lora | 60.5 | 105.4 | 116.8 |\n", /* tokens/s: the median of three */
        "| full | 2617.9 | 3117.9 | 4118.1* |\n| lora | 1098.5 | 1602.6 | 2609.7 |\n",
        "| full | -138.3 | -94.6 | -57.8 |\n| lars | 16.3 | 20.5 | 25.8 |\n| mesp | 45.2 | 61.4 | 74.5 |\n",
        "| full | 24.5 | 20.9 | 12.1* |\n",
        "| lora | rpi4-4gb | smollm2-135m | 1 | 3482 | 2560 | 3072 | 2048 |\n",
        "| full | rpi4-4gb | smollm2-135m | 1 | 3482 | - | - | 1024 |\n",
        NULL,
    };
    for (int i = 0; md_lines[i]; i++)
        cr_expect_not_null(strstr(md.s, md_lines[i]), "missing in report.md: %s\n%s", md_lines[i], md.s);
    static const char *const tex_lines[] = {
        "\\begin{tabular}{lrrr}\n\\toprule\n & \\multicolumn{3}{c}{sequence length (tokens)} \\\\\n"
        "\\cmidrule(lr){2-4}\nmethod & 64 & 128 & 256 \\\\\n\\midrule\n"
        "full & 2156.7 & 2244.1 & 2369.4 \\\\\n",
        "full & $-$233.6 & $-$210.8 & $-$179.2 \\\\\n",
        "full & 2617.9 & 3117.9 & \\textit{4118.1}$^{*}$ \\\\\n",
        "\\label{tab:reduction-rpi4-4gb_smollm2-135m_b1}",
        "\\caption{Peak RSS reduction vs LoRA (\\%): smollm2-135m on rpi4-4gb (emulated), batch 1. ",
        "a \\texttt{ftbench fit} probe",
        NULL,
    };
    for (int i = 0; tex_lines[i]; i++)
        cr_expect_not_null(strstr(tex.s, tex_lines[i]), "missing in table.tex: %s\n%s", tex_lines[i], tex.s);
    /* booktabs structure: as many \begin{table} as \end{table}. */
    int b = 0, e = 0;
    for (const char *p = tex.s; (p = strstr(p, "\\begin{table}")); p++) b++;
    for (const char *p = tex.s; (p = strstr(p, "\\end{table}")); p++) e++;
    cr_expect_eq(b, t.n);
    cr_expect_eq(e, t.n);
    cr_expect_not_null(strstr(tex.s, "\\toprule"));
    cr_expect_not_null(strstr(tex.s, "\\bottomrule"));
    ftr_buf_free(&md);
    ftr_buf_free(&tex);
    ftr_tables_free(&t);
    ftr_report_free(&r);
    ftr_set_free(&s);
}

/* ---- the whole command, with gnuplot ------------------------------------------------- */

/* Tags balance: every element opened is closed in order; void elements,
 * self-closing tags, comments and the doctype stand alone. */
static int html_balanced(const char *h, char *why, size_t n)
{
    static const char *const voids[] = { "meta", "img", "br", "hr", "link", "input", "source", "col", "wbr", NULL };
    char stack[256][32];
    int depth = 0;
    for (const char *p = h; (p = strchr(p, '<'));) {
        const char *q = strchr(p, '>');
        if (!q) {
            snprintf(why, n, "unterminated tag");
            return 0;
        }
        if (p[1] == '!' || p[1] == '?') {
            p = q + 1;
            continue;
        }
        int closing = p[1] == '/';
        const char *nm = p + 1 + closing;
        size_t len = strcspn(nm, " \t\n>/");
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(len < 31 ? len : 31), nm);
        int self = q[-1] == '/';
        int isvoid = 0;
        for (int i = 0; voids[i]; i++) isvoid |= !strcmp(voids[i], name);
        if (closing) {
            if (!depth || strcmp(stack[depth - 1], name)) {
                snprintf(why, n, "</%s> closes <%s>", name, depth ? stack[depth - 1] : "nothing");
                return 0;
            }
            depth--;
        } else if (!self && !isvoid) {
            if (depth == 256) return 0;
            snprintf(stack[depth++], sizeof stack[0], "%s", name);
        }
        p = q + 1;
    }
    if (depth) {
        snprintf(why, n, "<%s> never closed", stack[depth - 1]);
        return 0;
    }
    return 1;
}

static void expect_png(const char *out, const char *name, int w, int h)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/plots/%s.png", out, name);
    int pw = 0, ph = 0;
    cr_expect_eq(ftr_png_size(path, &pw, &ph), 0, "%s is not a PNG", path);
    cr_expect(pw == w && ph == h, "%s is %dx%d, not %dx%d", path, pw, ph, w, h);
}

Test(report, every_plot_in_every_format_and_a_balanced_html_page, .init = make_tmp, .fini = remove_tmp, .timeout = 120)
{
    need_fixture();
    if (system("gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1") != 0)
        cr_skip_test("gnuplot with cairo is not installed");
    unsetenv("FTBENCH_GNUPLOT");
    char out[512];
    snprintf(out, sizeof out, "%s/rep", tmpdir);
    char *err = NULL;
    int rc = run_report((const char *[]){ FIXTURE, "--out", out, NULL }, &err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_expect_not_null(strstr(err, "truncated record"), "%s", err);
    cr_expect_not_null(strstr(err, "foreign line"), "%s", err);
    cr_expect_null(strstr(err, "skipped:"), "no format skipped: %s", err);
    free(err);
    const char *const *plots = expected_plots;
    char path[1024];
    for (int i = 0; plots[i]; i++)
        for (int f = 0; f < 3; f++) {
            snprintf(path, sizeof path, "%s/plots/%s.%s", out, plots[i], ftr_formats[f]);
            cr_expect_gt(fsize(path), 0, "%s missing or empty", path);
            snprintf(path, sizeof path, "%s/gnuplot/%s.gp", out, plots[i]);
            cr_expect_gt(fsize(path), 0, "%s missing", path);
        }
    snprintf(path, sizeof path, "%s/gnuplot.log", out);
    cr_expect_lt(fsize(path), 0, "gnuplot complained: %s", path);
    expect_png(out, "mem_host_smollm2-135m_b1", 960, 640);
    expect_png(out, "breakdown_rpi4-4gb_smollm2-135m_b1_s2048", 960, 640);
    expect_png(out, TIMELINE_PLOT, 1440, 640);
    /* Only the plots above: nothing unexpected, nothing half-written. */
    int n = 0;
    FILE *ls;
    snprintf(path, sizeof path, "ls '%s/plots' | wc -l", out);
    ls = popen(path, "r");
    cr_assert_eq(fscanf(ls, "%d", &n), 1);
    pclose(ls);
    int np = 0;
    while (plots[np]) np++;
    cr_expect_eq(n, 3 * np, "%d files in plots/, expected %d", n, 3 * np);

    snprintf(path, sizeof path, "%s/report.html", out);
    char *html = th_slurp_or_null(path, NULL);
    cr_assert_not_null(html);
    char why[256] = "";
    cr_expect(html_balanced(html, why, sizeof why), "report.html: %s", why);
    for (int i = 0; plots[i]; i++) {
        char id[512];
        snprintf(id, sizeof id, "<figure id=\"fig-%s\"", plots[i]);
        cr_expect_not_null(strstr(html, id), "%s not in the page", plots[i]);
        snprintf(id, sizeof id, "href=\"plots/%s.pdf\"", plots[i]);
        cr_expect_not_null(strstr(html, id), "%s.pdf not linked", plots[i]);
    }
    int embedded = 0;
    for (const char *p = html; (p = strstr(p, "src=\"data:image/")); p++) embedded++;
    cr_expect_eq(embedded, np, "every plot embedded once");
    cr_expect_not_null(strstr(html, "<img alt=\"mem_host_smollm2-135m_b1\" src=\"data:image/svg+xml;base64,"),
                       "a line plot is embedded as SVG");
    cr_expect_null(strstr(html, "src=\"plots/"), "self-contained: no image loaded from a file");
    free(html);
    snprintf(path, sizeof path, "%s/report.md", out);
    char *md = th_slurp_or_null(path, NULL);
    for (int i = 0; plots[i]; i++) {
        char ref[512];
        snprintf(ref, sizeof ref, "](plots/%s.png)", plots[i]);
        cr_expect_not_null(strstr(md, ref), "%s not in report.md", plots[i]);
    }
    free(md);
    snprintf(path, sizeof path, "%s/replot.sh", out);
    cr_expect_gt(fsize(path), 0);
    snprintf(path, sizeof path, "%s/gnuplot/style.gp", out);
    cr_expect_gt(fsize(path), 0);
}

/* ---- without gnuplot ------------------------------------------------------------------- */

Test(report, without_gnuplot_the_tables_are_written_and_one_line_names_the_skipped_plots, .init = make_tmp,
     .fini = remove_tmp)
{
    need_fixture();
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    char out[512], path[1024];
    snprintf(out, sizeof out, "%s/rep", tmpdir);
    char *err = NULL;
    int rc = run_report((const char *[]){ FIXTURE, "--out", out, NULL }, &err);
    cr_assert_eq(rc, 0, "%s", err);
    const char *line = strstr(err, "ftbench report: FTBENCH_GNUPLOT=/nonexistent is not an executable file: skipped ");
    cr_assert_not_null(line, "%s", err);
    const char *eol = strchr(line, '\n');
    cr_assert_not_null(eol);
    char *one = strndup(line, (size_t)(eol - line));
    cr_expect_not_null(strstr(one, "mem_host_smollm2-135m_b1"), "%s", one);
    cr_expect_not_null(strstr(one, TIMELINE_PLOT), "%s", one);
    cr_expect_not_null(strstr(one, "apt-get install gnuplot-nox"), "%s", one);
    /* exactly one such line */
    cr_expect_null(strstr(eol, "skipped "), "%s", err);
    free(one);
    free(err);
    static const char *const docs[] = { "report.md",
                                        "report.html",
                                        "table.tex",
                                        "gnuplot/style.gp",
                                        "data/mem_host_smollm2-135m_b1.tsv",
                                        "gnuplot/mem_host_smollm2-135m_b1.gp",
                                        NULL };
    for (int i = 0; docs[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", out, docs[i]);
        cr_expect_gt(fsize(path), 0, "%s not written", path);
    }
    snprintf(path, sizeof path, "%s/plots/mem_host_smollm2-135m_b1.png", out);
    cr_expect_lt(fsize(path), 0, "no image without gnuplot");
    snprintf(path, sizeof path, "%s/report.md", out);
    char *md = th_slurp_or_null(path, NULL);
    cr_expect_not_null(strstr(md, "| lora | 646.5 | 722.0 | 848.8 |"), "%s", md);
    cr_expect_not_null(strstr(md, "not drawn (gnuplot missing)"));
    free(md);
    snprintf(path, sizeof path, "%s/report.html", out);
    char *html = th_slurp_or_null(path, NULL);
    char why[256] = "";
    cr_expect(html_balanced(html, why, sizeof why), "report.html: %s", why);
    cr_expect_not_null(strstr(html, "fig-mem_host_smollm2-135m_b1"));
    free(html);
}

/* ---- training records ------------------------------------------------------------------- */

Test(report, training_records_feed_the_quality_table, .init = make_tmp, .fini = remove_tmp)
{
    /* Not measured: the record `ftbench train` is expected to write
     * (docs/REPORTS.md), built here to check that the report reads it. */
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/train/host/run-1", tmpdir);
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "w");
    const char *methods[] = { "lora", "lars" };
    const double acc[] = { 0.9, 0.875 }, peak[] = { 1048576.0 * 1000, 1048576.0 * 800 };
    for (int i = 0; i < 2; i++)
        fprintf(f,
                "{\"schema\":1,\"cell\":\"%s.m.s128.b1\",\"run_id\":\"run-1\",\"outcome\":\"ok\","
                "\"device\":{\"name\":\"host\",\"budget_bytes\":1073741824},\"model\":{\"name\":\"m\"},"
                "\"method\":{\"label\":\"%s\",\"options\":{}},\"seq\":128,\"batch\":1,"
                "\"memory\":{\"peak_rss_bytes\":%.0f},\"loss_per_step\":[2.5,2.25,2.0],"
                "\"eval\":{\"task\":\"sst2\",\"metric\":\"accuracy\",\"accuracy\":%g},"
                "\"gradient_fidelity\":{\"cosine\":0.99875,\"relative_error\":0.05}}\n",
                methods[i], methods[i], peak[i], acc[i]);
    fclose(f);
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    char out[600];
    snprintf(out, sizeof out, "%s/rep", tmpdir);
    snprintf(dir, sizeof dir, "%s/train", tmpdir);
    char *err = NULL;
    cr_assert_eq(run_report((const char *[]){ dir, "--out", out, NULL }, &err), 0, "%s", err);
    cr_expect_not_null(strstr(err, "accuracy_vs_memory"), "%s", err);
    cr_expect_not_null(strstr(err, "loss_training"), "%s", err);
    free(err);
    snprintf(path, sizeof path, "%s/report.md", out);
    char *md = th_slurp_or_null(path, NULL);
    cr_expect_not_null(strstr(md, "| lora | host | m | 128 | 1000.0 | sst2 | 90.00% | 0.9988 | 5.00e-02 | 2.0000 |"),
                       "%s", md);
    cr_expect_not_null(strstr(md, "| lars | host | m | 128 | 800.0 | sst2 | 87.50% | 0.9988 | 5.00e-02 | 2.0000 |"),
                       "%s", md);
    free(md);
    snprintf(path, sizeof path, "%s/data/accuracy_vs_memory.tsv", out);
    char *d = th_slurp_or_null(path, NULL);
    cr_assert_not_null(d);
    cr_expect_not_null(strstr(d, "1000.0000\t90.0000\tlora\thost\tm\t128\n"), "%s", d);
    free(d);
}

Test(report, without_training_records_the_report_says_so, .init = make_tmp, .fini = remove_tmp)
{
    need_fixture();
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    char out[512], path[1024];
    snprintf(out, sizeof out, "%s/rep", tmpdir);
    cr_assert_eq(run_report((const char *[]){ FIXTURE, "--out", out, "--formats", "png", NULL }, NULL), 0);
    snprintf(path, sizeof path, "%s/report.md", out);
    char *md = th_slurp_or_null(path, NULL);
    cr_expect_not_null(strstr(md, "No training records"));
    cr_expect_null(strstr(md, "Task accuracy and gradient fidelity"));
    free(md);
    snprintf(path, sizeof path, "%s/gnuplot/accuracy_vs_memory.gp", out);
    cr_expect_lt(fsize(path), 0);
}

/* ---- styles and usage ---------------------------------------------------------------------- */

Test(report, method_styles_are_fixed_by_name)
{
    cr_expect_eq(ftr_style_for("full", 0), 1);
    cr_expect_eq(ftr_style_for("lora", 0), 2);
    cr_expect_eq(ftr_style_for("lars", 0), 5);
    cr_expect_eq(ftr_style_for("lora", 1), 102, "a variant keeps the colour, another dash");
    int a = ftr_style_for("my-new-method", 0);
    cr_expect_eq(a, ftr_style_for("my-new-method", 0));
    cr_expect(a >= 40 && a < 50, "%d", a);
    ftr_buf b = { 0 };
    ftr_style_file(&b, NULL, 0);
    cr_expect_not_null(strstr(b.s, "set style line 2 lc rgb '#0072B2' lw 1.6 dt (6,3) pt 5 ps 1.1   # lora"));
    cr_expect_not_null(strstr(b.s, "pdfcairo size pdf_w*1in,pdf_h*1in"));
    ftr_buf_free(&b);
}

Test(report, usage_errors, .init = make_tmp, .fini = remove_tmp)
{
    char *err = NULL;
    cr_expect_eq(run_report((const char *[]){ NULL }, &err), 2);
    cr_expect_not_null(strstr(err, "at least one results directory"), "%s", err);
    free(err);
    cr_expect_eq(run_report((const char *[]){ "/nonexistent/dir", NULL }, &err), 2);
    cr_expect_not_null(strstr(err, "/nonexistent/dir"), "%s", err);
    free(err);
    cr_expect_eq(run_report((const char *[]){ tmpdir, NULL }, &err), 2);
    cr_expect_not_null(strstr(err, "no results.jsonl or fidelity.jsonl found"), "%s", err);
    free(err);
    cr_expect_eq(run_report((const char *[]){ FIXTURE, "--formats", "png,jpg", NULL }, &err), 2);
    cr_expect_not_null(strstr(err, "unknown format 'jpg'"), "%s", err);
    free(err);
    cr_expect_eq(run_report((const char *[]){ FIXTURE, "--bogus", NULL }, &err), 2);
    cr_expect_not_null(strstr(err, "unknown option '--bogus'"), "%s", err);
    free(err);
    cr_expect_eq(run_report((const char *[]){ FIXTURE, "--seq", "x", NULL }, &err), 2);
    free(err);
}

Test(report, png_header_reader)
{
    static const unsigned char png[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
                                         'I',  'H', 'D', 'R', 0,    0,    3,    0xc0, 0, 0, 2, 0x80 };
    char path[] = "/tmp/ftbpng-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_eq(write(fd, png, sizeof png), (ssize_t)sizeof png);
    close(fd);
    int w, h;
    cr_expect_eq(ftr_png_size(path, &w, &h), 0);
    cr_expect_eq(w, 960);
    cr_expect_eq(h, 640);
    unlink(path);
    cr_expect_eq(ftr_png_size("/nonexistent.png", &w, &h), -1);
}

/* ---- budgets ------------------------------------------------------------------- */

/* One record line: a lora cell on rpi5-4gb under `budget_mib`. */
static void put_record(FILE *f, int fit, int seq, const char *outcome, int peak_mib, int budget_mib)
{
    fprintf(f,
            "{\"schema\":1,\"cell\":\"lora.smollm2-135m.s%d.b1\",\"outcome\":\"%s\",\"seq\":%d,\"batch\":1,"
            "\"fit\":%s,\"emulated\":true,\"device\":{\"name\":\"rpi5-4gb\",\"budget_bytes\":%lld},"
            "\"model\":{\"name\":\"smollm2-135m\"},\"method\":{\"label\":\"lora\",\"options\":{}},"
            "\"memory\":{\"peak_rss_bytes\":%lld}}\n",
            seq, outcome, seq, fit ? "true" : "false", (long long)budget_mib << 20, (long long)peak_mib << 20);
}

/* A fit under --budget 1200M beside a sweep under the device's 3482 MiB:
 * two rows of the max-context table, each with its own budget, two
 * clusters in the plot's data, and sweeps under two budgets two scopes
 * whose names say which. */
Test(report, figures_under_different_budgets_are_not_merged, .init = make_tmp, .fini = remove_tmp)
{
    char dir[512], path[1400];
    snprintf(dir, sizeof dir, "%s/rpi5-4gb", tmpdir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    put_record(f, 0, 256, "ok", 700, 3482);
    put_record(f, 0, 512, "ok", 1500, 3482);
    put_record(f, 1, 256, "ok", 700, 1200);
    put_record(f, 1, 512, "over_budget", 1250, 1200);
    put_record(f, 0, 256, "ok", 700, 1200);
    fclose(f);
    ftr_set s;
    ftr_report r;
    memset(&s, 0, sizeof s);
    char err[512];
    cr_assert_gt(ftr_load(&s, tmpdir, NULL, err, sizeof err), 0, "%s", err);
    ftr_finish(&s);
    ftr_aggregate(&s, 0, &r);
    cr_assert_eq(r.nmax, 2, "one max-context row per budget, got %d", r.nmax);
    const ftr_maxctx *lo = &r.max[0], *hi = &r.max[1];
    cr_expect_eq(lo->budget_mib, 1200.0, "%f", lo->budget_mib);
    cr_expect_eq(lo->fit_longest, 256);
    cr_expect_eq(lo->fit_failing, 512);
    cr_expect_eq(hi->budget_mib, 3482.0, "%f", hi->budget_mib);
    cr_expect_eq(hi->fit_longest, -1, "no fit ran under 3482 MiB");
    cr_expect_eq(hi->sweep_longest, 512);
    cr_assert_eq(r.nscopes, 2, "sweeps under 1200 and 3482 MiB: %d scopes", r.nscopes);
    cr_expect_str_eq(r.scopes[0].id, "rpi5-4gb_smollm2-135m_b1_budget1200M");
    cr_expect_not_null(strstr(r.scopes[1].title, "budget 3482 MiB"), "%s", r.scopes[1].title);
    cr_expect_eq(r.scopes[1].budget_mib, 3482.0);
    ftr_report_free(&r);
    ftr_set_free(&s);

    char out[600];
    snprintf(out, sizeof out, "%s/report", tmpdir);
    cr_assert_eq(run_report((const char *[]){ tmpdir, "--out", out, "--formats", "svg", NULL }, NULL), 0);
    snprintf(path, sizeof path, "%s/data/maxctx_smollm2-135m.tsv", out);
    char *tsv = th_slurp_or_null(path, NULL);
    cr_assert_not_null(tsv, "%s", path);
    cr_expect_not_null(strstr(tsv, "rpi5-4gb, 1200 MiB\t256"), "%s", tsv);
    cr_expect_null(strstr(tsv, "3482"), "no fit ran under the device budget: %s", tsv);
    free(tsv);
}

/* ---- sources, fidelity, hardware counters (issue 20 items 1, 2, 6) ------------------- */

#define FIDELITY_FIXTURE "tests/fixtures/fidelity"

static char *report_md(const char *const *args)
{
    char out[512], path[1024];
    snprintf(out, sizeof out, "%s/rep", tmpdir);
    const char *argv[16];
    int n = 0;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n++] = "--out";
    argv[n++] = out;
    argv[n] = NULL;
    char *err = NULL;
    int rc = run_report(argv, &err);
    cr_assert_eq(rc, 0, "%s", err);
    free(err);
    snprintf(path, sizeof path, "%s/report.md", out);
    char *md = th_slurp_or_null(path, NULL);
    cr_assert_not_null(md);
    return md;
}

Test(report, the_header_names_what_was_asked_for_and_what_each_file_brought, .init = make_tmp, .fini = remove_tmp)
{
    need_fixture();
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    char *md = report_md((const char *[]){ FIXTURE "/" HOST_RUN, FIDELITY_FIXTURE, NULL });
    cr_expect_not_null(strstr(md, "14 records and 13 fidelity records from 2 files"), "%s", md);
    cr_expect_not_null(strstr(md, "Sources (`ftbench report " FIXTURE "/" HOST_RUN " " FIDELITY_FIXTURE "`):"), "%s",
                       md);
    cr_expect_not_null(strstr(md, "- `" FIXTURE "/" HOST_RUN "/results.jsonl`: 14 records (sweep default, run "
                                  "default-035401b0b1dde7c1, host, smollm2-135m)\n"),
                       "%s", md);
    cr_expect_not_null(strstr(md, "- `" FIDELITY_FIXTURE "/fidelity.jsonl`: 13 fidelity records (tiny)\n"), "%s", md);
    /* Only what was named: the rpi4-4gb runs beside it stay out. */
    cr_expect_null(strstr(md, "rpi4-4gb"), "%s", md);
    free(md);
}

Test(report, fidelity_records_give_a_table_and_a_plot_against_n, .init = make_tmp, .fini = remove_tmp)
{
    need_fixture();
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    char *md = report_md((const char *[]){ FIDELITY_FIXTURE, NULL });
    /* Worked out with a few lines of Python over the fixture: mean, min, max
     * of the cosine, mean relative error, per method (options without n) and n. */
    static const char *const rows[] = {
        "| mesp | tiny | 32 | grad. | 1 | 1.000000 | 1.000000 | 1.000000 | 0.000e+00 | 8192 |\n",
        "| mezo[params=lora] | tiny | 32 | 1 | 2 | 0.018193 | 0.001917 | 0.034470 | 3.032e+01 | 1792 |\n",
        "| mezo[params=lora] | tiny | 32 | 16 | 2 | 0.089145 | 0.083649 | 0.094641 | 1.014e+01 | 1792 |\n",
        "| prge | tiny | 32 | 4 | 2 | 0.019708 | 0.015264 | 0.024151 | 1.974e+01 | 4096 |\n",
        "| prge | tiny | 32 | 16 | 2 | 0.053524 | 0.046778 | 0.060270 | 1.314e+01 | 4096 |\n",
        NULL,
    };
    for (int i = 0; rows[i]; i++) cr_expect_not_null(strstr(md, rows[i]), "missing %s in\n%s", rows[i], md);
    cr_expect_not_null(strstr(md, "](plots/fidelity_tiny.png)") ? md : strstr(md, "fidelity_tiny"), "%s", md);
    free(md);
    char path[1024];
    snprintf(path, sizeof path, "%s/rep/gnuplot/fidelity_tiny.gp", tmpdir);
    char *gp = th_slurp_or_null(path, NULL);
    cr_assert_not_null(gp, "no fidelity plot script");
    cr_expect_not_null(strstr(gp, "set logscale x 2\nset xtics (1, 4, 16)"), "%s", gp);
    cr_expect_not_null(strstr(gp, "'mesp (gradient)'"), "%s", gp);
    free(gp);
    snprintf(path, sizeof path, "%s/rep/data/fidelity_tiny.tsv", tmpdir);
    char *d = th_slurp_or_null(path, NULL);
    cr_assert_not_null(d);
    cr_expect_not_null(
        strstr(d, "# prge, seq 32\n# x\tcos_mean\tcos_min\tcos_max\trel_mean\trel_min\trel_max\truns\n1\t"), "%s", d);
    free(d);
}

Test(report, a_training_records_gradient_cosine_comes_from_fidelity, .init = make_tmp, .fini = remove_tmp)
{
    need_fixture();
    char dir[512], path[1024], cmd[1200];
    snprintf(dir, sizeof dir, "%s/train/host/run-1", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp " FIDELITY_FIXTURE "/fidelity.jsonl '%s/../..'", dir, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"schema\":1,\"cell\":\"mesp.tiny.s32.b1\",\"run_id\":\"run-1\",\"outcome\":\"ok\","
               "\"device\":{\"name\":\"host\"},\"model\":{\"name\":\"tiny\"},\"method\":{\"label\":\"mesp\","
               "\"options\":{}},\"seq\":32,\"batch\":1,\"memory\":{\"peak_rss_bytes\":10485760},"
               "\"eval\":{\"task\":\"reasoning\",\"metric\":\"exact_match\",\"accuracy\":0.5}}\n");
    fclose(f);
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    snprintf(dir, sizeof dir, "%s/train", tmpdir);
    char *md = report_md((const char *[]){ dir, NULL });
    cr_expect_not_null(
        strstr(md, "| mesp | host | tiny | 32 | 10.0 | reasoning | 50.00% | 1.0000 (f) | 0.00e+00 (f) | - |"), "%s",
        md);
    cr_expect_not_null(strstr(md, "(f): gradient fidelity from `ftbench fidelity`"), "%s", md);
    free(md);
}

Test(report, run_and_report_say_why_hardware_counters_are_missing, .init = make_tmp, .fini = remove_tmp, .timeout = 120)
{
    need_fixture();
    const char *bin = getenv("FTBENCH_BIN");
    if (!bin) cr_skip_test("FTBENCH_BIN is set by make test");
    char cmd[2048], path[1024];
    snprintf(cmd, sizeof cmd,
             "'%s' run --model tiny --method lora --seq 32 --steps 1 --warmup 0 --threads 1 --run-id hw "
             "--out '%s/res' > '%s/run.out' 2>/dev/null",
             bin, tmpdir, tmpdir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    snprintf(path, sizeof path, "%s/run.out", tmpdir);
    char *out = th_slurp_or_null(path, NULL);
    snprintf(path, sizeof path, "%s/res/host/hw/results.jsonl", tmpdir);
    json_error_t je;
    json_t *rec = json_load_file(path, 0, &je);
    cr_assert_not_null(rec, "%s: %s", path, je.text);
    json_t *hw = json_object_get(rec, "hw_counters");
    cr_assert(json_is_object(hw), "the record has hw_counters");
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    snprintf(path, sizeof path, "%s/res", tmpdir);
    char *md = report_md((const char *[]){ path, NULL });
    if (json_is_true(json_object_get(hw, "available"))) {
        cr_expect_null(strstr(out, "counters    unavailable"), "%s", out);
        cr_expect_not_null(strstr(md, "Hardware counters: read in the 1 record "), "%s", md);
    } else {
        const char *why = json_string_value(json_object_get(hw, "reason"));
        cr_assert_not_null(why);
        char line[700];
        snprintf(line, sizeof line, "\ncounters    unavailable: %s\n", why);
        cr_expect_not_null(strstr(out, line), "run output lacks '%s':\n%s", line, out);
        snprintf(line, sizeof line, "Hardware counters: unavailable in the one record: %s.", why);
        cr_expect_not_null(strstr(md, line), "report lacks '%s':\n%s", line, md);
    }
    json_decref(rec);
    free(out);
    free(md);
}

/* ---- memory against length, throughput spread (items 3, 5) --------------------------- */

static char *report_file(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/rep/%s", tmpdir, rel);
    char *t = th_slurp_or_null(path, NULL);
    cr_assert_not_null(t, "%s not written", path);
    return t;
}

Test(report, memory_plot_has_a_log2_axis_direct_labels_and_a_difference_to_lora_panel, .init = make_tmp,
     .fini = remove_tmp)
{
    need_fixture();
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    free(report_md((const char *[]){ FIXTURE, NULL }));
    char *gp = report_file("gnuplot/mem_host_smollm2-135m_b1.gp");
    cr_expect_not_null(strstr(gp, "set logscale x 2\nset xtics (64, 128, 256)\n"), "%s", gp);
    /* Every method named at its line's end, beside the plot, none closer
     * than the spread's gap to another. */
    double ys[8];
    int n = 0;
    static const char *const names[] = { "full", "lora", "lars", "mesp" };
    for (int i = 0; i < 4; i++) {
        char want[64];
        snprintf(want, sizeof want, "'%s' at graph 1.02, graph ", names[i]);
        const char *at = strstr(gp, want);
        cr_assert_not_null(at, "no end label for %s:\n%s", names[i], gp);
        ys[n++] = atof(at + strlen(want));
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            cr_expect_geq(fabs(ys[i] - ys[j]), 0.065 - 1e-9, "labels %d and %d overlap", i, j);
    cr_expect_not_null(strstr(gp, "set key off"), "direct labels replace the key");
    cr_expect_not_null(strstr(gp, "set ylabel 'vs lora (MiB)'"), "%s", gp);
    cr_expect_not_null(strstr(gp, "'off the scale: full +1522 MiB'"), "full, far from LoRA, leaves the panel:\n%s", gp);
    free(gp);
    /* The panel's numbers: peak minus LoRA's, exact (bytes from the fixture). */
    char *d = report_file("data/mem_host_smollm2-135m_b1_vs_lora.tsv");
    char row[160];
    snprintf(row, sizeof row, "256\t%.4f\t0.0000\t%.4f\t%.4f\n", MIB(2484453376.0) - MIB(889987072),
             MIB(779673600.0) - MIB(889987072), MIB(632098816.0) - MIB(889987072));
    cr_expect_not_null(strstr(d, row), "missing %s in\n%s", row, d);
    free(d);
    /* --linear-x keeps the old axis. */
    free(report_md((const char *[]){ FIXTURE, "--linear-x", NULL }));
    gp = report_file("gnuplot/mem_host_smollm2-135m_b1.gp");
    cr_expect_null(strstr(gp, "logscale x"), "%s", gp);
    free(gp);
}

Test(report, spread_labels_keep_their_order_and_never_overlap)
{
    double f[6] = { 0.5, 0.51, 0.49, 0.98, 0.99, 0.02 };
    ftr_spread_labels(f, 6, 0.06);
    /* order by height kept: 5 < 2 < 0 < 1 < 3 < 4 */
    int order[6] = { 5, 2, 0, 1, 3, 4 };
    for (int i = 1; i < 6; i++)
        cr_expect_geq(f[order[i]] - f[order[i - 1]], 0.06 - 1e-12, "%d: %f after %f", i, f[order[i]], f[order[i - 1]]);
    cr_expect_leq(f[4], 1.0);
    double one = 0.3;
    ftr_spread_labels(&one, 1, 0.06);
    cr_expect_eq(one, 0.3, "a lone label stays where its line ends");
}

Test(report, known_methods_differ_in_dash_and_point_so_greyscale_tells_them_apart)
{
    ftr_buf b = { 0 };
    ftr_style_file(&b, NULL, 0);
    char dash[16][40], seen_pt[16];
    int n = 0;
    for (const char *p = b.s; (p = strstr(p, "set style line ")); p++) {
        int no = atoi(p + 15);
        if (no < 1 || no > 10) continue;
        const char *dt = strstr(p, " dt "), *pt = strstr(p, " pt ");
        cr_assert(dt && pt);
        snprintf(dash[n], sizeof dash[n], "%.*s", (int)(pt - dt - 4), dt + 4);
        seen_pt[n] = (char)atoi(pt + 4);
        for (int k = 0; k < n; k++) {
            cr_expect(strcmp(dash[k], dash[n]), "styles %d and %d share the dash %s", k + 1, no, dash[n]);
            cr_expect_neq(seen_pt[k], seen_pt[n], "styles %d and %d share the point type", k + 1, no);
        }
        n++;
    }
    cr_expect_eq(n, 10);
    ftr_buf_free(&b);
}

Test(report, throughput_bars_span_the_measured_steps, .init = make_tmp, .fini = remove_tmp)
{
    need_fixture();
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    free(report_md((const char *[]){ FIXTURE, NULL }));
    /* lora s128: three records of one warm step each (128 tokens in
     * 1.0842, 1.2145 and 8.7960 s: 118.07, 105.39, 14.55 tokens/s). */
    char *d = report_file("data/throughput_host_smollm2-135m_b1_steps.tsv");
    cr_expect_not_null(strstr(d, "128\t-\t-\t-\t1\t105.3917\t14.5520\t118.0679\t3\t"), "%s", d);
    cr_expect_not_null(strstr(d, "64\t-\t-\t-\t1\t-\t-\t-\t1\t"), "one step: no bar\n%s", d);
    free(d);
    char *gp = report_file("gnuplot/throughput_host_smollm2-135m_b1.gp");
    cr_expect_not_null(strstr(gp, "_steps.tsv' using 1:6:7:8 with yerrorbars ls 2"), "%s", gp);
    cr_expect_null(strstr(gp, "cold step"), "warm steps are not cold:\n%s", gp);
    free(gp);
}

Test(report, a_single_cold_step_is_drawn_as_such_and_repeated_steps_get_bars, .init = make_tmp, .fini = remove_tmp,
     .timeout = 120)
{
    need_fixture();
    const char *bin = getenv("FTBENCH_BIN");
    if (!bin) cr_skip_test("FTBENCH_BIN is set by make test");
    char cmd[2048], path[1024];
    snprintf(cmd, sizeof cmd,
             "'%s' run --model tiny --method lora --seq 32 --steps 1 --warmup 0 --threads 1 --run-id t --out '%s/res' "
             ">/dev/null 2>&1 && '%s' run --model tiny --method lora --seq 64 --steps 4 --warmup 1 --threads 1 "
             "--run-id t --out '%s/res' >/dev/null 2>&1",
             bin, tmpdir, bin, tmpdir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    /* The expected spread, from the record's own step times. */
    snprintf(path, sizeof path, "%s/res/host/t/results.jsonl", tmpdir);
    FILE *f = fopen(path, "r");
    char line[1 << 16];
    double lo = INFINITY, hi = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        if (json_integer_value(json_object_get(j, "seq")) == 64) {
            json_t *w = json_object_get(j, "step_seconds_all");
            cr_assert_eq(json_array_size(w), 5, "1 warm-up + 4 steps");
            for (size_t i = 1; i < 5; i++) {
                double t = json_number_value(json_array_get(w, i));
                lo = fmin(lo, 64 / t);
                hi = fmax(hi, 64 / t);
            }
        }
        json_decref(j);
    }
    fclose(f);
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    snprintf(path, sizeof path, "%s/res", tmpdir);
    free(report_md((const char *[]){ path, NULL }));
    char *d = report_file("data/throughput_host_tiny_b1_steps.tsv");
    char want[200];
    snprintf(want, sizeof want, "\t%.4f\t%.4f\t4\n", lo, hi);
    cr_expect_not_null(strstr(d, want), "missing %s in\n%s", want, d);
    cr_expect_not_null(strstr(d, "32\t-\t-\t-\t1\n"), "%s", d);
    free(d);
    d = report_file("data/throughput_host_tiny_b1_cold.tsv");
    cr_expect_not_null(strstr(d, "\n32\t"), "the cold step is listed:\n%s", d);
    cr_expect_null(strstr(d, "\n64\t"), "%s", d);
    free(d);
    char *gp = report_file("gnuplot/throughput_host_tiny_b1.gp");
    cr_expect_not_null(strstr(gp, "with points ls 94 title 'one cold step (no warm-up): not a timing'"), "%s", gp);
    cr_expect_not_null(strstr(gp, "with yerrorbars"), "%s", gp);
    free(gp);
}

/* ---- timelines (item 4) ---------------------------------------------------------------- */

/* A synthetic timeline: n lines, phases changing every few hundred lines
 * (names repeating as steps do), one spike of the core total and one of
 * RSS at lines of their own, noise elsewhere. */
static void write_timeline(const char *path, int n, int spike_live, int spike_rss)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "# test timeline\nt_sec\tkind\tphase\tcategory\tdelta_bytes\trss_bytes\tweights\ttrainable\tgrads\t"
               "optimizer\tsaved_activations\tworkspace\tlive_total\n");
    static const char *const phases[] = { "load",   "init",   "fwd L0", "fwd L1", "head",
                                          "bwd L1", "bwd L0", "optim",  "harness" };
    unsigned s = 12345;
    for (int i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        long long noise = (long long)(s >> 8) % 1000000;
        long long w = 100000000, saved = 5000000 + noise, rss = 200000000 + noise * 3;
        if (i == spike_live) saved += 90000000;
        if (i == spike_rss) rss += 400000000;
        const char *ph = phases[(i / 337) % 9];
        fprintf(f, "%.6f\t%s\t%s\t-\t0\t%lld\t%lld\t0\t0\t0\t%lld\t0\t%lld\n", i * 0.001, i % 3 ? "mem" : "rss", ph,
                rss, w, saved, w + saved);
    }
    fclose(f);
}

Test(report, timeline_decimation_keeps_every_peak_and_phase_boundary, .init = make_tmp, .fini = remove_tmp)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/t.timeline.tsv", tmpdir);
    const int n = 200000, spike_live = 123457, spike_rss = 54321;
    write_timeline(path, n, spike_live, spike_rss);
    ftr_timeline tl;
    cr_assert_eq(ftr_timeline_read(path, &tl, err, sizeof err), 0, "%s", err);
    cr_assert_eq(tl.n, n);
    cr_expect_eq(tl.nnames, 9);
    int *keep = malloc((size_t)n * sizeof *keep);
    for (int buckets = 1; buckets <= 4096; buckets *= 8) {
        int nk = ftr_timeline_decimate(&tl, tl.rows[0].t, tl.rows[n - 1].t, buckets, keep);
        int boundaries = 0, has_live = 0, has_rss = 0;
        for (int i = 1; i < n; i++) boundaries += tl.rows[i].phase != tl.rows[i - 1].phase;
        cr_expect_leq(nk, 4 * buckets + 2 * boundaries + 2, "%d buckets: %d rows kept", buckets, nk);
        for (int q = 0; q < nk; q++) {
            if (q) cr_assert_gt(keep[q], keep[q - 1], "in time order, no repeats");
            has_live |= keep[q] == spike_live;
            has_rss |= keep[q] == spike_rss;
        }
        cr_expect(has_live, "%d buckets: the core peak (line %d) dropped", buckets, spike_live);
        cr_expect(has_rss, "%d buckets: the RSS peak (line %d) dropped", buckets, spike_rss);
        /* Every phase boundary: the last line of one phase and the first of the next. */
        int q = 0;
        for (int i = 1; i < n; i++) {
            if (tl.rows[i].phase == tl.rows[i - 1].phase) continue;
            while (q < nk && keep[q] < i - 1) q++;
            cr_expect(q + 1 < nk && keep[q] == i - 1 && keep[q + 1] == i, "%d buckets: boundary at line %d dropped",
                      buckets, i);
        }
    }
    /* A window: its own peaks, nothing outside it. */
    int nk = ftr_timeline_decimate(&tl, 50.0, 60.0, 10, keep);
    cr_assert_gt(nk, 0);
    cr_expect_geq(tl.rows[keep[0]].t, 50.0);
    cr_expect_leq(tl.rows[keep[nk - 1]].t, 60.0);
    free(keep);
    /* Steps: what lies between load/init/harness phases. */
    cr_expect_gt(tl.nsteps, 10);
    cr_expect_eq(tl.step_t0[0], 2 * 337 * 0.001, "the first step starts with fwd L0 at line 674");
    ftr_timeline_free(&tl);
}

Test(report, timeline_figure_shows_the_measured_steps_from_their_low_point, .init = make_tmp, .fini = remove_tmp,
     .timeout = 120)
{
    need_fixture();
    const char *bin = getenv("FTBENCH_BIN");
    if (!bin) cr_skip_test("FTBENCH_BIN is set by make test");
    char cmd[2048], path[1024], err[256];
    snprintf(cmd, sizeof cmd,
             "'%s' run --model tiny --method lora --seq 64 --steps 2 --warmup 1 --threads 1 --run-id tl "
             "--out '%s/res' >/dev/null 2>&1",
             bin, tmpdir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    snprintf(path, sizeof path, "%s/res/host/tl/lora.tiny.s64.b1.timeline.tsv", tmpdir);
    ftr_timeline tl;
    cr_assert_eq(ftr_timeline_read(path, &tl, err, sizeof err), 0, "%s", err);
    cr_assert_eq(tl.nsteps, 3, "1 warm-up + 2 measured steps");
    double lo, hi;
    int first;
    ftr_timeline_window(&tl, 1, &lo, &hi, &first);
    cr_expect_eq(first, 1);
    cr_expect_eq(lo, tl.step_t0[1]);
    cr_expect_eq(hi, tl.step_t1[2]);
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    snprintf(path, sizeof path, "%s/res", tmpdir);
    free(report_md((const char *[]){ path, NULL }));
    char *gp = report_file("gnuplot/timeline_host_lora.tiny.s64.b1.gp");
    char want[200];
    snprintf(want, sizeof want, "set xrange [%.6f:%.6f]\n", lo, hi);
    const char *main_panel = strstr(gp, "# right: the measured steps");
    cr_assert_not_null(main_panel, "%s", gp);
    cr_expect_not_null(strstr(main_panel, want), "the main panel is the measured steps: %s\n%s", want, gp);
    /* y from the steps' low point: not 0, not above any drawn value. */
    const char *y = strstr(main_panel, "ylo = ");
    cr_assert_not_null(y);
    double ylo = atof(y + 6);
    double dmin = INFINITY, dmax = 0;
    for (int i = 0; i < tl.n; i++)
        if (tl.rows[i].t >= lo && tl.rows[i].t <= hi) {
            dmin = fmin(dmin, fmin(tl.rows[i].live, tl.rows[i].rss));
            dmax = fmax(dmax, fmax(tl.rows[i].live, tl.rows[i].rss));
        }
    /* (tiny's core is a fraction of a MiB under 8 MiB of RSS: here the low
     * point is near 0; a real model's is its weights, docs/REPORTS.md) */
    cr_expect(fabs(ylo - fmax(0, dmin - 0.08 * (dmax - dmin))) < 1e-4, "ylo %f, data from %f to %f", ylo, dmin, dmax);
    /* The strip above the data, the peak labels below their marks. */
    cr_expect_not_null(strstr(main_panel, "strip_lo = ymax + 0.09 * (ymax - ylo)"), "%s", main_panel);
    cr_expect_not_null(strstr(main_panel, "offset 0.8,-1.1 boxed") ? main_panel
                                                                   : strstr(main_panel, "offset -0.8,-1.1 boxed"),
                       "%s", main_panel);
    cr_expect_null(strstr(main_panel, ",0.9 boxed"), "no label above a mark (into the strip)");
    /* The whole cell beside it, the window shaded. */
    snprintf(want, sizeof want, "set object 1 rect from %.6f, graph 0 to %.6f, graph 1", lo, hi);
    cr_expect_not_null(strstr(gp, want), "%s", gp);
    free(gp);
    ftr_timeline_free(&tl);
}

/* ---- the interactive timeline page (item 7; the browser test is ci/test-timeline-browser.sh) ---------- */

Test(report, timeline_page_is_self_contained_small_and_keeps_the_peaks, .init = make_tmp, .fini = remove_tmp,
     .timeout = 120)
{
    /* A long timeline (2 million lines, more than a 4096-token cell of a
     * real model writes): the page must stay under 5 MB and carry both
     * peaks' lines. */
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/res/host/r", tmpdir);
    snprintf(path, sizeof path, "mkdir -p '%s' '%s/rep/timelines'", dir, tmpdir);
    cr_assert_eq(system(path), 0);
    snprintf(path, sizeof path, "%s/lora.m.s4096.b1.timeline.tsv", dir);
    const int n = 2000000, spike_live = 1234567, spike_rss = 765432;
    write_timeline(path, n, spike_live, spike_rss);
    ftr_rec rec;
    memset(&rec, 0, sizeof rec);
    rec.cell = "lora.m.s4096.b1</script><script>alert(1)</script>";
    rec.device = "host";
    rec.run_id = "r";
    rec.dir = dir;
    rec.timeline_file = "lora.m.s4096.b1.timeline.tsv";
    rec.peak_mib = NAN;
    rec.core_peak_mib = NAN;
    rec.warmup_steps = 1;
    ftr_plotter p;
    memset(&p, 0, sizeof p);
    char out[600];
    snprintf(out, sizeof out, "%s/rep", tmpdir);
    p.out = out;
    char err[512];
    cr_assert_eq(ftr_timeline_page(&p, &rec, NULL, 0, "tl", err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/timelines/tl.html", out);
    long size = fsize(path);
    cr_expect_lt(size, 5L * 1024 * 1024, "the page is %ld bytes", size);
    char *html = th_slurp_or_null(path, NULL);
    cr_assert_not_null(html);
    cr_expect_null(strstr(html, "http://"), "no network reference");
    cr_expect_null(strstr(html, "https://"), "no network reference");
    cr_expect_null(strstr(html, "<script src"), "no external script");
    cr_expect_null(strstr(html, "</script><script>alert"), "a cell name cannot close the data script");
    /* Both spikes' lines are in the drawn data ("ln": the file's line numbers). */
    const char *ln = strstr(html, "\"ln\":[");
    cr_assert_not_null(ln);
    char want[32];
    snprintf(want, sizeof want, ",%d,", spike_live);
    cr_expect_not_null(strstr(ln, want), "the core peak's line is drawn");
    snprintf(want, sizeof want, ",%d,", spike_rss);
    cr_expect_not_null(strstr(ln, want), "the RSS peak's line is drawn");
    free(html);
}

Test(report, every_timeline_figure_links_its_interactive_page, .init = make_tmp, .fini = remove_tmp)
{
    need_fixture();
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    char *md = report_md((const char *[]){ FIXTURE, NULL });
    cr_expect_not_null(strstr(md, "[interactive](timelines/" TIMELINE_PLOT ".html)"), "%s", md);
    free(md);
    char *html = report_file("timelines/" TIMELINE_PLOT ".html");
    cr_expect_not_null(strstr(html, "<canvas id=\"plot\">"));
    cr_expect_not_null(strstr(html, "window.ftb"));
    free(html);
    char *page = report_file("report.html");
    cr_expect_not_null(strstr(page, "href=\"timelines/" TIMELINE_PLOT ".html\">interactive</a>"));
    free(page);
}

/* ---- machines (issue 22: cells of one sweep measured on unlike cluster nodes) ---- */

static void put_timed_record(FILE *f, int seq, const char *cpu, const char *blas)
{
    fprintf(f,
            "{\"schema\":1,\"cell\":\"lora.tiny.s%d.b1\",\"outcome\":\"ok\",\"seq\":%d,\"batch\":1,"
            "\"emulated\":false,\"device\":{\"name\":\"host\",\"budget_bytes\":%lld},"
            "\"model\":{\"name\":\"tiny\"},\"method\":{\"label\":\"lora\",\"options\":{}},"
            "\"memory\":{\"peak_rss_bytes\":%lld},\"timing\":{\"tokens_per_second\":%d},"
            "\"host\":{\"cpu_model\":\"%s\",\"blas_core\":\"%s\"}}\n",
            seq, seq, 4096LL << 20, 20LL << 20, 1000 * seq, cpu, blas);
}

Test(report, throughput_from_unlike_machines_is_marked, .init = make_tmp, .fini = remove_tmp)
{
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    char dir[512], path[1400];
    snprintf(dir, sizeof dir, "%s/alike", tmpdir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "w");
    put_timed_record(f, 32, "AMD EPYC", "Haswell");
    put_timed_record(f, 64, "AMD EPYC", "Haswell");
    fclose(f);
    char *md = report_md((const char *[]){ dir, NULL });
    cr_expect_not_null(strstr(md, "Throughput (tokens/s)"), "%s", md);
    cr_expect_null(strstr(md, "unlike machines"), "one kind of machine: %s", md);
    free(md);

    snprintf(dir, sizeof dir, "%s/unlike", tmpdir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    f = fopen(path, "w");
    put_timed_record(f, 32, "AMD EPYC", "Haswell");
    put_timed_record(f, 64, "Intel Xeon Gold 6230", "SkylakeX");
    fclose(f);
    md = report_md((const char *[]){ dir, NULL });
    cr_expect_not_null(strstr(md, "WARNING: measured on unlike machines (CPU / BLAS kernel: AMD EPYC / Haswell; "
                                  "Intel Xeon Gold 6230 / SkylakeX)"),
                       "%s", md);
    free(md);
}

/* A line led by a NUL byte is reported with its file and line, not taken
 * as blank; a link back up the results tree does not count a file twice. */
Test(report, nul_lines_are_reported_and_link_loops_counted_once, .init = make_tmp, .fini = remove_tmp)
{
    char dir[512], path[1400];
    snprintf(dir, sizeof dir, "%s/run", tmpdir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    put_record(f, 0, 256, "ok", 700, 3482);
    fputc(0, f);
    put_record(f, 0, 512, "ok", 900, 3482);
    fclose(f);
    snprintf(path, sizeof path, "%s/loop", dir);
    cr_assert_eq(symlink("..", path), 0);
    ftr_set s;
    memset(&s, 0, sizeof s);
    char err[512];
    cr_assert_gt(ftr_load(&s, tmpdir, NULL, err, sizeof err), 0, "%s", err);
    cr_expect_eq(s.n, 1, "one record, read once: %d", s.n);
    cr_expect_eq(s.nsources, 1, "one file: %d", s.nsources);
    cr_assert_eq(s.nskipped, 1);
    cr_expect_not_null(strstr(s.skipped[0], "/run/results.jsonl:2: a NUL byte at column 1"), "%s", s.skipped[0]);
    ftr_set_free(&s);
}

/* A timeline line whose t_sec is NaN never reaches the plot data, and the
 * reader says where it was. */
Test(report, a_nan_time_in_a_timeline_is_dropped_and_counted, .init = make_tmp, .fini = remove_tmp)
{
    char path[600];
    snprintf(path, sizeof path, "%s/x.timeline.tsv", tmpdir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("# ftbench timeline\nt_sec\tkind\tphase\tcategory\tdelta_bytes\trss_bytes\tlive_total\n"
          "0.001\trss\tload\t-\t0\t1048576\t0\n"
          "nan\trss\tload\t-\t0\t2097152\t0\n"
          "0.003\trss\tload\t-\t0\t3145728\t0\n",
          f);
    fclose(f);
    ftr_timeline tl;
    char err[512];
    cr_assert_eq(ftr_timeline_read(path, &tl, err, sizeof err), 0, "%s", err);
    cr_expect_eq(tl.n, 2);
    for (int i = 0; i < tl.n; i++) cr_expect(isfinite(tl.rows[i].t));
    cr_expect_eq(tl.ndropped, 1);
    cr_expect_eq(tl.first_dropped, 4, "line %d", tl.first_dropped);
    ftr_timeline_free(&tl);
}

/* ---- time per operation (issue 17 item 1) -------------------------------------------- */

/* The cells of a Markdown table row starting with "| name |", as numbers
 * (NaN for text); returns how many. */
static int md_row(const char *md, const char *table_title, const char *name, double *v, int cap)
{
    const char *t = strstr(md, table_title);
    cr_assert_not_null(t, "no table %s", table_title);
    char key[64];
    snprintf(key, sizeof key, "\n| %s |", name);
    const char *row = strstr(t, key);
    cr_assert_not_null(row, "no row %s", name);
    row += strlen(key);
    int n = 0;
    while (n < cap && *row && *row != '\n') {
        char *end;
        v[n++] = strtod(row, &end);
        if (end == row) v[n - 1] = NAN;
        row = strchr(row, '|');
        if (!row) break;
        row++;
    }
    return n;
}

Test(report, time_per_operation_table_and_plot_beside_the_memory_breakdown, .init = make_tmp, .fini = remove_tmp,
     .timeout = 120)
{
    const char *bin = getenv("FTBENCH_BIN");
    if (!bin) cr_skip_test("FTBENCH_BIN is set by make test");
    char cmd[2048], path[1024];
    snprintf(cmd, sizeof cmd,
             "for m in lora mezo; do '%s' run --model tiny --method $m --seq 64 --steps 2 --warmup 1 --threads 1 "
             "--run-id t --out '%s/res' >/dev/null 2>&1 || exit 1; done",
             bin, tmpdir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    snprintf(path, sizeof path, "%s/res", tmpdir);
    char *md = report_md((const char *[]){ path, NULL });
    const char *title = "**Time per step by operation at 64 tokens (ms): tiny on host, batch 1**";
    const char *hdr = strstr(md, title);
    cr_assert_not_null(hdr, "%s", md);
    for (int g = 0; g < FTR_NOPG; g++) {
        char h[64];
        snprintf(h, sizeof h, "| %s |", ftr_op_group_title(g));
        const char *at = strstr(hdr, h);
        cr_expect(at && at < strstr(hdr, "\n|:---"), "no column %s", h);
    }
    /* Each row's groups add up to its step (rounded to 3 decimals each). */
    double v[16];
    for (int m = 0; m < 2; m++) {
        const char *name = m ? "mezo" : "lora";
        cr_assert_eq(md_row(md, title, name, v, 16), FTR_NOPG + 2, "%s", name);
        double sum = 0;
        for (int g = 0; g < FTR_NOPG; g++) sum += v[g];
        /* Nine rounded groups and the rounded step: ten half-units. */
        cr_expect(fabs(sum - v[FTR_NOPG]) <= (FTR_NOPG + 1) * 0.0005 + 1e-9, "%s: groups %.3f, step %.3f", name, sum,
                  v[FTR_NOPG]);
        cr_expect(v[0] > 0 && v[1] > 0, "%s: linears %.3f, attention %.3f", name, v[0], v[1]);
        cr_expect(v[FTR_NOPG + 1] > 0, "%s: linears GFLOP/s %.1f", name, v[FTR_NOPG + 1]);
        if (m) cr_expect_eq(v[6], 0, "mezo has no optimizer class: %.3f", v[6]);
    }
    free(md);
    /* The plot: its data and script, registered right after the memory breakdown. */
    char *d = report_file("data/ops_host_tiny_b1_s64.tsv");
    cr_expect_not_null(strstr(d, "\nlora\t"), "%s", d);
    cr_expect_not_null(strstr(d, "\nmezo\t"), "%s", d);
    free(d);
    char *gp = report_file("gnuplot/ops_host_tiny_b1_s64.gp");
    cr_expect_not_null(strstr(gp, "set style histogram rowstacked"), "%s", gp);
    cr_expect_not_null(strstr(gp, "'data/ops_host_tiny_b1_s64.tsv' using 2:xtic(1) title 'linears'"), "%s", gp);
    cr_expect_not_null(strstr(gp, "using 10 title 'outside the core' lw 0.5 lc rgb op_col_9 fs @op_fs_9"), "%s", gp);
    free(gp);
    char *style = report_file("gnuplot/style.gp");
    cr_expect_not_null(strstr(style, "op_col_9 = '#BBBBBB'; op_fs_9 = "), "%s", style);
    free(style);
    md = report_file("report.md");
    const char *mem = strstr(md, "[script](gnuplot/breakdown_host_tiny_b1_s64.gp)"),
               *ops = strstr(md, "[script](gnuplot/ops_host_tiny_b1_s64.gp)");
    cr_expect(mem && ops && ops > mem, "the time breakdown follows the memory breakdown");
    free(md);
}

/* ---- the plan's prediction against the measurement (issue 24 item 3) ------------------ */

/* Real cells of the tiny model: every record carries what `ftbench plan`
 * predicts for it (memory.plan); the report sets it beside the measured
 * peak in a table and draws it as a line through the measured points.  A
 * method declaring no memory model gets no line and is named as such. */
Test(report, predicted_peak_rss_is_drawn_as_a_line_through_the_measured_points, .init = make_tmp, .fini = remove_tmp,
     .timeout = 180)
{
    const char *bin = getenv("FTBENCH_BIN");
    if (!bin) cr_skip_test("FTBENCH_BIN is set by make test");
    const char *plugins = getenv("FTBENCH_TEST_PLUGINS") ? getenv("FTBENCH_TEST_PLUGINS") : "build/tests/plugins";
    char cmd[2048], path[1024];
    snprintf(cmd, sizeof cmd,
             "FTBENCH_PLAN_CACHE='%s/cache' '%s' sweep --model tiny --methods-dir '%s' --methods lora,mezo,nomodel "
             "--seqs 16,64 --threads 1 --run-id p --out '%s/res' >/dev/null 2>&1",
             tmpdir, bin, plugins, tmpdir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    /* The records: the plan's prediction, its core part equal to the cell's
     * own analytic model (the plan is that model from shapes). */
    snprintf(path, sizeof path, "%s/res/host/p/results.jsonl", tmpdir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char line[1 << 16];
    double pred[2][2] = { { 0 } };
    int nrec = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *rec = json_loads(line, 0, NULL);
        cr_assert_not_null(rec);
        const char *label = json_string_value(json_object_get(json_object_get(rec, "method"), "label"));
        int seq = (int)json_integer_value(json_object_get(rec, "seq"));
        json_t *mem = json_object_get(rec, "memory"), *plan = json_object_get(mem, "plan");
        cr_assert(json_is_object(plan), "%s s%d: no memory.plan", label, seq);
        const char *model = json_string_value(json_object_get(plan, "model"));
        if (!strcmp(label, "nomodel")) {
            cr_expect_str_eq(model, "no model");
            cr_expect_null(json_object_get(plan, "predicted_peak_rss_bytes"));
            cr_expect_not_null(strstr(json_string_value(json_object_get(plan, "reason")), "no memory model"));
        } else {
            cr_expect_str_eq(model, "method plan");
            json_int_t core = json_integer_value(json_object_get(plan, "core_peak_bytes"));
            json_int_t base = json_integer_value(json_object_get(plan, "baseline_bytes"));
            json_int_t all = json_integer_value(json_object_get(plan, "predicted_peak_rss_bytes"));
            cr_expect_eq(core,
                         json_integer_value(json_object_get(json_object_get(mem, "analytic"), "peak_total_bytes")),
                         "%s s%d: the plan's core peak is the cell's analytic peak", label, seq);
            cr_expect(base > 0 && all == core + base, "%s s%d: %lld = %lld + %lld", label, seq, (long long)all,
                      (long long)core, (long long)base);
            pred[!strcmp(label, "mezo")][seq == 64] = (double)all / 1048576.0;
        }
        nrec++;
        json_decref(rec);
    }
    fclose(f);
    cr_assert_eq(nrec, 6);
    setenv("FTBENCH_GNUPLOT", "/nonexistent", 1);
    snprintf(path, sizeof path, "%s/res", tmpdir);
    char *md = report_md((const char *[]){ path, NULL });
    const char *title = "**Predicted vs measured peak RSS (MiB): tiny on host, batch 1**";
    const char *t = strstr(md, title);
    cr_assert_not_null(t, "%s", md);
    for (int m = 0; m < 2; m++) {
        const char *name = m ? "mezo" : "lora";
        char key[64];
        snprintf(key, sizeof key, "\n| %s |", name);
        const char *row = strstr(t, key);
        cr_assert_not_null(row, "no row %s", name);
        row += strlen(key);
        double worst = 0;
        for (int k = 0; k < 2; k++) {
            double p, meas, err;
            cr_assert_eq(sscanf(row, " %lf / %lf (%lf%%)", &p, &meas, &err), 3, "%s: %.80s", name, row);
            cr_expect(fabs(p - pred[m][k]) < 0.051, "%s: table %.1f, record %.3f", name, p, pred[m][k]);
            /* the table's figures are rounded to 0.1 MiB */
            cr_expect(fabs(err - 100.0 * (p - meas) / meas) < 10.0 / meas + 0.06, "%s: error %.1f%% of %.1f / %.1f",
                      name, err, p, meas);
            cr_expect(fabs(err) < 50, "%s: the plan is %.1f%% off on tiny", name, err);
            if (fabs(err) > fabs(worst)) worst = err;
            row = strchr(row, '|') + 1;
        }
        double w;
        cr_assert_eq(sscanf(row, " %lf%%", &w), 1, "%s: worst %.40s", name, row);
        cr_expect(fabs(w - worst) < 0.051, "%s: worst %.1f, cells' worst %.1f", name, w, worst);
    }
    const char *nm = strstr(t, "\n| nomodel |");
    cr_assert_not_null(nm);
    cr_expect(strstr(nm, "| no model: what this method holds depends on its data") &&
                  strstr(nm, "|\n") > strstr(nm, "no model"),
              "%.300s", nm);
    free(md);
    /* The plot: measured as points, predicted as a line in the same style;
     * nomodel keeps its measured line, gets no predicted one, and the note says so. */
    char *gp = report_file("gnuplot/mem_host_tiny_b1.gp");
    char *d = report_file("data/mem_host_tiny_b1_plan.tsv");
    for (int m = 0; m < 3; m++) {
        const char *name = m == 0 ? "lora" : m == 1 ? "mezo" : "nomodel";
        char want[160];
        snprintf(want, sizeof want, "with %s ls ", m < 2 ? "points" : "linespoints");
        const char *at = strstr(gp, want);
        int found = 0;
        for (; at && !found; at = strstr(at + 1, want)) {
            char tail[96];
            snprintf(tail, sizeof tail, " title '%s', \\\n", name);
            const char *nl = strchr(at, '\n');
            found = nl && strstr(at, tail) && strstr(at, tail) < nl + 1;
        }
        cr_expect(found, "%s measured %s:\n%s", name, want, gp);
        snprintf(want, sizeof want, "title '%s predicted'", name);
        if (m < 2)
            cr_expect_not_null(strstr(gp, want), "%s has no predicted line:\n%s", name, gp);
        else
            cr_expect_null(strstr(gp, want), "nomodel was given a line:\n%s", gp);
    }
    cr_expect_not_null(strstr(gp, "'data/mem_host_tiny_b1_plan.tsv' using 1:"), "%s", gp);
    cr_expect_not_null(strstr(gp, "no model: nomodel (measured only)"), "%s", gp);
    cr_expect_not_null(strstr(d, "\n16\t"), "%s", d);
    free(gp);
    free(d);
}
