/*
 * host.c — which machine and CPUs measured a record.  See host.h.
 */
#include "host.h"
#include "util.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>

void ftb_host_cpu_model(char *out, size_t n)
{
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    /* "model name" on x86, "Model"/"CPU part" on ARM: the first that names it. */
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = 0;
        char *key = ftb_trim(line), *val = ftb_trim(colon + 1);
        if (*val && (!strcmp(key, "model name") || !strcmp(key, "Model") || !strcmp(key, "cpu model"))) {
            snprintf(out, n, "%s", val);
            break;
        }
    }
    fclose(f);
}

void ftb_host_cpu_affinity(char *out, size_t n)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    out[0] = 0;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        snprintf(out, n, "unknown");
        return;
    }
    size_t o = 0;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set)) e++;
        int w = e > c ? snprintf(out + o, n - o, "%s%d-%d", o ? "," : "", c, e)
                      : snprintf(out + o, n - o, "%s%d", o ? "," : "", c);
        if (w < 0 || (size_t)w >= n - o) break;
        o += (size_t)w;
        c = e;
    }
}
