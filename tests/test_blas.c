/* test_blas.c — the BLAS kernel choice, through the ftbench binary as a
 * user meets it: a user's OPENBLAS_CORETYPE is respected; on a generic
 * kernel (armv8 on arm64, or simulated with FTBENCH_BLAS_PRETEND_GENERIC)
 * the candidates are self-tested, a candidate that dies of SIGILL is
 * skipped, the choice is cached and recorded with its basis (speed, or
 * correctness under emulation).  No test names one architecture's kernels:
 * each architecture's baseline kernel, which every CPU of it runs, comes
 * from baseline_kernel(). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cpu.h"
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

/* A kernel every CPU of this architecture runs, other than its usual
 * default: the oldest x86-64 one, or ARM's Cortex-A53 (plain ARMv8 NEON). */
static const char *baseline_kernel(void) { return strcmp(ftb_cpu()->arch, "aarch64") == 0 ? "CORTEXA53" : "Prescott"; }

/* A kernel this CPU cannot run, if it lacks one: an AVX-512 kernel on an
 * x86 CPU without it.  (Debian's 0.3.21 arm64 SVE kernels, NEOVERSEV1 and
 * NEOVERSEN2, pass their sgemm self-test on a Cortex-A76 without SVE under
 * qemu: their sgemm is NEON, so there is no real arm64 case to use.) */
static const char *kernel_this_cpu_lacks(void)
{
    if (strcmp(ftb_cpu()->arch, "x86_64") != 0) return NULL;
    return strstr(ftb_cpu_features(), "avx512f") ? NULL : "SkylakeX";
}

/* The first record of results.jsonl under dir. */
static json_t *first_record(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cat %s/*/*/results.jsonl 2>/dev/null | head -1", dir);
    char *out = run_capture(cmd);
    json_error_t e;
    json_t *r = json_loads(out, 0, &e);
    cr_assert_not_null(r, "no record in %s: %.300s", dir, out);
    return r;
}

static const char *host_str(json_t *rec, const char *key)
{
    const char *s = json_string_value(json_object_get(json_object_get(rec, "host"), key));
    return s ? s : "";
}

Test(blas, selftest_child_reports_a_correct_kernel)
{
    const char *bin = getenv("FTBENCH_BIN");
    cr_assert_not_null(bin, "FTBENCH_BIN is not set (run through make test)");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "FTBENCH_BLAS_SELFTEST=1 OPENBLAS_CORETYPE=%s %s 2>&1", baseline_kernel(), bin);
    char *out = run_capture(cmd);
    char verdict[8], loaded[64];
    double err, gflops;
    cr_assert_eq(sscanf(out, "%7s %lf %lf %63s", verdict, &err, &gflops, loaded), 4, "self-test printed: %s", out);
    cr_expect_str_eq(verdict, "ok");
    cr_expect_lt(err, 1e-5);
    cr_expect_gt(gflops, 0.01);
    cr_expect(strcasecmp(loaded, baseline_kernel()) == 0, "asked for %s, OpenBLAS loaded %s", baseline_kernel(),
              loaded);
}

Test(blas, user_choice_is_respected_and_recorded)
{
    const char *bin = getenv("FTBENCH_BIN");
    cr_assert_not_null(bin);
    char dir[] = "/tmp/ftbench-blas-XXXXXX", cmd[8192];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "OPENBLAS_CORETYPE=%s %s run --model tiny --method full --seq 16 --steps 1 --out %s >/dev/null 2>&1",
             baseline_kernel(), bin, dir);
    (void)!system(cmd);
    json_t *r = first_record(dir);
    cr_expect(strcasecmp(host_str(r, "blas_core"), baseline_kernel()) == 0, "record has kernel '%s', not the user's %s",
              host_str(r, "blas_core"), baseline_kernel());
    cr_expect_str_eq(host_str(r, "blas_selection"), "user");
    json_decref(r);
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
             "env -u OPENBLAS_CORETYPE -u FTBENCH_BLAS_CANDIDATES FTBENCH_BLAS_PRETEND_GENERIC=1 XDG_CACHE_HOME=%s "
             "%s list 2>&1 >/dev/null; echo CACHED; cat %s/ftbench/blas-coretype-* 2>/dev/null",
             dir, bin, dir);
    char *out = run_capture(cmd);
    /* Every x86-64 CPU with AVX2 and every arm64 CPU (NEON is mandatory)
     * has candidates. */
    int expect_candidates = strcmp(ftb_cpu()->arch, "aarch64") == 0 || strstr(ftb_cpu_features(), "avx2");
    if (!expect_candidates) {
        cr_expect(strstr(out, "BLAS self-test") == NULL, "self-tests on a CPU without candidates: %s", out);
    } else {
        cr_assert(strstr(out, "BLAS self-test") != NULL, "no self-test ran: %s", out);
        cr_expect(strstr(out, "passed") != NULL, "no candidate passed: %s", out);
        /* The cached choice is a candidate that passed, or the kernel that
         * was already loaded. */
        char *cached = strstr(out, "CACHED\n");
        cr_assert_not_null(cached);
        cached += 7;
        cached[strcspn(cached, "\n")] = 0;
        cr_assert(cached[0], "no choice cached: %s", out);
        char passed[96];
        snprintf(passed, sizeof passed, "BLAS self-test %s", cached);
        char *line = strstr(out, passed);
        int ok = line && strncmp(line + strcspn(line, "\n") - 6, "passed", 6) == 0;
        cr_expect(ok || strcasecmp(cached, ftb_blas_corename()) == 0,
                  "cached choice '%s' is neither a candidate that passed nor the loaded kernel: %s", cached, out);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
}

