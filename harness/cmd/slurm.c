/*
 * slurm.c — the Slurm backend of `ftbench sweep` (slurm.h).  Nothing here
 * schedules: Slurm does.  ftbench writes one job script, hands it to
 * sbatch, and asks squeue/sacct what became of it.  The measurement of a
 * cell on a node is exactly a local sweep's (the task re-plans the sweep
 * from the same options and runs its cells through ftb_cell_run), so a
 * record says the same thing whichever backend made it.
 */
#include "slurm.h"
#include "cli.h"
#include "rundir.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLURM_DIR "slurm"

/* ---- small helpers ---------------------------------------------------------- */

/* The path of an executable named `name` on $PATH, or 0. */
static int find_on_path(const char *name, char *out, size_t n)
{
    const char *path = getenv("PATH");
    if (!path || !*path) return 0;
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, n, "%s/%s", *d ? d : ".", name);
        found = access(out, X_OK) == 0 && ftb_is_file(out);
    }
    free(copy);
    return found;
}

/* Runs argv (no shell), capturing stdout and stderr (each NUL-terminated,
 * malloc).  Returns the exit status (0..255), 127 when it could not run,
 * or 128 + signal. */
static int run_capture(char *const argv[], char **out, char **errout)
{
    int po[2], pe[2];
    *out = calloc(1, 1);
    *errout = calloc(1, 1);
    if (pipe(po) != 0) return 127;
    if (pipe(pe) != 0) {
        close(po[0]);
        close(po[1]);
        return 127;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        return 127;
    }
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s", argv[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    char **bufs[2] = { out, errout };
    size_t lens[2] = { 0, 0 };
    struct pollfd fds[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char chunk[4096];
            ssize_t r = read(fds[i].fd, chunk, sizeof chunk);
            if (r <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            char *grown = realloc(*bufs[i], lens[i] + (size_t)r + 1);
            if (!grown) continue;
            memcpy(grown + lens[i], chunk, (size_t)r);
            lens[i] += (size_t)r;
            grown[lens[i]] = 0;
            *bufs[i] = grown;
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* The first line of s, trimmed, into out (for one-line error messages). */
static void first_line(const char *s, char *out, size_t n)
{
    while (*s && isspace((unsigned char)*s)) s++;
    size_t k = strcspn(s, "\n");
    if (k >= n) k = n - 1;
    memcpy(out, s, k);
    out[k] = 0;
    while (k > 0 && isspace((unsigned char)out[k - 1])) out[--k] = 0;
}

/* Writes `text` to dir/name through a temporary file in dir and a rename:
 * readers (array tasks, a collect) see the old file or the new one.  Never
 * follows a link at the temporary's name. */
static int write_atomic(const char *dir, const char *name, const char *text, int mode, char *err, size_t errlen)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    snprintf(dst, sizeof dst, "%.3800s/%.200s", dir, name);
    snprintf(tmp, sizeof tmp, "%.3800s/.%.200s.%ld.tmp", dir, name, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) return ftb_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return ftb_errf(err, errlen, "%s: cannot write: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return ftb_errf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
    }
    if (rename(tmp, dst) != 0) {
        int e = errno;
        unlink(tmp);
        return ftb_errf(err, errlen, "%s: cannot rename into place: %s", dst, strerror(e));
    }
    return 0;
}

/* Single-quotes s for sh. */
static void sh_quote(const char *s, char *out, size_t n)
{
    size_t o = 0;
    if (o + 1 < n) out[o++] = '\'';
    for (; *s && o + 5 < n; s++) {
        if (*s == '\'') {
            memcpy(out + o, "'\\''", 4);
            o += 4;
        } else {
            out[o++] = *s;
        }
    }
    if (o + 1 < n) out[o++] = '\'';
    out[o] = 0;
}

/* ---- the Slurm job a record was measured in ------------------------------------- */

json_t *ftb_slurm_job_json(void)
{
    const char *job = getenv("SLURM_JOB_ID");
    if (!job) return NULL;
    static const struct {
        const char *key, *env;
    } vars[] = {
        { "job_id", "SLURM_JOB_ID" },
        { "array_job_id", "SLURM_ARRAY_JOB_ID" },
        { "array_task_id", "SLURM_ARRAY_TASK_ID" },
        { "cluster", "SLURM_CLUSTER_NAME" },
        { "partition", "SLURM_JOB_PARTITION" },
        { "node", "SLURMD_NODENAME" },
        { "cpus_per_task", "SLURM_CPUS_PER_TASK" },
        { "cpus_on_node", "SLURM_CPUS_ON_NODE" },
        { "mem_per_node_mb", "SLURM_MEM_PER_NODE" },
        { "mem_per_cpu_mb", "SLURM_MEM_PER_CPU" },
    };
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i].env);
        if (v) json_object_set_new(o, vars[i].key, json_string(v));
    }
    return o;
}

/* ---- options ------------------------------------------------------------------ */

void ftb_sweep_backend_help(FILE *f)
{
    fprintf(f, "\nbackends (docs/HARNESS.md, \"On a cluster\"):\n"
               "  --backend local|slurm   local (default): every cell here, one after the other;\n"
               "                          slurm: the cells without a measurement as one sbatch --array job\n"
               "                          (prints the job id and returns)\n"
               "  --slurm-opt \"OPTS\"       sbatch options for the job, e.g. \"--partition=x --time=2:00:00\"\n"
               "                          (repeatable; each becomes an #SBATCH line after ftbench's own)\n"
               "  --cells-per-task K      cells run one after the other by each array task (default 1)\n"
               "  --wait                  follow the job to its end (progress line, ETA), then collect\n"
               "  --collect RUN_DIR       record how the Slurm tasks of RUN_DIR ended (sacct), merge the\n"
               "                          cell files into results.jsonl, print the summary\n");
}

static int take_value(int argc, char **argv, int *i, const char *name, const char **val, char *err, size_t errlen)
{
    const char *a = argv[*i];
    size_t k = strlen(name);
    if (!strncmp(a, name, k) && a[k] == '=') {
        *val = a + k + 1;
        return 0;
    }
    if (*i + 1 >= argc) return ftb_errf(err, errlen, "%s needs a value", name);
    *val = argv[++*i];
    return 0;
}

static int is_opt(const char *a, const char *name)
{
    size_t k = strlen(name);
    return !strncmp(a, name, k) && (a[k] == 0 || a[k] == '=');
}

