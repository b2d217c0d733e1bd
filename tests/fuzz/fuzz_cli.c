/*
 * fuzz_cli.c — the command-line option parser of run, sweep, fit and list
 * (harness/cli.c, ftb_cli_parse) and what the commands do with its values
 * before measuring anything: --seqs/--batches lists, --opt scoping and
 * checking, the zoo lookup of --model, a synthetic --dataset.
 *
 * Input: argv split on NUL bytes.  The first word is the subcommand and
 * picks the options allowed, as harness/commands.c, sweep.c and fit.c do
 * (an unknown word allows every option group).  At most 64 words.
 *
 * Seeds: tests/fuzz/corpus/cli/ (gen_corpus.sh: the README's and the
 * docs' command lines).
 */
#include "cli.h"
#include "dataset.h"

#include "fuzz_common.h"

#define FZ_CLI_MAX_ARGS 64

/* The option groups of each command: harness/commands.c (RUN_OPTS, list),
 * harness/sweep.c (SWEEP_OPTS), harness/fit.c (FIT_OPTS). */
static const struct {
    const char *cmd;
    unsigned allowed;
} fz_cli_cmds[] = {
    { "run", CLI_MODEL | CLI_METHOD | CLI_SHAPE | CLI_TRAIN | CLI_DEVICE | CLI_OUT },
    { "sweep", CLI_MODEL | CLI_METHODS | CLI_LISTS | CLI_TRAIN | CLI_DEVICE | CLI_OUT },
    { "fit", CLI_MODEL | CLI_METHOD | CLI_TRAIN | CLI_DEVICE | CLI_OUT | CLI_FIT | CLI_SHAPE },
    { "list", CLI_DEVICE },
};

int fuzz_cli_one(const uint8_t *data, size_t size)
{
    char *buf = fz_strndup(data, size);
    char *argv[FZ_CLI_MAX_ARGS + 1];
    int argc = 0;
    /* Words are NUL-separated; a trailing NUL ends the last word (it does
     * not start an empty one). */
    for (size_t i = 0; argc < FZ_CLI_MAX_ARGS && (i < size || argc == 0);) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;

    unsigned allowed = 0x3ffu;
    for (size_t k = 0; k < sizeof fz_cli_cmds / sizeof fz_cli_cmds[0]; k++)
        if (!strcmp(argv[0], fz_cli_cmds[k].cmd)) allowed = fz_cli_cmds[k].allowed;

    ftb_cli o;
    char err[512];
    err[0] = 0;
    int rc = ftb_cli_parse(argv[0], allowed, argc, argv, &o, err, sizeof err);
    FZ_CHECK(rc == 0 || rc == 1 || rc == -1, "ftb_cli_parse returned %d", rc);
    if (rc == -1) fz_check_error(err, sizeof err, 0);
    if (rc != 0) {
        ftb_cli_free(&o);
        free(buf);
        return rc == 1; /* --help is a valid command line */
    }
    FZ_CHECK(o.n_opts >= 0 && o.n_opts <= FTB_CLI_MAX_OPTS, "n_opts %d", o.n_opts);
    FZ_CHECK(o.batch >= 1 && o.steps >= 1 && o.warmup >= 0 && o.lr > 0 && o.timeout > 0, "bad defaults");
    FZ_CHECK(!(o.model && o.checkpoint), "both --model and --checkpoint");

    /* What sweep does with the lists (harness/sweep.c). */
    int *v, nv;
    if (o.seqs && ftb_parse_int_list(o.seqs, 1, 1 << 22, &v, &nv, err, sizeof err) == 0) {
        for (int i = 0; i < nv; i++)
            FZ_CHECK(v[i] >= 1 && v[i] <= 1 << 22 && (i == 0 || v[i - 1] < v[i]), "--seqs list entry %d", v[i]);
        free(v);
    }
    if (o.batches && ftb_parse_int_list(o.batches, 1, 1 << 16, &v, &nv, err, sizeof err) == 0) {
        for (int i = 0; i < nv; i++)
            FZ_CHECK(v[i] >= 1 && v[i] <= 1 << 16 && (i == 0 || v[i - 1] < v[i]), "--batches list entry %d", v[i]);
        free(v);
    }
    /* --opt: scoped to the method, and checked against its options. */
    const char *keys[FTB_CLI_MAX_OPTS], *values[FTB_CLI_MAX_OPTS];
    const char *label = o.method ? o.method : "lora";
    int nk = ftb_cli_method_options(&o, label, keys, values, FTB_CLI_MAX_OPTS);
    FZ_CHECK(nk >= 0 && nk <= o.n_opts, "%d options for %s out of %d", nk, label, o.n_opts);
    for (int i = 0; i < nk; i++) FZ_CHECK(keys[i] && values[i], "option %d unset", i);
    static const char probe[] = "{\"name\":\"lora\",\"options\":[{\"name\":\"rank\",\"default\":\"8\"},{\"name\":"
                                "\"alpha\"},{\"name\":\"targets\"}]}";
    for (int strict = 0; strict < 2; strict++)
        if (ftb_cli_check_options(&o, label, probe, strict, err, sizeof err) != 0) fz_check_error(err, sizeof err, 0);
    /* --model from the zoo (a --checkpoint would read the file system). */
    if (!o.checkpoint) {
        ftb_config cfg;
        char name[128];
        if (ftb_cli_model(&o, "tiny", &cfg, name, sizeof name, err, sizeof err) != 0)
            fz_check_error(err, sizeof err, 0);
    }
    /* A synthetic --dataset (a path would read the file system). */
    if (!strcmp(o.dataset, "uniform") ||
        (!strncmp(o.dataset, "synthetic-lang", 14) && (o.dataset[14] == 0 || o.dataset[14] == ':'))) {
        ftb_dataset *d = ftb_dataset_open(o.dataset, 64, o.seed, err, sizeof err);
        if (d) {
            ftb_batch b;
            FZ_CHECK(ftb_dataset_next(d, 1, 8, &b, err, sizeof err) == 0, "synthetic batch: %s", err);
            ftb_dataset_close(d);
        } else {
            fz_check_error(err, sizeof err, 0);
        }
    }
    ftb_cli_free(&o);
    free(buf);
    return 1;
}

FTB_FUZZ_ENTRY(fuzz_cli_one)
