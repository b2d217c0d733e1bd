/*
 * test_remote.c — the pieces of `sweep --remote` that need no device
 * (suite "remote"): which command lines ask for it, and the one-line
 * refusals (exit 2) that come before any ssh.  The remote sweep itself,
 * against a real sshd in its own network and UTS namespace, is
 * ci/test-remote.sh (root, outside Criterion).
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "remote.h"
#include "util.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

Test(remote, the_option_is_found_and_a_value_reading_remote_is_not)
{
    char *yes[] = { "sweep", "--model", "tiny", "--remote", "pi@pi5.local" };
    char *eq[] = { "sweep", "--remote=pi@pi5.local" };
    /* "--run-id --remote": the run id's value, not the option */
    char *value[] = { "sweep", "--run-id", "--remote", "--model", "tiny" };
    char *no[] = { "sweep", "--model", "tiny" };
    cr_assert(ftb_remote_requested(ARGC(yes), yes));
    cr_assert(ftb_remote_requested(ARGC(eq), eq));
    cr_assert_not(ftb_remote_requested(ARGC(value), value));
    cr_assert_not(ftb_remote_requested(ARGC(no), no));
    cr_assert_eq(ftb_cli_takes_value("--seq"), 1);
    cr_assert_eq(ftb_cli_takes_value("--force"), 0);
    cr_assert_eq(ftb_cli_takes_value("--no-such-option"), -1);
}

/* Refused before ssh is run: nothing is contacted (the host would not
 * answer anyway), exit 2. */
Test(remote, bad_command_lines_are_refused_before_any_ssh)
{
    const unsigned opts = CLI_MODEL | CLI_METHODS | CLI_LISTS | CLI_TRAIN | CLI_DEVICE | CLI_OUT;
    char *force[] = { "sweep", "--remote", "pi@192.0.2.1", "--force" };
    char *slurm[] = { "sweep", "--remote", "pi@192.0.2.1", "--backend", "slurm" };
    char *twice[] = { "sweep", "--remote", "a@192.0.2.1", "--remote", "b@192.0.2.1" };
    char *opt_host[] = { "sweep", "--remote", "-oProxyCommand=x" };
    char *bad_seq[] = { "sweep", "--remote", "pi@192.0.2.1", "--seqs", "abc" };
    char *ckpt[] = { "sweep", "--remote", "pi@192.0.2.1", "--checkpoint", "/tmp" };
    cr_assert_eq(ftb_remote_sweep(ARGC(force), force, opts), FTB_EXIT_USAGE);
    cr_assert_eq(ftb_remote_sweep(ARGC(slurm), slurm, opts), FTB_EXIT_USAGE);
    cr_assert_eq(ftb_remote_sweep(ARGC(twice), twice, opts), FTB_EXIT_USAGE);
    cr_assert_eq(ftb_remote_sweep(ARGC(opt_host), opt_host, opts), FTB_EXIT_USAGE);
    cr_assert_eq(ftb_remote_sweep(ARGC(ckpt), ckpt, opts), FTB_EXIT_USAGE);
    cr_assert_eq(ftb_remote_sweep(ARGC(bad_seq), bad_seq, opts), FTB_EXIT_USAGE);
}

/* A shipped executable has no repository around it: the revision it was
 * built from comes with it. */
Test(remote, the_shipped_revision_is_the_one_given)
{
    setenv("FTBENCH_GIT_REVISION", "abc1234", 1);
    cr_assert_str_eq(ftb_git_revision(), "abc1234");
}
