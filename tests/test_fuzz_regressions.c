/*
 * test_fuzz_regressions.c — suite "fuzz_regressions": replays every fuzz
 * target's seed corpus (tests/fuzz/corpus/<target>/) and every input a
 * fuzzer ever crashed on (tests/fuzz/regressions/<target>/) through the
 * same function the libFuzzer target calls, under `make test` and — where
 * ASan and UBSan watch — `make test SAN=1`.
 *
 * The test binary is built from the .c files of tests/ only, so the
 * targets' files are #included here: each tests/fuzz/fuzz_<name>.c defines
 * fuzz_<name>_one(data, size) and, only when built as a fuzzer
 * (FTB_FUZZ_MAIN), LLVMFuzzerTestOneInput.  One copy of each target's code,
 * no list of calls to keep in step.
 *
 * Each input runs in a child process, so a crash names its file and the
 * other inputs still run; under ASan the child also runs LeakSanitizer
 * before it exits.  Seeds must be accepted (they are valid files);
 * regressions must merely not crash, leak or trip a check.
 * tests/fuzz/regressions/KNOWN_OPEN lists inputs of bugs not fixed yet
 * ("target/file  reason"): those are skipped, and named in the output.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <sys/wait.h>

#include "fuzz/fuzz_checkpoint.c"
#include "fuzz/fuzz_cli.c"
#include "fuzz/fuzz_config.c"
#include "fuzz/fuzz_dataset_bin.c"
#include "fuzz/fuzz_dataset_jsonl.c"
#include "fuzz/fuzz_instr_jsonl.c"
#include "fuzz/fuzz_profile.c"
#include "fuzz/fuzz_report.c"
#include "fuzz/fuzz_safetensors.c"
#include "fuzz/fuzz_tokenizer.c"

#if defined(__SANITIZE_ADDRESS__)
#define FZ_HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FZ_HAVE_LSAN 1
#endif
#endif
#ifdef FZ_HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#define FZ_DIR "tests/fuzz"

typedef int (*fz_target_fn)(const uint8_t *data, size_t size);

static const struct {
    const char *name;
    fz_target_fn fn;
} fz_targets[] = {
    { "checkpoint", fuzz_checkpoint_one },
    { "cli", fuzz_cli_one },
    { "config", fuzz_config_one },
    { "dataset_bin", fuzz_dataset_bin_one },
    { "dataset_jsonl", fuzz_dataset_jsonl_one },
    { "instr_jsonl", fuzz_instr_jsonl_one },
    { "profile", fuzz_profile_one },
    { "report", fuzz_report_one },
    { "safetensors", fuzz_safetensors_one },
    { "tokenizer", fuzz_tokenizer_one },
};
#define FZ_NTARGETS ((int)(sizeof fz_targets / sizeof fz_targets[0]))

static uint8_t *fz_read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: cannot open", path);
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    cr_assert_not_null(buf, "%s: out of memory", path);
    fclose(f);
    *size = n;
    return buf;
}

/* Is target/file listed in KNOWN_OPEN? */
static int fz_known_open(const char *target, const char *file)
{
    FILE *f = fopen(FZ_DIR "/regressions/KNOWN_OPEN", "r");
    if (!f) return 0;
    char line[1024], want[600];
    snprintf(want, sizeof want, "%s/%s", target, file);
    int hit = 0;
    while (!hit && fgets(line, sizeof line, f)) {
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '#') continue;
        size_t n = strcspn(s, " \t\r\n");
        hit = n == strlen(want) && !strncmp(s, want, n);
    }
    fclose(f);
    return hit;
}

/* Runs one input in a child: 10 accepted, 11 rejected; anything else is a
 * crash, a failed check or a leak (the child's stderr says which). */
