/* cli.c — option parsing and input resolution.  See cli.h. */
#include "cli.h"
#include "input_file.h"
#include "plugin.h"
#include "safetensors.h"
#include "util.h"

#include <ctype.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *name;
    unsigned group;
    int has_value;
    const char *arg;
    const char *help;
} opt_spec;

static const opt_spec specs[] = {
    { "--model", CLI_MODEL, 1, "NAME", "model from the built-in zoo (see `ftbench list`)" },
    { "--checkpoint", CLI_MODEL, 1, "DIR", "Hugging Face checkpoint directory instead of --model" },
    { "--base-dtype", CLI_MODEL, 1, "FMT",
      "frozen base weights: f32 | bf16 | f16 | int8 | int4 | int4-asym (docs/QUANT.md)" },
    { "--embed-dtype", CLI_MODEL, 1, "FMT", "embedding / LM head format (default: --base-dtype's)" },
    { "--group", CLI_MODEL, 1, "N", "int4 group size (default 64)" },
    { "--residency", CLI_MODEL, 1, "all|lazy",
      "mapped base weights: all resident, or brought in block by block (default all)" },
    { "--method", CLI_METHOD, 1, "NAME|PATH.so", "method plugin: <methods-dir>/NAME.so or a path" },
    { "--methods", CLI_METHODS, 1, "A,B,..", "methods to sweep (default: every .so in the methods dir)" },
    { "--methods-dir", CLI_DIRS, 1, "DIR", "where method plugins are (default: next to the executable)" },
    { "--seq", CLI_SHAPE, 1, "N", "sequence length (tokens per row)" },
    { "--batch", CLI_SHAPE | CLI_LISTS, 1, "N", "rows per batch (default 1)" },
    { "--seqs", CLI_LISTS, 1, "LIST", "sequence lengths: 128..4096 (doubling) or 128,512,2048" },
    { "--batches", CLI_LISTS, 1, "LIST", "batch sizes, like --seqs" },
    { "--sweep", CLI_LISTS, 1, "NAME", "sweep definition: default or paper" },
    { "--no-skip", CLI_LISTS, 0, NULL, "run every cell, even lengths beyond one already over budget" },
    { "--steps", CLI_TRAIN, 1, "N", "measured steps (default 3; sweeps: see --help)" },
    { "--warmup", CLI_TRAIN, 1, "N", "warm-up steps before the measured ones (default 1)" },
    { "--lr", CLI_TRAIN, 1, "X", "learning rate (default 1e-4)" },
    { "--seed", CLI_TRAIN, 1, "N", "seed for weights and data (default 42)" },
    { "--dataset", CLI_TRAIN, 1, "SPEC",
      "uniform | synthetic-lang[:N] | task:SPEC | FILE.jsonl | FILE (int32) (default synthetic-lang)" },
    { "--attention", CLI_TRAIN, 1, "flash|eager", "attention implementation (default flash)" },
    { "--loss", CLI_TRAIN, 1, "chunked|full", "loss computation (default chunked)" },
    { "--loss-chunk", CLI_TRAIN, 1, "ROWS", "rows of logits per chunk of the chunked loss (default 128)" },
    { "--optimizer", CLI_TRAIN, 1, "adamw|sgd", "optimizer of the backprop methods (default adamw)" },
    { "--opt", CLI_TRAIN, 1, "KEY=VALUE", "method option, repeatable; METHOD.KEY=VALUE scopes it to one method" },
    { "--device", CLI_DEVICE, 1, "NAME", "device profile (default host); prefixes and aliases work" },
    { "--profiles-dir", CLI_DEVICE, 1, "DIR", "where *.profile files are (default: the source tree's profiles/)" },
    { "--threads", CLI_DEVICE, 1, "N", "compute threads (default: min(device cores, host cores))" },
    { "--budget", CLI_DEVICE, 1, "SIZE", "memory budget instead of the device's, e.g. 512M, 3G" },
    { "--enforce", CLI_DEVICE, 1, "MODE", "auto | cgroup | watch | check: how the budget is enforced" },
    { "--out", CLI_OUT, 1, "DIR", "results root (default results/)" },
    { "--run-id", CLI_OUT, 1, "ID", "results go to <out>/<device>/<run-id>/ (default: derived)" },
    { "--timeout", CLI_OUT, 1, "SEC", "per-cell time limit (default 1200)" },
    { "--no-timeline", CLI_OUT, 0, NULL, "do not write the per-cell timeline file" },
    { "--force", CLI_OUT, 0, NULL, "re-run cells already recorded (also those recorded with other settings)" },
    { "--wait-lock", CLI_OUT, 0, NULL, "wait for another ftbench writing the same run directory, instead of exit 2" },
    { "--independent", CLI_OUT, 0, NULL,
      "one of many writers of the run directory (Slurm array tasks): no lock, cell files only" },
    { "--quiet", CLI_OUT, 0, NULL, "no progress lines on stderr" },
    { "--seq-min", CLI_FIT, 1, "N", "shortest length probed (default 128)" },
    { "--seq-max", CLI_FIT, 1, "N", "longest length probed (default: the model's max_seq)" },
    { "--granularity", CLI_FIT, 1, "N", "bisection stops at this resolution (default 64)" },
    { "--no-plan", CLI_FIT, 0, NULL, "search from --seq-min instead of starting at the plan's prediction" },
    { NULL, 0, 0, NULL, NULL },
};

