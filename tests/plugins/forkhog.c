/* forkhog: a step that forks a helper process which allocates --opt mb=N
 * MiB (default 256), touches every page, holds it for 400 ms and exits;
 * the step waits for it and succeeds.  The cell's own process stays
 * small: only counting the whole process tree sees the memory. */
#include "common.h"
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int step(void *st, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    (void)st;
    err[0] = 0;
    long mb = ftb_opt_int(s->options, "mb", 256, err, errlen);
    if (err[0]) return -1;
    if (forward_once(s, b, out, err, errlen)) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "forkhog: fork failed");
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls after fork() in a threaded process:
         * mmap, memset, nanosleep, _exit. */
        size_t n = (size_t)mb << 20;
        char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) _exit(1);
        memset(p, 1, n);
        struct timespec hold = { 0, 400 * 1000 * 1000 };
        while (nanosleep(&hold, &hold) != 0)
            ;
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(err, errlen, "forkhog: the helper failed (status %d)", status);
        return -1;
    }
    return 0;
}
TEST_PLUGIN("forkhog", "test: a forked helper allocates in step", step, FTB_ABI_VERSION)
