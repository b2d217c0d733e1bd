/* test_faults.c — faults of the machine, injected on purpose (suite
 * `faults`; docs/RELIABILITY.md):
 *   - allocation failure inside the core: ftb_mem_fail_after(n) makes the
 *     core's allocation n+1 fail, for every n a scenario reaches (model
 *     create or checkpoint load, method init, one training step, teardown),
 *     one method after another.  Each n must end in a clear error (a message
 *     naming "out of memory"), never a crash, never a silent success, and
 *     with every byte given back (the core's own accounting; LeakSanitizer
 *     too in the SAN build);
 *   - the same through the executable (FTBENCH_FAIL_ALLOC_AFTER): `run`
 *     exits non-zero with one line, `sweep` records the cell as an error
 *     and goes on;
 *   - a results directory that cannot be written, and a disk that fills up
 *     in the middle of a record: a clear error, and the results file holds
 *     only whole records. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftbench.h"
#include "model_internal.h"
#include "plugin.h"
#include "helpers.h"
#include "util.h"

#if defined(__SANITIZE_ADDRESS__)
#define FT_HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FT_HAVE_LSAN 1
#endif
#endif
#ifdef FT_HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

extern char **environ;

static int rm_entry(const char *p, const struct stat *s, int f, struct FTW *w)
{
    (void)s;
    (void)f;
    (void)w;
    return remove(p);
}

static char tmpdir[64];

static void make_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftbfaults-XXXXXX");
    cr_assert(mkdtemp(tmpdir) != NULL);
}

static void remove_tmp(void)
{
    if (tmpdir[0]) {
        char p[128];
        snprintf(p, sizeof p, "%s/ro", tmpdir);
        chmod(p, 0755); /* an unwritable directory a test made */
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    tmpdir[0] = 0;
}

/* ------------------------------------------------------------------------ */
/* Allocation failure inside the core                                         */
/* ------------------------------------------------------------------------ */

typedef enum { SRC_CREATE, SRC_LOAD_COPY, SRC_LOAD_MAP } model_source;
static const char *source_name[] = { "create", "load", "load-mapped" };

typedef struct {
    const char *method;
    const char *opt_key, *opt_value; /* one option, or NULL */
    model_source source;
} fault_case;

/* Outcomes a child reports through its exit code. */
enum {
    CHILD_COMPLETED = 10,   /* no allocation failed, the step ran          */
    CHILD_CLEAN_ERROR = 11, /* an allocation failed; a clear error came out */
    CHILD_SILENT = 12,      /* an allocation failed, yet success was reported */
    CHILD_BAD_MESSAGE = 13, /* the error's message is empty or not about memory */
    CHILD_LEAK = 14,        /* core bytes still live after teardown          */
    CHILD_SETUP = 15,       /* the scenario failed with no allocation failing */
};

static void tiny_batch(int32_t *tokens, int32_t *targets, int T, int V)
{
    for (int i = 0; i < T; i++) tokens[i] = (i * 7 + 3) % V;
    for (int i = 0; i < T; i++) targets[i] = i + 1 < T ? tokens[i + 1] : FTB_IGNORE_INDEX;
}

/* Model from its source, method init, one step, teardown.  0 on success, -1
 * with err; what was made is always freed. */
static int run_scenario(const fault_case *fc, const ftb_method *method, const char *ckpt, char *err, size_t errlen)
{
    ftb_model *m;
    if (fc->source == SRC_CREATE) {
        ftb_config cfg;
        ftb_zoo_get("tiny", &cfg);
        m = ftb_model_create(&cfg, 3, err, errlen);
    } else {
        m = ftb_model_load(ckpt, fc->source == SRC_LOAD_MAP, err, errlen);
    }
    if (!m) return -1;
    const char *keys[1] = { fc->opt_key }, *values[1] = { fc->opt_value };
    ftb_options o = { fc->opt_key ? 1 : 0, keys, values };
    ftb_session s;
    memset(&s, 0, sizeof s);
    s.model = m;
    ftb_run_opts_default(&s.run);
    s.options = &o;
    s.seed = 5;
    s.lr = 1e-3f;
    s.total_steps = 1;
    err[0] = 0;
    void *st = method->init(&s, err, errlen);
    int rc = -1;
    if (st) {
        enum { T = 16 };
        int32_t tokens[T], targets[T];
        tiny_batch(tokens, targets, T, m->cfg.vocab_size);
        ftb_batch b = { 1, T, tokens, targets };
        ftb_step_result res;
        memset(&res, 0, sizeof res);
        rc = method->step(st, &s, &b, &res, err, errlen);
        method->destroy(st);
    } else if (!err[0]) {
        snprintf(err, errlen, "(init returned NULL without a message)");
    }
    ftb_model_free(m);
    return rc;
}

