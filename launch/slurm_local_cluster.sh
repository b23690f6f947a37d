#!/usr/bin/env bash
# A private single-node SLURM cluster on this host, to try the sweep's slurm backend for real (tests use it).
#
#   launch/slurm_local_cluster.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   export SLURM_CONF=DIR/slurm.conf          # then sbatch, squeue, scontrol, scancel talk to this cluster
#   launch/slurm_local_cluster.sh stop DIR    # cancels its jobs, stops the three daemons it started
#
# Needs root and: apt-get install -y slurmctld slurmd slurm-client munge
# Everything (key, sockets, state, spool, logs, pid files) lives under DIR, and the ports are picked free, so it
# touches no system configuration and several clusters can coexist. The node is `hostname -s` with the CPU
# count and memory that `slurmd -C` reports. Plugins avoid cgroups (proctrack/linuxproc, task/none) so it runs
# in containers too; SelectType=select/cons_tres with CR_Core lets array tasks share the node's cores.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|status DIR" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf

require() {
    local missing=()
    for tool in munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "slurm_local_cluster: missing ${missing[*]}; install with:" >&2
        echo "  apt-get update && apt-get install -y slurmctld slurmd slurm-client munge" >&2
        exit 3
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "slurm_local_cluster: must run as root (slurmd starts jobs as their owner)" >&2
        exit 3
    fi
}

free_port() {
    # Port 0 makes the kernel choose a free port; the tiny race before the daemon binds it is acceptable here.
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pid_of() {
    local file=$dir/run/$1.pid
    [[ -s $file ]] && kill -0 "$(cat "$file")" 2>/dev/null && cat "$file"
}

write_conf() {
    local host cpus memory
    host=$(hostname -s)
    # `slurmd -C` prints this machine's NodeName line (CPUs, boards, sockets, cores, threads, RealMemory).
    read -r cpus memory < <(slurmd -C | awk '/^NodeName/ {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["CPUs"], v["RealMemory"] }')
    cat >"$conf" <<EOF
# Written by launch/slurm_local_cluster.sh: a private one-node cluster under $dir
ClusterName=clipablate
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long before it may start again (default 120 s; short for tests).
AuthInfo=socket=$dir/run/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for 10 minutes (there is no accounting database for sacct).
MinJobAge=600
KillWait=30
InactiveLimit=0
SlurmdTimeout=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

wait_idle() {
    local host state
    host=$(hostname -s)
    for _ in $(seq 1 120); do
        state=$(SLURM_CONF=$conf sinfo --noheader --nodes "$host" --format %T 2>/dev/null || true)
        if [[ $state == idle* || $state == mixed* || $state == allocated* ]]; then
            echo "slurm_local_cluster: node $host is $state; export SLURM_CONF=$conf"
            return 0
        fi
        sleep 0.5
    done
    echo "slurm_local_cluster: node $host did not become idle (state: ${state:-none}); logs in $dir/log" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    return 1
}

start() {
    require
    if pid_of slurmctld >/dev/null; then
        echo "slurm_local_cluster: already running in $dir"
        wait_idle
        return
    fi
    mkdir -p "$dir"/{run,state,spool,log,munge}
    chmod 700 "$dir/run" "$dir/munge"
    [[ -s $dir/munge/munge.key ]] || mungekey --create --keyfile "$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file "$dir/munge/munge.key" --socket "$dir/run/munge.socket" \
        --pid-file "$dir/run/munged.pid" --log-file "$dir/log/munged.log" --seed-file "$dir/munge/munged.seed"
    write_conf
    # -c: a fresh controller state (no jobs from an earlier start of this folder).
    slurmctld -c -f "$conf"
    slurmd -f "$conf"
    wait_idle
}

stop() {
    if pid_of slurmctld >/dev/null; then
        # Cancel this cluster's jobs first so no job step outlives the daemons.
        SLURM_CONF=$conf scancel --full --user "$(id -un)" 2>/dev/null || true
        for _ in $(seq 1 60); do
            [[ -z $(SLURM_CONF=$conf squeue --noheader --states RUNNING,COMPLETING 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    for daemon in slurmd slurmctld munged; do
        local pid
        if pid=$(pid_of "$daemon"); then
            kill "$pid"
            for _ in $(seq 1 40); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.25
            done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$dir/run/$daemon.pid"
    done
    echo "slurm_local_cluster: stopped ($dir)"
}

status() {
    for daemon in munged slurmctld slurmd; do
        if pid=$(pid_of "$daemon"); then echo "$daemon: running (pid $pid)"; else echo "$daemon: stopped"; fi
    done
    [[ -f $conf ]] && SLURM_CONF=$conf sinfo 2>/dev/null || true
}

case $action in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
