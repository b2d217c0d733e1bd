/*
 * test_profiles.c — device profiles (suite "profiles"): the repository's
 * profiles load and name real zoo models, lookup by name/alias/prefix,
 * and every kind of malformed file is reported with file and line.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftbench.h"
#include "profile.h"

static const char *good = "# a comment\n"
                          "name = testdev\n"
                          "alias = td, tdev\n"
                          "description = A test device\n"
                          "arch = aarch64\n"
                          "cores = 4\n"
                          "source_cores = a data sheet\n"
                          "ram_mb = 2048\n"
                          "source_ram_mb = a data sheet\n"
                          "usable_fraction = 0.5\n"
                          "source_usable_fraction = an assumption\n"
                          "mem_bandwidth_gbs = 10\n"
                          "source_mem_bandwidth_gbs = derived\n"
                          "peak_gflops_fp32 = unknown\n"
                          "default_model = tiny\n";

Test(profiles, parses_a_good_profile)
{
    ftb_profile p;
    char err[512];
    cr_assert_eq(ftb_profile_parse(good, "t.profile", &p, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(p.name, "testdev");
    cr_expect_eq(p.n_aliases, 2);
    cr_expect_str_eq(p.aliases[1], "tdev");
    cr_expect_eq(p.cores, 4);
    cr_expect_eq(p.ram_mb, 2048);
    cr_expect_eq(p.usable_fraction, 0.5);
    cr_expect_eq(p.mem_bandwidth_gbs, 10);
    cr_expect_eq(p.peak_gflops_fp32, 0, "unknown is 0");
    cr_expect_eq(ftb_profile_budget_bytes(&p), 1024LL * 1024 * 1024);
    cr_expect_str_eq(ftb_profile_source(&p, "ram_mb"), "a data sheet");
    cr_expect_eq(p.detected, 0);
}

/* Replaces the line starting with `key` in the good profile by `repl`
 * (or appends repl when key is NULL). */
static char *variant(const char *key, const char *repl)
{
    static char buf[4096];
    buf[0] = 0;
    const char *line = good;
    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t len = (size_t)(nl - line) + 1;
        if (key && !strncmp(line, key, strlen(key)) && line[strlen(key)] == ' ') {
            strcat(buf, repl);
            key = NULL;
        } else {
            strncat(buf, line, len);
        }
        line += len;
    }
    if (repl && key == NULL && !strstr(buf, repl)) strcat(buf, repl);
    return buf;
}

