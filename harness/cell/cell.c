/*
 * cell.c — the parent side of a cell: fork, watch, classify, record.
 * See cell.h.  The parent stays small and idle while the child measures:
 * it sleeps in poll() on the child's progress pipe, waking every 100 ms
 * for the timeout and (in watch mode) one read of the child's statm.
 */
#include "cell_internal.h"
#include "host.h"
#include "kmsg.h"
#include "rundir.h"
#include "safe_file.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *ftb_enforce_name(ftb_enforce e)
{
    switch (e) {
    case FTB_ENFORCE_CGROUP: return "cgroup-v2 memory.max";
    case FTB_ENFORCE_WATCH: return "rss-watch";
    case FTB_ENFORCE_CHECK: return "rss-check";
    }
    return "?";
}

void ftb_cell_init(ftb_cell *c)
{
    memset(c, 0, sizeof *c);
    c->batch = 1;
    c->steps = 3;
    c->warmup = 1;
    c->seed = 42;
    c->lr = 1e-4f;
    c->dataset = "synthetic-lang";
    c->threads = 1;
    c->enforce = FTB_ENFORCE_CHECK;
    c->timeout_sec = 1200;
    c->timeline = 1;
}

void ftb_cell_make_key(ftb_cell *c)
{
    char opts[32] = "";
    if (c->n_opts) {
        /* Options are part of the cell's identity; a hash keeps the key a
         * short, safe file name (the record has them in full).  Sorted so
         * the order they were given in does not matter. */
        int idx[FTB_MAX_METHOD_OPTS];
        for (int i = 0; i < c->n_opts; i++) idx[i] = i;
        for (int i = 1; i < c->n_opts; i++)
            for (int j = i; j > 0 && strcmp(c->opt_keys[idx[j - 1]], c->opt_keys[idx[j]]) > 0; j--) {
                int t = idx[j];
                idx[j] = idx[j - 1];
                idx[j - 1] = t;
            }
        uint64_t h = FTB_FNV_INIT;
        for (int i = 0; i < c->n_opts; i++) {
            h = ftb_fnv1a(c->opt_keys[idx[i]], strlen(c->opt_keys[idx[i]]) + 1, h);
            h = ftb_fnv1a(c->opt_values[idx[i]], strlen(c->opt_values[idx[i]]) + 1, h);
        }
        snprintf(opts, sizeof opts, "+%08x", (unsigned)(h ^ (h >> 32)));
    }
    /* The base format, residency and optimizer change what is measured:
     * they are part of the key (and so of a sweep's run id). */
    char base[96], extra[72];
    ftb_base_key_part(&c->base, base, sizeof base);
    char lc[24] = "";
    if (c->loss_chunk) snprintf(lc, sizeof lc, ".lc%d", c->loss_chunk);
    snprintf(extra, sizeof extra, "%s%.40s%s%s", base[0] ? "." : "", base, c->optimizer == FTB_OPTIM_SGD ? ".sgd" : "",
             lc);
    snprintf(c->key, sizeof c->key, "%.100s%.9s.%.60s%.50s.s%d.b%d", c->method_label, opts, c->model_name, extra,
             c->seq, c->batch);
    /* The key names files (cells/<key>.json, <key>.timeline.tsv): only
     * characters that are safe in a file name, and never a leading dot
     * (hidden files in a run directory are ftbench's own temporaries). */
    for (char *p = c->key; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_' || *p == '+')) *p = '_';
    if (c->key[0] == '.') c->key[0] = '_';
}

int ftb_cell_prepare_base(ftb_cell *c, int quiet, char *err, size_t errlen)
{
    c->base_dir[0] = 0;
    c->base_info = NULL;
    if (!ftb_base_needs_prepare(&c->base, c->checkpoint)) return 0;
    return ftb_base_prepare(&c->base, &c->cfg, c->model_name, c->checkpoint, c->seed, c->threads, quiet, c->base_dir,
                            sizeof c->base_dir, &c->base_info, err, errlen);
}

/* ---- results.jsonl ------------------------------------------------------ */

int ftb_recorded_load(const char *path, ftb_recorded *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : -1;
    char *line = NULL;
    size_t cap = 0;
    int alloc = 0;
    while (getline(&line, &cap, f) >= 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *key = j ? json_string_value(json_object_get(j, "cell")) : NULL;
        if (!key) {
            json_decref(j); /* a torn or foreign line: not a record */
            continue;
        }
        if (out->n == alloc) {
            alloc = alloc ? alloc * 2 : 32;
            out->keys = realloc(out->keys, (size_t)alloc * sizeof *out->keys);
            out->records = realloc(out->records, (size_t)alloc * sizeof *out->records);
        }
        out->keys[out->n] = strdup(key);
        out->records[out->n] = j;
        out->n++;
    }
    free(line);
    fclose(f);
    return 0;
}

json_t *ftb_recorded_find(const ftb_recorded *r, const char *key)
{
    for (int i = r->n - 1; i >= 0; i--)
        if (strcmp(r->keys[i], key) == 0) return r->records[i];
    return NULL;
}

void ftb_recorded_free(ftb_recorded *r)
{
    for (int i = 0; i < r->n; i++) {
        free(r->keys[i]);
        json_decref(r->records[i]);
    }
    free(r->keys);
    free(r->records);
    memset(r, 0, sizeof *r);
}

/* ---- roofline ----------------------------------------------------------- */

json_t *ftb_roofline_projection(const ftb_profile *dev, const ftb_config *cfg, int B, int T, int64_t trainable,
                                int forward_passes, int has_backward, int64_t saved_peak_bytes)
{
    json_t *o = json_object();
    double N = (double)B * T;
    double P = (double)ftb_config_param_count(cfg);
    /* The embedding lookup is a gather, not a matmul; the LM head is one
     * whether tied or not. */
    double P_mm = P - (double)cfg->vocab_size * cfg->dim * (cfg->tie_embeddings ? 0 : 1);
    /* Forward: 2·N·P_mm for the matmuls + causal attention scores and
     * values: 2·B·T²·(heads·head_dim) per layer (half of the full T² of
     * QKᵀ and PV, 2 flops each).  Backward: twice the forward. */
    double attn = 2.0 * B * (double)T * T * cfg->n_heads * cfg->head_dim * cfg->n_layers;
    double fwd = 2.0 * N * P_mm + attn;
    int passes = forward_passes > 0 ? forward_passes : 1;
    double flops = passes * fwd + (has_backward ? 2.0 * fwd : 0);
    /* Bytes: the fp32 weights are read by every forward pass and again by
     * the backward; trainable tensors' gradients are written and read, and
     * AdamW reads param, grad, m, v and writes param, m, v; saved
     * activations are written once and read once. */
    double wbytes = 4.0 * P;
    double bytes = passes * wbytes + (has_backward ? wbytes + 2.0 * 4.0 * trainable : 0) + 7.0 * 4.0 * trainable +
                   2.0 * (double)(saved_peak_bytes > 0 ? saved_peak_bytes : 0);
    json_object_set_new(o, "flops_per_step", json_real(flops));
    json_object_set_new(o, "bytes_per_step", json_real(bytes));
    double tc = dev->peak_gflops_fp32 > 0 ? flops / (dev->peak_gflops_fp32 * 1e9) : NAN;
    double tm = dev->mem_bandwidth_gbs > 0 ? bytes / (dev->mem_bandwidth_gbs * 1e9) : NAN;
    json_object_set_new(o, "compute_seconds", isfinite(tc) ? json_real(tc) : json_null());
    json_object_set_new(o, "memory_seconds", isfinite(tm) ? json_real(tm) : json_null());
    if (isfinite(tc) && isfinite(tm)) {
        json_object_set_new(o, "projected_step_seconds_roofline", json_real(tc > tm ? tc : tm));
        json_object_set_new(o, "bound", json_string(tc > tm ? "compute" : "memory"));
    } else {
        json_object_set_new(o, "projected_step_seconds_roofline", json_null());
        json_object_set_new(o, "reason", json_string("the device profile gives no peak GFLOP/s or bandwidth"));
    }
    json_object_set_new(o, "basis",
                        json_string("theoretical peaks of the profile; flops = passes*F + (backward ? 2F : 0), "
                                    "F = 2*N*P_matmul + 2*B*T^2*heads*head_dim*layers; bytes = weights per "
                                    "pass (+1 for backward) + grads + AdamW traffic + 2x saved activations"));
    return o;
}

/* ---- host calibration ------------------------------------------------------ */

double ftb_host_sgemm_gflops(int threads)
{
    /* Measured once per thread count, in a child of its own: BLAS and
     * OpenMP must not start their thread pools in the parent (every cell
     * is forked from it), and the measurement must not touch any cell's
     * peak. */
    static int cached_threads = -1;
    static double cached;
    if (threads == cached_threads) return cached;
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        ftb_set_threads(threads);
        double g = ftb_sgemm_gflops(512, 512, 512, 3);
        ssize_t w = write(fds[1], &g, sizeof g);
        _exit(w == (ssize_t)sizeof g ? 0 : 1);
    }
    close(fds[1]);
    double g = -1;
    if (read(fds[0], &g, sizeof g) != (ssize_t)sizeof g) g = -1;
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    cached_threads = threads;
    cached = g;
    return g;
}

