/*
 * test_harness_units.c — harness pieces in-process (suite "harness"):
 * results-file appends and torn-line repair, cell keys, list parsing,
 * option parsing, the roofline, the RSS sampler.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cell.h"
#include "cli.h"
#include "plugin.h"
#include "proctree.h"
#include "sampler.h"
#include "sweep.h"
#include "util.h"

Test(harness, append_line_repairs_a_torn_tail)
{
    char path[] = "/tmp/ftbunit-XXXXXX";
    close(mkstemp(path));
    char err[256];
    cr_assert_eq(ftb_append_line(path, "{\"cell\":\"a\"}", err, sizeof err), 0, "%s", err);
    FILE *f = fopen(path, "a");
    fputs("{\"cell\":\"tor", f); /* a writer died here */
    fclose(f);
    cr_assert_eq(ftb_append_line(path, "{\"cell\":\"b\"}", err, sizeof err), 0, "%s", err);
    ftb_recorded r;
    cr_assert_eq(ftb_recorded_load(path, &r), 0);
    cr_expect_eq(r.n, 2, "the torn line is skipped, both records kept");
    cr_expect(ftb_recorded_find(&r, "a") && ftb_recorded_find(&r, "b"));
    cr_expect_null(ftb_recorded_find(&r, "tor"));
    ftb_recorded_free(&r);
    char *text = ftb_read_file(path, NULL, err, sizeof err);
    cr_expect_str_eq(text, "{\"cell\":\"a\"}\n{\"cell\":\"tor\n{\"cell\":\"b\"}\n");
    free(text);
    unlink(path);
    cr_assert_eq(ftb_recorded_load("/nonexistent/results.jsonl", &r), 0, "no file: nothing recorded yet");
    cr_expect_eq(r.n, 0);
}

