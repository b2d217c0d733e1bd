/*
 * host.h — where a cell is measured, for every record: the CPU model and
 * the CPUs this process may run on.  Records from unlike nodes (a cluster)
 * must not be compared as if alike.
 */
#ifndef FTB_HARNESS_HOST_H
#define FTB_HARNESS_HOST_H

#include <stddef.h>

/* The CPU model ("model name" on x86, "Model"/"cpu model" on ARM; "unknown"). */
void ftb_host_cpu_model(char *out, size_t n);
/* The CPUs this process may run on (sched_getaffinity), as "0-3,8". */
void ftb_host_cpu_affinity(char *out, size_t n);

#endif
