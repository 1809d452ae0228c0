#!/usr/bin/env bash
# Start (or check) a one-node SLURM cluster on localhost: Debian's slurm-wlm + munge, no systemd,
# no accounting (so the executor plugin must poll with `squeue`, see profiles/slurm/config.yaml).
# Idempotent: installs what is missing, rewrites the config only when it changed, starts only the
# daemons that are not running; a second call when all is up takes ~0.1 s. Run as root.
#
# Two partitions on the one node, named as in profiles/slurm/partitions.yaml, so that the
# profile is tested as shipped, GPU routing included:
#   cpu (default, CPU jobs) and gpu (advertises gres gpu:1 backed by /dev/null: jobs that ask
#   for `gpu=1` are accepted and get CUDA_VISIBLE_DEVICES=0, but torch still sees no GPU).
# SLURM_FAKE_GPU=0 leaves out the gres and the gpu partition.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "start_slurm.sh: must run as root (it installs and starts daemons)" >&2; exit 1; }
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
FAKE_GPU=${SLURM_FAKE_GPU:-1}
t0=$(date +%s%N)

pkgs=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# munge (authentication between the SLURM daemons and clients)
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged # daemonizes; pid in /run/munge/munged.pid
  for _ in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.25
  done
fi

# slurm.conf: NodeName=localhost + `slurmd -N localhost` keeps it independent of the hostname;
# no cgroups here, hence proctrack/linuxproc and task/none
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
MEM=$((MEM > 2048 ? MEM - 1024 : MEM))
GRES_LINE=""
NODE_GRES=""
GRES_CONF=""
GPU_PARTITION=""
if [ "$FAKE_GPU" = 1 ]; then
  GRES_LINE="GresTypes=gpu"
  NODE_GRES="Gres=gpu:1"
  # File= is required: Count=1 without a device file drains the node
  GRES_CONF=$'AutoDetect=off\nNodeName=localhost Name=gpu File=/dev/null Count=1'
  GPU_PARTITION="PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP"
fi
NEW=$(
  cat <<CONF
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$GRES_LINE
NodeName=localhost CPUs=$(nproc) RealMemory=$MEM $NODE_GRES State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
$GPU_PARTITION
CONF
)
changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW" ]; then
  printf '%s\n' "$NEW" >"$CONF"
  changed=1
fi
if [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$GRES_CONF" ]; then
  if [ -n "$GRES_CONF" ]; then printf '%s\n' "$GRES_CONF" >/etc/slurm/gres.conf; else rm -f /etc/slurm/gres.conf; fi
  changed=1
fi
mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOGDIR"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {
  if alive "$1"; then
    kill "$(cat "$1")"
    for _ in $(seq 1 40); do
      alive "$1" || break
      sleep 0.25
    done
  fi
  rm -f "$1"
}
if [ "$changed" = 1 ]; then
  stop /run/slurmd.pid
  stop /run/slurmctld.pid
fi
# `if ! alive; then d & fi`, not `alive || d &`: the latter backgrounds a subshell that keeps the
# caller's stdout open, so `start_slurm.sh | tee log` would never finish
if ! alive /run/slurmctld.pid; then
  setsid slurmctld -D -i </dev/null >>"$LOGDIR/slurmctld.out" 2>&1 &
fi
for _ in $(seq 1 40); do
  scontrol ping 2>/dev/null | grep -q UP && break
  sleep 0.25
done
if ! alive /run/slurmd.pid; then
  setsid slurmd -D -N localhost </dev/null >>"$LOGDIR/slurmd.out" 2>&1 &
fi
for _ in $(seq 1 120); do
  st=$(sinfo -h -n localhost -o %T 2>/dev/null | head -n 1 || true)
  case "$st" in
    idle* | mixed* | allocated*) break ;;
    down* | drain*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
if ! sinfo -h -n localhost -o %T | grep -qE '^(idle|mixed|allocated)'; then
  echo "start_slurm.sh: slurm node not ready" >&2
  sinfo -R >&2 || true
  tail -n 20 "$LOGDIR"/slurm*.log >&2 || true
  exit 1
fi
timeout 60 srun -t 1 -N1 true
echo "slurm up in $((($(date +%s%N) - t0) / 1000000)) ms: $(sinfo -h -o '%P %a %D %T %N %G' | tr '\n' ' ')"
