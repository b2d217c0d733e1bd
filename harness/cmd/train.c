/*
 * train.c — `ftbench train` and the evaluation its cells run.  See train.h.
 */
#include "train.h"
#include "rundir.h"
#include "commands.h"
#include "eval.h"
#include "tasks.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- in the cell child ---------------------------------------------------- */

/* The cell's between-steps hook (cell.h): evaluates when one is due, at
 * step 0, every eval_every steps and after the last, writing "eval" (the
 * latest) and "eval_history" (every one, in step order) into out. */
static int train_between_steps(void *ud, ftb_model *m, const ftb_run_opts *run, int step, int total,
                               double train_seconds, json_t *out, char *err, size_t errlen)
{
    ftb_train_eval *t = ud;
    if (!(step == 0 || step == total || (t->eval_every > 0 && step % t->eval_every == 0))) return 0;
    /* Opened in the child, at its first evaluation: its memory is the
     * cell's, as the method's is.  The child exits without closing it. */
    if (!t->task && !(t->task = ftb_task_open(t->task_spec, NULL, t->seed, err, errlen))) return -1;
    ftb_eval_result r;
    if (ftb_eval_task(m, run, t->task, t->eval_examples, t->decode, &r, NULL, 0, err, errlen)) return -1;
    json_t *e = ftb_eval_json(&r, t->task, t->decode);
    json_object_set_new(e, "step", json_integer(step));
    json_object_set_new(e, "train_seconds", json_real(train_seconds));
    /* "eval" first: the record's order of old. */
    json_object_set(out, "eval", e);
    json_t *hist = json_object_get(out, "eval_history");
    if (!hist) {
        hist = json_array();
        json_object_set_new(out, "eval_history", hist);
    }
    json_array_append_new(hist, e);
    return 0;
}

void ftb_train_eval_attach(ftb_train_eval *t, ftb_cell *c)
{
    t->seed = c->seed;
    t->task = NULL;
    c->between_steps.fn = train_between_steps;
    c->between_steps.ud = t;
    c->between_steps.stage = "eval";
}

/* ---- ftbench train ---------------------------------------------------------- */

static const unsigned TRAIN_OPTS = CLI_MODEL | CLI_METHOD | CLI_SHAPE | CLI_TRAIN | CLI_DEVICE | CLI_OUT;

static void train_help(FILE *f)
{
    fprintf(f, "usage: ftbench train --method NAME --task SPEC (--checkpoint DIR | --model NAME) [options]\n"
               "Fine-tunes with a method on a task's training split (loss on the answer tokens)\n"
               "in a measured cell, and evaluates held-out loss and exact-match accuracy of\n"
               "greedy answers with the method's hooks attached at step 0, every --eval-every\n"
               "steps and at the end.  The record (memory, loss curve, evaluations) is appended\n"
               "to <out>/<device>/<run-id>/results.jsonl (docs/TASKS.md).\n\n"
               "task options:\n"
               "  --task SPEC                  reasoning[:steps=2,digits=1] | understanding[:labels=4,words=24]\n"
               "                               | passkey[:len=512,depth=0.5,digits=5] | FILE.jsonl\n"
               "                               [@TOKENIZER.json: a byte-level BPE instead of bytes]\n"
               "  --eval-every K               evaluate every K steps (default 0: at step 0 and at the end)\n"
               "  --eval-examples N            held-out examples per evaluation (default 100)\n"
               "  --decode greedy|teacher-forced  (default greedy)\n"
               "defaults that differ from run: --steps 100, --warmup 0, --lr 1e-3, --seq: the\n"
               "task's longest example, --run-id train-<time>-<pid>\n\noptions:\n");
    ftb_cli_print_options(f, TRAIN_OPTS);
}

static void train_progress(void *ud, const char *what, int step, int nsteps)
{
    (void)ud;
    if (!strcmp(what, "step") && (step % 10 == 0 || step == nsteps))
        fprintf(stderr, "ftbench train: step %d/%d\n", step, nsteps);
    else if (!strcmp(what, "load") || !strcmp(what, "init"))
        fprintf(stderr, "ftbench train: %s\n", !strcmp(what, "load") ? "loading the model" : "initialising the method");
}