/* What the child reports for one n. */
typedef struct {
    int64_t n;     /* allocation n+1 failed; -1: none did               */
    int64_t calls; /* allocations the scenario made                      */
    int outcome;
    char msg[FTB_ERR_LEN + 64];
} step_report;

/* One scenario with allocation n+1 failing (n < 0: none). */
static step_report one_scenario(const fault_case *fc, const ftb_method *method, const char *ckpt, int64_t n,
                                int persistent)
{
    step_report r;
    memset(&r, 0, sizeof r);
    r.n = n;
    ftb_mem_stats before, after;
    ftb_mem_get_stats(&before);
    int64_t calls0 = ftb_mem_alloc_calls();
    ftb_mem_clear_failure();
    ftb_mem_fail_after(n, persistent);
    char err[FTB_ERR_LEN] = "";
    int rc = run_scenario(fc, method, ckpt, err, sizeof err);
    ftb_mem_fail_after(-1, 0);
    r.calls = ftb_mem_alloc_calls() - calls0;
    int failed = n >= 0 && r.calls > n;
    ftb_mem_get_stats(&after);
    snprintf(r.msg, sizeof r.msg, "%s", err);
    if (after.live_total != before.live_total) {
        r.outcome = CHILD_LEAK;
        snprintf(r.msg, sizeof r.msg, "%s [%lld core bytes still live]", err,
                 (long long)(after.live_total - before.live_total));
    } else if (!failed)
        r.outcome = rc == 0 ? CHILD_COMPLETED : CHILD_SETUP;
    else if (rc == 0)
        r.outcome = CHILD_SILENT;
    else if (!strstr(err, "out of memory") || strchr(err, '\n'))
        r.outcome = CHILD_BAD_MESSAGE;
    else
        r.outcome = CHILD_CLEAN_ERROR;
    return r;
}

/* In a forked child (a crash ends only it; see write_checkpoint for why
 * the test process runs no model itself): the scenario once without
 * failure, then with each of its allocations failing in turn.  One report
 * per n comes back through a pipe; a child that dies leaves the n it died
 * at as the first one not reported.  Returns how many n went wrong (at most
 * 5 are printed). */
static int sweep_in_child(const fault_case *fc, const ftb_method *method, const char *ckpt, int persistent,
                          int64_t *total)
{
    int fds[2];
    cr_assert(pipe(fds) == 0);
    FILE *lsan_out = tmpfile();
    cr_assert_not_null(lsan_out);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        close(fds[0]);
        ftb_set_threads(1);
        step_report r = one_scenario(fc, method, ckpt, -1, 0);
        int64_t calls = r.calls;
        if (write(fds[1], &r, sizeof r) != sizeof r) _exit(CHILD_SETUP);
        for (int64_t n = 0; r.outcome == CHILD_COMPLETED && n < calls; n++) {
            step_report rn = one_scenario(fc, method, ckpt, n, persistent);
            if (write(fds[1], &rn, sizeof rn) != sizeof rn) _exit(CHILD_SETUP);
        }
        close(fds[1]);
#ifdef FT_HAVE_LSAN
        fflush(stderr);
        dup2(fileno(lsan_out), 2);
        __lsan_do_leak_check(); /* exits non-zero on a leak */
#endif
        _exit(0);
    }
    close(fds[1]);
    const char *label = persistent ? "persistent" : "one-shot";
    int bad = 0;
    int64_t next = -1;
    *total = -1;
    step_report r;
    while (read(fds[0], &r, sizeof r) == (ssize_t)sizeof r) { /* pipe writes of this size are whole */
        next = r.n + 1;
        if (r.n < 0) {
            *total = r.calls;
            if (r.outcome != CHILD_COMPLETED) {
                cr_expect_fail("%s (%s): the run without failure ended %d: %s", fc->method, source_name[fc->source],
                               r.outcome, r.msg);
                bad++;
            }
            continue;
        }
        if (r.outcome != CHILD_CLEAN_ERROR && ++bad <= 5)
            cr_expect_fail("%s%s%s (%s, %s): allocation %lld of %lld failing ended with %s: %s", fc->method,
                           fc->opt_key ? " " : "", fc->opt_key ? fc->opt_value : "", source_name[fc->source], label,
                           (long long)r.n + 1, (long long)*total,
                           r.outcome == CHILD_SILENT        ? "success reported"
                           : r.outcome == CHILD_BAD_MESSAGE ? "an unclear message"
                           : r.outcome == CHILD_LEAK        ? "a leak"
                                                            : "an unexpected outcome",
                           r.msg);
    }
    close(fds[0]);
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    rewind(lsan_out);
    char line[1024];
    while (fgets(line, sizeof line, lsan_out))
        if (!strstr(line, "was not suspended. False leaks are possible")) fputs(line, stderr);
    fclose(lsan_out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        cr_expect_fail("%s (%s, %s): the child %s %d with allocation %lld of %lld failing", fc->method,
                       source_name[fc->source], label, WIFEXITED(status) ? "exited" : "died of signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), (long long)next + 1,
                       (long long)*total);
        bad++;
    } else if (*total > 0 && next != *total) {
        cr_expect_fail("%s (%s, %s): the sweep stopped at %lld of %lld", fc->method, source_name[fc->source], label,
                       (long long)next, (long long)*total);
        bad++;
    }
    return bad;
}