/* The submission files of a run directory, sorted by number. */
static int list_submissions(const char *run_dir, int **nums, int *n)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.3900s/" SLURM_DIR, run_dir);
    *nums = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int k, used = 0;
        if (sscanf(e->d_name, "submit-%d.json%n", &k, &used) == 1 && used == (int)strlen(e->d_name) && k > 0) {
            *nums = realloc(*nums, (size_t)(*n + 1) * sizeof **nums);
            (*nums)[(*n)++] = k;
        }
    }
    closedir(d);
    for (int i = 1; i < *n; i++)
        for (int j = i; j > 0 && (*nums)[j - 1] > (*nums)[j]; j--) {
            int t = (*nums)[j];
            (*nums)[j] = (*nums)[j - 1];
            (*nums)[j - 1] = t;
        }
    return 0;
}

static json_t *load_submission(const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *s = json_load_file(path, 0, &je);
    if (!s) {
        ftb_errf(err, errlen, "%s:%d: %s", path, je.line, je.text);
        return NULL;
    }
    json_t *argv = json_object_get(s, "argv"), *cells = json_object_get(s, "cells");
    json_t *k = json_object_get(s, "cells_per_task");
    if (!json_is_object(s) || !json_is_array(argv) || !json_is_array(cells) || !json_is_integer(k) ||
        json_integer_value(k) < 1 || !json_is_string(json_object_get(s, "run_id"))) {
        ftb_errf(err, errlen, "%s: not an ftbench Slurm submission (argv, cells, cells_per_task, run_id)", path);
        json_decref(s);
        return NULL;
    }
    for (size_t i = 0; i < json_array_size(argv); i++)
        if (!json_is_string(json_array_get(argv, i))) {
            ftb_errf(err, errlen, "%s: argv[%zu] is not a string", path, i);
            json_decref(s);
            return NULL;
        }
    for (size_t i = 0; i < json_array_size(cells); i++)
        if (!json_is_string(json_array_get(cells, i))) {
            ftb_errf(err, errlen, "%s: cells[%zu] is not a string", path, i);
            json_decref(s);
            return NULL;
        }
    return s;
}

/* b->argc/argv from the submission's recorded options. */
static void argv_from_submission(ftb_sweep_backend *b)
{
    json_t *a = json_object_get(b->submission, "argv");
    b->argc = (int)json_array_size(a) + 1;
    b->argv = calloc((size_t)b->argc + 1, sizeof *b->argv);
    b->argv[0] = strdup("sweep");
    for (int i = 1; i < b->argc; i++) b->argv[i] = strdup(json_string_value(json_array_get(a, (size_t)i - 1)));
}

static int setup_task(ftb_sweep_backend *b, const char *file, char *err, size_t errlen)
{
    snprintf(b->submission_path, sizeof b->submission_path, "%s", file);
    b->submission = load_submission(file, err, errlen);
    if (!b->submission) return -1;
    const char *tid = getenv("SLURM_ARRAY_TASK_ID");
    long t;
    if (!tid || ftb_parse_long(tid, 0, LONG_MAX, &t) != 0)
        return ftb_errf(err, errlen,
                        "--slurm-task: SLURM_ARRAY_TASK_ID is %s (this entry is run by the array tasks of the job "
                        "ftbench submitted)",
                        tid ? "not an integer" : "not set");
    json_t *cells = json_object_get(b->submission, "cells");
    long k = (long)json_integer_value(json_object_get(b->submission, "cells_per_task"));
    long ncells = (long)json_array_size(cells);
    if (t * k >= ncells)
        return ftb_errf(err, errlen, "%s: array task %ld has no cells (%ld cells, %ld per task)", file, t, ncells, k);
    for (long i = t * k; i < ncells && i < t * k + k; i++) {
        b->task_keys = realloc(b->task_keys, (size_t)(b->n_task_keys + 1) * sizeof *b->task_keys);
        b->task_keys[b->n_task_keys++] = strdup(json_string_value(json_array_get(cells, (size_t)i)));
    }
    /* Relative paths in the options (--out, --dataset, --methods-dir) mean
     * what they meant where the sweep was submitted. */
    const char *cwd = json_string_value(json_object_get(b->submission, "cwd"));
    if (cwd && chdir(cwd) != 0) return ftb_errf(err, errlen, "%s: cannot enter %s: %s", file, cwd, strerror(errno));
    b->slurm_info = ftb_slurm_job_json();
    if (!b->slurm_info) b->slurm_info = json_object();
    json_object_set_new(b->slurm_info, "submission", json_string(file));
    argv_from_submission(b);
    return 0;
}

static int setup_collect(ftb_sweep_backend *b, const char *run_dir, char *err, size_t errlen)
{
    if (!ftb_is_dir(run_dir)) return ftb_errf(err, errlen, "--collect %s: not a directory", run_dir);
    int *nums, n;
    list_submissions(run_dir, &nums, &n);
    if (n == 0) {
        free(nums);
        return ftb_errf(err, errlen, "--collect %s: no Slurm submission in it (%s/" SLURM_DIR "/submit-<n>.json)",
                        run_dir, run_dir);
    }
    snprintf(b->submission_path, sizeof b->submission_path, "%.3900s/" SLURM_DIR "/submit-%d.json", run_dir,
             nums[n - 1]);
    if (b->submission_path[0] != '/') {
        char cwd[PATH_MAX], rel[sizeof b->submission_path];
        snprintf(rel, sizeof rel, "%s", b->submission_path);
        if (getcwd(cwd, sizeof cwd))
            snprintf(b->submission_path, sizeof b->submission_path, "%.2000s/%.2000s", cwd, rel);
    }
    free(nums);
    b->submission = load_submission(b->submission_path, err, errlen);
    if (!b->submission) return -1;
    if (!realpath(run_dir, b->collect_dir)) return ftb_errf(err, errlen, "--collect %s: %s", run_dir, strerror(errno));
    /* The recorded options' relative paths mean what they meant where the
     * sweep was submitted. */
    const char *cwd = json_string_value(json_object_get(b->submission, "cwd"));
    if (cwd && chdir(cwd) != 0)
        return ftb_errf(err, errlen, "%s: cannot enter %s: %s", b->submission_path, cwd, strerror(errno));
    argv_from_submission(b);
    return 0;
}

