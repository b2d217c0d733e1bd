/*
 * tables.c — the report's tables, built once as cells of text and rendered
 * three ways: Markdown (report.md), HTML (report.html) and LaTeX booktabs
 * (table.tex).  A cell is NULL when there is nothing to show; marks tell
 * renderers which cells are over the budget (1) or failed (2).
 */
#include "report_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ftr_table *ftr_table_new(const char *title, const char *label, int ncols, const char *const *head)
{
    ftr_table *t = calloc(1, sizeof *t);
    t->title = strdup(title);
    t->label = strdup(label);
    t->ncols = ncols;
    t->head = calloc((size_t)ncols, sizeof *t->head);
    for (int c = 0; c < ncols; c++) t->head[c] = strdup(head[c] ? head[c] : "");
    return t;
}

void ftr_table_add_row(ftr_table *t)
{
    size_t n = (size_t)(t->nrows + 1) * (size_t)t->ncols;
    t->cell = realloc(t->cell, n * sizeof *t->cell);
    t->mark = realloc(t->mark, n);
    t->rowrule = realloc(t->rowrule, (size_t)(t->nrows + 1) * sizeof *t->rowrule);
    for (int c = 0; c < t->ncols; c++) {
        t->cell[(size_t)t->nrows * (size_t)t->ncols + (size_t)c] = NULL;
        t->mark[(size_t)t->nrows * (size_t)t->ncols + (size_t)c] = 0;
    }
    t->rowrule[t->nrows] = 0;
    t->nrows++;
}

void ftr_table_set(ftr_table *t, int row, int col, unsigned char mark, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t i = (size_t)row * (size_t)t->ncols + (size_t)col;
    free(t->cell[i]);
    t->cell[i] = strdup(buf);
    t->mark[i] = mark;
}

void ftr_table_caption(ftr_table *t, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(t->caption);
    t->caption = strdup(buf);
}

void ftr_table_span(ftr_table *t, int from, int to, const char *text)
{
    free(t->span);
    t->span = strdup(text);
    t->span_from = from;
    t->span_to = to;
}

void ftr_table_free(ftr_table *t)
{
    if (!t) return;
    for (int c = 0; c < t->ncols; c++) free(t->head[c]);
    for (size_t i = 0; i < (size_t)t->nrows * (size_t)t->ncols; i++) free(t->cell[i]);
    free(t->head);
    free(t->cell);
    free(t->mark);
    free(t->rowrule);
    free(t->title);
    free(t->caption);
    free(t->label);
    free(t->span);
    free(t);
}

static const char *cell(const ftr_table *t, int r, int c) { return t->cell[(size_t)r * (size_t)t->ncols + (size_t)c]; }

static unsigned char mark(const ftr_table *t, int r, int c)
{
    return t->mark[(size_t)r * (size_t)t->ncols + (size_t)c];
}

/* A column is numeric (right-aligned) when every cell in it is a number,
 * possibly signed or marked: "12.5", "-3.0", "4118.1*". */
static int numeric_col(const ftr_table *t, int c)
{
    if (c == 0) return 0;
    int any = 0;
    for (int r = 0; r < t->nrows; r++) {
        const char *x = cell(t, r, c);
        if (!x || mark(t, r, c) == 2) continue;
        const char *p = x + (x[0] == '-');
        if (!(*p >= '0' && *p <= '9')) return 0;
        any = 1;
    }
    return any || t->nrows == 0;
}

/* ---- Markdown ---------------------------------------------------------------- */

static void md_text(ftr_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            ftr_buf_puts(b, "\\|");
        else {
            char c[2] = { *s, 0 };
            ftr_buf_puts(b, c);
        }
    }
}

