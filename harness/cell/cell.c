/*
 * cell.c — the parent side of a cell: fork, watch, classify, record.
 * See cell.h.  The parent stays small and idle while the child measures:
 * it sleeps in poll() on the child's progress pipe, waking every 100 ms
 * for the timeout and (in watch mode) one read of the child's statm.
 */
#include "cell_internal.h"
#include "host.h"
#include "kmsg.h"
#include "record.h"
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
     * QKᵀ and PV, 2 flops each).  Backward: the input gradient of every
     * matmul (2·N·P_mm), twice the attention's forward, and a weight
     * gradient only for what trains (2·N·trainable, at most 2·N·P_mm): a
     * frozen base (LoRA, IA3, LARS, ...) costs about 2× its forward, full
     * fine-tuning 3×.  Zeroth-order methods: forwards only. */
    double attn = 2.0 * B * (double)T * T * cfg->n_heads * cfg->head_dim * cfg->n_layers;
    double fwd = 2.0 * N * P_mm + attn;
    double weight_grads = 2.0 * N * ((double)trainable < P_mm ? (double)trainable : P_mm);
    int passes = forward_passes > 0 ? forward_passes : 1;
    double flops = passes * fwd + (has_backward ? 2.0 * N * P_mm + 2.0 * attn + weight_grads : 0);
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
                        json_string("theoretical peaks of the profile; flops = passes*F + (backward ? 2*N*P_matmul + "
                                    "2*A + 2*N*min(trainable, P_matmul) : 0), F = 2*N*P_matmul + A, "
                                    "A = 2*B*T^2*heads*head_dim*layers; bytes = weights per "
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

/* A cell's child process, from its fork to its reaping.  ftb_cell_run is
 * spawn → wait → classify → record, each below. */
typedef struct {
    int run_fd;                          /* the run directory (no links followed) */
    char child_json[300], timeline[300]; /* file names in it                  */
    ftb_enforce enforce;                 /* in effect (cgroup may fall back)      */
    char enforce_note[FTB_ERR_LEN];
    ftb_cgroup cg;
    int64_t safety;        /* bytes: the host's own limit in check/watch mode  */
    ftb_tree_shared *tree; /* the process tree's RSS, published by the child */
    int progress_fd;       /* read end of the child's progress pipe            */
    pid_t pid;
    double t_start;
    char timestamp_utc[32];
    const char *git_rev;
} cell_proc;

/* How the child ended, as the parent saw it. */
typedef struct {
    int status;
    struct rusage ru;
    int timed_out, watch_killed, safety_killed, interrupt_killed;
    int io_errno, timeline_errno; /* the child could not write a file     */
    int64_t watch_max;            /* the tree's RSS as the parent saw it  */
    int64_t watch_proc_max;       /* the cell process's own RSS, likewise */
    char last_what[32];           /* the child's last milestone           */
    int last_step, last_total;
    double wall;
} cell_ending;

/* Sets up enforcement and forks the child (which measures and never
 * returns).  0, or -1 with err (nothing left open). */
static int cell_spawn(const ftb_cell *c, cell_proc *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    /* The run directory, opened without following links: the child writes
     * its snapshot and timeline relative to this descriptor. */
    p->run_fd = ftb_rundir_open(c->run_dir, 1, err, errlen);
    if (p->run_fd < 0) return -1;
    snprintf(p->child_json, sizeof p->child_json, ".%.260s.child.json", c->key);
    snprintf(p->timeline, sizeof p->timeline, "%.260s.timeline.tsv", c->key);
    unlinkat(p->run_fd, p->child_json, 0);

    /* Enforcement. */
    p->enforce = c->enforce;
    snprintf(p->enforce_note, sizeof p->enforce_note, "%s", c->enforce_note);
    if (p->enforce == FTB_ENFORCE_CGROUP) {
        char e[FTB_ERR_LEN];
        if (ftb_cgroup_create(&p->cg, c->budget_bytes, e, sizeof e) != 0) {
            p->enforce = FTB_ENFORCE_CHECK;
            snprintf(p->enforce_note, sizeof p->enforce_note,
                     "cgroup unavailable (%.400s); peak RSS checked after the run", e);
        }
    }
    /* In check mode the cell runs past the budget to measure its real
     * peak, but never into the host's own OOM killer. */
    int64_t avail = ftb_meminfo("MemAvailable");
    p->safety = avail > 0 ? (int64_t)(avail * 0.9) : INT64_MAX;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        ftb_cgroup_destroy(&p->cg);
        close(p->run_fd);
        return ftb_errf(err, errlen, "pipe: %s", strerror(errno));
    }
    ftb_utc_timestamp(p->timestamp_utc, sizeof p->timestamp_utc);
    p->git_rev = ftb_git_revision(); /* before fork: popen in the parent */
    /* The child's sampler publishes the RSS of its whole process tree here;
     * the parent enforces the budget on it and keeps its peak even if the
     * child is killed. */
    p->tree = ftb_tree_shared_new();
    fflush(NULL);
    p->t_start = ftb_now();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        close(p->run_fd);
        ftb_cgroup_destroy(&p->cg);
        ftb_tree_shared_free(p->tree);
        return ftb_errf(err, errlen, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        /* The run directory's lock is the harness's: nothing the cell
         * leaves behind may hold it. */
        if (ftb_rundir_lock_fd() >= 0) close(ftb_rundir_lock_fd());
        setpgid(0, 0);
        ftb_cell_child(c, fds[1], p->run_fd, p->child_json, p->timeline, p->cg.active ? &p->cg : NULL, p->tree);
    }
    setpgid(pid, pid); /* both sides set it: whichever runs first wins the race */
    close(fds[1]);
    p->pid = pid;
    p->progress_fd = fds[0];
    return 0;
}

