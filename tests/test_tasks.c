/*
 * test_tasks.c — tasks and accuracy (suite "tasks"): generators are seeded
 * and their answers right (recomputed from the prompt), the loss mask
 * covers exactly the answer tokens, the needle sits at the depth asked,
 * evaluation scores a model built to know the answers 1.0 and a random one
 * ~0, greedy and teacher-forced decoding agree, the method's hooks apply
 * to generation, training lowers the held-out loss, and malformed
 * instruction files are one clear line.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "dataset.h"
#include "eval.h"
#include "tasks.h"

static ftb_config byte_cfg(void)
{
    ftb_config c;
    cr_assert_eq(ftb_zoo_get("tiny-byte", &c), 0);
    return c;
}

/* ---- generators ------------------------------------------------------------ */

Test(tasks, generators_are_seeded_and_splits_differ)
{
    const char *specs[] = { "reasoning", "reasoning:steps=4,digits=2", "understanding:labels=3",
                            "passkey:len=256,depth=random", NULL };
    char err[512];
    for (int k = 0; specs[k]; k++) {
        ftb_task *a = ftb_task_open(specs[k], NULL, 7, err, sizeof err);
        ftb_task *b = ftb_task_open(specs[k], NULL, 7, err, sizeof err);
        ftb_task *c = ftb_task_open(specs[k], NULL, 8, err, sizeof err);
        cr_assert(a && b && c, "%s: %s", specs[k], err);
        int differ_seed = 0, differ_split = 0;
        for (int i = 0; i < 20; i++) {
            ftb_example x, y;
            cr_assert_eq(ftb_task_example(a, FTB_SPLIT_TRAIN, i, &x, err, sizeof err), 0, "%s", err);
            int n = x.n_prompt + x.n_answer;
            int32_t *keep = malloc(sizeof(int32_t) * (size_t)n);
            memcpy(keep, x.tokens, sizeof(int32_t) * (size_t)n);
            cr_assert_eq(ftb_task_example(b, FTB_SPLIT_TRAIN, i, &y, err, sizeof err), 0);
            cr_assert_eq(y.n_prompt + y.n_answer, n, "%s: same seed, same example", specs[k]);
            cr_assert(!memcmp(keep, y.tokens, sizeof(int32_t) * (size_t)n), "%s: same seed, same tokens", specs[k]);
            cr_assert_eq(ftb_task_example(c, FTB_SPLIT_TRAIN, i, &y, err, sizeof err), 0);
            differ_seed += y.n_prompt + y.n_answer != n || memcmp(keep, y.tokens, sizeof(int32_t) * (size_t)n);
            cr_assert_eq(ftb_task_example(a, FTB_SPLIT_EVAL, i, &y, err, sizeof err), 0);
            differ_split += y.n_prompt + y.n_answer != n || memcmp(keep, y.tokens, sizeof(int32_t) * (size_t)n);
            cr_assert(n <= ftb_task_max_tokens(a), "%s: %d tokens over the bound %d", specs[k], n,
                      ftb_task_max_tokens(a));
            free(keep);
        }
        cr_expect_geq(differ_seed, 15, "%s: another seed gives other examples", specs[k]);
        cr_expect_geq(differ_split, 15, "%s: the eval split is not the training split", specs[k]);
        ftb_task_close(a);
        ftb_task_close(b);
        ftb_task_close(c);
    }
}

/* The example's text (byte tokenizer: ids are bytes). */
static void example_text(const ftb_example *x, char *prompt, size_t pn, char *answer, size_t an)
{
    cr_assert_lt((size_t)x->n_prompt, pn);
    cr_assert_lt((size_t)x->n_answer, an);
    for (int i = 0; i < x->n_prompt; i++) prompt[i] = (char)x->tokens[i];
    prompt[x->n_prompt] = 0;
    for (int i = 0; i < x->n_answer; i++) answer[i] = (char)x->tokens[x->n_prompt + i];
    answer[x->n_answer] = 0;
}

