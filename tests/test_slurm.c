/*
 * test_slurm.c — the Slurm backend's pieces that need no cluster (suite
 * "slurm"): sacct's answer read into task outcomes, the option checks and
 * their one-line refusals (sbatch missing, bad values, a task without
 * SLURM_ARRAY_TASK_ID), the record's CPU binding.  The backend against a
 * real Slurm is ci/test-slurm.sh (root, outside Criterion).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "slurm.h"

extern char **environ;

static const ftb_slurm_task_state *task_of(const ftb_slurm_task_state *v, int n, long t)
{
    for (int i = 0; i < n; i++)
        if (v[i].task == t) return &v[i];
    return NULL;
}

Test(slurm, sacct_lines_become_task_outcomes)
{
    /* As sacct -n -P -X prints them for an array job: single tasks, a
     * range of never-started tasks cancelled together (with a throttle),
     * a requeued task listed twice (the last line wins), another job. */
    const char *text = "41_0|COMPLETED|0:0|00:00:07|vm||300M\n"
                       "41_0.batch|COMPLETED|0:0|00:00:07|vm|20480K|\n"
                       "41_1|CANCELLED by 0|0:15|00:00:02|vm||300M\n"
                       "41_2|TIMEOUT|0:0|00:01:00|node7||4G\n"
                       "41_3|OUT_OF_MEMORY|0:125|00:00:03|node7||4Gn\n"
                       "41_[4-5,8%2]|CANCELLED by 1000|0:0|00:00:00|None assigned||300M\n"
                       "41_6|NODE_FAIL|1:0|00:00:09|node3||300M\n"
                       "41_6|FAILED|2:0|00:00:04|node4||300M\n"
                       "410_7|FAILED|1:0|00:00:01|vm||300M\n"
                       /* without cgroups: the accounting poll killed it over --mem */
                       "41_9|FAILED|0:9|00:00:06|vm||300M\n"
                       "41_9.batch|CANCELLED by 0|0:9|00:00:06|vm|411260K|\n"
                       "41_9.extern|COMPLETED|0:0|00:00:06|vm|0|\n"
                       "\n";
    ftb_slurm_task_state *v;
    int n;
    char err[256];
    cr_assert_eq(ftb_slurm_parse_sacct("41", text, &v, &n, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 9, "tasks 0-6, 8 and 9, not job 410's: %d", n);
    cr_assert_eq(task_of(v, n, 0)->max_rss_bytes, 20480LL * 1024);
    cr_assert_eq(task_of(v, n, 0)->req_mem_bytes, 300LL << 20);
    cr_assert_eq(task_of(v, n, 3)->req_mem_bytes, 4LL << 30, "the 'n' (per node) suffix");
    cr_assert_eq(task_of(v, n, 9)->max_rss_bytes, 411260LL * 1024, "the largest step's MaxRSS");
    cr_assert_null(ftb_slurm_task_outcome(task_of(v, n, 0)));
    cr_assert_str_eq(ftb_slurm_task_outcome(task_of(v, n, 1)), "slurm_cancelled");
    cr_assert_str_eq(ftb_slurm_task_outcome(task_of(v, n, 3)), "slurm_out_of_memory");
    cr_assert_str_eq(ftb_slurm_task_outcome(task_of(v, n, 9)), "slurm_out_of_memory", "FAILED with MaxRSS over --mem");
    cr_assert_str_eq(ftb_slurm_task_outcome(task_of(v, n, 6)), "slurm_failed");
    const ftb_slurm_task_state *t1 = task_of(v, n, 1);
    cr_assert(t1);
    cr_assert_str_eq(t1->state, "CANCELLED");
    cr_assert_str_eq(t1->state_by, "by 0");
    cr_assert_str_eq(t1->exit_code, "0:15");
    cr_assert_str_eq(t1->job_id, "41_1");
    cr_assert_str_eq(task_of(v, n, 2)->state, "TIMEOUT");
    cr_assert_str_eq(task_of(v, n, 3)->state, "OUT_OF_MEMORY");
    cr_assert_str_eq(task_of(v, n, 5)->state_by, "by 1000");
    cr_assert_str_eq(task_of(v, n, 8)->node, "None assigned");
    cr_assert_null(task_of(v, n, 7));
    cr_assert_str_eq(task_of(v, n, 6)->state, "FAILED", "the last line of a requeued task wins");
    free(v);

    cr_assert_str_eq(ftb_slurm_outcome("CANCELLED"), "slurm_cancelled");
    cr_assert_str_eq(ftb_slurm_outcome("TIMEOUT"), "slurm_timeout");
    cr_assert_str_eq(ftb_slurm_outcome("OUT_OF_MEMORY"), "slurm_out_of_memory");
    cr_assert_str_eq(ftb_slurm_outcome("FAILED"), "slurm_failed");
    cr_assert_null(ftb_slurm_outcome("COMPLETED"));
    cr_assert_null(ftb_slurm_outcome("RUNNING"));
    cr_assert_null(ftb_slurm_outcome("PENDING"));

    cr_assert_neq(ftb_slurm_parse_sacct("41", "41_1|CANCELLED|0:0\n", &v, &n, err, sizeof err), 0);
    cr_assert(strstr(err, "JobID|State|ExitCode|Elapsed|NodeList|MaxRSS|ReqMem"), "%s", err);
    cr_assert_neq(ftb_slurm_parse_sacct("41", "41_x|FAILED|1:0|0|vm||1G\n", &v, &n, err, sizeof err), 0);
    cr_assert(strstr(err, "not an array task id"), "%s", err);
}