/* One line of the child's progress pipe. */
static void progress_line(const ftb_cell *c, const char *line, cell_ending *e)
{
    int a = 0, b = 0;
    char what[32] = "";
    if (sscanf(line, "ioerror %31s %d", what, &a) == 2) {
        /* The child could not write a file (errno a): its measurements or
         * its timeline. */
        if (!strcmp(what, "timeline"))
            e->timeline_errno = a;
        else
            e->io_errno = a;
    } else if (sscanf(line, "%31s %d %d", what, &a, &b) >= 1) {
        snprintf(e->last_what, sizeof e->last_what, "%s", what);
        e->last_step = a;
        e->last_total = b;
        if (c->progress && !(strcmp(what, "step") == 0 && a == 0)) c->progress(c->progress_ud, what, a, b);
    }
}

static void kill_cell(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
}

/* Follows the child to its end: its progress lines, the timeout, the
 * budget (watch mode) and the host's safety limit, SIGINT/SIGTERM.  The
 * parent sleeps in poll() on the progress pipe, waking every 100 ms. */
static void cell_wait(const ftb_cell *c, cell_proc *p, cell_ending *e)
{
    memset(e, 0, sizeof *e);
    e->watch_max = e->watch_proc_max = -1;
    pid_t pid = p->pid;
    g_child_pgid = pid;
    /* Without a command's own handlers (ftb_catch_interrupts), the cell's
     * are installed for its duration. */
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    int eof = 0, reaped = 0;
    char pbuf[512];
    size_t plen = 0;
    while (!reaped) {
        struct pollfd pfd = { .fd = eof ? -1 : p->progress_fd, .events = POLLIN };
        int pr = poll(&pfd, 1, 100);
        if (pr > 0 && (pfd.revents & (POLLIN | POLLHUP))) {
            ssize_t n = read(p->progress_fd, pbuf + plen, sizeof pbuf - 1 - plen);
            if (n <= 0) {
                eof = 1;
            } else {
                plen += (size_t)n;
                pbuf[plen] = 0;
                char *nl;
                while ((nl = strchr(pbuf, '\n'))) {
                    *nl = 0;
                    progress_line(c, pbuf, e);
                    size_t rest = plen - (size_t)(nl + 1 - pbuf);
                    memmove(pbuf, nl + 1, rest);
                    plen = rest;
                    pbuf[plen] = 0;
                }
                if (plen >= sizeof pbuf - 1) plen = 0; /* garbage: drop */
            }
        }
        pid_t w = wait4(pid, &e->status, WNOHANG, &e->ru);
        if (w == pid) {
            reaped = 1;
            break;
        }
        double el = ftb_now() - p->t_start;
        if (g_interrupted && !e->interrupt_killed) {
            /* Also when the signal came before the child's group was known. */
            e->interrupt_killed = 1;
            kill_cell(pid);
        }
        if (eof && !reaped && e->interrupt_killed) {
            if (wait4(pid, &e->status, 0, &e->ru) == pid) reaped = 1;
            break;
        }
        if (!e->timed_out && !e->watch_killed && !e->safety_killed) {
            if (el > c->timeout_sec) {
                e->timed_out = 1;
                kill_cell(pid);
            } else if (p->enforce != FTB_ENFORCE_CGROUP) {
                /* The process's own RSS, fresh, and the tree's sum from the
                 * sampler (at most ~10 ms old): the budget is the tree's. */
                int64_t rss = ftb_pid_rss(pid);
                if (rss > e->watch_proc_max) e->watch_proc_max = rss;
                int64_t tree_now = p->tree ? atomic_load(&p->tree->now_bytes) : -1;
                if (tree_now > rss) rss = tree_now;
                if (rss > e->watch_max) e->watch_max = rss;
                if (p->enforce == FTB_ENFORCE_WATCH && rss > c->budget_bytes) {
                    e->watch_killed = 1;
                    kill_cell(pid);
                } else if (rss > p->safety) {
                    e->safety_killed = 1;
                    kill_cell(pid);
                }
            }
        }
        if (eof && !reaped && (e->timed_out || e->watch_killed || e->safety_killed)) {
            /* Killed: reap without spinning. */
            if (wait4(pid, &e->status, 0, &e->ru) == pid) reaped = 1;
        }
    }
    close(p->progress_fd);
    /* Grandchildren a plugin may have left behind share the group. */
    kill(-pid, SIGKILL);
    remove_temporaries_of(p->run_fd, pid);
    g_child_pgid = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    e->wall = ftb_now() - p->t_start;
    /* A child killed while writing a file leaves its temporary. */
    ftb_sf_remove_temps(p->run_fd, (int)pid);
}

