/* hwc.c — see hwc.h. */
#include "hwc.h"
#include "cpu.h"
#include "ftbench.h"

#include <errno.h>
#include <linux/perf_event.h>
#include <perfmon/pfmlib_perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NEV        3
#define MAX_PHASES 64

/* Candidate encodings per counter, first that libpfm4 and the kernel take. */
static const char *const ev_names[NEV] = { "cycles", "instructions", "llc_misses" };
static const char *const ev_cands[NEV][4] = {
    { "cycles", "perf::CYCLES", NULL },
    { "instructions", "perf::INSTRUCTIONS", NULL },
    { "LLC_MISSES", "perf::LLC-LOAD-MISSES", "perf::CACHE-MISSES", NULL },
};

typedef struct {
    char name[32];
    double seconds;
    long entries;
    uint64_t count[NEV];
} phase_acc;

struct ftb_phase_stats {
    int fd[NEV];
    char encoding[NEV][64];
    int have_counters;
    char reason[320];
    phase_acc acc[MAX_PHASES];
    int n_acc;
    int cur; /* index of the open phase, -1 before any        */
    double t_cur;
    uint64_t last[NEV];
};

static long perf_open(struct perf_event_attr *a) { return syscall(SYS_perf_event_open, a, 0, -1, -1, 0); }

static int paranoid_level(void)
{
    FILE *f = fopen("/proc/sys/kernel/perf_event_paranoid", "r");
    int v = -99;
    if (f) {
        if (fscanf(f, "%d", &v) != 1) v = -99;
        fclose(f);
    }
    return v;
}

static void explain(char *out, size_t n, const char *ev, int e)
{
    int par = paranoid_level();
    const char *hint = "";
    if (e == ENOENT || e == EOPNOTSUPP || e == ENODEV)
        hint = "; the CPU's performance monitoring unit is not exposed (common in VMs and containers)";
    else if (e == EACCES || e == EPERM)
        hint = "; not permitted: run as root or lower /proc/sys/kernel/perf_event_paranoid";
    else if (e == ENOSYS)
        hint = "; the kernel has no perf_event support";
    snprintf(out, n, "perf_event_open(%s) failed: %s (perf_event_paranoid=%d)%s", ev, strerror(e), par, hint);
}

static int open_counter(ftb_phase_stats *s, int i, char *why, size_t whyn)
{
    int last_errno = 0;
    for (int c = 0; ev_cands[i][c]; c++) {
        struct perf_event_attr attr;
        memset(&attr, 0, sizeof attr);
        pfm_perf_encode_arg_t arg;
        memset(&arg, 0, sizeof arg);
        arg.attr = &attr;
        arg.size = sizeof arg;
        if (pfm_get_os_event_encoding(ev_cands[i][c], PFM_PLM3, PFM_OS_PERF_EVENT, &arg) != PFM_SUCCESS) continue;
        attr.size = sizeof attr;
        attr.disabled = 0;
        attr.inherit = 1;        /* threads created later count too   */
        attr.exclude_kernel = 1; /* allowed at perf_event_paranoid=2  */
        attr.exclude_hv = 1;
        attr.read_format = PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING;
        long fd = perf_open(&attr);
        if (fd >= 0) {
            s->fd[i] = (int)fd;
            snprintf(s->encoding[i], sizeof s->encoding[i], "%s", ev_cands[i][c]);
            return 0;
        }
        last_errno = errno;
    }
    explain(why, whyn, ev_cands[i][0], last_errno ? last_errno : ENOENT);
    return -1;
}

/* Value scaled for multiplexing (enabled/running). */
static uint64_t read_counter(int fd)
{
    uint64_t v[3];
    if (fd < 0 || read(fd, v, sizeof v) != (ssize_t)sizeof v) return 0;
    if (v[2] && v[2] < v[1]) return (uint64_t)((double)v[0] * (double)v[1] / (double)v[2]);
    return v[0];
}

static int phase_index(ftb_phase_stats *s, const char *label)
{
    char w[32];
    size_t n = 0;
    while (label && label[n] && label[n] != ' ' && n < sizeof w - 1) {
        w[n] = label[n];
        n++;
    }
    w[n] = 0;
    if (!n) snprintf(w, sizeof w, "other");
    for (int i = 0; i < s->n_acc; i++)
        if (strcmp(s->acc[i].name, w) == 0) return i;
    if (s->n_acc == MAX_PHASES) return MAX_PHASES - 1; /* the last slot collects the overflow */
    snprintf(s->acc[s->n_acc].name, sizeof s->acc[0].name, "%s", w);
    return s->n_acc++;
}

/* Attributes what happened since the last change to the open phase. */
static void close_phase(ftb_phase_stats *s)
{
    double now = ftb_now();
    uint64_t v[NEV] = { 0 };
    if (s->have_counters)
        for (int i = 0; i < NEV; i++) v[i] = read_counter(s->fd[i]);
    if (s->cur >= 0) {
        phase_acc *a = &s->acc[s->cur];
        a->seconds += now - s->t_cur;
        if (s->have_counters)
            for (int i = 0; i < NEV; i++) a->count[i] += v[i] - s->last[i];
    }
    memcpy(s->last, v, sizeof v);
    s->t_cur = now;
}

