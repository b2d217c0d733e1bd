/* progress.c — what `make test` prints while it runs: each suite's name as
 * its first test starts, its count and time when it ends, and the run's
 * total time just before Criterion's own closing "Synthesis" line (which CI
 * reads as the last line, so nothing may follow it).
 *
 * Criterion calls report hooks in its runner process, once per event, in
 * test order (`--jobs 1`); suites that a --filter leaves out get PRE_SUITE and
 * POST_SUITE but no test, and print nothing.  Lines go to stderr, where
 * Criterion writes, so that the two stay in order through a pipe. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static double run_start, suite_start;
static const char *suite_running; /* the suite whose tests are under way, or NULL */
static size_t suites_run;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void format_elapsed(char *buf, size_t n, double seconds)
{
    int s = (int)(seconds + 0.5);
    if (s < 60)
        snprintf(buf, n, "%.1f s", seconds);
    else
        snprintf(buf, n, "%d min %02d s", s / 60, s % 60);
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    run_start = now_seconds();
}

ReportHook(PRE_INIT)(struct criterion_test *test)
{
    if (suite_running && strcmp(suite_running, test->category) == 0) return;
    suite_running = test->category;
    suite_start = now_seconds();
    char at[32];
    format_elapsed(at, sizeof at, suite_start - run_start);
    fprintf(stderr, "[SUITE] %s ... (at %s)\n", test->category, at);
    fflush(stderr);
}

ReportHook(POST_SUITE)(struct criterion_suite_stats *stats)
{
    size_t ran = stats->tests_passed + stats->tests_failed + stats->tests_crashed;
    if (!suite_running || ran == 0 || strcmp(suite_running, stats->suite->name) != 0) return;
    suite_running = NULL;
    suites_run++;
    char took[32];
    format_elapsed(took, sizeof took, now_seconds() - suite_start);
    size_t bad = stats->tests_failed + stats->tests_crashed;
    fprintf(stderr, "[SUITE] %s: %zu test%s in %s", stats->suite->name, ran, ran == 1 ? "" : "s", took);
    if (bad)
        fprintf(stderr, ", %zu FAILED\n", bad);
    else
        fprintf(stderr, ", all passed\n");
    fflush(stderr);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    char took[32];
    format_elapsed(took, sizeof took, now_seconds() - run_start);
    size_t ran = stats->tests_passed + stats->tests_failed + stats->tests_crashed;
    fprintf(stderr, "[====] Total time: %s for %zu test%s in %zu suite%s\n", took, ran, ran == 1 ? "" : "s", suites_run,
            suites_run == 1 ? "" : "s");
    fflush(stderr);
}