void ftb_cli_print_options(FILE *f, unsigned allowed)
{
    for (const opt_spec *s = specs; s->name; s++) {
        if (!(s->group & allowed)) continue;
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", s->name, s->arg ? " " : "", s->arg ? s->arg : "");
        fprintf(f, "  %-28s %s\n", left, s->help);
    }
    fprintf(f, "  %-28s %s\n", "--help", "this text");
}

static int pos_int(const char *opt, const char *v, long lo, long hi, int *out, char *err, size_t errlen)
{
    long x;
    if (ftb_parse_long(v, lo, hi, &x) != 0) {
        if (lo >= 1)
            return ftb_errf(err, errlen, "%s: '%s' is not a positive integer%s", opt, v, hi < LONG_MAX ? "" : "");
        return ftb_errf(err, errlen, "%s: '%s' is not an integer in %ld..%ld", opt, v, lo, hi);
    }
    *out = (int)x;
    return 0;
}

static int valid_id(const char *s)
{
    if (!*s || *s == '.') return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '-' || *s == '_' || *s == '.')) return 0;
    return 1;
}

int ftb_cli_takes_value(const char *name)
{
    for (const opt_spec *t = specs; t->name; t++)
        if (!strcmp(t->name, name)) return t->has_value ? 1 : 0;
    return -1;
}

