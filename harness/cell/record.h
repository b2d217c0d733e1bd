/*
 * record.h — one record of results.jsonl (docs/HARNESS.md "Records"):
 * everything a record says is in one struct, and one function writes it.
 *
 * A cell that ran (ftb_cell_run) fills the whole struct: the parent's own
 * view (outcome, the peaks it saw, the host) in typed fields, and what the
 * measured child wrote in `measured`, whose sections are copied as they
 * are.  A cell that was not run here (skipped, a Slurm task's outcome)
 * fills only the description.  Adding a record field: a typed field here
 * and its line in ftb_record_json when the parent knows it; a new section
 * of the child's measurements (cell_child.c): its name in the writer's
 * table of measured sections (record.c, measured_sections).
 */
#ifndef FTB_HARNESS_RECORD_H
#define FTB_HARNESS_RECORD_H

#include "cell.h"
#include <jansson.h>
#include <stdint.h>

typedef struct {
    const ftb_cell *cell; /* what was measured: model, method, shape, device  */
    const char *outcome;  /* ok crashed killed timeout over_budget error oom  */
    const char *detail;
    /* One more field after the outcome (a skipped cell's "skipped_because",
     * a Slurm outcome's "slurm"); NULL: none. */
    const char *field;
    json_t *field_value;
    int signal; /* the child's fatal signal, 0: none              */
    char timestamp_utc[32];
    const char *git_rev;
    ftb_enforce enforcement; /* in effect (the cell's request may have fallen back) */
    const char *enforcement_note;

    /* ---- set when the cell ran here (ran = 1) ---- */
    int ran;
    json_t *measured; /* the child's last snapshot, NULL if it wrote none   */
    struct {
        int64_t ru_maxrss;                     /* the child's ru_maxrss, bytes; <= 0: unknown    */
        int64_t parent_observed_max;           /* the RSS the parent saw; <= 0: not watched     */
        int cgroup;                            /* a cgroup enforced the budget: the two below    */
        int64_t cgroup_peak, cgroup_oom_kills; /* < 0: unreadable                       */
        int64_t peak;                          /* the cell's peak (its process tree's); <= 0: unknown */
        int64_t process_peak;                  /* the cell's own process's; <= 0: unknown           */
        int tree_max_processes;
        int peak_is_lower_bound; /* no VmHWM from the child: what was seen before it ended */
    } memory;
    struct {
        int cores;
        double sgemm_gflops_512; /* <= 0: not measured                       */
        int64_t ram_bytes;
        char cpu_model[256], cpu_affinity[512];
        double measured_step_seconds; /* emulated devices: the host's median step; 0: none */
        double page_fault_seconds;    /* one fault of fresh memory here (ftb_op_fault_seconds); 0: none */
    } host;
    json_t *plan;              /* memory.plan: the plan's prediction (cell.h, ftb_cell_set_predictor); NULL: none */
    const char *timeline_file; /* NULL: no timeline file                     */
    struct {
        int errno_value; /* 0: none                                        */
        int timeline;    /* the timeline (else the measurements) failed   */
        const char *file;
    } io_error;
    double cell_wall_seconds;
} ftb_record;

/* The record as JSON (a new reference): the one writer of records. */
json_t *ftb_record_json(const ftb_record *r);

/* A record of a cell not run here: the description, outcome now. */
void ftb_record_init_not_run(ftb_record *r, const ftb_cell *c, const char *outcome, const char *detail);

#endif