void ftr_table_markdown(const ftr_table *t, ftr_buf *b)
{
    ftr_buf_printf(b, "**%s**", t->title);
    if (t->span) ftr_buf_printf(b, " — columns: %s", t->span);
    ftr_buf_puts(b, "\n\n|");
    for (int c = 0; c < t->ncols; c++) {
        ftr_buf_puts(b, " ");
        md_text(b, t->head[c]);
        ftr_buf_puts(b, " |");
    }
    ftr_buf_puts(b, "\n|");
    for (int c = 0; c < t->ncols; c++) ftr_buf_puts(b, numeric_col(t, c) ? "---:|" : ":---|");
    ftr_buf_puts(b, "\n");
    for (int r = 0; r < t->nrows; r++) {
        ftr_buf_puts(b, "|");
        for (int c = 0; c < t->ncols; c++) {
            const char *x = cell(t, r, c);
            ftr_buf_puts(b, " ");
            md_text(b, x ? x : "-");
            ftr_buf_puts(b, " |");
        }
        ftr_buf_puts(b, "\n");
    }
    if (t->caption) ftr_buf_printf(b, "\n%s\n", t->caption);
    ftr_buf_puts(b, "\n");
}

/* ---- HTML -------------------------------------------------------------------- */

void ftr_table_html(const ftr_table *t, ftr_buf *b)
{
    ftr_buf_printf(b, "<table id=\"tab-%s\">\n<caption>", t->label);
    ftr_html_escape(b, t->title);
    ftr_buf_puts(b, "</caption>\n<thead>\n");
    if (t->span) {
        ftr_buf_puts(b, "<tr>");
        for (int c = 0; c < t->ncols; c++) {
            if (c == t->span_from) {
                ftr_buf_printf(b, "<th class=\"span\" colspan=\"%d\">", t->span_to - t->span_from + 1);
                ftr_html_escape(b, t->span);
                ftr_buf_puts(b, "</th>");
                c = t->span_to;
            } else {
                ftr_buf_puts(b, "<th></th>");
            }
        }
        ftr_buf_puts(b, "</tr>\n");
    }
    ftr_buf_puts(b, "<tr>");
    for (int c = 0; c < t->ncols; c++) {
        ftr_buf_puts(b, numeric_col(t, c) ? "<th class=\"num\">" : "<th>");
        ftr_html_escape(b, t->head[c]);
        ftr_buf_puts(b, "</th>");
    }
    ftr_buf_puts(b, "</tr>\n</thead>\n<tbody>\n");
    for (int r = 0; r < t->nrows; r++) {
        ftr_buf_puts(b, t->rowrule[r] ? "<tr class=\"rule\">" : "<tr>");
        for (int c = 0; c < t->ncols; c++) {
            const char *x = cell(t, r, c);
            unsigned char m = mark(t, r, c);
            const char *cls = m == 1 ? "over" : m == 2 ? "fail" : NULL;
            int num = numeric_col(t, c);
            if (num || cls)
                ftr_buf_printf(b, "<td class=\"%s%s%s\">", num ? "num" : "", num && cls ? " " : "", cls ? cls : "");
            else
                ftr_buf_puts(b, "<td>");
            if (x)
                ftr_html_escape(b, x);
            else
                ftr_buf_puts(b, "&ndash;");
            ftr_buf_puts(b, "</td>");
        }
        ftr_buf_puts(b, "</tr>\n");
    }
    ftr_buf_puts(b, "</tbody>\n</table>\n");
    if (t->caption) {
        ftr_buf_puts(b, "<p class=\"note\">");
        ftr_html_escape(b, t->caption);
        ftr_buf_puts(b, "</p>\n");
    }
}

/* ---- LaTeX (booktabs) ------------------------------------------------------------ */

