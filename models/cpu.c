/* cpu.c — see cpu.h. */
#include "cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

/* arm64 AT_HWCAP / AT_HWCAP2 bits (linux/arch/arm64/include/uapi/asm/hwcap.h);
 * spelled out so that the names can be decoded on any build machine. */
static const struct {
    int word, bit;
    const char *name;
} arm_caps[] = {
    { 1, 0, "fp" },       { 1, 1, "asimd" },  { 1, 8, "atomics" },  { 1, 9, "fphp" },
    { 1, 10, "asimdhp" }, { 1, 11, "cpuid" }, { 1, 20, "asimddp" }, { 1, 23, "asimdfhm" },
    { 1, 22, "sve" },     { 2, 1, "sve2" },   { 2, 13, "i8mm" },    { 2, 14, "bf16" },
};
#define ARM_HWCAP_CPUID (1ULL << 11)

void ftb_hwcap_describe(uint64_t hwcap, uint64_t hwcap2, char *out, unsigned len)
{
    size_t n = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof arm_caps / sizeof *arm_caps && n < len; i++) {
        uint64_t word = arm_caps[i].word == 1 ? hwcap : hwcap2;
        if (word >> arm_caps[i].bit & 1)
            n += (size_t)snprintf(out + n, len - n, "%s%s", n ? " " : "", arm_caps[i].name);
    }
}

/* MIDR_EL1: implementer [31:24], variant [23:20], architecture [19:16],
 * part number [15:4], revision [3:0].  Parts of the boards ftbench has
 * profiles for (Pi 4: A72, Pi 5: A76, Jetson Orin: A78AE, phones) and of
 * the cores OpenBLAS has kernels for. */
static const struct {
    unsigned impl, part;
    const char *name;
} midr_parts[] = {
    { 0x41, 0xd03, "ARM Cortex-A53" },    { 0x41, 0xd04, "ARM Cortex-A35" },   { 0x41, 0xd05, "ARM Cortex-A55" },
    { 0x41, 0xd07, "ARM Cortex-A57" },    { 0x41, 0xd08, "ARM Cortex-A72" },   { 0x41, 0xd09, "ARM Cortex-A73" },
    { 0x41, 0xd0a, "ARM Cortex-A75" },    { 0x41, 0xd0b, "ARM Cortex-A76" },   { 0x41, 0xd0c, "ARM Neoverse-N1" },
    { 0x41, 0xd0d, "ARM Cortex-A77" },    { 0x41, 0xd40, "ARM Neoverse-V1" },  { 0x41, 0xd41, "ARM Cortex-A78" },
    { 0x41, 0xd42, "ARM Cortex-A78AE" },  { 0x41, 0xd44, "ARM Cortex-X1" },    { 0x41, 0xd46, "ARM Cortex-A510" },
    { 0x41, 0xd47, "ARM Cortex-A710" },   { 0x41, 0xd48, "ARM Cortex-X2" },    { 0x41, 0xd49, "ARM Neoverse-N2" },
    { 0x41, 0xd4b, "ARM Cortex-A78C" },   { 0x41, 0xd4d, "ARM Cortex-A715" },  { 0x41, 0xd4e, "ARM Cortex-X3" },
    { 0x41, 0xd4f, "ARM Neoverse-V2" },   { 0x41, 0xd80, "ARM Cortex-A520" },  { 0x41, 0xd81, "ARM Cortex-A720" },
    { 0x41, 0xd82, "ARM Cortex-X4" },     { 0x43, 0x0a1, "Cavium ThunderX" },  { 0x43, 0x0af, "Cavium ThunderX2" },
    { 0x46, 0x001, "Fujitsu A64FX" },     { 0x48, 0xd01, "HiSilicon TSV110" }, { 0x4e, 0x004, "NVIDIA Carmel" },
    { 0x50, 0x000, "APM X-Gene (eMAG)" }, { 0x51, 0xc00, "Qualcomm Falkor" },
};

void ftb_midr_describe(uint64_t midr, char *out, unsigned len)
{
    unsigned impl = (unsigned)(midr >> 24) & 0xff, variant = (unsigned)(midr >> 20) & 0xf,
             part = (unsigned)(midr >> 4) & 0xfff, rev = (unsigned)midr & 0xf;
    for (size_t i = 0; i < sizeof midr_parts / sizeof *midr_parts; i++)
        if (midr_parts[i].impl == impl && midr_parts[i].part == part) {
            snprintf(out, len, "%s r%up%u", midr_parts[i].name, variant, rev);
            return;
        }
    snprintf(out, len, "implementer 0x%02x part 0x%03x r%up%u", impl, part, variant, rev);
}

const char *ftb_cpuinfo_dialect(const char *t)
{
    /* arm64 kernels print "CPU implementer"; x86 kernels "vendor_id" and
     * "flags". */
    if (strstr(t, "CPU implementer")) return "arm";
    if (strstr(t, "vendor_id") && strstr(t, "\nflags")) return "x86";
    return "";
}

static char *slurp_cpuinfo(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return NULL;
    /* The first 64 KiB hold the first processor's block: enough for the
     * dialect and x86's flags. */
    size_t cap = 1 << 16;
    char *t = malloc(cap);
    if (t) t[fread(t, 1, cap - 1, f)] = 0;
    fclose(f);
    return t;
}

