#!/bin/sh
# `ftbench sweep --remote` against a real OpenSSH server: an sshd started
# here in its own network namespace (reached over a veth pair) and its own
# UTS namespace (its own hostname), a key made for the test, a non-root
# user made for the test.  Root only; run from .ci/run, outside Criterion.
#
#  1. a 4-cell sweep of the tiny model on the "device"; after 2 cells the
#     local ssh is killed: the command says the connection was lost, and
#     the sweep goes on there,
#  2. the same command again re-attaches, follows it to its end and
#     collects: exactly 4 records here (none twice, none torn), each
#     emulated: false with the device's hostname, and the device ran each
#     cell once,
#  3. the same command a third time collects again and runs nothing,
#  4. bad input: an unreachable host, a remote directory that cannot be
#     used, an architecture with no binary (an sshd under `setarch i686`),
#     each one line and exit 2,
#  5. make bench HOST= with a one-cell sweep: collected and reported here.
#
# Namespaces, daemons, the user and its processes are removed at exit,
# always.  Prints its elapsed time.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
t0=$(date +%s)
if [ "$(id -u)" != 0 ]; then
    echo "test-remote: needs root (installs openssh-server, makes namespaces and a user)" >&2
    exit 1
fi
need=""
[ -x /usr/sbin/sshd ] || need="$need openssh-server"
command -v ssh >/dev/null || need="$need openssh-client"
command -v rsync >/dev/null || need="$need rsync"
command -v ip >/dev/null || need="$need iproute2"
command -v python3 >/dev/null || need="$need python3"
if [ -n "$need" ]; then
    echo "test-remote: installing$need" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >&2
fi
FTB=$repo/build/ftbench
[ -x "$FTB" ] || make -s -j2 bin >/dev/null

user=ftbremote
ns=ftbremote$$
veth_here=vfr$$a
veth_dev=vfr$$b
ip_here=10.231.77.1
ip_dev=10.231.77.2
devname=ftb-device-test
work=$(mktemp -d /tmp/ftbench-remote.XXXXXX)
chmod 755 "$work"
status=1

# The test user's processes (the detached sweep among them), by pid.
kill_user_procs() {
    if id "$user" >/dev/null 2>&1; then
        for p in $(ps -o pid= -u "$user" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    fi
}
cleanup() {
    for f in "$work"/sshd*.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    kill_user_procs
    sleep 0.2
    kill_user_procs
    if id "$user" >/dev/null 2>&1; then userdel -r "$user" 2>/dev/null || userdel "$user" 2>/dev/null || true; fi
    ip link del "$veth_here" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    if [ "$status" = 0 ] || [ -z "${FTB_REMOTE_KEEP:-}" ]; then rm -rf "$work"; else echo "test-remote: kept $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "test-remote: FAILED: $*" >&2
    for f in "$work"/err*.txt "$work"/sshd.log; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -8 "$f" >&2; }
    done
    exit 1
}

# A user left by an interrupted earlier run goes first.
if id "$user" >/dev/null 2>&1; then
    kill_user_procs
    userdel -r "$user" 2>/dev/null || true
fi
useradd -m -s /bin/sh "$user"
# Not locked (sshd refuses a locked account even for keys), no password.
usermod -p "*" "$user"
home=$(getent passwd "$user" | cut -d: -f6)

# The device: a network namespace reached over a veth pair.
ip netns add "$ns"
ip link add "$veth_here" type veth peer name "$veth_dev"
ip link set "$veth_dev" netns "$ns"
ip addr add "$ip_here/30" dev "$veth_here"
ip link set "$veth_here" up
ip netns exec "$ns" ip addr add "$ip_dev/30" dev "$veth_dev"
ip netns exec "$ns" ip link set "$veth_dev" up
ip netns exec "$ns" ip link set lo up

# Keys made for the test: the server's host key and the client's.
ssh-keygen -q -t ed25519 -N '' -f "$work/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$work/id"
install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
install -m 600 -o "$user" -g "$user" "$work/id.pub" "$home/.ssh/authorized_keys"
mkdir -p /run/sshd
sshd_conf() { # port pidfile
    cat <<EOF
Port $1
ListenAddress $ip_dev
HostKey $work/hostkey
PidFile $2
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers $user
EOF
}
sshd_conf 22 "$work/sshd.pid" >"$work/sshd_config"
sshd_conf 2222 "$work/sshd-i686.pid" >"$work/sshd_config_i686"
# Its own hostname (UTS namespace); sshd and every session it starts see it.
ip netns exec "$ns" unshare --uts sh -c "hostname $devname && exec /usr/sbin/sshd -e -f $work/sshd_config" \
    2>"$work/sshd.log"