int ftb_sweep_backend_parse(int argc, char **argv, ftb_sweep_backend *b, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    b->cells_per_task = 1;
    const char *backend = NULL, *collect = NULL, *task = NULL, *k_text = NULL;
    int opts_given = 0, others = 0;
    b->argv = calloc((size_t)argc + 1, sizeof *b->argv);
    b->argv[b->argc++] = strdup(argc > 0 ? argv[0] : "sweep");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (is_opt(a, "--backend")) {
            if (take_value(argc, argv, &i, "--backend", &v, err, errlen) != 0) return -1;
            if (strcmp(v, "local") && strcmp(v, "slurm"))
                return ftb_errf(err, errlen, "--backend: '%s' is not local or slurm", v);
            backend = v;
        } else if (is_opt(a, "--slurm-opt")) {
            if (take_value(argc, argv, &i, "--slurm-opt", &v, err, errlen) != 0) return -1;
            if (strchr(v, '\n')) return ftb_errf(err, errlen, "--slurm-opt: a newline in '%s'", v);
            size_t old = b->slurm_opts ? strlen(b->slurm_opts) : 0;
            b->slurm_opts = realloc(b->slurm_opts, old + strlen(v) + 2);
            snprintf(b->slurm_opts + old, strlen(v) + 2, "%s%s", old ? " " : "", v);
            if (!old) snprintf(b->slurm_opts, strlen(v) + 1, "%s", v);
            opts_given = 1;
        } else if (is_opt(a, "--cells-per-task")) {
            if (take_value(argc, argv, &i, "--cells-per-task", &k_text, err, errlen) != 0) return -1;
            long k;
            if (ftb_parse_long(k_text, 1, 1000000, &k) != 0)
                return ftb_errf(err, errlen, "--cells-per-task: '%s' is not an integer in 1..1000000", k_text);
            b->cells_per_task = (int)k;
        } else if (!strcmp(a, "--wait")) {
            b->wait = 1;
        } else if (is_opt(a, "--collect")) {
            if (take_value(argc, argv, &i, "--collect", &collect, err, errlen) != 0) return -1;
        } else if (is_opt(a, "--slurm-task")) {
            if (take_value(argc, argv, &i, "--slurm-task", &task, err, errlen) != 0) return -1;
        } else {
            if (strcmp(a, "--quiet")) others = 1;
            b->argv[b->argc++] = strdup(a);
        }
    }
    int slurm = backend && !strcmp(backend, "slurm");
    if ((opts_given || k_text) && !slurm)
        return ftb_errf(err, errlen, "%s is for --backend slurm", opts_given ? "--slurm-opt" : "--cells-per-task");
    if (b->wait && !slurm && !collect) return ftb_errf(err, errlen, "--wait is for --backend slurm and --collect");
    if (collect && (backend || task || others))
        return ftb_errf(err, errlen,
                        "--collect RUN_DIR takes no other sweep options (only --wait, --quiet): the "
                        "sweep's are in its submission");
    if (task && (backend || others || b->wait))
        return ftb_errf(err, errlen, "--slurm-task FILE takes no other options");
    if (task) {
        b->mode = FTB_SWEEP_SLURM_TASK;
        for (int i = 0; i < b->argc; i++) free(b->argv[i]);
        free(b->argv);
        b->argv = NULL;
        b->argc = 0;
        return setup_task(b, task, err, errlen);
    }
    if (collect) {
        b->mode = FTB_SWEEP_SLURM_COLLECT;
        for (int i = 0; i < b->argc; i++) free(b->argv[i]);
        free(b->argv);
        b->argv = NULL;
        b->argc = 0;
        return setup_collect(b, collect, err, errlen);
    }
    if (slurm) {
        b->mode = FTB_SWEEP_SLURM_SUBMIT;
        char path[PATH_MAX];
        if (!find_on_path("sbatch", path, sizeof path))
            return ftb_errf(err, errlen,
                            "--backend slurm: sbatch not found on PATH (submit from a Slurm login node, or use "
                            "--backend local)");
    }
    return 0;
}

void ftb_sweep_backend_free(ftb_sweep_backend *b)
{
    for (int i = 0; i < b->argc; i++) free(b->argv[i]);
    free(b->argv);
    for (int i = 0; i < b->n_task_keys; i++) free(b->task_keys[i]);
    free(b->task_keys);
    free(b->slurm_opts);
    json_decref(b->submission);
    json_decref(b->slurm_info);
    memset(b, 0, sizeof *b);
}

/* ---- tasks -------------------------------------------------------------------- */

int ftb_slurm_task_has(const ftb_sweep_backend *b, const char *key)
{
    for (int i = 0; i < b->n_task_keys; i++)
        if (!strcmp(b->task_keys[i], key)) return 1;
    return 0;
}

int ftb_slurm_collect_check(const ftb_sweep_backend *b, const ftb_sweep_plan *p, char *err, size_t errlen)
{
    char planned[PATH_MAX];
    if (!realpath(p->run_dir, planned) || strcmp(planned, b->collect_dir))
        return ftb_errf(err, errlen, "%s: its options plan the run directory %s, not %s (moved?)", b->submission_path,
                        p->run_dir, b->collect_dir);
    return 0;
}

int ftb_slurm_task_check(const ftb_sweep_backend *b, const ftb_sweep_plan *p, char *err, size_t errlen)
{
    const char *submitted = json_string_value(json_object_get(b->submission, "run_id"));
    if (strcmp(submitted, p->run_id))
        return ftb_errf(err, errlen,
                        "%s: the sweep planned on this node is %s, not the %s submitted (the methods directory, "
                        "the profiles or ftbench itself differ from the submitting machine's)",
                        b->submission_path, p->run_id, submitted);
    for (int i = 0; i < b->n_task_keys; i++) {
        int found = 0;
        for (int j = 0; j < p->ncells && !found; j++) found = !strcmp(p->cells[j].key, b->task_keys[i]);
        if (!found)
            return ftb_errf(err, errlen, "%s: cell %s is not in the sweep planned on this node", b->submission_path,
                            b->task_keys[i]);
    }
    return 0;
}

/* ---- resume ---------------------------------------------------------------------- */

int ftb_slurm_is_measurement(json_t *rec)
{
    /* The scheduler ending a task is "anything else" there: the cell gave
     * no number, resume runs it again. */
    return rec && ftb_record_is_measurement(rec);
}

