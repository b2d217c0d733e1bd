/*
 * proctree.h — the resident memory of a cell's whole process tree.  A
 * method may fork helpers (a data loader, a compiler, a checkpoint
 * writer); their memory is the device's memory too, so the budget is
 * enforced on the sum of the RSS of the cell and all its descendants, not
 * on the cell's own process.
 *
 * The measured child's sampler sums the tree (when the cell has children
 * at all: one waitid() tells) and publishes it in a page shared with the
 * parent, which enforces the budget on it and keeps the peak even when the
 * child is killed.
 */
#ifndef FTB_HARNESS_PROCTREE_H
#define FTB_HARNESS_PROCTREE_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

/* Written by the child's sampler, read by the parent (a MAP_SHARED page
 * mapped before the fork). */
typedef struct ftb_tree_shared {
    _Atomic int64_t now_bytes; /* latest sum of RSS over the tree, -1 none yet */
    _Atomic int64_t max_bytes; /* largest sum seen                            */
    _Atomic int max_procs;     /* most processes seen in the tree at once     */
    _Atomic int samples;       /* tree sums taken (not counting childless ones) */
} ftb_tree_shared;

/* A zeroed shared page (now/max = -1), or NULL.  Unmap with
 * ftb_tree_shared_free. */
ftb_tree_shared *ftb_tree_shared_new(void);
void ftb_tree_shared_free(ftb_tree_shared *t);

/* Sum of the RSS (bytes) of `root` and every process descending from it,
 * found by a scan of /proc (this kernel may not have
 * /proc/PID/task/TID/children).  Allocates nothing, so the sampler thread
 * can call it.  *nprocs (if not NULL) gets the count; -1 if root is gone. */
int64_t ftb_proctree_rss(pid_t root, int *nprocs);

/* 1 if the calling process has any child (running or a zombie), by one
 * waitid(WNOWAIT) call; 0 if none. */
int ftb_has_children(void);

#endif
