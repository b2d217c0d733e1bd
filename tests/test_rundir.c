/*
 * test_rundir.c — the run directory (docs/HARNESS.md, "The run directory"),
 * end to end through the ftbench executable (suite "rundir"): one record
 * file per cell, the lock of the local writer, resume that compares
 * settings and re-runs what is not a measurement, cell files from other
 * writers, failed writes that keep their cause, links that are not
 * followed, names that are never cut, Ctrl-C.  Suite "safe_file": the
 * helpers themselves.  $FTBENCH_BIN, $FTBENCH_METHODS and
 * $FTBENCH_TEST_PLUGINS are set by `make test`.
 */
#include <criterion/criterion.h>

#include "helpers.h"

#include "ftbench.h"
#include "rundir.h"
#include "safe_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* The environment of spawned binaries, plus `extra` (one NAME=VALUE or
 * NULL). */
static char **child_env(const char *extra)
{
    static char *env[512];
    static char asan[] = "ASAN_OPTIONS=handle_segv=0:handle_abort=0:detect_leaks=0";
    static char blas[] = "FTBENCH_BLAS_AUTO=0";
    static char extra_buf[256];
    int n = 0;
    for (char **e = environ; *e && n < 500; e++)
        if (strncmp(*e, "ASAN_OPTIONS=", 13) && strncmp(*e, "FTBENCH_BLAS_AUTO=", 18) &&
            strncmp(*e, "FTBENCH_FAIL_WRITE=", 19))
            env[n++] = *e;
    env[n++] = asan;
    env[n++] = blas;
    if (extra) {
        snprintf(extra_buf, sizeof extra_buf, "%s", extra);
        env[n++] = extra_buf;
    }
    env[n] = NULL;
    return env;
}

static pid_t spawn_env(const char *const *args, const char *outp, const char *errp, const char *extra_env)
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
    int rc = posix_spawn(&pid, bin(), &fa, NULL, (char *const *)argv, child_env(extra_env));
    posix_spawn_file_actions_destroy(&fa);
    cr_assert((rc) == (0), "posix_spawn %s: %s", bin(), strerror(rc));
    return pid;
}

static proc wait_proc(pid_t pid, const char *outp, const char *errp)
{
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

static proc run_env(const char *const *args, const char *extra_env)
{
    char outp[] = "/tmp/ftbrd-out-XXXXXX", errp[] = "/tmp/ftbrd-err-XXXXXX";
    close(mkstemp(outp));
    close(mkstemp(errp));
    return wait_proc(spawn_env(args, outp, errp, extra_env), outp, errp);
}

static proc run(const char *const *args) { return run_env(args, NULL); }

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
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftbrd-XXXXXX");
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

/* Lines of a results file that parse as records. */
static int jsonl_records(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0) {
        json_t *j = json_loads(line, 0, NULL);
        n += j && json_object_get(j, "cell");
        json_decref(j);
    }
    free(line);
    fclose(f);
    return n;
}

/* Entries of a directory: all, and those starting with a dot. */
static int count_entries(const char *dir, int *hidden)
{
    int n = 0, h = 0;
    DIR *d = opendir(dir);
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        h += e->d_name[0] == '.';
    }
    closedir(d);
    if (hidden) *hidden = h;
    return n;
}

static json_t *load_json(const char *path)
{
    json_error_t e;
    return json_load_file(path, 0, &e);
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "(missing)";
}

/* ---- the lock ------------------------------------------------------------------ */

/* One sweep holds the run directory (inside a hanging cell); a second local
 * writer on the same run id exits 2 naming the holder's pid, without
 * measuring anything; with --wait-lock it waits and then keeps what the
 * first recorded. */
