/*
 * fit.c — `ftbench fit`: the longest sequence length whose cell stays
 * within a device's memory budget, by doubling from --seq-min until a
 * probe fails, then bisection down to --granularity.  Assumes memory grows
 * with the length (true of every method's activations).  Each probe is a
 * recorded cell; probes already recorded are reused, so fit resumes too.
 */
#include "commands.h"
#include "rundir.h"
#include "safe_file.h"
#include "sweep.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const unsigned FIT_OPTS = CLI_MODEL | CLI_METHOD | CLI_TRAIN | CLI_DEVICE | CLI_OUT | CLI_FIT | CLI_SHAPE;

static void fit_help(FILE *f)
{
    fprintf(f, "usage: ftbench fit --device NAME --method NAME [options]\n"
               "Finds the longest sequence length (batch --batch, default 1) whose cell stays within\n"
               "the device's memory budget: powers of two from --seq-min, then bisection.  Each probe\n"
               "runs 1 step without warm-up unless --steps/--warmup say otherwise, and is recorded in\n"
               "<out>/<device>/<run-id>/results.jsonl; the answer goes to fit.json there.\n"
               "Without a cgroup the child is killed as soon as its RSS passes the budget.\n"
               "Exit code: 0 found (or nothing fits), 1 a probe failed otherwise, 2 bad input.\n\noptions:\n");
    ftb_cli_print_options(f, FIT_OPTS);
}

typedef struct {
    ftb_setup *s;
    ftb_cell base;
    ftb_recorded done;
    json_t *probes;
    int quiet;
} fit_ctx;

/* 1 fits, 0 does not fit, -1 failed otherwise (err filled), -2 recorded
 * with other settings (err), -3 interrupted. */
static int probe(fit_ctx *f, int seq, char *err, size_t errlen)
{
    ftb_cell c = f->base;
    c.seq = seq;
    ftb_cell_make_key(&c);
    char why[FTB_ERR_LEN];
    ftb_resume res0 = ftb_resume_check(&c, &f->done, f->s->cli.force, why, sizeof why);
    if (res0 == FTB_RESUME_MISMATCH) {
        ftb_errf(err, errlen,
                 "%s already has %s measured with other settings (%s); give --force to measure it again, or another "
                 "--run-id",
                 c.run_dir, c.key, why);
        return -2;
    }
    json_t *rec = res0 == FTB_RESUME_KEEP ? ftb_recorded_find(&f->done, c.key) : NULL;
    json_t *owned = NULL;
    int reused = rec != NULL;
    if (reused) ftb_resume_warn_git("fit", &rec, 1);
    if (!rec) {
        if (!f->quiet) fprintf(stderr, "ftbench fit: probing seq %d ...\n", seq);
        ftb_cell_result r;
        int crc = ftb_cell_run(&c, &r, err, errlen);
        if (crc == FTB_CELL_INTERRUPTED) return -3;
        if (crc != 0) return -1;
        owned = rec = json_incref(r.record);
        ftb_cell_result_free(&r);
    }
    const char *o = json_string_value(json_object_get(rec, "outcome"));
    json_t *pk = json_object_get(json_object_get(rec, "memory"), "peak_rss_bytes");
    double peak = json_is_integer(pk) ? (double)json_integer_value(pk) / 1048576.0 : NAN;
    int res = !o ? -1 : !strcmp(o, "ok") ? 1 : (!strcmp(o, "over_budget") || !strcmp(o, "oom")) ? 0 : -1;
    char peak_s[48] = "";
    int lower = json_is_true(json_object_get(json_object_get(rec, "memory"), "peak_is_lower_bound"));
    if (isfinite(peak)) snprintf(peak_s, sizeof peak_s, lower ? " (stopped at %.0f MiB)" : " (peak %.0f MiB)", peak);
    printf("  seq %6d: %s%s%s\n", seq,
           res == 1   ? "fits"
           : res == 0 ? "does not fit"
           : o        ? o
                      : "?",
           peak_s, reused ? ", recorded earlier" : "");
    fflush(stdout);
    json_t *p = json_object();
    json_object_set_new(p, "seq", json_integer(seq));
    json_object_set_new(p, "cell", json_string(c.key));
    json_object_set_new(p, "outcome", json_string(o ? o : "?"));
    json_object_set_new(p, "peak_rss_bytes", json_is_integer(pk) ? json_incref(pk) : json_null());
    json_array_append_new(f->probes, p);
    if (res < 0) {
        const char *d = json_string_value(json_object_get(rec, "outcome_detail"));
        ftb_errf(err, errlen, "probe at seq %d: %s%s%s", seq, o ? o : "no outcome", d && *d ? ": " : "", d ? d : "");
    }
    json_decref(owned);
    return res;
}