Test(slurm, slurm_outcomes_are_not_measurements)
{
    json_t *ok = json_pack("{s:s}", "outcome", "ok");
    json_t *crashed = json_pack("{s:s}", "outcome", "crashed");
    json_t *cancelled = json_pack("{s:s}", "outcome", "slurm_cancelled");
    cr_assert(ftb_slurm_is_measurement(ok));
    cr_assert(ftb_slurm_is_measurement(crashed));
    cr_assert_not(ftb_slurm_is_measurement(cancelled));
    cr_assert_not(ftb_slurm_is_measurement(NULL));
    json_decref(ok);
    json_decref(crashed);
    json_decref(cancelled);
}

Test(slurm, cpu_binding_lists_the_allowed_cpus)
{
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    char text[512];
    ftb_host_cpu_affinity(text, sizeof text);
    /* Count the CPUs the text names ("0-3,8" is five). */
    int count = 0;
    for (char *p = text; *p;) {
        int a = (int)strtol(p, &p, 10), z = a;
        if (*p == '-') z = (int)strtol(p + 1, &p, 10);
        for (int c = a; c <= z; c++) cr_assert(CPU_ISSET(c, &set), "cpu %d in '%s' is not allowed", c, text);
        count += z - a + 1;
        if (*p == ',') p++;
    }
    cr_assert_eq(count, CPU_COUNT(&set), "'%s'", text);
    char model[256];
    ftb_host_cpu_model(model, sizeof model);
    cr_assert(model[0]);
}

/* ---- the executable ------------------------------------------------------ */

typedef struct {
    int code;
    char err[4096];
} result;

/* Runs ftbench with argv and the environment `env` (NULL-terminated). */
static result run_env(const char *const *args, char *const *env)
{
    const char *bin = getenv("FTBENCH_BIN");
    if (!bin) cr_skip_test("FTBENCH_BIN is set by make test");
    const char *argv[32];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    char errp[] = "/tmp/ftbslurm-err-XXXXXX";
    close(mkstemp(errp));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_TRUNC, 0);
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, bin, &fa, NULL, (char *const *)argv, env), 0);
    posix_spawn_file_actions_destroy(&fa);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    result r;
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    FILE *f = fopen(errp, "r");
    size_t got = f ? fread(r.err, 1, sizeof r.err - 1, f) : 0;
    r.err[got] = 0;
    if (f) fclose(f);
    unlink(errp);
    return r;
}

