/*
 * test_plan.c — `ftbench plan` as a user runs it (suite plan_cmd): a
 * Hugging Face config.json without weights (one the core would not
 * compute), the device budget marks and the longest fit against the
 * method's own plan, --json, a method that declares no memory model and
 * one without a plan callback, the process baseline measured once and
 * cached, --verify on a tiny model, and bad input (one line, exit 2).
 * The in-process predictions (ftb_method_plan) are the reference: the
 * command must print exactly what the methods' plans answer.
 */
#include <criterion/criterion.h>

#include "helpers.h"
#include "test_helpers_proc.h"

#include <jansson.h>
#include <sys/stat.h>

static const char *test_plugins(void)
{
    const char *d = getenv("FTBENCH_TEST_PLUGINS");
    return d ? d : "build/tests/plugins";
}

/* A fresh directory under /tmp (the test's own). */
static void temp_dir(char *out, size_t n)
{
    snprintf(out, n, "/tmp/ftbplan-XXXXXX");
    cr_assert_not_null(mkdtemp(out));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* Qwen2.5-0.5B's shapes with a rope scaling the core does not compute
 * (yarn): shape-only, which a plan accepts and says so. */
static const char *YARN_CONFIG =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"model_type\":\"qwen2\",\"hidden_size\":896,"
    "\"intermediate_size\":4864,\"num_hidden_layers\":24,\"num_attention_heads\":14,\"num_key_value_heads\":2,"
    "\"vocab_size\":151936,\"max_position_embeddings\":32768,\"rope_theta\":1000000.0,\"rms_norm_eps\":1e-6,"
    "\"tie_word_embeddings\":true,\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0,"
    "\"original_max_position_embeddings\":32768}}\n";

/* What the method's plan answers in process for one length: the reference
 * the command's figures are held to (4 threads: rpi5's cores). */
static int64_t reference_core(const ftb_config *cfg, const char *method, int T)
{
    ftb_plugin p;
    th_open_method(method, &p);
    ftb_model_shape shape;
    ftb_model_shape_from_config(cfg, &shape);
    shape.threads = 4;
    ftb_memory_estimate e;
    char err[FTB_ERR_LEN];
    cr_assert_eq(ftb_method_plan(p.method, &shape, NULL, NULL, 1, T, &e, err, sizeof err), 0, "%s", err);
    ftb_plugin_close(&p);
    return e.peak_total;
}

static json_t *method_entry(json_t *plan, const char *label)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(plan, "methods"), i,
                       m) if (!strcmp(json_string_value(json_object_get(m, "method")), label)) return m;
    cr_assert_fail("no method %s in the plan", label);
    return NULL;
}

/* A config.json alone (no weights anywhere), shape-only for the core:
 * planned, the reason stated, and every figure the method's own plan for
 * those shapes plus the baseline. */
Test(plan_cmd, a_config_json_without_weights_is_planned_and_says_it_is_shape_only, .timeout = 120)
{
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, YARN_CONFIG);
    const char *args[] = { "plan",      "--device",      "rpi5-4gb",     "--config", path,
                           "--methods", "lora,mesp",     "--base-dtype", "f32",      "--seqs",
                           "256,2048",  "--baseline-mb", "10",           "--json",   NULL };
    tproc r = tproc_run(args, 60);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    cr_expect_eq(tproc_lines(r.out), 1, "--json is one line: %s", r.out);
    json_error_t je;
    json_t *plan = json_loads(r.out, 0, &je);
    cr_assert_not_null(plan, "not JSON: %s (%s)", je.text, r.out);
    cr_expect(strstr(json_string_value(json_object_get(plan, "shape_only")), "yarn") != NULL);
    cr_expect_str_eq(json_string_value(json_object_get(plan, "config")), path);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(plan, "baseline"), "bytes")), 10 << 20);
    cr_expect(json_array_size(json_object_get(plan, "includes")) > 0 &&
              json_array_size(json_object_get(plan, "excludes")) > 0);

    ftb_config cfg;
    char err[FTB_ERR_LEN];
    cr_assert_eq(ftb_config_load_json(path, &cfg, err, sizeof err), 0, "%s", err);
    const char *methods[] = { "lora", "mesp" };
    for (int k = 0; k < 2; k++) {
        json_t *m = method_entry(plan, methods[k]);
        cr_expect_str_eq(json_string_value(json_object_get(m, "model")), "method plan");
        json_t *cells = json_object_get(m, "cells");
        cr_assert_eq(json_array_size(cells), 2);
        for (int j = 0; j < 2; j++) {
            json_t *c = json_array_get(cells, (size_t)j);
            int T = (int)json_integer_value(json_object_get(c, "seq"));
            int64_t core = json_integer_value(json_object_get(c, "core_peak_bytes"));
            cr_expect_eq(core, reference_core(&cfg, methods[k], T), "%s at %d", methods[k], T);
            cr_expect_eq(json_integer_value(json_object_get(c, "predicted_peak_rss_bytes")), core + (10 << 20));
        }
    }
    json_decref(plan);
    tproc_free(&r);

    /* The table says so too. */
    const char *text[] = { "plan",      "--device", "rpi5-4gb",      "--config", path,
                           "--methods", "lora",     "--baseline-mb", "10",       NULL };
    r = tproc_run(text, 60);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    cr_expect(strstr(r.out, "note: rope_scaling rope_type 'yarn' is not supported") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "longest fit") != NULL, "%s", r.out);
    tproc_free(&r);
    unlink(path);
    rmdir(dir);
}