Test(tasks, reasoning_answers_recomputed_from_the_prompt)
{
    char err[512], prompt[256], answer[64];
    ftb_task *t = ftb_task_open("reasoning:steps=3,digits=2", NULL, 3, err, sizeof err);
    cr_assert(t, "%s", err);
    for (int i = 0; i < 200; i++) {
        ftb_example x;
        cr_assert_eq(ftb_task_example(t, FTB_SPLIT_EVAL, i, &x, err, sizeof err), 0);
        example_text(&x, prompt, sizeof prompt, answer, sizeof answer);
        cr_assert(!strncmp(prompt, "Compute ", 8), "%s", prompt);
        /* Left to right, ignoring the parentheses (they only make that
         * order explicit). */
        const char *p = prompt + 8;
        long v = 0;
        char op = '+';
        int ops = 0;
        while (*p && *p != ' ') {
            if (*p == '(' || *p == ')') {
                p++;
                continue;
            }
            char *end;
            long x2 = strtol(p, &end, 10);
            cr_assert(end != p, "%s", prompt);
            v = op == '+' ? v + x2 : op == '-' ? v - x2 : v * x2;
            p = end;
            while (*p == ')') p++;
            if (*p == '+' || *p == '-' || *p == '*') {
                op = *p++;
                ops++;
            }
        }
        cr_assert_eq(ops, 3, "%s", prompt);
        cr_assert(!strcmp(p, " ="), "prompt ends with ' =': %s", prompt);
        char want[64];
        snprintf(want, sizeof want, " %ld\n", v);
        cr_assert_str_eq(answer, want, "%s", prompt);
    }
    ftb_task_close(t);
}

Test(tasks, understanding_label_is_the_majority_topic)
{
    static const char *const words[4][8] = {
        { "goal", "team", "match", "coach", "score", "player", "league", "ball" },
        { "atom", "theory", "experiment", "energy", "cell", "data", "physics", "lab" },
        { "song", "melody", "guitar", "rhythm", "band", "chord", "singer", "album" },
        { "bread", "soup", "cheese", "recipe", "spice", "fruit", "dinner", "bake" },
    };
    static const char *const labels[4] = { "sports", "science", "music", "food" };
    char err[512], prompt[2048], answer[64];
    ftb_task *t = ftb_task_open("understanding:labels=4,words=30", NULL, 5, err, sizeof err);
    cr_assert(t, "%s", err);
    int seen[4] = { 0 };
    for (int i = 0; i < 200; i++) {
        ftb_example x;
        cr_assert_eq(ftb_task_example(t, FTB_SPLIT_TRAIN, i, &x, err, sizeof err), 0);
        example_text(&x, prompt, sizeof prompt, answer, sizeof answer);
        int count[4] = { 0 }, nw = 0;
        char *save = NULL;
        for (char *w = strtok_r(prompt + 8, " \n", &save); w; w = strtok_r(NULL, " \n", &save)) {
            if (!strcmp(w, "Topic:")) break;
            nw++;
            for (int k = 0; k < 4; k++)
                for (int j = 0; j < 8; j++) count[k] += !strcmp(w, words[k][j]);
        }
        cr_assert_eq(nw, 30);
        int best = 0;
        for (int k = 1; k < 4; k++) best = count[k] > count[best] ? k : best;
        for (int k = 0; k < 4; k++) cr_assert(k == best || count[k] < count[best], "a strict majority");
        char want[32];
        snprintf(want, sizeof want, " %s\n", labels[best]);
        cr_assert_str_eq(answer, want);
        seen[best]++;
    }
    for (int k = 0; k < 4; k++) cr_expect_gt(seen[k], 20, "every label occurs (%s: %d)", labels[k], seen[k]);
    ftb_task_close(t);
}

Test(tasks, passkey_length_exact_and_needle_at_depth)
{
    char err[512];
    const int lens[] = { 128, 1024, 8192 };
    const double depths[] = { 0.0, 0.25, 0.5, 0.75, 1.0 };
    for (int li = 0; li < 3; li++)
        for (int di = 0; di < 5; di++) {
            char spec[64];
            snprintf(spec, sizeof spec, "passkey:len=%d,depth=%g", lens[li], depths[di]);
            ftb_task *t = ftb_task_open(spec, NULL, 11, err, sizeof err);
            cr_assert(t, "%s", err);
            for (int i = 0; i < 5; i++) {
                ftb_example x;
                cr_assert_eq(ftb_task_example(t, FTB_SPLIT_TRAIN, i, &x, err, sizeof err), 0, "%s", err);
                cr_assert_eq(x.n_prompt + x.n_answer, lens[li], "%s: exactly len tokens", spec);
                /* The key in the needle is the answer. */
                const char *lead = " The pass key is ";
                size_t ll = strlen(lead);
                cr_assert_geq(x.needle_pos, 0);
                for (size_t j = 0; j < ll; j++)
                    cr_assert_eq(x.tokens[x.needle_pos + (int)j], (unsigned char)lead[j], "%s: needle", spec);
                char key[16] = "", ans[16] = "";
                int k = 0;
                while (k < 15 && x.tokens[x.needle_pos + (int)ll + k] != '.') {
                    key[k] = (char)x.tokens[x.needle_pos + (int)ll + k];
                    k++;
                }
                for (int j = 0; j < x.n_answer && j < 15; j++) ans[j] = (char)x.tokens[x.n_prompt + j];
                char want[24];
                snprintf(want, sizeof want, " %s\n", key);
                cr_assert_str_eq(ans, want, "%s", spec);
                /* Depth: the needle's offset in the filler, as a fraction of
                 * the filler, within one sentence (<= 23 tokens). */
                int intro = 31, needle = (int)ll + 5 + 13;
                int filler = lens[li] - intro - needle - 38 - x.n_answer;
                double at = (double)(x.needle_pos - intro);
                cr_assert(fabs(at - depths[di] * filler) <= 23.0, "%s: needle at %g of %d filler tokens, asked %g",
                          spec, at, filler, depths[di]);
            }
            ftb_task_close(t);
        }
    ftb_task *t = ftb_task_open("passkey:len=64", NULL, 1, err, sizeof err);
    cr_assert(t);
    ftb_example x;
    cr_assert_eq(ftb_task_example(t, FTB_SPLIT_TRAIN, 0, &x, err, sizeof err), -1);
    cr_assert(strstr(err, "len=64") && strstr(err, "fixed text"), "%s", err);
    ftb_task_close(t);
}

