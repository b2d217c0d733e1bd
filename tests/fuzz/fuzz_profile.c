/*
 * fuzz_profile.c — device profiles (harness/profile.c).
 *
 * Input: the text of a profiles/<name>.profile.  It is parsed from memory
 * (ftb_profile_parse) and from a file (ftb_profile_load), which must agree.
 * An accepted profile must hold what profile.h promises (a valid name,
 * 1..4096 cores, positive RAM, a usable fraction in (0, 1], a source for
 * every stated figure) and is then used as the harness uses one: its budget
 * in bytes, name/alias/prefix resolution.
 *
 * Seeds: tests/fuzz/corpus/profile/ (the profiles/ of the source tree).
 */
#include "profile.h"

#include "fuzz_common.h"

#include <math.h>

int fuzz_profile_one(const uint8_t *data, size_t size)
{
    char *text = fz_strndup(data, size);
    char err[512], err2[512];
    ftb_profile *p = malloc(2 * sizeof *p);
    FZ_CHECK(p != NULL, "out of memory");
    err[0] = 0;
    int rc = ftb_profile_parse(text, "fuzz.profile", &p[0], err, sizeof err);

    /* The same text from a file: same verdict.  (Text after a NUL byte is
     * where the two may differ; the file reader stops there too.) */
    fz_scratch();
    char path[1024];
    fz_write("fuzz.profile", text, strlen(text));
    fz_path(path, sizeof path, "fuzz.profile");
    err2[0] = 0;
    int rc2 = ftb_profile_load(path, &p[1], err2, sizeof err2);
    FZ_CHECK(rc == rc2, "parse says %d (%s), load says %d (%s)", rc, err, rc2, err2);

    if (rc != 0) {
        fz_check_error(err, sizeof err, 1);
        free(p);
        free(text);
        return 0;
    }
    const ftb_profile *q = &p[0];
    FZ_CHECK(q->name[0] != 0, "accepted a profile without a name");
    FZ_CHECK(q->cores >= 1 && q->cores <= 4096, "cores %d", q->cores);
    FZ_CHECK(q->ram_mb > 0 && isfinite(q->ram_mb), "ram_mb %g", q->ram_mb);
    FZ_CHECK(q->usable_fraction > 0 && q->usable_fraction <= 1, "usable_fraction %g", q->usable_fraction);
    FZ_CHECK(q->n_aliases >= 0 && q->n_aliases <= FTB_PROFILE_MAX_ALIASES, "n_aliases %d", q->n_aliases);
    FZ_CHECK(q->n_sources >= 0 && q->n_sources <= FTB_PROFILE_MAX_SOURCES, "n_sources %d", q->n_sources);
    /* The budget in bytes, as every run computes it.  Beyond int64 the
     * conversion itself is an open bug (regressions/profile/ram-mb-1e30-
     * budget-overflows-int64, suppressed in known_open.ubsan so fuzzing goes
     * on): the result is only checked where it is representable. */
    int64_t budget = ftb_profile_budget_bytes(q);
    if (q->ram_mb * q->usable_fraction * 1048576.0 < 0x1p63)
        FZ_CHECK(budget >= 0, "negative budget %lld", (long long)budget);
    (void)ftb_profile_source(q, "ram_mb");

    /* As `--device` uses it: exact name, every alias, a prefix, nonsense. */
    FZ_CHECK(ftb_profile_resolve(q, 1, q->name, err, sizeof err) == 0, "own name not resolved: %s", err);
    for (int a = 0; a < q->n_aliases; a++) {
        int i = ftb_profile_resolve(q, 1, q->aliases[a], err, sizeof err);
        FZ_CHECK(i == 0, "alias '%s' not resolved: %s", q->aliases[a], err);
    }
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%.7s", q->name);
    FZ_CHECK(ftb_profile_resolve(q, 1, prefix, err, sizeof err) == 0, "prefix '%s' not resolved: %s", prefix, err);
    (void)ftb_profile_resolve(p, 2, "no-such-device", err, sizeof err);
    (void)ftb_profile_resolve(p, 2, "", err, sizeof err);
    free(p);
    free(text);
    return 1;
}

FTB_FUZZ_ENTRY(fuzz_profile_one)
