/*
 * cell_child.c — the measured side of a cell, in a forked child.  What
 * runs here is what gets measured, so the harness's own work is kept out
 * of the way: the sampler buffer is allocated before the model, records
 * are written between steps, and the timeline is written at the end.
 */
#include "blas.h"
#include "cell_internal.h"
#include "cpu.h"
#include "dataset.h"
#include "hwc.h"
#include "nonfinite.h"
#include "plugin.h"
#include "sampler.h"
#include "safe_file.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define SAMPLER_CAPACITY  131072 /* 3 MiB of samples; halves its rate when full */
#define TIMELINE_CAPACITY (1u << 20)

static json_t *g_out; /* what the child measured          */
static const char *g_out_name;
static int g_run_fd = -1;
static int g_progress_fd = -1;

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }
static json_t *jint(int64_t v) { return v >= 0 ? json_integer((json_int_t)v) : json_null(); }

/* Minor + major page faults of the process so far; -1 if unknown. */
static int64_t process_faults(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_minflt + (int64_t)ru.ru_majflt;
}

/* Rewrites the measurement file atomically (a new file, fsync, rename),
 * so the parent reads either the previous or the new snapshot, never half.
 * A write that fails (a full disk) ends the cell: what it measures from
 * here on could not be kept.  The parent is told the errno, so the record
 * says why instead of "exited without a result". */
static void snapshot(const char *stage)
{
    json_object_set_new(g_out, "stage", json_string(stage));
    char *text = json_dumps(g_out, JSON_COMPACT);
    int e = ENOMEM;
    if (text && ftb_sf_write_atomic(g_run_fd, g_out_name, text, strlen(text), g_out_name, NULL, 0) == 0) {
        free(text);
        return;
    }
    if (text) e = errno;
    free(text);
    report("ioerror measurements %d", e);
    _exit(CHILD_IO_ERROR);
}

static void report(const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    line[n++] = '\n';
    if (write(g_progress_fd, line, (size_t)n) < 0) { /* The parent is gone or stopped listening; measuring goes on. */
    }
}

static _Noreturn void fail(const char *stage, const char *msg)
{
    json_object_set_new(g_out, "error", json_string(msg));
    json_object_set_new(g_out, "error_stage", json_string(stage));
    snapshot("error");
    _exit(CHILD_ERROR);
}

static json_t *categories(const int64_t *v)
{
    json_t *o = json_object();
    for (int i = 0; i < FTB_MEM_NCAT; i++)
        json_object_set_new(o, ftb_mem_category_name((ftb_mem_category)i), json_integer(v[i]));
    return o;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    if (n <= 0) return NAN;
    double *s = malloc((size_t)n * sizeof *s);
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static json_t *summary(const double *v, int n)
{
    json_t *o = json_object();
    double mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        mn = v[i] < mn ? v[i] : mn;
        mx = v[i] > mx ? v[i] : mx;
    }
    json_object_set_new(o, "median", jnum(median(v, n)));
    json_object_set_new(o, "min", jnum(n ? mn : NAN));
    json_object_set_new(o, "max", jnum(n ? mx : NAN));
    return o;
}

/* One TSV: memory events and RSS samples merged by time.  Each line
 * carries the live bytes per category and the last RSS sample, so any line
 * is a complete picture of that moment (and gnuplot can plot columns). */