/* ---- running a cell ------------------------------------------------------ */

static volatile sig_atomic_t g_child_pgid;
static volatile sig_atomic_t g_interrupted;

/* SIGINT/SIGTERM: the cell being measured is killed (its process group) and
 * the command stops after it, saying so (ftb_interrupted). */
static void on_signal(int sig)
{
    g_interrupted = sig;
    if (g_child_pgid > 0) kill(-g_child_pgid, SIGKILL);
}

void ftb_catch_interrupts(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int ftb_interrupted(void) { return g_interrupted; }

static json_t *config_json(const ftb_config *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(c->name));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "dim", json_integer(c->dim));
    json_object_set_new(o, "n_layers", json_integer(c->n_layers));
    json_object_set_new(o, "n_heads", json_integer(c->n_heads));
    json_object_set_new(o, "n_kv_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "ffn_dim", json_integer(c->ffn_dim));
    json_object_set_new(o, "max_seq", json_integer(c->max_seq));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(o, "norm_eps", json_real(c->norm_eps));
    json_object_set_new(o, "qkv_bias", json_boolean(c->qkv_bias));
    json_object_set_new(o, "tie_embeddings", json_boolean(c->tie_embeddings));
    /* RoPE scaling changes the numbers (not the memory): say which. */
    const ftb_rope_scaling *r = &c->rope_scaling;
    if (r->kind == FTB_ROPE_LINEAR)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s,s:f}", "rope_type", "linear", "factor", (double)r->factor));
    else if (r->kind == FTB_ROPE_LLAMA3)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s,s:f,s:f,s:f,s:i}", "rope_type", "llama3", "factor", (double)r->factor,
                                      "low_freq_factor", (double)r->low_freq_factor, "high_freq_factor",
                                      (double)r->high_freq_factor, "original_max_position_embeddings",
                                      r->original_max_seq));
    return o;
}

static int64_t jget_int(json_t *o, const char *a, const char *b)
{
    json_t *x = json_object_get(o, a);
    if (b) x = json_object_get(x, b);
    return json_is_integer(x) ? (int64_t)json_integer_value(x) : -1;
}

