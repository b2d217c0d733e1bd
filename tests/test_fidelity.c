/*
 * test_fidelity.c — `ftbench fidelity` and the ABI 2 gradient callback
 * (suite "fidelity").
 *
 * Through the command (the binary from $FTBENCH_BIN, plugins from
 * $FTBENCH_METHODS and $FTBENCH_TEST_PLUGINS, all set by `make test`): every
 * exact method's gradient is the exact gradient to float precision; gc, mebp
 * and mesp give LoRA's (and gc the inner method's) gradients; an ABI 1
 * plugin loads and is measured by the host's generic path; more zeroth-order
 * queries give a higher cosine; bad input and a crashing method are one
 * line.  In process: the zeroth-order gradient callbacks leave the
 * parameters bit-identical and the next step unchanged, their estimate is
 * what the step applies, and their exact gradients are LoRA's.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftbench.h"
#include "plugin.h"
#include "helpers.h"

extern char **environ;

static const char *bin(void) { return getenv("FTBENCH_BIN"); }
static const char *methods(void) { return getenv("FTBENCH_METHODS"); }
static const char *plugins(void) { return getenv("FTBENCH_TEST_PLUGINS"); }

static void need_env(void)
{
    if (!bin() || !methods() || !plugins())
        cr_skip_test("FTBENCH_BIN, FTBENCH_METHODS and FTBENCH_TEST_PLUGINS are set by make test");
}

/* ---- running the command -------------------------------------------------- */

typedef struct {
    int code;
    char *out, *err;
} proc;

static char **child_env(void)
{
    static char *env[512];
    static char asan[] = "ASAN_OPTIONS=handle_segv=0:handle_abort=0:detect_leaks=0";
    static char blas[] = "FTBENCH_BLAS_AUTO=0";
    int n = 0;
    for (char **e = environ; *e && n < 500; e++)
        if (strncmp(*e, "ASAN_OPTIONS=", 13) && strncmp(*e, "FTBENCH_BLAS_AUTO=", 18)) env[n++] = *e;
    env[n++] = asan;
    env[n++] = blas;
    env[n] = NULL;
    return env;
}

static proc run(const char *const *args)
{
    char outp[] = "/tmp/ftbfid-out-XXXXXX", errp[] = "/tmp/ftbfid-err-XXXXXX";
    close(mkstemp(outp));
    close(mkstemp(errp));
    const char *argv[64];
    int n = 0;
    argv[n++] = bin();
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, bin(), &fa, NULL, (char *const *)argv, child_env());
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", bin(), strerror(rc));
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    proc p;
    p.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    p.out = th_slurp(outp);
    p.err = th_slurp(errp);
    unlink(outp);
    unlink(errp);
    return p;
}

static void proc_free(proc *p)
{
    free(p->out);
    free(p->err);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static char tmpdir[256];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void make_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftbfid-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
    if (tmpdir[0]) nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = 0;
}

TestSuite(fidelity, .fini = rm_tmp);

#define MAX_ARGS 40

/* `ftbench fidelity` on the tiny model with extra arguments (NULL-ended);
 * returns the record it appended (caller decrefs), asserting exit 0. */
static json_t *fidelity(const char *const *extra)
{
    const char *args[MAX_ARGS] = { "fidelity",  "--model", "tiny",          "--seq",   "24",    "--batch", "2",
                                   "--threads", "1",       "--methods-dir", methods(), "--out", tmpdir };
    int n = 13;
    for (int i = 0; extra[i] && n < MAX_ARGS - 1; i++) args[n++] = extra[i];
    args[n] = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/fidelity.jsonl", tmpdir);
    unlink(path);
    proc p = run(args);
    cr_assert_eq(p.code, 0, "fidelity %s %s: exit %d\n%s%s", extra[0], extra[1] ? extra[1] : "", p.code, p.out, p.err);
    char *text = th_slurp(path);
    cr_assert_eq(count_lines(text), 1, "one record expected in %s:\n%s", path, text);
    json_error_t je;
    json_t *r = json_loads(text, 0, &je);
    cr_assert_not_null(r, "record does not parse: %s", je.text);
    free(text);
    proc_free(&p);
    return r;
}

static double num(const json_t *o, const char *a, const char *b)
{
    json_t *x = json_object_get(o, a);
    if (b) x = json_object_get(x, b);
    cr_assert(json_is_number(x), "%s.%s is not a number", a, b ? b : "");
    return json_number_value(x);
}