static char ckpt_dir[128];

/* Written by a child: a process that has run an OpenMP region cannot use
 * OpenMP again in a forked child (libgomp's pool does not survive fork; the
 * child waits for threads that are not there), so this test process itself
 * never runs the model. */
static void write_checkpoint(void)
{
    make_tmp();
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s/ckpt", tmpdir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        ftb_config cfg;
        ftb_zoo_get("tiny", &cfg);
        char err[FTB_ERR_LEN];
        ftb_model *m = ftb_model_create(&cfg, 7, err, sizeof err);
        int rc = m ? ftb_model_save(m, ckpt_dir, err, sizeof err) : -1;
        if (rc) fprintf(stderr, "writing the checkpoint: %s\n", err);
        ftb_model_free(m);
        _exit(rc ? 1 : 0);
    }
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the checkpoint could not be written");
}

/* Every allocation of the scenario fails once in turn (one-shot: later
 * allocations succeed, so the core must notice a failure it no longer
 * sees), then, when persistent, every allocation from the n-th on. */
static void sweep_case(const fault_case *fc, int persistent)
{
    ftb_plugin p;
    th_open_method(fc->method, &p);
    int64_t total;
    int bad = sweep_in_child(fc, p.method, ckpt_dir, persistent, &total);
    cr_log_info("%s%s%s (%s, %s): %lld allocations, each failed in turn: %d wrong", fc->method, fc->opt_key ? " " : "",
                fc->opt_key ? fc->opt_value : "", source_name[fc->source], persistent ? "persistent" : "one-shot",
                (long long)total, bad);
    ftb_plugin_close(&p);
}

