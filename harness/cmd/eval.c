/*
 * eval.c — held-out loss and exact-match accuracy on a task, and the
 * `ftbench eval` command.  See eval.h.
 */
#include "eval.h"
#include "commands.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ftb_decode_parse(const char *s)
{
    if (!strcmp(s, "greedy")) return FTB_DECODE_GREEDY;
    if (!strcmp(s, "teacher-forced")) return FTB_DECODE_TEACHER_FORCED;
    return -1;
}

const char *ftb_decode_name(ftb_decode_mode d) { return d == FTB_DECODE_GREEDY ? "greedy" : "teacher-forced"; }

/* Prints text of ids with newlines shown as \n, at most `max` bytes from the end. */
static void show_text(FILE *f, const ftb_tokenizer *tok, const int32_t *ids, int n, size_t max)
{
    size_t len = ftb_tokenizer_decode(tok, ids, n, NULL, 0);
    char *s = malloc(len + 1);
    if (!s) return;
    ftb_tokenizer_decode(tok, ids, n, s, len + 1);
    const char *p = len > max ? s + len - max : s;
    if (len > max) fputs("...", f);
    for (; *p; p++) {
        if (*p == '\n')
            fputs("\\n", f);
        else
            fputc(*p, f);
    }
    free(s);
}

int ftb_eval_task(ftb_model *m, const ftb_run_opts *o, ftb_task *t, int n, ftb_decode_mode decode, ftb_eval_result *r,
                  FILE *show, int show_n, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (n < 1) return ftb_errf(err, errlen, "eval: needs at least one example");
    if (ftb_task_vocab_needed(t) > m->cfg.vocab_size)
        return ftb_errf(err, errlen, "eval: task %s needs a vocabulary of %d, the model has %d", ftb_task_spec(t),
                        ftb_task_vocab_needed(t), m->cfg.vocab_size);
    /* A file's eval split is finite: each example once. */
    int64_t avail = ftb_task_count(t, FTB_SPLIT_EVAL);
    if (avail > 0 && n > avail) n = (int)avail;
    const int V = m->cfg.vocab_size;
    const int32_t *stop;
    int n_stop = ftb_task_stop(t, &stop);
    double t0 = ftb_now(), loss_sum = 0;
    int32_t *targets = NULL, *gen = NULL, *ex_copy = NULL;
    int *rows = NULL;
    float *logits = NULL;
    size_t cap = 0, cap_rows = 0;
    int rc = 0;
    const char *prev_phase = ftb_mem_phase();
    char phase_keep[64];
    snprintf(phase_keep, sizeof phase_keep, "%s", prev_phase ? prev_phase : "");
    for (int i = 0; i < n && rc == 0; i++) {
        ftb_example ex;
        if (ftb_task_example(t, FTB_SPLIT_EVAL, i, &ex, err, errlen)) {
            rc = -1;
            break;
        }
        int len = ex.n_prompt + ex.n_answer;
        if ((size_t)len > cap) {
            cap = (size_t)len;
            targets = realloc(targets, cap * sizeof *targets);
            gen = realloc(gen, cap * sizeof *gen);
            ex_copy = realloc(ex_copy, cap * sizeof *ex_copy);
        }
        if ((size_t)ex.n_answer > cap_rows) {
            cap_rows = (size_t)ex.n_answer;
            rows = realloc(rows, cap_rows * sizeof *rows);
            ftb_free(logits);
            logits = ftb_alloc(FTB_MEM_WORKSPACE, cap_rows * (size_t)V * sizeof *logits);
        }
        if (!targets || !gen || !rows || !ex_copy) {
            rc = ftb_errf(err, errlen, "eval: out of memory");
            break;
        }
        /* The example buffer is the task's: copy before generating. */
        memcpy(ex_copy, ex.tokens, (size_t)len * sizeof *ex_copy);
        /* Teacher-forced pass: the loss, and the argmax at each answer
         * position (row p predicts token p+1). */
        for (int p = 0; p < len; p++)
            targets[p] = p + 1 >= ex.n_prompt && p + 1 < len ? ex_copy[p + 1] : FTB_IGNORE_INDEX;
        for (int a = 0; a < ex.n_answer; a++) rows[a] = ex.n_prompt - 1 + a;
        ftb_mem_set_phase("eval");
        ftb_batch b = { 1, len, ex_copy, targets };
        if (ftb_model_logits(m, &b, o, rows, ex.n_answer, logits, err, errlen)) {
            rc = -1;
            break;
        }
        int tf_correct = 1;
        for (int a = 0; a < ex.n_answer; a++) {
            const float *z = logits + (size_t)a * V;
            int32_t gold = ex_copy[ex.n_prompt + a];
            float mx = z[0];
            for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
            double s = 0;
            for (int j = 0; j < V; j++) s += exp((double)z[j] - mx);
            loss_sum += mx + log(s) - z[gold];
            tf_correct &= ftb_argmax(z, V) == gold;
        }
        r->answer_tokens += ex.n_answer;
        int correct = tf_correct, n_gen = 0;
        if (decode == FTB_DECODE_GREEDY || (show && i < show_n)) {
            n_gen = ftb_generate_greedy(m, o, ex_copy, ex.n_prompt, ex.n_answer, stop, n_stop, gen, err, errlen);
            if (n_gen < 0) {
                rc = -1;
                break;
            }
            if (decode == FTB_DECODE_GREEDY)
                correct = n_gen == ex.n_answer && !memcmp(gen, ex_copy + ex.n_prompt, (size_t)n_gen * sizeof *gen);
        }
        r->correct += correct;
        r->examples++;
        if (show && i < show_n) {
            fprintf(show, "example %d: ", i);
            show_text(show, ftb_task_tokenizer(t), ex_copy, ex.n_prompt, 60);
            fputs("\n  gold   ", show);
            show_text(show, ftb_task_tokenizer(t), ex_copy + ex.n_prompt, ex.n_answer, 80);
            fputs("\n  greedy ", show);
            show_text(show, ftb_task_tokenizer(t), gen, n_gen, 80);
            fprintf(show, "\n  %s\n", correct ? "correct" : "wrong");
        }
    }
    ftb_mem_set_phase(phase_keep);
    free(targets);
    free(gen);
    free(ex_copy);
    free(rows);
    ftb_free(logits);
    r->seconds = ftb_now() - t0;
    r->accuracy = r->examples ? (double)r->correct / r->examples : NAN;
    r->loss = r->answer_tokens ? loss_sum / (double)r->answer_tokens : NAN;
    return rc;
}

