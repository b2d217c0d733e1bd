/*
 * cgroup.h — a cgroup v2 group with memory.max for one measured child, so
 * an emulated device's memory budget is enforced by the kernel (the child
 * is OOM-killed at the limit, as it would be on the device).
 */
#ifndef FTB_HARNESS_CGROUP_H
#define FTB_HARNESS_CGROUP_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char path[PATH_MAX];
    int active;
} ftb_cgroup;

/* 1 if memory-limited child groups can be created here; else 0 with why. */
int ftb_cgroup_usable(char *why, size_t n);
/* Creates a group with memory.max = limit (and swap off).  0 or -1. */
int ftb_cgroup_create(ftb_cgroup *cg, int64_t limit, char *err, size_t errlen);
/* In the child: moves the calling process into the group.  0 or -1. */
int ftb_cgroup_enter(const ftb_cgroup *cg);
/* memory.events oom_kill count, -1 if unreadable. */
int64_t ftb_cgroup_oom_kills(const ftb_cgroup *cg);
/* memory.peak (kernel 5.19+), -1 if unavailable. */
int64_t ftb_cgroup_peak(const ftb_cgroup *cg);
/* Removes the group (after its processes have exited). */
void ftb_cgroup_destroy(ftb_cgroup *cg);

#endif
