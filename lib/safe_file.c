/*
 * safe_file.c — see safe_file.h.  Every file ftbench creates in a results
 * tree, a report directory or a cache goes through here, so "never write
 * through a link" is decided in one place.
 */
#include "safe_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int ftb_sf_injected_failure(const char *name)
{
    const char *s = getenv("FTBENCH_FAIL_WRITE");
    return s && *s && name && strstr(name, s) != NULL;
}

/* Checks an opened directory: ours (or root's, e.g. /tmp), and not a
 * directory another user could swap entries in under us. */
static int check_dir_owner(int fd, const char *shown, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return errf(err, errlen, "%s: %s", shown, strerror(errno));
    uid_t me = geteuid();
    if (st.st_uid != me && st.st_uid != 0) {
        errno = EPERM;
        return errf(err, errlen, "%s: owned by uid %u, not by this user (uid %u); refusing to write there", shown,
                    (unsigned)st.st_uid, (unsigned)me);
    }
    return 0;
}

/* Opens (making it if asked) one component below dirfd, without following
 * a link.  Returns the new fd, -1 with err. */
int ftb_sf_open_subdir(int dirfd, const char *name, int create, const char *shown, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            if (check_dir_owner(fd, shown, err, errlen) != 0) {
                int e = errno;
                close(fd);
                errno = e;
                return -1;
            }
            return fd;
        }
        int e = errno;
        if (e == ENOENT && create && attempt == 0) {
            if (mkdirat(dirfd, name, 0777) == 0 || errno == EEXIST) continue; /* raced: open what is there */
            e = errno;
            errf(err, errlen, "cannot create directory %s: %s", shown, strerror(e));
            errno = e;
            return -1;
        }
        struct stat st;
        if ((e == ELOOP || e == ENOTDIR) && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISLNK(st.st_mode)) {
                errf(err, errlen, "%s: is a symbolic link; refusing to write through it", shown);
                errno = ELOOP;
                return -1;
            }
            errf(err, errlen, "%s exists and is not a directory", shown);
            errno = ENOTDIR;
            return -1;
        }
        errf(err, errlen, "%s: %s", shown, strerror(e));
        errno = e;
        return -1;
    }
    errno = EAGAIN;
    return errf(err, errlen, "%s: appeared and vanished while being created", shown);
}

/* mkdir -p of base itself (the user's path: links followed), then open. */
static int open_base(const char *base, int create, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", base) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return errf(err, errlen, "%.200s...: path too long", base);
    }
    if (create) {
        for (char *p = buf + 1;; p++) {
            if (*p == '/' || *p == 0) {
                char c = *p;
                *p = 0;
                if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                    int e = errno;
                    errf(err, errlen, "cannot create directory %s: %s", buf, strerror(e));
                    errno = e;
                    return -1;
                }
                *p = c;
                if (!c) break;
            }
        }
    }
    int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOTDIR)
            errf(err, errlen, "%s exists and is not a directory (%s)", base, strerror(e));
        else
            errf(err, errlen, "%s: %s", base, strerror(e));
        errno = e;
    }
    return fd;
}

int ftb_sf_open_tree(const char *base, const char *sub, int create, char *err, size_t errlen)
{
    int fd = open_base(base && *base ? base : ".", create, err, errlen);
    if (fd < 0 || !sub || !*sub) return fd;
    char rest[PATH_MAX], shown[PATH_MAX];
    if (snprintf(rest, sizeof rest, "%s", sub) >= (int)sizeof rest) {
        close(fd);
        errno = ENAMETOOLONG;
        return errf(err, errlen, "%.200s...: path too long", sub);
    }
    size_t sl = (size_t)snprintf(shown, sizeof shown, "%s", base);
    char *save = NULL;
    for (char *comp = strtok_r(rest, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
        if (!strcmp(comp, ".")) continue;
        if (!strcmp(comp, "..")) {
            close(fd);
            errno = EINVAL;
            return errf(err, errlen, "%s: '..' in a results path", sub);
        }
        if (sl < sizeof shown) sl += (size_t)snprintf(shown + sl, sizeof shown - sl, "/%s", comp);
        int next = ftb_sf_open_subdir(fd, comp, create, shown, err, errlen);
        int e = errno;
        close(fd);
        if (next < 0) {
            errno = e;
            return -1;
        }
        fd = next;
    }
    return fd;
}

int ftb_sf_open_dir(const char *path, int create, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return errf(err, errlen, "%.200s...: path too long", path);
    }
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash) return ftb_sf_open_tree(".", buf, create, err, errlen);
    if (slash == buf) return ftb_sf_open_tree("/", buf + 1, create, err, errlen);
    *slash = 0;
    return ftb_sf_open_tree(buf, slash + 1, create, err, errlen);
}