json_t *ftb_eval_json(const ftb_eval_result *r, const ftb_task *t, ftb_decode_mode decode)
{
    json_t *o = json_object();
    json_object_set_new(o, "task", json_string(ftb_task_spec(t)));
    json_object_set_new(o, "task_kind", json_string(ftb_task_kind(t)));
    json_object_set_new(o, "metric", json_string("exact_match"));
    json_object_set_new(o, "accuracy", isfinite(r->accuracy) ? json_real(r->accuracy) : json_null());
    json_object_set_new(o, "correct", json_integer(r->correct));
    json_object_set_new(o, "examples", json_integer(r->examples));
    json_object_set_new(o, "loss", isfinite(r->loss) ? json_real(r->loss) : json_null());
    json_object_set_new(o, "answer_tokens", json_integer(r->answer_tokens));
    json_object_set_new(o, "decode", json_string(ftb_decode_name(decode)));
    json_object_set_new(o, "tokenizer", json_string(ftb_tokenizer_kind(ftb_task_tokenizer(t))));
    json_object_set_new(o, "seconds", json_real(r->seconds));
    return o;
}

/* ---- ftbench eval ------------------------------------------------------- */

static void eval_help(FILE *f)
{
    fprintf(f, "usage: ftbench eval --task SPEC (--checkpoint DIR | --model NAME) [options]\n"
               "Held-out loss on the answer tokens and exact-match accuracy of greedy answers\n"
               "(decoded token by token) on a task's eval split (docs/TASKS.md).\n\noptions:\n"
               "  --task SPEC                  reasoning[:steps=2,digits=1] | understanding[:labels=4,words=24]\n"
               "                               | passkey[:len=512,depth=0.5,digits=5] | FILE.jsonl\n"
               "                               [@TOKENIZER.json: a byte-level BPE instead of bytes]\n"
               "  --checkpoint DIR             Hugging Face checkpoint (e.g. from ftbench pretrain)\n"
               "  --model NAME                 zoo model with seeded (untrained) weights\n"
               "  --examples N                 eval examples (default 100)\n"
               "  --decode greedy|teacher-forced  how answers are produced (default greedy)\n"
               "  --tokenizer byte|FILE        tokenizer.json for text tasks (default byte)\n"
               "  --seed N                     task seed (default 42, as train's)\n"
               "  --show N                     print the first N examples with their answers\n"
               "  --threads N                  compute threads (default: all cores)\n"
               "  --json                       one JSON object on stdout instead of text\n"
               "  --help                       this text\n");
}

