/*
 * test_cell.c — the cell in-process (suite "cell"): a cell run by
 * ftb_cell_run on the tiny model with the shipped `full` method, and what
 * its record holds; the between-steps hook a command registers (cell.h)
 * instead of the cell calling up into the command.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cell.h"
#include "helpers.h"
#include "record.h"

typedef struct {
    int calls;
    int fail_at; /* the step whose call fails; -1: none */
} probe;

/* Records each call as the hook's fields; fails at fail_at. */
static int probe_between_steps(void *ud, ftb_model *m, const ftb_run_opts *run, int step, int total,
                               double step_seconds, json_t *out, char *err, size_t errlen)
{
    probe *p = ud;
    (void)run;
    if (step == p->fail_at) {
        snprintf(err, errlen, "probe refused step %d of %d", step, total);
        return -1;
    }
    p->calls++; /* in the child: the parent's count stays 0 */
    json_t *seen = json_object_get(out, "probe_steps");
    if (!seen) {
        seen = json_array();
        json_object_set_new(out, "probe_steps", seen);
    }
    json_array_append_new(seen, json_integer(step));
    json_object_set_new(out, "probe_calls_in_child", json_integer(p->calls));
    json_object_set_new(out, "probe_model_layers", json_integer(m->cfg.n_layers));
    json_object_set_new(out, "probe_seconds_ok", json_boolean(step_seconds >= 0 && (step > 0 || step_seconds == 0)));
    return 0;
}

static void tiny_cell(ftb_cell *c, const char *run_dir)
{
    ftb_cell_init(c);
    snprintf(c->model_name, sizeof c->model_name, "tiny");
    cr_assert_eq(ftb_zoo_get("tiny", &c->cfg), 0);
    snprintf(c->method_path, sizeof c->method_path, "%s/full.so", th_methods_dir());
    snprintf(c->method_label, sizeof c->method_label, "full");
    c->seq = 16;
    c->steps = 2;
    c->warmup = 1;
    snprintf(c->device.name, sizeof c->device.name, "host");
    c->budget_bytes = (int64_t)8 << 30;
    c->timeline = 0;
    c->timeout_sec = 120;
    snprintf(c->run_dir, sizeof c->run_dir, "%s", run_dir);
    snprintf(c->run_id, sizeof c->run_id, "cell-test");
    ftb_cell_make_key(c);
}