static int fz_run_child(fz_target_fn fn, const char *path)
{
    size_t size;
    uint8_t *data = fz_read_all(path, &size);
    /* The leak check's output: the forked child has one thread, and
     * LeakSanitizer notes every other thread of the parent (OpenBLAS's
     * pool) as "not suspended"; those lines are dropped, the rest shown. */
    FILE *lsan_out = tmpfile();
    cr_assert_not_null(lsan_out, "tmpfile failed");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        int accepted = fn(data, size);
        free(data);
        fz_remove_scratch();
#ifdef FZ_HAVE_LSAN
        fflush(stderr);
        dup2(fileno(lsan_out), 2);
        __lsan_do_leak_check(); /* exits non-zero on a leak */
#endif
        _exit(accepted ? 10 : 11); /* _exit: not the test runner's handlers */
    }
    free(data);
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid, "waitpid failed");
    rewind(lsan_out);
    char line[1024];
    while (fgets(line, sizeof line, lsan_out))
        if (!strstr(line, "was not suspended. False leaks are possible")) fputs(line, stderr);
    fclose(lsan_out);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

static int fz_cmp_names(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static int fz_visible(const struct dirent *e) { return e->d_name[0] != '.' && strcmp(e->d_name, "README.md") != 0; }

/* Replays every file of FZ_DIR/<kind>/<target>/; returns how many ran. */
static int fz_replay_dir(int t, const char *kind, int must_accept)
{
    char dir[512];
    snprintf(dir, sizeof dir, FZ_DIR "/%s/%s", kind, fz_targets[t].name);
    struct dirent **list;
    int n = scandir(dir, &list, fz_visible, fz_cmp_names);
    if (n < 0) return 0; /* no regressions for this target */
    int ran = 0;
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
        if (!must_accept && fz_known_open(fz_targets[t].name, list[i]->d_name)) {
            fprintf(stderr, "fuzz_regressions: %s skipped (KNOWN_OPEN: a bug not fixed yet)\n", path);
            free(list[i]);
            continue;
        }
        int code = fz_run_child(fz_targets[t].fn, path);
        cr_expect(code == 10 || code == 11, "%s: %s (exit %d): a crash, a failed check or a leak", path,
                  code >= 128 ? "killed by a signal" : "failed", code);
        if (must_accept) cr_expect(code != 11, "%s: a seed the parser rejects (seeds must be valid inputs)", path);
        ran++;
        free(list[i]);
    }
    free(list);
    return ran;
}

static void fz_replay(const char *name)
{
    int t = -1;
    for (int i = 0; i < FZ_NTARGETS; i++)
        if (!strcmp(fz_targets[i].name, name)) t = i;
    cr_assert(t >= 0, "no target %s", name);
    int seeds = fz_replay_dir(t, "corpus", 1);
    cr_expect(seeds > 0, "%s: no seed corpus in " FZ_DIR "/corpus/%s", name, name);
    fz_replay_dir(t, "regressions", 0);
}

Test(fuzz_regressions, checkpoint) { fz_replay("checkpoint"); }
Test(fuzz_regressions, cli) { fz_replay("cli"); }
Test(fuzz_regressions, config) { fz_replay("config"); }
Test(fuzz_regressions, dataset_bin) { fz_replay("dataset_bin"); }
Test(fuzz_regressions, dataset_jsonl) { fz_replay("dataset_jsonl"); }
Test(fuzz_regressions, instr_jsonl) { fz_replay("instr_jsonl"); }
Test(fuzz_regressions, profile) { fz_replay("profile"); }
Test(fuzz_regressions, report) { fz_replay("report"); }
Test(fuzz_regressions, safetensors) { fz_replay("safetensors"); }
Test(fuzz_regressions, tokenizer) { fz_replay("tokenizer"); }

/* A target added to tests/fuzz/ must be replayed here too. */
Test(fuzz_regressions, every_target_is_replayed)
{
    DIR *d = opendir(FZ_DIR);
    cr_assert_not_null(d, FZ_DIR ": cannot open (run the tests from the source root)");
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "fuzz_", 5) != 0 || n < 8 || strcmp(e->d_name + n - 2, ".c") != 0) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n - 7), e->d_name + 5);
        int found = 0;
        for (int i = 0; i < FZ_NTARGETS; i++) found |= !strcmp(fz_targets[i].name, name);
        cr_expect(found, "tests/fuzz/%s is not replayed by tests/test_fuzz_regressions.c", e->d_name);
    }
    closedir(d);
}
