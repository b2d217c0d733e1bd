/*
 * atomic_file.c — a file written whole or not at all: writing goes to
 * path.tmp (created without following links), which is fsync'd and renamed
 * over path, and the directory fsync'd.
 */
#include "atomic_file.h"
#include "checkpoint_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        /* Linux writes at most ~2 GB per call; chunking keeps it portable. */
        size_t chunk = len > ((size_t)1 << 30) ? ((size_t)1 << 30) : len;
        ssize_t n = write(fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ftb_atomic_begin(ftb_atomic_file *af, const char *path, char *err, size_t errlen)
{
    af->path = path;
    af->fd = -1;
    size_t len = strlen(path);
    af->tmp_path = malloc(len + 5);
    if (!af->tmp_path) {
        ck_error(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(af->tmp_path, path, len);
    memcpy(af->tmp_path + len, ".tmp", 5);
    /* A new file, never through a link planted at the temporary name; a
     * stale one (a crashed save) is removed first: unlink removes a link
     * itself, not what it points to. */
    af->fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (af->fd < 0 && errno == EEXIST && unlink(af->tmp_path) == 0)
        af->fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (af->fd < 0) {
        ck_error(err, errlen, "%s: cannot create: %s", af->tmp_path, strerror(errno));
        free(af->tmp_path);
        af->tmp_path = NULL;
        return -1;
    }
    return 0;
}

void ftb_atomic_abort(ftb_atomic_file *af)
{
    if (af->fd >= 0) close(af->fd);
    if (af->tmp_path) {
        unlink(af->tmp_path);
        free(af->tmp_path);
    }
    af->fd = -1;
    af->tmp_path = NULL;
}

int ftb_atomic_write(ftb_atomic_file *af, const void *buf, size_t len, char *err, size_t errlen)
{
    if (write_all(af->fd, buf, len) != 0) {
        ck_error(err, errlen, "%s: write failed: %s", af->tmp_path, strerror(errno));
        return -1;
    }
    return 0;
}

static void fsync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return;
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash == copy)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = copy;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd); /* best effort: some filesystems refuse a directory fsync */
        close(fd);
    }
    free(copy);
}

int ftb_atomic_commit(ftb_atomic_file *af, char *err, size_t errlen)
{
    if (fsync(af->fd) != 0) {
        ck_error(err, errlen, "%s: fsync failed: %s", af->tmp_path, strerror(errno));
        ftb_atomic_abort(af);
        return -1;
    }
    int fd = af->fd;
    af->fd = -1;
    if (close(fd) != 0) {
        ck_error(err, errlen, "%s: close failed: %s", af->tmp_path, strerror(errno));
        ftb_atomic_abort(af);
        return -1;
    }
    if (rename(af->tmp_path, af->path) != 0) {
        ck_error(err, errlen, "%s: cannot rename %s over it: %s", af->path, af->tmp_path, strerror(errno));
        ftb_atomic_abort(af);
        return -1;
    }
    free(af->tmp_path);
    af->tmp_path = NULL;
    fsync_parent_dir(af->path);
    return 0;
}
