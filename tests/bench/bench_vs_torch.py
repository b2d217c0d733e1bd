#!/usr/bin/python3
"""bench_vs_torch.py — ftbench against a PyTorch CPU implementation of the
same model and method (`make bench-vs-torch`, docs/BENCHMARKS.md).

For each model and method: one `ftbench run` cell, then the same cell in
PyTorch (tests/bench/torch_decoder.py, one process, configured from the
cell's record: shapes, seq, batch, steps, warm-up, lr, seed, threads), both
with the same OpenBLAS kernel and thread count.  Prints a Google-Benchmark-
style table (context, then one row per cell: s/step median [min, max] of
each, speed ratio, peak RSS of each process) and the same rows as Markdown,
and writes summary.json beside the records.

Before timing, a loss check: PyTorch writes a checkpoint and a token file
for each CHECK model, ftbench runs every method on them (--checkpoint,
--dataset), and the per-step losses are compared (the first step's must
agree to fp32 rounding; later steps loosely for lora, gc and mezo, whose
adapters' initial A or whose noise z come from each side's own RNG).

Exit: 0 all cells measured and the check passed; 1 a cell failed, the
kernels differ or the check failed; 2 bad input.
Usage: bench_vs_torch.py --bin B --methods-dir D [--models "m ..."]
       [--methods "full lora gc mezo"] [--seq 512] [--steps 3] [--warmup 1]
       [--threads N] [--out DIR] [--check-models "tiny tiny-tied"]
       [--check-seq 32] [--coretype NAME] [--timeout SEC]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_CELL = os.path.join(HERE, "torch_decoder.py")
METHODS = ("full", "lora", "gc", "mezo")  # those torch_decoder.py implements
LOAD_WARN = 0.5
SPEED_GOAL = 1.5         # issue 17: every method at >= 1.5x PyTorch's tokens/s
CHECK_LR = 1e-3          # large enough that the updates show in the losses of later steps
FIRST_STEP_RTOL = 1e-4   # same weights, same tokens: fp32 summation order only
FULL_RTOL = 1e-4         # AdamW on the same gradients
RANDOM_RTOL = 1e-2       # lora/gc (A drawn by each side), mezo (z drawn by each side)


def die(msg, code=2):
    sys.stderr.write("bench-vs-torch: %s\n" % msg)
    sys.exit(code)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench_vs_torch.py", add_help=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--methods-dir", required=True)
    ap.add_argument("--models", default="qwen2.5-0.5b smollm2-135m")
    ap.add_argument("--methods", default=" ".join(METHODS))
    ap.add_argument("--seq", default="512")
    ap.add_argument("--steps", default="3")
    ap.add_argument("--warmup", default="1")
    ap.add_argument("--threads", default="")
    ap.add_argument("--out", default="build/bench-vs-torch")
    ap.add_argument("--check-models", default="tiny tiny-tied")
    ap.add_argument("--check-seq", default="32")
    ap.add_argument("--coretype", default="")
    ap.add_argument("--timeout", default="3600")
    a = ap.parse_args(argv)

    def count(name, value, lo):
        if not re.fullmatch(r"[0-9]+", value.strip()) or int(value) < lo:
            die("%s=%r: a whole number >= %d is expected" % (name, value, lo))
        return int(value)

    a.seq = count("SEQ", a.seq, 1)
    a.steps = count("STEPS", a.steps, 1)
    a.warmup = count("WARMUP", a.warmup, 0)
    a.check_seq = count("CHECK_SEQ", a.check_seq, 1)
    a.timeout = count("TIMEOUT", a.timeout, 1)
    a.threads = count("THREADS", a.threads, 1) if a.threads.strip() else None
    a.models = a.models.replace(",", " ").split()
    a.methods = a.methods.replace(",", " ").split()
    a.check_models = a.check_models.replace(",", " ").split()
    if not a.models:
        die("MODELS is empty")
    if not a.methods:
        die("METHODS is empty")
    for m in a.methods:
        if m not in METHODS:
            die("METHODS: no PyTorch implementation of '%s' (%s)" % (m, ", ".join(METHODS)))
    if not os.access(a.bin, os.X_OK):
        die("%s: no ftbench executable (run make first)" % a.bin)
    zoo = zoo_models(a.bin)
    for m in a.models + a.check_models:
        if m not in zoo:
            die("unknown model '%s' (zoo: %s)" % (m, ", ".join(zoo)))
    return a


def zoo_models(binary):
    out = subprocess.run([binary, "list"], capture_output=True, text=True).stdout
    names, inside = [], False
    for line in out.splitlines():
        if line.startswith("models (zoo)"):
            inside = True
        elif inside and line.startswith("  ") and line.split():
            names.append(line.split()[0])
        elif inside and line.strip():
            break
    return names


# ---- the machine while it runs -------------------------------------------------

def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def busy_seconds():
    """CPU seconds all processes have used since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / hz


