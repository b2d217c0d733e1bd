/*
 * rundir.c — see rundir.h and docs/HARNESS.md ("The run directory").
 */
#include "rundir.h"
#include "safe_file.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int ftb_rundir_open(const char *run_dir, int create, char *err, size_t errlen)
{
    /* <out>/<device>/<run-id>: the last two components are ftbench's own
     * and are never followed through a link; <out> is the user's. */
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", run_dir) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return ftb_errf(err, errlen, "%.200s...: path too long", run_dir);
    }
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    char *cut = NULL;
    int seen = 0;
    for (char *p = buf + n; p > buf; p--)
        if (p[-1] == '/' && ++seen == 2) {
            cut = p - 1;
            break;
        }
    if (!cut) return ftb_sf_open_tree(".", buf, create, err, errlen);
    if (cut == buf) return ftb_sf_open_tree("/", buf + 1, create, err, errlen);
    *cut = 0;
    return ftb_sf_open_tree(buf, cut + 1, create, err, errlen);
}

/* ---- the lock ------------------------------------------------------------ */

static int g_lock_fd = -1;
static int g_independent; /* --independent: cell files only (ftb_rundir_begin) */

int ftb_rundir_lock_fd(void) { return g_lock_fd; }

void ftb_rundir_unlock(void)
{
    if (g_lock_fd >= 0) close(g_lock_fd);
    g_lock_fd = -1;
}

/* "pid 1234 (ftbench sweep)" from the lock file, or "" */
static void read_holder(int fd, char *out, size_t n)
{
    char buf[128];
    ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
    out[0] = 0;
    if (r <= 0) return;
    buf[r] = 0;
    buf[strcspn(buf, "\n")] = 0;
    snprintf(out, n, "%s", buf);
}

int ftb_rundir_lock(const char *run_dir, const char *cmd, int wait, char *err, size_t errlen)
{
    if (g_lock_fd >= 0) return 0;
    int dfd = ftb_rundir_open(run_dir, 1, err, errlen);
    if (dfd < 0) return -1;
    char shown[PATH_MAX + 16];
    snprintf(shown, sizeof shown, "%.4000s/%s", run_dir, FTB_RUNDIR_LOCK);
    int fd = ftb_sf_open_append(dfd, FTB_RUNDIR_LOCK, shown, err, errlen);
    close(dfd);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) {
            int e = errno;
            close(fd);
            return ftb_errf(err, errlen, "cannot lock %s: %s", shown, strerror(e));
        }
        char holder[128];
        read_holder(fd, holder, sizeof holder);
        if (!wait) {
            close(fd);
            ftb_errf(err, errlen,
                     "%s is being written by another ftbench (%s); wait for it to end, give --wait-lock, or use "
                     "another --run-id",
                     run_dir, holder[0] ? holder : "pid unknown");
            return -2;
        }
        fprintf(stderr, "ftbench %s: %s is being written by another ftbench (%s); waiting for it (--wait-lock)\n", cmd,
                run_dir, holder[0] ? holder : "pid unknown");
        while (flock(fd, LOCK_EX) != 0)
            if (errno != EINTR) {
                int e = errno;
                close(fd);
                return ftb_errf(err, errlen, "cannot lock %s: %s", shown, strerror(e));
            }
    }
    /* Ours: say who holds it, for the next one to name. */
    char line[128];
    int len = snprintf(line, sizeof line, "pid %d, ftbench %s\n", (int)getpid(), cmd);
    if (ftruncate(fd, 0) != 0 || write(fd, line, (size_t)len) != len) { /* only informative */
    }
    g_lock_fd = fd;
    return 0;
}

/* ---- records ------------------------------------------------------------- */

int ftb_rundir_write_record(const char *run_dir, const char *key, json_t *rec, char *err, size_t errlen)
{
    char *line = json_dumps(rec, JSON_COMPACT);
    if (!line) return ftb_errf(err, errlen, "cannot serialise the record of %s", key);
    int rc = -1, dfd = -1, cfd = -1, afd = -1;
    char name[300], shown[PATH_MAX + 320];
    if (snprintf(name, sizeof name, "%s.json", key) >= (int)sizeof name) {
        ftb_errf(err, errlen, "cell key too long for a file name: %.100s...", key);
        goto out;
    }
    dfd = ftb_rundir_open(run_dir, 1, err, errlen);
    if (dfd < 0) goto out;
    snprintf(shown, sizeof shown, "%.4000s/%s", run_dir, FTB_RUNDIR_CELLS);
    cfd = ftb_sf_open_subdir(dfd, FTB_RUNDIR_CELLS, 1, shown, err, errlen);
    if (cfd < 0) goto out;
    size_t n = strlen(line);
    line[n] = '\n'; /* json_dumps leaves room: the NUL becomes the newline */
    snprintf(shown, sizeof shown, "%.4000s/%s/%s", run_dir, FTB_RUNDIR_CELLS, name);
    int wrc = ftb_sf_write_atomic(cfd, name, line, n + 1, shown, err, errlen);
    line[n] = 0;
    if (wrc != 0) {
        char e2[FTB_ERR_LEN];
        snprintf(e2, sizeof e2, "%s; the record was not kept", err);
        snprintf(err, errlen, "%s", e2);
        goto out;
    }
    if (g_independent) {
        rc = 0; /* results.jsonl is the local writer's, merged later */
        goto out;
    }
    snprintf(shown, sizeof shown, "%.4000s/%s", run_dir, FTB_RUNDIR_RESULTS);
    afd = ftb_sf_open_append(dfd, FTB_RUNDIR_RESULTS, shown, err, errlen);
    if (afd < 0 || ftb_append_line_fd(afd, shown, line, err, errlen) != 0) {
        /* Not kept after all: cells/ and results.jsonl agree on that. */
        unlinkat(cfd, name, 0);
        goto out;
    }
    rc = 0;
out:
    if (afd >= 0) close(afd);
    if (cfd >= 0) close(cfd);
    if (dfd >= 0) close(dfd);
    free(line);
    return rc;
}