Test(rundir, a_second_local_writer_exits_2_naming_the_holder, .fini = remove_tmp, .timeout = 120)
{
    need_env();
    make_tmp();
    char list[1200], outp[600], errp[600], child[600];
    snprintf(list, sizeof list, "%s,%s", plugin("fwdonly"), plugin("hang"));
    const char *const first[] = { "sweep",   "--methods", list,       "--model", "tiny",      "--seqs", "16",
                                  "--steps", "1",         "--warmup", "0",       "--timeout", "3",      "--out",
                                  tmpdir,    "--run-id",  "locked",   "--quiet", NULL };
    snprintf(outp, sizeof outp, "%s/out", tmpdir);
    snprintf(errp, sizeof errp, "%s/err", tmpdir);
    pid_t pid = spawn_env(first, outp, errp, NULL);
    /* Wait until it measures the hanging cell. */
    snprintf(child, sizeof child, "%s/host/locked/.hang.tiny.s16.b1.child.json", tmpdir);
    for (int i = 0; i < 400 && access(child, F_OK) != 0; i++) usleep(25000);
    cr_assert(access(child, F_OK) == 0, "the first sweep never reached its hanging cell");

    proc p = run((const char *[]){ "run", "--method", plugin("fwdonly"), "--model", "tiny", "--seq", "32", "--steps",
                                   "1", "--warmup", "0", "--out", tmpdir, "--run-id", "locked", "--quiet", NULL });
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "pid %d,", (int)pid);
    cr_expect_eq(p.code, 2, "second writer: exit %d: %s", p.code, p.err);
    cr_expect(strstr(p.err, "is being written by another ftbench") && strstr(p.err, pidtext) &&
                  strstr(p.err, "--wait-lock"),
              "stderr: %s", p.err);
    cr_expect_eq(count_lines(p.err), 1, "one line: %s", p.err);
    proc_free(&p);

    /* --wait-lock: waits for the first (its hang cell times out after 3 s),
     * then finds both of its cells recorded and measures nothing again. */
    p = run((const char *[]){ "sweep", "--methods", list, "--model", "tiny", "--seqs", "16", "--steps", "1", "--warmup",
                              "0", "--timeout", "3", "--out", tmpdir, "--run-id", "locked", "--wait-lock", NULL });
    proc q = wait_proc(pid, outp, errp);
    cr_expect_eq(q.code, 0, "first sweep: %s", q.err);
    proc_free(&q);
    cr_expect_eq(p.code, 0, "waiting sweep: exit %d: %s", p.code, p.err);
    cr_expect(strstr(p.err, "waiting for it (--wait-lock)") != NULL, "%s", p.err);
    /* fwdonly's record is kept; the timeout (no number) runs again */
    cr_expect(strstr(p.err, "1 of 2 cells already recorded; running the other 1") != NULL, "%s", p.err);
    proc_free(&p);
}

/* The probe: three sweeps at once on one run id.  Before: every cell
 * measured three times (60 records for 20 cells).  Now each cell once. */
Test(rundir, three_concurrent_sweeps_measure_each_cell_once, .fini = remove_tmp, .timeout = 180)
{
    need_env();
    make_tmp();
    const char *const args[] = { "sweep",  "--methods-dir", methods(), "--methods",   "lora,ia3", "--model", "tiny",
                                 "--seqs", "16..64",        "--steps", "1",           "--warmup", "0",       "--out",
                                 tmpdir,   "--run-id",      "three",   "--wait-lock", "--quiet",  NULL };
    char outp[3][600], errp[3][600];
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        snprintf(outp[i], sizeof outp[i], "%s/out%d", tmpdir, i);
        snprintf(errp[i], sizeof errp[i], "%s/err%d", tmpdir, i);
        pids[i] = spawn_env(args, outp[i], errp[i], NULL);
    }
    for (int i = 0; i < 3; i++) {
        proc p = wait_proc(pids[i], outp[i], errp[i]);
        cr_expect_eq(p.code, 0, "sweep %d: exit %d: %s", i, p.code, p.err);
        proc_free(&p);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/host/three/results.jsonl", tmpdir);
    cr_expect_eq(jsonl_records(path), 6, "results.jsonl: %d records for 6 cells", jsonl_records(path));
    snprintf(path, sizeof path, "%s/host/three/cells", tmpdir);
    int hidden;
    cr_expect_eq(count_entries(path, &hidden), 6);
    cr_expect_eq(hidden, 0, "temporary files left in cells/");
}

Test(rundir, a_method_named_twice_runs_once, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    proc p = run((const char *[]){ "sweep", "--methods-dir", methods(), "--methods", "lora,lora", "--model", "tiny",
                                   "--seqs", "16,32", "--steps", "1", "--warmup", "0", "--out", tmpdir, "--run-id",
                                   "twice", NULL });
    cr_expect_eq(p.code, 0, "%s", p.err);
    cr_expect(strstr(p.err, "2 cells (1 methods x 2 lengths") != NULL, "%s", p.err);
    proc_free(&p);
    char path[600];
    snprintf(path, sizeof path, "%s/host/twice/results.jsonl", tmpdir);
    cr_expect_eq(jsonl_records(path), 2);
}

/* ---- resume ------------------------------------------------------------------------ */

/* The probe: a record made with --budget 1M was reused under
 * --budget 8G --steps 3 and shown under the 8 GiB header.  Now refused,
 * naming both settings; --force measures it again. */
