/*
 * test_rope_scaling.c — config.json's "rope_scaling" (suite rope_scaling).
 *
 * The numbers themselves are checked against the PyTorch oracle (suite
 * oracle, fixtures llama3_rope and linear_rope).  Here: what is parsed from
 * which keys, that the zoo's Llama 3.2 carries its published scaling, that
 * a saved checkpoint keeps it, and that every rope_type the core does not
 * compute (and use_sliding_window true) is kept as a shape-only config that
 * nothing computing accepts: one line, exit 2, for each command.
 */
#include <criterion/criterion.h>

#include "ftbench.h"
#include "ops.h"
#include "test_helpers_ckpt.h"
#include "test_helpers_proc.h"

#include <math.h>
#include <string.h>

/* A config.json of the `tiny` shape with extra keys (a JSON fragment that
 * starts with a comma, or ""). */
static void write_config(const char *path, const char *extra)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"model_type\": \"llama\", \"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
             " \"num_key_value_heads\": 2, \"head_dim\": 8, \"intermediate_size\": 64, \"vocab_size\": 64,"
             " \"max_position_embeddings\": 512, \"rope_theta\": 500000.0%s}",
             extra);
    cr_assert_eq(ckpt_write_text(path, text), 0, "cannot write %s", path);
}

static int load(const char *dir, const char *extra, ftb_config *c, char *err, size_t errlen)
{
    char path[4096];
    write_config(ckpt_path(path, sizeof path, dir, "config.json"), extra);
    err[0] = 0;
    return ftb_config_load_json(path, c, err, errlen);
}

Test(rope_scaling, zoo_llama32_carries_its_published_scaling)
{
    const char *llama[] = { "llama-3.2-1b", "llama-3.2-3b" };
    for (int i = 0; i < 2; i++) {
        ftb_config c;
        cr_assert_eq(ftb_zoo_get(llama[i], &c), 0);
        cr_expect_eq(c.rope_scaling.kind, FTB_ROPE_LLAMA3, "%s", llama[i]);
        cr_expect_eq(c.rope_scaling.factor, 32.0f);
        cr_expect_eq(c.rope_scaling.low_freq_factor, 1.0f);
        cr_expect_eq(c.rope_scaling.high_freq_factor, 4.0f);
        cr_expect_eq(c.rope_scaling.original_max_seq, 8192);
        cr_expect_eq(c.rope_theta, 500000.0f);
        cr_expect_eq(c.shape_only[0], 0);
    }
    ftb_config q;
    cr_assert_eq(ftb_zoo_get("qwen2.5-0.5b", &q), 0);
    cr_expect_eq(q.rope_scaling.kind, FTB_ROPE_DEFAULT, "Qwen2.5 has no rope_scaling");
}

/* Llama 3.2's frequencies (head_dim 64, theta 5e5, original context 8192):
 * wavelength 2π·theta^(2i/64) is below 8192/4 for pairs 0..14 (kept), above
 * 8192 for 18..31 (divided by 32), and between for 15..17. */
Test(rope_scaling, llama3_frequencies_in_each_band)
{
    ftb_config c;
    cr_assert_eq(ftb_zoo_get("llama-3.2-1b", &c), 0);
    for (int i = 0; i < 32; i++) {
        double plain = pow(500000.0, -2.0 * i / 64), got = ftb_rope_inv_freq(&c, i);
        if (i <= 14)
            cr_expect_eq(got, plain, "pair %d: %.17g != %.17g (kept)", i, got, plain);
        else if (i >= 18)
            cr_expect_eq(got, plain / 32, "pair %d: %.17g != %.17g (divided)", i, got, plain / 32);
        else
            cr_expect(got < plain && got > plain / 32, "pair %d: %.17g not between %.17g and %.17g", i, got, plain / 32,
                      plain);
    }
    /* Linear: every frequency divided by the factor. */
    ftb_config lin = c;
    lin.rope_scaling = (ftb_rope_scaling){ FTB_ROPE_LINEAR, 4.0f, 0.f, 0.f, 0 };
    for (int i = 0; i < 32; i++)
        cr_expect_eq(ftb_rope_inv_freq(&lin, i), pow(500000.0, -2.0 * i / 64) / 4, "linear pair %d", i);
}