static void set_outcome(ftb_cell_result *r, const char *o, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_outcome(ftb_cell_result *r, const char *o, const char *fmt, ...)
{
    snprintf(r->outcome, sizeof r->outcome, "%s", o);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
}

/* The record's description of the cell: what was measured, where, how. */
static void describe_cell(json_t *rec, const ftb_cell *c, json_t *m, const char *ts, const char *git,
                          ftb_enforce enforce, const char *enforce_note)
{
    json_object_set_new(rec, "timestamp_utc", json_string(ts));
    json_object_set_new(rec, "git_rev", json_string(git));
    json_object_set_new(rec, "hostname", json_string(ftb_hostname()));
    json_object_set_new(rec, "abi_version", json_integer(FTB_ABI_VERSION));

    json_t *model = json_object();
    json_object_set_new(model, "name", json_string(c->model_name));
    json_object_set_new(model, "source", json_string(c->checkpoint ? "checkpoint" : "zoo"));
    if (c->checkpoint) {
        json_object_set_new(model, "checkpoint", json_string(c->checkpoint));
        char id[24];
        snprintf(id, sizeof id, "%016llx", (unsigned long long)ftb_base_checkpoint_hash(c->checkpoint));
        json_object_set_new(model, "checkpoint_id", json_string(id));
    }
    json_object_set_new(model, "params", json_integer(ftb_config_param_count(&c->cfg)));
    json_object_set_new(model, "config", config_json(&c->cfg));
    json_object_set_new(rec, "model", model);
    /* The base weights: format, residency, the prepared file, and what the
     * child measured of them (effective residency, storage bytes). */
    json_t *base = ftb_base_record_json(&c->base, c->base_dir, c->base_info);
    json_t *mb = m ? json_object_get(m, "base") : NULL;
    if (mb) json_object_update(base, mb);
    json_object_set_new(rec, "base", base);
    json_object_set_new(rec, "optimizer", json_string(ftb_optimizer_name(c->optimizer)));

    json_t *meth = json_object();
    json_object_set_new(meth, "label", json_string(c->method_label));
    json_t *mn = m ? json_object_get(m, "method_name") : NULL;
    json_object_set(meth, "name", mn ? mn : json_null());
    json_t *ms = m ? json_object_get(m, "method_summary") : NULL;
    if (ms) json_object_set(meth, "summary", ms);
    json_object_set_new(meth, "path", json_string(c->method_path));
    json_t *opts = json_object();
    for (int i = 0; i < c->n_opts; i++) json_object_set_new(opts, c->opt_keys[i], json_string(c->opt_values[i]));
    json_object_set_new(meth, "options", opts);
    json_object_set_new(rec, "method", meth);

    json_object_set_new(rec, "seq", json_integer(c->seq));
    json_object_set_new(rec, "batch", json_integer(c->batch));
    json_object_set_new(rec, "steps", json_integer(c->steps));
    json_object_set_new(rec, "warmup_steps", json_integer(c->warmup));
    json_object_set_new(rec, "dataset", json_string(c->dataset));
    /* A dataset file's identity (its real path, size and mtime): the same
     * name with other contents is another experiment. */
    struct stat dst;
    if (c->dataset && stat(c->dataset, &dst) == 0 && S_ISREG(dst.st_mode)) {
        char real[PATH_MAX];
        if (!realpath(c->dataset, real)) snprintf(real, sizeof real, "%s", c->dataset);
        int64_t v[2] = { (int64_t)dst.st_size, (int64_t)dst.st_mtime };
        uint64_t h = ftb_fnv1a(v, sizeof v, ftb_fnv1a(real, strlen(real) + 1, FTB_FNV_INIT));
        char id[24];
        snprintf(id, sizeof id, "%016llx", (unsigned long long)h);
        json_object_set_new(rec, "dataset_id", json_string(id));
    }
    json_object_set_new(rec, "seed", json_integer((json_int_t)c->seed));
    json_object_set_new(rec, "lr", json_real(c->lr));
    json_object_set_new(rec, "attention", json_string(c->attention == FTB_ATTN_EAGER ? "eager" : "flash"));
    json_object_set_new(rec, "loss_mode", json_string(c->loss == FTB_LOSS_FULL ? "full" : "chunked"));
    ftb_run_opts ro;
    ftb_run_opts_default(&ro);
    json_object_set_new(rec, "loss_chunk_rows", json_integer(c->loss_chunk ? c->loss_chunk : ro.loss_chunk_rows));

    json_t *dev = json_object();
    json_object_set_new(dev, "name", json_string(c->device.name));
    json_object_set_new(dev, "profile", json_string(c->device.path));
    json_object_set_new(dev, "emulated", json_boolean(c->emulated));
    if (c->device.host_match[0]) json_object_set_new(dev, "host_match", json_string(c->device.host_match));
    json_object_set_new(dev, "cores", json_integer(c->device.cores));
    json_object_set_new(dev, "ram_mb", json_real(c->device.ram_mb));
    json_object_set_new(dev, "usable_fraction", json_real(c->device.usable_fraction));
    json_object_set_new(dev, "mem_bandwidth_gbs",
                        c->device.mem_bandwidth_gbs > 0 ? json_real(c->device.mem_bandwidth_gbs) : json_null());
    json_object_set_new(dev, "peak_gflops_fp32",
                        c->device.peak_gflops_fp32 > 0 ? json_real(c->device.peak_gflops_fp32) : json_null());
    json_object_set_new(dev, "budget_bytes", json_integer(c->budget_bytes));
    json_object_set_new(dev, "enforcement", json_string(ftb_enforce_name(enforce)));
    json_object_set_new(dev, "enforcement_requested", json_string(ftb_enforce_name(c->enforce)));
    if (enforce_note[0]) json_object_set_new(dev, "enforcement_note", json_string(enforce_note));
    json_object_set_new(dev, "threads", json_integer(c->threads));
    json_object_set_new(rec, "device", dev);
    json_object_set_new(rec, "emulated", json_boolean(c->emulated));
}


/* ---- resume: the settings a record was measured with ------------------------
 * Everything that changes a cell's numbers, read from a record by path, so
 * the same code reads old records (made before `settings` was stored) and
 * describes a cell about to run.  docs/HARNESS.md lists them. */

static const struct {
    const char *name, *path[3];
} setting_paths[] = {
    { "model", { "model", "name" } },
    { "checkpoint", { "model", "checkpoint" } },
    { "checkpoint_id", { "model", "checkpoint_id" } },
    { "model_config", { "model", "config" } },
    { "method", { "method", "label" } },
    { "options", { "method", "options" } },
    { "seq", { "seq" } },
    { "batch", { "batch" } },
    { "steps", { "steps" } },
    { "warmup", { "warmup_steps" } },
    { "seed", { "seed" } },
    { "lr", { "lr" } },
    { "dataset", { "dataset" } },
    { "dataset_id", { "dataset_id" } },
    { "attention", { "attention" } },
    { "loss", { "loss_mode" } },
    { "loss_chunk", { "loss_chunk_rows" } },
    { "optimizer", { "optimizer" } },
    { "base_dtype", { "base", "dtype" } },
    { "embed_dtype", { "base", "embed_dtype" } },
    { "group", { "base", "group" } },
    { "residency", { "base", "residency" } },
    { "device", { "device", "name" } },
    { "budget", { "device", "budget_bytes" } },
    { "enforcement", { "device", "enforcement_requested" } },
    { "threads", { "device", "threads" } },
    { "train", { "train" } },
};

json_t *ftb_record_settings(json_t *rec)
{
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof setting_paths / sizeof *setting_paths; i++) {
        json_t *x = rec;
        for (int k = 0; k < 3 && setting_paths[i].path[k]; k++) x = json_object_get(x, setting_paths[i].path[k]);
        /* Records before enforcement_requested: the one in effect. */
        if (!x && !strcmp(setting_paths[i].name, "enforcement"))
            x = json_object_get(json_object_get(rec, "device"), "enforcement");
        if (x) json_object_set(o, setting_paths[i].name, x);
    }
    return o;
}