int ftb_cli_parse(const char *cmd, unsigned allowed, int argc, char **argv, ftb_cli *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->batch = 1;
    o->steps = 3;
    o->warmup = 1;
    o->lr = 1e-4;
    o->seed = 42;
    o->timeout = 1200;
    o->dataset = "synthetic-lang";
    o->out_dir = "results";
    o->device = "host";
    o->enforce = "auto";
    o->seq_min = 128;
    o->granularity = 64;
    ftb_base_spec_default(&o->base);
    o->optimizer = FTB_OPTIM_ADAMW;
    allowed |= CLI_DIRS;

    const char *seen[sizeof specs / sizeof *specs] = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        if (strncmp(a, "--", 2) != 0)
            return ftb_errf(err, errlen, "unexpected argument '%s' (options start with --)", a);
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        const opt_spec *s = NULL;
        for (const opt_spec *t = specs; t->name; t++)
            if (strcmp(t->name, name) == 0) s = t;
        if (!s || !(s->group & allowed))
            return ftb_errf(err, errlen, "unknown option '%s' (see ftbench %s --help)", name, cmd);
        if (s->has_value && !val) {
            if (i + 1 >= argc) return ftb_errf(err, errlen, "%s needs a value (%s)", name, s->arg);
            val = argv[++i];
        } else if (!s->has_value && val) {
            return ftb_errf(err, errlen, "%s takes no value", name);
        }
        if (s->has_value && !*val && strcmp(name, "--opt") != 0) return ftb_errf(err, errlen, "%s: empty value", name);
        /* Every option but --opt takes one value: given twice, one of the
         * two would be silently dropped. */
        if (strcmp(name, "--opt") != 0) {
            size_t k = (size_t)(s - specs);
            if (seen[k])
                return s->has_value
                           ? ftb_errf(err, errlen, "%s given twice ('%s', then '%s'); give it once", name, seen[k], val)
                           : ftb_errf(err, errlen, "%s given twice; give it once", name);
            seen[k] = s->has_value ? val : name;
        }

        int rc = 0;
        double d;
        if (!strcmp(name, "--model"))
            o->model = val;
        else if (!strcmp(name, "--checkpoint"))
            o->checkpoint = val;
        else if (!strcmp(name, "--method"))
            o->method = val;
        else if (!strcmp(name, "--methods"))
            o->methods = val;
        else if (!strcmp(name, "--methods-dir"))
            o->methods_dir = val;
        else if (!strcmp(name, "--seq")) {
            rc = pos_int(name, val, 1, 1 << 22, &o->seq, err, errlen);
            o->seq_given = 1;
        } else if (!strcmp(name, "--batch"))
            rc = pos_int(name, val, 1, 1 << 16, &o->batch, err, errlen);
        else if (!strcmp(name, "--seqs"))
            o->seqs = val;
        else if (!strcmp(name, "--batches"))
            o->batches = val;
        else if (!strcmp(name, "--sweep"))
            o->sweep = val;
        else if (!strcmp(name, "--steps")) {
            rc = pos_int(name, val, 1, 1000000, &o->steps, err, errlen);
            o->steps_given = 1;
        } else if (!strcmp(name, "--warmup")) {
            rc = pos_int(name, val, 0, 1000000, &o->warmup, err, errlen);
            o->warmup_given = 1;
        } else if (!strcmp(name, "--threads"))
            rc = pos_int(name, val, 1, 4096, &o->threads, err, errlen);
        else if (!strcmp(name, "--seq-min"))
            rc = pos_int(name, val, 1, 1 << 22, &o->seq_min, err, errlen);
        else if (!strcmp(name, "--seq-max"))
            rc = pos_int(name, val, 1, 1 << 22, &o->seq_max, err, errlen);
        else if (!strcmp(name, "--loss-chunk"))
            rc = pos_int(name, val, 1, 1 << 20, &o->loss_chunk, err, errlen);
        else if (!strcmp(name, "--granularity"))
            rc = pos_int(name, val, 1, 1 << 22, &o->granularity, err, errlen);
        else if (!strcmp(name, "--lr")) {
            /* Above 1000 every optimizer here diverges at once (and beyond
             * float's range the rate is infinite). */
            if (ftb_parse_double(val, &d) != 0 || !(d > 0) || d > 1000)
                rc = ftb_errf(err, errlen, "--lr: '%s' is not a number in (0, 1000]", val);
            o->lr = d;
            o->lr_given = 1;
        } else if (!strcmp(name, "--timeout")) {
            if (ftb_parse_double(val, &d) != 0 || !(d > 0))
                rc = ftb_errf(err, errlen, "--timeout: '%s' is not a positive number of seconds", val);
            o->timeout = d;
            o->timeout_given = 1;
        } else if (!strcmp(name, "--seed")) {
            char *end;
            if (!isdigit((unsigned char)*val))
                rc = ftb_errf(err, errlen, "--seed: '%s' is not a non-negative integer", val);
            else {
                unsigned long long v = strtoull(val, &end, 10);
                if (*end) rc = ftb_errf(err, errlen, "--seed: '%s' is not a non-negative integer", val);
                o->seed = v;
            }
        } else if (!strcmp(name, "--base-dtype") || !strcmp(name, "--embed-dtype") || !strcmp(name, "--group") ||
                   !strcmp(name, "--residency")) {
            rc = ftb_base_parse_option(&o->base, name, val, err, errlen);
        } else if (!strcmp(name, "--optimizer")) {
            int k = ftb_optimizer_parse(val);
            if (k < 0) rc = ftb_errf(err, errlen, "--optimizer: '%s' is not adamw or sgd", val);
            o->optimizer = k < 0 ? FTB_OPTIM_ADAMW : (ftb_optimizer)k;
        } else if (!strcmp(name, "--dataset"))
            o->dataset = val;
        else if (!strcmp(name, "--attention")) {
            if (!strcmp(val, "flash"))
                o->attention = FTB_ATTN_FLASH;
            else if (!strcmp(val, "eager"))
                o->attention = FTB_ATTN_EAGER;
            else
                rc = ftb_errf(err, errlen, "--attention: '%s' is not flash or eager", val);
        } else if (!strcmp(name, "--loss")) {
            if (!strcmp(val, "chunked"))
                o->loss = FTB_LOSS_CHUNKED;
            else if (!strcmp(val, "full"))
                o->loss = FTB_LOSS_FULL;
            else
                rc = ftb_errf(err, errlen, "--loss: '%s' is not chunked or full", val);
        } else if (!strcmp(name, "--opt")) {
            const char *e2 = strchr(val, '=');
            if (!e2 || e2 == val)
                rc = ftb_errf(err, errlen, "--opt: '%s' is not KEY=VALUE", val);
            else if (o->n_opts >= FTB_CLI_MAX_OPTS)
                rc = ftb_errf(err, errlen, "--opt: more than %d options", FTB_CLI_MAX_OPTS);
            else {
                o->opt_keys[o->n_opts] = strndup(val, (size_t)(e2 - val));
                o->opt_values[o->n_opts] = strdup(e2 + 1);
                o->n_opts++;
            }
        } else if (!strcmp(name, "--device"))
            o->device = val;
        else if (!strcmp(name, "--profiles-dir"))
            o->profiles_dir = val;
        else if (!strcmp(name, "--budget")) {
            if (ftb_parse_size(val, &o->budget_bytes) != 0 || o->budget_bytes <= 0)
                rc = ftb_errf(err, errlen, "--budget: '%s' is not a size like 512M or 3G", val);
        } else if (!strcmp(name, "--enforce")) {
            if (strcmp(val, "auto") && strcmp(val, "cgroup") && strcmp(val, "watch") && strcmp(val, "check"))
                rc = ftb_errf(err, errlen, "--enforce: '%s' is not auto, cgroup, watch or check", val);
            o->enforce = val;
        } else if (!strcmp(name, "--out"))
            o->out_dir = val;
        else if (!strcmp(name, "--run-id")) {
            /* Never cut: two long ids cut to the same prefix would share a
             * run directory. */
            if (strlen(val) > FTB_CLI_MAX_RUN_ID)
                rc = ftb_errf(err, errlen, "--run-id: '%.40s...' is %zu characters long; at most %d are allowed", val,
                              strlen(val), FTB_CLI_MAX_RUN_ID);
            else if (!valid_id(val))
                rc = ftb_errf(err, errlen, "--run-id: '%s' may only use letters, digits, '.', '_' and '-'", val);
            o->run_id = val;
        } else if (!strcmp(name, "--no-timeline"))
            o->no_timeline = 1;
        else if (!strcmp(name, "--force"))
            o->force = 1;
        else if (!strcmp(name, "--wait-lock"))
            o->wait_lock = 1;
        else if (!strcmp(name, "--independent"))
            o->independent = 1;
        else if (!strcmp(name, "--quiet"))
            o->quiet = 1;
        else if (!strcmp(name, "--no-skip"))
            o->no_skip = 1;
        else if (!strcmp(name, "--no-plan"))
            o->no_plan = 1;
        if (rc) return -1;
    }
    if (o->model && o->checkpoint) return ftb_errf(err, errlen, "give --model or --checkpoint, not both");
    if (o->seq_max && o->seq_max < o->seq_min)
        return ftb_errf(err, errlen, "--seq-max %d is below --seq-min %d", o->seq_max, o->seq_min);
    return 0;
}