void ftr_table_latex(const ftr_table *t, ftr_buf *b)
{
    ftr_buf_puts(b, "\\begin{table}[tbp]\n\\centering\n\\small\n\\caption{");
    ftr_latex_escape(b, t->title);
    if (t->caption) {
        ftr_buf_puts(b, ". ");
        ftr_latex_escape(b, t->caption);
    }
    ftr_buf_puts(b, "}\n\\label{tab:");
    ftr_buf_puts(b, t->label);
    ftr_buf_puts(b, "}\n\\begin{tabular}{");
    for (int c = 0; c < t->ncols; c++) ftr_buf_puts(b, numeric_col(t, c) ? "r" : "l");
    ftr_buf_puts(b, "}\n\\toprule\n");
    if (t->span) {
        for (int c = 0; c < t->ncols; c++) {
            if (c) ftr_buf_puts(b, " & ");
            if (c == t->span_from) {
                ftr_buf_printf(b, "\\multicolumn{%d}{c}{", t->span_to - t->span_from + 1);
                ftr_latex_escape(b, t->span);
                ftr_buf_puts(b, "}");
                c = t->span_to;
            }
        }
        ftr_buf_printf(b, " \\\\\n\\cmidrule(lr){%d-%d}\n", t->span_from + 1, t->span_to + 1);
    }
    for (int c = 0; c < t->ncols; c++) {
        if (c) ftr_buf_puts(b, " & ");
        ftr_latex_escape(b, t->head[c]);
    }
    ftr_buf_puts(b, " \\\\\n\\midrule\n");
    for (int r = 0; r < t->nrows; r++) {
        if (t->rowrule[r] && r) ftr_buf_puts(b, "\\midrule\n");
        for (int c = 0; c < t->ncols; c++) {
            if (c) ftr_buf_puts(b, " & ");
            const char *x = cell(t, r, c);
            unsigned char m = mark(t, r, c);
            if (!x)
                ftr_buf_puts(b, "--");
            else if (m == 2) {
                ftr_buf_puts(b, "\\textsc{");
                ftr_latex_escape(b, x);
                ftr_buf_puts(b, "}");
            } else if (m == 1) {
                /* "123.4*" → \textit{123.4}$^{*}$ */
                size_t n = strlen(x);
                char *y = strdup(x);
                if (n && y[n - 1] == '*') y[n - 1] = 0;
                ftr_buf_puts(b, "\\textit{");
                ftr_latex_escape(b, y);
                ftr_buf_puts(b, "}$^{*}$");
                free(y);
            } else {
                /* A leading minus sign as a real minus. */
                if (x[0] == '-' && x[1] >= '0' && x[1] <= '9') {
                    ftr_buf_puts(b, "$-$");
                    ftr_latex_escape(b, x + 1);
                } else {
                    ftr_latex_escape(b, x);
                }
            }
        }
        ftr_buf_puts(b, " \\\\\n");
    }
    ftr_buf_puts(b, "\\bottomrule\n\\end{tabular}\n\\end{table}\n\n");
}

/* ---- the report's tables ---------------------------------------------------------- */

static void add(ftr_tables *ts, ftr_table *t, int scope)
{
    ts->t = realloc(ts->t, (size_t)(ts->n + 1) * sizeof *ts->t);
    ts->scope = realloc(ts->scope, (size_t)(ts->n + 1) * sizeof *ts->scope);
    ts->t[ts->n] = t;
    ts->scope[ts->n] = scope;
    ts->n++;
}

static const char *short_outcome(const char *o)
{
    if (!o) return "?";
    if (!strcmp(o, "crashed")) return "CRASH";
    if (!strcmp(o, "killed")) return "KILLED";
    if (!strcmp(o, "timeout")) return "TIMEOUT";
    if (!strcmp(o, "oom")) return "OOM";
    if (!strcmp(o, "error")) return "ERROR";
    if (!strcmp(o, "over_budget")) return "OVER";
    return o;
}

