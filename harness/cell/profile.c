/* profile.c — device profile parsing and lookup.  See profile.h. */
#include "profile.h"
#include "cpu.h"
#include "ftbench.h"
#include "util.h"
#include "input_file.h"

#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

int ftb_host_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Figures that must carry a source_ line unless `auto`/`unknown`. */
static const char *const figure_keys[] = {
    "cores", "ram_mb", "usable_fraction", "mem_bandwidth_gbs", "peak_gflops_fp32", NULL
};

static int valid_name(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

const char *ftb_profile_source(const ftb_profile *p, const char *key)
{
    for (int i = 0; i < p->n_sources; i++)
        if (strcmp(p->source_key[i], key) == 0) return p->source_text[i];
    return NULL;
}

int64_t ftb_profile_budget_bytes(const ftb_profile *p)
{
    return (int64_t)(p->ram_mb * p->usable_fraction * 1024.0 * 1024.0);
}

#define PERR(...)                                                     \
    do {                                                              \
        char _m[300];                                                 \
        snprintf(_m, sizeof _m, __VA_ARGS__);                         \
        return ftb_errf(err, errlen, "%s:%d: %s", fname, lineno, _m); \
    } while (0)

int ftb_profile_parse(const char *text, const char *fname, ftb_profile *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    snprintf(p->path, sizeof p->path, "%s", fname);
    enum { K_NAME, K_ARCH, K_CORES, K_RAM, K_FRAC, K_BW, K_GF, K_MODEL, K_DESC, K_DTYPE, K_GROUP, K_N };
    static const char *const keys[K_N] = { "name",
                                           "arch",
                                           "cores",
                                           "ram_mb",
                                           "usable_fraction",
                                           "mem_bandwidth_gbs",
                                           "peak_gflops_fp32",
                                           "default_model",
                                           "description",
                                           "default_base_dtype",
                                           "default_group" };
    int seen[K_N] = { 0 };
    int detected[K_N] = { 0 }; /* `auto` or `unknown`: needs no source */
    int lineno = 0;
    const char *line = text;
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        lineno++;
        char buf[1024];
        if (len >= sizeof buf) PERR("line too long");
        memcpy(buf, line, len);
        buf[len] = 0;
        line = nl ? nl + 1 : NULL;

        char *s = ftb_trim(buf);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) PERR("expected 'key = value', got '%.60s'", s);
        *eq = 0;
        char *key = ftb_trim(s), *val = ftb_trim(eq + 1);
        if (!*key) PERR("missing key before '='");
        if (!*val) PERR("%s: missing value", key);

        if (strncmp(key, "source_", 7) == 0) {
            const char *fig = key + 7;
            int known = 0;
            for (int i = 0; i < K_N; i++) known |= strcmp(fig, keys[i]) == 0;
            if (!known) PERR("%s: there is no figure '%s' to give a source for", key, fig);
            if (ftb_profile_source(p, fig)) PERR("%s given twice", key);
            if (p->n_sources >= FTB_PROFILE_MAX_SOURCES) PERR("too many source_ lines");
            snprintf(p->source_key[p->n_sources], sizeof p->source_key[0], "%s", fig);
            snprintf(p->source_text[p->n_sources], sizeof p->source_text[0], "%s", val);
            p->n_sources++;
            continue;
        }
        if (strcmp(key, "alias") == 0) {
            /* Comma-separated, repeatable. */
            char *save = NULL;
            for (char *a = strtok_r(val, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
                a = ftb_trim(a);
                if (!valid_name(a)) PERR("alias: '%s' is not a valid name (use a-z 0-9 . _ -)", a);
                if (p->n_aliases >= FTB_PROFILE_MAX_ALIASES)
                    PERR("alias: more than %d aliases", FTB_PROFILE_MAX_ALIASES);
                snprintf(p->aliases[p->n_aliases++], sizeof p->aliases[0], "%s", a);
            }
            continue;
        }
        int k = -1;
        for (int i = 0; i < K_N; i++)
            if (strcmp(key, keys[i]) == 0) k = i;
        if (k < 0) PERR("unknown key '%s'", key);
        if (seen[k]) PERR("%s given twice", key);
        seen[k] = lineno;

        int is_auto = strcmp(val, "auto") == 0;
        int is_unknown = strcmp(val, "unknown") == 0;
        detected[k] = is_auto || is_unknown;
        double d;
        long l;
        switch (k) {
        case K_NAME:
            if (!valid_name(val)) PERR("name: '%s' is not a valid name (use a-z 0-9 . _ -)", val);
            snprintf(p->name, sizeof p->name, "%s", val);
            break;
        case K_ARCH:
            if (is_auto) {
                struct utsname u;
                snprintf(p->arch, sizeof p->arch, "%s", uname(&u) == 0 ? u.machine : "unknown");
                p->detected = 1;
            } else {
                snprintf(p->arch, sizeof p->arch, "%s", val);
            }
            break;
        case K_CORES:
            if (is_auto) {
                p->cores = ftb_host_cores();
                p->detected = 1;
            } else if (ftb_parse_long(val, 1, 4096, &l) == 0) {
                p->cores = (int)l;
            } else {
                PERR("cores: '%s' is not a whole number of cores (1..4096) or 'auto'", val);
            }
            break;
        case K_RAM:
            if (is_auto) {
                int64_t b = ftb_meminfo("MemTotal");
                if (b <= 0) PERR("ram_mb: auto, but MemTotal is unreadable in /proc/meminfo");
                p->ram_mb = (double)b / (1024.0 * 1024.0);
                p->detected = 1;
            } else if (ftb_parse_double(val, &d) == 0 && d > 0 && d <= 1e9) {
                p->ram_mb = d; /* at most 1 PiB: the budget in bytes must fit an int64 */
            } else {
                PERR("ram_mb: '%s' is not a number of MiB in (0, 1e9] or 'auto'", val);
            }
            break;
        case K_FRAC:
            if (ftb_parse_double(val, &d) != 0 || !(d > 0 && d <= 1))
                PERR("usable_fraction: '%s' is not a number in (0, 1]", val);
            p->usable_fraction = d;
            break;
        case K_BW:
        case K_GF:
            if (is_unknown) {
                d = 0;
            } else if (ftb_parse_double(val, &d) != 0 || !(d > 0)) {
                PERR("%s: '%s' is not a positive number or 'unknown'", key, val);
            }
            if (k == K_BW)
                p->mem_bandwidth_gbs = d;
            else
                p->peak_gflops_fp32 = d;
            break;
        case K_MODEL: snprintf(p->default_model, sizeof p->default_model, "%s", val); break;
        case K_DESC: snprintf(p->description, sizeof p->description, "%s", val); break;
        case K_DTYPE:
            if (ftb_dtype_parse(val) < 0)
                PERR("default_base_dtype: '%s' is not f32, bf16, f16, int8, int4 or int4-asym", val);
            snprintf(p->default_base_dtype, sizeof p->default_base_dtype, "%s", val);
            break;
        case K_GROUP:
            if (ftb_parse_long(val, 2, 1 << 20, &l) != 0 || l % 2)
                PERR("default_group: '%s' is not an even positive integer (int4 group size: 32, 64, 128)", val);
            p->default_group = (int)l;
            break;
        }
    }
    /* Whole-file checks: report the first missing key. */
    static const int required[] = { K_NAME, K_ARCH, K_CORES, K_RAM, K_FRAC, K_BW, K_GF, K_MODEL };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!seen[required[i]]) return ftb_errf(err, errlen, "%s: missing required key '%s'", fname, keys[required[i]]);
    for (int i = 0; figure_keys[i]; i++) {
        /* Every stated figure needs its provenance; `auto`/`unknown` are
         * self-explanatory but may still carry one. */
        int k = -1;
        for (int j = 0; j < K_N; j++)
            if (strcmp(keys[j], figure_keys[i]) == 0) k = j;
        if (!detected[k] && !ftb_profile_source(p, figure_keys[i]))
            return ftb_errf(err, errlen, "%s:%d: %s has no source_%s line saying where the figure comes from", fname,
                            seen[k], figure_keys[i], figure_keys[i]);
    }
    return 0;
}
#undef PERR