static const char *str(const json_t *o, const char *a, const char *b)
{
    json_t *x = json_object_get(o, a);
    if (b) x = json_object_get(x, b);
    const char *s = json_string_value(x);
    return s ? s : "";
}

/* ---- exact methods, through the command ------------------------------------ */

/* cos(g, g*) = 1 and ‖g − g*‖ ≤ 1e-5·‖g*‖, overall and per tensor, with g*
 * informative (non-zero: after one step LoRA's B is not zero). */
static void expect_exact(const char *label, const char *const *extra)
{
    json_t *r = fidelity(extra);
    const json_t *x = json_object_get(r, "exact");
    double cos = num(x, "cosine", NULL), rel = num(x, "rel_error", NULL);
    cr_expect(cos >= 1 - 1e-6, "%s: cosine %.9f", label, cos);
    cr_expect(rel <= 1e-5, "%s: relative error %.3e", label, rel);
    cr_expect(num(x, "norm_ref", NULL) > 0, "%s: the exact gradient is zero", label);
    cr_expect(json_is_true(json_object_get(r, "params_unchanged")), "%s: parameters changed", label);
    cr_expect_str_eq(str(r, "method", "gradient"), "host: forward_backward", "%s", label);
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(x, "per_tensor"), i, t)
    {
        /* (a zero exact gradient must be matched exactly: rel_error 0, not null) */
        cr_expect(num(t, "rel_error", NULL) <= 1e-5, "%s: tensor %s relative error %.3e", label, str(t, "name", NULL),
                  num(t, "rel_error", NULL));
    }
    json_decref(r);
}

Test(fidelity, exact_methods_give_the_exact_gradient, .timeout = 300)
{
    need_env();
    make_tmp();
    const char *simple[] = { "full", "lora", "ia3", "mebp", "mesp", "lars", "lastk" };
    for (size_t i = 0; i < sizeof simple / sizeof *simple; i++)
        expect_exact(simple[i], (const char *[]){ "--method", simple[i], NULL });
    const char *inner[] = { "lora", "full", "ia3", "lars" };
    for (size_t i = 0; i < sizeof inner / sizeof *inner; i++) {
        char opt[32];
        snprintf(opt, sizeof opt, "inner=%s", inner[i]);
        expect_exact(opt, (const char *[]){ "--method", "gc", "--opt", opt, NULL });
    }
    /* eager attention and the full loss: other kernels, the same answer */
    expect_exact("gc eager/full", (const char *[]){ "--method", "gc", "--attention", "eager", "--loss", "full",
                                                    "--after-steps", "2", NULL });
}

/* gc, mebp and mesp against lora (and gc against each inner method): the
 * same seed, steps and batch on a fresh model, tensors matched by name. */
static void expect_same_as(const char *method, const char *opt, const char *ref)
{
    const char *args[12] = { "--method", method, "--against", ref };
    int n = 4;
    if (opt) {
        args[n++] = "--opt";
        args[n++] = opt;
    }
    args[n] = NULL;
    json_t *r = fidelity(args);
    const json_t *a = json_object_get(r, "against");
    cr_assert_not_null(a, "%s vs %s: no comparison recorded", method, ref);
    double rel = num(a, "rel_error", NULL);
    cr_expect(rel <= 1e-5, "%s %s vs %s: relative error %.3e", method, opt ? opt : "", ref, rel);
    cr_expect(num(a, "cosine", NULL) >= 1 - 1e-6, "%s vs %s: cosine %.9f", method, ref, num(a, "cosine", NULL));
    cr_expect(num(a, "norm_ref", NULL) > 0);
    cr_expect_eq((int)num(a, "tensors", NULL), (int)num(a, "reference_tensors", NULL),
                 "%s vs %s: %d of %d tensors matched", method, ref, (int)num(a, "tensors", NULL),
                 (int)num(a, "reference_tensors", NULL));
    cr_expect_str_eq(str(a, "method", "label"), ref);
    json_decref(r);
}

