/* test_abi.c — the method plugin boundary (include/ftbench_method.h):
 *   abi    the layout of every struct a plugin holds by value is pinned for
 *          this ABI version, so a change that forgets the ABI rule fails
 *          here; the host's loader and search path; ftb_method_open;
 *   plan   each in-tree method's shape-only plan (memory_plan, no init, no
 *          weights) equals its memory model's prediction (memory_model, or
 *          the host's default) on a built model of that shape, byte for
 *          byte and category by category. */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftbench.h"
#include "plugin.h"
#include "helpers.h"

/* ---- abi ---------------------------------------------------------------------- */

/* The sizes below are ABI 3's (x86-64 and aarch64 LP64).  Changing a struct
 * a plugin holds by value changes one of them: follow the ABI rule at the
 * top of include/ftbench_method.h (bump FTB_ABI_VERSION, use reserved
 * space or raise FTB_ABI_MIN_VERSION), then update this table. */
_Static_assert(FTB_ABI_VERSION == 3, "the layout table below is ABI 3's: check it against the ABI rule");

Test(abi, by_value_structs_keep_their_layout)
{
    cr_expect_eq(sizeof(ftb_tensor), 224);
    cr_expect_eq(offsetof(ftb_tensor, data), 128);
    cr_expect_eq(offsetof(ftb_tensor, reserved), 176);
    cr_expect_eq(sizeof(ftb_batch), 24);
    cr_expect_eq(sizeof(ftb_run_opts), 80);
    cr_expect_eq(offsetof(ftb_run_opts, reserved), 48);
    cr_expect_eq(sizeof(ftb_adapter), 24);
    cr_expect_eq(sizeof(ftb_adapter_ops), 32);
    cr_expect_eq(sizeof(ftb_memory_estimate), 128);
    cr_expect_eq(offsetof(ftb_memory_estimate, reserved), 96);
    cr_expect_eq(sizeof(ftb_rng), 32);
    cr_expect_eq(sizeof(ftb_option_doc), 24);
    /* host-owned, append only: the prefix an older plugin reads stays put */
    cr_expect_eq(offsetof(ftb_method, memory_model), 72);
    cr_expect_eq(offsetof(ftb_method, memory_plan), 80);
    cr_expect_eq(offsetof(ftb_session, run), 8);
}

static const char *test_plugins(void)
{
    const char *d = getenv("FTBENCH_TEST_PLUGINS");
    return d ? d : "build/tests/plugins";
}

/* An ABI 1 plugin is refused with one message naming both versions, having
 * had nothing but its abi_version read (v1sgd sits at the end of a page). */
Test(abi, an_older_abi_plugin_is_refused_naming_both_versions)
{
    char path[4096], err[FTB_ERR_LEN];
    snprintf(path, sizeof path, "%s/v1sgd.so", test_plugins());
    ftb_plugin p;
    cr_assert_neq(ftb_plugin_open(path, &p, err, sizeof err), 0, "an ABI 1 plugin loaded");
    cr_expect(strstr(err, "built for ABI 1") && strstr(err, "this ftbench has ABI 3"), "%s", err);
    char *json = NULL;
    cr_expect_neq(ftb_plugin_probe(path, &json, err, sizeof err), 0);
    cr_expect(strstr(err, "ABI 1") != NULL, "the probe did not name the version: %s", err);
    free(json);
}

static void make_dir(const char *path) { cr_assert_eq(mkdir(path, 0755), 0, "mkdir %s", path); }

/* User directories come first (--methods-dir, then $FTBENCH_METHODS_DIR's,
 * colon-separated), then the built-in one: a name found in several resolves
 * to the first, and listing shows each name once. */
