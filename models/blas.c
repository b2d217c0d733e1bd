/* blas.c — choosing the BLAS kernel, threads, and measuring sgemm.
 *
 * Debian's OpenBLAS is built with DYNAMIC_ARCH and picks its kernel from the
 * CPU id when it loads.  Under some hypervisors it does not recognise the CPU
 * and falls back to a generic SSE kernel (Prescott), about 5x slower than its
 * AVX-512 kernels on the same machine.  OPENBLAS_CORETYPE overrides the
 * choice, but it is read when the library loads, so the only way to apply a
 * better choice is to re-execute the program with it set.  Before choosing,
 * each candidate is self-tested in a child process: correct against a
 * double-precision reference, then timed; the fastest correct one wins.  The
 * choice is cached per CPU and library so later runs pay nothing. */
#include "ftbench.h"
#include "safe_file.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char cpu_flags[4096];
static char cpu_model[256];
static char features[512];

static void read_cpuinfo(void)
{
    if (cpu_flags[0] || cpu_model[0]) return;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *v = colon + 1;
        while (*v == ' ') v++;
        v[strcspn(v, "\n")] = 0;
        if (!cpu_flags[0] && (strncmp(line, "flags", 5) == 0 || strncmp(line, "Features", 8) == 0))
            snprintf(cpu_flags, sizeof cpu_flags, " %s ", v);
        if (!cpu_model[0] && strncmp(line, "model name", 10) == 0) snprintf(cpu_model, sizeof cpu_model, "%s", v);
    }
    fclose(f);
}

static int has_flag(const char *flag)
{
    char pat[64];
    snprintf(pat, sizeof pat, " %s ", flag);
    return strstr(cpu_flags, pat) != NULL;
}

const char *ftb_cpu_features(void)
{
    if (features[0]) return features;
    read_cpuinfo();
    static const char *interesting[] = { "sse4_2",   "avx",      "avx2",        "fma",         "f16c",     "avx512f",
                                         "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd",
                                         "asimdhp",  "asimddp",  "sve",         "sve2",        "bf16",     "i8mm" };
    size_t n = 0;
    for (size_t i = 0; i < sizeof interesting / sizeof *interesting; i++)
        if (has_flag(interesting[i]))
            n += (size_t)snprintf(features + n, sizeof features - n, "%s%s", n ? " " : "", interesting[i]);
    if (!n) snprintf(features, sizeof features, "unknown");
    return features;
}

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

/* Child side: run by the re-executed binary with FTBENCH_BLAS_SELFTEST=1. */
static void run_selftest_child(void)
{
    openblas_set_num_threads(1);
    double err = sgemm_selftest_error();
    double gf = ftb_sgemm_gflops(384, 384, 384, 3);
    printf("%s %.3g %.2f\n", err < 1e-5 ? "ok" : "bad", err, gf);
    fflush(stdout);
    _exit(0);
}

/* Runs one candidate in a child; returns its GFLOP/s, or -1 if it failed. */
static double try_candidate(const char *core, char **argv)
{
    int fd[2];
    if (pipe(fd)) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 1);
        setenv("OPENBLAS_CORETYPE", core, 1);
        setenv("FTBENCH_BLAS_SELFTEST", "1", 1);
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
    waitpid(pid, &status, 0);
    char verdict[8];
    double err, gf;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
    if (sscanf(buf, "%7s %lf %lf", verdict, &err, &gf) != 3 || strcmp(verdict, "ok") != 0) return -1;
    return gf;
}

static int is_generic_kernel(const char *core)
{
    /* Tests exercise the selection on machines whose kernel is already good. */
    if (getenv("FTBENCH_BLAS_PRETEND_GENERIC")) return 1;
    /* Kernels that leave AVX2/AVX-512 units idle on CPUs that have them. */
    static const char *generic[] = { "Prescott",   "Core2",       "Penryn",     "Dunnington",  "Nehalem",
                                     "Atom",       "Katmai",      "Coppermine", "Northwood",   "Banias",
                                     "Opteron",    "Barcelona",   "Bobcat",     "Sandybridge", "Bulldozer",
                                     "Piledriver", "Steamroller", "Excavator",  "Unknown" };
    for (size_t i = 0; i < sizeof generic / sizeof *generic; i++)
        if (strcasecmp(core, generic[i]) == 0) return 1;
    if (has_flag("avx512f") && (strcasecmp(core, "Haswell") == 0 || strcasecmp(core, "Zen") == 0)) return 1;
    return 0;
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
    /* Key: CPU model, its flags and the library build, hashed (FNV-1a). */
    uint64_t h = 1469598103934665603ULL;
    const char *parts[] = { cpu_model, cpu_flags, openblas_get_config() };
    for (int p = 0; p < 3; p++)
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
        if (reexec) execv("/proc/self/exe", argv);
        return;
    }
    const char *auto_env = getenv("FTBENCH_BLAS_AUTO");
    read_cpuinfo();
    const char *current = ftb_blas_corename();
    if ((auto_env && strcmp(auto_env, "0") == 0) || !is_generic_kernel(current)) {
        if (reexec) execv("/proc/self/exe", argv);
        return;
    }

    char path[1100], chosen[64] = "";
    cache_path(path, sizeof path);
    FILE *f = path[0] ? fopen(path, "r") : NULL;
    if (f) {
        if (!fgets(chosen, sizeof chosen, f)) chosen[0] = 0;
        chosen[strcspn(chosen, "\n")] = 0;
        fclose(f);
    }
    if (!chosen[0]) {
        const char *candidates[4];
        int n = 0;
        if (has_flag("avx512f")) {
            if (has_flag("avx512_bf16")) candidates[n++] = "Cooperlake";
            candidates[n++] = "SkylakeX";
        }
        if (has_flag("avx2") && has_flag("fma")) candidates[n++] = "Haswell";
        double best = try_candidate(current, argv) * 1.05; /* a challenger must beat it clearly */
        snprintf(chosen, sizeof chosen, "%s", current);
        for (int i = 0; i < n; i++) {
            double gf = try_candidate(candidates[i], argv);
            fprintf(stderr, "ftbench: BLAS self-test %-10s %s\n", candidates[i], gf < 0 ? "failed" : "passed");
            if (gf > best) {
                best = gf;
                snprintf(chosen, sizeof chosen, "%s", candidates[i]);
            }
        }
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
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the default kernel */
    unsetenv("OPENBLAS_CORETYPE");
}
