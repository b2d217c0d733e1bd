/*
 * profile.h — device profiles (profiles/<name>.profile): what a device
 * offers a fine-tuning job, and where each figure comes from.
 *
 * Format: one `key = value` per line, '#' starts a comment.  Keys:
 *   name, alias (comma-separated, repeatable), arch, cores, ram_mb,
 *   usable_fraction, mem_bandwidth_gbs, peak_gflops_fp32, default_model,
 *   description, default_base_dtype, default_group (the base-weight format
 *   such devices fine-tune with; --base-dtype/--group override), and
 *   source_<key> for every figure.
 * `cores`, `ram_mb` and `arch` may be `auto` (detected on this machine:
 * the host profile); bandwidth and GFLOP/s may be `unknown`.
 */
#ifndef FTB_HARNESS_PROFILE_H
#define FTB_HARNESS_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#define FTB_PROFILE_MAX_ALIASES 8
#define FTB_PROFILE_MAX_SOURCES 16

typedef struct {
    char name[64];
    char aliases[FTB_PROFILE_MAX_ALIASES][64];
    int n_aliases;
    char arch[80];
    char description[160];
    int cores;
    double ram_mb;
    double usable_fraction;
    double mem_bandwidth_gbs; /* 0 = unknown */
    double peak_gflops_fp32;  /* 0 = unknown */
    char default_model[64];
    char default_base_dtype[16]; /* "" = f32; e.g. "int4" as the device's frameworks run it */
    int default_group;           /* 0 = the --group default                               */
    int detected;                /* some figure was `auto` (the host)   */
    char host_match[200];        /* set when this machine is the device: what matched */
    char path[512];              /* file it came from                   */
    int n_sources;
    char source_key[FTB_PROFILE_MAX_SOURCES][32];
    char source_text[FTB_PROFILE_MAX_SOURCES][240];
} ftb_profile;

/* Parses a profile's text; fname names it in errors
 * ("profiles/x.profile:7: ram_mb: 'lots' is not a positive number"). */
int ftb_profile_parse(const char *text, const char *fname, ftb_profile *p, char *err, size_t errlen);
int ftb_profile_load(const char *path, ftb_profile *p, char *err, size_t errlen);

/* Every *.profile of dir, sorted by name.  Fails on the first malformed
 * file (a silently skipped profile would make `--device` lie). */
int ftb_profiles_load_dir(const char *dir, ftb_profile **out, int *n, char *err, size_t errlen);

/* Exact name, then alias, then unique prefix of a name.  Index or -1 with
 * err filled (unknown, or ambiguous with the candidates listed). */
int ftb_profile_resolve(const ftb_profile *list, int n, const char *query, char *err, size_t errlen);

/* The directory profiles are read from when none is given:
 * $FTBENCH_PROFILES_DIR, <exe>/../profiles, <exe>/../share/ftbench/profiles,
 * ./profiles.  NULL if none exists. */
const char *ftb_profiles_default_dir(void);

/* Loads the directory (dir or the default) and resolves query into *out. */
int ftb_profile_find(const char *dir, const char *query, ftb_profile *out, char *err, size_t errlen);

/* Memory a fine-tuning job may use on the device: ram × usable_fraction. */
int64_t ftb_profile_budget_bytes(const ftb_profile *p);
/* The source_ text for a key, or NULL. */
const char *ftb_profile_source(const ftb_profile *p, const char *key);
int ftb_host_cores(void);

/* Whether a machine is the device a profile describes: same architecture,
 * same number of cores, RAM (MemTotal, which excludes the kernel's and
 * firmware's reservations) within FTB_PROFILE_RAM_TOLERANCE below or 5 %
 * above ram_mb, and a CPU that is not emulated (qemu-user reports the
 * profile's architecture but measures the emulator).  why says what
 * matched, or the first thing that did not. */
#define FTB_PROFILE_RAM_TOLERANCE 0.15
int ftb_profile_matches(const ftb_profile *p, const char *arch, int cores, double ram_mb, int cpu_emulated, char *why,
                        size_t whylen);
/* The same for this machine; when it matches, the profile takes the
 * machine's own cores and RAM and host_match says so: the run is native on
 * the device, not an emulation of it.  Returns 1 on a match. */
int ftb_profile_adopt_host(ftb_profile *p);

#endif