static void recorded_add(ftb_recorded *out, int *alloc, const char *key, json_t *j)
{
    if (out->n == *alloc) {
        *alloc = *alloc ? *alloc * 2 : 32;
        out->keys = realloc(out->keys, (size_t)*alloc * sizeof *out->keys);
        out->records = realloc(out->records, (size_t)*alloc * sizeof *out->records);
    }
    out->keys[out->n] = strdup(key);
    out->records[out->n] = j;
    out->n++;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Reads one cell file (a small regular file: a record is a few kB) through
 * dirfd without following a link.  NULL if it is not a record. */
static json_t *read_cell_file(int cfd, const char *name)
{
    int fd = openat(cfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return NULL;
    struct stat st;
    json_t *j = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && st.st_size < (64 << 20)) {
        char *buf = malloc((size_t)st.st_size + 1);
        ssize_t got = buf ? pread(fd, buf, (size_t)st.st_size, 0) : -1;
        if (got == st.st_size) {
            buf[got] = 0;
            j = json_loads(buf, 0, NULL);
            if (j && !json_is_string(json_object_get(j, "cell"))) {
                json_decref(j);
                j = NULL;
            }
        }
        free(buf);
    }
    close(fd);
    return j;
}

int ftb_rundir_load(const char *run_dir, ftb_recorded *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(run_dir, &st) != 0 && errno == ENOENT) return 0;
    int dfd = ftb_rundir_open(run_dir, 0, err, errlen);
    if (dfd < 0) return errno == ENOENT ? 0 : -1;
    int cfd = openat(dfd, FTB_RUNDIR_CELLS, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (cfd < 0) {
        int e = errno;
        close(dfd);
        if (e != ENOENT)
            return ftb_errf(err, errlen, "%s/%s: %s", run_dir, FTB_RUNDIR_CELLS,
                            e == ELOOP || e == ENOTDIR ? "is a symbolic link or not a directory" : strerror(e));
        /* A run directory from before cells/: its results.jsonl. */
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%.4000s/%s", run_dir, FTB_RUNDIR_RESULTS);
        struct stat ls;
        if (lstat(path, &ls) == 0 && !S_ISREG(ls.st_mode))
            return ftb_errf(err, errlen, "%s: not a regular file; refusing to read it", path);
        if (ftb_recorded_load(path, out) != 0)
            return ftb_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return 0;
    }
    close(dfd);
    DIR *d = fdopendir(cfd);
    if (!d) {
        int e = errno;
        close(cfd);
        return ftb_errf(err, errlen, "%s/%s: %s", run_dir, FTB_RUNDIR_CELLS, strerror(e));
    }
    /* Sorted by name: the same order whoever wrote them. */
    char **names = NULL;
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l < 6 || strcmp(e->d_name + l - 5, ".json")) continue;
        names = realloc(names, (size_t)(nn + 1) * sizeof *names);
        names[nn++] = strdup(e->d_name);
    }
    if (nn) qsort(names, (size_t)nn, sizeof *names, cmp_str);
    int alloc = 0;
    for (int i = 0; i < nn; i++) {
        json_t *j = read_cell_file(dirfd(d), names[i]);
        /* The file is named after the record's cell; anything else is not
         * this run's record of that cell. */
        const char *key = j ? json_string_value(json_object_get(j, "cell")) : NULL;
        if (key && strlen(key) + 5 == strlen(names[i]) && !strncmp(key, names[i], strlen(key)))
            recorded_add(out, &alloc, key, j);
        else
            json_decref(j);
        free(names[i]);
    }
    free(names);
    closedir(d);
    return 0;
}