#define FAULT_TEST(name, ...)                                                                        \
    Test(faults, alloc_failure_##name, .init = write_checkpoint, .fini = remove_tmp, .timeout = 600) \
    {                                                                                                \
        const fault_case cases[] = { __VA_ARGS__ };                                                  \
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {                                  \
            sweep_case(&cases[i], 0);                                                                \
            sweep_case(&cases[i], 1);                                                                \
        }                                                                                            \
    }

FAULT_TEST(full, { "full", NULL, NULL, SRC_CREATE }, { "full", NULL, NULL, SRC_LOAD_COPY },
           { "full", NULL, NULL, SRC_LOAD_MAP })
FAULT_TEST(lora, { "lora", NULL, NULL, SRC_LOAD_MAP })
FAULT_TEST(gc, { "gc", NULL, NULL, SRC_LOAD_MAP })
FAULT_TEST(mezo, { "mezo", NULL, NULL, SRC_LOAD_MAP }, { "mezo", "params", "lora", SRC_LOAD_MAP })
FAULT_TEST(other_methods, { "ia3", NULL, NULL, SRC_LOAD_MAP }, { "lastk", NULL, NULL, SRC_LOAD_MAP },
           { "mebp", NULL, NULL, SRC_LOAD_MAP }, { "mesp", NULL, NULL, SRC_LOAD_MAP },
           { "prge", NULL, NULL, SRC_LOAD_MAP })
FAULT_TEST(lars_and_lora_dropout, { "lars", NULL, NULL, SRC_LOAD_MAP }, { "lars", "variant", "gated", SRC_LOAD_MAP },
           { "lora", "dropout", "0.1", SRC_LOAD_MAP })

/* The flag is per run: a failure before a run does not fail the run, and a
 * failed run leaves the model usable for the next one. */
Test(faults, a_failed_run_leaves_the_model_usable)
{
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    char err[FTB_ERR_LEN] = "";
    ftb_model *m = ftb_model_create(&cfg, 3, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    ftb_model_set_trainable(m, 1);
    cr_assert_eq(ftb_model_alloc_grads(m, err, sizeof err), 0, "%s", err);
    enum { T = 16 };
    int32_t tokens[T], targets[T];
    tiny_batch(tokens, targets, T, cfg.vocab_size);
    ftb_batch b = { 1, T, tokens, targets };
    ftb_mem_stats before, after;
    ftb_mem_get_stats(&before);
    float ref = ftb_model_forward_backward(m, &b, NULL, err, sizeof err);
    cr_assert(ref == ref, "%s", err);
    ftb_mem_fail_after(5, 0);
    float bad = ftb_model_forward_backward(m, &b, NULL, err, sizeof err);
    ftb_mem_fail_after(-1, 0);
    cr_expect(bad != bad, "a run whose sixth allocation failed returned %g", bad);
    cr_expect(strstr(err, "out of memory:") && strstr(err, "(injected failure)"), "message: %s", err);
    ftb_mem_get_stats(&after);
    cr_expect_eq(after.live_total, before.live_total, "%lld bytes left by the failed run",
                 (long long)(after.live_total - before.live_total));
    err[0] = 0;
    float again = ftb_model_forward_backward(m, &b, NULL, err, sizeof err);
    cr_expect(again == ref, "after a failed run: %g, before: %g (%s)", again, ref, err);
    ftb_model_free(m);
}

/* ------------------------------------------------------------------------ */
/* The executable                                                              */
/* ------------------------------------------------------------------------ */

typedef struct {
    int code; /* exit code, or 128+signal */
    char *out, *err;
} proc;

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int need_bin(void)
{
    if (!getenv("FTBENCH_BIN") || !getenv("FTBENCH_METHODS"))
        cr_skip_test("FTBENCH_BIN and FTBENCH_METHODS are set by make test");
    return 1;
}

/* Runs ftbench with args, extra environment entries (NULL-terminated) and,
 * if fsize > 0, a file size limit with SIGXFSZ ignored: a disk that is full
 * past fsize bytes (writes end with EFBIG), which works as root too. */
static proc run_ftbench(const char *const *args, const char *const *extra_env, long fsize)
{
    char outp[] = "/tmp/ftbfaults-out-XXXXXX", errp[] = "/tmp/ftbfaults-err-XXXXXX";
    close(mkstemp(outp));
    close(mkstemp(errp));
    const char *argv[64];
    int n = 0;
    argv[n++] = getenv("FTBENCH_BIN");
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    const char *envp[600];
    int e = 0;
    for (char **v = environ; *v && e < 560; v++)
        if (strncmp(*v, "ASAN_OPTIONS=", 13) && strncmp(*v, "FTBENCH_BLAS_AUTO=", 18) &&
            strncmp(*v, "FTBENCH_FAIL_ALLOC_AFTER=", 25))
            envp[e++] = *v;
    envp[e++] = "ASAN_OPTIONS=detect_leaks=0";
    envp[e++] = "FTBENCH_BLAS_AUTO=0";
    for (int i = 0; extra_env && extra_env[i] && e < 598; i++) envp[e++] = extra_env[i];
    envp[e] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_TRUNC), er = open(errp, O_WRONLY | O_TRUNC);
        dup2(o, 1);
        dup2(er, 2);
        if (fsize > 0) {
            signal(SIGXFSZ, SIG_IGN); /* inherited through exec */
            struct rlimit rl = { (rlim_t)fsize, (rlim_t)fsize };
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(126);
        }
        execve(argv[0], (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    proc p;
    p.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    p.out = th_slurp_len(outp, NULL);
    p.err = th_slurp_len(errp, NULL);
    unlink(outp);
    unlink(errp);
    return p;
}

static void proc_free(proc *p)
{
    free(p->out);
    free(p->err);
}

/* Every line of a results file: how many parse as records, how many do not. */
static void count_records(const char *path, int *records, int *bad, int *errors, char *detail, size_t dlen)
{
    *records = *bad = *errors = 0;
    if (detail) detail[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j || !json_object_get(j, "cell")) {
            (*bad)++;
        } else {
            (*records)++;
            const char *o = json_string_value(json_object_get(j, "outcome"));
            if (o && !strcmp(o, "error")) {
                (*errors)++;
                const char *d = json_string_value(json_object_get(j, "outcome_detail"));
                if (detail && d) snprintf(detail, dlen, "%s", d);
            }
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
}

/* A cell whose core allocation fails is an error with the message; `run`
 * exits non-zero with one line; a sweep records every such cell and goes
 * on. */
Test(faults, executable_alloc_failure_is_an_error_record, .fini = remove_tmp, .timeout = 300)
{
    need_bin();
    make_tmp();
    const char *env[] = { "FTBENCH_FAIL_ALLOC_AFTER=40", NULL };
    proc p = run_ftbench((const char *[]){ "run", "--methods-dir", getenv("FTBENCH_METHODS"), "--method", "lora",
                                           "--model", "tiny", "--seq", "16", "--steps", "1", "--warmup", "0", "--out",
                                           tmpdir, "--run-id", "r", "--quiet", NULL },
                         env, 0);
    /* run's summary (stdout) names the outcome; nothing else is said */
    cr_expect_eq(p.code, 1, "run exit %d: %s%s", p.code, p.out, p.err);
    const char *line = strstr(p.out, "outcome");
    cr_expect(line && !strncmp(line + strcspn(line, " "), " ", 1) && strstr(line, "error: out of memory") &&
                  strstr(line, "error: out of memory") < strchr(line, '\n'),
              "stdout: %s", p.out);
    cr_expect_str_eq(p.err, "", "stderr: %s", p.err);
    proc_free(&p);
    char path[256], detail[FTB_ERR_LEN];
    snprintf(path, sizeof path, "%s/host/r/results.jsonl", tmpdir);
    int records, bad, errors;
    count_records(path, &records, &bad, &errors, detail, sizeof detail);
    cr_expect(records == 1 && bad == 0 && errors == 1, "%d records, %d errors, %d bad lines", records, errors, bad);
    cr_expect(strstr(detail, "out of memory") != NULL, "outcome_detail: %s", detail);

    const char *every[] = { "FTBENCH_FAIL_ALLOC_AFTER=40+", NULL };
    p = run_ftbench((const char *[]){ "sweep",
                                      "--methods-dir",
                                      getenv("FTBENCH_METHODS"),
                                      "--methods",
                                      "full,lora,mezo",
                                      "--model",
                                      "tiny",
                                      "--seqs",
                                      "16,32",
                                      "--steps",
                                      "1",
                                      "--warmup",
                                      "0",
                                      "--no-skip",
                                      "--out",
                                      tmpdir,
                                      "--run-id",
                                      "s",
                                      "--quiet",
                                      NULL },
                    every, 0);
    cr_expect_eq(p.code, 0, "sweep exit %d: %s", p.code, p.err);
    proc_free(&p);
    snprintf(path, sizeof path, "%s/host/s/results.jsonl", tmpdir);
    count_records(path, &records, &bad, &errors, detail, sizeof detail);
    cr_expect(records == 6 && bad == 0 && errors == 6, "%d records, %d errors, %d bad lines", records, errors, bad);
    cr_expect(strstr(detail, "out of memory") != NULL, "outcome_detail: %s", detail);
}

/* A results directory that cannot be made (its parent is a regular file:
 * refused as root too) is one line and a non-zero exit. */
Test(faults, unwritable_results_directory, .fini = remove_tmp, .timeout = 120)
{
    need_bin();
    make_tmp();
    char file[256];
    snprintf(file, sizeof file, "%s/not-a-dir", tmpdir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fputs("x\n", f);
    fclose(f);
    const char *cmds[] = { "run", "sweep" };
    for (int i = 0; i < 2; i++) {
        proc p = run_ftbench((const char *[]){ cmds[i], "--methods-dir", getenv("FTBENCH_METHODS"),
                                               i ? "--methods" : "--method", "lora", "--model", "tiny",
                                               i ? "--seqs" : "--seq", "16", "--steps", "1", "--warmup", "0", "--out",
                                               file, "--quiet", NULL },
                             NULL, 0);
        cr_expect(p.code != 0 && p.code < 128, "%s exit %d: %s", cmds[i], p.code, p.err);
        cr_expect(strstr(p.err, "not-a-dir") && strstr(p.err, "Not a directory"), "%s stderr: %s", cmds[i], p.err);
        cr_expect_eq(count_lines(p.err), 1, "%s: expected one line on stderr: %s", cmds[i], p.err);
        proc_free(&p);
    }
    long len;
    char *text = th_slurp_len(file, &len);
    cr_expect_str_eq(text, "x\n");
    free(text);
}

/* The disk fills up in the middle of a record (a file size limit: the
 * append gets part of the line in, then EFBIG).  The record is refused with
 * one line, the file is cut back to its whole lines, and a resumed sweep
 * counts only the complete records. */
Test(faults, disk_full_mid_record_keeps_whole_lines, .fini = remove_tmp, .timeout = 300)
{
    need_bin();
    make_tmp();
    const char *base[] = { "sweep",
                           "--methods-dir",
                           getenv("FTBENCH_METHODS"),
                           "--methods",
                           "lora",
                           "--model",
                           "tiny",
                           "--steps",
                           "1",
                           "--warmup",
                           "0",
                           "--out",
                           tmpdir,
                           "--run-id",
                           "d",
                           "--quiet",
                           "--seqs" };
    const int nb = sizeof base / sizeof *base;
    const char *args[32];
    memcpy(args, base, sizeof base);
    args[nb] = "16";
    args[nb + 1] = NULL;
    proc p = run_ftbench(args, NULL, 0);
    cr_assert_eq(p.code, 0, "first sweep exit %d: %s", p.code, p.err);
    proc_free(&p);
    char path[256];
    snprintf(path, sizeof path, "%s/host/d/results.jsonl", tmpdir);
    /* A megabyte of foreign line first: the limit then sits far above the
     * other files a cell writes (its timeline, the child's report), so only
     * the results file reaches it. */
    FILE *f = fopen(path, "a");
    cr_assert_not_null(f);
    fputs("{\"note\": \"", f);
    for (int i = 0; i < 1 << 20; i++) fputc('x', f);
    fputs("\"}\n", f);
    fclose(f);
    long before_len;
    char *before = th_slurp_len(path, &before_len);
    args[nb] = "16,32";
    p = run_ftbench(args, NULL, before_len + 200);
    cr_expect(p.code != 0 && p.code < 128, "sweep on a full disk: exit %d: %s", p.code, p.err);
    /* after the sweep's header, one line: the error */
    const char *last = strstr(p.err, "ftbench sweep: cannot write");
    cr_expect(last && strstr(last, "results.jsonl: File too large; the record was not kept\n") &&
                  count_lines(last) == 1,
              "stderr: %s", p.err);
    proc_free(&p);
    long after_len;
    char *after = th_slurp_len(path, &after_len);
    cr_expect(after_len == before_len && !memcmp(before, after, (size_t)before_len),
              "the results file changed: %ld bytes before, %ld after", before_len, after_len);
    free(before);
    free(after);
    int records, bad, errors;
    count_records(path, &records, &bad, &errors, NULL, 0);
    cr_expect(records == 1 && bad == 1, "%d records, %d other lines", records, bad);

    p = run_ftbench(args, NULL, 0); /* space again: the lost cell runs, the kept one does not */
    cr_expect_eq(p.code, 0, "resumed sweep exit %d: %s", p.code, p.err);
    proc_free(&p);
    count_records(path, &records, &bad, &errors, NULL, 0);
    cr_expect(records == 2 && bad == 1 && errors == 0, "%d records (%d errors), %d other lines", records, errors, bad);
}

/* ftb_append_line itself on a full device: /dev/full fails every write
 * with ENOSPC; nothing is claimed written. */
Test(faults, append_to_a_full_device_is_an_error)
{
    char err[FTB_ERR_LEN] = "";
    if (access("/dev/full", W_OK) != 0) cr_skip_test("no /dev/full");
    cr_expect_neq(ftb_append_line("/dev/full", "{\"cell\": \"x\"}", err, sizeof err), 0);
    cr_expect(strstr(err, "No space left on device") != NULL, "%s", err);
}
