/* op_time.c — per-class time, FLOP and byte accumulators of the core's ops.
 *
 * Cost per op: two clock_gettime(CLOCK_MONOTONIC) calls (vDSO, tens of
 * ns) and two getrusage(RUSAGE_SELF) calls (1-4 µs) for the page faults; a
 * step of a 30-layer model with adapters brackets ~1,300 ops: ≤ 10 ms
 * against steps of seconds.  Only the training thread brackets
 * ops (the ops' own OpenMP threads run inside a bracket), so the counters
 * are plain statics. */
#include "op_time.h"

#include "quant.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

static ftb_op_stat stats[FTB_OP_NCLASS];
static double counted; /* sum of every class's seconds */
static int depth;      /* open brackets: only the outermost counts */

static const char *class_names[FTB_OP_NCLASS] = {
    "linear_q", "linear_k", "linear_v",  "linear_o",  "linear_gate", "linear_up", "linear_down",
    "attn_fwd", "attn_bwd", "head_loss", "norm",      "rope",        "swiglu",    "residual",
    "embed",    "hooks",    "dequant",   "optimizer", "core_other",
};

const char *ftb_op_class_name(ftb_op_class c) { return (unsigned)c < FTB_OP_NCLASS ? class_names[c] : "unknown"; }

static long process_faults(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return ru.ru_minflt + ru.ru_majflt;
}

ftb_op_timer ftb_op_begin(void)
{
    ftb_op_timer t = { -1.0, 0.0, 0 };
    if (depth++ > 0) return t;
    ftb_dequant_stats(&t.dq0, NULL);
    t.faults0 = process_faults();
    t.t0 = ftb_now();
    return t;
}

void ftb_op_end(ftb_op_class c, ftb_op_timer t, double flops, double bytes)
{
    depth--;
    if (t.t0 < 0 || (unsigned)c >= FTB_OP_NCLASS) return;
    double dt = ftb_now() - t.t0, dq;
    long faults = process_faults() - t.faults0;
    ftb_dequant_stats(&dq, NULL);
    dq -= t.dq0;
    if (dq > dt) dq = dt;
    if (dq > 0) {
        stats[FTB_OP_DEQUANT].seconds += dq;
        dt -= dq;
    }
    stats[c].seconds += dt;
    stats[c].flops += flops;
    stats[c].bytes += bytes;
    stats[c].calls++;
    stats[c].page_faults += faults;
    counted += dt + (dq > 0 ? dq : 0);
}

double ftb_op_counted_seconds(void) { return counted; }

void ftb_op_add_seconds(ftb_op_class c, double seconds)
{
    if ((unsigned)c >= FTB_OP_NCLASS || !(seconds > 0)) return;
    stats[c].seconds += seconds;
    counted += seconds;
}

void ftb_op_stats_reset(void)
{
    memset(stats, 0, sizeof stats);
    counted = 0;
}

void ftb_op_stats_get(ftb_op_stat out[FTB_OP_NCLASS]) { memcpy(out, stats, sizeof stats); }

double ftb_op_fault_seconds(void)
{
    static double per_fault = -1;
    if (per_fault >= 0) return per_fault;
    /* 8 MiB of fresh anonymous pages, each written once: the faults a
     * first touch of a new allocation takes (transparent huge pages, if
     * the kernel uses them here, take fewer and larger ones, as they would
     * for the core's buffers). */
    const size_t len = (size_t)8 << 20;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return per_fault = 0;
    long f0 = process_faults();
    double t0 = ftb_now();
    for (size_t i = 0; i < len; i += 4096) p[i] = 1;
    double dt = ftb_now() - t0;
    long faults = process_faults() - f0;
    munmap(p, len);
    per_fault = faults > 0 ? dt / (double)faults : 0;
    return per_fault;
}