static int write_timeline(const char *name, const ftb_cell *c, const ftb_sampler *smp, const int64_t *live0)
{
    ftb_sf_stream st;
    if (ftb_sf_stream_open(&st, g_run_fd, name) != 0) return -1;
    FILE *f = st.f;
    static char buf[1 << 16];
    setvbuf(f, buf, _IOFBF, sizeof buf);
    size_t ne = ftb_mem_timeline_count();
    const ftb_mem_event *ev = ftb_mem_timeline_events();
    size_t ns = ftb_sampler_count(smp);
    const ftb_rss_sample *sm = ftb_sampler_samples(smp);
    fprintf(f, "# ftbench timeline, cell %s, run %s\n", c->key, c->run_id);
    fprintf(f,
            "# kind=mem: one allocation (+) or free (-) of the core; kind=rss: a sample of "
            "/proc/self/statm (period %.4f s%s)\n",
            ftb_sampler_period(smp), ftb_mem_timeline_dropped() ? "; memory events were dropped" : "");
    fprintf(f, "t_sec\tkind\tphase\tcategory\tdelta_bytes\trss_bytes");
    for (int k = 0; k < FTB_MEM_NCAT; k++) fprintf(f, "\t%s", ftb_mem_category_name((ftb_mem_category)k));
    fprintf(f, "\tlive_total\n");
    int64_t live[FTB_MEM_NCAT];
    memcpy(live, live0, sizeof live);
    int64_t rss = -1;
    size_t i = 0, j = 0;
    while (i < ne || j < ns) {
        int take_event = j >= ns || (i < ne && ev[i].t_sec <= sm[j].t);
        if (take_event) {
            const ftb_mem_event *e = &ev[i++];
            if (e->category < FTB_MEM_NCAT) live[e->category] += e->delta;
            const char *ph = ftb_mem_phase_name(e->phase);
            fprintf(f, "%.6f\tmem\t%s\t%s\t%lld\t%lld", e->t_sec, ph && *ph ? ph : "-",
                    e->category < FTB_MEM_NCAT ? ftb_mem_category_name((ftb_mem_category)e->category) : "?",
                    (long long)e->delta, (long long)rss);
        } else {
            const ftb_rss_sample *s = &sm[j++];
            rss = s->rss;
            fprintf(f, "%.6f\trss\t%s\t-\t0\t%lld", s->t, s->phase && *s->phase ? s->phase : "-", (long long)rss);
        }
        int64_t tot = 0;
        for (int k = 0; k < FTB_MEM_NCAT; k++) {
            fprintf(f, "\t%lld", (long long)live[k]);
            tot += live[k];
        }
        fprintf(f, "\t%lld\n", (long long)tot);
    }
    /* Written under a temporary name and renamed: a partial timeline (a
     * full disk) is removed, never left looking whole. */
    return ftb_sf_stream_commit(&st);
}

/* The analytic memory model of one step (ftb_memory_estimate_step) beside
 * what was measured: the core's prediction error, and the part of the peak
 * RSS that neither the model nor the process's baseline explains. */
static json_t *analytic_json(const ftb_method *m, void *state, const ftb_session *s, const ftb_cell *c,
                             int has_backward, const ftb_mem_stats *st)
{
    ftb_memory_estimate est;
    const char *source = ftb_method_memory_estimate(m, state, s, c->batch, c->seq, has_backward, &est);
    json_t *a = json_object();
    json_object_set_new(a, "source", json_string(source));
    json_object_set_new(a, "peak_total_bytes", json_integer(est.peak_total));
    json_object_set_new(a, "split_at_peak_bytes", categories(est.at_peak));
    json_object_set_new(a, "saved_peak_bytes", json_integer(est.saved_peak));
    json_object_set_new(a, "peak_phase", json_string(est.peak_phase));
    json_object_set_new(
        a, "core_peak_error",
        jnum(est.peak_total > 0 ? (double)(st->peak_total - est.peak_total) / (double)est.peak_total : NAN));
    int64_t rss = ftb_self_vmhwm();
    json_t *base = json_object_get(json_object_get(g_out, "memory"), "rss_baseline_bytes");
    if (rss > 0 && json_is_integer(base)) {
        int64_t un = rss - (int64_t)json_integer_value(base) - est.peak_total;
        json_object_set_new(a, "unexplained_rss_bytes", json_integer(un));
        json_object_set_new(a, "unexplained_rss_fraction", jnum((double)un / (double)rss));
    }
    return a;
}

/* A failed step, or one whose loss is not finite: what the method said,
 * and what went non-finite where (nonfinite.h). */
static _Noreturn void fail_step(const ftb_method *m, void *state, const ftb_model *model, int i, int total, float loss,
                                const char *method_err)
{
    char where[FTB_ERR_LEN], v[32], msg[3 * FTB_ERR_LEN];
    int found = ftb_nonfinite_find(m, state, model, where, sizeof where);
    int n = snprintf(msg, sizeof msg, "step %d of %d: ", i + 1, total);
    if (n < 0) n = 0;
    if (method_err[0])
        n += snprintf(msg + n, sizeof msg - (size_t)n, "%s", method_err);
    else if (!isfinite(loss))
        n += snprintf(msg + n, sizeof msg - (size_t)n, "the loss is %s", ftb_nonfinite_name(loss, v, sizeof v));
    else
        n += snprintf(msg + n, sizeof msg - (size_t)n, "the method's step failed without a message");
    if ((size_t)n < sizeof msg) {
        if (found)
            snprintf(msg + n, sizeof msg - (size_t)n, "; %s", where);
        else if (!isfinite(loss) && !method_err[0])
            snprintf(msg + n, sizeof msg - (size_t)n,
                     "; every trainable value and gradient is finite, so the forward pass itself overflowed "
                     "(an option scaling activations too far, or a learning rate that diverged earlier)");
    }
    fail("step", msg);
}

