/*
 * sampler.h — a thread in the measured child that reads /proc/self/statm
 * about every millisecond and labels each sample with the core's current
 * phase.  It must not perturb what it measures: one pread() per sample on a
 * descriptor opened once, a fixed buffer allocated up front (when full, it
 * keeps every other sample and halves its rate), no locks.
 */
#ifndef FTB_HARNESS_SAMPLER_H
#define FTB_HARNESS_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "proctree.h"

typedef struct {
    double t;          /* seconds since the sampler's t0              */
    int64_t rss;       /* bytes                                       */
    const char *phase; /* interned by the core; never freed           */
} ftb_rss_sample;

typedef struct ftb_sampler ftb_sampler;

/* t0: the time origin (ftb_now() value) shared with the memory timeline.
 * capacity 0: no samples are kept (no timeline), only the maxima.  tree
 * (may be NULL): every ~10 ms the sampler also sums the RSS of the whole
 * process tree (proctree.h) — one waitid() when the process has no child —
 * and publishes it there. */
ftb_sampler *ftb_sampler_start(double t0, double period_sec, size_t capacity, ftb_tree_shared *tree);
/* The same with the kernel's page size given (statm counts pages): the
 * Raspberry Pi 5's kernel uses 16 KiB pages, x86 4 KiB; tests inject it. */
ftb_sampler *ftb_sampler_start_paged(double t0, double period_sec, size_t capacity, ftb_tree_shared *tree,
                                     long page_bytes);
/* Resident bytes from a /proc/<pid>/statm line; -1 if malformed. */
int64_t ftb_statm_resident_bytes(const char *statm, long page_bytes);
/* Stops and joins the thread; samples stay readable until free. */
void ftb_sampler_stop(ftb_sampler *s);
size_t ftb_sampler_count(const ftb_sampler *s);
const ftb_rss_sample *ftb_sampler_samples(const ftb_sampler *s);
double ftb_sampler_period(const ftb_sampler *s); /* after any halving */
int64_t ftb_sampler_max_rss(const ftb_sampler *s);
/* Largest RSS sum over the process tree seen (at least max_rss's sample
 * of the process itself at that moment); -1 if never sampled. */
int64_t ftb_sampler_max_tree_rss(const ftb_sampler *s);
size_t ftb_sampler_buffer_bytes(const ftb_sampler *s);
void ftb_sampler_free(ftb_sampler *s);

#endif
