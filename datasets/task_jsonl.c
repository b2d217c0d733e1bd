/*
 * task_jsonl.c — instruction data as JSON Lines, through the task interface.
 *
 * One example per line, either text (tokenized with the task's tokenizer):
 *     {"prompt": "Translate: chat", "answer": " cat\n"}
 * or pre-tokenized, the answer being the span where the loss mask is 1:
 *     {"input_ids": [12, 7, 99, 4], "loss_mask": [0, 0, 1, 1]}
 * The mask must be one run of 1s (prompt first, then the answer; zeros
 * after it are padding and dropped).  The whole file is read and checked at
 * load, so a bad line is one error naming the file and the line.
 */
#include "tasks.h"
#include "input_file.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ftb_instr {
    int32_t *ids; /* every example's tokens, concatenated            */
    int64_t n_ids, cap_ids;
    int64_t *off; /* example i: ids[off[i] .. off[i] + np[i] + na[i]) */
    int *np, *na;
    int64_t n_ex, cap_ex;
    int64_t *split_idx[2]; /* example numbers of each split                  */
    int64_t split_n[2];
    int vocab_needed;
};

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* One line, whatever the input: jansson quotes the text near an error,
     * which may hold a newline or other control characters. */
    for (char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
    return -1;
}

static int push_ids(ftb_instr *d, const int32_t *v, int64_t n)
{
    if (d->n_ids + n > d->cap_ids) {
        int64_t c = d->cap_ids ? d->cap_ids : 4096;
        while (c < d->n_ids + n) c *= 2;
        int32_t *g = realloc(d->ids, (size_t)c * sizeof *g);
        if (!g) return -1;
        d->ids = g;
        d->cap_ids = c;
    }
    memcpy(d->ids + d->n_ids, v, (size_t)n * sizeof *v);
    d->n_ids += n;
    return 0;
}

static int push_example(ftb_instr *d, int64_t off, int np, int na)
{
    if (d->n_ex == d->cap_ex) {
        int64_t c = d->cap_ex ? 2 * d->cap_ex : 64;
        int64_t *o = realloc(d->off, (size_t)c * sizeof *o);
        if (o) d->off = o;
        int *p = realloc(d->np, (size_t)c * sizeof *p);
        if (p) d->np = p;
        int *a = realloc(d->na, (size_t)c * sizeof *a);
        if (a) d->na = a;
        if (!o || !p || !a) return -1;
        d->cap_ex = c;
    }
    d->off[d->n_ex] = off;
    d->np[d->n_ex] = np;
    d->na[d->n_ex] = na;
    d->n_ex++;
    return 0;
}

/* One line: 0, or -1 with err. */
static int parse_line(ftb_instr *d, const ftb_tokenizer *tok, json_t *obj, const char *path, int line, char *err,
                      size_t errlen)
{
    if (!json_is_object(obj))
        return errf(err, errlen,
                    "%s:%d: expected an object with \"prompt\" and \"answer\" (or \"input_ids\" and "
                    "\"loss_mask\")",
                    path, line);
    json_t *p = json_object_get(obj, "prompt"), *a = json_object_get(obj, "answer");
    json_t *ids = json_object_get(obj, "input_ids"), *mask = json_object_get(obj, "loss_mask");
    int64_t off = d->n_ids;
    if (p || a) {
        if (!json_is_string(p) || !json_is_string(a))
            return errf(err, errlen, "%s:%d: \"prompt\" and \"answer\" must both be strings", path, line);
        if (!json_string_length(p) || !json_string_length(a))
            return errf(err, errlen, "%s:%d: empty \"%s\"", path, line, json_string_length(p) ? "answer" : "prompt");
        int32_t *buf = NULL;
        int n = 0, cap = 0;
        if (ftb_tokenizer_encode(tok, json_string_value(p), json_string_length(p), &buf, &n, &cap, err, errlen)) {
            free(buf);
            return -1;
        }
        int np = n;
        if (ftb_tokenizer_encode(tok, json_string_value(a), json_string_length(a), &buf, &n, &cap, err, errlen)) {
            free(buf);
            return -1;
        }
        int rc = push_ids(d, buf, n) || push_example(d, off, np, n - np);
        free(buf);
        if (rc) return errf(err, errlen, "%s: out of memory", path);
        int tv = ftb_tokenizer_vocab(tok);
        if (tv > d->vocab_needed) d->vocab_needed = tv;
        return 0;
    }
    if (!ids || !mask)
        return errf(err, errlen, "%s:%d: needs \"prompt\" and \"answer\", or \"input_ids\" and \"loss_mask\"", path,
                    line);
    if (!json_is_array(ids) || !json_is_array(mask))
        return errf(err, errlen, "%s:%d: \"input_ids\" and \"loss_mask\" must be arrays", path, line);
    size_t n = json_array_size(ids);
    if (json_array_size(mask) != n)
        return errf(err, errlen, "%s:%d: \"loss_mask\" has %zu entries, \"input_ids\" %zu", path, line,
                    json_array_size(mask), n);
    int first = -1, last = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ids, i), *m = json_array_get(mask, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24))
            return errf(err, errlen, "%s:%d: input_ids[%zu] is not a token id (an integer in 0..16777215)", path, line,
                        i);
        json_int_t mv = json_is_boolean(m) ? json_is_true(m) : json_is_integer(m) ? json_integer_value(m) : -1;
        if (mv != 0 && mv != 1) return errf(err, errlen, "%s:%d: loss_mask[%zu] is not 0 or 1", path, line, i);
        if (mv) {
            if (first < 0)
                first = (int)i;
            else if (last != (int)i - 1)
                return errf(err, errlen,
                            "%s:%d: loss_mask must be one run of 1s (the answer after the prompt); "
                            "a second run starts at %zu",
                            path, line, i);
            last = (int)i;
        }
    }
    if (first < 0) return errf(err, errlen, "%s:%d: loss_mask has no 1: no answer to learn or score", path, line);
    if (first == 0)
        return errf(err, errlen, "%s:%d: loss_mask starts with 1: the answer needs a prompt before it", path, line);
    for (int i = 0; i <= last; i++) {
        int32_t v = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
        if (push_ids(d, &v, 1)) return errf(err, errlen, "%s: out of memory", path);
        if (v + 1 > d->vocab_needed) d->vocab_needed = v + 1;
    }
    if (push_example(d, off, first, last + 1 - first)) return errf(err, errlen, "%s: out of memory", path);
    return 0;
}