Test(fidelity, gc_mebp_and_mesp_give_loras_gradients, .timeout = 300)
{
    need_env();
    make_tmp();
    expect_same_as("gc", NULL, "lora");
    expect_same_as("mebp", NULL, "lora");
    expect_same_as("mesp", NULL, "lora");
    expect_same_as("mesp", "rank=4", "lora"); /* an unscoped option reaches both */
    expect_same_as("gc", "inner=full", "full");
    expect_same_as("gc", "inner=ia3", "ia3");
    expect_same_as("gc", "inner=lars", "lars");
}

Test(fidelity, against_a_method_with_other_tensors_is_one_line)
{
    need_env();
    make_tmp();
    proc p = run((const char *[]){ "fidelity", "--model", "tiny", "--seq", "16", "--methods-dir", methods(), "--out",
                                   tmpdir, "--method", "lora", "--against", "ia3", NULL });
    cr_expect_eq(p.code, 1, "exit %d: %s", p.code, p.err);
    cr_expect_eq(count_lines(p.err), 1, "%s", p.err);
    cr_expect(strstr(p.err, "against ia3") && strstr(p.err, "no counterpart"), "%s", p.err);
    proc_free(&p);
}

/* ---- ABI 1 ------------------------------------------------------------------ */

/* ABI 3 made the by-value structs growable, which an ABI 1 layout is not:
 * v1sgd (its struct at the end of a readable page: reading past abi_version
 * would fault) is refused by every command, each naming both versions. */
Test(fidelity, an_abi1_plugin_is_refused_naming_both_versions)
{
    need_env();
    make_tmp();
    char path[512];
    snprintf(path, sizeof path, "%s/v1sgd.so", plugins());
    proc p =
        run((const char *[]){ "fidelity", "--model", "tiny", "--seq", "16", "--method", path, "--out", tmpdir, NULL });
    cr_expect_eq(p.code, 2, "fidelity of a v1 plugin: exit %d\n%s%s", p.code, p.out, p.err);
    cr_expect(strstr(p.err, "built for ABI 1") && strstr(p.err, "this ftbench has ABI 3"), "%s", p.err);
    proc_free(&p);
    p = run((const char *[]){ "run", "--model", "tiny", "--seq", "16", "--steps", "2", "--method", path, "--out",
                              tmpdir, "--quiet", NULL });
    cr_expect_eq(p.code, 2, "run of a v1 plugin: exit %d\n%s%s", p.code, p.out, p.err);
    cr_expect(strstr(p.err, "built for ABI 1") && strstr(p.err, "this ftbench has ABI 3"), "%s", p.err);
    proc_free(&p);
    p = run((const char *[]){ "list", "--methods-dir", plugins(), NULL });
    cr_expect(strstr(p.out, "v1sgd") && strstr(p.out, "UNUSABLE") && strstr(p.out, "built for ABI 1"), "%s", p.out);
    proc_free(&p);
}

/* ---- bad input, crashes -------------------------------------------------------- */

static void expect_usage_error(const char *const *args, const char *needle)
{
    proc p = run(args);
    cr_expect_eq(p.code, 2, "exit %d for %s ... (%s)", p.code, args[1], p.err);
    cr_expect_eq(count_lines(p.err), 1, "one line expected:\n%s", p.err);
    cr_expect(strstr(p.err, needle) != NULL, "'%s' not in: %s", needle, p.err);
    cr_expect(strncmp(p.err, "ftbench fidelity: ", 18) == 0, "%s", p.err);
    proc_free(&p);
}

Test(fidelity, bad_input_is_one_line_and_exit_2)
{
    need_env();
    const char *md = methods();
    expect_usage_error(
        (const char *[]){ "fidelity", "--methods-dir", md, "--method", "nosuch", "--model", "tiny", NULL },
        "unknown method 'nosuch'");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--after-steps", "x", NULL },
                       "--after-steps: 'x' is not an integer");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--after-steps=-1", NULL },
                       "--after-steps: '-1'");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--after-steps", NULL },
                       "--after-steps needs a value");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--model", "tiny", NULL },
                       "--method is required");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", NULL }, "no model");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--against", "nosuch", NULL },
                       "unknown method 'nosuch'");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--seq", "100000", NULL },
                       "max_seq");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--opt", "rnak=4", NULL },
                       "has no option 'rnak'");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--devices", "x", NULL },
                       "unknown option '--devices'");
    expect_usage_error((const char *[]){ "fidelity", "--methods-dir", md, "--method", "lora", "--model", "tiny",
                                         "--threads", "0", NULL },
                       "--threads: '0'");
}

