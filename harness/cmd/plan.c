/*
 * plan.c — `ftbench plan`: what each method would hold at its peak, for
 * every sequence length, on a device — predicted from shapes alone (the
 * analytic memory model through each method's memory_plan, ABI 3), with no
 * weights and nothing run; `--verify N` then measures N of those cells
 * through the normal cell machinery and sets the prediction beside them
 * (docs/PLAN.md).
 *
 * A prediction is the core's peak (every byte the core allocates, as the
 * analytic model walks one step) plus the process baseline: what a cell's
 * peak RSS holds beyond its core peak on a tiny model — executable,
 * libraries, BLAS and OpenMP thread buffers, allocator bookkeeping —
 * measured once per host, executable and thread count, and cached.
 *
 * Three kinds of method (say which, per method):
 *   plan        the method's memory_plan: the core's bytes exactly as the
 *               built model's estimate (suite plan);
 *   default     no memory_plan callback (an older ABI or a method without
 *               one): the host's default — a training step of the core
 *               with the base frozen, no state of the method and no hook
 *               bytes; exact only for a method that trains nothing of its
 *               own and whose hooks save nothing ("~" in the table);
 *   no model    memory_plan declines (returns -1 for these options):
 *               never guessed.
 */
#include "commands.h"
#include "plugin.h"
#include "rundir.h"
#include "safe_file.h"
#include "sweep.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const unsigned PLAN_OPTS = CLI_MODEL | CLI_METHODS | CLI_LISTS | CLI_TRAIN | CLI_DEVICE | CLI_OUT;

static void plan_help(FILE *f)
{
    fprintf(f, "usage: ftbench plan --device NAME [--model NAME | --config config.json] [options]\n"
               "Predicts each method's peak RSS for every sequence length from shapes alone (no weights,\n"
               "nothing run): the analytic memory model's core peak plus the process baseline (measured\n"
               "once per host and cached), marked against the device's budget, and the longest length\n"
               "each method fits (searched on the model).  Works for models too large to run here and\n"
               "for any Hugging Face config.json.\n\n"
               "plan options:\n"
               "  --config PATH      a Hugging Face config.json: the model's shapes, no weights needed\n"
               "  --json             the plan as one JSON object on stdout\n"
               "  --baseline-mb X    use X MiB as the process baseline instead of measuring it\n"
               "  --verify N         measure N cells of the table here (every method, the shortest and\n"
               "                     longest lengths that fit this machine) and print predicted against\n"
               "                     measured peak RSS and the worst relative error\n\n"
               "Default lengths: 128..4096 (doubling, up to the model's max_seq).\n"
               "Exit code: 0, 1 a verify cell failed, 2 bad input.\n\noptions:\n");
    ftb_cli_print_options(f, PLAN_OPTS);
}

typedef enum { PLAN_BY_METHOD = 0, PLAN_BY_DEFAULT, PLAN_NO_MODEL, PLAN_BAD_OPTIONS } plan_kind;

typedef struct {
    char label[128];
    char path[PATH_MAX];
    const char *keys[FTB_MAX_METHOD_OPTS], *values[FTB_MAX_METHOD_OPTS];
    int n_opts;
    ftb_plugin plug;
    plan_kind kind;
    char reason[FTB_ERR_LEN]; /* no model: what the method said */
    int offloads;             /* some block keeps its input in a mapped file */
    int64_t *core;            /* [nseq] predicted core peak */
    char (*phase)[32];
    int longest; /* longest length that fits, 0 none */
} plan_method;

typedef struct {
    ftb_model_shape shape;
    ftb_run_opts run;
    int B;
    int64_t baseline;
} plan_inputs;

/* One step of m on B×T tokens: the core's peak.  0, or -1 (the method
 * declined: m->kind becomes PLAN_NO_MODEL with its reason). */
static int predict(plan_method *m, const plan_inputs *in, int T, ftb_memory_estimate *out)
{
    char err[FTB_ERR_LEN] = "";
    memset(out, 0, sizeof *out);
    if (m->kind == PLAN_NO_MODEL || m->kind == PLAN_BAD_OPTIONS) return -1;
    ftb_plan *p = ftb_plan_new(&in->shape, &in->run, err, sizeof err);
    if (!p) {
        m->kind = PLAN_BAD_OPTIONS;
        snprintf(m->reason, sizeof m->reason, "%s", err);
        return -1;
    }
    const ftb_method *meth = m->plug.method;
    int rc = 0;
    if (m->kind == PLAN_BY_METHOD) {
        ftb_options o = { m->n_opts, m->keys, m->values };
        rc = meth->memory_plan(p, &o, in->B, T, out, err, sizeof err);
        const ftb_run_opts *r = ftb_plan_run(p);
        for (int l = 0; rc == 0 && r->keep && l < in->shape.config.n_layers; l++)
            m->offloads |= r->keep[l] == FTB_KEEP_OFFLOAD;
    } else {
        ftb_model_set_trainable(ftb_plan_model(p), 0);
        ftb_plan_estimate(p, in->B, T, 1, NULL, out);
    }
    ftb_plan_free(p);
    if (rc != 0) {
        /* Declared: no model.  Anything else: options the method refuses. */
        int declared = !strncmp(err, FTB_NO_MEMORY_MODEL, strlen(FTB_NO_MEMORY_MODEL));
        m->kind = declared ? PLAN_NO_MODEL : PLAN_BAD_OPTIONS;
        snprintf(m->reason, sizeof m->reason, "%s", err[0] ? err : "the method's plan failed without a reason");
        return -1;
    }
    return 0;
}

/* The longest T in [1, max_seq] whose predicted peak RSS stays within
 * budget, by bisection on the model (peaks grow with T). */