/* How many probes the search from seq_min (doubling, then bisection) makes
 * when every length up to longest fits: what starting from the plan saves. */
static int fit_search_probes(int seq_min, int seq_max, int gran, int longest)
{
    int n = 0, lo = 0, hi = 0, x = seq_min;
    while (x <= seq_max) {
        n++;
        if (x > longest) {
            hi = x;
            break;
        }
        lo = x;
        if (x == seq_max) break;
        x = x * 2 > seq_max ? seq_max : x * 2;
    }
    while (lo && hi && hi - lo > gran) {
        int mid = (lo + (hi - lo) / 2) / gran * gran;
        if (mid <= lo) mid = lo + gran;
        if (mid >= hi) break;
        n++;
        if (mid <= longest)
            lo = mid;
        else
            hi = mid;
    }
    return n;
}

int ftb_cmd_fit(int argc, char **argv)
{
    char err[FTB_ERR_LEN + 256];
    ftb_setup s;
    memset(&s, 0, sizeof s);
    int pr = ftb_cli_parse("fit", FIT_OPTS, argc, argv, &s.cli, err, sizeof err);
    if (pr == 1) {
        fit_help(stdout);
        return FTB_EXIT_OK;
    }
    if (pr < 0) return ftb_usage_error("fit", err);
    int rc = FTB_EXIT_USAGE, res = 0;
    fit_ctx f;
    memset(&f, 0, sizeof f);
    f.s = &s;
    f.quiet = s.cli.quiet;
    if (!s.cli.method) {
        ftb_usage_error("fit", "--method is required (see ftbench list)");
        goto out;
    }
    if (s.cli.seq_given) {
        ftb_usage_error("fit", "--seq makes no sense here: fit searches the length (use --seq-min/--seq-max)");
        goto out;
    }
    /* Memory needs one step; warm-up only costs time. */
    if (!s.cli.steps_given) s.cli.steps = 1;
    if (!s.cli.warmup_given) s.cli.warmup = 0;
    if (ftb_setup_common(&s, 1, err, sizeof err) != 0 || ftb_setup_check_dataset(&s, err, sizeof err) != 0) {
        ftb_usage_error("fit", err);
        goto out;
    }
    ftb_setup_cell(&s, &f.base);
    if (ftb_setup_method(&s, s.cli.method, &f.base, 1, NULL, err, sizeof err) != 0) {
        ftb_usage_error("fit", err);
        goto out;
    }
    int seq_max = s.cli.seq_max ? s.cli.seq_max : s.cfg.max_seq;
    if (seq_max > s.cfg.max_seq) {
        snprintf(err, sizeof err, "--seq-max %d is longer than %s's max_seq (max_position_embeddings) %d", seq_max,
                 s.model_name, s.cfg.max_seq);
        ftb_usage_error("fit", err);
        goto out;
    }
    int seq_min = s.cli.seq_min;
    if (seq_min > seq_max) {
        snprintf(err, sizeof err, "--seq-min %d is above the longest length %d (the model's max_seq or --seq-max)",
                 seq_min, seq_max);
        ftb_usage_error("fit", err);
        goto out;
    }
    int gran = s.cli.granularity;

    /* Run id: fit-<method>-<hash of what changes the answer>. */
    char canon[2048], run_id[128];
    f.base.seq = 0;
    ftb_cell_make_key(&f.base);
    snprintf(canon, sizeof canon,
             "%s|ckpt=%s|steps=%d|warmup=%d|dataset=%s|seed=%llu|budget=%lld|threads=%d|enforce=%d|attn=%d|loss=%d",
             f.base.key, s.cli.checkpoint ? s.cli.checkpoint : "", s.cli.steps, s.cli.warmup, s.cli.dataset,
             (unsigned long long)s.cli.seed, (long long)s.budget, s.threads, (int)s.enforce, s.cli.attention,
             s.cli.loss);
    if (s.cli.run_id) {
        snprintf(run_id, sizeof run_id, "%s", s.cli.run_id);
    } else {
        char pre[80];
        snprintf(pre, sizeof pre, "fit-%.60s", f.base.method_label);
        ftb_sweep_run_id(pre, canon, run_id, sizeof run_id);
    }
    snprintf(f.base.run_id, sizeof f.base.run_id, "%s", run_id);
    if (ftb_setup_run_dir(&s, run_id, f.base.run_dir, sizeof f.base.run_dir) != 0) goto out;
    char results[PATH_MAX + 32];
    snprintf(results, sizeof results, "%s/%s", f.base.run_dir, FTB_RUNDIR_RESULTS);
    ftb_catch_interrupts();
    int brc = ftb_rundir_begin("fit", f.base.run_dir, s.cli.wait_lock, s.cli.independent, s.cli.quiet, &f.done);
    if (brc) {
        rc = brc;
        goto out;
    }
    json_t *extra = json_object();
    json_object_set_new(extra, "fit", json_true());
    f.base.extra = extra;
    f.probes = json_array();

    printf("fit: %s with %s on %s%s, batch %d, budget %s (%s)\n", s.model_name, f.base.method_label, s.device.name,
           s.emulated ? " (emulated)" : "", s.cli.batch, ftb_format_bytes(s.budget, (char[32]){ 0 }, 32),
           ftb_enforce_name(s.enforce));
    if (ftb_cell_prepare_base(&f.base, s.cli.quiet, err, sizeof err) != 0) goto failed;
    int lo = 0, hi = 0; /* longest that fits, shortest that does not */
    int x = seq_min;
    res = 0;
    /* Start where the plan (docs/PLAN.md) predicts the answer, then confirm
     * by measurement: one probe at the prediction and one just past it when
     * the plan is right. */
    int hint = 0, planned = 0;
    char why[FTB_ERR_LEN + 300];
    if (!s.cli.no_plan) planned = ftb_plan_fit_hint(&s, &f.base, &hint, why, sizeof why) == 0;
    if (!s.cli.no_plan && !planned) printf("plan: none (%s): searching from --seq-min\n", why);
    if (planned && hint >= seq_min) {
        int h = hint > seq_max ? seq_max : hint / gran * gran;
        if (h < seq_min) h = seq_min;
        printf("plan: predicted longest fit %d tokens (%s); probing from %d\n", hint, why, h);
        res = probe(&f, h, err, sizeof err);
        if (res < 0) goto failed;
        if (res) {
            lo = h;
            x = h == seq_max ? seq_max + 1 : (h + gran > seq_max ? seq_max : h + gran);
        } else {
            hi = h;
            x = seq_max + 1; /* no doubling: find a length that fits below */
            for (int step = gran, y = h - gran; !lo; step *= 2, y -= step) {
                if (y < seq_min) y = seq_min;
                if (y >= hi) break;
                res = probe(&f, y, err, sizeof err);
                if (res < 0) goto failed;
                if (res)
                    lo = y;
                else
                    hi = y;
            }
        }
    } else if (planned) {
        printf("plan: even %d tokens is predicted over budget; confirming\n", seq_min);
    }
    while (x <= seq_max) {
        res = probe(&f, x, err, sizeof err);
        if (res < 0) goto failed;
        if (!res) {
            hi = x;
            break;
        }
        lo = x;
        if (x == seq_max) break;
        x = x * 2 > seq_max ? seq_max : x * 2;
    }
    /* Refine between the last fit and the first failure. */
    while (lo && hi && hi - lo > gran) {
        int mid = lo + (hi - lo) / 2;
        mid = (mid / gran) * gran;
        if (mid <= lo) mid = lo + gran;
        if (mid >= hi) break;
        res = probe(&f, mid, err, sizeof err);
        if (res < 0) goto failed;
        if (res)
            lo = mid;
        else
            hi = mid;
    }
    int probed = (int)json_array_size(f.probes);
    if (planned) {
        int unplanned = fit_search_probes(seq_min, seq_max, gran, lo);
        printf("plan: %d probes; a search from --seq-min would have made %d (saved %d)\n", probed, unplanned,
               unplanned - probed);
    }
    json_t *out = json_object();
    json_object_set_new(out, "device", json_string(s.device.name));
    json_object_set_new(out, "planned_longest_seq", planned ? json_integer(hint) : json_null());
    json_object_set_new(out, "model", json_string(s.model_name));
    json_object_set_new(out, "method", json_string(f.base.method_label));
    json_object_set_new(out, "batch", json_integer(s.cli.batch));
    json_object_set_new(out, "budget_bytes", json_integer(s.budget));
    json_object_set_new(out, "enforcement", json_string(ftb_enforce_name(s.enforce)));
    json_object_set_new(out, "longest_fitting_seq", lo ? json_integer(lo) : json_null());
    json_object_set_new(out, "shortest_failing_seq", hi ? json_integer(hi) : json_null());
    json_object_set_new(out, "granularity", json_integer(gran));
    json_object_set_new(out, "seq_max_searched", json_integer(seq_max));
    json_object_set_new(out, "probes", json_incref(f.probes));
    char *fit_text = json_dumps(out, JSON_INDENT(2));
    json_decref(out);
    int run_fd = fit_text ? ftb_rundir_open(f.base.run_dir, 1, err, sizeof err) : -1;
    char fitpath[PATH_MAX + 16];
    snprintf(fitpath, sizeof fitpath, "%s/fit.json", f.base.run_dir);
    if (run_fd < 0 || ftb_sf_write_atomic(run_fd, "fit.json", fit_text, strlen(fit_text), fitpath, err, sizeof err))
        fprintf(stderr, "ftbench fit: %s\n", err);
    if (run_fd >= 0) close(run_fd);
    free(fit_text);
    if (!lo)
        printf("nothing fits: even seq %d is over the %s budget of %s\n", seq_min,
               ftb_format_bytes(s.budget, (char[32]){ 0 }, 32), s.device.name);
    else if (!hi)
        printf("longest sequence that fits %s: %d tokens (every length up to %d fits)\n", s.device.name, lo, seq_max);
    else
        printf("longest sequence that fits %s: %d tokens (%d does not; resolution %d)\n", s.device.name, lo, hi, gran);
    printf("records: %s\n", results);
    rc = FTB_EXIT_OK;
    goto done;
failed:
    if (res == -3) {
        fprintf(stderr, "ftbench fit: interrupted; the probes recorded so far are kept: run the same command again to "
                        "resume\n");
        rc = 128 + ftb_interrupted();
    } else {
        fprintf(stderr, "ftbench fit: %s\n", err);
        rc = res == -2 ? FTB_EXIT_USAGE : FTB_EXIT_FAIL;
    }
done:
    json_decref(f.base.base_info);
    json_decref(extra);
    json_decref(f.probes);
out:
    ftb_recorded_free(&f.done);
    ftb_cli_free(&s.cli);
    return rc;
}