Test(rundir, a_record_with_other_settings_is_not_reused, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    const char *base[] = { "sweep", "--methods-dir", methods(), "--methods", "lora", "--model",  "tiny", "--seqs",
                           "16",    "--warmup",      "0",       "--out",     tmpdir, "--run-id", "same", "--quiet" };
    const int nb = (int)(sizeof base / sizeof *base);
    const char *args[32];
    memcpy(args, base, sizeof base);
    args[nb] = "--budget";
    args[nb + 1] = "1M";
    args[nb + 2] = "--steps";
    args[nb + 3] = "1";
    args[nb + 4] = NULL;
    proc p = run(args);
    cr_assert_eq(p.code, 0, "%s", p.err);
    cr_expect(strstr(p.out, "budget 1 MiB") != NULL, "%s", p.out);
    proc_free(&p);
    char cellf[600];
    snprintf(cellf, sizeof cellf, "%s/host/same/cells/lora.tiny.s16.b1.json", tmpdir);
    json_t *r = load_json(cellf);
    cr_assert(r != NULL, "no %s", cellf);
    cr_expect_str_eq(jstr(r, "outcome"), "over_budget");
    json_decref(r);

    args[nb + 1] = "8G";
    args[nb + 3] = "3";
    p = run(args);
    cr_expect_eq(p.code, 2, "exit %d: %s%s", p.code, p.out, p.err);
    cr_expect(strstr(p.err, "lora.tiny.s16.b1") && strstr(p.err, "budget recorded 1048576, now 8589934592") &&
                  strstr(p.err, "steps recorded 1, now 3") && strstr(p.err, "--force"),
              "stderr: %s", p.err);
    cr_expect_eq(count_lines(p.err), 1, "%s", p.err);
    cr_expect(strstr(p.out, "8192 MiB") == NULL, "the old record was shown under the new budget: %s", p.out);
    proc_free(&p);

    args[nb + 4] = "--force";
    args[nb + 5] = NULL;
    p = run(args);
    cr_expect_eq(p.code, 0, "%s", p.err);
    proc_free(&p);
    r = load_json(cellf);
    cr_assert(r != NULL);
    cr_expect_str_eq(jstr(r, "outcome"), "ok");
    cr_expect_eq(json_integer_value(json_object_get(r, "steps")), 3);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(r, "settings"), "budget")), 8589934592LL);
    json_decref(r);
}

/* The same dataset file name with other contents is another experiment. */
Test(rundir, a_changed_dataset_file_is_not_reused, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    char data[600];
    snprintf(data, sizeof data, "%s/tokens.bin", tmpdir);
    FILE *f = fopen(data, "wb");
    cr_assert(f != NULL);
    for (int i = 0; i < 4096; i++) {
        int32_t t = i % 61;
        fwrite(&t, sizeof t, 1, f);
    }
    fclose(f);
    const char *const args[] = { "run",  "--methods-dir", methods(), "--method", "lora", "--model",   "tiny", "--seq",
                                 "16",   "--steps",       "1",       "--warmup", "0",    "--dataset", data,   "--out",
                                 tmpdir, "--run-id",      "data",    "--quiet",  NULL };
    proc p = run(args);
    cr_assert_eq(p.code, 0, "%s%s", p.out, p.err);
    proc_free(&p);
    p = run(args);
    cr_expect_eq(p.code, 0, "%s", p.err);
    cr_expect(strstr(p.out, "already recorded") != NULL, "the same file was not reused: %s", p.out);
    proc_free(&p);
    f = fopen(data, "ab");
    int32_t t = 7;
    fwrite(&t, sizeof t, 1, f);
    fclose(f);
    p = run(args);
    cr_expect_eq(p.code, 2, "%s%s", p.out, p.err);
    cr_expect(strstr(p.err, "dataset_id recorded") != NULL, "%s", p.err);
    proc_free(&p);
}

/* Errors are run again, measurements kept; a record from another build is
 * kept with a warning. */
Test(rundir, resume_reruns_errors_and_reports_another_build, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    char list[1200];
    snprintf(list, sizeof list, "%s,%s", plugin("fwdonly"), plugin("initfail"));
    const char *const args[] = { "sweep", "--methods", list, "--model", "tiny", "--seqs",   "16",    "--steps",
                                 "1",     "--warmup",  "0",  "--out",   tmpdir, "--run-id", "again", NULL };
    proc p = run(args);
    cr_assert_eq(p.code, 0, "%s", p.err);
    proc_free(&p);
    /* As if the kept record had been made by another build. */
    char cellf[600];
    snprintf(cellf, sizeof cellf, "%s/host/again/cells/fwdonly.tiny.s16.b1.json", tmpdir);
    json_t *r = load_json(cellf);
    cr_assert(r != NULL);
    json_object_set_new(r, "git_rev", json_string("0000000"));
    char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    size_t n = strlen(text);
    text = realloc(text, n + 2);
    strcpy(text + n, "\n");
    write_text(cellf, text);
    free(text);

    p = run(args);
    cr_expect_eq(p.code, 0, "%s", p.err);
    cr_expect(strstr(p.err, "1 of 2 cells already recorded; running the other 1") != NULL, "%s", p.err);
    cr_expect(strstr(p.err, "[cell 2/2] initfail.tiny.s16.b1: error") != NULL, "the error did not run again: %s",
              p.err);
    cr_expect(strstr(p.err, "warning: 1 recorded cell was kept from another build (git 0000000") != NULL, "%s", p.err);
    /* the edited cell file is merged into results.jsonl as its last line */
    cr_expect(strstr(p.err, "1 cell record written by other writers merged") != NULL, "%s", p.err);
    proc_free(&p);
}