static int longest_fit(plan_method *m, const plan_inputs *in, int64_t budget)
{
    ftb_memory_estimate e;
    int lo = 0, hi = in->shape.config.max_seq + 1; /* lo fits (0: none), hi does not */
    if (predict(m, in, in->shape.config.max_seq, &e) == 0 && e.peak_total + in->baseline <= budget)
        return in->shape.config.max_seq;
    hi = in->shape.config.max_seq;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (predict(m, in, mid, &e) != 0) return 0;
        if (e.peak_total + in->baseline <= budget)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ---- the process baseline, measured once per host --------------------------- */

static void cache_dir(char *out, size_t n)
{
    const char *e = getenv("FTBENCH_PLAN_CACHE");
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (e && *e)
        snprintf(out, n, "%s", e);
    else if (x && *x)
        snprintf(out, n, "%s/ftbench", x);
    else
        snprintf(out, n, "%s/.cache/ftbench", h && *h ? h : "/tmp");
}

/* What identifies the measurement: host, this executable (size and
 * modification time) and the thread count. */
static json_t *baseline_identity(int threads)
{
    struct stat st;
    json_t *id = json_object();
    json_object_set_new(id, "host", json_string(ftb_hostname()));
    if (stat("/proc/self/exe", &st) == 0) {
        json_object_set_new(id, "exe_bytes", json_integer((json_int_t)st.st_size));
        json_object_set_new(id, "exe_mtime", json_integer((json_int_t)st.st_mtime));
    }
    json_object_set_new(id, "threads", json_integer(threads));
    return id;
}

static int g_measuring_baseline;

/* Runs one tiny cell (model "tiny", 16 tokens, one step) and takes what its
 * peak RSS holds beyond the analytic core peak. */
static int measure_baseline(ftb_setup *s, const char *dir, int64_t *bytes, char *err, size_t errlen)
{
    ftb_cell c;
    ftb_setup_cell(s, &c);
    snprintf(c.model_name, sizeof c.model_name, "tiny");
    c.checkpoint = NULL;
    if (ftb_zoo_get("tiny", &c.cfg) != 0) return ftb_errf(err, errlen, "no tiny model in the zoo");
    ftb_base_spec_default(&c.base);
    c.seq = 16;
    c.batch = 1;
    c.steps = 1;
    c.warmup = 0;
    c.timeline = 0;
    c.enforce = FTB_ENFORCE_CHECK;
    c.dataset = "synthetic-lang";
    c.optimizer = FTB_OPTIM_ADAMW;
    c.n_opts = 0;
    /* lora if installed, else the first method found */
    char **labels = NULL;
    int n = 0;
    if (ftb_plugin_list(s->methods_dir, &labels, &n, err, errlen) != 0) return -1;
    const char *pick = NULL;
    for (int i = 0; i < n; i++)
        if (!strcmp(labels[i], "lora")) pick = labels[i];
    if (!pick && n) pick = labels[0];
    int rc = pick ? ftb_plugin_resolve(pick, s->methods_dir, c.method_path, sizeof c.method_path, c.method_label,
                                       sizeof c.method_label, err, errlen)
                  : ftb_errf(err, errlen, "no method installed to measure the process baseline with");
    ftb_plugin_free_list(labels, n);
    if (rc) return -1;
    snprintf(c.run_dir, sizeof c.run_dir, "%s/plan-baseline-run", dir);
    snprintf(c.run_id, sizeof c.run_id, "plan-baseline");
    ftb_cell_make_key(&c);
    ftb_cell_result r;
    /* This cell is the baseline: it gets no prediction (which would need
     * the baseline). */
    g_measuring_baseline = 1;
    int crc = ftb_cell_run(&c, &r, err, errlen);
    g_measuring_baseline = 0;
    if (crc != 0) return -1;
    json_t *mem = json_object_get(r.record, "memory");
    json_t *pk = json_object_get(mem, "peak_rss_bytes");
    json_t *an = json_object_get(json_object_get(mem, "analytic"), "peak_total_bytes");
    rc = 0;
    if (strcmp(r.outcome, "ok") != 0 || !json_is_integer(pk) || !json_is_integer(an))
        rc = ftb_errf(err, errlen, "the baseline cell (%s) did not measure: %s %s", c.key, r.outcome, r.detail);
    else
        *bytes = (int64_t)json_integer_value(pk) - (int64_t)json_integer_value(an);
    ftb_cell_result_free(&r);
    return rc;
}

/* The baseline for threads: cached, or measured now and cached.  how says
 * where it came from. */
static int plan_baseline(ftb_setup *s, int threads, int64_t *bytes, char *how, size_t hn, char *err, size_t errlen)
{
    char dir[PATH_MAX - 64], name[64], path[PATH_MAX];
    cache_dir(dir, sizeof dir);
    snprintf(name, sizeof name, "plan-baseline-t%d.json", threads);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_t *id = baseline_identity(threads);
    json_t *cached = ftb_is_file(path) ? json_load_file(path, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (cached && json_equal(json_object_get(cached, "identity"), id) &&
        json_is_integer(json_object_get(cached, "baseline_bytes"))) {
        *bytes = (int64_t)json_integer_value(json_object_get(cached, "baseline_bytes"));
        snprintf(how, hn, "measured on %s at %s (%d threads), cached in %s", ftb_hostname(),
                 json_is_string(json_object_get(cached, "measured_at"))
                     ? json_string_value(json_object_get(cached, "measured_at"))
                     : "?",
                 threads, path);
        json_decref(cached);
        json_decref(id);
        return 0;
    }
    json_decref(cached);
    if (ftb_mkdirs(dir, err, errlen) != 0) {
        json_decref(id);
        return -1;
    }
    s->cli.threads = threads;
    ftb_setup copy = *s;
    copy.threads = threads;
    if (measure_baseline(&copy, dir, bytes, err, errlen) != 0) {
        json_decref(id);
        return -1;
    }
    char when[40];
    ftb_utc_timestamp(when, sizeof when);
    json_t *o = json_object();
    json_object_set_new(o, "identity", id);
    json_object_set_new(o, "baseline_bytes", json_integer(*bytes));
    json_object_set_new(o, "measured_at", json_string(when));
    json_object_set_new(o, "how",
                        json_string("peak RSS of one step of lora on the zoo model tiny (16 tokens) minus "
                                    "its analytic core peak"));
    char *text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    int dfd = text ? ftb_sf_open_dir(dir, 1, err, errlen) : -1;
    int wrc = dfd >= 0 ? ftb_sf_write_atomic(dfd, name, text, strlen(text), path, err, errlen) : -1;
    if (dfd >= 0) close(dfd);
    free(text);
    if (wrc != 0) fprintf(stderr, "ftbench plan: the baseline is not cached: %s\n", err);
    snprintf(how, hn, "measured now on %s (%d threads), cached in %s", ftb_hostname(), threads, path);
    return 0;
}

/* ---- what a prediction includes ---------------------------------------------- */

static const char *const INCLUDES[] = {
    "every byte the core allocates at the step's peak, by the analytic model's walk (frozen weights in their "
    "storage format, trainable tensors, gradients, optimizer state, activations kept for backward, op "
    "workspaces and one dequantization tile per thread)",
    "the process baseline: executable, libraries, BLAS and OpenMP thread buffers, allocator bookkeeping, as "
    "one tiny cell on this host holds them",
    NULL,
};
static const char *const EXCLUDES[] = {
    "allocator slack beyond the baseline (freed pages the allocator keeps, fragmentation growing with the sizes)",
    "library buffers that grow with the shapes (BLAS packing buffers touched up to the largest panel)",
    "transient buffers a method's hooks allocate and free within one call, where the method's model leaves them "
    "out (docs/methods/)",
    "pages of mapped files outside the core's accounting: offloaded block inputs (KEEP_OFFLOAD) leave the "
    "resident set; --residency lazy is not modelled (every frozen weight is counted resident: an upper bound)",
    "the device's OS and other processes (the budget's usable_fraction stands for them); a baseline measured on "
    "this host, not on the device",
    NULL,
};

static const char *kind_name(plan_kind k)
{
    return k == PLAN_BY_METHOD ? "method plan" : k == PLAN_BY_DEFAULT ? "host default" : "no model";
}

static const char *kind_note(const plan_method *m)
{
    if (m->kind == PLAN_BY_METHOD)
        return m->offloads ? "the method's own plan (ABI 3), equal to its model on a built model; block inputs "
                             "offloaded to a mapped file are not resident and not counted"
                           : "the method's own plan (ABI 3), equal to its model on a built model";
    if (m->kind == PLAN_BY_DEFAULT)
        return "no memory_plan callback: the host's default, a training step of the core with the base frozen, "
               "no state of the method and no hook bytes; exact only if the method trains nothing of its own and "
               "its hooks save nothing";
    return "the method declares no memory model for these options: not guessed";
}

/* ---- the table ------------------------------------------------------------------ */

static void print_table(const plan_method *ms, int nm, const int *seqs, int ns, const plan_inputs *in,
                        const ftb_setup *s, const char *what, const char *baseline_how, double took, double cpu)
{
    char b1[32], b2[32];
    char grp[24] = "";
    if (in->shape.base_dtype == FTB_DTYPE_INT4 || in->shape.base_dtype == FTB_DTYPE_INT4_ASYM)
        snprintf(grp, sizeof grp, " group %d", in->shape.group ? in->shape.group : FTB_QUANT_DEFAULT_GROUP);
    printf("plan: %s on %s, batch %d, base %s%s, %s, %d threads\n", what, s->device.name, in->B,
           ftb_dtype_name(in->shape.base_dtype), grp, ftb_optimizer_selected() == FTB_OPTIM_SGD ? "sgd" : "adamw",
           in->shape.threads);
    if (in->shape.config.shape_only[0])
        printf("note: %s — the core would not compute this model; its shapes, and so its memory, are planned "
               "(rope scaling does not change memory)\n",
               in->shape.config.shape_only);
    printf("\npredicted peak RSS (MiB) on %s, budget %s = core peak + baseline %s\n"
           "  N* over budget; ~N host default (no memory_plan); no model: the method declares none\n",
           s->device.name, ftb_format_bytes(s->budget, b1, sizeof b1), ftb_format_bytes(in->baseline, b2, sizeof b2));
    int w0 = 8;
    for (int k = 0; k < nm; k++)
        if ((int)strlen(ms[k].label) > w0) w0 = (int)strlen(ms[k].label);
    printf("%-*s", w0, "method");
    for (int j = 0; j < ns; j++) printf(" %9d", seqs[j]);
    printf(" %12s\n", "longest fit");
    for (int k = 0; k < nm; k++) {
        const plan_method *m = &ms[k];
        printf("%-*s", w0, m->label);
        for (int j = 0; j < ns; j++) {
            char cell[32];
            if (m->kind == PLAN_NO_MODEL)
                snprintf(cell, sizeof cell, "%s", j ? "" : "no model");
            else {
                int64_t t = m->core[j] + in->baseline;
                snprintf(cell, sizeof cell, "%s%.0f%s", m->kind == PLAN_BY_DEFAULT ? "~" : "", (double)t / 1048576.0,
                         t > s->budget ? "*" : "");
            }
            printf(" %9s", cell);
        }
        char lf[32];
        if (m->kind == PLAN_NO_MODEL)
            snprintf(lf, sizeof lf, "-");
        else if (!m->longest)
            snprintf(lf, sizeof lf, "none");
        else
            snprintf(lf, sizeof lf, "%s%d%s", m->kind == PLAN_BY_DEFAULT ? "~" : "", m->longest,
                     m->longest == in->shape.config.max_seq ? " (max)" : "");
        printf(" %12s\n", lf);
    }
    printf("\nper method:\n");
    for (int k = 0; k < nm; k++) {
        const plan_method *m = &ms[k];
        printf("  %-*s %s: %s%s%s\n", w0, m->label, kind_name(m->kind), kind_note(m), m->reason[0] ? " — " : "",
               m->reason);
    }
    printf("includes:\n");
    for (int i = 0; INCLUDES[i]; i++) printf("  - %s\n", INCLUDES[i]);
    printf("not included:\n");
    for (int i = 0; EXCLUDES[i]; i++) printf("  - %s\n", EXCLUDES[i]);
    printf("baseline %s: %s\n", ftb_format_bytes(in->baseline, b2, sizeof b2), baseline_how);
    printf("planned in %.3f s (%.3f s of CPU), nothing run\n", took, cpu);
}

static json_t *plan_json(const plan_method *ms, int nm, const int *seqs, int ns, const plan_inputs *in,
                         const ftb_setup *s, const char *what, const char *config_path, const char *baseline_how,
                         double took)
{
    json_t *o = json_object();
    json_object_set_new(o, "device", json_string(s->device.name));
    json_object_set_new(o, "budget_bytes", json_integer(s->budget));
    json_object_set_new(o, "model", json_string(what));
    json_object_set_new(o, "config", config_path ? json_string(config_path) : json_null());
    json_object_set_new(o, "shape_only",
                        in->shape.config.shape_only[0] ? json_string(in->shape.config.shape_only) : json_null());
    json_object_set_new(o, "base_dtype", json_string(ftb_dtype_name(in->shape.base_dtype)));
    json_object_set_new(o, "embed_dtype", json_string(ftb_dtype_name(in->shape.embed_dtype)));
    json_object_set_new(o, "group", json_integer(in->shape.group));
    json_object_set_new(o, "optimizer", json_string(ftb_optimizer_selected() == FTB_OPTIM_SGD ? "sgd" : "adamw"));
    json_object_set_new(o, "batch", json_integer(in->B));
    json_object_set_new(o, "threads", json_integer(in->shape.threads));
    json_object_set_new(o, "max_seq", json_integer(in->shape.config.max_seq));
    json_t *bl = json_object();
    json_object_set_new(bl, "bytes", json_integer(in->baseline));
    json_object_set_new(bl, "source", json_string(baseline_how));
    json_object_set_new(o, "baseline", bl);
    json_t *inc = json_array(), *exc = json_array();
    for (int i = 0; INCLUDES[i]; i++) json_array_append_new(inc, json_string(INCLUDES[i]));
    for (int i = 0; EXCLUDES[i]; i++) json_array_append_new(exc, json_string(EXCLUDES[i]));
    json_object_set_new(o, "includes", inc);
    json_object_set_new(o, "excludes", exc);
    json_t *arr = json_array();
    for (int k = 0; k < nm; k++) {
        const plan_method *m = &ms[k];
        json_t *j = json_object();
        json_object_set_new(j, "method", json_string(m->label));
        json_object_set_new(j, "model", json_string(kind_name(m->kind)));
        json_object_set_new(j, "note", json_string(kind_note(m)));
        json_object_set_new(j, "reason", m->reason[0] ? json_string(m->reason) : json_null());
        json_object_set_new(j, "longest_fitting_seq",
                            m->kind == PLAN_NO_MODEL || !m->longest ? json_null() : json_integer(m->longest));
        json_t *cells = json_array();
        for (int q = 0; m->kind != PLAN_NO_MODEL && q < ns; q++) {
            json_t *c = json_object();
            int64_t t = m->core[q] + in->baseline;
            json_object_set_new(c, "seq", json_integer(seqs[q]));
            json_object_set_new(c, "core_peak_bytes", json_integer(m->core[q]));
            json_object_set_new(c, "predicted_peak_rss_bytes", json_integer(t));
            json_object_set_new(c, "peak_phase", json_string(m->phase[q]));
            json_object_set_new(c, "fits", json_boolean(t <= s->budget));
            json_array_append_new(cells, c);
        }
        json_object_set_new(j, "cells", cells);
        json_array_append_new(arr, j);
    }
    json_object_set_new(o, "methods", arr);
    json_object_set_new(o, "seconds", json_real(took));
    return o;
}

/* ---- --verify ------------------------------------------------------------------- */

typedef struct {
    int method, seq_index;
} verify_pick;

/* N cells: every method (those with a model) at the longest and the
 * shortest length of the table that fits this machine (predicted under half
 * of MemAvailable: other jobs share it), longest first, round-robin. */
static int choose_cells(const plan_method *ms, int nm, const int *seqs, int ns, const int64_t *const *pred_here,
                        int n_want, verify_pick *out)
{
    (void)seqs;
    int64_t avail = ftb_meminfo("MemAvailable");
    int64_t here = avail > 0 ? avail / 2 : (int64_t)4 << 30;
    int n = 0;
    for (int pass = 0; pass < 2 && n < n_want; pass++)
        for (int k = 0; k < nm && n < n_want; k++) {
            if (ms[k].kind == PLAN_NO_MODEL) continue;
            int lo = -1, hi = -1;
            for (int j = 0; j < ns; j++)
                if (pred_here[k][j] > 0 && pred_here[k][j] <= here) {
                    if (lo < 0) lo = j;
                    hi = j;
                }
            if (lo < 0) continue;
            int j = pass == 0 ? hi : lo;
            if (pass == 1 && lo == hi) continue;
            out[n].method = k;
            out[n].seq_index = j;
            n++;
        }
    return n;
}

static int run_verify(ftb_setup *s, plan_method *ms, int nm, const int *seqs, int ns, plan_inputs *in_here, int n_want,
                      const char *what, int json_out)
{
    char err[FTB_ERR_LEN + 256];
    /* Predictions for the cells as they run here (this machine's threads). */
    int64_t **pred = calloc((size_t)nm, sizeof *pred);
    for (int k = 0; k < nm; k++) {
        pred[k] = calloc((size_t)ns, sizeof **pred);
        for (int j = 0; ms[k].kind != PLAN_NO_MODEL && j < ns; j++) {
            ftb_memory_estimate e;
            if (predict(&ms[k], in_here, seqs[j], &e) == 0) pred[k][j] = e.peak_total + in_here->baseline;
        }
    }
    verify_pick *picks = calloc((size_t)n_want + 1, sizeof *picks);
    int n = choose_cells(ms, nm, seqs, ns, (const int64_t *const *)pred, n_want, picks);
    int rc = FTB_EXIT_OK;
    if (n < n_want)
        fprintf(stderr, "ftbench plan: --verify %d: only %d cells of the table fit this machine\n", n_want, n);
    ftb_cell base;
    ftb_setup_cell(s, &base);
    base.steps = 1;
    base.warmup = 0;
    base.enforce = FTB_ENFORCE_CHECK; /* run to the end: the whole peak is measured */
    base.timeline = 0;
    base.seq = 0;
    char canon[1024], run_id[128];
    snprintf(canon, sizeof canon, "%s|%s|b%d|t%d|%s|%lld", what, ftb_dtype_name(in_here->shape.base_dtype), in_here->B,
             s->threads, s->device.name, (long long)s->budget);
    if (s->cli.run_id)
        snprintf(run_id, sizeof run_id, "%s", s->cli.run_id);
    else
        ftb_sweep_run_id("plan-verify", canon, run_id, sizeof run_id);
    snprintf(base.run_id, sizeof base.run_id, "%s", run_id);
    ftb_recorded done;
    memset(&done, 0, sizeof done);
    if (ftb_setup_run_dir(s, run_id, base.run_dir, sizeof base.run_dir) != 0) {
        rc = FTB_EXIT_USAGE;
        goto out;
    }
    ftb_catch_interrupts();
    int brc = ftb_rundir_begin("plan", base.run_dir, s->cli.wait_lock, 0, s->cli.quiet, &done);
    if (brc) {
        rc = brc;
        goto out;
    }
    if (ftb_cell_prepare_base(&base, s->cli.quiet, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench plan: %s\n", err);
        rc = FTB_EXIT_FAIL;
        goto out;
    }
    FILE *f = json_out ? stderr : stdout;
    fprintf(f, "\nverify: %d cells of %s measured here (%d threads, 1 step, records in %s)\n", n, what, s->threads,
            base.run_dir);
    fprintf(f, "%-12s %7s %12s %12s %8s %12s\n", "method", "seq", "predicted", "measured", "error", "cell model");
    double worst = 0;
    const char *worst_at = "";
    char worst_buf[160] = "";
    for (int i = 0; i < n; i++) {
        plan_method *m = &ms[picks[i].method];
        ftb_cell c = base;
        c.n_opts = m->n_opts;
        for (int q = 0; q < m->n_opts; q++) {
            c.opt_keys[q] = m->keys[q];
            c.opt_values[q] = m->values[q];
        }
        snprintf(c.method_path, sizeof c.method_path, "%s", m->path);
        snprintf(c.method_label, sizeof c.method_label, "%s", m->label);
        c.seq = seqs[picks[i].seq_index];
        ftb_cell_make_key(&c);
        json_t *rec = ftb_resume_check(&c, &done, s->cli.force, err, sizeof err) == FTB_RESUME_KEEP
                          ? json_incref(ftb_recorded_find(&done, c.key))
                          : NULL;
        if (!rec) {
            ftb_cell_result r;
            int crc = ftb_cell_run(&c, &r, err, sizeof err);
            if (crc == FTB_CELL_INTERRUPTED) {
                rc = 128 + ftb_interrupted();
                goto out;
            }
            if (crc != 0) {
                fprintf(stderr, "ftbench plan: %s: %s\n", c.key, err);
                rc = FTB_EXIT_FAIL;
                continue;
            }
            rec = json_incref(r.record);
            ftb_cell_result_free(&r);
        }
        json_t *mem = json_object_get(rec, "memory");
        json_t *pk = json_object_get(mem, "peak_rss_bytes");
        json_t *an = json_object_get(json_object_get(mem, "analytic"), "peak_total_bytes");
        const char *o = json_string_value(json_object_get(rec, "outcome"));
        int64_t predicted = pred[picks[i].method][picks[i].seq_index];
        char eq[16] = "-";
        if (json_is_integer(an)) {
            /* the cell's own analytic model (of the built model) against the plan's core peak */
            int64_t cell_core = (int64_t)json_integer_value(an), plan_core = predicted - in_here->baseline;
            if (cell_core == plan_core)
                snprintf(eq, sizeof eq, "= plan");
            else
                snprintf(eq, sizeof eq, "%+.2f%%",
                         100.0 * (double)(cell_core - plan_core) / (double)(plan_core > 0 ? plan_core : 1));
        }
        if (!o || (strcmp(o, "ok") && strcmp(o, "over_budget")) || !json_is_integer(pk)) {
            fprintf(f, "%-12s %7d %11.1fM %12s %8s %12s\n", m->label, c.seq, (double)predicted / 1048576.0, o ? o : "?",
                    "-", eq);
            rc = FTB_EXIT_FAIL;
        } else {
            double meas = (double)json_integer_value(pk);
            double rel = (predicted - meas) / meas;
            fprintf(f, "%-12s %7d %11.1fM %11.1fM %+7.2f%% %12s\n", m->label, c.seq, (double)predicted / 1048576.0,
                    meas / 1048576.0, 100.0 * rel, eq);
            if (fabs(rel) > fabs(worst)) {
                worst = rel;
                snprintf(worst_buf, sizeof worst_buf, "%s at %d", m->label, c.seq);
                worst_at = worst_buf;
            }
        }
        fflush(f);
        json_decref(rec);
    }
    fprintf(f, "worst relative error: %+.2f%% (%s) of measured peak RSS\n", 100.0 * worst, worst_at);
out:
    ftb_recorded_free(&done);
    json_decref(base.base_info);
    for (int k = 0; k < nm; k++) free(pred[k]);
    free(pred);
    free(picks);
    return rc;
}

/* ---- for fit: where to start the search ------------------------------------------- */

static void inputs_from_setup(const ftb_setup *s, int threads, plan_inputs *in)
{
    memset(in, 0, sizeof *in);
    ftb_model_shape_from_config(&s->cfg, &in->shape);
    in->shape.base_dtype = s->cli.base.dtype;
    in->shape.embed_dtype = s->cli.base.embed_dtype;
    in->shape.group = s->cli.base.group;
    in->shape.threads = threads;
    ftb_run_opts_default(&in->run);
    in->run.attention = s->cli.attention;
    in->run.loss = s->cli.loss;
    if (s->cli.loss_chunk) in->run.loss_chunk_rows = s->cli.loss_chunk;
    in->B = s->cli.batch;
}

/* A cell's method opened for planning, with the cell's options. */
static int open_cell_method(const ftb_cell *c, plan_method *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (ftb_plugin_open(c->method_path, &m->plug, err, errlen) != 0) return -1;
    m->kind = m->plug.method->abi_version >= 3 && m->plug.method->memory_plan ? PLAN_BY_METHOD : PLAN_BY_DEFAULT;
    m->n_opts = c->n_opts;
    for (int q = 0; q < c->n_opts; q++) {
        m->keys[q] = c->opt_keys[q];
        m->values[q] = c->opt_values[q];
    }
    return 0;
}

int ftb_plan_fit_hint(ftb_setup *s, const ftb_cell *c, int *longest, char *why, size_t whyn)
{
    plan_method m;
    char err[FTB_ERR_LEN];
    if (open_cell_method(c, &m, err, sizeof err) != 0) {
        snprintf(why, whyn, "%s", err);
        return -1;
    }
    plan_inputs in;
    inputs_from_setup(s, s->threads, &in);
    char how[PATH_MAX + 200];
    int rc = -1;
    ftb_optimizer_select(s->cli.optimizer);
    if (m.kind != PLAN_BY_METHOD) {
        snprintf(why, whyn, "the method has no memory_plan");
    } else if (plan_baseline(s, s->threads, &in.baseline, how, sizeof how, err, sizeof err) != 0) {
        snprintf(why, whyn, "no process baseline: %s", err);
    } else {
        *longest = longest_fit(&m, &in, s->budget);
        if (m.kind != PLAN_BY_METHOD)
            snprintf(why, whyn, "%s", m.reason);
        else {
            snprintf(why, whyn, "baseline %.1f MiB, %s", (double)in.baseline / 1048576.0, how);
            rc = 0;
        }
    }
    ftb_plugin_close(&m.plug);
    return rc;
}

/* ---- for every cell: the plan's prediction in its record ------------------------- */

/* The setup of the command that runs cells, copied: cells may run after
 * the command's own setup went out of scope (tests call commands in turn). */
static ftb_setup g_cell_setup;

/* memory.plan of a record (docs/PLAN.md, "In every record"): what `ftbench
 * plan` predicts for exactly this cell — its method and options, model
 * shape, base format, batch, length and threads — by the same predict()
 * and plan_baseline() the table uses. */
static json_t *cell_prediction(void *ud, const ftb_cell *c)
{
    ftb_setup *s = ud;
    if (g_measuring_baseline || !c->method_path[0]) return NULL;
    plan_method m;
    char err[FTB_ERR_LEN + 256], how[PATH_MAX + 200];
    json_t *o = json_object();
    if (open_cell_method(c, &m, err, sizeof err) != 0) {
        json_object_set_new(o, "model", json_string("unavailable"));
        json_object_set_new(o, "reason", json_string(err));
        return o;
    }
    plan_inputs in;
    memset(&in, 0, sizeof in);
    ftb_model_shape_from_config(&c->cfg, &in.shape);
    in.shape.base_dtype = c->base.dtype;
    in.shape.embed_dtype = c->base.embed_dtype;
    in.shape.group = c->base.group;
    in.shape.threads = c->threads;
    ftb_run_opts_default(&in.run);
    in.run.attention = c->attention;
    in.run.loss = c->loss;
    if (c->loss_chunk) in.run.loss_chunk_rows = c->loss_chunk;
    in.B = c->batch;
    ftb_optimizer_select(c->optimizer);
    ftb_memory_estimate e;
    if (predict(&m, &in, c->seq, &e) != 0) {
        json_object_set_new(o, "model", json_string(m.kind == PLAN_NO_MODEL ? kind_name(m.kind) : "unavailable"));
        json_object_set_new(o, "reason", json_string(m.reason));
    } else {
        json_object_set_new(o, "model", json_string(kind_name(m.kind)));
        json_object_set_new(o, "core_peak_bytes", json_integer(e.peak_total));
        /* A baseline that could not be measured (a budget under a tiny
         * cell's) is not tried again for every cell of the command. */
        static int failed_threads = -1;
        static int64_t failed_budget;
        static char failed[FTB_ERR_LEN + 256];
        ftb_setup copy = *s;
        if (failed_threads == c->threads && failed_budget == s->budget) {
            json_object_set_new(o, "baseline_error", json_string(failed));
        } else if (plan_baseline(&copy, c->threads, &in.baseline, how, sizeof how, err, sizeof err) != 0) {
            failed_threads = c->threads;
            failed_budget = s->budget;
            snprintf(failed, sizeof failed, "%s", err);
            json_object_set_new(o, "baseline_error", json_string(err));
        } else {
            json_object_set_new(o, "baseline_bytes", json_integer(in.baseline));
            json_object_set_new(o, "baseline", json_string(how));
            json_object_set_new(o, "predicted_peak_rss_bytes", json_integer(e.peak_total + in.baseline));
        }
    }
    ftb_plugin_close(&m.plug);
    return o;
}

void ftb_plan_predict_cells(const ftb_setup *s)
{
    g_cell_setup = *s;
    ftb_cell_set_predictor(cell_prediction, &g_cell_setup);
}

/* ---- the command --------------------------------------------------------------- */

int ftb_cmd_plan(int argc, char **argv)
{
    const double t0 = ftb_now();
    char err[FTB_ERR_LEN + 256];
    /* plan's own options, taken out before the shared parser sees the rest */
    const char *config_path = NULL;
    int json_out = 0, verify = 0;
    double baseline_mb = -1;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0;
    if (!rest) return ftb_usage_error("plan", "out of memory");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *names[] = { "--config", "--verify", "--baseline-mb" };
        int took = -1;
        for (int q = 0; q < 3 && i > 0; q++) {
            size_t l = strlen(names[q]);
            if (!strncmp(a, names[q], l) && (a[l] == 0 || a[l] == '=')) took = q;
        }
        if (i > 0 && !strcmp(a, "--json")) {
            json_out = 1;
            continue;
        }
        if (took < 0) {
            rest[nrest++] = argv[i];
            continue;
        }
        const char *val = strchr(a, '=') ? strchr(a, '=') + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            free(rest);
            snprintf(err, sizeof err, "%s needs a value", names[took]);
            return ftb_usage_error("plan", err);
        }
        long v;
        double d;
        if (took == 0) {
            config_path = val;
        } else if (took == 1) {
            if (ftb_parse_long(val, 1, 1000, &v) != 0) {
                free(rest);
                snprintf(err, sizeof err, "--verify: '%s' is not a count of cells from 1 to 1000", val);
                return ftb_usage_error("plan", err);
            }
            verify = (int)v;
        } else {
            if (ftb_parse_double(val, &d) != 0 || !(d >= 0) || d > 1e9) {
                free(rest);
                snprintf(err, sizeof err, "--baseline-mb: '%s' is not a size in MiB", val);
                return ftb_usage_error("plan", err);
            }
            baseline_mb = d;
        }
    }
    ftb_setup s;
    memset(&s, 0, sizeof s);
    int pr = ftb_cli_parse("plan", PLAN_OPTS, nrest, rest, &s.cli, err, sizeof err);
    free(rest);
    if (pr == 1) {
        plan_help(stdout);
        return FTB_EXIT_OK;
    }
    if (pr < 0) return ftb_usage_error("plan", err);
    int rc = FTB_EXIT_USAGE;
    plan_method *ms = NULL;
    int nm = 0, *seqs = NULL, ns = 0;
    char **labels = NULL;
    int nl = 0;
    if (config_path && (s.cli.model || s.cli.checkpoint)) {
        ftb_usage_error("plan", "--config names the model: give it, --model or --checkpoint, not two");
        goto out;
    }
    if (config_path && verify) {
        ftb_usage_error("plan", "--verify runs cells: give a --model of the zoo (a config.json has no weights)");
        goto out;
    }
    if (s.cli.seq_given || s.cli.batches) {
        ftb_usage_error("plan", "plan takes --seqs and --batch (one batch size)");
        goto out;
    }
    ftb_config from_file;
    if (config_path) {
        char e[FTB_ERR_LEN];
        if (ftb_config_load_json(config_path, &from_file, e, sizeof e) != 0) {
            snprintf(err, sizeof err, "%s", e);
            ftb_usage_error("plan", err);
            goto out;
        }
        if (ftb_config_validate(&from_file, e, sizeof e) != 0) {
            snprintf(err, sizeof err, "%s: invalid config: %s", config_path, e);
            ftb_usage_error("plan", err);
            goto out;
        }
        /* setup resolves the device's model; the file's replaces it below */
        s.cli.model = NULL;
    }
    if (ftb_setup_common(&s, 0, err, sizeof err) != 0) {
        ftb_usage_error("plan", err);
        goto out;
    }
    char what[512];
    snprintf(what, sizeof what, "%s", s.model_name);
    if (config_path) {
        s.cfg = from_file;
        char e[FTB_ERR_LEN];
        if (ftb_base_check(&s.cli.base, &s.cfg, config_path, e, sizeof e) != 0) {
            snprintf(err, sizeof err, "%s", e);
            ftb_usage_error("plan", err);
            goto out;
        }
        snprintf(what, sizeof what, "%.400s (%.60s)", config_path, s.cfg.name[0] ? s.cfg.name : "config");
    }
    if (ftb_parse_int_list(s.cli.seqs ? s.cli.seqs : "128..4096", 1, 1 << 22, &seqs, &ns, err, sizeof err) != 0) {
        char msg[FTB_ERR_LEN + 300];
        snprintf(msg, sizeof msg, "--seqs %s", err);
        ftb_usage_error("plan", msg);
        goto out;
    }
    {
        int keep = 0;
        for (int k = 0; k < ns; k++) {
            if (seqs[k] <= s.cfg.max_seq) {
                seqs[keep++] = seqs[k];
                continue;
            }
            if (s.cli.seqs) {
                snprintf(err, sizeof err, "--seqs: %d is longer than %.300s's max_seq (max_position_embeddings) %d",
                         seqs[k], what, s.cfg.max_seq);
                ftb_usage_error("plan", err);
                goto out;
            }
        }
        ns = keep;
    }
    /* Methods: --methods, else every one installed. */
    if (s.cli.methods) {
        char *dup = strdup(s.cli.methods);
        for (char *save = NULL, *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char **grown = realloc(labels, sizeof *labels * (size_t)(nl + 1));
            if (!grown) break;
            labels = grown;
            labels[nl++] = strdup(ftb_trim(t));
        }
        free(dup);
    } else if (ftb_plugin_list(s.methods_dir, &labels, &nl, err, sizeof err) != 0) {
        ftb_usage_error("plan", err);
        goto out;
    }
    if (!nl) {
        ftb_usage_error("plan", "no methods: give --methods or install some (ftbench list)");
        goto out;
    }
    ftb_optimizer_select(s.cli.optimizer);
    ms = calloc((size_t)nl, sizeof *ms);
    for (int i = 0; i < nl; i++) {
        plan_method *m = &ms[nm];
        /* Loaded here, not probed in a child as a cell's method is: a plan
         * calls the method's plan and nothing else, and must be instant. */
        if (ftb_plugin_resolve(labels[i], s.methods_dir, m->path, sizeof m->path, m->label, sizeof m->label, err,
                               sizeof err) != 0 ||
            ftb_plugin_open(m->path, &m->plug, err, sizeof err) != 0) {
            ftb_usage_error("plan", err);
            goto out;
        }
        nm++;
        json_t *desc = json_object(), *docs = json_array();
        for (const ftb_option_doc *d = m->plug.method->options; d && d->name; d++) {
            json_t *one = json_object();
            json_object_set_new(one, "name", json_string(d->name));
            json_array_append_new(docs, one);
        }
        json_object_set_new(desc, "options", docs);
        char *desc_text = json_dumps(desc, JSON_COMPACT);
        json_decref(desc);
        int orc = ftb_cli_check_options(&s.cli, m->label, desc_text, s.cli.methods ? 1 : 0, err, sizeof err);
        free(desc_text);
        if (orc != 0) {
            ftb_usage_error("plan", err);
            goto out;
        }
        m->n_opts = ftb_cli_method_options(&s.cli, m->label, m->keys, m->values, FTB_MAX_METHOD_OPTS);
        m->kind = m->plug.method->abi_version >= 3 && m->plug.method->memory_plan ? PLAN_BY_METHOD : PLAN_BY_DEFAULT;
        m->core = calloc((size_t)ns + 1, sizeof *m->core);
        m->phase = calloc((size_t)ns + 1, sizeof *m->phase);
    }

    plan_inputs in;
    inputs_from_setup(&s, s.cli.threads ? s.cli.threads : s.device.cores > 0 ? s.device.cores : s.threads, &in);

    char how[PATH_MAX + 200];
    if (baseline_mb >= 0) {
        in.baseline = (int64_t)(baseline_mb * 1048576.0);
        snprintf(how, sizeof how, "given (--baseline-mb)");
    } else if (plan_baseline(&s, s.threads, &in.baseline, how, sizeof how, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench plan: cannot measure the process baseline: %s\n", err);
        rc = FTB_EXIT_FAIL;
        goto out;
    }

    for (int k = 0; k < nm; k++) {
        for (int j = 0; j < ns; j++) {
            ftb_memory_estimate e;
            if (predict(&ms[k], &in, seqs[j], &e) != 0) break;
            ms[k].core[j] = e.peak_total;
            snprintf(ms[k].phase[j], sizeof ms[k].phase[j], "%s", e.peak_phase);
        }
        if (ms[k].kind == PLAN_BY_METHOD || ms[k].kind == PLAN_BY_DEFAULT)
            ms[k].longest = longest_fit(&ms[k], &in, s.budget);
        if (ms[k].kind == PLAN_BAD_OPTIONS) {
            snprintf(err, sizeof err, "method %s: %s", ms[k].label, ms[k].reason);
            ftb_usage_error("plan", err);
            goto out;
        }
    }
    double cpu = (double)clock() / CLOCKS_PER_SEC;
    double took = ftb_now() - t0;
    if (json_out) {
        json_t *o = plan_json(ms, nm, seqs, ns, &in, &s, what, config_path, how, took);
        char *text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (text) puts(text);
        free(text);
    } else {
        print_table(ms, nm, seqs, ns, &in, &s, what, how, took, cpu);
    }
    fflush(stdout);
    rc = FTB_EXIT_OK;
    if (verify) {
        plan_inputs here = in;
        here.shape.threads = s.threads;
        rc = run_verify(&s, ms, nm, seqs, ns, &here, verify, what, json_out);
    }
out:
    for (int k = 0; k < nm; k++) {
        ftb_plugin_close(&ms[k].plug);
        free(ms[k].core);
        free(ms[k].phase);
    }
    free(ms);
    for (int i = 0; i < nl; i++) free(labels[i]);
    free(labels);
    free(seqs);
    ftb_cli_free(&s.cli);
    return rc;
}