int ftb_cmd_eval(int argc, char **argv)
{
    const char *task_spec = NULL, *checkpoint = NULL, *model_name = NULL, *tok_spec = NULL;
    long examples = 100, seed = 42, show = 0, threads = 0;
    int decode = FTB_DECODE_GREEDY, as_json = 0;
    char err[FTB_ERR_LEN + 256];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            eval_help(stdout);
            return FTB_EXIT_OK;
        }
        if (!strcmp(a, "--json")) {
            as_json = 1;
            continue;
        }
        if (i + 1 >= argc) {
            snprintf(err, sizeof err, "%s: unknown option or missing value (see ftbench eval --help)", a);
            return ftb_usage_error("eval", err);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--task"))
            task_spec = v;
        else if (!strcmp(a, "--checkpoint"))
            checkpoint = v;
        else if (!strcmp(a, "--model"))
            model_name = v;
        else if (!strcmp(a, "--tokenizer"))
            tok_spec = v;
        else if (!strcmp(a, "--decode")) {
            if ((decode = ftb_decode_parse(v)) < 0) {
                snprintf(err, sizeof err, "--decode: '%s' is not greedy or teacher-forced", v);
                return ftb_usage_error("eval", err);
            }
        } else if (!strcmp(a, "--examples") || !strcmp(a, "--seed") || !strcmp(a, "--show") ||
                   !strcmp(a, "--threads")) {
            long *dst = !strcmp(a, "--examples") ? &examples
                        : !strcmp(a, "--seed")   ? &seed
                        : !strcmp(a, "--show")   ? &show
                                                 : &threads;
            long lo = !strcmp(a, "--examples") || !strcmp(a, "--threads") ? 1 : 0;
            if (ftb_parse_long(v, lo, 1L << 30, dst) != 0) {
                snprintf(err, sizeof err, "%s: '%s' is not an integer >= %ld", a, v, lo);
                return ftb_usage_error("eval", err);
            }
        } else {
            snprintf(err, sizeof err, "unknown option %s (see ftbench eval --help)", a);
            return ftb_usage_error("eval", err);
        }
    }
    if (!task_spec) return ftb_usage_error("eval", "--task is required");
    if (!checkpoint == !model_name) return ftb_usage_error("eval", "give one of --checkpoint DIR or --model NAME");
    char e[FTB_ERR_LEN];
    /* Only an explicit --tokenizer is opened here: without one the task
     * takes its own (SPEC@TOKENIZER.json) or the byte tokenizer, so that
     * the two ways of naming a tokenizer clash only when both are used. */
    ftb_tokenizer *tok = NULL;
    if (tok_spec && !(tok = ftb_tokenizer_open(tok_spec, e, sizeof e))) {
        snprintf(err, sizeof err, "--tokenizer: %s", e);
        return ftb_usage_error("eval", err);
    }
    ftb_task *task = ftb_task_open(task_spec, tok, (uint64_t)seed, e, sizeof e);
    if (!task) {
        ftb_tokenizer_close(tok);
        snprintf(err, sizeof err, "--task: %s", e);
        return ftb_usage_error("eval", err);
    }
    ftb_model *m = NULL;
    if (checkpoint) {
        m = ftb_model_load(checkpoint, 1, e, sizeof e);
    } else {
        ftb_config cfg;
        if (ftb_zoo_get(model_name, &cfg) != 0)
            snprintf(e, sizeof e, "unknown model '%s' (see ftbench list)", model_name);
        else
            m = ftb_model_create(&cfg, (uint64_t)seed, e, sizeof e);
    }
    int rc = FTB_EXIT_OK;
    if (!m) {
        snprintf(err, sizeof err, "%s: %s", checkpoint ? "--checkpoint" : "--model", e);
        rc = ftb_usage_error("eval", err);
        goto out;
    }
    if (threads) ftb_set_threads((int)threads);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    ftb_eval_result r;
    if (ftb_eval_task(m, &o, task, (int)examples, (ftb_decode_mode)decode, &r, as_json ? NULL : stdout, (int)show, e,
                      sizeof e) != 0) {
        fprintf(stderr, "ftbench eval: %s\n", e);
        rc = strstr(e, "vocabulary") || strstr(e, "longer") || strstr(e, "max_position") ? FTB_EXIT_USAGE
                                                                                         : FTB_EXIT_FAIL;
        goto out;
    }
    if (as_json) {
        json_t *j = ftb_eval_json(&r, task, (ftb_decode_mode)decode);
        json_object_set_new(j, "model", json_string(checkpoint ? checkpoint : model_name));
        char *s = json_dumps(j, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(j);
    } else {
        printf("task        %s (%s split, seed %ld, %s tokenizer)\n", ftb_task_spec(task), "eval", seed,
               ftb_tokenizer_kind(ftb_task_tokenizer(task)));
        printf("model       %s\n", checkpoint ? checkpoint : model_name);
        printf("examples    %d\n", r.examples);
        printf("accuracy    %.4f (%d/%d exact match, %s)\n", r.accuracy, r.correct, r.examples,
               ftb_decode_name((ftb_decode_mode)decode));
        printf("loss        %.4f nats per answer token (%lld tokens)\n", r.loss, (long long)r.answer_tokens);
        printf("time        %.2f s\n", r.seconds);
    }
out:
    ftb_model_free(m);
    ftb_task_close(task);
    ftb_tokenizer_close(tok);
    return rc;
}