Test(tasks, loss_mask_covers_exactly_the_answer)
{
    char err[512];
    const char *specs[] = { "reasoning", "understanding", "passkey:len=200", NULL };
    for (int k = 0; specs[k]; k++) {
        ftb_task *t = ftb_task_open(specs[k], NULL, 2, err, sizeof err);
        cr_assert(t);
        int T = (ftb_task_max_tokens(t) + 7) / 8 * 8, B = 3;
        int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * T), *tgt = malloc(sizeof(int32_t) * (size_t)B * T);
        cr_assert_eq(ftb_task_batch(t, FTB_SPLIT_TRAIN, 4, B, T, 0, tok, tgt, err, sizeof err), 0, "%s", err);
        for (int r = 0; r < B; r++) {
            ftb_example x;
            cr_assert_eq(ftb_task_example(t, FTB_SPLIT_TRAIN, 4 * B + r, &x, err, sizeof err), 0);
            int n = x.n_prompt + x.n_answer;
            for (int i = 0; i < T; i++) {
                int32_t g = tgt[r * T + i];
                if (i >= x.n_prompt - 1 && i < n - 1)
                    cr_assert_eq(g, x.tokens[i + 1], "%s: answer target at %d", specs[k], i);
                else
                    cr_assert_eq(g, FTB_IGNORE_INDEX, "%s: no loss at %d (prompt or padding)", specs[k], i);
                cr_assert_eq(tok[r * T + i], i < n ? x.tokens[i] : 0);
            }
        }
        /* The same batches through the dataset interface (task:SPEC). */
        char ds_spec[64];
        snprintf(ds_spec, sizeof ds_spec, "task:%s", specs[k]);
        ftb_dataset *d = ftb_dataset_open(ds_spec, 320, 2, err, sizeof err);
        cr_assert(d, "%s", err);
        ftb_batch b;
        cr_assert_eq(ftb_dataset_batch(d, 4, B, T, &b, err, sizeof err), 0, "%s", err);
        cr_assert(!memcmp(b.targets, tgt, sizeof(int32_t) * (size_t)B * T));
        cr_assert(!memcmp(b.tokens, tok, sizeof(int32_t) * (size_t)B * T));
        ftb_dataset_close(d);
        /* Too short a row is one clear error. */
        cr_assert_eq(ftb_task_batch(t, FTB_SPLIT_TRAIN, 0, 1, 8, 0, tok, tgt, err, sizeof err), -1);
        cr_assert(strstr(err, "longer than the sequence length 8"), "%s", err);
        free(tok);
        free(tgt);
        ftb_task_close(t);
    }
    cr_assert_null(ftb_dataset_open("task:reasoning", 200, 1, err, sizeof err));
    cr_assert(strstr(err, "vocabulary of 256"), "%s", err);
}

/* ---- instruction data ----------------------------------------------------------- */

static char tmp_path[64];
static const char *write_tmp(const char *text)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/ftbtask-XXXXXX.jsonl");
    int fd = mkstemps(tmp_path, 6);
    cr_assert(fd >= 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return tmp_path;
}

Test(tasks, instruction_jsonl_text_and_pretokenized)
{
    char err[512];
    const char *p = write_tmp("{\"prompt\": \"Hi\", \"answer\": \" yo\\n\"}\n"
                              "\n"
                              "{\"input_ids\": [5, 6, 7, 8, 0], \"loss_mask\": [0, 0, 1, 1, 0]}\n");
    ftb_task *t = ftb_task_open(p, NULL, 1, err, sizeof err);
    cr_assert(t, "%s", err);
    cr_assert_str_eq(ftb_task_kind(t), "jsonl");
    cr_assert_eq(ftb_task_count(t, FTB_SPLIT_TRAIN), 2);
    ftb_example x;
    cr_assert_eq(ftb_task_example(t, FTB_SPLIT_TRAIN, 0, &x, err, sizeof err), 0);
    cr_assert_eq(x.n_prompt, 2);
    cr_assert_eq(x.n_answer, 4);
    cr_assert_eq(x.tokens[0], 'H');
    cr_assert_eq(x.tokens[5], '\n');
    cr_assert_eq(ftb_task_example(t, FTB_SPLIT_TRAIN, 1, &x, err, sizeof err), 0);
    cr_assert_eq(x.n_prompt, 2);
    cr_assert_eq(x.n_answer, 2, "trailing padding after the answer is dropped");
    cr_assert_eq(x.tokens[2], 7);
    cr_assert_eq(ftb_task_max_tokens(t), 6);
    ftb_task_close(t);
    unlink(p);
}

