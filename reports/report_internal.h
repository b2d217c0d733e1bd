/*
 * report_internal.h — the pieces of `ftbench report`, shared by the files of
 * reports/ and by tests/test_report.c.  Not an interface of ftbench.
 *
 *   load.c       results.jsonl files → records (bad lines reported by number)
 *   aggregate.c  records → scopes (device × model × batch), medians,
 *                reductions vs LoRA, per-token slopes, max context
 *   tables.c     a small table model rendered as Markdown, HTML and LaTeX
 *   style.c      the fixed method → line style mapping, category colours
 *   plot.c       gnuplot through a pipe: terminals, scripts, data files
 *   timeline.c   per-cell timelines: reading, reduction, the plot
 *   report.c     the command: options, report.md, report.html, table.tex
 */
#ifndef FTB_REPORTS_INTERNAL_H
#define FTB_REPORTS_INTERNAL_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#define FTR_NCAT 6 /* the core's categories, in ftb_mem_category order */
/* Groups of the record's operation classes (ops.classes) that the time
 * breakdown stacks: linears, attention, head + loss, elementwise, method
 * hooks, dequantization, optimizer, core other, outside the core. */
#define FTR_NOPG 9

/* ---- growable string ------------------------------------------------------ */

typedef struct {
    char *s;
    size_t n, cap;
} ftr_buf;