/* A budget between two lengths' predictions: the shorter fits, the longer
 * is marked over budget, and the longest fit is the last length whose
 * prediction is within the budget (checked on both sides). */
Test(plan_cmd, the_budget_marks_and_the_longest_fit_follow_the_prediction, .timeout = 120)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("smollm2-135m", &cfg), 0);
    const int64_t base = 10 << 20;
    int64_t at512 = reference_core(&cfg, "lora", 512) + base, at2048 = reference_core(&cfg, "lora", 2048) + base;
    cr_assert_lt(at512, at2048);
    int64_t budget = (at512 + at2048) / 2;
    char budget_s[32], cmp[32];
    snprintf(budget_s, sizeof budget_s, "%lld", (long long)budget);
    const char *args[] = { "plan",      "--device", "rpi5-4gb",     "--model",       "smollm2-135m",
                           "--methods", "lora",     "--base-dtype", "f32",           "--seqs",
                           "512,2048",  "--budget", budget_s,       "--baseline-mb", "10",
                           "--json",    NULL };
    tproc r = tproc_run(args, 60);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    json_t *plan = json_loads(r.out, 0, NULL);
    cr_assert_not_null(plan, "%s", r.out);
    cr_expect_eq(json_integer_value(json_object_get(plan, "budget_bytes")), budget);
    json_t *m = method_entry(plan, "lora");
    json_t *cells = json_object_get(m, "cells");
    cr_expect(json_is_true(json_object_get(json_array_get(cells, 0), "fits")));
    cr_expect(json_is_false(json_object_get(json_array_get(cells, 1), "fits")));
    int longest = (int)json_integer_value(json_object_get(m, "longest_fitting_seq"));
    cr_expect(longest >= 512 && longest < 2048, "longest fit %d", longest);
    cr_expect_leq(reference_core(&cfg, "lora", longest) + base, budget, "the longest fit %d is over budget", longest);
    cr_expect_gt(reference_core(&cfg, "lora", longest + 1) + base, budget, "%d fits too", longest + 1);
    json_decref(plan);
    tproc_free(&r);

    /* The table: the fitting cell plain, the other marked with '*'. */
    const char *text[] = { "plan",   "--device",      "rpi5-4gb", "--model", "smollm2-135m", "--methods",
                           "lora",   "--base-dtype",  "f32",      "--seqs",  "512,2048",     "--budget",
                           budget_s, "--baseline-mb", "10",       NULL };
    r = tproc_run(text, 60);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    snprintf(cmp, sizeof cmp, " %.0f ", (double)at512 / 1048576.0);
    cr_expect(strstr(r.out, cmp) != NULL, "no '%s' in %s", cmp, r.out);
    snprintf(cmp, sizeof cmp, " %.0f* ", (double)at2048 / 1048576.0);
    cr_expect(strstr(r.out, cmp) != NULL, "no '%s' in %s", cmp, r.out);
    snprintf(cmp, sizeof cmp, " %d\n", longest);
    cr_expect(strstr(r.out, cmp) != NULL, "no longest fit '%d' in %s", longest, r.out);
    tproc_free(&r);
}