void ftb_cli_free(ftb_cli *o)
{
    for (int i = 0; i < o->n_opts; i++) {
        free(o->opt_keys[i]);
        free(o->opt_values[i]);
    }
    o->n_opts = 0;
}

/* Every safetensors file of the checkpoint opens (its header is checked
 * before it is believed: safetensors.h) and its embedding, where it has
 * it, has config.json's shape.  Mapping a file reads only its header, so
 * this costs nothing next to the cell, and a bad file is bad input (exit
 * 2, one line) instead of a cell's error record. */
static int check_one_file(const char *dir, const char *file, const ftb_config *cfg, char *err, size_t errlen)
{
    char path[PATH_MAX], e[FTB_ERR_LEN];
    snprintf(path, sizeof path, "%.3000s/%.1000s", dir, file);
    ftb_st_file f;
    if (ftb_st_open(path, &f, e, sizeof e) != 0) return ftb_errf(err, errlen, "checkpoint %s: %s", dir, e);
    const ftb_st_tensor *t = ftb_st_find(&f, "model.embed_tokens.weight");
    int rc = 0;
    if (t && (t->ndim != 2 || t->shape[0] != cfg->vocab_size || t->shape[1] != cfg->dim)) {
        char shape[96];
        ftb_st_format_shape(shape, sizeof shape, t->ndim, t->shape);
        rc = ftb_errf(err, errlen, "%s: model.embed_tokens.weight has shape %s; config.json says [%d, %d]", path, shape,
                      cfg->vocab_size, cfg->dim);
    }
    ftb_st_close(&f);
    return rc;
}

