#!/usr/bin/env bash
# slurm_up.sh: install (if needed) and start a single-node Slurm cluster on this machine, so that
# submitit (and `mixc`'s batch runner) can submit real jobs locally. CI runs it before `make test`;
# tests/runner/test_slurm_cluster.py needs it.
#
# Usage (as root, Debian 12 bookworm; no systemd needed):
#   bash scripts/slurm_up.sh          # install missing packages, write the config, start the daemons
#   sinfo; squeue; sacct              # try it: partition `debug`, one node (this host)
#   bash scripts/slurm_down.sh        # stop the daemons (packages, config and job history stay)
#
# Settings (environment variables):
#   SLURM_ACCT=dbd   (default) slurmdbd + MariaDB, so `sacct` works. submitit reads job states ONLY
#                    with sacct: without it a cancelled/killed job never becomes done().
#   SLURM_ACCT=none  no accounting (lighter; sacct fails "Slurm accounting storage is disabled").
#   FAKE_GPUS=4      (default) GRES gpu:4 backed by /dev/null character devices, so jobs asking for
#                    `gpus_per_node` (a mixlang `resources` key) schedule; they see CUDA_VISIBLE_DEVICES
#                    but no real GPU. Jobs that ask for no GPU are unaffected. 0 = no GRES (then any
#                    GPU request fails at once: "Requested node configuration is not available").
#   CRED_EXPIRE=5    seconds a requeued job waits before it may start again (Slurm's default is 120).
#
# Idempotent: a daemon that is already running is left alone. If the generated config differs from
# the one in place while the daemons run, slurmctld and slurmd are restarted to pick it up (switching
# SLURM_ACCT is safest with slurm_down.sh first). Logs: /var/log/slurm/*.log, /var/log/munge/munged.log.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SLURM_ACCT=${SLURM_ACCT:-dbd}; FAKE_GPUS=${FAKE_GPUS:-4}; CRED_EXPIRE=${CRED_EXPIRE:-5}
case "$SLURM_ACCT" in dbd|none) ;; *) echo "SLURM_ACCT must be dbd or none, not '$SLURM_ACCT'" >&2; exit 2;; esac
[ "$(id -u)" = 0 ] || { echo "slurm_up.sh must run as root (it installs packages and starts daemons)" >&2; exit 2; }
LOGS=/var/log/slurm
now() { date +%s.%N; }
T0=$(now); el() { awk "BEGIN{printf \"%.1f\", $(now) - $T0}"; }
# running PIDFILE NAME: the pid file's process is alive AND is NAME (a stale pid file whose PID was
# reused by another process does not count)
running() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }
stop() {  # stop PIDFILE NAME: SIGTERM the daemon and wait for it to exit
  running "$1" "$2" || return 0
  local pid; pid=$(cat "$1"); kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
trap 'echo "slurm_up.sh failed at line $LINENO; logs: $LOGS/*.log, /var/log/munge/munged.log" >&2' ERR

# ---- 1. packages -------------------------------------------------------------
PKGS="slurmctld slurmd slurm-client munge"
[ "$SLURM_ACCT" = dbd ] && PKGS="$PKGS slurmdbd mariadb-server"
MISSING=$(for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
if [ -z "$MISSING" ]; then
  echo "[$(el)s] packages already installed"
else
  APT="apt-get -o DPkg::Lock::Timeout=300"   # another apt run (e.g. CI's) may hold the lock
  $APT update -qq
  $APT install -y -qq --no-install-recommends $PKGS >/dev/null
  echo "[$(el)s] installed: $(echo $MISSING)"
fi

# ---- 2. config ---------------------------------------------------------------
NODE=$(hostname -s); CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS"
GRES_NODE=""; GRES_TYPES=""; GRES_CONF=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  mkdir -p /var/lib/fakegpu
  # slurmd rejects regular files: they must be character devices (1,3 = /dev/null)
  for i in $(seq 0 $((FAKE_GPUS-1))); do [ -c /var/lib/fakegpu/nvidia$i ] || mknod /var/lib/fakegpu/nvidia$i c 1 3; done
  GRES_CONF="Name=gpu File=/var/lib/fakegpu/nvidia[0-$((FAKE_GPUS-1))]"
  GRES_NODE="Gres=gpu:${FAKE_GPUS}"; GRES_TYPES="GresTypes=gpu"
fi
if [ "$SLURM_ACCT" = dbd ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
NEW_CONF=$(cat <<CONF
ClusterName=localcluster
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=${CRED_EXPIRE}
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOGS}/slurmctld.log
SlurmdLogFile=${LOGS}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, every job is given the whole node's memory and jobs run one at a time
DefMemPerCPU=1024
SchedulerType=sched/backfill
# start jobs within ~1 s (defaults: up to 3 s for new jobs, 30 s for requeued ones)
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
MpiDefault=none
ReturnToService=2
${GRES_TYPES}
${ACCT}
JobCompType=jobcomp/filetxt
JobCompLoc=${LOGS}/jobcomp.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} Sockets=1 CoresPerSocket=${CPUS} ThreadsPerCore=1 RealMemory=${MEM_MB} ${GRES_NODE} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
)
OLD=$(cat /etc/slurm/slurm.conf /etc/slurm/gres.conf 2>/dev/null || true)
printf '%s\n' "$NEW_CONF" > /etc/slurm/slurm.conf
if [ -n "$GRES_CONF" ]; then printf '%s\n' "$GRES_CONF" > /etc/slurm/gres.conf; else rm -f /etc/slurm/gres.conf; fi
CHANGED=0; [ "$OLD" = "$(cat /etc/slurm/slurm.conf /etc/slurm/gres.conf 2>/dev/null)" ] || CHANGED=1
echo "[$(el)s] wrote /etc/slurm/slurm.conf (node=$NODE cpus=$CPUS mem=${MEM_MB}MB gpus=$FAKE_GPUS acct=$SLURM_ACCT$( [ $CHANGED = 1 ] && echo ', changed'))"

# ---- 3. munge ----------------------------------------------------------------
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then   # the Debian postinst normally creates it
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
running /run/munge/munged.pid munged || runuser -u munge -- /usr/sbin/munged   # as root: "Logfile is insecure"
echo "[$(el)s] munged up"

# ---- 4. accounting: MariaDB + slurmdbd ------------------------------------------
if [ "$SLURM_ACCT" = dbd ]; then
  install -d -o mysql -g root -m 0755 /run/mysqld
  if ! running /run/mysqld/mysqld.pid mariadbd; then
    /usr/sbin/mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/mysqld.pid >>"$LOGS/mariadb.log" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 300); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  echo "[$(el)s] mariadb up"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=${LOGS}/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