/* A table with one row per series and one column per length. */
static ftr_table *seq_table(const ftr_set *s, const ftr_scope *sc, const char *title, const char *kind, int extra_cols,
                            const char *const *extra_head)
{
    int ncols = 1 + sc->nseq + extra_cols;
    const char **head = calloc((size_t)ncols, sizeof *head);
    char(*nums)[32] = calloc((size_t)sc->nseq + 1, sizeof *nums);
    head[0] = "method";
    for (int k = 0; k < sc->nseq; k++) {
        snprintf(nums[k], sizeof nums[k], "%d", sc->seqs[k]);
        head[1 + k] = nums[k];
    }
    for (int e = 0; e < extra_cols; e++) head[1 + sc->nseq + e] = extra_head[e];
    char label[320], full_title[512];
    snprintf(label, sizeof label, "%s-%s", kind, sc->id);
    snprintf(full_title, sizeof full_title, "%s: %s", title, sc->title);
    ftr_table *t = ftr_table_new(full_title, label, ncols, head);
    if (sc->nseq) ftr_table_span(t, 1, sc->nseq, "sequence length (tokens)");
    free(head);
    free(nums);
    (void)s;
    return t;
}

static int multi_records(const ftr_scope *sc)
{
    for (int i = 0; i < sc->nseries * sc->nseq; i++)
        if (sc->agg[i].n_measured > 1) return 1;
    return 0;
}

/* The kinds of machine (CPU model, BLAS kernel) the scope's measured cells
 * ran on: throughput from unlike machines (cluster nodes) is not one
 * comparison.  Writes "A / K1; B / K2" into out when there is more than
 * one kind and returns their number; records without host.cpu_model (made
 * before it was recorded) are not counted. */
static int machine_kinds(const ftr_scope *sc, char *out, size_t n)
{
    char kinds[8][160];
    int nk = 0;
    out[0] = 0;
    for (int row = 0; row < sc->nseries; row++)
        for (int k = 0; k < sc->nseq; k++) {
            ftr_agg *a = ftr_scope_agg(sc, row, k);
            if (!a->n_measured || !a->rep) continue;
            json_t *host = json_object_get(a->rep->j, "host");
            const char *cpu = json_string_value(json_object_get(host, "cpu_model"));
            const char *blas = json_string_value(json_object_get(host, "blas_core"));
            if (!cpu) continue;
            char kind[160];
            snprintf(kind, sizeof kind, "%.100s / %.40s", cpu, blas ? blas : "?");
            int seen = 0;
            for (int i = 0; i < nk && !seen; i++) seen = !strcmp(kinds[i], kind);
            if (!seen && nk < 8) snprintf(kinds[nk++], sizeof kinds[0], "%s", kind);
        }
    if (nk > 1)
        for (int i = 0; i < nk; i++) {
            size_t l = strlen(out);
            snprintf(out + l, n - l, "%s%s", i ? "; " : "", kinds[i]);
        }
    return nk;
}

/* Where a step's time went, per method at the breakdown length: the
 * representative record's ops (means per measured step) in operation
 * groups; NULL when no record there has them. */
