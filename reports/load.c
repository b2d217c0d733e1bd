/*
 * load.c — results.jsonl → records.  A results directory may hold many run
 * directories (results/<device>/<run-id>/results.jsonl); every results file
 * found a few levels down is read.  A line that is not a record (torn by a
 * killed writer, or foreign text) is reported with its line number and the
 * rest of the file is used.
 */
#include "input_file.h"
#include "report_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCAN_DEPTH 5

static const char *const cat_keys[FTR_NCAT] = { "weights",   "trainable",         "grads",
                                                "optimizer", "saved_activations", "workspace" };

static double mib(json_t *v) { return json_is_number(v) ? json_number_value(v) / 1048576.0 : NAN; }

static double num(json_t *v) { return json_is_number(v) ? json_number_value(v) : NAN; }

static json_t *path2(json_t *o, const char *a, const char *b)
{
    json_t *x = json_object_get(o, a);
    return b ? json_object_get(x, b) : x;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void push_str(char ***v, int *n, const char *s)
{
    *v = realloc(*v, (size_t)(*n + 1) * sizeof **v);
    (*v)[(*n)++] = strdup(s);
}

/* A run directory with cells/ (docs/HARNESS.md, "The run directory"):
 * its cell files are the records, whoever wrote them, and results.jsonl
 * beside them is only their merged view.  Listed as "<dir>/cells/". */
static int has_cells(const char *dir)
{
    size_t need = strlen(dir) + 8;
    char *p = malloc(need);
    snprintf(p, need, "%s/cells", dir);
    struct stat st;
    int yes = lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
    free(p);
    return yes;
}

/* Directories already walked, by device and inode: a link back up the
 * tree (a loop) or two links to one run must not count its files twice. */
typedef struct {
    dev_t dev;
    ino_t ino;
} dir_id;
typedef struct {
    dir_id *v;
    int n;
} dir_seen;

static int first_visit(dir_seen *seen, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) return 0;
    for (int i = 0; i < seen->n; i++)
        if (seen->v[i].dev == st.st_dev && seen->v[i].ino == st.st_ino) return 0;
    seen->v = realloc(seen->v, (size_t)(seen->n + 1) * sizeof *seen->v);
    seen->v[seen->n++] = (dir_id){ st.st_dev, st.st_ino };
    return 1;
}

static void scan(const char *dir, int depth, char ***files, int *n, dir_seen *seen)
{
    if (!first_visit(seen, dir)) return;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char **subdirs = NULL;
    int nsub = 0;
    int cells = has_cells(dir);
    if (cells) {
        size_t need = strlen(dir) + 8;
        char *p = malloc(need);
        snprintf(p, need, "%s/cells/", dir);
        push_str(files, n, p);
        free(p);
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (cells && (!strcmp(e->d_name, "cells") || !strcmp(e->d_name, "results.jsonl"))) continue;
        size_t need = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(need);
        snprintf(p, need, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0) {
            if (S_ISDIR(st.st_mode) && depth < SCAN_DEPTH)
                push_str(&subdirs, &nsub, p);
            else if (S_ISREG(st.st_mode) &&
                     (!strcmp(e->d_name, "results.jsonl") || !strcmp(e->d_name, "fidelity.jsonl")))
                push_str(files, n, p);
        }
        free(p);
    }
    closedir(d);
    if (nsub) qsort(subdirs, (size_t)nsub, sizeof *subdirs, cmp_str);
    for (int i = 0; i < nsub; i++) {
        scan(subdirs[i], depth + 1, files, n, seen);
        free(subdirs[i]);
    }
    free(subdirs);
}