/* Cell files written by another writer (a Slurm array task, a copy from a
 * device): resume counts them, and the report reads them without a
 * results.jsonl. */
Test(rundir, cell_files_from_other_writers_are_records, .fini = remove_tmp, .timeout = 90)
{
    need_env();
    make_tmp();
    proc p = run((const char *[]){ "sweep", "--methods-dir", methods(), "--methods", "lora", "--model", "tiny",
                                   "--seqs", "16,32", "--steps", "1", "--warmup", "0", "--out", tmpdir, "--run-id",
                                   "src", "--quiet", NULL });
    cr_assert_eq(p.code, 0, "%s", p.err);
    proc_free(&p);
    /* Another run directory holding only one cell file, no results.jsonl. */
    char dst[600], from[700], to[700];
    snprintf(dst, sizeof dst, "%s/host/arr/cells", tmpdir);
    snprintf(from, sizeof from, "%s/host/arr", tmpdir);
    mkdir(from, 0777);
    mkdir(dst, 0777);
    snprintf(from, sizeof from, "%s/host/src/cells/lora.tiny.s16.b1.json", tmpdir);
    snprintf(to, sizeof to, "%s/lora.tiny.s16.b1.json", dst);
    char *text = th_slurp(from);
    json_t *r = json_loads(text, 0, NULL);
    free(text);
    cr_assert(r != NULL, "no cell file %s", from);
    json_object_set_new(r, "run_id", json_string("arr"));
    text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    write_text(to, text);
    free(text);

    char rep[600];
    snprintf(rep, sizeof rep, "%s/host/arr", tmpdir);
    char out[600];
    snprintf(out, sizeof out, "%s/report", tmpdir);
    p = run_env((const char *[]){ "report", rep, "--out", out, NULL }, "FTBENCH_GNUPLOT=/nonexistent");
    cr_expect(p.code == 0, "report of a cells-only run directory: exit %d: %s", p.code, p.err);
    proc_free(&p);
    char md[700];
    snprintf(md, sizeof md, "%s/report.md", out);
    text = th_slurp(md);
    cr_expect(strstr(text, "lora") != NULL, "report.md does not show the cell:\n%.2000s", text);
    free(text);

    p = run((const char *[]){ "sweep", "--methods-dir", methods(), "--methods", "lora", "--model", "tiny", "--seqs",
                              "16,32", "--steps", "1", "--warmup", "0", "--out", tmpdir, "--run-id", "arr", NULL });
    cr_expect_eq(p.code, 0, "%s", p.err);
    cr_expect(strstr(p.err, "1 cell record written by other writers merged") != NULL, "%s", p.err);
    cr_expect(strstr(p.err, "1 of 2 cells already recorded; running the other 1") != NULL, "%s", p.err);
    proc_free(&p);
    snprintf(to, sizeof to, "%s/host/arr/results.jsonl", tmpdir);
    cr_expect_eq(jsonl_records(to), 2);
}

/* Independent writers (Slurm array tasks): no lock, cell files only, at
 * the same time; the next local writer merges them into results.jsonl. */
