/*
 * record.c — the one writer of records, and what resume reads back from
 * them (the settings a record was measured with).  See record.h.
 */
#include "record.h"
#include "rundir.h"
#include "util.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

/* The record's description of the cell: what was measured, where, how. */
static void describe_cell(json_t *rec, const ftb_record *r)
{
    const ftb_cell *c = r->cell;
    json_t *m = r->measured;
    const char *ts = r->timestamp_utc, *git = r->git_rev ? r->git_rev : "";
    ftb_enforce enforce = r->enforcement;
    const char *enforce_note = r->enforcement_note ? r->enforcement_note : "";
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

static json_t *jint_or_null(int64_t v) { return v > 0 ? json_integer((json_int_t)v) : json_null(); }

/* The sections of the child's measurements (cell_child.c) the record
 * carries as they are, in this order.  "memory", "base", "method_name",
 * "method_summary" and "has_backward" are read by the writer itself. */
static const char *const measured_sections[] = { "timing",
                                                 "ops",
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

/* What the cell measured and the parent saw: memory, the child's sections,
 * the host, the roofline projection, files and errors. */
static void write_measurements(json_t *rec, const ftb_record *r)
{
    const ftb_cell *c = r->cell;
    json_t *m = r->measured;
    /* What the child measured (partial if it did not finish). */
    json_t *mem = m ? json_object_get(m, "memory") : NULL;
    json_t *memo = mem ? json_deep_copy(mem) : json_object();
    json_object_set_new(memo, "peak_rss_ru_maxrss_bytes", jint_or_null(r->memory.ru_maxrss));
    if (!json_object_get(memo, "peak_rss_vmhwm_bytes")) json_object_set_new(memo, "peak_rss_vmhwm_bytes", json_null());
    if (r->memory.parent_observed_max > 0)
        json_object_set_new(memo, "parent_observed_max_rss_bytes", json_integer(r->memory.parent_observed_max));
    if (r->memory.cgroup) {
        json_object_set_new(memo, "cgroup_peak_bytes",
                            r->memory.cgroup_peak >= 0 ? json_integer(r->memory.cgroup_peak) : json_null());
        json_object_set_new(memo, "cgroup_oom_kills",
                            r->memory.cgroup_oom_kills >= 0 ? json_integer(r->memory.cgroup_oom_kills) : json_null());
    }
    json_object_set_new(memo, "peak_rss_bytes", jint_or_null(r->memory.peak));
    json_object_set_new(memo, "process_peak_rss_bytes", jint_or_null(r->memory.process_peak));
    json_object_set_new(memo, "tree_peak_rss_bytes", jint_or_null(r->memory.peak));
    json_object_set_new(memo, "tree_max_processes",
                        json_integer(r->memory.tree_max_processes > 0 ? r->memory.tree_max_processes : 1));
    /* Without the child's own VmHWM (it was killed or died first) the peak
     * is only what was seen before the end: a lower bound. */
    json_object_set_new(memo, "peak_is_lower_bound", json_boolean(r->memory.peak_is_lower_bound));
    if (r->plan) json_object_set(memo, "plan", r->plan);
    json_object_set_new(rec, "memory", memo);
    for (int i = 0; m && measured_sections[i]; i++) {
        json_t *v = json_object_get(m, measured_sections[i]);
        if (v) json_object_set(rec, measured_sections[i], v);
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
    } else {
        /* The child's section is shared with `measured`: the parent's
         * figures go into a copy. */
        host = json_deep_copy(host);
        json_object_set_new(rec, "host", host);
    }
    json_object_set_new(host, "cores", json_integer(r->host.cores));
    json_object_set_new(host, "sgemm_gflops_512",
                        r->host.sgemm_gflops_512 > 0 ? json_real(r->host.sgemm_gflops_512) : json_null());
    json_object_set_new(host, "ram_bytes", json_integer(r->host.ram_bytes));
    /* Which machine and CPUs measured it: records from unlike nodes (a
     * cluster) must not be compared as if alike. */
    json_object_set_new(host, "cpu_model", json_string(r->host.cpu_model));
    json_object_set_new(host, "cpu_affinity", json_string(r->host.cpu_affinity));
    /* ops.classes.*.page_faults × this estimates a class's first-touch time. */
    if (r->host.page_fault_seconds > 0)
        json_object_set_new(host, "page_fault_seconds", json_real(r->host.page_fault_seconds));
    if (r->host.measured_step_seconds > 0)
        json_object_set_new(host, "measured_step_seconds", json_real(r->host.measured_step_seconds));

    json_t *tp = json_object_get(m, "trainable_params");
    int64_t trainable = json_is_integer(tp) ? (int64_t)json_integer_value(tp) : -1;
    if (trainable >= 0 || !m) {
        json_t *fp = json_array_get(json_object_get(m, "forward_passes_per_step"), 0);
        int passes = json_is_integer(fp) ? (int)json_integer_value(fp) : 1;
        int hb = m ? json_is_true(json_object_get(m, "has_backward")) : 1;
        int64_t saved = -1;
        json_t *core_peak = json_object_get(json_object_get(mem, "core"), "peak_bytes");
        json_t *sv = json_object_get(core_peak, ftb_mem_category_name(FTB_MEM_SAVED));
        if (json_is_integer(sv)) saved = (int64_t)json_integer_value(sv);
        json_t *proj = ftb_roofline_projection(&c->device, &c->cfg, c->batch, c->seq, trainable > 0 ? trainable : 0,
                                               passes, hb, saved);
        json_object_set_new(proj, "device", json_string(c->device.name));
        json_object_set_new(rec, "projection", proj);
    }
    if (r->timeline_file) json_object_set_new(rec, "timeline_file", json_string(r->timeline_file));
    if (r->io_error.errno_value) {
        int e = r->io_error.errno_value;
        json_t *ioe = json_object();
        json_object_set_new(ioe, "file", json_string(r->io_error.file));
        json_object_set_new(ioe, "errno", json_integer(e));
        json_object_set_new(ioe, "name", json_string(strerrorname_np(e) ? strerrorname_np(e) : "?"));
        json_object_set_new(ioe, "message", json_string(strerror(e)));
        json_object_set_new(rec, r->io_error.timeline ? "timeline_error" : "io_error", ioe);
    }
    json_object_set_new(rec, "cell_wall_seconds", json_real(r->cell_wall_seconds));
}

static json_t *record_json(const ftb_record *r, int with_settings)
{
    const ftb_cell *c = r->cell;
    json_t *rec = json_object();
    json_object_set_new(rec, "schema", json_integer(FTB_RECORD_SCHEMA));
    json_object_set_new(rec, "run_id", json_string(c->run_id));
    json_object_set_new(rec, "cell", json_string(c->key));
    json_object_set_new(rec, "outcome", json_string(r->outcome));
    json_object_set_new(rec, "outcome_detail", json_string(r->detail));
    if (r->field && r->field_value) json_object_set(rec, r->field, r->field_value);
    if (r->signal) {
        json_t *s = json_object();
        json_object_set_new(s, "number", json_integer(r->signal));
        json_object_set_new(s, "name", json_string(ftb_signal_name(r->signal)));
        json_object_set_new(rec, "signal", s);
    }
    if (r->ran) {
        const char *stage = json_string_value(json_object_get(r->measured, "stage"));
        json_object_set_new(rec, "stage_reached", json_string(stage ? stage : "start"));
    }
    describe_cell(rec, r);
    if (r->ran) write_measurements(rec, r);
    if (c->extra) {
        const char *k;
        json_t *v;
        json_object_foreach(c->extra, k, v) json_object_set(rec, k, v);
    }
    if (with_settings) json_object_set_new(rec, "settings", ftb_cell_settings(c));
    return rec;
}

json_t *ftb_record_json(const ftb_record *r) { return record_json(r, 1); }

void ftb_record_init_not_run(ftb_record *r, const ftb_cell *c, const char *outcome, const char *detail)
{
    memset(r, 0, sizeof *r);
    r->cell = c;
    r->outcome = outcome;
    r->detail = detail;
    ftb_utc_timestamp(r->timestamp_utc, sizeof r->timestamp_utc);
    r->git_rev = ftb_git_revision();
    r->enforcement = c->enforce;
    r->enforcement_note = c->enforce_note;
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
    ftb_record r;
    ftb_record_init_not_run(&r, c, "", "");
    r.git_rev = "";
    r.enforcement_note = "";
    json_t *rec = record_json(&r, 0);
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

int ftb_cell_record_outcome(const ftb_cell *c, const char *outcome, const char *detail, const char *field,
                            json_t *value, char *err, size_t errlen)
{
    ftb_record r;
    ftb_record_init_not_run(&r, c, outcome, detail);
    r.field = field;
    r.field_value = value;
    json_t *rec = ftb_record_json(&r);
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