ftb_instr *ftb_instr_load(const char *path, const ftb_tokenizer *tok, int holdout, char *err, size_t errlen)
{
    char why[512];
    FILE *f = ftb_input_fopen(path, why, sizeof why);
    if (!f) {
        errf(err, errlen, "instruction data %s", why);
        return NULL;
    }
    ftb_instr *d = calloc(1, sizeof *d);
    char *line = NULL;
    size_t linecap = 0;
    int lineno = 0, rc = d ? 0 : errf(err, errlen, "%s: out of memory", path);
    while (rc == 0 && getline(&line, &linecap, f) >= 0) {
        lineno++;
        const char *s = line;
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
        if (!*s) continue;
        json_error_t je;
        json_t *obj = json_loads(s, JSON_REJECT_DUPLICATES, &je);
        if (!obj)
            rc = errf(err, errlen, "%s:%d: not valid JSON: %s (column %d)", path, lineno, je.text, je.column);
        else
            rc = parse_line(d, tok, obj, path, lineno, err, errlen);
        json_decref(obj);
    }
    free(line);
    if (rc == 0 && ferror(f)) rc = errf(err, errlen, "cannot read instruction data %s: %s", path, strerror(errno));
    fclose(f);
    if (rc == 0 && d->n_ex == 0) rc = errf(err, errlen, "%s: no examples (empty file)", path);
    if (rc == 0) {
        for (int s = 0; s < 2; s++) d->split_idx[s] = malloc((size_t)d->n_ex * sizeof(int64_t));
        if (!d->split_idx[0] || !d->split_idx[1]) rc = errf(err, errlen, "%s: out of memory", path);
        for (int64_t i = 0; rc == 0 && i < d->n_ex; i++) {
            int held = holdout > 0 && (i + 1) % holdout == 0;
            if (held || holdout <= 0) d->split_idx[FTB_SPLIT_EVAL][d->split_n[FTB_SPLIT_EVAL]++] = i;
            if (!held) d->split_idx[FTB_SPLIT_TRAIN][d->split_n[FTB_SPLIT_TRAIN]++] = i;
        }
        /* Too few lines to hold one out: evaluate on the training lines
         * rather than on nothing. */
        if (rc == 0 && d->split_n[FTB_SPLIT_EVAL] == 0)
            for (int64_t i = 0; i < d->n_ex; i++) d->split_idx[FTB_SPLIT_EVAL][d->split_n[FTB_SPLIT_EVAL]++] = i;
    }
    if (rc) {
        ftb_instr_free(d);
        return NULL;
    }
    return d;
}

void ftb_instr_free(ftb_instr *d)
{
    if (!d) return;
    free(d->ids);
    free(d->off);
    free(d->np);
    free(d->na);
    free(d->split_idx[0]);
    free(d->split_idx[1]);
    free(d);
}

int64_t ftb_instr_count(const ftb_instr *d, ftb_split split) { return d->split_n[split]; }
int ftb_instr_vocab_needed(const ftb_instr *d) { return d->vocab_needed; }

int ftb_instr_max_tokens(const ftb_instr *d)
{
    int mx = 0;
    for (int64_t i = 0; i < d->n_ex; i++) mx = d->np[i] + d->na[i] > mx ? d->np[i] + d->na[i] : mx;
    return mx;
}

void ftb_instr_get(const ftb_instr *d, ftb_split split, int64_t i, const int32_t **tokens, int *n_prompt, int *n_answer)
{
    int64_t e = d->split_idx[split][i];
    *tokens = d->ids + d->off[e];
    *n_prompt = d->np[e];
    *n_answer = d->na[e];
}