/* lib/util.c: the path helpers models/checkpoint.c shares with the harness. */
Test(harness, path_join_and_mkdirs)
{
    char *p = ftb_path_join("a/b", "c.json"), *q = ftb_path_join("a/b/", "c.json"), *r = ftb_path_join("", "c");
    cr_expect_str_eq(p, "a/b/c.json");
    cr_expect_str_eq(q, "a/b/c.json");
    cr_expect_str_eq(r, "c");
    free(p);
    free(q);
    free(r);
    char dir[] = "/tmp/ftb-mkdirs-XXXXXX", deep[128], file[128], below[160], err[512] = "";
    cr_assert(mkdtemp(dir));
    snprintf(deep, sizeof deep, "%s/x/y/z", dir);
    cr_expect_eq(ftb_mkdirs(deep, err, sizeof err), 0, "%s", err);
    cr_expect(ftb_is_dir(deep));
    cr_expect_eq(ftb_mkdirs(deep, err, sizeof err), 0, "an existing directory: %s", err);
    snprintf(file, sizeof file, "%s/f", dir);
    FILE *f = fopen(file, "w");
    cr_assert(f);
    fclose(f);
    cr_expect_eq(ftb_mkdirs(file, err, sizeof err), -1);
    cr_expect(strstr(err, "f: not a directory"), "%s", err);
    snprintf(below, sizeof below, "%s/sub", file);
    cr_expect_eq(ftb_mkdirs(below, err, sizeof err), -1);
    cr_expect(strstr(err, ": cannot create directory: "), "%s", err);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

Test(harness, cell_keys_are_stable_and_option_order_free)
{
    ftb_cell a, b;
    ftb_cell_init(&a);
    snprintf(a.method_label, sizeof a.method_label, "lora");
    snprintf(a.model_name, sizeof a.model_name, "qwen2.5-0.5b");
    a.seq = 512;
    a.batch = 2;
    ftb_cell_make_key(&a);
    cr_expect_str_eq(a.key, "lora.qwen2.5-0.5b.s512.b2");
    b = a;
    a.n_opts = 2;
    a.opt_keys[0] = "rank";
    a.opt_values[0] = "4";
    a.opt_keys[1] = "alpha";
    a.opt_values[1] = "8";
    b.n_opts = 2;
    b.opt_keys[0] = "alpha";
    b.opt_values[0] = "8";
    b.opt_keys[1] = "rank";
    b.opt_values[1] = "4";
    ftb_cell_make_key(&a);
    ftb_cell_make_key(&b);
    cr_expect_str_eq(a.key, b.key);
    cr_expect(strncmp(a.key, "lora+", 5) == 0, "%s", a.key);
    b.opt_values[1] = "8";
    ftb_cell_make_key(&b);
    cr_expect_str_neq(a.key, b.key);
}

Test(harness, int_lists)
{
    int *v, n;
    char err[256];
    cr_assert_eq(ftb_parse_int_list("128..4096", 1, 1 << 20, &v, &n, err, sizeof err), 0, "%s", err);
    cr_expect_eq(n, 6);
    cr_expect_eq(v[0], 128);
    cr_expect_eq(v[5], 4096);
    free(v);
    cr_assert_eq(ftb_parse_int_list("512, 64,512,100..300", 1, 1 << 20, &v, &n, err, sizeof err), 0, "%s", err);
    int want[] = { 64, 100, 200, 512 };
    cr_expect_eq(n, 4);
    for (int i = 0; i < 4 && i < n; i++) cr_expect_eq(v[i], want[i]);
    free(v);
    cr_expect_neq(ftb_parse_int_list("0", 1, 100, &v, &n, err, sizeof err), 0);
    cr_expect_neq(ftb_parse_int_list("5..2", 1, 100, &v, &n, err, sizeof err), 0);
    cr_expect_neq(ftb_parse_int_list("x", 1, 100, &v, &n, err, sizeof err), 0);
    cr_expect_neq(ftb_parse_int_list("", 1, 100, &v, &n, err, sizeof err), 0);
}

Test(harness, option_parsing_and_scoping)
{
    ftb_cli o;
    char err[256];
    char *argv[] = { "run",   "--seq=256", "--opt", "rank=4", "--opt", "lora.alpha=32",
                     "--opt", "full.x=1",  "--opt", "rank=8", NULL };
    cr_assert_eq(ftb_cli_parse("run", CLI_SHAPE | CLI_TRAIN, 10, argv, &o, err, sizeof err), 0, "%s", err);
    cr_expect_eq(o.seq, 256);
    const char *k[8], *v[8];
    int n = ftb_cli_method_options(&o, "lora", k, v, 8);
    cr_expect_eq(n, 2);
    cr_expect_str_eq(k[0], "rank");
    cr_expect_str_eq(v[0], "8", "the later --opt wins");
    cr_expect_str_eq(k[1], "alpha");
    n = ftb_cli_method_options(&o, "full", k, v, 8);
    cr_expect_eq(n, 2);
    ftb_cli_free(&o);
    char *bad[] = { "run", "--seq", "12x", NULL };
    cr_expect_eq(ftb_cli_parse("run", CLI_SHAPE, 3, bad, &o, err, sizeof err), -1);
    cr_expect(strstr(err, "--seq: '12x' is not a positive integer"), "%s", err);
    char *notallowed[] = { "list", "--seq", "12", NULL };
    cr_expect_eq(ftb_cli_parse("list", CLI_DEVICE, 3, notallowed, &o, err, sizeof err), -1);
    cr_expect(strstr(err, "unknown option '--seq'"), "%s", err);
}

Test(harness, sizes)
{
    int64_t b;
    cr_expect(ftb_parse_size("512M", &b) == 0 && b == 512LL << 20);
    cr_expect(ftb_parse_size("1.5G", &b) == 0 && b == 3LL << 29);
    cr_expect(ftb_parse_size("100", &b) == 0 && b == 100);
    cr_expect(ftb_parse_size("12MiB", &b) != 0);
    cr_expect(ftb_parse_size("-1G", &b) != 0);
}

Test(harness, roofline_projection)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("smollm2-135m", &cfg), 0);
    ftb_profile dev;
    memset(&dev, 0, sizeof dev);
    dev.peak_gflops_fp32 = 100;
    dev.mem_bandwidth_gbs = 10;
    double P = (double)ftb_config_param_count(&cfg);
    double A = 2.0 * 1024 * 1024 * cfg.n_heads * cfg.head_dim * cfg.n_layers, F = 2.0 * 1024 * P + A;
    /* full fine-tuning: forward, input and weight gradients: 3F (tied embeddings) */
    json_t *p = ftb_roofline_projection(&dev, &cfg, 1, 1024, (int64_t)P, 1, 1, 0);
    double flops = json_number_value(json_object_get(p, "flops_per_step"));
    cr_expect(fabs(flops - 3 * F) / flops < 1e-9, "flops %g, expected %g (tied embeddings)", flops, 3 * F);
    json_decref(p);
    /* a frozen base with 1000 trainable values: no weight gradient of the base (2F + A + the adapters' dW) */
    p = ftb_roofline_projection(&dev, &cfg, 1, 1024, 1000, 1, 1, 0);
    flops = json_number_value(json_object_get(p, "flops_per_step"));
    double frozen = 2 * F + A + 2.0 * 1024 * 1000;
    cr_expect(fabs(flops - frozen) / flops < 1e-9, "flops %g, expected %g (frozen base)", flops, frozen);
    json_decref(p);
    /* zeroth order: two forwards, no backward */
    p = ftb_roofline_projection(&dev, &cfg, 1, 1024, 1000, 2, 0, 0);
    flops = json_number_value(json_object_get(p, "flops_per_step"));
    cr_expect(fabs(flops - 2 * F) / flops < 1e-9, "flops %g, expected %g (forwards only)", flops, 2 * F);
    json_decref(p);
    p = ftb_roofline_projection(&dev, &cfg, 1, 1024, 1000, 1, 1, 0);
    flops = json_number_value(json_object_get(p, "flops_per_step"));
    double t = json_number_value(json_object_get(p, "projected_step_seconds_roofline"));
    double tc = flops / 100e9, tm = json_number_value(json_object_get(p, "bytes_per_step")) / 10e9;
    cr_expect(fabs(t - fmax(tc, tm)) < 1e-12);
    json_decref(p);
    dev.mem_bandwidth_gbs = 0;
    p = ftb_roofline_projection(&dev, &cfg, 1, 1024, 1000, 1, 1, 0);
    cr_expect(json_is_null(json_object_get(p, "projected_step_seconds_roofline")));
    json_decref(p);
}

