/*
 * fuzz_common.h — helpers shared by the fuzz targets of tests/fuzz/.
 *
 * Every target is one file, tests/fuzz/fuzz_<name>.c, holding
 *
 *     int fuzz_<name>_one(const uint8_t *data, size_t size);
 *
 * which feeds one input to the parser and returns 1 when the parser
 * accepted it, 0 when it rejected it (with an error message), and aborts on
 * a broken promise of the parser (an accepted file whose table points
 * outside it, a rejection without a message, ...).  The same file is built
 * two ways:
 *
 *   - as a libFuzzer target (the fuzz Makefile block defines FTB_FUZZ_MAIN,
 *     and FTB_FUZZ_ENTRY below becomes LLVMFuzzerTestOneInput);
 *   - #included by tests/test_fuzz_regressions.c, which replays the seed
 *     corpus and every saved crash through the same function under
 *     `make test` (and `make test SAN=1`).
 *
 * So everything here is `static inline` (no unused-function warnings when
 * several targets are included in one translation unit), and each target's
 * own helpers carry its name as a prefix.
 *
 * File-based parsers get their input through a scratch directory: one per
 * process, under $FTB_FUZZ_TMPDIR, else /dev/shm, else $TMPDIR or /tmp,
 * emptied before every input and removed at exit (or, after a crash, by
 * the next process that makes one there).
 */
#ifndef FTB_FUZZ_COMMON_H
#define FTB_FUZZ_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The targets' entry points (one per tests/fuzz/fuzz_<name>.c). */
int fuzz_checkpoint_one(const uint8_t *data, size_t size);
int fuzz_cli_one(const uint8_t *data, size_t size);
int fuzz_config_one(const uint8_t *data, size_t size);
int fuzz_dataset_bin_one(const uint8_t *data, size_t size);
int fuzz_dataset_jsonl_one(const uint8_t *data, size_t size);
int fuzz_instr_jsonl_one(const uint8_t *data, size_t size);
int fuzz_profile_one(const uint8_t *data, size_t size);
int fuzz_report_one(const uint8_t *data, size_t size);
int fuzz_safetensors_one(const uint8_t *data, size_t size);
int fuzz_tokenizer_one(const uint8_t *data, size_t size);

#ifdef FTB_FUZZ_MAIN
/* The fuzz build compiles UBSan in recover mode (so that a known, reported
 * bug can be suppressed: tests/fuzz/known_open.ubsan); every other report
 * must still stop the run, and libFuzzer then saves the input. */
#define FTB_FUZZ_ENTRY(fn)                                                                     \
    const char *__ubsan_default_options(void);                                                 \
    const char *__ubsan_default_options(void) { return "halt_on_error=1:print_stacktrace=1"; } \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                              \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                               \
    {                                                                                          \
        (void)fn(data, size);                                                                  \
        return 0;                                                                              \
    }
#else
#define FTB_FUZZ_ENTRY(fn)
#endif

/* A broken promise: print why and abort, so that libFuzzer saves the input
 * and the replay test fails. */
#define FZ_CHECK(cond, ...)                                                                \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz: %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

static char fz_scratch_dir[512];

static inline int fz_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level == 0) return 0; /* the scratch directory itself stays */
    remove(path);
    return 0;
}

/* Empties the scratch directory. */
static inline void fz_clear(void)
{
    if (fz_scratch_dir[0]) nftw(fz_scratch_dir, fz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void fz_remove_scratch(void)
{
    if (!fz_scratch_dir[0]) return;
    fz_clear();
    rmdir(fz_scratch_dir);
    fz_scratch_dir[0] = 0;
}

/* A crashed run (the reason fuzzing exists) never reaches atexit: the
 * scratch directories of processes that are gone ("ftbfuzz.<pid>.*") are
 * removed when a new one is made in the same place. */
static inline int fz_rm_any(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static inline void fz_remove_stale(const char *base)
{
    DIR *d = opendir(base);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid;
        char rest[64];
        if (sscanf(e->d_name, "ftbfuzz.%ld.%63s", &pid, rest) != 2 || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", base, e->d_name);
        nftw(path, fz_rm_any, 16, FTW_DEPTH | FTW_PHYS);
    }
    closedir(d);
}

/* The scratch directory, created on first use and emptied on every call:
 * each input starts from nothing. */
static inline const char *fz_scratch(void)
{
    if (!fz_scratch_dir[0]) {
        const char *bases[4] = { getenv("FTB_FUZZ_TMPDIR"), "/dev/shm", getenv("TMPDIR"), "/tmp" };
        for (int i = 0; i < 4 && !fz_scratch_dir[0]; i++) {
            const char *b = bases[i];
            if (!b || !*b || access(b, W_OK | X_OK) != 0) continue;
            fz_remove_stale(b);
            snprintf(fz_scratch_dir, sizeof fz_scratch_dir, "%s/ftbfuzz.%ld.XXXXXX", b, (long)getpid());
            if (!mkdtemp(fz_scratch_dir)) fz_scratch_dir[0] = 0;
        }
        FZ_CHECK(fz_scratch_dir[0], "cannot create a scratch directory: %s", strerror(errno));
        atexit(fz_remove_scratch);
    }
    fz_clear();
    return fz_scratch_dir;
}

/* scratch/name into buf (the scratch directory must exist). */
static inline const char *fz_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", fz_scratch_dir, name);
    return buf;
}

/* Writes scratch/name; aborts if it cannot (that is the harness failing,
 * not the parser). */
static inline void fz_write(const char *name, const void *data, size_t size)
{
    char path[1024];
    fz_path(path, sizeof path, name);
    FILE *f = fopen(path, "wb");
    FZ_CHECK(f != NULL, "%s: %s", path, strerror(errno));
    FZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size, "%s: short write", path);
    FZ_CHECK(fclose(f) == 0, "%s: %s", path, strerror(errno));
}

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_part;

/* Splits data on sep; at most max parts (the last one keeps the rest, seps
 * included).  Returns the number of parts (at least 1). */
static inline int fz_split(const uint8_t *data, size_t size, const char *sep, fz_part *parts, int max)
{
    size_t sl = strlen(sep);
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; n < max - 1 && sl && i + sl <= size;) {
        if (memcmp(data + i, sep, sl) == 0) {
            parts[n].p = data + start;
            parts[n].n = i - start;
            n++;
            i += sl;
            start = i;
        } else {
            i++;
        }
    }
    parts[n].p = data + start;
    parts[n].n = size - start;
    return n + 1;
}

/* A NUL-terminated copy (malloc'd; aborts on out of memory). */
static inline char *fz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    FZ_CHECK(s != NULL, "out of memory");
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* A rejection must say why: a non-empty message, NUL-terminated within the
 * buffer.  one_line: the parser promises a single line (no '\n'). */
static inline void fz_check_error(const char *err, size_t errlen, int one_line)
{
    FZ_CHECK(memchr(err, 0, errlen) != NULL, "error message not NUL-terminated");
    FZ_CHECK(err[0] != 0, "rejected without an error message");
    if (one_line) FZ_CHECK(strchr(err, '\n') == NULL, "error message spans lines: %s", err);
}

#endif
