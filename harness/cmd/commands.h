/*
 * commands.h — the ftbench subcommands.  Each takes argv with argv[0] the
 * subcommand name and returns the process exit code (see cli.h:
 * 0 ok, 1 measured but failed, 2 bad input).
 */
#ifndef FTB_HARNESS_COMMANDS_H
#define FTB_HARNESS_COMMANDS_H

#include "cell.h"
#include "cli.h"

int ftb_cmd_run(int argc, char **argv);
int ftb_cmd_sweep(int argc, char **argv);
int ftb_cmd_fit(int argc, char **argv);
int ftb_cmd_list(int argc, char **argv);
/* harness/cmd/plan.c (docs/PLAN.md). */
int ftb_cmd_plan(int argc, char **argv);
/* Implemented in harness/fidelity.c. */
int ftb_cmd_fidelity(int argc, char **argv);
/* Implemented in harness/bench_core.c. */
int ftb_cmd_bench_core(int argc, char **argv);
/* harness/eval.c, harness/train.c, harness/pretrain.c (docs/TASKS.md). */
int ftb_cmd_eval(int argc, char **argv);
int ftb_cmd_train(int argc, char **argv);
int ftb_cmd_pretrain(int argc, char **argv);

/* What run, sweep and fit share once the command line is checked. */
typedef struct {
    ftb_cli cli;
    ftb_profile device;
    int emulated;
    ftb_config cfg;
    char model_name[96];
    const char *methods_dir; /* NULL if none found                    */
    ftb_enforce enforce;
    char enforce_note[200];
    int64_t budget;
    int threads;
    int base_from_device; /* the profile's default_base_dtype/default_group apply */
} ftb_setup;

/* Resolves device, model (fallback: the device's default model), methods
 * directory, budget, threads and enforcement.  fit_mode picks the watch
 * enforcement when no cgroup is available.  0, or -1 with err. */
int ftb_setup_common(ftb_setup *s, int fit_mode, char *err, size_t errlen);
/* A cell with the setup's common values filled in. */
void ftb_setup_cell(const ftb_setup *s, ftb_cell *c);
/* Resolves a method (name or path) into the cell: path, label, options;
 * probes the plugin (in a child) and checks the options against what it
 * declares.  probe_json (optional) receives the probe's description. */
int ftb_setup_method(const ftb_setup *s, const char *name_or_path, ftb_cell *c, int strict_options, char **probe_json,
                     char *err, size_t errlen);
/* <out>/<device>/<run id>; -1 (the one line printed) when it would not
 * fit: never cut. */
int ftb_setup_run_dir(const ftb_setup *s, const char *run_id, char *out, size_t n);
/* Checks the dataset spec opens for the model (files are validated). */
int ftb_setup_check_dataset(const ftb_setup *s, char *err, size_t errlen);

/* From now on every cell run records the plan's prediction for it
 * (memory.plan, docs/PLAN.md), with s's methods and device for the process
 * baseline; ftb_setup_common calls it. */
void ftb_plan_predict_cells(const ftb_setup *s);
/* The longest length the plan predicts c's method fits within s's budget
 * (this machine's threads, the cached process baseline): fit starts its
 * search there.  0, or -1 with why (no memory_plan, no model). */
int ftb_plan_fit_hint(ftb_setup *s, const ftb_cell *c, int *longest, char *why, size_t whyn);
/* Prints "ftbench <cmd>: <msg>" on stderr and returns FTB_EXIT_USAGE. */
int ftb_usage_error(const char *cmd, const char *msg);

#endif