static void skip(ftr_set *s, FILE *warn, const char *path, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void skip(ftr_set *s, FILE *warn, const char *path, int line, const char *fmt, ...)
{
    char why[512], msg[1024 + 512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof msg, "%.1000s:%d: %s", path, line, why);
    push_str(&s->skipped, &s->nskipped, msg);
    if (warn) fprintf(warn, "ftbench report: %s (line skipped)\n", msg);
}

/* "k=v,k=v" of an options object, keys sorted, without the key `skip`. */
static void options_string(json_t *opts, const char *skip, char *out, size_t cap)
{
    const char *keys[64];
    int nk = 0;
    const char *k;
    json_t *v;
    json_object_foreach(opts, k, v)
    {
        if (nk < 64 && !(skip && !strcmp(k, skip))) keys[nk++] = k;
    }
    for (int a = 1; a < nk; a++)
        for (int b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
            const char *t = keys[b];
            keys[b] = keys[b - 1];
            keys[b - 1] = t;
        }
    size_t off = 0;
    out[0] = 0;
    for (int a = 0; a < nk; a++) {
        json_t *x = json_object_get(opts, keys[a]);
        const char *val = json_string_value(x);
        char tmp[64];
        if (!val) {
            snprintf(tmp, sizeof tmp, "%g", num(x));
            val = tmp;
        }
        int w = snprintf(out + off, cap - off, "%s%s=%s", a ? "," : "", keys[a], val);
        if (w < 0 || (size_t)w >= cap - off) break;
        off += (size_t)w;
    }
}

static void extract(ftr_rec *r)
{
    json_t *j = r->j;
    r->cell = json_string_value(json_object_get(j, "cell"));
    r->run_id = json_string_value(json_object_get(j, "run_id"));
    r->outcome = json_string_value(json_object_get(j, "outcome"));
    if (!r->outcome) r->outcome = "?";
    r->device = json_string_value(path2(j, "device", "name"));
    if (!r->device) r->device = "?";
    r->model = json_string_value(path2(j, "model", "name"));
    if (!r->model) r->model = "?";
    /* A base in another format or lazily resident is another model to
     * compare with: "qwen2.5-0.5b int4/64 lazy" (kept in the record, so it
     * lives as long as r->j). */
    json_t *base = json_object_get(j, "base");
    const char *bd = json_string_value(json_object_get(base, "dtype"));
    const char *res = json_string_value(json_object_get(base, "residency_effective"));
    if (!res) res = json_string_value(json_object_get(base, "residency"));
    int lazy = res && !strcmp(res, "lazy");
    if (bd && (json_is_true(json_object_get(base, "given")) || lazy)) {
        const char *ed = json_string_value(json_object_get(base, "embed_dtype"));
        json_t *g = json_object_get(base, "group");
        char name[192], grp[24] = "", emb[48] = "";
        if (json_is_integer(g)) snprintf(grp, sizeof grp, "/%lld", (long long)json_integer_value(g));
        if (ed && strcmp(ed, bd)) snprintf(emb, sizeof emb, " emb %s", ed);
        snprintf(name, sizeof name, "%.96s %s%s%s%s", r->model, bd, grp, emb, lazy ? " lazy" : "");
        json_object_set_new(j, "_report_model", json_string(name));
        r->model = json_string_value(json_object_get(j, "_report_model"));
    }
    r->label = json_string_value(path2(j, "method", "label"));
    if (!r->label) r->label = json_string_value(path2(j, "method", "name"));
    if (!r->label) r->label = "?";
    /* Options, sorted: part of the series' identity. */
    options_string(path2(j, "method", "options"), NULL, r->options, sizeof r->options);
    r->seq = (int)json_integer_value(json_object_get(j, "seq"));
    r->batch = (int)json_integer_value(json_object_get(j, "batch"));
    if (r->batch <= 0) r->batch = 1;
    r->emulated = json_is_true(json_object_get(j, "emulated"));
    r->fit = json_is_true(json_object_get(j, "fit"));
    r->budget_mib = mib(path2(j, "device", "budget_bytes"));
    json_t *mem = json_object_get(j, "memory");
    r->peak_mib = mib(json_object_get(mem, "peak_rss_bytes"));
    r->baseline_mib = mib(json_object_get(mem, "rss_baseline_bytes"));
    json_t *core = json_object_get(mem, "core");
    r->core_peak_mib = mib(json_object_get(core, "peak_total_bytes"));
    r->saved_peak_mib = mib(path2(core, "peak_bytes", "saved_activations"));
    for (int c = 0; c < FTR_NCAT; c++) r->split_mib[c] = mib(path2(core, "split_at_peak_bytes", cat_keys[c]));
    json_t *an = json_object_get(mem, "analytic");
    r->analytic_peak_mib = mib(json_object_get(an, "peak_total_bytes"));
    r->unexplained_pct = 100.0 * num(json_object_get(an, "unexplained_rss_fraction"));
    json_t *plan = json_object_get(mem, "plan");
    r->plan_mib = mib(json_object_get(plan, "predicted_peak_rss_bytes"));
    r->plan_model = json_string_value(json_object_get(plan, "model"));
    r->plan_reason = json_string_value(json_object_get(plan, "reason"));
    /* Time per step by operation group (ops.classes, means per step). */
    json_t *ops = json_object_get(j, "ops"), *classes = json_object_get(ops, "classes");
    r->op_step_ms = 1000.0 * num(json_object_get(ops, "step_seconds"));
    r->has_ops = json_object_size(classes) > 0 && isfinite(r->op_step_ms);
    double lin_flops = 0, lin_s = 0;
    const char *cls;
    json_t *cv;
    json_object_foreach(classes, cls, cv)
    {
        double sec = num(json_object_get(cv, "seconds"));
        if (!isfinite(sec)) continue;
        r->op_ms[ftr_op_group(cls)] += 1000.0 * sec;
        if (!strncmp(cls, "linear_", 7)) {
            double fl = num(json_object_get(cv, "flops"));
            lin_flops += isfinite(fl) ? fl : 0;
            lin_s += sec;
        }
    }
    r->linear_gflops = lin_flops > 0 && lin_s > 0 ? lin_flops / lin_s * 1e-9 : NAN;
    json_t *timing = json_object_get(j, "timing");
    r->tokens_per_s = num(json_object_get(timing, "tokens_per_second"));
    r->step_s = num(path2(timing, "step_seconds", "median"));
    r->final_loss = NAN;
    json_t *losses = json_object_get(j, "loss_per_step");
    for (size_t i = json_array_size(losses); i > 0; i--)
        if (json_is_number(json_array_get(losses, i - 1))) {
            r->final_loss = num(json_array_get(losses, i - 1));
            break;
        }
    /* Training records (`ftbench train`, docs/REPORTS.md): eval.accuracy
     * (or a top-level accuracy), gradient_fidelity.cosine / relative_error. */
    json_t *ev = json_object_get(j, "eval");
    r->accuracy = num(json_object_get(ev, "accuracy"));
    if (!isfinite(r->accuracy)) r->accuracy = num(json_object_get(j, "accuracy"));
    if (r->accuracy > 1.0) r->accuracy /= 100.0; /* given in percent */
    r->eval_task = json_string_value(json_object_get(ev, "task"));
    r->eval_metric = json_string_value(json_object_get(ev, "metric"));
    json_t *gf = json_object_get(j, "gradient_fidelity");
    r->fidelity_cos = num(json_object_get(gf, "cosine"));
    r->fidelity_relerr = num(json_object_get(gf, "relative_error"));
    r->train = isfinite(r->accuracy) || isfinite(r->fidelity_cos) || isfinite(r->fidelity_relerr);
    r->timeline_file = json_string_value(json_object_get(j, "timeline_file"));
    json_t *wu = json_object_get(j, "warmup_steps");
    r->warmup_steps = json_is_integer(wu) ? (int)json_integer_value(wu) : -1;
    r->step_wall =
        json_is_array(json_object_get(j, "step_seconds_all")) ? json_object_get(j, "step_seconds_all") : NULL;
    json_t *hw = json_object_get(j, "hw_counters");
    r->hwc = !json_is_object(hw) ? -1 : json_is_true(json_object_get(hw, "available")) ? 1 : 0;
    r->hwc_reason = json_string_value(json_object_get(hw, "reason"));
}

/* The query budget of a zeroth-order estimate: the option that sets it, or
 * the method's default (P-RGE queries=4, MeZO samples=1); 0 for a method
 * that computes a gradient. */
static int query_budget(const char *label, json_t *opts, const char **key)
{
    static const struct {
        const char *label, *key;
        int dflt;
    } zo[] = { { "prge", "queries", 4 }, { "mezo", "samples", 1 } };
    for (size_t i = 0; i < sizeof zo / sizeof zo[0]; i++) {
        json_t *v = json_object_get(opts, zo[i].key);
        if (strcmp(label, zo[i].label) && !v) continue;
        *key = zo[i].key;
        if (!v) return zo[i].dflt;
        double d = json_is_string(v) ? atof(json_string_value(v)) : num(v);
        return d >= 1 && d < 1e9 ? (int)d : zo[i].dflt;
    }
    *key = NULL;
    return 0;
}

static void add_fidelity(ftr_set *s, const char *src, int line, json_t *j)
{
    s->fid = realloc(s->fid, (size_t)(s->nfid + 1) * sizeof *s->fid);
    ftr_fid *f = &s->fid[s->nfid++];
    memset(f, 0, sizeof *f);
    f->source = src;
    f->line = line;
    f->j = j;
    f->model = json_string_value(path2(j, "model", "name"));
    if (!f->model) f->model = "?";
    f->label = json_string_value(path2(j, "method", "label"));
    if (!f->label) f->label = "?";
    json_t *opts = path2(j, "method", "options");
    const char *nkey;
    f->n = query_budget(f->label, opts, &nkey);
    options_string(opts, nkey, f->options, sizeof f->options);
    options_string(opts, NULL, f->all_options, sizeof f->all_options);
    if (f->options[0])
        snprintf(f->name, sizeof f->name, "%s[%s]", f->label, f->options);
    else
        snprintf(f->name, sizeof f->name, "%s", f->label);
    f->seq = (int)json_integer_value(json_object_get(j, "seq"));
    f->cosine = num(path2(j, "exact", "cosine"));
    f->relerr = num(path2(j, "exact", "rel_error"));
    f->params = num(path2(j, "exact", "params"));
}

static int add_record(ftr_set *s, FILE *warn, const char *src, const char *dir, int lineno, json_t *j);

/* The records of a cells/ directory (path ends with "cells/"): one record
 * per <key>.json file, read without following links. */
static int load_cells(ftr_set *s, const char *path, FILE *warn)
{
    DIR *d = opendir(path);
    if (!d) {
        skip(s, warn, path, 0, "cannot open: %s", strerror(errno));
        return 0;
    }
    char *dir = strndup(path, strlen(path) - strlen("/cells/"));
    s->sources = realloc(s->sources, (size_t)(s->nsources + 1) * sizeof *s->sources);
    s->dirs = realloc(s->dirs, (size_t)(s->nsources + 1) * sizeof *s->dirs);
    s->sources[s->nsources] = strdup(path);
    s->dirs[s->nsources] = dir;
    const char *src = s->sources[s->nsources++];
    char **names = NULL;
    int nn = 0, added = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] != '.' && l > 5 && !strcmp(e->d_name + l - 5, ".json")) push_str(&names, &nn, e->d_name);
    }
    if (nn) qsort(names, (size_t)nn, sizeof *names, cmp_str);
    for (int i = 0; i < nn; i++) {
        int fd = openat(dirfd(d), names[i], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        json_error_t je;
        json_t *j = NULL;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) j = json_loadfd(fd, JSON_REJECT_DUPLICATES, &je);
        if (fd >= 0) close(fd);
        if (!j) {
            skip(s, warn, src, i + 1, "%s: not a record file (not valid JSON, or not a regular file)", names[i]);
        } else {
            added += add_record(s, warn, src, dir, i + 1, j);
        }
        free(names[i]);
    }
    free(names);
    closedir(d);
    return added;
}