/* This environment with PATH replaced (and extra variables). */
static char **env_with(const char *path, const char *extra)
{
    static char *env[512];
    static char pathvar[4096], extravar[256];
    static char blas[] = "FTBENCH_BLAS_AUTO=0";
    int n = 0;
    for (char **e = environ; *e && n < 500; e++)
        if (strncmp(*e, "PATH=", 5) && strncmp(*e, "SLURM_", 6) && strncmp(*e, "FTBENCH_BLAS_AUTO=", 18)) env[n++] = *e;
    snprintf(pathvar, sizeof pathvar, "PATH=%s", path);
    env[n++] = pathvar;
    env[n++] = blas;
    if (extra) {
        snprintf(extravar, sizeof extravar, "%s", extra);
        env[n++] = extravar;
    }
    env[n] = NULL;
    return env;
}

static void expect_usage(const char *const *args, char *const *env, const char *needle)
{
    result r = run_env(args, env);
    cr_expect_eq(r.code, 2, "exit %d for %s ...: %s", r.code, args[1], r.err);
    cr_expect(strstr(r.err, needle), "expected '%s' in: %s", needle, r.err);
    int lines = 0;
    for (char *p = r.err; *p; p++) lines += *p == '\n';
    cr_expect_eq(lines, 1, "one line: %s", r.err);
}

Test(slurm, refusals_are_one_line_and_exit_2)
{
    /* No sbatch on PATH (an empty directory is the whole PATH). */
    char empty[] = "/tmp/ftbslurm-path-XXXXXX";
    cr_assert(mkdtemp(empty));
    char **env = env_with(empty, NULL);
    expect_usage((const char *const[]){ "sweep", "--model", "tiny", "--methods", "lora", "--seqs", "32", "--backend",
                                        "slurm", NULL },
                 env, "sbatch not found on PATH");
    expect_usage((const char *const[]){ "sweep", "--backend", "pbs", NULL }, env,
                 "--backend: 'pbs' is not local or slurm");
    expect_usage((const char *const[]){ "sweep", "--cells-per-task", "3", NULL }, env,
                 "--cells-per-task is for --backend slurm");
    expect_usage((const char *const[]){ "sweep", "--slurm-opt", "--time=1", NULL }, env,
                 "--slurm-opt is for --backend slurm");
    expect_usage((const char *const[]){ "sweep", "--wait", NULL }, env, "--wait is for --backend slurm");
    expect_usage((const char *const[]){ "sweep", "--collect", "/nonexistent/ftb", NULL }, env,
                 "--collect /nonexistent/ftb: not a directory");
    expect_usage((const char *const[]){ "sweep", "--collect", empty, NULL }, env, "no Slurm submission in it");
    expect_usage((const char *const[]){ "sweep", "--collect", empty, "--seqs", "32", NULL }, env,
                 "--collect RUN_DIR takes no other sweep options");

    /* A task outside an array job, and a submission that is not one. */
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/submit-1.json", empty);
    FILE *f = fopen(sub, "w");
    fputs("{\"argv\": [\"--model\", \"tiny\"], \"cells\": [\"lora.tiny.s32.b1\"], \"cells_per_task\": 1, "
          "\"run_id\": \"x\"}\n",
          f);
    fclose(f);
    expect_usage((const char *const[]){ "sweep", "--slurm-task", sub, NULL }, env, "SLURM_ARRAY_TASK_ID is not set");
    expect_usage((const char *const[]){ "sweep", "--slurm-task", sub, NULL }, env_with(empty, "SLURM_ARRAY_TASK_ID=1"),
                 "array task 1 has no cells");
    f = fopen(sub, "w");
    fputs("{\"argv\": [\"--model\", 7], \"cells\": [], \"cells_per_task\": 1, \"run_id\": \"x\"}\n", f);
    fclose(f);
    expect_usage((const char *const[]){ "sweep", "--slurm-task", sub, NULL }, env_with(empty, "SLURM_ARRAY_TASK_ID=0"),
                 "argv[1] is not a string");
    f = fopen(sub, "w");
    fputs("{\"argv\": [", f);
    fclose(f);
    expect_usage((const char *const[]){ "sweep", "--slurm-task", sub, NULL }, env_with(empty, "SLURM_ARRAY_TASK_ID=0"),
                 "submit-1.json:1:");
    unlink(sub);
    rmdir(empty);
}