/* A model too large to run here (llama-3.2-3b in fp32 is 12.8 GB of
 * weights) answers from shapes, nothing allocated, well under a second of
 * CPU. */
Test(plan_cmd, a_model_too_large_to_run_here_is_planned_instantly, .timeout = 120)
{
    const char *args[] = { "plan", "--device", "rpi5-4gb", "--model", "llama-3.2-3b", "--baseline-mb", "10", NULL };
    tproc r = tproc_run(args, 60);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    const char *cpu = strstr(r.out, "s of CPU");
    cr_assert_not_null(cpu, "%s", r.out);
    const char *open = cpu;
    while (open > r.out && *open != '(') open--;
    cr_expect_lt(strtod(open + 1, NULL), 1.0, "planning took %s", open);
    cr_expect(strstr(r.out, "lora") && strstr(r.out, "mesp"), "%s", r.out);
    tproc_free(&r);
}

/* A method that declares no memory model is listed as such, never
 * guessed; one without a memory_plan callback gets the host's default,
 * marked '~' and explained. */
Test(plan_cmd, a_method_declaring_no_model_is_listed_not_guessed, .timeout = 120)
{
    const char *args[] = { "plan",          "--device",      "rpi5-4gb",  "--model",         "smollm2-135m",
                           "--methods-dir", test_plugins(),  "--methods", "nomodel,fwdonly", "--seqs",
                           "256",           "--baseline-mb", "10",        "--json",          NULL };
    tproc r = tproc_run(args, 60);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    json_t *plan = json_loads(r.out, 0, NULL);
    cr_assert_not_null(plan, "%s", r.out);
    json_t *none = method_entry(plan, "nomodel");
    cr_expect_str_eq(json_string_value(json_object_get(none, "model")), "no model");
    cr_expect_eq(json_array_size(json_object_get(none, "cells")), 0, "a prediction for a method without a model");
    cr_expect(json_is_null(json_object_get(none, "longest_fitting_seq")));
    cr_expect(strstr(json_string_value(json_object_get(none, "reason")), "depends on its data") != NULL);
    json_t *def = method_entry(plan, "fwdonly");
    cr_expect_str_eq(json_string_value(json_object_get(def, "model")), "host default");
    cr_expect(strstr(json_string_value(json_object_get(def, "note")), "exact only if") != NULL);
    cr_expect_eq(json_array_size(json_object_get(def, "cells")), 1);
    json_decref(plan);
    tproc_free(&r);

    const char *text[] = { "plan",         "--device",  "rpi5-4gb",        "--model", "smollm2-135m", "--methods-dir",
                           test_plugins(), "--methods", "nomodel,fwdonly", "--seqs",  "256",          "--baseline-mb",
                           "10",           NULL };
    r = tproc_run(text, 60);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    cr_expect(strstr(r.out, "nomodel   no model") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "~") != NULL, "the host default is not marked: %s", r.out);
    tproc_free(&r);
}

/* The baseline is measured once (one tiny cell), cached, and said to be;
 * the second plan reads it. */
Test(plan_cmd, the_process_baseline_is_measured_once_and_cached, .timeout = 300)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    setenv("FTBENCH_PLAN_CACHE", dir, 1);
    const char *args[] = { "plan",      "--device", "host",   "--model", "smollm2-135m",
                           "--methods", "lora",     "--seqs", "128",     NULL };
    tproc r = tproc_run(args, 200);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    cr_expect(strstr(r.out, "measured now on") != NULL, "%s", r.out);
    tproc_free(&r);
    r = tproc_run(args, 60);
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    cr_expect(strstr(r.out, "cached in") != NULL && strstr(r.out, "measured now") == NULL, "%s", r.out);
    tproc_free(&r);
    unsetenv("FTBENCH_PLAN_CACHE");
}

/* --verify runs the chosen cells for real and sets predicted beside
 * measured peak RSS. */
