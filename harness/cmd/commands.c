/*
 * commands.c — `run` and `list`, and the setup that run, sweep and fit
 * share.  Everything the user names is resolved and checked here, in the
 * parent, so bad input is one clear line and exit code 2 before any child
 * is forked.
 */
#include "commands.h"
#include "cgroup.h"
#include "dataset.h"
#include "plugin.h"
#include "rundir.h"
#include "util.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ftb_usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "ftbench %s: %s\n", cmd, msg);
    return FTB_EXIT_USAGE;
}

int ftb_setup_common(ftb_setup *s, int fit_mode, char *err, size_t errlen)
{
    ftb_cli *o = &s->cli;
    if (ftb_cli_device(o, &s->device, err, errlen) != 0) return -1;
    /* A profile with detected figures describes this machine, and so does
     * one whose architecture, cores and RAM are this machine's (running on
     * the Pi with --device rpi5); any other is emulated here. */
    s->emulated = !s->device.detected && !ftb_profile_adopt_host(&s->device);
    /* The base-weight format such devices fine-tune with (the profile's
     * default_base_dtype, e.g. int4 with groups of 64 on a Pi), unless the
     * user chose one: --base-dtype f32 measures fp32 weights. */
    ftb_base_spec chosen = o->base;
    if (s->device.default_base_dtype[0] && !(o->base.dtype_given & 1)) {
        if (ftb_base_parse_option(&o->base, "--base-dtype", s->device.default_base_dtype, err, errlen) != 0) return -1;
        if (s->device.default_group && !o->base.group_given) {
            char g[16];
            snprintf(g, sizeof g, "%d", s->device.default_group);
            if (ftb_base_parse_option(&o->base, "--group", g, err, errlen) != 0) return -1;
        }
        s->base_from_device = 1;
    }
    if (ftb_cli_model(o, s->device.default_model, &s->cfg, s->model_name, sizeof s->model_name, err, errlen) != 0) {
        if (!s->base_from_device) return -1;
        /* The device's format does not fit this model's shapes (a test
         * model narrower than one int4 group): the weights stay as the
         * user chose, and this says so. */
        char why[FTB_ERR_LEN];
        snprintf(why, sizeof why, "%s", err);
        o->base = chosen;
        s->base_from_device = 0;
        if (ftb_cli_model(o, s->device.default_model, &s->cfg, s->model_name, sizeof s->model_name, err, errlen) != 0)
            return -1;
        fprintf(stderr, "ftbench: %s's default base weights (%s, group %d) do not fit %s (%s): f32\n", s->device.name,
                s->device.default_base_dtype, s->device.default_group, s->model_name, why);
    }
    if (o->methods_dir) {
        if (!ftb_is_dir(o->methods_dir))
            return ftb_errf(err, errlen, "--methods-dir %s: not a directory", o->methods_dir);
    }
    s->methods_dir = ftb_methods_search_path(o->methods_dir); /* user dirs first, then the built-ins */
    s->budget = o->budget_bytes ? o->budget_bytes : ftb_profile_budget_bytes(&s->device);
    int host = ftb_host_cores();
    s->threads = o->threads ? o->threads : s->emulated ? (s->device.cores < host ? s->device.cores : host) : host;

    char why[FTB_ERR_LEN];
    s->enforce_note[0] = 0;
    if (!strcmp(o->enforce, "cgroup")) {
        if (!ftb_cgroup_usable(why, sizeof why)) return ftb_errf(err, errlen, "--enforce cgroup: %s", why);
        s->enforce = FTB_ENFORCE_CGROUP;
    } else if (!strcmp(o->enforce, "watch")) {
        s->enforce = FTB_ENFORCE_WATCH;
    } else if (!strcmp(o->enforce, "check")) {
        s->enforce = FTB_ENFORCE_CHECK;
    } else if (ftb_cgroup_usable(why, sizeof why)) {
        s->enforce = FTB_ENFORCE_CGROUP;
    } else {
        s->enforce = fit_mode ? FTB_ENFORCE_WATCH : FTB_ENFORCE_CHECK;
        snprintf(s->enforce_note, sizeof s->enforce_note, "no cgroup: %.180s", why);
    }
    ftb_plan_predict_cells(s);
    return 0;
}