Test(cell, between_steps_hook_runs_in_the_child_and_its_fields_reach_the_record)
{
    char dir[] = "/tmp/ftb-cell-XXXXXX", err[FTB_ERR_LEN] = "";
    cr_assert(mkdtemp(dir));
    ftb_cell c;
    tiny_cell(&c, dir);
    probe p = { 0, -1 };
    c.between_steps = (ftb_cell_step_hook){ probe_between_steps, &p, "probe" };
    ftb_cell_result r;
    cr_assert_eq(ftb_cell_run(&c, &r, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(r.outcome, "ok", "%s", r.detail);
    /* Before the first step and after each of the 3 (1 warm-up + 2). */
    json_t *steps = json_object_get(r.record, "probe_steps");
    cr_assert_eq(json_array_size(steps), 4, "probe_steps: %zu", json_array_size(steps));
    for (int i = 0; i < 4; i++) cr_expect_eq(json_integer_value(json_array_get(steps, (size_t)i)), i);
    cr_expect_eq(json_integer_value(json_object_get(r.record, "probe_calls_in_child")), 4);
    cr_expect_eq(json_integer_value(json_object_get(r.record, "probe_model_layers")), c.cfg.n_layers);
    cr_expect(json_is_true(json_object_get(r.record, "probe_seconds_ok")));
    cr_expect_eq(p.calls, 0, "the hook ran in the parent");
    /* The child's envelope is not part of the record. */
    cr_expect_null(json_object_get(r.record, "between_steps"));
    cr_expect_eq(json_array_size(json_object_get(r.record, "loss_per_step")), 3);
    ftb_cell_result_free(&r);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

Test(cell, a_failing_between_steps_hook_ends_the_cell_at_its_stage)
{
    char dir[] = "/tmp/ftb-cell-XXXXXX", err[FTB_ERR_LEN] = "";
    cr_assert(mkdtemp(dir));
    ftb_cell c;
    tiny_cell(&c, dir);
    probe p = { 0, 2 };
    c.between_steps = (ftb_cell_step_hook){ probe_between_steps, &p, "probe" };
    ftb_cell_result r;
    cr_assert_eq(ftb_cell_run(&c, &r, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(r.outcome, "error");
    cr_expect_str_eq(r.detail, "probe refused step 2 of 3");
    cr_expect_str_eq(json_string_value(json_object_get(r.record, "error_stage")), "probe");
    /* What it added before failing is kept, as the steps measured are. */
    cr_expect_eq(json_array_size(json_object_get(r.record, "probe_steps")), 2);
    cr_expect_eq(json_array_size(json_object_get(r.record, "loss_per_step")), 2);
    ftb_cell_result_free(&r);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

/* record.h: every record, run or not, comes from one struct through one
 * writer; the parent's typed figures and the child's sections land where
 * docs/HARNESS.md says. */
Test(cell, records_are_written_from_one_struct)
{
    ftb_cell c;
    tiny_cell(&c, "/nonexistent");
    ftb_record r;
    json_t *because = json_string("full.tiny.s32.b1");
    ftb_record_init_not_run(&r, &c, "skipped", "not run");
    r.field = "skipped_because";
    r.field_value = because;
    json_t *j = ftb_record_json(&r);
    static const char *const not_run_keys[] = { "schema",         "run_id",          "cell",          "outcome",
                                                "outcome_detail", "skipped_because", "timestamp_utc", NULL };
    const char *k;
    json_t *v;
    int i = 0;
    json_object_foreach(j, k, v)
    {
        if (!not_run_keys[i]) break;
        cr_expect_str_eq(k, not_run_keys[i], "key %d", i);
        i++;
    }
    cr_expect_null(json_object_get(j, "memory"), "a cell not run has no measurements");
    cr_expect_null(json_object_get(j, "stage_reached"));
    cr_expect(json_is_object(json_object_get(j, "settings")));
    json_decref(j);
    json_decref(because);

    /* A cell that ran: the child's sections as they are, the parent's figures typed. */
    json_t *measured =
        json_pack("{s:s, s:{s:I}, s:[f,f], s:{s:i}, s:{s:s}, s:i, s:i}", "stage", "done", "memory",
                  "peak_rss_vmhwm_bytes", (json_int_t)5000, "loss_per_step", 2.5, 2.25, "between_steps", "probe", 7,
                  "host", "blas_core", "Haswell", "not_a_section", 1, "trainable_params", 10);
    ftb_record_init_not_run(&r, &c, "ok", "");
    r.ran = 1;
    r.measured = measured;
    r.memory.peak = 6000;
    r.memory.process_peak = 5000;
    r.memory.tree_max_processes = 2;
    snprintf(r.host.cpu_model, sizeof r.host.cpu_model, "test cpu");
    r.io_error.errno_value = 28;
    r.io_error.timeline = 1;
    r.io_error.file = "x.timeline.tsv";
    r.cell_wall_seconds = 1.5;
    j = ftb_record_json(&r);
    cr_expect_str_eq(json_string_value(json_object_get(j, "stage_reached")), "done");
    json_t *mem = json_object_get(j, "memory");
    cr_expect_eq(json_integer_value(json_object_get(mem, "peak_rss_vmhwm_bytes")), 5000);
    cr_expect_eq(json_integer_value(json_object_get(mem, "peak_rss_bytes")), 6000);
    cr_expect_eq(json_integer_value(json_object_get(mem, "tree_max_processes")), 2);
    cr_expect(json_is_null(json_object_get(mem, "peak_rss_ru_maxrss_bytes")));
    cr_expect_eq(json_array_size(json_object_get(j, "loss_per_step")), 2);
    cr_expect_eq(json_integer_value(json_object_get(j, "probe")), 7);
    cr_expect_null(json_object_get(j, "not_a_section"));
    json_t *host = json_object_get(j, "host");
    cr_expect_str_eq(json_string_value(json_object_get(host, "blas_core")), "Haswell");
    cr_expect_str_eq(json_string_value(json_object_get(host, "cpu_model")), "test cpu");
    cr_expect_null(json_object_get(json_object_get(measured, "host"), "cpu_model"), "the child's section was changed");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "timeline_error"), "name")), "ENOSPC");
    cr_expect_null(json_object_get(j, "io_error"));
    cr_expect(json_is_object(json_object_get(j, "projection")));
    cr_expect_eq(json_real_value(json_object_get(j, "cell_wall_seconds")), 1.5);
    json_decref(j);
    json_decref(measured);
}

/* Sum of a record's ops.classes seconds; *core without "other". */
static double ops_sum(json_t *classes, double *core)
{
    double all = 0;
    *core = 0;
    const char *k;
    json_t *v;
    json_object_foreach(classes, k, v)
    {
        double s = json_number_value(json_object_get(v, "seconds"));
        all += s;
        if (strcmp(k, "other")) *core += s;
    }
    return all;
}

static json_t *ops_class(json_t *rec, const char *cls)
{
    return json_object_get(json_object_get(json_object_get(rec, "ops"), "classes"), cls);
}

static double ops_num(json_t *rec, const char *cls, const char *field)
{
    return json_number_value(json_object_get(ops_class(rec, cls), field));
}

/* Time per operation class (record "ops", docs/HARNESS.md): means per
 * measured step that add up to the measured steps' mean, the core's classes
 * explaining nearly all of a LoRA step, linear FLOPs by shape, and a
 * zeroth-order method with no backward class at all. */
Test(cell, ops_explain_the_step_per_class, .timeout = 120)
{
    char dir[] = "/tmp/ftb-cell-XXXXXX", err[FTB_ERR_LEN] = "";
    cr_assert(mkdtemp(dir));
    ftb_cell c;
    tiny_cell(&c, dir);
    c.seq = 64;
    snprintf(c.method_path, sizeof c.method_path, "%s/lora.so", th_methods_dir());
    snprintf(c.method_label, sizeof c.method_label, "lora");
    ftb_cell_make_key(&c);
    ftb_cell_result r;
    cr_assert_eq(ftb_cell_run(&c, &r, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(r.outcome, "ok", "%s", r.detail);
    json_t *ops = json_object_get(r.record, "ops");
    cr_assert(json_is_object(ops), "the record has no ops");
    cr_expect_str_eq(json_string_value(json_object_get(ops, "per")), "step");
    cr_expect_eq(json_integer_value(json_object_get(ops, "measured_steps")), 2);
    /* The mean of the measured steps (the warm-up step left out). */
    json_t *all = json_object_get(r.record, "step_seconds_all");
    cr_assert_eq(json_array_size(all), 3);
    double mean = 0.5 * (json_number_value(json_array_get(all, 1)) + json_number_value(json_array_get(all, 2)));
    double step = json_number_value(json_object_get(ops, "step_seconds"));
    cr_expect(fabs(step - mean) <= 1e-9 * mean, "ops.step_seconds %.9f, measured steps' mean %.9f", step, mean);
    double core, sum = ops_sum(json_object_get(ops, "classes"), &core);
    cr_expect(fabs(sum - step) <= 1e-9 * step, "classes add up to %.9f s, the step is %.9f s", sum, step);
    /* The core's own classes explain the LoRA step (what is left is the
     * method's code outside the core's ops, and the clock reads). */
    cr_expect(core <= step * (1 + 1e-9) && core >= 0.90 * step, "core classes %.6f s of a %.6f s step", core, step);
    cr_expect(fabs(json_number_value(json_object_get(ops, "other_seconds")) - (step - core)) <= 1e-9 * step);
    /* q_proj, frozen: forward and the input gradient, 2 × 2·N·dim·q per layer. */
    double N = (double)c.batch * c.seq, q = (double)c.cfg.n_heads * c.cfg.head_dim;
    double fq = ops_num(r.record, "linear_q", "flops");
    cr_expect(fabs(fq - c.cfg.n_layers * 2 * 2 * N * c.cfg.dim * q) < 1, "linear_q flops %.0f", fq);
    for (int k = FTB_OP_LINEAR_Q; k <= FTB_OP_LINEAR_DOWN; k++) {
        const char *name = ftb_op_class_name((ftb_op_class)k);
        cr_expect(ops_num(r.record, name, "flops") > 0 && ops_num(r.record, name, "bytes") > 0, "%s", name);
        cr_expect(ops_num(r.record, name, "gflops_per_second") > 0, "%s has no rate", name);
    }
    cr_expect(ops_num(r.record, "attn_bwd", "seconds") > 0 && ops_num(r.record, "hooks", "calls") > 0);
    cr_expect(ops_num(r.record, "optimizer", "calls") == 1, "one optimizer update per step");
    cr_expect(json_is_null(json_object_get(ops_class(r.record, "norm"), "gflops_per_second")) ||
                  ops_num(r.record, "norm", "flops") > 0,
              "a rate without FLOPs");
    cr_expect(json_number_value(json_object_get(json_object_get(r.record, "host"), "page_fault_seconds")) > 0);
    ftb_cell_result_free(&r);

    /* MeZO: forwards only, no backward class ran. */
    snprintf(c.method_path, sizeof c.method_path, "%s/mezo.so", th_methods_dir());
    snprintf(c.method_label, sizeof c.method_label, "mezo");
    ftb_cell_make_key(&c);
    cr_assert_eq(ftb_cell_run(&c, &r, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(r.outcome, "ok", "%s", r.detail);
    cr_assert(json_is_object(json_object_get(r.record, "ops")));
    cr_expect_eq(ops_num(r.record, "attn_bwd", "calls"), 0);
    cr_expect_eq(ops_num(r.record, "attn_bwd", "seconds"), 0);
    cr_expect_eq(ops_num(r.record, "optimizer", "calls"), 0);
    cr_expect(ops_num(r.record, "attn_fwd", "calls") > 0);
    /* Every linear's FLOPs are its forwards': passes × 2·N·dim·q. */
    int passes = (int)json_integer_value(json_array_get(json_object_get(r.record, "forward_passes_per_step"), 1));
    cr_expect(passes >= 2, "%d forward passes", passes);
    fq = ops_num(r.record, "linear_q", "flops");
    cr_expect(fabs(fq - passes * c.cfg.n_layers * 2 * N * c.cfg.dim * q) < 1, "linear_q flops %.0f, %d passes", fq,
              passes);
    sum = ops_sum(json_object_get(json_object_get(r.record, "ops"), "classes"), &core);
    step = json_number_value(json_object_get(json_object_get(r.record, "ops"), "step_seconds"));
    cr_expect(fabs(sum - step) <= 1e-9 * step);
    ftb_cell_result_free(&r);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

/* The record keeps the page faults of every step (memory.page_faults_per_step)
 * and the step arena's figures (memory.step_arena, docs/CORE.md "What is
 * kept across steps"): a tiny cell whose SwiGLU tensors and full-loss logits
 * are 8 MiB each faults them in on its warm-up step only. */
Test(cell, the_record_counts_page_faults_per_step, .timeout = 120)
{
    char dir[] = "/tmp/ftb-cell-XXXXXX", err[FTB_ERR_LEN] = "";
    cr_assert(mkdtemp(dir));
    ftb_cell c;
    tiny_cell(&c, dir);
    c.batch = 256;
    c.seq = 128;
    c.loss = FTB_LOSS_FULL;
    ftb_cell_make_key(&c);
    ftb_cell_result r;
    cr_assert_eq(ftb_cell_run(&c, &r, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(r.outcome, "ok", "%s", r.detail);
    json_t *mem = json_object_get(r.record, "memory"), *faults = json_object_get(mem, "page_faults_per_step");
    cr_assert_eq(json_array_size(faults), 3, "one count per step, the warm-up's included");
    json_t *arena = json_object_get(mem, "step_arena");
    cr_assert(json_is_boolean(json_object_get(arena, "enabled")));
    int64_t step_pages = (int64_t)json_integer_value(
                             json_object_get(json_object_get(json_object_get(mem, "core"), "split_at_peak_bytes"),
                                             ftb_mem_category_name(FTB_MEM_SAVED))) /
                         4096;
    int64_t f[3];
    for (int i = 0; i < 3; i++) f[i] = (int64_t)json_integer_value(json_array_get(faults, i));
    cr_log_info("faults per step %lld %lld %lld; saved activations at the peak: %lld pages", (long long)f[0],
                (long long)f[1], (long long)f[2], (long long)step_pages);
    cr_expect_gt(f[0], step_pages, "the warm-up step touches its saved activations fresh");
    if (json_is_true(json_object_get(arena, "enabled"))) { /* not in checking builds */
        cr_expect_gt(json_integer_value(json_object_get(arena, "high_water_bytes")), step_pages * 4096);
        cr_expect_eq(json_integer_value(json_object_get(arena, "fallbacks")), 0);
        for (int i = 1; i < 3; i++)
            cr_expect_lt(f[i], step_pages / 100, "step %d: %lld faults (bound: 1%% of %lld pages)", i + 1,
                         (long long)f[i], (long long)step_pages);
        /* The harness's own record grows between steps (a page here and there). */
        json_t *hwm = json_object_get(mem, "vmhwm_after_step_bytes");
        int64_t h0 = (int64_t)json_integer_value(json_array_get(hwm, 0)),
                h2 = (int64_t)json_integer_value(json_array_get(hwm, 2));
        cr_expect_leq(h2 - h0, 256 << 10, "VmHWM rose by %lld KiB after the warm-up step", (long long)(h2 - h0) >> 10);
    }
    ftb_cell_result_free(&r);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

/* The roofline projection counts the saved activations' bytes (written
 * once, read once) from the record's core category saved_activations (it
 * once looked for "saved", a name no category has, and counted 0). */
Test(cell, roofline_projection_counts_the_saved_activations)
{
    ftb_cell c;
    tiny_cell(&c, "/nonexistent");
    double bytes[2];
    const json_int_t saved[2] = { 0, 3 << 20 };
    for (int i = 0; i < 2; i++) {
        json_t *measured = json_pack("{s:s, s:{s:{s:{s:I}}}, s:i, s:[i], s:b}", "stage", "done", "memory", "core",
                                     "peak_bytes", ftb_mem_category_name(FTB_MEM_SAVED), saved[i], "trainable_params",
                                     1000, "forward_passes_per_step", 1, "has_backward", 1);
        ftb_record r;
        ftb_record_init_not_run(&r, &c, "ok", "");
        r.ran = 1;
        r.measured = measured;
        json_t *j = ftb_record_json(&r);
        json_t *proj = json_object_get(j, "projection");
        cr_assert(json_is_object(proj));
        bytes[i] = json_number_value(json_object_get(proj, "bytes_per_step"));
        json_decref(j);
        json_decref(measured);
    }
    cr_expect_eq(bytes[1] - bytes[0], 2.0 * (3 << 20), "saved activations add %.0f bytes, expected %.0f",
                 bytes[1] - bytes[0], 2.0 * (3 << 20));
}