Test(rundir, independent_writers_write_only_their_cell_files, .fini = remove_tmp, .timeout = 90)
{
    need_env();
    make_tmp();
    const char *ms[2] = { "lora", "ia3" };
    char outp[2][600], errp[2][600];
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        snprintf(outp[i], sizeof outp[i], "%s/out%d", tmpdir, i);
        snprintf(errp[i], sizeof errp[i], "%s/err%d", tmpdir, i);
        pids[i] = spawn_env(
            (const char *[]){ "run", "--methods-dir", methods(), "--method", ms[i], "--model", "tiny", "--seq",
                              "16",  "--steps",       "1",       "--warmup", "0",   "--out",   tmpdir, "--run-id",
                              "arr", "--independent", "--quiet", NULL },
            outp[i], errp[i], NULL);
    }
    for (int i = 0; i < 2; i++) {
        proc p = wait_proc(pids[i], outp[i], errp[i]);
        cr_expect_eq(p.code, 0, "%s: exit %d: %s", ms[i], p.code, p.err);
        proc_free(&p);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/host/arr/results.jsonl", tmpdir);
    cr_expect(access(path, F_OK) != 0, "an independent writer wrote results.jsonl");
    snprintf(path, sizeof path, "%s/host/arr/.lock", tmpdir);
    cr_expect(access(path, F_OK) != 0, "an independent writer took the lock");
    snprintf(path, sizeof path, "%s/host/arr/cells", tmpdir);
    cr_expect_eq(count_entries(path, NULL), 2);
    proc p =
        run((const char *[]){ "sweep", "--methods-dir", methods(), "--methods", "lora,ia3", "--model", "tiny", "--seqs",
                              "16", "--steps", "1", "--warmup", "0", "--out", tmpdir, "--run-id", "arr", NULL });
    cr_expect_eq(p.code, 0, "%s", p.err);
    cr_expect(strstr(p.err, "2 cell records written by other writers merged") != NULL, "%s", p.err);
    cr_expect(strstr(p.err, "2 of 2 cells already recorded; running the other 0") != NULL, "%s", p.err);
    proc_free(&p);
    snprintf(path, sizeof path, "%s/host/arr/results.jsonl", tmpdir);
    cr_expect_eq(jsonl_records(path), 2);
}

/* ---- failed writes ---------------------------------------------------------------- */

/* The probe: a full disk at the end of a cell gave "exited with
 * status 0 without a result" and resume kept it.  The child's failed write
 * (injected: FTBENCH_FAIL_WRITE) is now an error naming ENOSPC, and resume
 * runs it again. */
Test(rundir, a_failed_write_keeps_its_cause_and_is_run_again, .fini = remove_tmp, .timeout = 60)
{
    need_env();
    make_tmp();
    const char *const args[] = { "run",      "--methods-dir", methods(), "--method", "lora",
                                 "--model",  "tiny",          "--seq",   "16",       "--steps",
                                 "1",        "--warmup",      "0",       "--out",    tmpdir,
                                 "--run-id", "enospc",        "--quiet", NULL };
    proc p = run_env(args, "FTBENCH_FAIL_WRITE=child.json");
    cr_expect_eq(p.code, 1, "exit %d: %s%s", p.code, p.out, p.err);
    cr_expect(strstr(p.out, "outcome     error: the cell could not write its measurements") &&
                  strstr(p.out, "No space left on device (ENOSPC)"),
              "%s", p.out);
    proc_free(&p);
    char dir[600], cellf[700];
    snprintf(dir, sizeof dir, "%s/host/enospc", tmpdir);
    snprintf(cellf, sizeof cellf, "%s/cells/lora.tiny.s16.b1.json", dir);
    json_t *r = load_json(cellf);
    cr_assert(r != NULL);
    json_t *io = json_object_get(r, "io_error");
    cr_expect_str_eq(jstr(io, "name"), "ENOSPC");
    cr_expect_eq(json_integer_value(json_object_get(io, "errno")), ENOSPC);
    json_decref(r);
    int hidden;
    count_entries(dir, &hidden);
    cr_expect_eq(hidden, 1, "only .lock may be hidden in the run directory (snapshot or temporaries left)");

    /* Space again: the error is not a measurement, so it runs. */
    p = run(args);
    cr_expect_eq(p.code, 0, "%s%s", p.out, p.err);
    cr_expect(strstr(p.out, "outcome     ok") != NULL, "%s", p.out);
    proc_free(&p);

    /* A timeline that cannot be written costs the timeline only. */
    const char *const args2[] = { "run",      "--methods-dir", methods(), "--method", "ia3",
                                  "--model",  "tiny",          "--seq",   "16",       "--steps",
                                  "1",        "--warmup",      "0",       "--out",    tmpdir,
                                  "--run-id", "enospc",        "--quiet", NULL };
    p = run_env(args2, "FTBENCH_FAIL_WRITE=timeline.tsv");
    cr_expect_eq(p.code, 0, "%s%s", p.out, p.err);
    proc_free(&p);
    snprintf(cellf, sizeof cellf, "%s/cells/ia3.tiny.s16.b1.json", dir);
    r = load_json(cellf);
    cr_assert(r != NULL);
    cr_expect_str_eq(jstr(r, "outcome"), "ok");
    cr_expect(json_object_get(r, "timeline_file") == NULL);
    cr_expect_str_eq(jstr(json_object_get(r, "timeline_error"), "name"), "ENOSPC");
    json_decref(r);
    snprintf(cellf, sizeof cellf, "%s/ia3.tiny.s16.b1.timeline.tsv", dir);
    cr_expect(access(cellf, F_OK) != 0, "a partial timeline was left");
    count_entries(dir, &hidden);
    cr_expect_eq(hidden, 1, "temporaries left in the run directory");
}

/* ---- links -------------------------------------------------------------------------- */

