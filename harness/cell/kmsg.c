/* kmsg.c — see kmsg.h.  /dev/kmsg is read first (one record per read(),
 * time stamps in microseconds); when it cannot be opened, the syslog(2)
 * buffer that dmesg reads ("<p>[secs.usecs] text" lines). */
#include "kmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/klog.h>
#include <unistd.h>

/* Does this message record an OOM kill of pid?  The two forms the kernel
 * has printed since 4.19: "Out of memory: Killed process 123 (name) ..."
 * (also "Memory cgroup out of memory: Killed process 123 ...") and
 * "oom-kill:constraint=...,task=name,pid=123,uid=0". */
static int names_oom_kill(const char *msg, pid_t pid)
{
    char needle[48];
    snprintf(needle, sizeof needle, "Killed process %d ", (int)pid);
    if (strstr(msg, needle) && strstr(msg, "out of memory")) return 1;
    if (strstr(msg, needle) && strstr(msg, "Out of memory")) return 1;
    snprintf(needle, sizeof needle, ",pid=%d,", (int)pid);
    return strncmp(msg, "oom-kill:", 9) == 0 && strstr(msg, needle) != NULL;
}

static void keep_line(char *out, size_t n, const char *msg, size_t len)
{
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) len--;
    if (len >= n) len = n - 1;
    memcpy(out, msg, len);
    out[len] = 0;
}

static int scan_dev_kmsg(int fd, pid_t pid, double since, char *line, size_t n)
{
    char rec[8192];
    int found = 0;
    for (;;) {
        ssize_t r = read(fd, rec, sizeof rec - 1);
        if (r < 0 && errno == EPIPE) continue; /* a record overwritten while reading: skip it */
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* EAGAIN: the end of the buffer */
        rec[r] = 0;
        /* "prio,seq,usec,flags[,...];message\n[ continuation lines]" */
        unsigned long long usec = 0;
        if (sscanf(rec, "%*u,%*u,%llu", &usec) != 1) continue;
        char *msg = strchr(rec, ';');
        if (!msg || (double)usec * 1e-6 < since) continue;
        msg++;
        char *nl = strchr(msg, '\n');
        if (nl) *nl = 0;
        if (names_oom_kill(msg, pid)) {
            keep_line(line, n, msg, strlen(msg));
            found = 1;
        }
    }
    return found;
}

static int scan_syslog(pid_t pid, double since, char *line, size_t n)
{
    int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
    if (size <= 0) return -1;
    char *buf = malloc((size_t)size + 1);
    if (!buf) return -1;
    int got = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size);
    if (got < 0) {
        int e = errno;
        free(buf);
        errno = e;
        return -1;
    }
    buf[got] = 0;
    int found = 0;
    for (char *p = buf; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        /* "<6>[  265.872454] text" */
        double secs = -1;
        char *open = strchr(p, '['), *close = strchr(p, ']');
        if (open && close && open < close && sscanf(open + 1, "%lf", &secs) == 1 && secs >= since) {
            const char *msg = close[1] == ' ' ? close + 2 : close + 1;
            if (names_oom_kill(msg, pid)) {
                keep_line(line, n, msg, strlen(msg));
                found = 1;
            }
        }
        p = nl ? nl + 1 : NULL;
    }
    free(buf);
    return found;
}

int ftb_kmsg_find_oom_kill(pid_t pid, double since_mono, char *line, size_t n)
{
    line[0] = 0;
    int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        int found = scan_dev_kmsg(fd, pid, since_mono, line, n);
        close(fd);
        return found;
    }
    int e = errno;
    int found = scan_syslog(pid, since_mono, line, n);
    if (found < 0) snprintf(line, n, "the kernel log is not readable (/dev/kmsg: %s)", strerror(e));
    return found;
}
