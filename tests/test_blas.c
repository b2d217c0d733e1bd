/* test_blas.c — the BLAS kernel choice, through the ftbench binary as a
 * user meets it: a user's OPENBLAS_CORETYPE is respected; on a generic
 * kernel (simulated with FTBENCH_BLAS_PRETEND_GENERIC) the candidates are
 * self-tested, the choice is cached and recorded. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftbench.h"

static char *run_capture(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    pclose(p);
    return buf;
}

Test(blas, selftest_child_reports_a_correct_kernel)
{
    const char *bin = getenv("FTBENCH_BIN");
    cr_assert_not_null(bin, "FTBENCH_BIN is not set (run through make test)");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "FTBENCH_BLAS_SELFTEST=1 OPENBLAS_CORETYPE=Haswell %s 2>&1", bin);
    char *out = run_capture(cmd);
    char verdict[8];
    double err, gflops;
    cr_assert_eq(sscanf(out, "%7s %lf %lf", verdict, &err, &gflops), 3, "self-test printed: %s", out);
    cr_expect_str_eq(verdict, "ok");
    cr_expect_lt(err, 1e-5);
    cr_expect_gt(gflops, 0.1);
}

Test(blas, user_choice_is_respected_and_recorded)
{
    const char *bin = getenv("FTBENCH_BIN");
    cr_assert_not_null(bin);
    char dir[] = "/tmp/ftbench-blas-XXXXXX", cmd[8192];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "OPENBLAS_CORETYPE=Haswell %s run --model tiny --method full --seq 16 --steps 1 --out %s >/dev/null 2>&1;"
             " cat %s/host/*/results.jsonl",
             bin, dir, dir);
    char *out = run_capture(cmd);
    cr_expect(strstr(out, "\"blas_core\": \"Haswell\"") || strstr(out, "\"blas_core\":\"Haswell\""),
              "record lacks the user's kernel: %.400s", out);
    cr_expect(strstr(out, "\"user\"") != NULL, "selection not recorded as the user's");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
}

Test(blas, generic_kernel_triggers_selftests_and_a_cached_choice)
{
    const char *bin = getenv("FTBENCH_BIN");
    cr_assert_not_null(bin);
    char dir[] = "/tmp/ftbench-blascache-XXXXXX", cmd[8192];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "env -u OPENBLAS_CORETYPE FTBENCH_BLAS_PRETEND_GENERIC=1 XDG_CACHE_HOME=%s %s list 2>&1 >/dev/null;"
             " cat %s/ftbench/blas-coretype-* 2>/dev/null",
             dir, bin, dir);
    char *out = run_capture(cmd);
    if (!strstr(out, "BLAS self-test")) {
        /* Only CPUs with AVX2 or AVX-512 have better candidates. */
        cr_expect(strstr(ftb_cpu_features(), "avx2") == NULL, "no self-test ran on a CPU with AVX2: %s", out);
    } else {
        cr_expect(strstr(out, "passed") != NULL, "no candidate passed: %s", out);
        const char *last = strrchr(out, '\n');
        cr_expect(last != NULL);
        /* the cache file's content (the chosen kernel) follows the messages */
        cr_expect(strstr(out, "Cooperlake\n") || strstr(out, "SkylakeX\n") || strstr(out, "Haswell\n") ||
                      strstr(out, ftb_blas_corename()),
                  "no choice cached: %s", out);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
}