Test(fidelity, a_failing_or_crashing_method_is_one_line_and_exit_1)
{
    need_env();
    make_tmp();
    char path[512];
    snprintf(path, sizeof path, "%s/segv.so", plugins());
    proc p =
        run((const char *[]){ "fidelity", "--model", "tiny", "--seq", "16", "--method", path, "--out", tmpdir, NULL });
    cr_expect_eq(p.code, 1, "exit %d: %s", p.code, p.err);
    cr_expect_eq(count_lines(p.err), 1, "%s", p.err);
    cr_expect(strstr(p.err, "crashed: SIGSEGV"), "%s", p.err);
    proc_free(&p);
    snprintf(path, sizeof path, "%s/fwdonly.so", plugins());
    p = run((const char *[]){ "fidelity", "--model", "tiny", "--seq", "16", "--method", path, "--out", tmpdir, NULL });
    cr_expect_eq(p.code, 1, "exit %d: %s", p.code, p.err);
    cr_expect_eq(count_lines(p.err), 1, "%s", p.err);
    cr_expect(strstr(p.err, "no trainable"), "%s", p.err);
    proc_free(&p);
    /* a method option refused at init */
    p = run((const char *[]){ "fidelity", "--model", "tiny", "--seq", "16", "--methods-dir", methods(), "--method",
                              "mezo", "--opt", "samples=0", "--out", tmpdir, NULL });
    cr_expect_eq(p.code, 1, "exit %d: %s", p.code, p.err);
    cr_expect_eq(count_lines(p.err), 1, "%s", p.err);
    cr_expect(strstr(p.err, "init: mezo: option samples: 0 is not in 1..64"), "%s", p.err);
    proc_free(&p);
}

/* ---- zeroth order through the command --------------------------------------- */

/* The estimate's cosine grows with the queries it averages, as 1/√(1 + (d+1)/n)
 * for Gaussian directions in d dimensions: each figure deterministic
 * (seeds), the mean over three seeds compared with that. */
Test(fidelity, more_queries_give_a_higher_cosine, .timeout = 300)
{
    need_env();
    make_tmp();
    struct {
        const char *method, *key, *extra;
    } cases[] = { { "prge", "queries", NULL },
                  { "mezo", "samples", "params=lora" },
                  { "mezo", "samples", "params=full" } };
    for (size_t c = 0; c < 3; c++) {
        double mean_cos[2] = { 0, 0 }, d = 0;
        const char *ns[2] = { "1", "64" };
        for (int seed = 1; seed <= 3; seed++)
            for (int k = 0; k < 2; k++) {
                char opt[32], sd[16];
                snprintf(opt, sizeof opt, "%s=%s", cases[c].key, ns[k]);
                snprintf(sd, sizeof sd, "%d", seed);
                const char *args[12] = { "--method", cases[c].method, "--opt", opt, "--seed", sd };
                int n = 6;
                if (cases[c].extra) {
                    args[n++] = "--opt";
                    args[n++] = cases[c].extra;
                }
                args[n] = NULL;
                json_t *r = fidelity(args);
                double cos = num(r, "exact", "cosine");
                cr_expect(isfinite(cos) && isfinite(num(r, "exact", "norm")) && num(r, "exact", "norm") > 0,
                          "%s %s: the estimate is not finite and non-zero", cases[c].method, opt);
                cr_expect(json_is_true(json_object_get(r, "params_unchanged")), "%s %s", cases[c].method, opt);
                cr_expect_str_eq(str(r, "method", "gradient"), "method callback");
                mean_cos[k] += cos / 3;
                d = num(r, "exact", "params");
                json_decref(r);
            }
        double theory = 1 / sqrt(1 + (d + 1) / 64);
        cr_expect(mean_cos[1] > mean_cos[0] + 0.5 * theory && mean_cos[1] < 1.5 * theory,
                  "%s %s (d = %.0f): mean cosine %.4f with 1, %.4f with 64 (expected about %.4f)", cases[c].method,
                  cases[c].extra ? cases[c].extra : "", d, mean_cos[0], mean_cos[1], theory);
    }
}

/* ---- zeroth order in process ------------------------------------------------- */