static int measured(const ftb_sweep_records *r, const char *key)
{
    return ftb_slurm_is_measurement(r->find(key, r->ud));
}

void ftb_slurm_latest_job(const char *run_dir, char *out, size_t n)
{
    out[0] = 0;
    int *nums, k;
    list_submissions(run_dir, &nums, &k);
    if (k > 0) {
        char path[PATH_MAX], err[256];
        snprintf(path, sizeof path, "%.3900s/" SLURM_DIR "/submit-%d.json", run_dir, nums[k - 1]);
        json_t *s = load_submission(path, err, sizeof err);
        const char *job = s ? json_string_value(json_object_get(s, "job_id")) : NULL;
        if (job) snprintf(out, n, "%s", job);
        json_decref(s);
    }
    free(nums);
}

/* ---- submitting ----------------------------------------------------------------- */

/* Whether job `id` still has tasks queued or running: 1 yes, 0 no, -1
 * unknown (squeue could not ask slurmctld). */
static int job_active(const char *id)
{
    char *argv[] = { "squeue", "-h", "-r", "-j", (char *)id, "-o", "%i|%T", NULL };
    char *out, *eo;
    int rc = run_capture(argv, &out, &eo);
    int active = rc == 0 ? (out[strspn(out, " \n")] != 0) : strstr(eo, "Invalid job id") ? 0 : -1;
    free(out);
    free(eo);
    return active;
}

/* The sbatch resource lines: cells must not share cores or memory with
 * each other, or the timing and the peak RSS are not the cell's own. */
static void resource_lines(const ftb_sweep_plan *p, char *out, size_t n)
{
    if (!p->emulated) /* The cell measures the node itself (the host profile): all of it. */
        snprintf(out, n,
                 "#SBATCH --exclusive\n"
                 "#SBATCH --cpus-per-task=%d\n"
                 "#SBATCH --mem=0\n",
                 p->threads);
    else
        /* An emulated device: its cores, and its whole RAM as Slurm's
         * memory limit (the budget is the usable share of it, so a cell
         * over the budget still gets its real peak measured). */
        snprintf(out, n,
                 "#SBATCH --cpus-per-task=%d\n"
                 "#SBATCH --mem=%dM\n",
                 p->threads, p->device_ram_mb > 0 ? p->device_ram_mb : (int)(p->budget >> 20) + 1);
}

static int next_submission(const char *run_dir)
{
    int *nums, n;
    list_submissions(run_dir, &nums, &n);
    int next = n ? nums[n - 1] + 1 : 1;
    free(nums);
    return next;
}

