/*
 * test_devices.c — running where the numbers are for (suite "devices"):
 * the CPU's identity and features as arm64 reports them (MIDR, AT_HWCAP),
 * emulation detected and recorded (no hardware counters under it), RSS
 * with a 16 KiB page kernel, and a device profile that matches the machine
 * it runs on giving a native (not emulated) record.  ci/test-aarch64.sh
 * runs this suite under qemu-aarch64 too.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu.h"
#include "ftbench.h"
#include "hwc.h"
#include "profile.h"
#include "sampler.h"
#include "util.h"

Test(devices, midr_names_the_core_and_revision)
{
    char s[128];
    ftb_midr_describe(0x414fd0b1, s, sizeof s); /* Raspberry Pi 5, and qemu's cortex-a76 */
    cr_expect_str_eq(s, "ARM Cortex-A76 r4p1");
    ftb_midr_describe(0x410fd083, s, sizeof s); /* Raspberry Pi 4 */
    cr_expect_str_eq(s, "ARM Cortex-A72 r0p3");
    ftb_midr_describe(0x411fd421, s, sizeof s); /* Jetson Orin */
    cr_expect_str_eq(s, "ARM Cortex-A78AE r1p1");
    ftb_midr_describe(0x61000230, s, sizeof s);
    cr_expect_str_eq(s, "implementer 0x61 part 0x023 r0p0");
}

Test(devices, hwcaps_name_the_arm_features)
{
    char s[256];
    /* A Cortex-A76's AT_HWCAP as Linux reports it: fp asimd ... cpuid ... asimddp. */
    ftb_hwcap_describe(0x119fff, 0, s, sizeof s);
    cr_expect_str_eq(s, "fp asimd atomics fphp asimdhp cpuid asimddp");
    /* SVE in AT_HWCAP, SVE2/I8MM/BF16 in AT_HWCAP2 (a Neoverse-V2). */
    ftb_hwcap_describe((1ULL << 1) | (1ULL << 22), (1ULL << 1) | (1ULL << 13) | (1ULL << 14), s, sizeof s);
    cr_expect_str_eq(s, "asimd sve sve2 i8mm bf16");
    ftb_hwcap_describe(0, 0, s, sizeof s);
    cr_expect_str_eq(s, "");
}

Test(devices, cpuinfo_dialect_tells_the_kernels_architecture)
{
    cr_expect_str_eq(ftb_cpuinfo_dialect("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
                                         "flags\t\t: fpu vme avx2\n"),
                     "x86");
    cr_expect_str_eq(ftb_cpuinfo_dialect("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd\n"
                                         "CPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"),
                     "arm");
    cr_expect_str_eq(ftb_cpuinfo_dialect(""), "");
}

/* The identity comes from what this process runs on: under qemu-aarch64
 * on x86 it is the emulated Cortex-A76, not the host's EPYC. */
Test(devices, cpu_identity_is_the_process_own)
{
    const ftb_cpu_info *c = ftb_cpu();
#if defined(__aarch64__)
    cr_expect_str_eq(c->arch, "aarch64");
    cr_expect(strstr(c->features, "asimd") != NULL, "features without asimd: %s", c->features);
    cr_expect(c->midr != 0 || strcmp(c->midr_source, "unavailable") == 0, "MIDR 0 from %s", c->midr_source);
    cr_expect(strncmp(c->model, "AMD", 3) != 0 && strncmp(c->model, "Intel", 5) != 0,
              "model '%s' is the host's, not this CPU's", c->model);
#else
    cr_expect_str_eq(c->arch, "x86_64");
    cr_expect_eq(c->midr, 0);
#endif
    FILE *f = fopen("/proc/cpuinfo", "r");
    static char info[1 << 16];
    size_t n = f ? fread(info, 1, sizeof info - 1, f) : 0;
    if (f) fclose(f);
    info[n] = 0;
    if (n) {
        const char *d = ftb_cpuinfo_dialect(info);
        int foreign =
            (!strcmp(c->arch, "aarch64") && !strcmp(d, "x86")) || (!strcmp(c->arch, "x86_64") && !strcmp(d, "arm"));
        cr_expect_eq(c->emulated, foreign, "emulated %d, but /proc/cpuinfo is '%s' for %s", c->emulated, d, c->arch);
    }
    cr_expect_eq(c->emulated, c->emulation[0] != 0, "emulated without saying how (or the reverse)");
}