static ftr_table *ops_table(const ftr_set *s, const ftr_scope *sc)
{
    int k = -1;
    for (int q = 0; q < sc->nseq; q++)
        if (sc->seqs[q] == sc->at_seq) k = q;
    double top = 0;
    for (int row = 0; k >= 0 && row < sc->nseries; row++) {
        const ftr_agg *a = ftr_scope_agg(sc, row, k);
        if (a->rep && a->rep->has_ops && a->rep->op_step_ms > top) top = a->rep->op_step_ms;
    }
    if (!(top > 0)) return NULL;
    /* One precision for the whole table: three significant places on its longest step. */
    int dec = top < 10 ? 3 : top < 100 ? 2 : top < 1000 ? 1 : 0;
    const char *head[1 + FTR_NOPG + 2];
    head[0] = "method";
    for (int g = 0; g < FTR_NOPG; g++) head[1 + g] = ftr_op_group_title(g);
    head[1 + FTR_NOPG] = "step";
    head[2 + FTR_NOPG] = "linears GFLOP/s";
    char label[320], title[512];
    snprintf(label, sizeof label, "ops-%s", sc->id);
    snprintf(title, sizeof title, "Time per step by operation at %d tokens (ms): %s", sc->at_seq, sc->title);
    ftr_table *t = ftr_table_new(title, label, 3 + FTR_NOPG, head);
    int rows = 0;
    for (int row = 0; row < sc->nseries; row++) {
        const ftr_agg *a = ftr_scope_agg(sc, row, k);
        const ftr_rec *x = a->rep;
        if (!x || !x->has_ops) continue;
        ftr_table_add_row(t);
        ftr_table_set(t, rows, 0, 0, "%s", s->series[sc->series[row]].name);
        for (int g = 0; g < FTR_NOPG; g++) ftr_table_set(t, rows, 1 + g, 0, "%.*f", dec, x->op_ms[g]);
        ftr_table_set(t, rows, 1 + FTR_NOPG, 0, "%.*f", dec, x->op_step_ms);
        if (isfinite(x->linear_gflops)) ftr_table_set(t, rows, 2 + FTR_NOPG, 0, "%.1f", x->linear_gflops);
        rows++;
    }
    ftr_table_span(t, 1, FTR_NOPG, "operation group");
    ftr_table_caption(t,
                      "Mean wall time per measured step of each operation group (record `ops`, docs/HARNESS.md), "
                      "of the record whose peak is the cell's median: linears = the base's GEMMs (q, k, v, o, gate, "
                      "up, down), elementwise = norms, RoPE, SwiGLU, residuals and the embedding, core other = the "
                      "core's own allocation and control, outside the core = the method's code between the core's "
                      "calls (MeZO's perturbations); the groups add up to the step.  linears GFLOP/s: their FLOPs by "
                      "shape over their time.%s",
                      sc->emulated ? "  Emulated device: measured on this host, not on the device." : "");
    return t;
}

/* The plan's prediction (memory.plan, docs/PLAN.md) against the measured
 * peak, per cell, and each method's worst relative error; NULL when no
 * record of the scope carries a prediction. */
static ftr_table *plan_table(const ftr_set *s, const ftr_scope *sc)
{
    int any = 0;
    for (int i = 0; i < sc->nseries * sc->nseq; i++) any |= sc->agg[i].plan_model != NULL;
    if (!any) return NULL;
    const char *extra[] = { "worst error" };
    ftr_table *t = seq_table(s, sc, "Predicted vs measured peak RSS (MiB)", "plan", 1, extra);
    for (int row = 0; row < sc->nseries; row++) {
        ftr_table_add_row(t);
        ftr_table_set(t, row, 0, 0, "%s", s->series[sc->series[row]].name);
        double worst = NAN;
        int worst_seq = 0;
        const char *model = NULL, *reason = NULL;
        for (int k = 0; k < sc->nseq; k++) {
            const ftr_agg *a = ftr_scope_agg(sc, row, k);
            if (a->plan_model && !model) {
                model = a->plan_model;
                reason = a->plan_reason;
            }
            if (!a->n_measured || !isfinite(a->plan_mib) || !(a->peak_mib > 0)) continue;
            double err = 100.0 * (a->plan_mib - a->peak_mib) / a->peak_mib;
            ftr_table_set(t, row, 1 + k, 0, "%.1f / %.1f (%+.1f%%)", a->plan_mib, a->peak_mib, err);
            if (!isfinite(worst) || fabs(err) > fabs(worst)) {
                worst = err;
                worst_seq = sc->seqs[k];
            }
        }
        if (isfinite(worst))
            ftr_table_set(t, row, 1 + sc->nseq, 0, "%+.1f%% at %d%s", worst, worst_seq,
                          model && !strcmp(model, "host default") ? " (host default)" : "");
        else if (model && !strcmp(model, "no model")) {
            /* the method's words, without the marker every such reason starts with */
            if (reason && !strncmp(reason, "no memory model: ", 17)) reason += 17;
            ftr_table_set(t, row, 1 + sc->nseq, 0, "no model%s%.200s", reason ? ": " : "", reason ? reason : "");
        } else if (model)
            ftr_table_set(t, row, 1 + sc->nseq, 0, "%s%s%.200s", model, reason ? ": " : "", reason ? reason : "");
        else
            ftr_table_set(t, row, 1 + sc->nseq, 0, "not recorded");
    }
    ftr_table_caption(t, "predicted / measured peak RSS (relative error of the prediction: 100 x (predicted - "
                         "measured) / measured).  The prediction is what `ftbench plan` gives for the cell, recorded "
                         "with it when it ran (memory.plan, docs/PLAN.md): the analytic core peak from shapes plus the "
                         "process baseline measured once per host.  no model: the method declares no memory model, "
                         "nothing is predicted; host default: the method has no memory_plan and the core's default "
                         "stands for it; not recorded: records made before predictions were recorded.");
    return t;
}