void ftr_buf_printf(ftr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ftr_buf_puts(ftr_buf *b, const char *s);
void ftr_buf_free(ftr_buf *b);
/* Writes the buffer to path; 0 or -1. */
int ftr_buf_write(const ftr_buf *b, const char *path);

/* ---- records --------------------------------------------------------------- */

typedef struct {
    const char *source; /* results.jsonl it came from (owned by the set) */
    int line;           /* 1-based line number there                    */
    const char *dir;    /* that file's directory (timelines are beside)  */
    json_t *j;          /* the whole record                              */
    /* identity */
    const char *cell, *run_id, *outcome, *device, *model, *label;
    char options[256]; /* "k=v,k=v" sorted; "" for the defaults        */
    int series;        /* index into ftr_set.series                     */
    int seq, batch, emulated;
    int fit;   /* written by `ftbench fit`                       */
    int train; /* carries task accuracy or gradient fidelity     */
    /* measurements (NaN when absent) */
    double budget_mib, peak_mib, core_peak_mib, saved_peak_mib, baseline_mib;
    double split_mib[FTR_NCAT]; /* the core's categories at the core's peak */
    double tokens_per_s, step_s, final_loss;
    double accuracy, fidelity_cos, fidelity_relerr;
    double analytic_peak_mib, unexplained_pct; /* memory.analytic (docs/CORE.md) */
    /* memory.plan (docs/PLAN.md): what `ftbench plan` predicted for this
     * cell when it ran; plan_model "method plan", "host default", "no
     * model", "unavailable", NULL for records made before it was recorded */
    double plan_mib;
    const char *plan_model, *plan_reason;
    /* time per measured step by operation group (ops, docs/HARNESS.md), ms;
     * has_ops 0: the record has no ops (made before they were recorded) */
    int has_ops;
    double op_ms[FTR_NOPG], op_step_ms, linear_gflops;
    const char *eval_task, *eval_metric;
    const char *timeline_file; /* relative to dir, or NULL                */
    /* timing of each step (step_seconds_all, warm-up steps first) */
    int warmup_steps;  /* -1 when the record does not say               */
    json_t *step_wall; /* borrowed from j; NULL when absent            */
    /* hardware counters: 1 read, 0 unavailable (hwc_reason says why), -1 no field */
    int hwc;
    const char *hwc_reason;
} ftr_rec;

/* One `ftbench fidelity` record (fidelity.jsonl): a method's gradient, or
 * zeroth-order estimate with a query budget n, against the exact one. */
typedef struct {
    const char *source;
    int line;
    json_t *j;
    const char *model, *label;
    char options[256];     /* "k=v,..." sorted, without the query budget   */
    char all_options[256]; /* with it: as a training record's options read */
    char name[320];        /* label, or label[options]                      */
    int n;                 /* query budget (queries, samples) of a zeroth-order estimate; 0: a gradient */
    int seq;
    double cosine, relerr, params;
} ftr_fid;

typedef struct {
    char *label;    /* method label                                  */
    char *options;  /* "" or "k=v,..."                                */
    char name[320]; /* display name: label, or label[options]        */
    int style;      /* gnuplot line style number (style.c)           */
    int order;      /* sort key                                      */
} ftr_series;

typedef struct {
    int n, cap;
    ftr_rec *r;
    int nseries;
    ftr_series *series;
    int nsources;
    char **sources; /* results files read, in order                 */
    char **dirs;    /* [nsources] their directories                  */
    int nskipped;
    char **skipped; /* "path:LINE: reason"                           */
    int nfid;
    ftr_fid *fid; /* fidelity records, in file order               */
    int ngiven;
    char **given; /* the paths the report was asked for            */
} ftr_set;

/* Adds every results.jsonl and fidelity.jsonl under path (a directory, searched a few levels
 * deep, or a results file itself).  Bad lines are kept in s->skipped and
 * printed on warn (NULL: silent).  Returns the number of records added, or
 * -1 when path holds no results file (err filled). */
int ftr_load(ftr_set *s, const char *path, FILE *warn, char *err, size_t errlen);
/* Assigns series (label + options) and their display names and styles;
 * call once after every ftr_load. */
void ftr_finish(ftr_set *s);
void ftr_set_free(ftr_set *s);

/* ---- aggregation ------------------------------------------------------------ */

/* One (series, seq) of a scope: every sweep/run record of it. */
typedef struct {
    int n;                                                           /* records                                       */
    int n_measured;                                                  /* with a peak RSS (ok or over_budget)           */
    double peak_mib, core_peak_mib, saved_mib, tokens_per_s, step_s; /* medians */
    /* tokens/s of every measured step of the cell's records (step_seconds_all
     * after the warm-up): min, median, max; NaN when the records lack them */
    int n_steps;
    double tps_min, tps_med, tps_max;
    int cold_single;        /* one measured step and no warm-up before it: not a timing */
    int over;               /* over the budget (median peak or an over_budget outcome) */
    const char *failure;    /* outcome of the last record when none was measured */
    const ftr_rec *rep;     /* the record whose peak is the median (split, loss, timeline) */
    double plan_mib;        /* median of the measured records' predicted peak RSS (memory.plan); NaN none */
    const char *plan_model; /* memory.plan.model of the cell's last record; NULL none */
    const char *plan_reason;
} ftr_agg;

typedef struct {
    char device[96], model[96];
    int batch, emulated;
    double budget_mib;    /* NaN if unknown                                */
    char id[256];         /* file-name-safe: device_model_bN               */
    char title[320];      /* "smollm2-135m on rpi4-4gb (emulated), batch 1" */
    int nseries, *series; /* indices into the set's series, display order */
    int nseq, *seqs;
    ftr_agg *agg;      /* [nseries × nseq]: agg[i * nseq + k]           */
    int at_seq;        /* the breakdown length                          */
    int ref;           /* row of the LoRA reference, -1 if none         */
    double *slope_kib; /* [nseries] saved activations KiB per token, NaN */
} ftr_scope;

ftr_agg *ftr_scope_agg(const ftr_scope *sc, int row, int k);
/* Two budgets (MiB) are the same to the MiB; NaN (unknown) only to NaN. */
int ftr_same_budget(double a, double b);

/* Max context that fits, per device × budget × model × batch × series. */
typedef struct {
    char device[96], model[96];
    int batch, series;
    double budget_mib;
    int fit_longest;   /* longest `fit` probe that fitted; 0 none; -1 no fit records */
    int fit_failing;   /* shortest probe that did not fit; 0 none       */
    int sweep_longest; /* longest swept length measured within budget; 0 none */
} ftr_maxctx;

typedef struct {
    int nscopes;
    ftr_scope *scopes;
    int nmax;
    ftr_maxctx *max;
    int ntrain;
    const ftr_rec **train; /* records with accuracy or gradient fidelity */
} ftr_report;

/* at_seq > 0 forces the breakdown length (when a scope has it). */
void ftr_aggregate(const ftr_set *s, int at_seq, ftr_report *out);
void ftr_report_free(ftr_report *r);

double ftr_median(double *v, int n); /* sorts v; NaN when n == 0          */
/* 100·(1 − x/ref); NaN if either is missing. */
double ftr_reduction(double x, double ref);

/* ---- tables ---------------------------------------------------------------- */

typedef struct {
    char *title;
    char *caption; /* a sentence under the table                     */
    char *label;   /* LaTeX label, file-name-safe                    */
    int ncols, nrows;
    char **head;         /* [ncols]                                        */
    char **cell;         /* [nrows × ncols]                                */
    unsigned char *mark; /* [nrows × ncols]: 1 = over budget, 2 = failed   */
    int *rowrule;        /* [nrows]: a rule above this row                 */
    char *span;          /* a header over columns span_from..span_to       */
    int span_from, span_to;
} ftr_table;

ftr_table *ftr_table_new(const char *title, const char *label, int ncols, const char *const *head);
void ftr_table_add_row(ftr_table *t);
void ftr_table_set(ftr_table *t, int row, int col, unsigned char mark, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void ftr_table_caption(ftr_table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ftr_table_span(ftr_table *t, int from, int to, const char *text);
void ftr_table_free(ftr_table *t);
void ftr_table_markdown(const ftr_table *t, ftr_buf *b);
void ftr_table_html(const ftr_table *t, ftr_buf *b);
void ftr_table_latex(const ftr_table *t, ftr_buf *b);

/* The report's tables, in order. */
typedef struct {
    int n;
    ftr_table **t;
    int *scope; /* scope index, or -1 for cross-scope tables      */
} ftr_tables;

void ftr_build_tables(const ftr_set *s, const ftr_report *r, ftr_tables *out);

/* Fidelity records grouped by model, method (without n), n and length:
 * what the fidelity table and plot show. */
typedef struct {
    const char *model, *name;
    int n, seq, runs;
    double cos_mean, cos_min, cos_max, rel_mean, rel_min, rel_max, params;
} ftr_fid_group;
/* Sorted by model, method, length, n; *out is malloc'd (free it). */
int ftr_fid_groups(const ftr_set *s, ftr_fid_group **out);
/* The fidelity record matching a training record (same model, method label
 * and options, nearest length), or NULL. */
const ftr_fid *ftr_fid_for(const ftr_set *s, const ftr_rec *r);
/* The fidelity table (NULL without fidelity records), and one figure per
 * model (fidelity.c). */
ftr_table *ftr_fidelity_table(const ftr_set *s);
void ftr_tables_free(ftr_tables *t);

/* Escapers. */
void ftr_html_escape(ftr_buf *b, const char *s);
void ftr_latex_escape(ftr_buf *b, const char *s);
/* A gnuplot string literal in single quotes, enhanced-text characters
 * (_ ^ { } @ & ~) escaped so they print as themselves. */
void ftr_gp_quote(ftr_buf *b, const char *s);
/* Sanitises into a file-name-safe id ([A-Za-z0-9._-], others → '_'). */
void ftr_safe_name(char *out, size_t n, const char *s);

/* ---- styles ------------------------------------------------------------------ */

/* The gnuplot line style of a method label (fixed for known methods, a
 * hash of the name otherwise; `variant` > 0 gives the same colour with
 * another dash pattern). */
int ftr_style_for(const char *label, int variant);
int ftr_style_order(const char *label);
/* The whole style file (terminals, method styles used, category colours);
 * png_libgd: this gnuplot has no pngcairo. */
void ftr_style_file(ftr_buf *b, const ftr_set *s, int png_libgd);
const char *ftr_category_name(int c);    /* "weights", ... "saved_activations" */
const char *ftr_style_colour(int style); /* "#0072B2" */
const char *ftr_category_colour(int c);  /* the category's colour, "#D55E00" */
/* Label heights (fractions of the plot's height) pushed at least gap apart,
 * kept below 1 (plot.c). */
void ftr_spread_labels(double *f, int n, double gap);
const char *ftr_category_title(int c); /* "saved activations" */
/* The operation group of a record's class name (ops.classes: "linear_q",
 * "attn_bwd", "other", ...) and its title (colours: op_col_N in style.gp). */
int ftr_op_group(const char *cls);
const char *ftr_op_group_title(int g); /* "linears", "attention", ... */

/* ---- plots ------------------------------------------------------------------- */

typedef struct {
    char name[256]; /* file stem: plots/<name>.<fmt>                 */
    char caption[512];
    int scope;          /* -1 cross-scope                                */
    int wide;           /* timeline: a full-width figure                 */
    int drawn;          /* every requested format produced               */
    char problem[256];  /* why it was not drawn                          */
    int page;           /* a timeline with its timelines/<name>.html      */
    const ftr_rec *rec; /* the timeline's record                         */
} ftr_plot;

typedef struct {
    const char *out;    /* output directory                               */
    char gnuplot[4096]; /* executable; "" when missing                   */
    char missing_why[512];
    int want[3];           /* png, svg, pdf                                  */
    int have[3];           /* the format can be produced                     */
    char fmt_note[3][256]; /* how, or why not                              */
    int pdf_via_eps;       /* pdfcairo missing: postscript eps + ps2pdf      */
    int log_axes;          /* --log: memory axes in base 10                   */
    int linear_x;          /* --linear-x: lengths on a linear axis (default base 2) */
    int nplots, cap;
    ftr_plot *plots;
} ftr_plotter;

extern const char *const ftr_formats[3]; /* "png", "svg", "pdf" */

/* Finds gnuplot (FTBENCH_GNUPLOT, else PATH) and probes its terminals. */
void ftr_plotter_init(ftr_plotter *p, const char *out, const int want[3], int log_axes);
void ftr_plotter_free(ftr_plotter *p);
/* Registers a plot whose data files and gnuplot/<name>.gp script are
 * written already, and renders it in every wanted format.  Returns its index. */
int ftr_plot_render(ftr_plotter *p, const char *name, int scope, int wide, const char *script, const char *fmt_caption,
                    ...) __attribute__((format(printf, 6, 7)));

/* Every plot of the report (data, script, images). */
void ftr_make_plots(ftr_plotter *p, const ftr_set *s, const ftr_report *r, char *const *cells, int ncells);

/* ---- timelines (timeline.c, timeline_html.c) ------------------------------------ */

typedef struct {
    double t, rss;        /* rss in MiB, NaN before the first sample */
    double cat[FTR_NCAT]; /* MiB                                       */
    double live;          /* MiB                                       */
    int phase;            /* index into ftr_timeline.names             */
    unsigned char cls;    /* 1 forward, 2 backward, 3 optimizer, 4 other */
} ftr_tl_row;

typedef struct {
    int n;
    ftr_tl_row *rows; /* every line, in time order                    */
    int nnames;
    char **names; /* phase names ("fwd L3", "optim", "load", ...)  */
    int nsteps;   /* steps: between the harness's own phases       */
    double *step_t0, *step_t1;
    int ndropped;      /* lines whose t_sec is not a finite number: left out */
    int first_dropped; /* the first one's line number (1-based), 0 none       */
} ftr_timeline;

extern const char *const ftr_phase_class_names[5]; /* "", "forward", ... "other" */
unsigned char ftr_phase_class(const char *phase);
/* Reads a <cell>.timeline.tsv; 0 or -1 (why in err). */
int ftr_timeline_read(const char *path, ftr_timeline *tl, char *err, size_t errlen);
void ftr_timeline_free(ftr_timeline *tl);
/* Rows kept to draw [t_lo, t_hi] in `buckets` time buckets: per bucket its
 * first, last, highest-core and highest-RSS rows, every row on either side
 * of a phase change, and the window's two peaks.  keep[] (room for tl->n)
 * gets the row indices in time order; returns their count. */
int ftr_timeline_decimate(const ftr_timeline *tl, double t_lo, double t_hi, int buckets, int *keep);
/* Rows of the highest core total and highest RSS among rows [lo, hi). */
void ftr_timeline_peaks(const ftr_timeline *tl, int lo, int hi, int *ipk_live, int *ipk_rss);
/* The measured steps (after `warmup` steps): [lo, hi] and the first
 * measured step's index; the whole cell and -1 when there are no steps. */
void ftr_timeline_window(const ftr_timeline *tl, int warmup, double *lo, double *hi, int *first_step);
/* The timeline file of a record (a regular file beside it), or -1. */
int ftr_timeline_path(const ftr_rec *rec, char *path, size_t n, char *err, size_t errlen);
/* The plot name of a record's timeline (device + cell, + run if taken). */
void ftr_timeline_name(const ftr_plotter *p, const ftr_rec *rec, char *name, size_t n);
/* The interactive page timelines/<name>.html of a record's timeline, with
 * the other records given to compare with; 0 or -1 (timeline_html.c). */
int ftr_timeline_page(const ftr_plotter *p, const ftr_rec *rec, const ftr_rec *const *others, int nothers,
                      const char *name, char *err, size_t errlen);
/* Timeline of one record: reduced data file + script; 0 or -1 (why in err). */
int ftr_timeline_plot(ftr_plotter *p, const ftr_rec *rec, int scope, char *err, size_t errlen);

/* Fidelity against the query budget n, one figure per model (fidelity.c). */
void ftr_fidelity_plots(ftr_plotter *p, const ftr_set *s);

/* PNG width and height from the IHDR chunk; 0 or -1. */
int ftr_png_size(const char *path, int *w, int *h);

#endif
