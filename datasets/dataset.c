/*
 * dataset.c — seeded synthetic batches and pre-tokenized files.  See
 * dataset.h for the formats.  Files are read and validated completely at
 * open, so a malformed file is reported before any measurement starts.
 */
#include "dataset.h"
#include "input_file.h"
#include "tasks.h"

#include <endian.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { DS_UNIFORM, DS_SYNLANG, DS_JSONL, DS_INT32, DS_TASK } ds_kind;

#define SYN_SUCC  4                                                   /* successors per state in synthetic-lang     */
#define SYN_NOISE 0.03                                                /* probability of a uniform random next token */
static const double syn_probs[SYN_SUCC] = { 0.55, 0.25, 0.12, 0.05 }; /* + noise = 1 */

struct ftb_dataset {
    ds_kind kind;
    int vocab;
    uint64_t seed;
    int64_t next_index;
    /* batch buffers */
    int32_t *tokens, *targets;
    size_t cap;
    /* synthetic-lang */
    int n_active;
    int32_t *active_ids; /* [n_active] token id of each active state */
    int32_t *succ;       /* [n_active][SYN_SUCC] successor states     */
    /* files */
    char path[512];
    int32_t *ids;    /* all token ids (int32) or all examples'    */
    int32_t *labels; /* jsonl: label per position (-100 = ignore) */
    int64_t n_ids;
    int64_t *ex_off; /* jsonl: example i = ids[ex_off[i] .. ex_off[i+1]) */
    int64_t n_ex;
    ftb_task *task; /* task:SPEC (datasets/tasks.h)               */
};

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        /* One line: jansson quotes the input near an error. */
        for (char *c = err; *c; c++)
            if ((unsigned char)*c < 0x20) *c = '?';
    }
    return -1;
}

/* splitmix64: a tiny, well-mixed generator; each row gets its own stream
 * derived from (seed, batch, row) so batches are independent of order. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}
static uint64_t next64(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ULL;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double unit(uint64_t *s) { return (double)(next64(s) >> 11) * 0x1.0p-53; }
static uint64_t below(uint64_t *s, uint64_t n) { return n ? next64(s) % n : 0; }

static ftb_dataset *ds_new(ds_kind kind, int vocab, uint64_t seed)
{
    ftb_dataset *d = calloc(1, sizeof *d);
    if (d) {
        d->kind = kind;
        d->vocab = vocab;
        d->seed = seed;
    }
    return d;
}

/* ---- synthetic-lang ---------------------------------------------------- */

static int synlang_build(ftb_dataset *d, int n_active, char *err, size_t errlen)
{
    if (n_active > d->vocab) n_active = d->vocab;
    if (n_active < 2) return errf(err, errlen, "synthetic-lang needs a vocabulary of at least 2 tokens");
    d->n_active = n_active;
    d->active_ids = malloc((size_t)n_active * sizeof(int32_t));
    d->succ = malloc((size_t)n_active * SYN_SUCC * sizeof(int32_t));
    int32_t *perm = malloc((size_t)d->vocab * sizeof(int32_t));
    if (!d->active_ids || !d->succ || !perm) {
        free(perm);
        return errf(err, errlen, "synthetic-lang: out of memory");
    }
    /* Active tokens: a seeded sample without replacement over the whole
     * vocabulary, so embedding rows all over the table get used. */
    uint64_t s = mix64(d->seed ^ 0x5eedULL);
    for (int i = 0; i < d->vocab; i++) perm[i] = i;
    for (int i = 0; i < n_active; i++) {
        int j = i + (int)below(&s, (uint64_t)(d->vocab - i));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        d->active_ids[i] = perm[i];
    }
    free(perm);
    /* Each state's successors: distinct states, drawn per state. */
    for (int a = 0; a < n_active; a++) {
        uint64_t ss = mix64(d->seed ^ mix64((uint64_t)a + 1));
        int32_t *row = d->succ + (size_t)a * SYN_SUCC;
        for (int k = 0; k < SYN_SUCC; k++) {
            int32_t c;
            int dup;
            do {
                c = (int32_t)below(&ss, (uint64_t)n_active);
                dup = 0;
                for (int q = 0; q < k && n_active > SYN_SUCC; q++) dup |= row[q] == c;
            } while (dup);
            row[k] = c;
        }
    }
    return 0;
}

