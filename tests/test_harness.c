/*
 * test_harness.c — the ftbench executable end to end (suite "harness"):
 * CLI errors, fault-injection plugins in a sweep, resume, a killed sweep,
 * a method dropped in, fit.  The binary comes from $FTBENCH_BIN, the
 * methods from $FTBENCH_METHODS and the fault plugins from
 * $FTBENCH_TEST_PLUGINS (all set by `make test`).  The "tiny" zoo model
 * and short sequences keep every test to seconds.
 */
#include <criterion/criterion.h>

#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftbench_method.h" /* FTB_ABI_VERSION, for the refusal messages */

extern char **environ;

static const char *bin(void) { return getenv("FTBENCH_BIN"); }
static const char *methods(void) { return getenv("FTBENCH_METHODS"); }
static const char *plugins(void) { return getenv("FTBENCH_TEST_PLUGINS"); }

static void need_env(void)
{
    if (!bin() || !methods() || !plugins())
        cr_skip_test("FTBENCH_BIN, FTBENCH_METHODS and FTBENCH_TEST_PLUGINS are set by make test");
}

typedef struct {
    int code; /* exit code, or 128+signal */
    char *out, *err;
} proc;

/* The environment for spawned binaries: under ASan, let a plugin's SIGSEGV
 * stay a signal (the harness must see it) and skip leak reports. */
static char **child_env(void)
{
    static char *env[512];
    static char asan[] = "ASAN_OPTIONS=handle_segv=0:handle_abort=0:detect_leaks=0";
    static char blas[] = "FTBENCH_BLAS_AUTO=0";
    int n = 0;
    for (char **e = environ; *e && n < 500; e++)
        if (strncmp(*e, "ASAN_OPTIONS=", 13) && strncmp(*e, "FTBENCH_BLAS_AUTO=", 18)) env[n++] = *e;
    env[n++] = asan;
    env[n++] = blas;
    env[n] = NULL;
    return env;
}

static pid_t spawn(const char *const *args, const char *outp, const char *errp)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = bin();
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, bin(), &fa, NULL, (char *const *)argv, child_env());
    posix_spawn_file_actions_destroy(&fa);
    cr_assert((rc) == (0), "posix_spawn %s: %s", bin(), strerror(rc));
    return pid;
}

static proc run(const char *const *args)
{
    char outp[] = "/tmp/ftbtest-out-XXXXXX", errp[] = "/tmp/ftbtest-err-XXXXXX";
    close(mkstemp(outp));
    close(mkstemp(errp));
    pid_t pid = spawn(args, outp, errp);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    proc p;
    p.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    p.out = th_slurp(outp);
    p.err = th_slurp(errp);
    unlink(outp);
    unlink(errp);
    return p;
}

static void proc_free(proc *p)
{
    free(p->out);
    free(p->err);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

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
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftbtest-XXXXXX");
    cr_assert(mkdtemp(tmpdir) != NULL);
}

static void remove_tmp(void)
{
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = 0;
}

static char *plugin(const char *name)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 512, "%s/%s.so", plugins(), name);
    return b;
}

/* Every line of a results file parses; returns them (NULL-terminated). */
static json_t **read_records(const char *path, int *n, int *bad)
{
    FILE *f = fopen(path, "r");
    *n = 0;
    *bad = 0;
    if (!f) return NULL;
    json_t **v = calloc(256, sizeof *v);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        if (!j) {
            (*bad)++;
            continue;
        }
        if (*n < 255) v[(*n)++] = j;
    }
    free(line);
    fclose(f);
    return v;
}

static void free_records(json_t **v, int n)
{
    for (int i = 0; i < n; i++) json_decref(v[i]);
    free(v);
}

/* Never NULL, so a missing field fails an assertion instead of crashing it. */
static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "(missing)";
}

static json_t *find_cell(json_t **v, int n, const char *prefix, int seq)
{
    for (int i = 0; i < n; i++) {
        const char *c = jstr(v[i], "cell");
        if (!strncmp(c, prefix, strlen(prefix)) && json_integer_value(json_object_get(v[i], "seq")) == seq) return v[i];
    }
    return NULL;
}

/* ---- CLI errors ------------------------------------------------------------ */

static void expect_usage_error(const char *const *args, const char *needle)
{
    proc p = run(args);
    cr_expect((p.code) == (2), "%s %s: exit %d, stderr: %s", args[0], args[1] ? args[1] : "", p.code, p.err);
    cr_expect(strstr(p.err, needle) != NULL, "stderr lacks '%s': %s", needle, p.err);
    cr_expect((count_lines(p.err)) == (1), "expected one line on stderr, got: %s", p.err);
    proc_free(&p);
}

Test(harness, cli_bad_values)
{
    need_env();
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--seq", "abc", NULL }, "--seq: 'abc'");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--seq", "0", NULL }, "--seq: '0'");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--batch", "-1", NULL }, "--batch");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--seq", NULL }, "--seq needs a value");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--attention", "fast", NULL }, "flash or eager");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--loss", "half", NULL }, "chunked or full");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--lr", "-3", NULL }, "--lr");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--timeout", "soon", NULL }, "--timeout");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--budget", "lots", NULL }, "--budget");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--opt", "novalue", NULL }, "KEY=VALUE");
    expect_usage_error((const char *[]){ "run", "--bogus", NULL }, "unknown option '--bogus'");
    expect_usage_error((const char *[]){ "run", "--seq", "64", NULL }, "--method is required");
    expect_usage_error((const char *[]){ "frobnicate", NULL }, "unknown command 'frobnicate'");
    expect_usage_error((const char *[]){ "sweep", "--sweep", "nosuch", "--methods-dir", methods(), NULL },
                       "unknown sweep 'nosuch'");
    expect_usage_error((const char *[]){ "sweep", "--seqs", "128..64", "--methods-dir", methods(), NULL }, "--seqs");
    expect_usage_error((const char *[]){ "fit", "--method", "lora", "--seq", "64", NULL }, "--seq");
}

