/* bench_quant.c — `make bench-quant`: what the storage format of the frozen
 * base costs and saves, fine-tuning a zoo model with a method plugin (LoRA
 * by default) on a quantized, memory-mapped base (docs/QUANT.md).
 *
 * For each format the zoo model's seeded weights are quantized once by the
 * harness's own preparation (harness/base.c, the one `ftbench run
 * --base-dtype` uses: the quantization error per tensor and the loss
 * difference against fp32 on a batch are measured then) and saved to the
 * model cache (--cache, else ftbench's: ~/.cache/ftbench/models); each (format,
 * residency) cell then runs in a fresh child process that maps that file,
 * sets the residency policy, initialises the method and runs warm-up and
 * measured steps.  Per cell: the process's peak RSS (VmHWM, load included),
 * the peak of mapped file pages (RssFile, sampled every 2 ms), tokens/s and
 * the share of step time spent dequantizing.  A benchmark: it prints
 * figures, it passes no verdict. */
#include "base.h"
#include "ftbench.h"
#include "plugin.h"

#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    const char *model, *cache, *methods_dir, *method, *embed, *keep;
    int seq, batch, steps, warmup, group, threads;
    uint64_t seed;
    char formats[16][24];
    int n_formats;
    int residency[2], n_residency;
    const char *opt_keys[16], *opt_values[16];
    int n_opts;
} bench_opts;

/* ---- /proc/self/status ---------------------------------------------------- */

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') v = atol(line + n + 1);
    if (f) fclose(f);
    return v;
}

static atomic_long peak_file_kb, peak_anon_kb;
static atomic_int sampling;
static char peak_file_phase[64];

static void *sampler(void *arg)
{
    (void)arg;
    while (atomic_load(&sampling)) {
        long f = status_kb("RssFile"), a = status_kb("RssAnon");
        if (f > atomic_load(&peak_file_kb)) {
            atomic_store(&peak_file_kb, f);
            snprintf(peak_file_phase, sizeof peak_file_phase, "%s", ftb_mem_phase());
        }
        if (a > atomic_load(&peak_anon_kb)) atomic_store(&peak_anon_kb, a);
        usleep(2000);
    }
    return NULL;
}

/* ---- preparing one format's checkpoint ------------------------------------ */

static const char *embed_format(const bench_opts *o, const char *fmt)
{
    return !strcmp(o->embed, "same") ? fmt : o->embed;
}

static void fill_batch(int32_t *tok, int32_t *tgt, int n, int V, uint64_t seed)
{
    ftb_rng r;
    ftb_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)(ftb_rng_u64(&r) % (uint64_t)V);
    for (int i = 0; i < n; i++) tgt[i] = i + 1 < n ? tok[i + 1] : FTB_IGNORE_INDEX;
}

/* The harness's preparation (in a child of its own): seeded model →
 * quantize (errors, loss difference) → save; cached. */