void ftb_setup_cell(const ftb_setup *s, ftb_cell *c)
{
    const ftb_cli *o = &s->cli;
    ftb_cell_init(c);
    snprintf(c->model_name, sizeof c->model_name, "%s", s->model_name);
    c->checkpoint = o->checkpoint;
    c->cfg = s->cfg;
    c->base = o->base;
    c->optimizer = o->optimizer;
    c->loss_chunk = o->loss_chunk;
    c->seq = o->seq;
    c->batch = o->batch;
    c->steps = o->steps;
    c->warmup = o->warmup;
    c->seed = o->seed;
    c->lr = (float)o->lr;
    c->attention = o->attention;
    c->loss = o->loss;
    c->dataset = o->dataset;
    c->device = s->device;
    c->emulated = s->emulated;
    c->threads = s->threads;
    c->budget_bytes = s->budget;
    c->enforce = s->enforce;
    snprintf(c->enforce_note, sizeof c->enforce_note, "%s", s->enforce_note);
    c->timeout_sec = o->timeout;
    c->timeline = !o->no_timeline;
}

int ftb_setup_method(const ftb_setup *s, const char *name_or_path, ftb_cell *c, int strict_options, char **probe_json,
                     char *err, size_t errlen)
{
    if (ftb_plugin_resolve(name_or_path, s->methods_dir, c->method_path, sizeof c->method_path, c->method_label,
                           sizeof c->method_label, err, errlen) != 0)
        return -1;
    char *json = NULL;
    if (ftb_plugin_probe(c->method_path, &json, err, errlen) != 0) return -1;
    int rc = ftb_cli_check_options(&s->cli, c->method_label, json, strict_options, err, errlen);
    if (rc == 0)
        c->n_opts = ftb_cli_method_options(&s->cli, c->method_label, c->opt_keys, c->opt_values, FTB_MAX_METHOD_OPTS);
    if (probe_json && rc == 0)
        *probe_json = json;
    else
        free(json);
    return rc;
}

int ftb_setup_run_dir(const ftb_setup *s, const char *run_id, char *out, size_t n)
{
    /* Never cut: a cut path is another directory (a sibling of the one
     * asked for). */
    size_t need = strlen(s->cli.out_dir) + strlen(s->device.name) + strlen(run_id) + 2;
    size_t most = PATH_MAX - FTB_RUNDIR_NAME_ROOM;
    if (need > most || need >= n) {
        if (n) out[0] = 0;
        fprintf(stderr,
                "ftbench %s: --out: the run directory %.60s/... would be %zu characters long; at most %zu fit\n",
                s->cli.cmd ? s->cli.cmd : "run", s->cli.out_dir, need, most < n ? most : n - 1);
        return -1;
    }
    snprintf(out, n, "%s/%s/%s", s->cli.out_dir, s->device.name, run_id);
    return 0;
}

int ftb_setup_check_dataset(const ftb_setup *s, char *err, size_t errlen)
{
    ftb_dataset *d = ftb_dataset_open(s->cli.dataset, s->cfg.vocab_size, s->cli.seed, err, errlen);
    if (!d) return -1;
    ftb_dataset_close(d);
    return 0;
}

/* ---- run ---------------------------------------------------------------- */

static const unsigned RUN_OPTS = CLI_MODEL | CLI_METHOD | CLI_SHAPE | CLI_TRAIN | CLI_DEVICE | CLI_OUT;

static void run_help(FILE *f)
{
    fprintf(f, "usage: ftbench run --method NAME [options]\n"
               "Measures one cell (model, method, seq, batch, device) in a child process and\n"
               "appends its record to <out>/<device>/<run-id>/results.jsonl.\n"
               "Exit code: 0 outcome ok, 1 any other outcome, 2 bad input.\n\noptions:\n");
    ftb_cli_print_options(f, RUN_OPTS);
}

static void run_progress(void *ud, const char *what, int step, int nsteps)
{
    (void)ud;
    if (!strcmp(what, "step"))
        fprintf(stderr, "ftbench run: step %d/%d\n", step, nsteps);
    else if (!strcmp(what, "load") || !strcmp(what, "init"))
        fprintf(stderr, "ftbench run: %s\n", !strcmp(what, "load") ? "loading the model" : "initialising the method");
}