/* ops_sum += what one step added to the core's per-class counters. */
static void add_op_stats(ftb_op_stat *sum, const ftb_op_stat *before, const ftb_op_stat *after)
{
    for (int k = 0; k < FTB_OP_NCLASS; k++) {
        sum[k].seconds += after[k].seconds - before[k].seconds;
        sum[k].flops += after[k].flops - before[k].flops;
        sum[k].bytes += after[k].bytes - before[k].bytes;
        sum[k].calls += after[k].calls - before[k].calls;
        sum[k].page_faults += after[k].page_faults - before[k].page_faults;
    }
}

/* The record's "ops" (docs/HARNESS.md): where a measured step's time went,
 * per operation class of the core (include/ftbench.h), as means per step
 * over the n measured steps, and "other" = the mean step time less the
 * classes: the method's own work outside the core's ops (MeZO's
 * perturbations, an adapter's bookkeeping), so the classes add up to the
 * step. */
static json_t *ops_json(const ftb_op_stat *sum, int n, double step_seconds_total)
{
    json_t *o = json_object();
    if (n <= 0) return o;
    double step = step_seconds_total / n, core = 0;
    json_object_set_new(o, "per", json_string("step"));
    json_object_set_new(o, "measured_steps", json_integer(n));
    json_object_set_new(o, "step_seconds", jnum(step));
    json_t *cl = json_object();
    for (int k = 0; k < FTB_OP_NCLASS; k++) {
        const ftb_op_stat *x = &sum[k];
        double sec = x->seconds / n, fl = x->flops / n;
        core += sec;
        json_t *e = json_object();
        json_object_set_new(e, "seconds", jnum(sec));
        json_object_set_new(e, "share", jnum(step > 0 ? sec / step : NAN));
        json_object_set_new(e, "flops", jnum(fl));
        json_object_set_new(e, "bytes", jnum(x->bytes / n));
        /* Achieved rate: only where the class does arithmetic and took time. */
        json_object_set_new(e, "gflops_per_second", fl > 0 && sec > 0 ? jnum(fl / sec * 1e-9) : json_null());
        json_object_set_new(e, "calls", jnum((double)x->calls / n));
        json_object_set_new(e, "page_faults", jnum((double)x->page_faults / n));
        json_object_set_new(cl, ftb_op_class_name((ftb_op_class)k), e);
    }
    json_t *e = json_object();
    json_object_set_new(e, "seconds", jnum(step - core));
    json_object_set_new(e, "share", jnum(step > 0 ? (step - core) / step : NAN));
    json_object_set_new(cl, "other", e);
    json_object_set_new(o, "classes", cl);
    json_object_set_new(o, "core_seconds", jnum(core));
    json_object_set_new(o, "other_seconds", jnum(step - core));
    return o;
}

/* The cell's between-steps hook (cell.h), if it has one. */
static void between_steps(const ftb_cell *c, ftb_model *model, const ftb_run_opts *run, int step, int total,
                          double step_seconds, json_t *out)
{
    const ftb_cell_step_hook *h = &c->between_steps;
    if (!h->fn) return;
    char err[FTB_ERR_LEN] = "";
    if (h->fn(h->ud, model, run, step, total, step_seconds, out, err, sizeof err) != 0)
        fail(h->stage ? h->stage : "between_steps", err[0] ? err : "failed without a message");
}

