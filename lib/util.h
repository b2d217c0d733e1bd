/*
 * util.h — small helpers shared by the harness: error strings, paths,
 * hashing, number parsing, JSON Lines appends.  Nothing here knows about
 * methods or models.
 */
#ifndef FTB_HARNESS_UTIL_H
#define FTB_HARNESS_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

/* printf into err (NULL-safe, always terminated); returns -1 so callers can
 * write `return ftb_errf(err, n, "...")`. */
int ftb_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Strict number parsing: whole string, no junk, range checked.  0 or -1. */
int ftb_parse_long(const char *s, long lo, long hi, long *out);
int ftb_parse_double(const char *s, double *out);
/* "1.5G", "512M", "300k", "12345" → bytes; 0 or -1. */
int ftb_parse_size(const char *s, int64_t *out);

/* Trims leading and trailing whitespace in place, returns the start. */
char *ftb_trim(char *s);

/* Directory holding the running executable ("" if unknown). */
const char *ftb_exe_dir(void);
int ftb_is_dir(const char *path);
int ftb_is_file(const char *path);
/* mkdir -p (new directories 0777 less the umask); 0, or -1 with err
 * "PATH: cannot create directory: ..." / "PATH: not a directory". */
int ftb_mkdirs(const char *path, char *err, size_t errlen);
/* dir + "/" + name (no second '/' when dir ends with one), malloc'd; NULL
 * when out of memory. */
char *ftb_path_join(const char *dir, const char *name);
/* Reads a whole file (NUL-terminated); NULL with err filled. */
char *ftb_read_file(const char *path, size_t *len, char *err, size_t errlen);

/* 64-bit FNV-1a, for run ids and option hashes (stable across builds). */
uint64_t ftb_fnv1a(const void *data, size_t n, uint64_t h);
#define FTB_FNV_INIT 1469598103934665603ULL

/* Appends one line (a trailing '\n' is added) with a single write() on an
 * O_APPEND descriptor, then fsync, so a killed writer never leaves half a
 * record.  If the file does not end with '\n' (a torn line from a crash
 * during an earlier write), a newline is written first so the new record
 * starts on its own line. */
int ftb_append_line(const char *path, const char *line, char *err, size_t errlen);
/* The same on an open O_APPEND descriptor (path: for messages). */
int ftb_append_line_fd(int fd, const char *path, const char *line, char *err, size_t errlen);

/* Current UTC time as "2025-01-31T12:34:56Z". */
void ftb_utc_timestamp(char *buf, size_t n);
/* Short git revision of the source tree the executable was built from, or
 * "unknown".  Computed once. */
const char *ftb_git_revision(void);
const char *ftb_hostname(void);

/* Signal name ("SIGSEGV"); "SIG?" when unknown. */
const char *ftb_signal_name(int sig);

/* A size for people: "1 B", "300 KiB", "7.9 MiB", "3482 MiB" (MiB from
 * 1 MiB up, as every figure of the harness; never "0 MiB" for a size
 * that is not 0).  Returns buf. */
const char *ftb_format_bytes(int64_t bytes, char *buf, size_t n);

/* Human-friendly duration "1m05s" / "12.3s". */
void ftb_format_duration(double sec, char *buf, size_t n);

/* Resident set sizes of this process from /proc/self/status (bytes, -1 if
 * unreadable). */
int64_t ftb_self_vmhwm(void);
int64_t ftb_self_vmrss(void);
/* VmRSS of another process (bytes) or -1. */
int64_t ftb_pid_rss(int pid);
/* MemTotal / MemAvailable from /proc/meminfo in bytes, -1 if unknown. */
int64_t ftb_meminfo(const char *key);

#endif