int ftb_slurm_submit(ftb_sweep_backend *b, const ftb_sweep_plan *p, const ftb_sweep_records *r)
{
    char err[FTB_ERR_LEN + 600];
    char dir[PATH_MAX], run_dir[PATH_MAX];
    /* Absolute paths in the job: it runs elsewhere, later. */
    if (!realpath(p->run_dir, run_dir)) snprintf(run_dir, sizeof run_dir, "%s", p->run_dir);
    snprintf(dir, sizeof dir, "%.3900s/" SLURM_DIR, run_dir);
    if (ftb_mkdirs(dir, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench sweep: %s\n", err);
        return FTB_EXIT_FAIL;
    }
    /* A job of this sweep still queued or running would measure the same
     * cells twice. */
    int *nums, nsub;
    list_submissions(p->run_dir, &nums, &nsub);
    for (int i = 0; i < nsub; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%.3900s/submit-%d.json", dir, nums[i]);
        json_t *s = load_submission(path, err, sizeof err);
        const char *job = s ? json_string_value(json_object_get(s, "job_id")) : NULL;
        if (job && job_active(job) != 0) {
            fprintf(stderr,
                    "ftbench sweep: job %s of this sweep (%s) is still queued or running (or slurmctld does not "
                    "answer); wait for it (ftbench sweep --collect %s --wait) or scancel it\n",
                    job, path, p->run_dir);
            json_decref(s);
            free(nums);
            return FTB_EXIT_USAGE;
        }
        json_decref(s);
    }
    free(nums);

    json_t *todo = json_array();
    for (int i = 0; i < p->ncells; i++)
        if (!measured(r, p->cells[i].key)) json_array_append_new(todo, json_string(p->cells[i].key));
    int ntodo = (int)json_array_size(todo);
    if (ntodo == 0) {
        fprintf(stderr, "ftbench sweep: every one of the %d cells of %s has a measurement; nothing to submit\n",
                p->ncells, p->run_id);
        json_decref(todo);
        return FTB_EXIT_OK;
    }
    int k = b->cells_per_task, ntasks = (ntodo + k - 1) / k;
    int num = next_submission(p->run_dir);

    char cwd[PATH_MAX], exe[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[el > 0 ? el : 0] = 0;
    char ts[32];
    ftb_utc_timestamp(ts, sizeof ts);

    /* The options a task plans the sweep with: the user's, plus the threads
     * and budget computed here, so that a node with other cores or RAM
     * plans the same cells (same run id, same resume key). */
    json_t *args = json_array();
    for (int i = 1; i < b->argc; i++) json_array_append_new(args, json_string(b->argv[i]));
    char num_text[32];
    if (!p->threads_given) {
        snprintf(num_text, sizeof num_text, "%d", p->threads);
        json_array_append_new(args, json_string("--threads"));
        json_array_append_new(args, json_string(num_text));
    }
    if (!p->budget_given) {
        snprintf(num_text, sizeof num_text, "%lld", (long long)p->budget);
        json_array_append_new(args, json_string("--budget"));
        json_array_append_new(args, json_string(num_text));
    }
    json_t *sub = json_object();
    json_object_set_new(sub, "schema", json_integer(1));
    json_object_set_new(sub, "submission", json_integer(num));
    json_object_set_new(sub, "run_id", json_string(p->run_id));
    json_object_set_new(sub, "sweep", json_string(p->sweep_name));
    json_object_set_new(sub, "created_utc", json_string(ts));
    json_object_set_new(sub, "cwd", json_string(cwd));
    json_object_set_new(sub, "exe", json_string(exe));
    json_object_set_new(sub, "argv", args);
    json_object_set_new(sub, "cells_per_task", json_integer(k));
    json_object_set_new(sub, "tasks", json_integer(ntasks));
    json_object_set_new(sub, "cells", todo);

    char json_name[64], script_name[64], sub_path[PATH_MAX], script_path[PATH_MAX];
    snprintf(json_name, sizeof json_name, "submit-%d.json", num);
    snprintf(script_name, sizeof script_name, "submit-%d.sbatch", num);
    snprintf(sub_path, sizeof sub_path, "%.3900s/%s", dir, json_name);
    snprintf(script_path, sizeof script_path, "%.3900s/%s", dir, script_name);

    /* The job script. */
    size_t cap = 16384 + (b->slurm_opts ? strlen(b->slurm_opts) * 2 : 0);
    char *script = malloc(cap);
    char q_exe[PATH_MAX + 64], q_sub[PATH_MAX + 64], q_cwd[PATH_MAX + 64], res[256];
    sh_quote(exe, q_exe, sizeof q_exe);
    sh_quote(sub_path, q_sub, sizeof q_sub);
    sh_quote(cwd, q_cwd, sizeof q_cwd);
    resource_lines(p, res, sizeof res);
    char which[96];
    if (k == 1)
        snprintf(which, sizeof which, "cell t");
    else
        snprintf(which, sizeof which, "cells %d*t to %d*t+%d, one after the other,", k, k, k - 1);
    size_t o = (size_t)snprintf(script, cap,
                                "#!/bin/sh\n"
                                "# Written by ftbench sweep --backend slurm (%s): %d of the %d cells of\n"
                                "# run %s as a job array, %d cell%s per task.\n"
                                "# Array task t plans the same sweep from the options recorded in\n"
                                "#   %s\n"
                                "# and runs %s of its list, each in its own child as a local sweep\n"
                                "# does, writing each record to\n"
                                "# <run dir>/cells/<cell>.json only: no lock, nothing appended.\n"
                                "# `ftbench sweep --collect <run dir>` merges them and records how tasks ended.\n"
                                "#SBATCH --job-name=ftbench-%.40s\n"
                                "#SBATCH --array=0-%d\n"
                                "#SBATCH --output=%.3900s/submit-%d.%%a.log\n"
                                "#SBATCH --chdir=%s\n"
                                "#SBATCH --ntasks=1\n"
                                "%s",
                                ts, ntodo, p->ncells, p->run_id, k, k == 1 ? "" : "s", sub_path, which, p->run_id,
                                ntasks - 1, dir, num, cwd, res);
    if (b->slurm_opts) {
        o += (size_t)snprintf(script + o, cap - o, "# --slurm-opt:\n");
        char *copy = strdup(b->slurm_opts), *save = NULL;
        for (char *t = strtok_r(copy, " \t", &save); t; t = strtok_r(NULL, " \t", &save))
            o += (size_t)snprintf(script + o, cap - o, "#SBATCH %s\n", t);
        free(copy);
    }
    snprintf(script + o, cap - o,
             "\n# The BLAS kernel the submitting ftbench picked for its own CPU is not\n"
             "# this node's: let each node pick its own (a user's own choice stays).\n"
             "if [ \"${FTBENCH_BLAS_SELECTED:-}\" = auto ]; then unset OPENBLAS_CORETYPE FTBENCH_BLAS_SELECTED; fi\n"
             "cd %s || exit 1\n"
             "exec %s sweep --slurm-task %s\n",
             q_cwd, q_exe, q_sub);
    (void)q_cwd;

    /* --slurm-opt must not take over what the backend relies on. */
    if (b->slurm_opts) {
        static const char *const owned[] = {
            "--array", "-a", "--output", "-o", "--chdir", "-D", "--wrap", "--parsable"
        };
        char *copy = strdup(b->slurm_opts), *save = NULL;
        for (char *t = strtok_r(copy, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
            for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) {
                size_t l = strlen(owned[i]);
                if (!strncmp(t, owned[i], l) && (t[l] == 0 || t[l] == '=' || (owned[i][1] != '-' && t[l]))) {
                    fprintf(stderr, "ftbench sweep: --slurm-opt: %s is set by ftbench itself\n", owned[i]);
                    free(copy);
                    free(script);
                    json_decref(sub);
                    return FTB_EXIT_USAGE;
                }
            }
            if (t[0] != '-') {
                fprintf(stderr, "ftbench sweep: --slurm-opt: '%s' is not an sbatch option\n", t);
                free(copy);
                free(script);
                json_decref(sub);
                return FTB_EXIT_USAGE;
            }
        }
        free(copy);
    }

    char *text = json_dumps(sub, JSON_INDENT(1));
    int wrc = write_atomic(dir, json_name, text, 0644, err, sizeof err);
    free(text);
    if (wrc == 0) wrc = write_atomic(dir, script_name, script, 0755, err, sizeof err);
    free(script);
    if (wrc != 0) {
        fprintf(stderr, "ftbench sweep: %s\n", err);
        json_decref(sub);
        return FTB_EXIT_FAIL;
    }
    char *sargv[] = { "sbatch", "--parsable", script_path, NULL };
    char *out, *eo;
    int rc = run_capture(sargv, &out, &eo);
    char job[64] = "";
    if (rc == 0) {
        size_t l = strspn(out, "0123456789");
        if (l > 0 && l < sizeof job) memcpy(job, out, l), job[l] = 0;
    }
    if (!job[0]) {
        char line[600];
        first_line(*eo ? eo : out, line, sizeof line);
        fprintf(stderr, "ftbench sweep: sbatch %s failed (exit %d): %s\n", script_path, rc, line);
        /* Nothing was queued: the submission is not one. */
        unlink(sub_path);
        unlink(script_path);
        free(out);
        free(eo);
        json_decref(sub);
        return FTB_EXIT_FAIL;
    }
    free(out);
    free(eo);
    json_object_set_new(sub, "job_id", json_string(job));
    text = json_dumps(sub, JSON_INDENT(1));
    wrc = write_atomic(dir, json_name, text, 0644, err, sizeof err);
    free(text);
    json_decref(sub);
    if (wrc != 0) {
        fprintf(stderr, "ftbench sweep: job %s was submitted but its id could not be recorded: %s\n", job, err);
        return FTB_EXIT_FAIL;
    }
    fprintf(stderr,
            "ftbench sweep: submitted job %s: %d array task%s for %d of the %d cells of %s (%d per task)\n"
            "  script: %s\n  collect: ftbench sweep --collect %s\n",
            job, ntasks, ntasks == 1 ? "" : "s", ntodo, p->ncells, p->run_id, k, script_path, run_dir);
    printf("%s\n", job);
    fflush(stdout);
    if (b->wait) {
        if (ftb_slurm_wait(job, p, r, 0, err, sizeof err) != 0) {
            fprintf(stderr, "ftbench sweep: %s\n", err);
            return FTB_EXIT_FAIL;
        }
    }
    return FTB_EXIT_OK;
}

/* ---- waiting -------------------------------------------------------------------- */

/* Slurm's pending reasons that no amount of waiting resolves without
 * someone acting (an administrator, or the user releasing a hold): the
 * waiting user is told once, instead of watching "pending" for hours. */
static int reason_needs_someone(const char *r)
{
    static const char *const stuck[] = {
        "ReqNodeNotAvail",
        "NodeDown",
        "PartitionDown",
        "PartitionInactive",
        "PartitionNodeLimit",
        "JobHeldAdmin",
        "JobHeldUser",
        "DependencyNeverSatisfied",
        "launch failed requeued held",
        "InvalidAccount",
        "InvalidQOS",
        "AssocMaxJobsLimit",
        "BadConstraints",
    };
    for (size_t i = 0; i < sizeof stuck / sizeof stuck[0]; i++)
        if (!strncmp(r, stuck[i], strlen(stuck[i]))) return 1;
    return 0;
}

int ftb_slurm_wait(const char *job_id, const ftb_sweep_plan *p, const ftb_sweep_records *r, int quiet, char *err,
                   size_t errlen)
{
    double start = ftb_now();
    int tty = isatty(2) && !quiet;
    /* Not on a terminal (a log, CI), a line is printed when something
     * changed, and otherwise once a minute: a job that waits for hours must
     * not write thousands of identical lines. */
    char last_line[512] = "";
    double last_print = -1e9;
    char stuck_said[128] = "";
    for (;;) {
        char *argv[] = { "squeue", "-h", "-r", "-j", (char *)job_id, "-o", "%T|%r", NULL };
        char *out, *eo;
        int rc = run_capture(argv, &out, &eo);
        int pending = 0, running = 0, gone = 0, reachable = 1;
        char reason[128] = "";
        if (rc == 0) {
            for (char *l = out; *l;) {
                size_t k = strcspn(l, "\n");
                if (k > 0) {
                    if (!strncmp(l, "PENDING", 7) || !strncmp(l, "REQUEUED", 8)) {
                        pending++;
                        /* The first pending task's reason stands for all:
                         * an array's tasks wait for the same thing. */
                        const char *bar = memchr(l, '|', k);
                        if (bar && !reason[0]) {
                            size_t n = k - (size_t)(bar + 1 - l);
                            if (n >= sizeof reason) n = sizeof reason - 1;
                            memcpy(reason, bar + 1, n);
                            reason[n] = '\0';
                        }
                    } else {
                        running++;
                    }
                }
                l += k + (l[k] == '\n');
            }
            gone = pending + running == 0;
        } else if (strstr(eo, "Invalid job id")) {
            gone = 1;
        } else {
            reachable = 0;
        }
        free(out);
        free(eo);
        int recorded = 0, timed = 0;
        double cell_seconds = 0;
        r->refresh(r->ud);
        for (int i = 0; i < p->ncells; i++) {
            json_t *rec = r->find(p->cells[i].key, r->ud);
            if (!ftb_slurm_is_measurement(rec)) continue;
            recorded++;
            json_t *w = json_object_get(rec, "cell_wall_seconds");
            if (json_is_number(w)) {
                cell_seconds += json_number_value(w);
                timed++;
            }
        }
        double el = ftb_now() - start;
        char elapsed[32], eta[32] = "?";
        ftb_format_duration(el, elapsed, sizeof elapsed);
        if (timed > 0 && pending + running > 0) {
            /* The cells measured so far set the pace (their own wall
             * times); the cells left go at the parallelism Slurm gives now. */
            int par = running > 0 ? running : 1;
            ftb_format_duration(cell_seconds / timed * (p->ncells - recorded) / par, eta, sizeof eta);
        }
        if (!quiet && reason[0] && reason_needs_someone(reason) && strcmp(reason, stuck_said)) {
            fprintf(stderr,
                    "%sftbench sweep: job %s's pending tasks wait for '%s' (Slurm's reason): they start only when "
                    "someone acts (sinfo -R, scontrol show job %s); Ctrl-C stops waiting and leaves them queued\n",
                    tty ? "\r\033[K" : "", job_id, reason, job_id);
            snprintf(stuck_said, sizeof stuck_said, "%s", reason);
        }
        if (!quiet) {
            char line[512], why[160] = "";
            if (reason[0] && strcmp(reason, "None")) snprintf(why, sizeof why, " (%s)", reason);
            if (!reachable)
                snprintf(line, sizeof line, "[slurm job %s] slurmctld does not answer; waiting | %d/%d cells recorded",
                         job_id, recorded, p->ncells);
            else
                snprintf(line, sizeof line, "[slurm job %s] %d/%d cells recorded | %d running, %d pending%s", job_id,
                         recorded, p->ncells, running, pending, why);
            if (tty) {
                fprintf(stderr, "\r\033[K%s | elapsed %s | ETA %s", line, elapsed, eta);
            } else if (strcmp(line, last_line) || el - last_print >= 60) {
                fprintf(stderr, "%s | elapsed %s | ETA %s\n", line, elapsed, eta);
                snprintf(last_line, sizeof last_line, "%s", line);
                last_print = el;
            }
            fflush(stderr);
        }
        if (gone) break;
        /* Polling slurmctld more often than this only loads it.  Ctrl-C or
         * SIGTERM ends the wait (sleep returns early), not the job. */
        if (!ftb_interrupted()) sleep(tty ? 2 : 10);
        if (ftb_interrupted()) {
            if (tty) fprintf(stderr, "\n");
            snprintf(err, errlen,
                     "stopped waiting (signal %d); job %s goes on in Slurm: ftbench sweep --collect <run dir> --wait "
                     "follows it again, scancel %s stops it",
                     ftb_interrupted(), job_id, job_id);
            return -1;
        }
    }
    if (tty) fprintf(stderr, "\n");
    return 0;
}

/* ---- outcomes from sacct ------------------------------------------------------------ */

const char *ftb_slurm_outcome(const char *state)
{
    static const struct {
        const char *state, *outcome;
    } map[] = {
        { "CANCELLED", "slurm_cancelled" }, { "FAILED", "slurm_failed" },
        { "TIMEOUT", "slurm_timeout" },     { "OUT_OF_MEMORY", "slurm_out_of_memory" },
        { "NODE_FAIL", "slurm_node_fail" }, { "PREEMPTED", "slurm_preempted" },
        { "BOOT_FAIL", "slurm_boot_fail" }, { "DEADLINE", "slurm_deadline" },
        { "REVOKED", "slurm_revoked" },
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(state, map[i].state)) return map[i].outcome;
    return NULL;
}

/* "3", "[3-5,7%2]" → indices. */
static int expand_tasks(const char *s, long **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (*s != '[') {
        long v;
        if (ftb_parse_long(s, 0, LONG_MAX, &v) != 0) return -1;
        *out = malloc(sizeof **out);
        (*out)[(*n)++] = v;
        return 0;
    }
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", s + 1);
    char *close_b = strchr(buf, ']');
    if (!close_b) return -1;
    *close_b = 0;
    char *pct = strchr(buf, '%');
    if (pct) *pct = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long a, z;
        char *dash = strchr(t, '-');
        if (dash) {
            *dash = 0;
            if (ftb_parse_long(t, 0, LONG_MAX, &a) != 0 || ftb_parse_long(dash + 1, a, LONG_MAX, &z) != 0) return -1;
        } else if (ftb_parse_long(t, 0, LONG_MAX, &a) != 0) {
            return -1;
        } else {
            z = a;
        }
        if (z - a > 10000000) return -1;
        *out = realloc(*out, (size_t)(*n + (z - a) + 1) * sizeof **out);
        for (long v = a; v <= z; v++) (*out)[(*n)++] = v;
    }
    return 0;
}

/* sacct's sizes: "411260K", "1.50G", "300M", "300Mn" (per node) — bytes, or
 * -1 ("300Mc", per CPU, is not a job's limit; "" is unknown). */
static int64_t sacct_size(const char *s)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    size_t l = strlen(buf);
    if (l > 1 && buf[l - 1] == 'c') return -1;
    if (l > 1 && buf[l - 1] == 'n') buf[--l] = 0;
    int64_t v;
    return ftb_parse_size(buf, &v) == 0 ? v : -1;
}

