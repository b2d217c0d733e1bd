/*
 * sweep.c — `ftbench sweep`: every method × sequence length (× batch) on
 * one device, each cell in its own child.  The sweep always goes on: every
 * outcome is a record.  Cells already in results.jsonl are skipped, so a
 * killed or interrupted sweep resumes where it stopped.
 */
#include "sweep.h"
#include "eta.h"
#include "commands.h"
#include "plugin.h"
#include "remote.h"
#include "rundir.h"
#include "slurm.h"
#include "util.h"

#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The default sweep must finish in about 15 minutes on a 2-core machine
 * with the device's default model (qwen2.5-0.5b for the Raspberry Pi 5,
 * ~10 s per lora step at seq 512 and ~90 s at 4096 there, plus ~10 s to
 * build the model in every cell).  Hence one measured step without
 * warm-up (the step time includes first-touch page faults; memory, the
 * point of this sweep, is complete after one step) and no runs of lengths
 * longer than one already over budget.  `paper` measures time properly. */
static const ftb_sweep_def defs[] = {
    { "default", "128..4096", "1", 1, 0, 1,
      "every installed method x seq 128..4096 (doubling), batch 1, 1 measured step, no warm-up;\n"
      "            lengths beyond one already over budget are recorded as skipped" },
    { "paper", "64..8192", "1,4", 5, 2, 0,
      "every installed method x seq 64..8192 x batch 1,4, 2 warm-up + 5 measured steps, all run" },
};

const ftb_sweep_def *ftb_sweep_defs(int *n)
{
    *n = (int)(sizeof defs / sizeof defs[0]);
    return defs;
}

const ftb_sweep_def *ftb_sweep_find(const char *name)
{
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (!strcmp(defs[i].name, name)) return &defs[i];
    return NULL;
}

void ftb_sweep_run_id(const char *sweep, const char *canonical, char *out, size_t n)
{
    uint64_t h = ftb_fnv1a(canonical, strlen(canonical), FTB_FNV_INIT);
    snprintf(out, n, "%.60s-%016llx", sweep, (unsigned long long)h);
}

/* ---- summary ------------------------------------------------------------- */

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static const char *short_outcome(const char *o)
{
    if (!strcmp(o, "crashed")) return "CRASH";
    if (!strcmp(o, "killed")) return "KILLED";
    if (!strcmp(o, "timeout")) return "TIMEOUT";
    if (!strcmp(o, "oom")) return "OOM";
    if (!strcmp(o, "error")) return "ERROR";
    if (!strcmp(o, "skipped")) return "over*";
    /* Slurm ended the task (sacct): no measurement, re-run on resubmission. */
    if (!strcmp(o, "slurm_cancelled")) return "CANCELLED";
    if (!strcmp(o, "slurm_timeout")) return "S-TIMEOUT";
    if (!strcmp(o, "slurm_out_of_memory")) return "S-OOM";
    if (!strcmp(o, "slurm_failed")) return "S-FAILED";
    if (!strncmp(o, "slurm_", 6)) return "SLURM";
    return o;
}