Test(harness, cli_unknown_names)
{
    need_env();
    const char *md = methods();
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "nosuch", "--model", "tiny", NULL },
                       "unknown method 'nosuch'");
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "nosuch", NULL },
                       "unknown model 'nosuch'");
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny", "--device",
                                         "nosuch", NULL },
                       "unknown device 'nosuch'");
    expect_usage_error(
        (const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny", "--device", "rpi", NULL },
        "ambiguous");
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny", "--dataset",
                                         "/nonexistent/data.bin", NULL },
                       "/nonexistent/data.bin");
    expect_usage_error(
        (const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--checkpoint", "/nonexistent/ckpt", NULL },
        "/nonexistent/ckpt");
    expect_usage_error(
        (const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny", "--opt", "rnak=4", NULL },
        "has no option 'rnak'");
    expect_usage_error((const char *[]){ "run", "--methods-dir", "/nonexistent/dir", "--method", "lora", NULL },
                       "/nonexistent/dir");
    char abi[96];
    snprintf(abi, sizeof abi, "was built for ABI %d, this ftbench has ABI %d", FTB_ABI_VERSION + 1, FTB_ABI_VERSION);
    expect_usage_error((const char *[]){ "run", "--method", plugin("badabi"), "--model", "tiny", NULL }, abi);
    expect_usage_error((const char *[]){ "run", "--method", plugin("nosym"), "--model", "tiny", NULL },
                       "does not export ftbench_method()");
    expect_usage_error((const char *[]){ "run", "--method", "/nonexistent/m.so", "--model", "tiny", NULL },
                       "no such file");
}

Test(harness, help_for_each_command)
{
    need_env();
    const char *cmds[] = { "run", "sweep", "fit", "list", NULL };
    for (int i = 0; cmds[i]; i++) {
        proc p = run((const char *[]){ cmds[i], "--help", NULL });
        cr_expect((p.code) == (0), "%s --help: exit %d", cmds[i], p.code);
        cr_expect(strstr(p.out, "usage: ftbench") != NULL, "%s --help: %s", cmds[i], p.out);
        proc_free(&p);
    }
    proc p = run((const char *[]){ "--help", NULL });
    cr_expect((p.code) == (0));
    cr_expect(strstr(p.out, "bench-core") != NULL);
    proc_free(&p);
}

/* ---- one healthy cell ---------------------------------------------------------- */

Test(harness, run_writes_a_complete_record, .fini = remove_tmp)
{
    need_env();
    make_tmp();
    proc p =
        run((const char *[]){ "run", "--methods-dir", methods(), "--method", "lora", "--model", "tiny", "--seq", "32",
                              "--steps", "2", "--warmup", "1", "--out", tmpdir, "--run-id", "r1", "--quiet", NULL });
    cr_assert((p.code) == (0), "exit %d: %s%s", p.code, p.out, p.err);
    char path[512];
    snprintf(path, sizeof path, "%s/host/r1/results.jsonl", tmpdir);
    int n, bad;
    json_t **v = read_records(path, &n, &bad);
    cr_assert((n) == (1));
    cr_assert((bad) == (0));
    json_t *r = v[0];
    /* After the summary, the record's 5 largest operation classes (ops),
     * largest first, as the record has them. */
    const char *ops = strstr(p.out, "\nops ");
    cr_assert(ops, "no ops lines in:\n%s", p.out);
    cr_expect(strstr(ops, "s per step (mean of 2 measured), largest classes:"), "%s", ops);
    json_t *classes = json_object_get(json_object_get(r, "ops"), "classes");
    const char *line = strchr(ops + 1, '\n');
    double prev = INFINITY;
    for (int i = 0; i < 5; i++) {
        char name[32];
        double sec, pct;
        cr_assert(line && sscanf(line + 1, "  %31s %lf s %lf%%", name, &sec, &pct) == 3, "line %d: %s", i, line);
        json_t *c = json_object_get(classes, name);
        cr_assert(c, "%s is not a class of the record", name);
        double rs = json_number_value(json_object_get(c, "seconds"));
        cr_expect(fabs(sec - rs) <= 0.6e-4, "%s: printed %.4f s, recorded %.6f s", name, sec, rs);
        cr_expect(fabs(pct - 100 * json_number_value(json_object_get(c, "share"))) <= 0.051, "%s: %.1f%%", name, pct);
        cr_expect(rs <= prev, "%s after a smaller class", name);
        prev = rs;
        line = strchr(line + 1, '\n');
    }
    proc_free(&p);
    cr_expect_str_eq(jstr(r, "outcome"), "ok");
    cr_expect(((int)json_integer_value(json_object_get(r, "schema"))) == (1));
    cr_expect_str_eq(jstr(r, "cell"), "lora.tiny.s32.b1");
    cr_expect(json_is_string(json_object_get(r, "git_rev")) && json_is_string(json_object_get(r, "hostname")));
    cr_expect(strlen(jstr(r, "timestamp_utc")) == 20 && jstr(r, "timestamp_utc")[19] == 'Z');
    json_t *mem = json_object_get(r, "memory");
    const char *mkeys[] = { "peak_rss_vmhwm_bytes",        "peak_rss_ru_maxrss_bytes", "rss_after_model_load_bytes",
                            "rss_after_method_init_bytes", "peak_rss_bytes",           NULL };
    for (int i = 0; mkeys[i]; i++)
        cr_expect(json_integer_value(json_object_get(mem, mkeys[i])) > 0, "memory.%s", mkeys[i]);
    json_t *core = json_object_get(mem, "core");
    cr_expect(json_integer_value(json_object_get(core, "peak_total_bytes")) > 0);
    cr_expect(json_is_object(json_object_get(core, "split_at_peak_bytes")));
    cr_expect(json_is_object(json_object_get(mem, "jemalloc")));
    cr_expect(((int)json_array_size(json_object_get(r, "loss_per_step"))) == (3));
    json_t *t = json_object_get(r, "timing");
    cr_expect(json_number_value(json_object_get(json_object_get(t, "step_seconds"), "median")) > 0);
    cr_expect(json_number_value(json_object_get(t, "tokens_per_second")) > 0);
    cr_expect(json_is_object(json_object_get(t, "method_phase_seconds")));
    cr_expect(json_integer_value(json_object_get(r, "trainable_params")) > 0);
    json_t *hw = json_object_get(r, "hw_counters");
    cr_expect(json_is_boolean(json_object_get(hw, "available")));
    if (!json_is_true(json_object_get(hw, "available"))) cr_expect(json_is_string(json_object_get(hw, "reason")));
    json_t *host = json_object_get(r, "host");
    cr_expect(json_is_string(json_object_get(host, "blas_core")) &&
              json_is_string(json_object_get(host, "blas_selection")) &&
              json_is_string(json_object_get(host, "cpu_features")));
    cr_expect(json_is_false(json_object_get(r, "emulated")));
    /* The timeline beside the record. */
    const char *tl = json_string_value(json_object_get(r, "timeline_file"));
    cr_assert(tl != NULL);
    snprintf(path, sizeof path, "%s/host/r1/%s", tmpdir, tl);
    char *text = th_slurp(path);
    cr_expect(strstr(text, "t_sec\tkind\tphase") != NULL);
    cr_expect(strstr(text, "\tmem\t") != NULL, "no memory events in the timeline");
    cr_expect(strstr(text, "\trss\t") != NULL, "no RSS samples in the timeline");
    free(text);
    free_records(v, n);
}

Test(harness, emulated_device_record, .fini = remove_tmp)
{
    need_env();
    make_tmp();
    proc p =
        run((const char *[]){ "run", "--methods-dir", methods(), "--method", "lora", "--model", "tiny", "--seq", "32",
                              "--steps", "1", "--device", "rpi5", "--out", tmpdir, "--run-id", "e", "--quiet", NULL });
    cr_assert((p.code) == (0), "exit %d: %s%s", p.code, p.out, p.err);
    proc_free(&p);
    char path[512];
    snprintf(path, sizeof path, "%s/rpi5-8gb/e/results.jsonl", tmpdir);
    int n, bad;
    json_t **v = read_records(path, &n, &bad);
    cr_assert((n) == (1), "no record at %s", path);
    json_t *r = v[0];
    cr_expect(json_is_true(json_object_get(r, "emulated")));
    json_t *dev = json_object_get(r, "device");
    cr_expect_str_eq(jstr(dev, "name"), "rpi5-8gb");
    cr_expect(json_is_string(json_object_get(dev, "enforcement")));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cr_expect(((int)json_integer_value(json_object_get(dev, "threads"))) == ((int)(cores < 4 ? cores : 4)));
    json_t *proj = json_object_get(r, "projection");
    cr_expect(json_number_value(json_object_get(proj, "projected_step_seconds_roofline")) > 0);
    free_records(v, n);
}

/* ---- faults in a sweep ------------------------------------------------------------ */

static const char *fault_methods(void)
{
    static char list[4096];
    snprintf(list, sizeof list, "%s,%s,%s,%s,%s,%s,%s", plugin("fwdonly"), plugin("segv"), plugin("abort"),
             plugin("hang"), plugin("hog"), plugin("badabi"), plugin("initfail"));
    return list;
}

Test(harness, sweep_records_every_fault_and_resumes, .fini = remove_tmp, .timeout = 240)
{
    need_env();
    make_tmp();
    const char *const args[] = { "sweep",   "--methods", fault_methods(), "--model", "tiny",     "--seqs", "16,32",
                                 "--steps", "1",         "--warmup",      "0",       "--budget", "64M",    "--timeout",
                                 "10",      "--no-skip", "--out",         tmpdir,    "--run-id", "faults", "--quiet",
                                 NULL };
    proc p = run(args);
    cr_assert((p.code) == (0), "sweep exit %d: %s", p.code, p.err);
    cr_expect(strstr(p.out, "CRASH") && strstr(p.out, "TIMEOUT") && strstr(p.out, "ERROR") && strstr(p.out, "*"),
              "summary lacks failure marks:\n%s", p.out);
    proc_free(&p);
    char path[512];
    snprintf(path, sizeof path, "%s/host/faults/results.jsonl", tmpdir);
    int n, bad;
    json_t **v = read_records(path, &n, &bad);
    cr_assert((n) == (14), "expected 14 records, got %d", n);
    cr_expect((bad) == (0));
    for (int seq = 16; seq <= 32; seq *= 2) {
        json_t *r;
        r = find_cell(v, n, "fwdonly.", seq);
        cr_expect_str_eq(jstr(r, "outcome"), "ok");
        r = find_cell(v, n, "segv.", seq);
        cr_expect_str_eq(jstr(r, "outcome"), "crashed");
        cr_expect(((int)json_integer_value(json_object_get(json_object_get(r, "signal"), "number"))) == (SIGSEGV));
        cr_expect_str_eq(jstr(json_object_get(r, "signal"), "name"), "SIGSEGV");
        r = find_cell(v, n, "abort.", seq);
        cr_expect_str_eq(jstr(r, "outcome"), "crashed");
        cr_expect_str_eq(jstr(json_object_get(r, "signal"), "name"), "SIGABRT");
        r = find_cell(v, n, "hang.", seq);
        cr_expect_str_eq(jstr(r, "outcome"), "timeout");
        r = find_cell(v, n, "hog.", seq);
        const char *o = jstr(r, "outcome");
        cr_expect(!strcmp(o, "over_budget") || !strcmp(o, "oom"), "hog: %s", o);
        r = find_cell(v, n, "badabi.", seq);
        cr_expect_str_eq(jstr(r, "outcome"), "error");
        char abi[96];
        snprintf(abi, sizeof abi, "built for ABI %d, this ftbench has ABI %d", FTB_ABI_VERSION + 1, FTB_ABI_VERSION);
        cr_expect(strstr(jstr(r, "outcome_detail"), abi) != NULL, "%s", jstr(r, "outcome_detail"));
        r = find_cell(v, n, "initfail.", seq);
        cr_expect_str_eq(jstr(r, "outcome"), "error");
        cr_expect(strstr(jstr(r, "outcome_detail"), "refusing on purpose") != NULL);
    }
    free_records(v, n);

    /* Same sweep again: the measurements (ok, crashed, over budget) are
     * kept; the cells that gave no number (error, timeout) run again.
     * (The cell timeout is generous: a healthy cell under ASan on a loaded
     * machine must not time out; at 5 s the hog cell did, at a load of 20.) */
    p = run(args);
    cr_assert((p.code) == (0));
    cr_expect(strstr(p.err, "8 of 14 cells already recorded; running the other 6") != NULL, "%s", p.err);
    proc_free(&p);
    v = read_records(path, &n, &bad);
    cr_expect((n) == (20), "results.jsonl keeps every record made: %d", n);
    free_records(v, n);
}

Test(harness, killed_sweep_leaves_valid_lines_and_resumes, .fini = remove_tmp, .timeout = 120)
{
    need_env();
    make_tmp();
    char list[2048];
    snprintf(list, sizeof list, "%s,%s", plugin("fwdonly"), plugin("hang"));
    const char *const args[] = { "sweep",   "--methods", list,       "--model", "tiny",      "--seqs", "16..128",
                                 "--steps", "1",         "--warmup", "0",       "--timeout", "1",      "--out",
                                 tmpdir,    "--run-id",  "k",        "--quiet", NULL };
    char outp[600], errp[600], path[512];
    snprintf(outp, sizeof outp, "%s/out", tmpdir);
    snprintf(errp, sizeof errp, "%s/err", tmpdir);
    snprintf(path, sizeof path, "%s/host/k/results.jsonl", tmpdir);
    pid_t pid = spawn(args, outp, errp);
    /* Kill it once some, but not all, cells are recorded (inside a hang
     * cell, 1 s each). */
    int n = 0, bad = 0;
    for (int i = 0; i < 400 && n < 3; i++) {
        usleep(25000);
        json_t **v = read_records(path, &n, &bad);
        free_records(v, n);
    }
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    json_t **v = read_records(path, &n, &bad);
    cr_assert(n >= 1 && n < 8, "records after the kill: %d", n);
    cr_expect((bad) == (0), "a killed sweep left %d torn lines", bad);
    free_records(v, n);

    /* A torn tail (a writer killed mid-line) is skipped and repaired. */
    FILE *f = fopen(path, "a");
    fputs("{\"schema\":1,\"cell\":\"torn", f);
    fclose(f);
    proc p = run(args);
    cr_assert((p.code) == (0), "%s", p.err);
    cr_expect(strstr(p.err, "already recorded") != NULL, "%s", p.err);
    proc_free(&p);
    v = read_records(path, &n, &bad);
    /* Every cell once in cells/; results.jsonl also keeps the timeouts
     * recorded before the kill, which resume ran again. */
    int hang_before = 0;
    for (int i = 0; i < n; i++) hang_before += strstr(jstr(v[i], "cell"), "hang.") != NULL;
    cr_expect(n >= 8, "after resuming: %d records", n);
    cr_expect((bad) == (1), "only the torn line may fail to parse");
    free_records(v, n);
    char cells[600];
    snprintf(cells, sizeof cells, "%s/host/k/cells", tmpdir);
    int files = 0;
    DIR *d = opendir(cells);
    cr_assert(d != NULL, "no %s", cells);
    for (struct dirent *e; (e = readdir(d));) files += e->d_name[0] != '.';
    closedir(d);
    cr_expect(files == 8, "%d cell files (hang records in results.jsonl: %d)", files, hang_before);
}

Test(harness, sweep_skips_lengths_beyond_an_over_budget_one, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    char list[2048];
    snprintf(list, sizeof list, "%s,%s", plugin("hog"), plugin("fwdonly"));
    proc p = run((const char *[]){ "sweep", "--methods", list, "--model", "tiny", "--seqs", "16..64", "--budget", "64M",
                                   "--out", tmpdir, "--run-id", "skip", "--quiet", NULL });
    cr_assert((p.code) == (0), "%s", p.err);
    cr_expect(strstr(p.out, "over*") != NULL, "%s", p.out);
    proc_free(&p);
    char path[512];
    snprintf(path, sizeof path, "%s/host/skip/results.jsonl", tmpdir);
    int n, bad;
    json_t **v = read_records(path, &n, &bad);
    cr_assert((n) == (6), "%d records", n);
    cr_expect_str_eq(jstr(find_cell(v, n, "hog.", 16), "outcome"), "over_budget");
    for (int seq = 32; seq <= 64; seq *= 2) {
        json_t *r = find_cell(v, n, "hog.", seq);
        cr_expect_str_eq(jstr(r, "outcome"), "skipped");
        cr_expect_str_eq(jstr(r, "skipped_because"), "hog.tiny.s16.b1");
        cr_expect_str_eq(jstr(find_cell(v, n, "fwdonly.", seq), "outcome"), "ok");
    }
    free_records(v, n);
}

/* The cell process of a running sweep: the child of `parent` that leads
 * its own process group (the harness makes each cell a group leader); 0
 * while there is none. */
static pid_t find_cell_process(pid_t parent)
{
    DIR *d = opendir("/proc");
    cr_assert(d != NULL);
    pid_t found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = 0;
        const char *rp = strrchr(buf, ')');
        int ppid = 0, pgid = 0;
        if (rp && sscanf(rp + 2, "%*c %d %d", &ppid, &pgid) == 2 && ppid == parent && pgid == atoi(e->d_name))
            found = pgid;
    }
    closedir(d);
    return found;
}