static void scope_tables(const ftr_set *s, const ftr_scope *sc, int si, ftr_tables *ts)
{
    char budget[96] = "unknown";
    if (isfinite(sc->budget_mib)) snprintf(budget, sizeof budget, "%.0f MiB", sc->budget_mib);
    const char *med = multi_records(sc) ? " Where a cell was measured more than once the median is shown." : "";

    /* Peak RSS. */
    ftr_table *t = seq_table(s, sc, "Peak RSS (MiB)", "peak", 0, NULL);
    for (int row = 0; row < sc->nseries; row++) {
        ftr_table_add_row(t);
        ftr_table_set(t, row, 0, 0, "%s", s->series[sc->series[row]].name);
        for (int k = 0; k < sc->nseq; k++) {
            ftr_agg *a = ftr_scope_agg(sc, row, k);
            if (a->n_measured)
                ftr_table_set(t, row, 1 + k, a->over ? 1 : 0, "%.1f%s", a->peak_mib, a->over ? "*" : "");
            else if (a->n && a->failure && !strcmp(a->failure, "skipped"))
                ftr_table_set(t, row, 1 + k, 1, "over*"); /* not run: over already at a shorter length */
            else if (a->n)
                ftr_table_set(t, row, 1 + k, 2, "%s", short_outcome(a->failure));
        }
    }
    ftr_table_caption(t,
                      "Peak resident set size of the cell's process (VmHWM), budget %s; * over the budget "
                      "(over*: not run, the method was over it at a shorter length); "
                      "OOM/CRASH/TIMEOUT/ERROR: the cell failed.%s",
                      budget, med);
    add(ts, t, si);

    /* Reduction vs LoRA. */
    if (sc->ref >= 0) {
        t = seq_table(s, sc, "Peak RSS reduction vs LoRA (%)", "reduction", 0, NULL);
        int row_out = 0;
        for (int row = 0; row < sc->nseries; row++) {
            if (row == sc->ref) continue;
            ftr_table_add_row(t);
            ftr_table_set(t, row_out, 0, 0, "%s", s->series[sc->series[row]].name);
            for (int k = 0; k < sc->nseq; k++) {
                ftr_agg *a = ftr_scope_agg(sc, row, k), *l = ftr_scope_agg(sc, sc->ref, k);
                double red = a->n_measured && l->n_measured ? ftr_reduction(a->peak_mib, l->peak_mib) : NAN;
                if (isfinite(red)) ftr_table_set(t, row_out, 1 + k, 0, "%.1f", red);
            }
            row_out++;
        }
        ftr_table_caption(t,
                          "100 x (1 - peak / peak of %s) at each length: positive = less memory than LoRA, "
                          "negative = more.",
                          s->series[sc->series[sc->ref]].name);
        add(ts, t, si);
    }

    /* Saved activations. */
    const char *slope_head[] = { "KiB/token" };
    t = seq_table(s, sc, "Saved activations at their peak (MiB)", "saved", 1, slope_head);
    for (int row = 0; row < sc->nseries; row++) {
        ftr_table_add_row(t);
        ftr_table_set(t, row, 0, 0, "%s", s->series[sc->series[row]].name);
        for (int k = 0; k < sc->nseq; k++) {
            ftr_agg *a = ftr_scope_agg(sc, row, k);
            if (a->n_measured && isfinite(a->saved_mib)) ftr_table_set(t, row, 1 + k, 0, "%.1f", a->saved_mib);
        }
        if (isfinite(sc->slope_kib[row])) ftr_table_set(t, row, 1 + sc->nseq, 0, "%.1f", sc->slope_kib[row]);
    }
    ftr_table_caption(t,
                      "Peak of the core's saved_activations category (bytes kept for the backward pass); "
                      "KiB/token: least-squares slope over the lengths measured (batch %d).",
                      sc->batch);
    add(ts, t, si);

    /* The analytic memory model against the measured peak (only for records that carry it). */
    int any_analytic = 0;
    for (int i = 0; i < sc->nseries * sc->nseq; i++)
        any_analytic |= sc->agg[i].rep && isfinite(sc->agg[i].rep->unexplained_pct);
    if (any_analytic) {
        t = seq_table(s, sc, "Peak RSS not explained by the analytic memory model (%)", "unexplained", 0, NULL);
        for (int row = 0; row < sc->nseries; row++) {
            ftr_table_add_row(t);
            ftr_table_set(t, row, 0, 0, "%s", s->series[sc->series[row]].name);
            for (int k = 0; k < sc->nseq; k++) {
                ftr_agg *a = ftr_scope_agg(sc, row, k);
                if (a->n_measured && a->rep && isfinite(a->rep->unexplained_pct))
                    ftr_table_set(t, row, 1 + k, 0, "%.1f", a->rep->unexplained_pct);
            }
        }
        ftr_table_caption(t, "100 x (peak RSS - baseline RSS - predicted core peak) / peak RSS, where the prediction "
                             "(memory.analytic, docs/CORE.md) walks the core's schedule from shapes and the "
                             "method's own model; the rest is allocator slack, BLAS/OpenMP buffers and pages.");
        add(ts, t, si);
    }

    t = plan_table(s, sc);
    if (t) add(ts, t, si);

    /* Throughput. */
    t = seq_table(s, sc, "Throughput (tokens/s)", "throughput", 0, NULL);
    for (int row = 0; row < sc->nseries; row++) {
        ftr_table_add_row(t);
        ftr_table_set(t, row, 0, 0, "%s", s->series[sc->series[row]].name);
        for (int k = 0; k < sc->nseq; k++) {
            ftr_agg *a = ftr_scope_agg(sc, row, k);
            if (a->n_measured && isfinite(a->tokens_per_s))
                ftr_table_set(t, row, 1 + k, a->over ? 1 : 0, "%.1f%s", a->tokens_per_s, a->over ? "*" : "");
        }
    }
    char kinds[1400];
    int nkinds = machine_kinds(sc, kinds, sizeof kinds);
    ftr_table_caption(t, "batch x length / median step time over the measured steps%s%s%s%s.",
                      sc->emulated ? "; emulated device: measured on this host, not on the device" : "",
                      nkinds > 1 ? "; WARNING: measured on unlike machines (CPU / BLAS kernel: " : "",
                      nkinds > 1 ? kinds : "", nkinds > 1 ? "), so these figures are not one comparison" : "");
    add(ts, t, si);

    t = ops_table(s, sc);
    if (t) add(ts, t, si);
}