int ftb_cmd_train(int argc, char **argv)
{
    const char *task_spec = NULL, *decode_s = "greedy";
    long eval_every = 0, eval_examples = 100;
    char err[FTB_ERR_LEN + 256], e[FTB_ERR_LEN];
    /* Take the task options out; the rest are run's. */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0;
    if (!rest) return ftb_usage_error("train", "out of memory");
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int takes = !strcmp(a, "--task") || !strcmp(a, "--eval-every") || !strcmp(a, "--eval-examples") ||
                    !strcmp(a, "--decode");
        if (!strcmp(a, "--dataset")) {
            free(rest);
            return ftb_usage_error("train", "--dataset: the training data is the task's (--task)");
        }
        if (!takes) {
            rest[nrest++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) {
            free(rest);
            snprintf(err, sizeof err, "%s needs a value", a);
            return ftb_usage_error("train", err);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--task")) {
            task_spec = v;
        } else if (!strcmp(a, "--decode")) {
            decode_s = v;
            if (ftb_decode_parse(v) < 0) {
                free(rest);
                snprintf(err, sizeof err, "--decode: '%s' is not greedy or teacher-forced", v);
                return ftb_usage_error("train", err);
            }
        } else {
            long *dst = !strcmp(a, "--eval-every") ? &eval_every : &eval_examples;
            long lo = dst == &eval_every ? 0 : 1;
            if (ftb_parse_long(v, lo, 1L << 30, dst) != 0) {
                free(rest);
                snprintf(err, sizeof err, "%s: '%s' is not an integer >= %ld", a, v, lo);
                return ftb_usage_error("train", err);
            }
        }
    }
    ftb_setup s;
    memset(&s, 0, sizeof s);
    int pr = ftb_cli_parse("train", TRAIN_OPTS, nrest, rest, &s.cli, err, sizeof err);
    free(rest);
    if (pr == 1) {
        train_help(stdout);
        return FTB_EXIT_OK;
    }
    if (pr < 0) return ftb_usage_error("train", err);
    int rc = FTB_EXIT_USAGE;
    ftb_task *task = NULL;
    json_t *extra = NULL;
    if (!s.cli.method) {
        ftb_usage_error("train", "--method is required (see ftbench list)");
        goto out;
    }
    if (!task_spec) {
        ftb_usage_error("train", "--task is required (reasoning, understanding, passkey, or FILE.jsonl)");
        goto out;
    }
    if (!s.cli.model && !s.cli.checkpoint) {
        ftb_usage_error("train", "give --checkpoint DIR (e.g. make starting-model) or --model NAME");
        goto out;
    }
    task = ftb_task_open(task_spec, NULL, s.cli.seed, e, sizeof e);
    if (!task) {
        snprintf(err, sizeof err, "--task: %s", e);
        ftb_usage_error("train", err);
        goto out;
    }
    static char dataset[600];
    snprintf(dataset, sizeof dataset, "task:%s", task_spec);
    s.cli.dataset = dataset;
    if (!s.cli.steps_given) s.cli.steps = 100;
    if (!s.cli.warmup_given) s.cli.warmup = 0;
    if (!s.cli.lr_given) s.cli.lr = 1e-3;
    if (!s.cli.seq_given) s.cli.seq = (ftb_task_max_tokens(task) + 7) / 8 * 8;
    if (ftb_setup_common(&s, 0, err, sizeof err) != 0 || ftb_setup_check_dataset(&s, err, sizeof err) != 0) {
        ftb_usage_error("train", err);
        goto out;
    }
    if (s.cli.seq > s.cfg.max_seq) {
        snprintf(err, sizeof err, "--seq %d is longer than the model's max_seq %d", s.cli.seq, s.cfg.max_seq);
        ftb_usage_error("train", err);
        goto out;
    }
    ftb_cell c;
    ftb_setup_cell(&s, &c);
    if (ftb_setup_method(&s, s.cli.method, &c, 1, NULL, err, sizeof err) != 0) {
        ftb_usage_error("train", err);
        goto out;
    }
    /* The child's evaluations read these typed settings; the record
     * describes them in its "train" object (a resume setting). */
    ftb_train_eval te = { .task_spec = task_spec,
                          .eval_every = (int)eval_every,
                          .eval_examples = (int)eval_examples,
                          .decode = (ftb_decode_mode)ftb_decode_parse(decode_s) };
    ftb_train_eval_attach(&te, &c);
    extra = json_object();
    json_t *tr = json_object();
    json_object_set_new(tr, "task", json_string(task_spec));
    json_object_set_new(tr, "task_kind", json_string(ftb_task_kind(task)));
    json_object_set_new(tr, "eval_every", json_integer(eval_every));
    json_object_set_new(tr, "eval_examples", json_integer(eval_examples));
    json_object_set_new(tr, "decode", json_string(decode_s));
    json_object_set_new(extra, "train", tr);
    c.extra = extra;
    ftb_cell_make_key(&c);
    size_t kl = strlen(c.key);
    snprintf(c.key + kl, sizeof c.key - kl, ".train-%s-n%d", ftb_task_kind(task), c.warmup + c.steps);
    char run_id[128];
    if (s.cli.run_id) {
        snprintf(run_id, sizeof run_id, "%s", s.cli.run_id);
    } else {
        char ts[32], compact[32];
        ftb_utc_timestamp(ts, sizeof ts);
        size_t k = 0;
        for (const char *p = ts; *p && k < sizeof compact - 1; p++)
            if (*p != '-' && *p != ':') compact[k++] = *p;
        compact[k] = 0;
        snprintf(run_id, sizeof run_id, "train-%s-%d", compact, (int)getpid());
    }
    snprintf(c.run_id, sizeof c.run_id, "%s", run_id);
    if (ftb_setup_run_dir(&s, run_id, c.run_dir, sizeof c.run_dir) != 0) goto out;
    char results[PATH_MAX + 32];
    snprintf(results, sizeof results, "%s/%s", c.run_dir, FTB_RUNDIR_RESULTS);
    ftb_catch_interrupts();
    ftb_recorded recd;
    int brc = ftb_rundir_begin("train", c.run_dir, s.cli.wait_lock, s.cli.independent, s.cli.quiet, &recd);
    if (brc) {
        rc = brc;
        goto out;
    }
    char why[FTB_ERR_LEN];
    ftb_resume res = ftb_resume_check(&c, &recd, s.cli.force, why, sizeof why);
    ftb_recorded_free(&recd);
    if (res == FTB_RESUME_KEEP) {
        printf("%s: already recorded in %s (--force to train again)\n", c.key, results);
        rc = FTB_EXIT_OK;
        goto out;
    }
    if (res == FTB_RESUME_MISMATCH) {
        fprintf(stderr,
                "ftbench train: %s already has %s trained with other settings (%s); give --force to train again, or "
                "another --run-id\n",
                c.run_dir, c.key, why);
        rc = FTB_EXIT_USAGE;
        goto out;
    }
    if (!s.cli.quiet) {
        c.progress = train_progress;
        fprintf(stderr, "ftbench train: %s, task %s, %d steps of %d x %d tokens, lr %g, on %s (%d threads)\n", c.key,
                task_spec, c.warmup + c.steps, c.batch, c.seq, (double)c.lr, s.device.name, s.threads);
    }
    ftb_cell_result r;
    int crc = ftb_cell_run(&c, &r, err, sizeof err);
    if (crc == FTB_CELL_INTERRUPTED) {
        fprintf(stderr, "ftbench train: interrupted; nothing was recorded for %s\n", c.key);
        rc = 128 + ftb_interrupted();
        goto out;
    }
    if (crc != 0) {
        fprintf(stderr, "ftbench train: %s\n", err);
        rc = FTB_EXIT_FAIL;
        goto out;
    }
    printf("cell        %s\n", c.key);
    printf("outcome     %s%s%s\n", r.outcome, r.detail[0] ? ": " : "", r.detail);
    if (r.peak_rss > 0) printf("peak RSS    %.1f MiB\n", (double)r.peak_rss / 1048576.0);
    json_t *hist = json_object_get(r.record, "eval_history");
    size_t i;
    json_t *ev;
    json_array_foreach(hist, i, ev)
    {
        printf("eval        step %4lld  accuracy %.4f  loss %.4f  (%lld examples, %s, after %.1f s of training)\n",
               (long long)json_integer_value(json_object_get(ev, "step")),
               json_number_value(json_object_get(ev, "accuracy")), json_number_value(json_object_get(ev, "loss")),
               (long long)json_integer_value(json_object_get(ev, "examples")),
               json_string_value(json_object_get(ev, "decode")),
               json_number_value(json_object_get(ev, "train_seconds")));
    }
    printf("record      %s\n", results);
    rc = strcmp(r.outcome, "ok") ? FTB_EXIT_FAIL : FTB_EXIT_OK;
    ftb_cell_result_free(&r);
out:
    json_decref(extra);
    ftb_task_close(task);
    ftb_cli_free(&s.cli);
    return rc;
}