/* A SIGKILL from outside at a few MiB of RSS is "killed", not "oom": there
 * is no evidence of a memory limit (no cgroup, nothing in the kernel log,
 * a peak far from any budget), and the longer length still runs. */
Test(harness, outside_sigkill_is_killed_not_oom, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    const char *const args[] = { "sweep",   "--methods", plugin("hang"), "--model",  "tiny",     "--seqs",  "16,32",
                                 "--steps", "1",         "--warmup",     "0",        "--budget", "8G",      "--timeout",
                                 "3",       "--out",     tmpdir,         "--run-id", "killed",   "--quiet", NULL };
    char outp[600], errp[600], path[512];
    snprintf(outp, sizeof outp, "%s/out", tmpdir);
    snprintf(errp, sizeof errp, "%s/err", tmpdir);
    pid_t sweep = spawn(args, outp, errp);
    pid_t cell = 0;
    for (int i = 0; i < 400 && !cell; i++) {
        usleep(10000);
        cell = find_cell_process(sweep);
    }
    cr_assert(cell > 0, "no cell process appeared");
    usleep(300000); /* into its (hanging) step */
    cr_assert(kill(cell, SIGKILL) == 0);
    int st;
    while (waitpid(sweep, &st, 0) < 0 && errno == EINTR)
        ;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sweep status %d", st);
    snprintf(path, sizeof path, "%s/host/killed/results.jsonl", tmpdir);
    int n, bad;
    json_t **v = read_records(path, &n, &bad);
    cr_assert((n) == (2), "%d records", n);
    json_t *r = find_cell(v, n, "hang.", 16);
    cr_expect_str_eq(jstr(r, "outcome"), "killed");
    cr_expect_str_eq(jstr(json_object_get(r, "signal"), "name"), "SIGKILL");
    cr_expect(strstr(jstr(r, "outcome_detail"), "from outside the harness") != NULL, "%s", jstr(r, "outcome_detail"));
    /* Not skipped: the longer length ran (and hung until its timeout). */
    cr_expect_str_eq(jstr(find_cell(v, n, "hang.", 32), "outcome"), "timeout");
    free_records(v, n);
}