static void listener(const char *label, void *ud)
{
    ftb_phase_stats *s = ud;
    close_phase(s);
    s->cur = phase_index(s, label);
    s->acc[s->cur].entries++;
}

/* Under a user-mode emulator the counters (when it passes perf_event_open
 * through at all) count the emulator translating the code, not the device
 * running it: such figures would be wrong, so none are recorded. */
static int emulated_reason(char *out, size_t n)
{
    const ftb_cpu_info *cpu = ftb_cpu();
    if (!cpu->emulated) return 0;
    snprintf(out, n, "emulated: %.290s", cpu->emulation);
    return 1;
}

const char *ftb_hwc_unavailable_reason(void)
{
    static char reason[320];
    static int probed;
    if (!probed) {
        probed = 1;
        ftb_phase_stats tmp;
        memset(&tmp, 0, sizeof tmp);
        int rc = pfm_initialize();
        if (emulated_reason(reason, sizeof reason)) {
            /* the reason says why: no counters under emulation */
        } else if (rc != PFM_SUCCESS) {
            snprintf(reason, sizeof reason, "libpfm4 initialisation failed: %s", pfm_strerror(rc));
        } else {
            tmp.fd[0] = -1;
            if (open_counter(&tmp, 0, reason, sizeof reason) == 0) {
                close(tmp.fd[0]);
                reason[0] = 0;
            }
        }
    }
    return reason[0] ? reason : NULL;
}

ftb_phase_stats *ftb_phase_stats_start(int want_counters)
{
    ftb_phase_stats *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cur = -1;
    for (int i = 0; i < NEV; i++) s->fd[i] = -1;
    if (!want_counters) {
        snprintf(s->reason, sizeof s->reason, "disabled");
    } else {
        int rc = pfm_initialize();
        if (emulated_reason(s->reason, sizeof s->reason)) {
            /* the reason says why: no counters under emulation */
        } else if (rc != PFM_SUCCESS) {
            snprintf(s->reason, sizeof s->reason, "libpfm4 initialisation failed: %s", pfm_strerror(rc));
        } else if (open_counter(s, 0, s->reason, sizeof s->reason) == 0) {
            s->have_counters = 1;
            /* Cycles work; the others are best effort (reported as null). */
            char why[320];
            for (int i = 1; i < NEV; i++)
                if (open_counter(s, i, why, sizeof why) != 0) s->fd[i] = -1;
        }
    }
    s->t_cur = ftb_now();
    if (s->have_counters)
        for (int i = 0; i < NEV; i++) s->last[i] = read_counter(s->fd[i]);
    ftb_mem_set_phase_listener(listener, s);
    return s;
}

void ftb_phase_stats_stop(ftb_phase_stats *s)
{
    if (!s) return;
    ftb_mem_set_phase_listener(NULL, NULL);
    close_phase(s);
    s->cur = -1;
}

json_t *ftb_phase_stats_counters_json(const ftb_phase_stats *s)
{
    json_t *o = json_object();
    if (!s || !s->have_counters) {
        json_object_set_new(o, "available", json_false());
        json_object_set_new(o, "reason", json_string(s ? s->reason : "not started"));
        return o;
    }
    json_object_set_new(o, "available", json_true());
    json_t *ev = json_object();
    for (int i = 0; i < NEV; i++)
        json_object_set_new(ev, ev_names[i], s->fd[i] >= 0 ? json_string(s->encoding[i]) : json_null());
    json_object_set_new(o, "events", ev);
    json_object_set_new(o, "scope", json_string("user space, all threads of the cell"));
    json_t *by = json_object();
    for (int p = 0; p < s->n_acc; p++) {
        json_t *x = json_object();
        for (int i = 0; i < NEV; i++)
            json_object_set_new(x, ev_names[i],
                                s->fd[i] >= 0 ? json_integer((json_int_t)s->acc[p].count[i]) : json_null());
        if (s->fd[0] >= 0 && s->fd[1] >= 0 && s->acc[p].count[0])
            json_object_set_new(x, "ipc", json_real((double)s->acc[p].count[1] / (double)s->acc[p].count[0]));
        json_object_set_new(by, s->acc[p].name, x);
    }
    json_object_set_new(o, "by_phase", by);
    return o;
}

json_t *ftb_phase_stats_times_json(const ftb_phase_stats *s)
{
    json_t *o = json_object();
    for (int p = 0; s && p < s->n_acc; p++) {
        json_t *x = json_object();
        json_object_set_new(x, "seconds", json_real(s->acc[p].seconds));
        json_object_set_new(x, "entries", json_integer(s->acc[p].entries));
        json_object_set_new(o, s->acc[p].name, x);
    }
    return o;
}

void ftb_phase_stats_free(ftb_phase_stats *s)
{
    if (!s) return;
    for (int i = 0; i < NEV; i++)
        if (s->fd[i] >= 0) close(s->fd[i]);
    free(s);
}