static int check_safetensors(const char *dir, const ftb_config *cfg, char *err, size_t errlen)
{
    char single[PATH_MAX], index[PATH_MAX];
    snprintf(single, sizeof single, "%.4000s/model.safetensors", dir);
    snprintf(index, sizeof index, "%.4000s/model.safetensors.index.json", dir);
    if (ftb_is_file(single)) return check_one_file(dir, "model.safetensors", cfg, err, errlen);
    json_error_t je;
    json_t *root = json_load_file(index, 0, &je);
    if (!root) return ftb_errf(err, errlen, "%s: not valid JSON: %s (line %d)", index, je.text, je.line);
    json_t *map = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(map)) rc = ftb_errf(err, errlen, "%s: no \"weight_map\" object", index);
    /* Each shard once (tensors name them many times over). */
    const char *done[256];
    int ndone = 0;
    const char *tensor;
    json_t *v;
    json_object_foreach(map, tensor, v)
    {
        const char *file = json_string_value(v);
        if (rc) break;
        if (!file || !*file || strchr(file, '/') || !strcmp(file, "..") || !strcmp(file, ".")) {
            rc = ftb_errf(err, errlen, "%s: tensor '%s': weight_map entry is not a file name in this directory", index,
                          tensor);
            break;
        }
        int seen = 0;
        for (int i = 0; i < ndone && !seen; i++) seen = !strcmp(done[i], file);
        if (seen) continue;
        if (ndone < 256) done[ndone++] = file;
        rc = check_one_file(dir, file, cfg, err, errlen);
    }
    json_decref(root);
    return rc;
}