static void expect_error(const char *text, const char *needle)
{
    ftb_profile p;
    char err[512] = "";
    cr_expect_neq(ftb_profile_parse(text, "bad.profile", &p, err, sizeof err), 0, "accepted:\n%s", text);
    cr_expect(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
    cr_expect(strncmp(err, "bad.profile", 11) == 0, "error does not name the file: %s", err);
}

Test(profiles, malformed_profiles_name_file_and_line)
{
    expect_error(variant("cores", "cores = many\n"), "bad.profile:6: cores: 'many'");
    expect_error(variant("cores", "cores four\n"), "bad.profile:6: expected 'key = value'");
    expect_error(variant("ram_mb", "ram_mb = -5\n"), "bad.profile:8: ram_mb");
    expect_error(variant("usable_fraction", "usable_fraction = 1.5\n"), ":10: usable_fraction");
    expect_error(variant("mem_bandwidth_gbs", "mem_bandwidth_gbs = fast\n"), ":12: mem_bandwidth_gbs");
    expect_error(variant("arch", "colour = blue\n"), ":5: unknown key 'colour'");
    expect_error(variant("arch", "= aarch64\n"), ":5: missing key");
    expect_error(variant("arch", "arch =\n"), ":5: arch: missing value");
    expect_error(variant("name", "name = Bad Name\n"), ":2: name: 'Bad Name'");
    expect_error(variant("alias", "alias = ok, not ok\n"), ":3: alias");
    expect_error(variant("source_cores", "source_colour = x\n"), ":7: source_colour");
    expect_error(variant("description", "cores = 8\n"), ":6: cores given twice");
    /* Whole-file problems. */
    expect_error(variant("default_model", "\n"), "missing required key 'default_model'");
    expect_error(variant("source_ram_mb", "\n"), "ram_mb has no source_ram_mb line");
    expect_error("", "missing required key 'name'");
}

Test(profiles, detected_figures_need_no_source)
{
    const char *host = "name = h\narch = auto\ncores = auto\nram_mb = auto\nusable_fraction = 0.8\n"
                       "source_usable_fraction = x\nmem_bandwidth_gbs = unknown\npeak_gflops_fp32 = unknown\n"
                       "default_model = tiny\n";
    ftb_profile p;
    char err[512];
    cr_assert_eq(ftb_profile_parse(host, "h.profile", &p, err, sizeof err), 0, "%s", err);
    cr_expect_eq(p.detected, 1);
    cr_expect_eq(p.cores, (int)sysconf(_SC_NPROCESSORS_ONLN));
    cr_expect(p.ram_mb > 64);
    cr_expect(p.arch[0] != 0);
}

Test(profiles, repository_profiles_load_and_use_zoo_models)
{
    ftb_profile *list;
    int n;
    char err[512];
    cr_assert_eq(ftb_profiles_load_dir("profiles", &list, &n, err, sizeof err), 0, "%s", err);
    const char *required[] = { "host",    "rpi5-4gb",      "rpi5-8gb",    "rpi4-4gb", "jetson-orin-nano-8gb",
                               "pixel-8", "iphone-15-pro", "laptop-16gb", NULL };
    for (int r = 0; required[r]; r++) {
        int found = 0;
        for (int i = 0; i < n; i++) found |= !strcmp(list[i].name, required[r]);
        cr_expect(found, "no profile %s", required[r]);
    }
    for (int i = 0; i < n; i++) {
        ftb_config cfg;
        cr_expect_eq(ftb_zoo_get(list[i].default_model, &cfg), 0, "%s: default_model %s is not in the zoo",
                     list[i].name, list[i].default_model);
        cr_expect(ftb_profile_budget_bytes(&list[i]) > 0);
        if (!list[i].detected) {
            cr_expect(list[i].mem_bandwidth_gbs > 0 && list[i].peak_gflops_fp32 > 0,
                      "%s: a device profile needs figures for the roofline", list[i].name);
            cr_expect(ftb_profile_source(&list[i], "peak_gflops_fp32") != NULL);
        }
    }
    free(list);
}

Test(profiles, resolve_by_name_alias_and_unique_prefix)
{
    ftb_profile *list;
    int n;
    char err[512];
    cr_assert_eq(ftb_profiles_load_dir("profiles", &list, &n, err, sizeof err), 0, "%s", err);
    int i;
    i = ftb_profile_resolve(list, n, "rpi5-4gb", err, sizeof err);
    cr_assert(i >= 0);
    cr_expect_str_eq(list[i].name, "rpi5-4gb");
    i = ftb_profile_resolve(list, n, "rpi5", err, sizeof err);
    cr_assert(i >= 0, "%s", err);
    cr_expect_str_eq(list[i].name, "rpi5-8gb", "rpi5 is an alias of the 8 GB board");
    i = ftb_profile_resolve(list, n, "jets", err, sizeof err);
    cr_assert(i >= 0, "%s", err);
    cr_expect_str_eq(list[i].name, "jetson-orin-nano-8gb");
    i = ftb_profile_resolve(list, n, "iphone", err, sizeof err);
    cr_assert(i >= 0, "%s", err);
    cr_expect_str_eq(list[i].name, "iphone-15-pro");
    cr_expect_lt(ftb_profile_resolve(list, n, "rpi", err, sizeof err), 0);
    cr_expect(strstr(err, "ambiguous") && strstr(err, "rpi4-4gb") && strstr(err, "rpi5-8gb"), "%s", err);
    cr_expect_lt(ftb_profile_resolve(list, n, "toaster", err, sizeof err), 0);
    cr_expect(strstr(err, "unknown device 'toaster'") && strstr(err, "host"), "%s", err);
    free(list);
}

Test(profiles, a_malformed_file_in_the_directory_is_reported)
{
    char dir[] = "/tmp/ftbprof-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/good.profile", dir);
    FILE *f = fopen(path, "w");
    fputs(good, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/broken.profile", dir);
    f = fopen(path, "w");
    fputs("name = broken\ncores = 0\n", f);
    fclose(f);
    ftb_profile *list;
    int n;
    char err[512];
    cr_expect_neq(ftb_profiles_load_dir(dir, &list, &n, err, sizeof err), 0);
    cr_expect(strstr(err, "broken.profile:2: cores") != NULL, "%s", err);
    unlink(path);
    /* Two files claiming one name. */
    snprintf(path, sizeof path, "%s/again.profile", dir);
    f = fopen(path, "w");
    fputs(good, f);
    fclose(f);
    cr_expect_neq(ftb_profiles_load_dir(dir, &list, &n, err, sizeof err), 0);
    cr_expect(strstr(err, "also used by") != NULL, "%s", err);
    unlink(path);
    snprintf(path, sizeof path, "%s/good.profile", dir);
    unlink(path);
    cr_expect_neq(ftb_profiles_load_dir(dir, &list, &n, err, sizeof err), 0);
    cr_expect(strstr(err, "no *.profile files") != NULL, "%s", err);
    rmdir(dir);
}
