/*
 * pretrain.c — `ftbench pretrain`: a starting model that is not noise.
 *
 * Randomly initialised weights have near-isotropic activations and an
 * untrained loss landscape, which would misrepresent low-rank and
 * zeroth-order methods.  This trains a small zoo shape from its seeded
 * initialisation with the full method (every weight, AdamW, the core's
 * exact backward) on a mixture of
 *   - the learnable synthetic language of datasets/ (a sparse Markov chain),
 *   - the tasks' text format (datasets/tasks.h, training split, loss on every
 *     token, several examples packed per row),
 * with linear warm-up and cosine decay of the learning rate, and saves it
 * as a Hugging Face checkpoint (config.json + model.safetensors) that
 * `train`/`eval`/`run` load with --checkpoint.  Everything is seeded: the
 * same command gives the same weights on the same machine and thread count.
 */
#include "commands.h"
#include "dataset.h"
#include "eval.h"
#include "tasks.h"
#include "safe_file.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TASKS 8

typedef struct {
    const char *model, *out, *tasks;
    long steps, seq, batch, seed, threads, eval_every, eval_examples;
    double lr, mix, weight_decay;
} pretrain_opts;

static void pretrain_help(FILE *f)
{
    fprintf(f, "usage: ftbench pretrain --out DIR [options]\n"
               "Trains a small model of a zoo shape with the full method on the synthetic\n"
               "language mixed with the tasks' format, and saves it as config.json +\n"
               "model.safetensors in DIR (docs/TASKS.md).\n\noptions:\n"
               "  --model NAME        zoo shape (default starter-4m)\n"
               "  --out DIR           checkpoint directory to write (required)\n"
               "  --steps N           optimisation steps (default 800)\n"
               "  --seq N             tokens per row (default 256)\n"
               "  --batch N           rows per step (default 4)\n"
               "  --lr X              peak learning rate (default 2e-3; 5%% warm-up, cosine to 10%%)\n"
               "  --weight-decay X    AdamW weight decay (default 0.01)\n"
               "  --mix F             fraction of rows drawn from tasks (default 0.5)\n"
               "  --tasks A+B+..      task specs, '+'-separated (default\n"
               "                      reasoning:steps=1+passkey:len=SEQ,depth=random; understanding\n"
               "                      is left out so that fine-tuning has a task to learn)\n"
               "  --seed N            weights and data (default 42)\n"
               "  --threads N         compute threads (default: all cores)\n"
               "  --eval-every N      held-out loss and accuracy every N steps (default 400)\n"
               "  --eval-examples N   examples per task for that accuracy (default 32)\n"
               "  --help              this text\n");
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Row g of the mixture into tok/tgt [T]: a synthetic-language row, or task
 * examples packed one after another (loss on every token, none across an
 * example boundary, the last one cut at T). */
static int mixture_row(ftb_dataset *lang, ftb_task **tasks, int n_tasks, double mix, uint64_t seed, int64_t g, int T,
                       int32_t *tok, int32_t *tgt, char *err, size_t errlen)
{
    uint64_t h = mix64(seed ^ mix64((uint64_t)g + 0x51));
    double u = (double)(h >> 11) * 0x1.0p-53;
    if (n_tasks == 0 || u >= mix) {
        ftb_batch b;
        if (ftb_dataset_batch(lang, g, 1, T, &b, err, errlen)) return -1;
        memcpy(tok, b.tokens, sizeof(int32_t) * (size_t)T);
        memcpy(tgt, b.targets, sizeof(int32_t) * (size_t)T);
        return 0;
    }
    ftb_task *t = tasks[mix64(h) % (uint64_t)n_tasks];
    int k = 0;
    for (int64_t j = 0; k < T; j++) {
        ftb_example ex;
        if (ftb_task_example(t, FTB_SPLIT_TRAIN, g * 256 + j, &ex, err, errlen)) return -1;
        int n = ex.n_prompt + ex.n_answer;
        for (int i = 0; i < n && k < T; i++, k++) {
            tok[k] = ex.tokens[i];
            tgt[k] = i + 1 < n && k + 1 < T ? ex.tokens[i + 1] : FTB_IGNORE_INDEX;
        }
        if (j > 255) break;
    }
    for (; k < T; k++) {
        tok[k] = 0;
        tgt[k] = FTB_IGNORE_INDEX;
    }
    return 0;
}

static int parse_args(int argc, char **argv, pretrain_opts *o, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (i + 1 >= argc)
            return ftb_errf(err, errlen, "%s: unknown option or missing value (see ftbench pretrain --help)", a);
        const char *v = argv[++i];
        long *lp = !strcmp(a, "--steps")           ? &o->steps
                   : !strcmp(a, "--seq")           ? &o->seq
                   : !strcmp(a, "--batch")         ? &o->batch
                   : !strcmp(a, "--seed")          ? &o->seed
                   : !strcmp(a, "--threads")       ? &o->threads
                   : !strcmp(a, "--eval-every")    ? &o->eval_every
                   : !strcmp(a, "--eval-examples") ? &o->eval_examples
                                                   : NULL;
        double *dp = !strcmp(a, "--lr")             ? &o->lr
                     : !strcmp(a, "--mix")          ? &o->mix
                     : !strcmp(a, "--weight-decay") ? &o->weight_decay
                                                    : NULL;
        if (lp) {
            long lo = !strcmp(a, "--seed") || !strcmp(a, "--eval-every") ? 0 : 1;
            if (ftb_parse_long(v, lo, 1L << 30, lp))
                return ftb_errf(err, errlen, "%s: '%s' is not an integer >= %ld", a, v, lo);
        } else if (dp) {
            if (ftb_parse_double(v, dp) || !(*dp >= 0) || (dp == &o->mix && *dp > 1) || (dp == &o->lr && *dp <= 0))
                return ftb_errf(err, errlen, "%s: '%s' is out of range", a, v);
        } else if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--out")) {
            o->out = v;
        } else if (!strcmp(a, "--tasks")) {
            o->tasks = v;
        } else {
            return ftb_errf(err, errlen, "unknown option %s (see ftbench pretrain --help)", a);
        }
    }
    return 0;
}

