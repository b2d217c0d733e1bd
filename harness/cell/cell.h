/*
 * cell.h — one measurement cell: (model, method + options, seq, batch,
 * device profile), run in its own forked child so that a crash, a hang or
 * an out-of-memory kill is an outcome to record, not the end of a sweep.
 *
 * The child loads the model, initialises the method, runs the steps and
 * writes what it measured to a file in the run directory (rewritten at each
 * milestone, so a crash still leaves the progress it made); the parent
 * waits with a timeout, classifies the ending and appends one JSON record
 * to <run dir>/results.jsonl.
 */
#ifndef FTB_HARNESS_CELL_H
#define FTB_HARNESS_CELL_H

#include "base.h"
#include "ftbench.h"
#include "profile.h"
#include <jansson.h>
#include <limits.h>

#define FTB_RECORD_SCHEMA   1
#define FTB_MAX_METHOD_OPTS 64

typedef enum {
    FTB_ENFORCE_CGROUP, /* kernel: cgroup v2 memory.max → "oom"           */
    FTB_ENFORCE_WATCH,  /* parent polls the child's RSS and kills it at the
                            budget → "over_budget" (fast; fit's default)    */
    FTB_ENFORCE_CHECK,  /* the cell runs to the end; peak RSS compared with
                            the budget afterwards → "over_budget"           */
} ftb_enforce;

const char *ftb_enforce_name(ftb_enforce e);

/* A command's own work in the cell's child, between the measured steps
 * (ftbench train evaluates the model there, train.h): called before the
 * first step (step 0) and after each step `step` of `total`, outside the
 * steps' measured time, with the wall seconds of the steps so far.  The
 * fields it sets in `out` go into the record as they are.  0, or -1 with
 * err: the cell ends with outcome "error" at stage `stage`.  The cell's
 * child is a fork: `ud` is the command's, and what the hook changes there
 * stays in the child. */
typedef struct {
    int (*fn)(void *ud, ftb_model *m, const ftb_run_opts *run, int step, int total, double step_seconds, json_t *out,
              char *err, size_t errlen);
    void *ud;
    const char *stage; /* the error stage when fn fails ("eval")        */
} ftb_cell_step_hook;

typedef struct {
    /* model */
    char model_name[96];
    const char *checkpoint; /* NULL: zoo model built from cfg  */
    ftb_config cfg;
    ftb_base_spec base;      /* base weight format and residency */
    char base_dir[PATH_MAX]; /* prepared checkpoint the cell maps
                                        instead ("" = none; base.h)      */
    json_t *base_info;       /* its ftbench-base.json, or NULL  */
    ftb_optimizer optimizer; /* selected before the method's init */
    int loss_chunk;          /* run.loss_chunk_rows; 0 = default */
    /* method */
    char method_path[PATH_MAX];
    char method_label[128];
    int n_opts;
    const char *opt_keys[FTB_MAX_METHOD_OPTS], *opt_values[FTB_MAX_METHOD_OPTS];
    /* shape and training */
    int seq, batch, steps, warmup;
    uint64_t seed;
    float lr;
    ftb_attention_impl attention;
    ftb_loss_mode loss;
    const char *dataset;
    /* device */
    ftb_profile device;
    int emulated;
    int threads;
    int64_t budget_bytes;
    ftb_enforce enforce;
    char enforce_note[200]; /* why this mechanism (e.g. no cgroup v2) */
    double timeout_sec;
    /* output */
    char run_dir[PATH_MAX];
    char run_id[128];
    char key[256];
    int timeline;
    json_t *extra;                    /* merged into the record if set    */
    ftb_cell_step_hook between_steps; /* fn NULL: none                */
    /* progress: called in the parent as the child reports milestones
     * ("load", "init", "step" with step index, "done"). */
    void (*progress)(void *ud, const char *what, int step, int nsteps);
    void *progress_ud;
} ftb_cell;

typedef struct {
    char outcome[16]; /* ok crashed killed timeout over_budget error oom */
    char detail[FTB_ERR_LEN];
    int64_t peak_rss;   /* VmHWM (or the last RSS seen), -1 if unknown */
    double step_median; /* seconds, 0 if none                        */
    double wall;
    json_t *record; /* the record appended (owned)               */
} ftb_cell_result;

