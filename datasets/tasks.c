/*
 * tasks.c — the task interface: specs, seeded examples, batches with loss
 * on the answer only.  The generators live in task_*.c, instruction data
 * in task_jsonl.c.  See tasks.h.
 */
#include "tasks.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { TASK_REASONING, TASK_UNDERSTANDING, TASK_PASSKEY, TASK_JSONL } task_kind;
static const char *const kind_names[] = { "reasoning", "understanding", "passkey", "jsonl" };

struct ftb_task {
    task_kind kind;
    char spec[512];
    uint64_t seed;
    const ftb_tokenizer *tok;
    ftb_tokenizer *own_tok;
    ftb_reasoning_opts ro;
    ftb_understanding_opts uo;
    ftb_passkey_opts po;
    ftb_instr *instr;
    /* the current example */
    int32_t *ids;
    int n, cap;
    ftb_text prompt, answer;
    int32_t *stop;
    int n_stop, cap_stop;
};

/* ---- small shared helpers ------------------------------------------------ */

void ftb_text_clear(ftb_text *x)
{
    x->n = 0;
    if (x->s) x->s[0] = 0;
}

void ftb_text_printf(ftb_text *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0) return;
    if (x->n + (size_t)need + 1 > x->cap) {
        size_t c = x->cap ? x->cap : 128;
        while (c < x->n + (size_t)need + 1) c *= 2;
        char *g = realloc(x->s, c);
        if (!g) abort(); /* a few bytes of prompt text: nothing sensible remains */
        x->s = g;
        x->cap = c;
    }
    va_start(ap, fmt);
    vsnprintf(x->s + x->n, (size_t)need + 1, fmt, ap);
    va_end(ap);
    x->n += (size_t)need;
}

void ftb_text_free(ftb_text *x)
{
    free(x->s);
    memset(x, 0, sizeof *x);
}

uint64_t ftb_task_rand(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ULL;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t ftb_task_below(uint64_t *s, uint64_t n) { return n ? ftb_task_rand(s) % n : 0; }

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- specs ---------------------------------------------------------------- */

static int parse_int(const char *task, const char *key, const char *v, long lo, long hi, int *out, char *err,
                     size_t errlen)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return errf(err, errlen, "task %s: %s='%s' must be an integer in %ld..%ld", task, key, v, lo, hi);
    *out = (int)x;
    return 0;
}

/* Options "k=v,k=v" of a generated task. */
static int parse_options(ftb_task *t, const char *opts, char *err, size_t errlen)
{
    const char *name = kind_names[t->kind];
    char buf[512];
    snprintf(buf, sizeof buf, "%s", opts);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) return errf(err, errlen, "task %s: option '%s' is not key=value", name, kv);
        *eq = 0;
        const char *k = kv, *v = eq + 1;
        int rc = 1;
        if (t->kind == TASK_REASONING) {
            if (!strcmp(k, "steps"))
                rc = parse_int(name, k, v, 1, 15, &t->ro.steps, err, errlen);
            else if (!strcmp(k, "digits"))
                rc = parse_int(name, k, v, 1, 4, &t->ro.digits, err, errlen);
            else
                return errf(err, errlen, "task reasoning: unknown option '%s' (steps, digits)", k);
        } else if (t->kind == TASK_UNDERSTANDING) {
            if (!strcmp(k, "labels"))
                rc = parse_int(name, k, v, 2, 4, &t->uo.labels, err, errlen);
            else if (!strcmp(k, "words"))
                rc = parse_int(name, k, v, 4, 1024, &t->uo.words, err, errlen);
            else
                return errf(err, errlen, "task understanding: unknown option '%s' (labels, words)", k);
        } else if (t->kind == TASK_PASSKEY) {
            if (!strcmp(k, "len")) {
                rc = parse_int(name, k, v, 16, 1 << 20, &t->po.len, err, errlen);
            } else if (!strcmp(k, "digits")) {
                rc = parse_int(name, k, v, 1, 9, &t->po.digits, err, errlen);
            } else if (!strcmp(k, "depth")) {
                if (!strcmp(v, "random")) {
                    t->po.depth = -1;
                    rc = 0;
                } else {
                    char *end;
                    errno = 0;
                    double d = strtod(v, &end);
                    if (errno || end == v || *end || !(d >= 0 && d <= 1))
                        return errf(err, errlen, "task passkey: depth='%s' must be in 0..1 or 'random'", v);
                    t->po.depth = d;
                    rc = 0;
                }
            } else {
                return errf(err, errlen, "task passkey: unknown option '%s' (len, depth, digits)", k);
            }
        } else {
            return errf(err, errlen, "task %s: takes no options", name);
        }
        if (rc) return -1;
    }
    return 0;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