# The same device as a 32-bit x86 one (uname -m says i686): no binary for it.
ip netns exec "$ns" unshare --uts sh -c "hostname $devname && exec setarch i686 /usr/sbin/sshd -e -f $work/sshd_config_i686" \
    2>>"$work/sshd.log"
SSHO="-F /dev/null -i $work/id -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=accept-new"
i=0
until ssh $SSHO -o BatchMode=yes -o ConnectTimeout=2 "$user@$ip_dev" true 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 50 ] || fail "the test's sshd does not answer"
    sleep 0.2
done
seen=$(ssh $SSHO -o BatchMode=yes "$user@$ip_dev" 'uname -n; id -u')
[ "$(echo "$seen" | head -1)" = "$devname" ] || fail "the device's hostname is '$(echo "$seen" | head -1)'"
[ "$(echo "$seen" | tail -1)" != 0 ] || fail "logged in as root"
echo "test-remote: sshd up in netns $ns as host '$devname' ($(($(date +%s) - t0)) s)"

unset OPENBLAS_CORETYPE
local_out=$work/local
# 4 cells of a few seconds each.
SWEEP="--device host --model tiny --methods lora,full --seqs 64,128 --steps 300 --run-id remote4"
remote_cmd() { # out err [extra options]
    o=$1
    e=$2
    shift 2
    "$FTB" sweep $SWEEP --remote "$user@$ip_dev" --ssh-opt "$SSHO" --out "$local_out" "$@" >"$o" 2>"$e"
}

# 1. start, cut the connection after 2 cells
"$FTB" sweep $SWEEP --remote "$user@$ip_dev" --ssh-opt "$SSHO" --out "$local_out" >"$work/out1.txt" 2>"$work/err1.txt" &
ftb=$!
i=0
while [ "$(grep -c '^\[cell [0-9]/4\] .*: ok' "$work/err1.txt" 2>/dev/null)" -lt 2 ]; do
    i=$((i + 1))
    [ $i -lt 1200 ] || fail "2 cells did not end within 120 s"
    kill -0 "$ftb" 2>/dev/null || fail "the remote sweep command ended early"
    sleep 0.1
done
ssh_pid=$(pgrep -P "$ftb" -x ssh || true)
[ -n "$ssh_pid" ] || fail "no local ssh to cut"
kill "$ssh_pid"
rc=0
wait "$ftb" || rc=$?
[ "$rc" = 1 ] || fail "after the cut the command exited $rc, not 1"
grep -q "lost the connection to $user@$ip_dev" "$work/err1.txt" || fail "the cut was not reported"
grep -q "run the same command again" "$work/err1.txt" || fail "no hint to re-run"
echo "test-remote: connection cut after 2 cells ($(grep -c '^\[cell [0-9]/4\] .*: ok' "$work/err1.txt") ended); the command said:"
grep "lost the connection" "$work/err1.txt" | sed 's/^/  /'

# 2. the same command re-attaches and collects
remote_cmd "$work/out2.txt" "$work/err2.txt" || fail "the re-run exited $?"
grep -q "re-attached to the sweep running on" "$work/err2.txt" || fail "the re-run did not re-attach"
grep -q "^records: $local_out/host/remote4/results.jsonl$" "$work/out2.txt" || fail "no local records line"
echo "test-remote: re-run re-attached:"
grep -E "re-attached|collected" "$work/err2.txt" | sed 's/^/  /'