/* Counters under an emulator would count the emulator: unavailable, and
 * the reason says so; on hardware the reason (if any) is another one. */
Test(devices, hardware_counters_are_unavailable_under_emulation)
{
    ftb_phase_stats *ps = ftb_phase_stats_start(1);
    cr_assert_not_null(ps);
    ftb_phase_stats_stop(ps);
    json_t *j = ftb_phase_stats_counters_json(ps);
    const char *reason = json_string_value(json_object_get(j, "reason"));
    if (ftb_cpu()->emulated) {
        cr_expect(json_is_false(json_object_get(j, "available")));
        cr_assert_not_null(reason);
        cr_expect(strncmp(reason, "emulated: ", 10) == 0, "reason: %s", reason);
        cr_expect(ftb_hwc_unavailable_reason() && strncmp(ftb_hwc_unavailable_reason(), "emulated", 8) == 0);
    } else {
        cr_expect(!reason || strncmp(reason, "emulated", 8) != 0, "emulation claimed on hardware: %s", reason);
    }
    json_decref(j);
    ftb_phase_stats_free(ps);
}

Test(devices, statm_resident_pages_become_bytes_with_the_given_page_size)
{
    cr_expect_eq(ftb_statm_resident_bytes("5000 1234 300 10 0 900 0\n", 16384), 1234LL * 16384);
    cr_expect_eq(ftb_statm_resident_bytes("5000 1234 300 10 0 900 0\n", 4096), 1234LL * 4096);
    cr_expect_eq(ftb_statm_resident_bytes("5000", 16384), -1);
    cr_expect_eq(ftb_statm_resident_bytes("", 16384), -1);
}

/* The Pi 5's kernel has 16 KiB pages: the sampler, given that page size,
 * reports statm's resident pages times 16 KiB. */
Test(devices, sampler_counts_16k_pages)
{
    const long page = 16384;
    ftb_sampler *s = ftb_sampler_start_paged(ftb_now(), 1e-3, 64, NULL, page);
    cr_assert_not_null(s);
    usleep(30000);
    ftb_sampler_stop(s);
    char buf[128] = "";
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(buf, sizeof buf, f));
    fclose(f);
    long size, resident;
    cr_assert_eq(sscanf(buf, "%ld %ld", &size, &resident), 2);
    size_t n = ftb_sampler_count(s);
    cr_assert_gt(n, 0);
    const ftb_rss_sample *v = ftb_sampler_samples(s);
    for (size_t i = 0; i < n; i++) cr_expect_eq(v[i].rss % page, 0, "sample %zu: %lld bytes", i, (long long)v[i].rss);
    /* The process is idle: its last sample is statm's resident pages now,
     * counted in 16 KiB pages (within a few pages of drift). */
    double pages = (double)v[n - 1].rss / page;
    cr_expect(pages > resident * 0.9 && pages < resident * 1.1, "sampler %.0f pages, statm %ld", pages, resident);
    ftb_sampler_free(s);
}

static void profile_text(char *out, size_t len, const char *name, const char *arch, int cores, double ram_mb)
{
    snprintf(out, len,
             "name = %s\narch = %s\ncores = %d\nsource_cores = test\nram_mb = %.1f\nsource_ram_mb = test\n"
             "usable_fraction = 0.8\nsource_usable_fraction = test\nmem_bandwidth_gbs = unknown\n"
             "peak_gflops_fp32 = unknown\ndefault_model = tiny\n",
             name, arch, cores, ram_mb);
}

