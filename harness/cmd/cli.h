/*
 * cli.h — options shared by `run`, `sweep` and `fit`, and the resolution
 * of what they name (model, device, methods) into checked values.  Every
 * bad input ends as one line on stderr and exit code 2 (FTB_EXIT_USAGE).
 */
#ifndef FTB_HARNESS_CLI_H
#define FTB_HARNESS_CLI_H

#include "base.h"
#include "ftbench.h"
#include "profile.h"
#include <stdint.h>

#define FTB_EXIT_OK    0
#define FTB_EXIT_FAIL  1 /* ran, but the measurement failed            */
#define FTB_EXIT_USAGE 2 /* bad input: nothing was measured             */

#define FTB_CLI_MAX_OPTS 64
/* --run-id length (ids are file names; run_id buffers are 128 bytes) */
#define FTB_CLI_MAX_RUN_ID 127

/* Which options a command accepts. */
enum {
    CLI_MODEL = 1u << 0,   /* --model --checkpoint --base-dtype --embed-dtype --group --residency */
    CLI_METHOD = 1u << 1,  /* --method                                    */
    CLI_METHODS = 1u << 2, /* --methods (list)                            */
    CLI_SHAPE = 1u << 3,   /* --seq --batch                               */
    CLI_LISTS = 1u << 4,   /* --seqs --batches --sweep                    */
    CLI_TRAIN = 1u << 5,   /* --steps --warmup --lr --seed --dataset --attention --loss --opt --optimizer */
    CLI_DEVICE = 1u << 6,  /* --device --profiles-dir --threads --budget --enforce */
    CLI_OUT = 1u << 7,     /* --out --run-id --timeout --no-timeline --force --wait-lock --independent */
    CLI_FIT = 1u << 8,     /* --seq-min --seq-max --granularity            */
    CLI_DIRS = 1u << 9,    /* --methods-dir (always useful)               */
};

typedef struct {
    const char *cmd;
    const char *model, *checkpoint, *method, *methods, *methods_dir;
    const char *device, *profiles_dir, *dataset, *out_dir, *run_id, *sweep;
    const char *seqs, *batches, *enforce;
    int seq, batch, steps, warmup, threads;
    int seq_min, seq_max, granularity;
    ftb_attention_impl attention;
    ftb_loss_mode loss;
    double lr, timeout;
    uint64_t seed;
    int64_t budget_bytes; /* --budget; 0 = the device's        */
    int n_opts;
    char *opt_keys[FTB_CLI_MAX_OPTS], *opt_values[FTB_CLI_MAX_OPTS];
    int no_timeline, force, quiet, no_skip, wait_lock, independent;
    int no_plan;             /* fit: --no-plan */
    ftb_base_spec base;      /* --base-dtype --embed-dtype --group --residency */
    ftb_optimizer optimizer; /* --optimizer (default adamw)        */
    int loss_chunk;          /* --loss-chunk rows; 0 = the core's  */
    /* Which of the defaultable values the user gave. */
    int seq_given, steps_given, warmup_given, timeout_given, lr_given;
} ftb_cli;

/* Parses argv[1..] (argv[0] is the subcommand).  Returns 0, 1 when --help
 * was asked, or -1 with err ("--seq: 'abc' is not a positive integer"). */
int ftb_cli_parse(const char *cmd, unsigned allowed, int argc, char **argv, ftb_cli *o, char *err, size_t errlen);
void ftb_cli_free(ftb_cli *o);
/* Whether an option ("--seq") takes a value: 1, 0 (a flag), -1 (unknown).
 * For commands that pass a command line on (sweep --remote). */
int ftb_cli_takes_value(const char *name);

/* Prints the option help for the groups in `allowed`. */
void ftb_cli_print_options(FILE *f, unsigned allowed);

/* The model named by --model/--checkpoint (or `fallback` when neither):
 * its config, a display name, and whether it comes from the zoo. */
int ftb_cli_model(const ftb_cli *o, const char *fallback, ftb_config *cfg, char *name, size_t name_n, char *err,
                  size_t errlen);

/* The device profile (--device, default "host"). */
int ftb_cli_device(const ftb_cli *o, ftb_profile *p, char *err, size_t errlen);

/* Options --opt key=value for one method (label): unscoped keys, and keys
 * scoped as "<label>.key". */
int ftb_cli_method_options(const ftb_cli *o, const char *label, const char **keys, const char **values, int max);

/* Checks the --opt keys against a method's declared options (the probe's
 * JSON), and numeric values against float's range and the ranges of
 * options common to methods (ftb_opt_double).  Keys scoped to another
 * method are ignored.  0; -1 with err for an unknown key; -2 with err for
 * a known key with a bad value. */
int ftb_cli_check_options(const ftb_cli *o, const char *label, const char *probe_json, int strict_unscoped, char *err,
                          size_t errlen);

/* "128..4096" (doubling), "128,256,1024" or "512" → sorted list. */
int ftb_parse_int_list(const char *s, int lo, int hi, int **out, int *n, char *err, size_t errlen);

#endif