/* The probe, as one user (the root-owned file and the `nobody` link
 * are in ci/test-trust.sh): links planted at the names a cell writes are
 * never written through.  The victim keeps its bytes. */
Test(rundir, links_planted_in_a_run_directory_are_not_followed, .fini = remove_tmp, .timeout = 90)
{
    need_env();
    make_tmp();
    char victim[600], dir[600], link[800];
    snprintf(victim, sizeof victim, "%s/victim", tmpdir);
    write_text(victim, "precious\n");
    snprintf(dir, sizeof dir, "%s/host/planted", tmpdir);
    char mk[600];
    snprintf(mk, sizeof mk, "%s/host", tmpdir);
    mkdir(mk, 0777);
    mkdir(dir, 0777);
    const char *names[] = { "lora.tiny.s16.b1.timeline.tsv", ".lora.tiny.s16.b1.child.json",
                            ".lora.tiny.s16.b1.child.json.tmp", NULL };
    for (int i = 0; names[i]; i++) {
        snprintf(link, sizeof link, "%s/%s", dir, names[i]);
        cr_assert(symlink(victim, link) == 0);
    }
    const char *const args[] = { "run",      "--methods-dir", methods(), "--method", "lora",
                                 "--model",  "tiny",          "--seq",   "16",       "--steps",
                                 "1",        "--warmup",      "0",       "--out",    tmpdir,
                                 "--run-id", "planted",       "--quiet", NULL };
    proc p = run(args);
    cr_expect_eq(p.code, 0, "%s%s", p.out, p.err);
    proc_free(&p);
    char *text = th_slurp(victim);
    cr_expect_str_eq(text, "precious\n", "the victim was written through a link");
    free(text);
    /* The timeline link was replaced by the real file. */
    struct stat st;
    snprintf(link, sizeof link, "%s/%s", dir, names[0]);
    cr_expect(lstat(link, &st) == 0 && S_ISREG(st.st_mode));

    /* results.jsonl as a link: refused, one line, nothing kept. */
    snprintf(link, sizeof link, "%s/results.jsonl", dir);
    unlink(link);
    cr_assert(symlink(victim, link) == 0);
    p = run((const char *[]){ "run", "--methods-dir", methods(), "--method", "ia3", "--model", "tiny", "--seq", "16",
                              "--steps", "1", "--warmup", "0", "--out", tmpdir, "--run-id", "planted", "--quiet",
                              NULL });
    cr_expect(p.code != 0 && p.code < 128, "exit %d", p.code);
    cr_expect(strstr(p.err, "results.jsonl: is a symbolic link; refusing to write through it") != NULL, "%s", p.err);
    proc_free(&p);
    text = th_slurp(victim);
    cr_expect_str_eq(text, "precious\n");
    free(text);
    snprintf(link, sizeof link, "%s/cells/ia3.tiny.s16.b1.json", dir);
    cr_expect(access(link, F_OK) != 0, "a record was kept although results.jsonl refused it");

    /* The run directory itself, or cells/, as a link: refused. */
    char target[600];
    snprintf(target, sizeof target, "%s/elsewhere", tmpdir);
    mkdir(target, 0777);
    snprintf(link, sizeof link, "%s/host/linked", tmpdir);
    cr_assert(symlink(target, link) == 0);
    p = run((const char *[]){ "run", "--methods-dir", methods(), "--method", "lora", "--model", "tiny", "--seq", "16",
                              "--steps", "1", "--warmup", "0", "--out", tmpdir, "--run-id", "linked", "--quiet",
                              NULL });
    cr_expect(p.code != 0 && p.code < 128, "exit %d", p.code);
    cr_expect(strstr(p.err, "host/linked: is a symbolic link; refusing to write through it") != NULL, "%s", p.err);
    cr_expect_eq(count_lines(p.err), 1, "%s", p.err);
    proc_free(&p);
    cr_expect_eq(count_entries(target, NULL), 0, "something was written through the linked run directory");
}

/* ---- names that do not fit ------------------------------------------------------------- */

Test(rundir, a_long_run_id_or_out_is_refused_not_cut, .fini = remove_tmp)
{
    need_env();
    make_tmp();
    char id[200];
    memset(id, 'a', 128);
    id[128] = 0;
    proc p = run((const char *[]){ "run", "--methods-dir", methods(), "--method", "lora", "--model", "tiny", "--run-id",
                                   id, "--out", tmpdir, NULL });
    cr_expect_eq(p.code, 2, "%s", p.err);
    cr_expect(strstr(p.err, "--run-id") && strstr(p.err, "128 characters long; at most 127"), "%s", p.err);
    cr_expect_eq(count_lines(p.err), 1, "%s", p.err);
    proc_free(&p);

    char out[4100];
    int k = snprintf(out, sizeof out, "%s/", tmpdir);
    memset(out + k, 'o', 3900 - (size_t)k);
    out[3900] = 0;
    p = run((const char *[]){ "sweep", "--methods-dir", methods(), "--methods", "lora", "--model", "tiny", "--seqs",
                              "16", "--out", out, NULL });
    cr_expect_eq(p.code, 2, "%s", p.err);
    cr_expect(strstr(p.err, "--out: the run directory") && strstr(p.err, "characters long; at most"), "%s", p.err);
    cr_expect_eq(count_lines(p.err), 1, "%s", p.err);
    proc_free(&p);
    cr_expect_eq(count_entries(tmpdir, NULL), 0, "something was created for a refused --out");
}