Test(tasks, malformed_instruction_jsonl_is_one_clear_line)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        { "{\"prompt\": \"a\", \"answer\": \"b\"}\n{\"prompt\": \"a\"\n", ":2: not valid JSON" },
        { "{\"prompt\": \"a\"}\n", ":1: \"prompt\" and \"answer\" must both be strings" },
        { "{\"prompt\": 3, \"answer\": \"b\"}\n", ":1: \"prompt\" and \"answer\" must both be strings" },
        { "{\"input_ids\": [1, 2, 3], \"loss_mask\": [0, 1]}\n", ":1: \"loss_mask\" has 2 entries" },
        { "{\"input_ids\": [1, 2, 3, 4], \"loss_mask\": [0, 1, 0, 1]}\n", ":1: loss_mask must be one run of 1s" },
        { "{\"input_ids\": [1, 2], \"loss_mask\": [1, 1]}\n", ":1: loss_mask starts with 1" },
        { "{\"input_ids\": [1, 2], \"loss_mask\": [0, 0]}\n", ":1: loss_mask has no 1" },
        { "{\"input_ids\": [1, -2], \"loss_mask\": [0, 1]}\n", ":1: input_ids[1] is not a token id" },
        { "[1, 2]\n", ":1: expected an object" },
        { "{\"text\": \"x\"}\n", ":1: needs \"prompt\" and \"answer\"" },
        { "\n\n", "no examples" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        const char *p = write_tmp(cases[i].text);
        ftb_task *t = ftb_task_open(p, NULL, 1, err, sizeof err);
        cr_expect_null(t, "case %zu accepted", i);
        cr_expect(strstr(err, cases[i].want) && strstr(err, p), "case %zu: '%s' lacks '%s' or the path", i, err,
                  cases[i].want);
        cr_expect_null(strchr(err, '\n'), "one line: %s", err);
        ftb_task_close(t);
        unlink(p);
    }
    char err[512];
    cr_assert_null(ftb_task_open("/nonexistent/x.jsonl", NULL, 1, err, sizeof err));
    cr_assert(strstr(err, "/nonexistent/x.jsonl"), "%s", err);
    cr_assert_null(ftb_task_open("reasoning:steps=0", NULL, 1, err, sizeof err));
    cr_assert(strstr(err, "steps='0'"), "%s", err);
    cr_assert_null(ftb_task_open("reasoning:depth=1", NULL, 1, err, sizeof err));
    cr_assert(strstr(err, "unknown option 'depth'"), "%s", err);
    cr_assert_null(ftb_task_open("arith", NULL, 1, err, sizeof err));
    cr_assert(strstr(err, "unknown task 'arith'"), "%s", err);
}

/* ---- evaluation ------------------------------------------------------------------- */

/* A model that knows a chain of bigrams by construction: every block adds
 * nothing to the residual stream (o_proj and down_proj are zero), so the
 * final hidden state is the current token's embedding, a basis vector, and
 * the LM head maps basis vector i to the token that follows.  next[t] = -1:
 * no opinion (embedding row zero). */
static ftb_model *bigram_model(const int *next, int n_next)
{
    ftb_config c = byte_cfg();
    c.tie_embeddings = 0;
    char err[512];
    ftb_model *m = ftb_model_create(&c, 1, err, sizeof err);
    cr_assert(m, "%s", err);
    for (int l = 0; l < c.n_layers; l++) {
        memset(m->layers[l].wo.data, 0, sizeof(float) * (size_t)m->layers[l].wo.numel);
        memset(m->layers[l].w_down.data, 0, sizeof(float) * (size_t)m->layers[l].w_down.numel);
    }
    memset(m->embed.data, 0, sizeof(float) * (size_t)m->embed.numel);
    memset(m->lm_head.data, 0, sizeof(float) * (size_t)m->lm_head.numel);
    int basis = 0;
    for (int t = 0; t < n_next; t++) {
        if (next[t] < 0) continue;
        cr_assert_lt(basis, c.dim);
        m->embed.data[(size_t)t * c.dim + basis] = 1.0f;
        m->lm_head.data[(size_t)next[t] * c.dim + basis] = 1.0f;
        basis++;
    }
    return m;
}

