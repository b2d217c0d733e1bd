/*
 * cpu.h — which CPU this process runs on, as the process itself sees it.
 *
 * On aarch64 the identity is the MIDR_EL1 register (sysfs
 * /sys/devices/system/cpu/cpu0/regs/identification/midr_el1, or read with
 * `mrs` when the kernel advertises HWCAP_CPUID) and the features are the
 * kernel's hardware capabilities (getauxval AT_HWCAP/AT_HWCAP2).  Both stay
 * right under qemu-user, where /proc/cpuinfo is the host kernel's
 * description of the host CPU.  On x86-64 /proc/cpuinfo is used as before.
 *
 * Emulation: a process whose /proc/cpuinfo describes another architecture
 * than the one it was compiled for runs under a user-mode emulator
 * (qemu-aarch64 on an x86-64 host); timings then measure the emulator and
 * hardware counters count it, so callers choose and record accordingly.
 */
#ifndef FTB_MODELS_CPU_H
#define FTB_MODELS_CPU_H

#include <jansson.h>
#include <stdint.h>

typedef struct {
    char arch[16];        /* the architecture this code runs as: "aarch64", "x86_64" */
    char model[128];      /* "ARM Cortex-A76 r4p1", or x86's model name               */
    uint64_t midr;        /* aarch64 MIDR_EL1, 0 when unknown or not aarch64           */
    char midr_source[32]; /* "sysfs", "mrs" or "unavailable"                        */
    uint64_t hwcap, hwcap2;
    char features[512];  /* "asimd fphp asimdhp asimddp ..."                      */
    int emulated;        /* 1: user-mode emulation detected                       */
    char emulation[200]; /* how it was detected, "" when not emulated             */
} ftb_cpu_info;

/* Detected once per process; never NULL. */
const ftb_cpu_info *ftb_cpu(void);

/* {"arch", "model", "midr" ("0x414fd0b1" or null), "midr_source",
 *  "features", "emulated", "emulation" (how it was detected)} for records. */
json_t *ftb_cpu_json(void);

/* Pure parts, exposed for the tests. */
/* "ARM Cortex-A76 r4p1" from a MIDR value; "implementer 0x.. part 0x..." when unknown. */
void ftb_midr_describe(uint64_t midr, char *out, unsigned len);
/* Space-separated aarch64 feature names for AT_HWCAP/AT_HWCAP2 bits. */
void ftb_hwcap_describe(uint64_t hwcap, uint64_t hwcap2, char *out, unsigned len);
/* Which architecture a /proc/cpuinfo text describes: "x86", "arm" or "". */
const char *ftb_cpuinfo_dialect(const char *cpuinfo);

#endif
