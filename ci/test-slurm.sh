#!/bin/sh
# `ftbench sweep --backend slurm` on a real single-node Slurm started from
# Debian's packages (ci/slurm-cluster.sh: munged, MariaDB, slurmdbd,
# slurmctld, slurmd).  Root only (it installs packages and starts daemons);
# run from .ci/run, outside Criterion.  It
#
#  1. submits a 6-cell sweep of the tiny model as one job array,
#  2. cancels one running task (scancel JOB_1),
#  3. kills slurmctld with SIGKILL while tasks run, and starts it again,
#  4. collects: 5 measured cells and 1 "slurm_cancelled", as sacct says,
#  5. re-submits the same sweep: only the cancelled cell is submitted; after
#     it, exactly 6 records, all measured, none twice, none torn,
#  6. a job whose tasks go over Slurm's memory limit and its time limit:
#     recorded as slurm_out_of_memory and slurm_timeout,
#  7. `ftbench report` over the Slurm run directory gives the same tables as
#     over a local sweep of the same cells.
#
# The daemons are always stopped at exit.  Prints its elapsed time.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
t0=$(date +%s)
if [ "$(id -u)" != 0 ]; then
    echo "test-slurm: needs root (installs slurm-wlm, munge, mariadb-server; starts their daemons)" >&2
    exit 1
fi
sh ci/slurm-cluster.sh install
command -v python3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >&2
FTB=$repo/build/ftbench
[ -x "$FTB" ] || make -s -j2 >/dev/null