Test(plan_cmd, verify_measures_cells_and_reports_the_worst_error, .timeout = 300)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    const char *args[] = { "plan",   "--device", "host",     "--model", "tiny",  "--methods", "lora,full",
                           "--seqs", "16,64",    "--verify", "3",       "--out", dir,         NULL };
    tproc r = tproc_run(args, 250);
    cr_assert_eq(r.code, 0, "exit %d: %s %s", r.code, r.out, r.err);
    cr_expect(strstr(r.out, "verify: 3 cells of tiny measured here") != NULL, "%s", r.out);
    const char *w = strstr(r.out, "worst relative error: ");
    cr_assert_not_null(w, "%s", r.out);
    double worst = strtod(w + strlen("worst relative error: "), NULL);
    /* on a tiny model the peak is mostly the baseline itself */
    cr_expect(worst > -25 && worst < 25, "worst error %.2f%%: %s", worst, r.out);
    cr_expect(strstr(r.out, "= plan") != NULL, "the cell's own analytic model differs from the plan: %s", r.out);
    tproc_free(&r);
}

/* Bad input: one line on stderr naming the problem, exit 2. */
Test(plan_cmd, bad_input_is_one_line_and_exit_2, .timeout = 120)
{
    char dir[64], garbage[128], missing[128];
    temp_dir(dir, sizeof dir);
    snprintf(garbage, sizeof garbage, "%s/config.json", dir);
    snprintf(missing, sizeof missing, "%s/none.json", dir);
    write_file(garbage, "not json at all\n");
    struct {
        const char *args[12];
        const char *says;
    } cases[] = {
        { { "plan", "--device", "rpi5-4gb", "--config", missing, NULL }, "none.json" },
        { { "plan", "--device", "rpi5-4gb", "--config", garbage, NULL }, "invalid JSON" },
        { { "plan", "--device", "nosuch", "--model", "smollm2-135m", NULL }, "unknown device 'nosuch'" },
        { { "plan", "--device", "rpi5-4gb", "--model", "nosuch", NULL }, "unknown model 'nosuch'" },
        { { "plan", "--device", "rpi5-4gb", "--config", garbage, "--model", "tiny", NULL }, "not two" },
        { { "plan", "--device", "rpi5-4gb", "--model", "tiny", "--verify", "0", NULL }, "--verify" },
        { { "plan", "--device", "rpi5-4gb", "--model", "smollm2-135m", "--methods", "lora", "--opt", "rank=0",
            "--baseline-mb", "1", NULL },
          "method lora: option rank" },
        { { "plan", "--device", "rpi5-4gb", "--model", "smollm2-135m", "--seqs", "65536", NULL }, "max_seq" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tproc r = tproc_run(cases[i].args, 60);
        cr_expect_eq(r.code, 2, "case %zu: exit %d: %s", i, r.code, r.err);
        cr_expect_eq(tproc_lines(r.err), 1, "case %zu: not one line: %s", i, r.err);
        cr_expect(strstr(r.err, cases[i].says) != NULL, "case %zu: '%s' not in %s", i, cases[i].says, r.err);
        cr_expect(strncmp(r.err, "ftbench plan: ", 14) == 0, "case %zu: %s", i, r.err);
        tproc_free(&r);
    }
    unlink(garbage);
    rmdir(dir);
}

/* fit starts at the plan's prediction and confirms it by measurement: on
 * tiny, where every length up to --seq-max fits, one probe instead of the
 * three of a search from --seq-min (64, 128, 256), and it says so. */
Test(plan_cmd, fit_starts_at_the_plan_and_says_how_many_probes_it_saved, .timeout = 300)
{
    char dir[64], path[160];
    temp_dir(dir, sizeof dir);
    const char *args[] = { "fit",  "--device",  "host", "--model",   "tiny", "--method",
                           "lora", "--seq-min", "64",   "--seq-max", "256",  "--out",
                           dir,    "--run-id",  "f",    "--quiet",   NULL };
    tproc r = tproc_run(args, 250);
    cr_assert_eq(r.code, 0, "exit %d: %s %s", r.code, r.out, r.err);
    cr_expect(strstr(r.out, "plan: predicted longest fit 512 tokens") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "plan: 1 probes; a search from --seq-min would have made 3 (saved 2)") != NULL, "%s",
              r.out);
    cr_expect(strstr(r.out, "longest sequence that fits host: 256 tokens") != NULL, "%s", r.out);
    tproc_free(&r);
    snprintf(path, sizeof path, "%s/host/f/fit.json", dir);
    json_t *fit = json_load_file(path, 0, NULL);
    cr_assert_not_null(fit, "%s", path);
    cr_expect_eq(json_integer_value(json_object_get(fit, "planned_longest_seq")), 512);
    cr_expect_eq(json_array_size(json_object_get(fit, "probes")), 1);
    json_decref(fit);
}
