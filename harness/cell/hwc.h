/*
 * hwc.h — per-phase accounting in the measured child: wall time and, where
 * the kernel lets us, hardware counters (cycles, instructions, LLC misses,
 * encoded through libpfm4).  Phases are the core's labels ("fwd L3",
 * "bwd L7", "optim", "head"), aggregated by their first word.  It runs from
 * the core's phase listener, i.e. in the thread that changes phase.
 */
#ifndef FTB_HARNESS_HWC_H
#define FTB_HARNESS_HWC_H

#include <jansson.h>

typedef struct ftb_phase_stats ftb_phase_stats;

/* Opens the counters (inherited by threads created later, so BLAS and
 * OpenMP workers count) and installs the phase listener.  Never fails:
 * without counters only times are kept, and the reason is recorded. */
ftb_phase_stats *ftb_phase_stats_start(int want_counters);
/* Closes the current phase and removes the listener. */
void ftb_phase_stats_stop(ftb_phase_stats *s);
/* {"available": true, "events": {...}, "by_phase": {...}} or
 * {"available": false, "reason": "..."} */
json_t *ftb_phase_stats_counters_json(const ftb_phase_stats *s);
/* {"fwd": {"seconds": .., "entries": ..}, ...} */
json_t *ftb_phase_stats_times_json(const ftb_phase_stats *s);
void ftb_phase_stats_free(ftb_phase_stats *s);

/* Why counters are unavailable here (probes once; NULL if they work). */
const char *ftb_hwc_unavailable_reason(void);

#endif
