/* input_file.c — see input_file.h. */
#include "input_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        for (char *c = err; *c; c++)
            if ((unsigned char)*c < 0x20) *c = '?';
    }
    return -1;
}

static const char *kind_of(mode_t m)
{
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a file";
}

int ftb_input_open(const char *path, char *err, size_t errlen)
{
    /* O_NONBLOCK: opening a FIFO with no writer would otherwise wait
     * forever; it is cleared again for a regular file, where it means
     * nothing anyway. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fail(err, errlen, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, errlen, "%s: is %s, not a regular file", path, kind_of(st.st_mode));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

FILE *ftb_input_fopen(const char *path, char *err, size_t errlen)
{
    int fd = ftb_input_open(path, err, errlen);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "r");
    if (!f) {
        int e = errno;
        close(fd);
        fail(err, errlen, "%s: cannot open: %s", path, strerror(e));
    }
    return f;
}

char *ftb_input_read(const char *path, const char *what, size_t max_bytes, size_t *len, char *err, size_t errlen)
{
    int fd = ftb_input_open(path, err, errlen);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0) {
        close(fd);
        fail(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        return NULL;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        fail(err, errlen, "%s: %lld bytes, more than the %zu MiB a %s may have", path, (long long)st.st_size,
             max_bytes >> 20, what);
        return NULL;
    }
    /* Read to the end rather than trusting st_size (a file may grow, /proc
     * reports 0), still within the cap. */
    size_t cap = (size_t)st.st_size + 1, n = 0;
    if (cap < 4096) cap = 4096;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            close(fd);
            fail(err, errlen, "%s: out of memory", path);
            return NULL;
        }
        if (n + 1 == cap) {
            if (n >= max_bytes) {
                free(buf);
                close(fd);
                fail(err, errlen, "%s: more than the %zu MiB a %s may have", path, max_bytes >> 20, what);
                return NULL;
            }
            size_t grown = cap * 2 > max_bytes + 2 ? max_bytes + 2 : cap * 2;
            char *g = realloc(buf, grown);
            if (!g) free(buf);
            buf = g;
            cap = grown;
            continue;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            fail(err, errlen, "%s: read error: %s", path, strerror(e));
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (n > max_bytes) {
        free(buf);
        fail(err, errlen, "%s: more than the %zu MiB a %s may have", path, max_bytes >> 20, what);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}
