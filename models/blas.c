/* blas.c — choosing the BLAS kernel, threads, and measuring sgemm.
 *
 * Debian's OpenBLAS is built with DYNAMIC_ARCH and picks its kernel from the
 * CPU id when it loads.  Under some hypervisors it does not recognise the CPU
 * and falls back to a generic SSE kernel (Prescott), about 5x slower than its
 * AVX-512 kernels on the same machine; on arm64, 0.3.21 does not know the
 * Cortex-A76 (Raspberry Pi 5) and runs its portable armv8 kernel.
 * OPENBLAS_CORETYPE overrides the choice, but it is read when the library
 * loads, so the only way to apply a better choice is to re-execute the
 * program with it set.  Before choosing, each candidate for this CPU (cpu.c:
 * x86 flags, or arm64's MIDR and hardware capabilities) is self-tested in a
 * child process: correct against a double-precision reference, then timed;
 * the fastest correct one wins.  A candidate whose child dies of SIGILL
 * uses instructions the CPU lacks and is skipped.  Under emulation (qemu)
 * timings measure the emulator, so the first correct candidate wins, the
 * kernel written for this core first, and the record says so.  The choice
 * is cached per CPU and library so later runs pay nothing. */
#include "blas.h"
#include "cpu.h"
#include "ftbench.h"
#include "safe_file.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Feature test against the space-separated list of cpu.c. */
static int has_flag(const char *flag)
{
    char list[600], pat[64];
    snprintf(list, sizeof list, " %s ", ftb_cpu()->features);
    snprintf(pat, sizeof pat, " %s ", flag);
    return strstr(list, pat) != NULL;
}

const char *ftb_cpu_features(void) { return ftb_cpu()->features; }

const char *ftb_blas_corename(void)
{
    const char *s = openblas_get_corename();
    return s ? s : "unknown";
}

static const char *selection = "default";
const char *ftb_blas_selection(void) { return selection; }

void ftb_set_threads(int n)
{
    if (n < 1) n = 1;
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

int ftb_get_threads(void) { return openblas_get_num_threads(); }

double ftb_sgemm_gflops(int M, int N, int K, int reps)
{
    float *a = malloc(sizeof(float) * (size_t)M * K), *b = malloc(sizeof(float) * (size_t)N * K),
          *c = malloc(sizeof(float) * (size_t)M * N);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0;
    }
    ftb_fill_normal(a, (int64_t)M * K, 1.0f, 1);
    ftb_fill_normal(b, (int64_t)N * K, 1.0f, 2);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) { /* first run warms caches and threads */
        double t0 = ftb_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        double t = ftb_now() - t0;
        if (r > 0 && t < best) best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * M * N * K / best / 1e9;
}

/* Correctness of the loaded kernel on shapes that exercise edge tiles and
 * all transpose modes, against a double reference.  Returns the worst
 * relative error. */
static double sgemm_selftest_error(void)
{
    static const int shapes[][3] = { { 67, 45, 129 }, { 128, 96, 64 }, { 1, 257, 33 }, { 300, 17, 200 } };
    double worst = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * N * K),
                      *c = malloc(sizeof(float) * M * N);
                ftb_fill_normal(a, (int64_t)M * K, 1.0f, 10 + s);
                ftb_fill_normal(b, (int64_t)N * K, 1.0f, 20 + s);
                /* a is [M,K] or stored transposed [K,M]; b is [K,N] or [N,K]. */
                cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
                            1.0f, a, ta ? M : K, b, tb ? K : N, 0.0f, c, N);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double ref = 0, mag = 0;
                        for (int k = 0; k < K; k++) {
                            double x = ta ? a[k * M + i] : a[i * K + k];
                            double y = tb ? b[j * K + k] : b[k * N + j];
                            ref += x * y;
                            mag += fabs(x * y);
                        }
                        double e = fabs(ref - c[i * N + j]) / (mag + 1e-30);
                        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
                    }
                free(a);
                free(b);
                free(c);
            }
    }
    return worst;
}

/* Child side: run by the re-executed binary with FTBENCH_BLAS_SELFTEST=1
 * (=correctness: no timing, under emulation).  Prints the verdict, the
 * worst error, GFLOP/s (0 when not timed) and the kernel actually loaded:
 * OpenBLAS falls back to its own choice for a name it has no kernel for. */