Test(abi, the_search_path_puts_user_directories_before_the_built_ins)
{
    char tmp[] = "/tmp/ftb_abi_XXXXXX";
    cr_assert_not_null(mkdtemp(tmp));
    char a[64], b[64], src[4200], dst[4200];
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    make_dir(a);
    make_dir(b);
    /* b holds its own "lora" (a copy of fwdonly) and "extra" */
    snprintf(src, sizeof src, "%s/fwdonly.so", test_plugins());
    snprintf(dst, sizeof dst, "%s/lora.so", b);
    cr_assert_eq(symlink(src, dst), 0);
    snprintf(dst, sizeof dst, "%s/extra.so", b);
    cr_assert_eq(symlink(src, dst), 0);
    setenv("FTBENCH_METHODS_DIR", b, 1);
    char expect[8600];
    /* the built-in directory: the methods directory of this build */
    const char *path = ftb_methods_search_path(a);
    cr_assert_not_null(path);
    snprintf(expect, sizeof expect, "%s:%s:", a, b);
    cr_expect(strncmp(path, expect, strlen(expect)) == 0, "search path %s", path);
    char resolved[4096], label[128], err[FTB_ERR_LEN];
    cr_assert_eq(ftb_plugin_resolve("lora", path, resolved, sizeof resolved, label, sizeof label, err, sizeof err), 0,
                 "%s", err);
    snprintf(expect, sizeof expect, "%s/lora.so", b);
    cr_expect_str_eq(resolved, expect, "the user's lora must shadow the built-in one");
    cr_assert_eq(ftb_plugin_resolve("mezo", path, resolved, sizeof resolved, label, sizeof label, err, sizeof err), 0,
                 "built-ins must still be found: %s", err);
    char **labels;
    int n;
    cr_assert_eq(ftb_plugin_list(path, &labels, &n, err, sizeof err), 0, "%s", err);
    int loras = 0, extra = 0, mezo = 0;
    for (int i = 0; i < n; i++) {
        loras += !strcmp(labels[i], "lora");
        extra += !strcmp(labels[i], "extra");
        mezo += !strcmp(labels[i], "mezo");
    }
    cr_expect(loras == 1 && extra == 1 && mezo == 1, "listed lora %d, extra %d, mezo %d times", loras, extra, mezo);
    ftb_plugin_free_list(labels, n);
    /* a wrapper opens through the same path: the user's lora */
    const ftb_method *m = ftb_method_open("lora", NULL, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    cr_expect_str_eq(m->name, "fwdonly");
    ftb_method_close(m);
    unsetenv("FTBENCH_METHODS_DIR");
    snprintf(dst, sizeof dst, "%s/lora.so", b);
    unlink(dst);
    snprintf(dst, sizeof dst, "%s/extra.so", b);
    unlink(dst);
    rmdir(a);
    rmdir(b);
    rmdir(tmp);
}

/* ftb_method_open: a name or a path, the host's ABI check, options checked
 * against what the method documents; close unloads. */
Test(abi, method_open_checks_what_the_host_checks)
{
    char err[FTB_ERR_LEN], path[4096];
    ftb_methods_search_path(th_methods_dir());
    const char *kv_keys[] = { "rank", "bogus" }, *kv_values[] = { "4", "1" };
    ftb_options good = { 1, kv_keys, kv_values }, bad = { 2, kv_keys, kv_values };
    const ftb_method *m = ftb_method_open("lora", &good, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    cr_expect_str_eq(m->name, "lora");
    ftb_method_close(m);
    cr_expect_null(ftb_method_open("lora", &bad, err, sizeof err));
    cr_expect(strstr(err, "method lora has no option 'bogus'") && strstr(err, "rank"), "%s", err);
    snprintf(path, sizeof path, "%s/ia3.so", th_methods_dir());
    m = ftb_method_open(path, NULL, err, sizeof err);
    cr_assert_not_null(m, "a path must open: %s", err);
    cr_expect_str_eq(m->name, "ia3");
    ftb_method_close(m);
    snprintf(path, sizeof path, "%s/badabi.so", test_plugins());
    cr_expect_null(ftb_method_open(path, NULL, err, sizeof err));
    cr_expect(strstr(err, "ABI 4") && strstr(err, "ABI 3"), "%s", err);
    cr_expect_null(ftb_method_open("nosuch", NULL, err, sizeof err));
    cr_expect(strstr(err, "method 'nosuch' is not available") && strstr(err, "no nosuch.so in"), "%s", err);
}

/* ---- plan --------------------------------------------------------------------- */

typedef struct {
    const char *method;
    const char *options[6]; /* KEY=VALUE, NULL-terminated */
} plan_case;

/* The method initialised on a built model of cfg, its prediction recorded
 * as the harness records it, then its plan from cfg alone: equal. */
static void expect_plan_equals_model(const char *zoo, const plan_case *c, int B, int T)
{
    char err[FTB_ERR_LEN] = "", what[256];
    const char *keys[6], *values[6];
    char kv[6][64];
    int n = 0;
    for (; c->options[n]; n++) {
        snprintf(kv[n], sizeof kv[n], "%s", c->options[n]);
        char *eq = strchr(kv[n], '=');
        *eq = 0;
        keys[n] = kv[n];
        values[n] = eq + 1;
    }
    ftb_options o = { n, keys, values };
    snprintf(what, sizeof what, "%s %s%s%s on %s, %dx%d", c->method, n ? c->options[0] : "", n > 1 ? " " : "",
             n > 1 ? c->options[1] : "", zoo, B, T);
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get(zoo, &cfg), 0);
    ftb_plugin p;
    th_open_method(c->method, &p);
    ftb_methods_search_path(th_methods_dir()); /* gc and mebp open their inner method by name */

    ftb_model *m = ftb_model_create(&cfg, 3, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    ftb_session s;
    memset(&s, 0, sizeof s);
    s.model = m;
    ftb_run_opts_default(&s.run);
    s.options = &o;
    s.seed = 9;
    s.lr = 1e-3f;
    void *state = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(state, "%s: %s", what, err);
    ftb_memory_estimate built, planned;
    /* a backprop method's default is the training step; mezo and prge have their own */
    ftb_method_memory_estimate(p.method, state, &s, B, T, 1, &built);
    p.method->destroy(state);
    ftb_model_free(m);

    ftb_model_shape shape;
    ftb_model_shape_from_config(&cfg, &shape);
    ftb_run_opts run;
    ftb_run_opts_default(&run);
    cr_assert_eq(ftb_method_plan(p.method, &shape, &o, &run, B, T, &planned, err, sizeof err), 0, "%s: %s", what, err);
    cr_expect_eq(planned.peak_total, built.peak_total, "%s: plan %lld bytes (at %s), built model %lld (at %s)", what,
                 (long long)planned.peak_total, planned.peak_phase, (long long)built.peak_total, built.peak_phase);
    for (int k = 0; k < FTB_MEM_NCAT; k++)
        cr_expect_eq(planned.at_peak[k], built.at_peak[k], "%s: %s at the peak: plan %lld, built %lld", what,
                     ftb_mem_category_name((ftb_mem_category)k), (long long)planned.at_peak[k],
                     (long long)built.at_peak[k]);
    cr_expect_eq(planned.saved_peak, built.saved_peak, "%s: saved peak", what);
    cr_expect_str_eq(planned.peak_phase, built.peak_phase, "%s: peak phase", what);
    ftb_plugin_close(&p);
}

static const plan_case plan_cases[] = {
    { "full", { NULL } },
    { "lastk", { "k=1", NULL } },
    { "lora", { NULL } },
    { "lora", { "rank=4", "targets=q,v", "dropout=0.1", NULL } },
    { "ia3", { NULL } },
    { "ia3", { "targets=all", NULL } },
    { "mesp", { "checkpoint=recompute", NULL } },
    { "mesp", { "rank=3", NULL } },
    { "gc", { NULL } },
    { "gc", { "inner=ia3", NULL } },
    { "gc", { "inner=full", NULL } },
    { "mebp", { "rank=2", NULL } },
    { "lars", { NULL } },
    { "lars", { "variant=gated", "rank=4", "block=8", NULL } },
    { "mezo", { NULL } },
    { "mezo", { "perturb=inplace", NULL } },
    { "mezo", { "params=lora", "rank=2", NULL } },
    { "prge", { "queries=2", NULL } },
    { "prge", { "dual=0", "targets=q,v", NULL } },
};

Test(plan, every_method_plans_what_its_memory_model_predicts, .timeout = 300)
{
    for (size_t i = 0; i < sizeof plan_cases / sizeof *plan_cases; i++) {
        expect_plan_equals_model("tiny", &plan_cases[i], 2, 16);
        expect_plan_equals_model("tiny-tied", &plan_cases[i], 1, 32);
    }
}

/* The same on a real shape, where the state is hundreds of MiB: no
 * allocation of weights happens for the plan (its model has none). */
Test(plan, a_real_shape_is_planned_as_the_built_model_predicts, .timeout = 300)
{
    const plan_case lora = { "lora", { NULL } }, mezo = { "mezo", { NULL } };
    expect_plan_equals_model("smollm2-135m", &lora, 1, 64);
    expect_plan_equals_model("smollm2-135m", &mezo, 1, 64);
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("qwen2.5-0.5b", &cfg), 0);
    ftb_model_shape shape;
    ftb_model_shape_from_config(&cfg, &shape);
    ftb_plugin p;
    th_open_method("lora", &p);
    ftb_mem_stats before, after;
    ftb_mem_get_stats(&before);
    ftb_memory_estimate e;
    char err[FTB_ERR_LEN];
    cr_assert_eq(ftb_method_plan(p.method, &shape, NULL, NULL, 1, 1024, &e, err, sizeof err), 0, "%s", err);
    ftb_mem_get_stats(&after);
    cr_expect_eq(after.peak_total, before.peak_total, "a plan allocated through the core");
    cr_expect_eq(e.at_peak[FTB_MEM_WEIGHTS], 4 * ftb_config_param_count(&cfg), "weights of qwen2.5-0.5b in fp32");
    ftb_plugin_close(&p);
}

/* A method without a plan, or options it cannot plan, is an error, not a
 * guess. */
Test(plan, no_plan_is_an_error_not_a_guess)
{
    char path[4096], err[FTB_ERR_LEN];
    snprintf(path, sizeof path, "%s/fwdonly.so", test_plugins());
    ftb_plugin p;
    cr_assert_eq(ftb_plugin_open(path, &p, err, sizeof err), 0, "%s", err);
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    ftb_model_shape shape;
    ftb_model_shape_from_config(&cfg, &shape);
    ftb_memory_estimate e;
    cr_expect_neq(ftb_method_plan(p.method, &shape, NULL, NULL, 1, 8, &e, err, sizeof err), 0);
    cr_expect(strstr(err, "no shape-only memory plan") != NULL, "%s", err);
    ftb_plugin_close(&p);
    th_open_method("lora", &p);
    const char *k[] = { "rank" }, *v[] = { "0" };
    ftb_options o = { 1, k, v };
    cr_expect_neq(ftb_method_plan(p.method, &shape, &o, NULL, 1, 8, &e, err, sizeof err), 0);
    cr_expect(strstr(err, "option rank") != NULL, "%s", err);
    ftb_plugin_close(&p);
}

/* gc's inner method may be a path (issue 20): the plugin there is opened
 * by the host's loader and wrapped, trainable tensors and all. */
Test(abi, gc_wraps_an_inner_method_given_by_path)
{
    char err[FTB_ERR_LEN] = "", inner[4200];
    snprintf(inner, sizeof inner, "inner=%s/ia3.so", th_methods_dir());
    ftb_plugin p;
    th_open_method("gc", &p);
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    ftb_model *m = ftb_model_create(&cfg, 1, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    const char *keys[] = { "inner" }, *values[] = { inner + 6 };
    ftb_options o = { 1, keys, values };
    ftb_session s;
    memset(&s, 0, sizeof s);
    s.model = m;
    ftb_run_opts_default(&s.run);
    s.options = &o;
    s.lr = 1e-3f;
    void *st = p.method->init(&s, err, sizeof err);
    cr_assert_not_null(st, "gc around %s: %s", inner + 6, err);
    ftb_tensor **t;
    int n = p.method->trainable(st, &t);
    cr_expect_eq(n, 3 * cfg.n_layers, "ia3's k, v and up vectors per block");
    cr_expect(n > 0 && strstr(t[0]->name, "ia3_l"), "%s", n > 0 ? t[0]->name : "none");
    cr_expect(s.run.keep && s.run.keep[0] == FTB_KEEP_INPUT, "gc's keep policy");
    p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
}

/* A wrapper loaded by path finds methods beside it that are not on the
 * search path (gc in a directory of its own, with its inner method). */
Test(abi, a_wrapper_loaded_by_path_finds_methods_beside_it)
{
    char tmp[] = "/tmp/ftb_abi_XXXXXX", src[4200], gc[64], inner[64], err[FTB_ERR_LEN] = "";
    cr_assert_not_null(mkdtemp(tmp));
    snprintf(gc, sizeof gc, "%s/gc.so", tmp);
    snprintf(inner, sizeof inner, "%s/beside.so", tmp);
    snprintf(src, sizeof src, "%s/gc.so", th_methods_dir());
    cr_assert_eq(symlink(src, gc), 0);
    snprintf(src, sizeof src, "%s/ia3.so", th_methods_dir());
    cr_assert_eq(symlink(src, inner), 0);
    ftb_plugin p;
    cr_assert_eq(ftb_plugin_open(gc, &p, err, sizeof err), 0, "%s", err);
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    ftb_model *m = ftb_model_create(&cfg, 1, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    const char *keys[] = { "inner" }, *values[] = { "beside" };
    ftb_options o = { 1, keys, values };
    ftb_session s = th_session(m, &o);
    void *st = p.method->init(&s, err, sizeof err);
    cr_expect_not_null(st, "gc loaded from %s did not find beside.so there: %s", tmp, err);
    if (st) p.method->destroy(st);
    ftb_model_free(m);
    ftb_plugin_close(&p);
    unlink(gc);
    unlink(inner);
    rmdir(tmp);
}