CONF
  chmod 600 /etc/slurm/slurmdbd.conf      # slurmdbd refuses a group/world-readable slurmdbd.conf
  running /run/slurmdbd.pid slurmdbd || /usr/sbin/slurmdbd
  for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.1; done
  echo "[$(el)s] slurmdbd up"
fi

# ---- 5. slurmctld + slurmd ------------------------------------------------------
if [ $CHANGED = 1 ] && { running /run/slurmctld.pid slurmctld || running /run/slurmd.pid slurmd; }; then
  echo "[$(el)s] config changed: restarting slurmctld and slurmd"
  stop /run/slurmd.pid slurmd; stop /run/slurmctld.pid slurmctld
fi
running /run/slurmctld.pid slurmctld || /usr/sbin/slurmctld
for _ in $(seq 1 300); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
running /run/slurmd.pid slurmd || /usr/sbin/slurmd
st=""; resumed=0
for _ in $(seq 1 300); do
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$st" in idle|mixed|allocated|completing) break;; esac
  # a node left drained/down by an earlier run (e.g. a daemon killed mid-job): put it back in service
  if [ $resumed = 0 ] && [[ "$st" =~ ^(drain|drained|draining|down)$ ]]; then
    scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true; resumed=1
  fi
  sleep 0.1
done
case "$st" in idle|mixed|allocated|completing) ;;
  *) echo "node $NODE not ready (state=${st:-no answer}); see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2; exit 1;; esac
if [ "$SLURM_ACCT" = dbd ]; then   # submitit needs sacct: check it answers
  for _ in $(seq 1 100); do sacct -n -X -S now >/dev/null 2>&1 && break; sleep 0.1; done
  sacct -n -X -S now >/dev/null || { echo "sacct does not answer; see $LOGS/slurmdbd.log" >&2; exit 1; }
fi
trap - ERR
echo "[$(el)s] slurm ready: $(sinfo -h -o '%P %a %D %T %N %G')"
echo "logs: $LOGS/{slurmctld,slurmd$( [ "$SLURM_ACCT" = dbd ] && echo ,slurmdbd,mariadb)}.log, $LOGS/jobcomp.log, /var/log/munge/munged.log; stop with: bash scripts/slurm_down.sh"
