/*
 * test_eval_options.c — `ftbench eval`'s ways of naming a tokenizer
 * (suite eval_options): --task SPEC@TOKENIZER.json, as --help documents it,
 * --tokenizer FILE, neither (bytes), and both (one line, exit 2).
 */
#include <criterion/criterion.h>

#include "ftbench.h"
#include "test_helpers_ckpt.h"
#include "test_helpers_proc.h"

#include <string.h>

#define BPE_TOKENIZER "tests/fixtures/bpe/tokenizer.json" /* ids up to 151668 */

/* A seeded tiny model whose vocabulary holds the BPE fixture's ids. */
static char *bpe_sized_checkpoint(void)
{
    char *dir = ckpt_tmpdir(), err[FTB_ERR_LEN];
    ftb_config c;
    cr_assert_eq(ftb_zoo_get("tiny-byte", &c), 0);
    c.vocab_size = 151669;
    ftb_model *m = ftb_model_create(&c, 5, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "%s", err);
    ftb_model_free(m);
    return dir;
}

Test(eval_options, task_spec_at_tokenizer_json_is_used)
{
    if (!getenv("FTBENCH_BIN")) cr_skip_test("FTBENCH_BIN is set by make test");
    char *dir = bpe_sized_checkpoint();
    const char *with_at[] = { "eval", "--checkpoint", dir, "--task", "reasoning@" BPE_TOKENIZER, "--examples",
                              "2",    "--json",       NULL };
    const char *with_option[] = { "eval",        "--checkpoint", dir, "--task", "reasoning", "--tokenizer",
                                  BPE_TOKENIZER, "--examples",   "2", "--json", NULL };
    const char *bytes[] = { "eval", "--checkpoint", dir, "--task", "reasoning", "--examples", "2", "--json", NULL };
    const char *const *ok[] = { with_at, with_option, bytes };
    const char *kind[] = { "\"tokenizer\":\"bpe\"", "\"tokenizer\":\"bpe\"", "\"tokenizer\":\"byte\"" };
    for (int i = 0; i < 3; i++) {
        tproc p = tproc_run(ok[i], 120);
        cr_expect_eq(p.code, 0, "case %d: exit %d: %s", i, p.code, p.err);
        cr_expect(strstr(p.out, kind[i]) != NULL, "case %d: %s not in %s", i, kind[i], p.out);
        tproc_free(&p);
    }
    const char *both[] = { "eval",        "--checkpoint", dir,          "--task", "reasoning@" BPE_TOKENIZER,
                           "--tokenizer", BPE_TOKENIZER,  "--examples", "2",      NULL };
    tproc p = tproc_run(both, 60);
    cr_expect_eq(p.code, 2, "both: exit %d: %s", p.code, p.err);
    cr_expect(strstr(p.err, "given twice") && tproc_lines(p.err) == 1, "both: %s", p.err);
    tproc_free(&p);
    ckpt_rm_rf(dir);
}