void ftb_sweep_print_summary(FILE *f, json_t *const *records, int n, int64_t budget, const char *device)
{
    /* Distinct rows (method label [+ batch]) and columns (seq). */
    char(*rows)[160] = calloc((size_t)n + 1, sizeof *rows);
    int *seqs = calloc((size_t)n + 1, sizeof *seqs);
    int nr = 0, ns = 0, multi_batch = 0;
    for (int i = 0; i < n; i++)
        if (json_integer_value(json_object_get(records[i], "batch")) !=
            json_integer_value(json_object_get(records[0], "batch")))
            multi_batch = 1;
    for (int i = 0; i < n; i++) {
        json_t *r = records[i];
        const char *label = json_string_value(json_object_get(json_object_get(r, "method"), "label"));
        const char *cell = json_string_value(json_object_get(r, "cell"));
        /* The label plus the option hash, so two option sets are two rows. */
        char row[160];
        const char *plus = cell ? strchr(cell, '+') : NULL;
        const char *dot = plus ? strchr(plus, '.') : NULL;
        if (plus && dot && plus < dot)
            snprintf(row, sizeof row, "%s%.*s", label ? label : "?", (int)(dot - plus), plus);
        else
            snprintf(row, sizeof row, "%s", label ? label : "?");
        if (multi_batch) {
            size_t u = strlen(row);
            snprintf(row + u, sizeof row - u, " b=%lld", (long long)json_integer_value(json_object_get(r, "batch")));
        }
        int found = 0;
        for (int k = 0; k < nr; k++) found |= !strcmp(rows[k], row);
        if (!found) snprintf(rows[nr++], sizeof rows[0], "%s", row);
        int s = (int)json_integer_value(json_object_get(r, "seq"));
        found = 0;
        for (int k = 0; k < ns; k++) found |= seqs[k] == s;
        if (!found) seqs[ns++] = s;
    }
    qsort(seqs, (size_t)ns, sizeof *seqs, cmp_int);

    for (int table = 0; table < 2; table++) {
        if (table == 0)
            fprintf(f,
                    "\npeak RSS (MiB) on %s, budget %s\n"
                    "  N* over budget (>N*: stopped at N); over*: not run, a shorter length was already over budget;\n"
                    "  CRASH / TIMEOUT / OOM / ERROR: the cell failed; -: not recorded\n",
                    device, ftb_format_bytes(budget, (char[32]){ 0 }, 32));
        if (table == 0) {
            int slurm = 0;
            for (int i = 0; i < n; i++) {
                const char *o = json_string_value(json_object_get(records[i], "outcome"));
                slurm |= o && !strncmp(o, "slurm_", 6);
            }
            if (slurm)
                fprintf(f, "  CANCELLED / S-TIMEOUT / S-OOM / S-FAILED / SLURM: Slurm ended the cell's task (sacct); "
                           "not a measurement, run again on resubmission\n");
        } else {
            fprintf(f, "\nmedian step time (s)\n");
            /* The default sweeps measure memory: one step, no warm-up.  Its
             * time is a cold step's (first touch, caches), not a timing. */
            int cold = 0;
            for (int i = 0; i < n; i++)
                cold |= json_integer_value(json_object_get(records[i], "steps")) == 1 &&
                        json_integer_value(json_object_get(records[i], "warmup_steps")) == 0;
            if (cold)
                fprintf(f, "  one cold step per cell (no warm-up): what memory costs, not a timing; "
                           "--warmup 1 --steps 3 (or --sweep paper) for step times\n");
        }
        int w0 = 8;
        for (int k = 0; k < nr; k++)
            if ((int)strlen(rows[k]) > w0) w0 = (int)strlen(rows[k]);
        fprintf(f, "%-*s", w0, "method");
        for (int j = 0; j < ns; j++) fprintf(f, " %9d", seqs[j]);
        fprintf(f, "\n");
        for (int k = 0; k < nr; k++) {
            fprintf(f, "%-*s", w0, rows[k]);
            for (int j = 0; j < ns; j++) {
                /* The last record of the cell wins (a --force re-run). */
                json_t *hit = NULL;
                for (int i = 0; i < n; i++) {
                    json_t *r = records[i];
                    const char *label = json_string_value(json_object_get(json_object_get(r, "method"), "label"));
                    const char *cell = json_string_value(json_object_get(r, "cell"));
                    char row[160];
                    const char *plus = cell ? strchr(cell, '+') : NULL;
                    const char *dot = plus ? strchr(plus, '.') : NULL;
                    if (plus && dot && plus < dot)
                        snprintf(row, sizeof row, "%s%.*s", label ? label : "?", (int)(dot - plus), plus);
                    else
                        snprintf(row, sizeof row, "%s", label ? label : "?");
                    if (multi_batch) {
                        size_t u = strlen(row);
                        snprintf(row + u, sizeof row - u, " b=%lld",
                                 (long long)json_integer_value(json_object_get(r, "batch")));
                    }
                    if (!strcmp(row, rows[k]) && json_integer_value(json_object_get(r, "seq")) == seqs[j]) hit = r;
                }
                char cellbuf[32] = "-";
                if (hit) {
                    const char *o = json_string_value(json_object_get(hit, "outcome"));
                    json_t *pk = json_object_get(json_object_get(hit, "memory"), "peak_rss_bytes");
                    json_t *st =
                        json_object_get(json_object_get(json_object_get(hit, "timing"), "step_seconds"), "median");
                    if (!o) o = "?";
                    if (table == 0) {
                        if (!strcmp(o, "ok") && json_is_integer(pk))
                            snprintf(cellbuf, sizeof cellbuf, "%.0f", (double)json_integer_value(pk) / 1048576.0);
                        else if (!strcmp(o, "over_budget") && json_is_integer(pk))
                            snprintf(
                                cellbuf, sizeof cellbuf, "%s%.0f*",
                                json_is_true(json_object_get(json_object_get(hit, "memory"), "peak_is_lower_bound"))
                                    ? ">"
                                    : "",
                                (double)json_integer_value(pk) / 1048576.0);
                        else if (!strcmp(o, "over_budget"))
                            snprintf(cellbuf, sizeof cellbuf, ">budget*");
                        else
                            snprintf(cellbuf, sizeof cellbuf, "%s", short_outcome(o));
                    } else {
                        if (json_is_number(st) && (!strcmp(o, "ok") || !strcmp(o, "over_budget")))
                            snprintf(cellbuf, sizeof cellbuf, "%.3f", json_number_value(st));
                        else if (strcmp(o, "ok") && strcmp(o, "over_budget"))
                            snprintf(cellbuf, sizeof cellbuf, "%s", !strcmp(o, "skipped") ? "-" : short_outcome(o));
                    }
                }
                fprintf(f, " %9s", cellbuf);
            }
            fprintf(f, "\n");
        }
    }
    free(rows);
    free(seqs);
}

