/* proctree.c — see proctree.h. */
#include "proctree.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS 8192 /* processes on the host; more are not looked at */

ftb_tree_shared *ftb_tree_shared_new(void)
{
    void *p = mmap(NULL, sizeof(ftb_tree_shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    ftb_tree_shared *t = p;
    atomic_store(&t->now_bytes, -1);
    atomic_store(&t->max_bytes, -1);
    atomic_store(&t->max_procs, 0);
    atomic_store(&t->samples, 0);
    return t;
}

void ftb_tree_shared_free(ftb_tree_shared *t)
{
    if (t) munmap(t, sizeof *t);
}

int ftb_has_children(void)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/* Reads a small /proc file into buf; its length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0) return -1;
    buf[r] = 0;
    return r;
}

static long parse_long(const char **p)
{
    while (**p == ' ') (*p)++;
    long v = 0;
    while (**p >= '0' && **p <= '9') v = v * 10 + (*(*p)++ - '0');
    return v;
}

/* Hand-rolled formatting: snprintf is fine here, but keeping the scan
 * free of stdio keeps it free of locks in the sampler thread. */
static void proc_path(char *out, long pid, const char *leaf)
{
    char digits[24];
    int n = 0;
    do digits[n++] = (char)('0' + pid % 10);
    while ((pid /= 10) > 0);
    char *o = out;
    memcpy(o, "/proc/", 6);
    o += 6;
    while (n) *o++ = digits[--n];
    *o++ = '/';
    size_t l = strlen(leaf);
    memcpy(o, leaf, l + 1);
}

static int64_t statm_rss(long pid, long page)
{
    char path[64], buf[128];
    proc_path(path, pid, "statm");
    if (read_small(path, buf, sizeof buf) <= 0) return -1;
    const char *p = buf;
    parse_long(&p); /* size */
    return (int64_t)parse_long(&p) * page;
}

static long stat_ppid(long pid)
{
    char path[64], buf[512];
    proc_path(path, pid, "stat");
    if (read_small(path, buf, sizeof buf) <= 0) return -1;
    /* "pid (comm) S ppid ...": comm may hold spaces and ')' — the last ')'
     * ends it. */
    const char *rp = strrchr(buf, ')');
    if (!rp || !rp[1] || !rp[2] || !rp[3]) return -1;
    const char *p = rp + 4; /* ") S " */
    return parse_long(&p);
}

struct linux_dirent64 {
    ino64_t d_ino;
    off64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

int64_t ftb_proctree_rss(pid_t root, int *nprocs)
{
    long page = sysconf(_SC_PAGESIZE);
    if (nprocs) *nprocs = 0;
    int64_t total = statm_rss(root, page);
    if (total < 0) return -1;
    int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return total;
    /* Every process and its parent; then the descendants of root by
     * repeated passes (trees are shallow: a pass per generation).  Static,
     * not on the sampler thread's stack, and untouched (not resident) in a
     * cell that never forks; one caller per process (the sampler thread in
     * the cell, the main thread in the parent). */
    static pid_t pids[MAX_PROCS], ppids[MAX_PROCS], tree[MAX_PROCS + 1];
    static unsigned char in_tree[MAX_PROCS];
    int n = 0;
    char buf[16384];
    for (;;) {
        long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (got <= 0) break;
        for (long off = 0; off < got;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
            off += d->d_reclen;
            const char *p = d->d_name;
            if (*p < '1' || *p > '9') continue;
            long pid = parse_long(&p);
            if (*p || pid == root || n == MAX_PROCS) continue;
            long pp = stat_ppid(pid);
            if (pp <= 0) continue;
            pids[n] = (pid_t)pid;
            ppids[n] = (pid_t)pp;
            in_tree[n] = 0;
            n++;
        }
    }
    close(fd);
    int count = 1, grew = 1;
    tree[0] = root;
    while (grew) {
        grew = 0;
        for (int i = 0; i < n; i++) {
            if (in_tree[i]) continue;
            int parent_in = 0;
            for (int j = 0; j < count && !parent_in; j++) parent_in = tree[j] == ppids[i];
            if (!parent_in) continue;
            in_tree[i] = 1;
            tree[count++] = pids[i];
            grew = 1;
            int64_t r = statm_rss(pids[i], page);
            if (r > 0) total += r;
        }
    }
    if (nprocs) *nprocs = count;
    return total;
}