Test(harness, sampler_samples_rss_about_every_millisecond)
{
    ftb_sampler *s = ftb_sampler_start(ftb_now(), 1e-3, 32, NULL);
    cr_assert(s);
    /* 300 ms, not the 80 that suffice on an idle machine: at a load of 12
     * on 2 cores the sampler thread was once not scheduled at all in 80 ms
     * (no sample).  The halvings keep the count within 32 either way. */
    struct timespec ts = { 0, 300 * 1000000L };
    nanosleep(&ts, NULL);
    ftb_sampler_stop(s);
    size_t n = ftb_sampler_count(s);
    /* 32 slots: more than 32 samples forced halvings of the rate. */
    cr_expect(n >= 8 && n <= 32, "%zu samples", n);
    cr_expect(ftb_sampler_period(s) > 1e-3, "the rate halved when the buffer filled");
    const ftb_rss_sample *v = ftb_sampler_samples(s);
    for (size_t i = 0; i < n; i++) {
        cr_expect(v[i].rss > 0);
        if (i) cr_expect(v[i].t >= v[i - 1].t);
    }
    cr_expect(ftb_sampler_max_rss(s) > 0);
    ftb_sampler_free(s);
}

/* Stopped before its thread ran (what a loaded machine does to a short
 * window): still a sample, so a cell never reports no RSS at all. */
Test(harness, a_sampler_stopped_at_once_still_has_a_sample)
{
    for (int i = 0; i < 20; i++) {
        ftb_sampler *s = ftb_sampler_start(ftb_now(), 1e-3, 32, NULL);
        cr_assert(s);
        ftb_sampler_stop(s);
        cr_expect(ftb_sampler_count(s) >= 1, "round %d: no sample", i);
        cr_expect(ftb_sampler_max_rss(s) > 0, "round %d: max RSS %lld", i, (long long)ftb_sampler_max_rss(s));
        ftb_sampler_free(s);
    }
}