Test(tasks, eval_scores_a_model_that_knows_the_answers_and_decodings_agree)
{
    /* Example 1: prompt 5 6, answer 7 8 '\n'.  Example 2: prompt 5 9,
     * answer 11 12 '\n'; the model maps 9->11->12 but 12->13, not '\n'. */
    const char *p = write_tmp("{\"input_ids\": [5, 6, 7, 8, 10], \"loss_mask\": [0, 0, 1, 1, 1]}\n"
                              "{\"input_ids\": [5, 9, 11, 12, 10], \"loss_mask\": [0, 0, 1, 1, 1]}\n");
    char err[512];
    ftb_task *t = ftb_task_open(p, NULL, 1, err, sizeof err);
    cr_assert(t, "%s", err);
    int next[16];
    for (int i = 0; i < 16; i++) next[i] = -1;
    next[6] = 7, next[7] = 8, next[8] = 10, next[9] = 11, next[11] = 12, next[12] = 13;
    ftb_model *m = bigram_model(next, 16);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    /* holdout every 10th line: with 2 lines, eval = all lines. */
    ftb_eval_result g, f;
    cr_assert_eq(ftb_eval_task(m, &o, t, 2, FTB_DECODE_GREEDY, &g, NULL, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ftb_eval_task(m, &o, t, 2, FTB_DECODE_TEACHER_FORCED, &f, NULL, 0, err, sizeof err), 0, "%s", err);
    cr_expect_eq(g.correct, 1, "greedy: the first example right, the second wrong at its last token");
    cr_expect_eq(f.correct, g.correct, "teacher forcing agrees with token-by-token decoding");
    cr_expect_eq(f.loss, g.loss);
    cr_expect_eq(g.answer_tokens, 6);
    /* A file's eval split is not cycled: asking for 10 scores the 2. */
    cr_assert_eq(ftb_eval_task(m, &o, t, 10, FTB_DECODE_GREEDY, &g, NULL, 0, err, sizeof err), 0);
    cr_expect_eq(g.examples, 2);
    /* One example only: 1.0. */
    cr_assert_eq(ftb_eval_task(m, &o, t, 1, FTB_DECODE_GREEDY, &g, NULL, 0, err, sizeof err), 0);
    cr_expect_eq(g.accuracy, 1.0);
    ftb_model_free(m);
    ftb_task_close(t);
    unlink(p);
}

/* A hook on the last block's down_proj that shifts the residual stream:
 * if generation goes through the hooks, the model stops knowing the
 * answers. */
static void push_forward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *y, void **saved)
{
    (void)self, (void)x, (void)saved;
    for (int64_t i = 0; i < (int64_t)c->B * c->T * c->out; i++)
        y[i] -= 100.0f; /* every known token's logit now negative: id 0 wins */
}
static void push_backward(ftb_adapter *self, const ftb_linear_ctx *c, const float *x, float *dy, float *dx, void *saved)
{
    (void)self, (void)c, (void)x, (void)dy, (void)dx, (void)saved;
}

Test(tasks, generation_goes_through_the_hooks)
{
    const char *p = write_tmp("{\"input_ids\": [5, 6, 7, 8, 10], \"loss_mask\": [0, 0, 1, 1, 1]}\n");
    char err[512];
    ftb_task *t = ftb_task_open(p, NULL, 1, err, sizeof err);
    cr_assert(t, "%s", err);
    int next[16];
    for (int i = 0; i < 16; i++) next[i] = -1;
    next[6] = 7, next[7] = 8, next[8] = 10;
    ftb_model *m = bigram_model(next, 16);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    ftb_eval_result r;
    cr_assert_eq(ftb_eval_task(m, &o, t, 1, FTB_DECODE_GREEDY, &r, NULL, 0, err, sizeof err), 0);
    cr_assert_eq(r.accuracy, 1.0);
    static const ftb_adapter_ops ops = { FTB_ADAPTER_OPS_VERSION, push_forward, push_backward, NULL };
    ftb_adapter a = { &ops, 0, NULL };
    ftb_attach_adapter(m, m->cfg.n_layers - 1, FTB_LIN_DOWN, &a);
    cr_assert_eq(ftb_eval_task(m, &o, t, 1, FTB_DECODE_GREEDY, &r, NULL, 0, err, sizeof err), 0);
    cr_expect_eq(r.accuracy, 0.0, "the hook changes what is generated");
    int32_t out[4];
    const int32_t prompt[2] = { 5, 6 };
    cr_assert_eq(ftb_generate_greedy(m, &o, prompt, 2, 3, NULL, 0, out, err, sizeof err), 3);
    cr_expect_neq(out[0], 7);
    ftb_attach_adapter(m, m->cfg.n_layers - 1, FTB_LIN_DOWN, NULL);
    cr_assert_eq(ftb_generate_greedy(m, &o, prompt, 2, 3, NULL, 0, out, err, sizeof err), 3);
    cr_expect(out[0] == 7 && out[1] == 8 && out[2] == 10);
    const int32_t stop[1] = { 8 };
    cr_expect_eq(ftb_generate_greedy(m, &o, prompt, 2, 3, stop, 1, out, err, sizeof err), 2, "stops after the stop");
    ftb_model_free(m);
    ftb_task_close(t);
    unlink(p);
}

