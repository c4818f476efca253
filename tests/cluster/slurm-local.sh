#!/usr/bin/env bash
# A one-node SLURM on 127.0.0.1 for the cluster test, on Debian 12 as root (no systemd):
#   slurm-local.sh start    install munge + slurm (22.05) if needed, start munged, slurmctld, slurmd
#   slurm-local.sh stop     stop only the daemons this script started, by their pids
#   slurm-local.sh status   exit 0 when the node answers and is idle or mixed
# Every wait is bounded. Prints one line saying why when it cannot start, and exits non-zero.
set -u
STATE=/run/imgbench-slurm
HOST=$(hostname -s)

die() { echo "slurm-local: $*" >&2; exit 1; }

alive() {  # a pid that exists and is not a zombie (killed daemons can linger as zombies)
  local pid=$1 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

node_ready() {
  local s
  s=$(timeout 5 sinfo -h -N -o %T 2>/dev/null | head -1)
  case "$s" in idle*|mixed*|allocated*) return 0 ;; esac
  return 1
}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null || die "no apt-get: install munge and slurm (slurmctld, slurmd, slurm-client) yourself"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >/dev/null || die "apt-get update failed"
  timeout 600 apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null \
    || die "apt-get install munge slurmctld slurmd slurm-client failed"
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024) - 1024}' /proc/meminfo)  # leave 1 GiB to the box
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat > /etc/slurm/slurm.conf <<EOF
# Written by imgbench tests/cluster/slurm-local.sh: one node on 127.0.0.1, no cgroups, no accounting.
ClusterName=imgbench
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Without a default, one job would take the node's whole memory.
DefMemPerCPU=1000
# squeue must still show finished jobs when Snakemake polls (3 x the first status check).
MinJobAge=600
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if [ -S /run/munge/munge.socket.2 ] && timeout 5 munge -n >/dev/null 2>&1; then return 0; fi
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  for _ in $(seq 50); do timeout 5 munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  timeout 5 munge -n >/dev/null 2>&1 || die "munged is not answering"
  echo "munged $(cat /run/munge/munged.pid 2>/dev/null)" >> "$STATE"
}

start_daemon() {  # name pidfile
  local name=$1 pidfile=$2 pid
  pid=$(cat "$pidfile" 2>/dev/null)
  if alive "$pid"; then return 0; fi
  rm -f "$pidfile"
  "/usr/sbin/$name" || die "$name did not start; see /var/log/slurm/$name.log"
  for _ in $(seq 100); do pid=$(cat "$pidfile" 2>/dev/null); alive "$pid" && break; sleep 0.1; done
  alive "$pid" || die "$name exited; see /var/log/slurm/$name.log"
  echo "$name $pid" >> "$STATE"
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root to install and start SLURM"
  if node_ready; then echo "slurm-local: already running"; return 0; fi
  install
  write_conf
  start_munge
  start_daemon slurmctld /run/slurmctld.pid
  start_daemon slurmd /run/slurmd.pid
  for _ in $(seq 150); do node_ready && break; sleep 0.2; done
  node_ready || die "the node did not become idle; see /var/log/slurm/*.log"
  timeout 5 scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  echo "slurm-local: node $HOST is up ($(sinfo -h -N -o '%T %c CPUs %m MB'))"
}

stop() {
  [ -f "$STATE" ] || { echo "slurm-local: nothing started by this script"; return 0; }
  # Stop in reverse order of start, only our own pids, and wait (bounded) for each to go.
  tac "$STATE" | while read -r name pid; do
    alive "$pid" || continue
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null
    echo "slurm-local: stopped $name ($pid)"
  done
  rm -f "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) node_ready ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
