/*
 * kmsg.h — evidence of an out-of-memory kill in the kernel log.  A cell
 * that dies of SIGKILL the harness did not send is only called "oom" with
 * evidence; the kernel's OOM killer logs the pid it killed ("Killed process
 * PID" / "oom-kill:...,pid=PID,"), so the log is the evidence when it is
 * readable (root, or kernel.dmesg_restrict=0).
 */
#ifndef FTB_HARNESS_KMSG_H
#define FTB_HARNESS_KMSG_H

#include <stddef.h>
#include <sys/types.h>

/* Scans the kernel log for an OOM kill of `pid` logged at or after
 * `since_mono` (CLOCK_MONOTONIC seconds as ftb_now() gives them, the
 * clock of the log's time stamps).  1 with the log line in `line` (trimmed), 0 if there is none,
 * -1 if the log cannot be read (why in `line`). */
int ftb_kmsg_find_oom_kill(pid_t pid, double since_mono, char *line, size_t n);

#endif