_Noreturn void ftb_cell_child(const ftb_cell *c, int progress_fd, int run_fd, const char *child_json,
                              const char *timeline_name, const ftb_cgroup *cg, ftb_tree_shared *tree)
{
    char err[FTB_ERR_LEN] = "";
    g_out = json_object();
    g_out_name = child_json;
    g_run_fd = run_fd;
    g_progress_fd = progress_fd;
    /* Die with the harness: an orphaned cell would run on, unmeasured. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* A helper the method forks stays in the cell's tree even if its own
     * parent exits first (it is reparented here, not to init), so its
     * memory keeps counting. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (getppid() == 1) _exit(CHILD_ERROR);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);

    if (cg && cg->active && ftb_cgroup_enter(cg) != 0) {
        snprintf(err, sizeof err, "cannot move the cell into cgroup %.300s: %s", cg->path, strerror(errno));
        fail("setup", err);
    }
    ftb_set_threads(c->threads);
    json_object_set_new(g_out, "threads", json_integer(ftb_get_threads()));
    json_object_set_new(g_out, "pid", json_integer(getpid()));

    /* Time origin shared by the memory timeline and the RSS samples. */
    ftb_mem_stats st0;
    ftb_mem_get_stats(&st0);
    if (c->timeline) ftb_mem_timeline_enable(TIMELINE_CAPACITY);
    double t0 = ftb_now();
    /* Without a timeline the sampler still runs, keeping only the peaks of
     * the process and of its process tree. */
    ftb_sampler *smp = ftb_sampler_start(t0, 1e-3, c->timeline ? SAMPLER_CAPACITY : 0, tree);
    ftb_phase_stats *ps = ftb_phase_stats_start(1);
    json_t *mem = json_object();
    json_object_set_new(g_out, "memory", mem);
    json_object_set_new(mem, "rss_baseline_bytes", jint(ftb_self_vmrss()));
    json_object_set_new(mem, "sampler_buffer_bytes", json_integer((json_int_t)ftb_sampler_buffer_bytes(smp)));
    json_t *marks = json_object();
    json_object_set_new(g_out, "marks", marks);

    /* Model. */
    ftb_mem_set_phase("load");
    report("load");
    double t_load = ftb_now();
    /* A base in another format (or lazily resident) was prepared before the
     * cell (base.h): mapped here, never built in fp32 inside the cell. */
    ftb_model *model = c->base_dir[0]  ? ftb_model_load(c->base_dir, 1, err, sizeof err)
                       : c->checkpoint ? ftb_model_load(c->checkpoint, 1, err, sizeof err)
                                       : ftb_model_create(&c->cfg, c->seed, err, sizeof err);
    if (!model) fail("load", err[0] ? err : "model load failed");
    ftb_model_set_residency(model, c->base.residency);
    /* Lazy: the mapping, counted whole while it loaded, now counts only as
     * its blocks come in (docs/CORE.md); the core's peaks start from here,
     * not from a whole file that was never resident. */
    if (c->base.residency == FTB_RESIDENT_LAZY_BLOCK) ftb_mem_reset_peaks();
    json_t *base = json_object();
    json_object_set_new(g_out, "base", base);
    int64_t storage = 0, mapped = 0;
    for (int i = 0; i < model->n_params; i++) {
        int64_t b = ftb_tensor_storage_bytes(model->params[i]);
        storage += b;
        mapped += model->params[i]->mapped ? b : 0;
    }
    json_object_set_new(base, "loaded_from",
                        json_string(c->base_dir[0]  ? "prepared"
                                    : c->checkpoint ? "checkpoint"
                                                    : "created"));
    json_object_set_new(base, "storage_bytes_loaded", json_integer(storage));
    json_object_set_new(base, "mapped_bytes", json_integer(mapped));
    json_object_set_new(g_out, "load_seconds", json_real(ftb_now() - t_load));
    json_object_set_new(marks, "model_loaded", json_real(ftb_now() - t0));
    json_object_set_new(mem, "rss_after_model_load_bytes", jint(ftb_self_vmrss()));
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    json_object_set_new(mem, "core_live_after_model_load", categories(st.live));
    snapshot("loaded");

    /* Method. */
    ftb_plugin plug;
    if (ftb_plugin_open(c->method_path, &plug, err, sizeof err) != 0) fail("plugin", err);
    const ftb_method *m = plug.method;
    json_object_set_new(g_out, "method_name", json_string(m->name ? m->name : c->method_label));
    json_object_set_new(g_out, "method_summary", json_string(m->summary ? m->summary : ""));
    ftb_options opts = { c->n_opts, c->opt_keys, c->opt_values };
    ftb_session s;
    memset(&s, 0, sizeof s);
    s.model = model;
    ftb_run_opts_default(&s.run);
    s.run.attention = c->attention;
    s.run.loss = c->loss;
    if (c->loss_chunk) s.run.loss_chunk_rows = c->loss_chunk;
    s.options = &opts;
    s.seed = c->seed;
    s.lr = c->lr;
    s.total_steps = c->warmup + c->steps;
    /* Before init: every optimizer the method initialises gets it. */
    ftb_optimizer_select(c->optimizer);
    ftb_mem_set_phase("init");
    report("init");
    double ti = ftb_now();
    err[0] = 0;
    void *state = m->init(&s, err, sizeof err);
    if (!state) fail("init", err[0] ? err : "method init failed (no message)");
    json_object_set_new(g_out, "init_seconds", json_real(ftb_now() - ti));
    /* A method may set the residency itself (mebp and mesp choose lazy). */
    json_object_set_new(base, "residency_effective",
                        json_string(model->residency == FTB_RESIDENT_LAZY_BLOCK ? "lazy" : "all"));
    json_object_set_new(marks, "method_initialised", json_real(ftb_now() - t0));
    json_object_set_new(mem, "rss_after_method_init_bytes", jint(ftb_self_vmrss()));
    ftb_mem_get_stats(&st);
    json_object_set_new(mem, "core_live_after_method_init", categories(st.live));

    int64_t trainable = -1;
    const char *trainable_source = "model";
    if (m->trainable) {
        ftb_tensor **ts = NULL;
        int nt = m->trainable(state, &ts);
        if (nt > 0 && ts) {
            trainable = 0;
            for (int i = 0; i < nt; i++) trainable += ts[i] ? ts[i]->numel : 0;
            trainable_source = "method";
        }
    }
    if (trainable < 0) trainable = ftb_model_trainable_count(model);
    json_object_set_new(g_out, "trainable_params", json_integer(trainable));
    json_object_set_new(g_out, "trainable_params_source", json_string(trainable_source));
    snapshot("initialised");

    /* Data: opened after the model so its (small) buffers are not counted
     * as model memory in the RSS-after-load figure. */
    ftb_dataset *ds = ftb_dataset_open(c->dataset, model->cfg.vocab_size, c->seed, err, sizeof err);
    if (!ds) fail("dataset", err);

    /* Steps. */
    int total = c->warmup + c->steps;
    report("step 0 %d", total);
    double *wall = calloc((size_t)total, sizeof *wall);
    double *tf = calloc((size_t)total, sizeof *tf), *tb = calloc((size_t)total, sizeof *tb),
           *to = calloc((size_t)total, sizeof *to), *tdq = calloc((size_t)total, sizeof *tdq);
    json_t *losses = json_array(), *rss_steps = json_array(), *passes = json_array();
    json_object_set_new(g_out, "loss_per_step", losses);
    json_object_set_new(mem, "vmhwm_after_step_bytes", rss_steps);
    /* Page faults (minor + major, every thread of the cell) per step: the
     * first step touches its buffers fresh, later ones reuse them
     * (docs/CORE.md, "What is kept across steps"). */
    json_t *faults_steps = json_array();
    json_object_set_new(mem, "page_faults_per_step", faults_steps);
    json_object_set_new(g_out, "forward_passes_per_step", passes);
    json_t *steps_wall = json_array();
    json_object_set_new(g_out, "step_seconds_all", steps_wall);
    int has_backward = 0;
    /* The command's own work between steps (ftbench train evaluates with
     * the method's hooks attached): its fields are kept apart from the
     * measurements until the parent writes the record. */
    double train_sec = 0;
    json_t *hook_out = NULL;
    if (c->between_steps.fn) {
        hook_out = json_object();
        json_object_set_new(g_out, "between_steps", hook_out);
    }
    between_steps(c, model, &s.run, 0, total, 0.0, hook_out);
    /* Time per operation class over the measured steps only: each step's
     * own counts (before and after it), so warm-up steps and the
     * command's work between steps (train's evaluations) are left out. */
    ftb_op_stat ops_sum[FTB_OP_NCLASS], ops0[FTB_OP_NCLASS], ops1[FTB_OP_NCLASS];
    memset(ops_sum, 0, sizeof ops_sum);
    for (int i = 0; i < total; i++) {
        ftb_batch b;
        if (ftb_dataset_next(ds, c->batch, c->seq, &b, err, sizeof err) != 0) fail("dataset", err);
        ftb_step_result res;
        memset(&res, 0, sizeof res);
        res.loss = NAN;
        err[0] = 0;
        double dq0, dq1;
        ftb_dequant_stats(&dq0, NULL);
        ftb_op_stats_get(ops0);
        int64_t f0 = process_faults();
        double ts = ftb_now();
        int rc = m->step(state, &s, &b, &res, err, sizeof err);
        double dt = ftb_now() - ts;
        int64_t f1 = process_faults();
        ftb_op_stats_get(ops1);
        if (i >= c->warmup) add_op_stats(ops_sum, ops0, ops1);
        ftb_dequant_stats(&dq1, NULL);
        tdq[i] = dq1 - dq0;
        if (rc != 0 || !isfinite(res.loss)) fail_step(m, state, model, i, total, res.loss, err);
        wall[i] = dt;
        tf[i] = res.t_forward;
        tb[i] = res.t_backward;
        to[i] = res.t_optim;
        has_backward |= res.t_backward > 0;
        json_array_append_new(losses, jnum(res.loss));
        json_array_append_new(rss_steps, jint(ftb_self_vmhwm()));
        json_array_append_new(faults_steps, jint(f0 >= 0 && f1 >= 0 ? f1 - f0 : -1));
        json_array_append_new(passes, json_integer(res.forward_passes));
        json_array_append_new(steps_wall, json_real(dt));
        json_object_set_new(marks, i < c->warmup ? "last_warmup_step_end" : "last_step_end", json_real(ftb_now() - t0));
        /* The harness's own work between steps gets its own label, so it is
         * not billed to whatever phase the method ended in. */
        ftb_mem_set_phase("harness");
        train_sec += dt;
        between_steps(c, model, &s.run, i + 1, total, train_sec, hook_out);
        snapshot("step");
        report("step %d %d", i + 1, total);
    }
    /* The last update is not checked by a following loss: look once at
     * every trainable value, outside the measured steps. */
    char bad[FTB_ERR_LEN];
    if (ftb_nonfinite_find(m, state, model, bad, sizeof bad)) {
        char msg[FTB_ERR_LEN + 96];
        snprintf(msg, sizeof msg, "step %d of %d: its loss was finite, but after its update %s", total, total, bad);
        fail("step", msg);
    }
    ftb_mem_set_phase("end");
    ftb_phase_stats_stop(ps);
    ftb_sampler_stop(smp);

    /* Memory. */
    ftb_mem_get_stats(&st);
    json_object_set_new(mem, "peak_rss_vmhwm_bytes", jint(ftb_self_vmhwm()));
    json_object_set_new(mem, "sampled_peak_rss_bytes", smp ? jint(ftb_sampler_max_rss(smp)) : json_null());
    /* The process tree: the sampled peak of the sum over the cell and its
     * descendants, and the largest peak of a descendant that was waited for
     * (the kernel keeps it; a short-lived helper between samples still
     * shows). */
    json_object_set_new(mem, "tree_sampled_peak_rss_bytes", smp ? jint(ftb_sampler_max_tree_rss(smp)) : json_null());
    struct rusage ruc;
    json_object_set_new(mem, "descendants_max_rss_bytes",
                        getrusage(RUSAGE_CHILDREN, &ruc) == 0 && ruc.ru_maxrss > 0
                            ? json_integer((json_int_t)ruc.ru_maxrss * 1024)
                            : json_null());
    json_t *core = json_object();
    json_object_set_new(core, "peak_total_bytes", json_integer(st.peak_total));
    json_object_set_new(core, "peak_bytes", categories(st.peak));
    json_object_set_new(core, "split_at_peak_bytes", categories(st.peak_total_at));
    json_object_set_new(core, "live_at_end_bytes", categories(st.live));
    /* Block checkpoints in memory-mapped files (MeBP, MeSP): not resident,
     * so outside the categories, but part of what the method stores. */
    json_object_set_new(core, "offloaded_peak_bytes", json_integer(ftb_offload_peak()));
    json_object_set_new(mem, "core", core);
    size_t ja, jb, jc;
    json_t *je = json_object();
    if (ftb_jemalloc_stats(&ja, &jb, &jc) == 0) {
        json_object_set_new(je, "available", json_true());
        json_object_set_new(je, "allocated_bytes", json_integer((json_int_t)ja));
        json_object_set_new(je, "active_bytes", json_integer((json_int_t)jb));
        json_object_set_new(je, "resident_bytes", json_integer((json_int_t)jc));
    } else {
        json_object_set_new(je, "available", json_false());
        json_object_set_new(je, "reason", json_string("the process allocator is not jemalloc"));
    }
    json_object_set_new(mem, "jemalloc", je);
    /* What stays resident between steps for the next one (docs/CORE.md). */
    ftb_step_arena_info sa;
    ftb_step_arena_stats(&sa);
    json_t *sj = json_object();
    json_object_set_new(sj, "enabled", json_boolean(sa.enabled));
    json_object_set_new(sj, "high_water_bytes", json_integer(sa.high_water_bytes));
    json_object_set_new(sj, "fallbacks", json_integer(sa.fallbacks));
    json_object_set_new(mem, "step_arena", sj);
    json_object_set_new(mem, "analytic", analytic_json(m, state, &s, c, has_backward, &st));

    /* Time over the measured steps (after warm-up). */
    const double *mw = wall + c->warmup;
    int nm = c->steps;
    json_t *timing = json_object();
    json_object_set_new(timing, "step_seconds", summary(mw, nm));
    double med = median(mw, nm);
    json_object_set_new(timing, "tokens_per_second", jnum((double)c->batch * c->seq / med));
    json_t *ph = json_object();
    json_object_set_new(ph, "forward", summary(tf + c->warmup, nm));
    json_object_set_new(ph, "backward", summary(tb + c->warmup, nm));
    json_object_set_new(ph, "optim", summary(to + c->warmup, nm));
    json_object_set_new(timing, "method_phase_seconds", ph);
    /* Wall time inside dequantization of the base weights (ftb_dequant_stats),
     * and its share of the measured steps' time. */
    json_object_set_new(timing, "dequant_seconds", summary(tdq + c->warmup, nm));
    double sum_dq = 0, sum_step = 0;
    for (int i = c->warmup; i < total; i++) {
        sum_dq += tdq[i];
        sum_step += wall[i];
    }
    json_object_set_new(timing, "dequant_share", jnum(sum_step > 0 ? sum_dq / sum_step : NAN));
    json_object_set_new(timing, "core_phase_seconds", ftb_phase_stats_times_json(ps));
    json_object_set_new(g_out, "timing", timing);
    json_object_set_new(g_out, "ops", ops_json(ops_sum, nm, sum_step));
    json_object_set_new(g_out, "has_backward", json_boolean(has_backward));
    json_object_set_new(g_out, "hw_counters", ftb_phase_stats_counters_json(ps));

    if (smp && c->timeline) {
        json_t *tl = json_object();
        json_object_set_new(tl, "memory_events", json_integer((json_int_t)ftb_mem_timeline_count()));
        json_object_set_new(tl, "memory_events_dropped", json_integer(ftb_mem_timeline_dropped()));
        json_object_set_new(tl, "rss_samples", json_integer((json_int_t)ftb_sampler_count(smp)));
        json_object_set_new(tl, "rss_sample_period_seconds", json_real(ftb_sampler_period(smp)));
        json_object_set_new(g_out, "timeline", tl);
        /* A timeline that cannot be written (a full disk) costs the
         * timeline only: the measurements are complete. */
        if (write_timeline(timeline_name, c, smp, st0.live) != 0) report("ioerror timeline %d", errno);
        ftb_mem_timeline_enable(0);
    }
    snapshot("measured");

    json_t *host = json_object();
    json_object_set_new(host, "blas_core", json_string(ftb_blas_corename()));
    json_object_set_new(host, "blas_selection", json_string(ftb_blas_selection()));
    json_object_set_new(host, "cpu_features", json_string(ftb_cpu_features()));
    if (ftb_blas_selection_basis()[0])
        json_object_set_new(host, "blas_selection_basis", json_string(ftb_blas_selection_basis()));
    json_object_set_new(host, "cpu", ftb_cpu_json());
    json_object_set_new(g_out, "host", host);
    report("done");
    snapshot("done");
    /* No teardown: the process ends here and the OS reclaims everything;
     * a method's destroy() bug must not turn a measured cell into a crash. */
    _exit(CHILD_OK);
}