static int32_t synlang_step(const ftb_dataset *d, int32_t state, uint64_t *s)
{
    double u = unit(s);
    if (u < SYN_NOISE) return (int32_t)below(s, (uint64_t)d->n_active);
    u -= SYN_NOISE;
    const int32_t *row = d->succ + (size_t)state * SYN_SUCC;
    for (int k = 0; k < SYN_SUCC - 1; k++) {
        if (u < syn_probs[k]) return row[k];
        u -= syn_probs[k];
    }
    return row[SYN_SUCC - 1];
}

double ftb_dataset_entropy_rate(const ftb_dataset *d)
{
    if (d->kind == DS_UNIFORM) return log((double)d->vocab);
    if (d->kind != DS_SYNLANG) return NAN;
    /* Average over states of the next-token entropy (states are visited
     * close to uniformly: every state has the same noise inflow). */
    int n = d->n_active;
    double *p = calloc((size_t)n, sizeof(double));
    if (!p) return NAN;
    double total = 0;
    for (int a = 0; a < n; a++) {
        for (int i = 0; i < n; i++) p[i] = SYN_NOISE / n;
        for (int k = 0; k < SYN_SUCC; k++) p[d->succ[(size_t)a * SYN_SUCC + k]] += syn_probs[k];
        double h = 0;
        for (int i = 0; i < n; i++)
            if (p[i] > 0) h -= p[i] * log(p[i]);
        total += h;
    }
    free(p);
    return total / n;
}

/* ---- files ------------------------------------------------------------- */

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int load_int32(ftb_dataset *d, const char *path, char *err, size_t errlen)
{
    char why[512];
    FILE *f = ftb_input_fopen(path, why, sizeof why);
    if (!f) return errf(err, errlen, "dataset %s", why);
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return errf(err, errlen, "dataset %s: cannot seek (not a regular file?)", path);
    }
    long size = ftell(f);
    rewind(f);
    if (size <= 0 || size % 4) {
        fclose(f);
        return errf(err, errlen,
                    "dataset %s: %ld bytes is not a whole number of int32 token ids "
                    "(expected flat little-endian int32; JSON Lines files must end in .jsonl)",
                    path, size);
    }
    d->n_ids = size / 4;
    d->ids = malloc((size_t)size);
    if (!d->ids) {
        fclose(f);
        return errf(err, errlen, "dataset %s: out of memory for %ld bytes", path, size);
    }
    size_t got = fread(d->ids, 4, (size_t)d->n_ids, f);
    fclose(f);
    if ((int64_t)got != d->n_ids) return errf(err, errlen, "dataset %s: short read", path);
    for (int64_t i = 0; i < d->n_ids; i++) {
        int32_t v = (int32_t)le32toh((uint32_t)d->ids[i]);
        if (v < 0 || v >= d->vocab)
            return errf(err, errlen, "dataset %s: token %lld (byte offset %lld) is %d, outside the vocabulary 0..%d",
                        path, (long long)i, (long long)i * 4, v, d->vocab - 1);
        d->ids[i] = v;
    }
    return 0;
}

/* Reads an integer array member; returns its length, or -1 with err. */
static int64_t json_int_array(json_t *obj, const char *key, const char *where, int line, json_t **arr, char *err,
                              size_t errlen)
{
    *arr = json_object_get(obj, key);
    if (!*arr) return 0;
    if (!json_is_array(*arr)) return errf(err, errlen, "%s:%d: \"%s\" is not an array", where, line, key);
    size_t n = json_array_size(*arr);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(*arr, i);
        if (!json_is_integer(v) && !json_is_boolean(v))
            return errf(err, errlen, "%s:%d: %s[%zu] is not an integer", where, line, key, i);
    }
    return (int64_t)n;
}