/* Default values for everything not about the experiment itself. */
void ftb_cell_init(ftb_cell *c);
/* "<method>[+<opthash>].<model>[.<base>][.lazy][.sgd][.lc<rows>].s<seq>.b<batch>" into
 * c->key (<base>: "int4-g64", ... when a base format was given). */
void ftb_cell_make_key(ftb_cell *c);
/* Prepares the base weights file the cell maps, when its base options ask
 * for one (base.h), outside any measurement: fills c->base_dir and
 * c->base_info (the caller json_decref's it).  0 (also when nothing is
 * needed), or -1 with err. */
int ftb_cell_prepare_base(ftb_cell *c, int quiet, char *err, size_t errlen);
/* Runs the cell and records it (rundir.h: cells/<key>.json and a line of
 * results.jsonl).  Returns 0 when a record was written (whatever the
 * outcome), -1 with err when even that failed, FTB_CELL_INTERRUPTED when
 * SIGINT/SIGTERM stopped it (the child is killed, nothing is recorded and
 * nothing of it is left in the run directory). */
#define FTB_CELL_INTERRUPTED 1
int ftb_cell_run(const ftb_cell *c, ftb_cell_result *r, char *err, size_t errlen);

/* The plan's prediction of a cell's peak RSS (docs/PLAN.md), recorded as
 * memory.plan.  The planner lives with the commands (harness/cmd/plan.c),
 * so the command that runs cells registers it here rather than the cell
 * layer depending on it.  Called in the parent after the child ended (never
 * during a measurement).  Returns a new object, or NULL: nothing recorded. */
typedef json_t *(*ftb_cell_predictor)(void *ud, const ftb_cell *c);
void ftb_cell_set_predictor(ftb_cell_predictor fn, void *ud);

/* SIGINT and SIGTERM, for the whole command: they kill the running cell
 * and set the flag ftb_interrupted() returns (the signal number), so the
 * command can stop with a message instead of dying mid-record. */
void ftb_catch_interrupts(void);
int ftb_interrupted(void);

/* Resume.  The settings a record was measured with (everything that changes
 * its numbers: model and checkpoint identity, method and options, shape,
 * steps, warm-up, seed, lr, dataset, attention, loss, optimizer, base
 * format and residency, device, budget, enforcement, threads, a training
 * task), read from the record; those of a cell about to run; and whether
 * they differ (msg: "budget recorded 1048576, now 8589934592, ...").  A
 * setting the record predates is not compared. */
json_t *ftb_record_settings(json_t *rec);
json_t *ftb_cell_settings(const ftb_cell *c);
int ftb_cell_settings_differ(const ftb_cell *c, json_t *rec, char *msg, size_t n);
void ftb_cell_result_free(ftb_cell_result *r);
/* Appends a record with outcome "skipped" for a cell not run because the
 * same method was already over budget at the shorter length `seq` (cell
 * `because`).  0, or -1 with err. */
int ftb_cell_record_skipped(const ftb_cell *c, const char *because, int seq, char *err, size_t errlen);
/* Records an outcome for a cell that was not measured here (a Slurm task
 * cancelled, timed out, ...), with `field` set to `value` when given.  0,
 * or -1 with err. */
int ftb_cell_record_outcome(const ftb_cell *c, const char *outcome, const char *detail, const char *field,
                            json_t *value, char *err, size_t errlen);

/* results.jsonl helpers: the cell keys already recorded (lines that do not
 * parse are skipped — a torn tail from a killed writer). */
typedef struct {
    int n;
    char **keys;
    json_t **records;
} ftb_recorded;
int ftb_recorded_load(const char *results_path, ftb_recorded *out);
json_t *ftb_recorded_find(const ftb_recorded *r, const char *key); /* last record of key */
void ftb_recorded_free(ftb_recorded *r);

/* The host's sgemm rate (GFLOP/s, 512³, given threads), measured once in a
 * separate child; -1 if it could not be measured. */
double ftb_host_sgemm_gflops(int threads);

/* Roofline projection of one step's time on the device from the record's
 * counts: max(flops / peak, bytes / bandwidth).  Documented in HARNESS.md. */
json_t *ftb_roofline_projection(const ftb_profile *dev, const ftb_config *cfg, int B, int T, int64_t trainable,
                                int forward_passes, int has_backward, int64_t saved_peak_bytes);

#endif
