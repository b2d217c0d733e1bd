#!/bin/sh
# A single-node Slurm cluster from Debian's packages, started by hand in one
# directory (no systemd, nothing under /etc touched): munged, MariaDB,
# slurmdbd (so that sacct knows every array task's State and ExitCode),
# slurmctld and slurmd, on ports of their own so that a system Slurm or
# MariaDB on the same machine is left alone.
#
#   sh ci/slurm-cluster.sh install          apt-get the packages (root)
#   sh ci/slurm-cluster.sh start DIR        start everything in DIR; prints
#                                           the SLURM_CONF line to export
#   sh ci/slurm-cluster.sh kill-ctld DIR    kill -9 slurmctld (jobs go on under slurmd)
#   sh ci/slurm-cluster.sh start-ctld DIR   start it again (it recovers its state)
#   sh ci/slurm-cluster.sh stop DIR         stop every daemon started in DIR
#
# The machine has no systemd and only cgroup v1, hence
# ProctrackType=proctrack/linuxproc (processes tracked by parentage) and
# TaskPlugin=task/none (no binding, no cgroup memory limit); the memory limit
# of a job is enforced by the accounting poll (JobAcctGatherParams=
# OverMemoryKill), which kills a step over its --mem.
set -eu

PORT_BASE=${FTB_SLURM_PORT_BASE:-16810}
CTLD_PORT=$((PORT_BASE + 7))
SLURMD_PORT=$((PORT_BASE + 8))
DBD_PORT=$((PORT_BASE + 9))
DB_PORT=$((PORT_BASE + 6))
PKGS="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"

log() { echo "slurm-cluster: $*" >&2; }

install_packages() {
    missing=""
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        log "missing Debian packages; run as root: apt-get install$missing"
        exit 1
    fi
    log "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends $missing >&2
}

# Waits up to $2 seconds for the command $1 to succeed.
wait_for() {
    i=0
    while ! sh -c "$1" >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -ge "$(($2 * 5))" ]; then return 1; fi
        sleep 0.2
    done
}

pid_of() { [ -s "$1" ] && cat "$1" || true; }

start_ctld() {
    d=$1
    SLURM_CONF=$d/slurm.conf slurmctld -f "$d/slurm.conf"
    wait_for "SLURM_CONF=$d/slurm.conf scontrol ping | grep -q UP" 60 || {
        log "slurmctld did not come up:"
        tail -20 "$d/log/slurmctld.log" >&2
        return 1
    }
}

start() {
    d=$1
    mkdir -p "$d"
    d=$(cd "$d" && pwd)
    host=$(hostname -s)
    mem_mb=$(awk '/MemTotal/ { print int($2 / 1024 / 2) }' /proc/meminfo)
    mkdir -p "$d/log" "$d/state" "$d/spool" "$d/munge" "$d/db"
    chmod 700 "$d/munge"

    # munge: a key of our own, our own socket (AuthInfo points Slurm there).
    dd if=/dev/urandom of="$d/munge/munge.key" bs=128 count=1 2>/dev/null
    chmod 400 "$d/munge/munge.key"
    munged --force --key-file="$d/munge/munge.key" --socket="$d/munge/munge.socket" \
        --pid-file="$d/munge/munged.pid" --log-file="$d/log/munged.log" --seed-file="$d/munge/munged.seed"
    wait_for "munge --socket=$d/munge/munge.socket -n </dev/null | unmunge --socket=$d/munge/munge.socket" 20 || {
        log "munged did not come up"
        cat "$d/log/munged.log" >&2
        return 1
    }

    # MariaDB: a private data directory, TCP on localhost only.
    mariadb-install-db --no-defaults --user=root --datadir="$d/db/data" --auth-root-authentication-method=socket \
        >"$d/log/mariadb-install.log" 2>&1
    mariadbd --no-defaults --user=root --datadir="$d/db/data" --socket="$d/db/mysql.sock" \
        --pid-file="$d/db/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --log-error="$d/log/mariadb.log" --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
    wait_for "mariadb --no-defaults --socket=$d/db/mysql.sock -e 'select 1'" 60 || {
        log "mariadbd did not come up"
        tail -20 "$d/log/mariadb.log" >&2
        return 1
    }
    mariadb --no-defaults --socket="$d/db/mysql.sock" -e \
        "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'ftbench-test';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

    cat >"$d/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$d/munge/munge.socket
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$d/log/slurmdbd.log
PidFile=$d/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=ftbench-test
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$d/slurmdbd.conf"

    cat >"$d/slurm.conf" <<EOF
# Written by ci/slurm-cluster.sh: one node ($host, 2 CPUs), no systemd, cgroup v1.
ClusterName=ftbtest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$d/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# For slurmdbd, the "password" is the munge socket to use.
AccountingStoragePass=$d/munge/munge.socket
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=60
MinJobAge=60
KillWait=5
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$d/slurm.conf"

    slurmdbd
    wait_for "ss -ltn | grep -q ':$DBD_PORT '" 60 || {
        log "slurmdbd did not come up"
        tail -20 "$d/log/slurmdbd.log" >&2
        return 1
    }
    # The cluster must be known to the database before slurmctld registers.
    sacctmgr -i add cluster ftbtest >/dev/null
    start_ctld "$d"
    slurmd -f "$d/slurm.conf"
    wait_for "sinfo -h -N -o '%T' | grep -q idle" 60 || {
        log "the node did not become idle:"
        sinfo -N >&2 || true
        tail -20 "$d/log/slurmd.log" >&2
        return 1
    }
    echo "export SLURM_CONF=$d/slurm.conf"
}

kill_pidfile() {
    p=$(pid_of "$1")
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
        kill "$p" 2>/dev/null || true
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.2
            i=$((i + 1))
        done
        kill -9 "$p" 2>/dev/null || true
    fi
}

stop() {
    d=$(cd "$1" && pwd)
    export SLURM_CONF="$d/slurm.conf"
    # Jobs first (their steps are children of slurmd's slurmstepd).
    [ -f "$d/slurm.conf" ] && scancel --full --user=root 2>/dev/null || true
    kill_pidfile "$d/slurmd.pid"
    kill_pidfile "$d/slurmctld.pid"
    kill_pidfile "$d/slurmdbd.pid"
    kill_pidfile "$d/db/mariadbd.pid"
    kill_pidfile "$d/munge/munged.pid"
}

kill_ctld() {
    d=$(cd "$1" && pwd)
    p=$(pid_of "$d/slurmctld.pid")
    [ -n "$p" ] && kill -9 "$p"
    while [ -n "$p" ] && kill -0 "$p" 2>/dev/null; do sleep 0.1; done
    rm -f "$d/slurmctld.pid"
}

case "${1:-}" in
install) install_packages ;;
start) start "$2" ;;
stop) stop "$2" ;;
kill-ctld) kill_ctld "$2" ;;
start-ctld) start_ctld "$(cd "$2" && pwd)" ;;
*)
    echo "usage: $0 install | start DIR | stop DIR | kill-ctld DIR | start-ctld DIR" >&2
    exit 2
    ;;
esac