static int load_jsonl(ftb_dataset *d, const char *path, char *err, size_t errlen)
{
    char why[512];
    FILE *f = ftb_input_fopen(path, why, sizeof why);
    if (!f) return errf(err, errlen, "dataset %s", why);
    size_t cap_ids = 4096, cap_ex = 64;
    d->ids = malloc(cap_ids * sizeof(int32_t));
    d->labels = malloc(cap_ids * sizeof(int32_t));
    d->ex_off = malloc((cap_ex + 1) * sizeof(int64_t));
    if (!d->ids || !d->labels || !d->ex_off) {
        fclose(f);
        return errf(err, errlen, "dataset %s: out of memory", path);
    }
    d->ex_off[0] = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        char *s = line;
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
        if (!*s) continue; /* blank lines (a trailing newline) are fine */
        json_error_t je;
        json_t *obj = json_loads(s, JSON_REJECT_DUPLICATES, &je);
        if (!obj) {
            rc = errf(err, errlen, "%s:%d: not valid JSON: %s (column %d)", path, lineno, je.text, je.column);
            break;
        }
        json_t *ids, *labels, *mask;
        int64_t n = -1, nl = 0, nm = 0;
        if (!json_is_object(obj)) {
            rc = errf(err, errlen, "%s:%d: expected an object with \"input_ids\"", path, lineno);
        } else if ((n = json_int_array(obj, "input_ids", path, lineno, &ids, err, errlen)) < 0 ||
                   (nl = json_int_array(obj, "labels", path, lineno, &labels, err, errlen)) < 0 ||
                   (nm = json_int_array(obj, "loss_mask", path, lineno, &mask, err, errlen)) < 0) {
            rc = -1;
        } else if (!ids) {
            rc = errf(err, errlen, "%s:%d: missing \"input_ids\"", path, lineno);
        } else if (n == 0) {
            rc = errf(err, errlen, "%s:%d: \"input_ids\" is empty", path, lineno);
        } else if (labels && mask) {
            rc = errf(err, errlen, "%s:%d: give \"labels\" or \"loss_mask\", not both", path, lineno);
        } else if (labels && nl != n) {
            rc = errf(err, errlen, "%s:%d: \"labels\" has %lld entries, \"input_ids\" %lld", path, lineno,
                      (long long)nl, (long long)n);
        } else if (mask && nm != n) {
            rc = errf(err, errlen, "%s:%d: \"loss_mask\" has %lld entries, \"input_ids\" %lld", path, lineno,
                      (long long)nm, (long long)n);
        }
        if (rc == 0) {
            while ((size_t)(d->n_ids + n) > cap_ids) {
                cap_ids *= 2;
                int32_t *a = realloc(d->ids, cap_ids * sizeof(int32_t));
                if (a) d->ids = a;
                int32_t *b = realloc(d->labels, cap_ids * sizeof(int32_t));
                if (b) d->labels = b;
                if (!a || !b) {
                    rc = errf(err, errlen, "dataset %s: out of memory", path);
                    break;
                }
            }
        }
        for (int64_t i = 0; rc == 0 && i < n; i++) {
            json_int_t v = json_integer_value(json_array_get(ids, (size_t)i));
            if (v < 0 || v >= d->vocab) {
                rc = errf(err, errlen, "%s:%d: input_ids[%lld] is %lld, outside the vocabulary 0..%d", path, lineno,
                          (long long)i, (long long)v, d->vocab - 1);
                break;
            }
            int32_t label = (int32_t)v;
            if (labels) {
                json_int_t l = json_integer_value(json_array_get(labels, (size_t)i));
                if (l != FTB_IGNORE_INDEX && (l < 0 || l >= d->vocab)) {
                    rc = errf(err, errlen, "%s:%d: labels[%lld] is %lld, neither %d nor in the vocabulary 0..%d", path,
                              lineno, (long long)i, (long long)l, FTB_IGNORE_INDEX, d->vocab - 1);
                    break;
                }
                label = (int32_t)l;
            } else if (mask) {
                json_t *m = json_array_get(mask, (size_t)i);
                json_int_t mv = json_is_boolean(m) ? json_is_true(m) : json_integer_value(m);
                if (mv != 0 && mv != 1) {
                    rc = errf(err, errlen, "%s:%d: loss_mask[%lld] is %lld, expected 0 or 1", path, lineno,
                              (long long)i, (long long)mv);
                    break;
                }
                if (!mv) label = FTB_IGNORE_INDEX;
            }
            d->ids[d->n_ids + i] = (int32_t)v;
            d->labels[d->n_ids + i] = label;
        }
        json_decref(obj);
        if (rc) break;
        d->n_ids += n;
        if ((size_t)d->n_ex + 1 > cap_ex) {
            cap_ex *= 2;
            int64_t *o = realloc(d->ex_off, (cap_ex + 1) * sizeof(int64_t));
            if (!o) {
                rc = errf(err, errlen, "dataset %s: out of memory", path);
                break;
            }
            d->ex_off = o;
        }
        d->ex_off[++d->n_ex] = d->n_ids;
    }
    free(line);
    if (rc == 0 && ferror(f)) rc = errf(err, errlen, "cannot read dataset %s: %s", path, strerror(errno));
    fclose(f);
    if (rc == 0 && d->n_ex == 0) rc = errf(err, errlen, "dataset %s: no examples (empty file)", path);
    return rc;
}