/* Held-out: mean loss of the synthetic language on batches far from the
 * training stream, and each task's teacher-forced accuracy. */
static json_t *held_out(ftb_model *m, const ftb_run_opts *run, ftb_dataset *lang, ftb_task **tasks, int n_tasks,
                        const pretrain_opts *o, long step, char *err, size_t errlen)
{
    json_t *j = json_object();
    json_object_set_new(j, "step", json_integer(step));
    double sum = 0;
    int nb = 4;
    for (int i = 0; i < nb; i++) {
        ftb_batch b;
        if (ftb_dataset_batch(lang, (int64_t)1 << 40 | i, 1, (int)o->seq, &b, err, errlen)) return json_decref(j), NULL;
        sum += ftb_model_forward(m, &b, run, err, errlen);
    }
    json_object_set_new(j, "lang_loss", json_real(sum / nb));
    fprintf(stderr, "ftbench pretrain: step %ld held-out: language loss %.4f", step, sum / nb);
    json_t *acc = json_object();
    for (int k = 0; k < n_tasks; k++) {
        ftb_eval_result r;
        if (ftb_eval_task(m, run, tasks[k], (int)o->eval_examples, FTB_DECODE_TEACHER_FORCED, &r, NULL, 0, err, errlen))
            return json_decref(j), json_decref(acc), NULL;
        json_object_set_new(acc, ftb_task_spec(tasks[k]), ftb_eval_json(&r, tasks[k], FTB_DECODE_TEACHER_FORCED));
        fprintf(stderr, ", %s acc %.2f loss %.3f", ftb_task_kind(tasks[k]), r.accuracy, r.loss);
    }
    fprintf(stderr, "\n");
    json_object_set_new(j, "tasks", acc);
    return j;
}