/* ---- the command ---------------------------------------------------------- */

static const unsigned SWEEP_OPTS = CLI_MODEL | CLI_METHODS | CLI_LISTS | CLI_TRAIN | CLI_DEVICE | CLI_OUT;

static void sweep_help(FILE *f)
{
    fprintf(f, "usage: ftbench sweep [--sweep NAME] [--device NAME] [options]\n"
               "Runs every cell of a sweep, each in its own child process, appending one record\n"
               "per cell to <out>/<device>/<run-id>/results.jsonl, then prints a summary table.\n"
               "Cells already recorded there are skipped: re-running the same command resumes.\n"
               "The model defaults to the device's default_model.  Exit code 0 when the sweep\n"
               "completed (whatever the cells' outcomes), 2 on bad input.\n\nsweeps:\n");
    int n;
    const ftb_sweep_def *d = ftb_sweep_defs(&n);
    for (int i = 0; i < n; i++) fprintf(f, "  %-9s %s\n", d[i].name, d[i].about);
    fprintf(f, "\noptions:\n");
    ftb_cli_print_options(f, SWEEP_OPTS);
    ftb_sweep_backend_help(f);
    ftb_remote_help(f);
}

typedef struct {
    int index, total; /* 1-based cell index, cells in the sweep        */
    const ftb_cell *cell;
    double sweep_start, cell_start;
    ftb_eta eta; /* fitted to the cells measured so far (eta.h) */
    int tty;
    /* Not on a terminal (a log file, CI, a Slurm task's output), a step's
     * line is printed every 30 s at most: 800 steps must not be 800
     * lines.  Stage changes are always printed. */
    char last_what[16];
    double last_print;
} progress_state;

static void eta_remaining(progress_state *p, const ftb_cell *c, int sign)
{
    if (sign > 0)
        ftb_eta_add_remaining(&p->eta, c->steps + c->warmup, c->batch, c->seq);
    else
        ftb_eta_remove_remaining(&p->eta, c->steps + c->warmup, c->batch, c->seq);
}

static void progress_cb(void *ud, const char *what, int step, int nsteps)
{
    progress_state *p = ud;
    double now = ftb_now();
    if (!p->tty && !strcmp(what, p->last_what) && now - p->last_print < 30 && step < nsteps) return;
    snprintf(p->last_what, sizeof p->last_what, "%s", what);
    p->last_print = now;
    char el[32], eta[32];
    ftb_format_duration(now - p->sweep_start, el, sizeof el);
    double left = ftb_eta_seconds_left(&p->eta, now - p->cell_start);
    if (left >= 0)
        ftb_format_duration(left, eta, sizeof eta);
    else
        snprintf(eta, sizeof eta, "?");
    char stage[48];
    if (!strcmp(what, "step"))
        snprintf(stage, sizeof stage, "step %d/%d", step, nsteps);
    else
        snprintf(stage, sizeof stage, "%s", !strcmp(what, "load") ? "loading" : !strcmp(what, "init") ? "init" : what);
    fprintf(stderr, "%s[cell %d/%d] %s seq=%d batch=%d: %-10s | elapsed %s | ETA %s%s", p->tty ? "\r\033[K" : "",
            p->index, p->total, p->cell->method_label, p->cell->seq, p->cell->batch, stage, el, eta,
            p->tty ? "" : "\n");
    fflush(stderr);
}

/* Per method (label + options) and batch: the shortest length that went
 * over budget, for skipping longer ones. */
typedef struct {
    char method[160];
    int batch, seq;
    char key[256];
} over_mark;
typedef struct {
    over_mark *v;
    int n;
} over_list;

static void method_id(const ftb_cell *c, char *out, size_t n)
{
    /* The key up to ".<model>": label plus option hash. */
    const char *k = c->key;
    size_t len = strlen(c->method_label);
    if (k[len] == '+') {
        const char *dot = strchr(k + len, '.');
        len = dot ? (size_t)(dot - k) : len;
    }
    snprintf(out, n, "%.*s", (int)len, k);
}

static void note_over_budget(over_list *l, const ftb_cell *c, json_t *rec)
{
    const char *o = json_string_value(json_object_get(rec, "outcome"));
    if (!o || (strcmp(o, "over_budget") && strcmp(o, "oom"))) return;
    char id[160];
    method_id(c, id, sizeof id);
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].method, id) && l->v[i].batch == c->batch) {
            if (c->seq < l->v[i].seq) {
                l->v[i].seq = c->seq;
                snprintf(l->v[i].key, sizeof l->v[i].key, "%s", c->key);
            }
            return;
        }
    l->v = realloc(l->v, (size_t)(l->n + 1) * sizeof *l->v);
    over_mark *m = &l->v[l->n++];
    snprintf(m->method, sizeof m->method, "%s", id);
    snprintf(m->key, sizeof m->key, "%s", c->key);
    m->batch = c->batch;
    m->seq = c->seq;
}

