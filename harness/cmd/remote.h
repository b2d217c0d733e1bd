/*
 * remote.h — `ftbench sweep --remote USER@HOST`: the sweep run natively on
 * a device over ssh, its records brought back here (docs/DEVICES.md,
 * "Running on a device").
 *
 * Everything goes through the system's OpenSSH (`ssh`, and `rsync -e ssh`
 * for files); there is no protocol of ftbench's own.  On the device, under
 * <remote-dir> (default ~/ftbench-remote):
 *
 *   <arch>/build/ftbench, <arch>/build/methods/<name>.so, <arch>/profiles/
 *                     the binaries matching the device's `uname -m`
 *   sessions/<sid>/   one per command line (host, remote dir and sweep
 *                     options hashed): pid, log (the sweep's stderr,
 *                     streamed here), stdout (its summary), exit (its exit
 *                     code, once it ended) and results/<device>/<run-id>/,
 *                     the device's own run directory
 *
 * The sweep runs detached there (setsid, stdio on files): a dropped
 * connection does not stop it.  Running the same command again finds the
 * session: still running, it re-attaches to the log; ended, it collects;
 * neither (the device rebooted), it starts the sweep again in the same run
 * directory, which resumes it — a cell is never run twice.
 */
#ifndef FTB_HARNESS_REMOTE_H
#define FTB_HARNESS_REMOTE_H

#include <stdio.h>

/* Whether a sweep's argv (argv[0] is "sweep") names --remote. */
int ftb_remote_requested(int argc, char **argv);

/* The remote sweep: ships, starts or re-attaches, streams the progress,
 * collects into <out>/<device>/<run-id>/ here and prints the summary.
 * sweep_opts: the option groups `sweep` accepts (cli.h).  Returns the exit
 * code: the remote sweep's, 2 on bad input (this command line, an
 * unreachable host, no usable remote directory, no binary for the
 * device's architecture), 1 when the connection was lost (the sweep goes
 * on there), 130 when detached with Ctrl-C. */
int ftb_remote_sweep(int argc, char **argv, unsigned sweep_opts);

void ftb_remote_help(FILE *f);

#endif