Test(rope_scaling, config_keys_parsed_as_transformers_reads_them)
{
    char *dir = ckpt_tmpdir();
    char err[FTB_ERR_LEN];
    ftb_config c;
    cr_assert_eq(load(dir,
                      ", \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
                      " \"original_max_position_embeddings\": 256, \"rope_type\": \"llama3\"}",
                      &c, err, sizeof err),
                 0, "%s", err);
    cr_expect_eq(c.rope_scaling.kind, FTB_ROPE_LLAMA3);
    cr_expect_eq(c.rope_scaling.factor, 8.0f);
    cr_expect_eq(c.rope_scaling.low_freq_factor, 1.0f);
    cr_expect_eq(c.rope_scaling.high_freq_factor, 4.0f);
    cr_expect_eq(c.rope_scaling.original_max_seq, 256);
    cr_expect_eq(c.shape_only[0], 0);

    /* The legacy key "type" (configs written before transformers 4.43). */
    cr_assert_eq(load(dir, ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 4}", &c, err, sizeof err), 0, "%s",
                 err);
    cr_expect_eq(c.rope_scaling.kind, FTB_ROPE_LINEAR);
    cr_expect_eq(c.rope_scaling.factor, 4.0f);
    /* rope_type wins over type, as in transformers. */
    cr_assert_eq(load(dir, ", \"rope_scaling\": {\"rope_type\": \"linear\", \"type\": \"yarn\", \"factor\": 2}", &c,
                      err, sizeof err),
                 0, "%s", err);
    cr_expect_eq(c.rope_scaling.kind, FTB_ROPE_LINEAR);
    cr_expect_eq(c.shape_only[0], 0);

    const char *plain[] = { "", ", \"rope_scaling\": null", ", \"rope_scaling\": {\"rope_type\": \"default\"}",
                            ", \"use_sliding_window\": false, \"sliding_window\": 4096" };
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(load(dir, plain[i], &c, err, sizeof err), 0, "%s: %s", plain[i], err);
        cr_expect_eq(c.rope_scaling.kind, FTB_ROPE_DEFAULT, "%s", plain[i]);
        cr_expect_eq(c.shape_only[0], 0, "%s: shape-only '%s'", plain[i], c.shape_only);
    }
    ckpt_rm_rf(dir);
}

Test(rope_scaling, malformed_rope_scaling_is_one_clear_error)
{
    static const struct {
        const char *extra, *mentions;
    } bad[] = {
        { ", \"rope_scaling\": \"llama3\"", "rope_scaling" },
        { ", \"rope_scaling\": {}", "rope_type" },
        { ", \"rope_scaling\": {\"rope_type\": 3}", "rope_type" },
        { ", \"rope_scaling\": {\"rope_type\": \"linear\"}", "factor" },
        { ", \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": \"4\"}", "factor" },
        { ", \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": -1}", "factor" },
        { ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1,"
          " \"high_freq_factor\": 4}",
          "original_max_position_embeddings" },
        { ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4,"
          " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 256}",
          "high_freq_factor" },
        { ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1,"
          " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 256.5}",
          "original_max_position_embeddings" },
        { ", \"use_sliding_window\": \"yes\"", "use_sliding_window" },
    };
    char *dir = ckpt_tmpdir();
    char err[FTB_ERR_LEN];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ftb_config c;
        cr_expect_eq(load(dir, bad[i].extra, &c, err, sizeof err), -1, "accepted: %s", bad[i].extra);
        cr_expect(strstr(err, "config.json") && strstr(err, bad[i].mentions) && !strchr(err, '\n'),
                  "%s: error '%s' should name config.json and %s on one line", bad[i].extra, err, bad[i].mentions);
    }
    ckpt_rm_rf(dir);
}

/* Types the core does not compute parse (the shapes are right) but are
 * marked shape-only, and neither ftb_model_create nor ftb_model_load takes
 * them. */
Test(rope_scaling, other_rope_types_and_sliding_window_are_shape_only)
{
    static const struct {
        const char *extra, *mentions;
    } other[] = {
        { ", \"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}", "'dynamic'" },
        { ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 128}",
          "'yarn'" },
        { ", \"rope_scaling\": {\"type\": \"longrope\", \"short_factor\": [1,1,1,1], \"long_factor\": [2,2,2,2]}",
          "'longrope'" },
        { ", \"rope_scaling\": {\"rope_type\": \"ntk\", \"factor\": 2.0}", "'ntk'" },
        { ", \"use_sliding_window\": true, \"sliding_window\": 64", "use_sliding_window" },
    };
    char *dir = ckpt_tmpdir();
    ftb_config tiny;
    char err[FTB_ERR_LEN];
    cr_assert_eq(ftb_zoo_get("tiny", &tiny), 0);
    tiny.qkv_bias = 0;
    ftb_model *m = ftb_model_create(&tiny, 3, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "%s", err);
    ftb_model_free(m);
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        ftb_config c;
        cr_assert_eq(load(dir, other[i].extra, &c, err, sizeof err), 0, "%s: %s", other[i].extra, err);
        cr_expect(strstr(c.shape_only, other[i].mentions), "%s: shape_only '%s'", other[i].extra, c.shape_only);
        cr_expect_eq(ftb_config_validate(&c, err, sizeof err), 0, "shapes valid: %s", err);
        cr_expect_eq(ftb_config_check_computable(&c, err, sizeof err), -1);
        cr_expect(strstr(err, other[i].mentions), "'%s'", err);
        cr_expect_null(ftb_model_create(&c, 1, err, sizeof err), "created a model of %s", other[i].extra);
        cr_expect(strstr(err, other[i].mentions), "create: '%s'", err);
        ftb_model *l = ftb_model_load(dir, 1, err, sizeof err);
        cr_expect_null(l, "loaded a checkpoint with %s", other[i].extra);
        ftb_model_free(l);
        cr_expect(strstr(err, "config.json") && strstr(err, other[i].mentions), "load: '%s'", err);
    }
    ckpt_rm_rf(dir);
}