int ftb_slurm_parse_sacct(const char *job_id, const char *text, ftb_slurm_task_state **out, int *n, char *err,
                          size_t errlen)
{
    *out = NULL;
    *n = 0;
    size_t jl = strlen(job_id);
    for (const char *l = text; *l;) {
        size_t len = strcspn(l, "\n");
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line - 1 ? len : sizeof line - 1), l);
        l += len + (l[len] == '\n');
        if (!*ftb_trim(line)) continue;
        enum { NF = 7 };
        char *f[NF] = { 0 };
        int nf = 0;
        for (char *p = line; nf < NF;) {
            f[nf++] = p;
            char *bar = strchr(p, '|');
            if (!bar) break;
            *bar = 0;
            p = bar + 1;
        }
        if (nf < NF)
            return ftb_errf(err, errlen, "sacct: '%s': not JobID|State|ExitCode|Elapsed|NodeList|MaxRSS|ReqMem", line);
        /* Array tasks are "<job>_<task>", their steps "<job>_<task>.batch"
         * (and .extern, .0, ...); other jobs cannot appear (-j). */
        if (strncmp(f[0], job_id, jl) || f[0][jl] != '_') continue;
        char *dot = strchr(f[0] + jl + 1, '.');
        if (dot) {
            /* A step: its peak RSS, charged to its task. */
            *dot = 0;
            long t;
            if (ftb_parse_long(f[0] + jl + 1, 0, LONG_MAX, &t) != 0) continue;
            int64_t rss = sacct_size(f[5]);
            for (int k = 0; k < *n; k++)
                if ((*out)[k].task == t && rss > (*out)[k].max_rss_bytes) (*out)[k].max_rss_bytes = rss;
            continue;
        }
        long *tasks;
        int nt;
        if (expand_tasks(f[0] + jl + 1, &tasks, &nt) != 0)
            return ftb_errf(err, errlen, "sacct: '%s' is not an array task id of job %s", f[0], job_id);
        char state[32], by[64] = "";
        int used = 0;
        sscanf(f[1], "%31s%n", state, &used);
        snprintf(by, sizeof by, "%s", ftb_trim(f[1] + used));
        for (int i = 0; i < nt; i++) {
            /* A task listed twice (requeued, or pending then started) keeps
             * its last line. */
            int at = -1;
            for (int k = 0; k < *n; k++)
                if ((*out)[k].task == tasks[i]) at = k;
            if (at < 0) {
                *out = realloc(*out, (size_t)(*n + 1) * sizeof **out);
                at = (*n)++;
            }
            ftb_slurm_task_state *t = &(*out)[at];
            memset(t, 0, sizeof *t);
            t->task = tasks[i];
            snprintf(t->state, sizeof t->state, "%s", state);
            snprintf(t->state_by, sizeof t->state_by, "%s", by);
            snprintf(t->exit_code, sizeof t->exit_code, "%s", f[2]);
            snprintf(t->elapsed, sizeof t->elapsed, "%s", f[3]);
            snprintf(t->node, sizeof t->node, "%s", f[4]);
            snprintf(t->job_id, sizeof t->job_id, "%s_%ld", job_id, tasks[i]);
            t->max_rss_bytes = sacct_size(f[5]);
            t->req_mem_bytes = sacct_size(f[6]);
        }
        free(tasks);
    }
    return 0;
}