check() { # run_dir
    python3 - "$1" "$devname" <<'EOF'
import json, os, sys
run_dir, devname = sys.argv[1], sys.argv[2]
cells = os.path.join(run_dir, "cells")
names = sorted(os.listdir(cells))
recs = {}
for name in names:
    if not name.endswith(".json") or name.startswith("."):
        sys.exit("leftover file in cells/: " + name)
    with open(os.path.join(cells, name)) as f:
        text = f.read()
    if text.count("\n") > 1:
        sys.exit("more than one line in " + name)
    recs[name[:-5]] = json.loads(text)  # a torn file does not parse
lines = [json.loads(l) for l in open(os.path.join(run_dir, "results.jsonl"))]
keys = [r["cell"] for r in lines]
if len(keys) != len(set(keys)):
    sys.exit("a cell twice in results.jsonl: %s" % keys)
if len(recs) != 4 or len(lines) != 4 or set(keys) != set(recs):
    sys.exit("%d cell files, %d results lines (want 4 and 4, the same cells)" % (len(recs), len(lines)))
for r in lines:
    if r.get("outcome") != "ok":
        sys.exit("%s: outcome %s" % (r["cell"], r.get("outcome")))
    if r.get("emulated") is not False:
        sys.exit("%s: emulated is %r" % (r["cell"], r.get("emulated")))
    if r.get("hostname") != devname:
        sys.exit("%s: hostname %r, not the device's %r" % (r["cell"], r.get("hostname"), devname))
    tl = r.get("timeline_file")
    if not tl or not os.path.isfile(os.path.join(run_dir, tl)):
        sys.exit("%s: no timeline here" % r["cell"])
print("4 records, each once, outcome ok, emulated false, hostname %s, timelines beside them" % devname)
EOF
}
check "$local_out/host/remote4" || fail "the collected run directory"
# The device ran each cell once: its own log has 4 endings, its run
# directory 4 lines.
dev_sessions=$home/ftbench-remote/sessions
dev_log=$(ls "$dev_sessions"/*/log)
[ "$(grep -c '^\[cell [0-9]/4\] .*: ok' "$dev_log")" = 4 ] || fail "the device's log has $(grep -c '^\[cell [0-9]/4\] .*: ok' "$dev_log") cell endings, not 4"
dev_results=$(ls "$dev_sessions"/*/results/host/remote4/results.jsonl)
[ "$(wc -l <"$dev_results")" = 4 ] || fail "the device's results.jsonl is not 4 lines"
echo "test-remote: the device ran each of the 4 cells once (its log and results.jsonl)"

# 3. a third time: collects, runs nothing
remote_cmd "$work/out3.txt" "$work/err3.txt" || fail "the third run exited $?"
grep -q "has ended; collecting" "$work/err3.txt" || fail "the third run did not just collect"
check "$local_out/host/remote4" >/dev/null || fail "after the third run"
[ "$(grep -c '^\[cell [0-9]/4\] .*: ok' "$dev_log")" = 4 ] || fail "the third run ran cells again"
echo "test-remote: a third run collected again, ran nothing"

# 4. bad input: one line, exit 2
bad() { # name expected-text options...
    name=$1
    want=$2
    shift 2
    rc=0
    "$FTB" sweep $SWEEP --out "$local_out" "$@" >"$work/bad.out" 2>"$work/bad.err" || rc=$?
    [ "$rc" = 2 ] || fail "$name: exit $rc, not 2"
    [ "$(wc -l <"$work/bad.err")" = 1 ] || fail "$name: not one line: $(cat "$work/bad.err")"
    grep -q "$want" "$work/bad.err" || fail "$name: '$(cat "$work/bad.err")' does not say '$want'"
    echo "test-remote: $name -> exit 2: $(cat "$work/bad.err")"
}
bad "unreachable host" "cannot reach" --remote "$user@$ip_here" --ssh-opt "$SSHO -o ConnectTimeout=3"
bad "unusable remote directory" "cannot use the remote directory" --remote "$user@$ip_dev" --ssh-opt "$SSHO" \
    --remote-dir /proc/ftbench
# (its own remote directory: in the default one the sweep above has ended,
# and the same command would just collect it)
bad "no binary for the architecture" "i686: no ftbench binary" --remote "$user@$ip_dev" --ssh-opt "$SSHO -p 2222" \
    --remote-dir ftbench-i686

# 5. make bench HOST=: the same through the Makefile, ending with the
#    report of the collected run here
make -s bench DEVICE=host HOST="$user@$ip_dev" SSH_OPTS="$SSHO" \
    BENCH_ARGS="--model tiny --methods lora --seqs 32 --steps 5 --run-id remotebench --out $work/bench" \
    >"$work/bench.out" 2>"$work/err-bench.txt" || fail "make bench HOST= exited $?"
[ "$(cat build/last-bench-run)" = "$work/bench/host/remotebench" ] || fail "make bench did not name the collected run"
[ -f "$work/bench/host/remotebench/report/report.md" ] || fail "no report of the collected run"
echo "test-remote: make bench HOST=$user@$ip_dev: collected and reported $(cat build/last-bench-run)"

status=0
echo "test-remote: passed in $(($(date +%s) - t0)) s"