static ftb_model *tiny_model(uint64_t seed)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("tiny", &cfg), 0);
    char err[FTB_ERR_LEN];
    ftb_model *m = ftb_model_create(&cfg, seed, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    /* weights ×10 (norms kept): gradients well above fp32 rounding */
    for (int i = 0; i < m->n_params; i++)
        if (!strstr(m->params[i]->name, "norm"))
            for (int64_t j = 0; j < m->params[i]->numel; j++) m->params[i]->data[j] *= 10.0f;
    return m;
}

/* A method on its own tiny model. */
typedef struct {
    ftb_plugin p;
    ftb_model *m;
    ftb_session s;
    ftb_options o;
    void *st;
    ftb_tensor **t;
    int n;
    int64_t d;
} inst;

static void inst_open(inst *x, const char *name, int n_opts, const char **keys, const char **vals, float lr)
{
    memset(x, 0, sizeof *x);
    th_open_method(name, &x->p);
    x->m = tiny_model(31);
    x->o = (ftb_options){ n_opts, keys, vals };
    x->s.model = x->m;
    ftb_run_opts_default(&x->s.run);
    x->s.options = &x->o;
    x->s.seed = 5;
    x->s.lr = lr;
    x->s.total_steps = 10;
    char err[FTB_ERR_LEN] = "";
    x->st = x->p.method->init(&x->s, err, sizeof err);
    cr_assert_not_null(x->st, "%s: %s", name, err);
    x->n = x->p.method->trainable(x->st, &x->t);
    for (int i = 0; i < x->n; i++) x->d += x->t[i]->numel;
}

static void inst_close(inst *x)
{
    x->p.method->destroy(x->st);
    ftb_model_free(x->m);
    ftb_plugin_close(&x->p);
}

static void gather(const inst *x, float *dst, int grads)
{
    for (int i = 0; i < x->n; i++) {
        memcpy(dst, grads ? x->t[i]->grad : x->t[i]->data, sizeof(float) * (size_t)x->t[i]->numel);
        dst += x->t[i]->numel;
    }
}

static float gradient(inst *x, const ftb_batch *b, int exact)
{
    ftb_gradient_fn fn = ftb_plugin_gradient(x->p.method);
    cr_assert_not_null(fn, "%s has no gradient callback", x->p.label);
    char err[FTB_ERR_LEN] = "";
    float loss = NAN;
    cr_assert_eq(fn(x->st, &x->s, b, exact, &loss, err, sizeof err), 0, "%s: %s", x->p.label, err);
    cr_assert(isfinite(loss), "%s: loss %f", x->p.label, (double)loss);
    return loss;
}

static void step(inst *x, const ftb_batch *b)
{
    char err[FTB_ERR_LEN] = "";
    ftb_step_result r = { 0 };
    cr_assert_eq(x->p.method->step(x->st, &x->s, b, &r, err, sizeof err), 0, "%s: %s", x->p.label, err);
}

/* gradient(exact = 0) writes nothing but .grad: the parameters are
 * bit-identical, and the next step is the one it would have been (the seed
 * was peeked): checked against a twin that never called it. */
static void estimate_changes_nothing(const char *name, int n_opts, const char **keys, const char **vals)
{
    int32_t tok[2 * 16], tgt[2 * 16];
    inst a, twin;
    inst_open(&a, name, n_opts, keys, vals, 1e-2f);
    inst_open(&twin, name, n_opts, keys, vals, 1e-2f);
    ftb_batch b = th_batch(tok, tgt, 2, 16, a.m->cfg.vocab_size);
    step(&a, &b); /* B not zero */
    step(&twin, &b);
    float *before = malloc(sizeof(float) * a.d), *after = malloc(sizeof(float) * a.d), *g = malloc(sizeof(float) * a.d),
          *g2 = malloc(sizeof(float) * a.d), *tw = malloc(sizeof(float) * a.d);
    gather(&a, before, 0);
    gradient(&a, &b, 0);
    gather(&a, after, 0);
    cr_expect_eq(memcmp(before, after, sizeof(float) * a.d), 0, "%s: parameters changed by gradient(exact=0)", name);
    gather(&a, g, 1);
    double norm = 0;
    int finite = 1;
    for (int64_t i = 0; i < a.d; i++) {
        finite &= isfinite(g[i]);
        norm += (double)g[i] * g[i];
    }
    cr_expect(finite && norm > 0, "%s: the estimate is not finite and non-zero (norm² %g)", name, norm);
    gradient(&a, &b, 0); /* deterministic: the same estimate again */
    gather(&a, g2, 1);
    cr_expect_eq(memcmp(g, g2, sizeof(float) * a.d), 0, "%s: a second estimate differs", name);
    gradient(&a, &b, 1); /* the exact one leaves the parameters too */
    gather(&a, after, 0);
    cr_expect_eq(memcmp(before, after, sizeof(float) * a.d), 0, "%s: parameters changed by gradient(exact=1)", name);
    step(&a, &b);
    step(&twin, &b);
    gather(&a, after, 0);
    gather(&twin, tw, 0);
    cr_expect_eq(memcmp(after, tw, sizeof(float) * a.d), 0, "%s: the step after gradient() is not the twin's", name);
    free(before);
    free(after);
    free(g);
    free(g2);
    free(tw);
    inst_close(&a);
    inst_close(&twin);
}