/* A name no one else uses: pid, a counter and the time. */
static void temp_name(char *out, size_t n)
{
    static unsigned counter;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    unsigned k = ++counter;
    pthread_mutex_unlock(&mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, n, ".tmp-%d-%u-%lx", (int)getpid(), k, (unsigned long)ts.tv_nsec);
}

static int create_temp(int dirfd, char *tmp, size_t tn)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        temp_name(tmp, tn);
        int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

static int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int ftb_sf_write_atomic(int dirfd, const char *name, const void *data, size_t n, const char *shown, char *err,
                        size_t errlen)
{
    char tmp[64];
    int fd = create_temp(dirfd, tmp, sizeof tmp);
    if (fd < 0) {
        int e = errno;
        errf(err, errlen, "cannot create a file beside %s: %s", shown, strerror(e));
        errno = e;
        return -1;
    }
    int rc = 0;
    const char *what = "write";
    if (ftb_sf_injected_failure(name)) {
        errno = ENOSPC;
        rc = -1;
    } else if (write_all(fd, data, n) != 0) {
        rc = -1;
    } else if (fsync(fd) != 0 && errno != EINVAL) {
        what = "fsync";
        rc = -1;
    }
    int e = errno;
    if (close(fd) != 0 && rc == 0) {
        e = errno;
        rc = -1;
    }
    if (rc == 0 && renameat(dirfd, tmp, dirfd, name) != 0) {
        e = errno;
        what = "rename into";
        rc = -1;
    }
    if (rc != 0) {
        unlinkat(dirfd, tmp, 0);
        errf(err, errlen, "cannot %s %s: %s", what, shown, strerror(e));
        errno = e;
        return -1;
    }
    /* The rename itself reaches the disk with the directory. */
    if (fsync(dirfd) != 0 && errno != EINVAL) { /* not fatal: the data is safe, only the name may lag */
    }
    return 0;
}

int ftb_sf_open_append(int dirfd, const char *name, const char *shown, char *err, size_t errlen)
{
    int fd = openat(dirfd, name, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP)
            errf(err, errlen, "%s: is a symbolic link; refusing to write through it", shown);
        else
            errf(err, errlen, "cannot open %s for appending: %s", shown, strerror(e));
        errno = e;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
        int regular = S_ISREG(st.st_mode);
        close(fd);
        errno = EPERM;
        return errf(err, errlen, "%s: %s; refusing to write to it", shown,
                    regular ? "has other hard links" : "is not a regular file");
    }
    return fd;
}

int ftb_sf_stream_open(ftb_sf_stream *s, int dirfd, const char *name)
{
    memset(s, 0, sizeof *s);
    s->dirfd = dirfd;
    if (snprintf(s->name, sizeof s->name, "%s", name) >= (int)sizeof s->name) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = create_temp(dirfd, s->tmp, sizeof s->tmp);
    if (fd < 0) return -1;
    s->f = fdopen(fd, "w");
    if (!s->f) {
        int e = errno;
        close(fd);
        unlinkat(dirfd, s->tmp, 0);
        errno = e;
        return -1;
    }
    if (ftb_sf_injected_failure(name)) s->failed_errno = ENOSPC;
    return 0;
}