Test(devices, profile_matches_only_the_machine_it_describes)
{
    char text[1024], err[256], why[256];
    ftb_profile p;
    profile_text(text, sizeof text, "pi", "aarch64", 4, 8192);
    cr_assert_eq(ftb_profile_parse(text, "pi.profile", &p, err, sizeof err), 0, "%s", err);
    /* A Pi 5 8GB's MemTotal is about 7.9 GiB: the firmware keeps some. */
    cr_expect(ftb_profile_matches(&p, "aarch64", 4, 8052, 0, why, sizeof why), "%s", why);
    cr_expect(strstr(why, "device profile match") != NULL, "%s", why);
    cr_expect(!ftb_profile_matches(&p, "x86_64", 4, 8052, 0, why, sizeof why));
    cr_expect(strstr(why, "architecture") != NULL, "%s", why);
    cr_expect(!ftb_profile_matches(&p, "aarch64", 2, 8052, 0, why, sizeof why));
    cr_expect(!ftb_profile_matches(&p, "aarch64", 4, 4000, 0, why, sizeof why), "a 4 GB Pi is not the 8 GB one");
    cr_expect(!ftb_profile_matches(&p, "aarch64", 4, 16000, 0, why, sizeof why));
    cr_expect(!ftb_profile_matches(&p, "aarch64", 4, 8052, 1, why, sizeof why), "qemu is not the device");
    cr_expect(strstr(why, "emulated") != NULL, "%s", why);
}

/* A profile written for this very machine: a cell run with it is native,
 * `emulated: false`, and the record says why -- unless the CPU itself is
 * emulated (qemu), which is never the device. */
Test(devices, run_on_the_profiled_device_is_not_emulated)
{
    const char *bin = getenv("FTBENCH_BIN");
    cr_assert_not_null(bin, "FTBENCH_BIN is not set (run through make test)");
    char dir[] = "/tmp/ftbench-devmatch-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char pdir[600], path[700], text[1024], cmd[2048];
    snprintf(pdir, sizeof pdir, "%s/profiles", dir);
    cr_assert_eq(mkdir(pdir, 0755), 0);
    int64_t mem = ftb_meminfo("MemTotal");
    cr_assert_gt(mem, 0);
    /* Nominal RAM a little above MemTotal, as on a real device. */
    profile_text(text, sizeof text, "twin", ftb_cpu()->arch, ftb_host_cores(), (double)mem / 1048576.0 * 1.03);
    snprintf(path, sizeof path, "%s/twin.profile", pdir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s run --profiles-dir %s --device twin --model tiny --method full --seq 16 --steps 1 --out %s/out "
             ">/dev/null 2>&1",
             bin, pdir, dir);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
    snprintf(cmd, sizeof cmd, "%s/out/twin", dir);
    snprintf(path, sizeof path, "cat %s/out/twin/*/results.jsonl", dir);
    FILE *p = popen(path, "r");
    char line[1 << 16] = "";
    cr_assert_not_null(fgets(line, sizeof line, p));
    pclose(p);
    json_error_t e;
    json_t *r = json_loads(line, 0, &e);
    cr_assert_not_null(r, "%s", e.text);
    json_t *dev = json_object_get(r, "device");
    const char *match = json_string_value(json_object_get(dev, "host_match"));
    if (ftb_cpu()->emulated) {
        cr_expect(json_is_true(json_object_get(r, "emulated")), "an emulated CPU passed for the device");
        cr_expect_null(match);
    } else {
        cr_expect(json_is_false(json_object_get(r, "emulated")), "the profiled device's own run is emulated");
        cr_assert_not_null(match, "no host_match in the record");
        cr_expect(strstr(match, "device profile match") != NULL, "%s", match);
        cr_expect_eq(json_integer_value(json_object_get(dev, "threads")), ftb_host_cores());
    }
    json_decref(r);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
}

