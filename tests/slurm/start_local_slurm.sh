#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests of slurm/*.sh (CPU, no GPU, no systemd).
#
#   bash tests/slurm/start_local_slurm.sh start     # install (apt, first time ~10 s) and start what is not running
#   bash tests/slurm/start_local_slurm.sh status    # daemons and sinfo
#   bash tests/slurm/start_local_slurm.sh stop      # stop the daemons this script started
#   source /tmp/local-slurm/env.sh                   # clients (sbatch, squeue, sacct...) need SLURM_CONF
#
# Daemons: munged, slurmctld, slurmd, and (WITH_ACCOUNTING=1) slurmdbd + MariaDB so that `sacct` works.
# Debian 12 packages (slurm-wlm 22.05). Must run as root. Idempotent and safe to call concurrently (flock):
# it starts only what is not running, and restarts the slurm daemons only when the generated config changed.
# Restarting slurmctld/slurmd keeps running jobs (state is saved), but avoid changing FAKE_GPUS under someone.
#
# Env knobs (defaults):
#   SLURM_LOCAL_PREFIX  /tmp/local-slurm   config, state, logs, MariaDB datadir
#   WITH_ACCOUNTING     1                  1: slurmdbd + MariaDB (sacct, job states after they leave the queue)
#   FAKE_GPUS           0                  N>0: the node advertises N file-backed gres/gpu, so scripts that ask
#                                          for --gpus-per-node=N schedule (CUDA_VISIBLE_DEVICES stays empty)
#   DB_PORT             3307               MariaDB port on 127.0.0.1
#   KILL_WAIT           30                 seconds between SIGTERM and SIGKILL when a job is cancelled/requeued
#   REQUEUE_DELAY       10                 AuthInfo=cred_expire: a requeued job waits this long (+1 s) before it
#                                          may start again (SLURM's default is 120 s; short keeps tests quick)
#
# Choices that make it work here (see ../../../shared/NOTES.md, "SLURM"):
#   - munged runs as the munge user; the machine's hostname is not resolvable as a node name, so the node is
#     NodeName=localhost NodeAddr=127.0.0.1 and slurmd runs with -N localhost;
#   - no cgroups: proctrack/linuxproc, task/none;
#   - DependencyParameters=kill_invalid_depend: an afterok dependent of a failed job is cancelled instead of
#     pending forever (22.05 ignores it under SchedulerParameters).
set -euo pipefail

ACTION=${1:-start}
PREFIX=${SLURM_LOCAL_PREFIX:-/tmp/local-slurm}
WITH_ACCOUNTING=${WITH_ACCOUNTING:-1}
FAKE_GPUS=${FAKE_GPUS:-0}
DB_PORT=${DB_PORT:-3307}
KILL_WAIT=${KILL_WAIT:-30}
REQUEUE_DELAY=${REQUEUE_DELAY:-10}
ETC=$PREFIX/etc
LOG=$PREFIX/log
RUN=$PREFIX/run
export SLURM_CONF=$ETC/slurm.conf
NODE=localhost

log() { echo "[local-slurm $(date +%T)] $*" >&2; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for DESCRIPTION SECONDS COMMAND...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  log "timed out after ${secs}s waiting for $what"
  return 1
}

stop_pidfile() { # stop_pidfile NAME PIDFILE
  alive "$2" || { rm -f "$2"; return 0; }
  local pid i
  pid=$(cat "$2")
  log "stopping $1 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 80; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then log "$1 ignored SIGTERM for 20 s: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$2"
}

install_packages() {
  local wanted=(munge slurmctld slurmd slurm-client) missing=() p
  [ "$WITH_ACCOUNTING" = 1 ] && wanted+=(slurmdbd mariadb-server mariadb-client)
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # postinst scripts try to start the services; without systemd that is refused, harmlessly
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$LOG/apt.log" 2>&1 \
    || { tail -30 "$LOG/apt.log" >&2; exit 1; }
}

replace_if_changed() { # replace_if_changed PATH MODE < content; succeeds only if PATH changed
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  chmod "$2" "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$1"
}

