/*
 * sweep.h — sweep definitions and the summary table.  Shared by `sweep`
 * and the tests.
 */
#ifndef FTB_HARNESS_SWEEP_H
#define FTB_HARNESS_SWEEP_H

#include "cell.h"
#include <stdio.h>

/* A named sweep's defaults; the command line may override each field. */
typedef struct {
    const char *name;
    const char *seqs; /* list syntax of ftb_parse_int_list */
    const char *batches;
    int steps, warmup;
    /* Once a method's cell is over budget (or OOM) at some length, record
     * its longer lengths as "skipped" instead of running them: memory only
     * grows with the length, and each such cell costs minutes. */
    int skip_longer_after_over_budget;
    const char *about;
} ftb_sweep_def;

/* "default" or "paper"; NULL if unknown. */
const ftb_sweep_def *ftb_sweep_find(const char *name);
const ftb_sweep_def *ftb_sweep_defs(int *n);

/* Deterministic run id: "<sweep>-<16 hex>" from everything that changes
 * the measured values, so that re-running the same sweep resumes it. */
void ftb_sweep_run_id(const char *sweep, const char *canonical, char *out, size_t n);

/* Prints the peak-memory table (rows: method[, batch]; columns: seq) for
 * the given records, marking over-budget and failed cells, then the
 * median-step-time table. */
void ftb_sweep_print_summary(FILE *f, json_t *const *records, int n, int64_t budget, const char *device);

#endif