/* Adds a parsed record (takes j); 0 when it is not an ftbench record. */
static int add_record(ftr_set *s, FILE *warn, const char *src, const char *dir, int lineno, json_t *j)
{
    if (!json_is_object(j) || !json_is_string(json_object_get(j, "cell")) ||
        !json_is_integer(json_object_get(j, "schema"))) {
        skip(s, warn, src, lineno, "foreign line: valid JSON but not an ftbench record (no \"cell\" and \"schema\")");
        json_decref(j);
        return 0;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->r = realloc(s->r, (size_t)s->cap * sizeof *s->r);
    }
    ftr_rec *r = &s->r[s->n++];
    memset(r, 0, sizeof *r);
    r->source = src;
    r->dir = dir;
    r->line = lineno;
    r->j = j;
    extract(r);
    return 1;
}

static int load_file(ftr_set *s, const char *path, FILE *warn)
{
    size_t pl = strlen(path);
    if (pl > 7 && !strcmp(path + pl - 7, "/cells/")) return load_cells(s, path, warn);
    /* A FIFO or device in a results tree would never end: skipped. */
    char why[512];
    FILE *f = ftb_input_fopen(path, why, sizeof why);
    if (!f) {
        const char *colon = strstr(why, ": ");
        skip(s, warn, path, 0, "%s", colon ? colon + 2 : why);
        return 0;
    }
    /* The file and its directory (timeline files are beside it). */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    s->sources = realloc(s->sources, (size_t)(s->nsources + 1) * sizeof *s->sources);
    s->dirs = realloc(s->dirs, (size_t)(s->nsources + 1) * sizeof *s->dirs);
    s->sources[s->nsources] = strdup(path);
    s->dirs[s->nsources] = dir;
    const char *src = s->sources[s->nsources++];
    int added = 0, lineno = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        int has_nl = len > 0 && line[len - 1] == '\n';
        /* A NUL byte would end the line for every string function below:
         * a line holding one is damaged, and said so, not taken as blank. */
        const char *nul = memchr(line, 0, (size_t)len);
        if (nul) {
            skip(s, warn, src, lineno, "a NUL byte at column %d: not a record (a damaged file?)",
                 (int)(nul - line) + 1);
            continue;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p) continue;
        json_error_t je;
        json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &je);
        if (!j) {
            if (!has_nl)
                skip(s, warn, src, lineno, "truncated record (the file ends mid-line: a writer was killed?): %s",
                     je.text);
            else
                skip(s, warn, src, lineno, "not valid JSON (a torn or truncated record?): %s at column %d", je.text,
                     je.column);
            continue;
        }
        if (json_is_object(j) && !json_object_get(j, "cell") && json_is_object(json_object_get(j, "exact")) &&
            json_is_object(json_object_get(j, "method"))) {
            add_fidelity(s, src, lineno, j); /* `ftbench fidelity`'s record */
            added++;
            continue;
        }
        added += add_record(s, warn, src, dir, lineno, j);
    }
    free(line);
    fclose(f);
    return added;
}

