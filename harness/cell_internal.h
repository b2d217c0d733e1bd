/* cell_internal.h — shared between the parent (cell.c) and the measured
 * child (cell_child.c).  Not part of any interface. */
#ifndef FTB_HARNESS_CELL_INTERNAL_H
#define FTB_HARNESS_CELL_INTERNAL_H

#include "cell.h"
#include "cgroup.h"

/* Exit codes of the child. */
#define CHILD_OK    0
#define CHILD_ERROR 3

/* Runs the measurement in the forked child; never returns.  progress_fd
 * receives "load", "init", "step I N", "done" lines; the measurements go
 * to child_json (rewritten at each milestone) and the timeline to
 * timeline_path. */
_Noreturn void ftb_cell_child(const ftb_cell *c, int progress_fd, const char *child_json, const char *timeline_path,
                              const ftb_cgroup *cg);

#endif