/* ---- plugins --------------------------------------------------------------------------- */

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    cr_assert(a && b, "copy %s -> %s", from, to);
    char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, k, b);
    fclose(a);
    fclose(b);
}

Test(harness, a_method_dropped_in_is_listed_and_runs, .fini = remove_tmp)
{
    need_env();
    make_tmp();
    char from[512], to[512];
    const char *base[] = { "full", "lora", NULL };
    for (int i = 0; base[i]; i++) {
        snprintf(from, sizeof from, "%s/%s.so", methods(), base[i]);
        snprintf(to, sizeof to, "%s/%s.so", tmpdir, base[i]);
        copy_file(from, to);
    }
    snprintf(to, sizeof to, "%s/third.so", tmpdir);
    copy_file(plugin("fwdonly"), to);
    snprintf(to, sizeof to, "%s/old.so", tmpdir);
    copy_file(plugin("badabi"), to);
    proc p = run((const char *[]){ "list", "--methods-dir", tmpdir, NULL });
    cr_assert((p.code) == (0), "%s", p.err);
    cr_expect(strstr(p.out, "third") && strstr(p.out, "forward only"), "%s", p.out);
    cr_expect(strstr(p.out, "lora") && strstr(p.out, "full"), "%s", p.out);
    char abi[32];
    snprintf(abi, sizeof abi, "ABI %d", FTB_ABI_VERSION);
    cr_expect(strstr(p.out, "old") && strstr(p.out, "UNUSABLE") && strstr(p.out, abi), "%s", p.out);
    cr_expect(strstr(p.out, "rpi5-8gb") && strstr(p.out, "tiny"), "devices and models listed:\n%s", p.out);
    proc_free(&p);
    /* ... and runs by name. */
    p = run((const char *[]){ "run", "--methods-dir", tmpdir, "--method", "third", "--model", "tiny", "--seq", "16",
                              "--steps", "1", "--out", tmpdir, "--quiet", NULL });
    cr_expect((p.code) == (0), "%s%s", p.out, p.err);
    cr_expect(strstr(p.out, "outcome     ok") != NULL, "%s", p.out);
    proc_free(&p);
}