json_t *ftb_cell_settings(const ftb_cell *c)
{
    json_t *rec = json_object();
    char ts[32];
    ftb_utc_timestamp(ts, sizeof ts);
    describe_cell(rec, c, NULL, ts, "", c->enforce, "");
    if (c->extra) {
        const char *k;
        json_t *v;
        json_object_foreach(c->extra, k, v) json_object_set(rec, k, v);
    }
    json_t *o = ftb_record_settings(rec);
    json_decref(rec);
    return o;
}

static void append_value(char *out, size_t n, json_t *v)
{
    size_t u = strlen(out);
    if (u >= n) return;
    char *d = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    snprintf(out + u, n - u, "%.60s%s", d ? d : "(none)", d && strlen(d) > 60 ? "..." : "");
    free(d);
}

int ftb_cell_settings_differ(const ftb_cell *c, json_t *rec, char *msg, size_t n)
{
    json_t *now = ftb_cell_settings(c), *then = ftb_record_settings(rec);
    int differ = 0;
    if (msg && n) msg[0] = 0;
    const char *k;
    json_t *v;
    json_object_foreach(now, k, v)
    {
        json_t *w = json_object_get(then, k);
        /* A setting the record predates is not held against it. */
        if (!w || json_equal(v, w)) continue;
        /* Reals: the same to float precision (lr is a float). */
        if (json_is_number(v) && json_is_number(w) &&
            fabs(json_number_value(v) - json_number_value(w)) <= 1e-6 * fabs(json_number_value(v)))
            continue;
        if (msg && n) {
            size_t u = strlen(msg);
            snprintf(msg + u, n - u, "%s%s recorded ", differ ? ", " : "", k);
            append_value(msg, n, w);
            u = strlen(msg);
            snprintf(msg + u, n - u, ", now ");
            append_value(msg, n, v);
        }
        differ++;
    }
    json_object_foreach(then, k, v)
    {
        if (json_object_get(now, k)) continue;
        if (msg && n) {
            size_t u = strlen(msg);
            snprintf(msg + u, n - u, "%s%s recorded ", differ ? ", " : "", k);
            append_value(msg, n, v);
            u = strlen(msg);
            snprintf(msg + u, n - u, ", now none");
        }
        differ++;
    }
    json_decref(now);
    json_decref(then);
    return differ;
}

/* Signals a process gets for its own faults (or abort()): a crash.  Any
 * other deadly signal was sent to it: "killed". */
static int is_fault_signal(int sig)
{
    return sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGABRT || sig == SIGTRAP ||
           sig == SIGSYS || sig == SIGXCPU || sig == SIGXFSZ;
}

/* A cell killed while writing a snapshot leaves its temporary
 * (safe_file.c names them ".tmp-<pid>-..."): the child is dead, so every
 * temporary of its pid in the run directory is garbage. */
static void remove_temporaries_of(int run_fd, pid_t pid)
{
    int fd = dup(run_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return;
    }
    char prefix[32];
    int pl = snprintf(prefix, sizeof prefix, ".tmp-%d-", (int)pid);
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, prefix, (size_t)pl)) unlinkat(run_fd, e->d_name, 0);
    closedir(d);
}

static double mib(int64_t b) { return (double)b / (1024.0 * 1024.0); }