void ftr_build_tables(const ftr_set *s, const ftr_report *r, ftr_tables *ts)
{
    memset(ts, 0, sizeof *ts);
    for (int k = 0; k < r->nscopes; k++) scope_tables(s, &r->scopes[k], k, ts);

    if (r->nmax) {
        const char *head[] = { "method",     "device",       "model",         "batch",
                               "budget MiB", "fit: longest", "fit: fails at", "sweep: longest" };
        ftr_table *t = ftr_table_new("Longest sequence that fits", "maxctx", 8, head);
        ftr_table_span(t, 5, 7, "sequence length (tokens)");
        int any_fit = 0;
        for (int i = 0; i < r->nmax; i++) {
            const ftr_maxctx *m = &r->max[i];
            ftr_table_add_row(t);
            t->rowrule[i] = i > 0 && (strcmp(m->device, r->max[i - 1].device) || strcmp(m->model, r->max[i - 1].model));
            ftr_table_set(t, i, 0, 0, "%s", s->series[m->series].name);
            ftr_table_set(t, i, 1, 0, "%s", m->device);
            ftr_table_set(t, i, 2, 0, "%s", m->model);
            ftr_table_set(t, i, 3, 0, "%d", m->batch);
            if (isfinite(m->budget_mib)) ftr_table_set(t, i, 4, 0, "%.0f", m->budget_mib);
            if (m->fit_longest > 0)
                ftr_table_set(t, i, 5, 0, "%d", m->fit_longest);
            else if (m->fit_longest == 0)
                ftr_table_set(t, i, 5, 2, "none");
            if (m->fit_failing > 0) ftr_table_set(t, i, 6, 0, "%d", m->fit_failing);
            if (m->sweep_longest > 0) ftr_table_set(t, i, 7, 0, "%d", m->sweep_longest);
            any_fit |= m->fit_longest >= 0;
        }
        ftr_table_caption(t,
                          "fit: the longest length a `ftbench fit` probe ran within the budget, and the shortest "
                          "that did not (%s); sweep: the longest swept length measured within the budget.",
                          any_fit ? "from fit records" : "no fit records in these results");
        add(ts, t, -1);
    }

    if (r->ntrain) {
        const char *head[] = { "method",       "device",           "model",     "seq", "peak MiB", "task", "accuracy",
                               "grad. cosine", "grad. rel. error", "final loss" };
        ftr_table *t = ftr_table_new("Task accuracy and gradient fidelity", "quality", 10, head);
        int from_fid = 0;
        for (int i = 0; i < r->ntrain; i++) {
            const ftr_rec *x = r->train[i];
            ftr_table_add_row(t);
            ftr_table_set(t, i, 0, 0, "%s", s->series[x->series].name);
            ftr_table_set(t, i, 1, 0, "%s", x->device);
            ftr_table_set(t, i, 2, 0, "%s", x->model);
            ftr_table_set(t, i, 3, 0, "%d", x->seq);
            if (isfinite(x->peak_mib)) ftr_table_set(t, i, 4, 0, "%.1f", x->peak_mib);
            if (x->eval_task) ftr_table_set(t, i, 5, 0, "%s", x->eval_task);
            if (isfinite(x->accuracy)) ftr_table_set(t, i, 6, 0, "%.2f%%", 100.0 * x->accuracy);
            /* The record's own fidelity, else `ftbench fidelity`'s for the same
             * method and model (marked (f)). */
            const ftr_fid *f = isfinite(x->fidelity_cos) ? NULL : ftr_fid_for(s, x);
            if (isfinite(x->fidelity_cos))
                ftr_table_set(t, i, 7, 0, "%.4f", x->fidelity_cos);
            else if (f)
                ftr_table_set(t, i, 7, 0, "%.4f (f)", f->cosine);
            if (isfinite(x->fidelity_relerr))
                ftr_table_set(t, i, 8, 0, "%.2e", x->fidelity_relerr);
            else if (f && isfinite(f->relerr))
                ftr_table_set(t, i, 8, 0, "%.2e (f)", f->relerr);
            from_fid |= f != NULL;
            if (isfinite(x->final_loss)) ftr_table_set(t, i, 9, 0, "%.4f", x->final_loss);
        }
        ftr_table_caption(t, "From training records (eval.accuracy, gradient_fidelity; docs/REPORTS.md)%s.",
                          from_fid ? "; (f): gradient fidelity from `ftbench fidelity` of the same method, options and "
                                     "model (fidelity.jsonl, nearest length)"
                                   : "");
        add(ts, t, -1);
    }
    ftr_table *ft = ftr_fidelity_table(s);
    if (ft) add(ts, ft, -1);
}

void ftr_tables_free(ftr_tables *ts)
{
    for (int i = 0; i < ts->n; i++) ftr_table_free(ts->t[i]);
    free(ts->t);
    free(ts->scope);
    memset(ts, 0, sizeof *ts);
}