work=$(mktemp -d /tmp/ftbench-slurm.XXXXXX)
status=1
cleanup() {
    sh "$repo/ci/slurm-cluster.sh" stop "$work/cluster" || true
    # FTB_SLURM_KEEP=1 keeps the daemons' logs and the run directories of a
    # failed run.
    if [ "$status" = 0 ] || [ -z "${FTB_SLURM_KEEP:-}" ]; then rm -rf "$work"; else echo "test-slurm: kept $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
eval "$(sh ci/slurm-cluster.sh start "$work/cluster")"
echo "test-slurm: cluster up ($(sinfo -h -N -o '%N %c CPUs %T'), $(($(date +%s) - t0)) s)"

# What Slurm thinks, for a failure's log.
slurm_state() {
    echo "--- squeue"
    squeue -r -o '%i %T %r %M' 2>&1 || true
    echo "--- sinfo"
    sinfo -N -o '%N %T %E' 2>&1 || true
    echo "--- slurmctld.log (last 25 lines)"
    tail -25 "$work/cluster/log/slurmctld.log" 2>&1 || true
    echo "--- slurmd.log (last 10 lines)"
    tail -10 "$work/cluster/log/slurmd.log" 2>&1 || true
}

fail() {
    echo "test-slurm: FAILED: $*" >&2
    for f in "$work"/results/host/*/slurm/*.log; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }
    done
    exit 1
}

# Waits until array task $1 is RUNNING (up to 120 s).
wait_running() {
    i=0
    until [ "$(squeue -h -j "$1" -o %T 2>/dev/null)" = RUNNING ]; do
        i=$((i + 1))
        [ $i -lt 600 ] || fail "task $1 never ran"
        sleep 0.2
    done
}

unset OPENBLAS_CORETYPE
cd "$work"
mkdir -p work && cd work
# 6 cells, each some seconds long, so that a task can be cancelled while
# it runs and the controller killed while others do.
CELLS="--model tiny --methods lora,full,lastk --seqs 64,128 --steps 800 --out $work/results"
SWEEP="$CELLS --run-id slurm6"
run_dir=$work/results/host/slurm6

# 1. submit
job=$($FTB sweep $SWEEP --backend slurm) || fail "submission"
echo "test-slurm: submitted job $job"
[ -f "$run_dir/slurm/submit-1.sbatch" ] || fail "no job script"
grep -q "^#SBATCH --array=0-5$" "$run_dir/slurm/submit-1.sbatch" || fail "not a 6-task array"
grep -q "^#SBATCH --exclusive$" "$run_dir/slurm/submit-1.sbatch" || fail "cells may share the node"

# 2. cancel task 1 while it runs
wait_running "${job}_1"
scancel "${job}_1"
echo "test-slurm: cancelled ${job}_1 while it ran"

# 3. kill the controller while a task runs, and start it again.
#    slurmctld saves its state at most 5 s after a change; what a SIGKILL
#    takes away before that, Slurm itself forgets or recovers only at the
#    node's next registration (a task started or ended in those seconds is
#    an orphan to the restarted controller: in CI, tasks then stayed pending
#    for over an hour).  That is Slurm's business, not ftbench's, so the
#    test makes the moment definite: task 2's processes are stopped
#    (SIGSTOP) while it runs, so that nothing starts or ends while the
#    controller's state is saved, killed and recovered; they go on once the
#    restarted controller answers and the node is back.
wait_running "${job}_2"
task_pat="slurm-task $run_dir/slurm/submit-1.json"
pkill -STOP -f "$task_pat" || fail "no process of task ${job}_2 to stop"
[ "$(squeue -h -j "${job}_2" -o %T)" = RUNNING ] || fail "task ${job}_2 ended before it could be stopped"
sleep 7
running=$(squeue -h -t R -o %i | tr '\n' ' ')
sh "$repo/ci/slurm-cluster.sh" kill-ctld "$work/cluster"
if squeue -h >/dev/null 2>&1; then fail "slurmctld still answers after kill -9"; fi
echo "test-slurm: slurmctld killed (SIGKILL) while ${running:-no task} ran"
sleep 5
sh "$repo/ci/slurm-cluster.sh" start-ctld "$work/cluster"
i=0
until sinfo -h -N -o '%T' | grep -qE '^(allocated|mixed|idle)$'; do
    i=$((i + 1))
    [ $i -lt 300 ] || fail "the node did not come back after the controller restart: $(sinfo -h -N -o '%N %T %E')"
    sleep 0.2
done
pkill -CONT -f "$task_pat" || true
echo "test-slurm: slurmctld started again; task ${job}_2 goes on"

# 4. wait for the job and collect
timeout 900 $FTB sweep --collect "$run_dir" --wait >"$work/collect1.txt" || {
    tail -3 "$work/collect1.txt" >&2
    slurm_state >&2
    fail "collect --wait did not end within 15 minutes"
}
cat "$work/collect1.txt"
state=$(sacct -n -P -X -j "${job}_1" -o State | head -1)
case "$state" in CANCELLED*) ;; *) fail "sacct says ${job}_1 is '$state', not CANCELLED" ;; esac

check() {
    python3 - "$run_dir" "$@" <<'EOF'
import json, os, sys
run_dir, want_ok, want_other = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
# The cells' records: cells/<key>.json, each written whole by one rename;
# results.jsonl is the merged view the collect appended them to.
cells = os.path.join(run_dir, "cells")
recs = {}
if not os.path.isdir(cells):
    sys.exit("no cells/ in " + run_dir)
if True:
    for name in os.listdir(cells):
        path = os.path.join(cells, name)
        if not name.endswith(".json") or name.startswith("."):
            sys.exit("leftover file in cells/: " + name)
        with open(path) as f:
            text = f.read()
        rec = json.loads(text)  # a torn file does not parse
        if rec["cell"] + ".json" != name:
            sys.exit("%s holds cell %s" % (name, rec["cell"]))
        recs[rec["cell"]] = rec
lines = open(os.path.join(run_dir, "results.jsonl")).read().split("\n")
if lines[-1] != "":
    sys.exit("results.jsonl does not end with a newline (torn)")
last = {}
for l in lines[:-1]:
    r = json.loads(l)  # a torn line does not parse
    last[r["cell"]] = r
if len(recs) != 6:
    sys.exit("%d records, not 6: %s" % (len(recs), sorted(recs)))
for k, r in recs.items():
    if last.get(k) != r:
        sys.exit("results.jsonl's last record of %s is not its cell file" % k)
ok = [k for k, r in recs.items() if r["outcome"] == "ok"]
other = sorted((r["outcome"], r["slurm"]["job_id"]) for r in recs.values() if r["outcome"] != "ok")
if len(ok) != want_ok or [o for o, _ in other] != sorted(want_other):
    sys.exit("outcomes: %d ok, others %s; wanted %d ok and %s" % (len(ok), other, want_ok, want_other))
for k in ok:
    r = recs[k]
    for f in ("hostname",):
        assert r.get(f), (k, f)
    h = r["host"]
    for f in ("cpu_model", "cpu_affinity", "blas_core", "sgemm_gflops_512"):
        assert f in h, (k, f)
    s = r["slurm"]
    for f in ("job_id", "array_job_id", "array_task_id", "node"):
        assert s.get(f), (k, f)
for o, job in other:
    print("%s %s" % (o, job))
EOF
}

out=$(check 5 slurm_cancelled) || fail "after the first collect: $out"
echo "$out" | grep -q "slurm_cancelled ${job}_1" || fail "the cancelled cell is not task ${job}_1's: $out"
grep -q "CANCELLED" "$work/collect1.txt" || fail "the summary does not show the cancelled cell"
echo "test-slurm: 5 cells measured, ${job}_1's recorded as slurm_cancelled (sacct)"

# 5. the same sweep again: only the cancelled cell
job2=$(timeout 600 $FTB sweep $SWEEP --backend slurm --wait 2>"$work/submit2.err") || {
    cat "$work/submit2.err" >&2
    slurm_state >&2
    fail "re-submission"
}
job2=$(echo "$job2" | head -1)
python3 -c "
import json, sys
s = json.load(open('$run_dir/slurm/submit-2.json'))
sys.exit(0 if len(s['cells']) == 1 and s['job_id'] == '$job2' else 'submit-2 runs %s' % s['cells'])
" || fail "the re-submission is not the one cancelled cell"
$FTB sweep --collect "$run_dir" >"$work/collect2.txt" 2>&1 || fail "second collect"
out=$(check 6) || fail "after the re-submission: $out"
$FTB sweep $SWEEP --backend slurm 2>&1 | grep -q "nothing to submit" || fail "a third submission found cells to run"
echo "test-slurm: re-submission ran only the cancelled cell (job $job2); 6 records, all measured, none twice or torn"

# 6. over Slurm's memory limit, and over its time limit (1 minute; the
#    controller checks limits every 30 s, so this takes up to ~1.5 min)
plugins=$repo/build/tests/plugins
[ -f "$plugins/hog.so" ] || make -s -C "$repo" build/tests/plugins/hog.so build/tests/plugins/hang.so >/dev/null
timeout 600 $FTB sweep --model tiny --methods hog,hang --methods-dir "$plugins" --opt hog.mb=1 --seqs 32 --steps 1000000 \
    --out "$work/results" --run-id limits --backend slurm --slurm-opt "--mem=200M --time=1" --wait \
    >"$work/limits.txt" 2>&1 || {
    cat "$work/limits.txt" >&2
    slurm_state >&2
    fail "limits sweep"
}
grep -q "S-OOM" "$work/limits.txt" || fail "no slurm_out_of_memory: $(cat "$work/limits.txt")"
grep -q "S-TIMEOUT" "$work/limits.txt" || fail "no slurm_timeout: $(cat "$work/limits.txt")"
echo "test-slurm: tasks over --mem and --time recorded as slurm_out_of_memory and slurm_timeout"

# 7. the report over the Slurm run directory: the same tables as over a
#    local sweep of the same cells (measured figures aside)
$FTB sweep $CELLS --run-id local6 --quiet >"$work/local6.txt" 2>&1 || fail "local sweep: $(tail -3 "$work/local6.txt")"
FTBENCH_GNUPLOT=/nonexistent $FTB report "$run_dir" --out "$work/report-slurm" >/dev/null 2>&1 || fail "report over the Slurm run"
FTBENCH_GNUPLOT=/nonexistent $FTB report "$work/results/host/local6" --out "$work/report-local" >/dev/null 2>&1 || fail "report over the local run"
# Figures differ from run to run; the tables' shape and labels must not.
# (Signs too: a reduction vs LoRA of a few percent is either side of 0.)
mask() { sed -e 's/-\{0,1\}[0-9][0-9.,]*/N/g' -e 's/slurm6\|local6/RUN/g' "$1" | grep '^|'; }
mask "$work/report-slurm/report.md" >"$work/t-slurm"
mask "$work/report-local/report.md" >"$work/t-local"
[ -s "$work/t-slurm" ] || fail "no table in the Slurm run's report"
diff "$work/t-slurm" "$work/t-local" >&2 || fail "the report's tables differ between the Slurm and the local run"
echo "test-slurm: ftbench report gives the same tables over the Slurm run as over a local one"

status=0
echo "test-slurm: passed in $(($(date +%s) - t0)) s"