/* A "key : value" line's value, the first one in t. */
static void cpuinfo_value(const char *t, const char *key, char *out, size_t len)
{
    out[0] = 0;
    size_t kl = strlen(key);
    for (const char *l = t; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, key, kl) != 0 || (l[kl] != ' ' && l[kl] != '\t' && l[kl] != ':')) continue;
        const char *v = strchr(l, ':');
        if (!v) continue;
        v++;
        while (*v == ' ') v++;
        size_t m = strcspn(v, "\n");
        if (m >= len) m = len - 1;
        memcpy(out, v, m);
        out[m] = 0;
        return;
    }
}

#if defined(__aarch64__)
static uint64_t read_midr(char *source, size_t len, uint64_t hwcap)
{
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1", "r");
    unsigned long long v = 0;
    if (f) {
        int ok = fscanf(f, "%llx", &v) == 1;
        fclose(f);
        if (ok) {
            snprintf(source, len, "sysfs");
            return v;
        }
    }
    /* The kernel (and qemu) emulate this EL1 register read for user space
     * only when they say so with HWCAP_CPUID; otherwise it is SIGILL. */
    if (hwcap & ARM_HWCAP_CPUID) {
        uint64_t r;
        __asm__ volatile("mrs %0, midr_el1" : "=r"(r));
        snprintf(source, len, "mrs");
        return r;
    }
    snprintf(source, len, "unavailable");
    return 0;
}
#endif

#if !defined(__aarch64__)
static const char *const x86_interesting[] = { "sse4_2",      "avx",         "avx2",     "fma",
                                               "f16c",        "avx512f",     "avx512bw", "avx512vl",
                                               "avx512_vnni", "avx512_bf16", "amx_tile" };
#endif

static void detect(ftb_cpu_info *c)
{
#if defined(__aarch64__)
    snprintf(c->arch, sizeof c->arch, "aarch64");
#elif defined(__x86_64__)
    snprintf(c->arch, sizeof c->arch, "x86_64");
#else
    struct utsname u;
    snprintf(c->arch, sizeof c->arch, "%s", uname(&u) == 0 ? u.machine : "unknown");
#endif
    char *info = slurp_cpuinfo();
    const char *dialect = info ? ftb_cpuinfo_dialect(info) : "";
#if defined(__aarch64__)
    c->hwcap = getauxval(AT_HWCAP);
    c->hwcap2 = getauxval(AT_HWCAP2);
    c->midr = read_midr(c->midr_source, sizeof c->midr_source, c->hwcap);
    if (c->midr)
        ftb_midr_describe(c->midr, c->model, sizeof c->model);
    else
        snprintf(c->model, sizeof c->model, "unknown aarch64 CPU");
    ftb_hwcap_describe(c->hwcap, c->hwcap2, c->features, sizeof c->features);
    if (!strcmp(dialect, "x86")) {
        char host[96];
        cpuinfo_value(info, "model name", host, sizeof host);
        c->emulated = 1;
        snprintf(c->emulation, sizeof c->emulation,
                 "user-mode emulation (qemu-aarch64): /proc/cpuinfo is an x86 kernel's (%.80s) while this "
                 "process runs aarch64 code",
                 host[0] ? host : "unknown model");
    }
#else
    snprintf(c->midr_source, sizeof c->midr_source, "unavailable");
    if (info) {
        cpuinfo_value(info, "model name", c->model, sizeof c->model);
        char flags[4096];
        cpuinfo_value(info, "flags", flags, sizeof flags);
        size_t n = 0;
        for (size_t i = 0; i < sizeof x86_interesting / sizeof *x86_interesting; i++) {
            char pat[40];
            snprintf(pat, sizeof pat, " %s ", x86_interesting[i]);
            char padded[4100];
            snprintf(padded, sizeof padded, " %s ", flags);
            if (strstr(padded, pat))
                n +=
                    (size_t)snprintf(c->features + n, sizeof c->features - n, "%s%s", n ? " " : "", x86_interesting[i]);
        }
    }
    if (!c->model[0]) snprintf(c->model, sizeof c->model, "unknown");
    if (!strcmp(dialect, "arm")) {
        c->emulated = 1;
        snprintf(c->emulation, sizeof c->emulation,
                 "user-mode emulation: /proc/cpuinfo is an arm64 kernel's while this process runs %s code", c->arch);
    }
#endif
    if (!c->features[0]) snprintf(c->features, sizeof c->features, "unknown");
    free(info);
}

const ftb_cpu_info *ftb_cpu(void)
{
    static ftb_cpu_info info;
    static int done;
    if (!done) {
        detect(&info);
        done = 1;
    }
    return &info;
}

json_t *ftb_cpu_json(void)
{
    const ftb_cpu_info *c = ftb_cpu();
    json_t *o = json_object();
    json_object_set_new(o, "arch", json_string(c->arch));
    json_object_set_new(o, "model", json_string(c->model));
    char midr[24];
    snprintf(midr, sizeof midr, "0x%08llx", (unsigned long long)c->midr);
    json_object_set_new(o, "midr", c->midr ? json_string(midr) : json_null());
    json_object_set_new(o, "midr_source", json_string(c->midr_source));
    json_object_set_new(o, "features", json_string(c->features));
    json_object_set_new(o, "emulated", json_boolean(c->emulated));
    if (c->emulated) json_object_set_new(o, "emulation", json_string(c->emulation));
    return o;
}