int ftb_sf_stream_commit(ftb_sf_stream *s)
{
    if (!s->f) {
        errno = EBADF;
        return -1;
    }
    int e = 0;
    if (fflush(s->f) != 0 || ferror(s->f)) e = errno ? errno : EIO;
    if (!e && s->failed_errno) e = s->failed_errno;
    if (!e && fsync(fileno(s->f)) != 0 && errno != EINVAL) e = errno;
    if (fclose(s->f) != 0 && !e) e = errno;
    s->f = NULL;
    if (!e && renameat(s->dirfd, s->tmp, s->dirfd, s->name) != 0) e = errno;
    if (e) {
        unlinkat(s->dirfd, s->tmp, 0);
        errno = e;
        return -1;
    }
    return 0;
}

void ftb_sf_stream_abort(ftb_sf_stream *s)
{
    if (s->f) fclose(s->f);
    s->f = NULL;
    if (s->tmp[0]) unlinkat(s->dirfd, s->tmp, 0);
    s->tmp[0] = 0;
}

/* ---- FILE * convenience ----------------------------------------------------
 * The FILEs opened by ftb_sf_fopen_w, with their directory and names, until
 * ftb_sf_fclose commits them.  Few at a time (a report writes one file after
 * another), so a short list. */

typedef struct open_entry {
    ftb_sf_stream s;
    struct open_entry *next;
} open_entry;

static open_entry *g_open;
static pthread_mutex_t g_open_mu = PTHREAD_MUTEX_INITIALIZER;

FILE *ftb_sf_fopen_w(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    char *slash = strrchr(buf, '/');
    const char *name = slash ? slash + 1 : buf;
    int dirfd;
    if (!slash)
        dirfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    else if (slash == buf)
        dirfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    else {
        *slash = 0;
        dirfd = ftb_sf_open_dir(buf, 0, NULL, 0);
    }
    if (dirfd < 0) return NULL;
    if (!*name) {
        close(dirfd);
        errno = EISDIR;
        return NULL;
    }
    open_entry *e = calloc(1, sizeof *e);
    if (!e || ftb_sf_stream_open(&e->s, dirfd, name) != 0) {
        int er = e ? errno : ENOMEM;
        free(e);
        close(dirfd);
        errno = er;
        return NULL;
    }
    pthread_mutex_lock(&g_open_mu);
    e->next = g_open;
    g_open = e;
    pthread_mutex_unlock(&g_open_mu);
    return e->s.f;
}

static open_entry *take_entry(FILE *f)
{
    pthread_mutex_lock(&g_open_mu);
    open_entry **pp = &g_open, *e = NULL;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->s.f == f) {
            e = *pp;
            *pp = e->next;
            break;
        }
    pthread_mutex_unlock(&g_open_mu);
    return e;
}

void ftb_sf_fabort(FILE *f)
{
    if (!f) return;
    open_entry *e = take_entry(f);
    if (!e) {
        fclose(f);
        return;
    }
    ftb_sf_stream_abort(&e->s);
    close(e->s.dirfd);
    free(e);
}

int ftb_sf_fclose(FILE *f)
{
    if (!f) {
        errno = EBADF;
        return EOF;
    }
    open_entry *e = take_entry(f);
    if (!e) return fclose(f);
    int rc = ftb_sf_stream_commit(&e->s);
    int er = errno;
    close(e->s.dirfd);
    free(e);
    errno = er;
    return rc == 0 ? 0 : EOF;
}

int ftb_sf_remove_temps(int dirfd, int pid)
{
    char prefix[32];
    int pl = snprintf(prefix, sizeof prefix, ".tmp-%d-", pid);
    int fd = dup(dirfd);
    if (fd < 0) return 0;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return 0;
    }
    rewinddir(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, prefix, (size_t)pl) && unlinkat(dirfd, e->d_name, 0) == 0) n++;
    closedir(d);
    return n;
}