ftb_task *ftb_task_open(const char *spec, const ftb_tokenizer *tok, uint64_t seed, char *err, size_t errlen)
{
    if (!spec || !*spec) {
        errf(err, errlen, "empty task name (reasoning, understanding, passkey, or a .jsonl file)");
        return NULL;
    }
    ftb_task *t = calloc(1, sizeof *t);
    if (!t) {
        errf(err, errlen, "task: out of memory");
        return NULL;
    }
    snprintf(t->spec, sizeof t->spec, "%s", spec);
    t->seed = seed;
    /* SPEC@TOKENIZER: the task's own tokenizer (a tokenizer.json), so that
     * a spec alone says everything (train's cells open tasks from it). */
    char base[512];
    const char *at = strrchr(spec, '@');
    if (at) {
        snprintf(base, sizeof base, "%.*s", (int)(at - spec), spec);
        spec = base;
        if (tok) {
            errf(err, errlen, "task %s: a tokenizer is given twice", t->spec);
            free(t);
            return NULL;
        }
        t->own_tok = ftb_tokenizer_open(at + 1, err, errlen);
        if (!t->own_tok) {
            free(t);
            return NULL;
        }
        tok = t->own_tok;
    }
    t->ro = (ftb_reasoning_opts){ 2, 1 };
    t->uo = (ftb_understanding_opts){ 4, 24 };
    t->po = (ftb_passkey_opts){ 512, 0.5, 5 };
    if (!tok) {
        t->own_tok = ftb_tokenizer_open("byte", err, errlen);
        if (!t->own_tok) {
            free(t);
            return NULL;
        }
        tok = t->own_tok;
    }
    t->tok = tok;
    const char *colon = strchr(spec, ':');
    size_t nlen = colon ? (size_t)(colon - spec) : strlen(spec);
    int rc = 0;
    if (!strncmp(spec, "jsonl:", 6) || ends_with(spec, ".jsonl")) {
        t->kind = TASK_JSONL;
        const char *path = strncmp(spec, "jsonl:", 6) ? spec : spec + 6;
        t->instr = ftb_instr_load(path, tok, 10, err, errlen);
        rc = t->instr ? 0 : -1;
    } else {
        if (nlen == 9 && !strncmp(spec, "reasoning", 9))
            t->kind = TASK_REASONING;
        else if (nlen == 13 && !strncmp(spec, "understanding", 13))
            t->kind = TASK_UNDERSTANDING;
        else if ((nlen == 7 && !strncmp(spec, "passkey", 7)) || (nlen == 12 && !strncmp(spec, "long-context", 12)))
            t->kind = TASK_PASSKEY;
        else
            rc = errf(err, errlen,
                      "unknown task '%.*s' (reasoning, understanding, passkey | long-context, or a .jsonl file)",
                      (int)nlen, spec);
        if (rc == 0 && colon) rc = parse_options(t, colon + 1, err, errlen);
    }
    if (rc == 0 && ftb_tokenizer_encode(tok, "\n", 1, &t->stop, &t->n_stop, &t->cap_stop, err, errlen)) rc = -1;
    if (rc) {
        ftb_task_close(t);
        return NULL;
    }
    return t;
}

void ftb_task_close(ftb_task *t)
{
    if (!t) return;
    ftb_instr_free(t->instr);
    ftb_tokenizer_close(t->own_tok);
    ftb_text_free(&t->prompt);
    ftb_text_free(&t->answer);
    free(t->ids);
    free(t->stop);
    free(t);
}

const char *ftb_task_kind(const ftb_task *t) { return kind_names[t->kind]; }
const char *ftb_task_spec(const ftb_task *t) { return t->spec; }
const ftb_tokenizer *ftb_task_tokenizer(const ftb_task *t) { return t->tok; }

int64_t ftb_task_count(const ftb_task *t, ftb_split split)
{
    return t->kind == TASK_JSONL ? ftb_instr_count(t->instr, split) : -1;
}