static void run_selftest_child(void)
{
    openblas_set_num_threads(1);
    /* Fault injection for the tests: the named kernel's self-test executes
     * an illegal instruction, as a kernel built for instructions this CPU
     * lacks does (ci runs the real case: x86 without AVX-512). */
    const char *ill = getenv("FTBENCH_BLAS_TEST_SIGILL"), *core = getenv("OPENBLAS_CORETYPE");
    if (ill && core && strcasecmp(ill, core) == 0) {
#if defined(__aarch64__)
        __asm__ volatile(".inst 0x00000000"); /* udf #0 */
#elif defined(__x86_64__)
        __asm__ volatile("ud2");
#endif
        raise(SIGILL);
    }
    double err = sgemm_selftest_error();
    const char *mode = getenv("FTBENCH_BLAS_SELFTEST");
    double gf = strcmp(mode, "correctness") == 0 ? 0 : ftb_sgemm_gflops(384, 384, 384, 3);
    printf("%s %.3g %.2f %s\n", err < 1e-5 ? "ok" : "bad", err, gf, ftb_blas_corename());
    fflush(stdout);
    _exit(0);
}

enum { CAND_FAILED = -1, CAND_SIGILL = -2, CAND_ABSENT = -3 };

/* Runs one candidate in a child; returns its GFLOP/s (0 when untimed), or
 * a CAND_ code: wrong results or a crash, killed by SIGILL (the kernel uses
 * instructions this CPU lacks), or no such kernel in this OpenBLAS. */
static double try_candidate(const char *core, char **argv, int timed)
{
    int fd[2];
    if (pipe(fd)) return CAND_FAILED;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return CAND_FAILED;
    }
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 1);
        setenv("OPENBLAS_CORETYPE", core, 1);
        setenv("FTBENCH_BLAS_SELFTEST", timed ? "1" : "correctness", 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fd[1]);
    char buf[256] = { 0 };
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    close(fd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGILL) return CAND_SIGILL;
    char verdict[8], loaded[64];
    double err, gf;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return CAND_FAILED;
    if (sscanf(buf, "%7s %lf %lf %63s", verdict, &err, &gf, loaded) != 4) return CAND_FAILED;
    if (strcasecmp(loaded, core) != 0) return CAND_ABSENT;
    if (strcmp(verdict, "ok") != 0) return CAND_FAILED;
    return gf;
}

static const char *candidate_outcome(double r)
{
    if (r == CAND_SIGILL) return "skipped: killed by SIGILL (instructions this CPU lacks)";
    if (r == CAND_ABSENT) return "skipped: this OpenBLAS has no such kernel";
    if (r < 0) return "failed";
    return "passed";
}

static int is_generic_kernel(const char *core)
{
    /* Tests exercise the selection on machines whose kernel is already good. */
    if (getenv("FTBENCH_BLAS_PRETEND_GENERIC")) return 1;
    /* Kernels that leave AVX2/AVX-512 units idle on CPUs that have them,
     * and ARM's portable armv8 kernel (what 0.3.21 runs on a Cortex-A76). */
    static const char *generic[] = { "Prescott",   "Core2",       "Penryn",     "Dunnington",  "Nehalem",
                                     "Atom",       "Katmai",      "Coppermine", "Northwood",   "Banias",
                                     "Opteron",    "Barcelona",   "Bobcat",     "Sandybridge", "Bulldozer",
                                     "Piledriver", "Steamroller", "Excavator",  "Unknown",     "armv8" };
    for (size_t i = 0; i < sizeof generic / sizeof *generic; i++)
        if (strcasecmp(core, generic[i]) == 0) return 1;
    if (has_flag("avx512f") && (strcasecmp(core, "Haswell") == 0 || strcasecmp(core, "Zen") == 0)) return 1;
    return 0;
}

/* The kernels OpenBLAS 0.3.21 has for arm64 (driver/others/dynamic_arm64.c)
 * and what each needs; the SVE ones die of SIGILL without SVE. */
static const struct {
    const char *core, *needs;
} arm_kernels[] = {
    { "NEOVERSEN1", "asimd" }, { "CORTEXA72", "asimd" }, { "CORTEXA73", "asimd" },     { "CORTEXA57", "asimd" },
    { "CORTEXA55", "asimd" },  { "CORTEXA53", "asimd" }, { "THUNDERX2T99", "asimd" },  { "TSV110", "asimd" },
    { "EMAG8180", "asimd" },   { "FALKOR", "asimd" },    { "THUNDERX3T110", "asimd" }, { "THUNDERX", "asimd" },
    { "NEOVERSEV1", "sve" },   { "NEOVERSEN2", "sve" },
};

