/* cell_internal.h — shared between the parent (cell.c) and the measured
 * child (cell_child.c).  Not part of any interface. */
#ifndef FTB_HARNESS_CELL_INTERNAL_H
#define FTB_HARNESS_CELL_INTERNAL_H

#include "cell.h"
#include "cgroup.h"
#include "proctree.h"

/* Exit codes of the child. */
#define CHILD_OK       0
#define CHILD_ERROR    3
#define CHILD_IO_ERROR 4 /* could not write its measurements ("ioerror" line) */

/* Runs the measurement in the forked child; never returns.  progress_fd
 * receives "load", "init", "step I N", "done" lines, and
 * "ioerror measurements|timeline ERRNO" when a write fails (a full disk);
 * the measurements go to child_json (rewritten at each milestone) and the
 * timeline to timeline_name, both file names in the run directory run_fd
 * (created without following links, safe_file.h).  The sampler publishes
 * the RSS of the cell's process tree in `tree` (shared with the parent;
 * may be NULL). */
_Noreturn void ftb_cell_child(const ftb_cell *c, int progress_fd, int run_fd, const char *child_json,
                              const char *timeline_name, const ftb_cgroup *cg, ftb_tree_shared *tree);

#endif