static double jpath(json_t *o, const char *a, const char *b, const char *c)
{
    json_t *x = json_object_get(o, a);
    if (b) x = json_object_get(x, b);
    if (c) x = json_object_get(x, c);
    return json_is_number(x) ? json_number_value(x) : NAN;
}

/* The record's largest operation classes (ops, docs/HARNESS.md): where
 * the step's time went, the way "core peak" says where its bytes went. */
#define RUN_TOP_OPS 5
static void print_top_ops(json_t *rec)
{
    json_t *ops = json_object_get(rec, "ops"), *classes = json_object_get(ops, "classes");
    double step = jpath(ops, "step_seconds", NULL, NULL);
    if (!json_object_size(classes) || !(step > 0)) return;
    const char *name[RUN_TOP_OPS];
    json_t *top[RUN_TOP_OPS];
    int n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(classes, k, v)
    {
        double sec = jpath(v, "seconds", NULL, NULL);
        if (!(sec > 0)) continue;
        int at = n < RUN_TOP_OPS ? n++ : RUN_TOP_OPS;
        if (at == RUN_TOP_OPS && !(sec > jpath(top[RUN_TOP_OPS - 1], "seconds", NULL, NULL))) continue;
        if (at == RUN_TOP_OPS) at = RUN_TOP_OPS - 1;
        while (at > 0 && jpath(top[at - 1], "seconds", NULL, NULL) < sec) {
            top[at] = top[at - 1];
            name[at] = name[at - 1];
            at--;
        }
        top[at] = v;
        name[at] = k;
    }
    printf("ops         %.4f s per step (mean of %d measured), largest classes:\n", step,
           (int)json_integer_value(json_object_get(ops, "measured_steps")));
    for (int i = 0; i < n; i++) {
        double sec = jpath(top[i], "seconds", NULL, NULL), rate = jpath(top[i], "gflops_per_second", NULL, NULL);
        double faults = jpath(top[i], "page_faults", NULL, NULL);
        char r[32] = "-", f[32] = "-";
        if (isfinite(rate)) snprintf(r, sizeof r, "%.1f", rate);
        if (isfinite(faults)) snprintf(f, sizeof f, "%.0f", faults);
        printf("  %-12s %9.4f s %5.1f%% %8s GFLOP/s %7s page faults\n", name[i], sec, 100.0 * sec / step, r, f);
    }
}

/* One line of per-step values: integers as such, other numbers to four
 * decimals, anything else as `missing`. */
static void print_per_step(const char *label, json_t *values, const char *missing, const char *unit)
{
    if (!json_array_size(values)) return;
    printf("%s", label);
    size_t i;
    json_t *v;
    json_array_foreach(values, i, v)
    {
        if (json_is_integer(v))
            printf(" %lld", (long long)json_integer_value(v));
        else if (json_is_number(v))
            printf(" %.4f", json_number_value(v));
        else
            printf(" %s", missing);
    }
    printf("%s\n", unit);
}