int ftb_task_max_tokens(const ftb_task *t)
{
    switch (t->kind) {
    case TASK_REASONING: {
        /* "Compute " + parentheses + operands + operators + " =", and
         * " -<value>\n" with |value| < 10^(digits·(steps+1)). */
        int s = t->ro.steps, d = t->ro.digits;
        return 8 + (s - 1) + (s + 1) * d + s + (s - 1) + 2 + 3 + d * (s + 1);
    }
    case TASK_UNDERSTANDING:
        /* "Passage:" + words of at most 10 letters + "\nTopic:" + " science\n" */
        return 8 + t->uo.words * 11 + 7 + 9;
    case TASK_PASSKEY: return t->po.len;
    case TASK_JSONL: return ftb_instr_max_tokens(t->instr);
    }
    return 0;
}

int ftb_task_vocab_needed(const ftb_task *t)
{
    return t->kind == TASK_JSONL ? ftb_instr_vocab_needed(t->instr) : ftb_tokenizer_vocab(t->tok);
}

int ftb_task_stop(const ftb_task *t, const int32_t **ids)
{
    *ids = t->stop;
    return t->n_stop;
}

/* ---- examples --------------------------------------------------------------- */

static uint64_t example_stream(const ftb_task *t, ftb_split split, int64_t index)
{
    uint64_t s = t->seed ^ 0x7a5c0ffee1234567ULL;
    uint64_t a = ftb_task_rand(&s) ^ ((uint64_t)split << 62) ^ (uint64_t)index;
    return ftb_task_rand(&a);
}

int ftb_task_example(ftb_task *t, ftb_split split, int64_t index, ftb_example *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->needle_pos = -1;
    if (index < 0) return errf(err, errlen, "task %s: example index %lld is negative", t->spec, (long long)index);
    if (t->kind == TASK_JSONL) {
        int64_t n = ftb_instr_count(t->instr, split);
        if (n <= 0)
            return errf(err, errlen, "task %s: no %s examples", t->spec, split == FTB_SPLIT_EVAL ? "eval" : "train");
        ftb_instr_get(t->instr, split, index % n, &out->tokens, &out->n_prompt, &out->n_answer);
        return 0;
    }
    uint64_t rng = example_stream(t, split, index);
    t->n = 0;
    if (t->kind == TASK_PASSKEY) {
        int np = 0, pos = -1;
        if (ftb_passkey_generate(&t->po, t->tok, &rng, &t->ids, &t->n, &t->cap, &np, &pos, err, errlen) < 0) return -1;
        out->tokens = t->ids;
        out->n_prompt = np;
        out->n_answer = t->n - np;
        out->needle_pos = pos;
        return 0;
    }
    if (t->kind == TASK_REASONING)
        ftb_reasoning_generate(&t->ro, &rng, &t->prompt, &t->answer);
    else
        ftb_understanding_generate(&t->uo, &rng, &t->prompt, &t->answer);
    if (ftb_tokenizer_encode(t->tok, t->prompt.s, t->prompt.n, &t->ids, &t->n, &t->cap, err, errlen)) return -1;
    int np = t->n;
    if (ftb_tokenizer_encode(t->tok, t->answer.s, t->answer.n, &t->ids, &t->n, &t->cap, err, errlen)) return -1;
    out->tokens = t->ids;
    out->n_prompt = np;
    out->n_answer = t->n - np;
    return 0;
}

int ftb_task_batch(ftb_task *t, ftb_split split, int64_t index, int B, int T, int all_tokens, int32_t *tokens,
                   int32_t *targets, char *err, size_t errlen)
{
    if (B < 1 || T < 2) return errf(err, errlen, "task batch %dx%d: B must be >= 1 and T >= 2", B, T);
    for (int r = 0; r < B; r++) {
        int64_t ex_index = index * B + r;
        ftb_example ex;
        if (ftb_task_example(t, split, ex_index, &ex, err, errlen)) return -1;
        int n = ex.n_prompt + ex.n_answer;
        if (n > T)
            return errf(err, errlen,
                        "task %s: example %lld is %d tokens (prompt %d + answer %d), longer than the sequence "
                        "length %d: give a longer --seq",
                        t->spec, (long long)ex_index, n, ex.n_prompt, ex.n_answer, T);
        int32_t *tok = tokens + (size_t)r * T, *tgt = targets + (size_t)r * T;
        for (int i = 0; i < T; i++) {
            tok[i] = i < n ? ex.tokens[i] : 0;
            int next_is_answer = i + 1 >= ex.n_prompt && i + 1 < n;
            int next_is_real = i + 1 < n;
            tgt[i] = (all_tokens ? next_is_real : next_is_answer) ? ex.tokens[i + 1] : FTB_IGNORE_INDEX;
        }
    }
    return 0;
}
