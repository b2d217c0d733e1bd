/* util.c — see util.h. */
#include "util.h"
#include "input_file.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ftb_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int ftb_parse_long(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s || isspace((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int ftb_parse_double(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int ftb_parse_size(const char *s, int64_t *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0) return -1;
    double mul = 1;
    switch (*end) {
    case 0: break;
    case 'k':
    case 'K':
        mul = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1024.0 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1024.0 * 1024 * 1024;
        end++;
        break;
    default: return -1;
    }
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    if (v * mul >= 9.2e18) /* beyond int64: converting would be undefined */
        return -1;
    *out = (int64_t)(v * mul);
    return 0;
}

char *ftb_trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

const char *ftb_exe_dir(void)
{
    static char dir[PATH_MAX];
    static int done;
    if (!done) {
        ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
        if (n > 0) {
            dir[n] = 0;
            char *slash = strrchr(dir, '/');
            if (slash) *slash = 0;
        } else {
            dir[0] = 0;
        }
        done = 1;
    }
    return dir;
}

int ftb_is_dir(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int ftb_is_file(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int ftb_mkdirs(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return ftb_errf(err, errlen, "%.200s...: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return ftb_errf(err, errlen, "%s: cannot create directory: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    if (!ftb_is_dir(path)) return ftb_errf(err, errlen, "%s: not a directory", path);
    return 0;
}

char *ftb_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t at = a;
    if (a && dir[a - 1] != '/') p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

char *ftb_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    /* Regular files only (a FIFO or /dev/zero would never end), and no
     * whole-file read of ours needs anywhere near 1 GiB. */
    return ftb_input_read(path, "file ftbench reads whole", (size_t)1 << 30, len, err, errlen);
}

uint64_t ftb_fnv1a(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int ftb_append_line(const char *path, const char *line, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (errno == ELOOP) return ftb_errf(err, errlen, "%s: is a symbolic link; refusing to write through it", path);
        return ftb_errf(err, errlen, "cannot open %s for appending: %s", path, strerror(errno));
    }
    int rc = ftb_append_line_fd(fd, path, line, err, errlen);
    close(fd);
    return rc;
}

int ftb_append_line_fd(int fd, const char *path, const char *line, char *err, size_t errlen)
{
    /* Repair a torn tail: the previous writer died mid-line. */
    off_t end = lseek(fd, 0, SEEK_END);
    if (end > 0) {
        char last = '\n';
        if (pread(fd, &last, 1, end - 1) == 1 && last != '\n') {
            if (write(fd, "\n", 1) != 1) return ftb_errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        }
    }
    end = lseek(fd, 0, SEEK_END); /* the whole lines end here */
    size_t n = strlen(line);
    char *buf = malloc(n + 2);
    if (!buf) return ftb_errf(err, errlen, "out of memory");
    memcpy(buf, line, n);
    buf[n++] = '\n';
    /* One write() for the whole record: O_APPEND makes it land at the end
     * in one piece, so readers see either nothing or the whole line.
     * Past a file size limit (ulimit -f) the kernel would end the process
     * with SIGXFSZ: ignored while writing, so that it is EFBIG, an error. */
    struct sigaction ignore = { .sa_handler = SIG_IGN }, before;
    sigemptyset(&ignore.sa_mask);
    int restore = sigaction(SIGXFSZ, &ignore, &before) == 0;
    ssize_t w = write(fd, buf, n);
    int saved = errno, partial = w > 0;
    if (w >= 0 && w < (ssize_t)n) { /* short: the rest says why (ENOSPC, EFBIG) */
        ssize_t w2 = write(fd, buf + w, n - (size_t)w);
        saved = errno;
        w = w2 < 0 ? -1 : w + w2;
    }
    if (restore) sigaction(SIGXFSZ, &before, NULL);
    free(buf);
    if (w != (ssize_t)n || fsync(fd) != 0) {
        /* Disk full (ENOSPC, or EFBIG past a file size limit) or an I/O
         * error: the record is not kept.  A short write is cut off again so
         * the file ends with whole lines (should that fail too, the next
         * append repairs the tail, and readers skip lines that do not
         * parse).  fsync failing says the bytes may never reach the disk:
         * taken back the same way.  EINVAL: this file cannot be synced. */
        const char *what = w != (ssize_t)n ? "write" : "fsync";
        if (w == (ssize_t)n) saved = errno;
        if (w == (ssize_t)n && saved == EINVAL) return 0;
        int cut = !partial || (end >= 0 && ftruncate(fd, end) == 0);
        errno = saved;
        return ftb_errf(err, errlen, "cannot %s %s: %s; the record was not kept%s", what, path,
                        w < 0 || w == (ssize_t)n ? strerror(saved) : "short write",
                        cut ? "" : " (and its partial line could not be removed)");
    }
    return 0;
}

void ftb_utc_timestamp(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

const char *ftb_git_revision(void)
{
    static char rev[64];
    if (rev[0]) return rev;
    snprintf(rev, sizeof rev, "unknown");
    /* Given by whoever shipped this executable out of its tree (sweep
     * --remote runs it on a device, where no repository is). */
    const char *given = getenv("FTBENCH_GIT_REVISION");
    if (given && *given && strlen(given) < sizeof rev) {
        snprintf(rev, sizeof rev, "%s", given);
        return rev;
    }
    /* The revision of the tree the executable sits in (build/ is inside the
     * repository); run from anywhere. */
    const char *dir = ftb_exe_dir();
    char cmd[PATH_MAX + 128];
    snprintf(cmd, sizeof cmd, "git -C '%s' rev-parse --short HEAD 2>/dev/null", dir[0] ? dir : ".");
    if (strchr(dir, '\'')) return rev;
    FILE *p = popen(cmd, "r");
    if (!p) return rev;
    char line[64];
    if (fgets(line, sizeof line, p)) {
        char *t = ftb_trim(line);
        if (*t) snprintf(rev, sizeof rev, "%s", t);
    }
    pclose(p);
    return rev;
}

const char *ftb_hostname(void)
{
    static char name[256];
    if (!name[0] && gethostname(name, sizeof name - 1) != 0) snprintf(name, sizeof name, "unknown");
    return name;
}

const char *ftb_signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    case SIGPIPE: return "SIGPIPE";
    case SIGTRAP: return "SIGTRAP";
    case SIGSYS: return "SIGSYS";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    case SIGQUIT: return "SIGQUIT";
    case SIGALRM: return "SIGALRM";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "SIG?";
    }
}

const char *ftb_format_bytes(int64_t bytes, char *buf, size_t n)
{
    const double kib = 1024.0, mib = kib * 1024.0;
    double b = (double)bytes;
    if (bytes < 1024)
        snprintf(buf, n, "%lld B", (long long)bytes);
    else if (b < mib)
        snprintf(buf, n, bytes % 1024 ? "%.1f KiB" : "%.0f KiB", b / kib);
    else if (b < 100 * mib && bytes % (1 << 20))
        snprintf(buf, n, "%.1f MiB", b / mib);
    else
        snprintf(buf, n, "%.0f MiB", b / mib);
    return buf;
}

void ftb_format_duration(double sec, char *buf, size_t n)
{
    if (!(sec >= 0) || sec > 1e7) {
        snprintf(buf, n, "?");
    } else if (sec < 60) {
        snprintf(buf, n, "%.1fs", sec);
    } else if (sec < 3600) {
        int s = (int)(sec + 0.5);
        snprintf(buf, n, "%dm%02ds", s / 60, s % 60);
    } else {
        int m = (int)(sec / 60 + 0.5);
        snprintf(buf, n, "%dh%02dm", m / 60, m % 60);
    }
}

/* Reads "Key:   123 kB" from a /proc status-style file. */
static int64_t proc_kb_field(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    size_t kl = strlen(key);
    int64_t v = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            long long kb;
            if (sscanf(line + kl + 1, "%lld", &kb) == 1) v = (int64_t)kb * 1024;
            break;
        }
    }
    fclose(f);
    return v;
}

int64_t ftb_self_vmhwm(void) { return proc_kb_field("/proc/self/status", "VmHWM"); }
int64_t ftb_self_vmrss(void) { return proc_kb_field("/proc/self/status", "VmRSS"); }

int64_t ftb_pid_rss(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    long long size, res;
    if (sscanf(buf, "%lld %lld", &size, &res) != 2) return -1;
    return (int64_t)res * sysconf(_SC_PAGESIZE);
}

int64_t ftb_meminfo(const char *key) { return proc_kb_field("/proc/meminfo", key); }