int ftr_load(ftr_set *s, const char *path, FILE *warn, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char **files = NULL;
    int nf = 0;
    if (S_ISDIR(st.st_mode)) {
        size_t n = strlen(path);
        char *p = strdup(path);
        while (n > 1 && p[n - 1] == '/') p[--n] = 0;
        dir_seen seen = { NULL, 0 };
        scan(p, 0, &files, &nf, &seen);
        free(seen.v);
        free(p);
    } else {
        push_str(&files, &nf, path);
    }
    if (nf == 0) {
        snprintf(err, errlen, "%s: no results.jsonl or fidelity.jsonl found (looked %d directory levels down)", path,
                 SCAN_DEPTH);
        free(files);
        return -1;
    }
    push_str(&s->given, &s->ngiven, path);
    int added = 0;
    for (int i = 0; i < nf; i++) {
        added += load_file(s, files[i], warn);
        free(files[i]);
    }
    free(files);
    return added;
}

void ftr_finish(ftr_set *s)
{
    for (int i = 0; i < s->n; i++) {
        ftr_rec *r = &s->r[i];
        int found = -1;
        for (int k = 0; k < s->nseries && found < 0; k++)
            if (!strcmp(s->series[k].label, r->label) && !strcmp(s->series[k].options, r->options)) found = k;
        if (found < 0) {
            s->series = realloc(s->series, (size_t)(s->nseries + 1) * sizeof *s->series);
            ftr_series *x = &s->series[s->nseries];
            memset(x, 0, sizeof *x);
            x->label = strdup(r->label);
            x->options = strdup(r->options);
            found = s->nseries++;
        }
        r->series = found;
    }
    /* Display names and styles: the variants of one label, defaults first. */
    for (int k = 0; k < s->nseries; k++) {
        ftr_series *x = &s->series[k];
        int variants = 0, variant = 0;
        for (int m = 0; m < s->nseries; m++) {
            if (strcmp(s->series[m].label, x->label)) continue;
            variants++;
            if (strcmp(s->series[m].options, x->options) < 0) variant++;
        }
        if (variants > 1 && x->options[0])
            snprintf(x->name, sizeof x->name, "%s[%s]", x->label, x->options);
        else
            snprintf(x->name, sizeof x->name, "%s", x->label);
        x->style = ftr_style_for(x->label, variant);
        x->order = ftr_style_order(x->label) * 64 + variant;
    }
}

void ftr_set_free(ftr_set *s)
{
    for (int i = 0; i < s->n; i++) json_decref(s->r[i].j);
    free(s->r);
    for (int i = 0; i < s->nseries; i++) {
        free(s->series[i].label);
        free(s->series[i].options);
    }
    free(s->series);
    for (int i = 0; i < s->nsources; i++) {
        free(s->sources[i]);
        free(s->dirs[i]);
    }
    free(s->sources);
    free(s->dirs);
    for (int i = 0; i < s->nskipped; i++) free(s->skipped[i]);
    free(s->skipped);
    for (int i = 0; i < s->nfid; i++) json_decref(s->fid[i].j);
    free(s->fid);
    for (int i = 0; i < s->ngiven; i++) free(s->given[i]);
    free(s->given);
    memset(s, 0, sizeof *s);
}
