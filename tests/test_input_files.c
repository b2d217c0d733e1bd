/*
 * test_input_files.c — inputs that are not regular files (suite
 * input_files): a FIFO with no writer blocked the open for ever, /dev/zero
 * never ended and grew memory.  Every input path goes through
 * models/input_file.c; here the helper itself, then each command with each
 * kind of input, under a deadline so that a regression fails instead of
 * hanging the suite.
 */
#include <criterion/criterion.h>

#include "input_file.h"
#include "test_helpers_ckpt.h"
#include "test_helpers_proc.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEADLINE 20.0 /* seconds: refusing takes milliseconds */

Test(input_files, helper_refuses_what_is_not_a_regular_file)
{
    char *dir = ckpt_tmpdir(), path[4096], err[512];
    ckpt_path(path, sizeof path, dir, "fifo");
    cr_assert_eq(mkfifo(path, 0600), 0);
    static const struct {
        const char *name, *kind;
    } bad[] = { { NULL, "a FIFO" }, { "/dev/zero", "a character device" }, { "/tmp", "a directory" } };
    for (int i = 0; i < 3; i++) {
        const char *p = bad[i].name ? bad[i].name : path;
        double t0 = tproc_now();
        cr_expect_eq(ftb_input_open(p, err, sizeof err), -1, "%s opened", p);
        cr_expect(strstr(err, p) && strstr(err, bad[i].kind) && strstr(err, "not a regular file"), "%s: '%s'", p, err);
        cr_expect_null(ftb_input_fopen(p, err, sizeof err));
        cr_expect_null(ftb_input_read(p, "thing", 1 << 20, NULL, err, sizeof err));
        cr_expect(tproc_now() - t0 < 5, "%s took %.1f s", p, tproc_now() - t0);
    }
    /* A regular file: read whole, within its cap and not past it. */
    ckpt_path(path, sizeof path, dir, "text");
    cr_assert_eq(ckpt_write_text(path, "0123456789"), 0);
    size_t n = 0;
    char *s = ftb_input_read(path, "thing", 10, &n, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_expect(n == 10 && !strcmp(s, "0123456789"));
    free(s);
    cr_expect_null(ftb_input_read(path, "thing", 9, &n, err, sizeof err));
    cr_expect(strstr(err, "more than") && strstr(err, "thing"), "%s", err);
    int fd = ftb_input_open(path, err, sizeof err);
    cr_assert(fd >= 0, "%s", err);
    cr_expect_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "descriptor left non-blocking");
    close(fd);
    ckpt_rm_rf(dir);
}

static void expect_refused(const char *const *args, const char *mentions)
{
    tproc p = tproc_run(args, DEADLINE);
    cr_expect(!p.timed_out, "%s %s: still running after %.0f s (killed)", args[0], args[1], DEADLINE);
    cr_expect_eq(p.code, 2, "%s ... %s: exit %d: %s", args[0], mentions, p.code, p.err);
    cr_expect(tproc_lines(p.err) == 1 && strstr(p.err, mentions) && strstr(p.err, "not a regular file"),
              "%s ... %s: stderr '%s'", args[0], mentions, p.err);
    tproc_free(&p);
}

/* Every command and every kind of input path, each a FIFO with no writer
 * or /dev/zero. */
Test(input_files, commands_refuse_fifos_and_devices_in_one_line)
{
    if (!getenv("FTBENCH_BIN") || !getenv("FTBENCH_METHODS")) cr_skip_test("FTBENCH_BIN is set by make test");
    const char *methods = getenv("FTBENCH_METHODS");
    char *dir = ckpt_tmpdir();
    char fifo_jsonl[4096], fifo_tok[4096], profiles[4096], prof[8192], ckpt[4096], cfg[8192], out[4096];
    ckpt_path(fifo_jsonl, sizeof fifo_jsonl, dir, "data.jsonl");
    ckpt_path(fifo_tok, sizeof fifo_tok, dir, "tokenizer.json");
    ckpt_path(profiles, sizeof profiles, dir, "profiles");
    ckpt_path(ckpt, sizeof ckpt, dir, "ckpt");
    ckpt_path(out, sizeof out, dir, "results");
    cr_assert_eq(mkfifo(fifo_jsonl, 0600), 0);
    cr_assert_eq(mkfifo(fifo_tok, 0600), 0);
    cr_assert_eq(mkdir(profiles, 0700), 0);
    cr_assert_eq(mkfifo(ckpt_path(prof, sizeof prof, profiles, "fifo.profile"), 0600), 0);
    /* A checkpoint whose config.json is a FIFO (its weights are real). */
    ftb_config c;
    char err[FTB_ERR_LEN];
    cr_assert_eq(ftb_zoo_get("tiny-byte", &c), 0);
    ftb_model *m = ftb_model_create(&c, 1, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    cr_assert_eq(ftb_model_save(m, ckpt, err, sizeof err), 0, "%s", err);
    ftb_model_free(m);
    ckpt_path(cfg, sizeof cfg, ckpt, "config.json");
    cr_assert_eq(unlink(cfg), 0);
    cr_assert_eq(mkfifo(cfg, 0600), 0);

    const char *run_fifo_data[] = { "run",       "--model",  "tiny-byte",     "--method", "lora",  "--seq", "16",
                                    "--dataset", fifo_jsonl, "--methods-dir", methods,    "--out", out,     NULL };
    expect_refused(run_fifo_data, "FIFO");
    const char *run_zero_data[] = { "run",       "--model",   "tiny-byte",     "--method", "lora",  "--seq", "16",
                                    "--dataset", "/dev/zero", "--methods-dir", methods,    "--out", out,     NULL };
    expect_refused(run_zero_data, "character device");
    const char *run_fifo_profile[] = { "run",   "--model",        "tiny-byte", "--method", "lora", "--seq",
                                       "16",    "--profiles-dir", profiles,    "--device", "fifo", "--methods-dir",
                                       methods, "--out",          out,         NULL };
    expect_refused(run_fifo_profile, "FIFO");
    const char *run_fifo_config[] = { "run", "--checkpoint",  ckpt,    "--method", "lora", "--seq",
                                      "16",  "--methods-dir", methods, "--out",    out,    NULL };
    expect_refused(run_fifo_config, "config.json");
    const char *eval_fifo_tok[] = {
        "eval", "--model", "tiny-byte", "--task", "reasoning", "--tokenizer", fifo_tok, NULL
    };
    expect_refused(eval_fifo_tok, "FIFO");
    const char *eval_zero_tok[] = { "eval",      "--model",     "tiny-byte", "--task",
                                    "reasoning", "--tokenizer", "/dev/zero", NULL };
    expect_refused(eval_zero_tok, "character device");
    const char *eval_fifo_task[] = { "eval", "--model", "tiny-byte", "--task", fifo_jsonl, NULL };
    expect_refused(eval_fifo_task, "FIFO");
    ckpt_rm_rf(dir);
}