/* ---- Ctrl-C --------------------------------------------------------------------------- */

Test(rundir, sigint_stops_a_sweep_with_a_message_and_nothing_half_written, .fini = remove_tmp, .timeout = 120)
{
    need_env();
    make_tmp();
    char list[1200], outp[600], errp[600], child[700], dir[600];
    snprintf(list, sizeof list, "%s,%s", plugin("fwdonly"), plugin("hang"));
    const char *const args[] = { "sweep", "--methods", list,   "--model",  "tiny", "--seqs",
                                 "16,32", "--steps",   "1",    "--warmup", "0",    "--timeout",
                                 "60",    "--out",     tmpdir, "--run-id", "intr", NULL };
    snprintf(outp, sizeof outp, "%s/out", tmpdir);
    snprintf(errp, sizeof errp, "%s/err", tmpdir);
    snprintf(dir, sizeof dir, "%s/host/intr", tmpdir);
    pid_t pid = spawn_env(args, outp, errp, NULL);
    snprintf(child, sizeof child, "%s/.hang.tiny.s16.b1.child.json", dir);
    for (int i = 0; i < 400 && access(child, F_OK) != 0; i++) usleep(25000);
    cr_assert(access(child, F_OK) == 0, "the sweep never reached its hanging cell");
    kill(pid, SIGINT);
    proc p = wait_proc(pid, outp, errp);
    cr_expect_eq(p.code, 130, "exit %d: %s", p.code, p.err);
    cr_expect(strstr(p.err, "ftbench sweep: interrupted after 1 of 4 cells; run the same command again to resume\n") !=
                  NULL,
              "%s", p.err);
    proc_free(&p);
    int hidden;
    int n = count_entries(dir, &hidden);
    cr_expect_eq(hidden, 1, "only .lock may be hidden: a snapshot or temporary was left (%d entries)", n);
    char path[700];
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    cr_expect_eq(jsonl_records(path), 1, "the interrupted cell was recorded");
    snprintf(path, sizeof path, "%s/hang.tiny.s16.b1.timeline.tsv", dir);
    cr_expect(access(path, F_OK) != 0, "the interrupted cell left a timeline");
}

/* ---- the helpers --------------------------------------------------------------------- */

Test(safe_file, writes_never_go_through_a_link, .fini = remove_tmp)
{
    make_tmp();
    char victim[300], lpath[300], err[512];
    snprintf(victim, sizeof victim, "%s/victim", tmpdir);
    write_text(victim, "precious\n");
    int dfd = ftb_sf_open_tree(tmpdir, "a/b", 1, err, sizeof err);
    cr_assert(dfd >= 0, "%s", err);
    cr_assert(symlinkat(victim, dfd, "atomic") == 0);
    cr_expect_eq(ftb_sf_write_atomic(dfd, "atomic", "new\n", 4, "atomic", err, sizeof err), 0, "%s", err);
    struct stat st;
    cr_expect(fstatat(dfd, "atomic", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode));
    cr_assert(symlinkat(victim, dfd, "appended") == 0);
    cr_expect_eq(ftb_sf_open_append(dfd, "appended", "appended", err, sizeof err), -1);
    cr_expect(strstr(err, "is a symbolic link") != NULL, "%s", err);
    /* a second hard link to someone's file */
    snprintf(lpath, sizeof lpath, "%s/a/b/hard", tmpdir);
    cr_assert(link(victim, lpath) == 0);
    cr_expect_eq(ftb_sf_open_append(dfd, "hard", "hard", err, sizeof err), -1);
    cr_expect(strstr(err, "other hard links") != NULL, "%s", err);
    close(dfd);
    /* fopen-like */
    snprintf(lpath, sizeof lpath, "%s/a/b/report.md", tmpdir);
    cr_assert(symlink(victim, lpath) == 0);
    FILE *f = ftb_sf_fopen_w(lpath);
    cr_assert(f != NULL, "%s", strerror(errno));
    fputs("# report\n", f);
    cr_expect_eq(ftb_sf_fclose(f), 0);
    char *text = th_slurp(victim);
    cr_expect_str_eq(text, "precious\n");
    free(text);
    text = th_slurp(lpath);
    cr_expect_str_eq(text, "# report\n");
    free(text);
    /* a linked directory component */
    snprintf(lpath, sizeof lpath, "%s/a/c", tmpdir);
    cr_assert(symlink("/tmp", lpath) == 0);
    cr_expect_eq(ftb_sf_open_tree(tmpdir, "a/c/d", 1, err, sizeof err), -1);
    cr_expect(strstr(err, "a/c: is a symbolic link; refusing to write through it") != NULL, "%s", err);
}