int ftb_cmd_run(int argc, char **argv)
{
    char err[FTB_ERR_LEN + 256];
    ftb_setup s;
    memset(&s, 0, sizeof s);
    int pr = ftb_cli_parse("run", RUN_OPTS, argc, argv, &s.cli, err, sizeof err);
    if (pr == 1) {
        run_help(stdout);
        return FTB_EXIT_OK;
    }
    if (pr < 0) return ftb_usage_error("run", err);
    int rc = FTB_EXIT_USAGE;
    if (!s.cli.method) {
        ftb_usage_error("run", "--method is required (see ftbench list)");
        goto out;
    }
    if (!s.cli.seq_given) s.cli.seq = 512;
    if (ftb_setup_common(&s, 0, err, sizeof err) != 0 || ftb_setup_check_dataset(&s, err, sizeof err) != 0) {
        ftb_usage_error("run", err);
        goto out;
    }
    ftb_cell c;
    ftb_setup_cell(&s, &c);
    if (ftb_setup_method(&s, s.cli.method, &c, 1, NULL, err, sizeof err) != 0) {
        ftb_usage_error("run", err);
        goto out;
    }
    /* The model refuses such a batch: bad input, not a failed cell. */
    if (c.seq > s.cfg.max_seq) {
        snprintf(err, sizeof err, "--seq %d is longer than %s's max_seq (max_position_embeddings) %d", c.seq,
                 s.model_name, s.cfg.max_seq);
        ftb_usage_error("run", err);
        goto out;
    }
    ftb_cell_make_key(&c);
    char run_id[128];
    if (s.cli.run_id) {
        snprintf(run_id, sizeof run_id, "%s", s.cli.run_id);
    } else {
        char ts[32];
        ftb_utc_timestamp(ts, sizeof ts);
        /* 2025-01-31T12:34:56Z → run-20250131T123456Z-<pid> */
        char compact[32];
        size_t k = 0;
        for (const char *p = ts; *p && k < sizeof compact - 1; p++)
            if (*p != '-' && *p != ':') compact[k++] = *p;
        compact[k] = 0;
        snprintf(run_id, sizeof run_id, "run-%s-%d", compact, (int)getpid());
    }
    snprintf(c.run_id, sizeof c.run_id, "%s", run_id);
    if (ftb_setup_run_dir(&s, run_id, c.run_dir, sizeof c.run_dir) != 0) goto out;

    char results[PATH_MAX + 32];
    snprintf(results, sizeof results, "%s/%s", c.run_dir, FTB_RUNDIR_RESULTS);
    ftb_catch_interrupts();
    ftb_recorded done;
    int brc = ftb_rundir_begin("run", c.run_dir, s.cli.wait_lock, s.cli.independent, s.cli.quiet, &done);
    if (brc) {
        rc = brc;
        goto out;
    }
    char why[FTB_ERR_LEN];
    ftb_resume res = ftb_resume_check(&c, &done, s.cli.force, why, sizeof why);
    if (res == FTB_RESUME_KEEP) {
        json_t *prev = ftb_recorded_find(&done, c.key);
        ftb_resume_warn_git("run", &prev, 1);
        printf("%s: already recorded in %s/%s/%s.json (--force to measure again)\n", c.key, c.run_dir, FTB_RUNDIR_CELLS,
               c.key);
        ftb_recorded_free(&done);
        rc = FTB_EXIT_OK;
        goto out;
    }
    ftb_recorded_free(&done);
    if (res == FTB_RESUME_MISMATCH) {
        fprintf(stderr,
                "ftbench run: %s already has %s measured with other settings (%s); give --force to measure it "
                "again, or another --run-id\n",
                c.run_dir, c.key, why);
        rc = FTB_EXIT_USAGE;
        goto out;
    }
    if (!s.cli.quiet) {
        c.progress = run_progress;
        fprintf(stderr, "ftbench run: %s on %s%s (budget %s, %s, %d threads)\n", c.key, s.device.name,
                s.emulated ? " (emulated)" : "", ftb_format_bytes(s.budget, (char[32]){ 0 }, 32),
                ftb_enforce_name(s.enforce), s.threads);
    }
    if (ftb_cell_prepare_base(&c, s.cli.quiet, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench run: %s\n", err);
        rc = FTB_EXIT_FAIL;
        goto out;
    }
    ftb_cell_result r;
    int crc = ftb_cell_run(&c, &r, err, sizeof err);
    json_decref(c.base_info);
    if (crc == FTB_CELL_INTERRUPTED) {
        fprintf(stderr, "ftbench run: interrupted; nothing was recorded for %s\n", c.key);
        rc = 128 + ftb_interrupted();
        goto out;
    }
    if (crc != 0) {
        fprintf(stderr, "ftbench run: %s\n", err);
        rc = FTB_EXIT_FAIL;
        goto out;
    }
    json_t *rec = r.record;
    printf("cell        %s\n", c.key);
    printf("outcome     %s%s%s\n", r.outcome, r.detail[0] ? ": " : "", r.detail);
    if (r.peak_rss > 0)
        printf("peak RSS    %.1f MiB (budget %s on %s)\n", (double)r.peak_rss / 1048576.0,
               ftb_format_bytes(s.budget, (char[32]){ 0 }, 32), s.device.name);
    double cp = jpath(rec, "memory", "core", "peak_total_bytes");
    if (isfinite(cp)) printf("core peak   %.1f MiB\n", cp / 1048576.0);
    double ap = jpath(rec, "memory", "analytic", "peak_total_bytes");
    double un = jpath(rec, "memory", "analytic", "unexplained_rss_fraction");
    if (ap > 0)
        printf("analytic    %.1f MiB predicted core peak; peak RSS unexplained %.1f%%\n", ap / 1048576.0, 100.0 * un);
    const char *no_hwc = json_string_value(json_object_get(json_object_get(rec, "hw_counters"), "reason"));
    if (no_hwc) printf("counters    unavailable: %s\n", no_hwc); /* the reason is only there when unavailable */
    if (r.step_median > 0) {
        printf("step        %.3f s median, %.1f tokens/s\n", r.step_median,
               jpath(rec, "timing", "tokens_per_second", NULL));
        print_top_ops(rec);
    }
    json_t *base = json_object_get(rec, "base");
    const char *eff0 = json_string_value(json_object_get(base, "residency_effective"));
    if (json_is_true(json_object_get(base, "given")) || (eff0 && !strcmp(eff0, "lazy"))) {
        const char *eff = json_string_value(json_object_get(base, "residency_effective"));
        double share = jpath(rec, "timing", "dequant_share", NULL);
        printf("base        %s linears, %s embedding, residency %s; dequantization %.1f%% of step time\n",
               json_string_value(json_object_get(base, "dtype")),
               json_string_value(json_object_get(base, "embed_dtype")),
               eff ? eff : json_string_value(json_object_get(base, "residency")), isfinite(share) ? 100 * share : 0.0);
    }
    print_per_step("loss       ", json_object_get(rec, "loss_per_step"), "nan", "");
    /* The first step touches its buffers fresh; later ones reuse its pages
     * (docs/CORE.md, "What is kept across steps"). */
    print_per_step("faults     ", json_object_get(json_object_get(rec, "memory"), "page_faults_per_step"), "?",
                   " page faults per step");
    double tp = jpath(rec, "trainable_params", NULL, NULL);
    if (isfinite(tp)) printf("trainable   %.0f parameters\n", tp);
    double proj = jpath(rec, "projection", "projected_step_seconds_roofline", NULL);
    if (s.emulated && isfinite(proj)) printf("projected   %.3f s/step on %s (roofline)\n", proj, s.device.name);
    if (s.cli.independent)
        printf("record      %s/%s/%s.json\n", c.run_dir, FTB_RUNDIR_CELLS, c.key);
    else
        printf("record      %s/%s/%s.json (and a line of %s)\n", c.run_dir, FTB_RUNDIR_CELLS, c.key, results);
    rc = strcmp(r.outcome, "ok") == 0 ? FTB_EXIT_OK : FTB_EXIT_FAIL;
    ftb_cell_result_free(&r);
out:
    ftb_cli_free(&s.cli);
    return rc;
}

/* ---- list --------------------------------------------------------------- */

int ftb_cmd_list(int argc, char **argv)
{
    char err[FTB_ERR_LEN];
    ftb_cli o;
    int pr = ftb_cli_parse("list", CLI_DEVICE, argc, argv, &o, err, sizeof err);
    if (pr == 1) {
        printf("usage: ftbench list [--methods-dir DIR] [--profiles-dir DIR]\n"
               "Lists the method plugins found, the device profiles and the models of the zoo.\n");
        return FTB_EXIT_OK;
    }
    if (pr < 0) return ftb_usage_error("list", err);
    int rc = FTB_EXIT_OK;
    const char *mdir = ftb_methods_search_path(o.methods_dir);
    if (o.methods_dir && !ftb_is_dir(o.methods_dir)) {
        snprintf(err, sizeof err, "--methods-dir %s: not a directory", o.methods_dir);
        ftb_cli_free(&o);
        return ftb_usage_error("list", err);
    }
    if (o.profiles_dir && !ftb_is_dir(o.profiles_dir)) {
        snprintf(err, sizeof err, "--profiles-dir %s: not a directory", o.profiles_dir);
        ftb_cli_free(&o);
        return ftb_usage_error("list", err);
    }
    printf("methods (%s):\n", mdir ? mdir : "no methods directory found");
    char **labels = NULL;
    int n = 0;
    if (mdir && ftb_plugin_list(mdir, &labels, &n, err, sizeof err) != 0) printf("  (%s)\n", err);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX], label[128];
        char *json = NULL;
        if (ftb_plugin_resolve(labels[i], mdir, path, sizeof path, label, sizeof label, err, sizeof err) != 0 ||
            ftb_plugin_probe(path, &json, err, sizeof err) != 0) {
            printf("  %-14s UNUSABLE: %s\n", labels[i], err);
            continue;
        }
        json_t *j = json_loads(json, 0, NULL);
        printf("  %-14s %s\n", labels[i], json_string_value(json_object_get(j, "summary")));
        size_t k;
        json_t *d;
        json_t *opts = json_object_get(j, "options");
        json_array_foreach(opts, k, d)
        {
            const char *name = json_string_value(json_object_get(d, "name"));
            const char *help = json_string_value(json_object_get(d, "help"));
            /* An alias ("inner.rank", help "same as rank") is named on its
             * option's line, not listed again. */
            if (help && !strncmp(help, "same as ", 8)) continue;
            const char *def = json_string_value(json_object_get(d, "default"));
            char left[96], also[200] = "";
            snprintf(left, sizeof left, "%s=%s", name ? name : "?", def ? def : "");
            size_t q;
            json_t *a;
            json_array_foreach(opts, q, a)
            {
                const char *ah = json_string_value(json_object_get(a, "help"));
                const char *an = json_string_value(json_object_get(a, "name"));
                if (name && ah && an && !strncmp(ah, "same as ", 8) && !strcmp(ah + 8, name)) {
                    size_t used = strlen(also);
                    snprintf(also + used, sizeof also - used, "%s%s", used ? ", " : " (also ", an);
                }
            }
            if (also[0]) snprintf(also + strlen(also), sizeof also - strlen(also), ")");
            printf("  %14s   --opt %-20s %s%s\n", "", left, help ? help : "", also);
        }
        json_decref(j);
        free(json);
    }
    if (mdir && n == 0) printf("  (none: build some with make)\n");
    ftb_plugin_free_list(labels, n);

    const char *pdir = o.profiles_dir ? o.profiles_dir : ftb_profiles_default_dir();
    printf("\ndevices (%s):\n", pdir ? pdir : "no profiles directory found");
    ftb_profile *profs = NULL;
    int np = 0;
    if (pdir && ftb_profiles_load_dir(pdir, &profs, &np, err, sizeof err) != 0) {
        printf("  (%s)\n", err);
        rc = FTB_EXIT_USAGE;
        fprintf(stderr, "ftbench list: %s\n", err);
    }
    for (int i = 0; i < np; i++) {
        char al[200] = "";
        for (int a = 0; a < profs[i].n_aliases; a++) {
            size_t u = strlen(al);
            snprintf(al + u, sizeof al - u, "%s%s", a ? "," : " (", profs[i].aliases[a]);
        }
        if (profs[i].n_aliases) strncat(al, ")", sizeof al - strlen(al) - 1);
        char name[sizeof profs[i].name + sizeof al];
        snprintf(name, sizeof name, "%s%s", profs[i].name, al);
        printf("  %-36s %2d cores %6.0f MiB RAM, budget %6.0f MiB, model %s%s\n", name, profs[i].cores, profs[i].ram_mb,
               (double)ftb_profile_budget_bytes(&profs[i]) / 1048576.0, profs[i].default_model,
               profs[i].detected ? "  [this machine]" : "");
    }
    free(profs);

    printf("\nmodels (zoo):\n");
    for (int i = 0; i < ftb_zoo_count(); i++) {
        const ftb_config *c = ftb_zoo_at(i);
        printf("  %-18s %8.1fM params, %2d layers, dim %4d, vocab %6d, max_seq %d\n", c->name,
               (double)ftb_config_param_count(c) / 1e6, c->n_layers, c->dim, c->vocab_size, c->max_seq);
    }
    ftb_cli_free(&o);
    return rc;
}
