/*
 * main.c — the ftbench executable: picks the BLAS kernel (which may
 * re-execute the program), then dispatches a subcommand.  All logic lives
 * in the other harness files, which the test binary links too.
 */
#include "commands.h"
#include "report.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} command;

static const command commands[] = {
    { "run", ftb_cmd_run, "measure one cell: model x method x seq x batch on a device" },
    { "sweep", ftb_cmd_sweep, "measure every method x sequence length, resumable; prints a summary" },
    { "fit", ftb_cmd_fit, "find the longest sequence a method fits in a device's memory" },
    { "plan", ftb_cmd_plan, "predict each method's peak RSS per length on a device from shapes alone; --verify" },
    { "fidelity", ftb_cmd_fidelity, "a method's gradient (or estimate) against the exact gradient of its parameters" },
    { "list", ftb_cmd_list, "methods found, device profiles, models in the zoo" },
    { "bench-core", ftb_cmd_bench_core, "one full fine-tuning step vs the sgemm rate on the same shapes" },
    { "eval", ftb_cmd_eval, "held-out loss and exact-match accuracy of greedy answers on a task" },
    { "train", ftb_cmd_train, "fine-tune with a method on a task; loss curve and accuracy beside memory" },
    { "pretrain", ftb_cmd_pretrain, "train a small starting model (full method) and save it as safetensors" },
    { "report", ftb_cmd_report,
      "tables and plots for papers (Markdown, HTML, LaTeX; PNG, SVG, PDF) from results directories" },
    { NULL, NULL, NULL },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: ftbench COMMAND [options]   (ftbench COMMAND --help for its options)\n\n"
               "What fine-tuning a language model costs in memory and time, method by method,\n"
               "on small devices (measured here, or emulated from a device profile).\n\ncommands:\n");
    for (const command *c = commands; c->name; c++) fprintf(f, "  %-11s %s\n", c->name, c->summary);
}

int main(int argc, char **argv)
{
    /* First, before any BLAS work: may re-execute with a better kernel. */
    ftb_blas_autoselect(argc, argv);
    if (argc < 2) {
        usage(stderr);
        return FTB_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return FTB_EXIT_OK;
    }
    for (const command *c = commands; c->name; c++)
        if (!strcmp(argv[1], c->name)) return c->fn(argc - 1, argv + 1);
    fprintf(stderr,
            "ftbench: unknown command '%s' (commands: run, sweep, fit, plan, fidelity, list, bench-core, eval, train, "
            "pretrain, report)\n",
            argv[1]);
    return FTB_EXIT_USAGE;
}
