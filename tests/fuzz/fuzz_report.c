/*
 * fuzz_report.c — the results reader behind `ftbench report` (reports/:
 * results.jsonl records, their timelines, and everything the command builds
 * from them: scopes, medians, tables, plot data and scripts, report.md,
 * report.html, table.tex).
 *
 * Input: a results.jsonl, optionally followed by FZ_RP_SEP and the text of
 * a timeline (written as cell.timeline.tsv beside it, which a record names
 * with "timeline_file").  The whole command runs on it, as
 *   ftbench report DIR/results.jsonl --out DIR/out --formats svg
 * with FTBENCH_GNUPLOT pointing nowhere (no gnuplot: tables, data and
 * scripts are still written), its stdout and stderr sent to /dev/null.
 *
 * The same results.jsonl then goes through the other reader of results
 * files, the one `sweep` and `fit` resume with (harness/cell.c,
 * ftb_recorded_load): every record it keeps must be found by its key.
 *
 * Seeds: tests/fuzz/corpus/report/ (gen_corpus.sh: lines of the committed
 * results fixture, with and without a timeline).
 */
#include "report.h"
#include "cell.h"

#include "fuzz_common.h"

#define FZ_RP_SEP "\n==ftb-timeline==\n"

int fuzz_report_one(const uint8_t *data, size_t size)
{
    fz_scratch();
    fz_part parts[2];
    int n = fz_split(data, size, FZ_RP_SEP, parts, 2);
    fz_write("results.jsonl", parts[0].p, parts[0].n);
    if (n > 1) fz_write("cell.timeline.tsv", parts[1].p, parts[1].n);

    char results[1024], out[1024];
    fz_path(results, sizeof results, "results.jsonl");
    fz_path(out, sizeof out, "out");
    char *argv[] = { "report", results, "--out", out, "--formats", "svg", NULL };
    setenv("FTBENCH_GNUPLOT", "/nonexistent/gnuplot", 1);

    /* The command reports skipped lines and missing plots on stderr and a
     * summary on stdout: quiet while it runs.  (Sanitizers write to file
     * descriptor 2 directly, which stays open.) */
    static FILE *devnull;
    if (!devnull) devnull = fopen("/dev/null", "w");
    FZ_CHECK(devnull != NULL, "cannot open /dev/null");
    FILE *saved_out = stdout, *saved_err = stderr;
    fflush(stdout);
    fflush(stderr);
    stdout = devnull;
    stderr = devnull;
    int rc = ftb_cmd_report(6, argv);
    stdout = saved_out;
    stderr = saved_err;
    FZ_CHECK(rc == 0 || rc == 1, "exit code %d for a readable results file", rc);

    ftb_recorded done;
    FZ_CHECK(ftb_recorded_load(results, &done) == 0, "ftb_recorded_load failed on a readable file");
    for (int i = 0; i < done.n; i++) {
        json_t *r = ftb_recorded_find(&done, done.keys[i]);
        FZ_CHECK(r != NULL && !strcmp(json_string_value(json_object_get(r, "cell")), done.keys[i]),
                 "recorded cell '%s' not found by its key", done.keys[i]);
    }
    ftb_recorded_free(&done);
    return rc == 0;
}

FTB_FUZZ_ENTRY(fuzz_report_one)