/* ---- public ------------------------------------------------------------ */

ftb_dataset *ftb_dataset_open(const char *spec, int vocab_size, uint64_t seed, char *err, size_t errlen)
{
    if (!spec || !*spec) {
        errf(err, errlen, "empty dataset name");
        return NULL;
    }
    if (vocab_size < 1) {
        errf(err, errlen, "dataset: vocabulary size %d is invalid", vocab_size);
        return NULL;
    }
    ftb_dataset *d = NULL;
    int rc = 0;
    if (strcmp(spec, "uniform") == 0) {
        d = ds_new(DS_UNIFORM, vocab_size, seed);
    } else if (strncmp(spec, "synthetic-lang", 14) == 0 && (spec[14] == 0 || spec[14] == ':')) {
        long n = 256;
        if (spec[14] == ':') {
            char *end;
            errno = 0;
            n = strtol(spec + 15, &end, 10);
            if (errno || *end || end == spec + 15 || n < 2 || n > 1L << 24) {
                errf(err, errlen, "dataset '%s': the number of active tokens after ':' must be 2..16777216", spec);
                return NULL;
            }
        }
        d = ds_new(DS_SYNLANG, vocab_size, seed);
        if (d) rc = synlang_build(d, (int)n, err, errlen);
    } else if (!strncmp(spec, "task:", 5)) {
        /* A task's training split, loss on the answers (datasets/tasks.h). */
        d = ds_new(DS_TASK, vocab_size, seed);
        if (d) {
            d->task = ftb_task_open(spec + 5, NULL, seed, err, errlen);
            rc = d->task ? 0 : -1;
            if (rc == 0 && ftb_task_vocab_needed(d->task) > vocab_size)
                rc = errf(err, errlen, "dataset %s: the task's tokens need a vocabulary of %d, the model has %d", spec,
                          ftb_task_vocab_needed(d->task), vocab_size);
        }
    } else {
        int jsonl = ends_with(spec, ".jsonl") || ends_with(spec, ".json");
        d = ds_new(jsonl ? DS_JSONL : DS_INT32, vocab_size, seed);
        if (d) {
            snprintf(d->path, sizeof d->path, "%s", spec);
            rc = jsonl ? load_jsonl(d, spec, err, errlen) : load_int32(d, spec, err, errlen);
        }
    }
    if (!d) {
        errf(err, errlen, "dataset: out of memory");
        return NULL;
    }
    if (rc) {
        ftb_dataset_close(d);
        return NULL;
    }
    return d;
}

static int ensure_buffers(ftb_dataset *d, size_t n, char *err, size_t errlen)
{
    if (n <= d->cap) return 0;
    int32_t *t = realloc(d->tokens, n * sizeof(int32_t));
    if (t) d->tokens = t;
    int32_t *g = realloc(d->targets, n * sizeof(int32_t));
    if (g) d->targets = g;
    if (!t || !g) return errf(err, errlen, "dataset: out of memory for a %zu-token batch", n);
    d->cap = n;
    return 0;
}