/* ---- fit ------------------------------------------------------------------------------------- */

Test(harness, fit_bisects_to_the_budget_and_resumes, .fini = remove_tmp, .timeout = 120)
{
    need_env();
    make_tmp();
    /* hog allocates 200 KiB per token: memory grows with the length. */
    const char *const args[] = { "fit",     "--method", plugin("hog"), "--opt",    "kb_per_token=200",
                                 "--model", "tiny",     "--budget",    "80M",      "--seq-min",
                                 "64",      "--out",    tmpdir,        "--run-id", "fit",
                                 "--quiet", NULL };
    proc p = run(args);
    cr_assert((p.code) == (0), "%s%s", p.out, p.err);
    int lo = 0, hi = 0;
    const char *s = strstr(p.out, "longest sequence that fits host: ");
    cr_assert(s != NULL, "%s", p.out);
    cr_assert(sscanf(s, "longest sequence that fits host: %d tokens (%d does not", &lo, &hi) == 2, "%s", s);
    cr_expect((hi - lo) == (64), "resolution: %d..%d", lo, hi);
    proc_free(&p);
    char path[512];
    snprintf(path, sizeof path, "%s/host/fit/results.jsonl", tmpdir);
    int n, bad;
    json_t **v = read_records(path, &n, &bad);
    cr_expect(n >= 4, "probes recorded: %d", n);
    json_t *rl = find_cell(v, n, "hog+", lo), *rh = find_cell(v, n, "hog+", hi);
    cr_assert(rl && rh);
    cr_expect_str_eq(jstr(rl, "outcome"), "ok");
    cr_expect(strcmp(jstr(rh, "outcome"), "ok") != 0);
    free_records(v, n);
    snprintf(path, sizeof path, "%s/host/fit/fit.json", tmpdir);
    json_t *fit = json_load_file(path, 0, NULL);
    cr_assert(fit != NULL);
    cr_expect(((int)json_integer_value(json_object_get(fit, "longest_fitting_seq"))) == (lo));
    json_decref(fit);
    /* Again: every probe is reused. */
    p = run(args);
    cr_expect((p.code) == (0));
    cr_expect(strstr(p.out, "recorded earlier") != NULL, "%s", p.out);
    cr_expect(strstr(p.err, "probing") == NULL, "%s", p.err);
    proc_free(&p);
}

Test(harness, watch_enforcement_kills_at_the_budget, .fini = remove_tmp)
{
    need_env();
    make_tmp();
    proc p = run((const char *[]){ "run",   "--method",  plugin("hog"), "--opt", "mb=512",   "--model", "tiny",
                                   "--seq", "16",        "--steps",     "1",     "--warmup", "0",       "--budget",
                                   "32M",   "--enforce", "watch",       "--out", tmpdir,     "--quiet", NULL });
    cr_expect((p.code) == (1), "%s%s", p.out, p.err);
    cr_expect(strstr(p.out, "over_budget") != NULL, "%s", p.out);
    proc_free(&p);
}

/* A helper process the method forks is the device's memory too: the
 * budget is enforced on the cell's whole process tree, under both check
 * (after the run) and watch (killed at the budget), and the record keeps
 * the process's own peak beside the tree's. */
Test(harness, memory_of_a_forked_helper_counts_against_the_budget, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    const char *modes[] = { "check", "watch" };
    for (int i = 0; i < 2; i++) {
        char out[600];
        snprintf(out, sizeof out, "%s/%s", tmpdir, modes[i]);
        proc p = run(
            (const char *[]){ "run",     "--method",  plugin("forkhog"), "--opt", "mb=256",   "--model",  "tiny",
                              "--seq",   "16",        "--steps",         "1",     "--warmup", "0",        "--budget",
                              "64M",     "--enforce", modes[i],          "--out", out,        "--run-id", "tree",
                              "--quiet", NULL });
        cr_expect((p.code) == (1), "%s: exit %d %s%s", modes[i], p.code, p.out, p.err);
        proc_free(&p);
        char path[700];
        snprintf(path, sizeof path, "%s/host/tree/results.jsonl", out);
        int n, bad;
        json_t **v = read_records(path, &n, &bad);
        cr_assert((n) == (1), "%s: %d records", modes[i], n);
        cr_expect_str_eq(jstr(v[0], "outcome"), "over_budget", "%s: %s", modes[i], jstr(v[0], "outcome_detail"));
        cr_expect(strstr(jstr(v[0], "outcome_detail"), "process tree") != NULL, "%s", jstr(v[0], "outcome_detail"));
        json_t *mem = json_object_get(v[0], "memory");
        json_int_t tree = json_integer_value(json_object_get(mem, "tree_peak_rss_bytes"));
        json_int_t own = json_integer_value(json_object_get(mem, "process_peak_rss_bytes"));
        cr_expect(tree > (64 << 20), "%s: tree peak %lld", modes[i], (long long)tree);
        cr_expect(own > 0 && own < (64 << 20), "%s: the cell's own peak %lld", modes[i], (long long)own);
        cr_expect(json_integer_value(json_object_get(mem, "peak_rss_bytes")) == tree);
        if (!strcmp(modes[i], "check"))
            cr_expect(tree >= (256 << 20), "check runs to the end: the helper's whole 256 MiB, got %lld",
                      (long long)tree);
        free_records(v, n);
    }
}

/* A step that goes non-finite says what and where: the loss, which
 * tensor's gradient or values, which step (tests/plugins/nonfinite.c). */