Test(tasks, random_model_scores_about_zero_and_decodings_agree)
{
    ftb_config c = byte_cfg();
    char err[512];
    ftb_model *m = ftb_model_create(&c, 3, err, sizeof err);
    cr_assert(m);
    ftb_task *t = ftb_task_open("reasoning", NULL, 1, err, sizeof err);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    ftb_eval_result g, f;
    cr_assert_eq(ftb_eval_task(m, &o, t, 40, FTB_DECODE_GREEDY, &g, NULL, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ftb_eval_task(m, &o, t, 40, FTB_DECODE_TEACHER_FORCED, &f, NULL, 0, err, sizeof err), 0);
    cr_expect_leq(g.accuracy, 0.05);
    cr_expect_eq(g.correct, f.correct);
    cr_expect(fabs(g.loss - log(320.0)) < 0.5, "an untrained model is near uniform: loss %g", g.loss);
    ftb_model_free(m);
    ftb_task_close(t);
}

Test(tasks, training_lowers_the_held_out_loss)
{
    ftb_config c = byte_cfg();
    char err[512];
    ftb_model *m = ftb_model_create(&c, 3, err, sizeof err);
    cr_assert(m);
    ftb_task *t = ftb_task_open("understanding:words=8", NULL, 1, err, sizeof err);
    ftb_dataset *d = ftb_dataset_open("task:understanding:words=8", c.vocab_size, 1, err, sizeof err);
    cr_assert(t && d, "%s", err);
    ftb_run_opts o;
    ftb_run_opts_default(&o);
    ftb_eval_result before, after;
    cr_assert_eq(ftb_eval_task(m, &o, t, 30, FTB_DECODE_TEACHER_FORCED, &before, NULL, 0, err, sizeof err), 0);
    ftb_model_set_trainable(m, 1);
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0);
    ftb_adamw opt;
    cr_assert_eq(ftb_adamw_init(&opt, m, NULL, 0, 1e-2f, 0.0f, err, sizeof err), 0);
    ftb_session s = { 0 };
    s.model = m;
    s.run = o;
    int T = (ftb_task_max_tokens(t) + 7) / 8 * 8;
    for (int i = 0; i < 30; i++) {
        ftb_batch b;
        ftb_step_result r;
        cr_assert_eq(ftb_dataset_next(d, 8, T, &b, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ftb_backprop_step(&s, &opt, &b, &r, err, sizeof err), 0, "%s", err);
    }
    cr_assert_eq(ftb_eval_task(m, &o, t, 30, FTB_DECODE_TEACHER_FORCED, &after, NULL, 0, err, sizeof err), 0);
    cr_expect_lt(after.loss, 0.5 * before.loss, "held-out answer loss %g -> %g", before.loss, after.loss);
    ftb_adamw_free(&opt);
    ftb_dataset_close(d);
    ftb_task_close(t);
    ftb_model_free(m);
}

/* ---- the commands ------------------------------------------------------------------- */

static const char *bin(void) { return getenv("FTBENCH_BIN"); }

/* Runs `ftbench ARGS` (a shell string); stderr into *errout (malloc'd). */
static int run_bin(const char *args, char **errout)
{
    char cmd[4096], ep[] = "/tmp/ftbtask-err-XXXXXX";
    int fd = mkstemp(ep);
    cr_assert(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof cmd, "FTBENCH_BLAS_AUTO=0 ASAN_OPTIONS=detect_leaks=0 %s %s > /dev/null 2> %s", bin(), args,
             ep);
    int st = system(cmd);
    FILE *f = fopen(ep, "r");
    char *buf = calloc(1, 65536);
    if (f) {
        size_t n = fread(buf, 1, 65535, f);
        buf[n] = 0;
        fclose(f);
    }
    unlink(ep);
    *errout = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

Test(tasks, commands_report_bad_input_in_one_line)
{
    if (!bin()) cr_skip_test("FTBENCH_BIN is set by make test");
    const char *p = write_tmp("{\"prompt\": \"a\", \"answer\": \"b\"}\n{\"prompt\": \"a\", \"answer\": 5}\n");
    char args[512], *e;
    snprintf(args, sizeof args, "eval --task %s --model tiny-byte", p);
    cr_expect_eq(run_bin(args, &e), 2);
    cr_expect(strstr(e, p) && strstr(e, ":2:") && strchr(e, '\n') == e + strlen(e) - 1, "one line: %s", e);
    free(e);
    unlink(p);
    cr_expect_eq(run_bin("eval --task reasoning --model tiny", &e), 2);
    cr_expect(strstr(e, "vocabulary of 256"), "%s", e);
    free(e);
    cr_expect_eq(run_bin("train --method full --task nope --model tiny-byte", &e), 2);
    cr_expect(strstr(e, "unknown task 'nope'"), "%s", e);
    free(e);
    cr_expect_eq(run_bin("pretrain --out /tmp/x --model nope", &e), 2);
    cr_expect(strstr(e, "unknown zoo shape 'nope'"), "%s", e);
    free(e);
}

Test(tasks, train_records_accuracy_beside_memory, .timeout = 300)
{
    const char *meth = getenv("FTBENCH_METHODS");
    if (!bin() || !meth) cr_skip_test("FTBENCH_BIN and FTBENCH_METHODS are set by make test");
    char dir[] = "/tmp/ftbtask-train-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char args[1024], *e;
    snprintf(args, sizeof args,
             "train --method lora --task understanding:words=8 --model tiny-byte --steps 20 --batch 8 --lr 1e-2 "
             "--eval-every 10 --eval-examples 20 --decode teacher-forced --threads 1 --quiet --no-timeline "
             "--methods-dir %s --out %s --run-id t",
             meth, dir);
    cr_assert_eq(run_bin(args, &e), 0, "%s", e);
    free(e);
    char path[512];
    snprintf(path, sizeof path, "%s/host/t/results.jsonl", dir);
    json_error_t je;
    json_t *rec = json_load_file(path, 0, &je);
    cr_assert(rec, "%s: %s", path, je.text);
    json_t *ev = json_object_get(rec, "eval"), *hist = json_object_get(rec, "eval_history");
    cr_assert_eq(json_array_size(hist), 3, "evaluations at steps 0, 10, 20");
    cr_expect_eq(json_integer_value(json_object_get(ev, "step")), 20);
    cr_expect_str_eq(json_string_value(json_object_get(ev, "metric")), "exact_match");
    cr_expect(json_is_number(json_object_get(ev, "accuracy")));
    double l0 = json_number_value(json_object_get(json_array_get(hist, 0), "loss"));
    double l2 = json_number_value(json_object_get(json_array_get(hist, 2), "loss"));
    cr_expect_lt(l2, l0, "LoRA lowers the held-out loss: %g -> %g", l0, l2);
    cr_expect(json_integer_value(json_object_get(json_object_get(rec, "memory"), "peak_rss_bytes")) > 0);
    cr_expect_eq(json_array_size(json_object_get(rec, "loss_per_step")), 20);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(rec, "train"), "task")),
                     "understanding:words=8");
    json_decref(rec);
    snprintf(args, sizeof args, "rm -rf %s", dir);
    cr_expect_eq(system(args), 0);
}