static int prepare(const bench_opts *o, const char *fmt, char *dir, size_t dirn, json_t **info)
{
    char err[FTB_ERR_LEN] = "";
    ftb_config cfg;
    if (ftb_zoo_get(o->model, &cfg)) {
        fprintf(stderr, "unknown model %s\n", o->model);
        return 1;
    }
    ftb_base_spec b;
    ftb_base_spec_default(&b);
    if (ftb_base_parse_option(&b, "--base-dtype", fmt, err, sizeof err) ||
        (strcmp(o->embed, "same") && ftb_base_parse_option(&b, "--embed-dtype", o->embed, err, sizeof err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    b.group = o->group;
    if (ftb_base_check(&b, &cfg, o->model, err, sizeof err) ||
        ftb_base_prepare(&b, &cfg, o->model, NULL, o->seed, o->threads > 0 ? o->threads : ftb_get_threads(), 0, dir,
                         dirn, info, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}

/* ---- one measured cell ---------------------------------------------------- */

typedef struct {
    double tokens_per_s, step_s, best_step_s, dequant_share, fwd_s, bwd_s;
    long hwm_kb, peak_file_kb, peak_anon_kb, rss_after_load_kb, file_after_load_kb;
    double weights_mib, workspace_peak_mib, file_mib;
    char peak_phase[64];
    float loss;
    int ok;
} cell_result;

static int run_cell(const bench_opts *o, const char *dir, int residency, cell_result *r)
{
    char err[FTB_ERR_LEN] = "";
    memset(r, 0, sizeof *r);
    if (o->threads > 0) ftb_set_threads(o->threads);
    ftb_model *m = ftb_model_load(dir, 1, err, sizeof err);
    if (!m) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    r->rss_after_load_kb = status_kb("VmRSS");
    r->file_after_load_kb = status_kb("RssFile"); /* libraries' pages and the header: the baseline */
    ftb_model_set_residency(m, (ftb_residency)residency);
    ftb_plugin p;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.so", o->methods_dir, o->method);
    if (ftb_plugin_open(path, &p, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    ftb_options opts = { o->n_opts, o->opt_keys, o->opt_values };
    ftb_session s;
    memset(&s, 0, sizeof s);
    s.model = m;
    ftb_run_opts_default(&s.run);
    s.options = &opts;
    s.seed = 7;
    s.lr = 1e-4f;
    s.total_steps = o->warmup + o->steps;
    void *state = p.method->init(&s, err, sizeof err);
    if (!state) {
        fprintf(stderr, "%s: %s\n", o->method, err);
        return 1;
    }
    ftb_keep_policy *keep = NULL;
    if (!strcmp(o->keep, "input")) {
        keep = calloc((size_t)m->cfg.n_layers, sizeof *keep);
        for (int l = 0; l < m->cfg.n_layers; l++) keep[l] = FTB_KEEP_INPUT;
        s.run.keep = keep;
    }
    int N = o->batch * o->seq;
    int32_t *tok = malloc(sizeof(int32_t) * N), *tgt = malloc(sizeof(int32_t) * N);
    pthread_t th;
    atomic_store(&sampling, 1);
    pthread_create(&th, NULL, sampler, NULL);
    double t_meas = 0, deq = 0, fwd = 0, bwd = 0, best = 1e30;
    ftb_step_result sr;
    for (int step = 0; step < o->warmup + o->steps; step++) {
        fill_batch(tok, tgt, N, m->cfg.vocab_size, 1000 + (uint64_t)step);
        ftb_batch b = { o->batch, o->seq, tok, tgt };
        memset(&sr, 0, sizeof sr);
        double d0;
        ftb_dequant_stats(&d0, NULL);
        if (step == o->warmup) ftb_mem_reset_peaks();
        double t0 = ftb_now();
        if (p.method->step(state, &s, &b, &sr, err, sizeof err)) {
            fprintf(stderr, "step: %s\n", err);
            return 1;
        }
        double t = ftb_now() - t0, d1;
        ftb_dequant_stats(&d1, NULL);
        if (step >= o->warmup) {
            t_meas += t;
            best = t < best ? t : best;
            deq += d1 - d0;
            fwd += sr.t_forward;
            bwd += sr.t_backward;
        }
        r->loss = sr.loss;
    }
    atomic_store(&sampling, 0);
    pthread_join(th, NULL);
    ftb_mem_stats ms;
    ftb_mem_get_stats(&ms);
    r->step_s = t_meas / o->steps;
    r->best_step_s = best;
    r->tokens_per_s = (double)N * o->steps / t_meas;
    r->dequant_share = deq / t_meas;
    r->fwd_s = fwd / o->steps;
    r->bwd_s = bwd / o->steps;
    r->hwm_kb = status_kb("VmHWM");
    r->peak_file_kb = atomic_load(&peak_file_kb);
    r->peak_anon_kb = atomic_load(&peak_anon_kb);
    snprintf(r->peak_phase, sizeof r->peak_phase, "%s", peak_file_phase);
    r->weights_mib = ms.live[FTB_MEM_WEIGHTS] / 1048576.0;
    r->workspace_peak_mib = ms.peak[FTB_MEM_WORKSPACE] / 1048576.0;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat st;
    r->file_mib = stat(path, &st) == 0 ? st.st_size / 1048576.0 : 0;
    r->ok = 1;
    p.method->destroy(state);
    free(keep);
    free(tok);
    free(tgt);
    ftb_model_free(m);
    ftb_plugin_close(&p);
    return 0;
}

/* Forks: f runs in the child; its result comes back through a pipe. */
static int in_child(int (*f)(const bench_opts *, const char *, int, cell_result *), const bench_opts *o,
                    const char *dir, int arg, cell_result *r)
{
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        cell_result res;
        memset(&res, 0, sizeof res);
        int rc = f(o, dir, arg, &res);
        if (write(fd[1], &res, sizeof res) != (ssize_t)sizeof res) rc = 1;
        _exit(rc);
    }
    close(fd[1]);
    memset(r, 0, sizeof *r);
    ssize_t got = read(fd[0], r, sizeof *r);
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return got == (ssize_t)sizeof *r && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---- main ----------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_quant [--model qwen2.5-0.5b] [--seq 256] [--batch 1] [--steps 3] [--warmup 1]\n"
            "                   [--formats f32,bf16,f16,int8,int4,int4-asym] [--group 64] [--embed same|f32|int8|...]\n"
            "                   [--residency all,lazy] [--keep all|input] [--method lora] [--opt key=value]...\n"
            "                   [--methods-dir build/methods] [--cache DIR (default: ftbench's model cache)]\n"
            "                   [--threads N] [--seed 42]\n");
}

int main(int argc, char **argv)
{
    ftb_blas_autoselect(argc, argv);
    bench_opts o = { .model = "qwen2.5-0.5b",
                     .cache = NULL,
                     .methods_dir = "build/methods",
                     .seed = 42,
                     .method = "lora",
                     .embed = "same",
                     .keep = "all",
                     .seq = 256,
                     .batch = 1,
                     .steps = 3,
                     .warmup = 1,
                     .group = 64 };
    const char *formats = "f32,bf16,f16,int8,int4,int4-asym", *residency = "all,lazy";
    static struct option lo[] = { { "model", 1, 0, 'm' },       { "seq", 1, 0, 's' },    { "batch", 1, 0, 'b' },
                                  { "steps", 1, 0, 'n' },       { "warmup", 1, 0, 'w' }, { "formats", 1, 0, 'f' },
                                  { "group", 1, 0, 'g' },       { "embed", 1, 0, 'e' },  { "residency", 1, 0, 'r' },
                                  { "keep", 1, 0, 'k' },        { "method", 1, 0, 'M' }, { "opt", 1, 0, 'o' },
                                  { "methods-dir", 1, 0, 'd' }, { "cache", 1, 0, 'c' },  { "threads", 1, 0, 't' },
                                  { "seed", 1, 0, 'S' },        { "help", 0, 0, 'h' },   { 0, 0, 0, 0 } };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'm': o.model = optarg; break;
        case 's': o.seq = atoi(optarg); break;
        case 'b': o.batch = atoi(optarg); break;
        case 'n': o.steps = atoi(optarg); break;
        case 'w': o.warmup = atoi(optarg); break;
        case 'f': formats = optarg; break;
        case 'g': o.group = atoi(optarg); break;
        case 'e': o.embed = optarg; break;
        case 'r': residency = optarg; break;
        case 'k': o.keep = optarg; break;
        case 'M': o.method = optarg; break;
        case 'd': o.methods_dir = optarg; break;
        case 'c': o.cache = optarg; break;
        case 't': o.threads = atoi(optarg); break;
        case 'S': o.seed = strtoull(optarg, NULL, 10); break;
        case 'o': {
            char *eq = strchr(optarg, '=');
            if (!eq || o.n_opts == 16) {
                usage();
                return 2;
            }
            *eq = 0;
            o.opt_keys[o.n_opts] = optarg;
            o.opt_values[o.n_opts++] = eq + 1;
            break;
        }
        default: usage(); return ch == 'h' ? 0 : 2;
        }
    }
    if (o.seq <= 0 || o.batch <= 0 || o.steps <= 0 || o.warmup < 0) {
        usage();
        return 2;
    }
    char *fl = strdup(formats);
    for (char *tok = strtok(fl, ","); tok && o.n_formats < 16; tok = strtok(NULL, ",")) {
        if (ftb_dtype_parse(tok) < 0) {
            fprintf(stderr, "unknown format '%s'\n", tok);
            return 2;
        }
        snprintf(o.formats[o.n_formats++], sizeof o.formats[0], "%s", tok);
    }
    free(fl);
    if (strcmp(o.embed, "same") && ftb_dtype_parse(o.embed) < 0) {
        fprintf(stderr, "unknown embedding format '%s'\n", o.embed);
        return 2;
    }
    if (strstr(residency, "all")) o.residency[o.n_residency++] = FTB_RESIDENT_ALL;
    if (strstr(residency, "lazy")) o.residency[o.n_residency++] = FTB_RESIDENT_LAZY_BLOCK;
    if (o.cache) setenv("FTBENCH_MODEL_CACHE", o.cache, 1); /* where the harness's preparation caches */

    printf("# bench_quant: %s, T=%d, batch %d, method %s", o.model, o.seq, o.batch, o.method);
    for (int i = 0; i < o.n_opts; i++) printf(" %s=%s", o.opt_keys[i], o.opt_values[i]);
    printf(", keep %s, %d warm-up + %d measured steps, group %d, embeddings %s\n", o.keep, o.warmup, o.steps, o.group,
           o.embed);
    printf("# BLAS %s (%s), threads %d, CPU %s\n", ftb_blas_corename(), ftb_blas_selection(), ftb_get_threads(),
           ftb_cpu_features());
    double load[3];
    if (getloadavg(load, 3) == 3) printf("# load average at start: %.2f %.2f %.2f\n", load[0], load[1], load[2]);

    char dirs[16][4096];
    for (int f = 0; f < o.n_formats; f++) {
        json_t *info = NULL;
        if (prepare(&o, o.formats[f], dirs[f], sizeof dirs[f], &info) != 0) {
            fprintf(stderr, "preparing %s failed\n", o.formats[f]);
            return 1;
        }
        json_t *qe = json_object_get(info, "quantization_error"), *ld = json_object_get(info, "loss_difference");
        printf("## %s  (%s)\n", o.formats[f], dirs[f]);
        printf("   weights_bytes %lld\n", (long long)json_integer_value(json_object_get(info, "storage_bytes")));
        printf("   linear_tensors %lld rms_rel_mean %.4g mean_rel_mean %.4g max_rel_worst %.4g\n",
               (long long)json_integer_value(json_object_get(qe, "linear_tensors")),
               json_number_value(json_object_get(qe, "linear_rms_rel_err_mean")),
               json_number_value(json_object_get(qe, "linear_mean_rel_err_mean")),
               json_number_value(json_object_get(qe, "linear_max_rel_err_worst")));
        printf("   embed_tensors %lld rms_rel %.4g max_rel %.4g\n",
               (long long)json_integer_value(json_object_get(qe, "embedding_tensors")),
               json_number_value(json_object_get(qe, "embedding_rms_rel_err")),
               json_number_value(json_object_get(qe, "embedding_max_rel_err")));
        printf("   loss on %lld tokens: fp32 %.6f quantized %.6f delta %.6f\n",
               (long long)json_integer_value(json_object_get(ld, "tokens")),
               json_number_value(json_object_get(ld, "loss_f32")),
               json_number_value(json_object_get(ld, "loss_quantized")),
               json_number_value(json_object_get(ld, "delta")));
        printf("   prepare_seconds %.1f (when it was made)\n",
               json_number_value(json_object_get(info, "prepare_seconds")));
        json_decref(info);
    }

    printf("\npeak RSS: VmHWM of the cell's process (load, init and steps).  peak mapped: RssFile's peak above its\n"
           "value after loading (libraries and header pages), sampled every 2 ms.  tokens/s: over all measured steps;\n"
           "best step: the fastest one (less exposed to other load).  dequant share: wall time inside\n"
           "dequantization / step time, over the measured steps.\n");
    printf("\n| format | embed | residency | file MiB | weights MiB | peak RSS MiB | peak mapped MiB | peak anon MiB | "
           "tokens/s | best step tokens/s | step s | fwd s | bwd s | dequant share | workspace peak MiB | loss | "
           "mapped peak in |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int f = 0; f < o.n_formats; f++)
        for (int ri = 0; ri < o.n_residency; ri++) {
            cell_result r;
            if (in_child(run_cell, &o, dirs[f], o.residency[ri], &r) != 0 || !r.ok) {
                printf("| %s | %s | %s | failed |\n", o.formats[f], embed_format(&o, o.formats[f]),
                       o.residency[ri] ? "lazy" : "all");
                continue;
            }
            printf("| %s | %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %.2f | %.2f | %.2f | %.1f%% | "
                   "%.1f | "
                   "%.4f | %s |\n",
                   o.formats[f], embed_format(&o, o.formats[f]), o.residency[ri] ? "lazy" : "all", r.file_mib,
                   r.weights_mib, r.hwm_kb / 1024.0, (r.peak_file_kb - r.file_after_load_kb) / 1024.0,
                   r.peak_anon_kb / 1024.0, r.tokens_per_s, (double)o.batch * o.seq / r.best_step_s, r.step_s, r.fwd_s,
                   r.bwd_s, 100 * r.dequant_share, r.workspace_peak_mib, r.loss, r.peak_phase);
            fflush(stdout);
        }
    if (getloadavg(load, 3) == 3) printf("# load average at end: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    return 0;
}
