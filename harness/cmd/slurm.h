/*
 * slurm.h — `ftbench sweep --backend slurm`: the sweep's cells as one
 * `sbatch --array` job on the cluster engine research groups already run.
 *
 * Submitting writes into the run directory (docs/HARNESS.md, "On a
 * cluster"):
 *
 *   slurm/submit-<n>.json    the sweep's own options, the cells to run (only
 *                            those without a measurement), cells per task,
 *                            and, once sbatch answered, the job id
 *   slurm/submit-<n>.sbatch  the job script: array task t runs
 *                            `ftbench sweep --slurm-task <that json>`, which
 *                            plans the same sweep again and runs cells
 *                            [t*K, t*K+K) of the list, each in its own child
 *                            as a local sweep does, writing each record to
 *                            cells/<key>.json only (no lock, no append)
 *   slurm/submit-<n>.<task>.log  the task's stdout and stderr
 *
 * `ftbench sweep --collect RUN_DIR` asks sacct how every task of every
 * submission ended and records the cells of tasks that were cancelled,
 * failed, timed out or went over Slurm's memory limit with that outcome
 * ("slurm_cancelled", ...; not measurements, so a re-submission runs them),
 * then merges the cell files into results.jsonl and prints the summary.
 */
#ifndef FTB_HARNESS_SLURM_H
#define FTB_HARNESS_SLURM_H

#include "cell.h"
#include "host.h"
#include <jansson.h>
#include <stdio.h>

typedef enum {
    FTB_SWEEP_LOCAL,        /* today's sweep: every cell here, one by one  */
    FTB_SWEEP_SLURM_SUBMIT, /* --backend slurm: write the job, sbatch it   */
    FTB_SWEEP_SLURM_TASK,   /* --slurm-task FILE: one array task's cells   */
    FTB_SWEEP_SLURM_COLLECT /* --collect RUN_DIR: outcomes, merge, summary */
} ftb_sweep_mode;

typedef struct {
    ftb_sweep_mode mode;
    char *slurm_opts; /* --slurm-opt values, joined by spaces          */
    int cells_per_task;
    int wait;
    /* The sweep's own options: argv as given minus the options above, or,
     * for a task or a collect, those recorded in the submission. */
    int argc;
    char **argv;
    /* task and collect: the submission file read (the latest for collect) */
    char submission_path[4096];
    json_t *submission;
    char **task_keys; /* task: the cells of this array task            */
    int n_task_keys;
    json_t *slurm_info;     /* task: merged into every record as "slurm"       */
    char collect_dir[4096]; /* collect: the run directory, absolute        */
} ftb_sweep_backend;

/* Takes --backend, --slurm-opt, --cells-per-task, --wait, --collect and
 * --slurm-task out of argv (argv[0] is "sweep").  For a task or a collect
 * it reads the submission and sets b->argc/argv to the sweep options
 * recorded there.  0, 1 for --help, or -1 with err (bad input). */
int ftb_sweep_backend_parse(int argc, char **argv, ftb_sweep_backend *b, char *err, size_t errlen);
void ftb_sweep_backend_free(ftb_sweep_backend *b);
void ftb_sweep_backend_help(FILE *f);

/* What the sweep planned: everything the backend needs. */
typedef struct {
    const char *sweep_name, *run_id, *run_dir;
    ftb_cell *cells;
    int ncells;
    int threads;    /* per cell                                        */
    int64_t budget; /* bytes                                           */
    int emulated;   /* the device is not this machine                  */
    int device_ram_mb;
    int threads_given, budget_given;
} ftb_sweep_plan;

/* The run directory's records as the sweep sees them: the current record
 * of a cell (NULL if none), and a refresh that re-reads the directory
 * (array tasks write into it while a submitter waits). */
typedef struct {
    json_t *(*find)(const char *key, void *ud);
    void (*refresh)(void *ud);
    void *ud;
} ftb_sweep_records;

/* Whether a record is a measurement that resume keeps; Slurm outcomes are
 * not (the cell gave no number). */
int ftb_slurm_is_measurement(json_t *rec);

/* Writes the submission and its sbatch script for the cells not measured,
 * submits it (sbatch --parsable) and prints the job id on stdout.  With
 * --wait, follows the job to its end.  Returns an exit code. */
int ftb_slurm_submit(ftb_sweep_backend *b, const ftb_sweep_plan *p, const ftb_sweep_records *r);

/* Follows a submitted job until no task of it is queued or running,
 * with a progress line on stderr.  0, or -1 with err. */
int ftb_slurm_wait(const char *job_id, const ftb_sweep_plan *p, const ftb_sweep_records *r, int quiet, char *err,
                   size_t errlen);

/* For a collect: checks that the recorded options plan the run directory
 * given.  0 or -1 with err. */
int ftb_slurm_collect_check(const ftb_sweep_backend *b, const ftb_sweep_plan *p, char *err, size_t errlen);
/* For a task: whether the cell is one of this array task's. */
int ftb_slurm_task_has(const ftb_sweep_backend *b, const char *key);
/* For a task: checks that the sweep planned here is the one submitted
 * (same run id, every cell of the task in it).  0 or -1 with err. */
int ftb_slurm_task_check(const ftb_sweep_backend *b, const ftb_sweep_plan *p, char *err, size_t errlen);

/* One array task's ending as sacct reports it. */
typedef struct {
    long task;         /* array index                                   */
    char state[32];    /* COMPLETED, CANCELLED, FAILED, TIMEOUT, ...    */
    char state_by[64]; /* "by 0" of "CANCELLED by 0"                    */
    char exit_code[16];
    char elapsed[32];
    char node[128];
    char job_id[32];       /* the task's own job id (J_t)                   */
    int64_t max_rss_bytes; /* largest MaxRSS of its steps, -1 if unknown   */
    int64_t req_mem_bytes; /* the job's memory (ReqMem per node), -1 if not */
} ftb_slurm_task_state;

/* Parses `sacct -n -P --format=JobID,State,ExitCode,Elapsed,NodeList,
 * MaxRSS,ReqMem` output for array job `job_id`: one entry per task index
 * (ranges such as "12_[3-5,7%2]" expanded), its steps' MaxRSS folded in.  Sets *out (malloc) and *n.  0 or -1 with err. */
int ftb_slurm_parse_sacct(const char *job_id, const char *text, ftb_slurm_task_state **out, int *n, char *err,
                          size_t errlen);
/* "slurm_cancelled" for CANCELLED, ...; NULL for COMPLETED and for states
 * of tasks still queued or running. */
const char *ftb_slurm_outcome(const char *state);
/* The outcome of a task: its state's, or "slurm_out_of_memory" when it
 * was killed with a step's MaxRSS at or over the job's memory. */
const char *ftb_slurm_task_outcome(const ftb_slurm_task_state *t);

/* The cells of tasks that did not complete get their outcome recorded
 * (`record` writes one record); cells still queued or running are counted
 * in *active.  0 or -1 with err. */
typedef int (*ftb_record_outcome_fn)(const ftb_cell *c, const char *outcome, const char *detail, json_t *slurm,
                                     void *ud, char *err, size_t errlen);
int ftb_slurm_collect(const ftb_sweep_plan *p, const ftb_sweep_records *r, ftb_record_outcome_fn record, int *recorded,
                      int *active, char *err, size_t errlen);
/* The job id of the run directory's latest submission ("" if none). */
void ftb_slurm_latest_job(const char *run_dir, char *out, size_t n);

/* The Slurm job this process belongs to (NULL outside Slurm), for every
 * record; the CPU model and affinity are host.h's. */
json_t *ftb_slurm_job_json(void);

#endif