/* ---- tokenizers ----------------------------------------------------------------------- */

Test(tasks, bpe_matches_the_reference_tokenization)
{
    char err[512];
    ftb_tokenizer *t = ftb_tokenizer_open("tests/fixtures/bpe/tokenizer.json", err, sizeof err);
    cr_assert(t, "%s", err);
    cr_assert_str_eq(ftb_tokenizer_kind(t), "bpe");
    FILE *f = fopen("tests/fixtures/bpe/expected.jsonl", "r");
    cr_assert(f);
    char *line = NULL;
    size_t cap = 0;
    int lines = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j);
        const char *text = json_string_value(json_object_get(j, "text"));
        json_t *want = json_object_get(j, "ids");
        int32_t *ids = NULL;
        int n = 0, c = 0;
        cr_assert_eq(ftb_tokenizer_encode(t, text, strlen(text), &ids, &n, &c, err, sizeof err), 0, "%s", err);
        int same = n == (int)json_array_size(want);
        for (int i = 0; same && i < n; i++) same = ids[i] == json_integer_value(json_array_get(want, (size_t)i));
        cr_expect(same, "'%s': %d ids, the reference %zu", text, n, json_array_size(want));
        /* Decoding gives the text back. */
        char back[4096];
        ftb_tokenizer_decode(t, ids, n, back, sizeof back);
        cr_expect_str_eq(back, text);
        free(ids);
        json_decref(j);
        lines++;
    }
    free(line);
    fclose(f);
    cr_assert_geq(lines, 20);
    /* A task through the BPE: lengths are in its tokens. */
    ftb_task *pk = ftb_task_open("passkey:len=300,depth=0.3", t, 1, err, sizeof err);
    cr_assert(pk, "%s", err);
    ftb_example x;
    cr_assert_eq(ftb_task_example(pk, FTB_SPLIT_TRAIN, 0, &x, err, sizeof err), 0, "%s", err);
    cr_expect_eq(x.n_prompt + x.n_answer, 300);
    cr_expect_gt(ftb_task_vocab_needed(pk), 150000);
    ftb_task_close(pk);
    ftb_tokenizer_close(t);
    /* The tokenizer named in the spec (what train's cells open). */
    pk = ftb_task_open("reasoning@tests/fixtures/bpe/tokenizer.json", NULL, 1, err, sizeof err);
    cr_assert(pk, "%s", err);
    cr_expect_str_eq(ftb_tokenizer_kind(ftb_task_tokenizer(pk)), "bpe");
    cr_assert_eq(ftb_task_example(pk, FTB_SPLIT_TRAIN, 0, &x, err, sizeof err), 0, "%s", err);
    cr_expect_lt(x.n_prompt, 17, "BPE merges bytes: %d tokens", x.n_prompt);
    ftb_task_close(pk);
    cr_assert_null(ftb_dataset_open("task:reasoning@tests/fixtures/bpe/tokenizer.json", 320, 1, err, sizeof err));
    cr_expect(strstr(err, "vocabulary of 151669"), "%s", err);
    cr_assert_null(ftb_task_open("reasoning@/nonexistent.json", NULL, 1, err, sizeof err));
    cr_expect(strstr(err, "/nonexistent.json"), "%s", err);
}