/* The kernel written for this core (by MIDR part), tried first. */
static const char *arm_kernel_for(uint64_t midr)
{
    unsigned impl = (unsigned)(midr >> 24) & 0xff, part = (unsigned)(midr >> 4) & 0xfff;
    static const struct {
        unsigned impl, part;
        const char *core;
    } map[] = {
        { 0x41, 0xd0a, "NEOVERSEN1" },   { 0x41, 0xd0b, "NEOVERSEN1" }, { 0x41, 0xd0c, "NEOVERSEN1" },
        { 0x41, 0xd0d, "NEOVERSEN1" },   { 0x41, 0xd41, "NEOVERSEN1" }, { 0x41, 0xd42, "NEOVERSEN1" },
        { 0x41, 0xd44, "NEOVERSEN1" },   { 0x41, 0xd4b, "NEOVERSEN1" }, { 0x41, 0xd08, "CORTEXA72" },
        { 0x41, 0xd09, "CORTEXA73" },    { 0x41, 0xd07, "CORTEXA57" },  { 0x41, 0xd03, "CORTEXA53" },
        { 0x41, 0xd04, "CORTEXA53" },    { 0x41, 0xd05, "CORTEXA55" },  { 0x41, 0xd46, "CORTEXA55" },
        { 0x41, 0xd80, "CORTEXA55" },    { 0x41, 0xd40, "NEOVERSEV1" }, { 0x41, 0xd49, "NEOVERSEN2" },
        { 0x41, 0xd47, "NEOVERSEN2" },   { 0x41, 0xd48, "NEOVERSEN2" }, { 0x41, 0xd4d, "NEOVERSEN2" },
        { 0x41, 0xd4e, "NEOVERSEN2" },   { 0x41, 0xd4f, "NEOVERSEN2" }, { 0x43, 0x0a1, "THUNDERX" },
        { 0x43, 0x0af, "THUNDERX2T99" }, { 0x48, 0xd01, "TSV110" },     { 0x50, 0x000, "EMAG8180" },
        { 0x51, 0xc00, "FALKOR" },
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (map[i].impl == impl && map[i].part == part) return map[i].core;
    return NULL;
}

#define MAX_CANDIDATES 24

/* Candidates for this CPU, best guess first.  FTBENCH_BLAS_CANDIDATES
 * (comma-separated) replaces the list and its feature filter: to try a
 * kernel by hand, or to show that one this CPU cannot run is skipped. */
static int list_candidates(char names[][32])
{
    int n = 0;
    const char *forced = getenv("FTBENCH_BLAS_CANDIDATES");
    if (forced && *forced) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", forced);
        char *save = NULL;
        for (char *t = strtok_r(tmp, ",", &save); t && n < MAX_CANDIDATES; t = strtok_r(NULL, ",", &save))
            if (*t) snprintf(names[n++], 32, "%s", t);
        return n;
    }
    const ftb_cpu_info *cpu = ftb_cpu();
    if (!strcmp(cpu->arch, "aarch64")) {
        const char *own = arm_kernel_for(cpu->midr);
        if (own)
            for (size_t i = 0; i < sizeof arm_kernels / sizeof *arm_kernels; i++)
                if (!strcmp(arm_kernels[i].core, own) && has_flag(arm_kernels[i].needs))
                    snprintf(names[n++], 32, "%s", own);
        for (size_t i = 0; i < sizeof arm_kernels / sizeof *arm_kernels && n < MAX_CANDIDATES; i++)
            if (has_flag(arm_kernels[i].needs) && !(own && !strcmp(own, arm_kernels[i].core)))
                snprintf(names[n++], 32, "%s", arm_kernels[i].core);
        return n;
    }
    if (has_flag("avx512f")) {
        if (has_flag("avx512_bf16")) snprintf(names[n++], 32, "Cooperlake");
        snprintf(names[n++], 32, "SkylakeX");
    }
    if (has_flag("avx2") && has_flag("fma")) snprintf(names[n++], 32, "Haswell");
    return n;
}