/* A candidate whose self-test child dies of SIGILL is skipped, said so,
 * and never chosen.  With a kernel this CPU lacks, the SIGILL is the
 * kernel's own; otherwise FTBENCH_BLAS_TEST_SIGILL makes that candidate's
 * child execute an illegal instruction (a real SIGILL, injected). */
Test(blas, candidate_killed_by_sigill_is_skipped)
{
    const char *lacks = kernel_this_cpu_lacks();
    const char *victim = lacks ? lacks : strcmp(ftb_cpu()->arch, "aarch64") == 0 ? "NEOVERSEN1" : "Haswell";
    cr_log_info("SIGILL from %s (%s)", victim, lacks ? "its own instructions" : "injected");
    const char *bin = getenv("FTBENCH_BIN");
    cr_assert_not_null(bin);
    char dir[] = "/tmp/ftbench-blassigill-XXXXXX", cmd[8192];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "env -u OPENBLAS_CORETYPE FTBENCH_BLAS_PRETEND_GENERIC=1 FTBENCH_BLAS_CANDIDATES=%s,%s "
             "%s%s XDG_CACHE_HOME=%s %s list 2>&1 >/dev/null; echo CACHED; cat %s/ftbench/blas-coretype-* "
             "2>/dev/null",
             victim, baseline_kernel(), lacks ? "" : "FTBENCH_BLAS_TEST_SIGILL=", lacks ? "" : victim, dir, bin, dir);
    char *out = run_capture(cmd);
    char want[128];
    snprintf(want, sizeof want, "BLAS self-test %-13s skipped: killed by SIGILL", victim);
    cr_expect(strstr(out, want) != NULL, "no SIGILL skip for %s: %s", victim, out);
    snprintf(want, sizeof want, "BLAS self-test %-13s passed", baseline_kernel());
    cr_expect(strstr(out, want) != NULL, "the other candidate did not pass: %s", out);
    char *cached = strstr(out, "CACHED\n");
    cr_assert_not_null(cached);
    cr_expect(strncasecmp(cached + 7, victim, strlen(victim)) != 0, "the kernel that died was chosen: %s", out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
}

/* The automatic choice is recorded with why it was made; under emulation
 * it is by correctness and never the generic kernel. */
Test(blas, automatic_choice_is_recorded_with_its_basis)
{
    const char *bin = getenv("FTBENCH_BIN");
    cr_assert_not_null(bin);
    char dir[] = "/tmp/ftbench-blasrec-XXXXXX", cmd[8192];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "env -u OPENBLAS_CORETYPE -u FTBENCH_BLAS_CANDIDATES FTBENCH_BLAS_PRETEND_GENERIC=1 XDG_CACHE_HOME=%s "
             "%s run --model tiny --method full --seq 16 --steps 1 --out %s/out >/dev/null 2>&1",
             dir, bin, dir);
    (void)!system(cmd);
    char out[1100];
    snprintf(out, sizeof out, "%s/out", dir);
    json_t *r = first_record(out);
    json_t *cpu = json_object_get(json_object_get(r, "host"), "cpu");
    cr_assert(json_is_object(cpu), "record has no host.cpu");
    cr_expect_str_eq(json_string_value(json_object_get(cpu, "arch")), ftb_cpu()->arch);
    cr_expect_eq(json_is_true(json_object_get(cpu, "emulated")), ftb_cpu()->emulated);
    const char *sel = host_str(r, "blas_selection"), *basis = host_str(r, "blas_selection_basis");
    if (ftb_cpu()->emulated) {
        cr_expect_str_eq(sel, "auto");
        cr_expect(strncmp(basis, "correctness", 11) == 0, "basis under emulation: '%s'", basis);
        cr_expect(strcasecmp(host_str(r, "blas_core"), "armv8") != 0, "the generic kernel stayed");
        cr_expect(json_is_string(json_object_get(cpu, "emulation")), "how emulation was detected is not recorded");
    } else if (!strcmp(sel, "auto")) {
        cr_expect(strncmp(basis, "speed", 5) == 0, "basis on hardware: '%s'", basis);
    } else {
        cr_expect_str_eq(sel, "default", "the loaded kernel was kept, so the selection is the default");
    }
    json_decref(r);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
}