static const char *write_json_tmp(const char *text)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/ftbtok-XXXXXX.json");
    int fd = mkstemps(tmp_path, 5);
    cr_assert(fd >= 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return tmp_path;
}

Test(tasks, malformed_tokenizer_json_is_one_clear_line)
{
    /* The 256 byte characters of a valid vocabulary, as JSON members. */
    static char bytes_vocab[8192];
    size_t k = 0;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)n++;
        k += (size_t)snprintf(bytes_vocab + k, sizeof bytes_vocab - k, "%s\"\\u%04x\": %d", b ? ", " : "", cp, b);
    }
    char good[9000];
    snprintf(good, sizeof good,
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {%s, \"ab\": 256}, \"merges\": [\"a b\"]}, "
             "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}}",
             bytes_vocab);
    char err[512];
    ftb_tokenizer *t = ftb_tokenizer_open(write_json_tmp(good), err, sizeof err);
    cr_assert(t, "the minimal tokenizer loads: %s", err);
    int32_t *ids = NULL;
    int ni = 0, cap = 0;
    cr_assert_eq(ftb_tokenizer_encode(t, "abc ab", 6, &ids, &ni, &cap, err, sizeof err), 0);
    cr_expect_eq(ni, 4, "ab c ␠ab -> 'ab' 'c' ' ' ... : %d", ni);
    cr_expect_eq(ids[0], 256);
    free(ids);
    ftb_tokenizer_close(t);
    unlink(tmp_path);

    char bad[6][9000];
    const char *want[6] = { "not valid JSON",
                            "no \"model\" object",
                            "model type 'WordPiece'",
                            "byte 0x00 has no token",
                            "uses or makes a token not in the vocabulary",
                            "Split behavior 'Removed'" };
    snprintf(bad[0], sizeof bad[0], "{\"model\": {\"vocab\": {");
    snprintf(bad[1], sizeof bad[1], "{\"vocab\": {}}");
    snprintf(bad[2], sizeof bad[2], "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}, \"merges\": []}}");
    snprintf(bad[3], sizeof bad[3],
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
             "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
    snprintf(bad[4], sizeof bad[4],
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {%s}, \"merges\": [\"a b\"]}, "
             "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
             bytes_vocab);
    snprintf(bad[5], sizeof bad[5],
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {%s}, \"merges\": []}, \"pre_tokenizer\": {\"type\": "
             "\"Split\", \"pattern\": {\"Regex\": \"x\"}, \"behavior\": \"Removed\"}}",
             bytes_vocab);
    for (int i = 0; i < 6; i++) {
        const char *p = write_json_tmp(bad[i]);
        cr_expect_null(ftb_tokenizer_open(p, err, sizeof err), "case %d accepted", i);
        cr_expect(strstr(err, want[i]) && strstr(err, p), "case %d: '%s' lacks '%s' or the path", i, err, want[i]);
        cr_expect_null(strchr(err, '\n'), "one line: %s", err);
        unlink(p);
    }
    cr_assert_null(ftb_tokenizer_open("/nonexistent/tokenizer.json", err, sizeof err));
    cr_assert(strstr(err, "/nonexistent/tokenizer.json"), "%s", err);
}
