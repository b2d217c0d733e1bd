/*
 * safe_file.h — creating and writing files without following links.
 *
 * Results, reports and caches are written into directories that other
 * users may be able to write to (a shared --out, /tmp).  Anything opened
 * there by path could be a symbolic link planted to make ftbench overwrite
 * a file it can write and the planter cannot.  These helpers:
 *
 *  - open directories component by component with
 *    O_DIRECTORY | O_NOFOLLOW (openat), so no link in the part of the tree
 *    ftbench makes is followed;
 *  - create files with O_CREAT | O_EXCL | O_NOFOLLOW relative to such a
 *    directory fd (a temporary name, renamed into place: a link at the final
 *    name is replaced, never written through);
 *  - open files for appending with O_NOFOLLOW and refuse anything that is
 *    not a regular file with a single link (a hard link to someone else's
 *    file is refused as well).
 *
 * Fault injection (tests): FTBENCH_FAIL_WRITE=SUBSTRING makes every write of
 * a file whose name contains SUBSTRING fail with ENOSPC, as a full disk
 * would (docs/RELIABILITY.md).
 */
#ifndef FTB_SAFE_FILE_H
#define FTB_SAFE_FILE_H

#include <stdio.h>
#include <sys/types.h>

/* Opens the directory `sub` below `base`: `base` is the user's own path
 * (opened as given, links followed: the user chose it); every component of
 * `sub` is opened with O_NOFOLLOW and, if `create` is set, made (0777 minus
 * umask) when missing.  A component that is a symbolic link, not a
 * directory, or owned by another user (when we are not that user) is
 * refused.  `sub` may be NULL or "".  Returns a directory fd (O_CLOEXEC) or
 * -1 with err ("<path>: is a symbolic link; refusing to write through it"). */
int ftb_sf_open_tree(const char *base, const char *sub, int create, char *err, size_t errlen);

/* One directory `name` directly below dirfd, with the same checks (made if
 * `create`); `shown` names it in messages. */
int ftb_sf_open_subdir(int dirfd, const char *name, int create, const char *shown, char *err, size_t errlen);

/* The same for one path: its parent is opened as given, its last component
 * with O_NOFOLLOW (made if `create`).  For directories a report or cache
 * writes into. */
int ftb_sf_open_dir(const char *path, int create, char *err, size_t errlen);

/* Writes n bytes to <dirfd>/<name> atomically: a unique temporary file in
 * the same directory (O_EXCL | O_NOFOLLOW, mode 0644 minus umask), write,
 * fsync, rename onto name, fsync of the directory.  On failure the
 * temporary is removed, errno tells why (ENOSPC, EIO, ...) and err says it
 * with `shown` (the path to name in messages). */
int ftb_sf_write_atomic(int dirfd, const char *name, const void *data, size_t n, const char *shown, char *err,
                        size_t errlen);

/* Opens <dirfd>/<name> for appending (created 0644 if missing), without
 * following a link; refuses a non-regular file or one with several links.
 * Returns an fd (O_CLOEXEC) or -1 with err. */
int ftb_sf_open_append(int dirfd, const char *name, const char *shown, char *err, size_t errlen);

/* Streaming writes to a temporary file renamed into place on commit, for
 * files too large to build in memory (timelines, reports). */
typedef struct {
    FILE *f;
    int dirfd; /* borrowed */
    char tmp[64];
    char name[256];
    int failed_errno; /* injected failure: reported at commit */
} ftb_sf_stream;

/* 0, or -1 with errno (ENAMETOOLONG, EEXIST never: names are unique). */
int ftb_sf_stream_open(ftb_sf_stream *s, int dirfd, const char *name);
/* Flushes, fsyncs, closes and renames onto the name.  0, or -1 with errno
 * (the temporary is removed). */
int ftb_sf_stream_commit(ftb_sf_stream *s);
/* Closes and removes the temporary. */
void ftb_sf_stream_abort(ftb_sf_stream *s);

/* fopen(path, "w") that does not write through a link: the file is
 * written under a temporary name in path's directory (whose last component
 * must not be a link) and renamed onto path by ftb_sf_fclose.  NULL with
 * errno set on failure. */
FILE *ftb_sf_fopen_w(const char *path);
/* Commits a FILE from ftb_sf_fopen_w (or fclose()s any other FILE).
 * 0, or EOF with errno (nothing replaced). */
int ftb_sf_fclose(FILE *f);

/* Closes a FILE from ftb_sf_fopen_w and removes its temporary: path is
 * left as it was. */
void ftb_sf_fabort(FILE *f);

/* Removes the temporaries process `pid` left in dirfd (it was killed while
 * writing one).  Returns how many. */
int ftb_sf_remove_temps(int dirfd, int pid);

/* 1 if writes to files named like `name` are to fail (FTBENCH_FAIL_WRITE). */
int ftb_sf_injected_failure(const char *name);

#endif