Test(fidelity, zo_estimates_leave_parameters_and_the_next_step_unchanged)
{
    ftb_set_threads(1);
    const char *k1[] = { "params" }, *v_full[] = { "full" }, *v_lora[] = { "lora" };
    estimate_changes_nothing("mezo", 1, k1, v_full);
    estimate_changes_nothing("mezo", 1, k1, v_lora);
    const char *k2[] = { "params", "samples" }, *v2[] = { "lora", "3" };
    estimate_changes_nothing("mezo", 2, k2, v2);
    const char *k3[] = { "queries" }, *v3[] = { "4" };
    estimate_changes_nothing("prge", 1, k3, v3);
    const char *k4[] = { "queries", "dual" }, *v4[] = { "3", "0" };
    estimate_changes_nothing("prge", 2, k4, v4);
}

/* The estimate is what the step applies: with lr and no weight decay the
 * step moves θ by −lr·g (P-RGE exactly, with lr 1: the same float products;
 * MeZO up to the restore's rounding).  This also checks samples = K > 1:
 * the update averages the K estimates. */
static void estimate_is_the_update(const char *name, int n_opts, const char **keys, const char **vals, float lr,
                                   double tol)
{
    int32_t tok[2 * 16], tgt[2 * 16];
    inst a;
    inst_open(&a, name, n_opts, keys, vals, lr);
    ftb_batch b = th_batch(tok, tgt, 2, 16, a.m->cfg.vocab_size);
    step(&a, &b);
    float *before = malloc(sizeof(float) * a.d), *after = malloc(sizeof(float) * a.d), *g = malloc(sizeof(float) * a.d);
    gather(&a, before, 0);
    gradient(&a, &b, 0);
    gather(&a, g, 1);
    step(&a, &b);
    gather(&a, after, 0);
    double max_err = 0, max_ref = 0;
    for (int64_t i = 0; i < a.d; i++) {
        double moved = (double)before[i] - after[i], expect = (double)lr * g[i];
        max_err = fmax(max_err, fabs(moved - expect));
        max_ref = fmax(max_ref, fabs(expect));
    }
    cr_expect(max_ref > 0, "%s: nothing moved", name);
    cr_expect(max_err <= tol * max_ref, "%s %s=%s: step moved θ by −lr·g ± %.3e (max |lr·g| %.3e)", name,
              keys[n_opts - 1], vals[n_opts - 1], max_err, max_ref);
    free(before);
    free(after);
    free(g);
    inst_close(&a);
}

Test(fidelity, the_zo_estimate_is_what_the_step_applies)
{
    ftb_set_threads(1);
    const char *kq[] = { "queries" }, *vq[] = { "4" };
    estimate_is_the_update("prge", 1, kq, vq, 1.0f, 1e-5);
    const char *km[] = { "params", "samples" }, *vm1[] = { "lora", "1" }, *vm4[] = { "lora", "4" },
               *vf4[] = { "full", "4" };
    estimate_is_the_update("mezo", 2, km, vm1, 0.1f, 1e-3);
    estimate_is_the_update("mezo", 2, km, vm4, 0.1f, 1e-3);
    estimate_is_the_update("mezo", 2, km, vf4, 0.1f, 1e-3);
}

/* The zeroth-order plugins' exact gradients (a real backward through their
 * hooks) against the lora plugin's, from the same A (the same seed) and the
 * same random B on every adapted linear; and MeZO full against full. */
static void set_random(ftb_tensor *t, uint64_t seed)
{
    ftb_rng r;
    ftb_rng_seed(&r, seed);
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = 0.05f * ftb_rng_normal(&r);
}