Test(safe_file, an_injected_failure_removes_the_temporary, .fini = remove_tmp)
{
    make_tmp();
    char err[512];
    setenv("FTBENCH_FAIL_WRITE", "doomed", 1);
    int dfd = ftb_sf_open_tree(tmpdir, NULL, 0, err, sizeof err);
    cr_assert(dfd >= 0);
    cr_expect_eq(ftb_sf_write_atomic(dfd, "doomed.json", "x", 1, "doomed.json", err, sizeof err), -1);
    cr_expect_eq(errno, ENOSPC);
    cr_expect(strstr(err, "No space left on device") != NULL, "%s", err);
    ftb_sf_stream s;
    cr_assert_eq(ftb_sf_stream_open(&s, dfd, "doomed.tsv"), 0);
    fputs("partial\n", s.f);
    cr_expect_eq(ftb_sf_stream_commit(&s), -1);
    cr_expect_eq(errno, ENOSPC);
    cr_expect_eq(ftb_sf_write_atomic(dfd, "fine.json", "y", 1, "fine.json", err, sizeof err), 0, "%s", err);
    unsetenv("FTBENCH_FAIL_WRITE");
    close(dfd);
    int hidden;
    cr_expect_eq(count_entries(tmpdir, &hidden), 1, "only fine.json may remain");
    cr_expect_eq(hidden, 0);
}

/* The record file and results.jsonl agree: a record results.jsonl refuses
 * is not kept in cells/ either. */
Test(safe_file, rundir_records_and_loads, .fini = remove_tmp)
{
    make_tmp();
    char run_dir[300], err[512];
    snprintf(run_dir, sizeof run_dir, "%s/dev/run", tmpdir);
    json_t *rec = json_pack("{s:i, s:s, s:s}", "schema", 1, "cell", "m.tiny.s16.b1", "outcome", "ok");
    cr_assert_eq(ftb_rundir_write_record(run_dir, "m.tiny.s16.b1", rec, err, sizeof err), 0, "%s", err);
    ftb_recorded r;
    cr_assert_eq(ftb_rundir_load(run_dir, &r, err, sizeof err), 0, "%s", err);
    cr_expect_eq(r.n, 1);
    cr_expect(ftb_recorded_find(&r, "m.tiny.s16.b1") != NULL);
    ftb_recorded_free(&r);
    /* a file named for another cell than it holds is not a record */
    char path[400];
    snprintf(path, sizeof path, "%s/cells/other.json", run_dir);
    write_text(path, "{\"schema\":1,\"cell\":\"m.tiny.s16.b1\",\"outcome\":\"ok\"}\n");
    cr_assert_eq(ftb_rundir_load(run_dir, &r, err, sizeof err), 0, "%s", err);
    cr_expect_eq(r.n, 1);
    ftb_recorded_free(&r);
    json_decref(rec);
}

/* The checkpoint saver's temporary file (<path>.tmp) was opened with
 * O_TRUNC and followed a link planted there; now a link is removed and a
 * new file made in its place. */
Test(safe_file, the_checkpoint_saver_does_not_follow_a_planted_temporary, .fini = remove_tmp)
{
    make_tmp();
    char victim[300], path[300], tmp[320], err[512];
    snprintf(victim, sizeof victim, "%s/victim", tmpdir);
    write_text(victim, "precious\n");
    snprintf(path, sizeof path, "%s/w.safetensors", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_assert(symlink(victim, tmp) == 0);
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("tiny", &cfg), 0);
    ftb_model *m = ftb_model_create(&cfg, 1, err, sizeof err);
    cr_assert(m != NULL, "%s", err);
    cr_expect_eq(ftb_safetensors_write(path, m->params, m->n_params, err, sizeof err), 0, "%s", err);
    ftb_model_free(m);
    char *text = th_slurp(victim);
    cr_expect_str_eq(text, "precious\n", "the victim was written through the saver's temporary");
    free(text);
    struct stat st;
    cr_expect(lstat(path, &st) == 0 && S_ISREG(st.st_mode));
    cr_expect(lstat(tmp, &st) != 0, "the temporary was left behind");
}
