/*
 * test_helpers_proc.h — runs the ftbench executable ($FTBENCH_BIN, set by
 * `make test`) as a user would, with a deadline: a command that hangs (a
 * FIFO given as an input, say) is killed and reported as such instead of
 * hanging the suite.
 */
#ifndef TEST_HELPERS_PROC_H
#define TEST_HELPERS_PROC_H

#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct {
    int code;      /* exit status, 128 + signal if killed                 */
    int timed_out; /* 1 if the deadline passed and the process was killed */
    double seconds;
    char *out, *err; /* what it printed (malloc'd)                        */
} tproc;

static inline double tproc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* FTBENCH_BIN args... with stdin from /dev/null, killed after deadline_s.
 * Leak reports are off in the child (an early exit 2 need not free). */
static inline tproc tproc_run(const char *const *args, double deadline_s)
{
    tproc p = { 0 };
    const char *bin = getenv("FTBENCH_BIN");
    char outp[] = "/tmp/ftbtest-out-XXXXXX", errp[] = "/tmp/ftbtest-err-XXXXXX";
    int of = mkstemp(outp), ef = mkstemp(errp);
    if (!bin || of < 0 || ef < 0) {
        p.code = -1;
        p.out = strdup("");
        p.err = strdup("FTBENCH_BIN unset or no temporary file");
        return p;
    }
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    double t0 = tproc_now();
    pid_t pid = fork();
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        dup2(in, 0);
        dup2(of, 1);
        dup2(ef, 2);
        setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
        setenv("FTBENCH_BLAS_AUTO", "0", 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(of);
    close(ef);
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) break;
        if (tproc_now() - t0 > deadline_s) {
            p.timed_out = 1;
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            break;
        }
        struct timespec nap = { 0, 20 * 1000 * 1000 };
        nanosleep(&nap, NULL);
    }
    p.seconds = tproc_now() - t0;
    p.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    p.out = th_slurp(outp);
    p.err = th_slurp(errp);
    unlink(outp);
    unlink(errp);
    return p;
}

static inline void tproc_free(tproc *p)
{
    free(p->out);
    free(p->err);
}

static inline int tproc_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

#endif