/* A saved model's config.json carries its scaling, so that what is loaded
 * back (the quantized base cache, pretrain's output) computes the same. */
Test(rope_scaling, saved_checkpoint_keeps_scaling_and_loss)
{
    ftb_rope_scaling kinds[] = { { FTB_ROPE_LLAMA3, 8.f, 1.f, 4.f, 64 }, { FTB_ROPE_LINEAR, 2.5f, 0.f, 0.f, 0 } };
    char *dir = ckpt_tmpdir();
    char err[FTB_ERR_LEN], path[4096];
    enum { T = 48 };
    int32_t tok[T], tgt[T];
    for (int i = 0; i < T; i++) tok[i] = (i * 7 + 3) % 64, tgt[i] = i + 1 < T ? (i * 7 + 10) % 64 : FTB_IGNORE_INDEX;
    ftb_batch b = { 1, T, tok, tgt };
    float unscaled = 0;
    for (int k = -1; k < 2; k++) {
        ftb_config c;
        cr_assert_eq(ftb_zoo_get("tiny", &c), 0);
        if (k >= 0) c.rope_scaling = kinds[k];
        ftb_model *m = ftb_model_create(&c, 11, err, sizeof err);
        cr_assert_not_null(m, "%s", err);
        float before = ftb_model_forward(m, &b, NULL, err, sizeof err);
        cr_assert(isfinite(before), "%s", err);
        if (k < 0) {
            unscaled = before;
            ftb_model_free(m);
            continue;
        }
        cr_expect_neq(before, unscaled, "scaling kind %d does not change the loss", kinds[k].kind);
        cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "%s", err);
        ftb_config back;
        cr_assert_eq(ftb_config_load_json(ckpt_path(path, sizeof path, dir, "config.json"), &back, err, sizeof err), 0,
                     "%s", err);
        cr_expect_eq(memcmp(&back.rope_scaling, &c.rope_scaling, sizeof back.rope_scaling), 0,
                     "kind %d: rope_scaling not saved", kinds[k].kind);
        ftb_model *l = ftb_model_load(dir, 1, err, sizeof err);
        cr_assert_not_null(l, "%s", err);
        float after = ftb_model_forward(l, &b, NULL, err, sizeof err);
        cr_expect_eq(after, before, "kind %d: loss %.9g after a save and load, %.9g before", kinds[k].kind, after,
                     before);
        ftb_model_free(l);
        ftb_model_free(m);
    }
    ckpt_rm_rf(dir);
}

/* Every command that computes refuses a shape-only checkpoint with one
 * line and exit 2, before measuring anything. */
Test(rope_scaling, commands_refuse_unsupported_rope_type_with_exit_2)
{
    if (!getenv("FTBENCH_BIN") || !getenv("FTBENCH_METHODS")) cr_skip_test("FTBENCH_BIN is set by make test");
    char *dir = ckpt_tmpdir();
    char err[FTB_ERR_LEN], ckpt[4096], out[4096];
    ftb_config tiny;
    cr_assert_eq(ftb_zoo_get("tiny", &tiny), 0);
    tiny.qkv_bias = 0;
    ftb_model *m = ftb_model_create(&tiny, 3, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    ckpt_path(ckpt, sizeof ckpt, dir, "yarn-model");
    cr_assert_eq(ftb_model_save(m, ckpt, err, sizeof err), 0, "%s", err);
    ftb_model_free(m);
    char cfg[8192];
    write_config(ckpt_path(cfg, sizeof cfg, ckpt, "config.json"),
                 ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}");
    ckpt_path(out, sizeof out, dir, "results");
    const char *methods = getenv("FTBENCH_METHODS");
    const char *cmds[][16] = {
        { "run", "--checkpoint", ckpt, "--method", "lora", "--seq", "16", "--methods-dir", methods, "--out", out,
          "--device", "host", NULL },
        { "train", "--checkpoint", ckpt, "--method", "lora", "--task", "reasoning", "--steps", "1", "--seq", "64",
          "--methods-dir", methods, "--out", out, NULL },
        { "fidelity", "--checkpoint", ckpt, "--method", "lora", "--seq", "16", "--methods-dir", methods, NULL },
        { "eval", "--checkpoint", ckpt, "--task", "reasoning", "--examples", "1", NULL },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        tproc p = tproc_run(cmds[i], 60);
        cr_expect_eq(p.code, 2, "%s: exit %d, stderr: %s", cmds[i][0], p.code, p.err);
        cr_expect_eq(tproc_lines(p.err), 1, "%s: stderr should be one line: %s", cmds[i][0], p.err);
        cr_expect(strstr(p.err, "config.json") && strstr(p.err, "rope_type 'yarn'"), "%s: %s", cmds[i][0], p.err);
        tproc_free(&p);
    }
    ckpt_rm_rf(dir);
}