int ftb_cli_model(const ftb_cli *o, const char *fallback, ftb_config *cfg, char *name, size_t name_n, char *err,
                  size_t errlen)
{
    char e[FTB_ERR_LEN];
    if (o->checkpoint) {
        if (!ftb_is_dir(o->checkpoint)) return ftb_errf(err, errlen, "checkpoint %s: not a directory", o->checkpoint);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/config.json", o->checkpoint);
        if (ftb_config_load_json(path, cfg, e, sizeof e) != 0)
            return ftb_errf(err, errlen, "checkpoint %s: %s", o->checkpoint, e);
        /* Every command that takes a model computes with it. */
        if (ftb_config_check_computable(cfg, e, sizeof e) != 0) return ftb_errf(err, errlen, "%s: %s", path, e);
        char st[PATH_MAX], idx[PATH_MAX];
        snprintf(st, sizeof st, "%s/model.safetensors", o->checkpoint);
        snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", o->checkpoint);
        if (!ftb_is_file(st) && !ftb_is_file(idx)) {
            /* There, but a FIFO, a directory, a device: say what it is
             * rather than "no model.safetensors". */
            struct stat sb;
            const char *odd = stat(st, &sb) == 0 ? st : stat(idx, &sb) == 0 ? idx : NULL;
            int fd = odd ? ftb_input_open(odd, e, sizeof e) : -1;
            if (fd >= 0) close(fd);
            if (odd && fd < 0) return ftb_errf(err, errlen, "%s", e);
            return ftb_errf(err, errlen, "checkpoint %s: no model.safetensors or model.safetensors.index.json",
                            o->checkpoint);
        }
        if (check_safetensors(o->checkpoint, cfg, err, errlen) != 0) return -1;
        /* The directory names the model: config.json's name is only the
         * architecture ("qwen2"), shared by every checkpoint of a family. */
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", o->checkpoint);
        size_t dl = strlen(dir);
        while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = 0;
        const char *base = strrchr(dir, '/');
        base = base && base[1] ? base + 1 : dir;
        snprintf(name, name_n, "%s", base);
    } else {
        const char *m = o->model ? o->model : fallback;
        if (!m) return ftb_errf(err, errlen, "no model: give --model NAME or --checkpoint DIR");
        if (ftb_zoo_get(m, cfg) != 0) {
            char avail[1024] = "";
            for (int i = 0; i < ftb_zoo_count(); i++) {
                size_t used = strlen(avail);
                snprintf(avail + used, sizeof avail - used, "%s%s", i ? ", " : "", ftb_zoo_at(i)->name);
            }
            return ftb_errf(err, errlen, "unknown model '%s' (zoo: %s; or give --checkpoint DIR)", m, avail);
        }
        snprintf(name, name_n, "%s", m);
    }
    if (ftb_config_validate(cfg, e, sizeof e) != 0)
        return ftb_errf(err, errlen, "model %s: invalid config: %s", name, e);
    return ftb_base_check(&o->base, cfg, name, err, errlen);
}

int ftb_cli_device(const ftb_cli *o, ftb_profile *p, char *err, size_t errlen)
{
    if (o->profiles_dir && !ftb_is_dir(o->profiles_dir))
        return ftb_errf(err, errlen, "--profiles-dir %s: not a directory", o->profiles_dir);
    return ftb_profile_find(o->profiles_dir, o->device, p, err, errlen);
}

int ftb_cli_method_options(const ftb_cli *o, const char *label, const char **keys, const char **values, int max)
{
    int n = 0;
    size_t ll = strlen(label);
    for (int i = 0; i < o->n_opts && n < max; i++) {
        const char *k = o->opt_keys[i];
        const char *dot = strchr(k, '.');
        if (dot) {
            if ((size_t)(dot - k) != ll || strncmp(k, label, ll) != 0) continue;
            k = dot + 1;
        }
        /* A later --opt of the same key wins. */
        int j;
        for (j = 0; j < n; j++)
            if (strcmp(keys[j], k) == 0) break;
        keys[j] = k;
        values[j] = o->opt_values[i];
        if (j == n) n++;
    }
    return n;
}