int ftb_cell_run(const ftb_cell *c, ftb_cell_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->peak_rss = -1;
    if (g_interrupted) return FTB_CELL_INTERRUPTED;
    /* The run directory, opened without following links: the child writes
     * its snapshot and timeline relative to this descriptor. */
    int run_fd = ftb_rundir_open(c->run_dir, 1, err, errlen);
    if (run_fd < 0) return -1;
    char child_json[300], timeline[300];
    snprintf(child_json, sizeof child_json, ".%.260s.child.json", c->key);
    snprintf(timeline, sizeof timeline, "%.260s.timeline.tsv", c->key);
    unlinkat(run_fd, child_json, 0);

    /* Enforcement. */
    ftb_enforce enforce = c->enforce;
    char enforce_note[FTB_ERR_LEN];
    snprintf(enforce_note, sizeof enforce_note, "%s", c->enforce_note);
    ftb_cgroup cg;
    memset(&cg, 0, sizeof cg);
    if (enforce == FTB_ENFORCE_CGROUP) {
        char e[FTB_ERR_LEN];
        if (ftb_cgroup_create(&cg, c->budget_bytes, e, sizeof e) != 0) {
            enforce = FTB_ENFORCE_CHECK;
            snprintf(enforce_note, sizeof enforce_note, "cgroup unavailable (%.400s); peak RSS checked after the run",
                     e);
        }
    }
    /* In check mode the cell runs past the budget to measure its real
     * peak, but never into the host's own OOM killer. */
    int64_t avail = ftb_meminfo("MemAvailable");
    int64_t safety = avail > 0 ? (int64_t)(avail * 0.9) : INT64_MAX;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        ftb_cgroup_destroy(&cg);
        close(run_fd);
        return ftb_errf(err, errlen, "pipe: %s", strerror(errno));
    }
    char ts[32];
    ftb_utc_timestamp(ts, sizeof ts);
    const char *git = ftb_git_revision(); /* before fork: popen in the parent */
    /* The child's sampler publishes the RSS of its whole process tree here;
     * the parent enforces the budget on it and keeps its peak even if the
     * child is killed. */
    ftb_tree_shared *tree = ftb_tree_shared_new();
    fflush(NULL);
    double t_start = ftb_now();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        close(run_fd);
        ftb_cgroup_destroy(&cg);
        ftb_tree_shared_free(tree);
        return ftb_errf(err, errlen, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        /* The run directory's lock is the harness's: nothing the cell
         * leaves behind may hold it. */
        if (ftb_rundir_lock_fd() >= 0) close(ftb_rundir_lock_fd());
        setpgid(0, 0);
        ftb_cell_child(c, fds[1], run_fd, child_json, timeline, cg.active ? &cg : NULL, tree);
    }
    setpgid(pid, pid); /* both sides set it: whichever runs first wins the race */
    close(fds[1]);
    g_child_pgid = pid;
    /* Without a command's own handlers (ftb_catch_interrupts), the cell's
     * are installed for its duration. */
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    int timed_out = 0, watch_killed = 0, safety_killed = 0, eof = 0, reaped = 0, status = 0;
    int io_errno = 0, timeline_errno = 0, interrupt_killed = 0;
    int64_t watch_max = -1;      /* the tree's RSS as the parent saw it     */
    int64_t watch_proc_max = -1; /* the cell process's own RSS, likewise   */
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    char pbuf[512];
    size_t plen = 0;
    char last_what[32] = ""; /* the child's last milestone: where it was */
    int last_step = 0, last_total = 0;
    while (!reaped) {
        struct pollfd p = { .fd = eof ? -1 : fds[0], .events = POLLIN };
        int pr = poll(&p, 1, 100);
        if (pr > 0 && (p.revents & (POLLIN | POLLHUP))) {
            ssize_t n = read(fds[0], pbuf + plen, sizeof pbuf - 1 - plen);
            if (n <= 0) {
                eof = 1;
            } else {
                plen += (size_t)n;
                pbuf[plen] = 0;
                char *nl;
                while ((nl = strchr(pbuf, '\n'))) {
                    *nl = 0;
                    int a = 0, b = 0;
                    char what[32] = "";
                    if (sscanf(pbuf, "ioerror %31s %d", what, &a) == 2) {
                        /* The child could not write a file (errno a):
                         * its measurements or its timeline. */
                        if (!strcmp(what, "timeline"))
                            timeline_errno = a;
                        else
                            io_errno = a;
                    } else if (sscanf(pbuf, "%31s %d %d", what, &a, &b) >= 1) {
                        snprintf(last_what, sizeof last_what, "%s", what);
                        last_step = a;
                        last_total = b;
                        if (c->progress && !(strcmp(what, "step") == 0 && a == 0))
                            c->progress(c->progress_ud, what, a, b);
                    }
                    size_t rest = plen - (size_t)(nl + 1 - pbuf);
                    memmove(pbuf, nl + 1, rest);
                    plen = rest;
                    pbuf[plen] = 0;
                }
                if (plen >= sizeof pbuf - 1) plen = 0; /* garbage: drop */
            }
        }
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) {
            reaped = 1;
            break;
        }
        double el = ftb_now() - t_start;
        if (g_interrupted && !interrupt_killed) {
            /* Also when the signal came before the child's group was known. */
            interrupt_killed = 1;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
        }
        if (eof && !reaped && interrupt_killed) {
            if (wait4(pid, &status, 0, &ru) == pid) reaped = 1;
            break;
        }
        if (!timed_out && !watch_killed && !safety_killed) {
            if (el > c->timeout_sec) {
                timed_out = 1;
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
            } else if (enforce != FTB_ENFORCE_CGROUP) {
                /* The process's own RSS, fresh, and the tree's sum from the
                 * sampler (at most ~10 ms old): the budget is the tree's. */
                int64_t rss = ftb_pid_rss(pid);
                if (rss > watch_proc_max) watch_proc_max = rss;
                int64_t tree_now = tree ? atomic_load(&tree->now_bytes) : -1;
                if (tree_now > rss) rss = tree_now;
                if (rss > watch_max) watch_max = rss;
                if (enforce == FTB_ENFORCE_WATCH && rss > c->budget_bytes) {
                    watch_killed = 1;
                    kill(-pid, SIGKILL);
                    kill(pid, SIGKILL);
                } else if (rss > safety) {
                    safety_killed = 1;
                    kill(-pid, SIGKILL);
                    kill(pid, SIGKILL);
                }
            }
        }
        if (eof && !reaped && (timed_out || watch_killed || safety_killed)) {
            /* Killed: reap without spinning. */
            if (wait4(pid, &status, 0, &ru) == pid) reaped = 1;
        }
    }
    close(fds[0]);
    /* Grandchildren a plugin may have left behind share the group. */
    kill(-pid, SIGKILL);
    remove_temporaries_of(run_fd, pid);
    g_child_pgid = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    r->wall = ftb_now() - t_start;

    /* A child killed while writing a file leaves its temporary. */
    ftb_sf_remove_temps(run_fd, (int)pid);
    if (g_interrupted) {
        /* Stopped by the user: not a measurement, and nothing of it stays
         * (no snapshot, no timeline, no record): the cell runs again on
         * resume. */
        unlinkat(run_fd, child_json, 0);
        unlinkat(run_fd, timeline, 0);
        close(run_fd);
        ftb_cgroup_destroy(&cg);
        return FTB_CELL_INTERRUPTED;
    }
    json_t *m = NULL;
    {
        int mfd = openat(run_fd, child_json, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat mst;
        if (mfd >= 0 && fstat(mfd, &mst) == 0 && S_ISREG(mst.st_mode)) {
            json_error_t je;
            m = json_loadfd(mfd, 0, &je);
        }
        if (mfd >= 0) close(mfd);
    }
    const char *stage = m ? json_string_value(json_object_get(m, "stage")) : NULL;
    int64_t vmhwm = jget_int(m, "memory", "peak_rss_vmhwm_bytes");
    int64_t maxrss = (int64_t)ru.ru_maxrss * 1024;
    int64_t cg_peak = cg.active ? ftb_cgroup_peak(&cg) : -1;
    int64_t oom_kills = cg.active ? ftb_cgroup_oom_kills(&cg) : -1;
    /* VmHWM is read by the child at the end of the last step: the peak of
     * the measurement itself.  ru_maxrss also covers the child's final
     * bookkeeping (timeline, record), so it is only the fallback, with what
     * the parent saw, when the child died before reading VmHWM. */
    int64_t process_peak = vmhwm;
    if (process_peak <= 0) process_peak = maxrss > watch_proc_max ? maxrss : watch_proc_max;
    /* The cell's peak is its process tree's: the largest of the process's
     * own peak, the sampled sums over the tree (child and parent views),
     * and the largest waited-for descendant (the kernel's ru_maxrss). */
    int64_t tree_sampled = tree ? atomic_load(&tree->max_bytes) : -1;
    int tree_procs = tree ? atomic_load(&tree->max_procs) : 0;
    ftb_tree_shared_free(tree);
    int64_t descendants = jget_int(m, "memory", "descendants_max_rss_bytes");
    int had_children = tree_procs > 1 || descendants > 0;
    int64_t peak = process_peak;
    /* Only when there were descendants: a lone process's peak is its VmHWM
     * (the parent's view also covers the child's bookkeeping after the
     * measurement, so it only stands in when the child died first). */
    if (had_children && tree_sampled > peak) peak = tree_sampled;
    if (had_children && descendants > peak) peak = descendants;
    if (vmhwm <= 0 && watch_max > peak) peak = watch_max;
    r->peak_rss = peak > 0 ? peak : -1;
    char tree_note[96] = "", budget_s[32];
    ftb_format_bytes(c->budget_bytes, budget_s, sizeof budget_s);
    if (had_children && peak > 0 && process_peak > 0 && peak > process_peak)
        snprintf(tree_note, sizeof tree_note, " (process tree of %d; the cell's own process %.0f MiB)",
                 tree_procs > 1 ? tree_procs : 2, mib(process_peak));
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    /* A SIGKILL the harness did not send is an out-of-memory kill only with
     * evidence: the cgroup's oom_kill count, the kernel log naming the pid,
     * or a peak at the limit that was enforced. */
    char kernel_log[300] = "";
    int kernel_oom = 0;
    if (sig == SIGKILL && !timed_out && !watch_killed && !safety_killed && oom_kills <= 0)
        kernel_oom = ftb_kmsg_find_oom_kill(pid, t_start - 1.0, kernel_log, sizeof kernel_log);
    char where[64];
    if (!strcmp(last_what, "load"))
        snprintf(where, sizeof where, "model load");
    else if (!strcmp(last_what, "init"))
        snprintf(where, sizeof where, "method init");
    else if (!strcmp(last_what, "step") && last_step < last_total)
        snprintf(where, sizeof where, "step %d of %d", last_step + 1, last_total);
    else if (!strcmp(last_what, "step") || !strcmp(last_what, "done"))
        snprintf(where, sizeof where, "the end of the cell");
    else
        snprintf(where, sizeof where, "start-up");

    if (timed_out) {
        set_outcome(r, "timeout", "no result within %.0f s (during %s); the cell's process group was killed",
                    c->timeout_sec, where);
    } else if (watch_killed) {
        set_outcome(r, "over_budget", "RSS reached %.0f MiB%s, over the budget of %s; killed by the rss watch",
                    mib(watch_max), tree_note, budget_s);
    } else if (safety_killed) {
        if (watch_max > c->budget_bytes)
            set_outcome(r, "over_budget",
                        "RSS reached %.0f MiB, over the budget of %s, and was killed at the host's "
                        "safety limit (90%% of MemAvailable)",
                        mib(watch_max), budget_s);
        else
            set_outcome(r, "oom",
                        "RSS reached %.0f MiB: killed at the host's safety limit (90%% of "
                        "MemAvailable); this host has less memory than the device",
                        mib(watch_max));
    } else if (sig == SIGKILL && oom_kills > 0) {
        set_outcome(r, "oom", "killed by the cgroup memory.max limit of %.0f MiB (memory.events oom_kill=%lld)",
                    mib(c->budget_bytes), (long long)oom_kills);
    } else if (sig == SIGKILL && kernel_oom > 0) {
        set_outcome(r, "oom", "killed by the kernel OOM killer during %s; the kernel log says: %s", where, kernel_log);
    } else if (sig == SIGKILL && enforce == FTB_ENFORCE_CGROUP && cg_peak >= c->budget_bytes * 0.95) {
        set_outcome(r, "oom", "SIGKILL during %s with the cgroup's peak at %.0f MiB, at its memory.max of %.0f MiB",
                    where, mib(cg_peak), mib(c->budget_bytes));
    } else if (sig == SIGKILL && watch_max >= safety * 0.95) {
        set_outcome(r, "oom", "SIGKILL during %s with RSS at %.0f MiB, at the host's available memory", where,
                    mib(watch_max));
    } else if (sig && !is_fault_signal(sig)) {
        /* Sent from outside, with no sign of a memory limit: not "oom", and
         * no reason to skip the method's longer lengths. */
        char seen[64] = "";
        int64_t at = watch_max > 0 ? watch_max : cg_peak;
        if (at > 0) snprintf(seen, sizeof seen, " at %.0f MiB RSS", mib(at));
        set_outcome(r, "killed",
                    "%s (signal %d) from outside the harness during %s%s; no sign of an out-of-memory kill "
                    "(%s)",
                    ftb_signal_name(sig), sig, where, seen, kernel_oom < 0 ? kernel_log : "nothing in the kernel log");
    } else if (sig) {
        set_outcome(r, "crashed", "%s (signal %d) during %s", ftb_signal_name(sig), sig, where);
    } else if (io_errno) {
        /* A full disk (or an I/O error) where the child keeps its
         * measurements: what it measured is lost, the cause is not. */
        set_outcome(r, "error",
                    "the cell could not write its measurements (%s/%s) during %s: %s (%s); nothing it "
                    "measured was kept",
                    c->run_dir, child_json, where, strerror(io_errno),
                    strerrorname_np(io_errno) ? strerrorname_np(io_errno) : "?");
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK && stage && !strcmp(stage, "done")) {
        if (enforce != FTB_ENFORCE_CGROUP && peak > c->budget_bytes)
            set_outcome(r, "over_budget", "peak RSS %.0f MiB%s exceeds the budget of %s (%s)", mib(peak), tree_note,
                        budget_s, ftb_enforce_name(enforce));
        else
            set_outcome(r, "ok", "%s", "");
    } else {
        const char *e = m ? json_string_value(json_object_get(m, "error")) : NULL;
        if (e)
            set_outcome(r, "error", "%s", e);
        else
            set_outcome(r, "error", "the cell exited with status %d without a result (during %s)",
                        WIFEXITED(status) ? WEXITSTATUS(status) : -1, where);
    }

    /* The record. */
    json_t *rec = json_object();
    json_object_set_new(rec, "schema", json_integer(FTB_RECORD_SCHEMA));
    json_object_set_new(rec, "run_id", json_string(c->run_id));
    json_object_set_new(rec, "cell", json_string(c->key));
    json_object_set_new(rec, "outcome", json_string(r->outcome));
    json_object_set_new(rec, "outcome_detail", json_string(r->detail));
    if (sig) {
        json_t *s = json_object();
        json_object_set_new(s, "number", json_integer(sig));
        json_object_set_new(s, "name", json_string(ftb_signal_name(sig)));
        json_object_set_new(rec, "signal", s);
    }
    json_object_set_new(rec, "stage_reached", json_string(stage ? stage : "start"));
    describe_cell(rec, c, m, ts, git, enforce, enforce_note);

    /* What the child measured (partial if it did not finish). */
    json_t *mem = m ? json_object_get(m, "memory") : NULL;
    json_t *memo = mem ? json_deep_copy(mem) : json_object();
    json_object_set_new(memo, "peak_rss_ru_maxrss_bytes", maxrss > 0 ? json_integer(maxrss) : json_null());
    if (!json_object_get(memo, "peak_rss_vmhwm_bytes")) json_object_set_new(memo, "peak_rss_vmhwm_bytes", json_null());
    if (watch_max > 0) json_object_set_new(memo, "parent_observed_max_rss_bytes", json_integer(watch_max));
    if (cg.active) {
        json_object_set_new(memo, "cgroup_peak_bytes", cg_peak >= 0 ? json_integer(cg_peak) : json_null());
        json_object_set_new(memo, "cgroup_oom_kills", oom_kills >= 0 ? json_integer(oom_kills) : json_null());
    }
    json_object_set_new(memo, "peak_rss_bytes", r->peak_rss > 0 ? json_integer(r->peak_rss) : json_null());
    json_object_set_new(memo, "process_peak_rss_bytes", process_peak > 0 ? json_integer(process_peak) : json_null());
    json_object_set_new(memo, "tree_peak_rss_bytes", r->peak_rss > 0 ? json_integer(r->peak_rss) : json_null());
    json_object_set_new(memo, "tree_max_processes", json_integer(tree_procs > 0 ? tree_procs : 1));
    /* Without the child's own VmHWM (it was killed or died first) the peak
     * is only what was seen before the end: a lower bound. */
    json_object_set_new(memo, "peak_is_lower_bound", json_boolean(vmhwm <= 0));
    json_object_set_new(rec, "memory", memo);
    static const char *const copy_keys[] = { "timing",
                                             "loss_per_step",
                                             "step_seconds_all",
                                             "forward_passes_per_step",
                                             "trainable_params",
                                             "trainable_params_source",
                                             "threads",
                                             "load_seconds",
                                             "init_seconds",
                                             "hw_counters",
                                             "marks",
                                             "timeline",
                                             "host",
                                             "error",
                                             "error_stage",
                                             NULL };
    for (int i = 0; m && copy_keys[i]; i++) {
        json_t *v = json_object_get(m, copy_keys[i]);
        if (v) json_object_set(rec, copy_keys[i], v);
    }
    /* What the command's between-steps hook added (train's evaluations). */
    json_object_update(rec, json_object_get(m, "between_steps"));
    if (!json_object_get(rec, "hw_counters")) {
        json_t *h = json_object();
        json_object_set_new(h, "available", json_false());
        json_object_set_new(h, "reason", json_string("the cell ended before counters were read"));
        json_object_set_new(rec, "hw_counters", h);
    }
    json_t *host = json_object_get(rec, "host");
    if (!host) {
        host = json_object();
        json_object_set_new(rec, "host", host);
    }
    json_object_set_new(host, "cores", json_integer(ftb_host_cores()));
    double gf = ftb_host_sgemm_gflops(c->threads);
    json_object_set_new(host, "sgemm_gflops_512", gf > 0 ? json_real(gf) : json_null());
    json_object_set_new(host, "ram_bytes", json_integer(ftb_meminfo("MemTotal")));
    /* Which machine and CPUs measured it: records from unlike nodes (a
     * cluster) must not be compared as if alike. */
    char cpu[256], affinity[512];
    ftb_host_cpu_model(cpu, sizeof cpu);
    ftb_host_cpu_affinity(affinity, sizeof affinity);
    json_object_set_new(host, "cpu_model", json_string(cpu));
    json_object_set_new(host, "cpu_affinity", json_string(affinity));
    json_t *step_med = json_object_get(json_object_get(json_object_get(rec, "timing"), "step_seconds"), "median");
    r->step_median = json_is_number(step_med) ? json_number_value(step_med) : 0;
    if (c->emulated && r->step_median > 0)
        json_object_set_new(host, "measured_step_seconds", json_real(r->step_median));

    int64_t trainable = jget_int(m, "trainable_params", NULL);
    if (trainable >= 0 || !m) {
        json_t *fp = json_array_get(json_object_get(m, "forward_passes_per_step"), 0);
        int passes = json_is_integer(fp) ? (int)json_integer_value(fp) : 1;
        int hb = m ? json_is_true(json_object_get(m, "has_backward")) : 1;
        int64_t saved = -1;
        json_t *core_peak = json_object_get(json_object_get(mem, "core"), "peak_bytes");
        json_t *sv = json_object_get(core_peak, "saved");
        if (json_is_integer(sv)) saved = (int64_t)json_integer_value(sv);
        json_t *proj = ftb_roofline_projection(&c->device, &c->cfg, c->batch, c->seq, trainable > 0 ? trainable : 0,
                                               passes, hb, saved);
        json_object_set_new(proj, "device", json_string(c->device.name));
        json_object_set_new(rec, "projection", proj);
    }
    struct stat tst;
    if (m && json_object_get(m, "timeline") && !timeline_errno &&
        fstatat(run_fd, timeline, &tst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(tst.st_mode))
        json_object_set_new(rec, "timeline_file", json_string(timeline));
    if (io_errno || timeline_errno) {
        json_t *ioe = json_object();
        int e = io_errno ? io_errno : timeline_errno;
        json_object_set_new(ioe, "file", json_string(io_errno ? child_json : timeline));
        json_object_set_new(ioe, "errno", json_integer(e));
        json_object_set_new(ioe, "name", json_string(strerrorname_np(e) ? strerrorname_np(e) : "?"));
        json_object_set_new(ioe, "message", json_string(strerror(e)));
        json_object_set_new(rec, io_errno ? "io_error" : "timeline_error", ioe);
    }
    json_object_set_new(rec, "cell_wall_seconds", json_real(r->wall));
    if (c->extra) {
        const char *k;
        json_t *v;
        json_object_foreach(c->extra, k, v) json_object_set(rec, k, v);
    }
    json_object_set_new(rec, "settings", ftb_cell_settings(c));
    json_decref(m);
    unlinkat(run_fd, child_json, 0);
    close(run_fd);
    ftb_cgroup_destroy(&cg);

    int rc = ftb_rundir_write_record(c->run_dir, c->key, rec, err, errlen);
    r->record = rec;
    return rc;
}

void ftb_cell_result_free(ftb_cell_result *r)
{
    json_decref(r->record);
    r->record = NULL;
}

int ftb_cell_record_outcome(const ftb_cell *c, const char *outcome, const char *detail, const char *field,
                            json_t *value, char *err, size_t errlen)
{
    char ts[32];
    ftb_utc_timestamp(ts, sizeof ts);
    json_t *rec = json_object();
    json_object_set_new(rec, "schema", json_integer(FTB_RECORD_SCHEMA));
    json_object_set_new(rec, "run_id", json_string(c->run_id));
    json_object_set_new(rec, "cell", json_string(c->key));
    json_object_set_new(rec, "outcome", json_string(outcome));
    json_object_set_new(rec, "outcome_detail", json_string(detail));
    if (field && value) json_object_set(rec, field, value);
    describe_cell(rec, c, NULL, ts, ftb_git_revision(), c->enforce, c->enforce_note);
    if (c->extra) {
        const char *k;
        json_t *v;
        json_object_foreach(c->extra, k, v) json_object_set(rec, k, v);
    }
    json_object_set_new(rec, "settings", ftb_cell_settings(c));
    int rc = ftb_rundir_write_record(c->run_dir, c->key, rec, err, errlen);
    json_decref(rec);
    return rc;
}

int ftb_cell_record_skipped(const ftb_cell *c, const char *because, int seq, char *err, size_t errlen)
{
    char detail[600];
    snprintf(detail, sizeof detail,
             "not run: %s was already over the budget at seq %d (cell %s), and memory only grows with the length",
             c->method_label, seq, because);
    json_t *b = json_string(because);
    int rc = ftb_cell_record_outcome(c, "skipped", detail, "skipped_because", b, err, errlen);
    json_decref(b);
    return rc;
}
