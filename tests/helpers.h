/*
 * helpers.h — what the method suites would otherwise each write again: a
 * shipped method plugin opened as a run opens it (from $FTBENCH_METHODS,
 * set by `make test`), a session for it, a batch of a tiny model's tokens,
 * a whole file read into memory.  Include after <criterion/criterion.h>.
 */
#ifndef TEST_HELPERS_H
#define TEST_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftbench.h"
#include "plugin.h"

/* The directory `make test` built the methods into. */
static inline const char *th_methods_dir(void)
{
    const char *dir = getenv("FTBENCH_METHODS");
    return dir ? dir : "build/methods";
}

/* <methods dir>/<name>.so, loaded and ABI-checked (the test fails if not). */
static inline void th_open_method(const char *name, ftb_plugin *p)
{
    char path[4096], err[FTB_ERR_LEN];
    snprintf(path, sizeof path, "%s/%s.so", th_methods_dir(), name);
    cr_assert_eq(ftb_plugin_open(path, p, err, sizeof err), 0, "%s", err);
}

/* What the host hands a method: default run options, seed 5, lr 1e-3, 10
 * steps planned. */
static inline ftb_session th_session(ftb_model *m, const ftb_options *o)
{
    ftb_session s;
    memset(&s, 0, sizeof s);
    s.model = m;
    ftb_run_opts_default(&s.run);
    s.options = o;
    s.seed = 5;
    s.lr = 1e-3f;
    s.total_steps = 10;
    return s;
}

/* B sequences of T tokens (i·7 + 3 mod V), each target the next token, the
 * last of each sequence ignored. */
static inline ftb_batch th_batch(int32_t *tokens, int32_t *targets, int B, int T, int V)
{
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 7 + 3) % V;
    for (int i = 0; i < B * T; i++) targets[i] = (i + 1) % T ? tokens[i + 1] : FTB_IGNORE_INDEX;
    return (ftb_batch){ B, T, tokens, targets };
}

/* A whole file, NUL-terminated (malloc'd), its length in *len (may be
 * NULL); NULL and *len = -1 if it cannot be read. */
static inline char *th_slurp_or_null(const char *path, long *len)
{
    if (len) *len = -1;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = b ? fread(b, 1, (size_t)(n > 0 ? n : 0), f) : 0;
    if (b) b[got] = 0;
    fclose(f);
    if (b && len) *len = (long)got;
    return b;
}

/* The same, "" (and *len = -1) if it cannot be read. */
static inline char *th_slurp_len(const char *path, long *len)
{
    char *b = th_slurp_or_null(path, len);
    return b ? b : strdup("");
}

static inline char *th_slurp(const char *path) { return th_slurp_len(path, NULL); }

#endif