Test(harness, a_non_finite_step_says_what_went_non_finite_and_where, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    static const struct {
        const char *where, *want[3];
    } cases[] = {
        { "where=loss", { "step 1 of 2: the loss is inf", "every trainable value and gradient is finite", NULL } },
        { "where=grad",
          { "step 1 of 2: the loss is nan", "the gradient of test.w has 1 of 64 values non-finite (first [5] = nan)",
            "parameter test.w has 1 of 64 values non-finite" } },
        { "where=update",
          { "step 2 of 2: its loss was finite, but after its update parameter test.w", "(first [3] = inf)", NULL } },
    };
    for (int i = 0; i < 3; i++) {
        char out[600];
        snprintf(out, sizeof out, "%s/%d", tmpdir, i);
        proc p = run((const char *[]){ "run", "--method", plugin("nonfinite"), "--opt", cases[i].where, "--model",
                                       "tiny", "--seq", "16", "--steps", "1", "--warmup", "1", "--out", out, "--run-id",
                                       "nf", "--quiet", NULL });
        cr_expect((p.code) == (1), "%s: exit %d", cases[i].where, p.code);
        proc_free(&p);
        char path[700];
        snprintf(path, sizeof path, "%s/host/nf/results.jsonl", out);
        int n, bad;
        json_t **v = read_records(path, &n, &bad);
        cr_assert((n) == (1), "%s: %d records", cases[i].where, n);
        cr_expect_str_eq(jstr(v[0], "outcome"), "error");
        const char *d = jstr(v[0], "outcome_detail");
        cr_expect(strstr(d, "no message") == NULL, "%s", d);
        for (int k = 0; k < 3 && cases[i].want[k]; k++)
            cr_expect(strstr(d, cases[i].want[k]) != NULL, "%s: '%s' not in: %s", cases[i].where, cases[i].want[k], d);
        free_records(v, n);
    }
}

/* Option values that can only make a method non-finite are bad input:
 * exit 2, one line, before any cell runs. */
Test(harness, option_values_that_make_a_method_non_finite_are_refused, .fini = remove_tmp)
{
    need_env();
    make_tmp();
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--opt", "alpha=1e40", "--model", "tiny", "--seq",
                                         "16", "--out", tmpdir, NULL },
                       "option alpha: '1e40' is beyond the range of a 32-bit float");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--opt", "alpha=1e7", "--model", "tiny", "--seq",
                                         "16", "--out", tmpdir, NULL },
                       "option alpha: 1e7 is not in (0, 1e+06]");
    expect_usage_error((const char *[]){ "sweep", "--methods", "lora,full", "--opt", "alpha=-1", "--model", "tiny",
                                         "--seqs", "16", "--out", tmpdir, NULL },
                       "method lora: option alpha: -1 is not in");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--opt", "weight_decay=1e39", "--model", "tiny",
                                         "--seq", "16", "--out", tmpdir, NULL },
                       "option weight_decay: '1e39' is beyond the range of a 32-bit float");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--lr", "1e39", "--model", "tiny", "--seq", "16",
                                         "--out", tmpdir, NULL },
                       "--lr: '1e39' is not a number in (0, 1000]");
    char results[600];
    snprintf(results, sizeof results, "%s/host", tmpdir);
    cr_expect(access(results, F_OK) != 0, "nothing may be recorded for bad input");
}

/* One rule for bad input: exit 2, one line naming the problem, nothing
 * recorded (issue 19 item 14). */
Test(harness, bad_input_is_exit_2_and_one_line_everywhere, .fini = remove_tmp)
{
    need_env();
    make_tmp();
    expect_usage_error(
        (const char *[]){ "run", "--method", "lora", "--model", "tiny", "--seq", "99999", "--out", tmpdir, NULL },
        "--seq 99999 is longer than tiny's max_seq (max_position_embeddings) 512");
    expect_usage_error(
        (const char *[]){ "sweep", "--methods", "lora", "--model", "tiny", "--seqs", "16,1024", "--out", tmpdir, NULL },
        "--seqs: 1024 is longer than tiny's max_seq");
    expect_usage_error((const char *[]){ "run", "--method", "lora", "--method", "full", "--model", "tiny", "--seq",
                                         "16", "--out", tmpdir, NULL },
                       "--method given twice ('lora', then 'full'); give it once");
    expect_usage_error((const char *[]){ "bench-core", "--seq", "-1", NULL }, "--seq: bad value '-1'");
    /* A checkpoint whose config.json is fine but whose safetensors is not. */
    char ck[600], path[700];
    snprintf(ck, sizeof ck, "%s/ck", tmpdir);
    cr_assert(mkdir(ck, 0755) == 0);
    snprintf(path, sizeof path, "%s/config.json", ck);
    FILE *f = fopen(path, "w");
    fputs("{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
          " \"intermediate_size\": 128, \"vocab_size\": 100, \"max_position_embeddings\": 256}",
          f);
    fclose(f);
    snprintf(path, sizeof path, "%s/model.safetensors", ck);
    f = fopen(path, "w");
    fputs("garbage, not safetensors", f);
    fclose(f);
    expect_usage_error(
        (const char *[]){ "run", "--method", "lora", "--checkpoint", ck, "--seq", "16", "--out", tmpdir, NULL },
        "model.safetensors: header length");
    snprintf(path, sizeof path, "%s/host", tmpdir);
    cr_expect(access(path, F_OK) != 0, "nothing may be recorded for bad input");
}

/* A budget under a MiB is printed as what it is, not "0 MiB". */
Test(harness, small_budgets_are_printed_in_bytes, .fini = remove_tmp)
{
    need_env();
    make_tmp();
    proc p = run((const char *[]){ "run", "--method", plugin("fwdonly"), "--model", "tiny", "--seq", "16", "--steps",
                                   "1", "--warmup", "0", "--budget", "1", "--out", tmpdir, NULL });
    cr_expect((p.code) == (1), "%s%s", p.out, p.err);
    cr_expect(strstr(p.out, "exceeds the budget of 1 B") != NULL, "%s", p.out);
    cr_expect(strstr(p.out, "(budget 1 B on host)") != NULL, "%s", p.out);
    cr_expect(strstr(p.out, "budget 0 MiB") == NULL && strstr(p.err, "budget 0 MiB") == NULL, "%s%s", p.out, p.err);
    proc_free(&p);
}

/* SIGTERM to `run` while its cell starts (it may be writing a snapshot):
 * nothing hidden is left in the run directory but its lock — no
 * .child.json, no temporary of the killed cell.  Several times, since the
 * moment of the kill varies. */