def own_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# ---- running cells ---------------------------------------------------------------

def child_env(a, dropped):
    env = dict(os.environ)
    if "OPENBLAS_CORETYPE" in env and not a.coretype:
        dropped.append(env.pop("OPENBLAS_CORETYPE"))
    if a.coretype:
        env["OPENBLAS_CORETYPE"] = a.coretype
    return env


def ftbench_cell(a, env, run_id, args):
    cmd = [a.bin, "run", "--methods-dir", a.methods_dir, "--batch", "1", "--out", a.out, "--run-id", run_id,
           "--no-timeline", "--quiet", "--timeout", str(a.timeout)] + args
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode == 2:
        die("ftbench refused the cell: %s" % (p.stderr.strip().splitlines() or ["(no message)"])[-1])
    m = re.search(r"^record\s+(\S+)", p.stdout, re.M)
    if not m:
        return None, (p.stderr.strip().splitlines() or ["ftbench run wrote no record"])[-1]
    with open(m.group(1)) as f:
        rec = json.load(f)
    rec["_path"] = m.group(1)
    if rec.get("outcome") != "ok":
        return rec, "%s: %s" % (rec.get("outcome"), rec.get("outcome_detail", ""))
    return rec, None


def torch_env(a, env, rec):
    """PyTorch gets ftbench's threads and kernel: the thread count of the
    record, OMP_WAIT_POLICY as ftbench ran (it sets passive when unset), and
    OPENBLAS_CORETYPE when ftbench did not run OpenBLAS's own choice."""
    e = dict(env)
    n = str(rec["threads"])
    e["OPENBLAS_NUM_THREADS"] = e["OMP_NUM_THREADS"] = n
    e.setdefault("OMP_WAIT_POLICY", "passive")
    if rec["host"].get("blas_selection") != "default":
        e["OPENBLAS_CORETYPE"] = rec["host"]["blas_core"]
    return e


def torch_run(a, env, args):
    try:
        p = subprocess.run([sys.executable, TORCH_CELL] + args, capture_output=True, text=True, env=env,
                           timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return None, "timed out after %d s" % a.timeout
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no message"])[-1]
        return None, "exit %d: %s" % (p.returncode, last) if p.returncode > 0 else "killed by signal %d" % -p.returncode
    return json.loads(p.stdout), None


def summary(times):
    return dict(median=statistics.median(times), min=min(times), max=max(times))


# ---- the loss check ------------------------------------------------------------

def loss_check(a, env, run_id):
    """Returns (lines to print, ok)."""
    lines, ok = [], True
    steps, warmup = 2, 1
    for model in a.check_models:
        base = ["--seq", str(a.check_seq), "--steps", str(steps), "--warmup", str(warmup), "--lr", repr(CHECK_LR)]
        rec, err = ftbench_cell(a, env, run_id + "-config", ["--model", model, "--method", "full"] + base)
        if err:
            return lines + ["check %s: ftbench: %s" % (model, err)], False
        d, got = os.path.join(a.out, "check", model), {}
        want, err = torch_run(a, torch_env(a, env, rec), ["check", rec["_path"], d, ",".join(a.methods)])
        if err:
            return lines + ["check %s: PyTorch: %s" % (model, err)], False
        for m in a.methods:
            r, err = ftbench_cell(a, env, run_id + "-" + model, ["--checkpoint", d, "--dataset",
                                                                 os.path.join(d, "tokens.bin"), "--method", m] + base)
            if err:
                lines.append("check %s/%s: ftbench: %s" % (model, m, err))
                ok = False
                continue
            fl, tl = r["loss_per_step"], want[m]["loss_per_step"]
            got[m] = fl
            rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(fl, tl)]
            tol = [FIRST_STEP_RTOL] + [FULL_RTOL if m == "full" else RANDOM_RTOL] * (len(rel) - 1)
            good = len(fl) == len(tl) and all(e <= t for e, t in zip(rel, tol))
            same_count = r["trainable_params"] == want[m]["trainable_params"]
            ok = ok and good and same_count
            lines.append("check %-10s %-5s losses ftbench %s  PyTorch %s  worst rel. diff %.1e  %s%s" % (
                model, m, " ".join("%.5f" % x for x in fl), " ".join("%.5f" % x for x in tl), max(rel),
                "ok" if good else "DIFFERS (tolerance %s)" % ", ".join("%g" % t for t in tol),
                "" if same_count else "; trainable %d vs %d" % (r["trainable_params"],
                                                               want[m]["trainable_params"])))
        if "gc" in got and "lora" in got:  # gc recomputes lora's blocks: the same numbers, on each side
            same = (got["gc"] == got["lora"], want["gc"]["loss_per_step"] == want["lora"]["loss_per_step"])
            ok = ok and all(same)
            lines.append("check %-10s gc = lora bit for bit: ftbench %s, PyTorch %s" % (
                model, "yes" if same[0] else "NO", "yes" if same[1] else "NO"))
    return lines, ok


