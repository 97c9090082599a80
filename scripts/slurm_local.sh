#!/usr/bin/env bash
# A throwaway one-node SLURM cluster on this machine, for `make test-slurm` and for trying
# `focalbench sweep --launcher submitit_slurm` without a real cluster.
#
#   scripts/slurm_local.sh start    install slurm-wlm + munge if missing (root, apt), write a slurm.conf
#                                   for this host's CPUs and memory, start munged, slurmctld, slurmd,
#                                   wait until the node is idle. Starting a running cluster does nothing.
#   scripts/slurm_local.sh stop     stop exactly the daemons it started (by their PID files)
#   scripts/slurm_local.sh status   exit 0 when a SLURM controller answers sinfo
#
# Exit codes: 0 ok; 3 SLURM is absent and cannot be installed here (not root, no apt-get), so the
# SLURM tests are to be skipped; 1 anything else (a daemon did not come up: read its log).
# No systemd is assumed (containers, CI): the daemons run as plain background processes, as
# ../shared/PITFALLS.md describes. No accounting: sacct does not work on this cluster, by design.
set -euo pipefail

HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
MARK="# written by focalbench scripts/slurm_local.sh"
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid

say() { echo "slurm_local: $*"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -1; }

answers() { command -v sinfo >/dev/null && [ -n "$(sinfo -h -o %t 2>/dev/null | head -1)" ]; }

install_packages() {
    command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null \
        && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "sbatch not found and cannot be installed here (needs root and apt-get: apt-get install slurm-wlm munge)"
        exit 3
    fi
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; } \
        || { say "apt-get install slurm-wlm munge failed"; exit 3; }
}

write_conf() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        say "$CONF exists and is not ours: this machine has a SLURM setup already; not touching it"
        exit 1
    fi
    local cpus mem_mb
    cpus=$(nproc)
    # 90% of the RAM: slurmd drains a node that reports less memory than slurm.conf promises
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$(dirname "$CONF")" "$STATE" "$SPOOL" "$LOGS"
    cat >"$CONF" <<EOF
$MARK ($(date -u +%FT%TZ)); removed by its stop
ClusterName=focalbench
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# a cancelled job gets SIGTERM, then SIGKILL this many seconds later: time to record its row
KillWait=30
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    say "wrote $CONF ($cpus CPUs, $mem_mb MB)"
}

start_munge() {
    alive "$MUNGE_PID" && return 0
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create >/dev/null 2>&1 \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=$MUNGE_PID"
}

wait_idle() {
    local state=""
    for _ in $(seq 60); do
        state=$(node_state || true)
        case "$state" in
            idle | mix | alloc) return 0 ;;
            drain* | down* | drng*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    say "node $HOST is '${state:-not answering}' after 30 s; see $LOGS/slurmctld.log and $LOGS/slurmd.log"
    return 1
}

start() {
    if answers; then  # ours from an earlier start, or a real cluster this machine belongs to
        say "a cluster answers already: $(sinfo -h -o '%P %D node(s) %c CPUs %t' | head -1)"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        say "starting a local cluster needs root (daemons, /etc/slurm); not root here"
        exit 3
    fi
    install_packages
    write_conf
    start_munge
    # -c: start with no jobs from an earlier session, a clean test cluster each time
    alive "$CTLD_PID" || /usr/sbin/slurmctld -c
    alive "$SLURMD_PID" || /usr/sbin/slurmd
    wait_idle
    say "up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t')"
}

stop_pid() {  # the daemon named by a PID file, and only it; SIGKILL if it lingers
    local file=$1 pid
    alive "$file" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$file"
}

stop() {
    stop_pid "$SLURMD_PID"
    stop_pid "$CTLD_PID"
    stop_pid "$MUNGE_PID"
    if [ -f "$CONF" ] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