int ftb_cmd_pretrain(int argc, char **argv)
{
    pretrain_opts o = { "starter-4m", NULL, NULL, 800, 256, 4, 42, 0, 400, 32, 2e-3, 0.5, 0.01 };
    char err[FTB_ERR_LEN + 256], e[FTB_ERR_LEN];
    int pr = parse_args(argc, argv, &o, err, sizeof err);
    if (pr == 1) {
        pretrain_help(stdout);
        return FTB_EXIT_OK;
    }
    if (pr < 0) return ftb_usage_error("pretrain", err);
    if (!o.out) return ftb_usage_error("pretrain", "--out DIR is required");
    ftb_config cfg;
    if (ftb_zoo_get(o.model, &cfg) != 0) {
        snprintf(err, sizeof err, "--model: unknown zoo shape '%s' (see ftbench list)", o.model);
        return ftb_usage_error("pretrain", err);
    }
    if (o.seq > cfg.max_seq) {
        snprintf(err, sizeof err, "--seq %ld is longer than %s's max_seq %d", o.seq, o.model, cfg.max_seq);
        return ftb_usage_error("pretrain", err);
    }
    char default_tasks[128];
    snprintf(default_tasks, sizeof default_tasks, "reasoning:steps=1+passkey:len=%ld,depth=random", o.seq);
    const char *task_list = o.tasks ? o.tasks : default_tasks;

    /* Data. */
    int rc = FTB_EXIT_USAGE;
    ftb_model *m = NULL;
    ftb_task *tasks[MAX_TASKS] = { 0 };
    int n_tasks = 0;
    json_t *log = json_object(), *curve = json_array(), *evals = json_array();
    int32_t *tok = NULL, *tgt = NULL;
    ftb_adamw opt;
    memset(&opt, 0, sizeof opt);
    ftb_dataset *lang = ftb_dataset_open("synthetic-lang", cfg.vocab_size, (uint64_t)o.seed, e, sizeof e);
    if (!lang) {
        ftb_usage_error("pretrain", e);
        goto out;
    }
    if (o.mix > 0 && *task_list) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", task_list);
        for (char *save = NULL, *spec = strtok_r(buf, "+", &save); spec; spec = strtok_r(NULL, "+", &save)) {
            if (n_tasks == MAX_TASKS) {
                ftb_usage_error("pretrain", "--tasks: at most 8 tasks");
                goto out;
            }
            tasks[n_tasks] = ftb_task_open(spec, NULL, (uint64_t)o.seed, e, sizeof e);
            if (!tasks[n_tasks]) {
                snprintf(err, sizeof err, "--tasks: %s", e);
                ftb_usage_error("pretrain", err);
                goto out;
            }
            if (ftb_task_vocab_needed(tasks[n_tasks]) > cfg.vocab_size) {
                snprintf(err, sizeof err, "--tasks: %s needs a vocabulary of %d; %s has %d", spec,
                         ftb_task_vocab_needed(tasks[n_tasks]), o.model, cfg.vocab_size);
                n_tasks++;
                ftb_usage_error("pretrain", err);
                goto out;
            }
            n_tasks++;
        }
    }
    if (ftb_mkdirs(o.out, e, sizeof e) != 0) {
        snprintf(err, sizeof err, "--out: %s", e);
        ftb_usage_error("pretrain", err);
        goto out;
    }

    /* Model and the full method: every weight trainable, AdamW. */
    rc = FTB_EXIT_FAIL;
    if (o.threads) ftb_set_threads((int)o.threads);
    m = ftb_model_create(&cfg, (uint64_t)o.seed, e, sizeof e);
    if (!m) {
        fprintf(stderr, "ftbench pretrain: %s\n", e);
        goto out;
    }
    ftb_model_set_trainable(m, 1);
    if (ftb_model_alloc_grads(m, e, sizeof e) ||
        ftb_adamw_init(&opt, m, NULL, 0, (float)o.lr, (float)o.weight_decay, e, sizeof e)) {
        fprintf(stderr, "ftbench pretrain: %s\n", e);
        goto out;
    }
    ftb_session s;
    memset(&s, 0, sizeof s);
    s.model = m;
    ftb_run_opts_default(&s.run);
    s.lr = (float)o.lr;
    s.seed = (uint64_t)o.seed;
    s.total_steps = (int)o.steps;
    const int B = (int)o.batch, T = (int)o.seq;
    tok = malloc(sizeof(int32_t) * (size_t)B * T);
    tgt = malloc(sizeof(int32_t) * (size_t)B * T);
    if (!tok || !tgt) {
        fprintf(stderr, "ftbench pretrain: out of memory\n");
        goto out;
    }
    fprintf(stderr,
            "ftbench pretrain: %s (%.2f M parameters), %ld steps of %d x %d tokens, %d tasks in %.0f%% of rows, "
            "%d threads\n",
            o.model, ftb_config_param_count(&cfg) / 1e6, o.steps, B, T, n_tasks, 100 * (n_tasks ? o.mix : 0),
            ftb_get_threads());
    long warm = o.steps / 20 > 0 ? o.steps / 20 : 1;
    double t_start = ftb_now(), t_last = t_start;
    for (long step = 0; step < o.steps; step++) {
        for (int r = 0; r < B; r++)
            if (mixture_row(lang, tasks, n_tasks, o.mix, (uint64_t)o.seed, step * B + r, T, tok + (size_t)r * T,
                            tgt + (size_t)r * T, e, sizeof e)) {
                fprintf(stderr, "ftbench pretrain: %s\n", e);
                goto out;
            }
        double frac = step < warm ? (double)(step + 1) / warm
                                  : 0.1 + 0.45 * (1 + cos(M_PI * (double)(step - warm) / (double)(o.steps - warm)));
        opt.lr = (float)(o.lr * frac);
        ftb_batch b = { B, T, tok, tgt };
        ftb_step_result res;
        if (ftb_backprop_step(&s, &opt, &b, &res, e, sizeof e)) {
            fprintf(stderr, "ftbench pretrain: step %ld: %s\n", step, e);
            goto out;
        }
        if (!isfinite(res.loss)) {
            fprintf(stderr, "ftbench pretrain: step %ld: the loss is %g (lower --lr)\n", step, (double)res.loss);
            goto out;
        }
        json_array_append_new(curve, json_real(res.loss));
        if ((step + 1) % 10 == 0 || step == 0) {
            double now = ftb_now();
            fprintf(stderr, "ftbench pretrain: step %ld/%ld loss %.4f lr %.2e %.0f tokens/s\n", step + 1, o.steps,
                    (double)res.loss, (double)opt.lr, (step == 0 ? 1 : 10) * (double)B * T / (now - t_last));
            t_last = now;
        }
        if (o.eval_every && ((step + 1) % o.eval_every == 0) && step + 1 < o.steps) {
            json_t *h = held_out(m, &s.run, lang, tasks, n_tasks, &o, step + 1, e, sizeof e);
            if (!h) {
                fprintf(stderr, "ftbench pretrain: eval: %s\n", e);
                goto out;
            }
            json_array_append_new(evals, h);
        }
    }
    double train_seconds = ftb_now() - t_start;
    json_t *h = held_out(m, &s.run, lang, tasks, n_tasks, &o, o.steps, e, sizeof e);
    if (!h) {
        fprintf(stderr, "ftbench pretrain: eval: %s\n", e);
        goto out;
    }
    json_array_append_new(evals, h);
    if (ftb_model_save(m, o.out, e, sizeof e) != 0) {
        fprintf(stderr, "ftbench pretrain: %s\n", e);
        goto out;
    }
    /* What made this checkpoint, beside it. */
    json_object_set_new(log, "model", json_string(o.model));
    json_object_set_new(log, "params", json_integer(ftb_config_param_count(&cfg)));
    json_object_set_new(log, "steps", json_integer(o.steps));
    json_object_set_new(log, "seq", json_integer(o.seq));
    json_object_set_new(log, "batch", json_integer(o.batch));
    json_object_set_new(log, "lr", json_real(o.lr));
    json_object_set_new(log, "weight_decay", json_real(o.weight_decay));
    json_object_set_new(log, "mix", json_real(o.mix));
    json_object_set_new(log, "tasks", json_string(n_tasks ? task_list : ""));
    json_object_set_new(log, "seed", json_integer(o.seed));
    json_object_set_new(log, "threads", json_integer(ftb_get_threads()));
    json_object_set_new(log, "train_seconds", json_real(train_seconds));
    json_object_set_new(log, "git_rev", json_string(ftb_git_revision()));
    json_object_set_new(log, "loss_per_step", json_incref(curve));
    json_object_set_new(log, "held_out", json_incref(evals));
    char path[4200];
    snprintf(path, sizeof path, "%.4000s/pretrain.json", o.out);
    /* Never through a link planted at the name (safe_file.h). */
    char *log_text = json_dumps(log, JSON_INDENT(1));
    FILE *lf = log_text ? ftb_sf_fopen_w(path) : NULL;
    int log_ok = lf && fputs(log_text, lf) >= 0 && fputc('\n', lf) != EOF;
    if (lf && !log_ok) ftb_sf_fabort(lf);
    if (!lf || !log_ok || ftb_sf_fclose(lf) != 0) fprintf(stderr, "ftbench pretrain: warning: cannot write %s\n", path);
    free(log_text);
    printf("saved %s (%s, %ld steps, %.0f s, final loss %.4f)\n", o.out, o.model, o.steps, train_seconds,
           json_number_value(json_array_get(curve, json_array_size(curve) - 1)));
    rc = FTB_EXIT_OK;
out:
    free(tok);
    free(tgt);
    ftb_adamw_free(&opt);
    ftb_model_free(m);
    for (int k = 0; k < n_tasks; k++) ftb_task_close(tasks[k]);
    ftb_dataset_close(lang);
    json_decref(log);
    json_decref(curve);
    json_decref(evals);
    return rc;
}