Test(harness, sigterm_leaves_no_snapshot_or_temporary, .fini = remove_tmp, .timeout = 120)
{
    need_env();
    make_tmp();
    for (int round = 0; round < 4; round++) {
        char id[16], dir[600], child[700], outp[700], errp[700];
        snprintf(id, sizeof id, "t%d", round);
        snprintf(dir, sizeof dir, "%s/host/%s", tmpdir, id);
        snprintf(child, sizeof child, "%s/.hang.tiny.s16.b1.child.json", dir);
        snprintf(outp, sizeof outp, "%s/out%d", tmpdir, round);
        snprintf(errp, sizeof errp, "%s/err%d", tmpdir, round);
        pid_t pid = spawn((const char *[]){ "run", "--method", plugin("hang"), "--model", "tiny", "--seq", "16",
                                            "--timeout", "60", "--out", tmpdir, "--run-id", id, NULL },
                          outp, errp);
        for (int i = 0; i < 400 && access(child, F_OK) != 0; i++) usleep(5000);
        usleep(round * 3000);
        kill(pid, SIGTERM);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        DIR *d = opendir(dir);
        cr_assert(d != NULL, "%s", dir);
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, ".lock"))
                cr_expect(0, "round %d: %s left in the run directory", round, e->d_name);
        closedir(d);
    }
}

/* `ftbench list` names each option once: gc's inner.* aliases are named
 * on their option's line, not listed a second time. */
Test(harness, list_names_each_option_once)
{
    need_env();
    proc p = run((const char *[]){ "list", NULL });
    cr_assert((p.code) == (0), "%s", p.err);
    cr_expect(strstr(p.out, "--opt inner.rank=") == NULL, "an alias listed as an option:\n%s", p.out);
    cr_expect(strstr(p.out, "same as rank") == NULL, "%s", p.out);
    cr_expect(strstr(p.out, "(also inner.rank)") != NULL, "%s", p.out);
    proc_free(&p);
}

/* ---- base weight formats, residency, optimizer (--base-dtype ...) ------------ */

#include "ftbench.h"

/* A quantized lazily resident base: prepared once into the model cache
 * (outside the cell), mapped by the cell, described in the record; the
 * second run finds the prepared file. */
Test(harness, run_with_an_int4_lazy_base_and_sgd_records_them, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    char cache[256], path[512];
    snprintf(cache, sizeof cache, "%s/cache", tmpdir);
    setenv("FTBENCH_MODEL_CACHE", cache, 1);
    const char *args[] = { "run",     "--methods-dir",
                           methods(), "--method",
                           "lora",    "--model",
                           "tiny",    "--seq",
                           "32",      "--steps",
                           "2",       "--warmup",
                           "1",       "--base-dtype",
                           "int4",    "--group",
                           "32",      "--residency",
                           "lazy",    "--optimizer",
                           "sgd",     "--out",
                           tmpdir,    "--run-id",
                           "q",       NULL };
    proc p = run(args);
    cr_assert((p.code) == (0), "exit %d: %s%s", p.code, p.out, p.err);
    cr_expect(strstr(p.err, "preparing the tiny-seed42-int4-g32 base") != NULL, "%s", p.err);
    cr_expect(strstr(p.out, "base        int4 linears, int4 embedding, residency lazy") != NULL, "%s", p.out);
    proc_free(&p);
    snprintf(path, sizeof path, "%s/tiny-seed42-int4-g32/ftbench-base.json", cache);
    cr_expect(access(path, R_OK) == 0, "no prepared base at %s", path);
    snprintf(path, sizeof path, "%s/host/q/results.jsonl", tmpdir);
    int n, bad;
    json_t **v = read_records(path, &n, &bad);
    cr_assert((n) == (1));
    json_t *r = v[0];
    cr_expect_str_eq(jstr(r, "outcome"), "ok");
    cr_expect_str_eq(jstr(r, "cell"), "lora.tiny.int4-g32.lazy.sgd.s32.b1");
    cr_expect_str_eq(jstr(r, "optimizer"), "sgd");
    json_t *b = json_object_get(r, "base");
    cr_expect_str_eq(jstr(b, "dtype"), "int4");
    cr_expect_str_eq(jstr(b, "embed_dtype"), "int4");
    cr_expect_eq(json_integer_value(json_object_get(b, "group")), 32);
    cr_expect_str_eq(jstr(b, "residency"), "lazy");
    cr_expect_str_eq(jstr(b, "residency_effective"), "lazy");
    cr_expect_str_eq(jstr(b, "loaded_from"), "prepared");
    /* Every weight mapped from the prepared file, in int4's size. */
    json_int_t storage = json_integer_value(json_object_get(b, "storage_bytes_loaded"));
    cr_expect(storage > 0 && storage == json_integer_value(json_object_get(b, "mapped_bytes")));
    cr_expect(storage == json_integer_value(json_object_get(b, "storage_bytes")));
    cr_expect(json_is_number(json_object_get(json_object_get(b, "loss_difference"), "delta")));
    cr_expect(json_integer_value(json_object_get(json_object_get(b, "quantization_error"), "linear_tensors")) == 14);
    json_t *t = json_object_get(r, "timing");
    double share = json_number_value(json_object_get(t, "dequant_share"));
    cr_expect(share > 0 && share < 1, "dequant_share %g", share);
    cr_expect(json_number_value(json_object_get(json_object_get(t, "dequant_seconds"), "median")) > 0);
    /* SGD: no optimizer state at all. */
    json_t *core = json_object_get(json_object_get(r, "memory"), "core");
    cr_expect(json_integer_value(json_object_get(json_object_get(core, "peak_bytes"), "optimizer")) == 0);
    /* Lazy: the mapped base counts as resident only (a block, a head tile),
     * never the whole file, and the core's peak is the predicted one. */
    json_int_t weights_peak = json_integer_value(json_object_get(json_object_get(core, "peak_bytes"), "weights"));
    cr_expect(weights_peak > 0 && weights_peak < storage / 2, "weights peaked at %lld bytes of a %lld-byte base",
              (long long)weights_peak, (long long)storage);
    json_t *analytic = json_object_get(json_object_get(r, "memory"), "analytic");
    cr_expect_eq(json_integer_value(json_object_get(core, "peak_total_bytes")),
                 json_integer_value(json_object_get(analytic, "peak_total_bytes")),
                 "core peak differs from the prediction");
    free_records(v, n);
    /* Again (--force): the prepared base is found, not made again. */
    const char *again[] = { "run",  "--methods-dir", methods(), "--method", "lora", "--model",
                            "tiny", "--seq",         "32",      "--steps",  "1",    "--warmup",
                            "0",    "--base-dtype",  "int4",    "--group",  "32",   "--out",
                            tmpdir, "--run-id",      "q",       NULL };
    p = run(again);
    cr_expect((p.code) == (0), "exit %d: %s%s", p.code, p.err, p.out);
    cr_expect(strstr(p.err, "preparing") == NULL, "prepared twice: %s", p.err);
    cr_expect(strstr(p.out, "lora.tiny.int4-g32.s32.b1") != NULL, "%s", p.out);
    proc_free(&p);
    /* A base an older ftbench prepared (another format version) is made
     * again, not refused; a directory that is no prepared base is left
     * alone with a one-line error. */
    snprintf(path, sizeof path, "%s/tiny-seed42-int4-g32/ftbench-base.json", cache);
    json_t *info = json_load_file(path, 0, NULL);
    cr_assert(info != NULL);
    json_object_set_new(info, "format_version", json_integer(1));
    cr_assert(json_dump_file(info, path, 0) == 0);
    json_decref(info);
    const char *redo[] = { "run",  "--methods-dir", methods(), "--method", "lora", "--model",
                           "tiny", "--seq",         "32",      "--steps",  "1",    "--warmup",
                           "0",    "--base-dtype",  "int4",    "--group",  "32",   "--out",
                           tmpdir, "--run-id",      "q2",      NULL };
    p = run(redo);
    cr_expect((p.code) == (0), "exit %d: %s%s", p.code, p.err, p.out);
    cr_expect(strstr(p.err, "was prepared by an older ftbench (base format 1") != NULL, "%s", p.err);
    proc_free(&p);
    info = json_load_file(path, 0, NULL);
    cr_expect(json_integer_value(json_object_get(info, "format_version")) > 1, "the entry was not made again");
    json_decref(info);
    cr_expect(unlink(path) == 0);
    redo[20] = "q3";
    p = run(redo);
    cr_expect((p.code) == (1), "exit %d: %s%s", p.code, p.err, p.out);
    cr_expect(strstr(p.err, "holds no base prepared for this model and format") != NULL, "%s", p.err);
    proc_free(&p);
    unsetenv("FTBENCH_MODEL_CACHE");
}

