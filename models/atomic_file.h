/*
 * atomic_file.h — a file that readers see whole or not at all (core-private).
 *
 * Writing goes to path.tmp; ftb_atomic_commit fsyncs it, renames it over
 * path and fsyncs the directory, so readers see the old file or the whole
 * new one, never a torn one — even after a crash.
 */
#ifndef FTB_ATOMIC_FILE_H
#define FTB_ATOMIC_FILE_H

#include <stddef.h>

typedef struct {
    const char *path;
    char *tmp_path;
    int fd;
} ftb_atomic_file;

/* Creates path.tmp (never through a link; a stale one is replaced). */
int ftb_atomic_begin(ftb_atomic_file *af, const char *path, char *err, size_t errlen);
int ftb_atomic_write(ftb_atomic_file *af, const void *buf, size_t len, char *err, size_t errlen);
/* Renames the temporary over path; on failure it is removed. */
int ftb_atomic_commit(ftb_atomic_file *af, char *err, size_t errlen);
/* Removes the temporary (path is left as it was). */
void ftb_atomic_abort(ftb_atomic_file *af);

#endif