int ftb_dataset_batch(ftb_dataset *d, int64_t index, int B, int T, ftb_batch *out, char *err, size_t errlen)
{
    if (B < 1 || T < 1) return errf(err, errlen, "dataset: batch %dx%d is empty", B, T);
    if (ensure_buffers(d, (size_t)B * (size_t)T, err, errlen)) return -1;
    if (d->kind == DS_TASK) {
        if (ftb_task_batch(d->task, FTB_SPLIT_TRAIN, index, B, T, 0, d->tokens, d->targets, err, errlen)) return -1;
        out->B = B;
        out->T = T;
        out->tokens = d->tokens;
        out->targets = d->targets;
        return 0;
    }
    if (d->kind == DS_INT32 && d->n_ids < (int64_t)T + 1)
        return errf(err, errlen, "dataset %s holds %lld tokens; a row of %d tokens needs %d", d->path,
                    (long long)d->n_ids, T, T + 1);
    for (int r = 0; r < B; r++) {
        int32_t *tok = d->tokens + (size_t)r * T, *tgt = d->targets + (size_t)r * T;
        uint64_t s = mix64(d->seed ^ mix64((uint64_t)index * 0x10001ULL + (uint64_t)r + 1));
        int64_t row = index * B + r;
        switch (d->kind) {
        case DS_UNIFORM: {
            int32_t prev = (int32_t)below(&s, (uint64_t)d->vocab);
            for (int i = 0; i < T; i++) {
                int32_t nx = (int32_t)below(&s, (uint64_t)d->vocab);
                tok[i] = prev;
                tgt[i] = nx;
                prev = nx;
            }
            break;
        }
        case DS_SYNLANG: {
            int32_t st = (int32_t)below(&s, (uint64_t)d->n_active);
            for (int i = 0; i < T; i++) {
                int32_t nx = synlang_step(d, st, &s);
                tok[i] = d->active_ids[st];
                tgt[i] = d->active_ids[nx];
                st = nx;
            }
            break;
        }
        case DS_INT32: {
            /* Consecutive windows of T+1 tokens with stride T, cycling. */
            int64_t span = d->n_ids - T; /* valid window starts: 0..span-1 */
            int64_t start = (int64_t)(((unsigned long long)row * (unsigned long long)T) % (unsigned long long)span);
            for (int i = 0; i < T; i++) {
                tok[i] = d->ids[start + i];
                tgt[i] = d->ids[start + i + 1];
            }
            break;
        }
        case DS_TASK: break; /* handled above */
        case DS_JSONL: {
            /* Examples in file order, cycling; truncated or padded to T. */
            int64_t ex = row % d->n_ex;
            int64_t off = d->ex_off[ex], n = d->ex_off[ex + 1] - off;
            for (int i = 0; i < T; i++) {
                tok[i] = i < n ? d->ids[off + i] : FTB_DATASET_PAD_ID;
                tgt[i] = i + 1 < n ? d->labels[off + i + 1] : FTB_IGNORE_INDEX;
            }
            break;
        }
        }
    }
    out->B = B;
    out->T = T;
    out->tokens = d->tokens;
    out->targets = d->targets;
    return 0;
}

int ftb_dataset_next(ftb_dataset *d, int B, int T, ftb_batch *out, char *err, size_t errlen)
{
    int rc = ftb_dataset_batch(d, d->next_index, B, T, out, err, errlen);
    if (rc == 0) d->next_index++;
    return rc;
}

const char *ftb_dataset_kind(const ftb_dataset *d)
{
    static const char *const names[] = { "uniform", "synthetic-lang", "jsonl", "int32", "task" };
    return names[d->kind];
}

int64_t ftb_dataset_size(const ftb_dataset *d)
{
    return d->kind == DS_JSONL ? d->n_ex : d->kind == DS_INT32 ? d->n_ids : 0;
}

void ftb_dataset_close(ftb_dataset *d)
{
    if (!d) return;
    free(d->tokens);
    free(d->targets);
    free(d->active_ids);
    free(d->succ);
    free(d->ids);
    free(d->labels);
    free(d->ex_off);
    ftb_task_close(d->task);
    free(d);
}
