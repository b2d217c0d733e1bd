/* cgroup.c — see cgroup.h. */
#include "cgroup.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CG_ROOT "/sys/fs/cgroup"

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int saved = errno;
    close(fd);
    errno = saved;
    return w == (ssize_t)n ? 0 : -1;
}

static int file_has_word(const char *path, const char *word)
{
    char e[64];
    char *t = ftb_read_file(path, NULL, e, sizeof e);
    if (!t) return 0;
    int found = 0;
    size_t wl = strlen(word);
    for (char *p = t; (p = strstr(p, word)); p += wl)
        if ((p == t || p[-1] == ' ' || p[-1] == '\n') && (!p[wl] || p[wl] == ' ' || p[wl] == '\n')) found = 1;
    free(t);
    return found;
}

/* Our own cgroup v2 path ("0::/a/b" in /proc/self/cgroup). */
static int own_group(char *out, size_t n)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    char line[1024];
    int rc = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = 0;
            snprintf(out, n, "%s%s", CG_ROOT, strcmp(line + 3, "/") == 0 ? "" : line + 3);
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

/* A parent group under which new groups get the memory controller. */
static int pick_parent(char *out, size_t n, char *why, size_t whyn)
{
    if (!ftb_is_file(CG_ROOT "/cgroup.controllers"))
        return ftb_errf(why, whyn, "no cgroup v2 hierarchy at " CG_ROOT " (cgroup v1 or hybrid mount)");
    if (!file_has_word(CG_ROOT "/cgroup.controllers", "memory"))
        return ftb_errf(why, whyn, "the cgroup v2 memory controller is not available");
    /* The root is exempt from the no-internal-processes rule, so as root
     * the cleanest place is directly under it; else our own group if it
     * already delegates memory to its children. */
    char cands[2][PATH_MAX];
    snprintf(cands[0], sizeof cands[0], "%s", CG_ROOT);
    int nc = 1;
    if (own_group(cands[1], sizeof cands[1]) == 0 && strcmp(cands[1], CG_ROOT) != 0) nc = 2;
    for (int i = 0; i < nc; i++) {
        char sub[PATH_MAX + 32];
        snprintf(sub, sizeof sub, "%.4000s/cgroup.subtree_control", cands[i]);
        if (access(cands[i], W_OK) != 0) continue;
        if (!file_has_word(sub, "memory") && write_file(sub, "+memory") != 0) continue;
        snprintf(out, n, "%.4000s", cands[i]);
        return 0;
    }
    return ftb_errf(why, whyn,
                    "no writable cgroup v2 group delegates the memory controller "
                    "(not root, or our group has processes)");
}

int ftb_cgroup_usable(char *why, size_t n)
{
    char parent[PATH_MAX];
    return pick_parent(parent, sizeof parent, why, n) == 0;
}

int ftb_cgroup_create(ftb_cgroup *cg, int64_t limit, char *err, size_t errlen)
{
    static int seq;
    memset(cg, 0, sizeof *cg);
    char parent[PATH_MAX];
    if (pick_parent(parent, sizeof parent, err, errlen) != 0) return -1;
    snprintf(cg->path, sizeof cg->path, "%.3900s/ftbench-%d-%d", parent, (int)getpid(), seq++);
    if (mkdir(cg->path, 0755) != 0)
        return ftb_errf(err, errlen, "cannot create cgroup %s: %s", cg->path, strerror(errno));
    cg->active = 1;
    char file[PATH_MAX + 32], val[32];
    snprintf(file, sizeof file, "%s/memory.max", cg->path);
    snprintf(val, sizeof val, "%lld", (long long)limit);
    if (write_file(file, val) != 0) {
        int e = errno;
        ftb_cgroup_destroy(cg);
        return ftb_errf(err, errlen, "cannot write %s: %s", file, strerror(e));
    }
    /* Without swap off the child would page instead of being killed, and
     * "fits in RAM" would silently become "fits in RAM + swap". */
    snprintf(file, sizeof file, "%s/memory.swap.max", cg->path);
    (void)write_file(file, "0");
    return 0;
}

int ftb_cgroup_enter(const ftb_cgroup *cg)
{
    char file[PATH_MAX + 32];
    snprintf(file, sizeof file, "%s/cgroup.procs", cg->path);
    return write_file(file, "0");
}

static int64_t read_key(const char *path, const char *key)
{
    char e[64];
    char *t = ftb_read_file(path, NULL, e, sizeof e);
    if (!t) return -1;
    int64_t v = -1;
    size_t kl = strlen(key);
    for (char *line = t; line && *line;) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') v = strtoll(line + kl + 1, NULL, 10);
        char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
    free(t);
    return v;
}

int64_t ftb_cgroup_oom_kills(const ftb_cgroup *cg)
{
    char file[PATH_MAX + 32];
    snprintf(file, sizeof file, "%s/memory.events", cg->path);
    return read_key(file, "oom_kill");
}

int64_t ftb_cgroup_peak(const ftb_cgroup *cg)
{
    char file[PATH_MAX + 32], e[64];
    snprintf(file, sizeof file, "%s/memory.peak", cg->path);
    char *t = ftb_read_file(file, NULL, e, sizeof e);
    if (!t) return -1;
    int64_t v = strtoll(t, NULL, 10);
    free(t);
    return v;
}

void ftb_cgroup_destroy(ftb_cgroup *cg)
{
    if (!cg->active) return;
    /* rmdir fails while the dying child is still being torn down; retry a
     * little. */
    for (int i = 0; i < 50 && rmdir(cg->path) != 0 && errno == EBUSY; i++) usleep(10000);
    cg->active = 0;
}