/* The child's last snapshot of its measurements, or NULL. */
static json_t *read_measured(const cell_proc *p)
{
    json_t *m = NULL;
    int mfd = openat(p->run_fd, p->child_json, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat mst;
    if (mfd >= 0 && fstat(mfd, &mst) == 0 && S_ISREG(mst.st_mode)) {
        json_error_t je;
        m = json_loadfd(mfd, 0, &je);
    }
    if (mfd >= 0) close(mfd);
    return m;
}

/* The cell's peaks (rec->memory) and its outcome (r->outcome, r->detail,
 * rec->signal) from how it ended and what it measured. */
static void cell_classify(const ftb_cell *c, cell_proc *p, const cell_ending *e, json_t *m, ftb_cell_result *r,
                          ftb_record *rec)
{
    const char *stage = m ? json_string_value(json_object_get(m, "stage")) : NULL;
    int64_t vmhwm = jget_int(m, "memory", "peak_rss_vmhwm_bytes");
    int64_t maxrss = (int64_t)e->ru.ru_maxrss * 1024;
    int64_t cg_peak = p->cg.active ? ftb_cgroup_peak(&p->cg) : -1;
    int64_t oom_kills = p->cg.active ? ftb_cgroup_oom_kills(&p->cg) : -1;
    int64_t watch_max = e->watch_max;
    /* VmHWM is read by the child at the end of the last step: the peak of
     * the measurement itself.  ru_maxrss also covers the child's final
     * bookkeeping (timeline, record), so it is only the fallback, with what
     * the parent saw, when the child died before reading VmHWM. */
    int64_t tree_sampled = p->tree ? atomic_load(&p->tree->max_bytes) : -1;
    int tree_procs = p->tree ? atomic_load(&p->tree->max_procs) : 0;
    int64_t descendants = jget_int(m, "memory", "descendants_max_rss_bytes");
    int had_children = tree_procs > 1 || descendants > 0;
    /* wait4's ru_maxrss is the cell's and its reaped descendants' largest:
     * a helper the cell waited for as the watch killed the group (a race
     * that load makes likely) would be counted as the cell's own.  With
     * children, the parent's samples of the process alone stand in. */
    int64_t process_peak = vmhwm;
    if (process_peak <= 0)
        process_peak = had_children && e->watch_proc_max > 0 ? e->watch_proc_max
                       : maxrss > e->watch_proc_max          ? maxrss
                                                             : e->watch_proc_max;
    /* The cell's peak is its process tree's: the largest of the process's
     * own peak, the sampled sums over the tree (child and parent views),
     * and the largest waited-for descendant (the kernel's ru_maxrss). */
    int64_t peak = process_peak;
    /* Only when there were descendants: a lone process's peak is its VmHWM
     * (the parent's view also covers the child's bookkeeping after the
     * measurement, so it only stands in when the child died first). */
    if (had_children && tree_sampled > peak) peak = tree_sampled;
    if (had_children && descendants > peak) peak = descendants;
    if (vmhwm <= 0 && watch_max > peak) peak = watch_max;
    r->peak_rss = peak > 0 ? peak : -1;

    rec->memory.ru_maxrss = maxrss;
    rec->memory.parent_observed_max = watch_max;
    rec->memory.cgroup = p->cg.active;
    rec->memory.cgroup_peak = cg_peak;
    rec->memory.cgroup_oom_kills = oom_kills;
    rec->memory.peak = r->peak_rss;
    rec->memory.process_peak = process_peak;
    rec->memory.tree_max_processes = tree_procs;
    rec->memory.peak_is_lower_bound = vmhwm <= 0;

    char tree_note[96] = "", budget_s[32];
    ftb_format_bytes(c->budget_bytes, budget_s, sizeof budget_s);
    if (had_children && peak > 0 && process_peak > 0 && peak > process_peak)
        snprintf(tree_note, sizeof tree_note, " (process tree of %d; the cell's own process %.0f MiB)",
                 tree_procs > 1 ? tree_procs : 2, mib(process_peak));
    int sig = WIFSIGNALED(e->status) ? WTERMSIG(e->status) : 0;
    rec->signal = sig;
    /* A SIGKILL the harness did not send is an out-of-memory kill only with
     * evidence: the cgroup's oom_kill count, the kernel log naming the pid,
     * or a peak at the limit that was enforced. */
    char kernel_log[300] = "";
    int kernel_oom = 0;
    if (sig == SIGKILL && !e->timed_out && !e->watch_killed && !e->safety_killed && oom_kills <= 0)
        kernel_oom = ftb_kmsg_find_oom_kill(p->pid, p->t_start - 1.0, kernel_log, sizeof kernel_log);
    char where[64];
    if (!strcmp(e->last_what, "load"))
        snprintf(where, sizeof where, "model load");
    else if (!strcmp(e->last_what, "init"))
        snprintf(where, sizeof where, "method init");
    else if (!strcmp(e->last_what, "step") && e->last_step < e->last_total)
        snprintf(where, sizeof where, "step %d of %d", e->last_step + 1, e->last_total);
    else if (!strcmp(e->last_what, "step") || !strcmp(e->last_what, "done"))
        snprintf(where, sizeof where, "the end of the cell");
    else
        snprintf(where, sizeof where, "start-up");

    if (e->timed_out) {
        set_outcome(r, "timeout", "no result within %.0f s (during %s); the cell's process group was killed",
                    c->timeout_sec, where);
    } else if (e->watch_killed) {
        set_outcome(r, "over_budget", "RSS reached %.0f MiB%s, over the budget of %s; killed by the rss watch",
                    mib(watch_max), tree_note, budget_s);
    } else if (e->safety_killed) {
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
    } else if (sig == SIGKILL && p->enforce == FTB_ENFORCE_CGROUP && cg_peak >= c->budget_bytes * 0.95) {
        set_outcome(r, "oom", "SIGKILL during %s with the cgroup's peak at %.0f MiB, at its memory.max of %.0f MiB",
                    where, mib(cg_peak), mib(c->budget_bytes));
    } else if (sig == SIGKILL && watch_max >= p->safety * 0.95) {
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
    } else if (e->io_errno) {
        /* A full disk (or an I/O error) where the child keeps its
         * measurements: what it measured is lost, the cause is not. */
        set_outcome(r, "error",
                    "the cell could not write its measurements (%s/%s) during %s: %s (%s); nothing it "
                    "measured was kept",
                    c->run_dir, p->child_json, where, strerror(e->io_errno),
                    strerrorname_np(e->io_errno) ? strerrorname_np(e->io_errno) : "?");
    } else if (WIFEXITED(e->status) && WEXITSTATUS(e->status) == CHILD_OK && stage && !strcmp(stage, "done")) {
        if (p->enforce != FTB_ENFORCE_CGROUP && peak > c->budget_bytes)
            set_outcome(r, "over_budget", "peak RSS %.0f MiB%s exceeds the budget of %s (%s)", mib(peak), tree_note,
                        budget_s, ftb_enforce_name(p->enforce));
        else
            set_outcome(r, "ok", "%s", "");
    } else {
        const char *err = m ? json_string_value(json_object_get(m, "error")) : NULL;
        if (err)
            set_outcome(r, "error", "%s", err);
        else
            set_outcome(r, "error", "the cell exited with status %d without a result (during %s)",
                        WIFEXITED(e->status) ? WEXITSTATUS(e->status) : -1, where);
    }
}

/* The rest of the record (the host, files, errors) and its writing:
 * cells/<key>.json and a line of results.jsonl (rundir.h). */
static ftb_cell_predictor g_predictor;
static void *g_predictor_ud;

void ftb_cell_set_predictor(ftb_cell_predictor fn, void *ud)
{
    g_predictor = fn;
    g_predictor_ud = ud;
}

static int cell_record(const ftb_cell *c, const cell_proc *p, const cell_ending *e, ftb_record *rec, ftb_cell_result *r,
                       char *err, size_t errlen)
{
    rec->cell = c;
    rec->outcome = r->outcome;
    rec->detail = r->detail;
    memcpy(rec->timestamp_utc, p->timestamp_utc, sizeof rec->timestamp_utc);
    rec->git_rev = p->git_rev;
    rec->enforcement = p->enforce;
    rec->enforcement_note = p->enforce_note;
    rec->ran = 1;
    rec->host.cores = ftb_host_cores();
    rec->host.sgemm_gflops_512 = ftb_host_sgemm_gflops(c->threads);
    rec->host.ram_bytes = ftb_meminfo("MemTotal");
    /* In the parent, once per process, after the child ended: its 8 MiB
     * probe never touches a cell's peak. */
    rec->host.page_fault_seconds = ftb_op_fault_seconds();
    ftb_host_cpu_model(rec->host.cpu_model, sizeof rec->host.cpu_model);
    ftb_host_cpu_affinity(rec->host.cpu_affinity, sizeof rec->host.cpu_affinity);
    json_t *step_med =
        json_object_get(json_object_get(json_object_get(rec->measured, "timing"), "step_seconds"), "median");
    r->step_median = json_is_number(step_med) ? json_number_value(step_med) : 0;
    if (c->emulated && r->step_median > 0) rec->host.measured_step_seconds = r->step_median;
    struct stat tst;
    if (rec->measured && json_object_get(rec->measured, "timeline") && !e->timeline_errno &&
        fstatat(p->run_fd, p->timeline, &tst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(tst.st_mode))
        rec->timeline_file = p->timeline;
    if (e->io_errno || e->timeline_errno) {
        rec->io_error.errno_value = e->io_errno ? e->io_errno : e->timeline_errno;
        rec->io_error.timeline = !e->io_errno;
        rec->io_error.file = e->io_errno ? p->child_json : p->timeline;
    }
    rec->cell_wall_seconds = r->wall;
    if (g_predictor) rec->plan = g_predictor(g_predictor_ud, c);
    r->record = ftb_record_json(rec);
    json_decref(rec->plan);
    rec->plan = NULL;
    return ftb_rundir_write_record(c->run_dir, c->key, r->record, err, errlen);
}

int ftb_cell_run(const ftb_cell *c, ftb_cell_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->peak_rss = -1;
    if (g_interrupted) return FTB_CELL_INTERRUPTED;
    cell_proc p;
    if (cell_spawn(c, &p, err, errlen) != 0) return -1;
    cell_ending e;
    cell_wait(c, &p, &e);
    r->wall = e.wall;
    if (g_interrupted) {
        /* Stopped by the user: not a measurement, and nothing of it stays
         * (no snapshot, no timeline, no record): the cell runs again on
         * resume. */
        unlinkat(p.run_fd, p.child_json, 0);
        unlinkat(p.run_fd, p.timeline, 0);
        close(p.run_fd);
        ftb_cgroup_destroy(&p.cg);
        ftb_tree_shared_free(p.tree);
        return FTB_CELL_INTERRUPTED;
    }
    ftb_record rec;
    memset(&rec, 0, sizeof rec);
    rec.measured = read_measured(&p);
    cell_classify(c, &p, &e, rec.measured, r, &rec);
    ftb_tree_shared_free(p.tree);
    int rc = cell_record(c, &p, &e, &rec, r, err, errlen);
    json_decref(rec.measured);
    unlinkat(p.run_fd, p.child_json, 0);
    close(p.run_fd);
    ftb_cgroup_destroy(&p.cg);
    return rc;
}

void ftb_cell_result_free(ftb_cell_result *r)
{
    json_decref(r->record);
    r->record = NULL;
}