const char *ftb_slurm_task_outcome(const ftb_slurm_task_state *t)
{
    /* Without cgroups (proctrack/linuxproc, as on the test cluster) Slurm's
     * memory enforcement is the accounting poll (OverMemoryKill): the
     * task ends FAILED, killed by SIGKILL, with its step's MaxRSS over the
     * job's memory.  With task/cgroup sacct says OUT_OF_MEMORY itself. */
    if ((!strcmp(t->state, "FAILED") || !strcmp(t->state, "CANCELLED")) && t->req_mem_bytes > 0 &&
        t->max_rss_bytes >= t->req_mem_bytes)
        return "slurm_out_of_memory";
    return ftb_slurm_outcome(t->state);
}

static int collect_submission(const ftb_sweep_plan *p, const char *path, json_t *sub, const ftb_sweep_records *r,
                              ftb_record_outcome_fn record, json_t *handled, int *recorded, int *active, char *err,
                              size_t errlen)
{
    const char *job = json_string_value(json_object_get(sub, "job_id"));
    if (!job) {
        fprintf(stderr,
                "ftbench sweep: %s has no job id (sbatch's answer was not recorded); its cells without a "
                "record will be submitted again\n",
                path);
        return 0;
    }
    char *argv[] = { "sacct", "-n",        "-P",
                     "-j",    (char *)job, "--format=JobID,State,ExitCode,Elapsed,NodeList,MaxRSS,ReqMem",
                     NULL };
    char *out, *eo;
    int rc = run_capture(argv, &out, &eo);
    if (rc != 0) {
        char line[600];
        first_line(*eo ? eo : out, line, sizeof line);
        free(out);
        free(eo);
        return ftb_errf(err, errlen,
                        "sacct -j %s failed (exit %d): %s (the outcome of a task comes from Slurm's accounting: "
                        "slurmdbd must be running)",
                        job, rc, line);
    }
    ftb_slurm_task_state *ts;
    int nts;
    int prc = ftb_slurm_parse_sacct(job, out, &ts, &nts, err, errlen);
    free(out);
    free(eo);
    if (prc != 0) return -1;
    json_t *cells = json_object_get(sub, "cells");
    long k = (long)json_integer_value(json_object_get(sub, "cells_per_task"));
    for (int i = 0; i < nts; i++) {
        const char *outcome = ftb_slurm_task_outcome(&ts[i]);
        for (long c = ts[i].task * k; c < ts[i].task * k + k && c < (long)json_array_size(cells); c++) {
            const char *key = json_string_value(json_array_get(cells, (size_t)c));
            /* A newer submission already said how this cell ended. */
            if (json_object_get(handled, key)) continue;
            json_object_set_new(handled, key, json_true());
            json_t *prev = r->find(key, r->ud);
            if (ftb_slurm_is_measurement(prev)) continue;
            if (!outcome) {
                if (strcmp(ts[i].state, "COMPLETED")) (*active)++;
                continue;
            }
            /* This very ending is recorded already (an earlier collect). */
            const char *prev_job = json_string_value(json_object_get(json_object_get(prev, "slurm"), "job_id"));
            const char *prev_outcome = json_string_value(json_object_get(prev, "outcome"));
            if (prev_job && prev_outcome && !strcmp(prev_job, ts[i].job_id) && !strcmp(prev_outcome, outcome)) continue;
            const ftb_cell *cell = NULL;
            for (int j = 0; j < p->ncells && !cell; j++)
                if (!strcmp(p->cells[j].key, key)) cell = &p->cells[j];
            if (!cell) continue; /* not in this plan (an older sweep's) */
            char detail[640];
            int dl =
                snprintf(detail, sizeof detail, "Slurm array task %s ended %s%s%s (exit code %s) on %s after %s",
                         ts[i].job_id, ts[i].state, ts[i].state_by[0] ? " " : "", ts[i].state_by, ts[i].exit_code,
                         ts[i].node[0] && strcmp(ts[i].node, "None assigned") ? ts[i].node : "no node", ts[i].elapsed);
            if (!strcmp(outcome, "slurm_out_of_memory") && ts[i].max_rss_bytes > 0 && dl > 0 &&
                (size_t)dl < sizeof detail)
                snprintf(detail + dl, sizeof detail - (size_t)dl, ", MaxRSS %.0f MiB, job memory %.0f MiB",
                         (double)ts[i].max_rss_bytes / 1048576.0, (double)ts[i].req_mem_bytes / 1048576.0);
            json_t *sl = json_object();
            json_object_set_new(sl, "job_id", json_string(ts[i].job_id));
            json_object_set_new(sl, "array_job_id", json_string(job));
            json_object_set_new(sl, "array_task_id", json_integer(ts[i].task));
            json_object_set_new(sl, "state", json_string(ts[i].state));
            if (ts[i].state_by[0]) json_object_set_new(sl, "state_detail", json_string(ts[i].state_by));
            json_object_set_new(sl, "exit_code", json_string(ts[i].exit_code));
            json_object_set_new(sl, "elapsed", json_string(ts[i].elapsed));
            json_object_set_new(sl, "node", json_string(ts[i].node));
            if (ts[i].max_rss_bytes >= 0) json_object_set_new(sl, "max_rss_bytes", json_integer(ts[i].max_rss_bytes));
            if (ts[i].req_mem_bytes >= 0) json_object_set_new(sl, "req_mem_bytes", json_integer(ts[i].req_mem_bytes));
            json_object_set_new(sl, "submission", json_string(path));
            json_object_set_new(sl, "outcome_source", json_string("sacct"));
            int rr = record(cell, outcome, detail, sl, r->ud, err, errlen);
            json_decref(sl);
            if (rr != 0) {
                free(ts);
                return -1;
            }
            (*recorded)++;
        }
    }
    free(ts);
    return 0;
}

int ftb_slurm_collect(const ftb_sweep_plan *p, const ftb_sweep_records *r, ftb_record_outcome_fn record, int *recorded,
                      int *active, char *err, size_t errlen)
{
    *recorded = 0;
    *active = 0;
    int *nums, n;
    list_submissions(p->run_dir, &nums, &n);
    json_t *handled = json_object();
    /* Newest first: a cell's latest submission says how it ended; an older
     * task's ending is not recorded over a later one (measured() sees the
     * record just written). */
    for (int i = n - 1; i >= 0; i--) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%.3900s/" SLURM_DIR "/submit-%d.json", p->run_dir, nums[i]);
        json_t *sub = load_submission(path, err, errlen);
        if (!sub) {
            free(nums);
            return -1;
        }
        int rc = collect_submission(p, path, sub, r, record, handled, recorded, active, err, errlen);
        json_decref(sub);
        if (rc != 0) {
            free(nums);
            json_decref(handled);
            return -1;
        }
    }
    free(nums);
    json_decref(handled);
    return 0;
}