static void cache_path(char *out, size_t len)
{
    const char *base = getenv("XDG_CACHE_HOME");
    char dir[900];
    if (base && *base)
        snprintf(dir, sizeof dir, "%.800s/ftbench", base);
    else {
        /* The user's own home, from the password database when HOME is
         * unset: never a shared directory such as /tmp, where anyone could
         * plant the cache file (or a link in its place).  No home: no
         * cache. */
        const char *home = getenv("HOME");
        struct passwd *pw = home && *home ? NULL : getpwuid(geteuid());
        if (pw) home = pw->pw_dir;
        if (!home || !*home) {
            out[0] = 0;
            return;
        }
        snprintf(dir, sizeof dir, "%.800s/.cache/ftbench", home);
    }
    /* Key: what the process sees of its CPU (architecture, MIDR or model
     * name, hardware capabilities or flags, emulated or not), the library
     * build and any forced candidate list, hashed (FNV-1a). */
    const ftb_cpu_info *cpu = ftb_cpu();
    char ids[160];
    snprintf(ids, sizeof ids, "%s %llx %llx %llx %d", cpu->arch, (unsigned long long)cpu->midr,
             (unsigned long long)cpu->hwcap, (unsigned long long)cpu->hwcap2, cpu->emulated);
    const char *forced = getenv("FTBENCH_BLAS_CANDIDATES");
    uint64_t h = 1469598103934665603ULL;
    const char *parts[] = { ids, cpu->model, cpu->features, openblas_get_config(), forced ? forced : "" };
    for (int p = 0; p < 5; p++)
        for (const char *c = parts[p]; c && *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    snprintf(out, len, "%s/blas-coretype-%016llx", dir, (unsigned long long)h);
}

static void mkdir_parents(const char *path)
{
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
}

static const char *basis = "";
const char *ftb_blas_selection_basis(void) { return basis; }

/* Self-tests the candidates and returns the choice in chosen.  On real
 * hardware the fastest correct kernel wins (the current one must be beaten
 * by 5 %); under emulation timings measure the emulator, so the first
 * correct candidate in order (the kernel written for this core first)
 * wins. */
static void choose(const char *current, char **argv, int emulated, char *chosen, size_t len)
{
    char names[MAX_CANDIDATES][32];
    int n = list_candidates(names);
    snprintf(chosen, len, "%s", current);
    double best = emulated ? 0 : try_candidate(current, argv, 1) * 1.05;
    for (int i = 0; i < n; i++) {
        double r = try_candidate(names[i], argv, !emulated);
        fprintf(stderr, "ftbench: BLAS self-test %-13s %s\n", names[i], candidate_outcome(r));
        if (r < 0) continue;
        if (emulated) {
            snprintf(chosen, len, "%.31s", names[i]);
            return;
        }
        if (r > best) {
            best = r;
            snprintf(chosen, len, "%.31s", names[i]);
        }
    }
}

void ftb_blas_autoselect(int argc, char **argv)
{
    (void)argc;
    if (getenv("FTBENCH_BLAS_SELFTEST")) run_selftest_child();
    /* OpenMP threads that spin after a parallel region take the core that
     * OpenBLAS's threads need next (measured: a third of the step time on
     * 2 cores), so they must sleep; libgomp reads this when it loads. */
    int reexec = 0;
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        reexec = 1;
    }
    if (getenv("OPENBLAS_CORETYPE")) {
        selection = getenv("FTBENCH_BLAS_SELECTED") ? "auto" : "user";
        basis = getenv("FTBENCH_BLAS_BASIS") ? getenv("FTBENCH_BLAS_BASIS") : "";
        if (reexec) execv("/proc/self/exe", argv);
        return;
    }
    const char *auto_env = getenv("FTBENCH_BLAS_AUTO");
    const char *current = ftb_blas_corename();
    if ((auto_env && strcmp(auto_env, "0") == 0) || !is_generic_kernel(current)) {
        if (reexec) execv("/proc/self/exe", argv);
        return;
    }

    int emulated = ftb_cpu()->emulated;
    char path[1100], chosen[64] = "";
    cache_path(path, sizeof path);
    FILE *f = path[0] ? fopen(path, "r") : NULL;
    if (f) {
        if (!fgets(chosen, sizeof chosen, f)) chosen[0] = 0;
        chosen[strcspn(chosen, "\n")] = 0;
        fclose(f);
    }
    if (!chosen[0]) {
        choose(current, argv, emulated, chosen, sizeof chosen);
        if (path[0]) mkdir_parents(path);
        f = path[0] ? ftb_sf_fopen_w(path) : NULL; /* never through a link (safe_file.h) */
        if (f) {
            fprintf(f, "%s\n", chosen);
            ftb_sf_fclose(f);
        }
    }
    if (strcasecmp(chosen, current) == 0) {
        if (reexec) execv("/proc/self/exe", argv);
        return;
    }
    setenv("OPENBLAS_CORETYPE", chosen, 1);
    setenv("FTBENCH_BLAS_SELECTED", "auto", 1);
    setenv("FTBENCH_BLAS_BASIS",
           emulated ? "correctness (emulated CPU: timings would measure the emulator)"
                    : "speed (fastest correct kernel)",
           1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the default kernel */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("FTBENCH_BLAS_SELECTED");
    unsetenv("FTBENCH_BLAS_BASIS");
}