# ---- output --------------------------------------------------------------------

def secs(x):
    return "%.2f" % x if x >= 1 else "%.3g" % x


def mib(b):
    return "%.1f" % (b / 1048576.0) if b else "-"


def fmt_s(s):
    return "%.3f [%.3f, %.3f]" % (s["median"], s["min"], s["max"]) if s else "-"


def print_table(rows):
    head = ("Benchmark", "ftbench s/step", "PyTorch s/step", "speed ratio", "ftbench peak RSS", "PyTorch peak RSS")
    body = []
    for r in rows:
        ratio = "%.2fx" % (r["torch"]["median"] / r["ftbench"]["median"]) if r["ftbench"] and r["torch"] else "-"
        body.append((r["name"], fmt_s(r["ftbench"]), fmt_s(r["torch"]), ratio,
                     mib(r["ftbench_rss"]) + " MiB" if r["ftbench_rss"] else "-",
                     mib(r["torch_rss"]) + " MiB" if r["torch_rss"] else "-"))
    w = [max(len(x[i]) for x in body + [head]) for i in range(len(head))]
    line = "-" * (sum(w) + 2 * (len(w) - 1))
    fmt = lambda x: "  ".join(s.ljust(w[0]) if i == 0 else s.rjust(w[i]) for i, s in enumerate(x))  # noqa: E731
    print(line)
    print(fmt(head))
    print(line)
    for b, r in zip(body, rows):
        print(fmt(b) + ("   " + r["note"] if r["note"] else ""))
    print(line)
    print("speed ratio = ftbench speed / PyTorch speed (PyTorch s/step ÷ ftbench s/step, medians); "
          "peak RSS = the process's VmHWM")
    timed = [r for r in rows if r["ftbench"] and r["torch"]]
    if timed:
        met = [r for r in timed if r["torch"]["median"] / r["ftbench"]["median"] >= SPEED_GOAL]
        print("speed goal (issue 17: ftbench >= %.1fx PyTorch): met in %d of %d cells%s" % (
            SPEED_GOAL, len(met), len(timed), "" if len(met) == len(timed) else "; missed: " + ", ".join(
                r["name"] for r in timed if r not in met)))
    print()
    print("| cell | ftbench s/step | PyTorch s/step | ftbench / PyTorch speed | ftbench peak RSS (MiB) "
          "| PyTorch peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for b, r in zip(body, rows):
        print("| %s | %s | %s | %s | %s | %s |" % (
            r["name"].replace("/", " ", 1).replace("/", ", ") + " tokens",
            secs(r["ftbench"]["median"]) if r["ftbench"] else "-",
            secs(r["torch"]["median"]) if r["torch"] else "-", b[3],
            mib(r["ftbench_rss"]), mib(r["torch_rss"])))


def main(argv):
    a = parse_args(argv)
    dropped = []
    env = child_env(a, dropped)
    run_id = "vs-torch-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    load_before, busy0, own0, wall0 = loadavg(), busy_seconds(), own_seconds(), time.monotonic()
    if load_before[0] > LOAD_WARN:
        sys.stderr.write("bench-vs-torch: ***WARNING*** load average %.2f > %.1f before the run: other work is "
                         "running, the timings will not be idle figures\n" % (load_before[0], LOAD_WARN))

    check_lines, check_ok = [], True
    if a.check_models:
        sys.stderr.write("bench-vs-torch: loss check on %s (seq %d)\n" % (" ".join(a.check_models), a.check_seq))
        check_lines, check_ok = loss_check(a, env, run_id + "-check")

    rows, ctx, failed = [], {}, False
    for model in a.models:
        for method in a.methods:
            name = "%s/%s/%d" % (model, method, a.seq)
            sys.stderr.write("bench-vs-torch: %s: ftbench\n" % name)
            row = dict(name=name, ftbench=None, torch=None, ftbench_rss=None, torch_rss=None, note="")
            rows.append(row)
            rec, err = ftbench_cell(a, env, run_id, ["--model", model, "--method", method, "--seq", str(a.seq),
                                                     "--steps", str(a.steps), "--warmup", str(a.warmup)])
            if err:
                row["note"], failed = "ftbench: " + err, True
                continue
            row["ftbench"] = summary(rec["step_seconds_all"][rec["warmup_steps"]:])
            row["ftbench_rss"] = rec["memory"]["peak_rss_bytes"]
            ctx.setdefault("record", rec)
            sys.stderr.write("bench-vs-torch: %s: PyTorch\n" % name)
            t, err = torch_run(a, torch_env(a, env, rec), ["time", rec["_path"], method])
            if err:
                row["note"], failed = "PyTorch: " + err, True
                continue
            row["torch"] = summary(t["step_seconds_all"][t["warmup"]:])
            row["torch_rss"] = t["peak_rss_bytes"]
            ctx.setdefault("torch", t)
            notes = []
            if t["blas"]["core"].lower() != rec["host"]["blas_core"].lower():
                notes.append("KERNELS DIFFER: ftbench %s, PyTorch %s" % (rec["host"]["blas_core"], t["blas"]["core"]))
            if t["blas"]["openblas_threads"] != rec["threads"] or t["blas"]["torch_threads"] != rec["threads"]:
                notes.append("THREADS DIFFER: ftbench %d, PyTorch OpenBLAS %d / intra-op %d" % (
                    rec["threads"], t["blas"]["openblas_threads"], t["blas"]["torch_threads"]))
            if t["trainable_params"] != rec["trainable_params"]:
                notes.append("TRAINABLE DIFFERS: ftbench %d, PyTorch %d" % (rec["trainable_params"],
                                                                             t["trainable_params"]))
            row["note"] = "; ".join(notes)
            failed = failed or bool(notes)
            row["torch_run"], row["ftbench_record"] = t, rec["_path"]

    load_after, wall = loadavg(), time.monotonic() - wall0
    others = max(0.0, (busy_seconds() - busy0) - (own_seconds() - own0)) / wall

    # ---- context, as Google Benchmark prints it
    rec, t = ctx.get("record"), ctx.get("torch")
    print(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    pkg = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"], capture_output=True,
                         text=True).stdout.strip() or "?"
    print("Running ftbench %s against PyTorch %s (python3-torch %s)" % (
        rec["git_rev"] if rec else "?", t["blas"]["torch_version"] if t else "?", pkg))
    if rec:
        h = rec["host"]
        print("Run on (%d X %s), %d threads in each process (OpenBLAS and OpenMP), OMP_WAIT_POLICY=%s" % (
            h["cores"], h["cpu_model"], rec["threads"], t["blas"]["omp_wait_policy"] if t else "?"))
        print("CPU features: %s; sgemm 512^3 in ftbench's cell: %.1f GFLOP/s" % (
            h["cpu_features"], h.get("sgemm_gflops_512") or 0.0))
        print("OpenBLAS kernel: ftbench %s (%s), PyTorch %s; %s" % (
            h["blas_core"], h.get("blas_selection", "?"), t["blas"]["core"] if t else "?",
            t["blas"]["config"] if t else ""))
        if t:
            print("PyTorch's BLAS libraries: %s" % ", ".join(t["blas"]["libraries"]))
            print("RSS before the model: ftbench %s MiB, PyTorch %s MiB (after import torch); both in the peaks below" % (
                mib(rec["memory"]["rss_baseline_bytes"]), mib(t["rss_baseline_bytes"])))
    if dropped:
        print("OPENBLAS_CORETYPE=%s from the environment was not used (CORETYPE=NAME sets one for both)" % dropped[0])
    elif a.coretype:
        print("OPENBLAS_CORETYPE=%s set for both (CORETYPE)" % a.coretype)
    print("Load Average: %s (before), %s (after, including this run's own threads)" % (
        ", ".join("%.2f" % x for x in load_before), ", ".join("%.2f" % x for x in load_after)))
    print("Other processes used %.2f cores on average during the run (%.0f s)" % (others, wall))
    if load_before[0] > LOAD_WARN or others > LOAD_WARN:
        print("***WARNING*** the machine was not idle (load %.2f before, %.2f cores used by others during the run): "
              "these timings are not idle figures" % (load_before[0], others))
    print("Batch 1, %d tokens, %d warm-up + %d measured steps per cell, s/step = median [min, max] of the measured; "
          "each cell a process of its own" % (a.seq, a.warmup, a.steps))
    for line in check_lines:
        print(line)
    if not check_ok:
        print("***LOSS CHECK FAILED***: see the lines above")
    print_table(rows)

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, run_id + ".json"), "w") as f:
        json.dump(dict(run_id=run_id, seq=a.seq, steps=a.steps, warmup=a.warmup, load_before=load_before,
                       load_after=load_after, other_cores=others, check_ok=check_ok, check=check_lines,
                       rows=[{k: v for k, v in r.items()} for r in rows]), f, indent=1)
    print("summary: %s" % os.path.join(a.out, run_id + ".json"))
    return 1 if failed or not check_ok else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