static const over_mark *find_over(const over_list *l, const ftb_cell *c)
{
    char id[160];
    method_id(c, id, sizeof id);
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].method, id) && l->v[i].batch == c->batch && c->seq > l->v[i].seq) return &l->v[i];
    return NULL;
}

/* The run directory's records for the Slurm backend (slurm.h). */
typedef struct {
    ftb_recorded *done;
    const char *run_dir;
} sweep_records;

static json_t *records_find(const char *key, void *ud) { return ftb_recorded_find(((sweep_records *)ud)->done, key); }

static void records_refresh(void *ud)
{
    sweep_records *r = ud;
    char err[FTB_ERR_LEN];
    ftb_recorded_free(r->done);
    if (ftb_rundir_load(r->run_dir, r->done, err, sizeof err) != 0) fprintf(stderr, "ftbench sweep: %s\n", err);
}

static int record_slurm_outcome(const ftb_cell *c, const char *outcome, const char *detail, json_t *slurm, void *ud,
                                char *err, size_t errlen)
{
    (void)ud;
    return ftb_cell_record_outcome(c, outcome, detail, "slurm", slurm, err, errlen);
}

/* --backend slurm (submit, and with --wait follow and collect) and
 * --collect: everything but the summary, which the caller prints. */
static int slurm_backend(ftb_sweep_backend *be, const ftb_sweep_plan *plan, const ftb_sweep_records *recs,
                         sweep_records *srec, const char *run_dir, int quiet)
{
    char err[FTB_ERR_LEN + 256];
    if (be->mode == FTB_SWEEP_SLURM_SUBMIT) {
        int rc = ftb_slurm_submit(be, plan, recs);
        if (rc != FTB_EXIT_OK || !be->wait) return rc;
    } else if (be->wait) {
        char job[64];
        ftb_slurm_latest_job(run_dir, job, sizeof job);
        if (job[0] && ftb_slurm_wait(job, plan, recs, quiet, err, sizeof err) != 0) {
            fprintf(stderr, "ftbench sweep: %s\n", err);
            return FTB_EXIT_FAIL;
        }
    }
    /* The tasks' cell files into results.jsonl (this process holds the lock). */
    int added;
    if (ftb_rundir_sync(run_dir, &added, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench sweep: %s\n", err);
        return FTB_EXIT_FAIL;
    }
    records_refresh(srec);
    int nrecorded, nactive;
    if (ftb_slurm_collect(plan, recs, record_slurm_outcome, &nrecorded, &nactive, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench sweep: %s\n", err);
        return FTB_EXIT_FAIL;
    }
    records_refresh(srec);
    fprintf(stderr, "ftbench sweep: collected %s: %d cell%s recorded with how their Slurm task ended\n", run_dir,
            nrecorded, nrecorded == 1 ? "" : "s");
    if (nactive)
        fprintf(stderr, "  %d cell%s still queued or running: collect again when the job is done\n", nactive,
                nactive == 1 ? "" : "s");
    return FTB_EXIT_OK;
}

int ftb_cmd_sweep(int argc, char **argv)
{
    char err[FTB_ERR_LEN + 256];
    /* --remote: the sweep runs on the device; this side ships, follows
     * and collects (remote.c). */
    int help = 0;
    for (int i = 1; i < argc; i++) help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
    if (!help && ftb_remote_requested(argc, argv)) return ftb_remote_sweep(argc, argv, SWEEP_OPTS);
    ftb_setup s;
    memset(&s, 0, sizeof s);
    progress_state ps;
    memset(&ps, 0, sizeof ps);
    ftb_eta_init(&ps.eta);
    /* The backend's options first: a Slurm task or a collect replaces the
     * command line with the sweep options recorded at submission. */
    ftb_sweep_backend be;
    if (ftb_sweep_backend_parse(argc, argv, &be, err, sizeof err) != 0) {
        ftb_sweep_backend_free(&be);
        return ftb_usage_error("sweep", err);
    }
    int pr = ftb_cli_parse("sweep", SWEEP_OPTS, be.argc, be.argv, &s.cli, err, sizeof err);
    if (pr == 1) {
        sweep_help(stdout);
        ftb_sweep_backend_free(&be);
        return FTB_EXIT_OK;
    }
    if (pr < 0) {
        ftb_sweep_backend_free(&be);
        return ftb_usage_error("sweep", err);
    }
    int slurm_task = be.mode == FTB_SWEEP_SLURM_TASK;
    int interrupted = 0;
    int rc = FTB_EXIT_USAGE;
    int *seqs = NULL, *batches = NULL, nseq = 0, nbat = 0;
    char **labels = NULL;
    int nlabels = 0;
    ftb_cell *cells = NULL;
    ftb_recorded done;
    memset(&done, 0, sizeof done);
    json_t **recs = NULL;
    over_list over = { NULL, 0 };

    const char *sweep_name = s.cli.sweep ? s.cli.sweep : "default";
    const ftb_sweep_def *def = ftb_sweep_find(sweep_name);
    if (!def) {
        snprintf(err, sizeof err, "unknown sweep '%s' (sweeps: default, paper)", sweep_name);
        ftb_usage_error("sweep", err);
        goto out;
    }
    if (!s.cli.steps_given) s.cli.steps = def->steps;
    if (!s.cli.warmup_given) s.cli.warmup = def->warmup;
    if (ftb_parse_int_list(s.cli.seqs ? s.cli.seqs : def->seqs, 1, 1 << 22, &seqs, &nseq, err, sizeof err) != 0 ||
        ftb_parse_int_list(s.cli.batches ? s.cli.batches : def->batches, 1, 1 << 16, &batches, &nbat, err,
                           sizeof err) != 0) {
        char msg[FTB_ERR_LEN + 300];
        snprintf(msg, sizeof msg, "%s: %s", s.cli.seqs && !seqs ? "--seqs" : "--batches", err);
        if (!seqs) snprintf(msg, sizeof msg, "--seqs %s", err);
        ftb_usage_error("sweep", msg);
        goto out;
    }
    if (ftb_setup_common(&s, 0, err, sizeof err) != 0 || ftb_setup_check_dataset(&s, err, sizeof err) != 0) {
        ftb_usage_error("sweep", err);
        goto out;
    }
    /* Lengths the model refuses: given ones are bad input; a sweep
     * definition's are left out, saying so. */
    for (int k = 0; k < nseq; k++) {
        if (seqs[k] <= s.cfg.max_seq) continue;
        if (s.cli.seqs) {
            snprintf(err, sizeof err, "--seqs: %d is longer than %s's max_seq (max_position_embeddings) %d", seqs[k],
                     s.model_name, s.cfg.max_seq);
            ftb_usage_error("sweep", err);
            goto out;
        }
        if (!s.cli.quiet)
            fprintf(stderr, "ftbench sweep: lengths above %s's max_seq %d left out (from %d)\n", s.model_name,
                    s.cfg.max_seq, seqs[k]);
        nseq = k;
        break;
    }
    /* Methods: the list given, or every plugin in the directory. */
    if (s.cli.methods) {
        char *copy = strdup(s.cli.methods), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            labels = realloc(labels, (size_t)(nlabels + 1) * sizeof *labels);
            labels[nlabels++] = strdup(ftb_trim(t));
        }
        free(copy);
    } else if (!s.methods_dir) {
        ftb_usage_error("sweep", "no methods directory found (give --methods-dir or --methods)");
        goto out;
    } else if (ftb_plugin_list(s.methods_dir, &labels, &nlabels, err, sizeof err) != 0) {
        ftb_usage_error("sweep", err);
        goto out;
    }
    if (nlabels == 0) {
        snprintf(err, sizeof err, "no methods to sweep in %s", s.methods_dir ? s.methods_dir : "?");
        ftb_usage_error("sweep", err);
        goto out;
    }

    /* The method template of each label: path and options.  A plugin that
     * cannot load is not bad input: its cells run and record the error. */
    ftb_cell *tmpl = calloc((size_t)nlabels, sizeof *tmpl);
    for (int i = 0; i < nlabels; i++) {
        ftb_setup_cell(&s, &tmpl[i]);
        if (ftb_plugin_resolve(labels[i], s.methods_dir, tmpl[i].method_path, sizeof tmpl[i].method_path,
                               tmpl[i].method_label, sizeof tmpl[i].method_label, err, sizeof err) != 0) {
            ftb_usage_error("sweep", err);
            free(tmpl);
            goto out;
        }
        char *json = NULL;
        if (ftb_plugin_probe(tmpl[i].method_path, &json, err, sizeof err) == 0) {
            if (ftb_cli_check_options(&s.cli, tmpl[i].method_label, json, 0, err, sizeof err) != 0) {
                ftb_usage_error("sweep", err);
                free(json);
                free(tmpl);
                goto out;
            }
            free(json);
        }
        tmpl[i].n_opts = ftb_cli_method_options(&s.cli, tmpl[i].method_label, tmpl[i].opt_keys, tmpl[i].opt_values,
                                                FTB_MAX_METHOD_OPTS);
    }
    /* Unscoped --opt keys must belong to at least one method. */
    for (int k = 0; k < s.cli.n_opts; k++) {
        if (strchr(s.cli.opt_keys[k], '.')) continue;
        int used = 0;
        for (int i = 0; i < nlabels && !used; i++) {
            char *json = NULL;
            char e2[FTB_ERR_LEN];
            if (ftb_plugin_probe(tmpl[i].method_path, &json, e2, sizeof e2) == 0) {
                ftb_cli ol = s.cli;
                ol.n_opts = 1;
                ol.opt_keys[0] = s.cli.opt_keys[k];
                ol.opt_values[0] = s.cli.opt_values[k];
                int rc2 = ftb_cli_check_options(&ol, tmpl[i].method_label, json, 1, e2, sizeof e2);
                free(json);
                used = rc2 != -1;
                if (rc2 == -2) { /* the method has it; the value is bad */
                    ftb_usage_error("sweep", e2);
                    free(tmpl);
                    goto out;
                }
            }
        }
        if (!used) {
            snprintf(err, sizeof err, "--opt %s: no method in this sweep has that option", s.cli.opt_keys[k]);
            ftb_usage_error("sweep", err);
            free(tmpl);
            goto out;
        }
    }

    /* Cells: short sequences first (early results, early ETA).  A method
     * named twice (--methods lora,lora) is one set of cells: each key once. */
    int ncells = 0;
    cells = calloc((size_t)(nseq * nbat * nlabels), sizeof *cells);
    for (int a = 0; a < nseq; a++)
        for (int b = 0; b < nbat; b++)
            for (int i = 0; i < nlabels; i++) {
                ftb_cell *c = &cells[ncells];
                *c = tmpl[i];
                c->seq = seqs[a];
                c->batch = batches[b];
                ftb_cell_make_key(c);
                int dup = 0;
                for (int k = 0; k < ncells && !dup; k++) dup = !strcmp(cells[k].key, c->key);
                if (!dup) ncells++;
            }
    free(tmpl);
    int nmethods = ncells / (nseq * nbat);

    /* Run id from the definition: everything that changes the numbers. */
    char canon[8192];
    int off = snprintf(canon, sizeof canon,
                       "model=%s|ckpt=%s|steps=%d|warmup=%d|dataset=%s|seed=%llu|lr=%g|attn=%d|loss=%d|budget=%lld|"
                       "threads=%d|enforce=%d",
                       s.model_name, s.cli.checkpoint ? s.cli.checkpoint : "", s.cli.steps, s.cli.warmup, s.cli.dataset,
                       (unsigned long long)s.cli.seed, s.cli.lr, s.cli.attention, s.cli.loss, (long long)s.budget,
                       s.threads, (int)s.enforce);
    /* Sorted keys: the order methods were listed in does not change the
     * sweep, so it must not change the run id. */
    const char **sorted = malloc((size_t)ncells * sizeof *sorted);
    for (int i = 0; i < ncells; i++) sorted[i] = cells[i].key;
    qsort(sorted, (size_t)ncells, sizeof *sorted, cmp_str);
    uint64_t kh = FTB_FNV_INIT;
    for (int i = 0; i < ncells; i++) kh = ftb_fnv1a(sorted[i], strlen(sorted[i]) + 1, kh);
    free(sorted);
    off += snprintf(canon + off, sizeof canon - (size_t)off, "|cells=%d:%016llx", ncells, (unsigned long long)kh);
    char run_id[128], run_dir[PATH_MAX], results[PATH_MAX + 32];
    if (s.cli.run_id)
        snprintf(run_id, sizeof run_id, "%s", s.cli.run_id);
    else
        ftb_sweep_run_id(sweep_name, canon, run_id, sizeof run_id);
    if (ftb_setup_run_dir(&s, run_id, run_dir, sizeof run_dir) != 0) goto out;
    snprintf(results, sizeof results, "%s/%s", run_dir, FTB_RUNDIR_RESULTS);
    /* Ctrl-C from here on: the running cell is killed and not recorded,
     * and the sweep says how far it got (exit 130). */
    ftb_catch_interrupts();
    /* A Slurm array task is one of many writers at once, maybe on other
     * machines over NFS: its records go to cells/ only (whole files,
     * renamed into place); no lock, no append — the collect merges them. */
    int brc = ftb_rundir_begin("sweep", run_dir, s.cli.wait_lock, s.cli.independent || slurm_task, s.cli.quiet, &done);
    if (brc) {
        rc = brc;
        goto out;
    }

    sweep_records srec = { &done, run_dir };
    ftb_sweep_records recs_api = { records_find, records_refresh, &srec };
    ftb_sweep_plan plan = { sweep_name,
                            run_id,
                            run_dir,
                            cells,
                            ncells,
                            s.threads,
                            s.budget,
                            s.emulated,
                            (int)s.device.ram_mb,
                            s.cli.threads > 0,
                            s.cli.budget_bytes > 0 };
    if (be.mode == FTB_SWEEP_SLURM_COLLECT && ftb_slurm_collect_check(&be, &plan, err, sizeof err) != 0) {
        ftb_usage_error("sweep", err);
        goto out;
    }
    if (be.mode == FTB_SWEEP_SLURM_SUBMIT || be.mode == FTB_SWEEP_SLURM_COLLECT) {
        /* The records a collect writes describe their cells as a run would. */
        json_t *sweep_extra = json_pack("{s:s}", "sweep", sweep_name);
        for (int i = 0; i < ncells; i++) {
            snprintf(cells[i].run_id, sizeof cells[i].run_id, "%s", run_id);
            snprintf(cells[i].run_dir, sizeof cells[i].run_dir, "%s", run_dir);
            cells[i].extra = sweep_extra;
        }
        rc = slurm_backend(&be, &plan, &recs_api, &srec, run_dir, s.cli.quiet);
        json_decref(sweep_extra);
        if (rc != FTB_EXIT_OK || (be.mode == FTB_SWEEP_SLURM_SUBMIT && !be.wait)) goto out;
        goto summary;
    }
    if (slurm_task && ftb_slurm_task_check(&be, &plan, err, sizeof err) != 0) {
        ftb_usage_error("sweep", err);
        goto out;
    }

    json_t *extra = json_object();
    json_object_set_new(extra, "sweep", json_string(sweep_name));
    if (slurm_task) json_object_set(extra, "slurm", be.slurm_info);
    int todo = 0, mismatched = 0;
    char why[FTB_ERR_LEN], first_bad[300] = "";
    json_t **kept = calloc((size_t)ncells + 1, sizeof *kept);
    int nkept = 0;
    for (int i = 0; i < ncells; i++) {
        snprintf(cells[i].run_id, sizeof cells[i].run_id, "%s", run_id);
        snprintf(cells[i].run_dir, sizeof cells[i].run_dir, "%s", run_dir);
        cells[i].extra = extra;
        if (slurm_task && !ftb_slurm_task_has(&be, cells[i].key)) continue;
        ftb_resume res = ftb_resume_check(&cells[i], &done, s.cli.force, mismatched ? NULL : why, sizeof why);
        if (res == FTB_RESUME_MISMATCH && !mismatched++) snprintf(first_bad, sizeof first_bad, "%s", cells[i].key);
        if (res == FTB_RESUME_KEEP) kept[nkept++] = ftb_recorded_find(&done, cells[i].key);
        if (res == FTB_RESUME_RUN) {
            todo++;
            eta_remaining(&ps, &cells[i], +1);
        }
    }
    if (mismatched) {
        /* Measured under other settings: reusing them would mix two
         * experiments under one header. */
        fprintf(stderr,
                "ftbench sweep: %s has %d cell%s recorded with other settings (%s: %s); give --force to measure "
                "them again, or another --run-id\n",
                run_dir, mismatched, mismatched == 1 ? "" : "s", first_bad, why);
        free(kept);
        json_decref(extra);
        rc = FTB_EXIT_USAGE;
        goto out;
    }
    ftb_resume_warn_git("sweep", kept, nkept);
    free(kept);
    if (slurm_task) {
        const char *task = json_string_value(json_object_get(be.slurm_info, "array_task_id"));
        const char *job = json_string_value(json_object_get(be.slurm_info, "array_job_id"));
        fprintf(stderr,
                "ftbench sweep: Slurm array task %s of job %s on %s: %d cell%s of %s, %d without a measurement\n",
                task ? task : "?", job ? job : "?", ftb_hostname(), be.n_task_keys, be.n_task_keys == 1 ? "" : "s",
                run_dir, todo);
    } else {
        char base_fmt[64];
        ftb_base_key_part(&s.cli.base, base_fmt, sizeof base_fmt);
        fprintf(stderr,
                "ftbench sweep %s: %d cells (%d methods x %d lengths x %d batch sizes) of %s on %s%s, "
                "budget %s (%s), %d threads\n"
                "  base weights: %s%s\n"
                "  results: %s%s\n",
                sweep_name, ncells, nmethods, nseq, nbat, s.model_name, s.device.name, s.emulated ? " (emulated)" : "",
                ftb_format_bytes(s.budget, (char[32]){ 0 }, 32), ftb_enforce_name(s.enforce), s.threads,
                base_fmt[0] ? base_fmt : "f32",
                s.base_from_device ? " (the device profile's default_base_dtype; --base-dtype f32 for fp32)" : "",
                results, todo < ncells ? " (resuming)" : "");
        if (todo < ncells)
            fprintf(stderr, "  %d of %d cells already recorded; running the other %d\n", ncells - todo, ncells, todo);
    }

    /* The base weights file every cell maps (same model, format, seed):
     * made once, before the first cell, when there is one to run. */
    json_t *base_info = NULL;
    if (todo > 0 && ncells > 0) {
        if (ftb_cell_prepare_base(&cells[0], s.cli.quiet, err, sizeof err) != 0) {
            fprintf(stderr, "ftbench sweep: %s\n", err);
            json_decref(extra);
            rc = FTB_EXIT_FAIL;
            goto out;
        }
        base_info = cells[0].base_info;
        for (int i = 1; i < ncells; i++) {
            memcpy(cells[i].base_dir, cells[0].base_dir, sizeof cells[i].base_dir);
            cells[i].base_info = base_info;
        }
    }

    int skip = def->skip_longer_after_over_budget;
    /* Array tasks run side by side: no cell waits for a shorter one. */
    if (s.cli.no_skip || slurm_task) skip = 0;
    ps.total = ncells;
    ps.sweep_start = ftb_now();
    ps.tty = isatty(2) && !s.cli.quiet;
    for (int i = 0; i < ncells && !interrupted; i++) {
        ftb_cell *c = &cells[i];
        if (ftb_interrupted()) {
            interrupted = 1;
            break;
        }
        if (slurm_task && !ftb_slurm_task_has(&be, c->key)) continue;
        if (ftb_resume_check(c, &done, s.cli.force, NULL, 0) == FTB_RESUME_KEEP) {
            note_over_budget(&over, c, ftb_recorded_find(&done, c->key));
            continue;
        }
        const over_mark *om = skip ? find_over(&over, c) : NULL;
        if (om) {
            if (ftb_cell_record_skipped(c, om->key, om->seq, err, sizeof err) != 0) {
                fprintf(stderr, "%sftbench sweep: %s\n", ps.tty ? "\r\033[K" : "", err);
                json_decref(extra);
                json_decref(base_info);
                rc = FTB_EXIT_FAIL;
                goto out;
            }
            eta_remaining(&ps, c, -1);
            if (!s.cli.quiet)
                fprintf(stderr, "%s[cell %d/%d] %s: skipped (over budget already at seq %d)\n",
                        ps.tty ? "\r\033[K" : "", i + 1, ncells, c->key, om->seq);
            continue;
        }
        ps.index = i + 1;
        ps.cell = c;
        ps.cell_start = ftb_now();
        if (!s.cli.quiet) {
            c->progress = progress_cb;
            c->progress_ud = &ps;
            progress_cb(&ps, "start", 0, 0);
        }
        ftb_cell_result r;
        int crc = ftb_cell_run(c, &r, err, sizeof err);
        if (crc == FTB_CELL_INTERRUPTED) {
            interrupted = 1;
            break;
        }
        if (crc != 0) {
            /* Not even a record could be written (disk full, permissions):
             * going on would only repeat it. */
            fprintf(stderr, "%sftbench sweep: %s\n", ps.tty ? "\r\033[K" : "", err);
            json_decref(extra);
            json_decref(base_info);
            rc = FTB_EXIT_FAIL;
            goto out;
        }
        note_over_budget(&over, c, r.record);
        ftb_eta_measured(&ps.eta, c->steps + c->warmup, c->batch, c->seq, r.wall);
        if (!s.cli.quiet) {
            char w[32];
            ftb_format_duration(r.wall, w, sizeof w);
            fprintf(stderr, "%s[cell %d/%d] %s: %s%s%s", ps.tty ? "\r\033[K" : "", i + 1, ncells, c->key, r.outcome,
                    r.detail[0] ? " - " : "", r.detail);
            if (r.peak_rss > 0) fprintf(stderr, ", peak %.0f MiB", (double)r.peak_rss / 1048576.0);
            fprintf(stderr, " (%s)\n", w);
        }
        ftb_cell_result_free(&r);
    }
    json_decref(extra);
    json_decref(base_info);
    if (slurm_task) {
        /* The summary is the collect's, over every task's cells. */
        rc = FTB_EXIT_OK;
        goto out;
    }

    /* Summary over every recorded cell of this sweep (resumed ones too). */
    ftb_recorded_free(&done);
    if (ftb_rundir_load(run_dir, &done, err, sizeof err) != 0) fprintf(stderr, "ftbench sweep: %s\n", err);
summary:
    recs = calloc((size_t)ncells + 1, sizeof *recs);
    int nrec = 0;
    for (int i = 0; i < ncells; i++) {
        json_t *r = ftb_recorded_find(&done, cells[i].key);
        if (r) recs[nrec++] = r;
    }
    if (interrupted) {
        int sig = ftb_interrupted();
        fprintf(stderr, "%sftbench sweep: interrupted after %d of %d cells; run the same command again to resume\n",
                ps.tty ? "\r\033[K" : "", nrec, ncells);
        rc = 128 + (sig ? sig : 2);
        goto out;
    }
    printf("sweep %s: %s, %s on %s%s\n", sweep_name, run_id, s.model_name, s.device.name,
           s.emulated ? " (emulated)" : "");
    ftb_sweep_print_summary(stdout, recs, nrec, s.budget, s.device.name);
    printf("\nrecords: %s\n", results);
    rc = FTB_EXIT_OK;
out:
    ftb_eta_free(&ps.eta);
    free(over.v);
    free(recs);
    ftb_recorded_free(&done);
    free(cells);
    for (int i = 0; i < nlabels; i++) free(labels[i]);
    free(labels);
    free(seqs);
    free(batches);
    ftb_cli_free(&s.cli);
    ftb_sweep_backend_free(&be);
    return rc;
}
