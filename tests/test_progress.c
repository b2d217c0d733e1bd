/* test_progress.c — `make test` shows its progress (tests/progress.c): the
 * test binary runs itself on the probe suite below and its output must name
 * the suite as it starts and ends, give the total time, and still end with
 * Criterion's "Synthesis" line, which CI reads as the run's last line. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The suite the nested run executes; PROGRESS_PROBE_FAIL=1 makes one fail. */
Test(progress_probe, passes) { cr_expect(1); }
Test(progress_probe, fails_when_asked)
{
    const char *fail = getenv("PROGRESS_PROBE_FAIL");
    cr_expect(!(fail && strcmp(fail, "1") == 0), "failing as asked (PROGRESS_PROBE_FAIL=1)");
}

/* The test binary's output on the progress_probe suite alone, stderr and
 * stdout together as a terminal or CI would show them; caller frees. */
static char *run_probe_suite(int make_one_fail)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    cr_assert_gt(n, 0, "readlink /proc/self/exe");
    self[n] = 0;
    cr_assert_null(strchr(self, '\''), "test binary path with a quote: %s", self);
    /* BXFI_MAP tells a Criterion process it is a worker of a runner: unset,
     * the nested binary is a runner of its own. */
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "env -u BXFI_MAP PROGRESS_PROBE_FAIL=%d '%s' --jobs 1 --filter 'progress_probe/*' 2>&1",
             make_one_fail, self);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    size_t got;
    while ((got = fread(out + len, 1, cap - 1 - len, p)) > 0) {
        len += got;
        if (len == cap - 1) out = realloc(out, cap *= 2);
    }
    out[len] = 0;
    pclose(p); /* a failing probe makes the exit status non-zero */
    return out;
}

static const char *last_line(char *text)
{
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n') text[--n] = 0;
    char *nl = strrchr(text, '\n');
    return nl ? nl + 1 : text;
}

Test(progress, suites_named_as_they_run_total_time_and_the_summary_last, .timeout = 60)
{
    char *out = run_probe_suite(0);
    const char *start = strstr(out, "[SUITE] progress_probe ... (at ");
    const char *end = strstr(out, "[SUITE] progress_probe: 2 tests in ");
    const char *total = strstr(out, "[====] Total time: ");
    cr_expect_not_null(start, "no line naming the suite as it starts in:\n%s", out);
    cr_expect_not_null(end, "no line closing the suite with its count and time in:\n%s", out);
    cr_expect_not_null(total, "no total time in:\n%s", out);
    if (start && end && total) cr_expect(start < end && end < total, "progress lines out of order:\n%s", out);
    if (end) cr_expect_eq(strncmp(strchr(end, '\n') - 12, ", all passed", 12), 0, "not reported as passed:\n%s", out);
    if (total) cr_expect_eq(strncmp(strchr(total, '\n') - 23, " for 2 tests in 1 suite", 23), 0, "%s", out);
    /* suites the filter leaves out print nothing */
    cr_expect_null(strstr(out, "[SUITE] progress:"), "a filtered-out suite was reported:\n%s", out);
    cr_expect_null(strstr(out, "[SUITE] quant"), "a filtered-out suite was reported:\n%s", out);
    const char *last = last_line(out);
    cr_expect_eq(strncmp(last, "[====] Synthesis: Tested: 2 | Passing: 2 |", 42), 0,
                 "the last line is not Criterion's summary: '%s'", last);
    free(out);
}

Test(progress, a_failing_suite_is_marked_and_the_summary_stays_last, .timeout = 60)
{
    char *out = run_probe_suite(1);
    cr_expect_not_null(strstr(out, "[SUITE] progress_probe: 2 tests in "), "%s", out);
    cr_expect_not_null(strstr(out, ", 1 FAILED\n"), "the failure is not in the suite's line:\n%s", out);
    const char *last = last_line(out);
    cr_expect_eq(strncmp(last, "[====] Synthesis: Tested: 2 | Passing: 1 | Failing: 1 |", 55), 0,
                 "the last line is not Criterion's summary: '%s'", last);
    free(out);
}