int ftb_profile_load(const char *path, ftb_profile *p, char *err, size_t errlen)
{
    /* A profile is a few dozen lines; 1 MiB is far past any. */
    char *text = ftb_input_read(path, "device profile", (size_t)1 << 20, NULL, err, errlen);
    if (!text) return -1;
    int rc = ftb_profile_parse(text, path, p, err, errlen);
    free(text);
    return rc;
}

static int cmp_profile(const void *a, const void *b)
{
    return strcmp(((const ftb_profile *)a)->name, ((const ftb_profile *)b)->name);
}

int ftb_profiles_load_dir(const char *dir, ftb_profile **out, int *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return ftb_errf(err, errlen, "cannot read profiles directory %s: %m", dir);
    ftb_profile *list = NULL;
    int count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 8 || strcmp(e->d_name + len - 8, ".profile") != 0 || e->d_name[0] == '.') continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            ftb_profile *nl = realloc(list, (size_t)cap * sizeof *list);
            if (!nl) {
                closedir(d);
                free(list);
                return ftb_errf(err, errlen, "out of memory");
            }
            list = nl;
        }
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (ftb_profile_load(path, &list[count], err, errlen) != 0) {
            closedir(d);
            free(list);
            return -1;
        }
        for (int i = 0; i < count; i++)
            if (strcmp(list[i].name, list[count].name) == 0) {
                ftb_errf(err, errlen, "%s: profile name '%s' is also used by %s", path, list[count].name, list[i].path);
                closedir(d);
                free(list);
                return -1;
            }
        count++;
    }
    closedir(d);
    if (count == 0) {
        free(list);
        return ftb_errf(err, errlen, "no *.profile files in %s", dir);
    }
    qsort(list, (size_t)count, sizeof *list, cmp_profile);
    *out = list;
    *n = count;
    return 0;
}