int ftb_cli_check_options(const ftb_cli *o, const char *label, const char *probe_json, int strict_unscoped, char *err,
                          size_t errlen)
{
    json_t *j = json_loads(probe_json, 0, NULL);
    json_t *opts = j ? json_object_get(j, "options") : NULL;
    size_t ll = strlen(label);
    int rc = 0;
    for (int i = 0; i < o->n_opts && rc == 0; i++) {
        const char *k = o->opt_keys[i];
        const char *dot = strchr(k, '.');
        if (dot) {
            if ((size_t)(dot - k) != ll || strncmp(k, label, ll) != 0) continue;
            k = dot + 1;
        } else if (!strict_unscoped) {
            continue;
        }
        int found = 0;
        char names[400] = "";
        size_t idx;
        json_t *d;
        json_array_foreach(opts, idx, d)
        {
            const char *n = json_string_value(json_object_get(d, "name"));
            if (n && strcmp(n, k) == 0) found = 1;
            size_t used = strlen(names);
            snprintf(names + used, sizeof names - used, "%s%s", idx ? ", " : "", n ? n : "?");
        }
        if (!found) {
            rc = ftb_errf(err, errlen, "method %s has no option '%s' (%s%s)", label, k,
                          names[0] ? "options: " : "it takes no options", names);
            break;
        }
        /* A numeric value gets the checks every method's ftb_opt_double
         * makes (float's range, the ranges of options common to methods),
         * here, before anything runs: bad input, not a failed cell. */
        const char *val = o->opt_values[i];
        char *end;
        (void)strtod(val, &end);
        if (end != val && !*end) {
            const char *kk[1] = { k }, *vv[1] = { val };
            ftb_options one = { 1, kk, vv };
            char e[FTB_ERR_LEN] = "";
            (void)ftb_opt_double(&one, k, 0, e, sizeof e);
            if (e[0]) {
                ftb_errf(err, errlen, "method %s: %s", label, e);
                rc = -2;
            }
        }
    }
    json_decref(j);
    return rc;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int ftb_parse_int_list(const char *s, int lo, int hi, int **out, int *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    int *v = NULL, cap = 0, cnt = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        t = ftb_trim(t);
        char *dots = strstr(t, "..");
        long a, b;
        if (dots) {
            *dots = 0;
            if (ftb_parse_long(t, lo, hi, &a) || ftb_parse_long(dots + 2, lo, hi, &b) || b < a) {
                ftb_errf(err, errlen, "'%s': a range is A..B with %d <= A <= B <= %d", s, lo, hi);
                free(copy);
                free(v);
                return -1;
            }
        } else {
            if (ftb_parse_long(t, lo, hi, &a)) {
                /* t points into copy: format before freeing it. */
                ftb_errf(err, errlen, "'%s': '%s' is not an integer in %d..%d", s, t, lo, hi);
                free(copy);
                free(v);
                return -1;
            }
            b = a;
        }
        for (long x = a; x <= b; x *= 2) {
            if (cnt == cap) {
                cap = cap ? cap * 2 : 16;
                v = realloc(v, (size_t)cap * sizeof *v);
            }
            v[cnt++] = (int)x;
            if (x == 0) break;
        }
    }
    free(copy);
    if (!cnt) {
        free(v);
        return ftb_errf(err, errlen, "'%s': empty list", s);
    }
    qsort(v, (size_t)cnt, sizeof *v, cmp_int);
    int m = 0;
    for (int i = 0; i < cnt; i++)
        if (!m || v[m - 1] != v[i]) v[m++] = v[i];
    *out = v;
    *n = m;
    return 0;
}