/* The tree's RSS is the sum over the process and its descendants (a
 * child and a grandchild holding 32 MiB each), and the sampler publishes
 * it in the shared page. */
Test(harness, process_tree_rss_sums_the_descendants)
{
    cr_expect_eq(ftb_has_children(), 0);
    int pipefd[2];
    cr_assert_eq(pipe(pipefd), 0);
    pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        /* Both die with the test, whatever it asserts. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(pipefd[0]);
        pid_t gc = fork();
        if (gc == 0) prctl(PR_SET_PDEATHSIG, SIGKILL);
        size_t n = (size_t)32 << 20;
        char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(p, 1, n);
        /* Each of the two says when its pages are in (a fixed sleep for the
         * grandchild's was too short on a loaded machine). */
        if (write(pipefd[1], "x", 1) != 1) _exit(1);
        pause(); /* until killed */
        _exit(0);
    }
    close(pipefd[1]);
    char x;
    cr_assert_eq(read(pipefd[0], &x, 1), 1);
    cr_assert_eq(read(pipefd[0], &x, 1), 1);
    close(pipefd[0]);
    cr_expect_eq(ftb_has_children(), 1);
    int np = 0;
    int64_t self = ftb_pid_rss(getpid());
    int64_t sum = ftb_proctree_rss(getpid(), &np);
    cr_expect_eq(np, 3, "self, child, grandchild: %d", np);
    cr_expect(sum >= self + ((int64_t)60 << 20), "tree %lld, self %lld", (long long)sum, (long long)self);
    ftb_tree_shared *t = ftb_tree_shared_new();
    cr_assert(t);
    ftb_sampler *s = ftb_sampler_start(ftb_now(), 1e-3, 0, t);
    usleep(50000);
    ftb_sampler_stop(s);
    cr_expect(ftb_sampler_max_tree_rss(s) >= self + ((int64_t)60 << 20));
    cr_expect(atomic_load(&t->max_bytes) >= self + ((int64_t)60 << 20));
    cr_expect_eq(atomic_load(&t->max_procs), 3);
    cr_expect_eq(ftb_sampler_count(s), 0, "capacity 0 keeps no samples");
    ftb_sampler_free(s);
    ftb_tree_shared_free(t);
    kill(-child, SIGKILL);
    waitpid(child, NULL, 0);
    cr_expect(ftb_proctree_rss(getpid(), &np) > 0);
}

Test(harness, sweep_definitions)
{
    cr_assert(ftb_sweep_find("default"));
    cr_assert(ftb_sweep_find("paper"));
    cr_expect_null(ftb_sweep_find("nope"));
    char a[128], b[128];
    ftb_sweep_run_id("default", "x|y", a, sizeof a);
    ftb_sweep_run_id("default", "x|y", b, sizeof b);
    cr_expect_str_eq(a, b);
    ftb_sweep_run_id("default", "x|z", b, sizeof b);
    cr_expect_str_neq(a, b);
}

Test(harness, plugin_resolution_errors)
{
    char path[512], label[64], err[512];
    cr_expect_neq(ftb_plugin_resolve("nosuch", "/nonexistent", path, sizeof path, label, sizeof label, err, sizeof err),
                  0);
    cr_expect(strstr(err, "unknown method 'nosuch'"), "%s", err);
    cr_expect_neq(ftb_plugin_resolve("./nosuch.so", NULL, path, sizeof path, label, sizeof label, err, sizeof err), 0);
    cr_expect(strstr(err, "no such file"), "%s", err);
    const char *dir = getenv("FTBENCH_METHODS");
    if (dir) {
        cr_assert_eq(ftb_plugin_resolve("lora", dir, path, sizeof path, label, sizeof label, err, sizeof err), 0, "%s",
                     err);
        cr_expect_str_eq(label, "lora");
        char *json = NULL;
        cr_assert_eq(ftb_plugin_probe(path, &json, err, sizeof err), 0, "%s", err);
        cr_expect(strstr(json, "\"options\""));
        free(json);
    }
}