/* mesp with a quantized base (no --residency): the method brings the mapped
 * base in block by block itself; a checkpoint given with --base-dtype is
 * quantized at load into the cache, and the cell maps that. */
Test(harness, mesp_sets_lazy_residency_and_checkpoints_quantize_at_load, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    char cache[256], ckpt[256], path[512], err[FTB_ERR_LEN];
    snprintf(cache, sizeof cache, "%s/cache", tmpdir);
    snprintf(ckpt, sizeof ckpt, "%s/tiny-ckpt", tmpdir);
    setenv("FTBENCH_MODEL_CACHE", cache, 1);
    ftb_config cfg;
    cr_assert(ftb_zoo_get("tiny", &cfg) == 0);
    ftb_model *m = ftb_model_create(&cfg, 7, err, sizeof err);
    cr_assert(m != NULL, "%s", err);
    cr_assert(ftb_model_save(m, ckpt, err, sizeof err) == 0, "%s", err);
    ftb_model_free(m);
    proc p =
        run((const char *[]){ "run",  "--methods-dir", methods(), "--method", "mesp", "--checkpoint", ckpt,   "--seq",
                              "32",   "--steps",       "1",       "--warmup", "0",    "--base-dtype", "int8", "--out",
                              tmpdir, "--run-id",      "c",       "--quiet",  NULL });
    cr_assert((p.code) == (0), "exit %d: %s%s", p.code, p.out, p.err);
    proc_free(&p);
    snprintf(path, sizeof path, "%s/host/c/results.jsonl", tmpdir);
    int n, bad;
    json_t **v = read_records(path, &n, &bad);
    cr_assert((n) == (1));
    json_t *b = json_object_get(v[0], "base");
    cr_expect_str_eq(jstr(b, "dtype"), "int8");
    cr_expect_str_eq(jstr(b, "residency"), "all");
    cr_expect_str_eq(jstr(b, "residency_effective"), "lazy");
    cr_expect(strstr(jstr(b, "prepared_checkpoint"), "/ckpt-tiny-ckpt-") != NULL, "%s", jstr(b, "prepared_checkpoint"));
    cr_expect(json_integer_value(json_object_get(b, "mapped_bytes")) > 0);
    cr_expect(json_integer_value(json_object_get(json_object_get(b, "quantization_error"), "linear_tensors")) == 14);
    free_records(v, n);
}

Test(harness, bad_base_options_give_one_line)
{
    need_env();
    const char *md = methods();
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--base-dtype", "int4", "--group", "48", NULL },
                       "--group 48 does not divide the row length 32 of tiny's");
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--base-dtype", "int4", NULL },
                       "(give --group)");
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--base-dtype", "int4", "--group", "7", NULL },
                       "--group: '7' is not an even positive integer");
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--base-dtype", "int8", "--group", "32", NULL },
                       "only int4 and int4-asym have groups");
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--base-dtype", "int3", NULL },
                       "--base-dtype: 'int3' is not f32, bf16, f16, int8, int4 or int4-asym");
    expect_usage_error((const char *[]){ "sweep", "--methods-dir", md, "--methods", "lora", "--model", "tiny",
                                         "--residency", "sometimes", NULL },
                       "--residency: 'sometimes' is not all or lazy");
    expect_usage_error((const char *[]){ "fit", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--optimizer", "adam", NULL },
                       "--optimizer: 'adam' is not adamw or sgd");
    expect_usage_error((const char *[]){ "run", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--loss-chunk", "0", NULL },
                       "--loss-chunk: '0' is not a positive integer");
}

/* A checkpoint whose model.safetensors is a FIFO (or a directory): the
 * error says what the file is, not that there is none; nothing blocks. */
Test(harness, a_fifo_as_model_safetensors_is_named_as_such, .fini = remove_tmp, .timeout = 30)
{
    need_env();
    make_tmp();
    char ckpt[256], st[320], err[FTB_ERR_LEN];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", tmpdir);
    ftb_config cfg;
    cr_assert(ftb_zoo_get("tiny", &cfg) == 0);
    ftb_model *m = ftb_model_create(&cfg, 7, err, sizeof err);
    cr_assert(m != NULL, "%s", err);
    cr_assert(ftb_model_save(m, ckpt, err, sizeof err) == 0, "%s", err);
    ftb_model_free(m);
    snprintf(st, sizeof st, "%s/model.safetensors", ckpt);
    cr_assert(unlink(st) == 0);
    cr_assert(mkfifo(st, 0600) == 0);
    expect_usage_error((const char *[]){ "run", "--methods-dir", methods(), "--method", "lora", "--checkpoint", ckpt,
                                         "--out", tmpdir, NULL },
                       "model.safetensors: is a FIFO, not a regular file");
    cr_assert(unlink(st) == 0);
    cr_assert(mkdir(st, 0700) == 0);
    expect_usage_error((const char *[]){ "run", "--methods-dir", methods(), "--method", "lora", "--checkpoint", ckpt,
                                         "--out", tmpdir, NULL },
                       "model.safetensors: is a directory, not a regular file");
}