int ftb_rundir_sync(const char *run_dir, int *added, char *err, size_t errlen)
{
    *added = 0;
    ftb_recorded cells;
    if (ftb_rundir_load(run_dir, &cells, err, errlen) != 0) return -1;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%.4000s/%s", run_dir, FTB_RUNDIR_RESULTS);
    int dfd = -1, afd = -1, rc = 0;
    /* Only with cells/: a results.jsonl alone is its own truth. */
    char cpath[PATH_MAX + 32];
    snprintf(cpath, sizeof cpath, "%.4000s/%s", run_dir, FTB_RUNDIR_CELLS);
    struct stat st;
    if (cells.n == 0 || lstat(cpath, &st) != 0 || !S_ISDIR(st.st_mode)) goto out;
    ftb_recorded lines;
    ftb_recorded_load(path, &lines);
    for (int i = 0; i < cells.n; i++) {
        json_t *last = ftb_recorded_find(&lines, cells.keys[i]);
        if (last && json_equal(last, cells.records[i])) continue;
        if (afd < 0) {
            dfd = ftb_rundir_open(run_dir, 0, err, errlen);
            if (dfd < 0) {
                rc = -1;
                break;
            }
            afd = ftb_sf_open_append(dfd, FTB_RUNDIR_RESULTS, path, err, errlen);
            if (afd < 0) {
                rc = -1;
                break;
            }
        }
        char *line = json_dumps(cells.records[i], JSON_COMPACT);
        int wrc = line ? ftb_append_line_fd(afd, path, line, err, errlen) : -1;
        free(line);
        if (wrc != 0) {
            rc = -1;
            break;
        }
        (*added)++;
    }
    ftb_recorded_free(&lines);
out:
    if (afd >= 0) close(afd);
    if (dfd >= 0) close(dfd);
    ftb_recorded_free(&cells);
    return rc;
}

int ftb_record_is_measurement(json_t *rec)
{
    const char *o = json_string_value(json_object_get(rec, "outcome"));
    if (!o) return 0;
    static const char *const kept[] = { "ok", "over_budget", "oom", "skipped", "crashed", NULL };
    for (int i = 0; kept[i]; i++)
        if (!strcmp(o, kept[i])) return 1;
    return 0;
}

ftb_resume ftb_resume_check(const ftb_cell *c, const ftb_recorded *done, int force, char *msg, size_t n)
{
    if (msg && n) msg[0] = 0;
    json_t *prev = ftb_recorded_find(done, c->key);
    if (force || !prev || !ftb_record_is_measurement(prev)) return FTB_RESUME_RUN;
    return ftb_cell_settings_differ(c, prev, msg, n) ? FTB_RESUME_MISMATCH : FTB_RESUME_KEEP;
}

int ftb_rundir_begin(const char *cmd, const char *run_dir, int wait_lock, int independent, int quiet,
                     ftb_recorded *done)
{
    char err[FTB_ERR_LEN + PATH_MAX];
    memset(done, 0, sizeof *done);
    g_independent = independent;
    if (strlen(run_dir) > PATH_MAX - FTB_RUNDIR_NAME_ROOM) {
        fprintf(stderr, "ftbench %s: --out: the run directory %.60s... would be %zu characters long; at most %d fit\n",
                cmd, run_dir, strlen(run_dir), PATH_MAX - FTB_RUNDIR_NAME_ROOM);
        return 2;
    }
    if (independent) {
        /* One of many writers (a Slurm array task): no lock, no
         * results.jsonl; only its own cell files (docs/HARNESS.md). */
        if (ftb_rundir_load(run_dir, done, err, sizeof err) != 0) {
            fprintf(stderr, "ftbench %s: %s\n", cmd, err);
            return 2;
        }
        return 0;
    }
    int lr = ftb_rundir_lock(run_dir, cmd, wait_lock, err, sizeof err);
    if (lr != 0) {
        fprintf(stderr, "ftbench %s: %s\n", cmd, err);
        return lr == -2 ? 2 : 1;
    }
    int added = 0;
    if (ftb_rundir_sync(run_dir, &added, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench %s: %s\n", cmd, err);
        return 1;
    }
    if (added && !quiet)
        fprintf(stderr, "ftbench %s: %d cell record%s written by other writers merged into %s/%s\n", cmd, added,
                added == 1 ? "" : "s", run_dir, FTB_RUNDIR_RESULTS);
    if (ftb_rundir_load(run_dir, done, err, sizeof err) != 0) {
        fprintf(stderr, "ftbench %s: %s\n", cmd, err);
        return 2;
    }
    return 0;
}

void ftb_resume_warn_git(const char *cmd, json_t *const *records, int n)
{
    const char *now = ftb_git_revision(), *other = NULL;
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *g = json_string_value(json_object_get(records[i], "git_rev"));
        if (g && strcmp(g, now)) {
            k++;
            other = g;
        }
    }
    if (k)
        fprintf(stderr,
                "ftbench %s: warning: %d recorded cell%s kept from another build (git %s%s; this is %s): compare "
                "with care, or --force to measure again\n",
                cmd, k, k == 1 ? " was" : "s were", other, k > 1 ? " and others" : "", now);
}