int ftb_profile_resolve(const ftb_profile *list, int n, const char *query, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i].name, query) == 0) return i;
    int found = -1;
    for (int i = 0; i < n; i++)
        for (int a = 0; a < list[i].n_aliases; a++)
            if (strcmp(list[i].aliases[a], query) == 0) {
                if (found >= 0 && found != i)
                    return ftb_errf(err, errlen, "device '%s' is an alias of both %s and %s", query, list[found].name,
                                    list[i].name);
                found = i;
            }
    if (found >= 0) return found;
    size_t ql = strlen(query);
    char cands[400] = "";
    int nc = 0;
    for (int i = 0; i < n; i++)
        if (ql && strncmp(list[i].name, query, ql) == 0) {
            found = i;
            nc++;
            size_t used = strlen(cands);
            snprintf(cands + used, sizeof cands - used, "%s%s", nc > 1 ? ", " : "", list[i].name);
        }
    if (nc == 1) return found;
    if (nc > 1) return ftb_errf(err, errlen, "device '%s' is ambiguous: it matches %s", query, cands);
    char all[600] = "";
    for (int i = 0; i < n; i++) {
        size_t used = strlen(all);
        snprintf(all + used, sizeof all - used, "%s%s", i ? ", " : "", list[i].name);
    }
    return ftb_errf(err, errlen, "unknown device '%s' (known: %s)", query, all);
}

const char *ftb_profiles_default_dir(void)
{
    static char dir[PATH_MAX];
    const char *env = getenv("FTBENCH_PROFILES_DIR");
    if (env && *env && ftb_is_dir(env)) return env;
    const char *exe = ftb_exe_dir();
    /* Build tree (build/ftbench → profiles/), then an installed layout
     * (bin/ftbench → share/ftbench/profiles), then the working directory. */
    const char *cands[] = { "%s/../profiles", "%s/../share/ftbench/profiles", NULL };
    for (int i = 0; exe[0] && cands[i]; i++) {
        char cand[PATH_MAX];
        snprintf(cand, sizeof cand, cands[i], exe);
        if (ftb_is_dir(cand) && realpath(cand, dir)) return dir;
    }
    if (ftb_is_dir("profiles")) return "profiles";
    return NULL;
}

int ftb_profile_find(const char *dir, const char *query, ftb_profile *out, char *err, size_t errlen)
{
    if (!dir) dir = ftb_profiles_default_dir();
    if (!dir)
        return ftb_errf(err, errlen, "no profiles directory found (give --profiles-dir or set FTBENCH_PROFILES_DIR)");
    ftb_profile *list;
    int n;
    if (ftb_profiles_load_dir(dir, &list, &n, err, errlen) != 0) return -1;
    int i = ftb_profile_resolve(list, n, query, err, errlen);
    if (i >= 0) *out = list[i];
    free(list);
    return i >= 0 ? 0 : -1;
}

int ftb_profile_matches(const ftb_profile *p, const char *arch, int cores, double ram_mb, int cpu_emulated, char *why,
                        size_t whylen)
{
    if (strcmp(p->arch, arch) != 0) {
        snprintf(why, whylen, "architecture %s, not the profile's %s", arch, p->arch);
        return 0;
    }
    if (cpu_emulated) {
        snprintf(why, whylen, "the %s CPU is emulated", arch);
        return 0;
    }
    if (cores != p->cores) {
        snprintf(why, whylen, "%d cores, not the profile's %d", cores, p->cores);
        return 0;
    }
    if (!(ram_mb >= p->ram_mb * (1 - FTB_PROFILE_RAM_TOLERANCE) && ram_mb <= p->ram_mb * 1.05)) {
        snprintf(why, whylen, "%.0f MiB of RAM, not within %.0f%% below or 5%% above the profile's %.0f MiB", ram_mb,
                 FTB_PROFILE_RAM_TOLERANCE * 100, p->ram_mb);
        return 0;
    }
    snprintf(why, whylen, "device profile match: %s, %d cores, %.0f MiB of the profile's %.0f MiB RAM", arch, cores,
             ram_mb, p->ram_mb);
    return 1;
}

int ftb_profile_adopt_host(ftb_profile *p)
{
    const ftb_cpu_info *cpu = ftb_cpu();
    int64_t mem = ftb_meminfo("MemTotal");
    double ram_mb = mem > 0 ? (double)mem / (1024.0 * 1024.0) : 0;
    char why[sizeof p->host_match];
    if (!ftb_profile_matches(p, cpu->arch, ftb_host_cores(), ram_mb, cpu->emulated, why, sizeof why)) return 0;
    snprintf(p->host_match, sizeof p->host_match, "%s", why);
    p->cores = ftb_host_cores();
    p->ram_mb = ram_mb;
    return 1;
}