Test(devices, profile_default_base_format_is_checked)
{
    char text[1200], err[256];
    ftb_profile p;
    profile_text(text, sizeof text, "pi", "aarch64", 4, 8192);
    strcat(text, "default_base_dtype = int4\ndefault_group = 64\n");
    cr_assert_eq(ftb_profile_parse(text, "pi.profile", &p, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(p.default_base_dtype, "int4");
    cr_expect_eq(p.default_group, 64);
    profile_text(text, sizeof text, "pi", "aarch64", 4, 8192);
    strcat(text, "default_base_dtype = int3\n");
    cr_expect_neq(ftb_profile_parse(text, "pi.profile", &p, err, sizeof err), 0);
    cr_expect(strstr(err, "pi.profile:12: default_base_dtype: 'int3'") != NULL, "%s", err);
    profile_text(text, sizeof text, "pi", "aarch64", 4, 8192);
    strcat(text, "default_group = 63\n");
    cr_expect_neq(ftb_profile_parse(text, "pi.profile", &p, err, sizeof err), 0);
    cr_expect(strstr(err, "default_group: '63'") != NULL, "%s", err);
}

/* Runs a one-cell sweep on a test device whose profile names int4 groups
 * of 16 (tiny's rows are 32 wide); returns the record's base.dtype and
 * fills header with the sweep's "base weights:" line. */
static const char *sweep_base(const char *dir, const char *extra, char *header, size_t hlen)
{
    const char *bin = getenv("FTBENCH_BIN"), *methods = getenv("FTBENCH_METHODS");
    cr_assert(bin && methods, "run through make test");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s/out; FTBENCH_MODEL_CACHE=%s/cache %s sweep --profiles-dir %s/profiles --device testpi "
             "--methods-dir %s --methods lora --seqs 16 --steps 1 --warmup 0 --out %s/out %s 2>&1 >/dev/null | "
             "grep 'base weights:'; cat %s/out/testpi/*/results.jsonl",
             dir, dir, bin, dir, methods, dir, extra, dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    static char line[1 << 16];
    header[0] = 0;
    const char *dtype = "";
    static char dt[32];
    while (fgets(line, sizeof line, p)) {
        if (strstr(line, "base weights:")) {
            snprintf(header, hlen, "%.500s", line);
            continue;
        }
        json_error_t e;
        json_t *r = json_loads(line, 0, &e);
        if (!r) continue;
        const char *d = json_string_value(json_object_get(json_object_get(r, "base"), "dtype"));
        snprintf(dt, sizeof dt, "%s", d ? d : "(none)");
        dtype = dt;
        json_decref(r);
    }
    pclose(p);
    return dtype;
}

/* A Pi or phone profile's default_base_dtype is what `make bench DEVICE=...`
 * measures: the sweep's header says so and the records hold int4 weights;
 * --base-dtype f32 overrides it. */
Test(devices, device_default_base_format_applies_and_is_overridden)
{
    char dir[] = "/tmp/ftbench-devbase-XXXXXX", path[700], text[1200], header[512];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/profiles", dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    profile_text(text, sizeof text, "testpi", "aarch64", 4, 4096);
    strcat(text, "default_base_dtype = int4\ndefault_group = 16\n");
    snprintf(path, sizeof path, "%s/profiles/testpi.profile", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);

    const char *dtype = sweep_base(dir, "", header, sizeof header);
    cr_expect_str_eq(dtype, "int4");
    cr_expect(strstr(header, "int4-g16") && strstr(header, "device profile's default_base_dtype"), "header: %s",
              header);
    dtype = sweep_base(dir, "--base-dtype f32", header, sizeof header);
    cr_expect_str_eq(dtype, "f32");
    cr_expect(strstr(header, "base weights: f32") && !strstr(header, "device profile"), "header: %s", header);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
}