static ftb_tensor *by_name(inst *x, const char *name)
{
    for (int i = 0; i < x->n; i++)
        if (!strcmp(x->t[i]->name, name)) return x->t[i];
    return NULL;
}

static double rel_diff(const float *g, const float *r, int64_t n)
{
    double dd = 0, rr = 0;
    for (int64_t i = 0; i < n; i++) {
        dd += ((double)g[i] - r[i]) * ((double)g[i] - r[i]);
        rr += (double)r[i] * r[i];
    }
    cr_assert(rr > 0, "a zero reference gradient");
    return sqrt(dd / rr);
}

Test(fidelity, zo_exact_gradients_are_loras)
{
    ftb_set_threads(1);
    int32_t tok[2 * 16], tgt[2 * 16];
    char err[FTB_ERR_LEN] = "";
    const char *kl[] = { "targets" }, *vl[] = { "all" };
    inst lora;
    inst_open(&lora, "lora", 1, kl, vl, 1e-2f);
    ftb_batch b = th_batch(tok, tgt, 2, 16, lora.m->cfg.vocab_size);
    for (int i = 0; i < lora.n; i++)
        if (strstr(lora.t[i]->name, "lora_B")) set_random(lora.t[i], 100 + (uint64_t)i);
    for (int i = 0; i < lora.n; i++) memset(lora.t[i]->grad, 0, sizeof(float) * (size_t)lora.t[i]->numel);
    cr_assert(!isnan(ftb_model_forward_backward(lora.m, &b, &lora.s.run, err, sizeof err)), "%s", err);

    const char *km[] = { "params", "targets" }, *vm[] = { "lora", "all" };
    inst zo[2];
    inst_open(&zo[0], "mezo", 2, km, vm, 1e-2f);
    inst_open(&zo[1], "prge", 1, kl, vl, 1e-2f);
    for (int z = 0; z < 2; z++) {
        inst *x = &zo[z];
        int matched = 0;
        for (int i = 0; i < lora.n; i++) {
            ftb_tensor *t = by_name(x, lora.t[i]->name);
            if (strstr(lora.t[i]->name, "lora_B")) {
                cr_assert_not_null(t, "%s lacks %s", x->p.label, lora.t[i]->name);
                memcpy(t->data, lora.t[i]->data, sizeof(float) * (size_t)t->numel);
            } else if (t) {
                cr_assert_eq(memcmp(t->data, lora.t[i]->data, sizeof(float) * (size_t)t->numel), 0,
                             "%s: A differs from lora's", x->p.label);
            }
        }
        gradient(x, &b, 1);
        for (int i = 0; i < lora.n; i++) {
            ftb_tensor *t = by_name(x, lora.t[i]->name);
            if (!t) continue; /* prge: A is frozen, not trainable */
            double rel = rel_diff(t->grad, lora.t[i]->grad, t->numel);
            cr_expect(rel <= 1e-5, "%s: %s relative error %.3e against lora", x->p.label, t->name, rel);
            matched++;
        }
        cr_expect_eq(matched, x->n, "%s: %d of %d tensors compared", x->p.label, matched, x->n);
    }
    inst_close(&zo[0]);
    inst_close(&zo[1]);
    inst_close(&lora);

    /* MeZO full: the core's backward on every parameter, as full's */
    inst full, mz;
    inst_open(&full, "full", 0, NULL, NULL, 1e-2f);
    const char *kf[] = { "params" }, *vf[] = { "full" };
    inst_open(&mz, "mezo", 1, kf, vf, 1e-2f);
    cr_assert_eq(full.d, mz.d);
    for (int i = 0; i < full.n; i++) memset(full.t[i]->grad, 0, sizeof(float) * (size_t)full.t[i]->numel);
    cr_assert(!isnan(ftb_model_forward_backward(full.m, &b, &full.s.run, err, sizeof err)), "%s", err);
    gradient(&mz, &b, 1);
    float *g = malloc(sizeof(float) * full.d), *r = malloc(sizeof(float) * full.d);
    gather(&mz, g, 1);
    gather(&full, r, 1);
    cr_expect(rel_diff(g, r, full.d) <= 1e-6, "mezo full: relative error %.3e", rel_diff(g, r, full.d));
    free(g);
    free(r);
    inst_close(&full);
    inst_close(&mz);
}