write_configs() {
  SLURM_CONF_CHANGED=0
  DBD_CONF_CHANGED=0
  # the node's hardware as slurmd sees it: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 ... RealMemory=24105"
  local hw
  hw=$(/usr/sbin/slurmd -C | head -1)
  field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
  # declare less memory than there is: a node reporting less than RealMemory is drained
  local node_line
  node_line="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(field CPUs) Boards=$(field Boards)"
  node_line+=" SocketsPerBoard=$(field SocketsPerBoard) CoresPerSocket=$(field CoresPerSocket)"
  node_line+=" ThreadsPerCore=$(field ThreadsPerCore) RealMemory=$(($(field RealMemory) * 90 / 100))"
  local gres_types=""
  if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    node_line+=" Gres=gpu:$FAKE_GPUS"
    local i files=()
    for ((i = 0; i < FAKE_GPUS; i++)); do touch "$RUN/fakegpu$i"; files+=("$RUN/fakegpu$i"); done
    # SLURM drops GPUs without File=; plain files work (slurmd logs "not a valid character or block device")
    printf 'NodeName=%s Name=gpu File=%s\n' "$NODE" "$(IFS=,; echo "${files[*]}")" \
      | replace_if_changed "$ETC/gres.conf" 644 && SLURM_CONF_CHANGED=1
  elif [ -f "$ETC/gres.conf" ]; then
    rm -f "$ETC/gres.conf"
    SLURM_CONF_CHANGED=1
  fi
  local accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  if [ "$WITH_ACCOUNTING" = 1 ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
  fi
  replace_if_changed "$SLURM_CONF" 644 <<EOF && SLURM_CONF_CHANGED=1 || true
# generated by tests/slurm/start_local_slurm.sh: single-node test cluster
ClusterName=local
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=$REQUEUE_DELAY
StateSaveLocation=$PREFIX/state
SlurmdSpoolDir=$PREFIX/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# schedule pending jobs every 2 s instead of every 30-60 s: a requeued job restarts as soon as it may
SchedulerParameters=sched_interval=2,bf_interval=2
DependencyParameters=kill_invalid_depend
KillWait=$KILL_WAIT
$accounting
ReturnToService=2
MpiDefault=none
$gres_types
$node_line State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  if [ "$WITH_ACCOUNTING" = 1 ]; then
    # slurmdbd reads slurmdbd.conf beside $SLURM_CONF; it must be 0600 and owned by SlurmUser
    replace_if_changed "$ETC/slurmdbd.conf" 600 <<EOF && DBD_CONF_CHANGED=1 || true
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  fi
  echo "export SLURM_CONF=$SLURM_CONF" >"$PREFIX/env.sh"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
  chmod 400 /etc/munge/munge.key
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged 9>&- # refuses to run as root; daemonises itself
  wait_for "munge round trip" 20 bash -c 'munge -n | unmunge'
  touch "$RUN/munged.started-here"
}

start_mariadb() {
  local data=$PREFIX/db
  if [ ! -d "$data/mysql" ]; then
    log "initialising MariaDB in $data"
    mkdir -p "$data"
    mariadb-install-db --user=root --datadir="$data" --auth-root-authentication-method=normal \
      >"$LOG/mariadb-install.log" 2>&1 || { tail -20 "$LOG/mariadb-install.log" >&2; exit 1; }
  fi
  if ! alive "$RUN/mariadbd.pid"; then
    log "starting mariadbd on 127.0.0.1:$DB_PORT"
    setsid mariadbd --no-defaults --user=root --datadir="$data" --socket="$RUN/mysqld.sock" --port="$DB_PORT" \
      --bind-address=127.0.0.1 --pid-file="$RUN/mariadbd.pid" --log-error="$LOG/mariadbd.log" \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 9>&- &
    wait_for "mariadbd" 60 mariadb-admin --socket="$RUN/mysqld.sock" -uroot ping
  fi
  mariadb --socket="$RUN/mysqld.sock" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurm() {
  if [ "$WITH_ACCOUNTING" = 1 ]; then
    [ "$DBD_CONF_CHANGED" = 1 ] && stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    if ! alive "$RUN/slurmdbd.pid"; then log "starting slurmdbd"; /usr/sbin/slurmdbd 9>&-; fi
    wait_for "slurmdbd" 60 sacctmgr -n list cluster
  fi
  if [ "$SLURM_CONF_CHANGED" = 1 ]; then
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
  fi
  if ! alive "$RUN/slurmctld.pid"; then log "starting slurmctld"; /usr/sbin/slurmctld -f "$SLURM_CONF" 9>&-; fi
  wait_for "slurmctld" 60 bash -c 'scontrol ping | grep -q "is UP"'
  if ! alive "$RUN/slurmd.pid"; then log "starting slurmd"; /usr/sbin/slurmd -f "$SLURM_CONF" -N "$NODE" 9>&-; fi
  local i state=""
  for ((i = 0; i < 240; i++)); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    case "$state" in
      idle | mixed | allocated | completing) log "ready: node $NODE is $state; export SLURM_CONF=$SLURM_CONF"; return 0 ;;
      *drain* | *inval* | down*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.25
  done
  log "node $NODE never became usable (state '$state'); see $LOG/slurmd.log and $LOG/slurmctld.log"
  scontrol show node "$NODE" >&2 || true
  return 1
}

status() {
  local d f
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    f=$RUN/$d.pid
    [ "$d" = munged ] && f=/run/munge/munged.pid
    if alive "$f"; then echo "$d running (pid $(cat "$f"))"; else echo "$d not running"; fi
  done
  [ -f "$SLURM_CONF" ] && sinfo 2>&1 || true
}

mkdir -p "$ETC" "$LOG" "$RUN" "$PREFIX/state" "$PREFIX/spool"
case "$ACTION" in
  start)
    [ "$(id -u)" = 0 ] || { echo "start needs root (it installs packages and runs the daemons)" >&2; exit 1; }
    exec 9>"$PREFIX/.lock"
    flock 9 # concurrent callers (parallel test sessions) wait for the first to finish
    # (every daemon below is started with 9>&-: one that inherited the fd would hold the lock forever)
    install_packages
    write_configs
    start_munge
    [ "$WITH_ACCOUNTING" = 1 ] && start_mariadb
    start_slurm
    ;;
  stop)
    exec 9>"$PREFIX/.lock"
    flock 9
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    stop_pidfile mariadbd "$RUN/mariadbd.pid"
    if [ -f "$RUN/munged.started-here" ]; then
      stop_pidfile munged /run/munge/munged.pid
      rm -f "$RUN/munged.started-here"
    fi
    ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
